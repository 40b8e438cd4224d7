/* testlib.c - counters and summary for testlib.h. */
#include "testlib.h"

int lp_test_failures = 0;
int lp_test_checks = 0;

int lp_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, lp_test_checks, lp_test_failures);
    return lp_test_failures ? 1 : 0;
}
