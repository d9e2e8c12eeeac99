/*
 * test_shard.c - unit tests for the live engine (src/engine/shard.c) over an in-memory
 * source whose appends, fsyncs and watermark the tests move by hand: records run in receive
 * order and only below the watermark, the clock follows the watermark when idle, a restart
 * with or without checkpoints records the same fires once, reloads keep users, queries,
 * backpressure, and checkpoints that wait for the log to be durable.
 */
#include "base/json.h"
#include "engine/shard.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 2026-01-01T00:00:00Z */
#define T0 INT64_C(1767225600000)
#define SEC ONR_SECOND_MS
#define LATE (1 * SEC)

#define MAXP 8
#define MAXREC 4096
#define MAXTHREADS 16

TestSuite(shard);

static const char *RULES = "trigger clicked {\n"
                           "    on \"Clicked\"\n"
                           "    limit cooldown 10s\n"
                           "}\n"
                           "trigger idle_5s {\n"
                           "    on idle 5s\n"
                           "}\n"
                           "segment clickers {\n"
                           "    enter when count(\"Clicked\") >= 2\n"
                           "}\n";

/* ---- an in-memory source: partitions of records, an end the test moves, a watermark */

typedef struct mpart {
    char *recs[MAXREC];
    size_t lens[MAXREC];
    _Atomic uint64_t end;
    _Atomic uint64_t retained; /* the last offset passed to retain */
    _Atomic uint64_t start;    /* the first offset still stored, as after a retention trim */
} mpart;

typedef struct msrc {
    int np;
    mpart parts[MAXP];
    _Atomic int64_t wm;
    _Atomic int64_t synced; /* -1: synced follows end; else every partition's synced offset */
    int msgs;
    const char *id; /* the log's id (shard_source.id) */
    /* retention while a reader runs: at the trim_after-th read of partition trim_p, its start
     * moves to trim_to (0: never) */
    int trim_p, trim_after, trim_reads;
    uint64_t trim_to;
    /* watermark calls per calling thread: one per shard loop iteration */
    pthread_mutex_t mu;
    pthread_t tids[MAXTHREADS];
    uint64_t calls[MAXTHREADS];
    int ntids;
} msrc;

typedef struct mreader {
    msrc *s;
    int p;
    uint64_t next;
} mreader;

static int m_open(void *ctx, int p, uint64_t from, void **reader)
{
    msrc *s = ctx;
    cr_assert(p >= 0 && p < s->np);
    if (from > atomic_load(&s->parts[p].end))
        return ONR_E_INVALID;
    if (from < atomic_load(&s->parts[p].start))
        return ONR_E_NOTFOUND;
    mreader *r = calloc(1, sizeof(*r));
    r->s = s;
    r->p = p;
    r->next = from;
    *reader = r;
    return 0;
}

static int m_next(void *reader, const void **rec, size_t *len, uint64_t *offset)
{
    mreader *r = reader;
    mpart *mp = &r->s->parts[r->p];
    if (r->next >= atomic_load(&mp->end))
        return 0;
    if (r->s->trim_to && r->p == r->s->trim_p && ++r->s->trim_reads == r->s->trim_after)
        atomic_store(&mp->start, r->s->trim_to);
    if (r->next < atomic_load(&mp->start))
        return ONR_E_NOTFOUND; /* retention deleted it */
    *rec = mp->recs[r->next];
    *len = mp->lens[r->next];
    *offset = r->next++;
    return 1;
}

static void m_close(void *reader)
{
    free(reader);
}

static uint64_t m_start(void *ctx, int p)
{
    return atomic_load(&((msrc *)ctx)->parts[p].start);
}

static uint64_t m_end(void *ctx, int p)
{
    return atomic_load(&((msrc *)ctx)->parts[p].end);
}

static uint64_t m_synced(void *ctx, int p)
{
    msrc *s = ctx;
    int64_t v = atomic_load(&s->synced);
    uint64_t end = atomic_load(&s->parts[p].end);
    return v < 0 || (uint64_t)v > end ? end : (uint64_t)v;
}

static int64_t m_watermark(void *ctx)
{
    msrc *s = ctx;
    pthread_t me = pthread_self();
    pthread_mutex_lock(&s->mu);
    int i = 0;
    while (i < s->ntids && !pthread_equal(s->tids[i], me))
        i++;
    if (i == s->ntids && i < MAXTHREADS)
        s->tids[s->ntids++] = me;
    if (i < MAXTHREADS)
        s->calls[i]++;
    pthread_mutex_unlock(&s->mu);
    return atomic_load(&s->wm); /* read after counting: see sync_shards */
}

static void m_retain(void *ctx, int p, uint64_t offset)
{
    atomic_store(&((msrc *)ctx)->parts[p].retained, offset);
}

static msrc *msrc_new(int np)
{
    msrc *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->np = np;
    atomic_store(&s->wm, -1);
    atomic_store(&s->synced, -1);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void msrc_free(msrc *s)
{
    for (int p = 0; p < s->np; p++)
        for (uint64_t i = 0; i < atomic_load(&s->parts[p].end); i++)
            free(s->parts[p].recs[i]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Appends a track message to partition p: stored first, then made readable. */
static void append(msrc *s, int p, const char *event, const char *user, int64_t ts_ms,
                   int64_t recv_ms)
{
    char ts[32], recv[32], buf[512];
    onr_time_format(ts_ms, ts);
    onr_time_format(recv_ms, recv);
    int n = snprintf(buf, sizeof(buf),
                     "{\"type\":\"track\",\"event\":\"%s\",\"userId\":\"%s\",\"messageId\":"
                     "\"m-%d\",\"timestamp\":\"%s\",\"receivedAt\":\"%s\"}",
                     event, user, s->msgs++, ts, recv);
    cr_assert(n > 0 && (size_t)n < sizeof(buf));
    mpart *mp = &s->parts[p];
    uint64_t e = atomic_load(&mp->end);
    cr_assert_lt(e, MAXREC);
    mp->recs[e] = strdup(buf);
    mp->lens[e] = (size_t)n;
    atomic_store(&mp->end, e + 1);
}

static void set_wm(msrc *s, int64_t wm)
{
    atomic_store(&s->wm, wm);
}

/* ---- shards over it */

typedef struct logs {
    pthread_mutex_t mu;
    onr_buf text;
} logs;

static void log_cb(void *ctx, const char *level, const char *msg)
{
    logs *l = ctx;
    pthread_mutex_lock(&l->mu);
    onr_buf_printf(&l->text, "%s: %s\n", level, msg);
    pthread_mutex_unlock(&l->mu);
}

static bool logged(logs *l, const char *what)
{
    pthread_mutex_lock(&l->mu);
    bool found = strstr(onr_buf_cstr(&l->text), what) != NULL;
    pthread_mutex_unlock(&l->mu);
    return found;
}

static rule_set *compile(const char *src)
{
    rule_set *rs = NULL;
    onr_buf err = {0};
    int n = rule_compile("t.rules", src, strlen(src), &rs, &err);
    cr_assert_eq(n, 0, "%s", onr_buf_cstr(&err));
    onr_buf_free(&err);
    return rs;
}

static shard_opts opts(msrc *s, const char *dir, int shards, logs *l)
{
    shard_opts o = {
        .shards = shards,
        .partitions = s->np,
        .dir = dir,
        .checkpoint_ms = 3600 * SEC,
        .lateness_ms = LATE,
        .logf = l ? log_cb : NULL,
        .log_ctx = l,
        .src = {.open = m_open,
                .next = m_next,
                .close = m_close,
                .start = m_start,
                .end = m_end,
                .synced = m_synced,
                .watermark = m_watermark,
                .retain = m_retain,
                .ctx = s,
                .id = s->id},
    };
    return o;
}

static shard_set *start(msrc *s, const shard_opts *o, const char *rules)
{
    pthread_mutex_lock(&s->mu);
    s->ntids = 0; /* the threads of earlier sets are gone */
    pthread_mutex_unlock(&s->mu);
    shard_set *set = NULL;
    char err[512] = "";
    int rc = shard_start(o, compile(rules), &set, err, sizeof(err));
    cr_assert_eq(rc, 0, "shard_start: %s", err);
    return set;
}

static void nap(void)
{
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
}

#define WAIT_TRIES 1000 /* x 5 ms: a hang guard, not a speed requirement */

/*
 * Returns once every one of the n shard threads has finished a loop iteration that read
 * the watermark as it is now: each counts a call before reading it, so the second call
 * counted after this starts follows a whole iteration (records below that watermark run,
 * then the clock follows it).
 */
static void sync_shards(msrc *s, int n)
{
    uint64_t want[MAXTHREADS];
    for (int tries = 0;; tries++) {
        pthread_mutex_lock(&s->mu);
        int have = s->ntids;
        pthread_mutex_unlock(&s->mu);
        if (have >= n)
            break;
        cr_assert_lt(tries, WAIT_TRIES, "only %d of %d shard threads ever ran", have, n);
        nap();
    }
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++)
        want[i] = s->calls[i] + 2;
    pthread_mutex_unlock(&s->mu);
    for (int tries = 0;; tries++) {
        bool all = true;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n; i++)
            all = all && s->calls[i] >= want[i];
        pthread_mutex_unlock(&s->mu);
        if (all)
            return;
        cr_assert_lt(tries, WAIT_TRIES, "the shards stopped looping");
        nap();
    }
}

/* Records not yet run in partition p (onramp_engine_lag_records), or the sum when p < 0. */
static uint64_t lag(shard_set *set, int p)
{
    onr_buf m = {0};
    shard_metrics(set, &m);
    uint64_t sum = 0;
    const char *key = "onramp_engine_lag_records{partition=\"";
    int lines = 0;
    for (const char *at = strstr(onr_buf_cstr(&m), key); at; at = strstr(at + 1, key)) {
        int part;
        unsigned long long v;
        cr_assert_eq(sscanf(at + strlen(key), "%d\"} %llu", &part, &v), 2);
        if (p < 0 || part == p)
            sum += v;
        lines++;
    }
    cr_assert_gt(lines, 0, "no lag lines in the metrics");
    onr_buf_free(&m);
    return sum;
}

static uint64_t metric(shard_set *set, const char *name)
{
    onr_buf m = {0};
    shard_metrics(set, &m);
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = strstr(onr_buf_cstr(&m), key);
    cr_assert_not_null(at, "no %s in the metrics", name);
    unsigned long long v = strtoull(at + strlen(key), NULL, 10);
    onr_buf_free(&m);
    return v;
}

/* Waits until every record readable has run, then until the clock followed the watermark. */
static void settle(msrc *s, shard_set *set, int nshards)
{
    for (int tries = 0; lag(set, -1) > 0; tries++) {
        cr_assert_lt(tries, WAIT_TRIES, "the shards did not catch up with the log");
        nap();
    }
    sync_shards(s, nshards);
}

/* ---- the fire journal */

typedef struct fire {
    char id[17];
    int64_t at_ms;
    char trigger[64];
    char user[64];
} fire;

typedef struct fires {
    fire *v;
    int n;
} fires;

static void copy_str(char *dst, size_t cap, jval v)
{
    size_t n = 0;
    const char *p = jval_str(v, &n);
    cr_assert_not_null(p);
    cr_assert_lt(n, cap);
    memcpy(dst, p, n);
    dst[n] = 0;
}

static fires read_journal(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/engine/fires.jsonl", dir);
    fires fs = {0};
    FILE *f = fopen(path, "r");
    if (!f)
        return fs;
    jdoc *doc = jdoc_new(64 * 1024);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int room = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        jval root;
        char err[128];
        cr_assert_eq(jdoc_parse(doc, line, (size_t)len, &root, err, sizeof(err)), 0,
                     "journal line %d: %s", fs.n + 1, err);
        if (fs.n == room) {
            room = room ? room * 2 : 256;
            fs.v = realloc(fs.v, sizeof(fire) * (size_t)room);
            cr_assert_not_null(fs.v);
        }
        fire *x = &fs.v[fs.n++];
        copy_str(x->id, sizeof(x->id), jval_getz(root, "id"));
        copy_str(x->trigger, sizeof(x->trigger), jval_getz(root, "trigger"));
        copy_str(x->user, sizeof(x->user), jval_getz(root, "user"));
        jval at = jval_getz(root, "at_ms");
        cr_assert_eq(jval_type(at), J_NUMBER);
        x->at_ms = (int64_t)jval_number(at);
    }
    free(line);
    jdoc_free(doc);
    fclose(f);
    return fs;
}

static int count_fires(const fires *fs, const char *trigger, const char *user)
{
    int n = 0;
    for (int i = 0; i < fs->n; i++)
        if (strcmp(fs->v[i].trigger, trigger) == 0 && (!user || strcmp(fs->v[i].user, user) == 0))
            n++;
    return n;
}

static int fire_cmp(const void *a, const void *b)
{
    const fire *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (!c)
        c = strcmp(x->trigger, y->trigger);
    if (!c)
        c = strcmp(x->user, y->user);
    if (!c)
        c = x->at_ms < y->at_ms ? -1 : x->at_ms > y->at_ms;
    return c;
}

/* Sorts fs and asserts that no id appears twice. */
static void sort_unique(fires *fs, const char *what)
{
    qsort(fs->v, (size_t)fs->n, sizeof(fire), fire_cmp);
    for (int i = 1; i < fs->n; i++)
        cr_assert_str_neq(fs->v[i - 1].id, fs->v[i].id, "%s: fire %s recorded twice", what,
                          fs->v[i].id);
}

static void assert_same_fires(fires *want, fires *got, const char *what)
{
    sort_unique(want, "the uninterrupted run");
    sort_unique(got, what);
    cr_assert_eq(got->n, want->n, "%s: %d fires, the uninterrupted run had %d", what, got->n,
                 want->n);
    for (int i = 0; i < want->n; i++)
        cr_assert_eq(fire_cmp(&want->v[i], &got->v[i]), 0,
                     "%s: fire %s %s %s at %lld differs from %s %s %s at %lld", what, got->v[i].id,
                     got->v[i].trigger, got->v[i].user, (long long)got->v[i].at_ms, want->v[i].id,
                     want->v[i].trigger, want->v[i].user, (long long)want->v[i].at_ms);
}

/* ---- data directories */

static void make_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "/tmp/onramp-shard-XXXXXX");
    cr_assert_not_null(mkdtemp(buf));
}

static void remove_tree(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/engine", dir);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.') {
                char f[900];
                snprintf(f, sizeof(f), "%s/%s", path, de->d_name);
                unlink(f);
            }
        closedir(d);
        rmdir(path);
    }
    rmdir(dir);
}

static bool ckpt_exists(const char *dir, int index, int of)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof(path), "%s/engine/shard-%d-of-%d.ckpt", dir, index, of);
    return stat(path, &st) == 0;
}

static void remove_ckpts(const char *dir, int of)
{
    for (int i = 0; i < of; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/engine/shard-%d-of-%d.ckpt", dir, i, of);
        cr_assert_eq(unlink(path), 0, "no checkpoint %s to remove", path);
    }
}

/* The names of the user's recent events, newest first, joined by spaces. */
static void recent_names(shard_set *set, const char *user, char *out, size_t cap)
{
    onr_buf b = {0};
    cr_assert_eq(shard_user(set, user, strlen(user), &b), 0, "no user %s", user);
    jdoc *doc = jdoc_new(1 << 20);
    jval root, ev;
    char err[128];
    cr_assert_eq(jdoc_parse(doc, b.data, b.len, &root, err, sizeof(err)), 0, "%s: %s", err,
                 onr_buf_cstr(&b));
    jiter it = jval_iter(jval_getz(root, "recent_events"));
    out[0] = 0;
    while (jiter_next(&it, &ev, NULL, NULL)) {
        char name[64];
        copy_str(name, sizeof(name), jval_getz(ev, "name"));
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? " " : "", name);
    }
    jdoc_free(doc);
    onr_buf_free(&b);
}

static bool user_known(shard_set *set, const char *user)
{
    onr_buf b = {0};
    int rc = shard_user(set, user, strlen(user), &b);
    cr_assert(rc == 0 || rc == ONR_E_NOTFOUND, "shard_user: %d", rc);
    onr_buf_free(&b);
    return rc == 0;
}

/* ---- order and time */

Test(shard, records_run_in_receive_order_across_partitions_and_only_below_the_watermark)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(3);
    /* one user's events spread over three partitions, received in the order A..E; D and E
     * arrive in the same millisecond, so the lower partition (E's) goes first */
    append(s, 2, "A", "u1", T0 + 1000, T0 + 1000);
    append(s, 0, "B", "u1", T0 + 2000, T0 + 2000);
    append(s, 1, "Clicked", "u1", T0 + 3000, T0 + 3000);
    append(s, 2, "D", "u1", T0 + 4000, T0 + 4000);
    append(s, 1, "E", "u1", T0 + 4000, T0 + 4000);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES); /* the watermark cannot tell yet (-1) */
    sync_shards(s, 1);
    cr_assert_not(user_known(set, "u1"), "a record ran before there was a watermark");
    cr_assert_not(shard_ready(set), "ready before running the log it started with");
    cr_assert_eq(lag(set, -1), 5);

    set_wm(s, T0 + 1000); /* not below A's receive time */
    sync_shards(s, 1);
    cr_assert_not(user_known(set, "u1"), "a record ran at, not below, the watermark");

    set_wm(s, T0 + 2500);
    sync_shards(s, 1);
    char names[256];
    recent_names(set, "u1", names, sizeof(names));
    cr_assert_str_eq(names, "B A");
    cr_assert_eq(lag(set, 0), 0);
    cr_assert_eq(lag(set, 1), 2);
    cr_assert_eq(lag(set, 2), 1);
    fires fs = read_journal(dir);
    cr_assert_eq(fs.n, 0, "Clicked (received after the watermark) already fired");
    free(fs.v);

    set_wm(s, -1); /* cannot tell: the last watermark holds */
    sync_shards(s, 1);
    cr_assert_eq(lag(set, -1), 3);

    set_wm(s, T0 + 4001);
    settle(s, set, 1);
    recent_names(set, "u1", names, sizeof(names));
    cr_assert_str_eq(names, "D E Clicked B A");
    cr_assert(shard_ready(set));
    fs = read_journal(dir);
    cr_assert_eq(count_fires(&fs, "clicked", "u1"), 1);
    cr_assert_eq(fs.v[0].at_ms, T0 + 3000);
    free(fs.v);

    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

Test(shard, the_clock_follows_the_watermark_minus_lateness_when_idle)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    set_wm(s, T0);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES);
    append(s, 1, "Clicked", "u1", T0 + 1000, T0 + 1000);
    shard_notify(set, 1);
    set_wm(s, T0 + 1001);
    settle(s, set, 1);
    fires fs = read_journal(dir);
    cr_assert_eq(fs.n, 1);
    cr_assert_str_eq(fs.v[0].trigger, "clicked");
    free(fs.v);

    /* u1 is idle 5 s at T0 + 6000; the clock reaches it when the watermark is a lateness
     * past it, with no record coming in */
    set_wm(s, T0 + 6000 + LATE - 1);
    sync_shards(s, 1);
    fs = read_journal(dir);
    cr_assert_eq(count_fires(&fs, "idle_5s", NULL), 0, "the idle trigger fired too early");
    free(fs.v);

    set_wm(s, T0 + 6000 + LATE);
    sync_shards(s, 1);
    fs = read_journal(dir);
    cr_assert_eq(count_fires(&fs, "idle_5s", "u1"), 1);
    cr_assert_eq(fs.v[1].at_ms, T0 + 6000);
    free(fs.v);

    set_wm(s, T0 + 600 * SEC); /* once per quiet spell */
    sync_shards(s, 1);
    fs = read_journal(dir);
    cr_assert_eq(fs.n, 2);
    free(fs.v);

    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

Test(shard, an_event_runs_no_earlier_than_its_receive_time_minus_lateness_nor_after_it)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000);
    /* sent late: the clock has moved to its receive time minus the lateness by then */
    append(s, 1, "Clicked", "u2", T0 + 500, T0 + 9000);
    /* stamped by a clock running ahead: it happens when it was received */
    append(s, 0, "Clicked", "u3", T0 + 25000, T0 + 20000);
    set_wm(s, T0 + 20001);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 1);
    fires fs = read_journal(dir);
    static const struct {
        const char *trigger, *user;
        int64_t at_ms;
    } want[] = {
        {"clicked", "u1", T0 + 1000},
        {"idle_5s", "u1", T0 + 6000},
        {"clicked", "u2", T0 + 8000},
        {"clicked", "u3", T0 + 20000},
    };
    int k = 0;
    for (int i = 0; i < fs.n; i++) {
        if (strcmp(fs.v[i].user, "u2") == 0 && strcmp(fs.v[i].trigger, "idle_5s") == 0)
            continue; /* when the late event's user counts as idle is the engine's matter */
        cr_assert_lt(k, 4, "an unexpected fire: %s %s", fs.v[i].trigger, fs.v[i].user);
        cr_assert_str_eq(fs.v[i].trigger, want[k].trigger, "fire %d", k);
        cr_assert_str_eq(fs.v[i].user, want[k].user, "fire %d", k);
        cr_assert_eq(fs.v[i].at_ms, want[k].at_ms, "fire %d: at T0 + %lld ms", k,
                     (long long)(fs.v[i].at_ms - T0));
        k++;
    }
    cr_assert_eq(k, 4);
    free(fs.v);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

/* ---- restarts */

#define NEVENTS 2000
#define NUSERS 12
#define NPARTS 4

typedef struct stream {
    int p[NEVENTS];
    char user[NEVENTS][16];
    const char *event[NEVENTS];
    int64_t ts[NEVENTS], recv[NEVENTS];
} stream;

/* A stream of events over NUSERS users, received in strictly increasing order, each user's
 * on one partition; event times a little before receive times, some far before. */
static stream *make_stream(void)
{
    stream *st = calloc(1, sizeof(*st));
    uint64_t x = 0x9e3779b97f4a7c15u;
    int64_t t = T0;
    for (int i = 0; i < NEVENTS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int u = (int)(x % NUSERS);
        t += 1 + (int64_t)((x >> 8) % 3000);
        snprintf(st->user[i], sizeof(st->user[i]), "u%02d", u);
        st->p[i] = (u * 7) % NPARTS;
        st->event[i] = (x >> 20) % 3 ? "Clicked" : "Viewed";
        st->recv[i] = t;
        st->ts[i] = t - (int64_t)((x >> 32) % 500);
        if ((x >> 40) % 20 == 0) /* now and then one sent late, behind the clock */
            st->ts[i] = t - (int64_t)((x >> 44) % 60000);
    }
    return st;
}

static void feed(msrc *s, const stream *st, int from, int to)
{
    for (int i = from; i < to; i++)
        append(s, st->p[i], st->event[i], st->user[i], st->ts[i], st->recv[i]);
}

/* Runs events [from, to) on a fresh or restarted set of nshards (0: as the checkpoints) over
 * dir, with the watermark at wm once they are in, and stops it. Returns the suppressed-fire
 * count. */
static uint64_t run_shards(msrc *s, const stream *st, const char *dir, int from, int to, int64_t wm,
                           int nshards, logs *l)
{
    shard_opts o = opts(s, dir, nshards, l);
    shard_set *set = start(s, &o, RULES);
    int n = shard_count(set);
    feed(s, st, from, to);
    for (int p = 0; p < NPARTS; p++)
        shard_notify(set, p);
    set_wm(s, wm);
    settle(s, set, n);
    cr_assert(shard_ready(set));
    uint64_t suppressed = metric(set, "onramp_engine_fires_suppressed_total");
    cr_assert_eq(shard_stop(set), 0);
    return suppressed;
}

static uint64_t run_part(msrc *s, const stream *st, const char *dir, int from, int to, int64_t wm)
{
    return run_shards(s, st, dir, from, to, wm, 2, NULL);
}

Test(shard, a_restart_records_the_same_fires_once_with_or_without_checkpoints)
{
    stream *st = make_stream();
    int half = NEVENTS / 2;
    int64_t wm_half = st->recv[half]; /* nothing unread was received before it */
    int64_t wm_end = st->recv[NEVENTS - 1] + 60 * SEC;

    /* A: all in one run */
    char da[64];
    make_dir(da, sizeof(da));
    msrc *sa = msrc_new(NPARTS);
    set_wm(sa, T0);
    run_part(sa, st, da, 0, NEVENTS, wm_end);
    fires a = read_journal(da);
    cr_assert_gt(count_fires(&a, "clicked", NULL), 50);
    cr_assert_gt(count_fires(&a, "idle_5s", NULL), 50);

    /* B: stopped halfway, restarted from its checkpoints */
    char db[64];
    make_dir(db, sizeof(db));
    msrc *sb = msrc_new(NPARTS);
    set_wm(sb, T0);
    run_part(sb, st, db, 0, half, wm_half);
    cr_assert(ckpt_exists(db, 0, 2) && ckpt_exists(db, 1, 2), "no checkpoint at the stop");
    for (int p = 0; p < NPARTS; p++)
        cr_assert_eq(atomic_load(&sb->parts[p].retained), atomic_load(&sb->parts[p].end),
                     "partition %d: retention not offered the checkpoint's offset", p);
    cr_assert_eq(run_part(sb, st, db, half, NEVENTS, wm_end), 0,
                 "a restart from a checkpoint ran records again");
    fires b = read_journal(db);
    assert_same_fires(&a, &b, "restart from checkpoints");

    /* C: stopped halfway, checkpoints lost: the whole log runs again */
    char dc[64];
    make_dir(dc, sizeof(dc));
    msrc *sc = msrc_new(NPARTS);
    set_wm(sc, T0);
    run_part(sc, st, dc, 0, half, wm_half);
    fires c1 = read_journal(dc);
    remove_ckpts(dc, 2);
    uint64_t suppressed = run_part(sc, st, dc, half, NEVENTS, wm_end);
    cr_assert_eq(suppressed, (uint64_t)c1.n, "the fires of the first run were not recognised");
    fires c = read_journal(dc);
    assert_same_fires(&a, &c, "restart without checkpoints");

    free(a.v);
    free(b.v);
    free(c1.v);
    free(c.v);
    msrc_free(sa);
    msrc_free(sb);
    msrc_free(sc);
    remove_tree(da);
    remove_tree(db);
    remove_tree(dc);
    free(st);
}

/* Starts a set of nshards over dir that must be refused; returns its message. */
static void refused(msrc *s, const char *dir, int nshards, char *err, size_t cap)
{
    shard_opts o = opts(s, dir, nshards, NULL);
    o.default_shards = 3;
    rule_set *rs = compile(RULES);
    shard_set *set = NULL;
    err[0] = 0;
    cr_assert_eq(shard_start(&o, rs, &set, err, cap), ONR_E_INVALID, "not refused: %s", err);
    cr_assert_null(set);
    rule_free(rs); /* the caller keeps its rules on failure */
}

static void move_ckpts(const char *from, const char *to, int of)
{
    for (int i = 0; i < of; i++) {
        char a[600], b[600];
        snprintf(a, sizeof(a), "%s/engine/shard-%d-of-%d.ckpt", from, i, of);
        snprintf(b, sizeof(b), "%s/shard-%d-of-%d.ckpt", to, i, of);
        cr_assert_eq(rename(a, b), 0, "cannot move %s", a);
    }
}

Test(shard, a_torn_last_line_of_the_fire_journal_is_cut_before_new_fires_follow_it)
{
    stream *st = make_stream();
    int half = NEVENTS / 2;
    char d[64], path[600];
    make_dir(d, sizeof(d));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    run_part(s, st, d, 0, half, st->recv[half]);
    fires first = read_journal(d);
    int before = first.n;
    free(first.v);
    cr_assert_gt(before, 0);
    /* a crash in the middle of a line */
    snprintf(path, sizeof(path), "%s/engine/fires.jsonl", d);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f);
    fputs("{\"id\":\"00", f);
    cr_assert_eq(fclose(f), 0);

    logs l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    run_shards(s, st, d, half, NEVENTS, st->recv[NEVENTS - 1] + 60 * SEC, 2, &l);
    cr_assert(logged(&l, "fires.jsonl: cut the 9 bytes of a torn last line"), "%s",
              onr_buf_cstr(&l.text));
    fires fs = read_journal(d); /* every line parses: none was appended to the torn one */
    cr_assert_gt(fs.n, before);
    onr_buf_free(&l.text);
    free(fs.v);
    msrc_free(s);
    remove_tree(d);
    free(st);
}

/* write(2) for the fire journal that writes only half of its third line (a full disk). */
static ssize_t short_third_write(void *ctx, int fd, const void *buf, size_t len)
{
    int *calls = ctx;
    if (++*calls == 3)
        return write(fd, buf, len / 2);
    return write(fd, buf, len);
}

Test(shard, a_fire_journal_line_written_short_is_cut_off_before_the_next)
{
    stream *st = make_stream();
    char d[64];
    make_dir(d, sizeof(d));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    logs l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int calls = 0;
    shard_opts o = opts(s, d, 1, &l);
    o.journal_write = short_third_write;
    o.journal_write_ctx = &calls;
    shard_set *set = start(s, &o, RULES);
    feed(s, st, 0, NEVENTS);
    for (int p = 0; p < NPARTS; p++)
        shard_notify(set, p);
    set_wm(s, st->recv[NEVENTS - 1] + 60 * SEC);
    settle(s, set, 1);
    cr_assert_eq(shard_stop(set), 0);
    cr_assert_gt(calls, 3);
    cr_assert(logged(&l, "writing the fire journal failed: short write"), "%s",
              onr_buf_cstr(&l.text));
    fires fs = read_journal(d); /* every line parses: the next did not join the short one */
    cr_assert_eq(fs.n, calls - 1, "%d lines for %d fires, one written short", fs.n, calls);
    onr_buf_free(&l.text);
    free(fs.v);
    msrc_free(s);
    remove_tree(d);
    free(st);
}

/* Checkpoints hold the users of their shard's partitions, so another shard count cannot load
 * them: such a start is refused and writes nothing; without a count the newest checkpoints
 * choose it; moved away, the checkpoints no longer stand in the way. */
Test(shard, another_shard_count_is_refused_and_no_count_follows_the_newest_checkpoints)
{
    stream *st = make_stream();
    int half = NEVENTS / 2;
    int64_t wm_end = st->recv[NEVENTS - 1] + 60 * SEC;
    char d[64], aside[64], err[1024];
    make_dir(d, sizeof(d));
    make_dir(aside, sizeof(aside));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    run_part(s, st, d, 0, half, st->recv[half]);

    refused(s, d, 1, err, sizeof(err));
    cr_assert(strstr(err, "written by 2 shards, which 1 shards cannot load") &&
                  strstr(err, "Start with --shards 2") && !strstr(err, "is gone"),
              "%s", err);
    cr_assert(!ckpt_exists(d, 0, 1), "a refused start wrote a checkpoint");

    logs l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    cr_assert_eq(run_shards(s, st, d, half, NEVENTS, wm_end, 0, &l), 0,
                 "a restart from the checkpoints ran records again");
    cr_assert(logged(&l, "shard 1: checkpoint loaded"), "%s", onr_buf_cstr(&l.text));
    cr_assert(!ckpt_exists(d, 0, 3), "the default was taken over the checkpoints");

    /* moved away, then back once one shard has checkpointed: the newest (one shard's) lead */
    move_ckpts(d, aside, 2);
    run_shards(s, st, d, NEVENTS, NEVENTS, wm_end, 1, NULL);
    cr_assert(ckpt_exists(d, 0, 1));
    for (int i = 0; i < 2; i++) {
        char a[600], b[600];
        snprintf(a, sizeof(a), "%s/shard-%d-of-2.ckpt", aside, i);
        snprintf(b, sizeof(b), "%s/engine/shard-%d-of-2.ckpt", d, i);
        struct timespec past[2] = {{T0 / 1000, 0}, {T0 / 1000, 0}};
        cr_assert_eq(utimensat(AT_FDCWD, a, past, 0), 0);
        cr_assert_eq(rename(a, b), 0);
    }
    logs l2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    shard_opts o = opts(s, d, 0, &l2);
    o.default_shards = 3;
    shard_set *set = start(s, &o, RULES);
    cr_assert_eq(shard_count(set), 1);
    cr_assert(logged(&l2, "also holds checkpoints written by 2 shards"), "%s",
              onr_buf_cstr(&l2.text));
    cr_assert(logged(&l2, "shard 0: checkpoint loaded"), "%s", onr_buf_cstr(&l2.text));
    cr_assert_eq(shard_stop(set), 0);

    onr_buf_free(&l.text);
    onr_buf_free(&l2.text);
    msrc_free(s);
    remove_tree(d);
    rmdir(aside);
    free(st);
}

Test(shard, a_refused_shard_count_names_the_log_retention_trimmed)
{
    stream *st = make_stream();
    char d[64], err[1024];
    make_dir(d, sizeof(d));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    run_part(s, st, d, 0, NEVENTS / 2, st->recv[NEVENTS / 2]);
    atomic_store(&s->parts[1].start, 5);
    refused(s, d, 4, err, sizeof(err));
    cr_assert(strstr(err, "written by 2 shards, which 4 shards cannot load") &&
                  strstr(err, "the log before offset 5 of partition 1 is gone"),
              "%s", err);
    cr_assert(!ckpt_exists(d, 0, 4), "a refused start wrote a checkpoint");
    msrc_free(s);
    remove_tree(d);
    free(st);
}

Test(shard, a_checkpoint_written_over_another_log_or_by_an_older_onramp_is_refused)
{
    stream *st = make_stream();
    int half = NEVENTS / 2;
    char d[64], err[1024];
    make_dir(d, sizeof(d));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    s->id = "0123456789abcdef0123456789abcdef";
    run_part(s, st, d, 0, half, st->recv[half]);

    /* the log made again in its place: same partitions, offsets that mean other records */
    s->id = "fedcba9876543210fedcba9876543210";
    refused(s, d, 2, err, sizeof(err));
    cr_assert(strstr(err, "shard-0-of-2.ckpt was written over another event log (id "
                          "0123456789abcdef0123456789abcdef; this log's id is "
                          "fedcba9876543210fedcba9876543210)") &&
                  strstr(err, "/engine away to rebuild every profile from this log"),
              "%s", err);

    /* a checkpoint of the format before ids */
    char path[600];
    snprintf(path, sizeof(path), "%s/engine/shard-1-of-2.ckpt", d);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite("ONRSHRD1", 1, 8, f), 8);
    cr_assert_eq(fclose(f), 0);
    s->id = "0123456789abcdef0123456789abcdef";
    refused(s, d, 2, err, sizeof(err));
    cr_assert(strstr(err, "shard-1-of-2.ckpt was written by an older onramp") &&
                  strstr(err, "/engine away to rebuild every profile from the log"),
              "%s", err);

    /* shard 0's checkpoint, over its own log, still loads */
    snprintf(path, sizeof(path), "%s/engine/shard-1-of-2.ckpt", d);
    cr_assert_eq(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/engine/shard-0-of-2.ckpt", d);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "shard 0's checkpoint was changed or removed by a refusal");
    logs l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    run_shards(s, st, d, half, NEVENTS, st->recv[NEVENTS - 1] + 60 * SEC, 2, &l);
    cr_assert(logged(&l, "shard 0: checkpoint loaded"), "%s", onr_buf_cstr(&l.text));
    cr_assert(logged(&l, "shard 1: no checkpoint"), "%s", onr_buf_cstr(&l.text));

    onr_buf_free(&l.text);
    msrc_free(s);
    remove_tree(d);
    free(st);
}

/* ---- reloads and queries */

static bool has_segment(shard_set *set, const char *name, int members)
{
    onr_buf b = {0};
    shard_segments_json(set, &b);
    char want[128];
    snprintf(want, sizeof(want), "{\"name\":\"%s\",\"members\":%d}", name, members);
    bool found = strstr(onr_buf_cstr(&b), want) != NULL;
    onr_buf_free(&b);
    return found;
}

Test(shard, a_reload_adding_a_segment_keeps_users)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000);
    append(s, 0, "Clicked", "u1", T0 + 2000, T0 + 2000);
    append(s, 1, "Viewed", "u2", T0 + 2500, T0 + 2500);
    set_wm(s, T0 + 3000);
    shard_opts o = opts(s, dir, 2, NULL);
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 2);
    cr_assert(has_segment(set, "clickers", 1));

    char src[1024];
    snprintf(src, sizeof(src), "%ssegment viewers {\n    enter when count(\"Viewed\") >= 1\n}\n",
             RULES);
    char err[256] = "";
    cr_assert_eq(shard_reload(set, compile(src), err, sizeof(err)), 0, "%s", err);
    cr_assert(user_known(set, "u1"));
    cr_assert(user_known(set, "u2"));
    cr_assert(has_segment(set, "clickers", 1), "the reload lost a membership");
    cr_assert(has_segment(set, "viewers", 0));
    onr_buf path = {0}, text = {0};
    shard_rules_source(set, &path, &text);
    cr_assert_str_eq(onr_buf_cstr(&text), src);
    onr_buf_free(&path);
    onr_buf_free(&text);

    append(s, 1, "Viewed", "u2", T0 + 4000, T0 + 4000);
    shard_notify(set, 1);
    set_wm(s, T0 + 5000);
    settle(s, set, 2);
    cr_assert(has_segment(set, "viewers", 1), "the new segment does not run");
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

/* Offers record `off` of partition p as a track event `name` by u1 at ts_ms, under gen. */
static void offer(shard_set *set, int p, uint64_t off, uint64_t gen, const char *name,
                  int64_t ts_ms)
{
    trk_schema sc;
    onr_buf names = {0};
    shard_handoff_schema(set, &sc, &names);
    trk_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = TRK_TRACK;
    ev.ts_ms = ts_ms;
    ev.user_id = (trk_str){"u1", 2};
    ev.name = (trk_str){name, (uint32_t)strlen(name)};
    char packed[SHARD_HANDOFF_BYTES];
    size_t n = trk_packed_size(&ev, &sc);
    cr_assert_leq(n, sizeof(packed));
    trk_pack(packed, &ev, &sc);
    shard_offer(set, p, off, gen, ts_ms, packed, n);
    onr_buf_free(&names);
}

/* The records below are all "Viewed"; an offer says "Clicked", so the events run show which
 * of them were taken from the offer (ingest offers what the record holds: fuzz_store). */
Test(shard, an_offer_is_taken_for_its_own_record_under_the_schema_it_was_decoded_with)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES);
    uint64_t gen = shard_handoff_gen(set);
    cr_assert_neq(gen, 0);
    uint64_t slots = shard_handoff_slots(set);
    cr_assert_eq(slots, 32768 / 2);
    offer(set, 0, 0, gen, "Clicked", T0 + 1000);         /* taken */
    offer(set, 0, 1, gen + 1, "Clicked", T0 + 2000);     /* another schema */
    offer(set, 1, 2, gen, "Clicked", T0 + 3000);         /* another partition's offset */
    offer(set, 0, 2 + slots, gen, "Clicked", T0 + 3000); /* its slot, but a later offset */
    for (int i = 0; i < 3; i++)
        append(s, 0, "Viewed", "u1", T0 + 1000 * (i + 1), T0 + 1000 * (i + 1));
    shard_notify(set, 0);
    set_wm(s, T0 + 4000);
    settle(s, set, 1);
    char names[256];
    recent_names(set, "u1", names, sizeof(names));
    cr_assert_str_eq(names, "Viewed Viewed Clicked");
    cr_assert_eq(metric(set, "onramp_engine_records_decoded_total{from=\"taken\"}"), 1);
    cr_assert_eq(metric(set, "onramp_engine_records_decoded_total{from=\"parsed\"}"), 2);

    /* a reload moves the shards to a new schema: offers made under the old one are not
     * taken, those under the new one are */
    char err[256] = "";
    cr_assert_eq(shard_reload(set, compile(RULES), err, sizeof(err)), 0, "%s", err);
    uint64_t next = shard_handoff_gen(set);
    cr_assert_neq(next, gen);
    offer(set, 0, 3, gen, "Clicked", T0 + 4000);
    offer(set, 0, 4, next, "Clicked", T0 + 5000);
    append(s, 0, "Viewed", "u1", T0 + 4000, T0 + 4000);
    append(s, 0, "Viewed", "u1", T0 + 5000, T0 + 5000);
    shard_notify(set, 0);
    set_wm(s, T0 + 6000);
    settle(s, set, 1);
    recent_names(set, "u1", names, sizeof(names));
    cr_assert_str_eq(names, "Clicked Viewed Viewed Viewed Clicked");
    cr_assert_eq(metric(set, "onramp_engine_records_decoded_total{from=\"taken\"}"), 2);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

/* A shard prefetches the users of the offers a few records ahead of the one it takes: what
 * it runs is still each record's own offer or, without one, the record. The records are all
 * "Viewed" and the offers "Clicked", as in the test above. */
Test(shard, offers_in_a_row_are_taken_in_order)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(1);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES);
    uint64_t gen = shard_handoff_gen(set);
    /* 40 records with an offer each, but none for record 17 and record 23's under another
     * schema */
    for (int i = 0; i < 40; i++) {
        if (i != 17)
            offer(set, 0, (uint64_t)i, i == 23 ? gen + 1 : gen, "Clicked", T0 + 1000 * (i + 1));
        append(s, 0, "Viewed", "u1", T0 + 1000 * (i + 1), T0 + 1000 * (i + 1));
    }
    shard_notify(set, 0);
    set_wm(s, T0 + 1000 * 41);
    settle(s, set, 1);
    cr_assert_eq(metric(set, "onramp_engine_records_decoded_total{from=\"taken\"}"), 38);
    cr_assert_eq(metric(set, "onramp_engine_records_decoded_total{from=\"parsed\"}"), 2);
    char names[1024], want[1024] = "";
    recent_names(set, "u1", names, sizeof(names));
    for (int i = 39; i >= 0; i--) /* newest first */
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i < 39 ? " " : "",
                 i == 17 || i == 23 ? "Viewed" : "Clicked");
    cr_assert_str_eq(names, want);
    cr_assert_eq(shard_handoff_slots(set), 32768); /* one partition keeps them all */
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

Test(shard, user_and_explain_find_known_users_only)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(4);
    append(s, 3, "Clicked", "known-user", T0 + 1000, T0 + 1000);
    set_wm(s, T0 + 2000);
    shard_opts o = opts(s, dir, 2, NULL);
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 2);

    onr_buf b = {0};
    cr_assert_eq(shard_user(set, "nobody", 6, &b), ONR_E_NOTFOUND);
    cr_assert_eq(shard_explain(set, "nobody", 6, &b), ONR_E_NOTFOUND);
    onr_buf_clear(&b);

    cr_assert_eq(shard_user(set, "known-user", 10, &b), 0);
    jdoc *doc = jdoc_new(1 << 20);
    jval root;
    char err[128];
    cr_assert_eq(jdoc_parse(doc, b.data, b.len, &root, err, sizeof(err)), 0, "%s: %s", err,
                 onr_buf_cstr(&b));
    size_t n = 0;
    const char *user = jval_str(jval_getz(root, "user"), &n);
    cr_assert(user && n == 10 && memcmp(user, "known-user", 10) == 0, "%s", onr_buf_cstr(&b));
    cr_assert_eq(jval_type(jval_getz(root, "recent_events")), J_ARRAY);
    jiter it = jval_iter(jval_getz(root, "recent_fires"));
    jval f;
    cr_assert(jiter_next(&it, &f, NULL, NULL), "the user's fire is not listed");
    size_t tn = 0;
    const char *trig = jval_str(jval_getz(f, "trigger"), &tn);
    cr_assert(trig && tn == 7 && memcmp(trig, "clicked", 7) == 0);
    jdoc_free(doc);

    onr_buf_clear(&b);
    cr_assert_eq(shard_explain(set, "known-user", 10, &b), 0);
    cr_assert(strncmp(onr_buf_cstr(&b), "user known-user", 15) == 0, "%s", onr_buf_cstr(&b));
    cr_assert_not_null(strstr(onr_buf_cstr(&b), "clickers"), "%s", onr_buf_cstr(&b));
    onr_buf_free(&b);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

/* ---- backpressure */

Test(shard, admit_asks_senders_to_wait_while_a_partition_lags_beyond_max_lag)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    set_wm(s, T0); /* held back: nothing runs */
    shard_opts o = opts(s, dir, 1, NULL);
    o.max_lag = 3;
    shard_set *set = start(s, &o, RULES);
    for (int i = 0; i < 3; i++)
        append(s, 0, "Viewed", "u1", T0 + 1000 + i, T0 + 1000 + i);
    sync_shards(s, 1);
    cr_assert_eq(shard_admit(set, 0), 0, "3 records behind is within max_lag");
    append(s, 0, "Viewed", "u1", T0 + 1010, T0 + 1010);
    cr_assert_gt(shard_admit(set, 0), 0);
    cr_assert_eq(shard_admit(set, 1), 0, "another partition is not held back");

    set_wm(s, T0 + 2000);
    shard_notify(set, 0);
    settle(s, set, 1);
    cr_assert_eq(shard_admit(set, 0), 0);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

/* ---- checkpoints wait for the log to be durable */

Test(shard, a_checkpoint_waits_until_the_offsets_it_covers_are_synced)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    atomic_store(&s->synced, 0);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000);
    append(s, 1, "Viewed", "u2", T0 + 1500, T0 + 1500);
    set_wm(s, T0 + 2000);
    shard_opts o = opts(s, dir, 1, NULL);
    o.checkpoint_ms = 20;
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 1);
    struct timespec ts = {0, 60 * 1000000L}; /* a few checkpoint intervals */
    nanosleep(&ts, NULL);
    sync_shards(s, 1);
    cr_assert_not(ckpt_exists(dir, 0, 1), "checkpointed offsets the log has not synced");

    atomic_store(&s->synced, -1); /* the log's fsync */
    /* written (renamed into place), then offered to retention */
    for (int tries = 0; atomic_load(&s->parts[1].retained) != 1; tries++) {
        cr_assert_lt(tries, WAIT_TRIES, "no checkpoint once the log synced");
        nap();
    }
    cr_assert(ckpt_exists(dir, 0, 1));
    cr_assert_eq(atomic_load(&s->parts[0].retained), 1);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The shards' checkpoints take turns over the interval instead of coming at once (two
 * shards: at half an interval and at a whole one), and /metrics counts them. */
Test(shard, shards_checkpoint_in_turn_and_metrics_count_it)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000); /* shard 0's partition */
    append(s, 1, "Viewed", "u2", T0 + 1500, T0 + 1500);  /* shard 1's */
    set_wm(s, T0 + 2000);
    shard_opts o = opts(s, dir, 2, NULL);
    o.checkpoint_ms = 4 * SEC;
    int64_t t0 = mono_ms();
    shard_set *set = start(s, &o, RULES);
    int64_t seen[2] = {0, 0};
    for (int tries = 0; !seen[0] || !seen[1]; tries++) {
        cr_assert_lt(tries, 2 * WAIT_TRIES, "the checkpoints were not written");
        for (int i = 0; i < 2; i++)
            if (!seen[i] && ckpt_exists(dir, i, 2))
                seen[i] = mono_ms();
        nap();
    }
    /* 2 s apart when on time; the bounds leave a loaded machine a second either way */
    cr_assert_lt(seen[0] - t0, 3 * SEC, "shard 0 is due at half an interval (%lld ms)",
                 (long long)(seen[0] - t0));
    cr_assert_geq(seen[1] - seen[0], SEC, "the shards checkpointed %lld ms apart",
                  (long long)(seen[1] - seen[0]));

    onr_buf m = {0};
    shard_metrics(set, &m);
    const char *t = onr_buf_cstr(&m);
    for (int i = 0; i < 2; i++) {
        char want[96];
        snprintf(want, sizeof(want), "onramp_engine_checkpoints_total{shard=\"%d\"} 1\n", i);
        cr_assert(strstr(t, want), "no %s in:\n%s", want, t);
        snprintf(want, sizeof(want), "onramp_engine_checkpoint_bytes{shard=\"%d\"} ", i);
        const char *b = strstr(t, want);
        cr_assert(b && strtoull(b + strlen(want), NULL, 10) > 0, "%s", t);
        snprintf(want, sizeof(want), "onramp_engine_checkpoint_seconds{shard=\"%d\"} ", i);
        cr_assert(strstr(t, want), "%s", t);
    }
    onr_buf_free(&m);
    cr_assert_eq(shard_stop(set), 0);
    msrc_free(s);
    remove_tree(dir);
}

typedef struct late_sync {
    msrc *s;
    atomic_bool stopping;
} late_sync;

static void *sync_later(void *arg)
{
    late_sync *ls = arg;
    while (!atomic_load(&ls->stopping))
        nap();
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&ls->s->synced, -1);
    return NULL;
}

Test(shard, the_final_checkpoint_waits_for_the_log_to_sync)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    atomic_store(&s->synced, 0);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000);
    set_wm(s, T0 + 2000);
    shard_opts o = opts(s, dir, 1, NULL);
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 1);
    late_sync ls = {.s = s};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sync_later, &ls), 0);
    atomic_store(&ls.stopping, true);
    cr_assert_eq(shard_stop(set), 0);
    pthread_join(t, NULL);
    cr_assert(ckpt_exists(dir, 0, 1), "the stop did not wait for the log's fsync");
    msrc_free(s);
    remove_tree(dir);
}

Test(shard, a_stop_the_log_never_syncs_for_ends_without_a_checkpoint_and_loses_no_fire,
     .timeout = 60)
{
    char dir[64];
    make_dir(dir, sizeof(dir));
    msrc *s = msrc_new(2);
    atomic_store(&s->synced, 0);
    append(s, 0, "Clicked", "u1", T0 + 1000, T0 + 1000);
    set_wm(s, T0 + 2000);
    logs l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    shard_opts o = opts(s, dir, 1, &l);
    shard_set *set = start(s, &o, RULES);
    settle(s, set, 1);
    cr_assert_eq(shard_stop(set), 0, "a deferred checkpoint is not an error");
    cr_assert_not(ckpt_exists(dir, 0, 1), "checkpointed offsets the log has not synced");
    cr_assert(logged(&l, "without a final checkpoint"), "%s", onr_buf_cstr(&l.text));

    /* the next start runs the whole log again; the fire is in the journal already */
    atomic_store(&s->synced, -1);
    set = start(s, &o, RULES);
    settle(s, set, 1);
    cr_assert(user_known(set, "u1"));
    cr_assert_eq(metric(set, "onramp_engine_fires_suppressed_total"), 1);
    cr_assert_eq(shard_stop(set), 0);
    fires fs = read_journal(dir);
    cr_assert_eq(fs.n, 1);
    free(fs.v);
    onr_buf_free(&l.text);
    msrc_free(s);
    remove_tree(dir);
}

/* ---- dry runs (POST /api/replay) */

/* The number after "name":"NAME", then "key": in json, or -1. */
static long long json_count(const char *json, const char *name, const char *key)
{
    char want[128];
    snprintf(want, sizeof(want), "\"name\":\"%s\"", name);
    const char *at = strstr(json, want);
    if (!at)
        return -1;
    snprintf(want, sizeof(want), "\"%s\":", key);
    at = strstr(at, want);
    return at ? strtoll(at + strlen(want), NULL, 10) : -1;
}

Test(shard, a_dry_run_over_the_log_counts_what_the_live_shards_did_and_changes_nothing)
{
    stream *st = make_stream();
    char d[64];
    make_dir(d, sizeof(d));
    msrc *s = msrc_new(NPARTS);
    set_wm(s, T0);
    int64_t wm_end = st->recv[NEVENTS - 1] + 60 * SEC;
    /* a record that does not decode: the shards and the dry run skip it */
    mpart *mp = &s->parts[1];
    mp->recs[0] = strdup("{\"type\":\"track\"}");
    mp->lens[0] = strlen(mp->recs[0]);
    atomic_store(&mp->end, 1);
    shard_opts o = opts(s, d, 2, NULL);
    shard_set *set = start(s, &o, RULES);
    feed(s, st, 0, NEVENTS);
    for (int p = 0; p < NPARTS; p++)
        shard_notify(set, p);
    set_wm(s, wm_end);
    settle(s, set, 2);
    onr_buf live = {0}, seg = {0};
    shard_triggers_json(set, &live);
    shard_segments_json(set, &seg);
    fires before = read_journal(d);

    rule_set *rs = compile(RULES);
    onr_buf out = {0};
    char err[256] = "";
    shard_dry_opts dry = {.now_ms = wm_end, .explain_user = "u3"};
    bool cut = true;
    cr_assert_eq(shard_dry_run(set, rs, &dry, &out, &cut, err, sizeof(err)), 0, "%s", err);
    cr_assert(!cut);
    const char *j = onr_buf_cstr(&out);
    char want[64];
    snprintf(want, sizeof(want), "{\"records\":%d,\"complete\":true,\"skipped\":1,\"gone\":0,",
             NEVENTS);
    cr_assert(strstr(j, want) == j, "%s", j);
    for (int t = 0; t < rs->ntriggers; t++) {
        const char *name = rs->triggers[t].name;
        long long n = json_count(onr_buf_cstr(&live), name, "fires");
        cr_assert_gt(n, 0, "%s", onr_buf_cstr(&live));
        cr_assert_eq(json_count(j, name, "fires"), n, "%s: %s against %s", name, j,
                     onr_buf_cstr(&live));
    }
    cr_assert_eq(json_count(j, "clickers", "members"),
                 json_count(onr_buf_cstr(&seg), "clickers", "members"), "%s", j);
    cr_assert_gt(json_count(j, "clickers", "entered"), 0, "%s", j);
    cr_assert(strstr(j, "\"report\":\"user u3: "), "%s", j);

    /* bounded, and stopped on request */
    onr_buf_clear(&out);
    dry = (shard_dry_opts){.max_records = 10};
    cr_assert_eq(shard_dry_run(set, rs, &dry, &out, &cut, err, sizeof(err)), 0, "%s", err);
    cr_assert(!cut, "a bound is not a cancel");
    cr_assert(strstr(onr_buf_cstr(&out), "{\"records\":10,\"complete\":false,"), "%s",
              onr_buf_cstr(&out));
    onr_buf_clear(&out);
    atomic_bool stop = true;
    dry = (shard_dry_opts){.cancel = &stop};
    cr_assert_eq(shard_dry_run(set, rs, &dry, &out, &cut, err, sizeof(err)), 0, "%s", err);
    cr_assert(cut);
    cr_assert(strstr(onr_buf_cstr(&out), "{\"records\":0,\"complete\":false,"), "%s",
              onr_buf_cstr(&out));

    /* retention deletes records of partition 0 while the run reads it: it goes on after them */
    onr_buf_clear(&out);
    s->trim_p = 0;
    s->trim_after = 10;
    s->trim_to = 100;
    cr_assert_gt(atomic_load(&s->parts[0].end), 100);
    dry = (shard_dry_opts){0};
    cr_assert_eq(shard_dry_run(set, rs, &dry, &out, &cut, err, sizeof(err)), 0, "%s", err);
    snprintf(want, sizeof(want), "{\"records\":%d,\"complete\":true,\"skipped\":1,\"gone\":91,",
             NEVENTS - 91);
    cr_assert(strstr(onr_buf_cstr(&out), want), "%s", onr_buf_cstr(&out));

    /* the live engine saw none of it */
    onr_buf after = {0};
    shard_triggers_json(set, &after);
    cr_assert_str_eq(onr_buf_cstr(&after), onr_buf_cstr(&live));
    cr_assert_eq(shard_stop(set), 0);
    fires now = read_journal(d);
    cr_assert_eq(now.n, before.n, "the dry run recorded fires");
    free(now.v);
    free(before.v);

    rule_free(rs);
    onr_buf_free(&out);
    onr_buf_free(&after);
    onr_buf_free(&live);
    onr_buf_free(&seg);
    msrc_free(s);
    remove_tree(d);
    free(st);
}
