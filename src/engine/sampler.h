/* sampler.h - turn a logits vector into the next token: penalties, logit
 * bias, temperature, top-k, top-p, min-p, seeded randomness; and top-k
 * log-probabilities of the raw logits. */
#ifndef LP_ENGINE_SAMPLER_H
#define LP_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

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

/* Choose the next token. `logits` (vocab) is modified in place (penalties,
 * bias, temperature). `prompt` and `output` are the ids so far (for
 * penalties; may be NULL when the penalties are off). */
int32_t lp_sampler_sample(lp_sampler *s, const lp_sampling_params *p, lp_rng *rng, float *logits,
                          const int32_t *prompt, int n_prompt, const int32_t *output, int n_output);

typedef struct lp_token_logprob {
    int32_t id;
    float logprob;
} lp_token_logprob;

/* Log-softmax of the raw logits: the chosen token's logprob, and the k most
 * likely tokens in descending order (ties: lower id first) into top[0..k). */
float lp_logprobs(const float *logits, int vocab, int32_t chosen, int k, lp_token_logprob *top);

#endif
