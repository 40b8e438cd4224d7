/* safetensors.h - safetensors reader (mmap or private copy) with the
 * reference loader's full validation, sharded checkpoint sets, and a writer.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON object
 * {name: {"dtype","shape","data_offsets":[begin,end]}, "__metadata__": {str:str}},
 * then the data region. Offsets are relative to the data region; tensors must
 * tile it exactly (no gaps, no overlap), as the reference loader requires. */
#ifndef LP_FORMAT_SAFETENSORS_H
#define LP_FORMAT_SAFETENSORS_H

#include <stdbool.h>
#include <stdint.h>

#include "loraplex/dtype.h"
#include "loraplex/status.h"

#define LP_ST_MAX_HEADER (100u * 1024u * 1024u) /* as the reference loader */

typedef struct lp_st_tensor {
    const char *name;          /* owned by the file */
    lp_dtype dtype;
    int ndim;                  /* 0..LP_MAX_DIMS */
    int64_t shape[LP_MAX_DIMS];
    uint64_t nelem;            /* product of shape (1 for a scalar) */
    uint64_t nbytes;           /* nelem * dtype size == end - begin */
    const void *data;          /* into the mapping/copy; valid until close */
} lp_st_tensor;

typedef struct lp_st_file lp_st_file;

typedef enum {
    LP_ST_MMAP = 0, /* map the file read-only (base models) */
    LP_ST_COPY = 1, /* read into private memory: immune to the file being
                       truncated/rewritten later (adapters, bad-inputs 12) */
} lp_st_mode;

/* Open and validate one file. On error *out is NULL and err names the path
 * and the tensor/field at fault. */
int lp_st_open(const char *path, lp_st_mode mode, lp_st_file **out, lp_error *err);
/* Same checks on an in-memory buffer (copied); for fuzzing and tests. */
int lp_st_open_buffer(const void *buf, size_t len, const char *label,
                      lp_st_file **out, lp_error *err);
void lp_st_close(lp_st_file *f);

int lp_st_count(const lp_st_file *f);
/* "File order" is the order of the tensors in the data region (by begin
 * offset; zero-size tensors at the same offset keep their header order).
 * Files written by HF and by lp_st_writer list the header in that order too. */
const lp_st_tensor *lp_st_at(const lp_st_file *f, int i);  /* in file order */
const lp_st_tensor *lp_st_find(const lp_st_file *f, const char *name); /* NULL if absent */
/* Value of a __metadata__ key, or NULL. */
const char *lp_st_metadata(const lp_st_file *f, const char *key);

/* Additions. The path (or buffer label) given at open; owned by the file. */
const char *lp_st_label(const lp_st_file *f);
/* __metadata__ entries in header order: key i (NULL when out of range), its
 * value in *value if value is non-NULL. Strings are owned by the file. */
int lp_st_metadata_count(const lp_st_file *f);
const char *lp_st_metadata_at(const lp_st_file *f, int i, const char **value);

/* A checkpoint: either DIR/<stem>.safetensors or DIR/<stem>.safetensors.index.json
 * with its shards ("weight_map": {tensor: shard file}). Shard names are
 * confined to DIR (no '/', no ".."). A tensor listed in the index but missing
 * from its shard, or present in two shards, is an error. */
/* DIR/<stem>.safetensors wins when both exist; neither → LP_ERR_NOT_FOUND
 * naming both. Only the shards named in weight_map are opened (each once).
 * Tensors present in a shard but absent from weight_map are still part of
 * the set (as the reference loader allows); the weight_map only has to be
 * right for the names it lists. An empty weight_map is an error. Tensor
 * pointers stay valid until lp_st_set_close. */
typedef struct lp_st_set lp_st_set;
int lp_st_set_open(const char *dir, const char *stem, lp_st_mode mode,
                   lp_st_set **out, lp_error *err);
void lp_st_set_close(lp_st_set *s);
const lp_st_tensor *lp_st_set_find(const lp_st_set *s, const char *name); /* O(log n) */
int lp_st_set_count(const lp_st_set *s);
/* Shards in file-name order, tensors in file order within each. */
const lp_st_tensor *lp_st_set_at(const lp_st_set *s, int i);
/* Total bytes of tensor data in the set. */
uint64_t lp_st_set_bytes(const lp_st_set *s);
/* Additions: the opened shard files (sorted by file name); owned by the set. */
int lp_st_set_shard_count(const lp_st_set *s);
const lp_st_file *lp_st_set_shard(const lp_st_set *s, int i);

/* Writer: add tensors (data is copied or streamed at finish), then write the
 * file atomically (path.tmp + rename). Header padded with spaces to 8 bytes. */
typedef struct lp_st_writer lp_st_writer;
lp_st_writer *lp_st_writer_new(void); /* NULL on OOM */
/* `data` must stay valid until lp_st_writer_finish; nbytes must equal
 * prod(shape) * dtype size. */
int lp_st_writer_add(lp_st_writer *w, const char *name, lp_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, uint64_t nbytes,
                     lp_error *err);
/* Setting a key again replaces its value. Keys and values must be UTF-8. */
int lp_st_writer_set_metadata(lp_st_writer *w, const char *key, const char *value,
                              lp_error *err);
int lp_st_writer_finish(lp_st_writer *w, const char *path, lp_error *err);
void lp_st_writer_free(lp_st_writer *w);

#endif
