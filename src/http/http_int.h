/*
 * http_int.h - what server.c and api.c share inside src/http: the request counters behind
 * /metrics and the management API's entry points. Never included outside src/http.
 */
#ifndef ONR_HTTP_INT_H
#define ONR_HTTP_INT_H

#include "http/http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

/* The management API reads request bodies (rules files) up to this size. */
#define API_MAX_BODY (1024 * 1024)

/* Answers by status, for onramp_http_responses_total. */
#define HTTP_STATUS_KINDS 12
/* A latency histogram, in the fsync histogram's buckets (elog_fsync_bucket_us). */
typedef struct http_hist {
    atomic_ullong n, sum_us;
    atomic_ullong b[ELOG_FSYNC_BUCKETS]; /* per bucket, not cumulative */
} http_hist;

/* Why ingest refused messages (onramp_ingest_rejected_total{reason}, docs/api.md). */
typedef enum http_reject {
    REJECT_MALFORMED,    /* the body: not JSON, not an object, no batch, bad gzip or framing */
    REJECT_INVALID,      /* a message failing the field rules (its whole request refused) */
    REJECT_TOO_LARGE,    /* a message or a body over its limit */
    REJECT_UNAUTHORIZED, /* a missing or unknown write key */
    REJECT_RATE_LIMITED, /* the write key over --rate-limit */
    REJECT_ENGINE_LAG,   /* a partition's shard too far behind */
    REJECT_RESEND_IN_FLIGHT, /* a resend racing its first copy */
    REJECT_LOG_ERROR,    /* the event log failed to write or fsync */
    HTTP_REJECT_KINDS
} http_reject;

typedef struct http_counters {
    atomic_ullong events;     /* messages stored */
    atomic_ullong duplicates; /* resent messages answered 200 and not stored again */
    /* messages refused, by reason; a request refused before its messages are counted
     * counts one */
    atomic_ullong rejected[HTTP_REJECT_KINDS];
    atomic_ullong by_status[HTTP_STATUS_KINDS];
    /* ingest requests answered 200, from their whole body: until their messages were durable
     * under --fsync, and until the answer was sent */
    http_hist durable, answered;
} http_counters;

void http__count(http_counters *c, unsigned status);
void http__observe(http_hist *h, int64_t ns);
/* Queues an answer (body copied); challenge is a WWW-Authenticate value, retry_s > 0 adds
 * Retry-After. The status is counted once the request callback returns. */
enum MHD_Result http__reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                            const char *body, size_t len, const char *challenge, unsigned retry_s);
const http_opts *http__opts(const http_server *s);
http_counters *http__counters(http_server *s);

/* POST /api/replay runs in a thread of its own (detached), one at a time, its connection
 * suspended meanwhile; a stop cancels it and waits for it (api_replays_stop). */
typedef struct api_replays {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy; /* a replay runs: another is refused */
    int live;  /* replay threads that have not yet resumed their connection */
    atomic_bool cancel;
} api_replays;
typedef struct api_job api_job;

api_replays *http__replays(http_server *s);
void api_replays_init(api_replays *r);
/* Cancels a running replay and waits until its connection is resumed (its thread touches
 * nothing of the server after that). */
void api_replays_stop(api_replays *r);
/* Whether job has finished (its connection was resumed); then api_job_answer queues the
 * answer and frees job. A request that ends without answering frees it with api_job_free. */
bool api_job_done(api_job *job);
enum MHD_Result api_job_answer(struct MHD_Connection *c, api_job *job);
void api_job_free(api_job *job);

/* libmicrohttpd's unescaping of the path and the query arguments (its %HH), but for %2F ('/')
 * and %25 ('%'), which stay as they are: so that a '/' inside a user id is told from one
 * between the parts of a path. In place; returns the new length. http__unkeep decodes the two
 * where a value is taken out of the path or an argument. */
size_t http__unescape(void *cls, struct MHD_Connection *c, char *s);
/* Decodes the %2F and %25 http__unescape kept in s[0..n) into out (room for n bytes);
 * returns the decoded length. */
size_t http__unkeep(const char *s, size_t n, char *out);

/* Called with the headers of a request under /api/ or /metrics: authenticates it and
 * answers it when it has no body to read (returns true with *ret set). */
bool api_begin(http_server *s, struct MHD_Connection *c, const char *url, const char *method,
               enum MHD_Result *ret);
/* Answers a request whose body has been read; or, for a replay, suspends the connection
 * and sets *job, which the request keeps until api_job_done. */
enum MHD_Result api_finish(http_server *s, struct MHD_Connection *c, const char *url,
                           const char *method, const char *body, size_t len, api_job **job);

#endif
