/* sample.cu - the sampling op on the GPU (lp_backend_sample): per logit row,
 * the best k candidates by adjusted logit and the softmax normaliser, so
 * that a few KB per row come back to the host instead of the vocabulary.
 *
 *   tile kernel   grid (tiles of LP_SEL_TILE logits, specs): keys of the
 *                 tile with the row's adjustments, bitonic sort in shared
 *                 memory, best k and (tile max, partial softmax sum) out
 *   merge kernel  grid (specs): the tiles' best k merged by the same sort,
 *                 the candidates with their raw logits, max and total
 *
 * Both kernels are thin: the block-level steps are lp_sel_tile and
 * lp_sel_merge of src/backend/select.h, which the host unit test
 * (tests/unit/backend/test_sample.c) runs sequentially against the host
 * implementation. Rows asking for logprobs get a second pass over the raw
 * logits (k = their top count, T = 1, no adjustments), which also gives the
 * log-sum-exp. */
#include "backend/cuda/cuda-device.cuh"

extern "C" {
#include "backend/select.h"
}

#define SAMPLE_THREADS 256

int lp_cu_sample_tiles(int vocab) { return (vocab + LP_SEL_TILE - 1) / LP_SEL_TILE; }

/* The pass's k, temperature and adjustments of a spec; false: the spec
 * takes no part in this pass. */
__device__ __forceinline__ bool pass_params(const lp_cu_sample_spec &sp, int pass, int *k, float *T, int *n_adj) {
    if (pass == 0) {
        *k = sp.k;
        *T = sp.T;
        *n_adj = sp.n_adj;
        return true;
    }
    if (sp.n_logprobs < 0)
        return false;
    *k = sp.n_logprobs > 0 ? sp.n_logprobs : 1;
    *T = 1.0f;
    *n_adj = 0;
    return true;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_tile_kernel(const float *logits, int vocab, const lp_cu_sample_spec *specs, const lp_logit_adjust *adj,
                       int pass, uint64_t *tile_keys, double *tile_stat, int n_tiles) {
    __shared__ uint64_t s[LP_SEL_TILE];
    __shared__ double red[SAMPLE_THREADS];
    lp_cu_sample_spec sp = specs[blockIdx.y];
    int k, n_adj;
    float T;
    if (!pass_params(sp, pass, &k, &T, &n_adj))
        return;
    int tile = blockIdx.x;
    double *st = tile_stat + (size_t)blockIdx.y * 2 * n_tiles;
    lp_sel_tile(logits + (size_t)sp.row * vocab, vocab, tile * LP_SEL_TILE, adj + sp.adj_off, n_adj, k, T, s, red,
                tile_keys + ((size_t)blockIdx.y * n_tiles + tile) * LP_SAMPLE_MAX_CAND, st + tile, st + n_tiles + tile,
                threadIdx.x, blockDim.x);
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_merge_kernel(const float *logits, int vocab, const lp_cu_sample_spec *specs, int pass,
                        const uint64_t *tile_keys, const double *tile_stat, int n_tiles, lp_cu_sample_out *out) {
    __shared__ uint64_t s[LP_SEL_TILE];
    __shared__ double lse;
    lp_cu_sample_spec sp = specs[blockIdx.x];
    int k, n_adj;
    float T;
    if (!pass_params(sp, pass, &k, &T, &n_adj))
        return;
    int t = threadIdx.x, dt = blockDim.x;
    lp_sel_merge(tile_keys + (size_t)blockIdx.x * n_tiles * LP_SAMPLE_MAX_CAND, n_tiles, k, LP_SAMPLE_MAX_CAND, s, t,
                 dt);
    const float *row = logits + (size_t)sp.row * vocab;
    const double *st = tile_stat + (size_t)blockIdx.x * 2 * n_tiles;
    lp_cu_sample_out *o = &out[blockIdx.x];
    int n = k < vocab ? k : vocab;
    if (t == 0) {
        float mx = lp_sel_value(s[0]);
        if (pass == 0) {
            o->max = mx;
            o->probe_raw = row[sp.probe];
            o->n_cand = n;
            o->total = T > 0.0f ? lp_sel_total(st, st + n_tiles, n_tiles, mx, T) : 0.0;
        } else {
            lse = (double)mx + log(lp_sel_total(st, st + n_tiles, n_tiles, mx, 1.0f));
            o->raw_lse = lse;
        }
    }
    __syncthreads();
    for (int i = t; i < n; i += dt) {
        int32_t id = lp_sel_id(s[i]);
        float v = lp_sel_value(s[i]);
        if (pass == 0) {
            o->cand[i].id = id;
            o->cand[i].logit = v;
            o->cand[i].raw = row[id];
        } else if (i < sp.n_logprobs) {
            o->top[i].id = id;
            o->top[i].logprob = (float)((double)v - lse);
        }
    }
}

cudaError_t lp_cu_sample(const float *logits, int vocab, const lp_cu_sample_spec *specs, int n_specs,
                         const lp_logit_adjust *adj, int logprobs, uint64_t *tile_keys, double *tile_stat,
                         lp_cu_sample_out *out, cudaStream_t s) {
    int n_tiles = lp_cu_sample_tiles(vocab);
    for (int pass = 0; pass < (logprobs ? 2 : 1); pass++) {
        sample_tile_kernel<<<dim3(n_tiles, n_specs), SAMPLE_THREADS, 0, s>>>(logits, vocab, specs, adj, pass,
                                                                            tile_keys, tile_stat, n_tiles);
        sample_merge_kernel<<<n_specs, SAMPLE_THREADS, 0, s>>>(logits, vocab, specs, pass, tile_keys, tile_stat,
                                                               n_tiles, out);
    }
    return cudaGetLastError();
}
