/*
 * compile.c - from checked syntax trees to bytecode: one chunk per condition (label and
 * trigger filters, segment and trigger conditions), constants and literal lists, and a
 * node table that lets explain show each condition's source and operand values. Also the
 * identities of matchers, windows, sequences, segments and triggers (what each means, so a
 * reload can carry profiles across rule sets), and the entry points rule_compile and
 * rule_free.
 */
#include "rules_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define IN_NEGATE (1 << 24)

typedef struct emitter {
    rule_set *rs;
    rdiag *diag;
    const char *src;
    int depth, max_depth;
    const node *top;
} emitter;

static int emit(emitter *e, rule_op op, int32_t a, int32_t b)
{
    rule_set *rs = e->rs;
    if (rs->ncode == rs->capcode) {
        rs->capcode = rs->capcode ? rs->capcode * 2 : 256;
        rs->code = onr_realloc(rs->code, sizeof(*rs->code) * (size_t)rs->capcode);
    }
    rule_ins *in = &rs->code[rs->ncode];
    in->op = (uint8_t)op;
    in->a = a;
    in->b = b;
    return rs->ncode++;
}

static void push(emitter *e, int n)
{
    e->depth += n;
    if (e->depth > e->max_depth)
        e->max_depth = e->depth;
}

static int add_const(emitter *e, rval v)
{
    rule_set *rs = e->rs;
    if (rs->nconsts == rs->capconsts) {
        rs->capconsts = rs->capconsts ? rs->capconsts * 2 : 64;
        rs->consts = onr_realloc(rs->consts, sizeof(*rs->consts) * (size_t)rs->capconsts);
    }
    rs->consts[rs->nconsts] = v;
    return rs->nconsts++;
}

static char *text_of(emitter *e, const node *n)
{
    return onr_arena_strndup(&e->rs->arena, e->src + n->start, n->end - n->start);
}

static bool is_literal(const node *n)
{
    return n->kind == N_NUM || n->kind == N_STR || n->kind == N_DUR || n->kind == N_BOOL ||
           n->kind == N_NULL || n->kind == N_LIST ||
           (n->kind == N_NEG && (n->a->kind == N_NUM || n->a->kind == N_DUR));
}

static int add_node(emitter *e, const node *n, const node *l, const node *r)
{
    rule_set *rs = e->rs;
    if (rs->nnodes == rs->capnodes) {
        rs->capnodes = rs->capnodes ? rs->capnodes * 2 : 64;
        rs->nodes = onr_realloc(rs->nodes, sizeof(*rs->nodes) * (size_t)rs->capnodes);
    }
    rule_node_info *ni = &rs->nodes[rs->nnodes];
    ni->line = n->line;
    ni->col = n->col;
    ni->text = text_of(e, n);
    ni->left = l && !is_literal(l) ? text_of(e, l) : NULL;
    ni->right = r && !is_literal(r) ? text_of(e, r) : NULL;
    return rs->nnodes++;
}

static int add_list(emitter *e, const node *n, bool path)
{
    rule_set *rs = e->rs;
    if (rs->nlists == rs->caplists) {
        rs->caplists = rs->caplists ? rs->caplists * 2 : 16;
        rs->lists = onr_realloc(rs->lists, sizeof(*rs->lists) * (size_t)rs->caplists);
    }
    rule_const_list *L = &rs->lists[rs->nlists];
    L->n = n->nitems;
    L->items = onr_arena_alloc(&rs->arena, sizeof(rval) * (size_t)(n->nitems + 1));
    L->hashes =
        path ? onr_arena_alloc(&rs->arena, sizeof(uint32_t) * (size_t)(n->nitems + 1)) : NULL;
    for (int i = 0; i < n->nitems; i++) {
        const node *it = n->items[i];
        rval v = {0};
        if (it->kind == N_STR) {
            v.t = RT_STR;
            v.u.s.p = it->str;
            v.u.s.n = it->str_len;
            if (path)
                L->hashes[i] = rule_feature_hash(it->str, it->str_len);
        } else if (it->kind == N_NUM) {
            v.t = RT_NUM;
            v.u.n = it->num;
        } else {
            v.t = RT_BOOL;
            v.b = it->b;
        }
        L->items[i] = v;
    }
    return rs->nlists++;
}

static void emit_value(emitter *e, const node *n);

static bool is_condition_node(const node *n)
{
    if (n->kind == N_PATH)
        return true;
    if (n->kind == N_BINARY)
        return n->op != B_ADD && n->op != B_SUB && n->op != B_MUL && n->op != B_DIV &&
               n->op != B_COALESCE;
    return n->kind == N_NOT;
}

/* Emits n as a condition: and/or/not stay structural, everything else is a leaf that
 * explain can report. */
static void emit_cond(emitter *e, const node *n)
{
    if (n->kind == N_BINARY && (n->op == B_AND || n->op == B_OR)) {
        emit_cond(e, n->a);
        int j = emit(e, n->op == B_AND ? OP_JUMP_IF_FALSE : OP_JUMP_IF_TRUE, 0, 0);
        push(e, -1);
        emit_cond(e, n->b2);
        e->rs->code[j].a = e->rs->ncode;
        return;
    }
    if (n->kind == N_NOT) {
        emit_cond(e, n->a);
        emit(e, OP_NOT, 0, 0);
        return;
    }
    if (is_condition_node(n)) {
        emit_value(e, n);
        return;
    }
    emit_value(e, n);
    emit(e, OP_TRUTHY, 0, add_node(e, n, n, NULL));
}

static void emit_name(emitter *e, const node *n)
{
    const char *s = n->str;
    static const struct {
        const char *name;
        rule_op op;
    } simple[] = {
        {"idle", OP_IDLE},
        {"age", OP_AGE},
        {"start", OP_START},
        {"now", OP_NOW},
        {"step", OP_STEP},
        {"completed", OP_COMPLETED},
        {"time_to_first_action", OP_TTFA},
        {"session.duration", OP_SESSION_DURATION},
        {"session.events", OP_SESSION_EVENTS},
        {"session.number", OP_SESSION_NUMBER},
        {"event", OP_EVENT_NAME},
    };
    for (size_t i = 0; i < ONR_ARRAY_LEN(simple); i++)
        if (strcmp(simple[i].name, s) == 0) {
            emit(e, simple[i].op, 0, 0);
            return;
        }
    if (strncmp(s, "trait", 5) == 0)
        emit(e, OP_TRAIT, n->slot, 0);
    else
        emit(e, OP_PROP, n->slot, 0);
}

static void emit_value(emitter *e, const node *n)
{
    rval v = {0};
    switch (n->kind) {
    case N_NUM:
        v.t = RT_NUM;
        v.u.n = n->num;
        emit(e, OP_CONST, add_const(e, v), 0);
        push(e, 1);
        return;
    case N_STR:
        v.t = RT_STR;
        v.u.s.p = n->str;
        v.u.s.n = n->str_len;
        emit(e, OP_CONST, add_const(e, v), 0);
        push(e, 1);
        return;
    case N_DUR:
        v.t = RT_DUR;
        v.u.ms = n->ms;
        emit(e, OP_CONST, add_const(e, v), 0);
        push(e, 1);
        return;
    case N_BOOL:
        emit(e, n->b ? OP_TRUE : OP_FALSE, 0, 0);
        push(e, 1);
        return;
    case N_NULL:
        emit(e, OP_NULL, 0, 0);
        push(e, 1);
        return;
    case N_LIST:
        return; /* rejected by the checker */
    case N_NAME:
        emit_name(e, n);
        push(e, 1);
        return;
    case N_CALL: {
        const char *f = n->str;
        if (strcmp(f, "count") == 0)
            emit(e, n->has_within ? OP_COUNT_WITHIN : OP_COUNT, n->slot, 0);
        else if (strcmp(f, "first") == 0)
            emit(e, OP_FIRST, n->slot, 0);
        else if (strcmp(f, "last") == 0)
            emit(e, OP_LAST, n->slot, 0);
        else if (strcmp(f, "since") == 0)
            emit(e, OP_SINCE, n->slot, 0);
        else if (strcmp(f, "seq") == 0)
            emit(e, OP_SEQ, n->slot, 0);
        else
            emit(e, OP_IN_SEGMENT, n->slot, 0);
        push(e, 1);
        return;
    }
    case N_NOT:
        emit_cond(e, n->a);
        emit(e, OP_NOT, 0, 0);
        return;
    case N_NEG:
        emit_value(e, n->a);
        emit(e, OP_NEG, 0, 0);
        return;
    case N_PATH:
        emit(e, n->path_ends ? OP_PATH_ENDS : OP_PATH_CONTAINS, add_list(e, n->a, true),
             add_node(e, n, NULL, NULL));
        push(e, 1);
        return;
    case N_BINARY:
        break;
    }
    if (n->op == B_AND || n->op == B_OR) {
        emit_cond(e, n);
        return;
    }
    if (n->op == B_IN || n->op == B_NOT_IN) {
        emit_value(e, n->a);
        emit(e, OP_IN, add_list(e, n->b2, false) | (n->op == B_NOT_IN ? IN_NEGATE : 0),
             add_node(e, n, n->a, NULL));
        return;
    }
    if (n->op == B_COALESCE) {
        emit_value(e, n->a);
        int j = emit(e, OP_JUMP_IF_NOT_NULL, 0, 0);
        push(e, -1);
        emit_value(e, n->b2);
        e->rs->code[j].a = e->rs->ncode;
        return;
    }
    emit_value(e, n->a);
    emit_value(e, n->b2);
    static const rule_op ops[] = {
        [B_EQ] = OP_EQ,
        [B_NE] = OP_NE,
        [B_LT] = OP_LT,
        [B_LE] = OP_LE,
        [B_GT] = OP_GT,
        [B_GE] = OP_GE,
        [B_ADD] = OP_ADD,
        [B_SUB] = OP_SUB,
        [B_MUL] = OP_MUL,
        [B_DIV] = OP_DIV,
        [B_STARTS_WITH] = OP_STARTS_WITH,
        [B_ENDS_WITH] = OP_ENDS_WITH,
        [B_CONTAINS] = OP_CONTAINS,
    };
    int node_idx = is_condition_node(n) ? add_node(e, n, n->a, n->b2) : 0;
    /* a = 1 on != marks a comparison with the literal null: "is it there?" */
    int null_test = n->op == B_NE && (n->a->kind == N_NULL || n->b2->kind == N_NULL);
    emit(e, ops[n->op], null_test, node_idx);
    push(e, -1);
}

static int emit_chunk(emitter *e, const node *n)
{
    if (!n)
        return -1;
    rule_set *rs = e->rs;
    if (rs->nchunks == rs->capchunks) {
        rs->capchunks = rs->capchunks ? rs->capchunks * 2 : 32;
        rs->chunks = onr_realloc(rs->chunks, sizeof(int) * (size_t)rs->capchunks);
    }
    int id = rs->nchunks++;
    rs->chunks[id] = rs->ncode;
    e->depth = e->max_depth = 0;
    emit_cond(e, n);
    emit(e, OP_RET, 0, 0);
    if (e->max_depth > RULE_MAX_STACK)
        rdiag_error(e->diag, n->line, n->col, (int)(n->end - n->start),
                    "condition is too complex: it needs %d stack slots, the limit is %d",
                    e->max_depth, RULE_MAX_STACK);
    return id;
}

static const char *describe_ref(emitter *e, const ref *r)
{
    char buf[512];
    switch (r->kind) {
    case REF_NAME:
        snprintf(buf, sizeof(buf), "\"%s\"", r->name);
        break;
    default:
        snprintf(buf, sizeof(buf), "%s", r->name);
        break;
    }
    return onr_arena_strndup(&e->rs->arena, buf, strlen(buf));
}

int rule_emit(ast_file *f, rule_set *rs, rdiag *diag)
{
    emitter e = {.rs = rs, .diag = diag, .src = diag->src};
    int before = diag->errors;
    for (int i = 0; i < f->nlabels; i++) {
        for (int m = 0; m < rs->nmatchers; m++)
            if (rs->labels[m] && strcmp(rs->labels[m], f->labels[i].name) == 0)
                rs->matchers[m].where = emit_chunk(&e, f->labels[i].where);
    }
    char buf[1024];
    for (int i = 0; i < f->nsegments; i++) {
        ast_segment *a = &f->segments[i];
        rule_segment *s = &rs->segments[i];
        s->live = emit_chunk(&e, a->live);
        s->live_text = a->live ? text_of(&e, a->live) : NULL;
        for (int k = 0; k < a->nclauses; k++) {
            s->clauses[k].when = emit_chunk(&e, a->clauses[k].when);
            snprintf(buf, sizeof(buf), "%s%s%s%s%s", a->clauses[k].enter ? "enter" : "exit",
                     a->clauses[k].on ? " on " : "",
                     a->clauses[k].on ? describe_ref(&e, a->clauses[k].on) : "",
                     a->clauses[k].when ? " when " : "",
                     a->clauses[k].when ? text_of(&e, a->clauses[k].when) : "");
            s->clauses[k].describe = onr_arena_strndup(&rs->arena, buf, strlen(buf));
        }
    }
    for (int i = 0; i < f->ntriggers; i++) {
        ast_trigger *a = &f->triggers[i];
        rule_trigger *t = &rs->triggers[i];
        t->where = emit_chunk(&e, a->where);
        t->when = emit_chunk(&e, a->when);
        t->when_text = a->when ? text_of(&e, a->when) : NULL;
        char dur[32];
        onr_duration_format(a->dur_ms, dur, sizeof(dur));
        switch (a->on) {
        case ON_EVENT:
            snprintf(buf, sizeof(buf), "on %s%s%s", describe_ref(&e, a->ev),
                     a->where ? " where " : "", a->where ? text_of(&e, a->where) : "");
            break;
        case ON_ABSENCE:
            snprintf(buf, sizeof(buf), "on %s%s%s unless %s within %s", describe_ref(&e, a->ev),
                     a->where ? " where " : "", a->where ? text_of(&e, a->where) : "",
                     describe_ref(&e, a->unless), dur);
            break;
        case ON_IDLE:
            snprintf(buf, sizeof(buf), "on idle %s", dur);
            break;
        case ON_ENTER:
        case ON_EXIT:
            snprintf(buf, sizeof(buf), "on %s %s", a->on == ON_ENTER ? "enter" : "exit",
                     a->ev->name);
            break;
        case ON_SESSION_START:
            snprintf(buf, sizeof(buf), "on session start");
            break;
        case ON_SESSION_END:
            snprintf(buf, sizeof(buf), "on session end");
            break;
        }
        t->describe = onr_arena_strndup(&rs->arena, buf, strlen(buf));
    }
    return diag->errors - before;
}

/* ---- identities: what each profile field means, for carrying state across rule sets */

static uint64_t mix(uint64_t h, uint64_t v)
{
    return onr_hash64(&v, sizeof(v), h);
}

static uint64_t str_ident(const char *s, size_t n)
{
    return onr_hash64(s, n, 0x6964656e74);
}

static uint64_t name_ident(const char *s)
{
    return str_ident(s, strlen(s));
}

static uint64_t value_ident(const rval *v)
{
    uint64_t h = mix(0x76616c, v->t);
    switch ((rv_type)v->t) {
    case RT_BOOL:
        return mix(h, v->b);
    case RT_NUM: {
        double d = v->u.n == 0 ? 0 : v->u.n; /* -0 and 0 alike */
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        return mix(h, bits);
    }
    case RT_STR:
        return mix(h, str_ident(v->u.s.p, v->u.s.n));
    case RT_DUR:
    case RT_TIME:
        return mix(h, (uint64_t)v->u.ms);
    default:
        return h;
    }
}

static uint64_t list_ident(const rule_const_list *L)
{
    uint64_t h = mix(0x6c697374, (uint64_t)L->n);
    for (int i = 0; i < L->n; i++)
        h = mix(h, value_ident(&L->items[i]));
    return h;
}

/* A chunk's compiled shape with every index replaced by what it stands for, so that the
 * same condition hashes alike in two rule sets whatever else they declare; 0 for none. */
static uint64_t chunk_ident(const rule_set *rs, int chunk)
{
    if (chunk < 0)
        return 0;
    int start = rs->chunks[chunk];
    int end = chunk + 1 < rs->nchunks ? rs->chunks[chunk + 1] : rs->ncode;
    uint64_t h = 0x6368756e6b;
    for (int pc = start; pc < end; pc++) {
        const rule_ins *in = &rs->code[pc];
        uint64_t a; /* b is a node index for explain (or 0): not part of the meaning */
        switch ((rule_op)in->op) {
        case OP_CONST:
            a = value_ident(&rs->consts[in->a]);
            break;
        case OP_PROP:
            a = name_ident(rs->schema.props[in->a]);
            break;
        case OP_TRAIT:
            a = name_ident(rs->schema.traits[in->a]);
            break;
        case OP_COUNT:
        case OP_FIRST:
        case OP_LAST:
        case OP_SINCE:
            a = rs->matchers[in->a].ident;
            break;
        case OP_COUNT_WITHIN:
            a = rs->windows[in->a].ident;
            break;
        case OP_SEQ:
            a = rs->seqs[in->a].ident;
            break;
        case OP_IN_SEGMENT:
            a = name_ident(rs->segments[in->a].name);
            break;
        case OP_PATH_ENDS:
        case OP_PATH_CONTAINS:
            a = list_ident(&rs->lists[in->a]);
            break;
        case OP_IN:
            a = mix(list_ident(&rs->lists[in->a & (IN_NEGATE - 1)]), (in->a & IN_NEGATE) != 0);
            break;
        case OP_JUMP_IF_FALSE:
        case OP_JUMP_IF_TRUE:
        case OP_JUMP_IF_NOT_NULL:
            a = (uint64_t)(in->a - start);
            break;
        default:
            a = (uint64_t)(uint32_t)in->a;
            break;
        }
        h = mix(mix(h, in->op), a);
    }
    return h;
}

static uint64_t matcher_ident(const rule_set *rs, int m)
{
    return m >= 0 ? rs->matchers[m].ident : 0;
}

/* Fills the ident of every matcher, window, sequence, segment and trigger. */
static void identify(rule_set *rs)
{
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        uint64_t h = mix(0x6d61746368, m->kinds);
        for (int k = 0; k < m->nnames; k++)
            h = mix(h, name_ident(m->names[k]));
        m->ident = mix(h, chunk_ident(rs, m->where));
    }
    for (int i = 0; i < rs->nwindows; i++) {
        rule_window *w = &rs->windows[i];
        w->ident = mix(mix(0x77696e646f77, matcher_ident(rs, w->matcher)), (uint64_t)w->within_ms);
    }
    for (int i = 0; i < rs->nseqs; i++) {
        rule_seq *q = &rs->seqs[i];
        uint64_t h = mix(0x736571, (uint64_t)q->within_ms);
        for (int k = 0; k < q->nsteps; k++)
            h = mix(h, matcher_ident(rs, q->steps[k]));
        q->ident = h;
    }
    for (int i = 0; i < rs->nsegments; i++) {
        rule_segment *s = &rs->segments[i];
        uint64_t h = mix(0x7365676d656e74, chunk_ident(rs, s->live));
        h = mix(h, (uint64_t)s->nclauses);
        for (int k = 0; k < s->nclauses; k++) {
            const rule_clause *c = &s->clauses[k];
            h = mix(h, c->enter);
            h = mix(h, c->on >= 0 ? matcher_ident(rs, c->on) : (uint64_t)(int64_t)c->on);
            h = mix(h, chunk_ident(rs, c->when));
        }
        s->ident = h;
    }
    for (int i = 0; i < rs->ntriggers; i++) {
        rule_trigger *t = &rs->triggers[i];
        uint64_t h = mix(0x74726967676572, t->on);
        h = mix(h, matcher_ident(rs, t->matcher));
        h = mix(h, chunk_ident(rs, t->where));
        h = mix(h, matcher_ident(rs, t->unless_matcher));
        h = mix(h, (uint64_t)t->dur_ms);
        h = mix(h, t->segment >= 0 ? name_ident(rs->segments[t->segment].name) : 0);
        h = mix(h, chunk_ident(rs, t->when));
        h = mix(h, t->limit);
        t->ident = mix(h, (uint64_t)t->limit_ms);
    }
}

/* ---- entry points */

int rule_compile(const char *path, const char *src, size_t len, rule_set **out, onr_buf *errors)
{
    *out = NULL;
    rdiag diag = {.path = path, .src = src, .len = len, .out = errors};
    if (len > RULE_MAX_SOURCE_BYTES) {
        rdiag_error(&diag, 0, 0, 0, "file is %zu bytes; the limit is %d", len,
                    RULE_MAX_SOURCE_BYTES);
        return diag.errors;
    }
    size_t bad;
    if (!onr_utf8_valid(src, len, &bad)) {
        int line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (src[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)src[i] & 0xc0) != 0x80) {
                col++;
            }
        }
        onr_buf_printf(errors, "%s:%d:%d: error: invalid UTF-8 (byte 0x%02x)\n", path, line, col,
                       (unsigned char)src[bad]);
        return 1;
    }
    rule_set *rs = onr_calloc(1, sizeof(*rs));
    onr_arena_init(&rs->arena, 16 * 1024);
    rs->path = onr_strdup(path);
    rs->source = onr_strndup(src, len);
    diag.src = rs->source;
    ast_file file;
    onr_arena ast_arena;
    onr_arena_init(&ast_arena, 16 * 1024);
    /* tokens' strings must outlive the tree: names and literals are kept by the rule set */
    rule_parse(rs->source, len, &rs->arena, &diag, &file);
    if (diag.errors == 0)
        rule_check(&file, rs, &diag);
    if (diag.errors == 0)
        rule_emit(&file, rs, &diag);
    if (diag.errors == 0)
        identify(rs);
    onr_arena_free(&ast_arena);
    if (diag.errors) {
        rule_free(rs);
        return diag.errors;
    }
    *out = rs;
    return 0;
}

int rule_compile_file(const char *path, rule_set **out, onr_buf *errors)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        onr_buf_printf(errors, "%s: error: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        onr_buf_printf(errors, "%s: error: is a directory, not a rules file\n", path);
        fclose(fp);
        return 1;
    }
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > RULE_MAX_SOURCE_BYTES) {
        onr_buf_printf(errors, "%s: error: file is %lld bytes; the limit is %d\n", path,
                       (long long)st.st_size, RULE_MAX_SOURCE_BYTES);
        fclose(fp);
        return 1;
    }
    onr_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        onr_buf_put(&b, chunk, n);
        if (b.len > RULE_MAX_SOURCE_BYTES)
            break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        onr_buf_printf(errors, "%s: error: cannot read\n", path);
        onr_buf_free(&b);
        return 1;
    }
    int rc = rule_compile(path, b.data ? b.data : "", b.len, out, errors);
    onr_buf_free(&b);
    return rc;
}

void rule_free(rule_set *rs)
{
    if (!rs)
        return;
    for (int i = 0; i < rs->nmatchers; i++) {
        rule_matcher *m = &rs->matchers[i];
        onr_free(m->triggers);
        onr_free(m->absences);
        onr_free(m->unlesses);
        onr_free(m->windows);
        onr_free(m->seqs);
        onr_free(m->seg_clauses);
    }
    for (int i = 0; i < rs->nsegments; i++) {
        onr_free(rs->segments[i].on_enter);
        onr_free(rs->segments[i].on_exit);
    }
    if (rs->name_table)
        for (uint32_t i = 0; i <= rs->name_mask; i++)
            onr_free(rs->name_table[i].matchers);
    for (int k = 0; k < TRK_KIND_COUNT; k++)
        onr_free(rs->kind_matchers[k]);
    onr_free(rs->name_table);
    onr_free(rs->idle_triggers);
    onr_free(rs->absence_triggers);
    onr_free(rs->session_start_triggers);
    onr_free(rs->session_end_triggers);
    onr_free(rs->matchers);
    onr_free(rs->labels);
    onr_free(rs->windows);
    onr_free(rs->seqs);
    onr_free(rs->segments);
    onr_free(rs->triggers);
    onr_free(rs->dests);
    onr_free(rs->code);
    onr_free(rs->chunks);
    onr_free(rs->nodes);
    onr_free(rs->consts);
    onr_free(rs->lists);
    onr_free(rs->path);
    onr_free(rs->source);
    onr_arena_free(&rs->arena);
    onr_free(rs);
}
