# Invalid UTF-8, written with printf so that the repository holds only valid text.
set -e
line() {  # user, time, feature (printf escapes allowed in all three)
    printf '{"type":"track","event":"Feature Used","userId":"'"$1"'","timestamp":"2026-11-18T'"$2"'.000Z","properties":{"feature":"'"$3"'"}}\n'
}
{
    line u1 10:00:00 settings
    line u1 10:01:00 'caf\303'              # a truncated two-byte sequence
    line 'u\377' 10:02:00 settings           # 0xff never appears in UTF-8
    line u1 10:03:00 '\300\257'              # an overlong encoding of "/"
    line u1 10:03:30 '\200abc'               # a lone continuation byte
    line u1 10:04:00 '\\ud800'               # a lone surrogate, as a JSON escape
    line '\303\274ber' 10:04:30 'caf\303\251'  # valid: "über", "café"
    line u1 10:05:00 settings
} >events.jsonl
