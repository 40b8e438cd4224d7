/* synth.c - random-weight models and adapters (see synth.h). */
#include "model/synth.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/checkpoint.h"
#include "model/model-impl.h"
#include "util/util.h"

static const char *arch_class(lp_arch a) {
    switch (a) {
    case LP_ARCH_MISTRAL: return "MistralForCausalLM";
    case LP_ARCH_QWEN2: return "Qwen2ForCausalLM";
    case LP_ARCH_QWEN3: return "Qwen3ForCausalLM";
    default: return "LlamaForCausalLM";
    }
}

static const char *arch_type(lp_arch a) {
    switch (a) {
    case LP_ARCH_MISTRAL: return "mistral";
    case LP_ARCH_QWEN2: return "qwen2";
    case LP_ARCH_QWEN3: return "qwen3";
    default: return "llama";
    }
}

const char *lp_synth_preset_names(void) { return "tiny, 1b, llama3-8b"; }

int lp_synth_preset(const char *name, lp_synth_params *p, lp_error *err) {
    memset(p, 0, sizeof *p);
    p->arch = LP_ARCH_LLAMA;
    p->dtype = LP_DTYPE_BF16;
    p->seed = 1;
    if (!strcmp(name, "tiny")) {
        *p = (lp_synth_params){.arch = LP_ARCH_LLAMA, .n_layers = 6, .hidden = 256, .n_heads = 8, .n_kv_heads = 4,
                               .head_dim = 32, .ffn = 704, .vocab = 2048, .max_pos = 1024, .rope_theta = 10000.0f,
                               .dtype = LP_DTYPE_BF16, .seed = 1};
    } else if (!strcmp(name, "1b")) {
        *p = (lp_synth_params){.arch = LP_ARCH_LLAMA, .n_layers = 16, .hidden = 2048, .n_heads = 32, .n_kv_heads = 8,
                               .head_dim = 64, .ffn = 8192, .vocab = 128256, .max_pos = 8192, .rope_theta = 500000.0f,
                               .tie_embeddings = true, .dtype = LP_DTYPE_BF16, .seed = 1};
    } else if (!strcmp(name, "llama3-8b")) {
        *p = (lp_synth_params){.arch = LP_ARCH_LLAMA, .n_layers = 32, .hidden = 4096, .n_heads = 32, .n_kv_heads = 8,
                               .head_dim = 128, .ffn = 14336, .vocab = 128256, .max_pos = 8192,
                               .rope_theta = 500000.0f, .dtype = LP_DTYPE_BF16, .seed = 1};
    } else {
        return lp_error_set(err, LP_ERR_INVALID, "unknown preset '%s' (known: %s)", name, lp_synth_preset_names());
    }
    return LP_OK;
}

/* Fill n elements of dtype t with uniform values of standard deviation std
 * around mean, deterministically from (seed, stream). */
static void *random_tensor(int64_t n, lp_dtype t, float mean, float std, uint64_t seed, uint64_t stream) {
    void *buf = lp__malloc_array((size_t)n, lp_dtype_size(t));
    if (!buf)
        return NULL;
    float a = std * sqrtf(3.0f);
    const int64_t chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > 4 * chunk)
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        uint64_t s = seed * 0x9e3779b97f4a7c15ull ^ (stream << 32) ^ (uint64_t)(c0 / chunk) * 0xbf58476d1ce4e5b9ull;
        s |= 1;
        int64_t end = c0 + chunk < n ? c0 + chunk : n;
        for (int64_t i = c0; i < end; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            float u = (float)(s >> 40) * (1.0f / 16777216.0f); /* [0,1) */
            float v = mean + a * (2.0f * u - 1.0f);
            if (t == LP_DTYPE_F32)
                ((float *)buf)[i] = v;
            else if (t == LP_DTYPE_F16)
                ((uint16_t *)buf)[i] = lp__f32_to_f16(v);
            else
                ((uint16_t *)buf)[i] = lp__f32_to_bf16(v);
        }
    }
    return buf;
}

static int write_json(const char *dir, const char *name, json_t *obj, lp_error *err) {
    char *path = lp__path_join(dir, name);
    char *text = json_dumps(obj, JSON_INDENT(2));
    int rc = path && text ? lp__write_file_atomic(path, text, strlen(text), err)
                          : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    free(path);
    free(text);
    return rc;
}

static int add_random(lp_ckpt_writer *w, const char *name, int ndim, int64_t d0, int64_t d1, lp_dtype t, float mean,
                      float std, uint64_t seed, uint64_t *stream, lp_error *err) {
    int64_t shape[2] = {d0, d1};
    int64_t n = ndim == 1 ? d0 : d0 * d1;
    void *buf = random_tensor(n, t, mean, std, seed, (*stream)++);
    if (!buf)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory for %s", name);
    return lp_ckpt_writer_add(w, name, t, ndim, shape, buf, (uint64_t)n * lp_dtype_size(t), true, err);
}

int lp_synth_model(const lp_synth_params *p, const char *out_dir, const char *tokenizer_dir, lp_error *err) {
    if (p->n_layers < 1 || p->hidden < 2 || p->n_heads < 1 || p->n_kv_heads < 1 || p->ffn < 1 || p->vocab < 2 ||
        p->n_heads % p->n_kv_heads)
        return lp_error_set(err, LP_ERR_INVALID, "synth: invalid shape (layers, hidden, heads, kv heads, ffn, vocab)");
    int hd = p->head_dim ? p->head_dim : p->hidden / p->n_heads;
    if (hd < 2 || hd % 2)
        return lp_error_set(err, LP_ERR_INVALID, "synth: head_dim must be even");
    int rc = lp__prepare_empty_dir(out_dir, NULL, err);
    if (rc)
        return rc;
    const char *dt = p->dtype == LP_DTYPE_F32 ? "float32" : p->dtype == LP_DTYPE_F16 ? "float16" : "bfloat16";
    json_t *cfg = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:b,s:s,s:b,s:f,s:b}",
                            "architectures", arch_class(p->arch), "model_type", arch_type(p->arch), "num_hidden_layers",
                            p->n_layers, "hidden_size", p->hidden, "num_attention_heads", p->n_heads,
                            "num_key_value_heads", p->n_kv_heads, "head_dim", hd, "intermediate_size", p->ffn,
                            "vocab_size", p->vocab, "max_position_embeddings", p->max_pos ? p->max_pos : 4096,
                            "rms_norm_eps", 1e-5, "rope_theta", (double)p->rope_theta, "hidden_act", "silu",
                            "tie_word_embeddings", p->tie_embeddings, "torch_dtype", dt, "attention_bias", 0,
                            "initializer_range", 0.02, "use_cache", 1);
    json_object_set_new(cfg, "bos_token_id", json_integer(0));
    json_object_set_new(cfg, "eos_token_id", json_integer(1));
    json_t *gen = json_pack("{s:i,s:i}", "bos_token_id", 0, "eos_token_id", 1);
    if (!cfg || !gen) {
        json_decref(cfg);
        json_decref(gen);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    lp_ckpt_writer *w = lp_ckpt_writer_new(out_dir, 0);
    uint64_t stream = 1, seed = p->seed;
    int64_t D = p->hidden, Q = (int64_t)p->n_heads * hd, KV = (int64_t)p->n_kv_heads * hd;
    float wstd = 0.02f, ostd = 0.02f / sqrtf(2.0f * (float)p->n_layers);
    rc = w ? add_random(w, "model.embed_tokens.weight", 2, p->vocab, D, p->dtype, 0, wstd, seed, &stream, err)
           : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (int l = 0; rc == LP_OK && l < p->n_layers; l++) {
        char n[128];
#define ADD(ndim, d0, d1, mean, std, ...)                                                                              \
    if (rc == LP_OK) {                                                                                                 \
        snprintf(n, sizeof n, __VA_ARGS__);                                                                            \
        rc = add_random(w, n, ndim, d0, d1, p->dtype, mean, std, seed, &stream, err);                                  \
    }
        ADD(1, D, 0, 1.0f, 0.05f, "model.layers.%d.input_layernorm.weight", l);
        ADD(2, Q, D, 0, wstd, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(2, KV, D, 0, wstd, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(2, KV, D, 0, wstd, "model.layers.%d.self_attn.v_proj.weight", l);
        if (p->arch == LP_ARCH_QWEN2) {
            ADD(1, Q, 0, 0, wstd, "model.layers.%d.self_attn.q_proj.bias", l);
            ADD(1, KV, 0, 0, wstd, "model.layers.%d.self_attn.k_proj.bias", l);
            ADD(1, KV, 0, 0, wstd, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        if (p->arch == LP_ARCH_QWEN3) {
            ADD(1, hd, 0, 1.0f, 0.05f, "model.layers.%d.self_attn.q_norm.weight", l);
            ADD(1, hd, 0, 1.0f, 0.05f, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        ADD(2, D, Q, 0, ostd, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(1, D, 0, 1.0f, 0.05f, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(2, p->ffn, D, 0, wstd, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(2, p->ffn, D, 0, wstd, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(2, D, p->ffn, 0, ostd, "model.layers.%d.mlp.down_proj.weight", l);
#undef ADD
    }
    if (rc == LP_OK) {
        int64_t shape[1] = {D};
        void *norm = random_tensor(D, p->dtype, 1.0f, 0.05f, seed, stream++);
        rc = norm ? lp_ckpt_writer_add(w, "model.norm.weight", p->dtype, 1, shape, norm,
                                       (uint64_t)D * lp_dtype_size(p->dtype), true, err)
                  : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if (rc == LP_OK && !p->tie_embeddings)
        rc = add_random(w, "lm_head.weight", 2, p->vocab, D, p->dtype, 0, wstd, seed, &stream, err);
    if (rc == LP_OK)
        rc = lp_ckpt_writer_finish(w, err);
    lp_ckpt_writer_free(w);
    if (rc == LP_OK && p->arch == LP_ARCH_QWEN2)
        json_object_set_new(cfg, "use_sliding_window", json_false());
    if (rc == LP_OK)
        rc = write_json(out_dir, "config.json", cfg, err);
    if (rc == LP_OK)
        rc = write_json(out_dir, "generation_config.json", gen, err);
    json_decref(cfg);
    json_decref(gen);
    static const char *k_tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; rc == LP_OK && tokenizer_dir && i < LP_ARRAY_LEN(k_tok_files); i++) {
        char *src = lp__path_join(tokenizer_dir, k_tok_files[i]), *dst = lp__path_join(out_dir, k_tok_files[i]);
        char *buf = NULL;
        size_t len = 0;
        if (src && dst && lp__file_exists(src) && (rc = lp__read_file(src, 256u << 20, &buf, &len, err)) == LP_OK)
            rc = lp__write_file_atomic(dst, buf, len, err);
        free(buf);
        free(src);
        free(dst);
    }
    return rc;
}

int lp_synth_adapter(const lp_model *model, const lp_synth_adapter_params *p, const char *out_dir, lp_error *err) {
    const lp_model_config *c = &model->cfg;
    if (p->rank < 1 || !p->targets)
        return lp_error_set(err, LP_ERR_INVALID, "synth adapter: rank must be positive and a target given");
    int rc = lp__prepare_empty_dir(out_dir, NULL, err);
    if (rc)
        return rc;
    lp_ckpt_writer *w = lp_ckpt_writer_new(out_dir, 0);
    uint64_t stream = 1;
    json_t *targets = json_array();
    for (int m = 0; m < LP_MOD_COUNT; m++)
        if (p->targets & (1u << m))
            json_array_append_new(targets, json_string(lp__module_names[m]));
    for (int l = 0; w && rc == LP_OK && l < c->n_layers; l++)
        for (int m = 0; rc == LP_OK && m < LP_MOD_COUNT; m++) {
            if (!(p->targets & (1u << m)))
                continue;
            int64_t rows, cols;
            lp__module_shape(c, (lp__module)m, &rows, &cols);
            char n[160];
            const char *blk = m <= LP_MOD_O ? "self_attn" : "mlp";
            snprintf(n, sizeof n, "base_model.model.model.layers.%d.%s.%s.lora_A.weight", l, blk, lp__module_names[m]);
            rc = add_random(w, n, 2, p->rank, cols, p->dtype, 0, 1.0f / sqrtf((float)cols), p->seed, &stream, err);
            snprintf(n, sizeof n, "base_model.model.model.layers.%d.%s.%s.lora_B.weight", l, blk, lp__module_names[m]);
            if (rc == LP_OK)
                rc = add_random(w, n, 2, rows, p->rank, p->dtype, 0, 0.02f, p->seed, &stream, err);
        }
    if (!w)
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    if (rc == LP_OK)
        rc = lp_ckpt_writer_finish(w, err);
    lp_ckpt_writer_free(w);
    if (rc == LP_OK) {
        /* PEFT names the single weights file adapter_model.safetensors */
        char *from = lp__path_join(out_dir, "model.safetensors"), *to = lp__path_join(out_dir, "adapter_model.safetensors");
        if (!from || !to || rename(from, to) != 0)
            rc = lp_error_set(err, LP_ERR_IO, "%s: cannot name adapter_model.safetensors (adapter too large?)", out_dir);
        free(from);
        free(to);
    }
    if (rc == LP_OK) {
        json_t *cfg = json_pack("{s:s,s:i,s:f,s:o,s:s,s:b,s:b,s:f,s:s,s:n,s:b}", "peft_type", "LORA", "r", p->rank,
                                "lora_alpha", (double)p->alpha, "target_modules", targets, "bias", "none", "use_rslora",
                                0, "use_dora", 0, "lora_dropout", 0.0, "base_model_name_or_path", model->dir,
                                "modules_to_save", "fan_in_fan_out", 0);
        targets = NULL;
        rc = cfg ? write_json(out_dir, "adapter_config.json", cfg, err) : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        json_decref(cfg);
    }
    json_decref(targets);
    return rc;
}
