/*
 * longmamba.c - the command-line tool: model info, a logits check against a
 * reference file, text generation, and (cmd_longmamba.c) LongMamba
 * calibration and channel classification.
 *
 * Links only the public library.  Exit status: 0 success, 1 failure (an
 * error, or a check over tolerance), 2 usage error.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "longmamba.h"
#include "st_read.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: longmamba COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  info MODEL_DIR [--backend B] [--threads N]\n"
    "        architecture, sizes, dtype, vocabulary, parameters, backend, fingerprint\n"
    "  check MODEL_DIR REFERENCE.safetensors [--tol X] [--backend B] [--threads N]\n"
    "        [--chunk N]\n"
    "        run each row of input_ids (int32 [B,L]) as one prefill and compare\n"
    "        all-position logits with logits_f64 (float64 [B,L,V]); prints the\n"
    "        relative error ||out-ref||/||ref|| of each row and, last,\n"
    "        max_rel_err=...; exit 0 iff every row <= tol (default 1e-4)\n"
    "  generate MODEL_DIR (--prompt TEXT | --prompt-file FILE | --prompt-ids \"1 2 3\")\n"
    "        [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--bytes]\n"
    "        [--longmamba CALIB.safetensors [--theta X] [--scale B]] [--decimamba]\n"
    "        [--backend B] [--threads N] [--chunk N]\n"
    "        stream N new tokens (default 64; temp 0 = greedy; defaults temp 0.8,\n"
    "        top-k 0 = off, top-p 0.95, seed 42).  Text prompts use the model's\n"
    "        tokenizer.json, or raw bytes for a byte-level model (vocabulary 256,\n"
    "        \"byte_level\": true in config.json, or --bytes); --prompt-ids prints ids\n"
    "  calibrate ...    LongMamba calibration (longmamba calibrate --help)\n"
    "  channels ...     global/local channel classification (longmamba channels --help)\n"
    "  tokenize TOKENIZER [--text TEXT | --file FILE] [--count]\n"
    "                   text (or stdin) to token ids with a tokenizer.json\n"
    "  detokenize TOKENIZER [ID ...]\n"
    "                   ids (or stdin) back to bytes\n"
    "  ppl ...          perplexity vs context length, vanilla/LongMamba/DeciMamba\n"
    "                   (longmamba ppl --help)\n"
    "  passkey ...      pass-key retrieval, length x depth grid (longmamba passkey --help)\n"
    "  version          library and header versions, compiled backends\n"
    "  help, --help     this text\n"
    "\n"
    "B is cpu, cuda or auto (default auto).  Exit status: 0 ok, 1 failure, 2 usage.\n";

/* ---- small helpers ------------------------------------------------------- */

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("longmamba: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(run 'longmamba --help' for usage)\n", stderr);
    return EXIT_USAGE;
}

/* Strict option scanner: "--name VALUE", "--name=VALUE" or "--flag". */
typedef struct opt_iter {
    int argc;
    char **argv;
    int i;
    const char *value; /* of the option just matched */
} opt_iter;

/* Returns 1 if argv[i] is option `name` (taking a value when has_value);
 * advances past it.  -1 on a missing value (message printed). */
static int opt_match(opt_iter *it, const char *name, int has_value)
{
    const char *arg = it->argv[it->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || (arg[n] != '\0' && arg[n] != '='))
        return 0;
    if (!has_value) {
        if (arg[n] == '=')
            return usage_error("option %s takes no value", name), -1;
        it->i++;
        return 1;
    }
    if (arg[n] == '=') {
        it->value = arg + n + 1;
        it->i++;
        return 1;
    }
    if (it->i + 1 >= it->argc)
        return usage_error("option %s needs a value", name), -1;
    it->value = it->argv[it->i + 1];
    it->i += 2;
    return 1;
}

/* Option `name` with a string value: 1 matched (*out = the value), 0 not
 * this option, -1 usage error (printed); so for the helpers below. */
static int opt_str(opt_iter *it, const char *name, const char **out)
{
    int m = opt_match(it, name, 1);
    if (m > 0)
        *out = it->value;
    return m;
}

/* Flag `name`: *out = 1. */
static int opt_flag(opt_iter *it, const char *name, int *out)
{
    int m = opt_match(it, name, 0);
    if (m > 0)
        *out = 1;
    return m;
}

/* Option `name` with an integer in [lo, hi]; else "NAME needs WHAT, not
 * 'VALUE'". */
static int opt_int(opt_iter *it, const char *name, long long lo, long long hi, const char *what,
                   long long *out)
{
    int m = opt_match(it, name, 1);
    if (m > 0 && !cli_parse_int(it->value, lo, hi, out))
        return usage_error("%s needs %s, not '%s'", name, what, it->value), -1;
    return m;
}

/* Option `name` with a finite number in [lo, hi] (lo excluded when
 * lo_open); else "NAME needs WHAT, not 'VALUE'". */
static int opt_num(opt_iter *it, const char *name, double lo, int lo_open, double hi,
                   const char *what, double *out)
{
    int m = opt_match(it, name, 1);
    double v = 0.0;
    if (m > 0 && (!cli_parse_double(it->value, &v) || v < lo || (lo_open && v == lo) || v > hi))
        return usage_error("%s needs %s, not '%s'", name, what, it->value), -1;
    if (m > 0)
        *out = v;
    return m;
}

/* argv[it->i], not one of the command's options: --help or -h (usage
 * printed, 1), an unknown option or a positional argument past max
 * (message, -1), else the next positional argument (taken, 0). */
static int positional(opt_iter *it, const char *cmd, const char **pos, int max, int *n_pos)
{
    const char *a = it->argv[it->i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        fputs(usage_text, stdout);
        return 1;
    }
    if (a[0] == '-' && a[1] != '\0')
        return usage_error("%s: unknown option '%s'", cmd, a), -1;
    if (*n_pos == max)
        return usage_error("%s: unexpected argument '%s'", cmd, a), -1;
    pos[(*n_pos)++] = a;
    it->i++;
    return 0;
}

/* An option helper's result m: 1 or -1 end this argument (continue the
 * loop, or return the usage exit status), 0 tries the next option. */
#define OPT(call)                                                                                  \
    if ((m = (call)) != 0) {                                                                       \
        if (m < 0)                                                                                 \
            return EXIT_USAGE;                                                                     \
        continue;                                                                                  \
    }
/* The positional argument / --help / error at the end of an option loop. */
#define POSITIONAL(CMD, POS, MAX, N)                                                               \
    if ((m = positional(&it, CMD, POS, MAX, N)) != 0)                                              \
        return m > 0 ? 0 : EXIT_USAGE;

/* Shared model options. */
typedef struct model_opts {
    lm_backend backend;
    long long threads;
    long long chunk;
} model_opts;

/* Tries the options every model command takes.  1 matched, 0 not, -1 error. */
static int model_opt(opt_iter *it, model_opts *mo, int allow_chunk)
{
    int m;
    if ((m = opt_match(it, "--backend", 1)) != 0) {
        if (m > 0 && !cli_parse_backend(it->value, &mo->backend))
            return usage_error("--backend must be cpu, cuda or auto, not '%s'", it->value), -1;
        return m;
    }
    if ((m = opt_int(it, "--threads", 0, 4096, "an integer in [0, 4096]", &mo->threads)) != 0)
        return m;
    if (allow_chunk)
        return opt_int(it, "--chunk", 1, INT64_C(1) << 30, "a positive integer", &mo->chunk);
    return 0;
}

static const char *arch_name(lm_arch a)
{
    switch (a) {
    case LM_ARCH_MAMBA1: return "mamba1";
    case LM_ARCH_MAMBA2: return "mamba2";
    }
    return "unknown";
}

static const char *dtype_name(lm_dtype d)
{
    switch (d) {
    case LM_DTYPE_F32: return "f32";
    case LM_DTYPE_F16: return "f16";
    case LM_DTYPE_BF16: return "bf16";
    }
    return "unknown";
}

/* Reads a whole file (path "-" is stdin) into a malloc'd buffer. */
static char *read_all(const char *path, size_t *len)
{
    return strcmp(path, "-") == 0 ? cli_read_stream(stdin, len) : cli_read_file(path, len);
}

/* ---- info ------------------------------------------------------------------ */

static int cmd_info(int argc, char **argv)
{
    model_opts mo = {LM_BACKEND_AUTO, 0, 0};
    const char *dir = NULL;
    int n_pos = 0, m;
    opt_iter it = {argc, argv, 1, NULL};
    while (it.i < argc) {
        OPT(model_opt(&it, &mo, 0))
        POSITIONAL("info", &dir, 1, &n_pos)
    }
    if (!dir)
        return usage_error("info: MODEL_DIR is required");

    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(dir, mo.backend, mo.threads, &model, &info))
        return 1;
    printf("model:        %s\n", dir);
    printf("architecture: %s\n", arch_name(info.arch));
    printf("dtype:        %s\n", dtype_name(info.dtype));
    printf("d_model:      %lld\n", (long long)info.d_model);
    printf("d_inner:      %lld\n", (long long)info.d_inner);
    printf("d_state:      %lld\n", (long long)info.d_state);
    printf("d_conv:       %lld\n", (long long)info.d_conv);
    if (info.arch == LM_ARCH_MAMBA2) {
        printf("n_heads:      %lld\n", (long long)info.n_heads);
        printf("head_dim:     %lld\n", (long long)info.head_dim);
        printf("n_groups:     %lld\n", (long long)info.n_groups);
    } else {
        printf("dt_rank:      %lld\n", (long long)info.dt_rank);
    }
    printf("n_layer:      %lld\n", (long long)info.n_layer);
    printf("vocab_size:   %lld\n", (long long)info.vocab_size);
    printf("channels:     %lld per layer\n", (long long)info.n_channels);
    printf("parameters:   %lld (%.2f M)\n", (long long)info.n_params, (double)info.n_params / 1e6);
    printf("tied head:    %s\n", info.tied_embeddings ? "yes" : "no");
    printf("backend:      %s\n", lm_backend_name(info.backend));
    printf("threads:      %d\n", (int)info.n_threads);
    printf("fingerprint:  %016llx\n", (unsigned long long)info.fingerprint);
    cli_text_kind tk = cli_model_text_kind(dir, info.vocab_size);
    printf("tokenizer:    %s\n", tk == CLI_TEXT_TOKENIZER ? "tokenizer.json"
                                 : tk == CLI_TEXT_BYTES   ? "bytes"
                                                          : "none (use --prompt-ids)");
    lm_model_free(model);
    return 0;
}

/* ---- check ----------------------------------------------------------------- */

static int cmd_check(int argc, char **argv)
{
    model_opts mo = {LM_BACKEND_AUTO, 0, 0};
    double tol = 1e-4;
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0, m;
    opt_iter it = {argc, argv, 1, NULL};
    while (it.i < argc) {
        OPT(model_opt(&it, &mo, 1))
        OPT(opt_num(&it, "--tol", 0.0, 1, INFINITY, "a positive number", &tol))
        POSITIONAL("check", pos, 2, &n_pos)
    }
    if (n_pos != 2)
        return usage_error("check: MODEL_DIR and REFERENCE.safetensors are required");

    /* The reference first: a bad file should not cost a model load. */
    st_file ref;
    char err[512] = "";
    if (st_open(pos[1], &ref, err, sizeof err))
        return cli_fail("reference: %s", err);
    int rc = 1;
    int32_t *ids = NULL;
    double *want = NULL;
    float *got = NULL;
    lm_model *model = NULL;
    lm_session *s = NULL;

    const st_tensor *tid = st_find(&ref, "input_ids");
    const st_tensor *tlg = st_find(&ref, "logits_f64");
    if (!tid || !tlg) {
        cli_fail("reference %s: needs tensors input_ids and logits_f64", pos[1]);
        goto out;
    }
    if (tid->ndim != 2 || (strcmp(tid->dtype, "I32") != 0 && strcmp(tid->dtype, "I64") != 0)) {
        cli_fail("reference: input_ids must be int32 [B,L], found %s with %d dims", tid->dtype,
                 tid->ndim);
        goto out;
    }
    if (tlg->ndim != 3 || strcmp(tlg->dtype, "F64") != 0) {
        cli_fail("reference: logits_f64 must be float64 [B,L,V], found %s with %d dims", tlg->dtype,
                 tlg->ndim);
        goto out;
    }
    const int64_t B = tid->shape[0], L = tid->shape[1], V = tlg->shape[2];
    if (tlg->shape[0] != B || tlg->shape[1] != L) {
        cli_fail("reference: logits_f64 is [%lld,%lld,%lld] but input_ids is [%lld,%lld]",
                 (long long)tlg->shape[0], (long long)tlg->shape[1], (long long)V, (long long)B,
                 (long long)L);
        goto out;
    }
    if (B < 1 || L < 1 || V < 1) {
        cli_fail("reference: empty tensors ([%lld,%lld,%lld])", (long long)B, (long long)L,
                 (long long)V);
        goto out;
    }

    /* input_ids as int32 whatever the stored width. */
    ids = malloc((size_t)(B * L) * sizeof *ids);
    void *raw = st_copy_data(&ref, tid);
    if (!ids || !raw) {
        free(raw);
        cli_fail("out of memory");
        goto out;
    }
    for (int64_t i = 0; i < B * L; i++) {
        int64_t v = tid->elem_size == 4 ? ((int32_t *)raw)[i] : ((int64_t *)raw)[i];
        if (v < 0 || v > INT32_MAX) {
            free(raw);
            cli_fail("reference: input_ids[%lld][%lld] = %lld is not a token id",
                     (long long)(i / L), (long long)(i % L), (long long)v);
            goto out;
        }
        ids[i] = (int32_t)v;
    }
    free(raw);
    want = st_copy_data(&ref, tlg);
    if (!want) {
        cli_fail("out of memory");
        goto out;
    }

    lm_model_info info;
    if (cli_load_model(pos[0], mo.backend, mo.threads, &model, &info))
        goto out;
    if (info.vocab_size != V) {
        cli_fail("reference has vocabulary %lld but the model has %lld rows", (long long)V,
                 (long long)info.vocab_size);
        goto out;
    }
    if (cli_create_session(model, mo.chunk, NULL, NULL, &s))
        goto out;
    const size_t n_out = (size_t)(L * V);
    got = malloc(n_out * sizeof *got);
    if (!got) {
        cli_fail("out of memory for %lld x %lld logits", (long long)L, (long long)V);
        goto out;
    }

    printf("model %s: %s, %lld layers, vocab %lld, backend %s\n", pos[0], arch_name(info.arch),
           (long long)info.n_layer, (long long)info.vocab_size, lm_backend_name(info.backend));
    printf("reference %s: %lld rows x %lld tokens, tol %.3e\n", pos[1], (long long)B, (long long)L,
           tol);
    fflush(stdout);

    double worst = 0.0;
    int all_ok = 1;
    for (int64_t b = 0; b < B; b++) {
        lm_status st = lm_session_reset(s);
        double t0 = cli_seconds();
        if (st == LM_OK)
            st = lm_session_prefill(s, ids + b * L, (size_t)L, (size_t)L, got, n_out);
        double dt = cli_seconds() - t0;
        if (st != LM_OK) {
            char what[64];
            snprintf(what, sizeof what, "row %lld prefill", (long long)b);
            cli_fail_status(what, st, lm_session_last_error(s));
            goto out;
        }
        const double *w = want + b * L * V;
        double num = 0.0, den = 0.0, max_abs = 0.0;
        for (size_t k = 0; k < n_out; k++) {
            double d = (double)got[k] - w[k];
            num += d * d;
            den += w[k] * w[k];
            double a = fabs(d);
            if (!(a <= max_abs)) /* also catches NaN */
                max_abs = a;
        }
        double rel = den > 0.0 ? sqrt(num) / sqrt(den) : sqrt(num);
        int ok = rel <= tol; /* NaN compares false: fails */
        if (!ok)
            all_ok = 0;
        if (isnan(rel) || rel > worst)
            worst = isnan(worst) ? worst : rel;
        printf("row %lld: tokens=%lld rel_err=%.3e max_abs_err=%.3e %.1f tok/s %s\n", (long long)b,
               (long long)L, rel, max_abs, dt > 0 ? (double)L / dt : 0.0, ok ? "ok" : "FAIL");
        fflush(stdout);
    }
    printf("max_rel_err=%.3e\n", worst);
    rc = all_ok ? 0 : 1;

out:
    lm_session_free(s);
    lm_model_free(model);
    free(got);
    free(want);
    free(ids);
    st_close(&ref);
    return rc;
}

/* ---- sampling -------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

/* splitmix64: a full-period 64-bit generator, plenty for sampling. */
static uint64_t rng_next(rng *r)
{
    uint64_t z = cli_mix64(r->s);
    r->s += UINT64_C(0x9E3779B97F4A7C15);
    return z;
}

static double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct cand {
    float logit;
    int32_t id;
} cand;

typedef struct sampler {
    double temp;
    long long top_k;
    double top_p;
    rng r;
    cand *c;      /* scratch: candidates */
    double *prob; /* scratch: probabilities */
} sampler;

static int by_logit_desc(const void *a, const void *b)
{
    float x = ((const cand *)a)->logit, y = ((const cand *)b)->logit;
    return (x < y) - (x > y);
}

/* Picks a token among the first n logits. */
static int32_t sample(sampler *sp, const float *logits, int64_t n)
{
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = (int32_t)i;
    if (sp->temp <= 0.0)
        return best;

    int64_t m = n;
    for (int64_t i = 0; i < n; i++) {
        sp->c[i].logit = logits[i];
        sp->c[i].id = (int32_t)i;
    }
    if ((sp->top_k > 0 && sp->top_k < n) || sp->top_p < 1.0) {
        qsort(sp->c, (size_t)n, sizeof *sp->c, by_logit_desc);
        if (sp->top_k > 0 && sp->top_k < m)
            m = sp->top_k;
    }
    /* p_i = softmax(logits / temp), shifted by the max for range */
    double mx = logits[best], sum = 0.0;
    for (int64_t i = 0; i < m; i++) {
        sp->prob[i] = exp(((double)sp->c[i].logit - mx) / sp->temp);
        sum += sp->prob[i];
    }
    if (!(sum > 0.0) || !isfinite(sum))
        return best;
    if (sp->top_p < 1.0) {
        /* nucleus: the smallest prefix of the sorted candidates with mass >= top_p */
        double acc = 0.0;
        int64_t keep = m;
        for (int64_t i = 0; i < m; i++) {
            acc += sp->prob[i] / sum;
            if (acc >= sp->top_p) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
        sum = 0.0;
        for (int64_t i = 0; i < m; i++)
            sum += sp->prob[i];
    }
    double u = rng_uniform(&sp->r) * sum, acc = 0.0;
    for (int64_t i = 0; i < m; i++) {
        acc += sp->prob[i];
        if (u < acc)
            return sp->c[i].id;
    }
    return sp->c[m - 1].id;
}

/* ---- generate -------------------------------------------------------------- */

enum tok_mode { TOK_BYTES, TOK_TOKENIZER, TOK_IDS };

static int parse_id_list(const char *s, int32_t **out, size_t *n_out)
{
    size_t cap = 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            free(ids);
            return -1;
        }
        if (n == cap) {
            int32_t *ni = realloc(ids, cap * 2 * sizeof *ids);
            if (!ni) {
                free(ids);
                return -1;
            }
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

static int cmd_generate(int argc, char **argv)
{
    model_opts mo = {LM_BACKEND_AUTO, 0, 0};
    const char *dir = NULL, *prompt = NULL, *prompt_file = NULL, *prompt_ids = NULL;
    const char *calib_path = NULL;
    int force_bytes = 0, decimamba = 0;
    long long n_new = 64;
    double theta = 0.0, scale = 0.0;
    sampler sp = {0.8, 0, 0.95, {42}, NULL, NULL};
    long long seed = 42;

    int n_pos = 0, m;
    opt_iter it = {argc, argv, 1, NULL};
    while (it.i < argc) {
        OPT(model_opt(&it, &mo, 1))
        OPT(opt_str(&it, "--prompt", &prompt))
        OPT(opt_str(&it, "--prompt-file", &prompt_file))
        OPT(opt_str(&it, "--prompt-ids", &prompt_ids))
        OPT(opt_str(&it, "--longmamba", &calib_path))
        OPT(opt_int(&it, "-n", 0, INT64_C(1) << 31, "a non-negative integer", &n_new))
        OPT(opt_num(&it, "--temp", 0.0, 0, INFINITY, "a number >= 0", &sp.temp))
        OPT(opt_int(&it, "--top-k", 0, INT32_MAX, "an integer >= 0", &sp.top_k))
        OPT(opt_num(&it, "--top-p", 0.0, 1, 1.0, "a number in (0, 1]", &sp.top_p))
        OPT(opt_int(&it, "--seed", LLONG_MIN, LLONG_MAX, "an integer", &seed))
        OPT(opt_num(&it, "--theta", 0.0, 1, INFINITY, "a positive number", &theta))
        OPT(opt_num(&it, "--scale", 0.0, 1, INFINITY, "a positive number", &scale))
        OPT(opt_flag(&it, "--bytes", &force_bytes))
        OPT(opt_flag(&it, "--decimamba", &decimamba))
        POSITIONAL("generate", &dir, 1, &n_pos)
    }
    if (!dir)
        return usage_error("generate: MODEL_DIR is required");
    if (!!prompt + !!prompt_file + !!prompt_ids != 1)
        return usage_error("generate: give exactly one of --prompt, --prompt-file, --prompt-ids");
    if (calib_path && decimamba)
        return usage_error("generate: --longmamba and --decimamba exclude each other");
    if ((theta > 0 || scale > 0) && !calib_path)
        return usage_error("generate: --theta and --scale need --longmamba CALIB");
    if (force_bytes && prompt_ids)
        return usage_error("generate: --bytes applies to text prompts only");
    sp.r.s = (uint64_t)seed;

    int rc = 1;
    char err[512] = "";
    char *text = NULL;
    size_t text_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    lm_model *model = NULL;
    lm_session *s = NULL;
    lm_tokenizer *tok = NULL;
    lm_calibration *calib = NULL;
    char *piece = NULL;
    size_t piece_cap = 0;
    lm_status st;

    if (prompt_ids) {
        if (parse_id_list(prompt_ids, &ids, &n_ids))
            return usage_error(
                "--prompt-ids needs non-negative integers separated by spaces or commas");
        if (n_ids == 0) {
            free(ids);
            return usage_error("--prompt-ids is empty");
        }
    } else if (prompt_file) {
        text = read_all(prompt_file, &text_len);
        if (!text)
            return cli_fail("cannot read prompt file %s: %s", prompt_file, strerror(errno));
    } else {
        text_len = strlen(prompt);
        text = malloc(text_len + 1);
        if (!text)
            return cli_fail("out of memory");
        memcpy(text, prompt, text_len + 1);
    }
    if (text && text_len == 0) {
        free(text);
        return usage_error("generate: the prompt is empty");
    }

    lm_model_info info;
    if (cli_load_model(dir, mo.backend, mo.threads, &model, &info))
        goto out;

    enum tok_mode mode = TOK_IDS;
    int64_t n_sample = info.vocab_size; /* ids the sampler may pick */
    if (!prompt_ids) {
        cli_text_kind tk = force_bytes ? CLI_TEXT_BYTES : cli_model_text_kind(dir, info.vocab_size);
        if (tk == CLI_TEXT_NONE) {
            cli_fail("%s has no tokenizer.json and is not byte-level: use --prompt-ids (or "
                     "--bytes)",
                     dir);
            goto out;
        }
        mode = tk == CLI_TEXT_BYTES ? TOK_BYTES : TOK_TOKENIZER;
    }
    if (mode == TOK_BYTES) {
        if (info.vocab_size < 256) {
            cli_fail("--bytes needs a vocabulary of at least 256, the model has %lld",
                     (long long)info.vocab_size);
            goto out;
        }
        n_sample = 256; /* rows past 255 are padding */
        cli_encoder bytes;
        cli_encoder_bytes(&bytes, info.vocab_size);
        ids = cli_encode_text(&bytes, text, text_len, &n_ids);
        if (!ids)
            goto out;
    } else if (mode == TOK_TOKENIZER) {
        st = lm_tokenizer_load(dir, &tok, err, sizeof err);
        if (st != LM_OK) {
            cli_fail_status("cannot load tokenizer", st, err);
            goto out;
        }
        st = cli_tokenize(tok, text, text_len, &ids, &n_ids, err, sizeof err);
        if (st != LM_OK) {
            cli_fail_status("cannot encode the prompt", st, err);
            goto out;
        }
        if (n_ids == 0) {
            cli_fail("the prompt encodes to no tokens");
            goto out;
        }
        int64_t tv = lm_tokenizer_vocab_size(tok);
        if (tv > 0 && tv < n_sample)
            n_sample = tv; /* never sample an id the tokenizer cannot decode */
    }

    /* Before the prompt is echoed; the library would reject it at prefill. */
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] >= info.vocab_size) {
            cli_fail("prompt token %zu has id %d, outside the model's vocabulary [0, %lld)", i,
                 (int)ids[i], (long long)info.vocab_size);
            goto out;
        }
    }

    if (cli_create_session(model, mo.chunk, NULL, NULL, &s))
        goto out;
    if (calib_path) {
        st = lm_calibration_load(calib_path, model, &calib, err, sizeof err);
        if (st != LM_OK) {
            cli_fail_status("cannot load calibration", st, err);
            goto out;
        }
        lm_longmamba_params lp;
        lm_longmamba_params_init(&lp);
        lp.theta = theta;
        lp.threshold_scale = scale;
        st = lm_session_set_longmamba(s, calib, &lp);
        if (st != LM_OK) {
            cli_fail_status("cannot enable LongMamba", st, lm_session_last_error(s));
            goto out;
        }
    } else if (decimamba) {
        lm_decimamba_params dp;
        lm_decimamba_params_init(&dp);
        st = lm_session_set_decimamba(s, &dp);
        if (st != LM_OK) {
            cli_fail_status("cannot enable DeciMamba", st, lm_session_last_error(s));
            goto out;
        }
    }

    const size_t V = (size_t)info.vocab_size;
    logits = malloc(V * sizeof *logits);
    sp.c = malloc((size_t)n_sample * sizeof *sp.c);
    sp.prob = malloc((size_t)n_sample * sizeof *sp.prob);
    if (!logits || !sp.c || !sp.prob) {
        cli_fail("out of memory");
        goto out;
    }

    /* Echo the prompt, then stream the continuation. */
    if (mode == TOK_IDS) {
        for (size_t i = 0; i < n_ids; i++)
            printf("%s%d", i ? " " : "", (int)ids[i]);
        printf(" |");
    } else {
        fwrite(text, 1, text_len, stdout);
    }
    fflush(stdout);

    double t0 = cli_seconds();
    st = lm_session_prefill(s, ids, n_ids, 1, logits, V);
    double t_prefill = cli_seconds() - t0;
    if (st != LM_OK) {
        putchar('\n');
        cli_fail_status("prefill", st, lm_session_last_error(s));
        goto out;
    }
    t0 = cli_seconds();
    for (int64_t k = 0; k < n_new; k++) {
        int32_t next = sample(&sp, logits, n_sample);
        if (mode == TOK_IDS) {
            printf(" %d", (int)next);
        } else if (mode == TOK_BYTES) {
            putchar((unsigned char)next);
        } else {
            size_t nb = 0;
            st = lm_tokenizer_decode(tok, &next, 1, piece, piece_cap, &nb, err, sizeof err);
            if (st == LM_ERR_BUFFER_TOO_SMALL) {
                char *np = realloc(piece, nb);
                if (!np) {
                    cli_fail("out of memory");
                    goto out;
                }
                piece = np;
                piece_cap = nb;
                st = lm_tokenizer_decode(tok, &next, 1, piece, piece_cap, &nb, err, sizeof err);
            }
            if (st != LM_OK) {
                putchar('\n');
                cli_fail_status("cannot decode a token", st, err);
                goto out;
            }
            fwrite(piece, 1, nb, stdout);
        }
        fflush(stdout);
        if (k + 1 < n_new) { /* the last token's logits would go unused */
            st = lm_session_decode(s, next, logits, V);
            if (st != LM_OK) {
                putchar('\n');
                cli_fail_status("decode", st, lm_session_last_error(s));
                goto out;
            }
        }
    }
    double t_decode = cli_seconds() - t0;
    putchar('\n');
    fflush(stdout);
    fprintf(stderr,
            "prompt %zu tokens in %.3f s (%.1f tok/s); %lld new tokens in %.3f s (%.1f tok/s)\n",
            n_ids, t_prefill, t_prefill > 0 ? (double)n_ids / t_prefill : 0.0, (long long)n_new,
            t_decode, t_decode > 0 ? (double)n_new / t_decode : 0.0);
    rc = 0;

out:
    free(piece);
    free(sp.c);
    free(sp.prob);
    free(logits);
    lm_session_free(s);
    lm_calibration_free(calib);
    lm_tokenizer_free(tok);
    lm_model_free(model);
    free(ids);
    free(text);
    return rc;
}

/* ---- version / main ------------------------------------------------------- */

static int cmd_version(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("version takes no arguments");
    printf("longmamba %s (library %d, header %d)\n", lm_version_string(), (int)lm_version(),
           LM_VERSION_NUMBER);
    printf("backends: cpu%s\n", lm_backend_available(LM_BACKEND_CUDA) ? ", cuda" : "");
    if (lm_version() / 100 != LM_VERSION_NUMBER / 100)
        fprintf(stderr, "longmamba: warning: built against header %d, running library %d\n",
                LM_VERSION_NUMBER, (int)lm_version());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    /* Each command sees argv[0] = its own name. */
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return cmd_version(sub_argc, sub_argv);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(sub_argc, sub_argv);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(sub_argc, sub_argv);
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(sub_argc, sub_argv);
    if (strcmp(cmd, "calibrate") == 0)
        return cmd_calibrate(sub_argc, sub_argv);
    if (strcmp(cmd, "channels") == 0)
        return cmd_channels(sub_argc, sub_argv);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(sub_argc, sub_argv);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(sub_argc, sub_argv);
    if (strcmp(cmd, "ppl") == 0)
        return cmd_ppl(sub_argc, sub_argv);
    if (strcmp(cmd, "passkey") == 0)
        return cmd_passkey(sub_argc, sub_argv);
    return usage_error("unknown command '%s'", cmd);
}
