/* kernels_avx2.c - AVX2 + FMA + F16C kernels: register tiles of 2 X rows x
 * 4 W rows of 8-lane fp32 accumulators; K tails of W go through a small
 * zero-padded buffer, so every step has the same shape. The blocking is that
 * of kernels_avx512.c (see the comment on block_impl() there). */
#include <immintrin.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/util.h"

#define TR 2 /* X rows per register tile (16 ymm registers: 8 accumulators) */
#define NR 4 /* W rows per register tile (N tails repeat the last row) */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Lane sums of a0..a3 as (s0, s1, s2, s3), one fixed tree for every output. */
ALWAYS_INLINE __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Lanes i < left of a 32-bit mask vector set (for vmaskmovps). */
ALWAYS_INLINE __m256i tail_mask8(int64_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)LP_MIN(left, 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- BF16 weights: per 16 elements, (v << 16) and (v & 0xffff0000) are the
 * even and odd weights as fp32; X is packed per 16 as 8 even then 8 odd.
 * The step's 16 weights of row n start at element wk of w[n]. */
ALWAYS_INLINE void bf16_step(const int tr, __m256 a[TR][NR], const float *X, int64_t ldx,
                             int64_t k, const void *const w[NR], int64_t wk) {
    const __m256i hi16 = _mm256_set1_epi32((int)0xffff0000u);
    __m256 xe[TR], xo[TR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++) {
        xe[t] = _mm256_load_ps(X + t * ldx + k);
        xo[t] = _mm256_load_ps(X + t * ldx + k + 8);
    }
#pragma GCC unroll 4
    for (int n = 0; n < NR; n++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w[n] + wk));
        __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, hi16));
#pragma GCC unroll 2
        for (int t = 0; t < tr; t++) {
            a[t][n] = _mm256_fmadd_ps(xe[t], we, a[t][n]);
            a[t][n] = _mm256_fmadd_ps(xo[t], wo, a[t][n]);
        }
    }
}

/* F16 (f16 = true) or F32 weights, 8 per step. */
ALWAYS_INLINE void f_step(const int tr, const bool f16, __m256 a[TR][NR], const float *X,
                          int64_t ldx, int64_t k, const void *const w[NR], int64_t wk) {
    __m256 x[TR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++)
        x[t] = _mm256_load_ps(X + t * ldx + k);
#pragma GCC unroll 4
    for (int n = 0; n < NR; n++) {
        __m256 wv =
            f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w[n] + wk)))
                : _mm256_loadu_ps((const float *)w[n] + wk);
#pragma GCC unroll 2
        for (int t = 0; t < tr; t++)
            a[t][n] = _mm256_fmadd_ps(x[t], wv, a[t][n]);
    }
}

/* One register tile: tr X rows x NR W rows over all of K; the accumulators
 * are reduced and written (or added) to the nn first columns of Y. The
 * last, partial step reads W through zero-padded copies, so it has the same
 * shape as the others (X is zero-padded by the packing). Meanwhile the npf
 * rows pf[] (the next W tile) are prefetched into L2. */
ALWAYS_INLINE void tile(const int tr, const lp_dtype wt, const float *X, int64_t ldx,
                        const void *const w[NR], int64_t kc, const char *const pf[NR],
                        int npf, float *Y, int64_t ldy, int nn, bool accumulate) {
    const int64_t step = wt == LP_DTYPE_BF16 ? 16 : 8;
    const size_t esz = wt == LP_DTYPE_F32 ? 4 : 2;
    __m256 a[TR][NR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + step <= kc; k += step) {
        for (int j = 0; j < npf; j++)
            _mm_prefetch(pf[j] + (size_t)k * esz, _MM_HINT_T1);
        if (wt == LP_DTYPE_BF16)
            bf16_step(tr, a, X, ldx, k, w, k);
        else
            f_step(tr, wt == LP_DTYPE_F16, a, X, ldx, k, w, k);
    }
    if (k < kc) {
        _Alignas(32) char buf[NR][32] = {{0}};
        const void *wb[NR];
        for (int n = 0; n < NR; n++) {
            memcpy(buf[n], (const char *)w[n] + (size_t)k * esz, (size_t)(kc - k) * esz);
            wb[n] = buf[n];
        }
        if (wt == LP_DTYPE_BF16)
            bf16_step(tr, a, X, ldx, k, wb, 0);
        else
            f_step(tr, wt == LP_DTYPE_F16, a, X, ldx, k, wb, 0);
    }
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++) {
        float r[4];
        _mm_storeu_ps(r, hsum4(a[t][0], a[t][1], a[t][2], a[t][3]));
        float *y = Y + t * ldy;
        for (int n = 0; n < nn; n++)
            y[n] = accumulate ? y[n] + r[n] : r[n];
    }
}

/* One instantiation per dtype and tile height, so the accumulators stay in
 * registers. */
#define TILE_ARGS X, ldx, w, kc, pf, npf, Y, ldy, nn, accumulate
static void run_tile(lp_dtype wt, int tr, const float *X, int64_t ldx, const void *const w[NR],
                     int64_t kc, const char *const pf[NR], int npf, float *Y, int64_t ldy,
                     int nn, bool accumulate) {
    if (wt == LP_DTYPE_BF16) {
        if (tr == 1)
            tile(1, LP_DTYPE_BF16, TILE_ARGS);
        else
            tile(2, LP_DTYPE_BF16, TILE_ARGS);
    } else if (wt == LP_DTYPE_F16) {
        if (tr == 1)
            tile(1, LP_DTYPE_F16, TILE_ARGS);
        else
            tile(2, LP_DTYPE_F16, TILE_ARGS);
    } else {
        if (tr == 1)
            tile(1, LP_DTYPE_F32, TILE_ARGS);
        else
            tile(2, LP_DTYPE_F32, TILE_ARGS);
    }
}

/* Y (+)= X W^T for one task, T x N: the loop structure (and the numerics:
 * per-lane sums in K order, one fixed reduction tree) of kernels_avx512.c. */
static void block(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate) {
    const size_t row = (size_t)ldw * lp_dtype_size(wt);
    const int64_t m = (T + TR - 1) / TR; /* X tiles */
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int nn = (int)LP_MIN(NR, N - n0);
        const void *w[NR];
        for (int j = 0; j < NR; j++)
            w[j] = (const char *)W + (size_t)(n0 + LP_MIN(j, nn - 1)) * row;
        int64_t next = LP_MIN(NR, N - n0 - NR); /* rows of the next W tile */
        for (int64_t ti = 0; ti < m; ti++) {
            const char *pf[NR];
            int npf = 0;
            for (int64_t r = ti; r < next; r += m)
                pf[npf++] = (const char *)W + (size_t)(n0 + NR + r) * row;
            run_tile(wt, (int)LP_MIN(TR, T - ti * TR), X + ti * TR * ldx, ldx, w, K, pf, npf,
                     Y + ti * TR * ldy + n0, ldy, nn, accumulate);
        }
    }
}

/* Kp is a multiple of 16; BF16 weights want each 16 as 8 even, 8 odd. */
static void pack_x(float *dst, const float *x, int64_t K, int64_t Kp, lp_dtype wt) {
    if (wt != LP_DTYPE_BF16) {
        memcpy(dst, x, (size_t)K * sizeof(float));
        memset(dst + K, 0, (size_t)(Kp - K) * sizeof(float));
        return;
    }
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
        for (int i = 0; i < 8; i++) {
            dst[k + i] = x[k + 2 * i];
            dst[k + 8 + i] = x[k + 2 * i + 1];
        }
    for (; k < Kp; k += 16)
        for (int i = 0; i < 8; i++) {
            dst[k + i] = k + 2 * i < K ? x[k + 2 * i] : 0.0f;
            dst[k + 8 + i] = k + 2 * i + 1 < K ? x[k + 2 * i + 1] : 0.0f;
        }
}

static const lp__cpu_gemm_ops k_ops = {.kpad = 16, .pack_x = pack_x, .block = block};

static void matmul(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                   lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                   bool accumulate) {
    lp__cpu_gemm_run(&k_ops, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

/* ---- vector helpers ------------------------------------------------------------------ */

static float dot_f32(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i < n; i += 8) {
        __m256i m = tail_mask8(n - i);
        s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s0);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n) {
        __m256i m = tail_mask8(n - i);
        _mm256_maskstore_ps(y + i, m,
                            _mm256_fmadd_ps(va, _mm256_maskload_ps(x + i, m),
                                            _mm256_maskload_ps(y + i, m)));
    }
}

static void to_f32(float *dst, const void *src, lp_dtype t, int64_t n) {
    if (n <= 0)
        return;
    if (t == LP_DTYPE_F32) {
        memmove(dst, src, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
        __m256 f = t == LP_DTYPE_BF16
                       ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                       : _mm256_cvtph_ps(h);
        _mm256_storeu_ps(dst + i, f);
    }
    for (; i < n; i++)
        dst[i] = t == LP_DTYPE_BF16 ? lp__bf16_to_f32(s[i]) : lp__f16_to_f32(s[i]);
}

const lp__cpu_kernels lp__cpu_kernels_avx2 = {
    .matmul = matmul, .dot_f32 = dot_f32, .axpy_f32 = axpy_f32, .to_f32 = to_f32};
