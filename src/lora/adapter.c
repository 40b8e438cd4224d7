/* adapter.c - load a PEFT LoRA adapter directory, applying PEFT's rules for
 * target_modules, layers_to_transform, rank_pattern/alpha_pattern, rsLoRA and
 * DoRA, and refuse anything that would not fit the base model. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "format/safetensors.h"
#include "format/torch_pickle.h"
#include "lora/adapter-impl.h"
#include "util/log.h"
#include "util/util.h"

#define ADAPTER_CONFIG_MAX (1u << 20)

lp_adapter_params lp_adapter_default_params(void) {
    lp_adapter_params p = {.max_rank = 256};
    return p;
}

const char *lp_adapter_module_name(int m) {
    return m >= 0 && m < LP_MOD_COUNT ? lp__module_names[m] : "?";
}

float lp__load_f32(const void *p, lp_dtype t, int64_t i) {
    uint16_t h;
    float f;
    switch (t) {
    case LP_DTYPE_F32:
        memcpy(&f, (const uint8_t *)p + 4 * i, 4);
        return f;
    case LP_DTYPE_F16:
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        return lp__f16_to_f32(h);
    case LP_DTYPE_BF16:
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        return lp__bf16_to_f32(h);
    default:
        return 0.0f;
    }
}

/* ---- adapter_config.json ------------------------------------------------ */

typedef struct pattern_kv {
    char *pattern;
    double value;
    pcre2_code *re; /* (^|.*\.)(pattern)$, compiled once */
} pattern_kv;

#define MAX_PATTERNS 4096

typedef struct acfg {
    int r;
    double alpha;
    bool rslora, dora;
    /* target_modules: a list of names, or one regex (fullmatch) */
    char **targets;
    int n_targets;
    pcre2_code *target_re;
    bool all_linear;
    char **excludes;
    int n_excludes;
    pcre2_code *exclude_re;
    int *layers;       /* layers_to_transform, NULL = all */
    int n_layers;
    pattern_kv *rank_pat, *alpha_pat;
    int n_rank_pat, n_alpha_pat;
    char base_model[512];
} acfg;

static void acfg_free(acfg *c) {
    for (int i = 0; i < c->n_targets; i++)
        free(c->targets[i]);
    free(c->targets);
    for (int i = 0; i < c->n_excludes; i++)
        free(c->excludes[i]);
    free(c->excludes);
    pcre2_code_free(c->target_re);
    pcre2_code_free(c->exclude_re);
    free(c->layers);
    for (int i = 0; i < c->n_rank_pat; i++) {
        free(c->rank_pat[i].pattern);
        pcre2_code_free(c->rank_pat[i].re);
    }
    for (int i = 0; i < c->n_alpha_pat; i++) {
        free(c->alpha_pat[i].pattern);
        pcre2_code_free(c->alpha_pat[i].re);
    }
    free(c->rank_pat);
    free(c->alpha_pat);
}

static pcre2_code *compile_re(const char *pat, const char *field, lp_error *err) {
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: %s: bad regex at offset %zu: %s", field,
                     (size_t)off, (char *)msg);
    }
    return re;
}

/* Python re.fullmatch / re.match semantics on a short module key. */
static bool re_match(pcre2_code *re, const char *s, bool full) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!md || !mc) {
        pcre2_match_data_free(md);
        pcre2_match_context_free(mc);
        return false;
    }
    pcre2_set_match_limit(mc, 100000);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0,
                         PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0), md, mc);
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return rc >= 0;
}

static int read_str_list(json_t *v, const char *field, char ***out, int *n, pcre2_code **re,
                         lp_error *err) {
    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v))
        return LP_OK;
    if (json_is_string(v)) {
        *re = compile_re(json_string_value(v), field, err);
        return *re ? LP_OK : LP_ERR_FORMAT;
    }
    if (!json_is_array(v))
        return lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: %s must be a list of names or a regex string",
                            field);
    size_t cnt = json_array_size(v);
    *out = calloc(cnt ? cnt : 1, sizeof(char *));
    if (!*out)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e))
            return lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: %s[%zu] must be a string", field, i);
        if (!((*out)[i] = lp__strdup(json_string_value(e))))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        (*n)++;
    }
    return LP_OK;
}

static int read_patterns(json_t *v, const char *field, bool integer, pattern_kv **out, int *n,
                         lp_error *err) {
    *out = NULL;
    *n = 0;
    if (!v || json_is_null(v))
        return LP_OK;
    if (!json_is_object(v))
        return lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: %s must be an object", field);
    size_t cnt = json_object_size(v);
    if (cnt > MAX_PATTERNS)
        return lp_error_set(err, LP_ERR_LIMIT, "adapter_config.json: %s has %zu keys (at most %d)", field, cnt,
                            MAX_PATTERNS);
    *out = calloc(cnt ? cnt : 1, sizeof(pattern_kv));
    if (!*out)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e) {
        if (integer ? !json_is_integer(e) : !json_is_number(e))
            return lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: %s['%s'] must be %s", field, k,
                                integer ? "an integer" : "a number");
        double x = json_number_value(e);
        if (!(x > 0) || x > 1e9)
            return lp_error_set(err, LP_ERR_RANGE, "adapter_config.json: %s['%s'] = %g must be positive", field,
                                k, x);
        if (!((*out)[*n].pattern = lp__strdup(k)))
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        (*out)[*n].value = x;
        size_t len = strlen(k) + 16;
        char *full = malloc(len);
        if (!full)
            return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        snprintf(full, len, "(^|.*\\.)(%s)$", k);
        char what[160];
        snprintf(what, sizeof what, "%s key '%.100s'", field, k);
        (*out)[*n].re = compile_re(full, what, err);
        free(full);
        (*n)++;
        if (!(*out)[*n - 1].re)
            return LP_ERR_FORMAT;
    }
    return LP_OK;
}

/* Fields that change the math in ways this server does not implement. */
static int reject_unsupported(json_t *root, lp_error *err) {
    json_t *v;
    if ((v = json_object_get(root, "peft_type")) && json_is_string(v) && strcmp(json_string_value(v), "LORA"))
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "adapter_config.json: peft_type '%s' is not supported (only LORA)", json_string_value(v));
    if ((v = json_object_get(root, "bias")) && !(json_is_string(v) && !strcmp(json_string_value(v), "none")))
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "adapter_config.json: bias '%s' is not supported (only \"none\")",
                            json_is_string(v) ? json_string_value(v) : "(not a string)");
    if ((v = json_object_get(root, "modules_to_save")) && !json_is_null(v) &&
        !(json_is_array(v) && json_array_size(v) == 0))
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "adapter_config.json: modules_to_save is not supported: the adapter replaces whole "
                            "modules (e.g. lm_head), which a shared base cannot serve per request");
    static const char *k_truthy[] = {"lora_bias", "use_qalora", "use_bdlora"};
    for (size_t i = 0; i < LP_ARRAY_LEN(k_truthy); i++)
        if ((v = json_object_get(root, k_truthy[i])) && json_is_true(v))
            return lp_error_set(err, LP_ERR_UNSUPPORTED, "adapter_config.json: %s=true is not supported",
                                k_truthy[i]);
    static const char *k_nonnull[] = {"target_parameters", "layer_replication", "trainable_token_indices",
                                      "alora_invocation_tokens"};
    for (size_t i = 0; i < LP_ARRAY_LEN(k_nonnull); i++)
        if ((v = json_object_get(root, k_nonnull[i])) && !json_is_null(v) &&
            !(json_is_array(v) && json_array_size(v) == 0) && !(json_is_object(v) && json_object_size(v) == 0))
            return lp_error_set(err, LP_ERR_UNSUPPORTED, "adapter_config.json: %s is not supported", k_nonnull[i]);
    return LP_OK;
}

static int acfg_parse(const char *text, acfg *c, lp_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je), *v;
    int rc = LP_OK;
    if (!root)
        return lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: invalid JSON at line %d: %s", je.line, je.text);
    if (!json_is_object(root)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: top level must be an object");
        goto out;
    }
    if ((rc = reject_unsupported(root, err)))
        goto out;
    v = json_object_get(root, "r");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 65536) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: r must be a positive integer");
        goto out;
    }
    c->r = (int)json_integer_value(v);
    c->alpha = 8.0; /* PEFT's default */
    v = json_object_get(root, "lora_alpha");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || !(json_number_value(v) > 0) || json_number_value(v) > 1e9) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: lora_alpha must be a positive number");
            goto out;
        }
        c->alpha = json_number_value(v);
    }
    c->rslora = json_is_true(json_object_get(root, "use_rslora"));
    c->dora = json_is_true(json_object_get(root, "use_dora"));
    v = json_object_get(root, "target_modules");
    if (!v || json_is_null(v)) {
        rc = lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: target_modules is missing");
        goto out;
    }
    if (json_is_string(v) && !strcasecmp(json_string_value(v), "all-linear"))
        c->all_linear = true;
    else if ((rc = read_str_list(v, "target_modules", &c->targets, &c->n_targets, &c->target_re, err)))
        goto out;
    if ((rc = read_str_list(json_object_get(root, "exclude_modules"), "exclude_modules", &c->excludes,
                            &c->n_excludes, &c->exclude_re, err)))
        goto out;
    v = json_object_get(root, "layers_to_transform");
    if (v && !json_is_null(v)) {
        size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
        if (!json_is_array(v) && !json_is_integer(v)) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "adapter_config.json: layers_to_transform must be an integer or a list");
            goto out;
        }
        if (cnt > 0) {
            c->layers = calloc(cnt, sizeof(int));
            if (!c->layers) {
                rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
                goto out;
            }
            for (size_t i = 0; i < cnt; i++) {
                json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
                if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 1 << 20) {
                    rc = lp_error_set(err, LP_ERR_FORMAT,
                                      "adapter_config.json: layers_to_transform entries must be non-negative integers");
                    goto out;
                }
                c->layers[c->n_layers++] = (int)json_integer_value(e);
            }
        }
    }
    v = json_object_get(root, "layers_pattern");
    if (v && !json_is_null(v)) {
        const char *lp = json_is_string(v) ? json_string_value(v)
                         : (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
                             ? json_string_value(json_array_get(v, 0))
                             : NULL;
        if (!(json_is_array(v) && json_array_size(v) == 0) && (!lp || strcmp(lp, "layers"))) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                              "adapter_config.json: layers_pattern must be \"layers\" for this model family");
            goto out;
        }
    }
    if ((rc = read_patterns(json_object_get(root, "rank_pattern"), "rank_pattern", true, &c->rank_pat,
                            &c->n_rank_pat, err)) ||
        (rc = read_patterns(json_object_get(root, "alpha_pattern"), "alpha_pattern", false, &c->alpha_pat,
                            &c->n_alpha_pat, err)))
        goto out;
    v = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(v))
        snprintf(c->base_model, sizeof c->base_model, "%s", json_string_value(v));
    if ((v = json_object_get(root, "fan_in_fan_out")) && json_is_true(v))
        LP_WARN("adapter_config.json: fan_in_fan_out=true has no effect on Linear targets; ignored (as PEFT does)");
out:
    json_decref(root);
    return rc;
}

/* PEFT's get_pattern_key: the first pattern p with re.match(r"(^|.*\.)" p "$", key). */
static const pattern_kv *pattern_lookup(const pattern_kv *pats, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (re_match(pats[i].re, key, false))
            return &pats[i];
    return NULL;
}

static bool ends_with_dot(const char *key, const char *name) {
    size_t a = strlen(key), b = strlen(name);
    return a == b ? !strcmp(key, name) : a > b && key[a - b - 1] == '.' && !strcmp(key + a - b, name);
}

/* PEFT's check_target_module_exists for key "model.layers.L.<block>.<proj>". */
static bool is_target(const acfg *c, const char *key, int layer) {
    if (c->exclude_re && re_match(c->exclude_re, key, true))
        return false;
    for (int i = 0; i < c->n_excludes; i++)
        if (ends_with_dot(key, c->excludes[i]))
            return false;
    if (c->target_re)
        return re_match(c->target_re, key, true);
    for (int i = 0; i < c->n_targets; i++) /* PEFT: `key in target_modules` skips the layer filter */
        if (!strcmp(key, c->targets[i]))
            return true;
    bool found = c->all_linear;
    for (int i = 0; i < c->n_targets && !found; i++)
        found = ends_with_dot(key, c->targets[i]);
    if (found && c->layers) {
        found = false;
        for (int i = 0; i < c->n_layers; i++)
            found |= c->layers[i] == layer;
    }
    return found;
}

/* ---- tensors ------------------------------------------------------------ */

typedef enum { PART_A, PART_B, PART_MAG } tensor_part;

/* Parse "base_model.model.model.layers.L.<block>.<proj>.<part>"; false if the
 * name is not one of ours. */
static bool parse_name(const char *name, int *layer, int *mod, tensor_part *part) {
    static const char prefix[] = "base_model.model.model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1))
        return false;
    const char *p = name + sizeof prefix - 1;
    char *end;
    if (*p < '0' || *p > '9')
        return false;
    long l = strtol(p, &end, 10);
    if (*end != '.' || l < 0 || l > 1 << 20)
        return false;
    p = end + 1;
    int m = -1;
    for (int j = 0; j < LP_MOD_COUNT; j++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s.", j <= LP_MOD_O ? "self_attn" : "mlp", lp__module_names[j]);
        if (!strncmp(p, want, strlen(want))) {
            m = j;
            p += strlen(want);
            break;
        }
    }
    if (m < 0)
        return false;
    if (!strcmp(p, "lora_A.weight"))
        *part = PART_A;
    else if (!strcmp(p, "lora_B.weight"))
        *part = PART_B;
    else if (!strcmp(p, "lora_magnitude_vector") || !strcmp(p, "lora_magnitude_vector.weight"))
        *part = PART_MAG;
    else
        return false;
    *layer = (int)l;
    *mod = m;
    return true;
}

static int tensor_count(const lp_adapter *a) {
    return a->file_is_pt ? lp_pt_count(a->file) : lp_st_count(a->file);
}
static const lp_st_tensor *tensor_at(const lp_adapter *a, int i) {
    return a->file_is_pt ? lp_pt_at(a->file, i) : lp_st_at(a->file, i);
}

/* ||W_row + s * (B A)_row||_2 per output row; g = magnitude / norm. */
static int dora_precompute(const lp__weight *W, lp__lora_mod *md, lp_error *err) {
    int64_t rows = W->rows, cols = W->cols;
    md->dora_scale = lp__malloc_array((size_t)rows, sizeof(float));
    if (!md->dora_scale)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    size_t esz = lp_dtype_size(W->dtype);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t o = 0; o < rows; o++) {
        double ss = 0.0;
        const uint8_t *wrow = (const uint8_t *)W->data + (size_t)o * (size_t)cols * esz;
        for (int64_t i = 0; i < cols; i++) {
            float ba = 0.0f;
            for (int k = 0; k < md->rank; k++)
                ba += lp__load_f32(md->B.data, md->B.dtype, o * md->rank + k) *
                      lp__load_f32(md->A.data, md->A.dtype, (int64_t)k * cols + i);
            float w = lp__load_f32(wrow, W->dtype, i) + md->scaling * ba;
            ss += (double)w * w;
        }
        float norm = (float)sqrt(ss);
        float mag = lp__load_f32(md->magnitude, md->magnitude_dtype, o);
        md->dora_scale[o] = norm > 0 ? mag / norm : 0.0f;
    }
    return LP_OK;
}

static int load_tensors(lp_adapter *a, const acfg *c, const lp_model *model, const lp_adapter_params *P,
                        lp_error *err) {
    const lp_model_config *mc = model ? lp_model_get_config(model) : NULL;
    /* without a model the layer count comes from the tensors themselves */
    int n_layers = mc ? mc->n_layers : 0;
    if (!mc)
        for (int i = 0; i < tensor_count(a); i++) {
            int l, m;
            tensor_part part;
            if (parse_name(tensor_at(a, i)->name, &l, &m, &part) && l + 1 > n_layers) {
                if (l >= 1024) /* the same cap config.c puts on num_hidden_layers */
                    return lp_error_set(err, LP_ERR_RANGE, "tensor '%s': layer index %d is out of range (< 1024)",
                                        tensor_at(a, i)->name, l);
                n_layers = l + 1;
            }
        }
    a->n_layers = n_layers;
    a->mods = lp__calloc_array((size_t)(n_layers ? n_layers : 1) * LP_MOD_COUNT, sizeof(lp__lora_mod));
    const lp_st_tensor **parts = lp__calloc_array((size_t)(n_layers ? n_layers : 1) * LP_MOD_COUNT * 3,
                                                  sizeof(*parts));
    int rc = LP_OK;
    if (!a->mods || !parts) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < tensor_count(a); i++) {
        const lp_st_tensor *t = tensor_at(a, i);
        int l, m;
        tensor_part part;
        if (!parse_name(t->name, &l, &m, &part)) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                              "tensor '%s' is not a LoRA A/B or DoRA magnitude of a q/k/v/o/gate/up/down projection",
                              t->name);
            goto out;
        }
        if (l >= n_layers) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "tensor '%s': layer %d does not exist (the model has %d layers)",
                              t->name, l, n_layers);
            goto out;
        }
        if (t->dtype != LP_DTYPE_F32 && t->dtype != LP_DTYPE_F16 && t->dtype != LP_DTYPE_BF16) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported (F32, F16, BF16)",
                              t->name, lp_dtype_name(t->dtype));
            goto out;
        }
        const lp_st_tensor **slot = &parts[((size_t)l * LP_MOD_COUNT + (size_t)m) * 3 + part];
        if (*slot) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "tensor '%s' appears twice", t->name);
            goto out;
        }
        *slot = t;
    }
    for (int l = 0; l < n_layers; l++)
        for (int m = 0; m < LP_MOD_COUNT; m++) {
            const lp_st_tensor **tp = &parts[((size_t)l * LP_MOD_COUNT + (size_t)m) * 3];
            const lp_st_tensor *A = tp[PART_A], *B = tp[PART_B], *M = tp[PART_MAG];
            char key[128];
            snprintf(key, sizeof key, "model.layers.%d.%s.%s", l, m <= LP_MOD_O ? "self_attn" : "mlp",
                     lp__module_names[m]);
            if (!A && !B && !M)
                continue;
            if (!A || !B) {
                rc = lp_error_set(err, LP_ERR_FORMAT, "%s: %s%s%s", key, A ? "" : "lora_A.weight is missing",
                                  !A && !B ? " and " : "", B ? "" : "lora_B.weight is missing");
                goto out;
            }
            if (!is_target(c, key, l)) {
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  "%s: the file has LoRA tensors for it but adapter_config.json's target_modules / "
                                  "layers_to_transform do not select it", key);
                goto out;
            }
            if (A->ndim != 2 || B->ndim != 2) {
                rc = lp_error_set(err, LP_ERR_FORMAT, "%s: lora_A and lora_B must be 2-D", key);
                goto out;
            }
            int64_t r = A->shape[0];
            if (B->shape[1] != r) {
                rc = lp_error_set(err, LP_ERR_FORMAT, "%s: rank mismatch: lora_A has %lld rows, lora_B has %lld columns",
                                  key, (long long)r, (long long)B->shape[1]);
                goto out;
            }
            if (r < 1 || r > P->max_rank) {
                rc = lp_error_set(err, LP_ERR_LIMIT, "%s: rank %lld exceeds the maximum LoRA rank %d", key, (long long)r,
                                  P->max_rank);
                goto out;
            }
            const pattern_kv *rp = pattern_lookup(c->rank_pat, c->n_rank_pat, key);
            const pattern_kv *ap = pattern_lookup(c->alpha_pat, c->n_alpha_pat, key);
            int want_r = rp ? (int)rp->value : c->r;
            if (want_r > P->max_rank) {
                rc = lp_error_set(err, LP_ERR_LIMIT, "%s: rank %d (from adapter_config.json) exceeds the maximum LoRA rank %d",
                                  key, want_r, P->max_rank);
                goto out;
            }
            if (r != want_r) {
                rc = lp_error_set(err, LP_ERR_FORMAT,
                                  "%s: lora_A has rank %lld but adapter_config.json gives r=%d%s", key, (long long)r,
                                  want_r, rp ? " (rank_pattern)" : "");
                goto out;
            }
            if (mc) {
                int64_t rows, cols;
                lp__module_shape(mc, (lp__module)m, &rows, &cols);
                if (A->shape[1] != cols || B->shape[0] != rows) {
                    rc = lp_error_set(err, LP_ERR_FORMAT,
                                      "%s: lora_A is [%lld,%lld] and lora_B [%lld,%lld], but the base projection is "
                                      "[%lld,%lld] (out,in): the adapter was trained for another model",
                                      key, (long long)A->shape[0], (long long)A->shape[1], (long long)B->shape[0],
                                      (long long)B->shape[1], (long long)rows, (long long)cols);
                    goto out;
                }
            }
            if (c->dora != (M != NULL)) {
                rc = lp_error_set(err, LP_ERR_FORMAT, "%s: %s", key,
                                  c->dora ? "use_dora is set but lora_magnitude_vector is missing"
                                          : "lora_magnitude_vector present but use_dora is not set");
                goto out;
            }
            if (M && (M->ndim != 1 || M->shape[0] != B->shape[0])) {
                rc = lp_error_set(err, LP_ERR_FORMAT, "%s: lora_magnitude_vector must have %lld elements", key,
                                  (long long)B->shape[0]);
                goto out;
            }
            double alpha = ap ? ap->value : c->alpha;
            lp__lora_mod *md = &a->mods[(size_t)l * LP_MOD_COUNT + (size_t)m];
            md->rank = (int)r;
            md->scaling = (float)(c->rslora ? alpha / sqrt((double)r) : alpha / (double)r);
            md->A = (lp__weight){.data = A->data, .dtype = A->dtype, .rows = r, .cols = A->shape[1]};
            md->B = (lp__weight){.data = B->data, .dtype = B->dtype, .rows = B->shape[0], .cols = r};
            if (M) {
                md->magnitude = M->data;
                md->magnitude_dtype = M->dtype;
            }
            if (M && model && (rc = dora_precompute(&model->layers[l].proj[m], md, err)))
                goto out;
            a->info.n_modules++;
            a->info.targets |= 1u << m;
            a->info.n_params += (uint64_t)(A->nelem + B->nelem + (M ? M->nelem : 0));
            a->info.bytes += A->nbytes + B->nbytes + (M ? M->nbytes : 0);
            if (r > a->info.max_rank)
                a->info.max_rank = (int)r;
            if (!a->info.min_rank || r < a->info.min_rank)
                a->info.min_rank = (int)r;
        }
    if (a->info.n_modules == 0)
        rc = lp_error_set(err, LP_ERR_FORMAT, "the adapter holds no LoRA tensors");
out:
    free(parts);
    return rc;
}

int lp_adapter_load(const char *dir, const lp_model *model, const lp_adapter_params *params, lp_adapter **out,
                    lp_error *err) {
    *out = NULL;
    lp_adapter_params P = params ? *params : lp_adapter_default_params();
    lp_adapter *a = calloc(1, sizeof *a);
    acfg c;
    memset(&c, 0, sizeof c);
    char *cfg_path = lp__path_join(dir, "adapter_config.json");
    char *st_path = lp__path_join(dir, "adapter_model.safetensors");
    char *bin_path = lp__path_join(dir, "adapter_model.bin");
    char *text = NULL;
    int rc;
    if (!a || !cfg_path || !st_path || !bin_path || !(a->dir = lp__strdup(dir))) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!lp__is_dir(dir)) {
        rc = lp_error_set(err, LP_ERR_NOT_FOUND, "%s: not a directory", dir);
        goto fail;
    }
    if ((rc = lp__read_file(cfg_path, ADAPTER_CONFIG_MAX, &text, NULL, err)))
        goto fail;
    if ((rc = acfg_parse(text, &c, err)))
        goto fail_named;
    a->info.r = c.r;
    a->info.lora_alpha = (float)c.alpha;
    a->info.use_rslora = c.rslora;
    a->info.use_dora = c.dora;
    snprintf(a->info.base_model, sizeof a->info.base_model, "%s", c.base_model);
    if (c.r > P.max_rank) {
        rc = lp_error_set(err, LP_ERR_LIMIT, "adapter_config.json: r=%d exceeds the maximum LoRA rank %d", c.r,
                          P.max_rank);
        goto fail_named;
    }
    for (int i = 0; i < c.n_rank_pat; i++)
        if (c.rank_pat[i].value > P.max_rank) {
            rc = lp_error_set(err, LP_ERR_LIMIT, "adapter_config.json: rank_pattern['%s']=%g exceeds the maximum LoRA rank %d",
                              c.rank_pat[i].pattern, c.rank_pat[i].value, P.max_rank);
            goto fail_named;
        }
    if (lp__file_exists(st_path)) {
        lp_st_file *f = NULL;
        if ((rc = lp_st_open(st_path, LP_ST_COPY, &f, err)))
            goto fail;
        a->file = f;
        snprintf(a->info.format, sizeof a->info.format, "safetensors");
    } else if (lp__file_exists(bin_path)) {
        lp_pt_file *f = NULL;
        if ((rc = lp_pt_open(bin_path, &f, err)))
            goto fail;
        a->file = f;
        a->file_is_pt = true;
        snprintf(a->info.format, sizeof a->info.format, "bin");
    } else {
        rc = lp_error_set(err, LP_ERR_NOT_FOUND, "%s: neither adapter_model.safetensors nor adapter_model.bin exists", dir);
        goto fail;
    }
    if ((rc = load_tensors(a, &c, model, &P, err)))
        goto fail_named;
    a->model = model;
    acfg_free(&c);
    free(text);
    free(cfg_path);
    free(st_path);
    free(bin_path);
    *out = a;
    return LP_OK;
fail_named:
    lp_error_prefix(err, "%s", dir);
fail:
    acfg_free(&c);
    free(text);
    free(cfg_path);
    free(st_path);
    free(bin_path);
    lp_adapter_free(a);
    return rc;
}

void lp_adapter_free(lp_adapter *a) {
    if (!a)
        return;
    if (a->staged && a->staged_free)
        a->staged_free(a->staged);
    if (a->mods)
        for (size_t i = 0; i < (size_t)a->n_layers * LP_MOD_COUNT; i++)
            free(a->mods[i].dora_scale);
    free(a->mods);
    if (a->file_is_pt)
        lp_pt_close(a->file);
    else
        lp_st_close(a->file);
    free(a->dir);
    free(a);
}

const lp_adapter_info *lp_adapter_get_info(const lp_adapter *a) { return &a->info; }
const char *lp_adapter_dir(const lp_adapter *a) { return a->dir; }

int lp__adapter_config_check(const char *text, lp_error *err) {
    acfg c;
    int rc = acfg_parse(text, &c, err);
    if (rc == LP_OK) {
        /* exercise the matchers on every key shape too */
        for (int l = 0; l < 3; l++)
            for (int m = 0; m < LP_MOD_COUNT; m++) {
                char key[128];
                snprintf(key, sizeof key, "model.layers.%d.%s.%s", l, m <= LP_MOD_O ? "self_attn" : "mlp",
                         lp__module_names[m]);
                (void)is_target(&c, key, l);
                (void)pattern_lookup(c.rank_pat, c.n_rank_pat, key);
            }
    }
    acfg_free(&c);
    return rc;
}
