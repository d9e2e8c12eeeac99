/*
 * timers.h - a hierarchical timer wheel for the engine's deadlines (idle, absence, session
 * end, segment re-evaluation). Intrusive: the node lives inside the owner's struct, so
 * adding and cancelling are O(1) and allocate nothing. Time is the engine's clock
 * (int64 ms), moved only by tmr_advance; the wheel never reads the wall clock.
 *
 * Deterministic: the same sequence of calls fires the same nodes in the same order.
 */
#ifndef ONR_TIMERS_H
#define ONR_TIMERS_H

#include "base/base.h"

typedef struct tmr_node {
    struct tmr_node *prev, *next; /* NULL/NULL when not scheduled */
    int64_t deadline_ms;
} tmr_node;

#define TMR_LEVELS 4
#define TMR_SLOT_BITS 8
#define TMR_SLOTS (1 << TMR_SLOT_BITS)

typedef struct tmr_wheel {
    int64_t now_ms;
    size_t count;
    tmr_node slots[TMR_LEVELS][TMR_SLOTS];     /* list heads (sentinels) */
    tmr_node overflow;                         /* deadlines beyond the top level */
    uint64_t used[TMR_LEVELS][TMR_SLOTS / 64]; /* slots that may be non-empty */
} tmr_wheel;

/* Starts the wheel at now_ms. */
void tmr_init(tmr_wheel *w, int64_t now_ms);
/* Schedules n at deadline_ms (a deadline <= now fires at the next advance). n must not be
 * scheduled; use tmr_cancel first or tmr_reschedule. */
void tmr_add(tmr_wheel *w, tmr_node *n, int64_t deadline_ms);
/* Unschedules n; a no-op when it is not scheduled. */
void tmr_cancel(tmr_wheel *w, tmr_node *n);
void tmr_reschedule(tmr_wheel *w, tmr_node *n, int64_t deadline_ms);
static inline bool tmr_pending(const tmr_node *n)
{
    return n->next != NULL;
}

/*
 * Moves the clock to to_ms and calls fire(n, ctx) for every node whose deadline is <= to_ms,
 * in deadline order (ties: in the order added). While fire runs, w->now_ms is the node's
 * deadline, and fire may add, cancel or reschedule any node, including n. Returns the number
 * fired. to_ms lower than now is a no-op.
 */
size_t tmr_advance(tmr_wheel *w, int64_t to_ms, void (*fire)(tmr_node *n, void *ctx), void *ctx);

/* Like tmr_advance, and calls done(at, ctx) after the last node due at each millisecond
 * has fired, so that a caller can handle everything due at one time together (done may
 * add or cancel nodes too; nodes it adds at that time fire next, followed by done again). */
size_t tmr_advance_grouped(tmr_wheel *w, int64_t to_ms, void (*fire)(tmr_node *n, void *ctx),
                           void (*done)(int64_t at_ms, void *ctx), void *ctx);

/* The earliest pending deadline, or INT64_MAX when none. O(slots) in the worst case. */
int64_t tmr_next_deadline(const tmr_wheel *w);

#endif
