/*
 * fuzz_store.c - libFuzzer target: any bytes as the body of a Segment request (a /v1/batch
 * when it holds a "batch" array, else one message sent to the endpoint of a kind the input
 * picks). Each object item is written as ingest stores it (trk_store_item), with and without
 * enrichment, copied from the input's text (jdoc_keep_text) or formatted from the parse;
 * what is written must parse, and decode exactly as trk_decode_overlay decoded the item
 * without writing it: the same error, or the same fields. Ingest validates with the overlay
 * and the engine reads the stored form, so any difference is an event accepted as one thing
 * and run as another.
 */
#include "track/store.h"
#include "track/track.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1767225600000)

static bool same_str(trk_str a, trk_str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static bool same_value(const trk_value *a, const trk_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case TV_BOOL:
        return a->b == b->b;
    case TV_NUM:
        return memcmp(&a->num, &b->num, sizeof(a->num)) == 0;
    case TV_STR:
        return same_str(a->str, b->str);
    default:
        return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jdoc *in, *out;
    static onr_buf b;
    static trk_event a, s;
    static const trk_schema schema = {
        .nprops = 3,
        .ntraits = 3,
        .props = {"feature", "step", "plan.name"},
        .traits = {"plan", "company_size", "email"},
    };
    if (!in) {
        in = jdoc_new(1 << 20);
        out = jdoc_new(4 << 20);
        /* ingest's bound: a stored message stays within the parser's depth */
        if (jdoc_set_max_depth(in, JDOC_MAX_DEPTH - 1))
            abort();
    }
    jval root;
    char ea[512], es[512];
    jdoc_keep_text(in, size % 3 != 0); /* stored as sent (as ingest does), or re-formatted */
    if (jdoc_parse(in, (const char *)data, size, &root, ea, sizeof(ea)) ||
        jval_type(root) != J_OBJECT)
        return 0;
    jval batch = jval_getz(root, "batch");
    bool is_batch = jval_type(batch) == J_ARRAY;
    int kind = is_batch ? -1 : (int)(size % TRK_KIND_COUNT);
    trk_batch_fields bf = {{0}, {0}, {0}};
    trk_overlay ov = {.kind = kind, .received_ms = NOW};
    if (is_batch) {
        bf.context = ov.context = jval_getz(root, "context");
        bf.integrations = jval_getz(root, "integrations");
        bf.sent_at = ov.sent_at = jval_getz(root, "sentAt");
    }
    static const char ua[] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) "
                             "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 "
                             "Safari/604.1";
    trk_enrich_req en = {.from_request = true, .ua_hdr = ua, .ua_hdr_len = sizeof(ua) - 1};
    jiter it = is_batch ? jval_iter(batch) : (jiter){0};
    for (int i = 0;; i++) {
        jval item = root;
        if (is_batch && !jiter_next(&it, &item, NULL, NULL))
            break;
        if (!is_batch && i == 1)
            break;
        if (jval_type(item) != J_OBJECT)
            continue;
        onr_buf_clear(&b);
        size_t own, gen;
        trk_store_item(&b, item, kind, is_batch ? &bf : NULL, NOW, (i + size) % 2 ? &en : NULL,
                       &own, &gen);
        if (own > b.len)
            abort(); /* the sender's part is within what was written */
        ov.message_id =
            gen == SIZE_MAX ? (trk_str){"", 0} : (trk_str){b.data + gen, TRK_UUID_CHARS};
        ea[0] = es[0] = 0;
        int ra = trk_decode_overlay(item, &ov, &schema, &a, ea, sizeof(ea));
        jval stored;
        if (jdoc_parse(out, b.data, b.len, &stored, es, sizeof(es)))
            abort(); /* the store wrote something that is not JSON */
        int rs = trk_decode_value(stored, &schema, -1, &s, es, sizeof(es));
        /* the same answer, but for the rules ingest alone applies (a group's groupId), which
         * refuse the message before it is stored: what its stored form would say is moot */
        bool ingest_only = ra != 0 && strstr(ea, "\"groupId\"") != NULL;
        if (!ingest_only && (ra != rs || strcmp(ea, es) != 0))
            abort();
        if (ra)
            continue;
        if (a.kind != s.kind || a.ts_ms != s.ts_ms || a.received_ms != s.received_ms ||
            !same_str(a.user_id, s.user_id) || !same_str(a.anon_id, s.anon_id) ||
            !same_str(a.previous_id, s.previous_id) || !same_str(a.message_id, s.message_id) ||
            !same_str(a.name, s.name))
            abort();
        for (uint32_t f = 0; f < schema.nprops; f++)
            if (!same_value(&a.props[f], &s.props[f]))
                abort();
        for (uint32_t f = 0; f < schema.ntraits; f++)
            if (!same_value(&a.traits[f], &s.traits[f]))
                abort();
    }
    return 0;
}
