/* cmd_bench.c - `loraplex bench`: drive an OpenAI-compatible server and report
 * GenAI-Perf-style latency and throughput, overall and per adapter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen.h"
#include "cli/cli.h"
#include "util/util.h"

static const char k_usage[] =
    "usage: loraplex bench --url URL [options]\n"
    "\n"
    "Load an OpenAI-compatible server (loraplex, vLLM, NIM) with streaming requests.\n"
    "\n"
    "  --url URL                  server (default http://127.0.0.1:8000)\n"
    "  --endpoint completions|chat\n"
    "  --model NAME               base model id (default: the model without a parent in /v1/models)\n"
    "  --adapters a,b,c           adapters to spread requests over\n"
    "  --base                     also send requests to the base model\n"
    "  --adapter-dist D           uniform (default), round-robin, zipf:S, hot:P (P of requests to 1-P of adapters)\n"
    "  --concurrency N            closed loop with N clients (default 1)\n"
    "  --request-rate R           open loop: Poisson arrivals, R per second\n"
    "  --requests N               measured requests (default 100)\n"
    "  --duration S               or: run for S seconds\n"
    "  --isl N  --osl N           input / output tokens (default 128 / 64)\n"
    "  --isl-stddev S  --osl-stddev S\n"
    "  --ignore-eos               ask the server to generate exactly OSL tokens\n"
    "  --warmup N                 unmeasured requests first\n"
    "  --seed S                   prompts and adapter choices are a function of the seed\n"
    "  --api-key KEY\n"
    "  --sweep concurrency=1,8,32 run one point per value; --svg plots throughput vs latency\n"
    "  --json FILE  --svg FILE    machine-readable report; plots (latency CDFs, throughput over time)\n"
    "  --quiet                    no progress bar\n";

int lp_cmd_bench(int argc, char **argv) {
    lp_bench_params p = lp_bench_default_params();
    const char *json_path = NULL, *svg_path = NULL, *adapters = NULL, *sweep = NULL;
    bool duration_given = false;
    long long x;
    double d;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--base")) {
            p.include_base = true;
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            p.ignore_eos = true;
            continue;
        } else if (!strcmp(a, "--quiet")) {
            p.progress = false;
            continue;
        }
        if (!(v = lp_cli_value(argc, argv, &i)))
            return 2;
        if (!strcmp(a, "--url"))
            p.url = v;
        else if (!strcmp(a, "--endpoint")) {
            if (strcmp(v, "chat") && strcmp(v, "completions")) {
                fprintf(stderr, "error: --endpoint must be completions or chat\n");
                return 2;
            }
            p.chat = !strcmp(v, "chat");
        } else if (!strcmp(a, "--model"))
            p.base_model = v;
        else if (!strcmp(a, "--adapters"))
            adapters = v;
        else if (!strcmp(a, "--adapter-dist")) {
            if (!strcmp(v, "uniform"))
                p.dist = LP_DIST_UNIFORM;
            else if (!strcmp(v, "round-robin"))
                p.dist = LP_DIST_ROUND_ROBIN;
            else if (!strncmp(v, "zipf:", 5) && lp_cli_float("--adapter-dist zipf:S", v + 5, 0, 10, &d)) {
                p.dist = LP_DIST_ZIPF;
                p.dist_param = d;
            } else if (!strncmp(v, "hot:", 4) && lp_cli_float("--adapter-dist hot:P", v + 4, 0.01, 0.99, &d)) {
                p.dist = LP_DIST_HOT;
                p.dist_param = d;
            } else {
                fprintf(stderr, "error: --adapter-dist must be uniform, round-robin, zipf:S or hot:P\n");
                return 2;
            }
        } else if (!strcmp(a, "--concurrency")) {
            if (!lp_cli_int(a, v, 1, 100000, &x))
                return 2;
            p.concurrency = (int)x;
        } else if (!strcmp(a, "--request-rate")) {
            if (!lp_cli_float(a, v, 1e-3, 1e6, &d))
                return 2;
            p.request_rate = d;
        } else if (!strcmp(a, "--requests")) {
            if (!lp_cli_int(a, v, 1, 100000000, &x))
                return 2;
            p.requests = (int)x;
        } else if (!strcmp(a, "--duration")) {
            if (!lp_cli_float(a, v, 0.1, 1e6, &d))
                return 2;
            p.duration_s = d;
            duration_given = true;
        } else if (!strcmp(a, "--isl") || !strcmp(a, "--osl") || !strcmp(a, "--warmup")) {
            if (!lp_cli_int(a, v, !strcmp(a, "--warmup") ? 0 : 1, 1 << 20, &x))
                return 2;
            *(!strcmp(a, "--isl") ? &p.isl : !strcmp(a, "--osl") ? &p.osl : &p.warmup) = (int)x;
        } else if (!strcmp(a, "--isl-stddev") || !strcmp(a, "--osl-stddev")) {
            if (!lp_cli_float(a, v, 0, 1e6, &d))
                return 2;
            *(!strcmp(a, "--isl-stddev") ? &p.isl_stddev : &p.osl_stddev) = d;
        } else if (!strcmp(a, "--seed")) {
            if (!lp_cli_int(a, v, 0, INT64_MAX, &x))
                return 2;
            p.seed = (uint64_t)x;
        } else if (!strcmp(a, "--api-key"))
            p.api_key = v;
        else if (!strcmp(a, "--json"))
            json_path = v;
        else if (!strcmp(a, "--svg"))
            svg_path = v;
        else if (!strcmp(a, "--sweep"))
            sweep = v;
        else {
            fprintf(stderr, "error: unknown option '%s'\n\n%s", a, k_usage);
            return 2;
        }
    }
    if (duration_given)
        p.requests = 0;
    static char abuf[65536];
    if (adapters) {
        snprintf(abuf, sizeof abuf, "%s", adapters);
        for (char *save = NULL, *t = strtok_r(abuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (p.n_adapters == LP_BENCH_MAX_ADAPTERS) {
                fprintf(stderr, "error: at most %d adapters\n", LP_BENCH_MAX_ADAPTERS);
                return 2;
            }
            p.adapters[p.n_adapters++] = t;
        }
    }
    int conc[64], n_points = 0;
    if (sweep) {
        if (strncmp(sweep, "concurrency=", 12)) {
            fprintf(stderr, "error: --sweep takes concurrency=N,N,...\n");
            return 2;
        }
        int32_t *v = NULL;
        int n = 0;
        if (!lp_cli_int_list("--sweep", sweep + 12, &v, &n))
            return 2;
        for (int i = 0; i < n && i < 64; i++) {
            if (v[i] < 1) {
                fprintf(stderr, "error: --sweep concurrencies must be positive\n");
                free(v);
                return 2;
            }
            conc[n_points++] = v[i];
        }
        free(v);
    } else {
        conc[n_points++] = p.concurrency;
    }
    lp_bench_result *rs[64] = {0};
    FILE *jf = NULL;
    if (json_path && !(jf = fopen(json_path, "w"))) {
        fprintf(stderr, "error: --json %s: cannot create\n", json_path);
        return 1;
    }
    if (jf && sweep)
        fputs("[\n", jf);
    int status = 0;
    for (int i = 0; i < n_points; i++) {
        if (sweep)
            p.concurrency = conc[i];
        if (!(rs[i] = lp_bench_run(&p))) {
            status = 1;
            break;
        }
        lp_bench_print(rs[i], &p);
        if (jf) {
            char *j = lp_bench_json(rs[i], &p);
            if (j)
                fprintf(jf, "%s%s\n", j, sweep && i + 1 < n_points ? "," : "");
            free(j);
        }
    }
    if (jf) {
        if (sweep)
            fputs("]\n", jf);
        fclose(jf);
    }
    if (svg_path && status == 0) {
        char *svg = sweep ? lp_bench_sweep_svg(rs, conc, n_points) : lp_bench_svg(rs[0], &p);
        FILE *f = fopen(svg_path, "w");
        if (f && svg) {
            fputs(svg, f);
            fclose(f);
        } else {
            fprintf(stderr, "error: --svg %s: cannot write\n", svg_path);
            status = 1;
            if (f)
                fclose(f);
        }
        free(svg);
    }
    for (int i = 0; i < n_points; i++)
        lp_bench_result_free(rs[i]);
    return status;
}
