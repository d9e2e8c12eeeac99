/*
 * test_dedup.c - unit tests for the recent-messageId set (src/track/dedup.c): membership,
 * the age window, the count bound dropping the oldest first, concurrent use, and the claims
 * of messages being stored; sets grown as they fill and sets sized ahead alike.
 */
#include "track/dedup.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define T0 INT64_C(1767225600000)

/* Both kinds of set: grown as it fills, and sized ahead. */
static trk_dedup *(*const makers[2])(size_t, int64_t) = {trk_dedup_new, trk_dedup_new_sized};
#define EACH_KIND(k) for (int k = 0; k < 2; k++)

static uint64_t id(int i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "msg-%d", i);
    return trk_dedup_digest(buf, (size_t)n);
}

Test(dedup, an_added_id_is_seen_and_others_are_not)
{
    trk_dedup *d = trk_dedup_new(1000, ONR_DAY_MS);
    cr_assert_not(trk_dedup_seen(d, id(1), T0));
    cr_assert(trk_dedup_add(d, id(1), T0), "a new id was reported known");
    cr_assert(trk_dedup_seen(d, id(1), T0 + 1));
    cr_assert_not(trk_dedup_seen(d, id(2), T0 + 1));
    cr_assert_not(trk_dedup_add(d, id(1), T0 + 2), "a known id was reported new");
    trk_dedup_free(d);
}

Test(dedup, ids_older_than_the_window_are_forgotten)
{
    trk_dedup *d = trk_dedup_new(1000, ONR_HOUR_MS);
    trk_dedup_add(d, id(1), T0);
    cr_assert(trk_dedup_seen(d, id(1), T0 + ONR_HOUR_MS));
    cr_assert_not(trk_dedup_seen(d, id(1), T0 + ONR_HOUR_MS + 1));
    trk_dedup_free(d);
}

Test(dedup, the_count_bound_drops_the_oldest_first)
{
    /* 64 stripes of 2 ids each: 100,000 adds keep only the newest in every stripe */
    EACH_KIND(k)
    {
        trk_dedup *d = makers[k](64, ONR_DAY_MS);
        for (int i = 0; i < 100000; i++)
            trk_dedup_add(d, id(i), T0 + i);
        int kept_recent = 0, kept_old = 0;
        for (int i = 99900; i < 100000; i++)
            kept_recent += trk_dedup_seen(d, id(i), T0 + 100000);
        for (int i = 0; i < 1000; i++)
            kept_old += trk_dedup_seen(d, id(i), T0 + 100000);
        cr_assert_eq(kept_old, 0, "kind %d: %d old ids kept", k, kept_old);
        cr_assert_gt(kept_recent, 50, "kind %d: only %d of the newest 100 kept", k, kept_recent);
        trk_dedup_free(d);
    }
}

Test(dedup, many_ids_within_the_bound_are_all_kept)
{
    EACH_KIND(k)
    {
        trk_dedup *d = makers[k](200000, ONR_DAY_MS);
        for (int i = 0; i < 100000; i++)
            trk_dedup_add(d, id(i), T0);
        int kept = 0;
        for (int i = 0; i < 100000; i++)
            kept += trk_dedup_seen(d, id(i), T0 + 1);
        cr_assert_eq(kept, 100000, "kind %d", k);
        cr_assert_not(trk_dedup_seen(d, id(100001), T0 + 1));
        trk_dedup_free(d);
    }
}

/* Resident memory of this process, in bytes. */
static size_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    unsigned long size, res;
    cr_assert_eq(fscanf(f, "%lu %lu", &size, &res), 2);
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

Test(dedup, a_set_sized_ahead_has_its_tables_resident_and_its_lists_not)
{
    /* the server's: 10 million ids, 64 tables of 2 MiB and lists of 2.5 MB */
    size_t before = resident_bytes();
    trk_dedup *d = trk_dedup_new_sized(10 * 1000 * 1000, ONR_DAY_MS);
    size_t grew = resident_bytes() - before;
    cr_assert_geq(grew, (size_t)128 << 20, "tables resident: %zu bytes", grew);
    cr_assert_lt(grew, (size_t)(128 + 32) << 20, "lists not resident: %zu bytes", grew);
    for (int i = 0; i < 1000; i++)
        cr_assert(trk_dedup_add(d, id(i), T0));
    for (int i = 0; i < 1000; i++)
        cr_assert(trk_dedup_seen(d, id(i), T0 + 1));
    cr_assert_not(trk_dedup_seen(d, id(1000), T0 + 1));
    trk_dedup_free(d);
}

static trk_dedup *shared;

static void *adder(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < 20000; i++)
        trk_dedup_add(shared, id(base + i), T0);
    return NULL;
}

Test(dedup, concurrent_adds_are_all_kept)
{
    shared = trk_dedup_new(1000000, ONR_DAY_MS);
    pthread_t t[4];
    for (int k = 0; k < 4; k++)
        pthread_create(&t[k], NULL, adder, (void *)(intptr_t)(k * 20000));
    for (int k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    int kept = 0;
    for (int i = 0; i < 80000; i++)
        kept += trk_dedup_seen(shared, id(i), T0 + 1);
    cr_assert_eq(kept, 80000);
    trk_dedup_free(shared);
}

typedef struct copy_to {
    trk_dedup *d;
    size_t n;
} copy_to;

static bool copy_id(void *ctx, uint64_t digest, int64_t at_ms)
{
    copy_to *c = ctx;
    trk_dedup_add(c->d, digest, at_ms);
    c->n++;
    return true;
}

/* What a stopped server saves: every id with its time, so that a new set added to in that
 * order knows the same ids and forgets them when the first one would have. */
Test(dedup, each_id_added_to_a_new_set_rebuilds_it)
{
    trk_dedup *d = trk_dedup_new(100000, ONR_HOUR_MS);
    for (int i = 0; i < 5000; i++)
        trk_dedup_add(d, id(i), T0 + i);
    copy_to c = {trk_dedup_new(100000, ONR_HOUR_MS), 0};
    cr_assert(trk_dedup_each(d, copy_id, &c));
    cr_assert_eq(c.n, 5000);
    for (int i = 0; i < 5000; i++)
        cr_assert(trk_dedup_seen(c.d, id(i), T0 + 5000), "id %d lost", i);
    cr_assert_not(trk_dedup_seen(c.d, id(5000), T0 + 5000));
    /* the times came along: at T0 + 1 h + 100, ids 0..99 have left the window */
    cr_assert_not(trk_dedup_seen(c.d, id(99), T0 + ONR_HOUR_MS + 100));
    cr_assert(trk_dedup_seen(c.d, id(100), T0 + ONR_HOUR_MS + 100));
    trk_dedup_free(c.d);
    trk_dedup_free(d);
}

static bool stop_after_ten(void *ctx, uint64_t digest, int64_t at_ms)
{
    (void)digest;
    (void)at_ms;
    return ++*(int *)ctx < 10;
}

/* Stripes at their bound have dropped their oldest ids, so their rings have wrapped: what is
 * emitted is still each stripe's ids oldest first, and a new set built from it knows exactly
 * the ids the full one knows. An emit that fails stops the walk. */
Test(dedup, each_id_of_full_stripes_comes_out_in_order)
{
    EACH_KIND(k)
    {
        trk_dedup *d = makers[k](64 * 8, ONR_HOUR_MS);
        for (int i = 0; i < 5000; i++)
            trk_dedup_add(d, id(i), T0 + i);
        copy_to c = {makers[1 - k](64 * 8, ONR_HOUR_MS), 0};
        cr_assert(trk_dedup_each(d, copy_id, &c));
        cr_assert_gt(c.n, 0);
        size_t known = 0;
        for (int i = 0; i < 5000; i++) {
            bool was = trk_dedup_seen(d, id(i), T0 + 5000);
            known += was;
            cr_assert_eq(trk_dedup_seen(c.d, id(i), T0 + 5000), was, "kind %d, id %d", k, i);
        }
        cr_assert_eq(known, c.n);
        cr_assert(trk_dedup_seen(c.d, id(4999), T0 + 5000));
        cr_assert_not(trk_dedup_seen(c.d, id(0), T0 + 5000));
        int emitted = 0;
        cr_assert_not(trk_dedup_each(d, stop_after_ten, &emitted));
        cr_assert_eq(emitted, 10);
        trk_dedup_free(c.d);
        trk_dedup_free(d);
    }
}

/* A claimed id is busy until settled: stored, it is then a resend; not stored (its request
 * failed), it can be claimed again. */
Test(dedup, a_claim_is_busy_until_settled_and_a_stored_one_is_then_seen)
{
    trk_dedup *d = trk_dedup_new(1000, ONR_DAY_MS);
    cr_assert_eq(trk_dedup_claim(d, id(1), T0), TRK_CLAIMED);
    cr_assert_eq(trk_dedup_claim(d, id(1), T0 + 1), TRK_BUSY);
    cr_assert_not(trk_dedup_seen(d, id(1), T0 + 1), "a claim is not yet stored");
    cr_assert_eq(trk_dedup_claim(d, id(2), T0 + 1), TRK_CLAIMED, "other ids are not held up");

    trk_dedup_settle(d, id(1), true, T0 + 2);
    cr_assert_eq(trk_dedup_claim(d, id(1), T0 + 3), TRK_SEEN);
    cr_assert(trk_dedup_seen(d, id(1), T0 + 3));

    trk_dedup_settle(d, id(2), false, T0 + 4);
    cr_assert_not(trk_dedup_seen(d, id(2), T0 + 4));
    cr_assert_eq(trk_dedup_claim(d, id(2), T0 + 5), TRK_CLAIMED, "a failed store can be retried");
    trk_dedup_settle(d, id(2), true, T0 + 6);

    /* the window still ages out what was stored */
    cr_assert_eq(trk_dedup_claim(d, id(1), T0 + 2 + ONR_DAY_MS + 1), TRK_CLAIMED);
    trk_dedup_free(d);
}

/* Many claims at once (a burst of batches in flight) grow the busy table, and settling them
 * in any order leaves each findable until its own turn. */
Test(dedup, many_claims_in_flight_settle_in_any_order)
{
    enum { N = 20000 };
    trk_dedup *d = trk_dedup_new(100000, ONR_DAY_MS);
    for (int i = 0; i < N; i++)
        cr_assert_eq(trk_dedup_claim(d, id(i), T0), TRK_CLAIMED);
    for (int i = 0; i < N; i += 2) /* the even ones first, stored */
        trk_dedup_settle(d, id(i), true, T0 + 1);
    for (int i = 1; i < N; i += 2) {
        cr_assert_eq(trk_dedup_claim(d, id(i), T0 + 2), TRK_BUSY, "claim %d was lost", i);
        trk_dedup_settle(d, id(i), false, T0 + 2);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(trk_dedup_claim(d, id(i), T0 + 3), i % 2 ? TRK_CLAIMED : TRK_SEEN, "id %d",
                     i);
    trk_dedup_free(d);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Claims and settles of sorted runs (a batch's ids, each stripe's lock taken once) answer as
 * one call per id would: a repeat within the run is a resend, a stored or claimed id in the
 * set is seen or busy, and the run stops after the first busy one, claiming nothing past it. */
Test(dedup, sorted_runs_claim_and_settle_as_single_calls_do)
{
    enum { N = 400 };
    trk_dedup *d = trk_dedup_new(100000, ONR_DAY_MS);
    uint64_t g[N + 1];
    trk_claim out[N + 1];
    bool stored[N + 1];
    for (int i = 0; i < N; i++)
        g[i] = id(i);
    g[N] = id(7); /* a repeat */
    qsort(g, N + 1, sizeof(*g), cmp_u64);
    cr_assert_eq(trk_dedup_claim_sorted(d, g, N + 1, T0, out), (size_t)N + 1);
    int seen = 0;
    for (int k = 0; k <= N; k++) {
        bool repeat = k > 0 && g[k] == g[k - 1];
        cr_assert_eq(out[k], repeat ? TRK_SEEN : TRK_CLAIMED, "position %d", k);
        seen += out[k] == TRK_SEEN;
        cr_assert_eq(trk_dedup_claim(d, g[k], T0), TRK_BUSY, "position %d is not held", k);
        stored[k] = k % 3 != 0; /* every third one's partition failed */
    }
    cr_assert_eq(seen, 1);
    /* the repeat's place is settled by its first copy: drop it, as a request stores one */
    size_t n = 0;
    for (int k = 0; k <= N; k++)
        if (out[k] == TRK_CLAIMED) {
            g[n] = g[k];
            stored[n++] = stored[k];
        }
    trk_dedup_settle_sorted(d, g, stored, n, T0 + 1);
    for (size_t k = 0; k < n; k++) {
        cr_assert_eq(trk_dedup_seen(d, g[k], T0 + 2), stored[k], "position %zu", k);
        cr_assert_eq(trk_dedup_claim(d, g[k], T0 + 2), stored[k] ? TRK_SEEN : TRK_CLAIMED);
    }

    /* a run meeting a busy id stops there: what it claimed before stays claimed (the caller
     * releases it), nothing after it is claimed */
    uint64_t h[3] = {id(1000), id(1001), id(1002)};
    qsort(h, 3, sizeof(*h), cmp_u64);
    cr_assert_eq(trk_dedup_claim(d, h[1], T0 + 3), TRK_CLAIMED);
    cr_assert_eq(trk_dedup_claim_sorted(d, h, 3, T0 + 3, out), (size_t)2);
    cr_assert_eq(out[0], TRK_CLAIMED);
    cr_assert_eq(out[1], TRK_BUSY);
    cr_assert_eq(trk_dedup_claim(d, h[2], T0 + 3), TRK_CLAIMED, "claimed past a busy id");
    trk_dedup_free(d);
}

/* Prefetching takes no lock and reads the table's address as last set: prefetches while the
 * tables grow under many adds (other threads) neither fail nor change what is kept. */
static void *prefetcher(void *arg)
{
    trk_dedup *d = arg;
    for (int r = 0; r < 50; r++)
        for (int i = 0; i < 20000; i++)
            trk_dedup_prefetch(d, id(i));
    return NULL;
}

Test(dedup, prefetches_while_tables_grow_change_nothing)
{
    trk_dedup *d = trk_dedup_new(1000000, ONR_DAY_MS);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, prefetcher, d), 0);
    for (int i = 0; i < 200000; i++)
        cr_assert(trk_dedup_add(d, id(i), T0));
    pthread_join(t, NULL);
    for (int i = 0; i < 200000; i++)
        cr_assert(trk_dedup_seen(d, id(i), T0), "id %d", i);
    trk_dedup_free(d);
}
