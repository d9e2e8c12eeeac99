/*
 * lex.c - the rule language's lexer: identifiers, "strings", numbers, durations (90s 2m 1h
 * 3d 250ms 1h30m), percentages (10%) and punctuation. `#` and `//` start comments.
 * Keywords are contextual: the parser reads them from T_IDENT tokens.
 */
#include "rules_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lex_init(lexer *lx, const char *src, size_t len, onr_arena *arena, rdiag *diag)
{
    lx->src = src;
    lx->len = len;
    lx->pos = 0;
    lx->line = 1;
    lx->col = 1;
    lx->arena = arena;
    lx->diag = diag;
}

static int peekc(const lexer *lx, size_t ahead)
{
    return lx->pos + ahead < lx->len ? (unsigned char)lx->src[lx->pos + ahead] : -1;
}

static void advance(lexer *lx)
{
    if (lx->pos >= lx->len)
        return;
    if (lx->src[lx->pos] == '\n') {
        lx->line++;
        lx->col = 1;
    } else if (((unsigned char)lx->src[lx->pos] & 0xc0) != 0x80) {
        lx->col++;
    }
    lx->pos++;
}

static bool is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static void skip_space(lexer *lx)
{
    for (;;) {
        int c = peekc(lx, 0);
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            advance(lx);
        } else if (c == '#' || (c == '/' && peekc(lx, 1) == '/')) {
            while (peekc(lx, 0) != -1 && peekc(lx, 0) != '\n')
                advance(lx);
        } else {
            return;
        }
    }
}

static token error_tok(lexer *lx, token t)
{
    t.kind = T_ERROR;
    t.end = (uint32_t)lx->pos;
    return t;
}

static int read_hex4(lexer *lx, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = onr_hex_digit(peekc(lx, 0));
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
        advance(lx);
    }
    *out = v;
    return 0;
}

/* After a bad escape: skip the rest of the string, so its closing quote does not start
 * another one. */
static token bad_string(lexer *lx, token t, onr_buf *b)
{
    onr_buf_free(b);
    for (int c = peekc(lx, 0); c != -1 && c != '\n'; c = peekc(lx, 0)) {
        advance(lx);
        if (c == '\\')
            advance(lx);
        else if (c == '"')
            break;
    }
    return error_tok(lx, t);
}

static token lex_string(lexer *lx, token t)
{
    advance(lx); /* opening quote */
    onr_buf b = {0};
    for (;;) {
        int c = peekc(lx, 0);
        if (c == -1 || c == '\n') {
            rdiag_error(lx->diag, t.line, t.col, 1, "unterminated string");
            onr_buf_free(&b);
            return error_tok(lx, t);
        }
        if (c == '"') {
            advance(lx);
            break;
        }
        if (c == '\\') {
            int ecol = lx->col;
            advance(lx);
            int e = peekc(lx, 0);
            advance(lx);
            switch (e) {
            case '"':
            case '\\':
            case '/':
                onr_buf_putc(&b, (char)e);
                break;
            case 'n':
                onr_buf_putc(&b, '\n');
                break;
            case 't':
                onr_buf_putc(&b, '\t');
                break;
            case 'u': {
                unsigned v = 0;
                if (read_hex4(lx, &v) < 0) {
                    rdiag_error(lx->diag, lx->line, ecol, 6,
                                "bad \\u escape: expected 4 hex digits");
                    return bad_string(lx, t, &b);
                }
                if (v >= 0xd800 && v <= 0xdbff && peekc(lx, 0) == '\\' && peekc(lx, 1) == 'u') {
                    /* a UTF-16 surrogate pair, as JSON writes characters beyond U+FFFF */
                    advance(lx);
                    advance(lx);
                    unsigned lo = 0;
                    if (read_hex4(lx, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                        rdiag_error(lx->diag, lx->line, ecol, 12,
                                    "bad \\u escape: a high surrogate must be followed by a "
                                    "low surrogate");
                        return bad_string(lx, t, &b);
                    }
                    v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (v == 0 || (v >= 0xd800 && v <= 0xdfff)) {
                    rdiag_error(lx->diag, lx->line, ecol, 6,
                                v ? "bad \\u escape: a lone surrogate is not a character"
                                  : "strings cannot contain NUL (\\u0000)");
                    return bad_string(lx, t, &b);
                }
                if (v >= 0x10000) {
                    onr_buf_putc(&b, (char)(0xf0 | (v >> 18)));
                    onr_buf_putc(&b, (char)(0x80 | ((v >> 12) & 0x3f)));
                    onr_buf_putc(&b, (char)(0x80 | ((v >> 6) & 0x3f)));
                    onr_buf_putc(&b, (char)(0x80 | (v & 0x3f)));
                } else if (v < 0x80) {
                    onr_buf_putc(&b, (char)v);
                } else if (v < 0x800) {
                    onr_buf_putc(&b, (char)(0xc0 | (v >> 6)));
                    onr_buf_putc(&b, (char)(0x80 | (v & 0x3f)));
                } else {
                    onr_buf_putc(&b, (char)(0xe0 | (v >> 12)));
                    onr_buf_putc(&b, (char)(0x80 | ((v >> 6) & 0x3f)));
                    onr_buf_putc(&b, (char)(0x80 | (v & 0x3f)));
                }
                break;
            }
            default:
                rdiag_error(lx->diag, lx->line, ecol, 2, "unknown escape \"\\%c\" in string",
                            e > 32 && e < 127 ? e : '?');
                return bad_string(lx, t, &b);
            }
            continue;
        }
        onr_buf_putc(&b, (char)c);
        advance(lx);
    }
    t.kind = T_STRING;
    t.str = onr_arena_strndup(lx->arena, b.data ? b.data : "", b.len);
    t.str_len = (uint32_t)b.len;
    onr_buf_free(&b);
    t.end = (uint32_t)lx->pos;
    return t;
}

static int64_t unit_ms(const char *u, size_t n)
{
    if (n == 2 && memcmp(u, "ms", 2) == 0)
        return 1;
    if (n == 1) {
        switch (u[0]) {
        case 's':
            return ONR_SECOND_MS;
        case 'm':
            return ONR_MINUTE_MS;
        case 'h':
            return ONR_HOUR_MS;
        case 'd':
            return ONR_DAY_MS;
        }
    }
    return 0;
}

static token lex_number(lexer *lx, token t)
{
    size_t start = lx->pos;
    while (is_digit(peekc(lx, 0)))
        advance(lx);
    if (peekc(lx, 0) == '.' && is_digit(peekc(lx, 1))) {
        advance(lx);
        while (is_digit(peekc(lx, 0)))
            advance(lx);
    }
    char tmp[64];
    size_t n = lx->pos - start;
    if (n >= sizeof(tmp)) {
        rdiag_error(lx->diag, t.line, t.col, (int)n, "number is too long");
        return error_tok(lx, t);
    }
    memcpy(tmp, lx->src + start, n);
    tmp[n] = 0;
    double v = strtod(tmp, NULL);
    int c = peekc(lx, 0);
    if (c == '%') {
        advance(lx);
        t.kind = T_PERCENT;
        t.num = v;
        t.end = (uint32_t)lx->pos;
        return t;
    }
    if (!is_ident_start(c)) {
        t.kind = T_NUMBER;
        t.num = v;
        t.end = (uint32_t)lx->pos;
        return t;
    }
    /* a duration: one or more number+unit pairs, "1h30m" */
    double total = 0;
    for (;;) {
        size_t ustart = lx->pos;
        while (is_ident_start(peekc(lx, 0)))
            advance(lx);
        int64_t u = unit_ms(lx->src + ustart, lx->pos - ustart);
        if (!u) {
            while (is_ident(peekc(lx, 0)))
                advance(lx);
            rdiag_error(lx->diag, t.line, t.col, (int)(lx->pos - t.start),
                        "bad duration \"%.*s\": use a number and a unit: ms, s, m, h or d "
                        "(90s, 2m, 1h30m)",
                        (int)(lx->pos - t.start), lx->src + t.start);
            return error_tok(lx, t);
        }
        total += v * (double)u;
        if (!is_digit(peekc(lx, 0)))
            break;
        start = lx->pos;
        while (is_digit(peekc(lx, 0)))
            advance(lx);
        n = lx->pos - start;
        if (n >= sizeof(tmp) || !is_ident_start(peekc(lx, 0))) {
            rdiag_error(lx->diag, t.line, t.col, (int)(lx->pos - t.start),
                        "bad duration \"%.*s\": each number needs a unit", (int)(lx->pos - t.start),
                        lx->src + t.start);
            return error_tok(lx, t);
        }
        memcpy(tmp, lx->src + start, n);
        tmp[n] = 0;
        v = strtod(tmp, NULL);
    }
    if (total > 1e15 || total != floor(total)) {
        rdiag_error(lx->diag, t.line, t.col, (int)(lx->pos - t.start),
                    "bad duration \"%.*s\": must be a whole number of milliseconds up to "
                    "about 31000 years",
                    (int)(lx->pos - t.start), lx->src + t.start);
        return error_tok(lx, t);
    }
    t.kind = T_DURATION;
    t.ms = (int64_t)total;
    t.end = (uint32_t)lx->pos;
    return t;
}

token lex_next(lexer *lx)
{
    skip_space(lx);
    token t = {0};
    t.line = lx->line;
    t.col = lx->col;
    t.start = (uint32_t)lx->pos;
    int c = peekc(lx, 0);
    if (c == -1) {
        t.kind = T_EOF;
        t.end = t.start;
        return t;
    }
    if (is_ident_start(c)) {
        while (is_ident(peekc(lx, 0)))
            advance(lx);
        t.kind = T_IDENT;
        t.str_len = (uint32_t)(lx->pos - t.start);
        t.str = onr_arena_strndup(lx->arena, lx->src + t.start, t.str_len);
        t.end = (uint32_t)lx->pos;
        return t;
    }
    if (is_digit(c))
        return lex_number(lx, t);
    if (c == '"')
        return lex_string(lx, t);
    advance(lx);
    int n = peekc(lx, 0);
    switch (c) {
    case '{':
        t.kind = T_LBRACE;
        break;
    case '}':
        t.kind = T_RBRACE;
        break;
    case '(':
        t.kind = T_LPAREN;
        break;
    case ')':
        t.kind = T_RPAREN;
        break;
    case '[':
        t.kind = T_LBRACK;
        break;
    case ']':
        t.kind = T_RBRACK;
        break;
    case ',':
        t.kind = T_COMMA;
        break;
    case ':':
        t.kind = T_COLON;
        break;
    case '.':
        t.kind = T_DOT;
        break;
    case '+':
        t.kind = T_PLUS;
        break;
    case '-':
        t.kind = T_MINUS;
        break;
    case '*':
        t.kind = T_STAR;
        break;
    case '/':
        t.kind = T_SLASH;
        break;
    case '=':
        if (n == '=') {
            advance(lx);
            t.kind = T_EQ;
        } else {
            t.kind = T_ASSIGN;
        }
        break;
    case '!':
        if (n == '=') {
            advance(lx);
            t.kind = T_NE;
        } else {
            rdiag_error(lx->diag, t.line, t.col, 1, "unexpected \"!\": write \"not\" or \"!=\"");
            return error_tok(lx, t);
        }
        break;
    case '<':
        if (n == '=') {
            advance(lx);
            t.kind = T_LE;
        } else {
            t.kind = T_LT;
        }
        break;
    case '>':
        if (n == '=') {
            advance(lx);
            t.kind = T_GE;
        } else {
            t.kind = T_GT;
        }
        break;
    case '?':
        if (n == '?') {
            advance(lx);
            t.kind = T_COALESCE;
        } else {
            rdiag_error(lx->diag, t.line, t.col, 1, "unexpected \"?\": did you mean \"??\"");
            return error_tok(lx, t);
        }
        break;
    default:
        if (c >= 0x80) {
            while (peekc(lx, 0) != -1 && ((unsigned)peekc(lx, 0) & 0xc0) == 0x80)
                advance(lx);
        }
        if (c > 32 && c < 127)
            rdiag_error(lx->diag, t.line, t.col, 1, "unexpected character \"%c\"", c);
        else
            rdiag_error(lx->diag, t.line, t.col, 1, "unexpected character (byte 0x%02x)", c);
        return error_tok(lx, t);
    }
    t.end = (uint32_t)lx->pos;
    return t;
}

const char *tok_kind_name(tok_kind k)
{
    static const char *names[] = {
        [T_EOF] = "end of file",     [T_IDENT] = "name",        [T_STRING] = "string",
        [T_NUMBER] = "number",       [T_DURATION] = "duration", [T_PERCENT] = "percentage",
        [T_LBRACE] = "\"{\"",        [T_RBRACE] = "\"}\"",      [T_LPAREN] = "\"(\"",
        [T_RPAREN] = "\")\"",        [T_LBRACK] = "\"[\"",      [T_RBRACK] = "\"]\"",
        [T_COMMA] = "\",\"",         [T_COLON] = "\":\"",       [T_DOT] = "\".\"",
        [T_EQ] = "\"==\"",           [T_NE] = "\"!=\"",         [T_LT] = "\"<\"",
        [T_LE] = "\"<=\"",           [T_GT] = "\">\"",          [T_GE] = "\">=\"",
        [T_ASSIGN] = "\"=\"",        [T_PLUS] = "\"+\"",        [T_MINUS] = "\"-\"",
        [T_STAR] = "\"*\"",          [T_SLASH] = "\"/\"",       [T_COALESCE] = "\"??\"",
        [T_ERROR] = "invalid token",
    };
    return k < ONR_ARRAY_LEN(names) && names[k] ? names[k] : "token";
}
