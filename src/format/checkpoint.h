/* checkpoint.h - write a Hugging Face checkpoint directory's weights as one
 * model.safetensors, or as model-0000i-of-0000N.safetensors shards plus
 * model.safetensors.index.json once it passes a size limit, holding at most
 * one shard's worth of converted tensors in memory at a time. */
#ifndef LP_FORMAT_CHECKPOINT_H
#define LP_FORMAT_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "loraplex/dtype.h"
#include "loraplex/status.h"

typedef struct lp_ckpt_writer lp_ckpt_writer;

/* Shards are flushed once they reach shard_bytes (0 = 2 GiB). */
lp_ckpt_writer *lp_ckpt_writer_new(const char *dir, uint64_t shard_bytes);
/* Add a tensor. If `owned`, the writer frees `data` once it is written;
 * otherwise data must stay valid until the shard is flushed (at latest at
 * lp_ckpt_writer_finish). */
int lp_ckpt_writer_add(lp_ckpt_writer *w, const char *name, lp_dtype dtype, int ndim,
                       const int64_t *shape, void *data, uint64_t nbytes, bool owned, lp_error *err);
/* Flush the last shard, name the shards, write the index if sharded. */
int lp_ckpt_writer_finish(lp_ckpt_writer *w, lp_error *err);
/* Frees; after a failure also removes the files this writer created. */
void lp_ckpt_writer_free(lp_ckpt_writer *w);

#endif
