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
    "  version          library and header versions, compiled backends\n"
    "  help, --help     this text\n"
    "\n"
    "Exit status: 0 ok, 1 failure, 2 usage.\n";

const char *cli_arch_name(lm_arch a)
{
    switch (a) {
    case LM_ARCH_MAMBA1: return "mamba1";
    case LM_ARCH_MAMBA2: return "mamba2";
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

static int cmd_info(int argc, char **argv)
{
    static const cli_cmd cmd = {"info", "info MODEL [--backend B] [--threads N] [--weights W]",
                                "Architecture, sizes, dtype, vocabulary, parameters, backend,\n"
                                "fingerprint and how text is read.  MODEL is a model directory\n"
                                "(config.json + safetensors) or a GGUF file.\n",
                                NULL, 0};
    model_opts mo = {LM_BACKEND_AUTO, 0, 0, LM_WEIGHTS_AS_STORED};
    const cli_opt opts[] = {CLI_OPT_BACKEND(&mo.backend), CLI_OPT_THREADS(&mo.threads),
                            CLI_OPT_WEIGHTS(&mo.weights)};
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
    lm_model_free(model);
    return 0;
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
    {"ppl", cmd_ppl},           {"passkey", cmd_passkey},
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
