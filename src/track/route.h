/*
 * route.h - the identity-aware partition router of ingest: a bounded, thread-safe map from a
 * user's ids (userId and anonymousId, kept apart) to the log partition their messages go to,
 * so that a visitor's anonymous events, the identify that names them, and the events after it
 * land in one partition, and so in the one engine shard that can merge the two profiles.
 */
#ifndef ONR_ROUTE_H
#define ONR_ROUTE_H

#include "base/base.h"
#include "track/track.h"

typedef struct trk_router trk_router;

/* Entries by default, and the bytes each takes (an 8-way set is two 64-byte cache lines). */
#define TRK_ROUTE_DEFAULT_CAPACITY ((size_t)4 * 1024 * 1024)
#define TRK_ROUTE_ENTRY_BYTES 16
#define TRK_ROUTE_MAX_CAPACITY ((size_t)1 << 32)

/*
 * A router remembering at most capacity ids (rounded up to a multiple of 8; 1 ..
 * TRK_ROUTE_MAX_CAPACITY). All of its memory, TRK_ROUTE_ENTRY_BYTES per entry, is allocated
 * here; routing allocates nothing. Ids are kept in sets of 8 (chosen by hash); when a set is
 * full, its least recently used id is forgotten. Caller owns the result; NULL when capacity
 * is out of range.
 */
trk_router *trk_route_new(size_t capacity);
void trk_route_free(trk_router *r);
size_t trk_route_capacity(const trk_router *r);
size_t trk_route_bytes(const trk_router *r);
/* Ids remembered now: walks the whole table, for tests and statistics, not the hot path. */
size_t trk_route_count(trk_router *r);

/*
 * The partition (0..partitions-1) of a message with these ids (either may be empty, not
 * both), remembering what it learns. Safe to call from many threads at once.
 *
 * - userId known: its partition; an anonymousId not known yet is remembered there too.
 * - else anonymousId known: its partition, and the userId is remembered there.
 * - else hash(anonymousId, or userId when there is none) mod partitions, the partition of
 *   the plain hash routing (trk_route_hash), and both ids are remembered there.
 *
 * An id once remembered keeps its partition until it is evicted, so every message of a user
 * goes where the user's first message went. now_ms orders the ids for eviction.
 */
int trk_route(trk_router *r, trk_str user_id, trk_str anon_id, int partitions, int64_t now_ms);

/* Brings the sets of user_id and anon_id (or previousId) towards the cache without taking
 * their locks, so that routing a request's messages after prefetching them all waits for
 * memory once rather than once per message. */
void trk_route_prefetch(const trk_router *r, trk_str user_id, trk_str anon_id);

/*
 * The same for an alias message (userId + previousId): previousId is routed like an
 * anonymousId; when it is not known as one, a userId of that name is looked up too (alias
 * also renames a former userId), before falling back to hash(previousId).
 */
int trk_route_alias(trk_router *r, trk_str user_id, trk_str previous_id, int partitions,
                    int64_t now_ms);

/* hash(id) mod partitions: where a message goes without a router (plain hash routing). */
int trk_route_hash(trk_str id, int partitions);

/*
 * Recovery: tells the router that a stored message with these ids (alias: userId and
 * previousId) is in partition, received at at_ms, so that a restarted server routes as the
 * one before it did. Feed it the retained log, each partition in its order, one partition
 * after another. A userId, and the anonymousId of a message without a userId, take the
 * partition of their latest message (ids are remembered at their first message and kept,
 * so these differ only after an eviction); an anonymousId (or previousId) seen only with a
 * userId takes the partition of its earliest such message, where it was first routed.
 */
void trk_route_learn(trk_router *r, trk_str user_id, trk_str anon_id, int partition, int64_t at_ms);

/*
 * The table as bytes (each set holding an id, after its index), to save a server's router
 * and load it into a new, empty one of the same capacity: trk_route_write gives the bytes to
 * put, called as often as it likes, which returns false to stop; it copies each set under
 * the set's lock, so messages may be routed meanwhile. trk_route_read fills the table from
 * get, which returns false when bytes are missing; it may not run while the router routes.
 * false from either leaves the table undefined (free it).
 */
bool trk_route_write(const trk_router *r, bool (*put)(void *ctx, const void *p, size_t n),
                     void *ctx);
bool trk_route_read(trk_router *r, bool (*get)(void *ctx, void *p, size_t n), void *ctx);

#endif
