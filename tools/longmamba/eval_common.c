/*
 * eval_common.c - what `ppl` (cmd_ppl.c) and `passkey` (cmd_passkey.c)
 * share (eval_common.h).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "eval_common.h"

/* ---- small helpers ---------------------------------------------------------- */

/* Comma-separated list of integers in [lo, hi]; 1 on success. */
static int parse_ll_list(const char *s, long long lo, long long hi, long long *out, int cap, int *n)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf || !*s)
        return 0;
    strcpy(buf, s);
    *n = 0;
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (*n >= cap || !cli_parse_int(p, lo, hi, &out[*n]))
            return 0;
        (*n)++;
    }
    return *n > 0 && s[strlen(s) - 1] != ',' && s[0] != ',' && !strstr(s, ",,");
}

static int parse_dbl_list(const char *s, double *out, int cap, int *n)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf || !*s)
        return 0;
    strcpy(buf, s);
    *n = 0;
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (*n >= cap || !cli_parse_double(p, &out[*n]))
            return 0;
        (*n)++;
    }
    return *n > 0 && s[strlen(s) - 1] != ',' && s[0] != ',' && !strstr(s, ",,");
}

/* "vanilla,longmamba": each at most once, in the given order. */
static int parse_modes_into(const char *s, int *out, int *n)
{
    char buf[256];
    if (strlen(s) >= sizeof buf || !*s || s[strlen(s) - 1] == ',' || s[0] == ',' || strstr(s, ",,"))
        return 0;
    strcpy(buf, s);
    *n = 0;
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        int m = -1;
        for (int k = 0; k < n_eval_modes; k++)
            if (strcmp(p, eval_modes[k].name) == 0)
                m = k;
        if (m < 0 || *n >= MAX_MODES)
            return 0;
        for (int k = 0; k < *n; k++)
            if (out[k] == m)
                return 0;
        out[(*n)++] = m;
    }
    return *n > 0;
}

/* JSON string literal of s. */
void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* Length of the valid UTF-8 sequence at p[0..n) that starts with a byte
 * >= 0x80, or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xC2 && p[0] <= 0xDF   ? 2
                 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
                 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                                : 0;
    if (!len || len > n)
        return 0;
    unsigned lo = 0x80, hi = 0xBF; /* no overlongs, surrogates or > U+10FFFF */
    if (p[0] == 0xE0)
        lo = 0xA0;
    else if (p[0] == 0xED)
        hi = 0x9F;
    else if (p[0] == 0xF0)
        lo = 0x90;
    else if (p[0] == 0xF4)
        hi = 0x8F;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return len;
}

void json_text(FILE *f, const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)text;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        size_t len = p[i] >= 0x80 ? utf8_len(p + i, n - i) : 1;
        if (p[i] == '"' || p[i] == '\\')
            fprintf(f, "\\%c", p[i]);
        else if (p[i] < 0x20)
            fprintf(f, "\\u%04x", p[i]);
        else if (len == 0)
            fputs("\\ufffd", f);
        else
            fwrite(p + i, 1, len, f);
        i += len ? len : 1;
    }
    fputc('"', f);
}

/* A finite number, or null. */
void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

/* ---- progress bar (stderr, terminals only) ------------------------------------ */

void progress_draw(progress *p, double done, int force)
{
    if (!p->on)
        return;
    double now = cli_seconds();
    if (!force && now - p->last < 0.2)
        return;
    p->last = now;
    double frac = p->total > 0 ? done / p->total : 1.0;
    if (frac > 1.0)
        frac = 1.0;
    int width = 30, fill = (int)(frac * width + 0.5);
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double el = now - p->start;
    double eta = frac > 0.0 && frac < 1.0 ? el * (1.0 - frac) / frac : 0.0;
    fprintf(stderr, "\r[%s] %5.1f%%  %-28.28s  %6.0f s, eta %6.0f s ", bar, 100.0 * frac, p->label,
            el, eta);
    fflush(stderr);
}

void progress_end(progress *p)
{
    if (p->on) {
        progress_draw(p, p->total, 1);
        fputc('\n', stderr);
    }
}

static int on_prefill_progress(void *user, int64_t done, int64_t total)
{
    progress *p = user;
    (void)total;
    progress_draw(p, p->base + (double)done, 0);
    return 0;
}

int parse_pos_list(void *dest, const char *s)
{
    ll_list *l = dest;
    return parse_ll_list(s, 1, INT64_C(1) << 32, l->v, MAX_LIST, &l->n);
}

int parse_count_list(void *dest, const char *s)
{
    ll_list *l = dest;
    return parse_ll_list(s, 1, 1000000, l->v, MAX_LIST, &l->n);
}

int parse_fraction_list(void *dest, const char *s)
{
    dbl_list *l = dest;
    int ok = parse_dbl_list(s, l->v, MAX_LIST, &l->n);
    for (int k = 0; ok && k < l->n; k++)
        ok = l->v[k] >= 0.0 && l->v[k] <= 1.0;
    return ok;
}

static int parse_modes(void *dest, const char *s)
{
    eval_opts *o = dest;
    return parse_modes_into(s, o->modes, &o->n_modes);
}

static int parse_scale_list(void *dest, const char *s)
{
    dbl_list *l = dest;
    int ok = parse_dbl_list(s, l->v, MAX_LIST, &l->n);
    for (int k = 0; ok && k < l->n; k++)
        ok = l->v[k] > 0.0 && isfinite(l->v[k]);
    return ok;
}

static int parse_deci_layers(void *dest, const char *s)
{
    eval_opts *o = dest;
    long long list[MAX_LIST];
    int n = 0;
    if (!parse_ll_list(s, 0, 1 << 20, list, MAX_LIST, &n))
        return 0;
    for (int k = 0; k < n; k++)
        o->deci_layers[k] = (int32_t)list[k];
    o->n_deci_layers = n;
    return 1;
}

/* ---- options shared by both commands ------------------------------------------ */

void eval_opts_init(eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->modes[0] = 0; /* vanilla */
    o->n_modes = 1;
    o->backend = LM_BACKEND_AUTO;
}

/* "vanilla, longmamba, decimamba": the rows of eval_modes[]. */
static const char *mode_list(void)
{
    static char buf[256];
    size_t n = 0;
    for (int k = 0; k < n_eval_modes && n < sizeof buf; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", k ? ", " : "", eval_modes[k].name);
    return buf;
}

void eval_shared_opts(eval_opts *o, cli_opt t[EVAL_N_SHARED])
{
    static char what[320], help[320];
    snprintf(what, sizeof what, "modes among %s, comma separated, each once", mode_list());
    snprintf(help, sizeof help, "any of %s (default %s)", mode_list(), eval_modes[0].name);
    const cli_opt shared[EVAL_N_SHARED] = {
        {"--mode", NULL, OPT_FN, o, what, .fn = parse_modes, .arg = "LIST", .help = help},
        {"--calib", NULL, OPT_STR, &o->calib_path, .arg = "FILE",
         .help = "LongMamba calibration (longmamba calibrate); needed by the longmamba mode"},
        {"--theta", NULL, OPT_NUM, &o->theta, "a number > 0", .lo = 0.0, .hi = INFINITY,
         .lo_open = 1, .arg = "X", .help = "LongMamba global-channel threshold"},
        {"--scale", NULL, OPT_NUM, &o->scale, "a number > 0", .lo = 0.0, .hi = INFINITY,
         .lo_open = 1, .arg = "B", .help = "LongMamba threshold scale"},
        {"--trigger", NULL, OPT_INT, &o->trigger, "a positive integer", 1, INT64_C(1) << 40,
         .arg = "N", .help = "LongMamba filters prompts of >= N tokens"},
        {"--deci-layers", NULL, OPT_FN, o, "layer indices like 3,4", .fn = parse_deci_layers,
         .arg = "LIST", .help = "DeciMamba layers"},
        {"--deci-lbase", NULL, OPT_INT, &o->deci_lbase, "a positive integer", 1, INT64_C(1) << 40,
         .arg = "N", .help = "DeciMamba L_base"},
        {"--deci-beta", NULL, OPT_NUM, &o->deci_beta, "a number > 0", .lo = 0.0, .hi = INFINITY,
         .lo_open = 1, .arg = "X", .help = "DeciMamba beta"},
        {"--deci-min", NULL, OPT_INT, &o->deci_min, "a positive integer", 1, INT64_C(1) << 40,
         .arg = "N", .help = "DeciMamba min_len"},
        {"--ext-scales", NULL, OPT_FN, &o->ext_scales, "numbers > 0 like 1.1,0.9",
         .fn = parse_scale_list, .arg = "LIST",
         .help = "per-layer scales of the mambaextend (Δ) and modulation (A_log) modes"},
        {"--json", NULL, OPT_FLAG, &o->json,
         .help = "one JSON object on stdout instead of the table"},
        {"--verbose", NULL, OPT_FLAG, &o->verbose, .help = "one line per (mode, length) on stderr"},
        CLI_OPT_BACKEND(&o->backend),
        CLI_OPT_THREADS(&o->threads),
        CLI_OPT_WEIGHTS(&o->weights),
        CLI_OPT_CHUNK(&o->chunk)};
    memcpy(t, shared, sizeof shared);
}

void eval_mode_help(FILE *f)
{
    lm_longmamba_params lp;
    lm_decimamba_params dp;
    lm_longmamba_params_init(&lp);
    lm_decimamba_params_init(&dp);
    fprintf(f,
            "Library defaults: --theta %g (Mamba-1) / %g (Mamba-2), --scale %g, --trigger\n"
            "from the calibration length; DeciMamba the middle layer, --deci-lbase %lld,\n"
            "--deci-beta %g, --deci-min %lld.  A progress bar goes to stderr when it is a\n"
            "terminal.\n",
            lm_longmamba_default_theta(LM_ARCH_MAMBA1), lm_longmamba_default_theta(LM_ARCH_MAMBA2),
            lp.threshold_scale, (long long)dp.l_base, dp.beta, (long long)dp.min_len);
}

int eval_check_opts(const cli_cmd *cmd, const eval_opts *o)
{
    int has_lm = 0, has_ext = 0;
    for (int k = 0; k < o->n_modes; k++) {
        has_lm |= (eval_modes[o->modes[k]].needs & EVAL_NEEDS_CALIB) != 0;
        has_ext |= (eval_modes[o->modes[k]].needs & EVAL_NEEDS_SCALES) != 0;
    }
    if (has_ext && o->ext_scales.n == 0)
        return cli_opt_usage(cmd, "the mambaextend and modulation modes need --ext-scales "
                                  "(one scale per layer)");
    if (!o->dir)
        return cli_opt_usage(cmd, "MODEL_DIR is missing");
    if (has_lm && !o->calib_path)
        return cli_opt_usage(cmd, "the longmamba mode needs --calib CALIB.safetensors (make one "
                                  "with `longmamba calibrate` on training text)");
    return 0;
}

/* Model, optional calibration and one session with a progress callback. */
void eval_ctx_free(eval_ctx *c)
{
    lm_session_free(c->session);
    lm_calibration_free(c->calib);
    lm_model_free(c->model);
    memset(c, 0, sizeof *c);
}

int eval_ctx_open(eval_ctx *c, const eval_opts *o, progress *prog)
{
    memset(c, 0, sizeof *c);
    if (cli_load_model(o->dir, o->backend, o->threads, o->weights, &c->model, &c->info))
        return 1;
    int need_calib = 0;
    for (int k = 0; k < o->n_modes; k++)
        need_calib |= (eval_modes[o->modes[k]].needs & EVAL_NEEDS_CALIB) != 0;
    if ((need_calib && cli_load_calibration(o->calib_path, c->model, &c->calib)) ||
        cli_create_session(c->model, o->chunk, on_prefill_progress, prog, &c->session)) {
        eval_ctx_free(c);
        return 1;
    }
    return 0;
}

/* ---- modes ------------------------------------------------------------------- */

static lm_status apply_vanilla(eval_ctx *c, const eval_opts *o, int64_t protect)
{
    (void)o;
    (void)protect;
    return lm_session_set_vanilla(c->session);
}

static lm_status apply_longmamba(eval_ctx *c, const eval_opts *o, int64_t protect)
{
    (void)protect;
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.theta = o->theta; /* 0: the library's default for the architecture */
    lp.threshold_scale = o->scale;
    lp.trigger_length = o->trigger;
    return lm_session_set_longmamba(c->session, c->calib, &lp);
}

static lm_status apply_decimamba(eval_ctx *c, const eval_opts *o, int64_t protect)
{
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    if (o->n_deci_layers) {
        dp.layers = o->deci_layers;
        dp.n_layers = (size_t)o->n_deci_layers;
    }
    dp.l_base = o->deci_lbase;
    dp.beta = o->deci_beta;
    dp.min_len = o->deci_min;
    dp.protect = protect;
    return lm_session_set_decimamba(c->session, &dp);
}

static lm_status apply_mambaextend(eval_ctx *c, const eval_opts *o, int64_t protect)
{
    (void)protect;
    lm_mambaextend_params ep;
    lm_mambaextend_params_init(&ep);
    ep.scales = o->ext_scales.v;
    ep.n_scales = (size_t)o->ext_scales.n;
    return lm_session_set_mambaextend(c->session, &ep);
}

static lm_status apply_modulation(eval_ctx *c, const eval_opts *o, int64_t protect)
{
    (void)protect;
    lm_modulation_params mp;
    lm_modulation_params_init(&mp);
    mp.scales = o->ext_scales.v;
    mp.n_scales = (size_t)o->ext_scales.n;
    return lm_session_set_modulation(c->session, &mp);
}

/* Every command that compares modes reads this table: a new mode is a row. */
const eval_mode eval_modes[] = {
    {"vanilla", 0, apply_vanilla},
    {"longmamba", EVAL_NEEDS_CALIB, apply_longmamba},
    {"decimamba", 0, apply_decimamba},
    {"mambaextend", EVAL_NEEDS_SCALES, apply_mambaextend},
    {"modulation", EVAL_NEEDS_SCALES, apply_modulation},
};
const int n_eval_modes = (int)(sizeof eval_modes / sizeof eval_modes[0]);
_Static_assert(sizeof eval_modes / sizeof eval_modes[0] <= MAX_MODES, "MAX_MODES is too small");

int eval_mode_ready(const eval_opts *o, int mode)
{
    unsigned needs = eval_modes[mode].needs;
    return (!(needs & EVAL_NEEDS_CALIB) || o->calib_path) &&
           (!(needs & EVAL_NEEDS_SCALES) || o->ext_scales.n > 0);
}

const char *mode_name(int mode)
{
    return mode >= 0 && mode < n_eval_modes ? eval_modes[mode].name : "?";
}

int set_mode(eval_ctx *c, const eval_opts *o, int mode, int64_t protect)
{
    lm_status st = eval_modes[mode].apply(c, o, protect);
    if (st != LM_OK) {
        char what[64];
        snprintf(what, sizeof what, "cannot enable %s mode", mode_name(mode));
        return cli_fail_status(what, st, lm_session_last_error(c->session));
    }
    return 0;
}

/* One prompt from zero state: length hint, prefill, logits of the last
 * n_logits positions. */
int run_prompt(eval_ctx *c, progress *prog, const int32_t *ids, size_t n, size_t n_logits,
               float *logits, size_t cap)
{
    lm_status st = lm_session_reset(c->session);
    if (st == LM_OK)
        st = lm_session_set_length_hint(c->session, (int64_t)n);
    if (st == LM_OK)
        st = lm_session_prefill(c->session, ids, n, n_logits, logits, cap);
    if (st != LM_OK) {
        if (prog->on)
            fputc('\n', stderr);
        return cli_fail_status("prefill failed", st, lm_session_last_error(c->session));
    }
    prog->base += (double)n;
    progress_draw(prog, prog->base, 0);
    return 0;
}

/* ---- greedy answers --------------------------------------------------------- */

int64_t answer_vocab(const cli_encoder *enc, int64_t vocab)
{
    int64_t tv = enc->tok ? lm_tokenizer_vocab_size(enc->tok) : 0;
    return tv > 0 && tv < vocab ? tv : vocab;
}

int greedy_tokens(eval_ctx *c, float *logits, int64_t n_argmax, int n_gen, int32_t *gen)
{
    for (int g = 0; g < n_gen; g++) {
        int32_t best = 0;
        for (int64_t v = 1; v < n_argmax; v++)
            if (logits[v] > logits[best])
                best = (int32_t)v;
        gen[g] = best;
        lm_status st;
        if (g + 1 < n_gen &&
            (st = lm_session_decode(c->session, best, logits, (size_t)c->info.vocab_size)) != LM_OK)
            return cli_fail_status("decode failed", st, lm_session_last_error(c->session));
    }
    return 0;
}

int tokens_text(const cli_encoder *enc, const int32_t *ids, size_t n, char *text, size_t cap,
                size_t *nb)
{
    *nb = 0;
    if (enc->kind == CLI_TEXT_BYTES) {
        for (size_t g = 0; g < n && *nb + 1 < cap; g++)
            text[(*nb)++] = (char)ids[g];
    } else {
        char err[512] = "";
        lm_status st = lm_tokenizer_decode(enc->tok, ids, n, text, cap - 1, nb, err, sizeof err);
        if (st == LM_ERR_BUFFER_TOO_SMALL)
            *nb = 0; /* a very long continuation is not a short answer */
        else if (st != LM_OK)
            return cli_fail_status("cannot decode the answer", st, err);
    }
    text[*nb] = '\0';
    return 0;
}

void json_str_or_null(FILE *f, const char *s)
{
    if (s)
        json_str(f, s);
    else
        fputs("null", f);
}

void print_mode_params(FILE *f, const eval_opts *o, const lm_model_info *info)
{
    lm_longmamba_params lp;
    lm_decimamba_params dp;
    lm_longmamba_params_init(&lp);
    lm_decimamba_params_init(&dp);
    fprintf(f, "\"params\": {\"theta\": ");
    json_num(f, o->theta > 0 ? o->theta : lm_longmamba_default_theta(info->arch));
    fprintf(f, ", \"scale\": ");
    json_num(f, o->scale > 0 ? o->scale : lp.threshold_scale);
    fprintf(f, ", \"trigger\": %lld, \"deci_layers\": [", o->trigger);
    if (o->n_deci_layers)
        for (int k = 0; k < o->n_deci_layers; k++)
            fprintf(f, "%s%d", k ? ", " : "", (int)o->deci_layers[k]);
    else
        fprintf(f, "%lld", (long long)(info->n_layer / 2));
    fprintf(f, "], \"deci_lbase\": %lld, \"deci_beta\": ",
            o->deci_lbase ? o->deci_lbase : (long long)dp.l_base);
    json_num(f, o->deci_beta > 0 ? o->deci_beta : dp.beta);
    fprintf(f, ", \"deci_min\": %lld, \"ext_scales\": [", o->deci_min ? o->deci_min : (long long)dp.min_len);
    for (int k = 0; k < o->ext_scales.n; k++) {
        fputs(k ? ", " : "", f);
        json_num(f, o->ext_scales.v[k]);
    }
    fputs("]}", f);
}

void eval_report_speed(const char *what, double tokens, double secs)
{
    fflush(stdout); /* the results first */
    fprintf(stderr, "longmamba: %.0f %s in %.1f s (%.0f tokens/s)\n", tokens, what, secs,
            secs > 0 ? tokens / secs : 0.0);
}
