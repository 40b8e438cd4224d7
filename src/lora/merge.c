/* merge.c - fold a LoRA/DoRA adapter into the base weights and write a new
 * model directory that this project and transformers load. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/cpu/kernels.h"
#include "format/checkpoint.h"
#include "lora/adapter-impl.h"
#include "util/log.h"
#include "util/util.h"

#define COPY_MAX (256u << 20)

static const char *torch_dtype_name(lp_dtype t) {
    return t == LP_DTYPE_F32 ? "float32" : t == LP_DTYPE_F16 ? "float16" : "bfloat16";
}

/* Convert n fp32 values to dtype t into a new buffer. */
static void *from_f32(const float *src, int64_t n, lp_dtype t) {
    void *out = lp__malloc_array((size_t)n, lp_dtype_size(t));
    if (!out)
        return NULL;
    if (t == LP_DTYPE_F32) {
        memcpy(out, src, sizeof(float) * (size_t)n);
    } else {
        uint16_t *o = out;
        for (int64_t i = 0; i < n; i++)
            o[i] = t == LP_DTYPE_F16 ? lp__f32_to_f16(src[i]) : lp__f32_to_bf16(src[i]);
    }
    return out;
}

/* fp32 copy of any float tensor. */
static float *to_f32(const void *src, lp_dtype t, int64_t n) {
    float *out = lp__malloc_array((size_t)n, sizeof(float));
    if (out)
        lp__cpu_to_f32(out, src, t, n);
    return out;
}

/* W' (rows, cols) fp32 for an adapted projection. */
static float *merged_weight(const lp__weight *W, const lp__lora_mod *md) {
    int64_t rows = W->rows, cols = W->cols, r = md->rank;
    float *out = to_f32(W->data, W->dtype, rows * cols);
    float *B = to_f32(md->B.data, md->B.dtype, rows * r);
    float *At = lp__malloc_array((size_t)(cols * r), sizeof(float));
    float *BA = lp__malloc_array((size_t)(rows * cols), sizeof(float));
    if (!out || !B || !At || !BA) {
        free(out);
        out = NULL;
        goto done;
    }
    for (int64_t k = 0; k < r; k++)
        for (int64_t i = 0; i < cols; i++)
            At[i * r + k] = lp__load_f32(md->A.data, md->A.dtype, k * cols + i);
    /* BA (rows, cols) = B (rows, r) . At^T where At is (cols, r) */
    lp__cpu_matmul(BA, cols, B, r, At, LP_DTYPE_F32, r, rows, cols, r, false);
    for (int64_t o = 0; o < rows; o++) {
        float g = md->dora_scale ? md->dora_scale[o] : 1.0f;
        for (int64_t i = 0; i < cols; i++) {
            float w = out[o * cols + i] + md->scaling * BA[o * cols + i];
            out[o * cols + i] = md->dora_scale ? g * w : w;
        }
    }
done:
    free(B);
    free(At);
    free(BA);
    return out;
}

/* "model.layers.L.<block>.<proj>.weight" -> (L, m); false otherwise. */
static bool projection_of(const char *name, int *layer, int *mod) {
    int l, n = 0;
    char block[16], proj[16];
    if (sscanf(name, "model.layers.%d.%15[a-z_].%15[a-z_].weight%n", &l, block, proj, &n) != 3 ||
        name[n] != '\0')
        return false;
    for (int m = 0; m < LP_MOD_COUNT; m++)
        if (!strcmp(proj, lp__module_names[m]) && !strcmp(block, m <= LP_MOD_O ? "self_attn" : "mlp")) {
            *layer = l;
            *mod = m;
            return true;
        }
    return false;
}

static bool should_copy(const char *name) {
    if (!strcmp(name, "config.json") || !strcmp(name, "model.safetensors.index.json"))
        return false;
    size_t n = strlen(name);
#define ENDS(s) (n >= sizeof(s) - 1 && !strcmp(name + n - (sizeof(s) - 1), s))
    return ENDS(".json") || ENDS(".jinja") || ENDS(".txt") || ENDS(".model") || ENDS(".tiktoken");
#undef ENDS
}

static int copy_side_files(const lp_model *model, const char *out_dir, lp_error *err) {
    DIR *d = opendir(model->dir);
    if (!d)
        return lp_error_set(err, LP_ERR_IO, "%s: cannot list: %s", model->dir, strerror(errno));
    struct dirent *e;
    int rc = LP_OK;
    while (rc == LP_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !should_copy(e->d_name))
            continue;
        char *src = lp__path_join(model->dir, e->d_name), *dst = lp__path_join(out_dir, e->d_name);
        char *buf = NULL;
        size_t len = 0;
        if (!src || !dst)
            rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        else if (lp__file_exists(src) && (rc = lp__read_file(src, COPY_MAX, &buf, &len, err)) == LP_OK)
            rc = lp__write_file_atomic(dst, buf, len, err);
        free(buf);
        free(src);
        free(dst);
    }
    closedir(d);
    return rc;
}

static int write_config(const lp_model *model, const char *out_dir, lp_dtype dtype, lp_error *err) {
    char *src = lp__path_join(model->dir, "config.json"), *dst = lp__path_join(out_dir, "config.json");
    json_error_t je;
    json_t *cfg = src ? json_load_file(src, 0, &je) : NULL;
    int rc;
    if (!cfg) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "%s: cannot reread config.json", model->dir);
        goto out;
    }
    json_object_set_new(cfg, json_object_get(cfg, "dtype") ? "dtype" : "torch_dtype",
                        json_string(torch_dtype_name(dtype)));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    rc = text ? lp__write_file_atomic(dst, text, strlen(text), err) : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    free(text);
out:
    json_decref(cfg);
    free(src);
    free(dst);
    return rc;
}

static void remove_outputs(const char *out_dir, bool created) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = lp__path_join(out_dir, e->d_name);
        if (p)
            unlink(p);
        free(p);
    }
    if (d)
        closedir(d);
    if (created)
        rmdir(out_dir);
}

int lp_adapter_merge(const lp_model *model, const lp_adapter *a, const char *out_dir, lp_dtype out_dtype,
                     lp_error *err) {
    if (a->n_layers != model->cfg.n_layers)
        return lp_error_set(err, LP_ERR_INVALID, "%s: adapter was not loaded against %s", a->dir, model->dir);
    if (out_dtype != LP_DTYPE_INVALID && out_dtype != LP_DTYPE_F32 && out_dtype != LP_DTYPE_F16 &&
        out_dtype != LP_DTYPE_BF16)
        return lp_error_set(err, LP_ERR_INVALID, "merge: output dtype must be bf16, f16 or f32");
    bool created = false;
    int prc = lp__prepare_empty_dir(out_dir, &created, err);
    if (prc)
        return prc;
    lp_ckpt_writer *w = lp_ckpt_writer_new(out_dir, 0);
    int rc = w ? LP_OK : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    lp_dtype cfg_dtype = out_dtype != LP_DTYPE_INVALID ? out_dtype : model->embed.dtype;
    for (int i = 0; rc == LP_OK && i < lp_st_set_count(model->weights); i++) {
        const lp_st_tensor *t = lp_st_set_at(model->weights, i);
        lp_dtype dt = out_dtype != LP_DTYPE_INVALID ? out_dtype : t->dtype;
        bool is_float = t->dtype == LP_DTYPE_F32 || t->dtype == LP_DTYPE_F16 || t->dtype == LP_DTYPE_BF16;
        int l, m;
        const lp__lora_mod *md = NULL;
        if (projection_of(t->name, &l, &m) && l < a->n_layers && lp__adapter_mod(a, l, m)->rank)
            md = lp__adapter_mod(a, l, m);
        if (!is_float) {
            rc = lp_ckpt_writer_add(w, t->name, t->dtype, t->ndim, t->shape, (void *)t->data, t->nbytes, false, err);
        } else if (md) {
            float *f = merged_weight(&model->layers[l].proj[m], md);
            void *out = f ? from_f32(f, (int64_t)t->nelem, dt) : NULL;
            free(f);
            rc = out ? lp_ckpt_writer_add(w, t->name, dt, t->ndim, t->shape, out,
                                          t->nelem * lp_dtype_size(dt), true, err)
                     : lp_error_set(err, LP_ERR_NOMEM, "merge: out of memory for %s", t->name);
        } else if (dt == t->dtype) {
            rc = lp_ckpt_writer_add(w, t->name, dt, t->ndim, t->shape, (void *)t->data, t->nbytes, false, err);
        } else {
            float *f = to_f32(t->data, t->dtype, (int64_t)t->nelem);
            void *out = f ? from_f32(f, (int64_t)t->nelem, dt) : NULL;
            free(f);
            rc = out ? lp_ckpt_writer_add(w, t->name, dt, t->ndim, t->shape, out,
                                          t->nelem * lp_dtype_size(dt), true, err)
                     : lp_error_set(err, LP_ERR_NOMEM, "merge: out of memory for %s", t->name);
        }
    }
    if (rc == LP_OK)
        rc = lp_ckpt_writer_finish(w, err);
    lp_ckpt_writer_free(w);
    if (rc == LP_OK)
        rc = write_config(model, out_dir, cfg_dtype, err);
    if (rc == LP_OK)
        rc = copy_side_files(model, out_dir, err);
    if (rc != LP_OK)
        remove_outputs(out_dir, created);
    return rc;
}
