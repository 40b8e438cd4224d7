/* kvpool.h - the paged KV cache's block allocator with prefix caching: full
 * blocks are registered under (parent block, cache key, tokens), where the
 * cache key identifies the adapter weights and scale the K/V were computed
 * under, so a prompt that starts like an earlier one (same adapter) reuses
 * its blocks, and K/V computed under one adapter is never reused for
 * another. Cached blocks nobody references stay until their space is needed
 * (LRU). Engine thread only. */
#ifndef LP_ENGINE_KVPOOL_H
#define LP_ENGINE_KVPOOL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct lp_kvpool lp_kvpool;

lp_kvpool *lp_kvpool_new(int n_blocks, int block_size);
void lp_kvpool_free(lp_kvpool *p);

/* Blocks that can be handed out now (free + cached-unreferenced). */
int lp_kvpool_available(const lp_kvpool *p);
/* Blocks referenced by sequences. */
int lp_kvpool_used(const lp_kvpool *p);
/* A block with refcount 1, or -1 when none is available (evicts the least
 * recently released cached block if needed). */
int32_t lp_kvpool_alloc(lp_kvpool *p);
void lp_kvpool_release(lp_kvpool *p, int32_t b);

/* Prefix chain: the hash of a full block is computed from the hash of the
 * block before it (0 for the first), the cache key and its tokens. */
uint64_t lp_kvpool_chain(const lp_kvpool *p, uint64_t parent, uint64_t key, const int32_t *tokens);
/* Find the cached full block with chain hash h that follows a block of
 * chain hash `parent` and holds exactly `tokens` (block_size) under `key`;
 * takes a reference. -1 if absent. */
int32_t lp_kvpool_match(lp_kvpool *p, uint64_t h, uint64_t parent, uint64_t key, const int32_t *tokens);
/* Register full block b (its K/V now computed) under chain hash h. */
void lp_kvpool_register(lp_kvpool *p, int32_t b, uint64_t h, uint64_t parent, uint64_t key, const int32_t *tokens);

typedef struct lp_kvpool_stats {
    uint64_t queried_blocks, hit_blocks;
} lp_kvpool_stats;
void lp_kvpool_get_stats(const lp_kvpool *p, lp_kvpool_stats *st);
void lp_kvpool_count_query(lp_kvpool *p, uint64_t blocks, uint64_t hits);

#endif
