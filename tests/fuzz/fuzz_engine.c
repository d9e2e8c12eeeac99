/*
 * fuzz_engine.c - libFuzzer target: any bytes as a JSONL stream run through the default
 * rules, with the clock pushed past every timer at the end. Bad lines are skipped; the
 * engine must not crash, and the same input must give the same outputs twice.
 */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t digest;

static void sink(void *ctx, const eng_out *o)
{
    (void)ctx;
    digest = digest * 31 + (uint64_t)o->kind * 7 + (uint64_t)o->at_ms + o->id;
}

static uint64_t run(const rule_set *rs, jdoc *doc, const uint8_t *data, size_t size)
{
    static trk_event ev;
    digest = 0;
    eng *e = eng_new(rs, NULL, sink, NULL);
    char err[512];
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (trk_decode(doc, p, len, &rs->schema, -1, &ev, err, sizeof(err)) == 0)
            eng_process(e, &ev);
        p += len + 1;
    }
    eng_drain(e);
    eng_free(e);
    return digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rule_set *rs;
    static jdoc *doc;
    if (!rs) {
        onr_buf errors = {0};
        const char *path = getenv("ONRAMP_FUZZ_RULES");
        if (rule_compile_file(path ? path : "rules/onboarding.rules", &rs, &errors)) {
            fwrite(errors.data, 1, errors.len, stderr);
            abort();
        }
        onr_buf_free(&errors);
        doc = jdoc_new(TRK_MAX_MESSAGE_BYTES);
    }
    if (run(rs, doc, data, size) != run(rs, doc, data, size))
        abort(); /* determinism */
    return 0;
}
