/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ) kernels: register tiles of 4 X rows
 * x 4 W rows of 16-lane fp32 accumulators, masked loads for K tails; plus
 * the vdpbf16ps variant for BF16 weights (needs AVX512-BF16). */
#include <immintrin.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/util.h"

#define TR 4 /* X rows per register tile */
#define NR 4 /* W rows per register tile (N tails repeat the last row) */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Lane sums of a0..a3 as (s0, s1, s2, s3); one fixed addition tree for
 * every output, so a sum does not depend on its neighbours. */
ALWAYS_INLINE __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m256 s0 = _mm256_add_ps(_mm512_castps512_ps256(a0), _mm512_extractf32x8_ps(a0, 1));
    __m256 s1 = _mm256_add_ps(_mm512_castps512_ps256(a1), _mm512_extractf32x8_ps(a1, 1));
    __m256 s2 = _mm256_add_ps(_mm512_castps512_ps256(a2), _mm512_extractf32x8_ps(a2, 1));
    __m256 s3 = _mm256_add_ps(_mm512_castps512_ps256(a3), _mm512_extractf32x8_ps(a3, 1));
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Write (or add) the nn first lanes of r to y. */
ALWAYS_INLINE void store_row(float *y, __m128 r, int nn, bool accumulate) {
    __mmask8 m = (__mmask8)((1u << nn) - 1);
    if (accumulate)
        r = _mm_add_ps(r, _mm_maskz_loadu_ps(m, y));
    _mm_mask_storeu_ps(y, m, r);
}

ALWAYS_INLINE void tile_store(int tr, __m512 a[TR][NR], float *Y, int64_t ldy, int nn,
                              bool accumulate) {
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
        store_row(Y + t * ldy, hsum4(a[t][0], a[t][1], a[t][2], a[t][3]), nn, accumulate);
}

/* Mask of the first min(left, 32 or 16) lanes (none if left <= 0). */
ALWAYS_INLINE __mmask32 tail_mask32(int64_t left) {
    return left >= 32 ? 0xffffffffu : left <= 0 ? 0 : (__mmask32)((1u << left) - 1);
}
ALWAYS_INLINE __mmask16 tail_mask16(int64_t left) {
    return left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* ---- BF16 weights, widened in registers --------------------------------------
 * A 64-byte load holds 32 bf16 weights; as 16 dwords, (v << 16) is the fp32
 * value of the even elements and (v & 0xffff0000) that of the odd ones. X is
 * packed to match: per 32 elements, the 16 even ones then the 16 odd ones.
 * Two shift/and per W row per 32 elements, no shuffles, exact fp32 products. */
ALWAYS_INLINE void tile_bf16(const int tr, float *Y, int64_t ldy, const float *X,
                             int64_t ldx, const uint16_t *const w[NR], int nn, int64_t K,
                             bool accumulate) {
    __m512 a[TR][NR];
    const __m512i hi16 = _mm512_set1_epi32((int)0xffff0000u);
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        __mmask32 m = tail_mask32(K - k);
        __m512 we[NR], wo[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++) {
            __m512i v = _mm512_maskz_loadu_epi16(m, w[n] + k);
            we[n] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            wo[n] = _mm512_castsi512_ps(_mm512_and_si512(v, hi16));
        }
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512 xe = _mm512_load_ps(X + t * ldx + k);
            __m512 xo = _mm512_load_ps(X + t * ldx + k + 16);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++) {
                a[t][n] = _mm512_fmadd_ps(xe, we[n], a[t][n]);
                a[t][n] = _mm512_fmadd_ps(xo, wo[n], a[t][n]);
            }
        }
    }
    tile_store(tr, a, Y, ldy, nn, accumulate);
}

/* ---- F16 weights: vcvtph2ps, 16 per step -------------------------------------- */
ALWAYS_INLINE void tile_f16(const int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                            const uint16_t *const w[NR], int nn, int64_t K,
                            bool accumulate) {
    __m512 a[TR][NR];
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 m = tail_mask16(K - k);
        __m512 wv[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            wv[n] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w[n] + k));
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512 x = _mm512_load_ps(X + t * ldx + k);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++)
                a[t][n] = _mm512_fmadd_ps(x, wv[n], a[t][n]);
        }
    }
    tile_store(tr, a, Y, ldy, nn, accumulate);
}

/* ---- F32 weights ---------------------------------------------------------------- */
ALWAYS_INLINE void tile_f32(const int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                            const float *const w[NR], int nn, int64_t K, bool accumulate) {
    __m512 a[TR][NR];
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 m = tail_mask16(K - k);
        __m512 wv[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            wv[n] = _mm512_maskz_loadu_ps(m, w[n] + k);
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512 x = _mm512_load_ps(X + t * ldx + k);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++)
                a[t][n] = _mm512_fmadd_ps(x, wv[n], a[t][n]);
        }
    }
    tile_store(tr, a, Y, ldy, nn, accumulate);
}

/* ---- BF16 weights with vdpbf16ps -------------------------------------------------
 * vdpbf16ps multiplies bf16 by bf16, so X is split as x = hi + lo with
 * hi = bf16(x), lo = bf16(x - hi) (|x - (hi + lo)| <= 2^-17 |x|) and each
 * step issues two dot products. Packed X per 32 elements: 32 hi then 32 lo. */
__attribute__((target("avx512bf16"))) ALWAYS_INLINE void
tile_dpbf16(const int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
            const uint16_t *const w[NR], int nn, int64_t K, bool accumulate) {
    __m512 a[TR][NR];
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        __mmask32 m = tail_mask32(K - k);
        __m512bh wv[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            wv[n] = (__m512bh)_mm512_maskz_loadu_epi16(m, w[n] + k);
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512bh xh = (__m512bh)_mm512_load_si512(X + t * ldx + k);
            __m512bh xl = (__m512bh)_mm512_load_si512(X + t * ldx + k + 16);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++) {
                a[t][n] = _mm512_dpbf16_ps(a[t][n], xh, wv[n]);
                a[t][n] = _mm512_dpbf16_ps(a[t][n], xl, wv[n]);
            }
        }
    }
    tile_store(tr, a, Y, ldy, nn, accumulate);
}

/* One instantiation per tile height, so the accumulators live in registers. */
#define TILE_SWITCH(fn, tr, ...)                                                       \
    do {                                                                               \
        switch (tr) {                                                                  \
        case 1: fn(1, __VA_ARGS__); break;                                             \
        case 2: fn(2, __VA_ARGS__); break;                                             \
        case 3: fn(3, __VA_ARGS__); break;                                             \
        default: fn(4, __VA_ARGS__); break;                                            \
        }                                                                              \
    } while (0)

static void tiles_bf16(int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                       const uint16_t *const w[NR], int nn, int64_t K, bool acc) {
    TILE_SWITCH(tile_bf16, tr, Y, ldy, X, ldx, w, nn, K, acc);
}
static void tiles_f16(int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                      const uint16_t *const w[NR], int nn, int64_t K, bool acc) {
    TILE_SWITCH(tile_f16, tr, Y, ldy, X, ldx, w, nn, K, acc);
}
static void tiles_f32(int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
                      const float *const w[NR], int nn, int64_t K, bool acc) {
    TILE_SWITCH(tile_f32, tr, Y, ldy, X, ldx, w, nn, K, acc);
}
__attribute__((target("avx512bf16"))) static void
tiles_dpbf16(int tr, float *Y, int64_t ldy, const float *X, int64_t ldx,
             const uint16_t *const w[NR], int nn, int64_t K, bool acc) {
    TILE_SWITCH(tile_dpbf16, tr, Y, ldy, X, ldx, w, nn, K, acc);
}

/* W rows in tiles of NR (outer: each W tile is loaded from memory once and
 * re-read from L1/L2 for every X tile), X rows in tiles of TR (inner). */
static void block_impl(bool dpbf16, float *Y, int64_t ldy, const float *X, int64_t ldx,
                       const void *W, lp_dtype wt, int64_t ldw, int64_t T, int64_t N,
                       int64_t K, bool accumulate) {
    size_t esz = lp_dtype_size(wt);
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int nn = (int)LP_MIN(NR, N - n0);
        const void *w[NR];
        for (int j = 0; j < NR; j++)
            w[j] = (const char *)W + (size_t)((n0 + LP_MIN(j, nn - 1)) * ldw) * esz;
        for (int64_t t0 = 0; t0 < T; t0 += TR) {
            int tr = (int)LP_MIN(TR, T - t0);
            float *y = Y + t0 * ldy + n0;
            const float *x = X + t0 * ldx;
            if (wt == LP_DTYPE_BF16 && dpbf16)
                tiles_dpbf16(tr, y, ldy, x, ldx, (const uint16_t *const *)w, nn, K,
                             accumulate);
            else if (wt == LP_DTYPE_BF16)
                tiles_bf16(tr, y, ldy, x, ldx, (const uint16_t *const *)w, nn, K, accumulate);
            else if (wt == LP_DTYPE_F16)
                tiles_f16(tr, y, ldy, x, ldx, (const uint16_t *const *)w, nn, K, accumulate);
            else
                tiles_f32(tr, y, ldy, x, ldx, (const float *const *)w, nn, K, accumulate);
        }
    }
}

static void block(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate) {
    block_impl(false, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

static void block_dpbf16(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                         lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                         bool accumulate) {
    block_impl(true, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

/* ---- X packing (Kp is a multiple of 32) ------------------------------------------ */

/* Elements k..k+31 of x (zeros past K) as two vectors. */
ALWAYS_INLINE void load32(const float *x, int64_t k, int64_t K, __m512 *lo, __m512 *hi) {
    *lo = _mm512_maskz_loadu_ps(tail_mask16(K - k), x + k);
    *hi = _mm512_maskz_loadu_ps(tail_mask16(K - k - 16), x + k + 16);
}

static void pack_plain(float *dst, const float *x, int64_t K, int64_t Kp) {
    for (int64_t k = 0; k < Kp; k += 32) {
        __m512 lo, hi;
        load32(x, k, K, &lo, &hi);
        _mm512_store_ps(dst + k, lo);
        _mm512_store_ps(dst + k + 16, hi);
    }
}

static void pack_x(float *dst, const float *x, int64_t K, int64_t Kp, lp_dtype wt) {
    if (wt != LP_DTYPE_BF16) {
        pack_plain(dst, x, K, Kp);
        return;
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t k = 0; k < Kp; k += 32) {
        __m512 lo, hi;
        load32(x, k, K, &lo, &hi);
        _mm512_store_ps(dst + k, _mm512_permutex2var_ps(lo, even, hi));
        _mm512_store_ps(dst + k + 16, _mm512_permutex2var_ps(lo, odd, hi));
    }
}

__attribute__((target("avx512bf16"))) static void
pack_x_dpbf16(float *dst, const float *x, int64_t K, int64_t Kp, lp_dtype wt) {
    if (wt != LP_DTYPE_BF16) {
        pack_plain(dst, x, K, Kp);
        return;
    }
    for (int64_t k = 0; k < Kp; k += 32) {
        __m512 lo, hi;
        load32(x, k, K, &lo, &hi);
        __m512i h = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        __m512 h0 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
        __m512 h1 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
        __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(hi, h1), _mm512_sub_ps(lo, h0));
        _mm512_store_si512(dst + k, h);
        _mm512_store_si512(dst + k + 16, l);
    }
}

static const lp__cpu_gemm_ops k_ops = {.kpad = 32, .pack_x = pack_x, .block = block};
static const lp__cpu_gemm_ops k_ops_dpbf16 = {
    .kpad = 32, .pack_x = pack_x_dpbf16, .block = block_dpbf16};

static void matmul(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                   lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                   bool accumulate) {
    lp__cpu_gemm_run(&k_ops, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

static void matmul_dpbf16(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                          lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                          bool accumulate) {
    lp__cpu_gemm_run(&k_ops_dpbf16, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

/* ---- vector helpers ---------------------------------------------------------------- */

static float dot_f32(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i),
                             s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                              _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void to_f32(float *dst, const void *src, lp_dtype t, int64_t n) {
    if (t == LP_DTYPE_F32) {
        memmove(dst, src, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m256i h = _mm256_maskz_loadu_epi16(m, s + i);
        __m512 f = t == LP_DTYPE_BF16
                       ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                       : _mm512_cvtph_ps(h);
        _mm512_mask_storeu_ps(dst + i, m, f);
    }
}

const lp__cpu_kernels lp__cpu_kernels_avx512 = {
    .matmul = matmul, .dot_f32 = dot_f32, .axpy_f32 = axpy_f32, .to_f32 = to_f32};
const lp__cpu_kernels lp__cpu_kernels_avx512_dpbf16 = {
    .matmul = matmul_dpbf16, .dot_f32 = dot_f32, .axpy_f32 = axpy_f32, .to_f32 = to_f32};
