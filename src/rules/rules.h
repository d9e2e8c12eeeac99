/*
 * rules.h - the rule language: a .rules file compiled to a rule_set (labels, segments,
 * triggers, destinations, bytecode) and the VM that evaluates its expressions against one
 * user's profile. The compiler also plans the profile layout: which counters, timestamps
 * and windows a user needs, so that only what the loaded rules read is tracked.
 *
 * A rule_set is immutable once compiled and may be read by any number of threads.
 */
#ifndef ONR_RULES_H
#define ONR_RULES_H

#include "base/base.h"
#include "track/track.h"

typedef struct rule_set rule_set;

/* ---- limits (documented in docs/rules.md) */

#define RULE_MAX_SOURCE_BYTES (1024 * 1024)
#define RULE_MAX_SEGMENTS 64
#define RULE_MAX_TRIGGERS 1024
#define RULE_MAX_MATCHERS 1024
#define RULE_MAX_STACK 64
#define RULE_PATH_LEN 8            /* features remembered for path ends / contains */
#define RULE_MAX_WINDOW_CAP 256    /* events a windowed count can count exactly */
#define RULE_DEFAULT_WINDOW_CAP 64 /* ... when it is not compared with a constant */
#define RULE_MIN_ONCE_PER_MS 1000  /* shortest `limit once per` window */
#define RULE_MAX_SEQ_STEPS 8
#define RULE_MAX_ACTIONS 8
#define RULE_MAX_NAME 128

/* ---- values */

typedef enum rv_type {
    RT_NULL = 0,
    RT_BOOL,
    RT_NUM,
    RT_STR,
    RT_DUR,  /* a duration, ms */
    RT_TIME, /* a point in time, ms since the epoch */
    RT_LIST, /* a literal list (constant index) */
    RT_PATH, /* the feature path (only inside path ends/contains) */
    RT_ANY,  /* checker only: a property or trait, typed at run time */
} rv_type;

const char *rv_type_name(rv_type t);

typedef struct rval {
    uint8_t t; /* rv_type */
    bool b;
    float rate; /* RT_DUR/RT_TIME: d(value)/d(now), for deadline planning; else 0 */
    union {
        double n;
        int64_t ms;
        struct {
            const char *p;
            uint32_t n;
        } s;
        uint32_t list;
    } u;
} rval;

/* ---- the compiled program */

typedef enum rule_op {
#define OP(name, doc) OP_##name,
#include "opcodes.h"
#undef OP
    OP__COUNT
} rule_op;

typedef struct rule_ins {
    uint8_t op;
    int32_t a, b;
} rule_ins;

/* Source of a condition, for explain: "time_to_first_action < 120s" at line:col. */
typedef struct rule_node_info {
    int line, col;
    const char *text;  /* the whole condition */
    const char *left;  /* its left operand's text (NULL when a literal) */
    const char *right; /* its right operand's text (NULL when a literal) */
} rule_node_info;

/* Builtin matchers every rule set has, at these indexes. */
enum {
    RM_SIGNED_UP = 0,
    RM_FEATURE_USED,
    RM_STEP_COMPLETED,
    RM_ONBOARDING_COMPLETED,
    RM_SESSION_ENDED,
    RM_BUILTIN_COUNT
};

/* A set of events one reference stands for: a name, a label, a message kind. */
typedef struct rule_matcher {
    const char *display; /* "\"Feature Used\"", "ERROR_500", "page" */
    uint32_t kinds;      /* bit per trk_kind matched regardless of name */
    const char **names;  /* track event names matched */
    int nnames;
    int where; /* chunk (event filter) or -1 */
    /* profile fields kept for it (byte offsets, -1 when unneeded) */
    int off_count, off_first, off_last;
    /* what to re-evaluate when it matches */
    int *triggers, ntriggers;       /* ON_EVENT triggers */
    int *absences, nabsences;       /* ON_ABSENCE triggers it starts */
    int *unlesses, nunlesses;       /* ON_ABSENCE triggers it satisfies */
    int *windows, nwindows;         /* windowed counts it feeds */
    int *seqs, nseqs;               /* sequences it is a step of */
    uint64_t segments_dep;          /* segments whose unanchored clauses read it */
    int *seg_clauses, nseg_clauses; /* (segment << 8 | clause) anchored on it */
    uint64_t ident;                 /* what it matches: see rule_layout_map */
} rule_matcher;

typedef struct rule_window {
    int matcher;
    int64_t within_ms;
    int cap; /* timestamps kept */
    int off; /* uint32 len, 4 unused bytes, then int64 ts[cap] */
    uint64_t ident;
} rule_window;

typedef struct rule_seq {
    int steps[RULE_MAX_SEQ_STEPS]; /* matcher per step */
    int nsteps;
    int64_t within_ms;
    int off; /* int64 start[nsteps] */
    uint64_t ident;
} rule_seq;

typedef enum rule_on_kind {
    ON_EVENT = 0,
    ON_IDLE,
    ON_ABSENCE,
    ON_ENTER,
    ON_EXIT,
    ON_SESSION_START,
    ON_SESSION_END,
} rule_on_kind;

typedef enum rule_limit_kind {
    LIMIT_NONE = 0,
    LIMIT_ONCE,     /* once per user */
    LIMIT_ONCE_PER, /* once per calendar window of limit_ms (aligned to the epoch, UTC) */
    LIMIT_COOLDOWN, /* at least limit_ms between fires */
} rule_limit_kind;

typedef enum rule_action_kind { ACT_WEBHOOK = 0, ACT_CUE } rule_action_kind;

typedef struct rule_action {
    rule_action_kind kind;
    const char *name; /* destination name (webhook) or cue name */
} rule_action;

typedef struct rule_trigger {
    const char *name;
    int line;
    rule_on_kind on;
    int matcher;        /* ON_EVENT, ON_ABSENCE */
    int unless_matcher; /* ON_ABSENCE */
    int segment;        /* ON_ENTER, ON_EXIT */
    int64_t dur_ms;     /* ON_IDLE, ON_ABSENCE */
    int where, when;    /* chunks or -1 */
    rule_limit_kind limit;
    int64_t limit_ms;
    int holdout_bp; /* basis points: 10% = 1000 */
    rule_action actions[RULE_MAX_ACTIONS];
    int nactions;
    /* a `where props.P == literal` filter, indexed: events whose P hashes differently
     * skip the trigger without running its filter */
    int key_prop;          /* schema prop id, or -1 */
    uint64_t key_hash;     /* rule_value_hash of the literal */
    uint64_t name_hash;    /* of the trigger's name: holdout groups and fire ids */
    const char *describe;  /* the `on` clause, for explain: "on \"Feature Used\"" */
    const char *when_text; /* the `when` condition's source, or NULL */
    /* profile fields (byte offsets, -1 when unneeded) */
    int off_last_fire;    /* cooldown: int64 time of the last fire. once per: the offset of
                           * its window group (uint32 window number + 1, then one bit per
                           * trigger of that length: fired in that window) */
    int bit_once;         /* once per: its bit in the group */
    int once_group_bytes; /* once per: bytes of the group's bits */
    int bit_fired;        /* bit index: once per user has fired */
    int bit_idle;         /* bit index: on idle has fired in this quiet spell */
    int off_pending;      /* int64: absence deadline */
    uint64_t ident;       /* its on, where, unless, when and limit (not its name, actions or
                           * holdout): equal idents keep the same per-user state */
} rule_trigger;

typedef struct rule_clause {
    bool enter;
    int on;               /* -1: unanchored; else RM matcher, or -2 session start, -3 session end */
    int when;             /* chunk or -1 */
    const char *describe; /* "enter on session end when session.duration < 5m" */
} rule_clause;

#define RULE_ON_SESSION_START (-2)
#define RULE_ON_SESSION_END (-3)

typedef struct rule_segment {
    const char *name;
    int line;
    int live; /* chunk of `when E`, or -1 */
    const char *live_text;
    rule_clause clauses[16];
    int nclauses;
    bool every_event;       /* unanchored clauses read per-event state (idle, session, traits...) */
    bool timed;             /* may change with time alone: re-checked at deadlines */
    uint64_t deps_segments; /* segments it reads with in_segment() */
    int *on_enter, non_enter; /* triggers on enter */
    int *on_exit, non_exit;   /* triggers on exit */
    uint64_t ident;           /* its condition or clauses (not its name) */
} rule_segment;

typedef struct rule_setting {
    const char *key;
    const char *str; /* string and identifier values */
    double num;
    int64_t ms;
    int type; /* RT_STR, RT_NUM, RT_DUR */
} rule_setting;

typedef struct rule_dest {
    const char *name;
    int line;
    rule_setting *settings;
    int nsettings;
} rule_dest;

typedef struct rule_const_list {
    rval *items;
    int n;
    uint32_t *hashes; /* for path lists: feature hashes */
} rule_const_list;

/* Profile header: fields every user has, at the start of the profile bytes. */
typedef struct rule_hdr {
    int64_t start_ms;      /* `Signed Up`, else the first event */
    int64_t last_ms;       /* last event */
    int64_t sess_start_ms; /* current (or last) session's first event; 0 when none */
    int64_t recheck_ms;    /* next time a timed segment must be re-evaluated; 0 none */
    uint32_t sess_events;
    uint32_t sess_number;
    uint32_t nfires; /* fires so far: part of each fire's stable id */
    float step;      /* max properties.step of Onboarding Step Completed */
    uint32_t seed;   /* fixed at creation: draws the user's holdout group */
    uint8_t flags;   /* RH_* */
    uint8_t pad[3];
} rule_hdr;

/* RH_REVAL: the rules were reloaded with new or changed segments since this user's last
 * event or timer, which evaluates every segment (and clears it). */
enum { RH_COMPLETED = 1, RH_SIGNED_UP = 2, RH_IN_SESSION = 4, RH_MERGED = 8, RH_REVAL = 16 };

typedef struct rule_layout {
    size_t size;      /* bytes per profile, header included, 8-aligned */
    int off_segments; /* uint64 membership bits */
    int off_bits;     /* trigger bits, nbits */
    int nbits;
    int off_path;   /* uint32 len, then uint32 hash[path_len]; -1 when unused */
    int path_len;   /* features kept: the longest list the rules compare with */
    int off_traits; /* rule_trait_slot[ntraits]; -1 when none */
    int ntraits;
} rule_layout;

struct rule_set {
    onr_arena arena;
    char *path;
    char *source;

    rule_ins *code;
    int ncode, capcode;
    int *chunks; /* chunk -> first instruction */
    int nchunks, capchunks;
    rule_node_info *nodes;
    int nnodes, capnodes;
    rval *consts;
    int nconsts, capconsts;
    rule_const_list *lists;
    int nlists, caplists;

    rule_matcher *matchers;
    int nmatchers;
    const char **labels; /* label names, by matcher index (NULL: not a label) */
    rule_window *windows;
    int nwindows;
    rule_seq *seqs;
    int nseqs;
    rule_segment *segments;
    int nsegments;
    rule_trigger *triggers;
    int ntriggers;
    rule_dest *dests;
    int ndests;

    int *idle_triggers, nidle;
    int *absence_triggers, nabsence; /* triggers with a pending deadline */
    uint64_t every_event_segments;   /* segments re-evaluated on every event */
    uint64_t timed_segments;         /* segments that can change with time alone */
    uint64_t session_start_segments; /* segments with a clause on session start */
    uint64_t session_end_segments;   /* segments with a clause on session end */
    int *session_start_triggers, nsession_start;
    int *session_end_triggers, nsession_end;
    int *kind_matchers[TRK_KIND_COUNT]; /* matchers that match a kind regardless of name */
    int nkind_matchers[TRK_KIND_COUNT];

    /* event name -> matchers naming it (open addressing, power-of-two size) */
    struct rule_name_slot {
        uint64_t hash;
        const char *name;
        uint32_t len;
        int *matchers, nmatchers;
    } * name_table;
    uint32_t name_mask;

    trk_schema schema;           /* properties and traits the rules read */
    int prop_feature, prop_step; /* schema ids of the builtins' properties */
    rule_layout layout;
};

/*
 * Compiles src (path names it in messages). On success returns 0 and *out (caller owns it;
 * free with rule_free). On failure returns the number of errors (> 0), each written to
 * errors as "path:line:col: error: ..." with the source line and a caret.
 */
int rule_compile(const char *path, const char *src, size_t len, rule_set **out, onr_buf *errors);
/* Reads and compiles a file; I/O errors are reported like compile errors. */
int rule_compile_file(const char *path, rule_set **out, onr_buf *errors);
void rule_free(rule_set *rs);

/* A hash of everything the profile layout depends on (fields, their offsets, segment
 * bits, limits): two rule sets with the same fingerprint read the same profile bytes the
 * same way, so a checkpoint of one loads into the other. */
uint64_t rule_layout_fingerprint(const rule_set *rs);

/*
 * Carrying profiles from one rule set to another (a hot reload). Every profile field has an
 * identity: a stable hash of what it means, computed by the compiler from the definition
 * behind it, independent of offsets, declaration order and names where names do not matter.
 * Fields are carried by identity:
 *   - the header (rule_hdr): always;
 *   - a matcher's count / first / last: by the matcher's ident (its event names, kinds and
 *     filter; a label's name does not matter), so `count("X")` keeps its value;
 *   - a windowed count: by matcher and span (the newest timestamps, up to the new capacity);
 *   - a sequence: by its steps and span;
 *   - a trait slot: by the trait's name; the feature path: its latest features, up to the
 *     new length;
 *   - a segment's membership bit: by the segment's name;
 *   - a trigger's state (once per user / once per window / cooldown, idle bit, absence
 *     deadline): by the trigger's name, when its ident is unchanged.
 * Fields with no counterpart start zeroed (empty).
 */
typedef enum rule_move_kind {
    RMOVE_BYTES = 0, /* len bytes */
    RMOVE_BIT,       /* one bit: from/to are the offsets of bit arrays */
    RMOVE_WINDOW,    /* a windowed count: its newest timestamps, at most cap */
    RMOVE_PATH,      /* the feature path: its latest features, at most cap */
} rule_move_kind;

typedef struct rule_move {
    rule_move_kind kind;
    int from, to;         /* byte offsets in the old and the new profile */
    int len;              /* RMOVE_BYTES */
    int from_bit, to_bit; /* RMOVE_BIT */
    int cap;              /* RMOVE_WINDOW, RMOVE_PATH: capacity in the new profile */
} rule_move;

typedef struct rule_map {
    size_t from_size, to_size; /* profile bytes, old and new */
    rule_move *moves;
    int nmoves;
    /* by new trigger: the old trigger whose state it keeps (the same name and ident), or -1
     * when it is new or changed (it starts fresh) */
    int *trigger_from;
    /* by new segment: the old segment of that name, or -1 */
    int *segment_from;
    /* new segments, and kept ones whose ident changed: to be evaluated again */
    uint64_t segments_fresh;
    /* every field of both stays at its offset: a profile carries over byte for byte */
    bool identity;
} rule_map;

/* Plans how to carry profiles of rule set `from` to rule set `to`. Caller owns *out; free it
 * with rule_map_free. */
void rule_layout_map(const rule_set *from, const rule_set *to, rule_map *out);
/* Writes to (m->to_size bytes) from an old profile (m->from_size bytes): carried fields
 * copied, every other byte zero. from and to must not overlap. */
void rule_map_apply(const rule_map *m, const uint8_t *from, uint8_t *to);
void rule_map_free(rule_map *m);

/* Writes a human-readable listing of rs: tables, layout and bytecode. */
void rule_dump(const rule_set *rs, onr_buf *out);

/* Looks up the matchers that name an event; returns their count and *ids. */
int rule_lookup_name(const rule_set *rs, const char *name, size_t len, const int **ids);

/* ---- the VM */

/* Read-only view of what an expression may look at. */
typedef struct rule_env {
    const rule_set *rs;
    const uint8_t *prof; /* profile bytes (rule_layout), NULL for event-only chunks */
    const trk_event *ev; /* the current event, NULL on timers */
    int64_t now_ms;
    /* explain: called for each condition evaluated (NULL: off) */
    void (*leaf)(void *ctx, int node, bool result, const rval *l, const rval *r);
    void *leaf_ctx;
} rule_env;

/*
 * Evaluates chunk to a boolean. *next_ms receives the earliest future time at which the
 * result could change with time alone (INT64_MAX when never), so the caller can schedule a
 * re-check. Null, missing properties and type mismatches make comparisons false.
 */
bool rule_eval_bool(const rule_env *env, int chunk, int64_t *next_ms);

/* Formats a value for people: 3m12s, "settings", 2026-11-18T11:45:02.000Z, null. */
void rval_format(const rule_set *rs, const rval *v, onr_buf *out);

/* Hash of a property value for indexed filters: strings and numbers (1 and 1.0 alike);
 * 0 for anything else, which no key has. */
uint64_t rule_value_hash(const trk_value *v);

/* Stable 32-bit hash of a feature name, as stored in the path. */
uint32_t rule_feature_hash(const char *s, size_t n);

/* ---- profile field access (offsets come from the layout; fields are aligned) */

static inline int64_t rp_i64(const uint8_t *prof, int off)
{
    return *(const int64_t *)(const void *)(prof + off);
}
static inline void rp_set_i64(uint8_t *prof, int off, int64_t v)
{
    *(int64_t *)(void *)(prof + off) = v;
}
static inline uint32_t rp_u32(const uint8_t *prof, int off)
{
    return *(const uint32_t *)(const void *)(prof + off);
}
static inline void rp_set_u32(uint8_t *prof, int off, uint32_t v)
{
    *(uint32_t *)(void *)(prof + off) = v;
}
static inline bool rp_bit(const uint8_t *prof, int off, int bit)
{
    return (prof[off + bit / 8] >> (bit % 8)) & 1;
}
static inline void rp_set_bit(uint8_t *prof, int off, int bit, bool v)
{
    if (v)
        prof[off + bit / 8] |= (uint8_t)(1u << (bit % 8));
    else
        prof[off + bit / 8] &= (uint8_t) ~(1u << (bit % 8));
}
static inline const rule_hdr *rp_hdr(const uint8_t *prof)
{
    return (const rule_hdr *)(const void *)prof;
}

/* A trait slot: the last value identify set, strings kept up to RULE_TRAIT_STR bytes. */
#define RULE_TRAIT_STR 30
typedef struct rule_trait_slot {
    uint8_t type; /* trk_vtype */
    uint8_t len;
    char s[RULE_TRAIT_STR];
    double num;
} rule_trait_slot;

#endif
