/*
 * test_engine.c - unit tests for the engine (src/engine/engine.c), driven with hand-built
 * events and a sink that records every output: profiles and identity (identify, alias,
 * merges), sessions, idle and absence timers, limits, holdout, the feature path, segment
 * changes and their triggers, timed segments, stable fire ids and memory per user.
 */
#include "engine/engine.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-01-01T00:00:00Z, a UTC midnight */
#define T0 INT64_C(1767225600000)
#define SEC ONR_SECOND_MS
#define MIN ONR_MINUTE_MS
#define HOUR ONR_HOUR_MS

typedef struct outrec {
    eng_out_kind kind;
    char user[64];
    int64_t at;
    int segment, trigger;
    uint64_t id;
    bool held;
} outrec;

#define MAX_OUT 20000
static outrec OUT[MAX_OUT];
static int NOUT;
static rule_set *RS;
static eng *E;

static void sink(void *ctx, const eng_out *o)
{
    ONR_UNUSED(ctx);
    cr_assert_lt(NOUT, MAX_OUT);
    outrec *r = &OUT[NOUT++];
    r->kind = o->kind;
    cr_assert_lt(o->user_len, sizeof(r->user));
    memcpy(r->user, o->user, o->user_len);
    r->user[o->user_len] = 0;
    r->at = o->at_ms;
    r->segment = o->segment;
    r->trigger = o->trigger;
    r->id = o->id;
    r->held = o->held_out;
}

static void stop(void)
{
    eng_free(E);
    E = NULL;
    rule_free(RS);
    RS = NULL;
    NOUT = 0;
}

TestSuite(engine, .fini = stop);

static void start_with(const char *src, const eng_opts *o)
{
    stop();
    onr_buf err = {0};
    int n = rule_compile("t.rules", src, strlen(src), &RS, &err);
    cr_assert_eq(n, 0, "%s", onr_buf_cstr(&err));
    onr_buf_free(&err);
    E = eng_new(RS, o, sink, NULL);
    cr_assert_not_null(E);
}

static void start(const char *src)
{
    start_with(src, NULL);
}

/* ---- events */

static trk_str S(const char *s)
{
    return (trk_str){s, s ? (uint32_t)strlen(s) : 0};
}

static void base_event(trk_event *ev, trk_kind kind, int64_t ts, const char *uid, const char *aid)
{
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->ts_ms = ts;
    ev->user_id = S(uid);
    ev->anon_id = S(aid);
}

static int prop_id(const char *path)
{
    for (uint32_t i = 0; i < RS->schema.nprops; i++)
        if (strcmp(RS->schema.props[i], path) == 0)
            return (int)i;
    cr_assert_fail("no property %s in the schema", path);
    return -1;
}

static int trait_id(const char *name)
{
    for (uint32_t i = 0; i < RS->schema.ntraits; i++)
        if (strcmp(RS->schema.traits[i], name) == 0)
            return (int)i;
    cr_assert_fail("no trait %s in the schema", name);
    return -1;
}

static void track_as(int64_t ts, const char *uid, const char *aid, const char *name)
{
    trk_event ev;
    base_event(&ev, TRK_TRACK, ts, uid, aid);
    ev.name = S(name);
    eng_process(E, &ev);
}

static void track(int64_t ts, const char *uid, const char *name)
{
    track_as(ts, uid, NULL, name);
}

static void track_str(int64_t ts, const char *uid, const char *name, const char *prop,
                      const char *value)
{
    trk_event ev;
    base_event(&ev, TRK_TRACK, ts, uid, NULL);
    ev.name = S(name);
    trk_value *v = &ev.props[prop_id(prop)];
    v->type = TV_STR;
    v->str = S(value);
    eng_process(E, &ev);
}

static void feature(int64_t ts, const char *uid, const char *f)
{
    track_str(ts, uid, "Feature Used", "feature", f);
}

static void identify(int64_t ts, const char *uid, const char *aid)
{
    trk_event ev;
    base_event(&ev, TRK_IDENTIFY, ts, uid, aid);
    eng_process(E, &ev);
}

static void alias(int64_t ts, const char *uid, const char *previous)
{
    trk_event ev;
    base_event(&ev, TRK_ALIAS, ts, uid, NULL);
    ev.previous_id = S(previous);
    eng_process(E, &ev);
}

/* ---- outputs */

static int trigger_index(const char *name)
{
    for (int i = 0; i < RS->ntriggers; i++)
        if (strcmp(RS->triggers[i].name, name) == 0)
            return i;
    cr_assert_fail("no trigger %s", name);
    return -1;
}

static int segment_index(const char *name)
{
    for (int i = 0; i < RS->nsegments; i++)
        if (strcmp(RS->segments[i].name, name) == 0)
            return i;
    cr_assert_fail("no segment %s", name);
    return -1;
}

/* The outputs of one kind for one trigger or segment (user NULL: any user), in order. */
static int find(eng_out_kind kind, const char *what, const char *user, const outrec **out, int max)
{
    int idx = kind == EO_TRIGGER_FIRED ? trigger_index(what) : segment_index(what);
    int n = 0;
    for (int i = 0; i < NOUT; i++) {
        const outrec *r = &OUT[i];
        if (r->kind != kind || (kind == EO_TRIGGER_FIRED ? r->trigger : r->segment) != idx)
            continue;
        if (user && strcmp(r->user, user) != 0)
            continue;
        if (n < max)
            out[n] = r;
        n++;
    }
    return n;
}

static int fires(const char *trigger, const char *user)
{
    const outrec *r[1];
    return find(EO_TRIGGER_FIRED, trigger, user, r, 0);
}

static const outrec *nth_fire(const char *trigger, int nth)
{
    const outrec *r[64];
    int n = find(EO_TRIGGER_FIRED, trigger, NULL, r, 64);
    cr_assert_gt(n, nth, "trigger %s fired %d times, want at least %d", trigger, n, nth + 1);
    return r[nth];
}

static int entered(const char *segment, const char *user)
{
    const outrec *r[1];
    return find(EO_SEGMENT_ENTERED, segment, user, r, 0);
}

static int exited(const char *segment, const char *user)
{
    const outrec *r[1];
    return find(EO_SEGMENT_EXITED, segment, user, r, 0);
}

static uint64_t segment_size(const char *segment)
{
    uint64_t sizes[RULE_MAX_SEGMENTS];
    eng_segment_sizes(E, sizes);
    return sizes[segment_index(segment)];
}

static eng_stats stats(void)
{
    eng_stats s;
    eng_get_stats(E, &s);
    return s;
}

/* ---- profiles and identity */

Test(engine, profiles_are_keyed_by_user_id)
{
    start("trigger third { on \"A\" when count(\"A\") == 3 }");
    track(T0, "u1", "A");
    track(T0 + 1, "u1", "A");
    track(T0 + 2, "u2", "A");
    track(T0 + 3, "u2", "A");
    cr_assert_eq(fires("third", NULL), 0);
    track(T0 + 4, "u1", "A");
    cr_assert_eq(fires("third", "u1"), 1);
    cr_assert_eq(fires("third", "u2"), 0);
    cr_assert_eq(stats().users, 2);
    cr_assert_eq(stats().events, 5);
}

Test(engine, user_ids_are_compared_whole)
{
    start("trigger second { on \"A\" when count(\"A\") == 2 }");
    track(T0, "user", "A");
    track(T0, "user-2", "A");
    track(T0, "use", "A");
    cr_assert_eq(fires("second", NULL), 0);
    cr_assert_eq(stats().users, 3);
}

Test(engine, anonymous_history_carries_over_after_identify)
{
    start("trigger third { on \"A\" when count(\"A\") == 3 }");
    track_as(T0, NULL, "anon-1", "A");
    track_as(T0 + SEC, NULL, "anon-1", "A");
    identify(T0 + 2 * SEC, "u1", "anon-1");
    cr_assert_eq(stats().users, 1, "identify made a second profile");
    track(T0 + 3 * SEC, "u1", "A");
    cr_assert_eq(fires("third", "u1"), 1, "the count did not carry over");
    cr_assert_eq(NOUT, 1);
    cr_assert_eq(stats().merges, 0);
}

Test(engine, anonymous_events_after_identify_rejoin_at_the_next_message_with_both_ids)
{
    /* identify retires the anonymousId; a later anonymous-only message starts a profile
     * that the user's next message carrying both ids merges back */
    start("trigger third { on \"A\" when count(\"A\") == 3 }\n"
          "trigger fourth { on \"A\" when count(\"A\") == 4 }\n");
    track_as(T0, NULL, "anon-1", "A");
    identify(T0 + SEC, "u1", "anon-1");
    track(T0 + 2 * SEC, "u1", "A");
    cr_assert_eq(stats().users, 1, "the anonymous profile became the user's");
    track_as(T0 + 3 * SEC, NULL, "anon-1", "A");
    cr_assert_eq(stats().users, 2);
    cr_assert_eq(fires("third", "u1"), 0);
    track_as(T0 + 4 * SEC, "u1", "anon-1", "A");
    cr_assert_eq(stats().users, 1);
    cr_assert_eq(stats().merges, 1);
    cr_assert_eq(fires("fourth", "u1"), 1, "counts were summed and reported under the userId");
}

Test(engine, identify_merges_two_existing_profiles)
{
    start("trigger fourth { on \"A\" when count(\"A\") == 4 }\n"
          "trigger fifth { on \"A\" when count(\"A\") == 5 }\n");
    track_as(T0, NULL, "anon-1", "A");
    track_as(T0 + SEC, NULL, "anon-1", "A");
    track(T0 + 2 * SEC, "u1", "A");
    cr_assert_eq(stats().users, 2);
    identify(T0 + 3 * SEC, "u1", "anon-1");
    cr_assert_eq(stats().users, 1);
    cr_assert_eq(stats().merges, 1);
    track(T0 + 4 * SEC, "u1", "A");
    cr_assert_eq(fires("fourth", "u1"), 1, "counts were not summed");
    track_as(T0 + 5 * SEC, NULL, "anon-1", "A");
    cr_assert_eq(fires("fifth", "u1"), 1, "the anonymous key does not forward");
    cr_assert_eq(NOUT, 2);
}

Test(engine, alias_merges_two_existing_profiles)
{
    start("trigger fourth { on \"A\" when count(\"A\") == 4 }\n"
          "trigger fifth { on \"A\" when count(\"A\") == 5 }\n");
    track(T0, "old-id", "A");
    track(T0 + SEC, "old-id", "A");
    track(T0 + 2 * SEC, "new-id", "A");
    alias(T0 + 3 * SEC, "new-id", "old-id");
    cr_assert_eq(stats().users, 1);
    cr_assert_eq(stats().merges, 1);
    track(T0 + 4 * SEC, "new-id", "A");
    cr_assert_eq(fires("fourth", "new-id"), 1);
    track(T0 + 5 * SEC, "old-id", "A");
    cr_assert_eq(fires("fifth", "new-id"), 1);
}

Test(engine, alias_of_an_unknown_previous_id_renames_nothing)
{
    start("trigger second { on \"A\" when count(\"A\") == 2 }");
    track(T0, "old-id", "A");
    alias(T0 + SEC, "new-id", "old-id");
    cr_assert_eq(stats().users, 1);
    track(T0 + 2 * SEC, "new-id", "A");
    cr_assert_eq(fires("second", "new-id"), 1);
}

Test(engine, merge_keeps_memberships_under_the_user_id)
{
    start("segment vip { enter on \"Upgraded\" }\n"
          "trigger vip_click { on \"B\" when in_segment(vip) }\n");
    track_as(T0, NULL, "anon-1", "Upgraded");
    cr_assert_eq(entered("vip", "anon-1"), 1);
    track(T0 + SEC, "u1", "A");
    identify(T0 + 2 * SEC, "u1", "anon-1");
    cr_assert_eq(entered("vip", "u1"), 1, "the membership gained is reported under u1");
    cr_assert_eq(exited("vip", NULL), 0);
    cr_assert_eq(segment_size("vip"), 1);
    track(T0 + 3 * SEC, "u1", "B");
    cr_assert_eq(fires("vip_click", "u1"), 1);
}

Test(engine, merging_two_members_counts_one_member)
{
    start("segment vip { enter on \"Upgraded\" }");
    track_as(T0, NULL, "anon-1", "Upgraded");
    track(T0 + SEC, "u1", "Upgraded");
    cr_assert_eq(segment_size("vip"), 2);
    identify(T0 + 2 * SEC, "u1", "anon-1");
    cr_assert_eq(segment_size("vip"), 1);
    cr_assert_eq(entered("vip", NULL), 2, "no new output: u1 was already a member");
}

Test(engine, merge_keeps_first_and_last_times)
{
    start("trigger early { on \"B\" when first(\"A\") == start and last(\"A\") - first(\"A\") == "
          "3m }");
    track_as(T0, NULL, "anon-1", "A");
    track(T0 + 3 * MIN, "u1", "A");
    identify(T0 + 4 * MIN, "u1", "anon-1");
    track(T0 + 5 * MIN, "u1", "B");
    cr_assert_eq(fires("early", "u1"), 1);
}

Test(engine, identify_sets_traits)
{
    start("trigger pro { on \"A\" when trait.plan == \"pro\" }");
    track(T0, "u1", "A");
    trk_event ev;
    base_event(&ev, TRK_IDENTIFY, T0 + SEC, "u1", NULL);
    ev.traits[trait_id("plan")] = (trk_value){.type = TV_STR, .str = S("pro")};
    eng_process(E, &ev);
    track(T0 + 2 * SEC, "u1", "A");
    cr_assert_eq(fires("pro", "u1"), 1);
    /* an identify without the trait keeps the last value */
    identify(T0 + 3 * SEC, "u1", NULL);
    track(T0 + 4 * SEC, "u1", "A");
    cr_assert_eq(fires("pro", "u1"), 2);
}

/* ---- sessions */

Test(engine, a_session_times_out_30_minutes_after_the_last_event)
{
    start("segment short_session { enter on session end when session.duration < 5m }\n"
          "trigger bye { on session end }\n");
    track(T0, "u1", "A");
    track(T0 + MIN, "u1", "A");
    eng_advance(E, T0 + 31 * MIN - 1);
    cr_assert_eq(NOUT, 0, "the session ended early");
    eng_advance(E, T0 + 2 * HOUR);
    cr_assert_eq(fires("bye", "u1"), 1);
    cr_assert_eq(nth_fire("bye", 0)->at, T0 + 31 * MIN);
    const outrec *r[1];
    cr_assert_eq(find(EO_SEGMENT_ENTERED, "short_session", "u1", r, 1), 1);
    cr_assert_eq(r[0]->at, T0 + 31 * MIN);
}

Test(engine, the_session_timeout_is_an_option)
{
    eng_opts o;
    eng_opts_default(&o);
    cr_assert_eq(o.session_timeout_ms, 30 * MIN);
    o.session_timeout_ms = 10 * MIN;
    start_with("trigger bye { on session end }", &o);
    track(T0, "u1", "A");
    eng_advance(E, T0 + HOUR);
    cr_assert_eq(fires("bye", "u1"), 1);
    cr_assert_eq(nth_fire("bye", 0)->at, T0 + 10 * MIN);
}

Test(engine, a_long_session_ends_only_after_a_quiet_spell)
{
    start("segment long_session { enter on session end when session.duration >= 50m }\n"
          "trigger bye { on session end }\n");
    for (int i = 0; i <= 10; i++)
        track(T0 + i * 5 * MIN, "u1", "A");
    eng_advance(E, T0 + 79 * MIN);
    cr_assert_eq(fires("bye", NULL), 0);
    eng_drain(E);
    cr_assert_eq(fires("bye", "u1"), 1);
    cr_assert_eq(nth_fire("bye", 0)->at, T0 + 80 * MIN);
    cr_assert_eq(entered("long_session", "u1"), 1);
}

Test(engine, a_session_ended_event_ends_the_session)
{
    start("segment short_session { enter on session end when session.duration < 5m }\n"
          "trigger bye { on session end }\n");
    track(T0, "u1", "A");
    track(T0 + 3 * MIN, "u1", "Session Ended");
    cr_assert_eq(fires("bye", "u1"), 1);
    cr_assert_eq(nth_fire("bye", 0)->at, T0 + 3 * MIN);
    cr_assert_eq(entered("short_session", "u1"), 1);
    eng_drain(E);
    cr_assert_eq(fires("bye", "u1"), 1, "the ended session timed out again");
}

Test(engine, session_number_increments_with_each_new_session)
{
    start("trigger hello { on session start }\n"
          "trigger second { on session start when session.number == 2 }\n"
          "trigger third { on \"A\" when session.number == 3 and session.events == 2 }\n");
    track(T0, "u1", "A");
    cr_assert_eq(fires("hello", "u1"), 1);
    cr_assert_eq(nth_fire("hello", 0)->at, T0);
    track(T0 + 10 * MIN, "u1", "A");
    cr_assert_eq(fires("hello", "u1"), 1, "10 minutes apart is the same session");
    track(T0 + 45 * MIN, "u1", "A");
    cr_assert_eq(fires("second", "u1"), 1);
    cr_assert_eq(nth_fire("second", 0)->at, T0 + 45 * MIN);
    track(T0 + 46 * MIN, "u1", "Session Ended");
    track(T0 + 47 * MIN, "u1", "A");
    track(T0 + 48 * MIN, "u1", "A");
    cr_assert_eq(fires("hello", "u1"), 3);
    cr_assert_eq(fires("third", "u1"), 1);
}

/* ---- idle and absence */

Test(engine, idle_fires_once_per_quiet_spell)
{
    start("trigger nudge { on idle 7m }");
    track(T0, "u1", "A");
    eng_advance(E, T0 + 7 * MIN - 1);
    cr_assert_eq(fires("nudge", NULL), 0);
    eng_advance(E, T0 + 3 * HOUR);
    cr_assert_eq(fires("nudge", "u1"), 1);
    cr_assert_eq(nth_fire("nudge", 0)->at, T0 + 7 * MIN);
    track(T0 + 4 * HOUR, "u1", "A");
    eng_drain(E);
    cr_assert_eq(fires("nudge", "u1"), 2);
    cr_assert_eq(nth_fire("nudge", 1)->at, T0 + 4 * HOUR + 7 * MIN);
}

Test(engine, idle_does_not_fire_when_an_event_comes_first)
{
    start("trigger nudge { on idle 7m }");
    track(T0, "u1", "A");
    track(T0 + 5 * MIN, "u1", "A");
    eng_advance(E, T0 + 11 * MIN);
    cr_assert_eq(fires("nudge", NULL), 0);
    eng_advance(E, T0 + 12 * MIN);
    cr_assert_eq(fires("nudge", "u1"), 1);
    cr_assert_eq(nth_fire("nudge", 0)->at, T0 + 12 * MIN);
}

Test(engine, idle_checks_its_condition_at_the_deadline)
{
    start("trigger nudge { on idle 7m when count(\"A\") >= 2 }");
    track(T0, "u1", "A");
    track(T0, "u2", "A");
    track(T0 + MIN, "u2", "A");
    eng_drain(E);
    cr_assert_eq(fires("nudge", "u1"), 0);
    cr_assert_eq(fires("nudge", "u2"), 1);
}

Test(engine, idle_limited_once_per_user_fires_once)
{
    start("trigger nudge { on idle 7m limit once per user }");
    track(T0, "u1", "A");
    eng_advance(E, T0 + HOUR);
    track(T0 + 2 * HOUR, "u1", "A");
    eng_advance(E, T0 + 3 * HOUR);
    cr_assert_eq(fires("nudge", "u1"), 1);
}

Test(engine, absence_fires_when_the_other_event_does_not_come)
{
    start("trigger stalled { on \"A\" unless \"B\" within 10m }");
    track(T0, "u1", "A");
    eng_advance(E, T0 + 10 * MIN - 1);
    cr_assert_eq(fires("stalled", NULL), 0);
    eng_advance(E, T0 + HOUR);
    cr_assert_eq(fires("stalled", "u1"), 1);
    cr_assert_eq(nth_fire("stalled", 0)->at, T0 + 10 * MIN);
}

Test(engine, absence_is_cancelled_by_the_other_event)
{
    start("trigger stalled { on \"A\" unless \"B\" within 10m }");
    track(T0, "u1", "A");
    track(T0 + 5 * MIN, "u1", "B");
    eng_drain(E);
    cr_assert_eq(fires("stalled", NULL), 0);
    track(T0 + HOUR, "u1", "A");
    eng_drain(E);
    cr_assert_eq(fires("stalled", "u1"), 1, "a new A starts a new wait");
}

Test(engine, absence_waits_from_the_latest_start)
{
    start("trigger stalled { on \"Step\" unless \"Step\" within 10m }");
    track(T0, "u1", "Step");
    track(T0 + 5 * MIN, "u1", "Step");
    track(T0 + 12 * MIN, "u1", "Step");
    eng_drain(E);
    cr_assert_eq(fires("stalled", "u1"), 1);
    cr_assert_eq(nth_fire("stalled", 0)->at, T0 + 22 * MIN);
}

Test(engine, absence_respects_its_where)
{
    start("trigger stalled { on \"A\" where props.kind == \"x\" unless \"B\" within 10m }");
    track_str(T0, "u1", "A", "kind", "y");
    track_str(T0, "u2", "A", "kind", "x");
    eng_drain(E);
    cr_assert_eq(fires("stalled", "u1"), 0);
    cr_assert_eq(fires("stalled", "u2"), 1);
}

/* ---- event triggers, limits and holdout */

Test(engine, event_trigger_respects_where_and_when)
{
    start("trigger t { on \"A\" where props.plan == \"pro\" when count(\"A\") >= 2 }");
    track_str(T0, "u1", "A", "plan", "pro");
    cr_assert_eq(fires("t", NULL), 0, "when: the first A");
    track_str(T0 + 1, "u1", "A", "plan", "free");
    cr_assert_eq(fires("t", NULL), 0, "where: not pro");
    track_str(T0 + 2, "u1", "A", "plan", "pro");
    cr_assert_eq(fires("t", "u1"), 1);
    cr_assert_eq(nth_fire("t", 0)->at, T0 + 2);
}

Test(engine, label_where_filters_what_the_label_matches)
{
    start("label ERR = \"API Error\" where props.status >= 500\n"
          "trigger burst { on ERR when count(ERR) == 2 }\n");
    trk_event ev;
    int status = prop_id("status");
    const double codes[] = {500, 404, 503};
    for (int i = 0; i < 3; i++) {
        base_event(&ev, TRK_TRACK, T0 + i, "u1", NULL);
        ev.name = S("API Error");
        ev.props[status] = (trk_value){.type = TV_NUM, .num = codes[i]};
        eng_process(E, &ev);
    }
    cr_assert_eq(fires("burst", "u1"), 1);
    cr_assert_eq(nth_fire("burst", 0)->at, T0 + 2);
}

Test(engine, page_calls_match_kind_labels)
{
    start("label INTERACTION = track, page\n"
          "trigger third { on INTERACTION when count(INTERACTION) == 3 }\n");
    trk_event ev;
    base_event(&ev, TRK_PAGE, T0, "u1", NULL);
    eng_process(E, &ev);
    base_event(&ev, TRK_IDENTIFY, T0 + 1, "u1", NULL);
    eng_process(E, &ev);
    track(T0 + 2, "u1", "Anything");
    cr_assert_eq(fires("third", NULL), 0, "identify is not an interaction");
    base_event(&ev, TRK_SCREEN, T0 + 3, "u1", NULL);
    eng_process(E, &ev);
    cr_assert_eq(fires("third", NULL), 0, "screen is not in the label");
    base_event(&ev, TRK_PAGE, T0 + 4, "u1", NULL);
    eng_process(E, &ev);
    cr_assert_eq(fires("third", "u1"), 1);
}

Test(engine, limit_once_per_user)
{
    start("trigger only_once { on \"A\" limit once per user }");
    track(T0, "u1", "A");
    track(T0 + HOUR, "u1", "A");
    track(T0 + 3 * ONR_DAY_MS, "u1", "A");
    track(T0, "u2", "A");
    cr_assert_eq(fires("only_once", "u1"), 1);
    cr_assert_eq(fires("only_once", "u2"), 1);
}

Test(engine, limit_cooldown)
{
    start("trigger t { on \"A\" limit cooldown 30m }");
    track(T0, "u1", "A");
    track(T0 + 29 * MIN, "u1", "A");
    track(T0 + 30 * MIN, "u1", "A");
    track(T0 + 31 * MIN, "u1", "A");
    track(T0 + 61 * MIN, "u1", "A");
    cr_assert_eq(fires("t", "u1"), 3);
    cr_assert_eq(nth_fire("t", 0)->at, T0);
    cr_assert_eq(nth_fire("t", 1)->at, T0 + 30 * MIN);
    cr_assert_eq(nth_fire("t", 2)->at, T0 + 61 * MIN);
}

Test(engine, limit_once_per_calendar_day)
{
    start("trigger daily { on \"A\" limit once per 1d }");
    track(T0 + 1 * HOUR, "u1", "A");
    track(T0 + 23 * HOUR, "u1", "A");
    track(T0 + 25 * HOUR, "u1", "A"); /* the next UTC day, though only 24h later */
    track(T0 + 26 * HOUR, "u1", "A");
    cr_assert_eq(fires("daily", "u1"), 2);
    cr_assert_eq(nth_fire("daily", 1)->at, T0 + 25 * HOUR);
}

Test(engine, limits_are_per_trigger_and_skip_when_the_condition_fails)
{
    start("trigger a { on \"A\" when count(\"A\") >= 2 limit once per user }\n"
          "trigger b { on \"A\" limit once per user }\n");
    track(T0, "u1", "A");
    cr_assert_eq(fires("a", NULL), 0);
    cr_assert_eq(fires("b", "u1"), 1);
    track(T0 + 1, "u1", "A");
    cr_assert_eq(fires("a", "u1"), 1, "a failed condition used up the limit");
    cr_assert_eq(fires("b", "u1"), 1);
}

static void many_users_send_a(int n)
{
    char uid[32];
    for (int i = 0; i < n; i++) {
        snprintf(uid, sizeof(uid), "user-%d", i);
        track(T0 + i, uid, "A");
    }
}

Test(engine, holdout_100_percent_holds_out_every_fire)
{
    start("trigger t { on \"A\" holdout 100% }");
    many_users_send_a(50);
    cr_assert_eq(fires("t", NULL), 50, "held-out fires are still reported");
    for (int i = 0; i < NOUT; i++)
        cr_assert(OUT[i].held, "%s was not held out", OUT[i].user);
    cr_assert_eq(stats().held_out, 50);
    uint64_t f[1], h[1];
    eng_trigger_counts(E, f, h);
    cr_assert_eq(f[0], 50);
    cr_assert_eq(h[0], 50);
}

Test(engine, holdout_0_percent_never_holds_out)
{
    start("trigger t { on \"A\" holdout 0% }\ntrigger u { on \"A\" }");
    many_users_send_a(50);
    cr_assert_eq(NOUT, 100);
    for (int i = 0; i < NOUT; i++)
        cr_assert_not(OUT[i].held);
    cr_assert_eq(stats().held_out, 0);
}

Test(engine, holdout_is_a_stable_per_user_split)
{
    start("trigger t { on \"A\" holdout 50% }");
    many_users_send_a(400);
    int held = 0;
    for (int i = 0; i < NOUT; i++)
        held += OUT[i].held;
    cr_assert(held > 120 && held < 280, "%d of 400 held out at 50%%", held);
    /* the same user is held out (or not) every time */
    bool first = OUT[7].held;
    track(T0 + HOUR, "user-7", "A");
    track(T0 + 2 * HOUR, "user-7", "A");
    cr_assert_eq(OUT[NOUT - 1].held, first);
    cr_assert_eq(OUT[NOUT - 2].held, first);
}

/* ---- the feature path */

Test(engine, path_ends_collapses_repeats)
{
    start("trigger tour { on \"Feature Used\" when path ends [\"settings\", \"dashboard\"] }");
    feature(T0, "u1", "settings");
    feature(T0 + 1, "u1", "settings");
    feature(T0 + 2, "u1", "dashboard");
    cr_assert_eq(fires("tour", "u1"), 1);
    cr_assert_eq(nth_fire("tour", 0)->at, T0 + 2);
    feature(T0 + 3, "u2", "settings");
    feature(T0 + 4, "u2", "billing");
    feature(T0 + 5, "u2", "dashboard");
    cr_assert_eq(fires("tour", "u2"), 0);
}

Test(engine, path_ignores_other_events_and_empty_features)
{
    start("trigger tour { on \"Feature Used\" when path ends [\"settings\", \"dashboard\"] }");
    feature(T0, "u1", "settings");
    track_str(T0 + 1, "u1", "Clicked", "feature", "billing");
    feature(T0 + 2, "u1", "");
    feature(T0 + 3, "u1", "dashboard");
    cr_assert_eq(fires("tour", "u1"), 1);
}

Test(engine, path_contains_collapses_repeats)
{
    start("trigger seen { on \"Feature Used\" when path contains [\"a\", \"b\"] }");
    feature(T0, "u1", "a");
    feature(T0 + 1, "u1", "a");
    feature(T0 + 2, "u1", "b");
    cr_assert_eq(fires("seen", "u1"), 1);
    feature(T0 + 3, "u2", "b");
    feature(T0 + 4, "u2", "a");
    cr_assert_eq(fires("seen", "u2"), 0, "wrong order");
}

Test(engine, path_contains_still_sees_a_match_after_later_features)
{
    start("trigger seen { on \"Feature Used\" when path contains [\"a\", \"b\"] }");
    feature(T0, "u1", "a");
    feature(T0 + 1, "u1", "b");
    feature(T0 + 2, "u1", "c");
    cr_assert_eq(fires("seen", "u1"), 2, "a, b, c contains a, b");
}

Test(engine, path_contains_but_not_ends_as_in_the_docs)
{
    /* the example trigger of docs/rules.md, "The feature adoption path" */
    start("trigger explored_billing {\n"
          "    on \"Feature Used\"\n"
          "    when path contains [\"billing\"] and not (path ends [\"billing\"])\n"
          "}\n");
    feature(T0, "u1", "billing");
    cr_assert_eq(fires("explored_billing", NULL), 0);
    feature(T0 + 1, "u1", "settings");
    cr_assert_eq(fires("explored_billing", "u1"), 1, "billing, settings: explored billing");
}

/* ---- segments */

Test(engine, segment_changes_are_reported_once_and_run_their_triggers)
{
    start("segment pro {\n  enter on \"Upgraded\"\n  exit on \"Downgraded\"\n}\n"
          "trigger welcome { on enter pro }\ntrigger sorry { on exit pro }\n");
    track(T0, "u1", "Upgraded");
    track(T0 + MIN, "u1", "Upgraded");
    cr_assert_eq(entered("pro", "u1"), 1);
    cr_assert_eq(fires("welcome", "u1"), 1);
    cr_assert_eq(nth_fire("welcome", 0)->at, T0);
    cr_assert_eq(segment_size("pro"), 1);
    track(T0 + 2 * MIN, "u1", "Downgraded");
    track(T0 + 3 * MIN, "u1", "Downgraded");
    cr_assert_eq(exited("pro", "u1"), 1);
    cr_assert_eq(fires("sorry", "u1"), 1);
    cr_assert_eq(nth_fire("sorry", 0)->at, T0 + 2 * MIN);
    cr_assert_eq(segment_size("pro"), 0);
    track(T0 + 4 * MIN, "u1", "Upgraded");
    cr_assert_eq(entered("pro", "u1"), 2);
    cr_assert_eq(fires("welcome", "u1"), 2);
    cr_assert_eq(stats().segment_changes, 3);
}

Test(engine, live_segment_follows_its_condition)
{
    start("segment busy { when count(\"A\") >= 2 and not completed }");
    track(T0, "u1", "A");
    cr_assert_eq(entered("busy", NULL), 0);
    track(T0 + 1, "u1", "A");
    track(T0 + 2, "u1", "A");
    cr_assert_eq(entered("busy", "u1"), 1);
    track(T0 + 3, "u1", "Onboarding Completed");
    cr_assert_eq(exited("busy", "u1"), 1);
}

Test(engine, segment_clause_conditions_see_the_updated_profile)
{
    start("segment engaged { enter on \"A\" when count(\"A\") >= 3 }");
    track(T0, "u1", "A");
    track(T0 + 1, "u1", "A");
    cr_assert_eq(entered("engaged", NULL), 0);
    track(T0 + 2, "u1", "A");
    cr_assert_eq(entered("engaged", "u1"), 1);
}

Test(engine, in_segment_sees_a_change_in_the_same_event)
{
    start("segment a { enter on \"A\" }\nsegment b { when in_segment(a) }");
    track(T0, "u1", "A");
    cr_assert_eq(entered("a", "u1"), 1);
    cr_assert_eq(entered("b", "u1"), 1);
}

Test(engine, timed_segment_changes_with_time_alone)
{
    start("segment idlers { when idle > 5m }\ntrigger gone { on enter idlers }");
    track(T0, "u1", "A");
    cr_assert_eq(NOUT, 0);
    eng_advance(E, T0 + 5 * MIN - 1);
    cr_assert_eq(entered("idlers", NULL), 0);
    eng_advance(E, T0 + 10 * MIN);
    const outrec *r[2];
    cr_assert_eq(find(EO_SEGMENT_ENTERED, "idlers", "u1", r, 2), 1);
    cr_assert(r[0]->at >= T0 + 5 * MIN && r[0]->at <= T0 + 5 * MIN + 1, "entered at +%lldms",
              (long long)(r[0]->at - T0));
    cr_assert_eq(fires("gone", "u1"), 1);
    eng_advance(E, T0 + 20 * MIN);
    cr_assert_eq(entered("idlers", NULL), 1);
    track(T0 + 25 * MIN, "u1", "A");
    cr_assert_eq(exited("idlers", "u1"), 1);
    cr_assert_eq(segment_size("idlers"), 0);
}

Test(engine, timed_segment_on_a_windowed_count)
{
    start("segment active { when count(\"A\", within: 10m) >= 2 }");
    track(T0, "u1", "A");
    track(T0 + 3 * MIN, "u1", "A");
    cr_assert_eq(entered("active", "u1"), 1);
    eng_advance(E, T0 + 10 * MIN);
    cr_assert_eq(exited("active", NULL), 0, "within is inclusive: 10m old still counts");
    eng_advance(E, T0 + 11 * MIN);
    const outrec *r[1];
    cr_assert_eq(find(EO_SEGMENT_EXITED, "active", "u1", r, 1), 1);
    cr_assert_eq(r[0]->at, T0 + 10 * MIN + 1);
}

/* ---- clock and ids */

Test(engine, the_clock_only_moves_forward)
{
    start("trigger t { on \"A\" }");
    track(T0 + HOUR, "u1", "A");
    cr_assert_eq(eng_clock(E), T0 + HOUR);
    eng_advance(E, T0);
    cr_assert_eq(eng_clock(E), T0 + HOUR);
    track(T0, "u1", "A");
    cr_assert_eq(eng_clock(E), T0 + HOUR);
    cr_assert_eq(fires("t", "u1"), 2);
    cr_assert_eq(nth_fire("t", 1)->at, T0 + HOUR, "a late event is processed at the clock");
}

Test(engine, timers_due_before_an_event_fire_before_it)
{
    start("trigger nudge { on idle 7m }\ntrigger t { on \"B\" }");
    track(T0, "u1", "A");
    track(T0 + HOUR, "u2", "B");
    cr_assert_eq(NOUT, 2);
    cr_assert_eq(OUT[0].trigger, trigger_index("nudge"));
    cr_assert_eq(OUT[0].at, T0 + 7 * MIN);
    cr_assert_eq(OUT[1].trigger, trigger_index("t"));
}

static void id_scenario(void)
{
    start("trigger t { on \"A\" }\ntrigger nudge { on idle 7m }");
    track(T0, "u1", "A");
    track(T0, "u1", "A");
    track(T0 + 1, "u2", "A");
    track(T0 + 2, "u1", "A");
    eng_drain(E);
}

Test(engine, fire_ids_are_stable_and_distinct)
{
    id_scenario();
    int n = NOUT;
    cr_assert_eq(n, 6);
    uint64_t ids[6];
    for (int i = 0; i < n; i++)
        ids[i] = OUT[i].id;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            cr_assert_neq(ids[i], ids[j], "fires %d and %d share an id", i, j);
    id_scenario();
    cr_assert_eq(NOUT, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(OUT[i].id, ids[i], "fire %d has a different id on replay", i);
}

/* ---- stats */

Test(engine, memory_per_user_is_small)
{
    start("label INTERACTION = track, page, screen\n"
          "segment explorers { enter when time_to_first_action <= 2m and age <= 5m and "
          "count(INTERACTION) >= 10 }\n"
          "segment hesitant { enter on session end when session.duration < 5m and not completed "
          "}\n"
          "trigger tour { on \"Feature Used\" when path ends [\"settings\", \"dashboard\"] limit "
          "once per user }\n"
          "trigger nudge { on idle 7m when not completed }\n"
          "trigger stalled { on \"Onboarding Step Completed\" unless \"Onboarding Step "
          "Completed\" within 10m limit cooldown 1h }\n");
    char uid[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(uid, sizeof(uid), "user-%06d", i);
        feature(T0 + i, uid, "settings");
        track(T0 + i + 1, uid, "Onboarding Step Completed");
    }
    eng_stats s = stats();
    cr_assert_eq(s.users, 5000);
    cr_assert_eq(s.events, 10000);
    cr_assert_gt(s.profile_bytes, sizeof(rule_hdr));
    cr_assert_lt(s.profile_bytes, 512);
    cr_assert_gt(s.bytes, s.users * s.profile_bytes, "bytes leaves out the profiles");
    cr_assert_lt(s.bytes / s.users, 512, "%zu bytes per user", (size_t)(s.bytes / s.users));
}

Test(engine, stats_count_fires_and_timers)
{
    start("trigger t { on \"A\" }\ntrigger nudge { on idle 7m }");
    track(T0, "u1", "A");
    track(T0, "u2", "B");
    eng_drain(E);
    eng_stats s = stats();
    cr_assert_eq(s.fires, 3);
    cr_assert_eq(s.events, 2);
    cr_assert_geq(s.timers_fired, 2);
}

Test(engine, once_per_limits_of_the_same_length_are_kept_per_trigger)
{
    /* a and b share a window group (1d), c has its own (1h); T0 is midnight UTC */
    start("trigger a { on \"A\" limit once per 1d }\n"
          "trigger b { on \"B\" limit once per 1d }\n"
          "trigger c { on \"A\" limit once per 1h }\n");
    track(T0, "u1", "A");
    track(T0 + MIN, "u1", "B");
    cr_assert_eq(fires("a", "u1"), 1);
    cr_assert_eq(fires("b", "u1"), 1, "a's fire must not block b");
    track(T0 + 2 * MIN, "u1", "A");
    cr_assert_eq(fires("a", "u1"), 1);
    cr_assert_eq(fires("c", "u1"), 1);
    track(T0 + 2 * HOUR, "u1", "A");
    cr_assert_eq(fires("a", "u1"), 1, "still the same day");
    cr_assert_eq(fires("c", "u1"), 2, "a new hour");
    track(T0 + 24 * HOUR + MIN, "u1", "B");
    cr_assert_eq(fires("b", "u1"), 2, "a new day");
    track(T0 + 24 * HOUR + 2 * MIN, "u1", "A");
    cr_assert_eq(fires("a", "u1"), 2, "the new day's window cleared a's bit too");
}

/* ---- checkpoints */

static const char CKPT_RULES[] =
    "label ANY = any\n"
    "segment busy { when count(\"Feature Used\", within: 10m) >= 3 }\n"
    "segment stepped { enter when step >= 2 exit when completed }\n"
    "segment short { enter on session end when session.duration < 2m }\n"
    "trigger t_idle { on idle 4m when not completed limit once per 1d }\n"
    "trigger t_gap { on \"Onboarding Step Completed\" unless \"Onboarding Step Completed\" "
    "within 3m limit cooldown 5m }\n"
    "trigger t_path { on \"Feature Used\" when path ends [\"settings\", \"dashboard\"] "
    "holdout 30% }\n"
    "trigger t_seq { on \"Feature Used\" when seq(\"Signed Up\", \"Feature Used\", within: 2m) "
    "limit once per user }\n"
    "trigger t_enter { on enter busy }\n"
    "trigger t_end { on session end when count(ANY) > 4 }\n";

/* Event i of a deterministic stream over 9 users: sign-ups, features, steps, completions,
 * anonymous visits identified later, gaps long enough for idle, absences and sessions. */
static void feed(int from, int to)
{
    static const char *const features[] = {"settings", "dashboard", "projects",
                                           "settings", "dashboard", "billing"};
    for (int i = from; i < to; i++) {
        char uid[16], aid[16];
        int u = (i * 7) % 9;
        snprintf(uid, sizeof(uid), "u%d", u);
        snprintf(aid, sizeof(aid), "a%d", u);
        int64_t ts =
            T0 + (int64_t)i * 41 * SEC + (i % 11 == 0 ? 9 * MIN : 0) + (int64_t)(i / 60) * 40 * MIN;
        trk_event ev;
        bool anon = u % 3 == 0 && i < 40;
        base_event(&ev, TRK_TRACK, ts, anon ? NULL : uid, anon || i % 5 == 0 ? aid : NULL);
        switch (i % 6) {
        case 0:
            ev.name = S(i % 12 == 0 ? "Signed Up" : "Feature Used");
            break;
        case 1:
        case 3: {
            ev.name = S("Feature Used");
            trk_value *v = &ev.props[prop_id("feature")];
            v->type = TV_STR;
            v->str = S(features[(i / 2) % 6]);
            break;
        }
        case 2: {
            ev.name = S("Onboarding Step Completed");
            trk_value *v = &ev.props[prop_id("step")];
            v->type = TV_NUM;
            v->num = 1 + (i / 6) % 4;
            break;
        }
        case 4:
            ev.name = S(i % 24 == 4 ? "Onboarding Completed" : "Button Clicked");
            break;
        default:
            ev.kind = i % 4 == 1 ? TRK_PAGE : TRK_TRACK;
            ev.name = S(i % 17 == 5 ? "Session Ended" : "Search Performed");
            break;
        }
        eng_process(E, &ev);
    }
}

static bool same_outputs(const outrec *a, int na, const outrec *b, int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (a[i].kind != b[i].kind || strcmp(a[i].user, b[i].user) != 0 || a[i].at != b[i].at ||
            a[i].id != b[i].id || a[i].held != b[i].held || a[i].segment != b[i].segment ||
            a[i].trigger != b[i].trigger)
            return false;
    return true;
}

Test(engine, a_restart_from_a_checkpoint_gives_the_same_outputs)
{
    static outrec ref[MAX_OUT];
    const int n = 400;
    start(CKPT_RULES);
    feed(0, n);
    eng_drain(E);
    int nref = NOUT;
    memcpy(ref, OUT, sizeof(outrec) * (size_t)nref);
    cr_assert_gt(nref, 50, "the stream exercises the rules (%d outputs)", nref);

    for (int cut = 1; cut < n; cut += 37) {
        start(CKPT_RULES);
        feed(0, cut);
        FILE *f = tmpfile();
        cr_assert_not_null(f);
        cr_assert_eq(eng_save(E, f), 0);
        rewind(f);
        eng_free(E);
        E = eng_new(RS, NULL, sink, NULL);
        char err[256];
        cr_assert_eq(eng_load(E, f, err, sizeof(err)), 0, "%s", err);
        fclose(f);
        feed(cut, n);
        eng_drain(E);
        if (!same_outputs(ref, nref, OUT, NOUT))
            for (int i = 0; i < nref && i < NOUT; i++)
                if (ref[i].at != OUT[i].at || ref[i].id != OUT[i].id ||
                    strcmp(ref[i].user, OUT[i].user) || ref[i].kind != OUT[i].kind) {
                    fprintf(stderr,
                            "first difference at output %d: %s %d/%d at %lld vs %s %d/%d at %lld\n",
                            i, ref[i].user, ref[i].segment, ref[i].trigger,
                            (long long)(ref[i].at - T0), OUT[i].user, OUT[i].segment,
                            OUT[i].trigger, (long long)(OUT[i].at - T0));
                    break;
                }
        cr_assert(same_outputs(ref, nref, OUT, NOUT),
                  "restarting after event %d changed the outputs (%d vs %d)", cut, NOUT, nref);
    }
}

/* A checkpoint of many users spans several of the writer's buffers (1 MiB): it loads back
 * to the same profiles, and damage beyond the first buffer is still found. */
Test(engine, a_checkpoint_larger_than_its_write_buffer_round_trips_and_finds_damage)
{
    start(CKPT_RULES);
    enum { USERS = 30000 };
    for (int i = 0; i < USERS; i++) {
        char uid[24];
        snprintf(uid, sizeof(uid), "user-%06d", i);
        feature(T0 + i, uid, i % 2 ? "settings" : "billing");
    }
    FILE *f = tmpfile();
    cr_assert_eq(eng_save(E, f), 0);
    long size = ftell(f);
    cr_assert_gt(size, 3L << 20, "the checkpoint spans several buffers (%ld bytes)", size);

    rewind(f);
    eng *back = eng_new(RS, NULL, sink, NULL);
    char err[256];
    cr_assert_eq(eng_load(back, f, err, sizeof(err)), 0, "%s", err);
    eng_stats a, b;
    eng_get_stats(E, &a);
    eng_get_stats(back, &b);
    cr_assert_eq(b.users, USERS);
    cr_assert_eq(b.users, a.users);
    const char *probe[] = {"user-000000", "user-014999", "user-029999"};
    for (size_t i = 0; i < ONR_ARRAY_LEN(probe); i++) {
        onr_buf x = {0}, y = {0};
        cr_assert_eq(eng_user_json(E, probe[i], strlen(probe[i]), &x), 0);
        cr_assert_eq(eng_user_json(back, probe[i], strlen(probe[i]), &y), 0);
        cr_assert_str_eq(onr_buf_cstr(&y), onr_buf_cstr(&x));
        onr_buf_free(&x);
        onr_buf_free(&y);
    }
    eng_free(back);

    /* a byte flipped in the third MiB */
    char *bytes = malloc((size_t)size);
    rewind(f);
    cr_assert_eq(fread(bytes, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    bytes[(2 << 20) + 12345] ^= 0x01;
    FILE *g = tmpfile();
    cr_assert_eq(fwrite(bytes, 1, (size_t)size, g), (size_t)size);
    rewind(g);
    eng *bad = eng_new(RS, NULL, sink, NULL);
    cr_assert_eq(eng_load(bad, g, err, sizeof(err)), ONR_E_INVALID);
    cr_assert(strstr(err, "damaged"), "%s", err);
    eng_free(bad);
    fclose(g);
    free(bytes);
}

Test(engine, a_checkpoint_refuses_other_rules_and_damage)
{
    start(CKPT_RULES);
    feed(0, 100);
    FILE *f = tmpfile();
    cr_assert_eq(eng_save(E, f), 0);
    long size = ftell(f);
    char err[256];

    /* rules with another layout */
    rule_set *other;
    onr_buf e2 = {0};
    const char *src = "trigger x { on \"Feature Used\" when count(\"Feature Used\") > 2 }";
    cr_assert_eq(rule_compile("o.rules", src, strlen(src), &other, &e2), 0);
    eng *o = eng_new(other, NULL, sink, NULL);
    rewind(f);
    cr_assert_eq(eng_load(o, f, err, sizeof(err)), ONR_E_INVALID);
    cr_assert(strstr(err, "another profile layout"), "%s", err);
    eng_free(o);
    rule_free(other);
    onr_buf_free(&e2);

    /* a flipped byte in the middle, and a file cut short */
    rewind(f);
    char *bytes = malloc((size_t)size);
    cr_assert_eq(fread(bytes, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    for (int pass = 0; pass < 2; pass++) {
        FILE *g = tmpfile();
        if (pass == 0) {
            bytes[size / 2] ^= 0x40;
            fwrite(bytes, 1, (size_t)size, g);
            bytes[size / 2] ^= 0x40;
        } else {
            fwrite(bytes, 1, (size_t)size - 5, g);
        }
        rewind(g);
        eng *fresh = eng_new(RS, NULL, sink, NULL);
        cr_assert_eq(eng_load(fresh, g, err, sizeof(err)), ONR_E_INVALID);
        cr_assert(strstr(err, "damaged") || strstr(err, "match"), "%s", err);
        eng_free(fresh);
        fclose(g);
    }
    free(bytes);
}

/* ---- explain: several watched users at once */

static const char *WATCH_RULES = "trigger second_click {\n"
                                 "    on \"Clicked\" when count(\"Clicked\") >= 2\n"
                                 "}\n";

/* The report for key, or "" when key is not watched. Valid until the next call. */
static const char *report(const char *key)
{
    static onr_buf b;
    onr_buf_clear(&b);
    if (eng_explain(E, key, &b) != 0)
        return "";
    return onr_buf_cstr(&b);
}

Test(engine, explain_watches_several_users_each_with_its_own_record)
{
    start(WATCH_RULES);
    track(T0, "a", "Clicked");
    track(T0, "b", "Clicked");
    eng_explain_watch(E, "a");
    eng_explain_watch(E, "b");
    track(T0 + SEC, "a", "Clicked");
    /* asking again for a watched user keeps its record */
    eng_explain_watch(E, "a");
    eng_explain_watch(E, "b");
    const char *ra = report("a");
    cr_assert(strstr(ra, "user a: watched since") && strstr(ra, ", 1 event since;"), "%s", ra);
    cr_assert(strstr(ra, "second_click: fired 1 time"), "%s", ra);
    cr_assert(strstr(ra, "count(\"Clicked\") >= 2: true (count(\"Clicked\") = 2)"), "%s", ra);
    const char *rb = report("b");
    cr_assert(strstr(rb, "user b: watched since") && strstr(rb, ", 0 events since;"), "%s", rb);
    cr_assert(strstr(rb, "second_click: did not fire") && strstr(rb, "not evaluated since"), "%s",
              rb);
    track(T0 + 2 * SEC, "b", "Clicked");
    rb = report("b");
    cr_assert(strstr(rb, "second_click: fired 1 time") && strstr(rb, ", 1 event since;"), "%s", rb);
    cr_assert(strstr(report("a"), ", 1 event since;"), "b's event counted for a");
    cr_assert_str_eq(report("c"), "", "an unwatched user has a report");
}

Test(engine, explain_drops_the_watch_asked_for_least_recently_past_its_bound)
{
    start(WATCH_RULES);
    char key[16];
    for (int i = 0; i <= ENG_EXPLAIN_WATCHES; i++) {
        snprintf(key, sizeof(key), "u%d", i);
        track(T0, key, "Clicked");
        eng_explain_watch(E, key);
        if (i == 0)
            continue;
        eng_explain_watch(E, "u0"); /* u0 stays the most recently asked */
    }
    cr_assert_str_eq(report("u1"), "", "u1 was asked for least recently and is still watched");
    cr_assert(strstr(report("u0"), "user u0: watched since"));
    snprintf(key, sizeof(key), "u%d", ENG_EXPLAIN_WATCHES);
    cr_assert(strstr(report(key), "watched since"), "%s", report(key));
    cr_assert(strstr(report("u2"), "user u2: watched since"));
}

Test(engine, explain_follows_a_watched_anonymous_user_into_their_identified_profile)
{
    start(WATCH_RULES);
    track_as(T0, NULL, "anon-1", "Clicked");
    eng_explain_watch(E, "anon-1");
    identify(T0 + SEC, "user-1", "anon-1");
    track(T0 + 2 * SEC, "user-1", "Clicked");
    const char *r = report("anon-1");
    cr_assert(strstr(r, "user user-1 (also known as anon-1): watched since"), "%s", r);
    cr_assert(strstr(r, "second_click: fired 1 time"), "%s", r);
    /* the same user under another id: the same watch, its record kept */
    eng_explain_watch(E, "user-1");
    r = report("user-1");
    cr_assert(strstr(r, "user user-1 (also known as anon-1): watched since") &&
                  strstr(r, "fired 1 time"),
              "%s", r);
    cr_assert(strstr(report("anon-1"), "fired 1 time"), "the watch is found by its first id");
}

Test(engine, explain_keeps_one_watch_when_two_watched_users_merge)
{
    start(WATCH_RULES);
    track_as(T0, NULL, "anon-2", "Clicked");
    track(T0, "user-2", "Clicked");
    eng_explain_watch(E, "anon-2");
    eng_explain_watch(E, "user-2");
    identify(T0 + SEC, "user-2", "anon-2");
    track(T0 + 2 * SEC, "user-2", "Clicked");
    const char *r = report("user-2");
    cr_assert(strstr(r, "user user-2: watched since") && strstr(r, "fired 1 time"), "%s", r);
    r = report("anon-2");
    cr_assert(strstr(r, "user user-2: watched since") && strstr(r, "fired 1 time"), "%s", r);
}

Test(engine, explain_watches_ids_not_seen_yet_from_their_first_message)
{
    start(WATCH_RULES);
    eng_explain_watch(E, "anon-3");
    eng_explain_watch(E, "user-3");
    cr_assert(strstr(report("user-3"), "user user-3: no events seen for this user"));
    track_as(T0, "user-3", "anon-3", "Clicked");
    track_as(T0 + SEC, "user-3", "anon-3", "Clicked");
    const char *r = report("user-3");
    cr_assert(strstr(r, "user user-3: watched since") && strstr(r, ", 2 events since;") &&
                  strstr(r, "second_click: fired 1 time"),
              "%s", r);
    /* an anonymousId that came with a userId is retired: it names no profile (docs/rules.md,
     * "Identity") */
    r = report("anon-3");
    cr_assert(strstr(r, "user anon-3: no events seen for this user"), "%s", r);
}
