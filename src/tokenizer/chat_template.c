/* chat_template.c - public API of the chat template interpreter: compile
 * (normalize, lex, parse), render, and finding a model's template and
 * special tokens the way transformers does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loraplex/chat_template.h"
#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

#define MAX_SOURCE ((size_t)16 << 20)
/* Tokens and syntax tree of one template: dense expressions cost ~200 bytes
 * per source byte, so the cap, not the source size, bounds compile memory. */
#define MAX_COMPILED ((size_t)64 << 20)
#define MAX_CONFIG ((size_t)64 << 20)

lp_template_limits lp_template_default_limits(void) {
    lp_template_limits l;
    memset(&l, 0, sizeof l);
    l.max_output = (size_t)1 << 20;
    l.max_steps = 10000000;
    l.max_depth = 64;
    l.max_memory = (size_t)64 << 20;
    l.fixed_time = 0;
    return l;
}

int lp__ct_compile_oom(const lp__ct_arena *a, lp_error *err) {
    if (a->over_cap)
        return lp_error_set(err, LP_ERR_LIMIT,
                            "chat template: compiled form exceeds %zu bytes", a->cap);
    return lp_error_set(err, LP_ERR_NOMEM, "chat template: out of memory");
}

void lp_chat_template_free(lp_chat_template *t) {
    if (!t)
        return;
    lp__ct_arena_free(&t->arena);
    free(t);
}

/* Jinja's preprocessing: every \r\n, \r and \n becomes \n, and one
 * trailing newline is dropped (keep_trailing_newline=False). */
static char *normalize(lp__ct_arena *a, const char *src, size_t len,
                       size_t *out_len) {
    char *o = lp__ct_alloc(a, len + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            o[k++] = src[i];
        }
    }
    if (k && o[k - 1] == '\n')
        k--;
    o[k] = '\0';
    *out_len = k;
    return o;
}

int lp_chat_template_compile(const char *source, size_t len,
                             lp_chat_template **out, lp_error *err) {
    if (!out)
        return lp_error_set(err, LP_ERR_INVALID, "chat template: out is NULL");
    *out = NULL;
    if (!source && len)
        return lp_error_set(err, LP_ERR_INVALID, "chat template: source is NULL");
    if (len > MAX_SOURCE)
        return lp_error_set(err, LP_ERR_LIMIT,
                            "chat template: source is %zu bytes, limit is %zu", len,
                            MAX_SOURCE);
    size_t bad;
    if (len && !lp__ct_utf8_valid(source, len, &bad)) {
        uint32_t line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (source[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return lp_error_set(err, LP_ERR_FORMAT, "line %u:%u: invalid UTF-8", line, col);
    }
    lp_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return lp_error_set(err, LP_ERR_NOMEM, "chat template: out of memory");
    int rc;
    size_t n;
    t->arena.cap = MAX_COMPILED;
    char *src = normalize(&t->arena, source ? source : "", len, &n);
    lp__ct_tok *toks = NULL;
    size_t ntoks = 0;
    if (!src) {
        rc = lp__ct_compile_oom(&t->arena, err);
        goto fail;
    }
    rc = lp__ct_lex(&t->arena, src, n, &toks, &ntoks, err);
    if (rc)
        goto fail;
    rc = lp__ct_parse(&t->arena, toks, ntoks, &t->syms, &t->root, err);
    if (rc)
        goto fail;
    t->sym_global = lp__ct_alloc_array(&t->arena, t->syms.n ? t->syms.n : 1,
                                       sizeof *t->sym_global);
    if (!t->sym_global) {
        rc = lp__ct_compile_oom(&t->arena, err);
        goto fail;
    }
    t->sym_loop = -1;
    for (uint32_t i = 0; i < t->syms.n; i++) {
        t->sym_global[i] = lp__ct_global_id(t->syms.name[i], t->syms.len[i]);
        if (t->syms.len[i] == 4 && memcmp(t->syms.name[i], "loop", 4) == 0)
            t->sym_loop = (int32_t)i;
    }
    *out = t;
    return LP_OK;
fail:
    lp_chat_template_free(t);
    return rc;
}

int lp_chat_template_render(const lp_chat_template *t, const json_t *vars,
                            const lp_template_limits *lim, char **out,
                            size_t *out_len, bool *raised, lp_error *err) {
    if (raised)
        *raised = false;
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t || !out)
        return lp_error_set(err, LP_ERR_INVALID, "chat template: NULL argument");
    if (vars && !json_is_object(vars))
        return lp_error_set(err, LP_ERR_INVALID,
                            "chat template: variables must be a JSON object");
    return lp__ct_render(t, vars, lim, out, out_len, raised, err);
}

/* A special token in tokenizer_config.json: "tok", {"content": "tok"} or
 * null. */
static int token_field(const json_t *cfg, const char *key, const char *path,
                       char **out, lp_error *err) {
    *out = NULL;
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v))
        return LP_OK;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return lp_error_set(err, LP_ERR_FORMAT, "%s: \"%s\" is not a string", path, key);
    *out = lp__strdup(json_string_value(v));
    if (!*out)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    return LP_OK;
}

int lp_chat_template_load_model(const char *model_dir, char **source,
                                char **bos, char **eos, lp_error *err) {
    if (!model_dir || !source)
        return lp_error_set(err, LP_ERR_INVALID, "chat template: NULL argument");
    *source = NULL;
    if (bos)
        *bos = NULL;
    if (eos)
        *eos = NULL;
    int rc = LP_OK;
    char *cfg_path = lp__path_join(model_dir, "tokenizer_config.json");
    char *jinja_path = lp__path_join(model_dir, "chat_template.jinja");
    char *text = NULL, *src = NULL, *b = NULL, *e = NULL;
    json_t *cfg = NULL;
    if (!cfg_path || !jinja_path) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (lp__file_exists(cfg_path)) {
        size_t len;
        rc = lp__read_file(cfg_path, MAX_CONFIG, &text, &len, err);
        if (rc)
            goto done;
        json_error_t je;
        cfg = json_loadb(text, len, 0, &je);
        if (!cfg || !json_is_object(cfg)) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "%s:%d:%d: %s", cfg_path,
                              cfg ? 1 : je.line, cfg ? 1 : je.column,
                              cfg ? "not a JSON object" : je.text);
            goto done;
        }
        if (bos && (rc = token_field(cfg, "bos_token", cfg_path, &b, err)))
            goto done;
        if (eos && (rc = token_field(cfg, "eos_token", cfg_path, &e, err)))
            goto done;
    }
    if (lp__file_exists(jinja_path)) { /* takes priority, as in transformers */
        rc = lp__read_file(jinja_path, MAX_SOURCE, &src, NULL, err);
        if (rc)
            goto done;
    } else if (cfg && json_object_get(cfg, "chat_template")) {
        const json_t *ct = json_object_get(cfg, "chat_template");
        const char *s = NULL;
        if (json_is_string(ct)) {
            s = json_string_value(ct);
        } else if (json_is_array(ct)) {
            size_t i;
            const json_t *item;
            json_array_foreach(ct, i, item) {
                const json_t *name = json_object_get(item, "name");
                const json_t *tmpl = json_object_get(item, "template");
                if (json_is_string(name) && strcmp(json_string_value(name), "default") == 0 &&
                    json_is_string(tmpl))
                    s = json_string_value(tmpl);
            }
            if (!s) {
                rc = lp_error_set(err, LP_ERR_NOT_FOUND,
                                  "%s: \"chat_template\" has no template named \"default\"",
                                  cfg_path);
                goto done;
            }
        } else {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: \"chat_template\" must be a string or a list", cfg_path);
            goto done;
        }
        src = lp__strdup(s);
        if (!src) {
            rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
            goto done;
        }
    } else {
        rc = lp_error_set(err, LP_ERR_NOT_FOUND,
                          "%s: no chat template (no chat_template.jinja and no "
                          "\"chat_template\" in tokenizer_config.json)", model_dir);
        goto done;
    }
    *source = src;
    src = NULL;
    if (bos) {
        *bos = b;
        b = NULL;
    }
    if (eos) {
        *eos = e;
        e = NULL;
    }
done:
    json_decref(cfg);
    free(text);
    free(src);
    free(b);
    free(e);
    free(cfg_path);
    free(jinja_path);
    return rc;
}
