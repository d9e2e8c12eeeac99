/*
 * test_parse.c - unit tests for the rule parser (src/rules/parse.c): the tree built for
 * labels, segments, triggers and destinations, operator precedence, and syntax errors with
 * their line:col, including recovery at the next declaration.
 */
#include "rules/rules_int.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

typedef struct parsefix {
    onr_arena arena;
    onr_buf out;
    rdiag diag;
    ast_file f;
    int errors;
} parsefix;

static parsefix P;

static int parse_src(const char *src)
{
    onr_arena_init(&P.arena, 4096);
    P.out = (onr_buf){0};
    P.diag = (rdiag){.path = "t.rules", .src = src, .len = strlen(src), .out = &P.out};
    P.errors = rule_parse(src, strlen(src), &P.arena, &P.diag, &P.f);
    return P.errors;
}

static const char *errors(void)
{
    return onr_buf_cstr(&P.out);
}

static void parse_ok(const char *src)
{
    cr_assert_eq(parse_src(src), 0, "%s", errors());
}

static void cleanup(void)
{
    onr_arena_free(&P.arena);
    onr_buf_free(&P.out);
}

TestSuite(parse, .fini = cleanup);

/* The condition of a one-trigger file: trigger t { on "A" when EXPR }. */
static node *when_of(const char *expr)
{
    static char src[1024];
    snprintf(src, sizeof(src), "trigger t {\n    on \"A\"\n    when %s\n}\n", expr);
    parse_ok(src);
    cr_assert_eq(P.f.ntriggers, 1);
    cr_assert_not_null(P.f.triggers[0].when);
    return P.f.triggers[0].when;
}

/* Renders a tree in prefix form: (and (== props.x 1) (not idle)). */
static void render(const node *n, onr_buf *b)
{
    static const char *const ops[] = {
        [B_AND] = "and",
        [B_OR] = "or",
        [B_EQ] = "==",
        [B_NE] = "!=",
        [B_LT] = "<",
        [B_LE] = "<=",
        [B_GT] = ">",
        [B_GE] = ">=",
        [B_ADD] = "+",
        [B_SUB] = "-",
        [B_MUL] = "*",
        [B_DIV] = "/",
        [B_IN] = "in",
        [B_NOT_IN] = "not-in",
        [B_STARTS_WITH] = "starts_with",
        [B_ENDS_WITH] = "ends_with",
        [B_CONTAINS] = "contains",
        [B_COALESCE] = "??",
    };
    switch (n->kind) {
    case N_NUM:
        onr_buf_printf(b, "%g", n->num);
        break;
    case N_STR:
        onr_buf_printf(b, "\"%s\"", n->str);
        break;
    case N_DUR:
        onr_buf_printf(b, "%lldms", (long long)n->ms);
        break;
    case N_BOOL:
        onr_buf_puts(b, n->b ? "true" : "false");
        break;
    case N_NULL:
        onr_buf_puts(b, "null");
        break;
    case N_LIST:
        onr_buf_putc(b, '[');
        for (int i = 0; i < n->nitems; i++) {
            if (i)
                onr_buf_putc(b, ' ');
            render(n->items[i], b);
        }
        onr_buf_putc(b, ']');
        break;
    case N_NAME:
        onr_buf_puts(b, n->str);
        break;
    case N_CALL:
        onr_buf_printf(b, "%s(", n->str);
        for (int i = 0; i < n->nitems; i++) {
            if (i)
                onr_buf_putc(b, ' ');
            render(n->items[i], b);
        }
        if (n->has_within)
            onr_buf_printf(b, " within:%lldms", (long long)n->within_ms);
        onr_buf_putc(b, ')');
        break;
    case N_NOT:
        onr_buf_puts(b, "(not ");
        render(n->a, b);
        onr_buf_putc(b, ')');
        break;
    case N_NEG:
        onr_buf_puts(b, "(neg ");
        render(n->a, b);
        onr_buf_putc(b, ')');
        break;
    case N_BINARY:
        onr_buf_printf(b, "(%s ", ops[n->op]);
        render(n->a, b);
        onr_buf_putc(b, ' ');
        render(n->b2, b);
        onr_buf_putc(b, ')');
        break;
    case N_PATH:
        onr_buf_printf(b, "(path-%s ", n->path_ends ? "ends" : "contains");
        render(n->a, b);
        onr_buf_putc(b, ')');
        break;
    }
}

static void expect_tree(const char *expr, const char *want)
{
    node *n = when_of(expr);
    onr_buf b = {0};
    render(n, &b);
    cr_assert_str_eq(onr_buf_cstr(&b), want, "%s", expr);
    onr_buf_free(&b);
    cleanup();
}

/* ---- labels */

Test(parse, label_with_several_patterns_and_a_where)
{
    parse_ok("label INTERACTION = \"Clicked\", track, page where props.plan == \"pro\"\n");
    cr_assert_eq(P.f.nlabels, 1);
    ast_label *l = &P.f.labels[0];
    cr_assert_str_eq(l->name, "INTERACTION");
    cr_assert_eq(l->line, 1);
    cr_assert_eq(l->col, 7);
    cr_assert_eq(l->npats, 3);
    cr_assert_eq(l->pats[0]->kind, REF_NAME);
    cr_assert_str_eq(l->pats[0]->name, "Clicked");
    cr_assert_eq(l->pats[1]->kind, REF_IDENT);
    cr_assert_str_eq(l->pats[1]->name, "track");
    cr_assert_eq(l->pats[2]->kind, REF_IDENT);
    cr_assert_str_eq(l->pats[2]->name, "page");
    cr_assert_eq(l->pats[2]->col, 39);
    cr_assert_not_null(l->where);
    cr_assert_eq(l->where->kind, N_BINARY);
    cr_assert_eq(l->where->op, B_EQ);
    cr_assert_str_eq(l->where->a->str, "props.plan");
}

Test(parse, label_without_where)
{
    parse_ok("label E = \"API Error\"");
    cr_assert_eq(P.f.nlabels, 1);
    cr_assert_eq(P.f.labels[0].npats, 1);
    cr_assert_null(P.f.labels[0].where);
}

Test(parse, label_cannot_match_a_session_moment)
{
    cr_assert_eq(parse_src("label S = session start"), 1);
    cr_assert(strstr(errors(), "a label matches events; \"session start\" is not an event"), "%s",
              errors());
}

/* ---- segments */

Test(parse, segment_with_a_live_condition)
{
    parse_ok("segment idlers {\n    when idle > 5m\n}");
    cr_assert_eq(P.f.nsegments, 1);
    ast_segment *s = &P.f.segments[0];
    cr_assert_str_eq(s->name, "idlers");
    cr_assert_not_null(s->live);
    cr_assert_eq(s->live->op, B_GT);
    cr_assert_eq(s->live->b2->ms, 5 * ONR_MINUTE_MS);
    cr_assert_eq(s->nclauses, 0);
}

Test(parse, segment_with_enter_and_exit_clauses)
{
    parse_ok("segment hesitant {\n"
             "    enter on session end when session.duration < 5m\n"
             "    enter on INTERACTION when not completed\n"
             "    enter on \"Stuck\"\n"
             "    exit when completed\n"
             "}\n");
    ast_segment *s = &P.f.segments[0];
    cr_assert_null(s->live);
    cr_assert_eq(s->nclauses, 4);
    cr_assert(s->clauses[0].enter);
    cr_assert_eq(s->clauses[0].on->kind, REF_SESSION_END);
    cr_assert_not_null(s->clauses[0].when);
    cr_assert_eq(s->clauses[0].line, 2);
    cr_assert_eq(s->clauses[0].col, 5);
    cr_assert_eq(s->clauses[1].on->kind, REF_IDENT);
    cr_assert_str_eq(s->clauses[1].on->name, "INTERACTION");
    cr_assert_eq(s->clauses[1].when->kind, N_NOT);
    cr_assert_eq(s->clauses[2].on->kind, REF_NAME);
    cr_assert_null(s->clauses[2].when);
    cr_assert_not(s->clauses[3].enter);
    cr_assert_null(s->clauses[3].on);
    cr_assert_not_null(s->clauses[3].when);
}

Test(parse, segment_on_session_start)
{
    parse_ok("segment s { enter on session start when session.number > 1 }");
    cr_assert_eq(P.f.segments[0].clauses[0].on->kind, REF_SESSION_START);
}

Test(parse, segment_needs_when_or_enter)
{
    cr_assert_eq(parse_src("segment empty {\n}"), 1);
    cr_assert(
        strstr(errors(), "t.rules:1:9: error: segment \"empty\" has no \"when\" or \"enter\""),
        "%s", errors());
}

Test(parse, segment_cannot_mix_when_with_enter)
{
    cr_assert_eq(parse_src("segment s {\n  when idle > 1m\n  enter on \"A\"\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:1:9: error: segment \"s\" mixes \"when\" with"), "%s",
              errors());
}

Test(parse, segment_with_exit_only_is_an_error)
{
    cr_assert_eq(parse_src("segment s { exit when completed }"), 1);
    cr_assert(strstr(errors(), "segment \"s\" has \"exit\" but no \"enter\""), "%s", errors());
}

Test(parse, segment_clause_needs_on_or_when)
{
    cr_assert_eq(parse_src("segment s {\n  enter\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:3:1: error: expected \"on\" or \"when\", found \"}\""),
              "%s", errors());
}

Test(parse, segment_with_two_whens_is_an_error)
{
    cr_assert_eq(parse_src("segment s {\n  when idle > 1m\n  when idle < 2m\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:3:3: error: segment \"s\" already has a \"when\""), "%s",
              errors());
}

/* ---- triggers */

Test(parse, trigger_on_event_with_where_and_every_clause)
{
    parse_ok("trigger nudge {\n"
             "    on \"Feature Used\" where props.feature == \"settings\"\n"
             "    when count(\"Feature Used\") >= 2\n"
             "    limit once per user\n"
             "    holdout 10%\n"
             "    do webhook crm, cue \"tour\"\n"
             "}\n"
             "destination crm { url = \"https://example.com/hook\" }\n");
    cr_assert_eq(P.f.ntriggers, 1);
    ast_trigger *t = &P.f.triggers[0];
    cr_assert_str_eq(t->name, "nudge");
    cr_assert_eq(t->line, 1);
    cr_assert_eq(t->col, 9);
    cr_assert(t->has_on);
    cr_assert_eq(t->on, ON_EVENT);
    cr_assert_eq(t->ev->kind, REF_NAME);
    cr_assert_str_eq(t->ev->name, "Feature Used");
    cr_assert_eq(t->ev->line, 2);
    cr_assert_eq(t->ev->col, 8);
    cr_assert_eq(t->ev->width, 14);
    cr_assert_not_null(t->where);
    cr_assert_str_eq(t->where->a->str, "props.feature");
    cr_assert_not_null(t->when);
    cr_assert_eq(t->when->a->kind, N_CALL);
    cr_assert_eq(t->limit, LIMIT_ONCE);
    cr_assert_eq(t->holdout_bp, 1000);
    cr_assert_eq(t->nactions, 2);
    cr_assert_eq(t->actions[0].kind, ACT_WEBHOOK);
    cr_assert_str_eq(t->actions[0].name, "crm");
    cr_assert_eq(t->actions[0].line, 6);
    cr_assert_eq(t->actions[0].col, 16);
    cr_assert_eq(t->actions[1].kind, ACT_CUE);
    cr_assert_str_eq(t->actions[1].name, "tour");
}

Test(parse, trigger_on_a_label)
{
    parse_ok("trigger t { on ERROR_500 }");
    ast_trigger *t = &P.f.triggers[0];
    cr_assert_eq(t->on, ON_EVENT);
    cr_assert_eq(t->ev->kind, REF_IDENT);
    cr_assert_str_eq(t->ev->name, "ERROR_500");
    cr_assert_null(t->where);
    cr_assert_null(t->when);
    cr_assert_eq(t->limit, LIMIT_NONE);
    cr_assert_eq(t->nactions, 0);
}

Test(parse, trigger_on_idle)
{
    parse_ok("trigger t { on idle 7m }");
    cr_assert_eq(P.f.triggers[0].on, ON_IDLE);
    cr_assert_eq(P.f.triggers[0].dur_ms, 7 * ONR_MINUTE_MS);
    cr_assert_null(P.f.triggers[0].ev);
}

Test(parse, trigger_on_absence)
{
    parse_ok("trigger t { on \"A\" where props.x == 1 unless \"B\" within 10m }");
    ast_trigger *t = &P.f.triggers[0];
    cr_assert_eq(t->on, ON_ABSENCE);
    cr_assert_str_eq(t->ev->name, "A");
    cr_assert_not_null(t->where);
    cr_assert_eq(t->unless->kind, REF_NAME);
    cr_assert_str_eq(t->unless->name, "B");
    cr_assert_eq(t->dur_ms, 10 * ONR_MINUTE_MS);
}

Test(parse, trigger_on_segment_enter_and_exit)
{
    parse_ok("trigger a { on enter explorers }\ntrigger b { on exit explorers }");
    cr_assert_eq(P.f.triggers[0].on, ON_ENTER);
    cr_assert_eq(P.f.triggers[0].ev->kind, REF_ENTER);
    cr_assert_str_eq(P.f.triggers[0].ev->name, "explorers");
    cr_assert_eq(P.f.triggers[0].ev->col, 22);
    cr_assert_eq(P.f.triggers[1].on, ON_EXIT);
    cr_assert_eq(P.f.triggers[1].ev->kind, REF_EXIT);
}

Test(parse, trigger_on_session_start_and_end)
{
    parse_ok(
        "trigger a { on session start }\ntrigger b { on session end when session.events > 3 }");
    cr_assert_eq(P.f.triggers[0].on, ON_SESSION_START);
    cr_assert_eq(P.f.triggers[1].on, ON_SESSION_END);
    cr_assert_not_null(P.f.triggers[1].when);
}

Test(parse, trigger_limits)
{
    parse_ok("trigger a { on \"A\" limit once per 1d }\n"
             "trigger b { on \"A\" limit cooldown 30m }\n"
             "trigger c { on \"A\" limit once per user }\n");
    cr_assert_eq(P.f.triggers[0].limit, LIMIT_ONCE_PER);
    cr_assert_eq(P.f.triggers[0].limit_ms, ONR_DAY_MS);
    cr_assert_eq(P.f.triggers[1].limit, LIMIT_COOLDOWN);
    cr_assert_eq(P.f.triggers[1].limit_ms, 30 * ONR_MINUTE_MS);
    cr_assert_eq(P.f.triggers[2].limit, LIMIT_ONCE);
}

Test(parse, holdout_in_basis_points)
{
    parse_ok("trigger a { on \"A\" holdout 12.5% }\ntrigger b { on \"A\" holdout 100% }\n"
             "trigger c { on \"A\" holdout 0% }");
    cr_assert_eq(P.f.triggers[0].holdout_bp, 1250);
    cr_assert_eq(P.f.triggers[1].holdout_bp, 10000);
    cr_assert_eq(P.f.triggers[2].holdout_bp, 0);
}

Test(parse, holdout_over_100_percent_is_an_error)
{
    cr_assert_eq(parse_src("trigger a {\n  on \"A\"\n  holdout 150%\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:3:11: error: holdout must be between 0% and 100%"), "%s",
              errors());
}

Test(parse, cooldown_of_zero_is_an_error)
{
    cr_assert_eq(parse_src("trigger a { on \"A\" limit cooldown 0s }"), 1);
    cr_assert(strstr(errors(), "the limit's duration must be greater than 0"), "%s", errors());
}

Test(parse, trigger_without_on_is_an_error)
{
    cr_assert_eq(parse_src("trigger lonely {\n  do cue \"x\"\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:1:9: error: trigger \"lonely\" has no \"on\" clause"), "%s",
              errors());
}

Test(parse, trigger_with_two_ons_is_an_error)
{
    cr_assert_eq(parse_src("trigger t {\n  on \"A\"\n  on \"B\"\n}"), 1);
    cr_assert(strstr(errors(), "trigger \"t\" already has an \"on\""), "%s", errors());
}

Test(parse, keyword_cannot_name_a_trigger)
{
    cr_assert_eq(parse_src("trigger when { on \"A\" }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:9: error: \"when\" is a keyword and cannot name a "
                               "trigger"),
              "%s", errors());
}

/* ---- destinations */

Test(parse, destination_settings_of_every_type)
{
    parse_ok("destination crm {\n"
             "    url = \"https://example.com/h\"\n"
             "    timeout: 5s\n"
             "    retries = 3\n"
             "    method = POST\n"
             "}\n");
    cr_assert_eq(P.f.ndests, 1);
    ast_dest *d = &P.f.dests[0];
    cr_assert_str_eq(d->name, "crm");
    cr_assert_eq(d->nsettings, 4);
    cr_assert_str_eq(d->settings[0].key, "url");
    cr_assert_eq(d->settings[0].value.kind, T_STRING);
    cr_assert_str_eq(d->settings[0].value.str, "https://example.com/h");
    cr_assert_str_eq(d->settings[1].key, "timeout");
    cr_assert_eq(d->settings[1].value.kind, T_DURATION);
    cr_assert_eq(d->settings[1].value.ms, 5000);
    cr_assert_eq(d->settings[2].value.kind, T_NUMBER);
    cr_assert_eq(d->settings[2].value.num, 3);
    cr_assert_eq(d->settings[3].value.kind, T_IDENT);
}

Test(parse, declarations_keep_their_order)
{
    parse_ok("label A = \"a\"\nsegment s { when idle > 1m }\ntrigger t { on A }\n"
             "label B = \"b\"\ntrigger u { on B }\ndestination d { }\n");
    cr_assert_eq(P.f.nlabels, 2);
    cr_assert_str_eq(P.f.labels[1].name, "B");
    cr_assert_eq(P.f.labels[1].line, 4);
    cr_assert_eq(P.f.ntriggers, 2);
    cr_assert_str_eq(P.f.triggers[1].name, "u");
    cr_assert_eq(P.f.nsegments, 1);
    cr_assert_eq(P.f.ndests, 1);
    cr_assert_eq(P.f.dests[0].nsettings, 0);
}

Test(parse, empty_file_and_comments_only)
{
    parse_ok("");
    cr_assert_eq(P.f.nlabels + P.f.nsegments + P.f.ntriggers + P.f.ndests, 0);
    cleanup();
    parse_ok("# nothing here\n// nor here\n");
    cr_assert_eq(P.f.ntriggers, 0);
}

/* ---- expressions and precedence */

Test(parse, and_binds_tighter_than_or)
{
    expect_tree("a or b and c", "(or a (and b c))");
    expect_tree("a and b or c", "(or (and a b) c)");
    expect_tree("(a or b) and c", "(and (or a b) c)");
}

Test(parse, not_binds_tighter_than_and_but_looser_than_comparisons)
{
    expect_tree("not a and b", "(and (not a) b)");
    expect_tree("not a == 1", "(not (== a 1))");
    expect_tree("not not a", "(not (not a))");
}

Test(parse, arithmetic_precedence_and_left_associativity)
{
    expect_tree("1 + 2 * 3 == 7", "(== (+ 1 (* 2 3)) 7)");
    expect_tree("a - b - c > 0", "(> (- (- a b) c) 0)");
    expect_tree("a / b * c < 1", "(< (* (/ a b) c) 1)");
    expect_tree("-a * 2 > -1m", "(> (* (neg a) 2) (neg 60000ms))");
}

Test(parse, coalesce_binds_looser_than_arithmetic_and_tighter_than_comparison)
{
    expect_tree("a ?? b + 1 > 2", "(> (?? a (+ b 1)) 2)");
    expect_tree("since(\"X\") ?? age > 7m", "(> (?? since(\"X\") age) 420000ms)");
    expect_tree("a ?? b ?? c == 1", "(== (?? (?? a b) c) 1)");
}

Test(parse, every_comparison_operator)
{
    expect_tree("a == 1 and b != 2 and c < 3 and d <= 4 and e > 5 and f >= 6",
                "(and (and (and (and (and (== a 1) (!= b 2)) (< c 3)) (<= d 4)) (> e 5)) "
                "(>= f 6))");
}

Test(parse, in_and_not_in_take_lists)
{
    expect_tree("props.plan in [\"pro\", \"team\"]", "(in props.plan [\"pro\" \"team\"])");
    expect_tree("props.n not in [1, 2] and x", "(and (not-in props.n [1 2]) x)");
    expect_tree("props.n in []", "(in props.n [])");
}

Test(parse, string_operators)
{
    expect_tree("props.url starts_with \"https://\"", "(starts_with props.url \"https://\")");
    expect_tree("props.url ends_with \".pdf\" or props.url contains \"docs\"",
                "(or (ends_with props.url \".pdf\") (contains props.url \"docs\"))");
}

Test(parse, path_ends_and_contains)
{
    expect_tree("path ends [\"settings\", \"dashboard\"]",
                "(path-ends [\"settings\" \"dashboard\"])");
    expect_tree("path contains [\"a\"] and not completed",
                "(and (path-contains [\"a\"]) (not completed))");
}

Test(parse, calls_with_events_and_within)
{
    expect_tree("count(\"X\", within: 5m) >= 2", "(>= count(\"X\" within:300000ms) 2)");
    expect_tree("seq(\"A\", B, within: 1h)", "seq(\"A\" B within:3600000ms)");
    expect_tree("first(\"X\") - start < 2m", "(< (- first(\"X\") start) 120000ms)");
    expect_tree("in_segment(explorers)", "in_segment(explorers)");
}

Test(parse, dotted_names_and_literals)
{
    expect_tree("props.plan.name == \"x\" and trait.role != null and session.duration < 5m and "
                "completed == true",
                "(and (and (and (== props.plan.name \"x\") (!= trait.role null)) "
                "(< session.duration 300000ms)) (== completed true))");
}

Test(parse, node_positions_point_at_the_left_operand)
{
    node *n = when_of("idle   > 5m");
    cr_assert_eq(n->line, 3);
    cr_assert_eq(n->col, 10);
    cr_assert_eq(n->end - n->start, 11, "the span covers the whole comparison");
    cr_assert_eq(n->b2->col, 19);
}

/* ---- syntax errors */

Test(parse, comparisons_do_not_chain)
{
    cr_assert_eq(parse_src("trigger t {\n  on \"A\"\n  when 1 < a < 3\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:3:14: error: comparisons do not chain"), "%s", errors());
}

Test(parse, single_equals_in_a_condition)
{
    cr_assert_eq(parse_src("trigger t {\n  on \"A\"\n  when x = 1\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:3:10: error: \"=\" is not a comparison: write \"==\""),
              "%s", errors());
}

Test(parse, missing_operand)
{
    cr_assert_eq(parse_src("trigger t {\n  on \"A\"\n  when a and\n}"), 1);
    cr_assert(strstr(errors(), "t.rules:4:1: error: expected an expression, found \"}\""), "%s",
              errors());
}

Test(parse, keyword_in_expression_position)
{
    cr_assert_eq(parse_src("trigger t { on \"A\" when limit > 1 }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:25: error: expected an expression, found the keyword "
                               "\"limit\""),
              "%s", errors());
}

Test(parse, percentage_outside_holdout)
{
    cr_assert_eq(parse_src("trigger t { on \"A\" when x > 5% }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:29: error: a percentage is only allowed after "
                               "\"holdout\""),
              "%s", errors());
}

Test(parse, in_without_a_list)
{
    cr_assert_eq(parse_src("trigger t { on \"A\" when x in \"a\" }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:30: error: expected a list after \"in\""), "%s",
              errors());
}

Test(parse, ends_outside_path)
{
    cr_assert_eq(parse_src("trigger t { on \"A\" when x ends [\"a\"] }"), 1);
    cr_assert(strstr(errors(), "\"ends\" applies to path only"), "%s", errors());
}

Test(parse, unknown_named_argument)
{
    cr_assert_eq(parse_src("trigger t { on \"A\" when count(\"A\", during: 5m) > 1 }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:36: error: unknown argument \"during\""), "%s", errors());
}

Test(parse, unknown_declaration_with_a_suggestion)
{
    cr_assert_eq(parse_src("trigegr t { on \"A\" }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:1: error: unknown declaration \"trigegr\" (did you "
                               "mean \"trigger\"?)"),
              "%s", errors());
}

Test(parse, empty_event_name)
{
    cr_assert_eq(parse_src("trigger t { on \"\" }"), 1);
    cr_assert(strstr(errors(), "t.rules:1:16: error: event name is empty"), "%s", errors());
}

Test(parse, lexer_errors_are_reported_once)
{
    cr_assert_eq(parse_src("trigger t { on idle 5x }"), 1, "%s", errors());
    cr_assert(strstr(errors(), "bad duration \"5x\""), "%s", errors());
    cr_assert_null(strstr(errors(), "expected"), "a second message for the same token: %s",
                   errors());
}

Test(parse, errors_are_reported_in_later_declarations)
{
    cr_assert_eq(parse_src("trigger a {\n"
                           "  on \"A\"\n"
                           "  when x = 1\n"
                           "}\n"
                           "label OK = \"fine\"\n"
                           "trigger b { on }\n"
                           "segment s {\n"
                           "  enter on \"X\" when (a\n"
                           "}\n"),
                 3, "%s", errors());
    const char *e = errors();
    const char *first = strstr(e, "t.rules:3:10: error:");
    const char *second = strstr(e, "t.rules:6:16: error: expected an event name");
    const char *third = strstr(e, "t.rules:9:1: error: expected \")\", found \"}\"");
    cr_assert(first && second && third, "%s", e);
    cr_assert(first < second && second < third, "errors out of order: %s", e);
    /* the good declaration between two bad ones is kept */
    cr_assert_eq(P.f.nlabels, 1);
    cr_assert_str_eq(P.f.labels[0].name, "OK");
}

Test(parse, recovers_at_the_declaration_after_a_missing_brace)
{
    /* the classic slip: a "}" forgotten; the next trigger starts at column 1 */
    cr_assert_eq(parse_src("trigger a {\n"
                           "  on \"A\"\n"
                           "trigger b {\n"
                           "  on idle\n"
                           "}\n"),
                 2, "%s", errors());
    cr_assert(strstr(errors(), "t.rules:3:1: error:"), "%s", errors());
    cr_assert(strstr(errors(), "t.rules:5:1: error: expected a duration after \"idle\""), "%s",
              errors());
}

Test(parse, stops_after_too_many_errors)
{
    onr_buf src = {0};
    for (int i = 0; i < 60; i++)
        onr_buf_printf(&src, "trigger t%d { on }\n", i);
    int n = parse_src(onr_buf_cstr(&src));
    cr_assert_geq(n, RULE_MAX_ERRORS);
    cr_assert(strstr(errors(), "too many errors, stopping"), "%s", errors());
    /* one message per error up to the limit, then one line saying so */
    int lines = 0;
    for (const char *p = errors(); (p = strstr(p, ": error: ")); p++)
        lines++;
    cr_assert_eq(lines, RULE_MAX_ERRORS);
    onr_buf_free(&src);
}

Test(parse, deep_nesting_is_an_error_not_a_crash)
{
    onr_buf src = {0};
    onr_buf_puts(&src, "trigger t { on \"A\" when ");
    for (int i = 0; i < 200; i++)
        onr_buf_putc(&src, '(');
    onr_buf_putc(&src, 'x');
    for (int i = 0; i < 200; i++)
        onr_buf_putc(&src, ')');
    onr_buf_puts(&src, " }\n");
    cr_assert_eq(parse_src(onr_buf_cstr(&src)), 1);
    cr_assert(strstr(errors(), "nested more than"), "%s", errors());
    onr_buf_free(&src);
}

Test(parse, long_chain_of_minus_signs_is_an_error_not_a_crash)
{
    onr_buf src = {0};
    onr_buf_puts(&src, "trigger t { on \"A\" when ");
    for (int i = 0; i < 500000; i++)
        onr_buf_putc(&src, '-');
    onr_buf_puts(&src, "1 > 0 }\n");
    /* a source under the size limit must not overflow the parser's stack */
    cr_assert_geq(parse_src(onr_buf_cstr(&src)), 1);
    cr_assert(strstr(errors(), "t.rules:1:"), "%s", errors());
    onr_buf_free(&src);
}
