/*
 * http.h - the HTTP server of `onramp serve`: the Segment Tracking API ingest endpoints
 * (/v1/track ... /v1/batch) and the health probes, over libmicrohttpd's thread pool. An
 * accepted message is appended to the event log before its 200 is sent. Only src/http/
 * includes the HTTP library; everything else talks to this header. Endpoints: docs/api.md.
 */
#ifndef ONR_HTTP_H
#define ONR_HTTP_H

#include "base/base.h"
#include "stream/elog.h"
#include "track/dedup.h"

typedef struct http_server http_server;

/* Limits of the ingest API (Segment's). */
#define HTTP_MAX_EVENT_BYTES (32 * 1024)    /* one message, minified as sent */
#define HTTP_MAX_REQUEST_BYTES (500 * 1024) /* one request body, after gzip */

typedef struct http_opts {
    const char *host;              /* numeric address to bind, IPv4 or IPv6 ("127.0.0.1", "::1") */
    uint16_t port;                 /* 0: any free port (see http_port) */
    int threads;                   /* [2] size of the thread pool */
    const char *const *write_keys; /* accepted write keys; at least one */
    size_t nwrite_keys;
    elog *log; /* accepted messages go here; not owned */
    /* messageIds accepted lately: a message whose id is in it is answered 200 and not stored
     * again (stock libraries resend when an answer is lost). NULL: no deduplication. */
    trk_dedup *dedup;
    /* Operator-facing messages (a JSON-line logger in main.c). Called from any thread, so it
     * must be thread-safe. level is "info", "warn" or "error". NULL: silent. */
    void (*logf)(void *ctx, const char *level, const char *msg);
    void *log_ctx;
} http_opts;

/*
 * Binds and starts serving. Returns 0, or a negative code with a message for people in err.
 * Caller owns *out; http_stop it. The write keys and the log must outlive the server.
 */
int http_start(const http_opts *o, http_server **out, char *err, size_t errlen);

/*
 * Refills o->dedup from the log: the messageIds of records received within the set's window
 * before now_ms, so that a restart keeps recognising resent messages. Reads every partition
 * from its first retained record. Returns the number of ids added, or a negative code with
 * a message in err.
 */
long http_dedup_recover(const http_opts *o, int64_t window_ms, int64_t now_ms, char *err,
                        size_t errlen);

/* The port actually bound (useful with port 0). */
uint16_t http_port(const http_server *s);

/*
 * Graceful stop: closes the listening socket (no new connections), waits up to drain_ms for
 * requests in flight to be answered, then stops the threads and frees s. The log is left
 * open for the caller to close.
 */
void http_stop(http_server *s, int64_t drain_ms);

#endif
