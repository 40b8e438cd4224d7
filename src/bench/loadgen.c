/* loadgen.c - the load generator behind `loraplex bench` (see loadgen.h).
 * Each request streams; a request's TTFT is the time to its first non-empty
 * chunk, its ITL the mean gap between later chunks, its TPOT
 * (e2e - TTFT) / (output tokens - 1), output tokens from the usage chunk. */
#include "bench/loadgen.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

lp_bench_params lp_bench_default_params(void) {
    lp_bench_params p;
    memset(&p, 0, sizeof p);
    p.url = "http://127.0.0.1:8000";
    p.dist = LP_DIST_UNIFORM;
    p.concurrency = 1;
    p.requests = 100;
    p.isl = 128;
    p.osl = 64;
    p.seed = 1;
    p.timeout_s = 600;
    p.progress = true;
    return p;
}

typedef struct rec {
    int choice;       /* index into the model list */
    int status;       /* HTTP status, 0 = transport error */
    double t0, t_first, t_last, t_end;
    int chunks;
    int out_tokens, in_tokens;
    double gap_sum;   /* sum of inter-chunk gaps after the first */
} rec;

typedef struct stats {
    double mean, p50, p90, p99, min, max;
    int n;
} stats;

struct lp_bench_result {
    char **models;    /* choices: adapters (+ base) */
    int n_models;
    rec *recs;
    int n_recs, cap;
    double t_start, t_end;
    pthread_mutex_t mu;
};

typedef struct shared {
    const lp_bench_params *p;
    lp_bench_result *r;
    int32_t *pool;    /* token ids to slice prompts from */
    int pool_n;
    char **texts;     /* pre-built prompt texts for chat (one per slot) */
    double *zipf_cdf;
    int next_req;     /* requests started (warmup included) */
    int done_req;
    int rr;
    uint64_t rng;
    double deadline;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* rate mode queue */
    double *arrivals;
    int q_head, q_tail, q_cap;
    bool dispatch_done;
} shared;

static double now(void) { return lp__now(); }

static uint64_t xs(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
static double unif(uint64_t *s) { return (double)(xs(s) >> 11) * 0x1.0p-53; }
static double normal(uint64_t *s) {
    double u = unif(s) + 1e-12, v = unif(s);
    return sqrt(-2.0 * log(u)) * cos(2 * M_PI * v);
}

/* ---- HTTP --------------------------------------------------------------- */

typedef struct membuf {
    char *p;
    size_t n, cap;
} membuf;

static size_t collect(char *ptr, size_t sz, size_t nm, void *ud) {
    membuf *b = ud;
    size_t n = sz * nm;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 4096;
        while (c < b->n + n + 1)
            c *= 2;
        char *q = realloc(b->p, c);
        if (!q)
            return 0;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static struct curl_slist *headers(const lp_bench_params *p) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (p->api_key) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", p->api_key);
        h = curl_slist_append(h, auth);
    }
    return h;
}

/* Simple request; returns the body (heap) and status. */
static char *http(const lp_bench_params *p, const char *path, const char *body, long *status) {
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", p->url, path);
    membuf b = {0};
    struct curl_slist *h = headers(p);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : lp__strdup("");
}

/* Streaming request state. */
typedef struct stream {
    membuf buf;
    size_t scan;
    rec *r;
    bool chat;
} stream;

static void on_event(stream *s, const char *data, size_t n) {
    if (n == 6 && !memcmp(data, "[DONE]", 6))
        return;
    json_t *o = json_loadb(data, n, 0, NULL);
    if (!o)
        return;
    json_t *u = json_object_get(o, "usage");
    if (json_is_object(u)) {
        s->r->out_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        s->r->in_tokens = (int)json_integer_value(json_object_get(u, "prompt_tokens"));
    }
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    const char *text = NULL;
    if (ch) {
        json_t *t = s->chat ? json_object_get(json_object_get(ch, "delta"), "content") : json_object_get(ch, "text");
        text = json_string_value(t);
    }
    if (text && text[0]) {
        double t = now();
        if (s->r->chunks == 0)
            s->r->t_first = t;
        else
            s->r->gap_sum += t - s->r->t_last;
        s->r->t_last = t;
        s->r->chunks++;
    }
    json_decref(o);
}

static size_t stream_write(char *ptr, size_t sz, size_t nm, void *ud) {
    stream *s = ud;
    size_t n = collect(ptr, sz, nm, &s->buf);
    if (n == 0)
        return 0;
    for (;;) { /* complete events end with a blank line */
        char *end = strstr(s->buf.p + s->scan, "\n\n");
        if (!end)
            break;
        const char *line = s->buf.p + s->scan;
        if (!strncmp(line, "data: ", 6))
            on_event(s, line + 6, (size_t)(end - line - 6));
        s->scan = (size_t)(end - s->buf.p) + 2;
    }
    if (s->scan > 65536) { /* compact */
        memmove(s->buf.p, s->buf.p + s->scan, s->buf.n - s->scan + 1);
        s->buf.n -= s->scan;
        s->scan = 0;
    }
    return n;
}

/* ---- prompts and choices ------------------------------------------------ */

static const char *k_words[] = {"time", "people", "way", "water", "words", "number", "system", "program", "world",
                                "computer", "history", "light", "music", "reason", "fortune", "future", "garden",
                                "river", "mountain", "question", "answer", "simple", "quiet", "bright", "ancient",
                                "clever", "gentle", "strange", "wisdom", "journey", "silver", "window", "paper",
                                "machine", "dream", "evening", "market", "winter", "summer", "friend"};

static int prepare_prompts(shared *sh) {
    const lp_bench_params *p = sh->p;
    /* a long text of random words, tokenized once by the server */
    uint64_t s = p->seed * 2654435761u + 1;
    size_t want = (size_t)(p->isl + 4 * (p->isl_stddev + 1)) * 3 + 4096;
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < want; i++) {
        const char *w = k_words[xs(&s) % (sizeof k_words / sizeof k_words[0])];
        if (len + strlen(w) + 2 > cap) {
            cap = cap ? cap * 2 : 65536;
            text = realloc(text, cap);
            if (!text)
                return -1;
        }
        len += (size_t)snprintf(text + len, cap - len, "%s%s", i ? " " : "", w);
    }
    json_t *req = json_pack("{s:s,s:b}", "prompt", text, "add_special_tokens", 0);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    free(text);
    long status = 0;
    char *resp = body ? http(p, "/tokenize", body, &status) : NULL;
    free(body);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    json_t *toks = json_object_get(o, "tokens");
    if (status != 200 || !json_is_array(toks) || json_array_size(toks) < (size_t)p->isl + 16) {
        fprintf(stderr, "bench: %s/tokenize did not answer (status %ld); it is needed to build prompts of exactly "
                        "ISL tokens\n", p->url, status);
        json_decref(o);
        return -1;
    }
    sh->pool_n = (int)json_array_size(toks);
    sh->pool = malloc(sizeof(int32_t) * (size_t)sh->pool_n);
    for (int i = 0; sh->pool && i < sh->pool_n; i++)
        sh->pool[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));
    json_decref(o);
    return sh->pool ? 0 : -1;
}

static int pick_choice(shared *sh) {
    const lp_bench_params *p = sh->p;
    int n = sh->r->n_models;
    switch (p->dist) {
    case LP_DIST_ROUND_ROBIN:
        return sh->rr++ % n;
    case LP_DIST_ZIPF: {
        double u = unif(&sh->rng);
        for (int i = 0; i < n; i++)
            if (u <= sh->zipf_cdf[i])
                return i;
        return n - 1;
    }
    case LP_DIST_HOT: {
        int hot = (int)ceil((1.0 - p->dist_param) * n);
        if (hot < 1)
            hot = 1;
        if (hot >= n || unif(&sh->rng) < p->dist_param)
            return (int)(xs(&sh->rng) % (uint64_t)hot);
        return hot + (int)(xs(&sh->rng) % (uint64_t)(n - hot));
    }
    default:
        return (int)(xs(&sh->rng) % (uint64_t)n);
    }
}

/* Build one request body; returns the model choice. */
static char *build_request(shared *sh, int *choice) {
    const lp_bench_params *p = sh->p;
    pthread_mutex_lock(&sh->mu);
    *choice = pick_choice(sh);
    int isl = p->isl, osl = p->osl;
    if (p->isl_stddev > 0)
        isl = (int)lround(p->isl + p->isl_stddev * normal(&sh->rng));
    if (p->osl_stddev > 0)
        osl = (int)lround(p->osl + p->osl_stddev * normal(&sh->rng));
    isl = LP_MAX(1, LP_MIN(isl, sh->pool_n - 1));
    osl = LP_MAX(1, osl);
    int off = (int)(xs(&sh->rng) % (uint64_t)(sh->pool_n - isl));
    pthread_mutex_unlock(&sh->mu);
    json_t *ids = json_array();
    for (int i = 0; i < isl; i++)
        json_array_append_new(ids, json_integer(sh->pool[off + i]));
    json_t *req = json_pack("{s:s,s:i,s:b,s:{s:b},s:f}", "model", sh->r->models[*choice], "max_tokens", osl,
                            "stream", 1, "stream_options", "include_usage", 1, "temperature", 0.0);
    if (p->ignore_eos)
        json_object_set_new(req, "ignore_eos", json_true());
    if (p->chat) {
        /* chat: the prompt text of those ids (the template adds a few tokens) */
        char *body = json_dumps(json_pack("{s:o}", "tokens", ids), JSON_COMPACT);
        long st = 0;
        char *resp = body ? http(p, "/detokenize", body, &st) : NULL;
        free(body);
        json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
        free(resp);
        const char *text = json_string_value(json_object_get(o, "prompt"));
        json_object_set_new(req, "messages", json_pack("[{s:s,s:s}]", "role", "user", "content", text ? text : "hello"));
        json_decref(o);
    } else {
        json_object_set_new(req, "prompt", ids);
    }
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

static void one_request(shared *sh, CURL *c, bool record, double t_arrival) {
    const lp_bench_params *p = sh->p;
    int choice;
    char *body = build_request(sh, &choice);
    rec r = {.choice = choice, .t0 = t_arrival > 0 ? t_arrival : now()};
    stream st = {.r = &r, .chat = p->chat};
    char url[2048];
    snprintf(url, sizeof url, "%s%s", p->url, p->chat ? "/v1/chat/completions" : "/v1/completions");
    struct curl_slist *h = headers(p);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(p->timeout_s * 1000));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    r.status = (int)status;
    r.t_end = now();
    if (r.status == 200 && r.out_tokens == 0)
        r.out_tokens = r.chunks;
    curl_slist_free_all(h);
    free(st.buf.p);
    free(body);
    if (!record)
        return;
    lp_bench_result *res = sh->r;
    pthread_mutex_lock(&res->mu);
    if (res->n_recs == res->cap) {
        int cap = res->cap ? 2 * res->cap : 1024;
        rec *q = realloc(res->recs, sizeof(rec) * (size_t)cap);
        if (q) {
            res->recs = q;
            res->cap = cap;
        }
    }
    if (res->n_recs < res->cap)
        res->recs[res->n_recs++] = r;
    pthread_mutex_unlock(&res->mu);
}

/* Claim the next request index; -1 when the run is over. */
static int claim(shared *sh) {
    const lp_bench_params *p = sh->p;
    pthread_mutex_lock(&sh->mu);
    int i = -1;
    bool by_count = p->requests > 0;
    if ((by_count && sh->next_req < p->warmup + p->requests) ||
        (!by_count && (sh->next_req < p->warmup || now() < sh->deadline)))
        i = sh->next_req++;
    pthread_mutex_unlock(&sh->mu);
    return i;
}

static void progress(shared *sh) {
    const lp_bench_params *p = sh->p;
    if (!p->progress)
        return;
    pthread_mutex_lock(&sh->r->mu);
    int done = sh->r->n_recs, errs = 0;
    for (int i = 0; i < done; i++)
        errs += sh->r->recs[i].status != 200;
    pthread_mutex_unlock(&sh->r->mu);
    double frac = p->requests > 0 ? (double)done / p->requests
                                  : LP_MIN(1.0, (now() - sh->r->t_start) / LP_MAX(p->duration_s, 1e-9));
    int w = 30, fill = (int)(LP_MIN(frac, 1.0) * w);
    fprintf(stderr, "\r[");
    for (int i = 0; i < w; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %d done, %d errors, %.0f s", done, errs, now() - sh->r->t_start);
    fflush(stderr);
}

static void *closed_worker(void *arg) {
    shared *sh = arg;
    CURL *c = curl_easy_init();
    int i;
    while (c && (i = claim(sh)) >= 0) {
        if (i == sh->p->warmup) {
            pthread_mutex_lock(&sh->r->mu);
            if (sh->r->t_start == 0)
                sh->r->t_start = now();
            pthread_mutex_unlock(&sh->r->mu);
        }
        one_request(sh, c, i >= sh->p->warmup, 0);
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* Open loop: workers take arrival times from the dispatcher's queue. */
static void *open_worker(void *arg) {
    shared *sh = arg;
    CURL *c = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        while (sh->q_head == sh->q_tail && !sh->dispatch_done)
            pthread_cond_wait(&sh->cv, &sh->mu);
        if (sh->q_head == sh->q_tail && sh->dispatch_done) {
            pthread_mutex_unlock(&sh->mu);
            break;
        }
        double t = sh->arrivals[sh->q_head % sh->q_cap];
        int idx = sh->q_head++;
        pthread_mutex_unlock(&sh->mu);
        if (c)
            one_request(sh, c, idx >= sh->p->warmup, t);
    }
    curl_easy_cleanup(c);
    return NULL;
}

lp_bench_result *lp_bench_run(const lp_bench_params *p) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    lp_bench_result *r = calloc(1, sizeof *r);
    shared sh;
    memset(&sh, 0, sizeof sh);
    sh.p = p;
    sh.r = r;
    sh.rng = p->seed * 0x9e3779b97f4a7c15ull + 7;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    pthread_mutex_init(&r->mu, NULL);
    /* the model choices */
    r->models = calloc((size_t)p->n_adapters + 1, sizeof(char *));
    for (int i = 0; i < p->n_adapters; i++)
        r->models[r->n_models++] = lp__strdup(p->adapters[i]);
    if (p->include_base || p->n_adapters == 0) {
        const char *base = p->base_model;
        char *found = NULL;
        if (!base) {
            long st = 0;
            char *resp = http(p, "/v1/models", NULL, &st);
            json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
            free(resp);
            size_t i;
            json_t *m;
            json_array_foreach(json_object_get(o, "data"), i, m) {
                json_t *parent = json_object_get(m, "parent");
                if (!found && (!parent || json_is_null(parent)))
                    found = lp__strdup(json_string_value(json_object_get(m, "id")));
            }
            json_decref(o);
            if (!found) {
                fprintf(stderr, "bench: cannot find the base model at %s/v1/models (use --model)\n", p->url);
                lp_bench_result_free(r);
                return NULL;
            }
            base = found;
        }
        r->models[r->n_models++] = lp__strdup(base);
        free(found);
    }
    if (p->dist == LP_DIST_ZIPF) {
        sh.zipf_cdf = calloc((size_t)r->n_models, sizeof(double));
        double z = 0;
        for (int i = 0; i < r->n_models; i++)
            z += 1.0 / pow(i + 1, p->dist_param);
        double c = 0;
        for (int i = 0; i < r->n_models; i++)
            sh.zipf_cdf[i] = (c += 1.0 / pow(i + 1, p->dist_param) / z);
    }
    if (prepare_prompts(&sh)) {
        free(sh.zipf_cdf);
        lp_bench_result_free(r);
        return NULL;
    }
    sh.deadline = now() + p->duration_s;
    if (p->request_rate <= 0) {
        int n = LP_MAX(1, p->concurrency);
        pthread_t *th = calloc((size_t)n, sizeof(pthread_t));
        int started = 0;
        for (int i = 0; th && i < n; i++)
            started += pthread_create(&th[i], NULL, closed_worker, &sh) == 0;
        while (1) {
            pthread_mutex_lock(&sh.mu);
            bool over = (p->requests > 0 && sh.next_req >= p->warmup + p->requests) ||
                        (p->requests <= 0 && now() >= sh.deadline);
            pthread_mutex_unlock(&sh.mu);
            progress(&sh);
            if (over)
                break;
            usleep(200000);
        }
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        free(th);
    } else {
        int total = p->requests > 0 ? p->warmup + p->requests : 1 << 20;
        sh.q_cap = total;
        sh.arrivals = calloc((size_t)LP_MIN(total, 1 << 20), sizeof(double));
        int n_workers = 256;
        pthread_t th[256];
        int started = 0;
        for (int i = 0; i < n_workers; i++)
            started += pthread_create(&th[i], NULL, open_worker, &sh) == 0;
        r->t_start = now();
        double next = now();
        double last_progress = 0;
        for (int i = 0; i < total; i++) {
            if (p->requests <= 0 && now() >= sh.deadline)
                break;
            next += -log(1.0 - unif(&sh.rng)) / p->request_rate;
            double wait = next - now();
            if (wait > 0)
                usleep((useconds_t)(wait * 1e6));
            pthread_mutex_lock(&sh.mu);
            sh.arrivals[sh.q_tail++ % sh.q_cap] = now();
            pthread_cond_signal(&sh.cv);
            pthread_mutex_unlock(&sh.mu);
            if (now() - last_progress > 0.2) {
                progress(&sh);
                last_progress = now();
            }
        }
        pthread_mutex_lock(&sh.mu);
        sh.dispatch_done = true;
        pthread_cond_broadcast(&sh.cv);
        pthread_mutex_unlock(&sh.mu);
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        free(sh.arrivals);
    }
    r->t_end = now();
    if (r->t_start == 0)
        r->t_start = r->t_end;
    progress(&sh);
    if (p->progress)
        fputc('\n', stderr);
    free(sh.pool);
    free(sh.zipf_cdf);
    pthread_mutex_destroy(&sh.mu);
    pthread_cond_destroy(&sh.cv);
    return r;
}

void lp_bench_result_free(lp_bench_result *r) {
    if (!r)
        return;
    for (int i = 0; i < r->n_models; i++)
        free(r->models[i]);
    free(r->models);
    free(r->recs);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- statistics and reports --------------------------------------------- */

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static stats stats_of(double *v, int n) {
    stats s = {0};
    s.n = n;
    if (!n)
        return s;
    qsort(v, (size_t)n, sizeof(double), cmpd);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    s.mean = sum / n;
    s.min = v[0];
    s.max = v[n - 1];
#define PCT(q) v[LP_MIN(n - 1, (int)ceil((q) / 100.0 * n) - 1 < 0 ? 0 : (int)ceil((q) / 100.0 * n) - 1)]
    s.p50 = PCT(50);
    s.p90 = PCT(90);
    s.p99 = PCT(99);
#undef PCT
    return s;
}

typedef enum { M_TTFT, M_ITL, M_TPOT, M_E2E } metric_kind;

/* Metric values (ms) of successful requests of `choice` (-1 = all). */
static stats metric(const lp_bench_result *r, metric_kind k, int choice) {
    double *v = malloc(sizeof(double) * (size_t)(r->n_recs ? r->n_recs : 1));
    int n = 0;
    for (int i = 0; v && i < r->n_recs; i++) {
        const rec *x = &r->recs[i];
        if (x->status != 200 || (choice >= 0 && x->choice != choice) || x->chunks == 0)
            continue;
        double val;
        switch (k) {
        case M_TTFT: val = x->t_first - x->t0; break;
        case M_ITL:
            if (x->chunks < 2)
                continue;
            val = x->gap_sum / (x->chunks - 1);
            break;
        case M_TPOT:
            if (x->out_tokens < 2)
                continue;
            val = (x->t_end - x->t_first) / (x->out_tokens - 1);
            break;
        default: val = x->t_end - x->t0; break;
        }
        v[n++] = val * 1e3;
    }
    stats s = stats_of(v, n);
    free(v);
    return s;
}

static json_t *stats_json(stats s) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:i}", "mean", s.mean, "p50", s.p50, "p90", s.p90, "p99", s.p99, "min",
                     s.min, "max", s.max, "n", s.n);
}

static void totals(const lp_bench_result *r, int choice, long *ok, long *out, long *in) {
    *ok = *out = *in = 0;
    for (int i = 0; i < r->n_recs; i++) {
        const rec *x = &r->recs[i];
        if (choice >= 0 && x->choice != choice)
            continue;
        if (x->status == 200) {
            (*ok)++;
            *out += x->out_tokens;
            *in += x->in_tokens;
        }
    }
}

double lp_bench_output_tps(const lp_bench_result *r) {
    long ok, out, in;
    totals(r, -1, &ok, &out, &in);
    double wall = r->t_end - r->t_start;
    return wall > 0 ? out / wall : 0;
}
double lp_bench_ttft_p50_ms(const lp_bench_result *r) { return metric(r, M_TTFT, -1).p50; }
double lp_bench_itl_p50_ms(const lp_bench_result *r) { return metric(r, M_ITL, -1).p50; }

char *lp_bench_json(const lp_bench_result *r, const lp_bench_params *p) {
    long ok, out, in;
    totals(r, -1, &ok, &out, &in);
    double wall = r->t_end - r->t_start;
    json_t *errors = json_object();
    for (int i = 0; i < r->n_recs; i++)
        if (r->recs[i].status != 200) {
            char k[16];
            snprintf(k, sizeof k, "%d", r->recs[i].status);
            json_t *v = json_object_get(errors, k);
            json_object_set_new(errors, k, json_integer(v ? json_integer_value(v) + 1 : 1));
        }
    json_t *per = json_object();
    for (int c = 0; c < r->n_models; c++) {
        long cok, cout, cin;
        totals(r, c, &cok, &cout, &cin);
        int total = 0;
        for (int i = 0; i < r->n_recs; i++)
            total += r->recs[i].choice == c;
        json_object_set_new(per, r->models[c],
                            json_pack("{s:i,s:I,s:I,s:o,s:o,s:o,s:o}", "requests", total, "requests_completed",
                                      (json_int_t)cok, "output_tokens", (json_int_t)cout, "ttft_ms",
                                      stats_json(metric(r, M_TTFT, c)), "itl_ms", stats_json(metric(r, M_ITL, c)),
                                      "tpot_ms", stats_json(metric(r, M_TPOT, c)), "e2e_ms",
                                      stats_json(metric(r, M_E2E, c))));
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:f,s:i,s:i,s:i,s:I,s:I,s:I,s:f,s:o,s:o,s:o,s:o,s:f,s:f,s:f,s:o,s:o}",
                          "url", p->url, "endpoint", p->chat ? "chat" : "completions", "concurrency", p->concurrency,
                          "request_rate", p->request_rate, "isl", p->isl, "osl", p->osl, "requests", r->n_recs,
                          "requests_completed", (json_int_t)ok, "output_tokens", (json_int_t)out, "input_tokens",
                          (json_int_t)in, "duration_s", wall, "ttft_ms", stats_json(metric(r, M_TTFT, -1)), "itl_ms",
                          stats_json(metric(r, M_ITL, -1)), "tpot_ms", stats_json(metric(r, M_TPOT, -1)), "e2e_ms",
                          stats_json(metric(r, M_E2E, -1)), "output_tokens_per_s", wall > 0 ? out / wall : 0.0,
                          "total_tokens_per_s", wall > 0 ? (out + in) / wall : 0.0, "requests_per_s",
                          wall > 0 ? ok / wall : 0.0, "errors", errors, "per_adapter", per);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    json_decref(o);
    return s;
}

void lp_bench_print(const lp_bench_result *r, const lp_bench_params *p) {
    long ok, out, in;
    totals(r, -1, &ok, &out, &in);
    double wall = r->t_end - r->t_start;
    printf("%s  %s  %s=%g  ISL %d  OSL %d  models %d\n", p->url, p->chat ? "chat" : "completions",
           p->request_rate > 0 ? "rate" : "concurrency", p->request_rate > 0 ? p->request_rate : (double)p->concurrency,
           p->isl, p->osl, r->n_models);
    printf("%-22s %10s %10s %10s %10s %10s %10s\n", "metric", "mean", "p50", "p90", "p99", "min", "max");
    static const char *names[] = {"time to first token ms", "inter-token latency ms", "time per output tok ms",
                                  "end-to-end latency ms"};
    for (int k = 0; k < 4; k++) {
        stats s = metric(r, (metric_kind)k, -1);
        printf("%-22s %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", names[k], s.mean, s.p50, s.p90, s.p99, s.min, s.max);
    }
    printf("requests: %d sent, %ld completed, %d errors in %.2f s\n", r->n_recs, ok, r->n_recs - (int)ok, wall);
    printf("throughput: %.2f output tokens/s, %.2f total tokens/s, %.3f requests/s\n", wall > 0 ? out / wall : 0,
           wall > 0 ? (out + in) / wall : 0, wall > 0 ? ok / wall : 0);
    if (r->n_models > 1) {
        printf("%-24s %9s %9s %12s %12s\n", "per adapter", "requests", "ok", "ttft p50 ms", "itl p50 ms");
        for (int c = 0; c < r->n_models; c++) {
            long cok, cout, cin;
            totals(r, c, &cok, &cout, &cin);
            int total = 0;
            for (int i = 0; i < r->n_recs; i++)
                total += r->recs[i].choice == c;
            printf("%-24.24s %9d %9ld %12.2f %12.2f\n", r->models[c], total, cok, metric(r, M_TTFT, c).p50,
                   metric(r, M_ITL, c).p50);
        }
    }
}

/* ---- SVG ---------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sp(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sp(sbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        collect(tmp, 1, (size_t)LP_MIN(n, (int)sizeof tmp - 1), (membuf *)b);
}

static void cdf_panel(sbuf *b, const lp_bench_result *r, metric_kind k, const char *title, int x0, int y0) {
    int w = 420, h = 220;
    sp(b, "<g transform=\"translate(%d,%d)\"><rect width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>", x0, y0,
       w, h);
    sp(b, "<text x=\"%d\" y=\"-8\" font-size=\"13\" text-anchor=\"middle\">%s (CDF)</text>", w / 2, title);
    double *v = malloc(sizeof(double) * (size_t)(r->n_recs ? r->n_recs : 1));
    int n = 0;
    for (int i = 0; v && i < r->n_recs; i++) {
        const rec *x = &r->recs[i];
        if (x->status != 200 || x->chunks == 0)
            continue;
        double val = k == M_TTFT ? x->t_first - x->t0 : k == M_E2E ? x->t_end - x->t0
                     : x->chunks > 1 ? x->gap_sum / (x->chunks - 1) : -1;
        if (val >= 0)
            v[n++] = val * 1e3;
    }
    if (n > 0) {
        qsort(v, (size_t)n, sizeof(double), cmpd);
        double mx = v[n - 1] > 0 ? v[n - 1] : 1;
        sp(b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
        for (int i = 0; i < n; i++)
            sp(b, "%.1f,%.1f ", v[i] / mx * w, h - (double)(i + 1) / n * h);
        sp(b, "\"/>");
        sp(b, "<text x=\"0\" y=\"%d\" font-size=\"11\">0</text><text x=\"%d\" y=\"%d\" font-size=\"11\" "
              "text-anchor=\"end\">%.1f ms</text>", h + 14, w, h + 14, mx);
        sp(b, "<text x=\"-4\" y=\"8\" font-size=\"11\" text-anchor=\"end\">1</text>");
    }
    free(v);
    sp(b, "</g>");
}

char *lp_bench_svg(const lp_bench_result *r, const lp_bench_params *p) {
    sbuf b = {0};
    sp(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"620\" font-family=\"sans-serif\">");
    sp(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>");
    sp(&b, "<text x=\"480\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">loraplex bench: %s, %s %g, ISL %d, "
           "OSL %d</text>", p->chat ? "chat" : "completions", p->request_rate > 0 ? "rate" : "concurrency",
       p->request_rate > 0 ? p->request_rate : (double)p->concurrency, p->isl, p->osl);
    cdf_panel(&b, r, M_TTFT, "time to first token", 40, 60);
    cdf_panel(&b, r, M_ITL, "inter-token latency", 500, 60);
    cdf_panel(&b, r, M_E2E, "end-to-end latency", 40, 360);
    /* throughput over time: output tokens per 1 s bin (by completion time) */
    int w = 420, h = 220, x0 = 500, y0 = 360;
    double wall = r->t_end - r->t_start;
    int bins = LP_MAX(1, LP_MIN(200, (int)ceil(wall)));
    double *tp = calloc((size_t)bins, sizeof(double));
    double mx = 1;
    for (int i = 0; tp && i < r->n_recs; i++) {
        const rec *x = &r->recs[i];
        if (x->status != 200)
            continue;
        int bi = (int)((x->t_end - r->t_start) / LP_MAX(wall, 1e-9) * bins);
        bi = LP_MAX(0, LP_MIN(bins - 1, bi));
        tp[bi] += x->out_tokens / (wall / bins);
    }
    for (int i = 0; tp && i < bins; i++)
        mx = LP_MAX(mx, tp[i]);
    sp(&b, "<g transform=\"translate(%d,%d)\"><rect width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>", x0,
       y0, w, h);
    sp(&b, "<text x=\"%d\" y=\"-8\" font-size=\"13\" text-anchor=\"middle\">output tokens/s over time</text>", w / 2);
    sp(&b, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
    for (int i = 0; tp && i < bins; i++)
        sp(&b, "%.1f,%.1f ", (i + 0.5) / bins * w, h - tp[i] / mx * h);
    sp(&b, "\"/><text x=\"-4\" y=\"8\" font-size=\"11\" text-anchor=\"end\">%.0f</text>", mx);
    sp(&b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.1f s</text></g>", w, h + 14, wall);
    free(tp);
    sp(&b, "</svg>\n");
    return b.p;
}

char *lp_bench_sweep_svg(lp_bench_result *const *rs, const int *conc, int n) {
    sbuf b = {0};
    int w = 560, h = 360, x0 = 80, y0 = 50;
    double mx = 1, my = 1;
    for (int i = 0; i < n; i++) {
        mx = LP_MAX(mx, lp_bench_itl_p50_ms(rs[i]));
        my = LP_MAX(my, lp_bench_output_tps(rs[i]));
    }
    sp(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"480\" font-family=\"sans-serif\">");
    sp(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>");
    sp(&b, "<text x=\"360\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">throughput vs inter-token latency "
           "(labels: concurrency)</text>");
    sp(&b, "<g transform=\"translate(%d,%d)\"><rect width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>", x0,
       y0, w, h);
    sp(&b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
    for (int i = 0; i < n; i++)
        sp(&b, "%.1f,%.1f ", lp_bench_itl_p50_ms(rs[i]) / mx * w, h - lp_bench_output_tps(rs[i]) / my * h);
    sp(&b, "\"/>");
    for (int i = 0; i < n; i++) {
        double x = lp_bench_itl_p50_ms(rs[i]) / mx * w, y = h - lp_bench_output_tps(rs[i]) / my * h;
        sp(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f77b4\"/><text x=\"%.1f\" y=\"%.1f\" "
               "font-size=\"11\">%d</text>", x, y, x + 6, y - 6, conc[i]);
    }
    sp(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">p50 inter-token latency (ms), max %.1f</text>",
       w / 2, h + 30, mx);
    sp(&b, "<text x=\"-50\" y=\"%d\" font-size=\"12\" transform=\"rotate(-90,-50,%d)\" text-anchor=\"middle\">output "
           "tokens/s, max %.0f</text></g></svg>\n", h / 2, h / 2, my);
    return b.p;
}
