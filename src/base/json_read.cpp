/*
 * json_read.cpp - the C face of simdjson's DOM parser: strict (malformed input anywhere is
 * an error), allocation-free once the parser has grown to the largest document seen.
 * The project's only C++ file; nothing C++ crosses json.h.
 */
#include "json.h"

#include <cstring>
#include <new>
#include <simdjson.h>

using namespace simdjson;

struct jdoc {
    dom::parser parser;
    padded_string pad; /* scratch copy with the padding simdjson reads past the end */
    size_t max_bytes;
};

static_assert(sizeof(dom::element) == sizeof(jval), "jval must hold a dom::element");

static inline dom::element to_el(jval v)
{
    dom::element e;
    std::memcpy(static_cast<void *>(&e), &v, sizeof(v));
    return e;
}

static inline jval from_el(dom::element e)
{
    jval v;
    std::memcpy(&v, static_cast<const void *>(&e), sizeof(v));
    return v;
}

static const jval NONE = {nullptr, 0};

extern "C" jdoc *jdoc_new(size_t max_bytes)
{
    jdoc *d = new (std::nothrow) jdoc();
    if (!d)
        return nullptr;
    d->max_bytes = max_bytes;
    return d;
}

extern "C" void jdoc_free(jdoc *d)
{
    delete d;
}

extern "C" int jdoc_parse(jdoc *d, const char *buf, size_t len, jval *root, char *err,
                          size_t errlen)
{
    if (len > d->max_bytes) {
        snprintf(err, errlen, "document of %zu bytes exceeds the limit of %zu", len,
                 d->max_bytes);
        return ONR_E_LIMIT;
    }
    if (!d->pad.data() || d->pad.size() < len) {
        d->pad = padded_string(len < 4096 ? 4096 : len * 2);
    }
    std::memcpy(d->pad.data(), buf, len);
    std::memset(d->pad.data() + len, 0, SIMDJSON_PADDING);
    dom::element e;
    auto error = d->parser.parse(reinterpret_cast<const uint8_t *>(d->pad.data()), len, false)
                     .get(e);
    if (error) {
        snprintf(err, errlen, "invalid JSON: %s", error_message(error));
        return ONR_E_PARSE;
    }
    *root = from_el(e);
    return 0;
}

extern "C" jtype jval_type(jval v)
{
    if (!v.doc)
        return J_NONE;
    switch (to_el(v).type()) {
    case dom::element_type::NULL_VALUE:
        return J_NULL;
    case dom::element_type::BOOL:
        return J_BOOL;
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE:
        return J_NUMBER;
    case dom::element_type::STRING:
        return J_STRING;
    case dom::element_type::ARRAY:
        return J_ARRAY;
    case dom::element_type::OBJECT:
        return J_OBJECT;
    }
    return J_NONE;
}

extern "C" const char *jtype_name(jtype t)
{
    switch (t) {
    case J_NONE:
        return "missing";
    case J_NULL:
        return "null";
    case J_BOOL:
        return "boolean";
    case J_NUMBER:
        return "number";
    case J_STRING:
        return "string";
    case J_ARRAY:
        return "array";
    case J_OBJECT:
        return "object";
    }
    return "?";
}

extern "C" bool jval_bool(jval v)
{
    bool b = false;
    if (v.doc && to_el(v).get_bool().get(b))
        return false;
    return b;
}

extern "C" double jval_number(jval v)
{
    if (!v.doc)
        return 0;
    dom::element e = to_el(v);
    switch (e.type()) {
    case dom::element_type::INT64:
        return (double)int64_t(e);
    case dom::element_type::UINT64:
        return (double)uint64_t(e);
    case dom::element_type::DOUBLE:
        return double(e);
    default:
        return 0;
    }
}

extern "C" const char *jval_str(jval v, size_t *len)
{
    std::string_view s;
    if (!v.doc || to_el(v).get_string().get(s)) {
        *len = 0;
        return "";
    }
    *len = s.size();
    return s.data();
}

extern "C" jval jval_get(jval obj, const char *key, size_t keylen)
{
    if (!obj.doc)
        return NONE;
    dom::object o;
    if (to_el(obj).get_object().get(o))
        return NONE;
    dom::element e;
    if (o.at_key(std::string_view(key, keylen)).get(e))
        return NONE;
    return from_el(e);
}

extern "C" jval jval_getz(jval obj, const char *key)
{
    return jval_get(obj, key, strlen(key));
}

/* An iterator is kept as the bytes of simdjson's own (current, end) iterator pair. */
static_assert(sizeof(dom::object::iterator) == sizeof(jval), "object iterator size");
static_assert(sizeof(dom::array::iterator) == sizeof(jval), "array iterator size");

template <typename T> static inline jval pack(T it)
{
    jval v;
    std::memcpy(&v, static_cast<const void *>(&it), sizeof(v));
    return v;
}

template <typename T> static inline T unpack(jval v)
{
    T it;
    std::memcpy(static_cast<void *>(&it), &v, sizeof(v));
    return it;
}

extern "C" jiter jval_iter(jval v)
{
    jiter it;
    it.object = false;
    it.cur = it.end = NONE;
    jtype t = jval_type(v);
    if (t == J_OBJECT) {
        dom::object o = to_el(v).get_object().value_unsafe();
        it.object = true;
        it.cur = pack(o.begin());
        it.end = pack(o.end());
    } else if (t == J_ARRAY) {
        dom::array a = to_el(v).get_array().value_unsafe();
        it.cur = pack(a.begin());
        it.end = pack(a.end());
    }
    return it;
}

extern "C" bool jiter_next(jiter *it, jval *out, const char **key, size_t *keylen)
{
    if (!it->cur.doc)
        return false;
    if (it->object) {
        auto cur = unpack<dom::object::iterator>(it->cur);
        if (cur == unpack<dom::object::iterator>(it->end))
            return false;
        *out = from_el(cur.value());
        if (key) {
            std::string_view k = cur.key();
            *key = k.data();
            *keylen = k.size();
        }
        ++cur;
        it->cur = pack(cur);
    } else {
        auto cur = unpack<dom::array::iterator>(it->cur);
        if (cur == unpack<dom::array::iterator>(it->end))
            return false;
        *out = from_el(*cur);
        if (key) {
            *key = nullptr;
            *keylen = 0;
        }
        ++cur;
        it->cur = pack(cur);
    }
    return true;
}

extern "C" void jval_write(jval v, onr_buf *b)
{
    if (!v.doc) {
        onr_buf_puts(b, "null");
        return;
    }
    std::string s = simdjson::minify(to_el(v));
    onr_buf_put(b, s.data(), s.size());
}
