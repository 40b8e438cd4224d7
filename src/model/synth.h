/* synth.h - write random-weight model and adapter directories in the exact
 * formats transformers and PEFT use, for benchmarks and tests (weights
 * cannot be downloaded here). */
#ifndef LP_MODEL_SYNTH_H
#define LP_MODEL_SYNTH_H

#include <stdint.h>

#include "loraplex/model.h"

typedef struct lp_synth_params {
    lp_arch arch;
    int n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab, max_pos;
    float rope_theta;
    bool tie_embeddings;
    lp_dtype dtype;    /* BF16, F16 or F32 */
    uint64_t seed;
} lp_synth_params;

/* Presets: "tiny" (tinylm's shape, fits its tokenizer), "1b" (Llama-3.2-1B
 * shape), "llama3-8b" (Llama-3-8B: 32 layers, hidden 4096, FFN 14336, 8 KV
 * heads, vocab 128256). */
int lp_synth_preset(const char *name, lp_synth_params *p, lp_error *err);
const char *lp_synth_preset_names(void);

/* Write config.json, generation_config.json and safetensors weights (sharded
 * past 2 GiB) to out_dir (created; must not exist or be empty). If
 * tokenizer_dir is given, its tokenizer files are copied (its vocab must fit). */
int lp_synth_model(const lp_synth_params *p, const char *out_dir, const char *tokenizer_dir, lp_error *err);

typedef struct lp_synth_adapter_params {
    int rank;
    float alpha;
    unsigned targets; /* bit m: projection m (q,k,v,o,gate,up,down) */
    lp_dtype dtype;
    uint64_t seed;
} lp_synth_adapter_params;

/* Write a PEFT adapter directory for `model` (random A and B, so it is not a
 * no-op) to out_dir. */
int lp_synth_adapter(const lp_model *model, const lp_synth_adapter_params *p, const char *out_dir, lp_error *err);

#endif
