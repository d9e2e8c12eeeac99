/*
 * simulate.h - a synthetic onboarding event stream for `onramp simulate`: Segment messages
 * (track, page, screen, identify, alias) from users with a mix of personas, for demos, tests
 * and benchmarks. Deterministic: the same options give byte-identical output, with no
 * wall clock and no global random state.
 */
#ifndef ONR_SIMULATE_H
#define ONR_SIMULATE_H

#include <stdio.h>

#include "base/base.h"

typedef struct sim_opts {
    uint64_t users; /* number of users */
    uint64_t seed;
    int64_t start_ms;  /* first user's sign-up time; default 2026-11-18T09:00:00Z */
    int64_t spread_ms; /* users' sign-ups are spread over this span (default 8h) */
    /* Interleave users by time (default true): output sorted by event time, with a small
     * fraction (~0.5%) of events late by up to 20 s, as real pipelines deliver. When false,
     * each user's events are written together, in that user's time order, none late. Both
     * modes write the same set of messages. */
    bool shuffle;
} sim_opts;

/* 1000 users, seed 1, sign-ups from 2026-11-18T09:00:00Z over 8 hours, shuffled. */
void sim_opts_default(sim_opts *o);

/*
 * Writes Segment-format JSONL messages (one per line) to out and flushes it. Memory stays
 * O(users active at once), not O(events). Returns 0, -EINVAL for unusable options (start
 * before 1970 or a span that runs past year 9999), or -errno on a write error.
 */
int sim_write(FILE *out, const sim_opts *o);

#endif
