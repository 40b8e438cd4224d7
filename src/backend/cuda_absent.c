/* cuda_absent.c - the CUDA entry points of a build without the CUDA backend
 * (CMakeLists.txt leaves this file out when it builds src/backend/cuda/):
 * they exist so that callers need no #ifdef, and say how to get the real
 * ones. A test may link its own definitions first (tests/cuemu/), and then
 * the linker takes nothing from this file. */
#include "backend/backend.h"

int lp_backend_cuda_new(const lp_model *model, const lp_backend_params *params, lp_backend **out,
                        lp_error *err) {
    (void)model;
    (void)params;
    if (out)
        *out = NULL;
    return lp_error_set(err, LP_ERR_UNSUPPORTED,
                        "this build has no CUDA backend (configure with -DLORAPLEX_CUDA=ON)");
}

int lp_cuda_device_count(void) {
    return 0;
}

int lp_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, lp_error *err) {
    if (free_bytes)
        *free_bytes = 0;
    if (total_bytes)
        *total_bytes = 0;
    return lp_error_set(err, LP_ERR_UNSUPPORTED,
                        "this build has no CUDA backend (configure with -DLORAPLEX_CUDA=ON)");
}
