/* util.h - small shared helpers: checked size arithmetic, bounded file
 * reads, half-precision conversion, timing. */
#ifndef LP_UTIL_UTIL_H
#define LP_UTIL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loraplex/status.h"

#define LP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Checked arithmetic: return false on overflow, leaving *out unspecified. */
static inline bool lp__mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool lp__add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool lp__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* Allocate n*size bytes with the product checked; NULL on overflow/OOM. */
void *lp__malloc_array(size_t n, size_t size);
void *lp__calloc_array(size_t n, size_t size);

/* Make room for one more element in a growable array (*v holding n of
 * `elem` bytes, capacity *cap): doubles the capacity, starting at min_cap,
 * with the size checked. LP_ERR_NOMEM (and *v untouched) on failure. */
int lp__array_grow(void **v, size_t n, size_t *cap, size_t elem, size_t min_cap);

/* Read a whole file into a NUL-terminated heap buffer of at most `max_bytes`
 * (plus the NUL). Caller frees *out. Errors name the path. */
int lp__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                  lp_error *err);

/* Write a buffer to `path` atomically (write to path.tmp, fsync, rename). */
int lp__write_file_atomic(const char *path, const void *data, size_t len,
                          lp_error *err);

/* An output directory: created if absent (*created = true), accepted if it
 * exists and is empty, refused (LP_ERR_EXISTS) otherwise. created may be NULL. */
int lp__prepare_empty_dir(const char *dir, bool *created, lp_error *err);

/* Join dir and name into a heap string "dir/name"; NULL on OOM. */
char *lp__path_join(const char *dir, const char *name);
bool lp__file_exists(const char *path);
bool lp__is_dir(const char *path);
/* strdup that returns NULL on NULL input. */
char *lp__strdup(const char *s);

/* Monotonic clock in seconds. */
double lp__now(void);

/* bf16 / f16 <-> f32. bf16 from f32 rounds to nearest even (NaN kept). */
static inline float lp__bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t lp__f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float lp__f16_to_f32(uint16_t h);
uint16_t lp__f32_to_f16(float f);

#endif
