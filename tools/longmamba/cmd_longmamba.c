/*
 * cmd_longmamba.c - the `calibrate` and `channels` subcommands of the
 * longmamba tool (LongMamba calibration, LONGMAMBA.md §2-3).
 *
 * Links only the public library.  Exit status: 0 success, 1 failure
 * (message on stderr), 2 usage error.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

/* The tool's calibration set-up (LongMamba's: 20 windows of 2000 tokens);
 * the library has no default for these. */
#define DEFAULT_WINDOW 2000
#define DEFAULT_COUNT  20
#define STR_(x)        #x
#define STR(x)         STR_(x)

/* theta: the value given, else the library's for the architecture. */
static double theta_or_default(double theta, lm_arch arch)
{
    return theta > 0.0 ? theta : lm_longmamba_default_theta(arch);
}

static const cli_cmd calibrate_cmd = {
    "calibrate",
    "calibrate MODEL_DIR (--text FILE | --tokens FILE) -o CALIB.safetensors\n"
    "           [--window N] [--count M] [--clamp SC] [--agg max|mean]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--weights stored|q8_0]",
    "Runs M vanilla prefills of N tokens taken evenly spaced\n"
    "through the calibration text, and saves per layer and channel the\n"
    "cumulative log-decay and the token-filter thresholds of every length\n"
    "bucket; prints the share of global channels at the default theta.\n",
    cli_theta_help, 0};

static const cli_cmd channels_cmd = {
    "channels",
    "channels MODEL_DIR CALIB.safetensors [--theta X] [--backend cpu|cuda|auto] [--threads N]\n"
    "           [--weights W]",
    "Prints how many channels of each layer are global (cumulative decay over the\n"
    "calibration length > theta).\n",
    cli_theta_help, 0};

static int parse_agg(void *dest, const char *v)
{
    lm_calib_agg *agg = dest;
    if (strcmp(v, "max") == 0)
        *agg = LM_CALIB_AGG_MAX;
    else if (strcmp(v, "mean") == 0)
        *agg = LM_CALIB_AGG_MEAN;
    else
        return 0;
    return 1;
}

/* ---- helpers ------------------------------------------------------------- */

/* Token ids of a --text file: the model's tokenizer.json, or raw bytes for
 * a byte-level model; refused otherwise. */
static int32_t *read_text_file(const char *path, const char *dir, int64_t vocab, size_t *n_out)
{
    cli_encoder enc;
    if (cli_encoder_open(&enc, dir, vocab, "pass token ids with --tokens FILE")) {
        cli_encoder_close(&enc);
        return NULL;
    }
    int32_t *ids = cli_encode_file(&enc, path, n_out);
    cli_encoder_close(&enc);
    return ids;
}

typedef struct progress_ctx {
    int tty;
    int64_t window;
    time_t start;
} progress_ctx;

static int on_progress(void *user, int64_t done, int64_t total)
{
    progress_ctx *p = user;
    if (p->tty) {
        fprintf(stderr, "\rcalibrating: %lld / %lld tokens (%.0f s)", (long long)done,
                (long long)total, difftime(time(NULL), p->start));
        if (done == total)
            fputc('\n', stderr);
        fflush(stderr);
    }
    return 0;
}

/* ---- calibrate ------------------------------------------------------------- */

typedef struct calib_opts {
    const char *dir, *text, *tokens, *out;
    long long window, count;
    double clamp;
    lm_calib_agg agg;
    model_opts mo;
} calib_opts;

/* 0, or an exit status (help printed: CLI_PARSE_HELP). */
static int calib_parse(calib_opts *o, int argc, char **argv)
{
    const cli_opt opts[] = {
        {"--text", NULL, OPT_STR, &o->text, .arg = "FILE",
         .help = "UTF-8 text: MODEL_DIR/tokenizer.json, or bytes for a byte-level model"},
        {"--tokens", NULL, OPT_STR, &o->tokens, .arg = "FILE",
         .help = "whitespace-separated integer token ids"},
        {"-o", "--output", OPT_STR, &o->out, .arg = "FILE", .help = "the calibration to write"},
        {"--window", NULL, OPT_INT, &o->window, "an integer >= 2", 2, INT32_MAX, .arg = "N",
         .help = "tokens per window (default " STR(DEFAULT_WINDOW) ")"},
        {"--count", NULL, OPT_INT, &o->count, "an integer >= 1", 1, 1000000, .arg = "M",
         .help = "windows (default " STR(DEFAULT_COUNT) ")"},
        {"--clamp", NULL, OPT_NUM, &o->clamp, "a number in [0, 0.2]", .lo = 0.0, .hi = 0.2,
         .arg = "SC", .help = "clamp delta to its top-SC value first (default 0 = off)"},
        {"--agg", NULL, OPT_FN, &o->agg, "max or mean", .fn = parse_agg, .arg = "A",
         .help = "aggregate windows by elementwise max (default) or mean"},
        CLI_OPT_BACKEND(&o->mo.backend),
        CLI_OPT_THREADS(&o->mo.threads), CLI_OPT_WEIGHTS(&o->mo.weights)};
    int n_pos = 0;
    int rc = cli_opt_parse1(&calibrate_cmd, opts, CLI_N(opts), argc, argv, &o->dir, 1, &n_pos);
    if (rc)
        return rc;
    if (!o->dir)
        return cli_opt_usage(&calibrate_cmd, "MODEL_DIR is missing");
    if (!o->text == !o->tokens)
        return cli_opt_usage(&calibrate_cmd, "give exactly one of --text FILE and --tokens FILE");
    if (!o->out)
        return cli_opt_usage(&calibrate_cmd, "-o CALIB.safetensors is missing");
    return 0;
}

/* count windows of `window` tokens evenly spaced through ids[0..n):
 * start_i = i * (n - W) / (M - 1). */
static void place_windows(const int32_t *ids, size_t n, long long window, long long count,
                          const int32_t **win, size_t *lens)
{
    size_t span = n - (size_t)window;
    for (long long i = 0; i < count; i++) {
        size_t start = count == 1 ? 0 : (size_t)((double)span * (double)i / (double)(count - 1));
        win[i] = ids + (start > span ? span : start);
        lens[i] = (size_t)window;
    }
}

/* The summary of a saved calibration. */
static void calib_report(const calib_opts *o, const lm_model_info *info, const lm_calibration *cal,
                         size_t n_tok, double secs)
{
    lm_calibration_info ci = {.struct_size = sizeof ci};
    lm_calibration_get_info(cal, &ci);
    double theta = theta_or_default(0.0, info->arch);
    size_t nm = (size_t)(ci.n_layer * ci.n_channels);
    uint8_t *mask = malloc(nm ? nm : 1);
    long long global = 0;
    if (mask && lm_classify_channels(cal, theta, mask, nm, NULL, 0, NULL, 0) == LM_OK)
        for (size_t i = 0; i < nm; i++)
            global += mask[i];
    free(mask);
    printf("calibration:  %s\n", o->out);
    printf("model:        %s (%s, %lld layers x %lld channels, fingerprint %016llx)\n", o->dir,
           cli_arch_name(info->arch), (long long)ci.n_layer, (long long)ci.n_channels,
           (unsigned long long)ci.fingerprint);
    printf("windows:      %lld x %lld tokens from %s (%zu tokens)\n", o->count, o->window,
           o->text ? o->text : o->tokens, n_tok);
    printf("aggregation:  %s, clamp %g, %lld length buckets\n",
           o->agg == LM_CALIB_AGG_MAX ? "max" : "mean", o->clamp, (long long)ci.n_buckets);
    printf("global:       %lld of %zu channels (%.1f%%) at theta %g\n", global, nm,
           nm ? 100.0 * (double)global / (double)nm : 0.0, theta);
    printf("time:         %.2f s (%.0f tokens/s)\n", secs,
           secs > 0 ? (double)o->window * (double)o->count / secs : 0.0);
}

/* Calibrates on the windows and saves: 0, or 1 after a message. */
static int calib_run(const calib_opts *o, lm_model *model, const lm_model_info *info,
                     const int32_t **win, size_t *lens, size_t n_tok)
{
    progress_ctx pc = {isatty(2), 0, time(NULL)};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.aggregation = o->agg;
    cp.clamp = o->clamp;
    cp.progress = on_progress;
    cp.progress_user = &pc;
    lm_calibration *cal = NULL;
    char err[512];
    double t0 = cli_seconds();
    lm_status st = lm_calibrate(model, (const int32_t *const *)win, lens, (size_t)o->count, &cp,
                                &cal, err, sizeof err);
    double secs = cli_seconds() - t0;
    int rc = 0;
    if (st != LM_OK)
        rc = cli_fail_status("calibration failed", st, err);
    else if ((st = lm_calibration_save(cal, o->out, err, sizeof err)) != LM_OK)
        rc = cli_fail_status("cannot save the calibration", st, err);
    else
        calib_report(o, info, cal, n_tok, secs);
    lm_calibration_free(cal);
    return rc;
}

int cmd_calibrate(int argc, char **argv)
{
    calib_opts o = {NULL,
                    NULL,
                    NULL,
                    NULL,
                    DEFAULT_WINDOW,
                    DEFAULT_COUNT,
                    0.0,
                    LM_CALIB_AGG_MAX,
                    {LM_BACKEND_AUTO, 0, 0, LM_WEIGHTS_AS_STORED}};
    int rc = calib_parse(&o, argc, argv);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(o.dir, o.mo.backend, o.mo.threads, o.mo.weights, &model, &info))
        return 1;
    size_t n_tok = 0;
    int32_t *ids = o.text ? read_text_file(o.text, o.dir, info.vocab_size, &n_tok)
                          : cli_read_token_file(o.tokens, info.vocab_size, &n_tok);
    const int32_t **win = NULL;
    size_t *lens = NULL;
    rc = 1;
    if (!ids)
        goto out;
    if (n_tok < (size_t)o.window) {
        cli_fail("%s has %zu tokens, fewer than one window of %lld (use a "
                 "longer text or a smaller --window)",
                 o.text ? o.text : o.tokens, n_tok, o.window);
        goto out;
    }
    if ((double)o.window * (double)o.count > (double)n_tok)
        fprintf(stderr, "longmamba: note: %lld windows of %lld tokens overlap in %zu tokens\n",
                o.count, o.window, n_tok);
    win = malloc((size_t)o.count * sizeof *win);
    lens = malloc((size_t)o.count * sizeof *lens);
    if (!win || !lens) {
        cli_fail("out of memory");
        goto out;
    }
    place_windows(ids, n_tok, o.window, o.count, win, lens);
    rc = calib_run(&o, model, &info, win, lens, n_tok);
out:
    free(win);
    free(lens);
    free(ids);
    lm_model_free(model);
    return rc;
}

/* ---- channels -------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The per-layer table of a classification (counts per layer). */
static void channels_table(const char *path, const lm_calibration *cal, double theta,
                           const int64_t *counts, double *ld)
{
    lm_calibration_info ci = {.struct_size = sizeof ci};
    lm_calibration_get_info(cal, &ci);
    size_t nl = (size_t)ci.n_layer, C = (size_t)ci.n_channels;
    printf("calibration: %s (%lld windows x %lld tokens, %s, clamp %g)\n", path,
           (long long)ci.n_windows, (long long)ci.calib_length,
           ci.aggregation == LM_CALIB_AGG_MEAN ? "mean" : "max", ci.clamp);
    printf("theta: %g (log %.4g)\n\n", theta, log(theta));
    printf("%5s  %8s  %8s  %7s  %12s\n", "layer", "global", "channels", "global%", "median ln d");
    long long total = 0;
    for (size_t l = 0; l < nl; l++) {
        /* median log-decay: where theta would split the layer in half */
        lm_calibration_get_log_decay(cal, (int64_t)l, ld, C);
        qsort(ld, C, sizeof *ld, cmp_double);
        double med = C % 2 ? ld[C / 2] : 0.5 * (ld[C / 2 - 1] + ld[C / 2]);
        printf("%5zu  %8lld  %8zu  %6.1f%%  %12.4g\n", l, (long long)counts[l], C,
               100.0 * (double)counts[l] / (double)C, med);
        total += counts[l];
    }
    printf("\ntotal: %lld of %zu channels global (%.2f%%)\n", total, nl * C,
           100.0 * (double)total / (double)(nl * C));
}

/* Classifies and prints: 0, or 1 after a message. */
static int channels_run(const char *path, const lm_calibration *cal, double theta)
{
    lm_calibration_info ci = {.struct_size = sizeof ci};
    lm_calibration_get_info(cal, &ci);
    size_t nl = (size_t)ci.n_layer, C = (size_t)ci.n_channels;
    uint8_t *mask = malloc(nl * C);
    int64_t *counts = malloc(nl * sizeof *counts);
    double *ld = malloc(C * sizeof *ld);
    char err[512];
    lm_status st;
    int rc = 0;
    if (!mask || !counts || !ld)
        rc = cli_fail("out of memory");
    else if ((st = lm_classify_channels(cal, theta, mask, nl * C, counts, nl, err, sizeof err)) !=
             LM_OK)
        rc = cli_fail_status("cannot classify channels", st, err);
    else
        channels_table(path, cal, theta, counts, ld);
    free(mask);
    free(counts);
    free(ld);
    return rc;
}

int cmd_channels(int argc, char **argv)
{
    double theta = 0.0;
    /* the model is only needed for its identity */
    model_opts mo = {LM_BACKEND_CPU, 0, 0, LM_WEIGHTS_AS_STORED};
    const cli_opt opts[] = {{"--theta", NULL, OPT_NUM, &theta, "a number > 0", .lo = 0.0,
                             .hi = INFINITY, .lo_open = 1, .arg = "X",
                             .help = "global iff decay > X (default: the library's, below)"},
                            CLI_OPT_BACKEND(&mo.backend),
                            CLI_OPT_THREADS(&mo.threads), CLI_OPT_WEIGHTS(&mo.weights)};
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    int rc = cli_opt_parse1(&channels_cmd, opts, CLI_N(opts), argc, argv, pos, 2, &n_pos);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (n_pos != 2)
        return cli_opt_usage(&channels_cmd, "MODEL_DIR and CALIB are required");

    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(pos[0], mo.backend, mo.threads, mo.weights, &model, &info))
        return 1;
    lm_calibration *cal = NULL;
    rc = cli_load_calibration(pos[1], model, &cal) ||
         channels_run(pos[1], cal, theta_or_default(theta, info.arch));
    lm_calibration_free(cal);
    lm_model_free(model);
    return rc;
}
