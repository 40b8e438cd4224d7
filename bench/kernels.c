/* kernels.c - bench_kernels: for every CPU kernel ISA, decode matmul weight
 * streaming against the machine's copy bandwidth, and prefill GFLOP/s.
 *
 * usage: OMP_NUM_THREADS=n bench_kernels [isa...]   (default: all supported;
 *        names: scalar avx2 avx512 avx512-dpbf16)
 *
 * Copy bandwidth: the OpenMP threads memcpy disjoint slices of a 1 GiB buffer
 * into another; counted as bytes READ per second (1 GiB / time), the same
 * way the matmul is counted (weight bytes read per second), so the ratio is
 * "how close does the matmul get to the rate a copy reads memory". A copy
 * also writes 1 GiB, so a pure read stream (also printed: the threads sum
 * the buffer with the ISA's dot kernel) is faster than the copy's read rate.
 * All figures are medians; the decode shapes cycle over 8 weight matrices of
 * 32 MiB each (256 MiB), so weights come from DRAM, not cache. The copy
 * buffers are 64-byte aligned; the weights start 16 bytes past a 64-byte
 * boundary (as malloc'd or file-mapped tensors often do), so 64-byte vector
 * loads of them straddle cache lines, the realistic case. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "util/util.h"

#define GIB ((size_t)1 << 30)
#define N_MATS 8
#define DEC_N 4096
#define DEC_K 4096
#define PRE_T 256
#define PRE_NK 2048

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t g_rng = 88172645463325252ull;
static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 52) - 1.0);
}

/* Bytes read per second by a threaded memcpy of `bytes`, median of 5 (after
 * one untimed copy). */
static double copy_bw(char *dst, const char *src, size_t bytes) {
    double t[6];
    for (int r = -1; r < 5; r++) {
        double t0 = lp__now();
#pragma omp parallel
        {
            size_t nt = (size_t)omp_get_num_threads(), i = (size_t)omp_get_thread_num();
            size_t chunk = (bytes / nt) & ~(size_t)4095;
            size_t off = i * chunk, len = i + 1 == nt ? bytes - off : chunk;
            memcpy(dst + off, src + off, len);
        }
        if (r >= 0)
            t[r] = lp__now() - t0;
    }
    return (double)bytes / median(t, 5);
}

/* Bytes read per second summing `n` floats with the kernels' dot, median of 5. */
static double read_bw(const lp__cpu_kernels *k, const float *a, size_t n) {
    double t[5];
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = lp__now();
        float s = 0;
#pragma omp parallel reduction(+ : s)
        {
            size_t nt = (size_t)omp_get_num_threads(), i = (size_t)omp_get_thread_num();
            size_t chunk = n / nt, off = i * chunk, len = i + 1 == nt ? n - off : chunk;
            s += k->dot_f32(a + off, a + off, (int64_t)len);
        }
        t[r] = lp__now() - t0;
        sink += s;
    }
    (void)sink;
    return (double)(n * sizeof(float)) / median(t, 5);
}

/* Median seconds per decode call, cycling over the N_MATS matrices. */
static double time_decode(const lp__cpu_kernels *k, const uint16_t *w, lp_dtype wt,
                          int64_t T, const float *X, float *Y, int reps) {
    double t[N_MATS * 8];
    int n = 0;
    size_t mat = (size_t)DEC_N * DEC_K;
    for (int m = 0; m < N_MATS; m++) /* warm-up */
        k->matmul(Y, DEC_N, X, DEC_K, w + m * mat, wt, DEC_K, T, DEC_N, DEC_K, false);
    for (int r = 0; r < reps; r++)
        for (int m = 0; m < N_MATS; m++) {
            double t0 = lp__now();
            k->matmul(Y, DEC_N, X, DEC_K, w + m * mat, wt, DEC_K, T, DEC_N, DEC_K, false);
            t[n++] = lp__now() - t0;
        }
    return median(t, n);
}

static double time_prefill(const lp__cpu_kernels *k, const uint16_t *w, lp_dtype wt,
                           const float *X, float *Y, int reps) {
    double t[16];
    k->matmul(Y, PRE_NK, X, PRE_NK, w, wt, PRE_NK, PRE_T, PRE_NK, PRE_NK, false);
    for (int r = 0; r < reps; r++) {
        double t0 = lp__now();
        k->matmul(Y, PRE_NK, X, PRE_NK, w, wt, PRE_NK, PRE_T, PRE_NK, PRE_NK, false);
        t[r] = lp__now() - t0;
    }
    return median(t, reps);
}

static void fill_weights(uint16_t *w, size_t n, lp_dtype wt) {
    for (size_t i = 0; i < n; i++)
        w[i] = wt == LP_DTYPE_BF16 ? lp__f32_to_bf16(rnd()) : lp__f32_to_f16(rnd());
}

static bool wanted(int argc, char **argv, const char *name) {
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return true;
    return false;
}

int main(int argc, char **argv) {
    struct {
        const char *name;
        const lp__cpu_kernels *k;
        bool ok;
    } isas[] = {
        {"scalar", &lp__cpu_kernels_scalar, true},
        {"avx2", &lp__cpu_kernels_avx2, lp__cpu_isa_supported(LP_ISA_AVX2)},
        {"avx512", &lp__cpu_kernels_avx512, lp__cpu_isa_supported(LP_ISA_AVX512)},
        {"avx512-dpbf16", &lp__cpu_kernels_avx512_dpbf16, lp__cpu_has_avx512bf16()},
    };
    size_t mat = (size_t)DEC_N * DEC_K;
    char *src = aligned_alloc(64, GIB), *dst = aligned_alloc(64, GIB);
    char *wb_raw = aligned_alloc(64, N_MATS * mat * 2 + 64);
    char *wf_raw = aligned_alloc(64, N_MATS * mat * 2 + 64);
    uint16_t *wb = wb_raw ? (uint16_t *)(wb_raw + 16) : NULL;
    uint16_t *wf = wf_raw ? (uint16_t *)(wf_raw + 16) : NULL;
    float *X = malloc(sizeof(float) * PRE_T * PRE_NK);
    float *Y = malloc(sizeof(float) * PRE_T * PRE_NK);
    int rc = 0;
    if (!src || !dst || !wb || !wf || !X || !Y) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < GIB / sizeof(float); i++)
        ((float *)src)[i] = 1.0f / (float)(i % 1000 + 1);
    memset(dst, 0, GIB);
    fill_weights(wb, N_MATS * mat, LP_DTYPE_BF16);
    fill_weights(wf, N_MATS * mat, LP_DTYPE_F16);
    for (size_t i = 0; i < (size_t)PRE_T * PRE_NK; i++)
        X[i] = rnd();
    memset(Y, 0, sizeof(float) * PRE_T * PRE_NK);

    printf("bench_kernels: %d OpenMP threads; decode N=K=%d over %d matrices "
           "(%zu MiB each), prefill T=%d N=K=%d; medians\n",
           omp_get_max_threads(), DEC_N, N_MATS, mat * 2 >> 20, PRE_T, PRE_NK);
    printf("%-14s %8s %8s | %-4s %3s %8s %8s %6s | %9s\n", "isa", "copy", "read", "w",
           "T", "ms", "GB/s", "/copy", "prefill");
    printf("%-14s %8s %8s | %-4s %3s %8s %8s %6s | %9s\n", "", "GB/s", "GB/s", "", "", "",
           "", "", "GFLOP/s");
    for (size_t i = 0; i < LP_ARRAY_LEN(isas); i++) {
        if (!isas[i].ok || !wanted(argc, argv, isas[i].name)) {
            if (!isas[i].ok)
                printf("%-14s (not supported on this CPU)\n", isas[i].name);
            continue;
        }
        const lp__cpu_kernels *k = isas[i].k;
        bool slow = !strcmp(isas[i].name, "scalar");
        double cbw = copy_bw(dst, src, GIB);
        double rbw = read_bw(k, (const float *)src, GIB / sizeof(float));
        for (int d = 0; d < 2; d++) {
            lp_dtype wt = d ? LP_DTYPE_F16 : LP_DTYPE_BF16;
            const uint16_t *w = d ? wf : wb;
            double pt = time_prefill(k, w, wt, X, Y, slow ? 3 : 7);
            double gflops = 2.0 * PRE_T * PRE_NK * PRE_NK / pt * 1e-9;
            for (int64_t T = 1; T <= 16; T += 15) {
                double s = time_decode(k, w, wt, T, X, Y, slow ? 1 : 5);
                double wbw = (double)(mat * 2) / s;
                printf("%-14s %8.2f %8.2f | %-4s %3lld %8.3f %8.2f %6.2f | %9.1f\n",
                       isas[i].name, cbw * 1e-9, rbw * 1e-9, lp_dtype_name(wt), (long long)T,
                       s * 1e3, wbw * 1e-9, wbw / cbw, gflops);
            }
        }
        fflush(stdout);
    }
out:
    free(src);
    free(dst);
    free(wb_raw);
    free(wf_raw);
    free(X);
    free(Y);
    return rc;
}
