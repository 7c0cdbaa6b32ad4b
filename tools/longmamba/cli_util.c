/* cli_util.c - helpers shared by the longmamba subcommands (cli_util.h). */
#include "cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- parsing ------------------------------------------------------------------ */

int cli_parse_backend(const char *s, lm_backend *out)
{
    if (strcmp(s, "auto") == 0)
        *out = LM_BACKEND_AUTO;
    else if (strcmp(s, "cpu") == 0)
        *out = LM_BACKEND_CPU;
    else if (strcmp(s, "cuda") == 0)
        *out = LM_BACKEND_CUDA;
    else
        return 0;
    return 1;
}

int cli_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

int cli_parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

/* ---- messages ------------------------------------------------------------------ */

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("longmamba: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail_status(const char *what, lm_status st, const char *msg)
{
    if (msg && *msg)
        return cli_fail("%s: %s: %s", what, lm_status_str(st), msg);
    return cli_fail("%s: %s", what, lm_status_str(st));
}

/* ---- time, random numbers ------------------------------------------------------- */

double cli_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t cli_mix64(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* ---- files ------------------------------------------------------------------------ */

char *cli_read_stream(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap)
            break;
        char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    if (ferror(f)) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = cli_read_stream(f, len);
    int saved = errno;
    fclose(f);
    errno = saved;
    return buf;
}

int cli_has_file(const char *dir, const char *name)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return 0;
    return access(path, R_OK) == 0;
}

int cli_byte_level_config(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return 0;
    size_t n = 0;
    char *txt = cli_read_file(path, &n);
    if (!txt)
        return 0;
    /* A key search is enough: the library has validated the file as JSON
     * when the model loaded. */
    int yes = 0;
    const char *p = txt;
    while (!yes && (p = strstr(p, "\"byte_level\"")) != NULL) {
        p += 12;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')
            p++;
        yes = strncmp(p, "true", 4) == 0;
    }
    free(txt);
    return yes;
}

int32_t *cli_read_token_file(const char *path, int64_t vocab, size_t *n_out)
{
    size_t len = 0;
    char *txt = cli_read_file(path, &len);
    if (!txt) {
        cli_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1024, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        cli_fail("out of memory");
    char *p = txt;
    while (ids) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (!*p)
            break;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || (*end && !strchr(" \t\n\r\f\v", *end))) {
            cli_fail("%s: token %zu is not an integer", path, n + 1);
            free(ids);
            ids = NULL;
            break;
        }
        if (v < 0 || v >= vocab) {
            cli_fail("%s: token %zu is %lld, outside the vocabulary [0, %lld)", path, n + 1, v,
                     (long long)vocab);
            free(ids);
            ids = NULL;
            break;
        }
        if (n == cap) {
            int32_t *ni = realloc(ids, 2 * cap * sizeof *ids);
            if (!ni) {
                cli_fail("out of memory reading %s", path);
                free(ids);
                ids = NULL;
                break;
            }
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    free(txt);
    *n_out = n;
    return ids;
}

/* ---- models ---------------------------------------------------------------------- */

int cli_load_model(const char *dir, lm_backend backend, long long threads, lm_weight_format weights,
                   lm_model **model, lm_model_info *info)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = backend;
    mp.n_threads = (int32_t)threads;
    mp.weights = weights;
    char err[512] = "";
    *model = NULL;
    lm_status st = lm_model_load(dir, &mp, model, err, sizeof err);
    if (st != LM_OK)
        return cli_fail_status("cannot load model", st, err);
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    st = lm_model_get_info(*model, info);
    if (st != LM_OK) {
        lm_model_free(*model);
        *model = NULL;
        return cli_fail_status("model info", st, NULL);
    }
    return 0;
}

int cli_create_session(lm_model *model, long long chunk, lm_progress_fn progress, void *user,
                       lm_session **s)
{
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = chunk;
    sp.progress = progress;
    sp.progress_user = user;
    char err[512] = "";
    *s = NULL;
    lm_status st = lm_session_create(model, &sp, s, err, sizeof err);
    if (st != LM_OK)
        return cli_fail_status("cannot create a session", st, err);
    return 0;
}

int cli_load_calibration(const char *path, const lm_model *model, lm_calibration **cal)
{
    char err[512] = "";
    *cal = NULL;
    lm_status st = lm_calibration_load(path, model, cal, err, sizeof err);
    if (st != LM_OK)
        return cli_fail_status("cannot load calibration", st, err);
    return 0;
}

/* ---- text to token ids ----------------------------------------------------------- */

cli_text_kind cli_model_text_kind(const char *dir, int64_t vocab)
{
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISREG(sb.st_mode)) {
        /* a GGUF file: its own tokenizer when it has one */
        lm_tokenizer *tok = NULL;
        if (lm_tokenizer_load(dir, &tok, NULL, 0) == LM_OK) {
            lm_tokenizer_free(tok);
            return CLI_TEXT_TOKENIZER;
        }
        return vocab == 256 ? CLI_TEXT_BYTES : CLI_TEXT_NONE;
    }
    if (cli_has_file(dir, "tokenizer.json"))
        return CLI_TEXT_TOKENIZER;
    if (vocab == 256 || (vocab > 256 && cli_byte_level_config(dir)))
        return CLI_TEXT_BYTES;
    return CLI_TEXT_NONE;
}

lm_status cli_tokenize(const lm_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                       size_t *n, char *err, size_t err_cap)
{
    *ids = NULL;
    *n = 0;
    size_t need = 0;
    lm_status st = lm_tokenizer_encode(tok, text, len, NULL, 0, &need, err, err_cap);
    if (st != LM_OK && st != LM_ERR_BUFFER_TOO_SMALL)
        return st;
    int32_t *out = malloc((need ? need : 1) * sizeof *out);
    if (!out) {
        if (err_cap)
            err[0] = '\0';
        return LM_ERR_NO_MEMORY;
    }
    if (need) {
        st = lm_tokenizer_encode(tok, text, len, out, need, &need, err, err_cap);
        if (st != LM_OK) {
            free(out);
            return st;
        }
    }
    *ids = out;
    *n = need;
    return LM_OK;
}

void cli_encoder_bytes(cli_encoder *enc, int64_t vocab)
{
    enc->kind = CLI_TEXT_BYTES;
    enc->tok = NULL;
    enc->vocab = vocab;
}

int cli_encoder_open(cli_encoder *enc, const char *dir, int64_t vocab, const char *no_text_hint)
{
    enc->kind = cli_model_text_kind(dir, vocab);
    enc->tok = NULL;
    enc->vocab = vocab;
    if (enc->kind == CLI_TEXT_NONE)
        return cli_fail("%s has no tokenizer.json and is not a byte-level model (vocabulary "
                        "%lld): %s",
                        dir, (long long)vocab, no_text_hint);
    if (enc->kind == CLI_TEXT_TOKENIZER) {
        char err[512] = "";
        lm_status st = lm_tokenizer_load(dir, &enc->tok, err, sizeof err);
        if (st != LM_OK) {
            enc->tok = NULL;
            return cli_fail_status("cannot load tokenizer", st, err);
        }
    }
    return 0;
}

void cli_encoder_close(cli_encoder *enc)
{
    lm_tokenizer_free(enc->tok);
    enc->tok = NULL;
}

int32_t *cli_encode_text(const cli_encoder *enc, const char *text, size_t len, size_t *n_out)
{
    int32_t *ids = NULL;
    if (enc->kind == CLI_TEXT_BYTES) {
        ids = malloc((len ? len : 1) * sizeof *ids);
        if (!ids) {
            cli_fail("out of memory");
            return NULL;
        }
        for (size_t i = 0; i < len; i++)
            ids[i] = (unsigned char)text[i];
        *n_out = len;
        return ids;
    }
    char err[512] = "";
    size_t n = 0;
    lm_status st = cli_tokenize(enc->tok, text, len, &ids, &n, err, sizeof err);
    if (st != LM_OK) {
        cli_fail_status("cannot tokenize the text", st, err);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= enc->vocab) {
            cli_fail("the tokenizer produced id %d, outside the model's vocabulary (%lld)",
                     (int)ids[i], (long long)enc->vocab);
            free(ids);
            return NULL;
        }
    }
    *n_out = n;
    return ids;
}

int32_t *cli_encode_file(const cli_encoder *enc, const char *path, size_t *n_out)
{
    size_t len = 0;
    char *txt = cli_read_file(path, &len);
    if (!txt) {
        cli_fail("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    int32_t *ids = cli_encode_text(enc, txt, len, n_out);
    free(txt);
    return ids;
}

void cli_theta_help(FILE *f)
{
    fprintf(f, "Library default theta: %g (Mamba-1), %g (Mamba-2).\n",
            lm_longmamba_default_theta(LM_ARCH_MAMBA1), lm_longmamba_default_theta(LM_ARCH_MAMBA2));
}
