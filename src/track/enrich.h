/*
 * enrich.h - what ingest adds to a message's context: the device type, browser and OS read
 * from a User-Agent string (a small table-driven classifier), and the country of an IP
 * address from a MaxMind .mmdb database. Both are read-only once set up, allocate nothing
 * per call, and are safe to call from many threads at once.
 */
#ifndef ONR_ENRICH_H
#define ONR_ENRICH_H

#include "base/base.h"
#include "track/track.h"

struct sockaddr;

/* ---- User-Agent */

typedef enum trk_device {
    TRK_DEVICE_UNKNOWN = 0, /* empty, an HTTP library, or nothing recognised */
    TRK_DEVICE_DESKTOP,
    TRK_DEVICE_MOBILE,
    TRK_DEVICE_TABLET,
    TRK_DEVICE_BOT,
} trk_device;

/* Only this many leading bytes of a User-Agent are read. */
#define TRK_UA_SCAN_BYTES 1024

typedef struct trk_ua {
    trk_device device;
    /* "Chrome", "Edge", "Firefox", "Safari", "Opera", "Samsung Internet", "Internet
     * Explorer"; a crawler's name ("Googlebot"); an HTTP library's ("curl", "node",
     * "python-requests"); NULL when not recognised. Static strings. */
    const char *browser;
    trk_str version; /* the browser's major version, digits only, into the UA; may be empty */
    /* "Windows", "macOS", "iOS", "Android", "Linux", "ChromeOS"; NULL when not recognised
     * (always for crawlers and libraries). Static strings. */
    const char *os;
} trk_ua;

/* Classifies ua[0..n). Never fails: what is not recognised is left unknown. */
void trk_enrich_ua(const char *ua, size_t n, trk_ua *out);

/* "desktop", "mobile", "tablet", "bot", or "unknown". */
const char *trk_enrich_device_name(trk_device d);

/* ---- country from IP */

typedef struct trk_geo trk_geo;

/* Opens a MaxMind DB file (GeoLite2-Country, GeoIP2-City, or any .mmdb whose records hold
 * country.iso_code). Returns 0, or a negative code with a message naming path and the
 * reason in err. Caller owns *out; close it with trk_enrich_geo_close. */
int trk_enrich_geo_open(const char *path, trk_geo **out, char *err, size_t errlen);
void trk_enrich_geo_close(trk_geo *g);

/* The size of a country code buffer: ISO 3166-1 alpha-2 codes and a NUL, with room. */
#define TRK_COUNTRY_BYTES 8

/* Writes the country.iso_code of the address in text form (IPv4 or IPv6, ip[0..n)) into cc,
 * NUL-terminated; returns false (cc empty) when the text is not an address or the database
 * has no country for it. An IPv4-mapped IPv6 address is looked up as IPv4. */
bool trk_enrich_country(const trk_geo *g, const char *ip, size_t n, char cc[TRK_COUNTRY_BYTES]);
/* The same for a socket address (AF_INET or AF_INET6). */
bool trk_enrich_country_addr(const trk_geo *g, const struct sockaddr *sa,
                             char cc[TRK_COUNTRY_BYTES]);

#endif
