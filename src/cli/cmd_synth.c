/* cmd_synth.c - `loraplex synth`: random-weight model (or adapter) directories
 * for benchmarks and tests. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "model/synth.h"

static const char k_usage[] =
    "usage: loraplex synth --out DIR [--preset NAME] [shape options]\n"
    "       loraplex synth --adapter --model DIR --out DIR [--rank R] [--alpha A] [--targets q,k,v,o,gate,up,down]\n"
    "\n"
    "Write a random-weight model directory (config.json, generation_config.json,\n"
    "safetensors) that loraplex and transformers load, or a PEFT adapter for a model.\n"
    "\n"
    "  --preset NAME      tiny (default; tinylm's shape), 1b, llama3-8b\n"
    "  --arch A           llama, mistral, qwen2, qwen3\n"
    "  --layers N  --hidden N  --heads N  --kv-heads N  --head-dim N  --ffn N  --vocab N\n"
    "  --max-pos N        max_position_embeddings\n"
    "  --tie              tie lm_head to the embeddings\n"
    "  --dtype T          bf16 (default), f16, f32\n"
    "  --seed S           weights are a function of the seed (default 1)\n"
    "  --tokenizer DIR    copy DIR's tokenizer files (its vocab must fit --vocab)\n"
    "  --adapter          write an adapter instead (needs --model)\n";

static bool parse_dtype(const char *s, lp_dtype *t) {
    if (!strcmp(s, "bf16"))
        *t = LP_DTYPE_BF16;
    else if (!strcmp(s, "f16"))
        *t = LP_DTYPE_F16;
    else if (!strcmp(s, "f32"))
        *t = LP_DTYPE_F32;
    else {
        fprintf(stderr, "error: --dtype must be bf16, f16 or f32, got '%s'\n", s);
        return false;
    }
    return true;
}

int lp_cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny", *tok = NULL, *model_dir = NULL, *targets = "q,k,v,o,gate,up,down";
    bool adapter = false;
    lp_error err = {0};
    lp_synth_params p;
    /* the preset is applied first, then the shape flags override it */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
    if (lp_synth_preset(preset, &p, &err)) {
        fprintf(stderr, "error: --preset: %s\n", err.msg);
        return 2;
    }
    lp_synth_adapter_params ap = {.rank = 16, .alpha = 32.0f, .targets = 0, .dtype = LP_DTYPE_BF16, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        long long x;
        double f;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--tie")) {
            p.tie_embeddings = true;
            continue;
        } else if (!strcmp(a, "--adapter")) {
            adapter = true;
            continue;
        }
        if (!(v = lp_cli_value(argc, argv, &i)))
            return 2;
#define INTFLAG(flag, field, lo, hi)                                                                                   \
    else if (!strcmp(a, flag)) {                                                                                       \
        if (!lp_cli_int(a, v, lo, hi, &x))                                                                             \
            return 2;                                                                                                  \
        field = (int)x;                                                                                                \
    }
        if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--preset"))
            ;
        else if (!strcmp(a, "--tokenizer"))
            tok = v;
        else if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--targets"))
            targets = v;
        INTFLAG("--layers", p.n_layers, 1, 1024)
        INTFLAG("--hidden", p.hidden, 2, 1 << 16)
        INTFLAG("--heads", p.n_heads, 1, 1024)
        INTFLAG("--kv-heads", p.n_kv_heads, 1, 1024)
        INTFLAG("--head-dim", p.head_dim, 2, 1024)
        INTFLAG("--ffn", p.ffn, 1, 1 << 20)
        INTFLAG("--vocab", p.vocab, 2, 1 << 22)
        INTFLAG("--max-pos", p.max_pos, 1, 1 << 24)
        INTFLAG("--rank", ap.rank, 1, 4096)
        else if (!strcmp(a, "--seed")) {
            if (!lp_cli_int(a, v, 0, INT64_MAX, &x))
                return 2;
            p.seed = ap.seed = (uint64_t)x;
        } else if (!strcmp(a, "--alpha")) {
            if (!lp_cli_float(a, v, 1e-6, 1e6, &f))
                return 2;
            ap.alpha = (float)f;
        } else if (!strcmp(a, "--dtype")) {
            if (!parse_dtype(v, &p.dtype))
                return 2;
            ap.dtype = p.dtype;
        } else if (!strcmp(a, "--arch")) {
            if (!strcmp(v, "llama"))
                p.arch = LP_ARCH_LLAMA;
            else if (!strcmp(v, "mistral"))
                p.arch = LP_ARCH_MISTRAL;
            else if (!strcmp(v, "qwen2"))
                p.arch = LP_ARCH_QWEN2;
            else if (!strcmp(v, "qwen3"))
                p.arch = LP_ARCH_QWEN3;
            else {
                fprintf(stderr, "error: --arch must be llama, mistral, qwen2 or qwen3\n");
                return 2;
            }
        } else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
#undef INTFLAG
    }
    if (!out) {
        fprintf(stderr, "error: --out DIR is required\n\n%s", k_usage);
        return 2;
    }
    if (adapter) {
        if (!model_dir) {
            fprintf(stderr, "error: --adapter needs --model DIR\n");
            return 2;
        }
        static const char *names[] = {"q", "k", "v", "o", "gate", "up", "down"};
        char buf[256];
        snprintf(buf, sizeof buf, "%s", targets);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int found = -1;
            for (int m = 0; m < 7; m++) {
                size_t n = strlen(names[m]);
                if (!strcmp(t, names[m]) || (!strncmp(t, names[m], n) && !strcmp(t + n, "_proj")))
                    found = m;
            }
            if (found < 0) {
                fprintf(stderr, "error: --targets: unknown projection '%s'\n", t);
                return 2;
            }
            ap.targets |= 1u << found;
        }
        lp_model *m = NULL;
        if (lp_model_load(model_dir, &m, NULL, NULL, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            return 1;
        }
        int rc = lp_synth_adapter(m, &ap, out, &err);
        lp_model_free(m);
        if (rc) {
            fprintf(stderr, "error: %s\n", err.msg);
            return 1;
        }
        printf("wrote rank-%d adapter for %s to %s\n", ap.rank, model_dir, out);
        return 0;
    }
    if (lp_synth_model(&p, out, tok, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s model (%d layers, hidden %d, ffn %d, vocab %d) to %s\n", preset, p.n_layers, p.hidden, p.ffn,
           p.vocab, out);
    return 0;
}
