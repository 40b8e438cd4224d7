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

static bool all_free(const chunk *c) { return !c->blocks->used && !c->blocks->next; }

/* Take chunk c out of the pool (to be released outside the lock). */
static chunk *unlink_chunk(lp_hostpool *p, chunk *c) {
    for (chunk **pp = &p->chunks; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    p->held -= c->size;
    return c;
}

/* Unlink and return an all-free chunk (the spare), or NULL. */
static chunk *unlink_spare(lp_hostpool *p) {
    for (chunk *c = p->chunks; c; c = c->next)
        if (all_free(c))
            return unlink_chunk(p, c);
    return NULL;
}

static void chunk_release(lp_hostpool *p, chunk *c) {
    if (!c)
        return;
    p->cf(c->base, p->ctx);
    free(c->blocks);
    free(c);
}

/* Chunks are obtained and returned outside the lock (pinning and unpinning
 * take milliseconds and may wait for the GPU): the bytes of a new chunk are
 * reserved first. */
void *lp_hostpool_alloc(lp_hostpool *p, size_t bytes) {
    if (!bytes || bytes > SIZE_MAX - p->align)
        return NULL;
    size_t size = (bytes + p->align - 1) / p->align * p->align;
    chunk *drop = NULL;
    size_t cs = 0;
    pthread_mutex_lock(&p->mu);
    void *r = NULL;
    for (chunk *c = p->chunks; c && !r; c = c->next)
        for (block *b = c->blocks; b && !r; b = b->next)
            if (!b->used && b->size >= size)
                r = take(c, b, size);
    if (!r) { /* a new chunk; a large request's rounded up to whole chunk sizes, so
               * that the spare it leaves serves the next request of about its size */
        cs = size <= p->chunk_bytes ? p->chunk_bytes
             : size <= SIZE_MAX - p->chunk_bytes ? (size + p->chunk_bytes - 1) / p->chunk_bytes * p->chunk_bytes
                                                 : size;
        if (p->max_bytes) {
            size_t left = p->held < p->max_bytes ? p->max_bytes - p->held : 0;
            if (size > left) { /* a spare too small for this one gives its room */
                drop = unlink_spare(p);
                left = p->held < p->max_bytes ? p->max_bytes - p->held : 0;
            }
            if (cs > left)
                cs = size <= left ? left : 0; /* a smaller last chunk still fits */
        }
        p->held += cs;
    }
    pthread_mutex_unlock(&p->mu);
    chunk_release(p, drop);
    if (r || !cs)
        return r;
    chunk *c = calloc(1, sizeof *c);
    block *b = calloc(1, sizeof *b);
    char *base = c && b ? p->ca(cs, p->ctx) : NULL;
    pthread_mutex_lock(&p->mu);
    if (!base) {
        p->held -= cs;
    } else {
        c->base = base;
        c->size = cs;
        b->size = cs;
        c->blocks = b;
        c->next = p->chunks;
        p->chunks = c;
        r = take(c, b, size);
    }
    pthread_mutex_unlock(&p->mu);
    if (!base) {
        free(c);
        free(b);
    }
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

/* Chunk c has just become all free: keep it as the pool's one spare, or
 * unlink it (returned, for the caller to release outside the lock) when
 * another all-free chunk already is. */
static chunk *drop_spare(lp_hostpool *p, chunk *c) {
    bool other = false;
    for (chunk *o = p->chunks; o && !other; o = o->next)
        other = o != c && all_free(o);
    return other ? unlink_chunk(p, c) : NULL;
}

void lp_hostpool_free(lp_hostpool *p, void *ptr) {
    if (!ptr)
        return;
    chunk *drop = NULL;
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
            drop = drop_spare(p, c);
        break;
    }
    pthread_mutex_unlock(&p->mu);
    chunk_release(p, drop);
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
