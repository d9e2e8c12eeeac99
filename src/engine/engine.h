/*
 * engine.h - the behavioral engine: one instance owns a set of users (a shard) and runs
 * every event of theirs through the loaded rules: profile update, sessions, segments,
 * triggers, and the timers that make absence visible ("idle 7m", "unless X within 10m").
 *
 * Single-threaded by design: a user is touched by exactly one engine. Time is event time;
 * the engine's clock only moves forward, by events (eng_process) or by the caller
 * (eng_advance, eng_drain). It never reads the wall clock.
 */
#ifndef ONR_ENGINE_H
#define ONR_ENGINE_H

#include "base/base.h"
#include "rules/rules.h"
#include "track/track.h"

#include <stdio.h>

typedef struct eng eng;

typedef enum eng_out_kind {
    EO_SEGMENT_ENTERED = 0,
    EO_SEGMENT_EXITED,
    EO_TRIGGER_FIRED
} eng_out_kind;

/* One output: a segment change or a fire. Strings are valid during the sink call only. */
typedef struct eng_out {
    eng_out_kind kind;
    const char *user;
    size_t user_len;
    int64_t at_ms;
    int segment; /* EO_SEGMENT_* */
    int trigger; /* EO_TRIGGER_FIRED */
    uint64_t id; /* EO_TRIGGER_FIRED: stable fire id */
    bool held_out;
} eng_out;

typedef void (*eng_sink)(void *ctx, const eng_out *o);

typedef struct eng_opts {
    int64_t session_timeout_ms; /* default 30m */
    const char *explain_user;   /* watched from the start (eng_explain_watch) */
} eng_opts;

void eng_opts_default(eng_opts *o);

/* The engine reads rs for its whole life (or until eng_reload); rs must outlive it. */
eng *eng_new(const rule_set *rs, const eng_opts *o, eng_sink sink, void *ctx);
void eng_free(eng *e);

/*
 * Moves the engine to new rules without losing its users (docs/rules.md, "Reloading
 * rules"). Every user is kept, and profile fields are carried by what they mean, not by
 * offset: the header always; counts, first/last times, windowed counts and sequences with
 * the same definition; traits by name; the feature path; segment memberships by segment
 * name; a trigger's state (limits, idle, pending absence) by trigger name while its
 * definition is unchanged. Anything else starts empty. Nothing is output at the reload: new
 * and changed segments are evaluated at each user's next event or timer. Per-segment sizes
 * and the counters of unchanged triggers carry over by name; timers are set again.
 *
 * Ownership: the engine reads new_rs from then on and no longer reads the old rule set, which
 * the caller keeps alive until eng_reload returns and may then free. Call it between events,
 * never from inside the sink. Afterwards, events must be decoded with new_rs->schema, and the
 * segment and trigger indexes of outputs, eng_segment_sizes and eng_trigger_counts are
 * new_rs's. Returns 0, or ONR_E_INVALID with a reason in err (the engine is unchanged).
 */
int eng_reload(eng *e, const rule_set *new_rs, char *err, size_t errlen);

/* Processes one event. First moves the clock to the event's time (firing timers due before
 * it). An event older than the clock is processed at once, at the clock's time. */
void eng_process(eng *e, const trk_event *ev);
/*
 * Optional: hints that ev will be processed soon, so that the memory it needs is fetched
 * while earlier events are processed. Stage 0 (a dozen events ahead) fetches the index
 * slots of its keys; stage 1 (a few events ahead) fetches the user's profile. Purely a
 * speed hint: it changes nothing.
 */
void eng_prefetch(const eng *e, trk_str user_id, trk_str anon_id, int stage);

/* Moves the clock to now_ms, firing every timer due by then. */
void eng_advance(eng *e, int64_t now_ms);
/* Fires every pending timer, in deadline order, moving the clock as it goes. */
void eng_drain(eng *e);
int64_t eng_clock(const eng *e);

typedef struct eng_stats {
    uint64_t events;
    uint64_t users;  /* profiles, merged ones excluded */
    uint64_t merges; /* identity merges */
    uint64_t fires, held_out, segment_changes;
    uint64_t timers_fired;
    size_t bytes;         /* memory for users: profiles, index, keys */
    size_t profile_bytes; /* bytes of one profile (the rules' layout + engine header) */
} eng_stats;

void eng_get_stats(const eng *e, eng_stats *s);
/* Members per segment (array of rs->nsegments) and fires / held-out per trigger. */
void eng_segment_sizes(const eng *e, uint64_t *sizes);
void eng_trigger_counts(const eng *e, uint64_t *fires, uint64_t *held_out);

/*
 * Checkpoints: every profile, key and alias, the clock and the counters, in a checksummed
 * binary form (native byte order: for this machine's restarts, not for archives). Pending
 * timers are not stored: they follow from the profiles and are set again on load.
 * eng_save returns 0 or -errno. eng_load fills a new engine (no events processed yet) and
 * returns 0, or ONR_E_INVALID with a reason in err: not a checkpoint, damaged, or written
 * under rules whose profile layout differs (rule_layout_fingerprint).
 */
int eng_save(const eng *e, FILE *out);
int eng_load(eng *e, FILE *in, char *err, size_t errlen);

/*
 * One user's state as JSON (inspect.c): canonical key, first/last seen, sessions, fire count,
 * the segments the user is in and the traits the rules keep. key may be any of the user's
 * ids. Returns 0, or ONR_E_NOTFOUND when no profile has that key.
 */
int eng_user_json(eng *e, const char *key, size_t klen, onr_buf *out);
/* The same without the closing brace, for a caller that adds members of its own. */
int eng_user_json_open(eng *e, const char *key, size_t klen, onr_buf *out);
/* The canonical key (userId once known) of the user with any id key, or NULL. Valid until the
 * next event. */
const char *eng_user_canonical(eng *e, const char *key, size_t klen, size_t *n);
/*
 * Watches the user with id key from now on: every evaluation of their segments and triggers
 * is recorded for eng_explain (the record starts empty; a key not seen yet is watched from
 * its first event). A no-op, apart from marking it asked for, when the user is watched
 * already, under this or another of their ids. At most ENG_EXPLAIN_WATCHES users are watched;
 * a new one replaces the one asked for least recently.
 */
#define ENG_EXPLAIN_WATCHES 16
void eng_explain_watch(eng *e, const char *key);

/* Writes, for the watched user key, each segment and trigger with why it did or did not
 * fire: the last evaluation's conditions with their values. Returns 0, or ONR_E_NOTFOUND
 * when key is not watched (any more). */
int eng_explain(eng *e, const char *key, onr_buf *out);

#endif
