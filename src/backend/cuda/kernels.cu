/* kernels.cu - the CUDA backend's non-matrix kernels: dtype conversion,
 * embedding gather, fused residual add + RMSNorm, fused q/k/v bias + q/k
 * norm + rotary embedding + paged KV write, paged attention (split along the
 * sequence, one kernel for prefill and decode), SiLU-mul. Dense matrix
 * products go through cuBLAS (cuda_backend.cu), LoRA through lora.cu. */
#include <math.h>

#include <mma.h>

#include "backend/cuda/cuda-device.cuh"

/* lp_dtype values of the file dtypes a weight can have (include/loraplex/dtype.h) */
enum { FILE_F32 = 1, FILE_F16 = 2, FILE_BF16 = 3 };

template <typename D, typename S>
__global__ void convert_kernel(D *dst, const S *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = lp_to<D>(lp_f(src[i]));
}

template <typename D>
static cudaError_t convert_to(D *dst, const void *src, int src_dt, size_t n, cudaStream_t s) {
    unsigned grid = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (grid == 0)
        return cudaSuccess;
    if (src_dt == FILE_F32)
        convert_kernel<<<grid, 256, 0, s>>>(dst, (const float *)src, n);
    else if (src_dt == FILE_F16)
        convert_kernel<<<grid, 256, 0, s>>>(dst, (const __half *)src, n);
    else if (src_dt == FILE_BF16)
        convert_kernel<<<grid, 256, 0, s>>>(dst, (const bf16 *)src, n);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

cudaError_t lp_cu_convert(void *dst, lp_cu_type dt, const void *src, int src_dt, size_t n, cudaStream_t s) {
    switch (dt) {
    case LP_CT_F32: return convert_to((float *)dst, src, src_dt, n, s);
    case LP_CT_F16: return convert_to((__half *)dst, src, src_dt, n, s);
    default: return convert_to((bf16 *)dst, src, src_dt, n, s);
    }
}

template <typename T>
__global__ void embed_kernel(float *x, const T *embed, const int32_t *ids, int D) {
    const T *row = embed + (size_t)ids[blockIdx.x] * D;
    float *out = x + (size_t)blockIdx.x * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        out[i] = lp_f(row[i]);
}

cudaError_t lp_cu_embed(float *x, const void *embed, lp_cu_type et, const int32_t *ids, int T, int D,
                        cudaStream_t s) {
    if (et == LP_CT_F32)
        embed_kernel<<<T, 256, 0, s>>>(x, (const float *)embed, ids, D);
    else if (et == LP_CT_F16)
        embed_kernel<<<T, 256, 0, s>>>(x, (const __half *)embed, ids, D);
    else
        embed_kernel<<<T, 256, 0, s>>>(x, (const bf16 *)embed, ids, D);
    return cudaGetLastError();
}

/* One block per output row; each thread keeps its (at most NORM_VEC)
 * elements of x and of the weight in registers across the reduction. W
 * elements per access: 4 (float4 loads) when D and every fp32 row are 16-byte
 * aligned, else 1, and the block as wide as the row allows (up to 1024
 * threads): at one row per call (batch-1 decode) the kernel is one block,
 * bound by how many loads it keeps in flight, not by bandwidth. */
#define NORM_VEC 16
template <int W>
__device__ __forceinline__ void ld_w(float *d, const float *p) {
    if constexpr (W == 4) {
        float4 f = *(const float4 *)p;
        d[0] = f.x, d[1] = f.y, d[2] = f.z, d[3] = f.w;
    } else {
        d[0] = *p;
    }
}

template <int W>
__device__ __forceinline__ void st_w(float *p, const float *s) {
    if constexpr (W == 4)
        *(float4 *)p = make_float4(s[0], s[1], s[2], s[3]);
    else
        *p = s[0];
}

template <typename T, int W>
__global__ void __launch_bounds__(1024)
    add_rmsnorm_kernel(float *x, const float *add, const float *lora, const float *bias, const float *w, T *out,
                       float *out32, const int32_t *lrow, const int32_t *idx, int D, float eps) {
    constexpr int NA = NORM_VEC / W; /* accesses per thread */
    int t = idx ? idx[blockIdx.x] : blockIdx.x;
    int lr = lrow ? lrow[t] : -1; /* uniform over the block */
    float *xr = x + (size_t)t * D;
    const float *ar = add ? add + (size_t)t * D : NULL;
    const float *lo = lora && lr >= 0 ? lora + (size_t)lr * D : NULL;
    float v[NORM_VEC], wv[NORM_VEC];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NA; k++) {
        int j = (threadIdx.x + k * blockDim.x) * W;
        if (j < D) {
            float av[W], lv[W], bv[W];
            ld_w<W>(v + k * W, xr + j);
            ld_w<W>(wv + k * W, w + j);
            if (ar)
                ld_w<W>(av, ar + j);
            if (lo)
                ld_w<W>(lv, lo + j);
            if (bias)
                ld_w<W>(bv, bias + j);
#pragma unroll
            for (int e = 0; e < W; e++) {
                float a = v[k * W + e];
                if (ar)
                    a += av[e] + (lo ? lv[e] : 0.0f) + (bias ? bv[e] : 0.0f);
                v[k * W + e] = a;
                ss += a * a;
            }
        }
    }
    ss = lp_block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    T *o = out + (size_t)blockIdx.x * D;
    float *o32 = out32 && lr >= 0 ? out32 + (size_t)lr * D : NULL;
#pragma unroll
    for (int k = 0; k < NA; k++) {
        int j = (threadIdx.x + k * blockDim.x) * W;
        if (j < D) {
            if (ar)
                st_w<W>(xr + j, v + k * W);
#pragma unroll
            for (int e = 0; e < W; e++) {
                float y = wv[k * W + e] * (v[k * W + e] * r);
                o[j + e] = lp_to<T>(y);
                if (o32)
                    o32[j + e] = y;
            }
        }
    }
}

template <typename T>
static void add_rmsnorm_launch(bool vec, int n_out, int th, cudaStream_t s, float *x, const float *add,
                               const float *lora, const float *bias, const float *w, T *out, float *out32,
                               const int32_t *lrow, const int32_t *idx, int D, float eps) {
    if (vec)
        add_rmsnorm_kernel<T, 4><<<n_out, th, 0, s>>>(x, add, lora, bias, w, out, out32, lrow, idx, D, eps);
    else
        add_rmsnorm_kernel<T, 1><<<n_out, th, 0, s>>>(x, add, lora, bias, w, out, out32, lrow, idx, D, eps);
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

cudaError_t lp_cu_add_rmsnorm(float *x, const float *add, const float *lora, const float *bias, const float *w,
                              void *out, lp_cu_type ot, float *out32, const int32_t *lrow, const int32_t *idx,
                              int n_out, int D, float eps, cudaStream_t s) {
    if (n_out <= 0)
        return cudaSuccess;
    if ((lora || out32) && !lrow)
        return cudaErrorInvalidValue;
    /* the fp32 rows are read with float4 loads when they are all aligned */
    bool vec = D % 4 == 0 && al16(x) && al16(add) && al16(lora) && al16(bias) && al16(w);
    int W = vec ? 4 : 1, th = 128;
    while (th * W < D && th < 1024)
        th *= 2;
    if (th * NORM_VEC < D)
        return cudaErrorInvalidValue; /* hidden > 16384: not a model we load */
    if (ot == LP_CT_F32)
        add_rmsnorm_launch(vec, n_out, th, s, x, add, lora, bias, w, (float *)out, out32, lrow, idx, D, eps);
    else if (ot == LP_CT_F16)
        add_rmsnorm_launch(vec, n_out, th, s, x, add, lora, bias, w, (__half *)out, out32, lrow, idx, D, eps);
    else
        add_rmsnorm_launch(vec, n_out, th, s, x, add, lora, bias, w, (bf16 *)out, out32, lrow, idx, D, eps);
    return cudaGetLastError();
}

/* Element offset of (layer, which = 0 K / 1 V, kv head g, position p) in the
 * paged cache: [block][layer][k|v][kv_head][slot][head_dim]. */
__device__ __forceinline__ size_t kv_off(const int32_t *bt, int p, int layer, int which, int g, int KVH, int bs,
                                         int hd, size_t block_elems) {
    return (size_t)bt[p / bs] * block_elems + ((((size_t)layer * 2 + which) * KVH + g) * bs + p % bs) * hd;
}

/* A K or V element as the cache stores it: fp16 saturates at +-65504, so a
 * value past fp16's range is clipped rather than made infinite (NaN stays). */
template <typename KT> __device__ __forceinline__ KT lp_to_kv(float v) { return lp_to<KT>(v); }
template <> __device__ __forceinline__ __half lp_to_kv<__half>(float v) {
    return __float2half_rn(v > 65504.0f ? 65504.0f : v < -65504.0f ? -65504.0f : v);
}

/* grid (T, H + 2 KVH), block >= hd/2 threads (a multiple of 32): thread i
 * holds the rotary pair (i, i + hd/2) of one head. */
template <typename KT>
__global__ void qkv_rope_kernel(const float *qkv, float *qout, KT *kv, lp_cu_rope r, lp_cu_toks tk) {
    int t = blockIdx.x, y = blockIdx.y, i = threadIdx.x, hd = r.hd, half = hd / 2;
    int qdim = r.H * hd, kvdim = r.KVH * hd, ld = qdim + 2 * kvdim;
    int kind = y < r.H ? 0 : y < r.H + r.KVH ? 1 : 2; /* q, k, v */
    int head = kind == 0 ? y : kind == 1 ? y - r.H : y - r.H - r.KVH;
    int col = kind == 0 ? head * hd : kind == 1 ? qdim + head * hd : qdim + kvdim + head * hd;
    const float *src = qkv + (size_t)t * ld + col;
    int lr = r.lora ? r.lrow[t] : -1;
    const float *lo = lr >= 0 ? r.lora + (size_t)lr * ld + col : NULL;
    bool on = i < half;
    float a = on ? src[i] + (r.bias ? r.bias[col + i] : 0.0f) + (lo ? lo[i] : 0.0f) : 0.0f;
    float b = on ? src[i + half] + (r.bias ? r.bias[col + i + half] : 0.0f) + (lo ? lo[i + half] : 0.0f) : 0.0f;
    int pos = tk.pos[t];
    if (kind < 2) {
        const float *nw = kind == 0 ? r.q_norm : r.k_norm;
        if (nw) { /* uniform per block */
            float ss = lp_block_sum(a * a + b * b);
            float rr = 1.0f / sqrtf(ss / (float)hd + r.eps);
            if (on) {
                a = nw[i] * (a * rr);
                b = nw[i + half] * (b * rr);
            }
        }
        if (on) {
            float ang = (float)pos * r.inv_freq[i];
            float cs = cosf(ang), sn = sinf(ang);
            float na = a * cs - b * sn, nb = b * cs + a * sn;
            a = na;
            b = nb;
        }
    }
    if (!on)
        return;
    if (kind == 0) {
        float *o = qout + (size_t)t * qdim + head * hd;
        o[i] = a;
        o[i + half] = b;
    } else {
        const int32_t *bt = tk.blocks + tk.blkoff[t];
        KT *o = kv + kv_off(bt, pos, r.layer, kind - 1, head, r.KVH, r.bs, hd, r.block_elems);
        o[i] = lp_to_kv<KT>(a);
        o[i + half] = lp_to_kv<KT>(b);
    }
}

cudaError_t lp_cu_qkv_rope(const float *qkv, float *qout, void *kv, lp_cu_type kt, const lp_cu_rope *r,
                           const lp_cu_toks *tk, int T, cudaStream_t s) {
    if (r->lora && !r->lrow)
        return cudaErrorInvalidValue;
    dim3 grid(T, r->H + 2 * r->KVH);
    int th = ((r->hd / 2 + 31) / 32) * 32;
    if (kt == LP_CT_F32)
        qkv_rope_kernel<<<grid, th, 0, s>>>(qkv, qout, (float *)kv, *r, *tk);
    else if (kt == LP_CT_F16)
        qkv_rope_kernel<<<grid, th, 0, s>>>(qkv, qout, (__half *)kv, *r, *tk);
    else
        return cudaErrorInvalidValue; /* KV is fp32 or fp16 (lp_cu_kv_type) */
    return cudaGetLastError();
}

/* Attention. One block per (token, kv head [, group of up to ATT_MAXG of its
 * query heads], split): its warps take tiles of 32 positions in turn, each
 * keeping an online softmax per query head over the positions it saw; the
 * warps are merged in shared memory at the end. For the values, lane l holds
 * the ND consecutive head-dim elements l*ND .. l*ND+ND-1 (one vector load). */
#define ATT_WARPS 8
#define ATT_MAXG LP_CU_ATT_HEADS

template <typename KT, int ND> struct __align__(sizeof(KT) * ND) kv_vec { KT v[ND]; };

/* out[i] = p[d0 + i] for N elements as fp32 (one vector load when they are
 * whole and aligned), zero past hd. */
template <typename KT, int N>
__device__ __forceinline__ void load_elems(const KT *p, int d0, int hd, float *out) {
    if (d0 + N <= hd && hd % N == 0) {
        kv_vec<KT, N> r = *(const kv_vec<KT, N> *)(p + d0);
#pragma unroll
        for (int i = 0; i < N; i++)
            out[i] = lp_f(r.v[i]);
    } else {
#pragma unroll
        for (int i = 0; i < N; i++)
            out[i] = d0 + i < hd ? lp_f(p[d0 + i]) : 0.0f;
    }
}

/* What a block of either attention kernel works on: token t, KV head g and
 * its query heads h0 .. h0+ng, positions [lo, hi) of split `split` (each
 * token cuts its own range into equal parts, none shorter than the
 * kernel's LP_CU_ATT_SPLIT_MIN(_FEW) - the later ones empty when the range is
 * short: the launch depends on no per-call length, so decode steps replay
 * one CUDA graph), block table bt. */
typedef struct att_block {
    int t, split, g, h0, ng, lo, hi;
    const int32_t *bt;
} att_block;

__device__ __forceinline__ att_block att_block_of(const lp_cu_attn &a, const lp_cu_toks &tk) {
    att_block B;
    B.t = a.tok ? a.tok[blockIdx.x] : (int)blockIdx.x;
    B.split = blockIdx.z;
    int group = a.H / a.KVH, hchunks = (group + ATT_MAXG - 1) / ATT_MAXG;
    int hc = blockIdx.y % hchunks;
    B.g = blockIdx.y / hchunks;
    B.h0 = B.g * group + hc * ATT_MAXG;
    B.ng = min(ATT_MAXG, group - hc * ATT_MAXG);
    int pos = tk.pos[B.t];
    int start = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    /* parts of at least the kernel's least split length: a range that short
     * is one part whatever the call's split count, so its result does not
     * depend on the rest of the batch (and no block gets a sliver) */
    int len = pos + 1 - start, chunk = max((len + a.splits - 1) / a.splits,
                                           a.few ? LP_CU_ATT_SPLIT_MIN_FEW : LP_CU_ATT_SPLIT_MIN);
    B.lo = start + B.split * chunk;
    B.hi = min(pos + 1, B.lo + chunk);
    B.bt = tk.blocks + tk.blkoff[B.t];
    return B;
}

/* The end of both attention kernels: each warp's online softmax of the
 * block's heads (m, l summed over the warp, and the lane's acc slice) goes
 * to shared memory; the warps are merged, and the output (with no split) or
 * the split's partial (O, max, sum) written. */
template <typename OT, int ND>
__device__ __forceinline__ void attention_finish(const float (&m)[ATT_MAXG], const float (&l)[ATT_MAXG],
                                                 const float (&acc)[ATT_MAXG][ND], float (*sm_m)[ATT_MAXG],
                                                 float (*sm_l)[ATT_MAXG], float (*sm_acc)[ATT_MAXG][ND * 32], OT *out,
                                                 const lp_cu_attn &a, int t, int h0, int ng, int split) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, hd = a.hd;
#pragma unroll
    for (int j = 0; j < ATT_MAXG; j++) {
        if (lane == 0) {
            sm_m[warp][j] = m[j];
            sm_l[warp][j] = l[j];
        }
#pragma unroll
        for (int i = 0; i < ND; i++)
            sm_acc[warp][j][lane * ND + i] = acc[j][i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < ng * hd; e += blockDim.x) {
        int j = e / hd, d = e % hd;
        float M = -INFINITY;
        for (int w = 0; w < ATT_WARPS; w++)
            M = fmaxf(M, sm_m[w][j]);
        float L = 0.0f, O = 0.0f;
        if (M != -INFINITY)
            for (int w = 0; w < ATT_WARPS; w++) {
                if (sm_m[w][j] == -INFINITY)
                    continue;
                float f = expf(sm_m[w][j] - M);
                L += sm_l[w][j] * f;
                O += sm_acc[w][j][d] * f;
            }
        int h = h0 + j;
        if (a.splits == 1) {
            size_t o = (size_t)t * a.H * hd + (size_t)h * hd + d;
            out[o] = lp_to<OT>(O / L);
            int lr = a.out32 ? a.lrow[t] : -1;
            if (lr >= 0)
                a.out32[(size_t)lr * a.H * hd + (size_t)h * hd + d] = O / L;
        } else {
            /* partials by the block's place in the per-token list (tokens
             * the tensor-core kernel takes have none) */
            float *pp = a.part + (((size_t)blockIdx.x * a.H + h) * a.splits + split) * (hd + 2);
            pp[d] = O;
            if (d == 0) {
                pp[hd] = M;
                pp[hd + 1] = L;
            }
        }
    }
}

/* Each warp takes tiles of 32 consecutive positions. Scores: lane i owns
 * position tile+i, reads its whole K row (16-byte loads) and dots it with the
 * block's query heads from shared memory - no cross-lane sums per position.
 * Softmax: one warp max per tile and head. Values: the tile's probabilities
 * go through shared memory and every lane accumulates its head-dim elements
 * over the 32 positions (V rows read coalesced, block ids passed by shuffle). */
template <typename KT, typename OT, int ND>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel(const float *q, const KT *kv, OT *out, lp_cu_attn a, lp_cu_toks tk) {
    __shared__ float sm_m[ATT_WARPS][ATT_MAXG], sm_l[ATT_WARPS][ATT_MAXG];
    __shared__ float sm_acc[ATT_WARPS][ATT_MAXG][ND * 32];
    __shared__ float sq[ATT_MAXG][ND * 32];
    __shared__ float sp[ATT_WARPS][ATT_MAXG][32];
    att_block B = att_block_of(a, tk);
    int t = B.t, split = B.split, g = B.g, h0 = B.h0, ng = B.ng, lo = B.lo, hi = B.hi, hd = a.hd;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, qdim = a.H * hd;
    const int32_t *bt = B.bt;
    for (int e = threadIdx.x; e < ATT_MAXG * ND * 32; e += blockDim.x) {
        int j = e / (ND * 32), d = e % (ND * 32);
        sq[j][d] = j < ng && d < hd ? q[(size_t)t * qdim + (size_t)(h0 + j) * hd + d] : 0.0f;
    }
    __syncthreads();

    float acc[ATT_MAXG][ND], m[ATT_MAXG], l[ATT_MAXG];
#pragma unroll
    for (int j = 0; j < ATT_MAXG; j++) {
        m[j] = -INFINITY;
        l[j] = 0.0f; /* this lane's share of the sum */
#pragma unroll
        for (int i = 0; i < ND; i++)
            acc[j][i] = 0.0f;
    }
    size_t kbase = ((size_t)a.layer * 2 * a.KVH + g) * a.bs, vbase = kbase + (size_t)a.KVH * a.bs;
    for (int p0 = lo + warp * 32; p0 < hi; p0 += ATT_WARPS * 32) {
        int p = p0 + lane;
        bool on = p < hi;
        int blk = on ? bt[p / a.bs] : 0;
        float sc[ATT_MAXG];
#pragma unroll
        for (int j = 0; j < ATT_MAXG; j++)
            sc[j] = 0.0f;
        if (on) {
            const KT *kp = kv + (size_t)blk * a.block_elems + (kbase + (size_t)(p % a.bs)) * hd;
            for (int d0 = 0; d0 < hd; d0 += 8) {
                float kf[8];
                load_elems<KT, 8>(kp, d0, hd, kf);
#pragma unroll
                for (int j = 0; j < ATT_MAXG; j++)
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        sc[j] += sq[j][(d0 + i) & (ND * 32 - 1)] * kf[i];
            }
        }
#pragma unroll
        for (int j = 0; j < ATT_MAXG; j++) {
            if (j < ng) {
                float sv = on ? sc[j] * a.scale : -INFINITY;
                float mt = sv;
#pragma unroll
                for (int o = 16; o; o >>= 1)
                    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
                float mn = fmaxf(m[j], mt); /* lane 0's position is in range: finite */
                float corr = expf(m[j] - mn), pe = on ? expf(sv - mn) : 0.0f;
                l[j] = l[j] * corr + pe;
#pragma unroll
                for (int i = 0; i < ND; i++)
                    acc[j][i] *= corr;
                m[j] = mn;
                sp[warp][j][lane] = pe;
            }
        }
        __syncwarp();
        int n = min(32, hi - p0);
        for (int i0 = 0; i0 < n; i0 += 4) {
            float vr[4][ND];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int i = i0 + u;
                int bi = __shfl_sync(0xffffffffu, blk, i & 31);
                if (i < n) {
                    int pi = p0 + i;
                    load_elems<KT, ND>(kv + (size_t)bi * a.block_elems + (vbase + (size_t)(pi % a.bs)) * hd,
                                       lane * ND, hd, vr[u]);
                } else {
#pragma unroll
                    for (int d = 0; d < ND; d++)
                        vr[u][d] = 0.0f;
                }
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                if (i0 + u < n) {
#pragma unroll
                    for (int j = 0; j < ATT_MAXG; j++) {
                        float pj = j < ng ? sp[warp][j][i0 + u] : 0.0f;
#pragma unroll
                        for (int d = 0; d < ND; d++)
                            acc[j][d] += pj * vr[u][d];
                    }
                }
            }
        }
        __syncwarp(); /* sp is rewritten by the next tile */
    }
#pragma unroll
    for (int j = 0; j < ATT_MAXG; j++)
        l[j] = lp_warp_sum(l[j]);
    attention_finish<OT, ND>(m, l, acc, sm_m, sm_l, sm_acc, out, a, t, h0, ng, split);
}

/* The kernel for a few tokens: one block per (token, kv head [, head group],
 * split); each warp takes U consecutive positions at a time and issues their
 * K and V loads (lane l: head-dim elements l*ND ..) before using any, the
 * block-table entries one round ahead; a position's score is a warp sum. */
template <typename KT, typename OT, int ND>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_few_kernel(const float *q, const KT *kv, OT *out, lp_cu_attn a, lp_cu_toks tk) {
    __shared__ float sm_m[ATT_WARPS][ATT_MAXG], sm_l[ATT_WARPS][ATT_MAXG];
    __shared__ float sm_acc[ATT_WARPS][ATT_MAXG][ND * 32];
    att_block B = att_block_of(a, tk);
    int t = B.t, split = B.split, g = B.g, h0 = B.h0, ng = B.ng, lo = B.lo, hi = B.hi, hd = a.hd;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, qdim = a.H * hd;
    const int32_t *bt = B.bt;

    float qr[ATT_MAXG][ND], acc[ATT_MAXG][ND], m[ATT_MAXG], l[ATT_MAXG];
#pragma unroll
    for (int j = 0; j < ATT_MAXG; j++) {
        m[j] = -INFINITY;
        l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < ND; i++) {
            int d = lane * ND + i;
            qr[j][i] = j < ng && d < hd ? q[(size_t)t * qdim + (size_t)(h0 + j) * hd + d] : 0.0f;
            acc[j][i] = 0.0f;
        }
    }
    constexpr int U = ND >= 8 ? 2 : 4;
    int bnext[U];
#pragma unroll
    for (int u = 0; u < U; u++)
        bnext[u] = lo + warp * U + u < hi ? bt[(lo + warp * U + u) / a.bs] : 0;
    size_t kbase = ((size_t)a.layer * 2 * a.KVH + g) * a.bs, vbase = kbase + (size_t)a.KVH * a.bs;
    for (int p0 = lo + warp * U; p0 < hi; p0 += ATT_WARPS * U) {
        float kr[U][ND], vr[U][ND];
        int bcur[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            bcur[u] = bnext[u];
            int pn = p0 + ATT_WARPS * U + u;
            bnext[u] = pn < hi ? bt[pn / a.bs] : 0;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int p = p0 + u;
            if (p < hi) {
                size_t blk = (size_t)bcur[u] * a.block_elems, slot = (size_t)(p % a.bs);
                load_elems<KT, ND>(kv + blk + (kbase + slot) * hd, lane * ND, hd, kr[u]);
                load_elems<KT, ND>(kv + blk + (vbase + slot) * hd, lane * ND, hd, vr[u]);
            } else {
#pragma unroll
                for (int i = 0; i < ND; i++)
                    kr[u][i] = vr[u][i] = 0.0f;
            }
        }
#pragma unroll
        for (int j = 0; j < ATT_MAXG; j++) {
            if (j < ng) {
                float sc[U], mn = m[j];
#pragma unroll
                for (int u = 0; u < U; u++) {
                    float sdot = 0.0f;
#pragma unroll
                    for (int i = 0; i < ND; i++)
                        sdot += qr[j][i] * kr[u][i];
                    sc[u] = p0 + u < hi ? lp_warp_sum(sdot) * a.scale : -INFINITY;
                    mn = fmaxf(mn, sc[u]);
                }
                float corr = expf(m[j] - mn); /* m = -inf first: 0 */
                l[j] *= corr;
#pragma unroll
                for (int i = 0; i < ND; i++)
                    acc[j][i] *= corr;
#pragma unroll
                for (int u = 0; u < U; u++) {
                    float pe = expf(sc[u] - mn); /* past hi: exp(-inf) = 0 */
                    l[j] += pe;
#pragma unroll
                    for (int i = 0; i < ND; i++)
                        acc[j][i] += pe * vr[u][i];
                }
                m[j] = mn;
            }
        }
    }
    attention_finish<OT, ND>(m, l, acc, sm_m, sm_l, sm_acc, out, a, t, h0, ng, split);
}

template <typename OT>
__global__ void attention_combine_kernel(OT *out, lp_cu_attn a) {
    int t = a.tok ? a.tok[blockIdx.x] : (int)blockIdx.x, h = blockIdx.y, d = threadIdx.x, hd = a.hd;
    if (d >= hd)
        return;
    const float *pp = a.part + ((size_t)blockIdx.x * a.H + h) * a.splits * (hd + 2);
    /* all loads first (unrolled to the most splits), then the arithmetic */
    float ms[LP_CU_ATT_MAX_SPLITS], ls[LP_CU_ATT_MAX_SPLITS], os[LP_CU_ATT_MAX_SPLITS];
#pragma unroll
    for (int s = 0; s < LP_CU_ATT_MAX_SPLITS; s++) {
        bool on = s < a.splits;
        ms[s] = on ? pp[s * (hd + 2) + hd] : -INFINITY;
        ls[s] = on ? pp[s * (hd + 2) + hd + 1] : 0.0f;
        os[s] = on ? pp[s * (hd + 2) + d] : 0.0f;
    }
    float M = -INFINITY;
#pragma unroll
    for (int s = 0; s < LP_CU_ATT_MAX_SPLITS; s++)
        M = fmaxf(M, ms[s]);
    float L = 0.0f, O = 0.0f;
#pragma unroll
    for (int s = 0; s < LP_CU_ATT_MAX_SPLITS; s++) {
        if (ms[s] == -INFINITY)
            continue;
        float f = expf(ms[s] - M);
        L += ls[s] * f;
        O += os[s] * f;
    }
    size_t o = (size_t)t * a.H * hd + (size_t)h * hd + d;
    out[o] = lp_to<OT>(O / L);
    int lr = a.out32 ? a.lrow[t] : -1;
    if (lr >= 0)
        a.out32[(size_t)lr * a.H * hd + (size_t)h * hd + d] = O / L;
}

/* ---- prefill on tensor cores (LP_CU_ATT_TC_ROWS query tiles) ----
 * One block per (query tile of a row, KV head [, group of up to ATT_MAXG of
 * its query heads]); warp w holds query head h0 + w. Per 16-position tile of
 * the cache: the block stages K and V (fp16) in shared memory; each warp
 * computes S = Q K^T with WMMA, updates its rows' online softmax (two lanes
 * per row), writes P in fp16, rescales its fp32 output rows in shared memory
 * and adds P V with WMMA. Causal and sliding-window masks per query row. */
#define TC_ROWS LP_CU_ATT_TC_ROWS
#define TC_KV 16 /* positions per cache tile */
/* Row pitch of the Q, K, V and O tiles: 8 elements past HD shifts each row
 * by 16 (halves) or 32 (floats) bytes of banks, so the rows of one WMMA
 * fragment do not all start in the same bank. Still a multiple of 8
 * elements (WMMA's ldm) and every fragment stays 32-byte aligned. */
#define TC_PITCH(HD) ((HD) + 8)

template <int HD> struct tc_smem {
    __half q[ATT_MAXG][TC_ROWS][TC_PITCH(HD)];
    __half k[TC_KV][TC_PITCH(HD)];
    __half v[TC_KV][TC_PITCH(HD)];
    float s[ATT_MAXG][TC_ROWS][TC_KV];
    __half p[ATT_MAXG][TC_ROWS][TC_KV];
    float o[ATT_MAXG][TC_ROWS][TC_PITCH(HD)];
    float m[ATT_MAXG][TC_ROWS], l[ATT_MAXG][TC_ROWS];
};

/* fp32 to fp16 without overflow to infinity (as the KV cache stores). */
__device__ __forceinline__ __half tc_half(float v) { return lp_to_kv<__half>(v); }

template <typename OT, int HD>
__global__ void __launch_bounds__(ATT_MAXG * 32)
    attention_tc_kernel(const float *q, const __half *kv, OT *out, lp_cu_attn a, lp_cu_toks tk) {
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char tc_raw[];
    tc_smem<HD> &sm = *reinterpret_cast<tc_smem<HD> *>(tc_raw);
    int t0 = a.qt[2 * blockIdx.x], nq = a.qt[2 * blockIdx.x + 1];
    int group = a.H / a.KVH, hchunks = (group + ATT_MAXG - 1) / ATT_MAXG;
    int g = blockIdx.y / hchunks, hc = blockIdx.y % hchunks;
    int h0 = g * group + hc * ATT_MAXG, ng = min(ATT_MAXG, group - hc * ATT_MAXG);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, qdim = a.H * HD;
    int pos0 = tk.pos[t0]; /* the tile's tokens are consecutive positions of one row */
    const int32_t *bt = tk.blocks + tk.blkoff[t0];
    int hi = pos0 + nq; /* positions [lo, hi) cover every query's range */
    int lo = a.window > 0 && pos0 - a.window + 1 > 0 ? pos0 - a.window + 1 : 0;

    for (int e = threadIdx.x; e < ATT_MAXG * TC_ROWS * HD; e += blockDim.x) {
        int w = e / (TC_ROWS * HD), r = (e / HD) % TC_ROWS, d = e % HD;
        float v = w < ng && r < nq ? q[(size_t)(t0 + r) * qdim + (size_t)(h0 + w) * HD + d] : 0.0f;
        sm.q[w][r][d] = tc_half(v);
        sm.o[w][r][d] = 0.0f;
    }
    for (int e = threadIdx.x; e < ATT_MAXG * TC_ROWS; e += blockDim.x) {
        sm.m[e / TC_ROWS][e % TC_ROWS] = -INFINITY;
        sm.l[e / TC_ROWS][e % TC_ROWS] = 0.0f;
    }
    size_t kbase = ((size_t)a.layer * 2 * a.KVH + g) * a.bs, vbase = kbase + (size_t)a.KVH * a.bs;
    /* two lanes per query row: lane 2r + c takes columns c*8 .. c*8+7 and
     * half the row's output elements */
    int r = lane >> 1, c = lane & 1;
    int qpos = pos0 + r;
    int qlo = a.window > 0 && qpos - a.window + 1 > 0 ? qpos - a.window + 1 : 0;
    for (int p0 = lo; p0 < hi; p0 += TC_KV) {
        __syncthreads(); /* the previous tile's K and V are used up */
        /* stage the tile's K and V rows, 8 elements (16 bytes) per load */
        for (int e = threadIdx.x; e < 2 * TC_KV * (HD / 8); e += blockDim.x) {
            int which = e / (TC_KV * (HD / 8)), j = (e / (HD / 8)) % TC_KV, d8 = (e % (HD / 8)) * 8;
            int p = p0 + j;
            uint4 val = make_uint4(0, 0, 0, 0);
            if (p < hi) {
                size_t off = (size_t)bt[p / a.bs] * a.block_elems + ((which ? vbase : kbase) + (size_t)(p % a.bs)) * HD;
                val = *(const uint4 *)(kv + off + d8);
            }
            *(uint4 *)(which ? &sm.v[j][d8] : &sm.k[j][d8]) = val;
        }
        __syncthreads();
        if (warp >= ng)
            continue;
        /* S = Q K^T */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
        wmma::fill_fragment(sf, 0.0f);
#pragma unroll
        for (int kd = 0; kd < HD; kd += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kb;
            wmma::load_matrix_sync(qa, &sm.q[warp][0][kd], TC_PITCH(HD));
            wmma::load_matrix_sync(kb, &sm.k[0][kd], TC_PITCH(HD)); /* B(d, j) = K[j][d] */
            wmma::mma_sync(sf, qa, kb, sf);
        }
        wmma::store_matrix_sync(&sm.s[warp][0][0], sf, TC_KV, wmma::mem_row_major);
        __syncwarp();
        /* online softmax of row r over this tile's columns c*8 .. c*8+7 */
        float sv[8], mt = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int col = c * 8 + j, p = p0 + col;
            bool on = r < nq && p < hi && p <= qpos && p >= qlo;
            sv[j] = on ? sm.s[warp][r][col] * a.scale : -INFINITY;
            mt = fmaxf(mt, sv[j]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        float mo = sm.m[warp][r], mn = fmaxf(mo, mt);
        float corr = mn == -INFINITY ? 1.0f : expf(mo - mn); /* mo = -inf: 0 */
        float ls = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float pe = mn == -INFINITY ? 0.0f : expf(sv[j] - mn);
            ls += pe;
            sm.p[warp][r][c * 8 + j] = __float2half_rn(pe);
        }
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        /* rescale the warp's output rows: consecutive lanes take consecutive
         * elements (no bank conflicts); row rr's factor is on lane 2 rr */
        for (int e = lane; e < TC_ROWS * HD; e += 32)
            sm.o[warp][e / HD][e % HD] *= __shfl_sync(0xffffffffu, corr, 2 * (e / HD));
        __syncwarp(); /* both lanes of the row read m and l before one writes them */
        if (c == 0) {
            sm.m[warp][r] = mn;
            sm.l[warp][r] = sm.l[warp][r] * corr + ls;
        }
        __syncwarp();
        /* O += P V */
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
        wmma::load_matrix_sync(pa, &sm.p[warp][0][0], TC_KV);
#pragma unroll
        for (int dn = 0; dn < HD; dn += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vb;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
            wmma::load_matrix_sync(vb, &sm.v[0][dn], TC_PITCH(HD)); /* B(j, d) = V[j][d] */
            wmma::load_matrix_sync(of, &sm.o[warp][0][dn], TC_PITCH(HD), wmma::mem_row_major);
            wmma::mma_sync(of, pa, vb, of);
            wmma::store_matrix_sync(&sm.o[warp][0][dn], of, TC_PITCH(HD), wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (warp >= ng)
        return;
    for (int e = lane; e < nq * HD; e += 32) { /* coalesced along each row */
        int rr = e / HD, d = e % HD;
        float v = sm.o[warp][rr][d] / sm.l[warp][rr];
        size_t o = (size_t)(t0 + rr) * qdim + (size_t)(h0 + warp) * HD + d;
        out[o] = lp_to<OT>(v);
        int lr = a.out32 ? a.lrow[t0 + rr] : -1;
        if (lr >= 0)
            a.out32[(size_t)lr * qdim + (size_t)(h0 + warp) * HD + d] = v;
    }
}

size_t lp_cu_att_tc_smem(int hd) {
    switch (hd) { /* the sizes the kernel is compiled for (lp_cu_att_tc_ok) */
    case 16: return sizeof(tc_smem<16>);
    case 32: return sizeof(tc_smem<32>);
    case 64: return sizeof(tc_smem<64>);
    case 80: return sizeof(tc_smem<80>);
    case 96: return sizeof(tc_smem<96>);
    case 128: return sizeof(tc_smem<128>);
    case 256: return sizeof(tc_smem<256>);
    default: return SIZE_MAX;
    }
}

template <typename OT, int HD>
static cudaError_t attention_tc_launch(const float *q, const void *kv, void *out, const lp_cu_attn *a,
                                       const lp_cu_toks *tk, cudaStream_t s) {
    /* the shared memory past 48 KB is opted into on every launch: the
     * setting is per device, and prefill calls (never captured) dwarf it */
    size_t bytes = sizeof(tc_smem<HD>);
    cudaError_t e = cudaFuncSetAttribute(attention_tc_kernel<OT, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)bytes);
    if (e != cudaSuccess)
        return e;
    int group = a->H / a->KVH, hchunks = (group + ATT_MAXG - 1) / ATT_MAXG;
    attention_tc_kernel<OT, HD><<<dim3(a->n_qt, a->KVH * hchunks), ATT_MAXG * 32, bytes, s>>>(
        q, (const __half *)kv, (OT *)out, *a, *tk);
    return cudaGetLastError();
}

template <typename OT>
static cudaError_t attention_tc(const float *q, const void *kv, void *out, const lp_cu_attn *a, const lp_cu_toks *tk,
                                cudaStream_t s) {
    switch (a->hd) { /* lp_cu_att_tc_smem's sizes */
    case 16: return attention_tc_launch<OT, 16>(q, kv, out, a, tk, s);
    case 32: return attention_tc_launch<OT, 32>(q, kv, out, a, tk, s);
    case 64: return attention_tc_launch<OT, 64>(q, kv, out, a, tk, s);
    case 80: return attention_tc_launch<OT, 80>(q, kv, out, a, tk, s);
    case 96: return attention_tc_launch<OT, 96>(q, kv, out, a, tk, s);
    case 128: return attention_tc_launch<OT, 128>(q, kv, out, a, tk, s);
    case 256: return attention_tc_launch<OT, 256>(q, kv, out, a, tk, s);
    default: return cudaErrorInvalidValue;
    }
}

template <typename KT, typename OT, int ND>
static cudaError_t attention_launch(const float *q, const void *kv, void *out, const lp_cu_attn *a,
                                    const lp_cu_toks *tk, int T, cudaStream_t s) {
    int group = a->H / a->KVH, hchunks = (group + ATT_MAXG - 1) / ATT_MAXG;
    if (a->tok)
        T = a->n_tok; /* the tokens the tensor-core kernel does not take */
    if (T == 0)
        return cudaSuccess;
    dim3 grid(T, a->KVH * hchunks, a->splits);
    if (a->few)
        attention_few_kernel<KT, OT, ND><<<grid, ATT_WARPS * 32, 0, s>>>(q, (const KT *)kv, (OT *)out, *a, *tk);
    else
        attention_kernel<KT, OT, ND><<<grid, ATT_WARPS * 32, 0, s>>>(q, (const KT *)kv, (OT *)out, *a, *tk);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || a->splits == 1)
        return e;
    attention_combine_kernel<OT><<<dim3(T, a->H), ((a->hd + 31) / 32) * 32, 0, s>>>((OT *)out, *a);
    return cudaGetLastError();
}

template <typename KT, typename OT>
static cudaError_t attention_nd(const float *q, const void *kv, void *out, const lp_cu_attn *a,
                                const lp_cu_toks *tk, int T, cudaStream_t s) {
    if (a->hd <= 32)
        return attention_launch<KT, OT, 1>(q, kv, out, a, tk, T, s);
    if (a->hd <= 64)
        return attention_launch<KT, OT, 2>(q, kv, out, a, tk, T, s);
    if (a->hd <= 128)
        return attention_launch<KT, OT, 4>(q, kv, out, a, tk, T, s);
    if (a->hd <= 256)
        return attention_launch<KT, OT, 8>(q, kv, out, a, tk, T, s);
    return cudaErrorInvalidValue;
}

cudaError_t lp_cu_attention(const float *q, const void *kv, lp_cu_type kt, void *out, lp_cu_type ot,
                            const lp_cu_attn *a, const lp_cu_toks *tk, int T, cudaStream_t s) {
    if (a->out32 && !a->lrow)
        return cudaErrorInvalidValue;
    if (a->n_qt > 0) {
        if (!lp_cu_att_tc_ok(a->hd, kt) || (ot != LP_CT_F16 && ot != LP_CT_BF16))
            return cudaErrorInvalidValue;
        cudaError_t e = ot == LP_CT_F16 ? attention_tc<__half>(q, kv, out, a, tk, s)
                                        : attention_tc<bf16>(q, kv, out, a, tk, s);
        if (e != cudaSuccess)
            return e;
    }
    /* the pairs lp_cu_kv_type gives: fp32 with fp32, fp16 KV with fp16 or bf16 */
    if (kt == LP_CT_F32 && ot == LP_CT_F32)
        return attention_nd<float, float>(q, kv, out, a, tk, T, s);
    if (kt == LP_CT_F16 && ot == LP_CT_F16)
        return attention_nd<__half, __half>(q, kv, out, a, tk, T, s);
    if (kt == LP_CT_F16 && ot == LP_CT_BF16)
        return attention_nd<__half, bf16>(q, kv, out, a, tk, T, s);
    return cudaErrorInvalidValue;
}

template <typename T>
__global__ void silu_mul_kernel(const float *gu, const float *lora, const float *bias, T *out, float *out32,
                                const int32_t *lrow, int Tn, int F) {
    size_t n = (size_t)Tn * F;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        size_t t = e / F;
        int i = (int)(e % F);
        int lr = lrow ? lrow[t] : -1;
        const float *lo = lora && lr >= 0 ? lora + (size_t)lr * 2 * F : NULL;
        float g = gu[t * 2 * F + i] + (bias ? bias[i] : 0.0f) + (lo ? lo[i] : 0.0f);
        float u = gu[t * 2 * F + F + i] + (bias ? bias[F + i] : 0.0f) + (lo ? lo[F + i] : 0.0f);
        float y = g / (1.0f + expf(-g)) * u;
        out[e] = lp_to<T>(y);
        if (out32 && lr >= 0)
            out32[(size_t)lr * F + i] = y;
    }
}

cudaError_t lp_cu_silu_mul(const float *gu, const float *lora, const float *bias, void *out, lp_cu_type ot,
                           float *out32, const int32_t *lrow, int T, int F, cudaStream_t s) {
    if ((lora || out32) && !lrow)
        return cudaErrorInvalidValue;
    size_t n = (size_t)T * F;
    unsigned grid = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (ot == LP_CT_F32)
        silu_mul_kernel<<<grid, 256, 0, s>>>(gu, lora, bias, (float *)out, out32, lrow, T, F);
    else if (ot == LP_CT_F16)
        silu_mul_kernel<<<grid, 256, 0, s>>>(gu, lora, bias, (__half *)out, out32, lrow, T, F);
    else
        silu_mul_kernel<<<grid, 256, 0, s>>>(gu, lora, bias, (bf16 *)out, out32, lrow, T, F);
    return cudaGetLastError();
}
