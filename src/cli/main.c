/* main.c - the `loraplex` binary: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} k_cmds[] = {
    {"serve", lp_cmd_serve, "OpenAI-compatible server for a base model and its adapters"},
    {"generate", lp_cmd_generate, "generate text from a prompt on the command line"},
    {"bench", lp_cmd_bench, "load-test an OpenAI-compatible server (TTFT, ITL, throughput)"},
    {"merge", lp_cmd_merge, "merge an adapter into the base weights, write a new model directory"},
    {"inspect", lp_cmd_inspect, "describe and validate an adapter, model or safetensors file"},
    {"template", lp_cmd_template, "render a model's chat template for a JSON request on stdin"},
    {"synth", lp_cmd_synth, "write a random-weight model directory (benchmarks, tests)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: loraplex <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].help);
    fprintf(f, "\n'loraplex <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
#ifdef LORAPLEX_HAVE_CUDA
        printf("loraplex %s (backends: cpu, cuda)\n", LORAPLEX_VERSION);
#else
        printf("loraplex %s (backends: cpu)\n", LORAPLEX_VERSION);
#endif
        return 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (!strcmp(argv[1], k_cmds[i].name))
            return k_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
