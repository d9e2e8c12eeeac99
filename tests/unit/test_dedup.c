/*
 * test_dedup.c - unit tests for the recent-messageId set (src/track/dedup.c): membership,
 * the age window, the count bound dropping the oldest first, concurrent use, and the claims
 * of messages being stored.
 */
#include "track/dedup.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#define T0 INT64_C(1767225600000)

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
    trk_dedup *d = trk_dedup_new(64, ONR_DAY_MS);
    for (int i = 0; i < 100000; i++)
        trk_dedup_add(d, id(i), T0 + i);
    int kept_recent = 0, kept_old = 0;
    for (int i = 99900; i < 100000; i++)
        kept_recent += trk_dedup_seen(d, id(i), T0 + 100000);
    for (int i = 0; i < 1000; i++)
        kept_old += trk_dedup_seen(d, id(i), T0 + 100000);
    cr_assert_eq(kept_old, 0, "%d old ids kept", kept_old);
    cr_assert_gt(kept_recent, 50, "only %d of the newest 100 kept", kept_recent);
    trk_dedup_free(d);
}

Test(dedup, many_ids_within_the_bound_are_all_kept)
{
    trk_dedup *d = trk_dedup_new(200000, ONR_DAY_MS);
    for (int i = 0; i < 100000; i++)
        trk_dedup_add(d, id(i), T0);
    int kept = 0;
    for (int i = 0; i < 100000; i++)
        kept += trk_dedup_seen(d, id(i), T0 + 1);
    cr_assert_eq(kept, 100000);
    cr_assert_not(trk_dedup_seen(d, id(100001), T0 + 1));
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
    trk_dedup *d = trk_dedup_new(64 * 8, ONR_HOUR_MS);
    for (int i = 0; i < 5000; i++)
        trk_dedup_add(d, id(i), T0 + i);
    copy_to c = {trk_dedup_new(64 * 8, ONR_HOUR_MS), 0};
    cr_assert(trk_dedup_each(d, copy_id, &c));
    cr_assert_gt(c.n, 0);
    size_t known = 0;
    for (int i = 0; i < 5000; i++) {
        bool was = trk_dedup_seen(d, id(i), T0 + 5000);
        known += was;
        cr_assert_eq(trk_dedup_seen(c.d, id(i), T0 + 5000), was, "id %d", i);
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
