/* cmd_inspect.c - `loraplex inspect`: describe and validate an adapter or a
 * model directory, or a single safetensors file. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "format/safetensors.h"
#include "loraplex/adapter.h"
#include "util/util.h"

static const char k_usage[] =
    "usage: loraplex inspect PATH [--model DIR] [--max-lora-rank N] [--json]\n"
    "\n"
    "PATH is an adapter directory (adapter_config.json), a model directory\n"
    "(config.json) or a .safetensors file. For an adapter: rank, alpha, targets,\n"
    "size, and with --model whether it fits that base model. Exit status 1 when\n"
    "the input is invalid or does not fit.\n";

static void print_adapter(const lp_adapter_info *in, bool json) {
    char targets[128] = "";
    for (int m = 0; m < 7; m++)
        if (in->targets & (1u << m)) {
            if (targets[0])
                strncat(targets, ",", sizeof targets - strlen(targets) - 1);
            strncat(targets, lp_adapter_module_name(m), sizeof targets - strlen(targets) - 1);
        }
    if (json) {
        json_t *o = json_pack("{s:s,s:s,s:i,s:f,s:i,s:i,s:b,s:b,s:i,s:s,s:I,s:I,s:s}", "kind", "adapter", "format",
                              in->format, "r", in->r, "lora_alpha", (double)in->lora_alpha, "max_rank", in->max_rank,
                              "min_rank", in->min_rank, "use_rslora", in->use_rslora, "use_dora", in->use_dora,
                              "modules", in->n_modules, "targets", targets, "params", (json_int_t)in->n_params, "bytes",
                              (json_int_t)in->bytes, "base_model", in->base_model);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
        return;
    }
    printf("format:      %s\n", in->format);
    printf("rank:        r=%d (modules: %d..%d)\n", in->r, in->min_rank, in->max_rank);
    printf("alpha:       %g%s%s\n", in->lora_alpha, in->use_rslora ? " (rsLoRA: alpha/sqrt(r))" : " (alpha/r)",
           in->use_dora ? ", DoRA" : "");
    printf("targets:     %s (%d layer-modules)\n", targets, in->n_modules);
    printf("size:        %llu parameters, %.2f MiB\n", (unsigned long long)in->n_params, (double)in->bytes / 1048576.0);
    printf("base model:  %s\n", in->base_model[0] ? in->base_model : "(not given)");
}

int lp_cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *model_dir = NULL;
    bool json = false;
    long long max_rank = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (a[0] != '-' && !path) {
            path = a;
        } else if (!(v = lp_cli_value(argc, argv, &i))) {
            return 2;
        } else if (!strcmp(a, "--model")) {
            model_dir = v;
        } else if (!strcmp(a, "--max-lora-rank")) {
            if (!lp_cli_int(a, v, 1, 1 << 16, &max_rank))
                return 2;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "%s", k_usage);
        return 2;
    }
    lp_error err = {0};
    int status = 1;
    char *cfg = lp__path_join(path, "adapter_config.json");
    char *mcfg = lp__path_join(path, "config.json");
    if (cfg && lp__file_exists(cfg)) {
        lp_model *m = NULL;
        lp_adapter *ad = NULL;
        lp_adapter_params ap = lp_adapter_default_params();
        ap.max_rank = (int)max_rank;
        if (model_dir && lp_model_load(model_dir, &m, NULL, NULL, &err)) {
            fprintf(stderr, "error: --model: %s\n", err.msg);
        } else if (lp_adapter_load(path, m, &ap, &ad, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            if (!json && m)
                printf("fits %s: no\n", model_dir);
        } else {
            print_adapter(lp_adapter_get_info(ad), json);
            if (!json && m)
                printf("fits %s: yes\n", model_dir);
            status = 0;
        }
        lp_adapter_free(ad);
        lp_model_free(m);
    } else if (mcfg && lp__file_exists(mcfg)) {
        lp_model *m = NULL;
        if (lp_model_load(path, &m, NULL, NULL, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
        } else {
            const lp_model_config *c = lp_model_get_config(m);
            printf("architecture: %s\nlayers: %d  hidden: %d  heads: %d  kv heads: %d  head dim: %d  ffn: %d  vocab: %d\n",
                   c->architecture, c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn, c->vocab);
            printf("context: %d  rope theta: %g  tied embeddings: %s\nweights read per decode step: %.2f MiB\n",
                   c->max_pos, c->rope_theta, c->tie_embeddings ? "yes" : "no",
                   (double)lp_model_weight_bytes(m) / 1048576.0);
            status = 0;
        }
        lp_model_free(m);
    } else {
        lp_st_file *f = NULL;
        if (lp_st_open(path, LP_ST_MMAP, &f, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
        } else {
            for (int i = 0; i < lp_st_count(f); i++) {
                const lp_st_tensor *t = lp_st_at(f, i);
                printf("%s %s [", t->name, lp_dtype_name(t->dtype));
                for (int d = 0; d < t->ndim; d++)
                    printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
                printf("]\n");
            }
            status = 0;
        }
        lp_st_close(f);
    }
    free(cfg);
    free(mcfg);
    return status;
}
