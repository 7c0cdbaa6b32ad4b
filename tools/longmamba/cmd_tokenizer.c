/*
 * cmd_tokenizer.c - `longmamba tokenize` and `longmamba detokenize`.
 *
 *   tokenize TOKENIZER [--text TEXT | --file FILE] [--count]
 *       encodes TEXT, FILE or standard input (bytes as they are; invalid
 *       UTF-8 becomes U+FFFD) and prints the ids on one line, separated by
 *       spaces; --count prints only how many there are
 *   detokenize TOKENIZER [ID ...]
 *       decodes the ids given, or whitespace/comma separated ids read from
 *       standard input, and writes the bytes to standard output as they are
 *       (no newline added)
 *
 * TOKENIZER is a tokenizer.json or a model directory holding one.  Exit
 * status: 0 ok, 1 failure, 2 usage.  Each command sees argv[0] = its name.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

static const cli_cmd tokenize_cmd = {
    "tokenize", "tokenize TOKENIZER [--text TEXT | --file FILE] [--count]",
    "TOKENIZER is tokenizer.json or a model directory that holds one.  Encodes\n"
    "TEXT, FILE or standard input and prints the ids on one line.\n",
    NULL, 0};

static const cli_cmd detokenize_cmd = {
    "detokenize", "detokenize TOKENIZER [ID ...]",
    "Decodes the ids (arguments, or whitespace/comma separated on standard\n"
    "input) and writes the bytes to standard output unchanged.\n",
    NULL, 1 /* every argument after TOKENIZER is an id, "-1" included */};

static lm_tokenizer *open_tokenizer(const char *path)
{
    lm_tokenizer *tok = NULL;
    char err[512];
    lm_status st = lm_tokenizer_load(path, &tok, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "longmamba: %s (%s)\n", err, lm_status_str(st));
        return NULL;
    }
    return tok;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *text = NULL, *file = NULL;
    int count = 0, n_pos = 0;
    const cli_opt opts[] = {
        {"--text", NULL, OPT_STR, &text, .arg = "TEXT", .help = "the text to encode"},
        {"--file", NULL, OPT_STR, &file, .arg = "FILE", .help = "a file to encode (- is stdin)"},
        {"--count", NULL, OPT_FLAG, &count, .help = "print the number of ids instead"}};
    int rc = cli_opt_parse1(&tokenize_cmd, opts, CLI_N(opts), argc, argv, &tok_path, 1, &n_pos);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!tok_path)
        return cli_opt_usage(&tokenize_cmd, "TOKENIZER is required");
    if (text && file)
        return cli_opt_usage(&tokenize_cmd, "give one of --text and --file");

    char *owned = NULL;
    size_t n;
    if (text) {
        n = strlen(text);
    } else {
        FILE *f = file && strcmp(file, "-") != 0 ? fopen(file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "longmamba: cannot open %s: %s\n", file, strerror(errno));
            return 1;
        }
        owned = cli_read_stream(f, &n);
        if (f != stdin)
            fclose(f);
        if (!owned) {
            fprintf(stderr, "longmamba: cannot read %s\n", file ? file : "standard input");
            return 1;
        }
        text = owned;
    }
    lm_tokenizer *tok = open_tokenizer(tok_path);
    if (!tok) {
        free(owned);
        return 1;
    }
    rc = 1;
    char err[512];
    size_t n_ids = 0;
    int32_t *ids = NULL;
    lm_status st = cli_tokenize(tok, text, n, &ids, &n_ids, err, sizeof err);
    if (st == LM_ERR_NO_MEMORY && !err[0])
        snprintf(err, sizeof err, "out of memory");
    if (st != LM_OK) {
        fprintf(stderr, "longmamba: %s (%s)\n", err, lm_status_str(st));
    } else {
        if (count) {
            printf("%zu\n", n_ids);
        } else {
            for (size_t i = 0; i < n_ids; i++)
                printf(i ? " %d" : "%d", (int)ids[i]);
            putchar('\n');
        }
        rc = fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
        if (rc)
            fprintf(stderr, "longmamba: cannot write standard output\n");
    }
    free(ids);
    free(owned);
    lm_tokenizer_free(tok);
    return rc;
}

/* Parses one id; 0 on success. */
static int parse_id(const char *s, size_t len, int32_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* Appends an id to a growing array: 0, or -1 out of memory. */
static int push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 1024;
        int32_t *ni = realloc(*ids, nc * sizeof *ni);
        if (!ni)
            return -1;
        *ids = ni;
        *cap = nc;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

/* Ids given as arguments: 0, or an exit status after a message. */
static int ids_from_args(const char *const *args, int n_args, int32_t **ids, size_t *n)
{
    size_t cap = 0;
    for (int i = 0; i < n_args; i++) {
        int32_t id;
        if (parse_id(args[i], strlen(args[i]), &id))
            return cli_opt_usage(&detokenize_cmd, "'%s' is not a token id", args[i]);
        if (push_id(ids, n, &cap, id))
            return cli_fail("out of memory");
    }
    return 0;
}

static int is_sep(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',';
}

/* Ids separated by white space or commas on standard input: 0, or 1 after a message. */
static int ids_from_stdin(int32_t **ids, size_t *n)
{
    size_t len, cap = 0;
    char *input = cli_read_stream(stdin, &len);
    if (!input)
        return cli_fail("cannot read standard input");
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        while (i < len && is_sep(input[i]))
            i++;
        size_t j = i;
        while (j < len && !is_sep(input[j]))
            j++;
        if (j == i)
            break;
        int32_t id;
        if (parse_id(input + i, j - i, &id))
            rc = cli_fail("'%.*s' on standard input is not a token id",
                          (int)(j - i > 40 ? 40 : j - i), input + i);
        else if (push_id(ids, n, &cap, id))
            rc = cli_fail("out of memory");
        i = j;
    }
    free(input);
    return rc;
}

/* Decodes ids with the tokenizer at tok_path onto standard output: 0, or 1. */
static int decode_ids(const char *tok_path, const int32_t *ids, size_t n_ids)
{
    lm_tokenizer *tok = open_tokenizer(tok_path);
    if (!tok)
        return 1;
    int rc = 1;
    char err[512];
    size_t nb = 0;
    char *out = NULL;
    lm_status st = lm_tokenizer_decode(tok, ids, n_ids, NULL, 0, &nb, err, sizeof err);
    if (st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL) {
        out = malloc(nb ? nb : 1);
        st = out ? lm_tokenizer_decode(tok, ids, n_ids, out, nb, &nb, err, sizeof err)
                 : LM_ERR_NO_MEMORY;
        if (!out)
            snprintf(err, sizeof err, "out of memory for %zu bytes", nb);
    }
    if (st != LM_OK) {
        fprintf(stderr, "longmamba: %s (%s)\n", err, lm_status_str(st));
    } else {
        rc = (nb == 0 || fwrite(out, 1, nb, stdout) == nb) && fflush(stdout) == 0 ? 0 : 1;
        if (rc)
            fprintf(stderr, "longmamba: cannot write standard output\n");
    }
    free(out);
    lm_tokenizer_free(tok);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    const char **pos = malloc((size_t)argc * sizeof *pos);
    int n_pos = 0;
    if (!pos)
        return cli_fail("out of memory");
    int rc = cli_opt_parse1(&detokenize_cmd, NULL, 0, argc, argv, pos, argc, &n_pos);
    if (!rc && n_pos == 0)
        rc = cli_opt_usage(&detokenize_cmd, "TOKENIZER is required");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!rc)
        rc = n_pos > 1 ? ids_from_args(pos + 1, n_pos - 1, &ids, &n_ids)
                       : ids_from_stdin(&ids, &n_ids);
    if (!rc)
        rc = decode_ids(pos[0], ids, n_ids);
    free(ids);
    free(pos);
    return rc == CLI_PARSE_HELP ? 0 : rc;
}
