/* lora_kernels.cu - microbenchmark and correctness check of the multi-LoRA
 * shrink + expand (src/backend/cuda/lora.cu) for one projection shape, against
 * three cuBLAS baselines. See bench/lora_kernels.md.
 *
 *   sgmv        lp_cu_lora_ksplit + lp_cu_lora_shrink + lp_cu_lora_expand,
 *               descriptor table / items / perm built as the backend builds them
 *   gather_bmm  gather each token's A and Bt into contiguous per-token copies,
 *               then two cublasGemmStridedBatchedEx (shrink to bf16 V, expand into Y, beta 1)
 *   batched_ptr two cublasGemmBatchedEx with per-token pointer arrays (no copies)
 *   loop        gather X rows by perm, one cublasGemmEx pair per distinct adapter
 *               over its contiguous tokens, scatter-add into Y
 *
 * Every variant is captured into CUDA graphs of M consecutive ops (each op on
 * its own adapter set and X/Y buffers, so that a buffer is re-used only after
 * more than 2x L2 of other data has streamed); one timing sample = one graph
 * replay between two events, divided by M; median over --iters samples.
 *
 * Exit status: 0 ok, 1 a CUDA error or a failed correctness check, 2 usage,
 * 77 no usable CUDA device (skip). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/cuda-impl.h"
#include "model/model-impl.h"

typedef __nv_bfloat16 bf16;

#define CK(call)                                                                                              \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            fprintf(stderr, "bench_lora_kernels: %s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call,     \
                    cudaGetErrorName(e_), cudaGetErrorString(e_));                                            \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)
#define CB(call)                                                                                              \
    do {                                                                                                      \
        cublasStatus_t s_ = (call);                                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                    \
            fprintf(stderr, "bench_lora_kernels: %s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,          \
                    cublasGetStatusString(s_));                                                               \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)
#define CKL() CK(cudaGetLastError())

static size_t al256(size_t b) { return (b + 255) / 256 * 256; }

/* ---------------------------------------------------------------- kernels */

__device__ __forceinline__ float hash_unit(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(uint32_t)(z >> 40) * (2.0f / 16777216.0f) - 1.0f; /* [-1, 1) */
}

__global__ void gen_bf16(bf16 *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(scale * hash_unit(seed, i));
}
__global__ void gen_f32(float *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = scale * hash_unit(seed, i);
}

/* gather_bmm: Ag[t] = A(slot t), Bg[t] = Bt(slot t); strides in bytes, 16-byte aligned. */
__global__ void gather_adapters(const int32_t *tok_slot, const char *pool, size_t adapter_stride, size_t b_off,
                                char *Ag, size_t ag_stride, size_t a_bytes, char *Bg, size_t bg_stride,
                                size_t b_bytes) {
    int t = blockIdx.y;
    const char *src = pool + (size_t)tok_slot[t] * adapter_stride;
    char *da = Ag + (size_t)t * ag_stride, *db = Bg + (size_t)t * bg_stride;
    size_t na = a_bytes / 16, nb = b_bytes / 16;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < na + nb; i += (size_t)gridDim.x * blockDim.x) {
        if (i < na)
            ((uint4 *)da)[i] = ((const uint4 *)src)[i];
        else
            ((uint4 *)db)[i - na] = ((const uint4 *)(src + b_off))[i - na];
    }
    /* 2-byte tails (rank * in or rank * out not a multiple of 8) */
    if (blockIdx.x == 0) {
        for (size_t i = na * 8 + threadIdx.x; i < a_bytes / 2; i += blockDim.x)
            ((uint16_t *)da)[i] = ((const uint16_t *)src)[i];
        for (size_t i = nb * 8 + threadIdx.x; i < b_bytes / 2; i += blockDim.x)
            ((uint16_t *)db)[i] = ((const uint16_t *)(src + b_off))[i];
    }
}

/* Xp[p] = X[perm[p]] (bf16 rows of K): the loop variant's gather, and the
 * place-ordered copy of X that sgmv reads (untimed: in the backend the
 * kernel that produces the LoRA input writes it by place). */
__global__ void gather_rows(const bf16 *X, const int32_t *perm, bf16 *Xp, int K) {
    int p = blockIdx.y;
    const bf16 *s = X + (size_t)perm[p] * K;
    bf16 *d = Xp + (size_t)p * K;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x)
        d[k] = s[k];
}
/* loop: Y[perm[p]] += alpha[perm[p]] * Yp[p]. */
__global__ void scatter_add_rows(float *Y, const int32_t *perm, const float *alpha, const float *Yp, int N) {
    int p = blockIdx.y, t = perm[p];
    float a = alpha[t];
    const float *s = Yp + (size_t)p * N;
    float *d = Y + (size_t)t * N;
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < N; o += gridDim.x * blockDim.x)
        d[o] += a * s[o];
}

/* ---------------------------------------------------------------- options */

enum { V_SGMV, V_GATHER, V_PTR, V_LOOP, V_COUNT };
static const char *const vname[V_COUNT] = {"sgmv", "gather_bmm", "batched_ptr", "loop"};

struct opts {
    int K, N, R;
    std::vector<int> batches;
    bool same;
    int adapters; /* 0: one per token */
    int iters, warmup;
    int copy_mib;
    unsigned variants; /* bit mask */
    float scaling;
    uint64_t seed;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_lora_kernels [options]\n"
            "  --in K           projection input width (default 4096)\n"
            "  --out N          projection output width (default 4096)\n"
            "  --rank R         LoRA rank, 1..256 (default 16)\n"
            "  --batches LIST   token counts, comma separated (default 1,4,16,64,128,256)\n"
            "  --same           all tokens share one adapter\n"
            "  --adapters N     at most N distinct adapters, round robin over tokens\n"
            "  --iters N        timed samples per measurement (default 200)\n"
            "  --warmup N       warm-up samples (default 20)\n"
            "  --variants LIST  subset of sgmv,gather_bmm,batched_ptr,loop (default all)\n"
            "  --copy-mib N     copy-bandwidth buffer size in MiB (default 1024: 2 GiB moved)\n"
            "  --seed N         random seed (default 1)\n");
}

static int parse_int(const char *s, const char *what, int lo, int hi) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "bench_lora_kernels: bad %s '%s' (want %d..%d)\n", what, s, lo, hi);
        exit(2);
    }
    return (int)v;
}

static opts parse(int argc, char **argv) {
    opts o;
    o.K = 4096;
    o.N = 4096;
    o.R = 16;
    o.batches = {1, 4, 16, 64, 128, 256};
    o.same = false;
    o.adapters = 0;
    o.iters = 200;
    o.warmup = 20;
    o.copy_mib = 1024;
    o.variants = (1u << V_COUNT) - 1;
    o.scaling = 2.0f; /* lora_alpha / r = 32 / 16 */
    o.seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--same")) {
            o.same = true;
        } else if (!has) {
            fprintf(stderr, "bench_lora_kernels: unknown option or missing value: %s\n", a);
            usage(stderr);
            exit(2);
        } else if (!strcmp(a, "--in")) {
            o.K = parse_int(argv[++i], "--in", 1, 1 << 20);
        } else if (!strcmp(a, "--out")) {
            o.N = parse_int(argv[++i], "--out", 1, 1 << 20);
        } else if (!strcmp(a, "--rank")) {
            o.R = parse_int(argv[++i], "--rank", 1, 256);
        } else if (!strcmp(a, "--adapters")) {
            o.adapters = parse_int(argv[++i], "--adapters", 1, 1 << 20);
        } else if (!strcmp(a, "--iters")) {
            o.iters = parse_int(argv[++i], "--iters", 1, 1 << 20);
        } else if (!strcmp(a, "--warmup")) {
            o.warmup = parse_int(argv[++i], "--warmup", 0, 1 << 20);
        } else if (!strcmp(a, "--copy-mib")) {
            o.copy_mib = parse_int(argv[++i], "--copy-mib", 1, 1 << 16);
        } else if (!strcmp(a, "--seed")) {
            o.seed = (uint64_t)parse_int(argv[++i], "--seed", 0, 1 << 30);
        } else if (!strcmp(a, "--batches")) {
            o.batches.clear();
            char *s = strdup(argv[++i]);
            for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ","))
                o.batches.push_back(parse_int(tok, "--batches entry", 1, 65535));
            free(s);
            if (o.batches.empty()) {
                fprintf(stderr, "bench_lora_kernels: --batches is empty\n");
                exit(2);
            }
        } else if (!strcmp(a, "--variants")) {
            o.variants = 0;
            char *s = strdup(argv[++i]);
            for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
                int v = 0;
                while (v < V_COUNT && strcmp(tok, vname[v]))
                    v++;
                if (v == V_COUNT) {
                    fprintf(stderr, "bench_lora_kernels: unknown variant '%s'\n", tok);
                    exit(2);
                }
                o.variants |= 1u << v;
            }
            free(s);
            if (!o.variants)
                exit(2);
        } else {
            fprintf(stderr, "bench_lora_kernels: unknown option %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    return o;
}

/* ---------------------------------------------------------------- helpers */

static float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void fill_bf16(bf16 *p, size_t n, uint64_t seed, float scale, cudaStream_t s) {
    if (!n)
        return;
    gen_bf16<<<(unsigned)std::min<size_t>((n + 255) / 256, 8192), 256, 0, s>>>(p, n, seed, scale);
    CKL();
}
static void fill_f32(float *p, size_t n, uint64_t seed, float scale, cudaStream_t s) {
    if (!n)
        return;
    gen_f32<<<(unsigned)std::min<size_t>((n + 255) / 256, 8192), 256, 0, s>>>(p, n, seed, scale);
    CKL();
}

static double quantile(std::vector<float> v, double q) {
    std::sort(v.begin(), v.end());
    size_t i = (size_t)(q * (double)(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

/* ---------------------------------------------------------------- state */

typedef struct seg {
    int slot, p0, n;
} seg;

/* Everything one batch size T needs. Rotation index r in [0, n_sets):
 * adapter set r (slots r*D .. r*D+D-1), X/Y buffers r. */
struct bstate {
    int T = 0, D = 0, n_sets = 0, M = 0;
    int n_items = 0;
    std::vector<int> tok_adapter;          /* (T) adapter index within a set */
    std::vector<int32_t> h_perm;           /* (T) */
    std::vector<lp_cu_lora_item> h_items;  /* (n_sets * n_items) */
    std::vector<std::vector<seg>> segs;    /* (n_sets) loop segments */
    lp_cu_lora_item *d_items = nullptr;    /* (n_sets * n_items) */
    int32_t *d_perm = nullptr;             /* (T) */
    int32_t *d_tok_slot = nullptr;         /* (n_sets * T) */
    float *d_alpha = nullptr;              /* (T) ones */
    bf16 *X = nullptr;                     /* (n_sets, T, K) */
    bf16 *Xs = nullptr;                    /* (n_sets, T, K): X's rows by place, for sgmv */
    float *Y = nullptr;                    /* (n_sets, T, N) */
    float *V = nullptr;                    /* (splits, T, LP_CU_MAX_MODS, R) fp32, sgmv */
    unsigned *cnt = nullptr;               /* (n_items, LP_CU_MAX_MODS) split counters, sgmv */
    bf16 *Vb = nullptr;                    /* (T, R) bf16, cuBLAS variants */
    bf16 *Ag = nullptr, *Bg = nullptr;     /* gather_bmm copies */
    size_t ag_stride = 0, bg_stride = 0;   /* elements */
    bf16 *Xp = nullptr;                    /* loop: permuted X */
    float *Yp = nullptr;                   /* loop: permuted delta */
    const void **d_ptrs = nullptr;         /* batched_ptr: (n_sets, 6, T) */
};

struct ctx {
    opts o;
    cudaStream_t st = nullptr;
    cublasHandle_t blas = nullptr;
    void *ws = nullptr;
    int n_sm = 0;
    size_t l2 = 0;
    char *pool = nullptr; /* P adapters */
    int P = 0;
    size_t a_bytes = 0, b_bytes = 0, b_off = 0, adapter_stride = 0;
    lp_cu_lora_desc *d_desc = nullptr; /* (P, 1, 7) */
    double copy_bw = 0;                /* bytes / s */
};

static const bf16 *slot_A(const ctx *c, int slot) {
    return (const bf16 *)(c->pool + (size_t)slot * c->adapter_stride);
}
static const bf16 *slot_B(const ctx *c, int slot) {
    return (const bf16 *)(c->pool + (size_t)slot * c->adapter_stride + c->b_off);
}

static int n_distinct(const opts &o, int T) {
    if (o.same)
        return 1;
    if (o.adapters > 0)
        return std::min(o.adapters, T);
    return T;
}

/* Footprint of one op (bytes it touches once): adapters + X + Y + V. */
static size_t op_footprint(const ctx *c, int T, int D) {
    const opts &o = c->o;
    return (size_t)D * (c->a_bytes + c->b_bytes) + (size_t)T * o.K * 2 + (size_t)T * o.N * 4 +
           (size_t)T * o.R * 4;
}
/* The op's minimal DRAM traffic: distinct adapters' A and Bt, X read, Y read
 * and written, V written and read back (fp32). */
static double op_bytes(const ctx *c, int T, int D) {
    const opts &o = c->o;
    return (double)D * (double)(c->a_bytes + c->b_bytes) + (double)T * o.K * 2 + (double)T * o.N * 4 * 2 +
           (double)T * o.R * 4 * 2;
}

static void plan_sets(const ctx *c, int T, int D, int *n_sets, int *M) {
    double fp = (double)op_footprint(c, T, D);
    int need = (int)ceil(2.0 * (double)c->l2 / fp);
    if (need < 2)
        need = 2;
    int m = std::min(8, need);
    *M = m;
    *n_sets = (need + m - 1) / m * m;
}

/* dst = X of set r in place order (perm): T rows of K. */
static void gather_x(ctx *c, bstate *b, int r, bf16 *dst) {
    int T = b->T, K = c->o.K;
    unsigned gk = (unsigned)std::max(1, std::min((K + 255) / 256, 16));
    gather_rows<<<dim3(gk, T), 256, 0, c->st>>>(b->X + (size_t)r * T * K, b->d_perm, dst, K);
    CKL();
}

/* Xs of set r, the place-ordered X that sgmv reads. */
static void place_x(ctx *c, bstate *b, int r) { gather_x(c, b, r, b->Xs + (size_t)r * b->T * c->o.K); }

static void setup_batch(ctx *c, bstate *b, int T) {
    const opts &o = c->o;
    b->T = T;
    b->D = n_distinct(o, T);
    plan_sets(c, T, b->D, &b->n_sets, &b->M);
    if ((size_t)b->n_sets * b->D > (size_t)c->P) {
        fprintf(stderr, "bench_lora_kernels: internal: pool too small\n");
        exit(1);
    }
    int D = b->D, S = b->n_sets;
    b->tok_adapter.resize(T);
    for (int t = 0; t < T; t++)
        b->tok_adapter[t] = t % D; /* round robin: an adapter's tokens are not contiguous */

    /* as cuda_forward: counting sort by slot (slots of a set ascend with the
     * adapter index, so perm is the same for every set), tiles of LP_CU_LORA_TILE */
    std::vector<int32_t> cnt(D, 0), start(D, 0);
    for (int t = 0; t < T; t++)
        cnt[b->tok_adapter[t]]++;
    b->n_items = 0;
    for (int a = 0; a < D; a++)
        b->n_items += (cnt[a] + LP_CU_LORA_TILE - 1) / LP_CU_LORA_TILE;
    b->h_items.resize((size_t)S * b->n_items);
    b->segs.resize(S);
    for (int s = 0; s < S; s++) {
        int32_t acc = 0, k = 0;
        for (int a = 0; a < D; a++) {
            int slot = s * D + a;
            if (s == 0)
                start[a] = acc;
            for (int32_t p = 0; p < cnt[a]; p += LP_CU_LORA_TILE) {
                lp_cu_lora_item it = {slot, acc + p, std::min<int32_t>(LP_CU_LORA_TILE, cnt[a] - p), 0};
                b->h_items[(size_t)s * b->n_items + k++] = it;
            }
            b->segs[s].push_back({slot, acc, cnt[a]});
            acc += cnt[a];
        }
    }
    b->h_perm.resize(T);
    for (int t = 0; t < T; t++)
        b->h_perm[start[b->tok_adapter[t]]++] = t;

    std::vector<int32_t> tok_slot((size_t)S * T);
    for (int s = 0; s < S; s++)
        for (int t = 0; t < T; t++)
            tok_slot[(size_t)s * T + t] = s * D + b->tok_adapter[t];
    std::vector<float> ones(T, 1.0f);

    CK(cudaMalloc((void **)&b->d_items, sizeof(lp_cu_lora_item) * b->h_items.size()));
    CK(cudaMalloc((void **)&b->d_perm, sizeof(int32_t) * T));
    CK(cudaMalloc((void **)&b->d_tok_slot, sizeof(int32_t) * tok_slot.size()));
    CK(cudaMalloc((void **)&b->d_alpha, sizeof(float) * T));
    CK(cudaMemcpy(b->d_items, b->h_items.data(), sizeof(lp_cu_lora_item) * b->h_items.size(),
                  cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b->d_perm, b->h_perm.data(), sizeof(int32_t) * T, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b->d_tok_slot, tok_slot.data(), sizeof(int32_t) * tok_slot.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b->d_alpha, ones.data(), sizeof(float) * T, cudaMemcpyHostToDevice));

    size_t K = o.K, N = o.N, R = o.R;
    CK(cudaMalloc((void **)&b->X, (size_t)S * T * K * 2));
    CK(cudaMalloc((void **)&b->Xs, (size_t)S * T * K * 2));
    CK(cudaMalloc((void **)&b->Y, (size_t)S * T * N * 4));
    /* split-K partials: at most ceil(K/256) splits */
    CK(cudaMalloc((void **)&b->V, lp_cu_lora_v_floats(T, (int)((K + 255) / 256), (int)R) * 4));
    CK(cudaMalloc((void **)&b->cnt, sizeof(unsigned) * (size_t)T * LP_CU_MAX_MODS));
    CK(cudaMemset(b->cnt, 0, sizeof(unsigned) * (size_t)T * LP_CU_MAX_MODS));
    CK(cudaMalloc((void **)&b->Vb, (size_t)T * R * 2));
    b->ag_stride = al256(c->a_bytes) / 2;
    b->bg_stride = al256(c->b_bytes) / 2;
    if (o.variants & (1u << V_GATHER)) {
        CK(cudaMalloc((void **)&b->Ag, (size_t)T * b->ag_stride * 2));
        CK(cudaMalloc((void **)&b->Bg, (size_t)T * b->bg_stride * 2));
    }
    if (o.variants & (1u << V_LOOP)) {
        CK(cudaMalloc((void **)&b->Xp, (size_t)T * K * 2));
        CK(cudaMalloc((void **)&b->Yp, (size_t)T * N * 4));
    }
    if (o.variants & (1u << V_PTR)) {
        std::vector<const void *> ptrs((size_t)S * 6 * T);
        for (int s = 0; s < S; s++) {
            const void **p = &ptrs[(size_t)s * 6 * T];
            for (int t = 0; t < T; t++) {
                int slot = tok_slot[(size_t)s * T + t];
                p[0 * T + t] = slot_A(c, slot);                          /* shrink A */
                p[1 * T + t] = b->X + ((size_t)s * T + t) * K;           /* shrink B */
                p[2 * T + t] = b->Vb + (size_t)t * R;                    /* shrink C */
                p[3 * T + t] = slot_B(c, slot);                          /* expand A */
                p[4 * T + t] = b->Vb + (size_t)t * R;                    /* expand B */
                p[5 * T + t] = b->Y + ((size_t)s * T + t) * N;           /* expand C */
            }
        }
        CK(cudaMalloc((void **)&b->d_ptrs, sizeof(void *) * ptrs.size()));
        CK(cudaMemcpy(b->d_ptrs, ptrs.data(), sizeof(void *) * ptrs.size(), cudaMemcpyHostToDevice));
    }
    /* X ~ U(-1, 1), Y ~ U(-1, 1): never zeros */
    fill_bf16(b->X, (size_t)S * T * K, o.seed * 1000003u + 11u * T + 1, 1.0f, c->st);
    fill_f32(b->Y, (size_t)S * T * N, o.seed * 1000003u + 11u * T + 2, 1.0f, c->st);
    for (int s = 0; s < S; s++)
        place_x(c, b, s);
    CK(cudaStreamSynchronize(c->st));
}

static void free_batch(bstate *b) {
    void *ps[] = {b->d_items, b->d_perm, b->d_tok_slot, b->d_alpha, b->X, b->Xs, b->Y, b->V, b->cnt, b->Vb,
                  b->Ag, b->Bg, b->Xp, b->Yp, (void *)b->d_ptrs};
    for (void *p : ps)
        if (p)
            CK(cudaFree(p));
}

/* ---------------------------------------------------------------- the ops */

static void op_sgmv(ctx *c, bstate *b, int r) {
    const opts &o = c->o;
    int T = b->T;
    lp_cu_mods mods = {1, {LP_MOD_Q}, {o.N}, {0}};
    int ks = lp_cu_lora_ksplit(b->n_items, mods.n, o.K, c->n_sm);
    lp_cu_lora_call lc = {c->d_desc, 1, 0, b->d_items + (size_t)r * b->n_items, b->n_items,
                          b->d_perm, b->d_alpha, b->V, o.R, T, ks, b->cnt, 0};
    CK(lp_cu_lora_shrink(&lc, &mods, b->Xs + (size_t)r * T * o.K, LP_CT_BF16, o.K, o.K, c->st));
    CK(lp_cu_lora_expand(&lc, &mods, b->Y + (size_t)r * T * o.N, o.N, c->st));
}

static void op_gather_bmm(ctx *c, bstate *b, int r) {
    const opts &o = c->o;
    int T = b->T;
    size_t units = (c->a_bytes + c->b_bytes) / 16;
    unsigned gx = (unsigned)std::max<size_t>(1, std::min<size_t>((units + 255) / 256, 64));
    gather_adapters<<<dim3(gx, T), 256, 0, c->st>>>(b->d_tok_slot + (size_t)r * T, c->pool, c->adapter_stride,
                                                    c->b_off, (char *)b->Ag, b->ag_stride * 2, c->a_bytes,
                                                    (char *)b->Bg, b->bg_stride * 2, c->b_bytes);
    CKL();
    const float one = 1.0f, zero = 0.0f;
    /* V_t (R) = A_t (R, K) x_t: column-major A_t is (K, R) ld K, transposed */
    CB(cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, o.R, 1, o.K, &one, b->Ag, CUDA_R_16BF, o.K,
                                  (long long)b->ag_stride, b->X + (size_t)r * T * o.K, CUDA_R_16BF, o.K,
                                  (long long)o.K, &zero, b->Vb, CUDA_R_16BF, o.R, (long long)o.R, T,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    /* y_t (N) += scaling Bt_t^T v_t: column-major Bt_t is (N, R) ld N */
    CB(cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, o.N, 1, o.R, &o.scaling, b->Bg, CUDA_R_16BF,
                                  o.N, (long long)b->bg_stride, b->Vb, CUDA_R_16BF, o.R, (long long)o.R, &one,
                                  b->Y + (size_t)r * T * o.N, CUDA_R_32F, o.N, (long long)o.N, T,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void op_batched_ptr(ctx *c, bstate *b, int r) {
    const opts &o = c->o;
    int T = b->T;
    const void **p = b->d_ptrs + (size_t)r * 6 * T;
    const float one = 1.0f, zero = 0.0f;
    CB(cublasGemmBatchedEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, o.R, 1, o.K, &one, p + 0 * T, CUDA_R_16BF, o.K,
                           p + 1 * T, CUDA_R_16BF, o.K, &zero, (void *const *)(p + 2 * T), CUDA_R_16BF, o.R, T,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CB(cublasGemmBatchedEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, o.N, 1, o.R, &o.scaling, p + 3 * T, CUDA_R_16BF,
                           o.N, p + 4 * T, CUDA_R_16BF, o.R, &one, (void *const *)(p + 5 * T), CUDA_R_32F, o.N, T,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void op_loop(ctx *c, bstate *b, int r) {
    const opts &o = c->o;
    int T = b->T;
    gather_x(c, b, r, b->Xp);
    const float one = 1.0f, zero = 0.0f;
    for (const seg &sg : b->segs[r]) {
        /* Vp (R, n) = A^T' Xp (K, n), column-major */
        CB(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, o.R, sg.n, o.K, &one, slot_A(c, sg.slot), CUDA_R_16BF,
                        o.K, b->Xp + (size_t)sg.p0 * o.K, CUDA_R_16BF, o.K, &zero, b->Vb + (size_t)sg.p0 * o.R,
                        CUDA_R_16BF, o.R, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        /* Yp (N, n) = scaling Bt' (N, R) Vp (R, n) */
        CB(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, o.N, sg.n, o.R, &o.scaling, slot_B(c, sg.slot),
                        CUDA_R_16BF, o.N, b->Vb + (size_t)sg.p0 * o.R, CUDA_R_16BF, o.R, &zero,
                        b->Yp + (size_t)sg.p0 * o.N, CUDA_R_32F, o.N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    unsigned gn = (unsigned)std::max(1, std::min((o.N + 255) / 256, 16));
    scatter_add_rows<<<dim3(gn, T), 256, 0, c->st>>>(b->Y + (size_t)r * T * o.N, b->d_perm, b->d_alpha, b->Yp,
                                                      o.N);
    CKL();
}

static void run_op(ctx *c, bstate *b, int v, int r) {
    switch (v) {
    case V_SGMV: op_sgmv(c, b, r); break;
    case V_GATHER: op_gather_bmm(c, b, r); break;
    case V_PTR: op_batched_ptr(c, b, r); break;
    default: op_loop(c, b, r); break;
    }
}

/* ---------------------------------------------------------------- check */

typedef struct check_res {
    double rel;    /* ||dY - ref|| / ||ref|| */
    long nan;      /* non-finite outputs */
    long far;      /* elements off by more than 0.1 rms(ref) */
} check_res;

/* Y of rotation r is re-drawn, scratch buffers poisoned with NaN, one op run,
 * Y_after - Y_before compared with a float64 reference from the same bf16 values. */
static check_res check_variant(ctx *c, bstate *b, int v, int r, uint64_t seed) {
    const opts &o = c->o;
    int T = b->T;
    size_t K = o.K, N = o.N, R = o.R;
    bf16 *X = b->X + (size_t)r * T * K;
    float *Y = b->Y + (size_t)r * T * N;
    fill_bf16(X, (size_t)T * K, seed, 1.0f, c->st); /* fresh inputs for every check */
    place_x(c, b, r);
    fill_f32(Y, (size_t)T * N, seed + 1, 1.0f, c->st);
    CK(cudaMemsetAsync(b->V, 0xFF, lp_cu_lora_v_floats(T, (int)((K + 255) / 256), (int)R) * 4, c->st));
    CK(cudaMemsetAsync(b->Vb, 0xFF, (size_t)T * R * 2, c->st));
    if (b->Ag) {
        CK(cudaMemsetAsync(b->Ag, 0xFF, (size_t)T * b->ag_stride * 2, c->st));
        CK(cudaMemsetAsync(b->Bg, 0xFF, (size_t)T * b->bg_stride * 2, c->st));
    }
    if (b->Xp) {
        CK(cudaMemsetAsync(b->Xp, 0xFF, (size_t)T * K * 2, c->st));
        CK(cudaMemsetAsync(b->Yp, 0xFF, (size_t)T * N * 4, c->st));
    }
    std::vector<uint16_t> hx((size_t)T * K);
    std::vector<float> y0((size_t)T * N), y1((size_t)T * N);
    CK(cudaMemcpyAsync(hx.data(), X, hx.size() * 2, cudaMemcpyDeviceToHost, c->st));
    CK(cudaMemcpyAsync(y0.data(), Y, y0.size() * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaStreamSynchronize(c->st));
    run_op(c, b, v, r);
    CK(cudaStreamSynchronize(c->st));
    CK(cudaMemcpy(y1.data(), Y, y1.size() * 4, cudaMemcpyDeviceToHost));

    /* the adapters of set r, as stored on the device */
    int D = b->D;
    std::vector<uint16_t> ha((size_t)D * R * K), hb((size_t)D * R * N);
    for (int a = 0; a < D; a++) {
        int slot = r * D + a;
        CK(cudaMemcpy(&ha[(size_t)a * R * K], slot_A(c, slot), R * K * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(&hb[(size_t)a * R * N], slot_B(c, slot), R * N * 2, cudaMemcpyDeviceToHost));
    }
    std::vector<double> xv(K), vv(R), ref(N);
    double num = 0, den = 0, ss_ref = 0;
    std::vector<double> err((size_t)T * N);
    check_res res = {0, 0, 0};
    for (int t = 0; t < T; t++) {
        const uint16_t *A = &ha[(size_t)b->tok_adapter[t] * R * K];
        const uint16_t *B = &hb[(size_t)b->tok_adapter[t] * R * N];
        for (size_t k = 0; k < K; k++)
            xv[k] = bf2f(hx[(size_t)t * K + k]);
        for (size_t rr = 0; rr < R; rr++) {
            double s = 0;
            for (size_t k = 0; k < K; k++)
                s += (double)bf2f(A[rr * K + k]) * xv[k];
            vv[rr] = s;
        }
        for (size_t n = 0; n < N; n++)
            ref[n] = 0;
        for (size_t rr = 0; rr < R; rr++)
            for (size_t n = 0; n < N; n++)
                ref[n] += vv[rr] * (double)bf2f(B[rr * N + n]);
        for (size_t n = 0; n < N; n++) {
            double rf = 1.0 /* alpha */ * (double)o.scaling * ref[n];
            double got = (double)y1[(size_t)t * N + n] - (double)y0[(size_t)t * N + n];
            if (!isfinite(y1[(size_t)t * N + n])) {
                res.nan++;
                continue;
            }
            double e = got - rf;
            err[(size_t)t * N + n] = e;
            num += e * e;
            den += rf * rf;
        }
    }
    ss_ref = sqrt(den / ((double)T * N));
    for (size_t i = 0; i < err.size(); i++)
        if (fabs(err[i]) > 0.1 * ss_ref)
            res.far++;
    res.rel = den > 0 ? sqrt(num / den) : INFINITY;
    if (res.nan)
        res.rel = NAN;
    return res;
}

/* ---------------------------------------------------------------- timing */

typedef struct meas {
    double med, p10, p90, mn;
} meas;

static meas time_variant(ctx *c, bstate *b, int v) {
    const opts &o = c->o;
    int G = b->n_sets / b->M;
    std::vector<cudaGraphExec_t> ex(G);
    for (int g = 0; g < G; g++) {
        cudaGraph_t graph;
        CK(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
        for (int j = 0; j < b->M; j++)
            run_op(c, b, v, g * b->M + j);
        CK(cudaStreamEndCapture(c->st, &graph));
        CK(cudaGraphInstantiate(&ex[g], graph, 0));
        CK(cudaGraphDestroy(graph));
    }
    int n = o.warmup + o.iters;
    std::vector<cudaEvent_t> ev(2 * (size_t)n);
    for (auto &e : ev)
        CK(cudaEventCreate(&e));
    for (int i = 0; i < n; i++) {
        CK(cudaEventRecord(ev[2 * i], c->st));
        CK(cudaGraphLaunch(ex[i % G], c->st));
        CK(cudaEventRecord(ev[2 * i + 1], c->st));
    }
    CK(cudaStreamSynchronize(c->st));
    CKL();
    std::vector<float> us;
    for (int i = o.warmup; i < n; i++) {
        float ms;
        CK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
        us.push_back(ms * 1000.0f / (float)b->M);
    }
    for (auto &e : ev)
        CK(cudaEventDestroy(e));
    for (auto &e : ex)
        CK(cudaGraphExecDestroy(e));
    meas m;
    m.med = quantile(us, 0.5);
    m.p10 = quantile(us, 0.1);
    m.p90 = quantile(us, 0.9);
    m.mn = quantile(us, 0.0);
    return m;
}

static double copy_bandwidth(ctx *c) {
    size_t bytes = (size_t)c->o.copy_mib << 20;
    char *src, *dst;
    CK(cudaMalloc((void **)&src, bytes));
    CK(cudaMalloc((void **)&dst, bytes));
    fill_f32((float *)src, bytes / 4, 0xC0FFEEu, 1.0f, c->st);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int i = 0; i < 12; i++) {
        CK(cudaEventRecord(e0, c->st));
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->st));
        CK(cudaEventRecord(e1, c->st));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (i >= 2) /* 2 warm-up copies */
            ms.push_back(t);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(src));
    CK(cudaFree(dst));
    return 2.0 * (double)bytes / (quantile(ms, 0.5) * 1e-3); /* read + written */
}

/* ---------------------------------------------------------------- main */

typedef struct row {
    int v, T, D;
    meas m;
    double bytes, roof_us, rel;
    bool ok;
} row;

int main(int argc, char **argv) {
    ctx c;
    c.o = parse(argc, argv);
    const opts &o = c.o;

    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "bench_lora_kernels: no usable CUDA device (%s%s%s): no NVIDIA GPU/driver here? "
                        "nothing to measure, skipping (exit 77)\n",
                e != cudaSuccess ? cudaGetErrorName(e) : "device count 0", e != cudaSuccess ? ": " : "",
                e != cudaSuccess ? cudaGetErrorString(e) : "");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    CK(cudaSetDevice(0));
    c.n_sm = prop.multiProcessorCount;
    c.l2 = prop.l2CacheSize > 0 ? (size_t)prop.l2CacheSize : (size_t)50 << 20;
    CK(cudaStreamCreateWithFlags(&c.st, cudaStreamNonBlocking));
    CB(cublasCreate(&c.blas));
    CB(cublasSetStream(c.blas, c.st));
    size_t ws_bytes = (size_t)32 << 20; /* explicit workspace: no allocation during graph capture */
    CK(cudaMalloc(&c.ws, ws_bytes));
    CB(cublasSetWorkspace(c.blas, c.ws, ws_bytes));

    fprintf(stderr, "device: %s, %d SMs, L2 %zu MiB, cc %d.%d\n", prop.name, c.n_sm, c.l2 >> 20, prop.major,
            prop.minor);
    c.copy_bw = copy_bandwidth(&c);
    fprintf(stderr, "copy bandwidth: %.1f GB/s (D2D %d MiB, read + written, median of 10)\n", c.copy_bw * 1e-9,
            o.copy_mib);

    /* the adapter pool: slot i at pool + i * stride, A (R, K) then Bt (R, N), bf16, 256-byte aligned */
    c.a_bytes = (size_t)o.R * o.K * 2;
    c.b_bytes = (size_t)o.R * o.N * 2;
    c.b_off = al256(c.a_bytes);
    c.adapter_stride = c.b_off + al256(c.b_bytes);
    c.P = 0;
    for (int T : o.batches) {
        int S, M, D = n_distinct(o, T);
        plan_sets(&c, T, D, &S, &M);
        c.P = std::max(c.P, S * D);
    }
    fprintf(stderr, "adapter pool: %d adapters x %.2f MiB = %.1f MiB\n", c.P, c.adapter_stride / 1048576.0,
            (double)c.P * c.adapter_stride / 1048576.0);
    CK(cudaMalloc((void **)&c.pool, (size_t)c.P * c.adapter_stride));
    /* A ~ U(-1, 1) / sqrt(K), Bt ~ U(-1, 1) / sqrt(R): deltas of order 1 */
    for (int s = 0; s < c.P; s++) {
        fill_bf16((bf16 *)slot_A(&c, s), (size_t)o.R * o.K, o.seed * 7919u + 2u * s, 1.0f / sqrtf((float)o.K),
                  c.st);
        fill_bf16((bf16 *)slot_B(&c, s), (size_t)o.R * o.N, o.seed * 7919u + 2u * s + 1,
                  1.0f / sqrtf((float)o.R), c.st);
    }
    std::vector<lp_cu_lora_desc> hd((size_t)c.P * 7);
    memset((void *)hd.data(), 0, sizeof(lp_cu_lora_desc) * hd.size());
    for (int s = 0; s < c.P; s++) {
        lp_cu_lora_desc *d = &hd[((size_t)s * 1 + 0) * 7 + LP_MOD_Q];
        d->A = slot_A(&c, s);
        d->Bt = slot_B(&c, s);
        d->dora = NULL;
        d->scaling = o.scaling;
        d->rank = o.R;
    }
    CK(cudaMalloc((void **)&c.d_desc, sizeof(lp_cu_lora_desc) * hd.size()));
    CK(cudaMemcpy(c.d_desc, hd.data(), sizeof(lp_cu_lora_desc) * hd.size(), cudaMemcpyHostToDevice));
    CK(cudaStreamSynchronize(c.st));

    std::vector<row> rows;
    bool all_ok = true;
    for (int T : o.batches) {
        bstate b;
        setup_batch(&c, &b, T);
        fprintf(stderr, "T=%d: %d distinct adapters, %d items, %d rotation sets, %d ops per graph\n", T, b.D,
                b.n_items, b.n_sets, b.M);
        for (int v = 0; v < V_COUNT; v++) {
            if (!(o.variants & (1u << v)))
                continue;
            /* two checks: the first and the last rotation set (different adapters) */
            check_res c0 = check_variant(&c, &b, v, 0, o.seed * 1315423911u + 97u * T + 13u * v);
            check_res c1 = check_variant(&c, &b, v, b.n_sets - 1, o.seed * 1315423911u + 97u * T + 13u * v + 5);
            double rel = std::max(c0.rel, c1.rel);
            if (c0.nan || c1.nan)
                rel = NAN;
            bool ok = !c0.nan && !c1.nan && c0.rel <= 1e-2 && c1.rel <= 1e-2 && !c0.far && !c1.far;
            if (!ok) {
                fprintf(stderr,
                        "FAIL %s T=%d: rel err %.3g / %.3g, non-finite %ld / %ld, far-off elements %ld / %ld\n",
                        vname[v], T, c0.rel, c1.rel, c0.nan, c1.nan, c0.far, c1.far);
                all_ok = false;
            }
            row rw;
            rw.v = v;
            rw.T = T;
            rw.D = b.D;
            rw.m = time_variant(&c, &b, v);
            rw.bytes = op_bytes(&c, T, b.D);
            rw.roof_us = rw.bytes / c.copy_bw * 1e6;
            rw.rel = rel;
            rw.ok = ok;
            rows.push_back(rw);
        }
        /* JSON lines once the batch size's sgmv time is known */
        double sg = 0;
        for (const row &rw : rows)
            if (rw.T == T && rw.v == V_SGMV)
                sg = rw.m.med;
        for (const row &rw : rows) {
            if (rw.T != T)
                continue;
            printf("{\"bench\":\"lora_kernels\",\"device\":\"%s\",\"variant\":\"%s\",\"T\":%d,\"adapters\":%d,"
                   "\"in\":%d,\"out\":%d,\"rank\":%d,\"median_us\":%.3f,\"p10_us\":%.3f,\"p90_us\":%.3f,"
                   "\"min_us\":%.3f,\"samples\":%d,\"ops_per_sample\":%d,\"bytes\":%.0f,\"copy_gbs\":%.1f,"
                   "\"roofline_us\":%.3f,\"roofline_frac\":%.4f,\"rel_err\":%.3e,\"ok\":%s",
                   prop.name, vname[rw.v], rw.T, rw.D, o.K, o.N, o.R, rw.m.med, rw.m.p10, rw.m.p90, rw.m.mn,
                   o.iters, b.M, rw.bytes, c.copy_bw * 1e-9, rw.roof_us, rw.roof_us / rw.m.med,
                   isnan(rw.rel) ? -1.0 : rw.rel, rw.ok ? "true" : "false");
            if (rw.v != V_SGMV && sg > 0)
                printf(",\"sgmv_speedup\":%.3f", rw.m.med / sg);
            printf("}\n");
        }
        fflush(stdout);
        free_batch(&b);
    }

    printf("\nmulti-LoRA shrink+expand, in %d out %d rank %d, bf16 adapters, bf16 X, fp32 Y, %s; "
           "copy bw %.1f GB/s\n",
           o.K, o.N, o.R,
           o.same ? "all tokens one adapter" : o.adapters ? "round-robin over capped adapters" : "one adapter per token",
           c.copy_bw * 1e-9);
    printf("%-12s %5s %5s %10s %10s %10s %11s %9s %9s %10s %s\n", "variant", "T", "D", "median_us", "p10_us",
           "p90_us", "MB_moved", "roof_us", "roof/meas", "sgmv_x", "rel_err");
    for (const row &rw : rows) {
        double sg = 0;
        for (const row &q : rows)
            if (q.T == rw.T && q.v == V_SGMV)
                sg = q.m.med;
        char sx[32] = "-";
        if (rw.v != V_SGMV && sg > 0)
            snprintf(sx, sizeof sx, "%.2f", rw.m.med / sg);
        printf("%-12s %5d %5d %10.2f %10.2f %10.2f %11.3f %9.2f %9.3f %10s %.2e%s\n", vname[rw.v], rw.T, rw.D,
               rw.m.med, rw.m.p10, rw.m.p90, rw.bytes * 1e-6, rw.roof_us, rw.roof_us / rw.m.med, sx, rw.rel,
               rw.ok ? "" : "  FAIL");
    }
    printf("sgmv_x = baseline median / sgmv median (> 1: sgmv faster)\n");
    if (!all_ok)
        printf("CORRECTNESS FAILURES (see stderr)\n");

    CK(cudaFree(c.d_desc));
    CK(cudaFree(c.pool));
    CK(cudaFree(c.ws));
    CB(cublasDestroy(c.blas));
    CK(cudaStreamDestroy(c.st));
    return all_ok ? 0 : 1;
}
