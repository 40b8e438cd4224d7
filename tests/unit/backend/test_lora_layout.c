/* test_lora_layout.c - the device layout of adapters (src/backend/lora_layout.c),
 * which the CUDA backend copies to the GPU as is, checked without a GPU:
 *   - on the llama fixture's adapters (fp32 files: DoRA, rsLoRA, some layers
 *     or modules only) and on synthetic bf16 and fp16 adapters: every piece
 *     has the module's rank, widths, scaling and dtype (fp32 files stay fp32,
 *     the others become bf16); offsets are aligned, in order and inside the
 *     buffer; A is the file's A, Bt is B transposed, element for element
 *     (bf16 rounded to nearest even); the DoRA scale is the adapter's;
 *   - every byte outside the pieces is zero, whatever the buffer held;
 *   - one OpenMP thread and several give the same bytes;
 *   - freeing an adapter frees a backend's staged copy once.
 * usage: test_lora_layout CONFORM_LLAMA_DIR */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/lora_layout.h"
#include "lora/adapter-impl.h"
#include "loraplex/model.h"
#include "model/synth.h"
#include "testlib.h"
#include "util/util.h"

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(LP_LORA_LAYOUT_ALIGN, (bytes + LP_LORA_LAYOUT_ALIGN - 1) / LP_LORA_LAYOUT_ALIGN *
                                                      LP_LORA_LAYOUT_ALIGN);
    if (!p)
        abort();
    return p;
}

/* Element i of w as the layout stores it, as raw bits. */
static uint32_t expect_bits(const lp__weight *w, int64_t i, bool f32) {
    float v = lp__load_f32(w->data, w->dtype, i);
    uint32_t u;
    if (f32) {
        memcpy(&u, &v, 4);
        return u;
    }
    return lp__f32_to_bf16(v);
}

static uint32_t got_bits(const char *p, int64_t i, bool f32) {
    if (f32) {
        uint32_t u;
        memcpy(&u, p + i * 4, 4);
        return u;
    }
    uint16_t h;
    memcpy(&h, p + i * 2, 2);
    return h;
}

static void check_adapter(const lp_adapter *a, const char *what, int want_dtype_f32) {
    lp_lora_layout L;
    lp_error err = {0};
    CHECKF(lp_lora_layout_plan(a, &L, &err) == LP_OK, "%s: plan: %s", what, err.msg);
    CHECK(L.n_layers == a->n_layers);
    CHECK(L.bytes > 0 && L.bytes % LP_LORA_LAYOUT_ALIGN == 0);
    char *buf = xalloc(L.bytes);
    memset(buf, 0xA5, L.bytes); /* whatever it held before */
    lp_lora_layout_fill(a, &L, buf);
    unsigned char *covered = calloc(L.bytes, 1);
    size_t end = 0, bad_elems = 0;
    int n_pieces = 0;
    bool any_dora = false;
    for (int l = 0; l < a->n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp__lora_mod *md = lp__adapter_mod(a, l, m);
            const lp_lora_piece *p = &L.piece[(size_t)l * LP_MOD_COUNT + m];
            CHECKF(p->rank == md->rank, "%s layer %d module %d: rank %d, want %d", what, l, m, p->rank, md->rank);
            if (!md->rank)
                continue;
            n_pieces++;
            bool f32 = md->A.dtype == LP_DTYPE_F32 || md->B.dtype == LP_DTYPE_F32;
            CHECK(p->f32 == f32);
            if (want_dtype_f32 >= 0)
                CHECKF(p->f32 == (want_dtype_f32 == 1), "%s: f32 %d", what, p->f32);
            CHECK(p->scaling == md->scaling && p->in == md->A.cols && p->out == md->B.rows);
            size_t es = f32 ? 4 : 2, an = (size_t)p->rank * (size_t)p->in, bn = (size_t)p->rank * (size_t)p->out;
            /* aligned, in order, inside the buffer */
            CHECK(p->a % LP_LORA_LAYOUT_ALIGN == 0 && p->bt % LP_LORA_LAYOUT_ALIGN == 0);
            CHECKF(p->a >= end && p->bt >= p->a + an * es, "%s layer %d module %d: overlapping pieces", what, l, m);
            end = p->bt + bn * es;
            if (md->dora_scale) {
                any_dora = true;
                CHECK(p->dora != LP_LORA_LAYOUT_NONE && p->dora % LP_LORA_LAYOUT_ALIGN == 0 && p->dora >= end);
                end = p->dora + (size_t)p->out * 4;
                CHECK(end <= L.bytes && !memcmp(buf + p->dora, md->dora_scale, (size_t)p->out * 4));
                memset(covered + p->dora, 1, (size_t)p->out * 4);
            } else {
                CHECK(p->dora == LP_LORA_LAYOUT_NONE);
            }
            CHECK(end <= L.bytes);
            if (end > L.bytes)
                continue;
            memset(covered + p->a, 1, an * es);
            memset(covered + p->bt, 1, bn * es);
            for (int64_t r = 0; r < p->rank; r++)
                for (int64_t k = 0; k < p->in; k++)
                    bad_elems += got_bits(buf + p->a, r * p->in + k, f32) != expect_bits(&md->A, r * p->in + k, f32);
            for (int64_t o = 0; o < p->out; o++) /* Bt[k][o] = B[o][k] */
                for (int64_t k = 0; k < p->rank; k++)
                    bad_elems += got_bits(buf + p->bt, k * p->out + o, f32) != expect_bits(&md->B, o * p->rank + k, f32);
        }
    CHECKF(bad_elems == 0, "%s: %zu elements differ from the adapter's", what, bad_elems);
    CHECKF(n_pieces > 0, "%s: no adapted module", what);
    CHECK(L.dora == any_dora);
    size_t dirty = 0;
    for (size_t i = 0; i < L.bytes; i++)
        dirty += !covered[i] && buf[i] != 0;
    CHECKF(dirty == 0, "%s: %zu padding bytes not zero", what, dirty);
    /* the same bytes from one thread */
    char *one = xalloc(L.bytes);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    lp_lora_layout_fill(a, &L, one);
    omp_set_num_threads(nt < 2 ? 2 : nt);
    CHECKF(!memcmp(one, buf, L.bytes), "%s: one thread and %d give different bytes", what, nt < 2 ? 2 : nt);
    omp_set_num_threads(nt);
    printf("%-28s %3d pieces, %8zu bytes%s%s\n", what, n_pieces, L.bytes, any_dora ? ", DoRA" : "",
           want_dtype_f32 == 0 ? ", bf16" : ", fp32");
    free(one);
    free(covered);
    free(buf);
    lp_lora_layout_free(&L);
}

static int g_freed;
static void count_free(void *p) {
    g_freed++;
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONFORM_LLAMA_DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    lp_error err = {0};
    lp_model *m = NULL;
    snprintf(path, sizeof path, "%s/base", argv[1]);
    if (lp_model_load(path, &m, NULL, NULL, &err)) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return 1;
    }
    static const char *tags[] = {"r8-all", "r4-qv", "r16-rslora-attn", "pattern-mlp", "layers-1", "dora-r8"};
    for (size_t i = 0; i < sizeof tags / sizeof *tags; i++) {
        snprintf(path, sizeof path, "%s/adapters/%s", argv[1], tags[i]);
        lp_adapter *a = NULL;
        CHECKF(lp_adapter_load(path, m, NULL, &a, &err) == LP_OK, "%s: %s", path, err.msg);
        if (a)
            check_adapter(a, tags[i], 1);
        lp_adapter_free(a);
    }
    /* bf16 files (copied, B transposed) and fp16 files (converted to bf16) */
    char tmp[] = "/tmp/lp-lora-layout-XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    static const lp_dtype dts[] = {LP_DTYPE_BF16, LP_DTYPE_F16};
    static const char *names[] = {"synth bf16 r16 all", "synth fp16 r8 q,v,down"};
    static const unsigned targets[] = {0x7f, (1u << 0) | (1u << 2) | (1u << 6)};
    static const int ranks[] = {16, 8};
    for (int i = 0; i < 2; i++) {
        lp_synth_adapter_params sp = {.rank = ranks[i], .alpha = 32, .targets = targets[i], .dtype = dts[i],
                                      .seed = 7 + (uint64_t)i};
        snprintf(path, sizeof path, "%s/a%d", tmp, i);
        CHECKF(lp_synth_adapter(m, &sp, path, &err) == LP_OK, "synth: %s", err.msg);
        lp_adapter *a = NULL;
        CHECKF(lp_adapter_load(path, m, NULL, &a, &err) == LP_OK, "%s: %s", path, err.msg);
        if (a)
            check_adapter(a, names[i], 0);
        /* a backend's staged copy goes with the adapter, once */
        if (a) {
            g_freed = 0;
            a->staged = malloc(16);
            a->staged_free = count_free;
            lp_adapter_free(a);
            CHECK(g_freed == 1);
        }
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    lp_model_free(m);
    return lp_test_finish("test_lora_layout");
}
