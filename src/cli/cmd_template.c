/* cmd_template.c - `loraplex template`: render a model's chat template for
 * one JSON request on stdin, exactly as the server feeds it to the model. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "loraplex/chat_template.h"

static const char k_usage[] =
    "usage: loraplex template [--model DIR] < request.json\n"
    "\n"
    "Reads one JSON object {\"messages\": [...], \"tools\": [...], \"add_generation_prompt\": true,\n"
    "...extra template variables} on stdin and prints exactly the prompt the model's\n"
    "chat template renders (no newline added). bos_token/eos_token come from the\n"
    "model's tokenizer_config.json unless given. A template that raises prints its\n"
    "message on stderr and exits 1.\n";

int lp_cmd_template(int argc, char **argv) {
    const char *model_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        }
        if (!(v = lp_cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "--model")) {
            model_dir = v;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
    }
    if (!model_dir)
        model_dir = lp_cli_default_model();
    lp_error err = {0};
    char *src = NULL, *bos = NULL, *eos = NULL, *out = NULL;
    lp_chat_template *t = NULL;
    json_t *vars = NULL;
    int status = 1;
    json_error_t je;
    if (!(vars = json_loadf(stdin, JSON_REJECT_DUPLICATES, &je)) || !json_is_object(vars)) {
        fprintf(stderr, "error: stdin: expected one JSON object (%s)\n", vars ? "not an object" : je.text);
        goto out;
    }
    if (lp_chat_template_load_model(model_dir, &src, &bos, &eos, &err) ||
        lp_chat_template_compile(src, strlen(src), &t, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto out;
    }
    /* a token the tokenizer does not have stays undefined, as in transformers */
    if (!json_object_get(vars, "bos_token") && bos)
        json_object_set_new(vars, "bos_token", json_string(bos));
    if (!json_object_get(vars, "eos_token") && eos)
        json_object_set_new(vars, "eos_token", json_string(eos));
    if (!json_object_get(vars, "documents"))
        json_object_set_new(vars, "documents", json_null());
    if (!json_object_get(vars, "add_generation_prompt"))
        json_object_set_new(vars, "add_generation_prompt", json_false());
    if (!json_object_get(vars, "tools"))
        json_object_set_new(vars, "tools", json_null());
    size_t len = 0;
    bool raised = false;
    if (lp_chat_template_render(t, vars, NULL, &out, &len, &raised, &err)) {
        fprintf(stderr, "%s%s\n", raised ? "" : "error: ", err.msg);
        goto out;
    }
    fwrite(out, 1, len, stdout);
    status = 0;
out:
    free(out);
    free(src);
    free(bos);
    free(eos);
    lp_chat_template_free(t);
    json_decref(vars);
    return status;
}
