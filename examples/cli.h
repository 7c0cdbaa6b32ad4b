/* cli.h - subcommands of the longmamba tool, one function each. */
#ifndef LM_CLI_H
#define LM_CLI_H
int cmd_calibrate(int argc, char **argv);  /* cmd_longmamba.c */
int cmd_channels(int argc, char **argv);   /* cmd_longmamba.c */
int cmd_tokenize(int argc, char **argv);   /* cmd_tokenizer.c */
int cmd_detokenize(int argc, char **argv); /* cmd_tokenizer.c */
int cmd_ppl(int argc, char **argv);        /* cmd_eval.c */
int cmd_passkey(int argc, char **argv);    /* cmd_eval.c */
#endif
