/* cli_opt.h - the one option parser of the longmamba subcommands.
 *
 * Each subcommand declares a table of its options (name, value type,
 * range, destination, help) and calls cli_opt_parse.  Options are
 * "--name VALUE", "--name=VALUE" or a flag "--name"; anything else that
 * starts with '-' is an unknown option.  Errors print one line naming the
 * option and what it needs, then "(run 'longmamba CMD --help' for usage)",
 * and give exit status 2.  Defaults are whatever the destinations hold
 * before parsing. */
#ifndef LM_CLI_OPT_H
#define LM_CLI_OPT_H
#include <stdint.h>
#include <stdio.h>

typedef enum cli_opt_type {
    OPT_FLAG, /* int *: set to 1 */
    OPT_STR,  /* const char **: the value */
    OPT_INT,  /* long long *: a decimal integer in [ilo, ihi] */
    OPT_NUM,  /* double *: a finite number in [lo, hi] ((lo, hi] when lo_open) */
    OPT_FN    /* fn(dest, value): 1 ok, 0 bad value (standard message), -1 printed */
} cli_opt_type;

typedef struct cli_opt {
    const char *name;  /* "--tol", "-n" */
    const char *alias; /* another spelling ("--output" for "-o"), or NULL */
    cli_opt_type type;
    void *dest;
    const char *what;   /* the value it needs, for messages: "a positive number" */
    long long ilo, ihi; /* OPT_INT */
    double lo, hi;      /* OPT_NUM */
    int lo_open;
    int (*fn)(void *dest, const char *value);
    const char *arg;  /* value placeholder in the help ("N", "FILE"); NULL for flags */
    const char *help; /* one line; NULL: not listed (shared options listed by a note) */
} cli_opt;

typedef struct cli_cmd {
    const char *name;           /* "check" */
    const char *synopsis;       /* after "usage: longmamba " */
    const char *about;          /* paragraph(s) printed by --help after the synopsis */
    void (*more_help)(FILE *f); /* extra --help lines (defaults read from the library), or NULL */
    int raw_after;              /* > 0: after this many positionals the rest are all positional
                                   (detokenize's ids, which may look like "-1") */
} cli_cmd;

/* Parses argv[1..argc) (argv[0] is the command's name) against the
 * options of tables[0..n_tables) (tables[t] has n_opts[t] entries; a
 * command's own table and a shared one, for instance).  Positional
 * arguments go to pos[0..max_pos), their count to *n_pos.  Returns 0 to
 * go on, CLI_PARSE_HELP after printing --help (exit 0), or 2 after a usage
 * message. */
#define CLI_PARSE_HELP (-1)
int cli_opt_parse(const cli_cmd *cmd, const cli_opt *const *tables, const int *n_opts, int n_tables,
                  int argc, char **argv, const char **pos, int max_pos, int *n_pos);
/* One table. */
int cli_opt_parse1(const cli_cmd *cmd, const cli_opt *opts, int n_opts, int argc, char **argv,
                   const char **pos, int max_pos, int *n_pos);

/* "longmamba: CMD: " + printf(fmt, ...) + the pointer to --help, on
 * stderr; returns 2 (a usage error found after parsing). */
int cli_opt_usage(const cli_cmd *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The --help text of a command and its tables, on f. */
void cli_opt_help(FILE *f, const cli_cmd *cmd, const cli_opt *const *tables, const int *n_opts,
                  int n_tables);

/* OPT_FN parsers: "auto" | "cpu" | "cuda" into an lm_backend;
 * "stored" | "q8_0" into an lm_weight_format. */
int cli_opt_backend(void *dest, const char *value);
int cli_opt_weights(void *dest, const char *value);

/* The options every model command takes (model_opts fields). */
#define CLI_OPT_BACKEND(dest)                                                                      \
    {                                                                                              \
        "--backend", NULL, OPT_FN, (dest), "cpu, cuda or auto",                                    \
            .fn = cli_opt_backend, .arg = "B", .help = "cpu, cuda or auto (default auto)"          \
    }
#define CLI_OPT_THREADS(dest)                                                                      \
    {                                                                                              \
        "--threads", NULL, OPT_INT, (dest), "an integer in [0, 4096]", 0, 4096,                    \
            .arg = "N", .help = "CPU threads (default 0: every online core)"                       \
    }
#define CLI_OPT_WEIGHTS(dest)                                                                      \
    {                                                                                              \
        "--weights", NULL, OPT_FN, (dest), "stored or q8_0",                                       \
            .fn = cli_opt_weights, .arg = "W",                                                     \
            .help = "stored, or q8_0: linear layers quantised to 8 bits at load (default stored)"  \
    }
#define CLI_OPT_CHUNK(dest)                                                                        \
    {                                                                                              \
        "--chunk", NULL, OPT_INT, (dest), "a positive integer", 1, INT64_C(1) << 30,               \
            .arg = "N", .help = "prefill tokens per chunk (default: the library's)"                \
    }

#define CLI_N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#endif
