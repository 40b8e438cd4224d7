/* tokenizer-impl.h - private structures of the tokenizer module: the loaded
 * tokenizer.json pipeline (normalizers, pre-tokenizers, BPE model, decoders,
 * post-processor), shared by tokenizer.c, text.c, bpe.c, pretok.c, detok.c. */
#ifndef LP_TOKENIZER_IMPL_H
#define LP_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "loraplex/status.h"
#include "loraplex/tokenizer.h"

/* Nesting limit for Sequence normalizers/pre-tokenizers/decoders/processors. */
#define LP__TOK_MAX_NEST 8
/* Flattened stages per pipeline (after Sequences are expanded). */
#define LP__TOK_MAX_STAGES 32
/* Largest regex source accepted from a tokenizer.json. */
#define LP__TOK_MAX_REGEX 65536
/* PCRE2 budget for one match call: base + per byte of subject left. This
 * bounds a catastrophically backtracking pattern from a hostile file. */
#define LP__TOK_MATCH_LIMIT_BASE 2000000u
#define LP__TOK_MATCH_LIMIT_PER_BYTE 64u

/* ---- growable byte buffer (text.c) ---- */
typedef struct lp__tbuf {
    char *p;
    size_t n, cap;
} lp__tbuf;
int lp__tbuf_reserve(lp__tbuf *b, size_t extra);
int lp__tbuf_put(lp__tbuf *b, const void *s, size_t n);
static inline int lp__tbuf_putc(lp__tbuf *b, char c) { return lp__tbuf_put(b, &c, 1); }
void lp__tbuf_free(lp__tbuf *b);

/* ---- UTF-8 (text.c) ---- */
/* Offset of the first byte that is not part of valid UTF-8, or n. */
size_t lp__utf8_check(const char *s, size_t n);
/* Length of the (valid) character starting at s[0] (1..4); 1 on a bad lead. */
size_t lp__utf8_len(const char *s, size_t n);
/* Decode the character at s (valid UTF-8 assumed); returns its length. */
size_t lp__utf8_dec(const char *s, size_t n, uint32_t *cp);
/* Encode cp; returns its length (1..4). */
size_t lp__utf8_enc(uint32_t cp, char out[4]);
/* One step of lossy decoding (Rust String::from_utf8_lossy rules, i.e. the
 * Unicode "maximal subpart" practice). Returns 1: a valid character of
 * *len bytes; 0: an invalid maximal subpart of *len bytes (one U+FFFD);
 * -1: the n bytes are an incomplete but so far valid sequence. */
int lp__utf8_lossy_step(const unsigned char *s, size_t n, size_t *len);
/* Append s (n bytes) to out, invalid subparts replaced by U+FFFD. */
int lp__utf8_lossy_append(lp__tbuf *out, const char *s, size_t n);
bool lp__uni_is_space(uint32_t cp);   /* Unicode White_Space */
bool lp__uni_is_word(uint32_t cp);    /* regex \w: alphabetic, marks, Nd, Pc */
bool lp__uni_is_numeric(uint32_t cp); /* Rust char::is_numeric: Nd, Nl, No */
/* GPT-2 byte-level alphabet: the UTF-8 of byte b's character, and the byte
 * of a code point (-1 when cp is not in the alphabet). Thread-safe. */
const char *lp__bytelevel_utf8(unsigned char b, size_t *len);
int lp__bytelevel_byte(uint32_t cp);

/* ---- patterns: literal or PCRE2 regex (pretok.c) ---- */
typedef struct lp__pattern {
    char *lit; /* literal bytes (String pattern), or NULL */
    size_t lit_len;
    pcre2_code *re; /* regex (Regex pattern, or an empty literal) */
    char *where;    /* the tokenizer.json field, for errors */
} lp__pattern;

/* Per-call regex scratch: match data, limits, JIT stack. */
typedef struct lp__rx {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} lp__rx;
int lp__rx_init(lp__rx *rx);
void lp__rx_free(lp__rx *rx);

typedef struct lp__span {
    size_t start, end;
    bool match;
} lp__span;
typedef struct lp__spans {
    lp__span *v;
    size_t n, cap;
} lp__spans;
int lp__spans_push(lp__spans *s, size_t start, size_t end, bool match);

/* Compile a pattern from a tokenizer.json {"String": s} / {"Regex": r}
 * object; `where` names the field for errors. */
struct json_t;
int lp__pattern_parse(const struct json_t *obj, const char *where,
                      lp__pattern *p, lp_error *err);
void lp__pattern_free(lp__pattern *p);
/* All non-overlapping matches (oniguruma find_iter semantics) as spans that
 * tile [0, n): runs of non-matching text have match=false. */
int lp__pattern_find(const lp__pattern *p, lp__rx *rx, const char *s, size_t n,
                     lp__spans *out, lp_error *err);
/* Replace every match with `with`, appending the result to out. */
int lp__pattern_replace(const lp__pattern *p, lp__rx *rx, const char *s,
                        size_t n, const char *with, size_t with_len,
                        lp__tbuf *out, lp__spans *scratch, lp_error *err);

/* ---- normalizers (pretok.c) ---- */
typedef enum {
    LP__NORM_NFC,
    LP__NORM_NFD,
    LP__NORM_NFKC,
    LP__NORM_NFKD,
    LP__NORM_PREPEND,
    LP__NORM_REPLACE,
    LP__NORM_LOWERCASE,
    LP__NORM_STRIP,
} lp__norm_kind;

typedef struct lp__norm {
    lp__norm_kind kind;
    char *str; /* Prepend: prefix; Replace: content */
    size_t str_len;
    lp__pattern pat; /* Replace */
    bool left, right; /* Strip */
} lp__norm;

/* ---- pre-tokenizers (pretok.c) ---- */
typedef enum {
    LP__PRE_SPLIT,
    LP__PRE_BYTELEVEL,
    LP__PRE_METASPACE,
    LP__PRE_WHITESPACE_SPLIT,
    LP__PRE_WHITESPACE,
    LP__PRE_DIGITS,
} lp__pre_kind;

typedef enum {
    LP__SPLIT_REMOVED,
    LP__SPLIT_ISOLATED,
    LP__SPLIT_MERGED_PREV,
    LP__SPLIT_MERGED_NEXT,
    LP__SPLIT_CONTIGUOUS,
} lp__split_behavior;

typedef enum { LP__PREPEND_ALWAYS, LP__PREPEND_FIRST, LP__PREPEND_NEVER } lp__prepend_scheme;

typedef struct lp__pretok {
    lp__pre_kind kind;
    lp__pattern pat; /* Split, Whitespace */
    lp__split_behavior behavior;
    bool invert;
    bool add_prefix_space, use_regex; /* ByteLevel */
    char rep[4];                      /* Metaspace replacement, UTF-8 */
    size_t rep_len;
    lp__prepend_scheme scheme;
    bool split;
    bool individual_digits; /* Digits */
} lp__pretok;

/* ---- decoders (detok.c) ---- */
typedef enum {
    LP__DEC_BYTELEVEL,
    LP__DEC_REPLACE,
    LP__DEC_BYTEFALLBACK,
    LP__DEC_FUSE,
    LP__DEC_STRIP,
    LP__DEC_METASPACE,
} lp__dec_kind;

typedef struct lp__dec {
    lp__dec_kind kind;
    lp__pattern pat; /* Replace */
    char *content;   /* Replace: replacement text */
    size_t content_len;
    char ch[4]; /* Strip content / Metaspace replacement, UTF-8 */
    size_t ch_len;
    size_t start, stop; /* Strip */
    bool strip_first;   /* Metaspace: prepend_scheme != never */
} lp__dec;

/* ---- added tokens ---- */
typedef struct lp__added {
    char *content;
    size_t len;
    char *norm; /* content after the normalizer (normalized=true tokens) */
    size_t norm_len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} lp__added;

/* Candidate list for matching added tokens: indices into t->added, bucketed
 * by first byte, longest first (aho-corasick LeftmostLongest equivalent). */
typedef struct lp__added_set {
    uint32_t *idx;       /* all candidates, grouped by first byte */
    uint32_t off[257];   /* bucket b is idx[off[b] .. off[b+1]) */
    bool use_norm;       /* match the normalized content */
} lp__added_set;

/* ---- string -> id hash map (bpe.c) ---- */
typedef struct lp__strmap {
    int32_t *slots; /* id, or -1 */
    size_t mask;
} lp__strmap;

/* ---- (id, id) -> (rank, new id) hash map (bpe.c) ---- */
typedef struct lp__merge_slot {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    uint32_t rank;
    int32_t new_id;
} lp__merge_slot;
typedef struct lp__mergemap {
    lp__merge_slot *slots;
    size_t mask, n;
} lp__mergemap;

/* ---- post-processor template piece ---- */
typedef struct lp__tpl {
    int32_t *pre; /* ids before the sequence */
    size_t n_pre;
    int32_t *post; /* ids after it */
    size_t n_post;
} lp__tpl;

struct lp_tokenizer {
    /* model: BPE vocab, ids 0..n_ids-1 (holes have vocab_len == SIZE_MAX) */
    int32_t n_ids;            /* max id + 1 over vocab and added tokens */
    char *strs;               /* all vocab strings, NUL-separated */
    size_t *vocab_off;        /* [n_ids] offset into strs, SIZE_MAX if none */
    uint32_t *vocab_len;      /* [n_ids] */
    lp__strmap vocab;         /* vocab string -> id */
    lp__mergemap merges;
    int32_t byte_ids[256];    /* <0xNN> ids for byte_fallback, -1 if absent */
    char *unk_token;          /* NULL if none */
    char *cont_prefix;        /* continuing_subword_prefix or NULL */
    size_t cont_prefix_len;
    char *eow_suffix;         /* end_of_word_suffix or NULL */
    size_t eow_suffix_len;
    bool byte_fallback, fuse_unk, ignore_merges;

    /* added tokens */
    lp__added *added;
    size_t n_added;
    int32_t *added_of_id; /* [n_ids] index into added, or -1 */
    lp__strmap added_map; /* content -> id */
    lp__added_set raw_set, norm_set;

    /* pipeline */
    lp__norm norms[LP__TOK_MAX_STAGES];
    size_t n_norms;
    lp__pretok pretoks[LP__TOK_MAX_STAGES];
    size_t n_pretoks;
    lp__dec decs[LP__TOK_MAX_STAGES];
    size_t n_decs;
    bool has_decoder; /* false: tokens are joined with " " */
    lp__tpl tpls[LP__TOK_MAX_STAGES];
    size_t n_tpls;
};

/* The next free stage of one pipeline array (stages[*n], elements of
 * `size` bytes, LP__TOK_MAX_STAGES at most), zeroed, in *out; LP_ERR_LIMIT
 * naming `what` ("decoders", ...) when the array is full. tokenizer.c */
int lp__tok_stage_add(void *stages, size_t size, size_t *n, const char *what, const char *where, void **out,
                      lp_error *err);

/* ---- bpe.c ---- */
int lp__strmap_init(lp__strmap *m, size_t n_items);
void lp__strmap_free(lp__strmap *m);
/* Look up s in m, whose entries are ids resolved through get(ctx, id). */
typedef const char *(*lp__strmap_get_fn)(const void *ctx, int32_t id, size_t *len);
int32_t lp__strmap_find(const lp__strmap *m, const char *s, size_t n,
                        lp__strmap_get_fn get, const void *ctx);
/* Insert id (key = get(ctx, id)); returns the id already there, or -1. */
int32_t lp__strmap_insert(lp__strmap *m, int32_t id, lp__strmap_get_fn get,
                          const void *ctx);
const char *lp__vocab_get(const void *t, int32_t id, size_t *len);
const char *lp__added_get(const void *t, int32_t id, size_t *len);
int32_t lp__vocab_find(const lp_tokenizer *t, const char *s, size_t n);

int lp__mergemap_init(lp__mergemap *m, size_t n_items);
void lp__mergemap_free(lp__mergemap *m);
/* Insert or overwrite (a later duplicate merge wins, as in HF). */
void lp__mergemap_put(lp__mergemap *m, int32_t a, int32_t b, uint32_t rank,
                      int32_t new_id);
const lp__merge_slot *lp__mergemap_get(const lp__mergemap *m, int32_t a, int32_t b);

/* Growable id list. */
typedef struct lp__ids {
    int32_t *v;
    size_t n, cap;
} lp__ids;
int lp__ids_push(lp__ids *ids, int32_t id);

/* BPE scratch reused across words of one encode call. */
typedef struct lp__bpe_sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes; 0 = merged away */
} lp__bpe_sym;
typedef struct lp__bpe_item {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} lp__bpe_item;
typedef struct lp__bpe_scratch {
    lp__bpe_sym *sym;
    size_t sym_cap;
    lp__bpe_item *heap;
    size_t heap_cap;
    lp__tbuf tmp;
} lp__bpe_scratch;
void lp__bpe_scratch_free(lp__bpe_scratch *s);
/* Tokenize one pre-token with the BPE model, appending ids. */
int lp__bpe_word(const lp_tokenizer *t, lp__bpe_scratch *sc, const char *w,
                 size_t n, lp__ids *out, lp_error *err);

/* ---- pretok.c ---- */
int lp__norm_parse(lp_tokenizer *t, const struct json_t *j, const char *where,
                   int depth, lp_error *err);
void lp__norm_free(lp__norm *n);
/* Apply all normalizers to s, result in out (replaced). */
int lp__normalize(const lp_tokenizer *t, lp__rx *rx, const char *s, size_t n,
                  lp__tbuf *out, lp__tbuf *tmp, lp__spans *spans, lp_error *err);
int lp__pretok_parse(lp_tokenizer *t, const struct json_t *j, const char *where,
                     int depth, lp_error *err);
void lp__pretok_free(lp__pretok *p);

/* Per-level scratch for the depth-first pre-tokenization. */
typedef struct lp__pre_level {
    lp__tbuf a, b;
    lp__spans spans, pieces;
} lp__pre_level;
typedef struct lp__enc {
    const lp_tokenizer *t;
    lp__rx rx;
    lp__pre_level lv[LP__TOK_MAX_STAGES + 1];
    lp__bpe_scratch bpe;
    lp__ids *out;
} lp__enc;
void lp__pre_level_free(lp__pre_level *lv);
/* Pre-tokenize s from stage `level` on and BPE-encode every piece. */
int lp__pretok_run(lp__enc *c, size_t level, const char *s, size_t n,
                   bool at_origin, lp_error *err);

/* ---- detok.c ---- */
int lp__dec_parse(lp_tokenizer *t, const struct json_t *j, const char *where,
                  int depth, lp_error *err);
void lp__dec_free(lp__dec *d);

/* ---- tokenizer.c ---- */
/* The string of an id for decoding (added content first); NULL for holes. */
const char *lp__id_str(const lp_tokenizer *t, int32_t id, size_t *len);

/* ---- JSON helpers (tokenizer.c) ---- */
const char *lp__json_type_name(const struct json_t *j);
/* Optional fields: absent or null -> default; wrong type -> LP_ERR_FORMAT. */
int lp__json_bool(const struct json_t *obj, const char *key, bool def, bool *out,
                  const char *where, lp_error *err);
int lp__json_size(const struct json_t *obj, const char *key, size_t def,
                  size_t max, size_t *out, const char *where, lp_error *err);
/* Required string field (may be empty); *out points into the JSON. */
int lp__json_str(const struct json_t *obj, const char *key, const char **out,
                 size_t *len, const char *where, lp_error *err);
/* A string that must be exactly one character; its UTF-8 into ch. */
int lp__json_char(const struct json_t *obj, const char *key, const char *def,
                  char ch[4], size_t *ch_len, const char *where, lp_error *err);
char *lp__memdup(const char *s, size_t n); /* NUL-terminated copy */

#endif
