/*
 * fuzz_enrich.c - libFuzzer target: any bytes as a User-Agent. The classifier must not read
 * past the input or its scan bound, and a version it reports is 1 to 6 digits of the input.
 */
#include "track/enrich.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so that ASan sees a read past the end */
    char *ua = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++)
        ua[i] = (char)data[i];
    trk_ua u;
    trk_enrich_ua(ua, size, &u);
    if (u.device < TRK_DEVICE_UNKNOWN || u.device > TRK_DEVICE_BOT)
        abort();
    if (u.version.n) {
        if (u.version.n > 6 || u.version.p < ua ||
            u.version.p + u.version.n > ua + ONR_MIN(size, (size_t)TRK_UA_SCAN_BYTES))
            abort();
        for (uint32_t i = 0; i < u.version.n; i++)
            if (u.version.p[i] < '0' || u.version.p[i] > '9')
                abort();
    }
    if (u.os && !u.browser && u.device == TRK_DEVICE_UNKNOWN)
        abort(); /* a recognised OS is a device */
    free(ua);
    return 0;
}
