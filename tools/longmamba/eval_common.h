/* eval_common.h - what `ppl`, `passkey` and `eval` share: the mode table
 * and options, list parsers, a progress bar, the model/calibration/session
 * context, greedy answers, JSON output helpers. */
#ifndef LM_EVAL_COMMON_H
#define LM_EVAL_COMMON_H
#include <stdint.h>
#include <stdio.h>

#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

#define MAX_MODES 8 /* room for rows of eval_modes[] */
#define MAX_LIST  64

typedef struct ll_list {
    long long v[MAX_LIST];
    int n;
} ll_list;

typedef struct dbl_list {
    double v[MAX_LIST];
    int n;
} dbl_list;

/* OPT_FN parsers of comma-separated lists (dest: ll_list / dbl_list). */
int parse_pos_list(void *dest, const char *s);      /* integers in [1, 2^32] */
int parse_count_list(void *dest, const char *s);    /* integers in [1, 10^6] */
int parse_fraction_list(void *dest, const char *s); /* numbers in [0, 1] */

/* ---- options shared by both commands ---- */

typedef struct eval_opts {
    const char *dir;
    const char *calib_path;
    int modes[MAX_MODES]; /* indices into eval_modes[], in the order given */
    int n_modes;
    double theta, scale;
    long long trigger;
    int32_t deci_layers[MAX_LIST];
    int n_deci_layers;
    long long deci_lbase, deci_min;
    double deci_beta;
    dbl_list ext_scales; /* MambaExtend / Modulation: one per layer */
    lm_backend backend;
    lm_weight_format weights;
    long long threads, chunk;
    int json, verbose;
} eval_opts;

#define EVAL_N_SHARED 16
void eval_opts_init(eval_opts *o);
/* The shared options' table, pointing into o. */
void eval_shared_opts(eval_opts *o, cli_opt t[EVAL_N_SHARED]);
/* --help lines: the library's defaults for the mode parameters. */
void eval_mode_help(FILE *f);
/* After parsing: MODEL_DIR given, a calibration for the longmamba mode; 0 or 2. */
int eval_check_opts(const cli_cmd *cmd, const eval_opts *o);

/* ---- progress bar (stderr, terminals only) ---- */

typedef struct progress {
    int on;
    double total; /* tokens of the whole run */
    double base;  /* tokens of the prefills already finished */
    double start;
    double last; /* time of the last redraw */
    char label[96];
} progress;

void progress_draw(progress *p, double done, int force);
void progress_end(progress *p);

/* ---- model, optional calibration, one session ---- */

typedef struct eval_ctx {
    lm_model *model;
    lm_model_info info;
    lm_calibration *calib;
    lm_session *session;
} eval_ctx;

int eval_ctx_open(eval_ctx *c, const eval_opts *o, progress *prog);
void eval_ctx_free(eval_ctx *c);

/* ---- modes: one row each ---- */

/* What a mode needs on the command line (eval_mode.needs). */
enum { EVAL_NEEDS_CALIB = 1u, /* --calib: a LongMamba calibration */
       EVAL_NEEDS_SCALES = 2u /* --ext-scales: one scale per layer */ };

/* A way of running the model over a long prompt.  A new mode is one row of
 * eval_modes[] (eval_common.c): its --mode name, what it needs, and how it
 * puts a session in the mode (the library's status). */
typedef struct eval_mode {
    const char *name;
    unsigned needs; /* EVAL_NEEDS_* */
    lm_status (*apply)(eval_ctx *c, const eval_opts *o, int64_t protect);
} eval_mode;

extern const eval_mode eval_modes[];
extern const int n_eval_modes;
/* 1 if the options hold what mode (an eval_modes[] index) needs. */
int eval_mode_ready(const eval_opts *o, int mode);
/* The name of o->modes[k]'s row. */
const char *mode_name(int mode);
/* Puts the session in mode (an eval_modes[] index); DeciMamba keeps the
 * last `protect` tokens. */
int set_mode(eval_ctx *c, const eval_opts *o, int mode, int64_t protect);
/* One prompt from zero state: length hint, prefill, logits of the last
 * n_logits positions. */
int run_prompt(eval_ctx *c, progress *prog, const int32_t *ids, size_t n, size_t n_logits,
               float *logits, size_t cap);

/* ---- greedy answers ---- */

/* Ids an answer may use: the tokenizer's (padded rows of a larger
 * embedding never decode), else the model's vocabulary. */
int64_t answer_vocab(const cli_encoder *enc, int64_t vocab);
/* n_gen greedy tokens (argmax over ids < n_argmax) into gen, starting
 * from the logits of a prefill's last position: 0, or 1 after a message. */
int greedy_tokens(eval_ctx *c, float *logits, int64_t n_argmax, int n_gen, int32_t *gen);
/* ids as text in text[0..*nb), NUL-terminated (bytes for a byte-level
 * model); text that does not fit cap is returned empty: 0, or 1. */
int tokens_text(const cli_encoder *enc, const int32_t *ids, size_t n, char *text, size_t cap,
                size_t *nb);

/* ---- JSON ---- */

void json_str(FILE *f, const char *s);
void json_num(FILE *f, double v);
/* text[0..n) as a JSON string: valid UTF-8 kept, any other byte as U+FFFD
 * (a prompt cut inside a character), control bytes escaped. */
void json_text(FILE *f, const char *text, size_t n);
/* The string, or null. */
void json_str_or_null(FILE *f, const char *s);
/* "params": {...} with the values in effect (the library's defaults where
 * an option was not given). */
void print_mode_params(FILE *f, const eval_opts *o, const lm_model_info *info);
/* "longmamba: N WHAT in S s (R tokens/s)" on stderr, after flushing stdout. */
void eval_report_speed(const char *what, double tokens, double secs);
#endif
