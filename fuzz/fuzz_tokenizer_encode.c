/*
 * fuzz_tokenizer_encode.c - lm_tokenizer_encode / decode on arbitrary bytes
 * with the four committed test tokenizers (test/data/tokenizer/tiny-*.json:
 * NFC or not, prefix space or not, regex split or not, added tokens).  The
 * first input byte picks the tokenizer.  Checks the size protocol, that
 * ids are in range, and that decoding round-trips valid UTF-8 with tiny-b
 * (no normalizer, no prefix space, every byte in its vocabulary; tiny-c/d
 * lack some bytes and map them to <unk>).
 */
#include "fuzz.h"
#include "internal.h"

static lm_tokenizer *toks[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const names[4] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        char path[512], err[512];
        snprintf(path, sizeof path, "%s/tokenizer/tiny-%s.json", LM_TEST_DATA, names[i]);
        if (lm_tokenizer_load(path, &toks[i], err, sizeof err) != LM_OK) {
            fprintf(stderr, "fuzz_tokenizer_encode: %s\n", err);
            abort();
        }
    }
    return 0;
}

/* Valid UTF-8 by the strict definition (no surrogates, no overlongs). */
static int valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!toks[0]) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    int which = data[0] & 3;
    const lm_tokenizer *t = toks[which];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    size_t need = 0;
    lm_status st = lm_tokenizer_encode(t, text, n, NULL, 0, &need, NULL, 0);
    FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
    FUZZ_CHECK(st == LM_OK ? need == 0 : need > 0);
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (!ids) return 0;
    size_t got = 0;
    st = lm_tokenizer_encode(t, text, n, ids, need, &got, NULL, 0);
    FUZZ_CHECK(st == LM_OK && got == need);
    if (need > 1) {
        /* One short: the call must refuse and not write past cap. */
        ids[need - 1] = -7;
        size_t got2 = 0;
        st = lm_tokenizer_encode(t, text, n, ids, need - 1, &got2, NULL, 0);
        FUZZ_CHECK(st == LM_ERR_BUFFER_TOO_SMALL && got2 == need && ids[need - 1] == -7);
        st = lm_tokenizer_encode(t, text, n, ids, need, &got, NULL, 0);
        FUZZ_CHECK(st == LM_OK);
    }
    for (size_t i = 0; i < got; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < lm_tokenizer_vocab_size(t));

    size_t nb = 0;
    st = lm_tokenizer_decode(t, ids, got, NULL, 0, &nb, NULL, 0);
    FUZZ_CHECK(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
    char *out = malloc(nb + 1);
    if (out) {
        size_t nb2 = 0;
        st = lm_tokenizer_decode(t, ids, got, out, nb, &nb2, NULL, 0);
        FUZZ_CHECK(st == LM_OK && nb2 == nb);
        if (which == 1 && valid_utf8(data + 1, n))
            FUZZ_CHECK(nb == n && memcmp(out, text, n) == 0);
        free(out);
    }
    free(ids);
    return 0;
}
