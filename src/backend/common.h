/* common.h - what every backend shares: the checks applied to a forward call's rows before
 * touching memory: sizes within the backend's limits, positions within the
 * KV pool, token ids within the vocabulary, block ids within the pool,
 * adapter slots loaded and scales in range. */
#ifndef LP_BACKEND_COMMON_H
#define LP_BACKEND_COMMON_H

#include "backend/backend.h"

/* slots[s] is non-NULL when slot s holds an adapter; positions must lie in
 * the KV pool (n_kv_blocks x block_size). On success sets *T (tokens in the
 * call) and *n_logits (logit vectors it returns). */
int lp__backend_check_rows(const lp_backend *b, const lp_batch_row *rows, int n_rows, const void *const *slots,
                           int64_t *T, int64_t *n_logits, lp_error *err);

/* The CUDA backend's compute type for `model` (activations fed to the
 * matrix products and the KV cache): LORAPLEX_CUDA_DTYPE (bfloat16, float16,
 * float32) when set, else fp32 for fp32 checkpoints, fp16 for fp16, bf16
 * otherwise. An unknown LORAPLEX_CUDA_DTYPE is LP_ERR_INVALID. */
int lp__cuda_compute_dtype(const lp_model *model, lp_dtype *out, lp_error *err);

/* Whether adapter `a` may go into `slot`: slot in range, loaded against this
 * model, rank within max_lora_rank, DoRA norms computed. */
int lp__backend_check_adapter(const lp_backend *b, int slot, const lp_adapter *a, lp_error *err);

/* The grouping of a call's tokens for segmented multi-LoRA kernels: the
 * tokens of adapter rows grouped by slot (ascending), cut into tiles of at
 * most `tile` tokens of one slot. A token's place is its index in that order;
 * the CUDA backend's LoRA buffers hold one row per place, so the call's
 * base-model tokens cost them nothing. */
typedef struct lp__lora_groups {
    int64_t n_tokens;      /* all tokens of the call */
    int64_t n_lora_tokens; /* tokens of rows with an adapter: the places */
    int64_t n_items;       /* tiles */
} lp__lora_groups;

/* Counts; cnt (max_adapters) gets each slot's token count. */
void lp__lora_group_count(const lp_batch_row *rows, int n_rows, int max_adapters, int tile, int32_t *cnt,
                          lp__lora_groups *g);
/* After lp__lora_group_count with the same cnt (which it consumes): perm
 * (n_lora_tokens) = the token at each place; place (n_tokens) = each token's
 * place, -1 for base-model tokens; items (n_items x 4 int32) = {slot, first
 * place, tokens, 0} per tile. */
void lp__lora_group_fill(const lp_batch_row *rows, int n_rows, int max_adapters, int tile, int32_t *cnt,
                         int32_t *perm, int32_t *place, int32_t *items);

/* Rotary inverse frequencies (head_dim/2) in fp32 as transformers computes
 * them, with the config's rope scaling (default, linear, llama3). */
void lp__rope_inv_freq(const lp_model_config *c, float *inv_freq);

#endif
