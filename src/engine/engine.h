/* engine.h - continuous batching over a backend: requests join and leave the
 * running batch at every step; prompts are prefilled in chunks beside decode
 * rows; KV cache blocks come from a paged pool, and a sequence that cannot
 * get a block is preempted (its blocks freed, recomputed later) rather than
 * failed. Single-threaded: the caller (CLI or server loop) owns it. */
#ifndef LP_ENGINE_ENGINE_H
#define LP_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "engine/sampler.h"

typedef struct lp_engine_params {
    int max_num_seqs;           /* rows running at once */
    int max_model_len;          /* prompt + output tokens of one sequence */
    int max_num_batched_tokens; /* tokens per forward step */
    int block_size;             /* tokens per KV block */
    int n_kv_blocks;            /* KV blocks in the pool */
    int n_threads;              /* CPU threads (0 = all) */
    bool prefix_caching;        /* reuse KV blocks of identical prompt prefixes (default on) */
} lp_engine_params;

lp_engine_params lp_engine_default_params(void);

typedef enum {
    LP_FINISH_NONE = 0,
    LP_FINISH_LENGTH, /* max_tokens or max_model_len reached */
    LP_FINISH_STOP,   /* an eos or stop token */
    LP_FINISH_ABORT,  /* lp_engine_abort */
    LP_FINISH_ERROR,  /* the backend failed for this request */
} lp_finish_reason;

const char *lp_finish_reason_name(lp_finish_reason r); /* "length", "stop", ... */

#define LP_MAX_TOP_LOGPROBS 20

typedef struct lp_token_event {
    uint64_t req_id;
    int32_t token;                  /* generated id, or -1 on a finish without token */
    float logprob;                  /* of `token` (when logprobs >= 0) */
    const lp_token_logprob *top;    /* n_top alternatives, borrowed for the call */
    int n_top;
    lp_finish_reason finish;        /* != NONE on the request's last event */
    int n_prompt, n_output;         /* counts so far */
    bool prompt;                    /* token is a prompt token (prompt_logprobs), not generated */
    const char *error;              /* message when finish == LP_FINISH_ERROR */
} lp_token_event;

typedef void (*lp_token_cb)(void *ud, const lp_token_event *ev);

typedef struct lp_request {
    const int32_t *prompt;        /* copied by submit */
    int n_prompt;
    int max_tokens;
    lp_sampling_params sampling;  /* logit_bias array is copied */
    bool ignore_eos;
    const int32_t *stop_ids;      /* extra stop token ids (copied) */
    int n_stop_ids;
    int logprobs;                 /* -1: none; k in [0, LP_MAX_TOP_LOGPROBS]: chosen + k top */
    bool prompt_logprobs;         /* also report the logprob (and max(logprobs,0) top) of every
                                     prompt token after the first, as LP events with prompt=true */
    int adapter;                  /* backend adapter slot, -1 = base */
    float adapter_scale;
    uint64_t cache_key;           /* identity of the adapter weights and scale for prefix
                                     caching: KV is shared only between requests with the
                                     same key. 0 with an adapter: not cached (a slot number
                                     alone does not identify weights); the base model is
                                     always cacheable. */
    lp_token_cb cb;               /* called from lp_engine_step */
    void *ud;
} lp_request;

lp_request lp_request_default(void);

typedef struct lp_engine lp_engine;

/* The backend must outlive the engine; the engine does not own it. */
int lp_engine_new(lp_backend *backend, const lp_engine_params *params, lp_engine **out,
                  lp_error *err);
void lp_engine_free(lp_engine *e);

/* Queue a request. Rejected (message names the field) if the prompt is empty,
 * holds ids out of range, or prompt + max_tokens exceeds max_model_len. */
int lp_engine_submit(lp_engine *e, const lp_request *req, uint64_t *id_out, lp_error *err);
/* Abort a queued or running request: its callback gets LP_FINISH_ABORT at
 * the next step and everything it held is freed. False if unknown. */
bool lp_engine_abort(lp_engine *e, uint64_t id);
/* Run one batch. Returns the number of requests still queued or running
 * (0 = idle), or a negative status on a backend failure. */
int lp_engine_step(lp_engine *e, lp_error *err);

int lp_engine_num_running(const lp_engine *e);
int lp_engine_num_waiting(const lp_engine *e);
/* Fraction of KV blocks in use, in [0, 1]. */
double lp_engine_kv_usage(const lp_engine *e);
/* Prefix cache: prompt blocks looked up and found, since start. */
void lp_engine_prefix_stats(const lp_engine *e, uint64_t *queried_blocks, uint64_t *hit_blocks);

#endif
