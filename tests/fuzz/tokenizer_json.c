/* tokenizer_json.c - fuzz driver for the tokenizer.json loader: load the
 * input; if it loads, encode a fixed text (with and without the
 * post-processor), decode the ids in batch and streaming (which must agree),
 * and decode a few raw ids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loraplex/tokenizer.h"

static const char TEXT[] = "Hello  world! The 123 na\xC3\xAFve caf\xC3\xA9 <s>x</s> "
                           "<|endoftext|>\n\ttabs \xE2\x96\x81meta \xF0\x9F\x98\x80 [MASK] -9";

static void check_stream(const lp_tokenizer *t, const int32_t *ids, size_t n, bool skip) {
    lp_error err;
    char *whole = NULL;
    size_t whole_len = 0;
    int rc = lp_tokenizer_decode(t, ids, n, skip, &whole, &whole_len, &err);
    lp_detok *d = lp_detok_new(t, skip);
    if (!d) {
        free(whole);
        return;
    }
    char *acc = malloc(whole_len + 1);
    size_t len = 0;
    bool ok = acc != NULL;
    for (size_t i = 0; i <= n && ok; i++) {
        char *piece = NULL;
        size_t plen = 0;
        int prc = i < n ? lp_detok_push(d, ids[i], &piece, &plen, &err)
                        : lp_detok_flush(d, &piece, &plen, &err);
        if (prc != LP_OK) {
            ok = false;
            break;
        }
        if (rc == LP_OK && len + plen > whole_len)
            __builtin_trap(); /* streamed more than decode() */
        if (rc == LP_OK)
            memcpy(acc + len, piece, plen);
        len += plen;
        free(piece);
    }
    if (rc == LP_OK && ok && (len != whole_len || memcmp(acc, whole, len) != 0))
        __builtin_trap(); /* streaming differs from decode() */
    free(acc);
    free(whole);
    lp_detok_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_tokenizer *t = NULL;
    lp_error err;
    if (lp_tokenizer_load_buffer((const char *)data, size, &t, &err) != LP_OK)
        return 0;
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (lp_tokenizer_encode(t, TEXT, sizeof TEXT - 1, special, &ids, &n, &err) == LP_OK) {
            int32_t vs = lp_tokenizer_vocab_size(t);
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= vs)
                    __builtin_trap(); /* encode produced an id out of range */
            check_stream(t, ids, n, special);
        }
        free(ids);
    }
    int32_t raw[40];
    size_t nraw = 0;
    int32_t vs = lp_tokenizer_vocab_size(t);
    for (int32_t i = 0; i < vs && nraw < 32; i++)
        raw[nraw++] = i;
    raw[nraw++] = vs - 1;
    check_stream(t, raw, nraw, false);
    (void)lp_tokenizer_token(t, 0);
    (void)lp_tokenizer_find(t, "<s>");
    lp_tokenizer_free(t);
    return 0;
}
