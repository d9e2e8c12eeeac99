/*
 * remap.c - carrying user profiles from one rule set's layout to another's, for a hot
 * reload: which field of the new layout takes which field of the old (matched by the
 * identities the compiler gives them, never by offset), and the copy of one profile.
 */
#include "rules_int.h"

#include <string.h>

typedef struct planner {
    rule_map *m;
    int cap;
    int in_place; /* moves that leave their field where it was */
} planner;

static void add(planner *p, rule_move mv, bool same_place)
{
    rule_map *m = p->m;
    if (m->nmoves == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 32;
        m->moves = onr_realloc(m->moves, sizeof(*m->moves) * (size_t)p->cap);
    }
    m->moves[m->nmoves++] = mv;
    p->in_place += same_place;
}

static void add_bytes(planner *p, int from, int to, int len)
{
    add(p, (rule_move){.kind = RMOVE_BYTES, .from = from, .to = to, .len = len}, from == to);
}

static void add_bit(planner *p, int from, int from_bit, int to, int to_bit)
{
    add(p,
        (rule_move){
            .kind = RMOVE_BIT, .from = from, .to = to, .from_bit = from_bit, .to_bit = to_bit},
        from == to && from_bit == to_bit);
}

/* Profile fields of a rule set, counted the way rule_layout_map plans them. */
static int nfields(const rule_set *rs)
{
    int n = 1 + rs->nsegments + rs->nwindows + rs->nseqs + rs->layout.ntraits +
            (rs->layout.off_path >= 0);
    for (int i = 0; i < rs->nmatchers; i++) {
        const rule_matcher *m = &rs->matchers[i];
        n += (m->off_count >= 0) + (m->off_first >= 0) + (m->off_last >= 0);
    }
    for (int i = 0; i < rs->ntriggers; i++) {
        const rule_trigger *t = &rs->triggers[i];
        n += (t->limit == LIMIT_COOLDOWN) + (t->off_pending >= 0) + (t->bit_fired >= 0) +
             (t->bit_idle >= 0);
        if (t->limit == LIMIT_ONCE_PER)
            n += 1 + (t->bit_once == 0); /* its bit; the group's window number once */
    }
    return n;
}

enum { F_COUNT, F_FIRST, F_LAST };

static int matcher_field(const rule_matcher *m, int f)
{
    return f == F_COUNT ? m->off_count : f == F_FIRST ? m->off_first : m->off_last;
}

/* The old matcher with the same ident that keeps field f (the same index first). */
static int find_matcher(const rule_set *from, int same, uint64_t ident, int f)
{
    if (same < from->nmatchers && from->matchers[same].ident == ident &&
        matcher_field(&from->matchers[same], f) >= 0)
        return same;
    for (int i = 0; i < from->nmatchers; i++)
        if (from->matchers[i].ident == ident && matcher_field(&from->matchers[i], f) >= 0)
            return i;
    return -1;
}

static int find_window(const rule_set *from, int same, uint64_t ident)
{
    if (same < from->nwindows && from->windows[same].ident == ident)
        return same;
    for (int i = 0; i < from->nwindows; i++)
        if (from->windows[i].ident == ident)
            return i;
    return -1;
}

static int find_seq(const rule_set *from, int same, uint64_t ident)
{
    if (same < from->nseqs && from->seqs[same].ident == ident)
        return same;
    for (int i = 0; i < from->nseqs; i++)
        if (from->seqs[i].ident == ident)
            return i;
    return -1;
}

static void map_triggers(planner *p, const rule_set *from, const rule_set *to)
{
    rule_map *m = p->m;
    for (int i = 0; i < to->ntriggers; i++) {
        const rule_trigger *t = &to->triggers[i];
        m->trigger_from[i] = -1;
        for (int j = 0; j < from->ntriggers; j++)
            if (strcmp(from->triggers[j].name, t->name) == 0) {
                if (from->triggers[j].ident == t->ident)
                    m->trigger_from[i] = j;
                break;
            }
        int j = m->trigger_from[i];
        if (j < 0)
            continue;
        /* the same ident: the same on, limit and durations, so the same kinds of fields */
        const rule_trigger *o = &from->triggers[j];
        if (t->limit == LIMIT_COOLDOWN)
            add_bytes(p, o->off_last_fire, t->off_last_fire, 8);
        if (t->off_pending >= 0 && o->off_pending >= 0)
            add_bytes(p, o->off_pending, t->off_pending, 8);
        if (t->bit_fired >= 0 && o->bit_fired >= 0)
            add_bit(p, from->layout.off_bits, o->bit_fired, to->layout.off_bits, t->bit_fired);
        if (t->bit_idle >= 0 && o->bit_idle >= 0)
            add_bit(p, from->layout.off_bits, o->bit_idle, to->layout.off_bits, t->bit_idle);
        if (t->limit != LIMIT_ONCE_PER)
            continue;
        add_bit(p, o->off_last_fire + 4, o->bit_once, t->off_last_fire + 4, t->bit_once);
        /* the group's window number, once: every kept trigger of a group of length D comes
         * from the one old group of length D */
        bool done = false;
        for (int k = 0; k < i && !done; k++)
            done = m->trigger_from[k] >= 0 && to->triggers[k].limit == LIMIT_ONCE_PER &&
                   to->triggers[k].off_last_fire == t->off_last_fire;
        if (!done)
            add_bytes(p, o->off_last_fire, t->off_last_fire, 4);
    }
}

void rule_layout_map(const rule_set *from, const rule_set *to, rule_map *out)
{
    memset(out, 0, sizeof(*out));
    planner p = {.m = out};
    const rule_layout *LF = &from->layout, *LT = &to->layout;
    out->from_size = LF->size;
    out->to_size = LT->size;
    out->trigger_from = onr_malloc(sizeof(int) * (size_t)(to->ntriggers + 1));
    out->segment_from = onr_malloc(sizeof(int) * (size_t)(to->nsegments + 1));

    add_bytes(&p, 0, 0, (int)sizeof(rule_hdr));
    for (int i = 0; i < to->nsegments; i++) {
        const rule_segment *s = &to->segments[i];
        out->segment_from[i] = -1;
        for (int j = 0; j < from->nsegments; j++)
            if (strcmp(from->segments[j].name, s->name) == 0) {
                out->segment_from[i] = j;
                break;
            }
        int j = out->segment_from[i];
        if (j >= 0)
            add_bit(&p, LF->off_segments, j, LT->off_segments, i);
        if (j < 0 || from->segments[j].ident != s->ident)
            out->segments_fresh |= UINT64_C(1) << i;
    }
    for (int i = 0; i < to->nmatchers; i++) {
        const rule_matcher *m = &to->matchers[i];
        for (int f = F_COUNT; f <= F_LAST; f++) {
            int off = matcher_field(m, f);
            int j = off >= 0 ? find_matcher(from, i, m->ident, f) : -1;
            if (j >= 0)
                add_bytes(&p, matcher_field(&from->matchers[j], f), off, f == F_COUNT ? 4 : 8);
        }
    }
    for (int i = 0; i < to->nwindows; i++) {
        const rule_window *w = &to->windows[i];
        int j = find_window(from, i, w->ident);
        if (j >= 0)
            add(&p,
                (rule_move){.kind = RMOVE_WINDOW,
                            .from = from->windows[j].off,
                            .to = w->off,
                            .cap = w->cap},
                from->windows[j].off == w->off && from->windows[j].cap == w->cap);
    }
    for (int i = 0; i < to->nseqs; i++) {
        const rule_seq *q = &to->seqs[i];
        int j = find_seq(from, i, q->ident);
        if (j >= 0)
            add_bytes(&p, from->seqs[j].off, q->off, 8 * q->nsteps);
    }
    for (int i = 0; i < LT->ntraits; i++)
        for (int j = 0; j < LF->ntraits; j++)
            if (strcmp(to->schema.traits[i], from->schema.traits[j]) == 0) {
                size_t slot = sizeof(rule_trait_slot);
                add_bytes(&p, LF->off_traits + (int)(slot * (size_t)j),
                          LT->off_traits + (int)(slot * (size_t)i), (int)slot);
                break;
            }
    if (LF->off_path >= 0 && LT->off_path >= 0)
        add(&p,
            (rule_move){
                .kind = RMOVE_PATH, .from = LF->off_path, .to = LT->off_path, .cap = LT->path_len},
            LF->off_path == LT->off_path && LF->path_len == LT->path_len);
    map_triggers(&p, from, to);

    /* every field of both carried in place, one to one, and no segment to evaluate again */
    int n = nfields(to);
    out->identity = LF->size == LT->size && out->segments_fresh == 0 && p.in_place == out->nmoves &&
                    out->nmoves == n && nfields(from) == n;
}

void rule_map_apply(const rule_map *m, const uint8_t *from, uint8_t *to)
{
    memset(to, 0, m->to_size);
    for (int i = 0; i < m->nmoves; i++) {
        const rule_move *mv = &m->moves[i];
        switch (mv->kind) {
        case RMOVE_BYTES:
            memcpy(to + mv->to, from + mv->from, (size_t)mv->len);
            break;
        case RMOVE_BIT:
            if (rp_bit(from, mv->from, mv->from_bit))
                rp_set_bit(to, mv->to, mv->to_bit, true);
            break;
        case RMOVE_WINDOW: {
            /* the newest timestamps, as a window that keeps cap of them would hold */
            uint32_t len = rp_u32(from, mv->from), n = 0;
            const int64_t *ts = (const int64_t *)(const void *)(from + mv->from + 8);
            int64_t *out = (int64_t *)(void *)(to + mv->to + 8);
            for (uint32_t k = 0; k < len; k++) {
                if (n < (uint32_t)mv->cap) {
                    out[n++] = ts[k];
                    continue;
                }
                uint32_t oldest = 0;
                for (uint32_t j = 1; j < n; j++)
                    if (out[j] < out[oldest])
                        oldest = j;
                if (ts[k] > out[oldest])
                    out[oldest] = ts[k];
            }
            rp_set_u32(to, mv->to, n);
            break;
        }
        case RMOVE_PATH: {
            uint32_t len = rp_u32(from, mv->from);
            uint32_t k = ONR_MIN(len, (uint32_t)mv->cap);
            memcpy(to + mv->to + 4, from + mv->from + 4 + 4 * (size_t)(len - k), 4 * (size_t)k);
            rp_set_u32(to, mv->to, k);
            break;
        }
        }
    }
}

void rule_map_free(rule_map *m)
{
    onr_free(m->moves);
    onr_free(m->trigger_from);
    onr_free(m->segment_from);
    memset(m, 0, sizeof(*m));
}
