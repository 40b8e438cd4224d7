/* cmd_generate.c - `loraplex generate`: one prompt, generated on the CPU or
 * CUDA backend (--device) through the same engine the server uses; text
 * streamed to stdout, or one JSON object with ids, text and logprobs. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "loraplex/adapter.h"
#include "loraplex/model.h"
#include "util/util.h"

static const char k_usage[] =
    "usage: loraplex generate [options]\n"
    "\n"
    "Generate a continuation of one prompt.\n"
    "\n"
    "  --model DIR          model directory (default: the bundled models/tinylm)\n"
    "  --device D           auto, cpu or cuda (default auto: cuda when this build has\n"
    "                       the CUDA backend and a GPU is visible, else cpu)\n"
    "  --prompt TEXT        prompt text (tokenized with the model's tokenizer.json)\n"
    "  --prompt-ids 1,2,3   prompt as token ids instead of text\n"
    "  --no-special         do not add the tokenizer's special tokens (e.g. BOS) to --prompt\n"
    "  --max-tokens N       tokens to generate at most (default 64)\n"
    "  --temperature T      0 = greedy (default 0)\n"
    "  --top-p P            nucleus sampling (default 1 = off)\n"
    "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
    "  --min-p P            drop tokens below P x the top probability (default 0 = off)\n"
    "  --seed S             random seed; same seed, same output (default: from the clock)\n"
    "  --ignore-eos         keep generating past end-of-sequence tokens\n"
    "  --logprobs K         report each token's logprob and the K most likely (0-20)\n"
    "  --lora [NAME=]DIR    load a PEFT LoRA adapter (repeatable; NAME defaults to\n"
    "                       the directory's name)\n"
    "  --adapter NAME       which loaded adapter to apply (default: the first --lora;\n"
    "                       'base' for none)\n"
    "  --lora-scale S       multiply the adapter's effect (default 1)\n"
    "  --max-lora-rank N    refuse adapters of a larger rank (default 256)\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --json               print one JSON object: prompt_tokens, tokens, text,\n"
    "                       finish_reason, logprobs\n";

typedef struct gen_state {
    bool json;
    const lp_tokenizer *tok;
    lp_detok *detok;
    json_t *tokens, *logprobs;
    lp_finish_reason finish;
    char errmsg[512];
    int k;
} gen_state;

static void on_token(void *ud, const lp_token_event *ev) {
    gen_state *g = ud;
    if (ev->token >= 0) {
        json_array_append_new(g->tokens, json_integer(ev->token));
        if (g->k >= 0) {
            json_t *top = json_array();
            for (int i = 0; i < ev->n_top; i++)
                json_array_append_new(top, json_pack("{s:i,s:f}", "id", (json_int_t)ev->top[i].id, "logprob",
                                                     (double)ev->top[i].logprob));
            json_array_append_new(g->logprobs, json_pack("{s:i,s:f,s:o}", "id", (json_int_t)ev->token,
                                                         "logprob", (double)ev->logprob, "top_logprobs", top));
        }
        if (!g->json && g->detok) {
            char *piece = NULL;
            size_t n = 0;
            if (lp_detok_push(g->detok, ev->token, &piece, &n, NULL) == LP_OK && n) {
                fwrite(piece, 1, n, stdout);
                fflush(stdout);
            }
            free(piece);
        } else if (!g->json) {
            printf("%s%d", json_array_size(g->tokens) > 1 ? " " : "", ev->token);
            fflush(stdout);
        }
    }
    if (ev->finish != LP_FINISH_NONE) {
        g->finish = ev->finish;
        if (ev->error)
            snprintf(g->errmsg, sizeof g->errmsg, "%s", ev->error);
    }
}

#define MAX_LORAS 64

int lp_cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *prompt = NULL, *prompt_ids = NULL, *adapter_name = NULL;
    const char *device = "auto";
    const char *lora_specs[MAX_LORAS];
    int n_loras = 0;
    lp_adapter *loras[MAX_LORAS] = {0};
    double lora_scale = 1.0;
    long long max_rank = 256;
    long long max_tokens = 64, top_k = 0, seed = 0, k = -1, threads = 0;
    double temperature = 0.0, top_p = 1.0, min_p = 0.0;
    bool has_seed = false, json = false, ignore_eos = false, add_special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
        } else if (!strcmp(a, "--no-special")) {
            add_special = false;
        } else if (!(v = lp_cli_value(argc, argv, &i))) {
            return 2;
        } else if (!strcmp(a, "--model")) {
            model_dir = v;
        } else if (!strcmp(a, "--device")) {
            if (!lp_backend_resolve(v)) {
                fprintf(stderr, "error: --device: unknown device '%s' (expected auto, cpu or cuda)\n", v);
                return 2;
            }
            device = v;
        } else if (!strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "--prompt-ids")) {
            prompt_ids = v;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!lp_cli_int(a, v, 1, 1 << 24, &max_tokens))
                return 2;
        } else if (!strcmp(a, "--temperature")) {
            if (!lp_cli_float(a, v, 0, 100, &temperature))
                return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (!lp_cli_float(a, v, 1e-9, 1, &top_p))
                return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!lp_cli_int(a, v, -1, 1 << 24, &top_k))
                return 2;
        } else if (!strcmp(a, "--min-p")) {
            if (!lp_cli_float(a, v, 0, 1, &min_p))
                return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!lp_cli_int(a, v, 0, INT64_MAX, &seed))
                return 2;
            has_seed = true;
        } else if (!strcmp(a, "--logprobs")) {
            if (!lp_cli_int(a, v, 0, LP_MAX_TOP_LOGPROBS, &k))
                return 2;
        } else if (!strcmp(a, "--lora")) {
            if (n_loras == MAX_LORAS) {
                fprintf(stderr, "error: at most %d --lora\n", MAX_LORAS);
                return 2;
            }
            lora_specs[n_loras++] = v;
        } else if (!strcmp(a, "--adapter")) {
            adapter_name = v;
        } else if (!strcmp(a, "--lora-scale")) {
            if (!lp_cli_float(a, v, -100, 100, &lora_scale))
                return 2;
        } else if (!strcmp(a, "--max-lora-rank")) {
            if (!lp_cli_int(a, v, 1, 1 << 16, &max_rank))
                return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!lp_cli_int(a, v, 0, 4096, &threads))
                return 2;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
    }
    if (!prompt == !prompt_ids) {
        fprintf(stderr, "error: give exactly one of --prompt and --prompt-ids\n");
        return 2;
    }
    if (!model_dir)
        model_dir = lp_cli_default_model();

    int status = 1;
    lp_error err = {0};
    lp_model *model = NULL;
    lp_backend *be = NULL;
    lp_engine *eng = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    gen_state g = {.json = json, .k = (int)k, .tokens = json_array(), .logprobs = json_array()};
    if (lp_model_load(model_dir, &model, NULL, NULL, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto out;
    }
    const lp_model_config *cfg = lp_model_get_config(model);
    g.tok = lp_model_tokenizer(model);
    /* adapters: NAME=DIR or DIR (name = last path component) */
    int use_slot = -1;
    lp_adapter_params ap = lp_adapter_default_params();
    ap.max_rank = (int)max_rank;
    for (int i = 0; i < n_loras; i++) {
        const char *spec = lora_specs[i], *eq = strchr(spec, '=');
        const char *dir = eq ? eq + 1 : spec;
        char name[256];
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
        } else {
            size_t n = strlen(dir);
            while (n > 1 && dir[n - 1] == '/')
                n--;
            size_t b = n;
            while (b > 0 && dir[b - 1] != '/')
                b--;
            snprintf(name, sizeof name, "%.*s", (int)(n - b), dir + b);
        }
        if (lp_adapter_load(dir, model, &ap, &loras[i], &err)) {
            fprintf(stderr, "error: --lora %s: %s\n", spec, err.msg);
            goto out;
        }
        if ((adapter_name && !strcmp(adapter_name, name)) || (!adapter_name && i == 0))
            use_slot = i;
    }
    if (adapter_name && strcmp(adapter_name, "base") && use_slot < 0) {
        fprintf(stderr, "error: --adapter %s: no --lora of that name\n", adapter_name);
        goto out;
    }
    if (prompt) {
        if (!g.tok) {
            fprintf(stderr, "error: %s has no tokenizer.json; use --prompt-ids\n", model_dir);
            goto out;
        }
        if (lp_tokenizer_encode(g.tok, prompt, strlen(prompt), add_special, &ids, &n_ids, &err)) {
            fprintf(stderr, "error: --prompt: %s\n", err.msg);
            goto out;
        }
    } else {
        int n = 0;
        if (!lp_cli_int_list("--prompt-ids", prompt_ids, &ids, &n)) {
            status = 2;
            goto out;
        }
        n_ids = (size_t)n;
    }
    if (n_ids == 0) {
        fprintf(stderr, "error: the prompt is empty after tokenization\n");
        goto out;
    }
    int64_t total = (int64_t)n_ids + max_tokens;
    if (total > cfg->max_pos) {
        fprintf(stderr, "error: --max-tokens: prompt (%zu tokens) + max tokens (%lld) exceeds the model's "
                        "context length %d\n", n_ids, max_tokens, cfg->max_pos);
        goto out;
    }
    lp_backend_params bp = lp_backend_default_params();
    bp.block_size = 16;
    bp.n_kv_blocks = (int)((total + bp.block_size - 1) / bp.block_size);
    bp.max_rows = 1;
    bp.max_logit_rows = 1;
    bp.max_tokens = 512;
    bp.n_threads = (int)threads;
    bp.max_adapters = n_loras;
    bp.max_lora_rank = (int)max_rank;
    if (lp_backend_new(device, model, &bp, &be, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto out;
    }
    for (int i = 0; i < n_loras; i++)
        if (lp_backend_adapter_load(be, i, loras[i], &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto out;
        }
    lp_engine_params ep = lp_engine_default_params();
    ep.max_num_seqs = 1;
    ep.max_model_len = (int)total;
    if (lp_engine_new(be, &ep, &eng, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto out;
    }
    lp_request req = lp_request_default();
    req.prompt = ids;
    req.n_prompt = (int)n_ids;
    req.max_tokens = (int)max_tokens;
    req.sampling.temperature = (float)temperature;
    req.sampling.top_p = (float)top_p;
    req.sampling.top_k = (int)top_k;
    req.sampling.min_p = (float)min_p;
    req.sampling.seed = (uint64_t)seed;
    req.sampling.has_seed = has_seed;
    req.ignore_eos = ignore_eos;
    req.logprobs = (int)k;
    req.adapter = use_slot;
    req.adapter_scale = (float)lora_scale;
    req.cb = on_token;
    req.ud = &g;
    if (g.tok && !json)
        g.detok = lp_detok_new(g.tok, true);
    if (lp_engine_submit(eng, &req, NULL, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto out;
    }
    int left;
    while ((left = lp_engine_step(eng, &err)) > 0)
        ;
    if (left < 0 || g.finish == LP_FINISH_ERROR) {
        fprintf(stderr, "error: %s\n", g.errmsg[0] ? g.errmsg : err.msg);
        goto out;
    }
    if (json) {
        json_t *out = json_object();
        json_t *pt = json_array();
        for (size_t i = 0; i < n_ids; i++)
            json_array_append_new(pt, json_integer(ids[i]));
        json_object_set_new(out, "prompt_tokens", pt);
        json_object_set(out, "tokens", g.tokens);
        json_t *text = json_null();
        if (g.tok) {
            size_t n = json_array_size(g.tokens), len = 0;
            int32_t *gen = lp__malloc_array(n ? n : 1, sizeof(int32_t));
            char *s = NULL;
            for (size_t i = 0; gen && i < n; i++)
                gen[i] = (int32_t)json_integer_value(json_array_get(g.tokens, i));
            if (gen && lp_tokenizer_decode(g.tok, gen, n, true, &s, &len, &err) == LP_OK)
                text = json_stringn(s, len);
            free(gen);
            free(s);
        }
        json_object_set_new(out, "text", text ? text : json_null());
        json_object_set_new(out, "finish_reason", json_string(lp_finish_reason_name(g.finish)));
        if (k >= 0)
            json_object_set(out, "logprobs", g.logprobs);
        json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9) | JSON_ENSURE_ASCII);
        fputc('\n', stdout);
        json_decref(out);
    } else {
        if (g.detok) {
            char *rest = NULL;
            size_t n = 0;
            if (lp_detok_flush(g.detok, &rest, &n, NULL) == LP_OK && n)
                fwrite(rest, 1, n, stdout);
            free(rest);
        }
        fputc('\n', stdout);
    }
    status = 0;
out:
    lp_detok_free(g.detok);
    json_decref(g.tokens);
    json_decref(g.logprobs);
    free(ids);
    lp_engine_free(eng);
    lp_backend_free(be);
    for (int i = 0; i < n_loras; i++)
        lp_adapter_free(loras[i]);
    lp_model_free(model);
    return status;
}
