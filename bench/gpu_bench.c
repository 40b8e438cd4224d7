/* gpu_bench.c - GPU benchmark driver for bench/gpu/run.sh: the device's copy
 * bandwidth, batched decode speed of a model on the CUDA backend (base, one
 * adapter, many distinct adapters) next to a bytes roofline measured in the
 * same process, and the time to first token with a cold vs a resident
 * adapter.
 *
 *   gpu_bench machine
 *   gpu_bench decode MODEL_DIR [--batch 1,32,128,256] [--isl 1000] [--osl 200]
 *                    [--adapters DIR1,DIR2,...] [--mode base|one|distinct[,...]]
 *                    [--steps N] [--warmup N]
 *   gpu_bench ttft MODEL_DIR --adapters DIR1,DIR2,... [--isl 1000] [--trials 10]
 *
 * --mode takes a comma list, measured in order in one process (one model
 * upload, one prefill): base (every row on the base model), one[:S] (every
 * row on adapter slot S, default 0), distinct[:K | :LO-HI] (row i on slot
 * i % K, or on LO + i % (HI - LO + 1); default all adapters given). Adapters
 * go to slots 0..n-1 in the order given.
 *
 * decode: one backend sized for the largest batch that fits in GPU memory
 * (block 16, KV for batch x (isl + osl) tokens; larger batches are skipped
 * with a line saying so); every row is prefilled once with isl random token
 * ids on the base model (forward calls of at most 2048 tokens, logits of the
 * last token only); then for each mode and batch, `warmup` untimed and
 * `steps` timed decode steps (default min(osl, 64)), each row adding one
 * token at positions isl, isl+1, ... (every measurement starts again at
 * isl, so all see the same contexts). Each step is timed on the host around
 * what the engine does per step: lp_backend_forward leaving the logits on
 * the GPU, then lp_backend_sample (greedy: one candidate per row comes back;
 * sample_ms is that call alone); --sample host instead copies every row's
 * logits to the host in the forward (the path before GPU sampling). Before
 * the timings, sample_check compares lp_backend_sample on up to 8 rows of
 * real logits (candidate counts 1-256, temperatures, adjustments, logprobs)
 * with the host implementation on the same logits copied out. Bytes
 * a step must move: the weights (lp_model_weight_bytes) + the KV cache read
 * (per row: context x layers x 2 x kv heads x head_dim x 2 bytes, at the
 * mean context of the timed steps) + the bf16 A and B of each distinct
 * adapter the step uses; the roofline time is those bytes over the copy
 * bandwidth measured at start (bytes read + written per second of a 2 GiB
 * device-to-device cudaMemcpy), and roofline_ratio = roofline / measured.
 * Not in the roofline: what comes back to the host (logits_bytes = batch x
 * vocab x 4 with --sample host, over PCIe; a few KB with GPU sampling),
 * which the measured time includes.
 *
 * ttft: per trial (a different adapter each, cycling through those given):
 * unstaged = lp_backend_adapter_load of an adapter in host memory as loaded
 * from its files + one prefill of isl tokens up to its logits; stage = the
 * lp_backend_adapter_stage the server's loader thread does when an adapter
 * enters the host tier (off the engine thread, so not part of a TTFT);
 * cold = load of the staged adapter + the prefill (the server's case of an
 * adapter in the host tier); warm = the prefill again with the adapter
 * resident; then the slot is unloaded and the staged copy dropped. p50 of
 * each, and of the two load calls alone.
 *
 * Output: one JSON object per measurement on stdout; a human table on stderr.
 * GPU_BENCH_FREE_GIB=X makes decode plan for X GiB of free GPU memory (to
 * check the skipping of batches whose KV cache does not fit). */
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "loraplex/adapter.h"
#include "loraplex/model.h"
#include "lora/adapter-impl.h"
#include "util/util.h"

#define MAX_LIST 64
#define MAX_ADAPTERS 256
#define MAX_MODES 16
#define BLOCK 16
#define PREFILL_TOKENS 2048
#define GiB (1024.0 * 1024.0 * 1024.0)

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Quantile q of v (sorted in place), linear between neighbours. */
static double quantile(double *v, int n, double q) {
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i >= n - 1)
        return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

/* ---- the device and its copy bandwidth ---- */

typedef struct machine_info {
    char name[256];
    int sms, cc_major, cc_minor;
    double mem_total; /* bytes */
    double copy_bytes;  /* size of one copy */
    double copy_bw;     /* bytes read + written per second */
    double h2d_bw;      /* pinned host to device, bytes per second (0 = not measured) */
} machine_info;

static int cuda_fail(const char *what, cudaError_t e) {
    fprintf(stderr, "gpu_bench: %s: %s (%s)\n", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return -1;
}

/* Device name, SMs, and the median of 10 timed device-to-device copies of
 * 2 GiB (1 GiB, then 256 MiB, when that much cannot be allocated). */
static int measure_machine(machine_info *mi) {
    memset(mi, 0, sizeof *mi);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        fprintf(stderr, "gpu_bench: no usable CUDA device: %s (%s)%s\n", cudaGetErrorString(e),
                cudaGetErrorName(e),
                e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                    ? "; this machine has no NVIDIA GPU or driver (libcuda.so.1), or a driver older than this "
                      "CUDA runtime"
                    : "");
        return -1;
    }
    if (n < 1) {
        fprintf(stderr, "gpu_bench: no CUDA device\n");
        return -1;
    }
    int dev = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess)
        return cuda_fail("cudaGetDevice", e);
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return cuda_fail("cudaGetDeviceProperties", e);
    snprintf(mi->name, sizeof mi->name, "%s", prop.name);
    mi->sms = prop.multiProcessorCount;
    mi->cc_major = prop.major;
    mi->cc_minor = prop.minor;
    mi->mem_total = (double)prop.totalGlobalMem;

    void *a = NULL, *b = NULL;
    size_t bytes = (size_t)2 << 30;
    for (; bytes >= ((size_t)256 << 20); bytes /= 2) {
        if (cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess)
            break;
        cudaGetLastError();
        if (a)
            cudaFree(a);
        a = b = NULL;
    }
    if (!a || !b) {
        fprintf(stderr, "gpu_bench: cannot allocate two 256 MiB buffers for the copy bandwidth\n");
        return -1;
    }
    cudaEvent_t e0 = NULL, e1 = NULL;
    double t[10];
    int rc = 0;
    if ((e = cudaMemset(a, 1, bytes)) != cudaSuccess || (e = cudaMemset(b, 0, bytes)) != cudaSuccess ||
        (e = cudaEventCreate(&e0)) != cudaSuccess || (e = cudaEventCreate(&e1)) != cudaSuccess) {
        rc = cuda_fail("copy bandwidth setup", e);
        goto done;
    }
    for (int r = 0; r < 3 + 10; r++) { /* 3 warm-up copies */
        float ms = 0;
        if ((e = cudaEventRecord(e0, 0)) != cudaSuccess ||
            (e = cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)) != cudaSuccess ||
            (e = cudaEventRecord(e1, 0)) != cudaSuccess || (e = cudaEventSynchronize(e1)) != cudaSuccess ||
            (e = cudaEventElapsedTime(&ms, e0, e1)) != cudaSuccess) {
            rc = cuda_fail("device-to-device copy", e);
            goto done;
        }
        if (r >= 3)
            t[r - 3] = ms * 1e-3;
    }
    mi->copy_bytes = (double)bytes;
    mi->copy_bw = 2.0 * (double)bytes / quantile(t, 10, 0.5);
    /* host to device from pinned memory, 256 MiB: the floor of an adapter upload */
    void *h = NULL;
    size_t hb = (size_t)256 << 20;
    if (cudaMallocHost(&h, hb) == cudaSuccess) {
        memset(h, 1, hb);
        for (int r = 0; r < 2 + 5; r++) {
            float ms = 0;
            if (cudaEventRecord(e0, 0) != cudaSuccess || cudaMemcpy(a, h, hb, cudaMemcpyHostToDevice) != cudaSuccess ||
                cudaEventRecord(e1, 0) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
                cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
                break;
            if (r >= 2)
                t[r - 2] = ms * 1e-3;
            if (r == 6)
                mi->h2d_bw = (double)hb / quantile(t, 5, 0.5);
        }
        cudaFreeHost(h);
    }
    cudaGetLastError();
done:
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return rc;
}

/* --device cpu (a check of this driver on machines without a GPU): the host's
 * memcpy bandwidth over 256 MiB stands in for the device's. */
static int measure_host(machine_info *mi) {
    memset(mi, 0, sizeof *mi);
    snprintf(mi->name, sizeof mi->name, "cpu");
    size_t bytes = (size_t)256 << 20;
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) {
        free(a);
        free(b);
        fprintf(stderr, "gpu_bench: out of host memory\n");
        return -1;
    }
    memset(a, 1, bytes);
    memset(b, 0, bytes);
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = lp__now();
        memcpy(b, a, bytes);
        t[r] = lp__now() - t0;
    }
    mi->copy_bytes = (double)bytes;
    mi->copy_bw = 2.0 * (double)bytes / quantile(t, 5, 0.5);
    free(a);
    free(b);
    return 0;
}

static void print_machine(const machine_info *mi) {
    printf("{\"what\":\"machine\",\"device\":\"%s\",\"sms\":%d,\"cc\":\"%d.%d\",\"mem_total_GiB\":%.2f,"
           "\"copy_bytes\":%.0f,\"copy_bw_GBps\":%.1f,\"h2d_pinned_GBps\":%.1f}\n",
           mi->name, mi->sms, mi->cc_major, mi->cc_minor, mi->mem_total / GiB, mi->copy_bytes, mi->copy_bw / 1e9,
           mi->h2d_bw / 1e9);
    fflush(stdout);
    if (mi->sms)
        fprintf(stderr, "device %s: %d SMs, compute %d.%d, %.1f GiB; copy bandwidth %.1f GB/s (read + written, %.0f MiB "
                        "device-to-device, median of 10); host to device %.1f GB/s (pinned, 256 MiB)\n",
                mi->name, mi->sms, mi->cc_major, mi->cc_minor, mi->mem_total / GiB, mi->copy_bw / 1e9,
                mi->copy_bytes / (1 << 20), mi->h2d_bw / 1e9);
    else
        fprintf(stderr, "host memcpy bandwidth %.1f GB/s (read + written, %.0f MiB, median of 5)\n", mi->copy_bw / 1e9,
                mi->copy_bytes / (1 << 20));
}

/* ---- arguments ---- */

typedef struct args {
    const char *model;
    int batches[MAX_LIST], n_batches;
    int isl, osl, steps, warmup, trials;
    const char *device; /* "cuda", or "cpu" to check this driver without a GPU */
    bool sample_host;   /* --sample host: every step copies all logits to the host */
    char *adapter_list; /* owned copy of --adapters, split in place */
    const char *adapters[MAX_ADAPTERS];
    int n_adapters;
    char *mode_list;
    const char *modes[MAX_MODES];
    int n_modes;
} args;

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gpu_bench: %s: expected an integer in %d..%d, got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int split_list(char *s, const char **items, int cap, const char *flag) {
    int n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == cap) {
            fprintf(stderr, "gpu_bench: %s: more than %d items\n", flag, cap);
            return -1;
        }
        items[n++] = t;
    }
    return n;
}

static const char k_usage[] =
    "usage: gpu_bench machine\n"
    "       gpu_bench decode MODEL_DIR [--batch 1,32,128,256] [--isl 1000] [--osl 200] [--adapters D1,D2,...]\n"
    "                        [--mode base|one[:S]|distinct[:K|:LO-HI][,...]] [--steps N] [--warmup N]\n"
    "                        [--sample gpu|host]\n"
    "       gpu_bench ttft MODEL_DIR --adapters D1,D2,... [--isl 1000] [--trials 10]\n"
    "       (decode and ttft take --device cpu to check this driver on a machine without a GPU)\n";

static int parse_args(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    a->batches[0] = 1, a->batches[1] = 32, a->batches[2] = 128, a->batches[3] = 256;
    a->n_batches = 4;
    a->isl = 1000, a->osl = 200, a->steps = -1, a->warmup = 2, a->trials = 10;
    a->device = "cuda";
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (f[0] != '-') {
            if (a->model) {
                fprintf(stderr, "gpu_bench: unexpected argument '%s'\n%s", f, k_usage);
                return -1;
            }
            a->model = f;
            continue;
        }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(k_usage, stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gpu_bench: %s needs a value\n", f);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--batch")) {
            char *copy = strdup(v);
            const char *items[MAX_LIST];
            int n = split_list(copy, items, MAX_LIST, f);
            for (int k = 0; k < n; k++)
                if (parse_int(f, items[k], 1, 65536, &a->batches[k])) {
                    free(copy);
                    return -1;
                }
            free(copy);
            if (n < 1) {
                fprintf(stderr, "gpu_bench: --batch: empty list\n");
                return -1;
            }
            a->n_batches = n;
        } else if (!strcmp(f, "--isl")) {
            if (parse_int(f, v, 1, 1 << 20, &a->isl))
                return -1;
        } else if (!strcmp(f, "--osl")) {
            if (parse_int(f, v, 1, 1 << 20, &a->osl))
                return -1;
        } else if (!strcmp(f, "--steps")) {
            if (parse_int(f, v, 1, 1 << 20, &a->steps))
                return -1;
        } else if (!strcmp(f, "--warmup")) {
            if (parse_int(f, v, 0, 1 << 20, &a->warmup))
                return -1;
        } else if (!strcmp(f, "--trials")) {
            if (parse_int(f, v, 1, 100000, &a->trials))
                return -1;
        } else if (!strcmp(f, "--adapters")) {
            free(a->adapter_list);
            a->adapter_list = strdup(v);
            if ((a->n_adapters = split_list(a->adapter_list, a->adapters, MAX_ADAPTERS, f)) < 0)
                return -1;
        } else if (!strcmp(f, "--device")) {
            if (strcmp(v, "cuda") && strcmp(v, "cpu")) {
                fprintf(stderr, "gpu_bench: --device must be cuda or cpu\n");
                return -1;
            }
            a->device = v;
        } else if (!strcmp(f, "--sample")) {
            if (strcmp(v, "gpu") && strcmp(v, "host")) {
                fprintf(stderr, "gpu_bench: --sample must be gpu or host\n");
                return -1;
            }
            a->sample_host = !strcmp(v, "host");
        } else if (!strcmp(f, "--mode")) {
            free(a->mode_list);
            a->mode_list = strdup(v);
            if ((a->n_modes = split_list(a->mode_list, a->modes, MAX_MODES, f)) < 0)
                return -1;
        } else {
            fprintf(stderr, "gpu_bench: unknown option '%s'\n%s", f, k_usage);
            return -1;
        }
    }
    if (!a->model) {
        fprintf(stderr, "gpu_bench: %s needs MODEL_DIR\n%s", argv[1], k_usage);
        return -1;
    }
    if (a->n_modes == 0) {
        a->modes[0] = "base";
        a->n_modes = 1;
    }
    if (a->steps < 0)
        a->steps = LP_MIN(a->osl, 64);
    if (a->steps > a->osl || a->warmup > a->osl) {
        fprintf(stderr, "gpu_bench: --steps %d and --warmup %d must not exceed --osl %d\n", a->steps, a->warmup,
                a->osl);
        return -1;
    }
    return 0;
}

/* ---- shared setup ---- */

typedef struct bench {
    lp_model *m;
    const lp_model_config *c;
    lp_adapter *ads[MAX_ADAPTERS];
    double ad_bytes[MAX_ADAPTERS]; /* bf16 A + B bytes */
    int ad_rank[MAX_ADAPTERS];
    int n_ads, min_rank, max_rank;
    lp_backend *be;
    const char *device;
} bench;

/* What the GPU reads of adapter `a` per step when a row uses it: A and B of
 * every adapted module in bf16, rank x (in + out) x 2 bytes. */
static double adapter_bf16_bytes(const lp_adapter *a, int n_layers) {
    double s = 0;
    for (int l = 0; l < n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp__lora_mod *md = lp__adapter_mod(a, l, m);
            if (md->rank)
                s += (double)md->rank * (double)(md->A.cols + md->B.rows) * 2.0;
        }
    return s;
}

static int bench_load(bench *b, const args *a) {
    memset(b, 0, sizeof *b);
    b->device = a->device;
    lp_error err = {0};
    double t0 = lp__now();
    if (lp_model_load(a->model, &b->m, NULL, NULL, &err)) {
        fprintf(stderr, "gpu_bench: %s: %s\n", a->model, err.msg);
        return -1;
    }
    b->c = lp_model_get_config(b->m);
    fprintf(stderr, "model %s: %d layers, hidden %d, %.2f GiB of weights (loaded in %.1f s)\n", a->model,
            b->c->n_layers, b->c->hidden, (double)lp_model_weight_bytes(b->m) / GiB, lp__now() - t0);
    t0 = lp__now();
    for (int i = 0; i < a->n_adapters; i++) {
        if (lp_adapter_load(a->adapters[i], b->m, NULL, &b->ads[i], &err)) {
            fprintf(stderr, "gpu_bench: adapter %s: %s\n", a->adapters[i], err.msg);
            return -1;
        }
        b->n_ads = i + 1;
        b->ad_bytes[i] = adapter_bf16_bytes(b->ads[i], b->c->n_layers);
        b->ad_rank[i] = lp_adapter_get_info(b->ads[i])->max_rank;
        b->max_rank = LP_MAX(b->max_rank, b->ad_rank[i]);
        b->min_rank = i ? LP_MIN(b->min_rank, b->ad_rank[i]) : b->ad_rank[i];
    }
    if (b->n_ads)
        fprintf(stderr, "%d adapters loaded to host memory in %.1f s (ranks %d..%d)\n", b->n_ads, lp__now() - t0,
                b->min_rank, b->max_rank);
    return 0;
}

static void bench_free(bench *b) {
    lp_backend_free(b->be);
    for (int i = 0; i < b->n_ads; i++)
        lp_adapter_free(b->ads[i]);
    lp_model_free(b->m);
}

static int new_backend(bench *b, int n_blocks, int max_tokens, int max_rows, int n_slots) {
    lp_error err = {0};
    lp_backend_params bp = lp_backend_default_params();
    bp.block_size = BLOCK;
    bp.n_kv_blocks = n_blocks;
    bp.max_tokens = max_tokens;
    bp.max_rows = max_rows;
    bp.max_logit_rows = max_rows;
    bp.max_adapters = n_slots;
    bp.max_lora_rank = LP_MAX(64, b->max_rank);
    double t0 = lp__now();
    bp.n_threads = 0;
    if (lp_backend_new(b->device, b->m, &bp, &b->be, &err)) {
        fprintf(stderr, "gpu_bench: %s backend: %s\n", b->device, err.msg);
        return -1;
    }
    fprintf(stderr, "%s backend up in %.1f s: %d KV blocks of %d tokens (%.2f GiB), max %d tokens, %d rows\n",
            b->device, lp__now() - t0, n_blocks, BLOCK,
            (double)lp_backend_kv_block_bytes(b->device, b->m, BLOCK) * n_blocks / GiB, max_tokens, max_rows);
    return 0;
}

static int load_slots(bench *b, int n) {
    lp_error err = {0};
    double t0 = lp__now();
    for (int i = 0; i < n; i++)
        if (lp_backend_adapter_load(b->be, i, b->ads[i], &err)) {
            fprintf(stderr, "gpu_bench: slot %d (%s): %s\n", i, lp_adapter_dir(b->ads[i]), err.msg);
            return -1;
        }
    if (n)
        fprintf(stderr, "%d adapters put in device slots 0..%d in %.2f s\n", n, n - 1, lp__now() - t0);
    return 0;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* n random token ids for sequence `seq` (distinct per sequence). */
static void random_tokens(int32_t *out, int n, int seq, int vocab) {
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(seq + 1) | 1;
    for (int i = 0; i < n; i++)
        out[i] = (int32_t)(rng_next(&s) % (uint64_t)vocab);
}

/* ---- decode ---- */

typedef struct mode {
    char name[32];
    int kind; /* 0 base, 1 one, 2 distinct */
    int lo, n; /* slots lo .. lo + n - 1 */
} mode;

static int parse_mode(const char *s, int n_ads, mode *md) {
    memset(md, 0, sizeof *md);
    snprintf(md->name, sizeof md->name, "%s", s);
    const char *colon = strchr(s, ':');
    size_t head = colon ? (size_t)(colon - s) : strlen(s);
    if (head == 4 && !strncmp(s, "base", 4) && !colon) {
        md->kind = 0;
        return 0;
    }
    bool one = head == 3 && !strncmp(s, "one", 3), distinct = head == 8 && !strncmp(s, "distinct", 8);
    if ((one || distinct) && n_ads < 1) {
        fprintf(stderr, "gpu_bench: mode %s needs --adapters\n", s);
        return -1;
    }
    if (one) {
        md->kind = 1;
        md->n = 1;
        if (colon && parse_int("--mode one:S", colon + 1, 0, n_ads - 1, &md->lo))
            return -1;
        return 0;
    }
    if (distinct) {
        md->kind = 2;
        md->lo = 0;
        md->n = n_ads;
        if (colon) {
            const char *dash = strchr(colon + 1, '-');
            if (dash) {
                char lo[16] = {0};
                int hi;
                snprintf(lo, sizeof lo, "%.*s", (int)(dash - colon - 1), colon + 1);
                if (parse_int("--mode distinct:LO-HI", lo, 0, n_ads - 1, &md->lo) ||
                    parse_int("--mode distinct:LO-HI", dash + 1, md->lo, n_ads - 1, &hi))
                    return -1;
                md->n = hi - md->lo + 1;
            } else if (parse_int("--mode distinct:K", colon + 1, 1, n_ads, &md->n)) {
                return -1;
            }
        }
        return 0;
    }
    fprintf(stderr, "gpu_bench: unknown mode '%s' (base, one[:S], distinct[:K|:LO-HI])\n", s);
    return -1;
}

static int mode_slot(const mode *md, int row) {
    return md->kind == 0 ? -1 : md->kind == 1 ? md->lo : md->lo + row % md->n;
}

/* GPU memory the backend needs besides the KV cache: weights (with the whole
 * embedding table, which lp_model_weight_bytes counts as one row), adapters,
 * activation scratch for max_tokens tokens and logits for max_rows rows (as
 * cuda_backend.cu sizes them, generously), plus 1.5 GiB for cuBLAS
 * workspaces, graphs and fragmentation. */
static double non_kv_bytes(const bench *b, double adapter_bytes, int max_tokens, int max_rows) {
    const lp_model_config *c = b->c;
    double T = max_tokens, D = c->hidden, F = c->ffn, Q = (double)c->n_heads * c->head_dim,
           KV = (double)c->n_kv_heads * c->head_dim, wide = LP_MAX(LP_MAX(D, Q), F);
    double act = T * (2 * D * 4 + (Q + 2 * KV) * 4 + Q * 4 + 2 * F * 4 + 7.0 * LP_MAX(64, b->max_rank) * 4 + D * 2 +
                      Q * 2 + wide * 2 + wide * 4 /* the LoRA shrink's fp32 input */) +
                 (double)max_rows * (c->vocab * 4.0 + D * 2);
    double elt = (double)lp_backend_kv_block_bytes("cuda", b->m, 1) / (2.0 * c->n_layers * KV); /* 2 or 4 */
    double embed = (double)c->vocab * D * elt;
    return (double)lp_model_weight_bytes(b->m) + embed + adapter_bytes * 1.05 + act + 1.5 * GiB;
}

/* The backend settings the environment chose, so that runs compared in one
 * report say which is which. */
static const char *backend_variant(void) {
    static char v[96];
    const char *ge = getenv("LORAPLEX_CUDA_GRAPHS"), *ae = getenv("LORAPLEX_CUDA_ATTN"),
               *me = getenv("LORAPLEX_CUDA_GEMM");
    snprintf(v, sizeof v, "graphs=%s,attn=%s,gemm=%s", ge && !strcmp(ge, "0") ? "off" : "on", ae ? ae : "auto",
             me && !strcmp(me, "ex") ? "ex" : "lt");
    return v;
}

/* Prefill rows 0..n_rows-1 (isl tokens each) on the base model in forward
 * calls of at most max_tokens tokens, logits only for each row's last token. */
static int prefill_all(bench *b, int32_t *const *toks, const int32_t *blocks, int bps, int n_rows, int isl,
                       int max_tokens, int max_rows, float *logits) {
    lp_error err = {0};
    lp_batch_row *br = malloc(sizeof(lp_batch_row) * (size_t)max_rows);
    int row = 0, done = 0, calls = 0;
    double t0 = lp__now();
    while (row < n_rows) {
        int nr = 0, budget = max_tokens;
        while (row < n_rows && nr < max_rows && budget > 0) {
            int n = LP_MIN(isl - done, budget);
            br[nr++] = (lp_batch_row){.tokens = toks[row] + done, .n_tokens = n, .pos0 = done,
                                      .blocks = blocks + (size_t)row * (size_t)bps, .adapter = -1,
                                      .adapter_scale = 1.0f,
                                      .logits = done + n == isl ? LP_LOGITS_LAST : LP_LOGITS_NONE};
            budget -= n;
            done += n;
            if (done == isl) {
                row++;
                done = 0;
            }
        }
        if (lp_backend_forward(b->be, br, nr, logits, &err)) {
            fprintf(stderr, "gpu_bench: prefill: %s\n", err.msg);
            free(br);
            return -1;
        }
        calls++;
    }
    double dt = lp__now() - t0;
    free(br);
    printf("{\"what\":\"prefill\",\"rows\":%d,\"isl\":%d,\"calls\":%d,\"seconds\":%.3f,\"tokens_per_s\":%.0f,"
           "\"variant\":\"%s\"}\n",
           n_rows, isl, calls, dt, (double)n_rows * isl / dt, backend_variant());
    fflush(stdout);
    fprintf(stderr, "prefilled %d rows x %d tokens in %d calls: %.1f s, %.0f tokens/s\n", n_rows, isl, calls, dt,
            (double)n_rows * isl / dt);
    return 0;
}

/* What decode and ttft start with: the machine's figures (printed), then the
 * model and adapters loaded. */
static int bench_start(const args *a, machine_info *mi, bench *b) {
    if (strcmp(a->device, "cpu") ? measure_machine(mi) : measure_host(mi))
        return 1;
    print_machine(mi);
    return bench_load(b, a);
}

/* lp_backend_sample on the last forward's n rows vs lp_sample_host on the
 * same logits (host copy): mismatching specs, and the worst total error. */
static int sample_check(bench *b, const float *logits, int n, double *worst_total) {
    enum { PER_ROW = 6, N_ADJ = 64 };
    int V = b->c->vocab, n_specs = n * PER_ROW, bad = 0;
    lp_sample_spec *sp = calloc((size_t)n_specs, sizeof *sp);
    lp_sample_result *res = calloc((size_t)n_specs, sizeof *res);
    lp_candidate *cand = calloc((size_t)n_specs * LP_SAMPLE_MAX_CAND, sizeof *cand), hc[LP_SAMPLE_MAX_CAND];
    lp_token_logprob *top = calloc((size_t)n_specs * LP_SAMPLE_MAX_LOGPROBS, sizeof *top),
                     ht[LP_SAMPLE_MAX_LOGPROBS];
    lp_logit_adjust adj[N_ADJ];
    void *scratch = malloc(lp_sample_scratch_bytes(V));
    *worst_total = 0;
    if (!sp || !res || !cand || !top || !scratch) {
        bad = -1;
        goto out;
    }
    for (int i = 0; i < N_ADJ; i++) /* distinct ids spread over every tile */
        adj[i] = (lp_logit_adjust){.id = (int32_t)(((int64_t)i * V) / N_ADJ + i % 7), .rep = 1.3f, .sub = 0.5f,
                                   .bias = i % 4 ? 0.0f : 2.0f};
    for (int i = 0; i < n_specs; i++) {
        int k = i % PER_ROW;
        int ks[PER_ROW] = {1, 1, 20, 50, 256, 256};
        float ts[PER_ROW] = {0.0f, 0.7f, 1.0f, 0.5f, 1.0f, 2.0f};
        sp[i] = (lp_sample_spec){.row = i / PER_ROW, .n_cand = LP_MIN(ks[k], V), .temperature = ts[k],
                                 .n_logprobs = k % 2 ? 20 : k == 2 ? 0 : -1, .adj = adj, .n_adj = k >= 3 ? N_ADJ : 0};
        res[i] = (lp_sample_result){.cand = cand + (size_t)i * LP_SAMPLE_MAX_CAND,
                                    .top = top + (size_t)i * LP_SAMPLE_MAX_LOGPROBS};
    }
    lp_error err = {0};
    if (lp_backend_sample(b->be, sp, n_specs, res, &err)) {
        fprintf(stderr, "gpu_bench: sample: %s\n", err.msg);
        bad = -1;
        goto out;
    }
    for (int i = 0; i < n_specs; i++) {
        lp_sample_result h = {.cand = hc, .top = ht};
        lp_sample_host(logits + (size_t)sp[i].row * (size_t)V, V, &sp[i], scratch, &h);
        double et = h.total > 0 ? fabs(res[i].total - h.total) / h.total : 0;
        *worst_total = et > *worst_total ? et : *worst_total;
        bool ok = res[i].n_cand == h.n_cand && res[i].max == h.max && et <= 1e-5 &&
                  !memcmp(res[i].cand, hc, sizeof(lp_candidate) * (size_t)h.n_cand);
        if (sp[i].n_logprobs >= 0) {
            ok = ok && fabs(res[i].raw_lse - h.raw_lse) <= 1e-4;
            for (int j = 0; j < sp[i].n_logprobs; j++)
                ok = ok && res[i].top[j].id == ht[j].id;
        }
        bad += !ok;
    }
out:
    free(sp);
    free(res);
    free(cand);
    free(top);
    free(scratch);
    return bad;
}

static int cmd_decode(const args *a) {
    mode modes[MAX_MODES];
    for (int i = 0; i < a->n_modes; i++)
        if (parse_mode(a->modes[i], a->n_adapters, &modes[i]))
            return 2;
    machine_info mi;
    bench b;
    if (bench_start(a, &mi, &b))
        return 1;
    const lp_model_config *c = b.c;
    int vocab = c->vocab;
    const char *variant = backend_variant();
    if (a->isl + a->osl > c->max_pos)
        fprintf(stderr, "note: isl + osl = %d exceeds max_position_embeddings %d\n", a->isl + a->osl, c->max_pos);

    /* the batches that fit: KV for batch x (isl + osl) tokens next to everything else */
    int bps = (a->isl + a->osl + BLOCK - 1) / BLOCK;
    double block_bytes = (double)lp_backend_kv_block_bytes(a->device, b.m, BLOCK);
    int max_req = 0;
    for (int i = 0; i < a->n_batches; i++)
        max_req = LP_MAX(max_req, a->batches[i]);
    double all_ad = 0;
    for (int i = 0; i < b.n_ads; i++)
        all_ad += b.ad_bytes[i];
    size_t fr = SIZE_MAX / 2, tot = 0;
    lp_error err = {0};
    if (strcmp(a->device, "cpu") && lp_cuda_mem_info(&fr, &tot, &err)) {
        fprintf(stderr, "gpu_bench: %s\n", err.msg);
        return 1;
    }
    const char *cap = getenv("GPU_BENCH_FREE_GIB"); /* pretend this much is free (tests of the skip path) */
    if (cap && *cap)
        fr = (size_t)(atof(cap) * GiB);
    double other = non_kv_bytes(&b, all_ad, PREFILL_TOKENS, max_req);
    double kv_room = (double)fr - other;
    int batches[MAX_LIST], nb = 0, maxb = 0;
    for (int i = 0; i < a->n_batches; i++) {
        double need = (double)a->batches[i] * bps * block_bytes;
        if (need > kv_room) {
            printf("{\"what\":\"skip\",\"batch\":%d,\"reason\":\"KV cache for %d x %d tokens needs %.2f GiB; "
                   "%.2f GiB of %.2f GiB free remain after weights, adapters and scratch\"}\n",
                   a->batches[i], a->batches[i], a->isl + a->osl, need / GiB, kv_room / GiB, (double)fr / GiB);
            fprintf(stderr, "SKIP batch %d: its KV cache (%d x %d tokens) needs %.2f GiB, only %.2f GiB left\n",
                    a->batches[i], a->batches[i], a->isl + a->osl, need / GiB, kv_room / GiB);
            continue;
        }
        batches[nb++] = a->batches[i];
        maxb = LP_MAX(maxb, a->batches[i]);
    }
    fflush(stdout);
    if (!nb) {
        fprintf(stderr, "gpu_bench: no batch fits in GPU memory\n");
        bench_free(&b);
        return 1;
    }
    int n_blocks = maxb * bps;
    if (new_backend(&b, n_blocks, PREFILL_TOKENS, maxb, b.n_ads) || load_slots(&b, b.n_ads)) {
        bench_free(&b);
        return 1;
    }
    int32_t *blocks = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++)
        blocks[i] = i;
    int32_t **toks = malloc(sizeof(int32_t *) * (size_t)maxb);
    for (int r = 0; r < maxb; r++) {
        toks[r] = malloc(sizeof(int32_t) * (size_t)(a->isl + a->osl));
        random_tokens(toks[r], a->isl + a->osl, r, vocab);
    }
    /* the backend's host memory (pinned on CUDA), as the engine uses */
    float *logits = lp_backend_host_alloc(b.be, sizeof(float) * (size_t)vocab * (size_t)maxb);
    lp_batch_row *br = malloc(sizeof(lp_batch_row) * (size_t)maxb);
    double *t = malloc(sizeof(double) * (size_t)a->steps), *ts = malloc(sizeof(double) * (size_t)a->steps);
    lp_sample_spec *specs = calloc((size_t)maxb, sizeof *specs); /* greedy, one per row */
    lp_sample_result *res = calloc((size_t)maxb, sizeof *res);
    lp_candidate *cand = calloc((size_t)maxb, sizeof *cand);
    int rc = 0;
    if (!blocks || !toks || !logits || !br || !t || !ts || !specs || !res || !cand) {
        fprintf(stderr, "gpu_bench: out of host memory\n");
        rc = 1;
        goto out;
    }
    if (prefill_all(&b, toks, blocks, bps, maxb, a->isl, PREFILL_TOKENS, maxb, logits)) {
        rc = 1;
        goto out;
    }
    /* GPU sampling against the host on real logits: one decode step of up to
     * 8 rows (the timed steps below write the same positions again) */
    {
        int n = LP_MIN(maxb, 8);
        for (int r = 0; r < n; r++)
            br[r] = (lp_batch_row){.tokens = toks[r] + a->isl, .n_tokens = 1, .pos0 = a->isl,
                                   .blocks = blocks + (size_t)r * (size_t)bps, .adapter = -1, .adapter_scale = 1.0f,
                                   .logits = LP_LOGITS_LAST};
        double worst = 0;
        int bad = lp_backend_forward(b.be, br, n, logits, &err) ? -1 : sample_check(&b, logits, n, &worst);
        printf("{\"what\":\"sample_check\",\"device\":\"%s\",\"rows\":%d,\"vocab\":%d,\"specs\":%d,"
               "\"mismatches\":%d,\"worst_total_rel\":%.2e}\n", mi.name, n, vocab, n * 6, bad, worst);
        fprintf(stderr, "sample_check: %d rows x 6 specs over vocab %d: %d mismatches (worst total %.1e)\n", n, vocab,
                bad, worst);
        if (bad) {
            rc = 1;
            goto out;
        }
    }
    for (int r = 0; r < maxb; r++) {
        specs[r] = (lp_sample_spec){.row = r, .n_cand = 1, .temperature = 0.0f, .n_logprobs = -1};
        res[r] = (lp_sample_result){.cand = cand + r};
    }

    /* KV bytes per token of context, over all layers: K and V (fp16 on the GPU
     * for bf16/f16 models: layers x 2 x kv heads x head_dim x 2 bytes) */
    double kv_tok = (double)lp_backend_kv_block_bytes(a->device, b.m, 1);
    double ctx_mean = a->isl + (a->steps + 1) / 2.0; /* positions isl .. isl+steps-1 attend to pos+1 tokens */
    double wbytes = (double)lp_model_weight_bytes(b.m);
    double base_tps[MAX_LIST] = {0};
    fprintf(stderr, "\n%-14s %6s %5s %10s %10s %10s %12s %9s %10s %8s %8s\n", "mode", "batch", "ads", "step_ms",
            "p10_ms", "p90_ms", "tokens/s", "GB/step", "roof_ms", "roof/ms", "vs_base");
    for (int mi_ = 0; mi_ < a->n_modes; mi_++) {
        const mode *md = &modes[mi_];
        for (int bi = 0; bi < nb; bi++) {
            int batch = batches[bi];
            bool used[MAX_ADAPTERS] = {0};
            int n_distinct = 0;
            double ad_bytes = 0;
            for (int r = 0; r < batch; r++) {
                int s = mode_slot(md, r);
                if (s >= 0 && !used[s]) {
                    used[s] = true;
                    n_distinct++;
                    ad_bytes += b.ad_bytes[s];
                }
            }
            for (int s = -a->warmup; s < a->steps; s++) {
                int step = s < 0 ? s + a->warmup : s; /* warm-up steps use the same positions */
                for (int r = 0; r < batch; r++)
                    br[r] = (lp_batch_row){.tokens = toks[r] + a->isl + step, .n_tokens = 1,
                                           .pos0 = a->isl + step, .blocks = blocks + (size_t)r * (size_t)bps,
                                           .adapter = mode_slot(md, r), .adapter_scale = 1.0f,
                                           .logits = LP_LOGITS_LAST};
                if (s == 0 && cudaProfilerStart() != cudaSuccess) /* a profiler attached records the timed steps */
                    cudaGetLastError();
                double t0 = lp__now();
                if (lp_backend_forward(b.be, br, batch, a->sample_host ? logits : NULL, &err)) {
                    fprintf(stderr, "gpu_bench: decode %s batch %d: %s\n", md->name, batch, err.msg);
                    rc = 1;
                    goto out;
                }
                double t1 = lp__now();
                if (!a->sample_host && lp_backend_sample(b.be, specs, batch, res, &err)) {
                    fprintf(stderr, "gpu_bench: sample %s batch %d: %s\n", md->name, batch, err.msg);
                    rc = 1;
                    goto out;
                }
                if (s >= 0) {
                    t[s] = lp__now() - t0;
                    ts[s] = lp__now() - t1;
                }
            }
            if (cudaProfilerStop() != cudaSuccess)
                cudaGetLastError();
            double p10 = quantile(t, a->steps, 0.1), p90 = quantile(t, a->steps, 0.9),
                   med = quantile(t, a->steps, 0.5), smed = quantile(ts, a->steps, 0.5);
            double kvb = kv_tok * ctx_mean * batch;
            double bytes = wbytes + kvb + ad_bytes;
            double roof = bytes / mi.copy_bw;
            double tps = batch / med;
            if (md->kind == 0)
                base_tps[bi] = tps;
            char vs[32] = "-";
            if (base_tps[bi] > 0)
                snprintf(vs, sizeof vs, "%.3f", tps / base_tps[bi]);
            printf("{\"what\":\"decode\",\"device\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"adapters\":%d,\"isl\":%d,"
                   "\"osl\":%d,\"steps\":%d,\"ctx_mean\":%.1f,\"step_ms_median\":%.3f,\"step_ms_p10\":%.3f,"
                   "\"step_ms_p90\":%.3f,\"itl_ms\":%.3f,\"tokens_per_s\":%.1f,\"weight_bytes\":%.0f,"
                   "\"kv_bytes\":%.0f,\"adapter_bytes\":%.0f,\"bytes_per_step\":%.0f,\"copy_bw_GBps\":%.1f,"
                   "\"roofline_ms\":%.3f,\"roofline_ratio\":%.3f,\"sample\":\"%s\",\"sample_ms_median\":%.3f,"
                   "\"logits_bytes\":%.0f,\"variant\":\"%s\"%s%s}\n",
                   mi.name, md->name, batch, n_distinct, a->isl, a->osl, a->steps, ctx_mean, med * 1e3, p10 * 1e3,
                   p90 * 1e3, med * 1e3, tps, wbytes, kvb, ad_bytes, bytes, mi.copy_bw / 1e9, roof * 1e3, roof / med,
                   a->sample_host ? "host" : "gpu", smed * 1e3, a->sample_host ? (double)batch * vocab * 4.0 : 0.0,
                   variant, base_tps[bi] > 0 ? ",\"ratio_to_base\":" : "", base_tps[bi] > 0 ? vs : "");
            fflush(stdout);
            fprintf(stderr, "%-14s %6d %5d %10.3f %10.3f %10.3f %12.1f %9.2f %10.3f %8.3f %8s\n", md->name, batch,
                    n_distinct, med * 1e3, p10 * 1e3, p90 * 1e3, tps, bytes / 1e9, roof * 1e3, roof / med, vs);
        }
    }
out:
    for (int r = 0; toks && r < maxb; r++)
        free(toks[r]);
    free(toks);
    free(blocks);
    if (logits)
        lp_backend_host_free(b.be, logits);
    free(br);
    free(t);
    free(ts);
    free(specs);
    free(res);
    free(cand);
    bench_free(&b);
    return rc;
}

/* ---- ttft ---- */

static int cmd_ttft(const args *a) {
    if (a->n_adapters < 1) {
        fprintf(stderr, "gpu_bench: ttft needs --adapters\n");
        return 2;
    }
    machine_info mi;
    bench b;
    if (bench_start(a, &mi, &b))
        return 1;
    int bps = (a->isl + BLOCK - 1) / BLOCK;
    int max_tokens = LP_MAX(PREFILL_TOKENS, a->isl);
    int rc = 0;
    if (new_backend(&b, bps, max_tokens, 1, 1)) {
        bench_free(&b);
        return 1;
    }
    int vocab = b.c->vocab;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)a->isl), *blocks = malloc(sizeof(int32_t) * (size_t)bps);
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    int n = a->trials;
    double *cold = malloc(sizeof(double) * (size_t)n), *warm = malloc(sizeof(double) * (size_t)n),
           *load = malloc(sizeof(double) * (size_t)n), *base = malloc(sizeof(double) * (size_t)n),
           *unst = malloc(sizeof(double) * (size_t)n), *unst_load = malloc(sizeof(double) * (size_t)n),
           *stage = malloc(sizeof(double) * (size_t)n);
    lp_error err = {0};
    if (!toks || !blocks || !logits || !cold || !warm || !load || !base || !unst || !unst_load || !stage) {
        fprintf(stderr, "gpu_bench: out of host memory\n");
        rc = 1;
        goto out;
    }
    random_tokens(toks, a->isl, 0, vocab);
    for (int i = 0; i < bps; i++)
        blocks[i] = i;
    lp_batch_row row = {.tokens = toks, .n_tokens = a->isl, .pos0 = 0, .blocks = blocks, .adapter = -1,
                        .adapter_scale = 1.0f, .logits = LP_LOGITS_LAST};
    /* warm-up: two base prefills, then one untimed cold load (grows the memory pool) */
    for (int w = 0; w < 3; w++) {
        row.adapter = w < 2 ? -1 : 0;
        if ((w == 2 && lp_backend_adapter_load(b.be, 0, b.ads[b.n_ads - 1], &err)) ||
            lp_backend_forward(b.be, &row, 1, logits, &err)) {
            fprintf(stderr, "gpu_bench: ttft warm-up: %s\n", err.msg);
            rc = 1;
            goto out;
        }
    }
    lp_backend_adapter_unload(b.be, 0);
    double ad_bytes_sum = 0;
    int rank_lo = 1 << 30, rank_hi = 0;
    for (int k = 0; k < n; k++) {
        int ai = k % b.n_ads;
        lp_adapter *ad = b.ads[ai];
        ad_bytes_sum += b.ad_bytes[ai];
        rank_lo = LP_MIN(rank_lo, b.ad_rank[ai]);
        rank_hi = LP_MAX(rank_hi, b.ad_rank[ai]);
        row.adapter = -1;
        double t0 = lp__now();
        if (lp_backend_forward(b.be, &row, 1, logits, &err))
            goto fail;
        base[k] = lp__now() - t0;
        row.adapter = 0;
        /* not staged: the load lays the adapter out itself */
        t0 = lp__now();
        if (lp_backend_adapter_load(b.be, 0, ad, &err))
            goto fail;
        double t1 = lp__now();
        if (lp_backend_forward(b.be, &row, 1, logits, &err))
            goto fail;
        unst[k] = lp__now() - t0;
        unst_load[k] = t1 - t0;
        lp_backend_adapter_unload(b.be, 0);
        t0 = lp__now();
        if (lp_backend_adapter_stage(b.be, ad, &err))
            goto fail;
        stage[k] = lp__now() - t0;
        t0 = lp__now();
        if (lp_backend_adapter_load(b.be, 0, ad, &err))
            goto fail;
        t1 = lp__now();
        if (lp_backend_forward(b.be, &row, 1, logits, &err))
            goto fail;
        cold[k] = lp__now() - t0;
        load[k] = t1 - t0;
        t0 = lp__now();
        if (lp_backend_forward(b.be, &row, 1, logits, &err))
            goto fail;
        warm[k] = lp__now() - t0;
        lp_backend_adapter_unload(b.be, 0);
        if (ad->staged) { /* the next trial of this adapter starts unstaged again */
            ad->staged_free(ad->staged);
            ad->staged = NULL;
        }
    }
    {
        double c50 = quantile(cold, n, 0.5), w50 = quantile(warm, n, 0.5), l50 = quantile(load, n, 0.5),
               b50 = quantile(base, n, 0.5), u50 = quantile(unst, n, 0.5), ul50 = quantile(unst_load, n, 0.5),
               s50 = quantile(stage, n, 0.5);
        double ad_mean = ad_bytes_sum / n;
        printf("{\"what\":\"ttft\",\"device\":\"%s\",\"isl\":%d,\"trials\":%d,\"adapters\":%d,\"rank_min\":%d,"
               "\"rank_max\":%d,\"adapter_bytes_mean\":%.0f,\"cold_p50_ms\":%.3f,\"warm_p50_ms\":%.3f,"
               "\"cold_minus_warm_ms\":%.3f,\"load_call_p50_ms\":%.3f,\"base_p50_ms\":%.3f,"
               "\"unstaged_p50_ms\":%.3f,\"unstaged_load_call_p50_ms\":%.3f,\"stage_p50_ms\":%.3f,"
               "\"h2d_pinned_GBps\":%.1f,\"h2d_floor_ms\":%.3f}\n",
               mi.name, a->isl, n, LP_MIN(n, b.n_ads), rank_lo, rank_hi, ad_mean, c50 * 1e3, w50 * 1e3,
               (c50 - w50) * 1e3, l50 * 1e3, b50 * 1e3, u50 * 1e3, ul50 * 1e3, s50 * 1e3, mi.h2d_bw / 1e9,
               mi.h2d_bw > 0 ? ad_mean / mi.h2d_bw * 1e3 : 0.0);
        fflush(stdout);
        fprintf(stderr, "\nttft, %d-token prompt, %d trials, ranks %d..%d (%.1f MB bf16 per adapter on average):\n",
                a->isl, n, rank_lo, rank_hi, ad_mean / 1e6);
        fprintf(stderr, "  cold p50 %.2f ms (of which the load call %.2f ms), adapter staged in the host tier\n"
                        "  unstaged p50 %.2f ms (of which the load call %.2f ms); staging %.2f ms (loader thread)\n"
                        "  warm p50 %.2f ms\n"
                        "  cold - warm %.2f ms (an upload at the pinned host-to-device rate: %.2f ms)\n"
                        "  base p50 %.2f ms\n",
                c50 * 1e3, l50 * 1e3, u50 * 1e3, ul50 * 1e3, s50 * 1e3, w50 * 1e3, (c50 - w50) * 1e3,
                mi.h2d_bw > 0 ? ad_mean / mi.h2d_bw * 1e3 : 0.0, b50 * 1e3);
    }
    goto out;
fail:
    fprintf(stderr, "gpu_bench: ttft: %s\n", err.msg);
    rc = 1;
out:
    free(toks);
    free(blocks);
    free(logits);
    free(cold);
    free(warm);
    free(load);
    free(base);
    free(unst);
    free(unst_load);
    free(stage);
    bench_free(&b);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "machine")) {
        machine_info mi;
        if (measure_machine(&mi))
            return 1;
        print_machine(&mi);
        return 0;
    }
    if (strcmp(argv[1], "decode") && strcmp(argv[1], "ttft")) {
        fprintf(stderr, "gpu_bench: unknown command '%s'\n%s", argv[1], k_usage);
        return 2;
    }
    args a;
    if (parse_args(argc, argv, &a))
        return 2;
    int rc = !strcmp(argv[1], "decode") ? cmd_decode(&a) : cmd_ttft(&a);
    free(a.adapter_list);
    free(a.mode_list);
    return rc;
}
