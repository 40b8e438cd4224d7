/* chat_template_value.c - values of the chat template interpreter with
 * Python semantics: arena, UTF-8 helpers, lists and ordered dicts, str(),
 * repr(), ==, <, json.dumps, and the import of the caller's JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/chat_template_impl.h"
#include "util/util.h"

/* ---- arena ---- */

struct lp__ct_chunk {
    lp__ct_chunk *next;
    size_t size, used;
    max_align_t data[];
};

#define CHUNK_SIZE ((size_t)64 * 1024)

void *lp__ct_alloc(lp__ct_arena *a, size_t size) {
    if (size > SIZE_MAX - 64)
        return NULL;
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    lp__ct_chunk *h = a->head;
    if (h && h->size - h->used >= size) {
        void *p = (char *)h->data + h->used;
        h->used += size;
        return p;
    }
    size_t csize = size > CHUNK_SIZE / 4 ? size : CHUNK_SIZE;
    size_t total = sizeof(lp__ct_chunk) + csize;
    if (a->cap && (a->total > a->cap || total > a->cap - a->total)) {
        a->over_cap = true;
        return NULL;
    }
    lp__ct_chunk *c = malloc(total);
    if (!c) {
        a->over_cap = false;
        return NULL;
    }
    a->total += total;
    c->size = csize;
    c->used = size;
    if (h && csize == size) { /* a big block: keep filling the current chunk */
        c->next = h->next;
        h->next = c;
    } else {
        c->next = h;
        a->head = c;
    }
    return c->data;
}

void *lp__ct_alloc_array(lp__ct_arena *a, size_t n, size_t size) {
    size_t total = 0;
    if (!lp__mul_size(n, size, &total))
        return NULL;
    return lp__ct_alloc(a, total);
}

char *lp__ct_strdup(lp__ct_arena *a, const char *s, size_t n) {
    char *p = lp__ct_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void lp__ct_arena_free(lp__ct_arena *a) {
    lp__ct_chunk *c = a->head;
    while (c) {
        lp__ct_chunk *nx = c->next;
        free(c);
        c = nx;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- UTF-8 ---- */

size_t lp__ct_utf8_dec(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    size_t len = u[0] >= 0xF0 ? 4 : u[0] >= 0xE0 ? 3 : u[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || len > n || u[0] > 0xF4) {
        *cp = 0xFFFD;
        return 1;
    }
    uint32_t c = u[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        c = (c << 6) | (u[i] & 0x3F);
    }
    *cp = c;
    return len;
}

size_t lp__ct_utf8_enc(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

bool lp__ct_utf8_valid(const char *s, size_t n, size_t *bad) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        size_t len = 0;
        uint32_t min = 0;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            min = 0x10000;
        } else {
            goto invalid;
        }
        if (i + len > n)
            goto invalid;
        uint32_t cp = c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                goto invalid;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto invalid;
        i += len;
    }
    return true;
invalid:
    if (bad)
        *bad = i;
    return false;
}

size_t lp__ct_utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            k++;
    return k;
}

/* str.isspace(): bidirectional class WS, B or S, or category Zs. */
bool lp__ct_py_isspace(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

size_t lp__ct_space_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp = 0;
        size_t k = lp__ct_utf8_dec(s + i, n - i, &cp);
        if (!lp__ct_py_isspace(cp))
            break;
        i += k;
    }
    return i;
}

size_t lp__ct_space_suffix(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80 && end - st < 4)
            st--;
        uint32_t cp = 0;
        size_t k = lp__ct_utf8_dec(s + st, end - st, &cp);
        if (k != end - st || !lp__ct_py_isspace(cp))
            break;
        end = st;
    }
    return n - end;
}

/* ---- errors, steps, buffers ---- */

int lp__ct_fail(lp__ct_ctx *c, const lp__node *at, int code, const char *fmt,
                ...) {
    char msg[LP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        return lp_error_set(c->err, code, "line %u: %s", at->line, msg);
    return lp_error_set(c->err, code, "%s", msg);
}

int lp__ct_oom(lp__ct_ctx *c) {
    if (c->arena.over_cap)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT,
                           "chat template: max_memory (%zu bytes) exceeded",
                           c->arena.cap);
    return lp__ct_fail(c, NULL, LP_ERR_NOMEM, "chat template: out of memory");
}

int lp__ct_charge(lp__ct_ctx *c, uint64_t n) {
    c->steps += n;
    if (c->steps > c->max_steps)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT,
                           "chat template: max_steps (%llu) exceeded",
                           (unsigned long long)c->max_steps);
    return LP_OK;
}

void *lp__ct_calloc(lp__ct_ctx *c, size_t size) {
    void *p = lp__ct_alloc(&c->arena, size);
    if (p)
        memset(p, 0, size);
    return p;
}

void lp__ct_buf_init(lp__ct_buf *b, size_t max, const char *limit_name) {
    memset(b, 0, sizeof *b);
    b->max = max;
    b->limit_name = limit_name;
}

void lp__ct_buf_scratch(lp__ct_ctx *c, lp__ct_buf *b) {
    size_t room = SIZE_MAX / 2;
    if (c->arena.cap)
        room = c->arena.cap > c->arena.total ? c->arena.cap - c->arena.total : 0;
    lp__ct_buf_init(b, room, "max_memory");
}

int lp__ct_buf_put(lp__ct_ctx *c, lp__ct_buf *b, const char *p, size_t n) {
    if (n == 0)
        return LP_OK;
    if (n > b->max || b->n > b->max - n)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT,
                           "chat template: %s (%zu bytes) exceeded",
                           b->limit_name, b->max);
    if (b->n + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->n + n + 1)
            ncap = ncap > SIZE_MAX / 2 ? b->n + n + 1 : ncap * 2;
        char *np = realloc(b->p, ncap);
        if (!np)
            return lp__ct_fail(c, NULL, LP_ERR_NOMEM, "chat template: out of memory");
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return LP_OK;
}

int lp__ct_buf_putc(lp__ct_ctx *c, lp__ct_buf *b, char ch) {
    return lp__ct_buf_put(c, b, &ch, 1);
}

void lp__ct_buf_free(lp__ct_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int lp__ct_buf_to_str(lp__ct_ctx *c, lp__ct_buf *b, lp__val *out) {
    int rc = lp__ct_new_str(c, b->p ? b->p : "", b->n, out);
    lp__ct_buf_free(b);
    return rc;
}

/* ---- constructors ---- */

int lp__ct_new_str(lp__ct_ctx *c, const char *p, size_t n, lp__val *out) {
    char *s = lp__ct_strdup(&c->arena, p, n);
    if (!s)
        return lp__ct_oom(c);
    *out = lp__v_str(s, n);
    return LP_OK;
}

int lp__ct_new_seq(lp__ct_ctx *c, lp__vtype t, size_t cap, lp__val *out) {
    lp__ct_seq *s = lp__ct_calloc(c, sizeof *s);
    if (!s)
        return lp__ct_oom(c);
    if (cap) {
        s->v = lp__ct_alloc_array(&c->arena, cap, sizeof *s->v);
        if (!s->v)
            return lp__ct_oom(c);
        s->cap = cap;
    }
    lp__val v = {0};
    v.t = (uint8_t)t;
    v.u.seq = s;
    *out = v;
    return LP_OK;
}

int lp__ct_seq_push(lp__ct_ctx *c, lp__ct_seq *s, lp__val v) {
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        lp__val *nv = lp__ct_alloc_array(&c->arena, ncap, sizeof *nv);
        if (!nv)
            return lp__ct_oom(c);
        if (s->n)
            memcpy(nv, s->v, s->n * sizeof *nv);
        s->v = nv;
        s->cap = ncap;
    }
    s->v[s->n++] = v;
    return LP_OK;
}

int lp__ct_new_dict(lp__ct_ctx *c, lp__vtype t, lp__val *out) {
    lp__ct_dict *d = lp__ct_calloc(c, sizeof *d);
    if (!d)
        return lp__ct_oom(c);
    lp__val v = {0};
    v.t = (uint8_t)t;
    v.u.d = d;
    *out = v;
    return LP_OK;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static int hash_val(lp__ct_ctx *c, lp__val k, uint64_t *h, int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT, "value nested too deeply");
    switch (k.t) {
    case LP__V_STR: *h = hash_bytes(k.u.s.p, k.u.s.n); return LP_OK;
    case LP__V_BOOL: *h = mix64((uint64_t)k.u.b); return LP_OK;
    case LP__V_INT: *h = mix64((uint64_t)k.u.i); return LP_OK;
    case LP__V_FLOAT:
        if (k.u.f == floor(k.u.f) && fabs(k.u.f) < 9.2e18) {
            *h = mix64((uint64_t)(int64_t)k.u.f);
        } else {
            uint64_t bits = 0;
            memcpy(&bits, &k.u.f, sizeof bits);
            *h = mix64(bits);
        }
        return LP_OK;
    case LP__V_NONE: *h = 0x6e6f6e65ull; return LP_OK;
    case LP__V_UNDEF: *h = 0x756e6465ull; return LP_OK;
    case LP__V_TUPLE: {
        uint64_t acc = 0x7475706cull;
        for (size_t i = 0; i < k.u.seq->n; i++) {
            uint64_t e = 0;
            int rc = hash_val(c, k.u.seq->v[i], &e, depth + 1);
            if (rc)
                return rc;
            acc = mix64(acc ^ e) + i;
        }
        *h = acc;
        return LP_OK;
    }
    case LP__V_RANGE:
        *h = mix64((uint64_t)k.u.r->start ^ mix64((uint64_t)k.u.r->stop) ^
                   mix64((uint64_t)k.u.r->step * 31));
        return LP_OK;
    case LP__V_LIST:
    case LP__V_DICT:
    case LP__V_NS:
        return lp__ct_fail(c, NULL, LP_ERR_INVALID, "unhashable type: '%s'",
                           lp__ct_type_name(k));
    default:
        *h = mix64((uint64_t)(uintptr_t)k.u.m);
        return LP_OK;
    }
}

static int dict_reindex(lp__ct_ctx *c, lp__ct_dict *d, size_t want) {
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    uint32_t *idx = lp__ct_alloc_array(&c->arena, cap, sizeof *idx);
    if (!idx)
        return lp__ct_oom(c);
    memset(idx, 0, cap * sizeof *idx);
    for (size_t i = 0; i < d->n; i++) {
        size_t h = d->e[i].h & (cap - 1);
        while (idx[h])
            h = (h + 1) & (cap - 1);
        idx[h] = (uint32_t)(i + 1);
    }
    d->index = idx;
    d->index_cap = cap;
    return LP_OK;
}

static int dict_lookup(lp__ct_ctx *c, const lp__ct_dict *d, lp__val k,
                       uint64_t h, lp__ct_dent **out) {
    *out = NULL;
    if (d->index) {
        size_t m = d->index_cap - 1;
        for (size_t s = h & m; d->index[s]; s = (s + 1) & m) {
            lp__ct_dent *e = &d->e[d->index[s] - 1];
            if (e->h != h)
                continue;
            bool eq = false;
            int rc = lp__ct_eq(c, e->k, k, &eq, 0);
            if (rc)
                return rc;
            if (eq) {
                *out = e;
                return LP_OK;
            }
        }
        return LP_OK;
    }
    for (size_t i = 0; i < d->n; i++) {
        if (d->e[i].h != h)
            continue;
        bool eq = false;
        int rc = lp__ct_eq(c, d->e[i].k, k, &eq, 0);
        if (rc)
            return rc;
        if (eq) {
            *out = &d->e[i];
            return LP_OK;
        }
    }
    return LP_OK;
}

int lp__ct_dict_find(lp__ct_ctx *c, const lp__ct_dict *d, lp__val k,
                     lp__ct_dent **out) {
    uint64_t h = 0;
    int rc = hash_val(c, k, &h, 0);
    if (rc)
        return rc;
    return dict_lookup(c, d, k, h, out);
}

lp__ct_dent *lp__ct_dict_find_str(const lp__ct_dict *d, const char *p,
                                  size_t n) {
    uint64_t h = hash_bytes(p, n);
    if (d->index) {
        size_t m = d->index_cap - 1;
        for (size_t s = h & m; d->index[s]; s = (s + 1) & m) {
            lp__ct_dent *e = &d->e[d->index[s] - 1];
            if (e->h == h && e->k.t == LP__V_STR && e->k.u.s.n == n &&
                memcmp(e->k.u.s.p, p, n) == 0)
                return e;
        }
        return NULL;
    }
    for (size_t i = 0; i < d->n; i++) {
        lp__ct_dent *e = &d->e[i];
        if (e->h == h && e->k.t == LP__V_STR && e->k.u.s.n == n &&
            memcmp(e->k.u.s.p, p, n) == 0)
            return e;
    }
    return NULL;
}

int lp__ct_dict_set(lp__ct_ctx *c, lp__ct_dict *d, lp__val k, lp__val v) {
    uint64_t h = 0;
    int rc = hash_val(c, k, &h, 0);
    if (rc)
        return rc;
    lp__ct_dent *e = NULL;
    rc = dict_lookup(c, d, k, h, &e);
    if (rc)
        return rc;
    if (e) {
        e->v = v;
        return LP_OK;
    }
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 4;
        if (ncap > UINT32_MAX / 2)
            return lp__ct_fail(c, NULL, LP_ERR_LIMIT, "dict too large");
        lp__ct_dent *ne = lp__ct_alloc_array(&c->arena, ncap, sizeof *ne);
        if (!ne)
            return lp__ct_oom(c);
        if (d->n)
            memcpy(ne, d->e, d->n * sizeof *ne);
        d->e = ne;
        d->cap = ncap;
    }
    d->e[d->n].k = k;
    d->e[d->n].v = v;
    d->e[d->n].h = h;
    d->n++;
    if (d->index && d->n * 2 <= d->index_cap) {
        size_t m = d->index_cap - 1, s = h & m;
        while (d->index[s])
            s = (s + 1) & m;
        d->index[s] = (uint32_t)d->n;
    } else if (d->n >= 8) {
        return dict_reindex(c, d, d->n * 2);
    }
    return LP_OK;
}

int lp__ct_from_json(lp__ct_ctx *c, const json_t *j, lp__val *out, int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT,
                           "template variables nested deeper than %d",
                           LP__CT_MAX_VALUE_DEPTH);
    int rc = 0;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        rc = lp__ct_new_dict(c, LP__V_DICT, out);
        if (rc)
            return rc;
        const char *key = NULL;
        size_t klen = 0;
        json_t *val;
        json_t *obj = (json_t *)j; /* the iteration API is not const */
        json_object_keylen_foreach(obj, key, klen, val) {
            lp__val v;
            rc = lp__ct_from_json(c, val, &v, depth + 1);
            if (rc)
                return rc;
            rc = lp__ct_dict_set(c, out->u.d, lp__v_str(key, klen), v);
            if (rc)
                return rc;
        }
        return LP_OK;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        rc = lp__ct_new_seq(c, LP__V_LIST, n, out);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++) {
            rc = lp__ct_from_json(c, json_array_get(j, i), &out->u.seq->v[i],
                                  depth + 1);
            if (rc)
                return rc;
            out->u.seq->n = i + 1;
        }
        return LP_OK;
    }
    case JSON_STRING:
        *out = lp__v_str(json_string_value(j), json_string_length(j));
        return LP_OK;
    case JSON_INTEGER:
        *out = lp__v_int((int64_t)json_integer_value(j));
        return LP_OK;
    case JSON_REAL:
        *out = lp__v_float(json_real_value(j));
        return LP_OK;
    case JSON_TRUE:
        *out = lp__v_bool(true);
        return LP_OK;
    case JSON_FALSE:
        *out = lp__v_bool(false);
        return LP_OK;
    default:
        *out = lp__v_none();
        return LP_OK;
    }
}

/* ---- Python semantics ---- */

int64_t lp__ct_range_len(const lp__ct_range *r) {
    if (r->step > 0 && r->start < r->stop)
        return (int64_t)(((uint64_t)r->stop - (uint64_t)r->start - 1) /
                         (uint64_t)r->step) + 1;
    if (r->step < 0 && r->start > r->stop)
        return (int64_t)(((uint64_t)r->start - (uint64_t)r->stop - 1) /
                         ((uint64_t)0 - (uint64_t)r->step)) + 1;
    return 0;
}

int64_t lp__ct_len(lp__val v) {
    switch (v.t) {
    case LP__V_STR: return (int64_t)lp__ct_utf8_count(v.u.s.p, v.u.s.n);
    case LP__V_LIST:
    case LP__V_TUPLE: return (int64_t)v.u.seq->n;
    case LP__V_DICT: return (int64_t)v.u.d->n;
    case LP__V_RANGE: return lp__ct_range_len(v.u.r);
    case LP__V_UNDEF: return 0;
    case LP__V_LOOP: return v.u.loop->length;
    default: return -1;
    }
}

bool lp__ct_truthy(lp__val v) {
    switch (v.t) {
    case LP__V_UNDEF:
    case LP__V_NONE: return false;
    case LP__V_BOOL: return v.u.b;
    case LP__V_INT: return v.u.i != 0;
    case LP__V_FLOAT: return v.u.f != 0.0;
    case LP__V_STR: return v.u.s.n != 0;
    case LP__V_LIST:
    case LP__V_TUPLE: return v.u.seq->n != 0;
    case LP__V_DICT: return v.u.d->n != 0;
    case LP__V_RANGE: return lp__ct_range_len(v.u.r) != 0;
    default: return true;
    }
}

static const char *vtype_name(int t) {
    switch (t) {
    case LP__V_UNDEF: return "Undefined";
    case LP__V_NONE: return "NoneType";
    case LP__V_BOOL: return "bool";
    case LP__V_INT: return "int";
    case LP__V_FLOAT: return "float";
    case LP__V_STR: return "str";
    case LP__V_LIST: return "list";
    case LP__V_TUPLE: return "tuple";
    case LP__V_DICT: return "dict";
    case LP__V_NS: return "Namespace";
    case LP__V_RANGE: return "range";
    case LP__V_LOOP: return "LoopContext";
    case LP__V_MACRO: return "Macro";
    case LP__V_FUNC: return "function";
    default: return "builtin_function_or_method";
    }
}

const char *lp__ct_type_name(lp__val v) { return vtype_name(v.t); }

int lp__ct_undef_fail(lp__ct_ctx *c, const lp__node *at, lp__val u) {
    int n = (int)LP_MIN(u.u.s.n, 200);
    const char *s = u.u.s.p ? u.u.s.p : "";
    switch (u.hint) {
    case LP__U_NAME:
        return lp__ct_fail(c, at, LP_ERR_INVALID, "'%.*s' is undefined", n, s);
    case LP__U_ATTR:
        if (u.aux == LP__V_NONE)
            return lp__ct_fail(c, at, LP_ERR_INVALID,
                               "'None' has no attribute '%.*s'", n, s);
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "'%s object' has no attribute '%.*s'",
                           vtype_name((int)u.aux), n, s);
    case LP__U_ITEM:
        if (u.aux == LP__V_NONE)
            return lp__ct_fail(c, at, LP_ERR_INVALID, "None has no element %.*s",
                               n, s);
        return lp__ct_fail(c, at, LP_ERR_INVALID, "%s object has no element %.*s",
                           vtype_name((int)u.aux), n, s);
    case LP__U_UNSAFE:
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "access to attribute '%.*s' of '%s' object is unsafe.",
                           n, s, vtype_name((int)u.aux));
    case LP__U_MESSAGE:
        return lp__ct_fail(c, at, LP_ERR_INVALID, "%.*s", n, s);
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID, "undefined value");
    }
}

/* Numeric view for mixed int/float comparisons. */
static bool is_intlike(lp__val v) { return v.t == LP__V_INT || v.t == LP__V_BOOL; }
static int64_t as_int(lp__val v) { return v.t == LP__V_BOOL ? (int64_t)v.u.b : v.u.i; }

#define CMP_UNORDERED 2

static int int_float_cmp(int64_t i, double f) {
    if (isnan(f))
        return CMP_UNORDERED;
    if (f >= 9223372036854775808.0)
        return -1;
    if (f < -9223372036854775808.0)
        return 1;
    double fl = floor(f);
    int64_t fi = (int64_t)fl;
    if (i < fi)
        return -1;
    if (i > fi)
        return 1;
    return f > fl ? -1 : 0;
}

static int num_cmp(lp__val a, lp__val b) {
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y;
    }
    if (is_intlike(a))
        return int_float_cmp(as_int(a), b.u.f);
    if (is_intlike(b)) {
        int r = int_float_cmp(as_int(b), a.u.f);
        return r == CMP_UNORDERED ? r : -r;
    }
    if (isnan(a.u.f) || isnan(b.u.f))
        return CMP_UNORDERED;
    return a.u.f < b.u.f ? -1 : a.u.f > b.u.f;
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int r = memcmp(a, b, LP_MIN(an, bn));
    if (r)
        return r < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

int lp__ct_eq(lp__ct_ctx *c, lp__val a, lp__val b, bool *res, int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT, "value nested too deeply");
    *res = false;
    if (lp__v_is_num(a) && lp__v_is_num(b)) {
        *res = num_cmp(a, b) == 0;
        return LP_OK;
    }
    if (a.t != b.t)
        return LP_OK;
    switch (a.t) {
    case LP__V_UNDEF:
    case LP__V_NONE: *res = true; return LP_OK;
    case LP__V_STR:
        *res = a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
        return LP_OK;
    case LP__V_LIST:
    case LP__V_TUPLE: {
        if (a.u.seq->n != b.u.seq->n)
            return LP_OK;
        int rc = lp__ct_charge(c, a.u.seq->n / 16);
        if (rc)
            return rc;
        for (size_t i = 0; i < a.u.seq->n; i++) {
            bool e = false;
            rc = lp__ct_eq(c, a.u.seq->v[i], b.u.seq->v[i], &e, depth + 1);
            if (rc)
                return rc;
            if (!e)
                return LP_OK;
        }
        *res = true;
        return LP_OK;
    }
    case LP__V_DICT: {
        if (a.u.d->n != b.u.d->n)
            return LP_OK;
        int rc = lp__ct_charge(c, a.u.d->n / 16);
        if (rc)
            return rc;
        for (size_t i = 0; i < a.u.d->n; i++) {
            lp__ct_dent *e = NULL;
            rc = dict_lookup(c, b.u.d, a.u.d->e[i].k, a.u.d->e[i].h, &e);
            if (rc)
                return rc;
            if (!e)
                return LP_OK;
            bool q = false;
            rc = lp__ct_eq(c, a.u.d->e[i].v, e->v, &q, depth + 1);
            if (rc)
                return rc;
            if (!q)
                return LP_OK;
        }
        *res = true;
        return LP_OK;
    }
    case LP__V_RANGE: {
        int64_t la = lp__ct_range_len(a.u.r), lb = lp__ct_range_len(b.u.r);
        *res = la == lb && (la == 0 || (a.u.r->start == b.u.r->start &&
                                        (la == 1 || a.u.r->step == b.u.r->step)));
        return LP_OK;
    }
    case LP__V_METHOD:
        *res = a.u.m == b.u.m;
        return LP_OK;
    case LP__V_FUNC:
        *res = a.aux == b.aux;
        return LP_OK;
    default:
        *res = a.u.d == b.u.d; /* identity */
        return LP_OK;
    }
}

int lp__ct_cmp(lp__ct_ctx *c, const lp__node *at, const char *op, lp__val a,
               lp__val b, int *res, int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, at, LP_ERR_LIMIT, "value nested too deeply");
    if (a.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, a);
    if (b.t == LP__V_UNDEF)
        return lp__ct_undef_fail(c, at, b);
    if (lp__v_is_num(a) && lp__v_is_num(b)) {
        *res = num_cmp(a, b);
        return LP_OK;
    }
    if (a.t == LP__V_STR && b.t == LP__V_STR) {
        *res = bytes_cmp(a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n);
        return lp__ct_charge(c, LP_MIN(a.u.s.n, b.u.s.n) / 64);
    }
    if (a.t == b.t && lp__v_is_seq(a)) {
        size_t n = LP_MIN(a.u.seq->n, b.u.seq->n);
        for (size_t i = 0; i < n; i++) {
            bool e = false;
            int rc = lp__ct_eq(c, a.u.seq->v[i], b.u.seq->v[i], &e, depth + 1);
            if (rc)
                return rc;
            if (!e)
                return lp__ct_cmp(c, at, op, a.u.seq->v[i], b.u.seq->v[i], res,
                                  depth + 1);
        }
        *res = a.u.seq->n < b.u.seq->n ? -1 : a.u.seq->n > b.u.seq->n;
        return LP_OK;
    }
    return lp__ct_fail(c, at, LP_ERR_INVALID,
                       "'%s' not supported between instances of '%s' and '%s'",
                       op, lp__ct_type_name(a), lp__ct_type_name(b));
}

/* ---- str() / repr() ---- */

size_t lp__ct_fmt_float(double f, bool json, char *buf) {
    if (isnan(f)) {
        memcpy(buf, json ? "NaN" : "nan", 4);
        return 3;
    }
    if (isinf(f)) {
        const char *s = f > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf");
        size_t n = strlen(s);
        memcpy(buf, s, n + 1);
        return n;
    }
    if (f == 0.0) {
        const char *s = signbit(f) ? "-0.0" : "0.0";
        size_t n = strlen(s);
        memcpy(buf, s, n + 1);
        return n;
    }
    /* shortest digits that round-trip, as Python's repr */
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp: [-]d[.ddd]e[+-]xx */
    char digits[24];
    size_t nd = 0;
    const char *p = tmp;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    while (*p && *p != 'e') {
        if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1)
            digits[nd++] = *p;
        p++;
    }
    int exp10 = *p == 'e' ? (int)strtol(p + 1, NULL, 10) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1;
    size_t k = 0;
    if (neg)
        buf[k++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            buf[k++] = '0';
            buf[k++] = '.';
            for (int i = 0; i < -decpt; i++)
                buf[k++] = '0';
            memcpy(buf + k, digits, nd);
            k += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(buf + k, digits, nd);
            k += nd;
            for (size_t i = nd; i < (size_t)decpt; i++)
                buf[k++] = '0';
            buf[k++] = '.';
            buf[k++] = '0';
        } else {
            memcpy(buf + k, digits, (size_t)decpt);
            k += (size_t)decpt;
            buf[k++] = '.';
            memcpy(buf + k, digits + decpt, nd - (size_t)decpt);
            k += nd - (size_t)decpt;
        }
    } else {
        buf[k++] = digits[0];
        if (nd > 1) {
            buf[k++] = '.';
            memcpy(buf + k, digits + 1, nd - 1);
            k += nd - 1;
        }
        int e = decpt - 1;
        k += (size_t)snprintf(buf + k, 32 - k, "e%c%02d", e < 0 ? '-' : '+',
                              e < 0 ? -e : e);
    }
    buf[k] = '\0';
    return k;
}

static bool py_printable(uint32_t cp) {
    if (cp == ' ')
        return true;
    if (cp < 0x20 || cp == 0x7F)
        return false;
    if (cp < 0x7F)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
        return false;
    default:
        return true;
    }
}

static int write_str_repr(lp__ct_ctx *c, lp__ct_buf *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int rc = lp__ct_buf_putc(c, b, q);
    size_t i = 0;
    while (!rc && i < n) {
        uint32_t cp = 0;
        size_t k = lp__ct_utf8_dec(s + i, n - i, &cp);
        char esc[12];
        if (cp == (uint32_t)q || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            rc = lp__ct_buf_put(c, b, esc, 2);
        } else if (cp == '\n') {
            rc = lp__ct_buf_put(c, b, "\\n", 2);
        } else if (cp == '\r') {
            rc = lp__ct_buf_put(c, b, "\\r", 2);
        } else if (cp == '\t') {
            rc = lp__ct_buf_put(c, b, "\\t", 2);
        } else if (!py_printable(cp)) {
            int m = cp < 0x100     ? snprintf(esc, sizeof esc, "\\x%02x", (unsigned)cp)
                    : cp < 0x10000 ? snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp)
                                   : snprintf(esc, sizeof esc, "\\U%08x", (unsigned)cp);
            rc = lp__ct_buf_put(c, b, esc, (size_t)m);
        } else {
            rc = lp__ct_buf_put(c, b, s + i, k);
        }
        i += k;
    }
    if (!rc)
        rc = lp__ct_buf_putc(c, b, q);
    return rc;
}

static int write_scalar(lp__ct_ctx *c, lp__ct_buf *b, lp__val v, bool *done) {
    char tmp[64];
    size_t n = 0;
    *done = true;
    switch (v.t) {
    case LP__V_NONE: return lp__ct_buf_put(c, b, "None", 4);
    case LP__V_BOOL: return v.u.b ? lp__ct_buf_put(c, b, "True", 4)
                                  : lp__ct_buf_put(c, b, "False", 5);
    case LP__V_INT:
        n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_FLOAT:
        n = lp__ct_fmt_float(v.u.f, false, tmp);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_RANGE:
        if (v.u.r->step == 1)
            n = (size_t)snprintf(tmp, sizeof tmp, "range(%lld, %lld)",
                                 (long long)v.u.r->start, (long long)v.u.r->stop);
        else
            n = (size_t)snprintf(tmp, sizeof tmp, "range(%lld, %lld, %lld)",
                                 (long long)v.u.r->start, (long long)v.u.r->stop,
                                 (long long)v.u.r->step);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_LOOP:
        n = (size_t)snprintf(tmp, sizeof tmp, "<LoopContext %lld/%lld>",
                             (long long)(v.u.loop->index0 + 1),
                             (long long)v.u.loop->length);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_MACRO: {
        int rc = lp__ct_buf_put(c, b, "<Macro '", 8);
        const lp__node *d = v.u.mac->def;
        if (!rc)
            rc = lp__ct_buf_put(c, b, d->name, d->name_len);
        return rc ? rc : lp__ct_buf_put(c, b, "'>", 2);
    }
    case LP__V_FUNC:
        n = (size_t)snprintf(tmp, sizeof tmp, "<function %s>",
                             lp__ct_global_name((int)v.aux));
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_METHOD:
        n = (size_t)snprintf(tmp, sizeof tmp, "<built-in method %s of %s object>",
                             lp__ct_method_name(v.u.m->id),
                             lp__ct_type_name(v.u.m->self));
        return lp__ct_buf_put(c, b, tmp, n);
    default:
        *done = false;
        return LP_OK;
    }
}

int lp__ct_write_repr(lp__ct_ctx *c, lp__ct_buf *b, lp__val v, int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, NULL, LP_ERR_LIMIT, "value nested too deeply");
    bool done = false;
    int rc = write_scalar(c, b, v, &done);
    if (done || rc)
        return rc;
    switch (v.t) {
    case LP__V_UNDEF: return lp__ct_buf_put(c, b, "Undefined", 9);
    case LP__V_STR:
        rc = lp__ct_charge(c, v.u.s.n / 64);
        return rc ? rc : write_str_repr(c, b, v.u.s.p, v.u.s.n);
    case LP__V_LIST:
    case LP__V_TUPLE: {
        bool tup = v.t == LP__V_TUPLE;
        rc = lp__ct_buf_putc(c, b, tup ? '(' : '[');
        for (size_t i = 0; !rc && i < v.u.seq->n; i++) {
            if (i)
                rc = lp__ct_buf_put(c, b, ", ", 2);
            if (!rc)
                rc = lp__ct_write_repr(c, b, v.u.seq->v[i], depth + 1);
        }
        if (!rc && tup && v.u.seq->n == 1)
            rc = lp__ct_buf_putc(c, b, ',');
        if (!rc)
            rc = lp__ct_buf_putc(c, b, tup ? ')' : ']');
        return rc ? rc : lp__ct_charge(c, v.u.seq->n);
    }
    case LP__V_DICT:
    case LP__V_NS: {
        if (v.t == LP__V_NS)
            rc = lp__ct_buf_put(c, b, "<Namespace ", 11);
        if (!rc)
            rc = lp__ct_buf_putc(c, b, '{');
        for (size_t i = 0; !rc && i < v.u.d->n; i++) {
            if (i)
                rc = lp__ct_buf_put(c, b, ", ", 2);
            if (!rc)
                rc = lp__ct_write_repr(c, b, v.u.d->e[i].k, depth + 1);
            if (!rc)
                rc = lp__ct_buf_put(c, b, ": ", 2);
            if (!rc)
                rc = lp__ct_write_repr(c, b, v.u.d->e[i].v, depth + 1);
        }
        if (!rc)
            rc = lp__ct_buf_putc(c, b, '}');
        if (!rc && v.t == LP__V_NS)
            rc = lp__ct_buf_putc(c, b, '>');
        return rc ? rc : lp__ct_charge(c, v.u.d->n);
    }
    default:
        return lp__ct_buf_put(c, b, "<object>", 8);
    }
}

int lp__ct_write_str(lp__ct_ctx *c, lp__ct_buf *b, lp__val v) {
    if (v.t == LP__V_STR)
        return lp__ct_buf_put(c, b, v.u.s.p, v.u.s.n);
    if (v.t == LP__V_UNDEF)
        return LP_OK;
    return lp__ct_write_repr(c, b, v, 0);
}

int lp__ct_to_str(lp__ct_ctx *c, lp__val v, lp__val *out) {
    if (v.t == LP__V_STR) {
        *out = v;
        out->hint = 0;
        return LP_OK;
    }
    if (v.t == LP__V_UNDEF) {
        *out = lp__v_str("", 0);
        return LP_OK;
    }
    lp__ct_buf b;
    lp__ct_buf_scratch(c, &b);
    int rc = lp__ct_write_repr(c, &b, v, 0);
    if (rc) {
        lp__ct_buf_free(&b);
        return rc;
    }
    return lp__ct_buf_to_str(c, &b, out);
}

lp__val lp__ct_seq_at(lp__val v, int64_t i) {
    switch (v.t) {
    case LP__V_LIST:
    case LP__V_TUPLE: return v.u.seq->v[i];
    case LP__V_DICT: return v.u.d->e[i].k;
    case LP__V_RANGE: /* in range by construction; unsigned to avoid UB */
        return lp__v_int((int64_t)((uint64_t)v.u.r->start +
                                   (uint64_t)i * (uint64_t)v.u.r->step));
    default: return lp__v_undef();
    }
}

/* ---- json.dumps ---- */

static int json_str(lp__ct_ctx *c, lp__ct_buf *b, const char *s, size_t n,
                    bool ascii) {
    int rc = lp__ct_buf_putc(c, b, '"');
    size_t i = 0, run = 0;
    while (!rc && i < n) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[16];
        size_t elen = 0, adv = 1;
        if (ch == '"') {
            esc = "\\\"";
        } else if (ch == '\\') {
            esc = "\\\\";
        } else if (ch == '\n') {
            esc = "\\n";
        } else if (ch == '\r') {
            esc = "\\r";
        } else if (ch == '\t') {
            esc = "\\t";
        } else if (ch == '\b') {
            esc = "\\b";
        } else if (ch == '\f') {
            esc = "\\f";
        } else if (ch < 0x20 || (ascii && ch == 0x7F)) {
            elen = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", ch);
            esc = tmp;
        } else if (ascii && ch >= 0x80) {
            uint32_t cp = 0;
            adv = lp__ct_utf8_dec(s + i, n - i, &cp);
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                elen = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x",
                                        (unsigned)(0xD800 | (v >> 10)),
                                        (unsigned)(0xDC00 | (v & 0x3FF)));
            } else {
                elen = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            }
            esc = tmp;
        }
        if (!esc) {
            run++;
            i++;
            continue;
        }
        if (run)
            rc = lp__ct_buf_put(c, b, s + i - run, run);
        run = 0;
        if (!rc)
            rc = lp__ct_buf_put(c, b, esc, elen ? elen : strlen(esc));
        i += adv;
    }
    if (!rc && run)
        rc = lp__ct_buf_put(c, b, s + i - run, run);
    if (!rc)
        rc = lp__ct_buf_putc(c, b, '"');
    return rc ? rc : lp__ct_charge(c, n / 64);
}

static int json_newline(lp__ct_ctx *c, lp__ct_buf *b, const lp__ct_json_opts *o,
                        int level) {
    int rc = lp__ct_buf_putc(c, b, '\n');
    for (int i = 0; !rc && i < level; i++)
        rc = lp__ct_buf_put(c, b, o->indent, o->indent_len);
    return rc;
}

/* Stable merge sort of idx[0..n) by keys[idx[i]] (Python's sorted). */
static int merge_sort(lp__ct_ctx *c, const lp__node *at, const lp__val *keys,
                      size_t *idx, size_t *tmp, size_t n, bool reverse) {
    for (size_t width = 1; width < n; width *= 2) {
        int rc = lp__ct_charge(c, n);
        if (rc)
            return rc;
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = LP_MIN(lo + width, n), hi = LP_MIN(lo + 2 * width, n);
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int r = 0;
                /* take from the right only when strictly smaller: stable */
                rc = reverse ? lp__ct_cmp(c, at, "<", keys[idx[i]], keys[idx[j]], &r, 0)
                             : lp__ct_cmp(c, at, "<", keys[idx[j]], keys[idx[i]], &r, 0);
                if (rc)
                    return rc;
                if (r == -1)
                    tmp[k++] = idx[j++];
                else
                    tmp[k++] = idx[i++];
            }
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
    return LP_OK;
}

int lp__ct_sort_perm(lp__ct_ctx *c, const lp__node *at, const lp__val *keys,
                     size_t n, bool reverse, size_t **perm) {
    size_t *idx = lp__ct_alloc_array(&c->arena, n ? n : 1, sizeof *idx);
    size_t *tmp = lp__ct_alloc_array(&c->arena, n ? n : 1, sizeof *tmp);
    if (!idx || !tmp)
        return lp__ct_oom(c);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    int rc = merge_sort(c, at, keys, idx, tmp, n, reverse);
    if (rc)
        return rc;
    *perm = idx;
    return LP_OK;
}

static int json_key(lp__ct_ctx *c, const lp__node *at, lp__val k, lp__val *out) {
    char tmp[40];
    size_t n = 0;
    switch (k.t) {
    case LP__V_STR: *out = k; return LP_OK;
    case LP__V_FLOAT: n = lp__ct_fmt_float(k.u.f, true, tmp); break;
    case LP__V_BOOL: n = (size_t)snprintf(tmp, sizeof tmp, "%s", k.u.b ? "true" : "false"); break;
    case LP__V_NONE: n = (size_t)snprintf(tmp, sizeof tmp, "null"); break;
    case LP__V_INT: n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)k.u.i); break;
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "keys must be str, int, float, bool or None, not %s",
                           lp__ct_type_name(k));
    }
    return lp__ct_new_str(c, tmp, n, out);
}

int lp__ct_write_json(lp__ct_ctx *c, const lp__node *at, lp__ct_buf *b,
                      lp__val v, const lp__ct_json_opts *o, int level,
                      int depth) {
    if (depth > LP__CT_MAX_VALUE_DEPTH)
        return lp__ct_fail(c, at, LP_ERR_LIMIT, "value nested too deeply");
    char tmp[40];
    size_t n = 0;
    int rc = 0;
    switch (v.t) {
    case LP__V_NONE: return lp__ct_buf_put(c, b, "null", 4);
    case LP__V_BOOL: return v.u.b ? lp__ct_buf_put(c, b, "true", 4)
                                  : lp__ct_buf_put(c, b, "false", 5);
    case LP__V_INT:
        n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_FLOAT:
        n = lp__ct_fmt_float(v.u.f, true, tmp);
        return lp__ct_buf_put(c, b, tmp, n);
    case LP__V_STR: return json_str(c, b, v.u.s.p, v.u.s.n, o->ensure_ascii);
    case LP__V_LIST:
    case LP__V_TUPLE: {
        lp__ct_seq *s = v.u.seq;
        if (s->n == 0)
            return lp__ct_buf_put(c, b, "[]", 2);
        rc = lp__ct_charge(c, s->n);
        if (!rc)
            rc = lp__ct_buf_putc(c, b, '[');
        if (!rc && o->has_indent)
            rc = json_newline(c, b, o, level + 1);
        for (size_t i = 0; !rc && i < s->n; i++) {
            if (i) {
                rc = lp__ct_buf_put(c, b, o->item_sep, o->item_sep_len);
                if (!rc && o->has_indent)
                    rc = json_newline(c, b, o, level + 1);
            }
            if (!rc)
                rc = lp__ct_write_json(c, at, b, s->v[i], o, level + 1, depth + 1);
        }
        if (!rc && o->has_indent)
            rc = json_newline(c, b, o, level);
        return rc ? rc : lp__ct_buf_putc(c, b, ']');
    }
    case LP__V_DICT: {
        lp__ct_dict *d = v.u.d;
        if (d->n == 0)
            return lp__ct_buf_put(c, b, "{}", 2);
        rc = lp__ct_charge(c, d->n);
        if (rc)
            return rc;
        size_t *perm = NULL;
        if (o->sort_keys) {
            lp__val *keys = lp__ct_alloc_array(&c->arena, d->n, sizeof *keys);
            if (!keys)
                return lp__ct_oom(c);
            for (size_t i = 0; i < d->n; i++)
                keys[i] = d->e[i].k;
            rc = lp__ct_sort_perm(c, at, keys, d->n, false, &perm);
            if (rc)
                return rc;
        }
        rc = lp__ct_buf_putc(c, b, '{');
        if (!rc && o->has_indent)
            rc = json_newline(c, b, o, level + 1);
        for (size_t i = 0; !rc && i < d->n; i++) {
            const lp__ct_dent *e = &d->e[perm ? perm[i] : i];
            if (i) {
                rc = lp__ct_buf_put(c, b, o->item_sep, o->item_sep_len);
                if (!rc && o->has_indent)
                    rc = json_newline(c, b, o, level + 1);
            }
            lp__val k;
            if (!rc)
                rc = json_key(c, at, e->k, &k);
            if (!rc)
                rc = json_str(c, b, k.u.s.p, k.u.s.n, o->ensure_ascii);
            if (!rc)
                rc = lp__ct_buf_put(c, b, o->key_sep, o->key_sep_len);
            if (!rc)
                rc = lp__ct_write_json(c, at, b, e->v, o, level + 1, depth + 1);
        }
        if (!rc && o->has_indent)
            rc = json_newline(c, b, o, level);
        return rc ? rc : lp__ct_buf_putc(c, b, '}');
    }
    default:
        return lp__ct_fail(c, at, LP_ERR_INVALID,
                           "Object of type %s is not JSON serializable",
                           lp__ct_type_name(v));
    }
}
