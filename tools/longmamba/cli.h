/* cli.h - subcommands of the longmamba tool, one function each; each sees
 * argv[0] = its own name and returns the exit status. */
#ifndef LM_CLI_H
#define LM_CLI_H
#include "longmamba.h"
int cmd_check(int argc, char **argv);      /* cmd_check.c */
int cmd_generate(int argc, char **argv);   /* cmd_generate.c */
int cmd_calibrate(int argc, char **argv);  /* cmd_longmamba.c */
int cmd_channels(int argc, char **argv);   /* cmd_longmamba.c */
int cmd_tokenize(int argc, char **argv);   /* cmd_tokenizer.c */
int cmd_detokenize(int argc, char **argv); /* cmd_tokenizer.c */
int cmd_ppl(int argc, char **argv);        /* cmd_ppl.c */
int cmd_passkey(int argc, char **argv);    /* cmd_passkey.c */
int cmd_eval(int argc, char **argv);       /* cmd_eval.c */

/* Options every model command takes. */
typedef struct model_opts {
    lm_backend backend;
    long long threads;
    long long chunk;
    lm_weight_format weights;
} model_opts;

/* "mamba1", "mamba2", "falcon_mamba" (longmamba.c). */
const char *cli_arch_name(lm_arch a);
#endif
