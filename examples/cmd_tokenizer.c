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
#include "cli_util.h"
#include "longmamba.h"


static const char tokenize_usage[] =
    "usage: longmamba tokenize TOKENIZER [--text TEXT | --file FILE] [--count]\n"
    "  TOKENIZER is tokenizer.json or a model directory that holds one.\n"
    "  Encodes TEXT, FILE or standard input and prints the ids on one line;\n"
    "  --count prints the number of ids instead.\n";

static const char detokenize_usage[] =
    "usage: longmamba detokenize TOKENIZER [ID ...]\n"
    "  Decodes the ids (arguments, or whitespace/comma separated on standard\n"
    "  input) and writes the bytes to standard output unchanged.\n";

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
    int count = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(tokenize_usage, stdout);
            return 0;
        } else if (strcmp(a, "--count") == 0) {
            count = 1;
        } else if (strcmp(a, "--text") == 0 || strcmp(a, "--file") == 0) {
            if (i + 1 >= argc) return cli_usage(tokenize_usage, "option %s needs a value", a);
            if (text || file) return cli_usage(tokenize_usage, "%s: give one of --text and --file", a);
            if (a[2] == 't') text = argv[++i];
            else file = argv[++i];
        } else if (strncmp(a, "--text=", 7) == 0) {
            if (text || file) return cli_usage(tokenize_usage, "%s: give one of --text and --file", "--text");
            text = a + 7;
        } else if (strncmp(a, "--file=", 7) == 0) {
            if (text || file) return cli_usage(tokenize_usage, "%s: give one of --text and --file", "--file");
            file = a + 7;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage(tokenize_usage, "unknown option '%s'", a);
        } else if (!tok_path) {
            tok_path = a;
        } else {
            return cli_usage(tokenize_usage, "unexpected argument '%s'", a);
        }
    }
    if (!tok_path) return cli_usage(tokenize_usage, "%s", "tokenize needs TOKENIZER");

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
        if (f != stdin) fclose(f);
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
    int rc = 1;
    char err[512];
    size_t n_ids = 0;
    int32_t *ids = NULL;
    lm_status st = cli_tokenize(tok, text, n, &ids, &n_ids, err, sizeof err);
    if (st == LM_ERR_NO_MEMORY && !err[0]) snprintf(err, sizeof err, "out of memory");
    if (st != LM_OK) {
        fprintf(stderr, "longmamba: %s (%s)\n", err, lm_status_str(st));
    } else {
        if (count) {
            printf("%zu\n", n_ids);
        } else {
            for (size_t i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", (int)ids[i]);
            putchar('\n');
        }
        rc = fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
        if (rc) fprintf(stderr, "longmamba: cannot write standard output\n");
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
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end != '\0' || v < INT32_MIN || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *tok_path = NULL;
    int first_id = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(detokenize_usage, stdout);
            return 0;
        }
        if (!tok_path) {
            if (a[0] == '-' && a[1] != '\0') return cli_usage(detokenize_usage, "unknown option '%s'", a);
            tok_path = a;
        } else {
            first_id = i;
            break;
        }
    }
    if (!tok_path) return cli_usage(detokenize_usage, "%s", "detokenize needs TOKENIZER");

    size_t n_ids = 0, cap = 1024;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return 1;
    char *input = NULL;
    if (first_id < argc) {
        for (int i = first_id; i < argc; i++) {
            if (n_ids == cap) {
                int32_t *ni = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!ni) {
                    free(ids);
                    return 1;
                }
                ids = ni;
            }
            if (parse_id(argv[i], strlen(argv[i]), &ids[n_ids])) {
                free(ids);
                return cli_usage(detokenize_usage, "'%s' is not a token id", argv[i]);
            }
            n_ids++;
        }
    } else {
        size_t n;
        input = cli_read_stream(stdin, &n);
        if (!input) {
            free(ids);
            fprintf(stderr, "longmamba: cannot read standard input\n");
            return 1;
        }
        for (size_t i = 0; i < n;) {
            while (i < n && (input[i] == ' ' || input[i] == '\t' || input[i] == '\n' ||
                             input[i] == '\r' || input[i] == ','))
                i++;
            size_t j = i;
            while (j < n && !(input[j] == ' ' || input[j] == '\t' || input[j] == '\n' ||
                              input[j] == '\r' || input[j] == ','))
                j++;
            if (j == i) break;
            if (n_ids == cap) {
                int32_t *ni = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!ni) {
                    free(ids);
                    free(input);
                    return 1;
                }
                ids = ni;
            }
            if (parse_id(input + i, j - i, &ids[n_ids])) {
                fprintf(stderr, "longmamba: '%.*s' on standard input is not a token id\n",
                        (int)(j - i > 40 ? 40 : j - i), input + i);
                free(ids);
                free(input);
                return 1;
            }
            n_ids++;
            i = j;
        }
    }
    lm_tokenizer *tok = open_tokenizer(tok_path);
    if (!tok) {
        free(ids);
        free(input);
        return 1;
    }
    int rc = 1;
    char err[512];
    size_t nb = 0;
    char *out = NULL;
    lm_status st = lm_tokenizer_decode(tok, ids, n_ids, NULL, 0, &nb, err, sizeof err);
    if (st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL) {
        out = malloc(nb ? nb : 1);
        st = out ? lm_tokenizer_decode(tok, ids, n_ids, out, nb, &nb, err, sizeof err) : LM_ERR_NO_MEMORY;
        if (!out) snprintf(err, sizeof err, "out of memory for %zu bytes", nb);
    }
    if (st != LM_OK) {
        fprintf(stderr, "longmamba: %s (%s)\n", err, lm_status_str(st));
    } else {
        rc = (nb == 0 || fwrite(out, 1, nb, stdout) == nb) && fflush(stdout) == 0 ? 0 : 1;
        if (rc) fprintf(stderr, "longmamba: cannot write standard output\n");
    }
    free(out);
    free(ids);
    free(input);
    lm_tokenizer_free(tok);
    return rc;
}
