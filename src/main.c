/*
 * main.c - the onramp command line: serve, check, replay, simulate. Dispatch and flag
 * parsing only; the work is done by the layers under src/.
 */
#include "base/base.h"
#include "base/json.h"
#include "engine/replay.h"
#include "http/http.h"
#include "rules/rules.h"
#include "stream/elog.h"
#include "track/simulate.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

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

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Structured logs: one JSON object per line on stderr. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_line(const char *level, const char *msg, const char *extra)
{
    char when[32];
    onr_time_format(wall_ms(), when);
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
    "  --partitions N        partitions of the log (fixed)   [16]              ONRAMP_PARTITIONS\n"
    "  --threads N           HTTP thread pool size           [2]               ONRAMP_THREADS\n"
    "  --help                this text\n"
    "\n"
    "SIGTERM or SIGINT stops accepting connections, finishes requests in flight, closes the\n"
    "log and exits 0.\n";

#define MAX_WRITE_KEYS 64

static int cmd_serve(int argc, char **argv)
{
    const char *listen = getenv("ONRAMP_LISTEN");
    const char *data = getenv("ONRAMP_DATA");
    const char *fsync_s = getenv("ONRAMP_FSYNC");
    const char *parts_s = getenv("ONRAMP_PARTITIONS");
    const char *threads_s = getenv("ONRAMP_THREADS");
    const char *keys[MAX_WRITE_KEYS];
    size_t nkeys = 0;
    char *env_keys = getenv("ONRAMP_WRITE_KEY") ? onr_strdup(getenv("ONRAMP_WRITE_KEY")) : NULL;
    bool flag_keys = false;
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(serve_help, stdout);
            rc = 0;
            goto out;
        }
        const char **slot = strcmp(a, "--listen") == 0       ? &listen
                            : strcmp(a, "--data") == 0       ? &data
                            : strcmp(a, "--fsync") == 0      ? &fsync_s
                            : strcmp(a, "--partitions") == 0 ? &parts_s
                            : strcmp(a, "--threads") == 0    ? &threads_s
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
    uint64_t parts = 16, threads = 2;
    if ((parts_s && parse_u64("serve", "--partitions", parts_s, &parts)) ||
        (threads_s && parse_u64("serve", "--threads", threads_s, &threads)))
        goto out;
    if (parts < 1 || parts > 1000 || threads < 1 || threads > 256) {
        fputs("onramp serve: --partitions must be 1..1000 and --threads 1..256\n", stderr);
        goto out;
    }
    eo.partitions = (int)parts;
    eo.log = elog_log_cb;

    char generated[33];
    if (nkeys == 0) {
        uint8_t r[16];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            fprintf(stderr, "onramp serve: no randomness for a write key: %s\n", strerror(errno));
            rc = 1;
            goto out;
        }
        for (int i = 0; i < 16; i++)
            snprintf(generated + 2 * i, 3, "%02x", r[i]);
        keys[nkeys++] = generated;
    }

    /* The signals are taken by sigwait below: block them before any thread starts, so that
     * every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    onr_buf extra = {0};
    onr_buf_puts(&extra, "\"version\":\"0.1.0\",\"data\":");
    jw_strz(&extra, data);
    onr_buf_printf(&extra, ",\"fsync\":\"%s\",\"partitions\":%d,\"threads\":%d",
                   elog_fsync_name(eo.fsync), eo.partitions, (int)threads);
    log_line("info", "onramp serve starting", onr_buf_cstr(&extra));

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

    /* resent messages: the last 24 hours, at most 10 million ids (docs/api.md) */
    trk_dedup *dedup = trk_dedup_new(10 * 1000 * 1000, 24 * ONR_HOUR_MS);
    http_opts ho = {
        .host = host,
        .port = port,
        .threads = (int)threads,
        .write_keys = keys,
        .nwrite_keys = nkeys,
        .log = log,
        .dedup = dedup,
        .logf = log_cb,
    };
    long recovered = http_dedup_recover(&ho, 24 * ONR_HOUR_MS, wall_ms(), err, sizeof(err));
    if (recovered < 0) {
        log_line("error", err, NULL);
        trk_dedup_free(dedup);
        elog_close(log);
        rc = 1;
        goto out_extra;
    }
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"message_ids\":%ld", recovered);
    log_line("info", "recent messageIds recovered from the event log", onr_buf_cstr(&extra));
    http_server *srv = NULL;
    e = http_start(&ho, &srv, err, sizeof(err));
    if (e) {
        log_line("error", err, NULL);
        trk_dedup_free(dedup);
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

    int sig = 0;
    sigwait(&sigs, &sig);
    onr_buf_clear(&extra);
    onr_buf_printf(&extra, "\"signal\":\"%s\"", sig == SIGINT ? "SIGINT" : "SIGTERM");
    log_line("info", "stopping: no new connections, finishing requests in flight",
             onr_buf_cstr(&extra));
    http_stop(srv, 10 * ONR_SECOND_MS);
    trk_dedup_free(dedup);
    e = elog_close(log);
    if (e) {
        snprintf(err, sizeof(err), "closing the event log failed: %s", strerror(-e));
        log_line("error", err, NULL);
        rc = 1;
    } else {
        log_line("info", "stopped", NULL);
        rc = 0;
    }
out_extra:
    onr_buf_free(&extra);
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
