/*
 * simulate.c - the generator behind `onramp simulate`. Each user is a small state machine
 * walking its persona's script one event at a time, driven by its own PRNG (splitmix64 seeded
 * from the run's seed and the user number). A calendar queue over the users active at the
 * moment merges their streams by event time, so memory follows concurrency, not volume.
 * Lines are built in one big buffer by hand-rolled formatting: no printf, no malloc per event.
 */
#include "simulate.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Sign-ups start 2026-11-18T09:00:00Z by default. */
#define DEFAULT_START_MS INT64_C(1794992400000)

#define FLUSH_AT ((size_t)1 << 20)
#define LINE_MAX_BYTES 4096 /* far above the longest line the tables below can produce */

/* Gap from the last sign-up to the latest event any persona can produce, with room. */
#define TAIL_MS (2 * ONR_DAY_MS)

/* ---- randomness: splitmix64, one stream per user, plus stateless hashes for ids */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t *s)
{
    *s += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(*s);
}

/* Uniform in [0, n). */
static uint32_t below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rnd(s) >> 32) * n) >> 32);
}

/* Uniform in [lo, hi]. */
static int64_t between(uint64_t *s, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static double unit(uint64_t *s)
{
    return (double)(rnd(s) >> 11) * 0x1.0p-53;
}

static bool chance(uint64_t *s, uint32_t percent)
{
    return below(s, 100) < percent;
}

/* Index drawn with probability w[i] / sum(w). */
static uint32_t pick(uint64_t *s, const uint8_t *w, uint32_t n)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += w[i];
    uint32_t r = below(s, total);
    for (uint32_t i = 0; i < n; i++) {
        if (r < w[i])
            return i;
        r -= w[i];
    }
    return n - 1;
}

/* ---- vocabulary. Every string here is JSON-safe as is, so lines are built by memcpy. */

typedef struct sstr {
    const char *s;
    uint32_t n;
} sstr;

/* clang-format off */
#define S(lit) {lit, sizeof(lit) - 1}
/* clang-format on */

enum {
    PG_HOME,
    PG_PRICING,
    PG_DOCS,
    PG_SIGNUP,
    PG_DASHBOARD,
    PG_PROJECTS,
    PG_SETTINGS,
    PG_TEAM,
    PG_BILLING,
    PG_REPORTS,
    PG_INTEGRATIONS,
    PG_ONBOARDING,
    PG_COUNT
};

static const struct page {
    sstr name, screen, path, title, url;
} pages[PG_COUNT] = {
    [PG_HOME] = {S("Home"), S("Welcome"), S("/"), S("Example - Ship projects faster"),
                 S("https://www.example.com/")},
    [PG_PRICING] = {S("Pricing"), S("Plans"), S("/pricing"), S("Pricing | Example"),
                    S("https://www.example.com/pricing")},
    [PG_DOCS] = {S("Docs"), S("Help"), S("/docs"), S("Documentation | Example"),
                 S("https://www.example.com/docs")},
    [PG_SIGNUP] = {S("Sign Up"), S("Sign Up"), S("/signup"), S("Create your account | Example"),
                   S("https://app.example.com/signup")},
    [PG_DASHBOARD] = {S("Dashboard"), S("Dashboard"), S("/dashboard"), S("Dashboard | Example"),
                      S("https://app.example.com/dashboard")},
    [PG_PROJECTS] = {S("Projects"), S("Projects"), S("/projects"), S("Projects | Example"),
                     S("https://app.example.com/projects")},
    [PG_SETTINGS] = {S("Settings"), S("Settings"), S("/settings"), S("Settings | Example"),
                     S("https://app.example.com/settings")},
    [PG_TEAM] = {S("Team"), S("Team"), S("/settings/team"), S("Team | Example"),
                 S("https://app.example.com/settings/team")},
    [PG_BILLING] = {S("Billing"), S("Billing"), S("/settings/billing"), S("Billing | Example"),
                    S("https://app.example.com/settings/billing")},
    [PG_REPORTS] = {S("Reports"), S("Reports"), S("/reports"), S("Reports | Example"),
                    S("https://app.example.com/reports")},
    [PG_INTEGRATIONS] = {S("Integrations"), S("Integrations"), S("/integrations"),
                         S("Integrations | Example"), S("https://app.example.com/integrations")},
    [PG_ONBOARDING] = {S("Onboarding"), S("Get Started"), S("/onboarding"),
                       S("Get started | Example"), S("https://app.example.com/onboarding")},
};

/* How often a signed-up user opens each page. */
static const uint8_t page_weights[PG_COUNT] = {3, 2, 7, 0, 30, 20, 10, 4, 3, 10, 7, 8};

/* A page's referrer: another page (< PG_COUNT), an outside site, or none (""). */
#define REF_EXT 0x80
#define REF_NONE 0xff
static const sstr ext_refs[] = {S("https://www.google.com/"), S("https://news.ycombinator.com/"),
                                S("https://www.linkedin.com/"), S("https://duckduckgo.com/"),
                                S("https://github.com/")};

enum { FT_COUNT = 10, FT_BILLING = 9 };
static const sstr features[FT_COUNT] = {
    S("dashboard"), S("projects"), S("editor"),       S("search"), S("reports"),
    S("settings"),  S("invite"),   S("integrations"), S("export"), S("billing"),
};
static const uint8_t feature_weights[FT_COUNT] = {22, 18, 14, 10, 9, 8, 6, 6, 4, 3};
static const sstr feature_sources[] = {S("sidebar"), S("command_palette"), S("shortcut"),
                                       S("onboarding_checklist")};
static const uint8_t source_weights[] = {60, 15, 10, 15};

#define STEPS 5
static const sstr step_names[STEPS] = {S("profile"), S("create_project"), S("invite_team"),
                                       S("connect_integration"), S("first_report")};

enum { PLAN_FREE, PLAN_PRO, PLAN_TEAM };
static const sstr plans[] = {S("free"), S("pro"), S("team")};
static const uint8_t plan_weights[] = {78, 15, 7};

static const sstr signup_methods[] = {S("email"), S("google"), S("github")};
static const uint8_t method_weights[] = {55, 35, 10};

/* Company sizes: a bucket's base; the trait is base + [0, base). Heavy toward small. */
static const uint16_t company_bases[] = {1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000};
static const uint8_t company_weights[] = {12, 10, 16, 18, 16, 10, 8, 5, 3, 2};

static const sstr first_names[16] = {
    S("alex"), S("sam"),  S("maria"), S("wei"),  S("priya"), S("jonas"), S("fatima"), S("liam"),
    S("yuki"), S("omar"), S("elena"), S("noah"), S("ana"),   S("kofi"),  S("mei"),    S("lucas"),
};
static const sstr domains[12] = {
    S("northwind.example"), S("globex.example"),  S("initech.example"),  S("umbrella.example"),
    S("hooli.example"),     S("acme.example"),    S("stark.example"),    S("wayne.example"),
    S("tyrell.example"),    S("soylent.example"), S("vandelay.example"), S("gmail.example"),
};

static const sstr buttons[] = {S("Next"),       S("Skip"),  S("Get started"),
                               S("Learn more"), S("Close"), S("Save")};
static const sstr endpoints[] = {S("/api/v1/projects"), S("/api/v1/reports"),
                                 S("/api/v1/integrations"), S("/api/v1/search")};

/* Web user agents and locales; a user's device byte picks one of each. */
#define DEV_VARIANTS 5
#define DEV_LOCALES 7
static const sstr user_agents[DEV_VARIANTS] = {
    S("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/130.0.0.0 Safari/537.36"),
    S("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/130.0.0.0 Safari/537.36"),
    S("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/18.1 Safari/605.1.15"),
    S("Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"),
    S("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0"),
};
static const sstr locales[DEV_LOCALES] = {S("en-US"), S("en-GB"), S("de-DE"), S("fr-FR"),
                                          S("es-ES"), S("ja-JP"), S("pt-BR")};
static const sstr timezones[DEV_LOCALES] = {
    S("America/New_York"), S("Europe/London"), S("Europe/Berlin"),     S("Europe/Paris"),
    S("Europe/Madrid"),    S("Asia/Tokyo"),    S("America/Sao_Paulo"),
};

/* Mobile devices: ",\"device\":{...},\"os\":{...}" fragments, three per platform. */
static const sstr ios_devices[3] = {
    S("\"device\":{\"manufacturer\":\"Apple\",\"model\":\"iPhone15,2\",\"type\":\"ios\"},"
      "\"os\":{\"name\":\"iOS\",\"version\":\"17.6.1\"}"),
    S("\"device\":{\"manufacturer\":\"Apple\",\"model\":\"iPhone16,1\",\"type\":\"ios\"},"
      "\"os\":{\"name\":\"iOS\",\"version\":\"18.1\"}"),
    S("\"device\":{\"manufacturer\":\"Apple\",\"model\":\"iPad13,4\",\"type\":\"ios\"},"
      "\"os\":{\"name\":\"iPadOS\",\"version\":\"18.1\"}"),
};
static const sstr android_devices[3] = {
    S("\"device\":{\"manufacturer\":\"Google\",\"model\":\"Pixel 8\",\"type\":\"android\"},"
      "\"os\":{\"name\":\"Android\",\"version\":\"14\"}"),
    S("\"device\":{\"manufacturer\":\"samsung\",\"model\":\"SM-S911B\",\"type\":\"android\"},"
      "\"os\":{\"name\":\"Android\",\"version\":\"14\"}"),
    S("\"device\":{\"manufacturer\":\"Google\",\"model\":\"Pixel 7a\",\"type\":\"android\"},"
      "\"os\":{\"name\":\"Android\",\"version\":\"15\"}"),
};

/* Where a message comes from; server messages (analytics-node) carry no anonymousId. */
enum { PL_WEB, PL_IOS, PL_ANDROID, PL_SERVER };

enum {
    K_PAGE,
    K_SCREEN,
    K_IDENTIFY,
    K_ALIAS,
    K_SIGNED_UP,
    K_APP_OPENED,
    K_FEATURE,
    K_STEP,
    K_ONBOARDED,
    K_SESSION_END,
    K_API_ERROR,
    K_BUTTON,
    K_SEARCH,
};

static const sstr track_names[] = {
    [K_SIGNED_UP] = S("Signed Up"),
    [K_APP_OPENED] = S("Application Opened"),
    [K_FEATURE] = S("Feature Used"),
    [K_STEP] = S("Onboarding Step Completed"),
    [K_ONBOARDED] = S("Onboarding Completed"),
    [K_SESSION_END] = S("Session Ended"),
    [K_API_ERROR] = S("API Error"),
    [K_BUTTON] = S("Button Clicked"),
    [K_SEARCH] = S("Search Performed"),
};

/* ---- gaps between a user's events: buckets of log-uniform durations */

typedef struct gap_bucket {
    uint8_t weight;
    int32_t lo_ms, hi_ms;
} gap_bucket;

enum {
    GAP_TYPICAL, /* heavy-tailed: mostly seconds, sometimes tens of minutes */
    GAP_BURST,   /* explorers clicking around */
    GAP_QUICK,   /* a user who knows what to do */
    GAP_SLOW,    /* reading, hesitating */
    GAP_STEADY,
    GAP_ANON,  /* browsing the marketing site */
    GAP_FORM,  /* filling the sign-up form */
    GAP_CLOSE, /* last action to Session Ended */
    GAP_IDLE,  /* a drop-off going idle before Session Ended */
    GAP_AWAY,  /* between a returner's sessions: always > 30 min */
    GAP_COUNT
};

#define GAP_BUCKETS 5
static const gap_bucket gap_tables[GAP_COUNT][GAP_BUCKETS] = {
    [GAP_TYPICAL] = {{45, 500, 8000},
                     {30, 8000, 60000},
                     {17, 60000, 300000},
                     {6, 300000, 1200000},
                     {2, 1200000, 2700000}},
    [GAP_BURST] = {{62, 300, 4000}, {30, 4000, 15000}, {8, 15000, 60000}},
    [GAP_QUICK] = {{100, 2000, 10000}},
    [GAP_SLOW] = {{25, 5000, 30000},
                  {45, 30000, 180000},
                  {25, 180000, 600000},
                  {5, 600000, 1500000}},
    [GAP_STEADY] = {{50, 1000, 10000}, {40, 10000, 60000}, {10, 60000, 240000}},
    [GAP_ANON] = {{70, 3000, 25000}, {30, 25000, 90000}},
    [GAP_FORM] = {{100, 8000, 90000}},
    [GAP_CLOSE] = {{100, 5000, 120000}},
    [GAP_IDLE] = {{100, 180000, 1500000}},
    [GAP_AWAY] = {{70, 2100000, 7200000}, {30, 7200000, 18000000}},
};

static int64_t gap(uint64_t *s, int table)
{
    const gap_bucket *g = gap_tables[table];
    uint8_t w[GAP_BUCKETS];
    for (int i = 0; i < GAP_BUCKETS; i++)
        w[i] = g[i].weight;
    const gap_bucket *b = &g[pick(s, w, GAP_BUCKETS)];
    double lo = b->lo_ms, hi = b->hi_ms;
    return (int64_t)(lo * exp(unit(s) * log(hi / lo)));
}

/* ---- personas */

enum { P_TYPICAL, P_EXPLORER, P_QUICK, P_HESITANT, P_DROPOFF, P_RETURNER, P_INVITEE, P_COUNT };

typedef struct persona {
    uint8_t share;                              /* in percent of users */
    uint8_t w_feature, w_page, w_step, w_noise; /* weights of the next in-session action */
    uint8_t gaps;                               /* GAP_* between in-session actions */
    uint8_t anon_lo, anon_hi;                   /* anonymous page views before identify */
    uint8_t events_lo, events_hi;               /* in-session actions in the first session */
    uint8_t target[STEPS + 1]; /* weights of the highest onboarding step aimed for */
    uint8_t return_pct;        /* chance of a second session */
    uint8_t end_pct;           /* chance of sending Session Ended */
} persona;

/* share, weights (feature, page, step, noise), gaps, anonymous views, first-session actions,
 * step targets 0..5, second-session %, Session Ended %. */
static const persona personas[P_COUNT] = {
    /* the bulk: a bit of everything, heavy-tailed gaps, sometimes back later */
    [P_TYPICAL] = {40, 40, 25, 18, 17, GAP_TYPICAL, 1, 4, 6, 40, {10, 12, 15, 18, 15, 30}, 12, 70},
    /* tries many features in quick succession */
    [P_EXPLORER] = {12, 70, 12, 10, 8, GAP_BURST, 2, 5, 25, 80, {5, 10, 10, 15, 15, 45}, 10, 80},
    /* all five steps and Onboarding Completed within about two minutes */
    [P_QUICK] = {10, 22, 6, 72, 0, GAP_QUICK, 1, 2, 8, 14, {0, 0, 0, 0, 0, 1}, 5, 60},
    /* pages and steps, long gaps, no features, short sessions */
    [P_HESITANT] = {12, 0, 55, 27, 18, GAP_SLOW, 2, 6, 4, 12, {20, 35, 30, 15, 0, 0}, 0, 50},
    /* reaches step 3 or 4, goes idle, never completes */
    [P_DROPOFF] = {14, 35, 20, 35, 10, GAP_STEADY, 1, 4, 20, 45, {0, 0, 0, 1, 1, 0}, 0, 80},
    /* two sessions more than 30 minutes apart */
    [P_RETURNER] = {8, 40, 25, 20, 15, GAP_TYPICAL, 1, 4, 5, 15, {0, 30, 40, 30, 0, 0}, 100, 75},
    /* a teammate invited in: already known, no Signed Up, no onboarding */
    [P_INVITEE] = {4, 55, 25, 0, 20, GAP_TYPICAL, 0, 0, 6, 30, {1, 0, 0, 0, 0, 0}, 10, 70},
};

/* ---- one event, self-contained so a late one can wait after its user is gone */

#define ID_USER 1
#define ID_ANON 2

typedef struct sim_event {
    int64_t ts_ms;      /* event time ("timestamp") */
    int64_t deliver_ms; /* when the pipeline delivers it: ts_ms, or later for a late one */
    int64_t sent_ms;
    int64_t c; /* kind-specific: created_at, durations */
    uint64_t user;
    uint32_t seq; /* the user's message number, for messageId */
    int32_t a, b; /* kind-specific */
    uint8_t kind, platform, ids, dev, page, ref;
} sim_event;

/* ---- one user */

enum {
    PH_OPEN,     /* a session starts (mobile: Application Opened) */
    PH_ANON,     /* browsing before sign-up, anonymousId only */
    PH_ALIAS,    /* anonymousId aliased to the new userId */
    PH_IDENTIFY, /* identify with both ids: the merge point */
    PH_SIGNUP,   /* Signed Up, from the browser or the backend */
    PH_LAND,     /* first page inside the app */
    PH_RESUME,   /* first page of a later session */
    PH_ACTIVE,
    PH_END, /* Session Ended */
    PH_AWAY /* between sessions, or done */
};

#define F_IDENTIFIED 0x01
#define F_NO_SIGNUP 0x02
#define F_SERVER_SIGNUP 0x04
#define F_ALIAS 0x08
#define F_SESSION_END 0x10
#define F_DONE_PENDING 0x20
#define F_UPGRADE_PENDING 0x40
#define F_BROWSED 0x80

typedef struct sim_user {
    uint64_t rng;
    uint64_t id;
    int64_t now_ms;     /* time of the last event */
    int64_t carry_ms;   /* extra gap before the next event (between sessions) */
    int64_t session_ms; /* first event of the current session */
    int64_t onboard_ms; /* identify time: the onboarding clock starts */
    sim_event ev;       /* the pending event (the next one out) */
    uint32_t seq;
    uint16_t left; /* in-session actions left */
    uint16_t session_events;
    uint16_t company_size;
    uint16_t used_features; /* bitmask */
    uint8_t persona, platform, dev, phase, flags, plan;
    uint8_t step, target, sessions, sessions_left, anon_pages, page, ref;
} sim_user;

static int page_kind(const sim_user *u)
{
    return u->platform == PL_WEB ? K_PAGE : K_SCREEN;
}

static void move_page(sim_user *u, int pg)
{
    u->ref = u->page;
    u->page = (uint8_t)pg;
}

/* Starts the next event after gap_ms; the caller fills the kind-specific fields. */
static sim_event *emit(sim_user *u, int64_t gap_ms, int kind)
{
    sim_event *e = &u->ev;
    if (u->seq > 0)
        u->now_ms += ONR_MAX(gap_ms, 1) + u->carry_ms;
    u->carry_ms = 0;
    if (u->session_events++ == 0)
        u->session_ms = u->now_ms;
    uint64_t r = rnd(&u->rng);
    int64_t late = (r & 1023) < 5 ? 1000 + (int64_t)((r >> 10) % 19001) : 0;
    e->ts_ms = u->now_ms;
    e->deliver_ms = u->now_ms + late;
    e->sent_ms = e->deliver_ms + 5 + (int64_t)((r >> 40) % 400);
    e->c = 0;
    e->user = u->id;
    e->seq = u->seq++;
    e->a = e->b = 0;
    e->kind = (uint8_t)kind;
    e->platform = u->platform;
    e->ids = (uint8_t)((u->flags & F_IDENTIFIED ? ID_USER : 0) | ID_ANON);
    e->dev = u->dev;
    e->page = u->page;
    e->ref = u->ref;
    return e;
}

static void user_init(sim_user *u, uint64_t id, int64_t signup_ms, uint64_t seed)
{
    memset(u, 0, sizeof(*u));
    u->rng = mix64(mix64(seed) + id);
    uint64_t *s = &u->rng;
    u->id = id;
    u->now_ms = u->session_ms = u->onboard_ms = signup_ms;

    uint8_t shares[P_COUNT];
    for (int i = 0; i < P_COUNT; i++)
        shares[i] = personas[i].share;
    u->persona = (uint8_t)pick(s, shares, P_COUNT);
    const persona *p = &personas[u->persona];

    uint32_t r = below(s, 100);
    u->platform = r < 82 ? PL_WEB : r < 92 ? PL_IOS : PL_ANDROID;
    u->dev = (uint8_t)below(s, DEV_VARIANTS * DEV_LOCALES);
    u->plan = u->persona == P_INVITEE ? PLAN_TEAM : (uint8_t)pick(s, plan_weights, 3);
    uint32_t base = company_bases[pick(s, company_weights, ONR_ARRAY_LEN(company_weights))];
    u->company_size = (uint16_t)(base + below(s, base));

    /* Some users arrive already known (signed up through SSO, on another device): no
     * anonymous browsing. Invitees never send Signed Up; a few others lose it to a
     * tracking gap. */
    if (p->anon_hi > 0 && !chance(s, 15))
        u->anon_pages = (uint8_t)between(s, p->anon_lo, p->anon_hi);
    if (u->persona == P_INVITEE || chance(s, 6))
        u->flags |= F_NO_SIGNUP;
    if (chance(s, 15))
        u->flags |= F_SERVER_SIGNUP;
    if (u->anon_pages > 0 && chance(s, 4))
        u->flags |= F_ALIAS;
    if (chance(s, p->end_pct))
        u->flags |= F_SESSION_END;
    u->target = (uint8_t)pick(s, p->target, STEPS + 1);
    u->sessions_left = chance(s, p->return_pct) ? 1 : 0;
    u->left = (uint16_t)between(s, p->events_lo, p->events_hi);
    u->page = PG_HOME;
    uint32_t ref = below(s, ONR_ARRAY_LEN(ext_refs) + 3);
    u->ref = ref < ONR_ARRAY_LEN(ext_refs) ? (uint8_t)(REF_EXT + ref) : REF_NONE;
    u->phase = PH_OPEN;
}

static void active_event(sim_user *u, const persona *p)
{
    uint64_t *s = &u->rng;
    sim_event *e;
    uint8_t w[4] = {p->w_feature, p->w_page, u->step < u->target ? p->w_step : 0, p->w_noise};
    int act;
    if (u->persona == P_QUICK && u->step < STEPS &&
        (u->left < STEPS - u->step || u->now_ms - u->onboard_ms > 75 * ONR_SECOND_MS))
        act = 2;
    else if (w[0] + w[1] + w[2] + w[3] == 0)
        act = 1;
    else
        act = (int)pick(s, w, 4);
    int64_t g = gap(s, p->gaps);

    switch (act) {
    case 0: { /* a feature; explorers go for the ones they have not tried */
        uint32_t f = pick(s, feature_weights, FT_COUNT);
        uint32_t unused = (~u->used_features) & ((1u << FT_COUNT) - 1);
        if (u->persona == P_EXPLORER && unused && chance(s, 75)) {
            uint32_t k = below(s, (uint32_t)__builtin_popcount(unused));
            for (f = 0; f < FT_COUNT; f++)
                if ((unused >> f & 1) && k-- == 0)
                    break;
        }
        u->used_features |= (uint16_t)(1u << f);
        e = emit(u, g, K_FEATURE);
        e->a = (int32_t)f;
        e->b = (int32_t)pick(s, source_weights, ONR_ARRAY_LEN(source_weights));
        if (f == FT_BILLING && u->plan == PLAN_FREE && chance(s, 25))
            u->flags |= F_UPGRADE_PENDING;
        break;
    }
    case 1: {
        uint32_t pg = pick(s, page_weights, PG_COUNT);
        if (pg == u->page)
            pg = pick(s, page_weights, PG_COUNT);
        move_page(u, (int)pg);
        emit(u, g, page_kind(u));
        break;
    }
    case 2:
        u->step++;
        e = emit(u, g, K_STEP);
        e->a = u->step;
        if (u->step == STEPS)
            u->flags |= F_DONE_PENDING;
        break;
    default: {
        uint32_t r = below(s, 100);
        if (r < 50) {
            e = emit(u, g, K_BUTTON);
            e->a = (int32_t)below(s, ONR_ARRAY_LEN(buttons));
        } else if (r < 80) {
            e = emit(u, g, K_SEARCH);
            e->a = (int32_t)between(s, 2, 24);
            e->b = chance(s, 15) ? 0 : (int32_t)(gap(s, GAP_QUICK) / 200);
        } else {
            e = emit(u, g, K_API_ERROR);
            e->a = (int32_t)below(s, ONR_ARRAY_LEN(endpoints));
            uint32_t st = below(s, 100);
            e->b = st < 45 ? 500 : st < 75 ? 503 : 404;
        }
    }
    }
}

/* Moves u to its next event (in u->ev). Returns false when the user has no more. */
static bool user_next(sim_user *u)
{
    const persona *p = &personas[u->persona];
    uint64_t *s = &u->rng;
    sim_event *e;
    for (;;) {
        switch (u->phase) {
        case PH_OPEN:
            u->phase = u->sessions ? PH_RESUME : u->anon_pages ? PH_ANON : PH_IDENTIFY;
            if (u->platform == PL_WEB)
                continue;
            e = emit(u, 0, K_APP_OPENED);
            e->a = u->sessions > 0;
            return true;
        case PH_ANON: {
            /* Land from outside, look around the marketing pages, end on the sign-up form. */
            int pg;
            if (!(u->flags & F_BROWSED))
                pg = chance(s, 70) ? PG_HOME : chance(s, 50) ? PG_PRICING : PG_DOCS;
            else if (u->anon_pages == 1)
                pg = PG_SIGNUP;
            else
                pg = chance(s, 50) ? PG_PRICING : chance(s, 60) ? PG_DOCS : PG_HOME;
            if (u->flags & F_BROWSED)
                move_page(u, pg);
            else
                u->page = (uint8_t)pg;
            u->flags |= F_BROWSED;
            emit(u, gap(s, GAP_ANON), page_kind(u));
            if (--u->anon_pages == 0)
                u->phase = u->flags & F_ALIAS ? PH_ALIAS : PH_IDENTIFY;
            return true;
        }
        case PH_ALIAS:
            u->flags |= F_IDENTIFIED;
            emit(u, gap(s, GAP_FORM), K_ALIAS);
            u->phase = PH_IDENTIFY;
            return true;
        case PH_IDENTIFY: {
            int64_t g = u->ev.kind == K_ALIAS    ? between(s, 20, 150)
                        : (u->flags & F_BROWSED) ? gap(s, GAP_FORM)
                                                 : between(s, 200, 2000);
            u->flags |= F_IDENTIFIED;
            e = emit(u, g, K_IDENTIFY);
            e->a = u->plan;
            e->b = u->company_size;
            e->c = u->now_ms;
            u->onboard_ms = u->now_ms;
            u->phase = PH_SIGNUP;
            return true;
        }
        case PH_SIGNUP:
            u->phase = PH_LAND;
            if (u->flags & F_NO_SIGNUP)
                continue;
            e = emit(u, between(s, 150, 900), K_SIGNED_UP);
            e->a = (int32_t)pick(s, method_weights, ONR_ARRAY_LEN(method_weights));
            e->b = u->plan;
            if (u->flags & F_SERVER_SIGNUP) {
                e->platform = PL_SERVER;
                e->ids = ID_USER;
            }
            return true;
        case PH_LAND:
            move_page(u, u->target > 0 ? PG_ONBOARDING : PG_DASHBOARD);
            emit(u, between(s, 400, 2500), page_kind(u));
            u->phase = PH_ACTIVE;
            return true;
        case PH_RESUME: {
            uint32_t r = below(s, 100);
            u->page = r < 50 ? PG_DASHBOARD : r < 80 ? PG_HOME : PG_ONBOARDING;
            u->ref = REF_NONE;
            emit(u, between(s, 300, 1500), page_kind(u));
            u->phase = PH_ACTIVE;
            return true;
        }
        case PH_ACTIVE:
            if (u->flags & F_DONE_PENDING) {
                u->flags &= (uint8_t)~F_DONE_PENDING;
                e = emit(u, between(s, 200, 1500), K_ONBOARDED);
                e->c = (u->now_ms - u->onboard_ms) / ONR_SECOND_MS;
                return true;
            }
            if (u->flags & F_UPGRADE_PENDING) {
                u->flags &= (uint8_t)~F_UPGRADE_PENDING;
                u->plan = PLAN_PRO;
                e = emit(u, between(s, 2000, 20000), K_IDENTIFY);
                e->a = u->plan;
                e->b = u->company_size;
                e->c = u->onboard_ms;
                return true;
            }
            /* Drop-offs stop once they reach their step: idle, then perhaps Session Ended. */
            if (u->left == 0 || (u->persona == P_DROPOFF && u->step >= u->target)) {
                u->phase = PH_END;
                continue;
            }
            u->left--;
            active_event(u, p);
            return true;
        case PH_END:
            u->phase = PH_AWAY;
            if (!(u->flags & F_SESSION_END))
                continue;
            e = emit(u, gap(s, u->persona == P_DROPOFF ? GAP_IDLE : GAP_CLOSE), K_SESSION_END);
            e->a = u->session_events - 1;
            e->c = (u->now_ms - u->session_ms) / ONR_SECOND_MS;
            return true;
        case PH_AWAY:
            if (u->sessions_left == 0)
                return false;
            u->sessions_left--;
            u->sessions++;
            u->session_events = 0;
            u->carry_ms = gap(s, GAP_AWAY);
            if (u->persona == P_RETURNER) {
                u->left = (uint16_t)between(s, 8, 25);
                u->target = chance(s, 60) ? STEPS : (uint8_t)ONR_MIN(u->step + 2, STEPS - 1);
            } else {
                u->left = (uint16_t)between(s, 4, 15);
            }
            u->phase = PH_OPEN;
            continue;
        }
    }
}

/* ---- rendering */

typedef struct sim_writer {
    FILE *out;
    onr_buf buf;
    uint64_t seed;
    int64_t day; /* the day date[] holds */
    char date[11];
    char hex[2][256][2]; /* byte -> two hex digits, lower and upper case */
    int err;
} sim_writer;

#define PUT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

static char *put_s(char *p, sstr s)
{
    memcpy(p, s.s, s.n);
    return p + s.n;
}

/* A quoted string. */
static char *put_q(char *p, sstr s)
{
    *p++ = '"';
    memcpy(p, s.s, s.n);
    p += s.n;
    *p++ = '"';
    return p;
}

static char *put_u64(char *p, uint64_t v, int min_width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < min_width)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_int(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t)0 - (uint64_t)v, 1);
    }
    return put_u64(p, (uint64_t)v, 1);
}

static char *put_2(char *p, uint32_t v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

/* "2026-11-18T09:00:01.250Z" with quotes; the date part is cached per day. */
static char *put_time(sim_writer *w, char *p, int64_t ms)
{
    int64_t day = ms / ONR_DAY_MS;
    if (day != w->day) {
        char t[32];
        onr_time_format(day * ONR_DAY_MS, t);
        memcpy(w->date, t, sizeof(w->date));
        w->day = day;
    }
    uint32_t r = (uint32_t)(ms - day * ONR_DAY_MS);
    *p++ = '"';
    memcpy(p, w->date, sizeof(w->date));
    p += sizeof(w->date);
    p = put_2(p, r / 3600000);
    *p++ = ':';
    p = put_2(p, r / 60000 % 60);
    *p++ = ':';
    p = put_2(p, r / 1000 % 60);
    *p++ = '.';
    uint32_t f = r % 1000;
    *p++ = (char)('0' + f / 100);
    p = put_2(p, f % 100);
    *p++ = 'Z';
    *p++ = '"';
    return p;
}

/* The low 2 * bytes hex digits of v. */
static char *put_hex(const sim_writer *w, char *p, uint64_t v, int bytes, bool upper)
{
    for (int i = bytes - 1; i >= 0; i--) {
        memcpy(p, w->hex[upper][(v >> (8 * i)) & 255], 2);
        p += 2;
    }
    return p;
}

/* A version-4 UUID built from 128 hashed bits. */
static char *put_uuid(const sim_writer *w, char *p, uint64_t hi, uint64_t lo, bool upper)
{
    hi = (hi & ~UINT64_C(0xf000)) | UINT64_C(0x4000);
    lo = (lo & ~(UINT64_C(3) << 62)) | (UINT64_C(2) << 62);
    p = put_hex(w, p, hi >> 32, 4, upper);
    *p++ = '-';
    p = put_hex(w, p, hi >> 16, 2, upper);
    *p++ = '-';
    p = put_hex(w, p, hi, 2, upper);
    *p++ = '-';
    p = put_hex(w, p, lo >> 48, 2, upper);
    *p++ = '-';
    return put_hex(w, p, lo, 6, upper);
}

static char *put_user_id(char *p, uint64_t user)
{
    PUT(p, "\"u");
    p = put_u64(p, user, 6);
    *p++ = '"';
    return p;
}

static char *put_anon_id(char *p, const sim_writer *w, const sim_event *e)
{
    uint64_t hi = mix64(w->seed ^ mix64(e->user ^ UINT64_C(0x616e6f6e)));
    *p++ = '"';
    p = put_uuid(w, p, hi, mix64(hi), e->platform == PL_IOS);
    *p++ = '"';
    return p;
}

/* analytics.js: "ajs-next-" + 32 hex; analytics-node: "node-" + 32 hex; mobile: a UUID. */
static char *put_message_id(char *p, const sim_writer *w, const sim_event *e)
{
    uint64_t hi = mix64(w->seed + mix64(e->user * UINT64_C(0x100000001b3) + e->seq));
    uint64_t lo = mix64(hi);
    *p++ = '"';
    switch (e->platform) {
    case PL_WEB:
        PUT(p, "ajs-next-");
        p = put_hex(w, put_hex(w, p, hi, 8, false), lo, 8, false);
        break;
    case PL_SERVER:
        PUT(p, "node-");
        p = put_hex(w, put_hex(w, p, hi, 8, false), lo, 8, false);
        break;
    default:
        p = put_uuid(w, p, hi, lo, e->platform == PL_IOS);
    }
    *p++ = '"';
    return p;
}

/* path, referrer, title, url: page properties and context.page alike. */
static char *put_page_fields(char *p, int pg, int ref)
{
    const struct page *g = &pages[pg];
    PUT(p, "\"path\":");
    p = put_q(p, g->path);
    PUT(p, ",\"referrer\":");
    if (ref < PG_COUNT)
        p = put_q(p, pages[ref].url);
    else if (ref != REF_NONE)
        p = put_q(p, ext_refs[ref - REF_EXT]);
    else
        PUT(p, "\"\"");
    PUT(p, ",\"title\":");
    p = put_q(p, g->title);
    PUT(p, ",\"url\":");
    return put_q(p, g->url);
}

static char *put_properties(char *p, const sim_event *e)
{
    PUT(p, ",\"properties\":{");
    switch (e->kind) {
    case K_PAGE:
        p = put_page_fields(p, e->page, e->ref);
        break;
    case K_SIGNED_UP:
        PUT(p, "\"method\":");
        p = put_q(p, signup_methods[e->a]);
        PUT(p, ",\"plan\":");
        p = put_q(p, plans[e->b]);
        break;
    case K_APP_OPENED:
        if (e->a)
            PUT(p, "\"from_background\":true");
        else
            PUT(p, "\"from_background\":false");
        PUT(p, ",\"build\":\"3120\",\"version\":\"3.12.0\"");
        break;
    case K_FEATURE:
        PUT(p, "\"feature\":");
        p = put_q(p, features[e->a]);
        PUT(p, ",\"source\":");
        p = put_q(p, feature_sources[e->b]);
        break;
    case K_STEP:
        PUT(p, "\"step\":");
        p = put_int(p, e->a);
        PUT(p, ",\"step_name\":");
        p = put_q(p, step_names[e->a - 1]);
        break;
    case K_ONBOARDED:
        PUT(p, "\"duration_s\":");
        p = put_int(p, e->c);
        PUT(p, ",\"steps\":5");
        break;
    case K_SESSION_END:
        PUT(p, "\"duration_s\":");
        p = put_int(p, e->c);
        PUT(p, ",\"events\":");
        p = put_int(p, e->a);
        break;
    case K_API_ERROR:
        PUT(p, "\"endpoint\":");
        p = put_q(p, endpoints[e->a]);
        PUT(p, ",\"method\":\"GET\",\"status\":");
        p = put_int(p, e->b);
        break;
    case K_BUTTON:
        PUT(p, "\"label\":");
        p = put_q(p, buttons[e->a]);
        break;
    case K_SEARCH:
        PUT(p, "\"query_length\":");
        p = put_int(p, e->a);
        PUT(p, ",\"results\":");
        p = put_int(p, e->b);
        break;
    default: /* screen: no properties */
        break;
    }
    *p++ = '}';
    return p;
}

static char *put_traits(char *p, sim_writer *w, const sim_event *e)
{
    uint64_t h = mix64(w->seed ^ mix64(e->user + UINT64_C(0x656d61696c)));
    PUT(p, ",\"traits\":{\"plan\":");
    p = put_q(p, plans[e->a]);
    PUT(p, ",\"email\":\"");
    p = put_s(p, first_names[h % ONR_ARRAY_LEN(first_names)]);
    *p++ = '.';
    p = put_u64(p, e->user, 1);
    *p++ = '@';
    p = put_s(p, domains[(h >> 8) % ONR_ARRAY_LEN(domains)]);
    PUT(p, "\",\"company_size\":");
    p = put_int(p, e->b);
    PUT(p, ",\"created_at\":");
    p = put_time(w, p, e->c);
    *p++ = '}';
    return p;
}

static char *put_context(char *p, const sim_event *e)
{
    int variant = e->dev % DEV_VARIANTS, locale = e->dev / DEV_VARIANTS;
    switch (e->platform) {
    case PL_WEB:
        PUT(p, ",\"context\":{\"library\":{\"name\":\"analytics.js\",\"version\":\"5.2.0\"},"
               "\"locale\":");
        p = put_q(p, locales[locale]);
        PUT(p, ",\"page\":{");
        p = put_page_fields(p, e->page, e->ref);
        PUT(p, "},\"userAgent\":");
        p = put_q(p, user_agents[variant]);
        break;
    case PL_SERVER:
        PUT(p, ",\"context\":{\"library\":{\"name\":\"analytics-node\",\"version\":\"6.2.0\"}");
        break;
    default:
        if (e->platform == PL_IOS)
            PUT(p, ",\"context\":{\"library\":{\"name\":\"analytics-ios\",\"version\":\"4.1.8\"},");
        else
            PUT(p, ",\"context\":{\"library\":{\"name\":\"analytics-android\","
                   "\"version\":\"4.11.3\"},");
        PUT(p, "\"app\":{\"build\":\"3120\",\"name\":\"Example\",\"namespace\":"
               "\"com.example.app\",\"version\":\"3.12.0\"},");
        p = put_s(p,
                  e->platform == PL_IOS ? ios_devices[variant % 3] : android_devices[variant % 3]);
        PUT(p, ",\"locale\":");
        p = put_q(p, locales[locale]);
        PUT(p, ",\"network\":{\"wifi\":true},\"timezone\":");
        p = put_q(p, timezones[locale]);
    }
    *p++ = '}';
    return p;
}

/* Appends one message and its newline; the buffer always has LINE_MAX_BYTES free. */
static void render(sim_writer *w, const sim_event *e)
{
    char *start = w->buf.data + w->buf.len, *p = start;
    switch (e->kind) {
    case K_PAGE:
        PUT(p, "{\"type\":\"page\",\"name\":");
        p = put_q(p, pages[e->page].name);
        break;
    case K_SCREEN:
        PUT(p, "{\"type\":\"screen\",\"name\":");
        p = put_q(p, pages[e->page].screen);
        break;
    case K_IDENTIFY:
        PUT(p, "{\"type\":\"identify\"");
        break;
    case K_ALIAS:
        PUT(p, "{\"type\":\"alias\",\"previousId\":");
        p = put_anon_id(p, w, e);
        break;
    default:
        PUT(p, "{\"type\":\"track\",\"event\":");
        p = put_q(p, track_names[e->kind]);
    }
    if (e->ids & ID_USER) {
        PUT(p, ",\"userId\":");
        p = put_user_id(p, e->user);
    }
    if ((e->ids & ID_ANON) && e->kind != K_ALIAS) {
        PUT(p, ",\"anonymousId\":");
        p = put_anon_id(p, w, e);
    }
    PUT(p, ",\"messageId\":");
    p = put_message_id(p, w, e);
    PUT(p, ",\"timestamp\":");
    p = put_time(w, p, e->ts_ms);
    PUT(p, ",\"sentAt\":");
    p = put_time(w, p, e->sent_ms);
    if (e->kind == K_IDENTIFY)
        p = put_traits(p, w, e);
    else if (e->kind != K_ALIAS)
        p = put_properties(p, e);
    p = put_context(p, e);
    PUT(p, "}\n");
    w->buf.len += (size_t)(p - start);
}

static int flush(sim_writer *w)
{
    errno = 0;
    if (w->buf.len > 0 && fwrite(w->buf.data, 1, w->buf.len, w->out) != w->buf.len)
        w->err = errno ? -errno : -EIO;
    w->buf.len = 0;
    return w->err;
}

/* Sign-up time of user i (0-based): the first at start_ms, then non-decreasing in i,
 * jittered, busiest mid-span. */
static int64_t signup_at(const sim_opts *o, uint64_t i)
{
    if (i == 0)
        return o->start_ms;
    double x = ((double)i + unit(&(uint64_t){mix64(o->seed ^ UINT64_C(0x7369676e)) + i})) /
               (double)o->users;
    const double pi2 = 6.283185307179586;
    double warped = x - 0.5 * sin(pi2 * x) / pi2;
    return o->start_ms + (int64_t)(warped * (double)o->spread_ms);
}

/* ---- merging. Active users wait in a calendar queue keyed by their pending event's time: a
 * ring of buckets BUCKET_MS wide, plus a small heap ("near") for the window being played.
 * A plain heap over the ~100k users active at once spends its time in cache misses;
 * buckets keep the sorting near the present. Invariant: near keys < horizon <= ring keys. */

#define BUCKET_MS 1024
#define RING_BUCKETS 32768 /* 9.3 hours; a later lap's entries wait in their bucket */
#define CHUNK_ENTRIES 31

typedef struct qentry {
    int64_t key;
    uint32_t tie; /* the user number's low bits: the earlier sign-up first */
    uint32_t slot;
} qentry;

typedef struct qchunk {
    struct qchunk *next;
    uint32_t n;
    qentry e[CHUNK_ENTRIES];
} qchunk;

typedef struct qbucket {
    qchunk *head, *tail;
} qbucket;

typedef struct user_queue {
    qentry *near; /* binary heap */
    size_t n, cap;
    int64_t horizon; /* start of the next window to move into near; a multiple of BUCKET_MS */
    size_t far;      /* entries in the ring */
    qbucket *ring;
    qchunk *spare;
} user_queue;

static bool qentry_less(const qentry *a, const qentry *b)
{
    return a->key < b->key || (a->key == b->key && a->tie < b->tie);
}

static void near_down(user_queue *q)
{
    qentry x = q->near[0];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && qentry_less(&q->near[c + 1], &q->near[c]))
            c++;
        if (!qentry_less(&q->near[c], &x))
            break;
        q->near[i] = q->near[c];
        i = c;
    }
    q->near[i] = x;
}

static void near_push(user_queue *q, qentry x)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 1024;
        q->near = onr_realloc(q->near, q->cap * sizeof(*q->near));
    }
    size_t i = q->n++;
    while (i > 0 && qentry_less(&x, &q->near[(i - 1) / 2])) {
        q->near[i] = q->near[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    q->near[i] = x;
}

static void near_pop(user_queue *q)
{
    q->near[0] = q->near[--q->n];
    if (q->n > 0)
        near_down(q);
}

static void ring_put(user_queue *q, qentry x)
{
    qbucket *b = &q->ring[(uint64_t)x.key / BUCKET_MS % RING_BUCKETS];
    if (!b->tail || b->tail->n == CHUNK_ENTRIES) {
        qchunk *c = q->spare;
        if (c)
            q->spare = c->next;
        else
            c = onr_malloc(sizeof(*c));
        c->next = NULL;
        c->n = 0;
        if (b->tail)
            b->tail->next = c;
        else
            b->head = c;
        b->tail = c;
    }
    b->tail->e[b->tail->n++] = x;
    q->far++;
}

static void uq_push(user_queue *q, qentry x)
{
    if (x.key < q->horizon)
        near_push(q, x);
    else
        ring_put(q, x);
}

/* While near is empty, moves the next window's entries into it. */
static void uq_refill(user_queue *q)
{
    while (q->n == 0 && q->far > 0) {
        qbucket *b = &q->ring[(uint64_t)q->horizon / BUCKET_MS % RING_BUCKETS];
        qchunk *c = b->head;
        b->head = b->tail = NULL;
        q->horizon += BUCKET_MS;
        while (c) {
            q->far -= c->n;
            for (uint32_t i = 0; i < c->n; i++)
                uq_push(q, c->e[i]); /* a later lap's entries go back to this bucket */
            qchunk *next = c->next;
            c->next = q->spare;
            q->spare = c;
            c = next;
        }
    }
}

static void uq_free(user_queue *q)
{
    for (size_t i = 0; q->ring && i < RING_BUCKETS; i++) {
        for (qchunk *c = q->ring[i].head, *next; c; c = next) {
            next = c->next;
            onr_free(c);
        }
    }
    for (qchunk *c = q->spare, *next; c; c = next) {
        next = c->next;
        onr_free(c);
    }
    onr_free(q->ring);
    onr_free(q->near);
}

typedef struct late_heap {
    sim_event *e;
    size_t n, cap;
} late_heap;

static bool late_less(const sim_event *a, const sim_event *b)
{
    if (a->deliver_ms != b->deliver_ms)
        return a->deliver_ms < b->deliver_ms;
    return a->user < b->user || (a->user == b->user && a->seq < b->seq);
}

static void lheap_push(late_heap *h, const sim_event *x)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 256;
        h->e = onr_realloc(h->e, h->cap * sizeof(*h->e));
    }
    size_t i = h->n++;
    while (i > 0 && late_less(x, &h->e[(i - 1) / 2])) {
        h->e[i] = h->e[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->e[i] = *x;
}

static void lheap_pop(late_heap *h)
{
    sim_event x = h->e[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && late_less(&h->e[c + 1], &h->e[c]))
            c++;
        if (!late_less(&h->e[c], &x))
            break;
        h->e[i] = h->e[c];
        i = c;
    }
    if (h->n > 0)
        h->e[i] = x;
}

/* Users live in a pool of slots, recycled through a free list. */
typedef struct user_pool {
    sim_user *users;
    uint32_t *free;
    size_t n, cap, nfree;
} user_pool;

static uint32_t pool_get(user_pool *pl)
{
    if (pl->nfree > 0)
        return pl->free[--pl->nfree];
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? 2 * pl->cap : 1024;
        pl->users = onr_realloc(pl->users, pl->cap * sizeof(*pl->users));
        pl->free = onr_realloc(pl->free, pl->cap * sizeof(*pl->free));
    }
    return (uint32_t)pl->n++;
}

static int write_shuffled(sim_writer *w, const sim_opts *o)
{
    user_pool pool = {0};
    late_heap lh = {0};
    user_queue q = {0};
    uint64_t next = 0;
    int64_t next_at = o->users > 0 ? signup_at(o, 0) : INT64_MAX;
    q.ring = onr_calloc(RING_BUCKETS, sizeof(*q.ring));
    q.horizon = o->start_ms / BUCKET_MS * BUCKET_MS;

    while (w->err == 0) {
        uq_refill(&q);
        int64_t tu = q.n ? q.near[0].key : INT64_MAX;
        int64_t tl = lh.n ? lh.e[0].deliver_ms : INT64_MAX;
        if (next < o->users && next_at <= tu && next_at <= tl) {
            /* Everyone who signs up by the next event joins before it goes out. */
            uint32_t slot = pool_get(&pool);
            sim_user *u = &pool.users[slot];
            user_init(u, next + 1, next_at, o->seed);
            user_next(u); /* every user has a first event */
            uq_push(&q, (qentry){u->ev.ts_ms, (uint32_t)u->id, slot});
            next++;
            next_at = next < o->users ? signup_at(o, next) : INT64_MAX;
            continue;
        }
        if (q.n == 0 && lh.n == 0)
            break;
        if (tl <= tu) {
            render(w, &lh.e[0]);
            lheap_pop(&lh);
        } else {
            /* Advance the user and settle the queue before writing, so the next user's
             * state can be prefetched while this line is built. */
            qentry top = q.near[0];
            sim_user *u = &pool.users[top.slot];
            sim_event ev = u->ev;
            if (!user_next(u)) {
                pool.free[pool.nfree++] = top.slot;
                near_pop(&q);
            } else if (u->ev.ts_ms < q.horizon) {
                q.near[0].key = u->ev.ts_ms;
                near_down(&q);
            } else {
                near_pop(&q);
                top.key = u->ev.ts_ms;
                ring_put(&q, top);
            }
            uq_refill(&q);
            if (q.n > 0) {
                const char *nx = (const char *)&pool.users[q.near[0].slot];
                for (size_t off = 0; off < sizeof(sim_user); off += 64)
                    __builtin_prefetch(nx + off);
            }
            if (ev.deliver_ms > ev.ts_ms)
                lheap_push(&lh, &ev);
            else
                render(w, &ev);
        }
        if (w->buf.len >= FLUSH_AT)
            flush(w);
    }
    onr_free(pool.users);
    onr_free(pool.free);
    onr_free(lh.e);
    uq_free(&q);
    return w->err;
}

static int write_by_user(sim_writer *w, const sim_opts *o)
{
    sim_user u;
    for (uint64_t i = 0; i < o->users && w->err == 0; i++) {
        user_init(&u, i + 1, signup_at(o, i), o->seed);
        while (user_next(&u)) {
            render(w, &u.ev);
            if (w->buf.len >= FLUSH_AT && flush(w))
                break;
        }
    }
    return w->err;
}

/* ---- public */

void sim_opts_default(sim_opts *o)
{
    o->users = 1000;
    o->seed = 1;
    o->start_ms = DEFAULT_START_MS;
    o->spread_ms = 8 * ONR_HOUR_MS;
    o->shuffle = true;
}

int sim_write(FILE *out, const sim_opts *o)
{
    if (o->start_ms < 0 || o->spread_ms < 0 ||
        o->spread_ms > ONR_TIME_MAX_MS - TAIL_MS - o->start_ms)
        return -EINVAL;
    sim_writer w = {.out = out, .seed = o->seed, .day = -1};
    for (int i = 0; i < 256; i++) {
        for (int upper = 0; upper < 2; upper++) {
            const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
            w.hex[upper][i][0] = digits[i >> 4];
            w.hex[upper][i][1] = digits[i & 15];
        }
    }
    onr_buf_reserve(&w.buf, FLUSH_AT + LINE_MAX_BYTES);
    int rc = o->shuffle ? write_shuffled(&w, o) : write_by_user(&w, o);
    if (rc == 0)
        rc = flush(&w);
    errno = 0;
    if (rc == 0 && fflush(out) != 0)
        rc = errno ? -errno : -EIO;
    onr_buf_free(&w.buf);
    return rc;
}
