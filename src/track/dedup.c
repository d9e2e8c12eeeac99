/*
 * dedup.c - the recent-messageId set: 64 stripes, each an open-addressing table of digests
 * with a FIFO of (digest, time) that expires the oldest by age or when the stripe is full,
 * and a second table of the digests claimed by requests still being stored. A stripe's mutex
 * is held for a lookup, a claim or an insert only, or for a run of them in one stripe.
 */
#include "dedup.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define STRIPES 64
/* Slots of a stripe's table of claims kept while no claim is open (at most 2 KB a stripe). */
#define BUSY_KEPT 256

typedef struct entry {
    uint64_t digest;
    int64_t at_ms;
} entry;

/* An open-addressing set of digests (never 0), with no tombstones. */
typedef struct oaset {
    uint64_t *table; /* 0 = empty */
    size_t mask, count;
} oaset;

typedef struct stripe {
    pthread_mutex_t mu;
    /* The seen table's address and mask as last set, read without the lock by
     * trk_dedup_prefetch: a prefetch of a table since replaced touches memory, nothing else. */
    _Atomic uintptr_t pf_base;
    _Atomic size_t pf_mask;
    oaset seen;  /* what the fifo holds */
    oaset busy;  /* claimed, not yet settled (trk_dedup_claim) */
    entry *fifo; /* ring, oldest at head */
    size_t head, len, cap, max;
} stripe;

struct trk_dedup {
    int64_t window_ms;
    stripe s[STRIPES];
};

uint64_t trk_dedup_digest(const char *id, size_t n)
{
    return onr_hash64(id, n, 0x6d736769) | 1;
}

/* Table slots, a power of two, at least want (and 16). */
static size_t table_slots(size_t want)
{
    size_t tcap = 16;
    while (tcap < want)
        tcap *= 2;
    return tcap;
}

static void publish_table(stripe *s)
{
    atomic_store_explicit(&s->pf_base, (uintptr_t)s->seen.table, memory_order_relaxed);
    atomic_store_explicit(&s->pf_mask, s->seen.mask, memory_order_relaxed);
}

static trk_dedup *dedup_new(size_t max_ids, int64_t window_ms, bool ahead)
{
    trk_dedup *d = onr_calloc(1, sizeof(*d));
    d->window_ms = window_ms;
    size_t per = max_ids / STRIPES + 1;
    /* sized ahead: at most 60% full (a run of 3.6 slots on a miss, in one or two lines) */
    size_t tcap = table_slots(per + per / 2);
    for (int i = 0; i < STRIPES; i++) {
        stripe *s = &d->s[i];
        pthread_mutex_init(&s->mu, NULL);
        s->max = per;
        if (ahead) {
            /* the list is written in order, a page at a time as ids arrive; the table is
             * probed at random, so its pages are touched now rather than under the
             * stripe's lock as the first ids land on each */
            s->fifo = onr_malloc(sizeof(entry) * per);
            s->cap = per;
            s->seen.table = onr_calloc_table(tcap * sizeof(uint64_t));
            memset(s->seen.table, 0, tcap * sizeof(uint64_t));
            s->seen.mask = tcap - 1;
            publish_table(s);
        }
    }
    return d;
}

trk_dedup *trk_dedup_new(size_t max_ids, int64_t window_ms)
{
    return dedup_new(max_ids, window_ms, false);
}

trk_dedup *trk_dedup_new_sized(size_t max_ids, int64_t window_ms)
{
    return dedup_new(max_ids, window_ms, true);
}

void trk_dedup_free(trk_dedup *d)
{
    if (!d)
        return;
    for (int i = 0; i < STRIPES; i++) {
        pthread_mutex_destroy(&d->s[i].mu);
        oaset *sets[] = {&d->s[i].seen, &d->s[i].busy};
        for (int k = 0; k < 2; k++)
            if (sets[k]->table)
                onr_free_table(sets[k]->table, (sets[k]->mask + 1) * sizeof(uint64_t));
        onr_free(d->s[i].fifo);
    }
    onr_free(d);
}

static size_t find(const oaset *o, uint64_t g)
{
    if (!o->table)
        return SIZE_MAX;
    for (size_t i = g & o->mask; o->table[i]; i = (i + 1) & o->mask)
        if (o->table[i] == g)
            return i;
    return SIZE_MAX;
}

static void put(oaset *o, uint64_t g)
{
    size_t i = g & o->mask;
    while (o->table[i])
        i = (i + 1) & o->mask;
    o->table[i] = g;
    o->count++;
}

/* Removes the slot at i, shifting later members of its run back (no tombstones). */
static void del(oaset *o, size_t i)
{
    for (size_t j = (i + 1) & o->mask; o->table[j]; j = (j + 1) & o->mask) {
        size_t home = o->table[j] & o->mask;
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            o->table[i] = o->table[j];
            i = j;
        }
    }
    o->table[i] = 0;
    o->count--;
}

/* Rebuilds o with room for tcap slots (a power of two above its count). */
static void rehash(oaset *o, size_t tcap)
{
    uint64_t *old = o->table;
    size_t oldcap = old ? o->mask + 1 : 0;
    o->table = onr_calloc_table(tcap * sizeof(uint64_t));
    o->mask = tcap - 1;
    o->count = 0;
    for (size_t k = 0; k < oldcap; k++)
        if (old[k])
            put(o, old[k]);
    if (old)
        onr_free_table(old, oldcap * sizeof(uint64_t));
}

static void grow(stripe *s)
{
    /* the fifo holds what the table holds */
    size_t cap = s->cap ? s->cap * 2 : 256;
    if (cap > s->max)
        cap = s->max;
    entry *fifo = onr_malloc(sizeof(entry) * cap);
    for (size_t k = 0; k < s->len; k++)
        fifo[k] = s->fifo[(s->head + k) % s->cap];
    onr_free(s->fifo);
    s->fifo = fifo;
    s->head = 0;
    s->cap = cap;
    rehash(&s->seen, table_slots(cap * 2)); /* at most half full */
    publish_table(s);
}

/* Drops ids older than before_ms, and the oldest one too when room is needed and the
 * stripe is at its bound. */
static void expire(stripe *s, int64_t before_ms, bool room)
{
    while (s->len && (s->fifo[s->head].at_ms < before_ms || (room && s->len == s->max))) {
        size_t i = find(&s->seen, s->fifo[s->head].digest);
        if (i != SIZE_MAX)
            del(&s->seen, i);
        s->head = (s->head + 1) % s->cap;
        s->len--;
    }
}

void trk_dedup_prefetch(trk_dedup *d, uint64_t digest)
{
    stripe *s = &d->s[digest >> 58];
    uintptr_t base = atomic_load_explicit(&s->pf_base, memory_order_relaxed);
    size_t mask = atomic_load_explicit(&s->pf_mask, memory_order_relaxed);
    if (base) /* a prefetch never faults: a stale base or mask costs a wasted load at most */
        __builtin_prefetch((const void *)(base + (digest & mask) * sizeof(uint64_t)));
}

bool trk_dedup_seen(trk_dedup *d, uint64_t digest, int64_t now_ms)
{
    stripe *s = &d->s[digest >> 58]; /* the top bits: the low ones also place it in the table */
    pthread_mutex_lock(&s->mu);
    expire(s, now_ms - d->window_ms, false);
    bool seen = find(&s->seen, digest) != SIZE_MAX;
    pthread_mutex_unlock(&s->mu);
    return seen;
}

/* Adds digest to the seen ids, under s's lock. */
static bool add_locked(trk_dedup *d, stripe *s, uint64_t digest, int64_t now_ms)
{
    expire(s, now_ms - d->window_ms, false);
    bool added = find(&s->seen, digest) == SIZE_MAX;
    if (added) {
        if (s->len == s->cap && s->cap < s->max)
            grow(s);
        expire(s, now_ms - d->window_ms, true); /* a full stripe drops its oldest */
        s->fifo[(s->head + s->len) % s->cap] = (entry){digest, now_ms};
        s->len++;
        put(&s->seen, digest);
    }
    return added;
}

bool trk_dedup_add(trk_dedup *d, uint64_t digest, int64_t now_ms)
{
    stripe *s = &d->s[digest >> 58]; /* the top bits: the low ones also place it in the table */
    pthread_mutex_lock(&s->mu);
    bool added = add_locked(d, s, digest, now_ms);
    pthread_mutex_unlock(&s->mu);
    return added;
}

/* trk_dedup_claim under s's lock. */
static trk_claim claim_locked(trk_dedup *d, stripe *s, uint64_t digest, int64_t now_ms)
{
    expire(s, now_ms - d->window_ms, false);
    trk_claim c = TRK_CLAIMED;
    if (find(&s->seen, digest) != SIZE_MAX) {
        c = TRK_SEEN;
    } else if (find(&s->busy, digest) != SIZE_MAX) {
        c = TRK_BUSY;
    } else {
        /* at most half full */
        if (!s->busy.table || (s->busy.count + 1) * 2 > s->busy.mask + 1)
            rehash(&s->busy, s->busy.table ? (s->busy.mask + 1) * 2 : 16);
        put(&s->busy, digest);
    }
    return c;
}

trk_claim trk_dedup_claim(trk_dedup *d, uint64_t digest, int64_t now_ms)
{
    stripe *s = &d->s[digest >> 58];
    pthread_mutex_lock(&s->mu);
    trk_claim c = claim_locked(d, s, digest, now_ms);
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* The end of the run of sorted digests from `from` that share its stripe. */
static size_t run_end(const uint64_t *digests, size_t from, size_t n)
{
    size_t e = from + 1;
    while (e < n && digests[e] >> 58 == digests[from] >> 58)
        e++;
    return e;
}

size_t trk_dedup_claim_sorted(trk_dedup *d, const uint64_t *digests, size_t n, int64_t now_ms,
                              trk_claim *out)
{
    for (size_t i = 0; i < n;) {
        size_t e = run_end(digests, i, n);
        stripe *s = &d->s[digests[i] >> 58];
        pthread_mutex_lock(&s->mu);
        for (; i < e; i++) {
            out[i] = i > 0 && digests[i] == digests[i - 1] ? TRK_SEEN
                                                           : claim_locked(d, s, digests[i], now_ms);
            if (out[i] == TRK_BUSY) {
                pthread_mutex_unlock(&s->mu);
                return i + 1;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

/* trk_dedup_settle under s's lock. */
static void settle_locked(trk_dedup *d, stripe *s, uint64_t digest, bool stored, int64_t now_ms)
{
    size_t i = find(&s->busy, digest);
    if (i != SIZE_MAX)
        del(&s->busy, i);
    if (s->busy.count == 0 && s->busy.mask + 1 > BUSY_KEPT) {
        /* a burst is over: the table its claims grew goes */
        onr_free_table(s->busy.table, (s->busy.mask + 1) * sizeof(uint64_t));
        s->busy = (oaset){0};
    }
    if (stored)
        add_locked(d, s, digest, now_ms);
}

void trk_dedup_settle(trk_dedup *d, uint64_t digest, bool stored, int64_t now_ms)
{
    stripe *s = &d->s[digest >> 58];
    pthread_mutex_lock(&s->mu);
    settle_locked(d, s, digest, stored, now_ms);
    pthread_mutex_unlock(&s->mu);
}

void trk_dedup_settle_sorted(trk_dedup *d, const uint64_t *digests, const bool *stored, size_t n,
                             int64_t now_ms)
{
    for (size_t i = 0; i < n;) {
        size_t e = run_end(digests, i, n);
        stripe *s = &d->s[digests[i] >> 58];
        pthread_mutex_lock(&s->mu);
        for (; i < e; i++)
            settle_locked(d, s, digests[i], stored[i], now_ms);
        pthread_mutex_unlock(&s->mu);
    }
}

bool trk_dedup_each(trk_dedup *d, bool (*emit)(void *ctx, uint64_t digest, int64_t at_ms),
                    void *ctx)
{
    /* Each stripe's ids are copied under its lock and emitted after it, so that a slow emit
     * (a file being written) holds up no request. */
    entry *copy = NULL;
    size_t copy_cap = 0;
    bool ok = true;
    for (int i = 0; ok && i < STRIPES; i++) {
        stripe *s = &d->s[i];
        pthread_mutex_lock(&s->mu);
        size_t n = s->len;
        if (n > copy_cap) {
            onr_free(copy);
            copy_cap = s->max;
            copy = onr_malloc(sizeof(entry) * copy_cap);
        }
        size_t first = n ? ONR_MIN(n, s->cap - s->head) : 0;
        if (first)
            memcpy(copy, s->fifo + s->head, sizeof(entry) * first);
        if (n > first)
            memcpy(copy + first, s->fifo, sizeof(entry) * (n - first));
        pthread_mutex_unlock(&s->mu);
        for (size_t k = 0; ok && k < n; k++)
            ok = emit(ctx, copy[k].digest, copy[k].at_ms);
    }
    onr_free(copy);
    return ok;
}
