/* server-impl.h - internals shared by the server's files: the server state,
 * generation jobs (one per choice) passed between HTTP threads and the engine
 * thread, metrics counters. */
#ifndef LP_SERVER_IMPL_H
#define LP_SERVER_IMPL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>

#include "backend/backend.h"
#include "engine/engine.h"
#include "loraplex/chat_template.h"
#include "loraplex/model.h"
#include "lora/store.h"
#include "server/server.h"

#define LP_HIST_BUCKETS 14
extern const double lp__latency_buckets[LP_HIST_BUCKETS]; /* seconds; last = +Inf */

typedef struct lp_hist {
    uint64_t b[LP_HIST_BUCKETS];
    double sum;
    uint64_t count;
} lp_hist;

void lp__hist_add(lp_hist *h, double v);

/* One generated sequence (one choice of a request). Shared by the HTTP
 * thread that created it and the engine thread; freed when both let go. */
typedef struct lp_job {
    /* set by the HTTP thread before queueing, read-only afterwards */
    int32_t *prompt;
    int n_prompt;
    lp_request req;                 /* prompt/cb/ud/adapter filled by the worker */
    lp_logit_bias *bias;
    int32_t *stop_ids;
    char adapter[128];              /* "" = base model */
    double t_arrival;

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t *tokens;                /* generated ids */
    float *logprob;                 /* per token, when req.logprobs >= 0 */
    lp_token_logprob *top;          /* per token x req.logprobs */
    int n_tokens, cap;
    float *prompt_lp;               /* (n_prompt) logprob of prompt token i, [0] unused (echo + logprobs) */
    lp_token_logprob *prompt_top;   /* (n_prompt x req.logprobs) */
    int prompt_lp_done;             /* prompt tokens reported so far (index of the next) */
    lp_finish_reason finish;
    bool done;
    int http_status;                /* error status when finish == ERROR before running */
    char error[LP_ERROR_MSG_MAX];
    bool cancelled;                 /* client gone or stop string hit */
    double t_first, t_last;
    int refs;

    struct lp_server *server;

    /* engine thread only */
    bool submitted;
    uint64_t engine_id;
    void *store_handle;
    struct lp_job *next;
} lp_job;

typedef struct lp_metrics {
    pthread_mutex_t mu;
    uint64_t requests_total, requests_ok, requests_error, requests_rejected;
    uint64_t prompt_tokens, generation_tokens;
    lp_hist ttft, itl, queue, e2e;
} lp_metrics;

/* A connection as the request watchdog sees it. */
typedef struct lp_conn_track {
    bool used;
    int fd;
    double since;     /* when the current request started arriving */
    bool receiving;   /* headers or body still arriving */
} lp_conn_track;

typedef struct lp_server lp_server;
struct lp_server {
    lp_server_params p;
    char model_id[256];
    lp_model *model;
    const lp_tokenizer *tok;
    lp_backend *be;
    lp_engine *engine;
    lp_store *store;
    uint64_t lora_budget;           /* the device tier's bytes (lp_store_params.max_lora_bytes; 0: none) */
    lp_chat_template *tmpl;         /* NULL when the model has none */
    char *bos, *eos;
    struct MHD_Daemon *mhd;
    double started;                 /* unix time of start-up */

    /* engine thread and its inbox */
    pthread_t worker;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lp_job *inbox;                  /* new jobs (HTTP -> worker) */
    lp_job *waiting;                /* worker: jobs whose adapter is not resident yet */
    int n_active;                   /* jobs accepted and not finished (guarded by mu) */
    int n_running, n_waiting;       /* mirrors for /metrics */
    double kv_usage;
    uint64_t prefix_queried, prefix_hits; /* blocks, mirrored from the engine */
    bool stopping;                  /* drain: refuse new work */
    bool worker_exit;
    /* adapters in use by accepted requests (for the host-tier 429), guarded by mu */
    char (*active_names)[128];
    int *active_counts;
    int n_active_names;
    char running_names[1024], waiting_names[1024]; /* for vllm:lora_requests_info */

    pthread_t refresher;
    bool refresher_started;
    /* request deadline watchdog: connections still receiving a request */
    pthread_t watchdog;
    bool watchdog_started, watchdog_exit;
    struct lp_conn_track *tracks;   /* (max_connections) */
    pthread_mutex_t track_mu;
    lp_metrics m;
    lp_job **run;                   /* worker: submitted jobs */
    int n_run, cap_run;
};

/* worker.c */
int lp__worker_start(lp_server *s);
void lp__worker_stop(lp_server *s);
/* Queue a job (takes one reference for the worker). Returns LP_ERR_LIMIT when
 * the distinct adapters of active requests would exceed the host tier, or
 * LP_ERR_BUSY when draining or the queue is full. */
int lp__worker_submit(lp_server *s, lp_job *j, lp_error *err);
void lp__job_cancel(lp_server *s, lp_job *j);
lp_job *lp__job_new(void);
void lp__job_unref(lp_job *j);

/* openai.c: /v1/completions and /v1/chat/completions */
enum MHD_Result lp__handle_generate(lp_server *s, struct MHD_Connection *c, bool chat, const char *body,
                                    size_t len);
/* Validate a generation request body without queueing it (fuzzing, tests):
 * 0 if it would be accepted, else -1 with the HTTP status and message. */
int lp__request_check(lp_server *s, bool chat, const char *body, size_t len, unsigned *status, char *msg,
                      size_t msgsz);
/* admin.c: everything else */
enum MHD_Result lp__handle_admin(lp_server *s, struct MHD_Connection *c, const char *method, const char *url,
                                 const char *body, size_t len, bool *handled);
/* metrics.c */
char *lp__metrics_render(lp_server *s);

/* http helpers (server.c) */
enum MHD_Result lp__send_json(struct MHD_Connection *c, unsigned status, json_t *obj); /* steals obj */
enum MHD_Result lp__send_error(struct MHD_Connection *c, unsigned status, const char *type, const char *param,
                               const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
enum MHD_Result lp__send_text(struct MHD_Connection *c, unsigned status, const char *ctype, char *text); /* steals text */
bool lp__authorized(lp_server *s, struct MHD_Connection *c, bool admin);

#endif
