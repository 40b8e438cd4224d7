/* chat_template_lex.c - Jinja2 lexer for chat templates: splits the source
 * into template data and tag tokens, applying `-`/`+` whitespace control,
 * trim_blocks and lstrip_blocks exactly as jinja2.lexer does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

#define LX_MAX_BALANCE 256

typedef struct lx {
    lp__ct_arena *a;
    const char *s;
    size_t n, pos;
    lp__ct_tok *t;
    size_t nt, cap;
    bool line_starting;
    /* line bookkeeping: offset `cur` lies on line `line`, which starts at ls */
    size_t cur, ls;
    uint32_t line;
    char balance[LX_MAX_BALANCE];
    int nbal;
    lp_error *err;
} lx;

static void lx_where(lx *x, size_t pos, uint32_t *line, uint32_t *col) {
    if (pos < x->cur) {
        x->cur = 0;
        x->ls = 0;
        x->line = 1;
    }
    while (x->cur < pos) {
        if (x->s[x->cur] == '\n') {
            x->line++;
            x->ls = x->cur + 1;
        }
        x->cur++;
    }
    *line = x->line;
    *col = (uint32_t)(pos - x->ls + 1);
}

static int lx_fail(lx *x, size_t pos, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int lx_fail(lx *x, size_t pos, int code, const char *fmt, ...) {
    uint32_t line, col;
    lx_where(x, pos, &line, &col);
    char msg[LP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lp_error_set(x->err, code, "line %u:%u: %s", line, col, msg);
}

static lp__ct_tok *lx_push(lx *x, int type, size_t pos) {
    if (x->nt == x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 256;
        lp__ct_tok *nt = lp__ct_alloc_array(x->a, ncap, sizeof *nt);
        if (!nt)
            return NULL;
        if (x->nt)
            memcpy(nt, x->t, x->nt * sizeof *nt);
        x->t = nt;
        x->cap = ncap;
    }
    lp__ct_tok *t = &x->t[x->nt++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    lx_where(x, pos, &t->line, &t->col);
    return t;
}

static int lx_oom(lx *x) { return lp__ct_compile_oom(x->a, x->err); }

static int lx_data(lx *x, size_t from, size_t to) {
    if (to <= from)
        return LP_OK;
    lp__ct_tok *t = lx_push(x, LP__T_DATA, from);
    if (!t)
        return lx_oom(x);
    t->p = x->s + from;
    t->n = to - from;
    return LP_OK;
}

static bool starts(const lx *x, size_t pos, const char *lit) {
    size_t k = strlen(lit);
    return pos + k <= x->n && memcmp(x->s + pos, lit, k) == 0;
}

/* Jinja's OptionalLStrip on the text before a tag: `-` strips all trailing
 * whitespace; otherwise (unless `+`, or a {{ tag) lstrip_blocks drops the
 * spaces between the last line start and the tag. Returns the new end. */
static size_t lx_strip_text(const lx *x, size_t from, size_t to, char sign,
                            bool is_var) {
    if (sign == '-')
        return from + (to - from) - lp__ct_space_suffix(x->s + from, to - from);
    if (sign == '+' || is_var)
        return to;
    size_t l_pos = from;
    for (size_t i = to; i > from; i--) {
        if (x->s[i - 1] == '\n') {
            l_pos = i;
            break;
        }
    }
    if ((l_pos > from || x->line_starting) && l_pos < to &&
        lp__ct_space_prefix(x->s + l_pos, to - l_pos) == to - l_pos)
        return l_pos;
    return to;
}

/* `\{%(-|+|)\s*raw\s*(?:-%}\s*|%})` at pos; returns the end or 0. */
static size_t lx_match_raw_begin(const lx *x, size_t pos) {
    size_t p = pos + 2;
    if (p < x->n && (x->s[p] == '-' || x->s[p] == '+'))
        p++;
    p += lp__ct_space_prefix(x->s + p, x->n - p);
    if (!starts(x, p, "raw"))
        return 0;
    p += 3;
    p += lp__ct_space_prefix(x->s + p, x->n - p);
    if (starts(x, p, "-%}")) {
        p += 3;
        return p + lp__ct_space_prefix(x->s + p, x->n - p);
    }
    if (starts(x, p, "%}"))
        return p + 2;
    return 0;
}

/* `{%(-|+|)\s*endraw\s*(?:+%}|-%}\s*|%}\n?)` at pos; returns the end or 0. */
static size_t lx_match_raw_end(const lx *x, size_t pos) {
    size_t p = pos + 2;
    if (p < x->n && (x->s[p] == '-' || x->s[p] == '+'))
        p++;
    p += lp__ct_space_prefix(x->s + p, x->n - p);
    if (!starts(x, p, "endraw"))
        return 0;
    p += 6;
    p += lp__ct_space_prefix(x->s + p, x->n - p);
    if (starts(x, p, "+%}"))
        return p + 3;
    if (starts(x, p, "-%}")) {
        p += 3;
        return p + lp__ct_space_prefix(x->s + p, x->n - p);
    }
    if (starts(x, p, "%}")) {
        p += 2;
        return p < x->n && x->s[p] == '\n' ? p + 1 : p;
    }
    return 0;
}

static int lx_raw(lx *x, size_t tag, size_t body) {
    for (size_t i = body; i + 1 < x->n; i++) {
        if (x->s[i] != '{' || x->s[i + 1] != '%')
            continue;
        size_t end = lx_match_raw_end(x, i);
        if (!end)
            continue;
        char sign = i + 2 < x->n ? x->s[i + 2] : 0;
        size_t to = lx_strip_text(x, body, i, sign, false);
        int rc = lx_data(x, body, to);
        if (rc)
            return rc;
        x->line_starting = x->s[end - 1] == '\n';
        x->pos = end;
        return LP_OK;
    }
    return lx_fail(x, tag, LP_ERR_FORMAT, "missing end of raw directive");
}

static int lx_comment(lx *x, size_t tag, size_t body) {
    for (size_t i = body; i < x->n; i++) {
        size_t end = 0;
        if (starts(x, i, "+#}")) {
            end = i + 3;
        } else if (starts(x, i, "-#}")) {
            end = i + 3;
            end += lp__ct_space_prefix(x->s + end, x->n - end);
        } else if (starts(x, i, "#}")) {
            end = i + 2;
            if (end < x->n && x->s[end] == '\n')
                end++;
        }
        if (end) {
            x->line_starting = x->s[end - 1] == '\n';
            x->pos = end;
            return LP_OK;
        }
    }
    return lx_fail(x, tag, LP_ERR_FORMAT, "missing end of comment tag");
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* (\d+_)*\d+ at p: returns the end or p when no match. */
static size_t lx_digits_us(const lx *x, size_t p) {
    size_t q = p, last = p;
    while (q < x->n && is_digit(x->s[q])) {
        while (q < x->n && is_digit(x->s[q]))
            q++;
        last = q;
        if (q + 1 < x->n && x->s[q] == '_' && is_digit(x->s[q + 1]))
            q++;
        else
            break;
    }
    return last;
}

/* float_re at pos (caller checked the lookbehind); returns end or 0. */
static size_t lx_match_float(const lx *x, size_t pos) {
    size_t p = lx_digits_us(x, pos);
    if (p == pos)
        return 0;
    /* alternative 1: (\.digits)? e[+-]?digits */
    size_t q = p;
    if (q < x->n && x->s[q] == '.') {
        size_t r = lx_digits_us(x, q + 1);
        if (r > q + 1)
            q = r;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t e = pass == 0 ? q : p; /* with, then without the fraction */
        if (e < x->n && (x->s[e] == 'e' || x->s[e] == 'E')) {
            size_t f = e + 1;
            if (f < x->n && (x->s[f] == '+' || x->s[f] == '-'))
                f++;
            size_t g = lx_digits_us(x, f);
            if (g > f)
                return g;
        }
        if (q == p)
            break;
    }
    /* alternative 2: \.digits */
    if (p < x->n && x->s[p] == '.') {
        size_t r = lx_digits_us(x, p + 1);
        if (r > p + 1)
            return r;
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* integer_re at pos: returns end or 0; *base receives 2/8/16/10. */
static size_t lx_match_int(const lx *x, size_t pos, int *base) {
    const char *s = x->s;
    size_t n = x->n;
    if (s[pos] == '0' && pos + 1 < n) {
        char k = (char)(s[pos + 1] | 0x20);
        int b = k == 'b' ? 2 : k == 'o' ? 8 : k == 'x' ? 16 : 0;
        if (b) {
            size_t p = pos + 2, end = 0;
            for (;;) {
                size_t q = p;
                if (q < n && s[q] == '_')
                    q++;
                int v = q < n ? hexval(s[q]) : -1;
                if (v < 0 || v >= b)
                    break;
                p = q + 1;
                end = p;
            }
            if (end) {
                *base = b;
                return end;
            }
        }
    }
    *base = 10;
    if (s[pos] >= '1' && s[pos] <= '9') {
        size_t p = pos + 1;
        for (;;) {
            size_t q = p;
            if (q < n && s[q] == '_')
                q++;
            if (q < n && is_digit(s[q]))
                p = q + 1;
            else
                break;
        }
        return p;
    }
    if (s[pos] == '0') {
        size_t p = pos + 1;
        for (;;) {
            size_t q = p;
            if (q < n && s[q] == '_')
                q++;
            if (q < n && s[q] == '0')
                p = q + 1;
            else
                break;
        }
        return p;
    }
    return 0;
}

static bool name_cp(uint32_t cp, bool first) {
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_' || (!first && cp >= '0' && cp <= '9');
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
        return true;
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return !first;
    default:
        return false;
    }
}

static size_t lx_match_name(const lx *x, size_t pos) {
    size_t p = pos;
    while (p < x->n) {
        uint32_t cp = 0;
        size_t k = lp__ct_utf8_dec(x->s + p, x->n - p, &cp);
        if (!name_cp(cp, p == pos))
            break;
        p += k;
    }
    return p;
}

/* Python's unicode-escape decoding of a string literal's body (after the
 * source was encoded with backslashreplace, so a backslash followed by a
 * non-ASCII character keeps the backslash and spells the character's
 * escape literally, exactly like Jinja). */
static int lx_unescape(lx *x, size_t at, const char *s, size_t n,
                       lp__ct_tok *t) {
    /* worst case: "\\" + a 4-byte character becomes "\\U0001f600" */
    char *o = lp__ct_alloc_array(x->a, 2, n + 1);
    if (!o)
        return lx_oom(x);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            o[k++] = s[i++];
            continue;
        }
        if (i + 1 >= n)
            return lx_fail(x, at, LP_ERR_FORMAT, "\\ at end of string");
        unsigned char e = (unsigned char)s[i + 1];
        if (e >= 0x80) { /* backslash, then the backslashreplace spelling */
            uint32_t cp = 0;
            size_t len = lp__ct_utf8_dec(s + i + 1, n - i - 1, &cp);
            char esc[12];
            int m = cp < 0x100     ? snprintf(esc, sizeof esc, "x%02x", (unsigned)cp)
                    : cp < 0x10000 ? snprintf(esc, sizeof esc, "u%04x", (unsigned)cp)
                                   : snprintf(esc, sizeof esc, "U%08x", (unsigned)cp);
            o[k++] = '\\';
            memcpy(o + k, esc, (size_t)m);
            k += (size_t)m;
            i += 1 + len;
            continue;
        }
        i += 2;
        uint32_t cp = 0;
        int digits = 0;
        switch (e) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = '\a'; continue;
        case 'b': o[k++] = '\b'; continue;
        case 'f': o[k++] = '\f'; continue;
        case 'n': o[k++] = '\n'; continue;
        case 'r': o[k++] = '\r'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'v': o[k++] = '\v'; continue;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        case 'N':
            return lx_fail(x, at, LP_ERR_UNSUPPORTED,
                           "\\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                k += lp__ct_utf8_enc(cp, o + k);
                continue;
            }
            o[k++] = '\\'; /* unknown escape: kept */
            o[k++] = (char)e;
            continue;
        }
        for (int d = 0; d < digits; d++) {
            int v = i < n ? hexval(s[i]) : -1;
            if (v < 0)
                return lx_fail(x, at, LP_ERR_FORMAT, "truncated \\%c escape", e);
            cp = cp * 16 + (uint32_t)v;
            i++;
        }
        if (cp > 0x10FFFF)
            return lx_fail(x, at, LP_ERR_FORMAT, "illegal Unicode character");
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return lx_fail(x, at, LP_ERR_UNSUPPORTED,
                           "surrogate code point in string literal");
        k += lp__ct_utf8_enc(cp, o + k);
    }
    o[k] = '\0';
    t->p = o;
    t->n = k;
    return LP_OK;
}

static const struct {
    const char *s;
    uint8_t op;
} ops2[] = {{"//", LP__OP_FLOORDIV}, {"**", LP__OP_POW}, {"==", LP__OP_EQ},
            {"!=", LP__OP_NE},       {">=", LP__OP_GTEQ}, {"<=", LP__OP_LTEQ}};

static uint8_t op1(char c) {
    switch (c) {
    case '+': return LP__OP_ADD;
    case '-': return LP__OP_SUB;
    case '/': return LP__OP_DIV;
    case '*': return LP__OP_MUL;
    case '%': return LP__OP_MOD;
    case '~': return LP__OP_TILDE;
    case '[': return LP__OP_LBRACKET;
    case ']': return LP__OP_RBRACKET;
    case '(': return LP__OP_LPAREN;
    case ')': return LP__OP_RPAREN;
    case '{': return LP__OP_LBRACE;
    case '}': return LP__OP_RBRACE;
    case '>': return LP__OP_GT;
    case '<': return LP__OP_LT;
    case '=': return LP__OP_ASSIGN;
    case '.': return LP__OP_DOT;
    case ':': return LP__OP_COLON;
    case '|': return LP__OP_PIPE;
    case ',': return LP__OP_COMMA;
    case ';': return LP__OP_SEMICOLON;
    default: return 0;
    }
}

/* Tokens inside {% %} or {{ }} up to and including the end delimiter. */
static int lx_tag(lx *x, bool block) {
    x->nbal = 0;
    for (;;) {
        size_t pos = x->pos;
        const char *s = x->s;
        if (x->nbal == 0) {
            size_t end = 0;
            if (block) {
                if (starts(x, pos, "+%}")) {
                    end = pos + 3;
                } else if (starts(x, pos, "-%}")) {
                    end = pos + 3;
                    end += lp__ct_space_prefix(s + end, x->n - end);
                } else if (starts(x, pos, "%}")) {
                    end = pos + 2;
                    if (end < x->n && s[end] == '\n')
                        end++;
                }
            } else {
                if (starts(x, pos, "-}}")) {
                    end = pos + 3;
                    end += lp__ct_space_prefix(s + end, x->n - end);
                } else if (starts(x, pos, "}}")) {
                    end = pos + 2;
                }
            }
            if (end) {
                if (!lx_push(x, block ? LP__T_BLOCK_END : LP__T_VAR_END, pos))
                    return lx_oom(x);
                x->line_starting = s[end - 1] == '\n';
                x->pos = end;
                return LP_OK;
            }
        }
        if (pos >= x->n)
            return LP_OK; /* the parser reports the unexpected end */
        size_t ws = lp__ct_space_prefix(s + pos, x->n - pos);
        if (ws) {
            x->pos += ws;
            continue;
        }
        size_t end = 0;
        int base = 0;
        if ((pos == 0 || s[pos - 1] != '.') && (end = lx_match_float(x, pos))) {
            char buf[64];
            size_t k = 0;
            for (size_t i = pos; i < end && k + 1 < sizeof buf; i++)
                if (s[i] != '_')
                    buf[k++] = s[i];
            buf[k] = '\0';
            lp__ct_tok *t = lx_push(x, LP__T_FLOAT, pos);
            if (!t)
                return lx_oom(x);
            t->f = strtod(buf, NULL);
            x->pos = end;
            continue;
        }
        if ((end = lx_match_int(x, pos, &base))) {
            size_t i = pos + (base == 10 ? 0 : 2);
            uint64_t v = 0;
            for (; i < end; i++) {
                if (s[i] == '_')
                    continue;
                uint64_t d = (uint64_t)hexval(s[i]);
                if (v > (UINT64_MAX - d) / (uint64_t)base || v * (uint64_t)base + d > (uint64_t)INT64_MAX)
                    return lx_fail(x, pos, LP_ERR_UNSUPPORTED,
                                   "integer literal out of range");
                v = v * (uint64_t)base + d;
            }
            lp__ct_tok *t = lx_push(x, LP__T_INT, pos);
            if (!t)
                return lx_oom(x);
            t->i = (int64_t)v;
            x->pos = end;
            continue;
        }
        if ((end = lx_match_name(x, pos)) > pos) {
            lp__ct_tok *t = lx_push(x, LP__T_NAME, pos);
            if (!t)
                return lx_oom(x);
            t->p = s + pos;
            t->n = end - pos;
            x->pos = end;
            continue;
        }
        if (s[pos] == '\'' || s[pos] == '"') {
            char q = s[pos];
            size_t i = pos + 1;
            while (i < x->n && s[i] != q) {
                if (s[i] == '\\' && i + 1 < x->n)
                    i++;
                i++;
            }
            if (i < x->n) {
                lp__ct_tok *t = lx_push(x, LP__T_STRING, pos);
                if (!t)
                    return lx_oom(x);
                int rc = lx_unescape(x, pos, s + pos + 1, i - pos - 1, t);
                if (rc)
                    return rc;
                x->pos = i + 1;
                continue;
            }
            /* unterminated: falls through to "unexpected char" */
        }
        uint8_t op = 0;
        size_t oplen = 1;
        for (size_t i = 0; i < LP_ARRAY_LEN(ops2); i++) {
            if (starts(x, pos, ops2[i].s)) {
                op = ops2[i].op;
                oplen = 2;
                break;
            }
        }
        if (!op)
            op = op1(s[pos]);
        if (!op) {
            uint32_t cp = 0;
            lp__ct_utf8_dec(s + pos, x->n - pos, &cp);
            if (cp < 0x80 && cp >= 0x20)
                return lx_fail(x, pos, LP_ERR_FORMAT, "unexpected char '%c'",
                               (char)cp);
            return lx_fail(x, pos, LP_ERR_FORMAT, "unexpected char U+%04X", cp);
        }
        if (op == LP__OP_LBRACE || op == LP__OP_LPAREN || op == LP__OP_LBRACKET) {
            if (x->nbal >= LX_MAX_BALANCE)
                return lx_fail(x, pos, LP_ERR_LIMIT,
                               "brackets nested deeper than %d", LX_MAX_BALANCE);
            x->balance[x->nbal++] = op == LP__OP_LBRACE   ? '}'
                                    : op == LP__OP_LPAREN ? ')'
                                                          : ']';
        } else if (op == LP__OP_RBRACE || op == LP__OP_RPAREN ||
                   op == LP__OP_RBRACKET) {
            if (x->nbal == 0)
                return lx_fail(x, pos, LP_ERR_FORMAT, "unexpected '%c'", s[pos]);
            char want = x->balance[--x->nbal];
            if (want != s[pos])
                return lx_fail(x, pos, LP_ERR_FORMAT,
                               "unexpected '%c', expected '%c'", s[pos], want);
        }
        lp__ct_tok *t = lx_push(x, LP__T_OP, pos);
        if (!t)
            return lx_oom(x);
        t->op = op;
        x->pos = pos + oplen;
    }
}

int lp__ct_lex(lp__ct_arena *a, const char *src, size_t n, lp__ct_tok **toks,
               size_t *ntoks, lp_error *err) {
    lx x;
    memset(&x, 0, sizeof x);
    x.a = a;
    x.s = src;
    x.n = n;
    x.line = 1;
    x.line_starting = true;
    x.err = err;
    int rc = LP_OK;
    while (x.pos < n) {
        size_t ts = x.pos;
        char kind = 0;
        for (; ts + 1 < n; ts++) {
            if (src[ts] == '{' &&
                (src[ts + 1] == '{' || src[ts + 1] == '%' || src[ts + 1] == '#')) {
                kind = src[ts + 1];
                break;
            }
        }
        if (!kind) {
            rc = lx_data(&x, x.pos, n);
            if (rc)
                return rc;
            break;
        }
        char sign = ts + 2 < n && (src[ts + 2] == '-' || src[ts + 2] == '+')
                        ? src[ts + 2]
                        : 0;
        size_t raw_end = kind == '%' ? lx_match_raw_begin(&x, ts) : 0;
        size_t to = lx_strip_text(&x, x.pos, ts, sign, kind == '{');
        rc = lx_data(&x, x.pos, to);
        if (rc)
            return rc;
        size_t body = ts + 2 + (sign ? 1 : 0);
        x.line_starting = false;
        if (raw_end) {
            x.line_starting = src[raw_end - 1] == '\n';
            rc = lx_raw(&x, ts, raw_end);
        } else if (kind == '#') {
            rc = lx_comment(&x, ts, body);
        } else {
            if (!lx_push(&x, kind == '%' ? LP__T_BLOCK_BEGIN : LP__T_VAR_BEGIN, ts))
                return lx_oom(&x);
            x.pos = body;
            rc = lx_tag(&x, kind == '%');
        }
        if (rc)
            return rc;
    }
    if (!lx_push(&x, LP__T_EOF, n))
        return lx_oom(&x);
    *toks = x.t;
    *ntoks = x.nt;
    return LP_OK;
}
