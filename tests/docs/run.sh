#!/usr/bin/env bash
# Runs every example in docs/rules.md through the real binary: each ```rules block must
# compile; each ```rules-error block must fail with exactly the message in the ```text block
# that follows it; a ```rules block followed by ```jsonl events and a ```json block must
# replay to exactly that output. Ends with "docs: N passed, M failed".
set -uo pipefail
onramp=$(realpath "${1:?usage: tests/docs/run.sh PATH/TO/onramp}")
root=$(cd "$(dirname "$0")/../.." && pwd)
doc="$root/docs/rules.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Split the document into numbered files: N.rules, N.rules-error, N.text
awk -v dir="$work" '
    /^```/ {
        if (inblock) { inblock = 0; close(out); next }
        kind = substr($0, 4)
        if (kind == "rules" || kind == "rules-error" || kind == "text" || kind == "jsonl" ||
            kind == "json") {
            n++; inblock = 1; out = sprintf("%s/%03d.%s", dir, n, kind); printf "" > out; next
        }
        skip = !skip; next
    }
    inblock { print > out }
' "$doc"

passed=0
failed=0
cd "$work"
for f in $(ls | sort); do
    case "$f" in
    *.rules)
        cp "$f" example.rules
        if out=$("$onramp" check example.rules 2>&1); then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL docs example ${f%.rules} does not compile:"
            echo "$out"
        fi
        n=${f%.rules}
        events=$(printf '%03d.jsonl' $((10#$n + 1)))
        want=$(printf '%03d.json' $((10#$n + 2)))
        if [ -f "$events" ] && [ -f "$want" ]; then
            if "$onramp" replay --rules example.rules "$events" >got.json 2>&1 &&
                diff -u "$want" got.json >diff.txt; then
                passed=$((passed + 1))
            else
                failed=$((failed + 1))
                echo "FAIL docs replay example $n:"
                head -20 diff.txt
            fi
        fi
        ;;
    *.rules-error)
        n=${f%.rules-error}
        want=$(printf '%03d.text' $((10#$n + 1)))
        cp "$f" example.rules
        "$onramp" check example.rules >/dev/null 2>got.txt
        rc=$?
        grep -v '^[0-9]* errors\?$' got.txt >got.clean
        if [ "$rc" -eq 1 ] && [ -f "$want" ] && diff -u "$want" got.clean >diff.txt; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL docs error example $n (exit $rc):"
            cat diff.txt 2>/dev/null | head -20
        fi
        ;;
    esac
done
echo "docs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
