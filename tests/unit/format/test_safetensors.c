/* test_safetensors.c - tests for src/format/safetensors.c: real fixtures,
 * writer round trips, sharded sets, and one case per bad input (bad-inputs.md
 * items 1-4), each through lp_st_open_buffer and through files in both modes.
 * Usage: test_safetensors TEST_DATA_DIR MODELS_DIR */
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "testlib.h"
#include "util/util.h"

static char g_tmp[64]; /* mkdtemp'd scratch dir */
static const char *g_data, *g_models;

static bool has(const char *msg, const char *needle) {
    return needle == NULL || strstr(msg, needle) != NULL;
}

static char *tpath(const char *name) { return lp__path_join(g_tmp, name); }

static int write_bytes(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = len ? fwrite(buf, 1, len, f) : 0;
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* 8-byte LE prefix (explicit, possibly lying) + header + data. */
static uint8_t *craft_n(uint64_t n, const char *hdr, size_t hlen, const void *data, size_t dlen,
                        size_t *out_len) {
    size_t len = 8 + hlen + dlen;
    uint8_t *b = malloc(len ? len : 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(n >> (8 * i));
    memcpy(b + 8, hdr, hlen);
    if (dlen)
        memcpy(b + 8 + hlen, data, dlen);
    *out_len = len;
    return b;
}

/* A well-formed prefix for `hdr`, followed by dlen bytes 0,1,2,... */
static uint8_t *craft(const char *hdr, size_t dlen, size_t *out_len) {
    uint8_t data[256];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)i;
    size_t h = strlen(hdr);
    return craft_n(h, hdr, h, data, dlen, out_len);
}

/* The input must be rejected with `code` (0: any error) and a message that
 * contains n1 and n2, through the buffer API and as a file in both modes. */
static void expect_bad_bytes(const char *what, const uint8_t *b, size_t len, int code,
                             const char *n1, const char *n2) {
    lp_error err = {0};
    lp_st_file *f = (lp_st_file *)1;
    int rc = lp_st_open_buffer(b, len, what, &f, &err);
    CHECKF(rc != LP_OK && f == NULL, "%s: buffer accepted", what);
    CHECKF(code == 0 || rc == code, "%s: rc %s want %s (%s)", what, lp_status_name(rc),
           lp_status_name(code), err.msg);
    CHECKF(has(err.msg, what) && has(err.msg, n1) && has(err.msg, n2),
           "%s: message lacks '%s'/'%s': %s", what, n1 ? n1 : "", n2 ? n2 : "", err.msg);
    if (getenv("LP_TEST_VERBOSE"))
        printf("  [%s] %s\n", lp_status_name(rc), err.msg);

    char *p = tpath("bad.safetensors");
    CHECK(write_bytes(p, b, len) == 0);
    for (int mode = LP_ST_MMAP; mode <= LP_ST_COPY; mode++) {
        lp_error_clear(&err);
        f = (lp_st_file *)1;
        rc = lp_st_open(p, (lp_st_mode)mode, &f, &err);
        CHECKF(rc != LP_OK && f == NULL, "%s: file accepted (mode %d)", what, mode);
        CHECKF(code == 0 || rc == code, "%s (mode %d): rc %s want %s (%s)", what, mode,
               lp_status_name(rc), lp_status_name(code), err.msg);
        CHECKF(has(err.msg, p) && has(err.msg, n1) && has(err.msg, n2),
               "%s (mode %d): message lacks path/'%s'/'%s': %s", what, mode, n1 ? n1 : "",
               n2 ? n2 : "", err.msg);
    }
    unlink(p);
    free(p);
}

static void expect_bad(const char *what, const char *hdr, size_t dlen, int code, const char *n1,
                       const char *n2) {
    size_t len;
    uint8_t *b = craft(hdr, dlen, &len);
    expect_bad_bytes(what, b, len, code, n1, n2);
    free(b);
}

static lp_st_file *expect_good(const char *what, const char *hdr, size_t dlen) {
    size_t len;
    uint8_t *b = craft(hdr, dlen, &len);
    lp_error err = {0};
    lp_st_file *f = NULL;
    int rc = lp_st_open_buffer(b, len, what, &f, &err);
    CHECKF(rc == LP_OK && f, "%s: rejected: %s", what, err.msg);
    free(b);
    return f;
}

#define T1 "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

/* bad-inputs.md 1: length prefix. */
static void test_bad_prefix(void) {
    uint8_t z[8] = {0};
    expect_bad_bytes("empty-file", z, 0, LP_ERR_FORMAT, "shorter than", NULL);
    expect_bad_bytes("seven-bytes", z, 7, LP_ERR_FORMAT, "shorter than", NULL);
    size_t len;
    uint8_t *b = craft_n(0, "", 0, NULL, 0, &len);
    expect_bad_bytes("header-len-zero", b, len, LP_ERR_FORMAT, "header length is 0", NULL);
    free(b);
    b = craft_n((uint64_t)LP_ST_MAX_HEADER + 1, "{}", 2, NULL, 0, &len);
    expect_bad_bytes("header-len-over-limit", b, len, LP_ERR_LIMIT, "header length", "limit");
    free(b);
    b = craft_n(1000, "{}", 2, NULL, 0, &len);
    expect_bad_bytes("header-len-past-eof", b, len, LP_ERR_FORMAT, "past the end", NULL);
    free(b);
    b = craft_n(3, "{}", 2, NULL, 0, &len); /* one byte past */
    expect_bad_bytes("header-len-one-past-eof", b, len, LP_ERR_FORMAT, "past the end", NULL);
    free(b);
    b = craft_n(UINT64_MAX - 7, "{}", 2, NULL, 0, &len); /* 8 + N wraps to 0 */
    expect_bad_bytes("header-len-wraps", b, len, 0, "header length", NULL);
    free(b);
    b = craft_n(UINT64_MAX, "{}", 2, NULL, 0, &len);
    expect_bad_bytes("header-len-u64-max", b, len, 0, "header length", NULL);
    free(b);
}

/* bad-inputs.md 2: header encoding and shape of the JSON. */
static void test_bad_header_json(void) {
    expect_bad("not-utf8", "{\"w\xff\":" T1 "}", 4, LP_ERR_FORMAT, "UTF-8", NULL);
    expect_bad("overlong-utf8", "{\"w\xc0\xaf\":" T1 "}", 4, LP_ERR_FORMAT, "UTF-8", NULL);
    expect_bad("surrogate-utf8", "{\"w\xed\xa0\x80\":" T1 "}", 4, LP_ERR_FORMAT, "UTF-8", NULL);
    expect_bad("not-json", "{\"w\":", 0, LP_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("trailing-garbage", "{} x", 0, LP_ERR_FORMAT, "not valid JSON", NULL);
    size_t len;
    uint8_t *b = craft_n(8, "{}\0\0\0\0\0\0", 8, NULL, 0, &len);
    expect_bad_bytes("nul-padding", b, len, LP_ERR_FORMAT, "JSON", NULL);
    free(b);
    expect_bad("not-object-array", "[1,2]", 0, LP_ERR_FORMAT, "not a JSON object", NULL);
    expect_bad("not-object-string", "\"str\"", 0, LP_ERR_FORMAT, NULL, NULL);
    expect_bad("duplicate-tensor",
               "{\"dupname\":" T1 ",\"dupname\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[4,8]}}",
               8, LP_ERR_FORMAT, "duplicate", "dupname");
    expect_bad("metadata-not-object", "{\"__metadata__\":\"x\"}", 0, LP_ERR_FORMAT,
               "__metadata__", NULL);
    expect_bad("metadata-null", "{\"__metadata__\":null}", 0, LP_ERR_FORMAT, "__metadata__", NULL);
    expect_bad("metadata-value-not-string", "{\"__metadata__\":{\"mkey\":1}}", 0, LP_ERR_FORMAT,
               "__metadata__", "mkey");
    expect_bad("metadata-value-object", "{\"__metadata__\":{\"mkey\":{}}}", 0, LP_ERR_FORMAT,
               "__metadata__", "mkey");
    expect_bad("metadata-nul", "{\"__metadata__\":{\"mkey\":\"a\\u0000b\"}}", 0, LP_ERR_FORMAT,
               NULL, NULL);
    /* Nesting too deep for the parser: an error, not a stack overflow. */
    char deep[6000];
    size_t k = 0;
    deep[k++] = '{';
    memcpy(deep + k, "\"__metadata__\":", 15);
    k += 15;
    for (int i = 0; i < 2900; i++)
        deep[k++] = '[';
    deep[k] = '\0';
    expect_bad("deep-nesting", deep, 0, LP_ERR_FORMAT, NULL, NULL);
}

/* bad-inputs.md 2-4: the tensor entries. */
static void test_bad_entries(void) {
    expect_bad("entry-not-object", "{\"wname\":[1]}", 0, LP_ERR_FORMAT, "wname", "not an object");
    expect_bad("entry-extra-field",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"xtra\":1}}",
               4, LP_ERR_FORMAT, "wname", "xtra");
    expect_bad("missing-dtype", "{\"wname\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "dtype");
    expect_bad("missing-shape", "{\"wname\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("missing-offsets", "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
               LP_ERR_FORMAT, "wname", "data_offsets");
    expect_bad("dtype-not-string",
               "{\"wname\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "dtype");
    expect_bad("dtype-unknown",
               "{\"wname\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
               LP_ERR_UNSUPPORTED, "wname", "unsupported dtype 'F8_E4M3'");
    expect_bad("dtype-lowercase",
               "{\"wname\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_UNSUPPORTED, "wname", "unsupported dtype");
    expect_bad("shape-not-array",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("shape-negative",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("shape-real",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("shape-string",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("shape-bool",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "shape");
    expect_bad("shape-too-many-dims",
               "{\"wname\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
               "\"data_offsets\":[0,1]}}",
               1, LP_ERR_UNSUPPORTED, "wname", "dimensions");
    expect_bad("shape-product-overflows",
               "{\"wname\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],"
               "\"data_offsets\":[0,0]}}",
               0, LP_ERR_FORMAT, "wname", "overflow");
    expect_bad("shape-overflow-then-zero",
               "{\"wname\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],"
               "\"data_offsets\":[0,0]}}",
               0, LP_ERR_FORMAT, "wname", "overflow");
    expect_bad("shape-bytes-overflow",
               "{\"wname\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
               "\"data_offsets\":[0,0]}}",
               0, LP_ERR_FORMAT, "wname", "overflow");
    expect_bad("shape-dim-too-big-for-json",
               "{\"wname\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],"
               "\"data_offsets\":[0,0]}}",
               0, LP_ERR_FORMAT, NULL, NULL);
    expect_bad("offsets-not-array",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4,
               LP_ERR_FORMAT, "wname", "data_offsets");
    expect_bad("offsets-three",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               LP_ERR_FORMAT, "wname", "data_offsets");
    expect_bad("offsets-negative",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
               LP_ERR_FORMAT, "wname", "data_offsets");
    expect_bad("offsets-real",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
               LP_ERR_FORMAT, "wname", "data_offsets");
    expect_bad("offsets-end-before-begin",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
               LP_ERR_FORMAT, "wname", "end 4 < begin 8");
    expect_bad("size-mismatch",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
               LP_ERR_FORMAT, "wname", "needs 8");
    expect_bad("offsets-past-data",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
               LP_ERR_FORMAT, "wname", "past the end");
    expect_bad("offsets-huge",
               "{\"wname\":{\"dtype\":\"U8\",\"shape\":[16],"
               "\"data_offsets\":[9223372036854775800,9223372036854775816]}}",
               16, LP_ERR_FORMAT, NULL, NULL);
}

/* bad-inputs.md 3: tiling of the data region. */
static void test_bad_tiling(void) {
    expect_bad("gap-at-start",
               "{\"wname\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               LP_ERR_FORMAT, "wname", "gap");
    expect_bad("gap-between",
               "{\"aname\":" T1 ",\"bname\":{\"dtype\":\"F32\",\"shape\":[1],"
               "\"data_offsets\":[8,12]}}",
               12, LP_ERR_FORMAT, "bname", "gap");
    expect_bad("overlap",
               "{\"aname\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"bname\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, LP_ERR_FORMAT, "overlap", "aname");
    expect_bad("shared-range",
               "{\"aname\":" T1 ",\"bname\":" T1 "}", 4, LP_ERR_FORMAT, "share", "bname");
    expect_bad("zero-size-inside-other",
               "{\"aname\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"zname\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               8, LP_ERR_FORMAT, "zname", "overlap");
    expect_bad("trailing-bytes", "{\"wname\":" T1 "}", 8, LP_ERR_FORMAT, "trailing", NULL);
    expect_bad("no-tensors-but-data", "{}", 4, LP_ERR_FORMAT, "trailing", NULL);
}

static void test_good_edge_cases(void) {
    lp_st_file *f = expect_good("empty-header", "{}", 0);
    CHECK(f && lp_st_count(f) == 0 && lp_st_find(f, "x") == NULL && !lp_st_metadata(f, "x"));
    lp_st_close(f);

    f = expect_good("padded-empty-metadata", "{\"__metadata__\":{}}     ", 0);
    CHECK(f && lp_st_count(f) == 0 && lp_st_metadata_count(f) == 0);
    lp_st_close(f);

    /* Header order differs from data order; zero-size tensors share offsets;
     * a scalar; all are fine and lp_st_at follows the data region. */
    f = expect_good("zero-size-and-order",
                    "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
                    "\"second\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]},"
                    "\"empty2\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
                    "\"first\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                    "\"empty1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                    "\"empty3\":{\"dtype\":\"BOOL\",\"shape\":[5,0],\"data_offsets\":[12,12]}}",
                    12);
    if (f) {
        CHECK(lp_st_count(f) == 5);
        static const char *order[] = {"empty1", "first", "empty2", "second", "empty3"};
        for (int i = 0; i < 5 && lp_st_at(f, i); i++)
            CHECKF(!strcmp(lp_st_at(f, i)->name, order[i]), "at(%d) = %s", i, lp_st_at(f, i)->name);
        CHECK(lp_st_at(f, 5) == NULL && lp_st_at(f, -1) == NULL);
        const lp_st_tensor *t = lp_st_find(f, "second");
        CHECK(t && t->ndim == 0 && t->nelem == 1 && t->nbytes == 4 && t->dtype == LP_DTYPE_I32);
        CHECK(t && ((const uint8_t *)t->data)[0] == 8 && ((const uint8_t *)t->data)[3] == 11);
        t = lp_st_find(f, "first");
        CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 2 && t->nelem == 4);
        CHECK(t && ((const uint8_t *)t->data)[7] == 7);
        t = lp_st_find(f, "empty3");
        CHECK(t && t->nelem == 0 && t->nbytes == 0 && t->shape[0] == 5);
        CHECK(lp_st_find(f, "emptyX") == NULL && lp_st_find(f, "") == NULL);
        CHECK(lp_st_metadata(f, "format") && !strcmp(lp_st_metadata(f, "format"), "pt"));
        CHECK(lp_st_metadata(f, "k") && !strcmp(lp_st_metadata(f, "k"), "v"));
        CHECK(lp_st_metadata(f, "missing") == NULL);
        const char *v = NULL;
        CHECK(lp_st_metadata_count(f) == 2 && !strcmp(lp_st_metadata_at(f, 1, &v), "k") &&
              !strcmp(v, "v"));
    }
    lp_st_close(f);

    /* Non-ASCII names are fine. */
    f = expect_good("utf8-name",
                    "{\"w\xc3\xa9\xf0\x9f\x98\x80\":{\"dtype\":\"U8\",\"shape\":[1],"
                    "\"data_offsets\":[0,1]}}",
                    1);
    CHECK(f && lp_st_find(f, "w\xc3\xa9\xf0\x9f\x98\x80") != NULL);
    lp_st_close(f);
}

static void check_fixture(const char *path, int count, const char *name, lp_dtype dt, int ndim,
                          int64_t d0, int64_t d1, const char *format) {
    lp_st_file *fm = NULL, *fc = NULL;
    lp_error err = {0};
    int rc = lp_st_open(path, LP_ST_MMAP, &fm, &err);
    CHECKF(rc == LP_OK, "%s", err.msg);
    rc = lp_st_open(path, LP_ST_COPY, &fc, &err);
    CHECKF(rc == LP_OK, "%s", err.msg);
    if (!fm || !fc)
        goto out;
    CHECKF(lp_st_count(fm) == count, "%s: %d tensors", path, lp_st_count(fm));
    CHECK(lp_st_count(fc) == count);
    const lp_st_tensor *t = lp_st_find(fm, name);
    CHECKF(t != NULL, "%s: no %s", path, name);
    if (t) {
        CHECK(t->dtype == dt && t->ndim == ndim && t->shape[0] == d0);
        CHECK(ndim < 2 || t->shape[1] == d1);
    }
    if (format)
        CHECK(lp_st_metadata(fm, "format") && !strcmp(lp_st_metadata(fm, "format"), format));
    else
        CHECK(lp_st_metadata_count(fm) == 0);
    /* Same tensors and bytes in both modes; data in order, tiling the file. */
    uint64_t total = 0;
    for (int i = 0; i < count; i++) {
        const lp_st_tensor *a = lp_st_at(fm, i), *b = lp_st_at(fc, i);
        CHECK(a && b && !strcmp(a->name, b->name) && a->nbytes == b->nbytes);
        if (a && b)
            CHECK(memcmp(a->data, b->data, (size_t)a->nbytes) == 0);
        if (a && i > 0)
            CHECK((const uint8_t *)a->data ==
                  (const uint8_t *)lp_st_at(fm, i - 1)->data + lp_st_at(fm, i - 1)->nbytes);
        CHECK(a && lp_st_find(fm, a->name) == a);
        total += a ? a->nbytes : 0;
    }
    struct stat st;
    CHECK(stat(path, &st) == 0 && total < (uint64_t)st.st_size);
out:
    lp_st_close(fm);
    lp_st_close(fc);
}

/* Copy every tensor of `src` through the writer; the result must be
 * byte-identical to the original (written by the HF safetensors library). */
static void rewrite_identical(const char *src) {
    lp_st_file *f = NULL;
    lp_error err = {0};
    if (lp_st_open(src, LP_ST_MMAP, &f, &err) != LP_OK) {
        CHECKF(0, "%s", err.msg);
        return;
    }
    lp_st_writer *w = lp_st_writer_new();
    for (int i = 0; i < lp_st_count(f); i++) {
        const lp_st_tensor *t = lp_st_at(f, i);
        int rc = lp_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, &err);
        CHECKF(rc == LP_OK, "%s", err.msg);
    }
    for (int i = 0; i < lp_st_metadata_count(f); i++) {
        const char *v, *k = lp_st_metadata_at(f, i, &v);
        CHECK(lp_st_writer_set_metadata(w, k, v, &err) == LP_OK);
    }
    char *out = tpath("rewrite.safetensors");
    CHECKF(lp_st_writer_finish(w, out, &err) == LP_OK, "%s", err.msg);
    lp_st_writer_free(w);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    CHECK(lp__read_file(src, 64u << 20, &a, &la, &err) == LP_OK);
    CHECK(lp__read_file(out, 64u << 20, &b, &lb, &err) == LP_OK);
    CHECKF(a && b && la == lb && memcmp(a, b, la) == 0, "%s: rewrite differs (%zu vs %zu bytes)",
           src, la, lb);
    free(a);
    free(b);
    unlink(out);
    free(out);
    lp_st_close(f);
}

static void test_fixtures(void) {
    char *p = lp__path_join(g_models, "tinylm/model.safetensors");
    check_fixture(p, 57, "model.embed_tokens.weight", LP_DTYPE_BF16, 2, 2048, 256, "pt");
    rewrite_identical(p);
    free(p);
    p = lp__path_join(g_data, "conform/llama/base/model.safetensors");
    check_fixture(p, 21, "lm_head.weight", LP_DTYPE_BF16, 2, 512, 64, "pt");
    rewrite_identical(p);
    free(p);
    p = lp__path_join(g_data, "conform/llama/reference.safetensors");
    check_fixture(p, 24, "base.p0.logits", LP_DTYPE_F32, 2, 7, 512, NULL);
    rewrite_identical(p);
    free(p);
    p = lp__path_join(g_data, "conform/llama/adapters/r4-qv/adapter_model.safetensors");
    check_fixture(p, 8, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                  LP_DTYPE_F32, 2, 4, 64, "pt");
    free(p);

    /* A one-file set. */
    lp_st_set *s = NULL;
    lp_error err = {0};
    p = lp__path_join(g_models, "tinylm");
    CHECKF(lp_st_set_open(p, "model", LP_ST_MMAP, &s, &err) == LP_OK, "%s", err.msg);
    if (s) {
        CHECK(lp_st_set_count(s) == 57 && lp_st_set_shard_count(s) == 1);
        const lp_st_tensor *t = lp_st_set_find(s, "model.embed_tokens.weight");
        CHECK(t && t->shape[0] == 2048 && t->shape[1] == 256 && t->dtype == LP_DTYPE_BF16);
        uint64_t sum = 0;
        for (int i = 0; i < lp_st_set_count(s); i++)
            sum += lp_st_set_at(s, i)->nbytes;
        CHECK(sum == lp_st_set_bytes(s) && sum > 0);
    }
    lp_st_set_close(s);
    free(p);

    /* Missing and non-regular files. */
    lp_st_file *f = (lp_st_file *)1;
    CHECK(lp_st_open("/nonexistent/x.safetensors", LP_ST_COPY, &f, &err) == LP_ERR_NOT_FOUND &&
          f == NULL && has(err.msg, "/nonexistent/x.safetensors"));
    CHECK(lp_st_open(g_tmp, LP_ST_MMAP, &f, &err) != LP_OK && f == NULL && has(err.msg, g_tmp));
}

/* Writer round trip, reopened in both modes. */
static void test_writer_roundtrip(void) {
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    uint16_t bf16[4] = {0x3f80, 0xbf80, 0x4000, 0x0000};
    int64_t i64 = -1234567890123ll;
    uint8_t u8[3] = {1, 2, 3}, bools[2] = {1, 0};
    int64_t s23[] = {2, 3}, s4[] = {4}, s3[] = {3}, s05[] = {0, 5}, s2[] = {2};
    lp_error err = {0};
    lp_st_writer *w = lp_st_writer_new();
    CHECK(w != NULL);
    CHECK(lp_st_writer_add(w, "f32", LP_DTYPE_F32, 2, s23, f32, sizeof f32, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "u8.odd", LP_DTYPE_U8, 1, s3, u8, 3, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "bf16", LP_DTYPE_BF16, 1, s4, bf16, sizeof bf16, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "scalar", LP_DTYPE_I64, 0, NULL, &i64, 8, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "empty", LP_DTYPE_F16, 2, s05, NULL, 0, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "bools", LP_DTYPE_BOOL, 1, s2, bools, 2, &err) == LP_OK);
    CHECK(lp_st_writer_add(w, "na\xc3\xafve \"quoted\\\"", LP_DTYPE_U8, 1, s3, u8, 3, &err) ==
          LP_OK);
    /* Writer-side rejections. */
    CHECK(lp_st_writer_add(w, "f32", LP_DTYPE_F32, 2, s23, f32, sizeof f32, &err) ==
              LP_ERR_EXISTS && has(err.msg, "f32"));
    CHECK(lp_st_writer_add(w, "short", LP_DTYPE_F32, 2, s23, f32, 20, &err) != LP_OK &&
          has(err.msg, "short"));
    int64_t neg[] = {-1};
    CHECK(lp_st_writer_add(w, "neg", LP_DTYPE_F32, 1, neg, f32, 4, &err) != LP_OK &&
          has(err.msg, "neg"));
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(lp_st_writer_add(w, "nine", LP_DTYPE_U8, 9, nine, u8, 1, &err) != LP_OK &&
          has(err.msg, "nine"));
    int64_t big[] = {INT64_MAX, 4};
    CHECK(lp_st_writer_add(w, "big", LP_DTYPE_U8, 2, big, u8, 1, &err) != LP_OK &&
          has(err.msg, "big"));
    CHECK(lp_st_writer_add(w, "__metadata__", LP_DTYPE_U8, 1, s3, u8, 3, &err) != LP_OK);
    CHECK(lp_st_writer_add(w, "badutf8\xff", LP_DTYPE_U8, 1, s3, u8, 3, &err) != LP_OK);
    CHECK(lp_st_writer_add(w, "badtype", LP_DTYPE_INVALID, 1, s3, u8, 3, &err) != LP_OK);
    CHECK(lp_st_writer_set_metadata(w, "format", "np", &err) == LP_OK);
    CHECK(lp_st_writer_set_metadata(w, "format", "pt", &err) == LP_OK); /* replaces */
    CHECK(lp_st_writer_set_metadata(w, "note", "h\xc3\xa9llo \"x\"", &err) == LP_OK);
    CHECK(lp_st_writer_set_metadata(w, "bad", "\xff", &err) != LP_OK);

    char *p = tpath("rt.safetensors");
    CHECKF(lp_st_writer_finish(w, p, &err) == LP_OK, "%s", err.msg);
    char *tmp = tpath("rt.safetensors.tmp");
    CHECK(access(tmp, F_OK) != 0); /* renamed away */
    free(tmp);
    lp_st_writer_free(w);

    /* Header length multiple of 8, space padded, HF layout. */
    char *raw = NULL;
    size_t rl = 0;
    CHECK(lp__read_file(p, 1 << 20, &raw, &rl, &err) == LP_OK);
    if (raw && rl > 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | (uint8_t)raw[i];
        CHECK(n % 8 == 0 && 8 + n <= rl);
        CHECK(rl == 8 + n + sizeof f32 + 3 + sizeof bf16 + 8 + 0 + 2 + 3);
        static const char head[] =
            "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"h\xc3\xa9llo \\\"x\\\"\"},"
            "\"f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
            "\"u8.odd\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[24,27]},";
        CHECKF(!strncmp(raw + 8, head, sizeof head - 1), "header: %.200s", raw + 8);
        CHECK(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}');
    }
    free(raw);

    for (int mode = LP_ST_MMAP; mode <= LP_ST_COPY; mode++) {
        lp_st_file *f = NULL;
        CHECKF(lp_st_open(p, (lp_st_mode)mode, &f, &err) == LP_OK, "%s", err.msg);
        if (!f)
            continue;
        CHECK(lp_st_count(f) == 7);
        static const char *order[] = {"f32", "u8.odd", "bf16", "scalar", "empty", "bools",
                                      "na\xc3\xafve \"quoted\\\""};
        for (int i = 0; i < 7; i++)
            CHECK(lp_st_at(f, i) && !strcmp(lp_st_at(f, i)->name, order[i]));
        const lp_st_tensor *t = lp_st_find(f, "f32");
        CHECK(t && t->dtype == LP_DTYPE_F32 && t->ndim == 2 && t->shape[1] == 3 &&
              !memcmp(t->data, f32, sizeof f32));
        t = lp_st_find(f, "bf16");
        CHECK(t && t->dtype == LP_DTYPE_BF16 && !memcmp(t->data, bf16, sizeof bf16));
        t = lp_st_find(f, "scalar");
        CHECK(t && t->ndim == 0 && t->nelem == 1 && !memcmp(t->data, &i64, 8));
        t = lp_st_find(f, "empty");
        CHECK(t && t->dtype == LP_DTYPE_F16 && t->nelem == 0 && t->shape[1] == 5);
        t = lp_st_find(f, "bools");
        CHECK(t && t->dtype == LP_DTYPE_BOOL && !memcmp(t->data, bools, 2));
        t = lp_st_find(f, "na\xc3\xafve \"quoted\\\"");
        CHECK(t && !memcmp(t->data, u8, 3));
        CHECK(lp_st_metadata(f, "format") && !strcmp(lp_st_metadata(f, "format"), "pt"));
        CHECK(lp_st_metadata(f, "note") && !strcmp(lp_st_metadata(f, "note"), "h\xc3\xa9llo \"x\""));
        lp_st_close(f);
    }

    /* COPY mode keeps a consistent copy when the file is rewritten afterwards
     * (bad-inputs.md 12). */
    lp_st_file *f = NULL;
    CHECK(lp_st_open(p, LP_ST_COPY, &f, &err) == LP_OK);
    CHECK(truncate(p, 0) == 0);
    const lp_st_tensor *t = f ? lp_st_find(f, "f32") : NULL;
    CHECK(t && !memcmp(t->data, f32, sizeof f32));
    lp_st_close(f);
    unlink(p);
    free(p);

    /* An empty writer makes a valid empty file. */
    w = lp_st_writer_new();
    p = tpath("empty.safetensors");
    CHECK(lp_st_writer_finish(w, p, &err) == LP_OK);
    f = NULL;
    CHECK(lp_st_open(p, LP_ST_MMAP, &f, &err) == LP_OK && f && lp_st_count(f) == 0);
    lp_st_close(f);
    unlink(p);
    free(p);
    /* Finishing into a missing directory fails cleanly, naming the path. */
    CHECK(lp_st_writer_finish(w, "/nonexistent-dir/x.safetensors", &err) == LP_ERR_IO &&
          has(err.msg, "/nonexistent-dir/x.safetensors"));
    lp_st_writer_free(w);
}

/* Write a shard holding tensors named in `names` (each 2 x F32). */
static void write_shard(const char *file, const char *const *names, int n) {
    static const float vals[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t s2[] = {2};
    lp_error err = {0};
    lp_st_writer *w = lp_st_writer_new();
    for (int i = 0; i < n; i++)
        CHECK(lp_st_writer_add(w, names[i], LP_DTYPE_F32, 1, s2, vals + 2 * (i % 4), 8, &err) ==
              LP_OK);
    char *p = tpath(file);
    CHECKF(lp_st_writer_finish(w, p, &err) == LP_OK, "%s", err.msg);
    free(p);
    lp_st_writer_free(w);
}

static void write_index(const char *json) {
    char *p = tpath("model.safetensors.index.json");
    CHECK(write_bytes(p, json, strlen(json)) == 0);
    free(p);
}

static void expect_set_bad(const char *what, const char *json, int code, const char *n1,
                           const char *n2) {
    write_index(json);
    for (int mode = LP_ST_MMAP; mode <= LP_ST_COPY; mode++) {
        lp_st_set *s = (lp_st_set *)1;
        lp_error err = {0};
        int rc = lp_st_set_open(g_tmp, "model", (lp_st_mode)mode, &s, &err);
        CHECKF(rc != LP_OK && s == NULL, "%s: accepted", what);
        CHECKF(code == 0 || rc == code, "%s: rc %s want %s (%s)", what, lp_status_name(rc),
               lp_status_name(code), err.msg);
        if (getenv("LP_TEST_VERBOSE") && mode == LP_ST_MMAP)
            printf("  [%s] %s\n", lp_status_name(rc), err.msg);
        CHECKF(has(err.msg, "model.safetensors.index.json") && has(err.msg, n1) &&
                   has(err.msg, n2),
               "%s: message lacks '%s'/'%s': %s", what, n1 ? n1 : "", n2 ? n2 : "", err.msg);
    }
}

#define SA "model-00001-of-00002.safetensors"
#define SB "model-00002-of-00002.safetensors"

static void test_sharded(void) {
    static const char *const a[] = {"t.a1", "t.a2"};
    static const char *const b[] = {"t.b1", "t.extra"};
    static const char *const c[] = {"t.c1", "t.a1"};
    write_shard(SA, a, 2);
    write_shard(SB, b, 2);
    write_shard("dup.safetensors", c, 2);
    lp_error err = {0};

    /* Neither candidate present. */
    lp_st_set *s = (lp_st_set *)1;
    CHECK(lp_st_set_open(g_tmp, "model", LP_ST_MMAP, &s, &err) == LP_ERR_NOT_FOUND && s == NULL);
    CHECKF(has(err.msg, "model.safetensors.index.json") && has(err.msg, "/model.safetensors "),
           "%s", err.msg);

    write_index("{\"metadata\":{\"total_size\":32},\"weight_map\":{"
                "\"t.a1\":\"" SA "\",\"t.b1\":\"" SB "\",\"t.a2\":\"" SA "\"}}");
    for (int mode = LP_ST_MMAP; mode <= LP_ST_COPY; mode++) {
        s = NULL;
        CHECKF(lp_st_set_open(g_tmp, "model", (lp_st_mode)mode, &s, &err) == LP_OK, "%s",
               err.msg);
        if (!s)
            continue;
        CHECK(lp_st_set_count(s) == 4 && lp_st_set_shard_count(s) == 2);
        CHECK(lp_st_set_bytes(s) == 32);
        const lp_st_tensor *t = lp_st_set_find(s, "t.b1");
        CHECK(t && t->dtype == LP_DTYPE_F32 && ((const float *)t->data)[1] == 2.0f);
        t = lp_st_set_find(s, "t.a2");
        CHECK(t && ((const float *)t->data)[0] == 3.0f);
        /* Present in a shard but not listed in weight_map: still accessible. */
        CHECK(lp_st_set_find(s, "t.extra") != NULL);
        CHECK(lp_st_set_find(s, "t.c1") == NULL && lp_st_set_find(s, "nope") == NULL);
        CHECK(lp_st_set_at(s, 0) && !strcmp(lp_st_set_at(s, 0)->name, "t.a1"));
        CHECK(lp_st_set_at(s, 3) && !strcmp(lp_st_set_at(s, 3)->name, "t.extra"));
        CHECK(lp_st_set_at(s, 4) == NULL);
        CHECK(has(lp_st_label(lp_st_set_shard(s, 1)), SB));
        lp_st_set_close(s);
    }

    expect_set_bad("missing-shard",
                   "{\"weight_map\":{\"t.a1\":\"" SA "\",\"t.z\":\"model-00003.safetensors\"}}",
                   LP_ERR_NOT_FOUND, "model-00003.safetensors", NULL);
    expect_set_bad("shard-dotdot", "{\"weight_map\":{\"t.a1\":\"../" SA "\"}}", LP_ERR_FORMAT,
                   "../" SA, "t.a1");
    expect_set_bad("shard-absolute", "{\"weight_map\":{\"t.a1\":\"/etc/passwd\"}}",
                   LP_ERR_FORMAT, "/etc/passwd", NULL);
    expect_set_bad("shard-dotdot-only", "{\"weight_map\":{\"t.a1\":\"..\"}}", LP_ERR_FORMAT,
                   "t.a1", NULL);
    expect_set_bad("shard-empty-name", "{\"weight_map\":{\"t.a1\":\"\"}}", LP_ERR_FORMAT, "t.a1",
                   NULL);
    expect_set_bad("shard-dir", "{\"weight_map\":{\"t.a1\":\".\"}}", LP_ERR_FORMAT, "t.a1",
                   NULL);
    expect_set_bad("shard-not-string", "{\"weight_map\":{\"t.a1\":3}}", LP_ERR_FORMAT, "t.a1",
                   NULL);
    expect_set_bad("tensor-in-two-shards",
                   "{\"weight_map\":{\"t.a1\":\"" SA "\",\"t.c1\":\"dup.safetensors\"}}",
                   LP_ERR_FORMAT, "t.a1", "dup.safetensors");
    expect_set_bad("tensor-not-in-its-shard",
                   "{\"weight_map\":{\"t.a1\":\"" SA "\",\"t.b1\":\"" SA "\"}}", LP_ERR_NOT_FOUND,
                   "t.b1", SA);
    expect_set_bad("index-not-json", "{\"weight_map\":", LP_ERR_FORMAT, "JSON", NULL);
    expect_set_bad("index-no-weight-map", "{\"metadata\":{}}", LP_ERR_FORMAT, "weight_map",
                   NULL);
    expect_set_bad("index-weight-map-array", "{\"weight_map\":[]}", LP_ERR_FORMAT, "weight_map",
                   NULL);
    expect_set_bad("index-empty-weight-map", "{\"weight_map\":{}}", LP_ERR_FORMAT, "weight_map",
                   NULL);
    expect_set_bad("index-duplicate-key",
                   "{\"weight_map\":{\"t.a1\":\"" SA "\",\"t.a1\":\"" SB "\"}}", LP_ERR_FORMAT,
                   "t.a1", NULL);

    /* A bad shard file is reported with the shard's path. */
    char *p = tpath("corrupt.safetensors");
    CHECK(write_bytes(p, "\x05\0\0\0\0\0\0\0{oops", 13) == 0);
    free(p);
    expect_set_bad("corrupt-shard",
                   "{\"weight_map\":{\"t.a1\":\"" SA "\",\"t.x\":\"corrupt.safetensors\"}}",
                   LP_ERR_FORMAT, "corrupt.safetensors", "JSON");

    /* The single file wins over the index when both exist. */
    static const char *const one[] = {"only"};
    write_shard("model.safetensors", one, 1);
    s = NULL;
    CHECK(lp_st_set_open(g_tmp, "model", LP_ST_COPY, &s, &err) == LP_OK && s &&
          lp_st_set_count(s) == 1 && lp_st_set_find(s, "only"));
    lp_st_set_close(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TEST_DATA_DIR MODELS_DIR\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    g_models = argv[2];
    snprintf(g_tmp, sizeof g_tmp, "/tmp/lp_st_test.XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    test_bad_prefix();
    test_bad_header_json();
    test_bad_entries();
    test_bad_tiling();
    test_good_edge_cases();
    test_fixtures();
    test_writer_roundtrip();
    test_sharded();
    nftw(g_tmp, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    return lp_test_finish("test_safetensors");
}
