/* dtype.c - element type sizes and names. */
#include "loraplex/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[LP_DTYPE_COUNT] = {
    [LP_DTYPE_INVALID] = {"INVALID", 0}, [LP_DTYPE_F32] = {"F32", 4},
    [LP_DTYPE_F16] = {"F16", 2},         [LP_DTYPE_BF16] = {"BF16", 2},
    [LP_DTYPE_F64] = {"F64", 8},         [LP_DTYPE_I64] = {"I64", 8},
    [LP_DTYPE_I32] = {"I32", 4},         [LP_DTYPE_I16] = {"I16", 2},
    [LP_DTYPE_I8] = {"I8", 1},           [LP_DTYPE_U8] = {"U8", 1},
    [LP_DTYPE_BOOL] = {"BOOL", 1},
};

size_t lp_dtype_size(lp_dtype t) {
    return (t > LP_DTYPE_INVALID && t < LP_DTYPE_COUNT) ? k_dtypes[t].size : 0;
}

const char *lp_dtype_name(lp_dtype t) {
    return (t >= LP_DTYPE_INVALID && t < LP_DTYPE_COUNT) ? k_dtypes[t].name : "INVALID";
}

lp_dtype lp_dtype_from_name(const char *name) {
    for (int i = 1; i < LP_DTYPE_COUNT; i++)
        if (!strcmp(name, k_dtypes[i].name))
            return (lp_dtype)i;
    return LP_DTYPE_INVALID;
}
