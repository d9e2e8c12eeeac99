#!/usr/bin/env bash
# Runs every test suite against the build in $1 and ends with one summary line over all
# of them: "N passed, N failed". Exits non-zero when anything failed.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== unit"
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    "$t" --jobs=2 >"$log" 2>&1
    rc=$?
    syn=$(grep -a 'Synthesis:' "$log" | tail -1)
    p=$(echo "$syn" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
    f=$(echo "$syn" | sed -n 's/.*Failing: \([0-9]*\).*/\1/p')
    c=$(echo "$syn" | sed -n 's/.*Crashing: \([0-9]*\).*/\1/p')
    if [ -z "$p" ]; then
        echo "  $name: no synthesis (exit $rc)"
        cat "$log"
        failed=$((failed + 1))
        continue
    fi
    f=$((f + c))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    echo "  $name: $p passed, $f failed"
    if [ "$f" -ne 0 ]; then grep -av '^\[----\]' "$log" | head -60; fi
done

echo "== golden"
tests/rules/run.sh "$build/onramp" >"$log" 2>&1
rc=$?
cat "$log" | grep -v '^ok ' || true
gp=$(sed -n 's/^golden: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log")
gf=$(sed -n 's/^golden: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log")
if [ -z "$gp" ]; then gp=0; gf=1; fi
if [ "$rc" -ne 0 ] && [ "$gf" -eq 0 ]; then gf=1; fi
passed=$((passed + gp))
failed=$((failed + gf))

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
