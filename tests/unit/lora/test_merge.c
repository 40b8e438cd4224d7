/* test_merge.c - a merged model (--dtype f32) reproduces base+adapter greedy
 * tokens exactly: the tinylm math adapter on its eval prompts, and every
 * conform adapter (DoRA included) on the reference prompts; the merged
 * directory loads as a complete model; a non-empty output dir is refused.
 * usage: test_merge MODELS_DIR TEST_DATA_DIR */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loraplex/adapter.h"
#include "model/conform.h"
#include "testlib.h"

static void rm_rf(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

static lp_backend *make_backend(lp_model *m, const lp_adapter *a) {
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 16;
    bp.max_adapters = 1;
    lp_backend *be = NULL;
    lp_error err = {0};
    if (lp_backend_cpu_new(m, &bp, &be, &err) || (a && lp_backend_adapter_load(be, 0, a, &err))) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    return be;
}

/* Merge adapter_dir into base_dir (f32), then compare greedy tokens of the
 * prompts with base+adapter. Returns the number of prompts compared. */
static int check_merge(const char *base_dir, const char *adapter_dir, int32_t **prompts, const int *lens, int n,
                       int n_new) {
    lp_error err = {0};
    lp_model *m = NULL, *merged = NULL;
    lp_adapter *a = NULL;
    char tmp[] = "/tmp/lp-merge-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char out[256];
    snprintf(out, sizeof out, "%s/merged", tmp);
    int compared = 0;
    if (lp_model_load(base_dir, &m, NULL, NULL, &err) || lp_adapter_load(adapter_dir, m, NULL, &a, &err) ||
        lp_adapter_merge(m, a, out, LP_DTYPE_F32, &err) || lp_model_load(out, &merged, NULL, NULL, &err)) {
        fprintf(stderr, "%s: %s\n", adapter_dir, err.msg);
        CHECK(0);
        goto done;
    }
    /* merging again into the now non-empty directory must be refused */
    CHECK(lp_adapter_merge(m, a, out, LP_DTYPE_F32, &err) == LP_ERR_EXISTS);
    lp_backend *be1 = make_backend(m, a), *be2 = make_backend(merged, NULL);
    CHECK(be1 && be2);
    for (int i = 0; be1 && be2 && i < n; i++) {
        int32_t g1[64], g2[64];
        int n1 = conform_greedy(be1, prompts[i], lens[i], 0, n_new, g1);
        int n2 = conform_greedy(be2, prompts[i], lens[i], -1, n_new, g2);
        bool same = n1 == n2 && n1 == n_new && !memcmp(g1, g2, sizeof(int32_t) * (size_t)n1);
        CHECKF(same, "%s prompt %d: merged greedy differs", adapter_dir, i);
        compared++;
    }
    lp_backend_free(be1);
    lp_backend_free(be2);
done:
    lp_adapter_free(a);
    lp_model_free(m);
    lp_model_free(merged);
    rm_rf(tmp);
    return compared;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODELS_DIR TEST_DATA_DIR\n", argv[0]);
        return 2;
    }
    char base[1400], adir[1400];
    /* tinylm + math on 20 of its eval prompts */
    snprintf(base, sizeof base, "%s/tinylm", argv[1]);
    snprintf(adir, sizeof adir, "%s/tinylm-adapters/math", argv[1]);
    lp_model *m = NULL;
    lp_error err = {0};
    CHECK(lp_model_load(base, &m, NULL, NULL, &err) == LP_OK);
    int32_t *prompts[20];
    int lens[20], n = 0;
    char path[1200];
    snprintf(path, sizeof path, "%s/evals/tinylm-math-shared.jsonl", argv[2]);
    FILE *f = fopen(path, "r");
    char line[8192];
    while (f && n < 20 && fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *p = json_string_value(json_object_get(o, "prompt"));
        size_t len = 0;
        int32_t *ids = NULL;
        if (p && lp_tokenizer_encode(lp_model_tokenizer(m), p, strlen(p), false, &ids, &len, &err) == LP_OK) {
            prompts[n] = ids;
            lens[n++] = (int)len;
        }
        json_decref(o);
    }
    if (f)
        fclose(f);
    lp_model_free(m);
    CHECK(n == 20);
    int c = check_merge(base, adir, prompts, lens, n, 8);
    printf("tinylm + math: merged f32 model matches base+adapter greedy on %d prompts\n", c);
    for (int i = 0; i < n; i++)
        free(prompts[i]);
    /* every conform adapter, llama and qwen2, DoRA included */
    static const char *fams[] = {"llama", "qwen2"};
    static const char *ads[] = {"r8-all", "r4-qv", "r16-rslora-attn", "pattern-mlp", "layers-1", "dora-r8"};
    for (int fi = 0; fi < 2; fi++) {
        char fdir[1100];
        snprintf(fdir, sizeof fdir, "%s/conform/%s", argv[2], fams[fi]);
        conform_ref ref;
        CHECK(conform_ref_load(fdir, &ref) == 0);
        snprintf(base, sizeof base, "%s/base", fdir);
        for (size_t ai = 0; ai < sizeof ads / sizeof ads[0]; ai++) {
            snprintf(adir, sizeof adir, "%s/adapters/%s", fdir, ads[ai]);
            c = check_merge(base, adir, ref.prompts, ref.prompt_len, ref.n_prompts, 16);
            printf("%s + %s: merged f32 matches base+adapter greedy on %d prompts\n", fams[fi], ads[ai], c);
        }
        conform_ref_free(&ref);
    }
    return lp_test_finish("test_merge");
}
