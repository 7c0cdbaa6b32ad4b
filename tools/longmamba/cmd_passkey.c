/*
 * cmd_passkey.c - `longmamba passkey`: RULER-style pass-key retrieval on a
 * length x depth grid, for vanilla, LongMamba and DeciMamba.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_util.h"
#include "eval_common.h"
#include "eval_tasks.h"

static const cli_cmd passkey_cmd = {
    "passkey",
    "passkey MODEL_DIR --lengths L1,L2,... [--depths D1,D2,...]\n"
    "           [--mode vanilla|longmamba|decimamba[,...]] [--calib CALIB.safetensors]\n"
    "           [--filler FILE] [--trials N] [--seed S] [--json]\n"
    "           [--theta X] [--scale B] [--trigger N]\n"
    "           [--deci-layers L1,L2,...] [--deci-lbase N] [--deci-beta X] [--deci-min N]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--weights stored|q8_0] [--chunk N] [--verbose]",
    "Pass-key retrieval.  Each prompt has exactly L tokens: filler text with the\n"
    "needle \" The pass key is K. Remember it. K is the pass key. \" (K a random\n"
    "5-digit key) starting at depth D of the room before the end (0 = first\n"
    "token, 1 = just before the question), then \"\\nWhat is the pass key? The\n"
    "pass key is\".  Correct iff the greedy continuation, leading whitespace\n"
    "skipped, begins with the 5 digits of K.  N trials per cell; the keys and\n"
    "filler offsets depend only on the seed, length, depth and trial, so every\n"
    "mode sees the same prompts.  Prints accuracy per length x depth for each\n"
    "mode.  Text is bytes for a byte-level model, else MODEL_DIR/tokenizer.json.\n",
    eval_mode_help, 0};

/* Everything one run needs, and its results. */
typedef struct pk_run {
    eval_opts o;
    const char *filler_path;
    ll_list lengths;
    dbl_list depths;
    long long trials, seed;
    /* derived */
    cli_encoder enc;
    et_source src;    /* the prompts: eval_tasks.c's "passkey" task */
    et_prompt prompt;
    int64_t n_argmax; /* ids the answer may use */
    float *logits;
    char *answers;          /* [mode][len][depth][trial][64], printable */
    int32_t *keys;          /* [len][depth][trial] */
    unsigned char *correct; /* [mode][len][depth][trial] */
    double total_tokens, t_all;
} pk_run;

/* Index of (len, depth, trial), and of (mode, len, depth, trial). */
static size_t cell_of(const pk_run *r, int li, int di, long long t)
{
    return ((size_t)li * (size_t)r->depths.n + (size_t)di) * (size_t)r->trials + (size_t)t;
}

static size_t at_of(const pk_run *r, int mi, size_t cell)
{
    return (size_t)mi * (size_t)r->lengths.n * (size_t)r->depths.n * (size_t)r->trials + cell;
}

/* 0, or an exit status (help printed: CLI_PARSE_HELP). */
static int pk_parse(pk_run *r, int argc, char **argv)
{
    memset(r, 0, sizeof *r);
    eval_opts_init(&r->o);
    r->trials = 5;
    r->seed = 1234;
    r->depths = (dbl_list){{0.0, 0.25, 0.5, 0.75, 1.0}, 5};
    cli_opt shared[EVAL_N_SHARED];
    eval_shared_opts(&r->o, shared);
    const cli_opt own[] = {
        {"--lengths", NULL, OPT_FN, &r->lengths, "positive prompt lengths like 2048,8192",
         .fn = parse_pos_list, .arg = "LIST", .help = "prompt lengths in tokens"},
        {"--depths", NULL, OPT_FN, &r->depths, "fractions in [0, 1] like 0,0.5,1",
         .fn = parse_fraction_list, .arg = "LIST",
         .help = "needle depths (default 0,0.25,0.5,0.75,1)"},
        {"--filler", NULL, OPT_STR, &r->filler_path, .arg = "FILE",
         .help = "haystack text, used cyclically from a random offset (default: grass)"},
        {"--trials", NULL, OPT_INT, &r->trials, "a positive integer", 1, 1000000, .arg = "N",
         .help = "prompts per cell (default 5)"},
        {"--seed", NULL, OPT_INT, &r->seed, "a non-negative integer", 0, INT64_MAX, .arg = "S",
         .help = "seed of keys and offsets (default 1234)"}};
    const cli_opt *tables[] = {own, shared};
    const int n_opts[] = {CLI_N(own), EVAL_N_SHARED};
    int n_pos = 0;
    int rc = cli_opt_parse(&passkey_cmd, tables, n_opts, 2, argc, argv, &r->o.dir, 1, &n_pos);
    if (rc || (rc = eval_check_opts(&passkey_cmd, &r->o)) != 0)
        return rc;
    if (!r->lengths.n)
        return cli_opt_usage(&passkey_cmd, "--lengths L1,L2,... is required");
    return 0;
}

/* Filler, buffers and sizes: 0, or 1 after a message. */
static int pk_prepare(pk_run *r, const eval_ctx *c)
{
    const int64_t V = c->info.vocab_size;
    if (cli_encoder_open(&r->enc, r->o.dir, V, "passkey needs text") ||
        et_source_load(&r->src, &r->enc, r->filler_path))
        return 1;
    for (int li = 0; li < r->lengths.n; li++)
        r->total_tokens +=
            (double)r->lengths.v[li] * (double)r->depths.n * (double)r->trials * r->o.n_modes;
    size_t n_grid = (size_t)r->lengths.n * (size_t)r->depths.n * (size_t)r->trials;
    size_t n_cells = (size_t)r->o.n_modes * n_grid;
    r->logits = malloc((size_t)V * sizeof *r->logits);
    r->answers = calloc(n_cells, 64);
    r->keys = malloc(n_grid * sizeof *r->keys);
    r->correct = calloc(n_cells, 1);
    if (!r->logits || !r->answers || !r->keys || !r->correct)
        return cli_fail("out of memory");
    r->n_argmax = answer_vocab(&r->enc, V);
    return 0;
}

/* One trial of one cell in mode mi: 0, or 1 after a message. */
static int trial(pk_run *r, eval_ctx *c, progress *prog, int mi, int li, int di, long long t)
{
    const size_t L = (size_t)r->lengths.v[li], cell = cell_of(r, li, di, t);
    const et_cell ec = {(uint64_t)r->seed, L, r->depths.v[di], di, t};
    et_prompt *p = &r->prompt;
    int32_t gen[16];
    char text[64];
    size_t nb = 0;
    if (et_make(&r->src, et_find("passkey"), &ec, p) ||
        run_prompt(c, prog, p->ids.v, p->ids.n, 1, r->logits, (size_t)c->info.vocab_size) ||
        greedy_tokens(c, r->logits, r->n_argmax, p->n_gen, gen) ||
        tokens_text(&r->enc, gen, (size_t)p->n_gen, text, sizeof text, &nb))
        return 1;
    r->keys[cell] = atoi(p->items[0]);
    size_t at = at_of(r, mi, cell);
    int hits = 0;
    r->correct[at] = (unsigned char)et_score(et_find("passkey"), p, text, &hits);
    char *dst = r->answers + at * 64; /* printable copy for the JSON */
    for (size_t j = 0, w = 0; j < nb && w < 63; j++)
        dst[w++] = (text[j] >= 0x20 && text[j] < 0x7f) ? text[j] : '?';
    return 0;
}

/* Hits of (mode, length, depth) over the trials. */
static long long hits(const pk_run *r, int mi, int li, int di)
{
    long long hit = 0;
    for (long long t = 0; t < r->trials; t++)
        hit += r->correct[at_of(r, mi, cell_of(r, li, di, t))];
    return hit;
}

static void pk_json_mode(FILE *f, const pk_run *r, int mi)
{
    fprintf(f, "%s\n  {\"mode\": \"%s\", \"accuracy\": [", mi ? "," : "",
            mode_name(r->o.modes[mi]));
    long long hit_all = 0;
    for (int li = 0; li < r->lengths.n; li++) {
        fprintf(f, "%s[", li ? ", " : "");
        for (int di = 0; di < r->depths.n; di++) {
            long long hit = hits(r, mi, li, di);
            hit_all += hit;
            fputs(di ? ", " : "", f);
            json_num(f, (double)hit / (double)r->trials);
        }
        fputc(']', f);
    }
    fprintf(f, "], \"mean\": ");
    json_num(f, (double)hit_all / ((double)r->lengths.n * r->depths.n * (double)r->trials));
    fprintf(f, ",\n   \"prompts\": [");
    int first = 1;
    for (int li = 0; li < r->lengths.n; li++)
        for (int di = 0; di < r->depths.n; di++)
            for (long long t = 0; t < r->trials; t++) {
                size_t cell = cell_of(r, li, di, t), at = at_of(r, mi, cell);
                fprintf(f, "%s{\"length\": %lld, \"depth\": ", first ? "" : ", ", r->lengths.v[li]);
                json_num(f, r->depths.v[di]);
                fprintf(f, ", \"trial\": %lld, \"key\": \"%d\", \"answer\": ", t,
                        (int)r->keys[cell]);
                json_str(f, r->answers + at * 64);
                fprintf(f, ", \"correct\": %s}", r->correct[at] ? "true" : "false");
                first = 0;
            }
    fprintf(f, "]}");
}

static void pk_json(FILE *f, const pk_run *r, const eval_ctx *c)
{
    fprintf(f, "{\"command\": \"passkey\", \"model\": ");
    json_str(f, r->o.dir);
    fprintf(f, ", \"fingerprint\": \"%016llx\", \"calibration\": ",
            (unsigned long long)c->info.fingerprint);
    json_str_or_null(f, c->calib ? r->o.calib_path : NULL);
    fprintf(f, ", \"filler\": ");
    json_str_or_null(f, r->filler_path);
    fprintf(f, ",\n \"trials\": %lld, \"seed\": %lld, \"backend\": \"%s\", ", r->trials, r->seed,
            lm_backend_name(c->info.backend));
    print_mode_params(f, &r->o, &c->info);
    fprintf(f, ",\n \"lengths\": [");
    for (int li = 0; li < r->lengths.n; li++)
        fprintf(f, "%s%lld", li ? ", " : "", r->lengths.v[li]);
    fprintf(f, "], \"depths\": [");
    for (int di = 0; di < r->depths.n; di++) {
        fputs(di ? ", " : "", f);
        json_num(f, r->depths.v[di]);
    }
    fprintf(f, "], \"seconds\": %.3f,\n \"results\": [", r->t_all);
    for (int mi = 0; mi < r->o.n_modes; mi++)
        pk_json_mode(f, r, mi);
    fprintf(f, "\n ]}\n");
}

static void pk_table(const pk_run *r)
{
    printf("model %s, %lld trial(s) per cell, filler %s, seed %lld\n", r->o.dir, r->trials,
           r->filler_path ? r->filler_path : "(grass)", r->seed);
    for (int mi = 0; mi < r->o.n_modes; mi++) {
        printf("\n%s: accuracy by length (rows) and depth (columns)\n", mode_name(r->o.modes[mi]));
        printf("%9s", "length");
        for (int di = 0; di < r->depths.n; di++)
            printf(" %6.2f", r->depths.v[di]);
        printf(" %7s\n", "mean");
        for (int li = 0; li < r->lengths.n; li++) {
            printf("%9lld", r->lengths.v[li]);
            long long row = 0;
            for (int di = 0; di < r->depths.n; di++) {
                long long hit = hits(r, mi, li, di);
                row += hit;
                printf(" %6.2f", (double)hit / (double)r->trials);
            }
            printf(" %7.3f\n", (double)row / ((double)r->depths.n * (double)r->trials));
        }
    }
}

/* Every mode, length, depth and trial, then the report: 0, or 1. */
static int pk_measure(pk_run *r, eval_ctx *c, progress *prog)
{
    prog->total = r->total_tokens;
    prog->start = cli_seconds();
    r->t_all = cli_seconds();
    for (int mi = 0; mi < r->o.n_modes; mi++) {
        if (set_mode(c, &r->o, r->o.modes[mi], 1))
            return 1;
        for (int li = 0; li < r->lengths.n; li++) {
            snprintf(prog->label, sizeof prog->label, "%s len %lld", mode_name(r->o.modes[mi]),
                     r->lengths.v[li]);
            for (int di = 0; di < r->depths.n; di++)
                for (long long t = 0; t < r->trials; t++)
                    if (trial(r, c, prog, mi, li, di, t))
                        return 1;
        }
    }
    progress_end(prog);
    r->t_all = cli_seconds() - r->t_all;
    if (r->o.json)
        pk_json(stdout, r, c);
    else
        pk_table(r);
    eval_report_speed("prompt tokens", r->total_tokens, r->t_all);
    return 0;
}

int cmd_passkey(int argc, char **argv)
{
    pk_run r;
    int rc = pk_parse(&r, argc, argv);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    progress prog = {isatty(2), 0, 0, 0, 0, ""};
    eval_ctx c;
    if (eval_ctx_open(&c, &r.o, &prog))
        return 1;
    r.enc = (cli_encoder){CLI_TEXT_NONE, NULL, c.info.vocab_size};
    rc = pk_prepare(&r, &c) || pk_measure(&r, &c, &prog);
    et_prompt_free(&r.prompt);
    et_source_free(&r.src);
    free(r.logits);
    free(r.answers);
    free(r.keys);
    free(r.correct);
    cli_encoder_close(&r.enc);
    eval_ctx_free(&c);
    return rc;
}
