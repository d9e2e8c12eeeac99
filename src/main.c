/*
 * main.c - the onramp command line: check, replay, simulate, bench. Dispatch and flag
 * parsing only; the work is done by the layers under src/.
 */
#include "base/base.h"
#include "engine/replay.h"
#include "rules/rules.h"
#include "track/simulate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: onramp <command> [options]\n"
          "\n"
          "commands:\n"
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
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
