/* conform.h - shared helpers for tests against the reference fixtures:
 * reference.json prompts/greedy tokens, reference.safetensors logits. */
#ifndef LP_TEST_CONFORM_H
#define LP_TEST_CONFORM_H

#include <stdint.h>

#include "backend/backend.h"
#include "format/safetensors.h"

typedef struct conform_ref {
    int n_prompts;
    int32_t *prompts[8];
    int prompt_len[8];
    lp_st_file *logits; /* reference.safetensors */
    void *json;         /* json_t of reference.json */
} conform_ref;

int conform_ref_load(const char *dir, conform_ref *ref);
void conform_ref_free(conform_ref *ref);
/* Greedy reference tokens for `tag` and prompt i into out[16]; count or -1. */
int conform_ref_greedy(const conform_ref *ref, const char *tag, int i, int32_t *out, int cap);
/* Reference logits (len, vocab) for tag/prompt, or NULL. */
const float *conform_ref_logits(const conform_ref *ref, const char *tag, int i, int64_t *len,
                                int64_t *vocab);

/* Run one prompt through a fresh forward (all positions' logits) on
 * backend `be` using blocks 0..; logits written to out (len, vocab). */
int conform_forward_all(lp_backend *be, const int32_t *ids, int n, int adapter, float *out);
/* Greedy-decode n_new tokens for a prompt via the engine. */
int conform_greedy(lp_backend *be, const int32_t *ids, int n, int adapter, int n_new, int32_t *out);

/* Relative L2 error ||a - b|| / ||b|| over n floats. */
double rel_l2(const float *a, const float *b, int64_t n);

#endif
