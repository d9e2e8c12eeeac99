/*
 * http.h - the HTTP server of `onramp serve`: the Segment Tracking API ingest endpoints
 * (/v1/track ... /v1/batch) and the health probes, over libmicrohttpd's thread pool. An
 * accepted message is appended to the event log before its 200 is sent. Only src/http/
 * includes the HTTP library; everything else talks to this header. Endpoints: docs/api.md.
 */
#ifndef ONR_HTTP_H
#define ONR_HTTP_H

#include "base/base.h"
#include "engine/shard.h"
#include "stream/elog.h"
#include "track/dedup.h"
#include "track/route.h"

typedef struct http_server http_server;

/* Limits of the ingest API: the defaults are Segment's (http_opts can change them). */
#define HTTP_MAX_EVENT_BYTES (32 * 1024)          /* one message, minified as sent */
#define HTTP_MAX_REQUEST_BYTES (500 * 1024)       /* one request body, after gzip */
#define HTTP_MAX_REQUEST_LIMIT (64 * 1024 * 1024) /* the largest max_request_bytes allowed */

/* Connections open at once: [HTTP_MAX_CONNECTIONS_DEFAULT], and each HTTP thread serves at
 * most HTTP_CONNS_PER_THREAD of them. libmicrohttpd 0.9.75's epoll loop stalls a thread whose
 * epoll_wait returns exactly 128 events (it waits again, with the blocking timeout, before
 * serving them), so no thread is given that many descriptors: its connections, the listening
 * socket and its wake-up pipe stay below 128. More connections than threads can serve wait
 * in the listen queue until one closes. */
#define HTTP_MAX_CONNECTIONS_DEFAULT 1000
#define HTTP_CONNS_PER_THREAD 120
#define HTTP_MAX_THREADS 256

/* The HTTP threads serving max_connections with at least threads of them. */
static inline int http_threads_for(int threads, int max_connections)
{
    int need = (max_connections + HTTP_CONNS_PER_THREAD - 1) / HTTP_CONNS_PER_THREAD;
    return threads > need ? threads : need;
}

typedef struct http_opts {
    const char *host; /* numeric address to bind, IPv4 or IPv6 ("127.0.0.1", "::1") */
    uint16_t port;    /* 0: any free port (see http_port) */
    int threads;      /* [2] size of the thread pool, at least; see below */
    /* [HTTP_MAX_CONNECTIONS_DEFAULT] connections open at once, at most HTTP_CONNS_PER_THREAD *
     * HTTP_MAX_THREADS; the pool grows to http_threads_for(threads, max_connections). */
    int max_connections;
    const char *const *write_keys; /* accepted write keys; at least one */
    size_t nwrite_keys;
    elog *log; /* accepted messages go here; not owned */
    /* messageIds accepted lately: a message whose id is in it is answered 200 and not stored
     * again (stock libraries resend when an answer is lost). NULL: no deduplication. */
    trk_dedup *dedup;
    /* Which partition a message goes to: the identity router (docs/api.md, "Partitions and
     * identity"), shared by the ingest threads. NULL: hash(userId, else anonymousId). */
    trk_router *router;
    /* Operator-facing messages (a JSON-line logger in main.c). Called from any thread, so it
     * must be thread-safe. level is "info", "warn" or "error". NULL: silent. */
    void (*logf)(void *ctx, const char *level, const char *msg);
    void *log_ctx;
    /* The live engine: ingest wakes the shard of each partition it appends to and answers 503
     * while that shard lags (shard_admit); /readyz waits for it; the management API under
     * /api/ and /metrics read it. NULL: ingest only (no /api/). Not owned. */
    shard_set *shards;
    /* The management API's bearer token; required when shards is set. */
    const char *admin_token;
    /* PUT /api/rules writes accepted rules here (atomically) before swapping them in, so that
     * a restart runs them. NULL: not written. */
    const char *rules_path;
    /* Per-message and per-request body limits; 0: HTTP_MAX_EVENT_BYTES, HTTP_MAX_REQUEST_BYTES.
     * max_event_bytes <= max_request_bytes <= HTTP_MAX_REQUEST_LIMIT, or http_start fails. */
    size_t max_event_bytes, max_request_bytes;
    /* A MaxMind .mmdb file: when set, stored messages get context.location.country from
     * context.ip, else the client's address (docs/api.md, "Enrichment"). NULL: none. */
    const char *geoip;
    /* [30 s] A connection that sends nothing for this long is closed, and so is one whose
     * request headers have not all arrived this long after the server began waiting for them
     * (a client trickling its headers a byte at a time). Whole seconds are used for the
     * former (libmicrohttpd's unit). */
    int64_t timeout_ms;
    /* Per write key, a token bucket: rate_limit events a second (a batch of 100 counts 100),
     * bursts of up to rate_burst events (0: one second's worth, at least 1). Over it: 429 with
     * Retry-After. rate_limit 0: unlimited. */
    double rate_limit;
    size_t rate_burst;
} http_opts;

/* The largest message ingest stores under these limits (its own members, the batch-level
 * fields copied into it, and what the server adds): what the event log's max_record must
 * allow. 0: the defaults. */
size_t http_max_record(size_t max_event_bytes, size_t max_request_bytes);

/*
 * Binds and starts serving. Returns 0, or a negative code with a message for people in err.
 * Caller owns *out; http_stop it. The write keys and the log must outlive the server. The
 * log must take records of http_max_record bytes; a request whose stored messages would
 * not fit one write of it (elog_max_batch) is refused (400) rather than failed.
 */
int http_start(const http_opts *o, http_server **out, char *err, size_t errlen);

/*
 * Refills o->dedup from the log: the messageIds of records received within the set's window
 * before now_ms, so that a restart keeps recognising resent messages. In the same one pass,
 * when o->router is set, refills the router from the ids, partition and receivedAt of every
 * record read (trk_route_learn), so that a restart routes as the server before it did.
 * Reads every partition in order, from from[p] (what http_state_load covered) or, when from
 * is NULL or the log was trimmed past it, from its first retained record; *records counts
 * the records read. Either of o->dedup and o->router may be NULL. Returns the number of
 * messageIds added (not known before), or a negative code with a message in err.
 */
long http_dedup_recover(const http_opts *o, const uint64_t *from, int64_t window_ms, int64_t now_ms,
                        uint64_t *records, char *err, size_t errlen);

/*
 * The ingest state of a stopped server: its router and recent messageIds, the log's id
 * (elog_id, taken while the log was open) and the log offsets they cover (ends[p] for each of
 * the log's partitions: every record below it went through them), written to path through a
 * temporary file, fsynced and renamed, so that the next start reads only the log past them.
 * Call it after http_stop, once the log is durable up to ends (o->log is not used: it may be
 * closed). Returns 0 or a negative code with a message in err.
 */
int http_state_save(const http_opts *o, const char *log_id, int partitions, const uint64_t *ends,
                    const char *path, char *err, size_t errlen);

/*
 * The same while ingest runs, called every so often from one thread: a call writes the
 * router and the recent messageIds with the log's ends as the previous call found them, once
 * every request that wrote to the log before that call has remembered its ids (so nothing
 * below those ends is missing); then it notes the ends for the next call. Returns 1 when
 * written, 0 when there was nothing to write yet (the first call, or such a request still
 * waits for its fsync), or a negative code with a message in err.
 */
int http_state_checkpoint(http_server *s, const char *path, char *err, size_t errlen);

/*
 * Loads path into o->router and o->dedup, both new and empty, and sets from[p] (one per
 * partition) to the offsets it covers; ids received more than window_ms before now_ms are
 * left out, and *ids counts those added. Returns 1 when loaded, 0 when there is no file, and
 * -1 when it cannot be used, with the reason in why: the router and the set may then hold
 * part of it, so start them anew before http_dedup_recover reads the whole log.
 */
int http_state_load(const http_opts *o, const char *path, int64_t window_ms, int64_t now_ms,
                    uint64_t *from, long *ids, char *why, size_t whylen);

/*
 * The receive-time watermark for the engine shards (shard_source.watermark): every message
 * not yet in the log was, or will be, stamped with a receivedAt at or after it. -1 when a
 * request is reading the clock at this very moment (ask again).
 */
int64_t http_watermark(http_server *s);

/* The port actually bound (useful with port 0). */
uint16_t http_port(const http_server *s);

/*
 * Graceful stop: closes the listening socket (no new connections), waits up to drain_ms for
 * requests in flight to be answered, then stops the threads and frees s. The log is left
 * open for the caller to close.
 */
void http_stop(http_server *s, int64_t drain_ms);

#endif
