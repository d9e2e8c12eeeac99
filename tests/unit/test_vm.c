/*
 * test_vm.c - unit tests for the bytecode VM (src/rules/vm.c): conditions compiled from
 * small rule files, evaluated with rule_eval_bool against hand-built profile bytes and
 * events. Covers comparisons of every type, null and mismatched operands, lists, string
 * operators, short-circuits, arithmetic on durations and times, the next_ms deadline that
 * lets the engine sleep until a result can change, and the explain leaf callback.
 */
#include "rules/rules.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-01-01T00:00:00Z */
#define T0 INT64_C(1767225600000)
#define MIN ONR_MINUTE_MS

static rule_set *RS;
static uint8_t *PROF;
static trk_event EV;

static void cleanup(void)
{
    rule_free(RS);
    RS = NULL;
    free(PROF);
    PROF = NULL;
}

TestSuite(vm, .fini = cleanup);

static void load(const char *src)
{
    cleanup();
    onr_buf err = {0};
    int n = rule_compile("t.rules", src, strlen(src), &RS, &err);
    cr_assert_eq(n, 0, "%s", onr_buf_cstr(&err));
    onr_buf_free(&err);
    PROF = aligned_alloc(8, RS->layout.size);
    cr_assert_not_null(PROF);
    memset(PROF, 0, RS->layout.size);
    memset(&EV, 0, sizeof(EV));
    EV.kind = TRK_TRACK;
    EV.ts_ms = T0;
}

/* Compiles `trigger t { on "A" when EXPR }` (plus extra declarations) for eval(). */
static void cond(const char *extra, const char *expr)
{
    char src[2048];
    snprintf(src, sizeof(src), "%s\ntrigger t {\n    on \"A\"\n    when %s\n}\n",
             extra ? extra : "", expr);
    load(src);
}

static rule_hdr *hdr(void)
{
    return (rule_hdr *)(void *)PROF;
}

static int64_t NEXT;

static bool eval_with(const trk_event *ev, int64_t now)
{
    rule_env env = {.rs = RS, .prof = PROF, .ev = ev, .now_ms = now};
    NEXT = -1;
    return rule_eval_bool(&env, RS->triggers[RS->ntriggers - 1].when, &NEXT);
}

static bool eval(int64_t now)
{
    return eval_with(&EV, now);
}

static int prop(const char *path)
{
    for (uint32_t i = 0; i < RS->schema.nprops; i++)
        if (strcmp(RS->schema.props[i], path) == 0)
            return (int)i;
    cr_assert_fail("no property %s in the schema", path);
    return -1;
}

static void set_num(const char *path, double v)
{
    trk_value *p = &EV.props[prop(path)];
    memset(p, 0, sizeof(*p));
    p->type = TV_NUM;
    p->num = v;
}

static void set_str(const char *path, const char *s)
{
    trk_value *p = &EV.props[prop(path)];
    memset(p, 0, sizeof(*p));
    p->type = TV_STR;
    p->str.p = s;
    p->str.n = (uint32_t)strlen(s);
}

static void set_bool(const char *path, bool b)
{
    trk_value *p = &EV.props[prop(path)];
    memset(p, 0, sizeof(*p));
    p->type = TV_BOOL;
    p->b = b;
}

static void set_type(const char *path, trk_vtype t)
{
    trk_value *p = &EV.props[prop(path)];
    memset(p, 0, sizeof(*p));
    p->type = t;
}

static const rule_matcher *matcher(const char *name)
{
    const int *ids;
    int n = rule_lookup_name(RS, name, strlen(name), &ids);
    cr_assert_geq(n, 1, "no matcher for %s", name);
    return &RS->matchers[ids[0]];
}

/* ---- comparisons */

Test(vm, compares_numbers)
{
    cond(NULL, "props.n > 3");
    set_num("n", 5);
    cr_assert(eval(T0));
    set_num("n", 3);
    cr_assert_not(eval(T0));
    set_num("n", -10);
    cr_assert_not(eval(T0));
}

Test(vm, every_numeric_comparison_operator)
{
    static const struct {
        const char *op;
        bool lt, eq, gt; /* result when n < 3, n == 3, n > 3 */
    } ops[] = {
        {"==", false, true, false}, {"!=", true, false, true}, {"<", true, false, false},
        {"<=", true, true, false},  {">", false, false, true}, {">=", false, true, true},
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(ops); i++) {
        char expr[64];
        snprintf(expr, sizeof(expr), "props.n %s 3", ops[i].op);
        cond(NULL, expr);
        set_num("n", 2.5);
        cr_assert_eq(eval(T0), ops[i].lt, "2.5 %s 3", ops[i].op);
        set_num("n", 3);
        cr_assert_eq(eval(T0), ops[i].eq, "3 %s 3", ops[i].op);
        set_num("n", 3.5);
        cr_assert_eq(eval(T0), ops[i].gt, "3.5 %s 3", ops[i].op);
    }
}

Test(vm, compares_strings_bytewise)
{
    cond(NULL, "props.plan == \"pro\" or props.plan < \"b\"");
    set_str("plan", "pro");
    cr_assert(eval(T0));
    set_str("plan", "apple");
    cr_assert(eval(T0));
    set_str("plan", "zebra");
    cr_assert_not(eval(T0));
    set_str("plan", "pr");
    cr_assert_not(eval(T0), "a prefix is not equal");
    set_str("plan", "prox");
    cr_assert_not(eval(T0));
}

Test(vm, compares_booleans_for_equality)
{
    cond(NULL, "props.ok == true");
    set_bool("ok", true);
    cr_assert(eval(T0));
    set_bool("ok", false);
    cr_assert_not(eval(T0));
}

Test(vm, compares_durations)
{
    cond(NULL, "session.duration < 5m");
    hdr()->sess_start_ms = T0;
    hdr()->last_ms = T0 + 4 * MIN;
    cr_assert(eval(T0 + 4 * MIN));
    hdr()->last_ms = T0 + 5 * MIN;
    cr_assert_not(eval(T0 + 5 * MIN));
    hdr()->sess_start_ms = 0;
    cr_assert_not(eval(T0 + 5 * MIN), "no session: null, so false");
}

Test(vm, compares_times)
{
    cond(NULL, "first(\"X\") < first(\"Y\")");
    int fx = matcher("X")->off_first, fy = matcher("Y")->off_first;
    rp_set_i64(PROF, fx, T0 + 1000);
    rp_set_i64(PROF, fy, T0 + 2000);
    cr_assert(eval(T0 + 3000));
    rp_set_i64(PROF, fy, T0 + 1000);
    cr_assert_not(eval(T0 + 3000));
    rp_set_i64(PROF, fy, 0);
    cr_assert_not(eval(T0 + 3000), "Y never happened: null");
}

Test(vm, reads_lifetime_counts)
{
    cond(NULL, "count(\"X\") >= 2");
    int off = matcher("X")->off_count;
    cr_assert_not(eval(T0));
    rp_set_u32(PROF, off, 2);
    cr_assert(eval(T0));
}

Test(vm, reads_step_completed_and_time_to_first_action)
{
    cond(NULL, "step >= 3 and not completed and time_to_first_action < 2m");
    hdr()->start_ms = T0;
    hdr()->step = 3;
    rp_set_i64(PROF, RS->matchers[RM_FEATURE_USED].off_first, T0 + 90 * ONR_SECOND_MS);
    cr_assert(eval(T0 + 10 * MIN));
    hdr()->flags |= RH_COMPLETED;
    cr_assert_not(eval(T0 + 10 * MIN));
    hdr()->flags = 0;
    rp_set_i64(PROF, RS->matchers[RM_FEATURE_USED].off_first, T0 + 2 * MIN);
    cr_assert_not(eval(T0 + 10 * MIN));
    rp_set_i64(PROF, RS->matchers[RM_FEATURE_USED].off_first, 0);
    cr_assert_not(eval(T0 + 10 * MIN), "no feature used yet: null");
}

Test(vm, reads_session_counters)
{
    cond(NULL, "session.number == 2 and session.events > 3");
    hdr()->sess_number = 2;
    hdr()->sess_events = 4;
    cr_assert(eval(T0));
    hdr()->sess_events = 3;
    cr_assert_not(eval(T0));
}

Test(vm, reads_segment_membership)
{
    cond("segment a { when idle > 1m }\nsegment b { when idle > 2m }", "in_segment(b)");
    cr_assert_not(eval(T0));
    rp_set_bit(PROF, RS->layout.off_segments, 0, true);
    cr_assert_not(eval(T0), "membership of another segment");
    rp_set_bit(PROF, RS->layout.off_segments, 1, true);
    cr_assert(eval(T0));
}

Test(vm, reads_traits)
{
    cond(NULL, "trait.plan == \"pro\" and trait.seats >= 5");
    rule_trait_slot *s = (rule_trait_slot *)(void *)(PROF + RS->layout.off_traits);
    s[0].type = TV_STR;
    s[0].len = 3;
    memcpy(s[0].s, "pro", 3);
    s[1].type = TV_NUM;
    s[1].num = 5;
    cr_assert(eval(T0));
    s[1].num = 4;
    cr_assert_not(eval(T0));
    s[1].type = TV_MISSING;
    cr_assert_not(eval(T0));
}

Test(vm, reads_the_event_name)
{
    cond(NULL, "event == \"A\"");
    EV.name.p = "A";
    EV.name.n = 1;
    cr_assert(eval(T0));
    EV.name.p = "AB";
    EV.name.n = 2;
    cr_assert_not(eval(T0));
    cr_assert_not(eval_with(NULL, T0), "no event: null");
}

Test(vm, reads_sequences)
{
    cond(NULL, "seq(\"A\", \"B\", within: 1h)");
    const rule_seq *q = &RS->seqs[0];
    rp_set_i64(PROF, q->off, T0);
    cr_assert_not(eval(T0), "only the first step");
    rp_set_i64(PROF, q->off + 8, T0);
    cr_assert(eval(T0));
}

/* ---- null, missing, mismatched */

Test(vm, missing_properties_make_comparisons_false)
{
    static const char *const exprs[] = {"props.n > 3", "props.n < 3", "props.n == 3",
                                        "props.n >= 0", "props.n <= 0"};
    for (size_t i = 0; i < ONR_ARRAY_LEN(exprs); i++) {
        cond(NULL, exprs[i]);
        cr_assert_not(eval(T0), "%s with n missing", exprs[i]);
        set_type("n", TV_NULL);
        cr_assert_not(eval(T0), "%s with n null", exprs[i]);
        set_type("n", TV_OTHER);
        cr_assert_not(eval(T0), "%s with n an object", exprs[i]);
    }
}

Test(vm, null_equals_null)
{
    cond(NULL, "props.n == null");
    cr_assert(eval(T0), "missing == null");
    set_type("n", TV_NULL);
    cr_assert(eval(T0), "null == null");
    set_num("n", 0);
    cr_assert_not(eval(T0), "0 is not null");
    set_str("n", "");
    cr_assert_not(eval(T0), "\"\" is not null");
    cond(NULL, "props.n != null");
    cr_assert_not(eval(T0));
    set_num("n", 1);
    cr_assert(eval(T0));
}

Test(vm, not_equal_with_a_missing_property_is_false)
{
    /* docs/rules.md: every comparison with null is false, except == null and != null */
    cond(NULL, "props.n != 3");
    cr_assert_not(eval(T0), "missing != 3");
    set_type("n", TV_NULL);
    cr_assert_not(eval(T0), "null != 3");
    set_num("n", 4);
    cr_assert(eval(T0));
    set_num("n", 3);
    cr_assert_not(eval(T0));
}

Test(vm, not_equal_across_types_is_false)
{
    /* rules.h: type mismatches make comparisons false, as `not in` already does */
    cond(NULL, "props.plan != \"free\"");
    set_num("plan", 1);
    cr_assert_not(eval(T0));
    set_str("plan", "pro");
    cr_assert(eval(T0));
}

Test(vm, type_mismatch_at_run_time_is_false)
{
    cond(NULL, "props.n > 3");
    set_str("n", "5");
    cr_assert_not(eval(T0));
    set_bool("n", true);
    cr_assert_not(eval(T0));
    cond(NULL, "props.n == 3");
    set_str("n", "3");
    cr_assert_not(eval(T0), "\"3\" is not 3");
    cond(NULL, "props.s < \"m\"");
    set_num("s", 1);
    cr_assert_not(eval(T0));
}

Test(vm, without_an_event_properties_are_null)
{
    cond(NULL, "props.n == null");
    set_num("n", 3);
    cr_assert(eval_with(NULL, T0));
}

Test(vm, a_bare_value_is_true_only_when_it_is_true)
{
    cond(NULL, "props.flag");
    cr_assert_not(eval(T0));
    set_bool("flag", true);
    cr_assert(eval(T0));
    set_num("flag", 1);
    cr_assert_not(eval(T0), "1 is not true");
    set_str("flag", "true");
    cr_assert_not(eval(T0));
}

/* ---- lists and strings */

Test(vm, in_a_list_of_strings)
{
    cond(NULL, "props.plan in [\"pro\", \"team\"]");
    set_str("plan", "team");
    cr_assert(eval(T0));
    set_str("plan", "free");
    cr_assert_not(eval(T0));
    set_str("plan", "te");
    cr_assert_not(eval(T0));
    set_num("plan", 1);
    cr_assert_not(eval(T0));
}

Test(vm, in_a_list_of_numbers)
{
    cond(NULL, "props.n in [1, 2.5]");
    set_num("n", 2.5);
    cr_assert(eval(T0));
    set_num("n", 2);
    cr_assert_not(eval(T0));
}

Test(vm, not_in_a_list)
{
    cond(NULL, "props.plan not in [\"pro\", \"team\"]");
    set_str("plan", "free");
    cr_assert(eval(T0));
    set_str("plan", "pro");
    cr_assert_not(eval(T0));
}

Test(vm, missing_values_are_neither_in_nor_not_in)
{
    cond(NULL, "props.plan in [\"pro\"]");
    cr_assert_not(eval(T0));
    cond(NULL, "props.plan not in [\"pro\"]");
    cr_assert_not(eval(T0));
    set_type("plan", TV_NULL);
    cr_assert_not(eval(T0));
}

Test(vm, starts_with_ends_with_contains)
{
    cond(NULL, "props.url starts_with \"https://\" and props.url ends_with \".pdf\" and "
               "props.url contains \"/docs/\"");
    set_str("url", "https://x.io/docs/guide.pdf");
    cr_assert(eval(T0));
    set_str("url", "http://x.io/docs/guide.pdf");
    cr_assert_not(eval(T0));
    set_str("url", "https://x.io/docs/guide.pdfx");
    cr_assert_not(eval(T0));
    set_str("url", "https://x.io/doc/guide.pdf");
    cr_assert_not(eval(T0));
}

Test(vm, string_operators_on_edge_cases)
{
    cond(NULL, "props.s contains \"\"");
    set_str("s", "abc");
    cr_assert(eval(T0), "every string contains the empty string");
    cond(NULL, "props.s starts_with \"abcd\"");
    set_str("s", "abc");
    cr_assert_not(eval(T0), "a needle longer than the string");
    cond(NULL, "props.s ends_with \"c\"");
    set_str("s", "c");
    cr_assert(eval(T0));
    set_num("s", 1);
    cr_assert_not(eval(T0), "not a string");
    set_type("s", TV_MISSING);
    cr_assert_not(eval(T0));
}

/* ---- and, or, not, ?? */

typedef struct leaf_rec {
    int node;
    bool result;
    bool has_l, has_r;
    rval l, r;
} leaf_rec;

static leaf_rec LEAVES[32];
static int NLEAVES;

static void record_leaf(void *ctx, int node, bool result, const rval *l, const rval *r)
{
    ONR_UNUSED(ctx);
    cr_assert_lt(NLEAVES, 32);
    leaf_rec *x = &LEAVES[NLEAVES++];
    x->node = node;
    x->result = result;
    x->has_l = l != NULL;
    x->has_r = r != NULL;
    if (l)
        x->l = *l;
    if (r)
        x->r = *r;
}

static bool eval_leaves(int64_t now)
{
    NLEAVES = 0;
    rule_env env = {.rs = RS, .prof = PROF, .ev = &EV, .now_ms = now, .leaf = record_leaf};
    NEXT = -1;
    return rule_eval_bool(&env, RS->triggers[RS->ntriggers - 1].when, &NEXT);
}

Test(vm, and_stops_at_the_first_false)
{
    cond(NULL, "props.a == 1 and props.b == 2");
    set_num("a", 0);
    set_num("b", 2);
    cr_assert_not(eval_leaves(T0));
    cr_assert_eq(NLEAVES, 1, "the right side was evaluated");
    set_num("a", 1);
    cr_assert(eval_leaves(T0));
    cr_assert_eq(NLEAVES, 2);
}

Test(vm, or_stops_at_the_first_true)
{
    cond(NULL, "props.a == 1 or props.b == 2");
    set_num("a", 1);
    cr_assert(eval_leaves(T0));
    cr_assert_eq(NLEAVES, 1, "the right side was evaluated");
    set_num("a", 0);
    set_num("b", 0);
    cr_assert_not(eval_leaves(T0));
    cr_assert_eq(NLEAVES, 2);
}

Test(vm, not_and_nested_logic)
{
    cond(NULL, "not (props.a == 1 or props.b == 1) and not props.c == 1");
    set_num("a", 0);
    set_num("b", 0);
    set_num("c", 0);
    cr_assert(eval(T0));
    set_num("b", 1);
    cr_assert_not(eval(T0));
    set_num("b", 0);
    set_num("c", 1);
    cr_assert_not(eval(T0));
}

Test(vm, not_of_a_null_comparison_is_true)
{
    cond(NULL, "not props.n > 3");
    cr_assert(eval(T0), "the comparison is false, so its negation is true");
}

Test(vm, coalesce_takes_the_first_non_null)
{
    cond(NULL, "(props.n ?? 5) > 3");
    cr_assert(eval(T0), "missing: the default applies");
    set_num("n", 1);
    cr_assert_not(eval(T0), "present: the default does not apply");
    set_num("n", 0);
    cr_assert_not(eval(T0), "0 is not null");
}

Test(vm, coalesce_of_since_and_age)
{
    cond(NULL, "(since(\"Feature Used\") ?? age) > 7m");
    hdr()->start_ms = T0;
    cr_assert(eval(T0 + 8 * MIN), "no feature yet: age counts");
    cr_assert_not(eval(T0 + 6 * MIN));
    rp_set_i64(PROF, matcher("Feature Used")->off_last, T0 + 5 * MIN);
    cr_assert_not(eval(T0 + 8 * MIN), "since the feature: 3m");
    cr_assert(eval(T0 + 13 * MIN));
}

/* ---- arithmetic */

Test(vm, a_time_minus_a_time_is_a_duration)
{
    cond(NULL, "first(\"X\") - start < 2m");
    hdr()->start_ms = T0;
    rp_set_i64(PROF, matcher("X")->off_first, T0 + MIN);
    cr_assert(eval(T0 + 10 * MIN));
    cr_assert_eq(NEXT, INT64_MAX, "two fixed times never change");
    rp_set_i64(PROF, matcher("X")->off_first, T0 + 3 * MIN);
    cr_assert_not(eval(T0 + 10 * MIN));
}

Test(vm, a_time_plus_a_duration_is_a_time)
{
    cond(NULL, "start + 1h > first(\"X\")");
    hdr()->start_ms = T0;
    rp_set_i64(PROF, matcher("X")->off_first, T0 + 59 * MIN);
    cr_assert(eval(T0 + 2 * ONR_HOUR_MS));
    rp_set_i64(PROF, matcher("X")->off_first, T0 + 61 * MIN);
    cr_assert_not(eval(T0 + 2 * ONR_HOUR_MS));
}

Test(vm, durations_scale_by_numbers)
{
    cond(NULL, "session.duration * 2 == 10m and session.duration / 5 == 1m and "
               "session.duration / 1m == 5");
    hdr()->sess_start_ms = T0;
    hdr()->last_ms = T0 + 5 * MIN;
    cr_assert(eval(T0 + 5 * MIN));
}

Test(vm, number_arithmetic)
{
    cond(NULL, "props.a + props.b * 2 - 1 == 6");
    set_num("a", 1);
    set_num("b", 3);
    cr_assert(eval(T0), "1 + 3 * 2 - 1 is 6");
    set_num("a", 2);
    cr_assert_not(eval(T0));
    cond(NULL, "props.a / props.b == 0.25");
    set_num("a", 1);
    set_num("b", 4);
    cr_assert(eval(T0));
}

Test(vm, division_by_zero_is_null)
{
    cond(NULL, "props.a / props.b == null");
    set_num("a", 1);
    set_num("b", 0);
    cr_assert(eval(T0));
    set_num("b", 2);
    cr_assert_not(eval(T0));
}

Test(vm, arithmetic_with_a_missing_operand_is_null)
{
    cond(NULL, "props.a + 1 > 0");
    cr_assert_not(eval(T0));
    set_num("a", 0);
    cr_assert(eval(T0));
}

Test(vm, negation)
{
    cond(NULL, "-props.n > 0");
    set_num("n", -2);
    cr_assert(eval(T0));
    set_num("n", 2);
    cr_assert_not(eval(T0));
}

/* ---- the next_ms deadline */

Test(vm, idle_greater_than_becomes_due_at_last_plus_d)
{
    cond(NULL, "idle > 7m");
    int64_t T = T0 + 1234;
    hdr()->last_ms = T;
    cr_assert_not(eval(T + 2 * MIN));
    /* idle == 7m exactly is still not > 7m: T+7m+1ms is the exact flip, T+7m a safe wake-up */
    cr_assert(NEXT >= T + 7 * MIN && NEXT <= T + 7 * MIN + 1, "next %lld, want T+7m",
              (long long)(NEXT - T));
    /* following the deadlines gets there without ever skipping past the flip */
    int64_t now = NEXT, steps = 0;
    while (!eval(now)) {
        cr_assert_gt(NEXT, now, "the deadline does not move forward");
        now = NEXT;
        cr_assert_lt(++steps, 3);
    }
    cr_assert_eq(now, T + 7 * MIN + 1);
}

Test(vm, idle_at_least_becomes_due_exactly_at_last_plus_d)
{
    cond(NULL, "idle >= 7m");
    hdr()->last_ms = T0;
    cr_assert_not(eval(T0 + MIN));
    cr_assert_eq(NEXT, T0 + 7 * MIN);
    cr_assert(eval(T0 + 7 * MIN));
}

Test(vm, idle_already_past_never_changes_again)
{
    cond(NULL, "idle > 7m");
    hdr()->last_ms = T0;
    cr_assert(eval(T0 + 8 * MIN));
    cr_assert_eq(NEXT, INT64_MAX);
}

Test(vm, idle_without_events_is_null_and_has_no_deadline)
{
    cond(NULL, "idle > 7m");
    cr_assert_not(eval(T0));
    cr_assert_eq(NEXT, INT64_MAX);
}

Test(vm, since_less_than_expires_at_last_plus_d)
{
    cond(NULL, "since(\"X\") < 5m");
    int off = matcher("X")->off_last;
    cr_assert_geq(off, 0);
    rp_set_i64(PROF, off, T0);
    cr_assert(eval(T0 + 2 * MIN));
    cr_assert_eq(NEXT, T0 + 5 * MIN);
    cr_assert_not(eval(T0 + 5 * MIN), "at the deadline the result has changed");
    cr_assert_gt(NEXT, T0 + 5 * MIN);
}

Test(vm, windowed_count_expires_when_the_oldest_leaves_the_window)
{
    cond(NULL, "count(\"X\", within: 5m) >= 2");
    const rule_window *w = &RS->windows[0];
    int64_t *ts = (int64_t *)(void *)(PROF + w->off + 8);
    ts[0] = T0 + MIN;
    ts[1] = T0 + 3 * MIN;
    rp_set_u32(PROF, w->off, 2);
    cr_assert(eval(T0 + 4 * MIN));
    cr_assert_eq(NEXT, T0 + 6 * MIN + 1, "next %lld", (long long)(NEXT - T0));
    cr_assert(eval(T0 + 6 * MIN), "within is inclusive: an event exactly 5m old counts");
    cr_assert_not(eval(T0 + 6 * MIN + 1), "the oldest has left the window");
    cr_assert_eq(NEXT, T0 + 8 * MIN + 1);
    cr_assert_not(eval(T0 + 9 * MIN));
    cr_assert_eq(NEXT, INT64_MAX, "an empty window never changes by itself");
}

Test(vm, windowed_count_ignores_events_outside_the_window)
{
    cond(NULL, "count(\"X\", within: 5m) >= 2");
    const rule_window *w = &RS->windows[0];
    int64_t *ts = (int64_t *)(void *)(PROF + w->off + 8);
    ts[0] = T0;
    ts[1] = T0 + 10 * MIN;
    ts[2] = T0 + 11 * MIN;
    rp_set_u32(PROF, w->off, 3);
    cr_assert(eval(T0 + 12 * MIN));
    cr_assert_eq(NEXT, T0 + 15 * MIN + 1);
}

Test(vm, conditions_without_time_never_have_a_deadline)
{
    cond(NULL, "props.n > 3 and count(\"X\") >= 0 and first(\"X\") == null and not completed");
    set_num("n", 4);
    cr_assert(eval(T0));
    cr_assert_eq(NEXT, INT64_MAX);
}

Test(vm, scaled_durations_move_at_their_rate)
{
    cond(NULL, "idle * 2 >= 10m");
    hdr()->last_ms = T0;
    cr_assert_not(eval(T0 + 2 * MIN));
    cr_assert_eq(NEXT, T0 + 5 * MIN, "idle*2 reaches 10m when idle is 5m");
}

Test(vm, now_minus_a_time_moves_with_the_clock)
{
    cond(NULL, "now - first(\"X\") >= 10m");
    rp_set_i64(PROF, matcher("X")->off_first, T0);
    cr_assert_not(eval(T0 + 4 * MIN));
    cr_assert_eq(NEXT, T0 + 10 * MIN);
    cr_assert(eval(T0 + 10 * MIN));
}

Test(vm, age_less_than_expires)
{
    cond(NULL, "age < 1h");
    hdr()->start_ms = T0;
    cr_assert(eval(T0 + 10 * MIN));
    cr_assert_eq(NEXT, T0 + ONR_HOUR_MS);
}

Test(vm, the_earliest_deadline_of_several_conditions_wins)
{
    cond(NULL, "since(\"X\") < 5m and idle >= 7m");
    hdr()->last_ms = T0 + 3 * MIN;
    rp_set_i64(PROF, matcher("X")->off_last, T0);
    cr_assert_not(eval(T0 + 4 * MIN));
    cr_assert_eq(NEXT, T0 + 5 * MIN, "since(X) < 5m turns false at T0+5m, before idle >= 7m");
}

Test(vm, deadlines_of_short_circuited_branches_are_not_reported)
{
    cond(NULL, "completed and idle >= 7m");
    hdr()->last_ms = T0;
    cr_assert_not(eval(T0 + MIN));
    cr_assert_eq(NEXT, INT64_MAX, "idle cannot make this true while completed is false");
}

Test(vm, null_next_ms_is_allowed)
{
    cond(NULL, "idle >= 7m");
    hdr()->last_ms = T0;
    rule_env env = {.rs = RS, .prof = PROF, .ev = &EV, .now_ms = T0 + 8 * MIN};
    cr_assert(rule_eval_bool(&env, RS->triggers[0].when, NULL));
}

/* ---- path */

static void set_path(const char *const *features, int n)
{
    int off = RS->layout.off_path;
    cr_assert_geq(off, 0);
    cr_assert_leq(n, RS->layout.path_len);
    rp_set_u32(PROF, off, (uint32_t)n);
    for (int i = 0; i < n; i++)
        rp_set_u32(PROF, off + 4 + 4 * i, rule_feature_hash(features[i], strlen(features[i])));
}

Test(vm, path_ends_with_a_list)
{
    cond("trigger x { on \"Feature Used\" when path contains [\"a\", \"b\", \"c\"] }",
         "path ends [\"settings\", \"dashboard\"]");
    const char *const p1[] = {"a", "settings", "dashboard"};
    set_path(p1, 3);
    cr_assert(eval(T0));
    const char *const p2[] = {"settings", "dashboard", "a"};
    set_path(p2, 3);
    cr_assert_not(eval(T0));
    const char *const p3[] = {"dashboard"};
    set_path(p3, 1);
    cr_assert_not(eval(T0), "shorter than the list");
}

Test(vm, path_contains_a_list)
{
    cond("trigger x { on \"Feature Used\" when path ends [\"a\", \"b\", \"c\", \"d\"] }",
         "path contains [\"settings\", \"dashboard\"]");
    const char *const p1[] = {"a", "settings", "dashboard", "b"};
    set_path(p1, 4);
    cr_assert(eval(T0));
    const char *const p2[] = {"dashboard", "settings", "a", "b"};
    set_path(p2, 4);
    cr_assert_not(eval(T0), "wrong order");
}

Test(vm, feature_hashes_are_stable_and_never_zero)
{
    cr_assert_eq(rule_feature_hash("settings", 8), rule_feature_hash("settings", 8));
    cr_assert_neq(rule_feature_hash("settings", 8), rule_feature_hash("dashboard", 9));
    cr_assert_neq(rule_feature_hash("", 0), 0);
}

/* ---- explain */

Test(vm, the_leaf_callback_sees_each_condition_with_its_values)
{
    cond(NULL, "props.n > 3 and since(\"X\") < 5m");
    set_num("n", 5);
    rp_set_i64(PROF, matcher("X")->off_last, T0);
    cr_assert_not(eval_leaves(T0 + 6 * MIN));
    cr_assert_eq(NLEAVES, 2);

    const rule_node_info *a = &RS->nodes[LEAVES[0].node];
    cr_assert_str_eq(a->text, "props.n > 3");
    cr_assert_str_eq(a->left, "props.n");
    cr_assert_null(a->right, "a literal has no operand text");
    cr_assert_eq(a->line, 4);
    cr_assert_eq(a->col, 10);
    cr_assert(LEAVES[0].result);
    cr_assert(LEAVES[0].has_l && LEAVES[0].has_r);
    cr_assert_eq(LEAVES[0].l.t, RT_NUM);
    cr_assert_eq(LEAVES[0].l.u.n, 5);
    cr_assert_eq(LEAVES[0].r.u.n, 3);

    const rule_node_info *b = &RS->nodes[LEAVES[1].node];
    cr_assert_str_eq(b->text, "since(\"X\") < 5m");
    cr_assert_str_eq(b->left, "since(\"X\")");
    cr_assert_not(LEAVES[1].result);
    cr_assert_eq(LEAVES[1].l.t, RT_DUR);
    cr_assert_eq(LEAVES[1].l.u.ms, 6 * MIN);
    cr_assert_eq(LEAVES[1].r.t, RT_DUR);
    cr_assert_eq(LEAVES[1].r.u.ms, 5 * MIN);
}

Test(vm, the_leaf_callback_sees_lists_and_bare_values)
{
    cond(NULL, "props.plan in [\"pro\"] or props.flag");
    set_str("plan", "free");
    cr_assert_not(eval_leaves(T0));
    cr_assert_eq(NLEAVES, 2);
    cr_assert_str_eq(RS->nodes[LEAVES[0].node].text, "props.plan in [\"pro\"]");
    cr_assert(LEAVES[0].has_l);
    cr_assert_not(LEAVES[0].has_r);
    cr_assert_eq(LEAVES[0].l.t, RT_STR);
    cr_assert_eq(LEAVES[0].l.u.s.n, 4);
    cr_assert_str_eq(RS->nodes[LEAVES[1].node].text, "props.flag");
    cr_assert_eq(LEAVES[1].l.t, RT_NULL);
}

Test(vm, values_format_for_people)
{
    cond(NULL, "props.n > 3");
    onr_buf b = {0};
    rval v = {.t = RT_DUR};
    v.u.ms = 3 * MIN + 12 * ONR_SECOND_MS;
    rval_format(RS, &v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "3m12s");
    onr_buf_clear(&b);
    v.t = RT_TIME;
    v.u.ms = T0;
    rval_format(RS, &v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "2026-01-01T00:00:00.000Z");
    onr_buf_clear(&b);
    v.t = RT_STR;
    v.u.s.p = "a\"b";
    v.u.s.n = 3;
    rval_format(RS, &v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "\"a\\\"b\"");
    onr_buf_clear(&b);
    v.t = RT_NUM;
    v.u.n = 2.5;
    rval_format(RS, &v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "2.5");
    onr_buf_clear(&b);
    v.t = RT_NULL;
    rval_format(RS, &v, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), "null");
    onr_buf_free(&b);
}
