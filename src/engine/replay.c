/*
 * replay.c - `onramp replay`: reads Segment messages one per line, decodes them, orders
 * them by event time in a bounded reorder buffer (events late by more than --lateness are
 * processed at once and counted), runs them through one engine and writes each segment
 * change and fire as a JSON line. A bad line is reported with its line number and skipped.
 */
#include "replay.h"

#include "base/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (4 * 1024 * 1024)
#define POOL_CHUNK (1024 * 1024)
#define READY_MAX 32

void replay_opts_default(replay_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->lateness_ms = ONR_MINUTE_MS;
    o->max_buffer = 1000000;
    o->drain = true;
    o->progress = -1;
    o->session_timeout_ms = 30 * ONR_MINUTE_MS;
}

/* ---- packed events: what the reorder buffer holds (only the fields the rules read) */

typedef struct pchunk {
    struct pchunk *next; /* on the free list */
    struct pchunk *all;  /* every chunk, for freeing */
    size_t used;
    size_t refs;
    _Alignas(8) char data[POOL_CHUNK];
} pchunk;

typedef struct pool {
    pchunk *cur;
    pchunk *free;
    pchunk *all;
    size_t nchunks;
} pool;

typedef struct hent {
    int64_t ts;
    uint64_t seq;
    char *data;
    pchunk *chunk;
} hent;

static char *pool_alloc(pool *pl, size_t n, pchunk **owner)
{
    if (!pl->cur || POOL_CHUNK - pl->cur->used < n) {
        pchunk *c = pl->free;
        if (c) {
            pl->free = c->next;
        } else {
            c = onr_malloc(sizeof(*c));
            c->all = pl->all;
            pl->all = c;
            pl->nchunks++;
        }
        c->used = 0;
        c->refs = 1; /* the pool's own reference while current */
        c->next = NULL;
        if (pl->cur && --pl->cur->refs == 0) {
            pl->cur->next = pl->free;
            pl->free = pl->cur;
        }
        pl->cur = c;
    }
    char *p = pl->cur->data + pl->cur->used;
    pl->cur->used += n;
    pl->cur->refs++;
    *owner = pl->cur;
    return p;
}

static void pool_release(pool *pl, pchunk *c)
{
    if (--c->refs == 0) {
        c->next = pl->free;
        pl->free = c;
    }
}

static void pool_free(pool *pl)
{
    pchunk *c = pl->all;
    while (c) {
        pchunk *n = c->all;
        onr_free(c);
        c = n;
    }
    memset(pl, 0, sizeof(*pl));
}

/* ---- the reorder heap (min by time, then arrival) */

typedef struct heap {
    hent *a;
    size_t n, cap;
} heap;

static bool hless(const hent *x, const hent *y)
{
    return x->ts < y->ts || (x->ts == y->ts && x->seq < y->seq);
}

static void heap_push(heap *h, hent e)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->a = onr_realloc(h->a, sizeof(hent) * h->cap);
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!hless(&e, &h->a[parent]))
            break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = e;
}

static hent heap_pop(heap *h)
{
    hent top = h->a[0];
    hent last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && hless(&h->a[c + 1], &h->a[c]))
            c++;
        if (!hless(&h->a[c], &last))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n)
        h->a[i] = last;
    return top;
}

/* ---- output */

typedef struct rctx {
    const replay_opts *o;
    const rule_set *rs;
    eng *e;
    FILE *out, *err;
    onr_buf obuf;
    bool write_events;
    pool pl;
    heap hp;
    uint64_t seq;
    int64_t max_ts;
    trk_event *ev;
    hent ready[READY_MAX]; /* left the buffer, not yet run */
    int nready;
    int64_t released_ts; /* time of the last event that left the buffer */
    uint64_t lines, bad, late, forced;
    const char *name;
    int io_error;
} rctx;

static void flush_out(rctx *c)
{
    if (c->obuf.len && fwrite(c->obuf.data, 1, c->obuf.len, c->out) != c->obuf.len)
        c->io_error = errno ? errno : EIO;
    onr_buf_clear(&c->obuf);
}

static void sink(void *ctx, const eng_out *o)
{
    rctx *c = ctx;
    if (!c->write_events)
        return;
    onr_buf *b = &c->obuf;
    const rule_set *rs = c->rs;
    if (o->kind == EO_TRIGGER_FIRED) {
        const rule_trigger *t = &rs->triggers[o->trigger];
        onr_buf_puts(b, "{\"type\":\"trigger.fired\",\"trigger\":");
        jw_strz(b, t->name);
        onr_buf_puts(b, ",\"user\":");
        jw_str(b, o->user, o->user_len);
        onr_buf_puts(b, ",\"at\":");
        jw_time(b, o->at_ms);
        onr_buf_printf(b, ",\"id\":\"%016llx\",\"actions\":[", (unsigned long long)o->id);
        for (int i = 0; i < t->nactions; i++) {
            if (i)
                onr_buf_putc(b, ',');
            onr_buf_puts(b, t->actions[i].kind == ACT_WEBHOOK
                                ? "{\"type\":\"webhook\",\"destination\":"
                                : "{\"type\":\"cue\",\"name\":");
            jw_strz(b, t->actions[i].name);
            onr_buf_putc(b, '}');
        }
        onr_buf_printf(b, "],\"held_out\":%s}\n", o->held_out ? "true" : "false");
    } else {
        onr_buf_puts(b, o->kind == EO_SEGMENT_ENTERED
                            ? "{\"type\":\"segment.entered\",\"segment\":"
                            : "{\"type\":\"segment.exited\",\"segment\":");
        jw_strz(b, rs->segments[o->segment].name);
        onr_buf_puts(b, ",\"user\":");
        jw_str(b, o->user, o->user_len);
        onr_buf_puts(b, ",\"at\":");
        jw_time(b, o->at_ms);
        onr_buf_puts(b, "}\n");
    }
    if (b->len > 256 * 1024)
        flush_out(c);
}

/* Events leave the reorder buffer in order into a small batch; a batch is run with its
 * users' memory prefetched first, so that their cache misses overlap. The engine sees the
 * same events in the same order either way. */
static void run_ready(rctx *c)
{
    trk_str uid, aid;
    for (int stage = 0; stage < 2; stage++)
        for (int i = 0; i < c->nready; i++) {
            trk_packed_ids(c->ready[i].data, &uid, &aid);
            eng_prefetch(c->e, uid, aid, stage);
        }
    for (int i = 0; i < c->nready; i++) {
        trk_unpack(c->ready[i].data, c->ev, &c->rs->schema);
        eng_process(c->e, c->ev);
        pool_release(&c->pl, c->ready[i].chunk);
    }
    c->nready = 0;
}

static void release(rctx *c)
{
    hent h = heap_pop(&c->hp);
    c->released_ts = h.ts;
    c->ready[c->nready++] = h;
    if (c->nready == READY_MAX)
        run_ready(c);
}

static void offer(rctx *c, const trk_event *ev)
{
    int64_t clock = ONR_MAX(eng_clock(c->e), c->released_ts);
    if (ev->ts_ms < clock) {
        /* a straggler: later than the reorder window allows; processed at once, after
         * everything that left the buffer before it */
        c->late++;
        run_ready(c);
        eng_process(c->e, ev);
        return;
    }
    size_t n = trk_packed_size(ev, &c->rs->schema);
    hent h = {.ts = ev->ts_ms, .seq = c->seq++};
    h.data = pool_alloc(&c->pl, n, &h.chunk);
    trk_pack(h.data, ev, &c->rs->schema);
    heap_push(&c->hp, h);
    if (ev->ts_ms > c->max_ts)
        c->max_ts = ev->ts_ms;
    while (c->hp.n && (c->hp.a[0].ts <= c->max_ts - c->o->lateness_ms))
        release(c);
    while (c->hp.n > c->o->max_buffer) {
        c->forced++;
        release(c);
    }
}

/* ---- input */

static void progress(rctx *c, size_t done, size_t total, bool final)
{
    if (final) {
        fputs("\r\033[K", c->err);
        return;
    }
    int width = 40;
    int fill = total ? (int)((double)done / (double)total * width) : 0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[width] = 0;
    fprintf(c->err, "\r[%s] %3d%% %llu events", bar, total ? (int)(100.0 * done / total) : 0,
            (unsigned long long)c->lines);
    fflush(c->err);
}

static int line_error(rctx *c, uint64_t line, const char *msg)
{
    c->bad++;
    fprintf(c->err, "onramp replay: %s:%llu: %s%s\n", c->name, (unsigned long long)line, msg,
            c->o->strict ? "" : " (line skipped)");
    return c->o->strict ? -1 : 0;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int replay_run(const replay_opts *o, FILE *out, FILE *err)
{
    onr_buf errors = {0};
    rule_set *rs = NULL;
    int rc = 0;
    if (rule_compile_file(o->rules_path, &rs, &errors)) {
        fwrite(errors.data, 1, errors.len, err);
        onr_buf_free(&errors);
        return 1;
    }
    onr_buf_free(&errors);

    FILE *in = stdin;
    const char *name = "<stdin>";
    if (o->input_path && strcmp(o->input_path, "-") != 0) {
        in = fopen(o->input_path, "rb");
        if (!in) {
            fprintf(err, "onramp replay: cannot open %s: %s\n", o->input_path, strerror(errno));
            rule_free(rs);
            return 1;
        }
        name = o->input_path;
    }
    size_t total = 0;
    struct stat sb;
    if (fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        total = (size_t)sb.st_size;
    bool show_progress = o->progress == 1 || (o->progress == -1 && isatty(fileno(err)) && total);

    rctx c = {.o = o, .rs = rs, .out = out, .err = err, .name = name};
    c.write_events = o->explain_user == NULL;
    c.ev = onr_calloc(1, sizeof(trk_event));
    eng_opts eo;
    eng_opts_default(&eo);
    eo.explain_user = o->explain_user;
    if (o->session_timeout_ms > 0)
        eo.session_timeout_ms = o->session_timeout_ms;
    c.e = eng_new(rs, &eo, sink, &c);
    c.max_ts = INT64_MIN;
    c.released_ts = INT64_MIN;
    jdoc *doc = jdoc_new(TRK_MAX_MESSAGE_BYTES);
    trk_event *ev = onr_calloc(1, sizeof(trk_event));

    char *buf = onr_malloc(READ_CHUNK);
    size_t have = 0, consumed = 0;
    bool eof = false, skipping = false;
    uint64_t lineno = 0;
    double t0 = seconds_now();
    char msg[512];
    for (;;) {
        if (!eof) {
            size_t n = fread(buf + have, 1, READ_CHUNK - have, in);
            have += n;
            if (n == 0) {
                if (ferror(in)) {
                    fprintf(err, "onramp replay: read error on %s: %s\n", name, strerror(errno));
                    rc = 1;
                    goto done;
                }
                eof = true;
            }
        }
        size_t off = 0;
        for (;;) {
            char *nl = memchr(buf + off, '\n', have - off);
            size_t end;
            if (nl)
                end = (size_t)(nl - buf);
            else if (eof && off < have)
                end = have;
            else
                break; /* the rest of this line has not been read yet */
            char *line = buf + off;
            size_t len = end - off;
            off = nl ? end + 1 : have;
            consumed += len + (nl ? 1 : 0);
            if (skipping) { /* the tail of an over-long line */
                skipping = false;
                continue;
            }
            lineno++;
            if (len && line[len - 1] == '\r')
                len--;
            if (len == 0)
                continue;
            c.lines++;
            if (trk_decode(doc, line, len, &rs->schema, -1, ev, msg, sizeof(msg))) {
                if (line_error(&c, lineno, msg)) {
                    rc = 1;
                    goto done;
                }
                continue;
            }
            offer(&c, ev);
            if (show_progress && (c.lines & 0xffff) == 0)
                progress(&c, consumed, total, false);
        }
        if (off == 0 && have == READ_CHUNK) {
            /* a line longer than the whole buffer: report it once, drop it as it streams */
            if (!skipping) {
                lineno++;
                c.lines++;
                snprintf(msg, sizeof(msg),
                         "line is longer than %d bytes; a message may have "
                         "at most %d bytes",
                         READ_CHUNK, TRK_MAX_MESSAGE_BYTES);
                if (line_error(&c, lineno, msg)) {
                    rc = 1;
                    goto done;
                }
                skipping = true;
            }
            consumed += have;
            have = 0;
            continue;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (c.io_error) {
            fprintf(err, "onramp replay: write error: %s\n", strerror(c.io_error));
            rc = 1;
            goto done;
        }
        if (eof && have == 0)
            break;
    }
    while (c.hp.n)
        release(&c);
    run_ready(&c);
    if (o->drain)
        eng_drain(c.e);
    flush_out(&c);
    if (show_progress)
        progress(&c, consumed, total, true);
    double secs = seconds_now() - t0;

    if (o->explain_user) {
        onr_buf x = {0};
        if (eng_explain(c.e, o->explain_user, &x) == 0) /* watched from the start */
            fwrite(x.data, 1, x.len, out);
        onr_buf_free(&x);
    }
    if (fflush(out) != 0 || c.io_error) {
        fprintf(err, "onramp replay: write error: %s\n", strerror(c.io_error ? c.io_error : errno));
        rc = 1;
    }
    eng_stats st;
    eng_get_stats(c.e, &st);
    if (c.bad)
        fprintf(err, "onramp replay: %llu bad line%s skipped\n", (unsigned long long)c.bad,
                c.bad == 1 ? "" : "s");
    if (c.late)
        fprintf(err,
                "onramp replay: %llu event%s arrived later than --lateness allows and %s "
                "processed at once\n",
                (unsigned long long)c.late, c.late == 1 ? "" : "s", c.late == 1 ? "was" : "were");
    if (c.forced)
        fprintf(err, "onramp replay: the reorder buffer was full %llu time%s (--max-buffer)\n",
                (unsigned long long)c.forced, c.forced == 1 ? "" : "s");
    if (o->stats) {
        fprintf(err,
                "stats: %llu events in %.3f s (%.0f events/s), %llu users, %llu merges, "
                "%.0f bytes per user (profile %zu), %llu segment changes, %llu fires "
                "(%llu held out), %llu timers\n",
                (unsigned long long)st.events, secs, secs > 0 ? (double)st.events / secs : 0.0,
                (unsigned long long)st.users, (unsigned long long)st.merges,
                st.users ? (double)st.bytes / (double)st.users : 0.0, st.profile_bytes,
                (unsigned long long)st.segment_changes, (unsigned long long)st.fires,
                (unsigned long long)st.held_out, (unsigned long long)st.timers_fired);
    }
    if (o->summary) {
        uint64_t *sizes = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
        uint64_t *fires = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        uint64_t *held = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        eng_segment_sizes(c.e, sizes);
        eng_trigger_counts(c.e, fires, held);
        fprintf(err, "\n%llu users, %llu events\n\nsegment              members   share\n",
                (unsigned long long)st.users, (unsigned long long)st.events);
        for (int i = 0; i < rs->nsegments; i++)
            fprintf(err, "%-20s %7llu  %5.1f%%\n", rs->segments[i].name,
                    (unsigned long long)sizes[i],
                    st.users ? 100.0 * (double)sizes[i] / (double)st.users : 0.0);
        fprintf(err, "\ntrigger                fires  held out\n");
        for (int i = 0; i < rs->ntriggers; i++)
            fprintf(err, "%-20s %7llu  %8llu\n", rs->triggers[i].name, (unsigned long long)fires[i],
                    (unsigned long long)held[i]);
        onr_free(sizes);
        onr_free(fires);
        onr_free(held);
    }
done:
    if (c.nready) /* they left the buffer before the stop: as if run one by one */
        run_ready(&c);
    flush_out(&c); /* what was processed before a --strict stop is still written */
    fflush(out);
    onr_free(buf);
    onr_free(ev);
    jdoc_free(doc);
    eng_free(c.e);
    onr_free(c.ev);
    onr_free(c.hp.a);
    pool_free(&c.pl);
    onr_buf_free(&c.obuf);
    if (in != stdin)
        fclose(in);
    rule_free(rs);
    return rc;
}

/* ---- the command line */

int replay_parse_duration(const char *s, int64_t *out_ms)
{
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    int64_t total = 0;
    const char *p = s;
    if (!*p)
        return ONR_E_PARSE;
    while (*p) {
        if (*p < '0' || *p > '9')
            return ONR_E_PARSE;
        int64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p - '0');
            if (v > INT64_C(1000000000000))
                return ONR_E_PARSE;
            p++;
        }
        int64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = ONR_SECOND_MS;
            p++;
        } else if (*p == 'm') {
            unit = ONR_MINUTE_MS;
            p++;
        } else if (*p == 'h') {
            unit = ONR_HOUR_MS;
            p++;
        } else if (*p == 'd') {
            unit = ONR_DAY_MS;
            p++;
        } else {
            return ONR_E_PARSE;
        }
        total += v * unit;
    }
    *out_ms = total;
    return 0;
}

static const char replay_help[] =
    "usage: onramp replay --rules FILE [options] [EVENTS.jsonl | -]\n"
    "\n"
    "Runs Segment-format messages (one JSON object per line) through the rules in event-time\n"
    "order and writes one JSON object per line for each segment change and fire.\n"
    "\n"
    "options:\n"
    "  --rules FILE            the rules to run (required)\n"
    "  --lateness DUR          reorder window for out-of-order events (default 1m)\n"
    "  --max-buffer N          events held for reordering at most (default 1000000)\n"
    "  --session-timeout DUR   inactivity that ends a session (default 30m)\n"
    "  --no-drain              stop at the last event instead of firing pending timers\n"
    "  --explain USER          instead of events, print why each rule did or did not fire\n"
    "                          for USER\n"
    "  --strict                stop at the first bad line (exit 1)\n"
    "  --stats                 print events/s, users and bytes per user to stderr\n"
    "  --summary               print segment sizes and fire counts to stderr\n"
    "  --progress, --no-progress\n"
    "                          show a progress bar on stderr (default: when it is a terminal)\n";

int replay_main(int argc, char **argv)
{
    replay_opts o;
    replay_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool needs = strcmp(a, "--rules") == 0 || strcmp(a, "--lateness") == 0 ||
                     strcmp(a, "--explain") == 0 || strcmp(a, "--max-buffer") == 0 ||
                     strcmp(a, "--session-timeout") == 0;
        if (needs && i + 1 >= argc) {
            fprintf(stderr, "onramp replay: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(replay_help, stdout);
            return 0;
        } else if (strcmp(a, "--rules") == 0) {
            o.rules_path = argv[++i];
        } else if (strcmp(a, "--lateness") == 0 || strcmp(a, "--session-timeout") == 0) {
            int64_t ms;
            if (replay_parse_duration(argv[i + 1], &ms)) {
                fprintf(stderr,
                        "onramp replay: %s needs a duration like 90s, 2m or 1h, got "
                        "\"%s\"\n",
                        a, argv[i + 1]);
                return 2;
            }
            if (a[2] == 'l')
                o.lateness_ms = ms;
            else if (ms <= 0) {
                fprintf(stderr, "onramp replay: --session-timeout must be longer than 0\n");
                return 2;
            } else
                o.session_timeout_ms = ms;
            i++;
        } else if (strcmp(a, "--max-buffer") == 0) {
            char *end;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || v == 0 || argv[i][0] == '-') {
                fprintf(stderr,
                        "onramp replay: --max-buffer needs a positive number, got "
                        "\"%s\"\n",
                        argv[i]);
                return 2;
            }
            o.max_buffer = v;
        } else if (strcmp(a, "--explain") == 0) {
            o.explain_user = argv[++i];
        } else if (strcmp(a, "--no-drain") == 0) {
            o.drain = false;
        } else if (strcmp(a, "--strict") == 0) {
            o.strict = true;
        } else if (strcmp(a, "--stats") == 0) {
            o.stats = true;
        } else if (strcmp(a, "--summary") == 0) {
            o.summary = true;
        } else if (strcmp(a, "--progress") == 0) {
            o.progress = 1;
        } else if (strcmp(a, "--no-progress") == 0) {
            o.progress = 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "onramp replay: unknown option \"%s\" (see onramp replay --help)\n", a);
            return 2;
        } else if (!o.input_path) {
            o.input_path = a;
        } else {
            fprintf(stderr, "onramp replay: one input at a time (got \"%s\" and \"%s\")\n",
                    o.input_path, a);
            return 2;
        }
    }
    if (!o.rules_path) {
        fputs("onramp replay: --rules FILE is required (try --rules rules/onboarding.rules)\n",
              stderr);
        return 2;
    }
    return replay_run(&o, stdout, stderr);
}
