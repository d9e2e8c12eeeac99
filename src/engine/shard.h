/*
 * shard.h - the live engine of `onramp serve`: shard threads, each owning a fixed set of
 * partitions and one engine for every user in them. A shard reads its partitions' records
 * through a source (the embedded event log; Kafka later), runs them in the order they were
 * received, moves the engine's clock with the wall clock so that absences fire without
 * traffic, writes checkpoints holding the log offsets they cover, remembers the ids of the
 * fires it recorded, and answers queries and rule reloads between events. Nothing else
 * touches its users. Semantics and files: docs/operations.md, "The live engine".
 */
#ifndef ONR_SHARD_H
#define ONR_SHARD_H

#include "engine.h"

#include <stdatomic.h>
#include <sys/types.h>

typedef struct shard_set shard_set;

#define MAX_SHARDS 256

/*
 * Where records come from. Records are Segment messages as stored by ingest (JSON with a
 * `receivedAt`). Offsets are per partition and dense. Every member is required.
 */
typedef struct shard_source {
    /* Opens a reader of partition p at offset from: 0 or a negative code. */
    int (*open)(void *ctx, int p, uint64_t from, void **reader);
    /* 1 with the next record (valid until the next call), 0 when there is none yet, or a
     * negative code. */
    int (*next)(void *reader, const void **rec, size_t *len, uint64_t *offset);
    void (*close)(void *reader);
    uint64_t (*start)(void *ctx, int p);  /* the first offset still stored */
    uint64_t (*end)(void *ctx, int p);    /* the next offset to be written */
    uint64_t (*synced)(void *ctx, int p); /* offsets below this are durable */
    /*
     * The receive-time watermark: every record not yet readable was (or will be) received
     * at or after it. Returns -1 when it cannot tell right now (call again). Shards run a
     * record only once its receive time is below the watermark, so that the order of
     * records, and with it every output, does not depend on thread timing.
     */
    int64_t (*watermark)(void *ctx);
    /* Optional: called after a checkpoint covering partition p's records below offset, which
     * the source may now delete under its retention policy. */
    void (*retain)(void *ctx, int p, uint64_t offset);
    void *ctx;
    /* Optional: the log's id (at most SHARD_LOG_ID_MAX characters), kept in each checkpoint.
     * A checkpoint written over a log with another id is refused: its offsets mean other
     * records. NULL: no id (only checkpoints written without one load). */
    const char *id;
    /* Optional: how many bytes past each record's end next leaves readable (0: none). With
     * JDOC_PADDING or more, records are parsed where they are instead of copied first. */
    size_t padding;
} shard_source;

#define SHARD_LOG_ID_MAX 32

/* Options; a zero member takes the default in brackets. */
typedef struct shard_opts {
    int shards;                 /* threads, at most MAX_SHARDS and partitions; shard i owns
                                   partitions p with p % shards == i. 0: the shard count of
                                   the newest checkpoints in dir/engine, else default_shards */
    int default_shards;         /* [1] */
    int partitions;             /* of the source; required */
    const char *dir;            /* required: checkpoints and the fire journal live here */
    int64_t checkpoint_ms;      /* [30 s] between checkpoints */
    int64_t lateness_ms;        /* [2 s] how far behind the newest receive time the clock runs */
    int64_t session_timeout_ms; /* [30 min] */
    size_t max_record;          /* [1 MiB] the largest record run; longer ones are skipped
                                   (logged, counted) */
    uint64_t max_lag;           /* [1,000,000] records behind per partition before shard_admit
                                   asks senders to wait */
    /* Operator-facing messages, from any thread (must be thread-safe); NULL: silent. */
    void (*logf)(void *ctx, const char *level, const char *msg);
    void *log_ctx;
    shard_source src;
    /* Optional: write(2) for the fire journal, so that tests can fail or cut writes short;
     * returns the bytes written or -1 with errno. NULL: write(2). */
    ssize_t (*journal_write)(void *ctx, int fd, const void *buf, size_t len);
    void *journal_write_ctx;
} shard_opts;

/*
 * Starts the shards with rules (the set takes ownership). Each shard loads its checkpoint
 * (dir/engine/shard-I-of-N.ckpt) when there is one - compiling the rules the checkpoint was
 * written under when they differ from rules, and reloading from those - then runs the log
 * from the checkpoint's offsets, and then follows it live. Fires whose ids are in the fire
 * journal (dir/engine/fires.jsonl) are not recorded again. When dir/engine holds checkpoints
 * of other shard counts only, the start is refused (ONR_E_INVALID) with the way out in err.
 * Returns 0 or a negative code with a message for people in err. Caller owns *out;
 * shard_stop it.
 */
int shard_start(const shard_opts *o, rule_set *rules, shard_set **out, char *err, size_t errlen);

/* How many shards run (shard_opts.shards resolved). */
int shard_count(const shard_set *s);

/* Says that partition p has new records (wakes its shard). Any thread. */
void shard_notify(shard_set *s, int p);

/* 0 when partition p's shard keeps up, else the seconds a sender should wait (Retry-After). */
int shard_admit(shard_set *s, int p);

/* Whether every shard has run the log as far as it reached when the shard started. */
bool shard_ready(shard_set *s);

/*
 * Swaps in new rules (taking ownership on success): every shard moves its users to them at
 * a point between two events (eng_reload), then the old rules are freed. Returns 0 or a
 * negative code with a message in err; on failure the running rules stay and the caller
 * still owns rules.
 */
int shard_reload(shard_set *s, rule_set *rules, char *err, size_t errlen);

/*
 * The handoff (docs/operations.md, "Decoded events handed to the engine"). Ingest decodes each
 * message it stores while validating it; it may offer that decoding, packed (trk_pack) under
 * the schema of the shards' rules, to the shard that runs the record, which takes it instead
 * of parsing and decoding the record. A bounded cache beside the log, not a channel: a shard
 * takes an offer only for the record at the same partition and offset decoded under the
 * schema of its own rules, and otherwise reads the record; an offer overwrites an older one.
 * ev as taken has no message_id and no received_ms (the engine reads neither): recv_ms says
 * when it was received.
 */
#define SHARD_HANDOFF_BYTES 448 /* the largest packed event that can be offered */

/* The generation of the shards' schema (one per rule set swapped in; never 0). */
uint64_t shard_handoff_gen(shard_set *s);
/* Offers kept a partition: 32,768 shared out among the partitions, at least 32 each. The offer
 * for offset o takes the place of the one for o minus this. */
uint64_t shard_handoff_slots(const shard_set *s);
/* Copies that schema into *out, its names into *names (which out then points into), and
 * returns its generation. */
uint64_t shard_handoff_schema(shard_set *s, trk_schema *out, onr_buf *names);
/* Offers record `offset` of partition p, decoded under schema generation gen: len bytes of
 * trk_pack (ignored when more than SHARD_HANDOFF_BYTES), received at recv_ms. Thread-safe. */
void shard_offer(shard_set *s, int p, uint64_t offset, uint64_t gen, int64_t recv_ms,
                 const void *packed, size_t len);

/* The running rules' path and source text (appended). */
void shard_rules_source(shard_set *s, onr_buf *out_path, onr_buf *out_source);

/*
 * Queries, answered by the owning shard between events. shard_user writes the user's
 * profile (eng_user_json) with "recent_events" and "recent_fires" added; shard_explain the
 * explain report (the user is watched from the first such query on: eng_explain_watch).
 * Both return 0 or ONR_E_NOTFOUND.
 */
int shard_user(shard_set *s, const char *key, size_t klen, onr_buf *out);
int shard_explain(shard_set *s, const char *key, size_t klen, onr_buf *out);
/* {"segments":[{"name":..,"members":N}...]} and {"triggers":[{"name":..,"fires":N,
 * "held_out":N}...]} over all shards. */
void shard_segments_json(shard_set *s, onr_buf *out);
void shard_triggers_json(shard_set *s, onr_buf *out);
/* The engine's Prometheus metrics (text exposition format). */
void shard_metrics(shard_set *s, onr_buf *out);

/* The options the set was started with, defaults filled in. */
const shard_opts *shard_options(const shard_set *s);

/*
 * A dry run (dryrun.c, POST /api/replay): rs, in an engine of its own, runs every record the
 * source retains, each partition from its start to its end when the run begins, in receive
 * order across partitions (ties by partition) with the set's lateness and session timeout,
 * then the timers due by now_ms less the lateness. The live engine, its journal and its
 * checkpoints are not touched. Writes {"records","complete","skipped","gone","users",
 * "segments":[{"name","members","entered","exited"}],"triggers":[{"name","fires",
 * "held_out"}],["report",]"seconds"} to out ("gone": records retention deleted before the run
 * reached them; it goes on after them). Stops after max_records records, or when *cancel is
 * set ("complete":false; *cut, when not NULL, says the cancel stopped it). Returns 0, or a
 * negative code with a message in err when the log could not be read. Safe to call from any
 * thread while the shards run.
 */
#define SHARD_DRY_RUN_RECORDS 1000000

/* ---- how a shard reads and runs a record, shared by shard.c and dryrun.c */

/* Decodes a stored record (padding bytes past its end readable: shard_source's) into *ev
 * under rs's schema, and its receive time into *recv_ms (the event time when it has none).
 * Returns 0, or a negative code with the reason in err. */
int shard__decode(jdoc *doc, const void *rec, size_t len, size_t padding, const rule_set *rs,
                  trk_event *ev, int64_t *recv_ms, char *err, size_t errlen);
/* Runs ev, received at recv_ms, in e: the clock first follows the receive time less the
 * lateness, and an event cannot happen after it was received. */
void shard__run(eng *e, trk_event *ev, int64_t recv_ms, int64_t lateness_ms);
typedef struct shard_dry_opts {
    uint64_t max_records;      /* [SHARD_DRY_RUN_RECORDS] */
    const char *explain_user;  /* NULL: no "report" */
    int64_t now_ms;            /* 0: the last record's receive time */
    const atomic_bool *cancel; /* NULL: none */
} shard_dry_opts;
int shard_dry_run(shard_set *s, const rule_set *rs, const shard_dry_opts *o, onr_buf *out,
                  bool *cut, char *err, size_t errlen);

/* Stops the shards after the records already readable, writes a final checkpoint and frees
 * s. Returns 0 or the first checkpoint error. */
int shard_stop(shard_set *s);

#endif
