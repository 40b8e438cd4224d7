/* model-impl.h - the loaded model's weight views, shared with the backends. */
#ifndef LP_MODEL_IMPL_H
#define LP_MODEL_IMPL_H

#include "format/safetensors.h"
#include "loraplex/model.h"

/* A weight matrix viewed in place (mmapped, file dtype): rows x cols,
 * row-major, row stride = cols. NULL data = absent. */
typedef struct lp__weight {
    const void *data;
    lp_dtype dtype;
    int64_t rows, cols;
} lp__weight;

/* The projections a LoRA adapter can target, in a fixed order. */
typedef enum {
    LP_MOD_Q = 0,
    LP_MOD_K,
    LP_MOD_V,
    LP_MOD_O,
    LP_MOD_GATE,
    LP_MOD_UP,
    LP_MOD_DOWN,
    LP_MOD_COUNT
} lp__module;

extern const char *const lp__module_names[LP_MOD_COUNT]; /* "q_proj", ... */

typedef struct lp__layer {
    float *attn_norm;              /* (hidden) input_layernorm, fp32 copy */
    float *ffn_norm;               /* (hidden) post_attention_layernorm */
    float *q_norm, *k_norm;        /* (head_dim) Qwen3 only */
    lp__weight proj[LP_MOD_COUNT]; /* q (H*hd, hidden), k/v (KV*hd, hidden),
                                      o (hidden, H*hd), gate/up (ffn, hidden),
                                      down (hidden, ffn) */
    float *bias[LP_MOD_COUNT];     /* (rows) fp32 copies, NULL when absent */
} lp__layer;

struct lp_model {
    char *dir;
    lp_model_config cfg;
    lp_st_set *weights;      /* owns the mapping */
    lp_tokenizer *tok;       /* NULL if the directory has no tokenizer.json */
    lp__weight embed;        /* (vocab, hidden) */
    lp__weight lm_head;      /* (vocab, hidden); = embed when tied */
    float *final_norm;       /* (hidden) */
    lp__layer *layers;       /* n_layers */
    uint64_t weight_bytes;   /* bytes read per decode step */
};

/* Rows and columns of projection `m` for this config. */
void lp__module_shape(const lp_model_config *cfg, lp__module m, int64_t *rows, int64_t *cols);

#endif
