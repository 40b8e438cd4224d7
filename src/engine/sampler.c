/* sampler.c - sampling and log-probabilities. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

struct lp_sampler {
    int vocab;
    uint32_t *seen;     /* (vocab) output counts, for penalties; zero between calls */
    uint8_t *inprompt;  /* (vocab) zero between calls */
    int32_t *slot;      /* (vocab) index of an id's adjustment, -1 between calls */
    lp_candidate *cand; /* (vocab) */
    lp_logit_adjust *adj; /* (vocab) for lp_sampler_sample */
    void *scratch;      /* lp_sample_scratch_bytes(vocab) */
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
    s->seen = lp__calloc_array((size_t)vocab, sizeof(uint32_t));
    s->inprompt = lp__calloc_array((size_t)vocab, 1);
    s->slot = lp__malloc_array((size_t)vocab, sizeof(int32_t));
    s->cand = lp__malloc_array((size_t)vocab, sizeof(lp_candidate));
    s->adj = lp__malloc_array((size_t)vocab, sizeof(lp_logit_adjust));
    s->scratch = malloc(lp_sample_scratch_bytes(vocab));
    if (!s->seen || !s->inprompt || !s->slot || !s->cand || !s->adj || !s->scratch) {
        lp_sampler_free(s);
        return NULL;
    }
    for (int i = 0; i < vocab; i++)
        s->slot[i] = -1;
    return s;
}

void lp_sampler_free(lp_sampler *s) {
    if (!s)
        return;
    free(s->seen);
    free(s->inprompt);
    free(s->slot);
    free(s->cand);
    free(s->adj);
    free(s->scratch);
    free(s);
}

int lp_sampler_adjustments(lp_sampler *s, const lp_sampling_params *p, const int32_t *prompt, int n_prompt,
                           const int32_t *output, int n_output, lp_logit_adjust *adj) {
    int V = s->vocab, n = 0;
    bool rep = p->repetition_penalty != 1.0f;
    bool pf = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (rep || pf) {
        for (int i = 0; i < n_output; i++)
            if (output[i] >= 0 && output[i] < V)
                s->seen[output[i]]++;
        if (rep)
            for (int i = 0; i < n_prompt; i++)
                if (prompt[i] >= 0 && prompt[i] < V)
                    s->inprompt[prompt[i]] = 1;
        /* one entry per distinct id, clearing the marks as it goes */
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *ids = pass ? prompt : output;
            int m = pass ? n_prompt : n_output;
            for (int i = 0; i < m; i++) {
                int32_t id = ids[i];
                if (id < 0 || id >= V || (!s->seen[id] && !s->inprompt[id]))
                    continue;
                lp_logit_adjust *a = &adj[n];
                a->id = id;
                a->rep = rep ? p->repetition_penalty : 1.0f;
                a->sub = s->seen[id] ? p->presence_penalty + p->frequency_penalty * (float)s->seen[id] : 0.0f;
                a->bias = 0.0f;
                s->slot[id] = n++;
                s->seen[id] = 0;
                s->inprompt[id] = 0;
            }
        }
    }
    /* logit_bias: onto the id's entry (duplicates add up) or a new one */
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias[i].id;
        if (id < 0 || id >= V)
            continue;
        if (s->slot[id] < 0) {
            adj[n] = (lp_logit_adjust){.id = id, .rep = 1.0f, .sub = 0.0f, .bias = 0.0f};
            s->slot[id] = n++;
        }
        adj[s->slot[id]].bias += p->logit_bias[i].bias;
    }
    for (int i = 0; i < n; i++)
        s->slot[adj[i].id] = -1;
    return n;
}

int lp_sampler_n_cand(const lp_sampling_params *p, int vocab) {
    int k = p->temperature <= 0.0f ? 1 : p->top_k > 0 && p->top_k < LP_SAMPLE_MAX_CAND ? p->top_k : LP_SAMPLE_MAX_CAND;
    return k < vocab ? k : vocab;
}

int lp_sampler_choose(const lp_sampling_params *p, double u01, const lp_sample_result *r, int vocab) {
    if (p->temperature <= 0.0f)
        return 0;
    const lp_candidate *c = r->cand;
    int have = r->n_cand;     /* candidates known */
    bool all = have >= vocab; /* ... and they are the whole vocabulary */
    float T = p->temperature, mx = r->max;
    /* the cut and the draw read the same probabilities up to three times:
     * those of the first LP_SAMPLE_MAX_CAND candidates once */
    float pc[LP_SAMPLE_MAX_CAND];
    int n_pc = have < LP_SAMPLE_MAX_CAND ? have : LP_SAMPLE_MAX_CAND;
    for (int i = 0; i < n_pc; i++)
        pc[i] = expf((c[i].logit - mx) / T);
#define PROB(i) ((i) < n_pc ? pc[i] : expf((c[i].logit - mx) / T))
    int n = vocab; /* the cut list is c[0..n) */
    bool cut = false;
    if (p->top_k > 0 && p->top_k < vocab) {
        n = p->top_k;
        cut = true;
    }
    if (p->min_p > 0.0f) {
        float thr = p->min_p * PROB(0);
        int k = 1;
        while (k < n && k < have && PROB(k) >= thr)
            k++;
        if (k < n && k == have && !all)
            return LP_SAMPLER_MORE; /* c[k] might still pass */
        n = k;
        cut = true;
    }
    if (cut && n > have)
        return LP_SAMPLER_MORE;
    double sum;
    if (p->top_p < 1.0f) {
        double tot = 0.0;
        if (!cut)
            tot = r->total;
        else
            for (int i = 0; i < n; i++)
                tot += PROB(i);
        double cum = 0.0;
        int k = 0;
        while (k < n) {
            if (k == have)
                return LP_SAMPLER_MORE;
            cum += PROB(k);
            k++;
            if (cum >= p->top_p * tot)
                break;
        }
        n = k;
        sum = cum;
    } else if (cut) {
        sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += PROB(i);
    } else {
        sum = r->total;
    }
    double x = u01 * sum, cum = 0.0;
    int last = 0; /* the last token with a probability above 0 */
    for (int i = 0; i < n; i++) {
        if (i == have)
            return LP_SAMPLER_MORE;
        float pi = PROB(i);
        cum += pi;
        if (pi > 0.0f)
            last = i;
        if (x < cum)
            return i;
    }
#undef PROB
    /* x at or past the walk's sum: only by rounding of a backend's total
     * (summed in another order); not a token that cannot be drawn */
    return last;
}

lp_candidate lp_sampler_choose_row(lp_sampler *s, const lp_sampling_params *p, double u01, const float *raw,
                                   const lp_logit_adjust *adj, int n_adj, const lp_sample_result *first) {
    int V = s->vocab, k = first->n_cand;
    for (;;) {
        k = k >= V / 4 ? V : LP_MAX(4 * k, 1024);
        if (k > V)
            k = V;
        lp_sample_spec sp = {.row = 0, .n_cand = k, .temperature = p->temperature, .n_logprobs = -1,
                             .adj = adj, .n_adj = n_adj};
        lp_sample_result r = {.cand = s->cand};
        lp_sample_host(raw, V, &sp, s->scratch, &r);
        r.max = first->max; /* the same adjusted max; the backend's total */
        r.total = first->total;
        int i = lp_sampler_choose(p, u01, &r, V);
        if (i >= 0)
            return s->cand[i];
        if (k == V) /* cannot happen: the whole vocabulary always decides */
            return s->cand[0];
    }
}

int32_t lp_sampler_sample(lp_sampler *s, const lp_sampling_params *p, lp_rng *rng, const float *logits,
                          const int32_t *prompt, int n_prompt, const int32_t *output, int n_output) {
    int V = s->vocab;
    int n_adj = lp_sampler_adjustments(s, p, prompt, n_prompt, output, n_output, s->adj);
    lp_sample_spec sp = {.row = 0, .n_cand = lp_sampler_n_cand(p, V), .temperature = p->temperature,
                         .n_logprobs = -1, .adj = s->adj, .n_adj = n_adj};
    lp_candidate first[LP_SAMPLE_MAX_CAND];
    lp_sample_result r = {.cand = first};
    lp_sample_host(logits, V, &sp, s->scratch, &r);
    double u = p->temperature > 0.0f ? lp_rng_uniform(rng) : 0.0;
    int i = lp_sampler_choose(p, u, &r, V);
    if (i >= 0)
        return first[i].id;
    return lp_sampler_choose_row(s, p, u, logits, s->adj, n_adj, &r).id;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
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
