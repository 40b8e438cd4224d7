/* chat_template_parse.c - recursive-descent parser for the Jinja2 subset of
 * chat templates, following jinja2.parser rule by rule (precedence, tuple
 * and test-argument quirks included), with bounded nesting. */
#include <stdio.h>
#include <string.h>

#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

typedef struct ps {
    lp__ct_arena *a;
    const lp__ct_tok *t;
    size_t n, i;
    lp__ct_syms *syms;
    lp_error *err;
    int depth;      /* parser recursion (brackets, nested statements) */
    int loop_depth; /* for {% break %} / {% continue %} */
} ps;

/* ---- symbols ---- */

static uint32_t sym_hash(const char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

int lp__ct_sym_intern(lp__ct_arena *a, lp__ct_syms *s, const char *p,
                      size_t n, int32_t *out) {
    if (s->hash_cap == 0 || (s->n + 1) * 2 > s->hash_cap) {
        uint32_t ncap = s->hash_cap ? s->hash_cap * 2 : 64;
        uint32_t *nh = lp__ct_alloc_array(a, ncap, sizeof *nh);
        if (!nh)
            return LP_ERR_NOMEM;
        memset(nh, 0, ncap * sizeof *nh);
        for (uint32_t i = 0; i < s->n; i++) {
            uint32_t h = sym_hash(s->name[i], s->len[i]) & (ncap - 1);
            while (nh[h])
                h = (h + 1) & (ncap - 1);
            nh[h] = i + 1;
        }
        s->hash = nh;
        s->hash_cap = ncap;
    }
    uint32_t h = sym_hash(p, n) & (s->hash_cap - 1);
    while (s->hash[h]) {
        uint32_t k = s->hash[h] - 1;
        if (s->len[k] == n && memcmp(s->name[k], p, n) == 0) {
            *out = (int32_t)k;
            return LP_OK;
        }
        h = (h + 1) & (s->hash_cap - 1);
    }
    if (s->n == s->cap) {
        uint32_t ncap = s->cap ? s->cap * 2 : 32;
        const char **nn = lp__ct_alloc_array(a, ncap, sizeof *nn);
        size_t *nl = lp__ct_alloc_array(a, ncap, sizeof *nl);
        if (!nn || !nl)
            return LP_ERR_NOMEM;
        if (s->n) {
            memcpy(nn, s->name, s->n * sizeof *nn);
            memcpy(nl, s->len, s->n * sizeof *nl);
        }
        s->name = nn;
        s->len = nl;
        s->cap = ncap;
    }
    char *copy = lp__ct_strdup(a, p, n);
    if (!copy)
        return LP_ERR_NOMEM;
    s->name[s->n] = copy;
    s->len[s->n] = n;
    s->hash[h] = s->n + 1;
    *out = (int32_t)s->n++;
    return LP_OK;
}

/* ---- tokens ---- */

static const lp__ct_tok *cur(ps *p) { return &p->t[p->i]; }
static const lp__ct_tok *look(ps *p) {
    return &p->t[p->i + 1 < p->n ? p->i + 1 : p->i];
}
static const lp__ct_tok *next(ps *p) {
    const lp__ct_tok *t = &p->t[p->i];
    if (p->i + 1 < p->n)
        p->i++;
    return t;
}
static bool tok_is_op(const lp__ct_tok *t, int op) {
    return t->type == LP__T_OP && t->op == op;
}
static bool is_op(ps *p, int op) { return tok_is_op(cur(p), op); }
static bool tok_is_name(const lp__ct_tok *t, const char *name) {
    size_t k = strlen(name);
    return t->type == LP__T_NAME && t->n == k && memcmp(t->p, name, k) == 0;
}
static bool is_name(ps *p, const char *name) { return tok_is_name(cur(p), name); }

static const char *op_text(int op) {
    static const char *const txt[] = {
        "?", "+", "-", "/", "//", "*", "%", "**", "~", "[", "]", "(", ")", "{",
        "}", "==", "!=", ">", ">=", "<", "<=", "=", ".", ":", "|", ",", ";"};
    return op > 0 && op < (int)LP_ARRAY_LEN(txt) ? txt[op] : "?";
}

static void describe(const lp__ct_tok *t, char *buf, size_t cap) {
    switch (t->type) {
    case LP__T_DATA: snprintf(buf, cap, "template data"); break;
    case LP__T_VAR_BEGIN: snprintf(buf, cap, "begin of print statement"); break;
    case LP__T_VAR_END: snprintf(buf, cap, "end of print statement"); break;
    case LP__T_BLOCK_BEGIN: snprintf(buf, cap, "begin of statement block"); break;
    case LP__T_BLOCK_END: snprintf(buf, cap, "end of statement block"); break;
    case LP__T_NAME: snprintf(buf, cap, "'%.*s'", (int)LP_MIN(t->n, 40), t->p); break;
    case LP__T_STRING: snprintf(buf, cap, "string"); break;
    case LP__T_INT: snprintf(buf, cap, "integer"); break;
    case LP__T_FLOAT: snprintf(buf, cap, "float"); break;
    case LP__T_OP: snprintf(buf, cap, "'%s'", op_text(t->op)); break;
    default: snprintf(buf, cap, "end of template"); break;
    }
}

static int fail_at(ps *p, const lp__ct_tok *t, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int fail_at(ps *p, const lp__ct_tok *t, int code, const char *fmt, ...) {
    char msg[LP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lp_error_set(p->err, code, "line %u:%u: %s", t->line, t->col, msg);
}

static int unexpected(ps *p, const char *wanted) {
    char d[80];
    describe(cur(p), d, sizeof d);
    if (wanted)
        return fail_at(p, cur(p), LP_ERR_FORMAT, "expected %s, got %s", wanted, d);
    return fail_at(p, cur(p), LP_ERR_FORMAT, "unexpected %s", d);
}

static int expect_op(ps *p, int op) {
    if (!is_op(p, op)) {
        char w[8];
        snprintf(w, sizeof w, "'%s'", op_text(op));
        return unexpected(p, w);
    }
    next(p);
    return LP_OK;
}

static int expect_type(ps *p, int type, const char *what) {
    if (cur(p)->type != type)
        return unexpected(p, what);
    next(p);
    return LP_OK;
}

static int oom(ps *p) { return lp__ct_compile_oom(p->a, p->err); }

/* ---- nodes ---- */

static lp__node *mk(ps *p, int kind, const lp__ct_tok *at) {
    lp__node *nd = lp__ct_alloc(p->a, sizeof *nd);
    if (!nd)
        return NULL;
    memset(nd, 0, sizeof *nd);
    nd->kind = (uint8_t)kind;
    nd->line = at->line;
    nd->col = at->col;
    nd->sym = -1;
    return nd;
}

/* Growable child list built in the arena. */
typedef struct kidlist {
    lp__node **v;
    uint32_t n, cap;
} kidlist;

static int kl_push(ps *p, kidlist *l, lp__node *nd) {
    if (l->n == l->cap) {
        uint32_t ncap = l->cap ? l->cap * 2 : 4;
        if (ncap < l->cap)
            return oom(p);
        lp__node **nv = lp__ct_alloc_array(p->a, ncap, sizeof *nv);
        if (!nv)
            return oom(p);
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n++] = nd;
    return LP_OK;
}

/* Set the subtree height; reject trees too tall to evaluate recursively. */
static int fin(ps *p, lp__node *nd) {
    unsigned d = 0;
    lp__node *ch[5] = {nd->a, nd->b, nd->c, nd->d, nd->e};
    for (int i = 0; i < 5; i++)
        if (ch[i] && ch[i]->depth > d)
            d = ch[i]->depth;
    for (uint32_t i = 0; i < nd->n; i++)
        if (nd->kids[i] && nd->kids[i]->depth > d)
            d = nd->kids[i]->depth;
    if (d + 1 > LP__CT_MAX_HEIGHT) {
        lp_error_set(p->err, LP_ERR_LIMIT,
                     "line %u:%u: expression nested deeper than %d levels",
                     nd->line, nd->col, LP__CT_MAX_HEIGHT);
        return LP_ERR_LIMIT;
    }
    nd->depth = (uint16_t)(d + 1);
    return LP_OK;
}

static int enter(ps *p) {
    if (p->depth >= LP_CHAT_TEMPLATE_MAX_NESTING)
        return fail_at(p, cur(p), LP_ERR_LIMIT, "nested deeper than %d levels",
                       LP_CHAT_TEMPLATE_MAX_NESTING);
    p->depth++;
    return LP_OK;
}

#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_)                                                               \
            return rc_;                                                        \
    } while (0)

static int parse_expression(ps *p, bool with_condexpr, lp__node **out);
static int parse_tuple(ps *p, int mode, const char *extra_end,
                       bool explicit_parens, lp__node **out);
static int parse_primary(ps *p, lp__node **out);
static int parse_postfix(ps *p, lp__node **node);
static int parse_filter_expr(ps *p, lp__node **node);
static int parse_filter(ps *p, lp__node **node, bool start_inline);
static int subparse(ps *p, const char *const *ends, lp__node **out);

enum { TUP_SIMPLE, TUP_COND, TUP_NOCOND };

/* call arguments: ( args, name=value, ... ) */
static int parse_call_args(ps *p, lp__node *call) {
    const lp__ct_tok *open = cur(p);
    TRY(expect_op(p, LP__OP_LPAREN));
    kidlist kl = {0};
    uint32_t npos = 0;
    bool require_comma = false, any_kw = false;
    while (!is_op(p, LP__OP_RPAREN)) {
        if (require_comma) {
            TRY(expect_op(p, LP__OP_COMMA));
            if (is_op(p, LP__OP_RPAREN))
                break;
        }
        if (is_op(p, LP__OP_MUL) || is_op(p, LP__OP_POW))
            return fail_at(p, cur(p), LP_ERR_UNSUPPORTED,
                           "*args and **kwargs in calls are not supported");
        if (cur(p)->type == LP__T_NAME && tok_is_op(look(p), LP__OP_ASSIGN)) {
            lp__node *kw = mk(p, N_KW, cur(p));
            if (!kw)
                return oom(p);
            kw->name = cur(p)->p;
            kw->name_len = cur(p)->n;
            next(p);
            next(p);
            TRY(parse_expression(p, true, &kw->a));
            TRY(fin(p, kw));
            TRY(kl_push(p, &kl, kw));
            any_kw = true;
        } else {
            if (any_kw)
                return fail_at(p, open, LP_ERR_FORMAT,
                               "invalid syntax for function call expression");
            lp__node *arg = NULL;
            TRY(parse_expression(p, true, &arg));
            TRY(kl_push(p, &kl, arg));
            npos++;
        }
        require_comma = true;
    }
    TRY(expect_op(p, LP__OP_RPAREN));
    call->kids = kl.v;
    call->n = kl.n;
    call->npos = npos;
    return LP_OK;
}

static int parse_call(ps *p, lp__node **node) {
    lp__node *c = mk(p, N_CALL, cur(p));
    if (!c)
        return oom(p);
    c->a = *node;
    TRY(parse_call_args(p, c));
    TRY(fin(p, c));
    *node = c;
    return LP_OK;
}

static int parse_subscribed(ps *p, lp__node **out) {
    const lp__ct_tok *at = cur(p);
    lp__node *args[3] = {NULL, NULL, NULL};
    if (is_op(p, LP__OP_COLON)) {
        next(p);
    } else {
        lp__node *e = NULL;
        TRY(parse_expression(p, true, &e));
        if (!is_op(p, LP__OP_COLON)) {
            *out = e;
            return LP_OK;
        }
        next(p);
        args[0] = e;
    }
    if (!is_op(p, LP__OP_COLON) && !is_op(p, LP__OP_RBRACKET) &&
        !is_op(p, LP__OP_COMMA))
        TRY(parse_expression(p, true, &args[1]));
    if (is_op(p, LP__OP_COLON)) {
        next(p);
        if (!is_op(p, LP__OP_RBRACKET) && !is_op(p, LP__OP_COMMA))
            TRY(parse_expression(p, true, &args[2]));
    }
    lp__node *s = mk(p, N_SLICE, at);
    if (!s)
        return oom(p);
    s->a = args[0];
    s->b = args[1];
    s->c = args[2];
    TRY(fin(p, s));
    *out = s;
    return LP_OK;
}

static int parse_subscript(ps *p, lp__node **node) {
    const lp__ct_tok *t = next(p);
    if (tok_is_op(t, LP__OP_DOT)) {
        const lp__ct_tok *at = next(p);
        if (at->type == LP__T_NAME) {
            lp__node *g = mk(p, N_GETATTR, t);
            if (!g)
                return oom(p);
            g->a = *node;
            g->name = at->p;
            g->name_len = at->n;
            g->sym = lp__ct_method_id(at->p, at->n);
            TRY(fin(p, g));
            *node = g;
            return LP_OK;
        }
        if (at->type != LP__T_INT)
            return fail_at(p, at, LP_ERR_FORMAT, "expected name or number");
        lp__node *k = mk(p, N_CONST, at), *g = mk(p, N_GETITEM, t);
        if (!k || !g)
            return oom(p);
        k->k = lp__v_int(at->i);
        TRY(fin(p, k));
        g->a = *node;
        g->b = k;
        TRY(fin(p, g));
        *node = g;
        return LP_OK;
    }
    /* '[' */
    TRY(enter(p));
    kidlist kl = {0};
    while (!is_op(p, LP__OP_RBRACKET)) {
        if (kl.n)
            TRY(expect_op(p, LP__OP_COMMA));
        lp__node *s = NULL;
        TRY(parse_subscribed(p, &s));
        TRY(kl_push(p, &kl, s));
    }
    TRY(expect_op(p, LP__OP_RBRACKET));
    p->depth--;
    lp__node *idx = NULL;
    if (kl.n == 1) {
        idx = kl.v[0];
    } else {
        idx = mk(p, N_TUPLE, t);
        if (!idx)
            return oom(p);
        idx->kids = kl.v;
        idx->n = kl.n;
        TRY(fin(p, idx));
    }
    lp__node *g = mk(p, N_GETITEM, t);
    if (!g)
        return oom(p);
    g->a = *node;
    g->b = idx;
    TRY(fin(p, g));
    *node = g;
    return LP_OK;
}

static int parse_postfix(ps *p, lp__node **node) {
    for (;;) {
        if (is_op(p, LP__OP_DOT) || is_op(p, LP__OP_LBRACKET))
            TRY(parse_subscript(p, node));
        else if (is_op(p, LP__OP_LPAREN))
            TRY(parse_call(p, node));
        else
            return LP_OK;
    }
}

static int parse_name_path(ps *p, const char **name, size_t *len,
                           const lp__ct_tok **at) {
    *at = cur(p);
    if (cur(p)->type != LP__T_NAME)
        return unexpected(p, "a name");
    const lp__ct_tok *t = next(p);
    *name = t->p;
    *len = t->n;
    if (is_op(p, LP__OP_DOT))
        return fail_at(p, cur(p), LP_ERR_UNSUPPORTED,
                       "dotted filter and test names are not supported");
    return LP_OK;
}

static int parse_test(ps *p, lp__node **node) {
    const lp__ct_tok *is_tok = next(p); /* 'is' */
    bool negated = false;
    if (is_name(p, "not")) {
        next(p);
        negated = true;
    }
    const char *name = NULL;
    size_t len = 0;
    const lp__ct_tok *at;
    TRY(parse_name_path(p, &name, &len, &at));
    lp__node *t = mk(p, N_TEST, is_tok);
    if (!t)
        return oom(p);
    t->a = *node;
    t->name = name;
    t->name_len = len;
    t->op = negated;
    t->sym = lp__ct_test_id(name, len);
    if (t->sym < 0)
        return fail_at(p, at, LP_ERR_FORMAT, "no test named '%.*s'",
                       (int)LP_MIN(len, 64), name);
    const lp__ct_tok *c = cur(p);
    if (is_op(p, LP__OP_LPAREN)) {
        TRY(parse_call_args(p, t));
    } else if ((c->type == LP__T_NAME || c->type == LP__T_STRING ||
                c->type == LP__T_INT || c->type == LP__T_FLOAT ||
                tok_is_op(c, LP__OP_LPAREN) || tok_is_op(c, LP__OP_LBRACKET) ||
                tok_is_op(c, LP__OP_LBRACE)) &&
               !tok_is_name(c, "else") && !tok_is_name(c, "or") &&
               !tok_is_name(c, "and")) {
        if (tok_is_name(c, "is"))
            return fail_at(p, c, LP_ERR_FORMAT,
                           "you cannot chain multiple tests with is");
        lp__node *arg = NULL;
        TRY(parse_primary(p, &arg));
        TRY(parse_postfix(p, &arg));
        lp__node **kids = lp__ct_alloc(p->a, sizeof *kids);
        if (!kids)
            return oom(p);
        kids[0] = arg;
        t->kids = kids;
        t->n = 1;
        t->npos = 1;
    }
    TRY(fin(p, t));
    *node = t;
    return LP_OK;
}

static int parse_filter(ps *p, lp__node **node, bool start_inline) {
    while (is_op(p, LP__OP_PIPE) || start_inline) {
        if (!start_inline)
            next(p);
        start_inline = false;
        const char *name = NULL;
        size_t len = 0;
        const lp__ct_tok *at;
        TRY(parse_name_path(p, &name, &len, &at));
        lp__node *f = mk(p, N_FILTER, at);
        if (!f)
            return oom(p);
        f->a = *node;
        f->name = name;
        f->name_len = len;
        f->sym = lp__ct_filter_id(name, len);
        if (f->sym < 0)
            return fail_at(p, at, LP_ERR_FORMAT, "no filter named '%.*s'",
                           (int)LP_MIN(len, 64), name);
        if (is_op(p, LP__OP_LPAREN))
            TRY(parse_call_args(p, f));
        TRY(fin(p, f));
        *node = f;
    }
    return LP_OK;
}

static int parse_filter_expr(ps *p, lp__node **node) {
    for (;;) {
        if (is_op(p, LP__OP_PIPE))
            TRY(parse_filter(p, node, false));
        else if (is_name(p, "is"))
            TRY(parse_test(p, node));
        else if (is_op(p, LP__OP_LPAREN))
            TRY(parse_call(p, node));
        else
            return LP_OK;
    }
}

static int parse_list_or_dict(ps *p, bool dict, lp__node **out) {
    const lp__ct_tok *open = next(p);
    int close = dict ? LP__OP_RBRACE : LP__OP_RBRACKET;
    kidlist kl = {0};
    while (!is_op(p, close)) {
        if (kl.n)
            TRY(expect_op(p, LP__OP_COMMA));
        if (is_op(p, close))
            break;
        lp__node *e = NULL;
        TRY(parse_expression(p, true, &e));
        TRY(kl_push(p, &kl, e));
        if (dict) {
            TRY(expect_op(p, LP__OP_COLON));
            TRY(parse_expression(p, true, &e));
            TRY(kl_push(p, &kl, e));
        }
    }
    TRY(expect_op(p, close));
    lp__node *nd = mk(p, dict ? N_DICT : N_LIST, open);
    if (!nd)
        return oom(p);
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_primary(ps *p, lp__node **out) {
    const lp__ct_tok *t = cur(p);
    lp__node *nd = NULL;
    if (t->type == LP__T_NAME) {
        next(p);
        nd = mk(p, N_CONST, t);
        if (!nd)
            return oom(p);
        if (tok_is_name(t, "true") || tok_is_name(t, "True")) {
            nd->k = lp__v_bool(true);
        } else if (tok_is_name(t, "false") || tok_is_name(t, "False")) {
            nd->k = lp__v_bool(false);
        } else if (tok_is_name(t, "none") || tok_is_name(t, "None")) {
            nd->k = lp__v_none();
        } else {
            nd->kind = N_NAME;
            nd->name = t->p;
            nd->name_len = t->n;
            if (lp__ct_sym_intern(p->a, p->syms, t->p, t->n, &nd->sym))
                return oom(p);
        }
    } else if (t->type == LP__T_STRING) {
        next(p);
        nd = mk(p, N_CONST, t);
        if (!nd)
            return oom(p);
        if (cur(p)->type != LP__T_STRING) {
            nd->k = lp__v_str(t->p, t->n);
        } else { /* adjacent literals concatenate */
            size_t total = 0, k = p->i;
            for (size_t j = p->i - 1; p->t[j].type == LP__T_STRING; j++) {
                total += p->t[j].n;
                k = j;
            }
            char *buf = lp__ct_alloc(p->a, total + 1);
            if (!buf)
                return oom(p);
            size_t off = 0;
            for (size_t j = p->i - 1; j <= k; j++) {
                memcpy(buf + off, p->t[j].p, p->t[j].n);
                off += p->t[j].n;
            }
            buf[off] = '\0';
            p->i = k + 1;
            nd->k = lp__v_str(buf, total);
        }
    } else if (t->type == LP__T_INT) {
        next(p);
        nd = mk(p, N_CONST, t);
        if (!nd)
            return oom(p);
        nd->k = lp__v_int(t->i);
    } else if (t->type == LP__T_FLOAT) {
        next(p);
        nd = mk(p, N_CONST, t);
        if (!nd)
            return oom(p);
        nd->k = lp__v_float(t->f);
    } else if (tok_is_op(t, LP__OP_LPAREN)) {
        TRY(enter(p));
        next(p);
        TRY(parse_tuple(p, TUP_COND, NULL, true, &nd));
        TRY(expect_op(p, LP__OP_RPAREN));
        p->depth--;
        *out = nd;
        return LP_OK;
    } else if (tok_is_op(t, LP__OP_LBRACKET) || tok_is_op(t, LP__OP_LBRACE)) {
        TRY(enter(p));
        TRY(parse_list_or_dict(p, tok_is_op(t, LP__OP_LBRACE), &nd));
        p->depth--;
        *out = nd;
        return LP_OK;
    } else {
        return unexpected(p, NULL);
    }
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_unary(ps *p, bool with_filter, lp__node **out) {
    const lp__ct_tok *t = cur(p);
    lp__node *nd = NULL;
    if (is_op(p, LP__OP_SUB) || is_op(p, LP__OP_ADD)) {
        TRY(enter(p));
        next(p);
        nd = mk(p, tok_is_op(t, LP__OP_SUB) ? N_NEG : N_POS, t);
        if (!nd)
            return oom(p);
        TRY(parse_unary(p, false, &nd->a));
        TRY(fin(p, nd));
        p->depth--;
    } else {
        TRY(parse_primary(p, &nd));
    }
    TRY(parse_postfix(p, &nd));
    if (with_filter)
        TRY(parse_filter_expr(p, &nd));
    *out = nd;
    return LP_OK;
}

static int binop(ps *p, const lp__ct_tok *at, int op, lp__node *l, lp__node *r,
                 lp__node **out) {
    lp__node *nd = mk(p, N_BINOP, at);
    if (!nd)
        return oom(p);
    nd->op = (uint8_t)op;
    nd->a = l;
    nd->b = r;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_pow(ps *p, lp__node **out) {
    lp__node *l = NULL;
    TRY(parse_unary(p, true, &l));
    while (is_op(p, LP__OP_POW)) {
        const lp__ct_tok *t = next(p);
        lp__node *r = NULL;
        TRY(parse_unary(p, true, &r));
        TRY(binop(p, t, LP__OP_POW, l, r, &l));
    }
    *out = l;
    return LP_OK;
}

static int parse_math2(ps *p, lp__node **out) {
    lp__node *l = NULL;
    TRY(parse_pow(p, &l));
    while (is_op(p, LP__OP_MUL) || is_op(p, LP__OP_DIV) ||
           is_op(p, LP__OP_FLOORDIV) || is_op(p, LP__OP_MOD)) {
        const lp__ct_tok *t = next(p);
        lp__node *r = NULL;
        TRY(parse_pow(p, &r));
        TRY(binop(p, t, t->op, l, r, &l));
    }
    *out = l;
    return LP_OK;
}

static int parse_concat(ps *p, lp__node **out) {
    const lp__ct_tok *at = cur(p);
    lp__node *first = NULL;
    TRY(parse_math2(p, &first));
    if (!is_op(p, LP__OP_TILDE)) {
        *out = first;
        return LP_OK;
    }
    kidlist kl = {0};
    TRY(kl_push(p, &kl, first));
    while (is_op(p, LP__OP_TILDE)) {
        next(p);
        lp__node *e = NULL;
        TRY(parse_math2(p, &e));
        TRY(kl_push(p, &kl, e));
    }
    lp__node *nd = mk(p, N_CONCAT, at);
    if (!nd)
        return oom(p);
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_math1(ps *p, lp__node **out) {
    lp__node *l = NULL;
    TRY(parse_concat(p, &l));
    while (is_op(p, LP__OP_ADD) || is_op(p, LP__OP_SUB)) {
        const lp__ct_tok *t = next(p);
        lp__node *r = NULL;
        TRY(parse_concat(p, &r));
        TRY(binop(p, t, t->op, l, r, &l));
    }
    *out = l;
    return LP_OK;
}

static int parse_compare(ps *p, lp__node **out) {
    const lp__ct_tok *at = cur(p);
    lp__node *first = NULL;
    TRY(parse_math1(p, &first));
    kidlist kl = {0};
    for (;;) {
        const lp__ct_tok *t = cur(p);
        int op = 0;
        if (t->type == LP__T_OP &&
            (t->op == LP__OP_EQ || t->op == LP__OP_NE || t->op == LP__OP_LT ||
             t->op == LP__OP_LTEQ || t->op == LP__OP_GT || t->op == LP__OP_GTEQ)) {
            op = t->op;
            next(p);
        } else if (is_name(p, "in")) {
            op = LP__OP_IN;
            next(p);
        } else if (is_name(p, "not") && tok_is_name(look(p), "in")) {
            op = LP__OP_NOTIN;
            next(p);
            next(p);
        } else {
            break;
        }
        lp__node *o = mk(p, N_OPERAND, t);
        if (!o)
            return oom(p);
        o->op = (uint8_t)op;
        TRY(parse_math1(p, &o->a));
        TRY(fin(p, o));
        TRY(kl_push(p, &kl, o));
    }
    if (!kl.n) {
        *out = first;
        return LP_OK;
    }
    lp__node *nd = mk(p, N_COMPARE, at);
    if (!nd)
        return oom(p);
    nd->a = first;
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_not(ps *p, lp__node **out) {
    if (is_name(p, "not")) {
        TRY(enter(p));
        lp__node *nd = mk(p, N_NOT, next(p));
        if (!nd)
            return oom(p);
        TRY(parse_not(p, &nd->a));
        TRY(fin(p, nd));
        p->depth--;
        *out = nd;
        return LP_OK;
    }
    return parse_compare(p, out);
}

static int parse_and(ps *p, lp__node **out) {
    lp__node *l = NULL;
    TRY(parse_not(p, &l));
    while (is_name(p, "and")) {
        const lp__ct_tok *t = next(p);
        lp__node *r = NULL;
        TRY(parse_not(p, &r));
        TRY(binop(p, t, LP__OP_AND, l, r, &l));
    }
    *out = l;
    return LP_OK;
}

static int parse_or(ps *p, lp__node **out) {
    lp__node *l = NULL;
    TRY(parse_and(p, &l));
    while (is_name(p, "or")) {
        const lp__ct_tok *t = next(p);
        lp__node *r = NULL;
        TRY(parse_and(p, &r));
        TRY(binop(p, t, LP__OP_OR, l, r, &l));
    }
    *out = l;
    return LP_OK;
}

static int parse_condexpr(ps *p, lp__node **out) {
    const lp__ct_tok *at = cur(p);
    lp__node *e1 = NULL;
    TRY(parse_or(p, &e1));
    while (is_name(p, "if")) {
        next(p);
        lp__node *nd = mk(p, N_CONDEXPR, at);
        if (!nd)
            return oom(p);
        nd->b = e1;
        TRY(parse_or(p, &nd->a));
        if (is_name(p, "else")) {
            next(p);
            TRY(enter(p));
            TRY(parse_condexpr(p, &nd->c));
            p->depth--;
        }
        TRY(fin(p, nd));
        e1 = nd;
        at = cur(p);
    }
    *out = e1;
    return LP_OK;
}

static int parse_expression(ps *p, bool with_condexpr, lp__node **out) {
    if (with_condexpr)
        return parse_condexpr(p, out);
    return parse_or(p, out);
}

static bool tuple_end(ps *p, const char *extra_end) {
    const lp__ct_tok *t = cur(p);
    if (t->type == LP__T_VAR_END || t->type == LP__T_BLOCK_END ||
        tok_is_op(t, LP__OP_RPAREN))
        return true;
    return extra_end && tok_is_name(t, extra_end);
}

static int parse_tuple(ps *p, int mode, const char *extra_end,
                       bool explicit_parens, lp__node **out) {
    const lp__ct_tok *at = cur(p);
    kidlist kl = {0};
    bool is_tuple = false;
    for (;;) {
        if (kl.n)
            TRY(expect_op(p, LP__OP_COMMA));
        if (tuple_end(p, extra_end))
            break;
        lp__node *e = NULL;
        if (mode == TUP_SIMPLE)
            TRY(parse_primary(p, &e));
        else
            TRY(parse_expression(p, mode == TUP_COND, &e));
        TRY(kl_push(p, &kl, e));
        if (is_op(p, LP__OP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (kl.n) {
            *out = kl.v[0];
            return LP_OK;
        }
        if (!explicit_parens)
            return unexpected(p, "an expression");
    }
    lp__node *nd = mk(p, N_TUPLE, at);
    if (!nd)
        return oom(p);
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

/* ---- statements ---- */

static int check_assignable(ps *p, lp__node *t) {
    if (t->kind == N_NAME)
        return LP_OK;
    if (t->kind == N_TUPLE) {
        for (uint32_t i = 0; i < t->n; i++)
            TRY(check_assignable(p, t->kids[i]));
        return LP_OK;
    }
    return lp_error_set(p->err, LP_ERR_FORMAT, "line %u:%u: can't assign to this expression",
                        t->line, t->col);
}

static int parse_assign_target(ps *p, bool with_namespace,
                               const char *extra_end, lp__node **out) {
    if (with_namespace && cur(p)->type == LP__T_NAME &&
        tok_is_op(look(p), LP__OP_DOT)) {
        const lp__ct_tok *ns = next(p);
        next(p);
        const lp__ct_tok *attr = cur(p);
        TRY(expect_type(p, LP__T_NAME, "a name"));
        lp__node *nd = mk(p, N_NSREF, ns);
        if (!nd)
            return oom(p);
        nd->name = ns->p;
        nd->name_len = ns->n;
        nd->name2 = attr->p;
        nd->name2_len = attr->n;
        if (lp__ct_sym_intern(p->a, p->syms, ns->p, ns->n, &nd->sym))
            return oom(p);
        TRY(fin(p, nd));
        *out = nd;
        return LP_OK;
    }
    TRY(parse_tuple(p, TUP_SIMPLE, extra_end, false, out));
    return check_assignable(p, *out);
}

static int parse_name_target(ps *p, lp__node **out) {
    const lp__ct_tok *t = cur(p);
    TRY(expect_type(p, LP__T_NAME, "a name"));
    lp__node *nd = mk(p, N_NAME, t);
    if (!nd)
        return oom(p);
    nd->name = t->p;
    nd->name_len = t->n;
    if (lp__ct_sym_intern(p->a, p->syms, t->p, t->n, &nd->sym))
        return oom(p);
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

/* {% ... %} then a body up to one of `ends`; the end name is left current
 * unless drop_needle. */
static int parse_statements(ps *p, const char *const *ends, bool drop_needle,
                            lp__node **out) {
    if (is_op(p, LP__OP_COLON))
        next(p);
    TRY(expect_type(p, LP__T_BLOCK_END, "end of statement block"));
    TRY(subparse(p, ends, out));
    if (drop_needle)
        next(p);
    return LP_OK;
}

static int parse_signature(ps *p, lp__node *nd) {
    TRY(expect_op(p, LP__OP_LPAREN));
    kidlist kl = {0};
    bool defaults = false;
    while (!is_op(p, LP__OP_RPAREN)) {
        if (kl.n)
            TRY(expect_op(p, LP__OP_COMMA));
        lp__node *prm = NULL;
        TRY(parse_name_target(p, &prm));
        prm->kind = N_PARAM;
        if (is_op(p, LP__OP_ASSIGN)) {
            next(p);
            TRY(parse_expression(p, true, &prm->a));
            TRY(fin(p, prm));
            defaults = true;
        } else if (defaults) {
            return fail_at(p, cur(p), LP_ERR_FORMAT,
                           "non-default argument follows default argument");
        }
        TRY(kl_push(p, &kl, prm));
    }
    TRY(expect_op(p, LP__OP_RPAREN));
    nd->kids = kl.v;
    nd->n = kl.n;
    return LP_OK;
}

static int parse_for(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"endfor", "else", NULL};
    static const char *const ends2[] = {"endfor", NULL};
    lp__node *nd = mk(p, N_FOR, at);
    if (!nd)
        return oom(p);
    TRY(parse_assign_target(p, false, "in", &nd->a));
    if (!is_name(p, "in"))
        return unexpected(p, "'in'");
    next(p);
    TRY(parse_tuple(p, TUP_NOCOND, "recursive", false, &nd->b));
    if (is_name(p, "if")) {
        next(p);
        TRY(parse_expression(p, true, &nd->c));
    }
    if (is_name(p, "recursive"))
        return fail_at(p, cur(p), LP_ERR_UNSUPPORTED,
                       "recursive for loops are not supported");
    p->loop_depth++;
    TRY(parse_statements(p, ends, false, &nd->d));
    p->loop_depth--;
    if (is_name(p, "else")) {
        next(p);
        TRY(parse_statements(p, ends2, true, &nd->e));
    } else {
        next(p);
    }
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_if(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const ends2[] = {"endif", NULL};
    lp__node *nd = mk(p, N_IF, at);
    if (!nd)
        return oom(p);
    kidlist kl = {0};
    for (;;) {
        lp__node *cond, *body;
        TRY(parse_tuple(p, TUP_NOCOND, NULL, false, &cond));
        TRY(parse_statements(p, ends, false, &body));
        TRY(kl_push(p, &kl, cond));
        TRY(kl_push(p, &kl, body));
        const lp__ct_tok *t = next(p);
        if (tok_is_name(t, "elif"))
            continue;
        if (tok_is_name(t, "else"))
            TRY(parse_statements(p, ends2, true, &nd->c));
        break;
    }
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

/* The filters of a block set/filter block were finished before the body
 * (their innermost operand) was parsed: recompute their heights bottom-up.
 * The chain is at most LP__CT_MAX_HEIGHT long, so quadratic is fine. */
static int refin_chain(ps *p, lp__node *top, lp__node *bottom) {
    size_t len = 0;
    for (lp__node *f = top; f != bottom; f = f->a)
        len++;
    for (size_t i = len; i > 0; i--) {
        lp__node *f = top;
        for (size_t j = 1; j < i; j++)
            f = f->a;
        TRY(fin(p, f));
    }
    return LP_OK;
}

static int parse_set(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"endset", NULL};
    lp__node *nd = mk(p, N_SET, at);
    if (!nd)
        return oom(p);
    TRY(parse_assign_target(p, true, NULL, &nd->a));
    if (is_op(p, LP__OP_ASSIGN)) {
        next(p);
        TRY(parse_tuple(p, TUP_COND, NULL, false, &nd->b));
    } else {
        lp__node *cap = mk(p, N_CAPTURE, at);
        if (!cap)
            return oom(p);
        lp__node *val = cap;
        TRY(parse_filter(p, &val, false));
        TRY(parse_statements(p, ends, true, &cap->d));
        TRY(fin(p, cap));
        TRY(refin_chain(p, val, cap));
        nd->b = val;
    }
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_macro(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"endmacro", NULL};
    lp__node *nd = mk(p, N_MACRO, at);
    if (!nd)
        return oom(p);
    lp__node *name = NULL;
    TRY(parse_name_target(p, &name));
    nd->name = name->name;
    nd->name_len = name->name_len;
    nd->sym = name->sym;
    TRY(parse_signature(p, nd));
    int saved = p->loop_depth;
    p->loop_depth = 0;
    TRY(parse_statements(p, ends, true, &nd->d));
    p->loop_depth = saved;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_filter_block(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"endfilter", NULL};
    lp__node *nd = mk(p, N_OUTPUT, at), *cap = mk(p, N_CAPTURE, at);
    if (!nd || !cap)
        return oom(p);
    lp__node *val = cap;
    TRY(parse_filter(p, &val, true));
    TRY(parse_statements(p, ends, true, &cap->d));
    TRY(fin(p, cap));
    TRY(refin_chain(p, val, cap));
    nd->a = val;
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_with(ps *p, const lp__ct_tok *at, lp__node **out) {
    static const char *const ends[] = {"endwith", NULL};
    lp__node *nd = mk(p, N_WITH, at);
    if (!nd)
        return oom(p);
    kidlist kl = {0};
    while (cur(p)->type != LP__T_BLOCK_END) {
        if (kl.n)
            TRY(expect_op(p, LP__OP_COMMA));
        lp__node *s = mk(p, N_SET, cur(p));
        if (!s)
            return oom(p);
        TRY(parse_assign_target(p, false, NULL, &s->a));
        TRY(expect_op(p, LP__OP_ASSIGN));
        TRY(parse_expression(p, true, &s->b));
        TRY(fin(p, s));
        TRY(kl_push(p, &kl, s));
    }
    nd->kids = kl.v;
    nd->n = kl.n;
    TRY(parse_statements(p, ends, true, &nd->d));
    TRY(fin(p, nd));
    *out = nd;
    return LP_OK;
}

static int parse_statement(ps *p, lp__node **out) {
    const lp__ct_tok *t = cur(p);
    if (t->type != LP__T_NAME)
        return unexpected(p, "a tag name");
    TRY(enter(p));
    next(p);
    int rc = 0;
    if (tok_is_name(t, "for")) {
        rc = parse_for(p, t, out);
    } else if (tok_is_name(t, "if")) {
        rc = parse_if(p, t, out);
    } else if (tok_is_name(t, "set")) {
        rc = parse_set(p, t, out);
    } else if (tok_is_name(t, "macro")) {
        rc = parse_macro(p, t, out);
    } else if (tok_is_name(t, "filter")) {
        rc = parse_filter_block(p, t, out);
    } else if (tok_is_name(t, "with")) {
        rc = parse_with(p, t, out);
    } else if (tok_is_name(t, "generation")) {
        /* transformers' AssistantTracker: renders its body unchanged */
        static const char *const ends[] = {"endgeneration", NULL};
        rc = parse_statements(p, ends, true, out);
    } else if (tok_is_name(t, "print")) {
        lp__node *nd = mk(p, N_OUTPUT, t);
        if (!nd)
            return oom(p);
        rc = parse_tuple(p, TUP_COND, NULL, false, &nd->a);
        if (!rc)
            rc = fin(p, nd);
        *out = nd;
    } else if (tok_is_name(t, "break") || tok_is_name(t, "continue")) {
        if (p->loop_depth == 0)
            return fail_at(p, t, LP_ERR_FORMAT, "'%.*s' outside of a loop",
                           (int)t->n, t->p);
        lp__node *nd = mk(p, tok_is_name(t, "break") ? N_BREAK : N_CONTINUE, t);
        if (!nd)
            return oom(p);
        rc = fin(p, nd);
        *out = nd;
    } else if (tok_is_name(t, "block") || tok_is_name(t, "extends") ||
               tok_is_name(t, "include") || tok_is_name(t, "import") ||
               tok_is_name(t, "from") || tok_is_name(t, "autoescape") ||
               tok_is_name(t, "call")) {
        return fail_at(p, t, LP_ERR_UNSUPPORTED, "tag '%.*s' is not supported",
                       (int)t->n, t->p);
    } else {
        return fail_at(p, t, LP_ERR_FORMAT, "unknown tag '%.*s'",
                       (int)LP_MIN(t->n, 64), t->p);
    }
    p->depth--;
    return rc;
}

static int subparse(ps *p, const char *const *ends, lp__node **out) {
    TRY(enter(p));
    const lp__ct_tok *start = cur(p);
    kidlist kl = {0};
    for (;;) {
        const lp__ct_tok *t = cur(p);
        lp__node *nd = NULL;
        if (t->type == LP__T_DATA) {
            next(p);
            nd = mk(p, N_DATA, t);
            if (!nd)
                return oom(p);
            nd->name = t->p;
            nd->name_len = t->n;
            TRY(fin(p, nd));
        } else if (t->type == LP__T_VAR_BEGIN) {
            next(p);
            nd = mk(p, N_OUTPUT, t);
            if (!nd)
                return oom(p);
            TRY(parse_tuple(p, TUP_COND, NULL, false, &nd->a));
            TRY(expect_type(p, LP__T_VAR_END, "end of print statement"));
            TRY(fin(p, nd));
        } else if (t->type == LP__T_BLOCK_BEGIN) {
            next(p);
            if (ends) {
                for (int i = 0; ends[i]; i++)
                    if (is_name(p, ends[i]))
                        goto done;
            }
            TRY(parse_statement(p, &nd));
            TRY(expect_type(p, LP__T_BLOCK_END, "end of statement block"));
        } else if (t->type == LP__T_EOF) {
            if (!ends)
                break;
            char want[160];
            size_t k = 0;
            for (int i = 0; ends[i] && k < sizeof want; i++)
                k += (size_t)snprintf(want + k, sizeof want - k, "%s'%s'",
                                      i ? " or " : "", ends[i]);
            return fail_at(p, t, LP_ERR_FORMAT,
                           "unexpected end of template, expected %s", want);
        } else {
            return unexpected(p, NULL);
        }
        TRY(kl_push(p, &kl, nd));
    }
done:;
    lp__node *blk = mk(p, N_BLOCK, start);
    if (!blk)
        return oom(p);
    blk->kids = kl.v;
    blk->n = kl.n;
    TRY(fin(p, blk));
    p->depth--;
    *out = blk;
    return LP_OK;
}

int lp__ct_parse(lp__ct_arena *a, const lp__ct_tok *toks, size_t ntoks,
                 lp__ct_syms *syms, lp__node **root, lp_error *err) {
    ps p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.t = toks;
    p.n = ntoks;
    p.syms = syms;
    p.err = err;
    return subparse(&p, NULL, root);
}
