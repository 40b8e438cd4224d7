/* kernels_scalar.c - plain C kernels: the reference the vector ISAs are
 * tested against, and the fallback on CPUs without AVX2. */
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/util.h"

/* Widen element k of a weight row. */
static inline float w_at(const void *w, lp_dtype wt, int64_t k) {
    switch (wt) {
    case LP_DTYPE_BF16: return lp__bf16_to_f32(((const uint16_t *)w)[k]);
    case LP_DTYPE_F16: return lp__f16_to_f32(((const uint16_t *)w)[k]);
    default: return ((const float *)w)[k];
    }
}

/* Dot product of x (fp32) and one weight row, in fp32 with 8 interleaved
 * partial sums (lane j takes k = j mod 8) combined by a fixed tree: the
 * order depends only on K. */
static float dot_row(const float *x, const void *w, lp_dtype wt, int64_t K) {
    float s[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; j++)
            s[j] += x[k + j] * w_at(w, wt, k + j);
    for (int j = 0; k + j < K; j++)
        s[j] += x[k + j] * w_at(w, wt, k + j);
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* Row n of W outer, rows of X inner: a W row is read from memory once and
 * then from cache for every X row of the block. */
static void block(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate) {
    size_t esz = lp_dtype_size(wt);
    for (int64_t n = 0; n < N; n++) {
        const void *w = (const char *)W + (size_t)(n * ldw) * esz;
        for (int64_t t = 0; t < T; t++) {
            float d = dot_row(X + t * ldx, w, wt, K);
            float *y = Y + t * ldy + n;
            *y = accumulate ? *y + d : d;
        }
    }
}

static const lp__cpu_gemm_ops k_ops = {.kpad = 1, .pack_x = NULL, .block = block};

static void matmul(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                   lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                   bool accumulate) {
    lp__cpu_gemm_run(&k_ops, Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    return dot_row(a, b, LP_DTYPE_F32, n);
}

static void axpy_f32(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void to_f32(float *dst, const void *src, lp_dtype t, int64_t n) {
    if (n <= 0)
        return;
    if (t == LP_DTYPE_F32) {
        memmove(dst, src, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = w_at(src, t, i);
}

const lp__cpu_kernels lp__cpu_kernels_scalar = {
    .matmul = matmul, .dot_f32 = dot_f32, .axpy_f32 = axpy_f32, .to_f32 = to_f32};
