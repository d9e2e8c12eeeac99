/*
 * decode.c - one Segment message (track, identify, page, screen, group, alias) into a
 * trk_event: the kind, ids, name, event time and the property/trait values a rule set reads.
 * On the hot path of ingest and replay: one pass over the root object, no allocation, and
 * strings stay views into the parser's memory.
 */
#include "track/track.h"

#include <stdio.h>
#include <string.h>

/* Event times before 2000 are clock errors (a device at the epoch, seconds sent as ms). */
#define Y2000_MS INT64_C(946684800000)
#define EARLIEST_MS ONR_MAX(ONR_TIME_MIN_MS, Y2000_MS)

/* Quoted values in error messages show at most this many bytes of the value. */
#define QUOTE_BYTES 40
#define QUOTE_CAP (QUOTE_BYTES * 4 + 8)

static const char *const kind_names[TRK_KIND_COUNT] = {
    [TRK_TRACK] = "track",   [TRK_IDENTIFY] = "identify", [TRK_PAGE] = "page",
    [TRK_SCREEN] = "screen", [TRK_GROUP] = "group",       [TRK_ALIAS] = "alias",
};

const char *trk_kind_name(trk_kind k)
{
    return (unsigned)k < TRK_KIND_COUNT ? kind_names[k] : "unknown";
}

/* ---- errors */

/* Writes a one-line reason into err and returns rc. */
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Writes s[0..n) into out as a one-line quoted excerpt: control bytes, quotes and
 * backslashes escaped, cut at a character boundary after QUOTE_BYTES with "...". */
static const char *quote(char out[QUOTE_CAP], const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t take = n, o = 0;
    if (take > QUOTE_BYTES) {
        take = QUOTE_BYTES;
        while (take > 0 && ((unsigned char)s[take] & 0xc0) == 0x80)
            take--;
    }
    out[o++] = '"';
    for (size_t i = 0; i < take; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    if (take < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static int type_error(char *err, size_t errlen, const char *field, const char *want, jtype got)
{
    return fail(err, errlen, ONR_E_INVALID, "\"%s\" must be %s, got %s", field, want,
                jtype_name(got));
}

/* ---- the root object, in one pass */

/* The members of the root that decoding reads. A zero jval is absent (J_NONE). */
typedef struct fields {
    jval type, event, user_id, anon_id, previous_id, group_id, message_id, name;
    jval timestamp, original_ts, sent_at, received_at;
    jval properties, traits, context;
} fields;

/* Maps a root key to its slot, or NULL for keys decoding does not read. */
static jval *slot_for(fields *f, const char *k, size_t n)
{
#define KEY(lit, member)                                                                           \
    if (memcmp(k, lit, sizeof(lit) - 1) == 0)                                                      \
    return &f->member
    switch (n) {
    case 4:
        KEY("type", type);
        KEY("name", name);
        break;
    case 5:
        KEY("event", event);
        break;
    case 6:
        KEY("userId", user_id);
        KEY("sentAt", sent_at);
        KEY("traits", traits);
        break;
    case 7:
        KEY("context", context);
        KEY("groupId", group_id);
        break;
    case 9:
        KEY("messageId", message_id);
        KEY("timestamp", timestamp);
        break;
    case 10:
        KEY("properties", properties);
        KEY("previousId", previous_id);
        KEY("receivedAt", received_at);
        break;
    case 11:
        KEY("anonymousId", anon_id);
        break;
    case 17:
        KEY("originalTimestamp", original_ts);
        break;
    }
#undef KEY
    return NULL;
}

/* JSON null is treated as absent everywhere: analytics.js sends "userId": null for
 * anonymous users, and other libraries do the same for unset optional fields. */
static inline bool absent(jtype t)
{
    return t == J_NONE || t == J_NULL;
}

/* Reads an optional string member into *out (empty when absent, null or ""). The string
 * is already valid UTF-8: simdjson validates the whole input on parse, and rejects escapes
 * that would decode to invalid UTF-8 (lone surrogates), so it is not checked again here. */
static int opt_str(jval v, const char *field, size_t max_bytes, trk_str *out, char *err,
                   size_t errlen)
{
    jtype t = jval_type(v);
    if (absent(t))
        return 0;
    if (t != J_STRING)
        return type_error(err, errlen, field, "a string", t);
    size_t n;
    const char *s = jval_str(v, &n);
    if (n > max_bytes)
        return fail(err, errlen, ONR_E_LIMIT, "\"%s\" is %zu bytes, over the %zu-byte limit", field,
                    n, max_bytes);
    if (n > 0) {
        out->p = s;
        out->n = (uint32_t)n;
    }
    return 0;
}

static int read_kind(const fields *f, trk_kind *kind, char *err, size_t errlen)
{
    jtype t = jval_type(f->type);
    if (absent(t)) {
        /* Some senders leave out "type" on track calls; an "event" says what it is. */
        if (!absent(jval_type(f->event))) {
            *kind = TRK_TRACK;
            return 0;
        }
        return fail(err, errlen, ONR_E_INVALID, "missing \"type\"");
    }
    if (t != J_STRING)
        return type_error(err, errlen, "type", "a string", t);
    size_t n;
    const char *s = jval_str(f->type, &n);
    for (int k = 0; k < TRK_KIND_COUNT; k++) {
        if (strlen(kind_names[k]) == n && memcmp(kind_names[k], s, n) == 0) {
            *kind = (trk_kind)k;
            return 0;
        }
    }
    char q[QUOTE_CAP];
    return fail(err, errlen, ONR_E_INVALID,
                "\"type\" must be one of track, identify, page, screen, group, alias; got %s",
                quote(q, s, n));
}

/* ---- event time */

/* Reads an optional time member; *ms is left alone and false returned in *present when it
 * is absent. A present time must be an ISO-8601 string between 2000 and 9999. */
static int read_time(jval v, const char *field, int64_t *ms, bool *present, char *err,
                     size_t errlen)
{
    *present = false;
    jtype t = jval_type(v);
    if (absent(t))
        return 0;
    if (t != J_STRING)
        return type_error(err, errlen, field, "an ISO-8601 string", t);
    size_t n;
    const char *s = jval_str(v, &n);
    char q[QUOTE_CAP];
    if (onr_time_parse(s, n, ms) != 0)
        return fail(err, errlen, ONR_E_INVALID, "\"%s\" is not a valid ISO-8601 time: %s", field,
                    quote(q, s, n));
    if (*ms < EARLIEST_MS || *ms > ONR_TIME_MAX_MS)
        return fail(err, errlen, ONR_E_INVALID,
                    "\"%s\" is out of range: %s (accepted: 2000-01-01 to 9999-12-31)", field,
                    quote(q, s, n));
    *present = true;
    return 0;
}

/* received: the receivedAt that replaces the message's own (NULL: its own is read). */
static int read_event_time(const fields *f, int64_t default_ts_ms, const int64_t *received,
                           int64_t *ts_ms, int64_t *recv_ms, char *err, size_t errlen)
{
    int64_t ts = 0, orig = 0, sent = 0, recv = received ? *received : 0;
    bool has_ts, has_orig, has_sent, has_recv = received != NULL;
    int rc;
    if ((rc = read_time(f->timestamp, "timestamp", &ts, &has_ts, err, errlen)) ||
        (rc = read_time(f->original_ts, "originalTimestamp", &orig, &has_orig, err, errlen)) ||
        (rc = read_time(f->sent_at, "sentAt", &sent, &has_sent, err, errlen)) ||
        (!received &&
         (rc = read_time(f->received_at, "receivedAt", &recv, &has_recv, err, errlen))))
        return rc;
    *recv_ms = has_recv ? recv : 0;

    /*
     * The skew clamp compares the event time with the time the message was sent, both read
     * on the same clock. `timestamp` and a bare `originalTimestamp` are on the sender's clock,
     * like `sentAt`: an event cannot happen after the message reporting it was sent, so one
     * more than TRK_MAX_FUTURE_SKEW_MS after `sentAt` carries a bogus time and is clamped to
     * `sentAt`. A skew-corrected `originalTimestamp` is on the receiver's clock, where the
     * send time is `receivedAt`. Times taken from `receivedAt` or `sentAt` need no clamp.
     */
    int64_t bound = INT64_MAX;
    if (has_ts) {
        if (has_sent)
            bound = sent;
    } else if (has_orig && has_sent && has_recv) {
        /* Segment's correction for a sender whose clock is off: shift originalTimestamp by
         * the difference between the receiver's and the sender's clock. */
        ts = orig + (recv - sent);
        if (ts < EARLIEST_MS || ts > ONR_TIME_MAX_MS) {
            char when[32];
            onr_time_format(ONR_MAX(ts, 0), when);
            return fail(err, errlen, ONR_E_INVALID,
                        "\"originalTimestamp\" corrected by receivedAt - sentAt is out of "
                        "range: %s",
                        when);
        }
        bound = recv;
    } else if (has_orig) {
        ts = orig;
        if (has_sent)
            bound = sent;
    } else if (has_recv) {
        ts = recv;
    } else if (has_sent) {
        ts = sent;
    } else if (default_ts_ms >= 0) {
        ts = default_ts_ms;
    } else {
        return fail(err, errlen, ONR_E_INVALID,
                    "missing timestamp: none of \"timestamp\", \"originalTimestamp\", "
                    "\"receivedAt\", \"sentAt\" is present");
    }
    if (bound <= INT64_MAX - TRK_MAX_FUTURE_SKEW_MS && ts > bound + TRK_MAX_FUTURE_SKEW_MS)
        ts = bound;
    *ts_ms = ts;
    return 0;
}

/* ---- properties and traits */

/* An optional member that must be an object when present; *obj stays J_NONE otherwise. */
static int opt_object(jval v, const char *field, jval *obj, char *err, size_t errlen)
{
    jtype t = jval_type(v);
    if (absent(t))
        return 0;
    if (t != J_OBJECT)
        return type_error(err, errlen, field, "an object", t);
    *obj = v;
    return 0;
}

/* Follows a dotted path ("plan.name") through nested objects; J_NONE when any step is
 * missing or not an object. */
static jval lookup(jval obj, const char *path)
{
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        jval v = jval_get(obj, path, n);
        if (!dot || !v.doc)
            return v;
        obj = v;
        path = dot + 1;
    }
}

static void read_value(jval v, trk_value *out)
{
    out->b = false;
    out->num = 0;
    out->str.p = "";
    out->str.n = 0;
    switch (jval_type(v)) {
    case J_NONE:
        out->type = TV_MISSING;
        break;
    case J_NULL:
        out->type = TV_NULL;
        break;
    case J_BOOL:
        out->type = TV_BOOL;
        out->b = jval_bool(v);
        break;
    case J_NUMBER:
        out->type = TV_NUM;
        out->num = jval_number(v);
        break;
    case J_STRING: {
        size_t n;
        out->type = TV_STR;
        out->str.p = jval_str(v, &n);
        out->str.n = (uint32_t)n;
        break;
    }
    case J_ARRAY:
    case J_OBJECT:
        out->type = TV_OTHER;
        break;
    }
}

/* ---- decoding */

/* A messageId that ingest drops and replaces with one of its own. */
static bool blank_id(jval v)
{
    size_t n = 1;
    jtype t = jval_type(v);
    return t == J_NULL || (t == J_STRING && (jval_str(v, &n), n == 0));
}

/* On failure *ev is left partly filled and must not be used. Only the first schema->nprops
 * props and schema->ntraits traits are written. ov: NULL, or what ingest stores in place of
 * the message's own members (trk_decode_overlay). */
static int decode(jval root, const trk_overlay *ov, const trk_schema *schema, int64_t default_ts_ms,
                  trk_event *ev, char *err, size_t errlen)
{
    static const trk_schema no_fields;
    if (!schema)
        schema = &no_fields;
    if (schema->nprops > TRK_MAX_FIELDS || schema->ntraits > TRK_MAX_FIELDS)
        return fail(err, errlen, ONR_E_INVALID,
                    "schema has %u properties and %u traits, over the limit of %d each",
                    schema->nprops, schema->ntraits, TRK_MAX_FIELDS);

    jtype root_type = jval_type(root);
    if (root_type != J_OBJECT)
        return fail(err, errlen, ONR_E_INVALID, "message must be a JSON object, got %s",
                    jtype_name(root_type));

    /* jval_get is a linear scan of an object's members: read the root once instead. The
     * first of duplicate keys wins, as it does for jval_get. */
    fields f;
    memset(&f, 0, sizeof(f));
    jiter it = jval_iter(root);
    jval v;
    const char *key;
    size_t keylen;
    while (jiter_next(&it, &v, &key, &keylen)) {
        jval *slot = slot_for(&f, key, keylen);
        if (slot && !slot->doc && !(ov && slot == &f.message_id && blank_id(v)))
            *slot = v;
    }
    /* a null context is none: the overlay's stands in for it, as ingest stores it */
    bool own_context = f.context.doc != NULL && !(ov && jval_type(f.context) == J_NULL);
    if (ov && !f.sent_at.doc)
        f.sent_at = ov->sent_at;
    if (ov && !own_context)
        f.context = ov->context;

    static const trk_str empty = {"", 0};
    ev->ts_ms = 0;
    ev->user_id = ev->anon_id = ev->previous_id = ev->message_id = ev->name = empty;

    int rc;
    if (ov && ov->kind >= 0)
        ev->kind = (trk_kind)ov->kind;
    else if ((rc = read_kind(&f, &ev->kind, err, errlen)))
        return rc;

    if ((rc = opt_str(f.user_id, "userId", TRK_MAX_ID_BYTES, &ev->user_id, err, errlen)) ||
        (rc = opt_str(f.anon_id, "anonymousId", TRK_MAX_ID_BYTES, &ev->anon_id, err, errlen)))
        return rc;
    if (ev->user_id.n == 0 && ev->anon_id.n == 0)
        return fail(err, errlen, ONR_E_INVALID, "missing userId and anonymousId");

    switch (ev->kind) {
    case TRK_TRACK:
        if ((rc = opt_str(f.event, "event", TRK_MAX_NAME_BYTES, &ev->name, err, errlen)))
            return rc;
        if (ev->name.n == 0)
            return fail(err, errlen, ONR_E_INVALID, "missing \"event\" (the name of the event)");
        break;
    case TRK_PAGE:
    case TRK_SCREEN:
        if ((rc = opt_str(f.name, "name", TRK_MAX_NAME_BYTES, &ev->name, err, errlen)))
            return rc;
        break;
    case TRK_ALIAS:
        if ((rc = opt_str(f.previous_id, "previousId", TRK_MAX_ID_BYTES, &ev->previous_id, err,
                          errlen)))
            return rc;
        if (ev->previous_id.n == 0)
            return fail(err, errlen, ONR_E_INVALID, "missing \"previousId\" (alias needs it)");
        if (ev->user_id.n == 0)
            return fail(err, errlen, ONR_E_INVALID, "missing \"userId\" (alias needs it)");
        break;
    case TRK_GROUP: {
        /* checked at ingest only: group messages stored before this rule still run */
        trk_str group = empty;
        if (ov && (rc = opt_str(f.group_id, "groupId", TRK_MAX_ID_BYTES, &group, err, errlen)))
            return rc;
        if (ov && group.n == 0)
            return fail(err, errlen, ONR_E_INVALID, "missing \"groupId\" (group needs it)");
        break;
    }
    default:
        break;
    }

    if ((rc = opt_str(f.message_id, "messageId", TRK_MAX_ID_BYTES, &ev->message_id, err, errlen)))
        return rc;
    if (ov && !f.message_id.doc)
        ev->message_id = ov->message_id;
    if ((rc = read_event_time(&f, default_ts_ms, ov ? &ov->received_ms : NULL, &ev->ts_ms,
                              &ev->received_ms, err, errlen)))
        return rc;

    /* The containers are type-checked whatever the schema asks for, so that whether a
     * message is accepted does not depend on the rules loaded. */
    jval props = {0}, traits = {0}, ctx = {0}, ctx_traits = {0};
    switch (ev->kind) {
    case TRK_TRACK:
    case TRK_PAGE:
    case TRK_SCREEN:
        rc = opt_object(f.properties, "properties", &props, err, errlen);
        break;
    case TRK_IDENTIFY:
        rc = opt_object(f.traits, "traits", &traits, err, errlen);
        break;
    case TRK_GROUP:
        /* A group's traits describe the group (a company, an account), not the user: they
         * are the group call's properties, and stay out of the user's traits. */
        rc = opt_object(f.traits, "traits", &props, err, errlen);
        break;
    default:
        break;
    }
    if (rc || (rc = opt_object(f.context, "context", &ctx, err, errlen)))
        return rc;
    if (ctx.doc) {
        /* the stored context: the message's own members, then the overlay's it lacks */
        jval t = jval_get(ctx, "traits", 6);
        if (!t.doc && ov && own_context && jval_type(ov->context) == J_OBJECT)
            t = jval_get(ov->context, "traits", 6);
        if ((rc = opt_object(t, "context.traits", &ctx_traits, err, errlen)))
            return rc;
    }

    for (uint32_t i = 0; i < schema->nprops; i++)
        read_value(props.doc ? lookup(props, schema->props[i]) : props, &ev->props[i]);
    for (uint32_t i = 0; i < schema->ntraits; i++) {
        /* identify: `traits`, field by field falling back to `context.traits`. */
        jval t = traits.doc ? lookup(traits, schema->traits[i]) : traits;
        if (!t.doc && ctx_traits.doc)
            t = lookup(ctx_traits, schema->traits[i]);
        read_value(t, &ev->traits[i]);
    }
    return 0;
}

int trk_decode_value(jval root, const trk_schema *schema, int64_t default_ts_ms, trk_event *ev,
                     char *err, size_t errlen)
{
    return decode(root, NULL, schema, default_ts_ms, ev, err, errlen);
}

int trk_decode_overlay(jval root, const trk_overlay *ov, const trk_schema *schema, trk_event *ev,
                       char *err, size_t errlen)
{
    return decode(root, ov, schema, ov->received_ms, ev, err, errlen);
}

int trk_decode(jdoc *doc, const char *buf, size_t len, const trk_schema *schema,
               int64_t default_ts_ms, trk_event *ev, char *err, size_t errlen)
{
    if (len > TRK_MAX_MESSAGE_BYTES)
        return fail(err, errlen, ONR_E_LIMIT, "message of %zu bytes exceeds the %d KB limit", len,
                    TRK_MAX_MESSAGE_BYTES / 1024);
    jval root;
    int rc = jdoc_parse(doc, buf, len, &root, err, errlen);
    if (rc)
        return rc;
    return trk_decode_value(root, schema, default_ts_ms, ev, err, errlen);
}
