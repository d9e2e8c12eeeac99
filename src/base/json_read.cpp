/*
 * json_read.cpp - the C face of simdjson's DOM parser: strict (malformed input anywhere is
 * an error), allocation-free once the parser has grown to the largest document seen.
 * The project's only C++ file; nothing C++ crosses json.h.
 */
#include "json.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <new>
#include <vector>
#include <simdjson.h>

using namespace simdjson;

struct jdoc {
    dom::parser parser;
    padded_string pad; /* scratch copy with the padding simdjson reads past the end */
    const char *src;   /* the input of the last parse: pad's data, or the caller's */
    size_t max_bytes;
    size_t max_depth;
    size_t len;                    /* of the last document parsed */
    error_code last_err;           /* of the last jdoc_parse */
    bool keep_text;                /* jdoc_keep_text: jval_write copies values' text from src */
    bool text_ok;                  /* text_at maps the last parse's values to their text */
    bool spaced;                   /* and that text has whitespace outside strings */
    std::vector<uint32_t> text_at; /* per tape entry: the number of its structural */
};

static_assert(sizeof(dom::element) == sizeof(jval), "jval must hold a dom::element");
static_assert(JDOC_PADDING >= SIMDJSON_PADDING, "the padding simdjson reads past the end");

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
    d->max_depth = JDOC_MAX_DEPTH;
    d->len = 0;
    d->src = nullptr;
    d->last_err = SUCCESS;
    d->keep_text = d->text_ok = d->spaced = false;
    return d;
}

extern "C" void jdoc_free(jdoc *d)
{
    delete d;
}

extern "C" int jdoc_set_max_depth(jdoc *d, size_t depth)
{
    static_assert(JDOC_MAX_DEPTH == DEFAULT_MAX_DEPTH, "the depth simdjson allows by default");
    if (depth < 1 || depth > JDOC_MAX_DEPTH)
        return ONR_E_INVALID;
    /* later growth (parser::ensure_capacity) keeps the depth set here */
    size_t cap = d->parser.capacity() ? d->parser.capacity() : 4096;
    if (d->parser.allocate(cap, depth))
        return ONR_E_INVALID;
    d->max_depth = depth;
    return 0;
}

extern "C" void jdoc_keep_text(jdoc *d, bool keep)
{
    d->keep_text = keep;
    d->text_ok = false;
}

/* A token's first character and a tape entry's type, as one kind for each pair that goes
 * together (numbers all alike; the two never meet otherwise), and whitespace. */
static const struct kinds {
    unsigned char first[256], entry[256];
    bool ws[256];
    constexpr kinds() : first(), entry(), ws()
    {
        for (int c = 0; c < 256; c++) {
            bool same = c == '{' || c == '}' || c == '[' || c == ']' || c == '"' || c == 't' ||
                        c == 'f' || c == 'n';
            first[c] = c == '-' || (c >= '0' && c <= '9') ? '#' : same ? c : 1;
            entry[c] = c == 'l' || c == 'u' || c == 'd' ? '#' : same ? c : 2;
            ws[c] = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        }
    }
} kind;

static bool is_ws(unsigned char c)
{
    return kind.ws[c];
}

/*
 * Pairs each entry of the parsed document's tape (simdjson's doc/tape.md) with the
 * structural character stage 1 found for it: every value, key and closing bracket is one
 * entry and one structural, in the same order, and the ':' and ',' between them are
 * structurals with no entry, where the grammar puts them. So the pairing follows from the
 * tape alone (the walk counts the separators as it goes); the count must come out at the
 * number of structurals, and write_text checks each value it writes against its text (a '{'
 * entry at a '{', a string at a quote, a number at a digit or '-'), or formats it from the
 * tape instead.
 */
static void map_text(jdoc *d)
{
    /* Where the walk is in the container it is in: before the first element, or a later
     * one (a ',' before it); in an object, before a member's value (a ':' before it). Each
     * state's successor and whether a separator comes before it are read from constants (4
     * bits a state), not from memory, to keep the walk's own chain of steps short. */
    enum : unsigned { FIRST, NEXT, OBJ_FIRST, OBJ_VALUE, OBJ_NEXT };
    const uint64_t after = (uint64_t)NEXT | (uint64_t)NEXT << 4 | (uint64_t)OBJ_VALUE << 8 |
                           (uint64_t)OBJ_NEXT << 12 | (uint64_t)OBJ_VALUE << 16;
    const unsigned sep = 1u << NEXT | 1u << OBJ_VALUE | 1u << OBJ_NEXT;
    uint8_t outer[JDOC_MAX_DEPTH + 1]; /* the states of the containers around */

    const uint64_t *tape = d->parser.doc.tape.get();
    const auto *impl = d->parser.implementation.get();
    const uint32_t *idx = impl->structural_indexes.get();
    size_t ns = impl->n_structural_indexes;
    const unsigned char *src = reinterpret_cast<const unsigned char *>(d->src);
    size_t ntape = (size_t)(tape[0] & internal::JSON_VALUE_MASK); /* past the closing root */
    if (ns == 0 || ntape < 3)
        return;
    if (d->text_at.size() < ntape)
        d->text_at.resize(ntape);
    uint32_t *at = d->text_at.data();
    size_t depth = 0, j = 0;
    unsigned cur = FIRST; /* the root holds one value */
    bool payload = false;
    for (size_t t = 1; t + 1 < ntape; t++) {
        if (payload) { /* a number's own 64 bits */
            payload = false;
            continue;
        }
        unsigned char type = (unsigned char)(tape[t] >> 56);
        if (type == '}' || type == ']') {
            if (depth == 0)
                return;
            cur = outer[--depth];
        } else {
            j += (sep >> cur) & 1;
            cur = (unsigned)(after >> (cur * 4)) & 15;
        }
        at[t] = (uint32_t)j++;
        if (type == '{' || type == '[') {
            if (depth + 1 >= sizeof(outer))
                return;
            outer[depth++] = (uint8_t)cur;
            cur = type == '{' ? OBJ_FIRST : FIRST;
        }
        payload = kind.entry[type] == '#';
    }
    if (depth != 0 || j != ns)
        return;
    /* all whitespace between tokens ends before a structural (the root's first token has
     * none that matters before it) */
    bool spaced = false;
    for (size_t i = 1; i < ns; i++)
        spaced |= is_ws(src[idx[i] - 1]);
    d->spaced = spaced;
    d->text_ok = true;
}

extern "C" int jdoc_parse_padded(jdoc *d, const char *buf, size_t len, size_t cap, jval *root,
                                 char *err, size_t errlen)
{
    d->len = 0;
    d->last_err = CAPACITY;
    d->text_ok = false;
    if (len > d->max_bytes) {
        snprintf(err, errlen, "document of %zu bytes exceeds the limit of %zu", len, d->max_bytes);
        return ONR_E_LIMIT;
    }
    if (cap < len || cap - len < JDOC_PADDING) {
        if (!d->pad.data() || d->pad.size() < len) {
            d->pad = padded_string(len < 4096 ? 4096 : len * 2);
        }
        std::memcpy(d->pad.data(), buf, len);
        std::memset(d->pad.data() + len, 0, SIMDJSON_PADDING);
        buf = d->pad.data();
    }
    d->src = buf;
    dom::element e;
    auto error = d->parser.parse(reinterpret_cast<const uint8_t *>(buf), len, false).get(e);
    d->len = len;
    d->last_err = error;
    if (error) {
        snprintf(err, errlen, "invalid JSON: %s", error_message(error));
        return ONR_E_PARSE;
    }
    if (d->keep_text)
        map_text(d);
    *root = from_el(e);
    return 0;
}

extern "C" int jdoc_parse(jdoc *d, const char *buf, size_t len, jval *root, char *err,
                          size_t errlen)
{
    return jdoc_parse_padded(d, buf, len, 0, root, err, errlen);
}

/* ---- where a document stops being JSON (for error messages only) */

/* Length of the valid UTF-8 sequence at p[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t k;
    unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
        hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing past U+10FFFF */
    } else
        return 0;
    if (n < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return k;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* What may follow a number or an atom. */
static bool is_end(unsigned char c)
{
    return is_ws(c) || c == ',' || c == ']' || c == '}';
}

/* Skips the string starting at p[*i] (a quote); false with *i at the offending byte. */
static bool skip_string(const unsigned char *p, size_t n, size_t *i)
{
    size_t k = *i + 1;
    while (k < n) {
        unsigned char c = p[k];
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c == '\\') {
            if (k + 1 >= n)
                break;
            unsigned char e = p[k + 1];
            if (e == 'u') {
                for (size_t h = k + 2; h < k + 6; h++)
                    if (h >= n || !isxdigit(p[h])) {
                        *i = h;
                        return false;
                    }
                k += 6;
            } else if (e && strchr("\"\\/bfnrt", e)) {
                k += 2;
            } else {
                *i = k + 1;
                return false;
            }
        } else if (c < 0x20) {
            *i = k;
            return false;
        } else {
            size_t m = utf8_seq(p + k, n - k);
            if (!m) {
                *i = k;
                return false;
            }
            k += m;
        }
    }
    *i = n;
    return false;
}

/* Skips the number at p[*i]; false with *i at the offending byte, or at the number when it is
 * out of range (an integer past 64 bits, a float past double). */
static bool skip_number(const unsigned char *p, size_t n, size_t *i)
{
    size_t k = *i;
    bool neg = k < n && p[k] == '-', frac = false;
    if (neg)
        k++;
    if (k < n && p[k] == '0')
        k++;
    else if (k < n && is_digit(p[k]))
        while (k < n && is_digit(p[k]))
            k++;
    else
        goto bad;
    if (k < n && p[k] == '.') {
        frac = true;
        if (++k >= n || !is_digit(p[k]))
            goto bad;
        while (k < n && is_digit(p[k]))
            k++;
    }
    if (k < n && (p[k] == 'e' || p[k] == 'E')) {
        frac = true;
        k++;
        if (k < n && (p[k] == '+' || p[k] == '-'))
            k++;
        if (k >= n || !is_digit(p[k]))
            goto bad;
        while (k < n && is_digit(p[k]))
            k++;
    }
    if (k < n && !is_end(p[k]))
        goto bad;
    {
        std::string num(reinterpret_cast<const char *>(p + *i), k - *i);
        const char *digits = num.c_str() + neg,
                   *most = neg ? "9223372036854775808" : "18446744073709551615";
        size_t nd = strlen(digits), nm = strlen(most);
        if (frac ? std::isinf(std::strtod(num.c_str(), nullptr))
                 : nd > nm || (nd == nm && strcmp(digits, most) > 0))
            return false; /* *i stays at the number */
    }
    *i = k;
    return true;
bad:
    *i = k;
    return false;
}

/*
 * The offset of the first byte at which p[0..n) cannot continue as one JSON text (n when it
 * ends too soon), or -1 when a scan finds nothing wrong. Nesting deeper than max_depth
 * counts as wrong, at the bracket that goes too deep.
 */
static long syntax_error_at(const unsigned char *p, size_t n, size_t max_depth)
{
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, NEXT } st = VALUE;
    uint64_t in_object[DEFAULT_MAX_DEPTH / 64 + 1] = {0}; /* one bit per open container */
    size_t depth = 0, i = 0;
    if (max_depth > DEFAULT_MAX_DEPTH)
        max_depth = DEFAULT_MAX_DEPTH;
    for (;;) {
        while (i < n && is_ws(p[i]))
            i++;
        if (i == n)
            return st == NEXT && depth == 0 ? -1 : (long)n;
        unsigned char c = p[i];
        bool obj = depth && (in_object[(depth - 1) / 64] >> ((depth - 1) % 64) & 1);
        switch (st) {
        case KEY_OR_CLOSE:
        case VALUE_OR_CLOSE:
            if (c == (st == KEY_OR_CLOSE ? '}' : ']')) {
                depth--;
                st = NEXT;
                i++;
                continue;
            }
            if (st == VALUE_OR_CLOSE)
                goto value;
            [[fallthrough]];
        case KEY:
            if (c != '"' || !skip_string(p, n, &i))
                return (long)i;
            st = COLON;
            continue;
        case COLON:
            if (c != ':')
                return (long)i;
            i++;
            st = VALUE;
            continue;
        case NEXT:
            if (depth == 0)
                return (long)i; /* content after the document */
            if (c == ',') {
                st = obj ? KEY : VALUE;
                i++;
            } else if (c == (obj ? '}' : ']')) {
                depth--;
                i++;
            } else {
                return (long)i;
            }
            continue;
        case VALUE:
        value:
            if (c == '{' || c == '[') {
                if (depth == max_depth)
                    return (long)i;
                uint64_t bit = (uint64_t)1 << (depth % 64);
                if (c == '{')
                    in_object[depth / 64] |= bit;
                else
                    in_object[depth / 64] &= ~bit;
                depth++;
                st = c == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                i++;
                continue;
            }
            st = NEXT;
            if (c == '"') {
                if (!skip_string(p, n, &i))
                    return (long)i;
            } else if (c == '-' || is_digit(c)) {
                if (!skip_number(p, n, &i))
                    return (long)i;
            } else {
                static const char *const atoms[] = {"true", "false", "null"};
                size_t m = 0;
                for (const char *a : atoms)
                    if (n - i >= strlen(a) && memcmp(p + i, a, strlen(a)) == 0)
                        m = strlen(a);
                if (!m || (i + m < n && !is_end(p[i + m])))
                    return (long)i;
                i += m;
            }
            continue;
        }
    }
}

extern "C" long jdoc_error_offset(const jdoc *d)
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(d->src);
    size_t n = d->len;
    switch (d->last_err) {
    case SUCCESS:
    case CAPACITY:
    case MEMALLOC:
        return -1;
    case UTF8_ERROR:
        /* found before any structure is read: the first bad sequence anywhere */
        for (size_t i = 0; i < n;) {
            size_t m = utf8_seq(p + i, n - i);
            if (!m)
                return (long)i;
            i += m;
        }
        return -1;
    default:
        return syntax_error_at(p, n, d->max_depth);
    }
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

/* The jdoc whose parser holds the document a value points into. */
static const jdoc *jdoc_of(const void *doc)
{
    static const std::ptrdiff_t doc_at = [] {
        jdoc probe;
        return reinterpret_cast<const char *>(&probe.parser.doc) -
               reinterpret_cast<const char *>(&probe);
    }();
    return reinterpret_cast<const jdoc *>(static_cast<const char *>(doc) - doc_at);
}

/* Writes the input's text from tape entry `from` to the end of value v (at tape entry t),
 * without the whitespace outside strings; false when that cannot be done (and nothing was
 * written). */
static bool write_text(const jdoc *d, size_t from, size_t t, onr_buf *b)
{
    const uint64_t *tape = d->parser.doc.tape.get();
    const uint32_t *idx = d->parser.implementation->structural_indexes.get();
    size_t ns = d->parser.implementation->n_structural_indexes;
    uint32_t j = d->text_at[t];
    size_t start = idx[d->text_at[from]], end;
    unsigned char type = (unsigned char)(tape[t] >> 56);
    const unsigned char *src = reinterpret_cast<const unsigned char *>(d->src);
    if (kind.first[src[idx[j]]] != kind.entry[type])
        return false; /* not the text of this value (map_text) */
    if (type == '{' || type == '[') {
        size_t close = (size_t)(uint32_t)tape[t] - 1; /* its payload: past the close */
        end = idx[d->text_at[close]] + 1;
        if (src[end - 1] != (type == '{' ? '}' : ']'))
            return false;
    } else {
        end = j + 1 < ns ? idx[j + 1] : d->len;
        while (end > start && is_ws(src[end - 1]))
            end--;
    }
    if (!d->spaced) {
        onr_buf_put(b, d->src + start, end - start);
        return true;
    }
    onr_buf_reserve(b, end - start);
    size_t n = 0;
    if (minify(d->src + start, end - start, b->data + b->len, n) != SUCCESS)
        return false;
    b->len += n;
    return true;
}

/* Whether tape entry t (of a document with text_ok) is the key of the value at entry t + 1:
 * a string, then a ':', then the value's structural. */
static bool is_key(const jdoc *d, size_t t)
{
    const uint32_t *idx = d->parser.implementation->structural_indexes.get();
    uint32_t j = d->text_at[t];
    return (char)(d->parser.doc.tape[t] >> 56) == '"' && d->text_at[t + 1] == j + 2 &&
           d->src[idx[j + 1]] == ':';
}

/* The builder behind jval_write without the text: one per thread, cleared rather than
 * freed, so that writing allocates nothing once its buffer has grown (simdjson::minify
 * builds a new std::string each call). The builder is simdjson's own, behind minify; the
 * Debian package fixes its version. */
static void format(jval v, onr_buf *b)
{
    static thread_local simdjson::internal::string_builder<> sb;
    sb.clear();
    sb.append(to_el(v));
    std::string_view s = sb.str();
    onr_buf_put(b, s.data(), s.size());
}

extern "C" void jval_write(jval v, onr_buf *b)
{
    if (!v.doc) {
        onr_buf_puts(b, "null");
        return;
    }
    const jdoc *d = jdoc_of(v.doc);
    if (d->text_ok && write_text(d, v.index, v.index, b))
        return;
    format(v, b);
}

extern "C" void jval_write_member(jval v, const char *key, size_t keylen, onr_buf *b)
{
    const jdoc *d = v.doc ? jdoc_of(v.doc) : nullptr;
    /* a member's key is the tape entry before its value, the structural before a ':' */
    if (d && d->text_ok && v.index > 1 && is_key(d, v.index - 1) &&
        write_text(d, v.index - 1, v.index, b))
        return;
    jw_str(b, key, keylen);
    onr_buf_putc(b, ':');
    jval_write(v, b);
}
