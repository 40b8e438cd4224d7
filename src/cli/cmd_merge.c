/* cmd_merge.c - `loraplex merge`: fold an adapter into the base weights and
 * write a new model directory. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "loraplex/adapter.h"

static const char k_usage[] =
    "usage: loraplex merge --model DIR --lora DIR --out DIR [--dtype bf16|f16|f32]\n"
    "\n"
    "Merge a LoRA (or DoRA) adapter into the base model and write a complete model\n"
    "directory (config, tokenizer files, safetensors) that loraplex and transformers\n"
    "load. --dtype defaults to the base's. --out must not exist or be empty.\n";

int lp_cmd_merge(int argc, char **argv) {
    const char *model_dir = NULL, *lora = NULL, *out = NULL;
    lp_dtype dt = LP_DTYPE_INVALID;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        }
        if (!(v = lp_cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--lora"))
            lora = v;
        else if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--dtype")) {
            dt = !strcmp(v, "bf16") ? LP_DTYPE_BF16 : !strcmp(v, "f16") ? LP_DTYPE_F16 : !strcmp(v, "f32") ? LP_DTYPE_F32
                                                                                                          : LP_DTYPE_COUNT;
            if (dt == LP_DTYPE_COUNT) {
                fprintf(stderr, "error: --dtype must be bf16, f16 or f32, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
    }
    if (!model_dir || !lora || !out) {
        fprintf(stderr, "error: --model, --lora and --out are required\n\n%s", k_usage);
        return 2;
    }
    lp_error err = {0};
    lp_model *m = NULL;
    lp_adapter *ad = NULL;
    int status = 1;
    lp_adapter_params ap = lp_adapter_default_params();
    ap.max_rank = 1 << 16;
    if (lp_model_load(model_dir, &m, NULL, NULL, &err) || lp_adapter_load(lora, m, &ap, &ad, &err) ||
        lp_adapter_merge(m, ad, out, dt, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
    } else {
        printf("merged %s into %s -> %s\n", lora, model_dir, out);
        status = 0;
    }
    lp_adapter_free(ad);
    lp_model_free(m);
    return status;
}
