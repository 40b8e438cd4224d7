/* test_store.c - the adapter store's staging (lp_backend_adapter_stage), with
 * the CPU backend wrapped by a backend that stages (as the CUDA backend
 * does, which CI cannot run):
 *   - an adapter brought into the host tier on demand is staged by the
 *     loader thread, not the caller's, before any slot load sees it;
 *   - an adapter registered through the API is staged on the caller's thread;
 *   - evicting an adapter from the host tier frees its staged copy;
 *   - a staging failure is the adapter's load error, with the backend's
 *     message, and the store keeps working;
 *   - every staged copy is freed exactly once by the time the store is;
 *   - backend slots are unloaded only on the engine thread (the one calling
 *     acquire/release/collect): an adapter unregistered or evicted by another
 *     thread while in a slot keeps it until the engine thread's next call
 *     (on CUDA a foreign unload synchronized a stream the engine thread may
 *     be capturing into a graph).
 *   - the device tier's bytes budget (lp_store_params.max_lora_bytes): an
 *     adapter that does not fit displaces the least recently used idle ones,
 *     waits (LP_ERR_BUSY) while running rows pin what is there, and one larger
 *     than the whole budget is an error saying so.
 * usage: test_store MODELS_DIR */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "lora/adapter-impl.h"
#include "lora/store.h"
#include "loraplex/model.h"
#include "testlib.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_staged, g_freed, g_loads, g_loads_staged;
static pthread_t g_stage_thread;
static const char *g_fail; /* stage fails for adapters whose directory contains this */
static int g_unloads, g_unloads_foreign;
static pthread_t g_engine_thread;
static const lp_backend_ops *g_cpu;
static lp_backend_ops g_ops;

static void fake_free(void *p) {
    pthread_mutex_lock(&g_mu);
    g_freed++;
    pthread_mutex_unlock(&g_mu);
    free(p);
}

static int fake_stage(lp_backend *b, lp_adapter *a, lp_error *err) {
    pthread_mutex_lock(&g_mu);
    int rc = LP_OK;
    if (g_fail && strstr(a->dir, g_fail)) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: no pinned host memory (test)", a->dir);
    } else if (!a->staged) {
        a->staged = malloc(64);
        a->staged_by = b;
        a->staged_free = fake_free;
        g_staged++;
        g_stage_thread = pthread_self();
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static int fake_load(lp_backend *b, int slot, const lp_adapter *a, lp_error *err) {
    pthread_mutex_lock(&g_mu);
    g_loads++;
    g_loads_staged += a->staged != NULL && a->staged_by == b;
    pthread_mutex_unlock(&g_mu);
    return g_cpu->adapter_load(b, slot, a, err);
}

static void fake_unload(lp_backend *b, int slot) {
    pthread_mutex_lock(&g_mu);
    g_unloads++;
    g_unloads_foreign += !pthread_equal(pthread_self(), g_engine_thread);
    pthread_mutex_unlock(&g_mu);
    g_cpu->adapter_unload(b, slot);
}

typedef struct foreign_call {
    lp_store *s;
    const char *name, *path; /* path: register (replace), else unregister */
    int rc;
    lp_error err;
} foreign_call;

static void *foreign_main(void *arg) {
    foreign_call *c = arg;
    c->rc = c->path ? lp_store_register(c->s, c->name, c->path, true, true, &c->err)
                    : lp_store_unregister(c->s, c->name, &c->err);
    return NULL;
}

/* Register (path) or unregister `name` from a thread that is not the engine's. */
static int on_foreign_thread(lp_store *s, const char *name, const char *path, lp_error *err) {
    foreign_call c = {.s = s, .name = name, .path = path};
    pthread_t t;
    if (pthread_create(&t, NULL, foreign_main, &c) != 0)
        return lp_error_set(err, LP_ERR_INTERNAL, "pthread_create");
    pthread_join(t, NULL);
    *err = c.err;
    return c.rc;
}

/* Acquire `name`, waiting out LP_ERR_BUSY (the loader at work) for up to 20 s. */
static int acquire(lp_store *s, const char *name, void **h, lp_error *err) {
    int slot = -1, rc = LP_ERR_BUSY;
    for (int i = 0; i < 20000 && rc == LP_ERR_BUSY; i++) {
        rc = lp_store_acquire(s, name, &slot, h, err);
        if (rc == LP_ERR_BUSY)
            usleep(1000);
    }
    return rc;
}

/* A store over a plain CPU backend with the four demo adapters registered
 * (in the host tier at once) and a device budget of `budget` bytes. */
static lp_store *budget_store(const lp_model *m, lp_backend *be, const char *dir, uint64_t budget) {
    static const char *names[] = {"math", "sort", "reverse", "fortune-chat"};
    lp_store_params sp = {.max_cpu_loras = 4, .max_loras = 3, .max_lora_rank = 64, .max_lora_bytes = budget};
    lp_store *s = NULL;
    lp_error err = {0};
    CHECKF(lp_store_new(m, be, &sp, &s, &err) == LP_OK, "store: %s", err.msg);
    for (int i = 0; s && i < 4; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        CHECKF(lp_store_register(s, names[i], path, false, true, &err) == LP_OK, "register %s: %s", names[i],
               err.msg);
    }
    return s;
}

/* `name`'s status (zeros when the store has none by that name). */
static lp_adapter_status status_of(lp_store *s, const char *name) {
    lp_adapter_status *st = NULL, out;
    int n = 0;
    memset(&out, 0, sizeof out);
    if (lp_store_list(s, &st, &n) == LP_OK)
        for (int i = 0; i < n; i++)
            if (!strcmp(st[i].name, name))
                out = st[i];
    free(st);
    return out;
}

static uint64_t host_bytes(lp_store *s, const char *name) { return status_of(s, name).bytes; }

static int device_tier(lp_store *s, const char *name) { return status_of(s, name).tier == LP_TIER_DEVICE; }

static void check_device_budget(const lp_model *m, const char *dir) {
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 8;
    bp.max_adapters = 3;
    bp.max_lora_rank = 64;
    lp_backend *be = NULL;
    lp_error err = {0};
    CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
    if (!be)
        return;
    /* the sizes, from a store without a budget (the CPU backend's slot
     * takes an adapter's own bytes) */
    lp_store *s = budget_store(m, be, dir, 0);
    if (!s)
        return;
    uint64_t bm = host_bytes(s, "math"), bs = host_bytes(s, "sort"), br = host_bytes(s, "reverse"),
             bf = host_bytes(s, "fortune-chat");
    lp_store_free(s);
    CHECKF(bm && bs && br && br <= bm + bs && bf > bm + bs, "adapter sizes math %llu sort %llu reverse %llu "
           "fortune-chat %llu do not suit this test", (unsigned long long)bm, (unsigned long long)bs,
           (unsigned long long)br, (unsigned long long)bf);

    s = budget_store(m, be, dir, bm + bs);
    if (!s)
        return;
    int slot;
    void *hm = NULL, *hs = NULL, *hr = NULL;
    lp_store_stats st;
    CHECKF(lp_store_acquire(s, "math", &slot, &hm, &err) == LP_OK, "math: %s", err.msg);
    CHECKF(lp_store_acquire(s, "sort", &slot, &hs, &err) == LP_OK, "sort: %s", err.msg);
    lp_store_get_stats(s, &st);
    CHECKF(st.device_bytes == bm + bs && st.resident[LP_TIER_DEVICE] == 2, "device tier: %llu bytes, %d adapters",
           (unsigned long long)st.device_bytes, st.resident[LP_TIER_DEVICE]);
    /* a slot is free, but not the bytes, and both residents are pinned: wait */
    CHECK(lp_store_acquire(s, "reverse", &slot, &hr, &err) == LP_ERR_BUSY);
    CHECK(!device_tier(s, "reverse"));
    /* sort idle: reverse displaces it, math (pinned) stays */
    lp_store_release(s, hs);
    CHECKF(lp_store_acquire(s, "reverse", &slot, &hr, &err) == LP_OK, "reverse: %s", err.msg);
    lp_store_get_stats(s, &st);
    CHECKF(st.device_bytes == bm + br && device_tier(s, "math") && !device_tier(s, "sort") &&
               st.evictions[LP_TIER_DEVICE] == 1,
           "after reverse: %llu bytes (want %llu), math %d sort %d, %llu device evictions",
           (unsigned long long)st.device_bytes, (unsigned long long)(bm + br), device_tier(s, "math"),
           device_tier(s, "sort"), (unsigned long long)st.evictions[LP_TIER_DEVICE]);
    /* larger than the whole budget: an error that says so, not a wait */
    err.msg[0] = '\0';
    void *hf = NULL;
    int rc = lp_store_acquire(s, "fortune-chat", &slot, &hf, &err);
    CHECKF(rc == LP_ERR_NOMEM && strstr(err.msg, "fortune-chat") && strstr(err.msg, "more than"),
           "fortune-chat over the budget: rc %d, '%s'", rc, err.msg);
    lp_store_release(s, hm);
    lp_store_release(s, hr);
    lp_store_free(s);
    lp_backend_free(be);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
        return 2;
    }
    char path[4200], dir[4096];
    lp_error err = {0};
    lp_model *m = NULL;
    snprintf(path, sizeof path, "%s/tinylm", argv[1]);
    if (lp_model_load(path, &m, NULL, NULL, &err)) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return 1;
    }
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 8;
    bp.max_adapters = 1;
    bp.max_lora_rank = 64;
    lp_backend *be = NULL;
    CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
    g_cpu = be->ops;
    g_ops = *be->ops;
    g_ops.adapter_stage = fake_stage;
    g_ops.adapter_load = fake_load;
    g_ops.adapter_unload = fake_unload;
    g_engine_thread = pthread_self();
    be->ops = &g_ops;

    snprintf(dir, sizeof dir, "%s/tinylm-adapters", argv[1]);
    lp_store_params sp = {.lora_dir = dir, .max_cpu_loras = 2, .max_loras = 1, .max_lora_rank = 64};
    lp_store *s = NULL;
    CHECKF(lp_store_new(m, be, &sp, &s, &err) == LP_OK, "store: %s", err.msg);
    if (!s)
        return lp_test_finish("test_store");
    lp_store_scan(s); /* a directory is registered once two scans see it unchanged */
    CHECK(lp_store_scan(s) >= 5);
    pthread_t main_thread = pthread_self();

    /* on demand: staged by the loader thread before the slot load */
    void *h = NULL;
    CHECKF(acquire(s, "math", &h, &err) == LP_OK, "math: %s", err.msg);
    lp_store_release(s, h);
    CHECK(g_staged == 1 && !pthread_equal(g_stage_thread, main_thread));
    CHECKF(g_loads == 1 && g_loads_staged == 1, "slot loads %d, of staged adapters %d", g_loads, g_loads_staged);

    /* a second adapter takes the only slot; both stay in the host tier */
    CHECKF(acquire(s, "sort", &h, &err) == LP_OK, "sort: %s", err.msg);
    lp_store_release(s, h);
    CHECK(g_staged == 2 && g_freed == 0 && g_loads == 2 && g_loads_staged == 2);
    /* back to the first: only a slot load, no new staging */
    CHECKF(acquire(s, "math", &h, &err) == LP_OK, "math again: %s", err.msg);
    lp_store_release(s, h);
    CHECK(g_staged == 2 && g_loads == 3 && g_loads_staged == 3);

    /* a third evicts the least recently used from the host tier: its copy goes */
    CHECKF(acquire(s, "reverse", &h, &err) == LP_OK, "reverse: %s", err.msg);
    lp_store_release(s, h);
    CHECKF(g_staged == 3 && g_freed == 1, "staged %d, freed %d", g_staged, g_freed);

    /* a staging failure is the adapter's load error, with the reason */
    g_fail = "fortune-chat";
    err.msg[0] = '\0';
    int rc = acquire(s, "fortune-chat", &h, &err);
    CHECKF(rc != LP_OK && rc != LP_ERR_BUSY && strstr(err.msg, "fortune-chat") &&
               strstr(err.msg, "no pinned host memory (test)"),
           "staging failure: rc %d, message '%s'", rc, err.msg);
    g_fail = NULL;
    CHECKF(acquire(s, "fortune-chat", &h, &err) == LP_OK, "fortune-chat after the failure: %s", err.msg);
    lp_store_release(s, h);

    /* registered through the API: staged on the caller's thread */
    snprintf(path, sizeof path, "%s/math-bin", dir);
    int before = g_staged;
    CHECKF(lp_store_register(s, "extra", path, false, true, &err) == LP_OK, "register: %s", err.msg);
    CHECK(g_staged == before + 1 && pthread_equal(g_stage_thread, main_thread));
    CHECKF(acquire(s, "extra", &h, &err) == LP_OK, "extra: %s", err.msg);
    lp_store_release(s, h);

    /* slots change on the engine thread only. "extra" holds the slot: an
     * unregistration on another thread leaves it there ... */
    int unloads = g_unloads;
    CHECKF(on_foreign_thread(s, "extra", NULL, &err) == LP_OK, "unregister: %s", err.msg);
    CHECKF(g_unloads == unloads && g_unloads_foreign == 0, "unregister on another thread: %d unloads (%d there)",
           g_unloads - unloads, g_unloads_foreign);
    /* ... until the engine thread collects it */
    lp_store_collect(s);
    CHECKF(g_unloads == unloads + 1, "collect: %d unloads", g_unloads - unloads);
    /* a registration on another thread evicting from the host tier passes
     * over the adapter in the slot */
    CHECKF(acquire(s, "math", &h, &err) == LP_OK, "math: %s", err.msg);
    lp_store_release(s, h);
    snprintf(path, sizeof path, "%s/sort", dir);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "extra%d", i);
        CHECKF(on_foreign_thread(s, name, path, &err) == LP_OK, "register %s: %s", name, err.msg);
    }
    CHECKF(g_unloads_foreign == 0, "%d slot unloads on other threads", g_unloads_foreign);
    /* and "math" still answers from its slot */
    int loads = g_loads;
    CHECKF(acquire(s, "math", &h, &err) == LP_OK && g_loads == loads, "math from its slot: %s", err.msg);
    lp_store_release(s, h);

    lp_store_free(s);
    check_device_budget(m, dir);
    CHECKF(g_unloads_foreign == 0, "%d slot unloads on other threads", g_unloads_foreign);
    CHECKF(g_freed == g_staged, "staged %d copies, freed %d", g_staged, g_freed);
    printf("test_store: %d adapters staged, %d slot loads (all of staged adapters: %s), %d freed\n", g_staged,
           g_loads, g_loads == g_loads_staged ? "yes" : "no", g_freed);
    lp_backend_free(be);
    lp_model_free(m);
    return lp_test_finish("test_store");
}
