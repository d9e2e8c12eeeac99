#!/usr/bin/env bash
# tests/rules/run.sh - the golden suite: runs every case under tests/rules/ through the real
# binary and compares its output byte for byte with the expected files.
#
#   tests/rules/run.sh PATH/TO/onramp            run every case
#   tests/rules/run.sh PATH/TO/onramp CASE...    run the named cases only
#   UPDATE=1 tests/rules/run.sh PATH/TO/onramp   rewrite the expected files from the output
#                                                (review the diff before committing it)
#
# A case is a directory; it runs in a scratch copy of itself, so file names in messages are
# relative ("events.jsonl:3:", "rules.rules:4:9:"). The rules are rules.rules, or the file
# named (relative to the repository root) by a one-line `rules_path` file.
#
#   replay case: events.jsonl (or a generate.sh that writes it) + expected.jsonl
#     runs `onramp replay --rules RULES [ARGS] events.jsonl`, ARGS from an optional one-line
#     `args` file; compares stdout with expected.jsonl, stderr with expected.stderr (empty
#     when that file is absent) and the exit status with expected.exit (default 0).
#   error case: no events; expected.stderr
#     runs `onramp check RULES`; compares stderr with expected.stderr, the exit status with
#     expected.exit (default 1), and stdout with nothing.
#
# A generate.sh is run with bash in the scratch copy before the binary, to write inputs that
# should not be committed (a 1 MB line, invalid UTF-8).
set -u

if [ $# -lt 1 ]; then
    echo "usage: tests/rules/run.sh PATH/TO/onramp [CASE...]" >&2
    exit 2
fi
case "$1" in
/*) bin=$1 ;;
*) bin=$PWD/$1 ;;
esac
shift
if [ ! -x "$bin" ]; then
    echo "run.sh: $bin is not an executable" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
# a case that hangs fails instead of stalling the suite
limit=()
if command -v timeout >/dev/null; then
    limit=(timeout 60)
fi
root=$(cd "$here/../.." && pwd)
update=${UPDATE:-0}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/onramp-golden.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if [ $# -gt 0 ]; then
    cases=("$@")
else
    cases=()
    for d in "$here"/*/; do
        cases+=("$(basename "$d")")
    done
fi

passed=0
failed=0

# Absolute paths in messages become relative: the scratch copy, then the repository root.
relative() {
    local f=$1 p
    for p in "$w/" "$root/"; do
        p=$(printf '%s' "$p" | sed 's/[][\/.^$*]/\\&/g')
        sed -i "s/$p//g" "$f"
    done
}

# compare EXPECTED ACTUAL LABEL: appends a diff to $report when they differ.
compare() {
    local exp=$1 act=$2 label=$3
    if [ -f "$exp" ]; then
        cmp -s "$exp" "$act" && return 0
        diff -u --label "expected $label" --label "actual $label" "$exp" "$act" >>"$report"
    else
        [ -s "$act" ] || return 0
        diff -u --label "expected $label (none)" --label "actual $label" /dev/null "$act" >>"$report"
    fi
    return 1
}

# keep ACTUAL EXPECTED: UPDATE=1 writes an expected file, or removes it when it would be
# empty and is optional.
keep() {
    local act=$1 exp=$2 optional=$3
    if [ "$optional" = 1 ] && [ ! -s "$act" ]; then
        rm -f "$exp"
    else
        cp "$act" "$exp"
    fi
}

for name in "${cases[@]}"; do
    src=$here/$name
    if [ ! -d "$src" ]; then
        echo "FAIL $name"
        echo "    no such case: $src"
        failed=$((failed + 1))
        continue
    fi
    w=$scratch/$name
    mkdir -p "$w"
    cp -RL "$src/." "$w/"
    report=$scratch/$name.report
    : >"$report"

    if [ -f "$w/generate.sh" ] && ! (cd "$w" && bash generate.sh) >"$report" 2>&1; then
        echo "FAIL $name"
        echo "    generate.sh failed:"
        head -n 40 "$report"
        failed=$((failed + 1))
        continue
    fi
    if [ -f "$w/rules_path" ]; then
        rules=$root/$(head -n 1 "$w/rules_path")
    else
        rules=rules.rules
    fi
    args=()
    if [ -f "$w/args" ]; then
        read -r -a args <"$w/args"
    fi

    ok=1
    if [ -f "$w/events.jsonl" ]; then
        mode=replay
        (cd "$w" && exec "${limit[@]}" "$bin" replay --rules "$rules" "${args[@]}" events.jsonl \
            >"$w/actual.stdout" 2>"$w/actual.stderr")
        status=$?
        default_exit=0
        expected_out=$src/expected.jsonl
    else
        mode=check
        (cd "$w" && exec "${limit[@]}" "$bin" check "$rules" >"$w/actual.stdout" 2>"$w/actual.stderr")
        status=$?
        default_exit=1
        expected_out=
    fi
    relative "$w/actual.stdout"
    relative "$w/actual.stderr"
    echo "$status" >"$w/actual.exit"
    want_exit=$default_exit
    [ -f "$src/expected.exit" ] && want_exit=$(head -n 1 "$src/expected.exit")

    if [ "$update" = 1 ]; then
        [ "$mode" = replay ] && keep "$w/actual.stdout" "$src/expected.jsonl" 0
        keep "$w/actual.stderr" "$src/expected.stderr" "$([ "$mode" = replay ] && echo 1 || echo 0)"
        if [ "$status" = "$default_exit" ]; then
            rm -f "$src/expected.exit"
        else
            cp "$w/actual.exit" "$src/expected.exit"
        fi
        echo "updated $name"
        passed=$((passed + 1))
        continue
    fi

    if [ "$mode" = replay ]; then
        if [ ! -f "$expected_out" ]; then
            echo "missing expected.jsonl" >>"$report"
            ok=0
        else
            compare "$expected_out" "$w/actual.stdout" stdout || ok=0
        fi
    else
        compare /nonexistent "$w/actual.stdout" stdout || ok=0
        if [ ! -f "$src/expected.stderr" ]; then
            echo "missing expected.stderr (an error case needs one)" >>"$report"
            ok=0
        fi
    fi
    compare "$src/expected.stderr" "$w/actual.stderr" stderr || ok=0
    if [ "$status" != "$want_exit" ]; then
        echo "exit status: expected $want_exit, got $status" >>"$report"
        ok=0
    fi

    if [ $ok = 1 ]; then
        echo "ok $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        head -n 40 "$report" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done

echo "golden: $passed passed, $failed failed"
[ $failed -eq 0 ]
