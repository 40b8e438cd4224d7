/* test_model_load.c - bad model directories get clear errors naming the
 * field or tensor (bad-inputs 1-5, 11 as they concern base models); config
 * spellings (rope_parameters vs rope_theta + rope_scaling, eos as int or
 * list); synthetic models of every family load and generate.
 * usage: test_model_load MODELS_DIR LORAPLEX_BINARY */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "format/safetensors.h"
#include "loraplex/model.h"
#include "model/conform.h"
#include "model/synth.h"
#include "testlib.h"
#include "util/util.h"

static char g_tmp[64];
static const char *g_models;

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0)
        fprintf(stderr, "command failed: %s\n", cmd);
}

/* Copy the tinylm model to a fresh dir and return its path. */
static const char *fresh_copy(const char *models, const char *name) {
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
    char src[1024];
    snprintf(src, sizeof src, "%s/tinylm", models);
    sh("cp -r '%s' '%s'", src, dir);
    return dir;
}

static void write_text(const char *dir, const char *file, const char *text) {
    char *p = lp__path_join(dir, file);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(p);
}

/* Replace "from" by "to" in dir/config.json. */
static void edit_config(const char *dir, const char *from, const char *to) {
    char *p = lp__path_join(dir, "config.json");
    char *text = NULL;
    size_t len;
    if (lp__read_file(p, 1 << 20, &text, &len, NULL) == LP_OK) {
        char *at = strstr(text, from);
        CHECKF(at != NULL, "config.json has no '%s'", from);
        if (at) {
            size_t out_len = len - strlen(from) + strlen(to) + 1;
            char *out = malloc(out_len);
            snprintf(out, out_len, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
            write_text(dir, "config.json", out);
            free(out);
        }
    }
    free(text);
    free(p);
}

static void expect_fail(const char *dir, const char *needle, const char *what) {
    lp_model *m = NULL;
    lp_error err = {0};
    int rc = lp_model_load(dir, &m, NULL, NULL, &err);
    CHECKF(rc != LP_OK && m == NULL, "%s: loaded but should fail", what);
    CHECKF(rc == LP_OK || strstr(err.msg, needle), "%s: message '%s' does not name '%s'", what, err.msg, needle);
    if (getenv("LP_TEST_VERBOSE"))
        printf("%-34s -> %s\n", what, err.msg);
    lp_model_free(m);
}

static void config_cases(const char *models) {
    struct {
        const char *name, *from, *to, *needle;
    } cases[] = {
        {"unsupported architecture", "LlamaForCausalLM", "GPT2LMHeadModel", "GPT2LMHeadModel"},
        {"missing hidden_size", "\"hidden_size\"", "\"hidden_sizeX\"", "hidden_size"},
        {"hidden_size wrong type", "\"hidden_size\": 256", "\"hidden_size\": \"256\"", "hidden_size"},
        {"negative layers", "\"num_hidden_layers\": 6", "\"num_hidden_layers\": -6", "num_hidden_layers"},
        {"heads not multiple of kv", "\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", "num_key_value_heads"},
        {"unknown rope type", "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"", "yarn"},
        {"llama3 rope missing factor", "\"rope_type\": \"default\"", "\"rope_type\": \"llama3\"", "factor"},
        {"activation", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "gelu"},
        {"eos out of range", "\"eos_token_id\": 2047", "\"eos_token_id\": 99999", "eos_token_id"},
        {"wrong vocab (shape)", "\"vocab_size\": 2048", "\"vocab_size\": 4096", "embed_tokens"},
        {"wrong ffn (shape)", "\"intermediate_size\": 704", "\"intermediate_size\": 700", "gate_proj"},
        {"too many layers (missing tensor)", "\"num_hidden_layers\": 6", "\"num_hidden_layers\": 7", "layers.6"},
        {"quantized", "\"use_cache\": true", "\"use_cache\": true, \"quantization_config\": {}", "quantization_config"},
        {"duplicate key", "\"use_cache\": true", "\"use_cache\": true, \"use_cache\": true", "config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "cfg%zu", i);
        const char *dir = fresh_copy(models, name);
        edit_config(dir, cases[i].from, cases[i].to);
        expect_fail(dir, cases[i].needle, cases[i].name);
    }
    const char *dir = fresh_copy(models, "notjson");
    write_text(dir, "config.json", "{\"architectures\": [");
    expect_fail(dir, "config.json", "config not JSON");
    dir = fresh_copy(models, "noconfig");
    sh("rm '%s/config.json'%s", dir, "");
    expect_fail(dir, "config.json", "config missing");
    dir = fresh_copy(models, "noweights");
    sh("rm '%s/model.safetensors'%s", dir, "");
    expect_fail(dir, "model.safetensors", "weights missing");
    dir = fresh_copy(models, "truncweights");
    sh("truncate -s 100000 '%s/model.safetensors'%s", dir, "");
    expect_fail(dir, "model.safetensors", "weights truncated");
    dir = fresh_copy(models, "badtok");
    write_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
    expect_fail(dir, "tokenizer", "tokenizer unsupported");
    expect_fail("/nonexistent/model", "config.json", "no such directory");
}

static void spelling_cases(void) {
    lp_model_config c;
    lp_error err = {0};
    const char *base = "{\"architectures\":[\"LlamaForCausalLM\"],\"num_hidden_layers\":2,\"hidden_size\":64,"
                       "\"num_attention_heads\":4,\"intermediate_size\":128,\"vocab_size\":100,";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\"rope_theta\":500000.0,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
             "\"eos_token_id\":[1,2]}", base);
    CHECK(lp_model_config_parse(buf, "{\"eos_token_id\": 3}", &c, &err) == LP_OK);
    CHECK(c.rope_type == LP_ROPE_LLAMA3 && c.rope_theta == 500000.0f && c.rope_factor == 8.0f &&
          c.rope_orig_max_pos == 8192);
    CHECK(c.n_eos == 3 && c.eos_ids[0] == 1 && c.eos_ids[2] == 3);
    CHECK(c.head_dim == 16 && c.n_kv_heads == 4);
    snprintf(buf, sizeof buf, "%s\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}", base);
    CHECK(lp_model_config_parse(buf, NULL, &c, &err) == LP_OK);
    CHECK(c.rope_type == LP_ROPE_LINEAR && c.rope_factor == 2.0f && c.rope_theta == 10000.0f);
    snprintf(buf, sizeof buf, "%s\"rope_parameters\":{\"rope_theta\":1e6,\"rope_type\":\"default\"}}", base);
    CHECK(lp_model_config_parse(buf, NULL, &c, &err) == LP_OK && c.rope_theta == 1e6f);
    const char *q3 = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"num_hidden_layers\":2,\"hidden_size\":64,"
                     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,\"intermediate_size\":128,"
                     "\"vocab_size\":100,\"tie_word_embeddings\":true}";
    CHECK(lp_model_config_parse(q3, NULL, &c, &err) == LP_OK);
    CHECK(c.arch == LP_ARCH_QWEN3 && c.qk_norm && c.head_dim == 32 && c.tie_embeddings && !c.qkv_bias);
    const char *mi = "{\"architectures\":[\"MistralForCausalLM\"],\"num_hidden_layers\":2,\"hidden_size\":64,"
                     "\"num_attention_heads\":4,\"intermediate_size\":128,\"vocab_size\":100,\"sliding_window\":4096}";
    CHECK(lp_model_config_parse(mi, NULL, &c, &err) == LP_OK);
    CHECK(c.arch == LP_ARCH_MISTRAL && c.sliding_window == 4096);
}

/* synth each family, load it, run a forward and a short greedy decode */
static void synth_cases(void) {
    static const lp_arch archs[] = {LP_ARCH_LLAMA, LP_ARCH_MISTRAL, LP_ARCH_QWEN2, LP_ARCH_QWEN3};
    static const lp_dtype dts[] = {LP_DTYPE_BF16, LP_DTYPE_F16, LP_DTYPE_F32, LP_DTYPE_BF16};
    for (int i = 0; i < 4; i++) {
        lp_synth_params p;
        lp_error err = {0};
        CHECK(lp_synth_preset("tiny", &p, &err) == LP_OK);
        p.arch = archs[i];
        p.dtype = dts[i];
        p.n_layers = 2;
        p.vocab = 300;
        p.tie_embeddings = i == 2;
        char dir[128];
        snprintf(dir, sizeof dir, "%s/synth%d", g_tmp, i);
        CHECKF(lp_synth_model(&p, dir, NULL, &err) == LP_OK, "synth %d: %s", i, err.msg);
        lp_model *m = NULL;
        CHECKF(lp_model_load(dir, &m, NULL, NULL, &err) == LP_OK, "synth %d load: %s", i, err.msg);
        if (!m)
            continue;
        CHECK(lp_model_get_config(m)->arch == archs[i]);
        lp_backend_params bp = lp_backend_default_params();
        bp.n_kv_blocks = 8;
        lp_backend *be = NULL;
        CHECK(lp_backend_cpu_new(m, &bp, &be, &err) == LP_OK);
        int32_t prompt[5] = {1, 2, 3, 4, 5}, out[8];
        CHECK(be && conform_greedy(be, prompt, 5, -1, 8, out) == 8);
        if (be) { /* a slot below -1 is an error, not the base model */
            int32_t blocks[1] = {0};
            float *lg = malloc(sizeof(float) * 300);
            lp_batch_row row = {.tokens = prompt, .n_tokens = 1, .pos0 = 0, .blocks = blocks, .adapter = -2,
                                .adapter_scale = 1.0f, .logits = LP_LOGITS_LAST};
            CHECK(lp_backend_forward(be, &row, 1, lg, &err) == LP_ERR_INVALID && strstr(err.msg, "slot -2"));
            free(lg);
        }
        lp_backend_free(be);
        lp_model_free(m);
    }
    lp_synth_params p;
    lp_error err = {0};
    CHECK(lp_synth_preset("tiny", &p, &err) == LP_OK);
    p.n_layers = 2;
    p.vocab = 300;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sharded", g_tmp);
    CHECK(lp_synth_model(&p, dir, NULL, &err) == LP_OK);
    /* bad-inputs 11: a tokenizer with more ids than the model's vocab */
    char models_tok[1024];
    snprintf(models_tok, sizeof models_tok, "%s/tinylm", g_models);
    snprintf(dir, sizeof dir, "%s/smallvocab", g_tmp);
    p.vocab = 1000;
    CHECK(lp_synth_model(&p, dir, models_tok, &err) == LP_OK);
    expect_fail(dir, "tokenizer.json has 2048 ids", "tokenizer larger than vocab");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/lp-model-load-XXXXXX");
    if (!mkdtemp(g_tmp))
        return 1;
    g_models = argv[1];
    config_cases(argv[1]);
    spelling_cases();
    synth_cases();
    sh("rm -rf '%s'%s", g_tmp, "");
    return lp_test_finish("test_model_load");
}
