/* kvpool.c - KV block allocator with prefix caching (see kvpool.h). */
#include "engine/kvpool.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct lp_kvpool {
    int n, bs;
    int32_t *ref;
    bool *cached;            /* registered in the table */
    uint64_t *hash;
    uint64_t *key;
    uint64_t *parent;        /* chain hash of the previous block */
    int32_t *tokens;         /* (n, bs) */
    int32_t *free_stack;
    int n_free;
    int32_t *prev, *next;    /* LRU list of cached blocks with ref 0 */
    int32_t head, tail;
    int n_evictable;
    int32_t *bucket, *chain; /* hash table: bucket heads, chain links */
    int n_buckets;
    lp_kvpool_stats st;
};

lp_kvpool *lp_kvpool_new(int n_blocks, int block_size) {
    lp_kvpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_blocks;
    p->bs = block_size;
    p->n_buckets = 1;
    while (p->n_buckets < 2 * n_blocks)
        p->n_buckets *= 2;
    p->ref = lp__calloc_array((size_t)n_blocks, sizeof(int32_t));
    p->cached = lp__calloc_array((size_t)n_blocks, sizeof(bool));
    p->hash = lp__calloc_array((size_t)n_blocks, sizeof(uint64_t));
    p->key = lp__calloc_array((size_t)n_blocks, sizeof(uint64_t));
    p->parent = lp__calloc_array((size_t)n_blocks, sizeof(uint64_t));
    p->tokens = lp__calloc_array((size_t)n_blocks * (size_t)block_size, sizeof(int32_t));
    p->free_stack = lp__malloc_array((size_t)n_blocks, sizeof(int32_t));
    p->prev = lp__malloc_array((size_t)n_blocks, sizeof(int32_t));
    p->next = lp__malloc_array((size_t)n_blocks, sizeof(int32_t));
    p->chain = lp__malloc_array((size_t)n_blocks, sizeof(int32_t));
    p->bucket = lp__malloc_array((size_t)p->n_buckets, sizeof(int32_t));
    if (!p->ref || !p->cached || !p->hash || !p->key || !p->parent || !p->tokens || !p->free_stack || !p->prev ||
        !p->next || !p->chain || !p->bucket) {
        lp_kvpool_free(p);
        return NULL;
    }
    for (int i = 0; i < n_blocks; i++)
        p->free_stack[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    for (int i = 0; i < p->n_buckets; i++)
        p->bucket[i] = -1;
    p->head = p->tail = -1;
    return p;
}

void lp_kvpool_free(lp_kvpool *p) {
    if (!p)
        return;
    free(p->ref);
    free(p->cached);
    free(p->hash);
    free(p->key);
    free(p->parent);
    free(p->tokens);
    free(p->free_stack);
    free(p->prev);
    free(p->next);
    free(p->chain);
    free(p->bucket);
    free(p);
}

int lp_kvpool_available(const lp_kvpool *p) { return p->n_free + p->n_evictable; }
int lp_kvpool_used(const lp_kvpool *p) { return p->n - p->n_free - p->n_evictable; }

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

uint64_t lp_kvpool_chain(const lp_kvpool *p, uint64_t parent, uint64_t key, const int32_t *tokens) {
    uint64_t h = mix(mix(0x1234567ull, parent), key);
    for (int i = 0; i < p->bs; i++)
        h = mix(h, (uint64_t)(uint32_t)tokens[i]);
    return h;
}

static void lru_remove(lp_kvpool *p, int32_t b) {
    if (p->prev[b] >= 0)
        p->next[p->prev[b]] = p->next[b];
    else
        p->head = p->next[b];
    if (p->next[b] >= 0)
        p->prev[p->next[b]] = p->prev[b];
    else
        p->tail = p->prev[b];
    p->n_evictable--;
}

static void lru_push(lp_kvpool *p, int32_t b) {
    p->prev[b] = p->tail;
    p->next[b] = -1;
    if (p->tail >= 0)
        p->next[p->tail] = b;
    else
        p->head = b;
    p->tail = b;
    p->n_evictable++;
}

static void table_remove(lp_kvpool *p, int32_t b) {
    int32_t *pp = &p->bucket[p->hash[b] & (uint64_t)(p->n_buckets - 1)];
    while (*pp >= 0) {
        if (*pp == b) {
            *pp = p->chain[b];
            break;
        }
        pp = &p->chain[*pp];
    }
    p->cached[b] = false;
}

int32_t lp_kvpool_alloc(lp_kvpool *p) {
    int32_t b;
    if (p->n_free) {
        b = p->free_stack[--p->n_free];
    } else if (p->head >= 0) {
        b = p->head;
        lru_remove(p, b);
        table_remove(p, b);
    } else {
        return -1;
    }
    p->ref[b] = 1;
    return b;
}

void lp_kvpool_release(lp_kvpool *p, int32_t b) {
    if (--p->ref[b] > 0)
        return;
    if (p->cached[b])
        lru_push(p, b);
    else
        p->free_stack[p->n_free++] = b;
}

static int32_t find(const lp_kvpool *p, uint64_t h, uint64_t parent, uint64_t key, const int32_t *tokens) {
    for (int32_t b = p->bucket[h & (uint64_t)(p->n_buckets - 1)]; b >= 0; b = p->chain[b])
        if (p->hash[b] == h && p->parent[b] == parent && p->key[b] == key &&
            !memcmp(p->tokens + (size_t)b * (size_t)p->bs, tokens, sizeof(int32_t) * (size_t)p->bs))
            return b;
    return -1;
}

int32_t lp_kvpool_match(lp_kvpool *p, uint64_t h, uint64_t parent, uint64_t key, const int32_t *tokens) {
    int32_t b = find(p, h, parent, key, tokens);
    if (b < 0)
        return -1;
    if (p->ref[b] == 0)
        lru_remove(p, b);
    p->ref[b]++;
    return b;
}

void lp_kvpool_register(lp_kvpool *p, int32_t b, uint64_t h, uint64_t parent, uint64_t key, const int32_t *tokens) {
    if (p->cached[b])
        return;
    if (find(p, h, parent, key, tokens) >= 0)
        return; /* the same content is already cached in another block */
    p->hash[b] = h;
    p->parent[b] = parent;
    p->key[b] = key;
    memcpy(p->tokens + (size_t)b * (size_t)p->bs, tokens, sizeof(int32_t) * (size_t)p->bs);
    size_t k = h & (uint64_t)(p->n_buckets - 1);
    p->chain[b] = p->bucket[k];
    p->bucket[k] = b;
    p->cached[b] = true;
}

void lp_kvpool_get_stats(const lp_kvpool *p, lp_kvpool_stats *st) { *st = p->st; }

void lp_kvpool_count_query(lp_kvpool *p, uint64_t blocks, uint64_t hits) {
    p->st.queried_blocks += blocks;
    p->st.hit_blocks += hits;
}
