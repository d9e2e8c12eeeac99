/*
 * json.h - reading JSON (a C face on simdjson's DOM parser, the project's only C++) and
 * writing it (a small buffer writer of our own). Values read are views into the parser's
 * memory: valid until the next jdoc_parse on the same jdoc.
 */
#ifndef ONR_JSON_H
#define ONR_JSON_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- reading */

typedef struct jdoc jdoc;

/* An element of a parsed document; copyable, two words. */
typedef struct jval {
    const void *doc;
    size_t index;
} jval;

typedef enum jtype {
    J_NONE = 0, /* absent: a missing key or an out-of-range index */
    J_NULL,
    J_BOOL,
    J_NUMBER,
    J_STRING,
    J_ARRAY,
    J_OBJECT,
} jtype;

/* Caller owns the result; max_bytes bounds the documents it will parse. */
jdoc *jdoc_new(size_t max_bytes);
void jdoc_free(jdoc *d);

/* The deepest nesting of arrays and objects jdoc_parse accepts: JDOC_MAX_DEPTH unless set
 * lower here; a deeper document fails with ONR_E_PARSE ("too deep"). Returns 0, or
 * ONR_E_INVALID for a depth outside 1..JDOC_MAX_DEPTH (or no memory). */
#define JDOC_MAX_DEPTH 1024
int jdoc_set_max_depth(jdoc *d, size_t depth);

/* Parses buf[0..len). On failure returns ONR_E_PARSE (or ONR_E_LIMIT when len exceeds the
 * bound) and writes a one-line reason into err. buf needs no padding. */
int jdoc_parse(jdoc *d, const char *buf, size_t len, jval *root, char *err, size_t errlen);

/* The bytes past a document's end that jdoc_parse_padded needs readable; what they hold
 * does not matter. */
#define JDOC_PADDING 64

/* jdoc_parse over buf where it is, without jdoc_parse's copy, when buf's allocation runs
 * JDOC_PADDING bytes or more past the document (cap - len, all of it initialized); otherwise
 * as jdoc_parse. The document's values do not point into buf. */
int jdoc_parse_padded(jdoc *d, const char *buf, size_t len, size_t cap, jval *root, char *err,
                      size_t errlen);

/* Whether jval_write copies values from the input's text (as sent, less the whitespace
 * outside strings: escapes and numbers as written) instead of formatting them from the
 * parsed document. With jdoc_parse_padded the caller then keeps buf unchanged for as long
 * as it writes the values; jdoc_parse's own copy lasts until the next parse. Off by default;
 * applies from the next parse. */
void jdoc_keep_text(jdoc *d, bool keep);

/* After jdoc_parse failed with ONR_E_PARSE: the byte offset in buf at which the input stops
 * being JSON (its length when it ends too soon), for a message that points at it; -1 when it
 * cannot be told. Reads the input (the jdoc's copy, or buf after jdoc_parse_padded), so call
 * it before the next parse and before buf changes. */
long jdoc_error_offset(const jdoc *d);

jtype jval_type(jval v);
const char *jtype_name(jtype t);
bool jval_bool(jval v);
double jval_number(jval v);
/* A string's bytes (not NUL-terminated in general); *len receives its length. */
const char *jval_str(jval v, size_t *len);
/* Object member by key, or a J_NONE value. */
jval jval_get(jval obj, const char *key, size_t keylen);
jval jval_getz(jval obj, const char *key);

/* Iteration over arrays and objects. */
typedef struct jiter {
    jval cur, end;
    bool object;
} jiter;
jiter jval_iter(jval v);
/* Returns false at the end; for objects, key and keylen receive the member's key. */
bool jiter_next(jiter *it, jval *out, const char **key, size_t *keylen);

/* Serializes v compactly (minified) onto b: from its text under jdoc_keep_text, else from
 * the parsed value (escapes as short as JSON allows, numbers as simdjson formats them). */
void jval_write(jval v, onr_buf *b);
/* Writes "key":v for v a member of an object, with the key jiter_next gave for it, as
 * jval_write writes v (the key too from its text under jdoc_keep_text). */
void jval_write_member(jval v, const char *key, size_t keylen, onr_buf *b);

/* ---- writing */

/* Appends a JSON string literal (quotes and escapes) for s[0..n). */
void jw_str(onr_buf *b, const char *s, size_t n);
void jw_strz(onr_buf *b, const char *s);
/* Appends a number the way JSON wants it (integers without a fraction). */
void jw_num(onr_buf *b, double v);
/* Appends "key": to an object being written (the caller writes commas). */
void jw_key(onr_buf *b, const char *key);
/* Appends an event time as a JSON string "2026-11-18T11:45:02.000Z". */
void jw_time(onr_buf *b, int64_t ms);

#ifdef __cplusplus
}
#endif

#endif
