/*
 * track.h - the Event Tracking layer: a Segment message (track, identify, page, screen,
 * group, alias) decoded and validated into a compact event record. Strings in a record are
 * views into the decoder's memory, valid until the next decode with the same jdoc.
 */
#ifndef ONR_TRACK_H
#define ONR_TRACK_H

#include "base/base.h"
#include "base/json.h"

typedef enum trk_kind {
    TRK_TRACK = 0,
    TRK_IDENTIFY,
    TRK_PAGE,
    TRK_SCREEN,
    TRK_GROUP,
    TRK_ALIAS,
    TRK_KIND_COUNT
} trk_kind;

/* A string view. */
typedef struct trk_str {
    const char *p;
    uint32_t n;
} trk_str;

/* A scalar property or trait value. Arrays and objects decode as TV_OTHER. */
typedef enum trk_vtype { TV_MISSING = 0, TV_NULL, TV_BOOL, TV_NUM, TV_STR, TV_OTHER } trk_vtype;

typedef struct trk_value {
    uint8_t type; /* trk_vtype */
    bool b;
    double num;
    trk_str str;
} trk_value;

/* The fields a rule set reads: property paths (track/page/screen: `properties`; group: its
 * `traits`, which describe the group) and user trait names (identify: `traits`, field by
 * field falling back to `context.traits`; every other kind: `context.traits`). Paths may be
 * dotted ("plan.name") to reach into nested objects. Index in the schema = field id. Only
 * the first nprops / ntraits entries of an event are written. */
#define TRK_MAX_FIELDS 64
typedef struct trk_schema {
    uint32_t nprops, ntraits;
    const char *props[TRK_MAX_FIELDS];
    const char *traits[TRK_MAX_FIELDS];
} trk_schema;

/* Limits, enforced by trk_decode and documented in docs/rules.md. */
#define TRK_MAX_MESSAGE_BYTES (32 * 1024)
#define TRK_MAX_ID_BYTES 256
#define TRK_MAX_NAME_BYTES 256
/* Event times more than this far after the time the message was sent are clamped. */
#define TRK_MAX_FUTURE_SKEW_MS (24 * ONR_HOUR_MS)

typedef struct trk_event {
    trk_kind kind;
    int64_t ts_ms;                    /* event time, Segment's rule (see trk_decode) */
    int64_t received_ms;              /* `receivedAt`, 0 when absent */
    trk_str user_id;                  /* empty when absent */
    trk_str anon_id;                  /* empty when absent */
    trk_str previous_id;              /* alias only */
    trk_str message_id;               /* empty when absent */
    trk_str name;                     /* track: event; page/screen: name (may be empty) */
    trk_value props[TRK_MAX_FIELDS];  /* by schema prop id; TV_MISSING when absent */
    trk_value traits[TRK_MAX_FIELDS]; /* by schema trait id */
} trk_event;

/*
 * Decodes one Segment message from buf[0..len) into *ev. Returns 0, or a negative code with
 * a one-line reason for people in err ("missing userId and anonymousId",
 * "\"timestamp\" is not a valid ISO-8601 time: \"yesterday\"", ...).
 *
 * Event time follows Segment: `timestamp` when given; otherwise `originalTimestamp`
 * corrected by the clock skew (receivedAt - sentAt) when both are present; otherwise
 * `originalTimestamp`, `receivedAt`, then `sentAt`. A message with none of them gets
 * default_ts_ms (the caller's clock), or fails when default_ts_ms < 0.
 */
int trk_decode(jdoc *doc, const char *buf, size_t len, const trk_schema *schema,
               int64_t default_ts_ms, trk_event *ev, char *err, size_t errlen);

/* Decodes a message already parsed into root (used for /v1/batch items). */
int trk_decode_value(jval root, const trk_schema *schema, int64_t default_ts_ms, trk_event *ev,
                     char *err, size_t errlen);

/* What ingest stores in place of a message's own members, or beside them (docs/api.md,
 * "Field rules"). */
typedef struct trk_overlay {
    int kind;            /* the endpoint's kind, which replaces "type"; -1: the message's own */
    int64_t received_ms; /* replaces the message's receivedAt */
    jval sent_at;        /* the batch's sentAt, for a message with none (zero: none) */
    jval context;        /* the batch's context, for a message with none; when both are
                            objects, its members fill in those the message's lacks */
    trk_str message_id;  /* for a messageId that is absent, null or "" */
} trk_overlay;

/*
 * Decodes the message ingest would store for root, without writing it: as trk_decode_value
 * decodes the stored message, with the members of ov in place of the message's own (the
 * first of duplicate keys still wins). The stored message holds root's members in order,
 * and the overlay's only where this reads them; the ids of *ev point into root and ov.
 */
int trk_decode_overlay(jval root, const trk_overlay *ov, const trk_schema *schema, trk_event *ev,
                       char *err, size_t errlen);

const char *trk_kind_name(trk_kind k);

/* Packing: trk_packed_size bytes (a multiple of 8) hold ev's rules-relevant fields;
 * trk_unpack restores them with strings pointing into the packed bytes. */
size_t trk_packed_size(const trk_event *ev, const trk_schema *schema);
void trk_pack(char *out, const trk_event *ev, const trk_schema *schema);
void trk_unpack(const char *in, trk_event *ev, const trk_schema *schema);
/* Reads just the ids of a packed event (for prefetching). */
void trk_packed_ids(const char *in, trk_str *user_id, trk_str *anon_id);
/* The same from the first len bytes of one: false when the ids do not lie within them. */
bool trk_packed_ids_in(const char *in, size_t len, trk_str *user_id, trk_str *anon_id);

#endif
