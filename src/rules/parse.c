/*
 * parse.c - recursive-descent parser for .rules files: labels, segments, triggers and
 * destinations, and the expression language inside them. Errors are reported with
 * file:line:col and the parser resynchronises at the next declaration, so one run shows
 * every syntax error.
 */
#include "rules_int.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

typedef struct parser {
    lexer lx;
    token tok, prev;
    token ahead;
    bool has_ahead;
    onr_arena *arena;
    rdiag *diag;
    jmp_buf fail; /* unwinds to the declaration loop on a syntax error */
    int depth;
} parser;

#define MAX_DEPTH 48
#define MAX_TREE_DEPTH 256

static void next(parser *p)
{
    p->prev = p->tok;
    if (p->has_ahead) {
        p->tok = p->ahead;
        p->has_ahead = false;
    } else {
        p->tok = lex_next(&p->lx);
    }
}

static token peek2(parser *p)
{
    if (!p->has_ahead) {
        p->ahead = lex_next(&p->lx);
        p->has_ahead = true;
    }
    return p->ahead;
}

static int tok_width(const token *t)
{
    int w = (int)(t->end - t->start);
    return w > 0 ? w : 1;
}

static void describe_tok(const parser *p, const token *t, char *out, size_t cap)
{
    if (t->kind == T_EOF || t->kind == T_ERROR) {
        snprintf(out, cap, "%s", tok_kind_name(t->kind));
        return;
    }
    int n = (int)(t->end - t->start);
    if (n > 40)
        n = 40;
    if (t->kind == T_STRING) /* already in quotes */
        snprintf(out, cap, "%.*s%s", n, p->lx.src + t->start,
                 n < (int)(t->end - t->start) ? "...\"" : "");
    else
        snprintf(out, cap, "\"%.*s\"", n, p->lx.src + t->start);
}

static _Noreturn void fail_at(parser *p, const token *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static _Noreturn void fail_at(parser *p, const token *t, const char *fmt, ...)
{
    if (t->kind != T_ERROR) { /* the lexer already said what was wrong */
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        rdiag_error(p->diag, t->line, t->col, tok_width(t), "%s", msg);
    }
    longjmp(p->fail, 1);
}

static _Noreturn void expected(parser *p, const char *what)
{
    char got[64];
    describe_tok(p, &p->tok, got, sizeof(got));
    fail_at(p, &p->tok, "expected %s, found %s", what, got);
}

static bool is_word(const token *t, const char *w)
{
    return t->kind == T_IDENT && strcmp(t->str, w) == 0;
}

static bool accept_word(parser *p, const char *w)
{
    if (is_word(&p->tok, w)) {
        next(p);
        return true;
    }
    return false;
}

static void expect_word(parser *p, const char *w)
{
    if (!accept_word(p, w)) {
        char what[64];
        snprintf(what, sizeof(what), "\"%s\"", w);
        expected(p, what);
    }
}

static bool accept(parser *p, tok_kind k)
{
    if (p->tok.kind == k) {
        next(p);
        return true;
    }
    return false;
}

static void expect(parser *p, tok_kind k)
{
    if (!accept(p, k))
        expected(p, tok_kind_name(k));
}

/* Keywords that cannot name a label, segment, trigger or destination. */
static const char *const reserved[] = {
    "and",      "or",          "not",   "in",     "true",     "false",       "null",
    "on",       "when",        "where", "unless", "within",   "label",       "segment",
    "trigger",  "destination", "do",    "limit",  "once",     "per",         "cooldown",
    "holdout",  "enter",       "exit",  "idle",   "session",  "starts_with", "ends_with",
    "contains", "ends",        "page",  "screen", "identify", "group",       "alias",
    "track",    "any",
};

static bool is_reserved(const char *s)
{
    for (size_t i = 0; i < ONR_ARRAY_LEN(reserved); i++)
        if (strcmp(reserved[i], s) == 0)
            return true;
    return false;
}

static const char *expect_name(parser *p, const char *what)
{
    if (p->tok.kind != T_IDENT) {
        char w[96];
        snprintf(w, sizeof(w), "%s name", what);
        expected(p, w);
    }
    if (is_reserved(p->tok.str))
        fail_at(p, &p->tok, "\"%s\" is a keyword and cannot name a %s", p->tok.str, what);
    if (p->tok.str_len > RULE_MAX_NAME)
        fail_at(p, &p->tok, "%s name is longer than %d characters", what, RULE_MAX_NAME);
    const char *s = p->tok.str;
    next(p);
    return s;
}

static void *alloc(parser *p, size_t n)
{
    return onr_arena_alloc(p->arena, n);
}

/* Appends x to a growable arena array (copying: fine for the small sizes here). */
#define PUSH(p, arr, n, x)                                                                         \
    do {                                                                                           \
        void *grown_ = alloc((p), sizeof(*(arr)) * (size_t)((n) + 1));                             \
        if ((n) > 0)                                                                               \
            memcpy(grown_, (arr), sizeof(*(arr)) * (size_t)(n));                                   \
        (arr) = grown_;                                                                            \
        (arr)[(n)++] = (x);                                                                        \
    } while (0)

static node *new_node(parser *p, node_kind k, const token *at)
{
    node *n = alloc(p, sizeof(*n));
    n->kind = k;
    n->line = at->line;
    n->col = at->col;
    n->start = at->start;
    n->end = at->end;
    n->slot = -1;
    return n;
}

/* ---- expressions */

static node *parse_expr(parser *p);

static node *parse_list(parser *p)
{
    node *n = new_node(p, N_LIST, &p->tok);
    expect(p, T_LBRACK);
    if (p->tok.kind != T_RBRACK) {
        do {
            node *item = parse_expr(p);
            PUSH(p, n->items, n->nitems, item);
            if (n->nitems > 256)
                fail_at(p, &p->prev, "list has more than 256 items");
        } while (accept(p, T_COMMA));
    }
    expect(p, T_RBRACK);
    n->end = p->prev.end;
    return n;
}

static node *parse_call(parser *p, node *n)
{
    n->kind = N_CALL;
    expect(p, T_LPAREN);
    if (p->tok.kind != T_RPAREN) {
        do {
            if (p->tok.kind == T_IDENT && peek2(p).kind == T_COLON) {
                token key = p->tok;
                next(p);
                next(p);
                if (strcmp(key.str, "within") != 0)
                    fail_at(p, &key,
                            "unknown argument \"%s\": the only named argument is "
                            "\"within\"",
                            key.str);
                if (n->has_within)
                    fail_at(p, &key, "\"within\" given twice");
                if (p->tok.kind != T_DURATION)
                    expected(p, "a duration after \"within:\" (like 5m)");
                n->within_ms = p->tok.ms;
                n->has_within = true;
                next(p);
                continue;
            }
            if (n->has_within)
                fail_at(p, &p->tok, "positional arguments must come before \"within:\"");
            node *arg = parse_expr(p);
            PUSH(p, n->items, n->nitems, arg);
            if (n->nitems > RULE_MAX_SEQ_STEPS)
                fail_at(p, &p->prev, "too many arguments (at most %d)", RULE_MAX_SEQ_STEPS);
        } while (accept(p, T_COMMA));
    }
    expect(p, T_RPAREN);
    n->end = p->prev.end;
    return n;
}

static node *parse_primary(parser *p)
{
    token t = p->tok;
    node *n;
    switch (t.kind) {
    case T_NUMBER:
        next(p);
        n = new_node(p, N_NUM, &t);
        n->num = t.num;
        return n;
    case T_DURATION:
        next(p);
        n = new_node(p, N_DUR, &t);
        n->ms = t.ms;
        return n;
    case T_STRING:
        next(p);
        n = new_node(p, N_STR, &t);
        n->str = t.str;
        n->str_len = t.str_len;
        return n;
    case T_PERCENT:
        fail_at(p, &t, "a percentage is only allowed after \"holdout\"");
    case T_LPAREN: {
        next(p);
        n = parse_expr(p);
        expect(p, T_RPAREN);
        n->start = t.start; /* the span includes the parentheses */
        n->line = t.line;
        n->col = t.col;
        n->end = p->prev.end;
        return n;
    }
    case T_LBRACK:
        return parse_list(p);
    case T_IDENT:
        break;
    default:
        expected(p, "an expression");
    }
    if (is_word(&t, "true") || is_word(&t, "false")) {
        next(p);
        n = new_node(p, N_BOOL, &t);
        n->b = t.str[0] == 't';
        return n;
    }
    if (is_word(&t, "null")) {
        next(p);
        return new_node(p, N_NULL, &t);
    }
    if (is_reserved(t.str) && !is_word(&t, "idle") && !is_word(&t, "session") &&
        !is_word(&t, "page") && !is_word(&t, "screen") && !is_word(&t, "identify") &&
        !is_word(&t, "group") && !is_word(&t, "alias") && !is_word(&t, "track") &&
        !is_word(&t, "any")) {
        char got[64];
        describe_tok(p, &t, got, sizeof(got));
        fail_at(p, &t, "expected an expression, found the keyword %s", got);
    }
    next(p);
    n = new_node(p, N_NAME, &t);
    /* dotted names: props.plan.name, trait.plan, session.duration (built on the stack:
     * a syntax error unwinds with longjmp, so nothing here may own heap memory) */
    char name[RULE_MAX_NAME * 4 + 1];
    size_t len = strlen(t.str);
    memcpy(name, t.str, len);
    while (p->tok.kind == T_DOT) {
        next(p);
        if (p->tok.kind != T_IDENT && p->tok.kind != T_STRING)
            expected(p, "a name after \".\"");
        if (len + 1 + p->tok.str_len >= sizeof(name))
            fail_at(p, &p->tok, "name is longer than %d characters", (int)sizeof(name) - 1);
        name[len++] = '.';
        memcpy(name + len, p->tok.str, p->tok.str_len);
        len += p->tok.str_len;
        next(p);
        n->end = p->prev.end;
    }
    n->str = onr_arena_strndup(p->arena, name, len);
    n->str_len = (uint32_t)len;
    if (p->tok.kind == T_LPAREN)
        return parse_call(p, n);
    return n;
}

static node *parse_unary(parser *p)
{
    if (p->tok.kind == T_MINUS) {
        token t = p->tok;
        next(p);
        if (++p->depth > MAX_DEPTH)
            fail_at(p, &t, "expression is nested more than %d levels deep", MAX_DEPTH);
        node *n = new_node(p, N_NEG, &t);
        n->a = parse_unary(p);
        n->end = n->a->end;
        n->depth = n->a->depth + 1;
        p->depth--;
        return n;
    }
    return parse_primary(p);
}

static node *binary(parser *p, bin_op op, node *l, node *r, const token *at)
{
    node *n = new_node(p, N_BINARY, at);
    n->op = op;
    n->a = l;
    n->b2 = r;
    n->depth = ONR_MAX(l->depth, r->depth) + 1;
    if (n->depth > MAX_TREE_DEPTH)
        fail_at(p, at, "expression is too long: more than %d operators in a row", MAX_TREE_DEPTH);
    n->line = l->line;
    n->col = l->col;
    n->start = l->start;
    n->end = r->end;
    return n;
}

/* One left-associative level: operand { op operand }, ops given as token -> operator. */
typedef struct level_op {
    tok_kind tok;
    bin_op op;
} level_op;

static node *parse_level(parser *p, node *(*operand)(parser *), const level_op *ops, int nops)
{
    node *l = operand(p);
    for (;;) {
        token t = p->tok;
        int k = 0;
        while (k < nops && ops[k].tok != t.kind)
            k++;
        if (k == nops)
            return l;
        next(p);
        l = binary(p, ops[k].op, l, operand(p), &t);
    }
}

static node *parse_mul(parser *p)
{
    static const level_op ops[] = {{T_STAR, B_MUL}, {T_SLASH, B_DIV}};
    return parse_level(p, parse_unary, ops, 2);
}

static node *parse_add(parser *p)
{
    static const level_op ops[] = {{T_PLUS, B_ADD}, {T_MINUS, B_SUB}};
    return parse_level(p, parse_mul, ops, 2);
}

static node *parse_coalesce(parser *p)
{
    static const level_op ops[] = {{T_COALESCE, B_COALESCE}};
    return parse_level(p, parse_add, ops, 1);
}

static node *parse_cmp(parser *p)
{
    node *l = parse_coalesce(p);
    token t = p->tok;
    bin_op op;
    switch (t.kind) {
    case T_EQ:
        op = B_EQ;
        break;
    case T_NE:
        op = B_NE;
        break;
    case T_LT:
        op = B_LT;
        break;
    case T_LE:
        op = B_LE;
        break;
    case T_GT:
        op = B_GT;
        break;
    case T_GE:
        op = B_GE;
        break;
    case T_ASSIGN:
        fail_at(p, &t, "\"=\" is not a comparison: write \"==\"");
    case T_IDENT:
        if (l->kind == N_NAME && strcmp(l->str, "path") == 0 &&
            (is_word(&t, "ends") || is_word(&t, "contains"))) {
            next(p);
            node *n = new_node(p, N_PATH, &t);
            n->path_ends = t.str[0] == 'e';
            n->line = l->line;
            n->col = l->col;
            n->start = l->start;
            if (p->tok.kind != T_LBRACK)
                expected(p, "a list of features, like [\"settings\", \"dashboard\"]");
            n->a = parse_list(p);
            n->end = n->a->end;
            return n;
        }
        if (is_word(&t, "ends"))
            fail_at(p, &t,
                    "\"ends\" applies to path only: \"path ends [...]\"; for strings "
                    "use \"ends_with\"");
        if (is_word(&t, "in")) {
            next(p);
            if (p->tok.kind != T_LBRACK)
                expected(p, "a list after \"in\", like [\"a\", \"b\"]");
            return binary(p, B_IN, l, parse_list(p), &t);
        }
        token after_not = peek2(p);
        if (is_word(&t, "not") && is_word(&after_not, "in")) {
            next(p);
            next(p);
            if (p->tok.kind != T_LBRACK)
                expected(p, "a list after \"not in\", like [\"a\", \"b\"]");
            return binary(p, B_NOT_IN, l, parse_list(p), &t);
        }
        if (is_word(&t, "starts_with"))
            op = B_STARTS_WITH;
        else if (is_word(&t, "ends_with"))
            op = B_ENDS_WITH;
        else if (is_word(&t, "contains"))
            op = B_CONTAINS;
        else
            return l;
        break;
    default:
        return l;
    }
    next(p);
    node *r = parse_coalesce(p);
    node *n = binary(p, op, l, r, &t);
    token after = p->tok;
    if (after.kind == T_EQ || after.kind == T_NE || after.kind == T_LT || after.kind == T_LE ||
        after.kind == T_GT || after.kind == T_GE)
        fail_at(p, &after, "comparisons do not chain: write \"a < b and b < c\"");
    return n;
}

static node *parse_not(parser *p)
{
    if (is_word(&p->tok, "not")) {
        token t = p->tok;
        next(p);
        if (++p->depth > MAX_DEPTH)
            fail_at(p, &t, "expression is nested more than %d levels deep", MAX_DEPTH);
        node *n = new_node(p, N_NOT, &t);
        n->a = parse_not(p);
        n->end = n->a->end;
        n->depth = n->a->depth + 1;
        p->depth--;
        return n;
    }
    return parse_cmp(p);
}

static node *parse_and(parser *p)
{
    node *l = parse_not(p);
    while (is_word(&p->tok, "and")) {
        token t = p->tok;
        next(p);
        l = binary(p, B_AND, l, parse_not(p), &t);
    }
    return l;
}

static node *parse_expr(parser *p)
{
    if (++p->depth > MAX_DEPTH)
        fail_at(p, &p->tok, "expression is nested more than %d levels deep", MAX_DEPTH);
    node *l = parse_and(p);
    while (is_word(&p->tok, "or")) {
        token t = p->tok;
        next(p);
        l = binary(p, B_OR, l, parse_and(p), &t);
    }
    p->depth--;
    return l;
}

/* ---- declarations */

static ref *new_ref(parser *p, ref_kind k, const token *t)
{
    ref *r = alloc(p, sizeof(*r));
    r->kind = k;
    r->line = t->line;
    r->col = t->col;
    r->width = tok_width(t);
    r->matcher = -1;
    r->segment = -1;
    return r;
}

/* An event reference: "Name", LABEL, page, session start|end. */
static ref *parse_ref(parser *p, const char *ctx)
{
    token t = p->tok;
    if (t.kind == T_STRING) {
        next(p);
        if (t.str_len == 0)
            fail_at(p, &t, "event name is empty");
        if (t.str_len > TRK_MAX_NAME_BYTES)
            fail_at(p, &t, "event name is longer than %d bytes", TRK_MAX_NAME_BYTES);
        ref *r = new_ref(p, REF_NAME, &t);
        r->name = t.str;
        return r;
    }
    if (is_word(&t, "session")) {
        next(p);
        token w = p->tok;
        if (accept_word(p, "start") || accept_word(p, "end")) {
            ref *r = new_ref(p, w.str[0] == 's' ? REF_SESSION_START : REF_SESSION_END, &t);
            r->width = (int)(w.end - t.start);
            r->name = w.str[0] == 's' ? "session start" : "session end";
            return r;
        }
        expected(p, "\"start\" or \"end\" after \"session\"");
    }
    if (t.kind == T_IDENT && (!is_reserved(t.str) || is_word(&t, "page") || is_word(&t, "screen") ||
                              is_word(&t, "identify") || is_word(&t, "group") ||
                              is_word(&t, "alias") || is_word(&t, "track") || is_word(&t, "any"))) {
        next(p);
        ref *r = new_ref(p, REF_IDENT, &t);
        r->name = t.str;
        return r;
    }
    char what[96];
    snprintf(what, sizeof(what), "an event name (\"Signed Up\") or a label %s", ctx);
    expected(p, what);
}

static void parse_label(parser *p, ast_file *f)
{
    ast_label l = {0};
    l.line = p->tok.line;
    l.col = p->tok.col;
    l.name = expect_name(p, "label");
    expect(p, T_ASSIGN);
    do {
        ref *r = parse_ref(p, "after \"=\"");
        if (r->kind == REF_SESSION_START || r->kind == REF_SESSION_END)
            fail_at(p, &p->prev, "a label matches events; \"%s\" is not an event", r->name);
        PUSH(p, l.pats, l.npats, r);
    } while (accept(p, T_COMMA));
    if (accept_word(p, "where"))
        l.where = parse_expr(p);
    PUSH(p, f->labels, f->nlabels, l);
}

static void parse_segment(parser *p, ast_file *f)
{
    ast_segment s = {0};
    s.line = p->tok.line;
    s.col = p->tok.col;
    s.name = expect_name(p, "segment");
    expect(p, T_LBRACE);
    while (!accept(p, T_RBRACE)) {
        token t = p->tok;
        if (accept_word(p, "when")) {
            if (s.live)
                fail_at(p, &t,
                        "segment \"%s\" already has a \"when\": combine the conditions "
                        "with \"and\" / \"or\"",
                        s.name);
            s.live = parse_expr(p);
        } else if (is_word(&t, "enter") || is_word(&t, "exit")) {
            next(p);
            ast_clause c = {0};
            c.enter = t.str[1] == 'n';
            c.line = t.line;
            c.col = t.col;
            if (accept_word(p, "on"))
                c.on = parse_ref(p, "after \"on\"");
            if (accept_word(p, "when"))
                c.when = parse_expr(p);
            if (!c.on && !c.when)
                expected(p, "\"on\" or \"when\"");
            if (s.nclauses >= 16)
                fail_at(p, &t, "a segment has at most 16 enter/exit clauses");
            PUSH(p, s.clauses, s.nclauses, c);
        } else {
            expected(p, "\"when\", \"enter\", \"exit\" or \"}\"");
        }
    }
    if (!s.live && s.nclauses == 0)
        rdiag_error(p->diag, s.line, s.col, (int)strlen(s.name),
                    "segment \"%s\" has no \"when\" or \"enter\"", s.name);
    if (s.live && s.nclauses > 0)
        rdiag_error(p->diag, s.line, s.col, (int)strlen(s.name),
                    "segment \"%s\" mixes \"when\" with \"enter\"/\"exit\": use one or the other",
                    s.name);
    bool any_enter = false;
    for (int i = 0; i < s.nclauses; i++)
        any_enter |= s.clauses[i].enter;
    if (!s.live && s.nclauses > 0 && !any_enter)
        rdiag_error(p->diag, s.line, s.col, (int)strlen(s.name),
                    "segment \"%s\" has \"exit\" but no \"enter\"", s.name);
    PUSH(p, f->segments, f->nsegments, s);
}

static void parse_on(parser *p, ast_trigger *tr)
{
    token t = p->tok;
    if (tr->has_on)
        fail_at(p, &p->prev, "trigger \"%s\" already has an \"on\"", tr->name);
    tr->has_on = true;
    if (accept_word(p, "idle")) {
        if (p->tok.kind != T_DURATION)
            expected(p, "a duration after \"idle\" (like 7m)");
        tr->on = ON_IDLE;
        tr->dur_ms = p->tok.ms;
        next(p);
        return;
    }
    if (is_word(&t, "enter") || is_word(&t, "exit")) {
        next(p);
        tr->on = t.str[1] == 'n' ? ON_ENTER : ON_EXIT;
        token s = p->tok;
        if (s.kind != T_IDENT)
            expected(p, "a segment name");
        next(p);
        tr->ev = new_ref(p, t.str[1] == 'n' ? REF_ENTER : REF_EXIT, &s);
        tr->ev->name = s.str;
        return;
    }
    tr->ev = parse_ref(p, "after \"on\"");
    if (tr->ev->kind == REF_SESSION_START || tr->ev->kind == REF_SESSION_END) {
        tr->on = tr->ev->kind == REF_SESSION_START ? ON_SESSION_START : ON_SESSION_END;
        return;
    }
    tr->on = ON_EVENT;
    if (accept_word(p, "where"))
        tr->where = parse_expr(p);
    if (accept_word(p, "unless")) {
        tr->on = ON_ABSENCE;
        tr->unless = parse_ref(p, "after \"unless\"");
        if (tr->unless->kind == REF_SESSION_START || tr->unless->kind == REF_SESSION_END)
            fail_at(p, &p->prev, "\"unless\" needs an event, not \"%s\"", tr->unless->name);
        expect_word(p, "within");
        if (p->tok.kind != T_DURATION)
            expected(p, "a duration after \"within\" (like 10m)");
        tr->dur_ms = p->tok.ms;
        next(p);
    }
}

static void parse_trigger(parser *p, ast_file *f)
{
    ast_trigger tr = {0};
    tr.line = p->tok.line;
    tr.col = p->tok.col;
    tr.name = expect_name(p, "trigger");
    expect(p, T_LBRACE);
    while (!accept(p, T_RBRACE)) {
        token t = p->tok;
        if (accept_word(p, "on")) {
            parse_on(p, &tr);
        } else if (accept_word(p, "when")) {
            if (tr.when)
                fail_at(p, &t,
                        "trigger \"%s\" already has a \"when\": combine the conditions "
                        "with \"and\" / \"or\"",
                        tr.name);
            tr.when = parse_expr(p);
        } else if (accept_word(p, "limit")) {
            if (tr.limit != LIMIT_NONE)
                fail_at(p, &t, "trigger \"%s\" already has a \"limit\"", tr.name);
            if (accept_word(p, "once")) {
                expect_word(p, "per");
                if (accept_word(p, "user")) {
                    tr.limit = LIMIT_ONCE;
                } else if (p->tok.kind == T_DURATION) {
                    tr.limit = LIMIT_ONCE_PER;
                    tr.limit_ms = p->tok.ms;
                    if (tr.limit_ms < RULE_MIN_ONCE_PER_MS)
                        fail_at(p, &p->tok,
                                "\"once per\" needs a window of at least 1s; for "
                                "shorter gaps use \"cooldown\"");
                    next(p);
                } else {
                    expected(p, "\"user\" or a duration after \"once per\"");
                }
            } else if (accept_word(p, "cooldown")) {
                if (p->tok.kind != T_DURATION)
                    expected(p, "a duration after \"cooldown\" (like 30m)");
                tr.limit = LIMIT_COOLDOWN;
                tr.limit_ms = p->tok.ms;
                next(p);
            } else {
                expected(p, "\"once per user\", \"once per <duration>\" or \"cooldown "
                            "<duration>\"");
            }
            if ((tr.limit == LIMIT_ONCE_PER || tr.limit == LIMIT_COOLDOWN) && tr.limit_ms <= 0)
                fail_at(p, &p->prev, "the limit's duration must be greater than 0");
        } else if (accept_word(p, "holdout")) {
            if (p->tok.kind != T_PERCENT)
                expected(p, "a percentage after \"holdout\" (like 10%)");
            if (p->tok.num < 0 || p->tok.num > 100)
                fail_at(p, &p->tok, "holdout must be between 0%% and 100%%");
            tr.holdout_bp = (int)(p->tok.num * 100 + 0.5);
            next(p);
        } else if (accept_word(p, "do")) {
            do {
                ast_action a = {0};
                token at = p->tok;
                a.line = at.line;
                a.col = at.col;
                if (accept_word(p, "webhook")) {
                    a.kind = ACT_WEBHOOK;
                    if (p->tok.kind != T_IDENT)
                        expected(p, "a destination name after \"webhook\"");
                    a.name = p->tok.str;
                    a.line = p->tok.line;
                    a.col = p->tok.col;
                    a.width = tok_width(&p->tok);
                    next(p);
                } else if (accept_word(p, "cue")) {
                    a.kind = ACT_CUE;
                    if (p->tok.kind != T_STRING || p->tok.str_len == 0)
                        expected(p, "a cue name in quotes after \"cue\"");
                    a.name = p->tok.str;
                    next(p);
                } else {
                    expected(p, "\"webhook NAME\" or \"cue \\\"NAME\\\"\"");
                }
                if (tr.nactions >= RULE_MAX_ACTIONS)
                    fail_at(p, &at, "a trigger has at most %d actions", RULE_MAX_ACTIONS);
                PUSH(p, tr.actions, tr.nactions, a);
            } while (accept(p, T_COMMA));
        } else {
            expected(p, "\"on\", \"when\", \"limit\", \"holdout\", \"do\" or \"}\"");
        }
    }
    if (!tr.has_on)
        rdiag_error(p->diag, tr.line, tr.col, (int)strlen(tr.name),
                    "trigger \"%s\" has no \"on\" clause", tr.name);
    PUSH(p, f->triggers, f->ntriggers, tr);
}

static void parse_destination(parser *p, ast_file *f)
{
    ast_dest d = {0};
    d.line = p->tok.line;
    d.col = p->tok.col;
    d.name = expect_name(p, "destination");
    expect(p, T_LBRACE);
    while (!accept(p, T_RBRACE)) {
        if (p->tok.kind != T_IDENT)
            expected(p, "a setting name or \"}\"");
        ast_setting s = {0};
        s.key = p->tok.str;
        next(p);
        if (!accept(p, T_ASSIGN) && !accept(p, T_COLON))
            expected(p, "\"=\"");
        if (p->tok.kind != T_STRING && p->tok.kind != T_NUMBER && p->tok.kind != T_DURATION &&
            p->tok.kind != T_IDENT)
            expected(p, "a string, number or duration");
        s.value = p->tok;
        next(p);
        PUSH(p, d.settings, d.nsettings, s);
    }
    PUSH(p, f->dests, f->ndests, d);
}

static bool at_decl_start(const parser *p)
{
    return is_word(&p->tok, "label") || is_word(&p->tok, "segment") ||
           is_word(&p->tok, "trigger") || is_word(&p->tok, "destination");
}

int rule_parse(const char *src, size_t len, onr_arena *arena, rdiag *diag, ast_file *f)
{
    parser *p = onr_calloc(1, sizeof(*p));
    lex_init(&p->lx, src, len, arena, diag);
    p->arena = arena;
    p->diag = diag;
    memset(f, 0, sizeof(*f));
    next(p);
    while (p->tok.kind != T_EOF) {
        if (setjmp(p->fail)) {
            /* resynchronise: skip to the next declaration keyword at the start of a line */
            p->depth = 0;
            while (p->tok.kind != T_EOF && !(at_decl_start(p) && p->tok.col == 1))
                next(p);
            if (diag->errors >= RULE_MAX_ERRORS)
                break;
            continue;
        }
        token t = p->tok;
        if (accept_word(p, "label"))
            parse_label(p, f);
        else if (accept_word(p, "segment"))
            parse_segment(p, f);
        else if (accept_word(p, "trigger"))
            parse_trigger(p, f);
        else if (accept_word(p, "destination"))
            parse_destination(p, f);
        else if (t.kind == T_IDENT) {
            static const char *const decls[] = {"label", "segment", "trigger", "destination"};
            const char *hint = rule_suggest(t.str, decls, ONR_ARRAY_LEN(decls));
            if (hint)
                fail_at(p, &t, "unknown declaration \"%s\" (did you mean \"%s\"?)", t.str, hint);
            fail_at(p, &t,
                    "expected \"label\", \"segment\", \"trigger\" or \"destination\", "
                    "found \"%s\"",
                    t.str);
        } else {
            expected(p, "\"label\", \"segment\", \"trigger\" or \"destination\"");
        }
    }
    onr_free(p);
    return diag->errors;
}
