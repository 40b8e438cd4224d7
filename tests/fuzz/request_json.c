/* request_json.c - fuzz driver for the generation request parser: the input
 * is a /v1/completions body (first byte even) or a /v1/chat/completions body
 * (odd), validated, rendered, tokenized and turned into jobs against the
 * demo model (LORAPLEX_FUZZ_MODEL, default models/tinylm), never queued. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server-impl.h"

static lp_server *g_s;

static lp_server *server(void) {
    if (g_s)
        return g_s;
    lp_server *s = calloc(1, sizeof *s);
    const char *dir = getenv("LORAPLEX_FUZZ_MODEL");
    lp_error err = {0};
    if (!dir)
        dir = "models/tinylm";
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->m.mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->p = lp_server_default_params();
    s->p.max_model_len = 1024;
    snprintf(s->model_id, sizeof s->model_id, "tinylm");
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 4;
    bp.max_adapters = 1;
    lp_store_params sp = {.max_cpu_loras = 1, .max_loras = 1, .max_lora_rank = 64};
    char *src = NULL;
    if (lp_model_load(dir, &s->model, NULL, NULL, &err) || lp_backend_cpu_new(s->model, &bp, &s->be, &err) ||
        lp_store_new(s->model, s->be, &sp, &s->store, &err)) {
        fprintf(stderr, "request_json fuzz: %s (run from the repository root or set LORAPLEX_FUZZ_MODEL)\n", err.msg);
        exit(1);
    }
    s->tok = lp_model_tokenizer(s->model);
    if (lp_chat_template_load_model(dir, &src, &s->bos, &s->eos, &err) == LP_OK)
        lp_chat_template_compile(src, strlen(src), &s->tmpl, &err);
    free(src);
    g_s = s;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_server *s = server();
    if (size < 1)
        return 0;
    char msg[LP_ERROR_MSG_MAX];
    unsigned status = 0;
    int rc = lp__request_check(s, data[0] & 1, (const char *)data + 1, size - 1, &status, msg, sizeof msg);
    if (rc != 0 && (status < 400 || status > 599 || !msg[0])) {
        fprintf(stderr, "request_json fuzz: rejected without a status/message\n");
        abort();
    }
    return 0;
}
