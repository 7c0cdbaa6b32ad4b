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
#include "cli_util.h"
#include "longmamba.h"

#define DEFAULT_WINDOW 2000
#define DEFAULT_COUNT  20

static const char calibrate_usage[] =
    "usage: longmamba calibrate MODEL_DIR (--text FILE | --tokens FILE) -o CALIB.safetensors\n"
    "           [--window N] [--count M] [--clamp SC] [--agg max|mean]\n"
    "           [--backend cpu|cuda|auto] [--threads N]\n"
    "\n"
    "Runs M vanilla prefills of N tokens (default 20 x 2000) taken evenly spaced\n"
    "through the calibration text, and saves per layer and channel the\n"
    "cumulative log-decay and the token-filter thresholds of every length\n"
    "bucket (1k .. 192k tokens).\n"
    "  --text FILE    UTF-8 text: encoded with MODEL_DIR/tokenizer.json, or as raw\n"
    "                 bytes for a byte-level model (vocabulary 256 or\n"
    "                 \"byte_level\": true in config.json)\n"
    "  --tokens FILE  whitespace-separated integer token ids\n"
    "  --clamp SC     clamp Δ to its top-SC value before the statistics, SC in\n"
    "                 [0, 0.2] (default 0 = off)\n"
    "  --agg          aggregate windows by elementwise max (default) or mean\n";

static const char channels_usage[] =
    "usage: longmamba channels MODEL_DIR CALIB.safetensors [--theta X]\n"
    "           [--backend cpu|cuda|auto] [--threads N]\n"
    "\n"
    "Prints how many channels of each layer are global (cumulative decay over the\n"
    "calibration length > theta; default 1e-3 for Mamba-1, 5e-2 for Mamba-2).\n";

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

int cmd_calibrate(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL, *tokens = NULL, *out = NULL;
    long long window = DEFAULT_WINDOW, count = DEFAULT_COUNT, threads = 0;
    double clamp = 0.0;
    lm_calib_agg agg = LM_CALIB_AGG_MAX;
    lm_backend backend = LM_BACKEND_AUTO;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(calibrate_usage, stdout);
            return 0;
        }
        if (a[0] == '-' && a[1] != '\0') {
            if (i + 1 >= argc)
                return cli_usage(calibrate_usage, "%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--text") == 0)
                text = v;
            else if (strcmp(a, "--tokens") == 0)
                tokens = v;
            else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)
                out = v;
            else if (strcmp(a, "--window") == 0) {
                if (!cli_parse_int(v, 2, INT32_MAX, &window))
                    return cli_usage(calibrate_usage, "--window needs an integer >= 2, got '%s'",
                                     v);
            } else if (strcmp(a, "--count") == 0) {
                if (!cli_parse_int(v, 1, 1000000, &count))
                    return cli_usage(calibrate_usage, "--count needs an integer >= 1, got '%s'", v);
            } else if (strcmp(a, "--clamp") == 0) {
                if (!cli_parse_double(v, &clamp) || clamp < 0.0 || clamp > 0.2)
                    return cli_usage(calibrate_usage,
                                     "--clamp needs a number in [0, 0.2], got '%s'", v);
            } else if (strcmp(a, "--agg") == 0) {
                if (strcmp(v, "max") == 0)
                    agg = LM_CALIB_AGG_MAX;
                else if (strcmp(v, "mean") == 0)
                    agg = LM_CALIB_AGG_MEAN;
                else
                    return cli_usage(calibrate_usage, "--agg is max or mean, not '%s'", v);
            } else if (strcmp(a, "--backend") == 0) {
                if (!cli_parse_backend(v, &backend))
                    return cli_usage(calibrate_usage, "--backend is cpu, cuda or auto, not '%s'",
                                     v);
            } else if (strcmp(a, "--threads") == 0) {
                if (!cli_parse_int(v, 0, 4096, &threads))
                    return cli_usage(calibrate_usage, "--threads needs an integer >= 0, got '%s'",
                                     v);
            } else {
                return cli_usage(calibrate_usage, "unknown option '%s'", a);
            }
        } else if (!dir) {
            dir = a;
        } else {
            return cli_usage(calibrate_usage, "unexpected argument '%s'", a);
        }
    }
    if (!dir)
        return cli_usage(calibrate_usage, "%s", "MODEL_DIR is missing");
    if (!text == !tokens)
        return cli_usage(calibrate_usage, "%s",
                         "give exactly one of --text FILE and --tokens FILE");
    if (!out)
        return cli_usage(calibrate_usage, "%s", "-o CALIB.safetensors is missing");

    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(dir, backend, threads, &model, &info))
        return 1;

    size_t n_tok = 0;
    int32_t *ids = text ? read_text_file(text, dir, info.vocab_size, &n_tok)
                        : cli_read_token_file(tokens, info.vocab_size, &n_tok);
    if (!ids) {
        lm_model_free(model);
        return 1;
    }
    if (n_tok < (size_t)window) {
        cli_fail("%s has %zu tokens, fewer than one window of %lld (use a "
                 "longer text or a smaller --window)",
                 text ? text : tokens, n_tok, window);
        free(ids);
        lm_model_free(model);
        return 1;
    }
    if ((double)window * (double)count > (double)n_tok)
        fprintf(stderr, "longmamba: note: %lld windows of %lld tokens overlap in %zu tokens\n",
                count, window, n_tok);

    /* Windows evenly spaced: start_i = i * (n - W) / (M - 1). */
    const int32_t **win = malloc((size_t)count * sizeof *win);
    size_t *lens = malloc((size_t)count * sizeof *lens);
    if (!win || !lens) {
        cli_fail("out of memory");
        free(win);
        free(lens);
        free(ids);
        lm_model_free(model);
        return 1;
    }
    size_t span = n_tok - (size_t)window;
    for (long long i = 0; i < count; i++) {
        size_t start = count == 1 ? 0 : (size_t)((double)span * (double)i / (double)(count - 1));
        if (start > span)
            start = span;
        win[i] = ids + start;
        lens[i] = (size_t)window;
    }

    progress_ctx pc = {isatty(2), 0, time(NULL)};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.aggregation = agg;
    cp.clamp = clamp;
    cp.progress = on_progress;
    cp.progress_user = &pc;
    lm_calibration *cal = NULL;
    char err[512];
    double t0 = cli_seconds();
    lm_status st = lm_calibrate(model, (const int32_t *const *)win, lens, (size_t)count, &cp,
                                &cal, err, sizeof err);
    double secs = cli_seconds() - t0;
    free(win);
    free(lens);
    free(ids);
    int rc = 0;
    if (st != LM_OK) {
        rc = cli_fail_status("calibration failed", st, err);
    } else if ((st = lm_calibration_save(cal, out, err, sizeof err)) != LM_OK) {
        rc = cli_fail_status("cannot save the calibration", st, err);
    } else {
        lm_calibration_info ci = {.struct_size = sizeof ci};
        lm_calibration_get_info(cal, &ci);
        double theta = info.arch == LM_ARCH_MAMBA2 ? 5e-2 : 1e-3;
        size_t nm = (size_t)(ci.n_layer * ci.n_channels);
        uint8_t *mask = malloc(nm ? nm : 1);
        long long global = 0;
        if (mask && lm_classify_channels(cal, theta, mask, nm, NULL, 0, NULL, 0) == LM_OK)
            for (size_t i = 0; i < nm; i++)
                global += mask[i];
        free(mask);
        printf("calibration:  %s\n", out);
        printf("model:        %s (%s, %lld layers x %lld channels, fingerprint %016llx)\n", dir,
               info.arch == LM_ARCH_MAMBA2 ? "mamba2" : "mamba1", (long long)ci.n_layer,
               (long long)ci.n_channels, (unsigned long long)ci.fingerprint);
        printf("windows:      %lld x %lld tokens from %s (%zu tokens)\n", count, window,
               text ? text : tokens, n_tok);
        printf("aggregation:  %s, clamp %g, %lld length buckets\n",
               agg == LM_CALIB_AGG_MAX ? "max" : "mean", clamp, (long long)ci.n_buckets);
        printf("global:       %lld of %zu channels (%.1f%%) at theta %g\n", global, nm,
               nm ? 100.0 * (double)global / (double)nm : 0.0, theta);
        printf("time:         %.2f s (%.0f tokens/s)\n", secs,
               secs > 0 ? (double)window * (double)count / secs : 0.0);
    }
    lm_calibration_free(cal);
    lm_model_free(model);
    return rc;
}

/* ---- channels -------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_channels(int argc, char **argv)
{
    const char *dir = NULL, *path = NULL;
    double theta = 0.0;
    long long threads = 0;
    lm_backend backend = LM_BACKEND_CPU; /* the model is only needed for its identity */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(channels_usage, stdout);
            return 0;
        }
        if (a[0] == '-' && a[1] != '\0') {
            if (i + 1 >= argc)
                return cli_usage(channels_usage, "%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--theta") == 0) {
                if (!cli_parse_double(v, &theta) || !(theta > 0.0))
                    return cli_usage(channels_usage, "--theta needs a number > 0, got '%s'", v);
            } else if (strcmp(a, "--backend") == 0) {
                if (!cli_parse_backend(v, &backend))
                    return cli_usage(channels_usage, "--backend is cpu, cuda or auto, not '%s'", v);
            } else if (strcmp(a, "--threads") == 0) {
                if (!cli_parse_int(v, 0, 4096, &threads))
                    return cli_usage(channels_usage, "--threads needs an integer >= 0, got '%s'",
                                     v);
            } else {
                return cli_usage(channels_usage, "unknown option '%s'", a);
            }
        } else if (!dir) {
            dir = a;
        } else if (!path) {
            path = a;
        } else {
            return cli_usage(channels_usage, "unexpected argument '%s'", a);
        }
    }
    if (!dir || !path)
        return cli_usage(channels_usage, "%s", "MODEL_DIR and CALIB are required");

    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(dir, backend, threads, &model, &info))
        return 1;
    if (theta == 0.0)
        theta = info.arch == LM_ARCH_MAMBA2 ? 5e-2 : 1e-3;

    lm_calibration *cal = NULL;
    if (cli_load_calibration(path, model, &cal)) {
        lm_model_free(model);
        return 1;
    }
    char err[512];
    lm_status st;
    lm_calibration_info ci = {.struct_size = sizeof ci};
    lm_calibration_get_info(cal, &ci);
    size_t nl = (size_t)ci.n_layer, C = (size_t)ci.n_channels;
    uint8_t *mask = malloc(nl * C);
    int64_t *counts = malloc(nl * sizeof *counts);
    double *ld = malloc(C * sizeof *ld);
    int rc = 0;
    if (!mask || !counts || !ld) {
        cli_fail("out of memory");
        rc = 1;
    } else if ((st = lm_classify_channels(cal, theta, mask, nl * C, counts, nl, err, sizeof err)) !=
               LM_OK) {
        rc = cli_fail_status("cannot classify channels", st, err);
    } else {
        printf("calibration: %s (%lld windows x %lld tokens, %s, clamp %g)\n", path,
               (long long)ci.n_windows, (long long)ci.calib_length,
               ci.aggregation == LM_CALIB_AGG_MEAN ? "mean" : "max", ci.clamp);
        printf("theta: %g (log %.4g)\n\n", theta, log(theta));
        printf("%5s  %8s  %8s  %7s  %12s\n", "layer", "global", "channels", "global%",
               "median ln d");
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
    free(mask);
    free(counts);
    free(ld);
    lm_calibration_free(cal);
    lm_model_free(model);
    return rc;
}
