/* log.h - leveled logging to stderr (time, level, message). */
#ifndef LP_UTIL_LOG_H
#define LP_UTIL_LOG_H

enum { LP_LOG_DEBUG = 0, LP_LOG_INFO = 1, LP_LOG_WARN = 2, LP_LOG_ERROR = 3 };

/* Messages below this level are dropped. Default LP_LOG_INFO; the
 * LORAPLEX_LOG environment variable (debug|info|warn|error) overrides it. */
void lp__log_set_level(int level);
int lp__log_level(void);
void lp__log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define LP_DEBUG(...) lp__log(LP_LOG_DEBUG, __VA_ARGS__)
#define LP_INFO(...) lp__log(LP_LOG_INFO, __VA_ARGS__)
#define LP_WARN(...) lp__log(LP_LOG_WARN, __VA_ARGS__)
#define LP_ERROR(...) lp__log(LP_LOG_ERROR, __VA_ARGS__)

#endif
