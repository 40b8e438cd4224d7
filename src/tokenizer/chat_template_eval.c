/* chat_template_eval.c - tree-walking evaluator for compiled chat templates:
 * Jinja2 scoping (a fresh scope per loop iteration and macro call,
 * namespace() for state that outlives them), Python operators, Jinja's
 * getattr/getitem fallbacks, and the step/output/memory/depth limits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_)                                                               \
            return rc_;                                                        \
    } while (0)

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

/* Keeps big-framed helpers out of the recursive evaluator functions. */
#define NOINLINE __attribute__((noinline))

static int exec_node(lp__ct_ctx *c, const lp__node *n);

/* ---- scopes ---- */

static void frame_init(lp__ct_frame *f, lp__ct_frame *parent) {
    f->parent = parent;
    f->n = 0;
    f->cap = (uint32_t)LP_ARRAY_LEN(f->isyms);
    f->syms = f->isyms;
    f->vals = f->ivals;
}

/* Scopes other than the root live in the arena: a macro keeps the scope it
 * was defined in (a closure, as Python's), which may outlive its block. */
static lp__ct_frame *frame_new(lp__ct_ctx *c, lp__ct_frame *parent) {
    lp__ct_frame *f = lp__ct_alloc(&c->arena, sizeof *f);
    if (f)
        frame_init(f, parent);
    return f;
}

static int frame_set(lp__ct_ctx *c, lp__ct_frame *f, int32_t sym, lp__val v) {
    for (uint32_t i = 0; i < f->n; i++) {
        if (f->syms[i] == sym) {
            f->vals[i] = v;
            return LP_OK;
        }
    }
    if (f->n == f->cap) {
        uint32_t ncap = f->cap * 2;
        int32_t *ns = lp__ct_alloc_array(&c->arena, ncap, sizeof *ns);
        lp__val *nv = lp__ct_alloc_array(&c->arena, ncap, sizeof *nv);
        if (!ns || !nv)
            return lp__ct_oom(c);
        memcpy(ns, f->syms, f->n * sizeof *ns);
        memcpy(nv, f->vals, f->n * sizeof *nv);
        f->syms = ns;
        f->vals = nv;
        f->cap = ncap;
    }
    f->syms[f->n] = sym;
    f->vals[f->n] = v;
    f->n++;
    return LP_OK;
}

static bool scope_get(const lp__ct_frame *f, int32_t sym, lp__val *out) {
    for (; f; f = f->parent) {
        for (uint32_t i = 0; i < f->n; i++) {
            if (f->syms[i] == sym) {
                *out = f->vals[i];
                return true;
            }
        }
    }
    return false;
}

static void lookup(lp__ct_ctx *c, int32_t sym, const char *name, size_t len,
                   lp__val *out) {
    if (scope_get(c->frame, sym, out))
        return;
    if (c->globals[sym].t != LP__V_UNDEF) {
        *out = c->globals[sym];
        return;
    }
    int g = c->t->sym_global[sym];
    if (g >= 0) {
        lp__val v = {0};
        v.t = LP__V_FUNC;
        v.aux = (uint32_t)g;
        *out = v;
        return;
    }
    lp__val u = lp__v_undef();
    u.hint = LP__U_NAME;
    u.u.s.p = name;
    u.u.s.n = len;
    *out = u;
}

/* ---- helpers ---- */

static lp__val undef_attr(lp__val obj, const char *name, size_t len, int hint) {
    lp__val u = lp__v_undef();
    u.hint = (uint8_t)hint;
    u.aux = obj.t;
    u.u.s.p = name;
    u.u.s.n = len;
    return u;
}

static int undef_item(lp__ct_ctx *c, lp__val obj, lp__val key, lp__val *out) {
    if (key.t == LP__V_STR) {
        *out = undef_attr(obj, key.u.s.p, key.u.s.n, LP__U_ATTR);
        return LP_OK;
    }
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    if (b.max > 256)
        b.max = 256;
    int rc = lp__ct_write_repr(c, &b, key, 0);
    lp__val s = lp__v_str("?", 1);
    if (rc == LP_OK)
        rc = lp__ct_buf_to_str(c, &b, &s);
    else
        lp__ct_buf_free(&b);
    if (rc && rc != LP_ERR_LIMIT)
        return rc;
    *out = undef_attr(obj, s.u.s.p, s.u.s.n, LP__U_ITEM);
    return LP_OK;
}

/* Python index semantics: int (or bool) index into a sequence of len n. */
static bool norm_index(lp__val key, int64_t n, int64_t *out) {
    if (key.t != LP__V_INT && key.t != LP__V_BOOL)
        return false;
    int64_t i = key.t == LP__V_BOOL ? (int64_t)key.u.b : key.u.i;
    if (i < 0)
        i += n;
    if (i < 0 || i >= n)
        return false;
    *out = i;
    return true;
}

/* Byte offset of code point index `idx` in s (idx <= count). */
static size_t cp_offset(const char *s, size_t n, int64_t idx) {
    size_t off = 0;
    for (int64_t k = 0; k < idx && off < n; k++) {
        off++;
        while (off < n && ((unsigned char)s[off] & 0xC0) == 0x80)
            off++;
    }
    return off;
}

static int loop_attr(lp__ct_ctx *c, lp__val obj, const char *name, size_t len,
                     lp__val *out) {
    const lp__ct_loop *L = obj.u.loop;
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
    if (IS("index"))
        *out = lp__v_int(L->index0 + 1);
    else if (IS("index0"))
        *out = lp__v_int(L->index0);
    else if (IS("revindex"))
        *out = lp__v_int(L->length - L->index0);
    else if (IS("revindex0"))
        *out = lp__v_int(L->length - L->index0 - 1);
    else if (IS("first"))
        *out = lp__v_bool(L->index0 == 0);
    else if (IS("last"))
        *out = lp__v_bool(L->index0 == L->length - 1);
    else if (IS("length"))
        *out = lp__v_int(L->length);
    else if (IS("depth"))
        *out = lp__v_int(1);
    else if (IS("depth0"))
        *out = lp__v_int(0);
    else if (IS("previtem")) {
        if (L->index0 > 0) {
            *out = lp__ct_seq_at(L->seq, L->index0 - 1);
        } else {
            *out = lp__v_undef();
            out->hint = LP__U_MESSAGE;
            out->u.s.p = "there is no previous item";
            out->u.s.n = strlen(out->u.s.p);
        }
    } else if (IS("nextitem")) {
        if (L->index0 + 1 < L->length) {
            *out = lp__ct_seq_at(L->seq, L->index0 + 1);
        } else {
            *out = lp__v_undef();
            out->hint = LP__U_MESSAGE;
            out->u.s.p = "there is no next item";
            out->u.s.n = strlen(out->u.s.p);
        }
    } else {
        int id = lp__ct_method_id(name, len);
        if (id >= 0 && lp__ct_has_method(obj, id)) {
            lp__ct_method *m = lp__ct_calloc(c, sizeof *m);
            if (!m)
                return lp__ct_oom(c);
            m->self = obj;
            m->id = id;
            lp__val v = {0};
            v.t = LP__V_METHOD;
            v.u.m = m;
            *out = v;
        } else {
            *out = undef_attr(obj, name, len, LP__U_ATTR);
        }
    }
#undef IS
    return LP_OK;
}

/* The Python attribute lookup half of Jinja's getattr/getitem: methods of
 * the value's type, sandbox refusals; *found = false if no such attribute. */
static int py_attr(lp__ct_ctx *c, lp__val obj, const char *name, size_t len,
                   int id, lp__val *out, bool *found) {
    *found = true;
    if (obj.t == LP__V_LOOP)
        return loop_attr(c, obj, name, len, out);
    if (id < 0)
        id = lp__ct_method_id(name, len);
    if (id >= 0 && lp__ct_has_method(obj, id)) {
        lp__ct_method *m = lp__ct_calloc(c, sizeof *m);
        if (!m)
            return lp__ct_oom(c);
        m->self = obj;
        m->id = id;
        lp__val v = {0};
        v.t = LP__V_METHOD;
        v.u.m = m;
        *out = v;
        return LP_OK;
    }
    if (lp__ct_is_unsafe_method(obj, name, len) ||
        (len >= 2 && name[0] == '_' && name[1] == '_')) {
        *out = undef_attr(obj, name, len, LP__U_UNSAFE);
        return LP_OK;
    }
    *found = false;
    return LP_OK;
}

int lp__ct_getattr(lp__ct_ctx *c, const lp__node *at, lp__val obj,
                   const char *name, size_t len, int method_id, lp__val *out) {
    if (obj.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, obj);
    if (obj.t == LP__V_NS) { /* Namespace.__getattribute__: its attrs only */
        lp__ct_dent *e = lp__ct_dict_find_str(obj.u.d, name, len);
        *out = e ? e->v : undef_attr(obj, name, len, LP__U_ATTR);
        return LP_OK;
    }
    bool found = false;
    TRY(py_attr(c, obj, name, len, method_id, out, &found));
    if (found)
        return LP_OK;
    if (obj.t == LP__V_DICT) { /* getattr failed: try obj[name] */
        lp__ct_dent *e = lp__ct_dict_find_str(obj.u.d, name, len);
        if (e) {
            *out = e->v;
            return LP_OK;
        }
    }
    *out = undef_attr(obj, name, len, LP__U_ATTR);
    return LP_OK;
}

int lp__ct_getitem(lp__ct_ctx *c, const lp__node *at, lp__val obj,
                   lp__val key, lp__val *out) {
    if (obj.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, obj);
    int64_t i = 0;
    switch (obj.t) {
    case LP__V_DICT: {
        lp__ct_dent *e = NULL;
        if (key.t != LP__V_LIST && key.t != LP__V_DICT && key.t != LP__V_NS)
            TRY(lp__ct_dict_find(c, obj.u.d, key, &e));
        if (e) {
            *out = e->v;
            return LP_OK;
        }
        break;
    }
    case LP__V_LIST:
    case LP__V_TUPLE:
        if (norm_index(key, (int64_t)obj.u.seq->n, &i)) {
            *out = obj.u.seq->v[i];
            return LP_OK;
        }
        break;
    case LP__V_RANGE:
        if (norm_index(key, lp__ct_range_len(obj.u.r), &i)) {
            *out = lp__ct_seq_at(obj, i);
            return LP_OK;
        }
        break;
    case LP__V_STR: {
        if (key.t == LP__V_INT || key.t == LP__V_BOOL) {
            int64_t n = (int64_t)lp__ct_utf8_count(obj.u.s.p, obj.u.s.n);
            if (norm_index(key, n, &i)) {
                TRY(lp__ct_charge(c, obj.u.s.n / 64));
                size_t off = cp_offset(obj.u.s.p, obj.u.s.n, i);
                uint32_t cp = 0;
                size_t k = lp__ct_utf8_dec(obj.u.s.p + off, obj.u.s.n - off, &cp);
                *out = lp__v_str(obj.u.s.p + off, k);
                return LP_OK;
            }
        }
        break;
    }
    case LP__V_NS:
        if (key.t == LP__V_STR)
            return lp__ct_getattr(c, at, obj, key.u.s.p, key.u.s.n, -1, out);
        break;
    default:
        break;
    }
    if (key.t == LP__V_STR) { /* obj[key] failed: try getattr(obj, key) */
        bool found = false;
        TRY(py_attr(c, obj, key.u.s.p, key.u.s.n, -1, out, &found));
        if (found)
            return LP_OK;
    }
    return undef_item(c, obj, key, out);
}

/* Python slice.indices() + item collection. */
static int slice_bound(lp__ct_ctx *c, const lp__node *at, lp__val v,
                       bool *given, int64_t *out) {
    *given = false;
    if (v.t == LP__V_NONE)
        return LP_OK;
    if (v.t == LP__V_INT || v.t == LP__V_BOOL) {
        *given = true;
        *out = v.t == LP__V_BOOL ? (int64_t)v.u.b : v.u.i;
        return LP_OK;
    }
    if (v.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, v);
    return lp__ct_fail(c, at, LP_ERR_INVALID,
                       "slice indices must be integers or None");
}

static NOINLINE int do_slice(lp__ct_ctx *c, const lp__node *at, lp__val obj,
                    lp__val vstart, lp__val vstop, lp__val vstep, lp__val *out) {
    if (obj.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, obj);
    if (obj.t == LP__V_DICT) /* slices bypass Jinja's getitem: Python raises */
        return lp__ct_fail(c, at, LP_ERR_INVALID, "unhashable type: 'slice'");
    if (obj.t != LP__V_STR && obj.t != LP__V_RANGE && !lp__v_is_seq(obj))
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%s' object is not subscriptable",
                           lp__ct_type_name(obj));
    bool has_start, has_stop, has_step;
    int64_t start = 0, stop = 0, step = 1;
    TRY(slice_bound(c, at, vstart, &has_start, &start));
    TRY(slice_bound(c, at, vstop, &has_stop, &stop));
    TRY(slice_bound(c, at, vstep, &has_step, &step));
    if (!has_step)
        step = 1;
    if (step == 0)
        return lp__ct_fail(c, at, LP_ERR_INVALID, "slice step cannot be zero");
    if (step == INT64_MIN)
        step = -INT64_MAX;
    int64_t len = lp__ct_len(obj);
    if (!has_start)
        start = step < 0 ? len - 1 : 0;
    else if (start < 0) {
        start = start < -len ? (step < 0 ? -1 : 0) : start + len;
    } else if (start >= len)
        start = step < 0 ? len - 1 : len;
    if (!has_stop)
        stop = step < 0 ? -1 : len;
    else if (stop < 0) {
        stop = stop < -len ? (step < 0 ? -1 : 0) : stop + len;
    } else if (stop >= len)
        stop = step < 0 ? len - 1 : len;
    int64_t count = 0;
    if (step < 0) {
        if (stop < start)
            count = (int64_t)(((uint64_t)start - (uint64_t)stop - 1) / (uint64_t)(-step)) + 1;
    } else if (start < stop) {
        count = (int64_t)(((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step) + 1;
    }
    if (obj.t == LP__V_RANGE) { /* a range of a range, as Python */
        const lp__ct_range *r = obj.u.r;
        int64_t a0, b0, st;
        lp__ct_range *nr = lp__ct_calloc(c, sizeof *nr);
        if (!nr)
            return lp__ct_oom(c);
        if (__builtin_mul_overflow(start, r->step, &a0) ||
            __builtin_add_overflow(a0, r->start, &nr->start) ||
            __builtin_mul_overflow(stop, r->step, &b0) ||
            __builtin_add_overflow(b0, r->start, &nr->stop) ||
            __builtin_mul_overflow(step, r->step, &st))
            return lp__ct_fail(c, at, LP_ERR_RANGE, "integer overflow");
        nr->step = st;
        lp__val rv = {0};
        rv.t = LP__V_RANGE;
        rv.u.r = nr;
        *out = rv;
        return LP_OK;
    }
    TRY(lp__ct_charge(c, (uint64_t)count));
    if (obj.t == LP__V_STR) {
        const char *s = obj.u.s.p;
        size_t n = obj.u.s.n;
        TRY(lp__ct_charge(c, n / 64));
        if (count == 0) {
            *out = lp__v_str("", 0);
            return LP_OK;
        }
        if (step == 1) {
            size_t a = cp_offset(s, n, start);
            size_t b = a + cp_offset(s + a, n - a, count);
            *out = lp__v_str(s + a, b - a);
            return LP_OK;
        }
        /* offsets of every code point, then pick */
        size_t *offs = lp__ct_alloc_array(&c->arena, (size_t)len + 1, sizeof *offs);
        if (!offs)
            return lp__ct_oom(c);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)s[i] & 0xC0) != 0x80)
                offs[k++] = i;
        offs[k] = n;
        lp__ct_buf b;
        lp__ct_buf_scratch(c, &b);
        int rc = LP_OK;
        for (int64_t j = 0, i = start; j < count && !rc; j++, i += step)
            rc = lp__ct_buf_put(c, &b, s + offs[i], offs[i + 1] - offs[i]);
        if (rc) {
            lp__ct_buf_free(&b);
            return rc;
        }
        return lp__ct_buf_to_str(c, &b, out);
    }
    TRY(lp__ct_new_seq(c, (lp__vtype)obj.t, (size_t)count, out));
    for (int64_t j = 0, i = start; j < count; j++, i += step)
        out->u.seq->v[j] = obj.u.seq->v[i];
    out->u.seq->n = (size_t)count;
    return LP_OK;
}

int lp__ct_to_list(lp__ct_ctx *c, const lp__node *at, lp__val v,
                   lp__val *out) {
    switch (v.t) {
    case LP__V_LIST:
        *out = v;
        return LP_OK;
    case LP__V_UNDEF:
        return lp__ct_new_seq(c, LP__V_LIST, 0, out);
    case LP__V_TUPLE:
    case LP__V_DICT:
    case LP__V_RANGE: {
        int64_t n = lp__ct_len(v);
        TRY(lp__ct_charge(c, (uint64_t)n));
        TRY(lp__ct_new_seq(c, LP__V_LIST, (size_t)n, out));
        for (int64_t i = 0; i < n; i++)
            out->u.seq->v[i] = lp__ct_seq_at(v, i);
        out->u.seq->n = (size_t)n;
        return LP_OK;
    }
    case LP__V_STR: {
        size_t n = lp__ct_utf8_count(v.u.s.p, v.u.s.n);
        TRY(lp__ct_charge(c, n));
        TRY(lp__ct_new_seq(c, LP__V_LIST, n, out));
        size_t off = 0, k = 0;
        while (off < v.u.s.n) {
            uint32_t cp = 0;
            size_t len = lp__ct_utf8_dec(v.u.s.p + off, v.u.s.n - off, &cp);
            out->u.seq->v[k++] = lp__v_str(v.u.s.p + off, len);
            off += len;
        }
        out->u.seq->n = k;
        return LP_OK;
    }
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%s' object is not iterable",
                           lp__ct_type_name(v));
    }
}

/* ---- operators ---- */

static int arith_fail(lp__ct_ctx *c, const lp__node *at, const char *op,
                      lp__val a, lp__val b) {
    return lp__ct_fail(c, at, LP_ERR_INVALID,
                       "unsupported operand type(s) for %s: '%s' and '%s'", op,
                       lp__ct_type_name(a), lp__ct_type_name(b));
}

static int overflow(lp__ct_ctx *c, const lp__node *at) {
    return lp__ct_fail(c, at, LP_ERR_RANGE,
                       "integer overflow (values are limited to 64 bits)");
}

static double as_double(lp__val v) {
    return v.t == LP__V_FLOAT ? v.u.f : v.t == LP__V_BOOL ? (double)v.u.b : (double)v.u.i;
}
static int64_t as_i64(lp__val v) { return v.t == LP__V_BOOL ? (int64_t)v.u.b : v.u.i; }
static bool intlike(lp__val v) { return v.t == LP__V_INT || v.t == LP__V_BOOL; }

/* Remaining memory budget check before building big repeated values. */
static int check_budget(lp__ct_ctx *c, size_t n, size_t elem) {
    size_t total = 0;
    if (!lp__mul_size(n, elem, &total) ||
        (c->arena.cap && total > c->arena.cap - LP_MIN(c->arena.cap, c->arena.total))) {
        c->arena.over_cap = true;
        return lp__ct_oom(c);
    }
    return LP_OK;
}

static int concat_seq(lp__ct_ctx *c, lp__val a, lp__val b, lp__val *out) {
    size_t n = a.u.seq->n + b.u.seq->n;
    TRY(lp__ct_charge(c, n));
    TRY(lp__ct_new_seq(c, (lp__vtype)a.t, n, out));
    if (a.u.seq->n)
        memcpy(out->u.seq->v, a.u.seq->v, a.u.seq->n * sizeof(lp__val));
    if (b.u.seq->n)
        memcpy(out->u.seq->v + a.u.seq->n, b.u.seq->v, b.u.seq->n * sizeof(lp__val));
    out->u.seq->n = n;
    return LP_OK;
}

static int repeat(lp__ct_ctx *c, const lp__node *at, lp__val seq, int64_t times,
                  lp__val *out) {
    if (times < 0)
        times = 0;
    if (seq.t == LP__V_STR) {
        size_t n = seq.u.s.n;
        TRY(check_budget(c, (size_t)times, n));
        TRY(lp__ct_charge(c, (uint64_t)times * n / 64));
        char *p = lp__ct_alloc(&c->arena, (size_t)times * n + 1);
        if (!p)
            return lp__ct_oom(c);
        for (int64_t i = 0; i < times; i++)
            memcpy(p + (size_t)i * n, seq.u.s.p, n);
        p[(size_t)times * n] = '\0';
        *out = lp__v_str(p, (size_t)times * n);
        return LP_OK;
    }
    size_t n = seq.u.seq->n;
    TRY(check_budget(c, (size_t)times, n * sizeof(lp__val)));
    TRY(lp__ct_charge(c, (uint64_t)times * n));
    TRY(lp__ct_new_seq(c, (lp__vtype)seq.t, (size_t)times * n, out));
    for (int64_t i = 0; i < times; i++)
        if (n)
            memcpy(out->u.seq->v + (size_t)i * n, seq.u.seq->v, n * sizeof(lp__val));
    out->u.seq->n = (size_t)times * n;
    (void)at;
    return LP_OK;
}

static int binop(lp__ct_ctx *c, const lp__node *at, int op, lp__val a,
                 lp__val b, lp__val *out) {
    if (a.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, a);
    if (b.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, b);
    bool nums = lp__v_is_num(a) && lp__v_is_num(b);
    bool ints = intlike(a) && intlike(b);
    int64_t x = 0, y = 0, r;
    if (ints) {
        x = as_i64(a);
        y = as_i64(b);
    }
    switch (op) {
    case LP__OP_ADD:
        if (ints) {
            if (__builtin_add_overflow(x, y, &r))
                return overflow(c, at);
            *out = lp__v_int(r);
            return LP_OK;
        }
        if (nums) {
            *out = lp__v_float(as_double(a) + as_double(b));
            return LP_OK;
        }
        if (a.t == LP__V_STR && b.t == LP__V_STR) {
            size_t n = a.u.s.n + b.u.s.n;
            TRY(lp__ct_charge(c, n / 64));
            char *p = lp__ct_alloc(&c->arena, n + 1);
            if (!p)
                return lp__ct_oom(c);
            memcpy(p, a.u.s.p, a.u.s.n);
            memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
            p[n] = '\0';
            *out = lp__v_str(p, n);
            return LP_OK;
        }
        if (a.t == b.t && lp__v_is_seq(a))
            return concat_seq(c, a, b, out);
        if (a.t == LP__V_STR || lp__v_is_seq(a))
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "can only concatenate %s (not \"%s\") to %s",
                               lp__ct_type_name(a), lp__ct_type_name(b),
                               lp__ct_type_name(a));
        return arith_fail(c, at, "+", a, b);
    case LP__OP_SUB:
        if (ints) {
            if (__builtin_sub_overflow(x, y, &r))
                return overflow(c, at);
            *out = lp__v_int(r);
            return LP_OK;
        }
        if (nums) {
            *out = lp__v_float(as_double(a) - as_double(b));
            return LP_OK;
        }
        return arith_fail(c, at, "-", a, b);
    case LP__OP_MUL:
        if (ints) {
            if (__builtin_mul_overflow(x, y, &r))
                return overflow(c, at);
            *out = lp__v_int(r);
            return LP_OK;
        }
        if (nums) {
            *out = lp__v_float(as_double(a) * as_double(b));
            return LP_OK;
        }
        if ((a.t == LP__V_STR || lp__v_is_seq(a)) && intlike(b))
            return repeat(c, at, a, as_i64(b), out);
        if ((b.t == LP__V_STR || lp__v_is_seq(b)) && intlike(a))
            return repeat(c, at, b, as_i64(a), out);
        if (a.t == LP__V_STR || lp__v_is_seq(a))
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "can't multiply sequence by non-int of type '%s'",
                               lp__ct_type_name(b));
        return arith_fail(c, at, "*", a, b);
    case LP__OP_DIV:
        if (nums) {
            double d = as_double(b);
            if (d == 0.0)
                return lp__ct_fail(c, at, LP_ERR_INVALID, "division by zero");
            *out = lp__v_float(as_double(a) / d);
            return LP_OK;
        }
        return arith_fail(c, at, "/", a, b);
    case LP__OP_FLOORDIV:
    case LP__OP_MOD:
        if (ints) {
            if (y == 0)
                return lp__ct_fail(c, at, LP_ERR_INVALID,
                                   "integer division or modulo by zero");
            if (y == -1) {
                if (op == LP__OP_MOD) {
                    *out = lp__v_int(0);
                    return LP_OK;
                }
                if (x == INT64_MIN)
                    return overflow(c, at);
                *out = lp__v_int(-x);
                return LP_OK;
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            *out = lp__v_int(op == LP__OP_MOD ? m : q);
            return LP_OK;
        }
        if (nums) {
            double vx = as_double(a), wx = as_double(b);
            if (wx == 0.0)
                return lp__ct_fail(c, at, LP_ERR_INVALID, op == LP__OP_MOD
                                       ? "float modulo" : "float floor division by zero");
            double mod = fmod(vx, wx), div = (vx - mod) / wx;
            if (mod != 0.0) {
                if ((wx < 0) != (mod < 0)) {
                    mod += wx;
                    div -= 1.0;
                }
            } else {
                mod = copysign(0.0, wx);
            }
            double fd = 0;
            if (div != 0.0) {
                fd = floor(div);
                if (div - fd > 0.5)
                    fd += 1.0;
            } else {
                fd = copysign(0.0, vx / wx);
            }
            *out = lp__v_float(op == LP__OP_MOD ? mod : fd);
            return LP_OK;
        }
        if (op == LP__OP_MOD && a.t == LP__V_STR)
            return lp__ct_percent_format(c, at, a, b, out);
        return arith_fail(c, at, op == LP__OP_MOD ? "%" : "//", a, b);
    case LP__OP_POW:
        if (ints && y >= 0) {
            int64_t base = x, acc = 1;
            uint64_t e = (uint64_t)y;
            while (e) {
                if (e & 1) {
                    if (__builtin_mul_overflow(acc, base, &acc))
                        return overflow(c, at);
                }
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base))
                    return overflow(c, at);
            }
            *out = lp__v_int(acc);
            return LP_OK;
        }
        if (nums) {
            double vx = as_double(a), wx = as_double(b);
            if (vx == 0.0 && wx < 0)
                return lp__ct_fail(c, at, LP_ERR_INVALID,
                                   "0.0 cannot be raised to a negative power");
            if (vx < 0 && wx != floor(wx))
                return lp__ct_fail(c, at, LP_ERR_UNSUPPORTED,
                                   "complex numbers are not supported");
            double r2 = pow(vx, wx);
            if (isinf(r2) && !isinf(vx) && !isinf(wx))
                return lp__ct_fail(c, at, LP_ERR_RANGE, "numerical result out of range");
            *out = lp__v_float(r2);
            return LP_OK;
        }
        return arith_fail(c, at, "** or pow()", a, b);
    default:
        return lp__ct_fail(c, at, LP_ERR_INTERNAL, "bad operator");
    }
}

int lp__ct_contains(lp__ct_ctx *c, const lp__node *at, lp__val hay,
                    lp__val needle, bool *res) {
    *res = false;
    switch (hay.t) {
    case LP__V_STR:
        if (needle.t != LP__V_STR)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "'in <string>' requires string as left operand, not %s",
                               lp__ct_type_name(needle));
        TRY(lp__ct_charge(c, hay.u.s.n / 64));
        *res = needle.u.s.n == 0 ||
               memmem(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
        return LP_OK;
    case LP__V_LIST:
    case LP__V_TUPLE:
        TRY(lp__ct_charge(c, hay.u.seq->n));
        for (size_t i = 0; i < hay.u.seq->n; i++) {
            TRY(lp__ct_eq(c, hay.u.seq->v[i], needle, res, 0));
            if (*res)
                return LP_OK;
        }
        return LP_OK;
    case LP__V_DICT: {
        lp__ct_dent *e = NULL;
        TRY(lp__ct_dict_find(c, hay.u.d, needle, &e));
        *res = e != NULL;
        return LP_OK;
    }
    case LP__V_RANGE: {
        int64_t n = lp__ct_range_len(hay.u.r);
        if (intlike(needle)) {
            int64_t v = as_i64(needle), st = hay.u.r->step;
            __int128 off = (__int128)v - hay.u.r->start;
            *res = n > 0 && off % st == 0 && off / st >= 0 && off / st < n;
            return LP_OK;
        }
        TRY(lp__ct_charge(c, (uint64_t)n));
        for (int64_t i = 0; i < n; i++) {
            TRY(lp__ct_eq(c, lp__ct_seq_at(hay, i), needle, res, 0));
            if (*res)
                return LP_OK;
        }
        return LP_OK;
    }
    case LP__V_UNDEF:
        return LP_OK; /* Undefined iterates as empty */
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "argument of type '%s' is not iterable",
                           lp__ct_type_name(hay));
    }
}

static int compare_op(lp__ct_ctx *c, const lp__node *at, int op, lp__val a,
                      lp__val b, bool *res) {
    int r = 0;
    switch (op) {
    case LP__OP_EQ:
        return lp__ct_eq(c, a, b, res, 0);
    case LP__OP_NE:
        TRY(lp__ct_eq(c, a, b, res, 0));
        *res = !*res;
        return LP_OK;
    case LP__OP_IN:
        return lp__ct_contains(c, at, b, a, res);
    case LP__OP_NOTIN:
        TRY(lp__ct_contains(c, at, b, a, res));
        *res = !*res;
        return LP_OK;
    case LP__OP_LT:
        TRY(lp__ct_cmp(c, at, "<", a, b, &r, 0));
        *res = r == -1;
        return LP_OK;
    case LP__OP_LTEQ:
        TRY(lp__ct_cmp(c, at, "<=", a, b, &r, 0));
        *res = r == -1 || r == 0;
        return LP_OK;
    case LP__OP_GT:
        TRY(lp__ct_cmp(c, at, ">", a, b, &r, 0));
        *res = r == 1;
        return LP_OK;
    case LP__OP_GTEQ:
        TRY(lp__ct_cmp(c, at, ">=", a, b, &r, 0));
        *res = r == 1 || r == 0;
        return LP_OK;
    default:
        return lp__ct_fail(c, at, LP_ERR_INTERNAL, "bad comparison");
    }
}

/* ---- calls ---- */

static int eval_args(lp__ct_ctx *c, const lp__node *n, lp__ct_args *a) {
    memset(a, 0, sizeof *a);
    if (n->n == 0)
        return LP_OK;
    a->pos = lp__ct_alloc_array(&c->arena, n->npos ? n->npos : 1, sizeof *a->pos);
    size_t nkw = n->n - n->npos;
    a->kw = lp__ct_alloc_array(&c->arena, nkw ? nkw : 1, sizeof *a->kw);
    a->kwv = lp__ct_alloc_array(&c->arena, nkw ? nkw : 1, sizeof *a->kwv);
    if (!a->pos || !a->kw || !a->kwv)
        return lp__ct_oom(c);
    for (uint32_t i = 0; i < n->n; i++) {
        const lp__node *k = n->kids[i];
        if (k->kind == N_KW) {
            a->kw[a->nkw] = k;
            TRY(lp__ct_eval(c, k->a, &a->kwv[a->nkw]));
            a->nkw++;
        } else {
            TRY(lp__ct_eval(c, k, &a->pos[a->npos]));
            a->npos++;
        }
    }
    return LP_OK;
}

/* Render body to a string in a scope of its own: block set and filter
 * bodies do not leak their assignments (Jinja's frame.inner()); macro calls
 * bring their own frame. */
static int capture_in(lp__ct_ctx *c, const lp__node *body, bool new_scope,
                      lp__val *out) {
    lp__ct_buf b;
    lp__ct_buf_init(&b, c->max_output, "max_output");
    lp__ct_buf *saved = c->out;
    lp__ct_frame *saved_frame = c->frame;
    if (new_scope) {
        lp__ct_frame *fr = frame_new(c, c->frame);
        if (!fr)
            return lp__ct_oom(c);
        c->frame = fr;
    }
    c->out = &b;
    int rc = exec_node(c, body);
    c->out = saved;
    c->frame = saved_frame;
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

static int capture(lp__ct_ctx *c, const lp__node *body, lp__val *out) {
    return capture_in(c, body, true, out);
}

static int call_macro(lp__ct_ctx *c, const lp__node *at, const lp__ct_macro *m,
                      lp__ct_args *a, lp__val *out) {
    const lp__node *def = m->def;
    if (c->macro_depth >= c->max_depth)
        return lp__ct_fail(c, at, LP_ERR_LIMIT,
                           "chat template: max_depth (%d) exceeded by macro calls",
                           c->max_depth);
    if (a->npos > def->n)
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "macro '%.*s' takes not more than %u argument(s)",
                           (int)def->name_len, def->name, def->n);
    lp__ct_frame *fr = frame_new(c, m->scope);
    if (!fr)
        return lp__ct_oom(c);
    lp__ct_frame *saved = c->frame;
    c->frame = fr;
    c->macro_depth++;
    int rc = LP_OK;
    for (size_t k = 0; k < a->nkw && !rc; k++) {
        bool known = false;
        for (uint32_t i = a->npos; i < def->n; i++)
            if (def->kids[i]->name_len == a->kw[k]->name_len &&
                memcmp(def->kids[i]->name, a->kw[k]->name, a->kw[k]->name_len) == 0)
                known = true;
        if (!known)
            rc = lp__ct_fail(c, at, LP_ERR_INVALID,
                             "macro '%.*s' takes no keyword argument '%.*s'",
                             (int)def->name_len, def->name,
                             (int)a->kw[k]->name_len, a->kw[k]->name);
    }
    for (uint32_t i = 0; i < def->n && !rc; i++) {
        const lp__node *prm = def->kids[i];
        lp__val v = lp__v_undef();
        bool have = false;
        if (i < a->npos) {
            v = a->pos[i];
            have = true;
        }
        for (size_t k = 0; k < a->nkw && !have; k++) {
            if (a->kw[k]->name_len == prm->name_len &&
                memcmp(a->kw[k]->name, prm->name, prm->name_len) == 0) {
                v = a->kwv[k];
                have = true;
            }
        }
        if (!have && prm->a)
            rc = lp__ct_eval(c, prm->a, &v);
        else if (!have) {
            v.hint = LP__U_MESSAGE;
            v.u.s.p = "parameter was not provided";
            v.u.s.n = strlen(v.u.s.p);
        }
        if (!rc)
            rc = frame_set(c, fr, prm->sym, v);
    }
    if (!rc)
        rc = capture_in(c, def->d, false, out);
    c->macro_depth--;
    c->frame = saved;
    return rc;
}

int lp__ct_call(lp__ct_ctx *c, const lp__node *at, lp__val fn,
                lp__ct_args *args, lp__val *out) {
    switch (fn.t) {
    case LP__V_MACRO:
        return call_macro(c, at, fn.u.mac, args, out);
    case LP__V_FUNC:
        return lp__ct_call_global(c, at, (int)fn.aux, args, out);
    case LP__V_METHOD:
        return lp__ct_call_method(c, at, fn.u.m->self, fn.u.m->id, args, out);
    case LP__V_UNDEF:
        return lp__ct_undef_fail(c, at, fn);
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%s' object is not callable",
                           lp__ct_type_name(fn));
    }
}

/* ---- expressions ---- */

/* eval_inner recurses once per tree level, so it keeps no locals of its
 * own: every case with state lives in a NOINLINE helper (under ASan a
 * merged frame is several KiB). */

static NOINLINE int eval_seq(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    TRY(lp__ct_new_seq(c, n->kind == N_LIST ? LP__V_LIST : LP__V_TUPLE, n->n, out));
    for (uint32_t i = 0; i < n->n; i++) {
        lp__val a;
        TRY(lp__ct_eval(c, n->kids[i], &a));
        out->u.seq->v[i] = a;
        out->u.seq->n = i + 1;
    }
    return LP_OK;
}

static NOINLINE int eval_dict(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    TRY(lp__ct_new_dict(c, LP__V_DICT, out));
    for (uint32_t i = 0; i + 1 < n->n; i += 2) {
        lp__val k, v;
        TRY(lp__ct_eval(c, n->kids[i], &k));
        TRY(lp__ct_eval(c, n->kids[i + 1], &v));
        if (k.t == LP__V_UNDEF)
            return lp__ct_undef_fail(c, n, k);
        TRY(lp__ct_dict_set(c, out->u.d, k, v));
    }
    return LP_OK;
}

static NOINLINE int eval_getattr(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a;
    TRY(lp__ct_eval(c, n->a, &a));
    return lp__ct_getattr(c, n, a, n->name, n->name_len, n->sym, out);
}

static NOINLINE int eval_getitem(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a, b;
    TRY(lp__ct_eval(c, n->a, &a));
    if (n->b->kind == N_SLICE) {
        const lp__node *s = n->b;
        lp__val st = lp__v_none(), sp = lp__v_none(), ss = lp__v_none();
        if (s->a)
            TRY(lp__ct_eval(c, s->a, &st));
        if (s->b)
            TRY(lp__ct_eval(c, s->b, &sp));
        if (s->c)
            TRY(lp__ct_eval(c, s->c, &ss));
        return do_slice(c, n, a, st, sp, ss, out);
    }
    TRY(lp__ct_eval(c, n->b, &b));
    return lp__ct_getitem(c, n, a, b, out);
}

/* Calls, filters and tests: operand, then the arguments. */
static NOINLINE int eval_applied(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a;
    lp__ct_args args;
    TRY(lp__ct_eval(c, n->a, &a));
    TRY(eval_args(c, n, &args));
    if (n->kind == N_CALL)
        return lp__ct_call(c, n, a, &args, out);
    if (n->kind == N_FILTER)
        return lp__ct_apply_filter(c, n, n->sym, a, &args, out);
    bool r;
    TRY(lp__ct_apply_test(c, n, n->sym, a, &args, &r));
    *out = lp__v_bool(n->op ? !r : r);
    return LP_OK;
}

static NOINLINE int eval_unary(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a;
    TRY(lp__ct_eval(c, n->a, &a));
    if (n->kind == N_NOT) {
        *out = lp__v_bool(!lp__ct_truthy(a));
        return LP_OK;
    }
    if (a.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, n, a);
    if (intlike(a)) {
        int64_t v = as_i64(a);
        if (n->kind == N_NEG && v == INT64_MIN)
            return overflow(c, n);
        *out = lp__v_int(n->kind == N_NEG ? -v : v);
        return LP_OK;
    }
    if (a.t == LP__V_FLOAT) {
        *out = lp__v_float(n->kind == N_NEG ? -a.u.f : a.u.f);
        return LP_OK;
    }
    return lp__ct_fail(c, n, LP_ERR_INVALID, "bad operand type for unary %c: '%s'",
                       n->kind == N_NEG ? '-' : '+', lp__ct_type_name(a));
}

static NOINLINE int eval_binop(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a, b;
    TRY(lp__ct_eval(c, n->a, &a));
    if (n->op == LP__OP_AND || n->op == LP__OP_OR) {
        bool t = lp__ct_truthy(a);
        if ((n->op == LP__OP_AND) != t) {
            *out = a;
            return LP_OK;
        }
        return lp__ct_eval(c, n->b, out);
    }
    TRY(lp__ct_eval(c, n->b, &b));
    return binop(c, n, n->op, a, b, out);
}

static NOINLINE int eval_concat(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__ct_buf buf;
    lp__ct_buf_scratch(c, &buf);
    int rc = LP_OK;
    for (uint32_t i = 0; i < n->n && !rc; i++) {
        lp__val a;
        rc = lp__ct_eval(c, n->kids[i], &a);
        if (!rc)
            rc = lp__ct_write_str(c, &buf, a);
    }
    if (rc) {
        lp__ct_buf_free(&buf);
        return rc;
    }
    return lp__ct_buf_to_str(c, &buf, out);
}

static NOINLINE int eval_compare(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a, b;
    TRY(lp__ct_eval(c, n->a, &a));
    bool r = true;
    for (uint32_t i = 0; i < n->n && r; i++) {
        TRY(lp__ct_eval(c, n->kids[i]->a, &b));
        TRY(compare_op(c, n, n->kids[i]->op, a, b, &r));
        a = b;
    }
    *out = lp__v_bool(r);
    return LP_OK;
}

static NOINLINE int eval_condexpr(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    lp__val a;
    TRY(lp__ct_eval(c, n->a, &a));
    if (lp__ct_truthy(a))
        return lp__ct_eval(c, n->b, out);
    if (n->c)
        return lp__ct_eval(c, n->c, out);
    *out = lp__v_undef();
    out->hint = LP__U_MESSAGE;
    out->u.s.p = "the inline if-expression evaluated to false and no else "
                 "section was defined.";
    out->u.s.n = strlen(out->u.s.p);
    return LP_OK;
}

static int eval_inner(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    switch (n->kind) {
    case N_CONST:
        *out = n->k;
        return LP_OK;
    case N_NAME:
        lookup(c, n->sym, n->name, n->name_len, out);
        return LP_OK;
    case N_LIST:
    case N_TUPLE: return eval_seq(c, n, out);
    case N_DICT: return eval_dict(c, n, out);
    case N_GETATTR: return eval_getattr(c, n, out);
    case N_GETITEM: return eval_getitem(c, n, out);
    case N_CALL:
    case N_FILTER:
    case N_TEST: return eval_applied(c, n, out);
    case N_NOT:
    case N_NEG:
    case N_POS: return eval_unary(c, n, out);
    case N_BINOP: return eval_binop(c, n, out);
    case N_CONCAT: return eval_concat(c, n, out);
    case N_COMPARE: return eval_compare(c, n, out);
    case N_CONDEXPR: return eval_condexpr(c, n, out);
    case N_CAPTURE: return capture(c, n->d, out);
    default:
        return lp__ct_fail(c, n, LP_ERR_INTERNAL, "unexpected node %d", n->kind);
    }
}

int lp__ct_eval(lp__ct_ctx *c, const lp__node *n, lp__val *out) {
    if (++c->frames > LP__CT_MAX_EVAL_FRAMES) {
        c->frames--;
        return lp__ct_fail(c, n, LP_ERR_LIMIT,
                           "chat template: evaluation nested deeper than %d",
                           LP__CT_MAX_EVAL_FRAMES);
    }
    int rc = lp__ct_charge(c, 1);
    if (!rc)
        rc = eval_inner(c, n, out);
    c->frames--;
    return rc;
}

/* ---- statements ---- */

static int assign(lp__ct_ctx *c, const lp__node *target, lp__val v) {
    if (target->kind == N_NAME)
        return frame_set(c, c->frame, target->sym, v);
    if (target->kind == N_NSREF) {
        lp__val ns;
        lookup(c, target->sym, target->name, target->name_len, &ns);
        if (ns.t != LP__V_NS)
            return lp__ct_fail(c, target, LP_ERR_INVALID,
                               "cannot assign attribute on non-namespace object");
        return lp__ct_dict_set(c, ns.u.d, lp__v_str(target->name2, target->name2_len), v);
    }
    /* tuple unpacking */
    lp__val items;
    TRY(lp__ct_to_list(c, target, v, &items));
    size_t n = items.u.seq->n;
    if (n != target->n) {
        if (n > target->n)
            return lp__ct_fail(c, target, LP_ERR_INVALID,
                               "too many values to unpack (expected %u)", target->n);
        return lp__ct_fail(c, target, LP_ERR_INVALID,
                           "not enough values to unpack (expected %u, got %zu)",
                           target->n, n);
    }
    for (uint32_t i = 0; i < target->n; i++)
        TRY(assign(c, target->kids[i], items.u.seq->v[i]));
    return LP_OK;
}

static int exec_block(lp__ct_ctx *c, const lp__node *blk) {
    for (uint32_t i = 0; i < blk->n; i++) {
        TRY(exec_node(c, blk->kids[i]));
        if (c->ctl)
            return LP_OK;
    }
    return LP_OK;
}

/* The sequence a for loop walks: lists, tuples and ranges as they are,
 * strings and dicts as lists, undefined as empty. */
static int loop_seq(lp__ct_ctx *c, const lp__node *at, lp__val v, lp__val *out) {
    if (v.t == LP__V_LIST || v.t == LP__V_TUPLE || v.t == LP__V_RANGE) {
        *out = v;
        return LP_OK;
    }
    return lp__ct_to_list(c, at, v, out);
}

static NOINLINE int exec_for(lp__ct_ctx *c, const lp__node *n) {
    lp__val it, seq;
    TRY(lp__ct_eval(c, n->b, &it));
    TRY(loop_seq(c, n, it, &seq));
    lp__ct_frame *fr = frame_new(c, c->frame);
    if (!fr)
        return lp__ct_oom(c);
    lp__ct_frame *saved = c->frame;
    int rc = LP_OK;
    if (n->c) { /* `for x in xs if cond`: filter first (Jinja filters lazily) */
        lp__val kept;
        rc = lp__ct_new_seq(c, LP__V_LIST, 0, &kept);
        int64_t len = lp__ct_len(seq);
        c->frame = fr;
        for (int64_t i = 0; i < len && !rc; i++) {
            lp__val item = lp__ct_seq_at(seq, i), cond;
            fr->n = 0;
            rc = lp__ct_charge(c, 1);
            if (!rc)
                rc = assign(c, n->a, item);
            if (!rc)
                rc = lp__ct_eval(c, n->c, &cond);
            if (!rc && lp__ct_truthy(cond))
                rc = lp__ct_seq_push(c, kept.u.seq, item);
        }
        c->frame = saved;
        if (rc)
            return rc;
        seq = kept;
    }
    int64_t len = lp__ct_len(seq);
    /* Jinja runs `else` unless some iteration reached the end of the body:
     * an iteration left by break or continue does not count. */
    bool completed = false;
    lp__ct_loop *L = lp__ct_calloc(c, sizeof *L);
    if (!L)
        return lp__ct_oom(c);
    L->seq = seq;
    L->length = len;
    lp__val lv = {0};
    lv.t = LP__V_LOOP;
    lv.u.loop = L;
    c->loop_depth++;
    c->frame = fr;
    for (int64_t i = 0; i < len && !rc; i++) {
        L->index0 = i;
        fr->n = 0; /* a fresh scope per iteration, as in Jinja */
        rc = lp__ct_charge(c, 1);
        if (!rc)
            rc = assign(c, n->a, lp__ct_seq_at(seq, i));
        if (!rc && c->t->sym_loop >= 0)
            rc = frame_set(c, fr, c->t->sym_loop, lv);
        if (!rc)
            rc = exec_node(c, n->d);
        if (!rc && c->ctl == CTL_NONE)
            completed = true;
        if (c->ctl == CTL_BREAK) {
            c->ctl = CTL_NONE;
            break;
        }
        c->ctl = CTL_NONE;
    }
    c->loop_depth--;
    if (!rc && !completed && n->e) {
        fr->n = 0;
        rc = exec_node(c, n->e);
    }
    c->frame = saved;
    return rc;
}

static NOINLINE int exec_output(lp__ct_ctx *c, const lp__node *n) {
    lp__val v;
    TRY(lp__ct_eval(c, n->a, &v));
    return lp__ct_write_str(c, c->out, v);
}

static NOINLINE int exec_if(lp__ct_ctx *c, const lp__node *n) {
    for (uint32_t i = 0; i + 1 < n->n; i += 2) {
        lp__val v;
        TRY(lp__ct_eval(c, n->kids[i], &v));
        if (lp__ct_truthy(v))
            return exec_node(c, n->kids[i + 1]);
    }
    return n->c ? exec_node(c, n->c) : LP_OK;
}

static NOINLINE int exec_set(lp__ct_ctx *c, const lp__node *n) {
    lp__val v;
    TRY(lp__ct_eval(c, n->b, &v));
    return assign(c, n->a, v);
}

static NOINLINE int exec_macro(lp__ct_ctx *c, const lp__node *n) {
    lp__ct_macro *m = lp__ct_calloc(c, sizeof *m);
    if (!m)
        return lp__ct_oom(c);
    m->def = n;
    m->scope = c->frame;
    lp__val v = lp__v_undef();
    v.t = LP__V_MACRO;
    v.u.mac = m;
    return frame_set(c, c->frame, n->sym, v);
}

static NOINLINE int exec_with(lp__ct_ctx *c, const lp__node *n) {
    lp__ct_frame *fr = frame_new(c, c->frame);
    if (!fr)
        return lp__ct_oom(c);
    lp__ct_frame *saved = c->frame;
    int rc = LP_OK;
    lp__val *vals = lp__ct_alloc_array(&c->arena, n->n ? n->n : 1, sizeof *vals);
    if (!vals)
        return lp__ct_oom(c);
    for (uint32_t i = 0; i < n->n && !rc; i++)
        rc = lp__ct_eval(c, n->kids[i]->b, &vals[i]);
    c->frame = fr;
    for (uint32_t i = 0; i < n->n && !rc; i++)
        rc = assign(c, n->kids[i]->a, vals[i]);
    if (!rc)
        rc = exec_node(c, n->d);
    c->frame = saved;
    return rc;
}

static int exec_inner(lp__ct_ctx *c, const lp__node *n) {
    switch (n->kind) {
    case N_BLOCK: return exec_block(c, n);
    case N_DATA: return lp__ct_buf_put(c, c->out, n->name, n->name_len);
    case N_OUTPUT: return exec_output(c, n);
    case N_IF: return exec_if(c, n);
    case N_FOR: return exec_for(c, n);
    case N_SET: return exec_set(c, n);
    case N_MACRO: return exec_macro(c, n);
    case N_WITH: return exec_with(c, n);
    case N_BREAK:
        c->ctl = CTL_BREAK;
        return LP_OK;
    case N_CONTINUE:
        c->ctl = CTL_CONTINUE;
        return LP_OK;
    default:
        return lp__ct_fail(c, n, LP_ERR_INTERNAL, "unexpected statement %d", n->kind);
    }
}

static int exec_node(lp__ct_ctx *c, const lp__node *n) {
    if (++c->frames > LP__CT_MAX_EVAL_FRAMES) {
        c->frames--;
        return lp__ct_fail(c, n, LP_ERR_LIMIT,
                           "chat template: evaluation nested deeper than %d",
                           LP__CT_MAX_EVAL_FRAMES);
    }
    int rc = lp__ct_charge(c, 1);
    if (!rc)
        rc = exec_inner(c, n);
    c->frames--;
    return rc;
}

/* ---- entry ---- */

int lp__ct_render(const lp_chat_template *t, const json_t *vars,
                  const lp_template_limits *lim, char **out, size_t *out_len,
                  bool *raised, lp_error *err) {
    lp_template_limits dl = lp_template_default_limits();
    if (!lim)
        lim = &dl;
    lp__ct_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.err = err;
    c.max_steps = lim->max_steps ? lim->max_steps : dl.max_steps;
    c.max_output = lim->max_output ? lim->max_output : dl.max_output;
    c.max_depth = lim->max_depth > 0 ? lim->max_depth : dl.max_depth;
    c.arena.cap = lim->max_memory ? lim->max_memory : dl.max_memory;
    c.fixed_time = lim->fixed_time;
    lp__ct_buf buf;
    lp__ct_buf_init(&buf, c.max_output, "max_output");
    c.out = &buf;
    lp__ct_frame root;
    frame_init(&root, NULL);
    c.root = c.frame = &root;
    int rc = LP_OK;
    uint32_t nsym = t->syms.n;
    c.globals = lp__ct_alloc_array(&c.arena, nsym ? nsym : 1, sizeof *c.globals);
    if (!c.globals) {
        rc = lp__ct_oom(&c);
        goto done;
    }
    for (uint32_t i = 0; i < nsym && !rc; i++) {
        const json_t *j = vars ? json_object_getn(vars, t->syms.name[i], t->syms.len[i]) : NULL;
        c.globals[i] = lp__v_undef();
        if (j)
            rc = lp__ct_from_json(&c, j, &c.globals[i], 0);
    }
    if (!rc)
        rc = exec_node(&c, t->root);
done:
    if (raised)
        *raised = c.raised;
    if (rc == LP_OK) {
        if (!buf.p) {
            buf.p = malloc(1);
            if (!buf.p) {
                rc = lp_error_set(err, LP_ERR_NOMEM, "chat template: out of memory");
            } else {
                buf.p[0] = '\0';
            }
        }
    }
    if (rc == LP_OK) {
        *out = buf.p;
        if (out_len)
            *out_len = buf.n;
    } else {
        lp__ct_buf_free(&buf);
    }
    lp__ct_arena_free(&c.arena);
    return rc;
}
