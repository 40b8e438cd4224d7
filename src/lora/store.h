/* store.h - the adapter store and its tiers (NIM's model): adapters are
 * registered by name (a scanned --lora-dir, --lora-modules, or the runtime
 * load API), loaded on demand into a host tier (max_cpu_loras, LRU) by a
 * loader thread - which also has the backend stage it in device layout
 * (lp_backend_adapter_stage: pinned host memory on CUDA) - and placed into
 * backend slots, the device tier (max_loras,
 * LRU). An adapter pinned by a queued or running row is never evicted;
 * replacing or unregistering one lets the rows using it finish on the old
 * weights. Thread-safe: every function may be called from any thread, but
 * acquire/release/collect (which touch backend slots) only from the engine
 * thread between steps; an adapter other threads retire or evict while it
 * holds a slot keeps the slot until the engine thread's next
 * lp_store_collect. */
#ifndef LP_LORA_STORE_H
#define LP_LORA_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "loraplex/adapter.h"

typedef struct lp_store lp_store;

typedef struct lp_store_params {
    const char *lora_dir;   /* scanned directory (may be NULL) */
    int max_cpu_loras;      /* host tier capacity */
    int max_loras;          /* device tier capacity (backend adapter slots) */
    /* device tier: most bytes its adapters may take together, each by its
     * own ranks as the backend lays it out (lp_backend_adapter_bytes); an
     * adapter that does not fit displaces least recently used idle ones,
     * or waits while running rows pin them. 0: no limit but the slots. */
    uint64_t max_lora_bytes;
    int max_lora_rank;
    const char *const *allowed_roots; /* extra roots lora_path may point into */
    int n_allowed_roots;
} lp_store_params;

typedef enum { LP_TIER_STORE = 0, LP_TIER_HOST = 1, LP_TIER_DEVICE = 2 } lp_tier;

typedef struct lp_adapter_status {
    char name[128];
    char path[4096];
    lp_tier tier;
    bool loading;
    int rank;               /* 0 until first loaded */
    uint64_t bytes;
    uint64_t device_bytes;  /* what it takes in the device tier (its slot), 0 when not there */
    double last_use;        /* unix seconds, 0 = never */
    double load_ms;         /* last host load time */
    uint64_t requests;      /* rows served */
    int active;             /* rows currently pinning it */
    char error[LP_ERROR_MSG_MAX]; /* last load error, "" if none */
} lp_adapter_status;

typedef struct lp_store_stats {
    uint64_t hits[3], misses[3], loads[3], evictions[3]; /* indexed by lp_tier (HOST, DEVICE) */
    uint64_t load_ms_buckets[12]; /* host load latency histogram, bounds in lp_store_load_buckets */
    double load_ms_sum;
    uint64_t load_count;
    int resident[3];
    uint64_t device_bytes; /* what the device tier's adapters take (lp_store_params.max_lora_bytes) */
} lp_store_stats;

extern const double lp_store_load_buckets[12]; /* ms upper bounds; last = +Inf */

int lp_store_new(const lp_model *model, lp_backend *backend, const lp_store_params *p, lp_store **out,
                 lp_error *err);
void lp_store_free(lp_store *s);

/* A valid adapter name: 1-128 chars of [A-Za-z0-9._-], not starting with '.'. */
bool lp_store_name_ok(const char *name);

/* Rescan lora_dir: register new subdirectories (only once adapter_config.json
 * and the weights are present and complete), replace changed ones (by mtime
 * and size), unregister removed ones. Returns the number of changes. */
int lp_store_scan(lp_store *s);

/* Register name -> path. Unless `trusted` (operator flags such as
 * --lora-modules), the path must resolve (symlinks followed) inside lora_dir
 * or an allowed root, and URLs are refused; a relative path is taken inside
 * lora_dir. The adapter is loaded and validated now, so a bad one is refused
 * with its message. LP_ERR_EXISTS if the name is taken and !replace. */
int lp_store_register(lp_store *s, const char *name, const char *path, bool replace, bool trusted,
                      lp_error *err);
/* LP_ERR_NOT_FOUND if unknown. Rows using it finish on the old weights. */
int lp_store_unregister(lp_store *s, const char *name, lp_error *err);
bool lp_store_has(lp_store *s, const char *name);

/* Engine thread: pin `name` in a device slot. LP_OK: *slot set, *handle to
 * release later. LP_ERR_BUSY: not resident yet (a load was started, or no
 * slot is free): try again later. LP_ERR_NOT_FOUND: unknown name. Other
 * errors: the adapter failed to load (message in err). */
int lp_store_acquire(lp_store *s, const char *name, int *slot, void **handle, lp_error *err);
void lp_store_release(lp_store *s, void *handle);
/* Engine thread, between steps: unload the slots of adapters that other
 * threads retired (unregistered, replaced, changed on disk). The server's
 * worker calls it every turn of its loop (at least every 50 ms). */
void lp_store_collect(lp_store *s);
/* A number unique to the adapter weights behind a handle (changes when the
 * adapter is replaced): the prefix-cache key. Never 0. */
uint64_t lp_store_handle_uid(const void *handle);

/* Snapshot of every registered adapter; *out is heap (caller frees). */
int lp_store_list(lp_store *s, lp_adapter_status **out, int *n);
void lp_store_get_stats(lp_store *s, lp_store_stats *st);
int lp_store_max_cpu_loras(const lp_store *s);
int lp_store_max_loras(const lp_store *s);

#endif
