/* test_tokenizer.c - golden test against HF tokenizers: for every entry of
 * reference-encodings.json (llama3, qwen3, llama2, tinylm) encode must give
 * the reference ids, decode the reference text, and the streaming
 * detokenizer the same text; plus special tokens, post-processing, a
 * random-ids streaming property check and an encode timing.
 * usage: test_tokenizer REFERENCE_JSON TOKENIZERS_DIR TINYLM_TOKENIZER_JSON */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loraplex/tokenizer.h"
#include "testlib.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool utf8_ok(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 64; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 64 ? " ..." : "");
}

/* Stream ids through a detokenizer; returns the concatenation (caller
 * frees) and checks every piece is whole UTF-8. */
static char *stream_decode(const lp_tokenizer *t, const int32_t *ids, size_t n,
                           bool skip, size_t *out_len) {
    lp_detok *d = lp_detok_new(t, skip);
    CHECK(d != NULL);
    if (!d)
        return NULL;
    size_t cap = 256, len = 0;
    char *acc = malloc(cap);
    lp_error err = {0};
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t plen = 0;
        int rc = i < n ? lp_detok_push(d, ids[i], &piece, &plen, &err)
                       : lp_detok_flush(d, &piece, &plen, &err);
        CHECKF(rc == LP_OK, "detok: %s", err.msg);
        if (rc != LP_OK)
            break;
        CHECKF(utf8_ok(piece, plen), "detok piece %zu is not whole UTF-8", i);
        CHECK(strlen(piece) == plen || memchr(piece, 0, plen) != NULL);
        while (len + plen + 1 > cap)
            cap *= 2;
        acc = realloc(acc, cap);
        memcpy(acc + len, piece, plen);
        len += plen;
        free(piece);
    }
    acc[len] = '\0';
    lp_detok_free(d);
    *out_len = len;
    return acc;
}

typedef struct model_case {
    const char *name;
    lp_tokenizer *tok;
} model_case;

static int run_reference(const char *name, const lp_tokenizer *t, const json_t *cases) {
    int passed = 0;
    size_t n_cases = json_array_size(cases);
    for (size_t i = 0; i < n_cases; i++) {
        const json_t *c = json_array_get(cases, i);
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t text_len = json_string_length(json_object_get(c, "text"));
        const char *want_dec = json_string_value(json_object_get(c, "decoded"));
        size_t want_dec_len = json_string_length(json_object_get(c, "decoded"));
        const json_t *jids = json_object_get(c, "ids");
        size_t n_want = json_array_size(jids);
        int32_t *want = calloc(n_want + 1, sizeof *want);
        for (size_t k = 0; k < n_want; k++)
            want[k] = (int32_t)json_integer_value(json_array_get(jids, k));

        int fails_before = lp_test_failures;
        lp_error err = {0};
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = lp_tokenizer_encode(t, text, text_len, false, &ids, &n, &err);
        CHECKF(rc == LP_OK, "%s[%zu]: encode: %s", name, i, err.msg);
        bool same = rc == LP_OK && n == n_want &&
                    (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
        CHECKF(same, "%s[%zu]: ids differ for %.60s", name, i, text);
        if (!same && rc == LP_OK) {
            print_ids("want", want, n_want);
            print_ids("got ", ids, n);
        }
        char *dec = NULL;
        size_t dec_len = 0;
        rc = lp_tokenizer_decode(t, want, n_want, false, &dec, &dec_len, &err);
        CHECKF(rc == LP_OK, "%s[%zu]: decode: %s", name, i, err.msg);
        bool dec_ok = rc == LP_OK && dec_len == want_dec_len &&
                      memcmp(dec, want_dec, dec_len) == 0;
        CHECKF(dec_ok, "%s[%zu]: decode gave '%s', want '%s'", name, i, dec ? dec : "",
               want_dec);
        size_t s_len = 0;
        char *streamed = stream_decode(t, want, n_want, false, &s_len);
        CHECKF(streamed && s_len == want_dec_len && memcmp(streamed, want_dec, s_len) == 0,
               "%s[%zu]: streamed '%s', want '%s'", name, i, streamed ? streamed : "",
               want_dec);
        if (lp_test_failures == fails_before)
            passed++;
        free(streamed);
        free(dec);
        free(ids);
        free(want);
    }
    printf("%s: %d/%zu reference cases pass\n", name, passed, n_cases);
    return passed;
}

/* Random id sequences: the streamed concatenation must equal decode(). */
static void random_stream_check(const char *name, const lp_tokenizer *t) {
    uint64_t rng = 0x1234567887654321ull;
    int32_t vocab = lp_tokenizer_vocab_size(t);
    int32_t ids[48];
    int bad = 0;
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + (size_t)(round % 48);
        for (size_t i = 0; i < n; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            /* bias towards low ids: bytes, single chars, specials */
            uint64_t r = rng % 4;
            ids[i] = r == 0 ? (int32_t)(rng % 300) : (int32_t)((rng >> 8) % (uint64_t)vocab);
        }
        for (int skip = 0; skip < 2; skip++) {
            char *dec = NULL;
            size_t dec_len = 0;
            lp_error err = {0};
            int rc = lp_tokenizer_decode(t, ids, n, skip, &dec, &dec_len, &err);
            CHECKF(rc == LP_OK, "%s: random decode: %s", name, err.msg);
            size_t s_len = 0;
            char *s = stream_decode(t, ids, n, skip, &s_len);
            if (!(rc == LP_OK && s && s_len == dec_len && memcmp(s, dec, s_len) == 0))
                bad++;
            CHECKF(rc != LP_OK || utf8_ok(dec, dec_len), "%s: decode output not UTF-8", name);
            free(s);
            free(dec);
        }
    }
    CHECKF(bad == 0, "%s: %d random sequences stream differently from decode", name, bad);
}

static void check_encode(const lp_tokenizer *t, const char *text, bool add_special,
                         const int32_t *want, size_t n_want, const char *what) {
    int32_t *ids = NULL;
    size_t n = 0;
    lp_error err = {0};
    int rc = lp_tokenizer_encode(t, text, strlen(text), add_special, &ids, &n, &err);
    CHECKF(rc == LP_OK, "%s: %s", what, err.msg);
    bool same = rc == LP_OK && n == n_want && memcmp(ids, want, n * sizeof *ids) == 0;
    CHECKF(same, "%s: ids differ", what);
    if (!same && rc == LP_OK) {
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
    }
    free(ids);
}

static void check_decode(const lp_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                         const char *want, const char *what) {
    char *dec = NULL;
    size_t len = 0;
    lp_error err = {0};
    int rc = lp_tokenizer_decode(t, ids, n, skip, &dec, &len, &err);
    CHECKF(rc == LP_OK && strcmp(dec, want) == 0, "%s: got '%s' want '%s' (%s)", what,
           dec ? dec : "", want, err.msg);
    size_t s_len;
    char *s = stream_decode(t, ids, n, skip, &s_len);
    CHECKF(s && strcmp(s, want) == 0, "%s (streamed): got '%s' want '%s'", what, s ? s : "",
           want);
    free(s);
    free(dec);
}

static void llama3_specials(const char *path, const lp_tokenizer *t) {
    int32_t hello[8];
    size_t nh = 0;
    {
        int32_t *ids = NULL;
        lp_error err = {0};
        CHECK(lp_tokenizer_encode(t, "hello", 5, false, &ids, &nh, &err) == LP_OK);
        CHECK(nh == 1);
        memcpy(hello, ids, nh * sizeof *ids);
        free(ids);
    }
    CHECK(lp_tokenizer_find(t, "<|begin_of_text|>") == 128000);
    CHECK(lp_tokenizer_find(t, "<|eot_id|>") == 128009);
    CHECK(lp_tokenizer_is_special(t, 128000));
    CHECK(!lp_tokenizer_is_special(t, hello[0]));
    CHECK(lp_tokenizer_vocab_size(t) == 128256);
    CHECK(strcmp(lp_tokenizer_token(t, 128000), "<|begin_of_text|>") == 0);
    CHECK(lp_tokenizer_token(t, 128256) == NULL && lp_tokenizer_token(t, -1) == NULL);

    /* this tokenizer.json's post_processor is ByteLevel only: HF adds no BOS */
    check_encode(t, "hello", true, hello, 1, "llama3 add_special (file post_processor)");

    /* with add_bos_token (as transformers applies it) BOS 128000 comes first */
    lp_tokenizer_params p = lp_tokenizer_default_params();
    p.add_bos = 1;
    p.bos_token = "<|begin_of_text|>";
    lp_tokenizer *tb = NULL;
    lp_error err = {0};
    int rc = lp_tokenizer_load_ex(path, &p, &tb, &err);
    CHECKF(rc == LP_OK, "llama3 with add_bos: %s", err.msg);
    if (rc == LP_OK) {
        int32_t want[2] = {128000, hello[0]};
        check_encode(tb, "hello", true, want, 2, "llama3 add_special with add_bos");
        check_encode(tb, "hello", false, hello, 1, "llama3 add_bos but add_special=false");
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lp_tokenizer_encode(tb, "", 0, true, &ids, &n, &err) == LP_OK && n == 1 &&
              ids[0] == 128000);
        free(ids);
        lp_tokenizer_free(tb);
    }
    p.bos_token = "<|no_such_token|>";
    CHECK(lp_tokenizer_load_ex(path, &p, &tb, &err) == LP_ERR_INVALID &&
          strstr(err.msg, "bos_token") != NULL);

    /* special tokens in text are recognised; skip_special drops them */
    int32_t seq[3] = {128000, hello[0], 128009};
    check_encode(t, "<|begin_of_text|>hello<|eot_id|>", false, seq, 3, "llama3 specials");
    check_decode(t, seq, 3, true, "hello", "llama3 skip_special");
    check_decode(t, seq, 3, false, "<|begin_of_text|>hello<|eot_id|>", "llama3 keep special");
}

static void qwen3_specials(const lp_tokenizer *t) {
    int32_t *ids = NULL;
    size_t n = 0;
    lp_error err = {0};
    const char *text = "<|im_start|>user\nhi<|im_end|>";
    CHECK(lp_tokenizer_encode(t, text, strlen(text), true, &ids, &n, &err) == LP_OK);
    CHECK(n == 5 && ids[0] == 151644 && ids[4] == 151645); /* no BOS for Qwen */
    if (n == 5) {
        check_decode(t, ids, n, true, "user\nhi", "qwen3 skip_special");
        check_decode(t, ids, n, false, text, "qwen3 keep special");
    }
    free(ids);
    /* <think> is an added token that is not special: kept by skip_special */
    int32_t think = lp_tokenizer_find(t, "<think>");
    CHECK(think > 0 && !lp_tokenizer_is_special(t, think));
    if (think > 0)
        check_decode(t, &think, 1, true, "<think>", "qwen3 non-special added token");
}

static void llama2_specials(const lp_tokenizer *t) {
    int32_t *ids = NULL, *plain = NULL;
    size_t n = 0, np = 0;
    lp_error err = {0};
    CHECK(lp_tokenizer_encode(t, "Hello world", 11, true, &ids, &n, &err) == LP_OK);
    CHECK(lp_tokenizer_encode(t, "Hello world", 11, false, &plain, &np, &err) == LP_OK);
    CHECK(n == np + 1 && ids[0] == 1 && memcmp(ids + 1, plain, np * sizeof *ids) == 0);
    if (n == np + 1)
        check_decode(t, ids, n, true, "Hello world", "llama2 skip <s>");
    /* byte fallback: an invalid byte run decodes to one U+FFFD per byte */
    int32_t e2 = lp_tokenizer_find(t, "<0xE2>"), x82 = lp_tokenizer_find(t, "<0x82>");
    int32_t a = lp_tokenizer_find(t, "a"), ac = lp_tokenizer_find(t, "<0xAC>");
    CHECK(e2 > 0 && x82 > 0 && a > 0 && ac > 0);
    int32_t bad[3] = {e2, x82, a};
    check_decode(t, bad, 3, false, "\xEF\xBF\xBD\xEF\xBF\xBD" "a", "llama2 invalid bytes");
    int32_t euro[4] = {a, e2, x82, ac};
    check_decode(t, euro, 4, false, "a\xE2\x82\xAC", "llama2 byte run");
    free(ids);
    free(plain);
}

static void timing(const char *name, const lp_tokenizer *t) {
    /* a ~1000-token English/code prompt */
    const char *unit = "The quick brown fox jumps over the lazy dog; def f(x): return x**2 "
                       "# 12345, naïve café. ";
    size_t ul = strlen(unit), reps = 50;
    char *text = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(text + i * ul, unit, ul);
    text[ul * reps] = '\0';
    double best = 1e9;
    size_t n = 0;
    for (int it = 0; it < 5; it++) {
        int32_t *ids = NULL;
        lp_error err = {0};
        double t0 = now_s();
        int rc = lp_tokenizer_encode(t, text, ul * reps, false, &ids, &n, &err);
        double dt = now_s() - t0;
        CHECK(rc == LP_OK);
        if (dt < best)
            best = dt;
        free(ids);
    }
    printf("%s: encode of %zu bytes -> %zu tokens in %.2f ms\n", name, ul * reps, n,
           best * 1e3);
    /* generous bound: sanitizer builds are several times slower */
    CHECKF(best < 0.25, "%s: encode took %.1f ms", name, best * 1e3);
    free(text);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s REFERENCE_JSON TOKENIZERS_DIR TINYLM_TOKENIZER_JSON\n",
                argv[0]);
        return 2;
    }
    json_error_t jerr;
    json_t *ref = json_load_file(argv[1], 0, &jerr);
    CHECKF(ref != NULL, "%s: %s", argv[1], jerr.text);
    if (!ref)
        return lp_test_finish("test_tokenizer");
    const char *names[4] = {"llama3", "qwen3", "llama2", "tinylm"};
    for (int m = 0; m < 4; m++) {
        char path[4096];
        if (m < 3)
            snprintf(path, sizeof path, "%s/%s/tokenizer.json", argv[2], names[m]);
        else
            snprintf(path, sizeof path, "%s", argv[3]);
        lp_tokenizer *t = NULL;
        lp_error err = {0};
        double t0 = now_s();
        int rc = lp_tokenizer_load(path, &t, &err);
        CHECKF(rc == LP_OK, "%s: load: %s", names[m], err.msg);
        if (rc != LP_OK)
            continue;
        printf("%s: loaded in %.0f ms, %d ids\n", names[m], (now_s() - t0) * 1e3,
               lp_tokenizer_vocab_size(t));
        const json_t *cases = json_object_get(ref, names[m]);
        CHECKF(json_array_size(cases) > 0, "%s: no reference cases", names[m]);
        run_reference(names[m], t, cases);
        random_stream_check(names[m], t);
        if (m == 0)
            llama3_specials(path, t);
        if (m == 1)
            qwen3_specials(t);
        if (m == 2)
            llama2_specials(t);
        timing(names[m], t);
        lp_tokenizer_free(t);
    }
    json_decref(ref);
    return lp_test_finish("test_tokenizer");
}
