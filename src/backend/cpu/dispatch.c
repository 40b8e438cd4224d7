/* dispatch.c - CPU feature detection, run-time choice of the kernel ISA, and
 * the OpenMP matmul driver that every ISA's block kernel runs under. */
#include "backend/cpu/kernels.h"

#include <cpuid.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/util.h"

/* ---- detection ------------------------------------------------------------ */

/* XCR0: which register states the OS saves on context switch. */
static uint64_t read_xcr0(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* clang (14) knows no "f16c" for __builtin_cpu_supports: read CPUID.1:ECX. */
static bool cpu_has_f16c(void) {
#if defined(__clang__)
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
    return __builtin_cpu_supports("f16c");
#endif
}

/* Bit mask of runnable ISAs (bit i = lp_isa i), computed once. */
static unsigned g_supported;
static bool g_has_bf16;
static pthread_once_t g_detect_once = PTHREAD_ONCE_INIT;

static void detect(void) {
    __builtin_cpu_init();
    uint64_t xcr0 = read_xcr0();
    bool os_avx = (xcr0 & 0x6) == 0x6;       /* XMM, YMM */
    bool os_avx512 = (xcr0 & 0xe6) == 0xe6;  /* + opmask, ZMM_Hi256, Hi16_ZMM */
    unsigned mask = 1u << LP_ISA_SCALAR;
    bool avx2 = os_avx && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                cpu_has_f16c();
    if (avx2)
        mask |= 1u << LP_ISA_AVX2;
    if (avx2 && os_avx512 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
        mask |= 1u << LP_ISA_AVX512;
        g_has_bf16 = __builtin_cpu_supports("avx512bf16");
    }
    g_supported = mask;
}

static unsigned supported_mask(void) {
    pthread_once(&g_detect_once, detect);
    return g_supported;
}

bool lp__cpu_isa_supported(lp_isa isa) {
    return (unsigned)isa <= LP_ISA_AVX512 && (supported_mask() & (1u << isa));
}

bool lp__cpu_has_avx512bf16(void) {
    supported_mask();
    return g_has_bf16;
}

static lp_isa best_of(unsigned mask) {
    if (mask & (1u << LP_ISA_AVX512))
        return LP_ISA_AVX512;
    if (mask & (1u << LP_ISA_AVX2))
        return LP_ISA_AVX2;
    return LP_ISA_SCALAR;
}

lp_isa lp__cpu_isa_detect(void) { return best_of(supported_mask()); }

const char *lp__cpu_isa_name(lp_isa isa) {
    switch (isa) {
    case LP_ISA_SCALAR: return "scalar";
    case LP_ISA_AVX2: return "avx2";
    case LP_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

lp_isa lp__cpu_isa_choose(const char *request, unsigned supported) {
    supported |= 1u << LP_ISA_SCALAR;
    lp_isa best = best_of(supported);
    if (!request || !*request || !strcmp(request, "auto"))
        return best;
    for (int i = LP_ISA_SCALAR; i <= LP_ISA_AVX512; i++) {
        if (strcmp(request, lp__cpu_isa_name((lp_isa)i)))
            continue;
        if (supported & (1u << i))
            return (lp_isa)i;
        LP_WARN("LORAPLEX_CPU_ISA=%s: this CPU cannot run it; using %s", request,
                lp__cpu_isa_name(best));
        return best;
    }
    LP_WARN("LORAPLEX_CPU_ISA=%s: unknown (expected scalar, avx2 or avx512); using %s",
            request, lp__cpu_isa_name(best));
    return best;
}

/* ---- selection -------------------------------------------------------------- */

static atomic_int g_isa = LP_ISA_SCALAR;
static pthread_once_t g_select_once = PTHREAD_ONCE_INIT;

static void select_isa(void) {
    lp_isa isa = lp__cpu_isa_choose(getenv("LORAPLEX_CPU_ISA"), supported_mask());
    atomic_store(&g_isa, (int)isa);
    LP_DEBUG("cpu kernels: %s (best supported: %s)", lp__cpu_isa_name(isa),
             lp__cpu_isa_name(lp__cpu_isa_detect()));
}

lp_isa lp__cpu_isa(void) {
    pthread_once(&g_select_once, select_isa);
    return (lp_isa)atomic_load(&g_isa);
}

bool lp__cpu_isa_set(lp_isa isa) {
    pthread_once(&g_select_once, select_isa);
    if (!lp__cpu_isa_supported(isa))
        return false;
    atomic_store(&g_isa, (int)isa);
    return true;
}

const lp__cpu_kernels *lp__cpu_kernels_for(lp_isa isa) {
    switch (isa) {
    case LP_ISA_SCALAR: return &lp__cpu_kernels_scalar;
    case LP_ISA_AVX2: return &lp__cpu_kernels_avx2;
    case LP_ISA_AVX512: return &lp__cpu_kernels_avx512;
    }
    return NULL;
}

static const lp__cpu_kernels *kernels(void) { return lp__cpu_kernels_for(lp__cpu_isa()); }

/* ---- public entry points ---------------------------------------------------- */

static bool weight_dtype_ok(lp_dtype t) {
    return t == LP_DTYPE_F32 || t == LP_DTYPE_F16 || t == LP_DTYPE_BF16;
}

void lp__cpu_matmul(float *Y, int64_t ldy, const float *X, int64_t ldx, const void *W,
                    lp_dtype wt, int64_t ldw, int64_t T, int64_t N, int64_t K,
                    bool accumulate) {
    kernels()->matmul(Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
}

float lp__cpu_dot_f32(const float *a, const float *b, int64_t n) {
    return n > 0 ? kernels()->dot_f32(a, b, n) : 0.0f;
}

void lp__cpu_axpy_f32(float *y, float a, const float *x, int64_t n) {
    if (n > 0)
        kernels()->axpy_f32(y, a, x, n);
}

void lp__cpu_to_f32(float *dst, const void *src, lp_dtype t, int64_t n) {
    if (n <= 0)
        return;
    if (!weight_dtype_ok(t)) {
        LP_ERROR("lp__cpu_to_f32: unsupported dtype %s", lp_dtype_name(t));
        return;
    }
    kernels()->to_f32(dst, src, t, n);
}

/* ---- the matmul driver -------------------------------------------------------
 * Work split (all sizes in rows):
 *   super-panel: X rows packed at once, at most ~SUPER_BYTES of packed X
 *     (at least one panel), so scratch stays bounded for long prompts;
 *   panel (TB): X rows of one task, ~PANEL_BYTES of packed X (kept in L2),
 *     in [16, 64]. The block kernel runs every X tile of the panel over each
 *     W tile: a W row is read from memory by the first and from L1/L2 by
 *     the others. Never below 16, so a decode batch (T <= 16) reads every W
 *     row from memory once per call;
 *   W block (NB): W rows per task, a multiple of 4 (the block kernels' row
 *     tile), sized to give every thread about four tasks.
 * Tasks = panels x W blocks, split statically over the threads. */
#define GEMM_INLINE_WORK 32768      /* T*N*K below this: no threads */
#define GEMM_PANEL_BYTES (1 << 20)
#define GEMM_SUPER_BYTES (4 << 20)
#define GEMM_NB_MAX 64

/* Per-thread scratch for packed X, kept between calls (no allocation in the
 * decode loop) and freed when the thread exits. */
typedef struct {
    float *p;
    size_t cap; /* floats */
} scratch;

static pthread_key_t g_scratch_key;
static bool g_scratch_key_ok;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v) {
    scratch *s = v;
    free(s->p);
    free(s);
}

static void scratch_key_init(void) {
    g_scratch_key_ok = pthread_key_create(&g_scratch_key, scratch_free) == 0;
}

/* At least n floats, 64-byte aligned; NULL on OOM. */
static float *scratch_get(size_t n) {
    pthread_once(&g_scratch_once, scratch_key_init);
    if (!g_scratch_key_ok)
        return NULL;
    scratch *s = pthread_getspecific(g_scratch_key);
    if (s && n <= s->cap)
        return s->p;
    size_t bytes;
    if (!lp__mul_size(n, sizeof(float), &bytes) || !lp__add_size(bytes, 63, &bytes))
        return NULL;
    bytes &= ~(size_t)63;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(g_scratch_key, s)) {
            free(s);
            return NULL;
        }
    }
    float *p = aligned_alloc(64, bytes);
    if (!p)
        return NULL;
    free(s->p);
    s->p = p;
    s->cap = bytes / sizeof(float);
    return p;
}

static void gemm_pass(const lp__cpu_gemm_ops *ops, float *Y, int64_t ldy, const float *X,
                      int64_t ldx, float *xp, int64_t Kp, const void *W, lp_dtype wt,
                      int64_t ldw, int64_t T, int64_t N, int64_t K, int64_t TB,
                      bool accumulate) {
    int max_threads = omp_get_max_threads();
    int64_t NB = (N + 4 * (int64_t)max_threads - 1) / (4 * (int64_t)max_threads);
    NB = LP_MIN(LP_MAX((NB + 3) & ~(int64_t)3, 4), GEMM_NB_MAX);
    int64_t n_nb = (N + NB - 1) / NB, n_tp = (T + TB - 1) / TB, n_tasks = n_nb * n_tp;
    double work = (double)T * (double)N * (double)K;
    int threads = work < GEMM_INLINE_WORK ? 1 : (int)LP_MIN((int64_t)max_threads, n_tasks);
    size_t esz = lp_dtype_size(wt);
    const float *xs = ops->pack_x ? xp : X;
    int64_t xld = ops->pack_x ? Kp : ldx;

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (ops->pack_x) {
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++)
                ops->pack_x(xp + t * Kp, X + t * ldx, K, Kp, wt);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n_tasks; i++) {
            int64_t t0 = (i / n_nb) * TB, n0 = (i % n_nb) * NB;
            int64_t tn = LP_MIN(TB, T - t0), nn = LP_MIN(NB, N - n0);
            ops->block(Y + t0 * ldy + n0, ldy, xs + t0 * xld, xld,
                       (const char *)W + (size_t)(n0 * ldw) * esz, wt, ldw, tn, nn, K,
                       accumulate);
        }
    }
}

void lp__cpu_gemm_run(const lp__cpu_gemm_ops *ops, float *Y, int64_t ldy, const float *X,
                      int64_t ldx, const void *W, lp_dtype wt, int64_t ldw, int64_t T,
                      int64_t N, int64_t K, bool accumulate) {
    if (T <= 0 || N <= 0)
        return;
    if (!weight_dtype_ok(wt)) {
        LP_ERROR("lp__cpu_matmul: unsupported weight dtype %s", lp_dtype_name(wt));
        return;
    }
    if (K <= 0) {
        if (!accumulate)
            for (int64_t t = 0; t < T; t++)
                memset(Y + t * ldy, 0, (size_t)N * sizeof(float));
        return;
    }
    int64_t Kp = (K + ops->kpad - 1) / ops->kpad * ops->kpad;
    int64_t row_bytes = Kp * (int64_t)sizeof(float);
    int64_t TB = LP_MIN(LP_MAX(GEMM_PANEL_BYTES / row_bytes, 16), 64) & ~(int64_t)3;
    if (!ops->pack_x) {
        gemm_pass(ops, Y, ldy, X, ldx, NULL, 0, W, wt, ldw, T, N, K, TB, accumulate);
        return;
    }
    int64_t SP = LP_MAX(GEMM_SUPER_BYTES / row_bytes / TB, 1) * TB;
    SP = LP_MIN(SP, T);
    float *xp = scratch_get((size_t)SP * (size_t)Kp);
    if (!xp) {
        LP_ERROR("lp__cpu_matmul: out of memory for %lld packed rows of %lld; "
                 "using the scalar kernel",
                 (long long)SP, (long long)Kp);
        lp__cpu_kernels_scalar.matmul(Y, ldy, X, ldx, W, wt, ldw, T, N, K, accumulate);
        return;
    }
    for (int64_t s0 = 0; s0 < T; s0 += SP)
        gemm_pass(ops, Y + s0 * ldy, ldy, X + s0 * ldx, ldx, xp, Kp, W, wt, ldw,
                  LP_MIN(SP, T - s0), N, K, TB, accumulate);
}
