/* store.c - adapter store with a host tier (loader thread, LRU) and a device
 * tier (backend slots, LRU, pinned by rows). See store.h. */
#include "lora/store.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lora/adapter-impl.h"
#include "util/log.h"
#include "util/util.h"

const double lp_store_load_buckets[12] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 1e300};

typedef struct entry {
    char name[128];
    char path[PATH_MAX];
    uint64_t sig;          /* size/mtime signature of the files (scan) */
    bool from_scan;
    bool retired;          /* replaced or unregistered: freed once unpinned */
    bool loading;
    lp_adapter *host;      /* host tier, NULL when not resident */
    int slot;              /* device tier slot, -1 when not resident */
    uint64_t dev_bytes;    /* what its slot holds on the device (while slot >= 0) */
    int pins;              /* rows using it */
    double last_use, load_ms;
    uint64_t requests;
    char error[LP_ERROR_MSG_MAX];
    uint64_t uid;          /* unique per registration: prefix-cache identity */
    struct entry *next;
} entry;

static uint64_t g_next_uid = 1;

struct lp_store {
    const lp_model *model;
    lp_backend *be;
    lp_store_params p;
    char *lora_dir;        /* realpath of p.lora_dir, or NULL */
    char **roots;          /* realpaths of allowed roots */
    int n_roots;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* loader wake-up */
    entry *list;           /* live and retired entries */
    entry **slots;         /* (max_loras) */
    uint64_t dev_used;     /* sum of dev_bytes over the slots */
    entry **queue;         /* load queue (max 1024) */
    int q_head, q_len;
    pthread_t loader;
    bool stop, loader_started;
    lp_store_stats st;
    /* scan: signatures of directories seen incomplete/unstable last time */
    char **pend_names;
    uint64_t *pend_sigs;
    int n_pend;
};

#define QUEUE_CAP 1024

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool lp_store_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 127 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static int host_count(const lp_store *s) {
    int n = 0;
    for (entry *e = s->list; e; e = e->next)
        n += e->host != NULL || e->loading;
    return n;
}

/* Empty e's device slot (on the engine thread only). */
static void slot_release(lp_store *s, entry *e) {
    lp_backend_adapter_unload(s->be, e->slot);
    s->slots[e->slot] = NULL;
    e->slot = -1;
    s->dev_used -= e->dev_bytes;
    e->dev_bytes = 0;
}

static void free_entry_resources(lp_store *s, entry *e) {
    if (e->slot >= 0)
        slot_release(s, e);
    lp_adapter_free(e->host);
    e->host = NULL;
}

/* Backend slots are the engine thread's: a forward may be running (or being
 * captured into a CUDA graph) on another thread, and unloading a slot waits
 * for the GPU's streams. Other threads (the API, the directory scan, the
 * loader) leave entries holding a slot to the engine thread's next
 * lp_store_collect (or release of that entry); `engine` says which thread
 * this is. */

/* Drop retired entries nobody uses any more. */
static void reap(lp_store *s, bool engine) {
    for (entry **pp = &s->list; *pp;) {
        entry *e = *pp;
        if (e->retired && e->pins == 0 && !e->loading && (engine || e->slot < 0)) {
            *pp = e->next;
            free_entry_resources(s, e);
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

/* Evict the least recently used unpinned host-resident entry (and its slot:
 * on the engine thread only). */
static bool evict_host_lru(lp_store *s, bool engine) {
    entry *victim = NULL;
    for (entry *e = s->list; e; e = e->next)
        if (e->host && e->pins == 0 && !e->loading && (engine || e->slot < 0) &&
            (!victim || e->last_use < victim->last_use))
            victim = e;
    if (!victim)
        return false;
    LP_INFO("adapter '%s': evicted from the host tier", victim->name);
    if (victim->slot >= 0)
        s->st.evictions[LP_TIER_DEVICE]++;
    s->st.evictions[LP_TIER_HOST]++;
    free_entry_resources(s, victim);
    return true;
}

/* An adapter for the host tier: read, checked against the model and staged
 * in the backend's device layout (lp_backend_adapter_stage), so that moving
 * it into a slot later is only a copy. Called outside the lock: the loader
 * thread does it beside running batches. */
static int load_host(lp_store *s, const char *path, lp_adapter **out, lp_error *err) {
    lp_adapter_params ap = lp_adapter_default_params();
    ap.max_rank = s->p.max_lora_rank;
    *out = NULL;
    lp_adapter *a = NULL;
    int rc = lp_adapter_load(path, s->model, &ap, &a, err);
    if (!rc && (rc = lp_backend_adapter_stage(s->be, a, err)) != LP_OK) {
        lp_adapter_free(a);
        return rc;
    }
    *out = a;
    return rc;
}

static void *loader_main(void *arg) {
    lp_store *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (!s->q_len) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        entry *e = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % QUEUE_CAP;
        s->q_len--;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s", e->path);
        pthread_mutex_unlock(&s->mu);
        lp_adapter *a = NULL;
        lp_error err = {0};
        double t0 = lp__now();
        int rc = load_host(s, path, &a, &err);
        double ms = (lp__now() - t0) * 1e3;
        pthread_mutex_lock(&s->mu);
        e->loading = false;
        if (rc) {
            snprintf(e->error, sizeof e->error, "%s", err.msg);
            LP_WARN("adapter '%s': load failed: %s", e->name, err.msg);
        } else if (e->retired) {
            lp_adapter_free(a);
        } else {
            e->host = a;
            e->error[0] = '\0';
            e->load_ms = ms;
            s->st.loads[LP_TIER_HOST]++;
            s->st.load_ms_sum += ms;
            s->st.load_count++;
            for (int b = 0; b < 12; b++)
                if (ms <= lp_store_load_buckets[b]) {
                    s->st.load_ms_buckets[b]++;
                    break;
                }
            LP_INFO("adapter '%s': loaded into the host tier in %.1f ms (rank %d, %.2f MiB)", e->name, ms,
                    a->info.max_rank, (double)a->info.bytes / 1048576.0);
        }
        reap(s, false);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static char *real_dir(const char *p) {
    char *r = realpath(p, NULL);
    if (r && !lp__is_dir(r)) {
        free(r);
        return NULL;
    }
    return r;
}

int lp_store_new(const lp_model *model, lp_backend *backend, const lp_store_params *p, lp_store **out,
                 lp_error *err) {
    *out = NULL;
    if (p->max_loras < 1 || p->max_cpu_loras < p->max_loras || p->max_loras > backend->params.max_adapters)
        return lp_error_set(err, LP_ERR_INVALID,
                            "adapter tiers: need 1 <= max_loras (%d) <= max_cpu_loras (%d) and backend slots (%d)",
                            p->max_loras, p->max_cpu_loras, backend->params.max_adapters);
    lp_store *s = calloc(1, sizeof *s);
    if (!s)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    s->model = model;
    s->be = backend;
    s->p = *p;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->slots = calloc((size_t)p->max_loras, sizeof(entry *));
    s->queue = calloc(QUEUE_CAP, sizeof(entry *));
    s->roots = calloc((size_t)p->n_allowed_roots + 1, sizeof(char *));
    if (!s->slots || !s->queue || !s->roots) {
        lp_store_free(s);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if (p->lora_dir) {
        if (!(s->lora_dir = real_dir(p->lora_dir))) {
            lp_store_free(s);
            return lp_error_set(err, LP_ERR_NOT_FOUND, "--lora-dir %s: not a directory", p->lora_dir);
        }
        s->roots[s->n_roots++] = lp__strdup(s->lora_dir);
    }
    for (int i = 0; i < p->n_allowed_roots; i++) {
        char *r = real_dir(p->allowed_roots[i]);
        if (!r) {
            lp_store_free(s);
            return lp_error_set(err, LP_ERR_NOT_FOUND, "allowed adapter root %s: not a directory", p->allowed_roots[i]);
        }
        s->roots[s->n_roots++] = r;
    }
    if (pthread_create(&s->loader, NULL, loader_main, s) != 0) {
        lp_store_free(s);
        return lp_error_set(err, LP_ERR_INTERNAL, "cannot start the adapter loader thread");
    }
    s->loader_started = true;
    *out = s;
    return LP_OK;
}

void lp_store_free(lp_store *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->loader_started)
        pthread_join(s->loader, NULL);
    for (entry *e = s->list; e;) {
        entry *n = e->next;
        free_entry_resources(s, e);
        free(e);
        e = n;
    }
    for (int i = 0; i < s->n_roots; i++)
        free(s->roots[i]);
    for (int i = 0; i < s->n_pend; i++)
        free(s->pend_names[i]);
    free(s->pend_names);
    free(s->pend_sigs);
    free(s->roots);
    free(s->lora_dir);
    free(s->slots);
    free(s->queue);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static entry *find_live(lp_store *s, const char *name) {
    for (entry *e = s->list; e; e = e->next)
        if (!e->retired && !strcmp(e->name, name))
            return e;
    return NULL;
}

static void retire(lp_store *s, entry *e) {
    e->retired = true;
    if (e->pins == 0 && !e->loading)
        reap(s, false); /* an entry in a slot waits for the engine thread */
}

static bool inside_roots(lp_store *s, const char *real) {
    for (int i = 0; i < s->n_roots; i++) {
        size_t n = strlen(s->roots[i]);
        if (!strncmp(real, s->roots[i], n) && (real[n] == '/' || real[n] == '\0'))
            return true;
    }
    return false;
}

static entry *new_entry(lp_store *s, const char *name, const char *real, uint64_t sig, bool from_scan) {
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->path, sizeof e->path, "%s", real);
    e->sig = sig;
    e->from_scan = from_scan;
    e->uid = __atomic_fetch_add(&g_next_uid, 1, __ATOMIC_RELAXED);
    e->slot = -1;
    e->next = s->list;
    s->list = e;
    return e;
}

/* Size/mtime signature of an adapter directory; 0 when incomplete. */
static uint64_t dir_signature(const char *dir) {
    static const char *files[] = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"};
    uint64_t sig = 1469598103934665603ull;
    bool cfg = false, weights = false;
    for (int i = 0; i < 3; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (i == 0)
            cfg = st.st_size > 0;
        else
            weights = weights || st.st_size > 8;
        uint64_t v[3] = {(uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec};
        for (int k = 0; k < 3; k++)
            sig = (sig ^ v[k]) * 1099511628211ull;
    }
    return cfg && weights ? (sig ? sig : 1) : 0;
}

int lp_store_register(lp_store *s, const char *name, const char *path, bool replace, bool trusted,
                      lp_error *err) {
    if (!lp_store_name_ok(name))
        return lp_error_set(err, LP_ERR_INVALID,
                            "lora_name '%s' is invalid: use 1-127 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
                            name);
    if (strstr(path, "://"))
        return lp_error_set(err, LP_ERR_INVALID, "lora_path '%s': remote adapter sources are not enabled", path);
    char joined[PATH_MAX];
    if (path[0] != '/' && s->lora_dir && !trusted)
        snprintf(joined, sizeof joined, "%s/%s", s->lora_dir, path);
    else
        snprintf(joined, sizeof joined, "%s", path);
    char *real = realpath(joined, NULL);
    if (!real || !lp__is_dir(real)) {
        free(real);
        return lp_error_set(err, LP_ERR_NOT_FOUND, "lora_path '%s': no such adapter directory", path);
    }
    if (!trusted && !inside_roots(s, real)) {
        free(real);
        return lp_error_set(err, LP_ERR_INVALID,
                            "lora_path '%s' is outside the adapter root%s (symlinks are followed)", path,
                            s->n_roots ? "" : " (start the server with --lora-dir to allow runtime loads)");
    }
    pthread_mutex_lock(&s->mu);
    bool exists = find_live(s, name) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (exists && !replace) {
        free(real);
        return lp_error_set(err, LP_ERR_EXISTS, "adapter '%s' is already loaded", name);
    }
    /* load and validate now, outside the lock */
    lp_adapter *a = NULL;
    double t0 = lp__now();
    int rc = load_host(s, real, &a, err);
    double ms = (lp__now() - t0) * 1e3;
    if (rc) {
        free(real);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    entry *old = find_live(s, name);
    if (old && !replace) {
        pthread_mutex_unlock(&s->mu);
        lp_adapter_free(a);
        free(real);
        return lp_error_set(err, LP_ERR_EXISTS, "adapter '%s' is already loaded", name);
    }
    if (old)
        retire(s, old);
    entry *e = new_entry(s, name, real, dir_signature(real), false);
    free(real);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        lp_adapter_free(a);
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    /* keep it in the host tier if there is room */
    while (host_count(s) >= s->p.max_cpu_loras && evict_host_lru(s, false))
        ;
    if (host_count(s) < s->p.max_cpu_loras) {
        e->host = a;
        e->load_ms = ms;
        s->st.loads[LP_TIER_HOST]++;
    } else {
        lp_adapter_free(a);
    }
    pthread_mutex_unlock(&s->mu);
    LP_INFO("adapter '%s' registered from %s", name, e->path);
    return LP_OK;
}

int lp_store_unregister(lp_store *s, const char *name, lp_error *err) {
    pthread_mutex_lock(&s->mu);
    entry *e = find_live(s, name);
    if (e)
        retire(s, e);
    pthread_mutex_unlock(&s->mu);
    if (!e)
        return lp_error_set(err, LP_ERR_NOT_FOUND, "adapter '%s' is not loaded", name);
    LP_INFO("adapter '%s' unregistered", name);
    return LP_OK;
}

bool lp_store_has(lp_store *s, const char *name) {
    pthread_mutex_lock(&s->mu);
    bool r = find_live(s, name) != NULL;
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Was this directory seen with the same signature at the previous scan? */
static bool stable(lp_store *s, const char *name, uint64_t sig, char ***names, uint64_t **sigs, int *n) {
    bool seen = false;
    for (int i = 0; i < s->n_pend; i++)
        if (!strcmp(s->pend_names[i], name) && s->pend_sigs[i] == sig)
            seen = true;
    char **nn = realloc(*names, sizeof(char *) * (size_t)(*n + 1));
    uint64_t *ns = nn ? realloc(*sigs, sizeof(uint64_t) * (size_t)(*n + 1)) : NULL;
    if (nn)
        *names = nn;
    if (ns)
        *sigs = ns;
    if (nn && ns && (nn[*n] = lp__strdup(name))) {
        ns[*n] = sig;
        (*n)++;
    }
    return seen;
}

int lp_store_scan(lp_store *s) {
    if (!s->lora_dir)
        return 0;
    DIR *d = opendir(s->lora_dir);
    if (!d) {
        LP_WARN("--lora-dir %s: cannot list: %s", s->lora_dir, strerror(errno));
        return 0;
    }
    char **pn = NULL;
    uint64_t *ps = NULL;
    int npend = 0, changes = 0;
    char **seen = NULL;
    int n_seen = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!lp_store_name_ok(de->d_name))
            continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", s->lora_dir, de->d_name);
        char *real = realpath(dir, NULL);
        if (!real || !lp__is_dir(real) || !inside_roots(s, real)) {
            if (real)
                LP_WARN("--lora-dir: '%s' points outside the adapter root; ignored", de->d_name);
            free(real);
            continue;
        }
        uint64_t sig = dir_signature(real);
        char **ns = realloc(seen, sizeof(char *) * (size_t)(n_seen + 1));
        if (ns) {
            seen = ns;
            seen[n_seen++] = lp__strdup(de->d_name);
        }
        pthread_mutex_lock(&s->mu);
        entry *e = find_live(s, de->d_name);
        bool known_same = e && e->sig == sig;
        pthread_mutex_unlock(&s->mu);
        if (known_same || sig == 0) {
            free(real);
            continue;
        }
        /* new or changed: register once the files have stopped changing */
        if (!stable(s, de->d_name, sig, &pn, &ps, &npend)) {
            free(real);
            continue;
        }
        pthread_mutex_lock(&s->mu);
        e = find_live(s, de->d_name);
        if (e && !e->from_scan) { /* registered by the API or flags: leave it */
            pthread_mutex_unlock(&s->mu);
            free(real);
            continue;
        }
        if (e) {
            LP_INFO("adapter '%s' changed on disk; new requests get the new weights", de->d_name);
            retire(s, e);
        } else {
            LP_INFO("adapter '%s' found in %s", de->d_name, s->lora_dir);
        }
        new_entry(s, de->d_name, real, sig, true);
        changes++;
        pthread_mutex_unlock(&s->mu);
        free(real);
    }
    closedir(d);
    /* directories that disappeared */
    pthread_mutex_lock(&s->mu);
    for (entry *e = s->list; e; e = e->next) {
        if (e->retired || !e->from_scan)
            continue;
        bool present = false;
        for (int i = 0; i < n_seen && !present; i++)
            present = seen[i] && !strcmp(seen[i], e->name);
        if (!present) {
            LP_INFO("adapter '%s' removed from %s", e->name, s->lora_dir);
            retire(s, e);
            changes++;
            break; /* the list changed under us; the next scan catches the rest */
        }
    }
    for (int i = 0; i < s->n_pend; i++)
        free(s->pend_names[i]);
    free(s->pend_names);
    free(s->pend_sigs);
    s->pend_names = pn;
    s->pend_sigs = ps;
    s->n_pend = npend;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n_seen; i++)
        free(seen[i]);
    free(seen);
    return changes;
}

void lp_store_collect(lp_store *s) {
    pthread_mutex_lock(&s->mu);
    reap(s, true);
    pthread_mutex_unlock(&s->mu);
}

int lp_store_acquire(lp_store *s, const char *name, int *slot, void **handle, lp_error *err) {
    pthread_mutex_lock(&s->mu);
    int rc = LP_ERR_BUSY;
    entry *e = find_live(s, name);
    if (!e) {
        rc = lp_error_set(err, LP_ERR_NOT_FOUND, "adapter '%s' does not exist", name);
        goto out;
    }
    if (e->slot >= 0) {
        s->st.hits[LP_TIER_DEVICE]++;
        goto pin;
    }
    if (!e->host) {
        if (e->loading)
            goto out;
        if (e->error[0]) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "adapter '%s' failed to load: %s", name, e->error);
            e->error[0] = '\0'; /* a later request retries (the files may have been fixed) */
            goto out;
        }
        /* start a host load if there is (or can be made) room */
        while (host_count(s) >= s->p.max_cpu_loras && evict_host_lru(s, true))
            ;
        if (host_count(s) >= s->p.max_cpu_loras || s->q_len == QUEUE_CAP)
            goto out;
        s->st.misses[LP_TIER_HOST]++;
        e->loading = true;
        s->queue[(s->q_head + s->q_len) % QUEUE_CAP] = e;
        s->q_len++;
        pthread_cond_signal(&s->cv);
        goto out;
    }
    /* host-resident: find a device slot, and room in the device budget,
     * displacing least recently used idle adapters */
    s->st.hits[LP_TIER_HOST]++;
    s->st.misses[LP_TIER_DEVICE]++;
    uint64_t need = lp_backend_adapter_bytes(s->be, e->host), cap = s->p.max_lora_bytes;
    if (cap && need > cap) {
        rc = lp_error_set(err, LP_ERR_NOMEM,
                          "adapter '%s' takes %.1f MiB in the device tier, more than the %.1f MiB all its "
                          "adapters may take together",
                          name, (double)need / 1048576.0, (double)cap / 1048576.0);
        goto out;
    }
    int free_slot = -1;
    for (;;) {
        free_slot = -1;
        for (int i = 0; i < s->p.max_loras && free_slot < 0; i++)
            if (!s->slots[i])
                free_slot = i;
        if (free_slot >= 0 && (!cap || s->dev_used + need <= cap))
            break;
        entry *victim = NULL;
        for (int i = 0; i < s->p.max_loras; i++) {
            entry *v = s->slots[i];
            if (v && v->pins == 0 && (!victim || v->last_use < victim->last_use))
                victim = v;
        }
        if (!victim)
            goto out; /* what is resident is pinned by running rows: wait */
        slot_release(s, victim);
        s->st.evictions[LP_TIER_DEVICE]++;
        if (victim->retired)
            reap(s, true);
    }
    if ((rc = lp_backend_adapter_load(s->be, free_slot, e->host, err)) != LP_OK)
        goto out;
    s->slots[free_slot] = e;
    e->slot = free_slot;
    e->dev_bytes = need;
    s->dev_used += need;
    s->st.loads[LP_TIER_DEVICE]++;
pin:
    e->pins++;
    e->requests++;
    e->last_use = wall_now();
    *slot = e->slot;
    *handle = e;
    rc = LP_OK;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t lp_store_handle_uid(const void *handle) { return ((const entry *)handle)->uid; }

void lp_store_release(lp_store *s, void *handle) {
    if (!handle)
        return;
    pthread_mutex_lock(&s->mu);
    entry *e = handle;
    e->pins--;
    e->last_use = wall_now();
    if (e->retired && e->pins == 0)
        reap(s, true);
    pthread_mutex_unlock(&s->mu);
}

int lp_store_list(lp_store *s, lp_adapter_status **out, int *n) {
    pthread_mutex_lock(&s->mu);
    int cnt = 0;
    for (entry *e = s->list; e; e = e->next)
        cnt += !e->retired;
    lp_adapter_status *v = calloc((size_t)(cnt ? cnt : 1), sizeof *v);
    int k = 0;
    for (entry *e = s->list; v && e; e = e->next) {
        if (e->retired)
            continue;
        lp_adapter_status *a = &v[k++];
        snprintf(a->name, sizeof a->name, "%s", e->name);
        snprintf(a->path, sizeof a->path, "%s", e->path);
        a->tier = e->slot >= 0 ? LP_TIER_DEVICE : e->host ? LP_TIER_HOST : LP_TIER_STORE;
        a->loading = e->loading;
        a->rank = e->host ? e->host->info.max_rank : 0;
        a->bytes = e->host ? e->host->info.bytes : 0;
        a->device_bytes = e->dev_bytes; /* 0 out of a slot */
        a->last_use = e->last_use;
        a->load_ms = e->load_ms;
        a->requests = e->requests;
        a->active = e->pins;
        snprintf(a->error, sizeof a->error, "%s", e->error);
    }
    pthread_mutex_unlock(&s->mu);
    *out = v;
    *n = v ? k : 0;
    return v ? LP_OK : LP_ERR_NOMEM;
}

void lp_store_get_stats(lp_store *s, lp_store_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->resident[LP_TIER_STORE] = st->resident[LP_TIER_HOST] = st->resident[LP_TIER_DEVICE] = 0;
    for (entry *e = s->list; e; e = e->next) {
        if (e->retired)
            continue;
        st->resident[LP_TIER_STORE]++;
        st->resident[LP_TIER_HOST] += e->host != NULL;
        st->resident[LP_TIER_DEVICE] += e->slot >= 0;
    }
    st->device_bytes = s->dev_used;
    pthread_mutex_unlock(&s->mu);
}

int lp_store_max_cpu_loras(const lp_store *s) { return s->p.max_cpu_loras; }
int lp_store_max_loras(const lp_store *s) { return s->p.max_loras; }
