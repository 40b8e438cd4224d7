/* testlib.h - a minimal test harness: CHECK macros that count failures and
 * print file:line, and a summary at exit. */
#ifndef LP_TESTLIB_H
#define LP_TESTLIB_H

#include <stdio.h>

extern int lp_test_failures;
extern int lp_test_checks;

#define CHECK(cond)                                                            \
    do {                                                                       \
        lp_test_checks++;                                                      \
        if (!(cond)) {                                                         \
            lp_test_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECKF(cond, ...)                                                      \
    do {                                                                       \
        lp_test_checks++;                                                      \
        if (!(cond)) {                                                         \
            lp_test_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__,   \
                    #cond);                                                    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Print a summary and return the process exit code (0 iff no failure). */
int lp_test_finish(const char *name);

#endif
