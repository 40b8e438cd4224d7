/* config.c - parse config.json / generation_config.json into lp_model_config,
 * accepting both rope spellings (transformers-5 `rope_parameters` and the
 * older top-level `rope_theta` + `rope_scaling`). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loraplex/model.h"
#include "util/util.h"

#define CONFIG_MAX_BYTES (4u << 20)

/* Read an integer field; absent/null leaves *out as is unless required. */
static int get_int(json_t *o, const char *key, bool required, long long lo,
                   long long hi, int *out, lp_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return lp_error_set(err, LP_ERR_FORMAT, "config.json: missing field '%s'", key);
        return LP_OK;
    }
    if (!json_is_integer(v))
        return lp_error_set(err, LP_ERR_FORMAT, "config.json: field '%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return lp_error_set(err, LP_ERR_RANGE,
                            "config.json: field '%s' = %lld is out of range [%lld, %lld]",
                            key, x, lo, hi);
    *out = (int)x;
    return LP_OK;
}

static int get_num(json_t *o, const char *key, bool required, double lo, double hi,
                   float *out, lp_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return lp_error_set(err, LP_ERR_FORMAT, "config.json: missing field '%s'", key);
        return LP_OK;
    }
    if (!json_is_number(v))
        return lp_error_set(err, LP_ERR_FORMAT, "config.json: field '%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return lp_error_set(err, LP_ERR_RANGE,
                            "config.json: field '%s' = %g is out of range [%g, %g]", key, x, lo, hi);
    *out = (float)x;
    return LP_OK;
}

static int get_bool(json_t *o, const char *key, bool *out, lp_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return LP_OK;
    if (!json_is_boolean(v))
        return lp_error_set(err, LP_ERR_FORMAT, "config.json: field '%s' must be a boolean", key);
    *out = json_is_true(v);
    return LP_OK;
}

static void add_eos(lp_model_config *cfg, long long id) {
    if (id < 0 || id > INT32_MAX)
        return;
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] == id)
            return;
    if (cfg->n_eos < LP_MAX_EOS)
        cfg->eos_ids[cfg->n_eos++] = (int32_t)id;
}

static int read_eos(json_t *o, const char *file, lp_model_config *cfg, lp_error *err) {
    json_t *v = json_object_get(o, "eos_token_id");
    if (!v || json_is_null(v))
        return LP_OK;
    if (json_is_integer(v)) {
        add_eos(cfg, json_integer_value(v));
        return LP_OK;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e))
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s: eos_token_id[%zu] must be an integer", file, i);
            add_eos(cfg, json_integer_value(e));
        }
        return LP_OK;
    }
    return lp_error_set(err, LP_ERR_FORMAT, "%s: eos_token_id must be an integer or a list", file);
}

/* Rope parameters from either spelling. */
static int read_rope(json_t *root, lp_model_config *cfg, lp_error *err) {
    int rc;
    cfg->rope_theta = 10000.0f;
    cfg->rope_type = LP_ROPE_DEFAULT;
    json_t *params = json_object_get(root, "rope_parameters");
    json_t *scaling = json_object_get(root, "rope_scaling");
    if ((rc = get_num(root, "rope_theta", false, 1e-3, 1e12, &cfg->rope_theta, err)))
        return rc;
    json_t *p = NULL;
    const char *field = NULL;
    if (params && !json_is_null(params)) {
        p = params;
        field = "rope_parameters";
    } else if (scaling && !json_is_null(scaling)) {
        p = scaling;
        field = "rope_scaling";
    }
    if (!p)
        return LP_OK;
    if (!json_is_object(p))
        return lp_error_set(err, LP_ERR_FORMAT, "config.json: '%s' must be an object", field);
    if ((rc = get_num(p, "rope_theta", false, 1e-3, 1e12, &cfg->rope_theta, err)))
        return rc;
    json_t *t = json_object_get(p, "rope_type");
    if (!t || json_is_null(t))
        t = json_object_get(p, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (!strcmp(type, "default")) {
        cfg->rope_type = LP_ROPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        cfg->rope_type = LP_ROPE_LINEAR;
        if ((rc = get_num(p, "factor", true, 1e-6, 1e6, &cfg->rope_factor, err)))
            return lp_error_prefix(err, "%s", field);
    } else if (!strcmp(type, "llama3")) {
        cfg->rope_type = LP_ROPE_LLAMA3;
        if ((rc = get_num(p, "factor", true, 1e-6, 1e6, &cfg->rope_factor, err)) ||
            (rc = get_num(p, "low_freq_factor", true, 1e-6, 1e6, &cfg->rope_low_freq_factor, err)) ||
            (rc = get_num(p, "high_freq_factor", true, 1e-6, 1e6, &cfg->rope_high_freq_factor, err)) ||
            (rc = get_int(p, "original_max_position_embeddings", true, 1, 1 << 30,
                          &cfg->rope_orig_max_pos, err)))
            return lp_error_prefix(err, "%s", field);
        if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor)
            return lp_error_set(err, LP_ERR_RANGE,
                                "config.json: %s: high_freq_factor must exceed low_freq_factor", field);
    } else {
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "config.json: %s.rope_type '%s' is not supported "
                            "(supported: default, linear, llama3)", field, type);
    }
    return LP_OK;
}

int lp_model_config_parse(const char *config_json, const char *gen_config_json,
                          lp_model_config *cfg, lp_error *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = -1;
    json_error_t jerr;
    json_t *root = json_loads(config_json, JSON_REJECT_DUPLICATES, &jerr), *gen = NULL;
    int rc = LP_OK;
    if (!root)
        return lp_error_set(err, LP_ERR_FORMAT, "config.json: invalid JSON at line %d: %s",
                            jerr.line, jerr.text);
    if (!json_is_object(root)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "config.json: top level must be an object");
        goto out;
    }
    json_t *archs = json_object_get(root, "architectures");
    const char *arch = NULL;
    if (json_is_array(archs) && json_array_size(archs) >= 1 &&
        json_is_string(json_array_get(archs, 0)))
        arch = json_string_value(json_array_get(archs, 0));
    if (!arch) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "config.json: 'architectures' must be a list naming the model class");
        goto out;
    }
    if (json_array_size(archs) != 1) {
        rc = lp_error_set(err, LP_ERR_UNSUPPORTED, "config.json: 'architectures' lists %zu classes; exactly one is supported",
                          json_array_size(archs));
        goto out;
    }
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
    if (!strcmp(arch, "LlamaForCausalLM"))
        cfg->arch = LP_ARCH_LLAMA;
    else if (!strcmp(arch, "MistralForCausalLM"))
        cfg->arch = LP_ARCH_MISTRAL;
    else if (!strcmp(arch, "Qwen2ForCausalLM"))
        cfg->arch = LP_ARCH_QWEN2;
    else if (!strcmp(arch, "Qwen3ForCausalLM"))
        cfg->arch = LP_ARCH_QWEN3;
    else {
        rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                          "config.json: architecture '%s' is not supported (supported: LlamaForCausalLM, "
                          "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)", arch);
        goto out;
    }
    static const char *k_rejected[] = {"quantization_config", "num_local_experts", "num_experts",
                                       "moe_intermediate_size"};
    for (size_t i = 0; i < LP_ARRAY_LEN(k_rejected); i++) {
        json_t *v = json_object_get(root, k_rejected[i]);
        if (v && !json_is_null(v)) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED, "config.json: field '%s' is not supported",
                              k_rejected[i]);
            goto out;
        }
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
        rc = lp_error_set(err, LP_ERR_UNSUPPORTED, "config.json: hidden_act '%s' is not supported (only silu)",
                          json_is_string(act) ? json_string_value(act) : "(not a string)");
        goto out;
    }
    cfg->head_dim = 0;
    cfg->max_pos = 2048;
    cfg->rms_eps = 1e-6f;
    if ((rc = get_int(root, "num_hidden_layers", true, 1, 1024, &cfg->n_layers, err)) ||
        (rc = get_int(root, "hidden_size", true, 1, 1 << 20, &cfg->hidden, err)) ||
        (rc = get_int(root, "num_attention_heads", true, 1, 4096, &cfg->n_heads, err)) ||
        (rc = get_int(root, "intermediate_size", true, 1, 1 << 22, &cfg->ffn, err)) ||
        (rc = get_int(root, "vocab_size", true, 1, 1 << 24, &cfg->vocab, err)) ||
        (rc = get_int(root, "max_position_embeddings", false, 1, 1 << 30, &cfg->max_pos, err)) ||
        (rc = get_num(root, "rms_norm_eps", false, 0.0, 1.0, &cfg->rms_eps, err)) ||
        (rc = get_int(root, "head_dim", false, 1, 4096, &cfg->head_dim, err)))
        goto out;
    cfg->n_kv_heads = cfg->n_heads;
    if ((rc = get_int(root, "num_key_value_heads", false, 1, 4096, &cfg->n_kv_heads, err)))
        goto out;
    if (cfg->head_dim == 0) {
        if (cfg->hidden % cfg->n_heads) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "config.json: hidden_size %d is not divisible by num_attention_heads %d",
                              cfg->hidden, cfg->n_heads);
            goto out;
        }
        cfg->head_dim = cfg->hidden / cfg->n_heads;
    }
    if (cfg->head_dim % 2) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "config.json: head_dim %d must be even for RoPE", cfg->head_dim);
        goto out;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        rc = lp_error_set(err, LP_ERR_FORMAT,
                          "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                          cfg->n_heads, cfg->n_kv_heads);
        goto out;
    }
    bool attention_bias = false;
    if ((rc = get_bool(root, "attention_bias", &attention_bias, err)) ||
        (rc = get_bool(root, "mlp_bias", &cfg->mlp_bias, err)) ||
        (rc = get_bool(root, "tie_word_embeddings", &cfg->tie_embeddings, err)))
        goto out;
    switch (cfg->arch) {
    case LP_ARCH_LLAMA:
        cfg->qkv_bias = cfg->o_bias = attention_bias;
        break;
    case LP_ARCH_MISTRAL:
        cfg->mlp_bias = false;
        if ((rc = get_int(root, "sliding_window", false, 1, 1 << 30, &cfg->sliding_window, err)))
            goto out;
        break;
    case LP_ARCH_QWEN2: {
        cfg->qkv_bias = true; /* Qwen2 hard-codes q/k/v bias, no o bias */
        cfg->mlp_bias = false;
        bool use_sw = false;
        if ((rc = get_bool(root, "use_sliding_window", &use_sw, err)))
            goto out;
        if (use_sw) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                              "config.json: use_sliding_window=true is not supported for Qwen2");
            goto out;
        }
        break;
    }
    case LP_ARCH_QWEN3:
        cfg->qkv_bias = cfg->o_bias = attention_bias;
        cfg->mlp_bias = false;
        cfg->qk_norm = true;
        {
            bool use_sw = false;
            if ((rc = get_bool(root, "use_sliding_window", &use_sw, err)))
                goto out;
            if (use_sw) {
                rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                                  "config.json: use_sliding_window=true is not supported for Qwen3");
                goto out;
            }
        }
        break;
    }
    if ((rc = read_rope(root, cfg, err)))
        goto out;
    json_t *bos = json_object_get(root, "bos_token_id");
    if (json_is_integer(bos))
        cfg->bos_id = (int32_t)json_integer_value(bos);
    if ((rc = read_eos(root, "config.json", cfg, err)))
        goto out;
    json_t *dt = json_object_get(root, "torch_dtype");
    if (!dt || json_is_null(dt))
        dt = json_object_get(root, "dtype");
    cfg->dtype = LP_DTYPE_BF16;
    if (json_is_string(dt)) {
        const char *s = json_string_value(dt);
        cfg->dtype = !strcmp(s, "float32") ? LP_DTYPE_F32 : !strcmp(s, "float16") ? LP_DTYPE_F16 : LP_DTYPE_BF16;
    }
    if (gen_config_json) {
        gen = json_loads(gen_config_json, 0, &jerr);
        if (!gen || !json_is_object(gen)) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "generation_config.json: invalid JSON (line %d: %s)",
                              jerr.line, gen ? "not an object" : jerr.text);
            goto out;
        }
        if ((rc = read_eos(gen, "generation_config.json", cfg, err)))
            goto out;
        json_t *gb = json_object_get(gen, "bos_token_id");
        if (cfg->bos_id < 0 && json_is_integer(gb))
            cfg->bos_id = (int32_t)json_integer_value(gb);
    }
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] >= cfg->vocab) {
            rc = lp_error_set(err, LP_ERR_RANGE, "config.json: eos_token_id %d is not below vocab_size %d",
                              cfg->eos_ids[i], cfg->vocab);
            goto out;
        }
out:
    json_decref(root);
    json_decref(gen);
    return rc;
}

int lp_model_config_load(const char *dir, lp_model_config *cfg, lp_error *err) {
    char *cpath = lp__path_join(dir, "config.json");
    char *gpath = lp__path_join(dir, "generation_config.json");
    char *ctext = NULL, *gtext = NULL;
    int rc;
    if (!cpath || !gpath) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = lp__read_file(cpath, CONFIG_MAX_BYTES, &ctext, NULL, err)))
        goto out;
    if (lp__file_exists(gpath) && (rc = lp__read_file(gpath, CONFIG_MAX_BYTES, &gtext, NULL, err)))
        goto out;
    if ((rc = lp_model_config_parse(ctext, gtext, cfg, err)))
        lp_error_prefix(err, "%s", dir);
out:
    free(cpath);
    free(gpath);
    free(ctext);
    free(gtext);
    return rc;
}
