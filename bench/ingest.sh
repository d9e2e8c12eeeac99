#!/usr/bin/env bash
# The ingest benchmark (docs/performance.md, "Ingest"): `onramp serve` against nginx answering
# a fixed 200 on the same machine, with the same requests over the same connections, in one
# run; rates and ratios, never pass/fail.
#
#   bench/ingest.sh [BUILD] [SECONDS]        (default: build, 10 s per measurement)
#
# 1. Peak rates with wrk (bench/wrk/post.lua): POST /v1/track of one message, and /v1/batch of
#    100, against nginx, onramp `--fsync batch` (the default policy) and onramp
#    `--fsync everysec` (the same path without waiting for a disk flush); the ratios to nginx.
#    For onramp, also how many records its engine had still to run when the peak ended, and
#    how long it took to run them (the engine may trail ingest by up to --max-lag records).
# 2. Latency at 70% of onramp's peak track rate (and batch rate), from bench/loadgen: a fixed
#    request rate, open loop, latency from each request's due time to its 200; for the track
#    runs on onramp, also where the answers over 5 ms fell (loadgen --timeline). Beside it, for
#    onramp, the server's own p99 from its /metrics histograms, to the bucket bound: from the
#    whole body to the messages durable, and to the answer sent. Last, the same track rate on
#    a new `--fsync batch` server that took no peak before (the other two stopped).
# Beside each measurement: the hypervisor's steal (the share of CPU time this virtual machine
# waited while its cores ran other machines), since a shared host moves the results.
# Every answer must be 200: any other status or socket error is printed as ERRORS and the
# script exits 1 after printing everything. The last line is one JSON object.
#
# Environment: INGEST_CONNECTIONS (256), INGEST_THREADS (onramp's --threads, both policies;
# default: onramp's own, 4 and one thread per 120 of --max-connections: 9),
# INGEST_DATA_DIR (where onramp's data directories go; default a temporary directory, which
# must be on a real disk for fsync to mean anything).
set -euo pipefail
build=${1:-build}
secs=${2:-10}
conns=${INGEST_CONNECTIONS:-256}
# A request waiting for its group commit is suspended, not holding a libmicrohttpd thread
# (the log's sync thread answers it), so the threads only parse and write; both servers run
# onramp serve's defaults.
threads=()
[ -n "${INGEST_THREADS:-}" ] && threads=(--threads "$INGEST_THREADS")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
onramp=$build/onramp
loadgen=$build/bench/loadgen
key=bench-write-key
admin=bench-admin-token
auth=$(printf '%s:' "$key" | base64 -w0)

for tool in wrk nginx curl jq; do
    command -v "$tool" >/dev/null || { echo "ingest: $tool is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
for f in "$onramp" "$loadgen"; do
    [ -x "$f" ] || { echo "ingest: $f is not built (ninja -C $build)" >&2; exit 1; }
done
echo_mod=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$echo_mod" ] || { echo "ingest: $echo_mod is missing (Debian's nginx-light installs it)" >&2; exit 1; }

tmp=$(mktemp -d)
data_parent=${INGEST_DATA_DIR:-$tmp}
# The servers under test by name (nginx, batch, everysec): process, URL, log.
declare -A spid surl slog
cleanup() {
    for p in "${spid[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${spid[@]}"; do { wait "$p"; } 2>/dev/null || true; done
    rm -rf "$tmp" "$data_parent"/onramp-ingest-*
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)
errors=()

# ---- the requests: one track message, and a batch of 100 (the four shapes in turn)
now=$(date -u +%Y-%m-%dT%H:%M:%S)
sed -n 1p bench/wrk/messages.jsonl | sed "s/{now}/$now/g" >"$tmp/track.json"
awk -v n=100 -v now="$now" '{ m[NR] = $0 } END {
    printf "{\"batch\":[";
    for (i = 0; i < n; i++) { s = m[i % NR + 1]; gsub(/\{now\}/, now, s); printf "%s%s", (i ? "," : ""), s }
    printf "],\"sentAt\":\"%s.900Z\"}\n", now }' bench/wrk/messages.jsonl >"$tmp/batch.json"

# ---- nginx: a foreground process with its own configuration, on a free loopback port
# A port below the kernel's ephemeral range (net.ipv4.ip_local_port_range): one inside it can
# be handed to an outgoing connection (the load generators open hundreds) between this check
# and nginx's bind.
free_port() {
    local p lo
    lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$lo" -gt 11000 ] 2>/dev/null || lo=60000
    for _ in $(seq 50); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "ingest: no free port found" >&2
    exit 1
}
start_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$tmp/nginx"
    # `return 200` would not read the body: nginx discards it as it arrives
    # (ngx_http_discard_request_body). echo_read_request_body reads it whole into one buffer
    # the size of onramp's request limit, as onramp does, before the answer is sent.
    cat >"$tmp/nginx/nginx.conf" <<EOF
load_module $echo_mod;
worker_processes 2;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        keepalive_requests 100000000;
        client_max_body_size 512k;
        client_body_buffer_size 512k;
        location = /check {
            echo_read_request_body;
            echo_request_body;
        }
        location / {
            echo_read_request_body;
            default_type application/json;
            echo -n '{"success":true}';
        }
    }
}
EOF
    nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" -g 'daemon off;' &
    spid[nginx]=$!
    slog[nginx]=$tmp/nginx/error.log
    local nginx_url=http://127.0.0.1:$port
    surl[nginx]=$nginx_url
    for _ in $(seq 50); do
        curl -sf -o /dev/null -d '{}' "$nginx_url/v1/track" && break
        sleep 0.1
    done
    # nginx must read the whole body: the largest request comes back byte for byte
    if ! curl -sf --data-binary @"$tmp/batch.json" "$nginx_url/check" | cmp -s - "$tmp/batch.json"; then
        echo "ingest: nginx did not echo the batch body back" >&2
        cat "$tmp/nginx/error.log" >&2
        exit 1
    fi
}

# ---- onramp serve, named after its fsync policy: its own data directory, port 0 (it logs the
# one it took)
start_onramp() { # fsync [name, default the fsync policy]
    local name=${2:-$1}
    local dir=$data_parent/onramp-ingest-$name log=$tmp/onramp-$name.log
    rm -rf "$dir"
    : >"$log"
    "$onramp" serve --listen 127.0.0.1:0 --data "$dir" --write-key "$key" --fsync "$1" \
        "${threads[@]}" --admin-token "$admin" 2>"$log" &
    spid[$name]=$!
    slog[$name]=$log
    local port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*"msg":"listening".*"listen":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$log")
        [ -n "$port" ] && break
        kill -0 "${spid[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "ingest: onramp serve did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    surl[$name]=http://127.0.0.1:$port
    local got
    got=$(curl -s -u "$key:" --data-binary @"$tmp/track.json" "${surl[$name]}/v1/track")
    [ "$got" = '{"success":true}' ] || { echo "ingest: onramp answered $got" >&2; exit 1; }
}

cpu_ticks() { # the CPU time of a process and its children so far
    local t=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
# The server under test must still be running; when it is not, say so with its log and stop.
alive() { # SERVER
    kill -0 "${spid[$1]}" 2>/dev/null && return 0
    echo "!!! ERRORS: $1 is no longer running; the last lines of its log:"
    tail -20 "${slog[$1]}"
    exit 1
}
# From onramp's /metrics: records appended to the log, messages skipped as resends, fsyncs,
# their total seconds, and answers 200 ("0 0 0 0 0" when it cannot be read).
log_stats() { # SERVER
    { curl -sf -H "Authorization: Bearer $admin" "${surl[$1]}/metrics" || true; } | awk '
        /^onramp_log_records_total / { r = $2 } /^onramp_ingest_duplicates_total / { d = $2 }
        /^onramp_log_fsync_seconds_count / { c = $2 } /^onramp_log_fsync_seconds_sum / { s = $2 }
        /^onramp_http_responses_total\{code="200"\} / { ok = $2 }
        END { print r + 0, d + 0, c + 0, s + 0, ok + 0 }'
}
# How many records the engine has still to run (all partitions), and, from now, the seconds
# until it has run them all (up to 120): a peak measures ingest, and the engine may fall
# behind during it by up to --max-lag records a partition (docs/api.md, "Backpressure");
# these say by how much it did.
engine_lag() { # SERVER (0 when /metrics cannot be read: alive() then reports the server)
    { curl -sf -H "Authorization: Bearer $admin" "${surl[$1]}/metrics" || true; } |
        awk '/^onramp_engine_lag_records/ { s += $2 } END { print s + 0 }'
}
catch_up_s() { # SERVER; prints the seconds and the reads of /metrics it took
    local t0 t1 n=0
    t0=$(date +%s%N)
    for _ in $(seq 1200); do
        n=$((n + 1))
        [ "$(engine_lag "$1")" = 0 ] && break
        sleep 0.1
    done
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f %d", (b - a) / 1e9, n }'
}
# The same, once the requests wrk left in flight have been answered (two reads alike), and
# how many reads that took: each read of /metrics is itself an answer 200.
settled_stats() { # SERVER
    local a b n=1
    a=$(log_stats "$1")
    for _ in $(seq 20); do
        sleep 0.5
        b=$(log_stats "$1")
        n=$((n + 1))
        [ "${a% *}" = "${b% *}" ] && break
        a=$b
    done
    echo "$b $n"
}

# jf FILE FIELD: a number from a "wrk-result"/"loadgen-result" line
jf() { sed -n 's/^[a-z]*-result //p' "$1" | jq -r ".$2"; }

# check FILE LABEL: every answer was 200
check() {
    local line bad
    line=$(sed -n 's/^[a-z]*-result //p' "$1")
    if [ -z "$line" ]; then
        errors+=("$2: no result (see above)")
        return
    fi
    bad=$(echo "$line" | jq '(.non200 // 0) + (.socket_errors // 0) + (.errors // 0) + (.unfinished // 0)')
    if [ "$bad" != 0 ]; then
        errors+=("$2: $bad requests without a 200: $line")
    fi
}

# The machine's CPU time so far (user to steal, in ticks) and its steal: the time the
# hypervisor gave the cores to other machines, printed beside each measurement because a
# shared host's neighbours move the results (the latency percentiles most).
cpu_stat() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
steal_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1];
        printf "%.1f", (d > 0 ? (y[2] - x[2]) * 100 / d : 0) }'
}

# peak NAME SERVER TEMPLATE PATH EVENTS: wrk for $secs, plus the server's CPU and, for
# onramp, what reached its log
peak() {
    local out=$tmp/$1.out c0 c1 l0="0 0 0 0 0 0" l1="0 0 0 0 0 0" pid=${spid[$2]} m0 m1 lag=0 cu=0 reads=0
    c0=$(cpu_ticks "$pid")
    [ "$2" != nginx ] && l0=$(settled_stats "$2")
    m0=$(cpu_stat)
    wrk -t1 -c"$conns" -d"${secs}s" --timeout 10s -s bench/wrk/post.lua "${surl[$2]}" -- \
        "$3" "$auth" "$4" "$5" >"$out" 2>&1 || true
    m1=$(cpu_stat)
    c1=$(cpu_ticks "$pid")
    if [ "$2" != nginx ]; then
        lag=$(engine_lag "$2")
        read -r cu reads <<<"$(catch_up_s "$2")"
        reads=$((reads + 1))
        l1=$(settled_stats "$2")
    fi
    alive "$2"
    check "$out" "$1"
    local extra
    extra=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v s="$secs" -v l0="$l0" -v l1="$l1" \
        -v st="$(steal_pct "$m0" "$m1")" -v lag="$lag" -v cu="$cu" -v reads="$reads" 'BEGIN {
        split(l0, x, " "); split(l1, y, " "); n = y[3] - x[3];
        printf "{\"server_cores\":%.2f,\"log_records\":%d,\"duplicates\":%d,\"fsyncs\":%d,\"fsync_ms_mean\":%.2f,\"server_200s\":%d,\"steal_pct\":%s,\"engine_lag_at_end\":%d,\"engine_catch_up_s\":%s}",
            (b - a) / hz / s, y[1] - x[1], y[2] - x[2], n, n ? (y[4] - x[4]) * 1000 / n : 0,
            y[5] - x[5] - y[6] - reads, st, lag, cu }')
    jq -c --argjson x "$extra" '. + $x' <<<"$(sed -n 's/^wrk-result //p' "$out")" >"$tmp/$1.json" \
        2>/dev/null || echo '{}' >"$tmp/$1.json"
    if [ "$(jq '.duplicates // 0' "$tmp/$1.json")" != 0 ]; then
        errors+=("$1: onramp skipped messages as resends: every messageId should be new")
    fi
    # Every event answered 200 is in the log. The log may hold more: the requests in flight
    # when wrk stops (at most one per connection) are stored, but their clients have gone
    # before the answer that follows the fsync.
    if [ "$2" != nginx ] && [ "$(jq --argjson c "$conns" '.log_records >= .server_200s * .per_request and
            .log_records - .server_200s * .per_request <= $c * .per_request' "$tmp/$1.json")" != true ]; then
        errors+=("$1: the log does not hold the events answered 200 (and at most one request per connection more): $(cat "$tmp/$1.json")")
    fi
}

# onramp's ingest histograms and the log's fsync histogram (docs/api.md, /metrics) as
# "durable|request|fsync LE CUMULATIVE" lines.
hist_snap() { # SERVER
    curl -sf -H "Authorization: Bearer $admin" "${surl[$1]}/metrics" |
        sed -n -e 's/^onramp_ingest_\(durable\|request\)_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2 \3/p' \
            -e 's/^onramp_log_fsync_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/fsync \1 \2/p' ||
        true
}
# How many of a histogram's observations between two snapshots took longer than LE seconds
# (a bucket bound); 0 when it cannot be read.
hist_over() { # BEFORE AFTER NAME LE
    awk -v name="$3" -v le="$4" 'NR == FNR { if ($1 == name) a[$2] = $3; next }
        $1 == name { c[$2] = $3 - a[$2] }
        END { print (c["+Inf"] - c[le]) + 0 }' <(echo "$1") <(echo "$2")
}
# The bucket bound, in ms, under which 99% of the requests between two snapshots fell in one
# of them ("-" when none): the server's own p99, rounded up to a bucket.
hist_p99() { # BEFORE AFTER durable|request
    awk -v name="$3" 'NR == FNR { if ($1 == name) a[$2] = $3; next }
        $1 == name { le[++n] = $2; c[n] = $3 - a[$2] }
        END { if (!n || c[n] <= 0) { print "\"-\""; exit }
              for (i = 1; i <= n; i++) if (c[i] >= 0.99 * c[n]) {
                  if (le[i] == "+Inf") print "\"+Inf\""; else print le[i] * 1000; exit } }' \
        <(echo "$1") <(echo "$2")
}

# at_rate NAME SERVER TEMPLATE PATH RATE: bench/loadgen for $secs after a 2 s warm-up; for
# onramp, the server's own p99s as well (its histograms, warm-up included)
at_rate() {
    local out=$tmp/$1.out m0 m1 h0="" h1=""
    [ "$2" != nginx ] && h0=$(hist_snap "$2")
    m0=$(cpu_stat)
    "$loadgen" --url "${surl[$2]}$4" --rate "$5" --duration "$secs" --warmup 2 \
        --connections "$conns" --auth "$auth" --body "$3" --timeline "$tmp/$1.timeline" \
        >"$out" 2>&1 || true
    m1=$(cpu_stat)
    alive "$2"
    check "$out" "$1"
    [ "$2" != nginx ] && h1=$(hist_snap "$2")
    # From the timeline: the answers over 5 ms, in how many of the run's 100 ms slices, and
    # the slice with the most (a few slices: stalls; many: a load slow throughout).
    local slow
    slow=$(awk '{ s += $3; if ($3 > 0) k++; if ($3 > w) { w = $3; wt = $1; wm = $4 } }
        END { printf "{\"over_5ms\":%d,\"slices_over_5ms\":%d,\"slices\":%d,\"worst_slice\":{\"at_ms\":%d,\"over_5ms\":%d,\"max_ms\":%.1f}}",
            s, k, NR, wt, w, wm / 1000 }' "$tmp/$1.timeline" 2>/dev/null || echo '{}')
    # The log's fsyncs that took over 5 ms and over 25 ms meanwhile (warm-up included): an
    # answer waits for one, so a slow disk shows here and in the slices above alike.
    local fs='{}'
    [ "$2" != nginx ] && fs=$(jq -nc --argjson a "$(hist_over "$h0" "$h1" fsync 0.005)" \
        --argjson b "$(hist_over "$h0" "$h1" fsync 0.025)" '{fsyncs_over_5ms: $a, fsyncs_over_25ms: $b}')
    sed -n 's/^loadgen-result //p' "$out" | jq -c --argjson st "$(steal_pct "$m0" "$m1")" \
        --argjson d "$(hist_p99 "$h0" "$h1" durable)" --argjson r "$(hist_p99 "$h0" "$h1" request)" \
        --argjson slow "$slow" --argjson fs "$fs" \
        '. + {steal_pct: $st, server_durable_p99_ms: $d, server_answer_p99_ms: $r} + $slow + $fs' \
        >"$tmp/$1.json" 2>/dev/null || true
    [ -s "$tmp/$1.json" ] || echo '{}' >"$tmp/$1.json"
}

v() { jq -r "$2 // \"-\"" "$tmp/$1.json"; }

echo "# onramp ingest benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), 1 thread, $conns connections, ${secs} s a run; $(nginx -v 2>&1 | sed 's/.*: //'), 2 workers, reading each body (echo_read_request_body)"
# What one durable write costs on this disk, the floor under any 200 sent after an fsync.
sync_ms=$(dd if=/dev/zero of="$data_parent/onramp-ingest-probe" bs=4k count=100 oflag=dsync 2>&1 |
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i - 1); printf "%.2f", t * 1000 / 100 }')
rm -f "$data_parent/onramp-ingest-probe"
echo "# onramp data on $(df -T "$data_parent" | awk 'NR == 2 { print $2 }'), one 4 KB O_DSYNC write: ${sync_ms} ms; track body $(wc -c <"$tmp/track.json") bytes, batch body $(wc -c <"$tmp/batch.json") bytes (100 messages)"

# The three servers run side by side, and each workload is measured on each in turn, so that
# what else this machine is doing weighs on all three alike.
start_nginx
start_onramp batch
start_onramp everysec
for srv in nginx batch everysec; do
    peak "$srv-track" "$srv" "$tmp/track.json" /v1/track 1
done
for srv in nginx batch everysec; do
    peak "$srv-batch" "$srv" "$tmp/batch.json" /v1/batch 100
done
rate70() { jq -r '[(.rps // 0) * 0.7 | floor, 1] | max' "$tmp/$1.json"; }
track_rate=$(rate70 batch-track)
at_rate batch-track-70 batch "$tmp/track.json" /v1/track "$track_rate"
at_rate nginx-track-70 nginx "$tmp/track.json" /v1/track "$track_rate"
at_rate batch-batch-70 batch "$tmp/batch.json" /v1/batch "$(rate70 batch-batch)"
at_rate everysec-track-70 everysec "$tmp/track.json" /v1/track "$(rate70 everysec-track)"
# The track latency above follows both onramp servers' batch peaks, which leave millions of
# stored messages behind them, and more state to work on (docs/performance.md); the same rate
# on a server that took no peak, the other two stopped, shows the latency without that.
# A stopped server deletes its commit journal (docs/operations.md), and on a disk mounted
# with `discard` the blocks freed are discarded a few seconds later, which stalls other
# fsyncs: that is the stopped servers' work, so it is let pass before the new one starts.
for srv in batch everysec; do
    kill "${spid[$srv]}" 2>/dev/null || true
    { wait "${spid[$srv]}"; } 2>/dev/null || true
done
sync
sleep 3
start_onramp batch fresh
at_rate fresh-track-70 fresh "$tmp/track.json" /v1/track "$track_rate"

ratio() { jq -rn --argjson a "$(v "$1" .rps)" --argjson b "$(v "$2" .rps)" '$a / $b * 100 | round / 100' 2>/dev/null || echo -; }
row() { printf '%-34s %14s %14s %7s %16s %7s\n' "$@"; }
num() { # 1234567.8 -> 1,234,568
    case $1 in '' | - | null) echo - ;; *) printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;; esac
}

echo
row "peak (wrk)" "nginx" "onramp batch" "ratio" "onramp everysec" "ratio"
row "POST /v1/track, requests/s" "$(num "$(v nginx-track .rps)")" "$(num "$(v batch-track .rps)")" \
    "$(ratio batch-track nginx-track)" "$(num "$(v everysec-track .rps)")" "$(ratio everysec-track nginx-track)"
row "POST /v1/batch x100, events/s" "$(num "$(v nginx-batch .events_per_s)")" "$(num "$(v batch-batch .events_per_s)")" \
    "$(ratio batch-batch nginx-batch)" "$(num "$(v everysec-batch .events_per_s)")" "$(ratio everysec-batch nginx-batch)"
row "server CPU, cores (track / batch)" "$(v nginx-track .server_cores) / $(v nginx-batch .server_cores)" \
    "$(v batch-track .server_cores) / $(v batch-batch .server_cores)" "" \
    "$(v everysec-track .server_cores) / $(v everysec-batch .server_cores)" ""
per_event() { jq -r 'if (.server_200s // 0) > 0 then .log_records / (.server_200s * .per_request) * 1000 | round / 1000 else "-" end' "$tmp/$1.json"; }
fsync_ms() { jq -r '.fsync_ms_mean // "-"' "$tmp/$1.json"; }
row "log records / events answered 200" "" "$(per_event batch-track) / $(per_event batch-batch)" "" \
    "$(per_event everysec-track) / $(per_event everysec-batch)" ""
row "fsync mean, ms (track / batch)" "" "$(fsync_ms batch-track) / $(fsync_ms batch-batch)" "" \
    "$(fsync_ms everysec-track) / $(fsync_ms everysec-batch)" ""
behind() { jq -r '"\(.engine_lag_at_end // "-") (\(.engine_catch_up_s // "-") s)"' "$tmp/$1.json"; }
row "engine behind at the end, records (catch-up)" "" "$(behind batch-track) / $(behind batch-batch)" "" \
    "$(behind everysec-track) / $(behind everysec-batch)" ""
row "steal, % of CPU (track / batch)" "$(v nginx-track .steal_pct) / $(v nginx-batch .steal_pct)" \
    "$(v batch-track .steal_pct) / $(v batch-batch .steal_pct)" "" \
    "$(v everysec-track .steal_pct) / $(v everysec-batch .steal_pct)" ""
echo
printf '%-44s %10s %9s %9s %9s %9s %8s %16s\n' "latency at 70% of peak (loadgen, from due time)" "rate/s" "p50 ms" "p99 ms" "p99.9 ms" "max ms" "steal %" "server p99 <= ms"
lat() {
    printf '%-44s %10s %9s %9s %9s %9s %8s %16s\n' "$1" "$(num "$(v "$2" .rate)")" \
        "$(jq -r '(.p50_us // 0) / 1000 * 100 | round / 100' "$tmp/$2.json")" \
        "$(jq -r '(.p99_us // 0) / 1000 * 100 | round / 100' "$tmp/$2.json")" \
        "$(jq -r '(.p999_us // 0) / 1000 * 100 | round / 100' "$tmp/$2.json")" \
        "$(jq -r '(.max_us // 0) / 1000 * 100 | round / 100' "$tmp/$2.json")" "$(v "$2" .steal_pct)" \
        "$(v "$2" .server_durable_p99_ms) / $(v "$2" .server_answer_p99_ms)"
}
lat "onramp batch, /v1/track" batch-track-70
lat "nginx, /v1/track, the same rate" nginx-track-70
lat "onramp batch, /v1/batch x100" batch-batch-70
lat "onramp everysec, /v1/track" everysec-track-70
lat "onramp batch, no peak before, /v1/track" fresh-track-70
# Where the track answers over 5 ms fell: spread over the run, or in a few stalls; for onramp,
# beside them, how many of the log's fsyncs took over 5 ms (and 25 ms) meanwhile; nginx at
# the same rate shows the stalls that are the machine's (it writes nothing to disk).
stalls() {
    jq -r --arg l "$1" '"\($l): \(.over_5ms // "-") answers over 5 ms (\(if (.measured // 0) > 0 then (.over_5ms // 0) * 10000 / .measured | round / 100 else "-" end)%), in \(.slices_over_5ms // "-") of \(.slices // "-") slices of 100 ms; the most in one slice: \(.worst_slice.over_5ms // "-") (at \(.worst_slice.at_ms // "-") ms, slowest \(.worst_slice.max_ms // "-") ms)\(if .fsyncs_over_5ms then "; log fsyncs over 5 ms: \(.fsyncs_over_5ms), over 25 ms: \(.fsyncs_over_25ms)" else "" end)"' "$tmp/$2.json"
}
echo
stalls "onramp batch, /v1/track" batch-track-70
stalls "nginx, /v1/track, the same rate" nginx-track-70
stalls "onramp batch, no peak before, /v1/track" fresh-track-70

echo
track_ratio=$(ratio batch-track nginx-track)
batch_eps=$(v batch-batch .events_per_s)
p99_ms=$(jq -r '(.p99_us // 0) / 1000 * 100 | round / 100' "$tmp/batch-track-70.json")
verdict() { if [ "$1" = 1 ]; then echo met; else echo MISSED; fi; }
printf '%-58s %s\n' "target: track >= 0.50 of nginx's rate (--fsync batch)" \
    "$track_ratio, $(verdict "$(jq -n "$track_ratio >= 0.5" 2>/dev/null | sed 's/true/1/')")"
printf '%-58s %s\n' "target: batch-100 >= 500,000 events/s (--fsync batch)" \
    "$(num "$batch_eps"), $(verdict "$(jq -n "$batch_eps >= 500000" 2>/dev/null | sed 's/true/1/')")"
printf '%-58s %s\n' "target: track p99 < 5 ms at 70% of peak (--fsync batch)" \
    "$p99_ms ms, $(verdict "$(jq -n "$p99_ms < 5" 2>/dev/null | sed 's/true/1/')")"

all='{}'
for n in nginx-track nginx-batch batch-track batch-batch batch-track-70 batch-batch-70 nginx-track-70 \
    everysec-track everysec-batch everysec-track-70 fresh-track-70; do
    all=$(jq -c --arg n "$n" --slurpfile r "$tmp/$n.json" '. + {($n): $r[0]}' <<<"$all")
done
echo
if [ ${#errors[@]} -gt 0 ]; then
    echo "!!! ERRORS: some requests were not answered 200; the figures above are not valid:"
    for e in "${errors[@]}"; do echo "!!!   $e"; done
fi
echo "ingest-result $(jq -c --argjson ok "$([ ${#errors[@]} -eq 0 ] && echo true || echo false)" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson cores "$(nproc)" --arg sync "$sync_ms" \
    '. + {all_200: $ok, cores: $cores, load_after: $load, disk_sync_write_ms: ($sync | tonumber? // null)}' <<<"$all")"
[ ${#errors[@]} -eq 0 ]
