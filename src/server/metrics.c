/* metrics.c - Prometheus text exposition: the vLLM series the Gateway API
 * Inference Extension and AIBrix read, plus loraplex_* adapter-cache,
 * latency and token series. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server-impl.h"
#include "util/util.h"

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return;
        b->p = q;
        b->cap = cap;
    }
}

static void hist(buf *b, const char *name, const char *help, const lp_hist *h) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < LP_HIST_BUCKETS; i++) {
        cum += h->b[i];
        if (i == LP_HIST_BUCKETS - 1)
            put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
        else
            put(b, "%s_bucket{le=\"%g\"} %llu\n", name, lp__latency_buckets[i], (unsigned long long)cum);
    }
    put(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

char *lp__metrics_render(lp_server *s) {
    buf b = {0};
    pthread_mutex_lock(&s->mu);
    int running = s->n_running, waiting = s->n_waiting;
    double kv = s->kv_usage;
    char rn[1024], wn[1024];
    memcpy(rn, s->running_names, sizeof rn);
    memcpy(wn, s->waiting_names, sizeof wn);
    pthread_mutex_unlock(&s->mu);
    const char *m = s->model_id;
    put(&b, "# HELP vllm:num_requests_running Requests in the running batch.\n# TYPE vllm:num_requests_running gauge\n");
    put(&b, "vllm:num_requests_running{model_name=\"%s\"} %d\n", m, running);
    put(&b, "# HELP vllm:num_requests_waiting Requests waiting (queued or for their adapter).\n"
            "# TYPE vllm:num_requests_waiting gauge\n");
    put(&b, "vllm:num_requests_waiting{model_name=\"%s\"} %d\n", m, waiting);
    put(&b, "# HELP vllm:kv_cache_usage_perc Fraction of KV cache blocks in use.\n# TYPE vllm:kv_cache_usage_perc gauge\n");
    put(&b, "vllm:kv_cache_usage_perc{model_name=\"%s\"} %.6f\n", m, kv);
    put(&b, "# HELP vllm:cache_config_info KV cache configuration.\n# TYPE vllm:cache_config_info gauge\n");
    put(&b, "vllm:cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%d\",num_cpu_blocks=\"0\"} 1\n",
        s->be->params.block_size, s->be->params.n_kv_blocks);
    put(&b, "# HELP vllm:lora_requests_info Running and waiting LoRA adapters (value: update time).\n"
            "# TYPE vllm:lora_requests_info gauge\n");
    put(&b, "vllm:lora_requests_info{max_lora=\"%d\",running_lora_adapters=\"%s\",waiting_lora_adapters=\"%s\"} %.3f\n",
        lp_store_max_loras(s->store), rn, wn, (double)time(NULL));
    uint64_t pq = 0, ph = 0;
    pthread_mutex_lock(&s->mu);
    pq = s->prefix_queried;
    ph = s->prefix_hits;
    pthread_mutex_unlock(&s->mu);
    put(&b, "# HELP vllm:prefix_cache_queries Prompt tokens looked up in the prefix cache.\n"
            "# TYPE vllm:prefix_cache_queries counter\n");
    put(&b, "vllm:prefix_cache_queries{model_name=\"%s\"} %llu\n", m,
        (unsigned long long)(pq * (uint64_t)s->be->params.block_size));
    put(&b, "# HELP vllm:prefix_cache_hits Prompt tokens found in the prefix cache.\n"
            "# TYPE vllm:prefix_cache_hits counter\n");
    put(&b, "vllm:prefix_cache_hits{model_name=\"%s\"} %llu\n", m,
        (unsigned long long)(ph * (uint64_t)s->be->params.block_size));
    lp_store_stats st;
    lp_store_get_stats(s->store, &st);
    static const char *tiers[3] = {"store", "host", "device"};
    put(&b, "# HELP loraplex_adapter_hits_total Adapter lookups that found it resident, per tier.\n"
            "# TYPE loraplex_adapter_hits_total counter\n");
    for (int t = 1; t < 3; t++)
        put(&b, "loraplex_adapter_hits_total{tier=\"%s\"} %llu\n", tiers[t], (unsigned long long)st.hits[t]);
    put(&b, "# HELP loraplex_adapter_misses_total Adapter lookups that had to load it, per tier.\n"
            "# TYPE loraplex_adapter_misses_total counter\n");
    for (int t = 1; t < 3; t++)
        put(&b, "loraplex_adapter_misses_total{tier=\"%s\"} %llu\n", tiers[t], (unsigned long long)st.misses[t]);
    put(&b, "# HELP loraplex_adapter_loads_total Adapters loaded into a tier.\n# TYPE loraplex_adapter_loads_total counter\n");
    for (int t = 1; t < 3; t++)
        put(&b, "loraplex_adapter_loads_total{tier=\"%s\"} %llu\n", tiers[t], (unsigned long long)st.loads[t]);
    put(&b, "# HELP loraplex_adapter_evictions_total Adapters evicted from a tier.\n"
            "# TYPE loraplex_adapter_evictions_total counter\n");
    for (int t = 1; t < 3; t++)
        put(&b, "loraplex_adapter_evictions_total{tier=\"%s\"} %llu\n", tiers[t], (unsigned long long)st.evictions[t]);
    put(&b, "# HELP loraplex_adapters_resident Adapters per tier (store = registered).\n"
            "# TYPE loraplex_adapters_resident gauge\n");
    for (int t = 0; t < 3; t++)
        put(&b, "loraplex_adapters_resident{tier=\"%s\"} %d\n", tiers[t], st.resident[t]);
    put(&b, "# HELP loraplex_adapter_device_bytes Bytes the device tier's adapters take (used) and may take "
            "(budget; 0: no limit but the slots).\n# TYPE loraplex_adapter_device_bytes gauge\n");
    put(&b, "loraplex_adapter_device_bytes{kind=\"used\"} %llu\nloraplex_adapter_device_bytes{kind=\"budget\"} %llu\n",
        (unsigned long long)st.device_bytes, (unsigned long long)s->lora_budget);
    put(&b, "# HELP loraplex_adapter_load_seconds Host-tier adapter load latency.\n"
            "# TYPE loraplex_adapter_load_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < 12; i++) {
        cum += st.load_ms_buckets[i];
        if (i == 11)
            put(&b, "loraplex_adapter_load_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        else
            put(&b, "loraplex_adapter_load_seconds_bucket{le=\"%g\"} %llu\n", lp_store_load_buckets[i] / 1e3,
                (unsigned long long)cum);
    }
    put(&b, "loraplex_adapter_load_seconds_sum %.6f\nloraplex_adapter_load_seconds_count %llu\n",
        st.load_ms_sum / 1e3, (unsigned long long)st.load_count);
    pthread_mutex_lock(&s->m.mu);
    lp_metrics mm = s->m;
    pthread_mutex_unlock(&s->m.mu);
    put(&b, "# HELP loraplex_requests_total Generation requests by outcome.\n# TYPE loraplex_requests_total counter\n");
    put(&b, "loraplex_requests_total{outcome=\"ok\"} %llu\n", (unsigned long long)mm.requests_ok);
    put(&b, "loraplex_requests_total{outcome=\"error\"} %llu\n", (unsigned long long)mm.requests_error);
    put(&b, "loraplex_requests_total{outcome=\"rejected\"} %llu\n", (unsigned long long)mm.requests_rejected);
    put(&b, "# HELP loraplex_prompt_tokens_total Prompt tokens received.\n# TYPE loraplex_prompt_tokens_total counter\n");
    put(&b, "loraplex_prompt_tokens_total %llu\n", (unsigned long long)mm.prompt_tokens);
    put(&b, "# HELP loraplex_generation_tokens_total Tokens generated.\n# TYPE loraplex_generation_tokens_total counter\n");
    put(&b, "loraplex_generation_tokens_total %llu\n", (unsigned long long)mm.generation_tokens);
    hist(&b, "loraplex_queue_time_seconds", "Time from arrival to entering the engine.", &mm.queue);
    hist(&b, "loraplex_time_to_first_token_seconds", "Time to first token.", &mm.ttft);
    hist(&b, "loraplex_inter_token_latency_seconds", "Time between tokens of a sequence.", &mm.itl);
    hist(&b, "loraplex_e2e_request_latency_seconds", "Arrival to last token.", &mm.e2e);
    return b.p;
}
