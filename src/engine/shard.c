/*
 * shard.c - the live engine: shard threads that each own some partitions of the log and one
 * engine for their users. A shard merges its partitions' records in receive order (below
 * the source's watermark, so thread timing never changes the order), keeps the clock a
 * bounded lateness behind the newest receive time, checkpoints profiles with the offsets
 * they cover, and answers queries and reloads through a one-slot mailbox between events.
 * A restart loads the checkpoint and runs the log's tail through the same merge, so it
 * reaches the same state; fires already in the journal are not recorded again.
 */
#include "shard.h"

#include "base/json.h"
#include "track/dedup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH 256
#define IDLE_WAIT_MS 20
/* Under steady traffic a shard naps NAP_MS between batches, unwakeable by shard_notify, for
 * up to BUSY_MS after it last ran a record: ingest then skips the wake-up (a futex call for
 * it, a context switch for the shard, once per request) and the shard reads what came
 * meanwhile in one batch. Idle longer, it sleeps until notified. */
#define NAP_MS 1
#define BUSY_MS 50
#define RECENT_EVENTS 16384
#define RECENT_FIRES 4096
#define NAME_KEEP 48
#define CKPT_MAGIC "ONRSHRD2"
#define CKPT_MAGIC_V1 "ONRSHRD1" /* before checkpoints named their log */
#define FIRED_WINDOW_MS (30 * ONR_DAY_MS)
#define FIRED_MAX 4000000
#define JOURNAL_ROTATE_BYTES (64u * 1024 * 1024)
#define CKPT_WAIT_MS 3000
/* Offers kept, all partitions together (SHARD_HANDOFF_BYTES and a little more each: 16 MB),
 * shared out evenly, at least HANDOFF_MIN a partition. A shard reads a record a round of the
 * log's commit after ingest offered it; at a peak of batches a shard that waits for a core
 * falls further behind, and an offer overwritten before it is taken costs a parse. */
#define HANDOFF_OFFERS 32768
#define HANDOFF_MIN 32
#define PREFETCH_AHEAD 4 /* records: the distance of an offer's user prefetch */
#define PEEK_BYTES 160   /* of an offer, read for its ids */

/* One partition's next record, read and decoded but not yet run. */
typedef struct head {
    int p;
    void *reader;
    jdoc *doc;
    const void *rec;
    size_t len;
    uint64_t off;
    int64_t recv_ms;
    trk_event ev;
    bool valid;
    char pk[SHARD_HANDOFF_BYTES]; /* an offer taken: ev's strings point here */
} head;

typedef struct recent_event {
    uint64_t uid, aid; /* digests of userId and anonymousId (0: absent) */
    int64_t ts_ms;
    uint8_t kind;
    char name[NAME_KEEP];
} recent_event;

/* An identify or alias joined two ids (digests): events sent under `from` are the user's. */
typedef struct recent_join {
    uint64_t from, to;
} recent_join;

#define RECENT_JOINS 4096
#define USER_IDS 16 /* ids of one user a query follows */

typedef struct recent_fire {
    uint64_t id, user;
    int64_t at_ms;
    bool held_out;
    char trigger[NAME_KEEP];
} recent_fire;

enum { Q_USER = 1, Q_EXPLAIN, Q_COUNTS, Q_RELOAD };

/* A request to a shard, answered by its thread between two events. */
typedef struct query {
    int kind;
    const char *key;
    size_t klen;
    onr_buf *out;
    const rule_set *rs;           /* Q_RELOAD */
    uint64_t gen;                 /* Q_RELOAD: the generation of rs's schema */
    uint64_t *seg, *fires, *held; /* Q_COUNTS: added to */
    eng_stats st;
    uint64_t suppressed, decode_errors; /* Q_COUNTS */
    char *err;
    size_t errlen;
    int rc;
    bool done;
} query;

typedef struct shard {
    shard_set *set;
    int index;
    pthread_t thread;
    bool started;
    eng *e;
    const rule_set *rs;
    uint64_t gen; /* of rs's schema (shard_handoff_gen) */
    head *heads;
    int nheads;
    uint64_t *ready_at; /* per head: the log's end when the shard started */
    bool ready;

    pthread_mutex_t mu;
    pthread_cond_t wake, answered;
    atomic_bool notified; /* set by shard_notify: records (or a query) may be waiting */
    atomic_bool sleeping; /* the thread is (about to be) waiting on wake */
    query *q;

    int64_t last_wm;
    int64_t ckpt_wait_since; /* a due checkpoint waits for the log's fsync since then */
    bool dirty;              /* something ran since the last checkpoint */

    recent_event *events;
    uint64_t nevents;
    recent_fire *fires;
    uint64_t nfires;
    recent_join *joins;
    uint64_t njoins;
    onr_buf line; /* a fire journal line */

    uint64_t decode_errors, suppressed;
    bool read_error_logged;

    /* the checkpoints written, and the last one's size and time (read by /metrics) */
    _Atomic uint64_t ckpts, ckpt_bytes, ckpt_us;
    /* records decoded from an offer, and read from the log (read by /metrics) */
    _Atomic uint64_t taken, parsed;
} shard;

/* One offer: a seqlock (seq odd while written) over an event packed by ingest. */
typedef struct hslot {
    _Atomic uint64_t seq;
    _Atomic uint64_t offset, gen;
    _Atomic int64_t recv_ms;
    _Atomic uint32_t len;
    char data[SHARD_HANDOFF_BYTES];
} hslot;

struct shard_set {
    shard_opts o;
    shard *sh;
    int n;
    rule_set *rules;
    pthread_mutex_t qmu;        /* one query or reload at a time */
    _Atomic uint64_t *consumed; /* per partition: the next offset to run */
    atomic_bool stop;
    atomic_int nready;
    trk_dedup *fired;
    pthread_mutex_t jmu;
    int journal_fd;
    uint64_t journal_bytes;
    char *edir;
    int ckpt_error; /* first checkpoint error, for shard_stop */

    hslot *hand;           /* hslots per partition */
    uint64_t hslots;       /* shard_handoff_slots */
    pthread_mutex_t hmu;   /* guards the copy of the schema */
    _Atomic uint64_t hgen; /* of the schema below */
    uint64_t gens;         /* the last generation given out (under qmu) */
    trk_schema hschema;    /* the rules' schema, names in hnames */
    onr_buf hnames;
};

#define logf_(s, level, ...) onr_logf((s)->o.logf, (s)->o.log_ctx, level, __VA_ARGS__)

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
    return mono_us() / 1000;
}

static uint64_t id_digest(trk_str s)
{
    return s.n ? onr_hash64(s.p, s.n, 0x69647321) | 1 : 0;
}

/* ---- the fire journal: one JSON line per recorded fire; its ids survive restarts */

/* Appends o's line, formatted in b (the shard's, reused: no allocation once it has grown). */
static void journal_write(shard_set *s, onr_buf *b, const eng_out *o, const char *trigger)
{
    char t[32];
    onr_time_format(o->at_ms, t);
    onr_buf_clear(b);
    onr_buf_printf(b, "{\"id\":\"%016llx\",\"at_ms\":%lld,\"at\":\"%s\",\"trigger\":",
                   (unsigned long long)o->id, (long long)o->at_ms, t);
    jw_strz(b, trigger);
    onr_buf_puts(b, ",\"user\":");
    jw_str(b, o->user, o->user_len);
    onr_buf_printf(b, ",\"held_out\":%s,\"recorded_ms\":%lld}\n", o->held_out ? "true" : "false",
                   (long long)onr_wall_ms());
    pthread_mutex_lock(&s->jmu);
    if (s->journal_fd >= 0) {
        ssize_t w = s->o.journal_write
                        ? s->o.journal_write(s->o.journal_write_ctx, s->journal_fd, b->data, b->len)
                        : write(s->journal_fd, b->data, b->len);
        int e = errno;
        if (w == (ssize_t)b->len) {
            s->journal_bytes += b->len;
        } else {
            /* a line cut short (a full disk) is cut off, or the next line would join it and
             * both would go unread; the fire stands, and a restart may record it again */
            if (w > 0 && ftruncate(s->journal_fd, (off_t)s->journal_bytes) != 0) {
                logf_(s, "error", "cutting a short line off the fire journal failed: %s",
                      strerror(errno));
                struct stat st; /* what is there, so that a later cut spares whole lines */
                if (fstat(s->journal_fd, &st) == 0)
                    s->journal_bytes = (uint64_t)st.st_size;
            }
            logf_(s, "error", "writing the fire journal failed: %s",
                  w < 0 ? strerror(e) : "short write");
        }
    }
    pthread_mutex_unlock(&s->jmu);
}

/* Reads the ids of recorded fires from one journal file into s->fired; *whole (may be NULL)
 * is the size of its lines that end in a newline. */
static long journal_load(shard_set *s, const char *path, uint64_t *whole)
{
    if (whole)
        *whole = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    jdoc *doc = jdoc_new(64 * 1024);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long count = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        jval root;
        char err[128];
        if (line[n - 1] == '\n' && whole)
            *whole += (uint64_t)n;
        if (jdoc_parse(doc, line, (size_t)n, &root, err, sizeof(err)))
            continue; /* a torn last line */
        size_t idn = 0;
        const char *id = jval_str(jval_getz(root, "id"), &idn);
        jval at = jval_getz(root, "at_ms");
        if (!id || idn != 16 || jval_type(at) != J_NUMBER)
            continue;
        char hex[17];
        memcpy(hex, id, 16);
        hex[16] = 0;
        trk_dedup_add(s->fired, strtoull(hex, NULL, 16), (int64_t)jval_number(at));
        count++;
    }
    /* a read error is not the end of the file: nothing may be cut after it */
    long rc = ferror(f) ? -(errno ? errno : EIO) : count;
    free(line);
    jdoc_free(doc);
    fclose(f);
    return rc;
}

static int journal_open(shard_set *s, char *err, size_t errlen)
{
    char path[4096], old[4100];
    snprintf(path, sizeof(path), "%s/fires.jsonl", s->edir);
    snprintf(old, sizeof(old), "%s.1", path);
    uint64_t whole = 0;
    long a = journal_load(s, old, NULL), b = a < 0 ? 0 : journal_load(s, path, &whole);
    if (a < 0 || b < 0) {
        snprintf(err, errlen, "cannot read the fire journal in %s: %s", s->edir,
                 strerror((int)-(a < 0 ? a : b)));
        return (int)(a < 0 ? a : b);
    }
    s->journal_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->journal_fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open the fire journal %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    s->journal_bytes = fstat(s->journal_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (s->journal_bytes > whole) {
        /* a line cut short by a crash: new lines would be appended to it and lost with it */
        if (ftruncate(s->journal_fd, (off_t)whole) != 0) {
            int e = errno;
            snprintf(err, errlen, "cannot cut the torn last line of the fire journal %s: %s", path,
                     strerror(e));
            return -e;
        }
        logf_(s, "warn", "fire journal %s: cut the %llu bytes of a torn last line", path,
              (unsigned long long)(s->journal_bytes - whole));
        s->journal_bytes = whole;
    }
    if (a + b > 0)
        logf_(s, "info", "fire journal: %ld recorded fire ids loaded", a + b);
    return 0;
}

/* Makes the journal durable (before a checkpoint that covers its fires); rotates it when
 * large, keeping one previous file, which holds every id a restart can still meet. */
static int journal_sync(shard_set *s)
{
    int rc = 0;
    pthread_mutex_lock(&s->jmu);
    if (s->journal_fd >= 0 && fsync(s->journal_fd) != 0)
        rc = -errno;
    if (!rc && s->journal_bytes > JOURNAL_ROTATE_BYTES) {
        char path[4096], old[4100];
        snprintf(path, sizeof(path), "%s/fires.jsonl", s->edir);
        snprintf(old, sizeof(old), "%s.1", path);
        if (rename(path, old) == 0) {
            close(s->journal_fd);
            s->journal_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            s->journal_bytes = 0;
            if (s->journal_fd < 0)
                rc = -errno;
        }
    }
    pthread_mutex_unlock(&s->jmu);
    return rc;
}

/* ---- the engine's outputs */

static void on_output(void *ctx, const eng_out *o)
{
    shard *sh = ctx;
    shard_set *s = sh->set;
    if (o->kind != EO_TRIGGER_FIRED)
        return;
    if (trk_dedup_seen(s->fired, o->id, o->at_ms)) {
        sh->suppressed++; /* recorded before a restart */
        return;
    }
    trk_dedup_add(s->fired, o->id, o->at_ms);
    journal_write(s, &sh->line, o, sh->rs->triggers[o->trigger].name);
    recent_fire *f = &sh->fires[sh->nfires++ % RECENT_FIRES];
    f->id = o->id;
    f->user = id_digest((trk_str){o->user, (uint32_t)o->user_len});
    f->at_ms = o->at_ms;
    f->held_out = o->held_out;
    snprintf(f->trigger, sizeof(f->trigger), "%s", sh->rs->triggers[o->trigger].name);
}

/* ---- checkpoints */

static void ckpt_path(const shard *sh, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/shard-%d-of-%d.ckpt", sh->set->edir, sh->index, sh->set->n);
}

typedef struct ckpt_hdr {
    char magic[8];
    uint32_t shards, index, partitions, nheads;
    uint64_t fingerprint;
    uint64_t source_len, path_len;
    char log_id[SHARD_LOG_ID_MAX]; /* shard_source.id, zero-padded */
    uint64_t check;                /* digest of the header (this member zero) */
} ckpt_hdr;

/* The source's log id as the checkpoint header holds it. */
static void ckpt_log_id(const shard_source *src, char out[SHARD_LOG_ID_MAX])
{
    memset(out, 0, SHARD_LOG_ID_MAX);
    if (src->id)
        memcpy(out, src->id, ONR_MIN(strlen(src->id), (size_t)SHARD_LOG_ID_MAX));
}

/* Writes the checkpoint: the offsets run so far, the rules' text, and the engine. Only
 * when every offset is durable in the log, so that the checkpoint never holds the effects
 * of records a power loss could take away. Returns 1 when written, 0 when deferred. */
static int checkpoint(shard *sh)
{
    shard_set *s = sh->set;
    const shard_source *src = &s->o.src;
    for (int i = 0; i < sh->nheads; i++) {
        int p = sh->heads[i].p;
        if (atomic_load(&s->consumed[p]) > src->synced(src->ctx, p))
            return 0;
    }
    int rc = journal_sync(s);
    if (rc) {
        logf_(s, "error", "fsync of the fire journal failed: %s", strerror(-rc));
        return rc;
    }
    int64_t t0 = mono_us();
    char path[4096], tmp[4200];
    ckpt_path(sh, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = -errno;
        goto fail;
    }
    const rule_set *rs = sh->rs;
    ckpt_hdr h = {.shards = (uint32_t)s->n,
                  .index = (uint32_t)sh->index,
                  .partitions = (uint32_t)s->o.partitions,
                  .nheads = (uint32_t)sh->nheads,
                  .fingerprint = rule_layout_fingerprint(rs),
                  .source_len = strlen(rs->source),
                  .path_len = strlen(rs->path)};
    memcpy(h.magic, CKPT_MAGIC, 8);
    ckpt_log_id(src, h.log_id);
    h.check = onr_hash64(&h, sizeof(h), 0x73686472);
    bool ok = fwrite(&h, sizeof(h), 1, f) == 1;
    for (int i = 0; ok && i < sh->nheads; i++) {
        uint64_t pair[2] = {(uint64_t)sh->heads[i].p, atomic_load(&s->consumed[sh->heads[i].p])};
        ok = fwrite(pair, sizeof(pair), 1, f) == 1;
    }
    ok = ok && fwrite(rs->source, 1, h.source_len, f) == h.source_len &&
         fwrite(rs->path, 1, h.path_len, f) == h.path_len;
    if (!ok) {
        rc = errno ? -errno : -EIO;
        fclose(f);
        goto fail;
    }
    rc = eng_save(sh->e, f);
    if (!rc && fflush(f) != 0)
        rc = -errno;
    long bytes = rc ? 0 : ftell(f);
    if (!rc && fsync(fileno(f)) != 0)
        rc = -errno;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
    if (rc)
        goto fail;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto fail;
    }
    rc = onr_fsync_dir(s->edir);
    if (rc)
        goto fail;
    sh->dirty = false;
    atomic_store(&sh->ckpt_bytes, bytes > 0 ? (uint64_t)bytes : 0);
    atomic_store(&sh->ckpt_us, (uint64_t)(mono_us() - t0));
    atomic_fetch_add(&sh->ckpts, 1);
    if (src->retain)
        for (int i = 0; i < sh->nheads; i++)
            src->retain(src->ctx, sh->heads[i].p, atomic_load(&s->consumed[sh->heads[i].p]));
    return 1;
fail:
    unlink(tmp);
    logf_(s, "error", "shard %d: writing its checkpoint %s failed: %s", sh->index, path,
          strerror(-rc));
    if (!s->ckpt_error)
        s->ckpt_error = rc;
    return rc;
}

/* Loads the shard's checkpoint when there is one: fills the offsets and the engine. Rules
 * that lay profiles out differently from the checkpoint's are reached by loading under the
 * checkpoint's own rules and reloading. Returns 0 (loaded, or none) or a negative code. */
static int load_checkpoint(shard *sh, uint64_t *offsets, bool *found, char *err, size_t errlen)
{
    shard_set *s = sh->set;
    char path[4096];
    ckpt_path(sh, path, sizeof(path));
    *found = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        snprintf(err, errlen, "cannot open the checkpoint %s: %s", path, strerror(e));
        return -e;
    }
    int rc = ONR_E_INVALID;
    char *source = NULL, *rpath = NULL;
    rule_set *old = NULL;
    eng *e = NULL;
    ckpt_hdr h;
    memset(&h, 0, sizeof(h)); /* a short read leaves no byte unset */
    if (fread(&h, sizeof(h), 1, f) != 1 || memcmp(h.magic, CKPT_MAGIC, 8) != 0) {
        if (memcmp(h.magic, CKPT_MAGIC_V1, 8) == 0)
            snprintf(err, errlen,
                     "%s was written by an older onramp, which did not record the event log's "
                     "id; move %s away to rebuild every profile from the log",
                     path, s->edir);
        else
            snprintf(err, errlen, "%s is not a shard checkpoint", path);
        goto out;
    }
    uint64_t check = h.check;
    h.check = 0;
    if (onr_hash64(&h, sizeof(h), 0x73686472) != check || h.nheads != (uint32_t)sh->nheads ||
        h.shards != (uint32_t)s->n || h.index != (uint32_t)sh->index ||
        h.partitions != (uint32_t)s->o.partitions || h.source_len > (64u << 20) ||
        h.path_len > 4096) {
        snprintf(err, errlen, "%s is damaged or belongs to another shard layout", path);
        goto out;
    }
    char want[SHARD_LOG_ID_MAX];
    ckpt_log_id(&s->o.src, want);
    if (memcmp(h.log_id, want, SHARD_LOG_ID_MAX) != 0) {
        snprintf(err, errlen,
                 "%s was written over another event log (id %.*s; this log's id is %.*s), so "
                 "its offsets name other records; move %s away to rebuild every profile from "
                 "this log",
                 path, SHARD_LOG_ID_MAX, h.log_id[0] ? h.log_id : "none", SHARD_LOG_ID_MAX,
                 want[0] ? want : "none", s->edir);
        goto out;
    }
    for (int i = 0; i < sh->nheads; i++) {
        uint64_t pair[2];
        if (fread(pair, sizeof(pair), 1, f) != 1 || pair[0] != (uint64_t)sh->heads[i].p) {
            snprintf(err, errlen, "%s is damaged (partition offsets)", path);
            goto out;
        }
        offsets[i] = pair[1];
    }
    source = onr_malloc(h.source_len + 1);
    rpath = onr_malloc(h.path_len + 1);
    if (fread(source, 1, h.source_len, f) != h.source_len ||
        fread(rpath, 1, h.path_len, f) != h.path_len) {
        snprintf(err, errlen, "%s is damaged (rules)", path);
        goto out;
    }
    source[h.source_len] = 0;
    rpath[h.path_len] = 0;
    const rule_set *under = s->rules;
    if (h.fingerprint != rule_layout_fingerprint(s->rules)) {
        onr_buf errs = {0};
        if (rule_compile(rpath, source, h.source_len, &old, &errs) != 0) {
            snprintf(err, errlen, "%s: the rules it was written under no longer compile", path);
            onr_buf_free(&errs);
            goto out;
        }
        onr_buf_free(&errs);
        under = old;
    }
    eng_opts eo;
    eng_opts_default(&eo);
    eo.session_timeout_ms = s->o.session_timeout_ms;
    e = eng_new(under, &eo, on_output, sh);
    char why[256];
    rc = eng_load(e, f, why, sizeof(why));
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, why);
        goto out;
    }
    if (old) {
        rc = eng_reload(e, s->rules, why, sizeof(why));
        if (rc) {
            snprintf(err, errlen, "%s: moving its users to the current rules failed: %s", path,
                     why);
            goto out;
        }
        logf_(s, "info", "shard %d: checkpoint written under other rules; users moved to %s",
              sh->index, s->rules->path);
    }
    eng_free(sh->e);
    sh->e = e;
    e = NULL;
    *found = true;
    rc = 0;
out:
    eng_free(e);
    rule_free(old);
    onr_free(source);
    onr_free(rpath);
    fclose(f);
    return rc;
}

/* ---- running records */

int shard__decode(jdoc *doc, const void *rec, size_t len, size_t padding, const rule_set *rs,
                  trk_event *ev, int64_t *recv_ms, char *err, size_t errlen)
{
    /* ingest bounds what it stores (--max-event-bytes, plus what it fills in): the replay
     * limit on a message's size does not apply to the log */
    jval root;
    int rc = jdoc_parse_padded(doc, rec, len, len + padding, &root, err, errlen);
    if (rc == 0)
        rc = trk_decode_value(root, &rs->schema, -1, ev, err, errlen);
    if (rc == 0)
        *recv_ms = ev->received_ms ? ev->received_ms : ev->ts_ms;
    return rc;
}

void shard__run(eng *e, trk_event *ev, int64_t recv_ms, int64_t lateness_ms)
{
    int64_t at = recv_ms - lateness_ms;
    if (at > eng_clock(e))
        eng_advance(e, at);
    if (ev->ts_ms > recv_ms)
        ev->ts_ms = recv_ms; /* an event cannot happen after it was received */
    eng_process(e, ev);
}

/* Where the offer for record `offset` of partition p is kept. */
static hslot *offer_slot(const shard_set *s, int p, uint64_t offset)
{
    return &s->hand[(size_t)p * s->hslots + offset % s->hslots];
}

/* Copies the first cap bytes at most of the offer for record `offset` of partition p, made
 * under sh's schema, into buf: false when there is none, or it was rewritten meanwhile (the
 * slot's seqlock). *len is the offer's whole length, *recv_ms when it was received. */
static bool read_offer(const shard *sh, int p, uint64_t offset, char *buf, size_t cap, size_t *len,
                       int64_t *recv_ms)
{
    const hslot *h = offer_slot(sh->set, p, offset);
    uint64_t seq = atomic_load_explicit(&h->seq, memory_order_acquire);
    if ((seq & 1) || atomic_load_explicit(&h->offset, memory_order_relaxed) != offset ||
        atomic_load_explicit(&h->gen, memory_order_relaxed) != sh->gen)
        return false;
    *len = atomic_load_explicit(&h->len, memory_order_relaxed);
    *recv_ms = atomic_load_explicit(&h->recv_ms, memory_order_relaxed);
    memcpy(buf, h->data, ONR_MIN(*len, cap));
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&h->seq, memory_order_relaxed) == seq;
}

/* Decodes hd's record from ingest's offer of it, when there is one under sh's schema. */
static bool take(shard *sh, head *hd)
{
    size_t len;
    int64_t recv_ms;
    if (!read_offer(sh, hd->p, hd->off, hd->pk, sizeof(hd->pk), &len, &recv_ms) ||
        len > sizeof(hd->pk))
        return false;
    trk_unpack(hd->pk, &hd->ev, &sh->rs->schema);
    hd->recv_ms = recv_ms;
    return true;
}

/* Prefetches, for the offer `ahead` records after hd's in its partition (the next records a
 * shard runs are mostly those: a request's events for one partition are received together),
 * the offer's own bytes (stage -1), or its user's index slot (0) or memory (1) as
 * eng_prefetch does. The offer is only read here and stays for take; one being rewritten is
 * passed over. */
static void prefetch_ahead(const shard *sh, const head *hd, uint64_t ahead, int stage)
{
    uint64_t off = hd->off + ahead;
    if (stage < 0) {
        const hslot *h = offer_slot(sh->set, hd->p, off);
        for (size_t i = 0; i < sizeof(*h); i += 64)
            __builtin_prefetch((const char *)h + i);
        return;
    }
    char ids[PEEK_BYTES];
    size_t len;
    int64_t recv_ms;
    trk_str uid, aid;
    if (read_offer(sh, hd->p, off, ids, sizeof(ids), &len, &recv_ms) &&
        trk_packed_ids_in(ids, ONR_MIN(len, sizeof(ids)), &uid, &aid))
        eng_prefetch(sh->e, uid, aid, stage);
}

/* Adds one to a counter only this thread writes. */
static void count_one(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void decode_head(shard *sh, head *hd)
{
    char err[256];
    hd->valid = false;
    if (take(sh, hd)) {
        count_one(&sh->taken);
        hd->valid = true;
        prefetch_ahead(sh, hd, 2 * PREFETCH_AHEAD, -1);
        prefetch_ahead(sh, hd, PREFETCH_AHEAD, 0);
        prefetch_ahead(sh, hd, PREFETCH_AHEAD / 2, 1);
        return;
    }
    for (;;) {
        count_one(&sh->parsed);
        if (shard__decode(hd->doc, hd->rec, hd->len, sh->set->o.src.padding, sh->rs, &hd->ev,
                          &hd->recv_ms, err, sizeof(err)) == 0) {
            hd->valid = true;
            /* the user's index slot, fetched while the other partitions' heads run */
            eng_prefetch(sh->e, hd->ev.user_id, hd->ev.anon_id, 0);
            return;
        }
        /* ingest validated it: only a record written by something else gets here */
        sh->decode_errors++;
        logf_(sh->set, "warn", "partition %d offset %llu: record skipped: %s", hd->p,
              (unsigned long long)hd->off, err);
        atomic_store(&sh->set->consumed[hd->p], hd->off + 1);
        int rc = sh->set->o.src.next(hd->reader, &hd->rec, &hd->len, &hd->off);
        if (rc != 1)
            return;
    }
}

static void fill(shard *sh, head *hd)
{
    if (hd->valid)
        return;
    int rc = sh->set->o.src.next(hd->reader, &hd->rec, &hd->len, &hd->off);
    if (rc == 1) {
        decode_head(sh, hd);
    } else if (rc < 0) {
        if (!sh->read_error_logged)
            logf_(sh->set, "error", "partition %d: reading the log failed: %s", hd->p,
                  strerror(-rc));
        sh->read_error_logged = true;
    }
}

static void remember_event(shard *sh, const trk_event *ev)
{
    recent_event *r = &sh->events[sh->nevents++ % RECENT_EVENTS];
    r->uid = id_digest(ev->user_id);
    r->aid = id_digest(ev->anon_id);
    r->ts_ms = ev->ts_ms;
    r->kind = (uint8_t)ev->kind;
    trk_str other = ev->kind == TRK_ALIAS ? ev->previous_id : ev->anon_id;
    if (ev->user_id.n && other.n && (ev->kind == TRK_IDENTIFY || ev->kind == TRK_ALIAS)) {
        recent_join *j = &sh->joins[sh->njoins++ % RECENT_JOINS];
        j->from = id_digest(other);
        j->to = r->uid;
    }
    size_t n = ONR_MIN(ev->name.n, NAME_KEEP - 1);
    memcpy(r->name, ev->name.p, n);
    r->name[n] = 0;
}

/* Runs up to BATCH records received before wm, in receive order (ties by partition).
 * Returns how many ran; *early says a record is read but not yet below the watermark. */
static int run_batch(shard *sh, int64_t wm, bool *early)
{
    shard_set *s = sh->set;
    int ran = 0;
    while (ran < BATCH) {
        head *best = NULL;
        for (int i = 0; i < sh->nheads; i++) {
            head *hd = &sh->heads[i];
            fill(sh, hd);
            if (hd->valid && hd->recv_ms >= wm)
                *early = true;
            else if (hd->valid && (!best || hd->recv_ms < best->recv_ms))
                best = hd;
        }
        if (!best)
            break;
        trk_event *ev = &best->ev;
        shard__run(sh->e, ev, best->recv_ms, s->o.lateness_ms);
        remember_event(sh, ev);
        atomic_store(&s->consumed[best->p], best->off + 1);
        best->valid = false;
        sh->dirty = true;
        ran++;
    }
    return ran;
}

/* ---- queries */

static bool has_id(const uint64_t *ids, int n, uint64_t d)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == d)
            return true;
    return false;
}

/* The digests of the ids a user was known by lately: the asked one, the canonical key, and
 * the ids recent identify and alias calls joined to them. Returns their count. */
static int user_ids(const shard *sh, uint64_t *ids, uint64_t want, uint64_t canon)
{
    int n = 0;
    ids[n++] = want;
    if (canon && canon != want)
        ids[n++] = canon;
    uint64_t joins = ONR_MIN(sh->njoins, (uint64_t)RECENT_JOINS);
    for (int pass = 0, grew = 1; grew && pass < 4; pass++) {
        grew = 0;
        for (uint64_t i = 0; i < joins && n < USER_IDS; i++) {
            const recent_join *j = &sh->joins[i];
            if (has_id(ids, n, j->to) && !has_id(ids, n, j->from)) {
                ids[n++] = j->from;
                grew = 1;
            }
        }
    }
    return n;
}

static void answer_user(shard *sh, query *q)
{
    q->rc = eng_user_json_open(sh->e, q->key, q->klen, q->out);
    if (q->rc)
        return;
    uint64_t want = id_digest((trk_str){q->key, (uint32_t)q->klen});
    /* the canonical key too: events sent under it after an identify */
    size_t cn = 0;
    const char *ck = eng_user_canonical(sh->e, q->key, q->klen, &cn);
    uint64_t canon = ck ? id_digest((trk_str){ck, (uint32_t)cn}) : 0;
    uint64_t ids[USER_IDS];
    int nids = user_ids(sh, ids, want, canon);
    onr_buf_puts(q->out, ",\"recent_events\":[");
    uint64_t n = ONR_MIN(sh->nevents, (uint64_t)RECENT_EVENTS);
    int shown = 0;
    for (uint64_t i = 0; i < n && shown < 50; i++) {
        const recent_event *r = &sh->events[(sh->nevents - 1 - i) % RECENT_EVENTS];
        if (!has_id(ids, nids, r->uid) && !has_id(ids, nids, r->aid))
            continue;
        char t[32];
        onr_time_format(r->ts_ms, t);
        onr_buf_printf(q->out, "%s{\"type\":\"%s\",\"at\":\"%s\"", shown++ ? "," : "",
                       trk_kind_name((trk_kind)r->kind), t);
        if (r->name[0]) {
            onr_buf_puts(q->out, ",\"name\":");
            jw_strz(q->out, r->name);
        }
        onr_buf_putc(q->out, '}');
    }
    onr_buf_puts(q->out, "],\"recent_fires\":[");
    n = ONR_MIN(sh->nfires, (uint64_t)RECENT_FIRES);
    shown = 0;
    for (uint64_t i = 0; i < n && shown < 50; i++) {
        const recent_fire *f = &sh->fires[(sh->nfires - 1 - i) % RECENT_FIRES];
        if (!has_id(ids, nids, f->user))
            continue;
        char t[32];
        onr_time_format(f->at_ms, t);
        onr_buf_printf(q->out, "%s{\"id\":\"%016llx\",\"trigger\":", shown++ ? "," : "",
                       (unsigned long long)f->id);
        jw_strz(q->out, f->trigger);
        onr_buf_printf(q->out, ",\"at\":\"%s\",\"held_out\":%s}", t,
                       f->held_out ? "true" : "false");
    }
    onr_buf_puts(q->out, "]}");
}

static void answer(shard *sh, query *q)
{
    switch (q->kind) {
    case Q_USER:
        answer_user(sh, q);
        break;
    case Q_EXPLAIN: {
        onr_buf probe = {0};
        q->rc = eng_user_json(sh->e, q->key, q->klen, &probe);
        onr_buf_free(&probe);
        if (q->rc)
            break;
        char *key = onr_malloc(q->klen + 1);
        memcpy(key, q->key, q->klen);
        key[q->klen] = 0;
        eng_explain_watch(sh->e, key);
        q->rc = eng_explain(sh->e, key, q->out);
        onr_free(key);
        break;
    }
    case Q_COUNTS: {
        const rule_set *rs = sh->rs;
        uint64_t *seg = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
        uint64_t *fi = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        uint64_t *he = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
        eng_segment_sizes(sh->e, seg);
        eng_trigger_counts(sh->e, fi, he);
        for (int i = 0; i < rs->nsegments; i++)
            q->seg[i] += seg[i];
        for (int i = 0; i < rs->ntriggers; i++) {
            q->fires[i] += fi[i];
            q->held[i] += he[i];
        }
        onr_free(seg);
        onr_free(fi);
        onr_free(he);
        eng_get_stats(sh->e, &q->st);
        q->suppressed = sh->suppressed;
        q->decode_errors = sh->decode_errors;
        break;
    }
    case Q_RELOAD:
        q->rc = eng_reload(sh->e, q->rs, q->err, q->errlen);
        if (!q->rc) {
            sh->rs = q->rs;
            sh->gen = q->gen;
            for (int i = 0; i < sh->nheads; i++)
                if (sh->heads[i].valid)
                    decode_head(sh, &sh->heads[i]); /* the new rules read other fields */
            sh->dirty = true;
        }
        break;
    default:
        q->rc = ONR_E_INVALID;
        break;
    }
}

static void serve_query(shard *sh)
{
    pthread_mutex_lock(&sh->mu);
    query *q = sh->q;
    pthread_mutex_unlock(&sh->mu);
    if (!q)
        return;
    answer(sh, q);
    pthread_mutex_lock(&sh->mu);
    q->done = true;
    sh->q = NULL;
    pthread_cond_broadcast(&sh->answered);
    pthread_mutex_unlock(&sh->mu);
}

/* Asks shard sh and waits for the answer. Callers hold s->qmu. */
static void ask(shard *sh, query *q)
{
    pthread_mutex_lock(&sh->mu);
    q->done = false;
    sh->q = q;
    pthread_cond_signal(&sh->wake);
    while (!q->done)
        pthread_cond_wait(&sh->answered, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
}

/* ---- the shard thread */

static bool caught_up(shard *sh)
{
    for (int i = 0; i < sh->nheads; i++)
        if (atomic_load(&sh->set->consumed[sh->heads[i].p]) < sh->ready_at[i])
            return false;
    return true;
}

/* Sleeps until notified, asked, stopped or ms pass; a nap is not ended by notifies. With
 * shard_notify this is the usual pairing: each side writes its flag, then reads the other's,
 * so one of them sees the other and no wake is lost, while a busy shard costs a notifier no
 * lock. */
static void wait_for_work(shard *sh, int64_t ms, bool nap)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    until.tv_sec += ms / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&sh->mu);
    atomic_store(&sh->sleeping, !nap);
    while ((nap || !atomic_load(&sh->notified)) && !sh->q && !atomic_load(&sh->set->stop))
        if (pthread_cond_timedwait(&sh->wake, &sh->mu, &until) == ETIMEDOUT)
            break;
    atomic_store(&sh->sleeping, false);
    pthread_mutex_unlock(&sh->mu);
    atomic_store(&sh->notified, false);
}

static void wake(shard *sh)
{
    atomic_store(&sh->notified, true);
    if (!atomic_load(&sh->sleeping))
        return;
    pthread_mutex_lock(&sh->mu);
    pthread_cond_signal(&sh->wake);
    pthread_mutex_unlock(&sh->mu);
}

/* Checkpoints when one is due. Returns true while one waits for the log to make the offsets
 * run durable: the shard then holds further records (under everysec, up to about a second;
 * past CKPT_WAIT_MS it gives up until the next interval). */
static bool checkpoint_due(shard *sh, int64_t *last)
{
    shard_set *s = sh->set;
    int64_t now = mono_ms();
    if (!sh->dirty || now - *last < s->o.checkpoint_ms)
        return false;
    int rc = checkpoint(sh);
    if (rc == 0 && !sh->ckpt_wait_since) {
        sh->ckpt_wait_since = now;
        return true;
    }
    if (rc == 0 && now - sh->ckpt_wait_since <= CKPT_WAIT_MS)
        return true;
    if (rc == 0)
        logf_(s, "warn",
              "shard %d: checkpoint skipped: the log did not fsync what ran within %d ms",
              sh->index, CKPT_WAIT_MS);
    *last = now; /* written, failed, or given up: the next one after an interval */
    sh->ckpt_wait_since = 0;
    return false;
}

static void *shard_main(void *arg)
{
    shard *sh = arg;
    shard_set *s = sh->set;
    const shard_source *src = &s->o.src;
    onr_thread_name("shard", sh->index);
    /* shard i's first checkpoint is due (i + 1) / n of an interval after the start, so that
     * the shards' checkpoints take their turns rather than all writing at once */
    int64_t last_ckpt = mono_ms() - s->o.checkpoint_ms * (s->n - 1 - sh->index) / s->n,
            last_ran = 0;
    for (;;) {
        serve_query(sh);
        bool stopping = atomic_load(&s->stop);
        /* at stop, ingest is closed: everything in the log is ready to run */
        int64_t wm = stopping ? INT64_MAX : src->watermark(src->ctx);
        if (wm < 0)
            wm = sh->last_wm;
        else if (wm > sh->last_wm)
            sh->last_wm = wm;
        bool holding = !stopping && checkpoint_due(sh, &last_ckpt), early = false;
        int ran = holding ? 0 : run_batch(sh, wm, &early);
        if (!sh->ready && caught_up(sh)) {
            sh->ready = true;
            atomic_fetch_add(&s->nready, 1);
        }
        if (ran == BATCH)
            continue;
        if (stopping)
            break;
        if (ran)
            last_ran = mono_ms();
        /* nothing below the watermark is left: the clock may follow it */
        if (!holding && wm - s->o.lateness_ms > eng_clock(sh->e))
            eng_advance(sh->e, wm - s->o.lateness_ms);
        /* busy lately: a nap, and the next batch takes what came meanwhile; else a record
         * waits for the watermark (the next millisecond, or a request finishing) */
        if (ran || (!holding && !early && mono_ms() - last_ran < BUSY_MS))
            wait_for_work(sh, NAP_MS, true);
        else
            wait_for_work(sh, holding || early ? 1 : IDLE_WAIT_MS, false);
    }
    /* the final checkpoint waits (briefly) for the log to make the offsets durable */
    for (int tries = 0; sh->dirty && tries < 300; tries++) {
        if (checkpoint(sh) != 0)
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (sh->dirty)
        logf_(s, "warn",
              "shard %d: stopped without a final checkpoint; the next start runs "
              "more of the log",
              sh->index);
    return NULL;
}

/* ---- set up and tear down */

static int mkdir_one(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

static void shard_free_one(shard *sh)
{
    if (!sh->set) /* a start failed before init_shard reached it */
        return;
    const shard_source *src = &sh->set->o.src;
    for (int i = 0; i < sh->nheads; i++) {
        if (sh->heads[i].reader)
            src->close(sh->heads[i].reader);
        jdoc_free(sh->heads[i].doc);
    }
    onr_free(sh->heads);
    onr_free(sh->ready_at);
    onr_free(sh->events);
    onr_free(sh->fires);
    onr_free(sh->joins);
    onr_buf_free(&sh->line);
    eng_free(sh->e);
    pthread_mutex_destroy(&sh->mu);
    pthread_cond_destroy(&sh->wake);
    pthread_cond_destroy(&sh->answered);
}

/* ---- the handoff */

/* Copies schema `from` into *to, with its names in *names. */
static void copy_schema(const trk_schema *from, trk_schema *to, onr_buf *names)
{
    size_t at[2][TRK_MAX_FIELDS];
    onr_buf_clear(names);
    for (uint32_t i = 0; i < from->nprops; i++) {
        at[0][i] = names->len;
        onr_buf_put(names, from->props[i], strlen(from->props[i]) + 1);
    }
    for (uint32_t i = 0; i < from->ntraits; i++) {
        at[1][i] = names->len;
        onr_buf_put(names, from->traits[i], strlen(from->traits[i]) + 1);
    }
    memset(to, 0, sizeof(*to));
    to->nprops = from->nprops;
    to->ntraits = from->ntraits;
    for (uint32_t i = 0; i < from->nprops; i++)
        to->props[i] = names->data + at[0][i];
    for (uint32_t i = 0; i < from->ntraits; i++)
        to->traits[i] = names->data + at[1][i];
}

static void publish_schema(shard_set *s, const trk_schema *schema, uint64_t gen)
{
    pthread_mutex_lock(&s->hmu);
    copy_schema(schema, &s->hschema, &s->hnames);
    atomic_store(&s->hgen, gen);
    pthread_mutex_unlock(&s->hmu);
}

uint64_t shard_handoff_slots(const shard_set *s)
{
    return s->hslots;
}

uint64_t shard_handoff_gen(shard_set *s)
{
    return atomic_load_explicit(&s->hgen, memory_order_acquire);
}

uint64_t shard_handoff_schema(shard_set *s, trk_schema *out, onr_buf *names)
{
    pthread_mutex_lock(&s->hmu);
    copy_schema(&s->hschema, out, names);
    uint64_t gen = atomic_load(&s->hgen);
    pthread_mutex_unlock(&s->hmu);
    return gen;
}

void shard_offer(shard_set *s, int p, uint64_t offset, uint64_t gen, int64_t recv_ms,
                 const void *packed, size_t len)
{
    if (p < 0 || p >= s->o.partitions || len > SHARD_HANDOFF_BYTES)
        return;
    hslot *h = offer_slot(s, p, offset);
    uint64_t seq = atomic_load_explicit(&h->seq, memory_order_relaxed);
    if ((seq & 1) || !atomic_compare_exchange_strong_explicit(
                         &h->seq, &seq, seq + 1, memory_order_relaxed, memory_order_relaxed))
        return; /* another offer is being written there: this one is left out */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&h->offset, offset, memory_order_relaxed);
    atomic_store_explicit(&h->gen, gen, memory_order_relaxed);
    atomic_store_explicit(&h->recv_ms, recv_ms, memory_order_relaxed);
    atomic_store_explicit(&h->len, (uint32_t)len, memory_order_relaxed);
    memcpy(h->data, packed, len);
    atomic_store_explicit(&h->seq, seq + 2, memory_order_release);
}

static void set_free(shard_set *s)
{
    for (int i = 0; s->sh && i < s->n; i++)
        shard_free_one(&s->sh[i]);
    onr_free(s->sh);
    onr_free((void *)s->consumed);
    rule_free(s->rules);
    trk_dedup_free(s->fired);
    if (s->journal_fd >= 0)
        close(s->journal_fd);
    onr_free(s->edir);
    onr_free(s->hand);
    onr_buf_free(&s->hnames);
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->jmu);
    pthread_mutex_destroy(&s->hmu);
    onr_free(s);
}

static int init_shard(shard_set *s, int index, char *err, size_t errlen)
{
    shard *sh = &s->sh[index];
    const shard_source *src = &s->o.src;
    sh->set = s;
    sh->index = index;
    sh->rs = s->rules;
    sh->gen = atomic_load(&s->hgen);
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->wake, NULL);
    pthread_cond_init(&sh->answered, NULL);
    sh->events = onr_calloc(RECENT_EVENTS, sizeof(recent_event));
    sh->fires = onr_calloc(RECENT_FIRES, sizeof(recent_fire));
    sh->joins = onr_calloc(RECENT_JOINS, sizeof(recent_join));
    for (int p = index; p < s->o.partitions; p += s->n)
        sh->nheads++;
    sh->heads = onr_calloc((size_t)sh->nheads + 1, sizeof(head));
    sh->ready_at = onr_calloc((size_t)sh->nheads + 1, sizeof(uint64_t));
    uint64_t *offsets = onr_calloc((size_t)sh->nheads + 1, sizeof(uint64_t));
    for (int i = 0; i < sh->nheads; i++) {
        sh->heads[i].p = index + i * s->n;
        sh->heads[i].doc = jdoc_new(s->o.max_record);
        offsets[i] = src->start(src->ctx, sh->heads[i].p);
    }
    eng_opts eo;
    eng_opts_default(&eo);
    eo.session_timeout_ms = s->o.session_timeout_ms;
    sh->e = eng_new(s->rules, &eo, on_output, sh);
    bool found;
    int rc = load_checkpoint(sh, offsets, &found, err, errlen);
    if (rc)
        goto out;
    uint64_t behind = 0;
    for (int i = 0; i < sh->nheads; i++) {
        head *hd = &sh->heads[i];
        uint64_t start = src->start(src->ctx, hd->p);
        if (!found && start > 0)
            logf_(s, "warn",
                  "partition %d: no checkpoint, and the log before offset %llu is gone; "
                  "profiles are rebuilt from what remains",
                  hd->p, (unsigned long long)start);
        uint64_t end = src->end(src->ctx, hd->p);
        if (offsets[i] > end) {
            snprintf(err, errlen,
                     "partition %d: the checkpoint has run the log to offset %llu, but the log "
                     "ends at %llu (records it had fsynced are gone); move %s away to rebuild "
                     "from the log",
                     hd->p, (unsigned long long)offsets[i], (unsigned long long)end, s->edir);
            rc = ONR_E_INVALID;
            goto out;
        }
        rc = src->open(src->ctx, hd->p, offsets[i], &hd->reader);
        if (rc) {
            snprintf(err, errlen, "partition %d: cannot read the log from offset %llu: %s", hd->p,
                     (unsigned long long)offsets[i],
                     rc == ONR_E_NOTFOUND   ? "retention deleted it"
                     : rc < 0 && rc > -4096 ? strerror(-rc)
                                            : "bad offset");
            goto out;
        }
        atomic_store(&s->consumed[hd->p], offsets[i]);
        sh->ready_at[i] = src->end(src->ctx, hd->p);
        behind += sh->ready_at[i] - offsets[i];
    }
    logf_(s, "info", "shard %d: %s; %llu records of the log to run before it is live", index,
          found ? "checkpoint loaded" : "no checkpoint: starting empty",
          (unsigned long long)behind);
out:
    onr_free(offsets);
    return rc;
}

/* ---- the shard layout: how many shards the checkpoints in dir/engine were written by */

/* The checkpoints in edir of each shard count n in 1..MAX_SHARDS: how many files, and when
 * the newest of them was written (ns). */
typedef struct layouts {
    int files[MAX_SHARDS + 1];
    int64_t newest[MAX_SHARDS + 1];
} layouts;

static int scan_layouts(const char *edir, layouts *ls)
{
    memset(ls, 0, sizeof(*ls));
    DIR *d = opendir(edir);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        int i, n, end = 0;
        struct stat st;
        if (sscanf(de->d_name, "shard-%d-of-%d.ckpt%n", &i, &n, &end) != 2 ||
            de->d_name[end] != 0 || n < 1 || n > MAX_SHARDS || i < 0 || i >= n ||
            fstatat(dirfd(d), de->d_name, &st, 0) != 0)
            continue;
        int64_t t = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        ls->files[n]++;
        if (t > ls->newest[n])
            ls->newest[n] = t;
    }
    closedir(d);
    return 0;
}

/*
 * Sets s->n: o.shards when given, else the shard count of the newest checkpoints in edir,
 * else o.default_shards. Checkpoints are named by shard count and each holds the users of
 * its shard's partitions, so another count cannot load them. Starting that count anyway is
 * refused: its shards would rebuild from the log, losing what retention trimmed, and, with
 * the clock that follows each shard's own partitions, could judge late events differently
 * and record fires that the first run did not. The operator chooses: the old count, or
 * moving the checkpoints away.
 */
static int choose_layout(shard_set *s, char *err, size_t errlen)
{
    layouts ls;
    int rc = scan_layouts(s->edir, &ls);
    if (rc) {
        snprintf(err, errlen, "cannot list %s: %s", s->edir, strerror(-rc));
        return rc;
    }
    int newest = 0;
    for (int m = 1; m <= MAX_SHARDS; m++)
        if (ls.files[m] && (!newest || ls.newest[m] > ls.newest[newest]))
            newest = m;
    int n = s->o.shards;
    if (n <= 0)
        n = newest ? newest : s->o.default_shards > 0 ? s->o.default_shards : 1;
    n = ONR_MIN(n, ONR_MIN(s->o.partitions, MAX_SHARDS));
    s->n = n;
    char others[160];
    size_t k = 0;
    others[0] = 0;
    for (int m = 1; m <= MAX_SHARDS && k + 16 < sizeof(others); m++)
        if (ls.files[m] && m != n)
            k += (size_t)snprintf(others + k, sizeof(others) - k, "%s%d", k ? " and " : "", m);
    if (!k)
        return 0;
    if (ls.files[n]) {
        logf_(s, "warn",
              "%s also holds checkpoints written by %s shards; they are left alone, and the "
              "%d shards load their own",
              s->edir, others, n);
        return 0;
    }
    char trimmed[160] = "";
    for (int p = 0; p < s->o.partitions && !trimmed[0]; p++) {
        uint64_t start = s->o.src.start(s->o.src.ctx, p);
        if (start > 0)
            snprintf(trimmed, sizeof(trimmed),
                     "; the log before offset %llu of partition %d is gone, and the profiles "
                     "built from it with it",
                     (unsigned long long)start, p);
    }
    snprintf(err, errlen,
             "%s holds checkpoints written by %s shards, which %d shards cannot load (each "
             "holds the users of its shard's partitions). Start with --shards %d (or without "
             "--shards), or move those checkpoints away to rebuild every profile from the "
             "log%s",
             s->edir, others, n, newest, trimmed);
    return ONR_E_INVALID;
}

int shard_start(const shard_opts *o, rule_set *rules, shard_set **out, char *err, size_t errlen)
{
    shard_set *s = onr_calloc(1, sizeof(*s));
    s->o = *o;
    if (s->o.shards > MAX_SHARDS)
        s->o.shards = MAX_SHARDS;
    if (s->o.checkpoint_ms <= 0)
        s->o.checkpoint_ms = 30 * ONR_SECOND_MS;
    if (s->o.lateness_ms < 0)
        s->o.lateness_ms = 0;
    else if (s->o.lateness_ms == 0)
        s->o.lateness_ms = 2 * ONR_SECOND_MS;
    if (s->o.session_timeout_ms <= 0)
        s->o.session_timeout_ms = 30 * ONR_MINUTE_MS;
    if (!s->o.max_lag)
        s->o.max_lag = 1000000;
    if (!s->o.max_record)
        s->o.max_record = 1u << 20;
    s->rules = rules;
    s->journal_fd = -1;
    pthread_mutex_init(&s->qmu, NULL);
    pthread_mutex_init(&s->jmu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    s->hslots = ONR_MAX(HANDOFF_MIN, HANDOFF_OFFERS / ONR_MAX(s->o.partitions, 1));
    s->hand = onr_calloc((size_t)s->o.partitions * s->hslots, sizeof(hslot));
    s->gens = 1;
    publish_schema(s, &rules->schema, s->gens);
    s->consumed = onr_calloc((size_t)s->o.partitions, sizeof(*s->consumed));
    s->fired = trk_dedup_new(FIRED_MAX, FIRED_WINDOW_MS);
    size_t dl = strlen(o->dir);
    s->edir = onr_malloc(dl + 8);
    snprintf(s->edir, dl + 8, "%s/engine", o->dir);
    int rc = mkdir_one(s->edir);
    if (rc) {
        snprintf(err, errlen, "cannot create %s: %s", s->edir, strerror(-rc));
        goto fail;
    }
    if ((rc = choose_layout(s, err, errlen)))
        goto fail;
    s->sh = onr_calloc((size_t)s->n, sizeof(shard));
    if ((rc = journal_open(s, err, errlen)))
        goto fail;
    for (int i = 0; i < s->n; i++)
        if ((rc = init_shard(s, i, err, errlen)))
            goto fail;
    for (int i = 0; i < s->n; i++) {
        rc = -pthread_create(&s->sh[i].thread, NULL, shard_main, &s->sh[i]);
        if (rc) {
            snprintf(err, errlen, "cannot start a shard thread: %s", strerror(-rc));
            atomic_store(&s->stop, true);
            for (int j = 0; j < i; j++)
                pthread_join(s->sh[j].thread, NULL);
            goto fail;
        }
        s->sh[i].started = true;
    }
    *out = s;
    return 0;
fail:
    s->rules = NULL; /* the caller keeps its rules on failure */
    set_free(s);
    return rc;
}

int shard_count(const shard_set *s)
{
    return s->n;
}

int shard_stop(shard_set *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->n; i++) {
        shard *sh = &s->sh[i];
        pthread_mutex_lock(&sh->mu);
        pthread_cond_signal(&sh->wake);
        pthread_mutex_unlock(&sh->mu);
    }
    for (int i = 0; i < s->n; i++)
        if (s->sh[i].started)
            pthread_join(s->sh[i].thread, NULL);
    int rc = s->ckpt_error;
    set_free(s);
    return rc;
}

void shard_notify(shard_set *s, int p)
{
    wake(&s->sh[p % s->n]);
}

int shard_admit(shard_set *s, int p)
{
    uint64_t end = s->o.src.end(s->o.src.ctx, p), done = atomic_load(&s->consumed[p]);
    return end > done && end - done > s->o.max_lag ? 1 : 0;
}

bool shard_ready(shard_set *s)
{
    return atomic_load(&s->nready) == s->n;
}

/* ---- the management side */

int shard_reload(shard_set *s, rule_set *rules, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->qmu);
    int rc = 0;
    uint64_t gen = ++s->gens; /* never one a shard of a failed reload may still hold */
    for (int i = 0; i < s->n && !rc; i++) {
        query q = {.kind = Q_RELOAD, .rs = rules, .gen = gen, .err = err, .errlen = errlen};
        ask(&s->sh[i], &q);
        rc = q.rc;
    }
    if (!rc) {
        /* offers under the old schema are not taken by shards on the new one, nor the other
         * way round, while each shard swaps and then ingest learns the new schema */
        publish_schema(s, &rules->schema, gen);
        rule_set *old = s->rules;
        s->rules = rules;
        rule_free(old);
        logf_(s, "info", "rules reloaded from %s", rules->path);
    }
    pthread_mutex_unlock(&s->qmu);
    return rc;
}

void shard_rules_source(shard_set *s, onr_buf *out_path, onr_buf *out_source)
{
    pthread_mutex_lock(&s->qmu);
    onr_buf_puts(out_path, s->rules->path);
    onr_buf_puts(out_source, s->rules->source);
    pthread_mutex_unlock(&s->qmu);
}

static int ask_each(shard_set *s, int kind, const char *key, size_t klen, onr_buf *out)
{
    pthread_mutex_lock(&s->qmu);
    int rc = ONR_E_NOTFOUND;
    for (int i = 0; i < s->n && rc == ONR_E_NOTFOUND; i++) {
        query q = {.kind = kind, .key = key, .klen = klen, .out = out};
        ask(&s->sh[i], &q);
        rc = q.rc;
    }
    pthread_mutex_unlock(&s->qmu);
    return rc;
}

int shard_user(shard_set *s, const char *key, size_t klen, onr_buf *out)
{
    return ask_each(s, Q_USER, key, klen, out);
}

const shard_opts *shard_options(const shard_set *s)
{
    return &s->o;
}

int shard_explain(shard_set *s, const char *key, size_t klen, onr_buf *out)
{
    return ask_each(s, Q_EXPLAIN, key, klen, out);
}

typedef struct counts {
    uint64_t *seg, *fires, *held;
    eng_stats st;
    uint64_t suppressed, decode_errors;
} counts;

/* Sums every shard's counters; callers hold s->qmu (the rules cannot change meanwhile). */
static void gather(shard_set *s, counts *c)
{
    const rule_set *rs = s->rules;
    memset(c, 0, sizeof(*c));
    c->seg = onr_calloc((size_t)rs->nsegments + 1, sizeof(uint64_t));
    c->fires = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    c->held = onr_calloc((size_t)rs->ntriggers + 1, sizeof(uint64_t));
    for (int i = 0; i < s->n; i++) {
        query q = {.kind = Q_COUNTS, .seg = c->seg, .fires = c->fires, .held = c->held};
        ask(&s->sh[i], &q);
        c->st.events += q.st.events;
        c->st.users += q.st.users;
        c->st.merges += q.st.merges;
        c->st.bytes += q.st.bytes;
        c->suppressed += q.suppressed;
        c->decode_errors += q.decode_errors;
    }
}

static void counts_free(counts *c)
{
    onr_free(c->seg);
    onr_free(c->fires);
    onr_free(c->held);
}

void shard_segments_json(shard_set *s, onr_buf *out)
{
    pthread_mutex_lock(&s->qmu);
    counts c;
    gather(s, &c);
    const rule_set *rs = s->rules;
    onr_buf_puts(out, "{\"segments\":[");
    for (int i = 0; i < rs->nsegments; i++) {
        onr_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        jw_strz(out, rs->segments[i].name);
        onr_buf_printf(out, ",\"members\":%llu}", (unsigned long long)c.seg[i]);
    }
    onr_buf_printf(out, "],\"users\":%llu}", (unsigned long long)c.st.users);
    counts_free(&c);
    pthread_mutex_unlock(&s->qmu);
}

void shard_triggers_json(shard_set *s, onr_buf *out)
{
    pthread_mutex_lock(&s->qmu);
    counts c;
    gather(s, &c);
    const rule_set *rs = s->rules;
    onr_buf_puts(out, "{\"triggers\":[");
    for (int i = 0; i < rs->ntriggers; i++) {
        onr_buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        jw_strz(out, rs->triggers[i].name);
        onr_buf_printf(out, ",\"fires\":%llu,\"held_out\":%llu,\"holdout_percent\":%g}",
                       (unsigned long long)c.fires[i], (unsigned long long)c.held[i],
                       rs->triggers[i].holdout_bp / 100.0);
    }
    onr_buf_puts(out, "]}");
    counts_free(&c);
    pthread_mutex_unlock(&s->qmu);
}

static void prom_label(onr_buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            onr_buf_putc(out, '\\');
        if (*v == '\n')
            onr_buf_puts(out, "\\n");
        else
            onr_buf_putc(out, *v);
    }
}

/* One metric family with a series per segment (label "segment") or per trigger ("trigger"). */
static void prom_by_name(onr_buf *out, const char *metric, const char *type, const char *help,
                         const rule_set *rs, bool segments, const uint64_t *v)
{
    onr_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
    int n = segments ? rs->nsegments : rs->ntriggers;
    for (int i = 0; i < n; i++) {
        onr_buf_printf(out, "%s{%s=\"", metric, segments ? "segment" : "trigger");
        prom_label(out, segments ? rs->segments[i].name : rs->triggers[i].name);
        onr_buf_printf(out, "\"} %llu\n", (unsigned long long)v[i]);
    }
}

/* One value per shard; divisor > 0 writes v / divisor as a fraction (microseconds as
 * seconds), else v as a whole number. */
static void prom_per_shard(onr_buf *out, const char *metric, const char *type, const char *help,
                           const uint64_t *v, int n, double divisor)
{
    onr_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
    for (int i = 0; i < n; i++) {
        if (divisor > 0)
            onr_buf_printf(out, "%s{shard=\"%d\"} %.6f\n", metric, i, (double)v[i] / divisor);
        else
            onr_buf_printf(out, "%s{shard=\"%d\"} %llu\n", metric, i, (unsigned long long)v[i]);
    }
}

void shard_metrics(shard_set *s, onr_buf *out)
{
    pthread_mutex_lock(&s->qmu);
    counts c;
    gather(s, &c);
    const rule_set *rs = s->rules;
    onr_buf_printf(out,
                   "# HELP onramp_engine_events_total Events run by the engine.\n"
                   "# TYPE onramp_engine_events_total counter\n"
                   "onramp_engine_events_total %llu\n"
                   "# HELP onramp_engine_users Profiles held (merged ones excluded).\n"
                   "# TYPE onramp_engine_users gauge\n"
                   "onramp_engine_users %llu\n"
                   "# HELP onramp_engine_user_bytes Memory held for profiles and their keys.\n"
                   "# TYPE onramp_engine_user_bytes gauge\n"
                   "onramp_engine_user_bytes %llu\n"
                   "# HELP onramp_engine_identity_merges_total Profiles merged by identify or "
                   "alias.\n"
                   "# TYPE onramp_engine_identity_merges_total counter\n"
                   "onramp_engine_identity_merges_total %llu\n"
                   "# HELP onramp_engine_fires_suppressed_total Fires found in the journal "
                   "while running the log after a restart (recorded before it).\n"
                   "# TYPE onramp_engine_fires_suppressed_total counter\n"
                   "onramp_engine_fires_suppressed_total %llu\n"
                   "# HELP onramp_engine_records_skipped_total Log records that did not "
                   "decode.\n"
                   "# TYPE onramp_engine_records_skipped_total counter\n"
                   "onramp_engine_records_skipped_total %llu\n",
                   (unsigned long long)c.st.events, (unsigned long long)c.st.users,
                   (unsigned long long)c.st.bytes, (unsigned long long)c.st.merges,
                   (unsigned long long)c.suppressed, (unsigned long long)c.decode_errors);
    uint64_t taken = 0, parsed = 0;
    for (int i = 0; i < s->n; i++) {
        taken += atomic_load_explicit(&s->sh[i].taken, memory_order_relaxed);
        parsed += atomic_load_explicit(&s->sh[i].parsed, memory_order_relaxed);
    }
    onr_buf_printf(out,
                   "# HELP onramp_engine_records_decoded_total Log records the engine decoded: "
                   "from ingest's offer (taken), or by parsing the record (parsed).\n"
                   "# TYPE onramp_engine_records_decoded_total counter\n"
                   "onramp_engine_records_decoded_total{from=\"taken\"} %llu\n"
                   "onramp_engine_records_decoded_total{from=\"parsed\"} %llu\n",
                   (unsigned long long)taken, (unsigned long long)parsed);
    prom_by_name(out, "onramp_segment_members", "gauge", "Users in each segment.", rs, true, c.seg);
    prom_by_name(out, "onramp_trigger_fires_total", "counter",
                 "Fires per trigger, held out included.", rs, false, c.fires);
    prom_by_name(out, "onramp_trigger_held_out_total", "counter", "Fires held out by a holdout.",
                 rs, false, c.held);
    onr_buf_puts(out, "# HELP onramp_engine_lag_records Records in the log not yet run, per "
                      "partition.\n"
                      "# TYPE onramp_engine_lag_records gauge\n");
    for (int p = 0; p < s->o.partitions; p++) {
        uint64_t end = s->o.src.end(s->o.src.ctx, p), done = atomic_load(&s->consumed[p]);
        onr_buf_printf(out, "onramp_engine_lag_records{partition=\"%d\"} %llu\n", p,
                       (unsigned long long)(end > done ? end - done : 0));
    }
    uint64_t *v = onr_calloc((size_t)s->n, sizeof(uint64_t));
    for (int i = 0; i < s->n; i++)
        v[i] = atomic_load(&s->sh[i].ckpts);
    prom_per_shard(out, "onramp_engine_checkpoints_total", "counter",
                   "Checkpoints written, per shard.", v, s->n, 0);
    for (int i = 0; i < s->n; i++)
        v[i] = atomic_load(&s->sh[i].ckpt_bytes);
    prom_per_shard(out, "onramp_engine_checkpoint_bytes", "gauge",
                   "Size of the shard's last checkpoint.", v, s->n, 0);
    for (int i = 0; i < s->n; i++)
        v[i] = atomic_load(&s->sh[i].ckpt_us);
    prom_per_shard(out, "onramp_engine_checkpoint_seconds", "gauge",
                   "Time the shard's last checkpoint took to write, fsync and rename; the shard "
                   "runs no records meanwhile.",
                   v, s->n, 1e6);
    onr_free(v);
    counts_free(&c);
    pthread_mutex_unlock(&s->qmu);
}
