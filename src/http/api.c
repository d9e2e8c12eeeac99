/*
 * api.c - the management API of `onramp serve` (JSON under /api/, bearer-token auth) and
 * /metrics in Prometheus' text format: users, explain, segment sizes, trigger counts, the
 * rules and their hot reload, dry runs of rules over the log (POST /api/replay), and the
 * counters of ingest, the event log and the engine.
 * Everything about users is asked of the shard that owns them (shard.h). Endpoints:
 * docs/api.md.
 */
#include "http/http_int.h"

#include "base/json.h"
#include "rules/rules.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const unsigned status_codes[HTTP_STATUS_KINDS] = {200, 204, 400, 401, 404, 405,
                                                         413, 415, 422, 429, 500, 503};

void http__count(http_counters *c, unsigned status)
{
    for (int i = 0; i < HTTP_STATUS_KINDS; i++)
        if (status_codes[i] == status) {
            atomic_fetch_add(&c->by_status[i], 1);
            return;
        }
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len)
{
    return http__reply(c, status, ctype, body, len,
                       status == MHD_HTTP_UNAUTHORIZED ? "Bearer realm=\"onramp\"" : NULL, 0);
}

static enum MHD_Result reply_buf(struct MHD_Connection *c, unsigned status, onr_buf *b)
{
    enum MHD_Result r = reply(c, status, "application/json", b->data ? b->data : "", b->len);
    onr_buf_free(b);
    return r;
}

/* {"success":false,"error":msg}; retry_s > 0 adds Retry-After. */
static enum MHD_Result fail_retry(struct MHD_Connection *c, unsigned status, const char *msg,
                                  unsigned retry_s)
{
    onr_buf b = {0};
    onr_buf_puts(&b, "{\"success\":false,\"error\":");
    jw_strz(&b, msg);
    onr_buf_putc(&b, '}');
    enum MHD_Result r =
        http__reply(c, status, "application/json", b.data, b.len,
                    status == MHD_HTTP_UNAUTHORIZED ? "Bearer realm=\"onramp\"" : NULL, retry_s);
    onr_buf_free(&b);
    return r;
}

static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return fail_retry(c, status, msg, 0);
}

/* Compares in time independent of where the strings differ. */
static bool token_eq(const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b);
    unsigned char d = an != bn;
    for (size_t i = 0; i < an; i++)
        d |= (unsigned char)(a[i] ^ b[i % (bn ? bn : 1)]);
    return d == 0;
}

static bool authorized(const http_opts *o, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !o->admin_token || !*o->admin_token)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return token_eq(h, o->admin_token);
}

/* ---- /metrics */

void http__observe(http_hist *h, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    int i = 0;
    while (i < ELOG_FSYNC_BUCKETS - 1 && us > elog_fsync_bucket_us(i))
        i++;
    atomic_fetch_add(&h->b[i], 1);
    atomic_fetch_add(&h->sum_us, us);
    atomic_fetch_add(&h->n, 1);
}

/* The series of a histogram (its HELP and TYPE written already): cumulative buckets in
 * seconds, the sum and the count. */
static void put_hist(onr_buf *out, const char *name, const uint64_t *per_bucket, uint64_t sum_us,
                     uint64_t n)
{
    uint64_t cum = 0;
    for (int i = 0; i < ELOG_FSYNC_BUCKETS; i++) {
        cum += per_bucket[i];
        uint64_t b = elog_fsync_bucket_us(i);
        if (b == UINT64_MAX)
            onr_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
        else
            onr_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, b / 1e6,
                           (unsigned long long)cum);
    }
    onr_buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, sum_us / 1e6, name,
                   (unsigned long long)n);
}

static void metrics(http_server *s, onr_buf *out)
{
    const http_opts *o = http__opts(s);
    http_counters *k = http__counters(s);
    onr_buf_printf(out,
                   "# HELP onramp_ingest_events_total Messages stored in the event log.\n"
                   "# TYPE onramp_ingest_events_total counter\n"
                   "onramp_ingest_events_total %llu\n"
                   "# HELP onramp_ingest_duplicates_total Resent messages (a messageId seen "
                   "lately) answered 200 and not stored again.\n"
                   "# TYPE onramp_ingest_duplicates_total counter\n"
                   "onramp_ingest_duplicates_total %llu\n"
                   "# HELP onramp_http_responses_total Answers by HTTP status (ingest, probes "
                   "and API).\n"
                   "# TYPE onramp_http_responses_total counter\n",
                   (unsigned long long)atomic_load(&k->events),
                   (unsigned long long)atomic_load(&k->duplicates));
    for (int i = 0; i < HTTP_STATUS_KINDS; i++)
        onr_buf_printf(out, "onramp_http_responses_total{code=\"%u\"} %llu\n", status_codes[i],
                       (unsigned long long)atomic_load(&k->by_status[i]));
    static const char *const reasons[HTTP_REJECT_KINDS] = {
        [REJECT_MALFORMED] = "malformed",
        [REJECT_INVALID] = "invalid",
        [REJECT_TOO_LARGE] = "too_large",
        [REJECT_UNAUTHORIZED] = "unauthorized",
        [REJECT_RATE_LIMITED] = "rate_limited",
        [REJECT_ENGINE_LAG] = "engine_lag",
        [REJECT_RESEND_IN_FLIGHT] = "resend_in_flight",
        [REJECT_LOG_ERROR] = "log_error",
    };
    onr_buf_puts(out, "# HELP onramp_ingest_rejected_total Messages ingest refused, by reason (a "
                      "request refused before its messages are counted counts one).\n"
                      "# TYPE onramp_ingest_rejected_total counter\n");
    for (int i = 0; i < HTTP_REJECT_KINDS; i++)
        onr_buf_printf(out, "onramp_ingest_rejected_total{reason=\"%s\"} %llu\n", reasons[i],
                       (unsigned long long)atomic_load(&k->rejected[i]));

    struct elog_stats ls;
    elog_stats(o->log, -1, &ls);
    onr_buf_printf(out,
                   "# HELP onramp_log_bytes Bytes of the event log on disk.\n"
                   "# TYPE onramp_log_bytes gauge\n"
                   "onramp_log_bytes %llu\n"
                   "# HELP onramp_log_segments Segment files of the event log.\n"
                   "# TYPE onramp_log_segments gauge\n"
                   "onramp_log_segments %llu\n"
                   "# HELP onramp_log_appended_bytes_total Framed bytes appended since start.\n"
                   "# TYPE onramp_log_appended_bytes_total counter\n"
                   "onramp_log_appended_bytes_total %llu\n"
                   "# HELP onramp_log_records_total Records appended since start.\n"
                   "# TYPE onramp_log_records_total counter\n"
                   "onramp_log_records_total %llu\n"
                   "# HELP onramp_log_errors_total Failed writes and fsyncs of the event log.\n"
                   "# TYPE onramp_log_errors_total counter\n"
                   "onramp_log_errors_total{op=\"write\"} %llu\n"
                   "onramp_log_errors_total{op=\"fsync\"} %llu\n"
                   "# HELP onramp_log_fsync_seconds Latency of the event log's fsyncs (journal and "
                   "segments).\n"
                   "# TYPE onramp_log_fsync_seconds histogram\n",
                   (unsigned long long)ls.bytes, (unsigned long long)ls.segments,
                   (unsigned long long)ls.appended_bytes, (unsigned long long)ls.records,
                   (unsigned long long)ls.write_errors, (unsigned long long)ls.fsync_errors);
    put_hist(out, "onramp_log_fsync_seconds", ls.fsync_hist, ls.fsync_us_sum, ls.fsyncs);
    uint64_t counts[ELOG_FSYNC_BUCKETS];
    const struct {
        const char *name, *help;
        http_hist *h;
    } hists[] = {
        {"onramp_ingest_durable_seconds",
         "Ingest requests answered 200: from the whole body to the messages durable under "
         "--fsync.",
         &k->durable},
        {"onramp_ingest_request_seconds",
         "Ingest requests answered 200: from the whole body to the answer sent.", &k->answered},
    };
    for (size_t h = 0; h < ONR_ARRAY_LEN(hists); h++) {
        for (int i = 0; i < ELOG_FSYNC_BUCKETS; i++)
            counts[i] = atomic_load(&hists[h].h->b[i]);
        onr_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help,
                       hists[h].name);
        put_hist(out, hists[h].name, counts, atomic_load(&hists[h].h->sum_us),
                 atomic_load(&hists[h].h->n));
    }
    shard_metrics(o->shards, out);
}

/* ---- routes */

/* The rules of a PUT, written next to the rules file and renamed over it. */
static int write_rules(const char *path, const char *src, size_t len, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, src + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0)
        goto fail;
    return 0;
fail:;
    int e = errno;
    unlink(tmp);
    snprintf(err, errlen, "cannot write the rules file %s: %s", path, strerror(e));
    return -e;
}

/* 422: the n compile errors in errs (freed), and what follows from them. */
static enum MHD_Result refuse_rules(struct MHD_Connection *c, int n, onr_buf *errs,
                                    const char *outcome)
{
    onr_buf b = {0};
    onr_buf_printf(&b,
                   "{\"success\":false,\"error\":\"the rules have %d error%s; %s\",\"errors\":", n,
                   n == 1 ? "" : "s", outcome);
    jw_str(&b, errs->data ? errs->data : "", errs->len);
    onr_buf_putc(&b, '}');
    onr_buf_free(errs);
    return reply_buf(c, 422, &b);
}

static enum MHD_Result put_rules(http_server *s, struct MHD_Connection *c, const char *body,
                                 size_t len)
{
    const http_opts *o = http__opts(s);
    const char *path = o->rules_path ? o->rules_path : "rules";
    rule_set *rs = NULL;
    onr_buf errs = {0};
    int n = rule_compile(path, body, len, &rs, &errs);
    if (n != 0)
        return refuse_rules(c, n, &errs, "the running rules stay");
    onr_buf_free(&errs);
    onr_buf b = {0};
    char err[512];
    if (o->rules_path && write_rules(o->rules_path, body, len, err, sizeof(err)) != 0) {
        rule_free(rs);
        return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    int nseg = rs->nsegments, ntrig = rs->ntriggers;
    if (shard_reload(o->shards, rs, err, sizeof(err)) != 0) {
        rule_free(rs);
        return fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, err);
    }
    onr_buf_printf(&b, "{\"success\":true,\"segments\":%d,\"triggers\":%d}", nseg, ntrig);
    return reply_buf(c, MHD_HTTP_OK, &b);
}

/* ---- POST /api/replay: a dry run of rules over the log, in a thread of its own */

/* The largest max_records a replay takes. */
#define REPLAY_MAX_RECORDS UINT64_C(1000000000)

struct api_job {
    api_replays *slot;
    shard_set *shards;
    struct MHD_Connection *c;
    rule_set *rs;
    shard_dry_opts o;
    char *user;
    onr_buf out;
    int rc;
    bool cut; /* a stop cancelled it while it ran */
    char err[256];
    atomic_bool done;
};

void api_replays_init(api_replays *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

void api_replays_stop(api_replays *r)
{
    atomic_store(&r->cancel, true);
    pthread_mutex_lock(&r->mu);
    while (r->live > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

bool api_job_done(api_job *job)
{
    return atomic_load(&job->done);
}

static void *replay_main(void *arg)
{
    api_job *job = arg;
    onr_thread_name("replay", 0);
    job->rc = shard_dry_run(job->shards, job->rs, &job->o, &job->out, &job->cut, job->err,
                            sizeof(job->err));
    api_replays *slot = job->slot;
    struct MHD_Connection *c = job->c;
    /* another may start before this one's answer is sent, once it is ready to be */
    pthread_mutex_lock(&slot->mu);
    slot->busy = false;
    pthread_mutex_unlock(&slot->mu);
    atomic_store(&job->done, true);
    MHD_resume_connection(c); /* the request answers it: job is the request's from here */
    pthread_mutex_lock(&slot->mu);
    slot->live--; /* after the resume: a stop waits for this before stopping MHD */
    pthread_cond_broadcast(&slot->cv);
    pthread_mutex_unlock(&slot->mu);
    return NULL;
}

void api_job_free(api_job *job)
{
    rule_free(job->rs);
    onr_free(job->user);
    onr_buf_free(&job->out);
    onr_free(job);
}

enum MHD_Result api_job_answer(struct MHD_Connection *c, api_job *job)
{
    enum MHD_Result r;
    if (job->rc)
        r = fail(c, MHD_HTTP_INTERNAL_SERVER_ERROR, job->err);
    else if (job->cut)
        r = fail(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                 "the server is stopping; the replay was cut short");
    else
        r = reply(c, MHD_HTTP_OK, "application/json", job->out.data, job->out.len);
    api_job_free(job);
    return r;
}

/* A query parameter as a count in 1..max; false when present and not one. */
static bool count_arg(struct MHD_Connection *c, const char *name, uint64_t max, uint64_t *out)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return true;
    char *end;
    errno = 0;
    uintmax_t n = strtoumax(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || n < 1 || n > max)
        return false;
    *out = (uint64_t)n;
    return true;
}

static enum MHD_Result post_replay(http_server *s, struct MHD_Connection *c, const char *body,
                                   size_t len, api_job **jobp)
{
    const http_opts *o = http__opts(s);
    api_replays *slot = http__replays(s);
    uint64_t max = SHARD_DRY_RUN_RECORDS;
    char msg[160];
    if (!count_arg(c, "max_records", REPLAY_MAX_RECORDS, &max)) {
        snprintf(msg, sizeof(msg), "max_records must be a whole number from 1 to %" PRIu64,
                 REPLAY_MAX_RECORDS);
        return fail(c, MHD_HTTP_BAD_REQUEST, msg);
    }
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "user");
    char user[3 * TRK_MAX_ID_BYTES + 1]; /* each byte sent as at most 3 (%HH) */
    if (arg) {
        size_t an = strlen(arg);
        if (an == 0 || an >= sizeof(user) || (an = http__unkeep(arg, an, user)) > TRK_MAX_ID_BYTES)
            return fail(c, MHD_HTTP_BAD_REQUEST, "user must be an id of 1 to 256 bytes");
        user[an] = 0;
    }
    /* the rules sent, or the running ones when the body is empty */
    onr_buf path = {0}, src = {0};
    if (len == 0) {
        shard_rules_source(o->shards, &path, &src);
        body = onr_buf_cstr(&src);
        len = src.len;
    } else {
        onr_buf_puts(&path, "replay");
    }
    rule_set *rs = NULL;
    onr_buf errs = {0};
    int n = rule_compile(onr_buf_cstr(&path), body, len, &rs, &errs);
    onr_buf_free(&path);
    onr_buf_free(&src);
    if (n != 0)
        return refuse_rules(c, n, &errs, "nothing was run");
    onr_buf_free(&errs);
    pthread_mutex_lock(&slot->mu);
    bool busy = slot->busy, stopping = atomic_load(&slot->cancel);
    if (!busy && !stopping) {
        slot->busy = true;
        slot->live++;
    }
    pthread_mutex_unlock(&slot->mu);
    if (busy || stopping) {
        rule_free(rs);
        return stopping ? fail(c, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is stopping")
                        : fail_retry(c, MHD_HTTP_TOO_MANY_REQUESTS,
                                     "a replay is running; one runs at a time", 1);
    }
    api_job *job = onr_calloc(1, sizeof(*job));
    job->slot = slot;
    job->shards = o->shards;
    job->c = c;
    job->rs = rs;
    job->user = arg ? onr_strdup(user) : NULL;
    job->o = (shard_dry_opts){.max_records = max,
                              .explain_user = job->user,
                              .now_ms = onr_wall_ms(),
                              .cancel = &slot->cancel};
    /* suspended first: the thread may finish, and resume it, at once */
    MHD_suspend_connection(c);
    *jobp = job;
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&thread, &attr, replay_main, job);
    pthread_attr_destroy(&attr);
    if (e) {
        job->rc = -e;
        snprintf(job->err, sizeof(job->err), "cannot start the replay: %s", strerror(e));
        pthread_mutex_lock(&slot->mu);
        slot->busy = false;
        slot->live--;
        pthread_cond_broadcast(&slot->cv);
        pthread_mutex_unlock(&slot->mu);
        atomic_store(&job->done, true);
        MHD_resume_connection(c);
    }
    return MHD_YES;
}

size_t http__unescape(void *cls, struct MHD_Connection *c, char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = onr_hex_digit(r[1])) >= 0 && (lo = onr_hex_digit(r[2])) >= 0 &&
            hi * 16 + lo != '/' && hi * 16 + lo != '%') {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

size_t http__unkeep(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && s[i + 1] == '2' &&
            (s[i + 2] == 'F' || s[i + 2] == 'f' || s[i + 2] == '5')) {
            out[k++] = s[i + 2] == '5' ? '%' : '/';
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    return k;
}

/* /api/users/{id} or /api/users/{id}/explain, the URL unescaped but for %2F and %25
 * (http__unescape): the id is what follows /api/users/, less a final /explain, decoded into
 * out (room for as many bytes as the path has), so that an id holding '/' (sent as %2F) is
 * found, and one ending in /explain too. */
static bool user_path(const char *url, char *out, size_t *n, bool *explain)
{
    static const char tail[] = "/explain";
    const char *p = url + strlen("/api/users/");
    size_t len = strlen(p), tn = sizeof(tail) - 1;
    *explain = len > tn && strcmp(p + len - tn, tail) == 0;
    *n = http__unkeep(p, *explain ? len - tn : len, out);
    return *n > 0;
}

static enum MHD_Result route(http_server *s, struct MHD_Connection *c, const char *url,
                             const char *method, const char *body, size_t len, api_job **job)
{
    const http_opts *o = http__opts(s);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    onr_buf b = {0};
    if (strcmp(url, "/metrics") == 0) {
        if (!get)
            return fail(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
        metrics(s, &b);
        enum MHD_Result r =
            reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
        onr_buf_free(&b);
        return r;
    }
    if (strcmp(url, "/api/rules") == 0) {
        if (strcmp(method, "PUT") == 0)
            return put_rules(s, c, body, len);
        if (!get)
            return fail(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET, or PUT with a rules file");
        onr_buf path = {0}, src = {0};
        shard_rules_source(o->shards, &path, &src);
        onr_buf_puts(&b, "{\"path\":");
        jw_str(&b, path.data ? path.data : "", path.len);
        onr_buf_puts(&b, ",\"source\":");
        jw_str(&b, src.data ? src.data : "", src.len);
        onr_buf_putc(&b, '}');
        onr_buf_free(&path);
        onr_buf_free(&src);
        return reply_buf(c, MHD_HTTP_OK, &b);
    }
    if (strcmp(url, "/api/replay") == 0) {
        if (strcmp(method, "POST") != 0)
            return fail(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                        "use POST, with a rules file or an empty body for the running rules");
        return post_replay(s, c, body, len, job);
    }
    if (!get)
        return fail(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
    if (strcmp(url, "/api/segments") == 0) {
        shard_segments_json(o->shards, &b);
        return reply_buf(c, MHD_HTTP_OK, &b);
    }
    if (strcmp(url, "/api/triggers") == 0) {
        shard_triggers_json(o->shards, &b);
        return reply_buf(c, MHD_HTTP_OK, &b);
    }
    size_t n;
    bool explain;
    /* an id is at most 256 bytes, each sent as at most 3 (%HH) */
    char id[3 * TRK_MAX_ID_BYTES + sizeof("/explain")];
    if (strncmp(url, "/api/users/", 11) == 0 && strlen(url + 11) >= sizeof(id))
        return fail(c, MHD_HTTP_BAD_REQUEST, "user id longer than 256 bytes");
    if (strncmp(url, "/api/users/", 11) == 0 && user_path(url, id, &n, &explain)) {
        if (n > TRK_MAX_ID_BYTES)
            return fail(c, MHD_HTTP_BAD_REQUEST, "user id longer than 256 bytes");
        if (explain) {
            onr_buf report = {0};
            if (shard_explain(o->shards, id, n, &report) != 0) {
                onr_buf_free(&report);
                return fail(c, MHD_HTTP_NOT_FOUND, "no user with that id");
            }
            onr_buf_puts(&b, "{\"user\":");
            jw_str(&b, id, n);
            onr_buf_puts(&b, ",\"report\":");
            jw_str(&b, report.data ? report.data : "", report.len);
            onr_buf_putc(&b, '}');
            onr_buf_free(&report);
            return reply_buf(c, MHD_HTTP_OK, &b);
        }
        if (shard_user(o->shards, id, n, &b) != 0) {
            onr_buf_free(&b);
            return fail(c, MHD_HTTP_NOT_FOUND, "no user with that id");
        }
        return reply_buf(c, MHD_HTTP_OK, &b);
    }
    return fail(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
}

bool api_begin(http_server *s, struct MHD_Connection *c, const char *url, const char *method,
               enum MHD_Result *ret)
{
    const http_opts *o = http__opts(s);
    if (!o->shards) {
        *ret = fail(c, MHD_HTTP_NOT_FOUND, "no such endpoint (the engine is not running)");
        return true;
    }
    if (!authorized(o, c)) {
        *ret = fail(c, MHD_HTTP_UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer TOKEN)");
        return true;
    }
    if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0)
        return false; /* read the body first */
    if (strcmp(url, "/api/replay") == 0 && strcmp(method, "POST") != 0) {
        *ret = fail(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                    "use POST, with a rules file or an empty body for the running rules");
        return true;
    }
    *ret = route(s, c, url, method, NULL, 0, NULL);
    return true;
}

enum MHD_Result api_finish(http_server *s, struct MHD_Connection *c, const char *url,
                           const char *method, const char *body, size_t len, api_job **job)
{
    return route(s, c, url, method, body, len, job);
}
