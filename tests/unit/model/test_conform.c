/* test_conform.c - base-model conformance against the transformers
 * reference: logits at every prompt position within 1e-4 relative L2 and
 * identical 16-token greedy continuations, on every CPU code path.
 * usage: test_conform FIXTURE_DIR (tests/data/conform/<family>) */
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu/kernels.h"
#include "conform.h"
#include "loraplex/model.h"
#include "testlib.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    char base[1024];
    snprintf(base, sizeof base, "%s/base", argv[1]);
    lp_error err = {0};
    lp_model *m = NULL;
    conform_ref ref;
    CHECK(conform_ref_load(argv[1], &ref) == 0);
    if (lp_model_load(base, &m, NULL, NULL, &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    const lp_model_config *c = lp_model_get_config(m);
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 64;
    bp.max_logit_rows = 64;
    lp_backend *be = NULL;
    CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
    float *out = malloc(sizeof(float) * 64 * (size_t)c->vocab);
    lp_isa isas[] = {LP_ISA_SCALAR, LP_ISA_AVX2, LP_ISA_AVX512};
    int ran = 0;
    for (int ii = 0; ii < 3; ii++) {
        if (!lp__cpu_isa_set(isas[ii])) {
            printf("%s: not supported by this CPU, skipped\n", lp__cpu_isa_name(isas[ii]));
            continue;
        }
        ran++;
        for (int p = 0; p < ref.n_prompts; p++) {
            int64_t len, vocab;
            const float *want = conform_ref_logits(&ref, "base", p, &len, &vocab);
            CHECK(want && vocab == c->vocab && len == ref.prompt_len[p]);
            if (!want)
                continue;
            CHECK(conform_forward_all(be, ref.prompts[p], ref.prompt_len[p], -1, out) == 0);
            double worst = 0;
            for (int64_t t = 0; t < len; t++) {
                double e = rel_l2(out + t * vocab, want + t * vocab, vocab);
                if (e > worst)
                    worst = e;
            }
            CHECKF(worst <= 1e-4, "%s prompt %d: worst position rel L2 %.3g", lp__cpu_isa_name(isas[ii]), p, worst);
            int32_t greedy[16], expect[16];
            int ne = conform_ref_greedy(&ref, "base", p, expect, 16);
            int ng = conform_greedy(be, ref.prompts[p], ref.prompt_len[p], -1, 16, greedy);
            CHECK(ne == 16 && ng == 16);
            int same = 1;
            for (int j = 0; j < 16 && j < ng && j < ne; j++)
                same &= greedy[j] == expect[j];
            CHECKF(same, "%s prompt %d: greedy continuation differs", lp__cpu_isa_name(isas[ii]), p);
            printf("%s prompt %d (len %lld): worst rel L2 %.2e, greedy %s\n", lp__cpu_isa_name(isas[ii]), p,
                   (long long)len, worst, same ? "identical" : "DIFFERENT");
        }
    }
    CHECK(ran >= 1);
    free(out);
    lp_backend_free(be);
    lp_model_free(m);
    conform_ref_free(&ref);
    return lp_test_finish("test_conform");
}
