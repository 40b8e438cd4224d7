/* torch_pickle.h - read a PyTorch `torch.save` file (a zip archive holding
 * data.pkl + data/<storage> records) that contains a tensor state dict, with a
 * restricted unpickler: only the opcodes and globals a state dict needs are
 * accepted, everything else is rejected with an error; no code ever runs
 * (bad-inputs 6, vLLM CVE-2025-24357). */
#ifndef LP_FORMAT_TORCH_PICKLE_H
#define LP_FORMAT_TORCH_PICKLE_H

#include <stddef.h>

#include "format/safetensors.h" /* lp_st_tensor */
#include "loraplex/status.h"

typedef struct lp_pt_file lp_pt_file;

/* Limits against hostile files. */
#define LP_PT_MAX_FILE (8ull << 30)      /* whole archive */
#define LP_PT_MAX_PICKLE (64u << 20)     /* data.pkl */
#define LP_PT_MAX_TENSORS 100000

/* Open `path`, parse and validate; tensors are materialised contiguous, in
 * their stored dtype, in private memory (the file is read whole: contiguous,
 * aligned views point into that copy, other views are gathered). Every
 * `data` is aligned to its element size. On error *out is NULL and err names
 * the path and what is wrong (the rejected opcode or global, the bad record,
 * the tensor). See docs/torch-pickle.md. */
int lp_pt_open(const char *path, lp_pt_file **out, lp_error *err);
/* Same on an in-memory archive (copied as needed); for fuzzing and tests. */
int lp_pt_open_buffer(const void *buf, size_t len, const char *label,
                      lp_pt_file **out, lp_error *err);
void lp_pt_close(lp_pt_file *f);

int lp_pt_count(const lp_pt_file *f);
/* Tensors in state-dict order; `data` valid until lp_pt_close. */
const lp_st_tensor *lp_pt_at(const lp_pt_file *f, int i);
const lp_st_tensor *lp_pt_find(const lp_pt_file *f, const char *name);

/* Internal, for unit tests and the pickle fuzz driver: the same checks on a
 * bare data.pkl (not referenced after the call). `get` returns the bytes of storage record
 * `key` (LP_OK, or an error code with err set); they must stay valid until
 * lp_pt_close, since contiguous tensors point into them. */
typedef int (*lp__pt_storage_fn)(void *ctx, const char *key, const void **data,
                                 size_t *len, lp_error *err);
int lp__pt_open_pickle(const void *pkl, size_t len, const char *label,
                       lp__pt_storage_fn get, void *ctx, lp_pt_file **out,
                       lp_error *err);

#endif
