/*
 * calibrate_split.c - LongMamba calibration on a text or token file, then
 * the global/local channel split at the library's default theta.
 *
 *   calibrate_split MODEL_DIR FILE [WINDOW]
 *
 * FILE is text (through MODEL_DIR/tokenizer.json, or its bytes for a
 * byte-level model) or, when it ends in ".ids", whitespace-separated token
 * ids.  Four windows of WINDOW tokens (default 512) evenly spaced through
 * it are calibrated.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <longmamba.h>

#define N_WIN 4

/* The file's token ids (malloc'd), or NULL. */
static int32_t *read_ids(const char *dir, const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *text = malloc((size_t)len + 1);
    int32_t *ids = malloc(((size_t)len + 1) * sizeof *ids); /* never more ids than bytes */
    if (!text || !ids || fread(text, 1, (size_t)len, f) != (size_t)len) {
        free(text), free(ids), fclose(f);
        return NULL;
    }
    fclose(f);
    text[len] = '\0';
    *n = 0;
    lm_tokenizer *tok = NULL;
    size_t pl = strlen(path);
    if (pl > 4 && strcmp(path + pl - 4, ".ids") == 0) {
        for (char *p = text, *end; (ids[*n] = (int32_t)strtol(p, &end, 10)), end != p; p = end)
            (*n)++;
    } else if (lm_tokenizer_load(dir, &tok, NULL, 0) == LM_OK) {
        lm_tokenizer_encode(tok, text, (size_t)len, ids, (size_t)len + 1, n, NULL, 0);
        lm_tokenizer_free(tok);
    } else {
        for (long i = 0; i < len; i++)
            ids[(*n)++] = (unsigned char)text[i];
    }
    free(text);
    return ids;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL_DIR FILE [WINDOW]\n", argv[0]);
        return 2;
    }
    size_t window = argc == 4 ? (size_t)strtoul(argv[3], NULL, 10) : 512, n = 0;
    char err[256];
    lm_model *model = NULL;
    lm_status st = lm_model_load(argv[1], NULL, &model, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "load: %s: %s\n", lm_status_str(st), err);
        return 1;
    }
    int32_t *ids = read_ids(argv[1], argv[2], &n);
    if (!ids || n < window || window < 2) {
        fprintf(stderr, "%s: cannot read %zu tokens (a window) from it\n", argv[2], window);
        free(ids);
        lm_model_free(model);
        return 1;
    }
    const int32_t *win[N_WIN];
    size_t lens[N_WIN];
    for (size_t i = 0; i < N_WIN; i++) {
        win[i] = ids + (n - window) * i / (N_WIN - 1);
        lens[i] = window;
    }
    lm_calibration *cal = NULL;
    st = lm_calibrate(model, win, lens, N_WIN, NULL, &cal, err, sizeof err);
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(model, &info);
    size_t nl = (size_t)info.n_layer, nc = (size_t)info.n_channels;
    uint8_t *mask = malloc(nl * nc);
    int64_t *counts = malloc(nl * sizeof *counts);
    double theta = lm_longmamba_default_theta(info.arch);
    if (st == LM_OK && mask && counts)
        st = lm_classify_channels(cal, theta, mask, nl * nc, counts, nl, err, sizeof err);
    if (st == LM_OK) {
        int64_t total = 0;
        printf("theta %g, %d windows x %zu tokens\n", theta, N_WIN, window);
        for (size_t l = 0; l < nl; l++) {
            printf("layer %zu: %lld of %zu channels global\n", l, (long long)counts[l], nc);
            total += counts[l];
        }
        printf("total: %lld global, %lld local\n", (long long)total,
               (long long)(nl * nc) - (long long)total);
    } else {
        fprintf(stderr, "calibrate: %s: %s\n", lm_status_str(st), err);
    }
    free(mask);
    free(counts);
    free(ids);
    lm_calibration_free(cal);
    lm_model_free(model);
    return st == LM_OK ? 0 : 1;
}
