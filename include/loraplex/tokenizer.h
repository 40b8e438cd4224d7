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

/* Load options. By default encode(add_special=true) applies the
 * tokenizer.json post_processor exactly as HF tokenizers does (so a file
 * whose post_processor is only ByteLevel, like the original Llama-3 one,
 * adds no BOS). transformers overrides that when tokenizer_config.json sets
 * add_bos_token / add_eos_token explicitly: it replaces the post-processor
 * by the template "[bos] $A [eos]". add_bos / add_eos do the same here:
 * -1 keeps the file's post_processor; 0 or 1 (either one set) replaces it,
 * and a 1 requires the matching token string, which must exist. */
typedef struct lp_tokenizer_params {
    int add_bos;           /* -1, 0 or 1 */
    int add_eos;           /* -1, 0 or 1 */
    const char *bos_token; /* e.g. "<|begin_of_text|>"; read during load only */
    const char *eos_token;
} lp_tokenizer_params;
lp_tokenizer_params lp_tokenizer_default_params(void);
/* lp_tokenizer_load / _load_buffer with params (NULL = defaults). */
int lp_tokenizer_load_ex(const char *tokenizer_json_path,
                         const lp_tokenizer_params *params, lp_tokenizer **out,
                         lp_error *err);
int lp_tokenizer_load_buffer_ex(const char *json, size_t len,
                                const lp_tokenizer_params *params,
                                lp_tokenizer **out, lp_error *err);

/* Number of ids (max id + 1 over the vocab and added tokens). Every id in
 * the file must be below the number of entries it declares (vocab plus
 * added tokens), so a hostile file cannot make this huge; callers should
 * still check it against the model's embedding rows. */
int32_t lp_tokenizer_vocab_size(const lp_tokenizer *t);
/* The token string as stored in the vocab (e.g. "Ġthe") or the added
 * token's content; NULL if out of range or unassigned. Valid while t lives. */
const char *lp_tokenizer_token(const lp_tokenizer *t, int32_t id);
/* Id of an exact vocab or added-token string, or -1. */
int32_t lp_tokenizer_find(const lp_tokenizer *t, const char *token);
/* True for added tokens marked special (skipped by decode with skip_special). */
bool lp_tokenizer_is_special(const lp_tokenizer *t, int32_t id);

/* Encode UTF-8 text (len bytes; invalid UTF-8 is an LP_ERR_INVALID error).
 * add_special: apply the post_processor's template (e.g. Llama-2's <s>; see
 * lp_tokenizer_params for tokenizer_config.json's add_bos_token).
 * Added tokens in the text are always recognised (as transformers does).
 * *ids is heap-allocated; caller frees. */
int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len,
                        bool add_special, int32_t **ids, size_t *n_ids,
                        lp_error *err);
/* Decode ids to UTF-8 (invalid byte sequences become U+FFFD, as the
 * reference does). *out is heap-allocated and NUL-terminated; caller frees.
 * An id outside [0, vocab_size) is an LP_ERR_RANGE error naming its index;
 * an unassigned id inside that range is skipped, as HF does. */
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
/* lp_detok_new returns NULL on OOM. lp_detok_flush ends the stream: pushes
 * after it fail with LP_ERR_INVALID; so do all calls after an error. A
 * detokenizer is used by one thread at a time; it borrows the tokenizer,
 * which must outlive it. Byte-fallback tokens are held until the run of
 * them ends, because an invalid run decodes to one U+FFFD per byte. */

#endif
