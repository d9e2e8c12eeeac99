/*
 * elog.c - the event log: partitions of CRC32C-framed segment files, recovery of torn tails,
 * the three fsync policies, tailing readers and retention. Each partition has one mutex;
 * writes happen under it (they only reach the page cache), fsyncs outside it. Durability is
 * group-committed: under batch the sync thread copies every partition's new records into one
 * commit journal, and one fsync of it covers the appends of all partitions; under always the
 * partition's own file is fsynced, one fsync for everyone waiting on it; under everysec a
 * background thread fsyncs.
 * Waiters either block (elog_wait) or are called back by the sync threads (elog_notify).
 */
#include "stream/elog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR 8        /* u32 length + u32 CRC32C, both little-endian */
#define JHDR 24      /* a journal entry's header (journal_stage) */
#define JNAME_LEN 24 /* 20 digits + ".jnl" */
#define JOURNAL_DIR "journal"
#define JOURNAL_SPARE "spare"         /* a retired journal segment kept for reuse */
#define JOURNAL_SPARE_TMP "spare.tmp" /* a spare being written ahead */
/* Journal segments are written ahead with zeros: an fdatasync of a write over allocated
 * blocks writes the data alone, one that extends the file its inode and block map too. The
 * background thread writes a spare once the active segment passes journal_bytes / 8 (a busy
 * log), this much at a time. */
#define PREWRITE_STEP (1u << 20)
#define SEG_NAME_LEN 24     /* 20 digits + ".log" */
#define MAX_PARTITIONS 1000 /* pNNN */
#define META_NAME "elog.meta"
#define LOCK_NAME "elog.lock" /* flock(2)ed while the log is open: one process at a time */
#define META_MAGIC "onramp-elog 1"
#define SCAN_CHUNK (1u << 20)  /* recovery reads the last segment this much at a time */
#define WALK_CHUNK (64u << 10) /* sealed segments: header walk, payloads mostly skipped */
#define READ_CHUNK (64u << 10) /* a reader's buffer, grown for larger records */
/* A reader drops what it has read of a segment from the page cache, in steps of DROP_STEP,
 * once an fsync covers it (clean pages: nothing to write): the log's pages in memory stay a
 * window behind its writes and readers, not the whole log, and the pages it writes next are
 * ones it freed, not memory untouched lately, which cost five to twelve times more to write
 * into on the virtual machine measured (docs/performance.md). */
#define DROP_STEP (1u << 20)
/* Under batch, appends are framed into the partition's memory and written to its segment by
 * the sync thread once a round, in one write with the other appends of the round: a 4 KB
 * write into the page cache cost three times the system time of a 64 KB one per byte on this
 * machine (docs/performance.md). An append that would take a partition's stage past its share
 * of STAGE_TOTAL (at least STAGE_MIN) writes what is staged first, so that a stalled sync
 * thread bounds memory; the sync thread then reads those bytes back for the journal. */
#define STAGE_TOTAL (16u << 20)
#define STAGE_MIN (64u << 10)

typedef struct seg {
    uint64_t base;  /* offset of its first record, and its file name */
    uint64_t bytes; /* final size once sealed; the active segment's is part.size */
} seg;

typedef struct part {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a sync finished */
    int idx;
    int dirfd;
    int fd; /* the active (last) segment, read-write */
    seg *segs;
    size_t nsegs, segcap;
    uint64_t end;             /* next offset to assign */
    uint64_t size;            /* bytes of complete records in the active segment */
    _Atomic uint64_t pub_end; /* end, for readers asking "anything new?" without the mutex */
    uint64_t synced;          /* offsets below this are durable (journal or own files) */
    uint64_t file_synced;     /* offsets below this are fsynced in the partition's files */
    uint64_t synced_size;     /* bytes of the active segment fsynced */
    uint64_t jrec, jbyte;     /* batch: records below jrec (bytes of the active segment below
                               * jbyte) are in the journal or fsynced in the partition */
    bool syncing;             /* a leader is in fsync outside the mutex, on fd */
    int pins;                 /* other uses of fd outside the mutex (the journal's read-back,
                               * writeback starts): a roll waits for them */
    int sync_err;             /* the unsynced tail could not be fsynced; 0 when healthy */
    int err_rc;               /* the last fsync error, for waiters below err_upto */
    uint64_t err_upto;        /* offsets below this were in a failed fsync */
    bool tail_dirty;          /* a failed write left bytes past size that ftruncate kept */
    bool extend_failed;       /* the active segment could not be sized ahead (said once) */
    onr_buf stage;            /* framed records appended past end, not yet written: under
                               * batch until a round writes them, under the other policies
                               * while their append does; reused */
    uint64_t staged;          /* the records in stage: offsets [end, end + staged) */
    elog_waiter *waiters;     /* elog_notify's, for the sync threads */
    bool queued;              /* in the sync queue, or about to be */
    struct elog_stats st;     /* counters; bytes and segments are computed */
} part;

struct elog {
    elog_opts o;                /* defaults filled in */
    size_t stage_max;           /* a partition's stage, at most (STAGE_TOTAL) */
    char id[ELOG_ID_CHARS + 1]; /* from elog.meta */
    int lockfd;                 /* LOCK_NAME, locked */
    int dirfd;
    char *dir;
    part *parts;
    int np; /* partitions fully opened (for cleanup on a failed open) */
    /* elog_set_readable's; changed with every partition's mutex held */
    void (*readable)(void *ctx, int partition);
    void *readable_ctx;
    pthread_t bg;
    bool bg_running;
    bool stop;
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;
    /* The sync threads and their queue: partitions with waiters, each at most once. */
    pthread_t *syncers;
    int nsyncers;
    pthread_mutex_t sq_mu;
    pthread_cond_t sq_cv;
    int *sq;
    int sq_head, sq_n;
    bool sq_stop;
    /* batch: the sync thread waits for commit_interval_ms to pass since the last round began
     * (pacing), unless jpending, the bytes appended since then, reaches ELOG_EARLY_BYTES */
    bool sq_pacing;
    int64_t jround_ns;
    _Atomic uint64_t jpending;
    /* The commit journal, under batch (docs/operations.md, "The commit journal"): each round
     * of the sync thread copies the partitions' new records to it, and one fsync of it makes
     * the appends of every partition durable.
     * A segment past journal_bytes is retired: once each partition's files are fsynced past
     * its records, it is deleted. */
    bool jon;
    int jdirfd;
    uint64_t jnext;        /* the number of the next journal segment */
    pthread_mutex_t j_mu;  /* jold_fd, jroll_end and jst, which other threads read */
    struct elog_stats jst; /* journal fsyncs */
    /* the sync thread's own (it alone writes the journal) */
    int jfd;             /* the active segment */
    uint64_t jseq;       /* its number: its file name */
    uint64_t jsize;      /* bytes written to it */
    onr_buf jbuf;        /* a round's entries, staged for one write */
    uint64_t *jsnap;     /* per partition: the end its round's entry reached */
    uint64_t *jroll_end; /* per partition: jrec when the retired segment was retired */
    uint64_t *jbg_end;   /* the background thread's copy of jroll_end */
    int jold_fd;         /* the retired segment, until the partitions are fsynced */
    uint64_t jold_seq;
    uint64_t jahead;            /* bytes of the active segment written before it was (a spare) */
    _Atomic uint64_t jsize_pub; /* jsize, for the background thread */
    /* the spare (under j_mu): its size, 0 when there is none */
    uint64_t jspare_bytes;
    bool jprewrite_failed; /* background thread's: writing a spare failed; not tried again */
    bool jfailed;          /* a write or fsync of the active segment failed: it must be retired */
    bool jold_bad;         /* the retired segment is that one: appends are acknowledged by partition
                            * fsyncs until it is deleted (under j_mu) */
};

struct elog_reader {
    part *p;
    int fd;
    uint64_t seg_base;
    uint64_t next;    /* offset of the record at buf[bpos] */
    uint64_t skip_to; /* records below this are read (to find the boundary) and dropped */
    uint64_t fpos;    /* file position of buf[0] */
    uint64_t dropped; /* bytes of fd dropped from the page cache (DROP_STEP) */
    unsigned char *buf;
    size_t blen, bpos, cap;
};

static const uint64_t fsync_bounds_us[ELOG_FSYNC_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000, UINT64_MAX,
};

/* ---- small helpers */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ns_to_ts(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    return ts;
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* CRC32C (Castagnoli) of the 4 length bytes followed by the payload. ISA-L's crc32_iscsi
 * leaves the customary pre- and post-inversion to the caller. */
static uint32_t frame_crc(const unsigned char *lenbytes, const void *payload, size_t len)
{
    unsigned int c = crc32_iscsi((unsigned char *)lenbytes, 4, 0xffffffffu);
    c = crc32_iscsi((unsigned char *)payload, (int)len, c);
    return c ^ 0xffffffffu;
}

/* True when the frame at h (header + len payload bytes, all present) is intact. */
static bool frame_ok(const unsigned char *h)
{
    return frame_crc(h, h + HDR, get_le32(h)) == get_le32(h + 4);
}

static void seg_name(char out[SEG_NAME_LEN + 1], uint64_t base)
{
    snprintf(out, SEG_NAME_LEN + 1, "%020llu.log", (unsigned long long)base);
}

/* "<20 digits><suffix>", as segment and journal files are named. */
static bool parse_numbered_name(const char *s, const char *suffix, uint64_t *base)
{
    uint64_t v = 0;

    if (strlen(s) != 20 + strlen(suffix) || strcmp(s + 20, suffix) != 0)
        return false;
    for (int i = 0; i < 20; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *base = v;
    return true;
}

static bool parse_seg_name(const char *s, uint64_t *base)
{
    return parse_numbered_name(s, ".log", base);
}

static void say(elog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(elog *l, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!l->o.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    l->o.log(l->o.log_ctx, msg);
}

static int fail_msg(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_msg(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- I/O through the injectable hooks */

static ssize_t io_pwrite(elog *l, int fd, const void *buf, size_t len, uint64_t off)
{
    if (l->o.io.pwrite)
        return l->o.io.pwrite(l->o.io.ctx, fd, buf, len, off);
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : n;
}

static int io_fsync(elog *l, int fd)
{
    if (l->o.io.fsync)
        return l->o.io.fsync(l->o.io.ctx, fd);
    return fsync(fd) ? -errno : 0;
}

static int write_all(elog *l, int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = io_pwrite(l, fd, p, len, off);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Reads exactly len bytes at off (the caller knows they exist): 0, -EIO on a short file. */
static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Counts a segment or journal fsync that took ns. The lock over st held. */
static void count_fsync(struct elog_stats *st, int rc, int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    int b = 0;

    if (rc < 0) {
        st->fsync_errors++;
        return;
    }
    while (us > fsync_bounds_us[b])
        b++;
    st->fsyncs++;
    st->fsync_us_sum += us;
    st->fsync_hist[b]++;
}

static void note_fsync(part *p, int rc, int64_t ns)
{
    count_fsync(&p->st, rc, ns);
}

static int timed_fsync(elog *l, int fd, int64_t *ns)
{
    int64_t t0 = mono_ns();
    int rc = io_fsync(l, fd);
    *ns = mono_ns() - t0;
    return rc;
}

/* fdatasync(2), for the journal: a reused segment changes no metadata that reading it back
 * needs, so no inode write. Tests' fsync hook stands in for it. */
static int timed_fdatasync(elog *l, int fd, int64_t *ns)
{
    int64_t t0 = mono_ns();
    int rc = l->o.io.fsync ? l->o.io.fsync(l->o.io.ctx, fd) : fdatasync(fd) ? -errno : 0;
    *ns = mono_ns() - t0;
    return rc;
}

/* ---- options */

int elog_fsync_parse(const char *s, elog_fsync *out)
{
    if (strcmp(s, "always") == 0)
        *out = ELOG_FSYNC_ALWAYS;
    else if (strcmp(s, "batch") == 0)
        *out = ELOG_FSYNC_BATCH;
    else if (strcmp(s, "everysec") == 0)
        *out = ELOG_FSYNC_EVERYSEC;
    else
        return ONR_E_INVALID;
    return 0;
}

const char *elog_fsync_name(elog_fsync f)
{
    switch (f) {
    case ELOG_FSYNC_ALWAYS:
        return "always";
    case ELOG_FSYNC_BATCH:
        return "batch";
    case ELOG_FSYNC_EVERYSEC:
        return "everysec";
    }
    return "?";
}

static int fill_opts(elog *l, const elog_opts *o, char *err, size_t errlen)
{
    if (o)
        l->o = *o;
    elog_opts *x = &l->o;
    if (!x->partitions)
        x->partitions = 16;
    if (!x->journal_bytes)
        x->journal_bytes = 64u << 20;
    if (!x->segment_bytes)
        x->segment_bytes = 64u << 20;
    if (!x->max_record)
        x->max_record = 1u << 20;
    if (x->partitions < 1 || x->partitions > MAX_PARTITIONS)
        return fail_msg(err, errlen, ONR_E_INVALID, "elog: partitions must be 1..%d, not %d",
                        MAX_PARTITIONS, x->partitions);
    if (x->fsync != ELOG_FSYNC_ALWAYS && x->fsync != ELOG_FSYNC_BATCH &&
        x->fsync != ELOG_FSYNC_EVERYSEC)
        return fail_msg(err, errlen, ONR_E_INVALID, "elog: unknown fsync policy %d", (int)x->fsync);
    if (!x->sync_threads)
        x->sync_threads = 2;
    if (!x->commit_interval_ms)
        x->commit_interval_ms = ELOG_COMMIT_INTERVAL_MS;
    if (x->commit_interval_ms > 10 * 1000)
        return fail_msg(err, errlen, ONR_E_INVALID,
                        "elog: commit_interval_ms must be at most 10000, not %lld",
                        (long long)x->commit_interval_ms);
    if (x->sync_threads < 0 || x->sync_threads > 64)
        return fail_msg(err, errlen, ONR_E_INVALID, "elog: sync_threads must be 1..64, not %d",
                        x->sync_threads);
    if (x->max_record > INT32_MAX || x->segment_bytes < x->max_record + HDR)
        return fail_msg(err, errlen, ONR_E_INVALID,
                        "elog: a segment (%zu bytes) must hold the largest record (%zu bytes)",
                        x->segment_bytes, x->max_record);
    if (x->segment_bytes > UINT32_MAX)
        return fail_msg(err, errlen, ONR_E_INVALID, "elog: segment_bytes must be at most %u",
                        (unsigned)UINT32_MAX);
    l->stage_max = ONR_MAX((size_t)STAGE_MIN, (size_t)STAGE_TOTAL / (size_t)x->partitions);
    return 0;
}

/* ---- recovery */

typedef struct scan_res {
    uint64_t count;     /* whole, intact records */
    uint64_t valid_end; /* byte just past the last of them */
    const char *why;    /* why the scan stopped before the end of the file, or NULL */
} scan_res;

/* Makes [pos, pos + need) of the file available in b, reading from pos onwards. */
static int scan_window(int fd, onr_buf *b, uint64_t *wstart, uint64_t *wlen, uint64_t pos,
                       uint64_t need, uint64_t size, size_t chunk)
{
    if (pos >= *wstart && pos + need <= *wstart + *wlen)
        return 0;
    uint64_t want = ONR_MIN(ONR_MAX((uint64_t)chunk, need), size - pos);
    onr_buf_clear(b);
    onr_buf_reserve(b, (size_t)want);
    int rc = read_full(fd, b->data, (size_t)want, pos);
    if (rc < 0)
        return rc;
    *wstart = pos;
    *wlen = want;
    return 0;
}

/*
 * Walks the records of a segment of size bytes. With check_crc, every payload is read and
 * checked (the last segment); without, only the chain of lengths is followed (sealed
 * segments, which were fsynced before their successor existed). Stops at the first record that
 * is short or damaged.
 */
static int scan_segment(int fd, uint64_t size, bool check_crc, onr_buf *b, scan_res *r)
{
    uint64_t pos = 0, wstart = 0, wlen = 0; /* b holds the file's [wstart, wstart + wlen) */
    size_t chunk = check_crc ? SCAN_CHUNK : WALK_CHUNK;
    const unsigned char *h;
    int rc;

    r->count = 0;
    r->why = NULL;
    while (pos < size) {
        if (size - pos < HDR) {
            r->why = "a short record header";
            break;
        }
        rc = scan_window(fd, b, &wstart, &wlen, pos, HDR, size, chunk);
        if (rc < 0)
            return rc;
        h = (const unsigned char *)b->data + (pos - wstart);
        uint64_t len = get_le32(h);
        if (len > size - pos - HDR) {
            r->why = "a record running past the end of the file";
            break;
        }
        if (check_crc) {
            rc = scan_window(fd, b, &wstart, &wlen, pos, HDR + len, size, chunk);
            if (rc < 0)
                return rc;
            h = (const unsigned char *)b->data + (pos - wstart);
            if (!frame_ok(h)) {
                r->why = "a CRC mismatch";
                break;
            }
        }
        pos += HDR + len;
        r->count++;
    }
    r->valid_end = pos;
    return 0;
}

static int cmp_seg(const void *a, const void *b)
{
    uint64_t x = ((const seg *)a)->base, y = ((const seg *)b)->base;
    return x < y ? -1 : x > y;
}

static void seg_push(part *p, uint64_t base, uint64_t bytes)
{
    if (p->nsegs == p->segcap) {
        p->segcap = p->segcap ? 2 * p->segcap : 8;
        p->segs = onr_realloc(p->segs, p->segcap * sizeof(*p->segs));
    }
    p->segs[p->nsegs++] = (seg){.base = base, .bytes = bytes};
}

static int list_segments(part *p)
{
    int dfd = dup(p->dirfd);
    DIR *d;
    struct dirent *e;

    if (dfd < 0)
        return -errno;
    d = fdopendir(dfd);
    if (!d) {
        int rc = -errno;
        close(dfd);
        return rc;
    }
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        uint64_t base;
        if (parse_seg_name(e->d_name, &base))
            seg_push(p, base, 0);
    }
    closedir(d);
    if (p->nsegs > 1)
        qsort(p->segs, p->nsegs, sizeof(*p->segs), cmp_seg);
    return 0;
}

/*
 * The active segment is kept at segment_bytes with ftruncate, a sparse tail that costs no disk:
 * an append within the file's size rewrites no size and zeroes no page beyond it, and took
 * half the CPU of one that extends the file (1.5 s against 3.0 s of system time per GiB in
 * 4 KB appends on this machine). The file is cut back to its records when the segment is
 * sealed and at close; after a crash, recovery cuts the zeros silently.
 */
static void extend_active(elog *l, part *p)
{
    /* never below its records: a segment written under a larger segment_bytes (other limits
     * at the last start) keeps them all, and the next append rolls it */
    uint64_t size = ONR_MAX((uint64_t)l->o.segment_bytes, p->size);
    if (ftruncate(p->fd, (off_t)size) < 0 && !p->extend_failed) {
        p->extend_failed = true; /* appends extend the file as they go; said once */
        say(l, "elog: p%03d: cannot size the active segment ahead: %s", p->idx, strerror(errno));
    }
}

/* Where the data in [from, size) of fd ends: the end of the last extent that is not a hole
 * and holds a byte other than zero (from when there is none: only zeros, the size given
 * ahead); or -errno. Reads only what is not a hole. */
static int64_t nonzero_end(int fd, uint64_t from, uint64_t size)
{
    unsigned char buf[64 * 1024];
    uint64_t last = from;
    while (from < size) {
        off_t data = lseek(fd, (off_t)from, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? (int64_t)last : -errno;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        uint64_t end = ONR_MIN((uint64_t)hole, size);
        for (uint64_t at = (uint64_t)data; at < end;) {
            size_t n = (size_t)ONR_MIN((uint64_t)sizeof(buf), end - at);
            int rc = read_full(fd, buf, n, at);
            if (rc < 0)
                return rc;
            for (size_t k = 0; k < n && last < end; k++)
                if (buf[k])
                    last = end;
            at += n;
        }
        from = end;
    }
    return (int64_t)last;
}

static int create_segment(elog *l, part *p, uint64_t base, int *fd_out)
{
    char name[SEG_NAME_LEN + 1];
    int fd, rc;

    seg_name(name, base);
    fd = openat(p->dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    /* the new name must survive a crash before anything is acknowledged from it */
    rc = io_fsync(l, p->dirfd);
    if (rc < 0) {
        close(fd);
        unlinkat(p->dirfd, name, 0);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/* Removes segment i, an empty file left by a roll that did not finish: it holds nothing. */
static int drop_empty(elog *l, part *p, size_t i, char *err, size_t errlen)
{
    char name[SEG_NAME_LEN + 1];

    seg_name(name, p->segs[i].base);
    if (unlinkat(p->dirfd, name, 0) < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/p%03d/%s: cannot remove: %s", l->dir, p->idx,
                        name, strerror(errno));
    say(l, "elog: p%03d/%s: removed an empty segment left by an unfinished roll", p->idx, name);
    memmove(&p->segs[i], &p->segs[i + 1], (p->nsegs - i - 1) * sizeof(*p->segs));
    p->nsegs--;
    return 0;
}

static int part_recover(elog *l, part *p, char *err, size_t errlen)
{
    char name[SEG_NAME_LEN + 1];
    onr_buf b = {0};
    scan_res r;
    struct stat sb;
    int rc = 0, fd = -1;

    rc = list_segments(p);
    if (rc < 0)
        return fail_msg(err, errlen, rc, "elog: %s/p%03d: cannot list segments: %s", l->dir, p->idx,
                        strerror(-rc));
    if (p->nsegs == 0) {
        rc = create_segment(l, p, 0, &p->fd);
        if (rc < 0)
            return fail_msg(err, errlen, rc, "elog: %s/p%03d: cannot create a segment: %s", l->dir,
                            p->idx, strerror(-rc));
        seg_push(p, 0, 0);
        extend_active(l, p);
        return 0;
    }
    for (size_t i = 0; i < p->nsegs; i++) {
        seg_name(name, p->segs[i].base);
        if (fstatat(p->dirfd, name, &sb, 0) < 0)
            return fail_msg(err, errlen, -errno, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name,
                            strerror(errno));
        p->segs[i].bytes = (uint64_t)sb.st_size;
    }
    for (size_t i = 0; i + 1 < p->nsegs;) {
        if (p->segs[i].bytes > 0) {
            i++;
            continue;
        }
        rc = drop_empty(l, p, i, err, errlen);
        if (rc < 0)
            return rc;
    }

    /* Sealed segments were fsynced before their successor was created, so each must end on
     * a record boundary and hold exactly the records up to its successor's first offset.
     * Anything else is damage, not a torn tail, and cutting it would lose every later
     * segment: refuse to open. */
    for (size_t i = 0; i + 1 < p->nsegs; i++) {
        seg_name(name, p->segs[i].base);
        fd = openat(p->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = fail_msg(err, errlen, -errno, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name,
                          strerror(errno));
            goto out;
        }
        rc = scan_segment(fd, p->segs[i].bytes, false, &b, &r);
        close(fd);
        fd = -1;
        if (rc < 0) {
            fail_msg(err, errlen, rc, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name, strerror(-rc));
            goto out;
        }
        if (!r.why && p->segs[i].base + r.count == p->segs[i + 1].base)
            continue;
        if (i + 2 == p->nsegs && p->segs[i + 1].bytes == 0) {
            /* A roll failed after creating its file and could not remove it, and this
             * segment went on being written: it is the real tail, recovered below. */
            rc = drop_empty(l, p, i + 1, err, errlen);
            if (rc < 0)
                goto out;
            break;
        }
        rc = ONR_E_INVALID;
        fail_msg(err, errlen, rc,
                 "elog: %s/p%03d/%s: sealed segment is damaged (%s at byte %llu: %llu records "
                 "where the next segment's name implies %llu); restore it or remove the "
                 "partition",
                 l->dir, p->idx, name, r.why ? r.why : "records missing or extra",
                 (unsigned long long)r.valid_end, (unsigned long long)r.count,
                 (unsigned long long)(p->segs[i + 1].base - p->segs[i].base));
        goto out;
    }

    /* The last segment: every record CRC-checked, cut at the first short or bad one. */
    seg *last = &p->segs[p->nsegs - 1];
    seg_name(name, last->base);
    fd = openat(p->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        rc = fail_msg(err, errlen, -errno, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name,
                      strerror(errno));
        goto out;
    }
    rc = scan_segment(fd, (uint64_t)sb.st_size, true, &b, &r);
    if (rc < 0) {
        fail_msg(err, errlen, rc, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name, strerror(-rc));
        goto out;
    }
    if (r.valid_end < (uint64_t)sb.st_size) {
        /* zeros after the records are the size the segment was given ahead, not damage: only
         * a cut up to the end of the last data counts */
        int64_t data_end = nonzero_end(fd, r.valid_end, (uint64_t)sb.st_size);
        if (data_end < 0) {
            rc = fail_msg(err, errlen, (int)data_end, "elog: %s/p%03d/%s: %s", l->dir, p->idx, name,
                          strerror((int)-data_end));
            goto out;
        }
        if (ftruncate(fd, (off_t)r.valid_end) < 0) {
            rc = fail_msg(err, errlen, -errno, "elog: %s/p%03d/%s: cannot truncate: %s", l->dir,
                          p->idx, name, strerror(errno));
            goto out;
        }
        uint64_t cut = (uint64_t)data_end - r.valid_end;
        if (cut) {
            p->st.truncated_bytes += cut;
            say(l,
                "elog: p%03d/%s: truncated %llu bytes of torn or corrupt tail at byte %llu (%s); "
                "the %llu records before it are kept",
                p->idx, name, (unsigned long long)cut, (unsigned long long)r.valid_end, r.why,
                (unsigned long long)r.count);
        }
    }
    /* What survived a process crash may be only in the page cache: make it durable now, so
     * that everything below end counts as synced from here on. */
    rc = io_fsync(l, fd);
    if (rc < 0) {
        fail_msg(err, errlen, rc, "elog: %s/p%03d/%s: fsync: %s", l->dir, p->idx, name,
                 strerror(-rc));
        goto out;
    }
    p->fd = fd;
    fd = -1;
    p->size = r.valid_end;
    p->end = last->base + r.count;
    last->bytes = 0; /* the active segment's size lives in p->size */
    extend_active(l, p);
out:
    if (fd >= 0)
        close(fd);
    onr_buf_free(&b);
    return rc;
}

/* Opens the log's subdirectory name into *fd, creating it (and fsyncing the log's directory)
 * when it is missing. */
static int open_subdir(elog *l, const char *name, int *fd, char *err, size_t errlen)
{
    if (mkdirat(l->dirfd, name, 0755) == 0) {
        int rc = io_fsync(l, l->dirfd);
        if (rc < 0)
            return fail_msg(err, errlen, rc, "elog: %s: fsync: %s", l->dir, strerror(-rc));
    } else if (errno != EEXIST) {
        return fail_msg(err, errlen, -errno, "elog: %s/%s: mkdir: %s", l->dir, name,
                        strerror(errno));
    }
    *fd = openat(l->dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, name, strerror(errno));
    return 0;
}

static int part_init(elog *l, part *p, int idx, char *err, size_t errlen)
{
    char name[16];
    pthread_condattr_t ca;
    int rc;

    p->idx = idx;
    p->fd = -1;
    p->dirfd = -1;
    snprintf(name, sizeof name, "p%03d", idx);
    rc = open_subdir(l, name, &p->dirfd, err, errlen);
    if (rc < 0)
        return rc;
    rc = part_recover(l, p, err, errlen);
    if (rc < 0)
        return rc;
    p->synced = p->file_synced = p->jrec = p->end;
    p->synced_size = p->jbyte = p->size;
    atomic_store(&p->pub_end, p->end);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

static void part_free(part *p, bool locks)
{
    if (p->fd >= 0)
        close(p->fd);
    if (p->dirfd >= 0)
        close(p->dirfd);
    onr_free(p->segs);
    onr_buf_free(&p->stage);
    if (locks) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
}

/*
 * Takes the log for this process: an exclusive flock(2) on LOCK_NAME, held until elog_close
 * (the kernel drops it when the process dies, however it dies). Recovery truncates tails and
 * appends move the ends, so a second process on the same files would destroy records that
 * the first acknowledged: it is refused before it reads anything. The file holds the pid of
 * the holder, for the message.
 */
static int lock_dir(elog *l, char *err, size_t errlen)
{
    l->lockfd = openat(l->dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (l->lockfd < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, LOCK_NAME, strerror(errno));
    if (flock(l->lockfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e != EWOULDBLOCK)
            return fail_msg(err, errlen, -e, "elog: %s/%s: flock: %s", l->dir, LOCK_NAME,
                            strerror(e));
        char pid[24] = "";
        ssize_t n = pread(l->lockfd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        return fail_msg(err, errlen, -EBUSY,
                        "elog: %s is in use by another process%s%s%s; one log has one server "
                        "at a time",
                        l->dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
    }
    char text[24];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    errno = 0;
    if (ftruncate(l->lockfd, 0) < 0 || pwrite(l->lockfd, text, (size_t)n, 0) != n)
        say(l, "elog: %s/%s: cannot write the pid into it: %s", l->dir, LOCK_NAME,
            strerror(errno ? errno : EIO));
    return 0;
}

/*
 * elog.meta: the magic, the partition count and the log's id. The partition count is fixed
 * at creation: users are placed by hash mod P, so reopening with another P would silently
 * move them. The id is drawn at creation, so that files describing this log's offsets
 * (checkpoints, the ingest state) can tell it from a log made again in its place. A meta
 * written before ids existed gets one at open (*exists stays false: it is written again).
 */
static int check_meta(elog *l, bool *exists, char *err, size_t errlen)
{
    char text[128], id[ELOG_ID_CHARS + 2] = "";
    int fd = openat(l->dirfd, META_NAME, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    int parts = 0, got;

    *exists = false;
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, META_NAME, strerror(errno));
    }
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, META_NAME, strerror(errno));
    text[n] = 0;
    got = sscanf(text, META_MAGIC "\npartitions %d\nid %33[0-9a-f]", &parts, id);
    if (got < 1 || parts < 1 || (got == 2 && strlen(id) != ELOG_ID_CHARS) ||
        (got == 1 && strstr(text, "\nid")))
        return fail_msg(err, errlen, ONR_E_PARSE, "elog: %s/%s: not an onramp event log", l->dir,
                        META_NAME);
    if (parts != l->o.partitions)
        return fail_msg(err, errlen, ONR_E_INVALID,
                        "elog: %s has %d partitions but was opened with %d; users are placed "
                        "by partition, so the count cannot change",
                        l->dir, parts, l->o.partitions);
    if (got == 2)
        memcpy(l->id, id, ELOG_ID_CHARS + 1);
    *exists = got == 2;
    return 0;
}

/* Writes elog.meta (atomically), drawing the log's id when it has none. */
static int write_meta(elog *l, char *err, size_t errlen)
{
    char text[128];
    if (!l->id[0])
        onr_random_hex(l->id, ELOG_ID_CHARS / 2);
    int n =
        snprintf(text, sizeof text, META_MAGIC "\npartitions %d\nid %s\n", l->o.partitions, l->id);
    int fd = openat(l->dirfd, META_NAME ".tmp", O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    int rc;

    if (fd < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, META_NAME, strerror(errno));
    rc = write_all(l, fd, text, (size_t)n, 0);
    if (rc == 0)
        rc = io_fsync(l, fd);
    close(fd);
    if (rc == 0 && renameat(l->dirfd, META_NAME ".tmp", l->dirfd, META_NAME) < 0)
        rc = -errno;
    if (rc == 0)
        rc = io_fsync(l, l->dirfd);
    if (rc < 0)
        return fail_msg(err, errlen, rc, "elog: %s/%s: %s", l->dir, META_NAME, strerror(-rc));
    return 0;
}

/* ---- durability */

/* Cuts what a failed write left past p's records (tail_dirty), before anything else is written
 * or rolled. Partition mutex held. */
static int cut_dirty_tail(elog *l, part *p)
{
    if (!p->tail_dirty)
        return 0;
    if (ftruncate(p->fd, (off_t)p->size) < 0)
        return -errno;
    p->tail_dirty = false;
    extend_active(l, p);
    return 0;
}

/*
 * Writes the n framed records in b at the end of p's active segment and publishes them:
 * readers see them on return. Partition mutex held. On failure nothing of them remains in the
 * file: what landed is cut, since a sealed segment must end exactly at its last record and a
 * leftover would read as a torn tail at the next start (if even the cut fails, the next write
 * or roll retries it first).
 */
static int write_frames(elog *l, part *p, const onr_buf *b, uint64_t n)
{
    int rc = cut_dirty_tail(l, p);
    if (rc < 0)
        return rc;
    rc = write_all(l, p->fd, b->data, b->len, p->size);
    if (rc < 0) {
        p->st.write_errors++;
        if (ftruncate(p->fd, (off_t)p->size) < 0)
            p->tail_dirty = true;
        else
            extend_active(l, p);
        return rc;
    }
    p->end += n;
    p->size += b->len;
    atomic_store_explicit(&p->pub_end, p->end, memory_order_release);
    if (l->readable)
        l->readable(l->readable_ctx, p->idx);
    return 0;
}

/* Writes p's stage (batch) with write_frames. On failure the records stay staged for a later
 * try, and the caller fails their waiters (sync_failed). Partition mutex held. */
static int put_stage(elog *l, part *p)
{
    if (p->staged == 0)
        return 0;
    uint64_t n = p->staged;
    p->staged = 0; /* the records move from the stage to the file */
    int rc = write_frames(l, p, &p->stage, n);
    if (rc < 0)
        p->staged = n;
    else
        onr_buf_clear(&p->stage);
    return rc;
}

/* The offset after the partition's last record, staged or written. Partition mutex held. */
static uint64_t next_offset(const part *p)
{
    return p->end + p->staged;
}

static void sync_failed(elog *l, part *p, int rc, uint64_t upto)
{
    if (!p->sync_err)
        say(l, "elog: p%03d: fsync failed: %s; appends retry it and fail until it succeeds", p->idx,
            strerror(-rc));
    p->sync_err = rc;
    p->err_rc = rc;
    p->err_upto = ONR_MAX(p->err_upto, upto);
}

/*
 * After a failed fsync the kernel may have dropped the dirty state of those pages, so a later
 * fsync can succeed without writing them. Rewriting the unsynced tail from the page cache
 * re-dirties it; each record is CRC-checked first so that lost pages are not made durable as
 * if they were data. Partition mutex held, no sync running. Returns 0 when the tail is synced.
 */
static int heal(elog *l, part *p)
{
    uint64_t pos = p->synced_size;
    onr_buf b = {0};
    int64_t ns;
    int rc = put_stage(l, p);

    while (pos < p->size && rc == 0) {
        unsigned char h[HDR];
        rc = read_full(p->fd, h, HDR, pos);
        if (rc < 0)
            break;
        uint64_t len = get_le32(h);
        if (len > p->size - pos - HDR) {
            rc = -EIO;
            break;
        }
        onr_buf_clear(&b);
        onr_buf_reserve(&b, HDR + (size_t)len);
        memcpy(b.data, h, HDR);
        rc = read_full(p->fd, b.data + HDR, (size_t)len, pos + HDR);
        if (rc < 0)
            break;
        if (!frame_ok((const unsigned char *)b.data)) {
            rc = -EIO; /* the page cache lost it: only a restart's recovery can cut it */
            break;
        }
        rc = write_all(l, p->fd, b.data, HDR + (size_t)len, pos);
        pos += HDR + len;
    }
    onr_buf_free(&b);
    if (rc == 0) {
        rc = timed_fsync(l, p->fd, &ns);
        note_fsync(p, rc, ns);
    }
    if (rc < 0) {
        sync_failed(l, p, rc, next_offset(p));
    } else {
        if (p->sync_err)
            say(l, "elog: p%03d: fsync succeeds again", p->idx);
        p->sync_err = 0;
        p->synced = p->file_synced = p->jrec = p->end;
        p->synced_size = p->jbyte = p->size;
    }
    pthread_cond_broadcast(&p->cv);
    return rc;
}

/* Fsyncs everything written so far on behalf of all waiters, with the mutex released during
 * the fsync so that appends go on. Partition mutex held, no sync running. */
static void lead_sync(elog *l, part *p)
{
    int64_t ns;
    int rc;

    if (p->sync_err) {
        heal(l, p);
        return;
    }
    rc = put_stage(l, p);
    if (rc < 0) {
        sync_failed(l, p, rc, next_offset(p));
        pthread_cond_broadcast(&p->cv);
        return;
    }
    uint64_t target = p->end, tsize = p->size;
    int fd = p->fd;
    p->syncing = true;
    pthread_mutex_unlock(&p->mu);
    rc = timed_fsync(l, fd, &ns);
    pthread_mutex_lock(&p->mu);
    p->syncing = false;
    note_fsync(p, rc, ns);
    if (rc < 0) {
        sync_failed(l, p, rc, target);
    } else if (target > p->file_synced) {
        /* fd is still the active segment: a roll waits for syncing to clear */
        p->file_synced = target;
        p->synced = ONR_MAX(p->synced, target);
        p->synced_size = tsize;
        if (target > p->jrec) {
            p->jrec = target;
            p->jbyte = tsize;
        }
    }
    pthread_cond_broadcast(&p->cv);
}

static void sq_push(elog *l, int idx);

/* Waits until offsets below my_end are durable. Under batch the journal's sync thread is asked
 * for a round; under always an fsync is led when nobody else is in one. Partition mutex held. */
static int wait_durable(elog *l, part *p, uint64_t my_end)
{
    for (;;) {
        if (p->synced >= my_end)
            return 0;
        if (my_end <= p->err_upto)
            return p->err_rc;
        if (l->jon) {
            if (!p->queued) {
                p->queued = true;
                sq_push(l, p->idx);
            }
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        if (p->syncing) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        lead_sync(l, p);
    }
}

/* Seals the active segment and starts one at the next offset. The old one is fsynced first:
 * recovery trusts sealed segments to be whole. Partition mutex held, no sync running. */
static int roll(elog *l, part *p)
{
    int64_t ns;
    int rc, fd = -1;

    if (p->sync_err)
        return heal(l, p);
    rc = put_stage(l, p);
    if (rc < 0) {
        sync_failed(l, p, rc, next_offset(p));
        pthread_cond_broadcast(&p->cv);
        return rc;
    }
    /* cut to its records: a sealed segment ends at its last one (and the cut must be on
     * disk before the next segment is: fsynced whether or not the records were) */
    if (ftruncate(p->fd, (off_t)p->size) < 0)
        return -errno;
    rc = timed_fsync(l, p->fd, &ns);
    note_fsync(p, rc, ns);
    if (rc < 0) {
        sync_failed(l, p, rc, p->end);
        pthread_cond_broadcast(&p->cv);
        return rc;
    }
    p->synced = p->file_synced = p->end;
    p->synced_size = p->size;
    pthread_cond_broadcast(&p->cv);
    rc = create_segment(l, p, p->end, &fd);
    if (rc < 0) {
        say(l, "elog: p%03d: cannot start a segment at offset %llu: %s", p->idx,
            (unsigned long long)p->end, strerror(-rc));
        return rc;
    }
    close(p->fd);
    p->fd = fd;
    p->segs[p->nsegs - 1].bytes = p->size;
    seg_push(p, p->end, 0);
    p->size = 0;
    p->synced_size = 0;
    p->jrec = p->end; /* the sealed segment was fsynced */
    p->jbyte = 0;
    extend_active(l, p);
    return 0;
}

/* ---- the commit journal (batch) */

static void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void journal_name(char out[JNAME_LEN + 1], uint64_t seq)
{
    snprintf(out, JNAME_LEN + 1, "%020llu.jnl", (unsigned long long)seq);
}

/* CRC32C of the segment's number and an entry's first 20 header bytes (its records carry
 * their own): an entry left in a reused segment from its last use never checks. */
static uint32_t journal_crc(uint64_t seq, const unsigned char *h)
{
    unsigned char s8[8];
    put_le64(s8, seq);
    unsigned int c = crc32_iscsi(s8, 8, 0xffffffffu);
    return crc32_iscsi((unsigned char *)h, JHDR - 4, c) ^ 0xffffffffu;
}

/*
 * Writes p's stage to its segment, and stages p's records that neither the journal nor an
 * fsync of the partition covers as one entry in the round's buffer: u32 data bytes, u32
 * partition, u64 first offset, u32 record count, u32 CRC32C of those 20 bytes, then the framed
 * records as the partition has them (each with its CRC): copied from the stage, and read back
 * from the page cache for any written before it (by an append that found the stage full). They
 * are all in the active segment: a roll fsyncs the segment it seals. Sets jsnap (the offset
 * the entry reaches). Sync thread.
 */
static int journal_stage(elog *l, part *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t first = p->jrec, from = p->jbyte, written = p->size;
    l->jsnap[p->idx] = p->sync_err ? p->synced : next_offset(p); /* a heal is the appenders' */
    if (next_offset(p) == first || p->sync_err) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    size_t at = l->jbuf.len, len = (size_t)(written - from + p->stage.len);
    onr_buf_reserve(&l->jbuf, JHDR + len);
    unsigned char *e = (unsigned char *)l->jbuf.data + at;
    if (p->staged)
        memcpy(e + JHDR + (written - from), p->stage.data, p->stage.len);
    int rc = put_stage(l, p);
    if (rc < 0) {
        sync_failed(l, p, rc, next_offset(p)); /* its waiters fail; the next append heals */
        l->jsnap[p->idx] = p->synced;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    uint64_t end = p->end, to = p->size;
    int fd = p->fd;
    p->pins++; /* keeps fd the active segment: a roll waits */
    pthread_mutex_unlock(&p->mu);

    put_le32(e, (uint32_t)len);
    put_le32(e + 4, (uint32_t)p->idx);
    put_le64(e + 8, first);
    put_le32(e + 16, (uint32_t)(end - first));
    put_le32(e + 20, journal_crc(l->jseq, e));
    if (written > from)
        rc = read_full(fd, e + JHDR, (size_t)(written - from), from);

    pthread_mutex_lock(&p->mu);
    p->pins--;
    if (rc == 0) {
        l->jbuf.len = at + JHDR + len;
        if (end > p->jrec) { /* a partition fsync meanwhile may have passed it */
            p->jrec = end;
            p->jbyte = to;
        }
    } else {
        sync_failed(l, p, rc, end); /* its waiters fail; the next append heals */
        l->jsnap[p->idx] = p->synced;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- appending */

/* Frames recs (total bytes framed) at the end of b. */
static void frame(onr_buf *b, const elog_rec *recs, size_t n, uint64_t total)
{
    onr_buf_reserve(b, (size_t)total);
    unsigned char *w = (unsigned char *)b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        put_le32(w, (uint32_t)recs[i].len);
        put_le32(w + 4, frame_crc(w, recs[i].data, recs[i].len));
        if (recs[i].len)
            memcpy(w + HDR, recs[i].data, recs[i].len);
        w += HDR + recs[i].len;
    }
    b->len += (size_t)total;
}

/* Under batch: frames the batch into p's stage, for the sync thread's next round to write
 * (put_stage), and has the partition served by it. Partition mutex held. */
static int stage(elog *l, part *p, const elog_rec *recs, size_t n, uint64_t total)
{
    if (p->staged && p->stage.len + total > l->stage_max) {
        int rc = put_stage(l, p);
        if (rc < 0) {
            sync_failed(l, p, rc, next_offset(p));
            pthread_cond_broadcast(&p->cv);
            return rc;
        }
    }
    frame(&p->stage, recs, n, total);
    p->staged += n;
    if (!p->queued) {
        p->queued = true;
        sq_push(l, p->idx);
    }
    return 0;
}

/* Writes and publishes a batch (under batch, stages it); with wait, also waits for the fsync
 * policy. */
static int append(elog *l, int partition, const elog_rec *recs, size_t n, uint64_t *first_offset,
                  uint64_t *end_offset, bool wait)
{
    uint64_t total = 0, first, my_end;
    part *p;
    int rc = 0;

    if (partition < 0 || partition >= l->o.partitions || n == 0)
        return ONR_E_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].len > l->o.max_record)
            return ONR_E_LIMIT;
        total += HDR + recs[i].len;
        if (total > l->o.segment_bytes)
            return ONR_E_LIMIT;
    }
    p = &l->parts[partition];

    pthread_mutex_lock(&p->mu);
    for (;;) {
        uint64_t size = p->size + p->stage.len;
        bool full = size > 0 && size + total > l->o.segment_bytes;
        if ((p->syncing && (p->sync_err || full)) || (p->pins && full)) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        rc = cut_dirty_tail(l, p);
        if (rc < 0)
            goto out;
        if (p->sync_err) {
            rc = heal(l, p);
        } else if (full) {
            rc = roll(l, p);
        } else {
            break;
        }
        if (rc < 0)
            goto out;
    }

    first = next_offset(p);
    if (l->jon) {
        rc = stage(l, p, recs, n, total);
        if (rc < 0)
            goto out;
    } else {
        /* one write per batch, through the reused stage: no allocation once warm */
        frame(&p->stage, recs, n, total);
        rc = write_frames(l, p, &p->stage, n);
        onr_buf_clear(&p->stage);
        if (rc < 0)
            goto out;
    }
    p->st.records += n;
    p->st.appended_bytes += total;
    uint64_t pending = l->jon ? atomic_fetch_add(&l->jpending, total) : ELOG_EARLY_BYTES;
    if (pending < ELOG_EARLY_BYTES && pending + total >= ELOG_EARLY_BYTES) {
        pthread_mutex_lock(&l->sq_mu); /* enough for a round: no more pacing */
        pthread_cond_signal(&l->sq_cv);
        pthread_mutex_unlock(&l->sq_mu);
    }
    my_end = next_offset(p);
    if (first_offset)
        *first_offset = first;
    if (end_offset)
        *end_offset = my_end;
    if (wait && l->o.fsync != ELOG_FSYNC_EVERYSEC)
        rc = wait_durable(l, p, my_end);
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int elog_append_batch(elog *l, int partition, const elog_rec *recs, size_t n,
                      uint64_t *first_offset)
{
    return append(l, partition, recs, n, first_offset, NULL, true);
}

int elog_write_batch(elog *l, int partition, const elog_rec *recs, size_t n, uint64_t *first_offset,
                     uint64_t *end_offset)
{
    return append(l, partition, recs, n, first_offset, end_offset, false);
}

int elog_wait(elog *l, int partition, uint64_t end_offset)
{
    if (partition < 0 || partition >= l->o.partitions)
        return ONR_E_INVALID;
    if (l->o.fsync == ELOG_FSYNC_EVERYSEC)
        return 0;
    part *p = &l->parts[partition];
    pthread_mutex_lock(&p->mu);
    int rc = wait_durable(l, p, end_offset);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int elog_append(elog *l, int partition, const void *rec, size_t len, uint64_t *offset)
{
    elog_rec r = {.data = rec, .len = len};
    return elog_append_batch(l, partition, &r, 1, offset);
}

void elog_set_readable(elog *l, void (*fn)(void *ctx, int partition), void *ctx)
{
    /* called under a partition's mutex: with them all held none is running the old one */
    for (int i = 0; i < l->o.partitions; i++)
        pthread_mutex_lock(&l->parts[i].mu);
    l->readable = fn;
    l->readable_ctx = ctx;
    for (int i = l->o.partitions - 1; i >= 0; i--)
        pthread_mutex_unlock(&l->parts[i].mu);
}

uint64_t elog_end_offset(elog *l, int partition)
{
    if (partition < 0 || partition >= l->o.partitions)
        return 0;
    return atomic_load_explicit(&l->parts[partition].pub_end, memory_order_acquire);
}

uint64_t elog_synced_offset(elog *l, int partition)
{
    uint64_t v;

    if (partition < 0 || partition >= l->o.partitions)
        return 0;
    part *p = &l->parts[partition];
    pthread_mutex_lock(&p->mu);
    v = p->synced;
    pthread_mutex_unlock(&p->mu);
    return v;
}

uint64_t elog_start_offset(elog *l, int partition)
{
    uint64_t v;

    if (partition < 0 || partition >= l->o.partitions)
        return 0;
    part *p = &l->parts[partition];
    pthread_mutex_lock(&p->mu);
    v = p->segs[0].base;
    pthread_mutex_unlock(&p->mu);
    return v;
}

size_t elog_max_record(const elog *l)
{
    return l->o.max_record;
}

size_t elog_max_batch(const elog *l)
{
    return l->o.segment_bytes;
}

const char *elog_id(const elog *l)
{
    return l->id;
}

int elog_partitions(const elog *l)
{
    return l->o.partitions;
}

/* ---- the background thread: everysec's fsyncs, and under batch the partitions' own, so
 * that a retired journal segment can go and no fsync has much to write */

/*
 * Under batch, once a second: starts the writeback of each partition's unsynced records
 * (sync_file_range, which does not wait and forces no commit), so that dirty data stays small
 * and later fsyncs have little to write; and when a journal segment is retired, fsyncs the
 * partitions past it and deletes it. The sync thread's rounds are left alone.
 */
static void journal_retire(elog *l, bool flush);

static void flush_behind_journal(elog *l)
{
    int P = l->o.partitions;
    bool retiring;

    pthread_mutex_lock(&l->j_mu);
    retiring = l->jold_fd >= 0;
    if (retiring)
        memcpy(l->jbg_end, l->jroll_end, (size_t)P * sizeof(*l->jbg_end));
    pthread_mutex_unlock(&l->j_mu);
    for (int i = 0; i < P; i++) {
        part *p = &l->parts[i];
        pthread_mutex_lock(&p->mu);
        if (p->syncing || p->sync_err) {
            /* a heal is the appenders' (or the sync thread's) to do */
        } else if (retiring && p->file_synced < l->jbg_end[i]) {
            lead_sync(l, p);
        } else if (p->file_synced < p->end) {
            int fd = p->fd;
            p->pins++; /* keeps fd open: a roll waits */
            pthread_mutex_unlock(&p->mu);
            sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            pthread_mutex_lock(&p->mu);
            p->pins--;
            pthread_cond_broadcast(&p->cv);
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (retiring)
        journal_retire(l, false);
}

/*
 * Makes the spare a whole journal_bytes of blocks written with zeros and fdatasynced, so that
 * the segments the sync thread writes need no block allocated nor size changed: once the log
 * is busy (the active segment has passed journal_bytes / 8; an idle log never writes one), or
 * when a segment retired early left a short spare. The spare is renamed away while it is
 * written, so that no roll takes it half done. A failure is logged once and the journal goes
 * on with growing segments. Background thread.
 */
static void journal_prewrite(elog *l)
{
    uint64_t want = l->o.journal_bytes, have;
    char *zeros = NULL;
    int fd = -1, rc = 0;

    if (l->jprewrite_failed)
        return;
    pthread_mutex_lock(&l->j_mu);
    have = l->jspare_bytes;
    bool busy = atomic_load(&l->jsize_pub) >= want / 8;
    if (have >= want || (have == 0 && !busy)) {
        pthread_mutex_unlock(&l->j_mu);
        return;
    }
    if (have && renameat(l->jdirfd, JOURNAL_SPARE, l->jdirfd, JOURNAL_SPARE_TMP) < 0)
        rc = -errno;
    l->jspare_bytes = 0;
    pthread_mutex_unlock(&l->j_mu);
    if (rc == 0) {
        fd = openat(l->jdirfd, JOURNAL_SPARE_TMP,
                    O_RDWR | O_CREAT | O_CLOEXEC | (have ? 0 : O_TRUNC), 0644);
        rc = fd < 0 ? -errno : 0;
        zeros = onr_calloc(1, PREWRITE_STEP);
    }
    /* a step at a time, each on its way to the disk before the next, so that the sync
     * thread's fsyncs do not queue behind 64 MiB of zeros */
    for (uint64_t at = have; rc == 0 && at < want; at += PREWRITE_STEP) {
        size_t n = (size_t)ONR_MIN((uint64_t)PREWRITE_STEP, want - at);
        rc = write_all(l, fd, zeros, n, at);
        if (rc == 0 && sync_file_range(fd, (off64_t)at, (off64_t)n,
                                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                           SYNC_FILE_RANGE_WAIT_AFTER) < 0)
            rc = -errno;
        pthread_mutex_lock(&l->bg_mu);
        bool stop = l->stop;
        pthread_mutex_unlock(&l->bg_mu);
        if (stop && rc == 0)
            rc = -ECANCELED;
    }
    if (rc == 0)
        rc = io_fsync(l, fd);
    if (rc == 0) {
        pthread_mutex_lock(&l->j_mu);
        if (renameat(l->jdirfd, JOURNAL_SPARE_TMP, l->jdirfd, JOURNAL_SPARE) < 0)
            rc = -errno;
        else
            l->jspare_bytes = want;
        pthread_mutex_unlock(&l->j_mu);
    }
    if (rc == 0)
        rc = io_fsync(l, l->jdirfd);
    if (fd >= 0)
        close(fd);
    onr_free(zeros);
    if (rc < 0 && rc != -ECANCELED) {
        say(l,
            "elog: journal/%s: cannot write a journal segment ahead: %s; journal segments grow "
            "as they are written instead",
            JOURNAL_SPARE_TMP, strerror(-rc));
        l->jprewrite_failed = true;
    }
    if (rc < 0)
        unlinkat(l->jdirfd, JOURNAL_SPARE_TMP, 0);
}

static void *bg_main(void *arg)
{
    elog *l = arg;
    onr_thread_name("logflush", -1);
    int64_t tick = mono_ns();
    /* everysec: its second; batch: writeback in small steps, not a burst a second */
    int64_t period = l->jon ? 100000000 : 1000000000;

    pthread_mutex_lock(&l->bg_mu);
    while (!l->stop) {
        tick += period;
        struct timespec ts = ns_to_ts(tick);
        while (!l->stop && pthread_cond_timedwait(&l->bg_cv, &l->bg_mu, &ts) != ETIMEDOUT)
            ;
        if (l->stop)
            break;
        pthread_mutex_unlock(&l->bg_mu);
        if (l->jon) {
            flush_behind_journal(l);
            journal_prewrite(l);
        } else
            for (int i = 0; i < l->o.partitions; i++) {
                part *p = &l->parts[i];
                pthread_mutex_lock(&p->mu);
                if (!p->syncing && (p->file_synced < p->end || p->sync_err))
                    lead_sync(l, p);
                pthread_mutex_unlock(&p->mu);
            }
        if (mono_ns() > tick + period)
            tick = mono_ns(); /* a stalled disk: don't fire a burst of catch-up ticks */
        pthread_mutex_lock(&l->bg_mu);
    }
    pthread_mutex_unlock(&l->bg_mu);
    return NULL;
}

/* ---- the sync threads, for elog_notify */

/* Takes p's waiters that are settled, with their outcomes, into *out. Partition mutex held. */
static void take_settled(part *p, elog_waiter **out)
{
    elog_waiter **pp = &p->waiters;
    while (*pp) {
        elog_waiter *w = *pp;
        if (w->end <= p->synced || w->end <= p->err_upto) {
            *pp = w->next;
            w->rc = w->end <= p->synced ? 0 : p->err_rc;
            w->next = *out;
            *out = w;
        } else {
            pp = &w->next;
        }
    }
}

/* Calls done for each waiter take_settled took. No lock held. */
static void call_settled(elog_waiter *w)
{
    while (w) {
        elog_waiter *next = w->next;
        w->done(w, w->rc);
        w = next;
    }
}

static void sq_push(elog *l, int idx)
{
    pthread_mutex_lock(&l->sq_mu);
    l->sq[(l->sq_head + l->sq_n) % l->o.partitions] = idx;
    l->sq_n++;
    if (!l->sq_pacing) /* a pacing sync thread takes the whole queue when it wakes */
        pthread_cond_signal(&l->sq_cv);
    pthread_mutex_unlock(&l->sq_mu);
}

/* One turn for a queued partition: an fsync covering every waiter (or the one a synchronous
 * appender is leading, when it does), then the settled waiters are called. Waiters wait for
 * offsets already written, and lead_sync settles everything written (synced, or failed up to
 * the end), so none is left. */
static void serve_waiters(elog *l, part *p)
{
    elog_waiter *settled = NULL;

    pthread_mutex_lock(&p->mu);
    p->queued = false;
    while (p->syncing)
        pthread_cond_wait(&p->cv, &p->mu);
    take_settled(p, &settled);
    if (p->waiters) {
        lead_sync(l, p);
        take_settled(p, &settled);
    }
    pthread_mutex_unlock(&p->mu);
    call_settled(settled);
}

/* Settles partition i after a journal fsync covering records below upto (rc 0) or failing
 * on them; waiters that arrived meanwhile are queued again. The round took the whole queue. */
static void journal_settle(elog *l, int i, uint64_t upto, int rc)
{
    part *p = &l->parts[i];
    elog_waiter *settled = NULL;
    bool again;

    pthread_mutex_lock(&p->mu);
    if (rc == 0 && upto > p->synced)
        p->synced = upto;
    else if (rc < 0 && upto > p->synced)
        sync_failed(l, p, rc, upto);
    take_settled(p, &settled);
    again = p->waiters != NULL || (p->staged && !p->sync_err);
    p->queued = again;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (again)
        sq_push(l, i);
    call_settled(settled);
}

/* Fsyncs partition i's files past everything written so far, leading the fsync (or healing a
 * failed one), and settles its waiters. Returns 0 or the fsync's error. */
static int flush_partition(elog *l, int i)
{
    part *p = &l->parts[i];
    elog_waiter *settled = NULL;
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    while (p->syncing)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->file_synced < next_offset(p) || p->sync_err) {
        lead_sync(l, p);
        rc = p->sync_err;
    }
    take_settled(p, &settled);
    pthread_mutex_unlock(&p->mu);
    call_settled(settled);
    return rc;
}

/* Starts a new journal segment; the active one is retired (jold) until the partitions are
 * fsynced past its records. Sync thread only, with no segment retired. */
static int journal_roll(elog *l)
{
    char name[JNAME_LEN + 1];
    journal_name(name, l->jnext);
    /* a retired or written-ahead segment is reused: overwriting it allocates nothing, and
     * deleting 64 MiB (a discard on many disks) stalls the disk for the fsyncs around it */
    pthread_mutex_lock(&l->j_mu);
    uint64_t ahead = l->jspare_bytes;
    l->jspare_bytes = 0;
    if (renameat(l->jdirfd, JOURNAL_SPARE, l->jdirfd, name) < 0) {
        if (errno != ENOENT)
            say(l, "elog: journal/%s: cannot reuse it: %s", JOURNAL_SPARE, strerror(errno));
        ahead = 0;
    }
    pthread_mutex_unlock(&l->j_mu);
    int fd = openat(l->jdirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : io_fsync(l, l->jdirfd);
    if (rc < 0) {
        say(l, "elog: journal/%s: cannot start a journal segment: %s", name, strerror(-rc));
        if (fd >= 0) {
            close(fd);
            unlinkat(l->jdirfd, name, 0);
        }
        return rc;
    }
    pthread_mutex_lock(&l->j_mu);
    for (int i = 0; i < l->o.partitions; i++) {
        part *p = &l->parts[i];
        pthread_mutex_lock(&p->mu);
        l->jroll_end[i] = p->jrec; /* what the retired segment may hold */
        pthread_mutex_unlock(&p->mu);
    }
    l->jold_fd = l->jfd; /* fsynced whole: every round fsyncs what it wrote */
    l->jold_seq = l->jseq;
    pthread_mutex_unlock(&l->j_mu);
    l->jfd = fd;
    l->jseq = l->jnext++;
    l->jsize = 0;
    l->jahead = ahead;
    atomic_store(&l->jsize_pub, 0);
    return 0;
}

/*
 * Ends the retired journal segment once every partition's files are fsynced past what it
 * holds: it becomes the spare that the next segment reuses. The background thread calls this
 * every 100 ms. After a failed journal fsync the sync thread calls it with failed: the
 * partitions are fsynced here, and the segment is deleted rather than reused.
 */
static void journal_retire(elog *l, bool failed)
{
    int P = l->o.partitions, bad = 0;

    pthread_mutex_lock(&l->j_mu);
    bool ready = l->jold_fd >= 0 && (failed || !l->jold_bad);
    /* j_mu before a partition's mutex, as in journal_roll */
    for (int i = 0; ready && !failed && i < P; i++) {
        part *p = &l->parts[i];
        pthread_mutex_lock(&p->mu);
        bad += p->file_synced < l->jroll_end[i];
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&l->j_mu);
    for (int i = 0; ready && failed && i < P; i++) /* fsyncs: not under j_mu */
        bad += flush_partition(l, i) < 0;
    if (!ready || bad)
        return; /* kept: a later call tries again */
    /* Kept as the spare for the next segment (journal_roll). If the rename is lost in a
     * crash, the next open replays nothing new from it. Under j_mu, so that no roll takes the
     * spare meanwhile. */
    pthread_mutex_lock(&l->j_mu);
    int fd = l->jold_fd;
    if (fd >= 0) {
        char name[JNAME_LEN + 1];
        journal_name(name, l->jold_seq);
        if (failed) {
            unlinkat(l->jdirfd, name, 0);
            l->jold_bad = false;
        } else if (renameat(l->jdirfd, name, l->jdirfd, JOURNAL_SPARE) < 0) {
            say(l, "elog: journal/%s: cannot retire it: %s", name, strerror(errno));
            unlinkat(l->jdirfd, name, 0);
        } else {
            struct stat sb;
            l->jspare_bytes = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        }
        close(fd);
        l->jold_fd = -1;
    }
    pthread_mutex_unlock(&l->j_mu);
    if (fd >= 0)
        io_fsync(l, l->jdirfd);
}

/*
 * One group commit under batch: one fsync of the journal makes every record journaled before
 * it durable, in every partition. After a failed journal fsync the segment it failed on is
 * not trusted again (the kernel may have dropped its dirty pages): it is retired, and until
 * the partition files are fsynced past it, appends are acknowledged by those fsyncs instead.
 */
static void journal_round(elog *l)
{
    int P = l->o.partitions;
    int64_t ns = 0;
    int rc = 0;

    pthread_mutex_lock(&l->j_mu);
    bool retired = l->jold_fd >= 0;
    pthread_mutex_unlock(&l->j_mu);
    if (l->jfailed) {
        /* The active segment failed: it is never fsynced again. It is retired (over any
         * segment still waiting for the background thread, whose partitions are fsynced here)
         * and deleted once the partitions are fsynced past it; until then appends are
         * acknowledged by those fsyncs. */
        if (retired)
            journal_retire(l, true);
        pthread_mutex_lock(&l->j_mu);
        retired = l->jold_fd >= 0;
        pthread_mutex_unlock(&l->j_mu);
        if (!retired && journal_roll(l) == 0) {
            pthread_mutex_lock(&l->j_mu);
            l->jold_bad = true;
            pthread_mutex_unlock(&l->j_mu);
            l->jfailed = false;
        }
        if (l->jfailed)
            for (int i = 0; i < P; i++)
                flush_partition(l, i);
    }
    pthread_mutex_lock(&l->j_mu);
    bool bad = l->jold_bad;
    pthread_mutex_unlock(&l->j_mu);
    if (l->jfailed || bad) {
        if (bad)
            journal_retire(l, true);
        for (int i = 0; i < P; i++)
            journal_settle(l, i, 0, 0);
        return;
    }
    if (!retired && l->jsize >= l->o.journal_bytes) {
        journal_roll(l);
    } else if (!retired && l->jsize >= l->jahead) {
        /* past what was written ahead: move to a spare that was, if there is one */
        pthread_mutex_lock(&l->j_mu);
        bool ready = l->jspare_bytes >= l->o.journal_bytes;
        pthread_mutex_unlock(&l->j_mu);
        if (ready)
            journal_roll(l);
    }
    onr_buf_clear(&l->jbuf);
    for (int i = 0; i < P; i++) {
        int e = journal_stage(l, &l->parts[i]);
        if (e < 0)
            say(l, "elog: p%03d: cannot write or read back its records for the journal: %s", i,
                strerror(-e));
    }
    if (l->jbuf.len) {
        /* at jsize: what a failed write left past it is overwritten by the next, or read as
         * a torn tail */
        rc = write_all(l, l->jfd, l->jbuf.data, l->jbuf.len, l->jsize);
        if (rc == 0) {
            l->jsize += l->jbuf.len;
            atomic_store(&l->jsize_pub, l->jsize);
        }
        if (rc == 0)
            rc = timed_fdatasync(l, l->jfd, &ns);
        pthread_mutex_lock(&l->j_mu);
        count_fsync(&l->jst, rc, ns);
        pthread_mutex_unlock(&l->j_mu);
    }
    if (rc < 0) {
        say(l,
            "elog: journal: write or fsync failed: %s; appends are acknowledged by partition "
            "fsyncs until a new journal segment takes over",
            strerror(-rc));
        l->jfailed = true;
    }
    for (int i = 0; i < P; i++)
        journal_settle(l, i, l->jsnap[i], rc);
}

static void *sync_main(void *arg)
{
    elog *l = arg;
    onr_thread_name("logsync", -1);

    pthread_mutex_lock(&l->sq_mu);
    for (;;) {
        if (l->sq_n == 0) {
            if (l->sq_stop)
                break;
            pthread_cond_wait(&l->sq_cv, &l->sq_mu);
            continue;
        }
        if (l->jon) { /* a round serves every partition: take the whole queue */
            int64_t due = l->jround_ns + l->o.commit_interval_ms * 1000000;
            if (!l->sq_stop && l->o.commit_interval_ms > 0 &&
                atomic_load(&l->jpending) < ELOG_EARLY_BYTES && mono_ns() < due) {
                struct timespec ts = ns_to_ts(due);
                l->sq_pacing = true;
                pthread_cond_timedwait(&l->sq_cv, &l->sq_mu, &ts);
                l->sq_pacing = false;
                continue;
            }
            l->jround_ns = mono_ns();
            atomic_store(&l->jpending, 0);
            l->sq_head = (l->sq_head + l->sq_n) % l->o.partitions;
            l->sq_n = 0;
            pthread_mutex_unlock(&l->sq_mu);
            journal_round(l);
        } else {
            int idx = l->sq[l->sq_head];
            l->sq_head = (l->sq_head + 1) % l->o.partitions;
            l->sq_n--;
            pthread_mutex_unlock(&l->sq_mu);
            serve_waiters(l, &l->parts[idx]);
        }
        pthread_mutex_lock(&l->sq_mu);
    }
    pthread_mutex_unlock(&l->sq_mu);
    return NULL;
}

void elog_notify(elog *l, int partition, uint64_t end_offset, elog_waiter *w)
{
    if (partition < 0 || partition >= l->o.partitions) {
        w->done(w, ONR_E_INVALID);
        return;
    }
    part *p = &l->parts[partition];
    bool push = false;

    pthread_mutex_lock(&p->mu);
    /* settled now, as take_settled would settle it; the waiters already here are the sync
     * threads' to settle */
    bool now = true;
    int rc = 0;
    if (end_offset > next_offset(p))
        rc = ONR_E_INVALID;
    else if (l->o.fsync == ELOG_FSYNC_EVERYSEC || end_offset <= p->synced)
        rc = 0;
    else if (end_offset <= p->err_upto)
        rc = p->err_rc;
    else
        now = false;
    if (now) {
        pthread_mutex_unlock(&p->mu);
        w->done(w, rc);
        return;
    }
    w->end = end_offset;
    w->next = p->waiters;
    p->waiters = w;
    if (!p->queued)
        p->queued = push = true;
    pthread_mutex_unlock(&p->mu);
    if (push)
        sq_push(l, partition);
}

bool elog_durable(elog *l, int partition, uint64_t end_offset)
{
    if (l->o.fsync == ELOG_FSYNC_EVERYSEC)
        return true;
    if (partition < 0 || partition >= l->o.partitions)
        return false;
    part *p = &l->parts[partition];
    pthread_mutex_lock(&p->mu);
    bool ok = p->synced >= end_offset;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Stops the sync threads once every queued partition has been served. */
static void stop_syncers(elog *l)
{
    pthread_mutex_lock(&l->sq_mu);
    l->sq_stop = true;
    pthread_cond_broadcast(&l->sq_cv);
    pthread_mutex_unlock(&l->sq_mu);
    for (int i = 0; i < l->nsyncers; i++)
        pthread_join(l->syncers[i], NULL);
    l->nsyncers = 0;
}

/* ---- the journal at open: replay, then a fresh segment */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Restores the records of one journal entry that partition idx lacks. Returns the number
 * appended, or an append's error. */
static int64_t replay_entry(elog *l, const char *name, uint32_t idx, uint64_t first, uint32_t n,
                            const unsigned char *data, size_t len)
{
    part *p = &l->parts[idx];
    size_t off = 0;
    int64_t added = 0;

    if (first > p->end) {
        say(l,
            "elog: journal/%s: p%03d: records %llu..%llu follow a gap (the partition ends at "
            "%llu); not restored",
            name, idx, (unsigned long long)first, (unsigned long long)(first + n - 1),
            (unsigned long long)p->end);
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < HDR || get_le32(data + off) > len - off - HDR || !frame_ok(data + off)) {
            say(l, "elog: journal/%s: p%03d: a damaged record at offset %llu; not restored", name,
                idx, (unsigned long long)(first + i));
            return added;
        }
        uint32_t rlen = get_le32(data + off);
        if (first + i >= p->end) {
            elog_rec rec = {data + off + HDR, rlen};
            int rc = append(l, (int)idx, &rec, 1, NULL, NULL, false);
            if (rc < 0)
                return rc;
            added++;
        }
        off += HDR + rlen;
    }
    return added;
}

/* Replays one journal segment, stopping at its first torn or damaged entry. */
static int replay_segment(elog *l, uint64_t seq, uint64_t *restored, char *err, size_t errlen)
{
    char name[JNAME_LEN + 1];
    unsigned char h[JHDR];
    struct stat sb;
    onr_buf b = {0};
    uint64_t pos = 0;
    const char *why = NULL;
    int rc = 0;

    journal_name(name, seq);
    int fd = openat(l->jdirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        rc =
            fail_msg(err, errlen, -errno, "elog: %s/journal/%s: %s", l->dir, name, strerror(errno));
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    while (pos < size) {
        if (size - pos < JHDR) {
            why = "a short entry header";
            break;
        }
        rc = read_full(fd, h, JHDR, pos);
        if (rc < 0)
            break;
        uint64_t len = get_le32(h), first = get_le64(h + 8);
        uint32_t idx = get_le32(h + 4), n = get_le32(h + 16);
        if (journal_crc(seq, h) != get_le32(h + 20)) {
            bool zeros = true;
            for (int k = 0; k < JHDR && zeros; k++)
                zeros = h[k] == 0;
            why = zeros ? NULL : "a CRC mismatch"; /* zeros: space written ahead, unused */
            break;
        }
        if (idx >= (uint32_t)l->o.partitions || n == 0) {
            why = "a bad entry header";
            break;
        }
        if (len > size - pos - JHDR) {
            why = "a short entry";
            break;
        }
        if (first + n <= l->parts[idx].end) { /* the partition has them: the usual case */
            pos += JHDR + len;
            continue;
        }
        onr_buf_clear(&b);
        onr_buf_reserve(&b, (size_t)len);
        rc = read_full(fd, b.data, (size_t)len, pos + JHDR);
        if (rc < 0)
            break;
        int64_t added = replay_entry(l, name, idx, first, n, (unsigned char *)b.data, (size_t)len);
        if (added < 0) {
            rc = (int)added;
            fail_msg(err, errlen, rc, "elog: %s/journal/%s: cannot restore records: %s", l->dir,
                     name, strerror(-rc));
            goto out;
        }
        *restored += (uint64_t)added;
        pos += JHDR + len;
    }
    if (rc < 0) {
        fail_msg(err, errlen, rc, "elog: %s/journal/%s: %s", l->dir, name, strerror(-rc));
        goto out;
    }
    if (why)
        say(l,
            "elog: journal/%s: ignored %llu bytes after the last entry, at byte %llu (%s): a "
            "torn write, or what a reused segment held before; nothing acknowledged was in it",
            name, (unsigned long long)(size - pos), (unsigned long long)pos, why);
out:
    if (fd >= 0)
        close(fd);
    onr_buf_free(&b);
    return rc;
}

/*
 * Replays what the journal holds that the partitions lost (a power loss before their own
 * fsync), makes it durable in the partition files, and deletes the journal; then, under batch,
 * starts a fresh segment. Runs at open, before any append.
 */
static int journal_open(elog *l, char *err, size_t errlen)
{
    uint64_t *seqs = NULL, restored = 0;
    size_t nseqs = 0, cap = 0;
    int rc;

    rc = open_subdir(l, JOURNAL_DIR, &l->jdirfd, err, errlen);
    if (rc < 0)
        return rc;
    int dfd = dup(l->jdirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        rc = fail_msg(err, errlen, -errno, "elog: %s/%s: %s", l->dir, JOURNAL_DIR, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    /* A spare left by a crash goes: segment numbers start again after this open, and a
     * reused segment must not hold entries that check under its new number. */
    static const char *const spares[] = {JOURNAL_SPARE, JOURNAL_SPARE_TMP};
    for (size_t i = 0; i < 2; i++)
        if (unlinkat(l->jdirfd, spares[i], 0) < 0 && errno != ENOENT) {
            closedir(d);
            return fail_msg(err, errlen, -errno, "elog: %s/journal/%s: cannot delete: %s", l->dir,
                            spares[i], strerror(errno));
        }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_numbered_name(e->d_name, ".jnl", &seq))
            continue;
        if (nseqs == cap) {
            cap = cap ? cap * 2 : 4;
            seqs = onr_realloc(seqs, cap * sizeof(*seqs));
        }
        seqs[nseqs++] = seq;
    }
    closedir(d);
    if (nseqs > 1)
        qsort(seqs, nseqs, sizeof(*seqs), cmp_u64);
    rc = 0;
    for (size_t i = 0; i < nseqs && rc == 0; i++)
        rc = replay_segment(l, seqs[i], &restored, err, errlen);
    for (int i = 0; i < l->o.partitions && rc == 0; i++) {
        part *p = &l->parts[i];
        if (p->file_synced < p->end) {
            rc = io_fsync(l, p->fd);
            if (rc < 0)
                fail_msg(err, errlen, rc, "elog: %s/p%03d: fsync: %s", l->dir, i, strerror(-rc));
            p->synced = p->file_synced = p->jrec = p->end;
            p->synced_size = p->jbyte = p->size;
        }
    }
    for (size_t i = 0; i < nseqs && rc == 0; i++) {
        char name[JNAME_LEN + 1];
        journal_name(name, seqs[i]);
        if (unlinkat(l->jdirfd, name, 0) < 0)
            rc = fail_msg(err, errlen, -errno, "elog: %s/journal/%s: cannot delete: %s", l->dir,
                          name, strerror(errno));
    }
    if (rc == 0 && nseqs)
        rc = io_fsync(l, l->jdirfd);
    if (rc == 0 && restored)
        say(l, "elog: journal: restored %llu records the partitions had lost",
            (unsigned long long)restored);
    l->jnext = nseqs ? seqs[nseqs - 1] + 1 : 1;
    onr_free(seqs);
    if (rc < 0 || l->o.fsync != ELOG_FSYNC_BATCH)
        return rc;

    char name[JNAME_LEN + 1];
    journal_name(name, l->jnext);
    l->jfd = openat(l->jdirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (l->jfd < 0)
        return fail_msg(err, errlen, -errno, "elog: %s/journal/%s: %s", l->dir, name,
                        strerror(errno));
    rc = io_fsync(l, l->jdirfd);
    if (rc < 0)
        return fail_msg(err, errlen, rc, "elog: %s/journal: fsync: %s", l->dir, strerror(-rc));
    l->jseq = l->jnext++;
    l->jsnap = onr_calloc((size_t)l->o.partitions, sizeof(*l->jsnap));
    l->jroll_end = onr_calloc((size_t)l->o.partitions, sizeof(*l->jroll_end));
    l->jbg_end = onr_calloc((size_t)l->o.partitions, sizeof(*l->jbg_end));
    l->jon = true;
    return 0;
}

/* ---- open and close */

static void stop_threads(elog *l)
{
    if (l->bg_running) {
        pthread_mutex_lock(&l->bg_mu);
        l->stop = true;
        pthread_cond_signal(&l->bg_cv);
        pthread_mutex_unlock(&l->bg_mu);
        pthread_join(l->bg, NULL);
        l->bg_running = false;
    }
    stop_syncers(l);
}

static void elog_free(elog *l)
{
    for (int i = 0; i < l->np; i++)
        part_free(&l->parts[i], true);
    onr_free(l->parts);
    if (l->dirfd >= 0)
        close(l->dirfd);
    if (l->lockfd >= 0)
        close(l->lockfd); /* and with it the lock, last */
    pthread_mutex_destroy(&l->bg_mu);
    pthread_cond_destroy(&l->bg_cv);
    pthread_mutex_destroy(&l->sq_mu);
    pthread_cond_destroy(&l->sq_cv);
    pthread_mutex_destroy(&l->j_mu);
    if (l->jfd >= 0)
        close(l->jfd);
    if (l->jold_fd >= 0)
        close(l->jold_fd);
    if (l->jdirfd >= 0)
        close(l->jdirfd);
    onr_buf_free(&l->jbuf);
    onr_free(l->jsnap);
    onr_free(l->jroll_end);
    onr_free(l->jbg_end);
    onr_free(l->syncers);
    onr_free(l->sq);
    onr_free(l->dir);
    onr_free(l);
}

int elog_open(const char *dir, const elog_opts *o, elog **out, char *err, size_t errlen)
{
    elog *l = onr_calloc(1, sizeof *l);
    pthread_condattr_t ca;
    bool meta = false;
    int rc;

    if (err && errlen)
        err[0] = 0;
    l->dirfd = l->lockfd = -1;
    l->dir = onr_strdup(dir);
    pthread_mutex_init(&l->bg_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->bg_cv, &ca);
    pthread_mutex_init(&l->sq_mu, NULL);
    pthread_cond_init(&l->sq_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->j_mu, NULL);
    l->jfd = l->jold_fd = l->jdirfd = -1;

    rc = fill_opts(l, o, err, errlen);
    if (rc < 0)
        goto fail;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        rc = fail_msg(err, errlen, -errno, "elog: %s: mkdir: %s", dir, strerror(errno));
        goto fail;
    }
    l->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0) {
        rc = fail_msg(err, errlen, -errno, "elog: %s: %s", dir, strerror(errno));
        goto fail;
    }
    rc = lock_dir(l, err, errlen);
    if (rc < 0)
        goto fail;
    rc = check_meta(l, &meta, err, errlen);
    if (rc < 0)
        goto fail;
    l->parts = onr_calloc((size_t)l->o.partitions, sizeof(*l->parts));
    for (int i = 0; i < l->o.partitions; i++) {
        rc = part_init(l, &l->parts[i], i, err, errlen);
        if (rc < 0) {
            part_free(&l->parts[i], false);
            goto fail;
        }
        l->np++;
    }
    if (!meta) {
        rc = write_meta(l, err, errlen);
        if (rc < 0)
            goto fail;
    }
    rc = journal_open(l, err, errlen);
    if (rc < 0)
        goto fail;
    if (l->o.fsync != ELOG_FSYNC_ALWAYS) {
        rc = -pthread_create(&l->bg, NULL, bg_main, l);
        if (rc < 0) {
            fail_msg(err, errlen, rc, "elog: cannot start the fsync thread: %s", strerror(-rc));
            goto fail;
        }
        l->bg_running = true;
    }
    if (l->o.fsync != ELOG_FSYNC_EVERYSEC) {
        /* the journal's rounds serve every partition at once: one thread is enough */
        int n = l->jon ? 1 : l->o.sync_threads;
        l->sq = onr_calloc((size_t)l->o.partitions, sizeof(*l->sq));
        l->syncers = onr_calloc((size_t)n, sizeof(*l->syncers));
        for (; l->nsyncers < n; l->nsyncers++) {
            rc = -pthread_create(&l->syncers[l->nsyncers], NULL, sync_main, l);
            if (rc < 0) {
                fail_msg(err, errlen, rc, "elog: cannot start a sync thread: %s", strerror(-rc));
                stop_threads(l);
                goto fail;
            }
        }
    }
    *out = l;
    return 0;
fail:
    elog_free(l);
    return rc;
}

int elog_close(elog *l)
{
    int first = 0;

    if (!l)
        return 0;
    stop_threads(l); /* the sync threads after they have settled every waiter */
    for (int i = 0; i < l->np; i++) {
        part *p = &l->parts[i];
        int rc = 0;
        pthread_mutex_lock(&p->mu);
        while (p->syncing)
            pthread_cond_wait(&p->cv, &p->mu);
        /* written (records nobody waited for may be staged), cut to its records (it was sized
         * ahead), and that made durable */
        rc = put_stage(l, p);
        if (rc == 0 && ftruncate(p->fd, (off_t)p->size) < 0)
            rc = -errno;
        if (rc == 0) {
            lead_sync(l, p);
            rc = p->sync_err;
        }
        pthread_mutex_unlock(&p->mu);
        if (rc < 0 && first == 0)
            first = rc;
    }
    /* Every partition is durable in its own files: the journal holds nothing more. When one
     * is not, the journal stays for the next open to replay. */
    for (uint64_t seq = l->jold_fd >= 0 ? l->jold_seq : l->jseq;
         l->jon && first == 0 && seq <= l->jseq; seq++) {
        char name[JNAME_LEN + 1];
        journal_name(name, seq);
        if (unlinkat(l->jdirfd, name, 0) < 0 && errno != ENOENT)
            first = -errno;
    }
    if (l->jon && first == 0 && unlinkat(l->jdirfd, JOURNAL_SPARE, 0) < 0 && errno != ENOENT)
        first = -errno;
    if (l->jon && first == 0 && unlinkat(l->jdirfd, JOURNAL_SPARE_TMP, 0) < 0 && errno != ENOENT)
        first = -errno;
    if (l->jon && first == 0)
        first = io_fsync(l, l->jdirfd);
    elog_free(l);
    return first;
}

/* ---- retention */

int elog_retain(elog *l, int partition, uint64_t checkpoint_offset, uint64_t max_bytes,
                int64_t max_age_ms, int64_t now_ms)
{
    char name[SEG_NAME_LEN + 1];
    uint64_t total = 0, *gone;
    size_t k = 0;
    int rc = 0;

    if (partition < 0 || partition >= l->o.partitions)
        return ONR_E_INVALID;
    part *p = &l->parts[partition];

    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i + 1 < p->nsegs; i++)
        total += p->segs[i].bytes;
    total += p->size;
    /* Oldest first and stop at the first keeper: the log never gets a hole. */
    while (k + 1 < p->nsegs && p->segs[k + 1].base <= checkpoint_offset) {
        bool over = max_bytes > 0 && total > max_bytes;
        bool old = false;
        if (!over && max_age_ms > 0) {
            struct stat sb;
            seg_name(name, p->segs[k].base);
            if (fstatat(p->dirfd, name, &sb, 0) == 0) {
                int64_t mtime_ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
                old = now_ms - mtime_ms > max_age_ms;
            }
        }
        if (!over && !old)
            break;
        total -= p->segs[k].bytes;
        k++;
    }
    if (k == 0) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    gone = onr_malloc(k * sizeof(*gone));
    for (size_t i = 0; i < k; i++)
        gone[i] = p->segs[i].base;
    memmove(p->segs, p->segs + k, (p->nsegs - k) * sizeof(*p->segs));
    p->nsegs -= k;
    pthread_mutex_unlock(&p->mu);

    /* Unlinking a large file can take milliseconds: not under the mutex. Readers that have a
     * deleted segment open keep reading it; it is out of the list, so none can open it. */
    for (size_t i = 0; i < k; i++) {
        seg_name(name, gone[i]);
        if (unlinkat(p->dirfd, name, 0) < 0 && errno != ENOENT && rc == 0)
            rc = -errno;
    }
    onr_free(gone);
    if (rc == 0)
        rc = io_fsync(l, p->dirfd);
    return rc < 0 ? rc : (int)k;
}

/* ---- reading */

/* Index of the segment holding offset off, or -1 when it is below the first. Mutex held. */
static long find_seg(const part *p, uint64_t off)
{
    size_t lo = 0, hi = p->nsegs;

    if (p->nsegs == 0 || off < p->segs[0].base)
        return -1;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->segs[mid].base <= off)
            lo = mid;
        else
            hi = mid;
    }
    return (long)lo;
}

/* Points r at the start of the segment holding off. Partition mutex held. */
static int reader_seek_seg(elog_reader *r, uint64_t off)
{
    char name[SEG_NAME_LEN + 1];
    long i = find_seg(r->p, off);
    int fd;

    if (i < 0)
        return ONR_E_NOTFOUND;
    seg_name(name, r->p->segs[i].base);
    fd = openat(r->p->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = fd;
    r->seg_base = r->p->segs[i].base;
    r->next = r->seg_base;
    r->fpos = 0;
    r->dropped = 0;
    r->blen = r->bpos = 0;
    return 0;
}

/* Drops [r->dropped, to) of r's segment from the page cache when it is a step or more (or
 * all the rest, with to past the end); to must be read and fsynced. Advice, so a failure
 * changes nothing. */
static void reader_drop(elog_reader *r, uint64_t to)
{
    bool rest = to == UINT64_MAX;
    to &= ~(uint64_t)4095;
    if (r->fd < 0 || (!rest && to < r->dropped + DROP_STEP))
        return;
    (void)posix_fadvise(r->fd, (off_t)r->dropped, rest ? 0 : (off_t)(to - r->dropped),
                        POSIX_FADV_DONTNEED);
    r->dropped = to;
}

int elog_reader_open(elog *l, int partition, uint64_t from_offset, elog_reader **out)
{
    elog_reader *r;
    int rc;

    if (partition < 0 || partition >= l->o.partitions)
        return ONR_E_INVALID;
    part *p = &l->parts[partition];
    r = onr_calloc(1, sizeof *r);
    r->p = p;
    r->fd = -1;
    r->skip_to = from_offset;
    pthread_mutex_lock(&p->mu);
    if (from_offset < p->segs[0].base)
        rc = ONR_E_NOTFOUND;
    else if (from_offset > p->end)
        rc = ONR_E_INVALID;
    else
        rc = reader_seek_seg(r, from_offset);
    pthread_mutex_unlock(&p->mu);
    if (rc < 0) {
        elog_reader_close(r);
        return rc;
    }
    r->cap = READ_CHUNK;
    r->buf = onr_calloc(1, r->cap + ELOG_READ_PADDING);
    *out = r;
    return 0;
}

/* Bytes of complete records in r's segment right now. Partition mutex held. */
static int reader_limit(elog_reader *r, uint64_t *limit, bool *active)
{
    part *p = r->p;
    long i = find_seg(p, r->seg_base);
    struct stat sb;

    *active = p->segs[p->nsegs - 1].base == r->seg_base;
    if (*active) {
        *limit = p->size;
        return 0;
    }
    if (i >= 0 && p->segs[i].base == r->seg_base) {
        *limit = p->segs[i].bytes;
        return 0;
    }
    /* retention deleted it while we read: a sealed file's size is final */
    if (fstat(r->fd, &sb) < 0)
        return -errno;
    *limit = (uint64_t)sb.st_size;
    return 0;
}

/* Buffers more of the log. Returns 1 when bytes were added, 0 when none are written yet. */
static int reader_fill(elog_reader *r)
{
    part *p = r->p;
    uint64_t limit = 0, at;
    bool active = false;
    int rc;

    if (r->next >= atomic_load_explicit(&p->pub_end, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&p->mu);
    rc = reader_limit(r, &limit, &active);
    /* a sealed segment was fsynced whole; of the active one, what an fsync reached */
    uint64_t clean = active ? p->synced_size : limit;
    at = r->fpos + r->blen;
    if (rc == 0 && at >= limit) {
        if (active) {
            pthread_mutex_unlock(&p->mu);
            reader_drop(r, ONR_MIN(clean, r->fpos + r->bpos));
            return 0;
        }
        /* the segment is used up, so the record at next must start the following one */
        if (r->blen != r->bpos) {
            rc = -EBADMSG;
        } else {
            uint64_t want = r->next;
            reader_drop(r, UINT64_MAX);
            rc = reader_seek_seg(r, want);
            if (rc == 0 && r->seg_base != want)
                rc = -EBADMSG;
            if (rc == 0)
                rc = reader_limit(r, &limit, &active);
            at = 0;
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (rc < 0)
        return rc;

    memmove(r->buf, r->buf + r->bpos, r->blen - r->bpos);
    r->fpos += r->bpos;
    r->blen -= r->bpos;
    r->bpos = 0;
    reader_drop(r, ONR_MIN(clean, r->fpos));
    uint64_t need = r->blen >= HDR ? HDR + (uint64_t)get_le32(r->buf) : HDR;
    if (need > limit - r->fpos)
        return -EBADMSG; /* a length that runs past what was written: damage on disk */
    if (need > r->cap) {
        r->buf = onr_realloc(r->buf, (size_t)need + ELOG_READ_PADDING);
        memset(r->buf + r->cap, 0, (size_t)need - r->cap + ELOG_READ_PADDING);
        r->cap = (size_t)need;
    }
    size_t want = (size_t)ONR_MIN((uint64_t)(r->cap - r->blen), limit - at);
    if (want == 0)
        return 0;
    rc = read_full(r->fd, r->buf + r->blen, want, at);
    if (rc < 0)
        return rc;
    r->blen += want;
    return 1;
}

int elog_reader_next(elog_reader *r, const void **rec, size_t *len, uint64_t *offset)
{
    for (;;) {
        size_t avail = r->blen - r->bpos;
        if (avail >= HDR) {
            const unsigned char *h = r->buf + r->bpos;
            uint32_t n = get_le32(h);
            if (avail - HDR >= n) {
                uint64_t off = r->next;
                if (!frame_ok(h))
                    return -EBADMSG;
                r->next++;
                r->bpos += HDR + n;
                if (off < r->skip_to)
                    continue;
                *rec = h + HDR;
                *len = n;
                if (offset)
                    *offset = off;
                return 1;
            }
        }
        int rc = reader_fill(r);
        if (rc <= 0)
            return rc;
    }
}

void elog_reader_close(elog_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    onr_free(r->buf);
    onr_free(r);
}

/* ---- statistics */

uint64_t elog_fsync_bucket_us(int i)
{
    if (i < 0 || i >= ELOG_FSYNC_BUCKETS)
        return UINT64_MAX;
    return fsync_bounds_us[i];
}

int elog_stats(elog *l, int partition, struct elog_stats *out)
{
    int lo = partition, hi = partition + 1;

    if (partition == -1) {
        lo = 0;
        hi = l->o.partitions;
    } else if (partition < 0 || partition >= l->o.partitions) {
        return ONR_E_INVALID;
    }
    memset(out, 0, sizeof *out);
    for (int i = lo; i < hi; i++) {
        part *p = &l->parts[i];
        pthread_mutex_lock(&p->mu);
        for (size_t s = 0; s + 1 < p->nsegs; s++)
            out->bytes += p->segs[s].bytes;
        out->bytes += p->size;
        out->segments += p->nsegs;
        out->records += p->st.records;
        out->appended_bytes += p->st.appended_bytes;
        out->fsyncs += p->st.fsyncs;
        out->fsync_errors += p->st.fsync_errors;
        out->write_errors += p->st.write_errors;
        out->truncated_bytes += p->st.truncated_bytes;
        out->fsync_us_sum += p->st.fsync_us_sum;
        for (int b = 0; b < ELOG_FSYNC_BUCKETS; b++)
            out->fsync_hist[b] += p->st.fsync_hist[b];
        pthread_mutex_unlock(&p->mu);
    }
    if (partition == -1) { /* and the journal's fsyncs */
        pthread_mutex_lock(&l->j_mu);
        out->fsyncs += l->jst.fsyncs;
        out->fsync_errors += l->jst.fsync_errors;
        out->fsync_us_sum += l->jst.fsync_us_sum;
        for (int b = 0; b < ELOG_FSYNC_BUCKETS; b++)
            out->fsync_hist[b] += l->jst.fsync_hist[b];
        pthread_mutex_unlock(&l->j_mu);
    }
    return 0;
}
