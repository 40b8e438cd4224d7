/* worker.c - the engine thread: takes jobs from HTTP threads, waits for their
 * adapter to be resident in a device slot (without blocking other adapters'
 * rows), submits them to the engine, steps the engine, and hands tokens back
 * through each job's condition variable. Also the periodic adapter rescan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server-impl.h"
#include "util/log.h"
#include "util/util.h"

const double lp__latency_buckets[LP_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 1e300};

void lp__hist_add(lp_hist *h, double v) {
    for (int i = 0; i < LP_HIST_BUCKETS; i++)
        if (v <= lp__latency_buckets[i]) {
            h->b[i]++;
            break;
        }
    h->sum += v;
    h->count++;
}

lp_job *lp__job_new(void) {
    lp_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->req = lp_request_default();
    j->refs = 1;
    j->t_arrival = lp__now();
    return j;
}

void lp__job_unref(lp_job *j) {
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->prompt);
    free(j->bias);
    free(j->stop_ids);
    free(j->tokens);
    free(j->logprob);
    free(j->top);
    free(j->prompt_lp);
    free(j->prompt_top);
    free(j);
}

/* ---- adapters of accepted requests (host-tier admission) --------------- */

static int active_find(lp_server *s, const char *name) {
    for (int i = 0; i < s->n_active_names; i++)
        if (!strcmp(s->active_names[i], name))
            return i;
    return -1;
}

static void active_drop(lp_server *s, const char *name) {
    if (!name[0])
        return;
    int i = active_find(s, name);
    if (i < 0)
        return;
    if (--s->active_counts[i] == 0) {
        s->n_active_names--;
        memcpy(s->active_names[i], s->active_names[s->n_active_names], 128);
        s->active_counts[i] = s->active_counts[s->n_active_names];
    }
}

int lp__worker_submit(lp_server *s, lp_job *j, lp_error *err) {
    pthread_mutex_lock(&s->mu);
    int rc = LP_OK;
    if (s->stopping) {
        rc = lp_error_set(err, LP_ERR_BUSY, "the server is shutting down");
        goto out;
    }
    if (s->n_active >= s->p.max_queue) {
        rc = lp_error_set(err, LP_ERR_BUSY, "too many requests in flight (%d); retry later", s->n_active);
        goto out;
    }
    if (j->adapter[0]) {
        int i = active_find(s, j->adapter);
        if (i < 0) {
            if (s->n_active_names >= lp_store_max_cpu_loras(s->store)) {
                rc = lp_error_set(err, LP_ERR_LIMIT,
                                  "adapter '%s' cannot be served now: %d other adapters are in use and the host "
                                  "adapter cache holds %d; retry later",
                                  j->adapter, s->n_active_names, lp_store_max_cpu_loras(s->store));
                goto out;
            }
            i = s->n_active_names++;
            snprintf(s->active_names[i], 128, "%s", j->adapter);
            s->active_counts[i] = 0;
        }
        s->active_counts[i]++;
    }
    j->server = s;
    j->refs++; /* the worker's reference */
    j->next = NULL;
    lp_job **pp = &s->inbox;
    while (*pp)
        pp = &(*pp)->next;
    *pp = j;
    s->n_active++;
    pthread_cond_signal(&s->cv);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void lp__job_cancel(lp_server *s, lp_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = true;
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The worker lets go of a job: wake its HTTP thread, unpin its adapter. */
static void job_finish(lp_server *s, lp_job *j, lp_finish_reason why, int status, const char *msg) {
    pthread_mutex_lock(&j->mu);
    if (!j->done) {
        j->done = true;
        j->finish = why;
        j->http_status = status;
        if (msg)
            snprintf(j->error, sizeof j->error, "%s", msg);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    lp_store_release(s->store, j->store_handle);
    j->store_handle = NULL;
    for (int i = 0; i < s->n_run; i++)
        if (s->run[i] == j) {
            s->run[i] = s->run[--s->n_run];
            break;
        }
    pthread_mutex_lock(&s->mu);
    active_drop(s, j->adapter);
    s->n_active--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    lp__job_unref(j);
}

static void on_event(void *ud, const lp_token_event *ev) {
    lp_job *j = ud;
    lp_server *s = j->server;
    double now = lp__now();
    if (ev->prompt) { /* a prompt token's logprob (echo + logprobs) */
        pthread_mutex_lock(&j->mu);
        int k = j->req.logprobs > 0 ? j->req.logprobs : 0;
        int idx = j->prompt_lp_done > 0 ? j->prompt_lp_done : 1;
        if (j->prompt_lp && idx < j->n_prompt) {
            j->prompt_lp[idx] = ev->logprob;
            for (int i = 0; i < k && i < ev->n_top; i++)
                j->prompt_top[(size_t)idx * (size_t)k + (size_t)i] = ev->top[i];
            j->prompt_lp_done = idx + 1;
        }
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        return;
    }
    if (ev->token >= 0) {
        pthread_mutex_lock(&j->mu);
        if (j->n_tokens == j->cap) {
            int cap = j->cap ? 2 * j->cap : 64;
            int k = j->req.logprobs > 0 ? j->req.logprobs : 0;
            int32_t *t = realloc(j->tokens, sizeof(int32_t) * (size_t)cap);
            if (t)
                j->tokens = t;
            float *lp = j->req.logprobs >= 0 && t ? realloc(j->logprob, sizeof(float) * (size_t)cap) : NULL;
            if (lp)
                j->logprob = lp;
            lp_token_logprob *tp = k && t ? realloc(j->top, sizeof(lp_token_logprob) * (size_t)cap * (size_t)k) : NULL;
            if (tp)
                j->top = tp;
            if (t && (j->req.logprobs < 0 || lp) && (!k || tp))
                j->cap = cap;
        }
        if (j->n_tokens < j->cap) {
            j->tokens[j->n_tokens] = ev->token;
            if (j->req.logprobs >= 0) {
                j->logprob[j->n_tokens] = ev->logprob;
                for (int i = 0; i < j->req.logprobs && i < ev->n_top; i++)
                    j->top[(size_t)j->n_tokens * (size_t)j->req.logprobs + (size_t)i] = ev->top[i];
            }
            j->n_tokens++;
        }
        bool first = j->t_first == 0;
        double prev = j->t_last;
        if (first)
            j->t_first = now;
        j->t_last = now;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_mutex_lock(&s->m.mu);
        s->m.generation_tokens++;
        if (first)
            lp__hist_add(&s->m.ttft, now - j->t_arrival);
        else
            lp__hist_add(&s->m.itl, now - prev);
        pthread_mutex_unlock(&s->m.mu);
    }
    if (ev->finish != LP_FINISH_NONE) {
        pthread_mutex_lock(&s->m.mu);
        lp__hist_add(&s->m.e2e, now - j->t_arrival);
        pthread_mutex_unlock(&s->m.mu);
        job_finish(s, j, ev->finish, ev->finish == LP_FINISH_ERROR ? 500 : 0, ev->error);
    }
}

static void names_of(lp_job **v, int n, lp_job *list, char *out, size_t cap) {
    out[0] = '\0';
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0;; i++) {
            lp_job *j = pass == 0 ? (i < n ? v[i] : NULL) : list;
            if (pass == 1 && list)
                list = list->next;
            if (!j)
                break;
            if (!j->adapter[0])
                continue;
            /* distinct names only */
            size_t al = strlen(j->adapter);
            bool dup = false;
            for (const char *p = out; (p = strstr(p, j->adapter)); p += al)
                if ((p == out || p[-1] == ',') && (p[al] == ',' || p[al] == '\0'))
                    dup = true;
            if (dup || len + al + 2 >= cap)
                continue;
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", j->adapter);
        }
}

static void *worker_main(void *arg) {
    lp_server *s = arg;
    lp_error err;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        /* move new jobs to the tail of the waiting list */
        lp_job **tail = &s->waiting;
        while (*tail)
            tail = &(*tail)->next;
        *tail = s->inbox;
        s->inbox = NULL;
        bool exiting = s->worker_exit;
        bool exit_now = exiting && !s->waiting && s->n_run == 0;
        pthread_mutex_unlock(&s->mu);
        if (exit_now)
            break;
        if (exiting) { /* past the drain deadline: abort what is left */
            for (lp_job *j = s->waiting; j; j = j->next)
                lp__job_cancel(s, j);
            for (int i = 0; i < s->n_run; i++)
                lp__job_cancel(s, s->run[i]);
        }

        lp_store_collect(s->store); /* slots of adapters retired elsewhere */
        /* admit waiting jobs whose adapter is resident; others keep waiting
         * without holding up the rest (no head-of-line blocking) */
        bool pending_loads = false;
        for (lp_job **pp = &s->waiting; *pp;) {
            lp_job *j = *pp;
            pthread_mutex_lock(&j->mu);
            bool cancelled = j->cancelled;
            pthread_mutex_unlock(&j->mu);
            int slot = -1, rc = LP_OK;
            lp_error_clear(&err);
            if (cancelled) {
                *pp = j->next;
                job_finish(s, j, LP_FINISH_ABORT, 0, NULL);
                continue;
            }
            if (j->adapter[0]) {
                rc = lp_store_acquire(s->store, j->adapter, &slot, &j->store_handle, &err);
                if (rc == LP_ERR_BUSY) {
                    pending_loads = true;
                    pp = &j->next;
                    continue;
                }
            }
            *pp = j->next;
            if (rc) {
                job_finish(s, j, LP_FINISH_ERROR, rc == LP_ERR_NOT_FOUND ? 404 : 500, err.msg);
                continue;
            }
            j->req.prompt = j->prompt;
            j->req.n_prompt = j->n_prompt;
            j->req.adapter = slot;
            if (j->store_handle) { /* KV is shared only under the same weights and scale */
                uint32_t sb;
                memcpy(&sb, &j->req.adapter_scale, 4);
                j->req.cache_key = (lp_store_handle_uid(j->store_handle) << 32) ^ sb ^ 0x5bd1e995u;
            }
            j->req.cb = on_event;
            j->req.ud = j;
            j->req.sampling.logit_bias = j->bias;
            j->req.stop_ids = j->stop_ids;
            pthread_mutex_lock(&s->m.mu);
            lp__hist_add(&s->m.queue, lp__now() - j->t_arrival);
            pthread_mutex_unlock(&s->m.mu);
            if (s->n_run == s->cap_run) {
                int cap = s->cap_run ? 2 * s->cap_run : 64;
                lp_job **r = realloc(s->run, sizeof(lp_job *) * (size_t)cap);
                if (!r) {
                    job_finish(s, j, LP_FINISH_ERROR, 500, "out of memory");
                    continue;
                }
                s->run = r;
                s->cap_run = cap;
            }
            if ((rc = lp_engine_submit(s->engine, &j->req, &j->engine_id, &err))) {
                job_finish(s, j, LP_FINISH_ERROR, 400, err.msg);
                continue;
            }
            j->submitted = true;
            s->run[s->n_run++] = j;
        }
        /* aborts of running jobs (client gone, stop string reached) */
        for (int i = 0; i < s->n_run; i++) {
            lp_job *j = s->run[i];
            pthread_mutex_lock(&j->mu);
            bool c = j->cancelled;
            pthread_mutex_unlock(&j->mu);
            if (c)
                lp_engine_abort(s->engine, j->engine_id);
        }
        int left = 0;
        if (s->n_run) {
            left = lp_engine_step(s->engine, &err);
            if (left < 0)
                LP_ERROR("engine step failed: %s", err.msg);
        }
        pthread_mutex_lock(&s->mu);
        s->n_running = lp_engine_num_running(s->engine);
        int nw = lp_engine_num_waiting(s->engine);
        for (lp_job *j = s->waiting; j; j = j->next)
            nw++;
        s->n_waiting = nw;
        s->kv_usage = lp_engine_kv_usage(s->engine);
        lp_engine_prefix_stats(s->engine, &s->prefix_queried, &s->prefix_hits);
        names_of(s->run, s->n_run, NULL, s->running_names, sizeof s->running_names);
        names_of(NULL, 0, s->waiting, s->waiting_names, sizeof s->waiting_names);
        if (!s->n_run && !s->inbox && !s->worker_exit) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long ns = ts.tv_nsec + (pending_loads ? 2000000L : 50000000L);
            ts.tv_sec += ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static void *refresher_main(void *arg) {
    lp_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->worker_exit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + s->p.lora_refresh_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->worker_exit)
            break;
        pthread_mutex_unlock(&s->mu);
        lp_store_scan(s->store);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int lp__worker_start(lp_server *s) {
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0)
        return LP_ERR_INTERNAL;
    if (s->p.lora_dir && s->p.lora_refresh_s > 0) {
        if (pthread_create(&s->refresher, NULL, refresher_main, s) == 0)
            s->refresher_started = true;
    }
    return LP_OK;
}

void lp__worker_stop(lp_server *s) {
    pthread_mutex_lock(&s->mu);
    s->worker_exit = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);
    if (s->refresher_started)
        pthread_join(s->refresher, NULL);
}
