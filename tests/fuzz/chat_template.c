/* chat_template.c (fuzz) - libFuzzer driver for the chat template
 * interpreter: compile the input as a template and, if it compiles, render
 * it with a small fixed conversation under tight limits, checking the
 * error contract (code and message set, no output on failure). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loraplex/chat_template.h"

#define FUZZ_ASSERT(c)                                                         \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

static const char vars_json[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"Be brief.\"},"
    "{\"role\": \"user\", \"content\": \"  Hi \\u00e9\\u65e5 \\ud83d\\ude00\\n\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nhm\\n</think>\\n\\nHello\","
    " \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\":"
    " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 1.5}}}]},"
    "{\"role\": \"tool\", \"content\": \"{\\\"temp\\\": 18}\"},"
    "{\"role\": \"user\", \"content\": \"Thanks\"}],"
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    " \"description\": \"Weather\", \"parameters\": {\"type\": \"object\","
    " \"properties\": {\"city\": {\"type\": \"string\", \"enum\": [\"a\", \"b\"]},"
    " \"days\": {\"type\": \"array\", \"items\": {\"type\": \"integer\"}}},"
    " \"required\": [\"city\"]}}}],"
    "\"documents\": null, \"add_generation_prompt\": true,"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"enable_thinking\": false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *vars;
    if (!vars) {
        vars = json_loads(vars_json, 0, NULL);
        FUZZ_ASSERT(vars != NULL);
    }
    lp_chat_template *t = (lp_chat_template *)&size; /* must be reset on error */
    lp_error err;
    int rc = lp_chat_template_compile((const char *)data, size, &t, &err);
    if (rc != LP_OK) {
        FUZZ_ASSERT(t == NULL && err.code == rc && rc < 0);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL && err.msg[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(t != NULL);
    lp_template_limits lim = lp_template_default_limits();
    lim.max_steps = 20000; /* keeps 500 mutations per seed fast */
    lim.max_output = 64 * 1024;
    lim.max_memory = 4u << 20;
    lim.max_depth = 16;
    lim.fixed_time = 1795348800;
    char *out = (char *)&size;
    size_t n = 12345;
    bool raised = true;
    rc = lp_chat_template_render(t, vars, &lim, &out, &n, &raised, &err);
    if (rc == LP_OK) {
        FUZZ_ASSERT(out != NULL && out[n] == '\0' && n <= lim.max_output);
        free(out);
    } else {
        FUZZ_ASSERT(out == NULL && n == 0 && err.code == rc && rc < 0);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL);
        FUZZ_ASSERT(!raised || rc == LP_ERR_INVALID);
    }
    lp_chat_template_free(t);
    return 0;
}
