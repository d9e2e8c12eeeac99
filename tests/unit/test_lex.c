/*
 * test_lex.c - unit tests for the rule language's lexer (src/rules/lex.c): identifiers,
 * strings and their escapes, numbers, durations, percentages, punctuation, comments,
 * line:col tracking, and the errors it reports with their positions.
 */
#include "rules/rules_int.h"

#include <criterion/criterion.h>
#include <string.h>

typedef struct lexfix {
    onr_arena arena;
    onr_buf out;
    rdiag diag;
    lexer lx;
} lexfix;

static lexfix F;

static void lx_open(const char *src)
{
    onr_arena_init(&F.arena, 1024);
    F.out = (onr_buf){0};
    F.diag = (rdiag){.path = "t.rules", .src = src, .len = strlen(src), .out = &F.out};
    lex_init(&F.lx, src, strlen(src), &F.arena, &F.diag);
}

static void lx_close(void)
{
    onr_arena_free(&F.arena);
    onr_buf_free(&F.out);
}

static token next_tok(void)
{
    return lex_next(&F.lx);
}

static const char *errors(void)
{
    return onr_buf_cstr(&F.out);
}

static void expect_kinds(const char *src, const tok_kind *kinds, size_t n)
{
    lx_open(src);
    for (size_t i = 0; i < n; i++) {
        token t = next_tok();
        cr_assert_eq(t.kind, kinds[i], "%s: token %zu is %s, want %s", src, i,
                     tok_kind_name(t.kind), tok_kind_name(kinds[i]));
    }
    cr_assert_eq(next_tok().kind, T_EOF, "%s: extra tokens", src);
    cr_assert_eq(F.diag.errors, 0, "%s", errors());
    lx_close();
}

static int64_t duration_of(const char *src)
{
    lx_open(src);
    token t = next_tok();
    cr_assert_eq(t.kind, T_DURATION, "%s lexes as %s: %s", src, tok_kind_name(t.kind), errors());
    cr_assert_eq(next_tok().kind, T_EOF, "%s: extra tokens", src);
    int64_t ms = t.ms;
    lx_close();
    return ms;
}

/* ---- identifiers */

Test(lex, reads_identifiers_with_underscores_and_digits)
{
    lx_open("time_to_first_action ERROR_500 _x a1");
    const char *want[] = {"time_to_first_action", "ERROR_500", "_x", "a1"};
    for (int i = 0; i < 4; i++) {
        token t = next_tok();
        cr_assert_eq(t.kind, T_IDENT);
        cr_assert_str_eq(t.str, want[i]);
        cr_assert_eq(t.str_len, strlen(want[i]));
        cr_assert_eq(t.end - t.start, strlen(want[i]));
    }
    cr_assert_eq(next_tok().kind, T_EOF);
    lx_close();
}

Test(lex, keywords_are_plain_identifiers)
{
    lx_open("trigger on when");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(next_tok().kind, T_IDENT);
    lx_close();
}

Test(lex, dotted_names_are_separate_tokens)
{
    static const tok_kind k[] = {T_IDENT, T_DOT, T_IDENT, T_DOT, T_IDENT};
    expect_kinds("props.plan.name", k, 5);
}

/* ---- strings */

Test(lex, reads_a_string_without_its_quotes)
{
    lx_open("\"Signed Up\"");
    token t = next_tok();
    cr_assert_eq(t.kind, T_STRING);
    cr_assert_str_eq(t.str, "Signed Up");
    cr_assert_eq(t.str_len, 9);
    cr_assert_eq(t.start, 0);
    cr_assert_eq(t.end, 11, "the span includes the quotes");
    lx_close();
}

Test(lex, unescapes_string_escapes)
{
    lx_open("\"a\\\"b\\\\c\\/d\\ne\\tf\"");
    token t = next_tok();
    cr_assert_eq(t.kind, T_STRING, "%s", errors());
    cr_assert_str_eq(t.str, "a\"b\\c/d\ne\tf");
    cr_assert_eq(t.str_len, 11);
    lx_close();
}

Test(lex, encodes_unicode_escapes_as_utf8)
{
    lx_open("\"\\u0041\\u00e9\\u20AC\"");
    token t = next_tok();
    cr_assert_eq(t.kind, T_STRING, "%s", errors());
    cr_assert_str_eq(t.str, "A\xc3\xa9\xe2\x82\xac");
    cr_assert_eq(t.str_len, 6);
    lx_close();
}

Test(lex, reads_an_empty_string_and_utf8_text)
{
    lx_open("\"\" \"caf\xc3\xa9\"");
    token t = next_tok();
    cr_assert_eq(t.kind, T_STRING);
    cr_assert_eq(t.str_len, 0);
    cr_assert_str_eq(t.str, "");
    t = next_tok();
    cr_assert_eq(t.kind, T_STRING);
    cr_assert_str_eq(t.str, "caf\xc3\xa9");
    lx_close();
}

/* ---- numbers, durations, percentages */

Test(lex, reads_integers_and_decimals)
{
    lx_open("42 3.25 0");
    token t = next_tok();
    cr_assert_eq(t.kind, T_NUMBER);
    cr_assert_eq(t.num, 42);
    t = next_tok();
    cr_assert_eq(t.kind, T_NUMBER);
    cr_assert_eq(t.num, 3.25);
    t = next_tok();
    cr_assert_eq(t.kind, T_NUMBER);
    cr_assert_eq(t.num, 0);
    lx_close();
}

Test(lex, a_minus_sign_is_its_own_token)
{
    lx_open("-3");
    cr_assert_eq(next_tok().kind, T_MINUS);
    token t = next_tok();
    cr_assert_eq(t.kind, T_NUMBER);
    cr_assert_eq(t.num, 3);
    lx_close();
}

Test(lex, a_trailing_dot_is_not_part_of_a_number)
{
    static const tok_kind k[] = {T_NUMBER, T_DOT, T_IDENT};
    expect_kinds("1.x", k, 3);
}

Test(lex, reads_durations_in_every_unit)
{
    cr_assert_eq(duration_of("250ms"), 250);
    cr_assert_eq(duration_of("90s"), 90 * ONR_SECOND_MS);
    cr_assert_eq(duration_of("2m"), 2 * ONR_MINUTE_MS);
    cr_assert_eq(duration_of("1h"), ONR_HOUR_MS);
    cr_assert_eq(duration_of("3d"), 3 * ONR_DAY_MS);
}

Test(lex, reads_compound_and_fractional_durations)
{
    cr_assert_eq(duration_of("1h30m"), 90 * ONR_MINUTE_MS);
    cr_assert_eq(duration_of("1d2h3m4s5ms"),
                 ONR_DAY_MS + 2 * ONR_HOUR_MS + 3 * ONR_MINUTE_MS + 4 * ONR_SECOND_MS + 5);
    cr_assert_eq(duration_of("1.5h"), 90 * ONR_MINUTE_MS);
    cr_assert_eq(duration_of("0s"), 0);
}

Test(lex, reads_percentages)
{
    lx_open("10% 12.5%");
    token t = next_tok();
    cr_assert_eq(t.kind, T_PERCENT);
    cr_assert_eq(t.num, 10);
    t = next_tok();
    cr_assert_eq(t.kind, T_PERCENT);
    cr_assert_eq(t.num, 12.5);
    lx_close();
}

/* ---- punctuation */

Test(lex, reads_single_character_punctuation)
{
    static const tok_kind k[] = {T_LBRACE, T_RBRACE, T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK,
                                 T_COMMA,  T_COLON,  T_DOT,    T_PLUS,   T_MINUS,  T_STAR,
                                 T_SLASH,  T_LT,     T_GT,     T_ASSIGN};
    expect_kinds("{ } ( ) [ ] , : . + - * / < > =", k, ONR_ARRAY_LEN(k));
}

Test(lex, reads_two_character_operators)
{
    static const tok_kind k[] = {T_EQ, T_NE, T_LE, T_GE, T_COALESCE};
    expect_kinds("== != <= >= ??", k, ONR_ARRAY_LEN(k));
}

Test(lex, two_character_operators_need_no_spaces)
{
    static const tok_kind k[] = {T_IDENT, T_LE, T_NUMBER,   T_IDENT, T_COALESCE,
                                 T_IDENT, T_GE, T_DURATION, T_NE,    T_STRING};
    expect_kinds("a<=1 b??c>=5m!=\"x\"", k, ONR_ARRAY_LEN(k));
}

Test(lex, a_single_equals_is_assign_not_eq)
{
    static const tok_kind k[] = {T_ASSIGN, T_ASSIGN, T_EQ};
    expect_kinds("= = ==", k, ONR_ARRAY_LEN(k));
}

/* ---- comments and positions */

Test(lex, skips_hash_and_slash_slash_comments)
{
    lx_open("# a comment \"not a string\nfoo // another ! ?\n  bar # tail");
    token t = next_tok();
    cr_assert_eq(t.kind, T_IDENT);
    cr_assert_str_eq(t.str, "foo");
    cr_assert_eq(t.line, 2);
    cr_assert_eq(t.col, 1);
    t = next_tok();
    cr_assert_str_eq(t.str, "bar");
    cr_assert_eq(t.line, 3);
    cr_assert_eq(t.col, 3);
    cr_assert_eq(next_tok().kind, T_EOF);
    cr_assert_eq(F.diag.errors, 0, "%s", errors());
    lx_close();
}

Test(lex, a_single_slash_is_division_not_a_comment)
{
    static const tok_kind k[] = {T_IDENT, T_SLASH, T_NUMBER};
    expect_kinds("a / 2 // half", k, ONR_ARRAY_LEN(k));
}

Test(lex, tracks_lines_and_columns)
{
    lx_open("trigger t {\n    on \"A\"\n\twhen x >= 2m\n}");
    struct {
        tok_kind k;
        int line, col;
    } want[] = {
        {T_IDENT, 1, 1},     {T_IDENT, 1, 9},  {T_LBRACE, 1, 11}, {T_IDENT, 2, 5},
        {T_STRING, 2, 8},    {T_IDENT, 3, 2},  {T_IDENT, 3, 7},   {T_GE, 3, 9},
        {T_DURATION, 3, 12}, {T_RBRACE, 4, 1}, {T_EOF, 4, 2},
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(want); i++) {
        token t = next_tok();
        cr_assert_eq(t.kind, want[i].k, "token %zu: %s", i, tok_kind_name(t.kind));
        cr_assert_eq(t.line, want[i].line, "token %zu: line %d", i, t.line);
        cr_assert_eq(t.col, want[i].col, "token %zu: col %d", i, t.col);
    }
    lx_close();
}

Test(lex, counts_a_multibyte_character_as_one_column)
{
    lx_open("\"caf\xc3\xa9\" x");
    next_tok();
    token t = next_tok();
    cr_assert_eq(t.kind, T_IDENT);
    cr_assert_eq(t.col, 8);
    cr_assert_eq(t.start, 8, "byte offsets still count bytes");
    lx_close();
}

Test(lex, keeps_returning_eof_at_the_end)
{
    lx_open("x  ");
    cr_assert_eq(next_tok().kind, T_IDENT);
    cr_assert_eq(next_tok().kind, T_EOF);
    cr_assert_eq(next_tok().kind, T_EOF);
    lx_close();
}

/* ---- errors */

Test(lex, reports_an_unterminated_string_at_its_opening_quote)
{
    lx_open("on  \"Signed Up\n\"x\"");
    cr_assert_eq(next_tok().kind, T_IDENT);
    token t = next_tok();
    cr_assert_eq(t.kind, T_ERROR);
    cr_assert_eq(F.diag.errors, 1);
    cr_assert(strstr(errors(), "t.rules:1:5: error: unterminated string\n"), "%s", errors());
    cr_assert(strstr(errors(), "    on  \"Signed Up\n        ^\n"), "no caret: %s", errors());
    /* scanning continues on the next line */
    t = next_tok();
    cr_assert_eq(t.line, 2);
    lx_close();
}

Test(lex, reports_a_string_cut_by_the_end_of_the_file)
{
    lx_open("\"abc");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:1: error: unterminated string"), "%s", errors());
    cr_assert_eq(next_tok().kind, T_EOF);
    lx_close();
}

Test(lex, reports_an_unknown_escape_at_the_backslash)
{
    lx_open("x \"ab\\qc\"");
    next_tok();
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert_eq(F.diag.errors, 1);
    cr_assert(strstr(errors(), "t.rules:1:6: error: unknown escape \"\\q\" in string"), "%s",
              errors());
    lx_close();
}

Test(lex, reports_a_short_unicode_escape)
{
    lx_open("\"\\u12G4\"");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:2: error: bad \\u escape: expected 4 hex digits"), "%s",
              errors());
    lx_close();
}

Test(lex, reports_a_duration_with_an_unknown_unit)
{
    lx_open("idle > 5x");
    next_tok();
    next_tok();
    token t = next_tok();
    cr_assert_eq(t.kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:8: error: bad duration \"5x\": use a number and a "
                               "unit: ms, s, m, h or d"),
              "%s", errors());
    cr_assert(strstr(errors(), "       ^~\n"), "the caret spans the duration: %s", errors());
    cr_assert_eq(next_tok().kind, T_EOF, "the bad duration is consumed whole");
    lx_close();
}

Test(lex, rejects_spelled_out_units)
{
    lx_open("5min");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "bad duration \"5min\""), "%s", errors());
    lx_close();
}

Test(lex, reports_a_number_without_a_unit_inside_a_duration)
{
    lx_open("1h30");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:1: error: bad duration \"1h30\": each number needs a "
                               "unit"),
              "%s", errors());
    lx_close();
}

Test(lex, rejects_durations_that_are_not_whole_milliseconds)
{
    lx_open("1.5ms");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "whole number of milliseconds"), "%s", errors());
    lx_close();
}

Test(lex, reports_a_stray_bang_with_a_hint)
{
    lx_open("a ! b");
    next_tok();
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:3: error: unexpected \"!\": write \"not\" or \"!=\""),
              "%s", errors());
    token t = next_tok();
    cr_assert_eq(t.kind, T_IDENT, "lexing goes on after the error");
    cr_assert_str_eq(t.str, "b");
    lx_close();
}

Test(lex, reports_a_single_question_mark)
{
    lx_open("a ? b");
    next_tok();
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert(strstr(errors(), "t.rules:1:3: error: unexpected \"?\": did you mean \"??\""), "%s",
              errors());
    lx_close();
}

Test(lex, reports_unexpected_characters_and_bytes)
{
    lx_open("@ \xc3\xa9 x");
    cr_assert_eq(next_tok().kind, T_ERROR);
    cr_assert_eq(next_tok().kind, T_ERROR);
    token t = next_tok();
    cr_assert_eq(t.kind, T_IDENT, "a multibyte character is skipped whole");
    cr_assert_eq(t.col, 5);
    cr_assert_eq(F.diag.errors, 2);
    cr_assert(strstr(errors(), "t.rules:1:1: error: unexpected character \"@\""), "%s", errors());
    cr_assert(strstr(errors(), "t.rules:1:3: error: unexpected character (byte 0xc3)"), "%s",
              errors());
    lx_close();
}

Test(lex, names_every_token_kind_for_messages)
{
    cr_assert_str_eq(tok_kind_name(T_EOF), "end of file");
    cr_assert_str_eq(tok_kind_name(T_COALESCE), "\"??\"");
    cr_assert_str_eq(tok_kind_name(T_DURATION), "duration");
    for (int k = T_EOF; k <= T_ERROR; k++)
        cr_assert_str_neq(tok_kind_name((tok_kind)k), "token", "kind %d has no name", k);
}
