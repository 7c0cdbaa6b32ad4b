/*
 * embed_minimal.c - the smallest complete use of the library: load a model
 * directory, prefill the bytes of a prompt, greedily decode 16 tokens and
 * print their ids.
 *
 *   embed_minimal MODEL_DIR "prompt text"
 *
 * The prompt's bytes are used as token ids, which is right for a byte-level
 * model; for a BPE model use lm_tokenizer_encode (see longmamba generate).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <longmamba.h>

static int32_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
        return 2;
    }
    if (lm_version() / 100 != LM_VERSION_NUMBER / 100)
        fprintf(stderr, "warning: header %d, library %d\n", LM_VERSION_NUMBER, (int)lm_version());

    char err[256];
    lm_model *model = NULL;
    lm_status st = lm_model_load(argv[1], NULL, &model, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "load %s: %s: %s\n", argv[1], lm_status_str(st), err);
        return 1;
    }
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(model, &info);

    size_t n = strlen(argv[2]);
    int32_t *prompt = malloc((n ? n : 1) * sizeof *prompt);
    float *logits = malloc((size_t)info.vocab_size * sizeof *logits);
    lm_session *s = NULL;
    int rc = 1;
    if (!prompt || !logits) {
        fprintf(stderr, "out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        prompt[i] = (unsigned char)argv[2][i];

    st = lm_session_create(model, NULL, &s, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "session: %s: %s\n", lm_status_str(st), err);
        goto out;
    }
    /* Only the last position's logits are needed to pick the next token. */
    st = lm_session_prefill(s, prompt, n, 1, logits, (size_t)info.vocab_size);
    if (st != LM_OK) {
        fprintf(stderr, "prefill: %s: %s\n", lm_status_str(st), lm_session_last_error(s));
        goto out;
    }
    for (int k = 0; k < 16; k++) {
        int32_t next = argmax(logits, info.vocab_size);
        printf("%s%d", k ? " " : "", (int)next);
        st = lm_session_decode(s, next, logits, (size_t)info.vocab_size);
        if (st != LM_OK) {
            fprintf(stderr, "\ndecode: %s: %s\n", lm_status_str(st), lm_session_last_error(s));
            goto out;
        }
    }
    printf("\n");
    rc = 0;
out:
    lm_session_free(s); /* before its model */
    lm_model_free(model);
    free(logits);
    free(prompt);
    return rc;
}
