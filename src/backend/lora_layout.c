/* lora_layout.c - an adapter in a GPU backend's layout (lora_layout.h). */
#include "backend/lora_layout.h"

#include <stdlib.h>
#include <string.h>

#include "lora/adapter-impl.h"
#include "util/util.h"

static size_t take(size_t *used, size_t bytes) {
    size_t off = (*used + LP_LORA_LAYOUT_ALIGN - 1) / LP_LORA_LAYOUT_ALIGN * LP_LORA_LAYOUT_ALIGN;
    *used = off + bytes;
    return off;
}

/* fp32 adapter files stay fp32, the others become bf16. */
static bool keeps_f32(const lp__lora_mod *md) { return md->A.dtype == LP_DTYPE_F32 || md->B.dtype == LP_DTYPE_F32; }

int lp_lora_layout_plan(const lp_adapter *a, lp_lora_layout *out, lp_error *err) {
    memset(out, 0, sizeof *out);
    size_t n = (size_t)a->n_layers * LP_MOD_COUNT;
    out->piece = calloc(n ? n : 1, sizeof *out->piece);
    if (!out->piece)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    out->n_layers = a->n_layers;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const lp__lora_mod *md = &a->mods[i];
        lp_lora_piece *p = &out->piece[i];
        if (!md->rank)
            continue;
        p->rank = md->rank;
        p->f32 = keeps_f32(md);
        p->scaling = md->scaling;
        p->in = md->A.cols;
        p->out = md->B.rows;
        size_t es = p->f32 ? 4 : 2;
        p->a = take(&used, (size_t)p->rank * (size_t)p->in * es);
        p->bt = take(&used, (size_t)p->rank * (size_t)p->out * es);
        p->dora = LP_LORA_LAYOUT_NONE;
        if (md->dora_scale) {
            p->dora = take(&used, (size_t)p->out * sizeof(float));
            out->dora = true;
        }
    }
    /* a whole number of aligned units, at least one (an allocation of 0 bytes is not portable) */
    out->bytes = used ? take(&used, 0) : LP_LORA_LAYOUT_ALIGN;
    return LP_OK;
}

/* w (rows, cols) into dst as bf16 or fp32, optionally transposed to (cols, rows). */
static void put_matrix(void *dst, bool f32, const lp__weight *w, bool transpose) {
    int64_t R = w->rows, C = w->cols;
    if (w->dtype == (f32 ? LP_DTYPE_F32 : LP_DTYPE_BF16)) { /* same dtype: copies */
        size_t es = f32 ? 4 : 2;
        if (!transpose) {
            memcpy(dst, w->data, (size_t)(R * C) * es);
        } else if (f32) {
            const float *src = w->data;
            float *d = dst;
            for (int64_t r = 0; r < R; r++)
                for (int64_t k = 0; k < C; k++)
                    d[k * R + r] = src[r * C + k];
        } else {
            const uint16_t *src = w->data;
            uint16_t *d = dst;
            for (int64_t r = 0; r < R; r++)
                for (int64_t k = 0; k < C; k++)
                    d[k * R + r] = src[r * C + k];
        }
        return;
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < C; k++) {
            float v = lp__load_f32(w->data, w->dtype, r * C + k);
            int64_t i = transpose ? k * R + r : r * C + k;
            if (f32)
                ((float *)dst)[i] = v;
            else
                ((uint16_t *)dst)[i] = lp__f32_to_bf16(v);
        }
}

void lp_lora_layout_fill(const lp_adapter *a, const lp_lora_layout *L, void *dst) {
    char *base = dst;
    memset(base, 0, L->bytes); /* padding: the buffer's bytes do not depend on what it held */
    int64_t n = (int64_t)L->n_layers * LP_MOD_COUNT;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        const lp__lora_mod *md = &a->mods[i];
        const lp_lora_piece *p = &L->piece[i];
        if (!p->rank)
            continue;
        put_matrix(base + p->a, p->f32, &md->A, false);
        put_matrix(base + p->bt, p->f32, &md->B, true);
        if (p->dora != LP_LORA_LAYOUT_NONE)
            memcpy(base + p->dora, md->dora_scale, (size_t)p->out * sizeof(float));
    }
}

void lp_lora_layout_free(lp_lora_layout *L) {
    if (!L)
        return;
    free(L->piece);
    L->piece = NULL;
}
