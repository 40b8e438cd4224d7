/* cli.c - strict parsing of flag values for the subcommands. */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

bool lp_cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "error: %s expects an integer in [%lld, %lld], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool lp_cli_float(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "error: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool lp_cli_int_list(const char *flag, const char *s, int32_t **out, int *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = lp__malloc_array(cap, sizeof(int32_t));
    if (!v)
        return false;
    int k = 0;
    const char *p = s;
    while (1) {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "error: %s expects comma-separated integers, got '%s'\n", flag, s);
            free(v);
            return false;
        }
        v[k++] = (int32_t)x;
        if (!*end)
            break;
        p = end + 1;
    }
    *out = v;
    *n = k;
    return true;
}

const char *lp_cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "error: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

const char *lp_cli_default_model(void) {
    static char buf[4096];
    const char *home = getenv("LORAPLEX_HOME");
    if (home) {
        snprintf(buf, sizeof buf, "%s/models/tinylm", home);
        return buf;
    }
    if (lp__is_dir("models/tinylm"))
        return "models/tinylm";
#ifdef LORAPLEX_SOURCE_DIR
    snprintf(buf, sizeof buf, "%s/models/tinylm", LORAPLEX_SOURCE_DIR);
    if (lp__is_dir(buf))
        return buf;
#endif
    return "models/tinylm";
}
