/*
 * make_seeds.c - writes the binary seed files of the committed corpus:
 * small safetensors images (fuzz/corpus/safetensors) and calibration
 * files for the m1-tiny-f32 fixture (fuzz/corpus/calibration).  The text
 * seeds (JSON, configs, tokenizer input) are plain files written by hand;
 * the GGUF seeds (fuzz/corpus/gguf) are written by
 * scripts/make_fixture_gguf.py (with llama.cpp's gguf-py).
 *
 *   build/fuzz/make_seeds fuzz/corpus
 */
#include "fuzz.h"
#include "format/safetensors.h"

static int put(const char *dir, const char *name, const lmi_st_out *t, size_t n,
               const char *const *k, const char *const *v, size_t nm)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    lmi_err e = {{0}};
    if (lmi_st_write(path, t, n, k, v, nm, &e) != LM_OK) {
        fprintf(stderr, "make_seeds: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int safetensors_seeds(const char *dir)
{
    int bad = 0;
    const float f[6] = {1, -2, 3.5f, 0, -0.25f, 1e-3f};
    const uint16_t h[4] = {0x3c00, 0xc000, 0x7c00, 0x0001};  /* f16: 1, -2, inf, subnormal */
    const uint16_t bf[4] = {0x3f80, 0xc000, 0x7fc0, 0x0001}; /* bf16: 1, -2, nan, tiny */
    const double d[2] = {0.5, -1e300};
    const int64_t i64[3] = {1, 2, 3};
    const uint8_t b[2] = {1, 0};
    const int64_t s23[2] = {2, 3}, s4[1] = {4}, s2[1] = {2}, s3[1] = {3}, s0[2] = {0, 5};
    lmi_st_out one[] = {{"w", LMI_ST_F32, 2, s23, f}};
    bad |= put(dir, "f32", one, 1, NULL, NULL, 0);
    lmi_st_out many[] = {
        {"a.weight", LMI_ST_F16, 1, s4, h},  {"b.weight", LMI_ST_BF16, 1, s4, bf},
        {"c", LMI_ST_F64, 1, s2, d},         {"ids", LMI_ST_I64, 1, s3, i64},
        {"mask", LMI_ST_BOOL, 1, s2, b},     {"empty", LMI_ST_F32, 2, s0, f},
        {"scalar", LMI_ST_F32, 0, s4, f},
    };
    const char *k[] = {"format", "note"}, *v[] = {"pt", "seed with \"escapes\" \\ and \xc3\xa9"};
    bad |= put(dir, "mixed", many, sizeof many / sizeof many[0], k, v, 2);
    return bad;
}

static int calibration_seeds(const char *dir)
{
    lm_model *m = NULL;
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    char err[512];
    if (lm_model_load(LM_TEST_DATA "/fixtures/m1-tiny-f32", &p, &m, err, sizeof err) != LM_OK) {
        fprintf(stderr, "make_seeds: %s\n", err);
        return 1;
    }
    int32_t w0[40], w1[24];
    for (int i = 0; i < 40; i++) w0[i] = (i * 7 + 3) % 96;
    for (int i = 0; i < 24; i++) w1[i] = (i * 5 + 1) % 96;
    const int32_t *wins[2] = {w0, w1};
    const size_t lens[2] = {40, 24};
    const int64_t buckets[3] = {16, 64, 256};
    int bad = 0;
    for (int variant = 0; variant < 2; variant++) {
        lm_calib_params cp;
        lm_calib_params_init(&cp);
        cp.buckets = buckets;
        cp.n_buckets = variant ? 3 : 2;
        cp.aggregation = variant ? LM_CALIB_AGG_MEAN : LM_CALIB_AGG_MAX;
        cp.clamp = variant ? 0.1 : 0.0;
        lm_calibration *c = NULL;
        if (lm_calibrate(m, wins, lens, variant ? 2 : 1, &cp, &c, err, sizeof err) != LM_OK) {
            fprintf(stderr, "make_seeds: calibrate: %s\n", err);
            bad = 1;
            continue;
        }
        char path[1100];
        snprintf(path, sizeof path, "%s/tiny-%d", dir, variant);
        if (lm_calibration_save(c, path, err, sizeof err) != LM_OK) {
            fprintf(stderr, "make_seeds: save: %s\n", err);
            bad = 1;
        }
        lm_calibration_free(c);
    }
    lm_model_free(m);
    return bad;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)data;
    (void)size;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
        return 2;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/safetensors", argv[1]);
    int bad = safetensors_seeds(dir);
    snprintf(dir, sizeof dir, "%s/calibration", argv[1]);
    bad |= calibration_seeds(dir);
    return bad;
}
