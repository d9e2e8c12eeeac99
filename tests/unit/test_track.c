/*
 * test_track.c - unit tests for the Segment message decoder (src/track/decode.c): kinds,
 * ids, Segment's event-time rule and skew clamp, property and trait paths, and the errors
 * a bad message gets.
 */
#include "base/base.h"
#include "base/json.h"
#include "track/track.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static jdoc *doc;
static trk_event ev;
static char err[256];
static trk_schema schema;

static void setup(void)
{
    doc = jdoc_new(1 << 20);
    memset(&ev, 0, sizeof(ev));
    memset(&schema, 0, sizeof(schema));
    err[0] = '\0';
}

static void teardown(void)
{
    jdoc_free(doc);
}

TestSuite(track, .init = setup, .fini = teardown);

static int decode_ts(const char *json, int64_t default_ts_ms)
{
    return trk_decode(doc, json, strlen(json), &schema, default_ts_ms, &ev, err, sizeof(err));
}

static int decode(const char *json)
{
    return decode_ts(json, -1);
}

static bool str_is(trk_str s, const char *z)
{
    return s.n == strlen(z) && memcmp(s.p, z, s.n) == 0;
}

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int64_t at(const char *iso)
{
    int64_t ms = 0;
    cr_assert_eq(onr_time_parse(iso, strlen(iso), &ms), 0, "bad test time %s", iso);
    return ms;
}

#define T0 "\"timestamp\":\"2026-11-18T11:45:02.123Z\""

/* ---- kinds */

Test(track, decodes_track_message)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"Signed Up\",\"userId\":\"u1\","
                    "\"anonymousId\":\"a1\",\"messageId\":\"m-1\"," T0 "}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_TRACK);
    cr_assert(str_is(ev.name, "Signed Up"));
    cr_assert(str_is(ev.user_id, "u1"));
    cr_assert(str_is(ev.anon_id, "a1"));
    cr_assert(str_is(ev.message_id, "m-1"));
    cr_assert_eq(ev.previous_id.n, 0);
    cr_assert_eq(ev.ts_ms, at("2026-11-18T11:45:02.123Z"));
}

Test(track, decodes_identify_message)
{
    schema.ntraits = 1;
    schema.traits[0] = "email";
    int rc = decode("{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a@b.c\"},"
                    "\"event\":\"ignored\"," T0 "}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_IDENTIFY);
    cr_assert_eq(ev.name.n, 0, "identify has no name");
    cr_assert_eq(ev.traits[0].type, TV_STR);
    cr_assert(str_is(ev.traits[0].str, "a@b.c"));
}

Test(track, decodes_page_and_screen_with_optional_name)
{
    cr_assert_eq(decode("{\"type\":\"page\",\"name\":\"Pricing\",\"anonymousId\":\"a\"," T0 "}"), 0,
                 "%s", err);
    cr_assert_eq(ev.kind, TRK_PAGE);
    cr_assert(str_is(ev.name, "Pricing"));
    cr_assert(str_is(ev.anon_id, "a"));
    cr_assert_eq(ev.user_id.n, 0);

    cr_assert_eq(decode("{\"type\":\"screen\",\"userId\":\"u\"," T0 "}"), 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_SCREEN);
    cr_assert_eq(ev.name.n, 0);
    cr_assert_not_null(ev.name.p, "an absent name is an empty string, not NULL");
}

Test(track, decodes_group_traits_as_properties_not_user_traits)
{
    schema.nprops = 1;
    schema.props[0] = "plan";
    schema.ntraits = 1;
    schema.traits[0] = "plan";
    int rc = decode("{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"g\","
                    "\"traits\":{\"plan\":\"enterprise\"},"
                    "\"context\":{\"traits\":{\"plan\":\"free\"}}," T0 "}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_GROUP);
    cr_assert(str_is(ev.props[0].str, "enterprise"));
    cr_assert(str_is(ev.traits[0].str, "free"));
}

/* Ingest refuses a group without a groupId; a stored one (written before the rule) still
 * decodes, so that the engine runs the log as it stands. */
static int decode_at_ingest(const char *json)
{
    jdoc *d = jdoc_new(1 << 20);
    jval root;
    cr_assert_eq(jdoc_parse(d, json, strlen(json), &root, err, sizeof(err)), 0, "%s", err);
    trk_overlay ov = {.kind = -1, .received_ms = 1, .message_id = {"m", 1}};
    int rc = trk_decode_overlay(root, &ov, &schema, &ev, err, sizeof(err));
    jdoc_free(d);
    return rc;
}

Test(track, ingest_refuses_a_group_without_a_group_id_and_the_log_keeps_running_one)
{
    const char *none = "{\"type\":\"group\",\"userId\":\"u\"," T0 "}";
    cr_assert_eq(decode_at_ingest(none), ONR_E_INVALID);
    cr_assert_str_eq(err, "missing \"groupId\" (group needs it)");
    cr_assert_eq(decode_at_ingest("{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_neq(decode_at_ingest("{\"type\":\"group\",\"userId\":\"u\",\"groupId\":7," T0 "}"),
                  0);
    cr_assert(strstr(err, "groupId"), "%s", err);
    cr_assert_eq(decode_at_ingest("{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"g\"," T0 "}"),
                 0, "%s", err);
    cr_assert_eq(decode(none), 0, "a stored group without one still runs: %s", err);
    cr_assert_eq(ev.kind, TRK_GROUP);
}

Test(track, decodes_alias_with_previous_id)
{
    int rc = decode("{\"type\":\"alias\",\"userId\":\"u2\",\"previousId\":\"anon-9\"," T0 "}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_ALIAS);
    cr_assert(str_is(ev.previous_id, "anon-9"));
    cr_assert(str_is(ev.user_id, "u2"));
}

Test(track, alias_requires_previous_id)
{
    cr_assert_eq(decode("{\"type\":\"alias\",\"userId\":\"u2\"," T0 "}"), ONR_E_INVALID);
    cr_assert(strstr(err, "missing \"previousId\""), "%s", err);
    cr_assert_eq(decode("{\"type\":\"alias\",\"userId\":\"u2\",\"previousId\":\"\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_eq(decode("{\"type\":\"alias\",\"userId\":\"u2\",\"previousId\":7," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"previousId\" must be a string, got number");
}

Test(track, alias_requires_user_id)
{
    cr_assert_eq(decode("{\"type\":\"alias\",\"anonymousId\":\"a\",\"previousId\":\"p\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert(strstr(err, "missing \"userId\""), "%s", err);
}

Test(track, missing_type_with_event_is_track)
{
    cr_assert_eq(decode("{\"event\":\"Clicked\",\"userId\":\"u\"," T0 "}"), 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_TRACK);
    cr_assert(str_is(ev.name, "Clicked"));
}

Test(track, missing_type_without_event_fails)
{
    cr_assert_eq(decode("{\"userId\":\"u\"," T0 "}"), ONR_E_INVALID);
    cr_assert_str_eq(err, "missing \"type\"");
}

Test(track, unknown_type_is_case_sensitive_and_named)
{
    cr_assert_eq(decode("{\"type\":\"Track\",\"event\":\"x\",\"userId\":\"u\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert(strstr(err, "\"type\" must be one of track,"), "%s", err);
    cr_assert(strstr(err, "got \"Track\""), "%s", err);

    cr_assert_eq(decode("{\"type\":3,\"userId\":\"u\"," T0 "}"), ONR_E_INVALID);
    cr_assert_str_eq(err, "\"type\" must be a string, got number");
}

Test(track, kind_names)
{
    cr_assert_str_eq(trk_kind_name(TRK_TRACK), "track");
    cr_assert_str_eq(trk_kind_name(TRK_IDENTIFY), "identify");
    cr_assert_str_eq(trk_kind_name(TRK_PAGE), "page");
    cr_assert_str_eq(trk_kind_name(TRK_SCREEN), "screen");
    cr_assert_str_eq(trk_kind_name(TRK_GROUP), "group");
    cr_assert_str_eq(trk_kind_name(TRK_ALIAS), "alias");
    cr_assert_str_eq(trk_kind_name(TRK_KIND_COUNT), "unknown");
    cr_assert_str_eq(trk_kind_name((trk_kind)-1), "unknown");
}

/* ---- ids and names */

Test(track, missing_ids_fail)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\"," T0 "}"), ONR_E_INVALID);
    cr_assert_str_eq(err, "missing userId and anonymousId");
}

Test(track, empty_and_null_ids_count_as_absent)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\",\"userId\":\"\","
                        "\"anonymousId\":\"\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "missing userId and anonymousId");
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\",\"userId\":null,"
                        "\"anonymousId\":\"a\"," T0 "}"),
                 0, "%s", err);
    cr_assert_eq(ev.user_id.n, 0);
    cr_assert(str_is(ev.anon_id, "a"));
}

Test(track, numeric_ids_are_type_errors)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\",\"userId\":42," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"userId\" must be a string, got number");
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\",\"userId\":\"u\","
                        "\"anonymousId\":{}," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"anonymousId\" must be a string, got object");
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"x\",\"userId\":\"u\","
                        "\"messageId\":[1]," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"messageId\" must be a string, got array");
}

Test(track, id_length_limit)
{
    char id[TRK_MAX_ID_BYTES + 2];
    char json[1024];
    memset(id, 'x', sizeof(id) - 1);
    id[TRK_MAX_ID_BYTES] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"%s\"," T0 "}",
             id);
    cr_assert_eq(decode(json), 0, "exactly the limit is accepted: %s", err);
    cr_assert_eq(ev.user_id.n, TRK_MAX_ID_BYTES);

    id[TRK_MAX_ID_BYTES] = 'x';
    id[TRK_MAX_ID_BYTES + 1] = '\0';
    snprintf(json, sizeof(json),
             "{\"type\":\"track\",\"event\":\"e\",\"anonymousId\":\"%s\"," T0 "}", id);
    cr_assert_eq(decode(json), ONR_E_LIMIT);
    cr_assert_str_eq(err, "\"anonymousId\" is 257 bytes, over the 256-byte limit");
}

Test(track, track_requires_event_name)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"userId\":\"u\"," T0 "}"), ONR_E_INVALID);
    cr_assert(strstr(err, "missing \"event\""), "%s", err);
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"\",\"userId\":\"u\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert(strstr(err, "missing \"event\""), "%s", err);
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":true,\"userId\":\"u\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"event\" must be a string, got boolean");
}

Test(track, event_name_length_limit)
{
    char name[TRK_MAX_NAME_BYTES + 2];
    char json[1024];
    memset(name, 'n', TRK_MAX_NAME_BYTES + 1);
    name[TRK_MAX_NAME_BYTES + 1] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"track\",\"event\":\"%s\",\"userId\":\"u\"," T0 "}",
             name);
    cr_assert_eq(decode(json), ONR_E_LIMIT);
    cr_assert(strstr(err, "\"event\" is 257 bytes"), "%s", err);

    snprintf(json, sizeof(json), "{\"type\":\"page\",\"name\":\"%s\",\"userId\":\"u\"," T0 "}",
             name);
    cr_assert_eq(decode(json), ONR_E_LIMIT);
    cr_assert(strstr(err, "\"name\" is 257 bytes"), "%s", err);
}

Test(track, first_of_duplicate_keys_wins)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"first\",\"event\":\"second\","
                        "\"userId\":\"u\"," T0 "}"),
                 0, "%s", err);
    cr_assert(str_is(ev.name, "first"));
}

/* ---- event time */

Test(track, timestamp_wins_over_other_times)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"originalTimestamp\":\"2026-01-01T00:00:00Z\","
                    "\"sentAt\":\"2026-01-01T00:00:10Z\",\"receivedAt\":\"2026-01-01T01:00:10Z\","
                    "\"timestamp\":\"2026-01-01T00:00:05+01:00\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2025-12-31T23:00:05Z"));
}

Test(track, original_timestamp_is_corrected_by_clock_skew)
{
    /* The device's clock is 2h05m behind: it sent at 10:05 what arrived at 12:10. */
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"originalTimestamp\":\"2026-03-01T10:00:00.250Z\","
                    "\"sentAt\":\"2026-03-01T10:05:00Z\",\"receivedAt\":\"2026-03-01T12:10:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-03-01T12:05:00.250Z"));
}

Test(track, skew_correction_survives_a_clock_days_behind)
{
    /* Corrected time is on the receiver's clock: compared with receivedAt, not sentAt. */
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"originalTimestamp\":\"2026-03-01T10:00:00Z\","
                    "\"sentAt\":\"2026-03-01T10:01:00Z\",\"receivedAt\":\"2026-03-04T10:01:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-03-04T10:00:00Z"));
}

Test(track, falls_back_through_original_received_sent)
{
    const char *head = "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\",";
    char json[512];

    snprintf(json, sizeof(json),
             "%s\"originalTimestamp\":\"2026-05-01T00:00:01Z\","
             "\"sentAt\":\"2026-05-01T00:00:09Z\"}",
             head);
    cr_assert_eq(decode(json), 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:01Z"), "originalTimestamp without receivedAt");

    snprintf(json, sizeof(json),
             "%s\"originalTimestamp\":\"2026-05-01T00:00:01Z\","
             "\"receivedAt\":\"2026-05-01T00:00:09Z\"}",
             head);
    cr_assert_eq(decode(json), 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:01Z"), "originalTimestamp without sentAt");

    snprintf(json, sizeof(json),
             "%s\"sentAt\":\"2026-05-01T00:00:02Z\","
             "\"receivedAt\":\"2026-05-01T00:00:03Z\"}",
             head);
    cr_assert_eq(decode(json), 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:03Z"), "receivedAt before sentAt");

    snprintf(json, sizeof(json), "%s\"sentAt\":\"2026-05-01T00:00:02Z\"}", head);
    cr_assert_eq(decode(json), 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:02Z"), "sentAt last");
}

Test(track, default_time_or_missing_timestamp)
{
    const char *json = "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"}";
    cr_assert_eq(decode_ts(json, at("2026-07-07T07:07:07Z")), 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-07-07T07:07:07Z"));
    cr_assert_eq(decode_ts(json, -1), ONR_E_INVALID);
    cr_assert(starts(err, "missing timestamp"), "%s", err);
}

Test(track, null_timestamp_counts_as_absent)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\",\"timestamp\":null,"
                        "\"sentAt\":\"2026-05-01T00:00:02Z\"}"),
                 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:02Z"));
}

Test(track, far_future_time_is_clamped_to_sent_at)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"timestamp\":\"2026-05-04T00:00:00Z\",\"sentAt\":\"2026-05-01T00:00:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:00Z"));

    rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                "\"originalTimestamp\":\"2030-01-01T00:00:00Z\","
                "\"sentAt\":\"2026-05-01T00:00:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:00Z"), "bare originalTimestamp is clamped too");

    /* Corrected: orig is 3 days after sentAt on the device clock, so 3 days after receivedAt. */
    rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                "\"originalTimestamp\":\"2026-05-04T00:00:00Z\","
                "\"sentAt\":\"2026-05-01T00:00:00Z\",\"receivedAt\":\"2026-05-01T00:00:30Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T00:00:30Z"));
}

Test(track, time_within_skew_is_not_clamped)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"timestamp\":\"2026-05-01T23:59:59Z\",\"sentAt\":\"2026-05-01T00:00:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-01T23:59:59Z"));
    rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                "\"timestamp\":\"2026-05-02T00:00:00Z\",\"sentAt\":\"2026-05-01T00:00:00Z\"}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.ts_ms, at("2026-05-02T00:00:00Z"), "exactly the skew is kept");
}

Test(track, invalid_time_names_field_and_quotes_value)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                        "\"timestamp\":\"yesterday\"}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"timestamp\" is not a valid ISO-8601 time: \"yesterday\"");

    /* Every present time field is checked, even one that does not decide the time. */
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                        ",\"receivedAt\":\"2026-13-01T00:00:00Z\"}"),
                 ONR_E_INVALID);
    cr_assert(starts(err, "\"receivedAt\" is not a valid"), "%s", err);

    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                        "\"sentAt\":1700000000000}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"sentAt\" must be an ISO-8601 string, got number");
}

Test(track, quoted_values_are_truncated_and_one_line)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                        "\"originalTimestamp\":\"line one\\nline two \\\"quoted\\\" and a long "
                        "tail that goes on and on and on\"}"),
                 ONR_E_INVALID);
    cr_assert_null(strchr(err, '\n'), "one line: %s", err);
    cr_assert(strstr(err, "line one\\x0aline two \\\"quoted\\\""), "%s", err);
    cr_assert(strstr(err, "...") != NULL, "%s", err);
    cr_assert_null(strstr(err, "on and on and on"), "truncated: %s", err);
}

Test(track, truncation_keeps_utf8_characters_whole)
{
    /* 39 ASCII bytes, then a 3-byte character straddling the 40-byte cut. */
    cr_assert_eq(decode("{\"type\":\"t23456789012345678901234567890123456789\xe2\x82\xac"
                        "xyz\",\"userId\":\"u\"," T0 "}"),
                 ONR_E_INVALID);
    cr_assert(strstr(err, "789\"..."), "%s", err);
    size_t bad = 0;
    cr_assert(onr_utf8_valid(err, strlen(err), &bad), "err is valid UTF-8: %s", err);
}

Test(track, absurd_timestamps_are_out_of_range)
{
    const char *bad[] = {
        "1970-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-05:00",
    };
    char json[256];
    for (size_t i = 0; i < ONR_ARRAY_LEN(bad); i++) {
        snprintf(json, sizeof(json),
                 "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\",\"timestamp\":\"%s\"}",
                 bad[i]);
        cr_assert_eq(decode(json), ONR_E_INVALID, "%s accepted", bad[i]);
        cr_assert(starts(err, "\"timestamp\" is out of range: \""), "%s", err);
        cr_assert(strstr(err, bad[i]), "%s", err);
    }
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                        "\"timestamp\":\"2000-01-01T00:00:00Z\"}"),
                 0, "%s", err);
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                        ",\"sentAt\":\"1970-01-02T00:00:00Z\"}"),
                 ONR_E_INVALID);
    cr_assert(starts(err, "\"sentAt\" is out of range"), "%s", err);
}

Test(track, absurd_corrected_time_is_out_of_range)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\","
                    "\"originalTimestamp\":\"2000-01-02T00:00:00Z\","
                    "\"sentAt\":\"2030-01-01T00:00:00Z\",\"receivedAt\":\"2000-01-01T00:00:00Z\"}");
    cr_assert_eq(rc, ONR_E_INVALID);
    cr_assert(strstr(err, "out of range"), "%s", err);
}

/* ---- malformed input and limits */

Test(track, invalid_json_is_a_parse_error)
{
    const char *bad[] = {
        "{\"type\":\"track\",\"userId\":\"u\"",
        "{\"type\":\"track\",}",
        "{\"type\":\"track\"} trailing",
        "{'type':'track'}",
        "",
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(bad); i++) {
        cr_assert_eq(decode(bad[i]), ONR_E_PARSE, "accepted: %s", bad[i]);
        cr_assert(starts(err, "invalid JSON: "), "%s", err);
    }
}

Test(track, malformed_unread_field_is_rejected)
{
    /* simdjson's DOM parser validates the whole document, not just the fields read. */
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                        ",\"context\":{\"ip\":01}}"),
                 ONR_E_PARSE);
}

Test(track, root_must_be_an_object)
{
    cr_assert_eq(decode("[{\"type\":\"track\"}]"), ONR_E_INVALID);
    cr_assert_str_eq(err, "message must be a JSON object, got array");
    cr_assert_eq(decode("\"track\""), ONR_E_INVALID);
    cr_assert_str_eq(err, "message must be a JSON object, got string");
}

Test(track, invalid_utf8_fails_clearly)
{
    /* A raw invalid byte in a field the decoder never reads still fails the message. */
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                        ",\"context\":{\"note\":\"caf\xe9\"}}"),
                 ONR_E_PARSE);
    cr_assert(strstr(err, "UTF-8"), "%s", err);
    /* An overlong encoding of '/'. */
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"\xc0\xaf\",\"userId\":\"u\"," T0 "}"),
                 ONR_E_PARSE);
    cr_assert(strstr(err, "UTF-8"), "%s", err);
    /* An escape that would decode to a lone surrogate. */
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"\\udc00\"," T0 "}"),
                 ONR_E_PARSE);
    cr_assert(starts(err, "invalid JSON: "), "%s", err);
}

Test(track, valid_utf8_and_escapes_decode)
{
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00\","
                        "\"userId\":\"\xe7\x94\xa8\xe6\x88\xb7\"," T0 "}"),
                 0, "%s", err);
    cr_assert(str_is(ev.name, "caf\xc3\xa9 \xc3\xa9 \xf0\x9f\x98\x80"));
    cr_assert(str_is(ev.user_id, "\xe7\x94\xa8\xe6\x88\xb7"));
}

Test(track, oversized_message_is_a_limit_error)
{
    size_t len = TRK_MAX_MESSAGE_BYTES + 1;
    char *buf = onr_malloc(len + 1);
    const char *head = "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0 "}";
    memset(buf, ' ', len);
    memcpy(buf, head, strlen(head));
    buf[len] = '\0';

    int rc = trk_decode(doc, buf, len, &schema, -1, &ev, err, sizeof(err));
    cr_assert_eq(rc, ONR_E_LIMIT);
    cr_assert_str_eq(err, "message of 32769 bytes exceeds the 32 KB limit");

    rc = trk_decode(doc, buf, len - 1, &schema, -1, &ev, err, sizeof(err));
    cr_assert_eq(rc, 0, "exactly 32 KB is accepted: %s", err);
    onr_free(buf);
}

/* ---- properties and traits */

Test(track, property_values_by_type_and_dotted_path)
{
    const char *paths[] = {"plan.name", "plan.seats", "plan.missing", "plan.name.deeper", "a.b.c",
                           "tags",      "trial",      "coupon",       "missing",          "plan"};
    schema.nprops = ONR_ARRAY_LEN(paths);
    for (size_t i = 0; i < ONR_ARRAY_LEN(paths); i++)
        schema.props[i] = paths[i];
    int rc = decode("{\"type\":\"track\",\"event\":\"Upgraded\",\"userId\":\"u\"," T0
                    ",\"properties\":{\"plan\":{\"name\":\"pro\",\"seats\":12.5},"
                    "\"a\":{\"b\":{\"c\":false}},\"tags\":[\"x\"],\"trial\":true,"
                    "\"coupon\":null}}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ev.props[0].type, TV_STR);
    cr_assert(str_is(ev.props[0].str, "pro"));
    cr_assert_eq(ev.props[1].type, TV_NUM);
    cr_assert_float_eq(ev.props[1].num, 12.5, 1e-9);
    cr_assert_eq(ev.props[2].type, TV_MISSING);
    cr_assert_eq(ev.props[3].type, TV_MISSING, "a path through a string is missing");
    cr_assert_eq(ev.props[4].type, TV_BOOL);
    cr_assert_eq(ev.props[4].b, false);
    cr_assert_eq(ev.props[5].type, TV_OTHER);
    cr_assert_eq(ev.props[6].type, TV_BOOL);
    cr_assert_eq(ev.props[6].b, true);
    cr_assert_eq(ev.props[7].type, TV_NULL);
    cr_assert_eq(ev.props[8].type, TV_MISSING);
    cr_assert_eq(ev.props[9].type, TV_OTHER);
}

Test(track, property_strings_are_views_into_the_parser)
{
    schema.nprops = 1;
    schema.props[0] = "s";
    char json[] = "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                  ",\"properties\":{\"s\":\"view\"}}";
    cr_assert_eq(decode(json), 0, "%s", err);
    cr_assert(ev.props[0].str.p < json || ev.props[0].str.p >= json + sizeof(json),
              "string points into the parser's memory, not the caller's buffer");
    memset(json, ' ', sizeof(json) - 1);
    cr_assert(str_is(ev.props[0].str, "view"), "valid after the input buffer changes");
}

Test(track, properties_must_be_an_object)
{
    schema.nprops = 1;
    schema.props[0] = "x";
    cr_assert_eq(
        decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0 ",\"properties\":[1,2]}"),
        ONR_E_INVALID);
    cr_assert_str_eq(err, "\"properties\" must be an object, got array");

    schema.nprops = 0;
    cr_assert_eq(decode("{\"type\":\"page\",\"userId\":\"u\"," T0 ",\"properties\":\"x\"}"),
                 ONR_E_INVALID, "checked whatever the schema asks for");

    schema.nprops = 1;
    cr_assert_eq(
        decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0 ",\"properties\":null}"),
        0, "%s", err);
    cr_assert_eq(ev.props[0].type, TV_MISSING);
}

Test(track, identify_traits_fall_back_to_context_traits)
{
    schema.ntraits = 3;
    schema.traits[0] = "email";
    schema.traits[1] = "company.size";
    schema.traits[2] = "role";
    schema.nprops = 1;
    schema.props[0] = "email";

    /* No `traits`: all from context.traits. */
    int rc =
        decode("{\"type\":\"identify\",\"userId\":\"u\"," T0 ",\"context\":{\"ip\":\"1.2.3.4\","
               "\"traits\":{\"email\":\"c@x\",\"company\":{\"size\":50}}}}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(str_is(ev.traits[0].str, "c@x"));
    cr_assert_eq(ev.traits[1].type, TV_NUM);
    cr_assert_float_eq(ev.traits[1].num, 50.0, 1e-9);
    cr_assert_eq(ev.traits[2].type, TV_MISSING);
    cr_assert_eq(ev.props[0].type, TV_MISSING, "identify has no properties");

    /* `traits` first, field by field. */
    rc = decode("{\"type\":\"identify\",\"userId\":\"u\"," T0 ",\"traits\":{\"email\":\"t@x\"},"
                "\"context\":{\"traits\":{\"email\":\"c@x\",\"role\":\"admin\"}}}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(str_is(ev.traits[0].str, "t@x"));
    cr_assert_eq(ev.traits[1].type, TV_MISSING);
    cr_assert(str_is(ev.traits[2].str, "admin"));
}

Test(track, context_traits_fill_traits_on_any_message)
{
    schema.ntraits = 1;
    schema.traits[0] = "plan";
    schema.nprops = 1;
    schema.props[0] = "plan";
    int rc = decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                    ",\"properties\":{\"plan\":\"p\"},\"traits\":{\"plan\":\"ignored\"},"
                    "\"context\":{\"traits\":{\"plan\":\"t\"}}}");
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(str_is(ev.props[0].str, "p"));
    cr_assert(str_is(ev.traits[0].str, "t"), "top-level traits are identify's only");
}

Test(track, containers_must_be_objects)
{
    cr_assert_eq(decode("{\"type\":\"identify\",\"userId\":\"u\"," T0 ",\"traits\":true}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"traits\" must be an object, got boolean");
    cr_assert_eq(
        decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0 ",\"context\":\"web\"}"),
        ONR_E_INVALID);
    cr_assert_str_eq(err, "\"context\" must be an object, got string");
    cr_assert_eq(decode("{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0
                        ",\"context\":{\"traits\":[]}}"),
                 ONR_E_INVALID);
    cr_assert_str_eq(err, "\"context.traits\" must be an object, got array");
}

Test(track, schema_may_be_null)
{
    const char *json = "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"," T0 "}";
    cr_assert_eq(trk_decode(doc, json, strlen(json), NULL, -1, &ev, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert(str_is(ev.name, "e"));
}

/* ---- batch items */

Test(track, decode_value_reads_batch_items)
{
    const char *batch = "{\"batch\":[{\"type\":\"track\",\"event\":\"one\",\"userId\":\"u\"},"
                        "{\"type\":\"page\",\"anonymousId\":\"a\",\"name\":\"Home\"},7],"
                        "\"sentAt\":\"2026-01-01T00:00:00Z\"}";
    jval root;
    cr_assert_eq(jdoc_parse(doc, batch, strlen(batch), &root, err, sizeof(err)), 0, "%s", err);
    jiter it = jval_iter(jval_getz(root, "batch"));
    jval item;
    int64_t now = at("2026-02-02T00:00:00Z");

    cr_assert(jiter_next(&it, &item, NULL, NULL));
    cr_assert_eq(trk_decode_value(item, &schema, now, &ev, err, sizeof(err)), 0, "%s", err);
    cr_assert(str_is(ev.name, "one"));
    cr_assert_eq(ev.ts_ms, now);

    cr_assert(jiter_next(&it, &item, NULL, NULL));
    cr_assert_eq(trk_decode_value(item, &schema, now, &ev, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ev.kind, TRK_PAGE);
    cr_assert(str_is(ev.name, "Home"));

    cr_assert(jiter_next(&it, &item, NULL, NULL));
    cr_assert_eq(trk_decode_value(item, &schema, now, &ev, err, sizeof(err)), ONR_E_INVALID);
    cr_assert_str_eq(err, "message must be a JSON object, got number");
}

/* ---- what ingest stores: trk_decode_overlay against the stored message */

/* Decodes body's "batch" item (or body itself when it has none) with the overlay ingest
 * would use, then stored, the message as ingest writes it, and checks both give the same
 * outcome: the same error, or the same kind, ids, times and trait. */
static void same_as_stored(const char *body, int kind, const char *stored)
{
    jdoc *in = jdoc_new(1 << 20);
    jval root, item;
    cr_assert_eq(jdoc_parse(in, body, strlen(body), &root, err, sizeof(err)), 0, "%s", err);
    jval batch = jval_getz(root, "batch");
    item = root;
    trk_overlay ov = {.kind = kind,
                      .received_ms = at("2026-06-01T00:00:00Z"),
                      .message_id = {"generated-id", 12}};
    if (jval_type(batch) == J_ARRAY) {
        jiter it = jval_iter(batch);
        cr_assert(jiter_next(&it, &item, NULL, NULL));
        ov.sent_at = jval_getz(root, "sentAt");
        ov.context = jval_getz(root, "context");
    }
    trk_event o;
    char oerr[256] = "";
    int orc = trk_decode_overlay(item, &ov, &schema, &o, oerr, sizeof(oerr));
    int src = decode(stored);
    cr_assert_eq(orc, src, "%s: overlay %d (%s), stored %d (%s)", body, orc, oerr, src, err);
    if (src) {
        cr_assert_str_eq(oerr, err, "%s", body);
    } else {
        cr_assert_eq(o.kind, ev.kind, "%s", body);
        cr_assert_eq(o.ts_ms, ev.ts_ms, "%s", body);
        cr_assert_eq(o.received_ms, ev.received_ms, "%s", body);
        cr_assert(o.message_id.n == ev.message_id.n &&
                      memcmp(o.message_id.p, ev.message_id.p, o.message_id.n) == 0,
                  "%s: messageId %.*s against %.*s", body, (int)o.message_id.n, o.message_id.p,
                  (int)ev.message_id.n, ev.message_id.p);
        cr_assert(o.user_id.n == ev.user_id.n &&
                  memcmp(o.user_id.p, ev.user_id.p, o.user_id.n) == 0);
        cr_assert_eq(o.traits[0].type, ev.traits[0].type, "%s", body);
        cr_assert(o.traits[0].str.n == ev.traits[0].str.n &&
                  memcmp(o.traits[0].str.p, ev.traits[0].str.p, o.traits[0].str.n) == 0);
    }
    jdoc_free(in);
}

#define RECV ",\"receivedAt\":\"2026-06-01T00:00:00.000Z\""

Test(track, overlay_decodes_as_the_stored_message)
{
    schema.ntraits = 1;
    schema.traits[0] = "plan";
    /* the endpoint's type replaces the message's, and receivedAt the server's */
    same_as_stored("{\"type\":42,\"userId\":\"u\",\"event\":\"E\",\"receivedAt\":\"soon\"}",
                   TRK_TRACK,
                   "{\"userId\":\"u\",\"event\":\"E\",\"type\":\"track\","
                   "\"messageId\":\"generated-id\"" RECV "}");
    /* a null or empty messageId is dropped: the next one, or the generated one */
    same_as_stored(
        "{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
        "\"messageId\":null,\"messageId\":\"\",\"messageId\":\"m2\"}]}",
        -1, "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m2\"" RECV "}");
    same_as_stored("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                   "\"messageId\":null}]}",
                   -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                   "\"messageId\":\"generated-id\"" RECV "}");
    same_as_stored("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                   "\"messageId\":\"\",\"messageId\":5}]}",
                   -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":5" RECV "}");
    /* the batch's sentAt, for an item without one, in the skew clamp */
    same_as_stored("{\"sentAt\":\"2026-01-01T00:00:00Z\",\"batch\":[{\"type\":\"track\","
                   "\"userId\":\"u\",\"event\":\"E\",\"timestamp\":\"2026-03-01T00:00:00Z\"}]}",
                   -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                   "\"timestamp\":\"2026-03-01T00:00:00Z\",\"messageId\":\"generated-id\"" RECV
                   ",\"sentAt\":\"2026-01-01T00:00:00Z\"}");
    same_as_stored("{\"sentAt\":\"never\",\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                   "\"event\":\"E\"}]}",
                   -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                   "\"messageId\":\"generated-id\"" RECV ",\"sentAt\":\"never\"}");
    same_as_stored("{\"sentAt\":\"never\",\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                   "\"event\":\"E\",\"sentAt\":null}]}",
                   -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"sentAt\":null,"
                   "\"messageId\":\"generated-id\"" RECV "}");
    /* contexts: the item's first, the batch's members it lacks; traits fall back to it */
    same_as_stored("{\"context\":{\"traits\":{\"plan\":\"pro\"}},\"batch\":[{\"type\":\"identify\","
                   "\"userId\":\"u\",\"context\":{\"ip\":\"1.2.3.4\"},\"context\":7}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"ip\":\"1.2.3.4\",\"traits\":{\"plan\":\"pro\"}}}");
    same_as_stored("{\"context\":{\"traits\":{\"plan\":\"pro\"}},\"batch\":[{\"type\":\"identify\","
                   "\"userId\":\"u\",\"context\":{\"traits\":{\"plan\":\"free\"}}}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"traits\":{\"plan\":\"free\"}}}");
    same_as_stored("{\"context\":{\"traits\":5},\"batch\":[{\"type\":\"identify\","
                   "\"userId\":\"u\",\"context\":{}}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"traits\":5}}");
    /* a null context is none: the batch's stands in for it */
    same_as_stored("{\"context\":{\"traits\":5},\"batch\":[{\"type\":\"identify\","
                   "\"userId\":\"u\",\"context\":null}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"traits\":5}}");
    same_as_stored("{\"context\":{\"traits\":{\"plan\":\"pro\"}},\"batch\":[{\"type\":\"identify\","
                   "\"userId\":\"u\",\"context\":null,\"context\":{\"ip\":\"1.2.3.4\"}}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"traits\":{\"plan\":\"pro\"}}}");
    same_as_stored("{\"context\":\"web\",\"batch\":[{\"type\":\"identify\",\"userId\":\"u\"}]}", -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":\"web\"}");
    same_as_stored("{\"context\":\"web\",\"batch\":[{\"type\":\"identify\",\"userId\":\"u\","
                   "\"context\":{\"traits\":{\"plan\":\"team\"}}}]}",
                   -1,
                   "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"generated-id\"" RECV
                   ",\"context\":{\"traits\":{\"plan\":\"team\"}}}");
    /* and the message's own errors are its own */
    same_as_stored("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"userId\":\"v\"}]}", -1,
                   "{\"type\":\"track\",\"userId\":\"u\",\"userId\":\"v\","
                   "\"messageId\":\"generated-id\"" RECV "}");
}

/* ---- packed form */

Test(track, packed_ids_read_within_a_prefix_only)
{
    int rc = decode("{\"type\":\"track\",\"event\":\"Signed Up\",\"userId\":\"user-17\","
                    "\"anonymousId\":\"anon-4\"," T0 "}");
    cr_assert_eq(rc, 0, "%s", err);
    size_t n = trk_packed_size(&ev, &schema);
    char packed[256];
    cr_assert_leq(n, sizeof(packed));
    trk_pack(packed, &ev, &schema);
    /* 8 bytes of time, the kind, then each id's 4-byte length and bytes */
    size_t need = 9 + 4 + strlen("user-17") + 4 + strlen("anon-4");
    for (size_t len = 0; len <= n; len++) {
        trk_str uid = {0}, aid = {0};
        bool ok = trk_packed_ids_in(packed, len, &uid, &aid);
        cr_assert_eq(ok, len >= need, "prefix of %zu bytes", len);
        if (ok) {
            cr_assert(str_is(uid, "user-17"));
            cr_assert(str_is(aid, "anon-4"));
        }
    }
    /* a length that points past the bytes given is refused, however large */
    uint32_t huge = UINT32_MAX - 2;
    memcpy(packed + 9, &huge, 4);
    trk_str uid, aid;
    cr_assert_not(trk_packed_ids_in(packed, n, &uid, &aid));
    huge = 3;
    memcpy(packed + 9, &huge, 4);
    memcpy(packed + 9 + 4 + 3, &(uint32_t){UINT32_MAX}, 4);
    cr_assert_not(trk_packed_ids_in(packed, n, &uid, &aid));
}
