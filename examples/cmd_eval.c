/*
 * cmd_eval.c - the evaluation subcommands of the longmamba tool:
 *
 *   ppl      perplexity over long windows of a text, the PG-19 protocol of
 *            LONGMAMBA.md §6, for vanilla, LongMamba and DeciMamba;
 *   passkey  RULER-style pass-key retrieval on a length x depth grid.
 *
 * Links only the public library.  Exit status: 0 success, 1 failure
 * (message on stderr), 2 usage error.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_util.h"
#include "longmamba.h"

#define EXIT_USAGE CLI_EXIT_USAGE
#define MAX_MODES  3
#define MAX_LIST   64

static const char ppl_usage[] =
    "usage: longmamba ppl MODEL_DIR (--text FILE | --tokens FILE)... --ctx W1,W2,...\n"
    "           [--mode vanilla|longmamba|decimamba[,...]] [--calib CALIB.safetensors]\n"
    "           [--windows N | N1,N2,...] [--align-end] [--score-last M] [--json]\n"
    "           [--theta X] [--scale B] [--trigger N]\n"
    "           [--deci-layers L1,L2,...] [--deci-lbase N] [--deci-beta X] [--deci-min N]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--chunk N] [--verbose]\n"
    "\n"
    "Perplexity at each context length W (LONGMAMBA.md §6, PG-19 protocol).  In\n"
    "every document (each --text or --tokens file) window i reads the W tokens\n"
    "from i*stride, stride = max((len - W - 1) / N, 10), at most N windows per\n"
    "document (default 10; a list gives N per context length).  One prefill per\n"
    "window, batch 1; its loss is the mean cross-entropy of the next-token\n"
    "predictions at its last M positions (the last M tokens of the window shifted\n"
    "by one).  ppl = exp(mean loss over all windows of all documents).\n"
    "  --text FILE      bytes for a byte-level model (vocabulary 256 or\n"
    "                   \"byte_level\": true), else MODEL_DIR/tokenizer.json\n"
    "  --tokens FILE    whitespace-separated token ids\n"
    "  --mode LIST      any of vanilla, longmamba, decimamba (default vanilla)\n"
    "  --calib FILE     LongMamba calibration (longmamba calibrate); needed by\n"
    "                   the longmamba mode\n"
    "  --align-end      windows of every length end where those of the longest\n"
    "                   --ctx end (same N for all), so every row scores the same\n"
    "                   tokens; documents shorter than the longest context skip\n"
    "  --score-last M   scored positions per window (default 1000 for a\n"
    "                   vocabulary <= 256, else 100); DeciMamba protects them\n"
    "  --theta X        LongMamba global-channel threshold (default: library's)\n"
    "  --scale B        LongMamba threshold scale (default 1)\n"
    "  --trigger N      LongMamba filters prompts of >= N tokens (default 1.5 x\n"
    "                   the calibration length)\n"
    "  --deci-*         DeciMamba layers (default the middle one), L_base\n"
    "                   (2000), beta (1), min_len (20)\n"
    "  --json           one JSON object on stdout instead of the table\n"
    "  --verbose        one line per (mode, context) on stderr\n"
    "A progress bar goes to stderr when it is a terminal.\n";

static const char passkey_usage[] =
    "usage: longmamba passkey MODEL_DIR --lengths L1,L2,... [--depths D1,D2,...]\n"
    "           [--mode vanilla|longmamba|decimamba[,...]] [--calib CALIB.safetensors]\n"
    "           [--filler FILE] [--trials N] [--seed S] [--json]\n"
    "           [--theta X] [--scale B] [--trigger N]\n"
    "           [--deci-layers L1,L2,...] [--deci-lbase N] [--deci-beta X] [--deci-min N]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--chunk N] [--verbose]\n"
    "\n"
    "Pass-key retrieval.  Each prompt has exactly L tokens: filler text with the\n"
    "needle \" The pass key is K. Remember it. K is the pass key. \" (K a random\n"
    "5-digit key) starting at depth D of the room before the end (0 = first\n"
    "token, 1 = just before the question), then \"\\nWhat is the pass key? The\n"
    "pass key is\".  Correct iff the greedy continuation, leading whitespace\n"
    "skipped, begins with the 5 digits of K.  N trials per cell (default 5); the\n"
    "keys and filler offsets depend only on the seed (default 1234), length,\n"
    "depth and trial, so every mode sees the same prompts.  Prints accuracy per\n"
    "length x depth for each mode.\n"
    "  --depths LIST    fractions in [0, 1] (default 0,0.25,0.5,0.75,1)\n"
    "  --filler FILE    haystack text, used cyclically from a random offset\n"
    "                   (default: \"The grass is green. The sky is blue. ...\")\n"
    "Text is bytes for a byte-level model, else MODEL_DIR/tokenizer.json.\n"
    "Other options as for `longmamba ppl --help`.\n";

/* ---- small helpers ---------------------------------------------------------- */

/* Comma-separated list of integers in [lo, hi]; 1 on success. */
static int parse_ll_list(const char *s, long long lo, long long hi, long long *out, int cap,
                         int *n)
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

static const char *const mode_names[] = {"vanilla", "longmamba", "decimamba"};

/* "vanilla,longmamba": each at most once, in the given order. */
static int parse_modes(const char *s, lm_mode *out, int *n)
{
    char buf[256];
    if (strlen(s) >= sizeof buf || !*s || s[strlen(s) - 1] == ',' || s[0] == ',' ||
        strstr(s, ",,"))
        return 0;
    strcpy(buf, s);
    *n = 0;
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        int m = -1;
        for (int k = 0; k < MAX_MODES; k++)
            if (strcmp(p, mode_names[k]) == 0)
                m = k;
        if (m < 0 || *n >= MAX_MODES)
            return 0;
        for (int k = 0; k < *n; k++)
            if ((int)out[k] == m)
                return 0;
        out[(*n)++] = (lm_mode)m;
    }
    return *n > 0;
}

/* JSON string literal of s. */
static void json_str(FILE *f, const char *s)
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

/* A finite number, or null. */
static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

/* ---- progress bar (stderr, terminals only) ------------------------------------ */

typedef struct progress {
    int on;
    double total;    /* tokens of the whole run */
    double base;     /* tokens of the prefills already finished */
    double start;
    double last;     /* time of the last redraw */
    char label[96];
} progress;

static void progress_draw(progress *p, double done, int force)
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
    fprintf(stderr, "\r[%s] %5.1f%%  %-28.28s  %6.0f s, eta %6.0f s ", bar, 100.0 * frac,
            p->label, el, eta);
    fflush(stderr);
}

static void progress_end(progress *p)
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

/* ---- options shared by both commands ------------------------------------------ */

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
    lm_backend backend;
    long long threads, chunk;
    int json, verbose;
} eval_opts;

static void eval_opts_init(eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->modes[0] = LM_MODE_VANILLA;
    o->n_modes = 1;
    o->backend = LM_BACKEND_AUTO;
}

/* Tries the shared options at argv[*i] ("--name value" or "--name=value").
 * 1 matched (advances *i), 0 not an option of this set, 2 usage error
 * (printed). */
static int shared_opt(const char *usage, int argc, char **argv, int *i, eval_opts *o)
{
    const char *a = argv[*i];
    static const char *const flags[] = {"--json", "--verbose"};
    for (int k = 0; k < 2; k++) {
        if (strcmp(a, flags[k]) == 0) {
            if (k == 0)
                o->json = 1;
            else
                o->verbose = 1;
            (*i)++;
            return 1;
        }
    }
    static const char *const names[] = {"--mode",        "--calib",      "--theta",
                                        "--scale",       "--trigger",    "--deci-layers",
                                        "--deci-lbase",  "--deci-beta",  "--deci-min",
                                        "--backend",     "--threads",    "--chunk"};
    int which = -1;
    size_t nlen = 0;
    for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++) {
        size_t n = strlen(names[k]);
        if (strncmp(a, names[k], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
            which = k;
            nlen = n;
        }
    }
    if (which < 0)
        return 0;
    const char *v;
    if (a[nlen] == '=') {
        v = a + nlen + 1;
        (*i)++;
    } else {
        if (*i + 1 >= argc)
            return cli_usage(usage, "%s needs a value", a);
        v = argv[*i + 1];
        *i += 2;
    }
    long long ll = 0, list[MAX_LIST];
    int n = 0;
    switch (which) {
    case 0:
        if (!parse_modes(v, o->modes, &o->n_modes))
            return cli_usage(usage,
                             "--mode takes vanilla, longmamba and/or decimamba, comma "
                             "separated, each once; not '%s'",
                             v);
        break;
    case 1: o->calib_path = v; break;
    case 2:
        if (!cli_parse_double(v, &o->theta) || !(o->theta > 0.0))
            return cli_usage(usage, "--theta needs a number > 0, not '%s'", v);
        break;
    case 3:
        if (!cli_parse_double(v, &o->scale) || !(o->scale > 0.0))
            return cli_usage(usage, "--scale needs a number > 0, not '%s'", v);
        break;
    case 4:
        if (!cli_parse_int(v, 1, INT64_C(1) << 40, &o->trigger))
            return cli_usage(usage, "--trigger needs a positive integer, not '%s'", v);
        break;
    case 5:
        if (!parse_ll_list(v, 0, 1 << 20, list, MAX_LIST, &n))
            return cli_usage(usage, "--deci-layers needs layer indices like 3,4; not '%s'", v);
        for (int k = 0; k < n; k++)
            o->deci_layers[k] = (int32_t)list[k];
        o->n_deci_layers = n;
        break;
    case 6:
        if (!cli_parse_int(v, 1, INT64_C(1) << 40, &o->deci_lbase))
            return cli_usage(usage, "--deci-lbase needs a positive integer, not '%s'", v);
        break;
    case 7:
        if (!cli_parse_double(v, &o->deci_beta) || !(o->deci_beta > 0.0))
            return cli_usage(usage, "--deci-beta needs a number > 0, not '%s'", v);
        break;
    case 8:
        if (!cli_parse_int(v, 1, INT64_C(1) << 40, &o->deci_min))
            return cli_usage(usage, "--deci-min needs a positive integer, not '%s'", v);
        break;
    case 9:
        if (!cli_parse_backend(v, &o->backend))
            return cli_usage(usage, "--backend is cpu, cuda or auto, not '%s'", v);
        break;
    case 10:
        if (!cli_parse_int(v, 0, 4096, &o->threads))
            return cli_usage(usage, "--threads needs an integer in [0, 4096], not '%s'", v);
        break;
    case 11:
        if (!cli_parse_int(v, 1, INT64_C(1) << 30, &ll))
            return cli_usage(usage, "--chunk needs a positive integer, not '%s'", v);
        o->chunk = ll;
        break;
    }
    return 1;
}

/* A command's own option at argv[*i], one of names[0..n): its name length
 * and value.  1 matched, EXIT_USAGE otherwise (printed). */
static int own_opt(const char *usage, int argc, char **argv, int *i, const char *const *names,
                   int n, size_t *nlen, const char **value)
{
    const char *a = argv[*i];
    for (int k = 0; k < n; k++) {
        size_t len = strlen(names[k]);
        if (strncmp(a, names[k], len) != 0 || (a[len] != '\0' && a[len] != '='))
            continue;
        *nlen = len;
        if (a[len] == '=') {
            *value = a + len + 1;
            (*i)++;
        } else {
            if (*i + 1 >= argc)
                return cli_usage(usage, "%s needs a value", a);
            *value = argv[*i + 1];
            *i += 2;
        }
        return 1;
    }
    return cli_usage(usage, "unknown option '%s'", a);
}

/* After parsing: the combinations that cannot work. */
static int check_shared(const char *usage, const eval_opts *o)
{
    int has_lm = 0;
    for (int k = 0; k < o->n_modes; k++)
        has_lm |= o->modes[k] == LM_MODE_LONGMAMBA;
    if (!o->dir)
        return cli_usage(usage, "%s", "MODEL_DIR is missing");
    if (has_lm && !o->calib_path)
        return cli_usage(usage, "%s",
                         "the longmamba mode needs --calib CALIB.safetensors (make one with "
                         "`longmamba calibrate` on training text)");
    return 0;
}

/* Model, optional calibration and one session with a progress callback. */
typedef struct eval_ctx {
    lm_model *model;
    lm_model_info info;
    lm_calibration *calib;
    lm_session *session;
} eval_ctx;

static void eval_ctx_free(eval_ctx *c)
{
    lm_session_free(c->session);
    lm_calibration_free(c->calib);
    lm_model_free(c->model);
    memset(c, 0, sizeof *c);
}

static int eval_ctx_open(eval_ctx *c, const eval_opts *o, progress *prog)
{
    memset(c, 0, sizeof *c);
    if (cli_load_model(o->dir, o->backend, o->threads, &c->model, &c->info))
        return 1;
    int need_calib = 0;
    for (int k = 0; k < o->n_modes; k++)
        need_calib |= o->modes[k] == LM_MODE_LONGMAMBA;
    if ((need_calib && cli_load_calibration(o->calib_path, c->model, &c->calib)) ||
        cli_create_session(c->model, o->chunk, on_prefill_progress, prog, &c->session)) {
        eval_ctx_free(c);
        return 1;
    }
    return 0;
}

/* Puts the session in `mode`; DeciMamba keeps the last `protect` tokens. */
static int set_mode(eval_ctx *c, const eval_opts *o, lm_mode mode, int64_t protect)
{
    lm_status st = LM_OK;
    if (mode == LM_MODE_VANILLA) {
        st = lm_session_set_vanilla(c->session);
    } else if (mode == LM_MODE_LONGMAMBA) {
        lm_longmamba_params lp;
        lm_longmamba_params_init(&lp);
        lp.theta = o->theta;
        lp.threshold_scale = o->scale;
        lp.trigger_length = o->trigger;
        st = lm_session_set_longmamba(c->session, c->calib, &lp);
    } else {
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
        st = lm_session_set_decimamba(c->session, &dp);
    }
    if (st != LM_OK) {
        char what[64];
        snprintf(what, sizeof what, "cannot enable %s mode", mode_names[mode]);
        return cli_fail_status(what, st, lm_session_last_error(c->session));
    }
    return 0;
}

/* One prompt from zero state: length hint, prefill, logits of the last
 * n_logits positions. */
static int run_prompt(eval_ctx *c, progress *prog, const int32_t *ids, size_t n, size_t n_logits,
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

static void print_mode_params(FILE *f, const eval_opts *o, const lm_model_info *info)
{
    fprintf(f, "\"params\": {\"theta\": ");
    json_num(f, o->theta > 0 ? o->theta : (info->arch == LM_ARCH_MAMBA2 ? 5e-2 : 1e-3));
    fprintf(f, ", \"scale\": ");
    json_num(f, o->scale > 0 ? o->scale : 1.0);
    fprintf(f, ", \"trigger\": %lld, \"deci_layers\": [", o->trigger);
    if (o->n_deci_layers)
        for (int k = 0; k < o->n_deci_layers; k++)
            fprintf(f, "%s%d", k ? ", " : "", (int)o->deci_layers[k]);
    else
        fprintf(f, "%lld", (long long)(info->n_layer / 2));
    fprintf(f, "], \"deci_lbase\": %lld, \"deci_beta\": ", o->deci_lbase ? o->deci_lbase : 2000);
    json_num(f, o->deci_beta > 0 ? o->deci_beta : 1.0);
    fprintf(f, ", \"deci_min\": %lld}", o->deci_min ? o->deci_min : 20);
}

/* ---- ppl ------------------------------------------------------------------------ */

typedef struct doc {
    const char *path;
    int is_text;
    int32_t *ids;
    size_t n;
} doc;

/* Window starts of a document of n tokens at context W (reading W + 1
 * tokens: W inputs, the last one only a target). */
static size_t window_starts(size_t n, long long W, long long max_windows, size_t *starts)
{
    if (n < (size_t)W + 1)
        return 0;
    size_t span = n - (size_t)W - 1;
    size_t stride = span / (size_t)max_windows;
    if (stride < 10)
        stride = 10;
    size_t k = 0;
    for (size_t s = 0; s <= span && k < (size_t)max_windows; s += stride)
        starts[k++] = s;
    return k;
}

/* --align-end: every context length uses windows that end where those of
 * the longest context end, so every row scores the same tokens. */
typedef struct layout {
    int aligned;
    long long wmax, nmax;
} layout;

static size_t doc_windows(const layout *lay, size_t n, long long W, long long N, size_t *starts)
{
    if (!lay->aligned)
        return window_starts(n, W, N, starts);
    size_t k = window_starts(n, lay->wmax, lay->nmax, starts);
    for (size_t i = 0; i < k; i++)
        starts[i] += (size_t)(lay->wmax - W);
    return k;
}

/* Mean cross-entropy (nats) of targets[0..M) under logits [M][V]. */
static double mean_xent(const float *logits, const int32_t *targets, size_t M, size_t V)
{
    double total = 0.0;
    for (size_t i = 0; i < M; i++) {
        const float *row = logits + i * V;
        float mx = row[0];
        for (size_t v = 1; v < V; v++)
            if (row[v] > mx)
                mx = row[v];
        double se = 0.0;
        for (size_t v = 0; v < V; v++)
            se += exp((double)row[v] - (double)mx);
        total += (double)mx + log(se) - (double)row[targets[i]];
    }
    return total / (double)M;
}

int cmd_ppl(int argc, char **argv)
{
    eval_opts o;
    eval_opts_init(&o);
    doc docs[MAX_LIST];
    int n_docs = 0;
    long long ctx[MAX_LIST], wins[MAX_LIST], score_last = 0;
    int n_ctx = 0, n_wins = 0, align_end = 0;

    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(ppl_usage, stdout);
            return 0;
        }
        if (strcmp(a, "--align-end") == 0) {
            align_end = 1;
            i++;
            continue;
        }
        int m = shared_opt(ppl_usage, argc, argv, &i, &o);
        if (m == EXIT_USAGE)
            return EXIT_USAGE;
        if (m)
            continue;
        if (a[0] == '-' && a[1] != '\0') {
            static const char *const own[] = {"--text", "--tokens", "--ctx", "--windows",
                                              "--score-last"};
            size_t nlen = 0;
            const char *v = NULL;
            int mm = own_opt(ppl_usage, argc, argv, &i, own, 5, &nlen, &v);
            if (mm != 1)
                return EXIT_USAGE;
            if ((nlen == 6 && strncmp(a, "--text", 6) == 0) ||
                (nlen == 8 && strncmp(a, "--tokens", 8) == 0)) {
                if (n_docs >= MAX_LIST)
                    return cli_usage(ppl_usage, "at most 64 documents, '%s' is one more", v);
                docs[n_docs].path = v;
                docs[n_docs].is_text = nlen == 6;
                docs[n_docs].ids = NULL;
                docs[n_docs].n = 0;
                n_docs++;
            } else if (nlen == 5 && strncmp(a, "--ctx", 5) == 0) {
                if (!parse_ll_list(v, 1, INT64_C(1) << 32, ctx, MAX_LIST, &n_ctx))
                    return cli_usage(ppl_usage,
                                     "--ctx needs positive context lengths like 2048,8192; "
                                     "not '%s'",
                                     v);
            } else if (nlen == 9 && strncmp(a, "--windows", 9) == 0) {
                if (!parse_ll_list(v, 1, 1000000, wins, MAX_LIST, &n_wins))
                    return cli_usage(ppl_usage,
                                     "--windows needs a positive count or a list of them, "
                                     "not '%s'",
                                     v);
            } else if (nlen == 12 && strncmp(a, "--score-last", 12) == 0) {
                if (!cli_parse_int(v, 1, INT64_C(1) << 32, &score_last))
                    return cli_usage(ppl_usage, "--score-last needs a positive integer, not '%s'",
                                     v);
            } else {
                return cli_usage(ppl_usage, "unknown option '%s'", a);
            }
            continue;
        }
        if (o.dir)
            return cli_usage(ppl_usage, "unexpected argument '%s'", a);
        o.dir = a;
        i++;
    }
    if (check_shared(ppl_usage, &o))
        return EXIT_USAGE;
    if (!n_docs)
        return cli_usage(ppl_usage, "%s", "give at least one --text FILE or --tokens FILE");
    if (!n_ctx)
        return cli_usage(ppl_usage, "%s", "--ctx W1,W2,... is required");
    if (n_wins > 1 && n_wins != n_ctx)
        return cli_usage(ppl_usage, "%s",
                         "--windows takes one count or one per --ctx length");
    if (align_end && n_wins > 1)
        return cli_usage(ppl_usage, "%s", "--align-end takes one --windows count");
    if (n_wins == 0)
        wins[n_wins++] = 10;
    if (n_wins == 1)
        for (int k = 1; k < n_ctx; k++)
            wins[k] = wins[0];

    progress prog = {isatty(2), 0, 0, 0, 0, ""};
    eval_ctx c;
    if (eval_ctx_open(&c, &o, &prog))
        return 1;
    const int64_t V = c.info.vocab_size;
    if (score_last == 0)
        score_last = V <= 256 ? 1000 : 100;
    int rc = 1;
    float *logits = NULL;
    size_t *starts = NULL;
    double *nll = NULL; /* [mode][ctx][doc][window] */
    cli_encoder enc = {CLI_TEXT_NONE, NULL, V};
    int enc_open = 0;
    size_t max_win = 0;
    for (int k = 0; k < n_ctx; k++)
        if ((size_t)wins[k] > max_win)
            max_win = (size_t)wins[k];

    for (int k = 0; k < n_ctx; k++) {
        if (score_last > ctx[k]) {
            cli_fail("--score-last %lld is longer than the context %lld (pass a "
                     "smaller --score-last)",
                     score_last, ctx[k]);
            rc = EXIT_USAGE;
            goto out;
        }
    }

    for (int d = 0; d < n_docs; d++) {
        if (!docs[d].is_text) {
            docs[d].ids = cli_read_token_file(docs[d].path, V, &docs[d].n);
        } else {
            if (!enc_open) {
                enc_open = 1;
                if (cli_encoder_open(&enc, o.dir, V,
                                     "cannot read --text; pass token ids with --tokens FILE"))
                    goto out;
            }
            docs[d].ids = cli_encode_file(&enc, docs[d].path, &docs[d].n);
        }
        if (!docs[d].ids)
            goto out;
    }

    /* Every context length needs one document of W + 1 tokens. */
    double total_tokens = 0.0;
    layout lay = {align_end, 0, wins[0]};
    for (int k = 0; k < n_ctx; k++)
        if (ctx[k] > lay.wmax)
            lay.wmax = ctx[k];
    starts = malloc(max_win * sizeof *starts);
    if (!starts) {
        cli_fail("out of memory");
        goto out;
    }
    for (int k = 0; k < n_ctx; k++) {
        size_t nw = 0;
        for (int d = 0; d < n_docs; d++) {
            nw += doc_windows(&lay, docs[d].n, ctx[k], wins[k], starts);
        }
        if (!nw) {
            cli_fail("no document has the %lld tokens that context %lld needs "
                     "(W + 1)",
                     ctx[k] + 1, ctx[k]);
            goto out;
        }
    }
    size_t n_cells = (size_t)o.n_modes * (size_t)n_ctx * (size_t)n_docs * max_win;
    nll = malloc(n_cells * sizeof *nll);
    logits = malloc((size_t)score_last * (size_t)V * sizeof *logits);
    if (!nll || !logits) {
        cli_fail("out of memory");
        goto out;
    }
    for (size_t k = 0; k < n_cells; k++)
        nll[k] = NAN;
    for (int k = 0; k < n_ctx; k++)
        for (int d = 0; d < n_docs; d++)
            total_tokens += (double)doc_windows(&lay, docs[d].n, ctx[k], wins[k], starts) *
                            (double)ctx[k] * o.n_modes;

    prog.total = total_tokens;
    prog.start = cli_seconds();
    double secs[MAX_MODES][MAX_LIST];
    double t_all = cli_seconds();
    const size_t M = (size_t)score_last;
#define NLL(mi, ci, di, wi) \
    nll[((((size_t)(mi) * (size_t)n_ctx + (size_t)(ci)) * (size_t)n_docs + (size_t)(di)) * max_win) + (size_t)(wi)]
    for (int mi = 0; mi < o.n_modes; mi++) {
        if (set_mode(&c, &o, o.modes[mi], (int64_t)M))
            goto out;
        for (int ci = 0; ci < n_ctx; ci++) {
            const size_t W = (size_t)ctx[ci];
            double t0 = cli_seconds();
            snprintf(prog.label, sizeof prog.label, "%s ctx %zu", mode_names[o.modes[mi]], W);
            for (int di = 0; di < n_docs; di++) {
                size_t nw = doc_windows(&lay, docs[di].n, ctx[ci], wins[ci], starts);
                for (size_t wi = 0; wi < nw; wi++) {
                    const int32_t *w = docs[di].ids + starts[wi];
                    if (run_prompt(&c, &prog, w, W, M, logits, M * (size_t)V))
                        goto out;
                    /* logits of inputs W-M .. W-1 predict tokens W-M+1 .. W */
                    NLL(mi, ci, di, wi) = mean_xent(logits, w + W - M + 1, M, (size_t)V);
                }
            }
            secs[mi][ci] = cli_seconds() - t0;
            if (o.verbose) {
                double sum = 0.0;
                size_t cnt = 0;
                for (int di = 0; di < n_docs; di++)
                    for (size_t wi = 0; wi < max_win; wi++)
                        if (!isnan(NLL(mi, ci, di, wi))) {
                            sum += NLL(mi, ci, di, wi);
                            cnt++;
                        }
                if (prog.on)
                    fputc('\n', stderr);
                fprintf(stderr, "longmamba: %s ctx %zu: %zu windows, ppl %.4f, %.1f s\n",
                        mode_names[o.modes[mi]], W, cnt, cnt ? exp(sum / (double)cnt) : NAN,
                        secs[mi][ci]);
            }
        }
    }
    progress_end(&prog);
    t_all = cli_seconds() - t_all;

    /* Results: ppl[mode][ctx] = exp(mean over the windows of every document). */
    double ppl[MAX_MODES][MAX_LIST], mean_nll[MAX_MODES][MAX_LIST];
    size_t count[MAX_LIST];
    for (int ci = 0; ci < n_ctx; ci++) {
        count[ci] = 0;
        for (int di = 0; di < n_docs; di++)
            count[ci] += doc_windows(&lay, docs[di].n, ctx[ci], wins[ci], starts);
    }
    for (int mi = 0; mi < o.n_modes; mi++)
        for (int ci = 0; ci < n_ctx; ci++) {
            double sum = 0.0;
            size_t cnt = 0;
            for (int di = 0; di < n_docs; di++)
                for (size_t wi = 0; wi < max_win; wi++)
                    if (!isnan(NLL(mi, ci, di, wi))) {
                        sum += NLL(mi, ci, di, wi);
                        cnt++;
                    }
            mean_nll[mi][ci] = sum / (double)cnt;
            ppl[mi][ci] = exp(mean_nll[mi][ci]);
        }

    if (o.json) {
        FILE *f = stdout;
        fprintf(f, "{\"command\": \"ppl\", \"model\": ");
        json_str(f, o.dir);
        fprintf(f, ", \"vocab_size\": %lld, \"fingerprint\": \"%016llx\", \"calibration\": ",
                (long long)V, (unsigned long long)c.info.fingerprint);
        if (c.calib)
            json_str(f, o.calib_path);
        else
            fputs("null", f);
        fprintf(f, ",\n \"score_last\": %zu, \"align_end\": %s, \"backend\": \"%s\", ", M,
                align_end ? "true" : "false", lm_backend_name(c.info.backend));
        fprintf(f, "\"threads\": %d, ", (int)c.info.n_threads);
        print_mode_params(f, &o, &c.info);
        fprintf(f, ",\n \"documents\": [");
        for (int di = 0; di < n_docs; di++) {
            fprintf(f, "%s{\"path\": ", di ? ", " : "");
            json_str(f, docs[di].path);
            fprintf(f, ", \"tokens\": %zu}", docs[di].n);
        }
        fprintf(f, "],\n \"seconds\": %.3f,\n \"results\": [", t_all);
        for (int mi = 0; mi < o.n_modes; mi++) {
            for (int ci = 0; ci < n_ctx; ci++) {
                fprintf(f, "%s\n  {\"mode\": \"%s\", \"ctx\": %lld, \"windows\": %zu, \"nll\": ",
                        mi || ci ? "," : "", mode_names[o.modes[mi]], ctx[ci], count[ci]);
                json_num(f, mean_nll[mi][ci]);
                fprintf(f, ", \"ppl\": ");
                json_num(f, ppl[mi][ci]);
                fprintf(f, ", \"seconds\": %.3f, \"window_nll\": [", secs[mi][ci]);
                int first = 1;
                for (int di = 0; di < n_docs; di++) {
                    size_t nw = doc_windows(&lay, docs[di].n, ctx[ci], wins[ci], starts);
                    for (size_t wi = 0; wi < nw; wi++) {
                        fprintf(f, "%s{\"doc\": %d, \"start\": %zu, \"nll\": ", first ? "" : ", ",
                                di, starts[wi]);
                        json_num(f, NLL(mi, ci, di, wi));
                        fputc('}', f);
                        first = 0;
                    }
                }
                fprintf(f, "]}");
            }
        }
        fprintf(f, "\n ]}\n");
    } else {
        printf("model %s, %d document(s), loss on the last %zu tokens of each window\n", o.dir,
               n_docs, M);
        printf("%9s %8s", "ctx", "windows");
        for (int mi = 0; mi < o.n_modes; mi++)
            printf(" %12s", mode_names[o.modes[mi]]);
        putchar('\n');
        for (int ci = 0; ci < n_ctx; ci++) {
            printf("%9lld %8zu", ctx[ci], count[ci]);
            for (int mi = 0; mi < o.n_modes; mi++)
                printf(" %12.4f", ppl[mi][ci]);
            putchar('\n');
        }
    }
    fflush(stdout);
    fprintf(stderr, "longmamba: %.0f tokens in %.1f s (%.0f tokens/s)\n", total_tokens, t_all,
            t_all > 0 ? total_tokens / t_all : 0.0);
    rc = 0;
#undef NLL
out:
    free(logits);
    free(starts);
    free(nll);
    for (int d = 0; d < n_docs; d++)
        free(docs[d].ids);
    cli_encoder_close(&enc);
    eval_ctx_free(&c);
    return rc;
}

/* ---- passkey -------------------------------------------------------------------- */

static const char grass_text[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";

int cmd_passkey(int argc, char **argv)
{
    eval_opts o;
    eval_opts_init(&o);
    const char *filler_path = NULL;
    long long lengths[MAX_LIST], trials = 5, seed = 1234;
    double depths[MAX_LIST] = {0.0, 0.25, 0.5, 0.75, 1.0};
    int n_len = 0, n_depth = 5;

    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(passkey_usage, stdout);
            return 0;
        }
        int m = shared_opt(passkey_usage, argc, argv, &i, &o);
        if (m == EXIT_USAGE)
            return EXIT_USAGE;
        if (m)
            continue;
        if (a[0] == '-' && a[1] != '\0') {
            static const char *const own[] = {"--lengths", "--depths", "--filler", "--trials",
                                              "--seed"};
            size_t nlen = 0;
            const char *v = NULL;
            int mm = own_opt(passkey_usage, argc, argv, &i, own, 5, &nlen, &v);
            if (mm != 1)
                return EXIT_USAGE;
            if (nlen == 9 && strncmp(a, "--lengths", 9) == 0) {
                if (!parse_ll_list(v, 1, INT64_C(1) << 32, lengths, MAX_LIST, &n_len))
                    return cli_usage(passkey_usage,
                                     "--lengths needs positive prompt lengths like 2048,8192; "
                                     "not '%s'",
                                     v);
            } else if (nlen == 8 && strncmp(a, "--depths", 8) == 0) {
                int ok = parse_dbl_list(v, depths, MAX_LIST, &n_depth);
                for (int k = 0; ok && k < n_depth; k++)
                    ok = depths[k] >= 0.0 && depths[k] <= 1.0;
                if (!ok)
                    return cli_usage(passkey_usage,
                                     "--depths needs fractions in [0, 1] like 0,0.5,1; not '%s'",
                                     v);
            } else if (nlen == 8 && strncmp(a, "--filler", 8) == 0) {
                filler_path = v;
            } else if (nlen == 8 && strncmp(a, "--trials", 8) == 0) {
                if (!cli_parse_int(v, 1, 1000000, &trials))
                    return cli_usage(passkey_usage, "--trials needs a positive integer, not '%s'",
                                     v);
            } else if (nlen == 6 && strncmp(a, "--seed", 6) == 0) {
                if (!cli_parse_int(v, 0, INT64_MAX, &seed))
                    return cli_usage(passkey_usage,
                                     "--seed needs a non-negative integer, not '%s'", v);
            } else {
                return cli_usage(passkey_usage, "unknown option '%s'", a);
            }
            continue;
        }
        if (o.dir)
            return cli_usage(passkey_usage, "unexpected argument '%s'", a);
        o.dir = a;
        i++;
    }
    if (check_shared(passkey_usage, &o))
        return EXIT_USAGE;
    if (!n_len)
        return cli_usage(passkey_usage, "%s", "--lengths L1,L2,... is required");

    progress prog = {isatty(2), 0, 0, 0, 0, ""};
    eval_ctx c;
    if (eval_ctx_open(&c, &o, &prog))
        return 1;
    const int64_t V = c.info.vocab_size;
    int rc = 1;
    cli_encoder enc = {CLI_TEXT_NONE, NULL, V};
    int32_t *filler = NULL, *prompt = NULL, *needle = NULL, *question = NULL;
    size_t n_filler = 0;
    float *logits = NULL;
    char *answers = NULL; /* [mode][len][depth][trial][16] continuations */
    int32_t *keys = NULL;
    unsigned char *correct = NULL;
    char err[512] = "";

    if (cli_encoder_open(&enc, o.dir, V, "passkey needs text"))
        goto out;
    if (filler_path)
        filler = cli_encode_file(&enc, filler_path, &n_filler);
    else
        filler = cli_encode_text(&enc, grass_text, strlen(grass_text), &n_filler);
    if (!filler)
        goto out;
    if (n_filler == 0) {
        cli_fail("the filler text %s is empty", filler_path);
        goto out;
    }

    /* Needle and question lengths do not depend on the key's digits for a
     * byte model; with a tokenizer they may, so each prompt measures them. */
    long long max_len = 0;
    double total_tokens = 0.0;
    for (int li = 0; li < n_len; li++) {
        if (lengths[li] > max_len)
            max_len = lengths[li];
        total_tokens += (double)lengths[li] * (double)n_depth * (double)trials * o.n_modes;
    }
    const int n_gen = enc.kind == CLI_TEXT_BYTES ? 6 : 8; /* " 68413" is 6 bytes */
    size_t n_cells = (size_t)o.n_modes * (size_t)n_len * (size_t)n_depth * (size_t)trials;
    prompt = malloc((size_t)max_len * sizeof *prompt);
    logits = malloc((size_t)V * sizeof *logits);
    answers = calloc(n_cells, 64);
    keys = malloc((size_t)n_len * (size_t)n_depth * (size_t)trials * sizeof *keys);
    correct = calloc(n_cells, 1);
    if (!prompt || !logits || !answers || !keys || !correct) {
        cli_fail("out of memory");
        goto out;
    }
    int64_t n_argmax = V;
    if (enc.tok && lm_tokenizer_vocab_size(enc.tok) > 0 && lm_tokenizer_vocab_size(enc.tok) < V)
        n_argmax = lm_tokenizer_vocab_size(enc.tok); /* padded rows never decode */

    prog.total = total_tokens;
    prog.start = cli_seconds();
    double t_all = cli_seconds();
    for (int mi = 0; mi < o.n_modes; mi++) {
        if (set_mode(&c, &o, o.modes[mi], 1))
            goto out;
        for (int li = 0; li < n_len; li++) {
            const size_t L = (size_t)lengths[li];
            snprintf(prog.label, sizeof prog.label, "%s len %zu", mode_names[o.modes[mi]], L);
            for (int di = 0; di < n_depth; di++) {
                for (long long t = 0; t < trials; t++) {
                    size_t cell = (((size_t)li * (size_t)n_depth + (size_t)di) * (size_t)trials +
                                   (size_t)t);
                    uint64_t r = cli_mix64((uint64_t)seed ^ cli_mix64((uint64_t)L ^ cli_mix64(
                                           (uint64_t)di * 1000003u + (uint64_t)t)));
                    int key = 10000 + (int)(r % 90000u);
                    size_t off = (size_t)(cli_mix64(r) % n_filler);
                    keys[cell] = key;
                    char nd[128], q[64];
                    snprintf(nd, sizeof nd,
                             " The pass key is %d. Remember it. %d is the pass key. ", key, key);
                    snprintf(q, sizeof q, "\nWhat is the pass key? The pass key is");
                    size_t n_nd = 0, n_q = 0;
                    needle = cli_encode_text(&enc, nd, strlen(nd), &n_nd);
                    question = cli_encode_text(&enc, q, strlen(q), &n_q);
                    if (!needle || !question)
                        goto out;
                    if (n_nd + n_q > L) {
                        cli_fail("length %zu is shorter than the needle and the "
                                 "question (%zu tokens)",
                                 L, n_nd + n_q);
                        goto out;
                    }
                    size_t room = L - n_nd - n_q;
                    size_t pos = (size_t)llround(depths[di] * (double)room);
                    size_t k = 0;
                    for (size_t j = 0; j < pos; j++)
                        prompt[k++] = filler[(off + j) % n_filler];
                    memcpy(prompt + k, needle, n_nd * sizeof *prompt);
                    k += n_nd;
                    for (size_t j = pos; j < room; j++)
                        prompt[k++] = filler[(off + j) % n_filler];
                    memcpy(prompt + k, question, n_q * sizeof *prompt);
                    free(needle);
                    free(question);
                    needle = question = NULL;

                    if (run_prompt(&c, &prog, prompt, L, 1, logits, (size_t)V))
                        goto out;
                    int32_t gen[8];
                    for (int g = 0; g < n_gen; g++) {
                        int32_t best = 0;
                        for (int64_t v = 1; v < n_argmax; v++)
                            if (logits[v] > logits[best])
                                best = (int32_t)v;
                        gen[g] = best;
                        if (g + 1 < n_gen) {
                            lm_status st = lm_session_decode(c.session, best, logits, (size_t)V);
                            if (st != LM_OK) {
                                cli_fail_status("decode failed", st,
                                                lm_session_last_error(c.session));
                                goto out;
                            }
                        }
                    }
                    char text[64];
                    size_t nb = 0;
                    if (enc.kind == CLI_TEXT_BYTES) {
                        for (int g = 0; g < n_gen; g++)
                            text[nb++] = (char)gen[g];
                    } else {
                        lm_status st = lm_tokenizer_decode(enc.tok, gen, (size_t)n_gen, text,
                                                           sizeof text - 1, &nb, err, sizeof err);
                        if (st == LM_ERR_BUFFER_TOO_SMALL)
                            nb = 0; /* a very long continuation is not 5 digits */
                        else if (st != LM_OK) {
                            cli_fail_status("cannot decode the answer", st, err);
                            goto out;
                        }
                    }
                    text[nb] = '\0';
                    const char *p = text;
                    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                        p++;
                    char want[8];
                    snprintf(want, sizeof want, "%d", key);
                    size_t at = (size_t)mi * (size_t)n_len * (size_t)n_depth * (size_t)trials + cell;
                    correct[at] = strncmp(p, want, 5) == 0;
                    /* printable copy for the JSON */
                    char *dst = answers + at * 64;
                    for (size_t j = 0, w = 0; j < nb && w < 63; j++)
                        dst[w++] = (text[j] >= 0x20 && text[j] < 0x7f) ? text[j] : '?';
                }
            }
        }
    }
    progress_end(&prog);
    t_all = cli_seconds() - t_all;

#define ACC_AT(mi, li, di, t) \
    correct[(size_t)(mi) * (size_t)n_len * (size_t)n_depth * (size_t)trials + \
            (((size_t)(li) * (size_t)n_depth + (size_t)(di)) * (size_t)trials + (size_t)(t))]
    if (o.json) {
        FILE *f = stdout;
        fprintf(f, "{\"command\": \"passkey\", \"model\": ");
        json_str(f, o.dir);
        fprintf(f, ", \"fingerprint\": \"%016llx\", \"calibration\": ",
                (unsigned long long)c.info.fingerprint);
        if (c.calib)
            json_str(f, o.calib_path);
        else
            fputs("null", f);
        fprintf(f, ", \"filler\": ");
        if (filler_path)
            json_str(f, filler_path);
        else
            fputs("null", f);
        fprintf(f, ",\n \"trials\": %lld, \"seed\": %lld, \"backend\": \"%s\", ", trials, seed,
                lm_backend_name(c.info.backend));
        print_mode_params(f, &o, &c.info);
        fprintf(f, ",\n \"lengths\": [");
        for (int li = 0; li < n_len; li++)
            fprintf(f, "%s%lld", li ? ", " : "", lengths[li]);
        fprintf(f, "], \"depths\": [");
        for (int di = 0; di < n_depth; di++) {
            fputs(di ? ", " : "", f);
            json_num(f, depths[di]);
        }
        fprintf(f, "], \"seconds\": %.3f,\n \"results\": [", t_all);
        for (int mi = 0; mi < o.n_modes; mi++) {
            fprintf(f, "%s\n  {\"mode\": \"%s\", \"accuracy\": [", mi ? "," : "",
                    mode_names[o.modes[mi]]);
            long long hit_all = 0;
            for (int li = 0; li < n_len; li++) {
                fprintf(f, "%s[", li ? ", " : "");
                for (int di = 0; di < n_depth; di++) {
                    long long hit = 0;
                    for (long long t = 0; t < trials; t++)
                        hit += ACC_AT(mi, li, di, t);
                    hit_all += hit;
                    fputs(di ? ", " : "", f);
                    json_num(f, (double)hit / (double)trials);
                }
                fputc(']', f);
            }
            fprintf(f, "], \"mean\": ");
            json_num(f, (double)hit_all / ((double)n_len * n_depth * (double)trials));
            fprintf(f, ",\n   \"prompts\": [");
            int first = 1;
            for (int li = 0; li < n_len; li++)
                for (int di = 0; di < n_depth; di++)
                    for (long long t = 0; t < trials; t++) {
                        size_t cell = (((size_t)li * (size_t)n_depth + (size_t)di) *
                                           (size_t)trials +
                                       (size_t)t);
                        size_t at = (size_t)mi * (size_t)n_len * (size_t)n_depth *
                                        (size_t)trials +
                                    cell;
                        fprintf(f, "%s{\"length\": %lld, \"depth\": ", first ? "" : ", ",
                                lengths[li]);
                        json_num(f, depths[di]);
                        fprintf(f, ", \"trial\": %lld, \"key\": \"%d\", \"answer\": ", t,
                                (int)keys[cell]);
                        json_str(f, answers + at * 64);
                        fprintf(f, ", \"correct\": %s}", correct[at] ? "true" : "false");
                        first = 0;
                    }
            fprintf(f, "]}");
        }
        fprintf(f, "\n ]}\n");
    } else {
        printf("model %s, %lld trial(s) per cell, filler %s, seed %lld\n", o.dir, trials,
               filler_path ? filler_path : "(grass)", seed);
        for (int mi = 0; mi < o.n_modes; mi++) {
            printf("\n%s: accuracy by length (rows) and depth (columns)\n",
                   mode_names[o.modes[mi]]);
            printf("%9s", "length");
            for (int di = 0; di < n_depth; di++)
                printf(" %6.2f", depths[di]);
            printf(" %7s\n", "mean");
            for (int li = 0; li < n_len; li++) {
                printf("%9lld", lengths[li]);
                long long row = 0;
                for (int di = 0; di < n_depth; di++) {
                    long long hit = 0;
                    for (long long t = 0; t < trials; t++)
                        hit += ACC_AT(mi, li, di, t);
                    row += hit;
                    printf(" %6.2f", (double)hit / (double)trials);
                }
                printf(" %7.3f\n", (double)row / ((double)n_depth * (double)trials));
            }
        }
    }
#undef ACC_AT
    fflush(stdout);
    fprintf(stderr, "longmamba: %.0f prompt tokens in %.1f s (%.0f tokens/s)\n", total_tokens,
            t_all, t_all > 0 ? total_tokens / t_all : 0.0);
    rc = 0;
out:
    free(needle);
    free(question);
    free(prompt);
    free(logits);
    free(answers);
    free(keys);
    free(correct);
    free(filler);
    cli_encoder_close(&enc);
    eval_ctx_free(&c);
    return rc;
}
