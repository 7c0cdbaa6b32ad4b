/*
 * state_fork.c - fork a conversation: prefill a shared prefix once, save
 * the session's state blob, load it into two new sessions and continue
 * each with a different text.  Each prompt's bytes are its token ids (a
 * byte-level model).
 *
 *   state_fork MODEL_DIR PREFIX CONTINUATION_A CONTINUATION_B
 *
 * Prints 8 greedy ids after each branch, and checks branch A against the
 * same text fed from scratch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <longmamba.h>

#include "bytes_greedy.h"

#define N_NEW 8

/* ex_prefill_bytes, then N_NEW greedy tokens into ids. */
static lm_status run(lm_session *s, const char *text, float *logits, size_t V, int32_t *ids)
{
    lm_status st = ex_prefill_bytes(s, text, logits, V);
    for (int k = 0; k < N_NEW && st == LM_OK; k++) {
        ids[k] = ex_argmax(logits, V);
        st = lm_session_decode(s, ids[k], logits, V);
    }
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL_DIR PREFIX CONTINUATION_A CONTINUATION_B\n", argv[0]);
        return 2;
    }
    char err[256], both[1024];
    lm_model *model = NULL;
    lm_status st = lm_model_load(argv[1], NULL, &model, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "load: %s: %s\n", lm_status_str(st), err);
        return 1;
    }
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(model, &info);
    const size_t V = (size_t)info.vocab_size;
    float *logits = malloc(V * sizeof *logits);
    lm_session *s[4] = {NULL}; /* the prefix, branch A, branch B, A from scratch */
    for (int i = 0; i < 4 && st == LM_OK; i++)
        st = logits ? lm_session_create(model, NULL, &s[i], err, sizeof err) : LM_ERR_NO_MEMORY;
    int32_t ids[3][N_NEW];
    void *blob = NULL;
    size_t size = 0, written = 0;
    if (st == LM_OK) /* the shared prefix, once */
        st = ex_prefill_bytes(s[0], argv[2], NULL, V);
    snprintf(both, sizeof both, "%s%s", argv[2], argv[3]);
    if (st == LM_OK && (st = lm_session_state_size(s[0], &size)) == LM_OK)
        st = (blob = malloc(size)) ? lm_session_state_save(s[0], blob, size, &written)
                                   : LM_ERR_NO_MEMORY;
    for (int b = 1; b <= 2 && st == LM_OK; b++)
        if ((st = lm_session_state_load(s[b], blob, written)) == LM_OK)
            st = run(s[b], argv[2 + b], logits, V, ids[b - 1]);
    if (st == LM_OK)
        st = run(s[3], both, logits, V, ids[2]);
    int same = st == LM_OK && memcmp(ids[0], ids[2], sizeof ids[0]) == 0;
    for (int b = 0; b < 2 && st == LM_OK; b++) {
        printf("branch %c:", 'A' + b);
        for (int k = 0; k < N_NEW; k++)
            printf(" %d", (int)ids[b][k]);
        putchar('\n');
    }
    if (st != LM_OK)
        fprintf(stderr, "failed: %s: %s\n", lm_status_str(st),
                s[0] ? lm_session_last_error(s[0]) : err);
    else
        printf("state blob %zu bytes; branch A %s the same text from scratch\n", written,
               same ? "matches" : "DIFFERS FROM");
    for (int i = 0; i < 4; i++)
        lm_session_free(s[i]);
    free(blob);
    free(logits);
    lm_model_free(model);
    return same ? 0 : 1;
}
