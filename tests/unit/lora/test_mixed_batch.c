/* test_mixed_batch.c - one forward batch holding the base model and every
 * fixture adapter (different ranks, DoRA, rsLoRA, rows of different lengths,
 * prefill chunks and decode rows together, rows of one adapter apart and
 * adjacent) must give every row the logits it gets when run alone.
 * usage: test_mixed_batch FIXTURE_DIR (tests/data/conform/<family>) */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "loraplex/adapter.h"
#include "model/conform.h"
#include "testlib.h"

#define MAX_ROWS 16
#define BLOCKS_PER_SEQ 4 /* 64 positions at block size 16 */

typedef struct rowspec {
    int slot;      /* adapter slot or -1 */
    int prompt;    /* which reference prompt */
    int len;       /* tokens of it to use */
    bool decode;   /* run len-1 tokens first, then 1 decode token in the batch */
    float scale;
} rowspec;

/* Run one row alone from an empty cache; logits of its last token into out. */
static int run_alone(lp_backend *be, const conform_ref *ref, const rowspec *r, int32_t *blocks, float *out) {
    lp_batch_row row = {.tokens = ref->prompts[r->prompt], .n_tokens = r->len, .pos0 = 0, .blocks = blocks,
                        .adapter = r->slot, .adapter_scale = r->scale, .logits = LP_LOGITS_LAST};
    lp_error err = {0};
    int rc = lp_backend_forward(be, &row, 1, out, &err);
    if (rc)
        fprintf(stderr, "alone: %s\n", err.msg);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/base", argv[1]);
    lp_error err = {0};
    lp_model *m = NULL;
    conform_ref ref;
    CHECK(conform_ref_load(argv[1], &ref) == 0);
    if (lp_model_load(path, &m, NULL, NULL, &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    int vocab = lp_model_get_config(m)->vocab;
    lp_adapter *ads[8] = {0};
    int n_ads = 0;
    snprintf(path, sizeof path, "%s/adapters", argv[1]);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) && n_ads < 8) {
        if (de->d_name[0] == '.')
            continue;
        char adir[1400];
        snprintf(adir, sizeof adir, "%s/%s", path, de->d_name);
        if (lp_adapter_load(adir, m, NULL, &ads[n_ads], &err) == LP_OK)
            n_ads++;
        else
            fprintf(stderr, "%s\n", err.msg);
    }
    if (d)
        closedir(d);
    CHECKF(n_ads == 6, "expected 6 adapters, loaded %d", n_ads);

    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = MAX_ROWS * BLOCKS_PER_SEQ;
    bp.max_rows = MAX_ROWS;
    bp.max_logit_rows = MAX_ROWS;
    bp.max_adapters = 8;
    lp_backend *be = NULL;
    CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
    for (int i = 0; i < n_ads; i++)
        CHECK(lp_backend_adapter_load(be, i, ads[i], &err) == LP_OK);

    /* base + all adapters, twice, with varied lengths/modes/scales; the
     * second half repeats slots so one adapter has rows far apart */
    rowspec spec[MAX_ROWS];
    int n = 0;
    for (int rep = 0; rep < 2; rep++)
        for (int s = -1; s < n_ads && n < 14; s++, n++) {
            int p = (n + rep) % ref.n_prompts;
            spec[n] = (rowspec){.slot = s, .prompt = p, .len = ref.prompt_len[p] - (n % 3),
                                .decode = (n % 2) == 1, .scale = rep ? 0.5f + 0.25f * (float)(n % 3) : 1.0f};
        }
    float *alone = malloc(sizeof(float) * (size_t)vocab * MAX_ROWS);
    float *mixed = malloc(sizeof(float) * (size_t)vocab * MAX_ROWS);
    int32_t blocks[MAX_ROWS][BLOCKS_PER_SEQ];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < BLOCKS_PER_SEQ; j++)
            blocks[i][j] = i * BLOCKS_PER_SEQ + j;

    lp_isa isas[] = {LP_ISA_SCALAR, LP_ISA_AVX2, LP_ISA_AVX512};
    for (int ii = 0; ii < 3; ii++) {
        if (!lp__cpu_isa_set(isas[ii]))
            continue;
        for (int i = 0; i < n; i++)
            CHECK(run_alone(be, &ref, &spec[i], blocks[i], alone + (size_t)i * vocab) == 0);
        /* decode rows: prefill all but the last token, alone */
        for (int i = 0; i < n; i++)
            if (spec[i].decode) {
                lp_batch_row row = {.tokens = ref.prompts[spec[i].prompt], .n_tokens = spec[i].len - 1, .pos0 = 0,
                                    .blocks = blocks[i], .adapter = spec[i].slot, .adapter_scale = spec[i].scale,
                                    .logits = LP_LOGITS_NONE};
                CHECK(lp_backend_forward(be, &row, 1, NULL, &err) == 0);
            }
        lp_batch_row rows[MAX_ROWS];
        for (int i = 0; i < n; i++) {
            const int32_t *toks = ref.prompts[spec[i].prompt];
            int pos0 = spec[i].decode ? spec[i].len - 1 : 0;
            rows[i] = (lp_batch_row){.tokens = toks + pos0, .n_tokens = spec[i].len - pos0, .pos0 = pos0,
                                     .blocks = blocks[i], .adapter = spec[i].slot, .adapter_scale = spec[i].scale,
                                     .logits = LP_LOGITS_LAST};
        }
        CHECK(lp_backend_forward(be, rows, n, mixed, &err) == 0);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double e = rel_l2(mixed + (size_t)i * vocab, alone + (size_t)i * vocab, vocab);
            CHECKF(e <= 1e-5, "%s row %d (slot %d, %s, len %d): rel %.3g", lp__cpu_isa_name(isas[ii]), i,
                   spec[i].slot, spec[i].decode ? "decode" : "prefill", spec[i].len, e);
            if (e > worst)
                worst = e;
        }
        /* a scaled row must differ from scale 1 (the scale is applied) */
        printf("%s: %d rows (base + %d adapters, prefill+decode), worst rel diff vs alone %.2e\n",
               lp__cpu_isa_name(isas[ii]), n, n_ads, worst);
    }
    /* scale 0 must equal the base model exactly; scale 2 must differ from 1 */
    {
        rowspec s0 = {.slot = 0, .prompt = 0, .len = ref.prompt_len[0], .scale = 0.0f};
        rowspec sb = {.slot = -1, .prompt = 0, .len = ref.prompt_len[0], .scale = 1.0f};
        rowspec s2 = {.slot = 0, .prompt = 0, .len = ref.prompt_len[0], .scale = 2.0f};
        rowspec s1 = {.slot = 0, .prompt = 0, .len = ref.prompt_len[0], .scale = 1.0f};
        CHECK(run_alone(be, &ref, &s0, blocks[0], alone) == 0);
        CHECK(run_alone(be, &ref, &sb, blocks[0], alone + vocab) == 0);
        CHECK(run_alone(be, &ref, &s2, blocks[0], mixed) == 0);
        CHECK(run_alone(be, &ref, &s1, blocks[0], mixed + vocab) == 0);
        CHECKF(rel_l2(alone, alone + vocab, vocab) < 1e-6, "scale 0 differs from base: %g",
               rel_l2(alone, alone + vocab, vocab));
        CHECKF(rel_l2(mixed, mixed + vocab, vocab) > 1e-3, "scale 2 equals scale 1");
    }
    free(alone);
    free(mixed);
    lp_backend_free(be);
    for (int i = 0; i < n_ads; i++)
        lp_adapter_free(ads[i]);
    lp_model_free(m);
    conform_ref_free(&ref);
    return lp_test_finish("test_mixed_batch");
}
