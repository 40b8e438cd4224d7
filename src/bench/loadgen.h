/* loadgen.h - `loraplex bench`: a load generator for OpenAI-compatible
 * servers in the spirit of GenAI-Perf (concurrency or Poisson request rate,
 * ISL/OSL, adapter mixes; TTFT, ITL, TPOT, e2e latency, throughput). */
#ifndef LP_BENCH_LOADGEN_H
#define LP_BENCH_LOADGEN_H

#include <stdbool.h>
#include <stdint.h>

#define LP_BENCH_MAX_ADAPTERS 1024

typedef enum { LP_DIST_UNIFORM, LP_DIST_ROUND_ROBIN, LP_DIST_ZIPF, LP_DIST_HOT } lp_dist;

typedef struct lp_bench_params {
    const char *url;              /* http://host:port */
    bool chat;                    /* /v1/chat/completions instead of /v1/completions */
    const char *base_model;       /* model id of the base (default: from /v1/models) */
    const char *adapters[LP_BENCH_MAX_ADAPTERS];
    int n_adapters;
    bool include_base;            /* the base model is one more choice */
    lp_dist dist;
    double dist_param;            /* zipf exponent, or hot fraction of requests */
    int concurrency;              /* closed loop, when request_rate == 0 */
    double request_rate;          /* Poisson arrivals per second (open loop) */
    int requests;                 /* stop after this many (0 = use duration) */
    double duration_s;
    int isl, osl;
    double isl_stddev, osl_stddev;
    bool ignore_eos;
    int warmup;
    uint64_t seed;
    const char *api_key;
    double timeout_s;             /* per request */
    bool progress;
} lp_bench_params;

lp_bench_params lp_bench_default_params(void);

typedef struct lp_bench_result lp_bench_result;

/* Run one load point. Returns NULL and prints why on failure to start. */
lp_bench_result *lp_bench_run(const lp_bench_params *p);
void lp_bench_result_free(lp_bench_result *r);
/* Human table on stdout. */
void lp_bench_print(const lp_bench_result *r, const lp_bench_params *p);
/* The JSON report (heap string). */
char *lp_bench_json(const lp_bench_result *r, const lp_bench_params *p);
/* An SVG with latency CDFs and throughput over time (heap string). */
char *lp_bench_svg(const lp_bench_result *r, const lp_bench_params *p);
/* Sweep summary SVG: throughput vs latency over several points. */
char *lp_bench_sweep_svg(lp_bench_result *const *rs, const int *conc, int n);
/* Headline numbers (for sweeps). */
double lp_bench_output_tps(const lp_bench_result *r);
double lp_bench_ttft_p50_ms(const lp_bench_result *r);
double lp_bench_itl_p50_ms(const lp_bench_result *r);

#endif
