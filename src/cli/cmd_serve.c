/* cmd_serve.c - `loraplex serve`: flags (vLLM spellings) and NIM environment
 * aliases into lp_server_params. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "server/server.h"
#include "util/util.h"

static const char k_usage[] =
    "usage: loraplex serve [options]\n"
    "\n"
    "OpenAI-compatible server for one base model and many LoRA adapters. With no\n"
    "options: the bundled models/tinylm with models/tinylm-adapters on 127.0.0.1:8000.\n"
    "\n"
    "  --model DIR                  base model directory\n"
    "  --device auto|cpu|cuda       where the forward pass runs (default auto: cuda when this build\n"
    "                               has the CUDA backend and a GPU is visible, else cpu)\n"
    "  --served-model-name NAME     model id of the base (default: the directory name)\n"
    "  --host ADDR  --port N        listen address (default 127.0.0.1:8000)\n"
    "  --api-key KEY                require 'Authorization: Bearer KEY' (not for /health, /metrics)\n"
    "  --admin-key KEY              key for /v1/load_lora_adapter and /v1/unload_lora_adapter\n"
    "  --lora-dir DIR               adapter store: one subdirectory per adapter, name = directory\n"
    "  --lora-refresh-interval S    rescan the store every S seconds (default 10; 0 = never)\n"
    "  --lora-modules NAME=PATH     register an adapter (repeatable)\n"
    "  --max-loras N                adapters resident in backend slots, the device tier (default 4)\n"
    "  --max-cpu-loras N            adapters in host memory (pinned, in device layout, on cuda); also\n"
    "                               the most distinct adapters among active requests before 429\n"
    "                               (default 16)\n"
    "  --max-lora-rank N            refuse adapters of a larger rank (default 64)\n"
    "  --max-lora-mib N             GPU memory the device tier's adapters may take together, each by\n"
    "                               its own ranks; one that does not fit displaces idle ones (default\n"
    "                               on cuda: room for --max-loras adapters of --max-lora-rank on all\n"
    "                               modules in fp32, set aside before the KV cache; cpu: no limit)\n"
    "  --max-num-seqs N             rows running at once (default 32)\n"
    "  --max-model-len N            prompt + output tokens (default: the model's)\n"
    "  --max-num-batched-tokens N   tokens per engine step (default 512)\n"
    "  --kv-cache-mib N             KV cache size (default: 512 on cpu; on cuda 85% of the free GPU\n"
    "                               memory less the weights, --max-lora-mib and 1 GiB of scratch)\n"
    "  --threads N                  CPU threads (default: all cores)\n"
    "  --max-connections N          (default 1024)  --timeout S  idle client timeout (default 30)\n"
    "  --request-timeout S          a request's headers and body must arrive within S s (default 30)\n"
    "  --max-body-mib N             largest request body (default 8)\n"
    "  --drain-timeout S            on SIGTERM, finish in-flight requests for up to S s (default 30)\n"
    "\n"
    "Environment aliases (NVIDIA NIM): NIM_PEFT_SOURCE (--lora-dir), NIM_PEFT_REFRESH_INTERVAL,\n"
    "NIM_MAX_CPU_LORAS, NIM_MAX_GPU_LORAS (--max-loras), NIM_MAX_LORA_RANK. Flags win.\n";

static bool env_int(const char *name, long long lo, long long hi, int *out) {
    const char *v = getenv(name);
    long long x;
    if (!v)
        return true;
    if (!lp_cli_int(name, v, lo, hi, &x))
        return false;
    *out = (int)x;
    return true;
}

int lp_cmd_serve(int argc, char **argv) {
    lp_server_params p = lp_server_default_params();
    static char default_lora_dir[4200];
    bool lora_dir_given = false;
    /* environment first, flags override */
    if (getenv("NIM_PEFT_SOURCE")) {
        p.lora_dir = getenv("NIM_PEFT_SOURCE");
        lora_dir_given = true;
    }
    const char *ri = getenv("NIM_PEFT_REFRESH_INTERVAL");
    double d;
    if (ri) {
        if (!lp_cli_float("NIM_PEFT_REFRESH_INTERVAL", ri, 0, 86400, &d))
            return 2;
        p.lora_refresh_s = d;
    }
    if (!env_int("NIM_MAX_CPU_LORAS", 1, 100000, &p.max_cpu_loras) ||
        !env_int("NIM_MAX_GPU_LORAS", 1, 4096, &p.max_loras) || !env_int("NIM_MAX_LORA_RANK", 1, 65536, &p.max_lora_rank))
        return 2;
    p.api_key = getenv("LORAPLEX_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long x;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        }
        if (!(v = lp_cli_value(argc, argv, &i)))
            return 2;
#define INT(flag, field, lo, hi)                                                                                       \
    else if (!strcmp(a, flag)) {                                                                                       \
        if (!lp_cli_int(a, v, lo, hi, &x))                                                                             \
            return 2;                                                                                                  \
        field = (int)x;                                                                                                \
    }
        if (!strcmp(a, "--model")) {
            p.model_dir = v;
        } else if (!strcmp(a, "--device")) {
            if (!lp_backend_resolve(v)) {
                fprintf(stderr, "error: --device: unknown device '%s' (expected auto, cpu or cuda)\n", v);
                return 2;
            }
            p.device = v;
        } else if (!strcmp(a, "--served-model-name"))
            p.served_name = v;
        else if (!strcmp(a, "--host"))
            p.host = v;
        else if (!strcmp(a, "--api-key"))
            p.api_key = v;
        else if (!strcmp(a, "--admin-key"))
            p.admin_key = v;
        else if (!strcmp(a, "--lora-dir")) {
            p.lora_dir = v;
            lora_dir_given = true;
        } else if (!strcmp(a, "--lora-modules")) {
            /* vLLM takes several after one flag: consume until the next --flag */
            for (;;) {
                if (p.n_lora_modules == LP_SERVER_MAX_MODULES) {
                    fprintf(stderr, "error: at most %d --lora-modules\n", LP_SERVER_MAX_MODULES);
                    return 2;
                }
                p.lora_modules[p.n_lora_modules++] = v;
                if (i + 1 < argc && argv[i + 1][0] != '-')
                    v = argv[++i];
                else
                    break;
            }
        } else if (!strcmp(a, "--lora-refresh-interval")) {
            if (!lp_cli_float(a, v, 0, 86400, &d))
                return 2;
            p.lora_refresh_s = d;
        } else if (!strcmp(a, "--drain-timeout")) {
            if (!lp_cli_float(a, v, 0, 86400, &d))
                return 2;
            p.drain_timeout_s = d;
        } else if (!strcmp(a, "--max-body-mib")) {
            if (!lp_cli_int(a, v, 1, 4096, &x))
                return 2;
            p.max_body_bytes = (uint64_t)x << 20;
        }
        INT("--port", p.port, 1, 65535)
        INT("--max-loras", p.max_loras, 1, 4096)
        INT("--max-cpu-loras", p.max_cpu_loras, 1, 100000)
        INT("--max-lora-rank", p.max_lora_rank, 1, 65536)
        INT("--max-lora-mib", p.max_lora_mib, 1, 1 << 24)
        INT("--max-num-seqs", p.max_num_seqs, 1, 4096)
        INT("--max-model-len", p.max_model_len, 1, 1 << 24)
        INT("--max-num-batched-tokens", p.max_num_batched_tokens, 1, 1 << 20)
        INT("--kv-cache-mib", p.kv_cache_mib, 1, 1 << 22)
        INT("--threads", p.threads, 0, 4096)
        INT("--max-connections", p.max_connections, 1, 1 << 20)
        INT("--timeout", p.connection_timeout_s, 1, 86400)
        INT("--request-timeout", p.request_timeout_s, 1, 86400)
        else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
#undef INT
    }
    if (!p.model_dir) {
        p.model_dir = lp_cli_default_model();
        if (!lora_dir_given) { /* the demo adapters beside the demo model */
            snprintf(default_lora_dir, sizeof default_lora_dir, "%s-adapters", p.model_dir);
            if (lp__is_dir(default_lora_dir))
                p.lora_dir = default_lora_dir;
        }
    }
    if (p.max_cpu_loras < p.max_loras) {
        fprintf(stderr, "error: --max-cpu-loras (%d) must be at least --max-loras (%d)\n", p.max_cpu_loras,
                p.max_loras);
        return 2;
    }
    if (p.max_num_batched_tokens < p.max_num_seqs)
        p.max_num_batched_tokens = p.max_num_seqs;
    return lp_server_run(&p) ? 1 : 0;
}
