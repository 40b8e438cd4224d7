/* torch_pickle.c (fuzz) - libFuzzer driver for the torch.save reader: open the
 * input as a zip archive with lp_pt_open_buffer, check the handle's
 * invariants, and read every byte of every tensor so that ASan catches any
 * view reaching outside its storage. Seeds are written by
 * tests/unit/format-pickle/make_bad_pickles.py (some with CRC-32 0, so that
 * mutations of data.pkl reach the unpickler). */
#include <stdint.h>
#include <string.h>

#include "format/torch_pickle.h"

#define FUZZ_ASSERT(c)                                                         \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_pt_file *f = (lp_pt_file *)&size; /* must be reset to NULL on error */
    lp_error err;
    int rc = lp_pt_open_buffer(data, size, "fuzz.bin", &f, &err);
    if (rc != LP_OK) {
        FUZZ_ASSERT(f == NULL && err.code == rc && rc < 0);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL && err.msg[0] != '\0');
        return 0;
    }
    volatile uint64_t sum = 0;
    int n = lp_pt_count(f);
    FUZZ_ASSERT(n >= 0 && lp_pt_at(f, n) == NULL && lp_pt_at(f, -1) == NULL);
    for (int i = 0; i < n; i++) {
        const lp_st_tensor *t = lp_pt_at(f, i);
        FUZZ_ASSERT(t && t->name && t->name[0] && lp_pt_find(f, t->name) == t);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= LP_MAX_DIMS && t->data);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_ASSERT(t->shape[d] >= 0);
            ne *= (uint64_t)t->shape[d]; /* validated not to overflow */
        }
        FUZZ_ASSERT(ne == t->nelem && t->nbytes == ne * lp_dtype_size(t->dtype));
        FUZZ_ASSERT((uintptr_t)t->data % lp_dtype_size(t->dtype) == 0);
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++)
            sum += p[k];
    }
    lp_pt_close(f);
    (void)sum;
    return 0;
}
