/*
 * check.c - the checker: resolves every name (labels, segments, kinds, functions,
 * properties, destinations), infers and checks types, and plans the profile layout, so
 * that the engine tracks only what the loaded rules read. Every problem is an error with
 * file:line:col; nothing here runs an expression.
 */
#include "rules_int.h"

#include <stdio.h>
#include <string.h>

typedef enum ctx_kind {
    CX_EVENT,    /* label where, trigger where: sees the event only */
    CX_PROFILE,  /* segment or trigger condition with no event (timers, unanchored) */
    CX_ANCHORED, /* a condition evaluated at an event: profile and event */
} ctx_kind;

typedef struct checker {
    ast_file *f;
    rule_set *rs;
    rdiag *diag;
    onr_arena *arena;
    /* per-matcher needs */
    uint8_t *need; /* NEED_* by matcher */
    int capmatchers;
    bool need_path;
    int path_len;
    /* what the expression being checked depends on */
    int *deps;
    int ndeps, capdeps;
    bool dep_every_event, dep_timed;
    uint64_t dep_segments;
    int cur_segment; /* index of the segment being checked, or -1 */
} checker;

enum { NEED_COUNT = 1, NEED_FIRST = 2, NEED_LAST = 4 };

static const char *const functions[] = {"count", "first", "last", "since", "seq", "in_segment"};
static const char *const builtins[] = {
    "idle",
    "age",
    "start",
    "now",
    "step",
    "completed",
    "time_to_first_action",
    "session.duration",
    "session.events",
    "session.number",
    "path",
    "event",
};
static const char *const namespaces[] = {"props", "properties", "trait", "traits", "session"};
static const char *const kinds[] = {"track", "identify", "page", "screen", "group", "alias"};

const char *rv_type_name(rv_type t)
{
    switch (t) {
    case RT_NULL:
        return "null";
    case RT_BOOL:
        return "boolean";
    case RT_NUM:
        return "number";
    case RT_STR:
        return "string";
    case RT_DUR:
        return "duration";
    case RT_TIME:
        return "time";
    case RT_LIST:
        return "list";
    case RT_PATH:
        return "path";
    case RT_ANY:
        return "property";
    }
    return "?";
}

static void node_error(checker *c, const node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void node_error(checker *c, const node *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int width = (int)(n->end - n->start);
    /* a caret span never runs past the end of its line */
    const char *nl = memchr(c->diag->src + n->start, '\n', n->end - n->start);
    if (nl)
        width = (int)(nl - (c->diag->src + n->start));
    rdiag_error(c->diag, n->line, n->col, width, "%s", msg);
}

static void ref_error(checker *c, const ref *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ref_error(checker *c, const ref *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rdiag_error(c->diag, r->line, r->col, r->width, "%s", msg);
}

/* ---- schema */

static int schema_prop(checker *c, const node *n, const char *path)
{
    trk_schema *s = &c->rs->schema;
    for (uint32_t i = 0; i < s->nprops; i++)
        if (strcmp(s->props[i], path) == 0)
            return (int)i;
    if (s->nprops >= TRK_MAX_FIELDS) {
        node_error(c, n, "too many distinct properties (the limit is %d)", TRK_MAX_FIELDS);
        return 0;
    }
    s->props[s->nprops] = onr_arena_strndup(&c->rs->arena, path, strlen(path));
    return (int)s->nprops++;
}

static int schema_trait(checker *c, const node *n, const char *name)
{
    trk_schema *s = &c->rs->schema;
    for (uint32_t i = 0; i < s->ntraits; i++)
        if (strcmp(s->traits[i], name) == 0)
            return (int)i;
    if (s->ntraits >= TRK_MAX_FIELDS) {
        node_error(c, n, "too many distinct traits (the limit is %d)", TRK_MAX_FIELDS);
        return 0;
    }
    s->traits[s->ntraits] = onr_arena_strndup(&c->rs->arena, name, strlen(name));
    return (int)s->ntraits++;
}

/* ---- matchers */

static int add_matcher(checker *c, const char *display)
{
    rule_set *rs = c->rs;
    if (rs->nmatchers >= RULE_MAX_MATCHERS)
        return -1;
    if (rs->nmatchers == c->capmatchers) {
        c->capmatchers = c->capmatchers ? c->capmatchers * 2 : 32;
        rs->matchers = onr_realloc(rs->matchers, sizeof(*rs->matchers) * (size_t)c->capmatchers);
        rs->labels = onr_realloc(rs->labels, sizeof(*rs->labels) * (size_t)c->capmatchers);
        c->need = onr_realloc(c->need, (size_t)c->capmatchers);
    }
    int id = rs->nmatchers++;
    rule_matcher *m = &rs->matchers[id];
    memset(m, 0, sizeof(*m));
    m->display = onr_arena_strndup(&rs->arena, display, strlen(display));
    m->where = -1;
    m->off_count = m->off_first = m->off_last = -1;
    rs->labels[id] = NULL;
    c->need[id] = 0;
    return id;
}

static void matcher_add_name(checker *c, int id, const char *name)
{
    rule_matcher *m = &c->rs->matchers[id];
    const char **names = onr_arena_alloc(&c->rs->arena, sizeof(char *) * (size_t)(m->nnames + 1));
    if (m->nnames)
        memcpy(names, m->names, sizeof(char *) * (size_t)m->nnames);
    names[m->nnames++] = onr_arena_strndup(&c->rs->arena, name, strlen(name));
    m->names = names;
}

static int name_matcher(checker *c, const char *name)
{
    rule_set *rs = c->rs;
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        if (!rs->labels[i] && m->nnames == 1 && m->kinds == 0 && m->where < 0 &&
            strcmp(m->names[0], name) == 0)
            return i;
    }
    char disp[RULE_MAX_NAME + TRK_MAX_NAME_BYTES];
    snprintf(disp, sizeof(disp), "\"%s\"", name);
    int id = add_matcher(c, disp);
    if (id >= 0)
        matcher_add_name(c, id, name);
    return id;
}

static int kind_of(const char *w)
{
    for (size_t i = 0; i < ONR_ARRAY_LEN(kinds); i++)
        if (strcmp(kinds[i], w) == 0)
            return (int)i;
    if (strcmp(w, "any") == 0)
        return TRK_KIND_COUNT;
    return -1;
}

static int kind_matcher(checker *c, int kind)
{
    rule_set *rs = c->rs;
    uint32_t mask = kind == TRK_KIND_COUNT ? (1u << TRK_KIND_COUNT) - 1 : 1u << kind;
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        if (!rs->labels[i] && m->nnames == 0 && m->kinds == mask)
            return i;
    }
    int id = add_matcher(c, kind == TRK_KIND_COUNT ? "any" : kinds[kind]);
    if (id >= 0)
        rs->matchers[id].kinds = mask;
    return id;
}

static int label_index(checker *c, const char *name)
{
    for (int i = 0; i < c->rs->nmatchers; i++)
        if (c->rs->labels[i] && strcmp(c->rs->labels[i], name) == 0)
            return i;
    return -1;
}

/* Resolves an event reference to a matcher. */
static int resolve_ref(checker *c, ref *r)
{
    if (r->kind == REF_NAME) {
        r->matcher = name_matcher(c, r->name);
    } else if (r->kind == REF_IDENT) {
        int k = kind_of(r->name);
        if (k >= 0) {
            r->matcher = kind_matcher(c, k);
        } else {
            r->matcher = label_index(c, r->name);
            if (r->matcher < 0) {
                const char **cands = onr_malloc(sizeof(char *) * (size_t)(c->rs->nmatchers + 7));
                size_t n = 0;
                for (int i = 0; i < c->rs->nmatchers; i++)
                    if (c->rs->labels[i])
                        cands[n++] = c->rs->labels[i];
                for (size_t i = 0; i < ONR_ARRAY_LEN(kinds); i++)
                    cands[n++] = kinds[i];
                const char *hint = rule_suggest(r->name, cands, n);
                onr_free(cands);
                if (hint)
                    ref_error(c, r, "unknown label \"%s\" (did you mean \"%s\"?)", r->name, hint);
                else
                    ref_error(c, r,
                              "unknown label \"%s\": declare it with `label %s = \"Event "
                              "Name\"`, or write an event name in quotes",
                              r->name, r->name);
                return -1;
            }
        }
    } else {
        return -1;
    }
    if (r->matcher < 0)
        ref_error(c, r, "too many distinct events and labels (the limit is %d)", RULE_MAX_MATCHERS);
    return r->matcher;
}

static int segment_index(checker *c, const char *name)
{
    for (int i = 0; i < c->f->nsegments; i++)
        if (strcmp(c->f->segments[i].name, name) == 0)
            return i;
    return -1;
}

static void unknown_segment(checker *c, int line, int col, int width, const char *name)
{
    const char **cands = onr_malloc(sizeof(char *) * (size_t)(c->f->nsegments + 1));
    for (int i = 0; i < c->f->nsegments; i++)
        cands[i] = c->f->segments[i].name;
    const char *hint = rule_suggest(name, cands, (size_t)c->f->nsegments);
    onr_free(cands);
    if (hint)
        rdiag_error(c->diag, line, col, width, "unknown segment \"%s\" (did you mean \"%s\"?)",
                    name, hint);
    else
        rdiag_error(c->diag, line, col, width, "unknown segment \"%s\"", name);
}

/* ---- dependencies of the expression being checked */

static void dep_matcher(checker *c, int m, int need)
{
    if (m < 0)
        return;
    c->need[m] |= (uint8_t)need;
    for (int i = 0; i < c->ndeps; i++)
        if (c->deps[i] == m)
            return;
    if (c->ndeps == c->capdeps) {
        c->capdeps = c->capdeps ? c->capdeps * 2 : 16;
        c->deps = onr_realloc(c->deps, sizeof(int) * (size_t)c->capdeps);
    }
    c->deps[c->ndeps++] = m;
}

static void deps_reset(checker *c)
{
    c->ndeps = 0;
    c->dep_every_event = false;
    c->dep_timed = false;
    c->dep_segments = 0;
}

/* ---- expressions */

static bool is_numeric_like(uint8_t t)
{
    return t == RT_NUM || t == RT_ANY;
}

static const char *hint_for(uint8_t a, uint8_t b)
{
    if ((a == RT_DUR && b == RT_NUM) || (a == RT_NUM && b == RT_DUR))
        return " (write a duration with its unit: 120s, 2m)";
    if ((a == RT_TIME && b == RT_DUR) || (a == RT_DUR && b == RT_TIME))
        return " (a time minus a time is a duration: first(\"A\") - start)";
    return "";
}

static uint8_t check_expr(checker *c, node *n, ctx_kind cx);

static int event_arg(checker *c, node *call, int i)
{
    node *a = call->items[i];
    ref *r = onr_arena_alloc(c->arena, sizeof(*r));
    r->line = a->line;
    r->col = a->col;
    r->width = (int)(a->end - a->start);
    r->matcher = -1;
    if (a->kind == N_STR) {
        if (a->str_len == 0) {
            node_error(c, a, "event name is empty");
            return -1;
        }
        r->kind = REF_NAME;
        r->name = a->str;
    } else if (a->kind == N_NAME && !strchr(a->str, '.')) {
        r->kind = REF_IDENT;
        r->name = a->str;
    } else {
        node_error(c, a, "%s() takes an event name in quotes or a label", call->str);
        return -1;
    }
    return resolve_ref(c, r);
}

static uint8_t check_call(checker *c, node *n, ctx_kind cx)
{
    const char *f = n->str;
    if (cx == CX_EVENT && strcmp(f, "in_segment") != 0) {
        node_error(c, n,
                   "%s() reads the user's history, but this condition sees only the "
                   "event (label and `where` conditions)",
                   f);
        return RT_NULL;
    }
    if (cx == CX_EVENT) {
        node_error(c, n,
                   "in_segment() reads the user's profile, but this condition sees only "
                   "the event");
        return RT_NULL;
    }
    if (strcmp(f, "in_segment") == 0) {
        if (n->nitems != 1 || n->has_within || n->items[0]->kind != N_NAME) {
            node_error(c, n, "in_segment() takes one segment name: in_segment(explorers)");
            return RT_BOOL;
        }
        node *a = n->items[0];
        int s = segment_index(c, a->str);
        if (s < 0) {
            unknown_segment(c, a->line, a->col, (int)(a->end - a->start), a->str);
            return RT_BOOL;
        }
        if (c->cur_segment >= 0 && s == c->cur_segment) {
            node_error(c, a, "segment \"%s\" cannot read its own membership with in_segment()",
                       a->str);
            return RT_BOOL;
        }
        if (c->cur_segment >= 0 && s > c->cur_segment) {
            node_error(c, a,
                       "segment \"%s\" must be declared before segment \"%s\" to be used in "
                       "it",
                       a->str, c->f->segments[c->cur_segment].name);
            return RT_BOOL;
        }
        n->slot = s;
        c->dep_segments |= UINT64_C(1) << s;
        return RT_BOOL;
    }
    bool is_count = strcmp(f, "count") == 0, is_seq = strcmp(f, "seq") == 0;
    bool is_first = strcmp(f, "first") == 0, is_last = strcmp(f, "last") == 0;
    bool is_since = strcmp(f, "since") == 0;
    if (!is_count && !is_seq && !is_first && !is_last && !is_since) {
        const char *hint = rule_suggest(f, functions, ONR_ARRAY_LEN(functions));
        if (hint)
            node_error(c, n, "unknown function \"%s\" (did you mean \"%s\"?)", f, hint);
        else
            node_error(c, n,
                       "unknown function \"%s\": the functions are count, first, last, "
                       "since, seq and in_segment",
                       f);
        return RT_NULL;
    }
    if (is_seq) {
        if (n->nitems < 2) {
            node_error(c, n, "seq() takes at least two events: seq(\"A\", \"B\", within: 5m)");
            return RT_BOOL;
        }
        rule_seq q = {0};
        q.nsteps = n->nitems;
        q.within_ms = n->has_within ? n->within_ms : INT64_MAX;
        for (int i = 0; i < n->nitems; i++) {
            q.steps[i] = event_arg(c, n, i);
            if (q.steps[i] < 0)
                return RT_BOOL;
            dep_matcher(c, q.steps[i], 0);
        }
        rule_set *rs = c->rs;
        rs->seqs = onr_realloc(rs->seqs, sizeof(*rs->seqs) * (size_t)(rs->nseqs + 1));
        n->slot = rs->nseqs;
        rs->seqs[rs->nseqs++] = q;
        return RT_BOOL;
    }
    if (n->nitems != 1) {
        node_error(c, n, "%s() takes one event: %s(\"Feature Used\")", f, f);
        return RT_NULL;
    }
    if (n->has_within && !is_count) {
        node_error(c, n, "\"within\" applies to count() and seq() only");
        return RT_NULL;
    }
    int m = event_arg(c, n, 0);
    if (m < 0)
        return is_count ? RT_NUM : is_since ? RT_DUR : RT_TIME;
    if (is_count && n->has_within) {
        if (n->within_ms <= 0) {
            node_error(c, n, "the window of count() must be longer than 0");
            return RT_NUM;
        }
        rule_set *rs = c->rs;
        /* the same count(X, within: W) anywhere in the file shares one window */
        n->slot = -1;
        for (int i = 0; i < rs->nwindows; i++)
            if (rs->windows[i].matcher == m && rs->windows[i].within_ms == n->within_ms)
                n->slot = i;
        if (n->slot < 0) {
            rs->windows =
                onr_realloc(rs->windows, sizeof(*rs->windows) * (size_t)(rs->nwindows + 1));
            rule_window w = {.matcher = m, .within_ms = n->within_ms, .cap = 0, .off = -1};
            n->slot = rs->nwindows;
            rs->windows[rs->nwindows++] = w;
        }
        dep_matcher(c, m, 0);
        c->dep_timed = true;
        return RT_NUM;
    }
    n->slot = m;
    if (is_count) {
        dep_matcher(c, m, NEED_COUNT);
        return RT_NUM;
    }
    if (is_first) {
        dep_matcher(c, m, NEED_FIRST);
        return RT_TIME;
    }
    dep_matcher(c, m, NEED_LAST);
    if (is_since)
        c->dep_timed = true;
    return is_since ? RT_DUR : RT_TIME;
}

static uint8_t check_name(checker *c, node *n, ctx_kind cx)
{
    const char *s = n->str;
    const char *dot = strchr(s, '.');
    if (dot) {
        size_t ns = (size_t)(dot - s);
        const char *rest = dot + 1;
        if ((ns == 5 && memcmp(s, "props", 5) == 0) ||
            (ns == 10 && memcmp(s, "properties", 10) == 0)) {
            if (cx == CX_PROFILE) {
                node_error(c, n,
                           "%s is a property of an event, but this condition is not "
                           "evaluated at an event: anchor it (\"enter on \\\"Event\\\" "
                           "when ...\")",
                           s);
                return RT_ANY;
            }
            n->slot = schema_prop(c, n, rest);
            return RT_ANY;
        }
        if ((ns == 5 && memcmp(s, "trait", 5) == 0) || (ns == 6 && memcmp(s, "traits", 6) == 0)) {
            if (cx == CX_EVENT) {
                node_error(c, n,
                           "traits belong to the user's profile, but this condition sees "
                           "only the event");
                return RT_ANY;
            }
            if (strchr(rest, '.')) {
                node_error(c, n, "traits are read by top-level name: trait.plan");
                return RT_ANY;
            }
            n->slot = schema_trait(c, n, rest);
            c->dep_every_event = true;
            return RT_ANY;
        }
        if (ns == 7 && memcmp(s, "session", 7) == 0) {
            if (cx == CX_EVENT) {
                node_error(c, n,
                           "%s reads the user's profile, but this condition sees only "
                           "the event",
                           s);
                return RT_NULL;
            }
            c->dep_every_event = true;
            if (strcmp(rest, "duration") == 0)
                return RT_DUR;
            if (strcmp(rest, "events") == 0 || strcmp(rest, "number") == 0)
                return RT_NUM;
            static const char *const fields[] = {"duration", "events", "number"};
            const char *hint = rule_suggest(rest, fields, 3);
            if (hint)
                node_error(c, n, "unknown session field \"%s\" (did you mean \"%s\"?)", rest, hint);
            else
                node_error(c, n,
                           "unknown session field \"%s\": session has duration, events "
                           "and number",
                           rest);
            return RT_NULL;
        }
        char nsname[64];
        snprintf(nsname, sizeof(nsname), "%.*s", (int)(ns < 60 ? ns : 60), s);
        const char *hint = rule_suggest(nsname, namespaces, ONR_ARRAY_LEN(namespaces));
        if (hint)
            node_error(c, n, "unknown property namespace \"%s\" (did you mean \"%s\"?)", nsname,
                       hint);
        else
            node_error(c, n,
                       "unknown property namespace \"%s\": use props.NAME, trait.NAME or "
                       "session.FIELD",
                       nsname);
        return RT_NULL;
    }
    if (strcmp(s, "event") == 0) {
        if (cx == CX_PROFILE) {
            node_error(c, n,
                       "\"event\" is the current event's name, but this condition is not "
                       "evaluated at an event");
        }
        return RT_STR;
    }
    if (cx == CX_EVENT) {
        for (size_t i = 0; i < ONR_ARRAY_LEN(builtins); i++)
            if (strcmp(builtins[i], s) == 0) {
                node_error(c, n,
                           "\"%s\" reads the user's profile, but this condition sees only "
                           "the event (label and `where` conditions)",
                           s);
                return RT_NULL;
            }
    }
    if (strcmp(s, "idle") == 0) {
        c->dep_every_event = true;
        c->dep_timed = true;
        return RT_DUR;
    }
    if (strcmp(s, "age") == 0) {
        c->dep_every_event = true;
        c->dep_timed = true;
        return RT_DUR;
    }
    if (strcmp(s, "now") == 0) {
        c->dep_timed = true;
        return RT_TIME;
    }
    if (strcmp(s, "start") == 0) {
        c->dep_every_event = true;
        return RT_TIME;
    }
    if (strcmp(s, "step") == 0) {
        dep_matcher(c, RM_STEP_COMPLETED, 0);
        return RT_NUM;
    }
    if (strcmp(s, "completed") == 0) {
        dep_matcher(c, RM_ONBOARDING_COMPLETED, 0);
        return RT_BOOL;
    }
    if (strcmp(s, "time_to_first_action") == 0) {
        dep_matcher(c, RM_FEATURE_USED, NEED_FIRST);
        c->dep_every_event = true; /* start moves on the first event and on Signed Up */
        return RT_DUR;
    }
    if (strcmp(s, "path") == 0) {
        node_error(c, n, "path is read with \"path ends [...]\" or \"path contains [...]\"");
        return RT_NULL;
    }
    for (size_t i = 0; i < ONR_ARRAY_LEN(functions); i++)
        if (strcmp(functions[i], s) == 0) {
            node_error(c, n, "%s is a function: write %s(...)", s, s);
            return RT_NULL;
        }
    if (label_index(c, s) >= 0 || kind_of(s) >= 0) {
        node_error(c, n,
                   "\"%s\" is an event label; use it inside count(), first(), last() or "
                   "since()",
                   s);
        return RT_NULL;
    }
    if (segment_index(c, s) >= 0) {
        node_error(c, n, "\"%s\" is a segment; write in_segment(%s)", s, s);
        return RT_NULL;
    }
    const char *cands[ONR_ARRAY_LEN(builtins) + ONR_ARRAY_LEN(functions)];
    size_t nc = 0;
    for (size_t i = 0; i < ONR_ARRAY_LEN(builtins); i++)
        cands[nc++] = builtins[i];
    for (size_t i = 0; i < ONR_ARRAY_LEN(functions); i++)
        cands[nc++] = functions[i];
    const char *hint = rule_suggest(s, cands, nc);
    if (hint)
        node_error(c, n, "unknown name \"%s\" (did you mean \"%s\"?)", s, hint);
    else
        node_error(c, n, "unknown name \"%s\"", s);
    return RT_NULL;
}

static uint8_t check_list(checker *c, node *n, bool strings_only)
{
    uint8_t t = RT_NULL;
    for (int i = 0; i < n->nitems; i++) {
        node *it = n->items[i];
        uint8_t it_t;
        if (it->kind == N_STR)
            it_t = RT_STR;
        else if (it->kind == N_NUM)
            it_t = RT_NUM;
        else if (it->kind == N_BOOL)
            it_t = RT_BOOL;
        else {
            node_error(c, it, "list items must be literal strings, numbers or booleans");
            return RT_LIST;
        }
        if (strings_only && it_t != RT_STR) {
            node_error(c, it, "path lists hold feature names in quotes");
            return RT_LIST;
        }
        if (t != RT_NULL && it_t != t) {
            node_error(c, it, "list mixes %s and %s", rv_type_name(t), rv_type_name(it_t));
            return RT_LIST;
        }
        t = it_t;
    }
    n->slot = t; /* element type */
    return RT_LIST;
}

static bool comparable(uint8_t a, uint8_t b, bool ordered)
{
    if (a == RT_ANY || b == RT_ANY)
        return a == RT_ANY ? (b == RT_ANY || b == RT_NUM || b == RT_STR ||
                              (!ordered && (b == RT_BOOL || b == RT_NULL)))
                           : comparable(b, a, ordered);
    if (!ordered && (a == RT_NULL || b == RT_NULL))
        return true;
    if (a != b)
        return false;
    if (ordered)
        return a == RT_NUM || a == RT_DUR || a == RT_TIME || a == RT_STR;
    return a != RT_LIST && a != RT_PATH;
}

static uint8_t check_binary(checker *c, node *n, ctx_kind cx)
{
    static const char *const opname[] = {
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
        [B_NOT_IN] = "not in",
        [B_STARTS_WITH] = "starts_with",
        [B_ENDS_WITH] = "ends_with",
        [B_CONTAINS] = "contains",
        [B_COALESCE] = "??",
    };
    uint8_t l = check_expr(c, n->a, cx);
    if (n->op == B_IN || n->op == B_NOT_IN) {
        check_list(c, n->b2, false);
        uint8_t et = (uint8_t)n->b2->slot;
        if (l != RT_ANY && et != RT_NULL && l != et)
            node_error(c, n, "cannot test a %s against a list of %ss", rv_type_name(l),
                       rv_type_name(et));
        return RT_BOOL;
    }
    uint8_t r = check_expr(c, n->b2, cx);
    if (l == RT_NULL && n->a->kind != N_NULL)
        return RT_NULL; /* an error was already reported */
    if (r == RT_NULL && n->b2->kind != N_NULL)
        return RT_NULL;
    switch (n->op) {
    case B_AND:
    case B_OR:
        if (l != RT_BOOL && l != RT_ANY)
            node_error(c, n->a, "\"%s\" needs true/false on both sides; this is a %s",
                       opname[n->op], rv_type_name(l));
        else if (r != RT_BOOL && r != RT_ANY)
            node_error(c, n->b2, "\"%s\" needs true/false on both sides; this is a %s",
                       opname[n->op], rv_type_name(r));
        return RT_BOOL;
    case B_EQ:
    case B_NE:
    case B_LT:
    case B_LE:
    case B_GT:
    case B_GE: {
        bool ordered = n->op != B_EQ && n->op != B_NE;
        if (!comparable(l, r, ordered))
            node_error(c, n, "type mismatch: cannot compare %s with %s using \"%s\"%s",
                       rv_type_name(l), rv_type_name(r), opname[n->op], hint_for(l, r));
        return RT_BOOL;
    }
    case B_STARTS_WITH:
    case B_ENDS_WITH:
    case B_CONTAINS:
        if ((l != RT_STR && l != RT_ANY) || (r != RT_STR && r != RT_ANY))
            node_error(c, n, "type mismatch: \"%s\" needs strings, got %s and %s", opname[n->op],
                       rv_type_name(l), rv_type_name(r));
        return RT_BOOL;
    case B_COALESCE:
        if (l == RT_ANY || l == RT_NULL)
            return r;
        if (r != RT_ANY && r != RT_NULL && r != l)
            node_error(c, n,
                       "type mismatch: \"??\" needs the same type on both sides, got %s "
                       "and %s",
                       rv_type_name(l), rv_type_name(r));
        return l;
    case B_ADD:
        if (is_numeric_like(l) && is_numeric_like(r))
            return RT_NUM;
        if (l == RT_DUR && r == RT_DUR)
            return RT_DUR;
        if ((l == RT_TIME && r == RT_DUR) || (l == RT_DUR && r == RT_TIME))
            return RT_TIME;
        break;
    case B_SUB:
        if (is_numeric_like(l) && is_numeric_like(r))
            return RT_NUM;
        if (l == RT_DUR && r == RT_DUR)
            return RT_DUR;
        if (l == RT_TIME && r == RT_DUR)
            return RT_TIME;
        if (l == RT_TIME && r == RT_TIME)
            return RT_DUR;
        break;
    case B_MUL:
        if (is_numeric_like(l) && is_numeric_like(r))
            return RT_NUM;
        if ((l == RT_DUR && r == RT_NUM) || (l == RT_NUM && r == RT_DUR))
            return RT_DUR;
        break;
    case B_DIV:
        if (is_numeric_like(l) && is_numeric_like(r))
            return RT_NUM;
        if (l == RT_DUR && r == RT_NUM)
            return RT_DUR;
        if (l == RT_DUR && r == RT_DUR)
            return RT_NUM;
        break;
    default:
        break;
    }
    node_error(c, n, "type mismatch: cannot apply \"%s\" to %s and %s%s", opname[n->op],
               rv_type_name(l), rv_type_name(r), hint_for(l, r));
    return RT_NULL;
}

static uint8_t check_expr(checker *c, node *n, ctx_kind cx)
{
    uint8_t t = RT_NULL;
    switch (n->kind) {
    case N_NUM:
        t = RT_NUM;
        break;
    case N_STR:
        t = RT_STR;
        break;
    case N_DUR:
        t = RT_DUR;
        break;
    case N_BOOL:
        t = RT_BOOL;
        break;
    case N_NULL:
        t = RT_NULL;
        break;
    case N_LIST:
        node_error(c, n, "a list is only allowed after \"in\" or in \"path ends/contains\"");
        t = RT_NULL; /* reported: the expression around it stays quiet */
        break;
    case N_NAME:
        t = check_name(c, n, cx);
        break;
    case N_CALL:
        t = check_call(c, n, cx);
        break;
    case N_NOT: {
        uint8_t a = check_expr(c, n->a, cx);
        if (a != RT_BOOL && a != RT_ANY && a != RT_NULL)
            node_error(c, n->a, "\"not\" needs true/false; this is a %s", rv_type_name(a));
        t = RT_BOOL;
        break;
    }
    case N_NEG: {
        uint8_t a = check_expr(c, n->a, cx);
        if (a != RT_NUM && a != RT_DUR && a != RT_ANY && a != RT_NULL)
            node_error(c, n, "cannot negate a %s", rv_type_name(a));
        t = a == RT_ANY ? RT_NUM : a;
        break;
    }
    case N_BINARY:
        t = check_binary(c, n, cx);
        break;
    case N_PATH:
        if (cx == CX_EVENT) {
            node_error(c, n,
                       "path reads the user's profile, but this condition sees only the "
                       "event");
            break;
        }
        check_list(c, n->a, true);
        if (n->a->nitems == 0)
            node_error(c, n->a, "the path list is empty");
        else if (n->a->nitems > RULE_PATH_LEN)
            node_error(c, n->a, "the path keeps the last %d features; this list has %d",
                       RULE_PATH_LEN, n->a->nitems);
        c->need_path = true;
        /* ends needs only as many features as its list; contains looks at all it can */
        if (!n->path_ends)
            c->path_len = RULE_PATH_LEN;
        else if (n->a->nitems > c->path_len)
            c->path_len = n->a->nitems;
        dep_matcher(c, RM_FEATURE_USED, 0);
        t = RT_BOOL;
        break;
    }
    n->type = t;
    return t;
}

static void check_condition(checker *c, node *n, ctx_kind cx, const char *what)
{
    uint8_t t = check_expr(c, n, cx);
    if (t != RT_BOOL && t != RT_ANY && !(t == RT_NULL && n->kind != N_NULL))
        node_error(c, n, "%s must be true or false; this is a %s", what, rv_type_name(t));
}

/* ---- declarations */

static void check_duplicates(checker *c)
{
    ast_file *f = c->f;
    typedef struct {
        const char *kind, *name;
        int line, col;
    } decl;
    int n = f->nlabels + f->nsegments + f->ntriggers + f->ndests;
    decl *d = onr_malloc(sizeof(decl) * (size_t)(n + 1));
    int k = 0;
    for (int i = 0; i < f->nlabels; i++)
        d[k++] = (decl){"label", f->labels[i].name, f->labels[i].line, f->labels[i].col};
    for (int i = 0; i < f->nsegments; i++)
        d[k++] = (decl){"segment", f->segments[i].name, f->segments[i].line, f->segments[i].col};
    for (int i = 0; i < f->ntriggers; i++)
        d[k++] = (decl){"trigger", f->triggers[i].name, f->triggers[i].line, f->triggers[i].col};
    for (int i = 0; i < f->ndests; i++)
        d[k++] = (decl){"destination", f->dests[i].name, f->dests[i].line, f->dests[i].col};
    /* one namespace for all declarations; the later one is the error, in source order */
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && (d[j].line < d[j - 1].line ||
                                  (d[j].line == d[j - 1].line && d[j].col < d[j - 1].col));
             j--) {
            decl tmp = d[j];
            d[j] = d[j - 1];
            d[j - 1] = tmp;
        }
    for (int i = 0; i < k; i++) {
        int first = -1;
        for (int j = 0; j < k; j++)
            if (j != i && strcmp(d[i].name, d[j].name) == 0 &&
                (d[j].line < d[i].line || (d[j].line == d[i].line && d[j].col < d[i].col)) &&
                (first < 0 || d[j].line < d[first].line))
                first = j;
        if (first >= 0)
            rdiag_error(c->diag, d[i].line, d[i].col, (int)strlen(d[i].name),
                        "%s \"%s\" is already declared as a %s at line %d", d[i].kind, d[i].name,
                        d[first].kind, d[first].line);
    }
    onr_free(d);
}

static void add_int(int **arr, int *n, int v)
{
    *arr = onr_realloc(*arr, sizeof(int) * (size_t)(*n + 1));
    (*arr)[(*n)++] = v;
}

static void record_segment_deps(checker *c, int seg)
{
    rule_segment *s = &c->rs->segments[seg];
    if (c->dep_every_event)
        s->every_event = true;
    if (c->dep_timed)
        s->timed = true;
    s->deps_segments |= c->dep_segments;
    for (int i = 0; i < c->ndeps; i++)
        c->rs->matchers[c->deps[i]].segments_dep |= UINT64_C(1) << seg;
}

static void check_segments(checker *c)
{
    rule_set *rs = c->rs;
    ast_file *f = c->f;
    if (f->nsegments > RULE_MAX_SEGMENTS) {
        rdiag_error(c->diag, f->segments[RULE_MAX_SEGMENTS].line,
                    f->segments[RULE_MAX_SEGMENTS].col,
                    (int)strlen(f->segments[RULE_MAX_SEGMENTS].name),
                    "too many segments (the limit is %d)", RULE_MAX_SEGMENTS);
        return;
    }
    rs->segments = onr_calloc((size_t)f->nsegments + 1, sizeof(*rs->segments));
    rs->nsegments = f->nsegments;
    for (int i = 0; i < f->nsegments; i++) {
        ast_segment *a = &f->segments[i];
        rule_segment *s = &rs->segments[i];
        s->name = a->name;
        s->line = a->line;
        s->live = -1;
        c->cur_segment = i;
        if (a->live) {
            deps_reset(c);
            check_condition(c, a->live, CX_PROFILE, "a segment's condition");
            record_segment_deps(c, i);
        }
        for (int k = 0; k < a->nclauses; k++) {
            ast_clause *ac = &a->clauses[k];
            rule_clause *rc = &s->clauses[k];
            rc->enter = ac->enter;
            rc->on = -1;
            rc->when = -1;
            if (ac->on) {
                if (ac->on->kind == REF_SESSION_START)
                    rc->on = RULE_ON_SESSION_START;
                else if (ac->on->kind == REF_SESSION_END)
                    rc->on = RULE_ON_SESSION_END;
                else
                    rc->on = resolve_ref(c, ac->on);
                if (rc->on == -1)
                    rc->on = -4; /* unresolved; an error was reported */
                if (rc->on >= 0)
                    add_int(&rs->matchers[rc->on].seg_clauses, &rs->matchers[rc->on].nseg_clauses,
                            i << 8 | k);
            }
            if (ac->when) {
                deps_reset(c);
                check_condition(c, ac->when, ac->on ? CX_ANCHORED : CX_PROFILE,
                                "a segment's condition");
                if (!ac->on)
                    record_segment_deps(c, i);
                else if (c->dep_segments)
                    s->deps_segments |= c->dep_segments;
            }
        }
        s->nclauses = a->nclauses;
    }
    c->cur_segment = -1;
}

/* A filter that starts with props.P == literal (alone or as the first of an `and` chain)
 * is indexed by that literal: see rule_trigger.key_prop. */
static void index_where(rule_trigger *t, const node *w)
{
    while (w->kind == N_BINARY && w->op == B_AND)
        w = w->a;
    if (w->kind != N_BINARY || w->op != B_EQ)
        return;
    const node *prop = w->a, *lit = w->b2;
    if (prop->kind != N_NAME)
        prop = w->b2, lit = w->a;
    if (prop->kind != N_NAME || prop->slot < 0 || strchr(prop->str, '.') == NULL ||
        strncmp(prop->str, "prop", 4) != 0)
        return;
    trk_value v = {0};
    if (lit->kind == N_STR) {
        v.type = TV_STR;
        v.str.p = lit->str;
        v.str.n = lit->str_len;
    } else if (lit->kind == N_NUM) {
        v.type = TV_NUM;
        v.num = lit->num;
    } else {
        return;
    }
    t->key_prop = prop->slot;
    t->key_hash = rule_value_hash(&v);
}

static void check_triggers(checker *c)
{
    rule_set *rs = c->rs;
    ast_file *f = c->f;
    if (f->ntriggers > RULE_MAX_TRIGGERS) {
        rdiag_error(c->diag, f->triggers[RULE_MAX_TRIGGERS].line,
                    f->triggers[RULE_MAX_TRIGGERS].col,
                    (int)strlen(f->triggers[RULE_MAX_TRIGGERS].name),
                    "too many triggers (the limit is %d)", RULE_MAX_TRIGGERS);
        return;
    }
    rs->triggers = onr_calloc((size_t)f->ntriggers + 1, sizeof(*rs->triggers));
    rs->ntriggers = f->ntriggers;
    for (int i = 0; i < f->ntriggers; i++) {
        ast_trigger *a = &f->triggers[i];
        rule_trigger *t = &rs->triggers[i];
        t->name = a->name;
        t->line = a->line;
        t->on = a->on;
        t->matcher = t->unless_matcher = t->segment = -1;
        t->dur_ms = a->dur_ms;
        t->where = t->when = -1;
        t->limit = a->limit;
        t->limit_ms = a->limit_ms;
        t->holdout_bp = a->holdout_bp;
        t->off_last_fire = t->off_pending = -1;
        t->bit_fired = t->bit_idle = -1;
        t->key_prop = -1;
        t->name_hash = onr_hash64(a->name, strlen(a->name), 0x66697265);
        c->cur_segment = -1;
        switch (a->on) {
        case ON_EVENT:
        case ON_ABSENCE:
            t->matcher = resolve_ref(c, a->ev);
            if (t->matcher >= 0 && a->on == ON_EVENT)
                add_int(&rs->matchers[t->matcher].triggers, &rs->matchers[t->matcher].ntriggers, i);
            if (a->on == ON_ABSENCE) {
                add_int(&rs->absence_triggers, &rs->nabsence, i);
                t->unless_matcher = resolve_ref(c, a->unless);
                if (t->matcher >= 0)
                    add_int(&rs->matchers[t->matcher].absences, &rs->matchers[t->matcher].nabsences,
                            i);
                if (t->unless_matcher >= 0)
                    add_int(&rs->matchers[t->unless_matcher].unlesses,
                            &rs->matchers[t->unless_matcher].nunlesses, i);
                if (a->dur_ms <= 0)
                    rdiag_error(c->diag, a->line, a->col, (int)strlen(a->name),
                                "the \"within\" of trigger \"%s\" must be longer than 0", a->name);
            }
            break;
        case ON_IDLE:
            if (a->dur_ms <= 0)
                rdiag_error(c->diag, a->line, a->col, (int)strlen(a->name),
                            "the idle time of trigger \"%s\" must be longer than 0", a->name);
            add_int(&rs->idle_triggers, &rs->nidle, i);
            break;
        case ON_ENTER:
        case ON_EXIT:
            t->segment = segment_index(c, a->ev->name);
            if (t->segment < 0) {
                unknown_segment(c, a->ev->line, a->ev->col, a->ev->width, a->ev->name);
            } else {
                rule_segment *s = &rs->segments[t->segment];
                if (a->on == ON_ENTER)
                    add_int(&s->on_enter, &s->non_enter, i);
                else
                    add_int(&s->on_exit, &s->non_exit, i);
            }
            break;
        case ON_SESSION_START:
            add_int(&rs->session_start_triggers, &rs->nsession_start, i);
            break;
        case ON_SESSION_END:
            add_int(&rs->session_end_triggers, &rs->nsession_end, i);
            break;
        }
        if (a->where) {
            deps_reset(c);
            check_condition(c, a->where, CX_EVENT, "a `where` condition");
            index_where(t, a->where);
        }
        if (a->when) {
            deps_reset(c);
            check_condition(c, a->when, a->on == ON_EVENT ? CX_ANCHORED : CX_PROFILE,
                            "a `when` condition");
        }
        t->nactions = a->nactions;
        for (int k = 0; k < a->nactions; k++) {
            ast_action *aa = &a->actions[k];
            t->actions[k].kind = aa->kind;
            t->actions[k].name = aa->name;
            if (aa->kind != ACT_WEBHOOK)
                continue;
            int found = 0;
            for (int d = 0; d < f->ndests; d++)
                found |= strcmp(f->dests[d].name, aa->name) == 0;
            if (!found) {
                const char **cands = onr_malloc(sizeof(char *) * (size_t)(f->ndests + 1));
                for (int d = 0; d < f->ndests; d++)
                    cands[d] = f->dests[d].name;
                const char *hint = rule_suggest(aa->name, cands, (size_t)f->ndests);
                onr_free(cands);
                if (hint)
                    rdiag_error(c->diag, aa->line, aa->col, aa->width,
                                "unknown destination \"%s\" (did you mean \"%s\"?)", aa->name,
                                hint);
                else
                    rdiag_error(c->diag, aa->line, aa->col, aa->width,
                                "unknown destination \"%s\": declare it with `destination %s "
                                "{ url = \"https://...\" }`",
                                aa->name, aa->name);
            }
        }
    }
}

static void check_labels(checker *c)
{
    rule_set *rs = c->rs;
    ast_file *f = c->f;
    for (int i = 0; i < f->nlabels; i++) {
        ast_label *l = &f->labels[i];
        if (label_index(c, l->name) >= 0)
            continue; /* duplicate: reported by check_duplicates */
        int id = add_matcher(c, l->name);
        if (id < 0) {
            rdiag_error(c->diag, l->line, l->col, (int)strlen(l->name),
                        "too many labels (the limit is %d)", RULE_MAX_MATCHERS);
            return;
        }
        for (int k = 0; k < l->npats; k++) {
            ref *r = l->pats[k];
            if (r->kind == REF_NAME) {
                matcher_add_name(c, id, r->name);
            } else {
                int kd = kind_of(r->name);
                if (kd < 0) {
                    const char *hint = rule_suggest(r->name, kinds, ONR_ARRAY_LEN(kinds));
                    if (hint)
                        ref_error(c, r, "unknown message kind \"%s\" (did you mean \"%s\"?)",
                                  r->name, hint);
                    else
                        ref_error(c, r,
                                  "a label matches event names in quotes or the kinds "
                                  "track, page, screen, identify, group, alias, any; "
                                  "found \"%s\"",
                                  r->name);
                    continue;
                }
                rs->matchers[id].kinds |=
                    kd == TRK_KIND_COUNT ? (1u << TRK_KIND_COUNT) - 1 : 1u << kd;
            }
        }
        rs->labels[id] = l->name;
        if (l->where) {
            deps_reset(c);
            check_condition(c, l->where, CX_EVENT, "a label's condition");
        }
    }
}

static void check_dests(checker *c)
{
    rule_set *rs = c->rs;
    ast_file *f = c->f;
    rs->dests = onr_calloc((size_t)f->ndests + 1, sizeof(*rs->dests));
    rs->ndests = f->ndests;
    for (int i = 0; i < f->ndests; i++) {
        ast_dest *a = &f->dests[i];
        rule_dest *d = &rs->dests[i];
        d->name = a->name;
        d->line = a->line;
        d->nsettings = a->nsettings;
        d->settings =
            onr_arena_alloc(&rs->arena, sizeof(rule_setting) * (size_t)(a->nsettings + 1));
        for (int k = 0; k < a->nsettings; k++) {
            ast_setting *s = &a->settings[k];
            rule_setting *o = &d->settings[k];
            o->key = s->key;
            for (int j = 0; j < k; j++)
                if (strcmp(a->settings[j].key, s->key) == 0)
                    rdiag_error(c->diag, s->value.line, s->value.col, 1,
                                "setting \"%s\" is given twice in destination \"%s\"", s->key,
                                a->name);
            switch (s->value.kind) {
            case T_STRING:
            case T_IDENT:
                o->type = RT_STR;
                o->str = s->value.str;
                break;
            case T_NUMBER:
                o->type = RT_NUM;
                o->num = s->value.num;
                break;
            default:
                o->type = RT_DUR;
                o->ms = s->value.ms;
                break;
            }
        }
    }
}

/* ---- layout */

static int place(size_t *at, size_t size, size_t align)
{
    *at = (*at + align - 1) & ~(align - 1);
    int off = (int)*at;
    *at += size;
    return off;
}

static void plan_layout(checker *c)
{
    rule_set *rs = c->rs;
    rule_layout *L = &rs->layout;
    size_t at = sizeof(rule_hdr);
    L->off_segments = place(&at, 8, 8);
    /* int64 fields first, then uint32, then bytes */
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        if (c->need[i] & NEED_FIRST)
            m->off_first = place(&at, 8, 8);
        if (c->need[i] & NEED_LAST)
            m->off_last = place(&at, 8, 8);
    }
    int nbits = 0;
    for (int i = 0; i < rs->ntriggers; i++) {
        rule_trigger *t = &rs->triggers[i];
        if (t->limit == LIMIT_COOLDOWN)
            t->off_last_fire = place(&at, 8, 8);
        if (t->on == ON_ABSENCE)
            t->off_pending = place(&at, 8, 8);
        if (t->limit == LIMIT_ONCE)
            t->bit_fired = nbits++;
        if (t->on == ON_IDLE)
            t->bit_idle = nbits++;
    }
    for (int i = 0; i < rs->nseqs; i++)
        rs->seqs[i].off = place(&at, 8 * (size_t)rs->seqs[i].nsteps, 8);
    for (int i = 0; i < rs->nwindows; i++) {
        rule_window *w = &rs->windows[i];
        w->off = place(&at, 8 + 8 * (size_t)w->cap, 8);
        add_int(&rs->matchers[w->matcher].windows, &rs->matchers[w->matcher].nwindows, i);
    }
    for (int i = 0; i < rs->nseqs; i++) {
        rule_seq *q = &rs->seqs[i];
        for (int k = 0; k < q->nsteps; k++) {
            rule_matcher *m = &rs->matchers[q->steps[k]];
            bool dup = false;
            for (int j = 0; j < m->nseqs; j++)
                dup |= m->seqs[j] == i;
            if (!dup)
                add_int(&m->seqs, &m->nseqs, i);
        }
    }
    L->ntraits = (int)rs->schema.ntraits;
    L->off_traits = L->ntraits ? place(&at, sizeof(rule_trait_slot) * (size_t)L->ntraits, 8) : -1;
    for (int i = 0; i < rs->nmatchers; i++)
        if (c->need[i] & NEED_COUNT)
            rs->matchers[i].off_count = place(&at, 4, 4);
    /* once per D: triggers with the same D share the number of the current window, and
     * keep a bit each: fired in it */
    for (int i = 0; i < rs->ntriggers; i++) {
        rule_trigger *t = &rs->triggers[i];
        if (t->limit != LIMIT_ONCE_PER || t->off_last_fire >= 0)
            continue;
        int n = 0;
        for (int j = i; j < rs->ntriggers; j++)
            if (rs->triggers[j].limit == LIMIT_ONCE_PER && rs->triggers[j].limit_ms == t->limit_ms)
                n++;
        int bytes = (n + 7) / 8;
        int off = place(&at, 4 + (size_t)bytes, 4);
        int bit = 0;
        for (int j = i; j < rs->ntriggers; j++) {
            rule_trigger *u = &rs->triggers[j];
            if (u->limit == LIMIT_ONCE_PER && u->limit_ms == t->limit_ms) {
                u->off_last_fire = off;
                u->bit_once = bit++;
                u->once_group_bytes = bytes;
            }
        }
    }
    L->off_path = c->need_path ? place(&at, 4 + 4 * (size_t)c->path_len, 4) : -1;
    L->path_len = c->path_len;
    L->nbits = nbits;
    L->off_bits = nbits ? place(&at, ((size_t)nbits + 7) / 8, 1) : -1;
    L->size = (at + 7) & ~(size_t)7;
}

static uint64_t name_hash(const char *s, size_t n)
{
    return onr_hash64(s, n, 0x6f6e72616d70ULL);
}

static void build_name_table(rule_set *rs)
{
    int total = 0;
    for (int i = 0; i < rs->nmatchers; i++)
        total += rs->matchers[i].nnames;
    uint32_t size = 16;
    while (size < (uint32_t)total * 2 + 2)
        size *= 2;
    rs->name_table = onr_calloc(size, sizeof(*rs->name_table));
    rs->name_mask = size - 1;
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        for (int k = 0; k < m->nnames; k++) {
            size_t len = strlen(m->names[k]);
            uint64_t h = name_hash(m->names[k], len);
            uint32_t j = (uint32_t)h & rs->name_mask;
            while (rs->name_table[j].name && !(rs->name_table[j].hash == h &&
                                               strcmp(rs->name_table[j].name, m->names[k]) == 0))
                j = (j + 1) & rs->name_mask;
            struct rule_name_slot *s = &rs->name_table[j];
            s->hash = h;
            s->name = m->names[k];
            s->len = (uint32_t)len;
            bool dup = false;
            for (int q = 0; q < s->nmatchers; q++)
                dup |= s->matchers[q] == i;
            if (!dup)
                add_int(&s->matchers, &s->nmatchers, i);
        }
        for (int kd = 0; kd < TRK_KIND_COUNT; kd++)
            if (m->kinds & (1u << kd))
                add_int(&rs->kind_matchers[kd], &rs->nkind_matchers[kd], i);
    }
}

int rule_lookup_name(const rule_set *rs, const char *name, size_t len, const int **ids)
{
    uint64_t h = name_hash(name, len);
    uint32_t j = (uint32_t)h & rs->name_mask;
    while (rs->name_table[j].name) {
        const struct rule_name_slot *s = &rs->name_table[j];
        if (s->hash == h && s->len == len && memcmp(s->name, name, len) == 0) {
            *ids = s->matchers;
            return s->nmatchers;
        }
        j = (j + 1) & rs->name_mask;
    }
    *ids = NULL;
    return 0;
}

/* Windowed counts compared with a constant keep just enough timestamps to be exact. */
static void size_windows(checker *c, node *n)
{
    if (!n)
        return;
    if (n->kind == N_BINARY && n->op >= B_EQ && n->op <= B_GE) {
        node *w = NULL, *k = NULL;
        if (n->a->kind == N_CALL && n->a->has_within && strcmp(n->a->str, "count") == 0)
            w = n->a, k = n->b2;
        else if (n->b2->kind == N_CALL && n->b2->has_within && strcmp(n->b2->str, "count") == 0)
            w = n->b2, k = n->a;
        if (w && k->kind == N_NUM && w->slot >= 0) {
            rule_window *rw = &c->rs->windows[w->slot];
            if (k->num + 1 > RULE_MAX_WINDOW_CAP) {
                node_error(c, k,
                           "a windowed count is exact up to %d events; this compares with "
                           "%g",
                           RULE_MAX_WINDOW_CAP - 1, k->num);
            } else {
                int need = k->num < 1 ? 1 : (int)k->num + 1; /* in range: checked above */
                if (need > rw->cap)
                    rw->cap = need;
            }
            return;
        }
    }
    if (n->kind == N_CALL && n->has_within && n->slot >= 0 && strcmp(n->str, "count") == 0 &&
        c->rs->windows[n->slot].cap < RULE_DEFAULT_WINDOW_CAP)
        c->rs->windows[n->slot].cap = RULE_DEFAULT_WINDOW_CAP; /* not compared with a constant */
    size_windows(c, n->a);
    size_windows(c, n->b2);
    for (int i = 0; i < n->nitems; i++)
        size_windows(c, n->items[i]);
}

int rule_check(ast_file *f, rule_set *rs, rdiag *diag)
{
    checker c = {0};
    c.f = f;
    c.rs = rs;
    c.diag = diag;
    c.arena = &rs->arena;
    c.cur_segment = -1;
    int before = diag->errors;

    static const char *const builtin_names[RM_BUILTIN_COUNT] = {
        "Signed Up",     "Feature Used", "Onboarding Step Completed", "Onboarding Completed",
        "Session Ended",
    };
    for (int i = 0; i < RM_BUILTIN_COUNT; i++)
        name_matcher(&c, builtin_names[i]);
    rs->prop_feature = schema_prop(&c, NULL, "feature");
    rs->prop_step = schema_prop(&c, NULL, "step");

    check_duplicates(&c);
    check_labels(&c);
    check_dests(&c);
    check_segments(&c);
    check_triggers(&c);
    for (int i = 0; i < f->nsegments; i++) {
        size_windows(&c, f->segments[i].live);
        for (int k = 0; k < f->segments[i].nclauses; k++)
            size_windows(&c, f->segments[i].clauses[k].when);
    }
    for (int i = 0; i < f->ntriggers; i++)
        size_windows(&c, f->triggers[i].when);
    for (int i = 0; i < rs->nsegments; i++) {
        if (rs->segments[i].every_event)
            rs->every_event_segments |= UINT64_C(1) << i;
        if (rs->segments[i].timed)
            rs->timed_segments |= UINT64_C(1) << i;
        for (int k = 0; k < rs->segments[i].nclauses; k++) {
            if (rs->segments[i].clauses[k].on == RULE_ON_SESSION_START)
                rs->session_start_segments |= UINT64_C(1) << i;
            if (rs->segments[i].clauses[k].on == RULE_ON_SESSION_END)
                rs->session_end_segments |= UINT64_C(1) << i;
        }
    }
    for (int i = 0; i < rs->nwindows; i++)
        if (rs->windows[i].cap == 0)
            rs->windows[i].cap = RULE_DEFAULT_WINDOW_CAP;
    if (diag->errors == before) {
        plan_layout(&c);
        build_name_table(rs);
    }
    onr_free(c.need);
    onr_free(c.deps);
    return diag->errors - before;
}
