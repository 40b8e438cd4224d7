/* kernels_avx2.c - AVX2 + FMA + F16C kernels: register tiles of 2 X rows x
 * 4 W rows of 8-lane fp32 accumulators; K tails of W go through a small
 * zero-padded buffer, so every step has the same shape. */
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

ALWAYS_INLINE void tile_store(int tr, __m256 a[TR][NR], float *Y, int64_t ldy, int nn,
                              bool accumulate) {
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++) {
        float r[4];
        _mm_storeu_ps(r, hsum4(a[t][0], a[t][1], a[t][2], a[t][3]));
        float *y = Y + t * ldy;
        for (int n = 0; n < nn; n++)
            y[n] = accumulate ? y[n] + r[n] : r[n];
    }
}

/* Lanes i < left of a 32-bit mask vector set (for vmaskmovps). */
ALWAYS_INLINE __m256i tail_mask8(int64_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)LP_MIN(left, 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- BF16 weights: per 16 elements, (v << 16) and (v & 0xffff0000) are the
 * even and odd weights as fp32; X is packed per 16 as 8 even then 8 odd.
 * wp[n] points at the 16 weights of row n for this step. */
ALWAYS_INLINE void bf16_step(const int tr, __m256 a[TR][NR], const float *X, int64_t ldx,
                             int64_t k, const uint16_t *const wp[NR]) {
    const __m256i hi16 = _mm256_set1_epi32((int)0xffff0000u);
    __m256 xe[TR], xo[TR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++) {
        xe[t] = _mm256_load_ps(X + t * ldx + k);
        xo[t] = _mm256_load_ps(X + t * ldx + k + 8);
    }
#pragma GCC unroll 4
    for (int n = 0; n < NR; n++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)wp[n]);
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
                          int64_t ldx, int64_t k, const void *const wp[NR]) {
    __m256 x[TR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++)
        x[t] = _mm256_load_ps(X + t * ldx + k);
#pragma GCC unroll 4
    for (int n = 0; n < NR; n++) {
        __m256 wv = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wp[n]))
                        : _mm256_loadu_ps((const float *)wp[n]);
#pragma GCC unroll 2
        for (int t = 0; t < tr; t++)
            a[t][n] = _mm256_fmadd_ps(x[t], wv, a[t][n]);
    }
}

/* One register tile: tr X rows x NR W rows over all of K. The last, partial
 * step reads W through zero-padded copies, so it has the same shape as the
 * others (X is zero-padded by the packing). */
ALWAYS_INLINE void tile(const int tr, const lp_dtype wt, float *Y, int64_t ldy,
                        const float *X, int64_t ldx, const void *const w[NR], int nn,
                        int64_t K, bool accumulate) {
    const int64_t step = wt == LP_DTYPE_BF16 ? 16 : 8;
    const size_t esz = wt == LP_DTYPE_F32 ? 4 : 2;
    __m256 a[TR][NR];
#pragma GCC unroll 2
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm256_setzero_ps();
    const void *wp[NR];
    int64_t k = 0;
    for (; k + step <= K; k += step) {
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            wp[n] = (const char *)w[n] + (size_t)k * esz;
        if (wt == LP_DTYPE_BF16)
            bf16_step(tr, a, X, ldx, k, (const uint16_t *const *)wp);
        else
            f_step(tr, wt == LP_DTYPE_F16, a, X, ldx, k, wp);
    }
    if (k < K) {
        _Alignas(32) char buf[NR][32] = {{0}};
        for (int n = 0; n < NR; n++) {
            memcpy(buf[n], (const char *)w[n] + (size_t)k * esz, (size_t)(K - k) * esz);
            wp[n] = buf[n];
        }
        if (wt == LP_DTYPE_BF16)
            bf16_step(tr, a, X, ldx, k, (const uint16_t *const *)wp);
        else
            f_step(tr, wt == LP_DTYPE_F16, a, X, ldx, k, wp);
    }
    tile_store(tr, a, Y, ldy, nn, accumulate);
}

/* One instantiation per dtype and tile height, so the accumulators stay in
 * registers. */
static void tiles(lp_dtype wt, int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                  const void *const w[NR], int nn, int64_t K, bool acc) {
    if (wt == LP_DTYPE_BF16) {
        if (tr == 1)
            tile(1, LP_DTYPE_BF16, Y, ldy, X, ldx, w, nn, K, acc);
        else
            tile(2, LP_DTYPE_BF16, Y, ldy, X, ldx, w, nn, K, acc);
    } else if (wt == LP_DTYPE_F16) {
        if (tr == 1)
            tile(1, LP_DTYPE_F16, Y, ldy, X, ldx, w, nn, K, acc);
        else
            tile(2, LP_DTYPE_F16, Y, ldy, X, ldx, w, nn, K, acc);
    } else {
        if (tr == 1)
            tile(1, LP_DTYPE_F32, Y, ldy, X, ldx, w, nn, K, acc);
        else
            tile(2, LP_DTYPE_F32, Y, ldy, X, ldx, w, nn, K, acc);
    }
}

/* W rows in tiles of NR (outer: loaded from memory once, then re-read from
 * cache for every X tile), X rows in tiles of TR (inner). */
static void block(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate) {
    size_t esz = lp_dtype_size(wt);
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int nn = (int)LP_MIN(NR, N - n0);
        const void *w[NR];
        for (int j = 0; j < NR; j++)
            w[j] = (const char *)W + (size_t)((n0 + LP_MIN(j, nn - 1)) * ldw) * esz;
        for (int64_t t0 = 0; t0 < T; t0 += TR)
            tiles(wt, (int)LP_MIN(TR, T - t0), Y + t0 * ldy + n0, ldy, X + t0 * ldx, ldx, w,
                  nn, K, accumulate);
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
