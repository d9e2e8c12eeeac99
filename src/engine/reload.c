/*
 * reload.c - hot reload of rules: an engine moves every user to a new rule set between two
 * events, carrying each profile field by what it means (rule_layout_map), never by its
 * offset, and rebuilds what it derives from the rules: per-segment and per-trigger counters,
 * the explain recorder, the per-event scratch and every user's timer.
 */
#include "engine_int.h"

#include <stdlib.h>
#include <string.h>

static user *slot(uint8_t *chunk, size_t user_size, size_t i)
{
    return (user *)(void *)(chunk + user_size * i);
}

static size_t used_in(const eng *e, size_t c)
{
    return c + 1 == e->nchunks ? e->chunk_used : USERS_PER_CHUNK;
}

static bool merged(const user *u)
{
    return rp_hdr(u->prof)->flags & RH_MERGED;
}

/* One user's profile under the new rules (an unmerged user; from and to do not overlap). */
static void carry(const eng *e, const rule_set *rs, const rule_map *m, const uint8_t *from,
                  uint8_t *to)
{
    rule_map_apply(m, from, to);
    rule_hdr *h = (rule_hdr *)(void *)to;
    /* a new (or changed) idle trigger fires for quiet spells that reach its length after the
     * reload: one that already has is past it, not fired for en masse */
    for (int i = 0; i < rs->nidle; i++) {
        int ti = rs->idle_triggers[i];
        const rule_trigger *t = &rs->triggers[ti];
        if (m->trigger_from[ti] < 0 && h->last_ms && h->last_ms + t->dur_ms <= e->clock)
            rp_set_bit(to, rs->layout.off_bits, t->bit_idle, true);
    }
    /* new and changed segments are evaluated at the user's next event or timer */
    if (m->segments_fresh)
        h->flags |= RH_REVAL;
}

/* Same profile size: each profile is rewritten where it is. */
static void carry_in_place(eng *e, const rule_set *rs, const rule_map *m)
{
    uint8_t *scratch = onr_malloc(m->to_size);
    for (size_t c = 0; c < e->nchunks; c++)
        for (size_t i = 0; i < used_in(e, c); i++) {
            user *u = slot(e->chunks[c], e->user_size, i);
            if (merged(u))
                continue; /* only its header and forwarding pointer matter */
            carry(e, rs, m, u->prof, scratch);
            memcpy(u->prof, scratch, m->to_size);
        }
    onr_free(scratch);
}

/* ---- another profile size: every user moves to new chunks, in the same order */

typedef struct chunk_ref {
    uintptr_t base;
    size_t index;
} chunk_ref;

typedef struct mover {
    chunk_ref *refs; /* old chunks by address */
    size_t nrefs;
    size_t old_size, new_size;
    uint8_t **chunks; /* new chunks, by index */
} mover;

static int by_base(const void *a, const void *b)
{
    uintptr_t x = ((const chunk_ref *)a)->base, y = ((const chunk_ref *)b)->base;
    return (x > y) - (x < y);
}

/* Where the user at old address u lives now. */
static user *moved(const mover *mv, user *u)
{
    if (!u)
        return NULL;
    uintptr_t p = (uintptr_t)u;
    size_t lo = 0, hi = mv->nrefs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (mv->refs[mid].base <= p)
            lo = mid;
        else
            hi = mid;
    }
    const chunk_ref *r = &mv->refs[lo];
    return slot(mv->chunks[r->index], mv->new_size, (p - r->base) / mv->old_size);
}

static void move_users(eng *e, const rule_set *rs, const rule_map *m, size_t new_size)
{
    mover mv = {.nrefs = e->nchunks, .old_size = e->user_size, .new_size = new_size};
    mv.refs = onr_malloc(sizeof(*mv.refs) * (e->nchunks + 1));
    mv.chunks = onr_malloc(sizeof(*mv.chunks) * (e->capchunks + 1));
    for (size_t c = 0; c < e->nchunks; c++) {
        mv.refs[c] = (chunk_ref){(uintptr_t)e->chunks[c], c};
        mv.chunks[c] = onr_malloc(new_size * USERS_PER_CHUNK);
    }
    qsort(mv.refs, mv.nrefs, sizeof(*mv.refs), by_base);

    for (size_t c = 0; c < e->nchunks; c++)
        for (size_t i = 0; i < used_in(e, c); i++) {
            user *o = slot(e->chunks[c], e->user_size, i);
            user *n = slot(mv.chunks[c], new_size, i);
            memset(n, 0, new_size); /* the timer is set again afterwards */
            n->klen = o->klen;
            memcpy(n->key, o->key, sizeof(n->key)); /* a long key's heap copy changes hands */
            if (!merged(o)) {
                carry(e, rs, m, o->prof, n->prof);
                continue;
            }
            user *to;
            memcpy(n->prof, o->prof, sizeof(rule_hdr));
            memcpy(&to, o->prof + sizeof(rule_hdr), sizeof(to));
            to = moved(&mv, to);
            memcpy(n->prof + sizeof(rule_hdr), &to, sizeof(to));
        }
    for (size_t i = 0; i <= e->index_mask; i++)
        e->index[i].u = moved(&mv, e->index[i].u);
    if (e->aliases)
        for (size_t i = 0; i <= e->alias_mask; i++)
            if (e->aliases[i].k)
                e->aliases[i].k->u = moved(&mv, e->aliases[i].k->u);
    for (int i = 0; i < e->nxw; i++)
        e->xw[i].u = moved(&mv, e->xw[i].u);

    for (size_t c = 0; c < e->nchunks; c++)
        onr_free(e->chunks[c]);
    onr_free(e->chunks);
    onr_free(mv.refs);
    e->chunks = mv.chunks;
    e->user_size = new_size;
}

/* Every user's timer from its profile under the current rules, as a checkpoint load does. */
static void reschedule(eng *e)
{
    tmr_init(e->wheel, e->wheel->now_ms);
    for (size_t c = 0; c < e->nchunks; c++)
        for (size_t i = 0; i < used_in(e, c); i++) {
            user *u = slot(e->chunks[c], e->user_size, i);
            memset(&u->timer, 0, sizeof(u->timer));
            if (!merged(u))
                eng__schedule(e, u);
        }
}

/* ---- what the engine derives from the rules */

static void carry_counters(eng *e, const rule_set *rs, const rule_map *m)
{
    uint64_t *seg = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
    uint64_t *fires = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    uint64_t *held = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    for (int i = 0; i < rs->nsegments; i++)
        if (m->segment_from[i] >= 0)
            seg[i] = e->seg_sizes[m->segment_from[i]];
    for (int i = 0; i < rs->ntriggers; i++)
        if (m->trigger_from[i] >= 0) {
            fires[i] = e->trig_fires[m->trigger_from[i]];
            held[i] = e->trig_held[m->trigger_from[i]];
        }
    onr_free(e->seg_sizes);
    onr_free(e->trig_fires);
    onr_free(e->trig_held);
    e->seg_sizes = seg;
    e->trig_fires = fires;
    e->trig_held = held;

    onr_free(e->matched);
    onr_free(e->mark);
    e->matched = onr_calloc((size_t)rs->nmatchers + 1, sizeof(int));
    e->mark = onr_calloc((size_t)rs->nmatchers + 1, 1);
    e->nmatched = 0;
}

/* The watched users' records: kept for unchanged triggers and segments, fresh otherwise. */
static void carry_explain(eng *e, const rule_set *rs, const rule_map *m)
{
    const rule_set *old = e->rs;
    for (int w = 0; w < e->nxw; w++) {
        xwatch *x = &e->xw[w];
        xrec *xt = onr_calloc((size_t)rs->ntriggers + 1, sizeof(xrec));
        xrec *xs = onr_calloc((size_t)(rs->nsegments + 1) * XSEG_SLOTS, sizeof(xrec));
        for (int i = 0; i < rs->ntriggers; i++) {
            int j = m->trigger_from[i];
            if (j >= 0) {
                xt[i] = x->trig[j];
                memset(&x->trig[j], 0, sizeof(xrec));
            }
        }
        for (int i = 0; i < rs->nsegments; i++) {
            int j = m->segment_from[i];
            if (j < 0 || (m->segments_fresh >> i & 1))
                continue;
            memcpy(&xs[i * XSEG_SLOTS], &x->seg[j * XSEG_SLOTS], sizeof(xrec) * XSEG_SLOTS);
            memset(&x->seg[j * XSEG_SLOTS], 0, sizeof(xrec) * XSEG_SLOTS);
        }
        for (int j = 0; j < old->ntriggers; j++)
            onr_buf_free(&x->trig[j].last);
        for (int j = 0; j < old->nsegments * XSEG_SLOTS; j++)
            onr_buf_free(&x->seg[j].last);
        onr_free(x->trig);
        onr_free(x->seg);
        x->trig = xt;
        x->seg = xs;
    }
}

int eng_reload(eng *e, const rule_set *rs, char *err, size_t errlen)
{
    if (!rs) {
        snprintf(err, errlen, "no rules to reload");
        return ONR_E_INVALID;
    }
    if (rs == e->rs)
        return 0;
    rule_map m;
    rule_layout_map(e->rs, rs, &m);
    size_t user_size = (sizeof(user) + rs->layout.size + 7) & ~(size_t)7;
    if (!m.identity) {
        if (user_size == e->user_size)
            carry_in_place(e, rs, &m);
        else
            move_users(e, rs, &m, user_size);
    }
    carry_counters(e, rs, &m);
    carry_explain(e, rs, &m);
    e->rs = rs;
    /* a profile carried unchanged keeps its deadlines: its timer stands */
    if (!m.identity)
        reschedule(e);
    rule_map_free(&m);
    return 0;
}
