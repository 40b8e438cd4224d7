/* chat_template_impl.h - internals of the chat template interpreter, shared
 * by its lexer, parser, value, builtins and evaluator files. */
#ifndef LP_TOKENIZER_CHAT_TEMPLATE_IMPL_H
#define LP_TOKENIZER_CHAT_TEMPLATE_IMPL_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loraplex/chat_template.h"

/* Recursion bound for operations on values (repr, tojson, ==, JSON import):
 * Python's own recursion limit is about 1000. */
#define LP__CT_MAX_VALUE_DEPTH 512
/* Bound on the height of an expression tree (left-assoc chains such as
 * a + b + c grow it without parser recursion). */
#define LP__CT_MAX_HEIGHT 512
/* Bound on C recursion of the evaluator (expression + statement frames,
 * across macro calls): keeps the stack use of one render around 1 MiB. */
#define LP__CT_MAX_EVAL_FRAMES 2000

/* ---- arena: bump allocation in chunks, freed at once, optional cap ---- */
typedef struct lp__ct_chunk lp__ct_chunk;
typedef struct lp__ct_arena {
    lp__ct_chunk *head;
    size_t total;  /* bytes obtained from malloc so far */
    size_t cap;    /* 0 = unlimited */
    bool over_cap; /* the last NULL came from the cap, not from malloc */
} lp__ct_arena;

/* 16-aligned, uninitialised; NULL on OOM or when the cap would be passed. */
void *lp__ct_alloc(lp__ct_arena *a, size_t size);
void *lp__ct_alloc_array(lp__ct_arena *a, size_t n, size_t size);
char *lp__ct_strdup(lp__ct_arena *a, const char *s, size_t n);
void lp__ct_arena_free(lp__ct_arena *a);

/* ---- UTF-8 and Python's notion of whitespace ---- */
/* Decode one code point from s[0..n) (n >= 1). Returns its byte length;
 * invalid input yields U+FFFD and 1 (inputs are validated earlier). */
size_t lp__ct_utf8_dec(const char *s, size_t n, uint32_t *cp);
/* Encode cp (<= 0x10FFFF) into out[4]; returns the byte count. */
size_t lp__ct_utf8_enc(uint32_t cp, char *out);
/* true iff valid UTF-8 (no surrogates, no overlongs); *bad = offset of the
 * first invalid byte otherwise. */
bool lp__ct_utf8_valid(const char *s, size_t n, size_t *bad);
size_t lp__ct_utf8_count(const char *s, size_t n);
bool lp__ct_py_isspace(uint32_t cp);
/* Length of the whitespace run at s (0 if none) / ending at s+n. */
size_t lp__ct_space_prefix(const char *s, size_t n);
size_t lp__ct_space_suffix(const char *s, size_t n);

/* ---- lexer ---- */
enum {
    LP__T_DATA,
    LP__T_VAR_BEGIN,
    LP__T_VAR_END,
    LP__T_BLOCK_BEGIN,
    LP__T_BLOCK_END,
    LP__T_NAME,
    LP__T_STRING,
    LP__T_INT,
    LP__T_FLOAT,
    LP__T_OP,
    LP__T_EOF
};
enum {
    LP__OP_ADD = 1, LP__OP_SUB, LP__OP_DIV, LP__OP_FLOORDIV, LP__OP_MUL,
    LP__OP_MOD, LP__OP_POW, LP__OP_TILDE, LP__OP_LBRACKET, LP__OP_RBRACKET,
    LP__OP_LPAREN, LP__OP_RPAREN, LP__OP_LBRACE, LP__OP_RBRACE, LP__OP_EQ,
    LP__OP_NE, LP__OP_GT, LP__OP_GTEQ, LP__OP_LT, LP__OP_LTEQ, LP__OP_ASSIGN,
    LP__OP_DOT, LP__OP_COLON, LP__OP_PIPE, LP__OP_COMMA, LP__OP_SEMICOLON,
    /* not tokens: operators the parser adds */
    LP__OP_IN, LP__OP_NOTIN, LP__OP_AND, LP__OP_OR
};

typedef struct lp__ct_tok {
    uint8_t type, op;
    uint32_t line, col;
    const char *p; /* DATA, NAME, STRING (unescaped, arena): the text */
    size_t n;
    int64_t i;     /* INT */
    double f;      /* FLOAT */
} lp__ct_tok;

/* Allocation failure while compiling: LP_ERR_LIMIT if the arena's cap was
 * hit, else LP_ERR_NOMEM. */
int lp__ct_compile_oom(const lp__ct_arena *a, lp_error *err);

/* Tokenize normalized source (see lp_chat_template_compile) into an arena
 * array ending with an LP__T_EOF token. Errors: LP_ERR_FORMAT "line L:C: ...". */
int lp__ct_lex(lp__ct_arena *a, const char *src, size_t n, lp__ct_tok **toks,
               size_t *ntoks, lp_error *err);

/* ---- values ---- */
typedef enum {
    LP__V_UNDEF,
    LP__V_NONE,
    LP__V_BOOL,
    LP__V_INT,
    LP__V_FLOAT,
    LP__V_STR,
    LP__V_LIST,
    LP__V_TUPLE,
    LP__V_DICT,
    LP__V_NS,     /* namespace(): a dict whose attributes may be assigned */
    LP__V_RANGE,  /* lazy range(start, stop, step) */
    LP__V_LOOP,   /* the `loop` object of a for loop */
    LP__V_MACRO,  /* a {% macro %} */
    LP__V_FUNC,   /* a global function: aux = LP__G_* */
    LP__V_METHOD  /* a bound method: u.m */
} lp__vtype;

/* Why a value is undefined (for the error raised when it is misused). */
enum {
    LP__U_PLAIN,   /* no detail */
    LP__U_NAME,    /* variable u.s was never set */
    LP__U_ATTR,    /* object of type aux has no attribute u.s */
    LP__U_ITEM,    /* object of type aux has no element u.s (repr'd) */
    LP__U_UNSAFE,  /* sandbox: attribute u.s of type aux is unsafe */
    LP__U_MESSAGE  /* u.s is the whole message */
};

struct lp__ct_seq;
struct lp__ct_dict;
struct lp__ct_range;
struct lp__ct_loop;
struct lp__ct_method;
struct lp__ct_macro;

typedef struct lp__val {
    uint8_t t;    /* lp__vtype */
    uint8_t hint; /* UNDEF: LP__U_*; STR: 1 if Markup (safe) */
    uint16_t pad;
    uint32_t aux; /* FUNC: LP__G_*; UNDEF: lp__vtype of the container */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s; /* STR; UNDEF name */
        struct lp__ct_seq *seq;
        struct lp__ct_dict *d;
        struct lp__ct_range *r;
        struct lp__ct_loop *loop;
        struct lp__ct_macro *mac;
        struct lp__ct_method *m;
    } u;
} lp__val;

typedef struct lp__ct_seq {
    lp__val *v;
    size_t n, cap;
} lp__ct_seq;

typedef struct lp__ct_dent {
    lp__val k, v;
    uint64_t h;
} lp__ct_dent;

typedef struct lp__ct_dict {
    lp__ct_dent *e; /* insertion order */
    size_t n, cap;
    uint32_t *index; /* open addressing: entry index + 1, 0 = empty */
    size_t index_cap;
} lp__ct_dict;

typedef struct lp__ct_range {
    int64_t start, stop, step;
} lp__ct_range;

struct lp__node;
struct lp__ct_frame;
typedef struct lp__ct_macro {
    const struct lp__node *def;  /* N_MACRO */
    struct lp__ct_frame *scope;  /* where it was defined: its closure */
} lp__ct_macro;

typedef struct lp__ct_method {
    lp__val self;
    int id; /* LP__M_* */
} lp__ct_method;

static inline lp__val lp__v_undef(void) {
    lp__val v = {0};
    v.t = LP__V_UNDEF;
    return v;
}
static inline lp__val lp__v_none(void) {
    lp__val v = {0};
    v.t = LP__V_NONE;
    return v;
}
static inline lp__val lp__v_bool(bool b) {
    lp__val v = {0};
    v.t = LP__V_BOOL;
    v.u.b = b;
    return v;
}
static inline lp__val lp__v_int(int64_t i) {
    lp__val v = {0};
    v.t = LP__V_INT;
    v.u.i = i;
    return v;
}
static inline lp__val lp__v_float(double f) {
    lp__val v = {0};
    v.t = LP__V_FLOAT;
    v.u.f = f;
    return v;
}
static inline lp__val lp__v_str(const char *p, size_t n) {
    lp__val v = {0};
    v.t = LP__V_STR;
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline bool lp__v_is_seq(lp__val v) {
    return v.t == LP__V_LIST || v.t == LP__V_TUPLE;
}
static inline bool lp__v_is_num(lp__val v) {
    return v.t == LP__V_INT || v.t == LP__V_FLOAT || v.t == LP__V_BOOL;
}

/* ---- AST ---- */
enum {
    /* statements */
    N_BLOCK,    /* kids: statements */
    N_DATA,     /* name/len: literal text */
    N_OUTPUT,   /* a: expression to print */
    N_IF,       /* kids: cond0, body0, cond1, body1, ...; c: else body */
    N_FOR,      /* a: target, b: iterable, c: filter, d: body, e: else */
    N_SET,      /* a: target (N_NAME, N_TUPLE of names, N_NSREF), b: value */
    N_MACRO,    /* name, kids: N_PARAM, d: body */
    N_WITH,     /* kids: N_SET, d: body */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    N_CONST,    /* k */
    N_NAME,     /* name, sym */
    N_NSREF,    /* set target ns.attr: name (ns), sym, name2 (attr) */
    N_LIST,     /* kids */
    N_TUPLE,    /* kids */
    N_DICT,     /* kids: key0, value0, key1, ... */
    N_GETATTR,  /* a, name; sym: LP__M_* method id or -1 */
    N_GETITEM,  /* a, b (may be N_SLICE) */
    N_SLICE,    /* a, b, c: start, stop, step (NULL = None) */
    N_CALL,     /* a: callee, kids: args (N_KW for keywords, after npos) */
    N_FILTER,   /* a: operand, name, sym: LP__F_*, kids: args */
    N_TEST,     /* a: operand, name, sym: LP__TS_*, kids: args, op: negated */
    N_KW,       /* name = a */
    N_PARAM,    /* name, sym, a: default or NULL */
    N_NOT,      /* a */
    N_NEG,      /* a */
    N_POS,      /* a */
    N_BINOP,    /* op: LP__OP_*, a, b (and/or too) */
    N_CONCAT,   /* kids */
    N_COMPARE,  /* a: first operand, kids: N_OPERAND (op, a) */
    N_OPERAND,
    N_CONDEXPR, /* a: test, b: value if true, c: value if false or NULL */
    N_CAPTURE   /* d: body rendered to a string (block set, filter block) */
};

typedef struct lp__node {
    uint8_t kind;
    uint8_t op;
    uint16_t depth; /* height of the subtree, bounded at parse time */
    uint32_t line, col;
    uint32_t n, npos; /* kids count; positional args among them */
    int32_t sym;
    struct lp__node *a, *b, *c, *d, *e;
    struct lp__node **kids;
    const char *name, *name2;
    size_t name_len, name2_len;
    lp__val k;
} lp__node;

/* Symbols: every distinct identifier of the template gets an index. */
typedef struct lp__ct_syms {
    const char **name;
    size_t *len;
    uint32_t n, cap;
    uint32_t *hash; /* open addressing: symbol + 1 */
    uint32_t hash_cap;
} lp__ct_syms;

int lp__ct_sym_intern(lp__ct_arena *a, lp__ct_syms *s, const char *p,
                      size_t n, int32_t *out);

/* Parse the token array into a statement block. */
int lp__ct_parse(lp__ct_arena *a, const lp__ct_tok *toks, size_t ntoks,
                 lp__ct_syms *syms, lp__node **root, lp_error *err);

struct lp_chat_template {
    lp__ct_arena arena;
    lp__node *root;
    lp__ct_syms syms;
    int32_t *sym_global; /* per symbol: LP__G_* builtin or -1 */
    int32_t sym_loop; /* symbol of `loop`, or -1 if never named */
};

/* ---- builtins (filters, tests, global functions, methods) ---- */
enum {
    LP__G_RANGE,
    LP__G_NAMESPACE,
    LP__G_DICT,
    LP__G_RAISE,
    LP__G_STRFTIME,
    LP__G_COUNT
};
/* Look up a builtin by name: index or -1. */
int lp__ct_filter_id(const char *p, size_t n);
int lp__ct_test_id(const char *p, size_t n);
int lp__ct_global_id(const char *p, size_t n);
int lp__ct_method_id(const char *p, size_t n);
const char *lp__ct_global_name(int id);
const char *lp__ct_method_name(int id);

/* ---- evaluation context ---- */
typedef struct lp__ct_buf {
    char *p;
    size_t n, cap, max;
    const char *limit_name; /* named in the error when max is passed */
} lp__ct_buf;

typedef struct lp__ct_frame {
    struct lp__ct_frame *parent;
    uint32_t n, cap;
    int32_t *syms;
    lp__val *vals;
    int32_t isyms[6];
    lp__val ivals[6];
} lp__ct_frame;

typedef struct lp__ct_loop {
    lp__val seq; /* a LIST/TUPLE/RANGE or STR being iterated */
    int64_t index0, length;
    int depth0;
    lp__val prev, cur, next;
    bool has_next;
    lp__val changed_last;
    bool changed_any;
} lp__ct_loop;

typedef struct lp__ct_ctx {
    const lp_chat_template *t;
    lp__ct_arena arena;
    lp__ct_buf *out;
    uint64_t steps, max_steps;
    int frames, macro_depth, max_depth, loop_depth;
    size_t max_output;
    lp__val *globals; /* per symbol: the caller's variable or UNDEF */
    lp__ct_frame *root;  /* template-level variables (macros see these) */
    lp__ct_frame *frame; /* innermost scope */
    int64_t fixed_time;
    lp_error *err;
    bool raised;
    int ctl; /* pending {% break %} (1) / {% continue %} (2) */
} lp__ct_ctx;

/* Arguments of a call, evaluated. Keyword names point into the AST. */
typedef struct lp__ct_args {
    lp__val *pos;
    size_t npos;
    const lp__node **kw; /* N_KW nodes: name */
    lp__val *kwv;
    size_t nkw;
} lp__ct_args;

/* Errors. `at` (may be NULL) gives the line. Always return the code. */
int lp__ct_fail(lp__ct_ctx *c, const lp__node *at, int code, const char *fmt,
                ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
int lp__ct_oom(lp__ct_ctx *c); /* LP_ERR_LIMIT or LP_ERR_NOMEM */
/* Charge bulk work (n units ~ bytes or items) to the step counter. */
int lp__ct_charge(lp__ct_ctx *c, uint64_t n);
void *lp__ct_calloc(lp__ct_ctx *c, size_t size); /* zeroed arena memory */

/* Buffers: heap text with a cap; the owner frees them (also on error). */
void lp__ct_buf_init(lp__ct_buf *b, size_t max, const char *limit_name);
int lp__ct_buf_put(lp__ct_ctx *c, lp__ct_buf *b, const char *p, size_t n);
int lp__ct_buf_putc(lp__ct_ctx *c, lp__ct_buf *b, char ch);
void lp__ct_buf_free(lp__ct_buf *b);
/* Copy the buffer into the arena as a STR value and free the buffer. */
int lp__ct_buf_to_str(lp__ct_ctx *c, lp__ct_buf *b, lp__val *out);
/* A scratch buffer sized by the render's remaining memory budget. */
void lp__ct_buf_scratch(lp__ct_ctx *c, lp__ct_buf *b);

/* Value constructors (arena). */
int lp__ct_new_str(lp__ct_ctx *c, const char *p, size_t n, lp__val *out);
int lp__ct_new_seq(lp__ct_ctx *c, lp__vtype t, size_t cap, lp__val *out);
int lp__ct_seq_push(lp__ct_ctx *c, lp__ct_seq *s, lp__val v);
int lp__ct_new_dict(lp__ct_ctx *c, lp__vtype t, lp__val *out);
int lp__ct_dict_set(lp__ct_ctx *c, lp__ct_dict *d, lp__val k, lp__val v);
/* Find key; returns entry or NULL. A non-hashable key is a TypeError. */
int lp__ct_dict_find(lp__ct_ctx *c, const lp__ct_dict *d, lp__val k,
                     lp__ct_dent **out);
lp__ct_dent *lp__ct_dict_find_str(const lp__ct_dict *d, const char *p,
                                  size_t n);
int lp__ct_from_json(lp__ct_ctx *c, const json_t *j, lp__val *out, int depth);

/* Python semantics. */
bool lp__ct_truthy(lp__val v);
const char *lp__ct_type_name(lp__val v); /* 'str', 'NoneType', ... */
int64_t lp__ct_range_len(const lp__ct_range *r);
/* Length as len() sees it; -1 for values without one. */
int64_t lp__ct_len(lp__val v);
int lp__ct_eq(lp__ct_ctx *c, lp__val a, lp__val b, bool *res, int depth);
/* a < b etc.: *res is <0, 0, >0; types that do not order are a TypeError
 * naming op. */
int lp__ct_cmp(lp__ct_ctx *c, const lp__node *at, const char *op, lp__val a,
               lp__val b, int *res, int depth);
/* str(v) and repr(v) appended to b. */
int lp__ct_write_str(lp__ct_ctx *c, lp__ct_buf *b, lp__val v);
int lp__ct_write_repr(lp__ct_ctx *c, lp__ct_buf *b, lp__val v, int depth);
/* str(v) as a value (STR values are returned as is). */
int lp__ct_to_str(lp__ct_ctx *c, lp__val v, lp__val *out);
/* Python float repr ("1e+16", "0.1", "5.0"); json: Infinity/NaN spelling.
 * buf must hold 32 bytes; returns the length. */
size_t lp__ct_fmt_float(double f, bool json, char *buf);

typedef struct lp__ct_json_opts {
    bool ensure_ascii, sort_keys, has_indent;
    const char *indent;
    size_t indent_len;
    const char *item_sep, *key_sep;
    size_t item_sep_len, key_sep_len;
} lp__ct_json_opts;
/* Stable sort permutation of keys (Python's sorted; reverse keeps ties in
 * order). *perm is arena memory. */
int lp__ct_sort_perm(lp__ct_ctx *c, const lp__node *at, const lp__val *keys,
                     size_t n, bool reverse, size_t **perm);
int lp__ct_write_json(lp__ct_ctx *c, const lp__node *at, lp__ct_buf *b,
                      lp__val v, const lp__ct_json_opts *o, int level,
                      int depth);

/* The message Jinja raises when an undefined value is misused. */
int lp__ct_undef_fail(lp__ct_ctx *c, const lp__node *at, lp__val u);

/* Sequence access for iteration: the i-th item (lists, tuples, ranges, dict
 * keys); strings are iterated by the callers. */
lp__val lp__ct_seq_at(lp__val v, int64_t i);

/* ---- evaluator entry points used by the builtins ---- */
int lp__ct_eval(lp__ct_ctx *c, const lp__node *n, lp__val *out);
/* Python-like getattr/getitem with Jinja's fallback between the two. */
int lp__ct_getattr(lp__ct_ctx *c, const lp__node *at, lp__val obj,
                   const char *name, size_t len, int method_id, lp__val *out);
int lp__ct_getitem(lp__ct_ctx *c, const lp__node *at, lp__val obj,
                   lp__val key, lp__val *out);
/* `needle in hay` with Python semantics. */
int lp__ct_contains(lp__ct_ctx *c, const lp__node *at, lp__val hay,
                    lp__val needle, bool *res);
/* Call a callable value (macro, global function, method). */
int lp__ct_call(lp__ct_ctx *c, const lp__node *at, lp__val fn,
                lp__ct_args *args, lp__val *out);
/* Turn any iterable into a LIST (strings: one item per code point; dicts:
 * keys; undefined: empty). Non-iterables are a TypeError. */
int lp__ct_to_list(lp__ct_ctx *c, const lp__node *at, lp__val v,
                   lp__val *out);

/* Filters and tests by id (chat_template_builtins.c). */
int lp__ct_apply_filter(lp__ct_ctx *c, const lp__node *at, int id,
                        lp__val v, lp__ct_args *args, lp__val *out);
int lp__ct_apply_test(lp__ct_ctx *c, const lp__node *at, int id, lp__val v,
                      lp__ct_args *args, bool *out);
/* Python's str % args (s, r, d, i, f, e, g, x, o; flags, width, precision,
 * %(key)s with a dict). */
int lp__ct_percent_format(lp__ct_ctx *c, const lp__node *at, lp__val fmt,
                          lp__val args, lp__val *out);
int lp__ct_call_global(lp__ct_ctx *c, const lp__node *at, int id,
                       lp__ct_args *args, lp__val *out);
int lp__ct_call_method(lp__ct_ctx *c, const lp__node *at, lp__val self,
                       int id, lp__ct_args *args, lp__val *out);
/* Which methods a value of this type has (for getattr). */
bool lp__ct_has_method(lp__val self, int id);
/* Methods the immutable sandbox refuses (list.append, dict.update, ...). */
bool lp__ct_is_unsafe_method(lp__val self, const char *name, size_t len);

/* Render (chat_template_eval.c). */
int lp__ct_render(const lp_chat_template *t, const json_t *vars,
                  const lp_template_limits *lim, char **out, size_t *out_len,
                  bool *raised, lp_error *err);

#endif
