/* status.h - one status enum for the whole library, plus an error record that
 * carries the human message naming the file, field or parameter at fault. */
#ifndef LORAPLEX_STATUS_H
#define LORAPLEX_STATUS_H

#include <stddef.h>

/* X-macro table: name, value, short description. */
#define LP_STATUS_TABLE(X)                                                     \
    X(LP_OK, 0, "ok")                                                          \
    X(LP_ERR_NOMEM, -1, "out of memory")                                       \
    X(LP_ERR_IO, -2, "i/o error")                                              \
    X(LP_ERR_FORMAT, -3, "malformed input")                                    \
    X(LP_ERR_UNSUPPORTED, -4, "unsupported")                                   \
    X(LP_ERR_INVALID, -5, "invalid argument")                                  \
    X(LP_ERR_NOT_FOUND, -6, "not found")                                       \
    X(LP_ERR_RANGE, -7, "out of range")                                        \
    X(LP_ERR_LIMIT, -8, "limit exceeded")                                      \
    X(LP_ERR_EXISTS, -9, "already exists")                                     \
    X(LP_ERR_BUSY, -10, "busy")                                                \
    X(LP_ERR_INTERNAL, -11, "internal error")

typedef enum {
#define LP__X(name, val, desc) name = val,
    LP_STATUS_TABLE(LP__X)
#undef LP__X
} lp_status;

/* Short description of a status code; static storage. */
const char *lp_strerror(int status);
/* Symbolic name of a status code ("LP_ERR_FORMAT"); static storage. */
const char *lp_status_name(int status);

#define LP_ERROR_MSG_MAX 512

/* Error record filled by any call that takes an `lp_error *err`. The caller
 * owns it (usually on the stack); err may be NULL when the caller does not
 * want the message. `msg` is always NUL-terminated. */
typedef struct lp_error {
    int code;                   /* an lp_status */
    char msg[LP_ERROR_MSG_MAX]; /* names what is wrong */
} lp_error;

/* Set err (if non-NULL) and return `code`, so callers can write
 * `return lp_error_set(err, LP_ERR_FORMAT, "%s: bad header", path);` */
int lp_error_set(lp_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prepend context to an existing message: "ctx: old message". Returns err->code. */
int lp_error_prefix(lp_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void lp_error_clear(lp_error *err);

#endif
