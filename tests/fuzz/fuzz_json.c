/*
 * fuzz_json.c - libFuzzer target: any bytes as a JSON document, at a nesting limit taken
 * from the first byte. A failed parse names its reason, and the position jdoc_error_offset
 * gives for it (the hand-written scanner behind "invalid JSON at line L, column C") lies
 * within the input, or is -1, and is the same when asked twice.
 */
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jdoc *doc;
    if (!doc)
        doc = jdoc_new(1 << 20);
    if (size == 0)
        return 0;
    size_t depth = 1 + data[0] % 64;
    if (jdoc_set_max_depth(doc, depth) != 0)
        abort();
    jval root;
    char err[256];
    err[0] = 0;
    int rc = jdoc_parse(doc, (const char *)data + 1, size - 1, &root, err, sizeof(err));
    if (rc == 0)
        return 0;
    if (rc != ONR_E_PARSE || !err[0])
        abort(); /* every rejection is a parse error that names its reason */
    long at = jdoc_error_offset(doc);
    if (at < -1 || at > (long)(size - 1))
        abort(); /* the position lies within the input */
    if (jdoc_error_offset(doc) != at)
        abort();
    return 0;
}
