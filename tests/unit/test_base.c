/*
 * test_base.c - unit tests for src/base: event-time parsing and formatting, durations for
 * people, UTF-8 validation, the JSON writer and reader, arenas and growable buffers, and the
 * hashed writer.
 */
#include "base/base.h"
#include "base/json.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 2026-11-18T11:45:02.123Z */
#define T_SAMPLE INT64_C(1795002302123)

static int parse(const char *s, int64_t *out)
{
    return onr_time_parse(s, strlen(s), out);
}

static void expect_time(const char *s, int64_t want)
{
    int64_t got = -1;
    cr_assert_eq(parse(s, &got), 0, "\"%s\" was rejected", s);
    cr_assert_eq(got, want, "\"%s\": got %lld, want %lld", s, (long long)got, (long long)want);
}

static void expect_bad_time(const char *s)
{
    int64_t got = 12345;
    cr_assert_eq(parse(s, &got), ONR_E_PARSE, "\"%s\" was accepted", s);
    cr_assert_eq(got, 12345, "\"%s\": the output was written on failure", s);
}

/* ---- time */

Test(time, parses_utc_with_milliseconds)
{
    expect_time("2026-11-18T11:45:02.123Z", T_SAMPLE);
    expect_time("2026-11-18t11:45:02.123z", T_SAMPLE);
    expect_time("2026-11-18 11:45:02.123Z", T_SAMPLE);
}

Test(time, parses_the_epoch_and_the_last_accepted_instant)
{
    expect_time("1970-01-01T00:00:00Z", ONR_TIME_MIN_MS);
    expect_time("9999-12-31T23:59:59.999Z", ONR_TIME_MAX_MS);
}

Test(time, applies_positive_and_negative_offsets)
{
    expect_time("2026-11-18T12:45:02.123+01:00", T_SAMPLE);
    expect_time("2026-11-18T06:15:02.123-05:30", T_SAMPLE);
    expect_time("2026-11-18T12:45:02.123+0100", T_SAMPLE);
    /* an offset that crosses midnight moves the date */
    expect_time("2026-11-19T00:45:02.123+13:00", T_SAMPLE);
}

Test(time, reads_fractions_of_any_length_as_milliseconds)
{
    expect_time("2026-11-18T11:45:02Z", T_SAMPLE - 123);
    expect_time("2026-11-18T11:45:02.1Z", T_SAMPLE - 23);
    expect_time("2026-11-18T11:45:02.12Z", T_SAMPLE - 3);
    expect_time("2026-11-18T11:45:02.123456789Z", T_SAMPLE);
    expect_time("2026-11-18T11:45:02,123Z", T_SAMPLE);
}

Test(time, accepts_minutes_without_seconds)
{
    expect_time("2026-11-18T11:45Z", T_SAMPLE - 2123);
}

Test(time, accepts_leap_days_in_leap_years)
{
    expect_time("2024-02-29T00:00:00Z", INT64_C(1709164800000));
    expect_time("2000-02-29T00:00:00Z", INT64_C(951782400000));
}

Test(time, rejects_days_that_do_not_exist)
{
    expect_bad_time("2026-02-30T00:00:00Z");
    expect_bad_time("2026-04-31T00:00:00Z");
    expect_bad_time("2026-01-32T00:00:00Z");
    expect_bad_time("2026-01-00T00:00:00Z");
}

Test(time, rejects_february_29_outside_leap_years)
{
    expect_bad_time("2026-02-29T00:00:00Z");
    expect_bad_time("1900-02-29T00:00:00Z");
}

Test(time, rejects_months_out_of_range)
{
    expect_bad_time("2026-13-01T00:00:00Z");
    expect_bad_time("2026-00-01T00:00:00Z");
}

Test(time, rejects_hours_minutes_and_seconds_out_of_range)
{
    expect_bad_time("2026-11-18T24:00:00Z");
    expect_bad_time("2026-11-18T11:60:00Z");
    expect_bad_time("2026-11-18T11:45:61Z");
}

Test(time, rejects_a_date_time_without_a_zone)
{
    expect_bad_time("2026-11-18T11:45:02");
    expect_bad_time("2026-11-18T11:45:02.123");
}

Test(time, rejects_malformed_offsets_and_fractions)
{
    expect_bad_time("2026-11-18T11:45:02+01");
    expect_bad_time("2026-11-18T11:45:02+24:00");
    expect_bad_time("2026-11-18T11:45:02.Z");
    expect_bad_time("2026-11-18T11:45:02Zjunk");
    expect_bad_time("2026-11-18T11:45:02 Z");
}

Test(time, rejects_garbage)
{
    expect_bad_time("");
    expect_bad_time("yesterday");
    expect_bad_time("2026");
    expect_bad_time("2026-11");
    expect_bad_time("2026/11/18T11:45:02Z");
    expect_bad_time("2026-11-18X11:45:02Z");
    expect_bad_time("2026-1-18T11:45:02Z");
}

/* Every day from 1899 to 2101 and times across the day, in the common form
 * (YYYY-MM-DDTHH:MM:SS.sssZ, read by a fast path) and with a +00:00 offset (read by the
 * general one): the same instant, and what that form must refuse is refused. */
Test(time, the_common_form_reads_as_the_general_one)
{
    char a[40], b[40];
    static const int mlen[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int checked = 0;
    for (int y = 1899; y <= 2101; y++)
        for (int mo = 1; mo <= 12; mo++)
            for (int d = 1; d <= 31; d++) {
                int h = (y + d) % 24, mi = (mo * 7 + d) % 60, sec = (y + mo + d) % 61;
                int ms = (y * 31 + d * 7) % 1000;
                snprintf(a, sizeof a, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, sec,
                         ms);
                snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03d+00:00", y, mo, d, h, mi,
                         sec, ms);
                bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                bool real = d <= mlen[mo - 1] && !(mo == 2 && d == 29 && !leap);
                int64_t ta = -1, tb = -2;
                int ra = parse(a, &ta), rb = parse(b, &tb);
                cr_assert_eq(ra, real ? 0 : ONR_E_PARSE, "%s: %d", a, ra);
                cr_assert_eq(rb, ra, "%s: %d, %s: %d", a, ra, b, rb);
                if (real) {
                    cr_assert_eq(ta, tb, "%s: %lld, %s: %lld", a, (long long)ta, b, (long long)tb);
                    checked++;
                }
            }
    cr_assert_eq(checked, 203 * 365 + 49); /* and the 49 leap days of 1899..2101 */
    expect_bad_time("2026-11-18T24:00:00.000Z");
    expect_bad_time("2026-11-18T11:60:00.000Z");
    expect_bad_time("2026-11-18T11:45:61.000Z");
    expect_bad_time("2026-13-18T11:45:02.123Z");
    expect_bad_time("2026-00-18T11:45:02.123Z");
    expect_bad_time("2026-11-18T11:4a:02.123Z");
    expect_time("2026-11-18T11:45:60.123Z", T_SAMPLE + 57000); /* a leap second: :59 */
}

/* The common form's seconds are read on their own while the minute stays the last one read:
 * every second of two minutes, taken in turn, and what those seconds must refuse. */
Test(time, seconds_within_the_last_minute_read_as_the_general_form)
{
    char a[40], b[40];
    for (int sec = 0; sec <= 61; sec++)
        for (int k = 0; k < 6; k++) {
            int mi = k % 2 ? 45 : 46, ms = (sec * 37 + k * 111) % 1000;
            snprintf(a, sizeof a, "2026-11-18T11:%02d:%02d.%03dZ", mi, sec, ms);
            snprintf(b, sizeof b, "2026-11-18T11:%02d:%02d.%03d+00:00", mi, sec, ms);
            int64_t ta = -1, tb = -2;
            int ra = parse(a, &ta), rb = parse(b, &tb);
            cr_assert_eq(ra, sec <= 60 ? 0 : ONR_E_PARSE, "%s: %d", a, ra);
            cr_assert_eq(rb, ra, "%s: %d, %s: %d", a, ra, b, rb);
            if (ra == 0)
                cr_assert_eq(ta, tb, "%s: %lld, %s: %lld", a, (long long)ta, b, (long long)tb);
        }
    expect_time("2026-11-18T11:45:02.123Z", T_SAMPLE);
    expect_bad_time("2026-11-18T11:45:0a.000Z");
    expect_bad_time("2026-11-18T11:45:02.0-0Z");
    expect_bad_time("2026-11-18T11:45:02.000z0");
    expect_time("2026-11-18T11:45:60.999Z", T_SAMPLE + 57876);
}

Test(time, reads_only_the_given_length)
{
    int64_t got = 0;
    const char *s = "2026-11-18T11:45:02.123Zgarbage";
    cr_assert_eq(onr_time_parse(s, 24, &got), 0);
    cr_assert_eq(got, T_SAMPLE);
}

Test(time, formats_with_milliseconds_and_z)
{
    char out[32];
    onr_time_format(T_SAMPLE, out);
    cr_assert_str_eq(out, "2026-11-18T11:45:02.123Z");
    onr_time_format(0, out);
    cr_assert_str_eq(out, "1970-01-01T00:00:00.000Z");
    onr_time_format(ONR_TIME_MAX_MS, out);
    cr_assert_str_eq(out, "9999-12-31T23:59:59.999Z");
}

Test(time, format_then_parse_round_trips)
{
    static const int64_t samples[] = {
        0,
        1,
        999,
        T_SAMPLE,
        INT64_C(951782400000),  /* 2000-02-29 */
        INT64_C(1709164799999), /* 2024-02-28T23:59:59.999 */
        INT64_C(4102444800000), /* 2100-01-01 */
        ONR_TIME_MAX_MS,
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(samples); i++) {
        char out[32];
        int64_t back = -1;
        onr_time_format(samples[i], out);
        cr_assert_eq(strlen(out), 24, "%s", out);
        cr_assert_eq(parse(out, &back), 0, "%s", out);
        cr_assert_eq(back, samples[i], "%s: got %lld", out, (long long)back);
    }
}

Test(time, parse_then_format_round_trips)
{
    static const char *const samples[] = {
        "2026-11-18T11:45:02.123Z",
        "1999-12-31T23:59:59.999Z",
        "2024-02-29T12:00:00.000Z",
        "2026-01-01T00:00:00.001Z",
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(samples); i++) {
        int64_t t;
        char out[32];
        cr_assert_eq(parse(samples[i], &t), 0);
        onr_time_format(t, out);
        cr_assert_str_eq(out, samples[i]);
    }
}

/* ---- durations */

static void expect_duration(int64_t ms, const char *want)
{
    char out[32];
    onr_duration_format(ms, out, sizeof(out));
    cr_assert_str_eq(out, want, "%lld ms", (long long)ms);
}

Test(duration, uses_the_largest_whole_unit)
{
    expect_duration(2 * ONR_MINUTE_MS, "2m");
    expect_duration(ONR_HOUR_MS, "1h");
    expect_duration(3 * ONR_DAY_MS, "3d");
    expect_duration(45 * ONR_SECOND_MS, "45s");
}

Test(duration, shows_minutes_and_seconds)
{
    expect_duration(90 * ONR_SECOND_MS, "1m30s");
    expect_duration(7 * ONR_MINUTE_MS + 1000, "7m1s");
}

Test(duration, shows_milliseconds_below_a_second)
{
    expect_duration(250, "250ms");
    expect_duration(1, "1ms");
}

Test(duration, shows_zero_and_negative_durations)
{
    expect_duration(0, "0s");
    expect_duration(-2 * ONR_MINUTE_MS, "-2m");
    expect_duration(-250, "-250ms");
}

Test(duration, truncates_to_the_given_capacity)
{
    char out[3];
    onr_duration_format(3 * ONR_DAY_MS + 1000, out, sizeof(out));
    cr_assert_eq(strlen(out), 2);
}

/* ---- UTF-8 */

static void expect_utf8_bad(const char *s, size_t n, size_t want_at)
{
    size_t at = 9999;
    cr_assert_not(onr_utf8_valid(s, n, &at), "accepted %zu bytes", n);
    cr_assert_eq(at, want_at, "bad_at %zu, want %zu", at, want_at);
}

Test(utf8, accepts_ascii_and_every_sequence_length)
{
    const char *s = "plain ascii, caf\xc3\xa9, \xe2\x82\xac, \xf0\x9f\x98\x80, \xf4\x8f\xbf\xbf";
    size_t at = 9999;
    cr_assert(onr_utf8_valid(s, strlen(s), &at));
    cr_assert_eq(at, 9999, "bad_at written on success");
    cr_assert(onr_utf8_valid("", 0, NULL));
}

Test(utf8, accepts_nul_bytes_inside_the_length)
{
    cr_assert(onr_utf8_valid("a\0b", 3, NULL));
}

Test(utf8, rejects_overlong_encodings)
{
    expect_utf8_bad("\xc0\xaf", 2, 0);         /* '/' in two bytes */
    expect_utf8_bad("ab\xc1\xbf", 4, 2);       /* U+007F in two bytes */
    expect_utf8_bad("\xe0\x80\xaf", 3, 0);     /* '/' in three bytes */
    expect_utf8_bad("x\xe0\x9f\xbf", 4, 1);    /* U+07FF in three bytes */
    expect_utf8_bad("\xf0\x8f\xbf\xbf", 4, 0); /* U+FFFF in four bytes */
}

Test(utf8, rejects_surrogates)
{
    expect_utf8_bad("\xed\xa0\x80", 3, 0);              /* U+D800 */
    expect_utf8_bad("ok\xed\xbf\xbf", 5, 2);            /* U+DFFF */
    cr_assert(onr_utf8_valid("\xed\x9f\xbf", 3, NULL)); /* U+D7FF is fine */
}

Test(utf8, rejects_code_points_above_u10ffff)
{
    expect_utf8_bad("\xf4\x90\x80\x80", 4, 0);
    expect_utf8_bad("\xf8\x88\x80\x80\x80", 5, 0);
    expect_utf8_bad("\xff", 1, 0);
}

Test(utf8, rejects_truncated_sequences)
{
    expect_utf8_bad("abc\xe2\x82", 5, 3);
    expect_utf8_bad("\xf0\x9f\x98", 3, 0);
    expect_utf8_bad("\xc3", 1, 0);
    /* the length bounds the check: a full sequence cut by n is truncated */
    expect_utf8_bad("\xc3\xa9", 1, 0);
}

Test(utf8, rejects_stray_and_missing_continuation_bytes)
{
    expect_utf8_bad("a\x80", 2, 1);
    expect_utf8_bad("\xc3(", 2, 0);
    expect_utf8_bad("\xe2\x82(", 3, 0);
}

/* ---- the JSON writer */

static const char *written(onr_buf *b)
{
    return onr_buf_cstr(b);
}

Test(json_write, escapes_quotes_and_backslashes)
{
    onr_buf b = {0};
    jw_strz(&b, "say \"hi\" \\ bye");
    cr_assert_str_eq(written(&b), "\"say \\\"hi\\\" \\\\ bye\"");
    onr_buf_free(&b);
}

Test(json_write, escapes_control_characters)
{
    onr_buf b = {0};
    jw_str(&b, "a\nb\rc\td\x01\x1f", 9);
    cr_assert_str_eq(written(&b), "\"a\\nb\\rc\\td\\u0001\\u001f\"");
    onr_buf_clear(&b);
    jw_str(&b, "x\0y", 3);
    cr_assert_str_eq(written(&b), "\"x\\u0000y\"");
    onr_buf_free(&b);
}

Test(json_write, passes_utf8_and_printable_ascii_through)
{
    onr_buf b = {0};
    jw_strz(&b, "caf\xc3\xa9 / \x7f ok");
    cr_assert_str_eq(written(&b), "\"caf\xc3\xa9 / \x7f ok\"");
    onr_buf_clear(&b);
    jw_str(&b, "", 0);
    cr_assert_str_eq(written(&b), "\"\"");
    onr_buf_free(&b);
}

Test(json_write, writes_integers_without_a_fraction)
{
    onr_buf b = {0};
    jw_num(&b, 3);
    onr_buf_putc(&b, ' ');
    jw_num(&b, -42);
    onr_buf_putc(&b, ' ');
    jw_num(&b, 0);
    onr_buf_putc(&b, ' ');
    jw_num(&b, 1e15);
    cr_assert_str_eq(written(&b), "3 -42 0 1000000000000000");
    onr_buf_free(&b);
}

Test(json_write, writes_fractions_that_read_back_exactly)
{
    static const double samples[] = {0.5, 0.1, -2.25, 1.0 / 3.0, 123456.789, 1e-7};
    for (size_t i = 0; i < ONR_ARRAY_LEN(samples); i++) {
        onr_buf b = {0};
        jw_num(&b, samples[i]);
        const char *s = written(&b);
        cr_assert(strchr(s, '.') || strchr(s, 'e'), "%s has no fraction", s);
        cr_assert_eq(strtod(s, NULL), samples[i], "%s does not read back", s);
        onr_buf_free(&b);
    }
    onr_buf b = {0};
    jw_num(&b, 0.1);
    cr_assert_str_eq(written(&b), "0.1");
    onr_buf_free(&b);
}

Test(json_write, writes_non_finite_numbers_as_null)
{
    onr_buf b = {0};
    jw_num(&b, NAN);
    onr_buf_putc(&b, ',');
    jw_num(&b, INFINITY);
    cr_assert_str_eq(written(&b), "null,null");
    onr_buf_free(&b);
}

Test(json_write, writes_huge_numbers_as_valid_json)
{
    onr_buf b = {0};
    jw_num(&b, 1e300);
    const char *s = written(&b);
    cr_assert_eq(strtod(s, NULL), 1e300, "%s", s);
    cr_assert_null(strchr(s, 'n'), "%s", s); /* not nan/inf */
    onr_buf_free(&b);
}

Test(json_write, writes_keys_and_times)
{
    onr_buf b = {0};
    onr_buf_putc(&b, '{');
    jw_key(&b, "at");
    jw_time(&b, T_SAMPLE);
    onr_buf_putc(&b, '}');
    cr_assert_str_eq(written(&b), "{\"at\":\"2026-11-18T11:45:02.123Z\"}");
    onr_buf_free(&b);
}

Test(json_write, output_parses_back_to_the_same_string)
{
    const char raw[] = "q\"b\\s/n\nt\tc\x02 \xc3\xa9";
    onr_buf b = {0};
    jw_str(&b, raw, sizeof(raw) - 1);
    jdoc *d = jdoc_new(1024);
    jval root;
    char err[128];
    cr_assert_eq(jdoc_parse(d, b.data, b.len, &root, err, sizeof(err)), 0, "%s", err);
    size_t n;
    const char *s = jval_str(root, &n);
    cr_assert_eq(n, sizeof(raw) - 1);
    cr_assert_eq(memcmp(s, raw, n), 0);
    jdoc_free(d);
    onr_buf_free(&b);
}

/* ---- the JSON reader */

typedef struct doc_fixture {
    jdoc *d;
    jval root;
    char err[256];
} doc_fixture;

static int parse_json(doc_fixture *f, const char *s)
{
    f->err[0] = 0;
    return jdoc_parse(f->d, s, strlen(s), &f->root, f->err, sizeof(f->err));
}

Test(json_read, reads_object_members_by_key)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{\"name\":\"Signed Up\",\"n\":42,\"x\":1.5,\"ok\":true,"
                                "\"nil\":null,\"list\":[1],\"obj\":{\"k\":\"v\"}}"),
                 0, "%s", f.err);
    cr_assert_eq(jval_type(f.root), J_OBJECT);
    size_t n;
    const char *s = jval_str(jval_getz(f.root, "name"), &n);
    cr_assert_eq(n, 9);
    cr_assert_eq(memcmp(s, "Signed Up", 9), 0);
    cr_assert_eq(jval_type(jval_getz(f.root, "n")), J_NUMBER);
    cr_assert_eq(jval_number(jval_getz(f.root, "n")), 42);
    cr_assert_eq(jval_number(jval_getz(f.root, "x")), 1.5);
    cr_assert_eq(jval_type(jval_getz(f.root, "ok")), J_BOOL);
    cr_assert(jval_bool(jval_getz(f.root, "ok")));
    cr_assert_eq(jval_type(jval_getz(f.root, "nil")), J_NULL);
    cr_assert_eq(jval_type(jval_getz(f.root, "list")), J_ARRAY);
    jval obj = jval_getz(f.root, "obj");
    cr_assert_eq(jval_type(obj), J_OBJECT);
    s = jval_str(jval_get(obj, "kx", 1), &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(s[0], 'v');
    jdoc_free(f.d);
}

Test(json_read, missing_keys_and_wrong_types_read_as_none)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{\"a\":\"text\",\"b\":[1,2]}"), 0, "%s", f.err);
    jval missing = jval_getz(f.root, "zzz");
    cr_assert_eq(jval_type(missing), J_NONE);
    cr_assert_str_eq(jtype_name(J_NONE), "missing");
    cr_assert_eq(jval_type(jval_getz(missing, "deeper")), J_NONE);
    cr_assert_eq(jval_type(jval_getz(jval_getz(f.root, "b"), "k")), J_NONE);
    size_t n = 99;
    jval_str(jval_getz(f.root, "b"), &n);
    cr_assert_eq(n, 0);
    cr_assert_eq(jval_number(jval_getz(f.root, "a")), 0);
    cr_assert_not(jval_bool(jval_getz(f.root, "a")));
    jdoc_free(f.d);
}

Test(json_read, iterates_object_members_in_document_order)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{\"b\":1,\"a\":2,\"c\":3}"), 0, "%s", f.err);
    jiter it = jval_iter(f.root);
    jval v;
    const char *key;
    size_t keylen;
    const char *want[] = {"b", "a", "c"};
    int i = 0;
    while (jiter_next(&it, &v, &key, &keylen)) {
        cr_assert_lt(i, 3);
        cr_assert_eq(keylen, 1);
        cr_assert_eq(key[0], want[i][0]);
        cr_assert_eq(jval_number(v), i == 0 ? 1 : i == 1 ? 2 : 3);
        i++;
    }
    cr_assert_eq(i, 3);
    cr_assert_not(jiter_next(&it, &v, &key, &keylen), "iteration restarted after the end");
    jdoc_free(f.d);
}

Test(json_read, iterates_arrays_with_no_keys)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "[10, \"x\", null, [1]]"), 0, "%s", f.err);
    jiter it = jval_iter(f.root);
    jval v;
    const char *key = "unset";
    size_t keylen = 7;
    jtype want[] = {J_NUMBER, J_STRING, J_NULL, J_ARRAY};
    int i = 0;
    while (jiter_next(&it, &v, &key, &keylen)) {
        cr_assert_eq(jval_type(v), want[i]);
        cr_assert_null(key);
        cr_assert_eq(keylen, 0);
        i++;
    }
    cr_assert_eq(i, 4);
    jdoc_free(f.d);
}

Test(json_read, iterating_a_scalar_or_empty_container_yields_nothing)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    jval v;
    cr_assert_eq(parse_json(&f, "[]"), 0);
    jiter it = jval_iter(f.root);
    cr_assert_not(jiter_next(&it, &v, NULL, NULL));
    cr_assert_eq(parse_json(&f, "{}"), 0);
    it = jval_iter(f.root);
    cr_assert_not(jiter_next(&it, &v, NULL, NULL));
    cr_assert_eq(parse_json(&f, "7"), 0);
    it = jval_iter(f.root);
    cr_assert_not(jiter_next(&it, &v, NULL, NULL));
    jval none = {0};
    it = jval_iter(none);
    cr_assert_not(jiter_next(&it, &v, NULL, NULL));
    jdoc_free(f.d);
}

Test(json_read, rejects_trailing_garbage)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{\"a\":1} x"), ONR_E_PARSE);
    cr_assert_neq(f.err[0], 0, "no reason given");
    cr_assert_eq(parse_json(&f, "{\"a\":1}{}"), ONR_E_PARSE);
    cr_assert_eq(parse_json(&f, "{\"a\":1}  \n"), 0, "trailing whitespace is fine: %s", f.err);
    jdoc_free(f.d);
}

Test(json_read, rejects_malformed_documents)
{
    static const char *const bad[] = {
        "{",   "[1,]",           "{\"a\":}",  "{'a':1}", "{\"a\":1,}",
        "nul", "\"unterminated", "{\"a\" 1}", "[01]",    "\"bad \\x escape\"",
    };
    doc_fixture f = {.d = jdoc_new(4096)};
    for (size_t i = 0; i < ONR_ARRAY_LEN(bad); i++) {
        cr_assert_eq(parse_json(&f, bad[i]), ONR_E_PARSE, "accepted %s", bad[i]);
        cr_assert(strstr(f.err, "invalid JSON"), "%s", f.err);
    }
    jdoc_free(f.d);
}

Test(json_read, rejects_an_empty_document)
{
    /* a fresh jdoc: an empty request body is the first thing a server may see */
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, ""), ONR_E_PARSE);
    cr_assert_neq(f.err[0], 0, "no reason given");
    cr_assert_eq(parse_json(&f, "   "), ONR_E_PARSE);
    jdoc_free(f.d);
}

Test(json_read, enforces_the_size_limit)
{
    doc_fixture f = {.d = jdoc_new(16)};
    cr_assert_eq(parse_json(&f, "{\"k\":\"123456789\"}"), ONR_E_LIMIT); /* 17 bytes */
    cr_assert(strstr(f.err, "17"), "%s", f.err);
    cr_assert(strstr(f.err, "16"), "%s", f.err);
    cr_assert_eq(parse_json(&f, "{\"k\":\"12345678\"}"), 0, "%s", f.err); /* 16 bytes */
    jdoc_free(f.d);
}

Test(json_read, points_at_where_a_document_breaks)
{
    static const struct {
        const char *in;
        long at;
    } cases[] = {
        {"{\"a\":1,}", 7},
        {"[1 2]", 3},
        {"{\"a\" 1}", 5},
        {"[01]", 2},
        {"\"bad \\x escape\"", 6},
        {"{\"a\":tru}", 5},
        {"{\"a\":\"x", 7},
        {"", 0},
        {"{\"a\":1} x", 8},
        {"[\"\\u12G4\"]", 6},
        {"[\"a\x01\"]", 3},
        {"[\"a\xff\"]", 3},
        {"[1, 1e999]", 4},
        {"[18446744073709551616]", 1},
        {"{\"a\":[1,{\"b\":]}}", 13},
    };
    doc_fixture f = {.d = jdoc_new(4096)};
    for (size_t i = 0; i < ONR_ARRAY_LEN(cases); i++) {
        cr_assert_eq(parse_json(&f, cases[i].in), ONR_E_PARSE, "accepted %s", cases[i].in);
        cr_assert_eq(jdoc_error_offset(f.d), cases[i].at, "%s: at %ld, not %ld (%s)", cases[i].in,
                     jdoc_error_offset(f.d), cases[i].at, f.err);
    }
    cr_assert_eq(parse_json(&f, "[18446744073709551615, -9223372036854775808]"), 0, "%s", f.err);
    cr_assert_eq(jdoc_error_offset(f.d), -1, "a document that parsed has no error");
    jdoc_free(f.d);
}

/* Parses in into a buffer whose bytes past the document (JDOC_PADDING of them, cap - len
 * given as pad) are garbage a parser reading them as input would fail on. */
static int parse_padded(doc_fixture *f, char *buf, const char *in, size_t pad)
{
    size_t n = strlen(in);
    memcpy(buf, in, n);
    memset(buf + n, ']', JDOC_PADDING);
    f->err[0] = 0;
    return jdoc_parse_padded(f->d, buf, n, n + pad, &f->root, f->err, sizeof(f->err));
}

Test(json_read, parses_in_place_what_has_padding_and_a_copy_of_what_has_too_little)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    char buf[256];
    for (size_t pad = JDOC_PADDING - 1; pad <= JDOC_PADDING; pad++) {
        cr_assert_eq(parse_padded(&f, buf, "{\"a\":[1,\"x\"],\"b\":\"\\u00e9\"}", pad), 0, "%s",
                     f.err);
        memset(buf, ' ', 32); /* the values are the document's, not pointers into buf */
        size_t n;
        const char *s = jval_str(jval_getz(f.root, "b"), &n);
        cr_assert_eq(n, 2);
        cr_assert_eq(memcmp(s, "\xc3\xa9", 2), 0);
        cr_assert_eq(jval_type(jval_getz(f.root, "a")), J_ARRAY);
        /* errors point into buf as they do into the copy */
        cr_assert_eq(parse_padded(&f, buf, "{\"a\":[1,{\"b\":]}}", pad), ONR_E_PARSE);
        cr_assert_eq(jdoc_error_offset(f.d), 13, "pad %zu: %ld (%s)", pad, jdoc_error_offset(f.d),
                     f.err);
        cr_assert_eq(parse_padded(&f, buf, "[1, 2", pad), ONR_E_PARSE, "read the padding as input");
        cr_assert_eq(jdoc_error_offset(f.d), 5);
    }
    jdoc_free(f.d);
}

/* depth arrays nested in one another */
static void nested(onr_buf *b, int depth)
{
    onr_buf_clear(b);
    for (int i = 0; i < depth; i++)
        onr_buf_putc(b, '[');
    for (int i = 0; i < depth; i++)
        onr_buf_putc(b, ']');
}

Test(json_read, limits_the_nesting_depth)
{
    doc_fixture f = {.d = jdoc_new(1 << 20)};
    onr_buf b = {0};
    nested(&b, JDOC_MAX_DEPTH);
    cr_assert_eq(jdoc_parse(f.d, b.data, b.len, &f.root, f.err, sizeof(f.err)), 0, "%s", f.err);
    nested(&b, JDOC_MAX_DEPTH + 1);
    cr_assert_eq(jdoc_parse(f.d, b.data, b.len, &f.root, f.err, sizeof(f.err)), ONR_E_PARSE);
    cr_assert(strstr(f.err, "deep"), "%s", f.err);
    cr_assert_eq(jdoc_error_offset(f.d), JDOC_MAX_DEPTH, "the bracket one too deep");

    cr_assert_eq(jdoc_set_max_depth(f.d, 0), ONR_E_INVALID);
    cr_assert_eq(jdoc_set_max_depth(f.d, JDOC_MAX_DEPTH + 1), ONR_E_INVALID);
    cr_assert_eq(jdoc_set_max_depth(f.d, 10), 0);
    nested(&b, 10);
    cr_assert_eq(jdoc_parse(f.d, b.data, b.len, &f.root, f.err, sizeof(f.err)), 0, "%s", f.err);
    /* the parser grows for a larger document and keeps the depth */
    onr_buf_clear(&b);
    onr_buf_puts(&b, "[[[[[[[[[[[\"");
    for (int i = 0; i < 100000; i++)
        onr_buf_putc(&b, 'x');
    onr_buf_puts(&b, "\"]]]]]]]]]]]");
    cr_assert_eq(jdoc_parse(f.d, b.data, b.len, &f.root, f.err, sizeof(f.err)), ONR_E_PARSE);
    cr_assert_eq(jdoc_error_offset(f.d), 10);
    onr_buf_free(&b);
    jdoc_free(f.d);
}

Test(json_read, reparsing_replaces_the_document)
{
    doc_fixture f = {.d = jdoc_new(1 << 20)};
    cr_assert_eq(parse_json(&f, "{\"v\":1}"), 0);
    /* a document larger than the first scratch buffer */
    onr_buf big = {0};
    onr_buf_puts(&big, "{\"pad\":\"");
    for (int i = 0; i < 10000; i++)
        onr_buf_putc(&big, 'x');
    onr_buf_puts(&big, "\",\"v\":2}");
    cr_assert_eq(jdoc_parse(f.d, big.data, big.len, &f.root, f.err, sizeof(f.err)), 0, "%s", f.err);
    cr_assert_eq(jval_number(jval_getz(f.root, "v")), 2);
    size_t n;
    jval_str(jval_getz(f.root, "pad"), &n);
    cr_assert_eq(n, 10000);
    cr_assert_eq(parse_json(&f, "{\"v\":3}"), 0);
    cr_assert_eq(jval_number(jval_getz(f.root, "v")), 3);
    onr_buf_free(&big);
    jdoc_free(f.d);
}

Test(json_read, writes_values_back_minified)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{ \"a\" : [ 1 , 2 ] ,\n \"b\" : { \"c\" : \"d e\" } }"), 0);
    onr_buf b = {0};
    jval_write(jval_getz(f.root, "b"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "{\"c\":\"d e\"}");
    onr_buf_clear(&b);
    jval_write(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "{\"a\":[1,2],\"b\":{\"c\":\"d e\"}}");
    onr_buf_clear(&b);
    jval_write(jval_getz(f.root, "missing"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "null");
    onr_buf_free(&b);
    jdoc_free(f.d);
}

Test(json_read, writes_every_kind_of_value)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "[-9223372036854775808, 18446744073709551615, 0, -7, 1.5, "
                                "1e300, 0.1, -2.5e-8, true, false, null, [], {}, [[{}]], "
                                "\"q\\\"b\\\\s\\/\\n\\t\\u0001\\u00e9\u00e9\", "
                                "{\"k\\\"\" : {\"\" : [ 1 ]}}]"),
                 0);
    onr_buf b = {0};
    jval_write(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b),
                     "[-9223372036854775808,18446744073709551615,0,-7,1.5,1e+300,0.1,-2.5e-08,true,"
                     "false,null,[],{},[[{}]],\"q\\\"b\\\\s/\\n\\t\\u0001\u00e9\u00e9\","
                     "{\"k\\\"\":{\"\":[1]}}]");
    /* what it writes parses back to itself */
    onr_buf again = {0};
    onr_buf_put(&again, b.data, b.len);
    cr_assert_eq(parse_json(&f, onr_buf_cstr(&again)), 0);
    onr_buf_clear(&b);
    jval_write(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), onr_buf_cstr(&again));
    onr_buf_free(&again);
    onr_buf_free(&b);
    jdoc_free(f.d);
}

Test(json_read, writes_short_escapes_and_nesting_past_sixteen_levels)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    onr_buf in = {0}, want = {0}, b = {0};
    onr_buf_puts(&in, "{ \"s\" : \"\\b\\f\\r\\u001f\\u007f\" , \"deep\" : ");
    onr_buf_puts(&want, "{\"s\":\"\\b\\f\\r\\u001f\x7f\",\"deep\":");
    for (int i = 0; i < 40; i++) { /* the builder recurses past 16 levels */
        onr_buf_puts(&in, i % 2 ? "[ " : "{ \"k\" : ");
        onr_buf_puts(&want, i % 2 ? "[" : "{\"k\":");
    }
    onr_buf_puts(&in, "-1");
    onr_buf_puts(&want, "-1");
    for (int i = 39; i >= 0; i--) {
        onr_buf_puts(&in, i % 2 ? " ]" : " }");
        onr_buf_putc(&want, i % 2 ? ']' : '}');
    }
    onr_buf_puts(&in, " }");
    onr_buf_putc(&want, '}');
    cr_assert_eq(parse_json(&f, onr_buf_cstr(&in)), 0, "%s", f.err);
    jval_write(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), onr_buf_cstr(&want));
    onr_buf_free(&in);
    onr_buf_free(&want);
    onr_buf_free(&b);
    jdoc_free(f.d);
}

/* Writes every member of obj with jval_write_member, as an object. */
static void write_members(jval obj, onr_buf *b)
{
    jiter it = jval_iter(obj);
    jval v;
    const char *k;
    size_t kn;
    onr_buf_putc(b, '{');
    for (bool first = true; jiter_next(&it, &v, &k, &kn); first = false) {
        if (!first)
            onr_buf_putc(b, ',');
        jval_write_member(v, k, kn, b);
    }
    onr_buf_putc(b, '}');
}

Test(json_read, keeps_the_text_as_sent_less_whitespace_when_asked)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    jdoc_keep_text(f.d, true);
    const char *spaced = " { \"a\" : [ 1E2 , -0.50 , true ] ,\n \"b\\u0041\" :\t{ \"c\" : "
                         "\"d \\/ { e\\\"\" , \"n\" : null } , \"s\":\"\\u00e9\" } ";
    cr_assert_eq(parse_json(&f, spaced), 0, "%s", f.err);
    onr_buf b = {0};
    jval_write(f.root, &b);
    const char *want = "{\"a\":[1E2,-0.50,true],\"b\\u0041\":{\"c\":\"d \\/ { e\\\"\","
                       "\"n\":null},\"s\":\"\\u00e9\"}";
    cr_assert_str_eq(onr_buf_cstr(&b), want);
    onr_buf_clear(&b);
    write_members(f.root, &b); /* keys as sent too */
    cr_assert_str_eq(onr_buf_cstr(&b), want);
    onr_buf_clear(&b);
    jval_write(jval_getz(f.root, "bA"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "{\"c\":\"d \\/ { e\\\"\",\"n\":null}");
    onr_buf_clear(&b);
    jval_write(jval_getz(f.root, "s"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "\"\\u00e9\"");
    onr_buf_clear(&b);
    jiter it = jval_iter(jval_getz(f.root, "a"));
    jval v;
    for (int i = 0; jiter_next(&it, &v, NULL, NULL); i++)
        jval_write(v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "1E2-0.50true");

    /* compact text is copied as it is, out of order too; the next parse is written, not
     * the one before (a shorter one here, and a scalar with whitespace round it) */
    cr_assert_eq(parse_json(&f, "{\"x\":{\"y\":[{},[]]},\"z\":\"\\t\"}"), 0, "%s", f.err);
    onr_buf_clear(&b);
    jval_write(jval_getz(f.root, "z"), &b);
    jval_write(jval_getz(f.root, "x"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "\"\\t\"{\"y\":[{},[]]}");
    cr_assert_eq(parse_json(&f, "  12.0e-1 \n"), 0, "%s", f.err);
    onr_buf_clear(&b);
    jval_write(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "12.0e-1");

    /* off again, from the next parse: formatted from the parsed values */
    jdoc_keep_text(f.d, false);
    cr_assert_eq(parse_json(&f, spaced), 0, "%s", f.err);
    onr_buf_clear(&b);
    write_members(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "{\"a\":[100.0,-0.5,true],\"bA\":{\"c\":\"d / { e\\\"\","
                                       "\"n\":null},\"s\":\"\u00e9\"}");
    onr_buf_free(&b);
    jdoc_free(f.d);
}

Test(json_read, keeps_the_text_of_a_document_parsed_in_place)
{
    jdoc *d = jdoc_new(1 << 16);
    jdoc_keep_text(d, true);
    onr_buf in = {0}, b = {0};
    /* deep, long, with members of every kind */
    onr_buf_puts(&in, "{\"deep\":");
    for (int i = 0; i < 300; i++)
        onr_buf_puts(&in, i % 2 ? "[" : "{\"k\":");
    onr_buf_puts(&in, "\"\\ud83d\\ude00\"");
    for (int i = 299; i >= 0; i--)
        onr_buf_putc(&in, i % 2 ? ']' : '}');
    onr_buf_puts(&in, ",\"list\":[");
    for (int i = 0; i < 2000; i++)
        onr_buf_puts(&in, i ? ",-1.25e+3" : "-1.25e+3");
    onr_buf_puts(&in, "],\"last\":false}");
    size_t len = in.len;
    onr_buf_reserve(&in, JDOC_PADDING);
    memset(in.data + len, 'x', JDOC_PADDING);
    jval root;
    char err[256];
    cr_assert_eq(jdoc_parse_padded(d, in.data, len, len + JDOC_PADDING, &root, err, sizeof(err)), 0,
                 "%s", err);
    jval_write(root, &b);
    cr_assert_eq(b.len, len);
    cr_assert_eq(memcmp(b.data, in.data, len), 0);
    onr_buf_clear(&b);
    jval_write(jval_getz(root, "last"), &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "false");
    onr_buf_free(&in);
    onr_buf_free(&b);
    jdoc_free(d);
}

Test(json_read, writes_a_member_with_its_key_escaped_without_the_text)
{
    doc_fixture f = {.d = jdoc_new(4096)};
    cr_assert_eq(parse_json(&f, "{\"k\\u0022\":1.50,\"n\":null}"), 0, "%s", f.err);
    onr_buf b = {0};
    write_members(f.root, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "{\"k\\\"\":1.5,\"n\":null}");
    onr_buf_free(&b);
    jdoc_free(f.d);
}

/* ---- arena */

Test(arena, hands_out_zeroed_8_byte_aligned_memory)
{
    onr_arena a;
    onr_arena_init(&a, 128);
    for (size_t n = 1; n < 40; n++) {
        unsigned char *p = onr_arena_alloc(&a, n);
        cr_assert_eq((uintptr_t)p % 8, 0, "size %zu", n);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(p[i], 0);
        memset(p, 0xab, n);
    }
    onr_arena_free(&a);
}

Test(arena, counts_bytes_handed_out_rounded_to_8)
{
    onr_arena a;
    onr_arena_init(&a, 0);
    cr_assert_eq(a.chunk_size, 64 * 1024, "0 picks the default chunk size");
    onr_arena_alloc(&a, 3);
    onr_arena_alloc(&a, 8);
    onr_arena_alloc(&a, 9);
    cr_assert_eq(a.total, 8 + 8 + 16);
    onr_arena_free(&a);
    cr_assert_eq(a.total, 0);
    cr_assert_null(a.head);
}

Test(arena, earlier_allocations_survive_new_chunks)
{
    onr_arena a;
    onr_arena_init(&a, 64);
    char *first = onr_arena_strndup(&a, "keep me", 7);
    char *ptrs[200];
    for (int i = 0; i < 200; i++) {
        ptrs[i] = onr_arena_alloc(&a, 24);
        memset(ptrs[i], i, 24);
    }
    char *big = onr_arena_alloc(&a, 1000); /* larger than a chunk */
    memset(big, 0x5a, 1000);
    cr_assert_str_eq(first, "keep me");
    for (int i = 0; i < 200; i++)
        for (int k = 0; k < 24; k++)
            cr_assert_eq((unsigned char)ptrs[i][k], (unsigned char)i);
    onr_arena_free(&a);
}

Test(arena, strndup_copies_and_terminates)
{
    onr_arena a;
    onr_arena_init(&a, 64);
    char *s = onr_arena_strndup(&a, "abcdef", 3);
    cr_assert_str_eq(s, "abc");
    char *e = onr_arena_strndup(&a, "", 0);
    cr_assert_str_eq(e, "");
    onr_arena_free(&a);
}

/* ---- buf */

Test(buf, grows_and_keeps_its_contents)
{
    onr_buf b = {0};
    for (int i = 0; i < 10000; i++)
        onr_buf_putc(&b, (char)('a' + i % 26));
    cr_assert_eq(b.len, 10000);
    cr_assert_geq(b.cap, b.len);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(b.data[i], 'a' + i % 26);
    onr_buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len + b.cap, 0);
}

Test(buf, printf_handles_output_longer_than_the_free_space)
{
    onr_buf b = {0};
    onr_buf_puts(&b, "head:");
    char word[1001];
    memset(word, 'w', 1000);
    word[1000] = 0;
    onr_buf_printf(&b, "%s|%d", word, 12345);
    cr_assert_eq(b.len, 5 + 1000 + 6);
    cr_assert_eq(memcmp(b.data, "head:", 5), 0);
    cr_assert_eq(memcmp(b.data + 1005, "|12345", 6), 0);
    onr_buf_free(&b);
}

Test(buf, cstr_terminates_without_counting_the_nul)
{
    onr_buf b = {0};
    onr_buf_put(&b, "abc", 3);
    const char *s = onr_buf_cstr(&b);
    cr_assert_str_eq(s, "abc");
    cr_assert_eq(b.len, 3);
    onr_buf_puts(&b, "de");
    cr_assert_str_eq(onr_buf_cstr(&b), "abcde");
    onr_buf_clear(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(onr_buf_cstr(&b), "");
    onr_buf_free(&b);
    cr_assert_str_eq(onr_buf_cstr(&b), "");
    onr_buf_free(&b);
}

Test(buf, reserve_guarantees_room_for_the_extra_bytes)
{
    onr_buf b = {0};
    onr_buf_put(&b, "x", 1);
    onr_buf_reserve(&b, 5000);
    cr_assert_gt(b.cap - b.len, 5000);
    char *before = b.data;
    for (int i = 0; i < 5000; i++)
        onr_buf_putc(&b, 'y');
    cr_assert_eq(b.data, before, "reserved space was not enough: the buffer moved");
    onr_buf_free(&b);
}

/* ---- hashing */

Test(hash, is_deterministic_and_depends_on_bytes_and_seed)
{
    uint64_t a = onr_hash64("user-1", 6, 1);
    cr_assert_eq(a, onr_hash64("user-1", 6, 1));
    cr_assert_neq(a, onr_hash64("user-2", 6, 1));
    cr_assert_neq(a, onr_hash64("user-1", 6, 2));
    cr_assert_neq(a, onr_hash64("user-1", 5, 1));
}

/* Tables come zeroed and page-aligned, the large ones 2 MiB-aligned for huge pages, and are
 * writable from end to end. */
static void check_table(size_t n, size_t align)
{
    unsigned char *t = onr_calloc_table(n);
    cr_assert_not_null(t);
    cr_assert_eq((uintptr_t)t % align, 0, "%zu bytes: not aligned to %zu", n, align);
    for (size_t i = 0; i < n; i += 4093)
        cr_assert_eq(t[i], 0, "%zu bytes: byte %zu is not zero", n, i);
    cr_assert_eq(t[n - 1], 0);
    memset(t, 0xa5, n);
    cr_assert_eq(t[n - 1], 0xa5);
    onr_free_table(t, n);
}

Test(alloc, tables_small_and_huge)
{
    check_table(1, 4096);
    check_table(4096 * 3 + 17, 4096);
    check_table(ONR_TABLE_HUGE - 1, 4096);
    check_table(ONR_TABLE_HUGE, (size_t)2 << 20);
    check_table(ONR_TABLE_HUGE * 3 + 123, (size_t)2 << 20);
    onr_free_table(NULL, ONR_TABLE_HUGE);
}

/* ---- the hashed writer */

/* Puts of every size, small ones filling the buffer and ones larger than it, write the bytes
 * in order and hash them as one hash of the whole would. */
Test(hashed_writer, writes_and_hashes_every_byte_in_order)
{
    size_t total = (5u << 20) + 12345;
    unsigned char *want = malloc(total);
    for (size_t i = 0; i < total; i++)
        want[i] = (unsigned char)(i * 2654435761u >> 13);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    onr_hashed_writer w;
    onr_hw_init(&w, f, 42);
    size_t at = 0, sizes[] = {1, 7, 300, 65536, (3u << 20) / 2, 2, (1u << 20) + 1};
    for (size_t k = 0; at < total; k++) {
        size_t n = ONR_MIN(sizes[k % ONR_ARRAY_LEN(sizes)], total - at);
        onr_hw_put(&w, want + at, n);
        at += n;
    }
    uint64_t digest = 0;
    cr_assert_eq(onr_hw_finish(&w, &digest), 0);
    cr_assert_eq(digest, onr_hash64(want, total, 42));
    cr_assert_eq(ftell(f), (long)total);
    rewind(f);
    unsigned char *got = malloc(total);
    cr_assert_eq(fread(got, 1, total, f), total);
    cr_assert(memcmp(got, want, total) == 0);
    fclose(f);
    free(got);
    free(want);
}

/* A write that fails is the result, and nothing after it is written. */
Test(hashed_writer, reports_a_failed_write)
{
    FILE *f = fopen("/dev/full", "wb");
    cr_assert_not_null(f);
    setvbuf(f, NULL, _IONBF, 0);
    onr_hashed_writer w;
    onr_hw_init(&w, f, 1);
    char block[4096] = {0};
    for (int i = 0; i < 300; i++)
        onr_hw_put(&w, block, sizeof(block));
    cr_assert_eq(onr_hw_finish(&w, NULL), -ENOSPC);
    fclose(f);
}

/* Each megabyte goes to the disk as it is written: bytes the stream held before the writer
 * began (a header) come first, and a stream with no file under it (memory) takes the same
 * bytes; a full disk met by that flush is the result. */
Test(hashed_writer, writes_after_a_header_and_to_memory_alike)
{
    size_t total = (3u << 20) + 777;
    unsigned char *body = malloc(total);
    for (size_t i = 0; i < total; i++)
        body[i] = (unsigned char)(i * 40503u >> 7);
    char *mem = NULL;
    size_t memlen = 0;
    FILE *files[2] = {tmpfile(), open_memstream(&mem, &memlen)};
    for (int k = 0; k < 2; k++) {
        FILE *f = files[k];
        cr_assert_not_null(f);
        cr_assert_eq(fwrite("HEADER", 1, 6, f), 6u);
        onr_hashed_writer w;
        onr_hw_init(&w, f, 7);
        for (size_t at = 0; at < total; at += 100000)
            onr_hw_put(&w, body + at, ONR_MIN((size_t)100000, total - at));
        uint64_t digest = 0;
        cr_assert_eq(onr_hw_finish(&w, &digest), 0);
        cr_assert_eq(digest, onr_hash64(body, total, 7));
        cr_assert_eq(fflush(f), 0);
    }
    unsigned char *got = malloc(total + 6);
    rewind(files[0]);
    cr_assert_eq(fread(got, 1, total + 6, files[0]), total + 6);
    cr_assert(memcmp(got, "HEADER", 6) == 0 && memcmp(got + 6, body, total) == 0);
    cr_assert_eq(memlen, total + 6);
    cr_assert(memcmp(mem, "HEADER", 6) == 0 && memcmp(mem + 6, body, total) == 0);
    fclose(files[0]);
    fclose(files[1]);
    free(mem);
    free(got);

    FILE *full = fopen("/dev/full", "wb"); /* 100 bytes fit the stream's buffer: the flush fails */
    cr_assert_not_null(full);
    onr_hashed_writer w;
    onr_hw_init(&w, full, 1);
    onr_hw_put(&w, body, 100);
    cr_assert_eq(onr_hw_finish(&w, NULL), -ENOSPC);
    fclose(full);
    free(body);
}
