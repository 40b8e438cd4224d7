/* model.c - load a Hugging Face model directory: config, mmapped weights
 * checked against the config, tokenizer. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model-impl.h"
#include "util/log.h"
#include "util/util.h"

const char *const lp__module_names[LP_MOD_COUNT] = {"q_proj",    "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

void lp__module_shape(const lp_model_config *cfg, lp__module m, int64_t *rows, int64_t *cols) {
    int64_t h = cfg->hidden, q = (int64_t)cfg->n_heads * cfg->head_dim,
            kv = (int64_t)cfg->n_kv_heads * cfg->head_dim, f = cfg->ffn;
    switch (m) {
    case LP_MOD_Q: *rows = q; *cols = h; break;
    case LP_MOD_K:
    case LP_MOD_V: *rows = kv; *cols = h; break;
    case LP_MOD_O: *rows = h; *cols = q; break;
    case LP_MOD_GATE:
    case LP_MOD_UP: *rows = f; *cols = h; break;
    default: *rows = h; *cols = f; break;
    }
}

static bool is_float_dtype(lp_dtype t) {
    return t == LP_DTYPE_BF16 || t == LP_DTYPE_F16 || t == LP_DTYPE_F32;
}

/* Find a tensor and check its shape; ndim 1 uses only rows. */
static int get_tensor(lp_model *m, const char *name, int ndim, int64_t rows, int64_t cols,
                      bool required, const lp_st_tensor **out, lp_error *err) {
    const lp_st_tensor *t = lp_st_set_find(m->weights, name);
    *out = t;
    if (!t)
        return required ? lp_error_set(err, LP_ERR_NOT_FOUND, "%s: tensor '%s' is missing", m->dir, name)
                        : LP_OK;
    if (!is_float_dtype(t->dtype))
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (need BF16, F16 or F32)",
                            m->dir, name, lp_dtype_name(t->dtype));
    bool ok = t->ndim == ndim && t->shape[0] == rows && (ndim == 1 || t->shape[1] == cols);
    if (!ok) {
        char got[128] = "";
        size_t n = 0;
        for (int i = 0; i < t->ndim && n < sizeof got - 24; i++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        if (ndim == 1)
            return lp_error_set(err, LP_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config expects [%lld]",
                                m->dir, name, got, (long long)rows);
        return lp_error_set(err, LP_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config expects [%lld,%lld]",
                            m->dir, name, got, (long long)rows, (long long)cols);
    }
    return LP_OK;
}

static int get_weight(lp_model *m, const char *name, int64_t rows, int64_t cols, lp__weight *w,
                      lp_error *err) {
    const lp_st_tensor *t;
    int rc = get_tensor(m, name, 2, rows, cols, true, &t, err);
    if (rc)
        return rc;
    w->data = t->data;
    w->dtype = t->dtype;
    w->rows = rows;
    w->cols = cols;
    m->weight_bytes += t->nbytes;
    return LP_OK;
}

static int get_vector(lp_model *m, const char *name, int64_t n, bool required, float **out, lp_error *err) {
    const lp_st_tensor *t;
    *out = NULL;
    int rc = get_tensor(m, name, 1, n, 0, required, &t, err);
    if (rc || !t)
        return rc;
    float *v = lp__malloc_array((size_t)n, sizeof(float));
    if (!v)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)t->data;
        uint16_t h;
        switch (t->dtype) {
        case LP_DTYPE_F32: memcpy(&v[i], p + 4 * i, 4); break;
        case LP_DTYPE_F16: memcpy(&h, p + 2 * i, 2); v[i] = lp__f16_to_f32(h); break;
        default: memcpy(&h, p + 2 * i, 2); v[i] = lp__bf16_to_f32(h); break;
        }
    }
    *out = v;
    m->weight_bytes += t->nbytes;
    return LP_OK;
}

static int load_layer(lp_model *m, int i, lp__layer *L, lp_error *err) {
    const lp_model_config *c = &m->cfg;
    char name[256];
    int rc;
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if ((rc = get_vector(m, NAME("model.layers.%d.input_layernorm.weight", i), c->hidden, true,
                         &L->attn_norm, err)) ||
        (rc = get_vector(m, NAME("model.layers.%d.post_attention_layernorm.weight", i), c->hidden,
                         true, &L->ffn_norm, err)))
        return rc;
    if (c->qk_norm &&
        ((rc = get_vector(m, NAME("model.layers.%d.self_attn.q_norm.weight", i), c->head_dim, true,
                          &L->q_norm, err)) ||
         (rc = get_vector(m, NAME("model.layers.%d.self_attn.k_norm.weight", i), c->head_dim, true,
                          &L->k_norm, err))))
        return rc;
    for (int j = 0; j < LP_MOD_COUNT; j++) {
        const char *block = j <= LP_MOD_O ? "self_attn" : "mlp";
        int64_t rows, cols;
        lp__module_shape(c, (lp__module)j, &rows, &cols);
        if ((rc = get_weight(m, NAME("model.layers.%d.%s.%s.weight", i, block, lp__module_names[j]),
                             rows, cols, &L->proj[j], err)))
            return rc;
        bool has_bias = j <= LP_MOD_V ? c->qkv_bias : j == LP_MOD_O ? c->o_bias : c->mlp_bias;
        if (has_bias &&
            (rc = get_vector(m, NAME("model.layers.%d.%s.%s.bias", i, block, lp__module_names[j]), rows,
                             true, &L->bias[j], err)))
            return rc;
    }
#undef NAME
    return LP_OK;
}

int lp_model_load(const char *dir, lp_model **out, void (*progress)(double, void *), void *ud,
                  lp_error *err) {
    *out = NULL;
    lp_model *m = calloc(1, sizeof *m);
    char *tokpath = NULL;
    int rc;
    if (!m || !(m->dir = lp__strdup(dir))) {
        free(m);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if ((rc = lp_model_config_load(dir, &m->cfg, err)))
        goto fail;
    const lp_model_config *c = &m->cfg;
    if ((rc = lp_st_set_open(dir, "model", LP_ST_MMAP, &m->weights, err)))
        goto fail;
    if ((rc = get_weight(m, "model.embed_tokens.weight", c->vocab, c->hidden, &m->embed, err)))
        goto fail;
    m->weight_bytes -= (uint64_t)c->hidden * lp_dtype_size(m->embed.dtype) * (uint64_t)(c->vocab - 1);
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
        m->weight_bytes += (uint64_t)c->hidden * lp_dtype_size(m->embed.dtype) * (uint64_t)c->vocab;
    } else if ((rc = get_weight(m, "lm_head.weight", c->vocab, c->hidden, &m->lm_head, err))) {
        goto fail;
    }
    if ((rc = get_vector(m, "model.norm.weight", c->hidden, true, &m->final_norm, err)))
        goto fail;
    if (!(m->layers = calloc((size_t)c->n_layers, sizeof *m->layers))) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_layers; i++) {
        if ((rc = load_layer(m, i, &m->layers[i], err)))
            goto fail;
        if (progress)
            progress((double)(i + 1) / c->n_layers, ud);
    }
    if (lp_st_set_find(m->weights, "model.layers.0.self_attn.q_proj.bias") && !c->qkv_bias)
        LP_WARN("%s: q/k/v bias tensors present but the config does not use them; ignored", dir);
    tokpath = lp__path_join(dir, "tokenizer.json");
    if (!tokpath) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (lp__file_exists(tokpath)) {
        /* tokenizer_config.json's add_bos_token / add_eos_token override the
         * post-processor, as transformers does */
        lp_tokenizer_params tp = lp_tokenizer_default_params();
        char *cfgpath = lp__path_join(dir, "tokenizer_config.json"), *text = NULL;
        json_t *tc = NULL;
        if (cfgpath && lp__file_exists(cfgpath) && lp__read_file(cfgpath, 64u << 20, &text, NULL, NULL) == LP_OK)
            tc = json_loads(text, 0, NULL);
        free(text);
        free(cfgpath);
        static const char *names[2] = {"bos_token", "eos_token"};
        const char *tok_str[2] = {NULL, NULL};
        for (int k = 0; k < 2 && tc; k++) {
            json_t *v = json_object_get(tc, names[k]);
            tok_str[k] = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
        }
        json_t *ab = json_object_get(tc, "add_bos_token"), *ae = json_object_get(tc, "add_eos_token");
        if (json_is_boolean(ab) && (!json_is_true(ab) || tok_str[0])) {
            tp.add_bos = json_is_true(ab);
            tp.bos_token = tok_str[0];
        }
        if (json_is_boolean(ae) && (!json_is_true(ae) || tok_str[1])) {
            tp.add_eos = json_is_true(ae);
            tp.eos_token = tok_str[1];
        }
        rc = lp_tokenizer_load_ex(tokpath, &tp, &m->tok, err);
        json_decref(tc);
        if (rc)
            goto fail;
        if (lp_tokenizer_vocab_size(m->tok) > c->vocab) {
            rc = lp_error_set(err, LP_ERR_RANGE,
                              "%s: tokenizer.json has %d ids but the model's vocab_size is %d", dir,
                              lp_tokenizer_vocab_size(m->tok), c->vocab);
            goto fail;
        }
    }
    free(tokpath);
    *out = m;
    return LP_OK;
fail:
    free(tokpath);
    lp_model_free(m);
    return rc;
}

void lp_model_free(lp_model *m) {
    if (!m)
        return;
    if (m->layers) {
        for (int i = 0; i < m->cfg.n_layers; i++) {
            lp__layer *L = &m->layers[i];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->q_norm);
            free(L->k_norm);
            for (int j = 0; j < LP_MOD_COUNT; j++)
                free(L->bias[j]);
        }
        free(m->layers);
    }
    free(m->final_norm);
    lp_tokenizer_free(m->tok);
    lp_st_set_close(m->weights);
    free(m->dir);
    free(m);
}

const lp_model_config *lp_model_get_config(const lp_model *m) { return &m->cfg; }
const lp_tokenizer *lp_model_tokenizer(const lp_model *m) { return m->tok; }
const char *lp_model_dir(const lp_model *m) { return m->dir; }
uint64_t lp_model_weight_bytes(const lp_model *m) { return m->weight_bytes; }

bool lp_model_is_eos(const lp_model *m, int32_t id) {
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] == id)
            return true;
    return false;
}
