/*
 * dedup.h - which messageIds were seen lately: a bounded, thread-safe set that lets ingest
 * drop the resends of stock tracking libraries (they retry with the same messageId when an
 * answer is lost). Bounded by age and by count, whichever is reached first.
 */
#ifndef ONR_DEDUP_H
#define ONR_DEDUP_H

#include "base/base.h"

typedef struct trk_dedup trk_dedup;

/* Keeps ids for window_ms, and at most max_ids of them (the oldest go first). Memory grows
 * with use, to about 32 bytes per id: each stripe's table is rebuilt twice the size as it
 * fills. Caller owns the result. */
trk_dedup *trk_dedup_new(size_t max_ids, int64_t window_ms);
/*
 * The same, with every stripe's table and list sized for max_ids from the start, so that no
 * add ever rebuilds one: the stripes fill evenly, so they would all grow within a few percent
 * of each other, each under its lock (at 10 million ids, 0.1-1.2 s with no answer at about
 * 2.1, 4.2 and 8.4 million; docs/performance.md). The tables (at most 60% full: 8 bytes a
 * slot, 1.5 x max_ids rounded up to a power of two a stripe) are resident from the start; the
 * lists (16 bytes an id) become so as ids arrive.
 */
trk_dedup *trk_dedup_new_sized(size_t max_ids, int64_t window_ms);
void trk_dedup_free(trk_dedup *d);

/* The 64-bit digest ids are kept as (two ids that share it count as one). */
uint64_t trk_dedup_digest(const char *id, size_t n);

/* Brings the table slot of digest towards the cache (without a lock), so that a later
 * lookup of it does not wait for memory: a request's ids, prefetched together before they
 * are looked up, wait for memory once, not each in turn. */
void trk_dedup_prefetch(trk_dedup *d, uint64_t digest);
/* Whether digest was added within the window before now_ms. */
bool trk_dedup_seen(trk_dedup *d, uint64_t digest, int64_t now_ms);
/* Remembers digest as seen at now_ms. Returns false when it was known already. */
bool trk_dedup_add(trk_dedup *d, uint64_t digest, int64_t now_ms);

/*
 * Claims digest for a request about to store its message, so that a resend arriving while
 * that request is still being stored is not stored too: TRK_SEEN when it was added within
 * the window (a resend: do not store it), TRK_BUSY when another claim of it is not settled
 * yet (the request storing it may still fail: ask the sender to retry), else TRK_CLAIMED.
 * Every TRK_CLAIMED is settled once with trk_dedup_settle.
 */
typedef enum trk_claim { TRK_CLAIMED, TRK_SEEN, TRK_BUSY } trk_claim;
trk_claim trk_dedup_claim(trk_dedup *d, uint64_t digest, int64_t now_ms);
/* Ends a claim: stored (durable in the log) adds digest as seen at now_ms; otherwise it is
 * forgotten, and a retry of the message will be stored. */
void trk_dedup_settle(trk_dedup *d, uint64_t digest, bool stored, int64_t now_ms);

/*
 * The same for many digests, sorted ascending, taking each lock once for the digests under
 * it (the set's stripes are ranges of digests). trk_dedup_claim_sorted claims them in order
 * into out[], a digest equal to the one before it being TRK_SEEN (a repeat within the
 * request), and stops after the first TRK_BUSY: it returns how many it looked at, that one
 * included. trk_dedup_settle_sorted settles digests[i] as stored[i] says.
 */
size_t trk_dedup_claim_sorted(trk_dedup *d, const uint64_t *digests, size_t n, int64_t now_ms,
                              trk_claim *out);
void trk_dedup_settle_sorted(trk_dedup *d, const uint64_t *digests, const bool *stored, size_t n,
                             int64_t now_ms);

/* The ids to save, oldest first within each of the set's stripes: emit(ctx, digest, at_ms)
 * for each, until it returns false (then false). Adding them in that order to a new set
 * (trk_dedup_add with their at_ms) rebuilds this one. Each stripe is copied under its lock
 * and emitted after it, so others may add meanwhile and emit may be slow. */
bool trk_dedup_each(trk_dedup *d, bool (*emit)(void *ctx, uint64_t digest, int64_t at_ms),
                    void *ctx);

#endif
