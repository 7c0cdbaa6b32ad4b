/*
 * bytes_greedy.h - what the byte-level examples (batch_decode.c,
 * state_fork.c) share: a text's bytes as a prefill, and the greedy pick.
 * Header-only so each example stays one program linking only the library.
 */
#ifndef EXAMPLES_BYTES_GREEDY_H
#define EXAMPLES_BYTES_GREEDY_H
#include <string.h>

#include <longmamba.h>

#define EX_MAX_TEXT 512

/* The id of the largest of x[0..n). */
static inline int32_t ex_argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

/* Prefills s with text's bytes as token ids (a byte-level model); the last
 * position's logits go to logits (V floats) unless it is NULL. */
static inline lm_status ex_prefill_bytes(lm_session *s, const char *text, float *logits, size_t V)
{
    int32_t ids[EX_MAX_TEXT];
    size_t n = strlen(text);
    if (n == 0 || n > EX_MAX_TEXT)
        return LM_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        ids[i] = (unsigned char)text[i];
    return lm_session_prefill(s, ids, n, logits ? 1 : 0, logits, logits ? V : 0);
}
#endif
