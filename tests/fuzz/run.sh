#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time
# from a seed corpus made of the golden cases. Ends with "fuzz: N passed, M failed".
#   tests/fuzz/run.sh [OUTDIR] [SECONDS]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/build/fuzz}
secs=${2:-${ONRAMP_FUZZ_SECONDS:-8}}
[[ "$out" = /* ]] || out="$root/$out"
mkdir -p "$out"
cd "$root"

flags=(-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
       -D_GNU_SOURCE -Isrc $(pkg-config --cflags simdjson libxxhash libmaxminddb))
libs=($(pkg-config --libs simdjson libxxhash libmaxminddb) -lm -lpthread)
srcs=(src/base/alloc.c src/base/util.c src/base/json_write.c src/track/decode.c src/track/enrich.c
      src/track/pack.c src/track/store.c src/rules/diag.c src/rules/lex.c src/rules/parse.c src/rules/check.c
      src/rules/compile.c src/rules/vm.c src/rules/disasm.c src/engine/timers.c
      src/engine/engine.c src/engine/explain.c)

passed=0
failed=0
objs=()
build_ok=1
# an object is rebuilt when its source or any header is newer
stale() { [ ! -f "$2" ] || [ "$1" -nt "$2" ] || [ -n "$(find src -name '*.h' -newer "$2" | head -1)" ]; }
for s in "${srcs[@]}"; do
    o="$out/$(echo "$s" | tr / _).o"
    objs+=("$o")
    if stale "$s" "$o"; then
        clang -std=c11 "${flags[@]}" -c "$s" -o "$o" || build_ok=0
    fi
done
o="$out/json_read.o"
objs+=("$o")
if stale src/base/json_read.cpp "$o"; then
    clang++ -std=c++17 "${flags[@]}" -c src/base/json_read.cpp -o "$o" || build_ok=0
fi

corpus_rules="$out/corpus-rules"
corpus_events="$out/corpus-events"
corpus_bodies="$out/corpus-bodies"
mkdir -p "$corpus_rules" "$corpus_events" "$corpus_bodies"
cp rules/*.rules "$corpus_rules"/
i=0
for f in tests/rules/*/rules.rules; do cp "$f" "$corpus_rules/case$i.rules"; i=$((i + 1)); done
i=0
for f in tests/rules/*/events.jsonl; do
    cp "$f" "$corpus_events/case$i.jsonl"
    head -1 "$f" >"$corpus_events/line$i.json"
    i=$((i + 1))
done

# request bodies: the golden events one by one, and batches of them with batch-level fields
cp "$corpus_events"/line*.json "$corpus_bodies"/ 2>/dev/null
i=0
for f in tests/rules/*/events.jsonl bench/wrk/messages.jsonl; do
    head -5 "$f" | awk -v n=$i '{ m[NR] = $0 } END {
        printf "{\"batch\":[";
        for (i = 1; i <= NR; i++) printf "%s%s", (i > 1 ? "," : ""), m[i];
        printf "]%s}\n", (n % 2 ? ",\"sentAt\":\"2026-01-01T00:00:00Z\",\"context\":{\"traits\":{\"plan\":\"pro\"},\"ip\":\"1.2.3.4\"}" : "") }' \
        >"$corpus_bodies/batch$i.json"
    i=$((i + 1))
done

for t in rules decode engine enrich json store; do
    bin="$out/fuzz_$t"
    if [ "$build_ok" -ne 1 ] ||
        ! clang -std=c11 "${flags[@]}" -c "tests/fuzz/fuzz_$t.c" -o "$bin.o" ||
        ! clang++ "${flags[@]}" -fsanitize=fuzzer "$bin.o" "${objs[@]}" "${libs[@]}" -o "$bin"; then
        echo "FAIL fuzz_$t: build failed"
        failed=$((failed + 1))
        continue
    fi
    corpus="$corpus_events"
    [ "$t" = rules ] && corpus="$corpus_rules"
    [ "$t" = store ] && corpus="$corpus_bodies"
    work="$out/work-$t"
    rm -rf "$work"
    mkdir -p "$work"
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$out/crash-$t-" "$work" "$corpus" >"$out/fuzz_$t.log" 2>&1; then
        echo "ok fuzz_$t ($(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/fuzz_$t.log") runs)"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz_$t: see $out/fuzz_$t.log"
        tail -30 "$out/fuzz_$t.log"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
