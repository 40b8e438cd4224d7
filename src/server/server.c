/* server.c - `loraplex serve`: start-up (model, backend, engine, adapter
 * store, chat template), the libmicrohttpd daemon (a thread per connection,
 * bounded bodies, headers and connections, idle timeouts), authentication,
 * routing, and the SIGTERM drain. */
#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server-impl.h"
#include "util/log.h"
#include "util/util.h"

lp_server_params lp_server_default_params(void) {
    lp_server_params p;
    memset(&p, 0, sizeof p);
    p.device = "auto";
    p.host = "127.0.0.1";
    p.port = 8000;
    p.lora_refresh_s = 10.0;
    p.max_loras = 4;
    p.max_cpu_loras = 16;
    p.max_lora_rank = 64;
    p.max_num_seqs = 32;
    p.max_model_len = 0;
    p.max_num_batched_tokens = 512;
    p.kv_cache_mib = 0;
    p.max_connections = 1024;
    p.connection_timeout_s = 30;
    p.request_timeout_s = 30;
    p.max_body_bytes = 8u << 20;
    p.drain_timeout_s = 30.0;
    p.max_queue = 1024;
    return p;
}

/* ---- response helpers --------------------------------------------------- */

enum MHD_Result lp__send_text(struct MHD_Connection *c, unsigned status, const char *ctype, char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(text ? strlen(text) : 0, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result res = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return res;
}

enum MHD_Result lp__send_json(struct MHD_Connection *c, unsigned status, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        text = lp__strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}");
    return lp__send_text(c, status, "application/json", text);
}

enum MHD_Result lp__send_error(struct MHD_Connection *c, unsigned status, const char *type, const char *param,
                               const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:{s:s,s:s,s:o,s:i}}", "error", "message", msg, "type", type, "param",
                          param ? json_string(param) : json_null(), "code", (int)status);
    return lp__send_json(c, status, e);
}

bool lp__authorized(lp_server *s, struct MHD_Connection *c, bool admin) {
    const char *key = admin && s->p.admin_key ? s->p.admin_key : s->p.api_key;
    if (!key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7))
        return false;
    /* constant-time compare */
    const char *got = h + 7;
    size_t a = strlen(got), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a && i < b; i++)
        diff |= (unsigned)(got[i] ^ key[i]);
    return diff == 0;
}

/* ---- connections -------------------------------------------------------- */

typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    bool too_big;
} conn_ctx;

/* ---- request deadline watchdog ------------------------------------------
 * libmicrohttpd's timeout is for inactivity: a client that sends one header
 * byte every few seconds (slowloris) or trickles its body would hold its
 * connection and thread forever. Every connection is tracked from the moment
 * a request starts arriving until it is complete; past request_timeout_s the
 * watchdog shuts the socket down, which ends the connection cleanly. */

static lp_conn_track *track_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (lp_conn_track *)ci->socket_context : NULL;
}

static void track_set(lp_server *s, lp_conn_track *t, bool receiving) {
    if (!t)
        return;
    pthread_mutex_lock(&s->track_mu);
    t->receiving = receiving;
    t->since = lp__now();
    pthread_mutex_unlock(&s->track_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    lp_server *s = cls;
    pthread_mutex_lock(&s->track_mu);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        for (int i = 0; ci && i < s->p.max_connections; i++)
            if (!s->tracks[i].used) {
                s->tracks[i] = (lp_conn_track){.used = true, .fd = ci->connect_fd, .since = lp__now(), .receiving = true};
                *socket_context = &s->tracks[i];
                break;
            }
    } else if (*socket_context) {
        ((lp_conn_track *)*socket_context)->used = false;
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->track_mu);
}

static void *watchdog_main(void *arg) {
    lp_server *s = arg;
    while (!__atomic_load_n(&s->watchdog_exit, __ATOMIC_ACQUIRE)) {
        usleep(250000);
        double now = lp__now();
        pthread_mutex_lock(&s->track_mu);
        for (int i = 0; i < s->p.max_connections; i++) {
            lp_conn_track *t = &s->tracks[i];
            if (t->used && t->receiving && now - t->since > s->p.request_timeout_s) {
                LP_INFO("closing a connection that took over %d s to send its request", s->p.request_timeout_s);
                shutdown(t->fd, SHUT_RDWR);
                t->receiving = false;
            }
        }
        pthread_mutex_unlock(&s->track_mu);
    }
    return NULL;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn_ctx *ctx = *con_cls;
    if (ctx) {
        free(ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
    /* a keep-alive connection's next request starts arriving now */
    track_set(cls, track_of(c), true);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    lp_server *s = cls;
    conn_ctx *ctx = *con_cls;
    if (!ctx) {
        ctx = calloc(1, sizeof *ctx);
        if (!ctx)
            return MHD_NO;
        *con_cls = ctx;
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (te && cl)
            return lp__send_error(c, 400, "BadRequestError", NULL,
                                  "both Content-Length and Transfer-Encoding given");
        if (cl) {
            char *end = NULL;
            long long n = strtoll(cl, &end, 10);
            if (end == cl || *end || n < 0)
                return lp__send_error(c, 400, "BadRequestError", NULL, "bad Content-Length");
            /* far too large: refuse at once (the connection closes); a little too
             * large: read and discard it, so the client sees the 413 */
            if ((uint64_t)n / 16 > s->p.max_body_bytes)
                return lp__send_error(c, 413, "RequestTooLargeError", NULL, "request body over %llu bytes",
                                      (unsigned long long)s->p.max_body_bytes);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!ctx->too_big) {
            if (ctx->len + *upload_size > s->p.max_body_bytes) {
                ctx->too_big = true;
            } else {
                if (ctx->len + *upload_size + 1 > ctx->cap) {
                    size_t cap = ctx->cap ? ctx->cap : 4096;
                    while (cap < ctx->len + *upload_size + 1)
                        cap *= 2;
                    char *b = realloc(ctx->body, cap);
                    if (!b)
                        return MHD_NO;
                    ctx->body = b;
                    ctx->cap = cap;
                }
                memcpy(ctx->body + ctx->len, upload, *upload_size);
                ctx->len += *upload_size;
                ctx->body[ctx->len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    track_set(s, track_of(c), false); /* the whole request is in */
    if (ctx->too_big)
        return lp__send_error(c, 413, "RequestTooLargeError", NULL, "request body over %llu bytes",
                              (unsigned long long)s->p.max_body_bytes);
    const char *body = ctx->body ? ctx->body : "";
    bool is_post = !strcmp(method, "POST"), is_get = !strcmp(method, "GET");
    bool open_route = !strcmp(url, "/health") || !strcmp(url, "/metrics");
    if (!open_route && !lp__authorized(s, c, false) &&
        !(strstr(url, "lora_adapter") && lp__authorized(s, c, true)))
        return lp__send_error(c, 401, "AuthenticationError", NULL, "missing or invalid API key");
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (!is_post)
            return lp__send_error(c, 405, "BadRequestError", NULL, "%s needs POST", url);
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping)
            return lp__send_error(c, 503, "ServiceUnavailableError", NULL, "the server is shutting down");
        return lp__handle_generate(s, c, strstr(url, "chat") != NULL, body, ctx->len);
    }
    bool handled = false;
    enum MHD_Result r = lp__handle_admin(s, c, method, url, body, ctx->len, &handled);
    if (handled)
        return r;
    (void)is_get;
    return lp__send_error(c, 404, "NotFoundError", NULL, "no route for %s %s", method, url);
}

/* ---- start-up ----------------------------------------------------------- */

static void progress_bar(double frac, void *ud) {
    static int last = -1;
    int pct = (int)(frac * 100.0);
    if (pct == last)
        return;
    last = pct;
    int w = 30, fill = (int)(frac * w);
    fprintf(stderr, "\rloading weights [");
    for (int i = 0; i < w; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%%%s", pct, frac >= 1.0 ? "\n" : "");
    fflush(stderr);
}

/* KV cache sizing. The CPU default is a fixed size; on CUDA the default is
 * what the GPU has free (like vLLM's gpu_memory_utilization): 85% of its free
 * memory, less the weights and scratch for activations and cuBLAS. */
#define KV_CPU_DEFAULT_MIB 512
#define KV_GPU_MEM_FRACTION 0.85
#define KV_GPU_SCRATCH_BYTES ((double)(1u << 30))
#define KV_MAX_AUTO_BLOCKS (1 << 20) /* 16M tokens; keeps the pool's host bookkeeping ~120 MiB */

static void log_device(const char *device) {
    size_t free_b = 0, total_b = 0;
    if (!strcmp(device, "cuda") && lp_cuda_mem_info(&free_b, &total_b, NULL) == LP_OK)
        LP_INFO("device: cuda (%.0f MiB free of %.0f MiB)", (double)free_b / 1048576.0,
                (double)total_b / 1048576.0);
    else
        LP_INFO("device: %s", device);
}

/* The device tier's bytes budget: --max-lora-mib, or on CUDA room for
 * max_loras adapters of max_lora_rank on all seven modules in fp32 (PEFT's
 * usual file dtype, which the GPU keeps) with DoRA vectors and the layout's
 * alignment - so that any max_loras adapters the store admits fit at once.
 * 0 (no limit but the slots) on the CPU, whose slots reference the host tier. */
static uint64_t lora_budget(const lp_server *s, const char *device) {
    const lp_server_params *p = &s->p;
    if (p->max_lora_mib > 0)
        return (uint64_t)p->max_lora_mib << 20;
    if (strcmp(device, "cuda"))
        return 0;
    const lp_model_config *c = lp_model_get_config(s->model);
    double D = c->hidden, F = c->ffn, Q = (double)c->n_heads * c->head_dim, KV = (double)c->n_kv_heads * c->head_dim;
    double in_out = 7 * D + 2 * Q + 2 * KV + 3 * F, outs = Q + 2 * KV + 2 * D + 2 * F;
    double per = (double)c->n_layers * ((double)p->max_lora_rank * in_out * 4 + outs * 4 + 7 * 3 * 256);
    return (uint64_t)(per * p->max_loras);
}

/* Blocks that fit in the GPU's free memory; an error naming the numbers when
 * even the `need` blocks of one max_model_len sequence do not. */
static int gpu_kv_blocks(const lp_server *s, size_t per_block, int need, int *out, lp_error *err) {
    size_t free_b = 0, total_b = 0;
    if (lp_cuda_mem_info(&free_b, &total_b, err))
        return lp_error_prefix(err, "device cuda");
    double weights = (double)lp_model_weight_bytes(s->model), adapters = (double)s->lora_budget;
    double avail = KV_GPU_MEM_FRACTION * (double)free_b - weights - adapters - KV_GPU_SCRATCH_BYTES;
    double blocks = avail > 0 ? avail / (double)per_block : 0;
    if (blocks < need)
        return lp_error_set(err, LP_ERR_NOMEM,
                            "device cuda: the KV cache for --max-model-len %d needs %.0f MiB, but %.0f%% of the "
                            "%.0f MiB free on the GPU less %.0f MiB of weights, %.0f MiB for adapters and %.0f MiB "
                            "of scratch leaves %.0f MiB; lower --max-model-len, --max-loras or --max-lora-mib, or "
                            "give --kv-cache-mib",
                            s->p.max_model_len, (double)need * (double)per_block / 1048576.0,
                            KV_GPU_MEM_FRACTION * 100.0, (double)free_b / 1048576.0, weights / 1048576.0,
                            adapters / 1048576.0, KV_GPU_SCRATCH_BYTES / 1048576.0,
                            (avail > 0 ? avail : 0) / 1048576.0);
    *out = blocks > KV_MAX_AUTO_BLOCKS ? KV_MAX_AUTO_BLOCKS : (int)blocks;
    return LP_OK;
}

/* KV blocks for `device`: --kv-cache-mib (or kv_blocks) when given, else the
 * device's default; never fewer than one max_model_len sequence needs. */
static int choose_kv_blocks(const lp_server *s, const char *device, size_t per_block, int *out, lp_error *err) {
    const lp_server_params *p = &s->p;
    int need = (p->max_model_len + 15) / 16;
    if (p->kv_blocks > 0) {
        *out = p->kv_blocks;
    } else if (p->kv_cache_mib > 0 || strcmp(device, "cuda")) {
        size_t mib = p->kv_cache_mib > 0 ? (size_t)p->kv_cache_mib : KV_CPU_DEFAULT_MIB;
        *out = (int)((mib << 20) / per_block);
    } else {
        int rc = gpu_kv_blocks(s, per_block, need, out, err);
        if (rc)
            return rc;
    }
    if (*out < need)
        *out = need;
    return LP_OK;
}

static int setup(lp_server *s, lp_error *err) {
    const lp_server_params *p = &s->p;
    int rc;
    double t0 = lp__now();
    const char *device = lp_backend_resolve(p->device);
    if (!device)
        return lp_error_set(err, LP_ERR_INVALID, "unknown device '%s' (expected auto, cpu or cuda)", p->device);
    if ((rc = lp_model_load(p->model_dir, &s->model, isatty(2) ? progress_bar : NULL, NULL, err)))
        return rc;
    s->tok = lp_model_tokenizer(s->model);
    if (!s->tok)
        return lp_error_set(err, LP_ERR_NOT_FOUND, "%s: the server needs tokenizer.json", p->model_dir);
    const lp_model_config *c = lp_model_get_config(s->model);
    if (s->p.max_model_len <= 0 || s->p.max_model_len > c->max_pos)
        s->p.max_model_len = c->max_pos;
    log_device(device);
    lp_backend_params bp = lp_backend_default_params();
    bp.block_size = 16;
    size_t per_block = lp_backend_kv_block_bytes(device, s->model, bp.block_size);
    s->lora_budget = lora_budget(s, device);
    if ((rc = choose_kv_blocks(s, device, per_block, &bp.n_kv_blocks, err)))
        return rc;
    bp.max_rows = p->max_num_seqs;
    bp.max_logit_rows = p->max_num_seqs;
    bp.max_tokens = p->max_num_batched_tokens;
    bp.max_adapters = p->max_loras;
    bp.max_lora_rank = p->max_lora_rank;
    bp.n_threads = p->threads;
    if ((rc = lp_backend_new(device, s->model, &bp, &s->be, err)))
        return rc;
    lp_engine_params ep = lp_engine_default_params();
    ep.max_num_seqs = p->max_num_seqs;
    ep.max_model_len = s->p.max_model_len;
    ep.max_num_batched_tokens = p->max_num_batched_tokens;
    if ((rc = lp_engine_new(s->be, &ep, &s->engine, err)))
        return rc;
    lp_store_params sp = {.lora_dir = p->lora_dir, .max_cpu_loras = p->max_cpu_loras, .max_loras = p->max_loras,
                          .max_lora_rank = p->max_lora_rank, .max_lora_bytes = s->lora_budget};
    if ((rc = lp_store_new(s->model, s->be, &sp, &s->store, err)))
        return rc;
    for (int i = 0; i < p->n_lora_modules; i++) {
        const char *eq = strchr(p->lora_modules[i], '=');
        if (!eq)
            return lp_error_set(err, LP_ERR_INVALID, "--lora-modules %s: expected name=path", p->lora_modules[i]);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - p->lora_modules[i]), p->lora_modules[i]);
        if ((rc = lp_store_register(s->store, name, eq + 1, false, true, err)))
            return lp_error_prefix(err, "--lora-modules %s", name);
    }
    if (p->lora_dir) {
        lp_store_scan(s->store); /* first scan records, second registers stable dirs */
        lp_store_scan(s->store);
    }
    char *src = NULL;
    lp_error terr = {0};
    if (lp_chat_template_load_model(p->model_dir, &src, &s->bos, &s->eos, &terr) == LP_OK) {
        if (lp_chat_template_compile(src, strlen(src), &s->tmpl, &terr))
            LP_WARN("chat template of %s does not compile (%s); /v1/chat/completions is disabled", p->model_dir,
                    terr.msg);
        free(src);
    } else {
        LP_INFO("%s has no chat template; /v1/chat/completions is disabled", p->model_dir);
    }
    s->active_names = calloc((size_t)p->max_cpu_loras + 1, 128);
    s->active_counts = calloc((size_t)p->max_cpu_loras + 1, sizeof(int));
    if (!s->active_names || !s->active_counts)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    LP_INFO("model %s loaded in %.2f s: %s, %d layers, context %d, KV cache %d blocks (%.0f MiB) on %s",
            s->model_id, lp__now() - t0, c->architecture, c->n_layers, s->p.max_model_len, bp.n_kv_blocks,
            (double)per_block * bp.n_kv_blocks / 1048576.0, device);
    if (s->lora_budget)
        LP_INFO("adapters: %d device slots, %.0f MiB for their weights (by each adapter's ranks; --max-lora-mib)",
                p->max_loras, (double)s->lora_budget / 1048576.0);
    return LP_OK;
}

static void teardown(lp_server *s) {
    lp_store_free(s->store);
    lp_engine_free(s->engine);
    lp_backend_free(s->be);
    lp_chat_template_free(s->tmpl);
    free(s->bos);
    free(s->eos);
    lp_model_free(s->model);
    free(s->active_names);
    free(s->active_counts);
    free(s->run);
}

int lp_server_run(const lp_server_params *params) {
    lp_server *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    s->p = *params;
    s->started = (double)time(NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->m.mu, NULL);
    pthread_mutex_init(&s->track_mu, NULL);
    s->tracks = calloc((size_t)params->max_connections, sizeof(lp_conn_track));
    if (!s->tracks) {
        free(s);
        return 1;
    }
    const char *name = params->served_name;
    if (!name) {
        size_t n = strlen(params->model_dir);
        while (n > 1 && params->model_dir[n - 1] == '/')
            n--;
        size_t b = n;
        while (b > 0 && params->model_dir[b - 1] != '/')
            b--;
        snprintf(s->model_id, sizeof s->model_id, "%.*s", (int)(n - b), params->model_dir + b);
    } else {
        snprintf(s->model_id, sizeof s->model_id, "%s", name);
    }
    srand48((long)time(NULL) ^ (long)getpid());
    /* block the stop signals in every thread; the main thread waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    lp_error err = {0};
    int status = 1;
    if (setup(s, &err)) {
        LP_ERROR("%s", err.msg);
        goto out;
    }
    if (lp__worker_start(s)) {
        LP_ERROR("cannot start the engine thread");
        goto out;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)params->port);
    if (inet_pton(AF_INET, params->host, &addr.sin_addr) != 1) {
        LP_ERROR("--host %s: not an IPv4 address", params->host);
        lp__worker_stop(s);
        goto out;
    }
    /* MHD's default socket options: SO_REUSEADDR (a restart binds past
     * TIME_WAIT) but not SO_REUSEPORT, which would let a second server bind
     * the same port and take a share of its connections without an error. */
    s->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                                  MHD_USE_ERROR_LOG,
                              (uint16_t)params->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)params->max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)params->connection_timeout_s,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
                              on_connection, s, MHD_OPTION_END);
    if (!s->mhd) {
        LP_ERROR("cannot listen on %s:%d (in use?)", params->host, params->port);
        lp__worker_stop(s);
        goto out;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0)
        s->watchdog_started = true;
    LP_INFO("serving %s on http://%s:%d  (adapters: %s)", s->model_id, params->host, params->port,
            params->lora_dir ? params->lora_dir : "none");
    LP_INFO("try: curl http://%s:%d/v1/completions -H 'Content-Type: application/json' "
            "-d '{\"model\": \"%s\", \"prompt\": \"The computer\", \"max_tokens\": 32}'",
            params->host, params->port, s->model_id);
    int sig = 0;
    sigwait(&set, &sig);
    LP_INFO("signal %d: draining (no new requests; up to %.0f s for %d in flight)", sig, params->drain_timeout_s,
            s->n_active);
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    MHD_socket lsock = MHD_quiesce_daemon(s->mhd);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    double deadline = lp__now() + params->drain_timeout_s;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int active = s->n_active;
        pthread_mutex_unlock(&s->mu);
        if (active == 0 || lp__now() > deadline)
            break;
        usleep(20000);
    }
    pthread_mutex_lock(&s->mu);
    if (s->n_active)
        LP_WARN("drain deadline reached; aborting %d requests", s->n_active);
    pthread_mutex_unlock(&s->mu);
    lp__worker_stop(s); /* aborts what is left: their clients get finish_reason "abort" */
    MHD_stop_daemon(s->mhd);
    if (s->watchdog_started) {
        __atomic_store_n(&s->watchdog_exit, true, __ATOMIC_RELEASE);
        pthread_join(s->watchdog, NULL);
    }
    LP_INFO("stopped");
    status = 0;
out:
    teardown(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->m.mu);
    pthread_mutex_destroy(&s->track_mu);
    free(s->tracks);
    free(s);
    return status;
}
