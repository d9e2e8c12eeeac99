/*
 * explain.c - "why did (or didn't) this fire?": for one chosen user the engine records
 * every evaluation of every segment clause and trigger condition, with each condition's
 * operands, and this file turns the last of them into a report a person can read.
 */
#include "engine_int.h"

#include <stdio.h>
#include <string.h>

void xp_begin(eng *e)
{
    onr_buf_clear(&e->xscratch);
}

void xp_leaf(void *ctx, int node, bool result, const rval *l, const rval *r)
{
    eng *e = ctx;
    const rule_node_info *ni = &e->rs->nodes[node];
    onr_buf *b = &e->xscratch;
    onr_buf_printf(b, "      %s: %s", ni->text, result ? "true" : "false");
    bool open = false;
    if (ni->left && l && strcmp(ni->left, ni->text) != 0) {
        onr_buf_printf(b, " (%s = ", ni->left);
        rval_format(e->rs, l, b);
        open = true;
    }
    if (ni->right && r) {
        onr_buf_printf(b, "%s%s = ", open ? ", " : " (", ni->right);
        rval_format(e->rs, r, b);
        open = true;
    }
    onr_buf_puts(b, open ? ")\n" : "\n");
}

void xp_end(eng *e, xrec *rec, bool result, const char *what)
{
    rec->evals++;
    rec->passes += result;
    rec->last_ms = e->clock;
    rec->last_result = result;
    onr_buf_clear(&rec->last);
    char t[32];
    onr_time_format(e->clock, t);
    onr_buf_printf(&rec->last, "    last evaluated at %s on %s: %s was %s\n", t,
                   e->xcause ? e->xcause : "an event", what, result ? "true" : "false");
    onr_buf_put(&rec->last, e->xscratch.data, e->xscratch.len);
}

static void watch_free(const eng *e, xwatch *w)
{
    if (w->trig)
        for (int i = 0; i < e->rs->ntriggers; i++)
            onr_buf_free(&w->trig[i].last);
    if (w->seg)
        for (int i = 0; i < e->rs->nsegments * XSEG_SLOTS; i++)
            onr_buf_free(&w->seg[i].last);
    onr_free(w->trig);
    onr_free(w->seg);
    onr_free(w->key);
}

/* Drops watch i (its slot takes the last one). */
static void watch_drop(eng *e, int i)
{
    watch_free(e, &e->xw[i]);
    e->xw[i] = e->xw[--e->nxw];
}

void xp_free(eng *e)
{
    while (e->nxw)
        watch_drop(e, e->nxw - 1);
    onr_free(e->xw);
    e->xw = NULL;
    onr_buf_free(&e->xscratch);
}

void xp_seen(eng *e, user *u, const char *key, size_t n)
{
    for (int i = 0; i < e->nxw; i++) {
        xwatch *w = &e->xw[i];
        if (w->u || strlen(w->key) != n || memcmp(w->key, key, n) != 0)
            continue;
        if (xp_watch_of(e, u)) /* watched under another of its ids: one watch a user */
            watch_drop(e, i);
        else
            w->u = u;
        return;
    }
}

void xp_merged(eng *e, user *from, user *to)
{
    /* from's watch follows the merged profile, unless to has one already: then that one
     * (which recorded to's evaluations) stays, and asking for from's key finds it */
    bool to_watched = xp_watch_of(e, to) != NULL;
    for (int i = 0; i < e->nxw; i++) {
        if (e->xw[i].u != from)
            continue;
        if (to_watched) {
            watch_drop(e, i);
            return;
        }
        e->xw[i].u = to;
    }
}

/* The watch asked for as key: by its key, else by the profile key resolves to. */
static xwatch *find_watch(eng *e, const char *key)
{
    for (int i = 0; i < e->nxw; i++)
        if (strcmp(e->xw[i].key, key) == 0)
            return &e->xw[i];
    user *u = eng__lookup(e, (trk_str){key, (uint32_t)strlen(key)});
    return u ? xp_watch_of(e, u) : NULL;
}

void eng_explain_watch(eng *e, const char *key)
{
    const rule_set *rs = e->rs;
    xwatch *w = find_watch(e, key);
    if (w) { /* under this id, or another of the user's: the watch keeps its first */
        w->asked = ++e->xtick;
        return;
    }
    if (!e->xw)
        e->xw = onr_calloc(ENG_EXPLAIN_WATCHES, sizeof(xwatch));
    if (e->nxw == ENG_EXPLAIN_WATCHES) {
        int oldest = 0;
        for (int i = 1; i < e->nxw; i++)
            if (e->xw[i].asked < e->xw[oldest].asked)
                oldest = i;
        watch_drop(e, oldest);
    }
    w = &e->xw[e->nxw++];
    *w = (xwatch){
        .u = eng__lookup(e, (trk_str){key, (uint32_t)strlen(key)}),
        .key = onr_strdup(key),
        .trig = onr_calloc((size_t)rs->ntriggers + 1, sizeof(xrec)),
        .seg = onr_calloc((size_t)(rs->nsegments + 1) * XSEG_SLOTS, sizeof(xrec)),
        .since = e->clock > 0 ? e->clock : 1,
        .asked = ++e->xtick,
    };
}

#define NOT_SINCE "    not evaluated since the watch began\n"

static void never_seen(const eng *e, onr_buf *out, const char *what)
{
    onr_buf_printf(out, "    never evaluated: %s never happened for this user\n", what);
}

int eng_explain(eng *e, const char *who, onr_buf *out)
{
    const rule_set *rs = e->rs;
    char t[32];
    const xwatch *w = find_watch(e, who);
    if (!w)
        return ONR_E_NOTFOUND;
    if (!w->u) {
        onr_buf_printf(out, "user %s: no events seen for this user\n", w->key);
        return 0;
    }
    const user *u = w->u;
    const rule_hdr *h = (const rule_hdr *)(const void *)u->prof;
    size_t klen;
    const char *key = eng_user_key(u, &klen);
    onr_buf_printf(out, "user %.*s", (int)klen, key);
    if (strlen(w->key) != klen || memcmp(w->key, key, klen) != 0)
        onr_buf_printf(out, " (also known as %s)", w->key);
    onr_time_format(h->start_ms, t);
    if (w->since) {
        char since[32];
        onr_time_format(w->since, since);
        onr_buf_printf(out,
                       ": watched since %s (what the rules did before is not recorded), "
                       "%llu event%s since; %u session%s, started %s\n",
                       since, (unsigned long long)w->events, w->events == 1 ? "" : "s",
                       h->sess_number, h->sess_number == 1 ? "" : "s", t);
    } else {
        onr_buf_printf(out, ": %llu event%s, %u session%s, started %s\n",
                       (unsigned long long)w->events, w->events == 1 ? "" : "s", h->sess_number,
                       h->sess_number == 1 ? "" : "s", t);
    }

    onr_buf_puts(out, "\nsegments:\n");
    for (int si = 0; si < rs->nsegments; si++) {
        const rule_segment *s = &rs->segments[si];
        bool member = rp_bit(u->prof, rs->layout.off_segments, si);
        onr_buf_printf(out, "  %s: %s\n", s->name, member ? "member" : "not a member");
        if (s->live >= 0) {
            const xrec *r = &w->seg[si * XSEG_SLOTS];
            onr_buf_printf(out, "    when %s\n", s->live_text);
            if (r->evals)
                onr_buf_put(out, r->last.data, r->last.len);
            else
                onr_buf_puts(out, w->since ? NOT_SINCE : "    never evaluated\n");
            continue;
        }
        for (int k = 0; k < s->nclauses; k++) {
            const rule_clause *c = &s->clauses[k];
            const xrec *r = &w->seg[si * XSEG_SLOTS + 1 + k];
            onr_buf_printf(out, "    %s\n", c->describe);
            if (r->evals) {
                onr_buf_put(out, r->last.data, r->last.len);
            } else if (c->enter == member) {
                onr_buf_printf(out,
                               "    not evaluated: it applies only while the user is %s "
                               "the segment\n",
                               c->enter ? "outside" : "in");
            } else if (w->since) {
                onr_buf_puts(out, NOT_SINCE);
            } else if (c->on >= 0) {
                never_seen(e, out, rs->matchers[c->on].display);
            } else if (c->on == RULE_ON_SESSION_END) {
                never_seen(e, out, "a session end");
            } else {
                onr_buf_puts(out, "    never evaluated\n");
            }
        }
    }

    onr_buf_puts(out, "\ntriggers:\n");
    for (int ti = 0; ti < rs->ntriggers; ti++) {
        const rule_trigger *tr = &rs->triggers[ti];
        const xrec *r = &w->trig[ti];
        onr_buf_printf(out, "  %s: ", tr->name);
        if (r->fires) {
            onr_time_format(r->first_fire_ms, t);
            onr_buf_printf(out, "fired %llu time%s, first at %s", (unsigned long long)r->fires,
                           r->fires == 1 ? "" : "s", t);
            if (r->held_out)
                onr_buf_printf(out, " (%llu held out by holdout %d%%)",
                               (unsigned long long)r->held_out, tr->holdout_bp / 100);
            onr_buf_putc(out, '\n');
        } else {
            onr_buf_puts(out, "did not fire\n");
        }
        onr_buf_printf(out, "    %s%s%s\n", tr->describe, tr->when_text ? " when " : "",
                       tr->when_text ? tr->when_text : "");
        if (r->limited)
            onr_buf_printf(out, "    blocked %llu time%s by its limit\n",
                           (unsigned long long)r->limited, r->limited == 1 ? "" : "s");
        if (r->evals) {
            onr_buf_put(out, r->last.data, r->last.len);
        } else if (w->since) {
            onr_buf_puts(out, NOT_SINCE);
        } else {
            switch (tr->on) {
            case ON_EVENT:
                never_seen(e, out, rs->matchers[tr->matcher].display);
                break;
            case ON_ABSENCE:
                onr_buf_printf(out, "    never evaluated: no %s went %s without %s\n",
                               rs->matchers[tr->matcher].display, "unanswered",
                               rs->matchers[tr->unless_matcher].display);
                break;
            case ON_IDLE:
                onr_buf_puts(out, "    never evaluated: the user was never idle that long\n");
                break;
            case ON_ENTER:
            case ON_EXIT:
                onr_buf_printf(out, "    never evaluated: the user never %s %s\n",
                               tr->on == ON_ENTER ? "entered" : "left",
                               rs->segments[tr->segment].name);
                break;
            default:
                onr_buf_puts(out, "    never evaluated\n");
                break;
            }
        }
    }
    return 0;
}
