/*
 * util.c - hashing, event-time parsing and formatting, UTF-8 validation, directory fsyncs,
 * thread names. Time
 * is always int64 milliseconds since the Unix epoch; this file is where text meets that
 * number.
 */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

uint64_t onr_hash64(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

void onr_random(void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom((char *)buf + got, n - got, 0);
        if (k > 0)
            got += (size_t)k;
        else if (errno != EINTR) {
            fprintf(stderr, "onramp: getrandom: %s\n", strerror(errno));
            abort();
        }
    }
}

void onr_random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[64];
    while (n) {
        size_t k = ONR_MIN(n, sizeof(r));
        onr_random(r, k);
        for (size_t i = 0; i < k; i++) {
            *out++ = hex[r[i] >> 4];
            *out++ = hex[r[i] & 15];
        }
        n -= k;
    }
    *out = 0;
}

onr_hasher *onr_hasher_new(uint64_t seed)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        fprintf(stderr, "onramp: out of memory allocating a hash state\n");
        abort();
    }
    XXH3_64bits_reset_withSeed(st, seed);
    return (onr_hasher *)st;
}

void onr_hasher_update(onr_hasher *h, const void *p, size_t n)
{
    XXH3_64bits_update((XXH3_state_t *)h, p, n);
}

uint64_t onr_hasher_digest(const onr_hasher *h)
{
    return XXH3_64bits_digest((const XXH3_state_t *)h);
}

void onr_hasher_free(onr_hasher *h)
{
    XXH3_freeState((XXH3_state_t *)h);
}

#define HW_BUFFER (1u << 20)

void onr_hw_init(onr_hashed_writer *w, FILE *f, uint64_t seed)
{
    long at = ftell(f);
    *w = (onr_hashed_writer){.f = f,
                             .h = onr_hasher_new(seed),
                             .buf = onr_malloc(HW_BUFFER),
                             .written = at > 0 ? (uint64_t)at : 0};
}

/* Writes n bytes, and sees them to the disk before returning when f is a file: the final
 * fsync of a file of many megabytes would put them all in the device's queue at once,
 * ahead of the event log's fsyncs (a 12 ms stall of ingest at each engine checkpoint of
 * 7 MB a shard, docs/operations.md); a step at a time, the log waits behind one at most.
 * The writeback is advisory: where the file cannot take it, the fsync still does it all. */
static void hw_write(onr_hashed_writer *w, const void *p, size_t n)
{
    if (w->err || !n)
        return;
    onr_hasher_update(w->h, p, n);
    if (fwrite(p, 1, n, w->f) != n) {
        w->err = errno ? -errno : -EIO;
        return;
    }
    int fd = fileno(w->f);
    if (fd >= 0) {
        if (fflush(w->f) != 0) {
            w->err = errno ? -errno : -EIO;
            return;
        }
        sync_file_range(fd, (off64_t)w->written, (off64_t)n,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
    }
    w->written += n;
}

void onr_hw_put(onr_hashed_writer *w, const void *p, size_t n)
{
    if (w->len + n > HW_BUFFER) {
        hw_write(w, w->buf, w->len);
        w->len = 0;
    }
    if (n > HW_BUFFER) {
        hw_write(w, p, n);
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

int onr_hw_finish(onr_hashed_writer *w, uint64_t *digest)
{
    hw_write(w, w->buf, w->len);
    w->len = 0;
    if (digest)
        *digest = onr_hasher_digest(w->h);
    onr_hasher_free(w->h);
    onr_free(w->buf);
    w->h = NULL;
    w->buf = NULL;
    return w->err;
}

/* ---- time */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, size_t at, size_t count, int *out)
{
    if (at + count > n)
        return -1;
    int v = 0;
    for (size_t i = 0; i < count; i++) {
        char c = s[at + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

/* The instant of a date and a time of day (a leap second read as :59), into *out when both
 * exist; false otherwise. */
static bool civil_ms(int y, int mo, int d, int h, int mi, int sec, int ms, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60)
        return false;
    *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * ONR_DAY_MS + h * ONR_HOUR_MS +
           mi * ONR_MINUTE_MS + (int64_t)(sec > 59 ? 59 : sec) * ONR_SECOND_MS + ms;
    return true;
}

/* The minute this thread's last timestamp in the common form fell in: a stream of events
 * mostly shares it, and then only the seconds are read. */
static _Thread_local struct {
    char key[16]; /* "YYYY-MM-DDTHH:MM", validated */
    int64_t ms;   /* its start */
} last_minute;

/* The form nearly every sender writes, "YYYY-MM-DDTHH:MM:SS.sssZ", read in one pass: true with
 * *out_ms set, as onr_time_parse would set it. Anything else, or a value out of range in that
 * form, is left to the general reader (false). */
static bool parse_common(const char *s, size_t n, int64_t *out_ms)
{
    if (n != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != '.' || s[23] != 'Z')
        return false;
#define DIGIT(i) ((unsigned)(unsigned char)s[i] - '0') /* above 9 for a byte not a digit */
    unsigned t[5] = {DIGIT(17), DIGIT(18), DIGIT(20), DIGIT(21), DIGIT(22)};
    if ((t[0] > 9) | (t[1] > 9) | (t[2] > 9) | (t[3] > 9) | (t[4] > 9))
        return false;
    int sec = (int)(t[0] * 10 + t[1]), ms = (int)(t[2] * 100 + t[3] * 10 + t[4]);
    if (sec > 60)
        return false;
    /* a leap second reads as :59 */
    int64_t within = (int64_t)(sec > 59 ? 59 : sec) * ONR_SECOND_MS + ms;
    if (memcmp(s, last_minute.key, sizeof(last_minute.key)) == 0) {
        *out_ms = last_minute.ms + within;
        return true;
    }
    unsigned v[12] = {DIGIT(0), DIGIT(1), DIGIT(2),  DIGIT(3),  DIGIT(5),  DIGIT(6),
                      DIGIT(8), DIGIT(9), DIGIT(11), DIGIT(12), DIGIT(14), DIGIT(15)};
#undef DIGIT
    if ((v[0] > 9) | (v[1] > 9) | (v[2] > 9) | (v[3] > 9) | (v[4] > 9) | (v[5] > 9) | (v[6] > 9) |
        (v[7] > 9) | (v[8] > 9) | (v[9] > 9) | (v[10] > 9) | (v[11] > 9))
        return false;
    int y = (int)(v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3]), mo = (int)(v[4] * 10 + v[5]),
        d = (int)(v[6] * 10 + v[7]), h = (int)(v[8] * 10 + v[9]), mi = (int)(v[10] * 10 + v[11]);
    int64_t minute;
    if (!civil_ms(y, mo, d, h, mi, 0, 0, &minute))
        return false;
    memcpy(last_minute.key, s, sizeof(last_minute.key));
    last_minute.ms = minute;
    *out_ms = minute + within;
    return true;
}

int onr_time_parse(const char *s, size_t n, int64_t *out_ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0;
    if (parse_common(s, n, out_ms))
        return 0;
    if (digits(s, n, 0, 4, &y) || n < 10 || s[4] != '-' || digits(s, n, 5, 2, &mo) || s[7] != '-' ||
        digits(s, n, 8, 2, &d))
        return ONR_E_PARSE;
    size_t i = 10;
    int64_t offset_ms = 0;
    if (i < n) {
        if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
            return ONR_E_PARSE;
        i++;
        if (digits(s, n, i, 2, &h) || i + 2 >= n || s[i + 2] != ':' || digits(s, n, i + 3, 2, &mi))
            return ONR_E_PARSE;
        i += 5;
        if (i < n && s[i] == ':') {
            if (digits(s, n, i + 1, 2, &sec))
                return ONR_E_PARSE;
            i += 3;
            if (i < n && (s[i] == '.' || s[i] == ',')) {
                i++;
                size_t start = i;
                int scale = 100;
                while (i < n && s[i] >= '0' && s[i] <= '9') {
                    ms += (s[i] - '0') * scale;
                    scale /= 10;
                    i++;
                }
                if (i == start)
                    return ONR_E_PARSE;
            }
        }
        if (i == n)
            return ONR_E_PARSE; /* a date-time needs a zone: Z or an offset */
        if (s[i] == 'Z' || s[i] == 'z') {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            int oh, om;
            int sign = s[i] == '-' ? -1 : 1;
            if (digits(s, n, i + 1, 2, &oh))
                return ONR_E_PARSE;
            size_t j = i + 3;
            if (j < n && s[j] == ':')
                j++;
            if (digits(s, n, j, 2, &om) || oh > 23 || om > 59)
                return ONR_E_PARSE;
            offset_ms = sign * ((int64_t)oh * ONR_HOUR_MS + (int64_t)om * ONR_MINUTE_MS);
            i = j + 2;
        } else {
            return ONR_E_PARSE;
        }
        if (i != n)
            return ONR_E_PARSE;
    }
    int64_t t;
    if (!civil_ms(y, mo, d, h, mi, sec, ms, &t))
        return ONR_E_PARSE;
    *out_ms = t - offset_ms;
    return 0;
}

/* v as exactly width decimal digits (v < 10^width). */
static char *put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

int64_t onr_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void onr_time_format(int64_t ms, char out[32])
{
    int64_t days = ms / ONR_DAY_MS;
    int64_t rem = ms % ONR_DAY_MS;
    if (rem < 0) {
        rem += ONR_DAY_MS;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int h = (int)(rem / ONR_HOUR_MS);
    int mi = (int)(rem / ONR_MINUTE_MS % 60);
    int s = (int)(rem / ONR_SECOND_MS % 60);
    int f = (int)(rem % 1000);
    if (y < 0 || y > 9999)
        y = y < 0 ? 0 : 9999;
    /* by hand, not snprintf: every stored message gets one (receivedAt) */
    char *p = out;
    p = put_digits(p, (unsigned)y, 4);
    *p++ = '-';
    p = put_digits(p, m % 13, 2);
    *p++ = '-';
    p = put_digits(p, d % 32, 2);
    *p++ = 'T';
    p = put_digits(p, (unsigned)h % 24, 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)mi % 60, 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)s % 60, 2);
    *p++ = '.';
    p = put_digits(p, (unsigned)f % 1000, 3);
    *p++ = 'Z';
    *p = 0;
}

void onr_duration_format(int64_t ms, char *out, size_t cap)
{
    char buf[96];
    size_t n = 0;
    if (ms < 0) {
        buf[n++] = '-';
        ms = ms == INT64_MIN ? INT64_MAX : -ms;
    }
    if (ms == 0) {
        snprintf(buf + n, sizeof(buf) - n, "0s");
    } else if (ms < 1000) {
        snprintf(buf + n, sizeof(buf) - n, "%lldms", (long long)ms);
    } else {
        long long d = ms / ONR_DAY_MS, h = ms / ONR_HOUR_MS % 24, m = ms / ONR_MINUTE_MS % 60;
        long long sec = ms / 1000 % 60, frac = ms % 1000;
        if (d)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%lldd", d);
        if (h)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%lldh", h);
        if (m)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%lldm", m);
        if (frac) {
            char f[8];
            snprintf(f, sizeof(f), "%03lld", frac);
            for (int i = 2; i > 0 && f[i] == '0'; i--)
                f[i] = 0;
            snprintf(buf + n, sizeof(buf) - n, "%lld.%ss", sec, f);
        } else if (sec) {
            snprintf(buf + n, sizeof(buf) - n, "%llds", sec);
        }
    }
    snprintf(out, cap, "%s", buf);
}

/* ---- UTF-8 */

bool onr_utf8_valid(const char *p, size_t n, size_t *bad_at)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min;
        if ((c & 0xe0) == 0xc0) {
            len = 2, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            goto bad;
        }
        if (i + len > n)
            goto bad;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            goto bad;
        i += len;
    }
    return true;
bad:
    if (bad_at)
        *bad_at = i;
    return false;
}

void onr_logf(onr_log_fn fn, void *ctx, const char *level, const char *fmt, ...)
{
    if (!fn)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fn(ctx, level, msg);
}

int onr_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

void onr_thread_name(const char *name, int index)
{
    char buf[64];
    if (index >= 0)
        snprintf(buf, sizeof(buf), "onramp-%s%d", name, index);
    else
        snprintf(buf, sizeof(buf), "onramp-%s", name);
    buf[15] = 0;
    pthread_setname_np(pthread_self(), buf);
}
