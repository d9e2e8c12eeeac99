/*
 * server.c - the ingest half of `onramp serve`: libmicrohttpd with its epoll thread pool,
 * the Segment Tracking API routes, write-key auth and rate limits, body limits and gzip, a
 * deadline for slow clients' headers, and the append of accepted messages to the event log
 * before the 200. Each message is stored as its own minified JSON plus the fields the server
 * fills in (type, messageId, receivedAt, batch-level context/integrations/sentAt, enrichment:
 * trk_store_item in src/track/store.c), so that a replay of the log decodes exactly what was
 * accepted.
 */
#include "http/http.h"
#include "http/http_int.h"

#include "base/json.h"
#include "track/enrich.h"
#include "track/store.h"
#include "track/track.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define ROUTE_BATCH TRK_KIND_COUNT
#define ROUTE_HEALTHZ (TRK_KIND_COUNT + 1)
#define ROUTE_READYZ (TRK_KIND_COUNT + 2)
#define ROUTE_API (TRK_KIND_COUNT + 3) /* /api/... and /metrics: api.c */

/* The Segment endpoints: a message kind, or a batch. */
static bool is_ingest(int route)
{
    return route >= 0 && route <= ROUTE_BATCH;
}

/* Ingest threads stamp receivedAt in one of these slots until the request's appends are
 * done; the smallest stamp is the watermark the engine shards wait for (http_watermark). */
#define STAMP_SLOTS 512
_Static_assert(HTTP_MAX_THREADS <= STAMP_SLOTS / 2, "a stamp slot for every HTTP thread");
/* libmicrohttpd's memory per connection (headers and the read buffer), which it clears for
 * each request: its 32 KB default made that clearing a twentieth of the server's CPU. */
#define CONN_MEMORY (12 * 1024)
/* The most of a request body's buffer made before its bytes arrive. */
#define BODY_RESERVE (64 * 1024)
#define STAMPING INT64_MIN /* a thread is reading the clock */

/* The re-written messages of a request are the body plus what the server fills in per item:
 * messageId, receivedAt, enrichment (a User-Agent header of at most TRK_UA_HEADER_MAX among it:
 * about ITEM_EXTRA_BYTES in all) and copies of the batch-level fields. They are bounded by
 * out_doc_bytes (http_start): 4 times the body limit, plus ITEM_EXTRA_BYTES for every
 * MIN_ITEM_BYTES of it (no valid message is shorter); a request past it is refused, so that
 * what a request costs stays bounded whatever the copies of a batch context add. */
#define ITEM_EXTRA_BYTES (TRK_UA_HEADER_MAX + 512)
#define MIN_ITEM_BYTES 24

/* Nesting a body may have (docs/api.md, "Limits and errors"): one level under the parser's
 * most, so that a stored message, which the engine parses again, stays within it whatever is
 * added to it. */
#define MAX_BODY_DEPTH (JDOC_MAX_DEPTH - 1)

/* A body that broke a limit mid-way (chunked, or gzip) is read and dropped up to this many
 * more bytes so that the client can be answered; past it the connection is closed. */
#define DISCARD_MAX (16 * 1024 * 1024)

/* Reusable per-request scratch: parsers and buffers, so a request allocates nothing once the
 * pool has warmed up to the largest request seen. */
enum { ITEM_OK = 0, ITEM_NOT_OBJECT, ITEM_TOO_BIG };

typedef struct work {
    struct work *next;
    jdoc *in;
    onr_buf items; /* the items as stored, one after another */
    onr_buf reply;
    size_t cap;    /* entries in the arrays below */
    size_t *start; /* span of item i in items */
    size_t *end;
    size_t *gen;    /* offset in items of the messageId generated for item i, or SIZE_MAX */
    int *part;      /* partition of item i; -1 for a resent message, not stored again */
    uint64_t *mid;  /* digest of item i's messageId */
    struct claim_order {
        uint64_t mid;
        size_t i;
    } *ord;         /* the items by messageId digest, then position: the order ids are claimed in */
    uint64_t *smid; /* the digests in that order */
    trk_claim *cl;  /* the claim of ord[k] */
    trk_str *ids;   /* item i's userId and anonymousId (alias: previousId) at 2i, 2i+1 */
    uint8_t *alias; /* item i is an alias */
    uint8_t *bad;   /* item i failed before decoding: ITEM_NOT_OBJECT or ITEM_TOO_BIG */
    size_t *aux;    /* its jtype, or its size */
    elog_rec *recs; /* items grouped by partition */
    size_t *count;  /* per partition, partitions + 1 entries */
    uint64_t *ends; /* per partition: the log offset after this request's records */
    trk_event ev;
    /* the handoff (shard_offer): the shards' schema, and each item decoded under it */
    uint64_t hgen; /* of hs; 0: not copied yet */
    trk_schema hs;
    onr_buf hnames;
    onr_buf pk;       /* the items packed (trk_pack), one after another */
    size_t *pk_at;    /* item i's in pk */
    uint32_t *pk_len; /* 0: none */
    size_t *rec_item; /* the item of each of recs */
} work;

/* A token bucket: the rate limit of one write key. */
typedef struct bucket {
    pthread_mutex_t mu;
    double tokens; /* may go below 0 after a batch larger than the burst */
    int64_t at_ms; /* monotonic time of the last refill */
} bucket;

/* A TCP connection, while it is open: watched for request headers that take too long. */
typedef struct conn {
    struct conn *prev, *next;
    int fd;
    bool cut;                   /* shut down by the reaper */
    _Atomic int64_t waiting_ms; /* monotonic time the server began waiting for headers; 0:
                                   a request is being read or answered */
} conn;

struct http_server {
    http_opts o;
    struct MHD_Daemon *d;
    int partitions;
    uint16_t port;
    atomic_int active; /* requests between their first call and their completion */
    pthread_mutex_t pool_mu;
    work *pool;
    size_t max_event, max_request;       /* the limits in force */
    size_t out_doc_bytes;                /* bound of a request's re-written messages */
    trk_geo *geo;                        /* --geoip; NULL: none */
    _Atomic int64_t stamps[STAMP_SLOTS]; /* 0: free */
    /* Each HTTP thread's answer to a stored request, made once (by its stamp slot) and
     * queued again for every request it answers; freed after the daemon stops. */
    struct MHD_Response *ok[STAMP_SLOTS];
    /* Requests from their first log write until they are answered (their ids remembered,
     * or they failed), counted by the epoch they began in; http_state_checkpoint flips the
     * epoch, and stopping waits for both counts to reach zero. */
    _Atomic long inflight[2];
    atomic_int epoch;
    uint64_t *state_from; /* the log's ends when the epoch last flipped */
    bool state_armed;
    atomic_int nstamps;
    http_counters counters;
    bucket *buckets; /* per write key, when there is a rate limit; else NULL */
    double burst;
    /* Open connections and the thread that closes those whose headers take too long. */
    pthread_mutex_t conns_mu;
    conn *conns;
    pthread_cond_t reaper_cv;
    pthread_t reaper;
    bool reaper_stop;
    /* Requests written to the log wait for its fsync policy suspended (the log's sync
     * threads answer them), so that no request holds an HTTP thread while the disk syncs;
     * stopping waits, on acks_cv, until inflight (above) is down to none. */
    pthread_mutex_t acks_mu;
    pthread_cond_t acks_cv;
    api_replays replays; /* POST /api/replay */
};

/* A request's appends, for the fsync wait: per partition it wrote, the log offset after its
 * records and the wait for it, and its stored messages' ids (remembered once every partition
 * is durable). The last partition to become durable answers: it resumes the connection. */
typedef struct ack_part {
    elog_waiter w; /* first: the waiter is the ack_part */
    struct ack *a;
    int part;
    int rc; /* once durable: 0, or why its fsync failed */
    uint64_t end;
} ack_part;

typedef struct ack {
    http_server *s;
    struct MHD_Connection *c;
    struct req *r;
    int64_t now;
    size_t stored, duplicates;
    _Atomic int pending; /* partitions not yet durable, plus one while they are asked */
    _Atomic bool failed; /* an fsync failed: answer 503 */
    int nparts;
    int epoch; /* of settle_begin */
    ack_part *parts;
    size_t nids;
    uint64_t *ids; /* the digests of the messageIds stored, ascending */
    int *id_ap;    /* the index in parts of ids[k]'s partition */
    bool *id_stored;
} ack;

/* One request, from its headers to its completion callback. */
typedef struct req {
    int route;
    int key;     /* index of the write key that authenticated it; -1 before */
    conn *conn;  /* its connection (NULL when not known) */
    bool authed; /* by the Authorization header */
    bool gzip;
    bool z_init, z_end;
    bool rejected;        /* an answer was queued before the body was read */
    unsigned fail_status; /* the body broke a rule mid-way; answered once it ends */
    const char *fail_msg, *fail_limit;
    size_t discarded;
    size_t limit;
    bool import; /* /v1/import: a backfill, not sent from the users' devices */
    /* Written to the log, waiting (suspended) for the fsync policy: the last partition to be
     * durable sets status, then resumes the connection, whose next call answers. */
    struct ack *ack;
    _Atomic unsigned ack_status; /* 0 while waiting */
    bool ack_answered;
    /* For the ingest histograms (mono_ns): the whole body in hand, and its messages durable
     * (0: not answered 200) */
    int64_t body_ns;
    _Atomic int64_t durable_ns;
    char fail_buf[96];
    z_stream z;
    onr_buf body;
    api_job *job; /* POST /api/replay, suspended until it is done */
} req;

/* ---- small helpers */

/* For durations: never steps back. */
static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* For deadlines and rates: never 0, never steps back. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
}

/* This thread's stamp slot in s (pool threads get one each on first use). */
static _Thread_local struct {
    const http_server *s;
    int slot;
} tl_stamp;

static _Atomic int64_t *stamp_slot(http_server *s)
{
    if (tl_stamp.s != s) {
        tl_stamp.s = s;
        tl_stamp.slot = atomic_fetch_add(&s->nstamps, 1);
    }
    return &s->stamps[tl_stamp.slot];
}

int64_t http_watermark(http_server *s)
{
    /* The clock is read before the slots: a request that takes its stamp after a slot was
     * read reads the clock later, so its stamp is at least w. */
    int64_t w = onr_wall_ms();
    int n = ONR_MIN(atomic_load(&s->nstamps), STAMP_SLOTS);
    for (int i = 0; i < n; i++) {
        int64_t v = atomic_load(&s->stamps[i]);
        if (v == STAMPING)
            return -1;
        if (v && v < w)
            w = v;
    }
    return w;
}

/* The status of the last answer this thread queued, for the counters. */
static _Thread_local unsigned tl_status;
/* The current request is to an ingest endpoint: its answer carries the CORS headers that let
 * a page on any origin send events (docs/api.md, "Browsers"). */
static _Thread_local bool tl_cors;
/* Why this thread's current ingest request was refused (-1: it was not), and how many of
 * its messages that refused (counted in on_request). */
static _Thread_local int tl_reject;
static _Thread_local size_t tl_reject_n;

static void rejecting(http_reject why, size_t messages)
{
    tl_reject = (int)why;
    tl_reject_n = messages ? messages : 1;
}

#define logmsg(s, level, ...) onr_logf((s)->o.logf, (s)->o.log_ctx, level, __VA_ARGS__)

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    http_server *s = cls;
    if (!s->o.logf)
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    s->o.logf(s->o.log_ctx, "warn", msg);
}

static bool key_eq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    if (an != bn)
        return false;
    unsigned char diff = 0; /* no early exit: the time does not tell how much matched */
    for (size_t i = 0; i < an; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* The index of write key k[0..n), or -1. Every key is compared, whatever matched. */
static int write_key_index(const http_server *s, const char *k, size_t n)
{
    int found = -1;
    for (size_t i = 0; i < s->o.nwrite_keys; i++)
        if (key_eq(k, n, s->o.write_keys[i]))
            found = (int)i;
    return n > 0 ? found : -1;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decodes base64 into out (at most cap bytes); returns the length or -1. */
static long b64decode(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= cap)
                return -1;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    return (long)n;
}

/* The user name of "Authorization: Basic base64(user:password)", or NULL. */
static const char *basic_user(const char *hdr, char *buf, size_t cap, size_t *len)
{
    if (!hdr || strncasecmp(hdr, "Basic ", 6) != 0)
        return NULL;
    hdr += 6;
    while (*hdr == ' ')
        hdr++;
    long n = b64decode(hdr, buf, cap);
    if (n < 0)
        return NULL;
    const char *colon = memchr(buf, ':', (size_t)n);
    *len = colon ? (size_t)(colon - buf) : (size_t)n;
    return buf;
}

/* A limit for people: "32 KB" when a whole number of KB, else "1000 bytes". */
static const char *limit_text(size_t n, char *buf, size_t cap)
{
    if (n % 1024 == 0)
        snprintf(buf, cap, "%zu KB", n / 1024);
    else
        snprintf(buf, cap, "%zu bytes", n);
    return buf;
}

/* ---- answers */

/* Ingest answers may be read by a page of any origin: the events it sends carry a write key,
 * not the browser's cookies, and Retry-After is for the page's retry logic. */
static void add_cors(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
}

/* The answer to a CORS preflight (OPTIONS) of an ingest endpoint: 204, POST allowed with the
 * headers Segment's libraries send. */
static enum MHD_Result send_preflight(struct MHD_Connection *c)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    add_cors(resp);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "POST, OPTIONS");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            "Content-Type, Authorization, Content-Encoding");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
    tl_status = MHD_HTTP_NO_CONTENT;
    enum MHD_Result r = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    return r;
}

/* retry_s > 0 adds Retry-After: retry_s. */
enum MHD_Result http__reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                            const char *body, size_t len, const char *challenge, unsigned retry_s)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (tl_cors)
        add_cors(resp);
    if (challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge);
    if (retry_s) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", retry_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    tl_status = status;
    enum MHD_Result r = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, const char *body,
                                 size_t len, bool auth_challenge, unsigned retry_s)
{
    return http__reply(c, status, "application/json", body, len,
                       auth_challenge ? "Basic realm=\"onramp\"" : NULL, retry_s);
}

/* {"success":false,"error":msg[,"limit":limit]}, with Retry-After: retry_s when > 0 */
static enum MHD_Result send_error_retry(struct MHD_Connection *c, unsigned status, const char *msg,
                                        const char *limit, unsigned retry_s)
{
    onr_buf b = {0};
    onr_buf_puts(&b, "{\"success\":false,\"error\":");
    jw_strz(&b, msg);
    if (limit) {
        onr_buf_puts(&b, ",\"limit\":");
        jw_strz(&b, limit);
    }
    onr_buf_putc(&b, '}');
    enum MHD_Result r =
        send_json(c, status, b.data, b.len, status == MHD_HTTP_UNAUTHORIZED, retry_s);
    onr_buf_free(&b);
    return r;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg,
                                  const char *limit)
{
    return send_error_retry(c, status, msg, limit, status == MHD_HTTP_SERVICE_UNAVAILABLE);
}

static const char SUCCESS[] = "{\"success\":true}";

/* 200 {"success":true}: the answer to most requests, from this thread's own response rather
 * than one built and freed each time (libmicrohttpd queues a response on many connections
 * and counts its uses). */
static enum MHD_Result send_success(http_server *s, struct MHD_Connection *c)
{
    struct MHD_Response **ok = &s->ok[stamp_slot(s) - s->stamps];
    if (!*ok) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            sizeof(SUCCESS) - 1, (void *)SUCCESS, MHD_RESPMEM_PERSISTENT);
        if (r)
            add_cors(r);
        if (r && MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
                     MHD_YES) {
            MHD_destroy_response(r);
            r = NULL;
        }
        if (!r)
            return send_json(c, MHD_HTTP_OK, SUCCESS, sizeof(SUCCESS) - 1, false, false);
        *ok = r;
    }
    tl_status = MHD_HTTP_OK;
    return MHD_queue_response(c, MHD_HTTP_OK, *ok);
}

/* ---- the work pool */

static work *work_get(http_server *s)
{
    pthread_mutex_lock(&s->pool_mu);
    work *w = s->pool;
    if (w)
        s->pool = w->next;
    pthread_mutex_unlock(&s->pool_mu);
    if (w)
        return w;
    w = onr_calloc(1, sizeof(*w));
    w->in = jdoc_new(s->max_request);
    w->count = onr_calloc((size_t)s->partitions + 1, sizeof(*w->count));
    w->ends = onr_calloc((size_t)s->partitions + 1, sizeof(*w->ends));
    if (!w->in || jdoc_set_max_depth(w->in, MAX_BODY_DEPTH)) {
        fputs("onramp: out of memory (JSON parser)\n", stderr);
        abort();
    }
    /* messages are stored as sent (the body stays in place until they are appended) */
    jdoc_keep_text(w->in, true);
    return w;
}

static void work_put(http_server *s, work *w)
{
    pthread_mutex_lock(&s->pool_mu);
    w->next = s->pool;
    s->pool = w;
    pthread_mutex_unlock(&s->pool_mu);
}

static void work_free(work *w)
{
    jdoc_free(w->in);
    onr_buf_free(&w->items);
    onr_buf_free(&w->reply);
    onr_free(w->start);
    onr_free(w->end);
    onr_free(w->gen);
    onr_free(w->part);
    onr_free(w->bad);
    onr_free(w->aux);
    onr_free(w->mid);
    onr_free(w->ord);
    onr_free(w->smid);
    onr_free(w->cl);
    onr_free(w->ids);
    onr_free(w->alias);
    onr_free(w->recs);
    onr_free(w->count);
    onr_free(w->ends);
    onr_buf_free(&w->hnames);
    onr_buf_free(&w->pk);
    onr_free(w->pk_at);
    onr_free(w->pk_len);
    onr_free(w->rec_item);
    onr_free(w);
}

static void work_reserve(work *w, size_t n)
{
    if (n <= w->cap)
        return;
    size_t cap = ONR_MAX(n, w->cap * 2);
    w->start = onr_realloc(w->start, cap * sizeof(*w->start));
    w->end = onr_realloc(w->end, cap * sizeof(*w->end));
    w->gen = onr_realloc(w->gen, cap * sizeof(*w->gen));
    w->part = onr_realloc(w->part, cap * sizeof(*w->part));
    w->bad = onr_realloc(w->bad, cap * sizeof(*w->bad));
    w->aux = onr_realloc(w->aux, cap * sizeof(*w->aux));
    w->mid = onr_realloc(w->mid, cap * sizeof(*w->mid));
    w->ord = onr_realloc(w->ord, cap * sizeof(*w->ord));
    w->smid = onr_realloc(w->smid, cap * sizeof(*w->smid));
    w->cl = onr_realloc(w->cl, cap * sizeof(*w->cl));
    w->ids = onr_realloc(w->ids, 2 * cap * sizeof(*w->ids));
    w->alias = onr_realloc(w->alias, cap * sizeof(*w->alias));
    w->recs = onr_realloc(w->recs, cap * sizeof(*w->recs));
    w->pk_at = onr_realloc(w->pk_at, cap * sizeof(*w->pk_at));
    w->pk_len = onr_realloc(w->pk_len, cap * sizeof(*w->pk_len));
    w->rec_item = onr_realloc(w->rec_item, cap * sizeof(*w->rec_item));
    w->cap = cap;
}

/* ---- rate limits */

/*
 * Takes n events from the bucket of write key k. Returns 0 when they may pass, else the whole
 * seconds (>= 1) until they would. A request larger than the burst passes when the bucket is
 * full and leaves it in debt, so that such a batch is not refused forever and the average
 * rate still holds.
 */
static unsigned rate_take(http_server *s, int k, size_t n)
{
    if (!s->buckets || k < 0 || n == 0)
        return 0;
    bucket *b = &s->buckets[k];
    double rate = s->o.rate_limit, need = ONR_MIN((double)n, s->burst), wait = 0;
    pthread_mutex_lock(&b->mu);
    int64_t t = mono_ms();
    b->tokens = ONR_MIN(s->burst, b->tokens + (double)(t - b->at_ms) * rate / 1000.0);
    b->at_ms = t;
    if (b->tokens >= need)
        b->tokens -= (double)n;
    else
        wait = ceil((need - b->tokens) / rate);
    pthread_mutex_unlock(&b->mu);
    return wait <= 0 ? 0 : wait >= 86400 ? 86400 : ONR_MAX((unsigned)wait, 1u);
}

/* Gives n events back to the bucket of write key k: their request was refused by the server
 * (503), not for its rate, and its retry should not be refused for it. */
static void rate_give_back(http_server *s, int k, size_t n)
{
    if (!s->buckets || k < 0 || n == 0)
        return;
    bucket *b = &s->buckets[k];
    pthread_mutex_lock(&b->mu);
    b->tokens = ONR_MIN(s->burst, b->tokens + (double)n);
    pthread_mutex_unlock(&b->mu);
}

/* A request the server itself refused (503): counted by reason, and its events given back to
 * its key's rate limit. */
static void refused_by_server(http_server *s, const req *r, http_reject why, size_t n)
{
    rejecting(why, n);
    rate_give_back(s, r->key, n);
}

/* ---- messages */

/* ---- enrichment (docs/api.md, "Enrichment"): what the request tells trk_store_item */

static const struct sockaddr *peer_of(void *ctx)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(ctx, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return ci ? ci->client_addr : NULL;
}

static void enrich_init(trk_enrich_req *en, const http_server *s, struct MHD_Connection *c,
                        bool from_request)
{
    memset(en, 0, sizeof(*en));
    en->geo = s->geo;
    en->from_request = from_request;
    en->peer = peer_of;
    en->peer_ctx = c;
    const char *ua =
        from_request ? MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT)
                     : NULL;
    size_t n = ua ? strlen(ua) : 0;
    if (n && n <= TRK_UA_HEADER_MAX) {
        en->ua_hdr = ua;
        en->ua_hdr_len = n;
    }
}

static void reply_item_error(onr_buf *r, size_t *nbad, size_t index, const char *reason)
{
    onr_buf_puts(r, (*nbad)++ ? "," : "");
    onr_buf_printf(r, "{\"index\":%zu,\"reason\":", index);
    jw_strz(r, reason);
    onr_buf_putc(r, '}');
}

/* The partition of item i: by the identity router, or by hash(userId, else anonymousId). */
static int partition_of(http_server *s, const work *w, size_t i, int64_t now)
{
    trk_str uid = w->ids[2 * i], aid = w->ids[2 * i + 1];
    if (!s->o.router)
        return trk_route_hash(uid.n ? uid : aid, s->partitions);
    if (w->alias[i])
        return trk_route_alias(s->o.router, uid, aid, s->partitions, now);
    return trk_route(s->o.router, uid, aid, s->partitions, now);
}

/* Points a parse error at where the body broke: "invalid JSON: why" becomes "invalid JSON at
 * line L, column C (byte B): why", counted in the body as received (after gzip). */
static void say_where(char *err, size_t cap, const char *body, long at)
{
    static const char head[] = "invalid JSON: ";
    if (at < 0 || strncmp(err, head, sizeof(head) - 1) != 0)
        return;
    size_t line = 1, col = 1;
    for (long i = 0; i < at; i++) {
        col = body[i] == '\n' ? 1 : col + 1;
        line += body[i] == '\n';
    }
    char where[96];
    size_t k = (size_t)snprintf(where, sizeof(where),
                                "invalid JSON at line %zu, column %zu (byte %ld): ", line, col, at);
    const char *why = err + sizeof(head) - 1;
    size_t wn = strlen(why);
    if (k + 1 >= cap)
        return;
    wn = ONR_MIN(wn, cap - k - 1);
    memmove(err + k, why, wn);
    memcpy(err, where, k);
    err[k + wn] = 0;
}

static int cmp_claim_order(const void *a, const void *b)
{
    const struct claim_order *x = a, *y = b;
    if (x->mid != y->mid)
        return x->mid < y->mid ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Ends the claims of w's messages that were to be stored in partition `from` or after, none
 * of which was written (a resend or an unclaimed message is at -1). */
static void release_claims(http_server *s, const work *w, size_t n, int from, int64_t now)
{
    if (!s->o.dedup)
        return;
    for (size_t i = 0; i < n; i++)
        if (w->part[i] >= from)
            trk_dedup_settle(s->o.dedup, w->mid[i], false, now);
}

/* ---- waiting for the fsync policy off the HTTP threads */

/* A request is about to write to the log: counted in the current epoch until settle_end.
 * Counted, then the epoch read again, so that an epoch flipped meanwhile is not missed. */
static int settle_begin(http_server *s)
{
    for (;;) {
        int ep = atomic_load(&s->epoch);
        atomic_fetch_add(&s->inflight[ep], 1);
        if (atomic_load(&s->epoch) == ep)
            return ep;
        atomic_fetch_sub(&s->inflight[ep], 1);
    }
}

static void settle_end(http_server *s, int ep)
{
    if (atomic_fetch_sub(&s->inflight[ep], 1) != 1)
        return;
    pthread_mutex_lock(&s->acks_mu); /* wait_acks may be waiting for it */
    pthread_cond_broadcast(&s->acks_cv);
    pthread_mutex_unlock(&s->acks_mu);
}

/* One allocation: the ack and its arrays after it. */
static ack *ack_new(http_server *s, const work *w, size_t n, int written, int64_t now,
                    size_t stored)
{
    int nparts = 0;
    size_t from = 0;
    for (int p = 0; p < written; p++) {
        if (w->count[p] != from)
            nparts++;
        from = w->count[p];
    }
    size_t np = (size_t)nparts, size = sizeof(ack) + np * sizeof(ack_part) +
                                       n * (sizeof(uint64_t) + sizeof(int) + sizeof(bool));
    ack *a = onr_malloc(size);
    memset(a, 0, sizeof(*a));
    a->s = s;
    a->parts = (ack_part *)(void *)(a + 1);
    a->ids = (uint64_t *)(void *)(a->parts + np);
    a->id_ap = (int *)(void *)(a->ids + n);
    a->id_stored = (bool *)(void *)(a->id_ap + n);
    a->now = now;
    a->stored = stored;
    a->duplicates = n - stored;
    from = 0;
    for (int p = 0; p < written; p++) {
        if (w->count[p] != from) {
            ack_part *ap = &a->parts[a->nparts++];
            memset(ap, 0, sizeof(*ap));
            ap->a = a;
            ap->part = p;
            ap->end = w->ends[p];
        }
        from = w->count[p];
    }
    /* the ids in claim order (ascending), each with its partition's place in parts */
    for (size_t k = 0; s->o.dedup && k < n; k++) {
        size_t i = w->ord[k].i;
        if (w->part[i] < 0 || w->part[i] >= written)
            continue;
        int lo = 0, hi = a->nparts - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (a->parts[mid].part < w->part[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        a->id_ap[a->nids] = lo;
        a->ids[a->nids++] = w->mid[i];
    }
    return a;
}

/* Partition ap of a is durable (rc 0) or its fsync failed. */
static void ack_part_result(ack *a, ack_part *ap, int rc)
{
    ap->rc = rc;
    if (rc) {
        logmsg(a->s, "error", "event log fsync of partition %d failed: %s", ap->part,
               rc < 0 && rc > -4096 ? strerror(-rc) : "limit");
        atomic_store(&a->failed, true);
    }
}

/* Every partition of a is settled: the ids stored are remembered, so that a retry of the
 * request does not store them again, and those of a failed partition are forgotten. One
 * call for them all, in ascending order, takes each lock of the set once for its ids. */
static void ack_settle_ids(ack *a)
{
    trk_dedup *d = a->s->o.dedup;
    if (!d || !a->nids)
        return;
    for (size_t k = 0; k < a->nids; k++) {
        if (a->nids > 1)
            trk_dedup_prefetch(d, a->ids[k]);
        a->id_stored[k] = a->parts[a->id_ap[k]].rc == 0;
    }
    trk_dedup_settle_sorted(d, a->ids, a->id_stored, a->nids, a->now);
}

/* Every partition of a is settled: its ids are settled, and the status to answer returned:
 * 200, or 503 after a failed fsync. */
static unsigned ack_finish(ack *a)
{
    ack_settle_ids(a);
    if (atomic_load(&a->failed))
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    atomic_fetch_add(&a->s->counters.events, a->stored);
    atomic_fetch_add(&a->s->counters.duplicates, a->duplicates);
    return MHD_HTTP_OK;
}

/* Waits for each partition of a in this thread. Returns the status to answer. */
static unsigned ack_wait(ack *a)
{
    for (int k = 0; k < a->nparts; k++)
        ack_part_result(a, &a->parts[k],
                        elog_wait(a->s->o.log, a->parts[k].part, a->parts[k].end));
    return ack_finish(a);
}

/* Drops one of a's pending counts; the last answers: it resumes the suspended connection,
 * after which a belongs to the request again. */
static void ack_release(ack *a)
{
    if (atomic_fetch_sub(&a->pending, 1) != 1)
        return;
    http_server *s = a->s;
    struct MHD_Connection *c = a->c;
    int epoch = a->epoch;
    unsigned st = ack_finish(a);
    if (st == MHD_HTTP_OK)
        atomic_store(&a->r->durable_ns, mono_ns());
    atomic_store(&a->r->ack_status, st);
    MHD_resume_connection(c);
    settle_end(s, epoch); /* after the resume: a stop may free the daemon once it is counted */
}

/* elog_notify's callback, from a sync thread (or this one, when already durable). */
static void ack_part_done(elog_waiter *w, int rc)
{
    ack_part *ap = (ack_part *)(void *)w;
    ack_part_result(ap->a, ap, rc);
    ack_release(ap->a);
}

/* Suspends the request's connection until every partition of a is durable. */
static void ack_suspend(http_server *s, ack *a)
{
    MHD_suspend_connection(a->c);
    atomic_store(&a->pending, a->nparts + 1);
    for (int k = 0; k < a->nparts; k++) {
        a->parts[k].w.done = ack_part_done;
        elog_notify(s->o.log, a->parts[k].part, a->parts[k].end, &a->parts[k].w);
    }
    ack_release(a);
}

/* Waits until no request waits for the log: each is answered by the sync threads. A count
 * that reaches zero wakes this (settle_end); the sum is read again under the mutex. */
static void wait_acks(http_server *s)
{
    pthread_mutex_lock(&s->acks_mu);
    while (atomic_load(&s->inflight[0]) + atomic_load(&s->inflight[1]) > 0)
        pthread_cond_wait(&s->acks_cv, &s->acks_mu);
    pthread_mutex_unlock(&s->acks_mu);
}

/* Parses, authenticates, validates and appends a whole body; queues the answer. */
static enum MHD_Result ingest(http_server *s, struct MHD_Connection *c, req *r)
{
    char err[320];
    if (r->gzip && !r->z_end) {
        rejecting(REJECT_MALFORMED, 1);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "gzip body is truncated", NULL);
    }

    r->body_ns = mono_ns();
    work *w = work_get(s);
    enum MHD_Result ret;
    _Atomic int64_t *stamp = stamp_slot(s);
    atomic_store(stamp, STAMPING);
    int64_t now = onr_wall_ms();
    atomic_store(stamp, now);
    jval root;
    /* parsed where it is: the padding the parser reads past the end is made here */
    onr_buf_reserve(&r->body, JDOC_PADDING);
    memset(r->body.data + r->body.len, 0, JDOC_PADDING);
    if (jdoc_parse_padded(w->in, r->body.data, r->body.len, r->body.len + JDOC_PADDING, &root, err,
                          sizeof(err))) {
        say_where(err, sizeof(err), r->body.data, jdoc_error_offset(w->in));
        rejecting(REJECT_MALFORMED, 1);
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, err, NULL);
        goto done;
    }
    if (jval_type(root) != J_OBJECT) {
        snprintf(err, sizeof(err), "body must be a JSON object, got %s",
                 jtype_name(jval_type(root)));
        rejecting(REJECT_MALFORMED, 1);
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, err, NULL);
        goto done;
    }
    if (!r->authed) {
        jval wk = jval_getz(root, "writeKey");
        size_t n = 0;
        const char *k = jval_type(wk) == J_STRING ? jval_str(wk, &n) : NULL;
        if (k)
            r->key = write_key_index(s, k, n);
        if (!k || r->key < 0) {
            rejecting(REJECT_UNAUTHORIZED, 1);
            ret = send_error(c, MHD_HTTP_UNAUTHORIZED,
                             k ? "unknown write key"
                               : "missing write key (HTTP Basic auth user name, or \"writeKey\")",
                             NULL);
            goto done;
        }
    }

    /* The items, re-written as stored; each is validated as stored (trk_decode_overlay)
     * without parsing what was written. */
    trk_batch_fields bf = {{0}, {0}, {0}};
    size_t n;
    jval batch = {0};
    int kind = r->route == ROUTE_BATCH ? -1 : r->route;
    if (kind < 0) {
        batch = jval_getz(root, "batch");
        if (jval_type(batch) != J_ARRAY) {
            rejecting(REJECT_MALFORMED, 1);
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, "missing \"batch\" (an array of messages)",
                             NULL);
            goto done;
        }
        bf.context = jval_getz(root, "context");
        bf.integrations = jval_getz(root, "integrations");
        bf.sent_at = jval_getz(root, "sentAt");
        n = 0;
        jiter it = jval_iter(batch);
        jval v;
        while (jiter_next(&it, &v, NULL, NULL))
            n++;
    } else {
        n = 1;
    }
    unsigned wait_s = rate_take(s, r->key, n);
    if (wait_s) {
        snprintf(err, sizeof(err),
                 "over the rate limit of this write key: %g events a second, bursts of %.0f; "
                 "retry in %u s",
                 s->o.rate_limit, s->burst, wait_s);
        rejecting(REJECT_RATE_LIMITED, n);
        ret = send_error_retry(c, MHD_HTTP_TOO_MANY_REQUESTS, err, "rate", wait_s);
        goto done;
    }
    work_reserve(w, n);
    onr_buf_clear(&w->items);
    onr_buf_clear(&w->reply);
    size_t nbad = 0;
    trk_enrich_req en;
    enrich_init(&en, s, c, !r->import);
    jiter it = kind < 0 ? jval_iter(batch) : (jiter){0};
    for (size_t i = 0; i < n; i++) {
        jval item = root;
        if (kind < 0)
            jiter_next(&it, &item, NULL, NULL);
        w->start[i] = w->items.len;
        w->bad[i] = ITEM_OK;
        if (jval_type(item) != J_OBJECT) {
            w->bad[i] = ITEM_NOT_OBJECT;
            w->aux[i] = jval_type(item);
        } else {
            size_t own;
            trk_store_item(&w->items, item, kind, kind < 0 ? &bf : NULL, now, &en, &own,
                           &w->gen[i]);
            if (own > s->max_event) {
                w->bad[i] = ITEM_TOO_BIG;
                w->aux[i] = own;
            }
        }
        w->end[i] = w->items.len;
        if (w->items.len > s->out_doc_bytes) {
            char lt[32];
            snprintf(err, sizeof(err),
                     "the %zu messages of this request take more than %s once stored (with "
                     "the batch context copied into each); send fewer per request",
                     n, limit_text(s->out_doc_bytes, lt, sizeof(lt)));
            rejecting(REJECT_TOO_LARGE, n);
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, err, "request");
            goto done;
        }
    }

    static const trk_schema no_fields;
    trk_overlay ov = {.kind = kind, .received_ms = now};
    if (kind < 0) {
        ov.sent_at = bf.sent_at;
        ov.context = bf.context;
    }
    /* Decoded under the shards' schema, each item is offered to the shard that runs it
     * (shard_offer) once appended. */
    const trk_schema *schema = &no_fields;
    if (s->o.shards) {
        if (shard_handoff_gen(s->o.shards) != w->hgen)
            w->hgen = shard_handoff_schema(s->o.shards, &w->hs, &w->hnames);
        schema = &w->hs;
        onr_buf_clear(&w->pk);
    }
    it = kind < 0 ? jval_iter(batch) : (jiter){0};
    for (size_t i = 0; i < n; i++) {
        jval item = root;
        if (kind < 0)
            jiter_next(&it, &item, NULL, NULL);
        w->pk_len[i] = 0;
        if (w->bad[i] == ITEM_NOT_OBJECT) {
            snprintf(err, sizeof(err), "message must be a JSON object, got %s",
                     jtype_name((jtype)w->aux[i]));
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        if (w->bad[i] == ITEM_TOO_BIG) {
            char lt[32];
            snprintf(err, sizeof(err), "message of %zu bytes exceeds the %s limit per event",
                     w->aux[i], limit_text(s->max_event, lt, sizeof(lt)));
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        ov.message_id = (trk_str){"", 0};
        if (w->gen[i] != SIZE_MAX)
            ov.message_id = (trk_str){w->items.data + w->gen[i], TRK_UUID_CHARS};
        int rc = trk_decode_overlay(item, &ov, schema, &w->ev, err, sizeof(err));
        bool offer = rc == 0 && schema != &no_fields;
        if (rc && schema != &no_fields) /* the verdict is the message's, whatever rules read */
            rc = trk_decode_overlay(item, &ov, &no_fields, &w->ev, err, sizeof(err));
        if (rc) {
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        size_t pn = offer ? trk_packed_size(&w->ev, schema) : 0;
        if (pn && pn <= SHARD_HANDOFF_BYTES) {
            onr_buf_reserve(&w->pk, pn);
            memset(w->pk.data + w->pk.len, 0, pn);
            trk_pack(w->pk.data + w->pk.len, &w->ev, schema);
            w->pk_at[i] = w->pk.len;
            w->pk_len[i] = (uint32_t)pn;
            w->pk.len += pn;
        }
        /* the ids are views into w->in and w->items, which stay as they are until the
         * append */
        w->alias[i] = w->ev.kind == TRK_ALIAS;
        w->ids[2 * i] = w->ev.user_id;
        w->ids[2 * i + 1] = w->alias[i] ? w->ev.previous_id : w->ev.anon_id;
        w->part[i] = 0; /* routed below, once the request is known to be stored */
        w->mid[i] = trk_dedup_digest(w->ev.message_id.p, w->ev.message_id.n);
    }

    if (nbad) {
        onr_buf b = {0};
        onr_buf_puts(&b, "{\"success\":false,\"error\":");
        if (kind >= 0) {
            /* One message: its reason is the error. */
            const char *p = strstr(w->reply.data, "\"reason\":");
            onr_buf_put(&b, p + 9, w->reply.len - (size_t)(p + 9 - w->reply.data) - 1);
            if (w->bad[0] == ITEM_TOO_BIG)
                onr_buf_puts(&b, ",\"limit\":\"event\"");
        } else {
            snprintf(err, sizeof(err),
                     "%zu of %zu messages are invalid; the batch was not accepted", nbad, n);
            jw_strz(&b, err);
            onr_buf_puts(&b, ",\"errors\":[");
            onr_buf_put(&b, w->reply.data, w->reply.len);
            onr_buf_putc(&b, ']');
        }
        onr_buf_putc(&b, '}');
        /* too large when that is all that is wrong with it */
        size_t nbig = 0;
        for (size_t i = 0; i < n; i++)
            nbig += w->bad[i] == ITEM_TOO_BIG;
        rejecting(nbig == nbad ? REJECT_TOO_LARGE : REJECT_INVALID, n);
        ret = send_json(c, MHD_HTTP_BAD_REQUEST, b.data, b.len, false, false);
        onr_buf_free(&b);
        goto done;
    }

    /* Resent messages (an id seen lately, or earlier in this request) are not stored again.
     * Each id to store is claimed, so that a resend arriving while this request is being
     * stored is not stored too, and remembered once the request's partitions are durable: a
     * request that fails part way can be retried without storing anything twice. */
    if (s->o.dedup && n > 1)
        for (size_t i = 0; i < n; i++)
            trk_dedup_prefetch(s->o.dedup, w->mid[i]);
    if (s->o.router && n > 1)
        for (size_t i = 0; i < n; i++)
            trk_route_prefetch(s->o.router, w->ids[2 * i], w->ids[2 * i + 1]);
    /* Claimed in the order of their digests, as locks are taken in one order: of two requests
     * holding some of the same new ids, one claims them all and the other is refused (503,
     * and its retry finds them stored), where each could claim some first and both be
     * refused, again at each retry. A repeat within the request comes right after its first
     * copy, the one stored. */
    if (s->o.dedup) {
        for (size_t i = 0; i < n; i++)
            w->ord[i] = (struct claim_order){w->mid[i], i};
        if (n > 1)
            qsort(w->ord, n, sizeof(*w->ord), cmp_claim_order);
        for (size_t k = 0; k < n; k++)
            w->smid[k] = w->ord[k].mid;
        size_t looked = trk_dedup_claim_sorted(s->o.dedup, w->smid, n, now, w->cl);
        for (size_t k = 0; k < looked; k++) {
            size_t i = w->ord[k].i;
            if (w->cl[k] == TRK_SEEN)
                w->part[i] = -1;
            if (w->cl[k] == TRK_BUSY) {
                for (size_t q = k; q < n; q++) /* not claimed */
                    w->part[w->ord[q].i] = -1;
                release_claims(s, w, n, 0, now);
                if (kind >= 0)
                    snprintf(err, sizeof(err), "another request is storing a message with this "
                                               "messageId right now; retry");
                else
                    snprintf(err, sizeof(err),
                             "another request is storing a message with the messageId of "
                             "message %zu right now; retry",
                             i);
                refused_by_server(s, r, REJECT_RESEND_IN_FLIGHT, n);
                ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, err, NULL);
                goto done;
            }
        }
    }

    /* Routed in request order (an anonymous event, then the identify naming its visitor),
     * and only what is stored: a rejected request or a resend teaches the router nothing. */
    for (size_t i = 0; i < n; i++)
        if (w->part[i] >= 0)
            w->part[i] = partition_of(s, w, i, now);

    /* Bounded lag: when a shard is too far behind, senders wait rather than the log grow. */
    size_t stored = 0;
    for (size_t i = 0; i < n; i++) {
        if (w->part[i] < 0)
            continue;
        stored++;
        if (s->o.shards && shard_admit(s->o.shards, w->part[i])) {
            release_claims(s, w, n, 0, now);
            refused_by_server(s, r, REJECT_ENGINE_LAG, n);
            ret =
                send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                           "the engine is behind the event log; retry after the time given", NULL);
            goto done;
        }
    }

    /* Group by partition (counting sort) and append each group as one batch. */
    int P = s->partitions;
    memset(w->count, 0, ((size_t)P + 1) * sizeof(*w->count));
    for (size_t i = 0; i < n; i++)
        if (w->part[i] >= 0)
            w->count[w->part[i] + 1]++;
    for (int p = 0; p < P; p++)
        w->count[p + 1] += w->count[p];
    for (size_t i = 0; i < n; i++) {
        if (w->part[i] < 0)
            continue;
        w->rec_item[w->count[w->part[i]]] = i;
        elog_rec *rec = &w->recs[w->count[w->part[i]]++];
        rec->data = w->items.data + w->start[i];
        rec->len = w->end[i] - w->start[i];
    }
    /* count[p] is now the end of partition p's group. */
    size_t from = 0;
    int failed = P; /* the first partition whose write failed */
    int epoch = settle_begin(s);
    for (int p = 0; p < P; p++) {
        size_t to = w->count[p];
        if (to == from)
            continue;
        /* written (readable) first; the fsync policy is waited for below */
        int rc = elog_write_batch(s->o.log, p, w->recs + from, to - from, NULL, &w->ends[p]);
        if (rc) {
            logmsg(s, "error", "event log append to partition %d failed: %s", p,
                   rc < 0 && rc > -4096 ? strerror(-rc) : "limit");
            failed = p;
            break;
        }
        /* appended at their offsets for good (a write that fails later is made again);
         * received at now, the receivedAt each was stored with */
        for (size_t k = from; s->o.shards && k < to; k++) {
            size_t i = w->rec_item[k];
            if (w->pk_len[i])
                shard_offer(s->o.shards, p, w->ends[p] - (to - k), w->hgen, now,
                            w->pk.data + w->pk_at[i], w->pk_len[i]);
        }
        from = to; /* the log wakes the engine (elog_set_readable) */
    }
    /* The engine reads each record once it is written (under batch, by the round that makes
     * it durable, before its fsync): it does not wait for the fsync. */
    atomic_store(stamp, 0);
    ack *a = ack_new(s, w, n, failed, now, stored);
    if (failed < P) {
        /* what was written before the failure is waited for, and its ids remembered, so that
         * a retry stores nothing twice */
        ack_wait(a);
        settle_end(s, epoch);
        onr_free(a);
        release_claims(s, w, n, failed, now);
        refused_by_server(s, r, REJECT_LOG_ERROR, n);
        ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                         "the event log could not store the messages; retry", NULL);
        goto done;
    }
    bool durable = true;
    for (int k = 0; k < a->nparts && durable; k++)
        durable = elog_durable(s->o.log, a->parts[k].part, a->parts[k].end);
    if (durable) { /* everysec, or synced meanwhile: answered now */
        unsigned st = ack_wait(a);
        settle_end(s, epoch);
        onr_free(a);
        if (st == MHD_HTTP_OK)
            atomic_store(&r->durable_ns, mono_ns());
        else
            refused_by_server(s, r, REJECT_LOG_ERROR, n);
        ret = st == MHD_HTTP_OK
                  ? send_success(s, c)
                  : send_error(c, st, "the event log could not store the messages; retry", NULL);
        goto done;
    }
    /* The fsync policy is waited for by the log's sync threads, not this one: suspended here,
     * the connection is resumed with the outcome and answered by its next call. */
    a->c = c;
    a->r = r;
    a->epoch = epoch;
    r->ack = a;
    ack_suspend(s, a);
    ret = MHD_YES;
done:
    atomic_store(stamp, 0);
    work_put(s, w);
    return ret;
}

/* ---- the request life cycle */

static const struct {
    const char *path;
    int route;
} routes[] = {
    {"/v1/track", TRK_TRACK},    {"/v1/t", TRK_TRACK},      {"/v1/identify", TRK_IDENTIFY},
    {"/v1/i", TRK_IDENTIFY},     {"/v1/page", TRK_PAGE},    {"/v1/p", TRK_PAGE},
    {"/v1/screen", TRK_SCREEN},  {"/v1/s", TRK_SCREEN},     {"/v1/group", TRK_GROUP},
    {"/v1/g", TRK_GROUP},        {"/v1/alias", TRK_ALIAS},  {"/v1/a", TRK_ALIAS},
    {"/v1/batch", ROUTE_BATCH},  {"/v1/b", ROUTE_BATCH},    {"/v1/import", ROUTE_BATCH},
    {"/healthz", ROUTE_HEALTHZ}, {"/readyz", ROUTE_READYZ},
};

typedef struct header_count {
    int content_length, transfer_encoding;
    const char *te; /* the first Transfer-Encoding's value */
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    header_count *h = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        h->content_length++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0 && h->transfer_encoding++ == 0)
        h->te = value;
    return MHD_YES;
}

/* "chunked", with optional white space around it. */
static bool only_chunked(const char *v)
{
    v += strspn(v, " \t");
    size_t n = strcspn(v, " \t");
    return n == 7 && strncasecmp(v, "chunked", 7) == 0 && v[n + strspn(v + n, " \t")] == 0;
}

/* Checks what the headers alone decide; returns true when an answer was queued. */
static bool reject_early(http_server *s, struct MHD_Connection *c, req *r, const char *method,
                         enum MHD_Result *ret)
{
    char msg[200];
    header_count h = {0, 0, NULL};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &h);
    if (h.content_length > 1 || (h.content_length && h.transfer_encoding)) {
        rejecting(REJECT_MALFORMED, 1);
        *ret =
            send_error(c, MHD_HTTP_BAD_REQUEST,
                       h.content_length > 1 ? "more than one Content-Length header"
                                            : "both Content-Length and Transfer-Encoding headers",
                       NULL);
        return true;
    }
    /* libmicrohttpd 0.9.75 reads a body under any other coding until the connection ends */
    if (h.transfer_encoding > 1 || (h.te && !only_chunked(h.te))) {
        snprintf(msg, sizeof(msg), "%s (only one, \"chunked\", is supported)",
                 h.transfer_encoding > 1 ? "more than one Transfer-Encoding header"
                                         : "unsupported Transfer-Encoding");
        rejecting(REJECT_MALFORMED, 1);
        *ret = send_error(c, MHD_HTTP_BAD_REQUEST, msg, NULL);
        return true;
    }
    if (r->route == ROUTE_HEALTHZ || r->route == ROUTE_READYZ) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
            *ret = send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET", NULL);
            return true;
        }
        if (r->route == ROUTE_READYZ && s->o.shards && !shard_ready(s->o.shards)) {
            *ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "the engine is still running the event log's tail", NULL);
        } else if (r->route == ROUTE_HEALTHZ || s->o.log) {
            static const char ok[] = "{\"ok\":true}";
            *ret = send_json(c, MHD_HTTP_OK, ok, sizeof(ok) - 1, false, false);
        } else {
            *ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "the event log is not open", NULL);
        }
        return true;
    }
    if (strcmp(method, "OPTIONS") == 0) {
        *ret = send_preflight(c);
        return true;
    }
    if (strcmp(method, "POST") != 0) {
        *ret = send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST", NULL);
        return true;
    }
    /* every body is bounded by the request limit; each message, minified, by the event
     * limit once parsed (a pretty-printed message is not refused for its whitespace) */
    r->limit = s->max_request;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > r->limit) {
        char lt[32];
        snprintf(msg, sizeof(msg), "request body of %.40s bytes exceeds the %s limit", cl,
                 limit_text(r->limit, lt, sizeof(lt)));
        rejecting(REJECT_TOO_LARGE, 1);
        *ret = send_error(c, MHD_HTTP_BAD_REQUEST, msg, "request");
        return true;
    }
    /* room for a body of the size announced, with the parser's padding, so that it is not
     * copied as it grows; up to BODY_RESERVE before any of it has come */
    if (cl)
        onr_buf_reserve(&r->body, ONR_MIN(strtoull(cl, NULL, 10), BODY_RESERVE) + JDOC_PADDING);
    const char *enc =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc && strcasecmp(enc, "gzip") == 0) {
        r->gzip = true;
    } else if (enc && *enc && strcasecmp(enc, "identity") != 0) {
        snprintf(msg, sizeof(msg), "unsupported Content-Encoding \"%.60s\" (use gzip)", enc);
        rejecting(REJECT_MALFORMED, 1);
        *ret = send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, msg, NULL);
        return true;
    }
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth) {
        char user[512];
        size_t n = 0;
        r->key = basic_user(auth, user, sizeof(user), &n) ? write_key_index(s, user, n) : -1;
        if (r->key < 0) {
            rejecting(REJECT_UNAUTHORIZED, 1);
            *ret = send_error(c, MHD_HTTP_UNAUTHORIZED, "unknown write key", NULL);
            return true;
        }
        r->authed = true;
    }
    return false;
}

/* The answer to a body over r->limit: 400 (as Segment's API answers), with msg and limit
 * set. */
static unsigned too_big(req *r, const char **msg, const char **limit)
{
    char lt[32];
    limit_text(r->limit, lt, sizeof(lt));
    *limit = "request";
    snprintf(r->fail_buf, sizeof(r->fail_buf), "request body exceeds the %s limit", lt);
    *msg = r->fail_buf;
    return MHD_HTTP_BAD_REQUEST;
}

/* Adds a chunk of body; returns 0, or an HTTP status with msg/limit set. */
static unsigned feed(req *r, const char *data, size_t n, const char **msg, const char **limit)
{
    if (!r->gzip) {
        if (r->body.len + n > r->limit)
            return too_big(r, msg, limit);
        onr_buf_put(&r->body, data, n);
        return 0;
    }
    if (!r->z_init) {
        memset(&r->z, 0, sizeof(r->z));
        if (inflateInit2(&r->z, 15 + 16) != Z_OK) {
            *msg = "cannot start gzip decoding";
            *limit = NULL;
            return MHD_HTTP_INTERNAL_SERVER_ERROR;
        }
        r->z_init = true;
    }
    r->z.next_in = (Bytef *)(uintptr_t)data;
    r->z.avail_in = (uInt)n;
    while (r->z.avail_in > 0) {
        if (r->z_end) {
            /* zero bytes after a member are padding, skipped as gunzip and Python's gzip
             * skip them (tape blocks, fixed-size buffers) */
            while (r->z.avail_in > 0 && *r->z.next_in == 0) {
                r->z.next_in++;
                r->z.avail_in--;
            }
            if (r->z.avail_in == 0)
                break;
            /* another member: a gzip file may be several, decompressed one after the other
             * (RFC 1952, as gunzip reads them) */
            if (inflateReset(&r->z) != Z_OK) {
                *msg = "body is not valid gzip";
                *limit = NULL;
                return MHD_HTTP_BAD_REQUEST;
            }
            r->z_end = false;
        }
        onr_buf_reserve(&r->body, 16384);
        r->z.next_out = (Bytef *)(r->body.data + r->body.len);
        r->z.avail_out = (uInt)(r->body.cap - r->body.len);
        int zr = inflate(&r->z, Z_NO_FLUSH);
        r->body.len = (size_t)((char *)r->z.next_out - r->body.data);
        if (r->body.len > r->limit) /* the decompressed size counts */
            return too_big(r, msg, limit);
        if (zr == Z_STREAM_END) {
            r->z_end = true;
        } else if (zr != Z_OK) {
            *msg = "body is not valid gzip";
            *limit = NULL;
            return MHD_HTTP_BAD_REQUEST;
        }
    }
    return 0;
}

static enum MHD_Result handle_request(http_server *s, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls)
{
    req *r = *con_cls;
    if (!r) {
        r = onr_calloc(1, sizeof(*r));
        *con_cls = r;
        atomic_fetch_add(&s->active, 1);
        r->route = -1;
        r->key = -1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->conn = ci ? ci->socket_context : NULL;
        if (r->conn) /* its headers are in: the reaper leaves it alone until it ends */
            atomic_store(&r->conn->waiting_ms, 0);
        for (size_t i = 0; i < ONR_ARRAY_LEN(routes); i++)
            if (strcmp(url, routes[i].path) == 0)
                r->route = routes[i].route;
        r->import = strcmp(url, "/v1/import") == 0;
        tl_cors = is_ingest(r->route);
        enum MHD_Result ret;
        if (r->route < 0 && (strncmp(url, "/api/", 5) == 0 || strcmp(url, "/metrics") == 0)) {
            r->route = ROUTE_API;
            if (api_begin(s, c, url, method, &ret)) {
                r->rejected = true;
                return ret;
            }
            return MHD_YES; /* a body to read */
        }
        if (r->route < 0) {
            r->rejected = true;
            return send_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint", NULL);
        }
        if (reject_early(s, c, r, method, &ret)) {
            r->rejected = true;
            return ret;
        }
        return MHD_YES;
    }
    if (r->ack && !r->ack_answered) {
        unsigned st = atomic_load(&r->ack_status);
        *upload_data_size = 0;
        if (!st)
            return MHD_YES; /* still waiting for the log */
        r->ack_answered = true;
        if (st == MHD_HTTP_OK)
            return send_success(s, c);
        refused_by_server(s, r, REJECT_LOG_ERROR, r->ack->stored + r->ack->duplicates);
        return send_error(c, st, "the event log could not store the messages; retry", NULL);
    }
    if (r->job) {
        *upload_data_size = 0;
        if (!api_job_done(r->job))
            return MHD_YES;
        api_job *job = r->job;
        r->job = NULL;
        return api_job_answer(c, job);
    }
    if (r->rejected) {
        *upload_data_size = 0; /* the answer is queued; MHD closes the connection */
        return MHD_YES;
    }
    if (*upload_data_size && r->route == ROUTE_API) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!r->fail_status && r->body.len + n > API_MAX_BODY) {
            r->fail_status = MHD_HTTP_CONTENT_TOO_LARGE;
            r->fail_msg = "request body exceeds the 1 MB limit of the management API";
            r->fail_limit = "request";
            onr_buf_free(&r->body);
        }
        if (r->fail_status) {
            r->discarded += n;
            return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        onr_buf_put(&r->body, upload_data, n);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->fail_status) {
            /* MHD 0.9.75 cannot answer in the middle of a body: the rest is read and thrown
             * away (no memory grows), up to a bound past which the connection is closed. */
            r->discarded += n;
            return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        r->fail_status = feed(r, upload_data, n, &r->fail_msg, &r->fail_limit);
        if (r->fail_status) {
            if (r->z_init) {
                inflateEnd(&r->z);
                r->z_init = false;
            }
            onr_buf_free(&r->body);
        }
        return MHD_YES;
    }
    r->rejected = true;
    if (r->fail_status) {
        rejecting(r->fail_limit ? REJECT_TOO_LARGE : REJECT_MALFORMED, 1);
        return send_error(c, r->fail_status, r->fail_msg, r->fail_limit);
    }
    if (r->route == ROUTE_API)
        return api_finish(s, c, url, method, r->body.data ? r->body.data : "", r->body.len,
                          &r->job);
    return ingest(s, c, r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    http_server *s = cls;
    tl_status = 0;
    tl_reject = -1;
    req *known = *con_cls;
    tl_cors = known && is_ingest(known->route);
    enum MHD_Result ret = handle_request(s, c, url, method, upload_data, upload_data_size, con_cls);
    if (tl_status)
        http__count(&s->counters, tl_status);
    /* refusals count for the ingest endpoints only (not /healthz, /api/ or /metrics) */
    req *r = *con_cls;
    if (tl_reject >= 0 && r && is_ingest(r->route))
        atomic_fetch_add(&s->counters.rejected[tl_reject], tl_reject_n);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    req *r = *con_cls;
    if (!r)
        return;
    int64_t durable = atomic_load(&r->durable_ns);
    if (durable && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        http__observe(&s->counters.durable, durable - r->body_ns);
        http__observe(&s->counters.answered, mono_ns() - r->body_ns);
    }
    if (r->z_init)
        inflateEnd(&r->z);
    if (r->conn) /* a kept-alive connection waits for the headers of its next request */
        atomic_store(&r->conn->waiting_ms, mono_ms());
    onr_buf_free(&r->body);
    onr_free(r->ack);
    if (r->job) /* ended without its answer: the job is done (a stop waits for that first) */
        api_job_free(r->job);
    onr_free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->active, 1);
}

/* ---- connections and their deadline for headers */

/* libmicrohttpd's timeout counts silence only, so a client that trickles its headers a byte at
 * a time would hold a connection for ever: every open connection is listed here, and the
 * reaper shuts down those that have waited too long for headers. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn *k = onr_calloc(1, sizeof(*k));
        k->fd = ci ? ci->connect_fd : -1;
        atomic_init(&k->waiting_ms, mono_ms());
        pthread_mutex_lock(&s->conns_mu);
        k->next = s->conns;
        if (s->conns)
            s->conns->prev = k;
        s->conns = k;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_context = k;
        return;
    }
    conn *k = *socket_context;
    if (!k)
        return;
    /* Called before libmicrohttpd closes the socket, so the reaper (which shuts sockets down
     * under the same lock) never touches a descriptor already reused by another connection. */
    pthread_mutex_lock(&s->conns_mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&s->conns_mu);
    onr_free(k);
    *socket_context = NULL;
}

static void *reaper_main(void *arg)
{
    http_server *s = arg;
    onr_thread_name("reaper", -1);
    int64_t tick_ms = ONR_MAX(ONR_MIN(s->o.timeout_ms / 4, 1000), 10);
    pthread_mutex_lock(&s->conns_mu);
    while (!s->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + tick_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&s->reaper_cv, &s->conns_mu, &ts);
        int64_t now = mono_ms();
        int cut = 0;
        for (conn *k = s->conns; k; k = k->next) {
            int64_t since = atomic_load(&k->waiting_ms);
            if (since && !k->cut && k->fd >= 0 && now - since > s->o.timeout_ms) {
                shutdown(k->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
                k->cut = true;
                cut++;
            }
        }
        if (cut) {
            pthread_mutex_unlock(&s->conns_mu);
            logmsg(s, "info",
                   "closed %d connections that sent no complete request headers "
                   "within %lld ms",
                   cut, (long long)s->o.timeout_ms);
            pthread_mutex_lock(&s->conns_mu);
        }
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

/* ---- start and stop */

/* The limits o asks for, defaults filled in; 0, or ONR_E_INVALID with a message in err. */
static int limits_of(const http_opts *o, size_t *event, size_t *request, char *err, size_t errlen)
{
    *event = o->max_event_bytes ? o->max_event_bytes : HTTP_MAX_EVENT_BYTES;
    *request = o->max_request_bytes ? o->max_request_bytes : HTTP_MAX_REQUEST_BYTES;
    if (*request > HTTP_MAX_REQUEST_LIMIT || *event > *request) {
        snprintf(err, errlen,
                 "the limits must be max event bytes (%zu) <= max request bytes (%zu) <= %d",
                 *event, *request, HTTP_MAX_REQUEST_LIMIT);
        return ONR_E_INVALID;
    }
    return 0;
}

/* Frees what http_start made, once the daemon and the reaper are stopped. */
static void release(http_server *s)
{
    for (int i = 0; i < STAMP_SLOTS; i++)
        if (s->ok[i])
            MHD_destroy_response(s->ok[i]);
    while (s->pool) {
        work *w = s->pool;
        s->pool = w->next;
        work_free(w);
    }
    for (size_t i = 0; s->buckets && i < s->o.nwrite_keys; i++)
        pthread_mutex_destroy(&s->buckets[i].mu);
    onr_free(s->buckets);
    pthread_cond_destroy(&s->reaper_cv);
    pthread_mutex_destroy(&s->conns_mu);
    pthread_cond_destroy(&s->acks_cv);
    pthread_mutex_destroy(&s->acks_mu);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->replays.cv);
    pthread_mutex_destroy(&s->replays.mu);
    trk_enrich_geo_close(s->geo);
    onr_free(s->state_from);
    onr_free(s);
}

size_t http_max_record(size_t max_event_bytes, size_t max_request_bytes)
{
    return (max_event_bytes ? max_event_bytes : HTTP_MAX_EVENT_BYTES) +
           (max_request_bytes ? max_request_bytes : HTTP_MAX_REQUEST_BYTES) + ITEM_EXTRA_BYTES;
}

int http_start(const http_opts *o, http_server **out, char *err, size_t errlen)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } addr;
    memset(&addr, 0, sizeof(addr));
    bool v6 = false;
    if (inet_pton(AF_INET, o->host, &addr.v4.sin_addr) == 1) {
        addr.v4.sin_family = AF_INET;
        addr.v4.sin_port = htons(o->port);
    } else if (inet_pton(AF_INET6, o->host, &addr.v6.sin6_addr) == 1) {
        addr.v6.sin6_family = AF_INET6;
        addr.v6.sin6_port = htons(o->port);
        v6 = true;
    } else {
        snprintf(err, errlen, "\"%s\" is not a numeric IPv4 or IPv6 address", o->host);
        return ONR_E_INVALID;
    }
    if (!o->log || o->nwrite_keys == 0) {
        snprintf(err, errlen, "the server needs an open log and at least one write key");
        return ONR_E_INVALID;
    }
    if (!(o->rate_limit >= 0 && o->rate_limit <= 1e9) || o->timeout_ms > 24 * ONR_HOUR_MS) {
        snprintf(err, errlen,
                 "the rate limit must be 0..1e9 events a second, and the "
                 "timeout at most a day");
        return ONR_E_INVALID;
    }

    size_t max_event, max_request;
    int rc = limits_of(o, &max_event, &max_request, err, errlen);
    if (rc)
        return rc;
    trk_geo *geo = NULL;
    if (o->geoip && (rc = trk_enrich_geo_open(o->geoip, &geo, err, errlen)))
        return rc;

    if (o->log && elog_max_record(o->log) < http_max_record(max_event, max_request)) {
        snprintf(err, errlen,
                 "the event log takes records of at most %zu bytes, and these limits store "
                 "messages of up to %zu",
                 elog_max_record(o->log), http_max_record(max_event, max_request));
        trk_enrich_geo_close(geo);
        return ONR_E_INVALID;
    }

    http_server *s = onr_calloc(1, sizeof(*s));
    s->o = *o;
    s->geo = geo;
    s->max_event = max_event;
    s->max_request = max_request;
    /* simdjson reads documents of up to 4 GB; and one partition's share of a request, which
     * may be all of it, is one write of the log, framing (8 bytes a message) included */
    s->out_doc_bytes =
        ONR_MIN(4 * max_request + (max_request / MIN_ITEM_BYTES + 1) * (size_t)ITEM_EXTRA_BYTES,
                (size_t)UINT32_MAX - 4096);
    if (o->log) {
        size_t framing = (max_request / MIN_ITEM_BYTES + 1) * 8;
        size_t batch = elog_max_batch(o->log);
        s->out_doc_bytes = ONR_MIN(s->out_doc_bytes, batch > framing ? batch - framing : 0);
    }
    if (s->o.threads <= 0)
        s->o.threads = 2;
    if (s->o.max_connections <= 0)
        s->o.max_connections = HTTP_MAX_CONNECTIONS_DEFAULT;
    s->o.threads = http_threads_for(s->o.threads, s->o.max_connections);
    if (s->o.threads > HTTP_MAX_THREADS) {
        snprintf(err, errlen, "at most %d threads, and %d connections", HTTP_MAX_THREADS,
                 HTTP_MAX_THREADS * HTTP_CONNS_PER_THREAD);
        trk_enrich_geo_close(geo);
        onr_free(s);
        return ONR_E_INVALID;
    }
    s->partitions = elog_partitions(o->log);
    atomic_init(&s->active, 0);
    pthread_mutex_init(&s->pool_mu, NULL);
    if (s->o.timeout_ms <= 0)
        s->o.timeout_ms = 30 * ONR_SECOND_MS;
    if (s->o.rate_limit > 0) {
        s->burst = s->o.rate_burst ? (double)s->o.rate_burst : ONR_MAX(ceil(s->o.rate_limit), 1.0);
        s->buckets = onr_calloc(s->o.nwrite_keys, sizeof(*s->buckets));
        for (size_t i = 0; i < s->o.nwrite_keys; i++) {
            pthread_mutex_init(&s->buckets[i].mu, NULL);
            s->buckets[i].tokens = s->burst;
            s->buckets[i].at_ms = mono_ms();
        }
    }
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->acks_mu, NULL);
    pthread_cond_init(&s->acks_cv, NULL);
    api_replays_init(&s->replays);

    /* libmicrohttpd's epoll loop asks the kernel only about connections with something to
     * do; its poll loop scans all of a thread's connections at each turn, which cost 16-33%
     * more CPU per request under moderate load and more with idle keep-alive connections
     * (docs/operations.md, "HTTP threads"). The pool divides the connection limit evenly,
     * at most HTTP_CONNS_PER_THREAD a thread: fewer than the 128 events that stall 0.9.75's
     * loop (http.h). */
    unsigned flags =
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* One thread is the daemon's own, with no pool (libmicrohttpd warns of a pool of 1): the
     * pool's item then ends the array, so the connection limit comes before it. */
    struct MHD_OptionItem pool[] = {
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)s->o.max_connections, NULL},
        {s->o.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)s->o.threads,
         NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->d = MHD_start_daemon(
        flags, o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
        MHD_OPTION_ARRAY, pool, MHD_OPTION_SOCK_ADDR, &addr.sa, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)((s->o.timeout_ms + 999) / 1000), MHD_OPTION_UNESCAPE_CALLBACK, http__unescape,
        NULL, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%u (address in use, or not local?)",
                 v6 ? "[" : "", o->host, v6 ? "]" : "", (unsigned)o->port);
        release(s);
        return -EADDRINUSE;
    }
    int e = pthread_create(&s->reaper, NULL, reaper_main, s);
    if (e) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(e));
        MHD_stop_daemon(s->d);
        release(s);
        return -e;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info && info->port ? info->port : o->port;
    *out = s;
    return 0;
}

const http_opts *http__opts(const http_server *s)
{
    return &s->o;
}

api_replays *http__replays(http_server *s)
{
    return &s->replays;
}

http_counters *http__counters(http_server *s)
{
    return &s->counters;
}

uint16_t http_port(const http_server *s)
{
    return s->port;
}

void http_stop(http_server *s, int64_t drain_ms)
{
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    api_replays_stop(&s->replays); /* cut short, its connection resumed to be answered */
    int64_t deadline = onr_wall_ms() + drain_ms;
    while (atomic_load(&s->active) > 0 && onr_wall_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&s->active);
    if (left > 0)
        logmsg(s, "warn", "%d requests still in flight after the drain; closing them", left);
    wait_acks(s); /* the log's sync threads answer every request still waiting for it */
    MHD_stop_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    pthread_mutex_lock(&s->conns_mu);
    s->reaper_stop = true;
    pthread_cond_signal(&s->reaper_cv);
    pthread_mutex_unlock(&s->conns_mu);
    pthread_join(s->reaper, NULL);
    release(s);
}

/* ---- restart */

/* Tells the router where a stored message went, read with the ids ingest routed it by. */
static void learn_route(trk_router *router, jval msg, int partition, int64_t at_ms)
{
    size_t tn, un, an;
    const char *t = jval_str(jval_getz(msg, "type"), &tn);
    bool alias = tn == 5 && memcmp(t, "alias", 5) == 0;
    const char *u = jval_str(jval_getz(msg, "userId"), &un);
    const char *a = jval_str(jval_getz(msg, alias ? "previousId" : "anonymousId"), &an);
    trk_route_learn(router, (trk_str){u, (uint32_t)un}, (trk_str){a, (uint32_t)an}, partition,
                    at_ms);
}

long http_dedup_recover(const http_opts *o, const uint64_t *from, int64_t window_ms, int64_t now_ms,
                        uint64_t *records, char *err, size_t errlen)
{
    *records = 0;
    if (!o->dedup && !o->router)
        return 0;
    /* a stored message: its own members, the batch context, and what the server added,
     * under any limits it was stored with (higher ones included) */
    jdoc *doc = jdoc_new(http_max_record(HTTP_MAX_REQUEST_LIMIT, HTTP_MAX_REQUEST_LIMIT));
    long added = 0;
    char perr[256];
    for (int p = 0; p < elog_partitions(o->log); p++) {
        elog_reader *r;
        uint64_t first = elog_start_offset(o->log, p);
        if (from && from[p] > first)
            first = from[p];
        int rc = elog_reader_open(o->log, p, first, &r);
        if (rc) {
            snprintf(err, errlen, "reading partition %d of the event log: %s", p,
                     rc < 0 && rc > -4096 ? strerror(-rc) : "failed");
            jdoc_free(doc);
            return rc;
        }
        const void *rec;
        size_t len;
        uint64_t off;
        while ((rc = elog_reader_next(r, &rec, &len, &off)) == 1) {
            (*records)++;
            jval root;
            if (jdoc_parse(doc, rec, len, &root, perr, sizeof(perr)))
                continue; /* stored by this server, so not expected; nothing to recover */
            size_t idn, tn;
            const char *id = jval_str(jval_getz(root, "messageId"), &idn);
            const char *t = jval_str(jval_getz(root, "receivedAt"), &tn);
            int64_t at;
            bool timed = onr_time_parse(t, tn, &at) == 0;
            if (o->router)
                learn_route(o->router, root, p, timed ? at : 0);
            if (!o->dedup || !idn || !timed || at < now_ms - window_ms)
                continue;
            added += trk_dedup_add(o->dedup, trk_dedup_digest(id, idn), at);
        }
        elog_reader_close(r);
        if (rc < 0) {
            snprintf(err, errlen, "reading partition %d of the event log: %s", p,
                     rc > -4096 ? strerror(-rc) : "failed");
            jdoc_free(doc);
            return rc;
        }
    }
    jdoc_free(doc);
    return added;
}

/* ---- the ingest state across a restart (docs/operations.md, of that name) */

/* A header, each partition's end, the router's used sets (trk_route_write), the recent ids
 * as (digest, at_ms) pairs ended by a zero pair, and a digest of all of it. The magic changes
 * whenever this layout or the router's set does. */
#define STATE_MAGIC "ONRINGS2"
#define STATE_SEED 0x696e6773

typedef struct state_hdr {
    char magic[8];
    uint32_t partitions;
    uint32_t reserved;
    uint64_t route_bytes;       /* trk_route_bytes (the capacity), 0 without a router */
    char log_id[ELOG_ID_CHARS]; /* elog_id of the log whose offsets it covers */
} state_hdr;

typedef struct state_io {
    FILE *f;
    onr_hasher *h;
} state_io;

static bool state_put(void *ctx, const void *p, size_t n)
{
    onr_hashed_writer *w = ctx;
    onr_hw_put(w, p, n);
    return w->err == 0;
}

static bool state_get(void *ctx, void *p, size_t n)
{
    state_io *io = ctx;
    if (fread(p, 1, n, io->f) != n)
        return false;
    onr_hasher_update(io->h, p, n);
    return true;
}

static bool state_put_id(void *ctx, uint64_t digest, int64_t at_ms)
{
    uint64_t pair[2] = {digest, (uint64_t)at_ms};
    return state_put(ctx, pair, sizeof(pair));
}

int http_state_save(const http_opts *o, const char *log_id, int partitions, const uint64_t *ends,
                    const char *path, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int rc = 0;
    if (!f) {
        rc = -errno;
        goto out;
    }
    onr_hashed_writer w;
    onr_hw_init(&w, f, STATE_SEED);
    int P = partitions;
    state_hdr h = {.partitions = (uint32_t)P,
                   .route_bytes = o->router ? (uint64_t)trk_route_bytes(o->router) : 0};
    memcpy(h.magic, STATE_MAGIC, 8);
    memcpy(h.log_id, log_id, ELOG_ID_CHARS);
    uint64_t end_mark[2] = {0, 0};
    bool ok = state_put(&w, &h, sizeof(h)) && state_put(&w, ends, sizeof(uint64_t) * (size_t)P) &&
              (!o->router || trk_route_write(o->router, state_put, &w)) &&
              (!o->dedup || trk_dedup_each(o->dedup, state_put_id, &w)) &&
              state_put(&w, end_mark, sizeof(end_mark));
    uint64_t check;
    rc = onr_hw_finish(&w, &check);
    ok = ok && !rc && fwrite(&check, sizeof(check), 1, f) == 1 && fflush(f) == 0 &&
         fsync(fileno(f)) == 0;
    if (!ok && !rc)
        rc = errno ? -errno : -EIO;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        rc = onr_fsync_dir(slash ? dir : ".");
    }
out:
    if (rc) {
        unlink(tmp);
        snprintf(err, errlen, "writing %s failed: %s", path, strerror(-rc));
    }
    return rc;
}

int http_state_load(const http_opts *o, const char *path, int64_t window_ms, int64_t now_ms,
                    uint64_t *from, long *ids, char *why, size_t whylen)
{
    *ids = 0;
    state_io io = {fopen(path, "rb"), NULL};
    if (!io.f) {
        if (errno == ENOENT)
            return 0;
        snprintf(why, whylen, "cannot open it: %s", strerror(errno));
        return -1;
    }
    io.h = onr_hasher_new(STATE_SEED);
    int rc = -1;
    int P = elog_partitions(o->log);
    uint64_t want_route = o->router ? (uint64_t)trk_route_bytes(o->router) : 0;
    state_hdr h;
    if (!state_get(&io, &h, sizeof(h)) || memcmp(h.magic, STATE_MAGIC, 8) != 0) {
        snprintf(why, whylen, "not an ingest state file");
        goto out;
    }
    if (h.partitions != (uint32_t)P || h.route_bytes != want_route) {
        snprintf(why, whylen, "written with other --partitions or --route-capacity");
        goto out;
    }
    if (memcmp(h.log_id, elog_id(o->log), ELOG_ID_CHARS) != 0) {
        snprintf(why, whylen, "written for another event log (id %.*s; this log's id is %s)",
                 ELOG_ID_CHARS, h.log_id, elog_id(o->log));
        goto out;
    }
    if (!state_get(&io, from, sizeof(uint64_t) * (size_t)P)) {
        snprintf(why, whylen, "cut short");
        goto out;
    }
    for (int p = 0; p < P; p++)
        if (from[p] > elog_end_offset(o->log, p)) {
            snprintf(why, whylen,
                     "it covers partition %d to offset %llu, past the log's end at %llu", p,
                     (unsigned long long)from[p], (unsigned long long)elog_end_offset(o->log, p));
            goto out;
        }
    if (o->router && !trk_route_read(o->router, state_get, &io)) {
        snprintf(why, whylen, "cut short or damaged");
        goto out;
    }
    for (;;) {
        uint64_t pair[2];
        if (!state_get(&io, pair, sizeof(pair))) {
            snprintf(why, whylen, "cut short");
            goto out;
        }
        if (!pair[0])
            break;
        int64_t at = (int64_t)pair[1];
        if (o->dedup && at >= now_ms - window_ms)
            *ids += trk_dedup_add(o->dedup, pair[0], at);
    }
    uint64_t check;
    if (fread(&check, sizeof(check), 1, io.f) != 1 || check != onr_hasher_digest(io.h) ||
        fgetc(io.f) != EOF) {
        snprintf(why, whylen, "damaged (its checksum does not match)");
        goto out;
    }
    rc = 1;
out:
    fclose(io.f);
    onr_hasher_free(io.h);
    return rc;
}

int http_state_checkpoint(http_server *s, const char *path, char *err, size_t errlen)
{
    int cur = atomic_load(&s->epoch), rc = 0;
    if (!s->state_from)
        s->state_from = onr_calloc((size_t)s->partitions, sizeof(uint64_t));
    if (s->state_armed) {
        /* every record below state_from was written by a request of the other epoch */
        if (atomic_load(&s->inflight[1 - cur]) != 0)
            return 0;
        rc = http_state_save(&s->o, elog_id(s->o.log), s->partitions, s->state_from, path, err,
                             errlen);
        if (rc)
            return rc;
        rc = 1;
    }
    for (int p = 0; p < s->partitions; p++)
        s->state_from[p] = elog_end_offset(s->o.log, p);
    atomic_store(&s->epoch, 1 - cur);
    s->state_armed = true;
    return rc;
}
