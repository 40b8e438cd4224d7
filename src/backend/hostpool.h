/* hostpool.h - a pool of large host-memory chunks (pinned memory, for the
 * CUDA backend) cut into aligned blocks, so that staging and dropping
 * adapters does not pin and unpin memory each time (cudaMallocHost and
 * cudaFreeHost cost milliseconds per hundred MB and may wait for the GPU).
 *
 * First fit over the chunks' free blocks; a freed block merges with free
 * neighbours. A request larger than the chunk size gets a chunk of its own,
 * rounded up to whole chunk sizes (so the chunk it leaves serves the next
 * adapter of about its size). Chunks are obtained and returned outside the
 * pool's lock.
 * A chunk that becomes all free is kept as a spare, or returned when there
 * already is one: the pool holds what is in use (plus fragmentation) and at
 * most one free chunk. Thread-safe. Reference counted, so blocks may outlive the
 * owner that created the pool: each holder takes a reference. */
#ifndef LP_BACKEND_HOSTPOOL_H
#define LP_BACKEND_HOSTPOOL_H

#include <stddef.h>

typedef struct lp_hostpool lp_hostpool;

/* How chunks are obtained and returned (e.g. cudaMallocHost/cudaFreeHost);
 * chunk_alloc returns NULL when it cannot. */
typedef void *(*lp_hostpool_chunk_alloc)(size_t bytes, void *ctx);
typedef void (*lp_hostpool_chunk_free)(void *p, void *ctx);

/* A pool with one reference. `align` is a power of two; chunks must come
 * back aligned to it. The chunks together stay within max_bytes (0: no
 * limit): past it an allocation fails as when chunk_alloc does. NULL when
 * out of memory. */
lp_hostpool *lp_hostpool_new(size_t chunk_bytes, size_t align, size_t max_bytes, lp_hostpool_chunk_alloc ca,
                             lp_hostpool_chunk_free cf, void *ctx);
void lp_hostpool_retain(lp_hostpool *p);
/* Drops a reference; the last one frees every chunk. */
void lp_hostpool_release(lp_hostpool *p);

/* `bytes` (> 0) aligned to the pool's alignment; NULL when no chunk can be had. */
void *lp_hostpool_alloc(lp_hostpool *p, size_t bytes);
/* A block from lp_hostpool_alloc of this pool (NULL: nothing). */
void lp_hostpool_free(lp_hostpool *p, void *ptr);

typedef struct lp_hostpool_stats {
    size_t chunks, chunk_bytes; /* chunks held and their bytes */
    size_t blocks, used_bytes;  /* blocks in use and their (aligned) bytes */
    size_t free_blocks;         /* free blocks over all chunks (1 per chunk when all is free) */
} lp_hostpool_stats;
void lp_hostpool_get_stats(lp_hostpool *p, lp_hostpool_stats *st);

#endif
