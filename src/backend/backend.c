/* backend.c - choosing a backend for a --device name ("auto", "cpu",
 * "cuda") and the size of one KV cache block on each. The CUDA entry points
 * come from src/backend/cuda/ or, in builds without it, cuda_absent.c. */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

#include "backend/common.h"
#include "lora/adapter-impl.h"
#include "model/model-impl.h"

uint64_t lp_backend_adapter_bytes(lp_backend *b, const lp_adapter *a) {
    return b->ops->adapter_bytes ? b->ops->adapter_bytes(b, a) : (uint64_t)a->info.bytes;
}

const char *lp_backend_resolve(const char *device) {
    if (!device || !strcmp(device, "auto"))
        return lp_cuda_device_count() > 0 ? "cuda" : "cpu";
    if (!strcmp(device, "cpu"))
        return "cpu";
    if (!strcmp(device, "cuda"))
        return "cuda";
    return NULL; /* unknown: lp_backend_new refuses it */
}

int lp_backend_new(const char *device, const lp_model *model, const lp_backend_params *params,
                   lp_backend **out, lp_error *err) {
    const char *name = device ? device : "auto";
    const char *resolved = lp_backend_resolve(name);
    if (!resolved)
        return lp_error_set(err, LP_ERR_INVALID, "unknown device '%s' (expected auto, cpu or cuda)", name);
    if (!strcmp(resolved, "cpu"))
        return lp_backend_cpu_new(model, params, out, err);
    return lp_backend_cuda_new(model, params, out, err); /* says so when there is no device */
}

/* Bytes of one KV element on the resolved device: the CPU keeps fp32; CUDA
 * fp32 for an fp32 compute type (lp__cuda_compute_dtype), else fp16 (2
 * bytes, as lp_cu_kv_type in src/backend/cuda/cuda-impl.h). */
static size_t kv_element_bytes(const char *resolved, const lp_model *model) {
    lp_dtype t = LP_DTYPE_F32;
    if (resolved && !strcmp(resolved, "cuda") && lp__cuda_compute_dtype(model, &t, NULL))
        t = LP_DTYPE_BF16; /* a bad LORAPLEX_CUDA_DTYPE: creating the backend will say so */
    return lp_dtype_size(t);
}

size_t lp_backend_kv_block_bytes(const char *device, const lp_model *model, int block_size) {
    const lp_model_config *c = &model->cfg;
    size_t elt = kv_element_bytes(lp_backend_resolve(device), model);
    /* K and V, per layer, per KV head, per token of the block */
    return (size_t)c->n_layers * 2 * (size_t)c->n_kv_heads * (size_t)c->head_dim * (size_t)block_size * elt;
}
