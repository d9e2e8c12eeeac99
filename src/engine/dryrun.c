/*
 * dryrun.c - what a set of rules would have done over the history the live engine's log
 * holds (POST /api/replay): a fresh engine of its own, never the live one, runs every
 * retained record of every partition in receive order, as the shards do, and reports
 * segment sizes and changes, fire counts and, for one user, the explain report. Nothing is
 * written: no journal, no checkpoint, no output leaves it.
 */
#include "shard.h"

#include "base/json.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* One partition's next record, decoded. */
typedef struct dry_head {
    int p;
    void *reader;
    uint64_t next; /* the offset of the next record to read */
    uint64_t end;  /* the partition's end when the run began: later records are not read */
    jdoc *doc;
    trk_event ev;
    int64_t recv_ms;
    bool valid;
} dry_head;

typedef struct dry_run {
    const shard_source *src;
    const rule_set *rs;
    uint64_t *entered, *exited; /* by segment */
    uint64_t skipped;           /* records that did not decode */
    uint64_t gone;              /* records retention deleted before the run reached them */
} dry_run;

static void dry_output(void *ctx, const eng_out *o)
{
    dry_run *d = ctx;
    if (o->kind == EO_SEGMENT_ENTERED)
        d->entered[o->segment]++;
    else if (o->kind == EO_SEGMENT_EXITED)
        d->exited[o->segment]++;
}

/*
 * Opens h's partition at h->next, or, when retention has deleted that record meanwhile (the
 * live shards' checkpoints let it trim the oldest segments, which a replay reads first), at
 * the first record still stored, counting those in between as gone. 0 or a negative code.
 */
static int dry_open(dry_run *d, dry_head *h)
{
    const shard_source *src = d->src;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t start = src->start(src->ctx, h->p);
        if (start > h->next) {
            d->gone += ONR_MIN(start, h->end) - h->next;
            h->next = start;
        }
        if (h->next >= h->end)
            return 0; /* nothing left to read */
        int r = src->open(src->ctx, h->p, h->next, &h->reader);
        if (r != ONR_E_NOTFOUND) {
            if (r)
                h->reader = NULL;
            return r;
        }
        h->reader = NULL; /* deleted between the two calls: look again */
    }
    return ONR_E_NOTFOUND;
}

/* Reads and decodes the head's next record below its end; false when there is none. */
static bool dry_fill(dry_run *d, dry_head *h, int *rc)
{
    while (!h->valid && h->reader) {
        const void *rec;
        size_t len;
        uint64_t off;
        int r = d->src->next(h->reader, &rec, &len, &off);
        if (r == ONR_E_NOTFOUND) { /* retention deleted the next segment: go on after it */
            d->src->close(h->reader);
            h->reader = NULL;
            r = dry_open(d, h);
            if (r && !*rc)
                *rc = r;
            continue;
        }
        if (r == 1)
            h->next = off + 1;
        if (r != 1 || off >= h->end) {
            if (r < 0 && !*rc)
                *rc = r;
            d->src->close(h->reader);
            h->reader = NULL;
            break;
        }
        char err[256];
        if (shard__decode(h->doc, rec, len, d->src->padding, d->rs, &h->ev, &h->recv_ms, err,
                          sizeof(err)) != 0) {
            d->skipped++; /* as the shards skip it */
            continue;
        }
        h->valid = true;
    }
    return h->valid;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int shard_dry_run(shard_set *set, const rule_set *rs, const shard_dry_opts *o, onr_buf *out,
                  bool *cut, char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (cut)
        *cut = false;
    const shard_opts *so = shard_options(set);
    const shard_source *src = &so->src;
    int np = so->partitions, rc = 0;
    uint64_t max = o->max_records ? o->max_records : SHARD_DRY_RUN_RECORDS;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    dry_run d = {.src = src, .rs = rs};
    d.entered = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
    d.exited = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
    eng_opts eo;
    eng_opts_default(&eo);
    eo.session_timeout_ms = so->session_timeout_ms;
    eo.explain_user = o->explain_user;
    eng *e = eng_new(rs, &eo, dry_output, &d);
    dry_head *heads = onr_calloc((size_t)np, sizeof(dry_head));
    for (int p = 0; p < np && !rc; p++) {
        dry_head *h = &heads[p];
        h->p = p;
        h->end = src->end(src->ctx, p);
        h->next = src->start(src->ctx, p);
        h->doc = jdoc_new(so->max_record);
        rc = dry_open(&d, h);
    }

    /* every partition's records in receive order, ties by partition, as the shards run them */
    uint64_t ran = 0;
    int64_t last_recv = 0;
    bool complete = true;
    while (!rc) {
        dry_head *best = NULL;
        for (int p = 0; p < np; p++)
            if (dry_fill(&d, &heads[p], &rc) && (!best || heads[p].recv_ms < best->recv_ms))
                best = &heads[p];
        if (!best)
            break;
        if (ran == max || (o->cancel && atomic_load(o->cancel))) {
            complete = false;
            if (cut && ran < max)
                *cut = true;
            break;
        }
        shard__run(e, &best->ev, best->recv_ms, so->lateness_ms);
        last_recv = ONR_MAX(last_recv, best->recv_ms);
        best->valid = false;
        ran++;
    }
    if (rc && errlen && !err[0])
        snprintf(err, errlen, "reading the log failed: %s",
                 rc < 0 && rc > -4096   ? strerror(-rc)
                 : rc == ONR_E_NOTFOUND ? "retention kept deleting what it was to read"
                                        : "an offset outside the log");
    if (!rc) {
        /* the timers the live engine would have run by now */
        int64_t until = (complete && o->now_ms ? o->now_ms : last_recv) - so->lateness_ms;
        if (until > eng_clock(e))
            eng_advance(e, until);
        eng_stats st;
        eng_get_stats(e, &st);
        uint64_t *sizes = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
        uint64_t *fires = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        uint64_t *held = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        eng_segment_sizes(e, sizes);
        eng_trigger_counts(e, fires, held);
        onr_buf_printf(out,
                       "{\"records\":%llu,\"complete\":%s,\"skipped\":%llu,\"gone\":%llu,"
                       "\"users\":%llu,\"segments\":[",
                       (unsigned long long)ran, complete ? "true" : "false",
                       (unsigned long long)d.skipped, (unsigned long long)d.gone,
                       (unsigned long long)st.users);
        for (int i = 0; i < rs->nsegments; i++) {
            onr_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
            jw_strz(out, rs->segments[i].name);
            onr_buf_printf(out, ",\"members\":%llu,\"entered\":%llu,\"exited\":%llu}",
                           (unsigned long long)sizes[i], (unsigned long long)d.entered[i],
                           (unsigned long long)d.exited[i]);
        }
        onr_buf_puts(out, "],\"triggers\":[");
        for (int i = 0; i < rs->ntriggers; i++) {
            onr_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
            jw_strz(out, rs->triggers[i].name);
            onr_buf_printf(out, ",\"fires\":%llu,\"held_out\":%llu}", (unsigned long long)fires[i],
                           (unsigned long long)held[i]);
        }
        onr_buf_putc(out, ']');
        if (o->explain_user) {
            onr_buf report = {0};
            eng_explain(e, o->explain_user, &report);
            onr_buf_puts(out, ",\"report\":");
            jw_str(out, report.data ? report.data : "", report.len);
            onr_buf_free(&report);
        }
        onr_buf_printf(out, ",\"seconds\":%.3f}", seconds_since(&t0));
        onr_free(sizes);
        onr_free(fires);
        onr_free(held);
    }
    for (int p = 0; p < np; p++) {
        if (heads[p].reader)
            src->close(heads[p].reader);
        jdoc_free(heads[p].doc);
    }
    onr_free(heads);
    eng_free(e);
    onr_free(d.entered);
    onr_free(d.exited);
    return rc;
}
