/* log.c - leveled logging to stderr. */
#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static int level_from_env(void) {
    const char *s = getenv("LORAPLEX_LOG");
    if (!s)
        return LP_LOG_INFO;
    if (!strcmp(s, "debug"))
        return LP_LOG_DEBUG;
    if (!strcmp(s, "warn"))
        return LP_LOG_WARN;
    if (!strcmp(s, "error"))
        return LP_LOG_ERROR;
    return LP_LOG_INFO;
}

void lp__log_set_level(int level) { g_level = level; }

int lp__log_level(void) {
    if (g_level < 0)
        g_level = level_from_env();
    return g_level;
}

void lp__log(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < lp__log_level())
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                     names[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&g_lock);
}
