/*
 * engine.c - one shard of the behavioral engine. For each event: find (or create, or
 * merge) the user's profile, update what the rules need, run the triggers indexed by the
 * event's matchers, re-evaluate the segments the event can change, and set the user's one
 * timer to its earliest deadline (session end, idle, absence, a timed segment). Timers
 * firing run the same machinery with no event. Nothing here allocates per event.
 */
#include "engine_int.h"

#include "base/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_MIN 1024

void eng_opts_default(eng_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->session_timeout_ms = 30 * ONR_MINUTE_MS;
}

static inline rule_hdr *hdr(user *u)
{
    return (rule_hdr *)(void *)u->prof;
}

/* ---- users and their keys */

static uint64_t key_hash(const char *s, size_t n)
{
    return onr_hash64(s, n, 0x75736572);
}

const char *eng_user_key(const user *u, size_t *len)
{
    if (u->klen != KEY_OUTLINE) {
        *len = u->klen;
        return u->key;
    }
    const char *p;
    uint32_t n;
    memcpy(&p, u->key, sizeof(p));
    memcpy(&n, u->key + sizeof(p), sizeof(n));
    *len = n;
    return p;
}

static void set_user_key(eng *e, user *u, trk_str key)
{
    if (u->klen == KEY_OUTLINE) {
        size_t n;
        char *old = (char *)eng_user_key(u, &n);
        e->key_bytes -= n;
        onr_free(old);
    }
    if (key.n <= KEY_INLINE) {
        u->klen = (uint8_t)key.n;
        memcpy(u->key, key.p, key.n);
        return;
    }
    char *p = onr_malloc(key.n);
    memcpy(p, key.p, key.n);
    e->key_bytes += key.n;
    u->klen = KEY_OUTLINE;
    memcpy(u->key, &p, sizeof(p));
    memcpy(u->key + sizeof(p), &key.n, sizeof(key.n));
}

static bool key_is(const user *u, const char *s, size_t n)
{
    size_t len;
    const char *k = eng_user_key(u, &len);
    return len == n && memcmp(k, s, n) == 0;
}

static user *forwarded(user *u)
{
    while (hdr(u)->flags & RH_MERGED) {
        user *to;
        memcpy(&to, u->prof + sizeof(rule_hdr), sizeof(to));
        u = to;
    }
    return u;
}

/* Open addressing with linear probing, at most 70% full; deletion shifts back. */
#define GROW(e, tab, mask, count, type, used)                                                      \
    do {                                                                                           \
        if (((count) + 1) * 10 > ((mask) + 1) * 7) {                                               \
            size_t oldcap_ = (mask) + 1, cap_ = oldcap_ * 2;                                       \
            type *old_ = (tab);                                                                    \
            (tab) = onr_calloc(cap_, sizeof(type));                                                \
            (mask) = cap_ - 1;                                                                     \
            for (size_t i_ = 0; i_ < oldcap_; i_++) {                                              \
                if (!old_[i_].used)                                                                \
                    continue;                                                                      \
                size_t j_ = old_[i_].hash & (mask);                                                \
                while ((tab)[j_].used)                                                             \
                    j_ = (j_ + 1) & (mask);                                                        \
                (tab)[j_] = old_[i_];                                                              \
            }                                                                                      \
            onr_free(old_);                                                                        \
        }                                                                                          \
    } while (0)

static void index_put(eng *e, user *u, trk_str key)
{
    GROW(e, e->index, e->index_mask, e->index_count, islot, u);
    uint64_t h = key_hash(key.p, key.n);
    size_t i = h & e->index_mask;
    while (e->index[i].u)
        i = (i + 1) & e->index_mask;
    e->index[i].hash = h;
    e->index[i].u = u;
    e->index_count++;
    xp_seen(e, u, key.p, key.n);
}

static size_t index_slot(const eng *e, const char *s, size_t n, uint64_t h)
{
    size_t i = h & e->index_mask;
    for (;;) {
        const islot *sl = &e->index[i];
        if (!sl->u)
            return SIZE_MAX;
        if (sl->hash == h && key_is(sl->u, s, n))
            return i;
        i = (i + 1) & e->index_mask;
    }
}

static void index_del(eng *e, trk_str key)
{
    size_t i = index_slot(e, key.p, key.n, key_hash(key.p, key.n));
    if (i == SIZE_MAX)
        return;
    size_t mask = e->index_mask;
    for (size_t j = (i + 1) & mask; e->index[j].u; j = (j + 1) & mask) {
        size_t home = e->index[j].hash & mask;
        /* move j back into the hole unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            e->index[i] = e->index[j];
            i = j;
        }
    }
    e->index[i].u = NULL;
    e->index[i].hash = 0;
    e->index_count--;
}

static void alias_put(eng *e, user *u, trk_str key)
{
    if (!e->aliases) {
        e->aliases = onr_calloc(64, sizeof(aslot));
        e->alias_mask = 63;
    }
    GROW(e, e->aliases, e->alias_mask, e->alias_count, aslot, k);
    uint64_t h = key_hash(key.p, key.n);
    size_t i = h & e->alias_mask;
    while (e->aliases[i].k) {
        keyrec *k = e->aliases[i].k;
        if (e->aliases[i].hash == h && k->len == key.n && memcmp(k->s, key.p, key.n) == 0) {
            k->u = u; /* the key moves to its new owner */
            return;
        }
        i = (i + 1) & e->alias_mask;
    }
    keyrec *k = onr_malloc(sizeof(keyrec) + key.n);
    k->u = u;
    k->len = (uint16_t)key.n;
    memcpy(k->s, key.p, key.n);
    e->key_bytes += sizeof(keyrec) + key.n;
    e->aliases[i].hash = h;
    e->aliases[i].k = k;
    e->alias_count++;
    xp_seen(e, u, key.p, key.n);
}

static user *lookup(eng *e, trk_str key)
{
    if (!key.n)
        return NULL;
    uint64_t h = key_hash(key.p, key.n);
    size_t i = index_slot(e, key.p, key.n, h);
    if (i != SIZE_MAX)
        return e->index[i].u;
    if (!e->alias_count)
        return NULL;
    for (size_t j = h & e->alias_mask; e->aliases[j].k; j = (j + 1) & e->alias_mask) {
        keyrec *k = e->aliases[j].k;
        if (e->aliases[j].hash == h && k->len == key.n && memcmp(k->s, key.p, key.n) == 0) {
            k->u = forwarded(k->u);
            return k->u;
        }
    }
    return NULL;
}

/* Makes key the user's canonical key; the old one is dropped from the index. */
static void rekey(eng *e, user *u, trk_str key)
{
    size_t n;
    const char *old = eng_user_key(u, &n);
    index_del(e, (trk_str){old, (uint32_t)n});
    set_user_key(e, u, key);
    index_put(e, u, key);
}

static user *new_user(eng *e, trk_str key, int64_t ts)
{
    if (e->nchunks == 0 || e->chunk_used == USERS_PER_CHUNK) {
        if (e->nchunks == e->capchunks) {
            e->capchunks = e->capchunks ? e->capchunks * 2 : 16;
            e->chunks = onr_realloc(e->chunks, sizeof(*e->chunks) * e->capchunks);
        }
        e->chunks[e->nchunks++] = onr_malloc(e->user_size * USERS_PER_CHUNK);
        e->chunk_used = 0;
    }
    user *u = (user *)(void *)(e->chunks[e->nchunks - 1] + e->user_size * e->chunk_used++);
    memset(u, 0, e->user_size);
    hdr(u)->start_ms = ts;
    /* the holdout group is drawn once, from the first key, and kept through identify */
    hdr(u)->seed = (uint32_t)key_hash(key.p, key.n);
    set_user_key(e, u, key);
    index_put(e, u, key);
    e->st.users++;
    return u;
}

/* ---- outputs */

static void emit_segment(eng *e, user *u, int seg, bool entered, int64_t at)
{
    eng_out o = {.kind = entered ? EO_SEGMENT_ENTERED : EO_SEGMENT_EXITED,
                 .at_ms = at,
                 .segment = seg,
                 .trigger = -1};
    o.user = eng_user_key(u, &o.user_len);
    e->st.segment_changes++;
    if (entered)
        e->seg_sizes[seg]++;
    else
        e->seg_sizes[seg]--;
    e->sink(e->sink_ctx, &o);
}

/* ---- evaluation */

static bool eval(eng *e, user *u, int chunk, const trk_event *ev, int64_t *next)
{
    rule_env env = {.rs = e->rs, .prof = u->prof, .ev = ev, .now_ms = e->clock};
    if (xp_watch_of(e, u)) {
        env.leaf = xp_leaf;
        env.leaf_ctx = e;
    }
    int64_t n;
    bool r = rule_eval_bool(&env, chunk, &n);
    if (next && n < *next)
        *next = n;
    return r;
}

static void fire_trigger(eng *e, user *u, int t, const trk_event *ev, int64_t at);

static void run_segment_triggers(eng *e, user *u, const rule_segment *s, bool entered, int64_t at)
{
    const int *ts = entered ? s->on_enter : s->on_exit;
    int n = entered ? s->non_enter : s->non_exit;
    const char *saved = e->xcause;
    char cause[RULE_MAX_NAME + 16];
    if (xp_watch_of(e, u)) {
        snprintf(cause, sizeof(cause), "%s %s", entered ? "enter" : "exit", s->name);
        e->xcause = cause;
    }
    for (int i = 0; i < n; i++)
        fire_trigger(e, u, ts[i], NULL, at);
    e->xcause = saved;
}

static void set_member(eng *e, user *u, int seg, bool in, int64_t at, bool triggers)
{
    const rule_set *rs = e->rs;
    rp_set_bit(u->prof, rs->layout.off_segments, seg, in);
    emit_segment(e, u, seg, in, at);
    /* segments that read this one with in_segment() see the change */
    for (int j = seg + 1; j < rs->nsegments; j++)
        if (rs->segments[j].deps_segments & (UINT64_C(1) << seg))
            e->seg_dirty |= UINT64_C(1) << j;
    if (triggers)
        run_segment_triggers(e, u, &rs->segments[seg], in, at);
}

/* Tests segment si's enter (or exit) clauses that apply now; true at the first that holds. */
static bool any_clause(eng *e, user *u, int si, bool enter, const trk_event *ev, int anchor,
                       int64_t *next)
{
    const rule_segment *s = &e->rs->segments[si];
    xwatch *x = xp_watch_of(e, u);
    for (int k = 0; k < s->nclauses; k++) {
        const rule_clause *c = &s->clauses[k];
        if (c->enter != enter)
            continue;
        bool applies = c->on == -1 || (anchor != -1 && c->on == anchor) ||
                       (anchor == -1 && c->on >= 0 && ev && e->mark[c->on]);
        if (!applies)
            continue;
        bool ok = true;
        if (x)
            xp_begin(e);
        if (c->when >= 0)
            ok = eval(e, u, c->when, ev, c->on == -1 && s->timed ? next : NULL);
        if (x)
            xp_end(e, &x->seg[si * XSEG_SLOTS + 1 + k], ok,
                   c->when >= 0 ? "the condition" : "the clause");
        if (ok)
            return true;
    }
    return false;
}

/*
 * Re-evaluates segment s. anchor is the matcher (or RULE_ON_SESSION_*) that happened, or
 * -1 when only unanchored conditions apply (a timer, or an event s does not anchor on).
 */
static void eval_segment(eng *e, user *u, int si, const trk_event *ev, int anchor, int64_t *next)
{
    const rule_set *rs = e->rs;
    const rule_segment *s = &rs->segments[si];
    bool member = rp_bit(u->prof, rs->layout.off_segments, si);
    xwatch *x = xp_watch_of(e, u);
    if (s->live >= 0) {
        if (x)
            xp_begin(e);
        bool now_in = eval(e, u, s->live, ev, s->timed ? next : NULL);
        if (x)
            xp_end(e, &x->seg[si * XSEG_SLOTS], now_in, "when");
        if (now_in != member)
            set_member(e, u, si, now_in, e->clock, true);
        return;
    }
    if (!member) {
        /* an exit that already holds keeps the user out: no enter-then-exit flapping */
        if (!any_clause(e, u, si, true, ev, anchor, next) ||
            any_clause(e, u, si, false, ev, anchor, next))
            return;
    } else if (!any_clause(e, u, si, false, ev, anchor, next)) {
        return;
    }
    set_member(e, u, si, !member, e->clock, true);
    /* the clauses of the new state may depend on time: look again a moment later */
    if (s->timed && next && e->clock + 1 < *next)
        *next = e->clock + 1;
}

static uint64_t all_segments(const rule_set *rs)
{
    return rs->nsegments == 64 ? ~UINT64_C(0) : (UINT64_C(1) << rs->nsegments) - 1;
}

/* Evaluates dirty segments in declaration order (in_segment reads earlier ones only). */
static void eval_segments(eng *e, user *u, const trk_event *ev, int anchor, int64_t *next)
{
    const rule_set *rs = e->rs;
    for (int si = 0; si < rs->nsegments; si++) {
        if (!(e->seg_dirty & (UINT64_C(1) << si)))
            continue;
        e->seg_dirty &= ~(UINT64_C(1) << si);
        eval_segment(e, u, si, ev, anchor, next);
    }
}

static uint64_t fire_id(const rule_trigger *t, const user *u, int64_t at, uint32_t nth)
{
    size_t n;
    const char *key = eng_user_key(u, &n);
    uint64_t h = onr_hash64(key, n, t->name_hash);
    uint64_t tail[2] = {(uint64_t)at, nth};
    return onr_hash64(tail, sizeof(tail), h);
}

/* Whether t's limit lets it fire at `at` (checked before its condition: cheaper). */
static bool limit_allows(const rule_set *rs, const rule_trigger *t, const uint8_t *p, int64_t at)
{
    switch (t->limit) {
    case LIMIT_NONE:
        return true;
    case LIMIT_ONCE:
        return !rp_bit(p, rs->layout.off_bits, t->bit_fired);
    case LIMIT_ONCE_PER:
        return rp_u32(p, t->off_last_fire) != (uint32_t)(at / t->limit_ms + 1) ||
               !rp_bit(p, t->off_last_fire + 4, t->bit_once);
    case LIMIT_COOLDOWN: {
        int64_t last = rp_i64(p, t->off_last_fire);
        return !last || at - last >= t->limit_ms;
    }
    }
    return true;
}

static void fire_trigger(eng *e, user *u, int ti, const trk_event *ev, int64_t at)
{
    const rule_set *rs = e->rs;
    const rule_trigger *t = &rs->triggers[ti];
    xwatch *w = xp_watch_of(e, u);
    bool x = w != NULL;
    xrec *xr = x ? &w->trig[ti] : NULL;
    uint8_t *p = u->prof;
    if (!limit_allows(rs, t, p, at)) {
        if (x)
            xr->limited++;
        return;
    }
    if (t->when >= 0) {
        if (x)
            xp_begin(e);
        bool ok = eval(e, u, t->when, ev, NULL);
        if (x)
            xp_end(e, xr, ok, "when");
        if (!ok)
            return;
    } else if (x) {
        xp_begin(e);
        xp_end(e, xr, true, "no condition");
    }
    if (t->limit == LIMIT_ONCE)
        rp_set_bit(p, rs->layout.off_bits, t->bit_fired, true);
    else if (t->limit == LIMIT_ONCE_PER) {
        uint32_t window = (uint32_t)(at / t->limit_ms + 1);
        if (rp_u32(p, t->off_last_fire) != window) { /* a new window: every bit starts clear */
            rp_set_u32(p, t->off_last_fire, window);
            memset(p + t->off_last_fire + 4, 0, (size_t)t->once_group_bytes);
        }
        rp_set_bit(p, t->off_last_fire + 4, t->bit_once, true);
    } else if (t->limit == LIMIT_COOLDOWN)
        rp_set_i64(p, t->off_last_fire, at);
    bool held = false;
    if (t->holdout_bp > 0) {
        uint32_t seed = hdr(u)->seed;
        uint64_t h = onr_hash64(&seed, sizeof(seed), t->name_hash ^ 7);
        held = (int)(h % 10000) < t->holdout_bp;
    }
    rule_hdr *H = hdr(u);
    eng_out o = {.kind = EO_TRIGGER_FIRED,
                 .at_ms = at,
                 .segment = -1,
                 .trigger = ti,
                 .id = fire_id(t, u, at, H->nfires++),
                 .held_out = held};
    o.user = eng_user_key(u, &o.user_len);
    e->st.fires++;
    e->trig_fires[ti]++;
    if (held) {
        e->st.held_out++;
        e->trig_held[ti]++;
    }
    if (x) {
        xr->fires++;
        xr->held_out += held;
        if (!xr->first_fire_ms)
            xr->first_fire_ms = at;
        xr->last_fire_ms = at;
    }
    e->sink(e->sink_ctx, &o);
}

/* ---- sessions */

static void end_session(eng *e, user *u, int64_t at, int64_t *next)
{
    const rule_set *rs = e->rs;
    rule_hdr *h = hdr(u);
    if (!(h->flags & RH_IN_SESSION))
        return;
    h->flags &= (uint8_t)~RH_IN_SESSION;
    const char *saved = e->xcause;
    if (xp_watch_of(e, u))
        e->xcause = "session end";
    for (int i = 0; i < rs->nsession_end; i++)
        fire_trigger(e, u, rs->session_end_triggers[i], NULL, at);
    e->seg_dirty = rs->session_end_segments;
    eval_segments(e, u, NULL, RULE_ON_SESSION_END, next);
    e->xcause = saved;
}

static void start_session(eng *e, user *u, int64_t ts, int64_t *next)
{
    const rule_set *rs = e->rs;
    rule_hdr *h = hdr(u);
    h->flags |= RH_IN_SESSION;
    h->sess_start_ms = ts;
    h->sess_events = 0;
    h->sess_number++;
    const char *saved = e->xcause;
    if (xp_watch_of(e, u))
        e->xcause = "session start";
    for (int i = 0; i < rs->nsession_start; i++)
        fire_trigger(e, u, rs->session_start_triggers[i], NULL, ts);
    e->seg_dirty = rs->session_start_segments;
    eval_segments(e, u, NULL, RULE_ON_SESSION_START, next);
    e->xcause = saved;
}

/* ---- the user's timer */

static int64_t earliest(eng *e, user *u)
{
    const rule_set *rs = e->rs;
    rule_hdr *h = hdr(u);
    int64_t d = INT64_MAX;
    if (h->flags & RH_IN_SESSION)
        d = h->last_ms + e->o.session_timeout_ms;
    for (int i = 0; i < rs->nidle; i++) {
        const rule_trigger *t = &rs->triggers[rs->idle_triggers[i]];
        if (h->last_ms && !rp_bit(u->prof, rs->layout.off_bits, t->bit_idle))
            d = ONR_MIN(d, h->last_ms + t->dur_ms);
    }
    for (int i = 0; i < rs->nabsence; i++) {
        int64_t p = rp_i64(u->prof, rs->triggers[rs->absence_triggers[i]].off_pending);
        if (p)
            d = ONR_MIN(d, p);
    }
    if (h->recheck_ms)
        d = ONR_MIN(d, h->recheck_ms);
    return d;
}

/*
 * Lazily: a timer already due at or before the new earliest deadline stays where it is; when
 * it fires early, on_timer finds nothing due and sets it again. Most events only push
 * deadlines later (the session end moves with every event), so most events touch no timer
 * list, and no other user's memory.
 */
static void schedule(eng *e, user *u)
{
    int64_t d = earliest(e, u);
    if (d == INT64_MAX)
        return; /* a pending timer fires early and finds nothing due */
    if (d < e->clock)
        d = e->clock;
    if (tmr_pending(&u->timer) && u->timer.deadline_ms <= d)
        return;
    tmr_reschedule(e->wheel, &u->timer, d);
}

/*
 * Timers due at the same millisecond are handled together, in an order that depends only
 * on the users (their holdout seed, then key), not on when each timer was set: a restart
 * from a checkpoint sets them again in another order and must give the same outputs.
 */
static void collect_due(tmr_node *n, void *ctx)
{
    eng *e = ctx;
    if (e->ndue == e->capdue) {
        e->capdue = e->capdue ? e->capdue * 2 : 64;
        e->due = onr_realloc(e->due, sizeof(*e->due) * e->capdue);
    }
    e->due[e->ndue++] = (user *)(void *)((char *)n - offsetof(user, timer));
}

static int due_order(const void *a, const void *b)
{
    const user *x = *(user *const *)a, *y = *(user *const *)b;
    uint32_t sx = ((const rule_hdr *)(const void *)x->prof)->seed;
    uint32_t sy = ((const rule_hdr *)(const void *)y->prof)->seed;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    size_t nx, ny;
    const char *kx = eng_user_key(x, &nx), *ky = eng_user_key(y, &ny);
    int c = memcmp(kx, ky, ONR_MIN(nx, ny));
    return c ? c : (nx > ny) - (nx < ny);
}

static void on_timer(eng *e, user *u, int64_t now);

static void run_due(int64_t at, void *ctx)
{
    eng *e = ctx;
    if (e->ndue > 1)
        qsort(e->due, e->ndue, sizeof(*e->due), due_order);
    size_t n = e->ndue;
    e->ndue = 0; /* on_timer may set timers due now: they are collected afresh */
    for (size_t i = 0; i < n; i++)
        on_timer(e, e->due[i], at);
}

static void on_timer(eng *e, user *u, int64_t now)
{
    const rule_set *rs = e->rs;
    rule_hdr *h = hdr(u);
    if (now > e->clock)
        e->clock = now;
    e->st.timers_fired++;
    int64_t next = INT64_MAX;

    /* idle triggers and absences due now, in trigger order */
    for (int i = 0; i < rs->nidle; i++) {
        int ti = rs->idle_triggers[i];
        const rule_trigger *t = &rs->triggers[ti];
        if (h->last_ms && !rp_bit(u->prof, rs->layout.off_bits, t->bit_idle) &&
            h->last_ms + t->dur_ms <= e->clock) {
            rp_set_bit(u->prof, rs->layout.off_bits, t->bit_idle, true);
            char cause[48];
            if (xp_watch_of(e, u)) {
                onr_duration_format(t->dur_ms, cause + 5, sizeof(cause) - 5);
                memcpy(cause, "idle ", 5);
                e->xcause = cause;
            }
            fire_trigger(e, u, ti, NULL, h->last_ms + t->dur_ms);
            e->xcause = NULL;
        }
    }
    for (int ai = 0; ai < rs->nabsence; ai++) {
        int ti = rs->absence_triggers[ai];
        const rule_trigger *t = &rs->triggers[ti];
        int64_t p = rp_i64(u->prof, t->off_pending);
        if (p && p <= e->clock) {
            rp_set_i64(u->prof, t->off_pending, 0);
            char cause[TRK_MAX_NAME_BYTES + 64];
            if (xp_watch_of(e, u)) {
                char dur[32];
                onr_duration_format(t->dur_ms, dur, sizeof(dur));
                snprintf(cause, sizeof(cause), "no %s within %s",
                         rs->matchers[t->unless_matcher].display, dur);
                e->xcause = cause;
            }
            fire_trigger(e, u, ti, NULL, p);
            e->xcause = NULL;
        }
    }
    uint64_t dirty = 0;
    const char *why = "time passing";
    if (h->recheck_ms && h->recheck_ms <= e->clock) {
        h->recheck_ms = 0;
        dirty = rs->timed_segments;
    }
    if (h->flags & RH_REVAL) { /* the rules were reloaded with new segments */
        h->flags &= (uint8_t)~RH_REVAL;
        dirty = all_segments(rs);
        why = "a reload of the rules";
    }
    if (dirty) {
        if (xp_watch_of(e, u))
            e->xcause = why;
        e->seg_dirty = dirty;
        eval_segments(e, u, NULL, -1, &next);
        e->xcause = NULL;
    }
    if ((h->flags & RH_IN_SESSION) && h->last_ms + e->o.session_timeout_ms <= e->clock)
        end_session(e, u, h->last_ms + e->o.session_timeout_ms, &next);
    if (next != INT64_MAX && (!h->recheck_ms || next < h->recheck_ms))
        h->recheck_ms = next;
    schedule(e, u);
}

/* ---- identity */

static int64_t min_nonzero(int64_t a, int64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

/* Folds profile `from` into `to`; `from` forwards to `to` from now on. */
static void merge(eng *e, user *from, user *to)
{
    const rule_set *rs = e->rs;
    const rule_layout *L = &rs->layout;
    rule_hdr *a = hdr(from), *b = hdr(to);
    uint8_t *pa = from->prof, *pb = to->prof;

    bool a_signed = a->flags & RH_SIGNED_UP, b_signed = b->flags & RH_SIGNED_UP;
    if (a_signed && !b_signed)
        b->start_ms = a->start_ms;
    else if (a_signed == b_signed)
        b->start_ms = ONR_MIN(a->start_ms, b->start_ms);
    if (a->last_ms > b->last_ms) {
        b->sess_start_ms = a->sess_start_ms;
        b->sess_events = a->sess_events;
        b->flags = (uint8_t)((b->flags & ~RH_IN_SESSION) | (a->flags & RH_IN_SESSION));
    }
    b->last_ms = ONR_MAX(a->last_ms, b->last_ms);
    b->sess_number += a->sess_number;
    b->recheck_ms = min_nonzero(a->recheck_ms, b->recheck_ms);
    b->nfires += a->nfires;
    if (a->step > b->step)
        b->step = a->step;
    b->flags |= a->flags & (RH_COMPLETED | RH_SIGNED_UP);

    for (int i = 0; i < rs->nmatchers; i++) {
        const rule_matcher *m = &rs->matchers[i];
        if (m->off_count >= 0)
            rp_set_u32(pb, m->off_count, rp_u32(pa, m->off_count) + rp_u32(pb, m->off_count));
        if (m->off_first >= 0)
            rp_set_i64(pb, m->off_first,
                       min_nonzero(rp_i64(pa, m->off_first), rp_i64(pb, m->off_first)));
        if (m->off_last >= 0)
            rp_set_i64(pb, m->off_last, ONR_MAX(rp_i64(pa, m->off_last), rp_i64(pb, m->off_last)));
    }
    for (int i = 0; i < rs->nwindows; i++) {
        const rule_window *w = &rs->windows[i];
        uint32_t la = rp_u32(pa, w->off);
        int64_t *tb = (int64_t *)(void *)(pb + w->off + 8);
        const int64_t *ta = (const int64_t *)(const void *)(pa + w->off + 8);
        for (uint32_t k = 0; k < la; k++) {
            uint32_t lb = rp_u32(pb, w->off);
            if (lb < (uint32_t)w->cap) {
                tb[lb] = ta[k];
                rp_set_u32(pb, w->off, lb + 1);
            } else {
                uint32_t oldest = 0;
                for (uint32_t j = 1; j < lb; j++)
                    if (tb[j] < tb[oldest])
                        oldest = j;
                if (ta[k] > tb[oldest])
                    tb[oldest] = ta[k];
            }
        }
    }
    for (int i = 0; i < rs->nseqs; i++) {
        const rule_seq *q = &rs->seqs[i];
        for (int k = 0; k < q->nsteps; k++)
            rp_set_i64(pb, q->off + 8 * k,
                       ONR_MAX(rp_i64(pa, q->off + 8 * k), rp_i64(pb, q->off + 8 * k)));
    }
    if (L->off_path >= 0 && rp_u32(pb, L->off_path) == 0)
        memcpy(pb + L->off_path, pa + L->off_path, 4 + 4 * (size_t)L->path_len);
    if (L->off_traits >= 0) {
        rule_trait_slot *sa = (rule_trait_slot *)(void *)(pa + L->off_traits);
        rule_trait_slot *sb = (rule_trait_slot *)(void *)(pb + L->off_traits);
        for (int i = 0; i < L->ntraits; i++)
            if (sb[i].type == TV_MISSING)
                sb[i] = sa[i];
    }
    for (int i = 0; i < L->nbits; i++)
        if (rp_bit(pa, L->off_bits, i))
            rp_set_bit(pb, L->off_bits, i, true);
    for (int i = 0; i < rs->ntriggers; i++) {
        const rule_trigger *t = &rs->triggers[i];
        if (t->limit == LIMIT_COOLDOWN)
            rp_set_i64(pb, t->off_last_fire,
                       ONR_MAX(rp_i64(pa, t->off_last_fire), rp_i64(pb, t->off_last_fire)));
        else if (t->limit == LIMIT_ONCE_PER && t->bit_once == 0) { /* once per group */
            uint32_t wa = rp_u32(pa, t->off_last_fire), wb = rp_u32(pb, t->off_last_fire);
            if (wa > wb)
                memcpy(pb + t->off_last_fire, pa + t->off_last_fire,
                       4 + (size_t)t->once_group_bytes);
            else if (wa == wb)
                for (int k = 0; k < t->once_group_bytes; k++)
                    pb[t->off_last_fire + 4 + k] |= pa[t->off_last_fire + 4 + k];
        }
        if (t->off_pending >= 0)
            rp_set_i64(pb, t->off_pending,
                       min_nonzero(rp_i64(pa, t->off_pending), rp_i64(pb, t->off_pending)));
    }
    /* memberships: the merged profile keeps the union; conditions are re-evaluated after
     * the event, and a membership it gains is reported under the surviving key */
    uint64_t sa, sb;
    memcpy(&sa, pa + L->off_segments, 8);
    memcpy(&sb, pb + L->off_segments, 8);
    for (int si = 0; si < rs->nsegments; si++)
        if ((sa >> si & 1) && !(sb >> si & 1)) {
            e->seg_sizes[si]--; /* counted again by set_member */
            rp_set_bit(pb, L->off_segments, si, false);
            set_member(e, to, si, true, e->clock, false); /* the person was cued already */
        } else if ((sa >> si & 1) && (sb >> si & 1)) {
            e->seg_sizes[si]--;
        }

    tmr_cancel(e->wheel, &from->timer);
    /* from's key now names `to`; from stays behind only to forward older aliases */
    size_t kn;
    const char *kp = eng_user_key(from, &kn);
    trk_str fkey = {kp, (uint32_t)kn};
    index_del(e, fkey);
    alias_put(e, to, fkey);
    a->flags |= RH_MERGED;
    memcpy(pa + sizeof(rule_hdr), &to, sizeof(to));
    xp_merged(e, from, to);
    e->st.users--;
    e->st.merges++;
    e->merged = true;
}

static user *resolve(eng *e, const trk_event *ev)
{
    trk_str uid = ev->user_id, aid = ev->anon_id;
    if (ev->kind == TRK_ALIAS && ev->previous_id.n && uid.n) {
        user *to = lookup(e, uid), *from = lookup(e, ev->previous_id);
        if (!to && !from) {
            to = new_user(e, uid, ev->ts_ms);
            alias_put(e, to, ev->previous_id);
        } else if (!to) {
            rekey(e, from, uid);
            alias_put(e, from, ev->previous_id);
            to = from;
        } else if (!from) {
            alias_put(e, to, ev->previous_id);
        } else if (from != to) {
            merge(e, from, to);
        }
        return to;
    }
    if (uid.n) {
        user *u = lookup(e, uid);
        if (aid.n) {
            user *a = lookup(e, aid);
            if (a && a != u) {
                if (!u) {
                    /* the anonymous profile becomes this user's; the anonymousId is retired
                     * (later messages carry the userId, and any that do not start a profile
                     * that the next message with both ids merges) */
                    rekey(e, a, uid);
                    return a;
                }
                merge(e, a, u);
            }
        }
        if (!u)
            u = new_user(e, uid, ev->ts_ms);
        return u;
    }
    user *a = lookup(e, aid);
    return a ? a : new_user(e, aid, ev->ts_ms);
}

/* ---- events */

/* An event filter (a label's or a trigger's `where`): sees the event only; -1 passes. */
static bool passes(const eng *e, int chunk, const trk_event *ev)
{
    if (chunk < 0)
        return true;
    rule_env env = {.rs = e->rs, .ev = ev, .now_ms = e->clock};
    return rule_eval_bool(&env, chunk, NULL);
}

static void match_event(eng *e, const trk_event *ev)
{
    const rule_set *rs = e->rs;
    e->nmatched = 0;
    const int *ids = NULL;
    int n = 0;
    if (ev->kind == TRK_TRACK)
        n = rule_lookup_name(rs, ev->name.p, ev->name.n, &ids);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            ids = rs->kind_matchers[ev->kind];
            n = rs->nkind_matchers[ev->kind];
        }
        for (int i = 0; i < n; i++) {
            int m = ids[i];
            if (e->mark[m] || !passes(e, rs->matchers[m].where, ev))
                continue;
            e->mark[m] = 1;
            e->matched[e->nmatched++] = m;
        }
    }
}

static void path_push(eng *e, user *u, const trk_event *ev)
{
    const rule_layout *L = &e->rs->layout;
    const trk_value *f = &ev->props[e->rs->prop_feature];
    if (L->off_path < 0 || f->type != TV_STR || f->str.n == 0)
        return;
    uint32_t h = rule_feature_hash(f->str.p, f->str.n);
    uint32_t len = rp_u32(u->prof, L->off_path);
    uint32_t *path = (uint32_t *)(void *)(u->prof + L->off_path + 4);
    if (len && path[len - 1] == h)
        return; /* repeats in a row count once */
    if (len == (uint32_t)L->path_len) {
        memmove(path, path + 1, 4 * (size_t)(len - 1));
        len--;
    }
    path[len++] = h;
    rp_set_u32(u->prof, L->off_path, len);
}

static void window_push(uint8_t *p, const rule_window *w, int64_t ts)
{
    uint32_t len = rp_u32(p, w->off);
    int64_t *t = (int64_t *)(void *)(p + w->off + 8);
    if (len < (uint32_t)w->cap) {
        t[len] = ts;
        rp_set_u32(p, w->off, len + 1);
        return;
    }
    uint32_t oldest = 0;
    for (uint32_t j = 1; j < len; j++)
        if (t[j] < t[oldest])
            oldest = j;
    if (ts > t[oldest])
        t[oldest] = ts;
}

static void seq_step(uint8_t *p, const rule_seq *q, const uint8_t *mark, int64_t ts)
{
    /* from the last step down, so one event never chains with itself */
    for (int k = q->nsteps - 1; k >= 0; k--) {
        if (!mark[q->steps[k]])
            continue;
        if (k == 0) {
            rp_set_i64(p, q->off, ts);
            continue;
        }
        int64_t start = rp_i64(p, q->off + 8 * (k - 1));
        if (start && ts - start <= q->within_ms && ts >= start)
            rp_set_i64(p, q->off + 8 * k, start);
    }
}

static void set_traits(eng *e, user *u, const trk_event *ev)
{
    const rule_layout *L = &e->rs->layout;
    if (L->off_traits < 0)
        return;
    rule_trait_slot *s = (rule_trait_slot *)(void *)(u->prof + L->off_traits);
    for (int i = 0; i < L->ntraits; i++) {
        const trk_value *v = &ev->traits[i];
        if (v->type == TV_MISSING)
            continue;
        memset(&s[i], 0, sizeof(s[i]));
        s[i].type = v->type;
        if (v->type == TV_NUM)
            s[i].num = v->num;
        else if (v->type == TV_BOOL)
            s[i].num = v->b;
        else if (v->type == TV_STR) {
            s[i].len = (uint8_t)ONR_MIN(v->str.n, RULE_TRAIT_STR);
            memcpy(s[i].s, v->str.p, s[i].len);
        }
    }
}

void eng_process(eng *e, const trk_event *ev)
{
    const rule_set *rs = e->rs;
    /* timers due before the event fire first; those due at its very time fire after it,
     * so "unless B within 10m" counts a B exactly 10 minutes later as in time */
    if (ev->ts_ms > e->clock) {
        eng_advance(e, ev->ts_ms - 1);
        e->clock = ev->ts_ms;
    }
    e->st.events++;
    e->merged = false;
    user *u = resolve(e, ev);
    rule_hdr *h = hdr(u);
    int64_t ts = ev->ts_ms;
    int64_t next = INT64_MAX;
    xwatch *xw = xp_watch_of(e, u);
    bool x = xw != NULL;
    char cause[TRK_MAX_NAME_BYTES + 32];
    if (x) {
        xw->events++;
        if (ev->kind == TRK_TRACK)
            snprintf(cause, sizeof(cause), "\"%.*s\"", (int)ev->name.n, ev->name.p);
        else
            snprintf(cause, sizeof(cause), "%s", trk_kind_name(ev->kind));
        e->xcause = cause;
    }

    /* a session that timed out but whose timer has not run yet (a late event) ends first */
    if ((h->flags & RH_IN_SESSION) && ts - h->last_ms >= e->o.session_timeout_ms &&
        h->last_ms + e->o.session_timeout_ms <= e->clock)
        end_session(e, u, h->last_ms + e->o.session_timeout_ms, &next);
    bool first_event = h->last_ms == 0;
    /* match first: a "Session Ended" after the session timed out starts nothing */
    match_event(e, ev);
    if (!(h->flags & RH_IN_SESSION) && !(e->mark[RM_SESSION_ENDED] && h->sess_number > 0))
        start_session(e, u, ts, &next);
    if (x)
        e->xcause = cause;

    /* the profile */
    if (ts > h->last_ms)
        h->last_ms = ts;
    h->sess_events++;
    set_traits(e, u, ev); /* identify's traits, or any message's context.traits */
    uint8_t *p = u->prof;
    e->seg_dirty = 0;
    for (int i = 0; i < e->nmatched; i++) {
        const rule_matcher *m = &rs->matchers[e->matched[i]];
        if (m->off_count >= 0)
            rp_set_u32(p, m->off_count, rp_u32(p, m->off_count) + 1);
        if (m->off_first >= 0 && (!rp_i64(p, m->off_first) || ts < rp_i64(p, m->off_first)))
            rp_set_i64(p, m->off_first, ts);
        if (m->off_last >= 0 && ts > rp_i64(p, m->off_last))
            rp_set_i64(p, m->off_last, ts);
        for (int k = 0; k < m->nwindows; k++)
            window_push(p, &rs->windows[m->windows[k]], ts);
        e->seg_dirty |= m->segments_dep;
        for (int k = 0; k < m->nseg_clauses; k++)
            e->seg_dirty |= UINT64_C(1) << (m->seg_clauses[k] >> 8);
    }
    if (rs->nseqs) {
        /* each sequence once, even when the event matches several of its steps */
        for (int i = 0; i < e->nmatched; i++) {
            const rule_matcher *m = &rs->matchers[e->matched[i]];
            for (int k = 0; k < m->nseqs; k++) {
                const rule_seq *q = &rs->seqs[m->seqs[k]];
                int first = 0;
                while (!e->mark[q->steps[first]])
                    first++;
                if (q->steps[first] == e->matched[i])
                    seq_step(p, q, e->mark, ts);
            }
        }
    }
    if (e->mark[RM_SIGNED_UP] && !(h->flags & RH_SIGNED_UP)) {
        h->flags |= RH_SIGNED_UP;
        h->start_ms = ts;
    }
    if (e->mark[RM_FEATURE_USED])
        path_push(e, u, ev);
    if (e->mark[RM_STEP_COMPLETED]) {
        const trk_value *s = &ev->props[rs->prop_step];
        if (s->type == TV_NUM && s->num > h->step)
            h->step = (float)s->num;
    }
    if (e->mark[RM_ONBOARDING_COMPLETED])
        h->flags |= RH_COMPLETED;
    for (int i = 0; i < rs->nidle; i++)
        rp_set_bit(p, rs->layout.off_bits, rs->triggers[rs->idle_triggers[i]].bit_idle, false);

    /* triggers on this event; absences it satisfies, then those it starts */
    for (int i = 0; i < e->nmatched; i++) {
        const rule_matcher *m = &rs->matchers[e->matched[i]];
        for (int k = 0; k < m->nunlesses; k++)
            rp_set_i64(p, rs->triggers[m->unlesses[k]].off_pending, 0);
    }
    for (int i = 0; i < e->nmatched; i++) {
        const rule_matcher *m = &rs->matchers[e->matched[i]];
        for (int k = 0; k < m->nabsences; k++) {
            const rule_trigger *t = &rs->triggers[m->absences[k]];
            if (passes(e, t->where, ev))
                rp_set_i64(p, t->off_pending, ts + t->dur_ms);
        }
        int cached_prop = -1;
        uint64_t cached_hash = 0;
        for (int k = 0; k < m->ntriggers; k++) {
            const rule_trigger *t = &rs->triggers[m->triggers[k]];
            if (t->key_prop >= 0 && !x) {
                if (t->key_prop != cached_prop) {
                    cached_prop = t->key_prop;
                    cached_hash = rule_value_hash(&ev->props[cached_prop]);
                }
                if (cached_hash != t->key_hash)
                    continue; /* its filter cannot hold */
            }
            if (passes(e, t->where, ev))
                fire_trigger(e, u, m->triggers[k], ev, e->clock);
        }
    }

    /* segments */
    /* a new or merged profile, or rules reloaded with new segments: every segment looks again */
    if (first_event || e->merged || (h->flags & RH_REVAL)) {
        h->flags &= (uint8_t)~RH_REVAL;
        e->seg_dirty |= all_segments(rs);
    } else {
        e->seg_dirty |= rs->every_event_segments;
    }
    if (e->seg_dirty)
        eval_segments(e, u, ev, -1, &next);
    if (e->mark[RM_SESSION_ENDED])
        end_session(e, u, e->clock, &next);

    for (int i = 0; i < e->nmatched; i++)
        e->mark[e->matched[i]] = 0;
    e->nmatched = 0;
    if (h->recheck_ms && h->recheck_ms <= e->clock)
        h->recheck_ms = 0;
    if (next != INT64_MAX && (!h->recheck_ms || next < h->recheck_ms))
        h->recheck_ms = next;
    e->xcause = NULL;
    schedule(e, u);
}

static void prefetch_key(const eng *e, trk_str key, int stage)
{
    if (!key.n)
        return;
    uint64_t h = key_hash(key.p, key.n);
    const islot *sl = &e->index[h & e->index_mask];
    if (stage == 0) {
        __builtin_prefetch(sl);
        return;
    }
    if (sl->u && sl->hash == h)
        for (size_t off = 0; off < e->user_size; off += 64)
            __builtin_prefetch((const char *)sl->u + off);
}

void eng_prefetch(const eng *e, trk_str user_id, trk_str anon_id, int stage)
{
    prefetch_key(e, user_id.n ? user_id : anon_id, stage);
    if (stage == 0 && user_id.n && anon_id.n)
        prefetch_key(e, anon_id, 0);
}

void eng_advance(eng *e, int64_t now_ms)
{
    if (now_ms <= e->clock && e->wheel->now_ms >= now_ms)
        return;
    tmr_advance_grouped(e->wheel, now_ms, collect_due, run_due, e);
    if (now_ms > e->clock)
        e->clock = now_ms;
}

void eng_drain(eng *e)
{
    for (;;) {
        int64_t d = tmr_next_deadline(e->wheel);
        if (d == INT64_MAX)
            return;
        tmr_advance_grouped(e->wheel, d < e->wheel->now_ms ? e->wheel->now_ms : d, collect_due,
                            run_due, e);
        if (d > e->clock)
            e->clock = d;
    }
}

int64_t eng_clock(const eng *e)
{
    return e->clock;
}

/* ---- for checkpoint.c */

user *eng__new_user(eng *e, trk_str key)
{
    return new_user(e, key, 0);
}

void eng__alias(eng *e, user *u, trk_str key)
{
    alias_put(e, u, key);
}

user *eng__lookup(eng *e, trk_str key)
{
    return lookup(e, key);
}

void eng__schedule(eng *e, user *u)
{
    schedule(e, u);
}

/* ---- life cycle and stats */

eng *eng_new(const rule_set *rs, const eng_opts *o, eng_sink sink, void *ctx)
{
    eng *e = onr_calloc(1, sizeof(*e));
    e->rs = rs;
    if (o)
        e->o = *o;
    else
        eng_opts_default(&e->o);
    if (e->o.session_timeout_ms <= 0)
        e->o.session_timeout_ms = 30 * ONR_MINUTE_MS;
    e->sink = sink;
    e->sink_ctx = ctx;
    e->wheel = onr_malloc(sizeof(*e->wheel));
    tmr_init(e->wheel, 0);
    e->user_size = (sizeof(user) + rs->layout.size + 7) & ~(size_t)7;
    e->index = onr_calloc(INDEX_MIN, sizeof(islot));
    e->index_mask = INDEX_MIN - 1;
    e->seg_sizes = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
    e->trig_fires = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    e->trig_held = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    e->matched = onr_calloc((size_t)rs->nmatchers + 1, sizeof(int));
    e->mark = onr_calloc((size_t)rs->nmatchers + 1, 1);
    if (e->o.explain_user) {
        eng_explain_watch(e, e->o.explain_user);
        e->xw[0].since = 0; /* from the start: every evaluation is recorded */
    }
    return e;
}

void eng_free(eng *e)
{
    if (!e)
        return;
    for (size_t c = 0; c < e->nchunks; c++) {
        size_t used = c + 1 == e->nchunks ? e->chunk_used : USERS_PER_CHUNK;
        for (size_t i = 0; i < used; i++) {
            user *u = (user *)(void *)(e->chunks[c] + e->user_size * i);
            if (u->klen == KEY_OUTLINE) {
                size_t n;
                onr_free((void *)eng_user_key(u, &n));
            }
        }
    }
    if (e->aliases)
        for (size_t i = 0; i <= e->alias_mask; i++)
            onr_free(e->aliases[i].k);
    onr_free(e->aliases);
    for (size_t i = 0; i < e->nchunks; i++)
        onr_free(e->chunks[i]);
    onr_free(e->chunks);
    onr_free(e->index);
    onr_free(e->seg_sizes);
    onr_free(e->trig_fires);
    onr_free(e->trig_held);
    onr_free(e->matched);
    onr_free(e->mark);
    onr_free(e->wheel);
    onr_free(e->due);
    xp_free(e);
    onr_free(e);
}

void eng_get_stats(const eng *e, eng_stats *s)
{
    *s = e->st;
    s->profile_bytes = e->user_size;
    s->bytes = e->nchunks * USERS_PER_CHUNK * e->user_size -
               (e->nchunks ? (USERS_PER_CHUNK - e->chunk_used) * e->user_size : 0) +
               (e->index_mask + 1) * sizeof(islot) +
               (e->aliases ? (e->alias_mask + 1) * sizeof(aslot) : 0) + e->key_bytes;
}

void eng_segment_sizes(const eng *e, uint64_t *sizes)
{
    memcpy(sizes, e->seg_sizes, sizeof(uint64_t) * (size_t)e->rs->nsegments);
}

void eng_trigger_counts(const eng *e, uint64_t *fires, uint64_t *held_out)
{
    memcpy(fires, e->trig_fires, sizeof(uint64_t) * (size_t)e->rs->ntriggers);
    memcpy(held_out, e->trig_held, sizeof(uint64_t) * (size_t)e->rs->ntriggers);
}
