/*
 * test_route.c - unit tests for the identity router (src/track/route.c): the onboarding flow
 * of anonymous events, identify and identified events in one partition, alias, the splits it
 * does not mend, eviction within the bound, recovery from a routed history, and many threads.
 */
#include "track/route.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define T0 INT64_C(1767225600000)
#define P 16

static const trk_str none = {"", 0};

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* An id "<prefix>-<16 hex digits>" in buf. */
static trk_str mkid(char *buf, size_t cap, const char *prefix, uint64_t v)
{
    int n = snprintf(buf, cap, "%s-%016llx", prefix, (unsigned long long)v);
    return (trk_str){buf, (uint32_t)n};
}

static trk_str S(const char *s)
{
    return (trk_str){s, (uint32_t)strlen(s)};
}

/* Two ids whose plain hash partitions differ. */
static void distinct_pair(const char *pa, const char *pb, char *a, char *b, size_t cap)
{
    for (uint64_t i = 0;; i++) {
        trk_str x = mkid(a, cap, pa, i), y = mkid(b, cap, pb, i);
        if (trk_route_hash(x, P) != trk_route_hash(y, P))
            return;
    }
}

Test(route, sizes_follow_the_capacity)
{
    trk_router *r = trk_route_new(TRK_ROUTE_DEFAULT_CAPACITY);
    cr_assert_eq(trk_route_capacity(r), (size_t)4194304);
    cr_assert_eq(trk_route_bytes(r), (size_t)64 * 1024 * 1024);
    cr_assert_eq(trk_route_count(r), 0);
    trk_route_free(r);
    r = trk_route_new(10);
    cr_assert_eq(trk_route_capacity(r), 16, "rounded up to whole sets of 8");
    trk_route_free(r);
    cr_assert_null(trk_route_new(0));
    cr_assert_null(trk_route_new(TRK_ROUTE_MAX_CAPACITY + 1));
}

Test(route, onboarding_flow_of_10k_users_lands_in_one_partition)
{
    enum { USERS = 10000 };
    trk_router *r = trk_route_new(TRK_ROUTE_DEFAULT_CAPACITY);
    static char uid[USERS][40], aid[USERS][40];
    uint64_t seed = 42;
    int first[USERS], split_by_hash = 0;
    for (int u = 0; u < USERS; u++) {
        mkid(uid[u], sizeof(uid[u]), "user", rnd(&seed));
        mkid(aid[u], sizeof(aid[u]), "anon", rnd(&seed));
        split_by_hash += trk_route_hash(S(uid[u]), P) != trk_route_hash(S(aid[u]), P);
    }
    /* without the router most of these users would be split across partitions */
    cr_assert_gt(split_by_hash, USERS / 2);
    int64_t t = T0;
    /* each step for every user before the next, so that the users interleave */
    for (int u = 0; u < USERS; u++) {
        first[u] = trk_route(r, none, S(aid[u]), P, t);
        cr_assert_eq(first[u], trk_route_hash(S(aid[u]), P), "a new visitor: the plain hash");
    }
    for (int step = 0; step < 5; step++)
        for (int u = 0; u < USERS; u++) {
            t += 7;
            trk_str user = step >= 2 ? S(uid[u]) : none; /* step 2 is the identify */
            trk_str anon = step <= 2 || step == 4 ? S(aid[u]) : none;
            int p = trk_route(r, user, anon, P, t);
            cr_assert_eq(p, first[u], "user %d step %d: partition %d, not %d", u, step, p,
                         first[u]);
        }
    cr_assert_eq(trk_route_count(r), 2 * USERS);
    trk_route_free(r);
}

Test(route, a_known_user_takes_a_new_anonymous_id_along)
{
    char u[40], a[40];
    distinct_pair("user", "anon", u, a, sizeof(u));
    trk_router *r = trk_route_new(1024);
    int pu = trk_route(r, S(u), none, P, T0);
    cr_assert_eq(pu, trk_route_hash(S(u), P));
    cr_assert_eq(trk_route(r, S(u), S(a), P, T0 + 1), pu);
    /* a later anonymous-only message of that device (after a log-out) follows the user */
    cr_assert_eq(trk_route(r, none, S(a), P, T0 + 2), pu);
    trk_route_free(r);
}

Test(route, alias_joins_the_previous_id_to_the_user)
{
    char prev[40], user[40];
    distinct_pair("anon", "user", prev, user, sizeof(prev));
    trk_router *r = trk_route_new(1024);
    int pa = trk_route(r, none, S(prev), P, T0);
    cr_assert_eq(trk_route_alias(r, S(user), S(prev), P, T0 + 1), pa);
    cr_assert_eq(trk_route(r, S(user), none, P, T0 + 2), pa);
    trk_route_free(r);

    /* an alias with both ids new goes where previousId's messages would have gone */
    r = trk_route_new(1024);
    cr_assert_eq(trk_route_alias(r, S(user), S(prev), P, T0), trk_route_hash(S(prev), P));
    cr_assert_eq(trk_route(r, S(user), none, P, T0 + 1), trk_route_hash(S(prev), P));
    cr_assert_eq(trk_route(r, none, S(prev), P, T0 + 2), trk_route_hash(S(prev), P));
    trk_route_free(r);
}

Test(route, alias_of_a_former_user_id_follows_that_user)
{
    char old[40], anon[40], fresh[40];
    distinct_pair("old", "anon", old, anon, sizeof(old));
    for (uint64_t i = 0;; i++) {
        trk_str f = mkid(fresh, sizeof(fresh), "new", i);
        if (trk_route_hash(f, P) != trk_route_hash(S(anon), P) &&
            trk_route_hash(S(old), P) != trk_route_hash(S(anon), P))
            break;
    }
    trk_router *r = trk_route_new(1024);
    int pa = trk_route(r, none, S(anon), P, T0);
    cr_assert_eq(trk_route(r, S(old), S(anon), P, T0 + 1), pa); /* identify */
    /* the user is renamed: previousId is the former userId, in the anonymous event's place */
    cr_assert_eq(trk_route_alias(r, S(fresh), S(old), P, T0 + 2), pa);
    cr_assert_eq(trk_route(r, S(fresh), none, P, T0 + 3), pa);
    trk_route_free(r);
}

Test(route, two_devices_anonymous_before_login_stay_split)
{
    char a1[40], a2[40];
    distinct_pair("phone", "laptop", a1, a2, sizeof(a1));
    trk_router *r = trk_route_new(1024);
    int p1 = trk_route(r, none, S(a1), P, T0);
    int p2 = trk_route(r, none, S(a2), P, T0 + 1);
    cr_assert_neq(p1, p2);
    cr_assert_eq(trk_route(r, S("u-two-devices"), S(a1), P, T0 + 2), p1);
    /* the second device's identify goes to the user; its own history stays where it was */
    cr_assert_eq(trk_route(r, S("u-two-devices"), S(a2), P, T0 + 3), p1);
    cr_assert_eq(trk_route(r, none, S(a2), P, T0 + 4), p2);
    trk_route_free(r);
}

Test(route, the_same_string_as_user_id_and_anonymous_id_is_two_ids)
{
    char u[40], x[40];
    distinct_pair("user", "x", u, x, sizeof(u));
    trk_router *r = trk_route_new(1024);
    int pu = trk_route(r, S(u), none, P, T0);
    cr_assert_eq(trk_route(r, S(u), S(x), P, T0 + 1), pu); /* anonymousId x -> pu */
    cr_assert_eq(trk_route(r, none, S(x), P, T0 + 2), pu);
    cr_assert_eq(trk_route(r, S(x), none, P, T0 + 3), trk_route_hash(S(x), P),
                 "userId x is not anonymousId x");
    trk_route_free(r);
}

Test(route, a_partition_out_of_range_is_routed_again)
{
    trk_router *r = trk_route_new(1024);
    char a[40];
    trk_str id = mkid(a, sizeof(a), "anon", 1);
    trk_route_learn(r, none, id, 40, T0);
    cr_assert_eq(trk_route(r, none, id, 8, T0 + 1), trk_route_hash(id, 8));
    cr_assert_eq(trk_route(r, none, id, 64, T0 + 2), trk_route_hash(id, 8), "remembered again");
    trk_route_free(r);
}

/* Ids learned at partition (hash + 1) mod P: a lookup tells a remembered id from a new one. */
static bool remembered(trk_router *r, trk_str id, int64_t t)
{
    return trk_route(r, none, id, P, t) == (trk_route_hash(id, P) + 1) % P;
}

Test(route, eviction_keeps_the_bound_and_the_most_recent_ids_win)
{
    enum { CAP = 1024, N = 100000 };
    trk_router *r = trk_route_new(CAP);
    char buf[40];
    trk_str keep = S("anon-kept-in-use"), user = S("user-kept-in-use");
    int pu = (trk_route_hash(user, P) + 1) % P;
    trk_route_learn(r, none, keep, (trk_route_hash(keep, P) + 1) % P, T0);
    trk_route_learn(r, user, none, pu, T0);
    for (int i = 0; i < N; i++) {
        trk_str id = mkid(buf, sizeof(buf), "anon", (uint64_t)i);
        int64_t t = T0 + (int64_t)i * 1000;
        trk_route_learn(r, none, id, (trk_route_hash(id, P) + 1) % P, t);
        if (i % 64 == 0) { /* in use all along: never the least recently used of its set */
            cr_assert(remembered(r, keep, t), "used anonymousId evicted at %d", i);
            cr_assert_eq(trk_route(r, user, none, P, t), pu, "used userId evicted at %d", i);
        }
    }
    cr_assert_leq(trk_route_count(r), CAP);
    cr_assert_gt(trk_route_count(r), CAP * 9 / 10, "the table is used: %zu", trk_route_count(r));
    int64_t end = T0 + (int64_t)N * 1000;
    int recent = 0, old = 0;
    for (int i = N - 100; i < N; i++)
        recent += remembered(r, mkid(buf, sizeof(buf), "anon", (uint64_t)i), end);
    for (int i = 0; i < N - 5000; i += 50)
        old += remembered(r, mkid(buf, sizeof(buf), "anon", (uint64_t)i), end);
    cr_assert_geq(recent, 90, "only %d of the newest 100 ids kept", recent);
    cr_assert_eq(old, 0, "%d old ids kept", old);
    cr_assert_leq(trk_route_count(r), CAP);
    trk_route_free(r);
}

Test(route, recovery_does_not_evict_newer_ids_for_older_messages)
{
    trk_router *r = trk_route_new(8); /* one set */
    char buf[40];
    for (int i = 0; i < 8; i++) {
        trk_str id = mkid(buf, sizeof(buf), "new", (uint64_t)i);
        trk_route_learn(r, none, id, (trk_route_hash(id, P) + 1) % P, T0 + 100000);
    }
    trk_str older = mkid(buf, sizeof(buf), "older", 0);
    trk_route_learn(r, none, older, 3, T0);
    for (int i = 0; i < 8; i++)
        cr_assert(remembered(r, mkid(buf, sizeof(buf), "new", (uint64_t)i), T0 + 200000));
    trk_route_free(r);
}

/* ---- recovery: a routed history fed back partition by partition routes the same */

typedef struct msg {
    char u[40], a[40];
    bool alias;
    int part;
    int64_t t;
} msg;

Test(route, learning_a_routed_history_routes_as_before)
{
    enum { USERS = 3000, MAX = USERS * 8 };
    static msg m[MAX];
    int n = 0;
    uint64_t seed = 7;
    trk_router *live = trk_route_new(1 << 16);
    int64_t t = T0;
    for (int u = 0; u < USERS; u++) {
        char uid[40], a1[40], a2[40];
        mkid(uid, sizeof(uid), "user", rnd(&seed));
        mkid(a1, sizeof(a1), "anon", rnd(&seed));
        mkid(a2, sizeof(a2), "anon2", rnd(&seed));
        int kind = (int)(rnd(&seed) % 4);
        /* 0: anonymous, identify, a second device after login; 1: two devices before login;
         * 2: alias; 3: identified only */
        const char *seq[8][2];
        bool alias[8] = {false};
        int k = 0;
        if (kind == 0 || kind == 1) {
            seq[k][0] = "", seq[k++][1] = a1;
            if (kind == 1)
                seq[k][0] = "", seq[k++][1] = a2;
            seq[k][0] = uid, seq[k++][1] = a1;
            seq[k][0] = uid, seq[k++][1] = a2;
            seq[k][0] = "", seq[k++][1] = a2; /* kind 0: after a log-out, with the user's */
        } else if (kind == 2) {
            seq[k][0] = "", seq[k++][1] = a1;
            alias[k] = true, seq[k][0] = uid, seq[k++][1] = a1;
        }
        seq[k][0] = uid, seq[k++][1] = "";
        for (int i = 0; i < k; i++, n++) {
            snprintf(m[n].u, sizeof(m[n].u), "%s", seq[i][0]);
            snprintf(m[n].a, sizeof(m[n].a), "%s", seq[i][1]);
            m[n].alias = alias[i];
            m[n].t = t += 250;
            m[n].part = m[n].alias ? trk_route_alias(live, S(m[n].u), S(m[n].a), P, m[n].t)
                                   : trk_route(live, S(m[n].u), S(m[n].a), P, m[n].t);
        }
    }
    /* the log read back: partition 0 first, each in its order */
    trk_router *back = trk_route_new(1 << 16);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < n; i++)
            if (m[i].part == p)
                trk_route_learn(back, S(m[i].u), S(m[i].a), p, m[i].t);
    cr_assert_eq(trk_route_count(back), trk_route_count(live));
    int64_t later = t + 1000;
    for (int i = 0; i < n; i++) {
        if (m[i].u[0])
            cr_assert_eq(trk_route(back, S(m[i].u), none, P, later),
                         trk_route(live, S(m[i].u), none, P, later), "user %s", m[i].u);
        if (m[i].a[0])
            cr_assert_eq(trk_route(back, none, S(m[i].a), P, later),
                         trk_route(live, none, S(m[i].a), P, later), "anonymous %s", m[i].a);
    }
    trk_route_free(live);
    trk_route_free(back);
}

Test(route, recovery_prefers_a_message_without_user_id_for_an_anonymous_id)
{
    char a[40], u[40];
    distinct_pair("anon", "user", a, u, sizeof(a));
    int pa = trk_route_hash(S(a), P), pu = trk_route_hash(S(u), P);
    /* live: a anonymous in pa; u known in pu; then the identify (u, a), stored in pu */
    trk_router *r = trk_route_new(1024);
    trk_route_learn(r, S(u), S(a), pu, T0 + 2000); /* partition pu read first */
    trk_route_learn(r, S(u), none, pu, T0 + 1000);
    trk_route_learn(r, none, S(a), pa, T0);
    cr_assert_eq(trk_route(r, none, S(a), P, T0 + 3000), pa);
    cr_assert_eq(trk_route(r, S(u), none, P, T0 + 3000), pu);
    trk_route_free(r);

    /* an anonymousId seen only with userIds: where its earliest message went */
    r = trk_route_new(1024);
    trk_route_learn(r, S("u-later"), S(a), 5, T0 + 9000);
    trk_route_learn(r, S("u-first"), S(a), 3, T0 + 1000);
    trk_route_learn(r, S("u-last"), S(a), 7, T0 + 20000);
    cr_assert_eq(trk_route(r, none, S(a), P, T0 + 30000), 3);
    trk_route_free(r);
}

/* ---- threads */

enum { TUSERS = 4000, THREADS = 4 };

typedef struct worker {
    trk_router *r;
    pthread_barrier_t *go;
    int id;
    uint64_t seed;
    int part[TUSERS]; /* the partition of the user's identified messages */
    bool ok;
} worker;

static void *run(void *arg)
{
    worker *w = arg;
    static int order[THREADS][TUSERS];
    int *ord = order[w->id];
    for (int i = 0; i < TUSERS; i++)
        ord[i] = i;
    for (int i = TUSERS - 1; i > 0; i--) {
        int j = (int)(rnd(&w->seed) % (uint64_t)(i + 1));
        int x = ord[i];
        ord[i] = ord[j], ord[j] = x;
    }
    pthread_barrier_wait(w->go);
    w->ok = true;
    char u[40], a[40];
    for (int i = 0; i < TUSERS; i++) {
        int k = ord[i];
        trk_str user = mkid(u, sizeof(u), "user", (uint64_t)k);
        /* every thread is another device of the same user */
        trk_str anon =
            mkid(a, sizeof(a), w->id % 2 ? "anon-odd" : "anon-even", (uint64_t)(k * 16 + w->id));
        trk_route(w->r, none, anon, P, T0 + i);
        int p = trk_route(w->r, user, anon, P, T0 + i);
        w->ok &= trk_route(w->r, user, none, P, T0 + i) == p;
        w->part[k] = p;
    }
    return NULL;
}

Test(route, concurrent_routing_gives_each_user_one_partition)
{
    trk_router *r = trk_route_new(TRK_ROUTE_DEFAULT_CAPACITY);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    static worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.r = r, .go = &go, .id = i, .seed = (uint64_t)i + 1};
        pthread_create(&th[i], NULL, run, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    int differ = 0;
    for (int i = 0; i < THREADS; i++) {
        cr_assert(w[i].ok, "thread %d saw a user move", i);
        for (int k = 0; k < TUSERS; k++)
            differ += w[i].part[k] != w[0].part[k];
    }
    cr_assert_eq(differ, 0, "%d answers differ between threads", differ);
    /* every user went where one of its devices' anonymous messages went */
    char a[40];
    for (int k = 0; k < TUSERS; k++) {
        bool found = false;
        for (int s = 0; s < THREADS; s++)
            found |= trk_route_hash(mkid(a, sizeof(a), s % 2 ? "anon-odd" : "anon-even",
                                         (uint64_t)k * 16 + (uint64_t)s),
                                    P) == w[0].part[k];
        cr_assert(found, "user %d in partition %d", k, w[0].part[k]);
    }
    trk_route_free(r);
}

/* ---- saving and loading */

typedef struct mem_io {
    onr_buf b;
    size_t at, cut; /* reading: position, and where the bytes end */
} mem_io;

static bool mem_put(void *ctx, const void *p, size_t n)
{
    onr_buf_put(&((mem_io *)ctx)->b, p, n);
    return true;
}

static bool mem_get(void *ctx, void *p, size_t n)
{
    mem_io *io = ctx;
    if (io->cut - io->at < n)
        return false;
    memcpy(p, io->b.data + io->at, n);
    io->at += n;
    return true;
}

Test(route, a_saved_router_loads_into_a_new_one_and_routes_as_before)
{
    trk_router *r = trk_route_new(1 << 20);
    char ub[64], ab[64];
    int want[2000];
    for (uint64_t i = 0; i < 2000; i++)
        want[i] =
            trk_route(r, mkid(ub, sizeof(ub), "user", i), mkid(ab, sizeof(ab), "anon", i), P, T0);
    mem_io io = {0};
    cr_assert(trk_route_write(r, mem_put, &io));
    cr_assert_lt(io.b.len, trk_route_bytes(r) / 4, "empty sets were saved: %zu bytes", io.b.len);

    trk_router *back = trk_route_new(1 << 20);
    io.cut = io.b.len;
    cr_assert(trk_route_read(back, mem_get, &io));
    cr_assert_eq(io.at, io.b.len);
    cr_assert_eq(trk_route_count(back), trk_route_count(r));
    for (uint64_t i = 0; i < 2000; i++) /* a userId alone, then an anonymousId alone */
        cr_assert(trk_route(back, mkid(ub, sizeof(ub), "user", i), none, P, T0 + 1) == want[i] &&
                      trk_route(back, none, mkid(ab, sizeof(ab), "anon", i), P, T0 + 1) == want[i],
                  "id %llu moved", (unsigned long long)i);

    trk_router *cut = trk_route_new(1 << 20);
    io.at = 0;
    io.cut = io.b.len - 1;
    cr_assert_not(trk_route_read(cut, mem_get, &io), "bytes cut short were taken whole");
    trk_route_free(cut);
    trk_route_free(back);
    trk_route_free(r);
    onr_buf_free(&io.b);
}
