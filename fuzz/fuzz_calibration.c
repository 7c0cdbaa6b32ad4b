/*
 * fuzz_calibration.c - calibration files (lm_calibration_load): the input
 * is written to a scratch file and loaded with no model and with the
 * m1-tiny-f32 fixture model (which adds the model-match checks); what
 * loads is read back through every getter and the channel classifier.
 */
#include "fuzz.h"
#include "internal.h"

static lm_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    char err[256];
    if (lm_model_load(LM_TEST_DATA "/fixtures/m1-tiny-f32", &p, &model, err, sizeof err) != LM_OK) {
        fprintf(stderr, "fuzz_calibration: %s\n", err);
        abort();
    }
    return 0;
}

static void exercise(const lm_calibration *c)
{
    lm_calibration_info info = {.struct_size = sizeof info};
    FUZZ_CHECK(lm_calibration_get_info(c, &info) == LM_OK);
    FUZZ_CHECK(info.n_layer > 0 && info.n_channels > 0 && info.n_buckets > 0);
    FUZZ_CHECK(info.n_layer <= 4096 && info.n_channels <= (1 << 22) && info.n_buckets <= 4096);
    int64_t *b = malloc((size_t)info.n_buckets * sizeof *b);
    double *ld = malloc((size_t)info.n_channels * sizeof *ld);
    float *thr = malloc((size_t)info.n_channels * sizeof *thr);
    size_t n_mask = (size_t)info.n_layer * (size_t)info.n_channels;
    uint8_t *mask = malloc(n_mask);
    int64_t *counts = malloc((size_t)info.n_layer * sizeof *counts);
    if (b && ld && thr && mask && counts) {
        FUZZ_CHECK(lm_calibration_get_buckets(c, b, (size_t)info.n_buckets) == LM_OK);
        for (int64_t k = 1; k < info.n_buckets; k++) FUZZ_CHECK(b[k] > b[k - 1]);
        for (int64_t l = 0; l < info.n_layer; l++) {
            FUZZ_CHECK(lm_calibration_get_log_decay(c, l, ld, (size_t)info.n_channels) == LM_OK);
            FUZZ_CHECK(lm_calibration_get_thresholds(c, l, info.n_buckets - 1, thr,
                                                     (size_t)info.n_channels) == LM_OK);
        }
        FUZZ_CHECK(lm_calibration_get_log_decay(c, info.n_layer, ld, (size_t)info.n_channels) ==
                   LM_ERR_OUT_OF_RANGE);
        lm_status st = lm_classify_channels(c, 1e-3, mask, n_mask, counts, (size_t)info.n_layer,
                                            NULL, 0);
        FUZZ_CHECK(st == LM_OK);
    }
    free(b);
    free(ld);
    free(thr);
    free(mask);
    free(counts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model) LLVMFuzzerInitialize(NULL, NULL);
    char path[320];
    if (fz_write("calib.safetensors", data, size, path, sizeof path) != 0) return 0;
    char err[512];
    for (int with_model = 0; with_model < 2; with_model++) {
        lm_calibration *c = NULL;
        err[0] = '\0';
        lm_status st = lm_calibration_load(path, with_model ? model : NULL, &c, err, sizeof err);
        if (st == LM_OK) {
            FUZZ_CHECK(c != NULL);
            exercise(c);
            if (with_model) {
                /* A session accepts what the loader matched to its model. */
                lm_session *s = NULL;
                FUZZ_CHECK(lm_session_create(model, NULL, &s, NULL, 0) == LM_OK);
                FUZZ_CHECK(lm_session_set_longmamba(s, c, NULL) == LM_OK);
                lm_session_free(s);
            }
            lm_calibration_free(c);
        } else {
            FUZZ_CHECK(c == NULL && err[0] != '\0');
        }
    }
    return 0;
}
