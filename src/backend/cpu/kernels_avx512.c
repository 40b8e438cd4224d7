/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ) kernels: register tiles of 4 X rows
 * x 4 W rows of 16-lane fp32 accumulators, masked loads for K tails; plus
 * the vdpbf16ps variant for BF16 weights (needs AVX512-BF16). */
#include <immintrin.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/util.h"

#define TR 4          /* X rows per register tile */
#define NR 4          /* W rows per register tile (N tails repeat the last row) */
#define PF_AHEAD 1024 /* bytes: software prefetch distance in a streamed W row */
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

/* Mask of the first min(left, 32 or 16) lanes (none if left <= 0). */
ALWAYS_INLINE __mmask32 tail_mask32(int64_t left) {
    return left >= 32 ? 0xffffffffu : left <= 0 ? 0 : (__mmask32)((1u << left) - 1);
}
ALWAYS_INLINE __mmask16 tail_mask16(int64_t left) {
    return left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* How a tile multiplies, by weight dtype:
 *  BF16   A 64-byte load holds 32 bf16 weights; as 16 dwords, (v << 16) is
 *         the fp32 value of the even elements and (v & 0xffff0000) that of
 *         the odd ones. X is packed to match (per 32 elements: the 16 even,
 *         then the 16 odd). Two shift/and per W row per 32 elements, no
 *         shuffles, exact fp32 products.
 *  DPBF16 vdpbf16ps multiplies bf16 by bf16, so X is split as x = hi + lo,
 *         hi = bf16(x), lo = bf16(x - hi) (|x - hi - lo| <= 2^-16 |x|), and
 *         each step issues two dot products. Packed X per 32 elements: the
 *         32 hi, then the 32 lo (as bf16).
 *  F16    vcvtph2ps, 16 per step.   F32  plain loads, 16 per step. */
enum { KIND_BF16, KIND_DPBF16, KIND_F16, KIND_F32 };

/* One step of a tile: `step` elements of K from k. Full steps use plain
 * loads; the K tail (full = false) masked ones. */
ALWAYS_INLINE void tile_step(const int kind, const int tr, __m512 a[TR][NR], const float *X,
                             int64_t ldx, const void *const wv[NR], int64_t k, const bool full,
                             int64_t left) {
    if (kind == KIND_BF16) {
        __mmask32 m = tail_mask32(left);
        const __m512i hi16 = _mm512_set1_epi32((int)0xffff0000u);
        __m512 we[NR], wo[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++) {
            __m512i v = full ? _mm512_loadu_si512((const uint16_t *)wv[n] + k)
                             : _mm512_maskz_loadu_epi16(m, (const uint16_t *)wv[n] + k);
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
    } else if (kind == KIND_DPBF16) {
        __mmask32 m = tail_mask32(left);
        __m512bh w[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            w[n] = (__m512bh)(full ? _mm512_loadu_si512((const uint16_t *)wv[n] + k)
                                   : _mm512_maskz_loadu_epi16(m, (const uint16_t *)wv[n] + k));
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512bh xh = (__m512bh)_mm512_load_si512(X + t * ldx + k);
            __m512bh xl = (__m512bh)_mm512_load_si512(X + t * ldx + k + 16);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++) {
                a[t][n] = _mm512_dpbf16_ps(a[t][n], xh, w[n]);
                a[t][n] = _mm512_dpbf16_ps(a[t][n], xl, w[n]);
            }
        }
    } else {
        __mmask16 m = tail_mask16(left);
        __m512 w[NR];
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++) {
            const uint16_t *h = (const uint16_t *)wv[n] + k;
            const float *f = (const float *)wv[n] + k;
            if (kind == KIND_F16)
                w[n] = _mm512_cvtph_ps(full ? _mm256_loadu_si256((const __m256i *)h)
                                            : _mm256_maskz_loadu_epi16(m, h));
            else
                w[n] = full ? _mm512_loadu_ps(f) : _mm512_maskz_loadu_ps(m, f);
        }
#pragma GCC unroll 4
        for (int t = 0; t < tr; t++) {
            __m512 x = _mm512_load_ps(X + t * ldx + k);
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++)
                a[t][n] = _mm512_fmadd_ps(x, w[n], a[t][n]);
        }
    }
}

/* One register tile: tr X rows x NR W rows over all of K; the 16-lane
 * accumulators are reduced and written (or added) to the nn first columns
 * of Y. Meanwhile the npf rows pf[] (weights of the next W tile) are
 * prefetched into L2, at the same offsets as the weights being read, and,
 * if `ahead` (the tile that streams W from memory), its own W rows
 * PF_AHEAD bytes ahead into L1: the hardware prefetcher falls behind on
 * 64-byte loads that straddle cache lines (W rows at 16 mod 64, as from
 * malloc or a file mapping, streamed 25% slower without this on Zen 5). */
ALWAYS_INLINE void tile(const int kind, const int tr, const float *X, int64_t ldx,
                        const void *const wv[NR], int64_t kc, const char *const pf[NR],
                        int npf, bool ahead, float *Y, int64_t ldy, int nn,
                        bool accumulate) {
    const int64_t step = kind == KIND_BF16 || kind == KIND_DPBF16 ? 32 : 16;
    const size_t esz = kind == KIND_F32 ? 4 : 2;
    __m512 a[TR][NR];
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++)
#pragma GCC unroll 4
        for (int n = 0; n < NR; n++)
            a[t][n] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + step <= kc; k += step) {
        for (int j = 0; j < npf; j++)
            _mm_prefetch(pf[j] + (size_t)k * esz, _MM_HINT_T1);
        if (ahead)
#pragma GCC unroll 4
            for (int n = 0; n < NR; n++)
                _mm_prefetch((const char *)wv[n] + (size_t)k * esz + PF_AHEAD, _MM_HINT_T0);
        tile_step(kind, tr, a, X, ldx, wv, k, true, step);
    }
    if (k < kc)
        tile_step(kind, tr, a, X, ldx, wv, k, false, kc - k);
    __mmask8 m = (__mmask8)((1u << nn) - 1);
#pragma GCC unroll 4
    for (int t = 0; t < tr; t++) {
        __m128 r = hsum4(a[t][0], a[t][1], a[t][2], a[t][3]);
        if (accumulate)
            r = _mm_add_ps(r, _mm_maskz_loadu_ps(m, Y + t * ldy));
        _mm_mask_storeu_ps(Y + t * ldy, m, r);
    }
}

/* One instantiation per kind and tile height, so the accumulators live in
 * registers. */
#define TILE_ARGS X, ldx, w, kc, pf, npf, ahead, Y, ldy, nn, accumulate
#define TILE_KIND(kind)                                                                \
    switch (tr) {                                                                      \
    case 1: tile(kind, 1, TILE_ARGS); break;                                           \
    case 2: tile(kind, 2, TILE_ARGS); break;                                           \
    case 3: tile(kind, 3, TILE_ARGS); break;                                           \
    default: tile(kind, 4, TILE_ARGS); break;                                          \
    }

static void run_tile(int kind, int tr, const float *X, int64_t ldx, const void *const w[NR],
                     int64_t kc, const char *const pf[NR], int npf, bool ahead, float *Y,
                     int64_t ldy, int nn, bool accumulate) {
    switch (kind) {
    case KIND_BF16: TILE_KIND(KIND_BF16) break;
    case KIND_DPBF16: TILE_KIND(KIND_DPBF16) break;
    case KIND_F16: TILE_KIND(KIND_F16) break;
    default: TILE_KIND(KIND_F32) break;
    }
}

/* Y (+)= X W^T for one task, T x N: W tiles of NR rows outer, X tiles of TR
 * rows inner, each tile over all of K. A W tile is read from memory once,
 * by the first X tile, and from L1/L2 by the others (T <= 64: the driver's
 * panel); the first X tiles prefetch the next W tile into L2 meanwhile (X
 * tile i fetches rows i, i + m, ... of the next W tile, m = number of X
 * tiles), so memory keeps streaming while the cached X tiles compute.
 * Numerics: lane j of the accumulator of element (t, n) sums the products of
 * every 16th (BF16: every 32nd pair of) k in K order, then the lanes are
 * reduced by one fixed tree. That depends only on K, never on T, N or the
 * tiling. */
static void block_impl(int kind, float *Y, int64_t ldy, const float *X, int64_t ldx,
                       const void *W, lp_dtype wt, int64_t ldw, int64_t T, int64_t N,
                       int64_t K, bool accumulate) {
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
            run_tile(kind, (int)LP_MIN(TR, T - ti * TR), X + ti * TR * ldx, ldx, w, K, pf,
                     npf, ti == 0, Y + ti * TR * ldy + n0, ldy, nn, accumulate);
        }
    }
}

static int kind_of(lp_dtype wt, bool dpbf16) {
    if (wt == LP_DTYPE_BF16)
        return dpbf16 ? KIND_DPBF16 : KIND_BF16;
    return wt == LP_DTYPE_F16 ? KIND_F16 : KIND_F32;
}

static void block(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate) {
    block_impl(kind_of(wt, false), Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

static void block_dpbf16(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                         lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                         bool accumulate) {
    block_impl(kind_of(wt, true), Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
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

static void pack_x_dpbf16(float *dst, const float *x, int64_t K, int64_t Kp, lp_dtype wt) {
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
    if (n <= 0)
        return;
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
