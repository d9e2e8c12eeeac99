/*
 * test_elog.c - unit tests for the event log (src/stream/elog.c): round trips across
 * partitions and segment rolls, reopening, torn and corrupt tails cut at open with everything
 * before them kept, limits, group commit under concurrency, each fsync policy's
 * acknowledgement, kill -9 mid-stream, injected write and fsync failures, retention and
 * readers tailing a growing log. Each test works in its own fresh directory.
 */
#include "stream/elog.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- fixtures */

static char *tmpdir;

static void make_dir(void)
{
    char tmpl[] = "/tmp/onramp-elog-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    tmpdir = strdup(tmpl);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    if (tmpdir)
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(tmpdir);
    tmpdir = NULL;
}

TestSuite(elog, .init = make_dir, .fini = remove_dir);

/* Messages from the log's callback, kept for assertions. */
typedef struct logcap {
    pthread_mutex_t mu;
    char text[8192];
    int count;
} logcap;

static void capture(void *ctx, const char *msg)
{
    logcap *c = ctx;
    pthread_mutex_lock(&c->mu);
    size_t n = strlen(c->text);
    snprintf(c->text + n, sizeof c->text - n, "%s\n", msg);
    c->count++;
    pthread_mutex_unlock(&c->mu);
}

static void logcap_init(logcap *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
}

static elog *open_log(const elog_opts *o)
{
    elog *l = NULL;
    char err[512];
    int rc = elog_open(tmpdir, o, &l, err, sizeof err);
    cr_assert_eq(rc, 0, "elog_open: %d %s", rc, err);
    return l;
}

/* Opens with the log's messages captured in cap. */
static elog *open_log_captured(elog_opts *o, logcap *cap)
{
    logcap_init(cap);
    o->log = capture;
    o->log_ctx = cap;
    return open_log(o);
}

/* A deterministic record of varying length for (stream, seq). */
static size_t make_rec(char *buf, size_t cap, int stream, uint64_t seq)
{
    int n = snprintf(buf, cap, "s%d-r%llu:", stream, (unsigned long long)seq);
    size_t fill = (size_t)((seq * 37 + (uint64_t)stream * 11) % 180);
    cr_assert_lt((size_t)n + fill, cap);
    for (size_t i = 0; i < fill; i++)
        buf[n + i] = (char)('a' + (seq + i) % 26);
    return (size_t)n + fill;
}

static uint64_t append_rec(elog *l, int part, int stream, uint64_t seq)
{
    char buf[256];
    size_t n = make_rec(buf, sizeof buf, stream, seq);
    uint64_t off = UINT64_MAX;
    int rc = elog_append(l, part, buf, n, &off);
    cr_assert_eq(rc, 0, "append p%d s%d #%llu: %d", part, stream, (unsigned long long)seq, rc);
    return off;
}

static void expect_rec(const void *rec, size_t len, int stream, uint64_t seq)
{
    char buf[256];
    size_t n = make_rec(buf, sizeof buf, stream, seq);
    cr_assert_eq(len, n, "s%d #%llu: length %zu, want %zu", stream, (unsigned long long)seq, len,
                 n);
    cr_assert(memcmp(rec, buf, n) == 0, "s%d #%llu: payload differs", stream,
              (unsigned long long)seq);
}

/* Reads a partition from `from` and checks records [from, want_end) are (stream, offset). */
static void expect_partition(elog *l, int part, int stream, uint64_t from, uint64_t want_end)
{
    elog_reader *r;
    const void *rec;
    size_t len;
    uint64_t off, want = from;
    int rc;

    cr_assert_eq(elog_reader_open(l, part, from, &r), 0);
    while ((rc = elog_reader_next(r, &rec, &len, &off)) == 1) {
        cr_assert_eq(off, want, "p%d: offset %llu, want %llu", part, (unsigned long long)off,
                     (unsigned long long)want);
        expect_rec(rec, len, stream, off);
        want++;
    }
    cr_assert_eq(rc, 0, "p%d: reader error %d at %llu", part, rc, (unsigned long long)want);
    cr_assert_eq(want, want_end, "p%d: read up to %llu, want %llu", part, (unsigned long long)want,
                 (unsigned long long)want_end);
    elog_reader_close(r);
}

static void seg_path(char *out, size_t cap, int part, uint64_t base)
{
    snprintf(out, cap, "%s/p%03d/%020llu.log", tmpdir, part, (unsigned long long)base);
}

static void journal_path(char *out, size_t cap, uint64_t seq)
{
    snprintf(out, cap, "%s/journal/%020llu.jnl", tmpdir, (unsigned long long)seq);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s: %s", path, strerror(errno));
    return sb.st_size;
}

static void append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, &c, 1, at), 1);
    c ^= 0x5a;
    cr_assert_eq(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

/* Byte position of record k in a segment that starts at offset 0 and holds records made by
 * make_rec(stream, 0..): each is framed by 8 bytes. */
static off_t rec_pos(int stream, uint64_t k)
{
    char buf[256];
    off_t pos = 0;
    for (uint64_t i = 0; i < k; i++)
        pos += 8 + (off_t)make_rec(buf, sizeof buf, stream, i);
    return pos;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fault injection */

typedef struct faults {
    atomic_int write_fail_in; /* the write after this many more fails; < 0: never */
    int write_err;
    bool write_partial;    /* the failing write lands half its bytes first */
    atomic_int fsync_fail; /* the next this many fsyncs fail with fsync_err */
    int fsync_err;
    atomic_int fsyncs; /* every fsync call, files and directories */
    bool journal_only; /* fsync_fail hits only the commit journal's files */
    int fsync_delay_us;
} faults;

static ssize_t fault_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    faults *f = ctx;
    if (atomic_load(&f->write_fail_in) >= 0 && atomic_fetch_sub(&f->write_fail_in, 1) == 0) {
        if (f->write_partial && len > 1)
            cr_assert_eq(pwrite(fd, buf, len / 2, (off_t)off), (ssize_t)(len / 2));
        return f->write_err;
    }
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : n;
}

static bool is_journal(int fd)
{
    char link[64], path[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return false;
    path[n] = 0;
    return strstr(path, ".jnl") != NULL;
}

static int fault_fsync(void *ctx, int fd)
{
    faults *f = ctx;
    atomic_fetch_add(&f->fsyncs, 1);
    if (f->fsync_delay_us)
        usleep((useconds_t)f->fsync_delay_us);
    if (atomic_load(&f->fsync_fail) > 0 && (!f->journal_only || is_journal(fd))) {
        atomic_fetch_sub(&f->fsync_fail, 1);
        return f->fsync_err;
    }
    return fsync(fd) ? -errno : 0;
}

static void faults_init(faults *f, elog_opts *o)
{
    memset(f, 0, sizeof *f);
    atomic_store(&f->write_fail_in, -1);
    o->io.pwrite = fault_pwrite;
    o->io.fsync = fault_fsync;
    o->io.ctx = f;
}

/* ---- basics */

Test(elog, parses_and_names_fsync_policies)
{
    elog_fsync f;
    cr_assert_eq(elog_fsync_parse("always", &f), 0);
    cr_assert_eq(f, ELOG_FSYNC_ALWAYS);
    cr_assert_eq(elog_fsync_parse("batch", &f), 0);
    cr_assert_eq(f, ELOG_FSYNC_BATCH);
    cr_assert_eq(elog_fsync_parse("everysec", &f), 0);
    cr_assert_eq(f, ELOG_FSYNC_EVERYSEC);
    cr_assert_eq(elog_fsync_parse("sometimes", &f), ONR_E_INVALID);
    cr_assert_str_eq(elog_fsync_name(ELOG_FSYNC_EVERYSEC), "everysec");
    cr_assert_eq(ELOG_FSYNC_BATCH, 0, "zeroed options must mean the default, batch");
}

Test(elog, round_trips_across_partitions_and_segment_rolls)
{
    elog_opts o = {
        .partitions = 4, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 4096, .max_record = 1024};
    elog *l = open_log(&o);
    struct elog_stats st;

    for (uint64_t i = 0; i < 300; i++)
        for (int p = 0; p < 4; p++)
            cr_assert_eq(append_rec(l, p, p, i), i);
    for (int p = 0; p < 4; p++) {
        cr_assert_eq(elog_end_offset(l, p), 300);
        expect_partition(l, p, p, 0, 300);
        expect_partition(l, p, p, 137, 300); /* seeking lands mid-segment */
        expect_partition(l, p, p, 300, 300);
    }
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_gt(st.segments, 4 * 5, "segments rolled: %llu", (unsigned long long)st.segments);
    cr_assert_eq(st.records, 1200);
    cr_assert_eq(st.bytes, st.appended_bytes);
    cr_assert_eq(elog_stats(l, 2, &st), 0);
    cr_assert_eq(st.records, 300);

    /* segments are named by their first offset and none exceeds the segment size */
    char path[512];
    seg_path(path, sizeof path, 3, 0);
    cr_assert_leq(file_size(path), 4096);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_append_takes_consecutive_offsets)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS};
    elog *l = open_log(&o);
    char bufs[5][256];
    elog_rec recs[5];
    uint64_t first = 99;

    cr_assert_eq(append_rec(l, 1, 1, 0), 0);
    for (int i = 0; i < 5; i++) {
        recs[i].data = bufs[i];
        recs[i].len = make_rec(bufs[i], sizeof bufs[i], 1, (uint64_t)i + 1);
    }
    cr_assert_eq(elog_append_batch(l, 1, recs, 5, &first), 0);
    cr_assert_eq(first, 1);
    cr_assert_eq(elog_end_offset(l, 1), 6);
    expect_partition(l, 1, 1, 0, 6);
    cr_assert_eq(elog_append_batch(l, 1, recs, 0, &first), ONR_E_INVALID);
    elog_close(l);
}

Test(elog, reopening_continues_offsets)
{
    elog_opts o = {
        .partitions = 3, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 2048, .max_record = 512};
    elog *l = open_log(&o);
    for (uint64_t i = 0; i < 50; i++)
        append_rec(l, 1, 1, i);
    cr_assert_eq(elog_close(l), 0);

    l = open_log(&o);
    cr_assert_eq(elog_end_offset(l, 1), 50);
    cr_assert_eq(elog_end_offset(l, 0), 0);
    cr_assert_eq(append_rec(l, 1, 1, 50), 50);
    cr_assert_eq(append_rec(l, 0, 0, 0), 0);
    expect_partition(l, 1, 1, 0, 51);
    expect_partition(l, 1, 1, 49, 51);
    elog_close(l);
}

/* A log reopened with smaller segments (a server restarted with lower limits) keeps every
 * record of an active segment past the new size: the segment is not cut to it, the next
 * append rolls a new one, and the log opens again after that. */
Test(elog, reopening_with_smaller_segments_keeps_the_active_segments_records)
{
    elog_opts big = {
        .partitions = 1, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 16384, .max_record = 512};
    elog *l = open_log(&big);
    uint64_t n = 80; /* about 9 KB: one segment */
    for (uint64_t i = 0; i < n; i++)
        append_rec(l, 0, 0, i);
    struct elog_stats st;
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.segments, 1);
    cr_assert_eq(elog_close(l), 0);

    elog_opts small = big;
    small.segment_bytes = 2048;
    l = open_log(&small);
    expect_partition(l, 0, 0, 0, n);
    cr_assert_eq(append_rec(l, 0, 0, n), n);
    n++;
    cr_assert_eq(elog_close(l), 0);
    l = open_log(&small);
    expect_partition(l, 0, 0, 0, n);
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.segments, 2, "the next append rolled a new segment");
    elog_close(l);
}

Test(elog, refuses_another_partition_count)
{
    elog_opts o = {.partitions = 3};
    elog *l = open_log(&o);
    elog_close(l);
    o.partitions = 4;
    char err[256] = "";
    cr_assert_eq(elog_open(tmpdir, &o, &l, err, sizeof err), ONR_E_INVALID);
    cr_assert(strstr(err, "3 partitions") != NULL, "%s", err);
}

/* Writes text to tmpdir/elog.meta. */
static void put_meta(const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/elog.meta", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
}

Test(elog, has_an_id_kept_across_opens_and_drawn_again_for_a_new_log)
{
    elog_opts o = {.partitions = 2};
    elog *l = open_log(&o);
    char first[ELOG_ID_CHARS + 1];
    snprintf(first, sizeof first, "%s", elog_id(l));
    cr_assert_eq(strlen(first), ELOG_ID_CHARS);
    cr_assert_eq(strspn(first, "0123456789abcdef"), ELOG_ID_CHARS, "%s", first);
    append_rec(l, 0, 0, 0);
    elog_close(l);

    l = open_log(&o);
    cr_assert_str_eq(elog_id(l), first);
    elog_close(l);

    /* the same directory emptied and a log created in it again */
    remove_dir();
    make_dir();
    l = open_log(&o);
    cr_assert_str_neq(elog_id(l), first);
    cr_assert_eq(strlen(elog_id(l)), ELOG_ID_CHARS);
    elog_close(l);
}

Test(elog, a_meta_without_an_id_gets_one_and_keeps_its_records)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS};
    elog *l = open_log(&o);
    append_rec(l, 1, 1, 0);
    elog_close(l);
    put_meta("onramp-elog 1\npartitions 2\n");

    l = open_log(&o);
    char id[ELOG_ID_CHARS + 1];
    snprintf(id, sizeof id, "%s", elog_id(l));
    cr_assert_eq(strspn(id, "0123456789abcdef"), ELOG_ID_CHARS, "%s", id);
    cr_assert_eq(elog_end_offset(l, 1), 1);
    elog_close(l);
    l = open_log(&o);
    cr_assert_str_eq(elog_id(l), id, "the id drawn for the old meta was written to it");
    elog_close(l);
}

Test(elog, refuses_a_meta_with_a_malformed_id)
{
    elog_opts o = {.partitions = 2};
    elog *l = open_log(&o);
    elog_close(l);
    const char *bad[] = {
        "onramp-elog 1\npartitions 2\nid 0123\n",
        "onramp-elog 1\npartitions 2\nid 0123456789ABCDEF0123456789ABCDEF\n",
        "onramp-elog 1\npartitions 2\nid 0123456789abcdef0123456789abcdef0\n",
        "onramp-elog 1\npartitions 2\nid \n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put_meta(bad[i]);
        char err[256] = "";
        cr_assert_eq(elog_open(tmpdir, &o, &l, err, sizeof err), ONR_E_PARSE, "%s", bad[i]);
        cr_assert(strstr(err, "elog.meta: not an onramp event log") != NULL, "%s", err);
    }
}

Test(elog, enforces_the_record_size_limit)
{
    elog_opts o = {
        .partitions = 2, .fsync = ELOG_FSYNC_ALWAYS, .max_record = 1000, .segment_bytes = 4096};
    elog *l = open_log(&o);
    static char big[5000];
    uint64_t off = 77;

    cr_assert_eq(elog_append(l, 0, big, 1000, &off), 0);
    cr_assert_eq(off, 0);
    cr_assert_eq(elog_append(l, 0, big, 1001, &off), ONR_E_LIMIT);
    elog_rec recs[5] = {{big, 1000}, {big, 1000}, {big, 1000}, {big, 1000}, {big, 1000}};
    cr_assert_eq(elog_append_batch(l, 0, recs, 5, &off), ONR_E_LIMIT, "a batch over a segment");
    cr_assert_eq(elog_append(l, 2, big, 10, &off), ONR_E_INVALID);
    cr_assert_eq(elog_append(l, -1, big, 10, &off), ONR_E_INVALID);
    cr_assert_eq(elog_end_offset(l, 0), 1, "rejected appends wrote nothing");
    cr_assert_eq(elog_append(l, 0, big, 0, &off), 0, "an empty record is a record");
    cr_assert_eq(off, 1);
    elog_close(l);

    elog_opts bad = {.max_record = 4096, .segment_bytes = 4096};
    char err[256];
    cr_assert_eq(elog_open(tmpdir, &bad, &l, err, sizeof err), ONR_E_INVALID);
}

/* ---- torn and corrupt tails */

static void fill_p0(int n)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS};
    elog *l = open_log(&o);
    for (int i = 0; i < n; i++)
        append_rec(l, 0, 0, (uint64_t)i);
    cr_assert_eq(elog_close(l), 0);
}

/* The active segment is sized ahead with zeros: what follows its records must read as zeros,
 * as far as any write could have reached. */
static void expect_zeros_from(const char *path, off_t from)
{
    unsigned char buf[4096];
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    ssize_t n = pread(fd, buf, sizeof buf, from);
    close(fd);
    cr_assert_geq(n, 0);
    for (ssize_t i = 0; i < n; i++)
        cr_assert_eq(buf[i], 0, "%s: byte %lld past the records is not zero", path,
                     (long long)(from + i));
}

/* Reopens after damage; checks the log line, the cut and the records kept. */
static void expect_recovered(uint64_t kept, off_t cut)
{
    logcap cap;
    logcap_init(&cap);
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS, .log = capture, .log_ctx = &cap};
    char path[512], want[128];
    struct elog_stats st;

    elog *l = open_log(&o);
    cr_assert_eq(cap.count, 1, "log: %s", cap.text);
    cr_assert(strstr(cap.text, "p000/00000000000000000000.log") != NULL, "%s", cap.text);
    snprintf(want, sizeof want, "truncated %lld bytes", (long long)cut);
    cr_assert(strstr(cap.text, want) != NULL, "want \"%s\" in: %s", want, cap.text);
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_eq(st.truncated_bytes, (uint64_t)cut);
    cr_assert_eq(elog_end_offset(l, 0), kept);
    expect_partition(l, 0, 0, 0, kept);
    seg_path(path, sizeof path, 0, 0);
    expect_zeros_from(path, rec_pos(0, kept));

    /* the log goes on from the cut */
    cr_assert_eq(append_rec(l, 0, 0, kept), kept);
    elog_close(l);
    cr_assert_eq(file_size(path), rec_pos(0, kept + 1), "close cuts the segment to its records");
    cap.count = 0;
    l = open_log(&o);
    cr_assert_eq(cap.count, 0, "a second open found more to cut: %s", cap.text);
    expect_partition(l, 0, 0, 0, kept + 1);
    elog_close(l);
}

Test(elog, garbage_after_the_last_record_is_truncated)
{
    char path[512];
    fill_p0(20);
    seg_path(path, sizeof path, 0, 0);
    append_bytes(path, "\x13garbage-bytes", 14);
    expect_recovered(20, 14);
}

Test(elog, a_half_written_record_is_truncated)
{
    char path[512];
    unsigned char half[48] = {100, 0, 0, 0, 1, 2, 3, 4}; /* says 100 bytes, has 40 */
    fill_p0(20);
    seg_path(path, sizeof path, 0, 0);
    append_bytes(path, half, sizeof half);
    expect_recovered(20, sizeof half);

    fill_p0(0);
    append_bytes(path, half, 5); /* a header cut short */
    expect_recovered(21, 5);
}

Test(elog, a_flipped_byte_in_the_last_record_cuts_that_record)
{
    char path[512];
    fill_p0(20);
    seg_path(path, sizeof path, 0, 0);
    flip_byte(path, rec_pos(0, 19) + 8 + 3);
    expect_recovered(19, rec_pos(0, 20) - rec_pos(0, 19));
}

Test(elog, corruption_mid_segment_truncates_from_there)
{
    char path[512];
    fill_p0(40);
    seg_path(path, sizeof path, 0, 0);
    flip_byte(path, rec_pos(0, 10) + 2); /* a length byte */
    expect_recovered(10, rec_pos(0, 40) - rec_pos(0, 10));
}

Test(elog, an_empty_trailing_segment_is_fine)
{
    char path[512];
    logcap cap;
    logcap_init(&cap);
    fill_p0(20);
    seg_path(path, sizeof path, 0, 20);
    close(open(path, O_CREAT | O_WRONLY, 0644));

    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS, .log = capture, .log_ctx = &cap};
    elog *l = open_log(&o);
    cr_assert_eq(cap.count, 0, "%s", cap.text);
    cr_assert_eq(elog_end_offset(l, 0), 20);
    cr_assert_eq(append_rec(l, 0, 0, 20), 20);
    cr_assert_gt(file_size(path), 0, "the append went to the empty segment");
    expect_partition(l, 0, 0, 0, 21);
    elog_close(l);
}

Test(elog, a_damaged_sealed_segment_refuses_to_open)
{
    elog_opts o = {
        .partitions = 1, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 1024, .max_record = 512};
    elog *l = open_log(&o);
    char path[512], err[512] = "";
    for (uint64_t i = 0; i < 60; i++)
        append_rec(l, 0, 0, i);
    elog_close(l);
    seg_path(path, sizeof path, 0, 0);
    cr_assert_eq(truncate(path, file_size(path) - 3), 0);
    cr_assert_eq(elog_open(tmpdir, &o, &l, err, sizeof err), ONR_E_INVALID);
    cr_assert(strstr(err, "00000000000000000000.log") && strstr(err, "sealed"), "%s", err);
}

/* ---- group commit and the fsync policies */

#define GC_THREADS 4
#define GC_PER_THREAD 2000

typedef struct writer_arg {
    elog *l;
    int part, t, n;
    uint64_t offs[GC_PER_THREAD];
} writer_arg;

static void *writer(void *arg)
{
    writer_arg *a = arg;
    for (int i = 0; i < a->n; i++)
        a->offs[i] = append_rec(a->l, a->part, a->t, (uint64_t)i);
    return NULL;
}

static void run_writers(elog *l, writer_arg *args, int threads, int n)
{
    pthread_t th[GC_THREADS];
    for (int t = 0; t < threads; t++) {
        args[t].l = l;
        args[t].part = 0;
        args[t].t = t;
        args[t].n = n;
        cr_assert_eq(pthread_create(&th[t], NULL, writer, &args[t]), 0);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
}

/* Every record once, each thread's in the order it appended them, at the offsets its appends
 * returned. */
static void expect_interleaved(elog *l, const writer_arg *args, int threads, int n)
{
    elog_reader *r;
    const void *rec;
    size_t len;
    uint64_t off, next[GC_THREADS] = {0};
    int rc, total = 0;

    cr_assert_eq(elog_reader_open(l, 0, 0, &r), 0);
    while ((rc = elog_reader_next(r, &rec, &len, &off)) == 1) {
        int t;
        unsigned long long seq;
        cr_assert_eq(sscanf(rec, "s%d-r%llu:", &t, &seq), 2);
        cr_assert(t >= 0 && t < threads);
        cr_assert_eq(seq, next[t], "thread %d: #%llu where #%llu was due", t, seq,
                     (unsigned long long)next[t]);
        cr_assert_eq(args[t].offs[seq], off);
        expect_rec(rec, len, t, seq);
        next[t]++;
        total++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(total, threads * n);
    elog_reader_close(r);
}

Test(elog, concurrent_always_appends_share_fsyncs_and_keep_every_record_once)
{
    elog_opts o = {.partitions = 2,
                   .fsync = ELOG_FSYNC_ALWAYS,
                   .segment_bytes = 256 << 10,
                   .max_record = 1024};
    elog *l = open_log(&o);
    static writer_arg args[GC_THREADS];
    struct elog_stats st;

    run_writers(l, args, GC_THREADS, GC_PER_THREAD);
    cr_assert_eq(elog_end_offset(l, 0), GC_THREADS * GC_PER_THREAD);
    cr_assert_eq(elog_synced_offset(l, 0), GC_THREADS * GC_PER_THREAD);
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_lt(st.fsyncs, GC_THREADS * GC_PER_THREAD, "%llu fsyncs: no group commit",
                 (unsigned long long)st.fsyncs);
    cr_assert_gt(st.segments, 1, "the test should cross a segment roll");
    uint64_t hist = 0;
    for (int b = 0; b < ELOG_FSYNC_BUCKETS; b++)
        hist += st.fsync_hist[b];
    cr_assert_eq(hist, st.fsyncs);
    cr_log_info("group commit: %llu fsyncs for %d appends", (unsigned long long)st.fsyncs,
                GC_THREADS * GC_PER_THREAD);
    expect_interleaved(l, args, GC_THREADS, GC_PER_THREAD);
    cr_assert_eq(elog_close(l), 0);
}

static int count_journal_segments(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/journal", tmpdir);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s: %s", path, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".jnl") != NULL;
    closedir(d);
    return n;
}

/* Counts the writes to partition segments (not the journal's) and the readable calls. */
typedef struct seg_writes {
    atomic_int writes;
    atomic_int readable[64]; /* by partition */
} seg_writes;

static ssize_t count_seg_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    seg_writes *w = ctx;
    if (!is_journal(fd))
        atomic_fetch_add(&w->writes, 1);
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : n;
}

static void count_readable(void *ctx, int partition)
{
    seg_writes *w = ctx;
    atomic_fetch_add(&w->readable[partition], 1);
}

/* Opens a log under o whose segment writes and readable calls w counts (from zero: not
 * elog.meta's). */
static elog *open_counted(elog_opts *o, seg_writes *w)
{
    o->io.pwrite = count_seg_pwrite;
    o->io.ctx = w;
    elog *l = open_log(o);
    atomic_store(&w->writes, 0);
    elog_set_readable(l, count_readable, w);
    return l;
}

/* Appends records 0..n-1 of its stream with elog_write_batch, none waited for but the last. */
static void *stager(void *arg)
{
    writer_arg *a = arg;
    uint64_t first, end = 0;
    for (int i = 0; i < a->n; i++) {
        char buf[256];
        size_t len = make_rec(buf, sizeof buf, a->t, (uint64_t)i);
        elog_rec rec = {buf, len};
        cr_assert_eq(elog_write_batch(a->l, a->part, &rec, 1, &first, &end), 0);
        a->offs[i] = first;
    }
    cr_assert_eq(elog_wait(a->l, a->part, end), 0);
    return NULL;
}

/* Tails partition 0 until it has read want records; err is set when offsets come out of
 * order or the reader fails. */
typedef struct order_tail {
    elog *l;
    uint64_t want, read;
    int err;
} order_tail;

static void *order_tailer(void *arg)
{
    order_tail *a = arg;
    elog_reader *r;
    const void *rec;
    size_t len;
    uint64_t off;
    if (elog_reader_open(a->l, 0, 0, &r) != 0) {
        a->err = 1;
        return NULL;
    }
    while (a->read < a->want) {
        int rc = elog_reader_next(r, &rec, &len, &off);
        if (rc == 0) {
            usleep(200);
            continue;
        }
        if (rc != 1 || off != a->read) {
            a->err = 2;
            break;
        }
        a->read++;
    }
    elog_reader_close(r);
    return NULL;
}

Test(elog, batch_appends_from_many_threads_keep_every_record_once_across_stage_bounds_and_rolls)
{
    /* half the threads wait for each append, half for their last only; 64 KiB segments, so
     * that rolls meet staged records */
    enum { PER_THREAD = GC_PER_THREAD / 2 };
    seg_writes w = {0};
    elog_opts o = {
        .partitions = 2, .fsync = ELOG_FSYNC_BATCH, .segment_bytes = 64 << 10, .max_record = 1024};
    elog *l = open_counted(&o, &w);
    static writer_arg args[GC_THREADS];
    pthread_t th[GC_THREADS], tail;
    order_tail ta = {.l = l, .want = GC_THREADS * PER_THREAD};
    cr_assert_eq(pthread_create(&tail, NULL, order_tailer, &ta), 0);
    for (int t = 0; t < GC_THREADS; t++) {
        args[t] = (writer_arg){.l = l, .part = 0, .t = t, .n = PER_THREAD};
        cr_assert_eq(pthread_create(&th[t], NULL, t % 2 ? writer : stager, &args[t]), 0);
    }
    for (int t = 0; t < GC_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_join(tail, NULL);
    cr_assert_eq(ta.err, 0, "the tailing reader failed or read out of order (%d)", ta.err);
    cr_assert_eq(ta.read, GC_THREADS * PER_THREAD);
    cr_assert_eq(elog_end_offset(l, 0), GC_THREADS * PER_THREAD);
    cr_assert_eq(elog_synced_offset(l, 0), GC_THREADS * PER_THREAD);
    struct elog_stats st;
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_gt(st.segments, 1, "the test should cross a segment roll");
    cr_assert_lt(atomic_load(&w.writes), GC_THREADS * PER_THREAD, "%d writes for %d appends",
                 atomic_load(&w.writes), GC_THREADS * PER_THREAD);
    cr_assert_gt(atomic_load(&w.readable[0]), 0);
    cr_assert_eq(atomic_load(&w.readable[1]), 0);
    expect_interleaved(l, args, GC_THREADS, PER_THREAD);
    cr_assert_eq(elog_close(l), 0);
    l = open_log(&o);
    expect_interleaved(l, args, GC_THREADS, PER_THREAD);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_acknowledges_after_a_journal_fsync_and_shares_it)
{
    faults f;
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH};
    faults_init(&f, &o);
    elog *l = open_log(&o);
    static writer_arg args[GC_THREADS];
    struct elog_stats st, part0;

    /* alone, every append waits for an fsync that covers it: the journal's */
    for (uint64_t i = 0; i < 10; i++) {
        int before = atomic_load(&f.fsyncs);
        append_rec(l, i % 2, 9, i / 2);
        cr_assert_gt(atomic_load(&f.fsyncs), before, "append #%llu returned before an fsync",
                     (unsigned long long)i);
        cr_assert_eq(elog_synced_offset(l, (int)(i % 2)), i / 2 + 1);
    }
    cr_assert_eq(elog_stats(l, 0, &part0), 0);
    cr_assert_lt(part0.fsyncs, 5, "a partition file was fsynced per append");
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_geq(st.fsyncs, 10, "the journal's fsyncs are counted");
    elog_close(l);
    cr_assert_eq(count_journal_segments(), 0, "a clean close leaves no journal");
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

    /* together, the appends of both partitions share the journal's fsyncs */
    l = open_log(&o);
    f.fsync_delay_us = 2000; /* a slow disk, so that appends gather behind each fsync */
    run_writers(l, args, GC_THREADS, 50);
    f.fsync_delay_us = 0;
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_lt(st.fsyncs, GC_THREADS * 50, "%llu fsyncs for %d appends: no group commit",
                 (unsigned long long)st.fsyncs, GC_THREADS * 50);
    cr_log_info("journal group commit: %llu fsyncs for %d appends", (unsigned long long)st.fsyncs,
                GC_THREADS * 50);
    expect_interleaved(l, args, GC_THREADS, 50);
    elog_close(l);
}

/* Journal fsyncs, timed by the fsync hook. */
typedef struct journal_times {
    faults f; /* first: the hook's context */
    pthread_mutex_t mu;
    int n;
    int64_t at_ms[64];
} journal_times;

static int timed_journal_fsync(void *ctx, int fd)
{
    journal_times *t = ctx;
    if (is_journal(fd)) {
        pthread_mutex_lock(&t->mu);
        if (t->n < 64)
            t->at_ms[t->n++] = now_ms();
        pthread_mutex_unlock(&t->mu);
    }
    return fault_fsync(ctx, fd);
}

Test(elog, batch_spaces_journal_rounds_by_the_commit_interval)
{
    static journal_times t;
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH, .commit_interval_ms = 150};
    faults_init(&t.f, &o);
    o.io.fsync = timed_journal_fsync;
    o.io.ctx = &t;
    pthread_mutex_init(&t.mu, NULL);
    elog *l = open_log(&o);

    /* each append waits for its own round: one every 150 ms at most, the first at once */
    for (uint64_t i = 0; i < 4; i++)
        append_rec(l, (int)(i % 2), 4, i / 2);
    cr_assert_eq(t.n, 4, "%d journal fsyncs for 4 appends one after another", t.n);
    for (int i = 1; i < t.n; i++)
        cr_assert_geq(t.at_ms[i] - t.at_ms[i - 1], 100,
                      "journal fsync %d came %lld ms after the one before", i,
                      (long long)(t.at_ms[i] - t.at_ms[i - 1]));
    expect_partition(l, 0, 4, 0, 2);
    expect_partition(l, 1, 4, 0, 2);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_starts_a_round_early_once_a_mebibyte_waits)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH, .commit_interval_ms = 10000};
    elog *l = open_log(&o);
    static char big[64 * 1024];
    memset(big, 'x', sizeof big);
    uint64_t first, end;

    append_rec(l, 0, 5, 0); /* the first round: at once; the next may wait 10 s */
    int64_t t0 = now_ms();
    elog_rec rec = {big, sizeof big};
    for (size_t sent = 0; sent < ELOG_EARLY_BYTES; sent += sizeof big)
        cr_assert_eq(elog_write_batch(l, 1, &rec, 1, &first, &end), 0);
    cr_assert_eq(elog_wait(l, 1, end), 0);
    cr_assert_lt(now_ms() - t0, 5000, "a mebibyte waited %lld ms for the 10 s interval",
                 (long long)(now_ms() - t0));
    cr_assert_eq(elog_synced_offset(l, 1), end);
    cr_assert_eq(elog_close(l), 0);

    elog_opts bad = {.fsync = ELOG_FSYNC_BATCH, .commit_interval_ms = 10001};
    char err[256];
    cr_assert_eq(elog_open(tmpdir, &bad, &l, err, sizeof err), ONR_E_INVALID);
    cr_assert(strstr(err, "commit_interval_ms") != NULL, "%s", err);
}

/* What each partition segment file held at its last fsync (its records, not the zeros it is
 * sized ahead with), kept by a child's fsync hook in shared memory, so that the parent can
 * play a power loss faithfully: what was appended after it is lost. */
typedef struct synced_sizes {
    int n;
    struct {
        char path[300];
        off_t size;
    } e[256];
} synced_sizes;

/* Where the data of a segment file ends: after its last byte that is not zero (the active
 * segment is sized ahead with zeros; the test records' payloads end in letters). */
static off_t data_end(int fd, off_t size)
{
    char buf[4096];
    while (size > 0) {
        off_t at = size > (off_t)sizeof buf ? size - (off_t)sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(size - at), at);
        if (n != size - at)
            _exit(6);
        for (ssize_t k = n - 1; k >= 0; k--)
            if (buf[k])
                return at + k + 1;
        size = at;
    }
    return 0;
}

static int note_synced_size(void *ctx, int fd)
{
    synced_sizes *z = ctx;
    char link[64], path[300];
    struct stat sb;
    if (fsync(fd) != 0)
        return -errno;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    path[n] = 0;
    if (!strstr(path, ".log"))
        return 0;
    int i = 0;
    while (i < z->n && strcmp(z->e[i].path, path) != 0)
        i++;
    if (i == z->n) {
        if (z->n == 256)
            _exit(5);
        z->n++;
        snprintf(z->e[i].path, sizeof z->e[i].path, "%s", path);
    }
    z->e[i].size = data_end(fd, sb.st_size);
    return 0;
}

/* In a child (so that nothing closes the log cleanly), appends records 0..n-1 of stream 0 to
 * partition 0 and of stream 1 to partition 1 under o's policy, each acknowledged; then the
 * child dies. The page cache still holds everything: the caller plays the power loss. With z, the
 * child notes each segment's size at its fsyncs. */
static void child_appends(const elog_opts *o, uint64_t n, synced_sizes *z)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        elog *l;
        char err[256];
        elog_opts co = *o;
        if (z) {
            co.io.fsync = note_synced_size;
            co.io.ctx = z;
        }
        if (elog_open(tmpdir, &co, &l, err, sizeof err) != 0)
            _exit(2);
        for (uint64_t i = 0; i < n; i++)
            for (int p = 0; p < 2; p++) {
                char buf[256];
                size_t len = make_rec(buf, sizeof buf, p, i);
                uint64_t off;
                if (elog_append(l, p, buf, len, &off) != 0 || off != i)
                    _exit(3);
            }
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

static void expect_clean_reopen(uint64_t end0);

Test(elog, batch_writes_a_rounds_appends_to_a_partition_in_one_write)
{
    seg_writes w = {0};
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH, .commit_interval_ms = 300};
    elog *l = open_counted(&o, &w);
    char buf[256];
    uint64_t first, end = 0;

    append_rec(l, 0, 0, 0); /* the first round: at once; the next not before 300 ms */
    cr_assert_eq(atomic_load(&w.writes), 1);
    cr_assert_eq(atomic_load(&w.readable[0]), 1);
    for (uint64_t i = 1; i <= 20; i++) {
        size_t n = make_rec(buf, sizeof buf, 0, i);
        elog_rec rec = {buf, n};
        cr_assert_eq(elog_write_batch(l, 0, &rec, 1, &first, &end), 0);
        cr_assert_eq(first, i, "offsets are given at the append");
    }
    /* staged: not written, not readable, until the round */
    cr_assert_eq(elog_end_offset(l, 0), 1);
    expect_partition(l, 0, 0, 0, 1);
    cr_assert_eq(atomic_load(&w.readable[0]), 1);
    cr_assert_eq(end, 21);
    cr_assert_eq(elog_wait(l, 0, end), 0);
    cr_assert_eq(atomic_load(&w.writes), 2, "20 appends, %d writes", atomic_load(&w.writes));
    cr_assert_eq(atomic_load(&w.readable[0]), 2);
    cr_assert_eq(atomic_load(&w.readable[1]), 0);
    cr_assert_eq(elog_end_offset(l, 0), 21);
    expect_partition(l, 0, 0, 0, 21);
    cr_assert_eq(elog_close(l), 0);
    expect_clean_reopen(21);
}

Test(elog, batch_bounds_a_partitions_stage_and_close_writes_what_nobody_waited_for)
{
    seg_writes w = {0};
    /* the stages share 16 MiB: 256 KiB a partition of 64 */
    elog_opts o = {.partitions = 64, .fsync = ELOG_FSYNC_BATCH, .commit_interval_ms = 10000};
    elog *l = open_counted(&o, &w);
    static char big[1000];
    uint64_t first, end;

    append_rec(l, 0, 7, 0); /* the first round: at once; the next may wait 10 s */
    cr_assert_eq(atomic_load(&w.writes), 1);
    /* 300 records of 1008 framed bytes: the stage (256 KiB) is written when the next would
     * pass it, by that append, long before the round */
    for (int i = 0; i < 300; i++) {
        memset(big, 'a' + i % 26, sizeof big);
        elog_rec rec = {big, sizeof big};
        cr_assert_eq(elog_write_batch(l, 1, &rec, 1, &first, &end), 0);
        cr_assert_eq(first, (uint64_t)i);
    }
    uint64_t stage_recs = (256u << 10) / 1008;
    cr_assert_eq(elog_end_offset(l, 1), stage_recs, "readable %llu",
                 (unsigned long long)elog_end_offset(l, 1));
    cr_assert_eq(atomic_load(&w.writes), 2);
    /* nobody waits for the rest: closing writes them */
    cr_assert_eq(elog_close(l), 0);
    l = open_log(&o);
    cr_assert_eq(elog_end_offset(l, 1), 300);
    elog_reader *r;
    const void *rec;
    size_t len;
    uint64_t off;
    cr_assert_eq(elog_reader_open(l, 1, 0, &r), 0);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 1);
        cr_assert_eq(off, (uint64_t)i);
        cr_assert_eq(len, sizeof big);
        cr_assert_eq(((const char *)rec)[0], 'a' + i % 26);
    }
    elog_reader_close(r);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_a_failed_write_of_a_stage_fails_its_waiters_and_the_next_append_writes_it)
{
    faults f;
    logcap cap;
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH};
    faults_init(&f, &o);
    elog *l = open_log_captured(&o, &cap);
    char buf[256];
    uint64_t off;

    for (uint64_t i = 0; i < 10; i++)
        append_rec(l, 0, 0, i);
    f.write_err = -ENOSPC;
    f.write_partial = true;
    atomic_store(&f.write_fail_in, 0); /* the round's write of the stage */
    size_t n = make_rec(buf, sizeof buf, 0, 10);
    cr_assert_eq(elog_append(l, 0, buf, n, &off), -ENOSPC);
    cr_assert_eq(elog_end_offset(l, 0), 10, "a failed write made records readable");
    cr_assert(strstr(cap.text, "fsync failed") != NULL, "%s", cap.text);
    struct elog_stats st;
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.write_errors, 1);
    /* the disk is back: the next append writes the failed record (its outcome was unknown,
     * as after a failed fsync) before its own */
    cr_assert_eq(append_rec(l, 0, 0, 11), 11);
    expect_partition(l, 0, 0, 0, 12);
    cr_assert_eq(elog_synced_offset(l, 0), 12);
    cr_assert(strstr(cap.text, "fsync succeeds again") != NULL, "%s", cap.text);
    cr_assert_eq(elog_close(l), 0);
    /* said by the sync thread after it failed the waiters: checked once it has stopped */
    cr_assert(strstr(cap.text, "cannot write or read back its records") != NULL, "%s", cap.text);
    expect_clean_reopen(12);
}

Test(elog, the_active_segment_is_sized_ahead_and_a_crash_leaves_nothing_to_report)
{
    elog_opts o = {
        .partitions = 2, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 1 << 20, .max_record = 4096};
    char path[512];
    seg_path(path, sizeof path, 0, 0);
    child_appends(&o, 5, NULL); /* dies with the log open */
    cr_assert_eq(file_size(path), 1 << 20, "the active segment was not sized ahead");
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_lt((off_t)sb.st_blocks * 512, 1 << 20, "sized ahead with a sparse tail, not zeros");

    logcap cap;
    elog *l = open_log_captured(&o, &cap);
    cr_assert_eq(cap.count, 0, "the zeros were reported: %s", cap.text);
    struct elog_stats st;
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_eq(st.truncated_bytes, 0);
    expect_partition(l, 0, 0, 0, 5);
    expect_partition(l, 1, 1, 0, 5);
    cr_assert_eq(append_rec(l, 0, 0, 5), 5);
    cr_assert_eq(elog_close(l), 0);
    cr_assert_eq(file_size(path), rec_pos(0, 6), "close cuts the segment to its records");
}

/* A power loss: every partition segment keeps only what its last fsync covered. */
static void lose_unsynced(const synced_sizes *z)
{
    for (int p = 0; p < 2; p++) {
        char dir[512], path[1024];
        snprintf(dir, sizeof dir, "%s/p%03d", tmpdir, p);
        DIR *d = opendir(dir);
        cr_assert_not_null(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strstr(e->d_name, ".log"))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            off_t keep = 0;
            for (int i = 0; i < z->n; i++)
                if (strcmp(z->e[i].path, path) == 0)
                    keep = z->e[i].size;
            cr_assert_eq(truncate(path, keep), 0);
        }
        closedir(d);
    }
}

/* A power loss that kept the journal but not the partitions' unsynced tails: partition 0's
 * active segment lost everything, partition 1's was cut mid-record. */
static void lose_partition_tails(void)
{
    char path[512];
    seg_path(path, sizeof path, 0, 0);
    cr_assert_eq(truncate(path, 0), 0);
    seg_path(path, sizeof path, 1, 0);
    cr_assert_eq(truncate(path, rec_pos(1, 7) + 5), 0);
}

Test(elog, batch_journal_restores_what_a_power_loss_took_from_the_partitions)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH};
    child_appends(&o, 40, NULL);
    cr_assert_eq(count_journal_segments(), 1);
    lose_partition_tails();

    logcap cap;
    elog *l = open_log_captured(&o, &cap);
    cr_assert(strstr(cap.text, "restored 73 records") != NULL, "%s", cap.text);
    expect_partition(l, 0, 0, 0, 40);
    expect_partition(l, 1, 1, 0, 40);
    cr_assert_eq(count_journal_segments(), 1, "the replayed journal is replaced by a fresh one");
    cr_assert_eq(append_rec(l, 0, 0, 40), 40);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_journal_with_a_torn_tail_restores_what_precedes_it)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH};
    child_appends(&o, 40, NULL);
    lose_partition_tails();
    char path[512];
    journal_path(path, sizeof path, 1);
    off_t size = file_size(path);
    cr_assert_gt(size, 0);
    cr_assert_eq(truncate(path, size - 3), 0); /* the last entry (p1, record 39) is torn */

    logcap cap;
    elog *l = open_log_captured(&o, &cap);
    cr_assert(strstr(cap.text, "bytes after the last entry") != NULL, "%s", cap.text);
    cr_assert(strstr(cap.text, "restored 72 records") != NULL, "%s", cap.text);
    expect_partition(l, 0, 0, 0, 40);
    expect_partition(l, 1, 1, 0, 39);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_journal_restores_nothing_from_a_damaged_record_on)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH};
    child_appends(&o, 40, NULL);
    char path[512];
    seg_path(path, sizeof path, 0, 0);
    cr_assert_eq(truncate(path, 0), 0); /* partition 0 lost everything */
    /* entries alternate p0, p1 for each record number: damage p0's record 20 */
    journal_path(path, sizeof path, 1);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    off_t pos = 0;
    for (int e = 0; e < 40; e++) {
        unsigned char h[4];
        cr_assert_eq(pread(fd, h, 4, pos), 4);
        pos += 24 + (off_t)(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24);
    }
    unsigned char c;
    cr_assert_eq(pread(fd, &c, 1, pos + 24 + 8 + 2), 1);
    c ^= 0x40;
    cr_assert_eq(pwrite(fd, &c, 1, pos + 24 + 8 + 2), 1);
    close(fd);

    logcap cap;
    elog *l = open_log_captured(&o, &cap);
    cr_assert(strstr(cap.text, "damaged record at offset 20") != NULL, "%s", cap.text);
    cr_assert(strstr(cap.text, "follow a gap") != NULL, "%s", cap.text);
    expect_partition(l, 0, 0, 0, 20);
    expect_partition(l, 1, 1, 0, 40);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, batch_retires_full_journal_segments_once_the_partitions_are_fsynced)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_BATCH, .journal_bytes = 2048};
    elog *l = open_log(&o);
    struct elog_stats st;
    for (uint64_t i = 0; i < 200; i++) {
        append_rec(l, (int)(i % 2), (int)(i % 2), i / 2);
        cr_assert_leq(count_journal_segments(), 2, "retired segments are deleted");
    }
    /* the background thread fsyncs the partitions within a second; the next round then
     * deletes the retired segment */
    uint64_t next = 100;
    for (int tries = 0; tries < 50 && count_journal_segments() > 1; tries++) {
        usleep(100 * 1000);
        append_rec(l, 0, 0, next++);
    }
    cr_assert_eq(count_journal_segments(), 1, "the retired segment stayed");
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_gt(st.fsyncs, 0, "the partition files were never fsynced");
    elog_close(l);

    /* and a power loss after many retirements still loses nothing acknowledged */
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    synced_sizes *z =
        mmap(NULL, sizeof *z, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(z, MAP_FAILED);
    memset(z, 0, sizeof *z);
    o.segment_bytes = 4096; /* partitions roll too */
    o.max_record = 1024;
    child_appends(&o, 100, z);
    cr_assert_leq(count_journal_segments(), 2);
    lose_unsynced(z);
    logcap cap;
    l = open_log_captured(&o, &cap);
    cr_assert(strstr(cap.text, "restored") != NULL, "the active journal restored nothing: %s",
              cap.text);
    expect_partition(l, 0, 0, 0, 100);
    expect_partition(l, 1, 1, 0, 100);
    cr_assert_eq(elog_close(l), 0);
    munmap(z, sizeof *z);
}

/* What a child saw of the journal's segments written ahead, in shared memory. */
typedef struct ahead_seen {
    synced_sizes z; /* first: the fsync hook's context */
    bool moved_onto_it;
    uint64_t appended;
} ahead_seen;

/* A file's size, or -1 when it is not there (no assertion: for a child). */
static off_t size_or_none(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* The newest journal segment (the active one) and its size. */
static uint64_t newest_journal(off_t *size)
{
    char path[512];
    uint64_t newest = 0;
    snprintf(path, sizeof path, "%s/journal", tmpdir);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        unsigned long long seq;
        if (strstr(e->d_name, ".jnl") && sscanf(e->d_name, "%llu", &seq) == 1 && seq > newest)
            newest = seq;
    }
    if (d)
        closedir(d);
    journal_path(path, sizeof path, newest);
    *size = newest ? size_or_none(path) : 0;
    return newest;
}

/* Whether the last bytes of journal segment seq are zeros: space written ahead, not used. */
static bool ends_in_zeros(uint64_t seq, off_t size)
{
    char path[512];
    unsigned char tail[64];
    journal_path(path, sizeof path, seq);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    bool zeros = pread(fd, tail, sizeof tail, size - (off_t)sizeof tail) == (ssize_t)sizeof tail;
    close(fd);
    for (size_t i = 0; i < sizeof tail && zeros; i++)
        zeros = tail[i] == 0;
    return zeros;
}

Test(elog, batch_writes_journal_segments_ahead_and_moves_onto_them)
{
    enum { JBYTES = 64 * 1024 };
    ahead_seen *seen =
        mmap(NULL, sizeof *seen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(seen, MAP_FAILED);
    memset(seen, 0, sizeof *seen);
    elog_opts o = {.partitions = 2,
                   .fsync = ELOG_FSYNC_BATCH,
                   .journal_bytes = JBYTES,
                   .commit_interval_ms = -1};

    /* In a child, which dies without closing: appends until the background thread has
     * written a spare ahead (past JBYTES / 8 of journal) and a round has moved onto it: the
     * active segment is then JBYTES long and ends in zeros. The child waits for the spare
     * before appending past JBYTES / 8: the background thread looks every 100 ms, and a fast
     * disk can fill the first segment before, which then rolls onto a new file and later
     * reuses itself, entries of its first use and all, instead of a spare of zeros. */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        elog *l;
        char err[256];
        elog_opts co = o;
        co.io.fsync = note_synced_size;
        co.io.ctx = &seen->z;
        if (elog_open(tmpdir, &co, &l, err, sizeof err) != 0)
            _exit(2);
        char spare[512];
        snprintf(spare, sizeof spare, "%s/journal/spare", tmpdir);
        uint64_t i = 0, more = 20;
        for (int64_t until = now_ms() + 10000; now_ms() < until && more; i++) {
            for (int p = 0; p < 2; p++) {
                char buf[256];
                size_t len = make_rec(buf, sizeof buf, p, i);
                uint64_t off;
                if (elog_append(l, p, buf, len, &off) != 0 || off != i)
                    _exit(3);
            }
            off_t size;
            uint64_t seq = newest_journal(&size);
            for (int64_t wait = now_ms() + 5000;
                 seq == 1 && size >= JBYTES / 8 && size_or_none(spare) < JBYTES && now_ms() < wait;
                 seq = newest_journal(&size))
                usleep(1000);
            if (seq == 2 && size == JBYTES && ends_in_zeros(seq, size))
                seen->moved_onto_it = true;
            if (seen->moved_onto_it)
                more--; /* a few more, journaled in the segment written ahead */
        }
        seen->appended = i;
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    cr_assert(seen->moved_onto_it, "the journal never moved onto a segment written ahead");

    /* a power loss: the journal restores the partitions' unsynced tails from the segment
     * written ahead, and its zeros after the last entry are not reported as a torn write */
    lose_unsynced(&seen->z);
    logcap cap;
    elog *l = open_log_captured(&o, &cap);
    cr_assert(strstr(cap.text, "restored") != NULL, "%s", cap.text);
    cr_assert(strstr(cap.text, "after the last entry") == NULL, "%s", cap.text);
    expect_partition(l, 0, 0, 0, seen->appended);
    expect_partition(l, 1, 1, 0, seen->appended);
    cr_assert_eq(elog_close(l), 0);
    char spare[512];
    snprintf(spare, sizeof spare, "%s/journal/spare", tmpdir);
    cr_assert_eq(access(spare, F_OK), -1, "a clean close leaves no spare");
    munmap(seen, sizeof *seen);
}

static void journal_failure(size_t journal_bytes)
{
    faults f;
    logcap cap;
    logcap_init(&cap);
    elog_opts o = {.partitions = 2,
                   .fsync = ELOG_FSYNC_BATCH,
                   .journal_bytes = journal_bytes,
                   .log = capture,
                   .log_ctx = &cap};
    faults_init(&f, &o);
    elog *l = open_log(&o);
    char buf[256];
    uint64_t off;
    struct elog_stats st;

    for (uint64_t i = 0; i < 10; i++)
        append_rec(l, 0, 0, i);
    f.fsync_err = -EIO;
    f.journal_only = true;
    atomic_store(&f.fsync_fail, 1);
    size_t n = make_rec(buf, sizeof buf, 0, 10);
    cr_assert_eq(elog_append(l, 0, buf, n, &off), -EIO, "the failed journal fsync is returned");
    cr_assert(strstr(cap.text, "journal: write or fsync failed") != NULL, "%s", cap.text);
    cr_assert_eq(elog_synced_offset(l, 0), 10);
    /* the disk is back: the record written before is made durable with the next ones */
    cr_assert_eq(elog_end_offset(l, 0), 11);
    for (uint64_t i = 11; i < 31; i++)
        cr_assert_eq(append_rec(l, 0, 0, i), i);
    for (uint64_t i = 0; i < 10; i++)
        cr_assert_eq(append_rec(l, 1, 1, i), i);
    expect_partition(l, 0, 0, 0, 31);
    cr_assert_eq(elog_stats(l, -1, &st), 0);
    cr_assert_eq(st.fsync_errors, 1);
    cr_assert_eq(elog_synced_offset(l, 0), elog_end_offset(l, 0));
    cr_assert_eq(elog_close(l), 0);
    cr_assert_eq(count_journal_segments(), 0);
}

Test(elog, batch_after_a_failed_journal_fsync_acknowledges_by_partition_fsyncs)
{
    journal_failure(0);
}

Test(elog, batch_journal_failure_while_a_retired_segment_waits)
{
    journal_failure(300); /* a roll every few appends: a retired segment is usually waiting */
}

typedef struct notified {
    elog_waiter w; /* first */
    atomic_int calls;
    atomic_int rc;
    pthread_t thread;
} notified;

static void on_durable(elog_waiter *w, int rc)
{
    notified *n = (notified *)(void *)w;
    n->thread = pthread_self();
    atomic_store(&n->rc, rc);
    atomic_fetch_add(&n->calls, 1);
}

static void notify_run(elog_fsync policy)
{
    elog_opts o = {.partitions = 2, .fsync = policy};
    elog *l = open_log(&o);
    char buf[256];
    elog_rec rec;
    uint64_t first, end;
    notified n[20];

    memset(n, 0, sizeof n);
    for (int i = 0; i < 20; i++) {
        rec.len = make_rec(buf, sizeof buf, 0, (uint64_t)i);
        rec.data = buf;
        cr_assert_eq(elog_write_batch(l, i % 2, &rec, 1, &first, &end), 0);
        n[i].w.done = on_durable;
        elog_notify(l, i % 2, end, &n[i].w);
    }
    for (int tries = 0; tries < 500; tries++) {
        int done = 0;
        for (int i = 0; i < 20; i++)
            done += atomic_load(&n[i].calls);
        if (done == 20)
            break;
        usleep(10 * 1000);
    }
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(atomic_load(&n[i].calls), 1, "waiter %d called %d times", i,
                     atomic_load(&n[i].calls));
        cr_assert_eq(atomic_load(&n[i].rc), 0);
    }
    if (policy != ELOG_FSYNC_EVERYSEC)
        for (int p = 0; p < 2; p++)
            cr_assert_eq(elog_synced_offset(l, p), 10, "p%d", p);
    else
        cr_assert(pthread_equal(n[0].thread, pthread_self()), "everysec: called at once");

    /* an offset not yet written is refused at once */
    notified bad = {0};
    bad.w.done = on_durable;
    elog_notify(l, 0, 1000, &bad.w);
    cr_assert_eq(atomic_load(&bad.calls), 1);
    cr_assert_eq(atomic_load(&bad.rc), ONR_E_INVALID);
    cr_assert_eq(elog_close(l), 0);
}

Test(elog, notify_calls_back_once_durable_under_batch)
{
    notify_run(ELOG_FSYNC_BATCH);
}

Test(elog, notify_calls_back_once_durable_under_always)
{
    notify_run(ELOG_FSYNC_ALWAYS);
}

Test(elog, notify_calls_back_at_once_under_everysec)
{
    notify_run(ELOG_FSYNC_EVERYSEC);
}

Test(elog, everysec_acknowledges_after_write_and_fsyncs_in_the_background)
{
    faults f;
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_EVERYSEC};
    faults_init(&f, &o);
    elog *l = open_log(&o);
    struct elog_stats st;

    f.fsync_delay_us = 300 * 1000; /* a slow disk: an fsync in the append path would show */
    int64_t t0 = now_ms();
    for (uint64_t i = 0; i < 20; i++)
        append_rec(l, 1, 1, i);
    cr_assert_lt(now_ms() - t0, 250, "appends waited for an fsync");
    expect_partition(l, 1, 1, 0, 20); /* readable at once */
    cr_assert_lt(elog_synced_offset(l, 1), 20);

    for (int i = 0; i < 40; i++) {
        cr_assert_eq(elog_stats(l, 1, &st), 0);
        if (st.fsyncs > 0)
            break;
        usleep(100 * 1000);
    }
    cr_assert_gt(st.fsyncs, 0, "the background thread never fsynced");
    cr_assert_eq(elog_synced_offset(l, 1), 20);
    f.fsync_delay_us = 0;
    cr_assert_eq(elog_close(l), 0);
}

/* ---- kill -9 */

typedef struct ack {
    uint32_t part, stream;
    uint64_t seq, off;
} ack;

typedef struct crash_arg {
    elog *l;
    int part, stream, fd;
} crash_arg;

static void *crash_writer(void *arg)
{
    crash_arg *a = arg;
    char buf[256];
    for (uint64_t i = 0;; i++) {
        size_t n = make_rec(buf, sizeof buf, a->stream, i);
        ack k = {.part = (uint32_t)a->part, .stream = (uint32_t)a->stream, .seq = i};
        if (elog_append(a->l, a->part, buf, n, &k.off) != 0)
            _exit(3);
        if (write(a->fd, &k, sizeof k) != (ssize_t)sizeof k) /* atomic: < PIPE_BUF */
            _exit(4);
    }
    return NULL;
}

/* A child appends from 3 threads (two share a partition) and reports each acknowledged
 * offset; it is killed mid-stream. Every acknowledged record must be there on reopen. */
static void crash_run(elog_fsync policy)
{
    elog_opts o = {.partitions = 2, .fsync = policy, .segment_bytes = 16 << 10, .max_record = 1024};
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        elog *l;
        char err[256];
        close(pfd[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        if (elog_open(tmpdir, &o, &l, err, sizeof err) != 0)
            _exit(2);
        crash_arg a[3] = {{l, 0, 0, pfd[1]}, {l, 0, 1, pfd[1]}, {l, 1, 2, pfd[1]}};
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
            pthread_create(&th[i], NULL, crash_writer, &a[i]);
        for (;;)
            pause();
    }
    close(pfd[1]);

    static ack acks[1 << 16];
    size_t nacks = 0, got = 0;
    char *bytes = (char *)acks;
    bool killed = false;
    for (;;) {
        if (nacks >= 1500 && !killed) {
            kill(pid, SIGKILL); /* mid-stream: the writers are still going */
            killed = true;
        }
        ssize_t n = read(pfd[0], bytes + got, sizeof acks - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        nacks = got / sizeof(ack);
        if (got == sizeof acks) {
            kill(pid, SIGKILL);
            break;
        }
    }
    close(pfd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    cr_assert_lt(got, sizeof acks, "the child outran the test");
    cr_assert_geq(nacks, 1500);

    elog *l = open_log(&o);
    uint64_t max_off[2] = {0, 0};
    for (size_t i = 0; i < nacks; i++) {
        elog_reader *r;
        const void *rec;
        size_t len;
        uint64_t off;
        cr_assert_eq(elog_reader_open(l, (int)acks[i].part, acks[i].off, &r), 0,
                     "acknowledged offset %llu of p%u is gone", (unsigned long long)acks[i].off,
                     acks[i].part);
        cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 1,
                     "acknowledged offset %llu of p%u is gone", (unsigned long long)acks[i].off,
                     acks[i].part);
        expect_rec(rec, len, (int)acks[i].stream, acks[i].seq);
        elog_reader_close(r);
        if (acks[i].off + 1 > max_off[acks[i].part])
            max_off[acks[i].part] = acks[i].off + 1;
    }
    for (int p = 0; p < 2; p++)
        cr_assert_geq(elog_end_offset(l, p), max_off[p]);
    cr_log_info("%s: %zu acknowledged, ends %llu/%llu", elog_fsync_name(policy), nacks,
                (unsigned long long)elog_end_offset(l, 0),
                (unsigned long long)elog_end_offset(l, 1));
    elog_close(l);
}

Test(elog, kill9_keeps_every_record_acknowledged_under_always)
{
    crash_run(ELOG_FSYNC_ALWAYS);
}

Test(elog, kill9_keeps_every_record_acknowledged_under_batch)
{
    crash_run(ELOG_FSYNC_BATCH);
}

Test(elog, kill9_keeps_every_record_acknowledged_under_everysec)
{
    crash_run(ELOG_FSYNC_EVERYSEC);
}

/* ---- injected I/O errors */

static void expect_clean_reopen(uint64_t end0)
{
    logcap cap;
    logcap_init(&cap);
    elog_opts o = {.partitions = 2, .log = capture, .log_ctx = &cap};
    elog *l = open_log(&o);
    cr_assert_eq(cap.count, 0, "reopening had to repair: %s", cap.text);
    cr_assert_eq(elog_end_offset(l, 0), end0);
    expect_partition(l, 0, 0, 0, end0);
    elog_close(l);
}

static void write_failure(int err, bool partial)
{
    faults f;
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS};
    faults_init(&f, &o);
    elog *l = open_log(&o);
    char buf[256], path[512];
    struct elog_stats st;

    for (uint64_t i = 0; i < 10; i++)
        append_rec(l, 0, 0, i);
    f.write_err = err;
    f.write_partial = partial;
    atomic_store(&f.write_fail_in, 0);
    size_t n = make_rec(buf, sizeof buf, 0, 10);
    uint64_t off = 1234;
    cr_assert_eq(elog_append(l, 0, buf, n, &off), err);
    cr_assert_eq(elog_end_offset(l, 0), 10);
    seg_path(path, sizeof path, 0, 0);
    expect_zeros_from(path, rec_pos(0, 10)); /* the failed write left nothing behind */
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.write_errors, 1);

    /* the disk is back: the log goes on where it was */
    for (uint64_t i = 10; i < 15; i++)
        cr_assert_eq(append_rec(l, 0, 0, i), i);
    cr_assert_eq(elog_close(l), 0);
    expect_clean_reopen(15);
}

Test(elog, a_failed_write_returns_its_error_and_leaves_a_clean_log)
{
    write_failure(-ENOSPC, true);
}

Test(elog, a_write_eio_with_nothing_written_leaves_a_clean_log)
{
    write_failure(-EIO, false);
}

static void fsync_failure(int err, int failures)
{
    faults f;
    logcap cap;
    logcap_init(&cap);
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS, .log = capture, .log_ctx = &cap};
    faults_init(&f, &o);
    elog *l = open_log(&o);
    char buf[256];
    uint64_t off;
    struct elog_stats st;

    for (uint64_t i = 0; i < 10; i++)
        append_rec(l, 0, 0, i);
    f.fsync_err = err;
    atomic_store(&f.fsync_fail, failures);
    /* The first append's fsync fails: not acknowledged, though its record was written. Each
     * later append first retries the fsync and fails before writing while the disk does. */
    size_t n = make_rec(buf, sizeof buf, 0, 10);
    cr_assert_eq(elog_append(l, 0, buf, n, &off), err);
    cr_assert_eq(elog_end_offset(l, 0), 11);
    for (int i = 1; i < failures; i++) {
        n = make_rec(buf, sizeof buf, 0, 11);
        cr_assert_eq(elog_append(l, 0, buf, n, &off), err, "retry %d", i);
        cr_assert_eq(elog_end_offset(l, 0), 11, "an append went past a failing fsync");
    }
    cr_assert_eq(atomic_load(&f.fsync_fail), 0);
    cr_assert(strstr(cap.text, "fsync failed") != NULL, "%s", cap.text);
    uint64_t end = elog_end_offset(l, 0);
    cr_assert_eq(append_rec(l, 0, 0, end), end, "the disk is back");
    expect_partition(l, 0, 0, 0, end + 1);
    cr_assert(strstr(cap.text, "fsync succeeds again") != NULL, "%s", cap.text);
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.fsync_errors, (uint64_t)failures);
    cr_assert_eq(elog_close(l), 0);
    expect_clean_reopen(end + 1);
}

Test(elog, a_failed_fsync_returns_its_error_and_the_next_append_heals)
{
    fsync_failure(-EIO, 1);
}

Test(elog, appends_fail_while_fsync_keeps_failing_and_recover_after)
{
    fsync_failure(-ENOSPC, 3);
}

/* ---- retention */

Test(elog, retention_deletes_only_whole_segments_below_the_checkpoint)
{
    elog_opts o = {
        .partitions = 1, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 1024, .max_record = 512};
    elog *l = open_log(&o);
    struct elog_stats st;
    elog_reader *r;

    for (uint64_t i = 0; i < 200; i++)
        append_rec(l, 0, 0, i);
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    uint64_t segs0 = st.segments;
    cr_assert_gt(segs0, 10);

    /* nothing is over the limits: nothing goes */
    cr_assert_eq(elog_retain(l, 0, 150, 0, 0, wall_ms()), 0);
    cr_assert_eq(elog_retain(l, 0, 150, 1 << 20, ONR_HOUR_MS, wall_ms()), 0);

    /* over the size limit: only segments wholly below the checkpoint go */
    int n = elog_retain(l, 0, 100, 1, 0, wall_ms());
    cr_assert_gt(n, 0);
    uint64_t start = elog_start_offset(l, 0);
    cr_assert_leq(start, 100, "a segment holding offset 100 was deleted");
    cr_assert_gt(start, 0);
    cr_assert_eq(elog_reader_open(l, 0, start - 1, &r), ONR_E_NOTFOUND);
    expect_partition(l, 0, 0, start, 200);
    expect_partition(l, 0, 0, 100, 200);
    char path[512];
    seg_path(path, sizeof path, 0, start);
    cr_assert_gt(file_size(path), 0);
    seg_path(path, sizeof path, 0, 0);
    cr_assert_neq(access(path, F_OK), 0);

    /* by age; never the active segment, even with everything checkpointed */
    cr_assert_eq(elog_retain(l, 0, 200, 0, ONR_HOUR_MS, wall_ms()), 0, "too young");
    n = elog_retain(l, 0, 200, 0, ONR_HOUR_MS, wall_ms() + 2 * ONR_HOUR_MS);
    cr_assert_gt(n, 0);
    cr_assert_eq(elog_stats(l, 0, &st), 0);
    cr_assert_eq(st.segments, 1);
    cr_assert_eq(elog_end_offset(l, 0), 200);
    start = elog_start_offset(l, 0);
    expect_partition(l, 0, 0, start, 200);
    cr_assert_eq(append_rec(l, 0, 0, 200), 200);
    elog_close(l);

    /* the retained log reopens where it was */
    l = open_log(&o);
    cr_assert_eq(elog_start_offset(l, 0), start);
    cr_assert_eq(elog_end_offset(l, 0), 201);
    expect_partition(l, 0, 0, start, 201);
    elog_close(l);
}

/* ---- tailing */

Test(elog, a_reader_tails_records_appended_after_it_reached_the_end)
{
    elog_opts o = {
        .partitions = 1, .fsync = ELOG_FSYNC_ALWAYS, .segment_bytes = 1024, .max_record = 512};
    elog *l = open_log(&o);
    elog_reader *r;
    const void *rec;
    size_t len;
    uint64_t off, want = 0;

    cr_assert_eq(elog_reader_open(l, 0, 0, &r), 0);
    cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 0);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 7; i++) /* enough to roll a segment now and then */
            append_rec(l, 0, 0, want + (uint64_t)i);
        for (int i = 0; i < 7; i++, want++) {
            cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 1);
            cr_assert_eq(off, want);
            expect_rec(rec, len, 0, off);
        }
        cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 0);
    }
    elog_reader_close(r);
    cr_assert_eq(elog_reader_open(l, 0, want + 1, &r), ONR_E_INVALID);
    elog_close(l);
}

Test(elog, a_reader_in_another_thread_sees_every_record_in_order)
{
    elog_opts o = {
        .partitions = 1, .fsync = ELOG_FSYNC_EVERYSEC, .segment_bytes = 8192, .max_record = 512};
    elog *l = open_log(&o);
    order_tail a = {.l = l, .want = 5000};
    pthread_t th;

    cr_assert_eq(pthread_create(&th, NULL, order_tailer, &a), 0);
    for (uint64_t i = 0; i < a.want; i++)
        append_rec(l, 0, 0, i);
    pthread_join(th, NULL);
    cr_assert_eq(a.err, 0, "the tailing reader failed or read out of order (%d)", a.err);
    expect_partition(l, 0, 0, 0, a.want);
    elog_close(l);
}

/* ---- the page cache behind readers */

#define BIG_REC 60000
#define MIB (1u << 20)

/* Pages of path in [from, to) in the page cache. */
static size_t resident_pages(const char *path, uint64_t from, uint64_t to)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), size = (size_t)sb.st_size, n = 0;
    to = to < size ? to : size;
    if (from < to) {
        void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        cr_assert_neq(m, MAP_FAILED, "mmap %s: %s", path, strerror(errno));
        unsigned char *vec = malloc(size / pg + 1);
        cr_assert_eq(mincore(m, size, vec), 0, "mincore: %s", strerror(errno));
        for (size_t i = (size_t)from / pg; i < ((size_t)to + pg - 1) / pg; i++)
            n += vec[i] & 1;
        free(vec);
        munmap(m, size);
    }
    close(fd);
    return n;
}

/* Whether this file system drops a file's clean pages when told to (tmpfs does not). */
static bool drops_clean_pages(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/probe", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    char *b = calloc(1, MIB);
    cr_assert_eq(write(fd, b, MIB), (ssize_t)MIB);
    cr_assert_eq(fsync(fd), 0);
    cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
    free(b);
    bool dropped = resident_pages(path, 0, MIB) == 0;
    unlink(path);
    return dropped;
}

static void append_big(elog *l, uint64_t seq)
{
    static char buf[BIG_REC];
    memset(buf, 'a' + (int)(seq % 26), sizeof buf);
    memcpy(buf, &seq, sizeof seq);
    cr_assert_eq(elog_append(l, 0, buf, sizeof buf, NULL), 0);
}

/* Reads n records of append_big from r, checking each. */
static void read_big(elog_reader *r, uint64_t first, uint64_t n)
{
    const void *rec;
    size_t len;
    uint64_t off;
    for (uint64_t i = first; i < first + n; i++) {
        cr_assert_eq(elog_reader_next(r, &rec, &len, &off), 1, "record %llu",
                     (unsigned long long)i);
        cr_assert_eq(off, i);
        cr_assert_eq(len, BIG_REC);
        cr_assert(memcmp(rec, &i, sizeof i) == 0);
    }
}

/* A log of one partition holding 100 records of append_big (6 MB). */
static elog *big_log(elog_fsync policy, uint64_t segment_bytes)
{
    elog_opts o = {.partitions = 1,
                   .fsync = policy,
                   .segment_bytes = segment_bytes,
                   .max_record = 64 * 1024};
    elog *l = open_log(&o);
    for (uint64_t i = 0; i < 100; i++)
        append_big(l, i);
    return l;
}

/* Reads records [first, 100) of a big_log from r, and finds nothing after them. */
static void read_big_to_end(elog_reader *r, uint64_t first)
{
    const void *p;
    size_t len;
    read_big(r, first, 100 - first);
    cr_assert_eq(elog_reader_next(r, &p, &len, NULL), 0);
}

/* Every record of append_big, read again (from the disk where dropped). */
static void expect_partition_big(elog *l, uint64_t n)
{
    elog_reader *r;
    cr_assert_eq(elog_reader_open(l, 0, 0, &r), 0);
    read_big(r, 0, n);
    elog_reader_close(r);
}

Test(elog, a_reader_drops_what_it_read_and_an_fsync_covers_from_the_page_cache)
{
    if (!drops_clean_pages())
        cr_skip_test("this file system keeps clean pages in memory whatever it is told");
    elog *l = big_log(ELOG_FSYNC_ALWAYS, 16 * MIB); /* each record fsynced */
    char path[512];
    seg_path(path, sizeof path, 0, 0);
    uint64_t rec = 8 + BIG_REC, half = 50 * rec;
    size_t pages_6m = resident_pages(path, 0, 100 * rec);
    cr_assert_geq(pages_6m, 100 * rec / 4096, "written records are in memory: %zu", pages_6m);

    elog_reader *r;
    cr_assert_eq(elog_reader_open(l, 0, 0, &r), 0);
    read_big(r, 0, 50);
    /* read: dropped but for at most a step and a read-ahead chunk before the reader */
    cr_assert_eq(resident_pages(path, 0, half - 2 * MIB), 0);
    /* not read yet: all still there */
    size_t ahead = resident_pages(path, half + 256 * 1024, 100 * rec);
    cr_assert_geq(ahead, (100 * rec - half - 256 * 1024) / 4096, "unread pages kept: %zu", ahead);
    read_big_to_end(r, 50);
    /* at the end too, all but less than a step */
    cr_assert_eq(resident_pages(path, 0, 100 * rec - MIB - 4096), 0);
    elog_reader_close(r);
    expect_partition_big(l, 100);
    elog_close(l);
}

Test(elog, a_reader_keeps_what_no_fsync_of_the_partition_covers_and_drops_sealed_segments)
{
    if (!drops_clean_pages())
        cr_skip_test("this file system keeps clean pages in memory whatever it is told");
    /* under batch the journal's fsync makes records durable; the partition's own file is
     * fsynced only when a segment is sealed (or a journal segment retired): until then its
     * pages are dirty, and dropping them would only start their writeback */
    elog *l = big_log(ELOG_FSYNC_BATCH, 2 * MIB); /* two sealed segments, part of a third */
    elog_reader *r;
    cr_assert_eq(elog_reader_open(l, 0, 0, &r), 0);
    read_big_to_end(r, 0);
    elog_reader_close(r);

    uint64_t per_seg = (2 * MIB) / (8 + BIG_REC), rec = 8 + BIG_REC;
    cr_assert_lt(2 * per_seg, 100);
    char path[512];
    for (uint64_t s = 0; s < 2; s++) {
        seg_path(path, sizeof path, 0, s * per_seg);
        cr_assert_eq(resident_pages(path, 0, UINT64_MAX), 0, "sealed segment %llu",
                     (unsigned long long)s);
    }
    seg_path(path, sizeof path, 0, 2 * per_seg);
    uint64_t active = (100 - 2 * per_seg) * rec;
    size_t kept = resident_pages(path, 0, active);
    cr_assert_geq(kept, active / 4096, "the active segment's unsynced pages kept: %zu", kept);
    expect_partition_big(l, 100);
    elog_close(l);
}

Test(elog, a_second_open_of_the_same_log_is_refused_until_the_first_closes)
{
    elog_opts o = {.partitions = 2, .fsync = ELOG_FSYNC_ALWAYS};
    elog *l = open_log(&o);
    append_rec(l, 0, 0, 0);
    elog *again = NULL;
    char err[512] = "";
    cr_assert_eq(elog_open(tmpdir, &o, &again, err, sizeof err), -EBUSY);
    cr_assert_null(again);
    char want[600];
    snprintf(want, sizeof want,
             "elog: %s is in use by another process (pid %ld); one log has one server at a time",
             tmpdir, (long)getpid());
    cr_assert_str_eq(err, want);
    /* the refused open changed nothing: the first goes on */
    cr_assert_eq(append_rec(l, 0, 0, 1), 1);
    cr_assert_eq(elog_close(l), 0);

    l = open_log(&o);
    cr_assert_eq(elog_end_offset(l, 0), 2);
    elog_close(l);
}
