/*
 * scales.c - per-layer scales for MambaExtend and Mamba Modulation by
 * zeroth-order SPSA (METHODS.md §1, Pile schedule; §2 uses the same
 * machinery), and their artifact: safetensors with the model fingerprint,
 * the target length and the SPSA settings, like lib/calibration.c's.
 *
 * The objective is the mean next-token cross-entropy over the caller's
 * windows, every position scored, with the mode on (METHODS.md §8); the
 * forward passes run through an internal session, so both backends work.
 * Our choices where the authors differ or are silent: cross-entropy rather
 * than its exp (same minimiser, better-scaled differences); no acceptance
 * step on test documents (the caller holds out its own text); the final
 * scales are those after the last iteration.
 */
#include "internal.h"
#include "format/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LMI_SCALES_FORMAT  "longmamba-scales"
#define LMI_SCALES_VERSION "1"
#define SPSA_MIN_SCALE     0.01
#define SPSA_LOGIT_FLOATS  (1 << 24) /* logits rows per prefill piece: at most 64 MB */

struct lm_scales {
    lm_mode mode;
    lm_arch arch;
    int64_t n_layer;
    uint64_t fingerprint;
    int64_t target_length, n_windows;
    int32_t iterations;
    uint64_t seed;
    double loss_initial, loss_final;
    int32_t with_longmamba;
    double *scales;          /* [n_layer] */
    double *initial;         /* [n_layer] s0 */
};

void lm_spsa_params_init(lm_spsa_params *params)
{
    if (!params) return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
}

void lm_scales_free(lm_scales *sc)
{
    if (!sc) return;
    lmi_free(sc->scales);
    lmi_free(sc->initial);
    lmi_free(sc);
}

static lm_scales *scales_new(int64_t n_layer)
{
    lm_scales *sc = lmi_alloc(1, sizeof *sc);
    if (!sc) return NULL;
    sc->n_layer = n_layer;
    sc->scales = lmi_alloc((size_t)n_layer, sizeof(double));
    sc->initial = lmi_alloc((size_t)n_layer, sizeof(double));
    if (!sc->scales || !sc->initial) {
        lm_scales_free(sc);
        return NULL;
    }
    return sc;
}

/* The header's generator: splitmix64 over a counter starting at the seed. */
static uint64_t spsa_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* ---- the objective ------------------------------------------------------ */

typedef struct spsa_run {
    const lm_model *model;
    lm_mode mode;
    const int32_t *const *windows;
    const size_t *lengths;
    size_t n_windows;
    const lm_calibration *lm_calib;
    const lm_longmamba_params *lm_params;
    lm_session *s;
    float *logits;           /* [piece][vocab] */
    int64_t piece;
} spsa_run;

/* Puts the run's session in its mode with scales sc. */
static lm_status set_scales(spsa_run *r, const double *sc, lmi_err *e)
{
    const size_t nl = (size_t)r->model->dims.n_layer;
    lm_status st;
    if (r->mode == LM_MODE_MAMBAEXTEND) {
        lm_mambaextend_params p;
        lm_mambaextend_params_init(&p);
        p.scales = sc;
        p.n_scales = nl;
        p.longmamba = r->lm_calib;
        p.longmamba_params = r->lm_params;
        st = lm_session_set_mambaextend(r->s, &p);
    } else {
        lm_modulation_params p;
        lm_modulation_params_init(&p);
        p.scales = sc;
        p.n_scales = nl;
        st = lm_session_set_modulation(r->s, &p);
    }
    return st == LM_OK ? LM_OK : lmi_fail(e, st, "scales_calibrate: %s", r->s->err.msg);
}

/* Mean next-token cross-entropy (nats) over every window with scales sc:
 * each window one prompt from zero state, fed in pieces whose logits rows
 * are all scored (position t predicts token t + 1). */
static lm_status objective(spsa_run *r, const double *sc, double *out, lmi_err *e)
{
    lm_status st = set_scales(r, sc, e);
    if (st != LM_OK) return st;
    const int64_t V = r->model->dims.vocab;
    double sum = 0.0;
    size_t count = 0;
    for (size_t w = 0; w < r->n_windows; w++) {
        const int32_t *tok = r->windows[w];
        const size_t T = r->lengths[w];
        st = lm_session_reset(r->s);
        if (st == LM_OK) st = lm_session_set_length_hint(r->s, (int64_t)T);
        for (size_t pos = 0; st == LM_OK && pos + 1 < T; pos += (size_t)r->piece) {
            /* the last token is never scored: it predicts nothing */
            size_t n = T - 1 - pos < (size_t)r->piece ? T - 1 - pos : (size_t)r->piece;
            st = lm_session_prefill(r->s, tok + pos, n, n, r->logits, n * (size_t)V);
            for (size_t i = 0; st == LM_OK && i < n; i++) {
                const float *row = r->logits + i * (size_t)V;
                double mx = -INFINITY, z = 0.0;
                for (int64_t v = 0; v < V; v++) mx = fmax(mx, (double)row[v]);
                for (int64_t v = 0; v < V; v++) z += exp((double)row[v] - mx);
                const double ce = mx + log(z) - (double)row[tok[pos + i + 1]];
                if (!isfinite(ce))
                    return lmi_fail(e, LM_ERR_NUMERIC,
                                    "scales_calibrate: cross-entropy of window %zu position %zu "
                                    "is not finite",
                                    w, pos + i);
                sum += ce;
                count++;
            }
        }
        if (st != LM_OK)
            return lmi_fail(e, st, "scales_calibrate: window %zu: %s", w, r->s->err.msg);
    }
    *out = sum / (double)count;
    return LM_OK;
}

/* ---- SPSA ---------------------------------------------------------------- */

static lm_status spsa(const lm_model *model, lm_mode mode, const int32_t *const *windows,
                      const size_t *lengths, size_t n_windows, const lm_spsa_params *params,
                      lm_scales **out, lmi_err *e)
{
    if (!out) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_calibrate: out is NULL");
    *out = NULL;
    if (!model) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_calibrate: model is NULL");
    if (mode != LM_MODE_MAMBAEXTEND && mode != LM_MODE_MODULATION)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "scales_calibrate: mode %d is neither LM_MODE_MAMBAEXTEND nor "
                        "LM_MODE_MODULATION",
                        (int)mode);
    if (!windows || !lengths)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_calibrate: windows or lengths is NULL");
    if (n_windows == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_calibrate: no calibration windows");
    lm_spsa_params p;
    lm_spsa_params_init(&p);
    if (params && !lmi_copy_params(&p, sizeof p, params, params->struct_size,
                                   offsetof(lm_spsa_params, longmamba_params) + sizeof(void *)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "scales_calibrate: params->struct_size %u too small; use "
                        "lm_spsa_params_init",
                        (unsigned)params->struct_size);
    if (p.iterations < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "scales_calibrate: iterations %d must be >= 0 (0 = default)",
                        (int)p.iterations);
    const int32_t K = p.iterations ? p.iterations : (mode == LM_MODE_MAMBAEXTEND ? 50 : 30);
    if (p.longmamba && mode == LM_MODE_MODULATION)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "scales_calibrate: Modulation with LongMamba needs a calibration made "
                        "under each candidate's scales; calibrate the scales alone, then "
                        "LongMamba under them (lm_calib_params.a_log_scales)");
    const lmi_dims *d = &model->dims;
    size_t max_len = 0;
    for (size_t w = 0; w < n_windows; w++) {
        if (!windows[w])
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_calibrate: window %zu is NULL", w);
        if (lengths[w] < 2 || lengths[w] > (size_t)INT32_MAX)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "scales_calibrate: window %zu has %zu tokens; 2 to 2^31-1 needed", w,
                            lengths[w]);
        for (size_t t = 0; t < lengths[w]; t++)
            if (windows[w][t] < 0 || (int64_t)windows[w][t] >= d->vocab)
                return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                                "scales_calibrate: window %zu token %zu is %d, outside [0, %lld)",
                                w, t, (int)windows[w][t], (long long)d->vocab);
        if (lengths[w] > max_len) max_len = lengths[w];
    }

    const size_t nl = (size_t)d->n_layer;
    spsa_run r = {model, mode, windows, lengths, n_windows, p.longmamba, p.longmamba_params,
                  NULL, NULL, 0};
    r.piece = SPSA_LOGIT_FLOATS / d->vocab;
    if (r.piece < 1) r.piece = 1;
    if (r.piece > 512) r.piece = 512;
    if ((size_t)r.piece > max_len) r.piece = (int64_t)max_len;
    lm_scales *sc = scales_new(d->n_layer);
    double *sp = lmi_alloc(nl, sizeof(double)), *sm = lmi_alloc(nl, sizeof(double));
    int8_t *delta = lmi_alloc(nl, 1);
    r.logits = lmi_alloc_raw((size_t)r.piece * (size_t)d->vocab, sizeof(float));
    lm_status st = LM_OK;
    if (!sc || !sp || !sm || !delta || !r.logits) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "scales_calibrate: out of memory");
        goto done;
    }
    char serr[LMI_ERR_CAP];
    st = lm_session_create(model, NULL, &r.s, serr, sizeof serr);
    if (st != LM_OK) {
        lmi_fail(e, st, "scales_calibrate: %s", serr);
        goto done;
    }

    /* s0 ~ U[0.75, 1) */
    uint64_t rng = p.seed;
    double *s = sc->scales;
    for (size_t l = 0; l < nl; l++) {
        s[l] = 0.75 + 0.25 * ((double)(spsa_next(&rng) >> 11) * 0x1p-53);
        sc->initial[l] = s[l];
    }
    st = objective(&r, s, &sc->loss_initial, e);
    for (int32_t k = 0; st == LM_OK && k < K; k++) {
        const double ck = 0.1 / pow(1.0 + k, 0.1);
        const double ak = 1e-3 * cos((double)k * 3.14159265358979323846 / 198.0);
        for (size_t l = 0; l < nl; l++) {
            /* Rademacher: the top bit of the next draw */
            delta[l] = (spsa_next(&rng) >> 63) ? 1 : -1;
            sp[l] = fmax(s[l] + ck * delta[l], SPSA_MIN_SCALE);
            sm[l] = fmax(s[l] - ck * delta[l], SPSA_MIN_SCALE);
        }
        double fp = 0.0, fm = 0.0;
        st = objective(&r, sp, &fp, e);
        if (st == LM_OK) st = objective(&r, sm, &fm, e);
        if (st != LM_OK) break;
        /* g = (f+ - f-) / (2 c_k) * delta (1 / delta = delta for +-1) */
        const double g = (fp - fm) / (2.0 * ck);
        for (size_t l = 0; l < nl; l++) s[l] = fmax(s[l] - ak * g * delta[l], SPSA_MIN_SCALE);
        if (p.progress && p.progress(p.progress_user, k + 1, K)) {
            st = lmi_fail(e, LM_ERR_ABORTED,
                          "scales_calibrate: stopped by the progress callback after %d of %d "
                          "iterations",
                          (int)(k + 1), (int)K);
            break;
        }
    }
    if (st == LM_OK) st = objective(&r, s, &sc->loss_final, e);
    if (st != LM_OK) goto done;
    sc->mode = mode;
    sc->arch = d->arch;
    sc->fingerprint = model->fingerprint;
    sc->target_length = (int64_t)max_len;
    sc->n_windows = (int64_t)n_windows;
    sc->iterations = K;
    sc->seed = p.seed;
    sc->with_longmamba = p.longmamba ? 1 : 0;
    *out = sc;
    sc = NULL;
done:
    lm_session_free(r.s);
    lmi_free(r.logits);
    lmi_free(sp);
    lmi_free(sm);
    lmi_free(delta);
    lm_scales_free(sc);
    return st;
}

lm_status lm_scales_calibrate(const lm_model *model, lm_mode mode, const int32_t *const *windows,
                              const size_t *lengths, size_t n_windows,
                              const lm_spsa_params *params, lm_scales **out, char *err,
                              size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = spsa(model, mode, windows, lengths, n_windows, params, out, &e);
    if (st == LM_OK) e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}

/* ---- getters ------------------------------------------------------------- */

#define SET_FIELD(info, field, value)                                                              \
    do {                                                                                           \
        if ((info)->struct_size >= offsetof(lm_scales_info, field) + sizeof((info)->field))        \
            (info)->field = (value);                                                               \
    } while (0)

lm_status lm_scales_get_info(const lm_scales *sc, lm_scales_info *info)
{
    if (!sc || !info || info->struct_size < offsetof(lm_scales_info, mode) + sizeof(info->mode))
        return LM_ERR_INVALID_ARGUMENT;
    SET_FIELD(info, mode, sc->mode);
    SET_FIELD(info, arch, sc->arch);
    SET_FIELD(info, n_layer, sc->n_layer);
    SET_FIELD(info, target_length, sc->target_length);
    SET_FIELD(info, n_windows, sc->n_windows);
    SET_FIELD(info, iterations, sc->iterations);
    SET_FIELD(info, seed, sc->seed);
    SET_FIELD(info, loss_initial, sc->loss_initial);
    SET_FIELD(info, loss_final, sc->loss_final);
    SET_FIELD(info, with_longmamba, sc->with_longmamba);
    SET_FIELD(info, fingerprint, sc->fingerprint);
    return LM_OK;
}

lm_status lm_scales_get(const lm_scales *sc, double *scales, double *initial, size_t cap)
{
    if (!sc || (!scales && !initial)) return LM_ERR_INVALID_ARGUMENT;
    if (cap < (size_t)sc->n_layer) return LM_ERR_BUFFER_TOO_SMALL;
    if (scales) memcpy(scales, sc->scales, (size_t)sc->n_layer * sizeof(double));
    if (initial) memcpy(initial, sc->initial, (size_t)sc->n_layer * sizeof(double));
    return LM_OK;
}

/* ---- save / load ---------------------------------------------------------- */

static const char *mode_name(lm_mode m)
{
    return m == LM_MODE_MAMBAEXTEND ? "mambaextend" : m == LM_MODE_MODULATION ? "modulation" : "?";
}

static const char *arch_name(lm_arch a)
{
    return a == LM_ARCH_MAMBA1         ? "mamba1"
           : a == LM_ARCH_MAMBA2       ? "mamba2"
           : a == LM_ARCH_FALCON_MAMBA ? "falcon_mamba"
                                       : "unknown";
}

static lm_status scales_save(const lm_scales *sc, const char *path, lmi_err *e)
{
    if (!sc || !path) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_save: NULL argument");
    int64_t shape[1] = {sc->n_layer};
    lmi_st_out t[2] = {
        {.name = "scales", .dtype = LMI_ST_F64, .ndim = 1, .shape = shape, .data = sc->scales},
        {.name = "initial_scales", .dtype = LMI_ST_F64, .ndim = 1, .shape = shape,
         .data = sc->initial},
    };
    char fp[32], len[32], nw[32], it[32], seed[32], l0[40], l1[40];
    snprintf(fp, sizeof fp, "%016" PRIx64, sc->fingerprint);
    snprintf(len, sizeof len, "%lld", (long long)sc->target_length);
    snprintf(nw, sizeof nw, "%lld", (long long)sc->n_windows);
    snprintf(it, sizeof it, "%d", (int)sc->iterations);
    snprintf(seed, sizeof seed, "%" PRIu64, sc->seed);
    snprintf(l0, sizeof l0, "%.17g", sc->loss_initial);
    snprintf(l1, sizeof l1, "%.17g", sc->loss_final);
    const char *keys[] = {"format", "version", "mode", "arch", "fingerprint", "target_length",
                          "n_windows", "iterations", "seed", "loss_initial", "loss_final",
                          "longmamba", "schedule"};
    const char *vals[] = {LMI_SCALES_FORMAT, LMI_SCALES_VERSION, mode_name(sc->mode),
                          arch_name(sc->arch), fp, len, nw, it, seed, l0, l1,
                          sc->with_longmamba ? "1" : "0",
                          /* METHODS.md §1, Pile: documents what the numbers mean */
                          "spsa s0~U[0.75,1) c_k=0.1/(1+k)^0.1 a_k=1e-3*cos(k*pi/198) "
                          "rademacher min 0.01, loss mean next-token cross-entropy"};
    return lmi_st_write(path, t, 2, keys, vals, sizeof keys / sizeof keys[0], e);
}

lm_status lm_scales_save(const lm_scales *sc, const char *path, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = scales_save(sc, path, &e);
    if (st == LM_OK) e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}

/* Metadata value `key` as a whole-string number; false if missing or junk. */
static bool meta_num(const lmi_st_file *f, const char *key, double *out)
{
    const char *s = lmi_st_meta(f, key);
    if (!s || !*s) return false;
    char *end = NULL;
    errno = 0;
    *out = strtod(s, &end);
    return !errno && end && !*end;
}

static bool meta_u64(const lmi_st_file *f, const char *key, int base, uint64_t *out)
{
    const char *s = lmi_st_meta(f, key);
    if (!s || !*s || *s == '-') return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    *out = v;
    return !errno && end && !*end;
}

static lm_status read_f64(const lmi_st_file *f, const char *path, const char *name, int64_t *n,
                          const void **data, lmi_err *e)
{
    const lmi_st_tensor *t = lmi_st_find(f, name);
    if (!t || t->dtype != LMI_ST_F64 || t->ndim != 1 || t->shape[0] < 1)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: tensor '%s' missing or not a non-empty F64 vector",
                        path, name);
    *n = t->shape[0];
    *data = t->data;
    return LM_OK;
}

static lm_status scales_load(const char *path, const lm_model *model, lm_scales **out, lmi_err *e)
{
    if (!out) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_load: out is NULL");
    *out = NULL;
    if (!path) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "scales_load: path is NULL");
    lmi_st_file f;
    memset(&f, 0, sizeof f);
    lm_status st = lmi_st_open(path, &f, e);
    if (st != LM_OK) return st;
    lm_scales *sc = NULL;
    const char *fmt = lmi_st_meta(&f, "format"), *ver = lmi_st_meta(&f, "version");
    const char *mode = lmi_st_meta(&f, "mode"), *arch = lmi_st_meta(&f, "arch");
    const char *lm = lmi_st_meta(&f, "longmamba");
    double len, nw, it, l0, l1;
    uint64_t fp, seed;
    if (!fmt || strcmp(fmt, LMI_SCALES_FORMAT) != 0) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: not a " LMI_SCALES_FORMAT " file (format '%s')", path,
                      fmt ? fmt : "missing");
        goto done;
    }
    if (!ver || strcmp(ver, LMI_SCALES_VERSION) != 0) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: scales version '%s' is not supported (want "
                      LMI_SCALES_VERSION ")", path, ver ? ver : "missing");
        goto done;
    }
    lm_mode m = !mode ? LM_MODE_VANILLA
                : !strcmp(mode, "mambaextend") ? LM_MODE_MAMBAEXTEND
                : !strcmp(mode, "modulation")  ? LM_MODE_MODULATION
                                               : LM_MODE_VANILLA;
    lm_arch a = !arch ? (lm_arch)0
                : !strcmp(arch, "mamba1")       ? LM_ARCH_MAMBA1
                : !strcmp(arch, "mamba2")       ? LM_ARCH_MAMBA2
                : !strcmp(arch, "falcon_mamba") ? LM_ARCH_FALCON_MAMBA
                                                : (lm_arch)0;
    if (m == LM_MODE_VANILLA || !a || !lm || (strcmp(lm, "0") && strcmp(lm, "1")) ||
        !meta_u64(&f, "fingerprint", 16, &fp) || !meta_u64(&f, "seed", 10, &seed) ||
        !meta_num(&f, "target_length", &len) || !(len >= 2) || !meta_num(&f, "n_windows", &nw) ||
        !(nw >= 1) || !meta_num(&f, "iterations", &it) || !(it >= 0 && it <= INT32_MAX) ||
        !meta_num(&f, "loss_initial", &l0) || !meta_num(&f, "loss_final", &l1)) {
        st = lmi_fail(e, LM_ERR_FORMAT,
                      "%s: scales metadata (mode, arch, fingerprint, seed, target_length, "
                      "n_windows, iterations, losses, longmamba) missing or malformed",
                      path);
        goto done;
    }
    int64_t n = 0, n0 = 0;
    const void *ds = NULL, *d0 = NULL;
    if ((st = read_f64(&f, path, "scales", &n, &ds, e)) ||
        (st = read_f64(&f, path, "initial_scales", &n0, &d0, e)))
        goto done;
    if (n0 != n) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: %lld scales but %lld initial scales", path,
                      (long long)n, (long long)n0);
        goto done;
    }
    sc = scales_new(n);
    if (!sc) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    memcpy(sc->scales, ds, (size_t)n * sizeof(double));
    memcpy(sc->initial, d0, (size_t)n * sizeof(double));
    for (int64_t l = 0; l < n; l++)
        if (!isfinite(sc->scales[l]) || !(sc->scales[l] > 0.0)) {
            st = lmi_fail(e, LM_ERR_FORMAT, "%s: scale of layer %lld is %g", path, (long long)l,
                          sc->scales[l]);
            goto done;
        }
    sc->mode = m;
    sc->arch = a;
    sc->fingerprint = fp;
    sc->target_length = (int64_t)len;
    sc->n_windows = (int64_t)nw;
    sc->iterations = (int32_t)it;
    sc->seed = seed;
    sc->loss_initial = l0;
    sc->loss_final = l1;
    sc->with_longmamba = lm[0] == '1';
    if (model && (fp != model->fingerprint || a != model->dims.arch || n != model->dims.n_layer)) {
        st = lmi_fail(e, LM_ERR_MISMATCH,
                      "%s: scales belong to another model (fingerprint %016" PRIx64
                      ", %s, %lld layers; model %016" PRIx64 ", %s, %lld layers)",
                      path, fp, arch_name(a), (long long)n, model->fingerprint,
                      arch_name(model->dims.arch), (long long)model->dims.n_layer);
        goto done;
    }
    *out = sc;
    sc = NULL;
done:
    lm_scales_free(sc);
    lmi_st_close(&f);
    return st;
}

lm_status lm_scales_load(const char *path, const lm_model *model, lm_scales **out, char *err,
                         size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = scales_load(path, model, out, &e);
    if (st == LM_OK) e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}
