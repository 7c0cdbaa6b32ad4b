/*
 * longmamba.c - the command-line tool: the command table, `info`,
 * `version`; each other command has its own file (cli.h).
 *
 * Links only the public library.  Exit status: 0 success, 1 failure (an
 * error, or a check over tolerance), 2 usage error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

static const char usage_text[] =
    "usage: longmamba COMMAND [ARGS]   (longmamba COMMAND --help for its options)\n"
    "\n"
    "commands:\n"
    "  info MODEL       architecture, sizes, dtype, vocabulary, parameters, backend,\n"
    "                   fingerprint (MODEL: a model directory or a GGUF file)\n"
    "  check MODEL_DIR REFERENCE.safetensors\n"
    "                   all-position logits of each input_ids row against logits_f64\n"
    "  generate MODEL_DIR (--prompt TEXT | --prompt-file FILE | --prompt-ids \"1 2 3\")\n"
    "                   stream new tokens (vanilla, --longmamba CALIB or --decimamba)\n"
    "  calibrate ...    LongMamba calibration\n"
    "  channels ...     global/local channel classification\n"
    "  tokenize TOKENIZER [--text TEXT | --file FILE] [--count]\n"
    "                   text (or stdin) to token ids with a tokenizer.json\n"
    "  detokenize TOKENIZER [ID ...]\n"
    "                   ids (or stdin) back to bytes\n"
    "  ppl ...          perplexity vs context length, vanilla/LongMamba/DeciMamba\n"
    "  passkey ...      pass-key retrieval, length x depth grid\n"
    "  eval ...         RULER-style task suite (needles, variable tracking, word\n"
    "                   extraction, pass key; ppl), every mode, Wilson intervals\n"
    "  version          library and header versions, compiled backends\n"
    "  help, --help     this text\n"
    "\n"
    "Exit status: 0 ok, 1 failure, 2 usage.\n";

const char *cli_arch_name(lm_arch a)
{
    switch (a) {
    case LM_ARCH_MAMBA1: return "mamba1";
    case LM_ARCH_MAMBA2: return "mamba2";
    case LM_ARCH_FALCON_MAMBA: return "falcon_mamba";
    }
    return "unknown";
}

/* ---- info ------------------------------------------------------------------ */

static void print_info(const char *dir, const lm_model_info *info)
{
    printf("model:        %s\n", dir);
    printf("architecture: %s\n", cli_arch_name(info->arch));
    /* the stored type: the CPU backend keeps the weights in it (no fp32
     * copy); the CUDA backend uploads F32 as F32 and 16-bit as BF16 */
    printf("dtype:        %s (weights %s)\n", lm_dtype_name(info->dtype),
           info->weights == LM_WEIGHTS_Q8_0 ? "as stored but the linear layers, Q8_0"
           : info->backend == LM_BACKEND_CPU ? "kept as stored in host memory"
           : info->dtype == LM_DTYPE_F32   ? "F32 on the GPU"
                                           : "BF16 on the GPU");
    printf("d_model:      %lld\n", (long long)info->d_model);
    printf("d_inner:      %lld\n", (long long)info->d_inner);
    printf("d_state:      %lld\n", (long long)info->d_state);
    printf("d_conv:       %lld\n", (long long)info->d_conv);
    if (info->arch == LM_ARCH_MAMBA2) {
        printf("n_heads:      %lld\n", (long long)info->n_heads);
        printf("head_dim:     %lld\n", (long long)info->head_dim);
        printf("n_groups:     %lld\n", (long long)info->n_groups);
    } else {
        printf("dt_rank:      %lld\n", (long long)info->dt_rank);
    }
    printf("n_layer:      %lld\n", (long long)info->n_layer);
    printf("vocab_size:   %lld\n", (long long)info->vocab_size);
    printf("channels:     %lld per layer\n", (long long)info->n_channels);
    printf("parameters:   %lld (%.2f M)\n", (long long)info->n_params,
           (double)info->n_params / 1e6);
    printf("tied head:    %s\n", info->tied_embeddings ? "yes" : "no");
    printf("weights:      %s\n", info->weights == LM_WEIGHTS_Q8_0
                                      ? "q8_0 (linear layers quantised to 8-bit blocks at load)"
                                      : "stored");
    printf("backend:      %s\n", lm_backend_name(info->backend));
    printf("threads:      %d\n", (int)info->n_threads);
    printf("fingerprint:  %016llx\n", (unsigned long long)info->fingerprint);
    cli_text_kind tk = cli_model_text_kind(dir, info->vocab_size);
    struct stat sb;
    const bool file = stat(dir, &sb) == 0 && S_ISREG(sb.st_mode);
    printf("format:       %s\n", file ? "GGUF" : "safetensors");
    printf("tokenizer:    %s\n", tk == CLI_TEXT_TOKENIZER ? (file ? "GGUF (tokenizer.ggml.*)" : "tokenizer.json")
                                 : tk == CLI_TEXT_BYTES   ? "bytes"
                                                          : "none (use --prompt-ids)");
}

/* The weights as the model holds them: per group (the top-level tensors,
 * then each layer tensor's name summed over the layers) or per tensor. */
typedef struct wgroup {
    const char *name;
    int count;
    unsigned types;      /* bit per lm_weight_type */
    unsigned residence;  /* 1 mapped, 2 allocated */
    uint64_t bytes;
    int shared;
} wgroup;

static void print_types(char *buf, size_t cap, unsigned types, unsigned residence)
{
    buf[0] = 0;
    size_t n = 0;
    for (int t = 0; t < 32; t++)
        if (types & (1u << t))
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? "+" : "",
                                  lm_weight_type_name((lm_weight_type)t));
    if (n < cap)
        snprintf(buf + n, cap - n, " %s",
                 residence == 3 ? "mapped+allocated" : residence == 1 ? "mapped" : "allocated");
}

static int print_weights(const lm_model *model, bool per_tensor)
{
    char err[256];
    size_t n = 0;
    if (lm_model_weight_count(model, &n, err, sizeof err) != LM_OK) {
        fprintf(stderr, "longmamba: info: %s\n", err);
        return 1;
    }
    wgroup g[64];
    int ng = 0;
    uint64_t total = 0, mapped = 0;
    printf("weights in host memory (%s):\n", per_tensor ? "per tensor" : "per group, summed over layers");
    for (size_t i = 0; i < n; i++) {
        lm_weight_info w = {.struct_size = sizeof w};
        if (lm_model_weight_info(model, i, &w, err, sizeof err) != LM_OK) {
            fprintf(stderr, "longmamba: info: %s\n", err);
            return 1;
        }
        if (!w.shared) {
            total += w.bytes;
            if (w.mapped) mapped += w.bytes;
        }
        if (per_tensor) {
            char where[32], tb[64];
            if (w.layer >= 0) snprintf(where, sizeof where, "layer %lld", (long long)w.layer);
            else snprintf(where, sizeof where, "model");
            print_types(tb, sizeof tb, 1u << w.type, w.mapped ? 1u : 2u);
            if (w.shared)
                printf("  %-9s %-14s (the embedding's data)\n", where, w.name);
            else
                printf("  %-9s %-14s %-22s %6lld x %-6lld %12llu bytes\n", where, w.name, tb,
                       (long long)w.rows, (long long)w.cols, (unsigned long long)w.bytes);
            continue;
        }
        int k = 0;
        while (k < ng && strcmp(g[k].name, w.name) != 0) k++;
        if (k == ng) {
            if (ng == (int)(sizeof g / sizeof g[0])) continue; /* more names than any mixer has */
            g[ng++] = (wgroup){w.name, 0, 0, 0, 0, 0};
        }
        g[k].count++;
        g[k].types |= 1u << w.type;
        g[k].residence |= w.mapped ? 1u : 2u;
        g[k].shared |= w.shared;
        if (!w.shared) g[k].bytes += w.bytes;
    }
    for (int k = 0; k < ng; k++) {
        char tb[64];
        print_types(tb, sizeof tb, g[k].types, g[k].residence);
        if (g[k].shared)
            printf("  %-14s       tied: the embedding's data\n", g[k].name);
        else
            printf("  %-14s x%-4d %-22s %12llu bytes\n", g[k].name, g[k].count, tb,
                   (unsigned long long)g[k].bytes);
    }
    printf("weights total:  %llu bytes (%llu mapped from the file, %llu allocated)\n",
           (unsigned long long)total, (unsigned long long)mapped,
           (unsigned long long)(total - mapped));
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    static const cli_cmd cmd = {"info",
                                "info MODEL [--backend B] [--threads N] [--weights W] [--tensors]",
                                "Architecture, sizes, dtype, vocabulary, parameters, backend,\n"
                                "fingerprint, how text is read, and each group of weights: its\n"
                                "storage type (F32, F16, BF16, Q8_0), whether it is mapped from\n"
                                "the file or allocated, and its bytes.  MODEL is a model\n"
                                "directory (config.json + safetensors) or a GGUF file.\n",
                                NULL, 0};
    model_opts mo = {LM_BACKEND_AUTO, 0, 0, LM_WEIGHTS_AS_STORED};
    int tensors = 0;
    const cli_opt opts[] = {CLI_OPT_BACKEND(&mo.backend), CLI_OPT_THREADS(&mo.threads),
                            CLI_OPT_WEIGHTS(&mo.weights),
                            {"--tensors", NULL, OPT_FLAG, &tensors, NULL,
                             .help = "list every weight tensor instead of groups"}};
    const char *dir = NULL;
    int n_pos = 0;
    int rc = cli_opt_parse1(&cmd, opts, CLI_N(opts), argc, argv, &dir, 1, &n_pos);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!dir)
        return cli_opt_usage(&cmd, "MODEL is required");

    lm_model *model = NULL;
    lm_model_info info;
    if (cli_load_model(dir, mo.backend, mo.threads, mo.weights, &model, &info))
        return 1;
    print_info(dir, &info);
    rc = print_weights(model, tensors != 0);
    lm_model_free(model);
    return rc;
}

/* ---- version / main ------------------------------------------------------- */

static int cmd_version(int argc, char **argv)
{
    static const cli_cmd cmd = {"version", "version", "Library and header versions, backends.\n",
                                NULL, 0};
    int n_pos = 0;
    int rc = cli_opt_parse1(&cmd, NULL, 0, argc, argv, NULL, 0, &n_pos);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    printf("longmamba %s (library %d, header %d)\n", lm_version_string(), (int)lm_version(),
           LM_VERSION_NUMBER);
    printf("backends: cpu%s\n", lm_backend_available(LM_BACKEND_CUDA) ? ", cuda" : "");
    if (lm_version() / 100 != LM_VERSION_NUMBER / 100)
        fprintf(stderr, "longmamba: warning: built against header %d, running library %d\n",
                LM_VERSION_NUMBER, (int)lm_version());
    return 0;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"version", cmd_version},   {"--version", cmd_version}, {"info", cmd_info},
    {"check", cmd_check},       {"generate", cmd_generate}, {"calibrate", cmd_calibrate},
    {"channels", cmd_channels}, {"tokenize", cmd_tokenize}, {"detokenize", cmd_detokenize},
    {"ppl", cmd_ppl},           {"passkey", cmd_passkey},   {"eval", cmd_eval},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (strcmp(name, commands[k].name) == 0)
            return commands[k].run(argc - 1, argv + 1); /* argv[0] = the command's name */
    fprintf(stderr, "longmamba: unknown command '%s'\n(run 'longmamba --help' for usage)\n", name);
    return CLI_EXIT_USAGE;
}
