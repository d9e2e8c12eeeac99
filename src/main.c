/*
 * main.c - the onramp command line: serve, check, replay, simulate. Dispatch and flag
 * parsing only; the work is done by the layers under src/.
 */
#include "base/base.h"
#include "base/json.h"
#include "engine/replay.h"
#include "engine/shard.h"
#include "http/http.h"
#include "rules/rules.h"
#include "stream/elog.h"
#include "track/enrich.h"
#include "track/simulate.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fputs("usage: onramp <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve [options]                run the server: Segment ingest into the event log\n"
          "  check FILE [--dump]            compile a rules file; print errors; --dump bytecode\n"
          "  replay --rules FILE [EVENTS]   run Segment JSONL events (file or -) through rules\n"
          "  simulate [--users N] [--seed S] write a generated onboarding event stream\n"
          "  help                           this text\n"
          "\n"
          "`onramp <command> --help` describes a command's options.\n",
          out);
}

static int cmd_check(int argc, char **argv)
{
    const char *path = NULL;
    bool dump = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dump") == 0) {
            dump = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts("usage: onramp check FILE [--dump]\n\n"
                 "Compiles FILE and prints every error as file:line:col. Exits 0 when the file\n"
                 "compiles, 1 when it has errors, 2 on a usage error. --dump prints the\n"
                 "compiled tables, the per-user profile layout and the bytecode.");
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "onramp check: unknown option \"%s\"\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "onramp check: one file at a time (got \"%s\" and \"%s\")\n", path,
                    argv[i]);
            return 2;
        }
    }
    if (!path) {
        fputs("onramp check: missing FILE (try: onramp check rules/onboarding.rules)\n", stderr);
        return 2;
    }
    onr_buf errors = {0};
    rule_set *rs = NULL;
    int n = rule_compile_file(path, &rs, &errors);
    if (n) {
        fwrite(errors.data, 1, errors.len, stderr);
        fprintf(stderr, "%d error%s\n", n, n == 1 ? "" : "s");
        onr_buf_free(&errors);
        return 1;
    }
    if (dump) {
        onr_buf out = {0};
        rule_dump(rs, &out);
        fwrite(out.data, 1, out.len, stdout);
        onr_buf_free(&out);
    } else {
        printf("%s: ok (%d segments, %d triggers, %zu bytes per user)\n", path, rs->nsegments,
               rs->ntriggers, rs->layout.size);
    }
    rule_free(rs);
    onr_buf_free(&errors);
    return 0;
}

static int parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-') {
        fprintf(stderr, "onramp %s: %s needs a whole number, got \"%s\"\n", cmd, flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmd_simulate(int argc, char **argv)
{
    sim_opts o;
    sim_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            puts("usage: onramp simulate [--users N] [--seed S] [--start TIME] [--spread DUR]\n"
                 "                       [--no-shuffle]\n\n"
                 "Writes a realistic onboarding event stream as Segment JSONL to stdout: N\n"
                 "users (default 1000) with a mix of personas (explorers, quick completers,\n"
                 "hesitant users, drop-offs, returners, typical users). The same options give\n"
                 "byte-identical output. --start is the first sign-up (ISO-8601, default\n"
                 "2026-11-18T09:00:00Z); sign-ups spread over --spread (default 8h).");
            return 0;
        }
        if (i + 1 >= argc && (strcmp(a, "--users") == 0 || strcmp(a, "--seed") == 0 ||
                              strcmp(a, "--start") == 0 || strcmp(a, "--spread") == 0)) {
            fprintf(stderr, "onramp simulate: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--users") == 0) {
            if (parse_u64("simulate", a, argv[++i], &o.users))
                return 2;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_u64("simulate", a, argv[++i], &o.seed))
                return 2;
        } else if (strcmp(a, "--start") == 0) {
            const char *v = argv[++i];
            if (onr_time_parse(v, strlen(v), &o.start_ms)) {
                fprintf(stderr, "onramp simulate: --start needs an ISO-8601 time, got \"%s\"\n", v);
                return 2;
            }
        } else if (strcmp(a, "--spread") == 0) {
            uint64_t hours;
            if (parse_u64("simulate", "--spread (hours)", argv[++i], &hours))
                return 2;
            o.spread_ms = (int64_t)hours * ONR_HOUR_MS;
        } else if (strcmp(a, "--no-shuffle") == 0) {
            o.shuffle = false;
        } else {
            fprintf(stderr, "onramp simulate: unknown option \"%s\"\n", a);
            return 2;
        }
    }
    int rc = sim_write(stdout, &o);
    if (rc == 0 && fflush(stdout) != 0)
        rc = -errno;
    if (rc) {
        fprintf(stderr, "onramp simulate: write failed: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}

/* ---- serve */

/* Structured logs: one JSON object per line on stderr. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_line(const char *level, const char *msg, const char *extra)
{
    char when[32];
    onr_time_format(onr_wall_ms(), when);
    onr_buf b = {0};
    onr_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", when, level);
    jw_strz(&b, msg);
    if (extra)
        onr_buf_printf(&b, ",%s", extra);
    onr_buf_puts(&b, "}\n");
    pthread_mutex_lock(&log_mu);
    fwrite(b.data, 1, b.len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
    onr_buf_free(&b);
}

static void log_cb(void *ctx, const char *level, const char *msg)
{
    log_line(level, msg, NULL);
}

static void elog_log_cb(void *ctx, const char *msg)
{
    log_line("warn", msg, "\"component\":\"elog\"");
}

/* Each connection is a descriptor, and the log, its readers and the HTTP threads need more
 * beside them (at most about 4 a partition and 2 a thread). Raises the soft RLIMIT_NOFILE as
 * far as needed and the hard limit allows; past that, lowers *conns to what fits and says so. */
static void fit_descriptors(uint64_t *conns, int threads, int partitions)
{
    uint64_t reserve = 4 * (uint64_t)partitions + 2 * (uint64_t)threads + 64;
    uint64_t want = *conns + reserve;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return;
    struct rlimit up = rl;
    up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
        rl = up;
    if (rl.rlim_cur >= want)
        return;
    uint64_t fit = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 1;
    char msg[256];
    snprintf(msg, sizeof(msg),
             "--max-connections %llu needs %llu file descriptors and the limit is %llu "
             "(ulimit -n): at most %llu connections",
             (unsigned long long)*conns, (unsigned long long)want, (unsigned long long)rl.rlim_cur,
             (unsigned long long)fit);
    log_line("warn", msg, NULL);
    *conns = fit;
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -errno;
            tmp[i] = c;
        }
    }
    return 0;
}

/* "ADDR:PORT", "[V6]:PORT" or ":PORT" (all addresses). */
static int parse_listen(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return -1;
    const char *h = s;
    size_t hn = (size_t)(colon - s);
    if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    if (hn == 0) {
        h = "0.0.0.0";
        hn = 7;
    }
    if (hn >= cap)
        return -1;
    memcpy(host, h, hn);
    host[hn] = 0;
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || *end || !colon[1] || p > 65535)
        return -1;
    *port = (uint16_t)p;
    return 0;
}

/* ---- the event log as the engine shards' source */

typedef struct live_source {
    elog *log;
    pthread_mutex_t mu; /* guards srv: it is cleared before ingest stops and frees it */
    http_server *srv;   /* set once ingest is listening */
    int64_t retain_age_ms;
    uint64_t retain_bytes;
} live_source;

static int src_open(void *ctx, int p, uint64_t from, void **reader)
{
    return elog_reader_open(((live_source *)ctx)->log, p, from, (elog_reader **)reader);
}

static int src_next(void *reader, const void **rec, size_t *len, uint64_t *offset)
{
    return elog_reader_next(reader, rec, len, offset);
}

static void src_close(void *reader)
{
    elog_reader_close(reader);
}

static uint64_t src_start(void *ctx, int p)
{
    return elog_start_offset(((live_source *)ctx)->log, p);
}

/* elog_set_readable's: new records of partition p wake the shard that owns it. */
static void notify_shard(void *ctx, int p)
{
    shard_notify(ctx, p);
}

static uint64_t src_end(void *ctx, int p)
{
    return elog_end_offset(((live_source *)ctx)->log, p);
}

static uint64_t src_synced(void *ctx, int p)
{
    return elog_synced_offset(((live_source *)ctx)->log, p);
}

static int64_t src_watermark(void *ctx)
{
    live_source *ls = ctx;
    /* until ingest is up (and once it is down) the shards wait, or drain at stop */
    pthread_mutex_lock(&ls->mu);
    int64_t w = ls->srv ? http_watermark(ls->srv) : -1;
    pthread_mutex_unlock(&ls->mu);
    return w;
}

static void src_retain(void *ctx, int p, uint64_t offset)
{
    live_source *ls = ctx;
    int n = elog_retain(ls->log, p, offset, ls->retain_bytes, ls->retain_age_ms, onr_wall_ms());
    if (n < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "retention of partition %d failed: %s", p, strerror(-n));
        log_line("error", msg, NULL);
    }
}

/* Reads and compiles the rules file; errors go to the log, one line per diagnostic block. */
static rule_set *load_rules(const char *path)
{
    rule_set *rs = NULL;
    onr_buf errs = {0};
    int n = rule_compile_file(path, &rs, &errs);
    if (n) {
        onr_buf extra = {0};
        onr_buf_puts(&extra, "\"rules\":");
        jw_strz(&extra, path);
        onr_buf_puts(&extra, ",\"errors\":");
        jw_str(&extra, errs.data ? errs.data : "", errs.len);
        log_line("error", "the rules do not compile", onr_buf_cstr(&extra));
        onr_buf_free(&extra);
    }
    onr_buf_free(&errs);
    return rs;
}

static bool parse_duration_flag(const char *flag, const char *s, int64_t *out)
{
    if (replay_parse_duration(s, out) == 0)
        return true;
    fprintf(stderr, "onramp serve: %s needs a duration like 30s, 5m or 7d, got \"%s\"\n", flag, s);
    return false;
}

static const char serve_help[] =
    "usage: onramp serve [options]\n"
    "\n"
    "Runs the server: the Segment-compatible ingest API (POST /v1/track, /v1/identify,\n"
    "/v1/page, /v1/screen, /v1/group, /v1/alias, /v1/batch) appending accepted messages to\n"
    "the durable event log, plus GET /healthz and /readyz. See docs/api.md.\n"
    "Each option can also be set by the environment variable shown; a flag wins.\n"
    "\n"
    "  --listen ADDR:PORT    address to listen on            [127.0.0.1:8088]  ONRAMP_LISTEN\n"
    "  --data DIR            data directory (log in DIR/log) [./var/onramp]    ONRAMP_DATA\n"
    "  --write-key KEY       accepted write key; repeatable  [one generated    ONRAMP_WRITE_KEY\n"
    "                        (env: comma-separated)           and printed]\n"
    "  --fsync POLICY        always | batch | everysec       [batch]           ONRAMP_FSYNC\n"
    "  --commit-interval D   batch: one journal fsync at     [1ms; 0: none]    "
    "ONRAMP_COMMIT_INTERVAL\n"
    "                        most this often, while busy\n"
    "  --partitions N        partitions of the log (fixed)   [16]              ONRAMP_PARTITIONS\n"
    "  --threads N           HTTP threads, at least; each    [4]               ONRAMP_THREADS\n"
    "                        serves at most 120 connections\n"
    "  --max-connections N   connections open at once; more  [1000: 9 threads] "
    "ONRAMP_MAX_CONNECTIONS\n"
    "                        wait to be accepted (1..30720)\n"
    "  --route-capacity N    ids the partition router keeps  [4194304]         "
    "ONRAMP_ROUTE_CAPACITY\n"
    "                        (16 bytes each: 64 MiB; 0: hash routing only)\n"
    "  --rate-limit N        events a second per write key   [0: unlimited]    ONRAMP_RATE_LIMIT\n"
    "                        (a batch of 100 counts 100; over it: 429 + Retry-After)\n"
    "  --rate-burst N        events a key may send at once   [one second's]    ONRAMP_RATE_BURST\n"
    "  --http-timeout S      close a connection silent for S [30]              "
    "ONRAMP_HTTP_TIMEOUT\n"
    "                        seconds, or whose request headers take longer\n"
    "  --rules FILE          the rules the engine runs       [rules/onboarding.rules]\n"
    "                                                                          ONRAMP_RULES\n"
    "  --admin-token TOKEN   bearer token of /api/ and       [one generated    ONRAMP_ADMIN_TOKEN\n"
    "                        /metrics                         and printed]\n"
    "  --shards N            engine threads (1..256)         [as the           ONRAMP_SHARDS\n"
    "                                                         checkpoints, else one per core]\n"
    "  --checkpoint-every D  between engine checkpoints      [30s]             "
    "ONRAMP_CHECKPOINT_EVERY\n"
    "  --state-every D       between saves of the router and [5m]              ONRAMP_STATE_EVERY\n"
    "                        recent messageIds (DATA/ingest.state)\n"
    "  --lateness D          how far the engine's clock      [2s]              ONRAMP_LATENESS\n"
    "                        trails the newest receive time\n"
    "  --max-lag N           records a partition's shard may [1000000]         ONRAMP_MAX_LAG\n"
    "                        be behind before ingest answers 503\n"
    "  --retain-age D        delete checkpointed log older   [7d; 0: keep]     ONRAMP_RETAIN_AGE\n"
    "  --retain-bytes N      or beyond N bytes a partition   [0: no limit]     "
    "ONRAMP_RETAIN_BYTES\n"
    "  --segment-bytes N     size of the log's segment files [67108864]        "
    "ONRAMP_SEGMENT_BYTES\n"
    "                        (retention deletes whole ones; at least twice the largest message\n"
    "                        the limits store: 2 MiB by default)\n"
    "  --max-event-bytes N   largest message, as sent        [32768]           "
    "ONRAMP_MAX_EVENT_BYTES\n"
    "  --max-request-bytes N largest request body, unzipped  [512000]          "
    "ONRAMP_MAX_REQUEST_BYTES\n"
    "                        (at most 64 MiB, and at least --max-event-bytes)\n"
    "  --geoip FILE          a MaxMind .mmdb: adds           [none]            ONRAMP_GEOIP\n"
    "                        context.location.country from context.ip or the client address\n"
    "  --help                this text\n"
    "\n"
    "SIGHUP reloads the rules file (a file that does not compile is refused; the running rules\n"
    "stay). SIGTERM or SIGINT stops accepting connections, finishes requests in flight, runs\n"
    "what is in the log, checkpoints the engine, closes the log and exits 0.\n";

#define MAX_WRITE_KEYS 64
/* resent messages are recognised for 24 hours, at most 10 million ids (docs/api.md) */
#define DEDUP_IDS ((size_t)10 * 1000 * 1000)
#define DEDUP_WINDOW_MS (24 * ONR_HOUR_MS)

static int cmd_serve(int argc, char **argv)
{
    const char *listen = getenv("ONRAMP_LISTEN");
    const char *data = getenv("ONRAMP_DATA");
    const char *fsync_s = getenv("ONRAMP_FSYNC");
    const char *commit_s = getenv("ONRAMP_COMMIT_INTERVAL");
    const char *parts_s = getenv("ONRAMP_PARTITIONS");
    const char *threads_s = getenv("ONRAMP_THREADS");
    const char *conns_s = getenv("ONRAMP_MAX_CONNECTIONS");
    const char *route_s = getenv("ONRAMP_ROUTE_CAPACITY");
    const char *rate_s = getenv("ONRAMP_RATE_LIMIT");
    const char *burst_s = getenv("ONRAMP_RATE_BURST");
    const char *timeout_s = getenv("ONRAMP_HTTP_TIMEOUT");
    const char *rules_path = getenv("ONRAMP_RULES");
    const char *admin_token = getenv("ONRAMP_ADMIN_TOKEN");
    const char *shards_s = getenv("ONRAMP_SHARDS");
    const char *ckpt_s = getenv("ONRAMP_CHECKPOINT_EVERY");
    const char *state_s = getenv("ONRAMP_STATE_EVERY");
    const char *late_s = getenv("ONRAMP_LATENESS");
    const char *lag_s = getenv("ONRAMP_MAX_LAG");
    const char *rage_s = getenv("ONRAMP_RETAIN_AGE");
    const char *rbytes_s = getenv("ONRAMP_RETAIN_BYTES");
    const char *segment_s = getenv("ONRAMP_SEGMENT_BYTES");
    const char *max_event_s = getenv("ONRAMP_MAX_EVENT_BYTES");
    const char *max_request_s = getenv("ONRAMP_MAX_REQUEST_BYTES");
    const char *geoip = getenv("ONRAMP_GEOIP");
    const char *keys[MAX_WRITE_KEYS];
    size_t nkeys = 0;
    char *env_keys = getenv("ONRAMP_WRITE_KEY") ? onr_strdup(getenv("ONRAMP_WRITE_KEY")) : NULL;
    bool flag_keys = false;
    int rc = 2;
    rule_set *rules = NULL; /* until the shards own it */

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(serve_help, stdout);
            rc = 0;
            goto out;
        }
        const char **slot = strcmp(a, "--listen") == 0              ? &listen
                            : strcmp(a, "--data") == 0              ? &data
                            : strcmp(a, "--fsync") == 0             ? &fsync_s
                            : strcmp(a, "--commit-interval") == 0   ? &commit_s
                            : strcmp(a, "--partitions") == 0        ? &parts_s
                            : strcmp(a, "--threads") == 0           ? &threads_s
                            : strcmp(a, "--max-connections") == 0   ? &conns_s
                            : strcmp(a, "--route-capacity") == 0    ? &route_s
                            : strcmp(a, "--rate-limit") == 0        ? &rate_s
                            : strcmp(a, "--rate-burst") == 0        ? &burst_s
                            : strcmp(a, "--http-timeout") == 0      ? &timeout_s
                            : strcmp(a, "--rules") == 0             ? &rules_path
                            : strcmp(a, "--admin-token") == 0       ? &admin_token
                            : strcmp(a, "--shards") == 0            ? &shards_s
                            : strcmp(a, "--checkpoint-every") == 0  ? &ckpt_s
                            : strcmp(a, "--state-every") == 0       ? &state_s
                            : strcmp(a, "--lateness") == 0          ? &late_s
                            : strcmp(a, "--max-lag") == 0           ? &lag_s
                            : strcmp(a, "--retain-age") == 0        ? &rage_s
                            : strcmp(a, "--retain-bytes") == 0      ? &rbytes_s
                            : strcmp(a, "--segment-bytes") == 0     ? &segment_s
                            : strcmp(a, "--max-event-bytes") == 0   ? &max_event_s
                            : strcmp(a, "--max-request-bytes") == 0 ? &max_request_s
                            : strcmp(a, "--geoip") == 0             ? &geoip
                                                                    : NULL;
        bool is_key = strcmp(a, "--write-key") == 0;
        if (!slot && !is_key) {
            fprintf(stderr, "onramp serve: unknown option \"%s\" (see onramp serve --help)\n", a);
            goto out;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "onramp serve: %s needs a value\n", a);
            goto out;
        }
        if (slot) {
            *slot = argv[++i];
        } else {
            if (!flag_keys)
                nkeys = 0; /* flags replace the environment's keys */
            flag_keys = true;
            if (nkeys == MAX_WRITE_KEYS) {
                fprintf(stderr, "onramp serve: at most %d write keys\n", MAX_WRITE_KEYS);
                goto out;
            }
            if (!*argv[i + 1]) {
                fputs("onramp serve: --write-key needs a non-empty key\n", stderr);
                goto out;
            }
            keys[nkeys++] = argv[++i];
        }
    }
    if (!flag_keys && env_keys) {
        for (char *save = NULL, *k = strtok_r(env_keys, ",", &save); k && nkeys < MAX_WRITE_KEYS;
             k = strtok_r(NULL, ",", &save))
            keys[nkeys++] = k;
    }
    for (size_t k = 0; k < nkeys; k++)
        if (strchr(keys[k], ':')) {
            /* the key itself is a secret: named by its place */
            fprintf(stderr,
                    "onramp serve: write key %zu of %zu contains ':', which HTTP Basic auth "
                    "takes for the end of the key; senders could not use it\n",
                    k + 1, nkeys);
            goto out;
        }

    char host[256];
    uint16_t port;
    if (!listen)
        listen = "127.0.0.1:8088";
    if (parse_listen(listen, host, sizeof(host), &port)) {
        fprintf(stderr, "onramp serve: --listen needs ADDR:PORT, got \"%s\"\n", listen);
        goto out;
    }
    if (!data || !*data)
        data = "./var/onramp";
    elog_opts eo = {0};
    if (fsync_s && elog_fsync_parse(fsync_s, &eo.fsync)) {
        fprintf(stderr, "onramp serve: --fsync must be always, batch or everysec, got \"%s\"\n",
                fsync_s);
        goto out;
    }
    int64_t commit_ms = ELOG_COMMIT_INTERVAL_MS;
    if (commit_s && !parse_duration_flag("--commit-interval", commit_s, &commit_ms))
        goto out;
    if (commit_ms > 10 * ONR_SECOND_MS) {
        fputs("onramp serve: --commit-interval must be at most 10s\n", stderr);
        goto out;
    }
    eo.commit_interval_ms = commit_ms ? commit_ms : -1;
    uint64_t parts = 16, threads = 4, conns = HTTP_MAX_CONNECTIONS_DEFAULT;
    if ((parts_s && parse_u64("serve", "--partitions", parts_s, &parts)) ||
        (threads_s && parse_u64("serve", "--threads", threads_s, &threads)) ||
        (conns_s && parse_u64("serve", "--max-connections", conns_s, &conns)))
        goto out;
    if (parts < 1 || parts > 1000 || threads < 1 || threads > HTTP_MAX_THREADS || conns < 1 ||
        conns > HTTP_MAX_THREADS * HTTP_CONNS_PER_THREAD) {
        fprintf(stderr,
                "onramp serve: --partitions must be 1..1000, --threads 1..%d and "
                "--max-connections 1..%d\n",
                HTTP_MAX_THREADS, HTTP_MAX_THREADS * HTTP_CONNS_PER_THREAD);
        goto out;
    }
    uint64_t route_cap = TRK_ROUTE_DEFAULT_CAPACITY;
    if (route_s && parse_u64("serve", "--route-capacity", route_s, &route_cap))
        goto out;
    if (route_cap > TRK_ROUTE_MAX_CAPACITY) {
        fprintf(stderr, "onramp serve: --route-capacity must be at most %zu\n",
                TRK_ROUTE_MAX_CAPACITY);
        goto out;
    }
    uint64_t rate = 0, burst = 0, timeout = 30;
    if ((rate_s && parse_u64("serve", "--rate-limit", rate_s, &rate)) ||
        (burst_s && parse_u64("serve", "--rate-burst", burst_s, &burst)) ||
        (timeout_s && parse_u64("serve", "--http-timeout", timeout_s, &timeout)))
        goto out;
    if (rate > 1000000000 || burst > 1000000000 || timeout < 1 || timeout > 86400) {
        fputs("onramp serve: --rate-limit and --rate-burst must be at most 1e9, and "
              "--http-timeout 1..86400\n",
              stderr);
        goto out;
    }
    uint64_t max_event = HTTP_MAX_EVENT_BYTES, max_request = HTTP_MAX_REQUEST_BYTES;
    if ((max_event_s && parse_u64("serve", "--max-event-bytes", max_event_s, &max_event)) ||
        (max_request_s && parse_u64("serve", "--max-request-bytes", max_request_s, &max_request)))
        goto out;
    if (max_request < 1 || max_request > HTTP_MAX_REQUEST_LIMIT) {
        fprintf(stderr, "onramp serve: --max-request-bytes must be 1..%d (64 MiB), got %llu\n",
                HTTP_MAX_REQUEST_LIMIT, (unsigned long long)max_request);
        goto out;
    }
    if (max_event < 1 || max_event > max_request) {
        fprintf(stderr,
                "onramp serve: --max-event-bytes must be 1..%llu (--max-request-bytes), got "
                "%llu\n",
                (unsigned long long)max_request, (unsigned long long)max_event);
        goto out;
    }
    /* the log takes the largest message these limits store, and segments twice its size */
    eo.max_record = ONR_MAX((size_t)1 << 20, http_max_record(max_event, max_request));
    eo.segment_bytes = ONR_MAX((size_t)64 << 20, 2 * eo.max_record);
    if (segment_s) {
        uint64_t seg = 0;
        if (parse_u64("serve", "--segment-bytes", segment_s, &seg))
            goto out;
        if (seg < 2 * (uint64_t)eo.max_record || seg > UINT32_MAX) {
            fprintf(stderr,
                    "onramp serve: --segment-bytes must be %llu..%u (at least twice the largest "
                    "message the limits store), got %llu\n",
                    2 * (unsigned long long)eo.max_record, UINT32_MAX, (unsigned long long)seg);
            goto out;
        }
        eo.segment_bytes = (size_t)seg;
    }
    if (geoip && !*geoip)
        geoip = NULL;
    if (geoip) { /* checked now, before the log is opened; the server opens its own */
        char gerr[512];
        trk_geo *geo = NULL;
        if (trk_enrich_geo_open(geoip, &geo, gerr, sizeof(gerr))) {
            fprintf(stderr, "onramp serve: %s\n", gerr);
            goto out;
        }
        trk_enrich_geo_close(geo);
    }
    eo.partitions = (int)parts;
    eo.log = elog_log_cb;

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t nshards = 0, max_lag = 1000000, retain_bytes = 0; /* 0: as the checkpoints */
    int64_t ckpt_ms = 30 * ONR_SECOND_MS, late_ms = 2 * ONR_SECOND_MS, retain_age = 7 * ONR_DAY_MS;
    int64_t state_ms = 5 * ONR_MINUTE_MS;
    if ((shards_s && parse_u64("serve", "--shards", shards_s, &nshards)) ||
        (lag_s && parse_u64("serve", "--max-lag", lag_s, &max_lag)) ||
        (rbytes_s && parse_u64("serve", "--retain-bytes", rbytes_s, &retain_bytes)) ||
        (ckpt_s && !parse_duration_flag("--checkpoint-every", ckpt_s, &ckpt_ms)) ||
        (state_s && !parse_duration_flag("--state-every", state_s, &state_ms)) ||
        (late_s && !parse_duration_flag("--lateness", late_s, &late_ms)) ||
        (rage_s && !parse_duration_flag("--retain-age", rage_s, &retain_age)))
        goto out;
    if ((shards_s && (nshards < 1 || nshards > MAX_SHARDS)) || max_lag < 1 ||
        ckpt_ms < ONR_SECOND_MS || state_ms < ONR_SECOND_MS || late_ms > ONR_HOUR_MS) {
        fputs("onramp serve: --shards must be 1..256, --max-lag at least 1, --checkpoint-every "
              "and --state-every at least 1s, and --lateness at most 1h\n",
              stderr);
        goto out;
    }
    if (!rules_path || !*rules_path)
        rules_path = "rules/onboarding.rules";
    char gen_token[65];
    if (!admin_token || !*admin_token) {
        onr_random_hex(gen_token, 24);
        admin_token = gen_token;
    }

    char generated[33];
    if (nkeys == 0) {
        onr_random_hex(generated, 16);
        keys[nkeys++] = generated;
    }

    /* The signals are taken by sigwait below: block them before any thread starts, so that
     * every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    fit_descriptors(&conns, http_threads_for((int)threads, (int)conns), eo.partitions);
    threads = (uint64_t)http_threads_for((int)threads, (int)conns);
    onr_buf extra = {0};
    onr_buf_puts(&extra, "\"version\":\"0.1.0\",\"data\":");
    jw_strz(&extra, data);
    onr_buf_printf(&extra,
                   ",\"fsync\":\"%s\",\"partitions\":%d,\"threads\":%d,\"max_connections\":%d",
                   elog_fsync_name(eo.fsync), eo.partitions, (int)threads, (int)conns);
    log_line("info", "onramp serve starting", onr_buf_cstr(&extra));
    rules = load_rules(rules_path);
    if (!rules) {
        rc = 1;
        goto out_extra;
    }

    char logdir[4096], err[512];
    snprintf(logdir, sizeof(logdir), "%s/log", data);
    int e = mkdir_p(data);
    if (e) {
        snprintf(err, sizeof(err), "cannot create the data directory %s: %s", data, strerror(-e));
        log_line("error", err, NULL);
        rc = 1;
        goto out_extra;
    }
    elog *log = NULL;
    e = elog_open(logdir, &eo, &log, err, sizeof(err));
    if (e) {
        log_line("error", err, NULL);
        rc = 1;
        goto out_extra;
    }
    onr_buf_clear(&extra);
    onr_buf_puts(&extra, "\"dir\":");
    jw_strz(&extra, logdir);
    onr_buf_printf(&extra, ",\"log_id\":\"%s\"", elog_id(log));
    log_line("info", "event log open", onr_buf_cstr(&extra));

    trk_dedup *dedup = trk_dedup_new_sized(DEDUP_IDS, DEDUP_WINDOW_MS);
    /* user ids -> partitions, so that one user's messages meet in one shard (docs/api.md) */
    trk_router *router = route_cap ? trk_route_new((size_t)route_cap) : NULL;
    http_opts ho = {
        .host = host,
        .port = port,
        .threads = (int)threads,
        .max_connections = (int)conns,
        .write_keys = keys,
        .nwrite_keys = nkeys,
        .log = log,
        .dedup = dedup,
        .router = router,
        .logf = log_cb,
        .timeout_ms = (int64_t)timeout * ONR_SECOND_MS,
        .rate_limit = (double)rate,
        .rate_burst = (size_t)burst,
        .max_event_bytes = (size_t)max_event,
        .max_request_bytes = (size_t)max_request,
        .geoip = geoip,
    };
    /* the router and recent messageIds as last saved, then the log past them */
    char state_path[4200];
    snprintf(state_path, sizeof(state_path), "%s/ingest.state", data);
    int nparts = elog_partitions(log);
    uint64_t *ends = onr_calloc((size_t)nparts, sizeof(uint64_t));
    int64_t now = onr_wall_ms();
    long from_state = 0;
    char why[256];
    int st =
        http_state_load(&ho, state_path, DEDUP_WINDOW_MS, now, ends, &from_state, why, sizeof(why));
    if (st < 0) {
        onr_buf msg = {0};
        onr_buf_printf(&msg, "%s is not used (%s): the whole log is read instead", state_path, why);
        log_line("warn", onr_buf_cstr(&msg), NULL);
        onr_buf_free(&msg);
        trk_dedup_free(dedup);
        trk_route_free(router);
        ho.dedup = dedup = trk_dedup_new_sized(DEDUP_IDS, DEDUP_WINDOW_MS);
        ho.router = router = route_cap ? trk_route_new((size_t)route_cap) : NULL;
        from_state = 0;
    }
    uint64_t records = 0;
    long recovered = http_dedup_recover(&ho, st == 1 ? ends : NULL, DEDUP_WINDOW_MS, now, &records,
                                        err, sizeof(err));
    if (recovered < 0) {
        log_line("error", err, NULL);
        onr_free(ends);
        trk_dedup_free(dedup);
        trk_route_free(router);
        elog_close(log);
        rc = 1;
        goto out_extra;
    }
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"message_ids\":%ld,\"from_state\":%s,\"log_records_read\":%llu",
                   recovered + from_state, st == 1 ? "true" : "false", (unsigned long long)records);
    log_line("info", "recent messageIds recovered from the event log", onr_buf_cstr(&extra));

    /* the live engine: it runs the log's tail first, while ingest already accepts */
    live_source lsrc = {.log = log,
                        .mu = PTHREAD_MUTEX_INITIALIZER,
                        .retain_age_ms = retain_age,
                        .retain_bytes = retain_bytes};
    shard_opts so = {
        .shards = (int)nshards,
        .default_shards = cores > 0 ? (int)cores : 1,
        .partitions = eo.partitions,
        .dir = data,
        .checkpoint_ms = ckpt_ms,
        .lateness_ms = late_ms ? late_ms : -1,
        .max_lag = max_lag,
        /* any message ingest could have stored, under any limits it ran with */
        .max_record = http_max_record(HTTP_MAX_REQUEST_LIMIT, HTTP_MAX_REQUEST_LIMIT),
        .logf = log_cb,
        .src = {.open = src_open,
                .next = src_next,
                .close = src_close,
                .start = src_start,
                .end = src_end,
                .synced = src_synced,
                .watermark = src_watermark,
                .retain = src_retain,
                .ctx = &lsrc,
                .id = elog_id(log),
                .padding = ELOG_READ_PADDING},
    };
    shard_set *shards = NULL;
    e = shard_start(&so, rules, &shards, err, sizeof(err));
    if (e) {
        log_line("error", err, NULL);
        onr_free(ends);
        trk_dedup_free(dedup);
        trk_route_free(router);
        elog_close(log);
        rc = 1;
        goto out_extra;
    }
    rules = NULL;
    elog_set_readable(log, notify_shard, shards);
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"shards\":%d", shard_count(shards));
    log_line("info", "engine shards started", onr_buf_cstr(&extra));
    ho.shards = shards;
    ho.admin_token = admin_token;
    ho.rules_path = rules_path;

    http_server *srv = NULL;
    e = http_start(&ho, &srv, err, sizeof(err));
    if (e) {
        log_line("error", err, NULL);
        elog_set_readable(log, NULL, NULL);
        shard_stop(shards);
        onr_free(ends);
        trk_dedup_free(dedup);
        trk_route_free(router);
        elog_close(log);
        rc = 1;
        goto out_extra;
    }
    bool v6 = strchr(host, ':') != NULL;
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"listen\":\"%s%s%s:%u\",\"url\":\"http://%s%s%s:%u\"", v6 ? "[" : "",
                   host, v6 ? "]" : "", http_port(srv), v6 ? "[" : "", host, v6 ? "]" : "",
                   http_port(srv));
    log_line("info", "listening", onr_buf_cstr(&extra));
    pthread_mutex_lock(&lsrc.mu);
    lsrc.srv = srv;
    pthread_mutex_unlock(&lsrc.mu);
    onr_buf_clear(&extra);
    onr_buf_printf(&extra,
                   "\"api\":\"http://%s%s%s:%u/api/\",\"metrics\":\"http://%s%s%s:%u/metrics\","
                   "\"rules\":",
                   v6 ? "[" : "", host, v6 ? "]" : "", http_port(srv), v6 ? "[" : "", host,
                   v6 ? "]" : "", http_port(srv));
    jw_strz(&extra, rules_path);
    if (admin_token == gen_token) {
        onr_buf_puts(&extra, ",\"admin_token\":");
        jw_strz(&extra, gen_token);
        log_line("info",
                 "management API ready; no --admin-token given: generated one for this run "
                 "(send it as Authorization: Bearer TOKEN)",
                 onr_buf_cstr(&extra));
    } else {
        log_line("info", "management API ready", onr_buf_cstr(&extra));
    }
    if (keys[0] == generated) {
        onr_buf_clear(&extra);
        onr_buf_puts(&extra, "\"write_key\":");
        jw_strz(&extra, generated);
        log_line("info",
                 "no --write-key given: generated a development write key for this run "
                 "(use it as the HTTP Basic auth user name)",
                 onr_buf_cstr(&extra));
    } else {
        onr_buf_clear(&extra);
        onr_buf_printf(&extra, "\"write_keys\":%zu", nkeys);
        log_line("info", "write keys loaded", onr_buf_cstr(&extra));
    }

    /* between signals, every --state-every: the ingest state, so that a start after a crash
     * reads only the log since then (docs/operations.md) */
    struct timespec every = {state_ms / 1000, (state_ms % 1000) * 1000000};
    int sig = 0;
    for (;;) {
        sig = sigtimedwait(&sigs, NULL, &every);
        if (sig < 0) {
            if (errno == EAGAIN && http_state_checkpoint(srv, state_path, err, sizeof(err)) < 0)
                log_line("warn", err, NULL);
            continue;
        }
        if (sig != SIGHUP)
            break;
        log_line("info", "SIGHUP: reloading the rules", NULL);
        rule_set *next = load_rules(rules_path);
        if (!next) {
            log_line("warn", "the running rules stay", NULL);
            continue;
        }
        if (shard_reload(shards, next, err, sizeof(err)) != 0) {
            rule_free(next);
            log_line("error", err, NULL);
        }
    }
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"signal\":\"%s\"", sig == SIGINT ? "SIGINT" : "SIGTERM");
    log_line("info", "stopping: no new connections, finishing requests in flight",
             onr_buf_cstr(&extra));
    pthread_mutex_lock(&lsrc.mu);
    lsrc.srv = NULL; /* http_stop frees it */
    pthread_mutex_unlock(&lsrc.mu);
    http_stop(srv, 10 * ONR_SECOND_MS);
    log_line("info", "ingest stopped; the engine runs what is in the log and checkpoints", NULL);
    for (int p = 0; p < nparts; p++)
        ends[p] = elog_end_offset(log, p);
    char log_id[ELOG_ID_CHARS + 1];
    snprintf(log_id, sizeof(log_id), "%s", elog_id(log));
    elog_set_readable(log, NULL, NULL);
    int se = shard_stop(shards);
    e = elog_close(log); /* fsyncs every partition: the state below covers durable records */
    if (!e && http_state_save(&ho, log_id, nparts, ends, state_path, err, sizeof(err)) != 0)
        log_line("warn", err, NULL); /* the next start reads the whole log instead */
    onr_free(ends);
    trk_dedup_free(dedup);
    trk_route_free(router);
    if (e) {
        snprintf(err, sizeof(err), "closing the event log failed: %s", strerror(-e));
        log_line("error", err, NULL);
        rc = 1;
    } else if (se) {
        log_line("error", "stopped, but the engine's last checkpoint failed (see above)", NULL);
        rc = 1;
    } else {
        log_line("info", "stopped", NULL);
        rc = 0;
    }
out_extra:
    onr_buf_free(&extra);
    rule_free(rules);
out:
    onr_free(env_keys);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "replay") == 0)
        return replay_main(argc - 1, argv + 1);
    if (strcmp(cmd, "simulate") == 0)
        return cmd_simulate(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "onramp: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
