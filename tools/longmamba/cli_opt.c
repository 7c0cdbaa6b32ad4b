/* cli_opt.c - the table-driven option parser (cli_opt.h). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli_opt.h"
#include "cli_util.h"

int cli_opt_usage(const cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "longmamba: %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run 'longmamba %s --help' for usage)\n", cmd->name);
    return CLI_EXIT_USAGE;
}

void cli_opt_help(FILE *f, const cli_cmd *cmd, const cli_opt *const *tables, const int *n_opts,
                  int n_tables)
{
    fprintf(f, "usage: longmamba %s\n", cmd->synopsis);
    if (cmd->about)
        fprintf(f, "\n%s", cmd->about);
    fputc('\n', f);
    for (int t = 0; t < n_tables; t++)
        for (int k = 0; k < n_opts[t]; k++) {
            const cli_opt *o = &tables[t][k];
            if (!o->help)
                continue;
            char lhs[64];
            snprintf(lhs, sizeof lhs, "%s%s%s%s%s", o->name, o->alias ? ", " : "",
                     o->alias ? o->alias : "", o->arg ? " " : "", o->arg ? o->arg : "");
            fprintf(f, "  %-18s %s\n", lhs, o->help);
        }
    if (cmd->more_help)
        cmd->more_help(f);
}

/* The option of the tables whose name (or alias) is arg up to '=' or its
 * end; NULL if none.  *eq: where the "=VALUE" starts, or NULL. */
static const cli_opt *lookup(const cli_opt *const *tables, const int *n_opts, int n_tables,
                             const char *arg, const char **eq)
{
    size_t len = strcspn(arg, "=");
    *eq = arg[len] == '=' ? arg + len + 1 : NULL;
    for (int t = 0; t < n_tables; t++)
        for (int k = 0; k < n_opts[t]; k++) {
            const cli_opt *o = &tables[t][k];
            if ((strlen(o->name) == len && strncmp(arg, o->name, len) == 0) ||
                (o->alias && strlen(o->alias) == len && strncmp(arg, o->alias, len) == 0))
                return o;
        }
    return NULL;
}

/* Stores value in o's destination: 0 ok, 2 after a message. */
static int store(const cli_cmd *cmd, const cli_opt *o, const char *v)
{
    long long ll;
    double d;
    int r = 1;
    switch (o->type) {
    case OPT_FLAG: *(int *)o->dest = 1; return 0;
    case OPT_STR: *(const char **)o->dest = v; return 0;
    case OPT_INT:
        r = cli_parse_int(v, o->ilo, o->ihi, &ll);
        if (r)
            *(long long *)o->dest = ll;
        break;
    case OPT_NUM:
        r = cli_parse_double(v, &d) && d >= o->lo && !(o->lo_open && d == o->lo) && d <= o->hi;
        if (r)
            *(double *)o->dest = d;
        break;
    case OPT_FN:
        r = o->fn(o->dest, v);
        if (r < 0)
            return CLI_EXIT_USAGE;
        break;
    }
    return r ? 0 : cli_opt_usage(cmd, "%s needs %s, not '%s'", o->name, o->what, v);
}

int cli_opt_parse(const cli_cmd *cmd, const cli_opt *const *tables, const int *n_opts, int n_tables,
                  int argc, char **argv, const char **pos, int max_pos, int *n_pos)
{
    *n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = NULL;
        if ((cmd->raw_after <= 0 || *n_pos < cmd->raw_after) &&
            (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            cli_opt_help(stdout, cmd, tables, n_opts, n_tables);
            return CLI_PARSE_HELP;
        }
        int raw = cmd->raw_after > 0 && *n_pos >= cmd->raw_after;
        if (raw || a[0] != '-' || a[1] == '\0') { /* "-" is a positional (stdin) */
            if (*n_pos == max_pos)
                return cli_opt_usage(cmd, "unexpected argument '%s'", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        const cli_opt *o = lookup(tables, n_opts, n_tables, a, &eq);
        if (!o)
            return cli_opt_usage(cmd, "unknown option '%s'", a);
        if (o->type == OPT_FLAG && eq)
            return cli_opt_usage(cmd, "option %s takes no value", o->name);
        if (o->type != OPT_FLAG && !eq) {
            if (i + 1 >= argc)
                return cli_opt_usage(cmd, "option %s needs a value", o->name);
            eq = argv[++i];
        }
        int rc = store(cmd, o, eq);
        if (rc)
            return rc;
    }
    return 0;
}

int cli_opt_parse1(const cli_cmd *cmd, const cli_opt *opts, int n_opts, int argc, char **argv,
                   const char **pos, int max_pos, int *n_pos)
{
    return cli_opt_parse(cmd, &opts, &n_opts, 1, argc, argv, pos, max_pos, n_pos);
}

int cli_opt_backend(void *dest, const char *value)
{
    return cli_parse_backend(value, dest);
}

int cli_opt_weights(void *dest, const char *value)
{
    lm_weight_format *w = dest;
    if (strcmp(value, "stored") == 0)
        *w = LM_WEIGHTS_AS_STORED;
    else if (strcmp(value, "q8_0") == 0)
        *w = LM_WEIGHTS_Q8_0;
    else
        return 0;
    return 1;
}
