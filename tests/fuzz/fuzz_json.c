/*
 * fuzz_json.c - libFuzzer target: any bytes as a JSON document, at a nesting limit taken
 * from the first byte. A failed parse names its reason, and the position jdoc_error_offset
 * gives for it (the hand-written scanner behind "invalid JSON at line L, column C") lies
 * within the input, or is -1, and is the same when asked twice. A document that parses is
 * written back from its text (jdoc_keep_text), whole and member by member, and what is
 * written parses to the same values as the input (formatted alike).
 */
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input, formatted from its parse. */
static void formatted(jdoc *d, const char *s, size_t n, onr_buf *out)
{
    jval root;
    char err[256];
    if (jdoc_parse(d, s, n, &root, err, sizeof(err)))
        abort(); /* what was written from valid text is valid */
    onr_buf_clear(out);
    jval_write(root, out);
}

/* Checks that what doc (parsed from data[0..size), keeping its text) writes means the same. */
static void check_text(jdoc *doc, jval root, const uint8_t *data, size_t size)
{
    static jdoc *plain;
    static onr_buf text, members, want, got;
    if (!plain)
        plain = jdoc_new(1 << 20);
    onr_buf_clear(&text);
    onr_buf_clear(&members);
    jval_write(root, &text);
    jiter it = jval_iter(root);
    jval v;
    const char *k;
    size_t kn;
    bool object = jval_type(root) == J_OBJECT;
    onr_buf_putc(&members, object ? '{' : '[');
    for (bool first = true; jiter_next(&it, &v, &k, &kn); first = false) {
        if (!first)
            onr_buf_putc(&members, ',');
        if (object)
            jval_write_member(v, k, kn, &members);
        else
            jval_write(v, &members);
    }
    onr_buf_putc(&members, object ? '}' : ']');
    if (text.len > size)
        abort(); /* only whitespace is dropped */
    formatted(plain, (const char *)data, size, &want);
    formatted(plain, text.data, text.len, &got);
    if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
        abort();
    if (object || jval_type(root) == J_ARRAY) {
        formatted(plain, members.data, members.len, &got);
        if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jdoc *doc;
    if (!doc) {
        doc = jdoc_new(1 << 20);
        jdoc_keep_text(doc, true);
    }
    if (size == 0)
        return 0;
    size_t depth = 1 + data[0] % 64;
    if (jdoc_set_max_depth(doc, depth) != 0)
        abort();
    jval root;
    char err[256];
    err[0] = 0;
    int rc = jdoc_parse(doc, (const char *)data + 1, size - 1, &root, err, sizeof(err));
    if (rc == 0) {
        check_text(doc, root, data + 1, size - 1);
        return 0;
    }
    if (rc != ONR_E_PARSE || !err[0])
        abort(); /* every rejection is a parse error that names its reason */
    long at = jdoc_error_offset(doc);
    if (at < -1 || at > (long)(size - 1))
        abort(); /* the position lies within the input */
    if (jdoc_error_offset(doc) != at)
        abort();
    return 0;
}
