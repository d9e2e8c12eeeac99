/*
 * store.c - a Segment message as ingest stores it (store.h): the writer behind every record
 * of the event log, and the enrichment it adds to the context.
 */
#include "track/store.h"

#include <stdio.h>
#include <string.h>

/* Writes a random (version 4) UUID as a JSON string of TRK_UUID_CHARS characters. */
static void jw_uuid(onr_buf *b)
{
    uint8_t r[16];
    onr_random(r, sizeof(r));
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char s[37];
    size_t k = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            s[k++] = '-';
        s[k++] = hex[r[i] >> 4];
        s[k++] = hex[r[i] & 15];
    }
    s[k] = 0;
    jw_str(b, s, k);
}

static bool is_key(const char *k, size_t n, const char *z)
{
    return strlen(z) == n && memcmp(k, z, n) == 0;
}

/* ---- enrichment (docs/api.md, "Enrichment") */

/* The members enrichment adds to inside context, and the one it sets in each. */
enum { EK_DEVICE, EK_OS, EK_BROWSER, EK_LOCATION, EK_COUNT }; /* named in ck_names */

/* What enrichment found for one message; NULL or empty when nothing. */
typedef struct enrich_vals {
    const char *ua_add; /* the header, stored as context.userAgent */
    size_t ua_add_len;
    const char *device, *os, *browser, *country;
    trk_str version;
    char cc[TRK_COUNTRY_BYTES];
} enrich_vals;

/* The members of a context enrichment reads or fills in: the first of each name, as
 * jval_getz finds it, or J_NONE. */
enum { CK_UA = EK_COUNT, CK_IP, CK_COUNT };
static const struct {
    const char *s;
    size_t n;
} ck_names[CK_COUNT] = {
    {"device", sizeof("device") - 1},       {"os", sizeof("os") - 1},
    {"browser", sizeof("browser") - 1},     {"location", sizeof("location") - 1},
    {"userAgent", sizeof("userAgent") - 1}, {"ip", sizeof("ip") - 1},
};
/* Whether key k is context member i's name. */
static bool is_ck(const char *k, size_t kn, int i)
{
    return kn == ck_names[i].n && memcmp(k, ck_names[i].s, kn) == 0;
}

typedef struct ctx_keys {
    jval v[CK_COUNT];
} ctx_keys;

/* Finds the members of ck_names in obj (an object, or anything else: none) in one pass. */
static void find_keys(jval obj, ctx_keys *ck)
{
    memset(ck, 0, sizeof(*ck));
    if (jval_type(obj) != J_OBJECT)
        return;
    jiter it = jval_iter(obj);
    jval v;
    const char *k;
    size_t kn;
    while (jiter_next(&it, &v, &k, &kn))
        for (int i = 0; i < CK_COUNT; i++)
            if (!ck->v[i].doc && is_ck(k, kn, i)) {
                ck->v[i] = v;
                break;
            }
}

/* Member i of the item's context (a), else of the batch's (bc). */
static jval ctx_member(const ctx_keys *a, const ctx_keys *bc, int i)
{
    return a->v[i].doc ? a->v[i] : bc->v[i];
}

/* A few User-Agents classified lately by this thread: one device sends many requests. */
#define UA_CACHE 8
static _Thread_local struct ua_cached {
    uint64_t hash;
    size_t len;
    trk_ua ua;
    size_t version_at; /* the version's offset in the string */
    char s[TRK_UA_HEADER_MAX];
} ua_cache[UA_CACHE];

/* trk_enrich_ua, remembering strings of up to TRK_UA_HEADER_MAX bytes per thread. */
static void classify_ua(const char *ua, size_t n, trk_ua *out)
{
    if (n > TRK_UA_HEADER_MAX) {
        trk_enrich_ua(ua, n, out);
        return;
    }
    uint64_t h = onr_hash64(ua, n, 0x75616368);
    struct ua_cached *c = &ua_cache[h % UA_CACHE];
    if (c->len == n && c->hash == h && memcmp(c->s, ua, n) == 0) {
        *out = c->ua;
        out->version.p = ua + c->version_at;
        return;
    }
    trk_enrich_ua(ua, n, out);
    c->hash = h;
    c->len = n;
    memcpy(c->s, ua, n);
    c->ua = *out;
    c->version_at = out->version.n ? (size_t)(out->version.p - ua) : 0;
}

/* Classifies the User-Agent and looks up the country the stored context will be read with:
 * context.userAgent / context.ip as sent, else the request's header / peer address. */
static bool enrich_values(trk_enrich_req *en, const ctx_keys *a, const ctx_keys *bc,
                          enrich_vals *ev)
{
    memset(ev, 0, sizeof(*ev));
    jval uav = ctx_member(a, bc, CK_UA);
    const char *ua = NULL;
    size_t n = 0;
    if (jval_type(uav) == J_STRING) {
        ua = jval_str(uav, &n);
    } else if (jval_type(uav) == J_NONE && en->ua_hdr) {
        ua = ev->ua_add = en->ua_hdr;
        n = ev->ua_add_len = en->ua_hdr_len;
    }
    if (n) {
        if (n != en->ua_last_len || memcmp(ua, en->ua_last, n) != 0) {
            classify_ua(ua, n, &en->ua);
            en->ua_last = ua;
            en->ua_last_len = n;
        }
        ev->device = en->ua.device ? trk_enrich_device_name(en->ua.device) : NULL;
        ev->os = en->ua.os;
        ev->browser = en->ua.browser;
        ev->version = en->ua.version;
    }
    if (en->geo) {
        jval ip = ctx_member(a, bc, CK_IP);
        if (jval_type(ip) == J_STRING) {
            const char *p = jval_str(ip, &n);
            if (trk_enrich_country(en->geo, p, n, ev->cc))
                ev->country = ev->cc;
        } else if (jval_type(ip) == J_NONE && en->from_request) {
            if (!en->peer_done) {
                en->peer_done = true;
                const struct sockaddr *sa = en->peer ? en->peer(en->peer_ctx) : NULL;
                if (sa)
                    trk_enrich_country_addr(en->geo, sa, en->peer_cc);
            }
            if (en->peer_cc[0]) {
                memcpy(ev->cc, en->peer_cc, sizeof(ev->cc));
                ev->country = ev->cc;
            }
        }
    }
    return ev->ua_add || ev->device || ev->os || ev->browser || ev->country;
}

/* The field enrichment sets inside member e, and its value (NULL: none found). */
static const char *ek_field(int e)
{
    return e == EK_DEVICE ? "type" : e == EK_LOCATION ? "country" : "name";
}

static const char *ek_value(const enrich_vals *ev, int e)
{
    return e == EK_DEVICE    ? ev->device
           : e == EK_OS      ? ev->os
           : e == EK_BROWSER ? ev->browser
                             : ev->country;
}

/* Whether enrichment adds a field inside one of the device/os/browser/location objects of a
 * context (its members found). */
static bool adds_inside(const ctx_keys *obj, const enrich_vals *ev)
{
    for (int e = 0; e < EK_COUNT; e++) {
        if (!ek_value(ev, e))
            continue;
        jval v = obj->v[e];
        if (jval_type(v) == J_OBJECT && jval_type(jval_getz(v, ek_field(e))) == J_NONE)
            return true;
    }
    return false;
}

/* Writes obj (an object) as "{members" with no closing brace, in one piece; returns whether
 * it has members. */
static bool write_open(onr_buf *b, jval obj)
{
    size_t at = b->len;
    jval_write(obj, b);
    b->len--; /* its '}' */
    return b->len - at > 1;
}

/* Writes obj (an object, or J_NONE for a new one) with the enrichment field of member e
 * added when obj lacks it. Returns the bytes added to obj's own. */
static size_t write_enriched(onr_buf *b, jval obj, int e, const enrich_vals *ev)
{
    bool has = jval_type(obj) == J_OBJECT, first = true;
    if (has)
        first = !write_open(b, obj);
    else
        onr_buf_putc(b, '{');
    size_t at = b->len;
    const char *key = ek_field(e), *val = ek_value(ev, e);
    if (val && !(has && jval_type(jval_getz(obj, key)) != J_NONE)) {
        onr_buf_puts(b, first ? "\"" : ",\"");
        onr_buf_puts(b, key);
        onr_buf_puts(b, "\":");
        jw_strz(b, val);
        /* a version only with the name it belongs to */
        if (e == EK_BROWSER && ev->version.n &&
            !(has && jval_type(jval_getz(obj, "version")) != J_NONE)) {
            onr_buf_puts(b, ",\"version\":");
            jw_str(b, ev->version.p, ev->version.n);
        }
    }
    size_t added = b->len - at;
    onr_buf_putc(b, '}');
    return added;
}

/* Writes one member of the stored context; returns the bytes enrichment added inside it. */
static size_t write_ctx_member(onr_buf *b, const char *k, size_t kn, jval v, const enrich_vals *ev)
{
    for (int e = 0; e < EK_COUNT; e++)
        if (is_ck(k, kn, e) && jval_type(v) == J_OBJECT) {
            jw_str(b, k, kn);
            onr_buf_putc(b, ':');
            return write_enriched(b, v, e, ev);
        }
    jval_write_member(v, k, kn, b);
    return 0;
}

/*
 * Writes ,"context":{...} as stored: the item's own context members, then the batch-level
 * context's members it lacks, then what enrichment found that neither set (inside device,
 * os, browser and location when the sender sent those objects). No key appears twice. A
 * context that gets nothing inside its members is copied in one piece.
 * Returns the size of "context":... as the sender wrote it in the item (0 when it had none),
 * which is what the per-event limit counts.
 */
static size_t write_context(onr_buf *b, jval a, jval bc, trk_enrich_req *en)
{
    /* a null context is no context: the batch's and enrichment fill it in (its size as
     * sent still counts) */
    size_t null_own = 0;
    if (jval_type(a) == J_NULL) {
        null_own = sizeof("\"context\":null") - 1;
        a = (jval){0};
    }
    jtype at = jval_type(a), bt = jval_type(bc);
    size_t start = b->len;
    if ((at != J_NONE && at != J_OBJECT) || (at == J_NONE && bt != J_NONE && bt != J_OBJECT)) {
        /* not an object (decode rejects all but null): stored as sent, nothing merged */
        onr_buf_puts(b, ",\"context\":");
        jval_write(at != J_NONE ? a : bc, b);
        return at != J_NONE ? b->len - start - 1 : null_own;
    }
    ctx_keys ka, kb;
    find_keys(a, &ka);
    find_keys(bc, &kb);
    enrich_vals ev;
    bool found = en && enrich_values(en, &ka, &kb, &ev);
    if (at == J_NONE && bt == J_NONE && !found)
        return null_own;
    if (!found)
        memset(&ev, 0, sizeof(ev));
    onr_buf_puts(b, ",\"context\":");
    bool first = true, b_done = false;
    size_t added = 0, own = 0;
    jiter it;
    jval v;
    const char *k;
    size_t kn;
    if (at == J_OBJECT) {
        if (!adds_inside(&ka, &ev)) {
            first = !write_open(b, a);
        } else {
            onr_buf_putc(b, '{');
            for (it = jval_iter(a); jiter_next(&it, &v, &k, &kn); first = false) {
                if (!first)
                    onr_buf_putc(b, ',');
                added += write_ctx_member(b, k, kn, v, &ev);
            }
        }
        own = b->len - start - added; /* "context":{... less the comma, plus its '}' */
    } else if (bt == J_OBJECT && !adds_inside(&kb, &ev)) {
        first = !write_open(b, bc);
        b_done = true;
    } else {
        onr_buf_putc(b, '{');
    }
    if (bt == J_OBJECT && !b_done) {
        for (it = jval_iter(bc); jiter_next(&it, &v, &k, &kn);) {
            if (at == J_OBJECT && jval_type(jval_get(a, k, kn)) != J_NONE)
                continue;
            if (!first)
                onr_buf_putc(b, ',');
            first = false;
            write_ctx_member(b, k, kn, v, &ev);
        }
    }
    if (ev.ua_add) {
        onr_buf_puts(b, first ? "\"userAgent\":" : ",\"userAgent\":");
        jw_str(b, ev.ua_add, ev.ua_add_len);
        first = false;
    }
    for (int e = 0; e < EK_COUNT; e++) {
        /* a member the sender set, whatever it holds, is not added again */
        if (!ek_value(&ev, e) || ctx_member(&ka, &kb, e).doc)
            continue;
        onr_buf_puts(b, first ? "\"" : ",\"");
        onr_buf_put(b, ck_names[e].s, ck_names[e].n);
        onr_buf_puts(b, "\":");
        jval none = {0};
        write_enriched(b, none, e, &ev);
        first = false;
    }
    onr_buf_putc(b, '}');
    return own + null_own;
}

void trk_store_item(onr_buf *b, jval item, int kind, const trk_batch_fields *bf, int64_t now_ms,
                    trk_enrich_req *en, size_t *own, size_t *gen)
{
    size_t at = b->len;
    bool first = true, has_mid = false, has_int = false, has_sent = false;
    jval ctx = {0};
    onr_buf_putc(b, '{');
    jiter it = jval_iter(item);
    jval v;
    const char *k;
    size_t kn;
    while (jiter_next(&it, &v, &k, &kn)) {
        if (is_key(k, kn, "writeKey") || is_key(k, kn, "receivedAt") ||
            (kind >= 0 && is_key(k, kn, "type")))
            continue;
        if (is_key(k, kn, "messageId")) {
            size_t sl = 0;
            jtype t = jval_type(v);
            if (t == J_NULL || (t == J_STRING && (jval_str(v, &sl), sl == 0)))
                continue; /* generated below */
            has_mid = true;
        } else if (is_key(k, kn, "context")) {
            if (!ctx.doc)
                ctx = v; /* written last, merged; the first wins, as when decoding */
            continue;
        } else if (is_key(k, kn, "integrations")) {
            has_int = true;
        } else if (is_key(k, kn, "sentAt")) {
            has_sent = true;
        }
        if (!first)
            onr_buf_putc(b, ',');
        first = false;
        jval_write_member(v, k, kn, b);
    }
    *own = b->len - at + 1;
    bool own_members = !first;
    if (kind >= 0) {
        onr_buf_puts(b, first ? "\"type\":" : ",\"type\":");
        jw_strz(b, trk_kind_name((trk_kind)kind));
        first = false;
    }
    *gen = SIZE_MAX;
    if (!has_mid) {
        onr_buf_puts(b, first ? "\"messageId\":" : ",\"messageId\":");
        *gen = b->len + 1;
        jw_uuid(b);
        first = false;
    }
    onr_buf_puts(b, first ? "\"receivedAt\":" : ",\"receivedAt\":");
    jw_time(b, now_ms);
    if (!has_int && bf && jval_type(bf->integrations) != J_NONE) {
        onr_buf_puts(b, ",\"integrations\":");
        jval_write(bf->integrations, b);
    }
    if (!has_sent && bf && jval_type(bf->sent_at) != J_NONE) {
        onr_buf_puts(b, ",\"sentAt\":");
        jval_write(bf->sent_at, b);
    }
    jval none = {0};
    size_t ctx_own = write_context(b, ctx, bf ? bf->context : none, en);
    if (ctx_own)
        *own += ctx_own + own_members; /* and the comma before it */
    onr_buf_putc(b, '}');
}
