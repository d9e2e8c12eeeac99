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
    [ -f "$t" ] && [ -x "$t" ] || continue
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

# A suite script that ends with "<name>: N passed, M failed".
run_suite() {
    local name=$1
    shift
    echo "== $name"
    "$@" >"$log" 2>&1
    local rc=$?
    grep -v '^ok ' "$log" || true
    local line p f
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed$" "$log" | tail -1)
    p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.*passed, \([0-9]*\) failed/\1/p')
    if [ -z "$p" ]; then p=0; f=1; fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
}

# The e2e suite: node's test runner on tests/e2e/ against the built binary, its TAP summary
# ("# pass N", "# fail N") turned into the line run_suite reads.
e2e_suite() {
    if ! command -v node >/dev/null 2>&1; then
        echo "node is not installed (scripts/deps.sh installs nodejs)"
        echo "e2e: 0 passed, 1 failed"
        return 1
    fi
    local out rc p f c
    out=$(ONRAMP_BIN="$(realpath "$build/onramp")" node --test tests/e2e/ 2>&1)
    rc=$?
    p=$(echo "$out" | sed -n 's/^# pass \([0-9]*\)$/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^# fail \([0-9]*\)$/\1/p' | tail -1)
    c=$(echo "$out" | sed -n 's/^# cancelled \([0-9]*\)$/\1/p' | tail -1)
    f=$((${f:-1} + ${c:-0}))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
        echo "$out" | grep -v -e '^ok ' -e '^# Subtest' -e '^  duration_ms' -e '^  ---$' -e '^  \.\.\.$'
    fi
    echo "e2e: ${p:-0} passed, $f failed"
    [ "$rc" -eq 0 ]
}

run_suite golden tests/rules/run.sh "$build/onramp"
run_suite docs tests/docs/run.sh "$build/onramp"
run_suite e2e e2e_suite
run_suite fuzz tests/fuzz/run.sh "$build/fuzz"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
