/*
 * tokenizer.c - the public tokenizer API: loading tokenizer.json from a
 * file or model directory, or a GGUF file's tokenizer; encode, decode.
 * The parts are in lib/tokenizer/.
 */
#include "tokenizer/tok.h"
#include "format/gguf.h"
#include "format/mapfile.h"

#include <string.h>
#include <sys/stat.h>

/* tokenizer.json is a few MB; anything much larger is not one. */
#define LMI_TOK_MAX_FILE ((size_t)1 << 30)

/* An unreadable tokenizer.json is LM_ERR_IO, an absent one included
 * (longmamba.h). */
static lm_status read_file(const char *path, char **out, size_t *size, lmi_err *e)
{
    lmi_err fe = {{0}};
    lm_status st = lmi_read_file(path, LMI_TOK_MAX_FILE, "tokenizer.json", out, size, &fe);
    if (st != LM_OK)
        return lmi_fail(e, st == LM_ERR_MISSING ? LM_ERR_IO : st, "tokenizer: %s", fe.msg);
    return LM_OK;
}

static lm_status load_gguf(const char *path, lm_tokenizer **out, lmi_err *e)
{
    lmi_gguf_file g;
    lm_status st = lmi_gguf_open(path, &g, e);
    if (st != LM_OK) return st;
    lmi_err te = {{0}};
    st = lmi_tok_from_gguf(&g, out, &te);
    lmi_gguf_close(&g);
    if (st != LM_OK) return lmi_fail(e, st, "%s: %s", path, te.msg);
    return LM_OK;
}

lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st;
    if (out) *out = NULL;
    if (!path || !out) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_tokenizer_load: %s is NULL", path ? "out" : "path");
        goto done;
    }
    struct stat sb;
    char *file = NULL;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && lmi_gguf_probe(path)) {
        st = load_gguf(path, out, &e);
        goto done;
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        /* A model directory: its tokenizer.json. */
        size_t n = strlen(path);
        file = lmi_alloc_raw(n + sizeof "/tokenizer.json", 1);
        if (!file) {
            st = lmi_fail(&e, LM_ERR_NO_MEMORY, "tokenizer: out of memory");
            goto done;
        }
        memcpy(file, path, n);
        memcpy(file + n, "/tokenizer.json", sizeof "/tokenizer.json");
        if (stat(file, &sb) != 0) {
            st = lmi_fail(&e, LM_ERR_MISSING, "tokenizer: directory %s has no tokenizer.json", path);
            lmi_free(file);
            goto done;
        }
    }
    char *text = NULL;
    size_t size = 0;
    st = read_file(file ? file : path, &text, &size, &e);
    if (st == LM_OK) {
        st = lmi_tok_from_json(text, size, out, &e);
        lmi_free(text);
        if (st != LM_OK) {
            /* Name the file in front of the parser's message. */
            lmi_err e2;
            lmi_fail(&e2, st, "%s: %s", file ? file : path, e.msg);
            e = e2;
        }
    }
    lmi_free(file);
done:
    lmi_err_copy(&e, err, err_cap);
    return st;
}

void lm_tokenizer_free(lm_tokenizer *tok) { lmi_tok_destroy(tok); }

int64_t lm_tokenizer_vocab_size(const lm_tokenizer *tok) { return tok ? tok->n_ids : -1; }

lm_status lm_tokenizer_encode(const lm_tokenizer *tok, const char *text, size_t text_len,
                              int32_t *ids, size_t cap, size_t *n_ids, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st;
    if (!tok || !n_ids || (!text && text_len) || (!ids && cap)) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_tokenizer_encode: %s",
                      !tok ? "tokenizer is NULL" : !n_ids ? "n_ids is NULL"
                      : (!text && text_len) ? "text is NULL" : "ids is NULL with cap > 0");
    } else {
        st = lmi_tok_encode(tok, (const uint8_t *)(text ? text : ""), text_len, ids, cap, n_ids, &e);
    }
    lmi_err_copy(&e, err, err_cap);
    return st;
}

lm_status lm_tokenizer_decode(const lm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                              char *text, size_t cap, size_t *n_bytes, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    if (!tok || !n_bytes || (!ids && n_ids) || (!text && cap)) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_tokenizer_decode: %s",
                      !tok ? "tokenizer is NULL" : !n_bytes ? "n_bytes is NULL"
                      : (!ids && n_ids) ? "ids is NULL" : "text is NULL with cap > 0");
        goto done;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->defined[id]) {
            st = lmi_fail(&e, LM_ERR_OUT_OF_RANGE, "lm_tokenizer_decode: ids[%zu] = %d is %s", i,
                          (int)id, id < 0 || id >= tok->n_ids ? "outside the vocabulary" : "unassigned");
            goto done;
        }
        size_t l = tok->dec_off[id + 1] - tok->dec_off[id];
        if (total + l <= cap) memcpy(text + total, tok->dec_blob + tok->dec_off[id], l);
        total += l;
    }
    *n_bytes = total;
    if (total > cap)
        st = lmi_fail(&e, LM_ERR_BUFFER_TOO_SMALL, "lm_tokenizer_decode: %zu bytes do not fit in %zu",
                      total, cap);
done:
    lmi_err_copy(&e, err, err_cap);
    return st;
}
