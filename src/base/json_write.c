/*
 * json_write.c - the JSON writer: string escaping and numbers onto an onr_buf. Small on
 * purpose; output bytes must be deterministic (replay compares them byte for byte).
 */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jw_str(onr_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    onr_buf_reserve(b, n + 2);
    onr_buf_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        onr_buf_put(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            onr_buf_put(b, "\\\"", 2);
            break;
        case '\\':
            onr_buf_put(b, "\\\\", 2);
            break;
        case '\n':
            onr_buf_put(b, "\\n", 2);
            break;
        case '\r':
            onr_buf_put(b, "\\r", 2);
            break;
        case '\t':
            onr_buf_put(b, "\\t", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            onr_buf_put(b, esc, 6);
        }
        }
    }
    onr_buf_put(b, s + run, n - run);
    onr_buf_putc(b, '"');
}

void jw_strz(onr_buf *b, const char *s)
{
    jw_str(b, s, strlen(s));
}

void jw_num(onr_buf *b, double v)
{
    if (!isfinite(v)) {
        onr_buf_puts(b, "null");
    } else if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
        onr_buf_printf(b, "%lld", (long long)v);
    } else {
        char tmp[40];
        snprintf(tmp, sizeof(tmp), "%.15g", v);
        if (strtod(tmp, NULL) != v)
            snprintf(tmp, sizeof(tmp), "%.17g", v);
        onr_buf_puts(b, tmp);
    }
}

void jw_key(onr_buf *b, const char *key)
{
    jw_strz(b, key);
    onr_buf_putc(b, ':');
}

void jw_time(onr_buf *b, int64_t ms)
{
    char t[32];
    onr_time_format(ms, t);
    onr_buf_putc(b, '"');
    onr_buf_puts(b, t);
    onr_buf_putc(b, '"');
}
