/* chat_template_builtins.c - the filters, tests, global functions and
 * str/dict/list methods chat templates call, each following its Jinja2 or
 * Python counterpart (transformers' tojson, raise_exception and
 * strftime_now included). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_)                                                               \
            return rc_;                                                        \
    } while (0)

/* ---- name tables ---- */

#define FILTERS(X)                                                             \
    X(ABS, "abs") X(ATTR, "attr") X(BATCH, "batch") X(CAPITALIZE, "capitalize") \
    X(CENTER, "center") X(COUNT, "count") X(D, "d") X(DEFAULT, "default")      \
    X(DICTSORT, "dictsort") X(E, "e") X(ESCAPE, "escape")                      \
    X(FILESIZEFORMAT, "filesizeformat") X(FIRST, "first") X(FLOAT, "float")    \
    X(FORCEESCAPE, "forceescape") X(FORMAT, "format") X(GROUPBY, "groupby")    \
    X(INDENT, "indent") X(INT, "int") X(ITEMS, "items") X(JOIN, "join")        \
    X(LAST, "last") X(LENGTH, "length") X(LIST, "list") X(LOWER, "lower")      \
    X(MAP, "map") X(MAX, "max") X(MIN, "min") X(PPRINT, "pprint")              \
    X(RANDOM, "random") X(REJECT, "reject") X(REJECTATTR, "rejectattr")        \
    X(REPLACE, "replace") X(REVERSE, "reverse") X(ROUND, "round")              \
    X(SAFE, "safe") X(SELECT, "select") X(SELECTATTR, "selectattr")            \
    X(SLICE, "slice") X(SORT, "sort") X(STRING, "string")                      \
    X(STRIPTAGS, "striptags") X(SUM, "sum") X(TITLE, "title")                  \
    X(TOJSON, "tojson") X(TRIM, "trim") X(TRUNCATE, "truncate")                \
    X(UNIQUE, "unique") X(UPPER, "upper") X(URLENCODE, "urlencode")            \
    X(URLIZE, "urlize") X(WORDCOUNT, "wordcount") X(WORDWRAP, "wordwrap")      \
    X(XMLATTR, "xmlattr")

#define TESTS(X)                                                               \
    X(BOOLEAN, "boolean") X(CALLABLE, "callable") X(DEFINED, "defined")        \
    X(DIVISIBLEBY, "divisibleby") X(EQ, "eq") X(EQUALTO, "equalto")            \
    X(EQ_OP, "==") X(ESCAPED, "escaped") X(EVEN, "even") X(FALSE, "false")     \
    X(FILTER, "filter") X(FLOAT, "float") X(GE, "ge") X(GE_OP, ">=")           \
    X(GT, "gt") X(GREATERTHAN, "greaterthan") X(GT_OP, ">") X(IN, "in")        \
    X(INTEGER, "integer") X(ITERABLE, "iterable") X(LE, "le") X(LE_OP, "<=")   \
    X(LOWER, "lower") X(LT, "lt") X(LESSTHAN, "lessthan") X(LT_OP, "<")        \
    X(MAPPING, "mapping") X(NE, "ne") X(NE_OP, "!=") X(NONE, "none")           \
    X(NUMBER, "number") X(ODD, "odd") X(SAMEAS, "sameas")                      \
    X(SEQUENCE, "sequence") X(STRING, "string") X(TEST, "test")                \
    X(TRUE, "true") X(UNDEFINED, "undefined") X(UPPER, "upper")

#define METHODS(X)                                                             \
    X(STRIP, "strip") X(LSTRIP, "lstrip") X(RSTRIP, "rstrip")                  \
    X(STARTSWITH, "startswith") X(ENDSWITH, "endswith") X(SPLIT, "split")      \
    X(RSPLIT, "rsplit") X(SPLITLINES, "splitlines") X(UPPER, "upper")          \
    X(LOWER, "lower") X(TITLE, "title") X(CAPITALIZE, "capitalize")            \
    X(SWAPCASE, "swapcase") X(REPLACE, "replace") X(FIND, "find")              \
    X(RFIND, "rfind") X(COUNT, "count") X(JOIN, "join") X(ISDIGIT, "isdigit")  \
    X(ISALPHA, "isalpha") X(ISALNUM, "isalnum") X(ISSPACE, "isspace")          \
    X(ISUPPER, "isupper") X(ISLOWER, "islower") X(REMOVEPREFIX, "removeprefix") \
    X(REMOVESUFFIX, "removesuffix") X(FORMAT, "format")                        \
    X(PARTITION, "partition") X(RPARTITION, "rpartition") X(ITEMS, "items")    \
    X(KEYS, "keys") X(VALUES, "values") X(GET, "get") X(INDEX, "index")        \
    X(CYCLE, "cycle") X(CHANGED, "changed")

#define X_ENUM_F(id, name) F_##id,
#define X_ENUM_T(id, name) TS_##id,
#define X_ENUM_M(id, name) M_##id,
#define X_NAME(id, name) name,
enum { FILTERS(X_ENUM_F) F_COUNT_ };
enum { TESTS(X_ENUM_T) TS_COUNT_ };
enum { METHODS(X_ENUM_M) M_COUNT_ };
static const char *const filter_names[] = {FILTERS(X_NAME)};
static const char *const test_names[] = {TESTS(X_NAME)};
static const char *const method_names[] = {METHODS(X_NAME)};
static const char *const global_names[] = {"range", "namespace", "dict",
                                           "raise_exception", "strftime_now"};

static int find_name(const char *const *tab, int n, const char *p, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(tab[i]) == len && memcmp(tab[i], p, len) == 0)
            return i;
    return -1;
}

int lp__ct_filter_id(const char *p, size_t n) {
    return find_name(filter_names, F_COUNT_, p, n);
}
int lp__ct_test_id(const char *p, size_t n) {
    return find_name(test_names, TS_COUNT_, p, n);
}
int lp__ct_global_id(const char *p, size_t n) {
    return find_name(global_names, LP__G_COUNT, p, n);
}
int lp__ct_method_id(const char *p, size_t n) {
    return find_name(method_names, M_COUNT_, p, n);
}
const char *lp__ct_global_name(int id) {
    return id >= 0 && id < LP__G_COUNT ? global_names[id] : "?";
}
const char *lp__ct_method_name(int id) {
    return id >= 0 && id < M_COUNT_ ? method_names[id] : "?";
}

bool lp__ct_has_method(lp__val self, int id) {
    switch (self.t) {
    case LP__V_STR: return id >= M_STRIP && id <= M_RPARTITION;
    case LP__V_DICT: return id >= M_ITEMS && id <= M_GET;
    case LP__V_LIST:
    case LP__V_TUPLE:
    case LP__V_RANGE: return id == M_INDEX || id == M_COUNT;
    case LP__V_LOOP: return id == M_CYCLE || id == M_CHANGED;
    default: return false;
    }
}

bool lp__ct_is_unsafe_method(lp__val self, const char *name, size_t len) {
    static const char *const list_mut[] = {"append", "clear", "extend", "insert",
                                           "pop", "remove", "reverse", "sort"};
    static const char *const dict_mut[] = {"clear", "pop", "popitem",
                                           "setdefault", "update"};
    if (self.t == LP__V_LIST)
        return find_name(list_mut, (int)LP_ARRAY_LEN(list_mut), name, len) >= 0;
    if (self.t == LP__V_DICT)
        return find_name(dict_mut, (int)LP_ARRAY_LEN(dict_mut), name, len) >= 0;
    return false;
}

/* ---- argument binding ---- */

/* Bind positional and keyword arguments to `names` (slots hold defaults on
 * entry); *given gets a bit per bound name. */
static int bind(lp__ct_ctx *c, const lp__node *at, const char *fn,
                const lp__ct_args *a, const char *const *names, int nnames,
                lp__val *slots, uint32_t *given) {
    uint32_t g = 0;
    if (a->npos > (size_t)nnames)
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "%s() takes at most %d argument(s) (%zu given)", fn,
                           nnames, a->npos);
    for (size_t i = 0; i < a->npos; i++) {
        slots[i] = a->pos[i];
        g |= 1u << i;
    }
    for (size_t k = 0; k < a->nkw; k++) {
        int i = find_name(names, nnames, a->kw[k]->name, a->kw[k]->name_len);
        if (i < 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "%s() got an unexpected keyword argument '%.*s'", fn,
                               (int)LP_MIN(a->kw[k]->name_len, 64), a->kw[k]->name);
        if (g & (1u << i))
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "%s() got multiple values for argument '%s'", fn,
                               names[i]);
        slots[i] = a->kwv[k];
        g |= 1u << i;
    }
    if (given)
        *given = g;
    return LP_OK;
}

static int want_str(lp__ct_ctx *c, const lp__node *at, lp__val v,
                    const char *what) {
    if (v.t == LP__V_STR)
        return LP_OK;
    if (v.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, v);
    return lp__ct_fail(c, at, LP_ERR_INVALID, "%s must be str, not %s", what,
                       lp__ct_type_name(v));
}

static int want_int(lp__ct_ctx *c, const lp__node *at, lp__val v,
                    const char *what, int64_t *out) {
    if (v.t == LP__V_INT || v.t == LP__V_BOOL) {
        *out = v.t == LP__V_BOOL ? (int64_t)v.u.b : v.u.i;
        return LP_OK;
    }
    if (v.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, v);
    return lp__ct_fail(c, at, LP_ERR_INVALID,
                       "%s: '%s' object cannot be interpreted as an integer", what,
                       lp__ct_type_name(v));
}

static lp__val undef_msg(const char *msg) {
    lp__val u = lp__v_undef();
    u.hint = LP__U_MESSAGE;
    u.u.s.p = msg;
    u.u.s.n = strlen(msg);
    return u;
}

static lp__val markup(lp__val s) {
    s.hint = 1;
    return s;
}

/* ---- string helpers ---- */

typedef uint32_t (*cp_map_fn)(uint32_t cp, bool *prev_cased);

static bool is_cased(uint32_t cp) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL ||
           k == UTF8PROC_CATEGORY_LT;
}
static uint32_t up(uint32_t cp) { return (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp); }
static uint32_t low(uint32_t cp) { return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp); }
static uint32_t tit(uint32_t cp) { return (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp); }

enum { CASE_UPPER, CASE_LOWER, CASE_SWAP, CASE_CAPITALIZE, CASE_PYTITLE,
       CASE_JTITLE };

static bool jtitle_sep(uint32_t cp) {
    return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' ||
           lp__ct_py_isspace(cp);
}

/* Python's full case mappings that are not one code point to one (the
 * unconditional part of SpecialCasing.txt that matters in practice). */
static const struct {
    uint32_t cp;
    const char *upper, *title;
} special_case[] = {
    {0xDF, "SS", "Ss"},         {0xFB00, "FF", "Ff"},   {0xFB01, "FI", "Fi"},
    {0xFB02, "FL", "Fl"},       {0xFB03, "FFI", "Ffi"}, {0xFB04, "FFL", "Ffl"},
    {0xFB05, "ST", "St"},       {0xFB06, "ST", "St"},   {0x149, "\xca\xbcN", "\xca\xbcN"},
    {0x1F0, "J\xcc\x8c", "J\xcc\x8c"}, {0x587, "\xd4\xb5\xd5\x92", "\xd4\xb5\xd6\x82"},
};

static const char *special(uint32_t cp, bool title) {
    for (size_t i = 0; i < LP_ARRAY_LEN(special_case); i++)
        if (special_case[i].cp == cp)
            return title ? special_case[i].title : special_case[i].upper;
    return NULL;
}

static bool is_letter(uint32_t cp) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

/* Lowercase of capital sigma: final form at the end of a word. */
static uint32_t lower_sigma(const char *p, size_t n, size_t i, size_t len) {
    bool before = false, after = false;
    if (i > 0) {
        size_t st = i - 1;
        while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80)
            st--;
        uint32_t pc;
        lp__ct_utf8_dec(p + st, i - st, &pc);
        before = is_letter(pc);
    }
    if (i + len < n) {
        uint32_t nc;
        lp__ct_utf8_dec(p + i + len, n - i - len, &nc);
        after = is_letter(nc);
    }
    return before && !after ? 0x3C2 : 0x3C3;
}

static int map_case(lp__ct_ctx *c, lp__val s, int mode, lp__val *out) {
    TRY(lp__ct_charge(c, s.u.s.n / 16));
    char *o = lp__ct_alloc_array(&c->arena, s.u.s.n + 1, 3); /* maps can grow */
    if (!o)
        return lp__ct_oom(c);
    size_t k = 0, i = 0;
    bool first = true, prev_cased = false, prev_sep = true;
    while (i < s.u.s.n) {
        uint32_t cp, m;
        size_t len = lp__ct_utf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        bool to_upper = false, to_title = false;
        switch (mode) {
        case CASE_UPPER: to_upper = true; break;
        case CASE_LOWER: break;
        case CASE_SWAP: to_upper = up(cp) != cp || special(cp, false); break;
        case CASE_CAPITALIZE: to_title = first; break;
        case CASE_PYTITLE:
            to_title = !prev_cased;
            prev_cased = is_cased(cp);
            break;
        default: /* Jinja's title filter: word starts after - ( { [ < or spaces */
            to_upper = prev_sep;
            prev_sep = jtitle_sep(cp);
            break;
        }
        first = false;
        const char *sp = (to_upper || to_title) ? special(cp, to_title) : NULL;
        if (sp) {
            size_t sl = strlen(sp);
            memcpy(o + k, sp, sl);
            k += sl;
        } else if (!to_upper && !to_title && cp == 0x130) { /* İ -> i + dot */
            memcpy(o + k, "i\xcc\x87", 3);
            k += 3;
        } else {
            if (to_upper)
                m = up(cp);
            else if (to_title)
                m = tit(cp);
            else if (cp == 0x3A3)
                m = lower_sigma(s.u.s.p, s.u.s.n, i, len);
            else
                m = low(cp);
            k += lp__ct_utf8_enc(m, o + k);
        }
        i += len;
    }
    o[k] = '\0';
    *out = lp__v_str(o, k);
    return LP_OK;
}

static bool in_chars(uint32_t cp, lp__val chars) {
    size_t i = 0;
    while (i < chars.u.s.n) {
        uint32_t x = 0;
        i += lp__ct_utf8_dec(chars.u.s.p + i, chars.u.s.n - i, &x);
        if (x == cp)
            return true;
    }
    return false;
}

/* str.strip/lstrip/rstrip; chars NONE = whitespace. */
static lp__val do_strip(lp__val s, lp__val chars, bool left, bool right) {
    const char *p = s.u.s.p;
    size_t a = 0, b = s.u.s.n;
    bool ws = chars.t != LP__V_STR;
    if (left) {
        while (a < b) {
            uint32_t cp = 0;
            size_t k = lp__ct_utf8_dec(p + a, b - a, &cp);
            if (ws ? !lp__ct_py_isspace(cp) : !in_chars(cp, chars))
                break;
            a += k;
        }
    }
    if (right) {
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80)
                st--;
            uint32_t cp = 0;
            lp__ct_utf8_dec(p + st, b - st, &cp);
            if (ws ? !lp__ct_py_isspace(cp) : !in_chars(cp, chars))
                break;
            b = st;
        }
    }
    return lp__v_str(p + a, b - a);
}

static int do_replace(lp__ct_ctx *c, lp__val s, lp__val old, lp__val nw,
                      int64_t count, lp__val *out) {
    TRY(lp__ct_charge(c, s.u.s.n / 64));
    if (count == 0 || (old.u.s.n > 0 && old.u.s.n > s.u.s.n)) {
        *out = s;
        return LP_OK;
    }
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = LP_OK;
    int64_t done = 0;
    size_t i = 0;
    if (old.u.s.n == 0) { /* insert between every code point */
        while (!rc && (count < 0 || done < count)) {
            rc = lp__ct_buf_put(c, &b, nw.u.s.p, nw.u.s.n);
            done++;
            if (i >= s.u.s.n)
                break;
            uint32_t cp = 0;
            size_t k = lp__ct_utf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
            if (!rc)
                rc = lp__ct_buf_put(c, &b, s.u.s.p + i, k);
            i += k;
        }
    } else {
        while (!rc && i <= s.u.s.n && (count < 0 || done < count)) {
            const char *f = memmem(s.u.s.p + i, s.u.s.n - i, old.u.s.p, old.u.s.n);
            if (!f)
                break;
            size_t at = (size_t)(f - s.u.s.p);
            rc = lp__ct_buf_put(c, &b, s.u.s.p + i, at - i);
            if (!rc)
                rc = lp__ct_buf_put(c, &b, nw.u.s.p, nw.u.s.n);
            i = at + old.u.s.n;
            done++;
        }
    }
    if (!rc && i < s.u.s.n)
        rc = lp__ct_buf_put(c, &b, s.u.s.p + i, s.u.s.n - i);
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

/* Python str.split / rsplit. */
static int do_split(lp__ct_ctx *c, const lp__node *at, lp__val s, lp__val sep,
                    int64_t maxsplit, bool from_right, lp__val *out) {
    TRY(lp__ct_charge(c, s.u.s.n / 16));
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
    lp__ct_seq *l = out->u.seq;
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (sep.t == LP__V_NONE) {
        /* collect whitespace-separated words, honouring maxsplit */
        lp__val words;
        TRY(lp__ct_new_seq(c, LP__V_LIST, 0, &words));
        if (!from_right) {
            size_t i = lp__ct_space_prefix(p, n);
            int64_t splits = 0;
            while (i < n) {
                if (maxsplit >= 0 && splits >= maxsplit) { /* rest, as is */
                    TRY(lp__ct_seq_push(c, l, lp__v_str(p + i, n - i)));
                    return LP_OK;
                }
                size_t j = i;
                while (j < n) {
                    uint32_t cp = 0;
                    size_t k = lp__ct_utf8_dec(p + j, n - j, &cp);
                    if (lp__ct_py_isspace(cp))
                        break;
                    j += k;
                }
                TRY(lp__ct_seq_push(c, l, lp__v_str(p + i, j - i)));
                splits++;
                i = j + lp__ct_space_prefix(p + j, n - j);
            }
            return LP_OK;
        }
        size_t e = n - lp__ct_space_suffix(p, n);
        int64_t splits = 0;
        while (e > 0) {
            if (maxsplit >= 0 && splits >= maxsplit) { /* rest, as is */
                TRY(lp__ct_seq_push(c, words.u.seq, lp__v_str(p, e)));
                break;
            }
            size_t j = e;
            while (j > 0) {
                size_t st = j - 1;
                while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80)
                    st--;
                uint32_t cp = 0;
                lp__ct_utf8_dec(p + st, j - st, &cp);
                if (lp__ct_py_isspace(cp))
                    break;
                j = st;
            }
            TRY(lp__ct_seq_push(c, words.u.seq, lp__v_str(p + j, e - j)));
            splits++;
            e = j - lp__ct_space_suffix(p, j);
        }
        for (size_t k = words.u.seq->n; k > 0; k--)
            TRY(lp__ct_seq_push(c, l, words.u.seq->v[k - 1]));
        return LP_OK;
    }
    TRY(want_str(c, at, sep, "separator"));
    size_t m = sep.u.s.n;
    if (m == 0)
        return lp__ct_fail(c, at, LP_ERR_INVALID, "empty separator");
    if (!from_right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *f = (maxsplit < 0 || splits < maxsplit)
                                ? memmem(p + i, n - i, sep.u.s.p, m)
                                : NULL;
            if (!f) {
                TRY(lp__ct_seq_push(c, l, lp__v_str(p + i, n - i)));
                return LP_OK;
            }
            size_t pos = (size_t)(f - p);
            TRY(lp__ct_seq_push(c, l, lp__v_str(p + i, pos - i)));
            i = pos + m;
            splits++;
        }
    }
    lp__val parts;
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, &parts));
    size_t e = n;
    int64_t splits = 0;
    for (;;) {
        size_t found = SIZE_MAX;
        if ((maxsplit < 0 || splits < maxsplit) && e >= m) {
            for (size_t j = e - m + 1; j > 0; j--) {
                if (memcmp(p + j - 1, sep.u.s.p, m) == 0) {
                    found = j - 1;
                    break;
                }
            }
        }
        if (found == SIZE_MAX) {
            TRY(lp__ct_seq_push(c, parts.u.seq, lp__v_str(p, e)));
            break;
        }
        TRY(lp__ct_seq_push(c, parts.u.seq, lp__v_str(p + found + m, e - found - m)));
        e = found;
        splits++;
    }
    for (size_t k = parts.u.seq->n; k > 0; k--)
        TRY(lp__ct_seq_push(c, l, parts.u.seq->v[k - 1]));
    return LP_OK;
}

/* Python str.splitlines boundaries; *blen = bytes of the break (0: none). */
static size_t line_break_at(const char *p, size_t n, size_t i, size_t *blen) {
    uint32_t cp = 0;
    size_t k = lp__ct_utf8_dec(p + i, n - i, &cp);
    *blen = 0;
    if (cp == '\r') {
        *blen = i + 1 < n && p[i + 1] == '\n' ? 2 : 1;
    } else if (cp == '\n' || cp == 0x0B || cp == 0x0C || cp == 0x1C ||
               cp == 0x1D || cp == 0x1E || cp == 0x85 || cp == 0x2028 ||
               cp == 0x2029) {
        *blen = k;
    }
    return k;
}

static int do_splitlines(lp__ct_ctx *c, lp__val s, bool keepends, lp__val *out) {
    TRY(lp__ct_charge(c, s.u.s.n / 16));
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, start = 0, i = 0;
    while (i < n) {
        size_t blen, k = line_break_at(p, n, i, &blen);
        if (blen) {
            TRY(lp__ct_seq_push(c, out->u.seq,
                                lp__v_str(p + start, i - start + (keepends ? blen : 0))));
            i += blen;
            start = i;
        } else {
            i += k;
        }
    }
    if (start < n)
        TRY(lp__ct_seq_push(c, out->u.seq, lp__v_str(p + start, n - start)));
    return LP_OK;
}

/* Numeric_Type=Digit characters that are not Nd (superscripts, circled
 * digits): Python's isdigit() accepts them. */
static bool is_other_digit(uint32_t cp) {
    static const uint32_t r[][2] = {
        {0xB2, 0xB3}, {0xB9, 0xB9}, {0x2070, 0x2070}, {0x2074, 0x2079},
        {0x2080, 0x2089}, {0x2460, 0x2468}, {0x2474, 0x247C}, {0x2488, 0x2490},
        {0x24EA, 0x24EA}, {0x24F5, 0x24FD}, {0x24FF, 0x24FF}, {0x2776, 0x277E},
        {0x2780, 0x2788}, {0x278A, 0x2792}, {0x1F100, 0x1F10A}};
    for (size_t i = 0; i < LP_ARRAY_LEN(r); i++)
        if (cp >= r[i][0] && cp <= r[i][1])
            return true;
    return false;
}

static bool str_pred(lp__val s, int id) {
    if (s.u.s.n == 0)
        return false;
    bool any_cased = false;
    size_t i = 0;
    while (i < s.u.s.n) {
        uint32_t cp = 0;
        i += lp__ct_utf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
        utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
        bool alpha = k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
        bool num = k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
        switch (id) {
        case M_ISDIGIT:
            if (k != UTF8PROC_CATEGORY_ND && !is_other_digit(cp))
                return false;
            break;
        case M_ISALPHA: if (!alpha) return false; break;
        case M_ISALNUM: if (!alpha && !num) return false; break;
        case M_ISSPACE: if (!lp__ct_py_isspace(cp)) return false; break;
        case M_ISUPPER:
            if (k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT)
                return false;
            if (k == UTF8PROC_CATEGORY_LU)
                any_cased = true;
            break;
        default: /* M_ISLOWER */
            if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LT)
                return false;
            if (k == UTF8PROC_CATEGORY_LL)
                any_cased = true;
            break;
        }
    }
    return (id == M_ISUPPER || id == M_ISLOWER) ? any_cased : true;
}

static int html_escape(lp__ct_ctx *c, lp__val s, lp__val *out) {
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = LP_OK;
    size_t run = 0;
    for (size_t i = 0; i < s.u.s.n && !rc; i++) {
        const char *e = NULL;
        switch (s.u.s.p[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&#34;"; break;
        case '\'': e = "&#39;"; break;
        default: run++; continue;
        }
        rc = lp__ct_buf_put(c, &b, s.u.s.p + i - run, run);
        run = 0;
        if (!rc)
            rc = lp__ct_buf_put(c, &b, e, strlen(e));
    }
    if (!rc)
        rc = lp__ct_buf_put(c, &b, s.u.s.p + s.u.s.n - run, run);
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    TRY(lp__ct_buf_to_str(c, &b, out));
    *out = markup(*out);
    return LP_OK;
}

/* ---- printf-style formatting: str % args ---- */

int lp__ct_percent_format(lp__ct_ctx *c, const lp__node *at, lp__val fmt,
                          lp__val args, lp__val *out) {
    bool tuple = args.t == LP__V_TUPLE;
    bool mapping = !tuple && args.t != LP__V_STR &&
                   (args.t == LP__V_DICT || args.t == LP__V_LIST || args.t == LP__V_RANGE);
    int64_t arglen = tuple ? (int64_t)args.u.seq->n : -1, argidx = tuple ? 0 : -2;
    const char *p = fmt.u.s.p;
    size_t n = fmt.u.s.n, i = 0;
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = lp__ct_charge(c, n / 64);
    while (!rc && i < n) {
        const char *pct = memchr(p + i, '%', n - i);
        size_t end = pct ? (size_t)(pct - p) : n;
        rc = lp__ct_buf_put(c, &b, p + i, end - i);
        if (rc || !pct)
            break;
        i = end + 1;
        lp__val v = lp__v_undef();
        bool have = false;
        if (i < n && p[i] == '(') {
            const char *close = memchr(p + i, ')', n - i);
            if (!close || !mapping || args.t != LP__V_DICT) {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID, close ? "format requires a mapping"
                                                              : "incomplete format key");
                break;
            }
            lp__ct_dent *e = lp__ct_dict_find_str(args.u.d, p + i + 1, (size_t)(close - p) - i - 1);
            if (!e) {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID, "KeyError: '%.*s'",
                                 (int)LP_MIN((size_t)(close - p) - i - 1, 64), p + i + 1);
                break;
            }
            v = e->v;
            have = true;
            i = (size_t)(close - p) + 1;
        }
        bool left = false, zero = false, plus = false, space = false;
        while (i < n && strchr("-0+ #", p[i]) && p[i]) {
            left |= p[i] == '-';
            zero |= p[i] == '0';
            plus |= p[i] == '+';
            space |= p[i] == ' ';
            i++;
        }
        int width = 0, prec = -1;
        while (i < n && p[i] >= '0' && p[i] <= '9' && width < 100000)
            width = width * 10 + (p[i++] - '0');
        if (i < n && p[i] == '.') {
            prec = 0;
            i++;
            while (i < n && p[i] >= '0' && p[i] <= '9' && prec < 100000)
                prec = prec * 10 + (p[i++] - '0');
        }
        if (i >= n) {
            rc = lp__ct_fail(c, at, LP_ERR_INVALID, "incomplete format");
            break;
        }
        char type = p[i++];
        if (type == '%') {
            rc = lp__ct_buf_putc(c, &b, '%');
            continue;
        }
        if (!have) {
            if (arglen < 0) {
                if (argidx == -1) {
                    rc = lp__ct_fail(c, at, LP_ERR_INVALID,
                                     "not enough arguments for format string");
                    break;
                }
                argidx = -1;
                v = args;
            } else if (argidx < arglen) {
                v = args.u.seq->v[argidx++];
            } else {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID,
                                 "not enough arguments for format string");
                break;
            }
        }
        char num[400];
        lp__val sv = lp__v_str("", 0);
        switch (type) {
        case 's':
        case 'r':
        case 'a':
            if (type == 's') {
                rc = lp__ct_to_str(c, v, &sv);
            } else {
                lp__ct_buf rb;
                lp__ct_buf_scratch(c, &rb);
                rc = lp__ct_write_repr(c, &rb, v, 0);
                if (!rc)
                    rc = lp__ct_buf_to_str(c, &rb, &sv);
                else
                    lp__ct_buf_free(&rb);
            }
            if (!rc && prec >= 0) {
                size_t off = 0;
                for (int q = 0; q < prec && off < sv.u.s.n; q++) {
                    uint32_t cp;
                    off += lp__ct_utf8_dec(sv.u.s.p + off, sv.u.s.n - off, &cp);
                }
                sv.u.s.n = off;
            }
            zero = false;
            break;
        case 'd':
        case 'i':
        case 'f':
        case 'F':
        case 'e':
        case 'E':
        case 'g':
        case 'G':
        case 'x':
        case 'X':
        case 'o': {
            if (!lp__v_is_num(v)) {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID, "%%%c format: a real number is required, not %s",
                                 type, lp__ct_type_name(v));
                break;
            }
            bool integral = strchr("dixXo", type) != NULL;
            if (integral && v.t == LP__V_FLOAT && (type != 'd' && type != 'i')) {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID, "%%%c format: an integer is required, not float", type);
                break;
            }
            char spec[16];
            size_t sk = 0;
            spec[sk++] = '%';
            if (plus)
                spec[sk++] = '+';
            else if (space)
                spec[sk++] = ' ';
            int len;
            if (integral) {
                int64_t iv = v.t == LP__V_FLOAT ? (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18 ? (int64_t)v.u.f : 0)
                             : v.t == LP__V_BOOL ? (int64_t)v.u.b : v.u.i;
                memcpy(spec + sk, "ll", 2);
                sk += 2;
                spec[sk++] = type == 'i' ? 'd' : type;
                spec[sk] = '\0';
                len = snprintf(num, sizeof num, spec, (long long)iv);
            } else {
                double dv = v.t == LP__V_FLOAT ? v.u.f : v.t == LP__V_BOOL ? (double)v.u.b : (double)v.u.i;
                spec[sk++] = '.';
                spec[sk++] = '*';
                spec[sk++] = type;
                spec[sk] = '\0';
                len = snprintf(num, sizeof num, spec, prec < 0 ? 6 : LP_MIN(prec, 300), dv);
            }
            if (len < 0 || (size_t)len >= sizeof num) {
                rc = lp__ct_fail(c, at, LP_ERR_UNSUPPORTED, "%% format: number too long");
                break;
            }
            sv = lp__v_str(num, (size_t)len);
            break;
        }
        default:
            rc = lp__ct_fail(c, at, LP_ERR_UNSUPPORTED, "unsupported format character '%c'", type);
            break;
        }
        if (rc)
            break;
        size_t vis = lp__ct_utf8_count(sv.u.s.p, sv.u.s.n);
        size_t pad = (size_t)width > vis ? (size_t)width - vis : 0;
        if (pad > 1 << 20) {
            rc = lp__ct_fail(c, at, LP_ERR_LIMIT, "format width too large");
            break;
        }
        if (!left && zero && pad && sv.u.s.n && (sv.u.s.p[0] == '-' || sv.u.s.p[0] == '+' || sv.u.s.p[0] == ' ')) {
            rc = lp__ct_buf_putc(c, &b, sv.u.s.p[0]);
            sv.u.s.p++;
            sv.u.s.n--;
        }
        for (size_t q = 0; !rc && !left && q < pad; q++)
            rc = lp__ct_buf_putc(c, &b, zero ? '0' : ' ');
        if (!rc)
            rc = lp__ct_buf_put(c, &b, sv.u.s.p, sv.u.s.n);
        for (size_t q = 0; !rc && left && q < pad; q++)
            rc = lp__ct_buf_putc(c, &b, ' ');
    }
    if (!rc && argidx < arglen && !mapping)
        rc = lp__ct_fail(c, at, LP_ERR_INVALID,
                         "not all arguments converted during string formatting");
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

/* ---- attribute paths (Jinja's make_attrgetter) ---- */

static int attr_path(lp__ct_ctx *c, const lp__node *at, lp__val item,
                     lp__val attr, lp__val *out) {
    if (attr.t == LP__V_INT) {
        return lp__ct_getitem(c, at, item, attr, out);
    }
    TRY(want_str(c, at, attr, "attribute"));
    const char *p = attr.u.s.p;
    size_t n = attr.u.s.n, i = 0;
    lp__val v = item;
    for (;;) {
        const char *dot = memchr(p + i, '.', n - i);
        size_t end = dot ? (size_t)(dot - p) : n;
        lp__val key = lp__v_str(p + i, end - i);
        /* integer parts index: "0" -> 0 */
        bool digits = end > i;
        int64_t iv = 0;
        for (size_t k = i; k < end && digits; k++) {
            if (p[k] < '0' || p[k] > '9' || iv > INT64_MAX / 10 - 9)
                digits = false;
            else
                iv = iv * 10 + (p[k] - '0');
        }
        if (digits)
            key = lp__v_int(iv);
        TRY(lp__ct_getitem(c, at, v, key, &v));
        if (!dot)
            break;
        i = end + 1;
    }
    *out = v;
    return LP_OK;
}

static int lower_if_str(lp__ct_ctx *c, lp__val v, lp__val *out) {
    if (v.t != LP__V_STR) {
        *out = v;
        return LP_OK;
    }
    return map_case(c, v, CASE_LOWER, out);
}

/* Key of an item for sort/unique/min/max: attribute path (comma separated
 * for sort), lowercased unless case_sensitive. */
static int item_key(lp__ct_ctx *c, const lp__node *at, lp__val item,
                    lp__val attr, bool multi, bool case_sensitive, lp__val *out) {
    lp__val v = item;
    if (attr.t == LP__V_STR && multi && memchr(attr.u.s.p, ',', attr.u.s.n)) {
        lp__val tup;
        TRY(lp__ct_new_seq(c, LP__V_TUPLE, 0, &tup));
        const char *p = attr.u.s.p;
        size_t n = attr.u.s.n, i = 0;
        for (;;) {
            const char *comma = memchr(p + i, ',', n - i);
            size_t end = comma ? (size_t)(comma - p) : n;
            lp__val part;
            TRY(attr_path(c, at, item, lp__v_str(p + i, end - i), &part));
            if (!case_sensitive)
                TRY(lower_if_str(c, part, &part));
            TRY(lp__ct_seq_push(c, tup.u.seq, part));
            if (!comma)
                break;
            i = end + 1;
        }
        *out = tup;
        return LP_OK;
    }
    if (attr.t != LP__V_NONE && attr.t != LP__V_UNDEF)
        TRY(attr_path(c, at, item, attr, &v));
    if (!case_sensitive)
        TRY(lower_if_str(c, v, &v));
    *out = v;
    return LP_OK;
}

/* ---- tojson ---- */

static int to_json(lp__ct_ctx *c, const lp__node *at, lp__val v,
                   lp__ct_args *a, lp__val *out) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators",
                                        "sort_keys"};
    lp__val s[4] = {lp__v_bool(false), lp__v_none(), lp__v_none(), lp__v_bool(false)};
    TRY(bind(c, at, "tojson", a, names, 4, s, NULL));
    lp__ct_json_opts o;
    memset(&o, 0, sizeof o);
    o.ensure_ascii = lp__ct_truthy(s[0]);
    o.sort_keys = lp__ct_truthy(s[3]);
    char *spaces = NULL;
    if (s[1].t == LP__V_STR) {
        o.has_indent = true;
        o.indent = s[1].u.s.p;
        o.indent_len = s[1].u.s.n;
    } else if (s[1].t != LP__V_NONE) {
        int64_t w = 0;
        TRY(want_int(c, at, s[1], "indent", &w));
        if (w < 0)
            w = 0;
        if (w > 4096)
            return lp__ct_fail(c, at, LP_ERR_LIMIT, "tojson indent too large");
        spaces = lp__ct_alloc(&c->arena, (size_t)w + 1);
        if (!spaces)
            return lp__ct_oom(c);
        memset(spaces, ' ', (size_t)w);
        o.has_indent = true;
        o.indent = spaces;
        o.indent_len = (size_t)w;
    }
    o.item_sep = o.has_indent ? "," : ", ";
    o.item_sep_len = strlen(o.item_sep);
    o.key_sep = ": ";
    o.key_sep_len = 2;
    if (s[2].t != LP__V_NONE) {
        if (!lp__v_is_seq(s[2]) || s[2].u.seq->n != 2 ||
            s[2].u.seq->v[0].t != LP__V_STR || s[2].u.seq->v[1].t != LP__V_STR)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "tojson separators must be a pair of strings");
        o.item_sep = s[2].u.seq->v[0].u.s.p;
        o.item_sep_len = s[2].u.seq->v[0].u.s.n;
        o.key_sep = s[2].u.seq->v[1].u.s.p;
        o.key_sep_len = s[2].u.seq->v[1].u.s.n;
    }
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = lp__ct_write_json(c, at, &b, v, &o, 0, 0);
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

/* ---- numbers from strings (Python int()/float()) ---- */

static bool parse_py_int(lp__val s, int64_t base, int64_t *out) {
    lp__val t = do_strip(s, lp__v_none(), true, true);
    const char *p = t.u.s.p;
    size_t n = t.u.s.n, i = 0;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-'))
        neg = p[i++] == '-';
    if (base == 0 || base == 16 || base == 8 || base == 2) {
        if (i + 1 < n && p[i] == '0') {
            char k = (char)(p[i + 1] | 0x20);
            int64_t b = k == 'x' ? 16 : k == 'o' ? 8 : k == 'b' ? 2 : 0;
            if (b && (base == 0 || base == b)) {
                base = b;
                i += 2;
                if (i < n && p[i] == '_')
                    i++;
            }
        }
        if (base == 0)
            base = 10;
    }
    if (base < 2 || base > 36 || i >= n)
        return false;
    uint64_t v = 0;
    bool prev_us = true;
    for (; i < n; i++) {
        if (p[i] == '_') {
            if (prev_us)
                return false;
            prev_us = true;
            continue;
        }
        int d = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
                : (p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'z' ? (p[i] | 0x20) - 'a' + 10
                                                             : 99;
        if (d >= base)
            return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return false;
        v = v * (uint64_t)base + (uint64_t)d;
        prev_us = false;
    }
    if (prev_us || v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool parse_py_float(lp__val s, double *out) {
    lp__val t = do_strip(s, lp__v_none(), true, true);
    char buf[128];
    size_t k = 0;
    if (t.u.s.n == 0 || t.u.s.n >= sizeof buf)
        return false;
    for (size_t i = 0; i < t.u.s.n; i++) {
        char ch = t.u.s.p[i];
        if (ch == '_') {
            if (i == 0 || i + 1 == t.u.s.n || !(t.u.s.p[i - 1] >= '0' && t.u.s.p[i - 1] <= '9') ||
                !(t.u.s.p[i + 1] >= '0' && t.u.s.p[i + 1] <= '9'))
                return false;
            continue;
        }
        if ((ch == 'x' || ch == 'X' || ch == 'p' || ch == 'P') && !(k > 0 && (buf[k - 1] | 0x20) == 'n'))
            return false; /* no hex floats */
        buf[k++] = ch;
    }
    buf[k] = '\0';
    char lower[128];
    for (size_t i = 0; i <= k; i++)
        lower[i] = (char)(buf[i] >= 'A' && buf[i] <= 'Z' ? buf[i] | 0x20 : buf[i]);
    const char *q = lower[0] == '+' || lower[0] == '-' ? lower + 1 : lower;
    if (strcmp(q, "inf") == 0 || strcmp(q, "infinity") == 0 || strcmp(q, "nan") == 0) {
        double v = q[0] == 'n' ? NAN : INFINITY;
        *out = lower[0] == '-' ? -v : v;
        return true;
    }
    for (const char *r = q; *r; r++)
        if (!((*r >= '0' && *r <= '9') || *r == '.' || *r == 'e' || *r == '+' || *r == '-'))
            return false;
    char *end;
    *out = strtod(buf, &end);
    return *end == '\0';
}

/* Python round(x, ndigits): correctly rounded via the decimal string. */
static double py_round(double x, int64_t nd) {
    if (!isfinite(x))
        return x;
    if (nd == 0)
        return nearbyint(x);
    if (nd > 300 || nd < -300)
        return nd > 0 ? x : 0.0 * x;
    if (nd < 0) {
        double p = pow(10.0, (double)-nd);
        double y = nearbyint(x / p) * p;
        return y;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%.*f", (int)nd, x);
    return strtod(buf, NULL);
}

/* ---- filters ---- */

static int iter_list(lp__ct_ctx *c, const lp__node *at, lp__val v, lp__val *out) {
    return lp__ct_to_list(c, at, v, out);
}

static int select_reject(lp__ct_ctx *c, const lp__node *at, lp__val v,
                         lp__ct_args *a, bool attr, bool select, lp__val *out) {
    if (!lp__ct_truthy(v)) /* Jinja: `if value:` before iterating */
        return lp__ct_new_seq(c, LP__V_LIST, 0, out);
    lp__val items;
    TRY(iter_list(c, at, v, &items));
    size_t off = 0;
    lp__val attrname = lp__v_none();
    if (attr) {
        if (a->npos < 1)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "Missing parameter for attribute name");
        attrname = a->pos[0];
        off = 1;
    }
    int test = -1;
    if (a->npos > off) {
        TRY(want_str(c, at, a->pos[off], "test name"));
        test = lp__ct_test_id(a->pos[off].u.s.p, a->pos[off].u.s.n);
        if (test < 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "No test named '%.*s'.",
                               (int)LP_MIN(a->pos[off].u.s.n, 64), a->pos[off].u.s.p);
        off++;
    }
    lp__ct_args rest = *a;
    rest.npos = a->npos > off ? a->npos - off : 0;
    rest.pos = rest.npos ? a->pos + off : NULL;
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
    TRY(lp__ct_charge(c, items.u.seq->n));
    for (size_t i = 0; i < items.u.seq->n; i++) {
        lp__val item = items.u.seq->v[i], x = item;
        if (attr)
            TRY(attr_path(c, at, item, attrname, &x));
        bool r = false;
        if (test >= 0)
            TRY(lp__ct_apply_test(c, at, test, x, &rest, &r));
        else
            r = lp__ct_truthy(x);
        if (r == select)
            TRY(lp__ct_seq_push(c, out->u.seq, item));
    }
    return LP_OK;
}

static int do_map(lp__ct_ctx *c, const lp__node *at, lp__val v, lp__ct_args *a,
                  lp__val *out) {
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
    if (!lp__ct_truthy(v))
        return LP_OK;
    lp__val items;
    TRY(iter_list(c, at, v, &items));
    TRY(lp__ct_charge(c, items.u.seq->n));
    if (a->npos == 0) {
        lp__val attr = lp__v_undef(), dflt = lp__v_none();
        bool have_attr = false;
        for (size_t k = 0; k < a->nkw; k++) {
            const lp__node *kw = a->kw[k];
            if (kw->name_len == 9 && memcmp(kw->name, "attribute", 9) == 0) {
                attr = a->kwv[k];
                have_attr = true;
            } else if (kw->name_len == 7 && memcmp(kw->name, "default", 7) == 0) {
                dflt = a->kwv[k];
            } else {
                return lp__ct_fail(c, at, LP_ERR_INVALID,
                                   "Unexpected keyword argument '%.*s'",
                                   (int)LP_MIN(kw->name_len, 64), kw->name);
            }
        }
        if (!have_attr)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "map requires a filter argument");
        for (size_t i = 0; i < items.u.seq->n; i++) {
            lp__val x;
            TRY(attr_path(c, at, items.u.seq->v[i], attr, &x));
            if (x.t == LP__V_UNDEF && dflt.t != LP__V_NONE)
                x = dflt;
            TRY(lp__ct_seq_push(c, out->u.seq, x));
        }
        return LP_OK;
    }
    TRY(want_str(c, at, a->pos[0], "filter name"));
    int f = lp__ct_filter_id(a->pos[0].u.s.p, a->pos[0].u.s.n);
    if (f < 0)
        return lp__ct_fail(c, at, LP_ERR_INVALID, "No filter named '%.*s'.",
                           (int)LP_MIN(a->pos[0].u.s.n, 64), a->pos[0].u.s.p);
    lp__ct_args rest = *a;
    rest.npos = a->npos - 1;
    rest.pos = rest.npos ? a->pos + 1 : NULL;
    for (size_t i = 0; i < items.u.seq->n; i++) {
        lp__val x;
        TRY(lp__ct_apply_filter(c, at, f, items.u.seq->v[i], &rest, &x));
        TRY(lp__ct_seq_push(c, out->u.seq, x));
    }
    return LP_OK;
}

static int do_sort(lp__ct_ctx *c, const lp__node *at, lp__val items,
                   lp__val attr, bool case_sensitive, bool reverse, bool multi,
                   lp__val *out) {
    size_t n = items.u.seq->n;
    lp__val *keys = lp__ct_alloc_array(&c->arena, n ? n : 1, sizeof *keys);
    if (!keys)
        return lp__ct_oom(c);
    for (size_t i = 0; i < n; i++)
        TRY(item_key(c, at, items.u.seq->v[i], attr, multi, case_sensitive, &keys[i]));
    size_t *perm;
    TRY(lp__ct_sort_perm(c, at, keys, n, reverse, &perm));
    TRY(lp__ct_new_seq(c, LP__V_LIST, n, out));
    for (size_t i = 0; i < n; i++)
        out->u.seq->v[i] = items.u.seq->v[perm[i]];
    out->u.seq->n = n;
    return LP_OK;
}

static int do_indent(lp__ct_ctx *c, const lp__node *at, lp__val s,
                     lp__ct_args *a, lp__val *out) {
    static const char *const names[] = {"width", "first", "blank"};
    lp__val sl[3] = {lp__v_int(4), lp__v_bool(false), lp__v_bool(false)};
    TRY(bind(c, at, "indent", a, names, 3, sl, NULL));
    lp__val ind;
    if (sl[0].t == LP__V_STR) {
        ind = sl[0];
    } else {
        int64_t w = 0;
        TRY(want_int(c, at, sl[0], "indent width", &w));
        if (w < 0)
            w = 0;
        if (w > 4096)
            return lp__ct_fail(c, at, LP_ERR_LIMIT, "indent width too large");
        char *sp = lp__ct_alloc(&c->arena, (size_t)w + 1);
        if (!sp)
            return lp__ct_oom(c);
        memset(sp, ' ', (size_t)w);
        ind = lp__v_str(sp, (size_t)w);
    }
    bool first = lp__ct_truthy(sl[1]), blank = lp__ct_truthy(sl[2]);
    /* s += "\n"; lines = s.splitlines() */
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = lp__ct_buf_put(c, &b, s.u.s.p, s.u.s.n);
    if (!rc)
        rc = lp__ct_buf_putc(c, &b, '\n');
    lp__val s2 = lp__v_str("", 0), lines;
    if (!rc)
        rc = lp__ct_buf_to_str(c, &b, &s2);
    else
        lp__ct_buf_free(&b);
    if (rc)
        return rc;
    TRY(do_splitlines(c, s2, false, &lines));
    lp__ct_buf_scratch(c, &b);
    if (first)
        rc = lp__ct_buf_put(c, &b, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; !rc && i < lines.u.seq->n; i++) {
        lp__val line = lines.u.seq->v[i];
        if (i) {
            rc = lp__ct_buf_putc(c, &b, '\n');
            if (!rc && (blank || line.u.s.n))
                rc = lp__ct_buf_put(c, &b, ind.u.s.p, ind.u.s.n);
        }
        if (!rc)
            rc = lp__ct_buf_put(c, &b, line.u.s.p, line.u.s.n);
    }
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

static int min_max(lp__ct_ctx *c, const lp__node *at, lp__val v, lp__ct_args *a,
                   bool is_max, lp__val *out) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    lp__val sl[2] = {lp__v_bool(false), lp__v_none()};
    TRY(bind(c, at, is_max ? "max" : "min", a, names, 2, sl, NULL));
    lp__val items;
    TRY(iter_list(c, at, v, &items));
    if (items.u.seq->n == 0) {
        *out = undef_msg("No aggregated item, sequence was empty.");
        return LP_OK;
    }
    bool cs = lp__ct_truthy(sl[0]);
    size_t best = 0;
    lp__val bk;
    TRY(item_key(c, at, items.u.seq->v[0], sl[1], false, cs, &bk));
    for (size_t i = 1; i < items.u.seq->n; i++) {
        lp__val k;
        int r = 0;
        TRY(item_key(c, at, items.u.seq->v[i], sl[1], false, cs, &k));
        TRY(lp__ct_cmp(c, at, is_max ? ">" : "<", k, bk, &r, 0));
        if (r == (is_max ? 1 : -1)) {
            best = i;
            bk = k;
        }
    }
    *out = items.u.seq->v[best];
    return LP_OK;
}

/* batch(linecount, fill_with) / slice(slices, fill_with): lists of lists. */
static int batch_slice(lp__ct_ctx *c, const lp__node *at, lp__val v,
                       lp__ct_args *a, bool batch, lp__val *out) {
    static const char *const bnames[] = {"linecount", "fill_with"};
    static const char *const snames[] = {"slices", "fill_with"};
    lp__val sl[2] = {lp__v_undef(), lp__v_none()};
    uint32_t given = 0;
    TRY(bind(c, at, batch ? "batch" : "slice", a, batch ? bnames : snames, 2, sl, &given));
    int64_t k = 0;
    if (!(given & 1))
        return lp__ct_fail(c, at, LP_ERR_INVALID, "%s() needs a count",
                           batch ? "batch" : "slice");
    TRY(want_int(c, at, sl[0], batch ? "linecount" : "slices", &k));
    lp__val items;
    TRY(iter_list(c, at, v, &items));
    size_t n = items.u.seq->n;
    bool fill = sl[1].t != LP__V_NONE;
    TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
    if (k <= 0) {
        if (batch || n == 0) /* Python: range() step 0 / division by zero */
            return lp__ct_fail(c, at, LP_ERR_INVALID, "%s count must be positive",
                               batch ? "batch" : "slice");
        return lp__ct_fail(c, at, LP_ERR_INVALID, "integer division or modulo by zero");
    }
    if (k > (int64_t)1 << 20)
        return lp__ct_fail(c, at, LP_ERR_LIMIT, "%s count too large", batch ? "batch" : "slice");
    TRY(lp__ct_charge(c, n + (uint64_t)k));
    if (batch) {
        lp__val cur = lp__v_none();
        for (size_t i = 0; i < n; i++) {
            if (i % (size_t)k == 0) {
                TRY(lp__ct_new_seq(c, LP__V_LIST, 0, &cur));
                TRY(lp__ct_seq_push(c, out->u.seq, cur));
            }
            TRY(lp__ct_seq_push(c, cur.u.seq, items.u.seq->v[i]));
        }
        if (fill && cur.t == LP__V_LIST)
            while (cur.u.seq->n < (size_t)k)
                TRY(lp__ct_seq_push(c, cur.u.seq, sl[1]));
        return LP_OK;
    }
    size_t per = n / (size_t)k, extra = n % (size_t)k, offset = 0;
    for (size_t s_no = 0; s_no < (size_t)k; s_no++) {
        size_t start = offset + s_no * per;
        if (s_no < extra)
            offset++;
        size_t end = offset + (s_no + 1) * per;
        lp__val part;
        TRY(lp__ct_new_seq(c, LP__V_LIST, 0, &part));
        for (size_t i = start; i < end && i < n; i++)
            TRY(lp__ct_seq_push(c, part.u.seq, items.u.seq->v[i]));
        if (fill && s_no >= extra)
            TRY(lp__ct_seq_push(c, part.u.seq, sl[1]));
        TRY(lp__ct_seq_push(c, out->u.seq, part));
    }
    return LP_OK;
}

static int unsupported(lp__ct_ctx *c, const lp__node *at, const char *what,
                       const char *name) {
    return lp__ct_fail(c, at, LP_ERR_UNSUPPORTED, "%s '%s' is not supported", what,
                       name);
}

int lp__ct_apply_filter(lp__ct_ctx *c, const lp__node *at, int id, lp__val v,
                        lp__ct_args *a, lp__val *out) {
    TRY(lp__ct_charge(c, 1));
    lp__val s, items;
    switch (id) {
    case F_ABS:
        if (v.t == LP__V_INT) {
            if (v.u.i == INT64_MIN)
                return lp__ct_fail(c, at, LP_ERR_RANGE, "integer overflow");
            *out = lp__v_int(v.u.i < 0 ? -v.u.i : v.u.i);
        } else if (v.t == LP__V_BOOL) {
            *out = lp__v_int(v.u.b);
        } else if (v.t == LP__V_FLOAT) {
            *out = lp__v_float(fabs(v.u.f));
        } else {
            return lp__ct_fail(c, at, LP_ERR_INVALID, "bad operand type for abs(): '%s'",
                               lp__ct_type_name(v));
        }
        return LP_OK;
    case F_ATTR: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "attr() takes one argument");
        TRY(want_str(c, at, a->pos[0], "attribute name"));
        if (v.t == LP__V_UNDEF)
            return lp__ct_undef_fail(c, at, v);
        lp__val name = a->pos[0];
        int mid = lp__ct_method_id(name.u.s.p, name.u.s.n);
        if (v.t == LP__V_NS || v.t == LP__V_LOOP || (mid >= 0 && lp__ct_has_method(v, mid)))
            return lp__ct_getattr(c, at, v, name.u.s.p, name.u.s.n, mid, out);
        lp__val u = lp__v_undef(); /* no item fallback: attributes only */
        u.hint = LP__U_ATTR;
        u.aux = v.t;
        u.u.s.p = name.u.s.p;
        u.u.s.n = name.u.s.n;
        *out = u;
        return LP_OK;
    }
    case F_BATCH:
    case F_SLICE:
        return batch_slice(c, at, v, a, id == F_BATCH, out);
    case F_CAPITALIZE:
        TRY(lp__ct_to_str(c, v, &s));
        return map_case(c, s, CASE_CAPITALIZE, out);
    case F_CENTER: {
        static const char *const names[] = {"width"};
        lp__val sl[1] = {lp__v_int(80)};
        TRY(bind(c, at, "center", a, names, 1, sl, NULL));
        int64_t w = 0;
        TRY(want_int(c, at, sl[0], "width", &w));
        TRY(lp__ct_to_str(c, v, &s));
        int64_t len = (int64_t)lp__ct_utf8_count(s.u.s.p, s.u.s.n);
        if (w <= len) {
            *out = s;
            return LP_OK;
        }
        if (w > 1 << 20)
            return lp__ct_fail(c, at, LP_ERR_LIMIT, "center width too large");
        int64_t marg = w - len, left = marg / 2 + (marg & w & 1);
        lp__ct_buf b;
        lp__ct_buf_scratch(c, &b);
        int rc = LP_OK;
        for (int64_t i = 0; i < left && !rc; i++)
            rc = lp__ct_buf_putc(c, &b, ' ');
        if (!rc)
            rc = lp__ct_buf_put(c, &b, s.u.s.p, s.u.s.n);
        for (int64_t i = 0; i < marg - left && !rc; i++)
            rc = lp__ct_buf_putc(c, &b, ' ');
        if (rc) {
            lp__ct_buf_free(&b);
            return rc;
        }
        return lp__ct_buf_to_str(c, &b, out);
    }
    case F_COUNT:
    case F_LENGTH: {
        int64_t n = lp__ct_len(v);
        if (n < 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "object of type '%s' has no len()",
                               lp__ct_type_name(v));
        TRY(lp__ct_charge(c, v.t == LP__V_STR ? v.u.s.n / 64 : 0));
        *out = lp__v_int(n);
        return LP_OK;
    }
    case F_D:
    case F_DEFAULT: {
        static const char *const names[] = {"default_value", "boolean"};
        lp__val sl[2] = {lp__v_str("", 0), lp__v_bool(false)};
        TRY(bind(c, at, "default", a, names, 2, sl, NULL));
        bool use = v.t == LP__V_UNDEF || (lp__ct_truthy(sl[1]) && !lp__ct_truthy(v));
        *out = use ? sl[0] : v;
        return LP_OK;
    }
    case F_DICTSORT: {
        static const char *const names[] = {"case_sensitive", "by", "reverse"};
        lp__val sl[3] = {lp__v_bool(false), lp__v_str("key", 3), lp__v_bool(false)};
        TRY(bind(c, at, "dictsort", a, names, 3, sl, NULL));
        if (v.t != LP__V_DICT)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "dictsort requires a mapping");
        TRY(want_str(c, at, sl[1], "by"));
        int pos = 0;
        if (sl[1].u.s.n == 3 && memcmp(sl[1].u.s.p, "key", 3) == 0)
            pos = 0;
        else if (sl[1].u.s.n == 5 && memcmp(sl[1].u.s.p, "value", 5) == 0)
            pos = 1;
        else
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "You can only sort by either \"key\" or \"value\"");
        TRY(lp__ct_new_seq(c, LP__V_LIST, v.u.d->n, &items));
        for (size_t i = 0; i < v.u.d->n; i++) {
            lp__val t;
            TRY(lp__ct_new_seq(c, LP__V_TUPLE, 2, &t));
            t.u.seq->v[0] = v.u.d->e[i].k;
            t.u.seq->v[1] = v.u.d->e[i].v;
            t.u.seq->n = 2;
            items.u.seq->v[i] = t;
        }
        items.u.seq->n = v.u.d->n;
        return do_sort(c, at, items, lp__v_int(pos), lp__ct_truthy(sl[0]),
                       lp__ct_truthy(sl[2]), false, out);
    }
    case F_E:
    case F_ESCAPE:
    case F_FORCEESCAPE:
        if (v.t == LP__V_STR && v.hint == 1 && id != F_FORCEESCAPE) {
            *out = v;
            return LP_OK;
        }
        TRY(lp__ct_to_str(c, v, &s));
        return html_escape(c, s, out);
    case F_FIRST:
        if (v.t == LP__V_STR || lp__v_is_seq(v) || v.t == LP__V_DICT ||
            v.t == LP__V_RANGE || v.t == LP__V_UNDEF) {
            int64_t n = lp__ct_len(v);
            if (n <= 0) {
                *out = undef_msg("No first item, sequence was empty.");
                return LP_OK;
            }
            if (v.t == LP__V_STR) {
                uint32_t cp = 0;
                size_t k = lp__ct_utf8_dec(v.u.s.p, v.u.s.n, &cp);
                *out = lp__v_str(v.u.s.p, k);
            } else {
                *out = lp__ct_seq_at(v, 0);
            }
            return LP_OK;
        }
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%s' object is not iterable",
                           lp__ct_type_name(v));
    case F_LAST:
        if (v.t == LP__V_STR || lp__v_is_seq(v) || v.t == LP__V_DICT ||
            v.t == LP__V_RANGE || v.t == LP__V_UNDEF) {
            int64_t n = lp__ct_len(v);
            if (n <= 0) {
                *out = undef_msg("No last item, sequence was empty.");
                return LP_OK;
            }
            if (v.t == LP__V_STR) {
                size_t st = v.u.s.n - 1;
                while (st > 0 && ((unsigned char)v.u.s.p[st] & 0xC0) == 0x80)
                    st--;
                *out = lp__v_str(v.u.s.p + st, v.u.s.n - st);
            } else {
                *out = lp__ct_seq_at(v, n - 1);
            }
            return LP_OK;
        }
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%s' object is not reversible",
                           lp__ct_type_name(v));
    case F_FLOAT: {
        if (v.t == LP__V_UNDEF) /* float(Undefined) raises */
            return lp__ct_undef_fail(c, at, v);
        static const char *const names[] = {"default"};
        lp__val sl[1] = {lp__v_float(0.0)};
        TRY(bind(c, at, "float", a, names, 1, sl, NULL));
        double d = 0;
        if (v.t == LP__V_FLOAT)
            *out = v;
        else if (v.t == LP__V_INT || v.t == LP__V_BOOL)
            *out = lp__v_float(v.t == LP__V_BOOL ? (double)v.u.b : (double)v.u.i);
        else if (v.t == LP__V_STR && parse_py_float(v, &d))
            *out = lp__v_float(d);
        else
            *out = sl[0];
        return LP_OK;
    }
    case F_INT: {
        if (v.t == LP__V_UNDEF) /* int(Undefined) raises */
            return lp__ct_undef_fail(c, at, v);
        static const char *const names[] = {"default", "base"};
        lp__val sl[2] = {lp__v_int(0), lp__v_int(10)};
        TRY(bind(c, at, "int", a, names, 2, sl, NULL));
        int64_t base = 10, iv = 0;
        double d = 0;
        TRY(want_int(c, at, sl[1], "base", &base));
        if (v.t == LP__V_INT || v.t == LP__V_BOOL) {
            *out = lp__v_int(v.t == LP__V_BOOL ? v.u.b : v.u.i);
        } else if (v.t == LP__V_STR && parse_py_int(v, base, &iv)) {
            *out = lp__v_int(iv);
        } else if ((v.t == LP__V_FLOAT && (d = v.u.f, true)) ||
                   (v.t == LP__V_STR && parse_py_float(v, &d))) {
            if (isfinite(d) && d > -9.2e18 && d < 9.2e18)
                *out = lp__v_int((int64_t)d);
            else
                *out = sl[0];
        } else {
            *out = sl[0];
        }
        return LP_OK;
    }
    case F_INDENT: /* s += "\n": only strings (and Markup) support it */
        if (v.t == LP__V_UNDEF)
            return lp__ct_undef_fail(c, at, v);
        if (v.t != LP__V_STR)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "unsupported operand type(s) for +=: '%s' and 'str'",
                               lp__ct_type_name(v));
        return do_indent(c, at, v, a, out);
    case F_ITEMS:
        if (v.t == LP__V_UNDEF)
            return lp__ct_new_seq(c, LP__V_LIST, 0, out);
        if (v.t != LP__V_DICT)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "Can only get item pairs from a mapping.");
        return lp__ct_call_method(c, at, v, M_ITEMS, &(lp__ct_args){0}, out);
    case F_JOIN: {
        static const char *const names[] = {"d", "attribute"};
        lp__val sl[2] = {lp__v_str("", 0), lp__v_none()};
        TRY(bind(c, at, "join", a, names, 2, sl, NULL));
        TRY(iter_list(c, at, v, &items));
        lp__val sep;
        TRY(lp__ct_to_str(c, sl[0], &sep));
        lp__ct_buf b;
        lp__ct_buf_scratch(c, &b);
        int rc = lp__ct_charge(c, items.u.seq->n);
        for (size_t i = 0; !rc && i < items.u.seq->n; i++) {
            lp__val x = items.u.seq->v[i];
            if (i)
                rc = lp__ct_buf_put(c, &b, sep.u.s.p, sep.u.s.n);
            if (!rc && sl[1].t != LP__V_NONE)
                rc = attr_path(c, at, x, sl[1], &x);
            if (!rc)
                rc = lp__ct_write_str(c, &b, x);
        }
        if (rc) {
            lp__ct_buf_free(&b);
            return rc;
        }
        return lp__ct_buf_to_str(c, &b, out);
    }
    case F_LIST:
        if (v.t == LP__V_LIST) { /* a copy, as list() makes */
            TRY(lp__ct_charge(c, v.u.seq->n));
            TRY(lp__ct_new_seq(c, LP__V_LIST, v.u.seq->n, out));
            if (v.u.seq->n)
                memcpy(out->u.seq->v, v.u.seq->v, v.u.seq->n * sizeof(lp__val));
            out->u.seq->n = v.u.seq->n;
            return LP_OK;
        }
        return iter_list(c, at, v, out);
    case F_LOWER:
    case F_UPPER:
        TRY(lp__ct_to_str(c, v, &s));
        return map_case(c, s, id == F_LOWER ? CASE_LOWER : CASE_UPPER, out);
    case F_TITLE:
        TRY(lp__ct_to_str(c, v, &s));
        return map_case(c, s, CASE_JTITLE, out);
    case F_MAP:
        return do_map(c, at, v, a, out);
    case F_MAX:
    case F_MIN:
        return min_max(c, at, v, a, id == F_MAX, out);
    case F_SELECT:
    case F_REJECT:
        return select_reject(c, at, v, a, false, id == F_SELECT, out);
    case F_SELECTATTR:
    case F_REJECTATTR:
        return select_reject(c, at, v, a, true, id == F_SELECTATTR, out);
    case F_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        lp__val sl[3] = {lp__v_undef(), lp__v_undef(), lp__v_none()};
        uint32_t given = 0;
        TRY(bind(c, at, "replace", a, names, 3, sl, &given));
        if ((given & 3) != 3)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "replace() requires old and new");
        lp__val old, nw;
        int64_t count = -1;
        TRY(lp__ct_to_str(c, v, &s));
        TRY(lp__ct_to_str(c, sl[0], &old));
        TRY(lp__ct_to_str(c, sl[1], &nw));
        if (sl[2].t != LP__V_NONE)
            TRY(want_int(c, at, sl[2], "count", &count));
        return do_replace(c, s, old, nw, count, out);
    }
    case F_REVERSE:
        if (v.t == LP__V_STR) {
            TRY(lp__ct_charge(c, v.u.s.n / 16));
            char *o = lp__ct_alloc(&c->arena, v.u.s.n + 1);
            if (!o)
                return lp__ct_oom(c);
            size_t i = 0;
            while (i < v.u.s.n) {
                uint32_t cp = 0;
                size_t k = lp__ct_utf8_dec(v.u.s.p + i, v.u.s.n - i, &cp);
                memcpy(o + v.u.s.n - i - k, v.u.s.p + i, k);
                i += k;
            }
            o[v.u.s.n] = '\0';
            *out = lp__v_str(o, v.u.s.n);
            return LP_OK;
        }
        TRY(iter_list(c, at, v, &items));
        TRY(lp__ct_new_seq(c, LP__V_LIST, items.u.seq->n, out));
        for (size_t i = 0; i < items.u.seq->n; i++)
            out->u.seq->v[i] = items.u.seq->v[items.u.seq->n - 1 - i];
        out->u.seq->n = items.u.seq->n;
        return LP_OK;
    case F_ROUND: {
        static const char *const names[] = {"precision", "method"};
        lp__val sl[2] = {lp__v_int(0), lp__v_str("common", 6)};
        TRY(bind(c, at, "round", a, names, 2, sl, NULL));
        int64_t prec = 0;
        TRY(want_int(c, at, sl[0], "precision", &prec));
        TRY(want_str(c, at, sl[1], "method"));
        if (!lp__v_is_num(v))
            return lp__ct_fail(c, at, LP_ERR_INVALID, "round() needs a number, not %s",
                               lp__ct_type_name(v));
        double x = v.t == LP__V_FLOAT ? v.u.f : v.t == LP__V_BOOL ? (double)v.u.b : (double)v.u.i;
        const char *m = sl[1].u.s.p;
        if (sl[1].u.s.n == 6 && memcmp(m, "common", 6) == 0) {
            if (v.t != LP__V_FLOAT && prec >= 0) { /* round(int, n) is the int */
                *out = lp__v_int(v.t == LP__V_BOOL ? v.u.b : v.u.i);
                return LP_OK;
            }
            *out = lp__v_float(py_round(x, prec));
        } else if ((sl[1].u.s.n == 4 && memcmp(m, "ceil", 4) == 0) ||
                   (sl[1].u.s.n == 5 && memcmp(m, "floor", 5) == 0)) {
            double p = pow(10.0, (double)LP_MAX(LP_MIN(prec, 300), -300));
            double y = m[0] == 'c' ? ceil(x * p) / p : floor(x * p) / p;
            *out = lp__v_float(y);
        } else {
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "method must be 'common', 'ceil' or 'floor'");
        }
        return LP_OK;
    }
    case F_SAFE:
        TRY(lp__ct_to_str(c, v, &s));
        *out = markup(s);
        return LP_OK;
    case F_SORT: {
        static const char *const names[] = {"reverse", "case_sensitive", "attribute"};
        lp__val sl[3] = {lp__v_bool(false), lp__v_bool(false), lp__v_none()};
        TRY(bind(c, at, "sort", a, names, 3, sl, NULL));
        TRY(iter_list(c, at, v, &items));
        return do_sort(c, at, items, sl[2], lp__ct_truthy(sl[1]), lp__ct_truthy(sl[0]),
                       true, out);
    }
    case F_STRING:
        if (v.t == LP__V_STR) {
            *out = v;
            return LP_OK;
        }
        return lp__ct_to_str(c, v, out);
    case F_SUM: {
        static const char *const names[] = {"attribute", "start"};
        lp__val sl[2] = {lp__v_none(), lp__v_int(0)};
        TRY(bind(c, at, "sum", a, names, 2, sl, NULL));
        TRY(iter_list(c, at, v, &items));
        lp__val acc = sl[1];
        for (size_t i = 0; i < items.u.seq->n; i++) {
            lp__val x = items.u.seq->v[i];
            if (sl[0].t != LP__V_NONE)
                TRY(attr_path(c, at, x, sl[0], &x));
            if (!lp__v_is_num(acc) || !lp__v_is_num(x))
                return lp__ct_fail(c, at, LP_ERR_INVALID,
                                   "unsupported operand type(s) for +: '%s' and '%s'",
                                   lp__ct_type_name(acc), lp__ct_type_name(x));
            if ((acc.t == LP__V_INT || acc.t == LP__V_BOOL) &&
                (x.t == LP__V_INT || x.t == LP__V_BOOL)) {
                int64_t r, p = acc.t == LP__V_BOOL ? acc.u.b : acc.u.i,
                           q = x.t == LP__V_BOOL ? x.u.b : x.u.i;
                if (__builtin_add_overflow(p, q, &r))
                    return lp__ct_fail(c, at, LP_ERR_RANGE, "integer overflow");
                acc = lp__v_int(r);
            } else {
                double p = acc.t == LP__V_FLOAT ? acc.u.f : acc.t == LP__V_BOOL ? acc.u.b : (double)acc.u.i;
                double q = x.t == LP__V_FLOAT ? x.u.f : x.t == LP__V_BOOL ? x.u.b : (double)x.u.i;
                acc = lp__v_float(p + q);
            }
        }
        *out = acc;
        return LP_OK;
    }
    case F_TOJSON:
        return to_json(c, at, v, a, out);
    case F_TRIM: {
        static const char *const names[] = {"chars"};
        lp__val sl[1] = {lp__v_none()};
        TRY(bind(c, at, "trim", a, names, 1, sl, NULL));
        if (sl[0].t != LP__V_NONE)
            TRY(want_str(c, at, sl[0], "trim chars"));
        TRY(lp__ct_to_str(c, v, &s));
        TRY(lp__ct_charge(c, s.u.s.n / 64));
        *out = do_strip(s, sl[0], true, true);
        return LP_OK;
    }
    case F_UNIQUE: {
        static const char *const names[] = {"case_sensitive", "attribute"};
        lp__val sl[2] = {lp__v_bool(false), lp__v_none()};
        TRY(bind(c, at, "unique", a, names, 2, sl, NULL));
        TRY(iter_list(c, at, v, &items));
        lp__val seen;
        TRY(lp__ct_new_dict(c, LP__V_DICT, &seen));
        TRY(lp__ct_new_seq(c, LP__V_LIST, 0, out));
        for (size_t i = 0; i < items.u.seq->n; i++) {
            lp__val k;
            lp__ct_dent *e = NULL;
            TRY(item_key(c, at, items.u.seq->v[i], sl[1], false, lp__ct_truthy(sl[0]), &k));
            TRY(lp__ct_dict_find(c, seen.u.d, k, &e));
            if (e)
                continue;
            TRY(lp__ct_dict_set(c, seen.u.d, k, lp__v_none()));
            TRY(lp__ct_seq_push(c, out->u.seq, items.u.seq->v[i]));
        }
        return LP_OK;
    }
    case F_WORDCOUNT: {
        TRY(lp__ct_to_str(c, v, &s));
        TRY(lp__ct_charge(c, s.u.s.n / 16));
        int64_t words = 0;
        bool in_word = false;
        size_t i = 0;
        while (i < s.u.s.n) {
            uint32_t cp = 0;
            i += lp__ct_utf8_dec(s.u.s.p + i, s.u.s.n - i, &cp);
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
            bool w = cp == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
                     (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
            if (w && !in_word)
                words++;
            in_word = w;
        }
        *out = lp__v_int(words);
        return LP_OK;
    }
    default:
        return unsupported(c, at, "filter", id >= 0 && id < F_COUNT_ ? filter_names[id] : "?");
    }
}

/* ---- tests ---- */

int lp__ct_apply_test(lp__ct_ctx *c, const lp__node *at, int id, lp__val v,
                      lp__ct_args *a, bool *out) {
    TRY(lp__ct_charge(c, 1));
    lp__val arg = a->npos ? a->pos[0] : (a->nkw ? a->kwv[0] : lp__v_undef());
    bool has_arg = a->npos + a->nkw > 0;
    int r = 0;
    switch (id) {
    case TS_BOOLEAN: *out = v.t == LP__V_BOOL; return LP_OK;
    case TS_CALLABLE:
        *out = v.t == LP__V_MACRO || v.t == LP__V_FUNC || v.t == LP__V_METHOD ||
               v.t == LP__V_UNDEF || v.t == LP__V_LOOP;
        return LP_OK;
    case TS_DEFINED: *out = v.t != LP__V_UNDEF; return LP_OK;
    case TS_UNDEFINED: *out = v.t == LP__V_UNDEF; return LP_OK;
    case TS_NONE: *out = v.t == LP__V_NONE; return LP_OK;
    case TS_FALSE: *out = v.t == LP__V_BOOL && !v.u.b; return LP_OK;
    case TS_TRUE: *out = v.t == LP__V_BOOL && v.u.b; return LP_OK;
    case TS_INTEGER: *out = v.t == LP__V_INT; return LP_OK;
    case TS_FLOAT: *out = v.t == LP__V_FLOAT; return LP_OK;
    case TS_NUMBER: *out = lp__v_is_num(v); return LP_OK;
    case TS_STRING: *out = v.t == LP__V_STR; return LP_OK;
    case TS_MAPPING: *out = v.t == LP__V_DICT; return LP_OK;
    case TS_ESCAPED: *out = v.t == LP__V_STR && v.hint == 1; return LP_OK;
    case TS_ITERABLE:
        *out = v.t == LP__V_STR || lp__v_is_seq(v) || v.t == LP__V_DICT ||
               v.t == LP__V_RANGE || v.t == LP__V_UNDEF || v.t == LP__V_LOOP;
        return LP_OK;
    case TS_SEQUENCE:
        *out = v.t == LP__V_STR || lp__v_is_seq(v) || v.t == LP__V_DICT ||
               v.t == LP__V_RANGE || v.t == LP__V_UNDEF;
        return LP_OK;
    case TS_SAMEAS:
        if (v.t != arg.t) {
            *out = false;
        } else if (v.t == LP__V_NONE || v.t == LP__V_UNDEF) {
            *out = true;
        } else if (v.t == LP__V_BOOL) {
            *out = v.u.b == arg.u.b;
        } else if (v.t == LP__V_INT) { /* CPython caches small ints */
            *out = v.u.i == arg.u.i && v.u.i >= -5 && v.u.i <= 256;
        } else if (v.t == LP__V_STR) {
            *out = v.u.s.p == arg.u.s.p && v.u.s.n == arg.u.s.n;
        } else if (v.t == LP__V_FLOAT) {
            *out = false;
        } else {
            *out = v.u.d == arg.u.d;
        }
        return LP_OK;
    case TS_ODD:
    case TS_EVEN:
    case TS_DIVISIBLEBY: {
        lp__val m;
        lp__val divisor = id == TS_DIVISIBLEBY ? arg : lp__v_int(2);
        if (id == TS_DIVISIBLEBY && !has_arg)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "divisibleby needs an argument");
        if (!lp__v_is_num(v) || !lp__v_is_num(divisor))
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "unsupported operand type(s) for %%: '%s' and '%s'",
                               lp__ct_type_name(v), lp__ct_type_name(divisor));
        double x = v.t == LP__V_FLOAT ? v.u.f : v.t == LP__V_BOOL ? v.u.b : (double)v.u.i;
        double y = divisor.t == LP__V_FLOAT ? divisor.u.f
                   : divisor.t == LP__V_BOOL ? divisor.u.b : (double)divisor.u.i;
        if (y == 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "integer division or modulo by zero");
        if (v.t != LP__V_FLOAT && divisor.t != LP__V_FLOAT) {
            int64_t p = v.t == LP__V_BOOL ? v.u.b : v.u.i;
            int64_t q = divisor.t == LP__V_BOOL ? divisor.u.b : divisor.u.i;
            int64_t rem = q == -1 ? 0 : p % q;
            if (rem != 0 && ((rem < 0) != (q < 0)))
                rem += q;
            m = lp__v_int(rem);
        } else {
            double rem = fmod(x, y);
            if (rem != 0 && ((rem < 0) != (y < 0)))
                rem += y;
            m = lp__v_float(rem);
        }
        double mv = m.t == LP__V_FLOAT ? m.u.f : (double)m.u.i;
        *out = id == TS_ODD ? mv == 1 : mv == 0;
        return LP_OK;
    }
    case TS_EQ:
    case TS_EQUALTO:
    case TS_EQ_OP:
        return lp__ct_eq(c, v, arg, out, 0);
    case TS_NE:
    case TS_NE_OP:
        TRY(lp__ct_eq(c, v, arg, out, 0));
        *out = !*out;
        return LP_OK;
    case TS_LT:
    case TS_LESSTHAN:
    case TS_LT_OP:
        TRY(lp__ct_cmp(c, at, "<", v, arg, &r, 0));
        *out = r == -1;
        return LP_OK;
    case TS_LE:
    case TS_LE_OP:
        TRY(lp__ct_cmp(c, at, "<=", v, arg, &r, 0));
        *out = r == -1 || r == 0;
        return LP_OK;
    case TS_GT:
    case TS_GREATERTHAN:
    case TS_GT_OP:
        TRY(lp__ct_cmp(c, at, ">", v, arg, &r, 0));
        *out = r == 1;
        return LP_OK;
    case TS_GE:
    case TS_GE_OP:
        TRY(lp__ct_cmp(c, at, ">=", v, arg, &r, 0));
        *out = r == 1 || r == 0;
        return LP_OK;
    case TS_IN:
        return lp__ct_contains(c, at, arg, v, out);
    case TS_LOWER:
    case TS_UPPER: {
        lp__val s;
        TRY(lp__ct_to_str(c, v, &s));
        *out = str_pred(s, id == TS_LOWER ? M_ISLOWER : M_ISUPPER);
        return LP_OK;
    }
    case TS_FILTER:
    case TS_TEST:
        *out = v.t == LP__V_STR &&
               (id == TS_FILTER ? lp__ct_filter_id(v.u.s.p, v.u.s.n)
                                : lp__ct_test_id(v.u.s.p, v.u.s.n)) >= 0;
        return LP_OK;
    default:
        return unsupported(c, at, "test", id >= 0 && id < TS_COUNT_ ? test_names[id] : "?");
    }
}

/* ---- global functions ---- */

static int mapping_args(lp__ct_ctx *c, const lp__node *at, lp__ct_args *a,
                        lp__vtype t, lp__val *out) {
    TRY(lp__ct_new_dict(c, t, out));
    if (a->npos > 1)
        return lp__ct_fail(c, at, LP_ERR_INVALID, "expected at most 1 argument, got %zu",
                           a->npos);
    if (a->npos == 1) {
        lp__val src = a->pos[0];
        if (src.t == LP__V_DICT || src.t == LP__V_NS) {
            for (size_t i = 0; i < src.u.d->n; i++)
                TRY(lp__ct_dict_set(c, out->u.d, src.u.d->e[i].k, src.u.d->e[i].v));
        } else {
            lp__val items;
            TRY(lp__ct_to_list(c, at, src, &items));
            for (size_t i = 0; i < items.u.seq->n; i++) {
                lp__val pair;
                TRY(lp__ct_to_list(c, at, items.u.seq->v[i], &pair));
                if (pair.u.seq->n != 2)
                    return lp__ct_fail(c, at, LP_ERR_INVALID,
                                       "dictionary update sequence element #%zu has "
                                       "length %zu; 2 is required", i, pair.u.seq->n);
                TRY(lp__ct_dict_set(c, out->u.d, pair.u.seq->v[0], pair.u.seq->v[1]));
            }
        }
    }
    for (size_t k = 0; k < a->nkw; k++)
        TRY(lp__ct_dict_set(c, out->u.d, lp__v_str(a->kw[k]->name, a->kw[k]->name_len),
                            a->kwv[k]));
    return LP_OK;
}

static int do_strftime(lp__ct_ctx *c, const lp__node *at, lp__val fmt, lp__val *out) {
    TRY(want_str(c, at, fmt, "strftime_now format"));
    if (memchr(fmt.u.s.p, '\0', fmt.u.s.n))
        return lp__ct_fail(c, at, LP_ERR_INVALID, "embedded null character in format");
    if (fmt.u.s.n == 0) {
        *out = lp__v_str("", 0);
        return LP_OK;
    }
    if (fmt.u.s.n > 4096)
        return lp__ct_fail(c, at, LP_ERR_LIMIT, "strftime_now format too long");
    time_t now = c->fixed_time ? (time_t)c->fixed_time : time(NULL);
    struct tm tm;
    bool ok = c->fixed_time ? gmtime_r(&now, &tm) != NULL : localtime_r(&now, &tm) != NULL;
    if (!ok)
        return lp__ct_fail(c, at, LP_ERR_INVALID, "strftime_now: time out of range");
    for (size_t cap = 256; cap <= 65536; cap *= 4) {
        char *buf = lp__ct_alloc(&c->arena, cap);
        if (!buf)
            return lp__ct_oom(c);
        size_t n = strftime(buf, cap, fmt.u.s.p, &tm);
        if (n > 0) {
            *out = lp__v_str(buf, n);
            return LP_OK;
        }
    }
    *out = lp__v_str("", 0); /* a format that formats to nothing */
    return LP_OK;
}

int lp__ct_call_global(lp__ct_ctx *c, const lp__node *at, int id,
                       lp__ct_args *a, lp__val *out) {
    switch (id) {
    case LP__G_RANGE: {
        if (a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "range() takes no keyword arguments");
        if (a->npos < 1 || a->npos > 3)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "range expected 1 to 3 arguments, got %zu", a->npos);
        int64_t v[3] = {0, 0, 1};
        for (size_t i = 0; i < a->npos; i++)
            TRY(want_int(c, at, a->pos[i], "range()", &v[i]));
        lp__ct_range *r = lp__ct_calloc(c, sizeof *r);
        if (!r)
            return lp__ct_oom(c);
        if (a->npos == 1) {
            r->start = 0;
            r->stop = v[0];
            r->step = 1;
        } else {
            r->start = v[0];
            r->stop = v[1];
            r->step = a->npos == 3 ? v[2] : 1;
        }
        if (r->step == 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "range() arg 3 must not be zero");
        /* the sandbox's MAX_RANGE; also keeps lengths well inside int64 */
        uint64_t span = r->step > 0 ? (r->stop > r->start ? (uint64_t)r->stop - (uint64_t)r->start : 0)
                                    : (r->start > r->stop ? (uint64_t)r->start - (uint64_t)r->stop : 0);
        uint64_t mag = r->step > 0 ? (uint64_t)r->step : (uint64_t)0 - (uint64_t)r->step;
        uint64_t len = span ? (span - 1) / mag + 1 : 0;
        if (len > 100000)
            return lp__ct_fail(c, at, LP_ERR_LIMIT,
                               "Range too big. The sandbox blocks ranges larger than "
                               "MAX_RANGE (100000).");
        lp__val rv = {0};
        rv.t = LP__V_RANGE;
        rv.u.r = r;
        *out = rv;
        return LP_OK;
    }
    case LP__G_NAMESPACE:
        return mapping_args(c, at, a, LP__V_NS, out);
    case LP__G_DICT:
        return mapping_args(c, at, a, LP__V_DICT, out);
    case LP__G_RAISE: {
        if (a->npos + a->nkw != 1)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "raise_exception() takes exactly one argument");
        lp__val m;
        TRY(lp__ct_to_str(c, a->npos ? a->pos[0] : a->kwv[0], &m));
        c->raised = true;
        return lp_error_set(c->err, LP_ERR_INVALID, "%.*s",
                            (int)LP_MIN(m.u.s.n, (size_t)LP_ERROR_MSG_MAX), m.u.s.p);
    }
    case LP__G_STRFTIME:
        if (a->npos + a->nkw != 1)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "strftime_now() takes exactly one argument");
        return do_strftime(c, at, a->npos ? a->pos[0] : a->kwv[0], out);
    default:
        return lp__ct_fail(c, at, LP_ERR_INTERNAL, "unknown global %d", id);
    }
}

/* ---- methods ---- */

static int str_format(lp__ct_ctx *c, const lp__node *at, lp__val fmt,
                      lp__ct_args *a, lp__val *out) {
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    const char *p = fmt.u.s.p;
    size_t n = fmt.u.s.n, i = 0, auto_idx = 0;
    int rc = LP_OK;
    while (!rc && i < n) {
        char ch = p[i];
        if (ch == '}' ) {
            if (i + 1 < n && p[i + 1] == '}') {
                rc = lp__ct_buf_putc(c, &b, '}');
                i += 2;
                continue;
            }
            rc = lp__ct_fail(c, at, LP_ERR_INVALID, "Single '}' encountered in format string");
            break;
        }
        if (ch != '{') {
            rc = lp__ct_buf_putc(c, &b, ch);
            i++;
            continue;
        }
        if (i + 1 < n && p[i + 1] == '{') {
            rc = lp__ct_buf_putc(c, &b, '{');
            i += 2;
            continue;
        }
        const char *close = memchr(p + i, '}', n - i);
        if (!close) {
            rc = lp__ct_fail(c, at, LP_ERR_INVALID, "Single '{' encountered in format string");
            break;
        }
        size_t fs = i + 1, fe = (size_t)(close - p);
        bool repr = false;
        if (fe >= fs + 2 && p[fe - 2] == '!' && (p[fe - 1] == 'r' || p[fe - 1] == 's')) {
            repr = p[fe - 1] == 'r';
            fe -= 2;
        }
        if (memchr(p + fs, ':', fe - fs) || memchr(p + fs, '.', fe - fs) ||
            memchr(p + fs, '[', fe - fs) || memchr(p + fs, '!', fe - fs)) {
            rc = lp__ct_fail(c, at, LP_ERR_UNSUPPORTED,
                             "str.format: only {}, {N} and {name} fields are supported");
            break;
        }
        lp__val v = lp__v_undef();
        bool found = false;
        if (fe == fs) {
            if (auto_idx < a->npos) {
                v = a->pos[auto_idx];
                found = true;
            }
            auto_idx++;
        } else if (p[fs] >= '0' && p[fs] <= '9') {
            size_t idx = 0;
            for (size_t k = fs; k < fe && idx < 1000000; k++)
                idx = idx * 10 + (size_t)(p[k] >= '0' && p[k] <= '9' ? p[k] - '0' : 0);
            if (idx < a->npos) {
                v = a->pos[idx];
                found = true;
            }
        } else {
            for (size_t k = 0; k < a->nkw; k++) {
                if (a->kw[k]->name_len == fe - fs &&
                    memcmp(a->kw[k]->name, p + fs, fe - fs) == 0) {
                    v = a->kwv[k];
                    found = true;
                }
            }
        }
        if (!found) {
            rc = lp__ct_fail(c, at, LP_ERR_INVALID, "str.format: missing argument for '{%.*s}'",
                             (int)LP_MIN(fe - fs, 64), p + fs);
            break;
        }
        rc = repr ? lp__ct_write_repr(c, &b, v, 0) : lp__ct_write_str(c, &b, v);
        i = (size_t)(close - p) + 1;
    }
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

static int affix_test(lp__ct_ctx *c, const lp__node *at, lp__val s, lp__val arg,
                      bool end, bool *out) {
    *out = false;
    if (arg.t == LP__V_STR) {
        size_t m = arg.u.s.n;
        *out = m <= s.u.s.n &&
               memcmp(end ? s.u.s.p + s.u.s.n - m : s.u.s.p, arg.u.s.p, m) == 0;
        return LP_OK;
    }
    if (arg.t == LP__V_TUPLE) {
        for (size_t i = 0; i < arg.u.seq->n && !*out; i++) {
            if (arg.u.seq->v[i].t != LP__V_STR)
                return lp__ct_fail(c, at, LP_ERR_INVALID,
                                   "tuple for %s must only contain str, not %s",
                                   end ? "endswith" : "startswith",
                                   lp__ct_type_name(arg.u.seq->v[i]));
            TRY(affix_test(c, at, s, arg.u.seq->v[i], end, out));
        }
        return LP_OK;
    }
    return lp__ct_fail(c, at, LP_ERR_INVALID,
                       "%s first arg must be str or a tuple of str, not %s",
                       end ? "endswith" : "startswith", lp__ct_type_name(arg));
}

static int str_method(lp__ct_ctx *c, const lp__node *at, lp__val s, int id,
                      lp__ct_args *a, lp__val *out) {
    const char *mname = id >= 0 && id < M_COUNT_ ? method_names[id] : "?";
    lp__val sl[3] = {lp__v_none(), lp__v_none(), lp__v_none()};
    uint32_t given = 0;
    switch (id) {
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        static const char *const names[] = {"chars"};
        TRY(bind(c, at, mname, a, names, 1, sl, NULL));
        if (sl[0].t != LP__V_NONE)
            TRY(want_str(c, at, sl[0], "strip chars"));
        TRY(lp__ct_charge(c, s.u.s.n / 64));
        *out = do_strip(s, sl[0], id != M_RSTRIP, id != M_LSTRIP);
        return LP_OK;
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_UNSUPPORTED,
                               "%s() with start/end is not supported", mname);
        bool r = false;
        TRY(affix_test(c, at, s, a->pos[0], id == M_ENDSWITH, &r));
        *out = lp__v_bool(r);
        return LP_OK;
    }
    case M_SPLIT:
    case M_RSPLIT: {
        static const char *const names[] = {"sep", "maxsplit"};
        sl[1] = lp__v_int(-1);
        TRY(bind(c, at, mname, a, names, 2, sl, NULL));
        int64_t maxsplit = 0;
        TRY(want_int(c, at, sl[1], "maxsplit", &maxsplit));
        return do_split(c, at, s, sl[0], maxsplit, id == M_RSPLIT, out);
    }
    case M_SPLITLINES: {
        static const char *const names[] = {"keepends"};
        sl[0] = lp__v_bool(false);
        TRY(bind(c, at, mname, a, names, 1, sl, NULL));
        return do_splitlines(c, s, lp__ct_truthy(sl[0]), out);
    }
    case M_UPPER: return map_case(c, s, CASE_UPPER, out);
    case M_LOWER: return map_case(c, s, CASE_LOWER, out);
    case M_TITLE: return map_case(c, s, CASE_PYTITLE, out);
    case M_CAPITALIZE: return map_case(c, s, CASE_CAPITALIZE, out);
    case M_SWAPCASE: return map_case(c, s, CASE_SWAP, out);
    case M_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        sl[2] = lp__v_int(-1);
        TRY(bind(c, at, mname, a, names, 3, sl, &given));
        if ((given & 3) != 3)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "replace() requires old and new");
        TRY(want_str(c, at, sl[0], "replace() argument 1"));
        TRY(want_str(c, at, sl[1], "replace() argument 2"));
        int64_t count = 0;
        TRY(want_int(c, at, sl[2], "count", &count));
        return do_replace(c, s, sl[0], sl[1], count, out);
    }
    case M_FIND:
    case M_RFIND:
    case M_COUNT: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_UNSUPPORTED,
                               "%s() with start/end is not supported", mname);
        TRY(want_str(c, at, a->pos[0], "substring"));
        lp__val sub = a->pos[0];
        TRY(lp__ct_charge(c, s.u.s.n / 64));
        if (id == M_COUNT) {
            int64_t k = 0;
            if (sub.u.s.n == 0) {
                k = (int64_t)lp__ct_utf8_count(s.u.s.p, s.u.s.n) + 1;
            } else {
                size_t i = 0;
                const char *f = NULL;
                while (i <= s.u.s.n &&
                       (f = memmem(s.u.s.p + i, s.u.s.n - i, sub.u.s.p, sub.u.s.n))) {
                    k++;
                    i = (size_t)(f - s.u.s.p) + sub.u.s.n;
                }
            }
            *out = lp__v_int(k);
            return LP_OK;
        }
        size_t found = SIZE_MAX;
        if (id == M_FIND) {
            const char *f = sub.u.s.n ? memmem(s.u.s.p, s.u.s.n, sub.u.s.p, sub.u.s.n)
                                      : s.u.s.p;
            if (f)
                found = (size_t)(f - s.u.s.p);
        } else if (sub.u.s.n <= s.u.s.n) {
            for (size_t j = s.u.s.n - sub.u.s.n + 1; j > 0; j--) {
                if (memcmp(s.u.s.p + j - 1, sub.u.s.p, sub.u.s.n) == 0) {
                    found = j - 1;
                    break;
                }
            }
        }
        *out = lp__v_int(found == SIZE_MAX ? -1 : (int64_t)lp__ct_utf8_count(s.u.s.p, found));
        return LP_OK;
    }
    case M_JOIN: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "join() takes exactly one argument");
        lp__val items;
        TRY(lp__ct_to_list(c, at, a->pos[0], &items));
        TRY(lp__ct_charge(c, items.u.seq->n));
        lp__ct_buf b;
        lp__ct_buf_scratch(c, &b);
        int rc = LP_OK;
        for (size_t i = 0; !rc && i < items.u.seq->n; i++) {
            lp__val x = items.u.seq->v[i];
            if (x.t != LP__V_STR) {
                rc = lp__ct_fail(c, at, LP_ERR_INVALID,
                                 "sequence item %zu: expected str instance, %s found", i,
                                 lp__ct_type_name(x));
                break;
            }
            if (i)
                rc = lp__ct_buf_put(c, &b, s.u.s.p, s.u.s.n);
            if (!rc)
                rc = lp__ct_buf_put(c, &b, x.u.s.p, x.u.s.n);
        }
        if (rc) {
            lp__ct_buf_free(&b);
            return rc;
        }
        return lp__ct_buf_to_str(c, &b, out);
    }
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISUPPER:
    case M_ISLOWER:
        if (a->npos || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "%s() takes no arguments", mname);
        TRY(lp__ct_charge(c, s.u.s.n / 16));
        *out = lp__v_bool(str_pred(s, id));
        return LP_OK;
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "%s() takes exactly one argument", mname);
        TRY(want_str(c, at, a->pos[0], mname));
        bool r = false;
        TRY(affix_test(c, at, s, a->pos[0], id == M_REMOVESUFFIX, &r));
        size_t m = r ? a->pos[0].u.s.n : 0;
        *out = id == M_REMOVEPREFIX ? lp__v_str(s.u.s.p + m, s.u.s.n - m)
                                    : lp__v_str(s.u.s.p, s.u.s.n - m);
        return LP_OK;
    }
    case M_FORMAT:
        return str_format(c, at, s, a, out);
    case M_PARTITION:
    case M_RPARTITION: {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "%s() takes exactly one argument", mname);
        TRY(want_str(c, at, a->pos[0], "separator"));
        lp__val sep = a->pos[0];
        if (sep.u.s.n == 0)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "empty separator");
        lp__val parts;
        TRY(do_split(c, at, s, sep, 1, id == M_RPARTITION, &parts));
        TRY(lp__ct_new_seq(c, LP__V_TUPLE, 3, out));
        lp__ct_seq *t = out->u.seq;
        t->n = 3;
        if (parts.u.seq->n == 2) {
            t->v[0] = parts.u.seq->v[0];
            t->v[1] = sep;
            t->v[2] = parts.u.seq->v[1];
        } else if (id == M_PARTITION) {
            t->v[0] = s;
            t->v[1] = t->v[2] = lp__v_str("", 0);
        } else {
            t->v[0] = t->v[1] = lp__v_str("", 0);
            t->v[2] = s;
        }
        return LP_OK;
    }
    default:
        return lp__ct_fail(c, at, LP_ERR_INTERNAL, "bad str method");
    }
}

int lp__ct_call_method(lp__ct_ctx *c, const lp__node *at, lp__val self,
                       int id, lp__ct_args *a, lp__val *out) {
    TRY(lp__ct_charge(c, 1));
    if (self.t == LP__V_STR)
        return str_method(c, at, self, id, a, out);
    if (self.t == LP__V_DICT) {
        lp__ct_dict *d = self.u.d;
        if (id == M_GET) {
            static const char *const names[] = {"key", "default"};
            lp__val sl[2] = {lp__v_undef(), lp__v_none()};
            uint32_t given = 0;
            TRY(bind(c, at, "get", a, names, 2, sl, &given));
            if (!(given & 1))
                return lp__ct_fail(c, at, LP_ERR_INVALID, "get expected at least 1 argument");
            lp__ct_dent *e = NULL;
            TRY(lp__ct_dict_find(c, d, sl[0], &e));
            *out = e ? e->v : sl[1];
            return LP_OK;
        }
        if (a->npos || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "%s() takes no arguments",
                               method_names[id]);
        TRY(lp__ct_charge(c, d->n));
        TRY(lp__ct_new_seq(c, LP__V_LIST, d->n, out));
        for (size_t i = 0; i < d->n; i++) {
            if (id == M_KEYS) {
                out->u.seq->v[i] = d->e[i].k;
            } else if (id == M_VALUES) {
                out->u.seq->v[i] = d->e[i].v;
            } else {
                lp__val t;
                TRY(lp__ct_new_seq(c, LP__V_TUPLE, 2, &t));
                t.u.seq->v[0] = d->e[i].k;
                t.u.seq->v[1] = d->e[i].v;
                t.u.seq->n = 2;
                out->u.seq->v[i] = t;
            }
        }
        out->u.seq->n = d->n;
        return LP_OK;
    }
    if (self.t == LP__V_RANGE)
        TRY(lp__ct_to_list(c, at, self, &self));
    if (lp__v_is_seq(self)) {
        if (a->npos != 1 || a->nkw)
            return lp__ct_fail(c, at, LP_ERR_UNSUPPORTED,
                               "%s() takes exactly one argument", method_names[id]);
        TRY(lp__ct_charge(c, self.u.seq->n));
        int64_t k = 0;
        for (size_t i = 0; i < self.u.seq->n; i++) {
            bool e = false;
            TRY(lp__ct_eq(c, self.u.seq->v[i], a->pos[0], &e, 0));
            if (e && id == M_INDEX) {
                *out = lp__v_int((int64_t)i);
                return LP_OK;
            }
            k += e;
        }
        if (id == M_INDEX)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "x not in list");
        *out = lp__v_int(k);
        return LP_OK;
    }
    if (self.t == LP__V_LOOP) {
        lp__ct_loop *L = self.u.loop;
        if (id == M_CYCLE) {
            if (a->npos == 0)
                return lp__ct_fail(c, at, LP_ERR_INVALID, "no items for cycling given");
            *out = a->pos[L->index0 % (int64_t)a->npos];
            return LP_OK;
        }
        /* changed(*values) */
        lp__val vals;
        TRY(lp__ct_new_seq(c, LP__V_TUPLE, a->npos, &vals));
        for (size_t i = 0; i < a->npos; i++)
            vals.u.seq->v[i] = a->pos[i];
        vals.u.seq->n = a->npos;
        bool same = false;
        if (L->changed_any)
            TRY(lp__ct_eq(c, L->changed_last, vals, &same, 0));
        L->changed_any = true;
        L->changed_last = vals;
        *out = lp__v_bool(!same);
        return LP_OK;
    }
    return lp__ct_fail(c, at, LP_ERR_INTERNAL, "bad method call");
}
