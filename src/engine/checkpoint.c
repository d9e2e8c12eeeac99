/*
 * checkpoint.c - an engine's users to a file and back: what a restart loads before it
 * replays the log's tail, so that segment memberships, limits and pending absences carry
 * on as if the process had never stopped. The format is private to this file.
 */
#include "engine_int.h"

#include <errno.h>
#include <string.h>

#define MAGIC "ONRCKPT1"

static void put_u64(onr_hashed_writer *w, uint64_t v)
{
    onr_hw_put(w, &v, sizeof(v));
}

static void put_key(onr_hashed_writer *w, const char *s, size_t n)
{
    uint16_t len = (uint16_t)n;
    onr_hw_put(w, &len, sizeof(len));
    onr_hw_put(w, s, n);
}

static user *user_at(const eng *e, size_t chunk, size_t i)
{
    return (user *)(void *)(e->chunks[chunk] + e->user_size * i);
}

int eng_save(const eng *e, FILE *out)
{
    const rule_set *rs = e->rs;
    onr_hashed_writer w;
    onr_hw_init(&w, out, 0x636b7074);
    onr_hw_put(&w, MAGIC, 8);
    put_u64(&w, rule_layout_fingerprint(rs));
    put_u64(&w, (uint64_t)e->clock);
    put_u64(&w, (uint64_t)rs->layout.size);
    put_u64(&w, (uint64_t)rs->nsegments);
    put_u64(&w, (uint64_t)rs->ntriggers);
    onr_hw_put(&w, &e->st, sizeof(e->st));
    onr_hw_put(&w, e->seg_sizes, sizeof(uint64_t) * (size_t)rs->nsegments);
    onr_hw_put(&w, e->trig_fires, sizeof(uint64_t) * (size_t)rs->ntriggers);
    onr_hw_put(&w, e->trig_held, sizeof(uint64_t) * (size_t)rs->ntriggers);

    put_u64(&w, e->st.users);
    for (size_t c = 0; c < e->nchunks; c++) {
        size_t used = c + 1 == e->nchunks ? e->chunk_used : USERS_PER_CHUNK;
        for (size_t i = 0; i < used; i++) {
            const user *u = user_at(e, c, i);
            if (((const rule_hdr *)(const void *)u->prof)->flags & RH_MERGED)
                continue;
            size_t n;
            const char *k = eng_user_key(u, &n);
            put_key(&w, k, n);
            onr_hw_put(&w, u->prof, rs->layout.size);
        }
    }
    put_u64(&w, e->alias_count);
    if (e->aliases)
        for (size_t i = 0; i <= e->alias_mask; i++) {
            const keyrec *k = e->aliases[i].k;
            if (!k)
                continue;
            const user *u = k->u;
            while (((const rule_hdr *)(const void *)u->prof)->flags & RH_MERGED)
                memcpy(&u, u->prof + sizeof(rule_hdr), sizeof(u));
            size_t n;
            const char *target = eng_user_key(u, &n);
            put_key(&w, k->s, k->len);
            put_key(&w, target, n);
        }
    uint64_t sum;
    int err = onr_hw_finish(&w, &sum);
    if (!err && fwrite(&sum, 1, sizeof(sum), out) != sizeof(sum))
        err = errno ? -errno : -EIO;
    if (!err && fflush(out) != 0)
        err = errno ? -errno : -EIO;
    return err;
}

typedef struct reader {
    FILE *f;
    onr_hasher *h;
    bool bad;
} reader;

static void get(reader *r, void *p, size_t n)
{
    if (r->bad || fread(p, 1, n, r->f) != n) {
        r->bad = true;
        memset(p, 0, n);
        return;
    }
    onr_hasher_update(r->h, p, n);
}

static uint64_t get_u64(reader *r)
{
    uint64_t v;
    get(r, &v, sizeof(v));
    return v;
}

static trk_str get_key(reader *r, char *buf)
{
    uint16_t len;
    get(r, &len, sizeof(len));
    get(r, buf, len);
    return (trk_str){buf, len};
}

int eng_load(eng *e, FILE *in, char *err, size_t errlen)
{
    const rule_set *rs = e->rs;
    if (e->st.events || e->st.users) {
        snprintf(err, errlen, "a checkpoint loads into a new engine only");
        return ONR_E_INVALID;
    }
    reader r = {.f = in, .h = onr_hasher_new(0x636b7074)};
    char magic[8];
    char key[TRK_MAX_ID_BYTES + 64], target[TRK_MAX_ID_BYTES + 64];
    int rc = ONR_E_INVALID;
    get(&r, magic, 8);
    if (r.bad || memcmp(magic, MAGIC, 8) != 0) {
        snprintf(err, errlen, "not an onramp checkpoint");
        goto out;
    }
    if (get_u64(&r) != rule_layout_fingerprint(rs)) {
        snprintf(err, errlen,
                 "the checkpoint was written under rules with another profile "
                 "layout; replay the log from its start instead");
        goto out;
    }
    int64_t clock = (int64_t)get_u64(&r);
    uint64_t size = get_u64(&r), nseg = get_u64(&r), ntrig = get_u64(&r);
    if (size != rs->layout.size || nseg != (uint64_t)rs->nsegments ||
        ntrig != (uint64_t)rs->ntriggers) {
        snprintf(err, errlen, "the checkpoint does not match the loaded rules");
        goto out;
    }
    eng_stats st;
    get(&r, &st, sizeof(st));
    get(&r, e->seg_sizes, sizeof(uint64_t) * (size_t)rs->nsegments);
    get(&r, e->trig_fires, sizeof(uint64_t) * (size_t)rs->ntriggers);
    get(&r, e->trig_held, sizeof(uint64_t) * (size_t)rs->ntriggers);
    e->clock = clock;
    tmr_init(e->wheel, clock);
    uint64_t nusers = get_u64(&r);
    for (uint64_t i = 0; i < nusers && !r.bad; i++) {
        trk_str k = get_key(&r, key);
        if (r.bad || !k.n || eng__lookup(e, k)) {
            r.bad = true;
            break;
        }
        user *u = eng__new_user(e, k);
        get(&r, u->prof, rs->layout.size);
        ((rule_hdr *)(void *)u->prof)->flags &= (uint8_t)~RH_MERGED;
    }
    uint64_t naliases = get_u64(&r);
    for (uint64_t i = 0; i < naliases && !r.bad; i++) {
        trk_str k = get_key(&r, key);
        trk_str t = get_key(&r, target);
        user *u = r.bad ? NULL : eng__lookup(e, t);
        if (!u) {
            r.bad = true;
            break;
        }
        eng__alias(e, u, k);
    }
    uint64_t want = onr_hasher_digest(r.h), sum = 0;
    if (r.bad || fread(&sum, 1, sizeof(sum), in) != sizeof(sum) || sum != want) {
        snprintf(err, errlen, "the checkpoint is damaged or cut short");
        goto out;
    }
    /* the counters as they were (users counts the profiles just re-created) */
    st.users = e->st.users;
    e->st = st;
    for (size_t c = 0; c < e->nchunks; c++) {
        size_t used = c + 1 == e->nchunks ? e->chunk_used : USERS_PER_CHUNK;
        for (size_t i = 0; i < used; i++)
            eng__schedule(e, user_at(e, c, i));
    }
    rc = 0;
out:
    onr_hasher_free(r.h);
    return rc;
}
