/* hostpool.c - large host-memory chunks cut into aligned blocks (hostpool.h). */
#include "backend/hostpool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* A run of a chunk, in address order within the chunk; headers live outside
 * the chunk (the chunk's bytes are the caller's, e.g. copied to a GPU). */
typedef struct block {
    size_t off, size;
    bool used;
    struct block *prev, *next;
} block;

typedef struct chunk {
    char *base;
    size_t size;
    block *blocks;
    struct chunk *next;
} chunk;

struct lp_hostpool {
    pthread_mutex_t mu;
    int refs;
    size_t chunk_bytes, align, max_bytes, held; /* held: bytes of the chunks */
    lp_hostpool_chunk_alloc ca;
    lp_hostpool_chunk_free cf;
    void *ctx;
    chunk *chunks;
};

lp_hostpool *lp_hostpool_new(size_t chunk_bytes, size_t align, size_t max_bytes, lp_hostpool_chunk_alloc ca,
                             lp_hostpool_chunk_free cf, void *ctx) {
    if (!align || (align & (align - 1)) || !ca || !cf)
        return NULL;
    lp_hostpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->refs = 1;
    p->chunk_bytes = (chunk_bytes + align - 1) / align * align;
    p->align = align;
    p->max_bytes = max_bytes / align * align;
    p->ca = ca;
    p->cf = cf;
    p->ctx = ctx;
    return p;
}

void lp_hostpool_retain(lp_hostpool *p) {
    pthread_mutex_lock(&p->mu);
    p->refs++;
    pthread_mutex_unlock(&p->mu);
}

void lp_hostpool_release(lp_hostpool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last)
        return;
    for (chunk *c = p->chunks; c;) {
        chunk *n = c->next;
        for (block *b = c->blocks; b;) {
            block *bn = b->next;
            free(b);
            b = bn;
        }
        p->cf(c->base, p->ctx);
        free(c);
        c = n;
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Take `size` bytes from the front of free block b. */
static void *take(chunk *c, block *b, size_t size) {
    if (b->size > size) {
        block *rest = malloc(sizeof *rest);
        if (rest) { /* without it the whole block is handed out */
            rest->off = b->off + size;
            rest->size = b->size - size;
            rest->used = false;
            rest->prev = b;
            rest->next = b->next;
            if (b->next)
                b->next->prev = rest;
            b->next = rest;
            b->size = size;
        }
    }
    b->used = true;
    return c->base + b->off;
}

void *lp_hostpool_alloc(lp_hostpool *p, size_t bytes) {
    if (!bytes || bytes > SIZE_MAX - p->align)
        return NULL;
    size_t size = (bytes + p->align - 1) / p->align * p->align;
    pthread_mutex_lock(&p->mu);
    void *r = NULL;
    for (chunk *c = p->chunks; c && !r; c = c->next)
        for (block *b = c->blocks; b && !r; b = b->next)
            if (!b->used && b->size >= size)
                r = take(c, b, size);
    if (!r) { /* a new chunk */
        size_t cs = size > p->chunk_bytes ? size : p->chunk_bytes;
        if (p->max_bytes && p->held < p->max_bytes && cs > p->max_bytes - p->held && size <= p->max_bytes - p->held)
            cs = p->max_bytes - p->held; /* a smaller last chunk still fits */
        bool room = !p->max_bytes || (p->held <= p->max_bytes && cs <= p->max_bytes - p->held);
        chunk *c = room ? calloc(1, sizeof *c) : NULL;
        block *b = room ? calloc(1, sizeof *b) : NULL;
        char *base = c && b ? p->ca(cs, p->ctx) : NULL;
        if (!base) {
            free(c);
            free(b);
        } else {
            c->base = base;
            c->size = cs;
            b->size = cs;
            c->blocks = b;
            c->next = p->chunks;
            p->chunks = c;
            p->held += cs;
            r = take(c, b, size);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Block b takes in the (free) block after it. */
static void merge_next(block *b) {
    block *n = b->next;
    b->size += n->size;
    b->next = n->next;
    if (n->next)
        n->next->prev = b;
    free(n);
}

static bool all_free(const chunk *c) { return !c->blocks->used && !c->blocks->next; }

/* Chunk c has just become all free: keep it as the pool's one spare, or
 * return it when another all-free chunk already is. */
static void drop_spare(lp_hostpool *p, chunk *c) {
    bool other = false;
    for (chunk *o = p->chunks; o && !other; o = o->next)
        other = o != c && all_free(o);
    if (!other)
        return;
    for (chunk **pp = &p->chunks; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    p->held -= c->size;
    free(c->blocks);
    p->cf(c->base, p->ctx);
    free(c);
}

void lp_hostpool_free(lp_hostpool *p, void *ptr) {
    if (!ptr)
        return;
    pthread_mutex_lock(&p->mu);
    for (chunk *c = p->chunks; c; c = c->next) {
        if ((char *)ptr < c->base || (char *)ptr >= c->base + c->size)
            continue;
        size_t off = (size_t)((char *)ptr - c->base);
        block *b = c->blocks;
        while (b && b->off != off)
            b = b->next;
        if (!b || !b->used)
            break; /* not a block of this pool: ignored */
        b->used = false;
        if (b->next && !b->next->used)
            merge_next(b);
        if (b->prev && !b->prev->used)
            merge_next(b->prev);
        if (all_free(c))
            drop_spare(p, c);
        break;
    }
    pthread_mutex_unlock(&p->mu);
}

void lp_hostpool_get_stats(lp_hostpool *p, lp_hostpool_stats *st) {
    *st = (lp_hostpool_stats){0};
    pthread_mutex_lock(&p->mu);
    for (chunk *c = p->chunks; c; c = c->next) {
        st->chunks++;
        st->chunk_bytes += c->size;
        for (block *b = c->blocks; b; b = b->next) {
            if (b->used) {
                st->blocks++;
                st->used_bytes += b->size;
            } else {
                st->free_blocks++;
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
}
