/* pickle.c - restricted unpickler for torch state dicts: allowlist VM, bounded stacks. */
#include "format/pickle.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/torch_pickle.h"
#include "util/util.h"

/* ---- values ------------------------------------------------------------ */

enum {
    V_UNSET = 0, /* memo slot never written */
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,     /* u.off into the pickle, n bytes */
    V_TUPLE,   /* u.off into vm.tup, n items */
    V_LIST,    /* u.off = index into vm.conts */
    V_DICT,    /* u.off = index into vm.conts; items are key, value pairs */
    V_GLOBAL,  /* g = allowlist id */
    V_STORAGE, /* u.off = index into vm.storages */
    V_TENSOR,  /* u.off = index into vm.tensors */
};

/* Value kinds for messages, with their article. */
static const char *const k_type_names[] = {
    "an undefined value", "None",   "a bool",   "an int",    "a float",  "a str",
    "a tuple",            "a list", "a dict",   "a global",  "a storage", "a tensor",
};

typedef struct pv {
    uint8_t t;
    uint8_t g;
    uint32_t n;
    union {
        int64_t i;
        double f;
        uint64_t off;
    } u;
} pv;

typedef struct cont {
    pv *items;
    uint32_t n, cap;
    bool ordered; /* made by collections.OrderedDict() */
} cont;

/* ---- the allowlist --------------------------------------------------------- */

enum {
    G_ORDERED_DICT = 1,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_STORAGE, /* G_STORAGE + k: storage type k of k_storage_types */
};

static const struct {
    const char *name, *full;
    lp_dtype dtype;
} k_storage_types[] = {
    {"FloatStorage", "torch.FloatStorage", LP_DTYPE_F32},
    {"HalfStorage", "torch.HalfStorage", LP_DTYPE_F16},
    {"BFloat16Storage", "torch.BFloat16Storage", LP_DTYPE_BF16},
    {"DoubleStorage", "torch.DoubleStorage", LP_DTYPE_F64},
    {"LongStorage", "torch.LongStorage", LP_DTYPE_I64},
    {"IntStorage", "torch.IntStorage", LP_DTYPE_I32},
    {"ShortStorage", "torch.ShortStorage", LP_DTYPE_I16},
    {"CharStorage", "torch.CharStorage", LP_DTYPE_I8},
    {"ByteStorage", "torch.ByteStorage", LP_DTYPE_U8},
    {"BoolStorage", "torch.BoolStorage", LP_DTYPE_BOOL},
};

static bool str_is(const uint8_t *s, size_t n, const char *lit) {
    size_t k = strlen(lit);
    return n == k && memcmp(s, lit, k) == 0;
}

/* Allowlist id of module.name, or 0. */
static int lookup_global(const uint8_t *mod, size_t mlen, const uint8_t *name, size_t nlen) {
    if (str_is(mod, mlen, "collections") && str_is(name, nlen, "OrderedDict"))
        return G_ORDERED_DICT;
    if (str_is(mod, mlen, "torch._utils")) {
        if (str_is(name, nlen, "_rebuild_tensor_v2"))
            return G_REBUILD_TENSOR_V2;
        if (str_is(name, nlen, "_rebuild_parameter"))
            return G_REBUILD_PARAMETER;
    }
    if (str_is(mod, mlen, "torch"))
        for (size_t k = 0; k < LP_ARRAY_LEN(k_storage_types); k++)
            if (str_is(name, nlen, k_storage_types[k].name))
                return G_STORAGE + (int)k;
    return 0;
}

static const char *global_name(int g) {
    switch (g) {
    case G_ORDERED_DICT: return "collections.OrderedDict";
    case G_REBUILD_TENSOR_V2: return "torch._utils._rebuild_tensor_v2";
    case G_REBUILD_PARAMETER: return "torch._utils._rebuild_parameter";
    default: return k_storage_types[g - G_STORAGE].full;
    }
}

/* ---- opcodes ------------------------------------------------------------- */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M',
    OP_NONE = 'N', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINUNICODE = 'X',
    OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_EMPTY_DICT = '}',
    OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j', OP_EMPTY_LIST = ']',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G', OP_PROTO = 0x80,
    OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
};

/* Names of every pickle opcode, for error messages. */
static const char *opcode_name(uint8_t op) {
    switch (op) {
    case '(': return "MARK";       case '.': return "STOP";       case '0': return "POP";
    case '1': return "POP_MARK";   case '2': return "DUP";        case 'F': return "FLOAT";
    case 'I': return "INT";        case 'J': return "BININT";     case 'K': return "BININT1";
    case 'L': return "LONG";       case 'M': return "BININT2";    case 'N': return "NONE";
    case 'P': return "PERSID";     case 'Q': return "BINPERSID";  case 'R': return "REDUCE";
    case 'S': return "STRING";     case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";    case 'X': return "BINUNICODE"; case 'a': return "APPEND";
    case 'b': return "BUILD";      case 'c': return "GLOBAL";     case 'd': return "DICT";
    case '}': return "EMPTY_DICT"; case 'e': return "APPENDS";    case 'g': return "GET";
    case 'h': return "BINGET";     case 'i': return "INST";       case 'j': return "LONG_BINGET";
    case 'l': return "LIST";       case ']': return "EMPTY_LIST"; case 'o': return "OBJ";
    case 'p': return "PUT";        case 'q': return "BINPUT";     case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";    case 't': return "TUPLE";      case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";   case 'G': return "BINFLOAT";   case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";     case 0x81: return "NEWOBJ";    case 0x82: return "EXT1";
    case 0x83: return "EXT2";      case 0x84: return "EXT4";      case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";    case 0x87: return "TUPLE3";    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";  case 0x8a: return "LONG1";     case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE"; case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8"; case 0x8f: return "EMPTY_SET"; case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET"; case 0x92: return "NEWOBJ_EX"; case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";   case 0x95: return "FRAME";     case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER"; case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

/* ---- the machine ----------------------------------------------------------- */

typedef struct vm {
    const uint8_t *p;
    size_t len, pos, op_pos;
    const char *label;
    lp_error *err;
    size_t max_tensors;

    pv *stack;
    size_t sp, stack_cap;
    size_t marks[LP_PKL_MAX_MARKS];
    size_t n_marks;

    pv *memo;
    size_t memo_n, memo_cap, memo_len; /* slots, capacity, slots written */

    pv *tup; /* items of all tuples */
    size_t tup_n, tup_cap;
    cont *conts;
    size_t n_conts, conts_cap;
    size_t items; /* tup_n + items in all containers */

    lp__pkl_storage *storages;
    size_t n_storages, storages_cap;
    lp__pkl_tensor *tensors; /* views made by _rebuild_tensor_v2 (name unset) */
    size_t n_tensors, tensors_cap;
} vm;

static int fail(vm *m, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail(vm *m, int code, const char *fmt, ...) {
    char what[LP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lp_error_set(m->err, code, "%s: data.pkl byte %zu: %s", m->label, m->op_pos, what);
}

static int oom(vm *m) { return fail(m, LP_ERR_NOMEM, "out of memory"); }

/* Room for `need` elements of `size` bytes, at most `limit`: returns the
 * array (moved as needed), or NULL, leaving it as it was, when over the
 * limit or out of memory. */
static void *grow(void *arr, size_t *cap, size_t need, size_t size, size_t limit) {
    if (need == 0)
        need = 1;
    if (need <= *cap)
        return arr;
    if (need > limit)
        return NULL;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc = nc > limit / 2 ? limit : nc * 2;
    size_t bytes;
    if (!lp__mul_size(nc, size, &bytes))
        return NULL;
    void *q = realloc(arr, bytes);
    if (q)
        *cap = nc;
    return q;
}

/* Printable, bounded copy of pickle text for messages. */
static void shown(const uint8_t *s, size_t n, char *out, size_t cap) {
    size_t k = 0, i = 0;
    for (; i < n && k + 4 < cap; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (i < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

static int push(vm *m, pv v) {
    if (m->sp == m->stack_cap) {
        pv *s = grow(m->stack, &m->stack_cap, m->sp + 1, sizeof(pv), LP_PKL_MAX_STACK);
        if (!s)
            return m->sp + 1 > LP_PKL_MAX_STACK
                       ? fail(m, LP_ERR_LIMIT, "stack deeper than %u values", LP_PKL_MAX_STACK)
                       : oom(m);
        m->stack = s;
    }
    m->stack[m->sp++] = v;
    return LP_OK;
}

/* Values above the innermost MARK. */
static size_t avail(const vm *m) { return m->sp - (m->n_marks ? m->marks[m->n_marks - 1] : 0); }

static int need_stack(vm *m, size_t k, const char *op) {
    if (avail(m) < k)
        return fail(m, LP_ERR_FORMAT, "%s needs %zu value%s on the stack, has %zu", op, k,
                    k == 1 ? "" : "s", avail(m));
    return LP_OK;
}

/* Bytes at the cursor; fails on truncation. */
static int take(vm *m, size_t k, const uint8_t **out, const char *op) {
    if (m->len - m->pos < k)
        return fail(m, LP_ERR_FORMAT, "pickle is truncated inside %s (needs %zu more bytes)",
                    op, k - (m->len - m->pos));
    *out = m->p + m->pos;
    m->pos += k;
    return LP_OK;
}

static uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static uint64_t le64(const uint8_t *b) { return (uint64_t)le32(b) | ((uint64_t)le32(b + 4) << 32); }

static bool count_items(vm *m, size_t k) {
    if (k > LP_PKL_MAX_ITEMS - m->items)
        return false;
    m->items += k;
    return true;
}

static int too_many_items(vm *m) {
    return fail(m, LP_ERR_LIMIT, "more than %u items in tuples, lists and dicts",
                LP_PKL_MAX_ITEMS);
}

/* Pop the top `k` values into a new tuple and push it. */
static int make_tuple(vm *m, size_t k) {
    if (!count_items(m, k))
        return too_many_items(m);
    pv *tup = grow(m->tup, &m->tup_cap, m->tup_n + k, sizeof(pv), LP_PKL_MAX_ITEMS);
    if (!tup)
        return oom(m);
    m->tup = tup;
    pv t = {.t = V_TUPLE, .n = (uint32_t)k, .u.off = m->tup_n};
    if (k)
        memcpy(m->tup + m->tup_n, m->stack + m->sp - k, k * sizeof(pv));
    m->tup_n += k;
    m->sp -= k;
    return push(m, t);
}

static int make_cont(vm *m, uint8_t type, bool ordered) {
    if (m->n_conts >= LP_PKL_MAX_OBJECTS)
        return fail(m, LP_ERR_LIMIT, "more than %u lists and dicts", LP_PKL_MAX_OBJECTS);
    cont *conts = grow(m->conts, &m->conts_cap, m->n_conts + 1, sizeof(cont), LP_PKL_MAX_OBJECTS);
    if (!conts)
        return oom(m);
    m->conts = conts;
    m->conts[m->n_conts] = (cont){.ordered = ordered};
    pv v = {.t = type, .u.off = m->n_conts++};
    return push(m, v);
}

/* Append stack[from..sp) to the container `c` and drop them from the stack. */
static int cont_extend(vm *m, pv c, size_t from) {
    size_t k = m->sp - from;
    cont *ct = &m->conts[c.u.off];
    if (k == 0)
        return LP_OK;
    if (!count_items(m, k))
        return too_many_items(m);
    size_t cap = ct->cap;
    pv *items = grow(ct->items, &cap, (size_t)ct->n + k, sizeof(pv), LP_PKL_MAX_ITEMS);
    if (!items)
        return oom(m);
    ct->items = items;
    ct->cap = (uint32_t)cap;
    memcpy(ct->items + ct->n, m->stack + from, k * sizeof(pv));
    ct->n += (uint32_t)k;
    m->sp = from;
    return LP_OK;
}

static const pv *tuple_items(const vm *m, pv t) { return t.n ? m->tup + t.u.off : NULL; }

static int memo_put(vm *m, uint64_t idx) {
    if (m->sp == 0 || avail(m) == 0)
        return fail(m, LP_ERR_FORMAT, "memo store with nothing on the stack");
    if (idx > m->memo_n || idx >= LP_PKL_MAX_MEMO)
        return fail(m, LP_ERR_RANGE,
                    "memo index %llu out of range (memo has %zu slots; picklers number "
                    "them in order)",
                    (unsigned long long)idx, m->memo_n);
    if (idx == m->memo_n) {
        pv *memo = grow(m->memo, &m->memo_cap, m->memo_n + 1, sizeof(pv), LP_PKL_MAX_MEMO);
        if (!memo)
            return oom(m);
        m->memo = memo;
        m->memo[m->memo_n++].t = V_UNSET;
    }
    if (m->memo[idx].t == V_UNSET)
        m->memo_len++;
    m->memo[idx] = m->stack[m->sp - 1];
    return LP_OK;
}

static int memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_n || m->memo[idx].t == V_UNSET)
        return fail(m, LP_ERR_RANGE, "memo index %llu is not defined (memo has %zu slots)",
                    (unsigned long long)idx, m->memo_n);
    return push(m, m->memo[idx]);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static int push_str(vm *m, uint64_t n, const char *op) {
    const uint8_t *s;
    if (n > m->len - m->pos)
        return fail(m, LP_ERR_FORMAT, "%s of %llu bytes runs past the end of the pickle", op,
                    (unsigned long long)n);
    int rc = take(m, (size_t)n, &s, op);
    if (rc)
        return rc;
    if (!valid_utf8(s, (size_t)n))
        return fail(m, LP_ERR_FORMAT, "%s is not valid UTF-8", op);
    pv v = {.t = V_STR, .n = (uint32_t)n, .u.off = (uint64_t)(s - m->p)};
    return push(m, v);
}

static int push_global(vm *m, const uint8_t *mod, size_t mlen, const uint8_t *name, size_t nlen) {
    int g = lookup_global(mod, mlen, name, nlen);
    if (!g) {
        char a[80], b[80];
        shown(mod, mlen, a, sizeof a);
        shown(name, nlen, b, sizeof b);
        return fail(m, LP_ERR_UNSUPPORTED,
                    "global '%s.%s' is not allowed (only tensor state dicts are accepted)", a, b);
    }
    pv v = {.t = V_GLOBAL, .g = (uint8_t)g};
    return push(m, v);
}

/* GLOBAL: "module\nname\n". */
static int op_global(vm *m) {
    const uint8_t *parts[2];
    size_t lens[2];
    for (int k = 0; k < 2; k++) {
        size_t room = LP_MIN(m->len - m->pos, (size_t)256);
        const uint8_t *nl = memchr(m->p + m->pos, '\n', room);
        if (!nl)
            return fail(m, LP_ERR_FORMAT,
                        room == 256 ? "GLOBAL name longer than 255 bytes"
                                    : "pickle is truncated inside GLOBAL");
        parts[k] = m->p + m->pos;
        lens[k] = (size_t)(nl - parts[k]);
        m->pos += lens[k] + 1;
    }
    return push_global(m, parts[0], lens[0], parts[1], lens[1]);
}

static int op_stack_global(vm *m) {
    int rc = need_stack(m, 2, "STACK_GLOBAL");
    if (rc)
        return rc;
    pv mod = m->stack[m->sp - 2], name = m->stack[m->sp - 1];
    if (mod.t != V_STR || name.t != V_STR)
        return fail(m, LP_ERR_FORMAT, "STACK_GLOBAL needs two str, got %s and %s",
                    k_type_names[mod.t], k_type_names[name.t]);
    m->sp -= 2;
    return push_global(m, m->p + mod.u.off, mod.n, m->p + name.u.off, name.n);
}

/* BINPERSID: ('storage', <storage type>, key, location, numel) -> storage. */
static int op_persid(vm *m) {
    int rc = need_stack(m, 1, "BINPERSID");
    if (rc)
        return rc;
    pv pid = m->stack[m->sp - 1];
    if (pid.t != V_TUPLE || pid.n != 5)
        return fail(m, LP_ERR_FORMAT,
                    "persistent id must be ('storage', type, key, location, numel), got %s",
                    pid.t == V_TUPLE ? "a tuple of the wrong length" : k_type_names[pid.t]);
    const pv *it = tuple_items(m, pid);
    if (it[0].t != V_STR || !str_is(m->p + it[0].u.off, it[0].n, "storage"))
        return fail(m, LP_ERR_UNSUPPORTED,
                    "persistent id of a kind other than 'storage' is not allowed");
    if (it[1].t != V_GLOBAL || it[1].g < G_STORAGE)
        return fail(m, LP_ERR_FORMAT, "persistent id: storage type is %s, not a torch storage "
                    "type", it[1].t == V_GLOBAL ? global_name(it[1].g) : k_type_names[it[1].t]);
    if (it[2].t != V_STR || it[2].n == 0 || memchr(m->p + it[2].u.off, 0, it[2].n))
        return fail(m, LP_ERR_FORMAT, "persistent id: storage key must be a non-empty str "
                    "without NUL");
    if (it[3].t != V_STR)
        return fail(m, LP_ERR_FORMAT, "persistent id: location must be a str, got %s",
                    k_type_names[it[3].t]);
    if (it[4].t != V_INT || it[4].u.i < 0)
        return fail(m, LP_ERR_FORMAT, "persistent id: numel must be an int >= 0");
    if (m->n_storages >= m->max_tensors)
        return fail(m, LP_ERR_LIMIT, "more than %zu storages", m->max_tensors);
    lp__pkl_storage *st = grow(m->storages, &m->storages_cap, m->n_storages + 1,
                               sizeof(lp__pkl_storage), m->max_tensors);
    if (!st)
        return oom(m);
    m->storages = st;
    lp__pkl_storage *s = &m->storages[m->n_storages];
    s->key = (const char *)m->p + it[2].u.off;
    s->key_len = it[2].n;
    s->dtype = k_storage_types[it[1].g - G_STORAGE].dtype;
    s->numel = (uint64_t)it[4].u.i;
    pv v = {.t = V_STORAGE, .u.off = m->n_storages++};
    m->sp--;
    return push(m, v);
}

/* Read a size/stride tuple of non-negative ints. */
static int dims(vm *m, pv t, const char *what, int64_t *out, int *nd) {
    if (t.t != V_TUPLE)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: %s must be a tuple, got %s", what,
                    k_type_names[t.t]);
    if (t.n > LP_MAX_DIMS)
        return fail(m, LP_ERR_LIMIT, "_rebuild_tensor_v2: tensor has %u dimensions (max %d)",
                    t.n, LP_MAX_DIMS);
    const pv *it = tuple_items(m, t);
    for (uint32_t d = 0; d < t.n; d++) {
        if (it[d].t != V_INT || it[d].u.i < 0)
            return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: %s[%u] must be an int >= 0", what,
                        d);
        out[d] = it[d].u.i;
    }
    *nd = (int)t.n;
    return LP_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]) -> a view, checked to lie inside the storage. */
static int rebuild_tensor(vm *m, pv args, pv *out) {
    if (args.n != 6 && args.n != 7)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %u",
                    args.n);
    const pv *a = tuple_items(m, args);
    if (a[0].t != V_STORAGE)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: argument 1 must be a storage, got %s",
                    k_type_names[a[0].t]);
    if (a[1].t != V_INT || a[1].u.i < 0)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: storage_offset must be an int >= 0");
    lp__pkl_tensor t = {.storage = (size_t)a[0].u.off, .offset = (uint64_t)a[1].u.i};
    int nd_stride = 0;
    int rc = dims(m, a[2], "size", t.size, &t.ndim);
    if (!rc)
        rc = dims(m, a[3], "stride", t.stride, &nd_stride);
    if (rc)
        return rc;
    if (nd_stride != t.ndim)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: size has %d dimensions but stride %d",
                    t.ndim, nd_stride);
    if (a[4].t != V_BOOL && a[4].t != V_INT)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: requires_grad must be a bool");
    if (a[5].t != V_DICT || m->conts[a[5].u.off].n != 0)
        return fail(m, LP_ERR_UNSUPPORTED,
                    "_rebuild_tensor_v2: backward_hooks must be an empty OrderedDict");
    if (args.n == 7 && a[6].t != V_NONE && a[6].t != V_DICT)
        return fail(m, LP_ERR_FORMAT, "_rebuild_tensor_v2: metadata must be None or a dict");

    /* the view must lie inside the storage */
    const lp__pkl_storage *s = &m->storages[t.storage];
    uint64_t nelem = 1, last = t.offset;
    bool ok = true;
    for (int d = 0; d < t.ndim; d++)
        ok = ok && lp__mul_u64(nelem, (uint64_t)t.size[d], &nelem);
    for (int d = 0; ok && nelem && d < t.ndim; d++) {
        uint64_t span;
        ok = lp__mul_u64((uint64_t)(t.size[d] - 1), (uint64_t)t.stride[d], &span) &&
             !__builtin_add_overflow(last, span, &last);
    }
    if (!ok)
        return fail(m, LP_ERR_RANGE, "_rebuild_tensor_v2: tensor size overflows");
    if (nelem && last >= s->numel)
        return fail(m, LP_ERR_RANGE,
                    "_rebuild_tensor_v2: view reaches element %llu of a storage of %llu "
                    "elements (storage_offset %llu)",
                    (unsigned long long)last, (unsigned long long)s->numel,
                    (unsigned long long)t.offset);
    t.nelem = nelem;
    if (m->n_tensors >= m->max_tensors)
        return fail(m, LP_ERR_LIMIT, "more than %zu tensors", m->max_tensors);
    lp__pkl_tensor *ts = grow(m->tensors, &m->tensors_cap, m->n_tensors + 1, sizeof t,
                              m->max_tensors);
    if (!ts)
        return oom(m);
    m->tensors = ts;
    m->tensors[m->n_tensors] = t;
    *out = (pv){.t = V_TENSOR, .u.off = m->n_tensors++};
    return LP_OK;
}

static int op_reduce(vm *m) {
    int rc = need_stack(m, 2, "REDUCE");
    if (rc)
        return rc;
    pv fn = m->stack[m->sp - 2], args = m->stack[m->sp - 1];
    if (fn.t != V_GLOBAL)
        return fail(m, LP_ERR_UNSUPPORTED, "REDUCE on %s is not allowed", k_type_names[fn.t]);
    if (args.t != V_TUPLE)
        return fail(m, LP_ERR_FORMAT, "REDUCE arguments must be a tuple, got %s",
                    k_type_names[args.t]);
    pv res;
    switch (fn.g) {
    case G_ORDERED_DICT:
        if (args.n != 0)
            return fail(m, LP_ERR_UNSUPPORTED,
                        "collections.OrderedDict with arguments is not allowed");
        m->sp -= 2;
        return make_cont(m, V_DICT, true);
    case G_REBUILD_TENSOR_V2:
        rc = rebuild_tensor(m, args, &res);
        if (rc)
            return rc;
        break;
    case G_REBUILD_PARAMETER: {
        /* _rebuild_parameter(data, requires_grad, backward_hooks) */
        const pv *a = tuple_items(m, args);
        if (args.n != 3 || a[0].t != V_TENSOR || (a[1].t != V_BOOL && a[1].t != V_INT) ||
            a[2].t != V_DICT || m->conts[a[2].u.off].n != 0)
            return fail(m, LP_ERR_FORMAT,
                        "_rebuild_parameter needs (tensor, requires_grad, empty OrderedDict)");
        res = a[0];
        break;
    }
    default:
        return fail(m, LP_ERR_UNSUPPORTED, "REDUCE on %s is not allowed", global_name(fn.g));
    }
    m->sp -= 2;
    return push(m, res);
}

/* SETITEMS/APPENDS: pop the mark, append the values above it to the container below it. */
static int op_extend_to_mark(vm *m, uint8_t type, const char *op) {
    if (!m->n_marks)
        return fail(m, LP_ERR_FORMAT, "%s without a MARK", op);
    size_t mark = m->marks[--m->n_marks];
    size_t fence = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (mark <= fence)
        return fail(m, LP_ERR_FORMAT, "%s with no container below its MARK", op);
    pv c = m->stack[mark - 1];
    if (c.t != type)
        return fail(m, LP_ERR_FORMAT, "%s on %s", op, k_type_names[c.t]);
    if (type == V_DICT && (m->sp - mark) % 2)
        return fail(m, LP_ERR_FORMAT, "SETITEMS with an odd number of values");
    return cont_extend(m, c, mark);
}

/* SETITEM/APPEND: append the top `k` values to the container below them. */
static int op_extend(vm *m, uint8_t type, size_t k, const char *op) {
    int rc = need_stack(m, k + 1, op);
    if (rc)
        return rc;
    pv c = m->stack[m->sp - k - 1];
    if (c.t != type)
        return fail(m, LP_ERR_FORMAT, "%s on %s", op, k_type_names[c.t]);
    return cont_extend(m, c, m->sp - k);
}

static int op_build(vm *m) {
    int rc = need_stack(m, 2, "BUILD");
    if (rc)
        return rc;
    pv obj = m->stack[m->sp - 2], state = m->stack[m->sp - 1];
    /* OrderedDict.__reduce__ passes vars(self) as state (e.g. a state dict's
     * _metadata): plain data, and nothing for us to keep. */
    if (obj.t != V_DICT || !m->conts[obj.u.off].ordered)
        return fail(m, LP_ERR_UNSUPPORTED, "BUILD on %s is not allowed",
                    obj.t == V_DICT ? "a plain dict" : k_type_names[obj.t]);
    if (state.t != V_NONE && state.t != V_DICT)
        return fail(m, LP_ERR_UNSUPPORTED, "BUILD of an OrderedDict with %s as state is not "
                    "allowed", k_type_names[state.t]);
    m->sp--;
    return LP_OK;
}

static int run(vm *m) {
    int rc = LP_OK;
    const uint8_t *b = NULL;
    for (;;) {
        m->op_pos = m->pos;
        if (m->pos >= m->len)
            return fail(m, LP_ERR_FORMAT, "pickle is truncated (no STOP opcode)");
        uint8_t op = m->p[m->pos++];
        pv v = {0};
        switch (op) {
        case OP_PROTO:
            if ((rc = take(m, 1, &b, "PROTO")))
                return rc;
            if (b[0] < 2 || b[0] > 5)
                return fail(m, LP_ERR_UNSUPPORTED, "pickle protocol %u is not supported", b[0]);
            break;
        case OP_FRAME:
            if ((rc = take(m, 8, &b, "FRAME")))
                return rc;
            if (le64(b) > m->len - m->pos)
                return fail(m, LP_ERR_FORMAT, "FRAME of %llu bytes runs past the end",
                            (unsigned long long)le64(b));
            break;
        case OP_MARK:
            if (m->n_marks >= LP_PKL_MAX_MARKS)
                return fail(m, LP_ERR_LIMIT, "MARKs nested deeper than %d", LP_PKL_MAX_MARKS);
            m->marks[m->n_marks++] = m->sp;
            break;
        case OP_STOP:
            if (m->n_marks)
                return fail(m, LP_ERR_FORMAT, "STOP with %zu unclosed MARK(s)", m->n_marks);
            if (m->sp != 1)
                return fail(m, LP_ERR_FORMAT, "STOP with %zu values on the stack (expected 1)",
                            m->sp);
            if (m->pos != m->len)
                return fail(m, LP_ERR_FORMAT, "%zu bytes after STOP", m->len - m->pos);
            return LP_OK;
        case OP_EMPTY_DICT:
            rc = make_cont(m, V_DICT, false);
            break;
        case OP_EMPTY_LIST:
            rc = make_cont(m, V_LIST, false);
            break;
        case OP_EMPTY_TUPLE:
            rc = make_tuple(m, 0);
            break;
        case OP_TUPLE: {
            if (!m->n_marks)
                return fail(m, LP_ERR_FORMAT, "TUPLE without a MARK");
            size_t k = m->sp - m->marks[--m->n_marks];
            rc = make_tuple(m, k);
            break;
        }
        case OP_TUPLE1:
        case OP_TUPLE2:
        case OP_TUPLE3: {
            size_t k = (size_t)(op - OP_TUPLE1 + 1);
            if (!(rc = need_stack(m, k, opcode_name(op))))
                rc = make_tuple(m, k);
            break;
        }
        case OP_BINPUT:
            if (!(rc = take(m, 1, &b, "BINPUT")))
                rc = memo_put(m, b[0]);
            break;
        case OP_LONG_BINPUT:
            if (!(rc = take(m, 4, &b, "LONG_BINPUT")))
                rc = memo_put(m, le32(b));
            break;
        case OP_MEMOIZE:
            rc = memo_put(m, m->memo_len);
            break;
        case OP_BINGET:
            if (!(rc = take(m, 1, &b, "BINGET")))
                rc = memo_get(m, b[0]);
            break;
        case OP_LONG_BINGET:
            if (!(rc = take(m, 4, &b, "LONG_BINGET")))
                rc = memo_get(m, le32(b));
            break;
        case OP_BININT:
            if (!(rc = take(m, 4, &b, "BININT"))) {
                v = (pv){.t = V_INT, .u.i = (int32_t)le32(b)};
                rc = push(m, v);
            }
            break;
        case OP_BININT1:
            if (!(rc = take(m, 1, &b, "BININT1"))) {
                v = (pv){.t = V_INT, .u.i = b[0]};
                rc = push(m, v);
            }
            break;
        case OP_BININT2:
            if (!(rc = take(m, 2, &b, "BININT2"))) {
                v = (pv){.t = V_INT, .u.i = b[0] | (b[1] << 8)};
                rc = push(m, v);
            }
            break;
        case OP_LONG1: {
            if ((rc = take(m, 1, &b, "LONG1")))
                return rc;
            size_t k = b[0];
            if (k > 8)
                return fail(m, LP_ERR_RANGE, "LONG1 integer of %zu bytes is too large", k);
            if ((rc = take(m, k, &b, "LONG1")))
                return rc;
            uint64_t u = 0;
            for (size_t j = 0; j < k; j++)
                u |= (uint64_t)b[j] << (8 * j);
            if (k && k < 8 && (b[k - 1] & 0x80))
                u |= ~0ull << (8 * k); /* sign-extend */
            int64_t i;
            memcpy(&i, &u, sizeof i);
            v = (pv){.t = V_INT, .u.i = i};
            rc = push(m, v);
            break;
        }
        case OP_BINFLOAT:
            if (!(rc = take(m, 8, &b, "BINFLOAT"))) {
                uint64_t u = 0;
                for (int j = 0; j < 8; j++)
                    u = (u << 8) | b[j]; /* big-endian */
                v.t = V_FLOAT;
                memcpy(&v.u.f, &u, sizeof u);
                rc = push(m, v);
            }
            break;
        case OP_NONE:
            v.t = V_NONE;
            rc = push(m, v);
            break;
        case OP_NEWTRUE:
        case OP_NEWFALSE:
            v = (pv){.t = V_BOOL, .u.i = op == OP_NEWTRUE};
            rc = push(m, v);
            break;
        case OP_SHORT_BINUNICODE:
            if (!(rc = take(m, 1, &b, "SHORT_BINUNICODE")))
                rc = push_str(m, b[0], "SHORT_BINUNICODE");
            break;
        case OP_BINUNICODE:
            if (!(rc = take(m, 4, &b, "BINUNICODE")))
                rc = push_str(m, le32(b), "BINUNICODE");
            break;
        case OP_BINUNICODE8:
            if (!(rc = take(m, 8, &b, "BINUNICODE8")))
                rc = push_str(m, le64(b), "BINUNICODE8");
            break;
        case OP_SETITEM:
            rc = op_extend(m, V_DICT, 2, "SETITEM");
            break;
        case OP_SETITEMS:
            rc = op_extend_to_mark(m, V_DICT, "SETITEMS");
            break;
        case OP_APPEND:
            rc = op_extend(m, V_LIST, 1, "APPEND");
            break;
        case OP_APPENDS:
            rc = op_extend_to_mark(m, V_LIST, "APPENDS");
            break;
        case OP_GLOBAL:
            rc = op_global(m);
            break;
        case OP_STACK_GLOBAL:
            rc = op_stack_global(m);
            break;
        case OP_REDUCE:
            rc = op_reduce(m);
            break;
        case OP_BINPERSID:
            rc = op_persid(m);
            break;
        case OP_BUILD:
            rc = op_build(m);
            break;
        default: {
            const char *name = opcode_name(op);
            if (name)
                return fail(m, LP_ERR_UNSUPPORTED,
                            "opcode %s (0x%02x) is not allowed (only tensor state dicts are "
                            "accepted)",
                            name, op);
            return fail(m, LP_ERR_FORMAT, "unknown opcode 0x%02x", op);
        }
        }
        if (rc)
            return rc;
    }
}

/* The result must be a dict of str -> tensor. */
static int collect(vm *m, lp__pkl_dict *out) {
    pv top = m->stack[0];
    m->op_pos = m->len ? m->len - 1 : 0;
    if (top.t != V_DICT)
        return fail(m, LP_ERR_FORMAT,
                    "the pickle holds %s, not a state dict (a dict of str -> tensor)",
                    k_type_names[top.t]);
    const cont *c = &m->conts[top.u.off];
    size_t n = c->n / 2;
    if (n > m->max_tensors)
        return fail(m, LP_ERR_LIMIT, "state dict has %zu entries, limit is %zu", n,
                    m->max_tensors);
    out->tensors = lp__calloc_array(n ? n : 1, sizeof *out->tensors);
    if (!out->tensors)
        return oom(m);
    for (size_t i = 0; i < n; i++) {
        pv k = c->items[2 * i], v = c->items[2 * i + 1];
        if (k.t != V_STR)
            return fail(m, LP_ERR_FORMAT, "state dict key %zu is %s, not a str", i,
                        k_type_names[k.t]);
        char name[96];
        shown(m->p + k.u.off, k.n, name, sizeof name);
        if (k.n == 0 || memchr(m->p + k.u.off, 0, k.n))
            return fail(m, LP_ERR_FORMAT, "state dict key %zu ('%s') is empty or contains NUL",
                        i, name);
        if (v.t != V_TENSOR)
            return fail(m, LP_ERR_FORMAT, "state dict entry '%s' is %s, not a tensor", name,
                        k_type_names[v.t]);
        lp__pkl_tensor *t = &out->tensors[i];
        *t = m->tensors[v.u.off];
        t->name = (const char *)m->p + k.u.off;
        t->name_len = k.n;
    }
    out->n_tensors = n;
    out->storages = m->storages;
    out->n_storages = m->n_storages;
    m->storages = NULL;
    return LP_OK;
}

int lp__pkl_load_state_dict(const uint8_t *pkl, size_t len, const char *label,
                            size_t max_tensors, lp__pkl_dict *out, lp_error *err) {
    memset(out, 0, sizeof *out);
    vm m = {.p = pkl, .len = len, .label = label, .err = err, .max_tensors = max_tensors};
    int rc;
    if (len > LP_PT_MAX_PICKLE) {
        rc = lp_error_set(err, LP_ERR_LIMIT, "%s: data.pkl is %zu bytes, limit is %u", label,
                          len, LP_PT_MAX_PICKLE);
        goto out;
    }
    rc = run(&m);
    if (!rc)
        rc = collect(&m, out);
out:
    if (rc)
        lp__pkl_dict_free(out);
    free(m.stack);
    free(m.memo);
    free(m.tup);
    for (size_t i = 0; i < m.n_conts; i++)
        free(m.conts[i].items);
    free(m.conts);
    free(m.storages);
    free(m.tensors);
    return rc;
}

void lp__pkl_dict_free(lp__pkl_dict *d) {
    if (!d)
        return;
    free(d->tensors);
    free(d->storages);
    memset(d, 0, sizeof *d);
}
