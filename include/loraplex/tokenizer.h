/* tokenizer.h - Hugging Face tokenizer.json: BPE with ByteLevel
 * pre-tokenization and Split regexes (Llama-3, Qwen2/3), NFC normalizer,
 * added/special tokens, and the SentencePiece-style BPE (Metaspace or
 * Prepend/Replace normalizer, byte_fallback) of Llama-2/Mistral/TinyLlama.
 * Incremental detokenization for streaming. */
#ifndef LORAPLEX_TOKENIZER_H
#define LORAPLEX_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loraplex/status.h"

typedef struct lp_tokenizer lp_tokenizer;

/* Load DIR/tokenizer.json (path names the file itself). Unsupported model
 * types, normalizers, pre-tokenizers or decoders are rejected with a message
 * naming them. The tokenizer is immutable after load and safe to use from
 * several threads at once. */
int lp_tokenizer_load(const char *tokenizer_json_path, lp_tokenizer **out,
                      lp_error *err);
/* Same, from an in-memory JSON text (for fuzzing and tests). */
int lp_tokenizer_load_buffer(const char *json, size_t len, lp_tokenizer **out,
                             lp_error *err);
void lp_tokenizer_free(lp_tokenizer *t);

/* Number of ids (max id + 1 over the vocab and added tokens). */
int32_t lp_tokenizer_vocab_size(const lp_tokenizer *t);
/* The token string as stored in the vocab (e.g. "Ġthe"); NULL if out of range. */
const char *lp_tokenizer_token(const lp_tokenizer *t, int32_t id);
/* Id of an exact vocab or added-token string, or -1. */
int32_t lp_tokenizer_find(const lp_tokenizer *t, const char *token);
/* True for added tokens marked special (skipped by decode with skip_special). */
bool lp_tokenizer_is_special(const lp_tokenizer *t, int32_t id);

/* Encode UTF-8 text (len bytes; invalid UTF-8 is an LP_ERR_INVALID error).
 * add_special: apply the post_processor's template (e.g. Llama-3's BOS).
 * Added tokens in the text are always recognised (as transformers does).
 * *ids is heap-allocated; caller frees. */
int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len,
                        bool add_special, int32_t **ids, size_t *n_ids,
                        lp_error *err);
/* Decode ids to UTF-8 (invalid byte sequences become U+FFFD, as the
 * reference does). *out is heap-allocated and NUL-terminated; caller frees. */
int lp_tokenizer_decode(const lp_tokenizer *t, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **out, size_t *out_len,
                        lp_error *err);

/* Streaming detokenizer: push ids one at a time, get the text that became
 * final. Never emits a partial UTF-8 sequence; the concatenation of all
 * pushes plus lp_detok_flush equals lp_tokenizer_decode of all ids. */
typedef struct lp_detok lp_detok;
lp_detok *lp_detok_new(const lp_tokenizer *t, bool skip_special);
/* Appends the newly final text to *out (heap, NUL-terminated, caller frees;
 * may be empty). Out-of-range ids are an LP_ERR_RANGE error. */
int lp_detok_push(lp_detok *d, int32_t id, char **out, size_t *out_len,
                  lp_error *err);
/* Whatever is still held back (an incomplete UTF-8 tail becomes U+FFFD). */
int lp_detok_flush(lp_detok *d, char **out, size_t *out_len, lp_error *err);
void lp_detok_free(lp_detok *d);

#endif
