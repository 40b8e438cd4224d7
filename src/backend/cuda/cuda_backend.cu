/* cuda_backend.cu - the CUDA backend: the same batched forward pass as the
 * CPU backend (src/backend/cpu/cpu_backend.c) with weights, KV cache and
 * adapters in GPU memory.
 *
 * Weights are uploaded once in the model's compute type (bf16 for bf16
 * checkpoints, fp16, or fp32) with q/k/v and gate/up concatenated, so a
 * layer is four cuBLAS products (bf16 in, fp32 accumulate and out):
 *
 *   embed -> [ add+rmsnorm -> qkv GEMM (+LoRA q,k,v) -> bias/qk-norm/rope/
 *   KV write -> paged attention -> o GEMM (+LoRA o) -> add+rmsnorm ->
 *   gate|up GEMM (+LoRA gate,up) -> silu*mul -> down GEMM (+LoRA down) ]
 *   x layers -> add+final norm (logit rows) -> lm_head GEMM -> logits
 *
 * The products go through cuBLASLt with a plan per shape (descriptors and
 * the heuristic's algorithm, made once); LORAPLEX_CUDA_GEMM=ex uses
 * cublasGemmEx instead, to compare.
 *
 * Per call, one pinned host buffer with the token metadata (ids, positions,
 * block tables, logit rows, the LoRA token grouping) goes to the device in
 * one copy; everything then runs on one stream and the logits come back in
 * one copy at the end.
 *
 * Device tier: adapter_stage lays an adapter out for the GPU
 * (src/backend/lora_layout.h) in pinned host memory when the store brings it
 * into the host tier, on the store's loader thread. adapter_load then
 * allocates its exact size (by its own ranks) from a stream-ordered memory
 * pool and copies it on a separate copy stream, so loads overlap running
 * batches and cost the engine thread no host work; the next forward that
 * names the slot waits for that copy's event on the GPU, not on the host. */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern "C" {
#include "backend/backend.h"
#include "backend/common.h"
#include "backend/hostpool.h"
#include "backend/lora_layout.h"
#include "lora/adapter-impl.h"
#include "model/model-impl.h"
#include "util/log.h"
#include "util/util.h"
}
#include "backend/cuda/cuda-impl.h"

#define PART_TOKEN_SPLITS 2048 /* most (token, split) pairs of split attention per call */
#define ALIGN 256

typedef struct cu_layer {
    void *qkv, *o, *gu, *down;          /* compute type, (rows, cols) row-major */
    float *qkv_b, *o_b, *gu_b, *down_b; /* NULL when the model has none */
    float *attn_norm, *ffn_norm, *q_norm, *k_norm;
} cu_layer;

struct cu_staged;
typedef struct cu_slot {
    const lp_adapter *a;  /* NULL = empty */
    void *dev;            /* device copy (pool) */
    struct cu_staged *tmp; /* the host layout of an adapter that was not staged, for this load */
    cudaEvent_t ready;   /* recorded after the copy on the copy stream */
    bool dora;           /* some module is DoRA */
} cu_slot;

#define N_GRAPHS 32

/* A cuBLASLt plan for one product shape: Y (T, N) fp32 = X (T, K) W^T, X
 * and W in the compute type, rows ldx and ldy apart. */
typedef struct lt_plan {
    int N, T, K, ldx, ldy; /* the key; N = 0: an unused entry */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t w, x, y;
    cublasLtMatmulAlgo_t algo;
    bool ok; /* the heuristic gave an algorithm: else cublasGemmEx for this shape */
    uint64_t used;
} lt_plan;
#define N_LT_PLANS 128 /* a few products per call shape; least recently used replaced */

/* What the launches of one call depend on besides device buffers. */
typedef struct call_shape {
    int64_t T, nl, n_items; /* tokens, logit rows, LoRA tiles (of adapter tokens) */
    int64_t n_qt, n_atok; /* attention: tensor-core query tiles, the other tokens (0, 0: all per token) */
    int splits;
    bool few;        /* attention: the kernel for a few decode tokens */
    bool lora, dora; /* rows with adapters; with DoRA adapters */
} call_shape;

/* A captured decode call, replayed while the shape repeats. */
typedef struct graph_entry {
    call_shape key;
    cudaGraphExec_t exec; /* NULL = free */
    uint64_t used;
} graph_entry;

typedef struct cuda_backend {
    lp_backend base;
    const lp_model_config *cfg;
    lp_cu_type ct, kt; /* compute type, KV cache type (lp_cu_kv_type) */
    size_t csz;
    int64_t q_dim, kv_dim, qkv_dim;
    int n_sm, dev;
    char device_name[256];
    cudaStream_t st, cp, side; /* compute, adapter copies, LoRA beside the GEMMs */
    cudaEvent_t ev_fork, ev_join;
    cublasHandle_t blas;
    cudaMemPool_t pool;
    void *arena; /* all weights */
    cu_layer *L;
    void *embed, *lm_head;
    float *final_norm, *inv_freq;
    void *kv;
    size_t block_elems;
    /* scratch for params.max_tokens tokens */
    float *x, *tmp, *qkv, *q, *gu, *part, *logits, *lora_v, *ylora;
    size_t lora_v_floats;
    unsigned *lora_cnt; /* (max_tokens, LP_CU_MAX_MODS) split counters of the shrink */
    void *xn, *att, *act, *lin;
    float *lora_x; /* the LoRA shrink's fp32 input, rows by place: normed x, attention out or silu*mul */
    /* per-call metadata: pinned host and device copies of the same layout */
    int32_t *h_meta, *d_meta;
    size_t meta_cap; /* int32 elements */
    int32_t *cnt;    /* (max_adapters) tokens per slot, host */
    /* device tier */
    lp_cu_lora_desc *h_desc, *d_desc; /* (max_adapters, n_layers, 7) */
    cu_slot *slots;
    const lp_adapter **slot_ptrs;
    lp_hostpool *pinned; /* staged adapters (one reference per staged copy) */
    bool warned_pageable; /* said once that staging fell back to pageable memory */
    /* CUDA graphs of decode calls (LORAPLEX_CUDA_GRAPHS=0 turns them off) */
    bool use_graphs;
    /* attention kernel: 0 by the call's size, 1 always the few-token one, 2
     * never (LORAPLEX_CUDA_ATTN=auto|few|tile, to compare them) */
    int attn_mode;
    bool tc_fits; /* the tensor-core prefill kernel's shared memory fits this GPU */
    graph_entry graphs[N_GRAPHS];
    uint64_t graph_clock;
    call_shape last_shape;
    void *blas_ws; /* cuBLAS workspace: no allocation inside a capture */
    size_t blas_ws_bytes;
    /* products through cuBLASLt plans (LORAPLEX_CUDA_GEMM=ex: cublasGemmEx) */
    bool use_lt;
    cublasLtHandle_t lt;
    lt_plan plans[N_LT_PLANS];
    uint64_t plan_clock;
    /* the last forward's logit rows stay in `logits` for sampling (sample.cu) */
    int64_t n_logits;
    lp_cu_sample_spec *h_sspec, *d_sspec; /* (sample_chunk) */
    lp_cu_sample_out *h_sout, *d_sout;    /* (sample_chunk) */
    lp_logit_adjust *h_sadj, *d_sadj;     /* a chunk's adjustments, grown as needed */
    size_t sadj_cap;
    uint64_t *d_tkeys; /* selection scratch: (chunk, tiles, LP_SAMPLE_MAX_CAND) */
    double *d_tstat;   /* (chunk, 2, tiles) */
    int sample_chunk;  /* specs per launch: min(max_logit_rows, LP_CU_SAMPLE_CHUNK) */
} cuda_backend;

static int cu_fail(lp_error *err, cudaError_t e, const char *what, int line) {
    int code = e == cudaErrorMemoryAllocation ? LP_ERR_NOMEM : LP_ERR_INTERNAL;
    return lp_error_set(err, code, "cuda backend: %s: %s (cuda_backend.cu:%d)", what, cudaGetErrorString(e),
                        line);
}
#define CU(call)                                                                                             \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess)                                                                               \
            return cu_fail(err, e_, #call, __LINE__);                                                        \
    } while (0)
#define BLAS(call)                                                                                           \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            return lp_error_set(err, LP_ERR_INTERNAL, "cuda backend: %s: cuBLAS status %d (line %d)", #call, \
                                (int)s_, __LINE__);                                                          \
    } while (0)

extern "C" int lp_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear: no driver or no device is not an error here */
        return 0;
    }
    return n;
}

extern "C" int lp_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, lp_error *err) {
    if (lp_cuda_device_count() == 0)
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "no CUDA device");
    CU(cudaMemGetInfo(free_bytes, total_bytes));
    return LP_OK;
}

/* ---- weights ---- */

/* Bump allocator over one device allocation; with base == NULL it only counts. */
typedef struct arena {
    char *base;
    size_t used;
} arena;

static void *arena_take(arena *a, size_t bytes) {
    size_t off = (a->used + ALIGN - 1) / ALIGN * ALIGN;
    a->used = off + bytes;
    return a->base ? a->base + off : NULL;
}

static lp_cu_type file_ct(lp_dtype t) {
    return t == LP_DTYPE_F32 ? LP_CT_F32 : t == LP_DTYPE_F16 ? LP_CT_F16 : LP_CT_BF16;
}

/* Copy weight w into dst (compute type), converting through `stage` (a
 * device buffer of at least the largest raw tensor) if its dtype differs. */
static int upload_weight(cuda_backend *b, void *dst, const lp__weight *w, void *stage, lp_error *err) {
    size_t n = (size_t)w->rows * (size_t)w->cols;
    if (file_ct(w->dtype) == b->ct && (w->dtype == LP_DTYPE_F32 || w->dtype == LP_DTYPE_F16 ||
                                       w->dtype == LP_DTYPE_BF16)) {
        CU(cudaMemcpyAsync(dst, w->data, n * b->csz, cudaMemcpyHostToDevice, b->st));
        return LP_OK;
    }
    if (w->dtype != LP_DTYPE_F32 && w->dtype != LP_DTYPE_F16 && w->dtype != LP_DTYPE_BF16)
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "cuda backend: weight dtype %s", lp_dtype_name(w->dtype));
    /* stream order keeps the stage's uses apart */
    CU(cudaMemcpyAsync(stage, w->data, n * lp_dtype_size(w->dtype), cudaMemcpyHostToDevice, b->st));
    CU(lp_cu_convert(dst, b->ct, stage, (int)w->dtype, n, b->st));
    return LP_OK;
}

static int upload_f32(cuda_backend *b, float *dst, const float *src, size_t n, lp_error *err) {
    if (src)
        CU(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, b->st));
    else
        CU(cudaMemsetAsync(dst, 0, n * sizeof(float), b->st));
    return LP_OK;
}

static bool any_bias(const lp__layer *L, int m0, int m1) {
    for (int m = m0; m <= m1; m++)
        if (L->bias[m])
            return true;
    return false;
}

/* Lay out (a.base NULL: count) or lay out and upload (a.base set) all weights. */
static int weights_pass(cuda_backend *b, arena *a, void *stage, lp_error *err) {
    const lp_model *m = b->base.model;
    const lp_model_config *c = b->cfg;
    size_t D = (size_t)c->hidden, F = (size_t)c->ffn, hd = (size_t)c->head_dim;
    bool up = a->base != NULL;
    int rc;
    size_t esz = (size_t)c->vocab * D * b->csz;
    b->embed = arena_take(a, esz);
    if (up && (rc = upload_weight(b, b->embed, &m->embed, stage, err)))
        return rc;
    if (m->lm_head.data == m->embed.data) {
        b->lm_head = b->embed;
    } else {
        b->lm_head = arena_take(a, esz);
        if (up && (rc = upload_weight(b, b->lm_head, &m->lm_head, stage, err)))
            return rc;
    }
    b->final_norm = (float *)arena_take(a, D * 4);
    b->inv_freq = (float *)arena_take(a, hd / 2 * 4);
    if (up) {
        if ((rc = upload_f32(b, b->final_norm, m->final_norm, D, err)))
            return rc;
        float *inv = (float *)malloc(hd / 2 * sizeof(float));
        if (!inv)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        lp__rope_inv_freq(c, inv);
        rc = upload_f32(b, b->inv_freq, inv, hd / 2, err);
        cudaStreamSynchronize(b->st);
        free(inv);
        if (rc)
            return rc;
    }
    for (int l = 0; l < c->n_layers; l++) {
        const lp__layer *S = &m->layers[l];
        cu_layer *L = &b->L[l];
        L->qkv = arena_take(a, (size_t)b->qkv_dim * D * b->csz);
        L->o = arena_take(a, D * (size_t)b->q_dim * b->csz);
        L->gu = arena_take(a, 2 * F * D * b->csz);
        L->down = arena_take(a, D * F * b->csz);
        L->attn_norm = (float *)arena_take(a, D * 4);
        L->ffn_norm = (float *)arena_take(a, D * 4);
        L->q_norm = S->q_norm ? (float *)arena_take(a, hd * 4) : NULL;
        L->k_norm = S->k_norm ? (float *)arena_take(a, hd * 4) : NULL;
        L->qkv_b = any_bias(S, LP_MOD_Q, LP_MOD_V) ? (float *)arena_take(a, (size_t)b->qkv_dim * 4) : NULL;
        L->o_b = S->bias[LP_MOD_O] ? (float *)arena_take(a, D * 4) : NULL;
        L->gu_b = any_bias(S, LP_MOD_GATE, LP_MOD_UP) ? (float *)arena_take(a, 2 * F * 4) : NULL;
        L->down_b = S->bias[LP_MOD_DOWN] ? (float *)arena_take(a, D * 4) : NULL;
        if (!up)
            continue;
        char *qkv = (char *)L->qkv, *gu = (char *)L->gu;
        size_t qb = (size_t)b->q_dim * D * b->csz, kb = (size_t)b->kv_dim * D * b->csz;
        if ((rc = upload_weight(b, qkv, &S->proj[LP_MOD_Q], stage, err)) ||
            (rc = upload_weight(b, qkv + qb, &S->proj[LP_MOD_K], stage, err)) ||
            (rc = upload_weight(b, qkv + qb + kb, &S->proj[LP_MOD_V], stage, err)) ||
            (rc = upload_weight(b, L->o, &S->proj[LP_MOD_O], stage, err)) ||
            (rc = upload_weight(b, gu, &S->proj[LP_MOD_GATE], stage, err)) ||
            (rc = upload_weight(b, gu + F * D * b->csz, &S->proj[LP_MOD_UP], stage, err)) ||
            (rc = upload_weight(b, L->down, &S->proj[LP_MOD_DOWN], stage, err)) ||
            (rc = upload_f32(b, L->attn_norm, S->attn_norm, D, err)) ||
            (rc = upload_f32(b, L->ffn_norm, S->ffn_norm, D, err)))
            return rc;
        if (L->q_norm && ((rc = upload_f32(b, L->q_norm, S->q_norm, hd, err)) ||
                          (rc = upload_f32(b, L->k_norm, S->k_norm, hd, err))))
            return rc;
        if (L->qkv_b && ((rc = upload_f32(b, L->qkv_b, S->bias[LP_MOD_Q], (size_t)b->q_dim, err)) ||
                         (rc = upload_f32(b, L->qkv_b + b->q_dim, S->bias[LP_MOD_K], (size_t)b->kv_dim, err)) ||
                         (rc = upload_f32(b, L->qkv_b + b->q_dim + b->kv_dim, S->bias[LP_MOD_V],
                                          (size_t)b->kv_dim, err))))
            return rc;
        if (L->o_b && (rc = upload_f32(b, L->o_b, S->bias[LP_MOD_O], D, err)))
            return rc;
        if (L->gu_b && ((rc = upload_f32(b, L->gu_b, S->bias[LP_MOD_GATE], F, err)) ||
                        (rc = upload_f32(b, L->gu_b + F, S->bias[LP_MOD_UP], F, err))))
            return rc;
        if (L->down_b && (rc = upload_f32(b, L->down_b, S->bias[LP_MOD_DOWN], D, err)))
            return rc;
    }
    return LP_OK;
}

/* Largest raw tensor that needs a dtype conversion on upload (0 if none). */
static size_t conversion_stage_bytes(cuda_backend *b) {
    const lp_model *m = b->base.model;
    size_t most = 0;
    const lp__weight *ws[2] = {&m->embed, &m->lm_head};
    for (int i = 0; i < 2; i++)
        if (file_ct(ws[i]->dtype) != b->ct || ws[i]->dtype == LP_DTYPE_F64)
            most = LP_MAX(most, (size_t)ws[i]->rows * (size_t)ws[i]->cols * lp_dtype_size(ws[i]->dtype));
    for (int l = 0; l < b->cfg->n_layers; l++)
        for (int j = 0; j < LP_MOD_COUNT; j++) {
            const lp__weight *w = &m->layers[l].proj[j];
            if (file_ct(w->dtype) != b->ct)
                most = LP_MAX(most, (size_t)w->rows * (size_t)w->cols * lp_dtype_size(w->dtype));
        }
    return most;
}

/* ---- forward ---- */

/* The products' input type: the compute type. */
static cudaDataType blas_type(const cuda_backend *b) {
    return b->ct == LP_CT_F32 ? CUDA_R_32F : b->ct == LP_CT_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

static void lt_plan_release(lt_plan *p) {
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayout_t ls[] = {p->w, p->x, p->y};
    for (int i = 0; i < 3; i++)
        if (ls[i])
            cublasLtMatrixLayoutDestroy(ls[i]);
    memset(p, 0, sizeof *p);
}

/* The plan of this shape, made when missing (in place of the least recently
 * used); NULL when missing during a stream capture, where CUDA 13's cuBLASLt
 * fails the heuristic query (a decode call is captured only after it ran
 * once uncaptured, which made its plans). In column-major terms, as cuBLASLt
 * has it: D (N x T, ld ldy) = op(A) B with A = W stored K x N (ld K) and
 * transposed, B = X (K x T, ld ldx). */
static const lt_plan *lt_plan_get(cuda_backend *b, int N, int T, int K, int ldx, int ldy) {
    lt_plan *lru = &b->plans[0];
    for (int i = 0; i < N_LT_PLANS; i++) {
        lt_plan *p = &b->plans[i];
        if (p->N == N && p->T == T && p->K == K && p->ldx == ldx && p->ldy == ldy) {
            p->used = ++b->plan_clock;
            return p;
        }
        if (lru->N && (!p->N || p->used < lru->used))
            lru = p;
    }
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(b->st, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone)
        return NULL;
    lt_plan_release(lru);
    lt_plan *p = lru;
    p->N = N, p->T = T, p->K = K, p->ldx = ldx, p->ldy = ldy;
    p->used = ++b->plan_clock;
    cudaDataType t = blas_type(b);
    int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    uint64_t ws = b->blas_ws_bytes;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    /* fp32 models: CUBLAS_COMPUTE_32F (no TF32), as cublasGemmEx has it */
    bool ok = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->w, t, (uint64_t)K, (uint64_t)N, K) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->x, t, (uint64_t)K, (uint64_t)T, ldx) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(&p->y, CUDA_R_32F, (uint64_t)N, (uint64_t)T, ldy) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulAlgoGetHeuristic(b->lt, p->op, p->w, p->x, p->y, p->y, pref, 1, &res, &n) ==
                  CUBLAS_STATUS_SUCCESS &&
              n > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ok)
        p->algo = res.algo;
    else
        LP_WARN("cuda backend: no cuBLASLt algorithm for a %d x %d x %d product; it goes through cublasGemmEx", T, N,
                K);
    p->ok = ok;
    return p;
}

/* Row-major Y (T, N) fp32 = X (T, K) W^T, W (N, K) row-major: column-major
 * Y^T = W^T' X^T'. */
static cublasStatus_t gemm(cuda_backend *b, float *Y, int ldy, const void *X, int ldx, const void *W, int N, int K,
                           int T) {
    const float one = 1.0f, zero = 0.0f;
    if (b->use_lt) {
        const lt_plan *p = lt_plan_get(b, N, T, K, ldx, ldy);
        if (p && p->ok)
            return cublasLtMatmul(b->lt, p->op, &one, W, p->w, X, p->x, &zero, Y, p->y, Y, p->y, &p->algo,
                                  b->blas_ws, b->blas_ws_bytes, b->st);
    }
    cudaDataType t = blas_type(b);
    return cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, W, t, K, X, t, ldx, &zero, Y, CUDA_R_32F,
                        ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

/* Offsets (int32 elements) of the per-call metadata in h_meta/d_meta. The
 * block tables come last so that every other offset depends only on the
 * call's shape (the key of its CUDA graph). */
typedef struct meta_layout {
    size_t id, pos, blkoff, lidx, perm, lrow, items, alpha, qt, atok, blocks, total;
} meta_layout;

/* n_qt: tensor-core query tiles of attention; with any, atok lists the
 * other tokens (the per-token attention kernels'). */
static meta_layout meta_plan(int64_t T, int64_t n_blocks, int64_t nl, int64_t n_items, int64_t n_qt) {
    meta_layout m;
    size_t o = 0;
#define TAKE(f, n) (m.f = o, o += ((size_t)(n) + 3) / 4 * 4)
    TAKE(id, T);
    TAKE(pos, T);
    TAKE(blkoff, T);
    TAKE(lidx, nl);
    TAKE(perm, T);
    TAKE(lrow, T);
    TAKE(items, n_items * 4);
    TAKE(alpha, T);
    TAKE(qt, n_qt * 2);
    TAKE(atok, n_qt ? T : 0);
    TAKE(blocks, n_blocks);
#undef TAKE
    m.total = o;
    return m;
}

static void graphs_clear(cuda_backend *b) {
    for (int i = 0; i < N_GRAPHS; i++)
        if (b->graphs[i].exec) {
            cudaGraphExecDestroy(b->graphs[i].exec);
            b->graphs[i].exec = NULL;
        }
}

/* Grow a pinned host buffer and its device twin to hold `need` elements of
 * `elem` bytes (twice that, so growth is rare); contents are not kept. */
static int grow_pair(void **h, void **d, size_t *cap, size_t need, size_t elem, lp_error *err) {
    if (need <= *cap)
        return LP_OK;
    size_t n = need * 2;
    if (*h)
        cudaFreeHost(*h);
    if (*d)
        cudaFree(*d);
    *h = *d = NULL;
    *cap = 0;
    CU(cudaMallocHost(h, n * elem));
    CU(cudaMalloc(d, n * elem));
    *cap = n;
    return LP_OK;
}

static int ensure_meta(cuda_backend *b, size_t need, lp_error *err) {
    if (need <= b->meta_cap)
        return LP_OK;
    graphs_clear(b); /* they hold the old device pointers */
    return grow_pair((void **)&b->h_meta, (void **)&b->d_meta, &b->meta_cap, need, sizeof(int32_t), err);
}

/* One multi-LoRA application on stream `st`: shrink then expand over the
 * call's tiles, adding into Y. */
static int lora_kernels(cuda_backend *b, lp_cu_lora_call *lc, int layer, const lp_cu_mods *mods, const void *X,
                        lp_cu_type xt, int K, float *Y, int ldy, int64_t T, cudaStream_t st, lp_error *err) {
    lc->layer = layer;
    lc->ksplit = lp_cu_lora_ksplit(lc->n_items, mods->n, K, b->n_sm);
    if (lp_cu_lora_v_floats(lc->T, lc->ksplit, lc->rmax) > b->lora_v_floats)
        return lp_error_set(err, LP_ERR_INTERNAL, "cuda backend: LoRA scratch too small for %d tokens x %d splits",
                            lc->T, lc->ksplit);
    CU(lp_cu_lora_shrink(lc, mods, X, xt, K, K, st));
    CU(lp_cu_lora_expand(lc, mods, Y, ldy, st));
    return LP_OK;
}

/* The LoRA of one module group, in two halves around the base GEMM. Without
 * DoRA in the call, lora_begin forks the side stream, which computes the
 * adapters' deltas into b->ylora while the main stream runs the GEMM, and
 * lora_end joins it; the kernel that consumes the GEMM output adds ylora
 * (lora_delta() says whether it must). DoRA rescales the base output, so a
 * call with DoRA rows applies its LoRA in place after the GEMM instead. */
static int lora_begin(cuda_backend *b, const call_shape *cs, lp_cu_lora_call *lc, int layer, const lp_cu_mods *mods,
                      int K, int ldy, int64_t T, lp_error *err) {
    if (!cs->lora || cs->dora)
        return LP_OK;
    CU(cudaEventRecord(b->ev_fork, b->st));
    CU(cudaStreamWaitEvent(b->side, b->ev_fork, 0));
    lc->overwrite = 1; /* every (place, column) of ylora written: no memset */
    int rc = lora_kernels(b, lc, layer, mods, b->lora_x, LP_CT_F32, K, b->ylora, ldy, T, b->side, err);
    if (rc)
        return rc;
    CU(cudaEventRecord(b->ev_join, b->side));
    return LP_OK;
}

static int lora_end(cuda_backend *b, const call_shape *cs, lp_cu_lora_call *lc, int layer, const lp_cu_mods *mods,
                    int K, float *Y, int ldy, int64_t T, lp_error *err) {
    if (!cs->lora)
        return LP_OK;
    if (cs->dora) {
        lc->overwrite = 0;
        return lora_kernels(b, lc, layer, mods, b->lora_x, LP_CT_F32, K, Y, ldy, T, b->st, err);
    }
    CU(cudaStreamWaitEvent(b->st, b->ev_join, 0));
    return LP_OK;
}

static const float *lora_delta(const cuda_backend *b, const call_shape *cs) {
    return cs->lora && !cs->dora ? b->ylora : NULL;
}

/* Every launch of a call, from the embedding to the logits in b->logits. */
static int run_layers(cuda_backend *b, const call_shape *cs, const meta_layout *ml, lp_error *err) {
    const lp_model_config *c = b->cfg;
    const lp_backend_params *P = &b->base.params;
    int D = c->hidden, F = c->ffn, hd = c->head_dim, bs = P->block_size, rc;
    int64_t T = cs->T;
    const int32_t *d = b->d_meta;
    lp_cu_toks tk = {d + ml->id, d + ml->pos, d + ml->blkoff, d + ml->blocks};
    /* V's rows: the places (a call of base prompt chunks and a few adapter
     * rows needs more splits but few rows); a bound the call's shape fixes */
    int64_t v_rows = LP_MIN(T, cs->n_items * LP_CU_LORA_TILE);
    lp_cu_lora_call lc = {b->d_desc, c->n_layers, 0, (const lp_cu_lora_item *)(d + ml->items), (int)cs->n_items,
                          d + ml->perm, (const float *)(d + ml->alpha), b->lora_v, P->max_lora_rank, (int)v_rows, 1,
                          b->lora_cnt, 0};
    lp_cu_mods m_qkv = {3, {LP_MOD_Q, LP_MOD_K, LP_MOD_V}, {(int)b->q_dim, (int)b->kv_dim, (int)b->kv_dim},
                        {0, (int)b->q_dim, (int)(b->q_dim + b->kv_dim)}};
    lp_cu_mods m_o = {1, {LP_MOD_O}, {D}, {0}};
    lp_cu_mods m_gu = {2, {LP_MOD_GATE, LP_MOD_UP}, {F, F}, {0, F}};
    lp_cu_mods m_down = {1, {LP_MOD_DOWN}, {D}, {0}};
    lp_cu_rope rope = {c->n_heads, c->n_kv_heads, hd, bs, 0, b->block_elems, b->inv_freq, NULL, NULL, NULL, NULL, NULL,
                       c->rms_eps};
    lp_cu_attn at = {c->n_heads,
                     c->n_kv_heads,
                     hd,
                     bs,
                     0,
                     c->sliding_window,
                     cs->splits,
                     cs->few,
                     b->block_elems,
                     1.0f / sqrtf((float)hd),
                     b->part,
                     NULL,
                     NULL,
                     cs->n_qt ? d + ml->atok : NULL,
                     (int)cs->n_atok,
                     cs->n_qt ? d + ml->qt : NULL,
                     (int)cs->n_qt};

    /* each token's row in the LoRA buffers (its place; -1: a base token) */
    const int32_t *lrow = cs->lora ? d + ml->lrow : NULL;
    const float *yl = lora_delta(b, cs);
    /* the fp32 copies for the LoRA shrink, of the adapter tokens only; one
     * buffer serves all four inputs, as each is consumed (the side stream
     * joined) before the next is written */
    float *x32 = cs->lora ? b->lora_x : NULL;
    at.out32 = x32;
    at.lrow = lrow;
    rope.lrow = lrow;
    int qkvd = (int)b->qkv_dim, qd = (int)b->q_dim;
    CU(lp_cu_embed(b->x, b->embed, b->ct, tk.id, (int)T, D, b->st));
    for (int l = 0; l < c->n_layers; l++) {
        const cu_layer *L = &b->L[l];
        const cu_layer *prev = l ? &b->L[l - 1] : NULL;
        /* x += previous layer's down output (+ its LoRA delta, + bias); xn = norm(x) */
        CU(lp_cu_add_rmsnorm(b->x, prev ? b->tmp : NULL, prev ? yl : NULL, prev ? prev->down_b : NULL, L->attn_norm,
                             b->xn, b->ct, x32, lrow, NULL, (int)T, D, c->rms_eps, b->st));
        if ((rc = lora_begin(b, cs, &lc, l, &m_qkv, D, qkvd, T, err)))
            return rc;
        BLAS(gemm(b, b->qkv, qkvd, b->xn, D, L->qkv, qkvd, D, (int)T));
        if ((rc = lora_end(b, cs, &lc, l, &m_qkv, D, b->qkv, qkvd, T, err)))
            return rc;
        rope.layer = l;
        rope.bias = L->qkv_b;
        rope.lora = yl;
        rope.q_norm = L->q_norm;
        rope.k_norm = L->k_norm;
        CU(lp_cu_qkv_rope(b->qkv, b->q, b->kv, b->kt, &rope, &tk, (int)T, b->st));
        at.layer = l;
        CU(lp_cu_attention(b->q, b->kv, b->kt, b->att, b->ct, &at, &tk, (int)T, b->st));
        if ((rc = lora_begin(b, cs, &lc, l, &m_o, qd, D, T, err)))
            return rc;
        BLAS(gemm(b, b->tmp, D, b->att, qd, L->o, D, qd, (int)T));
        if ((rc = lora_end(b, cs, &lc, l, &m_o, qd, b->tmp, D, T, err)))
            return rc;
        CU(lp_cu_add_rmsnorm(b->x, b->tmp, yl, L->o_b, L->ffn_norm, b->xn, b->ct, x32, lrow, NULL, (int)T, D,
                             c->rms_eps, b->st));
        if ((rc = lora_begin(b, cs, &lc, l, &m_gu, D, 2 * F, T, err)))
            return rc;
        BLAS(gemm(b, b->gu, 2 * F, b->xn, D, L->gu, 2 * F, D, (int)T));
        if ((rc = lora_end(b, cs, &lc, l, &m_gu, D, b->gu, 2 * F, T, err)))
            return rc;
        CU(lp_cu_silu_mul(b->gu, yl, L->gu_b, b->act, b->ct, x32, lrow, (int)T, F, b->st));
        if ((rc = lora_begin(b, cs, &lc, l, &m_down, F, D, T, err)))
            return rc;
        BLAS(gemm(b, b->tmp, D, b->act, F, L->down, D, F, (int)T));
        if ((rc = lora_end(b, cs, &lc, l, &m_down, F, b->tmp, D, T, err)))
            return rc;
    }
    if (cs->nl) {
        CU(lp_cu_add_rmsnorm(b->x, b->tmp, yl, b->L[c->n_layers - 1].down_b, b->final_norm, b->lin, b->ct, NULL, lrow,
                             d + ml->lidx, (int)cs->nl, D, c->rms_eps, b->st));
        BLAS(gemm(b, b->logits, c->vocab, b->lin, D, b->lm_head, c->vocab, D, (int)cs->nl));
    }
    return LP_OK;
}

/* The captured graph of this call shape, or NULL. */
static graph_entry *graph_find(cuda_backend *b, const call_shape *cs) {
    for (int i = 0; i < N_GRAPHS; i++)
        if (b->graphs[i].exec && !memcmp(&b->graphs[i].key, cs, sizeof *cs))
            return &b->graphs[i];
    return NULL;
}

/* Launch a decode call through its CUDA graph `hit`, or capture it first
 * when NULL (least recently used graph replaced). */
static int run_graph(cuda_backend *b, graph_entry *hit, const call_shape *cs, const meta_layout *ml,
                     lp_error *err) {
    graph_entry *lru = &b->graphs[0];
    for (int i = 0; i < N_GRAPHS; i++) {
        graph_entry *g = &b->graphs[i];
        if (!g->exec || (lru->exec && g->used < lru->used))
            lru = g;
    }
    if (!hit) {
        if (lru->exec) {
            cudaGraphExecDestroy(lru->exec);
            lru->exec = NULL;
        }
        CU(cudaStreamBeginCapture(b->st, cudaStreamCaptureModeThreadLocal));
        int rc = run_layers(b, cs, ml, err);
        cudaGraph_t graph = NULL;
        cudaError_t e = cudaStreamEndCapture(b->st, &graph);
        if (!rc && e != cudaSuccess)
            rc = cu_fail(err, e, "graph capture", __LINE__);
        /* honour the captured priorities: without the flag every node runs at
         * the launch stream's, and the LoRA side stream's kernels queue behind
         * the GEMM's blocks instead of slipping in beside them */
        if (!rc && (e = cudaGraphInstantiate(&lru->exec, graph, cudaGraphInstantiateFlagUseNodePriority)) !=
                       cudaSuccess) {
            lru->exec = NULL;
            rc = cu_fail(err, e, "graph instantiate", __LINE__);
        }
        if (graph)
            cudaGraphDestroy(graph);
        if (rc) {
            cudaGetLastError();
            return rc;
        }
        memcpy(&lru->key, cs, sizeof *cs);
        hit = lru;
    }
    hit->used = ++b->graph_clock;
    CU(cudaGraphLaunch(hit->exec, b->st));
    return LP_OK;
}

static int cuda_forward(lp_backend *base, const lp_batch_row *rows, int n_rows, float *logits, lp_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    CU(cudaSetDevice(b->dev)); /* the current device is per thread: every op names it */
    const lp_model_config *c = b->cfg;
    const lp_backend_params *P = &base->params;
    int64_t T, nl;
    b->n_logits = 0;
    int rc = lp__backend_check_rows(base, rows, n_rows, (const void *const *)b->slot_ptrs, &T, &nl, err);
    if (rc)
        return rc;
    int bs = P->block_size;

    /* metadata: sizes first */
    int64_t n_blocks = 0, n_items = 0, n_lora = 0;
    bool decode = true;
    for (int i = 0; i < n_rows; i++) {
        n_blocks += ((int64_t)rows[i].pos0 + rows[i].n_tokens + bs - 1) / bs;
        decode &= rows[i].n_tokens == 1;
    }
    lp__lora_groups lg; /* the adapter tokens' places and tiles (see lp_cu_lora_call) */
    lp__lora_group_count(rows, n_rows, P->max_adapters, LP_CU_LORA_TILE, b->cnt, &lg);
    n_items = lg.n_items;
    n_lora = lg.n_lora_tokens;
    /* prefill rows of LP_CU_ATT_TC_MIN tokens or more: attention on tensor cores */
    bool tc = b->attn_mode == 0 && b->tc_fits && b->ct != LP_CT_F32 && lp_cu_att_tc_ok(c->head_dim, b->kt);
    int64_t n_qt = 0, n_atok = 0;
    for (int i = 0; tc && i < n_rows; i++)
        if (rows[i].n_tokens >= LP_CU_ATT_TC_MIN)
            n_qt += (rows[i].n_tokens + LP_CU_ATT_TC_ROWS - 1) / LP_CU_ATT_TC_ROWS;
    meta_layout ml = meta_plan(T, n_blocks, nl, n_items, n_qt);
    if ((rc = ensure_meta(b, ml.total, err)))
        return rc;
    int32_t *h = b->h_meta;
    float *alpha = (float *)(h + ml.alpha);
    int64_t t = 0, nb = 0, li = 0, max_len = 1, qi = 0;
    for (int i = 0; i < n_rows; i++) {
        const lp_batch_row *r = &rows[i];
        int64_t nblk = ((int64_t)r->pos0 + r->n_tokens + bs - 1) / bs;
        memcpy(h + ml.blocks + nb, r->blocks, sizeof(int32_t) * (size_t)nblk);
        bool row_tc = n_qt && r->n_tokens >= LP_CU_ATT_TC_MIN;
        for (int j = 0; j < r->n_tokens; j++, t++) {
            if (n_qt && !row_tc) { /* with tensor-core tiles in the call, the others are listed */
                h[ml.atok + n_atok++] = (int32_t)t;
            } else if (row_tc && j % LP_CU_ATT_TC_ROWS == 0) {
                int32_t *q2 = h + ml.qt + 2 * (qi++);
                q2[0] = (int32_t)t;
                q2[1] = (int32_t)LP_MIN(LP_CU_ATT_TC_ROWS, r->n_tokens - j);
            }
            int32_t pos = r->pos0 + j;
            h[ml.id + t] = r->tokens[j];
            h[ml.pos + t] = pos;
            h[ml.blkoff + t] = (int32_t)nb;
            alpha[t] = r->adapter_scale;
            if (r->logits == LP_LOGITS_ALL || (r->logits == LP_LOGITS_LAST && j == r->n_tokens - 1))
                h[ml.lidx + li++] = (int32_t)t;
            int64_t len = c->sliding_window > 0 && pos + 1 > c->sliding_window ? c->sliding_window : pos + 1;
            if (!row_tc) /* the split decision is the per-token kernels' */
                max_len = LP_MAX(max_len, len);
        }
        nb += nblk;
    }
    /* the GPU (not the host) waits for the copies of the adapters it uses, once each */
    for (int s = 0; s < P->max_adapters; s++)
        if (b->cnt[s])
            CU(cudaStreamWaitEvent(b->st, b->slots[s].ready, 0));
    if (n_lora)
        lp__lora_group_fill(rows, n_rows, P->max_adapters, LP_CU_LORA_TILE, b->cnt, h + ml.perm, h + ml.lrow,
                            h + ml.items);
    CU(cudaMemcpyAsync(b->d_meta, h, ml.total * sizeof(int32_t), cudaMemcpyHostToDevice, b->st));

    /* attention split along the sequence when the batch alone leaves SMs
     * idle, aiming at 4 blocks per SM; a call whose blocks cannot fill the
     * SMs even once takes the kernel for a few tokens, with shorter splits */
    int group = c->n_heads / c->n_kv_heads, yg = c->n_kv_heads * ((group + LP_CU_ATT_HEADS - 1) / LP_CU_ATT_HEADS);
    bool few = b->attn_mode == 1 || (b->attn_mode == 0 && decode && T * yg < b->n_sm);
    int split_min = few ? LP_CU_ATT_SPLIT_MIN_FEW : LP_CU_ATT_SPLIT_MIN, splits = 1;
    /* only the per-token kernels split: a few decode rows beside a long
     * prefill chunk still get their SMs' worth of splits */
    int64_t Tp = n_qt ? n_atok : T;
    if (Tp > 0 && Tp * yg < 4 * b->n_sm && max_len > split_min) {
        int64_t want = (4 * b->n_sm + Tp * yg - 1) / (Tp * yg);
        splits = (int)LP_MIN(LP_MIN(want, (int64_t)LP_CU_ATT_MAX_SPLITS), (max_len + split_min - 1) / split_min);
        splits = (int)LP_MIN((int64_t)splits, PART_TOKEN_SPLITS / Tp);
        if (splits < 1)
            splits = 1;
    }
    call_shape cs;
    memset(&cs, 0, sizeof cs); /* compared with memcmp */
    cs.T = T;
    cs.nl = nl;
    cs.n_items = n_items;
    cs.n_qt = n_qt;
    cs.n_atok = n_atok;
    cs.splits = splits;
    cs.few = few;
    cs.lora = n_lora > 0;
    for (int i = 0; i < n_rows; i++)
        cs.dora |= rows[i].adapter >= 0 && b->slots[rows[i].adapter].dora;
    /* a graph pays off once a shape repeats: steady decode does, a batch
     * whose rows come and go every step does not; a shape captured before
     * replays whenever it comes back */
    bool repeat = !memcmp(&cs, &b->last_shape, sizeof cs);
    memcpy(&b->last_shape, &cs, sizeof cs);
    graph_entry *hit = decode && b->use_graphs ? graph_find(b, &cs) : NULL;
    rc = hit || (decode && b->use_graphs && repeat) ? run_graph(b, hit, &cs, &ml, err) : run_layers(b, &cs, &ml, err);
    if (rc)
        return rc;
    if (nl && logits)
        CU(cudaMemcpyAsync(logits, b->logits, (size_t)nl * (size_t)c->vocab * sizeof(float), cudaMemcpyDeviceToHost,
                           b->st));
    CU(cudaStreamSynchronize(b->st));
    CU(cudaGetLastError());
    b->n_logits = nl;
    return LP_OK;
}

/* ---- sampling: the selection runs on the GPU (sample.cu), a few KB per row come back ---- */


static int cuda_sample(lp_backend *base, const lp_sample_spec *specs, int n_specs, lp_sample_result *out,
                       lp_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    CU(cudaSetDevice(b->dev));
    int V = b->cfg->vocab;
    int rc = lp_sample_check(specs, n_specs, b->n_logits, V, LP_SAMPLE_MAX_CAND, err);
    if (rc)
        return rc;
    for (int c0 = 0; c0 < n_specs; c0 += b->sample_chunk) {
        int n = LP_MIN(n_specs - c0, b->sample_chunk), logprobs = 0;
        size_t n_adj = 0;
        for (int i = 0; i < n; i++)
            n_adj += (size_t)specs[c0 + i].n_adj;
        if ((rc = grow_pair((void **)&b->h_sadj, (void **)&b->d_sadj, &b->sadj_cap, n_adj ? n_adj : 1,
                            sizeof(lp_logit_adjust), err)))
            return rc;
        n_adj = 0;
        for (int i = 0; i < n; i++) {
            const lp_sample_spec *sp = &specs[c0 + i];
            lp_cu_sample_spec cs = {sp->row, sp->n_cand, sp->n_logprobs, sp->n_adj, (int32_t)n_adj, sp->probe,
                                    sp->temperature};
            b->h_sspec[i] = cs;
            if (sp->n_adj)
                memcpy(b->h_sadj + n_adj, sp->adj, (size_t)sp->n_adj * sizeof(lp_logit_adjust));
            n_adj += (size_t)sp->n_adj;
            logprobs |= sp->n_logprobs >= 0;
        }
        CU(cudaMemcpyAsync(b->d_sspec, b->h_sspec, (size_t)n * sizeof(lp_cu_sample_spec), cudaMemcpyHostToDevice,
                           b->st));
        if (n_adj)
            CU(cudaMemcpyAsync(b->d_sadj, b->h_sadj, n_adj * sizeof(lp_logit_adjust), cudaMemcpyHostToDevice, b->st));
        CU(lp_cu_sample(b->logits, V, b->d_sspec, n, b->d_sadj, logprobs, b->d_tkeys, b->d_tstat, b->d_sout, b->st));
        CU(cudaMemcpyAsync(b->h_sout, b->d_sout, (size_t)n * sizeof(lp_cu_sample_out), cudaMemcpyDeviceToHost, b->st));
        CU(cudaStreamSynchronize(b->st));
        for (int i = 0; i < n; i++) {
            const lp_sample_spec *sp = &specs[c0 + i];
            const lp_cu_sample_out *o = &b->h_sout[i];
            lp_sample_result *r = &out[c0 + i];
            r->n_cand = o->n_cand;
            r->max = o->max;
            r->probe_raw = o->probe_raw;
            r->total = o->total;
            memcpy(r->cand, o->cand, (size_t)o->n_cand * sizeof(lp_candidate));
            if (sp->n_logprobs >= 0) {
                r->raw_lse = o->raw_lse;
                memcpy(r->top, o->top, (size_t)LP_MIN(sp->n_logprobs, V) * sizeof(lp_token_logprob));
            } else {
                r->raw_lse = 0.0;
            }
        }
    }
    return LP_OK;
}

static const float *cuda_logits(lp_backend *base, int first, int n, float *buf, lp_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    cudaSetDevice(b->dev);
    if (lp_logits_check(first, n, b->n_logits, err))
        return NULL;
    size_t V = (size_t)b->cfg->vocab;
    cudaError_t e = cudaMemcpyAsync(buf, b->logits + (size_t)first * V, (size_t)n * V * sizeof(float),
                                    cudaMemcpyDeviceToHost, b->st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(b->st);
    if (e != cudaSuccess) {
        cu_fail(err, e, "logits copy", __LINE__);
        return NULL;
    }
    return buf;
}

/* ---- device tier ---- */

/* An adapter in device layout (lora_layout.h) in host memory: pinned, from
 * the backend's pool (a reference to which it holds, as it may outlive the
 * backend), so the copy runs at full speed without the host; or pageable
 * when no pinned memory can be had (the copy still works, staged by the
 * driver). */
typedef struct cu_staged {
    lp_lora_layout lay;
    void *host;
    lp_hostpool *pool; /* NULL: pageable */
} cu_staged;

static void staged_free(void *p) {
    cu_staged *st = (cu_staged *)p;
    if (!st)
        return;
    if (st->pool) {
        lp_hostpool_free(st->pool, st->host);
        lp_hostpool_release(st->pool);
    } else {
        free(st->host);
    }
    lp_lora_layout_free(&st->lay);
    free(st);
}

/* Chunks of the pinned pool: ctx is the device number. */
#define PINNED_CHUNK ((size_t)64 << 20) /* small adapters share one; a larger one gets its own */
static void *pinned_chunk_alloc(size_t bytes, void *ctx) {
    void *p = NULL;
    cudaSetDevice((int)(intptr_t)ctx);
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}
static void pinned_chunk_free(void *p, void *ctx) {
    cudaSetDevice((int)(intptr_t)ctx);
    cudaFreeHost(p);
}

static int staged_make(cuda_backend *b, const lp_adapter *a, cu_staged **out, lp_error *err) {
    *out = NULL;
    cu_staged *st = (cu_staged *)calloc(1, sizeof *st);
    if (!st)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    int rc = lp_lora_layout_plan(a, &st->lay, err);
    if (rc) {
        free(st);
        return rc;
    }
    if ((st->host = lp_hostpool_alloc(b->pinned, st->lay.bytes))) {
        st->pool = b->pinned;
        lp_hostpool_retain(st->pool);
    } else {
        /* once (the loader and the engine thread may both get here): past the
         * limit it would be every adapter */
        if (!__atomic_exchange_n(&b->warned_pageable, true, __ATOMIC_RELAXED))
            LP_WARN("%s: no pinned host memory for %zu MiB of adapter (the pinned pool's limit is half the "
                    "machine's memory): adapters staged from now on may be in pageable memory (slower copies)",
                    a->dir, st->lay.bytes >> 20);
        st->host = aligned_alloc(LP_LORA_LAYOUT_ALIGN, st->lay.bytes);
        if (!st->host) {
            size_t mib = st->lay.bytes >> 20;
            lp_lora_layout_free(&st->lay);
            free(st);
            return lp_error_set(err, LP_ERR_NOMEM, "%s: no host memory for %zu MiB of adapter", a->dir, mib);
        }
    }
    lp_lora_layout_fill(a, &st->lay, st->host);
    *out = st;
    return LP_OK;
}

static int cuda_adapter_stage(lp_backend *base, lp_adapter *a, lp_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    if (a->staged && a->staged_by == b)
        return LP_OK;
    if (a->staged) /* another backend's layout: replace it */
        a->staged_free(a->staged);
    a->staged = NULL;
    cu_staged *st;
    int rc = staged_make(b, a, &st, err);
    if (rc)
        return rc;
    a->staged = st;
    a->staged_by = b;
    a->staged_free = staged_free;
    return LP_OK;
}

static void slot_release(cuda_backend *b, int slot) {
    cu_slot *s = &b->slots[slot];
    if (!s->a)
        return;
    cudaStreamSynchronize(b->cp);
    cudaStreamSynchronize(b->st);
    cudaStreamSynchronize(b->side); /* a failed forward may not have joined it */
    size_t per = (size_t)b->cfg->n_layers * 7;
    memset(b->h_desc + (size_t)slot * per, 0, per * sizeof(lp_cu_lora_desc));
    cudaMemcpy(b->d_desc + (size_t)slot * per, b->h_desc + (size_t)slot * per, per * sizeof(lp_cu_lora_desc),
               cudaMemcpyHostToDevice);
    if (s->dev)
        cudaFreeAsync(s->dev, b->cp);
    cudaStreamSynchronize(b->cp);
    staged_free(s->tmp);
    s->dev = NULL;
    s->tmp = NULL;
    s->a = NULL;
    s->dora = false;
    b->slot_ptrs[slot] = NULL;
}

/* The staged layout's size (what adapter_load allocates), planned when the
 * adapter was not staged by this backend. */
static uint64_t cuda_adapter_bytes(lp_backend *base, const lp_adapter *a) {
    if (a->staged && a->staged_by == base)
        return ((const cu_staged *)a->staged)->lay.bytes;
    lp_lora_layout lay;
    lp_error err = {0};
    if (lp_lora_layout_plan(a, &lay, &err))
        return (uint64_t)a->info.bytes; /* adapter_load will fail with this error */
    uint64_t n = lay.bytes;
    lp_lora_layout_free(&lay);
    return n;
}

static void cuda_adapter_unload(lp_backend *base, int slot) {
    cuda_backend *b = (cuda_backend *)base;
    cudaSetDevice(b->dev);
    if (slot >= 0 && slot < base->params.max_adapters)
        slot_release(b, slot);
}

/* The host work is done by adapter_stage (on the store's loader thread) or,
 * for an adapter not staged, here for this load only; what remains is an
 * allocation from the stream-ordered pool and two asynchronous copies on the
 * copy stream. */
static int cuda_adapter_load(lp_backend *base, int slot, const lp_adapter *a, lp_error *err) {
    cuda_backend *b = (cuda_backend *)base;
    CU(cudaSetDevice(b->dev));
    const lp_model_config *c = b->cfg;
    int rc = lp__backend_check_adapter(base, slot, a, err);
    if (rc)
        return rc;
    slot_release(b, slot);
    cu_slot *s = &b->slots[slot];
    const cu_staged *st = a->staged && a->staged_by == b ? (const cu_staged *)a->staged : NULL;
    if (!st) {
        if ((rc = staged_make(b, a, &s->tmp, err)))
            return rc;
        st = s->tmp;
    }
    const lp_lora_layout *lay = &st->lay;
    cudaError_t e = cudaMallocFromPoolAsync(&s->dev, lay->bytes, b->pool, b->cp);
    if (e != cudaSuccess) {
        cudaGetLastError();
        staged_free(s->tmp);
        s->tmp = NULL;
        s->dev = NULL;
        return lp_error_set(err, LP_ERR_NOMEM, "%s: no GPU memory for %zu MiB of adapter", a->dir,
                            lay->bytes >> 20);
    }
    size_t per = (size_t)c->n_layers * 7;
    lp_cu_lora_desc *desc = b->h_desc + (size_t)slot * per;
    memset(desc, 0, per * sizeof(*desc));
    char *dev = (char *)s->dev;
    for (size_t i = 0; i < per; i++) {
        const lp_lora_piece *p = &lay->piece[i];
        if (!p->rank)
            continue;
        lp_cu_lora_desc *dd = &desc[i];
        dd->A = dev + p->a;
        dd->Bt = dev + p->bt;
        dd->dora = p->dora != LP_LORA_LAYOUT_NONE ? (const float *)(dev + p->dora) : NULL;
        dd->scaling = p->scaling;
        dd->rank = p->rank;
        dd->f32 = p->f32;
    }
    s->dora = lay->dora;
    e = cudaMemcpyAsync(s->dev, st->host, lay->bytes, cudaMemcpyHostToDevice, b->cp);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(b->d_desc + (size_t)slot * per, desc, per * sizeof(*desc), cudaMemcpyHostToDevice, b->cp);
    if (e == cudaSuccess)
        e = cudaEventRecord(s->ready, b->cp);
    s->a = a;
    b->slot_ptrs[slot] = a;
    if (e != cudaSuccess) {
        rc = cu_fail(err, e, "adapter copy", __LINE__);
        slot_release(b, slot);
    }
    return rc;
}

/* ---- life cycle ---- */

static void cuda_free(lp_backend *base) {
    cuda_backend *b = (cuda_backend *)base;
    if (!b)
        return;
    cudaSetDevice(b->dev);
    if (b->st)
        cudaStreamSynchronize(b->st);
    if (b->side)
        cudaStreamSynchronize(b->side);
    graphs_clear(b);
    for (int i = 0; b->slots && i < base->params.max_adapters; i++) {
        slot_release(b, i);
        if (b->slots[i].ready)
            cudaEventDestroy(b->slots[i].ready);
    }
    void *dev[] = {b->arena, b->kv, b->x, b->tmp, b->qkv, b->q, b->gu, b->part, b->logits, b->lora_v, b->lora_x,
                   b->xn, b->att, b->act, b->lin, b->d_meta, b->d_desc, b->blas_ws, b->ylora, b->lora_cnt,
                   b->d_sspec, b->d_sout, b->d_sadj, b->d_tkeys, b->d_tstat};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i])
            cudaFree(dev[i]);
    void *pinned[] = {b->h_meta, b->h_desc, b->h_sspec, b->h_sout, b->h_sadj};
    for (size_t i = 0; i < sizeof pinned / sizeof *pinned; i++)
        if (pinned[i])
            cudaFreeHost(pinned[i]);
    for (int i = 0; i < N_LT_PLANS; i++)
        lt_plan_release(&b->plans[i]);
    if (b->lt)
        cublasLtDestroy(b->lt);
    if (b->blas)
        cublasDestroy(b->blas);
    if (b->st)
        cudaStreamDestroy(b->st);
    if (b->cp)
        cudaStreamDestroy(b->cp);
    if (b->side)
        cudaStreamDestroy(b->side);
    if (b->ev_fork)
        cudaEventDestroy(b->ev_fork);
    if (b->ev_join)
        cudaEventDestroy(b->ev_join);
    free(b->L);
    free(b->slots);
    free(b->slot_ptrs);
    lp_hostpool_release(b->pinned); /* staged copies still alive keep it */
    free(b->cnt);
    free(b);
}

static void *cuda_host_alloc(lp_backend *base, size_t bytes) {
    void *p = NULL;
    cudaSetDevice(((cuda_backend *)base)->dev);
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(lp_backend *base, void *p) {
    if (p)
        cudaFreeHost(p);
}

static const lp_backend_ops k_cuda_ops = {
    "cuda",
    cuda_free,
    cuda_forward,
    cuda_sample,
    cuda_logits,
    cuda_adapter_load,
    cuda_adapter_stage,
    cuda_adapter_unload,
    cuda_host_alloc,
    cuda_host_free,
    cuda_adapter_bytes,
};

static int dmalloc(void *p, size_t bytes, const char *what, lp_error *err) {
    cudaError_t e = cudaMalloc((void **)p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lp_error_set(err, LP_ERR_NOMEM, "cuda backend: no GPU memory for %s (%zu MiB; %zu MiB free)", what,
                            bytes >> 20, fr >> 20);
    }
    return LP_OK;
}

static int cuda_init(cuda_backend *b, lp_error *err) {
    const lp_model_config *c = b->cfg;
    const lp_backend_params *P = &b->base.params;
    int dev = 0, rc;
    CU(cudaGetDevice(&dev));
    b->dev = dev;
    cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, dev));
    b->n_sm = prop.multiProcessorCount;
    int smem_optin = 0;
    CU(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    b->tc_fits = lp_cu_att_tc_smem(c->head_dim) <= (size_t)smem_optin;
    snprintf(b->device_name, sizeof b->device_name, "%s", prop.name);
    CU(cudaStreamCreateWithFlags(&b->st, cudaStreamNonBlocking));
    CU(cudaStreamCreateWithFlags(&b->cp, cudaStreamNonBlocking));
    /* the LoRA side stream gets the higher priority: its small launches slip
     * in between the blocks of the GEMM they overlap instead of queuing behind */
    int prio_lo = 0, prio_hi = 0;
    CU(cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    CU(cudaStreamCreateWithPriority(&b->side, cudaStreamNonBlocking, prio_hi));
    CU(cudaEventCreateWithFlags(&b->ev_fork, cudaEventDisableTiming));
    CU(cudaEventCreateWithFlags(&b->ev_join, cudaEventDisableTiming));
    BLAS(cublasCreate(&b->blas));
    BLAS(cublasSetStream(b->blas, b->st));
    BLAS(cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH)); /* no TF32 for fp32 models */
    size_t ws_bytes = (size_t)32 << 20;
    if ((rc = dmalloc(&b->blas_ws, ws_bytes, "cuBLAS workspace", err)))
        return rc;
    b->blas_ws_bytes = ws_bytes;
    BLAS(cublasSetWorkspace(b->blas, b->blas_ws, ws_bytes));
    const char *gm = getenv("LORAPLEX_CUDA_GEMM");
    b->use_lt = !(gm && !strcmp(gm, "ex"));
    if (gm && *gm && strcmp(gm, "ex") && strcmp(gm, "lt"))
        LP_WARN("LORAPLEX_CUDA_GEMM=%s: expected lt or ex; using lt", gm);
    if (b->use_lt)
        BLAS(cublasLtCreate(&b->lt));
    const char *ge = getenv("LORAPLEX_CUDA_GRAPHS");
    b->use_graphs = !(ge && !strcmp(ge, "0"));
    const char *ae = getenv("LORAPLEX_CUDA_ATTN");
    b->attn_mode = ae && !strcmp(ae, "few") ? 1 : ae && !strcmp(ae, "tile") ? 2 : 0;
    if (ae && b->attn_mode == 0 && strcmp(ae, "auto"))
        LP_WARN("LORAPLEX_CUDA_ATTN=%s: expected auto, few or tile; using auto", ae);
    /* pinned memory cannot be paged out: staged adapters take at most half
     * of the machine's memory, the rest stage in pageable memory */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t pinned_max = pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 2 : 0;
    b->pinned = lp_hostpool_new(PINNED_CHUNK, LP_LORA_LAYOUT_ALIGN, pinned_max, pinned_chunk_alloc, pinned_chunk_free,
                                (void *)(intptr_t)dev);
    if (!b->pinned)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    CU(cudaDeviceGetDefaultMemPool(&b->pool, dev));
    uint64_t keep = UINT64_MAX; /* freed adapter memory stays in the pool for the next load */
    CU(cudaMemPoolSetAttribute(b->pool, cudaMemPoolAttrReleaseThreshold, &keep));

    /* weights: count, allocate one arena, upload */
    arena a = {NULL, 0};
    if ((rc = weights_pass(b, &a, NULL, err)))
        return rc;
    if ((rc = dmalloc(&b->arena, a.used, "the model weights", err)))
        return rc;
    size_t stage_bytes = conversion_stage_bytes(b);
    void *stage = NULL;
    if (stage_bytes && (rc = dmalloc(&stage, stage_bytes, "weight conversion", err)))
        return rc;
    a.base = (char *)b->arena;
    a.used = 0;
    rc = weights_pass(b, &a, stage, err);
    cudaError_t se = cudaStreamSynchronize(b->st);
    if (!rc && se != cudaSuccess)
        rc = cu_fail(err, se, "weight upload", __LINE__);
    if (stage)
        cudaFree(stage);
    if (rc)
        return rc;

    b->block_elems = (size_t)c->n_layers * 2 * (size_t)b->kv_dim * (size_t)P->block_size;
    if ((rc = dmalloc(&b->kv, b->block_elems * (size_t)P->n_kv_blocks * lp_cu_type_size(b->kt), "the KV cache", err)))
        return rc;
    size_t T = (size_t)P->max_tokens, D = (size_t)c->hidden, F = (size_t)c->ffn;
    size_t wide = LP_MAX(LP_MAX(D, (size_t)b->q_dim), F);
    /* LoRA partials: at most ceil(K/1024) splits per token once the tiles fill
     * the GPU, and at most 2 x 2 n_sm split-tiles of 8 tokens before that */
    size_t lo = (wide + 1023) / 1024;
    b->lora_v_floats = LP_MAX(lo * T, (size_t)(32 * b->n_sm) * LP_CU_LORA_TILE) * LP_CU_MAX_MODS *
                       (size_t)P->max_lora_rank;
    if ((rc = dmalloc(&b->x, T * D * 4, "activations", err)) || (rc = dmalloc(&b->tmp, T * D * 4, "activations", err)) ||
        (rc = dmalloc(&b->qkv, T * (size_t)b->qkv_dim * 4, "activations", err)) ||
        (rc = dmalloc(&b->q, T * (size_t)b->q_dim * 4, "activations", err)) ||
        (rc = dmalloc(&b->gu, T * 2 * F * 4, "activations", err)) ||
        (rc = dmalloc(&b->part, (size_t)PART_TOKEN_SPLITS * (size_t)c->n_heads * (size_t)(c->head_dim + 2) * 4,
                      "attention partials", err)) ||
        (rc = dmalloc(&b->logits, (size_t)P->max_logit_rows * (size_t)c->vocab * 4, "logits", err)) ||
        (rc = dmalloc(&b->lora_v, b->lora_v_floats * 4, "LoRA scratch", err)) ||
        (rc = dmalloc(&b->lora_cnt, T * LP_CU_MAX_MODS * sizeof(unsigned), "LoRA scratch", err)) ||
        (rc = dmalloc(&b->ylora, T * LP_MAX(LP_MAX((size_t)b->qkv_dim, 2 * F), D) * 4, "LoRA deltas", err)) ||
        (rc = dmalloc(&b->xn, T * D * b->csz, "activations", err)) ||
        (rc = dmalloc(&b->att, T * (size_t)b->q_dim * b->csz, "activations", err)) ||
        (rc = dmalloc(&b->act, T * wide * b->csz, "activations", err)) ||
        (rc = dmalloc(&b->lin, (size_t)P->max_logit_rows * D * b->csz, "activations", err)))
        return rc;
    if (P->max_adapters > 0 && (rc = dmalloc((void **)&b->lora_x, T * wide * 4, "the LoRA input", err)))
        return rc;
    size_t nd = (size_t)(P->max_adapters ? P->max_adapters : 1) * (size_t)c->n_layers * 7;
    CU(cudaMallocHost((void **)&b->h_desc, nd * sizeof(lp_cu_lora_desc)));
    memset(b->h_desc, 0, nd * sizeof(lp_cu_lora_desc));
    if ((rc = dmalloc(&b->d_desc, nd * sizeof(lp_cu_lora_desc), "adapter table", err)))
        return rc;
    CU(cudaMemset(b->d_desc, 0, nd * sizeof(lp_cu_lora_desc)));
    CU(cudaMemset(b->lora_cnt, 0, T * LP_CU_MAX_MODS * sizeof(unsigned)));
    for (int i = 0; i < P->max_adapters; i++)
        CU(cudaEventCreateWithFlags(&b->slots[i].ready, cudaEventDisableTiming));
    if ((rc = ensure_meta(b, 4096, err)))
        return rc;
    b->sample_chunk = LP_MIN(P->max_logit_rows, LP_CU_SAMPLE_CHUNK);
    size_t chunk = (size_t)b->sample_chunk, tiles = (size_t)lp_cu_sample_tiles(c->vocab);
    CU(cudaMallocHost((void **)&b->h_sspec, chunk * sizeof(lp_cu_sample_spec)));
    CU(cudaMallocHost((void **)&b->h_sout, chunk * sizeof(lp_cu_sample_out)));
    if ((rc = dmalloc(&b->d_sspec, chunk * sizeof(lp_cu_sample_spec), "sampling", err)) ||
        (rc = dmalloc(&b->d_sout, chunk * sizeof(lp_cu_sample_out), "sampling", err)) ||
        (rc = dmalloc(&b->d_tkeys, chunk * tiles * LP_SAMPLE_MAX_CAND * sizeof(uint64_t), "sampling", err)) ||
        (rc = dmalloc(&b->d_tstat, chunk * tiles * 2 * sizeof(double), "sampling", err)) ||
        (rc = grow_pair((void **)&b->h_sadj, (void **)&b->d_sadj, &b->sadj_cap, 4096, sizeof(lp_logit_adjust),
                        err)))
        return rc;
    CU(cudaDeviceSynchronize());
    return LP_OK;
}

extern "C" int lp_backend_cuda_new(const lp_model *model, const lp_backend_params *params, lp_backend **out,
                                   lp_error *err) {
    *out = NULL;
    lp_backend_params P = params ? *params : lp_backend_default_params();
    if (P.n_kv_blocks < 1 || P.block_size < 1 || P.max_tokens < 1 || P.max_rows < 1 || P.max_logit_rows < 1 ||
        P.max_adapters < 0 || P.max_lora_rank < 1)
        return lp_error_set(err, LP_ERR_INVALID, "cuda backend: all sizes must be positive");
    if (P.max_lora_rank > 256)
        return lp_error_set(err, LP_ERR_LIMIT, "cuda backend: max LoRA rank %d (the kernels take up to 256)",
                            P.max_lora_rank);
    if (lp_cuda_device_count() == 0)
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "device 'cuda': no CUDA device is visible to this process");
    const lp_model_config *c = lp_model_get_config(model);
    if (c->head_dim > 256 || c->head_dim % 2)
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "cuda backend: head_dim %d (even, at most 256)", c->head_dim);
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    b->base.ops = &k_cuda_ops;
    b->base.model = model;
    b->base.params = P;
    b->cfg = c;
    lp_dtype cdt;
    if (lp__cuda_compute_dtype(model, &cdt, err)) {
        free(b);
        return err ? err->code : LP_ERR_INVALID;
    }
    b->ct = file_ct(cdt);
    b->kt = lp_cu_kv_type(b->ct);
    b->csz = lp_cu_type_size(b->ct);
    b->q_dim = (int64_t)c->n_heads * c->head_dim;
    b->kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    b->qkv_dim = b->q_dim + 2 * b->kv_dim;
    int na = P.max_adapters ? P.max_adapters : 1;
    b->L = (cu_layer *)calloc((size_t)c->n_layers, sizeof(cu_layer));
    b->slots = (cu_slot *)calloc((size_t)na, sizeof(cu_slot));
    b->slot_ptrs = (const lp_adapter **)calloc((size_t)na, sizeof(*b->slot_ptrs));
    b->cnt = (int32_t *)calloc((size_t)na, sizeof(int32_t));
    int rc = !b->L || !b->slots || !b->slot_ptrs || !b->cnt ? lp_error_set(err, LP_ERR_NOMEM, "out of memory")
                                                           : cuda_init(b, err);
    if (rc) {
        cuda_free(&b->base);
        return rc;
    }
    LP_INFO("cuda backend: %s, %d SMs, weights %.2f GiB (%s), KV cache %.2f GiB (%s)", b->device_name, b->n_sm,
            (double)((size_t)lp_model_weight_bytes(model)) / (1 << 30),
            b->ct == LP_CT_F32 ? "fp32" : b->ct == LP_CT_F16 ? "fp16" : "bf16",
            (double)(b->block_elems * (size_t)P.n_kv_blocks * lp_cu_type_size(b->kt)) / (1 << 30),
            b->kt == LP_CT_F32 ? "fp32" : "fp16");
    *out = &b->base;
    return LP_OK;
}
