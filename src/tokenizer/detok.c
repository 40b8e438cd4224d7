/* detok.c - decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip,
 * Metaspace, Sequence) as a chain of streaming stages. Batch decode and the
 * incremental detokenizer run the very same event stream through the chain,
 * so the concatenation of the streamed pieces equals the batch result by
 * construction; each stage holds back only what a later token could still
 * change (an incomplete UTF-8 tail, a run of byte-fallback tokens, a partial
 * Replace match, trailing Strip characters), so each token costs O(1)
 * amortised. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer-impl.h"
#include "util/util.h"

/* ---- parsing ---- */

static int dec_add(lp_tokenizer *t, lp__dec **out, const char *where, lp_error *err) {
    return lp__tok_stage_add(t->decs, sizeof *t->decs, &t->n_decs, "decoders", where, (void **)out, err);
}

int lp__dec_parse(lp_tokenizer *t, const json_t *j, const char *where, int depth,
                  lp_error *err) {
    if (!j || json_is_null(j))
        return LP_OK;
    if (depth > LP__TOK_MAX_NEST)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: Sequence nested too deeply", where);
    t->has_decoder = true;
    const char *type = NULL;
    size_t tlen = 0;
    int rc = lp__json_str(j, "type", &type, &tlen, where, err);
    if (rc)
        return rc;
    char sub[256];
    lp__dec *d = NULL;
    if (strcmp(type, "Sequence") == 0) {
        const json_t *arr = json_object_get(j, "decoders");
        if (!json_is_array(arr))
            return lp_error_set(err, LP_ERR_FORMAT, "%s.decoders: expected an array, got %s",
                                where, lp__json_type_name(arr));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
            if ((rc = lp__dec_parse(t, json_array_get(arr, i), sub, depth + 1, err)))
                return rc;
        }
        return LP_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_BYTELEVEL;
        return LP_OK;
    }
    if (strcmp(type, "ByteFallback") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_BYTEFALLBACK;
        return LP_OK;
    }
    if (strcmp(type, "Fuse") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_FUSE;
        return LP_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_REPLACE;
        const char *s = NULL;
        size_t len = 0;
        if ((rc = lp__json_str(j, "content", &s, &len, where, err)))
            return rc;
        if (!(d->content = lp__memdup(s, len)))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        d->content_len = len;
        snprintf(sub, sizeof sub, "%s.pattern", where);
        return lp__pattern_parse(json_object_get(j, "pattern"), sub, &d->pat, err);
    }
    if (strcmp(type, "Strip") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_STRIP;
        if ((rc = lp__json_char(j, "content", NULL, d->ch, &d->ch_len, where, err)) ||
            (rc = lp__json_size(j, "start", 0, 1u << 20, &d->start, where, err)) ||
            (rc = lp__json_size(j, "stop", 0, 1u << 20, &d->stop, where, err)))
            return rc;
        return LP_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        if ((rc = dec_add(t, &d, where, err)))
            return rc;
        d->kind = LP__DEC_METASPACE;
        if ((rc = lp__json_char(j, "replacement", "\xE2\x96\x81", d->ch, &d->ch_len, where,
                                err)))
            return rc;
        d->strip_first = true;
        const json_t *ps = json_object_get(j, "prepend_scheme");
        if (ps && !json_is_null(ps)) {
            const char *s = json_string_value(ps);
            if (!s || (strcmp(s, "always") && strcmp(s, "first") && strcmp(s, "never")))
                return lp_error_set(err, LP_ERR_FORMAT,
                                    "%s.prepend_scheme: expected always, first or never",
                                    where);
            d->strip_first = strcmp(s, "never") != 0;
        }
        if (json_is_false(json_object_get(j, "add_prefix_space")))
            d->strip_first = false;
        return LP_OK;
    }
    return lp_error_set(err, LP_ERR_UNSUPPORTED, "%s.type: decoder '%s' is not supported",
                        where, type);
}

void lp__dec_free(lp__dec *d) {
    lp__pattern_free(&d->pat);
    free(d->content);
    memset(d, 0, sizeof *d);
}

/* ---- the streaming chain ---- */

enum { EV_BEGIN, EV_DATA, EV_END, EV_FLUSH };

typedef struct dstage {
    lp__tbuf tok;   /* the current token, for stages that need it whole */
    lp__tbuf hold;  /* bytes held back */
    lp__tbuf out;   /* output being built */
    lp__tbuf group; /* ByteFallback: pending byte run */
    size_t count;   /* Strip: leading chars stripped; Metaspace: token index */
    size_t held;    /* Strip: trailing content chars held */
    bool opened;    /* fusing stages: BEGIN sent downstream */
    bool lead_done; /* Strip */
} dstage;

struct lp_detok {
    const lp_tokenizer *t;
    bool skip_special;
    bool finished; /* flushed, or failed */
    size_t sink_tokens;
    lp__tbuf out; /* text final so far, not yet handed out */
    lp__rx rx;
    bool rx_ready;
    lp__spans spans;
    dstage st[LP__TOK_MAX_STAGES];
};

static int emit(lp_detok *d, size_t k, int ev, const char *s, size_t n, lp_error *err);

#define NOMEM() lp_error_set(err, LP_ERR_NOMEM, "out of memory")

/* Send BEGIN downstream once (stages that fuse everything into one token). */
static int open_once(lp_detok *d, size_t k, lp_error *err) {
    if (d->st[k].opened)
        return LP_OK;
    d->st[k].opened = true;
    return emit(d, k + 1, EV_BEGIN, NULL, 0, err);
}

static int emit_out(lp_detok *d, size_t k, lp_error *err) {
    dstage *st = &d->st[k];
    if (st->out.n == 0)
        return LP_OK;
    return emit(d, k + 1, EV_DATA, st->out.p, st->out.n, err);
}

/* ByteLevel: move the lossy-decoded final prefix of hold into out. */
static int bytelevel_drain(dstage *st, bool final) {
    st->out.n = 0;
    if (st->hold.n == 0)
        return LP_OK;
    const unsigned char *u = (const unsigned char *)st->hold.p;
    size_t i = 0, n = st->hold.n;
    while (i < n) {
        size_t len;
        int r = lp__utf8_lossy_step(u + i, n - i, &len);
        if (r < 0 && !final)
            break;
        int rc = r == 1 ? lp__tbuf_put(&st->out, st->hold.p + i, len)
                        : lp__tbuf_put(&st->out, "\xEF\xBF\xBD", 3);
        if (rc)
            return rc;
        i += len;
    }
    memmove(st->hold.p, st->hold.p + i, n - i);
    st->hold.n = n - i;
    return LP_OK;
}

static int st_bytelevel(lp_detok *d, size_t k, int ev, const char *s, size_t n,
                        lp_error *err) {
    dstage *st = &d->st[k];
    switch (ev) {
    case EV_BEGIN:
        st->tok.n = 0;
        return LP_OK;
    case EV_DATA:
        return lp__tbuf_put(&st->tok, s, n) ? NOMEM() : LP_OK;
    case EV_END: {
        /* each token maps char -> byte when every char is in the byte-level
         * alphabet, else contributes its raw UTF-8 */
        bool all = true;
        for (size_t i = 0; i < st->tok.n && all;) {
            uint32_t cp;
            i += lp__utf8_dec(st->tok.p + i, st->tok.n - i, &cp);
            all = lp__bytelevel_byte(cp) >= 0;
        }
        if (lp__tbuf_reserve(&st->hold, st->tok.n))
            return NOMEM();
        if (all) {
            for (size_t i = 0; i < st->tok.n;) {
                uint32_t cp;
                i += lp__utf8_dec(st->tok.p + i, st->tok.n - i, &cp);
                st->hold.p[st->hold.n++] = (char)lp__bytelevel_byte(cp);
            }
        } else if (st->tok.n) {
            memcpy(st->hold.p + st->hold.n, st->tok.p, st->tok.n);
            st->hold.n += st->tok.n;
        }
        if (bytelevel_drain(st, false))
            return NOMEM();
        int rc = st->out.n ? open_once(d, k, err) : LP_OK;
        return rc ? rc : emit_out(d, k, err);
    }
    default: {
        if (bytelevel_drain(st, true))
            return NOMEM();
        int rc = open_once(d, k, err);
        if (!rc)
            rc = emit_out(d, k, err);
        if (!rc)
            rc = emit(d, k + 1, EV_END, NULL, 0, err);
        return rc ? rc : emit(d, k + 1, EV_FLUSH, NULL, 0, err);
    }
    }
}

static int st_fuse(lp_detok *d, size_t k, int ev, const char *s, size_t n, lp_error *err) {
    int rc = open_once(d, k, err);
    if (rc)
        return rc;
    switch (ev) {
    case EV_DATA:
        return emit(d, k + 1, EV_DATA, s, n, err);
    case EV_FLUSH:
        rc = emit(d, k + 1, EV_END, NULL, 0, err);
        return rc ? rc : emit(d, k + 1, EV_FLUSH, NULL, 0, err);
    default:
        return LP_OK;
    }
}

static int st_replace(lp_detok *d, size_t k, int ev, const char *s, size_t n,
                      lp_error *err) {
    dstage *st = &d->st[k];
    const lp__dec *dc = &d->t->decs[k];
    const lp__pattern *p = &dc->pat;
    int rc;
    if (ev == EV_BEGIN) {
        st->hold.n = 0;
        st->tok.n = 0;
        return emit(d, k + 1, EV_BEGIN, NULL, 0, err);
    }
    if (ev == EV_FLUSH)
        return emit(d, k + 1, EV_FLUSH, NULL, 0, err);
    if (!p->lit) {
        /* a regex: needs the whole token */
        if (ev == EV_DATA)
            return lp__tbuf_put(&st->tok, s, n) ? NOMEM() : LP_OK;
        if (!d->rx_ready) {
            if (lp__rx_init(&d->rx))
                return NOMEM();
            d->rx_ready = true;
        }
        st->out.n = 0;
        rc = lp__pattern_replace(p, &d->rx, st->tok.p ? st->tok.p : "", st->tok.n,
                                 dc->content, dc->content_len, &st->out, &d->spans, err);
        if (!rc)
            rc = emit_out(d, k, err);
        return rc ? rc : emit(d, k + 1, EV_END, NULL, 0, err);
    }
    if (ev == EV_END) {
        rc = st->hold.n ? emit(d, k + 1, EV_DATA, st->hold.p, st->hold.n, err) : LP_OK;
        st->hold.n = 0;
        return rc ? rc : emit(d, k + 1, EV_END, NULL, 0, err);
    }
    /* literal: replace what is complete, keep a suffix that may begin a match */
    if (lp__tbuf_put(&st->hold, s, n))
        return NOMEM();
    st->out.n = 0;
    size_t i = 0, hn = st->hold.n;
    for (;;) {
        const char *hit = hn - i >= p->lit_len ? memmem(st->hold.p + i, hn - i, p->lit,
                                                        p->lit_len)
                                               : NULL;
        if (!hit)
            break;
        size_t at = (size_t)(hit - st->hold.p);
        if (lp__tbuf_put(&st->out, st->hold.p + i, at - i) ||
            lp__tbuf_put(&st->out, dc->content, dc->content_len))
            return NOMEM();
        i = at + p->lit_len;
    }
    size_t keep = LP_MIN(hn - i, p->lit_len - 1);
    while (keep > 0 && memcmp(st->hold.p + hn - keep, p->lit, keep) != 0)
        keep--;
    if (lp__tbuf_put(&st->out, st->hold.p + i, hn - keep - i))
        return NOMEM();
    memmove(st->hold.p, st->hold.p + hn - keep, keep);
    st->hold.n = keep;
    return emit_out(d, k, err);
}

/* "<0xNN>" as u8::from_str_radix(&tok[3..5], 16) reads it (a '+' sign is
 * accepted there). */
static bool byte_token(const char *s, size_t n, unsigned char *out) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if (c >= 'a' && c <= 'f')
            h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            h = c - 'A' + 10;
        else if (c == '+' && i == 3)
            continue;
        else
            return false;
        v = v * 16 + h;
    }
    *out = (unsigned char)v;
    return true;
}

static int bytefallback_flush(lp_detok *d, size_t k, lp_error *err) {
    dstage *st = &d->st[k];
    if (st->group.n == 0)
        return LP_OK;
    int rc = LP_OK;
    if (lp__utf8_check(st->group.p, st->group.n) == st->group.n) {
        rc = emit(d, k + 1, EV_BEGIN, NULL, 0, err);
        if (!rc)
            rc = emit(d, k + 1, EV_DATA, st->group.p, st->group.n, err);
        if (!rc)
            rc = emit(d, k + 1, EV_END, NULL, 0, err);
    } else {
        /* invalid: one U+FFFD token per byte */
        for (size_t i = 0; i < st->group.n && !rc; i++) {
            rc = emit(d, k + 1, EV_BEGIN, NULL, 0, err);
            if (!rc)
                rc = emit(d, k + 1, EV_DATA, "\xEF\xBF\xBD", 3, err);
            if (!rc)
                rc = emit(d, k + 1, EV_END, NULL, 0, err);
        }
    }
    st->group.n = 0;
    return rc;
}

static int st_bytefallback(lp_detok *d, size_t k, int ev, const char *s, size_t n,
                           lp_error *err) {
    dstage *st = &d->st[k];
    int rc;
    unsigned char b;
    switch (ev) {
    case EV_BEGIN:
        st->tok.n = 0;
        return LP_OK;
    case EV_DATA:
        return lp__tbuf_put(&st->tok, s, n) ? NOMEM() : LP_OK;
    case EV_END:
        if (byte_token(st->tok.p, st->tok.n, &b))
            return lp__tbuf_putc(&st->group, (char)b) ? NOMEM() : LP_OK;
        if ((rc = bytefallback_flush(d, k, err)) ||
            (rc = emit(d, k + 1, EV_BEGIN, NULL, 0, err)) ||
            (st->tok.n && (rc = emit(d, k + 1, EV_DATA, st->tok.p, st->tok.n, err))))
            return rc;
        return emit(d, k + 1, EV_END, NULL, 0, err);
    default:
        rc = bytefallback_flush(d, k, err);
        return rc ? rc : emit(d, k + 1, EV_FLUSH, NULL, 0, err);
    }
}

static int st_strip(lp_detok *d, size_t k, int ev, const char *s, size_t n,
                    lp_error *err) {
    dstage *st = &d->st[k];
    const lp__dec *dc = &d->t->decs[k];
    switch (ev) {
    case EV_BEGIN:
        st->count = 0;
        st->held = 0;
        st->lead_done = dc->start == 0;
        return emit(d, k + 1, EV_BEGIN, NULL, 0, err);
    case EV_DATA:
        break;
    case EV_END:
        st->held = 0; /* at most `stop` trailing content chars: dropped */
        return emit(d, k + 1, EV_END, NULL, 0, err);
    default:
        return emit(d, k + 1, EV_FLUSH, NULL, 0, err);
    }
    st->out.n = 0;
    for (size_t i = 0; i < n;) {
        size_t l = lp__utf8_len(s + i, n - i);
        bool is_c = l == dc->ch_len && memcmp(s + i, dc->ch, l) == 0;
        if (!st->lead_done) {
            if (is_c && st->count < dc->start) {
                st->count++;
                i += l;
                continue;
            }
            st->lead_done = true;
        }
        if (dc->stop > 0 && is_c) {
            if (st->held < dc->stop)
                st->held++;
            else if (lp__tbuf_put(&st->out, dc->ch, dc->ch_len))
                return NOMEM();
        } else {
            for (; st->held > 0; st->held--)
                if (lp__tbuf_put(&st->out, dc->ch, dc->ch_len))
                    return NOMEM();
            if (lp__tbuf_put(&st->out, s + i, l))
                return NOMEM();
        }
        i += l;
    }
    return emit_out(d, k, err);
}

static int st_metaspace(lp_detok *d, size_t k, int ev, const char *s, size_t n,
                        lp_error *err) {
    dstage *st = &d->st[k];
    const lp__dec *dc = &d->t->decs[k];
    if (ev == EV_BEGIN) {
        st->count++;
        return emit(d, k + 1, EV_BEGIN, NULL, 0, err);
    }
    if (ev != EV_DATA)
        return emit(d, k + 1, ev, NULL, 0, err);
    bool drop = st->count == 1 && dc->strip_first; /* the first token */
    st->out.n = 0;
    for (size_t i = 0; i < n;) {
        size_t l = lp__utf8_len(s + i, n - i);
        int rc;
        if (l == dc->ch_len && memcmp(s + i, dc->ch, l) == 0)
            rc = drop ? LP_OK : lp__tbuf_putc(&st->out, ' ');
        else
            rc = lp__tbuf_put(&st->out, s + i, l);
        if (rc)
            return NOMEM();
        i += l;
    }
    return emit_out(d, k, err);
}

static int emit(lp_detok *d, size_t k, int ev, const char *s, size_t n, lp_error *err) {
    const lp_tokenizer *t = d->t;
    if (k == t->n_decs) { /* sink */
        if (ev == EV_BEGIN) {
            if (!t->has_decoder && d->sink_tokens > 0 && lp__tbuf_putc(&d->out, ' '))
                return NOMEM();
            d->sink_tokens++;
        } else if (ev == EV_DATA && lp__tbuf_put(&d->out, s, n)) {
            return NOMEM();
        }
        return LP_OK;
    }
    switch (t->decs[k].kind) {
    case LP__DEC_BYTELEVEL:
        return st_bytelevel(d, k, ev, s, n, err);
    case LP__DEC_FUSE:
        return st_fuse(d, k, ev, s, n, err);
    case LP__DEC_REPLACE:
        return st_replace(d, k, ev, s, n, err);
    case LP__DEC_BYTEFALLBACK:
        return st_bytefallback(d, k, ev, s, n, err);
    case LP__DEC_STRIP:
        return st_strip(d, k, ev, s, n, err);
    case LP__DEC_METASPACE:
        return st_metaspace(d, k, ev, s, n, err);
    }
    return lp_error_set(err, LP_ERR_INTERNAL, "bad decoder stage");
}

/* ---- API ---- */

lp_detok *lp_detok_new(const lp_tokenizer *t, bool skip_special) {
    if (!t)
        return NULL;
    lp_detok *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->t = t;
    d->skip_special = skip_special;
    return d;
}

void lp_detok_free(lp_detok *d) {
    if (!d)
        return;
    for (size_t k = 0; k < LP__TOK_MAX_STAGES; k++) {
        lp__tbuf_free(&d->st[k].tok);
        lp__tbuf_free(&d->st[k].hold);
        lp__tbuf_free(&d->st[k].out);
        lp__tbuf_free(&d->st[k].group);
    }
    lp__tbuf_free(&d->out);
    if (d->rx_ready)
        lp__rx_free(&d->rx);
    free(d->spans.v);
    free(d);
}

static int detok_feed(lp_detok *d, int32_t id, lp_error *err) {
    const lp_tokenizer *t = d->t;
    if (d->finished)
        return lp_error_set(err, LP_ERR_INVALID,
                            "detokenizer already flushed or failed; create a new one");
    if (id < 0 || id >= t->n_ids)
        return lp_error_set(err, LP_ERR_RANGE, "token id %d is out of range [0, %d)",
                            (int)id, (int)t->n_ids);
    size_t len;
    const char *s = lp__id_str(t, id, &len);
    if (!s) /* a hole in the id space: HF skips unknown ids */
        return LP_OK;
    if (d->skip_special && lp_tokenizer_is_special(t, id))
        return LP_OK;
    int rc = emit(d, 0, EV_BEGIN, NULL, 0, err);
    if (!rc && len)
        rc = emit(d, 0, EV_DATA, s, len, err);
    if (!rc)
        rc = emit(d, 0, EV_END, NULL, 0, err);
    if (rc)
        d->finished = true;
    return rc;
}

static int detok_take(lp_detok *d, char **out, size_t *out_len, lp_error *err) {
    char *s = malloc(d->out.n + 1);
    if (!s)
        return NOMEM();
    if (d->out.n)
        memcpy(s, d->out.p, d->out.n);
    s[d->out.n] = '\0';
    *out = s;
    if (out_len)
        *out_len = d->out.n;
    d->out.n = 0;
    return LP_OK;
}

int lp_detok_push(lp_detok *d, int32_t id, char **out, size_t *out_len, lp_error *err) {
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!d)
        return lp_error_set(err, LP_ERR_INVALID, "detokenizer is NULL");
    int rc = detok_feed(d, id, err);
    return rc ? rc : detok_take(d, out, out_len, err);
}

int lp_detok_flush(lp_detok *d, char **out, size_t *out_len, lp_error *err) {
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!d)
        return lp_error_set(err, LP_ERR_INVALID, "detokenizer is NULL");
    if (d->finished)
        return lp_error_set(err, LP_ERR_INVALID, "detokenizer already flushed or failed");
    int rc = emit(d, 0, EV_FLUSH, NULL, 0, err);
    d->finished = true;
    return rc ? rc : detok_take(d, out, out_len, err);
}

int lp_tokenizer_decode(const lp_tokenizer *t, const int32_t *ids, size_t n_ids,
                        bool skip_special, char **out, size_t *out_len, lp_error *err) {
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t || (!ids && n_ids))
        return lp_error_set(err, LP_ERR_INVALID, "decode: NULL argument");
    lp_detok *d = lp_detok_new(t, skip_special);
    if (!d)
        return NOMEM();
    int rc = LP_OK;
    for (size_t i = 0; i < n_ids && !rc; i++) {
        rc = detok_feed(d, ids[i], err);
        if (rc == LP_ERR_RANGE)
            lp_error_prefix(err, "ids[%zu]", i);
    }
    if (!rc)
        rc = emit(d, 0, EV_FLUSH, NULL, 0, err);
    if (!rc)
        rc = detok_take(d, out, out_len, err);
    lp_detok_free(d);
    return rc;
}
