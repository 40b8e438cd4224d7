/* kernels.h - CPU compute kernels with run-time ISA dispatch.
 *
 * Activations and accumulation are always fp32; weights stay in their file
 * dtype (BF16, F16 or F32) and are widened in registers. Each kernel has a
 * scalar reference (kernels_scalar.c), an AVX2+FMA+F16C version
 * (kernels_avx2.c) and an AVX-512 version (kernels_avx512.c, using
 * AVX512-BF16 dot products where the CPU has them). dispatch.c picks one at
 * first use from CPUID, or from LORAPLEX_CPU_ISA=scalar|avx2|avx512. */
#ifndef LP_BACKEND_CPU_KERNELS_H
#define LP_BACKEND_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "loraplex/dtype.h"

typedef enum {
    LP_ISA_SCALAR = 0,
    LP_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    LP_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ (+BF16 when present) */
} lp_isa;

/* Best ISA this CPU supports. */
lp_isa lp__cpu_isa_detect(void);
/* Currently selected ISA (detected, or forced by LORAPLEX_CPU_ISA or
 * lp__cpu_isa_set). */
lp_isa lp__cpu_isa(void);
/* Force an ISA; returns false (and changes nothing) if the CPU lacks it. */
bool lp__cpu_isa_set(lp_isa isa);
const char *lp__cpu_isa_name(lp_isa isa);

/* Y[t*ldy + n] (+)= sum_k X[t*ldx + k] * W[n*ldw + k]
 * for t < T, n < N, k < K.
 *   X: fp32 activations, T rows;  W: N rows of K elements of dtype `wt`
 *   (BF16, F16 or F32), row stride ldw elements;  Y: fp32.
 * accumulate=false overwrites Y, true adds to it. Multithreaded (OpenMP) over
 * N (and T for large T); call from outside any parallel region. Results are
 * deterministic for a given ISA and thread count, and do not depend on which
 * other rows are in X (row t's result depends only on X row t): this is what
 * makes a mixed batch give every row the same result as running it alone. */
void lp__cpu_matmul(float *Y, int64_t ldy, const float *X, int64_t ldx,
                    const void *W, lp_dtype wt, int64_t ldw, int64_t T, int64_t N,
                    int64_t K, bool accumulate);

/* Dot product and axpy on fp32 vectors (attention inner loops). */
float lp__cpu_dot_f32(const float *a, const float *b, int64_t n);
/* y[i] += a * x[i] */
void lp__cpu_axpy_f32(float *y, float a, const float *x, int64_t n);

/* Convert n elements of dtype `t` at src to fp32 (embedding rows, norms). */
void lp__cpu_to_f32(float *dst, const void *src, lp_dtype t, int64_t n);

/* ---- per-ISA implementations (internal; use the dispatching entry points) */
typedef struct lp__cpu_kernels {
    void (*matmul)(float *Y, int64_t ldy, const float *X, int64_t ldx,
                   const void *W, lp_dtype wt, int64_t ldw, int64_t T,
                   int64_t N, int64_t K, bool accumulate);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
} lp__cpu_kernels;

extern const lp__cpu_kernels lp__cpu_kernels_scalar;
extern const lp__cpu_kernels lp__cpu_kernels_avx2;
extern const lp__cpu_kernels lp__cpu_kernels_avx512;

#endif
