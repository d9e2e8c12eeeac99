#!/usr/bin/env bash
# The engine benchmarks (docs/performance.md): ratios and rates measured in one run on this
# machine, never pass/fail.
#
#   bench/run.sh [BUILD] [USERS]
#
# 1. engine alone: USERS (default 1,000,000) simulated users, decoded and packed in memory,
#    then timed through one engine on one core; once with the default rules, once with 100
#    generated rules more. Prints events/s, bytes per user, allocator calls per event, and a
#    checkpoint of the engine timed against a plain write of as many bytes, and its load.
# 2. replay end to end from JSONL on the same stream (stdin), events/s and bytes per user.
# 3. replay vs `jq -c .` over the same file (a prefix of the stream): the ratio of rates.
set -euo pipefail
build=${1:-build}
users=${2:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
onramp=$build/onramp
bench=$build/bench/bench_engine
rules=rules/onboarding.rules
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# onramp engine benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
echo "# $users simulated users (onramp simulate --seed 42)"

sim() { "$onramp" simulate --users "$users" --seed 42; }

echo "## engine alone (decoded events, one core)"
sim | "$bench" --rules "$rules" - | tee "$tmp/base.txt"
sim | "$bench" --rules "$rules" --extra 100 - | tee "$tmp/extra.txt"
base=$(sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' "$tmp/base.txt")
extra=$(sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' "$tmp/extra.txt")
awk -v b="$base" -v x="$extra" 'BEGIN { printf "ratio extra/default = %.2f\n", x / b }'

echo "## replay end to end (JSONL on stdin)"
sim | "$onramp" replay --rules "$rules" --stats --no-progress - 2>&1 >/dev/null | grep '^stats:'

echo "## replay vs jq -c . on the same file"
"$onramp" simulate --users 10000 --seed 42 >"$tmp/events.jsonl"
lines=$(wc -l <"$tmp/events.jsonl")
t0=$(date +%s.%N)
jq -c . "$tmp/events.jsonl" >/dev/null
t1=$(date +%s.%N)
"$onramp" replay --rules "$rules" --no-progress "$tmp/events.jsonl" >/dev/null
t2=$(date +%s.%N)
awk -v n="$lines" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    jq = n / (b - a); r = n / (c - b);
    printf "lines=%d jq=%.0f lines/s replay=%.0f lines/s ratio=%.1fx\n", n, jq, r, r / jq }'
