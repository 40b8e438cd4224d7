/* lora.cu - multi-LoRA kernels for a mixed batch (the SGMV idea of Punica
 * and S-LoRA): the call's tokens are grouped by adapter slot into tiles of up
 * to LP_CU_LORA_TILE tokens (lp_cu_lora_item); one launch applies every
 * adapter of the batch to up to three fused projections (q/k/v, gate/up)
 * at each adapter's own rank - no padding to the largest rank.
 *
 *   shrink  V[s, p, z, :r] = X[p, cols of split s] . A_z^T (p: a token's place)
 *           grid (tiles, K splits, modules): the tile's X columns are staged
 *           in shared memory, each warp computes ranks r = warp, warp + 8, ...
 *           with 16-byte loads of A; each split writes its own partial sums
 *           and the last split block of a tile to finish adds them up.
 *   expand  Y[t, col_z + o] += alpha_t scaling V[0, p, z] . Bt_z[:, o]
 *           grid (tiles, output tiles of 256, modules); Bt is stored
 *           (rank, out) so a warp reads 256 contiguous bytes per rank step;
 *           DoRA rescales the base output in the same pass; an
 *           overwriting expand writes the delta alone, rows by place.
 * The call's base-model tokens have no place and no tile: they cost these
 * kernels nothing.
 * The adapter of a tile comes from a descriptor table indexed by
 * (slot, layer, module), so the kernels never see host pointers. */
#include "backend/cuda/cuda-device.cuh"

#define SHRINK_WARPS 8
#define SHRINK_KCHUNK 1024
#define EXPAND_THREADS 64
#define EXPAND_VEC 4
#define EXPAND_MAX_RANK 256

__device__ __forceinline__ lp_cu_lora_desc lora_desc(const lp_cu_lora_call &c, int slot, int mod) {
    return c.desc[((size_t)slot * c.n_layers + c.layer) * 7 + mod];
}

template <typename XT>
__global__ void __launch_bounds__(SHRINK_WARPS * 32)
    lora_shrink_kernel(lp_cu_lora_call c, lp_cu_mods mods, const XT *X, int ldx, int K, int kchunk) {
    /* every (split, token, module, rank) of V is written by exactly one warp */
    __shared__ __align__(16) float xs[LP_CU_LORA_TILE][SHRINK_KCHUNK];
    lp_cu_lora_item it = c.items[blockIdx.x];
    int z = blockIdx.z;
    lp_cu_lora_desc d = lora_desc(c, it.slot, mods.mod[z]);
    int k0 = blockIdx.y * kchunk;
    if (d.rank == 0 || k0 >= K)
        return; /* uniform over the block */
    int kn = min(K, k0 + kchunk) - k0;
    for (int e = threadIdx.x; e < it.n * kn; e += blockDim.x) {
        int tt = e / kn, k = e % kn;
        xs[tt][k] = lp_f(X[(size_t)(it.p0 + tt) * ldx + k0 + k]);
    }
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = warp; r < d.rank; r += SHRINK_WARPS) {
        const bf16 *Ar = (const bf16 *)d.A + (size_t)r * K + k0;
        const float *Af = (const float *)d.A + (size_t)r * K + k0;
        float acc[LP_CU_LORA_TILE];
#pragma unroll
        for (int tt = 0; tt < LP_CU_LORA_TILE; tt++)
            acc[tt] = 0.0f;
        if ((K & 7) == 0) { /* rows 16-byte aligned, kn a multiple of 8 */
            for (int k = lane * 8; k < kn; k += 256) {
                float a[8];
                if (d.f32) {
                    float4 a0 = *(const float4 *)(Af + k), a1 = *(const float4 *)(Af + k + 4);
                    a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w;
                    a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
                } else {
                    lp_bf16x8(Ar + k, a);
                }
#pragma unroll
                for (int tt = 0; tt < LP_CU_LORA_TILE; tt++) {
                    if (tt < it.n) {
                        float4 x0 = *(const float4 *)&xs[tt][k], x1 = *(const float4 *)&xs[tt][k + 4];
                        acc[tt] += a[0] * x0.x + a[1] * x0.y + a[2] * x0.z + a[3] * x0.w + a[4] * x1.x +
                                   a[5] * x1.y + a[6] * x1.z + a[7] * x1.w;
                    }
                }
            }
        } else {
            for (int k = lane; k < kn; k += 32) {
                float a = d.f32 ? Af[k] : __bfloat162float(Ar[k]);
#pragma unroll
                for (int tt = 0; tt < LP_CU_LORA_TILE; tt++)
                    if (tt < it.n)
                        acc[tt] += a * xs[tt][k];
            }
        }
#pragma unroll
        for (int tt = 0; tt < LP_CU_LORA_TILE; tt++) {
            if (tt < it.n) {
                float v = lp_warp_sum(acc[tt]);
                if (lane == 0)
                    c.V[(((size_t)blockIdx.y * c.T + it.p0 + tt) * LP_CU_MAX_MODS + z) * c.rmax + r] = v;
            }
        }
    }
    if (gridDim.y == 1)
        return;
    /* the last split block of this (tile, module) sums the partials into split 0 */
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    unsigned *cnt = &c.counters[(size_t)blockIdx.x * LP_CU_MAX_MODS + z];
    if (threadIdx.x == 0)
        last = atomicAdd(cnt, 1u) == gridDim.y - 1;
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    size_t stride = (size_t)c.T * LP_CU_MAX_MODS * c.rmax;
    for (int e = threadIdx.x; e < it.n * d.rank; e += blockDim.x) {
        int tt = e / d.rank, r = e % d.rank;
        float *v = c.V + ((size_t)(it.p0 + tt) * LP_CU_MAX_MODS + z) * c.rmax + r;
        float sum = 0.0f;
        for (int sp = 0; sp < (int)gridDim.y; sp++)
            sum += __ldcg(v + sp * stride); /* L2: other blocks wrote them */
        *v = sum;
    }
    if (threadIdx.x == 0)
        *cnt = 0; /* ready for the next launch */
}

__global__ void __launch_bounds__(EXPAND_THREADS)
    lora_expand_kernel(lp_cu_lora_call c, lp_cu_mods mods, float *Y, int ldy) {
    __shared__ float vs[LP_CU_LORA_TILE][EXPAND_MAX_RANK];
    lp_cu_lora_item it = c.items[blockIdx.x];
    int z = blockIdx.z, N = mods.out[z], col = mods.col[z];
    if (blockIdx.y * EXPAND_THREADS * EXPAND_VEC >= N)
        return; /* uniform over the block */
    lp_cu_lora_desc d = lora_desc(c, it.slot, mods.mod[z]);
    if (d.rank == 0) { /* nothing to add: an overwriting expand writes zeros */
        int o0 = (blockIdx.y * EXPAND_THREADS + threadIdx.x) * EXPAND_VEC;
        if (c.overwrite)
            for (int tt = 0; tt < it.n; tt++)
                for (int j = 0; j < EXPAND_VEC && o0 + j < N; j++)
                    Y[(size_t)(it.p0 + tt) * ldy + col + o0 + j] = 0.0f;
        return;
    }
    int R = d.rank;
    for (int e = threadIdx.x; e < it.n * R; e += blockDim.x) {
        int tt = e / R, k = e % R;
        vs[tt][k] = c.V[((size_t)(it.p0 + tt) * LP_CU_MAX_MODS + z) * c.rmax + k];
    }
    __syncthreads();
    int o0 = (blockIdx.y * EXPAND_THREADS + threadIdx.x) * EXPAND_VEC;
    if (o0 >= N)
        return;
    float acc[LP_CU_LORA_TILE][EXPAND_VEC];
#pragma unroll
    for (int tt = 0; tt < LP_CU_LORA_TILE; tt++)
#pragma unroll
        for (int j = 0; j < EXPAND_VEC; j++)
            acc[tt][j] = 0.0f;
    bool vec = (N % EXPAND_VEC) == 0;
#pragma unroll 4
    for (int k = 0; k < R; k++) {
        const bf16 *brow = (const bf16 *)d.Bt + (size_t)k * N + o0;
        const float *frow = (const float *)d.Bt + (size_t)k * N + o0;
        float b[EXPAND_VEC];
        if (d.f32) {
#pragma unroll
            for (int j = 0; j < EXPAND_VEC; j++)
                b[j] = o0 + j < N ? frow[j] : 0.0f;
        } else if (vec) {
            uint2 raw = *(const uint2 *)brow;
            __nv_bfloat162 h[2];
            memcpy(h, &raw, sizeof h); /* not a cast pointer: see lp_bf16x8 */
            float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
            b[0] = f0.x;
            b[1] = f0.y;
            b[2] = f1.x;
            b[3] = f1.y;
        } else {
#pragma unroll
            for (int j = 0; j < EXPAND_VEC; j++)
                b[j] = o0 + j < N ? __bfloat162float(brow[j]) : 0.0f;
        }
#pragma unroll
        for (int tt = 0; tt < LP_CU_LORA_TILE; tt++)
            if (tt < it.n)
#pragma unroll
                for (int j = 0; j < EXPAND_VEC; j++)
                    acc[tt][j] += vs[tt][k] * b[j];
    }
#pragma unroll
    for (int tt = 0; tt < LP_CU_LORA_TILE; tt++) {
        if (tt >= it.n)
            break;
        int t = c.perm[it.p0 + tt];
        float alpha = c.alpha[t];
        float *y = Y + (size_t)(c.overwrite ? it.p0 + tt : t) * ldy + col;
#pragma unroll
        for (int j = 0; j < EXPAND_VEC; j++) {
            int o = o0 + j;
            if (o >= N)
                break;
            float u = d.scaling * acc[tt][j];
            if (c.overwrite) {
                y[o] = alpha * u; /* (no DoRA here: it needs the base output) */
            } else if (!d.dora) {
                y[o] += alpha * u;
            } else {
                float gm = d.dora[o], base = y[o];
                y[o] = base + alpha * ((gm - 1.0f) * base + gm * u);
            }
        }
    }
}

/* Columns per split for a wanted number of splits: a multiple of 256, at most 1024. */
static int kchunk_for(int K, int want) {
    int per = (K + want - 1) / want;
    per = (per + 255) / 256 * 256;
    return per > SHRINK_KCHUNK ? SHRINK_KCHUNK : per;
}

int lp_cu_lora_ksplit(int n_items, int n_mods, int K, int n_sm) {
    int lo = (K + SHRINK_KCHUNK - 1) / SHRINK_KCHUNK, hi = (K + 255) / 256;
    int want = (2 * n_sm + n_items * n_mods - 1) / (n_items * n_mods);
    want = want < lo ? lo : want > hi ? hi : want;
    int kc = kchunk_for(K, want);
    return (K + kc - 1) / kc; /* the splits that chunk size really gives */
}

cudaError_t lp_cu_lora_shrink(const lp_cu_lora_call *c, const lp_cu_mods *mods, const void *X, lp_cu_type xt,
                              int ldx, int K, cudaStream_t s) {
    if (c->n_items == 0)
        return cudaSuccess;
    int kchunk = kchunk_for(K, c->ksplit);
    if ((K + kchunk - 1) / kchunk != c->ksplit)
        return cudaErrorInvalidValue; /* ksplit did not come from lp_cu_lora_ksplit for this K */
    dim3 grid(c->n_items, c->ksplit, mods->n);
    if (xt == LP_CT_F32)
        lora_shrink_kernel<<<grid, SHRINK_WARPS * 32, 0, s>>>(*c, *mods, (const float *)X, ldx, K, kchunk);
    else if (xt == LP_CT_F16)
        lora_shrink_kernel<<<grid, SHRINK_WARPS * 32, 0, s>>>(*c, *mods, (const __half *)X, ldx, K, kchunk);
    else
        lora_shrink_kernel<<<grid, SHRINK_WARPS * 32, 0, s>>>(*c, *mods, (const bf16 *)X, ldx, K, kchunk);
    return cudaGetLastError();
}

cudaError_t lp_cu_lora_expand(const lp_cu_lora_call *c, const lp_cu_mods *mods, float *Y, int ldy,
                              cudaStream_t s) {
    if (c->n_items == 0)
        return cudaSuccess;
    if (c->rmax > EXPAND_MAX_RANK)
        return cudaErrorInvalidValue;
    int widest = 0;
    for (int z = 0; z < mods->n; z++)
        widest = mods->out[z] > widest ? mods->out[z] : widest;
    int per = EXPAND_THREADS * EXPAND_VEC;
    dim3 grid(c->n_items, (widest + per - 1) / per, mods->n);
    lora_expand_kernel<<<grid, EXPAND_THREADS, 0, s>>>(*c, *mods, Y, ldy);
    return cudaGetLastError();
}
