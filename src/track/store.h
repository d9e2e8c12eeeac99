/*
 * store.h - a Segment message as ingest stores it in the event log (docs/api.md, "Field
 * rules" and "Enrichment"): the sender's members, minified (as sent when the document
 * keeps its text, jdoc_keep_text, as ingest's does), with type, messageId and
 * receivedAt filled in, the batch-level fields an item lacks copied into it, and the device,
 * browser, OS and country enrichment found added to its context. trk_decode_overlay
 * (track.h) reads a message as trk_store_item writes it, without the writing: the two change
 * together, and fuzz_store checks that they agree.
 */
#ifndef ONR_STORE_H
#define ONR_STORE_H

#include "base/base.h"
#include "base/json.h"
#include "track/enrich.h"

struct sockaddr;

/* A User-Agent header longer than this is not stored or classified. */
#define TRK_UA_HEADER_MAX 512
/* Characters of a generated messageId (a version 4 UUID). */
#define TRK_UUID_CHARS 36

/* What enrichment reads from the request. Each part is worked out at most once for all
 * the request's messages; the members after peer_ctx are the store's own (zero them). */
typedef struct trk_enrich_req {
    const trk_geo *geo; /* NULL: no --geoip */
    bool from_request;  /* the header and the peer's address describe the sender's device */
    const char *ua_hdr; /* the User-Agent header; NULL when absent, empty or too long */
    size_t ua_hdr_len;
    /* The sender's address, asked for once, when a country is first needed; may return
     * NULL. */
    const struct sockaddr *(*peer)(void *ctx);
    void *peer_ctx;

    const char *ua_last; /* the User-Agent classified last, and what it gave */
    size_t ua_last_len;
    trk_ua ua;
    bool peer_done;
    char peer_cc[TRK_COUNTRY_BYTES];
} trk_enrich_req;

/* A batch's members copied into items that lack them (zero: none). */
typedef struct trk_batch_fields {
    jval context, integrations, sent_at;
} trk_batch_fields;

/*
 * Appends item (an object) to b as stored: its own members in order (minus writeKey,
 * receivedAt, type when the endpoint implies it, a null or empty messageId, and its
 * context), then type (kind >= 0: the endpoint's; -1: the item's own), messageId when missing
 * (generated), receivedAt (now_ms), the batch-level fields of bf it lacks (bf NULL: none),
 * and its first context merged with the batch's and with enrichment (en NULL: none). *own is
 * the size of its own members (what the per-event limit counts); *gen the offset in b of the
 * generated messageId, without its quotes (SIZE_MAX: it had its own).
 */
void trk_store_item(onr_buf *b, jval item, int kind, const trk_batch_fields *bf, int64_t now_ms,
                    trk_enrich_req *en, size_t *own, size_t *gen);

#endif
