/*
 * fuzz_gguf.c - the GGUF reader (lmi_gguf_parse) and what is built on
 * what it accepts: the model (lmi_model_from_gguf: metadata -> dims,
 * tensors -> weights) and the tokenizer (lmi_tok_from_gguf).  A model
 * that loads runs a short prefill on the CPU backend; a tokenizer that
 * loads encodes and decodes a fixed text.
 */
#include "fuzz.h"
#include "format/gguf.h"
#include "internal.h"
#include "model_load.h"
#include "tokenizer/tok.h"

static const char sample[] = "the whale <|endoftext|> na\xc3\xafve 12 \xff";

static void check_reader(const lmi_gguf_file *f, const uint8_t *data, size_t size)
{
    FUZZ_CHECK(f->alignment > 0 && (f->alignment & (f->alignment - 1)) == 0);
    for (size_t i = 0; i < f->n_kv; i++) {
        const lmi_gguf_kv *kv = &f->kv[i];
        FUZZ_CHECK(lmi_gguf_find_kv(f, kv->key) == kv);
        FUZZ_CHECK(kv->raw >= data && kv->raw + kv->raw_size <= data + size);
        if (kv->type == LMI_GGUF_ARRAY && kv->arr_type == LMI_GGUF_STRING) {
            const uint8_t *cur = kv->val;
            for (uint64_t k = 0; k < kv->arr_n; k++) {
                lmi_gguf_str s = lmi_gguf_next_str(&cur);
                FUZZ_CHECK((const uint8_t *)s.p >= data && (const uint8_t *)s.p + s.len <= data + size);
            }
            FUZZ_CHECK(cur <= kv->raw + kv->raw_size);
        }
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        const lmi_gguf_tensor *t = &f->tensors[i];
        FUZZ_CHECK(lmi_gguf_find_tensor(f, t->name) == t);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= LMI_GGUF_MAX_DIMS);
        FUZZ_CHECK(lmi_gguf_type_name(t->type) != NULL);
        FUZZ_CHECK(t->offset % f->alignment == 0);
        if (t->nbytes) FUZZ_CHECK(t->data >= data && t->data + t->nbytes <= data + size);
    }
    FUZZ_CHECK(lmi_gguf_find_tensor(f, "\x01 no such tensor") == NULL);
}

static void run_model(lm_model *m)
{
    /* the backend lm_model_load would attach, on one thread */
    m->backend = LM_BACKEND_CPU;
    m->vt = &lmi_cpu_backend;
    m->n_threads = 1;
    lmi_err e = {{0}};
    if (m->vt->model_init && m->vt->model_init(m, &e) != LM_OK) return;
    lm_session *s = NULL;
    if (lm_session_create(m, NULL, &s, NULL, 0) != LM_OK) return;
    int32_t ids[3] = {0, (int32_t)(m->dims.vocab - 1), (int32_t)(m->dims.vocab / 2)};
    float *logits = malloc(sizeof(float) * (size_t)m->dims.vocab);
    if (logits) {
        lm_status st = lm_session_prefill(s, ids, 3, 1, logits, (size_t)m->dims.vocab);
        FUZZ_CHECK(st == LM_OK || st == LM_ERR_NO_MEMORY || st == LM_ERR_NUMERIC);
        free(logits);
    }
    lm_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmi_gguf_file f;
    lmi_err e = {{0}};
    lm_status st = lmi_gguf_parse(data, size, &f, &e);
    if (st != LM_OK) {
        FUZZ_CHECK(e.msg[0] != '\0');
        FUZZ_CHECK(f.n_tensors == 0 && f.tensors == NULL && f.kv == NULL);
        return 0;
    }
    check_reader(&f, data, size);

    lm_model *m = NULL;
    st = lmi_model_from_gguf(&f, "fuzz.gguf", &m, &e);
    if (st == LM_OK) {
        FUZZ_CHECK(m->dims.vocab > 0 && m->n_params > 0);
        run_model(m);
        lm_model_free(m);
    } else {
        FUZZ_CHECK(m == NULL && e.msg[0] != '\0');
    }

    lm_tokenizer *t = NULL;
    st = lmi_tok_from_gguf(&f, &t, &e);
    if (st == LM_OK) {
        FUZZ_CHECK(lm_tokenizer_vocab_size(t) > 0);
        int32_t ids[256];
        size_t n = 0;
        st = lm_tokenizer_encode(t, sample, sizeof sample - 1, ids, 256, &n, NULL, 0);
        FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
        if (st == LM_OK) {
            for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < lm_tokenizer_vocab_size(t));
            char text[1024];
            size_t nb = 0;
            st = lm_tokenizer_decode(t, ids, n, text, sizeof text, &nb, NULL, 0);
            FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
        }
        lm_tokenizer_free(t);
    } else {
        FUZZ_CHECK(t == NULL && e.msg[0] != '\0');
    }
    lmi_gguf_close(&f);
    return 0;
}
