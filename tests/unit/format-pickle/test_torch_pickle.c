/* test_torch_pickle.c - tests for src/format/torch_pickle.c (+ zip.c, pickle.c):
 * the real PEFT .bin against its safetensors twin, strided views checked
 * element by element, and every hostile archive/pickle rejected with a
 * message naming the problem. Fixtures: tests/unit/format-pickle/make_bad_pickles.py.
 * Usage: test_torch_pickle TESTS_DATA MODELS FUZZ_CORPUS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/pickle.h"
#include "format/safetensors.h"
#include "format/torch_pickle.h"
#include "format/zip.h"
#include "testlib.h"
#include "util/util.h"

static const char *g_data, *g_models, *g_corpus;

static char *path2(const char *a, const char *b) {
    char *p = lp__path_join(a, b);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- the real fixture ----------------------------------------------------- */

static void test_real_fixture(void) {
    char *bin = path2(g_models, "tinylm-adapters/math-bin/adapter_model.bin");
    char *st = path2(g_models, "tinylm-adapters/math/adapter_model.safetensors");
    lp_pt_file *pf = NULL;
    lp_st_file *sf = NULL;
    lp_error err = {0};
    int rc = lp_pt_open(bin, &pf, &err);
    CHECKF(rc == LP_OK, "%s", err.msg);
    rc = lp_st_open(st, LP_ST_COPY, &sf, &err);
    CHECKF(rc == LP_OK, "%s", err.msg);
    if (!pf || !sf)
        goto out;

    CHECK(lp_pt_count(pf) == 84);
    CHECK(lp_pt_count(pf) == lp_st_count(sf));
    /* state-dict order, as pickled */
    CHECK(!strcmp(lp_pt_at(pf, 0)->name,
                  "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    CHECK(!strcmp(lp_pt_at(pf, 83)->name,
                  "base_model.model.model.layers.5.mlp.down_proj.lora_B.weight"));
    int same = 0;
    for (int i = 0; i < lp_st_count(sf); i++) {
        const lp_st_tensor *a = lp_st_at(sf, i);
        const lp_st_tensor *b = lp_pt_find(pf, a->name);
        CHECKF(b != NULL, "%s missing from the .bin", a->name);
        if (!b)
            continue;
        bool ok = a->dtype == b->dtype && a->ndim == b->ndim && a->nelem == b->nelem &&
                  a->nbytes == b->nbytes &&
                  !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) &&
                  !memcmp(a->data, b->data, (size_t)a->nbytes);
        CHECKF(ok, "%s differs", a->name);
        same += ok;
    }
    CHECK(same == 84);

    /* the buffer API gives the same answer */
    char *buf = NULL;
    size_t len = 0;
    CHECK(lp__read_file(bin, 1u << 30, &buf, &len, &err) == LP_OK);
    lp_pt_file *pb = NULL;
    rc = lp_pt_open_buffer(buf, len, "adapter_model.bin", &pb, &err);
    CHECKF(rc == LP_OK, "%s", err.msg);
    if (pb) {
        CHECK(lp_pt_count(pb) == 84);
        for (int i = 0; i < lp_pt_count(pb); i++) {
            const lp_st_tensor *a = lp_pt_at(pb, i), *b = lp_pt_at(pf, i);
            CHECK(!strcmp(a->name, b->name) && a->nbytes == b->nbytes &&
                  !memcmp(a->data, b->data, (size_t)a->nbytes));
        }
        lp_pt_close(pb);
    }

    /* truncated copies all fail cleanly */
    int truncated_ok = 0;
    for (size_t cut = 0; cut < len; cut += len / 97 + 1) {
        pb = NULL;
        if (lp_pt_open_buffer(buf, cut, "cut.bin", &pb, &err) == LP_OK) {
            lp_pt_close(pb);
            truncated_ok++;
        }
    }
    CHECK(truncated_ok == 0);

    /* a flipped byte in data.pkl or a storage record is caught by the CRC */
    const size_t flips[] = {200, 13398 + 300, len / 2}; /* pkl, data/0, data/? */
    for (size_t k = 0; k < LP_ARRAY_LEN(flips); k++) {
        buf[flips[k]] ^= 0x01;
        pb = NULL;
        rc = lp_pt_open_buffer(buf, len, "flipped.bin", &pb, &err);
        CHECKF(rc != LP_OK && strstr(err.msg, "CRC-32 mismatch"), "flip at %zu: %s",
               flips[k], rc ? err.msg : "accepted");
        lp_pt_close(pb);
        buf[flips[k]] ^= 0x01;
    }
    free(buf);
out:
    lp_pt_close(pf);
    lp_st_close(sf);
    free(bin);
    free(st);
}

/* ---- strided views, all dtypes ------------------------------------------------- */

typedef struct view {
    const char *name;
    lp_dtype dtype;
    int ndim;
    int64_t size[3], stride[3];
    int64_t offset;
} view;

/* Mirrors views_state_dict() in make_bad_pickles.py. */
static const view k_views[] = {
    {"f32.contig", LP_DTYPE_F32, 2, {2, 3}, {3, 1}, 0},
    {"f32.transposed", LP_DTYPE_F32, 2, {3, 2}, {1, 3}, 0},
    {"f32.offset", LP_DTYPE_F32, 1, {4}, {1}, 5},
    {"f32.step", LP_DTYPE_F32, 1, {3}, {2}, 1},
    {"f32.scalar", LP_DTYPE_F32, 0, {0}, {0}, 7},
    {"f32.empty", LP_DTYPE_F32, 2, {0, 4}, {4, 1}, 0},
    {"f32.broadcast", LP_DTYPE_F32, 2, {2, 3}, {0, 1}, 2},
    {"f32.size1dims", LP_DTYPE_F32, 3, {1, 4, 1}, {100, 1, 7}, 3},
    {"i32.permuted", LP_DTYPE_I32, 3, {4, 2, 3}, {1, 12, 4}, 0},
    {"i32.sliced", LP_DTYPE_I32, 2, {2, 2}, {6, 2}, 13},
    {"i32.param", LP_DTYPE_I32, 2, {2, 12}, {12, 1}, 0},
    {"f32.metadata", LP_DTYPE_F32, 2, {2, 2}, {1, 2}, 0},
    {"half.contig", LP_DTYPE_F16, 2, {2, 5}, {5, 1}, 0},
    {"half.transposed", LP_DTYPE_F16, 2, {5, 2}, {1, 5}, 0},
    {"bfloat16.contig", LP_DTYPE_BF16, 2, {2, 5}, {5, 1}, 0},
    {"bfloat16.transposed", LP_DTYPE_BF16, 2, {5, 2}, {1, 5}, 0},
    {"double.contig", LP_DTYPE_F64, 2, {2, 5}, {5, 1}, 0},
    {"double.transposed", LP_DTYPE_F64, 2, {5, 2}, {1, 5}, 0},
    {"long.contig", LP_DTYPE_I64, 2, {2, 5}, {5, 1}, 0},
    {"long.transposed", LP_DTYPE_I64, 2, {5, 2}, {1, 5}, 0},
    {"short.contig", LP_DTYPE_I16, 2, {2, 5}, {5, 1}, 0},
    {"short.transposed", LP_DTYPE_I16, 2, {5, 2}, {1, 5}, 0},
    {"char.contig", LP_DTYPE_I8, 2, {2, 5}, {5, 1}, 0},
    {"char.transposed", LP_DTYPE_I8, 2, {5, 2}, {1, 5}, 0},
    {"byte.contig", LP_DTYPE_U8, 2, {2, 5}, {5, 1}, 0},
    {"byte.transposed", LP_DTYPE_U8, 2, {5, 2}, {1, 5}, 0},
    {"bool.contig", LP_DTYPE_BOOL, 2, {2, 5}, {5, 1}, 0},
    {"bool.transposed", LP_DTYPE_BOOL, 2, {5, 2}, {1, 5}, 0},
};

/* Element i of a tensor as a double. */
static double element(const lp_st_tensor *t, uint64_t i) {
    const uint8_t *p = (const uint8_t *)t->data + i * lp_dtype_size(t->dtype);
    union {
        float f;
        double d;
        int64_t i64;
        int32_t i32;
        int16_t i16;
        uint16_t u16;
    } u;
    memcpy(&u, p, lp_dtype_size(t->dtype));
    switch (t->dtype) {
    case LP_DTYPE_F32: return u.f;
    case LP_DTYPE_F16: return lp__f16_to_f32(u.u16);
    case LP_DTYPE_BF16: return lp__bf16_to_f32(u.u16);
    case LP_DTYPE_F64: return u.d;
    case LP_DTYPE_I64: return (double)u.i64;
    case LP_DTYPE_I32: return u.i32;
    case LP_DTYPE_I16: return u.i16;
    case LP_DTYPE_I8: return (int8_t)p[0];
    case LP_DTYPE_U8: return p[0];
    case LP_DTYPE_BOOL: return p[0];
    default: return -1;
    }
}

/* Storage element k holds k (reduced to the type's range, as the generator). */
static double storage_value(lp_dtype t, int64_t k) {
    switch (t) {
    case LP_DTYPE_I8: return (double)(k % 128);
    case LP_DTYPE_U8: return (double)(k % 256);
    case LP_DTYPE_BOOL: return (double)(k % 2);
    default: return (double)k;
    }
}

static void check_views(const char *file) {
    char *path = path2(g_data, file);
    lp_pt_file *f = NULL;
    lp_error err = {0};
    int rc = lp_pt_open(path, &f, &err);
    CHECKF(rc == LP_OK, "%s: %s", file, err.msg);
    if (!f) {
        free(path);
        return;
    }
    CHECKF(lp_pt_count(f) == (int)LP_ARRAY_LEN(k_views), "%s: %d tensors", file, lp_pt_count(f));
    for (size_t v = 0; v < LP_ARRAY_LEN(k_views) && v < (size_t)lp_pt_count(f); v++) {
        const view *w = &k_views[v];
        const lp_st_tensor *t = lp_pt_at(f, (int)v);
        CHECKF(!strcmp(t->name, w->name), "%s: tensor %zu is %s, expected %s", file, v, t->name,
               w->name);
        CHECK(lp_pt_find(f, w->name) == t);
        CHECKF(t->dtype == w->dtype && t->ndim == w->ndim, "%s: %s dtype/ndim", file, w->name);
        uint64_t nelem = 1;
        for (int d = 0; d < w->ndim; d++) {
            CHECK(t->shape[d] == w->size[d]);
            nelem *= (uint64_t)w->size[d];
        }
        CHECK(t->nelem == nelem && t->nbytes == nelem * lp_dtype_size(w->dtype));
        CHECK(t->data != NULL && (uintptr_t)t->data % lp_dtype_size(t->dtype) == 0);
        /* walk the view in row-major order */
        int64_t idx[3] = {0, 0, 0};
        int bad = 0;
        for (uint64_t i = 0; i < nelem; i++) {
            int64_t src = w->offset;
            for (int d = 0; d < w->ndim; d++)
                src += idx[d] * w->stride[d];
            if (element(t, i) != storage_value(w->dtype, src) && bad++ < 3)
                CHECKF(0, "%s: %s[%llu] = %g, expected storage element %lld", file, w->name,
                       (unsigned long long)i, element(t, i), (long long)src);
            for (int d = w->ndim - 1; d >= 0; d--) {
                if (++idx[d] < w->size[d])
                    break;
                idx[d] = 0;
            }
        }
    }
    CHECK(lp_pt_find(f, "nope") == NULL);
    CHECK(lp_pt_at(f, -1) == NULL && lp_pt_at(f, lp_pt_count(f)) == NULL);
    lp_pt_close(f);
    free(path);
}

static void test_views(void) {
    check_views("bad-pickles/ok_views.bin");                    /* protocol 2, torch layout */
    check_views("bad-pickles/ok_views_proto4.bin");             /* FRAME, MEMOIZE, STACK_GLOBAL */
    check_views("bad-pickles/ok_views_proto5_zip64_nocrc.bin"); /* zip64 extras, CRC 0 */
    check_views("bad-pickles/ok_views_zipfile.bin");            /* Python zipfile: unaligned */

    char *path = path2(g_data, "bad-pickles/ok_empty_dict.bin");
    lp_pt_file *f = NULL;
    lp_error err = {0};
    CHECKF(lp_pt_open(path, &f, &err) == LP_OK, "%s", err.msg);
    CHECK(f && lp_pt_count(f) == 0 && lp_pt_find(f, "x") == NULL && lp_pt_at(f, 0) == NULL);
    lp_pt_close(f);
    free(path);
}

/* ---- hostile and broken archives ---------------------------------------------- */

typedef struct bad_case {
    const char *file;
    const char *want[2]; /* substrings of the message */
} bad_case;

static const bad_case k_bad[] = {
    {"global_os_system", {"global 'os.system' is not allowed", "only tensor state dicts"}},
    {"global_builtins_eval", {"builtins.eval", "not allowed"}},
    {"global_posix_system", {"posix.system", "not allowed"}},
    {"global_subprocess_popen", {"subprocess.Popen", "not allowed"}},
    {"global_torch_load", {"torch.load", "not allowed"}},
    {"stack_global_os_system", {"os.system", "not allowed"}},
    {"inst", {"opcode INST (0x69)", "not allowed"}},
    {"obj", {"opcode OBJ (0x6f)", "not allowed"}},
    {"newobj", {"opcode NEWOBJ (0x81)", "not allowed"}},
    {"ext1", {"opcode EXT1", "not allowed"}},
    {"reduce_storage_type", {"REDUCE on torch.FloatStorage", "not allowed"}},
    {"reduce_on_str", {"REDUCE on a str", "not allowed"}},
    {"unknown_opcode", {"unknown opcode 0xff", "data.pkl byte 3"}},
    {"truncated_pickle", {"truncated", "data.pkl"}},
    {"no_stop", {"truncated", "no STOP"}},
    {"trailing_after_stop", {"1 bytes after STOP", NULL}},
    {"memo_out_of_range", {"memo index 200 is not defined", NULL}},
    {"memo_put_sparse", {"memo index 1048576 out of range", NULL}},
    {"missing_storage", {"'archive/data/7'", "missing"}},
    {"offset_past_storage", {"storage of 8 elements", NULL}},
    {"size_past_storage", {"reaches element 11 of a storage of 8", NULL}},
    {"stride_past_storage", {"storage of 8 elements", NULL}},
    {"huge_numel", {"storage '0' holds 32 bytes", "4611686018427387904 elements"}},
    {"size_overflow", {"size overflows", NULL}},
    {"record_size_mismatch", {"storage '0' holds 32 bytes", "6 elements of F32"}},
    {"too_many_dims", {"9 dimensions", NULL}},
    {"negative_stride", {"stride[0] must be an int >= 0", NULL}},
    {"pid_not_storage", {"persistent id", "not allowed"}},
    {"bad_storage_type", {"torch.QInt8Storage", "not allowed"}},
    {"top_level_list", {"holds a list, not a state dict", NULL}},
    {"top_level_tensor", {"holds a tensor, not a state dict", NULL}},
    {"value_not_tensor", {"entry 'w' is an int, not a tensor", NULL}},
    {"key_not_str", {"key 0 is an int", NULL}},
    {"duplicate_tensor_name", {"duplicate tensor name 'w'", NULL}},
    {"dtype_conflict", {"storage '0' is referenced as", NULL}},
    {"backward_hooks", {"backward_hooks", NULL}},
    {"build_on_plain_dict", {"BUILD on a plain dict", "not allowed"}},
    {"build_on_tensor", {"BUILD on a tensor", "not allowed"}},
    {"protocol_6", {"protocol 6", NULL}},
    {"bad_utf8", {"UTF-8", NULL}},
    {"nul_in_name", {"NUL", NULL}},
    {"stack_underflow", {"SETITEM needs 3 values", NULL}},
    {"setitems_without_mark", {"SETITEMS without a MARK", NULL}},
    {"odd_setitems", {"odd number", NULL}},
    {"unclosed_mark", {"unclosed MARK", NULL}},
    {"binunicode_past_end", {"runs past the end", NULL}},
    {"global_too_long", {"longer than 255", NULL}},
    {"long1_too_big", {"LONG1", "too large"}},
    {"compressed_entry", {"'archive/data.pkl' is compressed", "only stored"}},
    {"encrypted_entry", {"'archive/data/0' is encrypted", NULL}},
    {"bad_central_directory", {"central directory entry 0", "bad signature"}},
    {"central_directory_out_of_range", {"central directory", "outside"}},
    {"zip64_locator_out_of_range", {"zip64 end-of-central-directory", NULL}},
    {"local_header_out_of_range", {"local header", NULL}},
    {"crc_mismatch", {"CRC-32 mismatch", "archive/data.pkl"}},
    {"duplicate_entry", {"duplicate zip entry", NULL}},
    {"entry_outside_folder", {"'other/readme.txt' is outside the archive folder 'archive'", NULL}},
    {"no_data_pkl", {"data.pkl", "not a torch.save archive"}},
    {"big_endian", {"byteorder is 'big'", NULL}},
    {"bad_version", {"'version' is 'three'", NULL}},
    {"legacy_format", {"legacy", NULL}},
    {"not_a_zip", {"not a zip archive", NULL}},
    {"empty_file", {"not a zip archive", NULL}},
};

static void test_bad_files(void) {
    for (size_t i = 0; i < LP_ARRAY_LEN(k_bad); i++) {
        char name[128];
        snprintf(name, sizeof name, "bad-pickles/%s.bin", k_bad[i].file);
        char *path = path2(g_data, name);
        lp_pt_file *f = (lp_pt_file *)&f; /* must be reset to NULL */
        lp_error err = {0};
        int rc = lp_pt_open(path, &f, &err);
        CHECKF(rc != LP_OK && f == NULL, "%s was accepted", k_bad[i].file);
        CHECKF(err.code == rc, "%s: err.code %d, rc %d", k_bad[i].file, err.code, rc);
        CHECKF(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s",
               k_bad[i].file, err.msg);
        for (int k = 0; k < 2; k++)
            if (k_bad[i].want[k])
                CHECKF(strstr(err.msg, k_bad[i].want[k]) != NULL,
                       "%s: message lacks \"%s\": %s", k_bad[i].file, k_bad[i].want[k], err.msg);
        if (getenv("LP_TEST_VERBOSE"))
            printf("%-32s %s\n", k_bad[i].file, err.msg);
        lp_pt_close(f);
        free(path);
    }

    lp_pt_file *f = NULL;
    lp_error err = {0};
    CHECK(lp_pt_open("/nonexistent/adapter_model.bin", &f, &err) == LP_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "/nonexistent/adapter_model.bin") != NULL);
}

/* ---- the bare VM ------------------------------------------------------------------ */

/* Storage provider of the VM fuzz driver: the key starts with the byte length. */
static uint8_t g_storage[1 << 12];

static int fake_storage(void *ctx, const char *key, const void **data, size_t *len,
                        lp_error *err) {
    (void)ctx;
    char *end;
    unsigned long n = strtoul(key, &end, 10);
    if (end == key || n > sizeof g_storage)
        return lp_error_set(err, LP_ERR_NOT_FOUND, "no storage '%s'", key);
    *data = g_storage;
    *len = n;
    return LP_OK;
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_rep(buf *b, const char *s, size_t times) {
    for (size_t i = 0; i < times; i++)
        put(b, s, strlen(s));
}

/* Run a bare pickle; expect failure with `want` in the message (or success if NULL). */
static void vm_case(const char *what, const buf *b, const char *want) {
    lp_pt_file *f = NULL;
    lp_error err = {0};
    int rc = lp__pt_open_pickle(b->p, b->n, "vm.pkl", fake_storage, NULL, &f, &err);
    if (want)
        CHECKF(rc != LP_OK && strstr(err.msg, want), "%s: %s", what, rc ? err.msg : "accepted");
    else
        CHECKF(rc == LP_OK, "%s: %s", what, err.msg);
    if (getenv("LP_TEST_VERBOSE") && rc)
        printf("%-32s %s\n", what, err.msg);
    lp_pt_close(f);
}

static void test_vm(void) {
    buf b = {0};
    /* 100k nested MARKs: bounded, no recursion */
    put(&b, "\x80\x02", 2);
    put_rep(&b, "(", 100000);
    put(&b, ".", 1);
    vm_case("100k MARKs", &b, "MARKs nested deeper than 64");

    /* 100k nested 1-tuples and lists: legal pickle, wrong result, no recursion */
    b.n = 0;
    put(&b, "\x80\x02N", 3);
    put_rep(&b, "\x85", 100000);
    put(&b, ".", 1);
    vm_case("100k nested tuples", &b, "holds a tuple, not a state dict");
    b.n = 0;
    put(&b, "\x80\x02", 2);
    put_rep(&b, "]", 100001);
    put_rep(&b, "a", 100000);
    put(&b, ".", 1);
    vm_case("100k nested lists", &b, "holds a list");

    /* stack, item and entry limits */
    b.n = 0;
    put(&b, "\x80\x02", 2);
    put_rep(&b, "N", LP_PKL_MAX_STACK + 1);
    put(&b, ".", 1);
    vm_case("stack limit", &b, "stack deeper than");
    b.n = 0;
    put(&b, "\x80\x02", 2);
    for (int k = 0; k < 5; k++) {
        put(&b, "(", 1);
        put_rep(&b, "N", 1000000);
        put(&b, "t", 1); /* TUPLE */
    }
    put(&b, ".", 1);
    vm_case("item limit", &b, "items in tuples, lists and dicts");
    b.n = 0;
    put(&b, "\x80\x02}", 3);
    put_rep(&b, "}}s", LP_PKL_MAX_OBJECTS / 2 + 1);
    put(&b, ".", 1);
    vm_case("dict limit", &b, "lists and dicts");
    b.n = 0;
    put(&b, "\x80\x02}", 3);
    for (int k = 0; k <= LP_PT_MAX_TENSORS; k++) {
        uint8_t e[] = {'J', (uint8_t)k, (uint8_t)(k >> 8), (uint8_t)(k >> 16), 0, 'N', 's'};
        put(&b, e, sizeof e);
    }
    put(&b, ".", 1);
    vm_case("entry limit", &b, "limit is 100000");

    /* the VM fuzz seeds: a valid one, and one with its numel mutated */
    char *path = path2(g_corpus, "torch_pickle_vm/views.pkl");
    char *pkl = NULL;
    size_t len = 0;
    lp_error err = {0};
    CHECKF(lp__read_file(path, 1 << 20, &pkl, &len, &err) == LP_OK, "%s", err.msg);
    if (pkl) {
        b.n = 0;
        put(&b, pkl, len);
        vm_case("views.pkl", &b, NULL);
        lp_pt_file *f = NULL;
        if (lp__pt_open_pickle(pkl, len, "vm.pkl", fake_storage, NULL, &f, &err) == LP_OK) {
            CHECK(lp_pt_count(f) == 3);
            const lp_st_tensor *t = lp_pt_find(f, "a");
            CHECK(t && t->data == g_storage); /* contiguous and aligned: not copied */
            t = lp_pt_find(f, "a.T");
            CHECK(t && t->data != g_storage && t->nbytes == 48);
            lp_pt_close(f);
        }
    }
    free(pkl);
    free(path);
    free(b.p);
}

/* ---- zip reader details ------------------------------------------------------------- */

static void test_zip(void) {
    CHECK(lp__crc32("123456789", 9) == 0xcbf43926u);
    CHECK(lp__crc32("", 0) == 0);

    char *path = path2(g_data, "bad-pickles/ok_views_proto5_zip64_nocrc.bin");
    char *data = NULL;
    size_t len = 0;
    lp_error err = {0};
    CHECK(lp__read_file(path, 1 << 20, &data, &len, &err) == LP_OK);
    lp__zip *z = NULL;
    if (data && lp__zip_open((const uint8_t *)data, len, "z", 100, &z, &err) == LP_OK) {
        long i = lp__zip_find(z, "archive/byteorder");
        CHECK(i >= 0 && lp__zip_at(z, (size_t)i)->size == 6 &&
              !memcmp(lp__zip_at(z, (size_t)i)->data, "little", 6));
        CHECK(lp__zip_find(z, "archive/byteorde") == -1);
        CHECK(lp__zip_find(z, "archive/byteorderr") == -1);
        CHECK(lp__zip_at(z, lp__zip_count(z)) == NULL);
        lp__zip_close(z);
    } else {
        CHECKF(0, "%s", err.msg);
    }
    /* entry limit */
    if (data) {
        CHECK(lp__zip_open((const uint8_t *)data, len, "z", 3, &z, &err) == LP_ERR_LIMIT);
        CHECK(strstr(err.msg, "limit is 3") != NULL);
    }
    free(data);
    free(path);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TESTS_DATA MODELS FUZZ_CORPUS\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    g_models = argv[2];
    g_corpus = argv[3];
    for (size_t i = 0; i < sizeof g_storage; i++)
        g_storage[i] = (uint8_t)(i * 131u + 7u);
    test_zip();
    test_real_fixture();
    test_views();
    test_bad_files();
    test_vm();
    return lp_test_finish("test_torch_pickle");
}
