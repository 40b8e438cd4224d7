/* sampler.c - sampling and log-probabilities. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

struct lp_sampler {
    int vocab;
    int32_t *idx;   /* (vocab) candidate ids */
    float *prob;    /* (vocab) */
    uint32_t *seen; /* (vocab) output counts, for penalties */
    uint8_t *inprompt;
};

lp_sampling_params lp_sampling_default_params(void) {
    lp_sampling_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

int lp_sampling_params_check(const lp_sampling_params *p, int vocab, lp_error *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return lp_error_set(err, LP_ERR_RANGE, "temperature must be in [0, 100]");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return lp_error_set(err, LP_ERR_RANGE, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return lp_error_set(err, LP_ERR_RANGE, "min_p must be in [0, 1]");
    if (p->top_k < -1)
        return lp_error_set(err, LP_ERR_RANGE, "top_k must be -1, 0 or positive");
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return lp_error_set(err, LP_ERR_RANGE, "presence_penalty must be in [-2, 2]");
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return lp_error_set(err, LP_ERR_RANGE, "frequency_penalty must be in [-2, 2]");
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 10.0f))
        return lp_error_set(err, LP_ERR_RANGE, "repetition_penalty must be in (0, 10]");
    for (int i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].id < 0 || p->logit_bias[i].id >= vocab)
            return lp_error_set(err, LP_ERR_RANGE, "logit_bias: token id %d is out of range [0, %d)",
                                p->logit_bias[i].id, vocab);
        if (!(p->logit_bias[i].bias >= -100.0f && p->logit_bias[i].bias <= 100.0f))
            return lp_error_set(err, LP_ERR_RANGE, "logit_bias: value for token %d must be in [-100, 100]",
                                p->logit_bias[i].id);
    }
    return LP_OK;
}

/* xoshiro256** seeded through splitmix64. */
void lp_rng_seed(lp_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lp_rng_next(lp_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double lp_rng_uniform(lp_rng *r) { return (double)(lp_rng_next(r) >> 11) * 0x1.0p-53; }

lp_sampler *lp_sampler_new(int vocab) {
    lp_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->vocab = vocab;
    s->idx = lp__malloc_array((size_t)vocab, sizeof(int32_t));
    s->prob = lp__malloc_array((size_t)vocab, sizeof(float));
    s->seen = lp__calloc_array((size_t)vocab, sizeof(uint32_t));
    s->inprompt = lp__calloc_array((size_t)vocab, 1);
    if (!s->idx || !s->prob || !s->seen || !s->inprompt) {
        lp_sampler_free(s);
        return NULL;
    }
    return s;
}

void lp_sampler_free(lp_sampler *s) {
    if (!s)
        return;
    free(s->idx);
    free(s->prob);
    free(s->seen);
    free(s->inprompt);
    free(s);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void apply_penalties(lp_sampler *s, const lp_sampling_params *p, float *logits,
                            const int32_t *prompt, int n_prompt, const int32_t *output, int n_output) {
    bool rep = p->repetition_penalty != 1.0f;
    bool pf = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !pf)
        return;
    for (int i = 0; i < n_output; i++)
        if (output[i] >= 0 && output[i] < s->vocab)
            s->seen[output[i]]++;
    if (rep)
        for (int i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < s->vocab)
                s->inprompt[prompt[i]] = 1;
    /* apply once per distinct id, then clear only what was set */
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *ids = pass ? prompt : output;
        int n = pass ? n_prompt : n_output;
        for (int i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= s->vocab || (!s->seen[id] && !s->inprompt[id]))
                continue;
            if (rep)
                logits[id] = logits[id] > 0 ? logits[id] / p->repetition_penalty
                                            : logits[id] * p->repetition_penalty;
            if (s->seen[id])
                logits[id] -= p->presence_penalty + p->frequency_penalty * (float)s->seen[id];
            s->seen[id] = 0;
            s->inprompt[id] = 0;
        }
    }
}

static int cmp_prob_desc(const void *a, const void *b, void *ctx) {
    const float *prob = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (prob[x] != prob[y])
        return prob[x] > prob[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

int32_t lp_sampler_sample(lp_sampler *s, const lp_sampling_params *p, lp_rng *rng, float *logits,
                          const int32_t *prompt, int n_prompt, const int32_t *output, int n_output) {
    int V = s->vocab;
    apply_penalties(s, p, logits, prompt, n_prompt, output, n_output);
    for (int i = 0; i < p->n_logit_bias; i++)
        logits[p->logit_bias[i].id] += p->logit_bias[i].bias;
    if (p->temperature <= 0.0f)
        return argmax(logits, V);
    /* softmax with temperature */
    float mx = logits[argmax(logits, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        float e = expf((logits[i] - mx) / p->temperature);
        s->prob[i] = e;
        sum += e;
    }
    /* candidates sorted by probability when a truncation is asked for */
    int n = V;
    for (int i = 0; i < V; i++)
        s->idx[i] = i;
    bool truncate = (p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f || p->min_p > 0.0f;
    if (truncate) {
        qsort_r(s->idx, (size_t)V, sizeof(int32_t), cmp_prob_desc, s->prob);
        if (p->top_k > 0 && p->top_k < n)
            n = p->top_k;
        if (p->min_p > 0.0f) {
            float thr = p->min_p * s->prob[s->idx[0]];
            int k = 1;
            while (k < n && s->prob[s->idx[k]] >= thr)
                k++;
            n = k;
        }
        if (p->top_p < 1.0f) {
            double tot = 0.0;
            for (int i = 0; i < n; i++)
                tot += s->prob[s->idx[i]];
            double cum = 0.0;
            int k = 0;
            while (k < n) {
                cum += s->prob[s->idx[k]];
                k++;
                if (cum >= p->top_p * tot)
                    break;
            }
            n = k;
        }
        sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += s->prob[s->idx[i]];
    }
    double u = lp_rng_uniform(rng) * sum, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->prob[s->idx[i]];
        if (u < cum)
            return s->idx[i];
    }
    return s->idx[n - 1];
}

float lp_logprobs(const float *logits, int vocab, int32_t chosen, int k, lp_token_logprob *top) {
    float mx = logits[argmax(logits, vocab)];
    double sum = 0.0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    if (k > vocab)
        k = vocab;
    /* partial selection: insertion into a small sorted list */
    int n = 0;
    for (int i = 0; i < vocab && k > 0; i++) {
        float v = logits[i];
        if (n == k && !(v > top[n - 1].logprob))
            continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && top[j - 1].logprob < v) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
        top[j].logprob = v;
    }
    for (int i = 0; i < n; i++)
        top[i].logprob = (float)((double)top[i].logprob - lse);
    return (float)((double)logits[chosen] - lse);
}
