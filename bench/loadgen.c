/*
 * loadgen.c - a fixed-rate, open-loop HTTP/1.1 load generator for bench/ingest.sh: request k
 * is due at start + k/rate whether or not earlier ones were answered, and its latency runs
 * from that due time to the last byte of its answer, so a stalled server is charged for the
 * requests it kept waiting (no coordinated omission). wrk measures peak rates; this measures
 * latency at a given rate, which wrk cannot (wrk2 is not packaged by Debian).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_DIGITS 12  /* the counter part of a generated messageId */
#define USER_DIGITS 6 /* a generated user number, 0..99999 */
#define READ_CHUNK 65536
#define DRAIN_NS (10 * 1000000000LL) /* answers still awaited this long after the last send */

/* --timeline: the requests due within one TIMELINE_NS of the run, so that a slow tail can be
 * told apart as stalls (a few slices of slow answers) or as a load that is slow throughout. */
#define TIMELINE_NS 100000000LL
#define SLOW_NS 5000000LL /* the latency target of docs/performance.md */
typedef struct slice {
    uint64_t n, slow; /* answered, and of them over SLOW_NS */
    int64_t max;
} slice;

/* A placeholder in the body template, replaced per request by fixed-width text. */
enum { PH_ID, PH_USER };
typedef struct hole {
    size_t at; /* offset in the request buffer */
    int kind;
} hole;

typedef struct conn {
    int fd;
    bool busy;
    bool out;      /* EPOLLOUT is asked for (a request waits for room in the socket) */
    char *req;     /* this connection's copy of the request, holes refilled per request */
    size_t sent;   /* bytes of req written */
    int64_t due;   /* due time of the request in flight */
    bool measured; /* past the warm-up */
    char *in;      /* answer bytes read so far */
    size_t in_len, in_cap;
    struct conn *next_idle;
} conn;

typedef struct opts {
    const char *host, *path, *auth, *body_file, *timeline;
    int port;
    double rate, duration, warmup;
    int connections;
} opts;

static struct {
    opts o;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *req; /* the request template: headers and body with holes */
    size_t req_len;
    hole *holes;
    size_t nholes;
    char id_prefix[16];
    uint64_t next_id;
    conn *conns;
    conn *idle;
    int ep;
    int64_t *lat; /* latencies of measured requests, ns */
    size_t nlat, lat_cap;
    int64_t from;  /* the first measured due time */
    slice *slices; /* --timeline: the measured requests by due time, TIMELINE_NS each */
    size_t nslices;
    uint64_t ok, non200, errors, late;
    int64_t last_done; /* when the last answer arrived */
    int first_bad_status;
} g;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        die("out of memory");
    return p;
}

static void usage(void)
{
    fputs("usage: loadgen --url http://ADDR:PORT/PATH --rate N --duration S --body FILE\n"
          "               [--connections N] [--warmup S] [--auth BASE64] [--timeline FILE]\n"
          "Sends POST requests at N per second, open loop, for S seconds after a warm-up\n"
          "(default 1 s, not measured), over N keep-alive connections (default 64). In the\n"
          "body, each {id} becomes a messageId never sent before and each {user} the number\n"
          "of a user drawn anew at each {id}. Prints a summary on stderr and a line\n"
          "\"loadgen-result {json}\" on stdout. --timeline writes, for each 100 ms of the\n"
          "measured run by due time, the requests answered, how many took over 5 ms, and the\n"
          "slowest (\"t_ms answered over_5ms max_us\").\n",
          stderr);
    exit(2);
}

/* http://127.0.0.1:8088/v1/track (numeric addresses only: the bench runs on loopback). */
static void parse_url(const char *url)
{
    static char host[64];
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0)
        die("--url must start with http://");
    p += 7;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof(host))
        die("--url needs a numeric address and a port");
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = 0;
    g.o.host = host;
    g.o.port = atoi(colon + 1);
    g.o.path = slash ? slash : "/";
    struct sockaddr_in *v4 = (struct sockaddr_in *)&g.addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&g.addr;
    memset(&g.addr, 0, sizeof(g.addr));
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)g.o.port);
        g.addrlen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)g.o.port);
        g.addrlen = sizeof(*v6);
    } else {
        die("--url: not a numeric IPv4 or IPv6 address");
    }
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open the --body file");
    size_t cap = 65536, n = 0;
    char *b = xrealloc(NULL, cap);
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            b = xrealloc(b, cap *= 2);
    }
    fclose(f);
    while (n && (b[n - 1] == '\n' || b[n - 1] == '\r'))
        n--; /* a template file's final newline is not part of the body */
    *len = n;
    return b;
}

/* Builds the request template: the headers, then the body with each placeholder turned into a
 * fixed-width hole, so that every request has the same length. */
static void build_request(void)
{
    size_t tlen;
    char *t = read_file(g.o.body_file, &tlen);
    char *body = xrealloc(NULL, tlen * 2 + 64);
    size_t blen = 0, hcap = 0;
    size_t id_w = strlen(g.id_prefix) + ID_DIGITS;
    hole *holes = NULL;
    size_t nholes = 0;
    for (size_t i = 0; i < tlen;) {
        int kind = -1;
        size_t skip = 0, width = 0;
        if (tlen - i >= 4 && memcmp(t + i, "{id}", 4) == 0) {
            kind = PH_ID, skip = 4, width = id_w;
        } else if (tlen - i >= 6 && memcmp(t + i, "{user}", 6) == 0) {
            kind = PH_USER, skip = 6, width = USER_DIGITS;
        }
        if (kind < 0) {
            body[blen++] = t[i++];
            continue;
        }
        if (nholes == hcap)
            holes = xrealloc(holes, (hcap = hcap ? hcap * 2 : 64) * sizeof(*holes));
        holes[nholes++] = (hole){blen, kind};
        memset(body + blen, '0', width);
        blen += width;
        i += skip;
    }
    char head[1024];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                      "%s%s%sContent-Length: %zu\r\n\r\n",
                      g.o.path, g.o.host, g.o.port, g.o.auth ? "Authorization: Basic " : "",
                      g.o.auth ? g.o.auth : "", g.o.auth ? "\r\n" : "", blen);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        die("request headers too long");
    g.req_len = (size_t)hl + blen;
    g.req = xrealloc(NULL, g.req_len);
    memcpy(g.req, head, (size_t)hl);
    memcpy(g.req + hl, body, blen);
    for (size_t i = 0; i < nholes; i++)
        holes[i].at += (size_t)hl;
    g.holes = holes;
    g.nholes = nholes;
    free(body);
    free(t);
}

/* Writes v in decimal into exactly w digits (zero-padded; the high digits drop off). */
static void put_digits(char *p, size_t w, uint64_t v)
{
    for (size_t i = w; i-- > 0;) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Each {id} takes the next counter value and draws the user of the {user}s after it, so a
 * message whose {id} comes first names one user throughout. */
static void fill_holes(char *req)
{
    size_t pl = strlen(g.id_prefix);
    uint64_t user = 0;
    for (size_t i = 0; i < g.nholes; i++) {
        char *p = req + g.holes[i].at;
        if (g.holes[i].kind == PH_ID) {
            memcpy(p, g.id_prefix, pl);
            put_digits(p + pl, ID_DIGITS, g.next_id);
            user = (g.next_id * 7919) % 100000;
            g.next_id++;
        } else {
            put_digits(p, USER_DIGITS, user);
        }
    }
}

/* ---- connections */

static void conn_open(conn *c)
{
    c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket() failed");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS)
        die("cannot connect to the server");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl failed");
    c->busy = false;
    c->out = false;
    c->in_len = 0;
}

static void push_idle(conn *c)
{
    c->next_idle = g.idle;
    g.idle = c;
}

/* Asks for EPOLLOUT or stops asking; a system call only when that changes. */
static void set_out(conn *c, bool want)
{
    if (c->out == want)
        return;
    c->out = want;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u),
                             .data.ptr = c};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void record(conn *c, int64_t now, int status)
{
    if (status == 200)
        g.ok++;
    else {
        g.non200++;
        if (!g.first_bad_status)
            g.first_bad_status = status;
    }
    g.last_done = now;
    if (c->measured) {
        if (g.nlat == g.lat_cap)
            g.lat =
                xrealloc(g.lat, (g.lat_cap = g.lat_cap ? g.lat_cap * 2 : 65536) * sizeof(*g.lat));
        g.lat[g.nlat++] = now - c->due;
        size_t k = c->due > g.from ? (size_t)((c->due - g.from) / TIMELINE_NS) : 0;
        if (k < g.nslices) {
            slice *sl = &g.slices[k];
            sl->n++;
            sl->slow += now - c->due > SLOW_NS;
            if (now - c->due > sl->max)
                sl->max = now - c->due;
        }
    }
}

/* A request failed on the wire: count it, and start over on a fresh connection. An idle
 * connection is already on the idle list and stays there. */
static void conn_fail(conn *c)
{
    bool was_busy = c->busy;
    if (was_busy)
        g.errors++;
    epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conn_open(c);
    if (was_busy)
        push_idle(c);
}

/* Returns false when the connection failed (and was replaced). */
static bool conn_write(conn *c)
{
    while (c->sent < g.req_len) {
        ssize_t n = send(c->fd, c->req + c->sent, g.req_len - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(c, true);
            return true;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_fail(c);
            return false;
        }
    }
    set_out(c, false);
    return true;
}

static void start(conn *c, int64_t due, bool measured)
{
    fill_holes(c->req);
    c->busy = true;
    c->sent = 0;
    c->due = due;
    c->measured = measured;
    c->in_len = 0;
    conn_write(c);
}

/* Parses a whole answer from c->in: returns its length (> 0), 0 when more bytes are needed,
 * or -1 when it is not HTTP. Sets *status and *close. */
static long parse_answer(const conn *c, int *status, bool *close_after)
{
    const char *b = c->in, *end = c->in + c->in_len;
    const char *hend = memmem(b, c->in_len, "\r\n\r\n", 4);
    if (!hend)
        return 0;
    if (c->in_len < 12 || memcmp(b, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(b + 9);
    *close_after = memcmp(b, "HTTP/1.0", 8) == 0;
    long clen = -1;
    bool chunked = false;
    for (const char *l = memchr(b, '\n', (size_t)(hend - b)) + 1; l < hend;) {
        const char *eol = memchr(l, '\n', (size_t)(hend + 2 - l));
        if (!eol)
            break;
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            clen = atol(l + 15);
        else if (strncasecmp(l, "Transfer-Encoding:", 18) == 0)
            chunked = memmem(l, (size_t)(eol - l), "chunked", 7) != NULL;
        else if (strncasecmp(l, "Connection:", 11) == 0)
            *close_after = memmem(l, (size_t)(eol - l), "close", 5) != NULL;
        l = eol + 1;
    }
    const char *p = hend + 4;
    if (!chunked) {
        if (clen < 0)
            return -1; /* an answer delimited by the close is not expected from either server */
        return end - p >= clen ? (long)(p - b) + clen : 0;
    }
    for (;;) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            return 0;
        long n = strtol(p, NULL, 16);
        p = eol + 2;
        if (n == 0) { /* no trailers expected: just the final CRLF */
            if (end - p < 2)
                return 0;
            return (long)(p + 2 - b);
        }
        if (end - p < n + 2)
            return 0;
        p += n + 2;
    }
}

/* One recv per readiness: epoll is level-triggered, so bytes left in the socket (an answer
 * longer than READ_CHUNK) bring the connection back at the next epoll_pwait2. */
static void conn_read(conn *c, int64_t now)
{
    bool eof = false; /* closed by the server, or reset: the bytes before it still count */
    if (c->in_cap - c->in_len < READ_CHUNK)
        c->in = xrealloc(c->in, c->in_cap += READ_CHUNK);
    ssize_t n;
    do
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->in_len += (size_t)n;
    else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    else
        eof = true;
    if (!c->busy) {
        if (c->in_len || eof)
            conn_fail(c); /* bytes nobody asked for, or an idle connection closed */
        return;
    }
    int status = 0;
    bool close_after = false;
    long used = parse_answer(c, &status, &close_after);
    if (used == 0 && !eof)
        return;
    if (used <= 0 || (size_t)used != c->in_len) {
        conn_fail(c); /* cut short, not HTTP, or more than one answer to one request */
        return;
    }
    record(c, now, status);
    c->busy = false;
    c->in_len = 0;
    if (eof || close_after || c->sent < g.req_len) { /* or answered before the whole body */
        epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        conn_open(c);
    }
    push_idle(c);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(double p)
{
    if (!g.nlat)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(g.nlat - 1) + 0.5);
    return (double)g.lat[i] / 1000.0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"url", required_argument, NULL, 'u'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"connections", required_argument, NULL, 'c'},
        {"auth", required_argument, NULL, 'a'},
        {"body", required_argument, NULL, 'b'},
        {"timeline", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    g.o.connections = 64;
    g.o.warmup = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case 'u':
            url = optarg;
            break;
        case 'r':
            g.o.rate = atof(optarg);
            break;
        case 'd':
            g.o.duration = atof(optarg);
            break;
        case 'w':
            g.o.warmup = atof(optarg);
            break;
        case 'c':
            g.o.connections = atoi(optarg);
            break;
        case 'a':
            g.o.auth = optarg;
            break;
        case 'b':
            g.o.body_file = optarg;
            break;
        case 't':
            g.o.timeline = optarg;
            break;
        default:
            usage();
        }
    }
    if (!url || !g.o.body_file || g.o.rate <= 0 || g.o.duration <= 0 || g.o.warmup < 0 ||
        g.o.connections < 1 || g.o.connections > 10000 || optind != argc)
        usage();
    parse_url(url);

    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)mono_ns();
    snprintf(g.id_prefix, sizeof(g.id_prefix), "lg%08x-", r);
    build_request();

    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0)
        die("epoll_create1 failed");
    /* The next send is timed by epoll_pwait2's timeout, which the kernel may otherwise
     * stretch by 50 us (the default timer slack), longer than one interval at 20,000/s. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    g.conns = calloc((size_t)g.o.connections, sizeof(*g.conns));
    if (!g.conns)
        die("out of memory");
    for (int i = 0; i < g.o.connections; i++) {
        g.conns[i].req = xrealloc(NULL, g.req_len);
        memcpy(g.conns[i].req, g.req, g.req_len);
        conn_open(&g.conns[i]);
        push_idle(&g.conns[i]);
    }

    const double interval = 1e9 / g.o.rate;
    const uint64_t warm_n = (uint64_t)(g.o.warmup * g.o.rate);
    const uint64_t total = warm_n + (uint64_t)(g.o.duration * g.o.rate);
    const int64_t t0 = mono_ns() + 100000000LL; /* connections settle first */
    const int64_t last_due = t0 + (int64_t)((double)(total - 1) * interval);
    const int64_t deadline = last_due + DRAIN_NS;
    g.from = t0 + (int64_t)((double)warm_n * interval);
    if (g.o.timeline) {
        g.nslices = (size_t)(g.o.duration * 1e9 / (double)TIMELINE_NS) + 1;
        g.slices = calloc(g.nslices, sizeof(*g.slices));
        if (!g.slices)
            die("out of memory");
    }
    uint64_t next = 0;
    struct epoll_event evs[256];

    for (;;) {
        int64_t now = mono_ns();
        uint64_t completed = g.ok + g.non200 + g.errors;
        if (next == total && completed == total)
            break;
        if (now >= deadline)
            break;
        while (next < total && g.idle) {
            int64_t due = t0 + (int64_t)((double)next * interval);
            if (due > now)
                break;
            conn *c = g.idle;
            g.idle = c->next_idle;
            if (now - due > 1000000)
                g.late++; /* every connection was busy for over a millisecond */
            start(c, due, next >= warm_n);
            next++;
        }
        /* Wake for the next due request if a connection is free to send it, else for an
         * answer (or the deadline). */
        int64_t wake = deadline;
        if (next < total && g.idle) {
            int64_t due = t0 + (int64_t)((double)next * interval);
            if (due < wake)
                wake = due;
        }
        int64_t wait_ns = wake > now ? wake - now : 0;
        struct timespec ts = {wait_ns / 1000000000LL, wait_ns % 1000000000LL};
        int n = epoll_pwait2(g.ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), &ts, NULL);
        if (n < 0 && errno != EINTR)
            die("epoll_pwait2 failed");
        now = mono_ns();
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) {
                if (!c->busy)
                    set_out(c, false);
                else if (!conn_write(c))
                    continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
                conn_read(c, now);
        }
    }

    uint64_t completed = g.ok + g.non200 + g.errors;
    uint64_t unfinished = total - completed;
    if (g.nlat)
        qsort(g.lat, g.nlat, sizeof(*g.lat), cmp_i64);
    double secs = (double)(total - warm_n) / g.o.rate;
    /* the rate answered: measured answers over the time from the first measured due time to
     * the last answer (longer than the schedule when the server fell behind) */
    int64_t from = g.from;
    double span = g.last_done > from ? (double)(g.last_done - from) / 1e9 : secs;
    fprintf(stderr,
            "loadgen: %.0f req/s for %.0f s (+%.0f s warm-up) over %d connections: %" PRIu64
            " answered 200, %" PRIu64 " other, %" PRIu64 " failed, %" PRIu64
            " unanswered; latency from due time p50 %.0f us, p99 %.0f us, max %.0f us\n",
            g.o.rate, g.o.duration, g.o.warmup, g.o.connections, g.ok, g.non200, g.errors,
            unfinished, pct_us(50), pct_us(99), pct_us(100));
    printf("loadgen-result {\"rate\":%.0f,\"seconds\":%.1f,\"connections\":%d,\"measured\":%zu,"
           "\"achieved_rps\":%.1f,\"ok\":%" PRIu64 ",\"non200\":%" PRIu64
           ",\"first_non200\":%d,\"errors\":%" PRIu64 ",\"unfinished\":%" PRIu64
           ",\"late_sends\":%" PRIu64 ",\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,"
           "\"p999_us\":%.0f,\"max_us\":%.0f}\n",
           g.o.rate, secs, g.o.connections, g.nlat, (double)g.nlat / span, g.ok, g.non200,
           g.first_bad_status, g.errors, unfinished, g.late, pct_us(50), pct_us(90), pct_us(99),
           pct_us(99.9), pct_us(100));
    if (g.o.timeline) {
        FILE *f = fopen(g.o.timeline, "w");
        if (!f)
            die("cannot write the --timeline file");
        for (size_t k = 0; k < g.nslices; k++)
            fprintf(f, "%lld %" PRIu64 " %" PRIu64 " %.0f\n",
                    (long long)(k * TIMELINE_NS / 1000000), g.slices[k].n, g.slices[k].slow,
                    (double)g.slices[k].max / 1000.0);
        if (fclose(f) != 0)
            die("cannot write the --timeline file");
    }
    return 0;
}
