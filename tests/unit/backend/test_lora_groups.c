/* test_lora_groups.c - the token grouping the CUDA multi-LoRA kernels run on
 * (lp__lora_group_count/fill in src/backend/common.c), checked here without
 * a GPU on random batches: perm is a permutation of the call's tokens; the
 * adapter tiles come first, in ascending slot order, then the base tokens'
 * tiles (slot -1); tiles cover perm in order with 1..tile tokens that all
 * belong to rows of the tile's slot, in token order within a slot. */
#include <stdlib.h>
#include <string.h>

#include "backend/common.h"
#include "testlib.h"

#define MAX_ROWS 48
#define MAX_TOK 24
#define MAX_ADAPTERS 9

static void check_batch(const lp_batch_row *rows, int n_rows, int max_adapters, int tile) {
    int32_t cnt[MAX_ADAPTERS], tok_slot[MAX_ROWS * MAX_TOK];
    lp__lora_groups g;
    lp__lora_group_count(rows, n_rows, max_adapters, tile, cnt, &g);
    int64_t T = 0, n_lora = 0;
    for (int i = 0; i < n_rows; i++) {
        for (int j = 0; j < rows[i].n_tokens; j++)
            tok_slot[T + j] = rows[i].adapter;
        T += rows[i].n_tokens;
        n_lora += rows[i].adapter >= 0 ? rows[i].n_tokens : 0;
    }
    CHECK(g.n_tokens == T && g.n_lora_tokens == n_lora);
    if (!n_lora) {
        CHECK(g.n_items == 0);
        return;
    }
    CHECK(g.n_items >= g.n_adapter_items && g.n_adapter_items >= 1);
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)T), *items = malloc(sizeof(int32_t) * 4 * (size_t)g.n_items);
    int *seen = calloc((size_t)T, sizeof(int));
    lp__lora_group_fill(rows, n_rows, max_adapters, tile, cnt, &g, perm, items);
    for (int64_t k = 0; k < T; k++) {
        CHECK(perm[k] >= 0 && perm[k] < T);
        if (perm[k] >= 0 && perm[k] < T)
            seen[perm[k]]++;
    }
    for (int64_t t = 0; t < T; t++)
        CHECKF(seen[t] == 1, "token %lld appears %d times in perm", (long long)t, seen[t]);
    int32_t next = 0, last_slot = -1;
    for (int64_t k = 0; k < g.n_items; k++) {
        const int32_t *it = items + 4 * k;
        bool adapter_tile = k < g.n_adapter_items;
        CHECK(adapter_tile ? it[0] >= 0 && it[0] >= last_slot : it[0] == -1);
        CHECK(it[1] == next && it[2] >= 1 && it[2] <= tile);
        for (int32_t q = it[1]; q < it[1] + it[2] && q < T; q++) {
            CHECK(it[0] >= 0 ? tok_slot[perm[q]] == it[0] : tok_slot[perm[q]] < 0);
            if (q > it[1] || (k > 0 && items[4 * (k - 1)] == it[0]))
                CHECK(perm[q] > perm[q - 1]); /* token order within a group */
        }
        if (adapter_tile)
            last_slot = it[0];
        next += it[2];
    }
    CHECK(next == T);
    free(perm);
    free(items);
    free(seen);
}

int main(void) {
    srand(7);
    int32_t toks[MAX_ROWS * MAX_TOK] = {0}, blocks[8] = {0};
    lp_batch_row rows[MAX_ROWS];
    for (int iter = 0; iter < 2000; iter++) {
        int n_rows = 1 + rand() % MAX_ROWS, max_adapters = 1 + rand() % MAX_ADAPTERS, tile = 1 + rand() % 8;
        int base_pct = rand() % 101;
        for (int i = 0; i < n_rows; i++) {
            rows[i] = (lp_batch_row){.tokens = toks, .n_tokens = 1 + rand() % (iter % 2 ? MAX_TOK : 1),
                                     .blocks = blocks, .adapter_scale = 1.0f};
            rows[i].adapter = rand() % 100 < base_pct ? -1 : rand() % max_adapters;
        }
        check_batch(rows, n_rows, max_adapters, tile);
    }
    return lp_test_finish("test_lora_groups");
}
