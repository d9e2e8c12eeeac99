/*
 * timers.c - the engine's hierarchical timer wheel: 4 levels of 256 slots (1 ms, 256 ms,
 * ~65 s, ~4.7 h per slot) plus an overflow list for deadlines past the top level. Adding and
 * cancelling are O(1) list splices; advancing skips empty slots with per-level bitmaps, so a
 * jump of weeks costs the timers it fires, not the milliseconds it crosses.
 */
#include "timers.h"

#include <assert.h>

/*
 * Placement rule (the one invariant everything rests on): a node whose effective deadline is
 * e sits at the lowest level k where e and now fall in the same 256^(k+1) ms block, in slot
 * (e / 256^k) % 256; when they differ above bit 32 it sits on the overflow list. The level
 * is therefore a function of (e, now) alone, so nodes with equal deadlines always share one
 * list and keep the order they were added in. A slot at level k > 0 never holds now's own
 * granule: when the clock enters a granule, that slot is cascaded down (top level first).
 *
 * The effective deadline is max(deadline_ms, now at add): a deadline already passed is due
 * now, fires at the next advance in the order added, and never moves the clock backwards.
 *
 * Times are mapped to uint64 keys by flipping the sign bit, which keeps their order and
 * makes shifts and masks well defined for every int64 value.
 */

#define SIGN_BIT (UINT64_C(1) << 63)
#define TOP_BITS (TMR_LEVELS * TMR_SLOT_BITS)
#define SLOT_MASK ((uint64_t)TMR_SLOTS - 1)
#define WORD_BITS 64

static uint64_t key(int64_t t)
{
    return (uint64_t)t ^ SIGN_BIT;
}

static int64_t unkey(uint64_t k)
{
    return (int64_t)(k ^ SIGN_BIT);
}

/* ---- lists: circular, with the slot's sentinel as head */

static void list_init(tmr_node *head)
{
    head->prev = head->next = head;
}

static bool list_empty(const tmr_node *head)
{
    return head->next == head;
}

static void list_append(tmr_node *head, tmr_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static void list_unlink(tmr_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Moves every node of from onto the empty list to, keeping their order. */
static void list_splice(tmr_node *from, tmr_node *to)
{
    list_init(to);
    if (list_empty(from))
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    list_init(from);
}

/* ---- placement */

/* Bits in used[] may outlive their slot's last node (tmr_cancel leaves them); scans clear
 * them lazily. A clear bit always means an empty slot. */
static void mark_used(tmr_wheel *w, int level, unsigned slot)
{
    w->used[level][slot / WORD_BITS] |= UINT64_C(1) << (slot % WORD_BITS);
}

static void place(tmr_wheel *w, tmr_node *n)
{
    int64_t due = ONR_MAX(n->deadline_ms, w->now_ms);
    uint64_t e = key(due);
    uint64_t diff = e ^ key(w->now_ms);

    if (diff >> TOP_BITS) {
        list_append(&w->overflow, n);
        return;
    }
    int level = 0;
    while (diff >> ((level + 1) * TMR_SLOT_BITS))
        level++;
    unsigned slot = (unsigned)((e >> (level * TMR_SLOT_BITS)) & SLOT_MASK);
    list_append(&w->slots[level][slot], n);
    mark_used(w, level, slot);
}

/* Re-places every node of head relative to the current clock. */
static void replace_all(tmr_wheel *w, tmr_node *head)
{
    tmr_node tmp;

    list_splice(head, &tmp);
    while (!list_empty(&tmp)) {
        tmr_node *n = tmp.next;
        list_unlink(n);
        place(w, n);
    }
}

/*
 * Moves the clock to t. The caller guarantees that no node is due in [now, t), so every
 * level whose block changed is empty and only the slots holding t's granules need cascading.
 */
static void move_to(tmr_wheel *w, int64_t t)
{
    uint64_t from = key(w->now_ms), to = key(t);

    w->now_ms = t;
    if ((from >> TOP_BITS) != (to >> TOP_BITS))
        replace_all(w, &w->overflow);
    for (int level = TMR_LEVELS - 1; level > 0; level--) {
        int shift = level * TMR_SLOT_BITS;
        if ((from >> shift) == (to >> shift))
            continue;
        replace_all(w, &w->slots[level][(to >> shift) & SLOT_MASK]);
    }
}

/* ---- finding the next due slot */

/* The first non-empty slot in [lo, hi] at level, or -1. Clears stale bits on the way. */
static int next_slot(tmr_wheel *w, int level, unsigned lo, unsigned hi)
{
    for (unsigned word = lo / WORD_BITS; word <= hi / WORD_BITS; word++) {
        uint64_t bits = w->used[level][word];
        if (word == lo / WORD_BITS)
            bits &= ~UINT64_C(0) << (lo % WORD_BITS);
        if (word == hi / WORD_BITS && hi % WORD_BITS != WORD_BITS - 1)
            bits &= (UINT64_C(1) << (hi % WORD_BITS + 1)) - 1;
        while (bits) {
            unsigned slot = word * WORD_BITS + (unsigned)__builtin_ctzll(bits);
            if (!list_empty(&w->slots[level][slot]))
                return (int)slot;
            w->used[level][word] &= ~(UINT64_C(1) << (slot % WORD_BITS));
            bits &= bits - 1;
        }
    }
    return -1;
}

static int64_t list_min(const tmr_node *head)
{
    int64_t min = INT64_MAX;

    for (const tmr_node *n = head->next; n != head; n = n->next)
        min = ONR_MIN(min, n->deadline_ms);
    return min;
}

/*
 * The earliest time <= limit at which the clock must stop: the exact time of a due level-0
 * slot, or the start of a higher slot (or the earliest overflow deadline) that needs
 * cascading first. Returns false when nothing is due by limit. Lower levels always hold
 * earlier deadlines than higher ones, so the first hit wins.
 */
static bool next_stop(tmr_wheel *w, int64_t limit, int64_t *stop)
{
    uint64_t now = key(w->now_ms), lim = key(limit);

    for (int level = 0; level < TMR_LEVELS; level++) {
        int shift = level * TMR_SLOT_BITS;
        uint64_t g = now >> shift, lg = lim >> shift;
        bool same_block = (g >> TMR_SLOT_BITS) == (lg >> TMR_SLOT_BITS);
        /* Above level 0, now's own slot is always empty (it was cascaded). */
        unsigned lo = (unsigned)(g & SLOT_MASK) + (level > 0);
        unsigned hi = same_block ? (unsigned)(lg & SLOT_MASK) : TMR_SLOTS - 1;
        if (lo <= hi) {
            int slot = next_slot(w, level, lo, hi);
            if (slot >= 0) {
                *stop = unkey(((g & ~SLOT_MASK) | (unsigned)slot) << shift);
                return true;
            }
        }
        if (same_block)
            return false;
    }
    if (list_empty(&w->overflow))
        return false;
    /* Scan the overflow only once limit reaches past the top level's block. */
    if ((now >> TOP_BITS) == (lim >> TOP_BITS))
        return false;
    int64_t min = list_min(&w->overflow);
    if (min > limit)
        return false;
    *stop = min;
    return true;
}

/* ---- public interface */

void tmr_init(tmr_wheel *w, int64_t now_ms)
{
    w->now_ms = now_ms;
    w->count = 0;
    for (int level = 0; level < TMR_LEVELS; level++) {
        for (int slot = 0; slot < TMR_SLOTS; slot++)
            list_init(&w->slots[level][slot]);
        for (int word = 0; word < TMR_SLOTS / WORD_BITS; word++)
            w->used[level][word] = 0;
    }
    list_init(&w->overflow);
}

void tmr_add(tmr_wheel *w, tmr_node *n, int64_t deadline_ms)
{
    assert(!tmr_pending(n));
    n->deadline_ms = deadline_ms;
    place(w, n);
    w->count++;
}

void tmr_cancel(tmr_wheel *w, tmr_node *n)
{
    if (!tmr_pending(n))
        return;
    list_unlink(n);
    w->count--;
}

void tmr_reschedule(tmr_wheel *w, tmr_node *n, int64_t deadline_ms)
{
    tmr_cancel(w, n);
    tmr_add(w, n, deadline_ms);
}

size_t tmr_advance(tmr_wheel *w, int64_t to_ms, void (*fire)(tmr_node *n, void *ctx), void *ctx)
{
    return tmr_advance_grouped(w, to_ms, fire, NULL, ctx);
}

size_t tmr_advance_grouped(tmr_wheel *w, int64_t to_ms, void (*fire)(tmr_node *n, void *ctx),
                           void (*done)(int64_t at_ms, void *ctx), void *ctx)
{
    size_t fired = 0;
    int64_t stop;

    if (to_ms < w->now_ms)
        return 0;
    /* Re-searched after every slot: fire may have added or cancelled anything (but must not
     * call tmr_advance on the same wheel). */
    while (next_stop(w, to_ms, &stop)) {
        if (stop > w->now_ms)
            move_to(w, stop);
        /* Nodes fire from the head; ones added at (or before) this time join the tail. */
        tmr_node *head = &w->slots[0][key(stop) & SLOT_MASK];
        while (!list_empty(head)) {
            tmr_node *n = head->next;
            list_unlink(n);
            w->count--;
            fired++;
            fire(n, ctx);
        }
        if (done)
            done(stop > w->now_ms ? stop : w->now_ms, ctx);
    }
    if (to_ms > w->now_ms)
        move_to(w, to_ms);
    return fired;
}

/* Like next_stop, but leaves stale bits alone (the wheel is const here). */
int64_t tmr_next_deadline(const tmr_wheel *w)
{
    uint64_t now = key(w->now_ms);

    for (int level = 0; level < TMR_LEVELS; level++) {
        unsigned lo = (unsigned)((now >> (level * TMR_SLOT_BITS)) & SLOT_MASK);
        for (unsigned slot = lo; slot < TMR_SLOTS; slot++) {
            uint64_t bit = UINT64_C(1) << (slot % WORD_BITS);
            if (!(w->used[level][slot / WORD_BITS] & bit))
                continue;
            if (!list_empty(&w->slots[level][slot]))
                return list_min(&w->slots[level][slot]);
        }
    }
    return list_min(&w->overflow);
}
