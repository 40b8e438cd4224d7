/* pretok.c - patterns (literal / PCRE2 regex with oniguruma find_iter
 * semantics and a match budget), normalizers and pre-tokenizers of
 * tokenizer.json, applied the way HF tokenizers applies them. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer-impl.h"
#include "util/util.h"

/* GPT-2's pre-tokenization regex (ByteLevel with use_regex). */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* HF's Whitespace pre-tokenizer: keep runs of word or punctuation chars. */
static const char WHITESPACE_REGEX[] = "\\w+|[^\\w\\s]+";

/* ---- regex ---- */

int lp__rx_init(lp__rx *rx) {
    memset(rx, 0, sizeof *rx);
    rx->md = pcre2_match_data_create(1, NULL);
    rx->mc = pcre2_match_context_create(NULL);
    if (!rx->md || !rx->mc) {
        lp__rx_free(rx);
        return LP_ERR_NOMEM;
    }
    pcre2_set_heap_limit(rx->mc, 64 * 1024); /* KiB */
    return LP_OK;
}

void lp__rx_free(lp__rx *rx) {
    if (rx->md)
        pcre2_match_data_free(rx->md);
    if (rx->mc)
        pcre2_match_context_free(rx->mc);
    if (rx->js)
        pcre2_jit_stack_free(rx->js);
    memset(rx, 0, sizeof *rx);
}

static int compile_regex(const char *src, size_t len, uint32_t extra,
                         lp__pattern *out, const char *where, lp_error *err) {
    if (!(out->where = lp__memdup(where, strlen(where))))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    if (len > LP__TOK_MAX_REGEX)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: regex of %zu bytes is too long",
                            where, len);
    if (lp__utf8_check(src, len) != len)
        return lp_error_set(err, LP_ERR_FORMAT, "%s: regex is not valid UTF-8", where);
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, len, PCRE2_UTF | PCRE2_UCP | extra,
                                   &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            msg[0] = '\0';
        return lp_error_set(err, LP_ERR_FORMAT, "%s: bad regex at offset %zu: %s",
                            where, (size_t)off, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter if no JIT */
    out->re = re;
    return LP_OK;
}

/* One match from `start`; 1 found, 0 none, <0 an lp_status. */
static int rx_match(const lp__pattern *p, lp__rx *rx, const char *s, size_t n,
                    size_t start, size_t *ms, size_t *me, lp_error *err) {
    const pcre2_code *re = p->re;
    uint64_t limit = LP__TOK_MATCH_LIMIT_BASE +
                     (uint64_t)LP__TOK_MATCH_LIMIT_PER_BYTE * (uint64_t)(n - start);
    pcre2_set_match_limit(rx->mc, limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit);
    uint32_t opts = PCRE2_NO_UTF_CHECK;
    for (int attempt = 0;; attempt++) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, opts, rx->md, rx->mc);
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rx->md);
            if (ov[0] > ov[1] || ov[1] > n) /* \K tricks: treat as no match */
                return 0;
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && attempt == 0) {
            if (!rx->js) {
                rx->js = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, NULL);
                if (!rx->js)
                    return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
                pcre2_jit_stack_assign(rx->mc, NULL, rx->js);
            }
            continue;
        }
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && attempt == 1) {
            opts |= PCRE2_NO_JIT; /* the interpreter keeps its frames on the heap */
            continue;
        }
        if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
            rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
            return lp_error_set(err, LP_ERR_LIMIT,
                                "%s: regex exceeded its match budget on a %zu-byte "
                                "piece of text (pathological pattern?)",
                                p->where ? p->where : "tokenizer", n);
        if (rc == PCRE2_ERROR_NOMEMORY)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
            msg[0] = '\0';
        return lp_error_set(err, LP_ERR_INTERNAL, "%s: regex: %s",
                            p->where ? p->where : "tokenizer", (const char *)msg);
    }
}

int lp__spans_push(lp__spans *s, size_t start, size_t end, bool match) {
    void *v = s->v;
    if (lp__array_grow(&v, s->n, &s->cap, sizeof *s->v, 32))
        return LP_ERR_NOMEM;
    s->v = v;
    s->v[s->n++] = (lp__span){start, end, match};
    return LP_OK;
}

static void spans_free(lp__spans *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

int lp__pattern_parse(const json_t *obj, const char *where, lp__pattern *p,
                      lp_error *err) {
    memset(p, 0, sizeof *p);
    if (!json_is_object(obj))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: expected {\"String\": ...} or {\"Regex\": ...}, got %s",
                            where, lp__json_type_name(obj));
    const json_t *s = json_object_get(obj, "String");
    const json_t *r = json_object_get(obj, "Regex");
    if ((s != NULL) == (r != NULL))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: expected exactly one of \"String\" or \"Regex\"", where);
    const json_t *v = s ? s : r;
    if (!json_is_string(v))
        return lp_error_set(err, LP_ERR_FORMAT, "%s.%s: expected a string, got %s",
                            where, s ? "String" : "Regex", lp__json_type_name(v));
    const char *src = json_string_value(v);
    size_t len = json_string_length(v);
    char sub[256];
    snprintf(sub, sizeof sub, "%s.%s", where, s ? "String" : "Regex");
    if (s && len > 0) {
        p->lit = lp__memdup(src, len);
        if (!p->lit)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        p->lit_len = len;
        return LP_OK;
    }
    /* A regex, or the empty literal (which matches everywhere, as the
     * escaped-regex form HF uses does). */
    return compile_regex(src, len, s ? PCRE2_LITERAL : 0, p, sub, err);
}

void lp__pattern_free(lp__pattern *p) {
    free(p->lit);
    free(p->where);
    if (p->re)
        pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

int lp__pattern_find(const lp__pattern *p, lp__rx *rx, const char *s, size_t n,
                     lp__spans *out, lp_error *err) {
    out->n = 0;
    size_t prev = 0;
    if (n == 0)
        return LP_OK;
    if (p->lit) {
        size_t i = 0;
        while (i + p->lit_len <= n) {
            const char *hit = memmem(s + i, n - i, p->lit, p->lit_len);
            if (!hit)
                break;
            size_t ms = (size_t)(hit - s);
            if ((ms > prev && lp__spans_push(out, prev, ms, false)) ||
                lp__spans_push(out, ms, ms + p->lit_len, true))
                return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
            prev = i = ms + p->lit_len;
        }
    } else {
        /* oniguruma's FindMatches: an empty match right where the previous
         * match ended is skipped by advancing one character. */
        size_t at = 0, last_me = 0;
        bool have_last = false;
        while (at <= n) {
            size_t ms, me;
            int rc = rx_match(p, rx, s, n, at, &ms, &me, err);
            if (rc < 0)
                return rc;
            if (rc == 0)
                break;
            if (ms == me && have_last && last_me == me) {
                at += at < n ? lp__utf8_len(s + at, n - at) : 1;
                continue;
            }
            at = me;
            have_last = true;
            last_me = me;
            if ((ms > prev && lp__spans_push(out, prev, ms, false)) ||
                lp__spans_push(out, ms, me, true))
                return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
            prev = me;
        }
    }
    if (prev < n && lp__spans_push(out, prev, n, false))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    return LP_OK;
}

int lp__pattern_replace(const lp__pattern *p, lp__rx *rx, const char *s,
                        size_t n, const char *with, size_t with_len,
                        lp__tbuf *out, lp__spans *scratch, lp_error *err) {
    int rc = lp__pattern_find(p, rx, s, n, scratch, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < scratch->n; i++) {
        const lp__span *sp = &scratch->v[i];
        rc = sp->match ? lp__tbuf_put(out, with, with_len)
                       : lp__tbuf_put(out, s + sp->start, sp->end - sp->start);
        if (rc)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    return LP_OK;
}

/* ---- normalizers ---- */

static int norm_add(lp_tokenizer *t, lp__norm **out, const char *where, lp_error *err) {
    return lp__tok_stage_add(t->norms, sizeof *t->norms, &t->n_norms, "normalizers", where, (void **)out, err);
}

int lp__norm_parse(lp_tokenizer *t, const json_t *j, const char *where, int depth,
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
    lp__norm *n = NULL;
    char sub[256];
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(j, "normalizers");
        if (!json_is_array(arr))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s.normalizers: expected an array, got %s", where,
                                lp__json_type_name(arr));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            if ((rc = lp__norm_parse(t, json_array_get(arr, i), sub, depth + 1, err)))
                return rc;
        }
        return LP_OK;
    }
    lp__norm_kind kind;
    if (strcmp(type, "NFC") == 0)
        kind = LP__NORM_NFC;
    else if (strcmp(type, "NFD") == 0)
        kind = LP__NORM_NFD;
    else if (strcmp(type, "NFKC") == 0)
        kind = LP__NORM_NFKC;
    else if (strcmp(type, "NFKD") == 0)
        kind = LP__NORM_NFKD;
    else if (strcmp(type, "Prepend") == 0)
        kind = LP__NORM_PREPEND;
    else if (strcmp(type, "Replace") == 0)
        kind = LP__NORM_REPLACE;
    else if (strcmp(type, "Lowercase") == 0)
        kind = LP__NORM_LOWERCASE;
    else if (strcmp(type, "Strip") == 0)
        kind = LP__NORM_STRIP;
    else
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s.type: normalizer '%s' is not supported", where, type);
    if ((rc = norm_add(t, &n, where, err)))
        return rc;
    n->kind = kind;
    const char *s = NULL;
    size_t len = 0;
    switch (kind) {
    case LP__NORM_PREPEND:
        if ((rc = lp__json_str(j, "prepend", &s, &len, where, err)))
            return rc;
        if (!(n->str = lp__memdup(s, len)))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        n->str_len = len;
        break;
    case LP__NORM_REPLACE:
        if ((rc = lp__json_str(j, "content", &s, &len, where, err)))
            return rc;
        if (!(n->str = lp__memdup(s, len)))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        n->str_len = len;
        snprintf(sub, sizeof sub, "%s.pattern", where);
        return lp__pattern_parse(json_object_get(j, "pattern"), sub, &n->pat, err);
    case LP__NORM_STRIP:
        if ((rc = lp__json_bool(j, "strip_left", true, &n->left, where, err)) ||
            (rc = lp__json_bool(j, "strip_right", true, &n->right, where, err)))
            return rc;
        break;
    default:
        break;
    }
    return LP_OK;
}

void lp__norm_free(lp__norm *n) {
    free(n->str);
    lp__pattern_free(&n->pat);
    memset(n, 0, sizeof *n);
}

static bool all_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

/* Apply one normalizer to in, writing out (cleared first). */
static int norm_apply(const lp__norm *nm, lp__rx *rx, const char *in, size_t n,
                      lp__tbuf *out, lp__spans *spans, lp_error *err) {
    out->n = 0;
    if (lp__tbuf_reserve(out, n))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    out->p[0] = '\0';
    switch (nm->kind) {
    case LP__NORM_NFC:
    case LP__NORM_NFD:
    case LP__NORM_NFKC:
    case LP__NORM_NFKD: {
        if (all_ascii(in, n))
            break;
        utf8proc_option_t opt = UTF8PROC_STABLE;
        opt |= (nm->kind == LP__NORM_NFC || nm->kind == LP__NORM_NFKC) ? UTF8PROC_COMPOSE
                                                                        : UTF8PROC_DECOMPOSE;
        if (nm->kind == LP__NORM_NFKC || nm->kind == LP__NORM_NFKD)
            opt |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)in,
                                          (utf8proc_ssize_t)n, &dst, opt);
        if (r < 0)
            return lp_error_set(err, r == UTF8PROC_ERROR_NOMEM ? LP_ERR_NOMEM : LP_ERR_INVALID,
                                "normalizer: %s", utf8proc_errmsg(r));
        int rc = lp__tbuf_put(out, dst, (size_t)r);
        free(dst);
        if (rc)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        return LP_OK;
    }
    case LP__NORM_PREPEND:
        if (n && lp__tbuf_put(out, nm->str, nm->str_len))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        break;
    case LP__NORM_REPLACE:
        return lp__pattern_replace(&nm->pat, rx, in, n, nm->str, nm->str_len, out,
                                   spans, err);
    case LP__NORM_LOWERCASE:
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t l = lp__utf8_dec(in + i, n - i, &cp);
            char enc[8];
            size_t el;
            if (cp == 0x130) { /* İ lowercases to i + combining dot above */
                memcpy(enc, "i\xCC\x87", 3);
                el = 3;
            } else {
                el = lp__utf8_enc((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
            }
            if (lp__tbuf_put(out, enc, el))
                return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
            i += l;
        }
        return LP_OK;
    case LP__NORM_STRIP: {
        size_t a = 0, b = n;
        while (nm->left && a < b) {
            uint32_t cp;
            size_t l = lp__utf8_dec(in + a, b - a, &cp);
            if (!lp__uni_is_space(cp))
                break;
            a += l;
        }
        while (nm->right && b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)in[k] & 0xC0) == 0x80)
                k--;
            uint32_t cp;
            lp__utf8_dec(in + k, b - k, &cp);
            if (!lp__uni_is_space(cp))
                break;
            b = k;
        }
        if (lp__tbuf_put(out, in + a, b - a))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        return LP_OK;
    }
    }
    if (lp__tbuf_put(out, in, n))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    return LP_OK;
}

int lp__normalize(const lp_tokenizer *t, lp__rx *rx, const char *s, size_t n,
                  lp__tbuf *out, lp__tbuf *tmp, lp__spans *spans, lp_error *err) {
    out->n = 0;
    if (lp__tbuf_put(out, s, n))
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_norms; i++) {
        int rc = norm_apply(&t->norms[i], rx, out->p, out->n, tmp, spans, err);
        if (rc)
            return rc;
        lp__tbuf swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    return LP_OK;
}

/* ---- pre-tokenizers ---- */

static int pretok_add(lp_tokenizer *t, lp__pretok **out, const char *where, lp_error *err) {
    return lp__tok_stage_add(t->pretoks, sizeof *t->pretoks, &t->n_pretoks, "pre-tokenizers", where, (void **)out,
                             err);
}

static int parse_behavior(const json_t *j, const char *where, lp__split_behavior *b,
                          lp_error *err) {
    const char *s = NULL;
    size_t len = 0;
    int rc = lp__json_str(j, "behavior", &s, &len, where, err);
    if (rc)
        return rc;
    static const struct {
        const char *name;
        lp__split_behavior b;
    } names[] = {{"Removed", LP__SPLIT_REMOVED},
                 {"Isolated", LP__SPLIT_ISOLATED},
                 {"MergedWithPrevious", LP__SPLIT_MERGED_PREV},
                 {"MergedWithNext", LP__SPLIT_MERGED_NEXT},
                 {"Contiguous", LP__SPLIT_CONTIGUOUS}};
    for (size_t i = 0; i < LP_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *b = names[i].b;
            return LP_OK;
        }
    }
    return lp_error_set(err, LP_ERR_FORMAT, "%s.behavior: unknown behavior '%s'", where, s);
}

int lp__pretok_parse(lp_tokenizer *t, const json_t *j, const char *where, int depth,
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
    char sub[256];
    lp__pretok *p = NULL;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(j, "pretokenizers");
        if (!json_is_array(arr))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s.pretokenizers: expected an array, got %s", where,
                                lp__json_type_name(arr));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            if ((rc = lp__pretok_parse(t, json_array_get(arr, i), sub, depth + 1, err)))
                return rc;
        }
        return LP_OK;
    }
    if (strcmp(type, "Split") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_SPLIT;
        snprintf(sub, sizeof sub, "%s.pattern", where);
        if ((rc = lp__pattern_parse(json_object_get(j, "pattern"), sub, &p->pat, err)) ||
            (rc = parse_behavior(j, where, &p->behavior, err)) ||
            (rc = lp__json_bool(j, "invert", false, &p->invert, where, err)))
            return rc;
        return LP_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_BYTELEVEL;
        if ((rc = lp__json_bool(j, "add_prefix_space", true, &p->add_prefix_space, where,
                                err)) ||
            (rc = lp__json_bool(j, "use_regex", true, &p->use_regex, where, err)))
            return rc;
        if (p->use_regex) {
            snprintf(sub, sizeof sub, "%s (GPT-2 regex)", where);
            return compile_regex(GPT2_REGEX, sizeof GPT2_REGEX - 1, 0, &p->pat, sub, err);
        }
        return LP_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_METASPACE;
        if ((rc = lp__json_char(j, "replacement", "\xE2\x96\x81", p->rep, &p->rep_len,
                                where, err)) ||
            (rc = lp__json_bool(j, "split", true, &p->split, where, err)))
            return rc;
        p->scheme = LP__PREPEND_ALWAYS;
        const json_t *aps = json_object_get(j, "add_prefix_space");
        const json_t *ps = json_object_get(j, "prepend_scheme");
        if (ps && !json_is_null(ps)) {
            const char *s = json_string_value(ps);
            if (!s)
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s.prepend_scheme: expected a string", where);
            if (strcmp(s, "always") == 0)
                p->scheme = LP__PREPEND_ALWAYS;
            else if (strcmp(s, "first") == 0)
                p->scheme = LP__PREPEND_FIRST;
            else if (strcmp(s, "never") == 0)
                p->scheme = LP__PREPEND_NEVER;
            else
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s.prepend_scheme: unknown scheme '%s'", where, s);
        }
        if (json_is_false(aps)) {
            if (ps && !json_is_null(ps) && p->scheme != LP__PREPEND_NEVER)
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s.add_prefix_space: false contradicts prepend_scheme",
                                    where);
            p->scheme = LP__PREPEND_NEVER;
        }
        return LP_OK;
    }
    if (strcmp(type, "WhitespaceSplit") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_WHITESPACE_SPLIT;
        return LP_OK;
    }
    if (strcmp(type, "Whitespace") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_WHITESPACE;
        return compile_regex(WHITESPACE_REGEX, sizeof WHITESPACE_REGEX - 1, 0, &p->pat, where,
                             err);
    }
    if (strcmp(type, "Digits") == 0) {
        if ((rc = pretok_add(t, &p, where, err)))
            return rc;
        p->kind = LP__PRE_DIGITS;
        return lp__json_bool(j, "individual_digits", false, &p->individual_digits, where,
                             err);
    }
    return lp_error_set(err, LP_ERR_UNSUPPORTED,
                        "%s.type: pre-tokenizer '%s' is not supported", where, type);
}

void lp__pretok_free(lp__pretok *p) {
    lp__pattern_free(&p->pat);
    memset(p, 0, sizeof *p);
}

/* Spans for a per-character predicate (HF's Pattern for Fn(char) -> bool):
 * every matching character is its own match. */
static int find_chars(const char *s, size_t n, bool (*pred)(uint32_t),
                      const char *rep, size_t rep_len, lp__spans *out) {
    out->n = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = lp__utf8_dec(s + i, n - i, &cp);
        bool hit = pred ? pred(cp) : (l == rep_len && memcmp(s + i, rep, l) == 0);
        if (hit) {
            if ((last < i && lp__spans_push(out, last, i, false)) ||
                lp__spans_push(out, i, i + l, true))
                return LP_ERR_NOMEM;
            last = i + l;
        }
        i += l;
    }
    if (last < n && lp__spans_push(out, last, n, false))
        return LP_ERR_NOMEM;
    return LP_OK;
}

/* NormalizedString::split: turn match spans into the pieces to keep. */
static int apply_behavior(const lp__spans *in, lp__split_behavior b, lp__spans *out) {
    out->n = 0;
    bool prev_match = false;
    switch (b) {
    case LP__SPLIT_ISOLATED:
    case LP__SPLIT_REMOVED:
        for (size_t i = 0; i < in->n; i++) {
            if (b == LP__SPLIT_REMOVED && in->v[i].match)
                continue;
            if (lp__spans_push(out, in->v[i].start, in->v[i].end, false))
                return LP_ERR_NOMEM;
        }
        break;
    case LP__SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < in->n; i++) {
            if (out->n && in->v[i].match == prev_match)
                out->v[out->n - 1].end = in->v[i].end;
            else if (lp__spans_push(out, in->v[i].start, in->v[i].end, false))
                return LP_ERR_NOMEM;
            prev_match = in->v[i].match;
        }
        break;
    case LP__SPLIT_MERGED_PREV:
        for (size_t i = 0; i < in->n; i++) {
            if (in->v[i].match && !prev_match && out->n)
                out->v[out->n - 1].end = in->v[i].end;
            else if (lp__spans_push(out, in->v[i].start, in->v[i].end, false))
                return LP_ERR_NOMEM;
            prev_match = in->v[i].match;
        }
        break;
    case LP__SPLIT_MERGED_NEXT:
        /* built right to left, then reversed */
        for (size_t k = in->n; k-- > 0;) {
            if (in->v[k].match && !prev_match && out->n)
                out->v[out->n - 1].start = in->v[k].start;
            else if (lp__spans_push(out, in->v[k].start, in->v[k].end, false))
                return LP_ERR_NOMEM;
            prev_match = in->v[k].match;
        }
        for (size_t i = 0, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
            lp__span tmp = out->v[i];
            out->v[i] = out->v[j];
            out->v[j] = tmp;
        }
        break;
    }
    return LP_OK;
}

static int byte_map(const char *s, size_t n, lp__tbuf *out) {
    out->n = 0;
    size_t need;
    if (!lp__mul_size(n, 2, &need) || lp__tbuf_reserve(out, need))
        return LP_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *c = lp__bytelevel_utf8((unsigned char)s[i], &l);
        memcpy(out->p + out->n, c, l);
        out->n += l;
    }
    out->p[out->n] = '\0';
    return LP_OK;
}

static int run_pieces(lp__enc *c, size_t level, const char *s, const lp__spans *pieces,
                      bool at_origin, lp_error *err) {
    for (size_t i = 0; i < pieces->n; i++) {
        const lp__span *sp = &pieces->v[i];
        if (sp->end <= sp->start)
            continue;
        int rc = lp__pretok_run(c, level + 1, s + sp->start, sp->end - sp->start,
                                at_origin && sp->start == 0, err);
        if (rc)
            return rc;
    }
    return LP_OK;
}

int lp__pretok_run(lp__enc *c, size_t level, const char *s, size_t n, bool at_origin,
                   lp_error *err) {
    const lp_tokenizer *t = c->t;
    if (n == 0)
        return LP_OK;
    if (level == t->n_pretoks)
        return lp__bpe_word(t, &c->bpe, s, n, c->out, err);
    const lp__pretok *p = &t->pretoks[level];
    lp__pre_level *lv = &c->lv[level];
    int rc;
    switch (p->kind) {
    case LP__PRE_SPLIT:
    case LP__PRE_WHITESPACE:
        if ((rc = lp__pattern_find(&p->pat, &c->rx, s, n, &lv->spans, err)))
            return rc;
        if (p->invert || p->kind == LP__PRE_WHITESPACE)
            for (size_t i = 0; i < lv->spans.n; i++)
                lv->spans.v[i].match = !lv->spans.v[i].match;
        if (apply_behavior(&lv->spans,
                           p->kind == LP__PRE_WHITESPACE ? LP__SPLIT_REMOVED : p->behavior,
                           &lv->pieces))
            goto nomem;
        return run_pieces(c, level, s, &lv->pieces, at_origin, err);
    case LP__PRE_WHITESPACE_SPLIT:
    case LP__PRE_DIGITS: {
        bool digits = p->kind == LP__PRE_DIGITS;
        if (find_chars(s, n, digits ? lp__uni_is_numeric : lp__uni_is_space, NULL, 0,
                       &lv->spans) ||
            apply_behavior(&lv->spans,
                           !digits ? LP__SPLIT_REMOVED
                           : p->individual_digits ? LP__SPLIT_ISOLATED
                                                  : LP__SPLIT_CONTIGUOUS,
                           &lv->pieces))
            goto nomem;
        return run_pieces(c, level, s, &lv->pieces, at_origin, err);
    }
    case LP__PRE_BYTELEVEL: {
        const char *src = s;
        size_t sn = n;
        if (p->add_prefix_space && s[0] != ' ') {
            lv->a.n = 0;
            if (lp__tbuf_putc(&lv->a, ' ') || lp__tbuf_put(&lv->a, s, n))
                goto nomem;
            src = lv->a.p;
            sn = lv->a.n;
        }
        if (p->use_regex) {
            if ((rc = lp__pattern_find(&p->pat, &c->rx, src, sn, &lv->pieces, err)))
                return rc;
        } else {
            lv->pieces.n = 0;
            if (lp__spans_push(&lv->pieces, 0, sn, false))
                goto nomem;
        }
        for (size_t i = 0; i < lv->pieces.n; i++) {
            const lp__span *sp = &lv->pieces.v[i];
            if (sp->end <= sp->start)
                continue;
            if (byte_map(src + sp->start, sp->end - sp->start, &lv->b))
                goto nomem;
            if ((rc = lp__pretok_run(c, level + 1, lv->b.p, lv->b.n,
                                     at_origin && sp->start == 0, err)))
                return rc;
        }
        return LP_OK;
    }
    case LP__PRE_METASPACE: {
        lv->a.n = 0;
        bool prepend = false;
        if (p->scheme != LP__PREPEND_NEVER) {
            /* does the text, after the space replacement, start with rep? */
            bool starts = s[0] == ' ' ||
                          (n >= p->rep_len && memcmp(s, p->rep, p->rep_len) == 0);
            prepend = !starts && (p->scheme == LP__PREPEND_ALWAYS || at_origin);
        }
        if (prepend && lp__tbuf_put(&lv->a, p->rep, p->rep_len))
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ' ? lp__tbuf_put(&lv->a, p->rep, p->rep_len)
                            : lp__tbuf_putc(&lv->a, s[i]))
                goto nomem;
        }
        if (!p->split) {
            return lp__pretok_run(c, level + 1, lv->a.p, lv->a.n, at_origin, err);
        }
        if (find_chars(lv->a.p, lv->a.n, NULL, p->rep, p->rep_len, &lv->spans) ||
            apply_behavior(&lv->spans, LP__SPLIT_MERGED_NEXT, &lv->pieces))
            goto nomem;
        return run_pieces(c, level, lv->a.p, &lv->pieces, at_origin, err);
    }
    }
    return LP_OK;
nomem:
    return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
}

void lp__pre_level_free(lp__pre_level *lv) {
    lp__tbuf_free(&lv->a);
    lp__tbuf_free(&lv->b);
    spans_free(&lv->spans);
    spans_free(&lv->pieces);
}
