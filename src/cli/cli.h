/* cli.h - subcommand entry points and strict flag-value parsing shared by
 * them. Each cmd_* returns the process exit code. */
#ifndef LP_CLI_H
#define LP_CLI_H

#include <stdbool.h>
#include <stdint.h>

int lp_cmd_generate(int argc, char **argv);
int lp_cmd_synth(int argc, char **argv);
int lp_cmd_merge(int argc, char **argv);
int lp_cmd_inspect(int argc, char **argv);
int lp_cmd_serve(int argc, char **argv);
int lp_cmd_bench(int argc, char **argv);
int lp_cmd_template(int argc, char **argv);

/* Parse the value of flag `flag` into *out; print an error naming the flag and
 * return false on anything but a complete number within [lo, hi]. */
bool lp_cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out);
bool lp_cli_float(const char *flag, const char *s, double lo, double hi, double *out);
/* Comma-separated integers ("1,2,3") into a heap array; false on error. */
bool lp_cli_int_list(const char *flag, const char *s, int32_t **out, int *n);

/* For "--flag VALUE": returns argv[++*i], or prints an error and returns NULL. */
const char *lp_cli_value(int argc, char **argv, int *i);

/* Default demo model location: $LORAPLEX_HOME/models/tinylm, else
 * models/tinylm relative to the working directory, else next to the binary's
 * source tree (compiled-in LORAPLEX_SOURCE_DIR). */
const char *lp_cli_default_model(void);

#endif
