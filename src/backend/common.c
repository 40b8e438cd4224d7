/* common.c - row checks and rotary tables shared by every backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/common.h"
#include "lora/adapter-impl.h"
#include "model/model-impl.h"

int lp__backend_check_rows(const lp_backend *b, const lp_batch_row *rows, int n_rows, const void *const *slots,
                           int64_t *T_out, int64_t *n_logits, lp_error *err) {
    const lp_backend_params *P = &b->params;
    int64_t max_ctx = (int64_t)P->n_kv_blocks * P->block_size;
    const lp_model_config *c = lp_model_get_config(b->model);
    int64_t T = 0, nl = 0;
    if (n_rows < 1 || n_rows > P->max_rows)
        return lp_error_set(err, LP_ERR_LIMIT, "forward: %d rows (limit %d)", n_rows, P->max_rows);
    for (int i = 0; i < n_rows; i++) {
        const lp_batch_row *r = &rows[i];
        if (r->n_tokens < 1 || r->pos0 < 0 || (int64_t)r->pos0 + r->n_tokens > max_ctx)
            return lp_error_set(err, LP_ERR_RANGE, "forward: row %d spans positions %d..%d (limit %lld)",
                                i, r->pos0, r->pos0 + r->n_tokens, (long long)max_ctx);
        if (r->adapter < -1 || r->adapter >= P->max_adapters || (r->adapter >= 0 && !slots[r->adapter]))
            return lp_error_set(err, LP_ERR_INVALID, "forward: row %d: adapter slot %d is not loaded", i,
                                r->adapter);
        if (!(r->adapter_scale >= -100.0f && r->adapter_scale <= 100.0f))
            return lp_error_set(err, LP_ERR_RANGE, "forward: row %d: adapter scale must be in [-100, 100]", i);
        for (int j = 0; j < r->n_tokens; j++)
            if (r->tokens[j] < 0 || r->tokens[j] >= c->vocab)
                return lp_error_set(err, LP_ERR_RANGE, "forward: row %d: token id %d is out of range [0, %d)",
                                    i, r->tokens[j], c->vocab);
        int64_t nblk = ((int64_t)r->pos0 + r->n_tokens + P->block_size - 1) / P->block_size;
        for (int64_t j = 0; j < nblk; j++)
            if (r->blocks[j] < 0 || r->blocks[j] >= P->n_kv_blocks)
                return lp_error_set(err, LP_ERR_RANGE, "forward: row %d: KV block id %d is out of range",
                                    i, r->blocks[j]);
        T += r->n_tokens;
        nl += r->logits == LP_LOGITS_ALL ? r->n_tokens : r->logits == LP_LOGITS_LAST ? 1 : 0;
    }
    if (T > P->max_tokens)
        return lp_error_set(err, LP_ERR_LIMIT, "forward: %lld tokens (limit %d)", (long long)T, P->max_tokens);
    if (nl > P->max_logit_rows)
        return lp_error_set(err, LP_ERR_LIMIT, "forward: %lld logit rows (limit %d)", (long long)nl,
                            P->max_logit_rows);
    *T_out = T;
    *n_logits = nl;
    return LP_OK;
}

void lp__rope_inv_freq(const lp_model_config *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        if (c->rope_type == LP_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == LP_ROPE_LLAMA3) {
            double old = c->rope_orig_max_pos;
            double low_wl = old / c->rope_low_freq_factor, high_wl = old / c->rope_high_freq_factor;
            double wl = 2.0 * M_PI / f;
            if (wl > low_wl) {
                f = f / c->rope_factor;
            } else if (wl >= high_wl) { /* medium band: interpolate */
                double s = (old / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (float)((1.0 - s) * f / c->rope_factor + s * f);
            }
        }
        inv_freq[i] = f;
    }
}

int lp__backend_check_adapter(const lp_backend *base, int slot, const lp_adapter *a, lp_error *err) {
    if (slot < 0 || slot >= base->params.max_adapters)
        return lp_error_set(err, LP_ERR_RANGE, "adapter slot %d is out of range [0, %d)", slot,
                            base->params.max_adapters);
    if (a->model != base->model)
        return lp_error_set(err, LP_ERR_INVALID, "%s: adapter was not loaded against this model", a->dir);
    if (a->info.max_rank > base->params.max_lora_rank)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: rank %d exceeds the maximum LoRA rank %d", a->dir,
                            a->info.max_rank, base->params.max_lora_rank);
    for (size_t i = 0; i < (size_t)a->n_layers * LP_MOD_COUNT; i++)
        if (a->mods[i].magnitude && !a->mods[i].dora_scale)
            return lp_error_set(err, LP_ERR_INVALID, "%s: DoRA norms were not computed (load it with the model)",
                                a->dir);
    return LP_OK;
}

void lp__lora_group_count(const lp_batch_row *rows, int n_rows, int max_adapters, int tile, int32_t *cnt,
                          lp__lora_groups *g) {
    memset(g, 0, sizeof *g);
    for (int s = 0; s < max_adapters; s++)
        cnt[s] = 0;
    for (int i = 0; i < n_rows; i++) {
        g->n_tokens += rows[i].n_tokens;
        if (rows[i].adapter >= 0 && rows[i].adapter < max_adapters)
            cnt[rows[i].adapter] += rows[i].n_tokens;
    }
    for (int s = 0; s < max_adapters; s++) {
        g->n_items += (cnt[s] + tile - 1) / tile;
        g->n_lora_tokens += cnt[s];
    }
}

void lp__lora_group_fill(const lp_batch_row *rows, int n_rows, int max_adapters, int tile, int32_t *cnt,
                         int32_t *perm, int32_t *place, int32_t *items) {
    int32_t acc = 0, k = 0;
    for (int s = 0; s < max_adapters; s++) {
        for (int32_t p = 0; p < cnt[s]; p += tile, k++) {
            int32_t *it = items + 4 * (size_t)k;
            it[0] = s;
            it[1] = acc + p;
            it[2] = cnt[s] - p < tile ? cnt[s] - p : tile;
            it[3] = 0;
        }
        int32_t n = cnt[s];
        cnt[s] = acc; /* from here on: the slot's next place */
        acc += n;
    }
    int32_t t = 0;
    for (int i = 0; i < n_rows; i++)
        for (int j = 0; j < rows[i].n_tokens; j++, t++) {
            int a = rows[i].adapter;
            if (a >= 0 && a < max_adapters) {
                perm[cnt[a]] = t;
                place[t] = cnt[a]++;
            } else {
                place[t] = -1;
            }
        }
}

int lp__cuda_compute_dtype(const lp_model *model, lp_dtype *out, lp_error *err) {
    const char *dt = getenv("LORAPLEX_CUDA_DTYPE");
    if (dt && *dt) {
        *out = !strcmp(dt, "float32") ? LP_DTYPE_F32 : !strcmp(dt, "float16") ? LP_DTYPE_F16
             : !strcmp(dt, "bfloat16") ? LP_DTYPE_BF16 : LP_DTYPE_INVALID;
        if (*out == LP_DTYPE_INVALID)
            return lp_error_set(err, LP_ERR_INVALID, "LORAPLEX_CUDA_DTYPE=%s (expected bfloat16, float16 or float32)",
                                dt);
        return LP_OK;
    }
    lp_dtype w = model->layers[0].proj[LP_MOD_Q].dtype;
    *out = w == LP_DTYPE_F32 || w == LP_DTYPE_F16 ? w : LP_DTYPE_BF16;
    return LP_OK;
}
