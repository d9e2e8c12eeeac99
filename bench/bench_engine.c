/*
 * bench_engine.c - the engine alone: events are decoded and packed in memory first, then
 * timed through eng_process on one core. Prints events/s, bytes per user and allocator
 * calls per event (malloc/calloc/realloc are wrapped by the linker for this binary); then
 * times a checkpoint of the engine (eng_save to a temporary file, not fsynced) against
 * writing as many bytes with plain 1 MiB writes, as the ratio checkpoint_vs_write, and the
 * checkpoint's load into a new engine (eng_load: what a restart does first).
 *
 *   bench_engine --rules FILE [--extra N] [--no-prefetch] EVENTS.jsonl|-
 *
 * --extra N appends N generated rules (triggers and segments over a mix of event names)
 * to FILE, to show that rules are indexed by event rather than scanned.
 */
#include "base/json.h"
#include "engine/engine.h"
#include "rules/rules.h"
#include "track/track.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long long n_alloc;
void *__real_malloc(size_t n);
void *__real_calloc(size_t c, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t c, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n)
{
    n_alloc++;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t c, size_t n)
{
    n_alloc++;
    return __real_calloc(c, n);
}
void *__wrap_realloc(void *p, size_t n)
{
    n_alloc++;
    return __real_realloc(p, n);
}

/* CPU time of this thread: less sensitive to other work on a shared machine than the wall
 * clock, and the engine is single-threaded by design. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Event names the generated rules use: the simulated stream's own, and product events a
 * real rule set also tracks that are rare or absent in it. */
static const char *const names[] = {
    "Feature Used",
    "Onboarding Step Completed",
    "Button Clicked",
    "Search Performed",
    "API Error",
    "Signed Up",
    "Invite Sent",
    "Report Exported",
    "Project Created",
    "Billing Viewed",
    "Integration Connected",
    "Comment Added",
    "Workspace Renamed",
    "Plan Upgraded",
    "Plan Downgraded",
    "Teammate Removed",
    "Export Failed",
    "Template Applied",
    "Dashboard Shared",
    "Alert Configured",
    "Token Created",
    "Webhook Added",
    "File Uploaded",
    "Trial Extended",
};
static const char *const features[] = {"settings", "dashboard",    "projects", "invite", "billing",
                                       "reports",  "integrations", "search",   "editor", "export"};

/* Generated rules: 80 triggers and 20 segments over a spread of events and conditions. */
static void extra_rules(onr_buf *b, int n)
{
    for (int i = 0; i < n; i++) {
        const char *ev = names[i % ONR_ARRAY_LEN(names)];
        const char *f = features[i % ONR_ARRAY_LEN(features)];
        if (i % 5 == 4) {
            onr_buf_printf(b,
                           "segment gen_seg_%d {\n"
                           "    enter when count(\"%s\") >= %d and step >= %d\n"
                           "    exit when completed\n}\n",
                           i, ev, 2 + i % 4, i % 3);
        } else if (i % 10 == 1) {
            onr_buf_printf(b,
                           "trigger gen_%d {\n    on \"%s\" unless \"Feature Used\" within %dm\n"
                           "    when not completed\n    limit cooldown 1h\n}\n",
                           i, ev, 5 + i % 10);
        } else if (i % 10 == 3) {
            onr_buf_printf(b,
                           "trigger gen_%d {\n    on \"Feature Used\" where props.feature == "
                           "\"%s\"\n    when count(\"Feature Used\", within: 10m) >= %d and "
                           "path contains [\"%s\"]\n    limit once per user\n}\n",
                           i, f, 2 + i % 3, f);
        } else {
            onr_buf_printf(b,
                           "trigger gen_%d {\n    on \"%s\"\n    when count(\"%s\") >= %d and "
                           "session.events > %d and (since(\"Feature Used\") ?? age) < %dm\n"
                           "    limit once per 1d\n    holdout 5%%\n}\n",
                           i, ev, ev, 1 + i % 7, i % 4, 3 + i % 20);
        }
    }
}

static void sink(void *ctx, const eng_out *o)
{
    (*(unsigned long long *)ctx)++;
    (void)o;
}

int main(int argc, char **argv)
{
    const char *rules = NULL, *input = NULL;
    int extra = 0;
    bool prefetch = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc)
            rules = argv[++i];
        else if (strcmp(argv[i], "--extra") == 0 && i + 1 < argc)
            extra = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-prefetch") == 0)
            prefetch = false;
        else
            input = argv[i];
    }
    if (!rules || !input) {
        fprintf(stderr, "usage: bench_engine --rules FILE [--extra N] [--no-prefetch] "
                        "EVENTS.jsonl|-\n");
        return 2;
    }
    onr_buf src = {0}, errs = {0};
    FILE *f = fopen(rules, "rb");
    if (!f) {
        perror(rules);
        return 1;
    }
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        onr_buf_put(&src, chunk, n);
    fclose(f);
    extra_rules(&src, extra);
    rule_set *rs;
    if (rule_compile(rules, src.data, src.len, &rs, &errs)) {
        fwrite(errs.data, 1, errs.len, stderr);
        return 1;
    }

    /* decode everything first: the timed loop sees decoded events only */
    FILE *in = strcmp(input, "-") == 0 ? stdin : fopen(input, "rb");
    if (!in) {
        perror(input);
        return 1;
    }
    jdoc *doc = jdoc_new(TRK_MAX_MESSAGE_BYTES);
    trk_event *ev = calloc(1, sizeof(*ev));
    onr_buf packed = {0};
    size_t cap = 0, count = 0;
    size_t *offs = NULL;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    char err[256];
    while ((len = getline(&line, &linecap, in)) > 0) {
        if (trk_decode(doc, line, (size_t)len - (line[len - 1] == '\n'), &rs->schema, -1, ev, err,
                       sizeof(err)))
            continue;
        size_t sz = trk_packed_size(ev, &rs->schema);
        onr_buf_reserve(&packed, sz);
        trk_pack(packed.data + packed.len, ev, &rs->schema);
        if (count == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            offs = realloc(offs, cap * sizeof(size_t));
        }
        offs[count++] = packed.len;
        packed.len += sz;
    }
    if (in != stdin)
        fclose(in);
    free(line);

    unsigned long long outputs = 0;
    eng *e = eng_new(rs, NULL, sink, &outputs);
    unsigned long long a0 = n_alloc;
    double t0 = now_s();
    /* as a shard consuming its log would: a window of upcoming events is prefetched */
    trk_str uid, aid;
    for (size_t i = 0; i < count; i++) {
        if (prefetch && i + 12 < count) {
            trk_packed_ids(packed.data + offs[i + 12], &uid, &aid);
            eng_prefetch(e, uid, aid, 0);
        }
        if (prefetch && i + 4 < count) {
            trk_packed_ids(packed.data + offs[i + 4], &uid, &aid);
            eng_prefetch(e, uid, aid, 1);
        }
        trk_unpack(packed.data + offs[i], ev, &rs->schema);
        eng_process(e, ev);
    }
    eng_drain(e);
    double secs = now_s() - t0;
    unsigned long long allocs = n_alloc - a0;
    eng_stats st;
    eng_get_stats(e, &st);
    printf("rules=%s extra=%d events=%zu users=%llu seconds=%.3f events_per_s=%.0f "
           "bytes_per_user=%.0f profile_bytes=%zu outputs=%llu allocs=%llu "
           "allocs_per_event=%.6f\n",
           rules, extra, count, (unsigned long long)st.users, secs, (double)count / secs,
           st.users ? (double)st.bytes / (double)st.users : 0.0, st.profile_bytes, outputs, allocs,
           count ? (double)allocs / (double)count : 0.0);

    /* a checkpoint against a plain write of as many bytes, both into the page cache, and its
     * load into a new engine (what a restart does first); the best of three of each, as the
     * first writes of a run also pay for the cache's pages */
    double ckpt_s = 1e9, write_s = 1e9, load_s = 1e9;
    long bytes = 0;
    char *block = calloc(1, 1 << 20);
    for (int round = 0; round < 3; round++) {
        FILE *ck = tmpfile(), *plain = tmpfile();
        if (!ck || !plain || !block) {
            perror("tmpfile");
            return 1;
        }
        double c0 = now_s();
        if (eng_save(e, ck) != 0) {
            perror("eng_save");
            return 1;
        }
        double c1 = now_s();
        bytes = ftell(ck);
        for (long left = bytes; left > 0; left -= 1 << 20)
            if (fwrite(block, 1, left < (1 << 20) ? (size_t)left : (size_t)1 << 20, plain) == 0) {
                perror("fwrite");
                return 1;
            }
        fflush(plain);
        double c2 = now_s();
        rewind(ck);
        unsigned long long loaded_outputs = 0;
        eng *back = eng_new(rs, NULL, sink, &loaded_outputs);
        if (eng_load(back, ck, err, sizeof(err)) != 0) {
            fprintf(stderr, "eng_load: %s\n", err);
            return 1;
        }
        double c3 = now_s();
        eng_free(back);
        fclose(ck);
        fclose(plain);
        ckpt_s = c1 - c0 < ckpt_s ? c1 - c0 : ckpt_s;
        write_s = c2 - c1 < write_s ? c2 - c1 : write_s;
        load_s = c3 - c2 < load_s ? c3 - c2 : load_s;
    }
    free(block);
    printf("checkpoint_bytes=%ld checkpoint_seconds=%.4f write_seconds=%.4f "
           "checkpoint_vs_write=%.2f load_seconds=%.4f load_users_per_s=%.0f\n",
           bytes, ckpt_s, write_s, write_s > 0 ? ckpt_s / write_s : 0.0, load_s,
           load_s > 0 ? (double)st.users / load_s : 0.0);

    eng_free(e);
    rule_free(rs);
    jdoc_free(doc);
    free(ev);
    free(offs);
    onr_buf_free(&packed);
    onr_buf_free(&src);
    onr_buf_free(&errs);
    return 0;
}
