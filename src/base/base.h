/*
 * base.h - the small pieces every layer shares: error codes, the allocator wrapper,
 * arenas, growable buffers, hashing and event-time helpers. Nothing here knows about
 * events, rules or users.
 */
#ifndef ONR_BASE_H
#define ONR_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Errors are negative codes, 0 is success (like libuv); -errno values pass through. */
enum {
    ONR_OK = 0,
    ONR_E_PARSE = -10001,   /* malformed input */
    ONR_E_LIMIT = -10002,   /* a documented limit was exceeded */
    ONR_E_INVALID = -10003, /* well-formed but not acceptable */
    ONR_E_NOTFOUND = -10004,
};

#define ONR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ONR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ONR_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ONR_UNUSED(x) ((void)(x))

/* ---- allocation: out of memory aborts with a message (a decision, not an accident) */

void *onr_malloc(size_t n);
void *onr_calloc(size_t count, size_t n);
void *onr_realloc(void *p, size_t n);
char *onr_strndup(const char *s, size_t n);
char *onr_strdup(const char *s);
void onr_free(void *p);
/* Zeroed memory for a large table probed at random (the partition router, the messageId
 * set), page-aligned: from ONR_TABLE_HUGE bytes up it is mapped on its own, 2 MiB-aligned and
 * marked for transparent huge pages, which spare such probes most of their TLB misses. Pages become
 * resident as they are touched (2 MiB at a time where huge pages are granted). Free with
 * onr_free_table and the same n. */
#define ONR_TABLE_HUGE ((size_t)2 << 20)
void *onr_calloc_table(size_t n);
void onr_free_table(void *p, size_t n);

/* ---- arena: bump allocation, freed all at once. Chunks are never moved. */

typedef struct onr_arena_chunk onr_arena_chunk;
typedef struct onr_arena {
    onr_arena_chunk *head;
    size_t chunk_size;
    size_t total; /* bytes handed out */
} onr_arena;

void onr_arena_init(onr_arena *a, size_t chunk_size);
void *onr_arena_alloc(onr_arena *a, size_t n); /* 8-byte aligned, zeroed */
char *onr_arena_strndup(onr_arena *a, const char *s, size_t n);
void onr_arena_free(onr_arena *a);

/* ---- buf: a growable byte buffer */

typedef struct onr_buf {
    char *data;
    size_t len;
    size_t cap;
} onr_buf;

/* Grows b so that extra more bytes fit (and one more, for onr_buf_cstr). */
void onr_buf_grow(onr_buf *b, size_t extra);

/* The writers are inline: a JSON writer calls them for every token. */
static inline void onr_buf_reserve(onr_buf *b, size_t extra)
{
    if (b->cap - b->len <= extra)
        onr_buf_grow(b, extra);
}

static inline void onr_buf_put(onr_buf *b, const void *p, size_t n)
{
    onr_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void onr_buf_putc(onr_buf *b, char c)
{
    onr_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

static inline void onr_buf_puts(onr_buf *b, const char *s)
{
    onr_buf_put(b, s, strlen(s));
}
void onr_buf_printf(onr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void onr_buf_vprintf(onr_buf *b, const char *fmt, va_list ap);
void onr_buf_clear(onr_buf *b);
void onr_buf_free(onr_buf *b);
/* NUL-terminates without counting the NUL in len; returns data. */
const char *onr_buf_cstr(onr_buf *b);

/* ---- hashing (xxHash3) */

uint64_t onr_hash64(const void *p, size_t n, uint64_t seed);

/* Streaming form of the same hash, for checksums of large outputs. */
typedef struct onr_hasher onr_hasher;
onr_hasher *onr_hasher_new(uint64_t seed); /* caller owns it; free with onr_hasher_free */
void onr_hasher_update(onr_hasher *h, const void *p, size_t n);
uint64_t onr_hasher_digest(const onr_hasher *h);
void onr_hasher_free(onr_hasher *h);

/*
 * A file written and hashed through a 1 MiB buffer: for files of millions of small members
 * (checkpoints, the ingest state), where one hash update and one fwrite per member cost
 * more than copying it. The digest is the hash of every byte put, however it was split.
 * Each 1 MiB written is on the disk before the next is (sync_file_range), so that the
 * file's fsync does not queue megabytes ahead of other files' fsyncs.
 */
typedef struct onr_hashed_writer {
    FILE *f;
    onr_hasher *h;
    char *buf;
    size_t len;
    uint64_t written; /* the file's offset after the last write */
    int err;          /* the first failed write's -errno, else 0 */
} onr_hashed_writer;
void onr_hw_init(onr_hashed_writer *w, FILE *f, uint64_t seed);
void onr_hw_put(onr_hashed_writer *w, const void *p, size_t n);
/* Writes what is buffered and frees the buffer and the hasher; *digest (may be NULL) gets the
 * hash of every byte put. Returns 0, or the first write error as -errno. */
int onr_hw_finish(onr_hashed_writer *w, uint64_t *digest);

/* n bytes from the kernel's random source (getrandom(2)), for ids: never fails on Linux
 * >= 3.17 (it waits for the pool once, at boot). */
void onr_random(void *buf, size_t n);
/* n random bytes as 2n lowercase hex digits and a NUL in out (2n + 1 bytes). */
void onr_random_hex(char *out, size_t n);

/* ---- time: int64 milliseconds since the Unix epoch, everywhere */

#define ONR_SECOND_MS INT64_C(1000)
#define ONR_MINUTE_MS (60 * ONR_SECOND_MS)
#define ONR_HOUR_MS (60 * ONR_MINUTE_MS)
#define ONR_DAY_MS (24 * ONR_HOUR_MS)

/* Earliest and latest event times accepted (1970-01-01 .. 9999-12-31). */
#define ONR_TIME_MIN_MS INT64_C(0)
#define ONR_TIME_MAX_MS INT64_C(253402300799999)

/* The value of a hexadecimal digit (either case), or -1 for any other character. */
static inline int onr_hex_digit(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Parses an ISO-8601 / RFC 3339 date-time ("2026-11-18T11:45:02.123Z", "+01:00" offsets,
 * optional fraction) into *out_ms. Returns 0 or ONR_E_PARSE. */
int onr_time_parse(const char *s, size_t n, int64_t *out_ms);
/* The wall clock (CLOCK_REALTIME) in milliseconds, for receive times and records of when
 * something happened; the engine itself never reads it. */
int64_t onr_wall_ms(void);
/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) into out. */
void onr_time_format(int64_t ms, char out[32]);
/* Writes a duration for people, largest units first: "1m30s", "2m", "1h30m", "3d1s",
 * "1.5s", "250ms". */
void onr_duration_format(int64_t ms, char *out, size_t cap);

/* ---- UTF-8 */

/* Returns true when p[0..n) is valid UTF-8; on false, *bad_at is the first bad byte. */
bool onr_utf8_valid(const char *p, size_t n, size_t *bad_at);

/* A logger for people: level is "info", "warn" or "error"; the message is one line. Modules
 * take one (with its ctx) in their options, called from any thread. */
typedef void (*onr_log_fn)(void *ctx, const char *level, const char *msg);
/* Formats a message of at most 511 bytes and hands it to fn (nothing when fn is NULL). */
void onr_logf(onr_log_fn fn, void *ctx, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- files */

/* fsyncs the directory dir, so that a file created or renamed in it survives a power loss.
 * 0 or -errno. */
int onr_fsync_dir(const char *dir);

/* ---- threads */

/* Names the calling thread "onramp-NAME" (cut to the 15 bytes Linux keeps), as `top -H`,
 * `ps -L` and profilers show it. An optional index is appended: onr_thread_name("shard", 1)
 * is "onramp-shard1"; -1 for none. */
void onr_thread_name(const char *name, int index);

#ifdef __cplusplus
}
#endif

#endif
