/* torch_pickle.c - torch.save reader: zip records + restricted data.pkl -> tensors. */
#include "format/torch_pickle.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/pickle.h"
#include "format/zip.h"
#include "util/util.h"

#define COPY_ALIGN 64u

struct lp_pt_file {
    char *label;
    uint8_t *archive;             /* private copy of the archive, or NULL */
    lp_st_tensor *tensors;        /* [n] state-dict order */
    const lp_st_tensor **sorted;  /* [n] by name */
    char *names;                  /* NUL-terminated tensor names */
    uint8_t *copies;              /* gathered (non-contiguous or unaligned) tensors */
    int n;
};

/* Data of zero-element tensors: valid, never read. */
static const uint64_t k_empty = 0;

static int cmp_tensor_ptr(const void *a, const void *b) {
    const lp_st_tensor *x = *(const lp_st_tensor *const *)a;
    const lp_st_tensor *y = *(const lp_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_storage_ptr(const void *a, const void *b) {
    const lp__pkl_storage *x = *(const lp__pkl_storage *const *)a;
    const lp__pkl_storage *y = *(const lp__pkl_storage *const *)b;
    int c = memcmp(x->key, y->key, LP_MIN(x->key_len, y->key_len));
    if (c)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* Printable, bounded copy of a name for messages. */
static void shown(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0, i = 0;
    for (; i < n && k + 4 < cap; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (i < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

static bool is_contiguous(const lp__pkl_tensor *t) {
    if (t->nelem == 0)
        return true;
    uint64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && (uint64_t)t->stride[d] != expect)
            return false;
        expect *= (uint64_t)t->size[d]; /* <= nelem: no overflow */
    }
    return true;
}

/* Copy a strided view (checked by the VM to lie inside `src`) to `dst`. */
static void gather(uint8_t *dst, const uint8_t *src, size_t es, const lp__pkl_tensor *t) {
    if (t->nelem == 0)
        return;
    int nd = t->ndim;
    if (nd == 0) {
        memcpy(dst, src + t->offset * es, es);
        return;
    }
    uint64_t idx[LP_MAX_DIMS] = {0};
    uint64_t base = t->offset;
    uint64_t inner = (uint64_t)t->size[nd - 1], is = (uint64_t)t->stride[nd - 1];
    for (;;) {
        if (is == 1) {
            memcpy(dst, src + base * es, (size_t)(inner * es));
            dst += inner * es;
        } else {
            for (uint64_t j = 0; j < inner; j++, dst += es)
                memcpy(dst, src + (base + j * is) * es, es);
        }
        int d = nd - 2;
        for (; d >= 0; d--) {
            base += (uint64_t)t->stride[d];
            if (++idx[d] < (uint64_t)t->size[d])
                break;
            base -= (uint64_t)t->stride[d] * (uint64_t)t->size[d];
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

/* Turn the VM's records into lp_st_tensors on the resolved storages.
 * `input_len` bounds the bytes we are willing to copy. */
static int build(lp_pt_file *f, const lp__pkl_dict *d, lp__pt_storage_fn get, void *ctx,
                 size_t input_len, lp_error *err) {
    int rc = LP_OK;
    const uint8_t **sdata = lp__calloc_array(d->n_storages ? d->n_storages : 1, sizeof *sdata);
    const lp__pkl_storage **by_key =
        lp__calloc_array(d->n_storages ? d->n_storages : 1, sizeof *by_key);
    char *key = NULL;
    size_t key_cap = 0;
    if (!sdata || !by_key) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
        goto out;
    }

    /* a key met twice must describe the same storage both times */
    for (size_t i = 0; i < d->n_storages; i++)
        by_key[i] = &d->storages[i];
    qsort(by_key, d->n_storages, sizeof *by_key, cmp_storage_ptr);
    for (size_t i = 1; i < d->n_storages; i++) {
        const lp__pkl_storage *a = by_key[i - 1], *b = by_key[i];
        if (!cmp_storage_ptr(&a, &b) && (a->dtype != b->dtype || a->numel != b->numel)) {
            char k[80];
            shown(b->key, b->key_len, k, sizeof k);
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: data.pkl: storage '%s' is referenced as %s[%llu] and as "
                              "%s[%llu]",
                              f->label, k, lp_dtype_name(a->dtype),
                              (unsigned long long)a->numel, lp_dtype_name(b->dtype),
                              (unsigned long long)b->numel);
            goto out;
        }
    }

    /* resolve every storage and check its record holds exactly numel elements */
    for (size_t i = 0; i < d->n_storages; i++) {
        const lp__pkl_storage *s = &d->storages[i];
        char k[80];
        shown(s->key, s->key_len, k, sizeof k);
        if (s->key_len + 1 > key_cap) {
            free(key);
            key_cap = s->key_len + 1;
            key = malloc(key_cap);
            if (!key) {
                rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
                goto out;
            }
        }
        memcpy(key, s->key, s->key_len);
        key[s->key_len] = '\0';
        const void *data;
        size_t len;
        rc = get(ctx, key, &data, &len, err);
        if (rc) {
            lp_error_prefix(err, "%s", f->label);
            goto out;
        }
        uint64_t want;
        if (!lp__mul_u64(s->numel, lp_dtype_size(s->dtype), &want) || want != len) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: storage '%s' holds %zu bytes but the pickle says %llu "
                              "elements of %s",
                              f->label, k, len, (unsigned long long)s->numel,
                              lp_dtype_name(s->dtype));
            goto out;
        }
        sdata[i] = data;
    }

    /* plan: tensor data either points into its storage (contiguous, aligned)
     * or is gathered into `copies`, whose size is bounded by the input */
    size_t n = d->n_tensors, names_len = 0, copy_len = 0;
    size_t copy_budget = input_len > (SIZE_MAX - (1u << 20)) / 2 ? SIZE_MAX
                                                                   : 2 * input_len + (1u << 20);
    f->tensors = lp__calloc_array(n ? n : 1, sizeof *f->tensors);
    f->sorted = lp__calloc_array(n ? n : 1, sizeof *f->sorted);
    if (!f->tensors || !f->sorted) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const lp__pkl_tensor *t = &d->tensors[i];
        const lp__pkl_storage *s = &d->storages[t->storage];
        size_t es = lp_dtype_size(s->dtype);
        uint64_t nbytes;
        char nm[96];
        shown(t->name, t->name_len, nm, sizeof nm);
        names_len += t->name_len + 1; /* names come from the pickle: no overflow */
        if (!lp__mul_u64(t->nelem, es, &nbytes) || nbytes > SIZE_MAX) {
            rc = lp_error_set(err, LP_ERR_RANGE, "%s: tensor '%s': size overflows", f->label,
                              nm);
            goto out;
        }
        lp_st_tensor *o = &f->tensors[i];
        o->dtype = s->dtype;
        o->ndim = t->ndim;
        memcpy(o->shape, t->size, sizeof o->shape);
        o->nelem = t->nelem;
        o->nbytes = nbytes;
        if (t->nelem == 0) {
            o->data = &k_empty;
            continue;
        }
        const uint8_t *start = sdata[t->storage] + t->offset * es;
        if (is_contiguous(t) && (uintptr_t)start % es == 0) {
            o->data = start;
            continue;
        }
        size_t padded = ((size_t)nbytes + COPY_ALIGN - 1) / COPY_ALIGN * COPY_ALIGN;
        if (padded < nbytes || padded > copy_budget - copy_len) {
            rc = lp_error_set(err, LP_ERR_LIMIT,
                              "%s: tensor '%s': copying strided views would take more than "
                              "%zu bytes (twice the input plus 1 MiB)",
                              f->label, nm, copy_budget);
            goto out;
        }
        o->data = NULL; /* placed below */
        copy_len += padded;
    }

    f->names = malloc(names_len ? names_len : 1);
    if (copy_len)
        f->copies = aligned_alloc(COPY_ALIGN, copy_len);
    if (!f->names || (copy_len && !f->copies)) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
        goto out;
    }
    size_t name_pos = 0, copy_pos = 0;
    for (size_t i = 0; i < n; i++) {
        const lp__pkl_tensor *t = &d->tensors[i];
        lp_st_tensor *o = &f->tensors[i];
        memcpy(f->names + name_pos, t->name, t->name_len);
        f->names[name_pos + t->name_len] = '\0';
        o->name = f->names + name_pos;
        name_pos += t->name_len + 1;
        if (!o->data) {
            uint8_t *dst = f->copies + copy_pos;
            gather(dst, sdata[t->storage], lp_dtype_size(o->dtype), t);
            o->data = dst;
            copy_pos += ((size_t)o->nbytes + COPY_ALIGN - 1) / COPY_ALIGN * COPY_ALIGN;
        }
        f->sorted[i] = o;
    }
    f->n = (int)n;
    if (n > 1)
        qsort(f->sorted, n, sizeof *f->sorted, cmp_tensor_ptr);
    for (size_t i = 1; i < n; i++) {
        if (!strcmp(f->sorted[i - 1]->name, f->sorted[i]->name)) {
            char nm[96];
            shown(f->sorted[i]->name, strlen(f->sorted[i]->name), nm, sizeof nm);
            rc = lp_error_set(err, LP_ERR_FORMAT, "%s: data.pkl: duplicate tensor name '%s'",
                              f->label, nm);
            goto out;
        }
    }
out:
    free(sdata);
    free(by_key);
    free(key);
    return rc;
}

static lp_pt_file *file_new(const char *label) {
    lp_pt_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->label = lp__strdup(label ? label : "<buffer>");
    if (!f->label) {
        free(f);
        return NULL;
    }
    return f;
}

/* ---- bare pickle (tests, fuzzing) ----------------------------------------- */

int lp__pt_open_pickle(const void *pkl, size_t len, const char *label, lp__pt_storage_fn get,
                       void *ctx, lp_pt_file **out, lp_error *err) {
    *out = NULL;
    lp__pkl_dict d = {0};
    lp_pt_file *f = file_new(label);
    if (!f)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    int rc = lp__pkl_load_state_dict(pkl, len, f->label, LP_PT_MAX_TENSORS, &d, err);
    if (!rc)
        rc = build(f, &d, get, ctx, len, err);
    lp__pkl_dict_free(&d);
    if (rc) {
        lp_pt_close(f);
        return rc;
    }
    *out = f;
    return LP_OK;
}

/* ---- zip archive ------------------------------------------------------------ */

typedef struct zip_ctx {
    const lp__zip *zip;
    const char *prefix; /* "<prefix>/data/" */
    size_t prefix_len;
    uint8_t *checked;   /* per entry: CRC verified */
    char *name;         /* scratch */
    size_t name_cap;
} zip_ctx;

static int zip_storage(void *ctxp, const char *key, const void **data, size_t *len,
                       lp_error *err) {
    zip_ctx *c = ctxp;
    size_t need = c->prefix_len + strlen(key) + 1;
    if (need > c->name_cap) {
        char *p = realloc(c->name, need);
        if (!p)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        c->name = p;
        c->name_cap = need;
    }
    memcpy(c->name, c->prefix, c->prefix_len);
    memcpy(c->name + c->prefix_len, key, need - c->prefix_len);
    long i = lp__zip_find(c->zip, c->name);
    if (i < 0) {
        char nm[96];
        shown(c->name, strlen(c->name), nm, sizeof nm);
        return lp_error_set(err, LP_ERR_NOT_FOUND,
                            "storage record '%s' named in data.pkl is missing from the archive",
                            nm);
    }
    if (!c->checked[i]) {
        int rc = lp__zip_verify(c->zip, (size_t)i, err);
        if (rc)
            return rc;
        c->checked[i] = 1;
    }
    const lp__zip_entry *e = lp__zip_at(c->zip, (size_t)i);
    *data = e->data;
    *len = (size_t)e->size;
    return LP_OK;
}

/* A small text record (byteorder, version), CRC-checked; NULL if absent. */
static int small_record(const lp__zip *z, const char *name, const lp__zip_entry **out,
                        lp_error *err) {
    *out = NULL;
    long i = lp__zip_find(z, name);
    if (i < 0)
        return LP_OK;
    int rc = lp__zip_verify(z, (size_t)i, err);
    if (!rc)
        *out = lp__zip_at(z, (size_t)i);
    return rc;
}

/* Parse and validate the archive in f->archive (owned by f). */
static int open_archive(lp_pt_file *f, size_t len, lp_error *err) {
    const uint8_t *buf = f->archive;
    lp__zip *z = NULL;
    lp__pkl_dict d = {0};
    zip_ctx ctx = {0};
    char *path = NULL;
    int rc;

    if (len >= 2 && buf[0] == 0x80 && buf[1] <= 5) {
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s: legacy (pre-1.6, non-zip) torch.save format is not supported; "
                            "re-save it with a current torch or convert it to safetensors",
                            f->label);
    }
    rc = lp__zip_open(buf, len, f->label, (size_t)LP_PT_MAX_TENSORS + 64, &z, err);
    if (rc)
        goto out;

    /* the archive's folder: from its "<prefix>/data.pkl" record */
    size_t n = lp__zip_count(z);
    const lp__zip_entry *pkl = NULL;
    for (size_t i = 0; i < n; i++) {
        const lp__zip_entry *e = lp__zip_at(z, i);
        const char *slash = strchr(e->name, '/');
        if (slash && slash != e->name && !strcmp(slash, "/data.pkl")) {
            if (pkl) {
                char a[96], b[96];
                shown(pkl->name, pkl->name_len, a, sizeof a);
                shown(e->name, e->name_len, b, sizeof b);
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  "%s: two data.pkl records ('%s' and '%s')", f->label, a, b);
                goto out;
            }
            pkl = e;
        }
    }
    if (!pkl) {
        rc = lp_error_set(err, LP_ERR_FORMAT,
                          "%s: no '<folder>/data.pkl' record: not a torch.save archive",
                          f->label);
        goto out;
    }
    size_t plen = pkl->name_len - strlen("data.pkl"); /* "<prefix>/" */
    for (size_t i = 0; i < n; i++) {
        const lp__zip_entry *e = lp__zip_at(z, i);
        if (e->name_len <= plen || memcmp(e->name, pkl->name, plen) != 0) {
            char a[96], b[96];
            shown(e->name, e->name_len, a, sizeof a);
            shown(pkl->name, plen - 1, b, sizeof b);
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: entry '%s' is outside the archive folder '%s'", f->label, a,
                              b);
            goto out;
        }
    }

    path = malloc(plen + 32);
    ctx.checked = calloc(n ? n : 1, 1);
    if (!path || !ctx.checked) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
        goto out;
    }
    memcpy(path, pkl->name, plen);

    const lp__zip_entry *rec;
    memcpy(path + plen, "byteorder", 10);
    if ((rc = small_record(z, path, &rec, err)))
        goto prefixed;
    if (rec && !(rec->size == 6 && !memcmp(rec->data, "little", 6))) {
        char v[40];
        shown((const char *)rec->data, (size_t)rec->size, v, sizeof v);
        rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                          "%s: byteorder is '%s'; only little-endian archives are supported",
                          f->label, v);
        goto out;
    }
    static const char *const k_versions[] = {"version", ".data/version"};
    for (size_t k = 0; k < LP_ARRAY_LEN(k_versions); k++) {
        memcpy(path + plen, k_versions[k], strlen(k_versions[k]) + 1);
        if ((rc = small_record(z, path, &rec, err)))
            goto prefixed;
        if (!rec)
            continue;
        size_t m = (size_t)rec->size, digits = 0;
        while (m && (rec->data[m - 1] == '\n' || rec->data[m - 1] == '\r'))
            m--;
        while (digits < m && rec->data[digits] >= '0' && rec->data[digits] <= '9')
            digits++;
        if (m == 0 || digits != m || m > 9) {
            char v[40];
            shown((const char *)rec->data, (size_t)rec->size, v, sizeof v);
            rc = lp_error_set(err, LP_ERR_FORMAT, "%s: record '%s' is '%s', not a version number",
                              f->label, k_versions[k], v);
            goto out;
        }
    }

    if ((rc = lp__zip_verify(z, (size_t)(pkl - lp__zip_at(z, 0)), err)))
        goto prefixed;
    rc = lp__pkl_load_state_dict(pkl->data, (size_t)pkl->size, f->label, LP_PT_MAX_TENSORS, &d,
                                 err);
    if (rc)
        goto out;
    memcpy(path + plen, "data/", 6);
    ctx.zip = z;
    ctx.prefix = path;
    ctx.prefix_len = plen + 5;
    rc = build(f, &d, zip_storage, &ctx, len, err);
    goto out;
prefixed:
    lp_error_prefix(err, "%s", f->label);
out:
    lp__pkl_dict_free(&d);
    lp__zip_close(z);
    free(ctx.checked);
    free(ctx.name);
    free(path);
    return rc;
}

int lp_pt_open_buffer(const void *buf, size_t len, const char *label, lp_pt_file **out,
                      lp_error *err) {
    *out = NULL;
    lp_pt_file *f = file_new(label);
    if (!f)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    int rc;
    if ((uint64_t)len > LP_PT_MAX_FILE) {
        rc = lp_error_set(err, LP_ERR_LIMIT, "%s: archive is %zu bytes, limit is %llu",
                          f->label, len, (unsigned long long)LP_PT_MAX_FILE);
        goto fail;
    }
    f->archive = malloc(len ? len : 1);
    if (!f->archive) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", f->label);
        goto fail;
    }
    if (len)
        memcpy(f->archive, buf, len);
    rc = open_archive(f, len, err);
    if (rc)
        goto fail;
    *out = f;
    return LP_OK;
fail:
    lp_pt_close(f);
    return rc;
}

int lp_pt_open(const char *path, lp_pt_file **out, lp_error *err) {
    *out = NULL;
    lp_pt_file *f = file_new(path);
    if (!f)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    char *data = NULL;
    size_t len = 0;
    /* a private copy: immune to the file changing under us (bad-inputs 12) */
    int rc = lp__read_file(path, (size_t)LP_PT_MAX_FILE, &data, &len, err);
    if (!rc) {
        f->archive = (uint8_t *)data;
        rc = open_archive(f, len, err);
    }
    if (rc) {
        lp_pt_close(f);
        return rc;
    }
    *out = f;
    return LP_OK;
}

void lp_pt_close(lp_pt_file *f) {
    if (!f)
        return;
    free(f->label);
    free(f->archive);
    free(f->tensors);
    free(f->sorted);
    free(f->names);
    free(f->copies);
    free(f);
}

int lp_pt_count(const lp_pt_file *f) { return f ? f->n : 0; }

const lp_st_tensor *lp_pt_at(const lp_pt_file *f, int i) {
    return (f && i >= 0 && i < f->n) ? &f->tensors[i] : NULL;
}

const lp_st_tensor *lp_pt_find(const lp_pt_file *f, const char *name) {
    if (!f || !name)
        return NULL;
    size_t lo = 0, hi = (size_t)f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->sorted[mid]->name, name);
        if (c == 0)
            return f->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
