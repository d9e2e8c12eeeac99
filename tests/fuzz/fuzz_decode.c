/*
 * fuzz_decode.c - libFuzzer target: any bytes as one Segment message. The decoder must
 * accept it or name a reason, and a decoded event must pack and unpack to the same fields.
 */
#include "track/track.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jdoc *doc;
    static trk_event ev, back;
    static const trk_schema schema = {
        .nprops = 3,
        .ntraits = 2,
        .props = {"feature", "step", "plan.name"},
        .traits = {"plan", "company_size"},
    };
    if (!doc)
        doc = jdoc_new(TRK_MAX_MESSAGE_BYTES);
    char err[512];
    err[0] = 0;
    int rc =
        trk_decode(doc, (const char *)data, size, &schema, 1767225600000, &ev, err, sizeof(err));
    if (rc != 0) {
        if (!err[0])
            abort(); /* every rejection names its reason */
        return 0;
    }
    size_t n = trk_packed_size(&ev, &schema);
    char *packed = malloc(n);
    trk_pack(packed, &ev, &schema);
    trk_unpack(packed, &back, &schema);
    if (back.ts_ms != ev.ts_ms || back.kind != ev.kind || back.user_id.n != ev.user_id.n ||
        memcmp(back.user_id.p, ev.user_id.p, ev.user_id.n) != 0 || back.name.n != ev.name.n)
        abort();
    trk_str uid, aid;
    if (!trk_packed_ids_in(packed, n, &uid, &aid) || uid.n != ev.user_id.n ||
        aid.n != ev.anon_id.n || (uid.n && memcmp(uid.p, ev.user_id.p, uid.n) != 0))
        abort();
    free(packed);
    return 0;
}
