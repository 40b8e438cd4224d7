/* safetensors.c (fuzz) - libFuzzer driver for the safetensors parser: open
 * the input as a buffer, check the handle's invariants, and read every data
 * byte so that ASan catches any tensor pointing outside the copy. */
#include <stdint.h>
#include <string.h>

#include "format/safetensors.h"

#define FUZZ_ASSERT(c)                                                         \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_st_file *f = (lp_st_file *)&size; /* must be reset to NULL on error */
    lp_error err;
    int rc = lp_st_open_buffer(data, size, "fuzz", &f, &err);
    if (rc != LP_OK) {
        FUZZ_ASSERT(f == NULL && err.code == rc && rc < 0);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL && err.msg[0] != '\0');
        return 0;
    }
    volatile uint64_t sum = 0;
    uint64_t total = 0;
    int n = lp_st_count(f);
    FUZZ_ASSERT(n >= 0 && lp_st_at(f, n) == NULL && lp_st_at(f, -1) == NULL);
    for (int i = 0; i < n; i++) {
        const lp_st_tensor *t = lp_st_at(f, i);
        FUZZ_ASSERT(t && t->name && lp_st_find(f, t->name) == t);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= LP_MAX_DIMS);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_ASSERT(t->shape[d] >= 0);
            ne *= (uint64_t)t->shape[d]; /* validated not to overflow */
        }
        FUZZ_ASSERT(ne == t->nelem && t->nbytes == ne * lp_dtype_size(t->dtype));
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++)
            sum += p[k];
        total += t->nbytes;
    }
    /* Tensors tile the data region, which lies inside the input. */
    FUZZ_ASSERT(total + 8 < size);
    for (int i = 0; i < lp_st_metadata_count(f); i++) {
        const char *v = NULL, *k = lp_st_metadata_at(f, i, &v);
        FUZZ_ASSERT(k && v);
        const char *got = lp_st_metadata(f, k);
        FUZZ_ASSERT(got != NULL);
        sum += (uint8_t)got[0] + strlen(v);
    }
    lp_st_close(f);
    (void)sum;
    return 0;
}
