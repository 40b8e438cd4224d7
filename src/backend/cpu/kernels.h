/* kernels.h - CPU compute kernels with run-time ISA dispatch.
 *
 * Activations and accumulation are always fp32; weights stay in their file
 * dtype (BF16, F16 or F32) and are widened in registers. Each kernel has a
 * scalar reference (kernels_scalar.c), an AVX2+FMA+F16C version
 * (kernels_avx2.c) and an AVX-512 version (kernels_avx512.c; an AVX512-BF16
 * vdpbf16ps variant exists but is not dispatched, see docs/cpu-kernels.md).
 * dispatch.c picks one at first use from CPUID, or from
 * LORAPLEX_CPU_ISA=scalar|avx2|avx512. */
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
 * deterministic for a given ISA (whatever the thread count), and do not
 * depend on which other rows are in X (row t's result depends only on X row
 * t): this is what makes a mixed batch give every row the same result as
 * running it alone. Thread-safe; each calling thread keeps a scratch buffer
 * for packed X rows (grown on demand, kept for the thread's lifetime). */
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
    void (*to_f32)(float *dst, const void *src, lp_dtype t, int64_t n);
} lp__cpu_kernels;

extern const lp__cpu_kernels lp__cpu_kernels_scalar;
extern const lp__cpu_kernels lp__cpu_kernels_avx2;
extern const lp__cpu_kernels lp__cpu_kernels_avx512;
/* AVX-512 with BF16 weights multiplied by vdpbf16ps on a hi/lo bf16 split of
 * X instead of widening W to fp32. Needs AVX512-BF16. Not dispatched: at
 * most ~10% faster here, and ~2^-16 relative error per product instead of
 * exact products (see docs/cpu-kernels.md); kept so that the bench and the
 * tests can measure and check the alternative. */
extern const lp__cpu_kernels lp__cpu_kernels_avx512_dpbf16;

/* Kernel table of an ISA (NULL for an unknown value); does not check the CPU. */
const lp__cpu_kernels *lp__cpu_kernels_for(lp_isa isa);
/* Whether the CPU (and OS) can run an ISA's kernels / vdpbf16ps. */
bool lp__cpu_isa_supported(lp_isa isa);
bool lp__cpu_has_avx512bf16(void);
/* The ISA to use given a LORAPLEX_CPU_ISA value (NULL/""/"auto": the best
 * supported) and a bit mask of supported ISAs (bit i = lp_isa i; scalar is
 * always assumed). Logs a warning for an unknown or unsupported request and
 * falls back to the best supported ISA. Pure apart from the log line. */
lp_isa lp__cpu_isa_choose(const char *request, unsigned supported_mask);

/* ---- the matmul driver shared by all ISAs (dispatch.c) ----------------------
 * It splits Y into tasks of (up to TB rows of X) x (NB rows of W), runs them
 * on OpenMP threads, and hands each task to the ISA's block kernel. X rows are
 * first packed into a per-thread scratch buffer (zero-padded to a multiple of
 * kpad, laid out as the block kernel wants), so block kernels need no X tails.
 * Every output element is computed by exactly one block call with a summation
 * order fixed by K and the ISA: results do not depend on T, on the other rows
 * of X, on the tiling or on the thread count. */
typedef struct lp__cpu_gemm_ops {
    int64_t kpad; /* packed X rows hold Kp = round_up(K, kpad) floats */
    /* Pack one row of X (K floats) into dst (Kp floats, 64-byte aligned), in
     * the layout `block` expects for weight dtype wt, zeros after K. NULL:
     * no packing, `block` reads X in place (ldx = the caller's stride). */
    void (*pack_x)(float *dst, const float *x, int64_t K, int64_t Kp, lp_dtype wt);
    /* Y[t*ldy + n] (+)= dot(X row t, W row n), t < T, n < N; X is packed
     * (ldx = Kp) unless pack_x is NULL; W points at the block's first row. */
    void (*block)(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                  lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                  bool accumulate);
} lp__cpu_gemm_ops;

void lp__cpu_gemm_run(const lp__cpu_gemm_ops *ops, float *Y, int64_t ldy,
                      const float *X, int64_t ldx, const void *W, lp_dtype wt,
                      int64_t ldw, int64_t T, int64_t N, int64_t K, bool accumulate);

#endif
