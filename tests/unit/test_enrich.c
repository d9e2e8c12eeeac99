/*
 * test_enrich.c - unit tests for enrichment (src/track/enrich.c): device type, browser and
 * OS of real User-Agent strings, and the country of an address from a .mmdb built for the
 * test by tests/e2e/fixtures/make-mmdb.pl (skipped, saying why, when its Perl module is
 * missing).
 */
#include "track/enrich.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- User-Agent */

typedef struct ua_case {
    const char *ua;
    trk_device device;
    const char *browser, *version, *os; /* NULL: unknown; "" version: none */
} ua_case;

static const ua_case cases[] = {
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36",
     TRK_DEVICE_DESKTOP, "Chrome", "120", "Windows"},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
     TRK_DEVICE_MOBILE, "Safari", "17", "iOS"},
    {"Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1",
     TRK_DEVICE_TABLET, "Safari", "16", "iOS"},
    {"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
     TRK_DEVICE_DESKTOP, "Firefox", "121", "Linux"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
     TRK_DEVICE_DESKTOP, "Edge", "120", "Windows"},
    {"Mozilla/5.0 (Linux; Android 13; SM-X706B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36",
     TRK_DEVICE_TABLET, "Samsung Internet", "23", "Android"},
    {"Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
     TRK_DEVICE_MOBILE, "Samsung Internet", "23", "Android"},
    {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", TRK_DEVICE_BOT,
     "Googlebot", "2", NULL},
    {"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Chrome/119.0.6045.199 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
     "+http://www.google.com/bot.html)",
     TRK_DEVICE_BOT, "Googlebot", "2", NULL},
    {"curl/8.4.0", TRK_DEVICE_UNKNOWN, "curl", "8", NULL},
    {"", TRK_DEVICE_UNKNOWN, NULL, "", NULL},
    /* more of what ingest meets */
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.2 Safari/605.1.15",
     TRK_DEVICE_DESKTOP, "Safari", "17", "macOS"},
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36",
     TRK_DEVICE_DESKTOP, "Chrome", "120", "macOS"},
    {"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Mobile Safari/537.36",
     TRK_DEVICE_MOBILE, "Chrome", "120", "Android"},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
     TRK_DEVICE_MOBILE, "Chrome", "120", "iOS"},
    {"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36",
     TRK_DEVICE_DESKTOP, "Chrome", "120", "ChromeOS"},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0",
     TRK_DEVICE_DESKTOP, "Opera", "105", "Windows"},
    {"Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0", TRK_DEVICE_MOBILE,
     "Firefox", "121", "Android"},
    {"Mozilla/5.0 (Android 13; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0", TRK_DEVICE_TABLET,
     "Firefox", "121", "Android"},
    {"Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", TRK_DEVICE_DESKTOP,
     "Internet Explorer", "11", "Windows"},
    {"Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Mobile Safari/537.36",
     TRK_DEVICE_MOBILE, "Chrome", "120", "Android"},
    {"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", TRK_DEVICE_BOT,
     "Bingbot", "2", NULL},
    {"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", TRK_DEVICE_BOT,
     NULL, "", NULL},
    {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/120.0.6099.28 Safari/537.36",
     TRK_DEVICE_BOT, "HeadlessChrome", "120", NULL},
    {"python-requests/2.31.0", TRK_DEVICE_UNKNOWN, "python-requests", "2", NULL},
    {"node", TRK_DEVICE_UNKNOWN, "node", "", NULL},
    {"Go-http-client/1.1", TRK_DEVICE_UNKNOWN, "Go-http-client", "1", NULL},
    {"nodejs-app/1.0", TRK_DEVICE_UNKNOWN, NULL, "", NULL},
    {"   ", TRK_DEVICE_UNKNOWN, NULL, "", NULL},
};

static void check_case(const ua_case *c)
{
    trk_ua u;
    trk_enrich_ua(c->ua, strlen(c->ua), &u);
    cr_expect_eq(u.device, c->device, "%s: device %s, want %s", c->ua,
                 trk_enrich_device_name(u.device), trk_enrich_device_name(c->device));
    if (c->browser)
        cr_expect(u.browser && strcmp(u.browser, c->browser) == 0, "%s: browser %s, want %s", c->ua,
                  u.browser ? u.browser : "(none)", c->browser);
    else
        cr_expect_null(u.browser, "%s: browser %s, want none", c->ua, u.browser);
    cr_expect(u.version.n == strlen(c->version) &&
                  (u.version.n == 0 || memcmp(u.version.p, c->version, u.version.n) == 0),
              "%s: version %.*s, want %s", c->ua, (int)u.version.n, u.version.p ? u.version.p : "",
              c->version);
    if (c->os)
        cr_expect(u.os && strcmp(u.os, c->os) == 0, "%s: os %s, want %s", c->ua,
                  u.os ? u.os : "(none)", c->os);
    else
        cr_expect_null(u.os, "%s: os %s, want none", c->ua, u.os);
}

Test(enrich, user_agents_give_device_browser_version_and_os)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
}

Test(enrich, a_null_user_agent_is_unknown)
{
    trk_ua u;
    memset(&u, 0xff, sizeof(u));
    trk_enrich_ua(NULL, 0, &u);
    cr_assert_eq(u.device, TRK_DEVICE_UNKNOWN);
    cr_assert_null(u.browser);
    cr_assert_null(u.os);
    cr_assert_eq(u.version.n, 0);
}

Test(enrich, only_the_leading_bytes_are_read)
{
    /* a browser token past TRK_UA_SCAN_BYTES is not seen, nor read */
    char ua[TRK_UA_SCAN_BYTES + 64];
    memset(ua, 'x', sizeof(ua));
    memcpy(ua + TRK_UA_SCAN_BYTES, "Firefox/99", 10);
    trk_ua u;
    trk_enrich_ua(ua, sizeof(ua), &u);
    cr_assert_null(u.browser);
    memcpy(ua + TRK_UA_SCAN_BYTES - 20, "Firefox/99", 10);
    trk_enrich_ua(ua, sizeof(ua), &u);
    cr_assert_str_eq(u.browser, "Firefox");
    cr_assert_eq(u.version.n, 2);
}

Test(enrich, a_version_is_at_most_six_digits)
{
    const char *ua = "curl/12345678901";
    trk_ua u;
    trk_enrich_ua(ua, strlen(ua), &u);
    cr_assert_eq(u.version.n, 6);
    cr_assert(memcmp(u.version.p, "123456", 6) == 0);
}

Test(enrich, device_names)
{
    cr_assert_str_eq(trk_enrich_device_name(TRK_DEVICE_DESKTOP), "desktop");
    cr_assert_str_eq(trk_enrich_device_name(TRK_DEVICE_MOBILE), "mobile");
    cr_assert_str_eq(trk_enrich_device_name(TRK_DEVICE_TABLET), "tablet");
    cr_assert_str_eq(trk_enrich_device_name(TRK_DEVICE_BOT), "bot");
    cr_assert_str_eq(trk_enrich_device_name(TRK_DEVICE_UNKNOWN), "unknown");
}

/* ---- country from IP */

static char dir[64], mmdb[128];

/* Builds the test database; skips the test when the Perl writer is not installed. */
static trk_geo *open_db(void)
{
    if (system("perl -MMaxMind::DB::Writer::Tree -e 1 2>/dev/null") != 0)
        cr_skip_test("libmaxmind-db-writer-perl is not installed (scripts/deps.sh installs it): "
                     "no .mmdb to test with");
    snprintf(dir, sizeof(dir), "/tmp/onramp-enrich-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(mmdb, sizeof(mmdb), "%s/test.mmdb", dir);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "perl '%s' '%s'", MAKE_MMDB, mmdb);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    trk_geo *g = NULL;
    char err[256] = "";
    cr_assert_eq(trk_enrich_geo_open(mmdb, &g, err, sizeof(err)), 0, "%s", err);
    return g;
}

static void close_db(trk_geo *g)
{
    trk_enrich_geo_close(g);
    unlink(mmdb);
    rmdir(dir);
}

static const char *country(const trk_geo *g, const char *ip)
{
    static char cc[TRK_COUNTRY_BYTES];
    return trk_enrich_country(g, ip, strlen(ip), cc) ? cc : NULL;
}

Test(enrich, addresses_give_their_country)
{
    trk_geo *g = open_db();
    cr_expect_str_eq(country(g, "127.0.0.1"), "NZ");
    cr_expect_str_eq(country(g, "10.1.2.3"), "DE");
    cr_expect_str_eq(country(g, "10.1.255.255"), "DE");
    cr_expect_str_eq(country(g, "2001:db8::1"), "AU");
    cr_expect_str_eq(country(g, "::ffff:10.1.0.5"), "DE", "IPv4-mapped is looked up as IPv4");
    cr_expect_null(country(g, "10.2.0.1"), "not in the database");
    cr_expect_null(country(g, "192.0.2.1"));
    cr_expect_null(country(g, "not an address"));
    cr_expect_null(country(g, ""));
    cr_expect_null(country(g, "10.1.2.3 "));
    cr_expect_null(country(g, "1234:5678:9abc:def0:1234:5678:9abc:def0:1234:5678"));
    close_db(g);
}

Test(enrich, socket_addresses_give_their_country)
{
    trk_geo *g = open_db();
    char cc[TRK_COUNTRY_BYTES];
    struct sockaddr_in v4 = {0};
    v4.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    cr_expect(trk_enrich_country_addr(g, (struct sockaddr *)&v4, cc));
    cr_expect_str_eq(cc, "NZ");
    struct sockaddr_in6 v6 = {0};
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.1.9.9", &v6.sin6_addr);
    cr_expect(trk_enrich_country_addr(g, (struct sockaddr *)&v6, cc));
    cr_expect_str_eq(cc, "DE");
    inet_pton(AF_INET6, "2001:db9::1", &v6.sin6_addr);
    cr_expect_not(trk_enrich_country_addr(g, (struct sockaddr *)&v6, cc));
    cr_expect_str_eq(cc, "");
    struct sockaddr un = {0};
    un.sa_family = AF_UNIX;
    cr_expect_not(trk_enrich_country_addr(g, &un, cc));
    close_db(g);
}

typedef struct lookup_job {
    const trk_geo *g;
    int wrong;
} lookup_job;

static void *lookups(void *arg)
{
    lookup_job *j = arg;
    for (int i = 0; i < 20000; i++) {
        char ip[32], cc[TRK_COUNTRY_BYTES];
        snprintf(ip, sizeof(ip), i % 2 ? "10.1.%d.%d" : "127.%d.%d.1", (i / 256) % 256, i % 256);
        bool ok = trk_enrich_country(j->g, ip, strlen(ip), cc);
        if (!ok || strcmp(cc, i % 2 ? "DE" : "NZ") != 0)
            j->wrong++;
    }
    return NULL;
}

Test(enrich, one_database_serves_many_threads)
{
    trk_geo *g = open_db();
    pthread_t t[8];
    lookup_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (lookup_job){g, 0};
        pthread_create(&t[i], NULL, lookups, &jobs[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(jobs[i].wrong, 0, "thread %d: %d wrong answers", i, jobs[i].wrong);
    }
    close_db(g);
}

Test(enrich, a_missing_or_invalid_database_is_an_error_naming_it)
{
    trk_geo *g = (trk_geo *)1;
    char err[256];
    int rc = trk_enrich_geo_open("/nonexistent/onramp-geo.mmdb", &g, err, sizeof(err));
    cr_assert_lt(rc, 0);
    cr_assert(strstr(err, "/nonexistent/onramp-geo.mmdb"), "%s", err);
    cr_assert(strstr(err, "No such file or directory"), "%s", err);
    cr_assert_eq(g, (trk_geo *)1, "*out is left alone on failure");

    char path[] = "/tmp/onramp-enrich-bad-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const char junk[] = "this is not a MaxMind database\n";
    cr_assert_eq(write(fd, junk, sizeof(junk) - 1), (ssize_t)sizeof(junk) - 1);
    close(fd);
    rc = trk_enrich_geo_open(path, &g, err, sizeof(err));
    unlink(path);
    cr_assert_lt(rc, 0);
    cr_assert(strstr(err, path), "%s", err);
    cr_assert(strstr(err, "metadata") || strstr(err, "MaxMind"), "libmaxminddb's reason: %s", err);
}
