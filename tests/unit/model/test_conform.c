/* test_conform.c - conformance against the transformers + PEFT reference:
 * for the base model and every adapter of the fixture, logits at every
 * prompt position within 1e-4 relative L2 and identical 16-token greedy
 * continuations, on every CPU code path (scalar, AVX2, AVX-512).
 * usage: test_conform FIXTURE_DIR (tests/data/conform/<family>) [--base-only] */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "conform.h"
#include "loraplex/adapter.h"
#include "loraplex/model.h"
#include "testlib.h"

#define MAX_TAGS 16

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR [--base-only]\n", argv[0]);
        return 2;
    }
    bool base_only = argc > 2 && !strcmp(argv[2], "--base-only");
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
    const lp_model_config *c = lp_model_get_config(m);

    /* tags: base + every adapter directory shipped with the fixture */
    char *tags[MAX_TAGS];
    lp_adapter *adapters[MAX_TAGS] = {0};
    int n_tags = 0;
    tags[n_tags++] = strdup("base");
    snprintf(path, sizeof path, "%s/adapters", argv[1]);
    DIR *d = base_only ? NULL : opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) && n_tags < MAX_TAGS) {
        if (de->d_name[0] == '.')
            continue;
        char adir[1400];
        snprintf(adir, sizeof adir, "%s/%s", path, de->d_name);
        if (lp_adapter_load(adir, m, NULL, &adapters[n_tags], &err)) {
            fprintf(stderr, "adapter %s: %s\n", de->d_name, err.msg);
            CHECK(0);
            continue;
        }
        tags[n_tags++] = strdup(de->d_name);
    }
    if (d)
        closedir(d);
    if (!base_only)
        CHECKF(n_tags >= 7, "expected the six fixture adapters, found %d", n_tags - 1);

    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 64;
    bp.max_logit_rows = 64;
    bp.max_adapters = MAX_TAGS;
    lp_backend *be = NULL;
    CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
    for (int i = 1; i < n_tags; i++)
        CHECK(lp_backend_adapter_load(be, i, adapters[i], &err) == LP_OK);
    float *out = malloc(sizeof(float) * 64 * (size_t)c->vocab);
    lp_isa isas[] = {LP_ISA_SCALAR, LP_ISA_AVX2, LP_ISA_AVX512};
    int ran = 0;
    for (int ii = 0; ii < 3; ii++) {
        if (!lp__cpu_isa_set(isas[ii])) {
            printf("%s: not supported by this CPU, skipped\n", lp__cpu_isa_name(isas[ii]));
            continue;
        }
        ran++;
        for (int ti = 0; ti < n_tags; ti++) {
            int slot = ti == 0 ? -1 : ti;
            double worst_all = 0;
            int same_all = 1;
            for (int p = 0; p < ref.n_prompts; p++) {
                int64_t len, vocab;
                const float *want = conform_ref_logits(&ref, tags[ti], p, &len, &vocab);
                CHECKF(want && vocab == c->vocab && len == ref.prompt_len[p], "%s: no reference logits", tags[ti]);
                if (!want)
                    continue;
                CHECK(conform_forward_all(be, ref.prompts[p], ref.prompt_len[p], slot, out) == 0);
                double worst = 0;
                for (int64_t t = 0; t < len; t++) {
                    double e = rel_l2(out + t * vocab, want + t * vocab, vocab);
                    if (e > worst)
                        worst = e;
                }
                CHECKF(worst <= 1e-4, "%s %s prompt %d: worst position rel L2 %.3g", lp__cpu_isa_name(isas[ii]),
                       tags[ti], p, worst);
                int32_t greedy[16], expect[16];
                int ne = conform_ref_greedy(&ref, tags[ti], p, expect, 16);
                int ng = conform_greedy(be, ref.prompts[p], ref.prompt_len[p], slot, 16, greedy);
                CHECK(ne == 16 && ng == 16);
                int same = ne == 16 && ng == 16;
                for (int j = 0; j < 16 && j < ng && j < ne; j++)
                    same &= greedy[j] == expect[j];
                CHECKF(same, "%s %s prompt %d: greedy continuation differs", lp__cpu_isa_name(isas[ii]), tags[ti], p);
                if (worst > worst_all)
                    worst_all = worst;
                same_all &= same;
            }
            printf("%-7s %-16s worst rel L2 %.2e over %d prompts, greedy %s\n", lp__cpu_isa_name(isas[ii]), tags[ti],
                   worst_all, ref.n_prompts, same_all ? "identical" : "DIFFERENT");
        }
    }
    CHECK(ran >= 1);
    free(out);
    lp_backend_free(be);
    for (int i = 0; i < n_tags; i++) {
        lp_adapter_free(adapters[i]);
        free(tags[i]);
    }
    lp_model_free(m);
    conform_ref_free(&ref);
    return lp_test_finish("test_conform");
}
