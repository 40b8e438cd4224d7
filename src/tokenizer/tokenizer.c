/* tokenizer.c - load a Hugging Face tokenizer.json (BPE model, added tokens,
 * normalizer, pre-tokenizer, decoder, post-processor), validate every id it
 * names, and run the encode pipeline: added-token split -> normalize ->
 * pre-tokenize -> BPE -> post-process, in the order HF tokenizers uses. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer-impl.h"
#include "util/util.h"

#define TOKENIZER_JSON_MAX ((size_t)512 << 20)

/* ---- JSON helpers ---- */

const char *lp__json_type_name(const json_t *j) {
    if (!j)
        return "nothing";
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

int lp__json_bool(const json_t *obj, const char *key, bool def, bool *out,
                  const char *where, lp_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LP_OK;
    }
    if (!json_is_boolean(v))
        return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: expected a boolean, got %s", where,
                            key, lp__json_type_name(v));
    *out = json_is_true(v);
    return LP_OK;
}

int lp__json_size(const json_t *obj, const char *key, size_t def, size_t max,
                  size_t *out, const char *where, lp_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LP_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s.%s: expected an integer in [0, %zu]", where, key, max);
    *out = (size_t)json_integer_value(v);
    return LP_OK;
}

int lp__json_str(const json_t *obj, const char *key, const char **out, size_t *len,
                 const char *where, lp_error *err) {
    if (!json_is_object(obj))
        return lp_error_set(err, LP_ERR_FORMAT, "%s: expected an object, got %s", where,
                            lp__json_type_name(obj));
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: expected a string, got %s", where,
                            key, lp__json_type_name(v));
    *out = json_string_value(v);
    *len = json_string_length(v);
    return LP_OK;
}

int lp__json_char(const json_t *obj, const char *key, const char *def, char ch[4],
                  size_t *ch_len, const char *where, lp_error *err) {
    const json_t *v = json_object_get(obj, key);
    const char *s = def;
    size_t n = def ? strlen(def) : 0;
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: expected a string, got %s",
                                where, key, lp__json_type_name(v));
        s = json_string_value(v);
        n = json_string_length(v);
    } else if (!def) {
        return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: missing", where, key);
    }
    if (n == 0 || lp__utf8_len(s, n) != n || n > 4)
        return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: expected a single character",
                            where, key);
    memcpy(ch, s, n);
    *ch_len = n;
    return LP_OK;
}

char *lp__memdup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- params ---- */

lp_tokenizer_params lp_tokenizer_default_params(void) {
    lp_tokenizer_params p = {.add_bos = -1, .add_eos = -1, .bos_token = NULL,
                             .eos_token = NULL};
    return p;
}

/* ---- free ---- */

void lp_tokenizer_free(lp_tokenizer *t) {
    if (!t)
        return;
    free(t->strs);
    free(t->vocab_off);
    free(t->vocab_len);
    lp__strmap_free(&t->vocab);
    lp__mergemap_free(&t->merges);
    free(t->unk_token);
    free(t->cont_prefix);
    free(t->eow_suffix);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    free(t->added_of_id);
    lp__strmap_free(&t->added_map);
    free(t->raw_set.idx);
    free(t->norm_set.idx);
    for (size_t i = 0; i < t->n_norms; i++)
        lp__norm_free(&t->norms[i]);
    for (size_t i = 0; i < t->n_pretoks; i++)
        lp__pretok_free(&t->pretoks[i]);
    for (size_t i = 0; i < t->n_decs; i++)
        lp__dec_free(&t->decs[i]);
    for (size_t i = 0; i < t->n_tpls; i++) {
        free(t->tpls[i].pre);
        free(t->tpls[i].post);
    }
    free(t);
}

/* ---- model ---- */

/* An optional string field of the model; "" counts as absent (as in HF,
 * where an empty prefix or suffix changes nothing). */
static int opt_str(const json_t *m, const char *key, char **out, size_t *len,
                   lp_error *err) {
    const json_t *v = json_object_get(m, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return LP_OK;
    if (!json_is_string(v))
        return lp_error_set(err, LP_ERR_FORMAT, "model.%s: expected a string or null, got %s",
                            key, lp__json_type_name(v));
    if (json_string_length(v) == 0)
        return LP_OK;
    *out = lp__memdup(json_string_value(v), json_string_length(v));
    if (!*out)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    if (len)
        *len = json_string_length(v);
    return LP_OK;
}

/* The id a JSON value holds, checked against [0, limit). */
static int get_id(const json_t *v, int64_t limit, int32_t *out, const char *what,
                  lp_error *err) {
    if (!json_is_integer(v))
        return lp_error_set(err, LP_ERR_FORMAT, "%s: id must be an integer, got %s", what,
                            lp__json_type_name(v));
    json_int_t id = json_integer_value(v);
    if (id < 0 || id >= limit)
        return lp_error_set(err, LP_ERR_RANGE,
                            "%s: id %lld is out of range [0, %lld) (the file declares "
                            "%lld tokens)",
                            what, (long long)id, (long long)limit, (long long)limit);
    *out = (int32_t)id;
    return LP_OK;
}

static int parse_vocab(lp_tokenizer *t, const json_t *vocab, int64_t limit,
                       lp_error *err) {
    size_t total = 0;
    const char *key;
    const json_t *val;
    int32_t max_id = -1;
    json_object_foreach((json_t *)vocab, key, val) {
        char what[160];
        snprintf(what, sizeof what, "model.vocab['%.64s']", key);
        int32_t id;
        int rc = get_id(val, limit, &id, what, err);
        if (rc)
            return rc;
        if (id > max_id)
            max_id = id;
        if (!lp__add_size(total, strlen(key) + 1, &total))
            return lp_error_set(err, LP_ERR_LIMIT, "model.vocab: too large");
    }
    t->n_ids = max_id + 1;
    /* the id tables also cover added tokens, sized later; allocate for limit */
    size_t cap = (size_t)limit;
    t->strs = malloc(total ? total : 1);
    t->vocab_off = lp__malloc_array(cap ? cap : 1, sizeof *t->vocab_off);
    t->vocab_len = lp__calloc_array(cap ? cap : 1, sizeof *t->vocab_len);
    if (!t->strs || !t->vocab_off || !t->vocab_len ||
        lp__strmap_init(&t->vocab, json_object_size(vocab)))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cap; i++)
        t->vocab_off[i] = SIZE_MAX;
    size_t at = 0;
    json_object_foreach((json_t *)vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t len = strlen(key);
        if (t->vocab_off[id] != SIZE_MAX)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "model.vocab: id %d is used by both '%.64s' and '%.64s'",
                                (int)id, t->strs + t->vocab_off[id], key);
        memcpy(t->strs + at, key, len + 1);
        t->vocab_off[id] = at;
        t->vocab_len[id] = (uint32_t)len;
        at += len + 1;
        (void)lp__strmap_insert(&t->vocab, id, lp__vocab_get, t); /* keys are unique */
    }
    return LP_OK;
}

/* One merge as two strings (a, b). */
static int merge_parts(const json_t *m, size_t i, const char **a, size_t *al,
                       const char **b, size_t *bl, bool *skip, lp_error *err) {
    *skip = false;
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (n >= 8 && memcmp(s, "#version", 8) == 0) {
            *skip = true;
            return LP_OK;
        }
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "model.merges[%zu]: expected \"a b\" (two tokens and one "
                                "space)",
                                i);
        *a = s;
        *al = (size_t)(sp - s);
        *b = sp + 1;
        *bl = n - *al - 1;
        return LP_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 &&
        json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *al = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bl = json_string_length(json_array_get(m, 1));
        return LP_OK;
    }
    return lp_error_set(err, LP_ERR_FORMAT,
                        "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", i,
                        lp__json_type_name(m));
}

static int parse_merges(lp_tokenizer *t, const json_t *merges, lp_error *err) {
    size_t n = json_array_size(merges);
    if (lp__mergemap_init(&t->merges, n))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    lp__tbuf cat = {0};
    int rc = LP_OK;
    uint32_t rank = 0;
    for (size_t i = 0; i < n; i++) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        bool skip = false;
        if ((rc = merge_parts(json_array_get(merges, i), i, &a, &al, &b, &bl, &skip, err)))
            goto out;
        if (skip)
            continue;
        int32_t ia = lp__vocab_find(t, a, al), ib = lp__vocab_find(t, b, bl);
        if (ia < 0 || ib < 0) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "model.merges[%zu]: token '%.*s' is not in the vocab", i,
                              (int)LP_MIN(ia < 0 ? al : bl, 64), ia < 0 ? a : b);
            goto out;
        }
        /* the merged token drops b's continuing_subword_prefix */
        if (t->cont_prefix) {
            if (bl < t->cont_prefix_len || memcmp(b, t->cont_prefix, t->cont_prefix_len)) {
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  "model.merges[%zu]: '%.*s' lacks the "
                                  "continuing_subword_prefix",
                                  i, (int)LP_MIN(bl, 64), b);
                goto out;
            }
            b += t->cont_prefix_len;
            bl -= t->cont_prefix_len;
        }
        cat.n = 0;
        if (lp__tbuf_put(&cat, a, al) || lp__tbuf_put(&cat, b, bl)) {
            rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
            goto out;
        }
        int32_t inew = lp__vocab_find(t, cat.p, cat.n);
        if (inew < 0) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "model.merges[%zu]: merged token '%.*s' is not in the vocab",
                              i, (int)LP_MIN(cat.n, 64), cat.p);
            goto out;
        }
        lp__mergemap_put(&t->merges, ia, ib, rank++, inew);
    }
out:
    lp__tbuf_free(&cat);
    return rc;
}

static int parse_model(lp_tokenizer *t, const json_t *m, size_t n_added_decl,
                       lp_error *err) {
    if (!json_is_object(m))
        return lp_error_set(err, LP_ERR_FORMAT, "model: expected an object, got %s",
                            lp__json_type_name(m));
    const json_t *type = json_object_get(m, "type");
    const json_t *vocab = json_object_get(m, "vocab");
    const json_t *merges = json_object_get(m, "merges");
    if (type && !json_is_string(type))
        return lp_error_set(err, LP_ERR_FORMAT, "model.type: expected a string, got %s",
                            lp__json_type_name(type));
    if (type ? strcmp(json_string_value(type), "BPE") != 0 : !merges)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "model.type: '%s' is not supported (only BPE)",
                            type ? json_string_value(type) : "(none)");
    const json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "model.dropout: BPE dropout is not supported");
    int rc;
    if ((rc = opt_str(m, "unk_token", &t->unk_token, NULL, err)) ||
        (rc = opt_str(m, "continuing_subword_prefix", &t->cont_prefix, &t->cont_prefix_len,
                      err)) ||
        (rc = opt_str(m, "end_of_word_suffix", &t->eow_suffix, &t->eow_suffix_len, err)) ||
        (rc = lp__json_bool(m, "fuse_unk", false, &t->fuse_unk, "model", err)) ||
        (rc = lp__json_bool(m, "byte_fallback", false, &t->byte_fallback, "model", err)) ||
        (rc = lp__json_bool(m, "ignore_merges", false, &t->ignore_merges, "model", err)))
        return rc;
    if (!json_is_object(vocab))
        return lp_error_set(err, LP_ERR_FORMAT, "model.vocab: expected an object, got %s",
                            lp__json_type_name(vocab));
    if (!json_is_array(merges))
        return lp_error_set(err, LP_ERR_FORMAT, "model.merges: expected an array, got %s",
                            lp__json_type_name(merges));
    size_t decl = json_object_size(vocab) + n_added_decl;
    if (decl > (size_t)INT32_MAX)
        return lp_error_set(err, LP_ERR_LIMIT, "model.vocab: too many tokens");
    if ((rc = parse_vocab(t, vocab, (int64_t)decl, err)))
        return rc;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = lp__vocab_find(t, name, 6);
    }
    return parse_merges(t, merges, err);
}

/* ---- added tokens ---- */

static int parse_added(lp_tokenizer *t, const json_t *arr, int64_t limit, lp_error *err) {
    size_t n = json_array_size(arr);
    t->added = lp__calloc_array(n ? n : 1, sizeof *t->added);
    t->added_of_id = lp__malloc_array(limit ? (size_t)limit : 1, sizeof *t->added_of_id);
    if (!t->added || !t->added_of_id || lp__strmap_init(&t->added_map, n))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < limit; i++)
        t->added_of_id[i] = -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        const char *content = NULL;
        size_t len = 0;
        int rc = lp__json_str(o, "content", &content, &len, where, err);
        if (rc)
            return rc;
        if (len == 0)
            return lp_error_set(err, LP_ERR_FORMAT, "%s.content: empty", where);
        char what[96];
        snprintf(what, sizeof what, "%s.id", where);
        int32_t id;
        if ((rc = get_id(json_object_get(o, "id"), limit, &id, what, err)))
            return rc;
        lp__added *a = &t->added[t->n_added];
        if ((rc = lp__json_bool(o, "single_word", false, &a->single_word, where, err)) ||
            (rc = lp__json_bool(o, "lstrip", false, &a->lstrip, where, err)) ||
            (rc = lp__json_bool(o, "rstrip", false, &a->rstrip, where, err)) ||
            (rc = lp__json_bool(o, "normalized", true, &a->normalized, where, err)) ||
            (rc = lp__json_bool(o, "special", false, &a->special, where, err)))
            return rc;
        if (t->added_of_id[id] >= 0)
            return lp_error_set(err, LP_ERR_FORMAT, "%s.id: id %d is used twice", where,
                                (int)id);
        int32_t vid = lp__vocab_find(t, content, len);
        if (vid >= 0 && vid != id)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: '%.64s' has id %d but the vocab gives it id %d", where,
                                content, (int)id, (int)vid);
        if (id < t->n_ids && t->vocab_off[id] != SIZE_MAX && vid != id)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s.id: id %d already belongs to vocab token '%.64s'",
                                where, (int)id, t->strs + t->vocab_off[id]);
        if (!(a->content = lp__memdup(content, len)))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        a->len = len;
        a->id = id;
        t->added_of_id[id] = (int32_t)t->n_added;
        t->n_added++;
        if (lp__strmap_insert(&t->added_map, id, lp__added_get, t) >= 0)
            return lp_error_set(err, LP_ERR_FORMAT, "%s.content: '%.64s' is added twice",
                                where, content);
        if (id >= t->n_ids)
            t->n_ids = id + 1;
    }
    return LP_OK;
}

/* Bucket the added tokens of one kind by first byte, longest first. */
static int build_added_set(lp_tokenizer *t, lp__added_set *set, bool normalized) {
    size_t cnt[256] = {0}, total = 0;
    set->use_norm = normalized;
    for (size_t i = 0; i < t->n_added; i++) {
        const lp__added *a = &t->added[i];
        size_t len = normalized ? a->norm_len : a->len;
        if (a->normalized != normalized || len == 0)
            continue;
        cnt[(unsigned char)(normalized ? a->norm : a->content)[0]]++;
        total++;
    }
    set->idx = lp__malloc_array(total ? total : 1, sizeof *set->idx);
    if (!set->idx)
        return LP_ERR_NOMEM;
    set->off[0] = 0;
    for (int b = 0; b < 256; b++)
        set->off[b + 1] = set->off[b] + (uint32_t)cnt[b];
    uint32_t fill[256];
    memcpy(fill, set->off, sizeof fill);
    for (size_t i = 0; i < t->n_added; i++) {
        const lp__added *a = &t->added[i];
        size_t len = normalized ? a->norm_len : a->len;
        if (a->normalized != normalized || len == 0)
            continue;
        unsigned char b = (unsigned char)(normalized ? a->norm : a->content)[0];
        /* insertion sort into the bucket by length, descending */
        uint32_t j = fill[b]++;
        while (j > set->off[b]) {
            const lp__added *o = &t->added[set->idx[j - 1]];
            size_t olen = normalized ? o->norm_len : o->len;
            if (olen >= len)
                break;
            set->idx[j] = set->idx[j - 1];
            j--;
        }
        set->idx[j] = (uint32_t)i;
    }
    return LP_OK;
}

/* ---- post-processor ---- */

int lp__tok_stage_add(void *stages, size_t size, size_t *n, const char *what, const char *where, void **out,
                      lp_error *err) {
    if (*n >= LP__TOK_MAX_STAGES)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: more than %d %s", where, LP__TOK_MAX_STAGES, what);
    *out = (char *)stages + size * (*n)++;
    memset(*out, 0, size);
    return LP_OK;
}

static int tpl_add(lp_tokenizer *t, lp__tpl **out, const char *where, lp_error *err) {
    return lp__tok_stage_add(t->tpls, sizeof *t->tpls, &t->n_tpls, "post-processors", where, (void **)out, err);
}

static int tpl_push(int32_t **v, size_t *n, int32_t id) {
    int32_t *p = realloc(*v, (*n + 1) * sizeof *p);
    if (!p)
        return LP_ERR_NOMEM;
    p[(*n)++] = id;
    *v = p;
    return LP_OK;
}

static int check_tpl_id(const lp_tokenizer *t, const json_t *v, int32_t *id,
                        const char *where, lp_error *err) {
    return get_id(v, t->n_ids, id, where, err);
}

static int parse_template(lp_tokenizer *t, const json_t *j, const char *where,
                          lp_error *err) {
    const json_t *single = json_object_get(j, "single");
    const json_t *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single))
        return lp_error_set(err, LP_ERR_FORMAT, "%s.single: expected an array, got %s",
                            where, lp__json_type_name(single));
    if (specials && !json_is_object(specials) && !json_is_null(specials))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s.special_tokens: expected an object, got %s", where,
                            lp__json_type_name(specials));
    lp__tpl *tp = NULL;
    int rc = tpl_add(t, &tp, where, err);
    if (rc)
        return rc;
    bool seen_seq = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *piece = json_array_get(single, i);
        char pw[192];
        snprintf(pw, sizeof pw, "%s.single[%zu]", where, i);
        const json_t *sp = json_object_get(piece, "SpecialToken");
        const json_t *sq = json_object_get(piece, "Sequence");
        if (sq) {
            const json_t *sid = json_object_get(sq, "id");
            if (seen_seq || !json_is_string(sid) || strcmp(json_string_value(sid), "A"))
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s: the single template must hold sequence A once", pw);
            seen_seq = true;
            continue;
        }
        const json_t *name = sp ? json_object_get(sp, "id") : NULL;
        if (!json_is_string(name))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: expected {\"SpecialToken\": {\"id\": ...}} or "
                                "{\"Sequence\": ...}",
                                pw);
        const json_t *st = specials ? json_object_get(specials, json_string_value(name)) : NULL;
        const json_t *ids = st ? json_object_get(st, "ids") : NULL;
        if (!json_is_array(ids))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s.special_tokens['%.64s'].ids: missing or not an array",
                                where, json_string_value(name));
        for (size_t k = 0; k < json_array_size(ids); k++) {
            char iw[256];
            snprintf(iw, sizeof iw, "%s.special_tokens['%.64s'].ids[%zu]", where,
                     json_string_value(name), k);
            int32_t id;
            if ((rc = check_tpl_id(t, json_array_get(ids, k), &id, iw, err)))
                return rc;
            if (seen_seq ? tpl_push(&tp->post, &tp->n_post, id)
                         : tpl_push(&tp->pre, &tp->n_pre, id))
                return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        }
    }
    if (!seen_seq)
        return lp_error_set(err, LP_ERR_FORMAT, "%s.single: no {\"Sequence\": {\"id\": \"A\"}}",
                            where);
    return LP_OK;
}

/* BertProcessing / RobertaProcessing: [cls] A [sep] for one sequence. */
static int parse_cls_sep(lp_tokenizer *t, const json_t *j, const char *where,
                         lp_error *err) {
    lp__tpl *tp = NULL;
    int rc = tpl_add(t, &tp, where, err);
    if (rc)
        return rc;
    const char *keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        const json_t *pair = json_object_get(j, keys[k]);
        char w[128];
        snprintf(w, sizeof w, "%s.%s", where, keys[k]);
        if (!json_is_array(pair) || json_array_size(pair) != 2)
            return lp_error_set(err, LP_ERR_FORMAT, "%s: expected [token, id]", w);
        int32_t id;
        if ((rc = check_tpl_id(t, json_array_get(pair, 1), &id, w, err)))
            return rc;
        if (k == 0 ? tpl_push(&tp->pre, &tp->n_pre, id) : tpl_push(&tp->post, &tp->n_post, id))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    return LP_OK;
}

static int parse_post(lp_tokenizer *t, const json_t *j, const char *where, int depth,
                      lp_error *err) {
    if (!j || json_is_null(j))
        return LP_OK;
    if (depth > LP__TOK_MAX_NEST)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: Sequence nested too deeply", where);
    const char *type = NULL;
    size_t tlen = 0;
    int rc = lp__json_str(j, "type", &type, &tlen, where, err);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(j, "processors");
        if (!json_is_array(arr))
            return lp_error_set(err, LP_ERR_FORMAT, "%s.processors: expected an array, got %s",
                                where, lp__json_type_name(arr));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            if ((rc = parse_post(t, json_array_get(arr, i), sub, depth + 1, err)))
                return rc;
        }
        return LP_OK;
    }
    if (strcmp(type, "ByteLevel") == 0)
        return LP_OK; /* only adjusts offsets */
    if (strcmp(type, "TemplateProcessing") == 0)
        return parse_template(t, j, where, err);
    if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0)
        return parse_cls_sep(t, j, where, err);
    return lp_error_set(err, LP_ERR_UNSUPPORTED,
                        "%s.type: post-processor '%s' is not supported", where, type);
}

/* transformers' update_post_processor: an explicit add_bos_token /
 * add_eos_token replaces the file's post-processor. */
static int apply_params(lp_tokenizer *t, const lp_tokenizer_params *p, lp_error *err) {
    if (!p || (p->add_bos < 0 && p->add_eos < 0))
        return LP_OK;
    for (size_t i = 0; i < t->n_tpls; i++) {
        free(t->tpls[i].pre);
        free(t->tpls[i].post);
    }
    t->n_tpls = 0;
    lp__tpl *tp = NULL;
    int rc = tpl_add(t, &tp, "params", err);
    if (rc)
        return rc;
    if (p->add_bos > 0) {
        int32_t id = p->bos_token ? lp_tokenizer_find(t, p->bos_token) : -1;
        if (id < 0)
            return lp_error_set(err, LP_ERR_INVALID, "params.bos_token: '%s' is not a token",
                                p->bos_token ? p->bos_token : "(null)");
        if (tpl_push(&tp->pre, &tp->n_pre, id))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if (p->add_eos > 0) {
        int32_t id = p->eos_token ? lp_tokenizer_find(t, p->eos_token) : -1;
        if (id < 0)
            return lp_error_set(err, LP_ERR_INVALID, "params.eos_token: '%s' is not a token",
                                p->eos_token ? p->eos_token : "(null)");
        if (tpl_push(&tp->post, &tp->n_post, id))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    return LP_OK;
}

/* ---- load ---- */

static int normalize_added(lp_tokenizer *t, lp_error *err) {
    lp__rx rx;
    if (lp__rx_init(&rx))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    lp__tbuf out = {0}, tmp = {0};
    lp__spans spans = {0};
    int rc = LP_OK;
    for (size_t i = 0; i < t->n_added && !rc; i++) {
        lp__added *a = &t->added[i];
        if (!a->normalized)
            continue;
        rc = lp__normalize(t, &rx, a->content, a->len, &out, &tmp, &spans, err);
        if (!rc) {
            a->norm = lp__memdup(out.p ? out.p : "", out.n);
            a->norm_len = out.n;
            if (!a->norm)
                rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        }
    }
    lp__tbuf_free(&out);
    lp__tbuf_free(&tmp);
    free(spans.v);
    lp__rx_free(&rx);
    return rc;
}

int lp_tokenizer_load_buffer_ex(const char *json, size_t len, const lp_tokenizer_params *params,
                                lp_tokenizer **out, lp_error *err) {
    *out = NULL;
    if (!json)
        return lp_error_set(err, LP_ERR_INVALID, "tokenizer.json: NULL buffer");
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return lp_error_set(err, LP_ERR_FORMAT, "not valid JSON (line %d, column %d): %s",
                            jerr.line, jerr.column, jerr.text);
    int rc = LP_OK;
    lp_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!json_is_object(root)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "top level: expected an object, got %s",
                          lp__json_type_name(root));
        goto out;
    }
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "added_tokens: expected an array, got %s",
                          lp__json_type_name(added));
        goto out;
    }
    size_t n_added = json_array_size(added);
    if ((rc = parse_model(t, json_object_get(root, "model"), n_added, err)))
        goto out;
    int64_t limit = (int64_t)json_object_size(json_object_get(json_object_get(root, "model"),
                                                               "vocab")) +
                    (int64_t)n_added;
    if ((rc = parse_added(t, added, limit, err)) ||
        (rc = lp__norm_parse(t, json_object_get(root, "normalizer"), "normalizer", 0, err)) ||
        (rc = lp__pretok_parse(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0,
                               err)) ||
        (rc = lp__dec_parse(t, json_object_get(root, "decoder"), "decoder", 0, err)) ||
        (rc = parse_post(t, json_object_get(root, "post_processor"), "post_processor", 0,
                         err)) ||
        (rc = normalize_added(t, err)))
        goto out;
    if (build_added_set(t, &t->raw_set, false) || build_added_set(t, &t->norm_set, true)) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = apply_params(t, params, err)))
        goto out;
    if (t->n_ids == 0) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "model.vocab: empty");
        goto out;
    }
out:
    json_decref(root);
    if (rc) {
        lp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LP_OK;
}

int lp_tokenizer_load_buffer(const char *json, size_t len, lp_tokenizer **out,
                             lp_error *err) {
    return lp_tokenizer_load_buffer_ex(json, len, NULL, out, err);
}

int lp_tokenizer_load_ex(const char *path, const lp_tokenizer_params *params,
                         lp_tokenizer **out, lp_error *err) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = lp__read_file(path, TOKENIZER_JSON_MAX, &buf, &len, err);
    if (rc)
        return rc;
    rc = lp_tokenizer_load_buffer_ex(buf, len, params, out, err);
    free(buf);
    if (rc)
        lp_error_prefix(err, "%s", path);
    return rc;
}

int lp_tokenizer_load(const char *path, lp_tokenizer **out, lp_error *err) {
    return lp_tokenizer_load_ex(path, NULL, out, err);
}

/* ---- accessors ---- */

int32_t lp_tokenizer_vocab_size(const lp_tokenizer *t) { return t ? t->n_ids : 0; }

const char *lp__id_str(const lp_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids)
        return NULL;
    if (t->added_of_id[id] >= 0) {
        const lp__added *a = &t->added[t->added_of_id[id]];
        *len = a->len;
        return a->content;
    }
    if (t->vocab_off[id] == SIZE_MAX)
        return NULL;
    *len = t->vocab_len[id];
    return t->strs + t->vocab_off[id];
}

const char *lp_tokenizer_token(const lp_tokenizer *t, int32_t id) {
    size_t len;
    return t ? lp__id_str(t, id, &len) : NULL;
}

int32_t lp_tokenizer_find(const lp_tokenizer *t, const char *token) {
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    int32_t id = lp__strmap_find(&t->added_map, token, n, lp__added_get, t);
    return id >= 0 ? id : lp__vocab_find(t, token, n);
}

bool lp_tokenizer_is_special(const lp_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids || t->added_of_id[id] < 0)
        return false;
    return t->added[t->added_of_id[id]].special;
}

/* ---- encode ---- */

typedef struct apiece {
    size_t start, end;
    int32_t id; /* added token, or -1 for text */
} apiece;
typedef struct apieces {
    apiece *v;
    size_t n, cap;
} apieces;

static int apieces_push(apieces *p, size_t start, size_t end, int32_t id) {
    void *v = p->v;
    if (lp__array_grow(&v, p->n, &p->cap, sizeof *p->v, 16))
        return LP_ERR_NOMEM;
    p->v = v;
    p->v[p->n++] = (apiece){start, end, id};
    return LP_OK;
}

static bool ends_with_word(const char *s, size_t n) {
    if (n == 0)
        return false;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    uint32_t cp;
    lp__utf8_dec(s + k, n - k, &cp);
    return lp__uni_is_word(cp);
}

static bool starts_with_word(const char *s, size_t n) {
    if (n == 0)
        return false;
    uint32_t cp;
    lp__utf8_dec(s, n, &cp);
    return lp__uni_is_word(cp);
}

/* AddedVocabulary::find_matches: leftmost-longest matches of the set's
 * tokens, honouring single_word / lstrip / rstrip. */
static int find_added(const lp_tokenizer *t, const lp__added_set *set, const char *s,
                      size_t n, apieces *out) {
    out->n = 0;
    size_t start_offset = 0;
    if (set->off[256] > 0) {
        for (size_t i = 0; i < n;) {
            unsigned char b = (unsigned char)s[i];
            const lp__added *hit = NULL;
            size_t hlen = 0;
            for (uint32_t k = set->off[b]; k < set->off[b + 1]; k++) {
                const lp__added *a = &t->added[set->idx[k]];
                const char *c = set->use_norm ? a->norm : a->content;
                size_t cl = set->use_norm ? a->norm_len : a->len;
                if (cl <= n - i && memcmp(s + i, c, cl) == 0) {
                    hit = a;
                    hlen = cl;
                    break;
                }
            }
            if (!hit) {
                i++;
                continue;
            }
            size_t ms = i, me = i + hlen;
            i = me; /* the scan resumes after the match even if it is discarded */
            if (hit->single_word) {
                bool start_space = ms == 0 || !ends_with_word(s, ms);
                bool stop_space = me == n || !starts_with_word(s + me, n - me);
                if (!start_space || !stop_space)
                    continue;
            }
            if (hit->lstrip) {
                size_t ns = ms;
                while (ns > 0) {
                    size_t k = ns - 1;
                    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
                        k--;
                    uint32_t cp;
                    lp__utf8_dec(s + k, ns - k, &cp);
                    if (!lp__uni_is_space(cp))
                        break;
                    ns = k;
                }
                ms = LP_MAX(ns, start_offset);
            }
            if (hit->rstrip) {
                while (me < n) {
                    uint32_t cp;
                    size_t l = lp__utf8_dec(s + me, n - me, &cp);
                    if (!lp__uni_is_space(cp))
                        break;
                    me += l;
                }
            }
            if (start_offset < ms && apieces_push(out, start_offset, ms, -1))
                return LP_ERR_NOMEM;
            if (apieces_push(out, ms, me, hit->id))
                return LP_ERR_NOMEM;
            start_offset = me;
        }
    }
    if (start_offset < n && apieces_push(out, start_offset, n, -1))
        return LP_ERR_NOMEM;
    return LP_OK;
}

static int apply_templates(const lp_tokenizer *t, lp__ids *ids) {
    for (size_t k = 0; k < t->n_tpls; k++) {
        const lp__tpl *tp = &t->tpls[k];
        if (tp->n_pre == 0 && tp->n_post == 0)
            continue;
        size_t total = ids->n + tp->n_pre + tp->n_post;
        int32_t *v = lp__malloc_array(total ? total : 1, sizeof *v);
        if (!v)
            return LP_ERR_NOMEM;
        if (tp->n_pre)
            memcpy(v, tp->pre, tp->n_pre * sizeof *v);
        if (ids->n)
            memcpy(v + tp->n_pre, ids->v, ids->n * sizeof *v);
        if (tp->n_post)
            memcpy(v + tp->n_pre + ids->n, tp->post, tp->n_post * sizeof *v);
        free(ids->v);
        ids->v = v;
        ids->n = ids->cap = total;
    }
    return LP_OK;
}

int lp_tokenizer_encode(const lp_tokenizer *t, const char *text, size_t len,
                        bool add_special, int32_t **ids, size_t *n_ids, lp_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len))
        return lp_error_set(err, LP_ERR_INVALID, "encode: NULL argument");
    size_t bad = lp__utf8_check(text, len);
    if (bad != len)
        return lp_error_set(err, LP_ERR_INVALID, "text: invalid UTF-8 at byte %zu", bad);

    lp__ids out = {0};
    lp__enc c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.out = &out;
    apieces raw = {0}, sub = {0};
    lp__tbuf norm = {0}, tmp = {0};
    lp__spans spans = {0};
    int rc = lp__rx_init(&c.rx);
    if (rc) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (find_added(t, &t->raw_set, text, len, &raw))
        goto nomem;
    for (size_t i = 0; i < raw.n; i++) {
        const apiece *p = &raw.v[i];
        if (p->id >= 0) {
            if (lp__ids_push(&out, p->id))
                goto nomem;
            continue;
        }
        if ((rc = lp__normalize(t, &c.rx, text + p->start, p->end - p->start, &norm, &tmp,
                                &spans, err)))
            goto out;
        if (norm.n == 0)
            continue;
        if (find_added(t, &t->norm_set, norm.p, norm.n, &sub))
            goto nomem;
        for (size_t k = 0; k < sub.n; k++) {
            const apiece *q = &sub.v[k];
            if (q->id >= 0) {
                if (lp__ids_push(&out, q->id))
                    goto nomem;
                continue;
            }
            if ((rc = lp__pretok_run(&c, 0, norm.p + q->start, q->end - q->start,
                                     p->start == 0 && q->start == 0, err)))
                goto out;
        }
    }
    if (add_special && apply_templates(t, &out))
        goto nomem;
    *ids = out.v ? out.v : malloc(sizeof(int32_t));
    if (!*ids)
        goto nomem;
    *n_ids = out.n;
    out.v = NULL;
    goto out;
nomem:
    rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
out:
    free(out.v);
    free(raw.v);
    free(sub.v);
    lp__tbuf_free(&norm);
    lp__tbuf_free(&tmp);
    free(spans.v);
    for (size_t i = 0; i <= LP__TOK_MAX_STAGES; i++)
        lp__pre_level_free(&c.lv[i]);
    lp__bpe_scratch_free(&c.bpe);
    lp__rx_free(&c.rx);
    return rc;
}
