/* server.h - `loraplex serve`: an OpenAI-compatible HTTP server over the
 * continuous-batching engine and the tiered adapter store. */
#ifndef LP_SERVER_SERVER_H
#define LP_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#define LP_SERVER_MAX_MODULES 256

typedef struct lp_server_params {
    const char *model_dir;
    const char *device;             /* "auto" (default), "cpu" or "cuda": see lp_backend_new */
    const char *served_name;        /* model id of the base (default: the directory name) */
    const char *host;               /* default 127.0.0.1 */
    int port;                       /* default 8000 */
    const char *api_key;            /* bearer token for every route but /health, /metrics */
    const char *admin_key;          /* bearer token for adapter management (default: api_key) */
    const char *lora_dir;           /* scanned adapter store */
    double lora_refresh_s;          /* rescan period; 0 = only at start */
    const char *lora_modules[LP_SERVER_MAX_MODULES]; /* name=path */
    int n_lora_modules;
    int max_loras, max_cpu_loras, max_lora_rank;
    int max_lora_mib;               /* device tier bytes budget (lp_store_params.max_lora_bytes); 0 = auto:
                                       on CUDA room for max_loras adapters of max_lora_rank on every
                                       module in fp32, reserved before the KV cache is sized; on the CPU
                                       no limit but the slots */
    int max_num_seqs, max_model_len, max_num_batched_tokens;
    int kv_blocks;                  /* 0 = from kv_cache_mib */
    int kv_cache_mib;               /* 0 = auto: 512 on the CPU; on CUDA what the GPU has free */
    int threads;
    int max_connections;
    int connection_timeout_s;       /* idle / slow client timeout */
    int request_timeout_s;          /* a whole request (headers + body) must arrive within this */
    uint64_t max_body_bytes;
    double drain_timeout_s;         /* SIGTERM: finish in-flight requests up to this long */
    int max_queue;                  /* queued requests beyond which 503 */
} lp_server_params;

lp_server_params lp_server_default_params(void);

/* Run until SIGTERM/SIGINT (then drain and return 0), or return non-zero if
 * start-up fails (the message is logged). */
int lp_server_run(const lp_server_params *p);

#endif
