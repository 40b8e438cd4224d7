/* adapter-impl.h - a loaded adapter's per-module tensors, shared with the
 * backends and merge. */
#ifndef LP_LORA_ADAPTER_IMPL_H
#define LP_LORA_ADAPTER_IMPL_H

#include "loraplex/adapter.h"
#include "model/model-impl.h"

/* One adapted projection: delta(x) = scaling * B (A x). */
typedef struct lp__lora_mod {
    int rank;         /* 0 = this (layer, projection) is not adapted */
    float scaling;    /* lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA */
    lp__weight A;     /* (rank, in) */
    lp__weight B;     /* (out, rank) */
    const void *magnitude; /* DoRA: (out) lora_magnitude_vector, else NULL */
    lp_dtype magnitude_dtype;
    float *dora_scale;     /* DoRA: (out) magnitude / ||W + scaling B A||_row,
                              computed at load against the base (NULL without a model) */
} lp__lora_mod;

struct lp_adapter {
    char *dir;
    const lp_model *model;  /* the base it was checked against, NULL for inspect */
    lp_adapter_info info;
    int n_layers;
    lp__lora_mod *mods;    /* (n_layers, LP_MOD_COUNT) */
    void *file;            /* lp_st_file or lp_pt_file holding the tensor data */
    bool file_is_pt;
    /* A backend's copy of the weights in its device layout, made ahead of
     * adapter_load (lp_backend_adapter_stage) and freed with the adapter by
     * staged_free; `staged_by` is the backend that made it. */
    void *staged;
    const void *staged_by;
    void (*staged_free)(void *staged);
};

static inline const lp__lora_mod *lp__adapter_mod(const lp_adapter *a, int layer, int m) {
    return &a->mods[(size_t)layer * LP_MOD_COUNT + (size_t)m];
}

/* Parse and check adapter_config.json text alone (fuzzing, tests). */
int lp__adapter_config_check(const char *text, lp_error *err);

/* Element i of a vector/matrix in any float dtype, as fp32. */
float lp__load_f32(const void *p, lp_dtype t, int64_t i);

#endif
