/*
 * alloc.c - the one allocator wrapper, arenas and growable buffers. Running out of memory
 * ends the process with a message: onramp bounds its structures so that this means the
 * machine is too small for the configured limits, not that a request was unlucky.
 */
#include "base.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void oom(size_t n)
{
    fprintf(stderr, "onramp: out of memory allocating %zu bytes\n", n);
    abort();
}

void *onr_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *onr_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

#define HUGE_PAGE ((size_t)2 << 20)

void *onr_calloc_table(size_t n)
{
    if (n < ONR_TABLE_HUGE) {
        size_t len = (n + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(4096, len ? len : 4096);
        if (!p)
            oom(n);
        return memset(p, 0, len);
    }
    size_t len = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    /* mapped one huge page over, and the unaligned ends given back */
    char *m =
        mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        oom(n);
    char *p = (char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + len < m + len + HUGE_PAGE)
        munmap(p + len, (size_t)(m + len + HUGE_PAGE - (p + len)));
    (void)madvise(p, len, MADV_HUGEPAGE); /* a hint: without huge pages it works as well */
    return p;
}

void onr_free_table(void *p, size_t n)
{
    if (!p)
        return;
    if (n < ONR_TABLE_HUGE) {
        onr_free(p);
        return;
    }
    munmap(p, (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
}

void *onr_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *onr_strndup(const char *s, size_t n)
{
    char *d = onr_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *onr_strdup(const char *s)
{
    return onr_strndup(s, strlen(s));
}

void onr_free(void *p)
{
    free(p);
}

/* ---- arena */

struct onr_arena_chunk {
    onr_arena_chunk *next;
    size_t used, cap;
    _Alignas(8) char data[];
};

void onr_arena_init(onr_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 64 * 1024;
    a->total = 0;
}

void *onr_arena_alloc(onr_arena *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    onr_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > a->chunk_size ? n : a->chunk_size;
        c = onr_malloc(sizeof(*c) + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

char *onr_arena_strndup(onr_arena *a, const char *s, size_t n)
{
    char *d = onr_arena_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

void onr_arena_free(onr_arena *a)
{
    onr_arena_chunk *c = a->head;
    while (c) {
        onr_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- buf */

void onr_buf_grow(onr_buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    b->data = onr_realloc(b->data, cap);
    b->cap = cap;
}

void onr_buf_vprintf(onr_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    onr_buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        onr_buf_reserve(b, (size_t)n + 1);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void onr_buf_printf(onr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    onr_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void onr_buf_clear(onr_buf *b)
{
    b->len = 0;
}

void onr_buf_free(onr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

const char *onr_buf_cstr(onr_buf *b)
{
    onr_buf_reserve(b, 1);
    b->data[b->len] = 0;
    return b->data;
}
