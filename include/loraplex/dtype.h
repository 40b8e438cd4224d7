/* dtype.h - element types of tensors in files and in memory. */
#ifndef LORAPLEX_DTYPE_H
#define LORAPLEX_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LP_DTYPE_INVALID = 0,
    LP_DTYPE_F32,
    LP_DTYPE_F16,
    LP_DTYPE_BF16,
    LP_DTYPE_F64,
    LP_DTYPE_I64,
    LP_DTYPE_I32,
    LP_DTYPE_I16,
    LP_DTYPE_I8,
    LP_DTYPE_U8,
    LP_DTYPE_BOOL,
    LP_DTYPE_COUNT
} lp_dtype;

/* Bytes per element (0 for LP_DTYPE_INVALID). */
size_t lp_dtype_size(lp_dtype t);
/* safetensors spelling: "F32", "BF16", ... */
const char *lp_dtype_name(lp_dtype t);
/* Parse the safetensors spelling; LP_DTYPE_INVALID if unknown. */
lp_dtype lp_dtype_from_name(const char *name);

#define LP_MAX_DIMS 8

#endif
