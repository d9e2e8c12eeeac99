/*
 * engine_int.h - the engine's insides, shared by engine.c and explain.c only: users and
 * their index, and the explain recorder.
 */
#ifndef ONR_ENGINE_INT_H
#define ONR_ENGINE_INT_H

#include "engine.h"
#include "timers.h"

typedef struct user user;

/* Users live in chunks of this many fixed-size slots that never move. */
#define USERS_PER_CHUNK 4096

/* Keys up to this many bytes live inside the user; longer ones on the heap. */
#define KEY_INLINE 39
#define KEY_OUTLINE 0xff

struct user {
    tmr_node timer;             /* the user's one timer: at or before its earliest deadline */
    uint8_t klen;               /* canonical key length, or KEY_OUTLINE */
    char key[KEY_INLINE];       /* the canonical key: userId once known, else anonymousId */
    _Alignas(8) uint8_t prof[]; /* rule_layout bytes; rule_hdr first */
};

/* The index maps canonical keys to users; verified against the user's own key. */
typedef struct islot {
    uint64_t hash;
    user *u;
} islot;

/* Other keys of a user (alias previousIds, merged profiles' keys). */
typedef struct keyrec {
    user *u;
    uint16_t len;
    char s[];
} keyrec;

typedef struct aslot {
    uint64_t hash;
    keyrec *k;
} aslot;

/* Why a rule did or did not fire, kept for watched (explain) users only. */
typedef struct xrec {
    uint64_t evals, passes;
    uint64_t fires, held_out, limited;
    int64_t first_fire_ms, last_fire_ms;
    int64_t last_ms; /* last evaluation */
    bool last_result;
    onr_buf last; /* the last evaluation: cause, conditions, values */
} xrec;

#define XSEG_SLOTS 17 /* per segment: live condition + up to 16 clauses */

/* One watched user (eng_explain_watch): what the rules did for them since the watch began. */
typedef struct xwatch {
    user *u;    /* NULL until a profile has the key */
    char *key;  /* the id it was asked for */
    xrec *trig; /* by trigger */
    xrec *seg;  /* by segment * XSEG_SLOTS */
    uint64_t events;
    int64_t since;  /* the clock when recording began; 0 from the start (replay --explain) */
    uint64_t asked; /* eng.xtick when last asked for: the least recent goes first */
} xwatch;

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
    aslot *aliases;
    size_t alias_mask, alias_count;
    size_t key_bytes; /* heap bytes of long keys and aliases */

    eng_stats st;
    uint64_t *seg_sizes, *trig_fires, *trig_held;

    /* per-event scratch */
    int *matched;
    int nmatched;
    uint8_t *mark; /* by matcher: matched by the current event */
    uint64_t seg_dirty;
    bool merged; /* the current event merged two profiles */
    user **due;  /* timers due at the millisecond being fired, handled in a fixed order */
    size_t ndue, capdue;

    /* explain: at most ENG_EXPLAIN_WATCHES watched users, in no order */
    xwatch *xw;
    int nxw;
    uint64_t xtick;
    onr_buf xscratch;
    const char *xcause; /* what the current evaluation happens on */
};

/* engine.c */
const char *eng_user_key(const user *u, size_t *len);
user *eng__new_user(eng *e, trk_str key); /* zeroed profile: the caller fills it */
void eng__alias(eng *e, user *u, trk_str key);
user *eng__lookup(eng *e, trk_str key);
void eng__schedule(eng *e, user *u);

/* explain.c */
/* The watch on u, or NULL: most users are not watched, and then this is one compare. */
static inline xwatch *xp_watch_of(const eng *e, const user *u)
{
    for (int i = 0; i < e->nxw; i++)
        if (e->xw[i].u == u)
            return &e->xw[i];
    return NULL;
}
void xp_seen(eng *e, user *u, const char *key, size_t n);
void xp_merged(eng *e, user *from, user *to);
void xp_leaf(void *ctx, int node, bool result, const rval *l, const rval *r);
void xp_begin(eng *e);
void xp_end(eng *e, xrec *rec, bool result, const char *what);
void xp_free(eng *e);

#endif
