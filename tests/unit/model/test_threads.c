/* test_threads.c - a backend made with N threads, driven from another thread
 * whose OpenMP default differs (as the server's engine thread is), must use
 * N threads: its per-thread attention scratch is sized for N. Regression test
 * for a heap overflow the sanitizer build caught in `loraplex serve
 * --threads 1`. usage: test_threads MODELS_DIR */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/conform.h"
#include "testlib.h"

static lp_backend *g_be;
static int g_rc = -1;
static int32_t g_out[8];

static void *drive(void *arg) {
    omp_set_num_threads(4); /* this thread's default: more than the backend's */
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = (int32_t)(i * 31 % 2000);
    g_rc = conform_greedy(g_be, prompt, 40, -1, 8, g_out) == 8 ? 0 : -1;
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    char path[1024];
    snprintf(path, sizeof path, "%s/tinylm", argv[1]);
    lp_model *m = NULL;
    lp_error err = {0};
    CHECK(lp_model_load(path, &m, NULL, NULL, &err) == LP_OK);
    lp_backend_params bp = lp_backend_default_params();
    bp.n_kv_blocks = 8;
    bp.n_threads = 1;
    CHECK(lp_backend_cpu_new(m, &bp, &g_be, &err) == LP_OK);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, drive, NULL) == 0);
    pthread_join(t, NULL);
    CHECK(g_rc == 0);
    lp_backend_free(g_be);
    lp_model_free(m);
    return lp_test_finish("test_threads");
}
