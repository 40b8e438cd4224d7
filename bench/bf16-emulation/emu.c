#include <math.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conform.h"
#include "loraplex/adapter.h"
#include "loraplex/model.h"
#include "backend/backend.h"
int main(int argc, char **argv) {
    char path[1024];
    snprintf(path, sizeof path, "%s/base", argv[1]);
    lp_error err = {0};
    lp_model *m = NULL;
    conform_ref ref;
    if (conform_ref_load(argv[1], &ref) || lp_model_load(path, &m, NULL, NULL, &err)) return 1;
    const lp_model_config *c = lp_model_get_config(m);
    const char *names[] = {"base", "r8-all", "r4-qv", "r16-rslora-attn", "pattern-mlp", "layers-1", "dora-r8"};
    int n = 7;
    lp_adapter *ad[7] = {0};
    for (int i = 1; i < n; i++) {
        char a[1400];
        snprintf(a, sizeof a, "%s/adapters/%s", argv[1], names[i]);
        if (lp_adapter_load(a, m, NULL, &ad[i], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    }
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 64; bp.max_logit_rows = 64; bp.max_adapters = 8;
    lp_backend *be = NULL;
    if (lp_backend_cpu_new(m, &bp, &be, &err)) return 1;
    for (int i = 1; i < n; i++) lp_backend_adapter_load(be, i, ad[i], &err);
    float *out = malloc(sizeof(float) * 64 * (size_t)c->vocab);
    printf("%-22s", getenv("LP_EMU_BF16") ? getenv("LP_EMU_BF16") : "none");
    for (int ti = 0; ti < n; ti++) {
        double worst = 0, sum = 0, wn = 0, nsum = 0; int cnt = 0, wp = -1, wt = -1;
        for (int p = 0; p < ref.n_prompts; p++) {
            int64_t len, vocab;
            const float *want = conform_ref_logits(&ref, names[ti], p, &len, &vocab);
            conform_forward_all(be, ref.prompts[p], ref.prompt_len[p], ti ? ti : -1, out);
            for (int64_t t = 0; t < len; t++) {
                double e = rel_l2(out + t * vocab, want + t * vocab, vocab);
                double nn = 0; for (int64_t k = 0; k < vocab; k++) nn += (double)want[t*vocab+k]*want[t*vocab+k];
                nn = sqrt(nn); nsum += nn;
                sum += e; cnt++;
                if (e > worst) { worst = e; wp = p; wt = (int)t; wn = nn; }
            }
        }
        if (getenv("DETAIL")) printf(" %s=%.2e(p%d,t%d,mean %.1e, refnorm %.0f/avg %.0f)", names[ti], worst, wp, wt, sum / cnt, wn, nsum / cnt);
        else printf(" %s=%.2e", names[ti], worst);
    }
    printf("\n");
    return 0;
}
