/*
 * inspect.c - one user's state as the management API shows it: the profile header, the
 * segments the user is in and the traits the rules read, as JSON; and switching the explain
 * recorder to a user while the engine runs, so "why did (or didn't) this fire?" can be asked
 * of a live server.
 */
#include "engine_int.h"

#include "base/json.h"

#include <string.h>

static void put_time(onr_buf *out, const char *name, int64_t ms)
{
    onr_buf_printf(out, ",\"%s\":", name);
    if (ms <= 0) {
        onr_buf_puts(out, "null");
        return;
    }
    char t[32];
    onr_time_format(ms, t);
    jw_strz(out, t);
}

int eng_user_json_open(eng *e, const char *key, size_t klen, onr_buf *out)
{
    const rule_set *rs = e->rs;
    user *u = eng__lookup(e, (trk_str){key, (uint32_t)klen});
    if (!u)
        return ONR_E_NOTFOUND;
    const rule_hdr *h = (const rule_hdr *)(const void *)u->prof;
    size_t n;
    const char *canon = eng_user_key(u, &n);
    onr_buf_puts(out, "{\"user\":");
    jw_str(out, canon, n);
    put_time(out, "first_seen", h->start_ms);
    put_time(out, "last_seen", h->last_ms);
    onr_buf_printf(out, ",\"sessions\":%u,\"in_session\":%s", h->sess_number,
                   (h->flags & RH_IN_SESSION) ? "true" : "false");
    if (h->flags & RH_IN_SESSION) {
        put_time(out, "session_started", h->sess_start_ms);
        onr_buf_printf(out, ",\"session_events\":%u", h->sess_events);
    }
    onr_buf_printf(out, ",\"signed_up\":%s,\"completed_onboarding\":%s,\"fires\":%u",
                   (h->flags & RH_SIGNED_UP) ? "true" : "false",
                   (h->flags & RH_COMPLETED) ? "true" : "false", h->nfires);
    onr_buf_puts(out, ",\"segments\":[");
    bool first = true;
    for (int si = 0; si < rs->nsegments; si++) {
        if (!rp_bit(u->prof, rs->layout.off_segments, si))
            continue;
        onr_buf_puts(out, first ? "" : ",");
        first = false;
        jw_strz(out, rs->segments[si].name);
    }
    onr_buf_puts(out, "],\"traits\":{");
    const rule_layout *L = &rs->layout;
    if (L->off_traits >= 0) {
        const rule_trait_slot *s = (const rule_trait_slot *)(const void *)(u->prof + L->off_traits);
        first = true;
        for (int i = 0; i < L->ntraits; i++) {
            if (s[i].type == TV_MISSING)
                continue;
            onr_buf_puts(out, first ? "" : ",");
            first = false;
            jw_strz(out, rs->schema.traits[i]);
            onr_buf_putc(out, ':');
            switch (s[i].type) {
            case TV_NUM:
                jw_num(out, s[i].num);
                break;
            case TV_BOOL:
                onr_buf_puts(out, s[i].num != 0 ? "true" : "false");
                break;
            case TV_STR:
                jw_str(out, s[i].s, s[i].len);
                break;
            default:
                onr_buf_puts(out, "null");
                break;
            }
        }
    }
    onr_buf_putc(out, '}'); /* the traits; the object stays open */
    return 0;
}

int eng_user_json(eng *e, const char *key, size_t klen, onr_buf *out)
{
    int rc = eng_user_json_open(e, key, klen, out);
    if (rc == 0)
        onr_buf_putc(out, '}');
    return rc;
}

const char *eng_user_canonical(eng *e, const char *key, size_t klen, size_t *n)
{
    user *u = eng__lookup(e, (trk_str){key, (uint32_t)klen});
    return u ? eng_user_key(u, n) : NULL;
}
