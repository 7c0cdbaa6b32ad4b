/* eval_common.h - what `ppl` and `passkey` share: the mode options, list
 * parsers, a progress bar, the model/calibration/session context, JSON
 * output helpers. */
#ifndef LM_EVAL_COMMON_H
#define LM_EVAL_COMMON_H
#include <stdint.h>
#include <stdio.h>

#include "cli_opt.h"
#include "longmamba.h"

#define MAX_MODES 5 /* indexed by lm_mode */
#define MAX_LIST  64

extern const char *const mode_names[MAX_MODES];

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
    lm_mode modes[MAX_MODES];
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
/* Puts the session in `mode`; DeciMamba keeps the last `protect` tokens. */
int set_mode(eval_ctx *c, const eval_opts *o, lm_mode mode, int64_t protect);
/* One prompt from zero state: length hint, prefill, logits of the last
 * n_logits positions. */
int run_prompt(eval_ctx *c, progress *prog, const int32_t *ids, size_t n, size_t n_logits,
               float *logits, size_t cap);

/* ---- JSON ---- */

void json_str(FILE *f, const char *s);
void json_num(FILE *f, double v);
/* The string, or null. */
void json_str_or_null(FILE *f, const char *s);
/* "params": {...} with the values in effect (the library's defaults where
 * an option was not given). */
void print_mode_params(FILE *f, const eval_opts *o, const lm_model_info *info);
/* "longmamba: N WHAT in S s (R tokens/s)" on stderr, after flushing stdout. */
void eval_report_speed(const char *what, double tokens, double secs);
#endif
