/*
 * test_check.c - unit tests for the checker (src/rules/check.c) through rule_compile: every
 * semantic error with its line:col and hint, and what a successful compile plans: matchers,
 * the profile layout (only what the rules read), window capacities, the path length and
 * the schema of properties and traits.
 */
#include "rules/rules.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static rule_set *RS;
static onr_buf ERR;
static int NERR;

static int compile(const char *src)
{
    rule_free(RS);
    RS = NULL;
    onr_buf_clear(&ERR);
    NERR = rule_compile("t.rules", src, strlen(src), &RS, &ERR);
    return NERR;
}

static const char *errors(void)
{
    return onr_buf_cstr(&ERR);
}

static void compile_ok(const char *src)
{
    cr_assert_eq(compile(src), 0, "%s", errors());
    cr_assert_not_null(RS);
}

/* Exactly one error, whose first line is want. */
static void expect_error(const char *src, const char *want)
{
    int n = compile(src);
    cr_assert_eq(n, 1, "want one error, got %d:\n%s", n, errors());
    cr_assert_null(RS, "a failed compile returned a rule set");
    char line[512];
    const char *e = errors();
    const char *nl = strchr(e, '\n');
    size_t len = nl ? (size_t)(nl - e) : strlen(e);
    cr_assert_lt(len, sizeof(line));
    memcpy(line, e, len);
    line[len] = 0;
    cr_assert_str_eq(line, want);
}

static void cleanup(void)
{
    rule_free(RS);
    RS = NULL;
    onr_buf_free(&ERR);
}

TestSuite(check, .fini = cleanup);

static int matcher_of(const char *name)
{
    const int *ids;
    int n = rule_lookup_name(RS, name, strlen(name), &ids);
    cr_assert_geq(n, 1, "no matcher names \"%s\"", name);
    for (int i = 0; i < n; i++)
        if (!RS->labels[ids[i]] && RS->matchers[ids[i]].nnames == 1)
            return ids[i];
    cr_assert_fail("no plain matcher for \"%s\"", name);
    return -1;
}

static int prop_id(const char *path)
{
    for (uint32_t i = 0; i < RS->schema.nprops; i++)
        if (strcmp(RS->schema.props[i], path) == 0)
            return (int)i;
    return -1;
}

/* ---- errors: names */

Test(check, unknown_function_with_a_suggestion)
{
    expect_error("trigger t {\n    on \"A\"\n    when cout(\"A\") > 1\n}\n",
                 "t.rules:3:10: error: unknown function \"cout\" (did you mean \"count\"?)");
}

Test(check, unknown_function_without_a_close_match)
{
    expect_error("trigger t { on \"A\" when frobnicate(\"A\") }",
                 "t.rules:1:25: error: unknown function \"frobnicate\": the functions are count, "
                 "first, last, since, seq and in_segment");
}

Test(check, unknown_segment_in_a_trigger)
{
    expect_error("segment explorers { when idle > 1m }\n"
                 "trigger t { on enter explorrs }\n",
                 "t.rules:2:22: error: unknown segment \"explorrs\" (did you mean \"explorers\"?)");
}

Test(check, unknown_segment_in_in_segment)
{
    expect_error("segment a { when idle > 1m }\n"
                 "trigger t { on \"A\" when in_segment(nothing_like_it) }\n",
                 "t.rules:2:36: error: unknown segment \"nothing_like_it\"");
}

Test(check, unknown_label_with_a_suggestion)
{
    expect_error("label SIGNUP = \"Signed Up\"\n"
                 "trigger t { on SINGUP }\n",
                 "t.rules:2:16: error: unknown label \"SINGUP\" (did you mean \"SIGNUP\"?)");
}

Test(check, unknown_label_without_a_suggestion)
{
    expect_error("trigger t {\n  on \"A\"\n  when count(NOWHERE_LABEL) > 0\n}",
                 "t.rules:3:14: error: unknown label \"NOWHERE_LABEL\": declare it with `label "
                 "NOWHERE_LABEL = \"Event Name\"`, or write an event name in quotes");
}

Test(check, unknown_message_kind_in_a_label)
{
    expect_error("label L = pages",
                 "t.rules:1:11: error: unknown message kind \"pages\" (did you mean \"page\"?)");
}

Test(check, unknown_property_namespace)
{
    expect_error("trigger t { on \"A\" where prop.plan == \"pro\" }",
                 "t.rules:1:26: error: unknown property namespace \"prop\" (did you mean "
                 "\"props\"?)");
}

Test(check, unknown_session_field)
{
    expect_error("segment s { when session.duratoin > 1m }",
                 "t.rules:1:18: error: unknown session field \"duratoin\" (did you mean "
                 "\"duration\"?)");
}

Test(check, unknown_name_with_a_suggestion)
{
    expect_error("segment s { when idel > 1m }",
                 "t.rules:1:18: error: unknown name \"idel\" (did you mean \"idle\"?)");
}

Test(check, unknown_destination_with_and_without_a_suggestion)
{
    expect_error("destination slack { url = \"https://x\" }\n"
                 "trigger t {\n  on \"A\"\n  do webhook slak\n}\n",
                 "t.rules:4:14: error: unknown destination \"slak\" (did you mean \"slack\"?)");
    expect_error("trigger t { on \"A\" do webhook crm }",
                 "t.rules:1:31: error: unknown destination \"crm\": declare it with `destination "
                 "crm { url = \"https://...\" }`");
}

Test(check, a_label_used_as_a_value)
{
    expect_error("label L = \"A\"\nsegment s { when L > 1 }",
                 "t.rules:2:18: error: \"L\" is an event label; use it inside count(), first(), "
                 "last() or since()");
}

Test(check, a_segment_used_as_a_value)
{
    expect_error("segment a { when idle > 1m }\nsegment b { when a }",
                 "t.rules:2:18: error: \"a\" is a segment; write in_segment(a)");
}

/* ---- errors: types */

Test(check, duration_compared_with_a_number)
{
    expect_error("trigger t {\n  on \"A\"\n  when time_to_first_action < 120\n}",
                 "t.rules:3:8: error: type mismatch: cannot compare duration with number using "
                 "\"<\" (write a duration with its unit: 120s, 2m)");
}

Test(check, time_compared_with_a_duration)
{
    expect_error("segment s { when first(\"A\") > 5m }",
                 "t.rules:1:18: error: type mismatch: cannot compare time with duration using "
                 "\">\" (a time minus a time is a duration: first(\"A\") - start)");
}

Test(check, arithmetic_on_incompatible_types)
{
    expect_error("segment s { when idle + 1 > 2m }",
                 "t.rules:1:18: error: type mismatch: cannot apply \"+\" to duration and number "
                 "(write a duration with its unit: 120s, 2m)");
}

Test(check, property_compared_with_a_duration)
{
    expect_error("trigger t { on \"A\" where props.wait > 5m }",
                 "t.rules:1:26: error: type mismatch: cannot compare property with duration "
                 "using \">\"");
}

Test(check, list_of_the_wrong_type)
{
    expect_error("segment s { when step in [\"a\", \"b\"] }",
                 "t.rules:1:18: error: cannot test a number against a list of strings");
}

Test(check, list_mixing_types)
{
    expect_error("trigger t { on \"A\" where props.x in [1, \"b\"] }",
                 "t.rules:1:41: error: list mixes number and string");
}

Test(check, condition_that_is_not_boolean)
{
    expect_error("segment s { when idle }",
                 "t.rules:1:18: error: a segment's condition must be true or false; this is a "
                 "duration");
}

Test(check, and_with_a_non_boolean)
{
    expect_error("segment s { when completed and step }",
                 "t.rules:1:32: error: \"and\" needs true/false on both sides; this is a number");
}

Test(check, within_on_a_function_that_takes_none)
{
    expect_error("segment s { when since(\"A\", within: 5m) < 1m }",
                 "t.rules:1:18: error: \"within\" applies to count() and seq() only");
}

Test(check, path_list_too_long)
{
    expect_error(
        "trigger t { on \"Feature Used\" when path ends [\"a\", \"b\", \"c\", \"d\", \"e\", "
        "\"f\", \"g\", \"h\", \"i\"] }",
        "t.rules:1:46: error: the path keeps the last 8 features; this list has 9");
}

Test(check, windowed_count_compared_beyond_its_capacity)
{
    expect_error("segment s { when count(\"A\", within: 1h) >= 300 }",
                 "t.rules:1:44: error: a windowed count is exact up to 255 events; this compares "
                 "with 300");
}

Test(check, windowed_count_compared_with_a_number_past_int)
{
    /* the capacity is worked out only for a constant within range */
    expect_error(
        "segment s { when 25644444444444444444444444444444444 < count(\"A\", within: 1m) }",
        "t.rules:1:18: error: a windowed count is exact up to 255 events; this compares "
        "with 2.56444e+34");
}

/* ---- errors: declarations */

Test(check, duplicate_trigger)
{
    expect_error("trigger t { on \"A\" }\n\ntrigger t { on \"B\" }\n",
                 "t.rules:3:9: error: trigger \"t\" is already declared as a trigger at line 1");
}

Test(check, label_and_segment_share_a_namespace)
{
    expect_error("label dup = \"A\"\nsegment dup { when idle > 1m }",
                 "t.rules:2:9: error: segment \"dup\" is already declared as a label at line 1");
}

Test(check, duplicate_destination_setting)
{
    expect_error("destination d {\n  url = \"a\"\n  url = \"b\"\n}",
                 "t.rules:3:9: error: setting \"url\" is given twice in destination \"d\"");
}

/* ---- errors: what a condition can see */

Test(check, props_in_an_unanchored_segment_clause)
{
    expect_error("segment s {\n  enter when props.plan == \"pro\"\n}",
                 "t.rules:2:14: error: props.plan is a property of an event, but this condition "
                 "is not evaluated at an event: anchor it (\"enter on \\\"Event\\\" when ...\")");
}

Test(check, props_in_a_live_segment_condition)
{
    cr_assert_eq(compile("segment s { when props.plan == \"pro\" }"), 1, "%s", errors());
    cr_assert(strstr(errors(), "props.plan is a property of an event"), "%s", errors());
}

Test(check, props_in_an_anchored_segment_clause_are_fine)
{
    compile_ok("segment s { enter on \"Upgraded\" when props.plan == \"pro\" }");
}

Test(check, props_in_a_timer_trigger_condition)
{
    cr_assert_eq(compile("trigger t { on idle 5m when props.plan == \"pro\" }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:29: error: props.plan is a property of an event"), "%s",
              errors());
}

Test(check, profile_function_in_a_label_where)
{
    expect_error("label L = \"A\" where count(\"A\") > 1",
                 "t.rules:1:21: error: count() reads the user's history, but this condition sees "
                 "only the event (label and `where` conditions)");
}

Test(check, profile_builtin_in_a_trigger_where)
{
    expect_error("trigger t { on \"A\" where idle > 5m }",
                 "t.rules:1:26: error: \"idle\" reads the user's profile, but this condition sees "
                 "only the event (label and `where` conditions)");
}

Test(check, in_segment_in_a_label_where)
{
    expect_error("segment s { when idle > 1m }\nlabel L = \"A\" where in_segment(s)",
                 "t.rules:2:21: error: in_segment() reads the user's profile, but this condition "
                 "sees only the event");
}

Test(check, traits_in_a_where)
{
    expect_error("trigger t { on \"A\" where trait.plan == \"pro\" }",
                 "t.rules:1:26: error: traits belong to the user's profile, but this condition "
                 "sees only the event");
}

Test(check, in_segment_of_a_later_segment)
{
    expect_error("segment a {\n  when in_segment(b)\n}\nsegment b { when idle > 1m }\n",
                 "t.rules:2:19: error: segment \"b\" must be declared before segment \"a\" to be "
                 "used in it");
}

Test(check, in_segment_of_itself)
{
    expect_error("segment a { when not in_segment(a) }",
                 "t.rules:1:33: error: segment \"a\" cannot read its own membership with "
                 "in_segment()");
}

Test(check, reports_every_semantic_error)
{
    cr_assert_eq(compile("trigger a { on \"A\" when cout(\"A\") > 1 }\n"
                         "trigger b { on NOLABEL }\n"
                         "trigger c { on \"A\" do webhook nowhere }\n"),
                 3, "%s", errors());
    cr_assert(strstr(errors(), "t.rules:1:"), "%s", errors());
    cr_assert(strstr(errors(), "t.rules:2:"), "%s", errors());
    cr_assert(strstr(errors(), "t.rules:3:"), "%s", errors());
}

Test(check, invalid_utf8_is_reported_with_its_position)
{
    cr_assert_eq(compile("trigger t {\n  on \"caf\xc3\"\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:2:10: error: invalid UTF-8 (byte 0xc3)"), "%s", errors());
}

Test(check, a_long_flat_expression_does_not_crash_the_compiler)
{
    /* about 300 KB, well under RULE_MAX_SOURCE_BYTES: either it compiles or it is an error */
    onr_buf src = {0};
    onr_buf_puts(&src, "segment s { when step");
    for (int i = 0; i < 100000; i++)
        onr_buf_puts(&src, " + 1");
    onr_buf_puts(&src, " > 0 }\n");
    cr_assert_lt(src.len, RULE_MAX_SOURCE_BYTES);
    int n = compile(onr_buf_cstr(&src));
    cr_assert(n == 0 || strstr(errors(), "t.rules:1:"), "%s", errors());
    onr_buf_free(&src);
}

/* ---- successful compiles: matchers */

Test(check, builtin_matchers_come_first)
{
    compile_ok("trigger t { on \"A\" }");
    cr_assert_eq(matcher_of("Signed Up"), RM_SIGNED_UP);
    cr_assert_eq(matcher_of("Feature Used"), RM_FEATURE_USED);
    cr_assert_eq(matcher_of("Onboarding Step Completed"), RM_STEP_COMPLETED);
    cr_assert_eq(matcher_of("Onboarding Completed"), RM_ONBOARDING_COMPLETED);
    cr_assert_eq(matcher_of("Session Ended"), RM_SESSION_ENDED);
    cr_assert_eq(matcher_of("A"), RM_BUILTIN_COUNT);
    cr_assert_eq(RS->nmatchers, RM_BUILTIN_COUNT + 1);
}

Test(check, labels_may_be_declared_after_their_use)
{
    compile_ok("trigger t { on L when count(L) > 1 }\nlabel L = \"A\", page\n");
    cr_assert_str_eq(RS->labels[RS->triggers[0].matcher], "L");
}

Test(check, an_event_named_twice_has_one_matcher)
{
    compile_ok("trigger t {\n  on \"X\"\n  when count(\"X\") > 1 and since(\"X\") < 5m\n}\n"
               "trigger u { on \"X\" unless \"X\" within 1m }\n"
               "trigger v { on \"Feature Used\" }\n");
    cr_assert_eq(RS->nmatchers, RM_BUILTIN_COUNT + 1);
    int x = matcher_of("X");
    const rule_matcher *m = &RS->matchers[x];
    cr_assert_eq(m->ntriggers, 1);
    cr_assert_eq(m->triggers[0], 0);
    cr_assert_eq(m->nabsences, 1);
    cr_assert_eq(m->nunlesses, 1);
    cr_assert_eq(RS->triggers[1].matcher, x);
    cr_assert_eq(RS->triggers[1].unless_matcher, x);
    cr_assert_eq(RS->triggers[2].matcher, RM_FEATURE_USED);
}

Test(check, a_label_is_its_own_matcher)
{
    compile_ok("label L = \"A\", \"B\", page where props.ok == true\ntrigger t { on L }\n"
               "trigger u { on \"A\" }\n");
    const int *ids;
    int n = rule_lookup_name(RS, "A", 1, &ids);
    cr_assert_eq(n, 2, "\"A\" feeds both the label and the plain matcher");
    n = rule_lookup_name(RS, "B", 1, &ids);
    cr_assert_eq(n, 1);
    int l = ids[0];
    cr_assert_str_eq(RS->labels[l], "L");
    cr_assert_eq(RS->matchers[l].nnames, 2);
    cr_assert_eq(RS->matchers[l].kinds, 1u << TRK_PAGE);
    cr_assert_geq(RS->matchers[l].where, 0);
    cr_assert_eq(RS->triggers[0].matcher, l);
    cr_assert_eq(RS->nkind_matchers[TRK_PAGE], 1);
    cr_assert_eq(RS->kind_matchers[TRK_PAGE][0], l);
}

Test(check, kind_matchers_for_any)
{
    compile_ok("segment s { when count(any) > 3 }");
    for (int k = 0; k < TRK_KIND_COUNT; k++)
        cr_assert_eq(RS->nkind_matchers[k], 1, "kind %d", k);
}

Test(check, lookup_of_an_unknown_name_finds_nothing)
{
    compile_ok("trigger t { on \"A\" }");
    const int *ids = (const int *)1;
    cr_assert_eq(rule_lookup_name(RS, "B", 1, &ids), 0);
    cr_assert_null(ids);
    cr_assert_eq(rule_lookup_name(RS, "AA", 2, &ids), 0);
    cr_assert_eq(rule_lookup_name(RS, "", 0, &ids), 0);
    /* lengths are exact, not prefixes */
    cr_assert_eq(rule_lookup_name(RS, "A!", 1, &ids), 1);
}

Test(check, lookup_finds_every_name_of_many)
{
    onr_buf src = {0};
    for (int i = 0; i < 300; i++)
        onr_buf_printf(&src, "trigger t%d { on \"Event %d\" }\n", i, i);
    compile_ok(onr_buf_cstr(&src));
    for (int i = 0; i < 300; i++) {
        char name[32];
        int len = snprintf(name, sizeof(name), "Event %d", i);
        const int *ids;
        cr_assert_eq(rule_lookup_name(RS, name, (size_t)len, &ids), 1, "%s", name);
        cr_assert_eq(RS->triggers[i].matcher, ids[0]);
    }
    onr_buf_free(&src);
}

/* ---- successful compiles: the layout */

Test(check, only_referenced_counters_get_offsets)
{
    compile_ok("trigger t {\n"
               "  on \"A\"\n"
               "  when count(\"B\") > 1 and first(\"C\") < now and since(\"D\") > 5m and "
               "last(\"E\") > start\n"
               "}\n");
    const rule_matcher *a = &RS->matchers[matcher_of("A")];
    const rule_matcher *b = &RS->matchers[matcher_of("B")];
    const rule_matcher *c = &RS->matchers[matcher_of("C")];
    const rule_matcher *d = &RS->matchers[matcher_of("D")];
    const rule_matcher *e = &RS->matchers[matcher_of("E")];
    cr_assert(a->off_count < 0 && a->off_first < 0 && a->off_last < 0, "\"A\" is only an anchor");
    cr_assert(b->off_count >= 0 && b->off_first < 0 && b->off_last < 0);
    cr_assert(c->off_count < 0 && c->off_first >= 0 && c->off_last < 0);
    cr_assert(d->off_count < 0 && d->off_first < 0 && d->off_last >= 0);
    cr_assert(e->off_count < 0 && e->off_first < 0 && e->off_last >= 0);
    for (int i = 0; i < RM_BUILTIN_COUNT; i++) {
        const rule_matcher *m = &RS->matchers[i];
        cr_assert(m->off_count < 0 && m->off_first < 0 && m->off_last < 0, "builtin %d", i);
    }
}

Test(check, offsets_are_aligned_distinct_and_inside_the_profile)
{
    compile_ok("segment s { when count(\"B\") > 1 and first(\"C\") < now and since(\"D\") > 5m "
               "and count(\"E\", within: 1m) >= 2 and path ends [\"x\"] and trait.plan == \"p\" }\n"
               "trigger t { on \"A\" unless \"B\" within 5m limit cooldown 1h }\n"
               "trigger u { on idle 5m limit once per user }\n");
    const rule_layout *L = &RS->layout;
    cr_assert_eq(L->size % 8, 0);
    cr_assert_geq(L->off_segments, (int)sizeof(rule_hdr));
    cr_assert_eq(L->off_segments % 8, 0);
    const rule_matcher *b = &RS->matchers[matcher_of("B")];
    const rule_matcher *c = &RS->matchers[matcher_of("C")];
    const rule_matcher *d = &RS->matchers[matcher_of("D")];
    int offs[] = {L->off_segments,
                  c->off_first,
                  d->off_last,
                  RS->windows[0].off,
                  RS->triggers[0].off_last_fire,
                  RS->triggers[0].off_pending,
                  L->off_traits,
                  b->off_count,
                  L->off_path,
                  L->off_bits};
    int sizes[] = {8,
                   8,
                   8,
                   8 + 8 * RS->windows[0].cap,
                   8,
                   8,
                   (int)sizeof(rule_trait_slot),
                   4,
                   4 + 4 * L->path_len,
                   1};
    int aligns[] = {8, 8, 8, 8, 8, 8, 8, 4, 4, 1};
    for (size_t i = 0; i < ONR_ARRAY_LEN(offs); i++) {
        cr_assert_geq(offs[i], (int)sizeof(rule_hdr), "field %zu at %d", i, offs[i]);
        cr_assert_eq(offs[i] % aligns[i], 0, "field %zu misaligned at %d", i, offs[i]);
        cr_assert_leq((size_t)(offs[i] + sizes[i]), L->size, "field %zu past the end", i);
        for (size_t j = 0; j < i; j++)
            cr_assert(offs[i] + sizes[i] <= offs[j] || offs[j] + sizes[j] <= offs[i],
                      "fields %zu and %zu overlap", i, j);
    }
}

Test(check, a_rule_set_reading_nothing_has_a_header_sized_profile)
{
    compile_ok("trigger t { on \"A\" do cue \"x\" }");
    cr_assert_eq(RS->layout.size, sizeof(rule_hdr) + 8, "header and segment bits only");
    cr_assert_eq(RS->layout.off_path, -1);
    cr_assert_eq(RS->layout.off_traits, -1);
    cr_assert_eq(RS->layout.off_bits, -1);
    cr_assert_eq(RS->nwindows, 0);
}

Test(check, trigger_fields_by_limit_and_kind)
{
    compile_ok("trigger a { on \"A\" limit once per user }\n"
               "trigger b { on \"A\" limit cooldown 30m }\n"
               "trigger c { on \"A\" limit once per 1d }\n"
               "trigger d { on \"A\" unless \"B\" within 10m }\n"
               "trigger e { on idle 7m }\n"
               "trigger f { on \"A\" }\n");
    const rule_trigger *t = RS->triggers;
    cr_assert(t[0].bit_fired >= 0 && t[0].off_last_fire < 0 && t[0].off_pending < 0);
    cr_assert(t[1].bit_fired < 0 && t[1].off_last_fire >= 0 && t[1].off_pending < 0);
    cr_assert(t[2].bit_fired < 0 && t[2].off_last_fire >= 0 && t[2].off_pending < 0);
    cr_assert(t[3].bit_fired < 0 && t[3].off_last_fire < 0 && t[3].off_pending >= 0);
    cr_assert(t[4].bit_fired < 0 && t[4].bit_idle >= 0 && t[4].off_last_fire < 0 &&
              t[4].off_pending < 0);
    cr_assert(t[5].bit_fired < 0 && t[5].off_last_fire < 0 && t[5].off_pending < 0);
    cr_assert(t[0].bit_idle < 0);
    cr_assert_neq(t[0].bit_fired, t[4].bit_idle);
    cr_assert_eq(RS->layout.nbits, 2);
    cr_assert_eq(t[3].dur_ms, 10 * ONR_MINUTE_MS);
    cr_assert_eq(RS->nidle, 1);
    cr_assert_eq(RS->idle_triggers[0], 4);
}

Test(check, windowed_count_capacity_comes_from_the_compared_constant)
{
    compile_ok("segment a { when count(\"A\", within: 5m) >= 3 }\n"
               "segment b { when 10 < count(\"A\", within: 1h) }\n"
               "segment c { when count(\"A\", within: 1m) == 0 }\n"
               "segment d { when count(\"A\", within: 2m) > count(\"B\") }\n"
               "segment e { when count(\"A\", within: 5m) >= 7 }\n");
    cr_assert_eq(RS->nwindows, 4, "the same count(X, within: W) shares one window");
    cr_assert_eq(RS->windows[0].cap, 8, "the largest constant it is compared with, plus one");
    cr_assert_eq(RS->windows[0].within_ms, 5 * ONR_MINUTE_MS);
    cr_assert_eq(RS->windows[1].cap, 11);
    cr_assert_eq(RS->windows[2].cap, 1);
    cr_assert_eq(RS->windows[3].cap, 64, "no constant: the default capacity");
    int a = matcher_of("A");
    cr_assert_eq(RS->matchers[a].nwindows, 4);
    cr_assert_gt(RS->windows[1].off, RS->windows[0].off);
    cr_assert_geq(RS->windows[1].off - RS->windows[0].off, 8 + 8 * 8);
}

Test(check, path_length_is_the_longest_list)
{
    compile_ok("trigger a { on \"Feature Used\" when path ends [\"a\", \"b\"] }\n"
               "trigger b { on \"Feature Used\" when path ends [\"a\", \"b\", \"c\", \"d\"] }\n"
               "trigger c { on \"Feature Used\" when path ends [\"a\"] }\n");
    cr_assert_eq(RS->layout.path_len, 4);
    cr_assert_geq(RS->layout.off_path, 0);
    cr_assert_eq(RS->layout.off_path % 4, 0);
}

Test(check, no_path_field_without_path_conditions)
{
    compile_ok("trigger a { on \"Feature Used\" when props.feature == \"a\" }");
    cr_assert_eq(RS->layout.off_path, -1);
    cr_assert_eq(RS->layout.path_len, 0);
}

Test(check, sequences_get_one_timestamp_per_step)
{
    compile_ok("segment s { when seq(\"A\", \"B\", \"C\", within: 1h) }");
    cr_assert_eq(RS->nseqs, 1);
    cr_assert_eq(RS->seqs[0].nsteps, 3);
    cr_assert_eq(RS->seqs[0].within_ms, ONR_HOUR_MS);
    cr_assert_eq(RS->seqs[0].off % 8, 0);
    cr_assert_leq((size_t)RS->seqs[0].off + 24, RS->layout.size);
    cr_assert_eq(RS->matchers[matcher_of("B")].nseqs, 1);
}

/* ---- successful compiles: schema */

Test(check, schema_collects_properties_and_traits_once)
{
    compile_ok("trigger t {\n"
               "  on \"A\" where props.plan == \"pro\" and properties.plan != \"x\" and "
               "props.plan.name == \"n\"\n"
               "  when trait.role == \"admin\" and traits.role != \"x\" and trait.seats > 3\n"
               "}\n");
    cr_assert_eq(RS->schema.nprops, 4);
    cr_assert_str_eq(RS->schema.props[0], "feature");
    cr_assert_str_eq(RS->schema.props[1], "step");
    cr_assert_eq(RS->prop_feature, 0);
    cr_assert_eq(RS->prop_step, 1);
    cr_assert_geq(prop_id("plan"), 2);
    cr_assert_geq(prop_id("plan.name"), 2);
    cr_assert_eq(RS->schema.ntraits, 2);
    cr_assert_str_eq(RS->schema.traits[0], "role");
    cr_assert_str_eq(RS->schema.traits[1], "seats");
    cr_assert_eq(RS->layout.ntraits, 2);
    cr_assert_geq(RS->layout.off_traits, 0);
}

/* ---- successful compiles: segments and their dependencies */

Test(check, segment_dependencies_are_recorded)
{
    compile_ok("segment a { when count(\"X\") > 2 }\n"
               "segment b { when idle > 5m }\n"
               "segment c { when in_segment(a) and not completed }\n"
               "segment d {\n  enter on \"Y\" when props.n > 1\n  exit on session end\n}\n");
    const rule_segment *s = RS->segments;
    cr_assert_eq(RS->nsegments, 4);
    cr_assert_not(s[0].every_event);
    cr_assert_not(s[0].timed);
    cr_assert(s[1].every_event);
    cr_assert(s[1].timed);
    cr_assert_eq(s[2].deps_segments, UINT64_C(1) << 0);
    cr_assert_geq(s[0].live, 0);
    cr_assert_eq(s[3].live, -1);
    cr_assert_eq(s[3].nclauses, 2);
    cr_assert(s[3].clauses[0].enter);
    cr_assert_eq(s[3].clauses[0].on, matcher_of("Y"));
    cr_assert_not(s[3].clauses[1].enter);
    cr_assert_eq(s[3].clauses[1].on, RULE_ON_SESSION_END);
    cr_assert(RS->matchers[matcher_of("X")].segments_dep & (UINT64_C(1) << 0));
    cr_assert(RS->matchers[RM_ONBOARDING_COMPLETED].segments_dep & (UINT64_C(1) << 2));
    const rule_matcher *y = &RS->matchers[matcher_of("Y")];
    cr_assert_eq(y->nseg_clauses, 1);
    cr_assert_eq(y->seg_clauses[0], 3 << 8 | 0);
}

Test(check, segment_triggers_are_indexed)
{
    compile_ok("segment s { when idle > 5m }\n"
               "trigger a { on enter s }\ntrigger b { on exit s }\ntrigger c { on enter s }\n"
               "trigger d { on session start }\ntrigger e { on session end }\n");
    cr_assert_eq(RS->segments[0].non_enter, 2);
    cr_assert_eq(RS->segments[0].on_enter[0], 0);
    cr_assert_eq(RS->segments[0].on_enter[1], 2);
    cr_assert_eq(RS->segments[0].non_exit, 1);
    cr_assert_eq(RS->triggers[0].segment, 0);
    cr_assert_eq(RS->nsession_start, 1);
    cr_assert_eq(RS->session_start_triggers[0], 3);
    cr_assert_eq(RS->nsession_end, 1);
    cr_assert_eq(RS->session_end_triggers[0], 4);
}

Test(check, destinations_keep_typed_settings)
{
    compile_ok("destination crm {\n  url = \"https://x\"\n  timeout = 5s\n  retries = 3\n}\n"
               "trigger t { on \"A\" do webhook crm, cue \"c\" }\n");
    cr_assert_eq(RS->ndests, 1);
    const rule_dest *d = &RS->dests[0];
    cr_assert_eq(d->nsettings, 3);
    cr_assert_eq(d->settings[0].type, RT_STR);
    cr_assert_str_eq(d->settings[0].str, "https://x");
    cr_assert_eq(d->settings[1].type, RT_DUR);
    cr_assert_eq(d->settings[1].ms, 5000);
    cr_assert_eq(d->settings[2].type, RT_NUM);
    cr_assert_eq(d->settings[2].num, 3);
    cr_assert_eq(RS->triggers[0].nactions, 2);
    cr_assert_eq(RS->triggers[0].actions[0].kind, ACT_WEBHOOK);
    cr_assert_str_eq(RS->triggers[0].actions[0].name, "crm");
    cr_assert_eq(RS->triggers[0].actions[1].kind, ACT_CUE);
}
