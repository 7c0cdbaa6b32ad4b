/*
 * cmd_generate.c - `longmamba generate`: stream new tokens after a prompt
 * (text through the model's tokenizer.json or as bytes, or ids), in
 * vanilla, LongMamba or DeciMamba mode, with temperature / top-k / top-p
 * sampling.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

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

/* ---- options --------------------------------------------------------------- */

typedef struct gen_opts {
    model_opts mo;
    const char *dir, *prompt, *prompt_file, *prompt_ids, *calib_path;
    int force_bytes, decimamba;
    long long n_new, seed;
    double theta, scale;
} gen_opts;

static const cli_cmd gen_cmd = {
    "generate",
    "generate MODEL_DIR (--prompt TEXT | --prompt-file FILE | --prompt-ids \"1 2 3\")\n"
    "           [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--bytes]\n"
    "           [--longmamba CALIB.safetensors [--theta X] [--scale B]] [--decimamba]\n"
    "           [--backend B] [--threads N] [--weights W] [--chunk N]",
    "Streams N new tokens.  Text prompts use the model's tokenizer.json, or raw\n"
    "bytes for a byte-level model (vocabulary 256, \"byte_level\": true in\n"
    "config.json, or --bytes); --prompt-ids prints ids.\n",
    cli_theta_help, 0};

/* Parses and cross-checks: 0, or an exit status (help printed: -1). */
static int gen_parse(gen_opts *g, sampler *sp, int argc, char **argv)
{
    const cli_opt opts[] = {
        {"--prompt", NULL, OPT_STR, &g->prompt, .arg = "TEXT", .help = "the prompt text"},
        {"--prompt-file", NULL, OPT_STR, &g->prompt_file, .arg = "FILE",
         .help = "the prompt in a file (- is stdin)"},
        {"--prompt-ids", NULL, OPT_STR, &g->prompt_ids, .arg = "IDS",
         .help = "token ids separated by spaces or commas"},
        {"-n", NULL, OPT_INT, &g->n_new, "a non-negative integer", 0, INT64_C(1) << 31, .arg = "N",
         .help = "new tokens (default 64)"},
        {"--temp", NULL, OPT_NUM, &sp->temp, "a number >= 0", .lo = 0.0, .hi = INFINITY, .arg = "T",
         .help = "temperature, 0 = greedy (default 0.8)"},
        {"--top-k", NULL, OPT_INT, &sp->top_k, "an integer >= 0", 0, INT32_MAX, .arg = "K",
         .help = "keep the K likeliest, 0 = off (default)"},
        {"--top-p", NULL, OPT_NUM, &sp->top_p, "a number in (0, 1]", .lo = 0.0, .hi = 1.0,
         .lo_open = 1, .arg = "P", .help = "nucleus mass (default 0.95)"},
        {"--seed", NULL, OPT_INT, &g->seed, "an integer", LLONG_MIN, LLONG_MAX, .arg = "S",
         .help = "sampling seed (default 42)"},
        {"--bytes", NULL, OPT_FLAG, &g->force_bytes, .help = "read a text prompt as raw bytes"},
        {"--longmamba", NULL, OPT_STR, &g->calib_path, .arg = "CALIB",
         .help = "LongMamba with this calibration"},
        {"--theta", NULL, OPT_NUM, &g->theta, "a positive number", .lo = 0.0, .hi = INFINITY,
         .lo_open = 1, .arg = "X", .help = "LongMamba global-channel threshold"},
        {"--scale", NULL, OPT_NUM, &g->scale, "a positive number", .lo = 0.0, .hi = INFINITY,
         .lo_open = 1, .arg = "B", .help = "LongMamba threshold scale"},
        {"--decimamba", NULL, OPT_FLAG, &g->decimamba,
         .help = "DeciMamba with the library's defaults"},
        CLI_OPT_BACKEND(&g->mo.backend),
        CLI_OPT_THREADS(&g->mo.threads),
        CLI_OPT_WEIGHTS(&g->mo.weights),
        CLI_OPT_CHUNK(&g->mo.chunk)};
    int n_pos = 0;
    int rc = cli_opt_parse1(&gen_cmd, opts, CLI_N(opts), argc, argv, &g->dir, 1, &n_pos);
    if (rc)
        return rc;
    if (!g->dir)
        return cli_opt_usage(&gen_cmd, "MODEL_DIR is required");
    if (!!g->prompt + !!g->prompt_file + !!g->prompt_ids != 1)
        return cli_opt_usage(&gen_cmd, "give exactly one of --prompt, --prompt-file, --prompt-ids");
    if (g->calib_path && g->decimamba)
        return cli_opt_usage(&gen_cmd, "--longmamba and --decimamba exclude each other");
    if ((g->theta > 0 || g->scale > 0) && !g->calib_path)
        return cli_opt_usage(&gen_cmd, "--theta and --scale need --longmamba CALIB");
    if (g->force_bytes && g->prompt_ids)
        return cli_opt_usage(&gen_cmd, "--bytes applies to text prompts only");
    sp->r.s = (uint64_t)g->seed;
    return 0;
}

/* ---- the prompt ------------------------------------------------------------- */

/* How the prompt became ids and how new ids are printed. */
typedef struct prompt {
    enum tok_mode mode;
    char *text; /* text prompts, echoed as they are */
    size_t text_len;
    int32_t *ids;
    size_t n_ids;
    int64_t n_sample; /* ids the sampler may pick */
    lm_tokenizer *tok;
} prompt;

/* The text of --prompt / --prompt-file: 0, or an exit status after a message. */
static int read_text(const gen_opts *g, prompt *p)
{
    if (g->prompt_file) {
        p->text = strcmp(g->prompt_file, "-") == 0 ? cli_read_stream(stdin, &p->text_len)
                                                   : cli_read_file(g->prompt_file, &p->text_len);
        if (!p->text)
            return cli_fail("cannot read prompt file %s: %s", g->prompt_file, strerror(errno));
    } else {
        p->text_len = strlen(g->prompt);
        p->text = malloc(p->text_len + 1);
        if (!p->text)
            return cli_fail("out of memory");
        memcpy(p->text, g->prompt, p->text_len + 1);
    }
    if (p->text_len == 0)
        return cli_opt_usage(&gen_cmd, "the prompt is empty");
    return 0;
}

/* Text through the tokenizer of dir: 0, or 1 after a message. */
static int encode_with_tokenizer(const char *dir, prompt *p)
{
    char err[512] = "";
    lm_status st = lm_tokenizer_load(dir, &p->tok, err, sizeof err);
    if (st != LM_OK)
        return cli_fail_status("cannot load tokenizer", st, err);
    st = cli_tokenize(p->tok, p->text, p->text_len, &p->ids, &p->n_ids, err, sizeof err);
    if (st != LM_OK)
        return cli_fail_status("cannot encode the prompt", st, err);
    if (p->n_ids == 0)
        return cli_fail("the prompt encodes to no tokens");
    int64_t tv = lm_tokenizer_vocab_size(p->tok);
    if (tv > 0 && tv < p->n_sample)
        p->n_sample = tv; /* never sample an id the tokenizer cannot decode */
    return 0;
}

/* A text prompt as ids for the model: 0, or 1 after a message. */
static int encode_text(const gen_opts *g, const lm_model_info *info, prompt *p)
{
    cli_text_kind tk =
        g->force_bytes ? CLI_TEXT_BYTES : cli_model_text_kind(g->dir, info->vocab_size);
    if (tk == CLI_TEXT_NONE)
        return cli_fail("%s has no tokenizer.json and is not byte-level: use --prompt-ids (or "
                        "--bytes)",
                        g->dir);
    if (tk == CLI_TEXT_TOKENIZER) {
        p->mode = TOK_TOKENIZER;
        return encode_with_tokenizer(g->dir, p);
    }
    p->mode = TOK_BYTES;
    if (info->vocab_size < 256)
        return cli_fail("--bytes needs a vocabulary of at least 256, the model has %lld",
                        (long long)info->vocab_size);
    p->n_sample = 256; /* rows past 255 are padding */
    cli_encoder bytes;
    cli_encoder_bytes(&bytes, info->vocab_size);
    p->ids = cli_encode_text(&bytes, p->text, p->text_len, &p->n_ids);
    return p->ids ? 0 : 1;
}

/* ---- generation ------------------------------------------------------------ */

/* Calibration or DeciMamba on s as the options ask: 0, or 1 after a message. */
static int set_mode(const gen_opts *g, lm_model *model, lm_session *s, lm_calibration **calib)
{
    char err[512] = "";
    lm_status st = LM_OK;
    if (g->calib_path) {
        st = lm_calibration_load(g->calib_path, model, calib, err, sizeof err);
        if (st != LM_OK)
            return cli_fail_status("cannot load calibration", st, err);
        lm_longmamba_params lp;
        lm_longmamba_params_init(&lp);
        if (g->theta > 0)
            lp.theta = g->theta;
        if (g->scale > 0)
            lp.threshold_scale = g->scale;
        if ((st = lm_session_set_longmamba(s, *calib, &lp)) != LM_OK)
            return cli_fail_status("cannot enable LongMamba", st, lm_session_last_error(s));
    } else if (g->decimamba) {
        lm_decimamba_params dp;
        lm_decimamba_params_init(&dp);
        if ((st = lm_session_set_decimamba(s, &dp)) != LM_OK)
            return cli_fail_status("cannot enable DeciMamba", st, lm_session_last_error(s));
    }
    return 0;
}

/* Writes token `id` as the prompt's mode prints it: 0, or 1 after a message. */
static int print_token(prompt *p, int32_t id, char **piece, size_t *piece_cap)
{
    if (p->mode == TOK_IDS) {
        printf(" %d", (int)id);
        return 0;
    }
    if (p->mode == TOK_BYTES) {
        putchar((unsigned char)id);
        return 0;
    }
    char err[512] = "";
    size_t nb = 0;
    lm_status st = lm_tokenizer_decode(p->tok, &id, 1, *piece, *piece_cap, &nb, err, sizeof err);
    if (st == LM_ERR_BUFFER_TOO_SMALL) {
        char *np = realloc(*piece, nb);
        if (!np)
            return cli_fail("out of memory");
        *piece = np;
        *piece_cap = nb;
        st = lm_tokenizer_decode(p->tok, &id, 1, *piece, *piece_cap, &nb, err, sizeof err);
    }
    if (st != LM_OK) {
        putchar('\n');
        return cli_fail_status("cannot decode a token", st, err);
    }
    fwrite(*piece, 1, nb, stdout);
    return 0;
}

/* Echo, prefill, then n_new sampled tokens: 0, or 1 after a message. */
static int stream(const gen_opts *g, lm_session *s, sampler *sp, prompt *p, float *logits, size_t V)
{
    if (p->mode == TOK_IDS) {
        for (size_t i = 0; i < p->n_ids; i++)
            printf("%s%d", i ? " " : "", (int)p->ids[i]);
        printf(" |");
    } else {
        fwrite(p->text, 1, p->text_len, stdout);
    }
    fflush(stdout);
    double t0 = cli_seconds();
    lm_status st = lm_session_prefill(s, p->ids, p->n_ids, 1, logits, V);
    double t_prefill = cli_seconds() - t0;
    if (st != LM_OK) {
        putchar('\n');
        return cli_fail_status("prefill", st, lm_session_last_error(s));
    }
    char *piece = NULL;
    size_t piece_cap = 0;
    int rc = 0;
    t0 = cli_seconds();
    for (int64_t k = 0; k < g->n_new && !rc; k++) {
        int32_t next = sample(sp, logits, p->n_sample);
        rc = print_token(p, next, &piece, &piece_cap);
        fflush(stdout);
        /* the last token's logits would go unused */
        if (!rc && k + 1 < g->n_new && (st = lm_session_decode(s, next, logits, V)) != LM_OK) {
            putchar('\n');
            rc = cli_fail_status("decode", st, lm_session_last_error(s));
        }
    }
    free(piece);
    if (rc)
        return rc;
    double t_decode = cli_seconds() - t0;
    putchar('\n');
    fflush(stdout);
    fprintf(stderr,
            "prompt %zu tokens in %.3f s (%.1f tok/s); %lld new tokens in %.3f s (%.1f tok/s)\n",
            p->n_ids, t_prefill, t_prefill > 0 ? (double)p->n_ids / t_prefill : 0.0,
            (long long)g->n_new, t_decode, t_decode > 0 ? (double)g->n_new / t_decode : 0.0);
    return 0;
}

/* The prompt as ids the model accepts: 0, or an exit status after a message. */
static int make_prompt(const gen_opts *g, const lm_model_info *info, prompt *p)
{
    p->n_sample = info->vocab_size;
    int rc = g->prompt_ids ? 0 : encode_text(g, info, p);
    if (rc)
        return rc;
    /* Before the prompt is echoed; the library would reject it at prefill. */
    for (size_t i = 0; i < p->n_ids; i++)
        if (p->ids[i] >= info->vocab_size)
            return cli_fail("prompt token %zu has id %d, outside the model's vocabulary [0, %lld)",
                            i, (int)p->ids[i], (long long)info->vocab_size);
    return 0;
}

/* --prompt-ids or the prompt text, before any model is loaded. */
static int read_prompt(const gen_opts *g, prompt *p)
{
    if (!g->prompt_ids)
        return read_text(g, p);
    p->mode = TOK_IDS;
    if (parse_id_list(g->prompt_ids, &p->ids, &p->n_ids))
        return cli_opt_usage(
            &gen_cmd, "--prompt-ids needs non-negative integers separated by spaces or commas");
    if (p->n_ids == 0)
        return cli_opt_usage(&gen_cmd, "--prompt-ids is empty");
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    gen_opts g = {{LM_BACKEND_AUTO, 0, 0, LM_WEIGHTS_AS_STORED}, NULL, NULL, NULL, NULL, NULL, 0, 0, 64, 42, 0.0, 0.0};
    sampler sp = {0.8, 0, 0.95, {42}, NULL, NULL};
    int rc = gen_parse(&g, &sp, argc, argv);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    prompt p = {TOK_IDS, NULL, 0, NULL, 0, 0, NULL};
    lm_model *model = NULL;
    lm_session *s = NULL;
    lm_calibration *calib = NULL;
    float *logits = NULL;
    lm_model_info info;
    if ((rc = read_prompt(&g, &p)) != 0)
        goto out;
    rc = 1;
    if (cli_load_model(g.dir, g.mo.backend, g.mo.threads, g.mo.weights, &model, &info) ||
        make_prompt(&g, &info, &p) || cli_create_session(model, g.mo.chunk, NULL, NULL, &s) ||
        set_mode(&g, model, s, &calib))
        goto out;
    logits = malloc((size_t)info.vocab_size * sizeof *logits);
    sp.c = malloc((size_t)p.n_sample * sizeof *sp.c);
    sp.prob = malloc((size_t)p.n_sample * sizeof *sp.prob);
    if (!logits || !sp.c || !sp.prob) {
        cli_fail("out of memory");
        goto out;
    }
    rc = stream(&g, s, &sp, &p, logits, (size_t)info.vocab_size);
out:
    free(sp.c);
    free(sp.prob);
    free(logits);
    lm_session_free(s);
    lm_calibration_free(calib);
    lm_tokenizer_free(p.tok);
    lm_model_free(model);
    free(p.ids);
    free(p.text);
    return rc;
}
