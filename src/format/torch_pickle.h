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
 * their stored dtype, in private memory. Errors name the path and what is
 * wrong (the rejected opcode or global, the bad record, the tensor). */
int lp_pt_open(const char *path, lp_pt_file **out, lp_error *err);
/* Same on an in-memory archive (copied as needed); for fuzzing and tests. */
int lp_pt_open_buffer(const void *buf, size_t len, const char *label,
                      lp_pt_file **out, lp_error *err);
void lp_pt_close(lp_pt_file *f);

int lp_pt_count(const lp_pt_file *f);
/* Tensors in state-dict order; `data` valid until lp_pt_close. */
const lp_st_tensor *lp_pt_at(const lp_pt_file *f, int i);
const lp_st_tensor *lp_pt_find(const lp_pt_file *f, const char *name);

#endif
