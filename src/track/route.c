/*
 * route.c - the identity router: a set-associative table of 8-way sets, each two adjacent
 * 64-byte cache lines holding eight (64-bit id hash, partition, last-used second) entries and
 * its own spin lock, held for the probe of that one set. A message probes one set per id it
 * carries; nothing is allocated after trk_route_new. Ids are stored as hashes, not strings.
 */
#include "track/route.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>

/* 8 ways rather than 4: at half the capacity about 1% of ids, not 4%, are forgotten early
 * (a set overflows), for a second cache line that the adjacent-line prefetch brings along. */
#define WAYS 8
/* The seed of the plain hash routing, so that the fallback is where messages always went. */
#define SEED 0x75736572
/* Tags anonymousIds, so that userId "x" and anonymousId "x" are two entries. */
#define ANON_TAG UINT64_C(0x9e3779b97f4a7c15)

typedef struct rset {
    atomic_uint lock;
    uint32_t weak;       /* bit i: entry i is known only from messages that had a userId too
                          * (and used[i] is the first of them); recovery only */
    uint32_t used[WAYS]; /* seconds since the epoch of its last message */
    uint16_t part[WAYS];
    uint64_t pad;
    uint64_t key[WAYS]; /* tagged hash of the id; 0 = empty (the second cache line) */
} rset;

_Static_assert(sizeof(rset) == 128, "a set is two cache lines");
_Static_assert(sizeof(rset) / WAYS == TRK_ROUTE_ENTRY_BYTES, "entry size is documented");

struct trk_router {
    rset *sets; /* aligned to a set's size */
    uint64_t nsets;
};

/* What a probe does with the id. */
enum {
    GET_OR_PUT,   /* routing: its partition, or remember p for it */
    LEARN_LATEST, /* recovery: p when the message is not older than what is known */
    LEARN_FIRST,  /* recovery: p only when the id is not known */
};

trk_router *trk_route_new(size_t capacity)
{
    if (capacity == 0 || capacity > TRK_ROUTE_MAX_CAPACITY)
        return NULL;
    trk_router *r = onr_calloc(1, sizeof(*r));
    r->nsets = (capacity + WAYS - 1) / WAYS;
    /* zero pages, resident as sets fill; page-aligned, so each set is two cache lines */
    r->sets = onr_calloc_table((size_t)r->nsets * sizeof(rset));
    return r;
}

void trk_route_free(trk_router *r)
{
    if (!r)
        return;
    onr_free_table(r->sets, (size_t)r->nsets * sizeof(rset));
    onr_free(r);
}

size_t trk_route_capacity(const trk_router *r)
{
    return (size_t)r->nsets * WAYS;
}

size_t trk_route_bytes(const trk_router *r)
{
    return (size_t)r->nsets * sizeof(rset);
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void set_lock(rset *s)
{
    unsigned spins = 0;
    while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire))
        while (atomic_load_explicit(&s->lock, memory_order_relaxed)) {
            if (++spins < 128)
                relax();
            else
                sched_yield(); /* the holder was preempted */
        }
}

static inline void set_unlock(rset *s)
{
    atomic_store_explicit(&s->lock, 0, memory_order_release);
}

static inline uint64_t id_hash(trk_str id)
{
    return onr_hash64(id.p, id.n, SEED);
}

static inline uint64_t user_key(uint64_t h)
{
    return h ? h : 1;
}

static inline uint64_t anon_key(uint64_t h)
{
    uint64_t k = h ^ ANON_TAG;
    return k ? k : 1;
}

static inline uint32_t secs(int64_t ms)
{
    if (ms <= 0)
        return 0;
    int64_t s = ms / 1000;
    return s > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static inline rset *set_of(const trk_router *r, uint64_t key)
{
    return &r->sets[((key >> 32) * r->nsets) >> 32];
}

/* The partition of key, refreshed as used at t; -1 when unknown (or out of range). */
static int lookup(trk_router *r, uint64_t key, int partitions, uint32_t t)
{
    rset *s = set_of(r, key);
    int p = -1;
    set_lock(s);
    for (int i = 0; i < WAYS; i++)
        if (s->key[i] == key) {
            if (s->part[i] < partitions) {
                p = s->part[i];
                if (t > s->used[i])
                    s->used[i] = t;
            }
            break;
        }
    set_unlock(s);
    return p;
}

/* Updates the known entry i of s as op says; returns its partition afterwards. */
static int update(rset *s, int i, int op, int p, int partitions, uint32_t t)
{
    uint32_t bit = 1u << i;
    bool weak = s->weak & bit;
    if (op == LEARN_FIRST && weak) {
        /* recovery reads partitions one after another: the earliest message decides */
        if (t < s->used[i]) {
            s->part[i] = (uint16_t)p;
            s->used[i] = t;
        }
        return s->part[i];
    }
    if (op == GET_OR_PUT ? s->part[i] >= partitions
                         : op == LEARN_LATEST && (weak || t >= s->used[i]))
        s->part[i] = (uint16_t)p;
    s->weak &= ~bit;
    if (t > s->used[i])
        s->used[i] = t;
    return s->part[i];
}

/* Remembers key -> p as op says; returns the partition key has afterwards (or p). */
static int probe(trk_router *r, uint64_t key, int op, int p, int partitions, uint32_t t)
{
    rset *s = set_of(r, key);
    set_lock(s);
    int victim = 0;
    for (int i = 0; i < WAYS; i++) {
        if (s->key[i] == key) {
            p = update(s, i, op, p, partitions, t);
            set_unlock(s);
            return p;
        }
        if (s->key[victim] && (!s->key[i] || s->used[i] < s->used[victim]))
            victim = i;
    }
    /* A new id takes an empty entry or the least recently used one; recovery, which may see
     * older messages after newer ones, does not evict an id used later than its message. */
    if (op == GET_OR_PUT || !s->key[victim] || s->used[victim] <= t) {
        s->key[victim] = key;
        s->part[victim] = (uint16_t)p;
        s->used[victim] = t;
        if (op == LEARN_FIRST)
            s->weak |= 1u << victim;
        else
            s->weak &= ~(1u << victim);
    }
    set_unlock(s);
    return p;
}

int trk_route_hash(trk_str id, int partitions)
{
    return (int)(id_hash(id) % (uint64_t)partitions);
}

/* Starts loading a set's two cache lines, to be written. */
static inline void prefetch(const rset *s)
{
    __builtin_prefetch(s, 1);
    __builtin_prefetch((const char *)s + 64, 1);
}

void trk_route_prefetch(const trk_router *r, trk_str user_id, trk_str anon_id)
{
    if (user_id.n)
        prefetch(set_of(r, user_key(id_hash(user_id))));
    if (anon_id.n)
        prefetch(set_of(r, anon_key(id_hash(anon_id))));
}

int trk_route(trk_router *r, trk_str user_id, trk_str anon_id, int partitions, int64_t now_ms)
{
    uint32_t t = secs(now_ms);
    uint64_t hu = 0, ha = 0;
    if (user_id.n && anon_id.n) {
        /* both sets are probed below whatever is known: their cache misses overlap */
        hu = id_hash(user_id);
        ha = id_hash(anon_id);
        prefetch(set_of(r, user_key(hu)));
        prefetch(set_of(r, anon_key(ha)));
    }
    if (user_id.n) {
        if (!hu)
            hu = id_hash(user_id);
        int p = lookup(r, user_key(hu), partitions, t);
        if (p >= 0) {
            if (anon_id.n) /* the common case after identify: two probes */
                probe(r, anon_key(ha), GET_OR_PUT, p, partitions, t);
            return p;
        }
    }
    int p;
    if (anon_id.n) {
        if (!ha)
            ha = id_hash(anon_id);
        p = probe(r, anon_key(ha), GET_OR_PUT, (int)(ha % (uint64_t)partitions), partitions, t);
    } else {
        p = (int)(hu % (uint64_t)partitions);
    }
    /* Another thread may have placed this userId meanwhile: its partition wins. */
    if (user_id.n)
        p = probe(r, user_key(hu), GET_OR_PUT, p, partitions, t);
    return p;
}

int trk_route_alias(trk_router *r, trk_str user_id, trk_str previous_id, int partitions,
                    int64_t now_ms)
{
    if (!user_id.n || !previous_id.n)
        return trk_route(r, user_id, previous_id, partitions, now_ms);
    uint32_t t = secs(now_ms);
    uint64_t hu = id_hash(user_id), hp = id_hash(previous_id);
    int p = lookup(r, user_key(hu), partitions, t);
    if (p >= 0) {
        probe(r, anon_key(hp), GET_OR_PUT, p, partitions, t);
        return p;
    }
    p = lookup(r, anon_key(hp), partitions, t);
    if (p < 0)
        p = lookup(r, user_key(hp), partitions, t);
    if (p < 0)
        p = (int)(hp % (uint64_t)partitions);
    p = probe(r, anon_key(hp), GET_OR_PUT, p, partitions, t);
    return probe(r, user_key(hu), GET_OR_PUT, p, partitions, t);
}

void trk_route_learn(trk_router *r, trk_str user_id, trk_str anon_id, int partition, int64_t at_ms)
{
    if (partition < 0 || partition > UINT16_MAX)
        return;
    uint32_t t = secs(at_ms);
    if (user_id.n)
        probe(r, user_key(id_hash(user_id)), LEARN_LATEST, partition, UINT16_MAX + 1, t);
    if (anon_id.n)
        probe(r, anon_key(id_hash(anon_id)), user_id.n ? LEARN_FIRST : LEARN_LATEST, partition,
              UINT16_MAX + 1, t);
}

size_t trk_route_count(trk_router *r)
{
    size_t n = 0;
    for (uint64_t i = 0; i < r->nsets; i++) {
        rset *s = &r->sets[i];
        set_lock(s);
        for (int w = 0; w < WAYS; w++)
            n += s->key[w] != 0;
        set_unlock(s);
    }
    return n;
}

/* ---- saving and loading: each set that holds an id, after its index; then END_SETS */

#define END_SETS UINT64_MAX

bool trk_route_write(const trk_router *r, bool (*put)(void *ctx, const void *p, size_t n),
                     void *ctx)
{
    for (uint64_t i = 0; i < r->nsets; i++) {
        rset copy, *set = &r->sets[i];
        set_lock(set); /* a consistent copy while messages are routed */
        memcpy(&copy, set, sizeof(copy));
        set_unlock(set);
        bool used = false;
        for (int w = 0; w < WAYS && !used; w++)
            used = copy.key[w] != 0;
        if (used && !(put(ctx, &i, sizeof(i)) && put(ctx, &copy, sizeof(copy))))
            return false;
    }
    uint64_t end = END_SETS;
    return put(ctx, &end, sizeof(end));
}

bool trk_route_read(trk_router *r, bool (*get)(void *ctx, void *p, size_t n), void *ctx)
{
    for (;;) {
        uint64_t i;
        if (!get(ctx, &i, sizeof(i)))
            return false;
        if (i == END_SETS)
            return true;
        if (i >= r->nsets || !get(ctx, &r->sets[i], sizeof(rset)))
            return false;
        atomic_store_explicit(&r->sets[i].lock, 0, memory_order_relaxed);
    }
}
