/* adapter.h - PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors
 * or adapter_model.bin): loading, validation against a base model, and the
 * numbers a user needs to know about one. */
#ifndef LORAPLEX_ADAPTER_H
#define LORAPLEX_ADAPTER_H

#include <stdbool.h>
#include <stdint.h>

#include "loraplex/model.h"
#include "loraplex/status.h"

typedef struct lp_adapter lp_adapter;

typedef struct lp_adapter_params {
    int max_rank;      /* adapters with a larger rank are refused (default 256) */
} lp_adapter_params;

lp_adapter_params lp_adapter_default_params(void);

/* What adapter_config.json says, after PEFT's rules are applied. */
typedef struct lp_adapter_info {
    int r;                     /* config `r` (default rank) */
    float lora_alpha;
    bool use_rslora, use_dora;
    int max_rank;              /* largest rank of any adapted module */
    int min_rank;
    int n_modules;             /* adapted (layer, projection) pairs */
    unsigned targets;          /* bit m set when projection m (q,k,v,o,gate,up,down) is adapted somewhere */
    uint64_t bytes;            /* tensor bytes held in memory */
    uint64_t n_params;
    char format[16];           /* "safetensors" or "bin" */
    char base_model[512];      /* base_model_name_or_path (informational) */
} lp_adapter_info;

/* Load DIR. With `model` non-NULL every tensor is checked against it (layer
 * count, hidden/ffn sizes, which projections exist) and DoRA norms are
 * precomputed; with NULL only internal consistency is checked (`inspect`).
 * Files are read into private memory, so a file rewritten or truncated later
 * cannot affect a loaded adapter. Errors name the file, tensor or field. */
int lp_adapter_load(const char *dir, const lp_model *model, const lp_adapter_params *params,
                    lp_adapter **out, lp_error *err);
void lp_adapter_free(lp_adapter *a);

const lp_adapter_info *lp_adapter_get_info(const lp_adapter *a);
const char *lp_adapter_dir(const lp_adapter *a);

/* Names of the projections, in bit order of lp_adapter_info.targets. */
const char *lp_adapter_module_name(int m);

/* Merge adapter `a` (loaded against `model`) into the base weights and write
 * a complete model directory to out_dir (config with the output dtype,
 * generation config, tokenizer files, safetensors weights, sharded past
 * 2 GiB): W' = W + s B A, and for DoRA W' = diag(m / ||W + s B A||_row)(W + s B A).
 * out_dtype LP_DTYPE_INVALID keeps each tensor's base dtype. out_dir must not
 * exist or be empty; on failure the files written are removed. */
int lp_adapter_merge(const lp_model *model, const lp_adapter *a, const char *out_dir, lp_dtype out_dtype,
                     lp_error *err);

#endif
