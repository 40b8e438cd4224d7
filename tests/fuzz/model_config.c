/* model_config.c - fuzz driver for config.json parsing: the input is
 * config.json text, and (after the first NUL byte, if any) generation_config.json. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loraplex/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    size_t first = strlen(buf);
    const char *gen = first < size ? buf + first + 1 : NULL;
    lp_model_config cfg;
    lp_error err;
    (void)lp_model_config_parse(buf, gen, &cfg, &err);
    free(buf);
    return 0;
}
