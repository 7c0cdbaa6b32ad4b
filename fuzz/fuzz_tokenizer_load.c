/*
 * fuzz_tokenizer_load.c - tokenizer.json (lmi_tok_from_json, what
 * lm_tokenizer_load runs on a file's text); a tokenizer that loads then
 * encodes and decodes a fixed text.
 */
#include "fuzz.h"
#include "tokenizer/tok.h"

static const char sample[] = "Hello, wor\xc3\xa9ld!  <|sp|>x naïve\n\t 12345 \xff\xfe";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_tokenizer *t = NULL;
    lmi_err e = {{0}};
    lm_status st = lmi_tok_from_json((const char *)data, size, &t, &e);
    if (st != LM_OK) {
        FUZZ_CHECK(t == NULL && e.msg[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(lm_tokenizer_vocab_size(t) > 0);
    int32_t ids[512];
    size_t n = 0;
    st = lm_tokenizer_encode(t, sample, sizeof sample - 1, ids, 512, &n, NULL, 0);
    FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
    if (st == LM_OK) {
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < lm_tokenizer_vocab_size(t));
        char text[4096];
        size_t nb = 0;
        st = lm_tokenizer_decode(t, ids, n, text, sizeof text, &nb, NULL, 0);
        FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL || st == LM_ERR_OUT_OF_RANGE);
    }
    lm_tokenizer_free(t);
    return 0;
}
