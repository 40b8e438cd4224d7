/* test_cpu_kernels.c - every CPU kernel ISA against a double-precision
 * reference (matmul over a grid of shapes, dtypes, strides and accumulate
 * modes; dot; axpy; to_f32), plus the determinism matmul promises: a row's
 * result is bit-identical whether run alone or in a batch, and whatever the
 * thread count. Also the ISA choice (LORAPLEX_CPU_ISA, CPUID). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "testlib.h"
#include "util/log.h"
#include "util/util.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static double rnd(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* A test subject: an ISA's kernel table under a name. */
typedef struct {
    const char *name;
    const lp__cpu_kernels *k;
} subject;

static subject g_subjects[4];
static int g_n_subjects;

static float w_get(const void *w, lp_dtype t, int64_t i) {
    if (t == LP_DTYPE_BF16)
        return lp__bf16_to_f32(((const uint16_t *)w)[i]);
    if (t == LP_DTYPE_F16)
        return lp__f16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

static void w_set(void *w, lp_dtype t, int64_t i, float v) {
    if (t == LP_DTYPE_BF16)
        ((uint16_t *)w)[i] = lp__f32_to_bf16(v);
    else if (t == LP_DTYPE_F16)
        ((uint16_t *)w)[i] = lp__f32_to_f16(v);
    else
        ((float *)w)[i] = v;
}

static void w_set_nan(void *w, lp_dtype t, int64_t i) {
    if (t == LP_DTYPE_BF16)
        ((uint16_t *)w)[i] = 0x7fc0;
    else if (t == LP_DTYPE_F16)
        ((uint16_t *)w)[i] = 0x7e00;
    else
        ((float *)w)[i] = NAN;
}

#define Y_SENTINEL 12345.0f

/* ---- matmul ---------------------------------------------------------------------- */

/* One shape and dtype, every subject. Strides are odd and the base pointers
 * misaligned; the padding between rows holds NaN (X, W: reading it would
 * poison the result) or a sentinel (Y: writing it is caught). */
static void check_matmul(lp_dtype wt, int64_t T, int64_t N, int64_t K) {
    int64_t ldx = K + 3, ldw = K + 5, ldy = N + 2;
    size_t esz = lp_dtype_size(wt);
    float *xbuf = malloc(sizeof(float) * (size_t)(T * ldx + 1));
    char *wbuf = malloc(esz * (size_t)(N * ldw + 1));
    float *ybuf = malloc(sizeof(float) * (size_t)(T * ldy + 1));
    float *y0 = malloc(sizeof(float) * (size_t)(T * ldy));
    float *yb = malloc(sizeof(float) * (size_t)(T * ldy));
    double *ref = malloc(sizeof(double) * (size_t)(T * N));
    double *mag = malloc(sizeof(double) * (size_t)(T * N));
    if (!xbuf || !wbuf || !ybuf || !y0 || !yb || !ref || !mag) {
        CHECK(!"out of memory");
        goto out;
    }
    float *X = xbuf + 1, *Y = ybuf + 1;
    void *W = wbuf + esz;
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < ldx; k++)
            X[t * ldx + k] = k < K ? (float)rnd() : NAN;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < ldw; k++) {
            if (k < K)
                w_set(W, wt, n * ldw + k, (float)rnd());
            else
                w_set_nan(W, wt, n * ldw + k);
        }
    for (int64_t i = 0; i < T * ldy; i++)
        y0[i] = i % ldy < N ? (float)(4.0 * rnd()) : Y_SENTINEL;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0, m = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)X[t * ldx + k] * (double)w_get(W, wt, n * ldw + k);
                s += p;
                m += fabs(p);
            }
            ref[t * N + n] = s;
            mag[t * N + n] = m;
        }

    for (int s = 0; s < g_n_subjects; s++) {
        const subject *sub = &g_subjects[s];
        for (int acc = 0; acc < 2; acc++) {
            memcpy(Y, y0, sizeof(float) * (size_t)(T * ldy));
            sub->k->matmul(Y, ldy, X, ldx, W, wt, ldw, T, N, K, acc);
            int bad = 0;
            for (int64_t t = 0; t < T; t++) {
                for (int64_t n = 0; n < N; n++) {
                    double base = acc ? y0[t * ldy + n] : 0.0;
                    double want = base + ref[t * N + n];
                    double tol = 1e-5 * (mag[t * N + n] + fabs(base)) + 1e-30;
                    double got = Y[t * ldy + n];
                    if (!(fabs(got - want) <= tol) && bad++ < 3)
                        CHECKF(0, "%s %s T=%lld N=%lld K=%lld acc=%d: Y[%lld,%lld]=%.9g want %.9g "
                               "(tol %.3g)",
                               sub->name, lp_dtype_name(wt), (long long)T, (long long)N,
                               (long long)K, acc, (long long)t, (long long)n, got, want, tol);
                }
                for (int64_t n = N; n < ldy && t * ldy + n < T * ldy; n++)
                    if (Y[t * ldy + n] != Y_SENTINEL && bad++ < 3)
                        CHECKF(0, "%s: wrote Y padding at t=%lld", sub->name, (long long)t);
            }
            CHECKF(bad == 0, "%s %s T=%lld N=%lld K=%lld acc=%d: %d bad elements", sub->name,
                   lp_dtype_name(wt), (long long)T, (long long)N, (long long)K, acc, bad);
            if (!acc)
                memcpy(yb, Y, sizeof(float) * (size_t)(T * ldy));
        }
        /* batch independence: each row alone gives the batched bits */
        int diff = 0;
        for (int64_t t = 0; t < T; t++) {
            float *yr = Y + t * ldy;
            memcpy(yr, y0 + t * ldy, sizeof(float) * (size_t)N);
            sub->k->matmul(yr, ldy, X + t * ldx, ldx, W, wt, ldw, 1, N, K, false);
            if (memcmp(yr, yb + t * ldy, sizeof(float) * (size_t)N))
                diff++;
        }
        CHECKF(diff == 0, "%s %s T=%lld N=%lld K=%lld: %d rows differ run alone vs batched",
               sub->name, lp_dtype_name(wt), (long long)T, (long long)N, (long long)K, diff);
    }
out:
    free(xbuf);
    free(wbuf);
    free(ybuf);
    free(y0);
    free(yb);
    free(ref);
    free(mag);
}

static void test_matmul_grid(void) {
    static const int64_t Ts[] = {1, 2, 3, 5, 16, 33, 100};
    static const int64_t Ns[] = {1, 7, 64, 130};
    static const int64_t Ks[] = {1, 15, 16, 17, 64, 255, 256, 1000};
    static const lp_dtype dts[] = {LP_DTYPE_BF16, LP_DTYPE_F16, LP_DTYPE_F32};
    for (size_t d = 0; d < LP_ARRAY_LEN(dts); d++)
        for (size_t i = 0; i < LP_ARRAY_LEN(Ts); i++)
            for (size_t j = 0; j < LP_ARRAY_LEN(Ns); j++)
                for (size_t k = 0; k < LP_ARRAY_LEN(Ks); k++)
                    check_matmul(dts[d], Ts[i], Ns[j], Ks[k]);
    /* long rows: several packing passes (super-panels) and panels of 16 */
    check_matmul(LP_DTYPE_BF16, 100, 9, 20000);
    check_matmul(LP_DTYPE_F16, 70, 5, 20001);
}

/* Same bits whatever the OpenMP thread count (and so whatever the split). */
static void test_matmul_threads(void) {
    const int64_t T = 37, N = 300, K = 515;
    float *X = malloc(sizeof(float) * (size_t)(T * K));
    uint16_t *W = malloc(sizeof(uint16_t) * (size_t)(N * K));
    float *Y1 = malloc(sizeof(float) * (size_t)(T * N));
    float *Y2 = malloc(sizeof(float) * (size_t)(T * N));
    if (!X || !W || !Y1 || !Y2) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int64_t i = 0; i < T * K; i++)
        X[i] = (float)rnd();
    for (int64_t i = 0; i < N * K; i++)
        W[i] = lp__f32_to_bf16((float)rnd());
    int saved = omp_get_max_threads();
    for (int s = 0; s < g_n_subjects; s++) {
        omp_set_num_threads(1);
        g_subjects[s].k->matmul(Y1, N, X, K, W, LP_DTYPE_BF16, K, T, N, K, false);
        for (int th = 2; th <= 5; th += 3) {
            omp_set_num_threads(th);
            g_subjects[s].k->matmul(Y2, N, X, K, W, LP_DTYPE_BF16, K, T, N, K, false);
            CHECKF(!memcmp(Y1, Y2, sizeof(float) * (size_t)(T * N)),
                   "%s: 1 thread and %d threads differ", g_subjects[s].name, th);
        }
    }
    omp_set_num_threads(saved);
out:
    free(X);
    free(W);
    free(Y1);
    free(Y2);
}

/* K = 0 overwrites with zeros (or leaves Y alone when accumulating); empty
 * T or N touch nothing. */
static void test_matmul_degenerate(void) {
    float y[6] = {1, 2, 3, 4, 5, 6};
    float x[2] = {1, 1};
    uint16_t w[2] = {0x3f80, 0x3f80};
    for (int s = 0; s < g_n_subjects; s++) {
        const lp__cpu_kernels *k = g_subjects[s].k;
        float z[6];
        memcpy(z, y, sizeof z);
        k->matmul(z, 3, x, 2, w, LP_DTYPE_BF16, 2, 2, 3, 0, true);
        CHECK(!memcmp(z, y, sizeof z));
        k->matmul(z, 3, x, 2, w, LP_DTYPE_BF16, 2, 0, 3, 2, false);
        k->matmul(z, 3, x, 2, w, LP_DTYPE_BF16, 2, 2, 0, 2, false);
        CHECK(!memcmp(z, y, sizeof z));
        k->matmul(z, 3, x, 2, w, LP_DTYPE_BF16, 2, 2, 3, 0, false);
        for (int i = 0; i < 6; i++)
            CHECKF(z[i] == 0.0f, "%s: K=0 did not zero Y", g_subjects[s].name);
    }
}

/* ---- dot, axpy, to_f32 ------------------------------------------------------------ */

static void test_vector_ops(void) {
    static const int64_t ns[] = {0, 1, 7, 15, 16, 17, 31, 63, 64, 65, 1000, 4099};
    for (size_t i = 0; i < LP_ARRAY_LEN(ns); i++) {
        int64_t n = ns[i];
        float *a = malloc(sizeof(float) * (size_t)(n + 2));
        float *b = malloc(sizeof(float) * (size_t)(n + 2));
        float *y = malloc(sizeof(float) * (size_t)(n + 2));
        float *y0 = malloc(sizeof(float) * (size_t)(n + 2));
        if (!a || !b || !y || !y0) {
            CHECK(!"out of memory");
            goto next;
        }
        for (int64_t j = 0; j < n + 2; j++) {
            a[j] = (float)rnd();
            b[j] = (float)rnd();
            y0[j] = (float)rnd();
        }
        double ref = 0, mag = 0;
        for (int64_t j = 0; j < n; j++) {
            ref += (double)a[j + 1] * b[j + 1];
            mag += fabs((double)a[j + 1] * b[j + 1]);
        }
        const float alpha = 0.7f;
        for (int s = 0; s < g_n_subjects; s++) {
            const lp__cpu_kernels *k = g_subjects[s].k;
            float d = k->dot_f32(a + 1, b + 1, n); /* misaligned on purpose */
            CHECKF(fabs(d - ref) <= 1e-5 * mag + 1e-30, "%s dot n=%lld: %.9g want %.9g",
                   g_subjects[s].name, (long long)n, d, ref);
            memcpy(y, y0, sizeof(float) * (size_t)(n + 2));
            k->axpy_f32(y + 1, alpha, a + 1, n);
            int bad = y[0] != y0[0] || y[n + 1] != y0[n + 1];
            for (int64_t j = 1; j <= n; j++) {
                double want = (double)y0[j] + (double)alpha * a[j];
                double tol = 2.5e-7 * (fabs(y0[j]) + fabs((double)alpha * a[j])) + 1e-30;
                bad += !(fabs(y[j] - want) <= tol);
            }
            CHECKF(bad == 0, "%s axpy n=%lld: %d bad", g_subjects[s].name, (long long)n, bad);
        }
    next:
        free(a);
        free(b);
        free(y);
        free(y0);
    }
}

/* Every bf16 and f16 bit pattern converts exactly (NaN stays NaN). */
static void test_to_f32(void) {
    const int64_t n = 65536;
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(n + 1));
    float *f = malloc(sizeof(float) * (size_t)(n + 1));
    float *src = malloc(sizeof(float) * 37);
    if (!h || !f || !src) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        h[i + 1] = (uint16_t)i;
    for (int i = 0; i < 37; i++)
        src[i] = (float)rnd();
    for (int s = 0; s < g_n_subjects; s++) {
        const lp__cpu_kernels *k = g_subjects[s].k;
        for (int d = 0; d < 2; d++) {
            lp_dtype t = d ? LP_DTYPE_F16 : LP_DTYPE_BF16;
            f[n - 1] = Y_SENTINEL;
            k->to_f32(f, h + 1, t, n - 1); /* odd length, misaligned source */
            int bad = f[n - 1] != Y_SENTINEL;
            for (int64_t i = 0; i < n - 1; i++) {
                float want = w_get(h + 1, t, i);
                bad += isnan(want) ? !isnan(f[i]) : memcmp(&f[i], &want, 4) != 0;
            }
            CHECKF(bad == 0, "%s to_f32 %s: %d bad", g_subjects[s].name, lp_dtype_name(t), bad);
        }
        k->to_f32(f, src, LP_DTYPE_F32, 37);
        CHECKF(!memcmp(f, src, 37 * sizeof(float)), "%s to_f32 F32", g_subjects[s].name);
    }
out:
    free(h);
    free(f);
    free(src);
}

/* ---- dispatch ------------------------------------------------------------------------ */

static void test_choose(void) {
    const unsigned all = 7, no512 = 3, none = 1;
    int level = lp__log_level();
    lp__log_set_level(LP_LOG_ERROR); /* the fallbacks below warn */
    CHECK(lp__cpu_isa_choose(NULL, all) == LP_ISA_AVX512);
    CHECK(lp__cpu_isa_choose("", no512) == LP_ISA_AVX2);
    CHECK(lp__cpu_isa_choose("auto", none) == LP_ISA_SCALAR);
    CHECK(lp__cpu_isa_choose("scalar", all) == LP_ISA_SCALAR);
    CHECK(lp__cpu_isa_choose("avx2", all) == LP_ISA_AVX2);
    CHECK(lp__cpu_isa_choose("avx512", all) == LP_ISA_AVX512);
    CHECK(lp__cpu_isa_choose("avx512", no512) == LP_ISA_AVX2);
    CHECK(lp__cpu_isa_choose("avx2", none) == LP_ISA_SCALAR);
    CHECK(lp__cpu_isa_choose("sse9", all) == LP_ISA_AVX512);
    CHECK(lp__cpu_isa_choose("AVX2", no512) == LP_ISA_AVX2); /* unknown: best */
    lp__log_set_level(level);
    CHECK(!strcmp(lp__cpu_isa_name(LP_ISA_AVX512), "avx512"));
    CHECK(lp__cpu_kernels_for(LP_ISA_SCALAR) == &lp__cpu_kernels_scalar);
}

#if defined(__clang__) /* clang (14) knows no "f16c" here; every AVX2 CPU has it */
#define CPUID_F16C true
#else
#define CPUID_F16C __builtin_cpu_supports("f16c")
#endif

/* Pick the subjects: every ISA this CPU runs. An ISA whose CPUID features
 * are all present but that cannot be selected is a detection bug: FAIL
 * rather than skip. */
static void pick_subjects(void) {
    /* LORAPLEX_CPU_ISA is read at first use (set in main before any use) */
    CHECKF(lp__cpu_isa() == LP_ISA_SCALAR, "LORAPLEX_CPU_ISA=scalar not honoured: %s",
           lp__cpu_isa_name(lp__cpu_isa()));
    __builtin_cpu_init();
    bool cpuid[3] = {
        true,
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CPUID_F16C,
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"),
    };
    char skipped[64] = "";
    for (int i = LP_ISA_SCALAR; i <= LP_ISA_AVX512; i++) {
        lp_isa isa = (lp_isa)i;
        if (lp__cpu_isa_set(isa)) {
            CHECK(lp__cpu_isa() == isa);
            g_subjects[g_n_subjects++] = (subject){lp__cpu_isa_name(isa), lp__cpu_kernels_for(isa)};
        } else {
            CHECKF(!cpuid[i], "CPUID reports %s but it cannot be selected",
                   lp__cpu_isa_name(isa));
            strncat(skipped, " ", sizeof skipped - strlen(skipped) - 1);
            strncat(skipped, lp__cpu_isa_name(isa), sizeof skipped - strlen(skipped) - 1);
        }
    }
    if (lp__cpu_has_avx512bf16())
        g_subjects[g_n_subjects++] = (subject){"avx512-dpbf16", &lp__cpu_kernels_avx512_dpbf16};
    else
        strncat(skipped, " avx512-dpbf16", sizeof skipped - strlen(skipped) - 1);
    if (cpuid[LP_ISA_AVX512] || __builtin_cpu_supports("avx512f"))
        CHECKF(g_n_subjects > 1, "CPUID says avx512 but only the scalar kernels can run");
    lp__cpu_isa_set(lp__cpu_isa_detect());
    printf("testing:");
    for (int s = 0; s < g_n_subjects; s++)
        printf(" %s", g_subjects[s].name);
    printf("; skipped (not supported here):%s\n", *skipped ? skipped : " none");
}

int main(void) {
    setenv("LORAPLEX_CPU_ISA", "scalar", 1);
    test_choose();
    pick_subjects();
    test_matmul_grid();
    test_matmul_threads();
    test_matmul_degenerate();
    test_vector_ops();
    test_to_f32();
    return lp_test_finish("test_cpu_kernels");
}
