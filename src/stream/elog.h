/*
 * elog.h - the embedded durable event log behind `onramp serve`: P partitions, each an
 * append-only run of segment files holding CRC32C-framed records, with group commit (under
 * batch through one commit journal for all partitions) and an fsync policy (always | batch |
 * everysec). I/O threads append; engine shards read. A torn or
 * corrupt tail is cut off at open, and said so; nothing before it is lost.
 * On-disk format, loss windows and recovery: docs/operations.md, "The event log".
 */
#ifndef ONR_ELOG_H
#define ONR_ELOG_H

#include "base/base.h"

#include <sys/types.h>

typedef struct elog elog;
typedef struct elog_reader elog_reader;

/* When an append returns (see docs/operations.md for each policy's loss window). Zero is the
 * default, batch. */
typedef enum elog_fsync {
    ELOG_FSYNC_BATCH = 0, /* after an fsync of the commit journal that covers the record */
    ELOG_FSYNC_ALWAYS,    /* after an fsync of the partition's file that covers the record */
    ELOG_FSYNC_EVERYSEC,  /* after write(2); a background thread fsyncs every second */
} elog_fsync;

/* Under batch, a round of the commit journal starts before commit_interval_ms has passed
 * once this many bytes were appended since the last one began. */
#define ELOG_EARLY_BYTES (1u << 20)
/* The default of elog_opts.commit_interval_ms (and of `onramp serve --commit-interval`). */
#define ELOG_COMMIT_INTERVAL_MS 1

/* Parses "always", "batch" or "everysec". Returns 0 or ONR_E_INVALID. */
int elog_fsync_parse(const char *s, elog_fsync *out);
const char *elog_fsync_name(elog_fsync f);

/*
 * File I/O the log goes through, so that tests can inject EIO/ENOSPC or slow disks. A NULL
 * member means the real system call. Both return -errno on failure (not -1 + errno).
 */
typedef struct elog_io {
    /* pwrite(2): the number of bytes written (possibly short) or -errno. */
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, uint64_t off);
    /* fsync(2) of a segment or of a directory: 0 or -errno. */
    int (*fsync)(void *ctx, int fd);
    void *ctx;
} elog_io;

/* Options; a zero member takes the default in brackets. */
typedef struct elog_opts {
    int partitions;       /* [16], 1..1000; fixed when the log is created */
    elog_fsync fsync;     /* [ELOG_FSYNC_BATCH] */
    size_t journal_bytes; /* [64 MiB] batch: a journal segment is retired past this */
    size_t segment_bytes; /* [64 MiB] a segment rolls before it would grow past this */
    size_t max_record;    /* [1 MiB] largest payload elog_append accepts */
    int sync_threads;     /* [2], 1..64, always: the threads fsyncing for elog_notify */
    /* [ELOG_COMMIT_INTERVAL_MS] batch: a round of the commit journal (one fsync) starts at
     * most this often, in milliseconds, unless ELOG_EARLY_BYTES wait for it; negative: as
     * soon as the last ends. Each fsync costs CPU whatever it writes; spacing them trades up
     * to this much latency for fewer of them under load (docs/operations.md). */
    int64_t commit_interval_ms;
    /* Called for events an operator should see: tails truncated at open, records the journal
     * restored, failed and healed fsyncs. May be called from any appending thread, the sync
     * threads or the background thread, so it must be thread-safe. NULL: silent. */
    void (*log)(void *ctx, const char *msg);
    void *log_ctx;
    elog_io io;
} elog_opts;

/*
 * Opens (creating as needed) the log in dir: dir/elog.meta and dir/pNNN/ per partition.
 * Recovers every partition: checks that sealed segments end on a record boundary with the
 * record count their successor's name implies, CRC-checks the last segment and truncates it at
 * the first short or damaged record (logging partition, segment and bytes cut), then fsyncs.
 * Reopening with another partition count is refused, and so is a log another process (or
 * another elog_open in this one) has open: -EBUSY, before anything is read or changed; the
 * log is flock(2)ed (dir/elog.lock) until elog_close. On failure returns -errno or ONR_E_* and
 * writes a message for people into err (when errlen > 0). Caller owns *out; elog_close it.
 */
int elog_open(const char *dir, const elog_opts *o, elog **out, char *err, size_t errlen);

/*
 * Stops the sync threads once every waiter is settled and the background thread, fsyncs every
 * partition, deletes the commit journal (kept, for the next open to replay, when a partition
 * could not be fsynced) and frees the log. No append or reader may be in use. Returns 0 or
 * the first fsync error (the log is freed anyway).
 */
int elog_close(elog *l);

int elog_partitions(const elog *l);

/* The log's id: ELOG_ID_CHARS lowercase hex digits, drawn at random when the log was created
 * and kept in elog.meta. A log deleted and created again in the same directory gets another,
 * so that what records this log's offsets (engine checkpoints, the ingest state) can tell. */
#define ELOG_ID_CHARS 32
const char *elog_id(const elog *l);

/* The largest record elog_append takes, and the most one elog_append_batch writes (framing
 * included: 8 bytes a record): the options' max_record and segment_bytes. */
size_t elog_max_record(const elog *l);
size_t elog_max_batch(const elog *l);

/* One record of a batch. */
typedef struct elog_rec {
    const void *data;
    size_t len;
} elog_rec;

/*
 * Appends one record to a partition and returns when the fsync policy says it is in the log;
 * *offset (may be NULL) is its offset, the partition's record number. Thread-safe: any number
 * of threads may append to any partitions at once. Returns 0; ONR_E_LIMIT when len >
 * max_record; ONR_E_INVALID for a bad partition; or -errno when a write or fsync failed. After
 * a failed write nothing of the record remains. After a failed fsync the record was written
 * and may be read (or survive) - the outcome is unknown, as with any timeout - and the next
 * append first rewrites and fsyncs the unsynced tail (it fails too while the disk does).
 */
int elog_append(elog *l, int partition, const void *rec, size_t len, uint64_t *offset);

/*
 * Appends n records to one partition under consecutive offsets (the first in *first_offset),
 * written in one write and acknowledged together: all or nothing on a failed write. The framed
 * batch (8 bytes + len per record) must fit a segment: ONR_E_LIMIT otherwise.
 */
int elog_append_batch(elog *l, int partition, const elog_rec *recs, size_t n,
                      uint64_t *first_offset);

/*
 * The two halves of elog_append_batch, for a caller with work to do between them: writes
 * the records and gives the offset after the last in *end_offset; elog_wait then returns once
 * every record of the partition below end_offset is in the log under the fsync policy (at
 * once under everysec). Same errors as elog_append_batch; a failed elog_wait is a failed fsync
 * (see elog_append). Under always and everysec readers see the records on return. Under batch
 * the records are staged in memory and written by the sync thread's next round, with the
 * partition's other appends of the round in one write, before the journal fsync that makes
 * them durable (or by an append that finds a quarter of a MiB staged); a write that fails
 * there fails their waiters as a failed fsync does, and the records are written again by the
 * next append, as a failed fsync is healed.
 */
int elog_write_batch(elog *l, int partition, const elog_rec *recs, size_t n, uint64_t *first_offset,
                     uint64_t *end_offset);
int elog_wait(elog *l, int partition, uint64_t end_offset);

/*
 * A wait for the fsync policy that holds no thread (elog_notify). The caller fills done and
 * keeps the waiter alive until done has been called; next, end and rc are the log's.
 */
typedef struct elog_waiter elog_waiter;
struct elog_waiter {
    void (*done)(elog_waiter *w, int rc); /* rc as elog_wait returns it */
    elog_waiter *next;
    uint64_t end;
    int rc;
};

/*
 * elog_wait without the wait: calls w->done(w, rc) once every record of the partition below
 * end_offset is in the log under the fsync policy. When they already are (always under
 * everysec), or the partition or offset (past the partition's end) is invalid
 * (ONR_E_INVALID), done is called at once in this thread; otherwise
 * from one of the log's sync threads, which fsync the partitions that have waiters as soon as
 * one of them is free: what was written while a partition waited for a sync thread or for its
 * previous fsync is one group commit. done is called with no lock of the log held.
 */
void elog_notify(elog *l, int partition, uint64_t end_offset, elog_waiter *w);

/* Whether every record of the partition below end_offset is in the log under the fsync
 * policy now (always under everysec): elog_wait would return at once. */
bool elog_durable(elog *l, int partition, uint64_t end_offset);

/* The next offset to be written in a partition (records [start, end) are readable). */
uint64_t elog_end_offset(elog *l, int partition);
/* Offsets below this are fsynced: they survive a power loss. Under everysec it trails the end
 * by up to about a second; a checkpoint that must survive a power loss along with the log
 * records offsets at or below it. */
uint64_t elog_synced_offset(elog *l, int partition);
/* The first offset still on disk (0 until retention deletes a segment). */
uint64_t elog_start_offset(elog *l, int partition);

/*
 * Deletes a partition's oldest whole segments whose records all lie below checkpoint_offset,
 * while the partition holds more than max_bytes (0: no size limit) or the segment's newest
 * data (its mtime) is older than max_age_ms before now_ms (<= 0: no age limit). Never deletes
 * the active segment, never leaves a hole. Returns the number of segments deleted or -errno.
 */
int elog_retain(elog *l, int partition, uint64_t checkpoint_offset, uint64_t max_bytes,
                int64_t max_age_ms, int64_t now_ms);

/*
 * Calls fn(ctx, partition) each time records of the partition become readable: from the
 * appending thread after its write, or from the thread that wrote the batch policy's staged
 * records. The partition's mutex is held: fn must be quick and must not call into the log.
 * It may be changed at any time (NULL: none); once this returns the old fn is neither running
 * nor called again, so its ctx may be freed.
 */
void elog_set_readable(elog *l, void (*fn)(void *ctx, int partition), void *ctx);

/*
 * Reading. A reader sees a record as soon as its write has completed (before its fsync under
 * batch and always; see elog_write_batch for when that is), so it can tail a growing log. Readers
 * and appenders may run in different threads; one reader is used by one thread at a time. A
 * reader drops what it has read from the page cache once an fsync of the partition covers it
 * (docs/operations.md, "The log in memory"): a later reader of those records reads the disk.
 *
 * Opens a reader at from_offset (start <= from_offset <= end): ONR_E_NOTFOUND when retention
 * deleted it, ONR_E_INVALID when beyond the end. Seeking scans from the start of the segment
 * holding from_offset. Caller owns *out.
 */
int elog_reader_open(elog *l, int partition, uint64_t from_offset, elog_reader **out);
/*
 * Returns 1 with the next record (*rec valid until the next call on r; ELOG_READ_PADDING
 * bytes past its end are readable, for a parser that reads ahead), 0 when there is none
 * yet (call again later), -EBADMSG when a record on disk fails its CRC, or -errno.
 */
#define ELOG_READ_PADDING 64
int elog_reader_next(elog_reader *r, const void **rec, size_t *len, uint64_t *offset);
void elog_reader_close(elog_reader *r);

/* ---- statistics, for /metrics */

/* Upper bounds of the fsync latency histogram, microseconds; the last bucket is +Inf. */
#define ELOG_FSYNC_BUCKETS 12
/* The bound of bucket i in microseconds (UINT64_MAX for the last). */
uint64_t elog_fsync_bucket_us(int i);

struct elog_stats {
    uint64_t bytes; /* on disk, all segments */
    uint64_t segments;
    uint64_t records;        /* appended since open */
    uint64_t appended_bytes; /* framed bytes appended since open */
    uint64_t fsyncs; /* segment (and, summed, journal) fsyncs that succeeded; not directories */
    uint64_t fsync_errors;
    uint64_t write_errors;
    uint64_t truncated_bytes; /* cut from torn tails at open */
    uint64_t fsync_us_sum;
    uint64_t fsync_hist[ELOG_FSYNC_BUCKETS]; /* per bucket, not cumulative */
};

/* Fills *out for one partition, or summed over all when partition is -1. Returns 0 or
 * ONR_E_INVALID. */
int elog_stats(elog *l, int partition, struct elog_stats *out);

#endif
