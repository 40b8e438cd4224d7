/* test_sample.c - the sampling op (lp_backend_sample) and the sampler's two
 * halves, without a GPU:
 *  1. keys (src/backend/select.h) order logits descending, ids ascending,
 *     and give the logit back bit for bit;
 *  2. lp_sample_host against a full sort: candidates, max, totals, raw
 *     log-sum-exp and top logprobs, with adjustments and ties;
 *  3. the GPU's block algorithm (lp_sel_tile, lp_sel_merge, lp_sel_total -
 *     the code sample.cu runs, here with one thread) gives the same
 *     candidates as the host;
 *  4. the token never depends on how many candidates came back: choosing
 *     from k candidates (finishing from the row when they run out) equals
 *     choosing from the whole vocabulary, for random parameters;
 *  5. the draw's frequencies match the truncated distribution computed here
 *     independently;
 *  6. penalties and logit_bias become the adjustments the API specifies;
 *  7. bad specs are refused with a message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/select.h"
#include "engine/sampler.h"
#include "testlib.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static double unif(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }
static float gauss(void) {
    double u = unif() + 1e-12, v = unif();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* A row of logits: gaussian, some peaked, some with many ties. */
static void fill_row(float *x, int V, int kind) {
    for (int i = 0; i < V; i++) {
        float g = gauss();
        x[i] = kind == 0 ? 3.0f * g : kind == 1 ? roundf(g * 2.0f) / 2.0f : g;
    }
    if (kind == 2) /* peaked: a few clear winners */
        for (int j = 0; j < 4; j++)
            x[rnd() % (uint64_t)V] += 12.0f - 2.0f * (float)j;
}

static int random_adj(lp_logit_adjust *adj, int V, int max) {
    int n = (int)(rnd() % (uint64_t)(max + 1));
    int m = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = (int32_t)(rnd() % (uint64_t)V);
        bool dup = false;
        for (int j = 0; j < m; j++)
            dup |= adj[j].id == id;
        if (dup)
            continue;
        adj[m++] = (lp_logit_adjust){.id = id, .rep = rnd() % 2 ? 1.3f : 1.0f, .sub = (float)(rnd() % 4) * 0.25f,
                                     .bias = rnd() % 3 ? 0.0f : (float)((int)(rnd() % 21) - 10)};
    }
    return m;
}

static const float *g_sort_v;
static int cmp_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sort_v[x] != g_sort_v[y])
        return g_sort_v[x] > g_sort_v[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void test_keys(void) {
    float vals[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, 1e-45f, -1e-45f, 3.4e38f, -3.4e38f, 0.5f, 2.0f};
    int n = (int)(sizeof vals / sizeof *vals);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            uint64_t a = lp_sel_key(vals[i], (uint32_t)i), b = lp_sel_key(vals[j], (uint32_t)j);
            /* -0 and +0 compare equal as floats: then the id decides */
            bool before = vals[i] > vals[j] || (vals[i] == vals[j] && i < j);
            if (i != j)
                CHECKF((a < b) == before, "%g/%d vs %g/%d", vals[i], i, vals[j], j);
        }
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rnd();
        float v;
        memcpy(&v, &u, 4);
        if (isnan(v))
            continue;
        uint64_t k = lp_sel_key(v, (uint32_t)i);
        float w = lp_sel_value(k);
        bad += memcmp(&v, &w, 4) != 0 || lp_sel_id(k) != i;
    }
    CHECKF(bad == 0, "%d keys do not round-trip", bad);
}

/* lp_sample_host vs a full sort of the adjusted row. */
static void test_host(void) {
    enum { V = 3000 };
    static float raw[V], adjv[V];
    static int32_t idx[V];
    lp_logit_adjust adj[64];
    void *scratch = malloc(lp_sample_scratch_bytes(V));
    lp_candidate cand[LP_SAMPLE_MAX_CAND];
    lp_token_logprob top[LP_SAMPLE_MAX_LOGPROBS];
    int bad = 0;
    for (int it = 0; it < 300; it++) {
        fill_row(raw, V, it % 3);
        int n_adj = random_adj(adj, V, it % 2 ? 40 : 0);
        int ks[] = {1, 2, 7, 40, 256};
        lp_sample_spec sp = {.row = 0, .n_cand = ks[it % 5], .temperature = it % 4 ? 0.7f : 0.0f,
                             .n_logprobs = it % 3 ? (int)(rnd() % 21) : -1, .adj = adj, .n_adj = n_adj,
                             .probe = (int32_t)(rnd() % V)};
        lp_sample_result r = {.cand = cand, .top = top};
        lp_sample_host(raw, V, &sp, scratch, &r);
        bad += r.probe_raw != raw[sp.probe]; /* raw, whatever the adjustments */
        memcpy(adjv, raw, sizeof raw);
        for (int i = 0; i < n_adj; i++) {
            float l = raw[adj[i].id];
            if (adj[i].rep != 1.0f)
                l = l > 0 ? l / adj[i].rep : l * adj[i].rep;
            l = l - adj[i].sub;
            adjv[adj[i].id] = l + adj[i].bias;
        }
        for (int i = 0; i < V; i++)
            idx[i] = i;
        g_sort_v = adjv;
        qsort(idx, V, sizeof *idx, cmp_desc);
        bad += r.n_cand != sp.n_cand || r.max != adjv[idx[0]];
        for (int i = 0; i < r.n_cand; i++)
            bad += cand[i].id != idx[i] || cand[i].logit != adjv[idx[i]] || cand[i].raw != raw[idx[i]];
        double tot = 0;
        for (int i = 0; sp.temperature > 0 && i < V; i++)
            tot += exp(((double)adjv[i] - r.max) / sp.temperature);
        bad += sp.temperature > 0 ? fabs(r.total - tot) > 1e-5 * tot : r.total != 0.0;
        if (sp.n_logprobs >= 0) {
            g_sort_v = raw;
            qsort(idx, V, sizeof *idx, cmp_desc);
            double z = 0;
            for (int i = 0; i < V; i++)
                z += exp((double)raw[i] - raw[idx[0]]);
            double lse = raw[idx[0]] + log(z);
            bad += fabs(r.raw_lse - lse) > 1e-9;
            for (int i = 0; i < sp.n_logprobs; i++)
                bad += top[i].id != idx[i] || fabsf(top[i].logprob - (float)(raw[idx[i]] - lse)) > 1e-5f;
        }
    }
    CHECKF(bad == 0, "%d mismatches against a full sort", bad);
    free(scratch);
}

/* The GPU's selection run sequentially (one thread, dt = 1) vs the host. */
static void gpu_select(const float *row, int V, const lp_sample_spec *sp, int raw_pass, uint64_t *out, double *total,
                       float *max) {
    int n_tiles = (V + LP_SEL_TILE - 1) / LP_SEL_TILE;
    static uint64_t s[LP_SEL_TILE];
    uint64_t *tk = malloc(sizeof(uint64_t) * (size_t)n_tiles * LP_SAMPLE_MAX_CAND);
    double *tmax = malloc(sizeof(double) * (size_t)n_tiles), *tsum = malloc(sizeof(double) * (size_t)n_tiles);
    double red[1];
    int k = raw_pass ? (sp->n_logprobs > 0 ? sp->n_logprobs : 1) : sp->n_cand;
    float T = raw_pass ? 1.0f : sp->temperature;
    for (int t = 0; t < n_tiles; t++)
        lp_sel_tile(row, V, t * LP_SEL_TILE, sp->adj, raw_pass ? 0 : sp->n_adj, k, T, s, red,
                    tk + (size_t)t * LP_SAMPLE_MAX_CAND, &tmax[t], &tsum[t], 0, 1);
    lp_sel_merge(tk, n_tiles, k, LP_SAMPLE_MAX_CAND, s, 0, 1);
    memcpy(out, s, sizeof(uint64_t) * (size_t)k);
    *max = lp_sel_value(s[0]);
    *total = T > 0 ? lp_sel_total(tmax, tsum, n_tiles, *max, T) : 0.0;
    free(tk);
    free(tmax);
    free(tsum);
}

static void test_gpu_algorithm(void) {
    int Vs[] = {1, 3, 255, 4096, 4097, 9000, 20000, 128256};
    int bad = 0, rows = 0;
    double worst_total = 0.0, worst_lse = 0.0;
    lp_logit_adjust adj[300];
    lp_candidate cand[LP_SAMPLE_MAX_CAND];
    lp_token_logprob top[LP_SAMPLE_MAX_LOGPROBS];
    uint64_t keys[LP_SAMPLE_MAX_CAND];
    for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++) {
        int V = Vs[vi];
        float *raw = malloc(sizeof(float) * (size_t)V);
        void *scratch = malloc(lp_sample_scratch_bytes(V));
        int reps = V > 50000 ? 2 : 8;
        for (int it = 0; it < reps; it++, rows++) {
            fill_row(raw, V, it % 3);
            int ks[] = {1, 5, 20, 256};
            int n_adj = random_adj(adj, V, it % 2 ? 300 : 0);
            lp_sample_spec sp = {.row = 0, .n_cand = ks[it % 4], .temperature = it % 3 ? 0.8f : 0.0f,
                                 .n_logprobs = it % 2 ? 20 : 0, .adj = adj, .n_adj = n_adj};
            if (sp.n_cand > V)
                sp.n_cand = V;
            lp_sample_result r = {.cand = cand, .top = top};
            lp_sample_host(raw, V, &sp, scratch, &r);
            double total;
            float max;
            gpu_select(raw, V, &sp, 0, keys, &total, &max);
            bad += max != r.max;
            for (int i = 0; i < r.n_cand; i++)
                bad += lp_sel_id(keys[i]) != cand[i].id || lp_sel_value(keys[i]) != cand[i].logit;
            /* the tiles' sums in another order and rescaled: ~1e-7 */
            double et = sp.temperature > 0 ? fabs(total - r.total) / r.total : total;
            worst_total = et > worst_total ? et : worst_total;
            bad += sp.temperature > 0 ? et > 1e-6 : total != 0.0;
            gpu_select(raw, V, &sp, 1, keys, &total, &max);
            double lse = max + log(total);
            worst_lse = fabs(lse - r.raw_lse) > worst_lse ? fabs(lse - r.raw_lse) : worst_lse;
            bad += fabs(lse - r.raw_lse) > 1e-6;
            for (int i = 0; i < sp.n_logprobs && i < V; i++)
                bad += lp_sel_id(keys[i]) != top[i].id;
        }
        free(raw);
        free(scratch);
    }
    CHECKF(bad == 0, "%d mismatches between the GPU algorithm and the host over %d rows", bad, rows);
    printf("gpu algorithm: %d rows, candidates bit for bit, totals within %.1e relative, log-sum-exp within %.1e\n",
           rows, worst_total, worst_lse);
}

/* A backend's total a little above the sum of the walk (summed in another
 * order) with a draw at its very end: the token is the last one that can be
 * drawn, not the least likely of the vocabulary (whose probability is 0). */
static void test_overshoot(void) {
    enum { V = 8 };
    lp_candidate cand[V];
    float logits[V] = {5.0f, 4.0f, 3.0f, 2.0f, -150.0f, -160.0f, -170.0f, -180.0f}; /* expf(-155) == 0 */
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        cand[i] = (lp_candidate){.id = 10 + i, .logit = logits[i], .raw = logits[i]};
        sum += expf(logits[i] - logits[0]);
    }
    lp_sample_result r = {.cand = cand, .n_cand = V, .max = logits[0], .total = sum * (1.0 + 1e-9)};
    lp_sampling_params p = lp_sampling_default_params();
    p.temperature = 1.0f;
    int i = lp_sampler_choose(&p, 1.0 - 1e-12, &r, V);
    CHECKF(i == 3, "draw past the walk's sum: candidate %d (want 3, the last with a probability above 0)", i);
    p.top_k = 6; /* a cut list sums its own probabilities: no overshoot */
    i = lp_sampler_choose(&p, 1.0 - 1e-12, &r, V);
    CHECKF(i == 3, "draw at the end of a top_k list: candidate %d", i);
}

/* The token does not depend on how many candidates came back. */
static void test_choose(void) {
    enum { V = 3000 };
    static float raw[V];
    lp_logit_adjust adj[64];
    lp_sampler *s = lp_sampler_new(V);
    void *scratch = malloc(lp_sample_scratch_bytes(V));
    lp_candidate *all = malloc(sizeof(lp_candidate) * V), first[LP_SAMPLE_MAX_CAND];
    int bad = 0, more = 0, cases = 4000;
    float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f, 3.0f};
    int topk[] = {0, 0, 1, 5, 50, 300, 2000};
    float topp[] = {1.0f, 1.0f, 0.5f, 0.9f, 0.99f};
    float minp[] = {0.0f, 0.0f, 0.01f, 0.1f};
    for (int it = 0; it < cases; it++) {
        fill_row(raw, V, it % 3);
        lp_sampling_params p = lp_sampling_default_params();
        p.temperature = temps[rnd() % 6];
        p.top_k = topk[rnd() % 7];
        p.top_p = topp[rnd() % 5];
        p.min_p = minp[rnd() % 4];
        int n_adj = random_adj(adj, V, 20);
        double u = unif();
        lp_sample_spec sp = {.row = 0, .n_cand = lp_sampler_n_cand(&p, V), .temperature = p.temperature,
                             .n_logprobs = -1, .adj = adj, .n_adj = n_adj};
        lp_sample_result r = {.cand = first};
        lp_sample_host(raw, V, &sp, scratch, &r);
        int i = lp_sampler_choose(&p, u, &r, V);
        int32_t a;
        if (i >= 0) {
            a = first[i].id;
        } else {
            more++;
            a = lp_sampler_choose_row(s, &p, u, raw, adj, n_adj, &r).id;
        }
        sp.n_cand = V;
        lp_sample_result full = {.cand = all};
        lp_sample_host(raw, V, &sp, scratch, &full);
        int j = lp_sampler_choose(&p, u, &full, V);
        CHECK(j >= 0);
        bad += j < 0 || all[j].id != a;
    }
    CHECKF(bad == 0, "%d of %d draws depend on the candidate count", bad, cases);
    CHECKF(more > 20, "only %d draws went past the candidates", more);
    printf("choose: %d draws, %d finished from the full row, all equal to the whole-vocabulary choice\n", cases, more);
    free(all);
    free(scratch);
    lp_sampler_free(s);
}

/* Frequencies of lp_sampler_sample vs the distribution computed here. */
static void test_frequencies(void) {
    enum { V = 6 };
    const float lg[V] = {2.0f, 1.5f, 1.4f, 0.2f, -1.0f, 1.0f};
    lp_sampler *s = lp_sampler_new(V);
    struct {
        float T, top_p, min_p;
        int top_k;
    } cs[] = {{1.0f, 1.0f, 0.0f, 0}, {0.8f, 0.9f, 0.0f, 4}, {1.3f, 1.0f, 0.3f, 0}, {0.7f, 0.6f, 0.0f, 0}};
    for (size_t c = 0; c < sizeof cs / sizeof *cs; c++) {
        /* expected: softmax at T in sorted order, top_k, min_p, top_p, renormalised */
        int order[V] = {0, 1, 2, 5, 3, 4}; /* lg sorted descending */
        double p[V], z = 0;
        for (int i = 0; i < V; i++)
            z += p[i] = exp((lg[order[i]] - lg[order[0]]) / cs[c].T);
        int n = cs[c].top_k ? cs[c].top_k : V;
        int m = 1;
        while (m < n && p[m] >= cs[c].min_p * p[0])
            m++;
        n = m;
        if (cs[c].top_p < 1.0f) {
            double tot = 0, cum = 0;
            for (int i = 0; i < n; i++)
                tot += p[i];
            int k = 0;
            while (k < n) {
                cum += p[k++];
                if (cum >= cs[c].top_p * tot)
                    break;
            }
            n = k;
        }
        double kept = 0, want[V] = {0};
        for (int i = 0; i < n; i++)
            kept += p[i];
        for (int i = 0; i < n; i++)
            want[order[i]] = p[i] / kept;
        lp_sampling_params sp = lp_sampling_default_params();
        sp.temperature = cs[c].T;
        sp.top_k = cs[c].top_k;
        sp.top_p = cs[c].top_p;
        sp.min_p = cs[c].min_p;
        lp_rng rng;
        lp_rng_seed(&rng, 7 + c);
        int cnt[V] = {0}, N = 200000;
        for (int i = 0; i < N; i++)
            cnt[lp_sampler_sample(s, &sp, &rng, lg, NULL, 0, NULL, 0)]++;
        double worst = 0;
        for (int i = 0; i < V; i++)
            worst = fmax(worst, fabs((double)cnt[i] / N - want[i]));
        CHECKF(worst < 0.005, "case %zu: frequencies off by %.4f", c, worst);
    }
    lp_sampler_free(s);
}

static void test_adjustments(void) {
    enum { V = 10 };
    lp_sampler *s = lp_sampler_new(V);
    int32_t prompt[] = {1, 2, 2}, output[] = {2, 3, 3, 3};
    lp_logit_bias bias[] = {{3, 1.0f}, {3, 2.0f}, {7, -5.0f}};
    lp_sampling_params p = lp_sampling_default_params();
    p.temperature = 1.0f;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.logit_bias = bias;
    p.n_logit_bias = 3;
    lp_logit_adjust adj[16];
    int n = lp_sampler_adjustments(s, &p, prompt, 3, output, 4, adj);
    CHECK(n == 4);
    float want[V] = {0};
    for (int i = 0; i < n; i++) {
        const lp_logit_adjust *a = &adj[i];
        if (a->id == 2)
            CHECK(a->rep == 1.3f && a->sub == 0.75f && a->bias == 0.0f);
        else if (a->id == 3)
            CHECK(a->rep == 1.3f && a->sub == 1.25f && a->bias == 3.0f);
        else if (a->id == 1)
            CHECK(a->rep == 1.3f && a->sub == 0.0f && a->bias == 0.0f);
        else
            CHECK(a->id == 7 && a->rep == 1.0f && a->sub == 0.0f && a->bias == -5.0f);
        want[a->id] = 1;
    }
    CHECK(want[1] && want[2] && want[3] && want[7]);
    /* applied: positive logits divided, negative multiplied, then the rest */
    lp_logit_adjust a2 = {.id = 0, .rep = 2.0f, .sub = 0.5f, .bias = 1.0f};
    CHECK(lp_sel_adjust(3.0f, &a2) == 2.0f && lp_sel_adjust(-3.0f, &a2) == -5.5f);
    /* the marks are cleared: nothing left over for a request without penalties */
    lp_sampling_params q = lp_sampling_default_params();
    CHECK(lp_sampler_adjustments(s, &q, prompt, 3, output, 4, adj) == 0);
    p.logit_bias = NULL;
    p.n_logit_bias = 0;
    p.repetition_penalty = 1.0f;
    CHECK(lp_sampler_adjustments(s, &p, prompt, 3, output, 4, adj) == 2); /* 2 and 3: in the output */
    lp_sampler_free(s);
}

static void test_check(void) {
    lp_error err;
    lp_logit_adjust bad_adj = {.id = 50, .rep = 1.0f};
    lp_sample_spec ok = {.row = 0, .n_cand = 4, .temperature = 1.0f, .n_logprobs = -1};
    CHECK(lp_sample_check(&ok, 1, 1, 10, 256, &err) == LP_OK);
    lp_sample_spec s = ok;
    s.row = 1;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "row 1"));
    s = ok;
    s.n_cand = 0;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "candidates"));
    s.n_cand = 257;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID);
    s = ok;
    s.n_logprobs = 21;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "logprobs"));
    s = ok;
    s.adj = &bad_adj;
    s.n_adj = 1;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "token id 50"));
    s = ok;
    s.probe = 10;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "probed token id 10"));
    s.probe = -1;
    CHECK(lp_sample_check(&s, 1, 1, 10, 256, &err) == LP_ERR_INVALID && strstr(err.msg, "probed"));
}

int main(void) {
    test_keys();
    test_host();
    test_gpu_algorithm();
    test_choose();
    test_overshoot();
    test_frequencies();
    test_adjustments();
    test_check();
    return lp_test_finish("test_sample");
}
