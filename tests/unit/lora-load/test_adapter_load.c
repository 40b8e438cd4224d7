/* test_adapter_load.c - tests for src/lora/adapter.c: every fixture adapter
 * loads with the expected numbers, PEFT's module-matching rules are followed,
 * each bad input (bad-inputs.md items 5, 6, 10, 12) is rejected with an error
 * naming the field or tensor, and a loaded adapter survives its file changing.
 * Usage: test_adapter_load TEST_DATA_DIR MODELS_DIR */
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "lora/adapter-impl.h"
#include "loraplex/adapter.h"
#include "testlib.h"
#include "util/util.h"

static const char *g_data, *g_models;
static lp_model *g_llama; /* conform llama base: 2 layers, hidden 64, ffn 160 */
static lp_model *g_tiny;  /* models/tinylm: 6 layers, hidden 256, ffn 704 */

/* ---- paths and scratch directories --------------------------------------- */

/* "<root>/<rel>" in a caller buffer. */
static const char *join(char *buf, size_t cap, const char *root, const char *rel) {
    snprintf(buf, cap, "%s/%s", root, rel);
    return buf;
}
#define CONFORM(buf, name) join(buf, sizeof buf, g_data, "conform/llama/adapters/" name)
#define TINY(buf, name) join(buf, sizeof buf, g_models, "tinylm-adapters/" name)

typedef struct scratch {
    char dir[64];
} scratch;

static bool scratch_new(scratch *s) {
    snprintf(s->dir, sizeof s->dir, "/tmp/lp_adapter_test.XXXXXX");
    if (!mkdtemp(s->dir)) {
        perror("mkdtemp");
        s->dir[0] = '\0';
        return false;
    }
    return true;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void scratch_free(scratch *s) {
    if (s->dir[0])
        nftw(s->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    s->dir[0] = '\0';
}

static bool write_file(const char *dir, const char *name, const void *buf, size_t len) {
    char path[512];
    FILE *f = fopen(join(path, sizeof path, dir, name), "wb");
    if (!f)
        return false;
    bool ok = (len == 0 || fwrite(buf, 1, len, f) == len);
    return fclose(f) == 0 && ok;
}

static bool write_text(const char *dir, const char *name, const char *text) {
    return write_file(dir, name, text, strlen(text));
}

static bool copy_file(const char *src_dir, const char *dst_dir, const char *name) {
    char path[512];
    char *buf = NULL;
    size_t len = 0;
    if (lp__read_file(join(path, sizeof path, src_dir, name), 64u << 20, &buf, &len, NULL) != LP_OK)
        return false;
    bool ok = write_file(dst_dir, name, buf, len);
    free(buf);
    return ok;
}

/* A fresh scratch dir holding a copy of fixture adapter `src`. */
static bool scratch_copy(scratch *s, const char *src) {
    if (!scratch_new(s))
        return false;
    char path[512];
    bool ok = copy_file(src, s->dir, "adapter_config.json");
    if (ok && lp__file_exists(join(path, sizeof path, src, "adapter_model.safetensors")))
        ok = copy_file(src, s->dir, "adapter_model.safetensors");
    if (ok && lp__file_exists(join(path, sizeof path, src, "adapter_model.bin")))
        ok = copy_file(src, s->dir, "adapter_model.bin");
    CHECKF(ok, "copying %s to %s", src, s->dir);
    return ok;
}

static bool remove_file(const char *dir, const char *name) {
    char path[512];
    return unlink(join(path, sizeof path, dir, name)) == 0;
}

/* ---- adapter_config.json editing ----------------------------------------- */

static json_t *config_read(const char *dir) {
    char path[512];
    json_error_t je;
    return json_load_file(join(path, sizeof path, dir, "adapter_config.json"), 0, &je);
}

/* Write `root` (stolen) as DIR/adapter_config.json. */
static bool config_write(const char *dir, json_t *root) {
    char path[512];
    bool ok = root && json_dump_file(root, join(path, sizeof path, dir, "adapter_config.json"), JSON_INDENT(2)) == 0;
    json_decref(root);
    return ok;
}

/* Set key to `val` (stolen; NULL deletes the key) in DIR/adapter_config.json. */
static bool config_set(const char *dir, const char *key, json_t *val) {
    json_t *root = config_read(dir);
    if (!root) {
        json_decref(val);
        return false;
    }
    if (val)
        json_object_set_new(root, key, val);
    else
        json_object_del(root, key);
    return config_write(dir, root);
}

/* Same with the value given as JSON text, e.g. "[\"lm_head\"]". */
static bool config_set_json(const char *dir, const char *key, const char *json_text) {
    json_error_t je;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, &je);
    CHECKF(v != NULL, "test bug: bad JSON %s", json_text);
    return v && config_set(dir, key, v);
}

/* A minimal PEFT LoRA config; `targets` is stolen. */
static json_t *config_new(int r, double alpha, json_t *targets) {
    json_t *c = json_object();
    json_object_set_new(c, "peft_type", json_string("LORA"));
    json_object_set_new(c, "r", json_integer(r));
    json_object_set_new(c, "lora_alpha", json_real(alpha));
    json_object_set_new(c, "bias", json_string("none"));
    json_object_set_new(c, "target_modules", targets);
    return c;
}

static json_t *jlist(const char *json_text) {
    json_error_t je;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, &je);
    CHECKF(v != NULL, "test bug: bad JSON %s", json_text);
    return v;
}

/* ---- crafted adapter_model.safetensors ----------------------------------- */

/* Collects tensors (and the buffers they point to) for one safetensors file. */
typedef struct stb {
    lp_st_writer *w;
    void *bufs[256];
    int n;
    uint32_t seed;
    bool ok;
} stb;

static void stb_init(stb *b) {
    memset(b, 0, sizeof *b);
    b->w = lp_st_writer_new();
    b->seed = 12345;
    b->ok = b->w != NULL;
}

/* Add a tensor filled with small deterministic values. */
static void stb_add(stb *b, const char *name, lp_dtype dt, int ndim, const int64_t *shape) {
    if (!b->ok || b->n >= (int)LP_ARRAY_LEN(b->bufs)) {
        b->ok = false;
        return;
    }
    uint64_t ne = 1;
    for (int d = 0; d < ndim; d++)
        ne *= (uint64_t)shape[d];
    size_t es = lp_dtype_size(dt);
    uint8_t *buf = calloc(ne ? ne : 1, es);
    if (!buf) {
        b->ok = false;
        return;
    }
    b->bufs[b->n++] = buf;
    for (uint64_t i = 0; i < ne; i++) {
        b->seed = b->seed * 1664525u + 1013904223u;
        float v = ((float)(b->seed >> 8) / 16777216.0f - 0.5f) * 0.1f;
        if (dt == LP_DTYPE_F32)
            memcpy(buf + i * 4, &v, 4);
        else if (dt == LP_DTYPE_I32) {
            int32_t x = (int32_t)(b->seed >> 20);
            memcpy(buf + i * 4, &x, 4);
        } else if (dt == LP_DTYPE_BF16) {
            uint16_t h = lp__f32_to_bf16(v);
            memcpy(buf + i * 2, &h, 2);
        } else if (dt == LP_DTYPE_F16) {
            uint16_t h = lp__f32_to_f16(v);
            memcpy(buf + i * 2, &h, 2);
        }
    }
    lp_error err;
    if (lp_st_writer_add(b->w, name, dt, ndim, shape, buf, ne * es, &err) != LP_OK) {
        fprintf(stderr, "stb_add %s: %s\n", name, err.msg);
        b->ok = false;
    }
}

static void lora_name(char *buf, size_t cap, int layer, int m, const char *part) {
    snprintf(buf, cap, "base_model.model.model.layers.%d.%s.%s.%s", layer, m <= LP_MOD_O ? "self_attn" : "mlp",
             lp_adapter_module_name(m), part);
}

/* lora_A (rank, in) and lora_B (out, rank) of (layer, m) sized for `model`,
 * plus lora_magnitude_vector (out) with `dora`. */
static void stb_lora(stb *b, const lp_model *model, int layer, int m, int rank, bool dora) {
    int64_t rows, cols;
    lp__module_shape(lp_model_get_config(model), (lp__module)m, &rows, &cols);
    char name[160];
    int64_t sa[2] = {rank, cols}, sb[2] = {rows, rank}, sm[1] = {rows};
    lora_name(name, sizeof name, layer, m, "lora_A.weight");
    stb_add(b, name, LP_DTYPE_F32, 2, sa);
    lora_name(name, sizeof name, layer, m, "lora_B.weight");
    stb_add(b, name, LP_DTYPE_F32, 2, sb);
    if (dora) {
        lora_name(name, sizeof name, layer, m, "lora_magnitude_vector");
        stb_add(b, name, LP_DTYPE_F32, 1, sm);
    }
}

/* Write DIR/adapter_model.safetensors and free the builder. */
static bool stb_finish(stb *b, const char *dir) {
    char path[512];
    lp_error err;
    bool ok = b->ok;
    if (ok && lp_st_writer_finish(b->w, join(path, sizeof path, dir, "adapter_model.safetensors"), &err) != LP_OK) {
        fprintf(stderr, "stb_finish: %s\n", err.msg);
        ok = false;
    }
    lp_st_writer_free(b->w);
    for (int i = 0; i < b->n; i++)
        free(b->bufs[i]);
    CHECKF(ok, "test bug: could not write a crafted safetensors file");
    return ok;
}

/* One adapted (layer, projection) of a crafted adapter. */
typedef struct spec {
    int layer, m, rank;
} spec;

/* A scratch dir with config `cfg` (stolen) and tensors for `sp` sized for the
 * llama conform base. */
static bool craft(scratch *s, json_t *cfg, const spec *sp, int n, bool dora) {
    if (!scratch_new(s)) {
        json_decref(cfg);
        return false;
    }
    bool ok = config_write(s->dir, cfg);
    if (ok) {
        stb b;
        stb_init(&b);
        for (int i = 0; i < n; i++)
            stb_lora(&b, g_llama, sp[i].layer, sp[i].m, sp[i].rank, dora);
        ok = stb_finish(&b, s->dir);
    }
    if (!ok)
        scratch_free(s);
    return ok;
}

/* Every (layer, projection) of the conform llama base whose bit is set in
 * `mods`, for layers in [l0, l1], at rank r. Returns the count. */
static int specs(spec *out, unsigned mods, int l0, int l1, int r) {
    int n = 0;
    for (int l = l0; l <= l1; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++)
            if (mods & (1u << m))
                out[n++] = (spec){l, m, r};
    return n;
}

#define Q (1u << LP_MOD_Q)
#define K (1u << LP_MOD_K)
#define V (1u << LP_MOD_V)
#define O (1u << LP_MOD_O)
#define GATE (1u << LP_MOD_GATE)
#define UP (1u << LP_MOD_UP)
#define DOWN (1u << LP_MOD_DOWN)
#define ALL 0x7fu

/* ---- load helpers -------------------------------------------------------- */

/* Load DIR and check that it fails with `code`, that *out stays NULL, and
 * that the message names the directory and contains n1 and n2 (if given). */
static void expect_fail_(int line, const char *what, const char *dir, const lp_model *model,
                         const lp_adapter_params *p, int code, const char *n1, const char *n2) {
    lp_adapter *a = (lp_adapter *)&a; /* must be reset to NULL */
    lp_error err;
    memset(&err, 0, sizeof err);
    int rc = lp_adapter_load(dir, model, p, &a, &err);
    CHECKF(rc == code, "line %d: %s: got %s, want %s (%s)", line, what, lp_status_name(rc), lp_status_name(code),
           rc ? err.msg : "loaded");
    if (rc == LP_OK) {
        lp_adapter_free(a);
        return;
    }
    CHECKF(a == NULL, "line %d: %s: *out not NULL after an error", line, what);
    CHECKF(err.code == rc, "line %d: %s: err.code %d != rc %d", line, what, err.code, rc);
    CHECKF(strstr(err.msg, dir) != NULL, "line %d: %s: message does not name %s: %s", line, what, dir, err.msg);
    CHECKF(!n1 || strstr(err.msg, n1), "line %d: %s: message lacks '%s': %s", line, what, n1, err.msg);
    CHECKF(!n2 || strstr(err.msg, n2), "line %d: %s: message lacks '%s': %s", line, what, n2, err.msg);
    printf("  rejected (%s) %s: %s\n", lp_status_name(rc), what, err.msg);
}
#define EXPECT_FAIL(what, dir, model, params, code, n1, n2) \
    expect_fail_(__LINE__, what, dir, model, params, code, n1, n2)

/* Load DIR, expecting success; NULL (and a failed check) otherwise. */
static lp_adapter *load_ok_(int line, const char *what, const char *dir, const lp_model *model,
                            const lp_adapter_params *p) {
    lp_adapter *a = NULL;
    lp_error err;
    int rc = lp_adapter_load(dir, model, p, &a, &err);
    CHECKF(rc == LP_OK && a, "line %d: %s: %s", line, what, rc ? err.msg : "NULL adapter");
    return rc == LP_OK ? a : NULL;
}
#define LOAD_OK(what, dir, model, params) load_ok_(__LINE__, what, dir, model, params)

static lp_adapter_params max_rank(int r) {
    lp_adapter_params p = lp_adapter_default_params();
    p.max_rank = r;
    return p;
}

static bool near(float a, float b, float rel) { return fabsf(a - b) <= rel * fmaxf(1.0f, fmaxf(fabsf(a), fabsf(b))); }

/* ---- positive: the fixtures ----------------------------------------------- */

typedef struct expect {
    const char *name;
    bool tiny; /* models/tinylm-adapters (else conform llama) */
    int r;
    float alpha;
    bool rslora, dora;
    int max_rank, min_rank, n_modules;
    unsigned targets;
    uint64_t bytes;
    const char *format;
} expect;

static const expect k_fixtures[] = {
    {"dora-r8", false, 8, 16, false, true, 8, 8, 14, ALL, 76288, "safetensors"},
    {"layers-1", false, 8, 16, false, false, 8, 8, 7, ALL, 35840, "safetensors"},
    {"pattern-mlp", false, 8, 8, false, false, 12, 2, 8, O | GATE | UP | DOWN, 44544, "safetensors"},
    {"r16-rslora-attn", false, 16, 8, true, false, 16, 16, 8, Q | K | V | O, 57344, "safetensors"},
    {"r4-qv", false, 4, 8, false, false, 4, 4, 4, Q | V, 7168, "safetensors"},
    {"r8-all", false, 8, 16, false, false, 8, 8, 14, ALL, 71680, "safetensors"},
    {"fortune-chat", true, 64, 128, false, false, 64, 64, 42, ALL, 7176192, "safetensors"},
    {"math", true, 16, 32, false, false, 16, 16, 42, ALL, 1794048, "safetensors"},
    {"math-bin", true, 16, 32, false, false, 16, 16, 42, ALL, 1794048, "bin"},
    {"reverse", true, 8, 16, false, false, 8, 8, 12, Q | V, 172032, "safetensors"},
    {"sort", true, 32, 16, true, false, 32, 32, 24, Q | K | V | O, 1376256, "safetensors"},
};

static void check_info(const expect *e, const lp_adapter *a, const char *how) {
    const lp_adapter_info *in = lp_adapter_get_info(a);
    CHECKF(in->r == e->r, "%s %s: r %d", e->name, how, in->r);
    CHECKF(in->lora_alpha == e->alpha, "%s %s: alpha %g", e->name, how, in->lora_alpha);
    CHECKF(in->use_rslora == e->rslora && in->use_dora == e->dora, "%s %s: rslora %d dora %d", e->name, how,
           in->use_rslora, in->use_dora);
    CHECKF(in->max_rank == e->max_rank && in->min_rank == e->min_rank, "%s %s: ranks %d..%d", e->name, how,
           in->min_rank, in->max_rank);
    CHECKF(in->n_modules == e->n_modules, "%s %s: n_modules %d", e->name, how, in->n_modules);
    CHECKF(in->targets == e->targets, "%s %s: targets 0x%x", e->name, how, in->targets);
    CHECKF(in->bytes == e->bytes, "%s %s: bytes %llu", e->name, how, (unsigned long long)in->bytes);
    CHECKF(in->n_params * 4 == e->bytes, "%s %s: n_params %llu (all fixtures are F32)", e->name, how,
           (unsigned long long)in->n_params);
    CHECKF(!strcmp(in->format, e->format), "%s %s: format %s", e->name, how, in->format);
    CHECKF(!strcmp(in->base_model, e->tiny ? "out/tinylm" : "out/conform/llama/base"), "%s %s: base_model %s",
           e->name, how, in->base_model);
    /* the per-module table agrees with the summary */
    int n = 0, lo = 0, hi = 0;
    unsigned t = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp__lora_mod *md = lp__adapter_mod(a, l, m);
            if (!md->rank)
                continue;
            n++;
            t |= 1u << m;
            lo = lo && lo < md->rank ? lo : md->rank;
            hi = hi > md->rank ? hi : md->rank;
            CHECKF(md->A.rows == md->rank && md->B.cols == md->rank && md->A.data && md->B.data,
                   "%s %s: layer %d %s: A/B views", e->name, how, l, lp_adapter_module_name(m));
            CHECKF((md->magnitude != NULL) == e->dora, "%s %s: layer %d %s: magnitude", e->name, how, l,
                   lp_adapter_module_name(m));
        }
    CHECKF(n == in->n_modules && t == in->targets && lo == in->min_rank && hi == in->max_rank,
           "%s %s: module table disagrees with info", e->name, how);
}

/* Expected scaling of module m (same on every layer) for the conform fixtures. */
static void check_scalings(const lp_adapter *a, const char *name) {
    const float inv_sqrt16 = 8.0f / 4.0f, inv_sqrt32 = 16.0f / sqrtf(32.0f);
    for (int l = 0; l < a->n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp__lora_mod *md = lp__adapter_mod(a, l, m);
            int want_r = 0;
            float want_s = 0;
            if (!strcmp(name, "pattern-mlp")) {
                /* rank_pattern down_proj=2, o_proj=12; alpha_pattern up_proj=32; r=8, alpha=8 */
                static const int r[LP_MOD_COUNT] = {0, 0, 0, 12, 8, 8, 2};
                static const float s[LP_MOD_COUNT] = {0, 0, 0, 8.0f / 12.0f, 1.0f, 4.0f, 4.0f};
                want_r = r[m];
                want_s = s[m];
            } else if (!strcmp(name, "layers-1")) {
                want_r = l == 1 ? 8 : 0;
                want_s = l == 1 ? 2.0f : 0;
            } else if (!strcmp(name, "r16-rslora-attn")) {
                want_r = m <= LP_MOD_O ? 16 : 0;
                want_s = m <= LP_MOD_O ? inv_sqrt16 : 0; /* alpha / sqrt(r) */
            } else if (!strcmp(name, "sort")) {
                want_r = m <= LP_MOD_O ? 32 : 0;
                want_s = m <= LP_MOD_O ? inv_sqrt32 : 0;
            } else if (!strcmp(name, "r4-qv")) {
                want_r = (m == LP_MOD_Q || m == LP_MOD_V) ? 4 : 0;
                want_s = want_r ? 2.0f : 0;
            } else {
                continue;
            }
            CHECKF(md->rank == want_r, "%s: layer %d %s: rank %d, want %d", name, l, lp_adapter_module_name(m),
                   md->rank, want_r);
            if (want_r)
                CHECKF(near(md->scaling, want_s, 1e-6f), "%s: layer %d %s: scaling %g, want %g", name, l,
                       lp_adapter_module_name(m), md->scaling, want_s);
        }
}

/* DoRA: dora_scale[o] = magnitude[o] / ||W[o,:] + s (B A)[o,:]||, recomputed here in double. */
static void check_dora_scales(const lp_adapter *a, const lp_model *model) {
    int checked = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp__lora_mod *md = lp__adapter_mod(a, l, m);
            const lp__weight *W = &model->layers[l].proj[m];
            CHECKF(md->dora_scale != NULL, "dora: layer %d %s: no dora_scale", l, lp_adapter_module_name(m));
            if (!md->dora_scale)
                continue;
            int64_t rows = W->rows, cols = W->cols;
            int64_t picks[3] = {0, rows / 2, rows - 1};
            for (int p = 0; p < 3; p++) {
                int64_t o = picks[p];
                double ss = 0;
                for (int64_t i = 0; i < cols; i++) {
                    double ba = 0;
                    for (int k = 0; k < md->rank; k++)
                        ba += (double)lp__load_f32(md->B.data, md->B.dtype, o * md->rank + k) *
                              lp__load_f32(md->A.data, md->A.dtype, (int64_t)k * cols + i);
                    double w = lp__load_f32(W->data, W->dtype, o * cols + i) + md->scaling * ba;
                    ss += w * w;
                }
                float want = (float)(lp__load_f32(md->magnitude, md->magnitude_dtype, o) / sqrt(ss));
                CHECKF(near(md->dora_scale[o], want, 1e-4f), "dora: layer %d %s row %lld: %g, want %g", l,
                       lp_adapter_module_name(m), (long long)o, md->dora_scale[o], want);
                checked++;
            }
        }
    CHECK(checked == 2 * LP_MOD_COUNT * 3);
}

static void test_fixtures(void) {
    printf("fixtures\n");
    for (size_t i = 0; i < LP_ARRAY_LEN(k_fixtures); i++) {
        const expect *e = &k_fixtures[i];
        char dir[512], path[600];
        snprintf(dir, sizeof dir, "%s/%s%s", e->tiny ? g_models : g_data,
                 e->tiny ? "tinylm-adapters/" : "conform/llama/adapters/", e->name);
        if (!strcmp(e->format, "bin") && !lp__file_exists(join(path, sizeof path, dir, "adapter_model.bin"))) {
            printf("  NOTE: %s/adapter_model.bin is missing: skipped\n", dir);
            continue;
        }
        const lp_model *model = e->tiny ? g_tiny : g_llama;
        lp_adapter *a = LOAD_OK(e->name, dir, model, NULL);
        if (a) {
            check_info(e, a, "with model");
            CHECK(a->n_layers == lp_model_get_config(model)->n_layers);
            CHECK(!strcmp(lp_adapter_dir(a), dir));
            check_scalings(a, e->name);
            if (e->dora)
                check_dora_scales(a, model);
            else
                for (size_t k = 0; k < (size_t)a->n_layers * LP_MOD_COUNT; k++)
                    CHECK(a->mods[k].dora_scale == NULL && a->mods[k].magnitude == NULL);
            printf("  ok %s: r=%d alpha=%g modules=%d ranks %d..%d bytes=%llu (%s)\n", e->name, a->info.r,
                   a->info.lora_alpha, a->info.n_modules, a->info.min_rank, a->info.max_rank,
                   (unsigned long long)a->info.bytes, a->info.format);
        } else if (!strcmp(e->format, "bin")) {
            printf("  NOTE: %s did not load; src/format/torch_pickle.c may be unfinished\n", dir);
        }
        lp_adapter_free(a);
        /* inspect: no model; layer count from the tensors, no DoRA norms */
        a = LOAD_OK(e->name, dir, NULL, NULL);
        if (a) {
            check_info(e, a, "without model");
            check_scalings(a, e->name);
            for (size_t k = 0; k < (size_t)a->n_layers * LP_MOD_COUNT; k++)
                CHECK(a->mods[k].dora_scale == NULL);
        }
        lp_adapter_free(a);
    }

    /* the .bin and the safetensors of the math adapter hold the same tensors */
    char d1[512], d2[512], p[600];
    TINY(d1, "math");
    TINY(d2, "math-bin");
    if (lp__file_exists(join(p, sizeof p, d2, "adapter_model.bin"))) {
        lp_adapter *a = LOAD_OK("math", d1, g_tiny, NULL), *b = LOAD_OK("math-bin", d2, g_tiny, NULL);
        if (a && b) {
            int diff = 0;
            for (size_t k = 0; k < (size_t)a->n_layers * LP_MOD_COUNT; k++) {
                const lp__lora_mod *x = &a->mods[k], *y = &b->mods[k];
                if (x->rank != y->rank) {
                    diff++;
                    continue;
                }
                if (!x->rank)
                    continue;
                for (int64_t i = 0; i < x->A.rows * x->A.cols; i += 97)
                    diff += lp__load_f32(x->A.data, x->A.dtype, i) != lp__load_f32(y->A.data, y->A.dtype, i);
                for (int64_t i = 0; i < x->B.rows * x->B.cols; i += 89)
                    diff += lp__load_f32(x->B.data, x->B.dtype, i) != lp__load_f32(y->B.data, y->B.dtype, i);
            }
            CHECKF(diff == 0, "math vs math-bin: %d differences", diff);
        }
        lp_adapter_free(a);
        lp_adapter_free(b);
    }

    CHECK(!strcmp(lp_adapter_module_name(0), "q_proj") && !strcmp(lp_adapter_module_name(6), "down_proj"));
    CHECK(!strcmp(lp_adapter_module_name(7), "?") && !strcmp(lp_adapter_module_name(-1), "?"));
    CHECK(lp_adapter_default_params().max_rank == 256);

    /* max_rank boundary: r=64 loads at 64, not at 63 */
    char dir[512];
    TINY(dir, "fortune-chat");
    lp_adapter_params p64 = max_rank(64), p63 = max_rank(63);
    lp_adapter *a = LOAD_OK("fortune-chat max_rank 64", dir, g_tiny, &p64);
    lp_adapter_free(a);
    EXPECT_FAIL("fortune-chat max_rank 63", dir, g_tiny, &p63, LP_ERR_LIMIT, "r=64", "63");
}

/* ---- negative: damaged copies of the fixtures ----------------------------- */

/* Copy fixture `src`, set config key (JSON text; NULL deletes it), expect failure. */
static void config_case_(int line, const char *what, const char *src, const char *key, const char *json_text,
                         int code, const char *n1, const char *n2) {
    scratch s;
    if (!scratch_copy(&s, src))
        return;
    bool ok = json_text ? config_set_json(s.dir, key, json_text) : config_set(s.dir, key, NULL);
    CHECKF(ok, "line %d: editing %s", line, key);
    if (ok)
        expect_fail_(line, what, s.dir, g_llama, NULL, code, n1, n2);
    scratch_free(&s);
}
#define CONFIG_CASE(what, key, json_text, code, n1, n2) \
    config_case_(__LINE__, what, r4qv, key, json_text, code, n1, n2)

static void test_bad_config(void) {
    printf("bad adapter_config.json\n");
    char r4qv[512], dora[512];
    CONFORM(r4qv, "r4-qv");
    CONFORM(dora, "dora-r8");
    scratch s;

    if (scratch_copy(&s, r4qv)) {
        remove_file(s.dir, "adapter_config.json");
        EXPECT_FAIL("config missing", s.dir, g_llama, NULL, LP_ERR_NOT_FOUND, "adapter_config.json", NULL);
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) {
        write_text(s.dir, "adapter_config.json", "{\"r\": 4, \"target_modules\": [\"q_proj\"");
        EXPECT_FAIL("config not JSON", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_config.json", "invalid JSON");
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) {
        write_text(s.dir, "adapter_config.json", "[{\"r\": 4}]");
        EXPECT_FAIL("config not an object", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_config.json", "object");
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) {
        write_text(s.dir, "adapter_config.json", "");
        EXPECT_FAIL("config empty", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_config.json", NULL);
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) {
        write_text(s.dir, "adapter_config.json", "{\"r\": 4, \"r\": 8, \"target_modules\": [\"q_proj\", \"v_proj\"]}");
        EXPECT_FAIL("config duplicate key", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_config.json", NULL);
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) { /* a directory where the file should be */
        char p[600];
        remove_file(s.dir, "adapter_config.json");
        CHECK(mkdir(join(p, sizeof p, s.dir, "adapter_config.json"), 0700) == 0);
        EXPECT_FAIL("config is a directory", s.dir, g_llama, NULL, LP_ERR_IO, "adapter_config.json", NULL);
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) { /* 2 MiB: over the 1 MiB cap, refused before parsing */
        size_t n = 2u << 20;
        char *big = malloc(n);
        if (big) {
            memset(big, ' ', n);
            big[0] = '{';
            big[n - 1] = '}';
            write_file(s.dir, "adapter_config.json", big, n);
            free(big);
            EXPECT_FAIL("config too big", s.dir, g_llama, NULL, LP_ERR_LIMIT, "adapter_config.json", NULL);
        }
        scratch_free(&s);
    }

    CONFIG_CASE("r=0", "r", "0", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r=-1", "r", "-1", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r=4.5", "r", "4.5", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r=\"4\"", "r", "\"4\"", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r=true", "r", "true", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r missing", "r", NULL, LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("r huge", "r", "1000000000000", LP_ERR_FORMAT, "adapter_config.json", "r must be");
    CONFIG_CASE("lora_alpha negative", "lora_alpha", "-16", LP_ERR_FORMAT, "lora_alpha", NULL);
    CONFIG_CASE("lora_alpha zero", "lora_alpha", "0", LP_ERR_FORMAT, "lora_alpha", NULL);
    CONFIG_CASE("lora_alpha string", "lora_alpha", "\"16\"", LP_ERR_FORMAT, "lora_alpha", NULL);
    CONFIG_CASE("target_modules missing", "target_modules", NULL, LP_ERR_FORMAT, "target_modules", NULL);
    CONFIG_CASE("target_modules number", "target_modules", "7", LP_ERR_FORMAT, "target_modules", NULL);
    CONFIG_CASE("target_modules [1]", "target_modules", "[\"q_proj\", 1]", LP_ERR_FORMAT, "target_modules[1]",
                NULL);
    CONFIG_CASE("bad regex in target_modules", "target_modules", "\".*\\\\.(q|v_proj\"", LP_ERR_FORMAT,
                "target_modules", "regex");
    CONFIG_CASE("bad regex in exclude_modules", "exclude_modules", "\"[k_proj\"", LP_ERR_FORMAT, "exclude_modules",
                "regex");
    CONFIG_CASE("bias all", "bias", "\"all\"", LP_ERR_UNSUPPORTED, "bias", "all");
    CONFIG_CASE("bias lora_only", "bias", "\"lora_only\"", LP_ERR_UNSUPPORTED, "bias", "lora_only");
    CONFIG_CASE("modules_to_save lm_head", "modules_to_save", "[\"lm_head\"]", LP_ERR_UNSUPPORTED,
                "modules_to_save", NULL);
    CONFIG_CASE("peft_type PREFIX_TUNING", "peft_type", "\"PREFIX_TUNING\"", LP_ERR_UNSUPPORTED, "peft_type",
                "PREFIX_TUNING");
    CONFIG_CASE("lora_bias true", "lora_bias", "true", LP_ERR_UNSUPPORTED, "lora_bias", NULL);
    CONFIG_CASE("use_qalora true", "use_qalora", "true", LP_ERR_UNSUPPORTED, "use_qalora", NULL);
    CONFIG_CASE("target_parameters", "target_parameters", "[\"mlp.experts.gate_up_proj\"]", LP_ERR_UNSUPPORTED,
                "target_parameters", NULL);
    CONFIG_CASE("layer_replication", "layer_replication", "[[0, 2], [1, 2]]", LP_ERR_UNSUPPORTED,
                "layer_replication", NULL);
    CONFIG_CASE("trainable_token_indices", "trainable_token_indices", "[1, 2]", LP_ERR_UNSUPPORTED,
                "trainable_token_indices", NULL);
    CONFIG_CASE("layers_pattern h", "layers_pattern", "\"h\"", LP_ERR_UNSUPPORTED, "layers_pattern", NULL);
    CONFIG_CASE("layers_to_transform string", "layers_to_transform", "\"1\"", LP_ERR_FORMAT, "layers_to_transform",
                NULL);
    CONFIG_CASE("layers_to_transform [-1]", "layers_to_transform", "[-1]", LP_ERR_FORMAT, "layers_to_transform",
                NULL);
    CONFIG_CASE("rank_pattern not an object", "rank_pattern", "[4]", LP_ERR_FORMAT, "rank_pattern", NULL);
    CONFIG_CASE("rank_pattern real", "rank_pattern", "{\"q_proj\": 2.5}", LP_ERR_FORMAT, "rank_pattern", "q_proj");
    CONFIG_CASE("rank_pattern zero", "rank_pattern", "{\"q_proj\": 0}", LP_ERR_RANGE, "rank_pattern", "q_proj");
    CONFIG_CASE("alpha_pattern negative", "alpha_pattern", "{\"v_proj\": -1}", LP_ERR_RANGE, "alpha_pattern",
                "v_proj");
    /* a pattern key that is not a valid regex: PEFT's re.match raises; silently
     * matching nothing would give v_proj the default alpha (a wrong scaling) */
    CONFIG_CASE("alpha_pattern key not a regex", "alpha_pattern", "{\"v_proj(\": 16}", LP_ERR_FORMAT,
                "alpha_pattern", "v_proj(");
    CONFIG_CASE("alpha_pattern string", "alpha_pattern", "{\"v_proj\": \"8\"}", LP_ERR_FORMAT, "alpha_pattern",
                "v_proj");

    /* DoRA flag and magnitude vectors must agree */
    CONFIG_CASE("use_dora without magnitude vectors", "use_dora", "true", LP_ERR_FORMAT, "use_dora",
                "lora_magnitude_vector");
    if (scratch_copy(&s, dora)) {
        config_set_json(s.dir, "use_dora", "false");
        EXPECT_FAIL("magnitude without use_dora", s.dir, g_llama, NULL, LP_ERR_FORMAT, "lora_magnitude_vector",
                    "use_dora");
        scratch_free(&s);
    }

    /* rank limits: r and rank_pattern against lp_adapter_params.max_rank */
    lp_adapter_params p3 = max_rank(3), p4 = max_rank(4), p10 = max_rank(10), p12 = max_rank(12);
    if (scratch_copy(&s, r4qv)) {
        EXPECT_FAIL("r above max_rank", s.dir, g_llama, &p3, LP_ERR_LIMIT, "r=4", "maximum LoRA rank 3");
        EXPECT_FAIL("r above max_rank (inspect)", s.dir, NULL, &p3, LP_ERR_LIMIT, "r=4", NULL);
        lp_adapter_free(LOAD_OK("r at max_rank", s.dir, g_llama, &p4));
        scratch_free(&s);
    }
    char pat[512];
    CONFORM(pat, "pattern-mlp");
    if (scratch_copy(&s, pat)) {
        EXPECT_FAIL("rank_pattern above max_rank", s.dir, g_llama, &p10, LP_ERR_LIMIT, "rank_pattern", "o_proj");
        lp_adapter_free(LOAD_OK("rank_pattern at max_rank", s.dir, g_llama, &p12));
        scratch_free(&s);
    }
    /* a rank_pattern entry that matches nothing still counts against the limit */
    if (scratch_copy(&s, r4qv)) {
        config_set_json(s.dir, "rank_pattern", "{\"down_proj\": 300}");
        EXPECT_FAIL("unused rank_pattern above max_rank", s.dir, g_llama, NULL, LP_ERR_LIMIT, "rank_pattern",
                    "down_proj");
        scratch_free(&s);
    }
    /* the file's rank must be the one the config gives */
    CONFIG_CASE("config r disagrees with the tensors", "r", "8", LP_ERR_FORMAT, "r=8", "q_proj");
    CONFIG_CASE("rank_pattern disagrees with the tensors", "rank_pattern", "{\"v_proj\": 2}", LP_ERR_FORMAT,
                "rank_pattern", "v_proj");
    /* tensors the config does not select */
    CONFIG_CASE("tensors not selected by target_modules", "target_modules", "[\"q_proj\"]", LP_ERR_FORMAT,
                "self_attn.v_proj", "target_modules");
    CONFIG_CASE("tensors excluded by exclude_modules", "exclude_modules", "[\"v_proj\"]", LP_ERR_FORMAT,
                "self_attn.v_proj", NULL);
    CONFIG_CASE("tensors outside layers_to_transform", "layers_to_transform", "[1]", LP_ERR_FORMAT,
                "layers.0.", "layers_to_transform");
}

/* Tensors of the wrong size or name, in files written here. */
static void test_bad_tensors(void) {
    printf("bad tensors\n");
    char r4qv[512], math[512], p[600];
    CONFORM(r4qv, "r4-qv");
    TINY(math, "math");
    scratch s;
    const lp_model_config *lc = lp_model_get_config(g_llama);

    /* adapters trained for another base (bad-inputs 5) */
    EXPECT_FAIL("llama conform adapter against tinylm", r4qv, g_tiny, NULL, LP_ERR_FORMAT, "another model",
                "self_attn.q_proj");
    {
        /* the full math adapter has 6 layers; the base has 2 */
        lp_adapter *a = (lp_adapter *)&a;
        lp_error err;
        int rc = lp_adapter_load(math, g_llama, NULL, &a, &err);
        CHECKF(rc == LP_ERR_FORMAT && a == NULL && (strstr(err.msg, "another model") || strstr(err.msg, "layer")),
               "tinylm math against llama conform: %s", rc ? err.msg : "loaded");
        if (rc)
            printf("  rejected (%s) tinylm math against llama conform: %s\n", lp_status_name(rc), err.msg);
        else
            lp_adapter_free(a);
    }
    /* its layers 0-1 only: the layer count fits, the hidden size does not */
    if (scratch_new(&s)) {
        lp_st_file *f = NULL;
        lp_error err;
        CHECK(copy_file(math, s.dir, "adapter_config.json"));
        if (lp_st_open(join(p, sizeof p, math, "adapter_model.safetensors"), LP_ST_COPY, &f, &err) == LP_OK) {
            lp_st_writer *w = lp_st_writer_new();
            for (int i = 0; w && i < lp_st_count(f); i++) {
                const lp_st_tensor *t = lp_st_at(f, i);
                if (strstr(t->name, ".layers.0.") || strstr(t->name, ".layers.1."))
                    CHECK(lp_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, &err) ==
                          LP_OK);
            }
            CHECK(w && lp_st_writer_finish(w, join(p, sizeof p, s.dir, "adapter_model.safetensors"), &err) == LP_OK);
            lp_st_writer_free(w);
            lp_st_close(f);
            EXPECT_FAIL("tinylm math (layers 0-1) against llama conform", s.dir, g_llama, NULL, LP_ERR_FORMAT,
                        "another model", "model.layers.");
            lp_adapter_free(LOAD_OK("tinylm math (layers 0-1) against tinylm", s.dir, g_tiny, NULL));
        } else {
            CHECKF(false, "open math: %s", err.msg);
        }
        scratch_free(&s);
    }

    stb b;
    char name[160];
    int64_t rows, cols;
    lp__module_shape(lc, LP_MOD_Q, &rows, &cols);

    /* a layer beyond the model */
    spec sp_l5[] = {{0, LP_MOD_Q, 4}, {5, LP_MOD_Q, 4}};
    if (craft(&s, config_new(4, 8, jlist("[\"q_proj\"]")), sp_l5, 2, false)) {
        EXPECT_FAIL("layer beyond the model", s.dir, g_llama, NULL, LP_ERR_FORMAT, "layers.5.self_attn.q_proj",
                    "layer 5");
        /* without a model the layer count comes from the tensors */
        lp_adapter *a = LOAD_OK("layer 5 inspect", s.dir, NULL, NULL);
        CHECK(a && a->n_layers == 6 && a->info.n_modules == 2);
        lp_adapter_free(a);
        scratch_free(&s);
    }

    /* A/B rank mismatch */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        int64_t sa[2] = {4, cols}, sb[2] = {rows, 3};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sb);
        if (stb_finish(&b, s.dir)) {
            EXPECT_FAIL("A-B rank mismatch", s.dir, g_llama, NULL, LP_ERR_FORMAT, "rank mismatch", "q_proj");
            EXPECT_FAIL("A-B rank mismatch (inspect)", s.dir, NULL, NULL, LP_ERR_FORMAT, "rank mismatch", NULL);
        }
    }
    scratch_free(&s);

    /* lora_A of the wrong input width only (B fits) */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        int64_t sa[2] = {4, cols + 1}, sb[2] = {rows, 4};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sb);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("lora_A one column too wide", s.dir, g_llama, NULL, LP_ERR_FORMAT, "another model", "q_proj");
    }
    scratch_free(&s);

    /* 1-D lora_A */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        int64_t sa[1] = {4 * cols}, sb[2] = {rows, 4};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F32, 1, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sb);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("1-D lora_A", s.dir, g_llama, NULL, LP_ERR_FORMAT, "2-D", "q_proj");
    }
    scratch_free(&s);

    /* lora_B missing */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        int64_t sa[2] = {4, cols};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sa);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("lora_B missing", s.dir, g_llama, NULL, LP_ERR_FORMAT, "lora_B.weight is missing", "q_proj");
    }
    scratch_free(&s);

    /* a magnitude vector alone: the message must not claim lora_B is there */
    if (scratch_new(&s)) {
        json_t *c = config_new(4, 8, jlist("[\"q_proj\"]"));
        json_object_set_new(c, "use_dora", json_true());
        config_write(s.dir, c);
        stb_init(&b);
        int64_t sm[1] = {rows};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_magnitude_vector");
        stb_add(&b, name, LP_DTYPE_F32, 1, sm);
        if (stb_finish(&b, s.dir)) {
            lp_adapter *a = NULL;
            lp_error err;
            int rc = lp_adapter_load(s.dir, g_llama, NULL, &a, &err);
            CHECKF(rc == LP_ERR_FORMAT && strstr(err.msg, "q_proj"), "magnitude alone: %s", rc ? err.msg : "loaded");
            CHECKF(rc == LP_OK || !strstr(err.msg, "lora_B.weight is present"),
                   "magnitude alone: message says lora_B is present, but only the magnitude is: %s", err.msg);
            lp_adapter_free(a);
        }
    }
    scratch_free(&s);

    /* DoRA magnitude of the wrong length */
    if (scratch_new(&s)) {
        json_t *c = config_new(4, 8, jlist("[\"q_proj\"]"));
        json_object_set_new(c, "use_dora", json_true());
        config_write(s.dir, c);
        stb_init(&b);
        int64_t sa[2] = {4, cols}, sb[2] = {rows, 4}, sm[1] = {rows - 1};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sb);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_magnitude_vector");
        stb_add(&b, name, LP_DTYPE_F32, 1, sm);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("magnitude of the wrong length", s.dir, g_llama, NULL, LP_ERR_FORMAT, "lora_magnitude_vector",
                        "q_proj");
    }
    scratch_free(&s);

    /* the magnitude under both of its spellings: two tensors for one slot */
    if (scratch_new(&s)) {
        json_t *c = config_new(4, 8, jlist("[\"q_proj\"]"));
        json_object_set_new(c, "use_dora", json_true());
        config_write(s.dir, c);
        stb_init(&b);
        stb_lora(&b, g_llama, 0, LP_MOD_Q, 4, true);
        int64_t sm[1] = {rows};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_magnitude_vector.weight");
        stb_add(&b, name, LP_DTYPE_F32, 1, sm);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("magnitude under both spellings", s.dir, g_llama, NULL, LP_ERR_FORMAT, "appears twice",
                        "lora_magnitude_vector");
    }
    scratch_free(&s);

    /* unknown tensor names */
    static const char *unknown[] = {
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "base_model.model.model.layers.0.self_attn.qq_proj.lora_A.weight",
        "base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
    };
    for (size_t i = 0; i < LP_ARRAY_LEN(unknown); i++) {
        if (!scratch_new(&s))
            break;
        config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")));
        stb_init(&b);
        stb_lora(&b, g_llama, 0, LP_MOD_Q, 4, false);
        int64_t sh[2] = {4, 64};
        stb_add(&b, unknown[i], LP_DTYPE_F32, 2, sh);
        if (stb_finish(&b, s.dir)) {
            EXPECT_FAIL(unknown[i], s.dir, g_llama, NULL, LP_ERR_UNSUPPORTED, unknown[i], NULL);
            EXPECT_FAIL(unknown[i], s.dir, NULL, NULL, LP_ERR_UNSUPPORTED, unknown[i], NULL);
        }
        scratch_free(&s);
    }

    /* a projection that target_modules does not select (k_proj with ["q_proj","v_proj"]) */
    spec sp_qkv[] = {{0, LP_MOD_Q, 4}, {0, LP_MOD_K, 4}, {0, LP_MOD_V, 4}};
    if (craft(&s, config_new(4, 8, jlist("[\"q_proj\", \"v_proj\"]")), sp_qkv, 3, false)) {
        EXPECT_FAIL("tensor not selected by target_modules", s.dir, g_llama, NULL, LP_ERR_FORMAT,
                    "model.layers.0.self_attn.k_proj", "target_modules");
        scratch_free(&s);
    }

    /* wrong dtype */
    static const lp_dtype bad_dt[] = {LP_DTYPE_I32, LP_DTYPE_F64, LP_DTYPE_U8};
    for (size_t i = 0; i < LP_ARRAY_LEN(bad_dt); i++) {
        if (!scratch_new(&s))
            break;
        config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")));
        stb_init(&b);
        int64_t sa[2] = {4, cols}, sb[2] = {rows, 4};
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, bad_dt[i], 2, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_F32, 2, sb);
        if (stb_finish(&b, s.dir))
            EXPECT_FAIL("wrong dtype", s.dir, g_llama, NULL, LP_ERR_UNSUPPORTED, lp_dtype_name(bad_dt[i]),
                        "q_proj.lora_A.weight");
        scratch_free(&s);
    }

    /* a file with no tensors at all */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        if (stb_finish(&b, s.dir)) {
            EXPECT_FAIL("no tensors", s.dir, g_llama, NULL, LP_ERR_FORMAT, "no LoRA tensors", NULL);
            EXPECT_FAIL("no tensors (inspect)", s.dir, NULL, NULL, LP_ERR_FORMAT, "no LoRA tensors", NULL);
        }
    }
    scratch_free(&s);

    /* without a model, a layer index no loadable model can have (config.c
     * caps num_hidden_layers at 1024) must be refused, not turned into a
     * (1000001 x 7)-module table (~1 GB of allocations from a 1 KB file) */
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb_init(&b);
        stb_lora(&b, g_llama, 1000000, LP_MOD_Q, 4, false);
        if (stb_finish(&b, s.dir)) {
            EXPECT_FAIL("layer 1000000", s.dir, g_llama, NULL, LP_ERR_FORMAT, "layers.1000000", NULL);
            lp_adapter *a = NULL;
            lp_error err;
            int rc = lp_adapter_load(s.dir, NULL, NULL, &a, &err);
            CHECKF(rc != LP_OK && a == NULL && strstr(err.msg, "layers.1000000"),
                   "inspect of a tensor at layer 1000000 should be refused: %s",
                   rc ? err.msg : "loaded with a 1000001-layer module table");
            lp_adapter_free(a);
        }
    }
    scratch_free(&s);
}

/* Problems with the directory and its files. */
static void test_bad_files(void) {
    printf("bad files\n");
    char r4qv[512], p[600];
    CONFORM(r4qv, "r4-qv");
    scratch s;

    if (scratch_copy(&s, r4qv)) {
        remove_file(s.dir, "adapter_model.safetensors");
        EXPECT_FAIL("no weights file", s.dir, g_llama, NULL, LP_ERR_NOT_FOUND, "adapter_model.safetensors",
                    "adapter_model.bin");
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) {
        CHECK(truncate(join(p, sizeof p, s.dir, "adapter_model.safetensors"), 7168 / 2) == 0);
        EXPECT_FAIL("truncated safetensors", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_model.safetensors", NULL);
        CHECK(truncate(p, 5) == 0);
        EXPECT_FAIL("5-byte safetensors", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_model.safetensors", NULL);
        CHECK(truncate(p, 0) == 0);
        EXPECT_FAIL("empty safetensors", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_model.safetensors", NULL);
        scratch_free(&s);
    }
    if (scratch_copy(&s, r4qv)) { /* header length pointing past the end */
        uint8_t hdr[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
        write_file(s.dir, "adapter_model.safetensors", hdr, sizeof hdr);
        EXPECT_FAIL("huge header length", s.dir, g_llama, NULL, LP_ERR_LIMIT, "adapter_model.safetensors", NULL);
        scratch_free(&s);
    }
    EXPECT_FAIL("directory does not exist", "/tmp/lp_adapter_test.does-not-exist/nope", g_llama, NULL,
                LP_ERR_NOT_FOUND, "not a directory", NULL);
    if (scratch_copy(&s, r4qv)) { /* a regular file given as the directory */
        join(p, sizeof p, s.dir, "adapter_config.json");
        EXPECT_FAIL("a file, not a directory", p, g_llama, NULL, LP_ERR_NOT_FOUND, "not a directory", NULL);
        scratch_free(&s);
    }

    /* adapter_model.bin: garbage, and hostile pickles (bad-inputs 6) */
    if (scratch_copy(&s, r4qv)) {
        remove_file(s.dir, "adapter_model.safetensors");
        write_text(s.dir, "adapter_model.bin", "this is not a zip archive");
        EXPECT_FAIL("garbage adapter_model.bin", s.dir, g_llama, NULL, LP_ERR_FORMAT, "adapter_model.bin", NULL);
        static const char *hostile[] = {"global_os_system.bin", "stack_global_os_system.bin", "global_builtins_eval.bin",
                                        "reduce_on_str.bin"};
        for (size_t i = 0; i < LP_ARRAY_LEN(hostile); i++) {
            char src[512];
            join(src, sizeof src, g_data, "bad-pickles");
            char *buf = NULL;
            size_t len = 0;
            if (lp__read_file(join(p, sizeof p, src, hostile[i]), 1u << 20, &buf, &len, NULL) != LP_OK) {
                printf("  NOTE: tests/data/bad-pickles/%s missing: skipped\n", hostile[i]);
                continue;
            }
            write_file(s.dir, "adapter_model.bin", buf, len);
            free(buf);
            lp_adapter *a = NULL;
            lp_error err;
            int rc = lp_adapter_load(s.dir, g_llama, NULL, &a, &err);
            CHECKF(rc < 0 && a == NULL && strstr(err.msg, "adapter_model.bin"), "hostile pickle %s: %s", hostile[i],
                   rc ? err.msg : "loaded");
            if (rc)
                printf("  rejected (%s) %s: %s\n", lp_status_name(rc), hostile[i], err.msg);
            lp_adapter_free(a);
        }
        scratch_free(&s);
    }
}

/* ---- PEFT matching semantics ---------------------------------------------- */

/* Craft, load against the llama base; the adapter, or NULL with err set. */
static lp_adapter *craft_load(json_t *cfg, const spec *sp, int n, lp_error *err) {
    scratch s;
    lp_adapter *a = NULL;
    if (craft(&s, cfg, sp, n, false) && lp_adapter_load(s.dir, g_llama, NULL, &a, err) != LP_OK)
        a = NULL;
    scratch_free(&s); /* the adapter holds a private copy */
    return a;
}

/* Expect cfg + tensors `sp` to load (want_ok) or be refused as not selected. */
static void match_case_(int line, const char *what, json_t *cfg, const spec *sp, int n, bool want_ok) {
    lp_error err;
    memset(&err, 0, sizeof err);
    lp_adapter *a = craft_load(cfg, sp, n, &err);
    if (want_ok) {
        CHECKF(a && a->info.n_modules == n, "line %d: %s: should load: %s", line, what, a ? "wrong n_modules" : err.msg);
    } else {
        CHECKF(!a && err.code == LP_ERR_FORMAT && strstr(err.msg, "do not select"),
               "line %d: %s: should be refused as not selected: %s", line, what, a ? "loaded" : err.msg);
    }
    lp_adapter_free(a);
}
#define MATCH_OK(what, cfg, sp, n) match_case_(__LINE__, what, cfg, sp, n, true)
#define MATCH_NO(what, cfg, sp, n) match_case_(__LINE__, what, cfg, sp, n, false)

static json_t *with(json_t *cfg, const char *key, json_t *val) {
    json_object_set_new(cfg, key, val);
    return cfg;
}

static void test_peft_matching(void) {
    printf("PEFT matching\n");
    spec sp[2 * LP_MOD_COUNT];
    int n;
    spec q0[] = {{0, LP_MOD_Q, 4}}, q1[] = {{1, LP_MOD_Q, 4}}, k0[] = {{0, LP_MOD_K, 4}};

    /* target_modules as a regex string: fullmatch against "model.layers.L.<block>.<proj>" */
    n = specs(sp, Q | V, 0, 1, 4);
    MATCH_OK("regex (q|v)", config_new(4, 8, json_string(".*\\.(q|v)_proj")), sp, n);
    lp_error err;
    lp_adapter *a = craft_load(config_new(4, 8, json_string(".*\\.(q|v)_proj")), sp, n, &err);
    CHECK(a && a->info.targets == (Q | V) && a->info.n_modules == 4);
    lp_adapter_free(a);
    MATCH_NO("regex (q|v) with k", config_new(4, 8, json_string(".*\\.(q|v)_proj")), k0, 1);
    MATCH_NO("regex must match the whole key", config_new(4, 8, json_string("q_proj")), q0, 1);
    MATCH_NO("regex is not a search", config_new(4, 8, json_string("self_attn")), q0, 1);
    MATCH_OK("regex layer 0 only", config_new(4, 8, json_string("model\\.layers\\.0\\..*")), q0, 1);
    MATCH_NO("regex layer 0 only, layer 1", config_new(4, 8, json_string("model\\.layers\\.0\\..*")), q1, 1);
    /* fullmatch backtracks into the second alternative (Python re.fullmatch) */
    MATCH_OK("regex alternation", config_new(4, 8, json_string("(.*\\.q|.*\\.q_proj)")), q0, 1);
    /* a regex string ignores layers_to_transform, as PEFT does */
    MATCH_OK("regex ignores layers_to_transform",
             with(config_new(4, 8, json_string(".*\\.q_proj")), "layers_to_transform", json_integer(0)), q1, 1);

    /* a list: exact key or suffix after a dot */
    MATCH_OK("list q_proj", config_new(4, 8, jlist("[\"q_proj\"]")), q0, 1);
    MATCH_NO("list _proj (no dot before)", config_new(4, 8, jlist("[\"_proj\"]")), q0, 1);
    MATCH_NO("list proj", config_new(4, 8, jlist("[\"proj\"]")), q0, 1);
    MATCH_NO("list q (prefix only)", config_new(4, 8, jlist("[\"q\"]")), q0, 1);
    MATCH_NO("list a regex-looking name is literal", config_new(4, 8, jlist("[\".*_proj\"]")), q0, 1);
    MATCH_OK("list self_attn.q_proj", config_new(4, 8, jlist("[\"self_attn.q_proj\"]")), q0, 1);
    MATCH_NO("list mlp.q_proj", config_new(4, 8, jlist("[\"mlp.q_proj\"]")), q0, 1);
    MATCH_OK("list full key", config_new(4, 8, jlist("[\"model.layers.1.self_attn.q_proj\"]")), q1, 1);
    MATCH_NO("list full key, other layer", config_new(4, 8, jlist("[\"model.layers.1.self_attn.q_proj\"]")), q0, 1);
    MATCH_OK("list layers.0.self_attn.q_proj", config_new(4, 8, jlist("[\"layers.0.self_attn.q_proj\"]")), q0, 1);
    MATCH_NO("list ayers.0.self_attn.q_proj", config_new(4, 8, jlist("[\"ayers.0.self_attn.q_proj\"]")), q0, 1);
    /* a name that is a suffix of another projection's name: "v_proj" vs "k_proj" */
    MATCH_NO("list v_proj does not select k_proj", config_new(4, 8, jlist("[\"v_proj\"]")), k0, 1);

    /* layers_to_transform: an int, a list, an empty list (= all layers) */
    n = specs(sp, Q | V, 1, 1, 4);
    MATCH_OK("layers_to_transform 1",
             with(config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]")), "layers_to_transform", json_integer(1)), sp, n);
    MATCH_NO("layers_to_transform 1, layer 0",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", json_integer(1)), q0, 1);
    MATCH_OK("layers_to_transform [0]",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[0]")), q0, 1);
    MATCH_NO("layers_to_transform [0], layer 1",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[0]")), q1, 1);
    n = specs(sp, Q, 0, 1, 4);
    MATCH_OK("layers_to_transform [1, 0]",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[1, 0]")), sp, n);
    MATCH_OK("layers_to_transform []",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[]")), sp, n);
    MATCH_OK("layers_to_transform with layers_pattern \"layers\"",
             with(with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[1]")), "layers_pattern",
                  json_string("layers")),
             q1, 1);
    MATCH_OK("layers_pattern [\"layers\"]",
             with(with(config_new(4, 8, jlist("[\"q_proj\"]")), "layers_to_transform", jlist("[1]")), "layers_pattern",
                  jlist("[\"layers\"]")),
             q1, 1);
    /* a full key in target_modules is matched directly: PEFT does not apply
     * layers_to_transform to it (check_target_module_exists: `key in
     * config.target_modules` short-circuits the layer filter) */
    MATCH_OK("full key bypasses layers_to_transform",
             with(config_new(4, 8, jlist("[\"model.layers.0.self_attn.q_proj\"]")), "layers_to_transform",
                  jlist("[1]")),
             q0, 1);

    /* exclude_modules: a list (suffix after a dot) or a regex (fullmatch) */
    n = specs(sp, Q | V, 0, 1, 4);
    MATCH_NO("exclude v_proj",
             with(config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]")), "exclude_modules", jlist("[\"v_proj\"]")), sp, n);
    n = specs(sp, Q, 0, 1, 4);
    MATCH_OK("exclude v_proj, q only",
             with(config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]")), "exclude_modules", jlist("[\"v_proj\"]")), sp, n);
    MATCH_OK("exclude _proj (no dot) excludes nothing",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "exclude_modules", jlist("[\"_proj\"]")), sp, n);
    MATCH_NO("exclude regex layer 1 q",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "exclude_modules", json_string(".*\\.1\\.self_attn\\.q_proj")),
             q1, 1);
    MATCH_OK("exclude regex layer 1 q, layer 0",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "exclude_modules", json_string(".*\\.1\\.self_attn\\.q_proj")),
             q0, 1);
    MATCH_OK("exclude regex is a fullmatch",
             with(config_new(4, 8, jlist("[\"q_proj\"]")), "exclude_modules", json_string("q_proj")), q0, 1);
    MATCH_NO("exclude wins over a regex target",
             with(config_new(4, 8, json_string(".*_proj")), "exclude_modules", jlist("[\"q_proj\"]")), q0, 1);

    /* all-linear: every projection, layers_to_transform still applies */
    n = specs(sp, ALL, 0, 1, 4);
    MATCH_OK("all-linear", config_new(4, 8, json_string("all-linear")), sp, n);
    a = craft_load(config_new(4, 8, json_string("all-linear")), sp, n, &err);
    CHECK(a && a->info.targets == ALL && a->info.n_modules == 14);
    lp_adapter_free(a);
    MATCH_NO("all-linear with layers_to_transform [0]",
             with(config_new(4, 8, json_string("all-linear")), "layers_to_transform", jlist("[0]")), sp, n);
    MATCH_NO("all-linear with exclude down_proj",
             with(config_new(4, 8, json_string("all-linear")), "exclude_modules", jlist("[\"down_proj\"]")), sp, n);
    /* PEFT compares "all-linear" case-insensitively (target_modules.lower()) */
    MATCH_OK("ALL-LINEAR", config_new(4, 8, json_string("ALL-LINEAR")), sp, n);

    /* rank_pattern / alpha_pattern: the first pattern p with re.match(r"(^|.*\.)(p)$", key) */
    spec mixed[] = {{0, LP_MOD_Q, 4}, {1, LP_MOD_Q, 2}, {0, LP_MOD_V, 4}, {1, LP_MOD_V, 4}};
    json_t *c = config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]"));
    json_object_set_new(c, "rank_pattern", jlist("{\"model.layers.1.self_attn.q_proj\": 2}"));
    json_object_set_new(c, "alpha_pattern", jlist("{\"v_proj\": 16}"));
    a = craft_load(c, mixed, 4, &err);
    CHECKF(a, "rank_pattern by full key: %s", err.msg);
    if (a) {
        CHECK(a->info.min_rank == 2 && a->info.max_rank == 4);
        CHECK(lp__adapter_mod(a, 1, LP_MOD_Q)->rank == 2 && near(lp__adapter_mod(a, 1, LP_MOD_Q)->scaling, 4.0f, 1e-6f));
        CHECK(lp__adapter_mod(a, 0, LP_MOD_Q)->rank == 4 && near(lp__adapter_mod(a, 0, LP_MOD_Q)->scaling, 2.0f, 1e-6f));
        CHECK(near(lp__adapter_mod(a, 0, LP_MOD_V)->scaling, 4.0f, 1e-6f));
    }
    lp_adapter_free(a);
    /* the first matching pattern wins, in the file's order */
    n = specs(sp, Q, 0, 1, 2);
    c = config_new(4, 8, jlist("[\"q_proj\"]"));
    json_object_set_new(c, "rank_pattern", jlist("{\"q_proj\": 2, \"layers.0.self_attn.q_proj\": 6}"));
    a = craft_load(c, sp, n, &err);
    CHECKF(a && a->info.max_rank == 2, "rank_pattern order: %s", a ? "wrong rank" : err.msg);
    lp_adapter_free(a);
    /* a pattern must follow a dot: "_proj" matches nothing; regex patterns work */
    n = specs(sp, Q | V, 0, 1, 4);
    c = config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]"));
    json_object_set_new(c, "rank_pattern", jlist("{\"_proj\": 2}"));
    a = craft_load(c, sp, n, &err);
    CHECKF(a && a->info.min_rank == 4, "rank_pattern _proj: %s", a ? "matched" : err.msg);
    lp_adapter_free(a);
    n = specs(sp, Q | V, 0, 1, 2);
    c = config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]"));
    json_object_set_new(c, "rank_pattern", jlist("{\"(q|v)_proj\": 2}"));
    a = craft_load(c, sp, n, &err);
    CHECKF(a && a->info.max_rank == 2 && a->info.n_modules == 4, "rank_pattern regex: %s", a ? "wrong" : err.msg);
    lp_adapter_free(a);
    /* rsLoRA with alpha_pattern: alpha / sqrt(r) */
    n = specs(sp, Q | V, 0, 0, 4);
    c = config_new(4, 8, jlist("[\"q_proj\",\"v_proj\"]"));
    json_object_set_new(c, "use_rslora", json_true());
    json_object_set_new(c, "alpha_pattern", jlist("{\"q_proj\": 3}"));
    a = craft_load(c, sp, n, &err);
    CHECKF(a, "rslora: %s", err.msg);
    if (a) {
        CHECK(near(lp__adapter_mod(a, 0, LP_MOD_Q)->scaling, 1.5f, 1e-6f));
        CHECK(near(lp__adapter_mod(a, 0, LP_MOD_V)->scaling, 4.0f, 1e-6f));
    }
    lp_adapter_free(a);
    /* lora_alpha absent: PEFT's default 8 */
    c = config_new(4, 8, jlist("[\"q_proj\"]"));
    json_object_del(c, "lora_alpha");
    a = craft_load(c, q0, 1, &err);
    CHECKF(a && a->info.lora_alpha == 8.0f && near(lp__adapter_mod(a, 0, LP_MOD_Q)->scaling, 2.0f, 1e-6f),
           "default alpha: %s", a ? "wrong" : err.msg);
    lp_adapter_free(a);

    /* mixed dtypes load (F16 A, BF16 B) */
    scratch s;
    if (scratch_new(&s) && config_write(s.dir, config_new(4, 8, jlist("[\"q_proj\"]")))) {
        stb b;
        char name[160];
        int64_t rows, cols;
        lp__module_shape(lp_model_get_config(g_llama), LP_MOD_Q, &rows, &cols);
        int64_t sa[2] = {4, cols}, sb[2] = {rows, 4};
        stb_init(&b);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_A.weight");
        stb_add(&b, name, LP_DTYPE_F16, 2, sa);
        lora_name(name, sizeof name, 0, LP_MOD_Q, "lora_B.weight");
        stb_add(&b, name, LP_DTYPE_BF16, 2, sb);
        if (stb_finish(&b, s.dir)) {
            a = LOAD_OK("F16 A + BF16 B", s.dir, g_llama, NULL);
            CHECK(a && a->info.bytes == (uint64_t)(4 * cols + rows * 4) * 2);
            lp_adapter_free(a);
        }
    }
    scratch_free(&s);

    /* a crafted DoRA adapter loads and gets its norms */
    if (craft(&s, with(config_new(4, 8, jlist("[\"q_proj\"]")), "use_dora", json_true()), q0, 1, true)) {
        a = LOAD_OK("crafted DoRA", s.dir, g_llama, NULL);
        CHECK(a && a->info.use_dora && lp__adapter_mod(a, 0, LP_MOD_Q)->dora_scale);
        lp_adapter_free(a);
    }
    scratch_free(&s);
}

/* ---- bad-inputs 12: the file changes after the load ----------------------- */

typedef struct snap {
    float v[4][8];
} snap;

static void take_snap(const lp_adapter *a, snap *s) {
    const int pick[4][2] = {{0, LP_MOD_Q}, {0, LP_MOD_DOWN}, {a->n_layers - 1, LP_MOD_V}, {a->n_layers - 1, LP_MOD_UP}};
    for (int i = 0; i < 4; i++) {
        const lp__lora_mod *md = lp__adapter_mod(a, pick[i][0], pick[i][1]);
        for (int k = 0; k < 4; k++) {
            s->v[i][k] = md->rank ? lp__load_f32(md->A.data, md->A.dtype, k * 7) : 0;
            s->v[i][4 + k] = md->rank ? lp__load_f32(md->B.data, md->B.dtype, md->B.rows * md->B.cols - 1 - k * 5) : 0;
        }
    }
}

static void file_changes_under(const char *fixture, const char *file, const lp_model *model) {
    scratch s;
    char p[600];
    if (!scratch_copy(&s, fixture))
        return;
    lp_adapter *a = LOAD_OK(fixture, s.dir, model, NULL);
    if (!a) {
        scratch_free(&s);
        return;
    }
    snap before, after;
    take_snap(a, &before);
    bool nonzero = false;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++)
            nonzero |= before.v[i][k] != 0;
    CHECK(nonzero);
    join(p, sizeof p, s.dir, file);
    struct stat st;
    CHECK(stat(p, &st) == 0);
    /* overwrite in place (same inode: a MAP_PRIVATE mapping would see it) */
    int fd = open(p, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        static uint8_t junk[4096];
        memset(junk, 0x7f, sizeof junk);
        for (off_t off = 0; off < st.st_size; off += (off_t)sizeof junk)
            CHECK(pwrite(fd, junk, sizeof junk, off) == (ssize_t)sizeof junk);
        close(fd);
    }
    take_snap(a, &after);
    CHECKF(!memcmp(&before, &after, sizeof before), "%s: values changed after the file was overwritten", fixture);
    /* truncate (a mapping would SIGBUS here) */
    CHECK(truncate(p, 0) == 0);
    take_snap(a, &after);
    CHECKF(!memcmp(&before, &after, sizeof before), "%s: values changed after the file was truncated", fixture);
    /* reloading the damaged directory fails cleanly */
    EXPECT_FAIL("reload after truncation", s.dir, model, NULL, LP_ERR_FORMAT, file, NULL);
    /* gone altogether */
    scratch_free(&s);
    take_snap(a, &after);
    CHECK(!memcmp(&before, &after, sizeof before));
    lp_adapter_free(a);
}

static void test_file_changes(void) {
    printf("file changes after load (bad-inputs 12)\n");
    char d[512], p[600];
    file_changes_under(CONFORM(d, "r8-all"), "adapter_model.safetensors", g_llama);
    file_changes_under(CONFORM(d, "dora-r8"), "adapter_model.safetensors", g_llama);
    TINY(d, "math-bin");
    if (lp__file_exists(join(p, sizeof p, d, "adapter_model.bin")))
        file_changes_under(d, "adapter_model.bin", g_tiny);
}

/* ---- the config checker used by the fuzz driver --------------------------- */

static void test_config_check(void) {
    printf("lp__adapter_config_check\n");
    static const struct {
        const char *text;
        int code;
    } k[] = {
        {"{\"r\": 8, \"target_modules\": [\"q_proj\"]}", LP_OK},
        {"{\"r\": 8, \"target_modules\": \"all-linear\", \"layers_to_transform\": 3}", LP_OK},
        {"{\"r\": 8, \"target_modules\": \".*\\\\.(q|v)_proj\", \"rank_pattern\": {\"q\": 4}}", LP_OK},
        /* PEFT raises re.error on a pattern key that is not a regex */
        {"{\"r\": 8, \"target_modules\": [\"q_proj\"], \"rank_pattern\": {\"(\": 4}}", LP_ERR_FORMAT},
        {"{\"r\": 8, \"target_modules\": [\"q_proj\"], \"alpha_pattern\": {\"v_proj[\": 4}}", LP_ERR_FORMAT},
        {"{\"r\": 8, \"target_modules\": \"(a+)+$\"}", LP_OK},
        {"{\"r\": 8}", LP_ERR_FORMAT},
        {"{\"r\": 0, \"target_modules\": [\"q_proj\"]}", LP_ERR_FORMAT},
        {"{\"r\": 8, \"target_modules\": \"(\"}", LP_ERR_FORMAT},
        {"{\"r\": 8, \"target_modules\": [\"q_proj\"], \"bias\": \"all\"}", LP_ERR_UNSUPPORTED},
        {"[]", LP_ERR_FORMAT},
        {"", LP_ERR_FORMAT},
        {"{\"r\": 8, \"target_modules\": [\"q_proj\"]} trailing", LP_ERR_FORMAT},
    };
    for (size_t i = 0; i < LP_ARRAY_LEN(k); i++) {
        lp_error err;
        memset(&err, 0, sizeof err);
        int rc = lp__adapter_config_check(k[i].text, &err);
        CHECKF(rc == k[i].code, "config_check(%s): %s (%s)", k[i].text, lp_status_name(rc), err.msg);
        if (rc)
            CHECKF(err.code == rc && err.msg[0], "config_check(%s): error record", k[i].text);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TEST_DATA_DIR MODELS_DIR\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    g_models = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep notes and failures in order */
    char d[512];
    lp_error err;
    if (lp_model_load(join(d, sizeof d, g_data, "conform/llama/base"), &g_llama, NULL, NULL, &err) != LP_OK ||
        lp_model_load(join(d, sizeof d, g_models, "tinylm"), &g_tiny, NULL, NULL, &err) != LP_OK) {
        fprintf(stderr, "cannot load a base model: %s\n", err.msg);
        lp_model_free(g_llama);
        return 2;
    }
    test_fixtures();
    test_bad_config();
    test_bad_tensors();
    test_bad_files();
    test_peft_matching();
    test_file_changes();
    test_config_check();
    lp_model_free(g_llama);
    lp_model_free(g_tiny);
    return lp_test_finish("test_adapter_load");
}
