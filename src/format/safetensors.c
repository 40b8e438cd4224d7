/* safetensors.c - safetensors reader (mmap or private copy) with the reference
 * loader's validation, sharded checkpoint sets (index.json), and a writer. */
#include "format/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "util/util.h"

#define ST_INDEX_MAX (64u * 1024u * 1024u) /* cap on a shard index.json */

/* Names can be up to the header size: quote at most 160 bytes of a tensor or
 * field name and 256 of a path, so the path stays in the 512-byte message. */
#define NAMEF "'%.160s'"
#define PATHF "%.256s"

/* ------------------------------------------------------------------------ */
/* The file handle. */

typedef struct {
    const char *key, *value; /* in the file's string arena */
} st_meta;

struct lp_st_file {
    char *label;            /* path or buffer label, for messages */
    lp_st_tensor *tensors;  /* (n) in data-region order */
    int n;
    int *by_name;           /* (n) indices into tensors, sorted by name */
    st_meta *meta;          /* (n_meta) __metadata__ in header order */
    int n_meta;
    char *strings;          /* arena: tensor names and metadata strings */
    void *map;              /* LP_ST_MMAP: the whole file */
    size_t map_len;
    uint8_t *copy;          /* LP_ST_COPY / buffer: private copy of the data region */
    uint64_t data_len;      /* bytes in the data region */
};

/* Per-tensor scratch kept while the header is validated. */
typedef struct {
    uint64_t begin, end;
    int hdr_index; /* position in the header, for a stable order */
} st_span;

static const char *label_or_default(const char *label) {
    return label && *label ? label : "<buffer>";
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Strict UTF-8 check (no overlongs, no surrogates, nothing above U+10FFFF).
 * Returns the offset of the first bad byte, or len when all is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (len - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += k + 1;
    }
    return len;
}

/* A non-negative JSON integer, as u64; false for reals, negatives, others. */
static bool json_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return false;
    *out = (uint64_t)x;
    return true;
}

/* Check one tensor entry of the header and fill t (name/data excepted) and sp.
 * `data_len` is the size of the data region, for the range check. */
static int check_entry(const char *label, const char *name, json_t *entry,
                       uint64_t data_len, lp_st_tensor *t, st_span *sp,
                       lp_error *err) {
    if (!json_is_object(entry))
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": tensor " NAMEF ": entry is not an object",
                            label, name);
    const char *key;
    json_t *val;
    json_object_foreach(entry, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return lp_error_set(err, LP_ERR_FORMAT,
                                PATHF ": tensor " NAMEF ": unknown field " NAMEF
                                " (expected dtype, shape, data_offsets)",
                                label, name, key);
    }

    /* dtype */
    json_t *jd = json_object_get(entry, "dtype");
    if (!jd)
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": tensor " NAMEF ": missing field 'dtype'",
                            label, name);
    if (!json_is_string(jd))
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": tensor " NAMEF ": 'dtype' is not a string",
                            label, name);
    t->dtype = lp_dtype_from_name(json_string_value(jd));
    if (t->dtype == LP_DTYPE_INVALID)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            PATHF ": tensor " NAMEF ": unsupported dtype '%.32s' (supported: "
                            "F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                            label, name, json_string_value(jd));

    /* shape */
    json_t *js = json_object_get(entry, "shape");
    if (!js)
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": tensor " NAMEF ": missing field 'shape'",
                            label, name);
    if (!json_is_array(js))
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": tensor " NAMEF ": 'shape' is not an array",
                            label, name);
    size_t nd = json_array_size(js);
    if (nd > LP_MAX_DIMS)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            PATHF ": tensor " NAMEF ": 'shape' has %zu dimensions, at most %d supported",
                            label, name, nd, LP_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    bool overflow = false;
    for (size_t d = 0; d < nd; d++) {
        uint64_t dim;
        if (!json_u64(json_array_get(js, d), &dim))
            return lp_error_set(err, LP_ERR_FORMAT,
                                PATHF ": tensor " NAMEF ": 'shape'[%zu] is not a non-negative integer",
                                label, name, d);
        t->shape[d] = (int64_t)dim;
        if (!lp__mul_u64(nelem, dim, &nelem))
            overflow = true; /* a later 0 dim does not make this valid */
    }
    uint64_t nbytes = 0;
    if (overflow || !lp__mul_u64(nelem, lp_dtype_size(t->dtype), &nbytes))
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": 'shape' size overflows 64 bits", label, name);
    t->nelem = nelem;
    t->nbytes = nbytes;

    /* data_offsets */
    json_t *jo = json_object_get(entry, "data_offsets");
    if (!jo)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": missing field 'data_offsets'", label, name);
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &b) ||
        !json_u64(json_array_get(jo, 1), &e))
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": 'data_offsets' is not [begin, end] of "
                            "non-negative integers",
                            label, name);
    if (e < b)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": 'data_offsets' end %llu < begin %llu", label,
                            name, (unsigned long long)e, (unsigned long long)b);
    if (e - b != nbytes)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": 'data_offsets' span %llu bytes but "
                            "shape x %s needs %llu",
                            label, name, (unsigned long long)(e - b), lp_dtype_name(t->dtype),
                            (unsigned long long)nbytes);
    if (e > data_len)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": tensor " NAMEF ": 'data_offsets' [%llu, %llu] past the end "
                            "of the data region (%llu bytes)",
                            label, name, (unsigned long long)b, (unsigned long long)e,
                            (unsigned long long)data_len);
    sp->begin = b;
    sp->end = e;
    return LP_OK;
}

static int span_cmp(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->hdr_index > y->hdr_index) - (x->hdr_index < y->hdr_index);
}

/* Stable merge sort of tensor indices by name (qsort has no context argument,
 * and files may be opened from several threads at once). tmp holds n ints. */
static void sort_by_name(const lp_st_tensor *t, int *idx, int *tmp, int n) {
    if (n < 2)
        return;
    int h = n / 2;
    sort_by_name(t, idx, tmp, h);
    sort_by_name(t, idx + h, tmp, n - h);
    int i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = strcmp(t[idx[j]].name, t[idx[i]].name) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

/* Check the metadata object and count the bytes its strings need. */
static int check_metadata(const char *label, json_t *m, size_t *bytes, lp_error *err) {
    if (!json_is_object(m))
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": '__metadata__' is not an object", label);
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val) {
        if (!json_is_string(val))
            return lp_error_set(err, LP_ERR_FORMAT,
                                PATHF ": '__metadata__' key " NAMEF ": value is not a string",
                                label, key);
        size_t a = strlen(key) + 1, b = json_string_length(val) + 1;
        if (memchr(json_string_value(val), 0, b - 1))
            return lp_error_set(err, LP_ERR_FORMAT,
                                PATHF ": '__metadata__' key " NAMEF ": value contains NUL",
                                label, key);
        if (!lp__add_size(*bytes, a, bytes) || !lp__add_size(*bytes, b, bytes))
            return lp_error_set(err, LP_ERR_NOMEM, PATHF ": header too large", label);
    }
    return LP_OK;
}

/* Parse and validate the JSON header `hdr` (hdr_len bytes) against a data
 * region of data_len bytes; fills f's tensors (data pointers left NULL, their
 * begin offsets returned in *begins_out, by tensor index), names, metadata. */
static int parse_header(lp_st_file *f, const uint8_t *hdr, size_t hdr_len, uint64_t data_len,
                        uint64_t **begins_out, lp_error *err) {
    const char *label = f->label;
    int rc = LP_OK;
    json_t *root = NULL;
    st_span *spans = NULL;
    lp_st_tensor *tmp_t = NULL;
    uint64_t *begins = NULL;
    int *scratch = NULL;
    *begins_out = NULL;

    size_t bad = utf8_invalid_at(hdr, hdr_len);
    if (bad != hdr_len)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": header is not valid UTF-8 (bad byte 0x%02x at header offset %zu)",
                            label, hdr[bad], bad);
    json_error_t jerr;
    root = json_loadb((const char *)hdr, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && json_error_code(&jerr) == json_error_duplicate_key)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": header has a duplicate key (tensor name or field): %s "
                            "(at header offset %d)",
                            label, jerr.text, jerr.position);
    if (!root)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": header is not valid JSON: %s (at header offset %d)", label,
                            jerr.text, jerr.position);
    if (!json_is_object(root)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, PATHF ": header is not a JSON object", label);
        goto out;
    }

    size_t nkeys = json_object_size(root);
    json_t *meta = json_object_get(root, "__metadata__");
    size_t nt = nkeys - (meta ? 1 : 0);
    if (nt > (size_t)INT_MAX / 2) {
        rc = lp_error_set(err, LP_ERR_LIMIT, PATHF ": too many tensors (%zu)", label, nt);
        goto out;
    }
    size_t str_bytes = 1;
    if (meta && (rc = check_metadata(label, meta, &str_bytes, err)) != LP_OK)
        goto out;

    spans = lp__calloc_array(nt, sizeof *spans);
    tmp_t = lp__calloc_array(nt, sizeof *tmp_t);
    if (!spans || !tmp_t) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory for %zu tensors", label, nt);
        goto out;
    }

    /* Validate every entry, in header order. */
    const char *key;
    json_t *val;
    int i = 0;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__"))
            continue;
        if ((rc = check_entry(label, key, val, data_len, &tmp_t[i], &spans[i], err)) != LP_OK)
            goto out;
        spans[i].hdr_index = i;
        tmp_t[i].name = key; /* borrowed from root until copied below */
        if (!lp__add_size(str_bytes, strlen(key) + 1, &str_bytes)) {
            rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": header too large", label);
            goto out;
        }
        i++;
    }

    /* Tiling: sorted by (begin, end), each tensor starts where the previous
     * ended and the last ends at the end of the data region. */
    qsort(spans, nt, sizeof *spans, span_cmp);
    uint64_t expect = 0;
    for (size_t k = 0; k < nt; k++) {
        const st_span *s = &spans[k];
        const char *nm = tmp_t[s->hdr_index].name;
        if (s->begin > expect) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              PATHF ": tensor " NAMEF ": 'data_offsets' [%llu, %llu] leave a gap "
                              "of %llu bytes before it (tensors must tile the data region)",
                              label, nm, (unsigned long long)s->begin, (unsigned long long)s->end,
                              (unsigned long long)(s->begin - expect));
            goto out;
        }
        if (s->begin < expect) {
            const st_span *p = &spans[k - 1]; /* k > 0 since expect > 0 */
            const char *pn = tmp_t[p->hdr_index].name;
            if (p->begin == s->begin && p->end == s->end)
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  PATHF ": tensors " NAMEF " and " NAMEF " share data range "
                                  "[%llu, %llu]",
                                  label, pn, nm, (unsigned long long)s->begin,
                                  (unsigned long long)s->end);
            else
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  PATHF ": tensor " NAMEF ": 'data_offsets' [%llu, %llu] overlap "
                                  "tensor " NAMEF " [%llu, %llu]",
                                  label, nm, (unsigned long long)s->begin,
                                  (unsigned long long)s->end, pn, (unsigned long long)p->begin,
                                  (unsigned long long)p->end);
            goto out;
        }
        expect = s->end;
    }
    if (expect != data_len) {
        rc = lp_error_set(err, LP_ERR_FORMAT,
                          PATHF ": 'data_offsets': tensors end at %llu but the data region is "
                          "%llu bytes (trailing bytes not covered by any tensor)",
                          label, (unsigned long long)expect, (unsigned long long)data_len);
        goto out;
    }

    /* Commit: tensors in data order, strings copied into one arena. */
    f->tensors = lp__calloc_array(nt, sizeof *f->tensors);
    f->by_name = lp__malloc_array(nt, sizeof *f->by_name);
    scratch = lp__malloc_array(nt, sizeof *scratch);
    begins = lp__malloc_array(nt, sizeof *begins);
    f->strings = malloc(str_bytes);
    size_t nmeta = meta ? json_object_size(meta) : 0;
    f->meta = lp__calloc_array(nmeta, sizeof *f->meta);
    if (!f->tensors || !f->by_name || !scratch || !begins || !f->strings || !f->meta) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", label);
        goto out;
    }
    char *sp = f->strings;
    for (size_t k = 0; k < nt; k++) {
        f->tensors[k] = tmp_t[spans[k].hdr_index];
        size_t len = strlen(f->tensors[k].name) + 1;
        memcpy(sp, f->tensors[k].name, len);
        f->tensors[k].name = sp;
        sp += len;
        begins[k] = spans[k].begin;
        f->by_name[k] = (int)k;
    }
    if (meta) {
        json_object_foreach(meta, key, val) {
            size_t a = strlen(key) + 1, b = json_string_length(val) + 1;
            memcpy(sp, key, a);
            f->meta[f->n_meta].key = sp;
            sp += a;
            memcpy(sp, json_string_value(val), b);
            f->meta[f->n_meta].value = sp;
            sp += b;
            f->n_meta++;
        }
    }
    f->n = (int)nt;
    sort_by_name(f->tensors, f->by_name, scratch, f->n);
    /* Duplicates were rejected by the JSON parser; keep the invariant checked. */
    for (int k = 1; k < f->n; k++) {
        if (!strcmp(f->tensors[f->by_name[k]].name, f->tensors[f->by_name[k - 1]].name)) {
            rc = lp_error_set(err, LP_ERR_FORMAT, PATHF ": duplicate tensor name " NAMEF, label,
                              f->tensors[f->by_name[k]].name);
            goto out;
        }
    }
    *begins_out = begins;
    begins = NULL;

out:
    free(begins);
    free(scratch);
    free(tmp_t);
    free(spans);
    json_decref(root);
    return rc;
}

/* Validate the 8-byte length prefix against the total size. */
static int check_prefix(const char *label, const uint8_t prefix[8], uint64_t total,
                        uint64_t *hdr_len, lp_error *err) {
    uint64_t n = le64(prefix);
    if (n == 0)
        return lp_error_set(err, LP_ERR_FORMAT, PATHF ": header length is 0", label);
    if (n > LP_ST_MAX_HEADER)
        return lp_error_set(err, LP_ERR_LIMIT,
                            PATHF ": header length %llu exceeds the %u-byte limit", label,
                            (unsigned long long)n, LP_ST_MAX_HEADER);
    if (n > total - 8) /* total >= 8 here, so no wrap-around */
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": header length %llu runs past the end of the file (%llu bytes)",
                            label, (unsigned long long)n, (unsigned long long)total);
    *hdr_len = n;
    return LP_OK;
}

static lp_st_file *file_new(const char *label) {
    lp_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->label = lp__strdup(label);
    if (!f->label) {
        free(f);
        return NULL;
    }
    return f;
}

static void attach_data(lp_st_file *f, const uint8_t *base, const uint64_t *begins) {
    for (int i = 0; i < f->n; i++)
        f->tensors[i].data = base + begins[i];
}

void lp_st_close(lp_st_file *f) {
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->copy);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f->label);
    free(f);
}

int lp_st_open_buffer(const void *buf, size_t len, const char *label, lp_st_file **out,
                      lp_error *err) {
    *out = NULL;
    label = label_or_default(label);
    const uint8_t *b = buf;
    uint64_t hdr_len = 0, *begins = NULL;
    if (!buf && len)
        return lp_error_set(err, LP_ERR_INVALID, PATHF ": NULL buffer", label);
    if (len < 8)
        return lp_error_set(err, LP_ERR_FORMAT,
                            PATHF ": %zu bytes, shorter than the 8-byte header length", label, len);
    int rc = check_prefix(label, b, len, &hdr_len, err);
    if (rc != LP_OK)
        return rc;
    lp_st_file *f = file_new(label);
    if (!f)
        return lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", label);
    uint64_t data_len = len - 8 - hdr_len;
    if ((rc = parse_header(f, b + 8, (size_t)hdr_len, data_len, &begins, err)) != LP_OK)
        goto fail;
    f->data_len = data_len;
    f->copy = malloc(data_len ? (size_t)data_len : 1);
    if (!f->copy) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory for %llu data bytes", label,
                          (unsigned long long)data_len);
        goto fail;
    }
    if (data_len)
        memcpy(f->copy, b + 8 + hdr_len, (size_t)data_len);
    attach_data(f, f->copy, begins);
    free(begins);
    *out = f;
    return LP_OK;
fail:
    free(begins);
    lp_st_close(f);
    return rc;
}

/* Read exactly len bytes at the current position; a short read (the file
 * shrank after fstat) or an I/O error is reported against `path`. */
static int read_full(int fd, void *dst, size_t len, const char *path, const char *what,
                     lp_error *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, (uint8_t *)dst + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return lp_error_set(err, LP_ERR_IO, PATHF ": reading %s: %s", path, what,
                                strerror(errno));
        if (r == 0)
            return lp_error_set(err, LP_ERR_IO,
                                PATHF ": file shrank while reading %s (got %zu of %zu bytes)",
                                path, what, got, len);
        got += (size_t)r;
    }
    return LP_OK;
}

int lp_st_open(const char *path, lp_st_mode mode, lp_st_file **out, lp_error *err) {
    *out = NULL;
    int rc = LP_OK;
    lp_st_file *f = NULL;
    uint8_t *hdr = NULL;
    uint64_t *begins = NULL, hdr_len = 0;
    if (!path)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors: NULL path");
    if (mode != LP_ST_MMAP && mode != LP_ST_COPY)
        return lp_error_set(err, LP_ERR_INVALID, PATHF ": invalid open mode %d", path, (int)mode);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lp_error_set(err, errno == ENOENT ? LP_ERR_NOT_FOUND : LP_ERR_IO,
                            PATHF ": cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = lp_error_set(err, LP_ERR_IO, PATHF ": not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        rc = lp_error_set(err, LP_ERR_FORMAT,
                          PATHF ": file is %llu bytes, shorter than the 8-byte header length",
                          path, (unsigned long long)size);
        goto out;
    }
    if (size > (uint64_t)SIZE_MAX) {
        rc = lp_error_set(err, LP_ERR_LIMIT, PATHF ": file too large to address", path);
        goto out;
    }
    if (!(f = file_new(path))) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", path);
        goto out;
    }

    if (mode == LP_ST_MMAP) {
        void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = lp_error_set(err, LP_ERR_IO, PATHF ": mmap: %s", path, strerror(errno));
            goto out;
        }
        f->map = m;
        f->map_len = (size_t)size;
        const uint8_t *b = m;
        if ((rc = check_prefix(path, b, size, &hdr_len, err)) != LP_OK)
            goto out;
        f->data_len = size - 8 - hdr_len;
        if ((rc = parse_header(f, b + 8, (size_t)hdr_len, f->data_len, &begins, err)) != LP_OK)
            goto out;
        attach_data(f, b + 8 + hdr_len, begins);
    } else {
        /* Header first, so that a bad header costs no data-sized allocation. */
        uint8_t prefix[8];
        if ((rc = read_full(fd, prefix, 8, path, "the header length", err)) != LP_OK)
            goto out;
        if ((rc = check_prefix(path, prefix, size, &hdr_len, err)) != LP_OK)
            goto out;
        if (!(hdr = malloc((size_t)hdr_len))) {
            rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory for the header", path);
            goto out;
        }
        if ((rc = read_full(fd, hdr, (size_t)hdr_len, path, "the header", err)) != LP_OK)
            goto out;
        f->data_len = size - 8 - hdr_len;
        if ((rc = parse_header(f, hdr, (size_t)hdr_len, f->data_len, &begins, err)) != LP_OK)
            goto out;
        if (!(f->copy = malloc(f->data_len ? (size_t)f->data_len : 1))) {
            rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory for %llu data bytes", path,
                              (unsigned long long)f->data_len);
            goto out;
        }
        if ((rc = read_full(fd, f->copy, (size_t)f->data_len, path, "the data", err)) != LP_OK)
            goto out;
        attach_data(f, f->copy, begins);
    }

out:
    close(fd);
    free(hdr);
    free(begins);
    if (rc != LP_OK) {
        lp_st_close(f);
        return rc;
    }
    *out = f;
    return LP_OK;
}

int lp_st_count(const lp_st_file *f) { return f ? f->n : 0; }

const lp_st_tensor *lp_st_at(const lp_st_file *f, int i) {
    return f && i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const lp_st_tensor *lp_st_find(const lp_st_file *f, const char *name) {
    if (!f || !name)
        return NULL;
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const lp_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *lp_st_metadata(const lp_st_file *f, const char *key) {
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}

const char *lp_st_label(const lp_st_file *f) { return f ? f->label : NULL; }

int lp_st_metadata_count(const lp_st_file *f) { return f ? f->n_meta : 0; }

const char *lp_st_metadata_at(const lp_st_file *f, int i, const char **value) {
    if (!f || i < 0 || i >= f->n_meta)
        return NULL;
    if (value)
        *value = f->meta[i].value;
    return f->meta[i].key;
}

/* ------------------------------------------------------------------------ */
/* Sharded sets. */

struct lp_st_set {
    lp_st_file **shards;         /* (nshards) sorted by shard file name */
    int nshards;
    const lp_st_tensor **all;    /* (n) shard order, then file order */
    const lp_st_tensor **by_name; /* (n) sorted by name */
    int *owner;                  /* (n) shard index of by_name[i] */
    int n;
    uint64_t bytes;
};

void lp_st_set_close(lp_st_set *s) {
    if (!s)
        return;
    for (int i = 0; i < s->nshards; i++)
        lp_st_close(s->shards[i]);
    free(s->shards);
    free(s->all);
    free(s->by_name);
    free(s->owner);
    free(s);
}

static void sort_ptrs_by_name(const lp_st_tensor **v, int *own, const lp_st_tensor **tv,
                              int *to, int n) {
    if (n < 2)
        return;
    int h = n / 2;
    sort_ptrs_by_name(v, own, tv, to, h);
    sort_ptrs_by_name(v + h, own + h, tv, to, n - h);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) {
        if (strcmp(v[j]->name, v[i]->name) < 0) {
            to[k] = own[j];
            tv[k++] = v[j++];
        } else {
            to[k] = own[i];
            tv[k++] = v[i++];
        }
    }
    while (i < h) {
        to[k] = own[i];
        tv[k++] = v[i++];
    }
    while (j < n) {
        to[k] = own[j];
        tv[k++] = v[j++];
    }
    memcpy(v, tv, (size_t)n * sizeof *v);
    memcpy(own, to, (size_t)n * sizeof *own);
}

/* Build the combined tables once all shards are open; `what` names the set
 * (the index path) in errors. */
static int set_build(lp_st_set *s, const char *what, lp_error *err) {
    size_t total = 0;
    for (int i = 0; i < s->nshards; i++)
        total += (size_t)s->shards[i]->n; /* each < INT_MAX/2; checked below */
    if (total > (size_t)INT_MAX / 2)
        return lp_error_set(err, LP_ERR_LIMIT, PATHF ": too many tensors (%zu)", what, total);
    int rc = LP_OK;
    const lp_st_tensor **tv = NULL;
    int *to = NULL;
    s->all = lp__malloc_array(total, sizeof *s->all);
    s->by_name = lp__malloc_array(total, sizeof *s->by_name);
    s->owner = lp__malloc_array(total, sizeof *s->owner);
    tv = lp__malloc_array(total, sizeof *tv);
    to = lp__malloc_array(total, sizeof *to);
    if (!s->all || !s->by_name || !s->owner || !tv || !to) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", what);
        goto out;
    }
    int k = 0;
    for (int i = 0; i < s->nshards; i++) {
        for (int j = 0; j < s->shards[i]->n; j++) {
            s->all[k] = s->by_name[k] = &s->shards[i]->tensors[j];
            s->owner[k] = i;
            s->bytes += s->shards[i]->tensors[j].nbytes;
            k++;
        }
    }
    s->n = k;
    sort_ptrs_by_name(s->by_name, s->owner, tv, to, s->n);
    for (int i = 1; i < s->n; i++) {
        if (!strcmp(s->by_name[i]->name, s->by_name[i - 1]->name)) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              PATHF ": tensor " NAMEF " is present in two shards: " PATHF
                              " and " PATHF,
                              what, s->by_name[i]->name, s->shards[s->owner[i - 1]]->label,
                              s->shards[s->owner[i]]->label);
            goto out;
        }
    }
out:
    free(tv);
    free(to);
    return rc;
}

/* A shard name from an index must be a plain file name inside DIR. */
static bool shard_name_ok(const char *name) {
    return name[0] != '\0' && !strchr(name, '/') && !strchr(name, '\\') && !strstr(name, "..") &&
           strcmp(name, ".") != 0;
}

static int str_ptr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int set_open_index(lp_st_set *s, const char *dir, const char *ipath, lp_st_mode mode,
                          lp_error *err) {
    int rc = LP_OK;
    char *text = NULL, *spath = NULL;
    size_t len = 0;
    json_t *root = NULL;
    const char **names = NULL;
    if ((rc = lp__read_file(ipath, ST_INDEX_MAX, &text, &len, err)) != LP_OK)
        return rc;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = lp_error_set(err, LP_ERR_FORMAT, PATHF ": not valid JSON: %s (line %d, column %d)",
                          ipath, jerr.text, jerr.line, jerr.column);
        goto out;
    }
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, PATHF ": 'weight_map' missing or not an object",
                          ipath);
        goto out;
    }
    size_t nw = json_object_size(wm);
    if (nw == 0) {
        rc = lp_error_set(err, LP_ERR_FORMAT, PATHF ": 'weight_map' is empty", ipath);
        goto out;
    }
    /* Distinct shard names (validated), sorted. */
    names = lp__malloc_array(nw, sizeof *names);
    if (!names) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", ipath);
        goto out;
    }
    const char *key;
    json_t *val;
    size_t nn = 0;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              PATHF ": 'weight_map' tensor " NAMEF ": shard is not a string",
                              ipath, key);
            goto out;
        }
        const char *sh = json_string_value(val);
        if (!shard_name_ok(sh) || strlen(sh) != json_string_length(val)) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              PATHF ": 'weight_map' tensor " NAMEF ": shard " NAMEF
                              " is not a plain file name in the model directory",
                              ipath, key, sh);
            goto out;
        }
        names[nn++] = sh;
    }
    qsort(names, nn, sizeof *names, str_ptr_cmp);
    size_t nu = 0;
    for (size_t i = 0; i < nn; i++)
        if (nu == 0 || strcmp(names[nu - 1], names[i]))
            names[nu++] = names[i];
    s->shards = lp__calloc_array(nu, sizeof *s->shards);
    if (!s->shards) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", ipath);
        goto out;
    }
    for (size_t i = 0; i < nu; i++) {
        if (!(spath = lp__path_join(dir, names[i]))) {
            rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", ipath);
            goto out;
        }
        if ((rc = lp_st_open(spath, mode, &s->shards[i], err)) != LP_OK) {
            lp_error_prefix(err, PATHF ": shard " NAMEF, ipath, names[i]);
            goto out;
        }
        s->nshards++;
        free(spath);
        spath = NULL;
    }
    /* Every tensor of the weight_map must be in the shard it names. */
    json_object_foreach(wm, key, val) {
        const char *sh = json_string_value(val);
        const char **hit = bsearch(&sh, names, nu, sizeof *names, str_ptr_cmp);
        if (!hit) { /* names holds every value of weight_map */
            rc = lp_error_set(err, LP_ERR_INTERNAL, PATHF ": shard " NAMEF " lost", ipath, sh);
            goto out;
        }
        int si = (int)(hit - names);
        if (!lp_st_find(s->shards[si], key)) {
            rc = lp_error_set(err, LP_ERR_NOT_FOUND,
                              PATHF ": 'weight_map' tensor " NAMEF " not found in its shard " PATHF,
                              ipath, key, s->shards[si]->label);
            goto out;
        }
    }
    rc = set_build(s, ipath, err);
out:
    free(spath);
    free(names);
    json_decref(root);
    free(text);
    return rc;
}

int lp_st_set_open(const char *dir, const char *stem, lp_st_mode mode, lp_st_set **out,
                   lp_error *err) {
    *out = NULL;
    int rc = LP_OK;
    char *single = NULL, *index = NULL, *fname = NULL;
    lp_st_set *s = NULL;
    if (!dir || !stem || !*stem)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors set: NULL directory or empty stem");
    size_t sl = strlen(stem), cap;
    if (!lp__add_size(sl, sizeof ".safetensors.index.json", &cap) || !(fname = malloc(cap)))
        return lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", dir);
    snprintf(fname, cap, "%s.safetensors", stem);
    single = lp__path_join(dir, fname);
    snprintf(fname, cap, "%s.safetensors.index.json", stem);
    index = lp__path_join(dir, fname);
    s = calloc(1, sizeof *s);
    if (!single || !index || !s) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", dir);
        goto out;
    }
    if (lp__file_exists(single)) {
        if (!(s->shards = calloc(1, sizeof *s->shards))) {
            rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", dir);
            goto out;
        }
        if ((rc = lp_st_open(single, mode, &s->shards[0], err)) != LP_OK)
            goto out;
        s->nshards = 1;
        rc = set_build(s, single, err);
    } else if (lp__file_exists(index)) {
        rc = set_open_index(s, dir, index, mode, err);
    } else {
        rc = lp_error_set(err, LP_ERR_NOT_FOUND, "%s: neither " PATHF " nor " PATHF " exists",
                          stem, single, index);
    }
out:
    free(fname);
    free(single);
    free(index);
    if (rc != LP_OK) {
        lp_st_set_close(s);
        return rc;
    }
    *out = s;
    return LP_OK;
}

const lp_st_tensor *lp_st_set_find(const lp_st_set *s, const char *name) {
    if (!s || !name)
        return NULL;
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->by_name[mid]->name);
        if (c == 0)
            return s->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int lp_st_set_count(const lp_st_set *s) { return s ? s->n : 0; }

const lp_st_tensor *lp_st_set_at(const lp_st_set *s, int i) {
    return s && i >= 0 && i < s->n ? s->all[i] : NULL;
}

uint64_t lp_st_set_bytes(const lp_st_set *s) { return s ? s->bytes : 0; }

int lp_st_set_shard_count(const lp_st_set *s) { return s ? s->nshards : 0; }

const lp_st_file *lp_st_set_shard(const lp_st_set *s, int i) {
    return s && i >= 0 && i < s->nshards ? s->shards[i] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Writer. */

typedef struct {
    char *name;
    lp_dtype dtype;
    int ndim;
    int64_t shape[LP_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} st_wentry;

struct lp_st_writer {
    st_wentry *e; /* (n) insertion order */
    int *sorted;  /* (n) indices sorted by name, for duplicate checks */
    int n, cap;
    json_t *meta; /* NULL until a key is set */
};

lp_st_writer *lp_st_writer_new(void) { return calloc(1, sizeof(lp_st_writer)); }

void lp_st_writer_free(lp_st_writer *w) {
    if (!w)
        return;
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name);
    free(w->e);
    free(w->sorted);
    json_decref(w->meta);
    free(w);
}

/* Position of name in w->sorted (found: *hit = true). */
static int writer_lookup(const lp_st_writer *w, const char *name, bool *hit) {
    int lo = 0, hi = w->n;
    *hit = false;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, w->e[w->sorted[mid]].name);
        if (c == 0) {
            *hit = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static bool utf8_ok(const char *s) {
    size_t n = strlen(s);
    return utf8_invalid_at((const uint8_t *)s, n) == n;
}

int lp_st_writer_add(lp_st_writer *w, const char *name, lp_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, uint64_t nbytes, lp_error *err) {
    if (!w || !name)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors writer: NULL writer or name");
    if (!strcmp(name, "__metadata__") || !utf8_ok(name))
        return lp_error_set(err, LP_ERR_INVALID,
                            "safetensors writer: tensor " NAMEF ": reserved or not UTF-8", name);
    size_t es = lp_dtype_size(dtype);
    if (es == 0)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors writer: tensor " NAMEF ": bad dtype %d",
                            name, (int)dtype);
    if (ndim < 0 || ndim > LP_MAX_DIMS || (ndim > 0 && !shape))
        return lp_error_set(err, LP_ERR_INVALID,
                            "safetensors writer: tensor " NAMEF ": ndim %d not in 0..%d", name, ndim,
                            LP_MAX_DIMS);
    uint64_t ne = 1, want;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || !lp__mul_u64(ne, (uint64_t)shape[d], &ne))
            return lp_error_set(err, LP_ERR_INVALID,
                                "safetensors writer: tensor " NAMEF ": bad shape[%d] = %lld", name,
                                d, (long long)shape[d]);
    }
    if (!lp__mul_u64(ne, es, &want) || want != nbytes)
        return lp_error_set(err, LP_ERR_INVALID,
                            "safetensors writer: tensor " NAMEF ": nbytes %llu != shape x %s size",
                            name, (unsigned long long)nbytes, lp_dtype_name(dtype));
    if (nbytes && !data)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors writer: tensor " NAMEF ": NULL data",
                            name);
    bool hit;
    int pos = writer_lookup(w, name, &hit);
    if (hit)
        return lp_error_set(err, LP_ERR_EXISTS,
                            "safetensors writer: duplicate tensor name " NAMEF, name);
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 16;
        if (nc <= w->cap || nc > INT_MAX / 2)
            return lp_error_set(err, LP_ERR_LIMIT, "safetensors writer: too many tensors");
        st_wentry *ne2 = realloc(w->e, (size_t)nc * sizeof *ne2);
        if (ne2)
            w->e = ne2;
        int *ns = ne2 ? realloc(w->sorted, (size_t)nc * sizeof *ns) : NULL;
        if (!ns)
            return lp_error_set(err, LP_ERR_NOMEM, "safetensors writer: out of memory");
        w->sorted = ns;
        w->cap = nc;
    }
    st_wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = lp__strdup(name)))
        return lp_error_set(err, LP_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        e->shape[d] = shape[d];
    e->data = data;
    e->nbytes = nbytes;
    memmove(&w->sorted[pos + 1], &w->sorted[pos], (size_t)(w->n - pos) * sizeof *w->sorted);
    w->sorted[pos] = w->n;
    w->n++;
    return LP_OK;
}

int lp_st_writer_set_metadata(lp_st_writer *w, const char *key, const char *value,
                              lp_error *err) {
    if (!w || !key || !value)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors writer: NULL metadata key or value");
    if (!utf8_ok(key) || !utf8_ok(value))
        return lp_error_set(err, LP_ERR_INVALID,
                            "safetensors writer: metadata key " NAMEF ": not UTF-8", key);
    if (!w->meta && !(w->meta = json_object()))
        return lp_error_set(err, LP_ERR_NOMEM, "safetensors writer: out of memory");
    if (json_object_set_new(w->meta, key, json_string(value)) != 0)
        return lp_error_set(err, LP_ERR_NOMEM, "safetensors writer: metadata key " NAMEF, key);
    return LP_OK;
}

static int write_full(int fd, const void *src, size_t len, const char *path, lp_error *err) {
    size_t done = 0;
    while (done < len) {
        size_t chunk = LP_MIN(len - done, (size_t)1 << 30);
        ssize_t r = write(fd, (const uint8_t *)src + done, chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return lp_error_set(err, LP_ERR_IO, PATHF ": write failed: %s", path,
                                r < 0 ? strerror(errno) : "no progress");
        done += (size_t)r;
    }
    return LP_OK;
}

/* The header JSON: __metadata__ first (as the reference writer does), then
 * the tensors in insertion order with consecutive offsets. */
static int writer_header(const lp_st_writer *w, const char *path, char **out, size_t *out_len,
                         lp_error *err) {
    int rc = LP_OK;
    json_t *root = json_object();
    if (!root)
        return lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", path);
    if (w->meta && json_object_set(root, "__metadata__", w->meta) != 0)
        goto nomem;
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_wentry *e = &w->e[i];
        uint64_t end;
        if (__builtin_add_overflow(off, e->nbytes, &end) || end > (uint64_t)LLONG_MAX) {
            rc = lp_error_set(err, LP_ERR_LIMIT, PATHF ": tensor " NAMEF ": data exceeds 2^63 bytes",
                              path, e->name);
            goto out;
        }
        json_t *shape = json_array(), *offs = json_array(), *t = json_object();
        bool ok = shape && offs && t;
        for (int d = 0; ok && d < e->ndim; d++)
            ok = json_array_append_new(shape, json_integer(e->shape[d])) == 0;
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)end)) == 0 &&
             json_object_set_new(t, "dtype", json_string(lp_dtype_name(e->dtype))) == 0;
        if (ok) {
            ok = json_object_set_new(t, "shape", shape) == 0;
            shape = NULL;
        }
        if (ok) {
            ok = json_object_set_new(t, "data_offsets", offs) == 0;
            offs = NULL;
        }
        if (ok) {
            ok = json_object_set_new(root, e->name, t) == 0;
            t = NULL;
        }
        json_decref(shape);
        json_decref(offs);
        json_decref(t);
        if (!ok)
            goto nomem;
        off = end;
    }
    size_t n = json_dumpb(root, NULL, 0, JSON_COMPACT);
    size_t padded;
    if (n == 0 || !lp__add_size(n, 7, &padded))
        goto nomem;
    padded &= ~(size_t)7;
    if (padded > LP_ST_MAX_HEADER) {
        rc = lp_error_set(err, LP_ERR_LIMIT, PATHF ": header would be %zu bytes, limit is %u", path,
                          padded, LP_ST_MAX_HEADER);
        goto out;
    }
    char *buf = malloc(padded);
    if (!buf)
        goto nomem;
    if (json_dumpb(root, buf, padded, JSON_COMPACT) != n) {
        free(buf);
        rc = lp_error_set(err, LP_ERR_INTERNAL, PATHF ": header serialisation changed size", path);
        goto out;
    }
    memset(buf + n, ' ', padded - n);
    *out = buf;
    *out_len = padded;
    goto out;
nomem:
    rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory building the header", path);
out:
    json_decref(root);
    return rc;
}

int lp_st_writer_finish(lp_st_writer *w, const char *path, lp_error *err) {
    if (!w || !path)
        return lp_error_set(err, LP_ERR_INVALID, "safetensors writer: NULL writer or path");
    int rc = LP_OK, fd = -1;
    char *hdr = NULL, *tmp = NULL;
    size_t hlen = 0, plen = strlen(path), tcap;
    if ((rc = writer_header(w, path, &hdr, &hlen, err)) != LP_OK)
        return rc;
    if (!lp__add_size(plen, sizeof ".tmp", &tcap) || !(tmp = malloc(tcap))) {
        rc = lp_error_set(err, LP_ERR_NOMEM, PATHF ": out of memory", path);
        goto out;
    }
    snprintf(tmp, tcap, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = lp_error_set(err, LP_ERR_IO, PATHF ": cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    if ((rc = write_full(fd, prefix, 8, tmp, err)) != LP_OK ||
        (rc = write_full(fd, hdr, hlen, tmp, err)) != LP_OK)
        goto out;
    for (int i = 0; i < w->n; i++) {
        const st_wentry *e = &w->e[i];
        if (e->nbytes > (uint64_t)SIZE_MAX) {
            rc = lp_error_set(err, LP_ERR_LIMIT, PATHF ": tensor " NAMEF ": too large", tmp,
                              e->name);
            goto out;
        }
        if ((rc = write_full(fd, e->data, (size_t)e->nbytes, tmp, err)) != LP_OK)
            goto out;
    }
    if (fsync(fd) != 0) {
        rc = lp_error_set(err, LP_ERR_IO, PATHF ": fsync: %s", tmp, strerror(errno));
        goto out;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        rc = lp_error_set(err, LP_ERR_IO, PATHF ": close: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = lp_error_set(err, LP_ERR_IO, PATHF ": rename from .tmp failed: %s", path,
                          strerror(errno));
        goto out;
    }
    /* Best effort: make the rename itself durable. */
    char *slash = strrchr(tmp, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(slash == tmp ? "/" : tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    free(tmp);
    tmp = NULL;
out:
    if (fd >= 0)
        close(fd);
    if (tmp && rc != LP_OK)
        unlink(tmp);
    free(tmp);
    free(hdr);
    return rc;
}
