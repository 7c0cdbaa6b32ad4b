/*
 * batch_decode.c - several conversations stepped together: one
 * lm_session_decode_batch call per step advances every session (the CPU
 * backend reads the weights once for the whole batch).  Each prompt's
 * bytes are its token ids (a byte-level model).
 *
 *   batch_decode MODEL_DIR N_STEPS PROMPT...
 *
 * Prints each session's greedy continuation as ids, one line per prompt,
 * and checks them against one session decoded alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <longmamba.h>

#include "bytes_greedy.h"

#define MAX_SESSIONS 8
#define MAX_STEPS    64

int main(int argc, char **argv)
{
    int n = argc - 3, steps = argc > 2 ? atoi(argv[2]) : 0;
    if (n < 1 || n > MAX_SESSIONS || steps < 1 || steps > MAX_STEPS) {
        fprintf(stderr, "usage: %s MODEL_DIR N_STEPS(1-64) PROMPT... (1-8 prompts)\n", argv[0]);
        return 2;
    }
    char err[256];
    lm_model *model = NULL;
    lm_status st = lm_model_load(argv[1], NULL, &model, err, sizeof err);
    if (st != LM_OK) {
        fprintf(stderr, "load: %s: %s\n", lm_status_str(st), err);
        return 1;
    }
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(model, &info);
    const size_t V = (size_t)info.vocab_size;
    lm_session *s[MAX_SESSIONS + 1] = {NULL};
    int32_t out[MAX_SESSIONS][MAX_STEPS], tok[MAX_SESSIONS];
    float *logits = malloc((size_t)(n + 1) * V * sizeof *logits);
    for (int i = 0; i <= n && st == LM_OK; i++)
        st = logits ? lm_session_create(model, NULL, &s[i], err, sizeof err) : LM_ERR_NO_MEMORY;
    for (int i = 0; i < n && st == LM_OK; i++)
        st = ex_prefill_bytes(s[i], argv[3 + i], logits + (size_t)i * V, V);
    /* The batch: one call per step for every session. */
    for (int k = 0; k < steps && st == LM_OK; k++) {
        for (int i = 0; i < n; i++)
            out[i][k] = tok[i] = ex_argmax(logits + (size_t)i * V, V);
        st = lm_session_decode_batch(s, (size_t)n, tok, logits, (size_t)n * V);
    }
    /* The same continuation of the last prompt, decoded alone. */
    float *one = logits + (size_t)n * V;
    if (st == LM_OK)
        st = ex_prefill_bytes(s[n], argv[2 + n], one, V);
    int same = 1;
    for (int k = 0; k < steps && st == LM_OK; k++) {
        int32_t t = ex_argmax(one, V);
        same &= t == out[n - 1][k];
        st = lm_session_decode(s[n], t, one, V);
    }
    for (int i = 0; i < n && st == LM_OK; i++) {
        printf("session %d:", i);
        for (int k = 0; k < steps; k++)
            printf(" %d", (int)out[i][k]);
        putchar('\n');
    }
    if (st != LM_OK)
        fprintf(stderr, "failed: %s: %s\n", lm_status_str(st),
                s[0] ? lm_session_last_error(s[0]) : err);
    else
        printf("batched and single decode %s\n", same ? "agree" : "DISAGREE");
    for (int i = 0; i <= n; i++)
        lm_session_free(s[i]);
    free(logits);
    lm_model_free(model);
    return st == LM_OK && same ? 0 : 1;
}
