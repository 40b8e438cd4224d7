/* conform.c - helpers for reference-fixture tests (see conform.h). */
#include "conform.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

int conform_ref_load(const char *dir, conform_ref *ref) {
    memset(ref, 0, sizeof *ref);
    char path[1024];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(stderr, "%s: %s\n", path, je.text);
        return -1;
    }
    ref->json = root;
    json_t *prompts = json_object_get(root, "prompts");
    size_t i;
    json_t *p;
    json_array_foreach(prompts, i, p) {
        if (i >= 8)
            break;
        ref->prompt_len[i] = (int)json_array_size(p);
        ref->prompts[i] = malloc(sizeof(int32_t) * json_array_size(p));
        for (size_t j = 0; j < json_array_size(p); j++)
            ref->prompts[i][j] = (int32_t)json_integer_value(json_array_get(p, j));
        ref->n_prompts = (int)i + 1;
    }
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    lp_error err;
    if (lp_st_open(path, LP_ST_MMAP, &ref->logits, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

void conform_ref_free(conform_ref *ref) {
    for (int i = 0; i < ref->n_prompts; i++)
        free(ref->prompts[i]);
    lp_st_close(ref->logits);
    json_decref((json_t *)ref->json);
}

int conform_ref_greedy(const conform_ref *ref, const char *tag, int i, int32_t *out, int cap) {
    json_t *g = json_object_get(json_object_get((json_t *)ref->json, "greedy"), tag);
    json_t *row = json_array_get(g, (size_t)i);
    if (!row)
        return -1;
    int n = (int)json_array_size(row);
    for (int j = 0; j < n && j < cap; j++)
        out[j] = (int32_t)json_integer_value(json_array_get(row, (size_t)j));
    return n < cap ? n : cap;
}

const float *conform_ref_logits(const conform_ref *ref, const char *tag, int i, int64_t *len,
                                int64_t *vocab) {
    char name[256];
    snprintf(name, sizeof name, "%s.p%d.logits", tag, i);
    const lp_st_tensor *t = lp_st_find(ref->logits, name);
    if (!t || t->dtype != LP_DTYPE_F32 || t->ndim != 2)
        return NULL;
    *len = t->shape[0];
    *vocab = t->shape[1];
    return t->data;
}

int conform_forward_all(lp_backend *be, const int32_t *ids, int n, int adapter, float *out) {
    int bs = be->params.block_size, nb = (n + bs - 1) / bs;
    int32_t *blocks = malloc(sizeof(int32_t) * (size_t)nb);
    for (int i = 0; i < nb; i++)
        blocks[i] = i;
    lp_batch_row r = {.tokens = ids, .n_tokens = n, .pos0 = 0, .blocks = blocks, .adapter = adapter,
                      .adapter_scale = 1.0f, .logits = LP_LOGITS_ALL};
    lp_error err = {0};
    int rc = lp_backend_forward(be, &r, 1, out, &err);
    if (rc)
        fprintf(stderr, "forward: %s\n", err.msg);
    free(blocks);
    return rc;
}

typedef struct {
    int32_t *out;
    int n;
} greedy_state;

static void on_tok(void *ud, const lp_token_event *ev) {
    greedy_state *g = ud;
    if (ev->token >= 0)
        g->out[g->n++] = ev->token;
}

int conform_greedy(lp_backend *be, const int32_t *ids, int n, int adapter, int n_new, int32_t *out) {
    lp_engine_params ep = lp_engine_default_params();
    ep.max_num_seqs = 1;
    lp_engine *e = NULL;
    lp_error err = {0};
    if (lp_engine_new(be, &ep, &e, &err)) {
        fprintf(stderr, "engine: %s\n", err.msg);
        return -1;
    }
    greedy_state g = {.out = out};
    lp_request req = lp_request_default();
    req.prompt = ids;
    req.n_prompt = n;
    req.max_tokens = n_new;
    req.ignore_eos = true;
    req.adapter = adapter;
    req.cb = on_tok;
    req.ud = &g;
    if (lp_engine_submit(e, &req, NULL, &err)) {
        fprintf(stderr, "submit: %s\n", err.msg);
        lp_engine_free(e);
        return -1;
    }
    int left;
    while ((left = lp_engine_step(e, &err)) > 0)
        ;
    lp_engine_free(e);
    if (left < 0) {
        fprintf(stderr, "step: %s\n", err.msg);
        return -1;
    }
    return g.n;
}

double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
