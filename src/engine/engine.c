/* engine.c - continuous batching with chunked prefill, a paged KV block pool
 * and preemption by recomputation. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kvpool.h"
#include "util/log.h"
#include "util/util.h"

typedef enum { SEQ_WAITING = 0, SEQ_RUNNING, SEQ_DONE } seq_state;

typedef struct seq {
    uint64_t id;
    lp_request req;          /* pointers below are owned copies */
    int32_t *stop_ids;
    lp_logit_bias *bias;
    int32_t *tokens;         /* (n_prompt + max_tokens) prompt then output */
    int n_prompt, n_tokens;
    int n_computed;          /* tokens whose K/V are in the cache */
    int32_t *blocks;         /* (max_blocks) */
    int n_blocks;
    uint64_t *bhash;         /* (max_blocks) prefix-chain hash of each full block */
    int n_registered;        /* full blocks registered in the prefix cache */
    bool cacheable;
    uint64_t cache_key;
    int prompt_lp_next;      /* next prompt index whose logprob is to be reported */
    seq_state state;
    bool aborted;
    lp_rng rng;
    struct seq *next;        /* in the waiting or running list */
} seq;

struct lp_engine {
    lp_backend *be;
    const lp_model *model;
    lp_engine_params p;
    int vocab;
    int max_blocks;          /* per sequence */
    lp_kvpool *kv;           /* block allocator + prefix cache */
    int max_logit_rows;      /* logits vectors one forward may return */
    seq *waiting, *running;  /* FIFO lists (arrival order) */
    int n_waiting, n_running;
    uint64_t next_id;
    lp_sampler *sampler;
    float *logits;           /* (vocab) a row fetched from the backend (a draw past the candidates) */
    lp_batch_row *rows;      /* (max_num_seqs) */
    seq **row_seq;           /* (max_num_seqs) */
    /* one lp_backend_sample per step: a spec per row that samples and one
     * per prompt position whose logprob is reported (at most one per logit
     * row, so max_logit_rows of them) */
    lp_sample_spec *specs;   /* (max_logit_rows) */
    lp_sample_result *res;   /* (max_logit_rows) */
    int *spec_seq;           /* (max_logit_rows) index into rows/row_seq */
    int *spec_next;          /* (max_logit_rows) prompt token index of a prompt spec, -1: a sampling spec */
    size_t *adj_off;         /* (max_logit_rows) start of each spec's adjustments */
    lp_candidate *cand;      /* (max_num_seqs x LP_SAMPLE_MAX_CAND + max_logit_rows): a sampling spec
                                takes LP_SAMPLE_MAX_CAND, a prompt spec 1 */
    lp_token_logprob *ltop;  /* (max_logit_rows, LP_SAMPLE_MAX_LOGPROBS) */
    lp_logit_adjust *adj;    /* the step's adjustments, grown as needed */
    size_t adj_cap;
    lp_token_logprob top[LP_MAX_TOP_LOGPROBS];
};

lp_engine_params lp_engine_default_params(void) {
    lp_engine_params p = {.max_num_seqs = 32, .max_model_len = 0, .max_num_batched_tokens = 512,
                          .block_size = 16, .n_kv_blocks = 0, .n_threads = 0, .prefix_caching = true};
    return p;
}

lp_request lp_request_default(void) {
    lp_request r;
    memset(&r, 0, sizeof r);
    r.max_tokens = 16;
    r.sampling = lp_sampling_default_params();
    r.logprobs = -1;
    r.adapter = -1;
    r.adapter_scale = 1.0f;
    return r;
}

const char *lp_finish_reason_name(lp_finish_reason r) {
    switch (r) {
    case LP_FINISH_LENGTH: return "length";
    case LP_FINISH_STOP: return "stop";
    case LP_FINISH_ABORT: return "abort";
    case LP_FINISH_ERROR: return "error";
    default: return "none";
    }
}

int lp_engine_new(lp_backend *backend, const lp_engine_params *params, lp_engine **out,
                  lp_error *err) {
    *out = NULL;
    lp_engine *e = calloc(1, sizeof *e);
    if (!e)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    e->be = backend;
    e->model = backend->model;
    e->p = *params;
    const lp_backend_params *bp = &backend->params;
    const lp_model_config *c = lp_model_get_config(e->model);
    e->vocab = c->vocab;
    e->p.block_size = bp->block_size;
    e->p.n_kv_blocks = bp->n_kv_blocks;
    if (e->p.max_model_len <= 0 || e->p.max_model_len > c->max_pos)
        e->p.max_model_len = c->max_pos;
    if ((int64_t)e->p.max_model_len > (int64_t)bp->n_kv_blocks * bp->block_size)
        e->p.max_model_len = bp->n_kv_blocks * bp->block_size;
    if (e->p.max_num_seqs > bp->max_rows)
        e->p.max_num_seqs = bp->max_rows;
    if (e->p.max_num_seqs > bp->max_logit_rows)
        e->p.max_num_seqs = bp->max_logit_rows;
    if (e->p.max_num_batched_tokens > bp->max_tokens)
        e->p.max_num_batched_tokens = bp->max_tokens;
    if (e->p.max_num_seqs < 1 || e->p.max_num_batched_tokens < 1) {
        free(e);
        return lp_error_set(err, LP_ERR_INVALID, "engine: max_num_seqs and max_num_batched_tokens must be positive");
    }
    e->max_blocks = (e->p.max_model_len + bp->block_size - 1) / bp->block_size;
    e->kv = lp_kvpool_new(bp->n_kv_blocks, bp->block_size);
    e->max_logit_rows = bp->max_logit_rows;
    size_t lbytes = 0;
    if (lp__mul_size((size_t)e->vocab, sizeof(float), &lbytes))
        e->logits = lp_backend_host_alloc(backend, lbytes);
    e->rows = lp__calloc_array((size_t)e->p.max_num_seqs, sizeof(lp_batch_row));
    e->row_seq = lp__calloc_array((size_t)e->p.max_num_seqs, sizeof(seq *));
    e->sampler = lp_sampler_new(e->vocab);
    size_t ns = (size_t)e->max_logit_rows;
    e->specs = lp__calloc_array(ns, sizeof(lp_sample_spec));
    e->res = lp__calloc_array(ns, sizeof(lp_sample_result));
    e->spec_seq = lp__calloc_array(ns, sizeof(int));
    e->spec_next = lp__calloc_array(ns, sizeof(int));
    e->adj_off = lp__calloc_array(ns, sizeof(size_t));
    e->cand = lp__calloc_array((size_t)e->p.max_num_seqs * LP_SAMPLE_MAX_CAND + ns, sizeof(lp_candidate));
    e->ltop = lp__calloc_array(ns * LP_SAMPLE_MAX_LOGPROBS, sizeof(lp_token_logprob));
    if (!e->kv || !e->logits || !e->rows || !e->row_seq || !e->sampler || !e->specs || !e->res || !e->spec_seq ||
        !e->spec_next || !e->adj_off || !e->cand || !e->ltop) {
        lp_engine_free(e);
        return lp_error_set(err, LP_ERR_NOMEM, "engine: out of memory");
    }
    e->next_id = 1;
    *out = e;
    return LP_OK;
}

static void seq_free(seq *s) {
    if (!s)
        return;
    free(s->stop_ids);
    free(s->bias);
    free(s->tokens);
    free(s->blocks);
    free(s->bhash);
    free(s);
}

static void release_blocks(lp_engine *e, seq *s) {
    for (int i = 0; i < s->n_blocks; i++)
        lp_kvpool_release(e->kv, s->blocks[i]);
    s->n_blocks = 0;
    s->n_computed = 0;
    s->n_registered = 0;
}

/* A newly admitted sequence takes the cached blocks of its longest cached
 * prompt prefix (always leaving its last token to compute). */
static void match_prefix(lp_engine *e, seq *s) {
    if (!e->p.prefix_caching || !s->cacheable || s->n_blocks)
        return;
    int bs = e->p.block_size, full = (s->n_tokens - 1) / bs, hits = 0;
    uint64_t parent = 0;
    for (int i = 0; i < full; i++) {
        const int32_t *t = s->tokens + (size_t)i * (size_t)bs;
        uint64_t h = lp_kvpool_chain(e->kv, parent, s->cache_key, t);
        int32_t b = lp_kvpool_match(e->kv, h, parent, s->cache_key, t);
        if (b < 0)
            break;
        s->blocks[s->n_blocks++] = b;
        s->bhash[i] = h;
        parent = h;
        hits++;
    }
    s->n_computed = s->n_registered = hits;
    s->n_computed *= bs;
    lp_kvpool_count_query(e->kv, (uint64_t)full, (uint64_t)hits);
}

/* Register the blocks that the last step filled. */
static void register_blocks(lp_engine *e, seq *s) {
    if (!e->p.prefix_caching || !s->cacheable)
        return;
    int bs = e->p.block_size;
    while ((s->n_registered + 1) * bs <= s->n_computed && s->n_registered < s->n_blocks) {
        int i = s->n_registered;
        const int32_t *t = s->tokens + (size_t)i * (size_t)bs;
        uint64_t parent = i ? s->bhash[i - 1] : 0;
        uint64_t h = lp_kvpool_chain(e->kv, parent, s->cache_key, t);
        lp_kvpool_register(e->kv, s->blocks[i], h, parent, s->cache_key, t);
        s->bhash[i] = h;
        s->n_registered++;
    }
}

void lp_engine_free(lp_engine *e) {
    if (!e)
        return;
    for (seq *l = e->waiting; l;) {
        seq *n = l->next;
        seq_free(l);
        l = n;
    }
    for (seq *l = e->running; l;) {
        seq *n = l->next;
        seq_free(l);
        l = n;
    }
    lp_kvpool_free(e->kv);
    if (e->logits)
        lp_backend_host_free(e->be, e->logits);
    free(e->rows);
    free(e->row_seq);
    free(e->specs);
    free(e->res);
    free(e->spec_seq);
    free(e->spec_next);
    free(e->adj_off);
    free(e->cand);
    free(e->ltop);
    free(e->adj);
    lp_sampler_free(e->sampler);
    free(e);
}

int lp_engine_submit(lp_engine *e, const lp_request *req, uint64_t *id_out, lp_error *err) {
    if (req->n_prompt < 1)
        return lp_error_set(err, LP_ERR_INVALID, "prompt: must hold at least one token");
    for (int i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= e->vocab)
            return lp_error_set(err, LP_ERR_RANGE, "prompt: token id %d at index %d is out of range [0, %d)",
                                req->prompt[i], i, e->vocab);
    if (req->max_tokens < 1)
        return lp_error_set(err, LP_ERR_RANGE, "max_tokens: must be at least 1");
    if ((int64_t)req->n_prompt + req->max_tokens > e->p.max_model_len)
        return lp_error_set(err, LP_ERR_RANGE,
                            "max_tokens: prompt (%d tokens) + max_tokens (%d) exceeds the maximum "
                            "context length %d", req->n_prompt, req->max_tokens, e->p.max_model_len);
    if (req->logprobs > LP_MAX_TOP_LOGPROBS)
        return lp_error_set(err, LP_ERR_RANGE, "logprobs: at most %d", LP_MAX_TOP_LOGPROBS);
    int rc = lp_sampling_params_check(&req->sampling, e->vocab, err);
    if (rc)
        return rc;
    for (int i = 0; i < req->n_stop_ids; i++)
        if (req->stop_ids[i] < 0 || req->stop_ids[i] >= e->vocab)
            return lp_error_set(err, LP_ERR_RANGE, "stop_token_ids: id %d is out of range", req->stop_ids[i]);
    seq *s = calloc(1, sizeof *s);
    if (!s)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    s->req = *req;
    s->tokens = lp__malloc_array((size_t)req->n_prompt + (size_t)req->max_tokens, sizeof(int32_t));
    s->blocks = lp__malloc_array((size_t)e->max_blocks, sizeof(int32_t));
    s->bhash = lp__malloc_array((size_t)e->max_blocks, sizeof(uint64_t));
    if (req->n_stop_ids)
        s->stop_ids = lp__malloc_array((size_t)req->n_stop_ids, sizeof(int32_t));
    if (req->sampling.n_logit_bias)
        s->bias = lp__malloc_array((size_t)req->sampling.n_logit_bias, sizeof(lp_logit_bias));
    if (!s->tokens || !s->blocks || !s->bhash || (req->n_stop_ids && !s->stop_ids) ||
        (req->sampling.n_logit_bias && !s->bias)) {
        seq_free(s);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    memcpy(s->tokens, req->prompt, sizeof(int32_t) * (size_t)req->n_prompt);
    if (req->n_stop_ids)
        memcpy(s->stop_ids, req->stop_ids, sizeof(int32_t) * (size_t)req->n_stop_ids);
    if (req->sampling.n_logit_bias)
        memcpy(s->bias, req->sampling.logit_bias, sizeof(lp_logit_bias) * (size_t)req->sampling.n_logit_bias);
    s->req.prompt = s->tokens;
    s->req.stop_ids = s->stop_ids;
    s->req.sampling.logit_bias = s->bias;
    s->n_prompt = s->n_tokens = req->n_prompt;
    s->prompt_lp_next = 1;
    /* prompt logprobs need every prompt position computed here: no prefix cache */
    s->cacheable = (req->adapter < 0 || req->cache_key != 0) && !req->prompt_logprobs;
    s->cache_key = req->adapter < 0 ? 0 : req->cache_key;
    s->id = e->next_id++;
    uint64_t seed = req->sampling.has_seed ? req->sampling.seed
                                           : (uint64_t)time(NULL) ^ (s->id * 0x9e3779b97f4a7c15ull) ^
                                                 (uint64_t)(lp__now() * 1e9);
    lp_rng_seed(&s->rng, seed);
    /* append to the waiting FIFO */
    seq **pp = &e->waiting;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    e->n_waiting++;
    if (id_out)
        *id_out = s->id;
    return LP_OK;
}

bool lp_engine_abort(lp_engine *e, uint64_t id) {
    for (int pass = 0; pass < 2; pass++)
        for (seq *s = pass ? e->running : e->waiting; s; s = s->next)
            if (s->id == id && !s->aborted) {
                s->aborted = true;
                return true;
            }
    return false;
}

int lp_engine_num_running(const lp_engine *e) { return e->n_running; }
int lp_engine_num_waiting(const lp_engine *e) { return e->n_waiting; }
double lp_engine_kv_usage(const lp_engine *e) {
    return e->p.n_kv_blocks ? (double)lp_kvpool_used(e->kv) / e->p.n_kv_blocks : 0.0;
}

void lp_engine_prefix_stats(const lp_engine *e, uint64_t *queried_blocks, uint64_t *hit_blocks) {
    lp_kvpool_stats st;
    lp_kvpool_get_stats(e->kv, &st);
    *queried_blocks = st.queried_blocks;
    *hit_blocks = st.hit_blocks;
}

static void emit_finish(seq *s, lp_finish_reason why, const char *msg) {
    lp_token_event ev = {.req_id = s->id, .token = -1, .finish = why, .n_prompt = s->n_prompt,
                         .n_output = s->n_tokens - s->n_prompt, .error = msg};
    if (s->req.cb)
        s->req.cb(s->req.ud, &ev);
}

/* Remove s from a list. */
static void list_remove(seq **head, seq *s) {
    for (seq **pp = head; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            return;
        }
}

static void finish_seq(lp_engine *e, seq *s) {
    release_blocks(e, s);
    if (s->state == SEQ_RUNNING) {
        list_remove(&e->running, s);
        e->n_running--;
    } else {
        list_remove(&e->waiting, s);
        e->n_waiting--;
    }
    seq_free(s);
}

/* Ensure s has blocks for positions < upto; false if the pool is empty. */
static bool grow_blocks(lp_engine *e, seq *s, int upto) {
    int need = (upto + e->p.block_size - 1) / e->p.block_size;
    while (s->n_blocks < need) {
        int32_t b = lp_kvpool_alloc(e->kv);
        if (b < 0)
            return false;
        s->blocks[s->n_blocks++] = b;
    }
    return true;
}

/* Preempt the most recently admitted running sequence other than `keep`:
 * free its blocks and put it at the head of the waiting list. */
static bool preempt_one(lp_engine *e, seq *keep) {
    seq *victim = NULL;
    for (seq *s = e->running; s; s = s->next)
        if (s != keep)
            victim = s;
    if (!victim)
        return false;
    LP_DEBUG("engine: preempting request %llu (%d tokens) for KV space", (unsigned long long)victim->id,
             victim->n_tokens);
    release_blocks(e, victim);
    list_remove(&e->running, victim);
    e->n_running--;
    victim->state = SEQ_WAITING;
    victim->next = e->waiting;
    e->waiting = victim;
    e->n_waiting++;
    return true;
}

static bool is_stop(lp_engine *e, seq *s, int32_t tok) {
    if (!s->req.ignore_eos && lp_model_is_eos(e->model, tok))
        return true;
    for (int i = 0; i < s->req.n_stop_ids; i++)
        if (s->stop_ids[i] == tok)
            return true;
    return false;
}

int lp_engine_step(lp_engine *e, lp_error *err) {
    /* aborted requests first */
    for (int pass = 0; pass < 2; pass++) {
        seq *s = pass ? e->running : e->waiting;
        while (s) {
            seq *n = s->next;
            if (s->aborted) {
                emit_finish(s, LP_FINISH_ABORT, NULL);
                finish_seq(e, s);
            }
            s = n;
        }
    }
    /* admit waiting sequences while there is room */
    while (e->waiting && e->n_running < e->p.max_num_seqs) {
        seq *s = e->waiting;
        int first = LP_MIN(s->n_tokens, e->p.max_num_batched_tokens);
        int need = (first + e->p.block_size - 1) / e->p.block_size;
        if (need > lp_kvpool_available(e->kv) && e->n_running > 0)
            break; /* wait for blocks to free up */
        e->waiting = s->next;
        e->n_waiting--;
        s->next = NULL;
        s->state = SEQ_RUNNING;
        match_prefix(e, s);
        seq **pp = &e->running;
        while (*pp)
            pp = &(*pp)->next;
        *pp = s;
        e->n_running++;
    }
    /* build the batch: decode rows (1 token) first, then prefill chunks */
    int n_rows = 0, budget = e->p.max_num_batched_tokens, logit_rows = 0;
    for (int phase = 0; phase < 2 && budget > 0; phase++) {
        for (seq *s = e->running; s && budget > 0; s = s->next) {
            int pending = s->n_tokens - s->n_computed;
            bool decode = pending == 1;
            if (decode != (phase == 0))
                continue;
            int chunk = LP_MIN(pending, budget);
            bool all = s->req.prompt_logprobs && s->n_computed < s->n_prompt;
            if (all) { /* one logits vector per token: keep one for every other row */
                int reserve = e->n_running - n_rows - 1;
                int cap = e->max_logit_rows - logit_rows - (reserve > 0 ? reserve : 0);
                if (cap < 1)
                    continue;
                chunk = LP_MIN(chunk, cap);
            }
            while (!grow_blocks(e, s, s->n_computed + chunk)) {
                if (!preempt_one(e, s)) {
                    /* alone and still out of blocks: shrink the chunk */
                    int have = s->n_blocks * e->p.block_size - s->n_computed;
                    chunk = have;
                    break;
                }
            }
            if (chunk <= 0)
                continue;
            if (s->state != SEQ_RUNNING)
                continue;
            lp_batch_row *r = &e->rows[n_rows];
            r->tokens = s->tokens + s->n_computed;
            r->n_tokens = chunk;
            r->pos0 = s->n_computed;
            r->blocks = s->blocks;
            r->adapter = s->req.adapter;
            r->adapter_scale = s->req.adapter_scale;
            r->logits = all ? LP_LOGITS_ALL : s->n_computed + chunk == s->n_tokens ? LP_LOGITS_LAST : LP_LOGITS_NONE;
            logit_rows += r->logits == LP_LOGITS_ALL ? chunk : r->logits == LP_LOGITS_LAST;
            e->row_seq[n_rows++] = s;
            budget -= chunk;
        }
    }
    /* a preemption may have removed a sequence already placed in the batch */
    int w = 0;
    for (int i = 0; i < n_rows; i++)
        if (e->row_seq[i]->state == SEQ_RUNNING && e->row_seq[i]->n_blocks * e->p.block_size >=
                                                       e->rows[i].pos0 + e->rows[i].n_tokens) {
            e->rows[w] = e->rows[i];
            e->row_seq[w++] = e->row_seq[i];
        }
    n_rows = w;
    if (n_rows == 0)
        return e->n_running + e->n_waiting;

    /* group rows by adapter slot so each adapter is one segment (stable) */
    for (int i = 1; i < n_rows; i++) {
        lp_batch_row r = e->rows[i];
        seq *sq = e->row_seq[i];
        int j = i;
        while (j > 0 && e->rows[j - 1].adapter > r.adapter) {
            e->rows[j] = e->rows[j - 1];
            e->row_seq[j] = e->row_seq[j - 1];
            j--;
        }
        e->rows[j] = r;
        e->row_seq[j] = sq;
    }
    /* the logits stay in the backend: only the sampler's candidates (and the
     * rows of prompt logprobs) come back */
    int rc = lp_backend_forward(e->be, e->rows, n_rows, NULL, err);
    if (rc) {
        /* fail every request of this batch with the message, keep serving */
        for (int i = 0; i < n_rows; i++) {
            emit_finish(e->row_seq[i], LP_FINISH_ERROR, err ? err->msg : "backend failure");
            finish_seq(e, e->row_seq[i]);
        }
        return rc;
    }
    int li = 0, ns = 0;
    size_t n_adj = 0, n_cand = 0;
    for (int i = 0; i < n_rows; i++) {
        seq *s = e->row_seq[i];
        const lp_batch_row *row = &e->rows[i];
        s->n_computed += row->n_tokens;
        register_blocks(e, s);
        if (row->logits == LP_LOGITS_NONE)
            continue;
        if (row->logits == LP_LOGITS_ALL) {
            /* position q's logits give the logprob of prompt token pos0 + q + 1:
             * a spec that probes that token (and asks for the top k) */
            int k = s->req.logprobs > 0 ? s->req.logprobs : 0;
            for (int q = 0; q < row->n_tokens; q++) {
                int next = row->pos0 + q + 1;
                if (next >= s->n_prompt || next < s->prompt_lp_next)
                    continue;
                e->specs[ns] = (lp_sample_spec){.row = li + q, .n_cand = 1, .n_logprobs = k, .probe = s->tokens[next]};
                e->res[ns] = (lp_sample_result){.cand = e->cand + n_cand,
                                                .top = e->ltop + (size_t)ns * LP_SAMPLE_MAX_LOGPROBS};
                n_cand += 1;
                e->adj_off[ns] = n_adj;
                e->spec_next[ns] = next;
                e->spec_seq[ns++] = i;
                s->prompt_lp_next = next + 1;
            }
            li += row->n_tokens;
            if (s->n_computed < s->n_tokens)
                continue; /* a prefill chunk that does not end the prompt */
            li--;         /* the last position's logits also give the next token */
        }
        /* this row samples: its adjustments, then its spec */
        const lp_sampling_params *sp = &s->req.sampling;
        size_t need = n_adj + (size_t)s->n_tokens + (size_t)sp->n_logit_bias;
        if (need > e->adj_cap) {
            size_t cap = LP_MAX(need, 2 * e->adj_cap);
            lp_logit_adjust *na = realloc(e->adj, cap * sizeof *na);
            if (!na) {
                li++;
                while (ns > 0 && e->spec_seq[ns - 1] == i)
                    ns--; /* its prompt specs go with it */
                emit_finish(s, LP_FINISH_ERROR, "out of memory");
                finish_seq(e, s);
                continue;
            }
            e->adj = na;
            e->adj_cap = cap;
        }
        int m = lp_sampler_adjustments(e->sampler, sp, s->tokens, s->n_prompt, s->tokens + s->n_prompt,
                                       s->n_tokens - s->n_prompt, e->adj + n_adj);
        e->adj_off[ns] = n_adj;
        e->specs[ns] = (lp_sample_spec){.row = li++, .n_cand = lp_sampler_n_cand(sp, e->vocab),
                                        .temperature = sp->temperature, .n_logprobs = s->req.logprobs, .n_adj = m};
        e->res[ns] = (lp_sample_result){.cand = e->cand + n_cand,
                                        .top = e->ltop + (size_t)ns * LP_SAMPLE_MAX_LOGPROBS};
        n_cand += LP_SAMPLE_MAX_CAND;
        e->spec_next[ns] = -1;
        e->spec_seq[ns++] = i;
        n_adj += (size_t)m;
    }
    for (int j = 0; j < ns; j++) /* the arena has stopped moving */
        e->specs[j].adj = e->specs[j].n_adj ? e->adj + e->adj_off[j] : NULL;
    if (ns && (rc = lp_backend_sample(e->be, e->specs, ns, e->res, err))) {
        for (int j = 0; j < ns; j++) {
            if (j > 0 && e->spec_seq[j] == e->spec_seq[j - 1])
                continue; /* a row's specs are consecutive: fail it once */
            emit_finish(e->row_seq[e->spec_seq[j]], LP_FINISH_ERROR, err ? err->msg : "backend failure");
            finish_seq(e, e->row_seq[e->spec_seq[j]]);
        }
        return rc;
    }
    for (int j = 0; j < ns; j++) {
        seq *s = e->row_seq[e->spec_seq[j]];
        const lp_sample_spec *spec = &e->specs[j];
        const lp_sample_result *r = &e->res[j];
        if (e->spec_next[j] >= 0) { /* a prompt token's logprob */
            lp_token_event pe = {.req_id = s->id, .token = spec->probe, .prompt = true, .top = r->top,
                                 .n_top = spec->n_logprobs, .n_prompt = s->n_prompt};
            pe.logprob = (float)((double)r->probe_raw - r->raw_lse);
            if (s->req.cb)
                s->req.cb(s->req.ud, &pe);
            continue;
        }
        const lp_sampling_params *sp = &s->req.sampling;
        double u = sp->temperature > 0.0f ? lp_rng_uniform(&s->rng) : 0.0;
        int ci = lp_sampler_choose(sp, u, r, e->vocab);
        lp_candidate c;
        if (ci >= 0) {
            c = r->cand[ci];
        } else { /* past the candidates: finish the draw from the full row */
            const float *raw = lp_backend_logits(e->be, spec->row, 1, e->logits, err);
            if (!raw) {
                emit_finish(s, LP_FINISH_ERROR, err ? err->msg : "backend failure");
                finish_seq(e, s);
                continue;
            }
            c = lp_sampler_choose_row(e->sampler, sp, u, raw, spec->adj, spec->n_adj, r);
        }
        int32_t tok = c.id;
        lp_token_event ev = {.req_id = s->id};
        int k = s->req.logprobs;
        if (k >= 0) { /* of the raw logits, before penalties, bias and temperature */
            ev.logprob = (float)((double)c.raw - r->raw_lse);
            ev.top = r->top;
            ev.n_top = k;
        }
        s->tokens[s->n_tokens++] = tok;
        ev.token = tok;
        ev.n_prompt = s->n_prompt;
        ev.n_output = s->n_tokens - s->n_prompt;
        if (is_stop(e, s, tok))
            ev.finish = LP_FINISH_STOP;
        else if (ev.n_output >= s->req.max_tokens || s->n_tokens >= e->p.max_model_len)
            ev.finish = LP_FINISH_LENGTH;
        if (s->req.cb)
            s->req.cb(s->req.ud, &ev);
        if (ev.finish != LP_FINISH_NONE)
            finish_seq(e, s);
    }
    return e->n_running + e->n_waiting;
}
