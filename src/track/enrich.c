/*
 * enrich.c - the device, browser and OS of a User-Agent, and the country of an IP. The
 * classifier is a few ordered token tables (first match wins), so a browser that carries
 * another's token (Edge, Opera and Samsung Internet all say "Chrome/") is listed before it.
 * The country comes from libmaxminddb, whose lookups on an opened database are read-only.
 */
#include "track/enrich.h"

#include <arpa/inet.h>
#include <errno.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* ---- User-Agent */

/* HTTP libraries and tools, recognised by the name the UA starts with (any case), followed
 * by its end, '/', ' ' or ';'. */
static const char *const libraries[] = {
    "curl",
    "Wget",
    "python-requests",
    "python-httpx",
    "Python-urllib",
    "aiohttp",
    "node-fetch",
    "node",
    "undici",
    "axios",
    "Go-http-client",
    "okhttp",
    "Java",
    "Apache-HttpClient",
    "PostmanRuntime",
    "HTTPie",
    "libwww-perl",
    "Dart",
};

/* Crawlers with a name worth keeping; the version, if any, follows the token after '/'. */
static const char *const bots[][2] = {
    {"Googlebot", "Googlebot"},
    {"bingbot", "Bingbot"},
    {"YandexBot", "YandexBot"},
    {"DuckDuckBot", "DuckDuckBot"},
    {"Baiduspider", "Baiduspider"},
    {"Applebot", "Applebot"},
    {"facebookexternalhit", "facebookexternalhit"},
    {"Twitterbot", "Twitterbot"},
    {"Slackbot", "Slackbot"},
    {"AhrefsBot", "AhrefsBot"},
    {"GPTBot", "GPTBot"},
    {"HeadlessChrome", "HeadlessChrome"},
};

/* Any other UA holding one of these (any case) is a crawler too. */
static const char *const bot_words[] = {"bot", "crawl", "spider", "slurp", "headless"};

/* In order: the first token found names the browser. The version is the number after the
 * token, or after vtoken when one is given (Safari's is in "Version/", not "Safari/"). */
static const struct {
    const char *token, *name, *vtoken;
} browsers[] = {
    {"SamsungBrowser/", "Samsung Internet", NULL},
    {"OPR/", "Opera", NULL},
    {"OPiOS/", "Opera", NULL},
    {"OPT/", "Opera", NULL},
    {"Opera Mini/", "Opera", NULL},
    {"Opera/", "Opera", NULL},
    {"EdgA/", "Edge", NULL},
    {"EdgiOS/", "Edge", NULL},
    {"Edg/", "Edge", NULL},
    {"Edge/", "Edge", NULL},
    {"FxiOS/", "Firefox", NULL},
    {"Firefox/", "Firefox", NULL},
    {"CriOS/", "Chrome", NULL},
    {"Chrome/", "Chrome", NULL},
    {"MSIE ", "Internet Explorer", NULL},
    {"Trident/", "Internet Explorer", "rv:"},
    {"Safari/", "Safari", "Version/"},
};

/* In order: iOS and Android UAs also say "Mac OS X" and "Linux". */
static const char *const oses[][2] = {
    {"iPhone", "iOS"},      {"iPad", "iOS"},       {"iPod", "iOS"},
    {"Android", "Android"}, {"CrOS", "ChromeOS"},  {"Windows", "Windows"},
    {"Macintosh", "macOS"}, {"Mac OS X", "macOS"}, {"Linux", "Linux"},
};

static const char *find(const char *h, size_t n, const char *needle)
{
    return memmem(h, n, needle, strlen(needle));
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* needle is lower case; returns the offset of the first match at or after from, or -1. */
static long ifind(const char *h, size_t n, size_t from, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = from; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && lower(h[i + j]) == needle[j])
            j++;
        if (j == m)
            return (long)i;
    }
    return -1;
}

/* The digits at p (at most 6), as a view; empty when p does not start with a digit. */
static trk_str digits(const char *p, const char *end)
{
    trk_str s = {p, 0};
    while (p + s.n < end && s.n < 6 && p[s.n] >= '0' && p[s.n] <= '9')
        s.n++;
    if (!s.n)
        s.p = NULL;
    return s;
}

static bool is_bot_word(const char *ua, size_t n)
{
    for (size_t w = 0; w < ONR_ARRAY_LEN(bot_words); w++) {
        for (long at = ifind(ua, n, 0, bot_words[w]); at >= 0;
             at = ifind(ua, n, (size_t)at + 1, bot_words[w])) {
            /* "Cubot" makes phones */
            if (w == 0 && at >= 2 && lower(ua[at - 2]) == 'c' && lower(ua[at - 1]) == 'u')
                continue;
            return true;
        }
    }
    return false;
}

static const char *library(const char *ua, size_t n, trk_str *version)
{
    for (size_t i = 0; i < ONR_ARRAY_LEN(libraries); i++) {
        size_t m = strlen(libraries[i]);
        if (m > n || strncasecmp(ua, libraries[i], m) != 0)
            continue;
        if (m < n && ua[m] != '/' && ua[m] != ' ' && ua[m] != ';')
            continue;
        if (m < n && ua[m] == '/')
            *version = digits(ua + m + 1, ua + n);
        return libraries[i];
    }
    return NULL;
}

void trk_enrich_ua(const char *ua, size_t n, trk_ua *out)
{
    memset(out, 0, sizeof(*out));
    if (!ua)
        return;
    n = ONR_MIN(n, (size_t)TRK_UA_SCAN_BYTES);
    while (n && (*ua == ' ' || *ua == '\t'))
        ua++, n--;
    if (!n)
        return;
    const char *end = ua + n;

    for (size_t i = 0; i < ONR_ARRAY_LEN(bots); i++) {
        const char *p = find(ua, n, bots[i][0]);
        if (p) {
            out->device = TRK_DEVICE_BOT;
            out->browser = bots[i][1];
            p += strlen(bots[i][0]);
            if (p < end && *p == '/')
                out->version = digits(p + 1, end);
            return;
        }
    }
    if (is_bot_word(ua, n)) {
        out->device = TRK_DEVICE_BOT;
        return;
    }
    if ((out->browser = library(ua, n, &out->version)))
        return;

    for (size_t i = 0; i < ONR_ARRAY_LEN(browsers); i++) {
        const char *p = find(ua, n, browsers[i].token);
        if (!p)
            continue;
        out->browser = browsers[i].name;
        if (browsers[i].vtoken)
            p = find(ua, n, browsers[i].vtoken);
        if (p) {
            p += strlen(browsers[i].vtoken ? browsers[i].vtoken : browsers[i].token);
            out->version = digits(p, end);
        }
        break;
    }
    for (size_t i = 0; i < ONR_ARRAY_LEN(oses); i++) {
        if (find(ua, n, oses[i][0])) {
            out->os = oses[i][1];
            break;
        }
    }

    const char *os = out->os ? out->os : "";
    if (find(ua, n, "iPad") || find(ua, n, "Tablet") || find(ua, n, "Kindle") ||
        find(ua, n, "Silk/"))
        out->device = TRK_DEVICE_TABLET;
    else if (find(ua, n, "iPhone") || find(ua, n, "iPod") || find(ua, n, "Mobi") ||
             find(ua, n, "Windows Phone"))
        out->device = TRK_DEVICE_MOBILE;
    else if (strcmp(os, "Android") == 0) /* Android browsers on phones say "Mobile" */
        out->device = TRK_DEVICE_TABLET;
    else if (out->os || out->browser)
        out->device = TRK_DEVICE_DESKTOP;
}

const char *trk_enrich_device_name(trk_device d)
{
    switch (d) {
    case TRK_DEVICE_DESKTOP:
        return "desktop";
    case TRK_DEVICE_MOBILE:
        return "mobile";
    case TRK_DEVICE_TABLET:
        return "tablet";
    case TRK_DEVICE_BOT:
        return "bot";
    default:
        return "unknown";
    }
}

/* ---- country from IP */

struct trk_geo {
    MMDB_s mmdb;
};

int trk_enrich_geo_open(const char *path, trk_geo **out, char *err, size_t errlen)
{
    trk_geo *g = onr_calloc(1, sizeof(*g));
    errno = 0;
    int st = MMDB_open(path, MMDB_MODE_MMAP, &g->mmdb);
    if (st != MMDB_SUCCESS) {
        int e = errno;
        bool io = (st == MMDB_FILE_OPEN_ERROR || st == MMDB_IO_ERROR) && e;
        snprintf(err, errlen, "cannot open the GeoIP database %s: %s%s%s", path, MMDB_strerror(st),
                 io ? ": " : "", io ? strerror(e) : "");
        onr_free(g);
        return io ? -e : ONR_E_INVALID;
    }
    *out = g;
    return 0;
}

void trk_enrich_geo_close(trk_geo *g)
{
    if (!g)
        return;
    MMDB_close(&g->mmdb);
    onr_free(g);
}

bool trk_enrich_country_addr(const trk_geo *g, const struct sockaddr *sa,
                             char cc[TRK_COUNTRY_BYTES])
{
    cc[0] = 0;
    struct sockaddr_in v4;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
            memset(&v4, 0, sizeof(v4));
            v4.sin_family = AF_INET;
            memcpy(&v4.sin_addr, v6->sin6_addr.s6_addr + 12, 4);
            sa = (const struct sockaddr *)&v4;
        }
    } else if (sa->sa_family != AF_INET) {
        return false;
    }
    int mmerr = MMDB_SUCCESS;
    MMDB_lookup_result_s res = MMDB_lookup_sockaddr(&g->mmdb, sa, &mmerr);
    if (mmerr != MMDB_SUCCESS || !res.found_entry)
        return false;
    MMDB_entry_data_s d;
    if (MMDB_get_value(&res.entry, &d, "country", "iso_code", NULL) != MMDB_SUCCESS ||
        !d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING || d.data_size == 0 ||
        d.data_size >= TRK_COUNTRY_BYTES)
        return false;
    memcpy(cc, d.utf8_string, d.data_size);
    cc[d.data_size] = 0;
    return true;
}

bool trk_enrich_country(const trk_geo *g, const char *ip, size_t n, char cc[TRK_COUNTRY_BYTES])
{
    cc[0] = 0;
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(text) || memchr(ip, 0, n))
        return false;
    memcpy(text, ip, n);
    text[n] = 0;
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } a;
    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET, text, &a.v4.sin_addr) == 1)
        a.v4.sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &a.v6.sin6_addr) == 1)
        a.v6.sin6_family = AF_INET6;
    else
        return false;
    return trk_enrich_country_addr(g, &a.sa, cc);
}
