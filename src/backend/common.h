/* common.h - what every backend shares: the checks applied to a forward call's rows before
 * touching memory: sizes within the backend's limits, positions within the
 * KV pool, token ids within the vocabulary, block ids within the pool,
 * adapter slots loaded and scales in range. */
#ifndef LP_BACKEND_COMMON_H
#define LP_BACKEND_COMMON_H

#include "backend/backend.h"

/* `loaded(slot)` is non-zero when the slot holds an adapter. On success
 * sets *T (tokens in the call) and *n_logits (logit vectors it returns). */
int lp__backend_check_rows(const lp_backend *b, const lp_batch_row *rows, int n_rows, int64_t max_ctx,
                           const void *const *slots, int64_t *T, int64_t *n_logits, lp_error *err);

/* Whether adapter `a` may go into `slot`: slot in range, loaded against this
 * model, rank within max_lora_rank, DoRA norms computed. */
int lp__backend_check_adapter(const lp_backend *b, int slot, const lp_adapter *a, lp_error *err);

/* Rotary inverse frequencies (head_dim/2) in fp32 as transformers computes
 * them, with the config's rope scaling (default, linear, llama3). */
void lp__rope_inv_freq(const lp_model_config *c, float *inv_freq);

#endif
