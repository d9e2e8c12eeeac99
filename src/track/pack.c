/*
 * pack.c - a decoded event in a compact, self-contained byte form: the fields the rules read
 * (ids, name, the schema's properties and traits), so that events can wait in a reorder
 * buffer or a benchmark's memory after the JSON they came from is gone.
 */
#include "track.h"

#include <string.h>

static void put_str(char **p, trk_str s)
{
    memcpy(*p, &s.n, 4);
    if (s.n) /* an empty one may have no bytes at all */
        memcpy(*p + 4, s.p, s.n);
    *p += 4 + s.n;
}

static size_t value_size(const trk_value *v)
{
    return 1 + (v->type == TV_NUM || v->type == TV_BOOL ? 8 : v->type == TV_STR ? 4 + v->str.n : 0);
}

static void put_value(char **p, const trk_value *v)
{
    **p = (char)v->type;
    *p += 1;
    if (v->type == TV_NUM || v->type == TV_BOOL) {
        double d = v->type == TV_BOOL ? (double)v->b : v->num;
        memcpy(*p, &d, 8);
        *p += 8;
    } else if (v->type == TV_STR) {
        put_str(p, v->str);
    }
}

static trk_str get_str(const char **p)
{
    trk_str s;
    memcpy(&s.n, *p, 4);
    s.p = *p + 4;
    *p += 4 + s.n;
    return s;
}

static void get_value(const char **p, trk_value *v)
{
    v->type = (uint8_t) * *p;
    *p += 1;
    if (v->type == TV_NUM || v->type == TV_BOOL) {
        double d;
        memcpy(&d, *p, 8);
        *p += 8;
        v->num = d;
        v->b = d != 0;
    } else if (v->type == TV_STR) {
        v->str = get_str(p);
    }
}

size_t trk_packed_size(const trk_event *ev, const trk_schema *sc)
{
    size_t n = 8 + 1 + 16 + ev->user_id.n + ev->anon_id.n + ev->previous_id.n + ev->name.n;
    for (uint32_t i = 0; i < sc->nprops; i++)
        n += value_size(&ev->props[i]);
    for (uint32_t i = 0; i < sc->ntraits; i++)
        n += value_size(&ev->traits[i]);
    return (n + 7) & ~(size_t)7;
}

void trk_pack(char *p, const trk_event *ev, const trk_schema *sc)
{
    memcpy(p, &ev->ts_ms, 8);
    p[8] = (char)ev->kind;
    p += 9;
    put_str(&p, ev->user_id);
    put_str(&p, ev->anon_id);
    put_str(&p, ev->previous_id);
    put_str(&p, ev->name);
    for (uint32_t i = 0; i < sc->nprops; i++)
        put_value(&p, &ev->props[i]);
    for (uint32_t i = 0; i < sc->ntraits; i++)
        put_value(&p, &ev->traits[i]);
}

void trk_unpack(const char *p, trk_event *ev, const trk_schema *sc)
{
    memcpy(&ev->ts_ms, p, 8);
    ev->received_ms = 0; /* not packed: replay orders by event time alone */
    ev->kind = (trk_kind)p[8];
    p += 9;
    ev->user_id = get_str(&p);
    ev->anon_id = get_str(&p);
    ev->previous_id = get_str(&p);
    ev->name = get_str(&p);
    ev->message_id.p = "";
    ev->message_id.n = 0;
    for (uint32_t i = 0; i < sc->nprops; i++)
        get_value(&p, &ev->props[i]);
    for (uint32_t i = 0; i < sc->ntraits; i++)
        get_value(&p, &ev->traits[i]);
}

void trk_packed_ids(const char *in, trk_str *user_id, trk_str *anon_id)
{
    const char *p = in + 9;
    *user_id = get_str(&p);
    *anon_id = get_str(&p);
}

bool trk_packed_ids_in(const char *in, size_t len, trk_str *user_id, trk_str *anon_id)
{
    uint32_t n;
    if (len < 9 + 4)
        return false;
    memcpy(&n, in + 9, 4);
    if (n > len - 9 - 4 || len - 9 - 4 - n < 4)
        return false;
    const char *p = in + 9 + 4 + n;
    memcpy(&n, p, 4);
    if (n > (size_t)(in + len - p) - 4)
        return false;
    trk_packed_ids(in, user_id, anon_id);
    return true;
}
