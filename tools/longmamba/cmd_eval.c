/*
 * cmd_eval.c - `longmamba eval`: the RULER-style tasks of eval_tasks.c and
 * the pass key on a length x depth grid, every mode of eval_modes[] on the
 * same prompts, accuracy with 95% Wilson intervals; `--task ppl` hands the
 * rest of the command line to `longmamba ppl`.
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

static void ev_help(FILE *f);

static const cli_cmd eval_cmd = {
    "eval",
    "eval MODEL_DIR --lengths L1,L2,... [--task all | T1,T2,...] [--depths D1,D2,...]\n"
    "           [--mode M1,M2,...] [--calib CALIB.safetensors] [--filler FILE]\n"
    "           [--trials N] [--seed S] [--json] [--dump-prompts FILE]\n"
    "           [--theta X] [--scale B] [--trigger N]\n"
    "           [--deci-layers L1,L2,...] [--deci-lbase N] [--deci-beta X] [--deci-min N]\n"
    "           [--ext-scales S1,S2,...]\n"
    "           [--backend cpu|cuda|auto] [--threads N] [--weights stored|q8_0] [--chunk N] "
    "[--verbose]\n"
    "       longmamba eval MODEL_DIR --task ppl ...   (`longmamba ppl MODEL_DIR ...`)",
    "RULER-style synthetic tasks (docs/EXPERIMENT.md, \"The evaluation suite\").  A\n"
    "prompt has exactly L tokens of the model's tokenizer (bytes for a byte-level\n"
    "model): instructions, the filler text from a random offset (cyclically) with\n"
    "the needles in it, then a question that ends in an answer prefix.  cwe and\n"
    "fwe have a word list instead of filler and no depth; their list stops at the\n"
    "last entry that fits, so they have at most L tokens.  The first needle the\n"
    "answer needs starts at depth D of the filler (0 = its first token, 1 = just\n"
    "before the question); needle i of the n it needs at D + (1 - D) i / n;\n"
    "distractor needles at random depths.  The answer is greedy: the tokens of\n"
    "\" ITEM,\" for each expected item, plus 2.  Scoring rules:\n"
    "  first_word  the answer's first word is the value\n"
    "  all         every expected item is one of the answer's words\n"
    "              (recall = the fraction found)\n"
    "  passkey     as `longmamba passkey`: the answer, leading white space\n"
    "              skipped, begins with the 5 digits\n"
    "Words are runs of ASCII letters, digits and '-', compared ignoring case.\n"
    "Per cell (task, mode, length, depth): n prompts, correct, accuracy and its\n"
    "95% Wilson interval.  Prompts depend only on the seed, task, length, depth\n"
    "and trial: every mode sees the same prompts.\n",
    ev_help, 0};

#define ANS_CAP 160 /* printable answer kept for the JSON */
#define EXP_CAP 480 /* expected items, space separated */

typedef struct ev_result {
    unsigned char correct, hits;
    char answer[ANS_CAP];
} ev_result;

/* Everything one run needs, and its results. */
typedef struct ev_run {
    eval_opts o;
    const char *filler_path, *dump_path;
    int tasks[32];
    int n_tasks;
    ll_list lengths;
    dbl_list depths;
    long long trials, seed;
    /* derived */
    cli_encoder enc;
    et_source src;
    et_prompt prompt;
    int64_t n_argmax;
    float *logits;
    int32_t *gen;
    size_t gen_cap;
    size_t n_prompts;     /* tasks x lengths x depths x trials */
    char *expected;       /* [prompt][EXP_CAP] */
    unsigned char *items; /* [prompt] */
    ev_result *res;       /* [mode][prompt] */
    double total_tokens, t_all;
} ev_run;

static const et_task *task_of(const ev_run *r, int ti)
{
    return &et_tasks[r->tasks[ti]];
}

/* Depths a task has: the list, or one cell (cwe, fwe). */
static int n_depths(const ev_run *r, int ti)
{
    return et_has_depth(task_of(r, ti)) ? r->depths.n : 1;
}

static size_t prompt_of(const ev_run *r, int ti, int li, int di, long long t)
{
    size_t cell = ((size_t)ti * (size_t)r->lengths.n + (size_t)li) * (size_t)r->depths.n;
    return (cell + (size_t)di) * (size_t)r->trials + (size_t)t;
}

static et_cell cell_of(const ev_run *r, int ti, int li, int di, long long t)
{
    double d = et_has_depth(task_of(r, ti)) ? r->depths.v[di] : 0.0;
    return (et_cell){(uint64_t)r->seed, (size_t)r->lengths.v[li], d, di, t};
}

/* ---- options ------------------------------------------------------------------ */

/* "all" or task names, each once; ppl only alone (forward_ppl). */
static int parse_tasks(void *dest, const char *s)
{
    ev_run *r = dest;
    r->n_tasks = 0;
    if (strcmp(s, "all") == 0) {
        for (int k = 0; k < et_n_tasks; k++)
            r->tasks[r->n_tasks++] = k;
        return 1;
    }
    char buf[512];
    if (strlen(s) >= sizeof buf || !*s || s[strlen(s) - 1] == ',' || s[0] == ',' || strstr(s, ",,"))
        return 0;
    strcpy(buf, s);
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (strcmp(p, "ppl") == 0) {
            fprintf(stderr, "longmamba: eval: --task ppl runs alone: it takes the options of "
                            "`longmamba ppl`\n(run 'longmamba eval --help' for usage)\n");
            return -1;
        }
        const et_task *t = et_find(p);
        if (!t || r->n_tasks == (int)(sizeof r->tasks / sizeof r->tasks[0]))
            return 0;
        for (int k = 0; k < r->n_tasks; k++)
            if (r->tasks[k] == (int)(t - et_tasks))
                return 0;
        r->tasks[r->n_tasks++] = (int)(t - et_tasks);
    }
    return 1;
}

/* 0, or an exit status (help printed: CLI_PARSE_HELP). */
static int ev_parse(ev_run *r, int argc, char **argv)
{
    eval_opts_init(&r->o);
    r->trials = 5;
    r->seed = 1234;
    r->depths = (dbl_list){{0.0, 0.25, 0.5, 0.75, 1.0}, 5};
    parse_tasks(r, "all");
    cli_opt shared[EVAL_N_SHARED];
    eval_shared_opts(&r->o, shared);
    r->o.n_modes = 0; /* none given: every mode (below) */
    for (int k = 0; k < EVAL_N_SHARED; k++)
        if (strcmp(shared[k].name, "--mode") == 0)
            shared[k].help = "modes, comma separated (default: every mode whose inputs are\n"
                             "                     given: Modes, below)";
    const cli_opt own[] = {
        {"--task", NULL, OPT_FN, r, "all, or task names like niah_number,vt", .fn = parse_tasks,
         .arg = "LIST", .help = "tasks (below; default all), or ppl alone"},
        {"--lengths", NULL, OPT_FN, &r->lengths, "positive prompt lengths like 2048,8192",
         .fn = parse_pos_list, .arg = "LIST", .help = "prompt lengths in tokens"},
        {"--depths", NULL, OPT_FN, &r->depths, "fractions in [0, 1] like 0,0.5,1",
         .fn = parse_fraction_list, .arg = "LIST",
         .help = "needle depths (default 0,0.25,0.5,0.75,1)"},
        {"--filler", NULL, OPT_STR, &r->filler_path, .arg = "FILE",
         .help = "haystack text, and the words of keys and lists (default: grass)"},
        {"--trials", NULL, OPT_INT, &r->trials, "a positive integer", 1, 1000000, .arg = "N",
         .help = "prompts per cell (default 5)"},
        {"--seed", NULL, OPT_INT, &r->seed, "a non-negative integer", 0, INT64_MAX, .arg = "S",
         .help = "seed of the prompts (default 1234)"},
        {"--dump-prompts", NULL, OPT_STR, &r->dump_path, .arg = "FILE",
         .help = "write every prompt as a JSON line to FILE and stop (no generation)"}};
    const cli_opt *tables[] = {own, shared};
    const int n_opts[] = {CLI_N(own), EVAL_N_SHARED};
    int n_pos = 0;
    int rc = cli_opt_parse(&eval_cmd, tables, n_opts, 2, argc, argv, &r->o.dir, 1, &n_pos);
    const int all_modes = r->o.n_modes == 0;
    for (int k = 0; !rc && all_modes && k < n_eval_modes; k++)
        if (eval_mode_ready(&r->o, k))
            r->o.modes[r->o.n_modes++] = k;
    if (rc || (rc = eval_check_opts(&eval_cmd, &r->o)) != 0)
        return rc;
    if (!r->lengths.n)
        return cli_opt_usage(&eval_cmd, "--lengths L1,L2,... is required");
    return 0;
}

static void ev_help(FILE *f)
{
    fprintf(f, "\nTasks (scoring rule, what the prompt holds):\n");
    for (int k = 0; k < et_n_tasks; k++)
        fprintf(f, "  %-16s %-10s %s\n", et_tasks[k].name, et_scoring(&et_tasks[k]),
                et_tasks[k].about);
    fprintf(f, "  %-16s %-10s %s\n\nModes (--mode):\n", "ppl", "-",
            "perplexity: `longmamba ppl`, its options");
    for (int k = 0; k < n_eval_modes; k++) {
        unsigned needs = eval_modes[k].needs;
        if (needs)
            fprintf(f, "  %-16s needs%s%s\n", eval_modes[k].name,
                    needs & EVAL_NEEDS_CALIB ? " --calib" : "",
                    needs & EVAL_NEEDS_SCALES ? " --ext-scales" : "");
        else
            fprintf(f, "  %s\n", eval_modes[k].name);
    }
    fputc('\n', f);
    eval_mode_help(f);
}

/* `eval MODEL --task ppl ARGS...` is `ppl MODEL ARGS...`: *handled = 1. */
static int forward_ppl(int argc, char **argv, int *handled)
{
    static char ppl_name[] = "ppl";
    *handled = 0;
    for (int i = 1; i < argc; i++) {
        int joined = strcmp(argv[i], "--task=ppl") == 0;
        if (!joined &&
            !(strcmp(argv[i], "--task") == 0 && i + 1 < argc && strcmp(argv[i + 1], "ppl") == 0))
            continue;
        char **av = malloc((size_t)argc * sizeof *av);
        if (!av)
            return cli_fail("out of memory");
        int n = 0;
        av[n++] = ppl_name;
        for (int k = 1; k < argc; k++)
            if (k != i && (joined || k != i + 1))
                av[n++] = argv[k];
        *handled = 1;
        int rc = cmd_ppl(n, av);
        free(av);
        return rc;
    }
    return 0;
}

/* ---- one prompt ---------------------------------------------------------------- */

/* Items of p, space separated, into out[EXP_CAP]. */
static void join_items(const et_prompt *p, char *out)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; k < p->n_items && n < EXP_CAP; k++)
        n += (size_t)snprintf(out + n, EXP_CAP - n, "%s%s", k ? " " : "", p->items[k]);
}

/* Prompt (ti, li, di, t) in mode mi: generate, score, keep: 0, or 1. */
static int ev_trial(ev_run *r, eval_ctx *c, progress *prog, int mi, int ti, int li, int di,
                    long long t)
{
    const et_task *task = task_of(r, ti);
    const et_cell ec = cell_of(r, ti, li, di, t);
    et_prompt *p = &r->prompt;
    if (et_make(&r->src, task, &ec, p))
        return 1;
    if ((size_t)p->n_gen > r->gen_cap) {
        int32_t *g = realloc(r->gen, (size_t)p->n_gen * sizeof *g);
        if (!g)
            return cli_fail("out of memory");
        r->gen = g;
        r->gen_cap = (size_t)p->n_gen;
    }
    char text[4096];
    size_t nb = 0;
    if (run_prompt(c, prog, p->ids.v, p->ids.n, 1, r->logits, (size_t)c->info.vocab_size) ||
        greedy_tokens(c, r->logits, r->n_argmax, p->n_gen, r->gen) ||
        tokens_text(&r->enc, r->gen, (size_t)p->n_gen, text, sizeof text, &nb))
        return 1;
    size_t pi = prompt_of(r, ti, li, di, t);
    ev_result *e = &r->res[(size_t)mi * r->n_prompts + pi];
    int hits = 0;
    e->correct = (unsigned char)et_score(task, p, text, &hits);
    e->hits = (unsigned char)hits;
    for (size_t j = 0, w = 0; j < nb && w + 1 < ANS_CAP; j++) /* ASCII, for the JSON */
        e->answer[w++] = (text[j] >= 0x20 && text[j] < 0x7f) || text[j] == '\n' ? text[j] : '?';
    join_items(p, r->expected + pi * EXP_CAP);
    r->items[pi] = (unsigned char)p->n_items;
    return 0;
}

/* ---- results -------------------------------------------------------------------- */

typedef struct cell_sum {
    long long n, correct;
    double recall, lo, hi;
} cell_sum;

static cell_sum summarize(const ev_run *r, int mi, int ti, int li, int di)
{
    cell_sum s = {0};
    for (long long t = 0; t < r->trials; t++) {
        size_t pi = prompt_of(r, ti, li, di, t);
        const ev_result *e = &r->res[(size_t)mi * r->n_prompts + pi];
        s.n++;
        s.correct += e->correct;
        s.recall += r->items[pi] ? (double)e->hits / r->items[pi] : 0.0;
    }
    s.recall /= (double)s.n;
    et_wilson(s.correct, s.n, &s.lo, &s.hi);
    return s;
}

/* The per-cell settings: what is needed to make the same prompts again. */
static void json_settings(FILE *f, const ev_run *r, const eval_ctx *c, const et_task *t)
{
    static const char *const kinds[] = {"number", "word", "uuid"};
    fprintf(f, "\"settings\": {\"seed\": %lld, \"trials\": %lld, \"filler\": ", r->seed, r->trials);
    json_str_or_null(f, r->filler_path);
    fprintf(f, ", \"scoring\": \"%s\", \"values\": ", et_scoring(t));
    json_str_or_null(f, t->shape == ET_NIAH ? kinds[t->value] : NULL);
    fprintf(f,
            ", \"keys\": %d, \"values_per_key\": %d, \"queries\": %d, \"chains\": %d, "
            "\"hops\": %d, \"top\": %d, \"backend\": \"%s\", ",
            t->keys, t->values, t->queries, t->chains, t->hops, t->top,
            lm_backend_name(c->info.backend));
    print_mode_params(f, &r->o, &c->info);
    fputc('}', f);
}

/* The space-separated items as a JSON array of strings. */
static void json_items(FILE *f, const char *s)
{
    fputc('[', f);
    for (int k = 0; *s; k++) {
        char item[ET_ITEM_CAP + 1];
        size_t n = strcspn(s, " ");
        snprintf(item, sizeof item, "%.*s", (int)n, s);
        fputs(k ? ", " : "", f);
        json_str(f, item);
        s += n + (s[n] == ' ');
    }
    fputc(']', f);
}

static void json_cell(FILE *f, const ev_run *r, const eval_ctx *c, int mi, int ti, int li, int di)
{
    const et_task *t = task_of(r, ti);
    cell_sum s = summarize(r, mi, ti, li, di);
    fprintf(f, "\n  {\"task\": \"%s\", \"mode\": \"%s\", \"length\": %lld, \"depth\": ", t->name,
            mode_name(r->o.modes[mi]), r->lengths.v[li]);
    if (et_has_depth(t))
        json_num(f, r->depths.v[di]);
    else
        fputs("null", f);
    fprintf(f, ", \"n\": %lld, \"correct\": %lld, \"accuracy\": ", s.n, s.correct);
    json_num(f, (double)s.correct / (double)s.n);
    fprintf(f, ", \"wilson_lo\": ");
    json_num(f, s.lo);
    fprintf(f, ", \"wilson_hi\": ");
    json_num(f, s.hi);
    fprintf(f, ", \"recall\": ");
    json_num(f, s.recall);
    fprintf(f, ",\n   ");
    json_settings(f, r, c, t);
    fprintf(f, ",\n   \"prompts\": [");
    for (long long k = 0; k < r->trials; k++) {
        size_t pi = prompt_of(r, ti, li, di, k);
        const ev_result *e = &r->res[(size_t)mi * r->n_prompts + pi];
        fprintf(f, "%s{\"trial\": %lld, \"expected\": ", k ? ", " : "", k);
        json_items(f, r->expected + pi * EXP_CAP);
        fprintf(f, ", \"answer\": ");
        json_str(f, e->answer);
        fprintf(f, ", \"correct\": %s, \"hits\": %d}", e->correct ? "true" : "false", e->hits);
    }
    fprintf(f, "]}");
}

static void ev_json(FILE *f, const ev_run *r, const eval_ctx *c)
{
    fprintf(f, "{\"command\": \"eval\", \"model\": ");
    json_str(f, r->o.dir);
    fprintf(f, ", \"vocab_size\": %lld, \"fingerprint\": \"%016llx\", \"calibration\": ",
            (long long)c->info.vocab_size, (unsigned long long)c->info.fingerprint);
    json_str_or_null(f, c->calib ? r->o.calib_path : NULL);
    fprintf(f, ", \"backend\": \"%s\", \"threads\": %d, \"seconds\": %.3f,\n \"results\": [",
            lm_backend_name(c->info.backend), (int)c->info.n_threads, r->t_all);
    int first = 1;
    for (int ti = 0; ti < r->n_tasks; ti++)
        for (int mi = 0; mi < r->o.n_modes; mi++)
            for (int li = 0; li < r->lengths.n; li++)
                for (int di = 0; di < n_depths(r, ti); di++) {
                    fputs(first ? "" : ",", f);
                    json_cell(f, r, c, mi, ti, li, di);
                    first = 0;
                }
    fprintf(f, "\n ]}\n");
}

/* One task and mode: a row per length, a column per depth. */
static void ev_table_rows(const ev_run *r, int ti, int mi)
{
    const et_task *t = task_of(r, ti);
    const int recall = strcmp(et_scoring(t), "all") == 0;
    printf("\n%s, %s (%s): accuracy [95%% Wilson]%s by length (rows) and depth\n", t->name,
           mode_name(r->o.modes[mi]), et_scoring(t), recall ? " recall" : "");
    printf("%9s", "length");
    for (int di = 0; di < n_depths(r, ti); di++)
        if (et_has_depth(t))
            printf("  %-*.2f", recall ? 23 : 17, r->depths.v[di]);
        else
            printf("  %-*s", recall ? 23 : 17, "-");
    putchar('\n');
    for (int li = 0; li < r->lengths.n; li++) {
        printf("%9lld", r->lengths.v[li]);
        for (int di = 0; di < n_depths(r, ti); di++) {
            cell_sum s = summarize(r, mi, ti, li, di);
            printf("  %4.2f [%4.2f,%4.2f]", (double)s.correct / (double)s.n, s.lo, s.hi);
            if (recall)
                printf(" %4.2f ", s.recall);
        }
        putchar('\n');
    }
}

static void ev_table(const ev_run *r)
{
    printf("model %s, %lld prompt(s) per cell, filler %s, seed %lld\n", r->o.dir, r->trials,
           r->filler_path ? r->filler_path : "(grass)", r->seed);
    for (int ti = 0; ti < r->n_tasks; ti++)
        for (int mi = 0; mi < r->o.n_modes; mi++)
            ev_table_rows(r, ti, mi);
}

/* ---- the run -------------------------------------------------------------------- */

/* Encoder, filler, buffers; every cell's first prompt made once, so that a
 * length too short fails before the model runs: 0, or 1. */
static int ev_prepare(ev_run *r, const eval_ctx *c)
{
    const int64_t V = c->info.vocab_size;
    if (cli_encoder_open(&r->enc, r->o.dir, V, "eval needs text") ||
        et_source_load(&r->src, &r->enc, r->filler_path))
        return 1;
    r->n_argmax = answer_vocab(&r->enc, V);
    for (int ti = 0; ti < r->n_tasks; ti++)
        for (int li = 0; li < r->lengths.n; li++)
            for (int di = 0; di < n_depths(r, ti); di++) {
                et_cell ec = cell_of(r, ti, li, di, 0);
                if (et_make(&r->src, task_of(r, ti), &ec, &r->prompt))
                    return 1;
                r->total_tokens += (double)r->prompt.ids.n * (double)r->trials * r->o.n_modes;
            }
    r->n_prompts =
        (size_t)r->n_tasks * (size_t)r->lengths.n * (size_t)r->depths.n * (size_t)r->trials;
    r->logits = malloc((size_t)V * sizeof *r->logits);
    r->expected = calloc(r->n_prompts, EXP_CAP);
    r->items = calloc(r->n_prompts, 1);
    r->res = calloc((size_t)r->o.n_modes * r->n_prompts, sizeof *r->res);
    if (!r->logits || !r->expected || !r->items || !r->res)
        return cli_fail("out of memory");
    return 0;
}

/* One JSON line per prompt: ids, text, expected items, where the needed
 * needles start.  No model run. */
static int ev_dump(ev_run *r)
{
    FILE *f = fopen(r->dump_path, "w");
    if (!f)
        return cli_fail("cannot write %s", r->dump_path);
    int rc = 0;
    char *text = NULL;
    for (int ti = 0; !rc && ti < r->n_tasks; ti++)
        for (int li = 0; !rc && li < r->lengths.n; li++)
            for (int di = 0; !rc && di < n_depths(r, ti); di++)
                for (long long t = 0; !rc && t < r->trials; t++) {
                    et_cell ec = cell_of(r, ti, li, di, t);
                    et_prompt *p = &r->prompt;
                    if ((rc = et_make(&r->src, task_of(r, ti), &ec, p)) != 0)
                        break;
                    size_t nb = 0, cap = p->ids.n * 256 + 16; /* no token is longer */
                    free(text);
                    if (!(text = malloc(cap)))
                        rc = cli_fail("out of memory");
                    if (rc || (rc = tokens_text(&r->enc, p->ids.v, p->ids.n, text, cap, &nb)))
                        break;
                    fprintf(f,
                            "{\"task\": \"%s\", \"length\": %zu, \"depth\": ", task_of(r, ti)->name,
                            ec.length);
                    json_num(f, et_has_depth(task_of(r, ti)) ? ec.depth : NAN); /* null */
                    fprintf(f, ", \"trial\": %lld, \"gen_tokens\": %d, \"expected\": [", t,
                            p->n_gen);
                    for (int k = 0; k < p->n_items; k++) {
                        fputs(k ? ", " : "", f);
                        json_str(f, p->items[k]);
                    }
                    fprintf(f, "], \"targets\": [");
                    for (int k = 0; k < p->n_targets; k++)
                        fprintf(f, "%s%zu", k ? ", " : "", p->target_at[k]);
                    fprintf(f, "], \"ids\": [");
                    for (size_t k = 0; k < p->ids.n; k++)
                        fprintf(f, "%s%d", k ? "," : "", (int)p->ids.v[k]);
                    fprintf(f, "], \"text\": ");
                    json_text(f, text, nb);
                    fprintf(f, "}\n");
                }
    free(text);
    if (fclose(f) != 0 && !rc)
        rc = cli_fail("cannot write %s", r->dump_path);
    return rc;
}

/* Every mode, task, length, depth and trial, then the report: 0, or 1. */
static int ev_measure(ev_run *r, eval_ctx *c, progress *prog)
{
    prog->total = r->total_tokens;
    prog->start = r->t_all = cli_seconds();
    for (int mi = 0; mi < r->o.n_modes; mi++) {
        if (set_mode(c, &r->o, r->o.modes[mi], 1)) /* DeciMamba: as `passkey` */
            return 1;
        for (int ti = 0; ti < r->n_tasks; ti++)
            for (int li = 0; li < r->lengths.n; li++) {
                snprintf(prog->label, sizeof prog->label, "%s %s %lld", mode_name(r->o.modes[mi]),
                         task_of(r, ti)->name, r->lengths.v[li]);
                for (int di = 0; di < n_depths(r, ti); di++)
                    for (long long t = 0; t < r->trials; t++)
                        if (ev_trial(r, c, prog, mi, ti, li, di, t))
                            return 1;
                if (r->o.verbose)
                    fprintf(stderr, "%slongmamba: %s done\n", prog->on ? "\n" : "", prog->label);
            }
    }
    progress_end(prog);
    r->t_all = cli_seconds() - r->t_all;
    if (r->o.json)
        ev_json(stdout, r, c);
    else
        ev_table(r);
    eval_report_speed("prompt tokens", r->total_tokens, r->t_all);
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    int handled = 0;
    int rc = forward_ppl(argc, argv, &handled);
    if (handled)
        return rc;
    ev_run *r = calloc(1, sizeof *r);
    if (!r)
        return cli_fail("out of memory");
    rc = ev_parse(r, argc, argv);
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
    rc = ev_prepare(r, &c) || (r->dump_path ? ev_dump(r) : ev_measure(r, &c, &prog));
    et_prompt_free(&r->prompt);
    et_source_free(&r->src);
    cli_encoder_close(&r->enc);
    free(r->logits);
    free(r->gen);
    free(r->expected);
    free(r->items);
    free(r->res);
    free(r);
    eval_ctx_free(&c);
    return rc;
}
