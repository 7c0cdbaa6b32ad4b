/*
 * extref_driver - runs MambaExtend / Mamba Modulation sessions (alone or
 * with LongMamba) through the public API on one model directory, for
 * test/test_ext_ref.py to compare with test/reference/ext_ref.py.
 *
 *   extref_driver MODEL_DIR IN OUT
 *   extref_driver --spsa MODEL_DIR IN OUT
 *
 * IN: i64 n_cases, then per case (little endian):
 *   i64 mode (0 vanilla, 3 MambaExtend, 4 Modulation), i64 chunk_size,
 *   i64 n_scales, f64 scales[n_scales],
 *   i64 use_lm; when 1: f64 theta (<= 0: between the two middle log-decays),
 *     f64 threshold_scale, i64 trigger, i64 n_buckets, i64 buckets[n],
 *     i64 n_win, i64 win_len, i32 windows[n_win * win_len],
 *     i64 calib_modulated (1: lm_calib_params.a_log_scales = the scales),
 *   i64 L, i32 tokens[L], i64 n_dec, i32 dec[n_dec].
 * OUT per case: i64 status, i64 msg_len, msg, then when status is LM_OK:
 *   f32 logits[L][V] (every prefill position), f32 dec_logits[n_dec][V];
 *   when use_lm: f64 theta, f64 log_decay[n_layer][C], f32 thr[n_layer][nb][C].
 * --spsa: IN is i64 mode, i64 iterations, i64 seed, i64 n_win, i64 win_len,
 * i32 windows[n_win * win_len]; lm_scales_calibrate runs twice.  OUT: i64
 * status, msg, then when LM_OK: f64 initial[n_layer], f64 scales[n_layer],
 * f64 loss_initial, f64 loss_final, i64 iterations, i64 same (1: the second
 * run's scales and losses are bit-identical).
 * A test program: it may print and exit on malformed input.
 */
#include "longmamba.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *g_in, *g_out;

static void die(const char *what)
{
    fprintf(stderr, "extref_driver: %s\n", what);
    exit(2);
}

static void rd(void *p, size_t size, size_t n)
{
    if (n && fread(p, size, n, g_in) != n) die("short read");
}

static int64_t rd_i64(void)
{
    int64_t v;
    rd(&v, sizeof v, 1);
    return v;
}

static double rd_f64(void)
{
    double v;
    rd(&v, sizeof v, 1);
    return v;
}

static void *xalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) die("out of memory");
    return p;
}

static void wr(const void *p, size_t size, size_t n)
{
    if (n && fwrite(p, size, n, g_out) != n) die("short write");
}

static void wr_i64(int64_t v) { wr(&v, sizeof v, 1); }

static void wr_msg(const char *msg)
{
    size_t n = strlen(msg);
    wr_i64((int64_t)n);
    wr(msg, 1, n);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run_case(const lm_model *m, const lm_model_info *info)
{
    const int64_t mode = rd_i64(), chunk = rd_i64(), ns = rd_i64();
    if (ns < 0 || ns > 4096 || chunk < 0) die("bad case header");
    double *scales = xalloc((size_t)ns, sizeof(double));
    rd(scales, sizeof(double), (size_t)ns);
    const int64_t use_lm = rd_i64();
    double theta = 0, b = 0;
    int64_t trigger = 0, nb = 0, nw = 0, wl = 0, modulated = 0;
    int64_t *buckets = NULL;
    int32_t *wins = NULL;
    if (use_lm) {
        theta = rd_f64();
        b = rd_f64();
        trigger = rd_i64();
        nb = rd_i64();
        if (nb < 1 || nb > 64) die("bad bucket count");
        buckets = xalloc((size_t)nb, sizeof(int64_t));
        rd(buckets, sizeof(int64_t), (size_t)nb);
        nw = rd_i64();
        wl = rd_i64();
        if (nw < 1 || nw > 64 || wl < 2 || wl > 1 << 20) die("bad windows");
        wins = xalloc((size_t)(nw * wl), sizeof(int32_t));
        rd(wins, sizeof(int32_t), (size_t)(nw * wl));
        modulated = rd_i64();
    }
    const int64_t L = rd_i64();
    if (L < 1 || L > 1 << 20) die("bad prompt length");
    int32_t *tok = xalloc((size_t)L, sizeof(int32_t));
    rd(tok, sizeof(int32_t), (size_t)L);
    const int64_t nd = rd_i64();
    if (nd < 0 || nd > 1 << 16) die("bad decode count");
    int32_t *dec = xalloc((size_t)nd, sizeof(int32_t));
    rd(dec, sizeof(int32_t), (size_t)nd);

    const int64_t V = info->vocab_size, nl = info->n_layer, C = info->n_channels;
    float *logits = xalloc((size_t)((L + nd) * V), sizeof(float));
    char err[512] = "";
    lm_status st = LM_OK;
    lm_calibration *cal = NULL;
    lm_session *s = NULL;
    if (use_lm) {
        const int32_t **wp = xalloc((size_t)nw, sizeof(int32_t *));
        size_t *lens = xalloc((size_t)nw, sizeof(size_t));
        for (int64_t w = 0; w < nw; w++) {
            wp[w] = wins + w * wl;
            lens[w] = (size_t)wl;
        }
        lm_calib_params cp;
        lm_calib_params_init(&cp);
        cp.buckets = buckets;
        cp.n_buckets = (size_t)nb;
        if (modulated) {
            cp.a_log_scales = scales;
            cp.n_a_log_scales = (size_t)ns;
        }
        st = lm_calibrate(m, wp, lens, (size_t)nw, &cp, &cal, err, sizeof err);
        free(wp);
        free(lens);
        if (st == LM_OK && theta <= 0) {
            /* about half of the channels global */
            double *ld = xalloc((size_t)(nl * C), sizeof(double));
            for (int64_t l = 0; l < nl; l++) lm_calibration_get_log_decay(cal, l, ld + l * C, (size_t)C);
            qsort(ld, (size_t)(nl * C), sizeof(double), cmp_dbl);
            const int64_t mid = nl * C / 2;
            theta = exp(0.5 * (ld[mid - 1] + ld[mid]));
            free(ld);
        }
    }
    if (st == LM_OK) {
        lm_session_params sp;
        lm_session_params_init(&sp);
        sp.chunk_size = chunk;
        st = lm_session_create(m, &sp, &s, err, sizeof err);
    }
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.theta = theta;
    lp.threshold_scale = b;
    lp.trigger_length = trigger;
    if (st == LM_OK && mode == LM_MODE_MAMBAEXTEND) {
        lm_mambaextend_params p;
        lm_mambaextend_params_init(&p);
        p.scales = scales;
        p.n_scales = (size_t)ns;
        p.longmamba = cal;
        p.longmamba_params = &lp;
        st = lm_session_set_mambaextend(s, &p);
    } else if (st == LM_OK && mode == LM_MODE_MODULATION) {
        lm_modulation_params p;
        lm_modulation_params_init(&p);
        p.scales = scales;
        p.n_scales = (size_t)ns;
        p.longmamba = cal;
        p.longmamba_params = &lp;
        st = lm_session_set_modulation(s, &p);
    } else if (st == LM_OK && mode != LM_MODE_VANILLA) {
        die("unknown mode");
    }
    if (st == LM_OK)
        st = lm_session_prefill(s, tok, (size_t)L, (size_t)L, logits, (size_t)(L * V));
    for (int64_t k = 0; st == LM_OK && k < nd; k++)
        st = lm_session_decode(s, dec[k], logits + (L + k) * V, (size_t)V);
    if (st != LM_OK && s) snprintf(err, sizeof err, "%s", lm_session_last_error(s));
    wr_i64((int64_t)st);
    wr_msg(err);
    if (st == LM_OK) {
        wr(logits, sizeof(float), (size_t)((L + nd) * V));
        if (use_lm) {
            wr(&theta, sizeof theta, 1);
            double *ld = xalloc((size_t)C, sizeof(double));
            float *thr = xalloc((size_t)C, sizeof(float));
            for (int64_t l = 0; l < nl; l++) {
                lm_calibration_get_log_decay(cal, l, ld, (size_t)C);
                wr(ld, sizeof(double), (size_t)C);
            }
            for (int64_t l = 0; l < nl; l++)
                for (int64_t k = 0; k < nb; k++) {
                    lm_calibration_get_thresholds(cal, l, k, thr, (size_t)C);
                    wr(thr, sizeof(float), (size_t)C);
                }
            free(ld);
            free(thr);
        }
    }
    lm_session_free(s);
    lm_calibration_free(cal);
    free(scales);
    free(buckets);
    free(wins);
    free(tok);
    free(dec);
    free(logits);
}

static void run_spsa(const lm_model *m, const lm_model_info *info)
{
    const int64_t mode = rd_i64(), iters = rd_i64(), seed = rd_i64(), nw = rd_i64(), wl = rd_i64();
    if (nw < 1 || nw > 64 || wl < 2 || wl > 1 << 20) die("bad windows");
    int32_t *wins = xalloc((size_t)(nw * wl), sizeof(int32_t));
    rd(wins, sizeof(int32_t), (size_t)(nw * wl));
    const int32_t **wp = xalloc((size_t)nw, sizeof(int32_t *));
    size_t *lens = xalloc((size_t)nw, sizeof(size_t));
    for (int64_t w = 0; w < nw; w++) {
        wp[w] = wins + w * wl;
        lens[w] = (size_t)wl;
    }
    lm_spsa_params sp;
    lm_spsa_params_init(&sp);
    sp.iterations = (int32_t)iters;
    sp.seed = (uint64_t)seed;
    lm_scales *a = NULL, *b = NULL;
    char err[512] = "";
    lm_status st = lm_scales_calibrate(m, (lm_mode)mode, wp, lens, (size_t)nw, &sp, &a, err, sizeof err);
    if (st == LM_OK) st = lm_scales_calibrate(m, (lm_mode)mode, wp, lens, (size_t)nw, &sp, &b, err, sizeof err);
    wr_i64((int64_t)st);
    wr_msg(err);
    if (st == LM_OK) {
        const size_t nl = (size_t)info->n_layer;
        double *s0 = xalloc(nl, sizeof(double)), *s1 = xalloc(nl, sizeof(double));
        double *t0 = xalloc(nl, sizeof(double)), *t1 = xalloc(nl, sizeof(double));
        lm_scales_get(a, s1, s0, nl);
        lm_scales_get(b, t1, t0, nl);
        lm_scales_info ia = {.struct_size = sizeof ia}, ib = {.struct_size = sizeof ib};
        lm_scales_get_info(a, &ia);
        lm_scales_get_info(b, &ib);
        wr(s0, sizeof(double), nl);
        wr(s1, sizeof(double), nl);
        wr(&ia.loss_initial, sizeof(double), 1);
        wr(&ia.loss_final, sizeof(double), 1);
        wr_i64(ia.iterations);
        const int same = !memcmp(s0, t0, nl * sizeof(double)) && !memcmp(s1, t1, nl * sizeof(double)) &&
                         !memcmp(&ia.loss_initial, &ib.loss_initial, sizeof(double)) &&
                         !memcmp(&ia.loss_final, &ib.loss_final, sizeof(double));
        wr_i64(same);
        free(s0);
        free(s1);
        free(t0);
        free(t1);
    }
    lm_scales_free(a);
    lm_scales_free(b);
    free(wins);
    free(wp);
    free(lens);
}

int main(int argc, char **argv)
{
    int spsa = argc == 5 && !strcmp(argv[1], "--spsa");
    if (argc != 4 && !spsa) {
        fprintf(stderr, "usage: extref_driver [--spsa] MODEL_DIR IN OUT\n");
        return 2;
    }
    argv += spsa;
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    lm_model *m = NULL;
    char err[512];
    if (lm_model_load(argv[1], &mp, &m, err, sizeof err) != LM_OK) {
        fprintf(stderr, "extref_driver: %s: %s\n", argv[1], err);
        return 2;
    }
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(m, &info);
    g_in = fopen(argv[2], "rb");
    g_out = fopen(argv[3], "wb");
    if (!g_in || !g_out) die("cannot open files");
    if (spsa) {
        run_spsa(m, &info);
    } else {
        int64_t n = rd_i64();
        for (int64_t i = 0; i < n; i++) run_case(m, &info);
    }
    if (fclose(g_out) != 0) die("close failed");
    fclose(g_in);
    lm_model_free(m);
    return 0;
}
