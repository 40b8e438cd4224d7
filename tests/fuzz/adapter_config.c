/* adapter_config.c (fuzz) - libFuzzer driver for the adapter_config.json
 * parser and PEFT matchers: NUL-terminate a copy of the input, run
 * lp__adapter_config_check, and check the error record's invariants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lora/adapter-impl.h"

#define FUZZ_ASSERT(c)                                                         \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) /* the loader refuses configs over 1 MiB */
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);
    text[size] = '\0';
    lp_error err;
    memset(&err, 0, sizeof err);
    int rc = lp__adapter_config_check(text, &err);
    if (rc != LP_OK) {
        FUZZ_ASSERT(rc < 0 && err.code == rc);
        FUZZ_ASSERT(memchr(err.msg, 0, sizeof err.msg) != NULL && err.msg[0] != '\0');
    }
    free(text);
    return 0;
}
