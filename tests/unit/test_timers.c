/*
 * test_timers.c - unit tests for the timer wheel (src/engine/timers.c): deadline order across
 * every level and the overflow, ties in insertion order, changes made from inside fire, past
 * deadlines, far jumps and the clock never moving backwards.
 */
#include "engine/timers.h"

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdlib.h>

/* 2026-01-01T00:00:00Z: absolute times of the size the engine really sees. */
#define T0 INT64_C(1767225600000)

typedef struct item {
    tmr_node node;
    size_t seq; /* order of tmr_add calls */
    int fires;
    int64_t fired_at;
} item;

typedef struct firelog {
    tmr_wheel *w;
    item **order;
    int64_t *at; /* now_ms at each fire */
    size_t len, cap;
} firelog;

static item *item_of(tmr_node *n)
{
    return (item *)((char *)n - offsetof(item, node));
}

static void record(tmr_node *n, void *ctx)
{
    firelog *log = ctx;
    item *it = item_of(n);

    it->fires++;
    it->fired_at = log->w->now_ms;
    if (log->len == log->cap) {
        log->cap = log->cap ? 2 * log->cap : 64;
        log->order = realloc(log->order, log->cap * sizeof(*log->order));
        log->at = realloc(log->at, log->cap * sizeof(*log->at));
        cr_assert(log->order && log->at);
    }
    log->at[log->len] = it->fired_at;
    log->order[log->len++] = it;
}

static void log_free(firelog *log)
{
    free(log->order);
    free(log->at);
}

static void add(tmr_wheel *w, item *it, size_t seq, int64_t deadline_ms)
{
    it->seq = seq;
    tmr_add(w, &it->node, deadline_ms);
}

/* splitmix64: deterministic, so a failure reproduces. */
static uint64_t rnd(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Every fired item fired once, at its deadline, after every earlier (deadline, seq). */
static void check_order(const firelog *log)
{
    for (size_t i = 0; i < log->len; i++) {
        const item *it = log->order[i];
        cr_assert_eq(it->fires, 1, "item %zu fired %d times", it->seq, it->fires);
        cr_assert_eq(it->fired_at, it->node.deadline_ms, "item %zu fired at %lld, due %lld",
                     it->seq, (long long)it->fired_at, (long long)it->node.deadline_ms);
        if (i == 0)
            continue;
        const item *prev = log->order[i - 1];
        int64_t pd = prev->node.deadline_ms, d = it->node.deadline_ms;
        cr_assert(pd < d || (pd == d && prev->seq < it->seq),
                  "fired %zu (due %lld) after %zu (due %lld)", it->seq, (long long)d, prev->seq,
                  (long long)pd);
    }
}

Test(timers, timers_fire_in_deadline_order)
{
    enum { N = 20000 };
    /* Offsets land on each level and on the overflow (level 3 ends at 2^32 ms). */
    static const int64_t spans[] = {256, 65536, INT64_C(1) << 24, INT64_C(1) << 32,
                                    INT64_C(1) << 36};
    static tmr_wheel w;
    item *items = calloc(N, sizeof(*items));
    int64_t *sorted = malloc(N * sizeof(*sorted));
    firelog log = {.w = &w};
    uint64_t seed = 42;

    cr_assert(items && sorted);
    tmr_init(&w, T0 + 12345);
    for (size_t i = 0; i < N; i++) {
        int64_t d;
        if (i > 0 && rnd(&seed) % 8 == 0) /* some ties */
            d = items[rnd(&seed) % i].node.deadline_ms;
        else
            d = w.now_ms + (int64_t)(rnd(&seed) % (uint64_t)spans[rnd(&seed) % 5]);
        add(&w, &items[i], i, d);
        sorted[i] = d;
    }
    cr_assert_eq(w.count, N);
    qsort(sorted, N, sizeof(*sorted), cmp_i64);

    /* Mix single milliseconds, seconds, hours and weeks, so both paths are exercised. */
    static const uint64_t steps[] = {16, 5000, UINT64_C(1) << 26, UINT64_C(1) << 33};
    size_t total = 0, due = 0;
    while (w.count > 0) {
        int64_t to = w.now_ms + 1 + (int64_t)(rnd(&seed) % steps[rnd(&seed) % 4]);
        total += tmr_advance(&w, to, record, &log);
        cr_assert_eq(w.now_ms, to);
        while (due < N && sorted[due] <= to)
            due++;
        cr_assert_eq(log.len, due, "after advancing to %lld: %zu fired, %zu due", (long long)to,
                     log.len, due);
    }
    cr_assert_eq(total, N);
    cr_assert_eq(log.len, N);
    check_order(&log);
    log_free(&log);
    free(sorted);
    free(items);
}

Test(timers, small_steps_cross_block_boundaries_exactly)
{
    /* Start just before a 2^32 ms boundary, which is also a boundary of every level. */
    const int64_t edge = ((T0 >> 32) + 1) << 32;
    static tmr_wheel w;
    item items[600] = {0};
    firelog log = {.w = &w};

    tmr_init(&w, edge - 300);
    for (size_t i = 0; i < 600; i++)
        add(&w, &items[i], i, edge - 299 + (int64_t)i);
    for (int64_t t = edge - 299; t <= edge + 300; t++) {
        size_t before = log.len;
        cr_assert_eq(tmr_advance(&w, t, record, &log), 1, "advance to edge%+lld",
                     (long long)(t - edge));
        cr_assert_eq(log.order[before]->node.deadline_ms, t);
    }
    check_order(&log);
    cr_assert_eq(w.count, 0);
    log_free(&log);
}

Test(timers, equal_deadlines_fire_in_insertion_order)
{
    /* Far enough out to start on the overflow and be cascaded through every level. */
    const int64_t due = T0 + (INT64_C(5) << 32) + 777;
    static tmr_wheel w;
    item same[100] = {0}, other[100] = {0};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    for (size_t i = 0; i < 50; i++) {
        add(&w, &same[i], i, due);
        add(&w, &other[i], 1000 + i, due - 1 - (int64_t)i * 1000);
    }
    /* By now the first 50 sit on level 0; the rest join behind them. */
    cr_assert_eq(tmr_advance(&w, due - 1, record, &log), 50);
    for (size_t i = 50; i < 100; i++) {
        add(&w, &same[i], i, due);
        add(&w, &other[i], 1000 + i, due + 1);
    }
    cr_assert_eq(tmr_advance(&w, due, record, &log), 100);
    for (size_t i = 0; i < 100; i++)
        cr_assert_eq(log.order[50 + i], &same[i], "position %zu", i);
    check_order(&log);
    cr_assert_eq(w.count, 50);
    log_free(&log);
}

Test(timers, cancel_prevents_fire)
{
    static tmr_wheel w;
    item items[5] = {0};
    const int64_t offsets[5] = {10, 1000, 200000, INT64_C(1) << 30, INT64_C(1) << 33};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    for (size_t i = 0; i < 5; i++)
        add(&w, &items[i], i, T0 + offsets[i]);
    tmr_cancel(&w, &items[1].node);
    tmr_cancel(&w, &items[4].node);
    tmr_cancel(&w, &items[4].node); /* twice: a no-op */
    cr_assert_not(tmr_pending(&items[4].node));
    cr_assert_eq(w.count, 3);

    cr_assert_eq(tmr_advance(&w, T0 + (INT64_C(1) << 34), record, &log), 3);
    cr_assert_eq(items[1].fires, 0);
    cr_assert_eq(items[4].fires, 0);
    cr_assert_eq(items[0].fires + items[2].fires + items[3].fires, 3);
    cr_assert_eq(w.count, 0);
    log_free(&log);
}

/* Fires and cancels its partner, which is due at the same millisecond. */
typedef struct canceller {
    tmr_wheel *w;
    item *victim;
    firelog log;
} canceller;

static void cancel_victim(tmr_node *n, void *ctx)
{
    canceller *c = ctx;
    record(n, &c->log);
    tmr_cancel(c->w, &c->victim->node);
}

Test(timers, cancel_from_callback_stops_a_node_due_at_the_same_time)
{
    static tmr_wheel w;
    item a = {0}, b = {0};
    canceller c = {.w = &w, .victim = &b, .log = {.w = &w}};

    tmr_init(&w, T0);
    add(&w, &a, 0, T0 + 70000);
    add(&w, &b, 1, T0 + 70000);
    cr_assert_eq(tmr_advance(&w, T0 + 80000, cancel_victim, &c), 1);
    cr_assert_eq(a.fires, 1);
    cr_assert_eq(b.fires, 0);
    cr_assert_not(tmr_pending(&b.node));
    log_free(&c.log);
}

/* A periodic timer: every second, five times, then it stops. */
static void every_second(tmr_node *n, void *ctx)
{
    firelog *log = ctx;
    record(n, log);
    if (item_of(n)->fires < 5)
        tmr_reschedule(log->w, n, log->w->now_ms + 1000);
}

/* Pushes itself 10 s later the first time it fires. */
static void snooze_once(tmr_node *n, void *ctx)
{
    firelog *log = ctx;
    record(n, log);
    if (item_of(n)->fires == 1)
        tmr_reschedule(log->w, n, log->w->now_ms + 10000);
}

Test(timers, reschedule_from_callback)
{
    static tmr_wheel w;
    item tick = {0}, snooze = {0}, moved = {0};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    add(&w, &tick, 0, T0 + 1000);
    cr_assert_eq(tmr_advance(&w, T0 + 60000, every_second, &log), 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(log.at[i], T0 + 1000 * (int64_t)(i + 1));
    cr_assert_not(tmr_pending(&tick.node));
    log_free(&log);

    /* Rescheduled past to_ms: still pending after the advance, fires on a later one. */
    firelog log2 = {.w = &w};
    add(&w, &snooze, 1, T0 + 61000);
    add(&w, &moved, 2, T0 + 62000);
    tmr_reschedule(&w, &moved.node, T0 + 61500); /* from outside: earlier */
    cr_assert_eq(tmr_advance(&w, T0 + 65000, snooze_once, &log2), 2);
    cr_assert_eq(log2.order[0], &snooze);
    cr_assert_eq(log2.order[1], &moved);
    cr_assert_eq(moved.fired_at, T0 + 61500);
    cr_assert(tmr_pending(&snooze.node));
    cr_assert_eq(tmr_next_deadline(&w), T0 + 71000);
    cr_assert_eq(tmr_advance(&w, T0 + 71000, snooze_once, &log2), 1);
    cr_assert_eq(snooze.fires, 2);
    cr_assert_eq(snooze.fired_at, T0 + 71000);
    log_free(&log2);
}

/* The first node to fire schedules four more, three of them due within this advance. */
typedef struct spawner {
    firelog log;
    item *kids;
} spawner;

static void spawn(tmr_node *n, void *ctx)
{
    spawner *s = ctx;
    tmr_wheel *w = s->log.w;
    record(n, &s->log);
    if (s->log.len == 1) {
        int64_t now = w->now_ms;
        add(w, &s->kids[0], 10, now);         /* same millisecond: after n, this advance */
        add(w, &s->kids[1], 11, now + 300);   /* later: still this advance */
        add(w, &s->kids[2], 12, now - 50);    /* already past: due now, after kids[0] */
        add(w, &s->kids[3], 13, now + 90000); /* beyond to_ms: waits */
    }
}

Test(timers, add_during_fire_fires_in_same_advance_when_due)
{
    static tmr_wheel w;
    item first = {0}, other = {0}, kids[4] = {0};
    spawner s = {.log = {.w = &w}, .kids = kids};

    tmr_init(&w, T0);
    add(&w, &first, 0, T0 + 100);
    add(&w, &other, 1, T0 + 200);
    cr_assert_eq(tmr_advance(&w, T0 + 1000, spawn, &s), 5);
    item *want[] = {&first, &kids[0], &kids[2], &other, &kids[1]};
    for (size_t i = 0; i < ONR_ARRAY_LEN(want); i++)
        cr_assert_eq(s.log.order[i], want[i], "position %zu is item %zu", i, s.log.order[i]->seq);
    cr_assert_eq(kids[0].fired_at, T0 + 100);
    cr_assert_eq(kids[2].fired_at, T0 + 100); /* the clock did not go back */
    cr_assert_eq(kids[1].fired_at, T0 + 400);
    cr_assert(tmr_pending(&kids[3].node));
    cr_assert_eq(w.count, 1);
    log_free(&s.log);
}

Test(timers, deadline_in_past_fires_on_next_advance)
{
    static tmr_wheel w;
    item old = {0}, now = {0}, later = {0};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    add(&w, &now, 0, T0);
    add(&w, &old, 1, T0 - 5000);
    add(&w, &later, 2, T0 + 1);
    cr_assert(tmr_pending(&old.node));
    /* Advancing to the current time is enough. */
    cr_assert_eq(tmr_advance(&w, T0, record, &log), 2);
    cr_assert_eq(log.order[0], &now);
    cr_assert_eq(log.order[1], &old);
    cr_assert_eq(old.fired_at, T0);
    cr_assert_eq(w.now_ms, T0);
    cr_assert(tmr_pending(&later.node));

    /* Added in the past after the clock moved: fires next time, before later deadlines. */
    add(&w, &old, 3, T0 - 86400000);
    old.fires = 0;
    cr_assert_eq(tmr_advance(&w, T0 + 5, record, &log), 2);
    cr_assert_eq(log.order[2], &old);
    cr_assert_eq(log.order[3], &later);
    cr_assert_eq(w.now_ms, T0 + 5);
    log_free(&log);
}

Test(timers, advance_backwards_is_noop)
{
    static tmr_wheel w;
    item it = {0};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    add(&w, &it, 0, T0 + 10);
    cr_assert_eq(tmr_advance(&w, T0 + 5, record, &log), 0);
    cr_assert_eq(tmr_advance(&w, T0 - 1000, record, &log), 0);
    cr_assert_eq(tmr_advance(&w, INT64_MIN, record, &log), 0);
    cr_assert_eq(w.now_ms, T0 + 5);
    cr_assert(tmr_pending(&it.node));
    cr_assert_eq(w.count, 1);
    cr_assert_eq(tmr_advance(&w, T0 + 10, record, &log), 1);
    cr_assert_eq(it.fired_at, T0 + 10);
    log_free(&log);
}

Test(timers, next_deadline_reports_earliest)
{
    static tmr_wheel w;
    item far = {0}, mid = {0}, near = {0}, past = {0};
    firelog log = {.w = &w};

    tmr_init(&w, T0);
    cr_assert_eq(tmr_next_deadline(&w), INT64_MAX);
    add(&w, &far, 0, T0 + (INT64_C(1) << 33)); /* overflow */
    cr_assert_eq(tmr_next_deadline(&w), T0 + (INT64_C(1) << 33));
    add(&w, &mid, 1, T0 + 100000); /* level 2 */
    cr_assert_eq(tmr_next_deadline(&w), T0 + 100000);
    add(&w, &near, 2, T0 + 3); /* level 0 */
    cr_assert_eq(tmr_next_deadline(&w), T0 + 3);
    tmr_cancel(&w, &near.node);
    cr_assert_eq(tmr_next_deadline(&w), T0 + 100000);
    cr_assert_eq(tmr_advance(&w, T0 + 100000, record, &log), 1);
    cr_assert_eq(tmr_next_deadline(&w), T0 + (INT64_C(1) << 33));
    add(&w, &past, 3, T0 - 7);
    cr_assert_eq(tmr_next_deadline(&w), T0 - 7);
    cr_assert_eq(tmr_advance(&w, T0 + (INT64_C(1) << 34), record, &log), 2);
    cr_assert_eq(tmr_next_deadline(&w), INT64_MAX);
    log_free(&log);
}

Test(timers, far_jump_is_fast_enough)
{
    enum { N = 1000000 };
    const int64_t span = 60 * ONR_DAY_MS;
    static tmr_wheel w;
    item *items = calloc(N, sizeof(*items));
    int64_t *sorted = malloc(N * sizeof(*sorted));
    firelog log = {.w = &w};
    uint64_t seed = 7;

    cr_assert(items && sorted);
    tmr_init(&w, T0 + 999);
    for (size_t i = 0; i < N; i++) {
        int64_t d = w.now_ms + 1 + (int64_t)(rnd(&seed) % (uint64_t)span);
        add(&w, &items[i], i, d);
        sorted[i] = d;
    }
    qsort(sorted, N, sizeof(*sorted), cmp_i64);
    /* Half-way first, then the rest in one jump. */
    size_t half = tmr_advance(&w, sorted[N / 2], record, &log);
    cr_assert_geq(half, N / 2 + 1);
    cr_assert_eq(tmr_advance(&w, T0 + 999 + span, record, &log), N - half);
    cr_assert_eq(log.len, N);
    cr_assert_eq(w.count, 0);
    check_order(&log);
    log_free(&log);
    free(sorted);
    free(items);
}
