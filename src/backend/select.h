/* select.h - the pieces of the sampling op (lp_backend_sample) that the host
 * implementation (src/backend/sample.c) and the CUDA kernels
 * (src/backend/cuda/sample.cu) share, written once for both compilers.
 *
 * A logit v of token id becomes one 64-bit key whose ascending order is
 * "logit descending, then id ascending" - the order every candidate list
 * uses - so a plain ascending sort of unique keys gives it, with no
 * tie-breaking or stability to get right:
 *
 *   key = (~order(bits(v)) << 32) | id,   order() = the IEEE bits made monotone
 *
 * The GPU selects over tiles of LP_SEL_TILE logits: each tile is sorted
 * with a bitonic network (lp_sel_bitonic_stage), its best K keys and its
 * partial softmax sum (relative to the tile's max) kept; one block per row
 * then merges the tiles' keys the same way and lp_sel_total combines the
 * partial sums. tests/unit/backend/test_sample.c runs this same network and
 * merge sequentially against the host's heap selection. */
#ifndef LP_BACKEND_SELECT_H
#define LP_BACKEND_SELECT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"

#ifdef __CUDACC__
#define LP_HD static inline __host__ __device__
#else
#define LP_HD static inline
#endif

#define LP_SEL_TILE 4096      /* logits per tile; a power of two */
#define LP_SEL_PAD UINT64_MAX /* key of an empty slot: sorts after every logit */

LP_HD uint32_t lp_sel_bits(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
#endif
}

LP_HD float lp_sel_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
#endif
}

LP_HD uint64_t lp_sel_key(float v, uint32_t id) {
    uint32_t u = lp_sel_bits(v);
    uint32_t o = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending with v */
    return ((uint64_t)(~o) << 32) | id;
}

LP_HD float lp_sel_value(uint64_t key) {
    uint32_t o = ~(uint32_t)(key >> 32);
    return lp_sel_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

LP_HD int32_t lp_sel_id(uint64_t key) { return (int32_t)(uint32_t)key; }

/* The adjustment of lp_logit_adjust, with the same fp32 rounding on both
 * sides: the device intrinsics keep nvcc from fusing l * rep - sub into one
 * FMA; the host code is compiled as ISO C11 (no contraction). */
LP_HD float lp_sel_adjust(float l, const lp_logit_adjust *a) {
#ifdef __CUDA_ARCH__
    if (a->rep != 1.0f)
        l = l > 0.0f ? __fdiv_rn(l, a->rep) : __fmul_rn(l, a->rep);
    l = __fsub_rn(l, a->sub);
    return __fadd_rn(l, a->bias);
#else
    if (a->rep != 1.0f)
        l = l > 0.0f ? l / a->rep : l * a->rep;
    l = l - a->sub;
    return l + a->bias;
#endif
}

/* One stage (k, j) of the ascending bitonic sort of s[0..n) (n a power of
 * two): the compare-exchanges t, t + dt, ... of the n/2 in the stage. The
 * pairs of a stage are disjoint, so threads t = 0..dt-1 may run it at once;
 * stages are separated by a barrier. Stages: k = 2, 4, .., n; j = k/2 .. 1. */
LP_HD void lp_sel_bitonic_stage(uint64_t *s, int n, int k, int j, int t, int dt) {
    for (int i = t; i < n / 2; i += dt) {
        int lo = ((i & ~(j - 1)) << 1) | (i & (j - 1)), hi = lo + j;
        uint64_t a = s[lo], b = s[hi];
        int up = (lo & k) == 0;
        if ((a > b) == up) {
            s[lo] = b;
            s[hi] = a;
        }
    }
}

#ifdef __CUDA_ARCH__
#define LP_SEL_SYNC() __syncthreads()
#else
#define LP_SEL_SYNC() ((void)0)
#endif

/* Ascending sort of s[0..LP_SEL_TILE) by threads t of dt. */
LP_HD void lp_sel_sort(uint64_t *s, int t, int dt) {
    for (int k = 2; k <= LP_SEL_TILE; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            lp_sel_bitonic_stage(s, LP_SEL_TILE, k, j, t, dt);
            LP_SEL_SYNC();
        }
}

/* The block-level steps below are run by threads t = 0..dt-1 of one block
 * together (barriers between their phases), or by one host thread with
 * t = 0, dt = 1 (the unit test). s: LP_SEL_TILE keys, red: dt doubles
 * (shared memory on the GPU). */

/* Tile [t0, t0 + LP_SEL_TILE) of one row: its keys with the row's
 * adjustments applied, sorted; the best k (< LP_SEL_TILE) to out; the
 * tile's max and sum of expf((v - max) / T) (0 unless T > 0) to *tmax,
 * *tsum (written by thread 0; doubles, so that the total over the tiles
 * agrees with the host's sum in index order to ~1e-7, not to a float's
 * rounding per tile). */
LP_HD void lp_sel_tile(const float *row, int vocab, int t0, const lp_logit_adjust *adj, int n_adj, int k, float T,
                       uint64_t *s, double *red, uint64_t *out, double *tmax, double *tsum, int t, int dt) {
    for (int i = t; i < LP_SEL_TILE; i += dt) {
        int v = t0 + i;
        s[i] = v < vocab ? lp_sel_key(row[v], (uint32_t)v) : LP_SEL_PAD;
    }
    LP_SEL_SYNC();
    for (int e = t; e < n_adj; e += dt) {
        int id = adj[e].id;
        if (id >= t0 && id < t0 + LP_SEL_TILE)
            s[id - t0] = lp_sel_key(lp_sel_adjust(row[id], &adj[e]), (uint32_t)id);
    }
    LP_SEL_SYNC();
    lp_sel_sort(s, t, dt);
    for (int i = t; i < k; i += dt)
        out[i] = s[i];
    float mx = lp_sel_value(s[0]);
    double part = 0.0;
    if (T > 0.0f)
        for (int i = t; i < LP_SEL_TILE; i += dt)
            if (s[i] != LP_SEL_PAD)
                part += expf((lp_sel_value(s[i]) - mx) / T);
    red[t] = part;
    LP_SEL_SYNC();
    if (t == 0) {
        double sum = 0.0;
        for (int i = 0; i < dt; i++)
            sum += red[i];
        *tmax = mx;
        *tsum = sum;
    }
}

/* The best k keys of n_tiles tiles' lists (tile i's at keys + i * stride,
 * k each) into s[0..k), sorted: the tiles' keys go through the tile buffer
 * LP_SEL_TILE - k at a time, the best k staying in front. */
LP_HD void lp_sel_merge(const uint64_t *keys, int n_tiles, int k, int stride, uint64_t *s, int t, int dt) {
    int total = n_tiles * k, c = 0, have = 0;
    do {
        int room = LP_SEL_TILE - have;
        for (int i = t; i < room; i += dt) {
            int cc = c + i;
            s[have + i] = cc < total ? keys[(size_t)(cc / k) * (size_t)stride + (size_t)(cc % k)] : LP_SEL_PAD;
        }
        c += room;
        LP_SEL_SYNC();
        lp_sel_sort(s, t, dt);
        have = k;
    } while (c < total);
}

/* sum_v expf((v - max) / T) from per-tile (tile max, sum relative to it). */
LP_HD double lp_sel_total(const double *tmax, const double *tsum, int n_tiles, float max, float T) {
    double tot = 0.0;
    for (int i = 0; i < n_tiles; i++)
        if (tsum[i] > 0.0)
            tot += tsum[i] * exp((tmax[i] - (double)max) / (double)T);
    return tot;
}

#endif
