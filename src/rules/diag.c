/*
 * diag.c - compiler-grade diagnostics for rule files: "path:line:col: error: message",
 * the offending source line, and a caret under the span, plus "did you mean" hints.
 */
#include "rules_int.h"

#include <stdio.h>
#include <string.h>

static void show_line(rdiag *d, int line, int col, int width)
{
    const char *p = d->src, *end = d->src + d->len;
    for (int l = 1; l < line && p < end; p++)
        if (*p == '\n')
            l++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        eol = end;
    onr_buf_puts(d->out, "    ");
    onr_buf_put(d->out, p, (size_t)(eol - p));
    onr_buf_puts(d->out, "\n    ");
    for (int i = 1; i < col; i++)
        onr_buf_putc(d->out, p + i - 1 < eol && p[i - 1] == '\t' ? '\t' : ' ');
    onr_buf_putc(d->out, '^');
    for (int i = 1; i < width; i++)
        onr_buf_putc(d->out, '~');
    onr_buf_putc(d->out, '\n');
}

void rdiag_error(rdiag *d, int line, int col, int width, const char *fmt, ...)
{
    d->errors++;
    if (d->errors > RULE_MAX_ERRORS)
        return;
    if (d->errors == RULE_MAX_ERRORS) {
        onr_buf_printf(d->out, "%s: error: too many errors, stopping\n", d->path);
        return;
    }
    if (line > 0)
        onr_buf_printf(d->out, "%s:%d:%d: error: ", d->path, line, col);
    else
        onr_buf_printf(d->out, "%s: error: ", d->path);
    va_list ap;
    va_start(ap, fmt);
    onr_buf_vprintf(d->out, fmt, ap);
    va_end(ap);
    onr_buf_putc(d->out, '\n');
    if (line > 0)
        show_line(d, line, col, width < 1 ? 1 : width);
}

void rdiag_note(rdiag *d, const char *fmt, ...)
{
    if (d->errors >= RULE_MAX_ERRORS)
        return;
    onr_buf_printf(d->out, "%s: note: ", d->path);
    va_list ap;
    va_start(ap, fmt);
    onr_buf_vprintf(d->out, fmt, ap);
    va_end(ap);
    onr_buf_putc(d->out, '\n');
}

static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

const char *rule_suggest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = (strlen(word) + 2) / 3 + 1; /* allow about one edit in three letters */
    if (best_d > 3)
        best_d = 3;
    for (size_t i = 0; i < n; i++) {
        if (!cands[i])
            continue;
        size_t dd = distance(word, cands[i]);
        if (dd < best_d || (dd == best_d && !best && dd <= 2)) {
            if (dd < best_d || dd <= 2) {
                best = cands[i];
                best_d = dd;
            }
        }
    }
    return best;
}
