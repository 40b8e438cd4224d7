/* test_tokenizer_small.c - pipeline semantics on small hand-written
 * tokenizer.json files (byte fallback, lossy ByteLevel decoding, Metaspace,
 * Split behaviours, added-token options, post-processors), and bad inputs:
 * malformed files must be rejected with a message naming the field, a
 * pathological regex must fail or finish fast, invalid UTF-8 is an error. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loraplex/tokenizer.h"
#include "testlib.h"

/* ---- helpers ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)need + 1 > b->cap) {
        b->cap = (b->n + (size_t)need + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

/* UTF-8 of the GPT-2 byte-level character for byte b. */
static const char *bl(unsigned b) {
    static char tab[256][4];
    static int ready;
    if (!ready) {
        unsigned extra = 0;
        for (unsigned c = 0; c < 256; c++) {
            int keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
            unsigned cp = keep ? c : 256 + extra++;
            if (cp < 0x80) {
                tab[c][0] = (char)cp;
            } else {
                tab[c][0] = (char)(0xC0 | (cp >> 6));
                tab[c][1] = (char)(0x80 | (cp & 0x3F));
            }
        }
        ready = 1;
    }
    return tab[b];
}

static lp_tokenizer *load(const char *json, lp_error *err) {
    lp_tokenizer *t = NULL;
    int rc = lp_tokenizer_load_buffer(json, strlen(json), &t, err);
    CHECKF(rc == LP_OK, "load: %s", err->msg);
    return t;
}

static void expect_ids(const lp_tokenizer *t, const char *text, bool special,
                       const int32_t *want, size_t n_want, const char *what) {
    int32_t *ids = NULL;
    size_t n = 0;
    lp_error err = {0};
    int rc = lp_tokenizer_encode(t, text, strlen(text), special, &ids, &n, &err);
    bool ok = rc == LP_OK && n == n_want && (n == 0 || memcmp(ids, want, n * 4) == 0);
    CHECKF(ok, "%s: encode('%s') wrong (%s)", what, text, rc ? err.msg : "");
    if (!ok && rc == LP_OK) {
        fprintf(stderr, "  got:");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n  want:");
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
}

/* decode and the streaming detokenizer must both give want */
static void expect_text(const lp_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                        const char *want, const char *what) {
    char *s = NULL;
    size_t len = 0;
    lp_error err = {0};
    int rc = lp_tokenizer_decode(t, ids, n, skip, &s, &len, &err);
    CHECKF(rc == LP_OK && len == strlen(want) && memcmp(s, want, len) == 0,
           "%s: decode gave '%s' want '%s' %s", what, s ? s : "", want, err.msg);
    free(s);
    lp_detok *d = lp_detok_new(t, skip);
    sbuf acc = {0};
    sb_printf(&acc, "%s", "");
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t plen = 0;
        rc = i < n ? lp_detok_push(d, ids[i], &piece, &plen, &err)
                   : lp_detok_flush(d, &piece, &plen, &err);
        CHECKF(rc == LP_OK, "%s: detok: %s", what, err.msg);
        if (rc == LP_OK)
            sb_printf(&acc, "%s", piece);
        free(piece);
    }
    CHECKF(strcmp(acc.p, want) == 0, "%s: streamed '%s' want '%s'", what, acc.p, want);
    free(acc.p);
    lp_detok_free(d);
}

/* loading must fail with `code` and a message containing each needle */
static void expect_reject(const char *json, int code, const char *needle1,
                          const char *needle2, const char *what) {
    lp_tokenizer *t = NULL;
    lp_error err = {0};
    int rc = lp_tokenizer_load_buffer(json, strlen(json), &t, &err);
    CHECKF(rc != LP_OK && t == NULL, "%s: accepted", what);
    CHECKF(code == 0 || rc == code, "%s: code %d (%s), want %d", what, rc, err.msg, code);
    CHECKF(!needle1 || strstr(err.msg, needle1), "%s: message '%s' lacks '%s'", what,
           err.msg, needle1);
    CHECKF(!needle2 || strstr(err.msg, needle2), "%s: message '%s' lacks '%s'", what,
           err.msg, needle2);
    lp_tokenizer_free(t);
}

/* ---- a SentencePiece-style BPE (Llama-2 layout) ---- */

enum { SP_UNK = 0, SP_BOS = 1, SP_EOS = 2, SP_BYTE0 = 3, SP_SPACE = 259, SP_H, SP_E, SP_L,
       SP_O, SP_UH, SP_LL, SP_UHE, SP_LLO, SP_UHELLO, SP_W, SP_R, SP_D };

static char *sp_json(const char *pre, const char *dec, const char *norm) {
    sbuf b = {0};
    sb_printf(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":["
                  "{\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,"
                  "\"rstrip\":false,\"normalized\":false,\"special\":true},"
                  "{\"id\":1,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,"
                  "\"rstrip\":false,\"normalized\":false,\"special\":true},"
                  "{\"id\":2,\"content\":\"</s>\",\"single_word\":false,\"lstrip\":false,"
                  "\"rstrip\":false,\"normalized\":false,\"special\":true}],");
    sb_printf(&b, "\"normalizer\":%s,\"pre_tokenizer\":%s,", norm, pre);
    sb_printf(&b, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                  "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":"
                  "\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":"
                  "\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},");
    sb_printf(&b, "\"decoder\":%s,", dec);
    sb_printf(&b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
                  "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,"
                  "\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,"
                  "\"</s>\":2");
    for (int i = 0; i < 256; i++)
        sb_printf(&b, ",\"<0x%02X>\":%d", i, SP_BYTE0 + i);
    sb_printf(&b, ",\"\xE2\x96\x81\":%d,\"h\":%d,\"e\":%d,\"l\":%d,\"o\":%d,"
                  "\"\xE2\x96\x81h\":%d,\"ll\":%d,\"\xE2\x96\x81he\":%d,\"llo\":%d,"
                  "\"\xE2\x96\x81hello\":%d,\"w\":%d,\"r\":%d,\"d\":%d},",
              SP_SPACE, SP_H, SP_E, SP_L, SP_O, SP_UH, SP_LL, SP_UHE, SP_LLO, SP_UHELLO, SP_W,
              SP_R, SP_D);
    sb_printf(&b, "\"merges\":[\"\xE2\x96\x81 h\",\"l l\",\"\xE2\x96\x81h e\",\"ll o\","
                  "\"\xE2\x96\x81he llo\"]}}");
    return b.p;
}

static const char SP_NORM[] =
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}";
static const char SP_DEC[] =
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
    "\"\xE2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
    "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}";

static void test_sentencepiece_style(void) {
    char *json = sp_json("null", SP_DEC, SP_NORM);
    lp_error err = {0};
    lp_tokenizer *t = load(json, &err);
    free(json);
    if (!t)
        return;
    expect_ids(t, "hello", false, (int32_t[]){SP_UHELLO}, 1, "sp hello");
    expect_ids(t, "hello", true, (int32_t[]){SP_BOS, SP_UHELLO}, 2, "sp add_special");
    expect_ids(t, "hello world", false,
               (int32_t[]){SP_UHELLO, SP_SPACE, SP_W, SP_O, SP_R, SP_L, SP_D}, 7, "sp words");
    /* é is not in the vocab: byte fallback */
    expect_ids(t, "\xC3\xA9", false,
               (int32_t[]){SP_SPACE, SP_BYTE0 + 0xC3, SP_BYTE0 + 0xA9}, 3, "sp byte fallback");
    /* special token first: the rest is normalized on its own (Prepend again) */
    expect_ids(t, "<s>hi", false, (int32_t[]){SP_BOS, SP_UH, SP_BYTE0 + 'i'}, 3, "sp <s>hi");
    expect_ids(t, "", true, (int32_t[]){SP_BOS}, 1, "sp empty + special");
    expect_ids(t, "", false, NULL, 0, "sp empty");

    expect_text(t, (int32_t[]){SP_UHELLO}, 1, false, "hello", "sp strip first space");
    expect_text(t, (int32_t[]){SP_UHELLO, SP_UHELLO}, 2, false, "hello hello", "sp two");
    expect_text(t, (int32_t[]){SP_SPACE, SP_BYTE0 + 0xC3, SP_BYTE0 + 0xA9}, 3, false,
                "\xC3\xA9", "sp bytes");
    /* an invalid run: one U+FFFD per byte */
    expect_text(t, (int32_t[]){SP_BYTE0 + 0xC3, SP_BYTE0 + 0xC3, SP_UHELLO}, 3, false,
                "\xEF\xBF\xBD\xEF\xBF\xBD hello", "sp invalid bytes");
    /* an unfinished run at the end */
    expect_text(t, (int32_t[]){SP_UHELLO, SP_BYTE0 + 0xE2, SP_BYTE0 + 0x82}, 3, false,
                "hello\xEF\xBF\xBD\xEF\xBF\xBD", "sp cut run");
    expect_text(t, (int32_t[]){SP_BOS, SP_UHELLO, SP_EOS}, 3, true, "hello", "sp skip");
    expect_text(t, (int32_t[]){SP_BOS, SP_UHELLO, SP_EOS}, 3, false, "<s> hello</s>",
                "sp keep specials");
    expect_text(t, NULL, 0, false, "", "sp nothing");

    /* the streamed pieces never split a character and appear as soon as final */
    lp_detok *d = lp_detok_new(t, false);
    char *p = NULL;
    size_t n;
    CHECK(lp_detok_push(d, SP_UHELLO, &p, &n, &err) == LP_OK && strcmp(p, "hello") == 0);
    free(p);
    CHECK(lp_detok_push(d, SP_BYTE0 + 0xE2, &p, &n, &err) == LP_OK && n == 0);
    free(p);
    CHECK(lp_detok_push(d, SP_BYTE0 + 0x82, &p, &n, &err) == LP_OK && n == 0);
    free(p);
    CHECK(lp_detok_push(d, SP_BYTE0 + 0xAC, &p, &n, &err) == LP_OK && n == 0);
    free(p);
    CHECK(lp_detok_push(d, SP_SPACE, &p, &n, &err) == LP_OK && strcmp(p, "\xE2\x82\xAC ") == 0);
    free(p);
    CHECK(lp_detok_push(d, 100000, &p, &n, &err) == LP_ERR_RANGE && p == NULL);
    CHECK(lp_detok_push(d, -1, &p, &n, &err) == LP_ERR_RANGE);
    lp_detok_free(d);

    /* out-of-range ids in decode */
    char *s = NULL;
    CHECK(lp_tokenizer_decode(t, (int32_t[]){SP_H, 5000}, 2, false, &s, &n, &err) ==
              LP_ERR_RANGE &&
          s == NULL && strstr(err.msg, "ids[1]"));

    /* invalid UTF-8 input */
    int32_t *ids = NULL;
    size_t nid = 0;
    static const char *bad_utf8[] = {"\xC3", "ab\xFF", "\xED\xA0\x80", "\xC0\xAF",
                                     "\xF4\x90\x80\x80", "a\x80"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) {
        int rc = lp_tokenizer_encode(t, bad_utf8[i], strlen(bad_utf8[i]), false, &ids, &nid,
                                     &err);
        CHECKF(rc == LP_ERR_INVALID && ids == NULL && strstr(err.msg, "UTF-8"),
               "invalid UTF-8 #%zu: rc %d", i, rc);
    }
    /* embedded NUL is valid UTF-8 */
    CHECK(lp_tokenizer_encode(t, "a\0b", 3, false, &ids, &nid, &err) == LP_OK);
    free(ids);
    lp_tokenizer_free(t);

    /* unk: no byte fallback tokens for ö -> fused <unk> */
    json = sp_json("null", SP_DEC, "null");
    char *at = strstr(json, "\"byte_fallback\":true");
    memcpy(at, "\"byte_fallback\":null", 20);
    t = load(json, &err);
    free(json);
    if (t) {
        expect_ids(t, "h\xC3\xB6\xC3\xB6h", false, (int32_t[]){SP_H, SP_UNK, SP_H}, 3,
                   "fused unk");
        lp_tokenizer_free(t);
    }
}

/* ---- Metaspace pre-tokenizer / decoder (newer Llama/Mistral layout) ---- */

static void test_metaspace(void) {
    char *json = sp_json("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\","
                         "\"prepend_scheme\":\"first\",\"split\":true}",
                         "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},"
                         "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\","
                         "\"prepend_scheme\":\"first\",\"split\":true}]}",
                         "null");
    lp_error err = {0};
    lp_tokenizer *t = load(json, &err);
    free(json);
    if (!t)
        return;
    expect_ids(t, "hello hello", false, (int32_t[]){SP_UHELLO, SP_UHELLO}, 2, "ms words");
    /* not at the start of the text: no prepended ▁ (prepend_scheme first) */
    expect_ids(t, "<s>hello", false, (int32_t[]){SP_BOS, SP_H, SP_E, SP_LLO}, 4, "ms first");
    expect_text(t, (int32_t[]){SP_UHELLO, SP_UHELLO}, 2, false, "hello hello", "ms decode");
    expect_text(t, (int32_t[]){SP_H, SP_UHELLO}, 2, false, "h hello", "ms decode 2");
    lp_tokenizer_free(t);
}

/* ---- ByteLevel BPE (GPT-2 layout) ---- */

static char *bl_json(const char *pre, const char *added, const char *post) {
    sbuf b = {0};
    sb_printf(&b, "{\"added_tokens\":[%s],\"normalizer\":null,\"pre_tokenizer\":%s,"
                  "\"post_processor\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
                  "\"model\":{\"type\":\"BPE\",\"vocab\":{",
              added, pre, post);
    for (unsigned c = 0; c < 256; c++) {
        const char *s = bl(c);
        sb_printf(&b, "%s\"%s%s\":%u", c ? "," : "", (s[0] == '"' || s[0] == '\\') ? "\\" : "",
                  s, c);
    }
    /* 256: "a " style tokens for the Split behaviour tests */
    sb_printf(&b, ",\"a%s\":256,\"%sb\":257,\"ab\":258", bl(' '), bl(' '));
    sb_printf(&b, "},\"merges\":[[\"a\",\"%s\"],[\"%s\",\"b\"],[\"a\",\"b\"]]}}", bl(' '),
              bl(' '));
    return b.p;
}

static void test_bytelevel(void) {
    char *json = bl_json("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                         "\"use_regex\":true}",
                         "{\"id\":259,\"content\":\"<mask>\",\"lstrip\":true,\"rstrip\":false,"
                         "\"single_word\":true,\"normalized\":false,\"special\":true}",
                         "{\"type\":\"ByteLevel\"}");
    lp_error err = {0};
    lp_tokenizer *t = load(json, &err);
    free(json);
    if (!t)
        return;
    /* GPT-2 regex isolates " b"; merge " b" -> 257 */
    expect_ids(t, "a b", false, (int32_t[]){'a', 257}, 2, "bl a b");
    expect_ids(t, "ab", true, (int32_t[]){258}, 1, "bl ab (ByteLevel post: no specials)");
    /* lstrip takes the space; single_word refuses "a<mask>" */
    expect_ids(t, "a <mask>", false, (int32_t[]){'a', 259}, 2, "bl lstrip");
    expect_ids(t, "a<mask>", false, (int32_t[]){'a', '<', 'm', 'a', 's', 'k', '>'}, 7,
               "bl single_word");
    /* lossy decoding: E2 82 is a cut sequence -> one U+FFFD */
    int32_t ids[3] = {0xE2, 0x82, 'a'};
    expect_text(t, ids, 3, false, "\xEF\xBF\xBD" "a", "bl lossy");
    expect_text(t, ids, 2, false, "\xEF\xBF\xBD", "bl lossy tail");
    int32_t euro[4] = {'x', 0xE2, 0x82, 0xAC};
    expect_text(t, euro, 4, false, "x\xE2\x82\xAC", "bl euro");
    int32_t sur[3] = {0xED, 0xA0, 0x80}; /* a surrogate: 3 replacement chars */
    expect_text(t, sur, 3, false, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", "bl surrogate");
    expect_text(t, (int32_t[]){'a', 259}, 2, true, "a", "bl skip");
    expect_text(t, (int32_t[]){'a', 259}, 2, false, "a<mask>", "bl keep");
    lp_tokenizer_free(t);

    /* Split behaviours on a literal space */
    static const struct {
        const char *behavior;
        const char *invert;
        int32_t ids[3];
        size_t n;
    } cases[] = {
        {"Isolated", "false", {'a', 0x20, 'b'}, 3},
        {"Removed", "false", {'a', 'b'}, 2},
        {"MergedWithPrevious", "false", {256, 'b'}, 2},
        {"MergedWithNext", "false", {'a', 257}, 2},
        {"Contiguous", "false", {'a', 0x20, 'b'}, 3},
        {"Removed", "true", {0x20}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char pre[512];
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                 "{\"String\":\" \"},\"behavior\":\"%s\",\"invert\":%s},{\"type\":"
                 "\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}",
                 cases[i].behavior, cases[i].invert);
        json = bl_json(pre, "", "null");
        t = load(json, &err);
        free(json);
        if (!t)
            continue;
        char what[64];
        snprintf(what, sizeof what, "split %s invert=%s", cases[i].behavior, cases[i].invert);
        expect_ids(t, "a b", false, cases[i].ids, cases[i].n, what);
        lp_tokenizer_free(t);
    }

    /* Regex split, Digits, add_prefix_space */
    json = bl_json("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                   "\"individual_digits\":true},{\"type\":\"ByteLevel\",\"add_prefix_space\":"
                   "true,\"use_regex\":true}]}",
                   "", "null");
    t = load(json, &err);
    free(json);
    if (t) {
        /* "ab12": prefix space per piece: " ab" -> Ġ a b ... */
        int32_t want[] = {0x20, 258, 0x20, '1', 0x20, '2'};
        expect_ids(t, "ab12", false, want, 6, "digits + prefix space");
        lp_tokenizer_free(t);
    }

    /* no decoder: tokens are joined with spaces */
    json = bl_json("null", "", "null");
    char *dec = strstr(json, "{\"type\":\"ByteLevel\"}");
    memcpy(dec, "null                ", 20);
    t = load(json, &err);
    free(json);
    if (t) {
        expect_text(t, (int32_t[]){'a', 'b'}, 2, false, "a b", "no decoder");
        lp_tokenizer_free(t);
    }
}

/* ---- malformed files ---- */

static void test_bad_files(void) {
    char *good = sp_json("null", SP_DEC, SP_NORM);
    lp_error err = {0};
    lp_tokenizer *t = NULL;
    CHECK(lp_tokenizer_load_buffer(good, strlen(good), &t, &err) == LP_OK);
    lp_tokenizer_free(t);

    expect_reject("{", LP_ERR_FORMAT, "JSON", NULL, "truncated");
    expect_reject("", LP_ERR_FORMAT, "JSON", NULL, "empty");
    expect_reject("[1,2]", LP_ERR_FORMAT, "top level", NULL, "array");
    expect_reject("{}", LP_ERR_FORMAT, "model", "object", "no model");
    expect_reject("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", LP_ERR_UNSUPPORTED,
                  "model.type", "Unigram", "unigram");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],"
                  "\"dropout\":0.1}}",
                  LP_ERR_UNSUPPORTED, "model.dropout", NULL, "dropout");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", LP_ERR_FORMAT,
                  "model.vocab", NULL, "vocab array");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", LP_ERR_FORMAT,
                  "model.vocab", "empty", "empty vocab");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":7},\"merges\":[]}}",
                  LP_ERR_RANGE, "model.vocab['b']", "out of range", "id out of range");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":-1},\"merges\":[]}}",
                  LP_ERR_RANGE, "model.vocab['b']", "-1", "negative id");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1.5},\"merges\":[]}}",
                  LP_ERR_FORMAT, "model.vocab['b']", "integer", "real id");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":99999999999},"
                  "\"merges\":[]}}",
                  LP_ERR_RANGE, "model.vocab['b']", NULL, "huge id");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
                  LP_ERR_FORMAT, "model.vocab", "used by both", "duplicate id");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}",
                  LP_ERR_FORMAT, "duplicate", NULL, "duplicate key");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                  "\"merges\":[\"a c\"]}}",
                  LP_ERR_FORMAT, "model.merges[0]", "'c'", "merge unknown token");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                  "\"merges\":[\"a b\"]}}",
                  LP_ERR_FORMAT, "model.merges[0]", "'ab'", "merge result unknown");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                  "\"merges\":[\"ab\"]}}",
                  LP_ERR_FORMAT, "model.merges[0]", NULL, "merge without space");
    expect_reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                  "\"merges\":[[\"a\"]]}}",
                  LP_ERR_FORMAT, "model.merges[0]", NULL, "merge array of 1");
    expect_reject("{\"added_tokens\":[{\"id\":5,\"content\":\"<x>\"}],\"model\":{\"type\":"
                  "\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                  LP_ERR_RANGE, "added_tokens[0].id", NULL, "added id out of range");
    expect_reject("{\"added_tokens\":[{\"id\":0,\"content\":\"<x>\"}],\"model\":{\"type\":"
                  "\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                  LP_ERR_FORMAT, "added_tokens[0]", "vocab token 'a'", "added id clash");
    expect_reject("{\"added_tokens\":[{\"id\":1,\"content\":\"a\"}],\"model\":{\"type\":"
                  "\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                  LP_ERR_FORMAT, "added_tokens[0]", "vocab gives it id 0", "added content");
    expect_reject("{\"added_tokens\":[{\"id\":1,\"content\":\"<x>\"},{\"id\":1,\"content\":"
                  "\"<y>\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                  LP_ERR_FORMAT, "added_tokens[1].id", "twice", "added id twice");
    expect_reject("{\"added_tokens\":[{\"id\":1,\"content\":\"\"}],\"model\":{\"type\":"
                  "\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                  LP_ERR_FORMAT, "added_tokens[0].content", NULL, "added empty");

    /* unknown pipeline components are named */
    static const struct {
        const char *field, *json, *needle;
    } comps[] = {
        {"normalizer", "{\"type\":\"BertNormalizer\"}", "BertNormalizer"},
        {"normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
                       "{\"type\":\"Precompiled\"}]}",
         "normalizer.normalizers[1].type"},
        {"pre_tokenizer", "{\"type\":\"BertPreTokenizer\"}", "BertPreTokenizer"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                          "\"behavior\":\"Isolated\",\"invert\":false}",
         "pre_tokenizer.pattern.Regex"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                          "\"behavior\":\"Sideways\",\"invert\":false}",
         "pre_tokenizer.behavior"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Glob\":\"a\"},"
                          "\"behavior\":\"Isolated\",\"invert\":false}",
         "pre_tokenizer.pattern"},
        {"pre_tokenizer", "{\"type\":\"Metaspace\",\"replacement\":\"ab\"}",
         "pre_tokenizer.replacement"},
        {"decoder", "{\"type\":\"CTC\"}", "decoder.type: decoder 'CTC'"},
        {"decoder", "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"WordPiece\"}]}",
         "decoder.decoders[0].type"},
        {"decoder", "{\"type\":\"Strip\",\"content\":\" \",\"start\":-1,\"stop\":0}",
         "decoder.start"},
        {"decoder", "{\"nope\":1}", "decoder.type"},
        {"post_processor", "{\"type\":\"Weird\"}", "post_processor.type"},
        {"post_processor", "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                           "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],"
                           "\"special_tokens\":{\"<s>\":{\"ids\":[999]}}}",
         "post_processor.special_tokens['<s>'].ids[0]"},
    };
    for (size_t i = 0; i < sizeof comps / sizeof *comps; i++) {
        sbuf b = {0};
        sb_printf(&b, "{\"%s\":%s,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<s>\":1},"
                      "\"merges\":[]}}",
                  comps[i].field, comps[i].json);
        char what[64];
        snprintf(what, sizeof what, "component #%zu", i);
        expect_reject(b.p, 0, comps[i].field, comps[i].needle, what);
        free(b.p);
    }

    /* nesting of Sequences is bounded */
    sbuf deep = {0};
    sb_printf(&deep, "{\"normalizer\":");
    for (int i = 0; i < 40; i++)
        sb_printf(&deep, "{\"type\":\"Sequence\",\"normalizers\":[");
    sb_printf(&deep, "{\"type\":\"NFC\"}");
    for (int i = 0; i < 40; i++)
        sb_printf(&deep, "]}");
    sb_printf(&deep, ",\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
    expect_reject(deep.p, LP_ERR_LIMIT, "nested", NULL, "deep nesting");
    free(deep.p);

    /* file errors name the path */
    CHECK(lp_tokenizer_load("/nonexistent/tokenizer.json", &t, &err) == LP_ERR_NOT_FOUND &&
          strstr(err.msg, "/nonexistent/tokenizer.json"));
    free(good);
}

/* ---- a pathological regex must not hang ---- */

static void test_pathological_regex(void) {
    sbuf b = {0};
    sb_printf(&b, "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                  "\"(a+)+$\"},\"behavior\":\"Isolated\",\"invert\":false},"
                  "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[]}}");
    lp_error err = {0};
    lp_tokenizer *t = load(b.p, &err);
    free(b.p);
    if (!t)
        return;
    size_t n = 20000;
    char *text = malloc(n + 2);
    memset(text, 'a', n);
    text[n] = 'b';
    text[n + 1] = '\0';
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = lp_tokenizer_encode(t, text, n + 1, false, &ids, &nid, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("pathological regex: rc=%d (%s) in %.3f s\n", rc, rc ? err.msg : "ok", dt);
    CHECKF(rc == LP_OK || rc == LP_ERR_LIMIT, "pathological regex: rc %d: %s", rc, err.msg);
    CHECKF(dt < 10.0, "pathological regex took %.1f s", dt);
    free(ids);
    free(text);
    lp_tokenizer_free(t);

    /* exponential backtracking that PCRE2 cannot optimise away: 'b' is
     * present (so the required-character check passes) but not at the end */
    b = (sbuf){0};
    sb_printf(&b, "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                  "\"(?:(a|aa)+)+b$\"},\"behavior\":\"Isolated\",\"invert\":false},"
                  "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2},"
                  "\"merges\":[]}}");
    t = load(b.p, &err);
    free(b.p);
    if (!t)
        return;
    text = malloc(64);
    memset(text, 'a', 40);
    text[40] = 'b';
    text[41] = 'c';
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = lp_tokenizer_encode(t, text, 42, false, &ids, &nid, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("exponential regex: rc=%d (%s) in %.3f s\n", rc, rc ? err.msg : "ok", dt);
    CHECKF(rc == LP_ERR_LIMIT && dt < 10.0, "exponential regex: rc %d in %.1f s", rc, dt);
    CHECKF(rc != LP_ERR_LIMIT || (strstr(err.msg, "budget") &&
                                  strstr(err.msg, "pre_tokenizer.pattern.Regex")),
           "message: %s", err.msg);
    free(ids);
    free(text);
    lp_tokenizer_free(t);
}

/* every seed file of the fuzz corpus must load and round-trip plain text */
static void test_seed_corpus(const char *dir) {
    DIR *d = opendir(dir);
    CHECKF(d != NULL, "cannot open %s", dir);
    if (!d)
        return;
    int seen = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        lp_tokenizer *t = NULL;
        lp_error err = {0};
        int rc = lp_tokenizer_load(path, &t, &err);
        CHECKF(rc == LP_OK, "seed %s: %s", e->d_name, err.msg);
        if (rc == LP_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECKF(lp_tokenizer_encode(t, "the hello world", 15, true, &ids, &n, &err) ==
                           LP_OK &&
                       n > 0,
                   "seed %s: encode: %s", e->d_name, err.msg);
            free(ids);
            lp_tokenizer_free(t);
        }
        seen++;
    }
    closedir(d);
    CHECKF(seen >= 2, "only %d seed files in %s", seen, dir);
}

int main(int argc, char **argv) {
    if (argc > 1)
        test_seed_corpus(argv[1]);
    test_sentencepiece_style();
    test_metaspace();
    test_bytelevel();
    test_bad_files();
    test_pathological_regex();
    return lp_test_finish("test_tokenizer_small");
}
