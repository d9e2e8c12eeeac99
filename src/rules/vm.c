/*
 * vm.c - the bytecode VM: a small stack machine that evaluates one condition against one
 * user's profile bytes and, optionally, the current event. It never allocates. Besides the
 * result it reports the earliest time at which the result could change with no new event
 * (values like idle and since() grow with the clock), so the engine can set one timer per
 * user instead of polling.
 */
#include "rules_int.h"
#include "base/json.h"

#include <math.h>
#include <string.h>

#define IN_NEGATE (1 << 24)

uint64_t rule_value_hash(const trk_value *v)
{
    if (v->type == TV_STR)
        return onr_hash64(v->str.p, v->str.n, 0x737472) | 1;
    if (v->type == TV_NUM) {
        double d = v->num == 0 ? 0.0 : v->num; /* -0 and 0 are equal */
        return onr_hash64(&d, sizeof(d), 0x6e756d) | 1;
    }
    return 0;
}

uint32_t rule_feature_hash(const char *s, size_t n)
{
    uint32_t h = (uint32_t)onr_hash64(s, n, 0x70617468);
    return h ? h : 1; /* 0 marks an empty slot */
}

/* Value constructors: each sets every field it reads later, and nothing more. */
static inline rval v_null(void)
{
    rval v;
    v.t = RT_NULL;
    v.b = false;
    v.rate = 0;
    v.u.ms = 0;
    return v;
}

static inline rval v_bool(bool b)
{
    rval v = v_null();
    v.t = RT_BOOL;
    v.b = b;
    return v;
}

static inline rval v_num(double n)
{
    rval v;
    v.t = RT_NUM;
    v.b = false;
    v.rate = 0;
    v.u.n = n;
    return v;
}

static inline rval v_ms(uint8_t t, int64_t ms, double rate)
{
    rval v;
    v.t = t;
    v.b = false;
    v.rate = (float)rate;
    v.u.ms = ms;
    return v;
}

static rval from_trk(const trk_value *tv)
{
    rval v = v_null();
    switch (tv->type) {
    case TV_BOOL:
        return v_bool(tv->b);
    case TV_NUM:
        return v_num(tv->num);
    case TV_STR:
        v.t = RT_STR;
        v.u.s.p = tv->str.p;
        v.u.s.n = tv->str.n;
        return v;
    default:
        return v;
    }
}

static rval trait_value(const rule_set *rs, const uint8_t *prof, int id)
{
    rval v = v_null();
    if (!prof || rs->layout.off_traits < 0)
        return v;
    const rule_trait_slot *s =
        (const rule_trait_slot *)(const void *)(prof + rs->layout.off_traits) + id;
    switch (s->type) {
    case TV_BOOL:
        return v_bool(s->num != 0);
    case TV_NUM:
        return v_num(s->num);
    case TV_STR:
        v.t = RT_STR;
        v.u.s.p = s->s;
        v.u.s.n = s->len;
        return v;
    default:
        return v;
    }
}

/* Where the comparison l OP r may change with time alone; updates *next. */
static void plan(int64_t now, const rval *l, const rval *r, int64_t *next)
{
    if ((l->t != RT_DUR && l->t != RT_TIME) || l->t != r->t)
        return;
    double rate = l->rate - r->rate;
    if (rate == 0)
        return;
    double d = (double)(l->u.ms - r->u.ms);
    int64_t t;
    if (d == 0) {
        t = now + 1;
    } else {
        double cross = (double)now - d / rate;
        if (cross <= (double)now)
            return; /* moving apart */
        t = (int64_t)ceil(cross);
    }
    if (t < *next)
        *next = t;
}

/* -1, 0, 1, or 2 when the values cannot be ordered. */
static int compare(const rval *l, const rval *r)
{
    if (l->t != r->t)
        return 2;
    switch (l->t) {
    case RT_NUM:
        if (isnan(l->u.n) || isnan(r->u.n))
            return 2;
        return l->u.n < r->u.n ? -1 : l->u.n > r->u.n;
    case RT_DUR:
    case RT_TIME:
        return l->u.ms < r->u.ms ? -1 : l->u.ms > r->u.ms;
    case RT_STR: {
        uint32_t n = l->u.s.n < r->u.s.n ? l->u.s.n : r->u.s.n;
        int c = memcmp(l->u.s.p, r->u.s.p, n);
        if (c)
            return c < 0 ? -1 : 1;
        return l->u.s.n < r->u.s.n ? -1 : l->u.s.n > r->u.s.n;
    }
    case RT_BOOL:
        return l->b == r->b ? 0 : 2;
    default:
        return 2;
    }
}

static bool equal(const rval *l, const rval *r)
{
    if (l->t == RT_NULL || r->t == RT_NULL)
        return l->t == r->t;
    return compare(l, r) == 0;
}

static bool str_op(int op, const rval *l, const rval *r)
{
    if (l->t != RT_STR || r->t != RT_STR)
        return false;
    const char *s = l->u.s.p, *x = r->u.s.p;
    uint32_t n = l->u.s.n, k = r->u.s.n;
    if (k > n)
        return false;
    if (op == OP_STARTS_WITH)
        return memcmp(s, x, k) == 0;
    if (op == OP_ENDS_WITH)
        return memcmp(s + n - k, x, k) == 0;
    if (k == 0)
        return true;
    return memmem(s, n, x, k) != NULL;
}

static bool truthy(const rval *v)
{
    return v->t == RT_BOOL && v->b;
}

static bool path_match(const rule_set *rs, const uint8_t *prof, const rule_const_list *L, bool ends)
{
    if (!prof || rs->layout.off_path < 0)
        return false;
    uint32_t len = rp_u32(prof, rs->layout.off_path);
    const uint32_t *path = (const uint32_t *)(const void *)(prof + rs->layout.off_path + 4);
    uint32_t k = (uint32_t)L->n;
    if (k > len)
        return false;
    if (ends)
        return memcmp(path + len - k, L->hashes, 4 * (size_t)k) == 0;
    for (uint32_t i = 0; i + k <= len; i++)
        if (memcmp(path + i, L->hashes, 4 * (size_t)k) == 0)
            return true;
    return false;
}

static rval count_within(const rule_set *rs, const uint8_t *prof, int id, int64_t now,
                         int64_t *next)
{
    const rule_window *w = &rs->windows[id];
    if (!prof)
        return v_num(0);
    uint32_t len = rp_u32(prof, w->off);
    const int64_t *ts = (const int64_t *)(const void *)(prof + w->off + 8);
    int64_t from = now - w->within_ms; /* within is inclusive: an event W old counts */
    uint32_t n = 0;
    int64_t oldest = INT64_MAX;
    for (uint32_t i = 0; i < len; i++) {
        if (ts[i] >= from && ts[i] <= now) {
            n++;
            if (ts[i] < oldest)
                oldest = ts[i];
        }
    }
    if (oldest != INT64_MAX && oldest + w->within_ms + 1 < *next)
        *next = oldest + w->within_ms + 1;
    return v_num(n);
}

bool rule_eval_bool(const rule_env *env, int chunk, int64_t *next_ms)
{
    const rule_set *rs = env->rs;
    const uint8_t *prof = env->prof;
    const rule_hdr *h = prof ? rp_hdr(prof) : NULL;
    const int64_t now = env->now_ms;
    int64_t next = INT64_MAX;
    rval st[RULE_MAX_STACK + 2];
    int sp = 0;
    const rule_ins *code = rs->code;
    int pc = rs->chunks[chunk];

#define PUSH(v) (st[sp++] = (v))
#define LEAF(node, res, l, r)                                                                      \
    do {                                                                                           \
        if (env->leaf)                                                                             \
            env->leaf(env->leaf_ctx, (node), (res), (l), (r));                                     \
    } while (0)

    for (;;) {
        const rule_ins *in = &code[pc++];
        switch ((rule_op)in->op) {
        case OP_CONST:
            PUSH(rs->consts[in->a]);
            break;
        case OP_NULL:
            PUSH(v_null());
            break;
        case OP_TRUE:
            PUSH(v_bool(true));
            break;
        case OP_FALSE:
            PUSH(v_bool(false));
            break;
        case OP_PROP:
            PUSH(env->ev ? from_trk(&env->ev->props[in->a]) : v_null());
            break;
        case OP_TRAIT:
            PUSH(trait_value(rs, prof, in->a));
            break;
        case OP_EVENT_NAME: {
            rval v = v_null();
            if (env->ev) {
                v.t = RT_STR;
                v.u.s.p = env->ev->name.p;
                v.u.s.n = env->ev->name.n;
            }
            PUSH(v);
            break;
        }
        case OP_COUNT: {
            const rule_matcher *m = &rs->matchers[in->a];
            PUSH(v_num(prof && m->off_count >= 0 ? rp_u32(prof, m->off_count) : 0));
            break;
        }
        case OP_COUNT_WITHIN:
            PUSH(count_within(rs, prof, in->a, now, &next));
            break;
        case OP_FIRST:
        case OP_LAST:
        case OP_SINCE: {
            const rule_matcher *m = &rs->matchers[in->a];
            int off = in->op == OP_FIRST ? m->off_first : m->off_last;
            int64_t t = prof && off >= 0 ? rp_i64(prof, off) : 0;
            if (!t)
                PUSH(v_null());
            else if (in->op == OP_SINCE)
                PUSH(v_ms(RT_DUR, now - t, 1));
            else
                PUSH(v_ms(RT_TIME, t, 0));
            break;
        }
        case OP_SEQ: {
            const rule_seq *q = &rs->seqs[in->a];
            PUSH(v_bool(prof && rp_i64(prof, q->off + 8 * (q->nsteps - 1)) != 0));
            break;
        }
        case OP_TTFA: {
            int off = rs->matchers[RM_FEATURE_USED].off_first;
            int64_t t = prof && off >= 0 ? rp_i64(prof, off) : 0;
            PUSH(t && h->start_ms ? v_ms(RT_DUR, t - h->start_ms, 0) : v_null());
            break;
        }
        case OP_STEP:
            PUSH(v_num(h ? h->step : 0));
            break;
        case OP_COMPLETED:
            PUSH(v_bool(h && (h->flags & RH_COMPLETED)));
            break;
        case OP_SESSION_DURATION:
            PUSH(h && h->sess_start_ms ? v_ms(RT_DUR, h->last_ms - h->sess_start_ms, 0) : v_null());
            break;
        case OP_SESSION_EVENTS:
            PUSH(v_num(h ? h->sess_events : 0));
            break;
        case OP_SESSION_NUMBER:
            PUSH(v_num(h ? h->sess_number : 0));
            break;
        case OP_IDLE:
            PUSH(h && h->last_ms ? v_ms(RT_DUR, now - h->last_ms, 1) : v_null());
            break;
        case OP_AGE:
            PUSH(h && h->start_ms ? v_ms(RT_DUR, now - h->start_ms, 1) : v_null());
            break;
        case OP_START:
            PUSH(h && h->start_ms ? v_ms(RT_TIME, h->start_ms, 0) : v_null());
            break;
        case OP_NOW:
            PUSH(v_ms(RT_TIME, now, 1));
            break;
        case OP_IN_SEGMENT:
            PUSH(v_bool(prof && rp_bit(prof, rs->layout.off_segments, in->a)));
            break;
        case OP_PATH_ENDS:
        case OP_PATH_CONTAINS: {
            bool res = path_match(rs, prof, &rs->lists[in->a], in->op == OP_PATH_ENDS);
            LEAF(in->b, res, NULL, NULL);
            PUSH(v_bool(res));
            break;
        }
        case OP_EQ:
        case OP_NE:
        case OP_LT:
        case OP_LE:
        case OP_GT:
        case OP_GE: {
            rval r = st[--sp], l = st[--sp];
            bool res;
            if (in->op == OP_EQ) {
                res = equal(&l, &r);
            } else if (in->op == OP_NE) {
                /* "x != null" asks whether x is there; otherwise null or a type mismatch
                 * makes the comparison false, like every other comparison */
                if (in->a)
                    res = (l.t == RT_NULL) != (r.t == RT_NULL);
                else {
                    int c = compare(&l, &r);
                    res = c == 1 || c == -1 || (c == 2 && l.t == RT_BOOL && r.t == RT_BOOL);
                }
            } else {
                int c = l.t == RT_NUM && r.t == RT_NUM && !isnan(l.u.n) && !isnan(r.u.n)
                            ? (l.u.n < r.u.n ? -1 : l.u.n > r.u.n)
                            : compare(&l, &r);
                switch (in->op) {
                case OP_LT:
                    res = c == -1;
                    break;
                case OP_LE:
                    res = c == -1 || c == 0;
                    break;
                case OP_GT:
                    res = c == 1;
                    break;
                default:
                    res = c == 1 || c == 0;
                    break;
                }
            }
            if (l.rate != r.rate)
                plan(now, &l, &r, &next);
            LEAF(in->b, res, &l, &r);
            PUSH(v_bool(res));
            break;
        }
        case OP_IN: {
            rval l = st[--sp];
            const rule_const_list *L = &rs->lists[in->a & (IN_NEGATE - 1)];
            bool res = false;
            for (int i = 0; i < L->n && !res; i++)
                res = equal(&l, &L->items[i]);
            if (in->a & IN_NEGATE)
                res = !res && l.t != RT_NULL;
            LEAF(in->b, res, &l, NULL);
            PUSH(v_bool(res));
            break;
        }
        case OP_STARTS_WITH:
        case OP_ENDS_WITH:
        case OP_CONTAINS: {
            rval r = st[--sp], l = st[--sp];
            bool res = str_op(in->op, &l, &r);
            LEAF(in->b, res, &l, &r);
            PUSH(v_bool(res));
            break;
        }
        case OP_TRUTHY: {
            rval v = st[--sp];
            bool res = truthy(&v);
            LEAF(in->b, res, &v, NULL);
            PUSH(v_bool(res));
            break;
        }
        case OP_ADD:
        case OP_SUB:
        case OP_MUL:
        case OP_DIV: {
            rval r = st[--sp], l = st[--sp];
            rval out = v_null();
            bool lt = l.t == RT_DUR || l.t == RT_TIME, rt = r.t == RT_DUR || r.t == RT_TIME;
            if (l.t == RT_NUM && r.t == RT_NUM) {
                double a = l.u.n, b = r.u.n;
                if (in->op == OP_ADD)
                    out = v_num(a + b);
                else if (in->op == OP_SUB)
                    out = v_num(a - b);
                else if (in->op == OP_MUL)
                    out = v_num(a * b);
                else if (b != 0)
                    out = v_num(a / b);
            } else if (lt && rt && (in->op == OP_ADD || in->op == OP_SUB)) {
                uint8_t t = in->op == OP_SUB && l.t == RT_TIME && r.t == RT_TIME ? RT_DUR
                            : (l.t == RT_TIME || r.t == RT_TIME)                 ? RT_TIME
                                                                                 : RT_DUR;
                out = in->op == OP_ADD ? v_ms(t, l.u.ms + r.u.ms, l.rate + r.rate)
                                       : v_ms(t, l.u.ms - r.u.ms, l.rate - r.rate);
            } else if (l.t == RT_DUR && r.t == RT_NUM && (in->op == OP_MUL || in->op == OP_DIV)) {
                if (in->op == OP_MUL)
                    out = v_ms(RT_DUR, (int64_t)llround((double)l.u.ms * r.u.n), l.rate * r.u.n);
                else if (r.u.n != 0)
                    out = v_ms(RT_DUR, (int64_t)llround((double)l.u.ms / r.u.n), l.rate / r.u.n);
            } else if (l.t == RT_NUM && r.t == RT_DUR && in->op == OP_MUL) {
                out = v_ms(RT_DUR, (int64_t)llround((double)r.u.ms * l.u.n), r.rate * l.u.n);
            } else if (l.t == RT_DUR && r.t == RT_DUR && in->op == OP_DIV && r.u.ms != 0) {
                out = v_num((double)l.u.ms / (double)r.u.ms);
            }
            PUSH(out);
            break;
        }
        case OP_NEG: {
            rval *v = &st[sp - 1];
            if (v->t == RT_NUM)
                v->u.n = -v->u.n;
            else if (v->t == RT_DUR) {
                v->u.ms = -v->u.ms;
                v->rate = -v->rate;
            } else
                *v = v_null();
            break;
        }
        case OP_NOT:
            st[sp - 1] = v_bool(!truthy(&st[sp - 1]));
            break;
        case OP_JUMP_IF_FALSE:
            if (!truthy(&st[sp - 1]))
                pc = in->a;
            else
                sp--;
            break;
        case OP_JUMP_IF_TRUE:
            if (truthy(&st[sp - 1]))
                pc = in->a;
            else
                sp--;
            break;
        case OP_JUMP_IF_NOT_NULL:
            if (st[sp - 1].t != RT_NULL)
                pc = in->a;
            else
                sp--;
            break;
        case OP_RET:
            if (next_ms)
                *next_ms = next;
            return sp > 0 && truthy(&st[sp - 1]);
        case OP__COUNT:
            break;
        }
    }
#undef PUSH
#undef LEAF
}

void rval_format(const rule_set *rs, const rval *v, onr_buf *out)
{
    char tmp[48];
    switch (v->t) {
    case RT_NULL:
        onr_buf_puts(out, "null");
        break;
    case RT_BOOL:
        onr_buf_puts(out, v->b ? "true" : "false");
        break;
    case RT_NUM: {
        onr_buf b = {0};
        jw_num(&b, v->u.n);
        onr_buf_put(out, b.data, b.len);
        onr_buf_free(&b);
        break;
    }
    case RT_STR:
        jw_str(out, v->u.s.p, v->u.s.n);
        break;
    case RT_DUR:
        onr_duration_format(v->u.ms, tmp, sizeof(tmp));
        onr_buf_puts(out, tmp);
        break;
    case RT_TIME:
        onr_time_format(v->u.ms, tmp);
        onr_buf_puts(out, tmp);
        break;
    case RT_LIST: {
        const rule_const_list *L = &rs->lists[v->u.list];
        onr_buf_putc(out, '[');
        for (int i = 0; i < L->n; i++) {
            if (i)
                onr_buf_puts(out, ", ");
            rval_format(rs, &L->items[i], out);
        }
        onr_buf_putc(out, ']');
        break;
    }
    default:
        onr_buf_puts(out, "?");
        break;
    }
}
