/*
 * engine_int.h - the engine's insides, shared by engine.c and explain.c only: users and
 * their index, and the explain recorder.
 */
#ifndef ONR_ENGINE_INT_H
#define ONR_ENGINE_INT_H

#include "engine.h"
#include "timers.h"

typedef struct user user;

/* A user key (userId or anonymousId) and the profile it names. */
typedef struct keyrec {
    user *u;
    uint16_t len;
    char s[];
} keyrec;

struct user {
    tmr_node timer; /* the user's one timer: its earliest deadline */
    keyrec *key;    /* the canonical key: userId once known, else anonymousId */
    _Alignas(8) uint8_t prof[]; /* rule_layout bytes; rule_hdr first */
};

typedef struct islot {
    uint64_t hash;
    keyrec *k;
} islot;

/* Why a rule did or did not fire, kept for the explain user only. */
typedef struct xrec {
    uint64_t evals, passes;
    uint64_t fires, held_out, limited;
    int64_t first_fire_ms, last_fire_ms;
    int64_t last_ms;  /* last evaluation */
    bool last_result;
    onr_buf last;     /* the last evaluation: cause, conditions, values */
} xrec;

#define XSEG_SLOTS 17 /* per segment: live condition + up to 16 clauses */

struct eng {
    const rule_set *rs;
    eng_opts o;
    eng_sink sink;
    void *sink_ctx;
    tmr_wheel *wheel;
    int64_t clock;

    /* users live in fixed-size slots in chunks that never move */
    size_t user_size;
    uint8_t **chunks;
    size_t nchunks, capchunks, chunk_used;
    islot *index;
    size_t index_mask, index_count;
    onr_arena keys;

    eng_stats st;
    uint64_t *seg_sizes, *trig_fires, *trig_held;

    /* per-event scratch */
    int *matched;
    int nmatched;
    uint8_t *mark; /* by matcher: matched by the current event */
    uint64_t seg_dirty;

    /* explain */
    user *xu;
    char *xkey;
    xrec *xtrig; /* by trigger */
    xrec *xseg;  /* by segment * XSEG_SLOTS */
    uint8_t *xseg_member_known;
    onr_buf xscratch;
    const char *xcause; /* what the current evaluation happens on */
    uint64_t xevents;
};

/* explain.c */
void xp_leaf(void *ctx, int node, bool result, const rval *l, const rval *r);
void xp_begin(eng *e);
void xp_end(eng *e, xrec *rec, bool result, const char *what);
void xp_free(eng *e);

#endif
