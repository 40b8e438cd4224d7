/* cpu_bench.c - CPU benchmark driver for bench/cpu-decode and bench/cpu-lora:
 * measures, in one run, the machine's memory bandwidth and peak FLOP/s, then
 * decode and prefill speed of a model (optionally with adapters), and prints
 * every speed as a ratio to those floors or to the base model.
 *
 *   cpu_bench machine
 *   cpu_bench decode MODEL_DIR [--batch 1,16] [--steps N] [--device cpu|cuda]
 *   cpu_bench prefill MODEL_DIR [--tokens N]
 *   cpu_bench lora MODEL_DIR ADAPTER_DIR... [--rows 16] [--steps N] [--device cpu|cuda]
 * --device (default cpu) picks the backend decode and lora time (lp_backend_new),
 * so the GPU bench scripts use the same driver; the machine floors stay the CPU's.
 * Output: one JSON object per measurement on stdout. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "loraplex/adapter.h"
#include "util/util.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Copy bandwidth (bytes read + bytes written per second) over 1 GiB, all threads. */
static double copy_bandwidth(void) {
    size_t n = (size_t)1 << 30;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b)
        return 0;
#pragma omp parallel for
    for (size_t i = 0; i < n; i += 4096) {
        a[i] = (char)i;
        b[i] = 0;
    }
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = lp__now();
        int nt = omp_get_max_threads();
#pragma omp parallel for
        for (int k = 0; k < nt; k++) {
            size_t lo = n / (size_t)nt * (size_t)k, hi = k == nt - 1 ? n : n / (size_t)nt * (size_t)(k + 1);
            memcpy(b + lo, a + lo, hi - lo);
        }
        t[r] = lp__now() - t0;
    }
    double bw = 2.0 * (double)n / median(t, 5);
    free(a);
    free(b);
    return bw;
}

/* Read bandwidth: sum a 1 GiB buffer of floats with AVX2, all threads. */
__attribute__((target("avx2,fma"))) static double read_bandwidth(void) {
    size_t n = ((size_t)1 << 30) / sizeof(float);
    float *a = malloc(n * sizeof(float));
    if (!a)
        return 0;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++)
        a[i] = 1.0f;
    double t[5];
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = lp__now();
        float total = 0;
#pragma omp parallel for reduction(+ : total)
        for (size_t c = 0; c < n; c += 1 << 16) {
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            size_t end = c + (1 << 16) < n ? c + (1 << 16) : n;
            for (size_t i = c; i + 16 <= end; i += 16) {
                s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
                s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
            }
            float tmp[8];
            _mm256_storeu_ps(tmp, _mm256_add_ps(s0, s1));
            for (int j = 0; j < 8; j++)
                total += tmp[j];
        }
        sink = total;
        t[r] = lp__now() - t0;
    }
    (void)sink;
    free(a);
    return (double)(n * sizeof(float)) / median(t, 5);
}

/* Peak fp32 FLOP/s: independent FMA chains in registers, all threads. */
__attribute__((target("avx512f"))) static double peak_flops_avx512(void) {
    const long iters = 20000000;
    double t[3];
    for (int r = 0; r < 3; r++) {
        double t0 = lp__now();
        float sink = 0;
#pragma omp parallel reduction(+ : sink)
        {
            __m512 a0 = _mm512_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            for (long i = 0; i < iters; i++) {
                a0 = _mm512_fmadd_ps(a0, m, c);
                a1 = _mm512_fmadd_ps(a1, m, c);
                a2 = _mm512_fmadd_ps(a2, m, c);
                a3 = _mm512_fmadd_ps(a3, m, c);
                a4 = _mm512_fmadd_ps(a4, m, c);
                a5 = _mm512_fmadd_ps(a5, m, c);
                a6 = _mm512_fmadd_ps(a6, m, c);
                a7 = _mm512_fmadd_ps(a7, m, c);
            }
            __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                     _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
            sink += _mm512_reduce_add_ps(s);
        }
        t[r] = lp__now() - t0;
        if (sink == 12345.0f)
            printf(" ");
    }
    return (double)omp_get_max_threads() * iters * 8 * 16 * 2 / median(t, 3);
}

__attribute__((target("avx2,fma"))) static double peak_flops_avx2(void) {
    const long iters = 20000000;
    double t[3];
    for (int r = 0; r < 3; r++) {
        double t0 = lp__now();
        float sink = 0;
#pragma omp parallel reduction(+ : sink)
        {
            __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
            for (long i = 0; i < iters; i++) {
                a0 = _mm256_fmadd_ps(a0, m, c);
                a1 = _mm256_fmadd_ps(a1, m, c);
                a2 = _mm256_fmadd_ps(a2, m, c);
                a3 = _mm256_fmadd_ps(a3, m, c);
                a4 = _mm256_fmadd_ps(a4, m, c);
                a5 = _mm256_fmadd_ps(a5, m, c);
                a6 = _mm256_fmadd_ps(a6, m, c);
                a7 = _mm256_fmadd_ps(a7, m, c);
            }
            float tmp[8];
            _mm256_storeu_ps(tmp, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                                _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))));
            for (int j = 0; j < 8; j++)
                sink += tmp[j];
        }
        t[r] = lp__now() - t0;
        if (sink == 12345.0f)
            printf(" ");
    }
    return (double)omp_get_max_threads() * iters * 8 * 8 * 2 / median(t, 3);
}

static int32_t g_prompt[4096];

typedef struct runner {
    lp_model *m;
    lp_backend *be;
    lp_adapter *ads[64];
    int n_ads;
    int rows_cap, ctx;
    int32_t *blocks; /* (rows_cap, ctx / block) */
    int nb_per_row;
} runner;

static int runner_init(runner *r, const char *model_dir, const char *device, int rows, int ctx, int max_tokens,
                       lp_error *err) {
    memset(r, 0, sizeof *r);
    if (lp_model_load(model_dir, &r->m, NULL, NULL, err))
        return -1;
    lp_backend_params bp = lp_backend_default_params();
    bp.block_size = 16;
    r->nb_per_row = (ctx + 15) / 16;
    bp.n_kv_blocks = rows * r->nb_per_row;
    bp.max_rows = rows;
    bp.max_logit_rows = rows;
    bp.max_tokens = max_tokens;
    bp.max_adapters = 64;
    r->rows_cap = rows;
    r->ctx = ctx;
    if (lp_backend_new(device, r->m, &bp, &r->be, err))
        return -1;
    r->blocks = malloc(sizeof(int32_t) * (size_t)bp.n_kv_blocks);
    for (int i = 0; i < bp.n_kv_blocks; i++)
        r->blocks[i] = i;
    int vocab = lp_model_get_config(r->m)->vocab;
    for (int i = 0; i < 4096; i++)
        g_prompt[i] = (int32_t)((i * 7919 + 13) % vocab);
    return 0;
}

static void runner_free(runner *r) {
    lp_backend_free(r->be);
    for (int i = 0; i < r->n_ads; i++)
        lp_adapter_free(r->ads[i]);
    lp_model_free(r->m);
    free(r->blocks);
}

/* Decode tokens/s for `rows` rows at context `prefix`, each row using
 * adapter slot slot_of[row] (-1 = base). Median over `steps` steps. */
static double decode_rate(runner *r, int rows, int prefix, const int *slot_of, int steps, lp_error *err) {
    int vocab = lp_model_get_config(r->m)->vocab;
    float *logits = malloc(sizeof(float) * (size_t)vocab * (size_t)rows);
    lp_batch_row br[256];
    for (int i = 0; i < rows; i++) /* prefill each row alone */
    {
        br[0] = (lp_batch_row){.tokens = g_prompt, .n_tokens = prefix, .pos0 = 0,
                               .blocks = r->blocks + (size_t)i * (size_t)r->nb_per_row, .adapter = slot_of[i],
                               .adapter_scale = 1.0f, .logits = LP_LOGITS_NONE};
        if (lp_backend_forward(r->be, br, 1, NULL, err))
            return -1;
    }
    double *t = malloc(sizeof(double) * (size_t)steps);
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < rows; i++)
            br[i] = (lp_batch_row){.tokens = g_prompt + prefix + s, .n_tokens = 1, .pos0 = prefix + s,
                                   .blocks = r->blocks + (size_t)i * (size_t)r->nb_per_row, .adapter = slot_of[i],
                                   .adapter_scale = 1.0f, .logits = LP_LOGITS_LAST};
        double t0 = lp__now();
        if (lp_backend_forward(r->be, br, rows, logits, err))
            return -1;
        t[s] = lp__now() - t0;
    }
    double med = median(t, steps);
    free(t);
    free(logits);
    return rows / med;
}

static void parse_list(const char *s, int *v, int *n) {
    *n = 0;
    while (*s && *n < 16) {
        v[(*n)++] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',')
            s++;
        else
            break;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cpu_bench machine | decode MODEL [--batch 1,16] [--steps N] [--device D] | "
                        "prefill MODEL [--tokens N] | lora MODEL ADAPTER... [--rows N] [--steps N] [--device D]\n");
        return 2;
    }
    lp_error err = {0};
    const char *mode = argv[1];
    int batches[16] = {1, 16}, n_batches = 2, steps = 16, tokens = 256, rows = 16;
    const char *model = argc > 2 ? argv[2] : NULL;
    const char *adapters[64];
    const char *device = "cpu";
    int n_adapters = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            parse_list(argv[++i], batches, &n_batches);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (n_adapters < 64)
            adapters[n_adapters++] = argv[i];
    }
    if (!strcmp(mode, "machine")) {
        double cbw = copy_bandwidth(), rbw = read_bandwidth();
        double pk = __builtin_cpu_supports("avx512f") ? peak_flops_avx512() : peak_flops_avx2();
        printf("{\"what\":\"machine\",\"threads\":%d,\"copy_bw_GBps\":%.2f,\"read_bw_GBps\":%.2f,"
               "\"peak_fp32_GFLOPs\":%.1f}\n", omp_get_max_threads(), cbw / 1e9, rbw / 1e9, pk / 1e9);
        return 0;
    }
    if (!model) {
        fprintf(stderr, "cpu_bench: %s needs MODEL_DIR\n", mode);
        return 2;
    }
    if (strcmp(device, "cpu") && strcmp(mode, "decode") && strcmp(mode, "lora")) {
        fprintf(stderr, "cpu_bench: --device %s: only decode and lora run on other devices\n", device);
        return 2;
    }
    runner r;
    int max_rows = 1;
    for (int i = 0; i < n_batches; i++)
        max_rows = LP_MAX(max_rows, batches[i]);
    max_rows = LP_MAX(max_rows, rows);
    if (runner_init(&r, model, device, max_rows, 64 + steps + tokens, LP_MAX(tokens, 64), &err)) {
        fprintf(stderr, "cpu_bench: %s\n", err.msg);
        return 1;
    }
    double wbytes = (double)lp_model_weight_bytes(r.m);
    /* the floors, measured in this same run */
    double copy_bw = 0, peak = 0;
    if (!strcmp(mode, "decode"))
        copy_bw = copy_bandwidth();
    if (!strcmp(mode, "prefill"))
        peak = __builtin_cpu_supports("avx512f") ? peak_flops_avx512() : peak_flops_avx2();
    int base_slots[256];
    for (int i = 0; i < 256; i++)
        base_slots[i] = -1;
    if (!strcmp(mode, "decode")) {
        for (int b = 0; b < n_batches; b++) {
            double tps = decode_rate(&r, batches[b], 32, base_slots, steps, &err);
            if (tps < 0) {
                fprintf(stderr, "cpu_bench: %s\n", err.msg);
                return 1;
            }
            double wbps = wbytes * tps / batches[b];
            printf("{\"what\":\"decode\",\"model\":\"%s\",\"device\":\"%s\",\"batch\":%d,\"tokens_per_s\":%.2f,"
                   "\"weight_bytes\":%.0f,\"weight_GBps\":%.3f,\"copy_bw_GBps\":%.3f,\"ratio_to_bw\":%.3f}\n",
                   model, lp_backend_resolve(device), batches[b], tps, wbytes, wbps / 1e9, copy_bw / 1e9,
                   wbps / copy_bw);
        }
    } else if (!strcmp(mode, "prefill")) {
        lp_batch_row br = {.tokens = g_prompt, .n_tokens = tokens, .pos0 = 0, .blocks = r.blocks, .adapter = -1,
                           .adapter_scale = 1.0f, .logits = LP_LOGITS_LAST};
        int vocab = lp_model_get_config(r.m)->vocab;
        float *logits = malloc(sizeof(float) * (size_t)vocab);
        double t[5];
        for (int i = 0; i < 5; i++) {
            double t0 = lp__now();
            if (lp_backend_forward(r.be, &br, 1, logits, &err)) {
                fprintf(stderr, "cpu_bench: %s\n", err.msg);
                return 1;
            }
            t[i] = lp__now() - t0;
        }
        double med = median(t, 5);
        /* matmul FLOPs: 2 x (weights touched by every token) x tokens */
        const lp_model_config *c = lp_model_get_config(r.m);
        double per_tok = 0;
        int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
        per_tok = (double)c->n_layers * ((double)c->hidden * (q + 2 * kv) + (double)q * c->hidden +
                                         3.0 * c->hidden * c->ffn);
        double flops = 2.0 * per_tok * tokens + 2.0 * c->hidden * (double)c->vocab; /* lm_head: last token */
        double attn = 2.0 * 2.0 * c->n_layers * (double)q * tokens * (tokens + 1) / 2.0;
        double fl = (flops + attn) / med;
        printf("{\"what\":\"prefill\",\"model\":\"%s\",\"tokens\":%d,\"tokens_per_s\":%.1f,\"GFLOPs\":%.2f,"
               "\"peak_GFLOPs\":%.1f,\"ratio_to_peak\":%.3f}\n", model, tokens, tokens / med, fl / 1e9, peak / 1e9,
               fl / peak);
        free(logits);
    } else if (!strcmp(mode, "lora")) {
        for (int i = 0; i < n_adapters; i++) {
            if (lp_adapter_load(adapters[i], r.m, NULL, &r.ads[r.n_ads], &err) ||
                lp_backend_adapter_load(r.be, r.n_ads, r.ads[r.n_ads], &err)) {
                fprintf(stderr, "cpu_bench: %s\n", err.msg);
                return 1;
            }
            r.n_ads++;
        }
        if (r.n_ads < 1) {
            fprintf(stderr, "cpu_bench: lora needs at least one adapter\n");
            return 2;
        }
        int one[256], distinct[256];
        for (int i = 0; i < rows; i++) {
            one[i] = 0;
            distinct[i] = i % r.n_ads;
        }
        double adapter_bytes = (double)lp_adapter_get_info(r.ads[0])->bytes;
        struct {
            const char *name;
            const int *slots;
            int n_distinct;
        } cfgs[] = {{"base", base_slots, 0}, {"one_adapter", one, 1}, {"distinct_adapters", distinct, LP_MIN(rows, r.n_ads)}};
        double base_tps = 0;
        for (int k = 0; k < 3; k++) {
            double tps = decode_rate(&r, rows, 32, cfgs[k].slots, steps, &err);
            if (tps < 0) {
                fprintf(stderr, "cpu_bench: %s\n", err.msg);
                return 1;
            }
            if (k == 0)
                base_tps = tps;
            double predicted = wbytes / (wbytes + cfgs[k].n_distinct * adapter_bytes);
            printf("{\"what\":\"lora\",\"device\":\"%s\",\"config\":\"%s\",\"rows\":%d,\"adapters\":%d,"
                   "\"tokens_per_s\":%.2f,\"ratio_to_base\":%.3f,\"bytes_roofline_ratio\":%.3f,"
                   "\"adapter_bytes\":%.0f,\"weight_bytes\":%.0f}\n",
                   lp_backend_resolve(device), cfgs[k].name, rows, cfgs[k].n_distinct, tps, tps / base_tps, predicted,
                   adapter_bytes, wbytes);
        }
    } else {
        fprintf(stderr, "cpu_bench: unknown mode %s\n", mode);
        return 2;
    }
    runner_free(&r);
    return 0;
}
