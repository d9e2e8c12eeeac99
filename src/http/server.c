/*
 * server.c - the ingest half of `onramp serve`: libmicrohttpd with its epoll thread pool,
 * the Segment Tracking API routes, write-key auth, body limits and gzip, and the append of
 * accepted messages to the event log before the 200. Each message is stored as its own
 * minified JSON plus the fields the server fills in (type, messageId, receivedAt, batch-level
 * context/integrations/sentAt), so that a replay of the log decodes exactly what was accepted.
 */
#include "http/http.h"

#include "base/json.h"
#include "track/track.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define ROUTE_BATCH TRK_KIND_COUNT
#define ROUTE_HEALTHZ (TRK_KIND_COUNT + 1)
#define ROUTE_READYZ (TRK_KIND_COUNT + 2)

/* The re-written messages of a request: the body plus what the server fills in per item. */
#define OUT_DOC_BYTES (4 * HTTP_MAX_REQUEST_BYTES)

/* A body that broke a limit mid-way (chunked, or gzip) is read and dropped up to this many
 * more bytes so that the client can be answered; past it the connection is closed. */
#define DISCARD_MAX (16 * 1024 * 1024)

/* Reusable per-request scratch: parsers and buffers, so a request allocates nothing once the
 * pool has warmed up to the largest request seen. */
enum { ITEM_OK = 0, ITEM_NOT_OBJECT, ITEM_TOO_BIG };

typedef struct work {
    struct work *next;
    jdoc *in, *out;
    onr_buf items; /* "[item,item,...]" as stored */
    onr_buf reply;
    size_t cap;    /* entries in the arrays below */
    size_t *start; /* span of item i in items */
    size_t *end;
    int *part;      /* partition of item i; -1 for a resent message, not stored again */
    uint64_t *mid;  /* digest of item i's messageId */
    uint8_t *bad;   /* item i failed before decoding: ITEM_NOT_OBJECT or ITEM_TOO_BIG */
    size_t *aux;    /* its jtype, or its size */
    elog_rec *recs; /* items grouped by partition */
    size_t *count;  /* per partition, partitions + 1 entries */
    trk_event ev;
} work;

struct http_server {
    http_opts o;
    struct MHD_Daemon *d;
    int partitions;
    uint16_t port;
    atomic_int active; /* requests between their first call and their completion */
    pthread_mutex_t pool_mu;
    work *pool;
};

/* One request, from its headers to its completion callback. */
typedef struct req {
    int route;
    bool authed; /* by the Authorization header */
    bool gzip;
    bool z_init, z_end;
    bool rejected;        /* an answer was queued before the body was read */
    unsigned fail_status; /* the body broke a rule mid-way; answered once it ends */
    const char *fail_msg, *fail_limit;
    size_t discarded;
    size_t limit;
    z_stream z;
    onr_buf body;
} req;

/* ---- small helpers */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logmsg(http_server *s, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logmsg(http_server *s, const char *level, const char *fmt, ...)
{
    if (!s->o.logf)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->o.logf(s->o.log_ctx, level, msg);
}

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

/* Writes a random (version 4) UUID as a JSON string. */
static void jw_uuid(onr_buf *b)
{
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (errno != EINTR)
            break; /* cannot happen on Linux >= 3.17 for 16 bytes; the ids stay unique-ish */
    }
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char s[37];
    size_t k = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            s[k++] = '-';
        s[k++] = hex[r[i] >> 4];
        s[k++] = hex[r[i] & 15];
    }
    s[k] = 0;
    jw_str(b, s, k);
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

static bool write_key_ok(const http_server *s, const char *k, size_t n)
{
    bool ok = false;
    for (size_t i = 0; i < s->o.nwrite_keys; i++)
        ok |= key_eq(k, n, s->o.write_keys[i]);
    return ok && n > 0;
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

/* ---- answers */

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, const char *body,
                                 size_t len, bool auth_challenge, bool retry)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (auth_challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"onramp\"");
    if (retry)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result r = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* {"success":false,"error":msg[,"limit":limit]} */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg,
                                  const char *limit)
{
    onr_buf b = {0};
    onr_buf_puts(&b, "{\"success\":false,\"error\":");
    jw_strz(&b, msg);
    if (limit) {
        onr_buf_puts(&b, ",\"limit\":");
        jw_strz(&b, limit);
    }
    onr_buf_putc(&b, '}');
    enum MHD_Result r = send_json(c, status, b.data, b.len, status == MHD_HTTP_UNAUTHORIZED,
                                  status == MHD_HTTP_SERVICE_UNAVAILABLE);
    onr_buf_free(&b);
    return r;
}

static const char SUCCESS[] = "{\"success\":true}";

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
    w->in = jdoc_new(HTTP_MAX_REQUEST_BYTES);
    w->out = jdoc_new(OUT_DOC_BYTES);
    w->count = onr_calloc((size_t)s->partitions + 1, sizeof(*w->count));
    if (!w->in || !w->out) {
        fputs("onramp: out of memory (JSON parser)\n", stderr);
        abort();
    }
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
    jdoc_free(w->out);
    onr_buf_free(&w->items);
    onr_buf_free(&w->reply);
    onr_free(w->start);
    onr_free(w->end);
    onr_free(w->part);
    onr_free(w->bad);
    onr_free(w->aux);
    onr_free(w->mid);
    onr_free(w->recs);
    onr_free(w->count);
    onr_free(w);
}

static void work_reserve(work *w, size_t n)
{
    if (n <= w->cap)
        return;
    size_t cap = ONR_MAX(n, w->cap * 2);
    w->start = onr_realloc(w->start, cap * sizeof(*w->start));
    w->end = onr_realloc(w->end, cap * sizeof(*w->end));
    w->part = onr_realloc(w->part, cap * sizeof(*w->part));
    w->bad = onr_realloc(w->bad, cap * sizeof(*w->bad));
    w->aux = onr_realloc(w->aux, cap * sizeof(*w->aux));
    w->mid = onr_realloc(w->mid, cap * sizeof(*w->mid));
    w->recs = onr_realloc(w->recs, cap * sizeof(*w->recs));
    w->cap = cap;
}

/* ---- messages */

static bool is_key(const char *k, size_t n, const char *z)
{
    return strlen(z) == n && memcmp(k, z, n) == 0;
}

/* Batch-level members copied into items that lack them. */
typedef struct batch_fields {
    jval context, integrations, sent_at;
} batch_fields;

/*
 * Writes item as stored: its own members (minus writeKey, receivedAt, and type when the
 * endpoint implies it), then type, messageId when missing, receivedAt, and the batch-level
 * fields it lacks. *own is the size of its own members (what the per-event limit counts).
 */
static void write_item(onr_buf *b, jval item, int kind, const batch_fields *bf, int64_t now,
                       size_t *own)
{
    size_t at = b->len;
    bool first = true, has_mid = false, has_ctx = false, has_int = false, has_sent = false;
    onr_buf_putc(b, '{');
    jiter it = jval_iter(item);
    jval v;
    const char *k;
    size_t kn;
    while (jiter_next(&it, &v, &k, &kn)) {
        if (is_key(k, kn, "writeKey") || is_key(k, kn, "receivedAt") ||
            (kind >= 0 && is_key(k, kn, "type")))
            continue;
        if (is_key(k, kn, "messageId")) {
            size_t sl = 0;
            jtype t = jval_type(v);
            if (t == J_NULL || (t == J_STRING && (jval_str(v, &sl), sl == 0)))
                continue; /* generated below */
            has_mid = true;
        } else if (is_key(k, kn, "context")) {
            has_ctx = true;
        } else if (is_key(k, kn, "integrations")) {
            has_int = true;
        } else if (is_key(k, kn, "sentAt")) {
            has_sent = true;
        }
        if (!first)
            onr_buf_putc(b, ',');
        first = false;
        jw_str(b, k, kn);
        onr_buf_putc(b, ':');
        jval_write(v, b);
    }
    *own = b->len - at + 1;
    if (kind >= 0) {
        onr_buf_puts(b, first ? "\"type\":" : ",\"type\":");
        jw_strz(b, trk_kind_name((trk_kind)kind));
        first = false;
    }
    if (!has_mid) {
        onr_buf_puts(b, first ? "\"messageId\":" : ",\"messageId\":");
        jw_uuid(b);
        first = false;
    }
    onr_buf_puts(b, first ? "\"receivedAt\":" : ",\"receivedAt\":");
    jw_time(b, now);
    if (!has_ctx && bf && jval_type(bf->context) != J_NONE) {
        onr_buf_puts(b, ",\"context\":");
        jval_write(bf->context, b);
    }
    if (!has_int && bf && jval_type(bf->integrations) != J_NONE) {
        onr_buf_puts(b, ",\"integrations\":");
        jval_write(bf->integrations, b);
    }
    if (!has_sent && bf && jval_type(bf->sent_at) != J_NONE) {
        onr_buf_puts(b, ",\"sentAt\":");
        jval_write(bf->sent_at, b);
    }
    onr_buf_putc(b, '}');
}

static void reply_item_error(onr_buf *r, size_t *nbad, size_t index, const char *reason)
{
    onr_buf_puts(r, (*nbad)++ ? "," : "");
    onr_buf_printf(r, "{\"index\":%zu,\"reason\":", index);
    jw_strz(r, reason);
    onr_buf_putc(r, '}');
}

static int partition_of(const trk_event *ev, int partitions)
{
    trk_str k = ev->user_id.n ? ev->user_id : ev->anon_id;
    return (int)(onr_hash64(k.p, k.n, 0x75736572) % (uint64_t)partitions);
}

/* Parses, authenticates, validates and appends a whole body; queues the answer. */
static enum MHD_Result ingest(http_server *s, struct MHD_Connection *c, req *r)
{
    char err[320];
    if (r->gzip && !r->z_end)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "gzip body is truncated", NULL);

    work *w = work_get(s);
    enum MHD_Result ret;
    int64_t now = now_ms();
    jval root;
    if (jdoc_parse(w->in, r->body.data ? r->body.data : "", r->body.len, &root, err, sizeof(err))) {
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, err, NULL);
        goto done;
    }
    if (jval_type(root) != J_OBJECT) {
        snprintf(err, sizeof(err), "body must be a JSON object, got %s",
                 jtype_name(jval_type(root)));
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, err, NULL);
        goto done;
    }
    if (!r->authed) {
        jval wk = jval_getz(root, "writeKey");
        size_t n = 0;
        const char *k = jval_type(wk) == J_STRING ? jval_str(wk, &n) : NULL;
        if (!k || !write_key_ok(s, k, n)) {
            ret = send_error(c, MHD_HTTP_UNAUTHORIZED,
                             k ? "unknown write key"
                               : "missing write key (HTTP Basic auth user name, or \"writeKey\")",
                             NULL);
            goto done;
        }
    }

    /* The items, re-written as stored, into one array parsed once more for validation. */
    batch_fields bf = {{0}, {0}, {0}};
    size_t n;
    jval batch = {0};
    int kind = r->route == ROUTE_BATCH ? -1 : r->route;
    if (kind < 0) {
        batch = jval_getz(root, "batch");
        if (jval_type(batch) != J_ARRAY) {
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
    work_reserve(w, n);
    onr_buf_clear(&w->items);
    onr_buf_clear(&w->reply);
    onr_buf_putc(&w->items, '[');
    size_t nbad = 0;
    jiter it = kind < 0 ? jval_iter(batch) : (jiter){0};
    for (size_t i = 0; i < n; i++) {
        jval item = root;
        if (kind < 0)
            jiter_next(&it, &item, NULL, NULL);
        if (i)
            onr_buf_putc(&w->items, ',');
        w->start[i] = w->items.len;
        w->bad[i] = ITEM_OK;
        if (jval_type(item) != J_OBJECT) {
            onr_buf_puts(&w->items, "null");
            w->bad[i] = ITEM_NOT_OBJECT;
            w->aux[i] = jval_type(item);
        } else {
            size_t own;
            write_item(&w->items, item, kind, kind < 0 ? &bf : NULL, now, &own);
            if (own > HTTP_MAX_EVENT_BYTES) {
                w->bad[i] = ITEM_TOO_BIG;
                w->aux[i] = own;
            }
        }
        w->end[i] = w->items.len;
    }
    onr_buf_putc(&w->items, ']');

    jval arr;
    if (jdoc_parse(w->out, w->items.data, w->items.len, &arr, err, sizeof(err))) {
        logmsg(s, "error", "re-parse of accepted messages failed: %s", err);
        ret = send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error", NULL);
        goto done;
    }
    static const trk_schema no_fields;
    it = jval_iter(arr);
    for (size_t i = 0; i < n; i++) {
        jval item;
        jiter_next(&it, &item, NULL, NULL);
        if (w->bad[i] == ITEM_NOT_OBJECT) {
            snprintf(err, sizeof(err), "message must be a JSON object, got %s",
                     jtype_name((jtype)w->aux[i]));
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        if (w->bad[i] == ITEM_TOO_BIG) {
            snprintf(err, sizeof(err), "message of %zu bytes exceeds the %d KB limit per event",
                     w->aux[i], HTTP_MAX_EVENT_BYTES / 1024);
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        if (trk_decode_value(item, &no_fields, now, &w->ev, err, sizeof(err))) {
            reply_item_error(&w->reply, &nbad, i, err);
            continue;
        }
        w->part[i] = partition_of(&w->ev, s->partitions);
        w->mid[i] = trk_dedup_digest(w->ev.message_id.p, w->ev.message_id.n);
    }

    if (nbad) {
        onr_buf b = {0};
        onr_buf_puts(&b, "{\"success\":false,\"error\":");
        if (kind >= 0) {
            /* One message: its reason is the error. */
            const char *p = strstr(w->reply.data, "\"reason\":");
            onr_buf_put(&b, p + 9, w->reply.len - (size_t)(p + 9 - w->reply.data) - 1);
        } else {
            snprintf(err, sizeof(err),
                     "%zu of %zu messages are invalid; the batch was not accepted", nbad, n);
            jw_strz(&b, err);
            onr_buf_puts(&b, ",\"errors\":[");
            onr_buf_put(&b, w->reply.data, w->reply.len);
            onr_buf_putc(&b, ']');
        }
        onr_buf_putc(&b, '}');
        ret = send_json(c, MHD_HTTP_BAD_REQUEST, b.data, b.len, false, false);
        onr_buf_free(&b);
        goto done;
    }

    /* Resent messages (an id seen lately, or earlier in this request) are not stored again.
     * Ids are remembered as their partition's append succeeds, so a request that fails
     * part way can be retried without storing anything twice. */
    if (s->o.dedup)
        for (size_t i = 0; i < n; i++) {
            bool dup = trk_dedup_seen(s->o.dedup, w->mid[i], now);
            for (size_t j = 0; j < i && !dup; j++)
                dup = w->mid[j] == w->mid[i] && w->part[j] >= 0;
            if (dup)
                w->part[i] = -1;
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
        elog_rec *rec = &w->recs[w->count[w->part[i]]++];
        rec->data = w->items.data + w->start[i];
        rec->len = w->end[i] - w->start[i];
    }
    /* count[p] is now the end of partition p's group. */
    size_t from = 0;
    for (int p = 0; p < P; p++) {
        size_t to = w->count[p];
        if (to == from)
            continue;
        int rc = elog_append_batch(s->o.log, p, w->recs + from, to - from, NULL);
        if (rc) {
            logmsg(s, "error", "event log append to partition %d failed: %s", p,
                   rc < 0 && rc > -4096 ? strerror(-rc) : "limit");
            ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                             "the event log could not store the messages; retry", NULL);
            goto done;
        }
        if (s->o.dedup) /* stored: a retry of this request must not store them again */
            for (size_t i = 0; i < n; i++)
                if (w->part[i] == p)
                    trk_dedup_add(s->o.dedup, w->mid[i], now);
        from = to;
    }
    ret = send_json(c, MHD_HTTP_OK, SUCCESS, sizeof(SUCCESS) - 1, false, false);
done:
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
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    header_count *h = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        h->content_length++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        h->transfer_encoding++;
    return MHD_YES;
}

/* Checks what the headers alone decide; returns true when an answer was queued. */
static bool reject_early(http_server *s, struct MHD_Connection *c, req *r, const char *method,
                         enum MHD_Result *ret)
{
    char msg[200];
    header_count h = {0, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &h);
    if (h.content_length > 1 || (h.content_length && h.transfer_encoding)) {
        *ret =
            send_error(c, MHD_HTTP_BAD_REQUEST,
                       h.content_length > 1 ? "more than one Content-Length header"
                                            : "both Content-Length and Transfer-Encoding headers",
                       NULL);
        return true;
    }
    if (r->route == ROUTE_HEALTHZ || r->route == ROUTE_READYZ) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
            *ret = send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET", NULL);
            return true;
        }
        if (r->route == ROUTE_HEALTHZ || s->o.log) {
            static const char ok[] = "{\"ok\":true}";
            *ret = send_json(c, MHD_HTTP_OK, ok, sizeof(ok) - 1, false, false);
        } else {
            *ret = send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "the event log is not open", NULL);
        }
        return true;
    }
    if (strcmp(method, "POST") != 0) {
        *ret = send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST", NULL);
        return true;
    }
    r->limit = r->route == ROUTE_BATCH ? HTTP_MAX_REQUEST_BYTES : HTTP_MAX_EVENT_BYTES;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > r->limit) {
        snprintf(msg, sizeof(msg), "%s of %s bytes exceeds the %zu KB limit",
                 r->route == ROUTE_BATCH ? "request body" : "message", cl, r->limit / 1024);
        *ret =
            send_error(c, MHD_HTTP_BAD_REQUEST, msg, r->route == ROUTE_BATCH ? "request" : "event");
        return true;
    }
    const char *enc =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc && strcasecmp(enc, "gzip") == 0) {
        r->gzip = true;
    } else if (enc && *enc && strcasecmp(enc, "identity") != 0) {
        snprintf(msg, sizeof(msg), "unsupported Content-Encoding \"%.60s\" (use gzip)", enc);
        *ret = send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, msg, NULL);
        return true;
    }
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth) {
        char user[512];
        size_t n = 0;
        if (!basic_user(auth, user, sizeof(user), &n) || !write_key_ok(s, user, n)) {
            *ret = send_error(c, MHD_HTTP_UNAUTHORIZED, "unknown write key", NULL);
            return true;
        }
        r->authed = true;
    }
    return false;
}

/* Adds a chunk of body; returns 0, or an HTTP status with msg/limit set. */
static unsigned feed(req *r, const char *data, size_t n, const char **msg, const char **limit)
{
    *limit = r->route == ROUTE_BATCH ? "request" : "event";
    *msg = r->route == ROUTE_BATCH ? "request body exceeds the 500 KB limit"
                                   : "message exceeds the 32 KB limit per event";
    if (!r->gzip) {
        if (r->body.len + n > r->limit)
            return MHD_HTTP_BAD_REQUEST;
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
            *msg = "data after the end of the gzip body";
            *limit = NULL;
            return MHD_HTTP_BAD_REQUEST;
        }
        onr_buf_reserve(&r->body, 16384);
        r->z.next_out = (Bytef *)(r->body.data + r->body.len);
        r->z.avail_out = (uInt)(r->body.cap - r->body.len);
        int zr = inflate(&r->z, Z_NO_FLUSH);
        r->body.len = (size_t)((char *)r->z.next_out - r->body.data);
        if (r->body.len > r->limit) /* the decompressed size counts */
            return MHD_HTTP_BAD_REQUEST;
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    http_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        r = onr_calloc(1, sizeof(*r));
        *con_cls = r;
        atomic_fetch_add(&s->active, 1);
        r->route = -1;
        for (size_t i = 0; i < ONR_ARRAY_LEN(routes); i++)
            if (strcmp(url, routes[i].path) == 0)
                r->route = routes[i].route;
        enum MHD_Result ret;
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
    if (r->rejected) {
        *upload_data_size = 0; /* the answer is queued; MHD closes the connection */
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
    if (r->fail_status)
        return send_error(c, r->fail_status, r->fail_msg, r->fail_limit);
    return ingest(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    req *r = *con_cls;
    if (!r)
        return;
    if (r->z_init)
        inflateEnd(&r->z);
    onr_buf_free(&r->body);
    onr_free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->active, 1);
}

/* ---- start and stop */

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

    http_server *s = onr_calloc(1, sizeof(*s));
    s->o = *o;
    if (s->o.threads <= 0)
        s->o.threads = 2;
    s->partitions = elog_partitions(o->log);
    atomic_init(&s->active, 0);
    pthread_mutex_init(&s->pool_mu, NULL);

    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_logger, s, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->o.threads,
                            MHD_OPTION_SOCK_ADDR, &addr.sa, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%u (address in use, or not local?)",
                 v6 ? "[" : "", o->host, v6 ? "]" : "", (unsigned)o->port);
        pthread_mutex_destroy(&s->pool_mu);
        onr_free(s);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info && info->port ? info->port : o->port;
    *out = s;
    return 0;
}

uint16_t http_port(const http_server *s)
{
    return s->port;
}

void http_stop(http_server *s, int64_t drain_ms)
{
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    int64_t deadline = now_ms() + drain_ms;
    while (atomic_load(&s->active) > 0 && now_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&s->active);
    if (left > 0)
        logmsg(s, "warn", "%d requests still in flight after the drain; closing them", left);
    MHD_stop_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    while (s->pool) {
        work *w = s->pool;
        s->pool = w->next;
        work_free(w);
    }
    pthread_mutex_destroy(&s->pool_mu);
    onr_free(s);
}

/* ---- restart */

long http_dedup_recover(const http_opts *o, int64_t window_ms, int64_t now_ms, char *err,
                        size_t errlen)
{
    if (!o->dedup)
        return 0;
    jdoc *doc = jdoc_new(HTTP_MAX_EVENT_BYTES + 4096);
    long added = 0;
    char perr[256];
    for (int p = 0; p < elog_partitions(o->log); p++) {
        elog_reader *r;
        int rc = elog_reader_open(o->log, p, elog_start_offset(o->log, p), &r);
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
            jval root;
            if (jdoc_parse(doc, rec, len, &root, perr, sizeof(perr)))
                continue; /* stored by this server, so not expected; nothing to recover */
            size_t idn, tn;
            const char *id = jval_str(jval_getz(root, "messageId"), &idn);
            const char *t = jval_str(jval_getz(root, "receivedAt"), &tn);
            int64_t at;
            if (!idn || onr_time_parse(t, tn, &at) || at < now_ms - window_ms)
                continue;
            trk_dedup_add(o->dedup, trk_dedup_digest(id, idn), at);
            added++;
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
