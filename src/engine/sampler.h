/* sampler.h - turn logits into the next token: penalties, logit bias,
 * temperature, top-k, top-p, min-p, seeded randomness; and top-k
 * log-probabilities of the raw logits. */
#ifndef LP_ENGINE_SAMPLER_H
#define LP_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "loraplex/status.h"

typedef struct lp_logit_bias {
    int32_t id;
    float bias;
} lp_logit_bias;

typedef struct lp_sampling_params {
    float temperature;        /* 0 = greedy (argmax, lowest id on ties) */
    int top_k;                /* 0 or < 0 = off */
    float top_p;              /* 1 = off; (0, 1] */
    float min_p;              /* 0 = off; [0, 1] */
    float presence_penalty;   /* OpenAI: minus this for tokens seen in the output */
    float frequency_penalty;  /* OpenAI: minus this times the output count */
    float repetition_penalty; /* HF/vLLM: 1 = off; divides positive logits of
                                 tokens in prompt or output, multiplies negative */
    uint64_t seed;
    bool has_seed;            /* false: seeded from the clock */
    const lp_logit_bias *logit_bias; /* borrowed, n_logit_bias entries */
    int n_logit_bias;
} lp_sampling_params;

lp_sampling_params lp_sampling_default_params(void); /* greedy */

/* Validate ranges; the message names the parameter (as the API spells it). */
int lp_sampling_params_check(const lp_sampling_params *p, int vocab, lp_error *err);

typedef struct lp_rng {
    uint64_t s[4];
} lp_rng;

void lp_rng_seed(lp_rng *r, uint64_t seed);
uint64_t lp_rng_next(lp_rng *r);
/* Uniform in [0, 1). */
double lp_rng_uniform(lp_rng *r);

typedef struct lp_sampler lp_sampler;

/* Scratch for a vocabulary of `vocab` ids; one per sequence or per thread. */
lp_sampler *lp_sampler_new(int vocab);
void lp_sampler_free(lp_sampler *s);

/* Sampling in two halves around lp_backend_sample (which runs where the
 * logits are):
 *
 *   n = lp_sampler_adjustments(...)        penalties and logit_bias of the
 *                                          request: the ids they touch
 *   spec = {n_cand = lp_sampler_n_cand(), temperature, adj}
 *   lp_backend_sample(spec) -> result      best candidates, max, softmax total
 *   i = lp_sampler_choose(result, u)       the draw, on the host
 *   i == LP_SAMPLER_MORE: lp_sampler_choose_row(full row)
 *
 * The order is always "adjusted logit descending, lower id first"; top_k,
 * min_p, top_p cut that list, and the draw walks it with one uniform number
 * u per token (none when greedy). When the cut or the draw reaches past
 * the candidates returned, the row is finished on the host from its full
 * logits with the same max, total and u, so the token never depends on how
 * many candidates the backend returned. */

/* The adjustments (one per distinct id: repetition penalty for ids in the
 * prompt or output, presence/frequency for ids in the output, logit_bias)
 * into adj, which has room for n_prompt + n_output + n_logit_bias entries
 * (at most vocab are used). Returns the count. */
int lp_sampler_adjustments(lp_sampler *s, const lp_sampling_params *p, const int32_t *prompt, int n_prompt,
                           const int32_t *output, int n_output, lp_logit_adjust *adj);

/* Candidates to ask the backend for: 1 when greedy, else top_k when it is
 * below LP_SAMPLE_MAX_CAND, else LP_SAMPLE_MAX_CAND. */
int lp_sampler_n_cand(const lp_sampling_params *p, int vocab);

#define LP_SAMPLER_MORE (-1)
/* The index into r->cand of the chosen token, or LP_SAMPLER_MORE when the
 * candidates end before the choice is made. u01 in [0, 1). */
int lp_sampler_choose(const lp_sampling_params *p, double u01, const lp_sample_result *r, int vocab);

/* The choice from the row's raw logits on the host, with the max and total
 * of `first` (the backend's result for the same row and u01). */
lp_candidate lp_sampler_choose_row(lp_sampler *s, const lp_sampling_params *p, double u01, const float *raw,
                                   const lp_logit_adjust *adj, int n_adj, const lp_sample_result *first);

/* All of it on the host for one logits vector (unchanged). `prompt` and
 * `output` are the ids so far (for penalties; may be NULL when the
 * penalties are off). */
int32_t lp_sampler_sample(lp_sampler *s, const lp_sampling_params *p, lp_rng *rng, const float *logits,
                          const int32_t *prompt, int n_prompt, const int32_t *output, int n_output);

/* Log-softmax of the raw logits: the chosen token's logprob, and the k most
 * likely tokens in descending order (ties: lower id first) into top[0..k). */
float lp_logprobs(const float *logits, int vocab, int32_t chosen, int k, lp_token_logprob *top);

#endif
