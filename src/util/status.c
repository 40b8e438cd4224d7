/* status.c - status code table and error record helpers. */
#include "loraplex/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *lp_strerror(int status) {
    switch (status) {
#define LP__X(name, val, desc)                                                 \
    case val:                                                                  \
        return desc;
        LP_STATUS_TABLE(LP__X)
#undef LP__X
    }
    return "unknown status";
}

const char *lp_status_name(int status) {
    switch (status) {
#define LP__X(name, val, desc)                                                 \
    case val:                                                                  \
        return #name;
        LP_STATUS_TABLE(LP__X)
#undef LP__X
    }
    return "LP_ERR_UNKNOWN";
}

int lp_error_set(lp_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int lp_error_prefix(lp_error *err, const char *fmt, ...) {
    if (!err)
        return LP_ERR_INTERNAL;
    char prefix[LP_ERROR_MSG_MAX], old[LP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3, m = strlen(old);
    if (m > room)
        m = room;
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->code;
}

void lp_error_clear(lp_error *err) {
    if (err) {
        err->code = LP_OK;
        err->msg[0] = '\0';
    }
}
