/* chat_template.h - a Jinja2 interpreter for Hugging Face chat templates:
 * compiles a model's `chat_template` once and renders `messages` into a
 * prompt byte-identically to transformers' apply_chat_template (Jinja2
 * ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols).
 * Rendering is bounded by step, output, memory and depth limits, so a hostile
 * template cannot hang or exhaust the server. See docs/chat-templates.md. */
#ifndef LORAPLEX_CHAT_TEMPLATE_H
#define LORAPLEX_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loraplex/status.h"

/* A compiled template. Immutable after compile: one template may be rendered
 * from several threads at once (each render has its own state). */
typedef struct lp_chat_template lp_chat_template;

/* Bounds on one render. Exceeding any of them fails the render with
 * LP_ERR_LIMIT and a message naming the limit. */
typedef struct lp_template_limits {
    size_t max_output;  /* bytes of rendered text (also caps each captured
                           block: {% set %}...{% endset %}, macro output) */
    uint64_t max_steps; /* evaluation steps: one per expression node,
                           statement and loop iteration, plus bulk work
                           (long strings, big lists) charged by size */
    int max_depth;      /* macro call nesting (recursion depth) */
    size_t max_memory;  /* bytes of values built during the render (strings,
                           lists, dicts); the caller's JSON is not counted */
    int64_t fixed_time; /* if non-zero, strftime_now() formats this Unix time
                           (seconds, UTC) instead of the local current time:
                           for reproducible tests */
} lp_template_limits;

/* Defaults: 1 MiB output, 10M steps, depth 64, 64 MiB memory, live clock. */
lp_template_limits lp_template_default_limits(void);

/* Compile Jinja source (len bytes of UTF-8, need not be NUL-terminated).
 * On success *out owns the template (free with lp_chat_template_free); the
 * source buffer may be freed afterwards. Syntax errors return LP_ERR_FORMAT
 * with a message "line L:C: ..." naming the place (C counts bytes from 1);
 * expression/statement nesting deeper than LP_CHAT_TEMPLATE_MAX_NESTING is
 * LP_ERR_LIMIT. */
#define LP_CHAT_TEMPLATE_MAX_NESTING 128
int lp_chat_template_compile(const char *source, size_t len,
                             lp_chat_template **out, lp_error *err);
void lp_chat_template_free(lp_chat_template *t);

/* Render with a JSON object of template variables (borrowed, not modified):
 * typically messages, tools (null when absent, as transformers passes it),
 * documents, add_generation_prompt, bos_token, eos_token and any extra
 * variables (enable_thinking, ...). lim may be NULL for the defaults.
 * On success *out is a NUL-terminated heap string the caller frees and
 * *out_len its length (the text may itself contain NUL bytes if the input
 * strings do). On failure *out is NULL and:
 *  - a template that calls raise_exception(msg) fails with LP_ERR_INVALID,
 *    err->msg = msg exactly (truncated to the record size), *raised = true;
 *  - a limit exceeded: LP_ERR_LIMIT naming the limit;
 *  - any other runtime error (undefined variable used, type error, ...):
 *    LP_ERR_INVALID with "line L: ..." and *raised = false.
 * raised may be NULL. */
int lp_chat_template_render(const lp_chat_template *t, const json_t *vars,
                            const lp_template_limits *lim, char **out,
                            size_t *out_len, bool *raised, lp_error *err);

/* Find a model's chat template in model_dir, as transformers does: a
 * chat_template.jinja file takes priority over tokenizer_config.json's
 * "chat_template" (a string, or a list of {"name", "template"} from which the
 * one named "default" is taken). bos_token/eos_token come from
 * tokenizer_config.json (a string or an {"content": ...} object); each is set
 * to NULL when absent or null. *source, *bos and *eos are heap strings the
 * caller frees (bos and eos may be NULL pointers to skip them). No template
 * found is LP_ERR_NOT_FOUND naming the directory. */
int lp_chat_template_load_model(const char *model_dir, char **source,
                                char **bos, char **eos, lp_error *err);

#endif
