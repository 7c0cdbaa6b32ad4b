/*
 * cmd_ppl.c - `longmamba ppl`: perplexity over long windows of a text, the
 * PG-19 protocol of LONGMAMBA.md §6, for vanilla, LongMamba and DeciMamba.
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

static const cli_cmd ppl_cmd = {
    "ppl",
    "ppl MODEL_DIR (--text FILE | --tokens FILE)... --ctx W1,W2,...\n"
    "           [--mode vanilla|longmamba|decimamba[,...]] [--calib CALIB.safetensors]\n"
    "           [--windows N | N1,N2,...] [--align-end] [--score-last M] [--json]\n"
    "           [--theta X] [--scale B] [--trigger N]\n"
    "           [--deci-layers L1,L2,...] [--deci-lbase N] [--deci-beta X] [--deci-min N]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--weights stored|q8_0] [--chunk N] [--verbose]",
    "Perplexity at each context length W (LONGMAMBA.md §6, PG-19 protocol).  In\n"
    "every document (each --text or --tokens file) window i reads the W tokens\n"
    "from i*stride, stride = max((len - W - 1) / N, 10), at most N windows per\n"
    "document (default 10; a list gives N per context length).  One prefill per\n"
    "window, batch 1; its loss is the mean cross-entropy of the next-token\n"
    "predictions at its last M positions (the last M tokens of the window shifted\n"
    "by one).  ppl = exp(mean loss over all windows of all documents).\n",
    eval_mode_help, 0};

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

/* Everything one run needs, and its results. */
typedef struct ppl_run {
    eval_opts o;
    doc docs[MAX_LIST];
    int n_docs;
    ll_list ctx, wins;
    long long score_last;
    int align_end;
    /* derived */
    layout lay;
    size_t max_win, *starts;
    size_t count[MAX_LIST]; /* windows per context length, all documents */
    double *nll;            /* [mode][ctx][doc][window] */
    double secs[MAX_MODES][MAX_LIST], ppl[MAX_MODES][MAX_LIST], mean_nll[MAX_MODES][MAX_LIST];
    double total_tokens, t_all;
} ppl_run;

#define NLL(r, mi, ci, di, wi)                                                                     \
    (r)->nll[((((size_t)(mi) * (size_t)(r)->ctx.n + (size_t)(ci)) * (size_t)(r)->n_docs +          \
               (size_t)(di)) *                                                                     \
              (r)->max_win) +                                                                      \
             (size_t)(wi)]

/* --text / --tokens: one more document (in the order given). */
static int add_doc(ppl_run *r, const char *path, int is_text)
{
    if (r->n_docs >= MAX_LIST) {
        fprintf(stderr, "longmamba: ppl: at most 64 documents, '%s' is one more\n", path);
        return -1;
    }
    r->docs[r->n_docs++] = (doc){path, is_text, NULL, 0};
    return 1;
}

static int add_text(void *dest, const char *v)
{
    return add_doc(dest, v, 1);
}

static int add_tokens(void *dest, const char *v)
{
    return add_doc(dest, v, 0);
}

/* 0, or an exit status (help printed: CLI_PARSE_HELP). */
static int ppl_parse(ppl_run *r, int argc, char **argv)
{
    cli_opt shared[EVAL_N_SHARED];
    eval_shared_opts(&r->o, shared);
    const cli_opt own[] = {
        {"--text", NULL, OPT_FN, r, "a file", .fn = add_text, .arg = "FILE",
         .help = "bytes for a byte-level model, else MODEL_DIR/tokenizer.json"},
        {"--tokens", NULL, OPT_FN, r, "a file", .fn = add_tokens, .arg = "FILE",
         .help = "whitespace-separated token ids"},
        {"--ctx", NULL, OPT_FN, &r->ctx, "positive context lengths like 2048,8192",
         .fn = parse_pos_list, .arg = "LIST", .help = "context lengths W"},
        {"--windows", NULL, OPT_FN, &r->wins, "a positive count or a list of them",
         .fn = parse_count_list, .arg = "N",
         .help = "windows per document (default 10), or one per --ctx"},
        {"--align-end", NULL, OPT_FLAG, &r->align_end,
         .help = "windows of every length end where those of the longest end"},
        {"--score-last", NULL, OPT_INT, &r->score_last, "a positive integer", 1, INT64_C(1) << 32,
         .arg = "M",
         .help = "scored positions per window (default 1000 for a vocabulary <= 256, else 100)"}};
    const cli_opt *tables[] = {own, shared};
    const int n_opts[] = {CLI_N(own), EVAL_N_SHARED};
    int n_pos = 0;
    int rc = cli_opt_parse(&ppl_cmd, tables, n_opts, 2, argc, argv, &r->o.dir, 1, &n_pos);
    if (rc || (rc = eval_check_opts(&ppl_cmd, &r->o)) != 0)
        return rc;
    if (!r->n_docs)
        return cli_opt_usage(&ppl_cmd, "give at least one --text FILE or --tokens FILE");
    if (!r->ctx.n)
        return cli_opt_usage(&ppl_cmd, "--ctx W1,W2,... is required");
    if (r->wins.n > 1 && r->wins.n != r->ctx.n)
        return cli_opt_usage(&ppl_cmd, "--windows takes one count or one per --ctx length");
    if (r->align_end && r->wins.n > 1)
        return cli_opt_usage(&ppl_cmd, "--align-end takes one --windows count");
    if (r->wins.n == 0)
        r->wins.v[r->wins.n++] = 10;
    for (int k = r->wins.n; k < r->ctx.n; k++)
        r->wins.v[k] = r->wins.v[0];
    return 0;
}

/* Token ids of every document: 0, or 1 after a message. */
static int load_docs(ppl_run *r, cli_encoder *enc, int64_t V)
{
    int enc_open = 0;
    for (int d = 0; d < r->n_docs; d++) {
        doc *dc = &r->docs[d];
        if (!dc->is_text) {
            dc->ids = cli_read_token_file(dc->path, V, &dc->n);
        } else {
            if (!enc_open) {
                enc_open = 1;
                if (cli_encoder_open(enc, r->o.dir, V,
                                     "cannot read --text; pass token ids with --tokens FILE"))
                    return 1;
            }
            dc->ids = cli_encode_file(enc, dc->path, &dc->n);
        }
        if (!dc->ids)
            return 1;
    }
    return 0;
}

/* Every context length has room for the scored positions: 0, or 2. */
static int check_score_last(const ppl_run *r)
{
    for (int k = 0; k < r->ctx.n; k++)
        if (r->score_last > r->ctx.v[k]) {
            cli_fail("--score-last %lld is longer than the context %lld (pass a "
                     "smaller --score-last)",
                     r->score_last, r->ctx.v[k]);
            return CLI_EXIT_USAGE;
        }
    return 0;
}

/* Window layout, counts and buffers: 0, or 1 after a message. */
static int plan_windows(ppl_run *r)
{
    r->lay = (layout){r->align_end, 0, r->wins.v[0]};
    for (int k = 0; k < r->ctx.n; k++) {
        if ((size_t)r->wins.v[k] > r->max_win)
            r->max_win = (size_t)r->wins.v[k];
        if (r->ctx.v[k] > r->lay.wmax)
            r->lay.wmax = r->ctx.v[k];
    }
    r->starts = malloc(r->max_win * sizeof *r->starts);
    if (!r->starts)
        return cli_fail("out of memory");
    /* Every context length needs one document of W + 1 tokens. */
    for (int k = 0; k < r->ctx.n; k++) {
        r->count[k] = 0;
        for (int d = 0; d < r->n_docs; d++)
            r->count[k] += doc_windows(&r->lay, r->docs[d].n, r->ctx.v[k], r->wins.v[k], r->starts);
        if (!r->count[k])
            return cli_fail("no document has the %lld tokens that context %lld needs (W + 1)",
                            r->ctx.v[k] + 1, r->ctx.v[k]);
        r->total_tokens += (double)r->count[k] * (double)r->ctx.v[k] * r->o.n_modes;
    }
    size_t n_cells = (size_t)r->o.n_modes * (size_t)r->ctx.n * (size_t)r->n_docs * r->max_win;
    r->nll = malloc(n_cells * sizeof *r->nll);
    if (!r->nll)
        return cli_fail("out of memory");
    for (size_t k = 0; k < n_cells; k++)
        r->nll[k] = NAN;
    return 0;
}

/* Mean of the NLL cells of (mode, ctx) that ran, and how many. */
static double cell_mean(const ppl_run *r, int mi, int ci, size_t *cnt)
{
    double sum = 0.0;
    *cnt = 0;
    for (int di = 0; di < r->n_docs; di++)
        for (size_t wi = 0; wi < r->max_win; wi++)
            if (!isnan(NLL(r, mi, ci, di, wi))) {
                sum += NLL(r, mi, ci, di, wi);
                (*cnt)++;
            }
    return sum / (double)*cnt;
}

/* Every window of one (mode, context length): 0, or 1 after a message. */
static int run_ctx(ppl_run *r, eval_ctx *c, progress *prog, int mi, int ci, float *logits)
{
    const size_t W = (size_t)r->ctx.v[ci], M = (size_t)r->score_last,
                 V = (size_t)c->info.vocab_size;
    double t0 = cli_seconds();
    snprintf(prog->label, sizeof prog->label, "%s ctx %zu", mode_name(r->o.modes[mi]), W);
    for (int di = 0; di < r->n_docs; di++) {
        size_t nw = doc_windows(&r->lay, r->docs[di].n, r->ctx.v[ci], r->wins.v[ci], r->starts);
        for (size_t wi = 0; wi < nw; wi++) {
            const int32_t *w = r->docs[di].ids + r->starts[wi];
            if (run_prompt(c, prog, w, W, M, logits, M * V))
                return 1;
            /* logits of inputs W-M .. W-1 predict tokens W-M+1 .. W */
            NLL(r, mi, ci, di, wi) = mean_xent(logits, w + W - M + 1, M, V);
        }
    }
    r->secs[mi][ci] = cli_seconds() - t0;
    if (r->o.verbose) {
        size_t cnt;
        double mean = cell_mean(r, mi, ci, &cnt);
        if (prog->on)
            fputc('\n', stderr);
        fprintf(stderr, "longmamba: %s ctx %zu: %zu windows, ppl %.4f, %.1f s\n",
                mode_name(r->o.modes[mi]), W, cnt, cnt ? exp(mean) : NAN, r->secs[mi][ci]);
    }
    return 0;
}

static void ppl_json_results(FILE *f, ppl_run *r)
{
    for (int mi = 0; mi < r->o.n_modes; mi++)
        for (int ci = 0; ci < r->ctx.n; ci++) {
            fprintf(f, "%s\n  {\"mode\": \"%s\", \"ctx\": %lld, \"windows\": %zu, \"nll\": ",
                    mi || ci ? "," : "", mode_name(r->o.modes[mi]), r->ctx.v[ci], r->count[ci]);
            json_num(f, r->mean_nll[mi][ci]);
            fprintf(f, ", \"ppl\": ");
            json_num(f, r->ppl[mi][ci]);
            fprintf(f, ", \"seconds\": %.3f, \"window_nll\": [", r->secs[mi][ci]);
            int first = 1;
            for (int di = 0; di < r->n_docs; di++) {
                size_t nw =
                    doc_windows(&r->lay, r->docs[di].n, r->ctx.v[ci], r->wins.v[ci], r->starts);
                for (size_t wi = 0; wi < nw; wi++) {
                    fprintf(f, "%s{\"doc\": %d, \"start\": %zu, \"nll\": ", first ? "" : ", ", di,
                            r->starts[wi]);
                    json_num(f, NLL(r, mi, ci, di, wi));
                    fputc('}', f);
                    first = 0;
                }
            }
            fprintf(f, "]}");
        }
}

static void ppl_json(FILE *f, ppl_run *r, const eval_ctx *c)
{
    fprintf(f, "{\"command\": \"ppl\", \"model\": ");
    json_str(f, r->o.dir);
    fprintf(f, ", \"vocab_size\": %lld, \"fingerprint\": \"%016llx\", \"calibration\": ",
            (long long)c->info.vocab_size, (unsigned long long)c->info.fingerprint);
    json_str_or_null(f, c->calib ? r->o.calib_path : NULL);
    fprintf(f, ",\n \"score_last\": %lld, \"align_end\": %s, \"backend\": \"%s\", ", r->score_last,
            r->align_end ? "true" : "false", lm_backend_name(c->info.backend));
    fprintf(f, "\"threads\": %d, \"weights\": \"%s\", ", (int)c->info.n_threads,
            c->info.weights == LM_WEIGHTS_Q8_0 ? "q8_0" : "stored");
    print_mode_params(f, &r->o, &c->info);
    fprintf(f, ",\n \"documents\": [");
    for (int di = 0; di < r->n_docs; di++) {
        fprintf(f, "%s{\"path\": ", di ? ", " : "");
        json_str(f, r->docs[di].path);
        fprintf(f, ", \"tokens\": %zu}", r->docs[di].n);
    }
    fprintf(f, "],\n \"seconds\": %.3f,\n \"results\": [", r->t_all);
    ppl_json_results(f, r);
    fprintf(f, "\n ]}\n");
}

static void ppl_table(const ppl_run *r)
{
    printf("model %s, %d document(s), loss on the last %lld tokens of each window\n", r->o.dir,
           r->n_docs, r->score_last);
    printf("%9s %8s", "ctx", "windows");
    for (int mi = 0; mi < r->o.n_modes; mi++)
        printf(" %12s", mode_name(r->o.modes[mi]));
    putchar('\n');
    for (int ci = 0; ci < r->ctx.n; ci++) {
        printf("%9lld %8zu", r->ctx.v[ci], r->count[ci]);
        for (int mi = 0; mi < r->o.n_modes; mi++)
            printf(" %12.4f", r->ppl[mi][ci]);
        putchar('\n');
    }
}

/* Every mode and context length, then the report: 0, or 1 after a message. */
static int ppl_measure(ppl_run *r, eval_ctx *c, progress *prog, float *logits)
{
    prog->total = r->total_tokens;
    prog->start = cli_seconds();
    r->t_all = cli_seconds();
    for (int mi = 0; mi < r->o.n_modes; mi++) {
        if (set_mode(c, &r->o, r->o.modes[mi], (int64_t)r->score_last))
            return 1;
        for (int ci = 0; ci < r->ctx.n; ci++)
            if (run_ctx(r, c, prog, mi, ci, logits))
                return 1;
    }
    progress_end(prog);
    r->t_all = cli_seconds() - r->t_all;
    /* ppl[mode][ctx] = exp(mean over the windows of every document) */
    for (int mi = 0; mi < r->o.n_modes; mi++)
        for (int ci = 0; ci < r->ctx.n; ci++) {
            size_t cnt;
            r->mean_nll[mi][ci] = cell_mean(r, mi, ci, &cnt);
            r->ppl[mi][ci] = exp(r->mean_nll[mi][ci]);
        }
    if (r->o.json)
        ppl_json(stdout, r, c);
    else
        ppl_table(r);
    eval_report_speed("tokens", r->total_tokens, r->t_all);
    return 0;
}

int cmd_ppl(int argc, char **argv)
{
    ppl_run *r = calloc(1, sizeof *r);
    if (!r)
        return cli_fail("out of memory");
    eval_opts_init(&r->o);
    int rc = ppl_parse(r, argc, argv);
    if (rc) {
        free(r);
        return rc == CLI_PARSE_HELP ? 0 : rc;
    }
    progress prog = {isatty(2), 0, 0, 0, 0, ""};
    eval_ctx c;
    if (eval_ctx_open(&c, &r->o, &prog)) {
        free(r);
        return 1;
    }
    const int64_t V = c.info.vocab_size;
    if (r->score_last == 0)
        r->score_last = V <= 256 ? 1000 : 100;
    cli_encoder enc = {CLI_TEXT_NONE, NULL, V};
    float *logits = NULL;
    rc = check_score_last(r);
    if (!rc)
        rc = load_docs(r, &enc, V);
    if (!rc)
        rc = plan_windows(r);
    if (!rc && !(logits = malloc((size_t)r->score_last * (size_t)V * sizeof *logits)))
        rc = cli_fail("out of memory");
    if (!rc)
        rc = ppl_measure(r, &c, &prog, logits);
    free(logits);
    free(r->starts);
    free(r->nll);
    for (int d = 0; d < r->n_docs; d++)
        free(r->docs[d].ids);
    free(r);
    cli_encoder_close(&enc);
    eval_ctx_free(&c);
    return rc;
}
