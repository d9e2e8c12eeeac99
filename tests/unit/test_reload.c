/*
 * test_reload.c - unit tests for hot reload of rules (eng_reload in src/engine/reload.c and
 * rule_layout_map in src/rules/remap.c): identical rules change nothing, kept counts carry
 * over by meaning, removed segments go, changed triggers start fresh, nothing is output at
 * the reload itself, checkpoints written after a reload load back, and a reload that adds
 * rules for events not seen before gives the outputs of an engine started on those rules.
 */
#include "engine/engine.h"
#include "track/simulate.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-01-01T00:00:00Z, a UTC midnight */
#define T0 INT64_C(1767225600000)
#define SEC ONR_SECOND_MS
#define MIN ONR_MINUTE_MS
#define HOUR ONR_HOUR_MS

TestSuite(reload);

/* ---- an engine, its rules and what it output (segments and triggers by name) */

typedef struct outrec {
    eng_out_kind kind;
    char name[RULE_MAX_NAME + 1];
    char user[64];
    int64_t at;
    uint64_t id;
    bool held;
} outrec;

typedef struct run {
    eng *e;
    rule_set *rs;
    outrec *out;
    int n, cap;
} run;

static void sink(void *ctx, const eng_out *o)
{
    run *r = ctx;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->out = realloc(r->out, sizeof(outrec) * (size_t)r->cap);
        cr_assert_not_null(r->out);
    }
    outrec *x = &r->out[r->n++];
    memset(x, 0, sizeof(*x));
    x->kind = o->kind;
    const char *name = o->kind == EO_TRIGGER_FIRED ? r->rs->triggers[o->trigger].name
                                                   : r->rs->segments[o->segment].name;
    snprintf(x->name, sizeof(x->name), "%s", name);
    cr_assert_lt(o->user_len, sizeof(x->user));
    memcpy(x->user, o->user, o->user_len);
    x->at = o->at_ms;
    x->id = o->id;
    x->held = o->held_out;
}

static rule_set *compile(const char *src)
{
    rule_set *rs;
    onr_buf err = {0};
    int n = rule_compile("t.rules", src, strlen(src), &rs, &err);
    cr_assert_eq(n, 0, "%s", onr_buf_cstr(&err));
    onr_buf_free(&err);
    return rs;
}

static void run_start(run *r, const char *src)
{
    memset(r, 0, sizeof(*r));
    r->rs = compile(src);
    r->e = eng_new(r->rs, NULL, sink, r);
}

/* Reloads to src, then frees the old rules at once: the engine must not read them again. */
static void run_reload(run *r, const char *src)
{
    rule_set *next = compile(src);
    char err[256];
    int before = r->n;
    cr_assert_eq(eng_reload(r->e, next, err, sizeof(err)), 0, "%s", err);
    rule_free(r->rs);
    r->rs = next;
    cr_assert_eq(r->n, before, "a reload outputs nothing");
}

static void run_free(run *r)
{
    eng_free(r->e);
    rule_free(r->rs);
    free(r->out);
    memset(r, 0, sizeof(*r));
}

static int seg_id(const rule_set *rs, const char *name)
{
    for (int i = 0; i < rs->nsegments; i++)
        if (strcmp(rs->segments[i].name, name) == 0)
            return i;
    return -1;
}

static int trig_id(const rule_set *rs, const char *name)
{
    for (int i = 0; i < rs->ntriggers; i++)
        if (strcmp(rs->triggers[i].name, name) == 0)
            return i;
    return -1;
}

static uint64_t seg_size(const run *r, const char *name)
{
    uint64_t sizes[RULE_MAX_SEGMENTS + 1];
    eng_segment_sizes(r->e, sizes);
    int i = seg_id(r->rs, name);
    cr_assert_geq(i, 0, "no segment %s", name);
    return sizes[i];
}

static uint64_t trig_count(const run *r, const char *name)
{
    uint64_t *fires = calloc((size_t)r->rs->ntriggers + 1, sizeof(uint64_t));
    uint64_t *held = calloc((size_t)r->rs->ntriggers + 1, sizeof(uint64_t));
    eng_trigger_counts(r->e, fires, held);
    int i = trig_id(r->rs, name);
    cr_assert_geq(i, 0, "no trigger %s", name);
    uint64_t n = fires[i];
    free(fires);
    free(held);
    return n;
}

/* Outputs of one kind and name for one user (NULL: any), the first of them in *first. */
static int count_out(const run *r, eng_out_kind kind, const char *name, const char *user,
                     const outrec **first)
{
    int n = 0;
    for (int i = 0; i < r->n; i++) {
        const outrec *x = &r->out[i];
        if (x->kind != kind || strcmp(x->name, name) != 0 || (user && strcmp(x->user, user)))
            continue;
        if (first && n == 0)
            *first = x;
        n++;
    }
    return n;
}

static int fires(const run *r, const char *trigger, const char *user)
{
    return count_out(r, EO_TRIGGER_FIRED, trigger, user, NULL);
}

static int entered(const run *r, const char *segment, const char *user)
{
    return count_out(r, EO_SEGMENT_ENTERED, segment, user, NULL);
}

static bool same_outputs(const outrec *a, int na, const outrec *b, int nb)
{
    int n = na < nb ? na : nb;
    for (int i = 0; i < n; i++)
        if (a[i].kind != b[i].kind || strcmp(a[i].name, b[i].name) != 0 ||
            strcmp(a[i].user, b[i].user) != 0 || a[i].at != b[i].at || a[i].id != b[i].id ||
            a[i].held != b[i].held) {
            fprintf(stderr, "first difference at output %d: %s %s at %lld vs %s %s at %lld\n", i,
                    a[i].name, a[i].user, (long long)a[i].at, b[i].name, b[i].user,
                    (long long)b[i].at);
            return false;
        }
    if (na != nb)
        fprintf(stderr, "%d outputs vs %d\n", na, nb);
    return na == nb;
}

/* ---- hand-built events */

static trk_str S(const char *s)
{
    return (trk_str){s, s ? (uint32_t)strlen(s) : 0};
}

static void track(run *r, int64_t ts, const char *uid, const char *name)
{
    trk_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = TRK_TRACK;
    ev.ts_ms = ts;
    ev.user_id = S(uid);
    ev.name = S(name);
    eng_process(r->e, &ev);
}

/* ---- a simulated day of onboarding traffic, decoded line by line with the current rules */

typedef struct stream {
    char *buf;
    size_t *start, *len;
    size_t n;
} stream;

static void stream_sim(stream *s, uint64_t users)
{
    sim_opts o;
    sim_opts_default(&o);
    o.users = users;
    o.seed = 11;
    o.spread_ms = 2 * HOUR;
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(sim_write(f, &o), 0);
    long size = ftell(f);
    rewind(f);
    s->buf = malloc((size_t)size + 1);
    cr_assert_eq(fread(s->buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    s->buf[size] = 0;
    size_t cap = 1024;
    s->start = malloc(sizeof(size_t) * cap);
    s->len = malloc(sizeof(size_t) * cap);
    s->n = 0;
    for (size_t at = 0; at < (size_t)size;) {
        char *nl = memchr(s->buf + at, '\n', (size_t)size - at);
        size_t end = nl ? (size_t)(nl - s->buf) : (size_t)size;
        if (s->n == cap) {
            cap *= 2;
            s->start = realloc(s->start, sizeof(size_t) * cap);
            s->len = realloc(s->len, sizeof(size_t) * cap);
        }
        s->start[s->n] = at;
        s->len[s->n++] = end - at;
        at = end + 1;
    }
    cr_assert_gt(s->n, 2000, "the stream has %zu events", s->n);
}

static void stream_free(stream *s)
{
    free(s->buf);
    free(s->start);
    free(s->len);
}

/* Runs lines [from, to). With inject, every 23rd event is followed, at the same time and for
 * the same user, by an "Upgrade Clicked": an event the simulator never sends. */
static void feed(run *r, const stream *s, size_t from, size_t to, bool inject)
{
    static trk_event ev;
    jdoc *doc = jdoc_new(TRK_MAX_MESSAGE_BYTES);
    char err[256];
    for (size_t i = from; i < to; i++) {
        int rc = trk_decode(doc, s->buf + s->start[i], s->len[i], &r->rs->schema, -1, &ev, err,
                            sizeof(err));
        cr_assert_eq(rc, 0, "line %zu: %s", i + 1, err);
        eng_process(r->e, &ev);
        if (inject && i % 23 == 0) {
            trk_event up;
            memset(&up, 0, sizeof(up));
            up.kind = TRK_TRACK;
            up.ts_ms = ev.ts_ms;
            up.user_id = ev.user_id;
            up.anon_id = ev.anon_id;
            up.name = S("Upgrade Clicked");
            eng_process(r->e, &up);
        }
    }
    jdoc_free(doc);
}

/* The default rules, with a windowed count, a sequence, a trait, limits of every kind and a
 * segment that reads another. */
#define BASE_RULES                                                                                 \
    "label INTERACTION = track, page, screen\n"                                                    \
    "segment explorers {\n"                                                                        \
    "    enter when time_to_first_action <= 2m and age <= 5m and count(INTERACTION) >= 10\n"       \
    "}\n"                                                                                          \
    "segment quick_completers {\n"                                                                 \
    "    enter on \"Onboarding Completed\" when age < 3m and session.number == 1\n"                \
    "}\n"                                                                                          \
    "segment hesitant_users {\n"                                                                   \
    "    enter on session end when session.duration < 5m and not completed\n"                      \
    "    enter on INTERACTION when not completed and (since(\"Feature Used\") ?? age) > 7m\n"      \
    "    exit when completed\n"                                                                    \
    "}\n"                                                                                          \
    "segment drop_off_zones {\n"                                                                   \
    "    enter on session end when step >= 3 and not completed\n"                                  \
    "    exit when completed\n"                                                                    \
    "}\n"                                                                                          \
    "segment busy { when count(\"Feature Used\", within: 10m) >= 3 }\n"                            \
    "segment busy_explorers { when in_segment(busy) and in_segment(explorers) }\n"                 \
    "trigger settings_to_dashboard {\n"                                                            \
    "    on \"Feature Used\"\n"                                                                    \
    "    when time_to_first_action < 120s and path ends [\"settings\", \"dashboard\"]\n"           \
    "    limit once per user\n"                                                                    \
    "    do cue \"dashboard-tour\"\n"                                                              \
    "}\n"                                                                                          \
    "trigger stalled_step {\n"                                                                     \
    "    on \"Onboarding Step Completed\" unless \"Onboarding Step Completed\" within 10m\n"       \
    "    when not completed\n"                                                                     \
    "    limit cooldown 1h\n"                                                                      \
    "    holdout 10%\n"                                                                            \
    "}\n"                                                                                          \
    "trigger idle_in_onboarding {\n"                                                               \
    "    on idle 7m when not completed and step >= 1 limit once per 1d\n"                          \
    "}\n"                                                                                          \
    "trigger welcome_explorer { on enter explorers }\n"                                            \
    "trigger quick_search {\n"                                                                     \
    "    on \"Search Performed\" when seq(\"Signed Up\", \"Search Performed\", within: 5m)\n"      \
    "    limit once per user\n"                                                                    \
    "}\n"                                                                                          \
    "trigger free_plan_feature {\n"                                                                \
    "    on \"Feature Used\" when trait.plan == \"free\" and count(\"Feature Used\") == 5\n"       \
    "}\n"                                                                                          \
    "trigger long_session { on session end when session.events > 20 limit once per 1h }\n"

/* The same rules with a segment no event enters: another layout, the same behavior. */
#define BASE_PLUS_UNUSED BASE_RULES "segment never_seen { enter when count(\"Never Sent\") >= 1 }\n"

/* Rules for an event only the second half of the test stream has, one of them reading a
 * windowed count the base rules already keep. */
#define UPGRADE_RULES                                                                              \
    "segment upgraders { enter when count(\"Upgrade Clicked\", within: 1d) >= 2 }\n"               \
    "trigger welcome_upgrader { on enter upgraders }\n"                                            \
    "trigger upgrade_nudge {\n"                                                                    \
    "    on \"Upgrade Clicked\"\n"                                                                 \
    "    when count(\"Feature Used\", within: 10m) >= 1 and not completed\n"                       \
    "    limit cooldown 1h\n"                                                                      \
    "}\n"

/* ---- the map between layouts */

Test(reload, the_same_rules_map_one_to_one_whatever_their_formatting)
{
    rule_set *a = compile(BASE_RULES);
    /* the same rules, re-spaced and with a comment: the compiled shape is what counts */
    char *src = malloc(strlen(BASE_RULES) * 2 + 64);
    char *w = src;
    w += sprintf(w, "# reformatted\n");
    for (const char *p = BASE_RULES; *p; p++) {
        *w++ = *p;
        if (*p == '(' || *p == ',')
            *w++ = ' ';
    }
    *w = 0;
    rule_set *b = compile(src);
    rule_map m;
    rule_layout_map(a, b, &m);
    cr_assert(m.identity);
    cr_assert_eq(m.segments_fresh, 0);
    for (int i = 0; i < b->ntriggers; i++)
        cr_assert_eq(m.trigger_from[i], i);
    rule_map_free(&m);

    rule_set *c = compile(BASE_PLUS_UNUSED);
    rule_layout_map(a, c, &m);
    cr_assert_not(m.identity, "a new segment is to be evaluated");
    cr_assert_neq(m.to_size, m.from_size, "a new counter changes the layout");
    cr_assert_eq(m.segments_fresh, UINT64_C(1) << seg_id(c, "never_seen"));
    rule_map_free(&m);
    rule_free(a);
    rule_free(b);
    rule_free(c);
    free(src);
}

Test(reload, fields_follow_their_meaning_across_reordering_and_renamed_labels)
{
    rule_set *a = compile("label X = \"A\"\n"
                          "segment s1 { enter when count(X) >= 2 }\n"
                          "segment s2 { enter when count(\"B\", within: 1h) >= 1 }\n"
                          "trigger t1 { on \"A\" limit once per user }\n"
                          "trigger t2 { on idle 5m }\n");
    rule_set *b = compile("trigger t2 { on idle 5m }\n"
                          "trigger t1 { on \"A\" limit once per user }\n"
                          "segment s2 { enter when count(\"B\", within: 1h) >= 1 }\n"
                          "segment s1 { enter when count(Y) >= 2 }\n"
                          "label Y = \"A\"\n");
    rule_map m;
    rule_layout_map(a, b, &m);
    cr_assert_not(m.identity, "offsets moved");
    cr_assert_eq(m.segments_fresh, 0, "a renamed label is the same events");
    cr_assert_eq(m.segment_from[0], 1);
    cr_assert_eq(m.segment_from[1], 0);
    cr_assert_eq(m.trigger_from[0], 1);
    cr_assert_eq(m.trigger_from[1], 0);

    /* a profile carried over reads the same under the new rules */
    uint8_t *p = calloc(1, a->layout.size), *q = calloc(1, b->layout.size);
    int ca = a->matchers[RM_BUILTIN_COUNT].off_count; /* X */
    cr_assert_geq(ca, 0);
    *(uint32_t *)(void *)(p + ca) = 7;
    rp_set_bit(p, a->layout.off_segments, 0, true); /* in s1 */
    rp_set_bit(p, a->layout.off_bits, a->triggers[0].bit_fired, true);
    rule_map_apply(&m, p, q);
    int cb = -1;
    for (int i = 0; i < b->nmatchers; i++)
        if (b->labels[i] && strcmp(b->labels[i], "Y") == 0)
            cb = b->matchers[i].off_count;
    cr_assert_geq(cb, 0);
    cr_assert_eq(*(uint32_t *)(void *)(q + cb), 7);
    cr_assert(rp_bit(q, b->layout.off_segments, 1));
    cr_assert_not(rp_bit(q, b->layout.off_segments, 0));
    cr_assert(rp_bit(q, b->layout.off_bits, b->triggers[1].bit_fired));
    cr_assert_not(rp_bit(q, b->layout.off_bits, b->triggers[0].bit_idle));
    free(p);
    free(q);
    rule_map_free(&m);
    rule_free(a);
    rule_free(b);
}

/* ---- identical rules */

Test(reload, reloading_identical_rules_changes_no_output)
{
    stream s;
    stream_sim(&s, 150);
    run ref;
    run_start(&ref, BASE_RULES);
    feed(&ref, &s, 0, s.n, false);
    eng_drain(ref.e);
    cr_assert_gt(ref.n, 300, "the stream exercises the rules (%d outputs)", ref.n);
    cr_assert_gt(fires(&ref, "idle_in_onboarding", NULL), 0);
    cr_assert_gt(fires(&ref, "stalled_step", NULL), 0);
    cr_assert_gt(entered(&ref, "busy", NULL), 0);

    /* the same rules (the fast path), then with an extra segment and back (users move to
     * another layout and back, every segment looked at again), at several points */
    static const char *const steps[] = {BASE_RULES, BASE_PLUS_UNUSED, BASE_RULES, BASE_RULES};
    run r;
    run_start(&r, BASE_RULES);
    size_t at = 0;
    for (size_t k = 0; k < ONR_ARRAY_LEN(steps); k++) {
        size_t cut = s.n * (k + 1) / (ONR_ARRAY_LEN(steps) + 1);
        feed(&r, &s, at, cut, false);
        run_reload(&r, steps[k]);
        at = cut;
    }
    feed(&r, &s, at, s.n, false);
    eng_drain(r.e);
    cr_assert(same_outputs(ref.out, ref.n, r.out, r.n));
    for (int i = 0; i < ref.rs->nsegments; i++)
        cr_assert_eq(seg_size(&r, ref.rs->segments[i].name),
                     seg_size(&ref, ref.rs->segments[i].name));
    for (int i = 0; i < ref.rs->ntriggers; i++)
        cr_assert_eq(trig_count(&r, ref.rs->triggers[i].name),
                     trig_count(&ref, ref.rs->triggers[i].name));
    eng_stats a, b;
    eng_get_stats(ref.e, &a);
    eng_get_stats(r.e, &b);
    cr_assert_eq(a.users, b.users);
    cr_assert_eq(a.fires, b.fires);
    cr_assert_eq(a.profile_bytes, b.profile_bytes, "bytes per user follow the rules only");
    run_free(&ref);
    run_free(&r);
    stream_free(&s);
}

/* ---- adding rules */

Test(reload, a_new_segment_reads_counts_kept_from_before_the_reload)
{
    run r;
    run_start(&r, "segment heavy { when count(\"Feature Used\", within: 7d) >= 5 }\n"
                  "trigger many { on \"Feature Used\" when count(\"Feature Used\") == 100 }\n");
    track(&r, T0, "u1", "Feature Used");
    track(&r, T0 + MIN, "u1", "Feature Used");
    track(&r, T0 + 2 * MIN, "u1", "Button Clicked");
    track(&r, T0 + 3 * MIN, "u1", "Button Clicked");
    for (int i = 0; i < 3; i++)
        track(&r, T0 + (4 + i) * MIN, "u2", "Feature Used");
    track(&r, T0 + 8 * MIN, "u3", "Button Clicked");
    eng_advance(r.e, T0 + 10 * MIN);
    int before = r.n;

    run_reload(&r, "segment heavy { when count(\"Feature Used\", within: 7d) >= 5 }\n"
                   "trigger many { on \"Feature Used\" when count(\"Feature Used\") == 100 }\n"
                   "segment power { enter when count(\"Feature Used\", within: 7d) >= 3 }\n"
                   "segment clicker { enter when count(\"Button Clicked\") >= 2 }\n"
                   "trigger welcome_power { on enter power }\n");
    cr_assert_eq(seg_size(&r, "power"), 0, "nobody is evaluated at the reload");
    cr_assert_eq(seg_size(&r, "clicker"), 0);

    /* u1 had 2 in the window: one more makes 3 */
    track(&r, T0 + 20 * MIN, "u1", "Feature Used");
    const outrec *x = NULL;
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "power", "u1", &x), 1);
    cr_assert_eq(x->at, T0 + 20 * MIN);
    cr_assert_eq(fires(&r, "welcome_power", "u1"), 1);
    /* u2 had 3 already: it enters at its next event, whatever the event */
    cr_assert_eq(entered(&r, "power", "u2"), 0);
    track(&r, T0 + 30 * MIN, "u2", "Page Viewed");
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "power", "u2", &x), 1);
    cr_assert_eq(x->at, T0 + 30 * MIN);
    cr_assert_eq(fires(&r, "welcome_power", "u2"), 1);
    /* u3 had none */
    track(&r, T0 + 31 * MIN, "u3", "Feature Used");
    track(&r, T0 + 32 * MIN, "u3", "Feature Used");
    cr_assert_eq(entered(&r, "power", "u3"), 0);
    track(&r, T0 + 33 * MIN, "u3", "Feature Used");
    cr_assert_eq(entered(&r, "power", "u3"), 1);
    cr_assert_eq(seg_size(&r, "power"), 3);

    /* a counter new in the new rules starts at zero: u1's two earlier clicks are not in it */
    track(&r, T0 + 40 * MIN, "u1", "Button Clicked");
    cr_assert_eq(entered(&r, "clicker", "u1"), 0);
    track(&r, T0 + 41 * MIN, "u1", "Button Clicked");
    cr_assert_eq(entered(&r, "clicker", "u1"), 1);
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "heavy", NULL, NULL), 0);
    cr_assert_gt(r.n, before);
    run_free(&r);
}

Test(reload, a_new_segment_is_evaluated_at_the_next_timer_or_event)
{
    run r;
    run_start(&r, "trigger t { on \"A\" when count(\"A\") < 9 }\n");
    track(&r, T0 - 2 * HOUR, "u2", "A"); /* its session ends long before the reload */
    track(&r, T0, "u1", "A");            /* its session ends 30 minutes after T0 */
    run_reload(&r, "trigger t { on \"A\" when count(\"A\") < 9 }\n"
                   "segment seen { enter when count(\"A\") >= 1 }\n");
    eng_advance(r.e, T0 + HOUR);
    const outrec *x = NULL;
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "seen", "u1", &x), 1);
    cr_assert_eq(x->at, T0 + 30 * MIN, "at u1's session-end timer");
    cr_assert_eq(entered(&r, "seen", "u2"), 0, "u2 has no timer left");
    track(&r, T0 + 2 * HOUR, "u2", "B");
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "seen", "u2", &x), 1);
    cr_assert_eq(x->at, T0 + 2 * HOUR, "at u2's next event");
    run_free(&r);
}

Test(reload, a_window_that_shrinks_keeps_its_newest_events)
{
    run r;
    run_start(&r, "trigger t { on \"B\" when count(\"A\", within: 1h) >= 10 }\n");
    for (int i = 0; i < 5; i++)
        track(&r, T0 + i * 10 * MIN, "u1", "A"); /* at 0, 10, 20, 30, 40 minutes */
    /* compared with 2, the window keeps 3 timestamps: those at 20, 30 and 40 */
    run_reload(&r, "trigger t { on \"B\" when count(\"A\", within: 1h) >= 2 }\n");
    track(&r, T0 + 75 * MIN, "u1", "B"); /* the hour from 15 minutes on: 20, 30, 40 */
    cr_assert_eq(fires(&r, "t", "u1"), 1);
    track(&r, T0 + 95 * MIN, "u1", "B"); /* from 35 on: 40 only */
    cr_assert_eq(fires(&r, "t", "u1"), 1);
    run_free(&r);
}

Test(reload, a_new_idle_trigger_does_not_fire_for_spells_already_past_it)
{
    run r;
    run_start(&r, "trigger t { on \"A\" }\n");
    track(&r, T0, "u1", "A");
    track(&r, T0 + 25 * MIN, "u2", "A");
    eng_advance(r.e, T0 + 30 * MIN);
    run_reload(&r, "trigger t { on \"A\" }\n"
                   "trigger nudge { on idle 10m }\n"
                   "trigger gap { on \"A\" unless \"B\" within 10m }\n");
    eng_drain(r.e);
    const outrec *x = NULL;
    cr_assert_eq(fires(&r, "nudge", "u1"), 0, "u1 was quiet for 30 minutes at the reload");
    cr_assert_eq(count_out(&r, EO_TRIGGER_FIRED, "nudge", "u2", &x), 1);
    cr_assert_eq(x->at, T0 + 35 * MIN, "u2's spell reaches 10 minutes after the reload");
    cr_assert_eq(fires(&r, "gap", NULL), 0, "an absence waits from the next A");
    track(&r, T0 + 60 * MIN, "u1", "A");
    eng_drain(r.e);
    cr_assert_eq(fires(&r, "gap", "u1"), 1);
    cr_assert_eq(fires(&r, "nudge", "u1"), 1);
    run_free(&r);
}

/* ---- removing and changing rules */

Test(reload, a_removed_segment_is_gone_and_comes_back_empty)
{
    static const char both[] = "segment a { enter when count(\"A\") >= 1 }\n"
                               "segment b { enter when count(\"B\") >= 1 }\n"
                               "trigger left_a { on exit a }\n"
                               "trigger t { on \"C\" when count(\"A\") > 5 }\n";
    run r;
    run_start(&r, both);
    track(&r, T0, "u1", "A");
    track(&r, T0 + MIN, "u1", "B");
    cr_assert_eq(seg_size(&r, "a"), 1);
    cr_assert_eq(seg_size(&r, "b"), 1);

    run_reload(&r, "segment b { enter when count(\"B\") >= 1 }\n"
                   "trigger t { on \"C\" when count(\"A\") > 5 }\n");
    cr_assert_eq(r.rs->nsegments, 1);
    cr_assert_eq(seg_size(&r, "b"), 1, "b is kept, with its members");
    track(&r, T0 + 2 * MIN, "u1", "C");
    cr_assert_eq(r.n, 2, "no exit is reported for a removed segment, no change for b");
    cr_assert_eq(fires(&r, "left_a", NULL), 0);

    /* back again, a is a new segment: empty, entered at the user's next event (count("A")
     * was kept by t) */
    run_reload(&r, both);
    cr_assert_eq(seg_size(&r, "a"), 0);
    cr_assert_eq(seg_size(&r, "b"), 1);
    track(&r, T0 + 3 * MIN, "u1", "C");
    const outrec *x = NULL;
    cr_assert_eq(count_out(&r, EO_SEGMENT_ENTERED, "a", "u1", &x), 2);
    cr_assert_eq(r.out[r.n - 1].at, T0 + 3 * MIN);
    cr_assert_eq(entered(&r, "b", "u1"), 1, "b is not entered again");
    run_free(&r);
}

Test(reload, a_changed_trigger_starts_fresh_and_an_unchanged_one_keeps_its_state)
{
    run r;
    run_start(&r, "trigger first_a { on \"A\" limit once per user }\n"
                  "trigger cool { on \"A\" limit cooldown 1h }\n"
                  "trigger daily { on \"A\" limit once per 1d }\n"
                  "trigger daily2 { on \"B\" limit once per 1d }\n"
                  "trigger nudge { on idle 10m }\n");
    track(&r, T0, "u1", "A");
    track(&r, T0 + MIN, "u1", "B");
    cr_assert_eq(fires(&r, "first_a", "u1"), 1);
    cr_assert_eq(fires(&r, "cool", "u1"), 1);
    cr_assert_eq(fires(&r, "daily", "u1"), 1);
    cr_assert_eq(fires(&r, "daily2", "u1"), 1);

    /* first_a: a new condition. cool: new actions only. daily2: another window length.
     * nudge: another duration. */
    run_reload(&r, "destination hook { url = \"https://example.com/hook\" }\n"
                   "trigger nudge { on idle 20m }\n"
                   "trigger first_a { on \"A\" when count(\"A\") >= 1 limit once per user }\n"
                   "trigger cool { on \"A\" limit cooldown 1h do webhook hook, cue \"x\" }\n"
                   "trigger daily { on \"A\" limit once per 1d }\n"
                   "trigger daily2 { on \"B\" limit once per 2d }\n");
    cr_assert_eq(trig_count(&r, "first_a"), 0, "a changed trigger's counters start again");
    cr_assert_eq(trig_count(&r, "cool"), 1);
    cr_assert_eq(trig_count(&r, "daily"), 1);
    cr_assert_eq(trig_count(&r, "daily2"), 0);

    track(&r, T0 + 5 * MIN, "u1", "A");
    track(&r, T0 + 6 * MIN, "u1", "B");
    cr_assert_eq(fires(&r, "first_a", "u1"), 2, "changed: fires again");
    cr_assert_eq(fires(&r, "cool", "u1"), 1, "unchanged: its cooldown still runs");
    cr_assert_eq(fires(&r, "daily", "u1"), 1, "unchanged: still today's window");
    cr_assert_eq(fires(&r, "daily2", "u1"), 2, "changed: a window of its own");
    cr_assert_eq(trig_count(&r, "cool"), 1);
    eng_drain(r.e);
    const outrec *x = NULL;
    cr_assert_eq(count_out(&r, EO_TRIGGER_FIRED, "nudge", "u1", &x), 1);
    cr_assert_eq(x->at, T0 + 26 * MIN, "the new idle time");
    track(&r, T0 + 2 * HOUR, "u1", "A");
    cr_assert_eq(fires(&r, "cool", "u1"), 2, "its cooldown ended an hour after the last fire");
    run_free(&r);
}

static void alias(run *r, int64_t ts, const char *uid, const char *previous)
{
    trk_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = TRK_ALIAS;
    ev.ts_ms = ts;
    ev.user_id = S(uid);
    ev.previous_id = S(previous);
    eng_process(r->e, &ev);
}

Test(reload, users_moved_to_a_new_layout_keep_their_keys_aliases_and_merges)
{
#define LONG_ID "u-with-an-id-long-enough-to-be-kept-on-the-heap-0001"
    run r;
    run_start(&r, "segment fans { enter when count(\"A\") >= 2 }\n");
    alias(&r, T0, "mid-1", "old-1"); /* old-1 names mid-1 */
    track(&r, T0 + SEC, "mid-1", "A");
    track(&r, T0 + MIN, LONG_ID, "A");
    alias(&r, T0 + 2 * MIN, LONG_ID, "mid-1"); /* mid-1 merges in; old-1 reaches it through mid-1 */
    cr_assert_eq(entered(&r, "fans", LONG_ID), 1);

    rule_set *next = compile("segment fans { enter when count(\"A\") >= 2 }\n"
                             "segment big_fans { enter when count(\"A\") >= 3 and "
                             "count(\"Z\", within: 1h) == 0 }\n");
    eng_stats before;
    eng_get_stats(r.e, &before);
    char err[256];
    cr_assert_eq(eng_reload(r.e, next, err, sizeof(err)), 0, "%s", err);
    rule_free(r.rs);
    r.rs = next;
    eng_stats after;
    eng_get_stats(r.e, &after);
    cr_assert_gt(after.profile_bytes, before.profile_bytes, "users moved to bigger profiles");
    cr_assert_eq(after.users, 1);

    track(&r, T0 + 3 * MIN, "old-1", "A");
    cr_assert_eq(entered(&r, "big_fans", LONG_ID), 1);
    track(&r, T0 + 4 * MIN, "mid-1", "B");
    track(&r, T0 + 5 * MIN, LONG_ID, "B");
    eng_get_stats(r.e, &after);
    cr_assert_eq(after.users, 1, "every id still reaches the one user");
    cr_assert_eq(seg_size(&r, "fans"), 1);
    cr_assert_eq(seg_size(&r, "big_fans"), 1);
    run_free(&r);
#undef LONG_ID
}

/* ---- checkpoints and a fresh start */

Test(reload, a_checkpoint_written_after_a_reload_loads_under_the_new_rules)
{
    static const char next[] = BASE_RULES UPGRADE_RULES
        "segment featured { enter when count(\"Feature Used\", within: 10m) >= 2 }\n";
    stream s;
    stream_sim(&s, 120);
    size_t cut = s.n / 2;
    run r;
    run_start(&r, BASE_RULES);
    feed(&r, &s, 0, cut, false);
    run_reload(&r, next);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(eng_save(r.e, f), 0);
    int saved = r.n;

    char err[256];
    run old;
    run_start(&old, BASE_RULES);
    rewind(f);
    cr_assert_eq(eng_load(old.e, f, err, sizeof(err)), ONR_E_INVALID, "the old layout refuses");
    run_free(&old);

    run l;
    run_start(&l, next);
    rewind(f);
    cr_assert_eq(eng_load(l.e, f, err, sizeof(err)), 0, "%s", err);
    fclose(f);

    feed(&r, &s, cut, s.n, true);
    eng_drain(r.e);
    feed(&l, &s, cut, s.n, true);
    eng_drain(l.e);
    cr_assert(same_outputs(r.out + saved, r.n - saved, l.out, l.n));
    cr_assert_gt(entered(&l, "featured", NULL), 0, "users enter the new segment after the reload");
    cr_assert_gt(fires(&l, "welcome_upgrader", NULL), 0);
    run_free(&r);
    run_free(&l);
    stream_free(&s);
}

Test(reload, adding_rules_for_new_events_gives_the_outputs_of_a_fresh_start)
{
    /* The added rules read only events the first half never has and a window the old rules
     * kept: every field they read holds what it would hold had they been loaded from the
     * start, so the outputs are those of an engine started on them. */
    static const char next[] = BASE_RULES UPGRADE_RULES;
    stream s;
    stream_sim(&s, 150);
    size_t cut = s.n / 2;

    run fresh;
    run_start(&fresh, next);
    feed(&fresh, &s, 0, cut, false);
    feed(&fresh, &s, cut, s.n, true);
    eng_drain(fresh.e);

    run r;
    run_start(&r, BASE_RULES);
    feed(&r, &s, 0, cut, false);
    rule_map m;
    rule_set *probe = compile(next);
    rule_layout_map(r.rs, probe, &m);
    cr_assert_not(m.identity);
    cr_assert_neq(m.from_size, m.to_size, "users move to a new layout");
    rule_map_free(&m);
    rule_free(probe);
    run_reload(&r, next);
    feed(&r, &s, cut, s.n, true);
    eng_drain(r.e);

    cr_assert(same_outputs(fresh.out, fresh.n, r.out, r.n));
    cr_assert_gt(fires(&r, "upgrade_nudge", NULL), 0);
    cr_assert_gt(fires(&r, "welcome_upgrader", NULL), 0);
    for (int i = 0; i < fresh.rs->nsegments; i++)
        cr_assert_eq(seg_size(&r, fresh.rs->segments[i].name),
                     seg_size(&fresh, fresh.rs->segments[i].name));
    run_free(&fresh);
    run_free(&r);
    stream_free(&s);
}

Test(reload, explain_records_follow_unchanged_rules)
{
    eng_opts o;
    eng_opts_default(&o);
    o.explain_user = "u1";
    run r;
    memset(&r, 0, sizeof(r));
    r.rs = compile("trigger t { on \"A\" when count(\"A\") >= 2 }\n"
                   "trigger gone { on \"A\" }\n");
    r.e = eng_new(r.rs, &o, sink, &r);
    track(&r, T0, "u1", "A");
    track(&r, T0 + MIN, "u1", "A");
    run_reload(&r, "segment s { enter when count(\"A\") > 1 }\n"
                   "trigger t { on \"A\" when count(\"A\") >= 2 }\n");
    onr_buf b = {0};
    cr_assert_eq(eng_explain(r.e, "u1", &b), 0);
    const char *txt = onr_buf_cstr(&b);
    cr_assert(strstr(txt, "count(\"A\") >= 2"), "%s", txt);
    cr_assert_null(strstr(txt, "gone"), "%s", txt);
    onr_buf_free(&b);
    track(&r, T0 + 2 * MIN, "u1", "B");
    cr_assert_eq(entered(&r, "s", "u1"), 1);
    cr_assert_eq(eng_explain(r.e, "u1", &b), 0);
    txt = onr_buf_cstr(&b);
    cr_assert(strstr(txt, "count(\"A\") > 1"), "%s", txt);
    onr_buf_free(&b);
    run_free(&r);
}
