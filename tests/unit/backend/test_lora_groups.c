/* test_lora_groups.c - the token grouping the CUDA multi-LoRA kernels run on
 * (lp__lora_group_count/fill in src/backend/common.c), checked here without
 * a GPU on random batches: perm lists every adapter token once and no base
 * token; place is its inverse (-1 for base tokens); the tiles come in
 * ascending slot order and cover perm in order with 1..tile tokens that all
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
    CHECK(n_lora ? g.n_items >= 1 : g.n_items == 0);
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)(n_lora + 1)), *place = malloc(sizeof(int32_t) * (size_t)T);
    int32_t *items = malloc(sizeof(int32_t) * 4 * (size_t)(g.n_items + 1));
    int *seen = calloc((size_t)T, sizeof(int));
    lp__lora_group_fill(rows, n_rows, max_adapters, tile, cnt, perm, place, items);
    for (int64_t k = 0; k < n_lora; k++) {
        CHECK(perm[k] >= 0 && perm[k] < T);
        if (perm[k] >= 0 && perm[k] < T) {
            seen[perm[k]]++;
            CHECKF(place[perm[k]] == k, "place[%d] = %d, want %lld", perm[k], place[perm[k]], (long long)k);
        }
    }
    for (int64_t t = 0; t < T; t++) {
        CHECKF(seen[t] == (tok_slot[t] >= 0), "token %lld (slot %d) appears %d times in perm", (long long)t,
               tok_slot[t], seen[t]);
        if (tok_slot[t] < 0)
            CHECKF(place[t] == -1, "base token %lld has place %d", (long long)t, place[t]);
    }
    int32_t next = 0, last_slot = -1;
    for (int64_t k = 0; k < g.n_items; k++) {
        const int32_t *it = items + 4 * k;
        CHECK(it[0] >= 0 && it[0] >= last_slot);
        CHECK(it[1] == next && it[2] >= 1 && it[2] <= tile);
        for (int32_t q = it[1]; q < it[1] + it[2] && q < n_lora; q++) {
            CHECK(tok_slot[perm[q]] == it[0]);
            if (q > it[1] || (k > 0 && items[4 * (k - 1)] == it[0]))
                CHECK(perm[q] > perm[q - 1]); /* token order within a group */
        }
        last_slot = it[0];
        next += it[2];
    }
    CHECK(next == n_lora);
    free(perm);
    free(place);
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
