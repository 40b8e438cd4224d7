/* torch_pickle_vm.c (fuzz) - libFuzzer driver for the restricted unpickler
 * alone: the input is a bare data.pkl run through lp__pt_open_pickle with a
 * fake storage provider (a storage key that starts with a decimal N resolves
 * to N bytes of a fixed buffer), so mutations never stop at the zip layer or
 * its CRCs. Every byte of every tensor is read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/torch_pickle.h"

#define FUZZ_ASSERT(c)                                                         \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

static uint8_t g_storage[1 << 12];

static int fake_storage(void *ctx, const char *key, const void **data, size_t *len,
                        lp_error *err) {
    (void)ctx;
    char *end;
    unsigned long n = strtoul(key, &end, 10);
    if (end == key || n > sizeof g_storage)
        return lp_error_set(err, LP_ERR_NOT_FOUND, "no storage record '%s'", key);
    *data = g_storage;
    *len = n;
    return LP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_pt_file *f = (lp_pt_file *)&size; /* must be reset to NULL on error */
    lp_error err;
    int rc = lp__pt_open_pickle(data, size, "fuzz.pkl", fake_storage, NULL, &f, &err);
    if (rc != LP_OK) {
        FUZZ_ASSERT(f == NULL && err.code == rc && rc < 0);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL && err.msg[0] != '\0');
        return 0;
    }
    volatile uint64_t sum = 0;
    int n = lp_pt_count(f);
    FUZZ_ASSERT(n >= 0 && lp_pt_at(f, n) == NULL);
    for (int i = 0; i < n; i++) {
        const lp_st_tensor *t = lp_pt_at(f, i);
        FUZZ_ASSERT(t && t->name && t->name[0] && lp_pt_find(f, t->name) == t);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= LP_MAX_DIMS && t->data);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++)
            ne *= (uint64_t)t->shape[d];
        FUZZ_ASSERT(ne == t->nelem && t->nbytes == ne * lp_dtype_size(t->dtype));
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++)
            sum += p[k];
    }
    lp_pt_close(f);
    (void)sum;
    return 0;
}
