# A line of exactly 1 MB (1048576 bytes), written here rather than committed.
set -e
good() {
    printf '{"type":"track","event":"Feature Used","userId":"u1","timestamp":"2026-11-18T%s.000Z","properties":{"feature":"settings"}}\n' "$1"
}
prefix='{"type":"track","event":"Feature Used","userId":"u1","timestamp":"2026-11-18T10:01:00.000Z","properties":{"feature":"settings","notes":"'
suffix='"}}'
{
    good 10:00:00
    printf '%s' "$prefix"
    head -c $((1048576 - ${#prefix} - ${#suffix})) /dev/zero | tr '\0' 'x'
    printf '%s\n' "$suffix"
    good 10:02:00
} >events.jsonl
