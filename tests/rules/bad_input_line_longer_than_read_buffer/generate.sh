# A 5 MB line: longer than replay's 4 MB read buffer, reported once and skipped.
set -e
good() {
    printf '{"type":"track","event":"Feature Used","userId":"u1","timestamp":"2026-11-18T%s.000Z","properties":{"feature":"settings"}}\n' "$1"
}
{
    good 10:00:00
    printf '{"type":"track","event":"Feature Used","userId":"u1","timestamp":"2026-11-18T10:01:00.000Z","properties":{"feature":"settings","notes":"'
    head -c 5000000 /dev/zero | tr '\0' 'x'
    printf '"}}\n'
    good 10:02:00
} >events.jsonl
