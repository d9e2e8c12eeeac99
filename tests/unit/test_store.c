/*
 * test_store.c - unit tests for the stored form of a message (src/track/store.c): the
 * members ingest drops, fills in and copies from the batch, the size the per-event limit
 * counts, and what enrichment adds to the context. fuzz_store checks the other half: that
 * what is stored decodes as the item was validated.
 */
#include "track/store.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define NOW INT64_C(1767225600000) /* 2026-01-01T00:00:00.000Z */
#define RECV "\"receivedAt\":\"2026-01-01T00:00:00.000Z\""

static jdoc *doc;
static onr_buf out;

static void setup(void)
{
    doc = jdoc_new(1 << 20);
}

static void teardown(void)
{
    jdoc_free(doc);
    onr_buf_free(&out);
}

TestSuite(store, .init = setup, .fini = teardown);

/* Parses body; stores its first "batch" item (with the batch's fields), or body itself as
 * a message of kind. Returns the stored text; *own and *gen as trk_store_item sets them. */
static const char *store(const char *body, int kind, trk_enrich_req *en, size_t *own, size_t *gen)
{
    jval root, item;
    char err[256];
    cr_assert_eq(jdoc_parse(doc, body, strlen(body), &root, err, sizeof(err)), 0, "%s", err);
    trk_batch_fields bf = {{0}, {0}, {0}};
    jval batch = jval_getz(root, "batch");
    item = root;
    if (jval_type(batch) == J_ARRAY) {
        jiter it = jval_iter(batch);
        cr_assert(jiter_next(&it, &item, NULL, NULL));
        bf.context = jval_getz(root, "context");
        bf.integrations = jval_getz(root, "integrations");
        bf.sent_at = jval_getz(root, "sentAt");
    }
    onr_buf_clear(&out);
    size_t o, g;
    trk_store_item(&out, item, kind, jval_type(batch) == J_ARRAY ? &bf : NULL, NOW, en,
                   own ? own : &o, gen ? gen : &g);
    return onr_buf_cstr(&out);
}

Test(store, fills_in_type_messageId_and_receivedAt_and_drops_what_the_server_sets)
{
    size_t own, gen;
    const char *body = "{\"userId\":\"u\",\"type\":\"page\",\"writeKey\":\"k\",\"event\":\"E\","
                       "\"receivedAt\":\"soon\",\"messageId\":\"\"}";
    const char *s = store(body, TRK_TRACK, NULL, &own, &gen);
    const char *want = "{\"userId\":\"u\",\"event\":\"E\",\"type\":\"track\",\"messageId\":\"";
    cr_assert_eq(strncmp(s, want, strlen(want)), 0, "%s", s);
    cr_assert_eq(gen, strlen(want));
    /* a version 4 UUID */
    cr_assert_eq(strspn(s + gen, "0123456789abcdef-"), TRK_UUID_CHARS, "%s", s);
    cr_assert_eq(s[gen + 14], '4', "%s", s);
    cr_assert(strchr("89ab", s[gen + 19]), "%s", s);
    cr_assert_str_eq(s + gen + TRK_UUID_CHARS, "\"," RECV "}");
    /* the limit counts the sender's members as stored: {"userId":"u","event":"E"} */
    cr_assert_eq(own, strlen("{\"userId\":\"u\",\"event\":\"E\"}"));

    /* a messageId of the sender's own is kept, and the type of a batch item too */
    s = store("{\"batch\":[{\"type\":\"identify\",\"messageId\":\"m1\",\"userId\":\"u\"}]}", -1,
              NULL, NULL, &gen);
    cr_assert_str_eq(s, "{\"type\":\"identify\",\"messageId\":\"m1\",\"userId\":\"u\"," RECV "}");
    cr_assert_eq(gen, SIZE_MAX);
}

Test(store, copies_the_batch_fields_an_item_lacks_and_merges_contexts)
{
    const char *s = store("{\"sentAt\":\"2026-01-01T00:00:00Z\",\"integrations\":{\"All\":false},"
                          "\"context\":{\"ip\":\"1.2.3.4\",\"locale\":\"en\"},\"batch\":[{\"type\":"
                          "\"track\",\"event\":\"E\",\"userId\":\"u\",\"messageId\":\"m\","
                          "\"integrations\":{},\"context\":{\"locale\":\"fr\"}}]}",
                          -1, NULL, NULL, NULL);
    cr_assert_str_eq(s, "{\"type\":\"track\",\"event\":\"E\",\"userId\":\"u\",\"messageId\":\"m\","
                        "\"integrations\":{}," RECV ",\"sentAt\":\"2026-01-01T00:00:00Z\","
                        "\"context\":{\"locale\":\"fr\",\"ip\":\"1.2.3.4\"}}");
}

/* A null context is no context: the batch's members and enrichment fill it in, and its size
 * as sent still counts towards the event limit. */
Test(store, a_null_context_is_filled_in_like_a_missing_one)
{
    static const char ua[] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    trk_enrich_req en = {.from_request = true, .ua_hdr = ua, .ua_hdr_len = sizeof(ua) - 1};
    size_t own_null, own_none;
    const char *s = store("{\"context\":{\"ip\":\"1.2.3.4\"},\"batch\":[{\"type\":\"track\","
                          "\"event\":\"E\",\"userId\":\"u\",\"messageId\":\"m\",\"context\":null}]}",
                          -1, &en, &own_null, NULL);
    cr_assert(strstr(s, "\"context\":{\"ip\":\"1.2.3.4\",\"userAgent\":"), "%s", s);
    cr_assert(strstr(s, "\"browser\":{\"name\":\"Firefox\""), "%s", s);
    cr_assert_null(strstr(s, "null"), "%s", s);
    trk_enrich_req en2 = {.from_request = true, .ua_hdr = ua, .ua_hdr_len = sizeof(ua) - 1};
    store("{\"context\":{\"ip\":\"1.2.3.4\"},\"batch\":[{\"type\":\"track\",\"event\":\"E\","
          "\"userId\":\"u\",\"messageId\":\"m\"}]}",
          -1, &en2, &own_none, NULL);
    cr_assert_eq(own_null, own_none + strlen(",\"context\":null"));
}

Test(store, enrichment_adds_to_the_context_what_the_sender_did_not_set)
{
    static const char ua[] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) "
                             "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
                             "Mobile/15E148 Safari/604.1";
    trk_enrich_req en = {.from_request = true, .ua_hdr = ua, .ua_hdr_len = sizeof(ua) - 1};
    const char *s = store("{\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m\","
                          "\"context\":{\"device\":{\"id\":\"d1\"},\"os\":\"mine\"}}",
                          TRK_TRACK, &en, NULL, NULL);
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m\",\"type\":\"track\"," RECV
             ",\"context\":{\"device\":{\"id\":\"d1\",\"type\":\"mobile\"},\"os\":\"mine\","
             "\"userAgent\":\"%s\",\"browser\":{\"name\":\"Safari\",\"version\":\"17\"}}}",
             ua);
    cr_assert_str_eq(s, want);

    /* the sender's own userAgent is the one classified, and not replaced */
    memset(&en, 0, sizeof(en));
    en.from_request = true;
    en.ua_hdr = "curl/8.0";
    en.ua_hdr_len = 8;
    s = store("{\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m\",\"context\":{\"userAgent\":"
              "\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
              "Gecko) Chrome/120.0.0.0 Safari/537.36\"}}",
              TRK_TRACK, &en, NULL, NULL);
    cr_assert(strstr(s, "\"device\":{\"type\":\"desktop\"}") && !strstr(s, "curl"), "%s", s);
    cr_assert(strstr(s, "\"browser\":{\"name\":\"Chrome\",\"version\":\"120\"}"), "%s", s);

    /* the batch's context read where the item's lacks a member, the first of a name counted
     * and the others kept as sent */
    memset(&en, 0, sizeof(en));
    en.from_request = true;
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":"
             "\"m\",\"context\":{\"os\":{\"name\":\"mine\"},\"os\":\"second\"}}],\"context\":"
             "{\"device\":{\"id\":\"d1\"},\"userAgent\":\"%s\",\"ip\":\"192.0.2.1\"}}",
             ua);
    s = store(body, -1, &en, NULL, NULL);
    snprintf(want, sizeof(want),
             "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m\"," RECV
             ",\"context\":{\"os\":{\"name\":\"mine\"},\"os\":\"second\",\"device\":{\"id\":"
             "\"d1\",\"type\":\"mobile\"},\"userAgent\":\"%s\",\"ip\":\"192.0.2.1\",\"browser\":"
             "{\"name\":\"Safari\",\"version\":\"17\"}}}",
             ua);
    cr_assert_str_eq(s, want);
}
