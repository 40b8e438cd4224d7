/* backend.h - the interface every compute backend implements (CPU now, CUDA
 * later): a batched forward pass over many sequences at once, each row with
 * its own position, paged KV cache blocks and (later) LoRA adapter slot. The
 * engine above it never sees device memory or #ifdefs. */
#ifndef LP_BACKEND_H
#define LP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "loraplex/adapter.h"
#include "loraplex/model.h"
#include "loraplex/status.h"

typedef enum {
    LP_LOGITS_NONE = 0, /* no logits for this row (a prefill chunk that is not the last) */
    LP_LOGITS_LAST = 1, /* logits of the row's last token */
    LP_LOGITS_ALL = 2,  /* logits of every token of the row (prompt logprobs, tests) */
} lp_logits_mode;

/* One row of a batch: a run of consecutive tokens of one sequence. */
typedef struct lp_batch_row {
    const int32_t *tokens;  /* (n_tokens) */
    int32_t n_tokens;       /* >= 1: a prefill chunk or one decode token */
    int32_t pos0;           /* position of tokens[0]; positions 0..pos0-1 are in the KV cache */
    const int32_t *blocks;  /* block table: KV block ids covering positions 0..pos0+n_tokens-1 */
    int32_t adapter;        /* adapter slot, or -1 for the base model */
    float adapter_scale;    /* multiplies the adapter's own scaling (1.0 = as trained) */
    uint8_t logits;         /* lp_logits_mode */
} lp_batch_row;

typedef struct lp_backend lp_backend;

/* ---- sampling beside the forward (lp_backend_sample) ----
 * The part of sampling that reads every logit runs where the logits are: for
 * each logit row the backend adjusts the few logits the penalties and
 * logit_bias touch, selects the best candidates and the softmax normaliser,
 * and only those come back (a few KB a row instead of the vocabulary). The
 * draw among the candidates is the sampler's (src/engine/sampler.c). */
#define LP_SAMPLE_MAX_CAND 256    /* candidates one row may ask the backend for */
#define LP_SAMPLE_MAX_LOGPROBS 20 /* most top logprobs a row may ask for */

/* One adjusted logit, applied in this order with fp32 rounding at each step:
 * l = rep == 1 ? l : l > 0 ? l / rep : l * rep;  l = l - sub;  l = l + bias. */
typedef struct lp_logit_adjust {
    int32_t id;
    float rep;  /* repetition penalty (1 = none) */
    float sub;  /* presence + frequency * count (0 = none) */
    float bias; /* logit_bias (0 = none) */
} lp_logit_adjust;

typedef struct lp_sample_spec {
    int32_t row;          /* logit row of the last forward (0 = its first) */
    int32_t n_cand;       /* candidates wanted, 1..LP_SAMPLE_MAX_CAND */
    float temperature;    /* > 0: `total` below is computed at this temperature */
    int32_t n_logprobs;   /* -1: none; 0..LP_SAMPLE_MAX_LOGPROBS: the raw logits'
                             log-softmax normaliser and that many top logprobs */
    const lp_logit_adjust *adj; /* n_adj entries, distinct ids */
    int32_t n_adj;
    int32_t probe;        /* a token id whose raw logit comes back as probe_raw (the
                             logprob of a prompt token: probe_raw - raw_lse) */
} lp_sample_spec;

typedef struct lp_candidate {
    int32_t id;
    float logit; /* adjusted */
    float raw;   /* as the forward produced it */
} lp_candidate;

typedef struct lp_token_logprob {
    int32_t id;
    float logprob;
} lp_token_logprob;

/* What lp_backend_sample returns for one spec. The caller points `cand` at
 * n_cand and `top` at n_logprobs entries. Order: adjusted (resp. raw) logit
 * descending, lower id first on ties. */
typedef struct lp_sample_result {
    lp_candidate *cand;
    lp_token_logprob *top;
    int32_t n_cand; /* written: min(spec n_cand, vocab) */
    float max;      /* the largest adjusted logit (= cand[0].logit) */
    double total;   /* sum over the vocabulary of expf((adjusted - max) / T); 0 when T <= 0 */
    double raw_lse; /* log-sum-exp of the raw logits (n_logprobs >= 0) */
    float probe_raw; /* the raw logit of spec.probe */
} lp_sample_result;

typedef struct lp_backend_params {
    int n_kv_blocks;     /* KV cache blocks in the pool */
    int block_size;      /* tokens per block */
    int max_tokens;      /* most tokens in one forward call (sum of n_tokens) */
    int max_rows;        /* most rows in one forward call */
    int max_logit_rows;  /* most logit rows one call returns */
    int n_threads;       /* CPU threads (0 = all cores) */
    int max_adapters;    /* adapter slots (the device tier) */
    int max_lora_rank;   /* largest rank a slot accepts */
} lp_backend_params;

lp_backend_params lp_backend_default_params(void);

/* The sampling op on the host, for one spec over one logit row `raw`
 * (vocab): the CPU backend's op, the engine's path when a row needs more
 * candidates than the backend returned, and the reference the CUDA kernels
 * are tested against. spec->n_cand may be anything from 1 to vocab here.
 * `scratch` holds lp_sample_scratch_bytes(vocab) bytes. */
size_t lp_sample_scratch_bytes(int vocab);
void lp_sample_host(const float *raw, int vocab, const lp_sample_spec *spec, void *scratch,
                    lp_sample_result *out);
/* Specs within limits: rows below n_rows, 1 <= n_cand <= max_cand, n_logprobs
 * in -1..LP_SAMPLE_MAX_LOGPROBS, adjusted and probed ids in the vocabulary. */
int lp_sample_check(const lp_sample_spec *specs, int n_specs, int64_t n_rows, int vocab, int max_cand,
                    lp_error *err);
/* Rows [first, first + n) within the n_rows of the last forward. */
int lp_logits_check(int first, int n, int64_t n_rows, lp_error *err);

typedef struct lp_backend_ops {
    const char *name;
    void (*free)(lp_backend *b);
    /* Run one batch. Logits (fp32, vocab each) are written to `logits` in row
     * order: for each row, 0, 1 or n_tokens vectors according to its mode.
     * A row's result does not depend on the other rows of the batch.
     * `logits` may be NULL: the logits then stay in the backend (on the GPU
     * for CUDA), for `sample` and `logits` below, until the next forward. */
    int (*forward)(lp_backend *b, const lp_batch_row *rows, int n_rows, float *logits,
                   lp_error *err);
    /* Summarise logit rows of the last forward for the sampler (see
     * lp_sample_spec). Does not change the logits. */
    int (*sample)(lp_backend *b, const lp_sample_spec *specs, int n_specs, lp_sample_result *out,
                  lp_error *err);
    /* Logit rows [first, first + n) of the last forward: in `buf` (n * vocab
     * floats) or in the backend's own memory; NULL with `err` set on error. */
    const float *(*logits)(lp_backend *b, int first, int n, float *buf, lp_error *err);
    /* Make adapter `a` (loaded against this backend's model) usable by rows
     * naming `slot`. The adapter must stay alive until the slot is unloaded;
     * no row of a running forward may name a slot being (un)loaded. */
    int (*adapter_load)(lp_backend *b, int slot, const lp_adapter *a, lp_error *err);
    /* Optional (NULL: nothing to do). Prepare `a` for adapter_load on any
     * thread, beside running forwards: the CUDA backend lays it out for the
     * device in pinned host memory, kept with the adapter until it is freed,
     * so that a later adapter_load is one asynchronous copy instead of host
     * work on the engine thread. adapter_load works without it (it then lays
     * the adapter out itself, for that load only). Not concurrently with an
     * adapter_load of the same adapter. */
    int (*adapter_stage)(lp_backend *b, lp_adapter *a, lp_error *err);
    void (*adapter_unload)(lp_backend *b, int slot);
    /* Host memory for the `logits` buffers of forward: pinned on CUDA, so the
     * logits come back at full transfer speed. NULL = malloc/free. */
    void *(*host_alloc)(lp_backend *b, size_t bytes);
    void (*host_free)(lp_backend *b, void *p);
    /* Optional (NULL: the adapter's own bytes, which a CPU slot references).
     * The bytes adapter_load of `a` takes in the backend's memory: its
     * layout for the device, each module by its own rank. */
    uint64_t (*adapter_bytes)(lp_backend *b, const lp_adapter *a);
} lp_backend_ops;

struct lp_backend {
    const lp_backend_ops *ops;
    const lp_model *model;
    lp_backend_params params;
};

/* The CPU backend. The model must outlive the backend. */
int lp_backend_cpu_new(const lp_model *model, const lp_backend_params *params,
                       lp_backend **out, lp_error *err);

/* The CUDA backend (src/backend/cuda/): weights and KV cache in GPU memory.
 * Builds without LORAPLEX_CUDA return LP_ERR_UNSUPPORTED naming the build
 * option. The model must outlive the backend. */
int lp_backend_cuda_new(const lp_model *model, const lp_backend_params *params,
                        lp_backend **out, lp_error *err);
/* CUDA devices usable by this process (0 without CUDA support or GPU). */
int lp_cuda_device_count(void);
/* Free and total memory of the current CUDA device; LP_ERR_UNSUPPORTED
 * without one. */
int lp_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, lp_error *err);
/* Bytes one KV block of `block_size` tokens takes on `device`: fp32 on the
 * CPU; on CUDA fp32 for fp32 models, fp16 for the others (2 bytes). */
size_t lp_backend_kv_block_bytes(const char *device, const lp_model *model, int block_size);

/* The backend for a --device value: "cpu", "cuda", or "auto" (= cuda when a
 * GPU is present and the build has CUDA, else cpu). Unknown names and
 * "cuda" on a build or machine without it fail with a message saying so. */
int lp_backend_new(const char *device, const lp_model *model, const lp_backend_params *params,
                   lp_backend **out, lp_error *err);
/* "cpu" or "cuda": what lp_backend_new would pick for `device`; NULL for a
 * name it does not know. */
const char *lp_backend_resolve(const char *device);

static inline void lp_backend_free(lp_backend *b) {
    if (b)
        b->ops->free(b);
}
static inline int lp_backend_adapter_load(lp_backend *b, int slot, const lp_adapter *a,
                                          lp_error *err) {
    return b->ops->adapter_load(b, slot, a, err);
}
static inline int lp_backend_adapter_stage(lp_backend *b, lp_adapter *a, lp_error *err) {
    return b->ops->adapter_stage ? b->ops->adapter_stage(b, a, err) : 0;
}
/* What the adapter takes in a slot (lp_backend_ops.adapter_bytes). */
uint64_t lp_backend_adapter_bytes(lp_backend *b, const lp_adapter *a);
static inline void lp_backend_adapter_unload(lp_backend *b, int slot) {
    b->ops->adapter_unload(b, slot);
}
static inline void *lp_backend_host_alloc(lp_backend *b, size_t bytes) {
    return b->ops->host_alloc ? b->ops->host_alloc(b, bytes) : malloc(bytes);
}
static inline void lp_backend_host_free(lp_backend *b, void *p) {
    if (b->ops->host_free)
        b->ops->host_free(b, p);
    else
        free(p);
}
static inline int lp_backend_sample(lp_backend *b, const lp_sample_spec *specs, int n_specs,
                                    lp_sample_result *out, lp_error *err) {
    return b->ops->sample(b, specs, n_specs, out, err);
}
static inline const float *lp_backend_logits(lp_backend *b, int first, int n, float *buf,
                                             lp_error *err) {
    return b->ops->logits(b, first, n, buf, err);
}
static inline int lp_backend_forward(lp_backend *b, const lp_batch_row *rows, int n_rows,
                                     float *logits, lp_error *err) {
    return b->ops->forward(b, rows, n_rows, logits, err);
}

#endif
