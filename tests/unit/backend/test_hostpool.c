/* test_hostpool.c - the chunk pool behind the CUDA backend's staged adapters
 * (src/backend/hostpool.c), with malloc'd chunks:
 *   - 20000 random allocations and frees (blocks from a few bytes to past the
 *     chunk size) never overlap: each block's pattern is intact when freed;
 *     blocks are aligned; the stats count the live blocks;
 *   - once all is freed one chunk is left, as one free block (the spare;
 *     the others went back), and a chunk-sized request needs no new chunk;
 *   - a chunk that cannot be had is a NULL, and the pool keeps working;
 *   - references: the chunks go with the last release, each exactly once;
 *   - a byte limit: the chunks stay within it, and past it allocations fail;
 *   - zero-byte requests, NULL and foreign pointers are harmless. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/hostpool.h"
#include "testlib.h"

#define ALIGN 256
#define CHUNK (1u << 20)
#define LIVE 64

typedef struct counts {
    int allocs, frees;
    bool fail;
} counts;

static void *chunk_alloc(size_t bytes, void *ctx) {
    counts *c = ctx;
    if (c->fail)
        return NULL;
    c->allocs++;
    return aligned_alloc(ALIGN, bytes);
}

static void chunk_free(void *p, void *ctx) {
    ((counts *)ctx)->frees++;
    free(p);
}

static uint64_t g_rng = 88172645463325252ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

int main(void) {
    counts cnt = {0};
    lp_hostpool *p = lp_hostpool_new(CHUNK, ALIGN, 0, chunk_alloc, chunk_free, &cnt);
    CHECK(p != NULL);
    CHECK(lp_hostpool_new(CHUNK, 100, 0, chunk_alloc, chunk_free, &cnt) == NULL); /* not a power of two */
    if (!p)
        return lp_test_finish("test_hostpool");
    unsigned char *ptr[LIVE] = {0};
    size_t len[LIVE] = {0};
    int live = 0, misaligned = 0, clobbered = 0, stats_off = 0;
    for (int step = 0; step < 20000; step++) {
        int i = (int)(rnd() % LIVE);
        if (ptr[i]) {
            for (size_t k = 0; k < len[i]; k++)
                clobbered += ptr[i][k] != (unsigned char)(i * 37 + 11);
            lp_hostpool_free(p, ptr[i]);
            ptr[i] = NULL;
            live--;
        } else {
            uint64_t r = rnd();
            size_t n = r % 16 == 0 ? CHUNK + r % CHUNK : r % 4 == 0 ? 1 + r % 300 : 1 + r % (CHUNK / 4);
            ptr[i] = lp_hostpool_alloc(p, n);
            CHECKF(ptr[i] != NULL, "alloc %zu", n);
            if (!ptr[i])
                continue;
            len[i] = n;
            misaligned += (uintptr_t)ptr[i] % ALIGN != 0;
            memset(ptr[i], i * 37 + 11, n);
            live++;
        }
        if (step % 97 == 0) {
            lp_hostpool_stats st;
            lp_hostpool_get_stats(p, &st);
            stats_off += st.blocks != (size_t)live;
        }
    }
    CHECKF(clobbered == 0, "%d bytes of live blocks overwritten by other blocks", clobbered);
    CHECK(misaligned == 0);
    CHECK(stats_off == 0);
    for (int i = 0; i < LIVE; i++)
        lp_hostpool_free(p, ptr[i]);
    lp_hostpool_stats st;
    lp_hostpool_get_stats(p, &st);
    CHECKF(st.blocks == 0 && st.used_bytes == 0 && st.free_blocks == 1 && st.chunks == 1 &&
               cnt.allocs - cnt.frees == 1,
           "after freeing all: %zu blocks, %zu used, %zu free blocks in %zu chunks (%d allocated, %d freed)",
           st.blocks, st.used_bytes, st.free_blocks, st.chunks, cnt.allocs, cnt.frees);
    printf("test_hostpool: %d chunks allocated over 20000 operations, %d returned\n", cnt.allocs, cnt.frees);
    int before = cnt.allocs;
    void *whole = lp_hostpool_alloc(p, CHUNK);
    CHECK(whole != NULL && cnt.allocs == before); /* reuses a free chunk */

    /* a large request's chunk is rounded up to whole chunks, so the spare it
     * leaves takes the next request of about its size without a new chunk */
    void *big = lp_hostpool_alloc(p, CHUNK + CHUNK / 2);
    lp_hostpool_get_stats(p, &st);
    CHECKF(big != NULL && st.chunk_bytes == 3 * (size_t)CHUNK, "a 1.5-chunk request: %zu bytes held",
           st.chunk_bytes);
    lp_hostpool_free(p, big);
    before = cnt.allocs;
    big = lp_hostpool_alloc(p, CHUNK + CHUNK / 2 + 4 * ALIGN);
    CHECKF(big != NULL && cnt.allocs == before, "a slightly larger request: %d new chunks", cnt.allocs - before);
    lp_hostpool_free(p, big);

    /* no chunk to be had: NULL, and the pool goes on */
    cnt.fail = true;
    CHECK(lp_hostpool_alloc(p, (size_t)64 * CHUNK) == NULL);
    cnt.fail = false;
    void *small = lp_hostpool_alloc(p, 1000);
    CHECK(small != NULL);

    /* harmless */
    CHECK(lp_hostpool_alloc(p, 0) == NULL);
    CHECK(lp_hostpool_alloc(p, SIZE_MAX) == NULL);
    lp_hostpool_free(p, NULL);
    char foreign[16];
    lp_hostpool_free(p, foreign);
    lp_hostpool_free(p, (char *)small + ALIGN); /* inside a block, not its start */
    lp_hostpool_get_stats(p, &st);
    CHECK(st.blocks == 2);

    /* a holder's reference keeps the chunks after the creator lets go */
    lp_hostpool_retain(p);
    lp_hostpool_release(p);
    int frees = cnt.frees;
    memset(small, 1, 1000); /* still ours (ASan would see otherwise) */
    lp_hostpool_free(p, small);
    lp_hostpool_free(p, whole);
    CHECK(cnt.frees <= frees + 1); /* at most the spare beyond one went back */
    lp_hostpool_release(p);
    CHECKF(cnt.frees == cnt.allocs, "chunks: %d allocated, %d freed", cnt.allocs, cnt.frees);

    /* a limit of 2.5 chunks: the chunks never pass it, a last smaller chunk
     * is used up, and past it allocations fail until blocks are freed */
    counts lc = {0};
    size_t lim = 2 * CHUNK + CHUNK / 2;
    lp_hostpool *q = lp_hostpool_new(CHUNK, ALIGN, lim, chunk_alloc, chunk_free, &lc);
    void *blk[64];
    int nb = 0;
    while (q && nb < 64 && (blk[nb] = lp_hostpool_alloc(q, CHUNK / 4)))
        nb++;
    lp_hostpool_get_stats(q, &st);
    CHECKF(nb == 10 && st.chunk_bytes <= lim && st.chunks == 3, "limited pool: %d quarter-chunk blocks, %zu bytes in %zu chunks",
           nb, st.chunk_bytes, st.chunks);
    CHECK(lp_hostpool_alloc(q, 1) == NULL);
    lp_hostpool_free(q, blk[0]);
    CHECK((blk[0] = lp_hostpool_alloc(q, CHUNK / 4)) != NULL);
    for (int i = 0; i < nb; i++)
        lp_hostpool_free(q, blk[i]);
    lp_hostpool_release(q);
    CHECK(lc.frees == lc.allocs);
    return lp_test_finish("test_hostpool");
}
