/* model.h - a Hugging Face model directory (config.json, generation_config.json,
 * safetensors weights, tokenizer.json) loaded for inference. */
#ifndef LORAPLEX_MODEL_H
#define LORAPLEX_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "loraplex/dtype.h"
#include "loraplex/status.h"
#include "loraplex/tokenizer.h"

typedef enum {
    LP_ARCH_LLAMA = 0, /* LlamaForCausalLM */
    LP_ARCH_MISTRAL,   /* MistralForCausalLM */
    LP_ARCH_QWEN2,     /* Qwen2ForCausalLM: q/k/v bias */
    LP_ARCH_QWEN3,     /* Qwen3ForCausalLM: per-head q_norm/k_norm */
} lp_arch;

typedef enum {
    LP_ROPE_DEFAULT = 0,
    LP_ROPE_LINEAR,
    LP_ROPE_LLAMA3,
} lp_rope_type;

#define LP_MAX_EOS 8

/* Everything the forward pass needs from config.json (+ generation_config.json). */
typedef struct lp_model_config {
    lp_arch arch;
    char architecture[64];  /* as written, e.g. "LlamaForCausalLM" */
    int n_layers;           /* num_hidden_layers */
    int hidden;             /* hidden_size */
    int n_heads;            /* num_attention_heads */
    int n_kv_heads;         /* num_key_value_heads (GQA when < n_heads) */
    int head_dim;           /* explicit head_dim or hidden / n_heads */
    int ffn;                /* intermediate_size */
    int vocab;              /* vocab_size */
    int max_pos;            /* max_position_embeddings */
    int sliding_window;     /* 0 = full attention */
    float rms_eps;          /* rms_norm_eps */
    float rope_theta;
    lp_rope_type rope_type;
    float rope_factor;           /* linear, llama3 */
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;       /* llama3 original_max_position_embeddings */
    bool qkv_bias;          /* q/k/v projections have a bias */
    bool o_bias;            /* o projection has a bias */
    bool mlp_bias;          /* gate/up/down have biases */
    bool qk_norm;           /* Qwen3 per-head RMSNorm on q and k */
    bool tie_embeddings;    /* lm_head shares embed_tokens */
    int32_t bos_id;         /* -1 if none */
    int n_eos;
    int32_t eos_ids[LP_MAX_EOS]; /* union of config and generation_config */
    lp_dtype dtype;         /* declared torch dtype (informational) */
} lp_model_config;

/* Parse DIR/config.json and, if present, DIR/generation_config.json.
 * Unsupported architectures, activations or rope types are rejected with a
 * message naming the field and value. */
int lp_model_config_load(const char *dir, lp_model_config *cfg, lp_error *err);
/* Same from JSON text (generation_config may be NULL); for tests and fuzzing. */
int lp_model_config_parse(const char *config_json, const char *gen_config_json,
                          lp_model_config *cfg, lp_error *err);

typedef struct lp_model lp_model;

/* Load a model directory: config, weights (mmapped, kept in their file dtype),
 * tokenizer (optional: a directory without tokenizer.json loads, and
 * lp_model_tokenizer returns NULL). Shapes and dtypes of every tensor are
 * checked against the config. `progress` (may be NULL) is called with the
 * fraction of weights validated, for start-up progress bars. */
int lp_model_load(const char *dir, lp_model **out,
                  void (*progress)(double frac, void *ud), void *ud,
                  lp_error *err);
void lp_model_free(lp_model *m);

/* Borrowed pointers, valid until lp_model_free. */
const lp_model_config *lp_model_get_config(const lp_model *m);
const lp_tokenizer *lp_model_tokenizer(const lp_model *m);
const char *lp_model_dir(const lp_model *m);
/* Bytes of weight data the forward pass reads per decode step. */
uint64_t lp_model_weight_bytes(const lp_model *m);
bool lp_model_is_eos(const lp_model *m, int32_t id);

#endif
