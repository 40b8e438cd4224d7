/* admin.c - the non-generation routes: /health, /metrics, /v1/models,
 * /v1/adapters, /v1/load_lora_adapter, /v1/unload_lora_adapter, /tokenize,
 * /detokenize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server-impl.h"
#include "util/util.h"

static const char *tier_name(lp_tier t) {
    return t == LP_TIER_DEVICE ? "device" : t == LP_TIER_HOST ? "host" : "store";
}

static enum MHD_Result models(lp_server *s, struct MHD_Connection *c) {
    json_t *data = json_array();
    long created = (long)s->started;
    json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:s,s:n,s:i}", "id", s->model_id, "object", "model",
                                          "created", (json_int_t)created, "owned_by", "loraplex", "root",
                                          s->p.model_dir, "parent", "max_model_len", s->p.max_model_len));
    lp_adapter_status *a = NULL;
    int n = 0;
    lp_store_list(s->store, &a, &n);
    for (int i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:i}", "id", a[i].name, "object", "model",
                                              "created", (json_int_t)created, "owned_by", "loraplex", "root",
                                              a[i].path, "parent", s->model_id, "max_model_len", s->p.max_model_len));
    free(a);
    return lp__send_json(c, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static enum MHD_Result adapters(lp_server *s, struct MHD_Connection *c) {
    lp_adapter_status *a = NULL;
    int n = 0;
    lp_store_list(s->store, &a, &n);
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:i,s:I,s:I,s:i}", "name", a[i].name, "path", a[i].path, "tier",
                              tier_name(a[i].tier), "loading", a[i].loading, "rank", a[i].rank, "bytes",
                              (json_int_t)a[i].bytes, "requests", (json_int_t)a[i].requests, "active", a[i].active);
        json_object_set_new(o, "device_bytes", json_integer((json_int_t)a[i].device_bytes));
        json_object_set_new(o, "last_use", a[i].last_use > 0 ? json_real(a[i].last_use) : json_null());
        json_object_set_new(o, "load_ms", a[i].load_ms > 0 ? json_real(a[i].load_ms) : json_null());
        json_object_set_new(o, "error", a[i].error[0] ? json_string(a[i].error) : json_null());
        json_array_append_new(data, o);
    }
    free(a);
    return lp__send_json(c, 200,
                         json_pack("{s:s,s:o,s:i,s:i,s:I}", "object", "list", "data", data, "max_loras",
                                   lp_store_max_loras(s->store), "max_cpu_loras", lp_store_max_cpu_loras(s->store),
                                   "max_lora_bytes", (json_int_t)s->lora_budget));
}

static json_t *parse_body(const char *body, size_t len) {
    json_t *r = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (r && !json_is_object(r)) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static enum MHD_Result load_adapter(lp_server *s, struct MHD_Connection *c, const char *body, size_t len) {
    if (!lp__authorized(s, c, true))
        return lp__send_error(c, 401, "AuthenticationError", NULL, "adapter management needs the admin key");
    json_t *r = parse_body(body, len);
    if (!r)
        return lp__send_error(c, 400, "BadRequestError", NULL, "body must be a JSON object");
    json_t *name = json_object_get(r, "lora_name"), *path = json_object_get(r, "lora_path");
    enum MHD_Result res;
    if (!json_is_string(name) || !json_is_string(path) || strlen(json_string_value(name)) != json_string_length(name) ||
        strlen(json_string_value(path)) != json_string_length(path)) {
        res = lp__send_error(c, 400, "BadRequestError", !json_is_string(name) ? "lora_name" : "lora_path",
                             "lora_name and lora_path must be strings (without NUL bytes)");
    } else if (!strcmp(json_string_value(name), s->model_id)) {
        res = lp__send_error(c, 400, "BadRequestError", "lora_name", "'%s' is the base model's name",
                             json_string_value(name));
    } else {
        lp_error err = {0};
        int rc = lp_store_register(s->store, json_string_value(name), json_string_value(path), false, false, &err);
        if (rc == LP_OK) {
            char *msg = NULL;
            if (asprintf(&msg, "Success: LoRA adapter '%s' added successfully.", json_string_value(name)) < 0)
                msg = NULL;
            res = lp__send_text(c, 200, "text/plain", msg);
        } else {
            res = lp__send_error(c, 400, "BadRequestError",
                                 rc == LP_ERR_EXISTS || strstr(err.msg, "lora_name") ? "lora_name" : "lora_path",
                                 "%s", err.msg);
        }
    }
    json_decref(r);
    return res;
}

static enum MHD_Result unload_adapter(lp_server *s, struct MHD_Connection *c, const char *body, size_t len) {
    if (!lp__authorized(s, c, true))
        return lp__send_error(c, 401, "AuthenticationError", NULL, "adapter management needs the admin key");
    json_t *r = parse_body(body, len);
    if (!r)
        return lp__send_error(c, 400, "BadRequestError", NULL, "body must be a JSON object");
    json_t *name = json_object_get(r, "lora_name");
    enum MHD_Result res;
    if (!json_is_string(name)) {
        res = lp__send_error(c, 400, "BadRequestError", "lora_name", "lora_name must be a string");
    } else {
        lp_error err = {0};
        if (lp_store_unregister(s->store, json_string_value(name), &err) == LP_OK) {
            char *msg = NULL;
            if (asprintf(&msg, "Success: LoRA adapter '%s' removed successfully.", json_string_value(name)) < 0)
                msg = NULL;
            res = lp__send_text(c, 200, "text/plain", msg);
        } else {
            res = lp__send_error(c, 404, "NotFoundError", "lora_name", "%s", err.msg);
        }
    }
    json_decref(r);
    return res;
}

static enum MHD_Result tokenize(lp_server *s, struct MHD_Connection *c, const char *body, size_t len) {
    json_t *r = parse_body(body, len);
    if (!r)
        return lp__send_error(c, 400, "BadRequestError", NULL, "body must be a JSON object");
    json_t *prompt = json_object_get(r, "prompt");
    enum MHD_Result res;
    if (!json_is_string(prompt)) {
        res = lp__send_error(c, 400, "BadRequestError", "prompt", "prompt must be a string");
    } else {
        bool add = !json_is_false(json_object_get(r, "add_special_tokens"));
        int32_t *ids = NULL;
        size_t n = 0;
        lp_error err = {0};
        if (lp_tokenizer_encode(s->tok, json_string_value(prompt), json_string_length(prompt), add, &ids, &n, &err)) {
            res = lp__send_error(c, 400, "BadRequestError", "prompt", "%s", err.msg);
        } else {
            json_t *t = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(t, json_integer(ids[i]));
            res = lp__send_json(c, 200, json_pack("{s:o,s:I,s:i}", "tokens", t, "count", (json_int_t)n,
                                                  "max_model_len", s->p.max_model_len));
        }
        free(ids);
    }
    json_decref(r);
    return res;
}

static enum MHD_Result detokenize(lp_server *s, struct MHD_Connection *c, const char *body, size_t len) {
    json_t *r = parse_body(body, len);
    if (!r)
        return lp__send_error(c, 400, "BadRequestError", NULL, "body must be a JSON object");
    json_t *tokens = json_object_get(r, "tokens");
    int vocab = lp_tokenizer_vocab_size(s->tok);
    enum MHD_Result res;
    size_t n = json_is_array(tokens) ? json_array_size(tokens) : 0;
    int32_t *ids = lp__malloc_array(n ? n : 1, sizeof(int32_t));
    bool ok = json_is_array(tokens) && ids;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *e = json_array_get(tokens, i);
        ok = json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) < vocab;
        if (ok)
            ids[i] = (int32_t)json_integer_value(e);
    }
    char *text = NULL;
    size_t tl = 0;
    if (!ok)
        res = lp__send_error(c, 400, "BadRequestError", "tokens", "tokens must be a list of ids in [0, %d)", vocab);
    else if (lp_tokenizer_decode(s->tok, ids, n, false, &text, &tl, NULL))
        res = lp__send_error(c, 400, "BadRequestError", "tokens", "cannot decode");
    else
        res = lp__send_json(c, 200, json_pack("{s:s%}", "prompt", text, tl));
    free(text);
    free(ids);
    json_decref(r);
    return res;
}

enum MHD_Result lp__handle_admin(lp_server *s, struct MHD_Connection *c, const char *method, const char *url,
                                 const char *body, size_t len, bool *handled) {
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    *handled = true;
    if (!strcmp(url, "/health")) {
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        return stopping ? lp__send_error(c, 503, "ServiceUnavailableError", NULL, "shutting down")
                        : lp__send_json(c, 200, json_pack("{s:s}", "status", "ok"));
    }
    if (!strcmp(url, "/metrics") && get)
        return lp__send_text(c, 200, "text/plain; version=0.0.4", lp__metrics_render(s));
    if (!strcmp(url, "/v1/models") && get)
        return models(s, c);
    if (!strcmp(url, "/v1/adapters") && get)
        return adapters(s, c);
    if (!strcmp(url, "/v1/load_lora_adapter") && post)
        return load_adapter(s, c, body, len);
    if (!strcmp(url, "/v1/unload_lora_adapter") && post)
        return unload_adapter(s, c, body, len);
    if (!strcmp(url, "/tokenize") && post)
        return tokenize(s, c, body, len);
    if (!strcmp(url, "/detokenize") && post)
        return detokenize(s, c, body, len);
    static const char *known[] = {"/metrics", "/v1/models", "/v1/adapters", "/v1/load_lora_adapter",
                                  "/v1/unload_lora_adapter", "/tokenize", "/detokenize"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(url, known[i]))
            return lp__send_error(c, 405, "BadRequestError", NULL, "method %s not allowed on %s", method, url);
    *handled = false;
    return MHD_NO;
}
