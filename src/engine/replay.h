/*
 * replay.h - `onramp replay`: Segment JSONL through the engine in event-time order, with a
 * bounded reorder buffer, writing segment changes and fires as JSON lines. Deterministic:
 * the same input and rules give byte-identical output.
 */
#ifndef ONR_REPLAY_H
#define ONR_REPLAY_H

#include "engine.h"

#include <stdio.h>

typedef struct replay_opts {
    const char *rules_path;
    const char *input_path; /* NULL or "-" for stdin */
    int64_t lateness_ms;    /* reorder window, default 1m */
    size_t max_buffer;      /* events held for reordering at most, default 1,000,000 */
    bool drain;             /* fire pending timers at the end (default true) */
    bool strict;            /* a bad line is fatal */
    bool stats;             /* events/s, users, bytes per user to stderr */
    bool summary;           /* segment sizes and fire counts to stderr */
    int progress;           /* -1 auto (a terminal), 0 off, 1 on */
    const char *explain_user;
    int64_t session_timeout_ms;
} replay_opts;

void replay_opts_default(replay_opts *o);

/* Runs a replay, writing results to out and diagnostics to err. Returns a process exit
 * code: 0 ok, 1 bad rules, bad input under --strict, or an I/O error. */
int replay_run(const replay_opts *o, FILE *out, FILE *err);

/* `onramp replay ARGS...`: parses flags, then replay_run. */
int replay_main(int argc, char **argv);

/* Parses "90s", "2m", "1h30m", "0" into ms. Returns 0 or ONR_E_PARSE. */
int replay_parse_duration(const char *s, int64_t *out_ms);

#endif
