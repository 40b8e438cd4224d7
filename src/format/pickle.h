/* pickle.h - internal: the restricted unpickler behind torch_pickle.c. It runs
 * a torch `data.pkl` on a small VM that knows only the opcodes and globals a
 * tensor state dict needs, and returns the dict as plain records (tensor
 * views on storages); it never runs code, never recurses on its input, and
 * bounds every stack, memo and pool. See docs/torch-pickle.md. */
#ifndef LP_FORMAT_PICKLE_H
#define LP_FORMAT_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "loraplex/dtype.h"
#include "loraplex/status.h"

/* VM limits (a state dict of LP_PT_MAX_TENSORS tensors needs well under these). */
#define LP_PKL_MAX_STACK (1u << 20)  /* values on the stack */
#define LP_PKL_MAX_MARKS 64          /* nested MARKs (a state dict needs 3) */
#define LP_PKL_MAX_MEMO (4u << 20)   /* memo entries */
#define LP_PKL_MAX_ITEMS (4u << 20)  /* items in all tuples, lists and dicts */
#define LP_PKL_MAX_OBJECTS (1u << 20) /* lists and dicts */

/* One persistent id ('storage', <type>, key, location, numel). */
typedef struct lp__pkl_storage {
    const char *key;  /* into the pickle bytes, NOT NUL-terminated; no NUL inside */
    size_t key_len;
    lp_dtype dtype;   /* from the storage type: FloatStorage -> F32, ... */
    uint64_t numel;   /* elements the record must hold */
} lp__pkl_storage;

/* One state-dict entry: a strided view on a storage, checked to lie inside
 * it (offset + sum((size[d]-1)*stride[d]) < numel when nelem > 0). */
typedef struct lp__pkl_tensor {
    const char *name; /* into the pickle bytes, NOT NUL-terminated; valid UTF-8, no NUL */
    size_t name_len;
    size_t storage;   /* index into lp__pkl_dict.storages */
    int ndim;         /* 0..LP_MAX_DIMS */
    uint64_t offset;  /* in elements */
    int64_t size[LP_MAX_DIMS];   /* each >= 0 */
    int64_t stride[LP_MAX_DIMS]; /* in elements, each >= 0 */
    uint64_t nelem;   /* product of size, overflow-checked */
} lp__pkl_tensor;

typedef struct lp__pkl_dict {
    lp__pkl_tensor *tensors;   /* [n_tensors] in state-dict order */
    size_t n_tensors;
    lp__pkl_storage *storages; /* [n_storages] one per persistent id met */
    size_t n_storages;
} lp__pkl_dict;

/* Run `pkl` (at most LP_PT_MAX_PICKLE bytes). Succeeds only if it is a dict
 * (or OrderedDict) of str -> tensor with at most `max_tensors` entries.
 * Errors read "<label>: data.pkl byte N: <what>". Names and keys point into
 * `pkl`, which must outlive *out. Free with lp__pkl_dict_free. */
int lp__pkl_load_state_dict(const uint8_t *pkl, size_t len, const char *label,
                            size_t max_tensors, lp__pkl_dict *out, lp_error *err);
void lp__pkl_dict_free(lp__pkl_dict *d);

#endif
