/* cpu_backend.c - the CPU backend: a batched forward pass of a Llama-family
 * decoder over many sequences at once with a paged KV cache. fp32
 * activations and accumulation on weights kept in their file dtype; the
 * matrix work goes through kernels.h (AVX-512 / AVX2 / scalar at run time).
 *
 * Data flow of one call (T = total tokens of all rows):
 *   embed -> [ rmsnorm -> q,k,v (+bias, q/k norm) -> rope -> KV write ->
 *   attention -> o -> +residual -> rmsnorm -> gate,up -> silu*mul -> down ->
 *   +residual ] x layers -> final rmsnorm (logit rows only) -> lm_head */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/common.h"
#include "backend/cpu/kernels.h"
#include "lora/adapter-impl.h"
#include "model/model-impl.h"
#include "util/log.h"
#include "util/util.h"

typedef struct cpu_backend {
    lp_backend base;
    const lp_model_config *cfg;
    int64_t q_dim, kv_dim;  /* n_heads*head_dim, n_kv_heads*head_dim */
    int64_t max_ctx;        /* longest sequence the pool and scratch allow */
    int n_threads;
    /* KV pool: [block][layer][k|v][kv_head][slot][head_dim] fp32 */
    float *kv;
    size_t block_floats;
    /* scratch, sized for params.max_tokens tokens */
    float *x;        /* (T, hidden) residual stream */
    float *xn;       /* (T, hidden) normed */
    float *q;        /* (T, q_dim) */
    float *k, *v;    /* (T, kv_dim) */
    float *att;      /* (T, q_dim) attention output */
    float *tmp;      /* (T, hidden) projection output before the residual add */
    float *gate, *up;/* (T, ffn) */
    float *rcos, *rsin; /* (T, head_dim/2) rotary tables of this call */
    float *scores;   /* (n_threads, max_ctx) */
    float *lin;      /* (max_logit_rows, hidden) final-normed rows that need logits */
    float *logits;   /* (max_logit_rows, vocab) the last forward's logits */
    int64_t n_logits;/* rows of them */
    void *sample_scratch; /* (n_threads) x lp_sample_scratch_bytes(vocab) */
    int32_t *tok_row, *tok_pos; /* (T) row index and position of each token */
    float *inv_freq; /* (head_dim/2) */
    float *lora_v;   /* (T, max_lora_rank) shrink output */
    float *lora_u;   /* (T, widest projection) expand output (DoRA) */
    const lp_adapter **slots; /* (max_adapters) the device tier: borrowed */
    bool any_adapter;         /* this call has a row with an adapter */
    const lp_batch_row *rows; /* of the current call */
    int n_rows;
} cpu_backend;

lp_backend_params lp_backend_default_params(void) {
    lp_backend_params p = {
        .n_kv_blocks = 1024, .block_size = 16, .max_tokens = 512, .max_rows = 64,
        .max_logit_rows = 64, .n_threads = 0, .max_adapters = 8, .max_lora_rank = 256,
    };
    return p;
}

static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * r);
}

static void rope_apply(float *v, const float *cs, const float *sn, int half) {
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
    }
}

/* Pointer to the K (which=0) or V (1) vector of kv head g at position p. */
static inline float *kv_at(cpu_backend *b, const int32_t *blocks, int layer, int which, int g,
                           int64_t p) {
    const lp_model_config *c = b->cfg;
    int bs = b->base.params.block_size;
    size_t blk = (size_t)blocks[p / bs];
    size_t off = blk * b->block_floats +
                 ((((size_t)layer * 2 + (size_t)which) * (size_t)c->n_kv_heads + (size_t)g) *
                      (size_t)bs + (size_t)(p % bs)) * (size_t)c->head_dim;
    return b->kv + off;
}

/* Add the LoRA terms of projection m of layer l to Y for every segment of
 * consecutive rows that share an adapter slot: one shrink (V = X A^T) and one
 * expand (Y += s V B^T) per segment, at the segment's own rank. DoRA rows get
 * Y = b + g (W x + s B A x) with g = magnitude / ||W + s B A||_row; a row's
 * adapter_scale multiplies the whole adapter delta. */
static void lora_apply(cpu_backend *b, const lp__layer *L, int layer, lp__module m, const float *X,
                       float *Y) {
    const lp__weight *w = &L->proj[m];
    int64_t rows = w->rows, cols = w->cols;
    int64_t t0 = 0;
    for (int i = 0; i < b->n_rows;) {
        int slot = b->rows[i].adapter;
        int j = i;
        int64_t n = 0;
        while (j < b->n_rows && b->rows[j].adapter == slot)
            n += b->rows[j++].n_tokens;
        const lp__lora_mod *md = slot >= 0 ? lp__adapter_mod(b->slots[slot], layer, m) : NULL;
        if (md && md->rank) {
            int r = md->rank;
            float *V = b->lora_v;
            lp__cpu_matmul(V, r, X + t0 * cols, cols, md->A.data, md->A.dtype, cols, n, r, cols, false);
            /* per-token scale: adapter scaling x the row's own scale */
            int64_t t = 0;
            for (int k = i; k < j; k++)
                for (int q = 0; q < b->rows[k].n_tokens; q++, t++) {
                    float sc = md->scaling * (md->dora_scale ? 1.0f : b->rows[k].adapter_scale);
                    for (int c = 0; c < r; c++)
                        V[t * r + c] *= sc;
                }
            float *Yseg = Y + t0 * rows;
            if (!md->dora_scale) {
                lp__cpu_matmul(Yseg, rows, V, r, md->B.data, md->B.dtype, r, n, rows, r, true);
            } else {
                float *U = b->lora_u;
                lp__cpu_matmul(U, rows, V, r, md->B.data, md->B.dtype, r, n, rows, r, false);
                const float *bias = L->bias[m], *g = md->dora_scale;
                t = 0;
                for (int k = i; k < j; k++) {
                    float alpha = b->rows[k].adapter_scale;
                    for (int q = 0; q < b->rows[k].n_tokens; q++, t++)
                        for (int64_t o = 0; o < rows; o++) {
                            float base = Yseg[t * rows + o] - (bias ? bias[o] : 0.0f);
                            Yseg[t * rows + o] += alpha * ((g[o] - 1.0f) * base + g[o] * U[t * rows + o]);
                        }
                }
            }
        }
        t0 += n;
        i = j;
    }
}

/* Y (T, rows) = X (T, cols) . W^T + bias (+ LoRA), for projection m of layer l. */
static void project(cpu_backend *b, const lp__layer *L, int layer, lp__module m, const float *X,
                    float *Y, int64_t T) {
    const lp__weight *w = &L->proj[m];
    lp__cpu_matmul(Y, w->rows, X, w->cols, w->data, w->dtype, w->cols, T, w->rows, w->cols, false);
    if (L->bias[m]) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < w->rows; i++)
                Y[t * w->rows + i] += L->bias[m][i];
    }
    if (b->any_adapter)
        lora_apply(b, L, layer, m, X, Y);
}

static void attention(cpu_backend *b, const lp_batch_row *rows, int layer, int64_t T) {
    const lp_model_config *c = b->cfg;
    int H = c->n_heads, hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    int64_t work = T * H;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1) num_threads(b->n_threads)
    for (int64_t w = 0; w < work; w++) {
        int64_t t = w / H;
        int h = (int)(w % H), g = h / group;
        const lp_batch_row *r = &rows[b->tok_row[t]];
        int64_t pos = b->tok_pos[t];
        int64_t start = 0;
        if (c->sliding_window > 0 && pos - c->sliding_window + 1 > 0)
            start = pos - c->sliding_window + 1;
        float *sc = b->scores + (size_t)omp_get_thread_num() * (size_t)b->max_ctx;
        const float *qv = b->q + t * b->q_dim + (int64_t)h * hd;
        float mx = -INFINITY;
        for (int64_t p = start; p <= pos; p++) {
            float s = lp__cpu_dot_f32(qv, kv_at(b, r->blocks, layer, 0, g, p), hd) * scale;
            sc[p - start] = s;
            if (s > mx)
                mx = s;
        }
        double sum = 0.0;
        for (int64_t p = start; p <= pos; p++) {
            float e = expf(sc[p - start] - mx);
            sc[p - start] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        float *out = b->att + t * b->q_dim + (int64_t)h * hd;
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (int64_t p = start; p <= pos; p++)
            lp__cpu_axpy_f32(out, sc[p - start] * inv, kv_at(b, r->blocks, layer, 1, g, p), hd);
    }
}

static int cpu_forward(lp_backend *base, const lp_batch_row *rows, int n_rows, float *logits,
                       lp_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    const lp_model *m = base->model;
    const lp_model_config *c = b->cfg;
    int64_t T, n_logits;
    int rc = lp__backend_check_rows(base, rows, n_rows, (const void *const *)b->slots, &T,
                                    &n_logits, err);
    b->n_logits = 0;
    if (rc)
        return rc;
    int64_t D = c->hidden, F = c->ffn, hd = c->head_dim, half = hd / 2;
    /* the thread count is per calling thread in OpenMP: the server's engine
     * thread must get the configured count too (the attention scratch is
     * sized for it) */
    omp_set_num_threads(b->n_threads);
    b->rows = rows;
    b->n_rows = n_rows;
    b->any_adapter = false;
    for (int i = 0; i < n_rows; i++)
        b->any_adapter |= rows[i].adapter >= 0;

    /* token -> row, position; embeddings; rotary tables */
    for (int i = 0, t = 0; i < n_rows; i++)
        for (int j = 0; j < rows[i].n_tokens; j++, t++) {
            b->tok_row[t] = i;
            b->tok_pos[t] = rows[i].pos0 + j;
        }
#pragma omp parallel for if (T > 8)
    for (int64_t t = 0; t < T; t++) {
        const lp_batch_row *r = &rows[b->tok_row[t]];
        int32_t id = r->tokens[b->tok_pos[t] - r->pos0];
        size_t esz = lp_dtype_size(m->embed.dtype);
        lp__cpu_to_f32(b->x + t * D, (const uint8_t *)m->embed.data + (size_t)id * (size_t)D * esz,
                       m->embed.dtype, D);
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)b->tok_pos[t] * b->inv_freq[i]; /* fp32, as the reference */
            b->rcos[t * half + i] = cosf(ang);
            b->rsin[t * half + i] = sinf(ang);
        }
    }

    for (int l = 0; l < c->n_layers; l++) {
        const lp__layer *L = &m->layers[l];
        for (int64_t t = 0; t < T; t++)
            rmsnorm(b->xn + t * D, b->x + t * D, L->attn_norm, D, c->rms_eps);
        project(b, L, l, LP_MOD_Q, b->xn, b->q, T);
        project(b, L, l, LP_MOD_K, b->xn, b->k, T);
        project(b, L, l, LP_MOD_V, b->xn, b->v, T);
#pragma omp parallel for if (T > 8)
        for (int64_t t = 0; t < T; t++) {
            const lp_batch_row *r = &rows[b->tok_row[t]];
            for (int h = 0; h < c->n_heads; h++) {
                float *qh = b->q + t * b->q_dim + h * hd;
                if (c->qk_norm)
                    rmsnorm(qh, qh, L->q_norm, hd, c->rms_eps);
                rope_apply(qh, b->rcos + t * half, b->rsin + t * half, (int)half);
            }
            for (int g = 0; g < c->n_kv_heads; g++) {
                float *kh = b->k + t * b->kv_dim + g * hd;
                if (c->qk_norm)
                    rmsnorm(kh, kh, L->k_norm, hd, c->rms_eps);
                rope_apply(kh, b->rcos + t * half, b->rsin + t * half, (int)half);
                memcpy(kv_at(b, r->blocks, l, 0, g, b->tok_pos[t]), kh, sizeof(float) * (size_t)hd);
                memcpy(kv_at(b, r->blocks, l, 1, g, b->tok_pos[t]), b->v + t * b->kv_dim + g * hd,
                       sizeof(float) * (size_t)hd);
            }
        }
        attention(b, rows, l, T);
        project(b, L, l, LP_MOD_O, b->att, b->tmp, T);
        for (int64_t i = 0; i < T * D; i++)
            b->x[i] += b->tmp[i];
        for (int64_t t = 0; t < T; t++)
            rmsnorm(b->xn + t * D, b->x + t * D, L->ffn_norm, D, c->rms_eps);
        project(b, L, l, LP_MOD_GATE, b->xn, b->gate, T);
        project(b, L, l, LP_MOD_UP, b->xn, b->up, T);
#pragma omp parallel for if (T * F > 65536)
        for (int64_t i = 0; i < T * F; i++) {
            float g = b->gate[i];
            b->gate[i] = g / (1.0f + expf(-g)) * b->up[i];
        }
        project(b, L, l, LP_MOD_DOWN, b->gate, b->tmp, T);
        for (int64_t i = 0; i < T * D; i++)
            b->x[i] += b->tmp[i];
    }

    /* final norm on the rows that need logits, then lm_head */
    int64_t nl = 0;
    for (int64_t t = 0; t < T; t++) {
        const lp_batch_row *r = &rows[b->tok_row[t]];
        bool last = b->tok_pos[t] == r->pos0 + r->n_tokens - 1;
        if (r->logits == LP_LOGITS_ALL || (r->logits == LP_LOGITS_LAST && last))
            rmsnorm(b->lin + (nl++) * D, b->x + t * D, m->final_norm, D, c->rms_eps);
    }
    if (nl)
        lp__cpu_matmul(b->logits, c->vocab, b->lin, D, m->lm_head.data, m->lm_head.dtype, D, nl, c->vocab,
                       D, false);
    if (nl && logits)
        memcpy(logits, b->logits, sizeof(float) * (size_t)nl * (size_t)c->vocab);
    b->n_logits = nl;
    return LP_OK;
}

static int cpu_sample(lp_backend *base, const lp_sample_spec *specs, int n_specs, lp_sample_result *out,
                      lp_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    int V = b->cfg->vocab;
    int rc = lp_sample_check(specs, n_specs, b->n_logits, V, LP_SAMPLE_MAX_CAND, err);
    if (rc)
        return rc;
    size_t per = lp_sample_scratch_bytes(V);
#pragma omp parallel for schedule(dynamic, 1) if (n_specs > 1) num_threads(b->n_threads)
    for (int i = 0; i < n_specs; i++)
        lp_sample_host(b->logits + (size_t)specs[i].row * (size_t)V, V, &specs[i],
                       (char *)b->sample_scratch + (size_t)omp_get_thread_num() * per, &out[i]);
    return LP_OK;
}

static const float *cpu_logits(lp_backend *base, int first, int n, float *buf, lp_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    (void)buf;
    if (lp_logits_check(first, n, b->n_logits, err))
        return NULL;
    return b->logits + (size_t)first * (size_t)b->cfg->vocab;
}

static void cpu_free(lp_backend *base) {
    cpu_backend *b = (cpu_backend *)base;
    if (!b)
        return;
    free(b->kv);
    free(b->x);
    free(b->xn);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->tmp);
    free(b->gate);
    free(b->up);
    free(b->rcos);
    free(b->rsin);
    free(b->scores);
    free(b->lin);
    free(b->logits);
    free(b->sample_scratch);
    free(b->tok_row);
    free(b->tok_pos);
    free(b->inv_freq);
    free(b->lora_v);
    free(b->lora_u);
    free(b->slots);
    free(b);
}

static int cpu_adapter_load(lp_backend *base, int slot, const lp_adapter *a, lp_error *err) {
    cpu_backend *b = (cpu_backend *)base;
    int rc = lp__backend_check_adapter(base, slot, a, err);
    if (rc)
        return rc;
    b->slots[slot] = a;
    return LP_OK;
}

static void cpu_adapter_unload(lp_backend *base, int slot) {
    cpu_backend *b = (cpu_backend *)base;
    if (slot >= 0 && slot < base->params.max_adapters)
        b->slots[slot] = NULL;
}

static const lp_backend_ops k_cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .forward = cpu_forward,
    .adapter_load = cpu_adapter_load,
    .adapter_unload = cpu_adapter_unload,
    .sample = cpu_sample,
    .logits = cpu_logits,
};

int lp_backend_cpu_new(const lp_model *model, const lp_backend_params *params, lp_backend **out,
                       lp_error *err) {
    *out = NULL;
    lp_backend_params P = params ? *params : lp_backend_default_params();
    if (P.n_kv_blocks < 1 || P.block_size < 1 || P.max_tokens < 1 || P.max_rows < 1 ||
        P.max_logit_rows < 1 || P.max_adapters < 0 || P.max_lora_rank < 1)
        return lp_error_set(err, LP_ERR_INVALID, "cpu backend: all sizes must be positive");
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    const lp_model_config *c = lp_model_get_config(model);
    b->base.ops = &k_cpu_ops;
    b->base.model = model;
    b->base.params = P;
    b->cfg = c;
    b->q_dim = (int64_t)c->n_heads * c->head_dim;
    b->kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    b->max_ctx = (int64_t)P.n_kv_blocks * P.block_size;
    b->n_threads = P.n_threads > 0 ? P.n_threads : omp_get_max_threads();
    if (P.n_threads > 0)
        omp_set_num_threads(P.n_threads);
    size_t T = (size_t)P.max_tokens, D = (size_t)c->hidden, F = (size_t)c->ffn;
    size_t half = (size_t)c->head_dim / 2;
    bool ok = lp__mul_size((size_t)c->n_layers * 2 * (size_t)b->kv_dim, (size_t)P.block_size,
                           &b->block_floats);
    size_t kv_floats = 0;
    ok = ok && lp__mul_size(b->block_floats, (size_t)P.n_kv_blocks, &kv_floats);
    if (!ok) {
        cpu_free(&b->base);
        return lp_error_set(err, LP_ERR_LIMIT, "cpu backend: KV cache size overflows");
    }
    b->kv = lp__malloc_array(kv_floats, sizeof(float));
    b->x = lp__malloc_array(T * D, sizeof(float));
    b->xn = lp__malloc_array(T * D, sizeof(float));
    b->tmp = lp__malloc_array(T * D, sizeof(float));
    b->q = lp__malloc_array(T * (size_t)b->q_dim, sizeof(float));
    b->att = lp__malloc_array(T * (size_t)b->q_dim, sizeof(float));
    b->k = lp__malloc_array(T * (size_t)b->kv_dim, sizeof(float));
    b->v = lp__malloc_array(T * (size_t)b->kv_dim, sizeof(float));
    b->gate = lp__malloc_array(T * F, sizeof(float));
    b->up = lp__malloc_array(T * F, sizeof(float));
    b->rcos = lp__malloc_array(T * half, sizeof(float));
    b->rsin = lp__malloc_array(T * half, sizeof(float));
    b->scores = lp__malloc_array((size_t)b->n_threads * (size_t)b->max_ctx, sizeof(float));
    b->lin = lp__malloc_array((size_t)P.max_logit_rows * D, sizeof(float));
    b->logits = lp__malloc_array((size_t)P.max_logit_rows * (size_t)c->vocab, sizeof(float));
    b->sample_scratch = lp__malloc_array((size_t)b->n_threads, lp_sample_scratch_bytes(c->vocab));
    b->tok_row = lp__malloc_array(T, sizeof(int32_t));
    b->tok_pos = lp__malloc_array(T, sizeof(int32_t));
    b->inv_freq = lp__malloc_array(half, sizeof(float));
    size_t widest = (size_t)LP_MAX(LP_MAX(b->q_dim, b->kv_dim), LP_MAX(c->hidden, c->ffn));
    b->lora_v = lp__malloc_array(T * (size_t)P.max_lora_rank, sizeof(float));
    b->lora_u = lp__malloc_array(T * widest, sizeof(float));
    b->slots = lp__calloc_array((size_t)(P.max_adapters ? P.max_adapters : 1), sizeof(*b->slots));
    if (!b->kv || !b->x || !b->xn || !b->tmp || !b->q || !b->att || !b->k || !b->v || !b->gate ||
        !b->up || !b->rcos || !b->rsin || !b->scores || !b->lin || !b->logits || !b->sample_scratch || !b->tok_row || !b->tok_pos ||
        !b->inv_freq || !b->lora_v || !b->lora_u || !b->slots) {
        cpu_free(&b->base);
        return lp_error_set(err, LP_ERR_NOMEM, "cpu backend: out of memory for %zu MiB of KV cache and scratch",
                            kv_floats * 4 >> 20);
    }
    lp__rope_inv_freq(c, b->inv_freq);
    *out = &b->base;
    return LP_OK;
}
