/* checkpoint.c - sharded safetensors checkpoint writer (see checkpoint.h). */
#include "format/checkpoint.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "util/util.h"

typedef struct pending {
    void *data;
    bool owned;
} pending;

struct lp_ckpt_writer {
    char *dir;
    uint64_t shard_bytes;
    lp_st_writer *cur;   /* the shard being filled */
    uint64_t cur_bytes;
    pending *pend;       /* buffers of the current shard */
    int n_pend, cap_pend;
    int n_shards;        /* flushed so far */
    json_t *weight_map;  /* tensor -> shard index (1-based), renamed at finish */
    bool done, failed;
};

lp_ckpt_writer *lp_ckpt_writer_new(const char *dir, uint64_t shard_bytes) {
    lp_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->dir = lp__strdup(dir);
    w->shard_bytes = shard_bytes ? shard_bytes : (2ull << 30);
    w->weight_map = json_object();
    if (!w->dir || !w->weight_map) {
        lp_ckpt_writer_free(w);
        return NULL;
    }
    return w;
}

static void shard_tmp_name(const lp_ckpt_writer *w, int i, char *buf, size_t n) {
    snprintf(buf, n, "%s/model-%05d.partial.safetensors", w->dir, i);
}

static void drop_pending(lp_ckpt_writer *w) {
    for (int i = 0; i < w->n_pend; i++)
        if (w->pend[i].owned)
            free(w->pend[i].data);
    w->n_pend = 0;
}

static int flush_shard(lp_ckpt_writer *w, lp_error *err) {
    if (!w->cur)
        return LP_OK;
    char path[4096];
    shard_tmp_name(w, w->n_shards + 1, path, sizeof path);
    int rc = lp_st_writer_finish(w->cur, path, err);
    lp_st_writer_free(w->cur);
    w->cur = NULL;
    w->cur_bytes = 0;
    drop_pending(w);
    if (rc)
        return rc;
    w->n_shards++;
    return LP_OK;
}

int lp_ckpt_writer_add(lp_ckpt_writer *w, const char *name, lp_dtype dtype, int ndim, const int64_t *shape,
                       void *data, uint64_t nbytes, bool owned, lp_error *err) {
    int rc;
    if (w->cur && w->cur_bytes + nbytes > w->shard_bytes && (rc = flush_shard(w, err))) {
        if (owned)
            free(data);
        return rc;
    }
    if (!w->cur && !(w->cur = lp_st_writer_new())) {
        if (owned)
            free(data);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if (w->n_pend == w->cap_pend) {
        int cap = w->cap_pend ? 2 * w->cap_pend : 64;
        pending *p = realloc(w->pend, sizeof(pending) * (size_t)cap);
        if (!p) {
            if (owned)
                free(data);
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        }
        w->pend = p;
        w->cap_pend = cap;
    }
    w->pend[w->n_pend++] = (pending){.data = data, .owned = owned};
    if ((rc = lp_st_writer_add(w->cur, name, dtype, ndim, shape, data, nbytes, err)))
        return rc;
    w->cur_bytes += nbytes;
    json_object_set_new(w->weight_map, name, json_integer(w->n_shards + 1));
    return LP_OK;
}

int lp_ckpt_writer_finish(lp_ckpt_writer *w, lp_error *err) {
    int rc = flush_shard(w, err);
    if (rc) {
        w->failed = true;
        return rc;
    }
    char from[4096], to[4096];
    if (w->n_shards == 1) {
        shard_tmp_name(w, 1, from, sizeof from);
        snprintf(to, sizeof to, "%s/model.safetensors", w->dir);
        if (rename(from, to) != 0) {
            w->failed = true;
            return lp_error_set(err, LP_ERR_IO, "%s: rename failed", to);
        }
        w->done = true;
        return LP_OK;
    }
    uint64_t total = 0;
    json_t *map = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(w->weight_map, k, v) {
        char shard[64];
        snprintf(shard, sizeof shard, "model-%05d-of-%05d.safetensors", (int)json_integer_value(v), w->n_shards);
        json_object_set_new(map, k, json_string(shard));
    }
    for (int i = 1; i <= w->n_shards; i++) {
        shard_tmp_name(w, i, from, sizeof from);
        snprintf(to, sizeof to, "%s/model-%05d-of-%05d.safetensors", w->dir, i, w->n_shards);
        FILE *f = fopen(from, "rb");
        if (f) {
            fseeko(f, 0, SEEK_END);
            total += (uint64_t)ftello(f);
            fclose(f);
        }
        if (rename(from, to) != 0) {
            json_decref(map);
            w->failed = true;
            return lp_error_set(err, LP_ERR_IO, "%s: rename failed", to);
        }
    }
    json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    char *text = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(index);
    snprintf(to, sizeof to, "%s/model.safetensors.index.json", w->dir);
    rc = text ? lp__write_file_atomic(to, text, strlen(text), err) : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    free(text);
    w->done = rc == LP_OK;
    w->failed = !w->done;
    return rc;
}

void lp_ckpt_writer_free(lp_ckpt_writer *w) {
    if (!w)
        return;
    if (w->cur)
        lp_st_writer_free(w->cur);
    drop_pending(w);
    if (!w->done) { /* remove partial shards this writer created */
        char path[4096];
        for (int i = 1; i <= w->n_shards + 1; i++) {
            shard_tmp_name(w, i, path, sizeof path);
            unlink(path);
        }
    }
    free(w->pend);
    json_decref(w->weight_map);
    free(w->dir);
    free(w);
}
