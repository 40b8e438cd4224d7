/* sample.c - the sampling op (lp_backend_sample) on the host: apply a row's
 * logit adjustments, select its best candidates with a bounded heap of keys
 * (src/backend/select.h: the same order the GPU's sorted tiles give), and
 * the softmax normalisers. O(vocab log n_cand) at worst, ~O(vocab) in
 * practice: most logits lose against the heap's top at once. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/select.h"

/* Scratch: the keys (8-byte aligned) first, then the adjusted row; a multiple
 * of 8 bytes, so per-thread scratch cut from one allocation stays aligned. */
size_t lp_sample_scratch_bytes(int vocab) {
    size_t v = (size_t)(vocab > 0 ? vocab : 1);
    return (v * (sizeof(uint64_t) + sizeof(float)) + 7) / 8 * 8;
}

int lp_sample_check(const lp_sample_spec *specs, int n_specs, int64_t n_rows, int vocab, int max_cand,
                    lp_error *err) {
    for (int i = 0; i < n_specs; i++) {
        const lp_sample_spec *s = &specs[i];
        if (s->row < 0 || s->row >= n_rows)
            return lp_error_set(err, LP_ERR_INVALID, "sample: row %d, but the last forward returned %lld logit rows",
                                s->row, (long long)n_rows);
        if (s->n_cand < 1 || s->n_cand > max_cand)
            return lp_error_set(err, LP_ERR_INVALID, "sample: %d candidates asked (1..%d)", s->n_cand, max_cand);
        if (s->n_logprobs < -1 || s->n_logprobs > LP_SAMPLE_MAX_LOGPROBS)
            return lp_error_set(err, LP_ERR_INVALID, "sample: %d top logprobs asked (-1..%d)", s->n_logprobs,
                                LP_SAMPLE_MAX_LOGPROBS);
        if (s->probe < 0 || s->probe >= vocab)
            return lp_error_set(err, LP_ERR_INVALID, "sample: probed token id %d is out of range [0, %d)", s->probe,
                                vocab);
        if (s->n_adj < 0 || (s->n_adj > 0 && !s->adj))
            return lp_error_set(err, LP_ERR_INVALID, "sample: bad adjustment list");
        for (int j = 0; j < s->n_adj; j++)
            if (s->adj[j].id < 0 || s->adj[j].id >= vocab)
                return lp_error_set(err, LP_ERR_INVALID, "sample: adjusted token id %d is out of range [0, %d)",
                                    s->adj[j].id, vocab);
    }
    return LP_OK;
}

int lp_logits_check(int first, int n, int64_t n_rows, lp_error *err) {
    if (first < 0 || n < 0 || (int64_t)first + n > n_rows)
        return lp_error_set(err, LP_ERR_INVALID, "logits: rows %d..%d, but the last forward returned %lld", first,
                            first + n, (long long)n_rows);
    return LP_OK;
}

static void heap_down(uint64_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] > h[m])
            m = l;
        if (r < n && h[r] > h[m])
            m = r;
        if (m == i)
            return;
        uint64_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k smallest keys of v[0..n) into h, ascending (best first). */
static int select_keys(const float *v, int n, int k, uint64_t *h) {
    if (k > n)
        k = n;
    int m = 0;
    for (int i = 0; i < n; i++) {
        uint64_t key = lp_sel_key(v[i], (uint32_t)i);
        if (m < k) { /* max-heap: sift up */
            int j = m++;
            while (j > 0 && h[(j - 1) / 2] < key) {
                h[j] = h[(j - 1) / 2];
                j = (j - 1) / 2;
            }
            h[j] = key;
        } else if (key < h[0]) {
            h[0] = key;
            heap_down(h, m, 0);
        }
    }
    for (int e = m - 1; e > 0; e--) { /* heap sort: ascending */
        uint64_t t = h[0];
        h[0] = h[e];
        h[e] = t;
        heap_down(h, e, 0);
    }
    return m;
}

void lp_sample_host(const float *raw, int vocab, const lp_sample_spec *sp, void *scratch, lp_sample_result *out) {
    uint64_t *keys = scratch;
    float *adj = (float *)(void *)(keys + vocab);
    const float *v = raw;
    if (sp->n_adj > 0) {
        memcpy(adj, raw, sizeof(float) * (size_t)vocab);
        for (int i = 0; i < sp->n_adj; i++)
            adj[sp->adj[i].id] = lp_sel_adjust(raw[sp->adj[i].id], &sp->adj[i]);
        v = adj;
    }
    int n = select_keys(v, vocab, sp->n_cand, keys);
    for (int i = 0; i < n; i++) {
        int32_t id = lp_sel_id(keys[i]);
        out->cand[i] = (lp_candidate){.id = id, .logit = v[id], .raw = raw[id]};
    }
    out->n_cand = n;
    out->max = v[lp_sel_id(keys[0])];
    out->probe_raw = raw[sp->probe];
    out->total = 0.0;
    if (sp->temperature > 0.0f) {
        double sum = 0.0;
        for (int i = 0; i < vocab; i++)
            sum += expf((v[i] - out->max) / sp->temperature);
        out->total = sum;
    }
    out->raw_lse = 0.0;
    if (sp->n_logprobs >= 0) {
        float mx = raw[0];
        for (int i = 1; i < vocab; i++)
            if (raw[i] > mx)
                mx = raw[i];
        double sum = 0.0;
        for (int i = 0; i < vocab; i++)
            sum += exp((double)raw[i] - mx);
        double lse = mx + log(sum);
        out->raw_lse = lse;
        int k = sp->n_logprobs > 0 ? select_keys(raw, vocab, sp->n_logprobs, keys) : 0;
        for (int i = 0; i < k; i++) {
            int32_t id = lp_sel_id(keys[i]);
            out->top[i] = (lp_token_logprob){.id = id, .logprob = (float)((double)raw[id] - lse)};
        }
    }
}
