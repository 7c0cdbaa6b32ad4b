/*
 * session.c - sessions: argument checks, chunked prefill, decode, state
 * snapshots and the state blob.  Backend-free: the work goes through
 * model->vt; the mode (LongMamba / DeciMamba) through lib/modes.c.
 *
 * Error contract: a prefill snapshots the state at its start and restores
 * it (and the position) on any error or abort.  A decode step does not
 * snapshot (it would double the memory traffic of a CPU step and add a
 * device round trip on CUDA): backends validate and allocate before they
 * change the state, so a single-token forward cannot fail half-way.
 * lm_session_decode_sample promises more (a NaN logit, found only after
 * the step, leaves the states as they were), so its host path copies each
 * state first: one read and write of the state per session and step,
 * small against the weights a step reads; a backend's sample_batch may
 * check before it commits instead.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Default prefill chunk: small on the CPU (cache-sized activations), large
 * on CUDA where a 512-token chunk leaves the scan with too little parallel
 * work (measured: 225k vs 666k tok/s at 16k tokens, 130m shape, H100). */
#define LMI_SESSION_DEFAULT_CHUNK 512
#define LMI_SESSION_DEFAULT_CHUNK_CUDA 16384

/* ---- state sizes -------------------------------------------------------- */

size_t lmi_state_offset(const lm_model *m, int64_t layer, lmi_state_part part)
{
    size_t n = 0;
    for (int64_t l = 0; l < layer && l < m->dims.n_layer; l++) {
        const lmi_mixer_ops *mx = lmi_mixer_find(m->layers[l].kind);
        if (mx) n += mx->state_floats(&m->dims, part, 0);
    }
    return n;
}

size_t lmi_state_floats(const lm_model *m, lmi_state_part part)
{
    return m && m->layers ? lmi_state_offset(m, m->dims.n_layer, part) : 0;
}

/* ---- create / free ------------------------------------------------------ */

void lm_session_params_init(lm_session_params *p)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = (uint32_t)sizeof *p;
    p->chunk_size = 0; /* 0 = the backend's default */
}

void lm_session_free(lm_session *s)
{
    if (!s) return;
    if (s->bk && s->model && s->model->vt && s->model->vt->session_free)
        s->model->vt->session_free(s);
    lmi_modes_free(s);
    for (int p = 0; p < LMI_STATE_PARTS; p++) lmi_free(s->backup[p]);
    lmi_free(s->sample_rows);
    lmi_free(s->sample_ids);
    lmi_free(s);
}

lm_status lm_session_create(const lm_model *model, const lm_session_params *params,
                            lm_session **out, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st;
    if (out) *out = NULL;
    if (!out) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "out is NULL");
        goto fail;
    }
    if (!model) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "model is NULL");
        goto fail;
    }
    if (!model->vt || !model->vt->session_init || !model->vt->forward) {
        st = lmi_fail(&e, LM_ERR_BACKEND_UNAVAILABLE, "model has no backend");
        goto fail;
    }
    lm_session_params p;
    lm_session_params_init(&p);
    if (params) {
        if (params->struct_size < sizeof(uint32_t)) {
            st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                          "session params: struct_size %u is too small (use lm_session_params_init)",
                          (unsigned)params->struct_size);
            goto fail;
        }
        /* Fields past the caller's struct_size keep their defaults; fields
         * a newer caller knows but we do not are ignored. */
        size_t n = params->struct_size < sizeof p ? params->struct_size : sizeof p;
        memcpy(&p, params, n);
        p.struct_size = (uint32_t)sizeof p;
    }
    if (p.chunk_size < 0) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "chunk_size %lld is negative",
                      (long long)p.chunk_size);
        goto fail;
    }
    if (p.chunk_size == 0)
        p.chunk_size = model->backend == LM_BACKEND_CUDA ? LMI_SESSION_DEFAULT_CHUNK_CUDA
                                                          : LMI_SESSION_DEFAULT_CHUNK;

    lm_session *s = lmi_alloc(1, sizeof *s);
    if (!s) {
        st = lmi_fail(&e, LM_ERR_NO_MEMORY, "no memory for the session");
        goto fail;
    }
    s->model = model;
    s->chunk_size = p.chunk_size;
    s->flags = p.flags;
    s->log_fn = p.log_fn ? p.log_fn : model->log_fn;
    s->log_user = p.log_fn ? p.log_user : model->log_user;
    s->progress = p.progress;
    s->progress_user = p.progress_user;
    s->mode = &lmi_mode_vanilla;
    bool ok = true;
    for (int k = 0; k < LMI_STATE_PARTS; k++) {
        s->backup[k] = lmi_alloc(lmi_state_floats(model, (lmi_state_part)k) + 1, sizeof(float));
        ok = ok && s->backup[k];
    }
    if (!ok) {
        lm_session_free(s);
        st = lmi_fail(&e, LM_ERR_NO_MEMORY, "no memory for the session state");
        goto fail;
    }
    st = model->vt->session_init(s, &e);
    if (st != LM_OK) {
        lm_session_free(s);
        goto fail;
    }
    *out = s;
    return LM_OK;
fail:
    lmi_err_copy(&e, err, err_cap);
    return st;
}

const char *lm_session_last_error(const lm_session *s)
{
    if (!s) return "session is NULL";
    return s->err.msg;
}

/* ---- position, hint, reset --------------------------------------------- */

lm_status lm_session_set_length_hint(lm_session *s, int64_t total_tokens)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    if (total_tokens < 0)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "length hint %lld is negative",
                        (long long)total_tokens);
    if (total_tokens > INT64_MAX - s->pos)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "length hint %lld is too large",
                        (long long)total_tokens);
    s->length_hint = total_tokens == 0 ? 0 : s->pos + total_tokens;
    return LM_OK;
}

lm_status lm_session_reset(lm_session *s)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    if (s->model->vt->session_reset) s->model->vt->session_reset(s);
    s->pos = 0;
    s->length_hint = 0;
    return LM_OK;
}

int64_t lm_session_position(const lm_session *s)
{
    return s ? s->pos : -1;
}

/* ---- prefill / decode --------------------------------------------------- */

static lm_status check_tokens(lmi_err *e, int64_t V, const int32_t *tokens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (int64_t)tokens[i] >= V)
            return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                            "token %zu has id %d, outside the vocabulary [0, %lld)", i,
                            (int)tokens[i], (long long)V);
    return LM_OK;
}

/* Puts the snapshot back after a failed or aborted prefill. */
static void restore(lm_session *s, int64_t pos)
{
    lmi_err scratch;
    /* A failure here leaves nothing better to do; the first error stands. */
    (void)s->model->vt->state_write(s, (const float *const *)s->backup, &scratch);
    s->pos = pos;
}

/* A prompt for s: present, not empty, ids in the vocabulary. */
static lm_status check_prompt(const lm_session *s, lmi_err *e, const int32_t *tokens,
                              size_t n_tokens)
{
    if (!tokens) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokens is NULL");
    if (n_tokens == 0) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "empty prompt");
    if (n_tokens > (size_t)(INT64_MAX / 4) || (int64_t)n_tokens > INT64_MAX - s->pos)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "prompt of %zu tokens is too long",
                        n_tokens);
    return check_tokens(e, s->model->dims.vocab, tokens, n_tokens);
}

/* The prompt must fit the length hint, when one is set. */
static lm_status check_hint(const lm_session *s, lmi_err *e, int64_t n)
{
    if (s->length_hint > 0 && s->pos + n > s->length_hint)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "length hint (prompt end at position %lld) is smaller than the prompt "
                        "(position %lld + %lld tokens)",
                        (long long)s->length_hint, (long long)s->pos, (long long)n);
    return LM_OK;
}

/* The forward of an n-token prompt with the mode's hooks (errors in s->err). */
static lm_status prepare_prefill(lm_session *s, int64_t n, lmi_forward *fwd)
{
    const int64_t prompt_len = s->length_hint > 0 ? s->length_hint : s->pos + n;
    memset(fwd, 0, sizeof *fwd);
    fwd->allow_tf32 = (s->flags & LM_SESSION_ALLOW_TF32) != 0;
    return lmi_modes_prepare(s, LMI_CALL_PREFILL, prompt_len, fwd);
}

/* The prompt through fwd in the session's chunks, logits of the last
 * n_logits positions; positions advance per chunk.  No snapshot: on an
 * error the caller puts the state back. */
static lm_status prefill_chunks(lm_session *s, lmi_forward *fwd, const int32_t *tokens, int64_t n,
                                size_t n_logits, float *logits, lmi_err *e)
{
    const lm_model *m = s->model;
    const size_t V = (size_t)m->dims.vocab;
    const int64_t chunk = lmi_modes_single_chunk(s) ? n : s->chunk_size;
    const int64_t out_begin = n - (int64_t)n_logits; /* first position with logits */
    for (int64_t start = 0; start < n; start += chunk) {
        const int64_t len = n - start < chunk ? n - start : chunk;
        const int64_t lo = out_begin > start ? out_begin : start;
        const int64_t n_out = start + len > lo ? start + len - lo : 0;
        fwd->tokens = tokens + start;
        fwd->n_tokens = len;
        fwd->n_out = n_out;
        fwd->logits = n_out > 0 ? logits + (size_t)(lo - out_begin) * V : NULL;
        lm_status st = m->vt->forward(s, fwd, e);
        if (st != LM_OK) return st;
        s->pos += len;
        if (s->progress && s->progress(s->progress_user, start + len, n) != 0)
            return lmi_fail(e, LM_ERR_ABORTED,
                            "prefill aborted by the progress callback after %lld of %lld tokens",
                            (long long)(start + len), (long long)n);
    }
    return LM_OK;
}

lm_status lm_session_prefill(lm_session *s, const int32_t *tokens, size_t n_tokens,
                             size_t n_logits, float *logits, size_t logits_cap)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    const lm_model *m = s->model;
    const int64_t V = m->dims.vocab;
    lm_status st = check_prompt(s, &s->err, tokens, n_tokens);
    if (st != LM_OK) return st;
    if (n_logits > n_tokens)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT,
                        "n_logits %zu is larger than the prompt (%zu tokens)", n_logits, n_tokens);
    if (n_logits > 0) {
        if (!logits)
            return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT,
                            "logits is NULL but %zu positions were asked for", n_logits);
        if (n_logits > SIZE_MAX / (size_t)V || logits_cap < n_logits * (size_t)V)
            return lmi_fail(&s->err, LM_ERR_BUFFER_TOO_SMALL,
                            "logits buffer holds %zu floats, %zu x %lld = %zu needed", logits_cap,
                            n_logits, (long long)V,
                            n_logits > SIZE_MAX / (size_t)V ? SIZE_MAX : n_logits * (size_t)V);
    }
    const int64_t n = (int64_t)n_tokens;
    st = check_hint(s, &s->err, n);
    if (st != LM_OK) return st;

    lmi_forward fwd;
    st = prepare_prefill(s, n, &fwd);
    if (st != LM_OK) return st;
    if (fwd.tokens_hook && (int64_t)n_logits > fwd.tokens_hook->keeps_last)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT,
                        "the %s mode keeps only the last %lld tokens of a prompt: n_logits %zu is "
                        "larger",
                        s->mode->name, (long long)fwd.tokens_hook->keeps_last, n_logits);

    st = m->vt->state_read(s, s->backup, &s->err);
    if (st != LM_OK) return st;
    const int64_t pos0 = s->pos;
    st = prefill_chunks(s, &fwd, tokens, n, n_logits, logits, &s->err);
    if (st != LM_OK) {
        restore(s, pos0);
        return st;
    }
    /* The hinted prompt is complete: later prefills stand on their own. */
    if (s->length_hint > 0 && s->pos >= s->length_hint) s->length_hint = 0;
    return LM_OK;
}

lm_status lm_session_decode(lm_session *s, int32_t token, float *logits, size_t logits_cap)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    const lm_model *m = s->model;
    const int64_t V = m->dims.vocab;
    lm_status st = check_tokens(&s->err, V, &token, 1);
    if (st != LM_OK) return st;
    if (logits && logits_cap < (size_t)V)
        return lmi_fail(&s->err, LM_ERR_BUFFER_TOO_SMALL,
                        "logits buffer holds %zu floats, %lld needed", logits_cap, (long long)V);
    if (s->pos == INT64_MAX)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "position overflow");
    lmi_forward fwd;
    memset(&fwd, 0, sizeof fwd);
    fwd.tokens = &token;
    fwd.n_tokens = 1;
    fwd.n_out = logits ? 1 : 0;
    fwd.logits = logits;
    fwd.allow_tf32 = (s->flags & LM_SESSION_ALLOW_TF32) != 0;
    st = lmi_modes_prepare(s, LMI_CALL_DECODE, s->pos + 1, &fwd);
    if (st != LM_OK) return st;
    st = m->vt->forward(s, &fwd, &s->err);
    if (st != LM_OK) return st;
    s->pos++;
    return LM_OK;
}

static int cmp_ptr(const void *a, const void *b)
{
    const uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

/* A session twice would step (or prefill) twice from one state: refuse it. */
static lm_status check_distinct(lmi_err *e, lm_session *const *ss, size_t n)
{
    if (n < 2) return LM_OK;
    lm_session **sorted = lmi_alloc(n, sizeof *sorted);
    if (!sorted) return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory checking the sessions");
    memcpy(sorted, ss, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_ptr);
    bool dup = false;
    for (size_t i = 1; i < n && !dup; i++) dup = sorted[i] == sorted[i - 1];
    lmi_free(sorted);
    if (dup) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "a session appears twice in the batch");
    return LM_OK;
}

/* The checks every batched step shares: sessions[0..n) non-NULL, of one
 * model, distinct, at positions that can advance, tokens in the
 * vocabulary.  n >= 1; messages go to sessions[0] (when there is one). */
static lm_status check_batch(lm_session *const *ss, size_t n, const int32_t *tokens)
{
    if (!ss[0]) return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &ss[0]->err;
    const lm_model *m = ss[0]->model;
    const int64_t V = m->dims.vocab;
    if (!tokens) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokens is NULL");
    for (size_t i = 0; i < n; i++) {
        if (!ss[i]) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "sessions[%zu] is NULL", i);
        if (ss[i]->model != m)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "sessions[%zu] belongs to another model than sessions[0]", i);
        if (tokens[i] < 0 || (int64_t)tokens[i] >= V)
            return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                            "tokens[%zu] has id %d, outside the vocabulary [0, %lld)", i,
                            (int)tokens[i], (long long)V);
        if (ss[i]->pos == INT64_MAX)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "sessions[%zu]: position overflow", i);
    }
    return check_distinct(e, ss, n);
}

/* A logits buffer of cap floats must hold n rows of V. */
static lm_status check_rows(lmi_err *e, size_t cap, size_t n, int64_t V)
{
    if (n > SIZE_MAX / (size_t)V || cap < n * (size_t)V)
        return lmi_fail(e, LM_ERR_BUFFER_TOO_SMALL,
                        "logits buffer holds %zu floats, %zu x %lld needed", cap, n, (long long)V);
    return LM_OK;
}

/* Whether some session's mode hooks its decode steps: the batched entry
 * points take no hooks, so such a batch steps one session at a time (no
 * mode hooks decode steps today). */
static lm_status decode_hooked(lm_session *const *ss, size_t n, bool *hooked)
{
    *hooked = false;
    for (size_t i = 0; i < n; i++) {
        lmi_forward probe;
        memset(&probe, 0, sizeof probe);
        lm_status st = lmi_modes_prepare(ss[i], LMI_CALL_DECODE, ss[i]->pos + 1, &probe);
        if (st != LM_OK) return st;
        *hooked = *hooked || probe.filters || probe.tokens_hook;
    }
    return LM_OK;
}

/* One decode step of n checked sessions; logits [n][vocab] host or NULL.
 * Positions are the caller's to advance. */
static lm_status step_batch(lm_session *const *ss, size_t n, const int32_t *tokens,
                            float *logits, bool hooked)
{
    const lm_model *m = ss[0]->model;
    lmi_err *e = &ss[0]->err;
    if (m->vt->forward_batch && !hooked) {
        bool tf32 = true;
        for (size_t i = 0; i < n; i++) tf32 = tf32 && (ss[i]->flags & LM_SESSION_ALLOW_TF32) != 0;
        return m->vt->forward_batch(ss, n, tokens, logits, tf32, e);
    }
    const size_t V = (size_t)m->dims.vocab;
    lm_status st = LM_OK;
    for (size_t i = 0; i < n && st == LM_OK; i++) {
        lmi_forward fwd;
        memset(&fwd, 0, sizeof fwd);
        fwd.tokens = &tokens[i];
        fwd.n_tokens = 1;
        fwd.n_out = logits ? 1 : 0;
        fwd.logits = logits ? logits + i * V : NULL;
        fwd.allow_tf32 = (ss[i]->flags & LM_SESSION_ALLOW_TF32) != 0;
        st = lmi_modes_prepare(ss[i], LMI_CALL_DECODE, ss[i]->pos + 1, &fwd);
        if (st == LM_OK) st = m->vt->forward(ss[i], &fwd, e);
    }
    return st;
}

lm_status lm_session_decode_batch(lm_session *const *ss, size_t n, const int32_t *tokens,
                                  float *logits, size_t logits_cap)
{
    if (!ss) return LM_ERR_INVALID_ARGUMENT;
    if (n == 0) return LM_OK;
    lm_status st = check_batch(ss, n, tokens);
    if (st != LM_OK) return st;
    if (logits) st = check_rows(&ss[0]->err, logits_cap, n, ss[0]->model->dims.vocab);
    bool hooked = false;
    if (st == LM_OK) st = decode_hooked(ss, n, &hooked);
    if (st == LM_OK) st = step_batch(ss, n, tokens, logits, hooked);
    if (st != LM_OK) return st;
    for (size_t i = 0; i < n; i++) ss[i]->pos++;
    return LM_OK;
}

/* ---- prefill of many prompts ---------------------------------------------- */

/* What lm_session_prefill_batch knows of sessions[i]. */
typedef struct batch_item {
    lmi_forward fwd;   /* the prompt's forward with the mode's hooks */
    int64_t n;         /* tokens */
    int64_t pos0;      /* position before the call */
    bool alone;        /* the mode acts on the prompt: lm_session_prefill's path */
} batch_item;

/* Session i's checks and forward; a message names the session. */
static lm_status plan_item(lm_session *const *ss, size_t i, const int32_t *tokens, size_t n_tokens,
                           bool want_logits, batch_item *it)
{
    lm_session *s = ss[i];
    lmi_err inner = {{0}};
    lm_status st = check_prompt(s, &inner, tokens, n_tokens);
    if (st == LM_OK) st = check_hint(s, &inner, (int64_t)n_tokens);
    if (st == LM_OK) {
        st = prepare_prefill(s, (int64_t)n_tokens, &it->fwd);
        if (st != LM_OK) inner = s->err; /* the mode's message */
    }
    if (st == LM_OK && want_logits && it->fwd.tokens_hook && it->fwd.tokens_hook->keeps_last < 1)
        st = lmi_fail(&inner, LM_ERR_INVALID_ARGUMENT,
                      "the %s mode keeps no token of the prompt for its logits", s->mode->name);
    if (st != LM_OK) return lmi_fail(&ss[0]->err, st, "sessions[%zu]: %s", i, inner.msg);
    it->n = (int64_t)n_tokens;
    it->pos0 = s->pos;
    it->alone = it->fwd.filters || it->fwd.tokens_hook || it->fwd.sink || it->fwd.delta_scale ||
                it->fwd.a_log_scale;
    return LM_OK;
}

/* Session i alone, in its own chunks. */
static lm_status run_alone(lm_session *const *ss, size_t i, const int32_t *tokens, batch_item *it,
                           float *row)
{
    lmi_err inner = {{0}};
    lm_status st = prefill_chunks(ss[i], &it->fwd, tokens, it->n, row ? 1 : 0, row, &inner);
    if (st != LM_OK) return lmi_fail(&ss[0]->err, st, "sessions[%zu]: %s", i, inner.msg);
    return LM_OK;
}

/* The sessions without hooks through vt->prefill_batch: pieces of at most
 * C tokens in all (C the largest chunk_size among them), each session's
 * prompt taken in order and split where a piece is full. */
static lm_status run_packed(lm_session *const *ss, size_t n, const int32_t *const *tokens,
                            batch_item *it, float *logits)
{
    const lm_model *m = ss[0]->model;
    const size_t V = (size_t)m->dims.vocab;
    lmi_err *e = &ss[0]->err;
    int64_t C = 1;
    size_t k = 0;
    bool tf32 = true;
    for (size_t i = 0; i < n; i++) {
        if (it[i].alone) continue;
        if (!m->vt->prefill_batch) {
            lm_status st = run_alone(ss, i, tokens[i], &it[i], logits ? logits + i * V : NULL);
            if (st != LM_OK) return st;
            continue;
        }
        C = ss[i]->chunk_size > C ? ss[i]->chunk_size : C;
        tf32 = tf32 && (ss[i]->flags & LM_SESSION_ALLOW_TF32) != 0;
        k++;
    }
    if (k == 0) return LM_OK;
    lmi_seq *seq = lmi_alloc(k, sizeof *seq);
    size_t *who = lmi_alloc(k, sizeof *who);
    lm_status st = seq && who ? LM_OK : lmi_fail(e, LM_ERR_NO_MEMORY, "no memory for the batch");
    size_t next = 0; /* the first session not finished */
    while (st == LM_OK) {
        int64_t used = 0;
        size_t ns = 0;
        for (; next < n && used < C; next++) {
            if (it[next].alone) continue;
            lm_session *s = ss[next];
            const int64_t done = s->pos - it[next].pos0, rest = it[next].n - done;
            const int64_t take = rest < C - used ? rest : C - used;
            const bool last = take == rest;
            seq[ns] = (lmi_seq){s, tokens[next] + done, take,
                                last && logits ? logits + next * V : NULL};
            who[ns++] = next;
            used += take;
            if (!last) break; /* the piece is full; the rest comes next */
        }
        if (ns == 0) break;
        st = m->vt->prefill_batch(ss[0], seq, ns, tf32, e);
        for (size_t j = 0; j < ns && st == LM_OK; j++) {
            lm_session *s = ss[who[j]];
            s->pos += seq[j].n_tokens;
            const int64_t done = s->pos - it[who[j]].pos0;
            if (s->progress && s->progress(s->progress_user, done, it[who[j]].n) != 0)
                st = lmi_fail(e, LM_ERR_ABORTED,
                              "sessions[%zu]: prefill aborted by the progress callback after %lld "
                              "of %lld tokens",
                              who[j], (long long)done, (long long)it[who[j]].n);
        }
    }
    lmi_free(seq);
    lmi_free(who);
    return st;
}

lm_status lm_session_prefill_batch(lm_session *const *ss, size_t n, const int32_t *const *tokens,
                                   const size_t *n_tokens, float *logits, size_t logits_cap)
{
    if (!ss) return LM_ERR_INVALID_ARGUMENT;
    if (n == 0) return LM_OK;
    if (!ss[0]) return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &ss[0]->err;
    const lm_model *m = ss[0]->model;
    for (size_t i = 0; i < n; i++) {
        if (!ss[i]) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "sessions[%zu] is NULL", i);
        if (ss[i]->model != m)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "sessions[%zu] belongs to another model than sessions[0]", i);
    }
    if (!tokens) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokens is NULL");
    if (!n_tokens) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "n_tokens is NULL");
    lm_status st = check_distinct(e, ss, n);
    if (st == LM_OK && logits) st = check_rows(e, logits_cap, n, m->dims.vocab);
    if (st != LM_OK) return st;
    batch_item *it = lmi_alloc(n, sizeof *it);
    if (!it) return lmi_fail(e, LM_ERR_NO_MEMORY, "no memory for the batch");
    for (size_t i = 0; i < n && st == LM_OK; i++)
        st = plan_item(ss, i, tokens[i], n_tokens[i], logits != NULL, &it[i]);
    /* Snapshots first: any later error puts every session back. */
    for (size_t i = 0; i < n && st == LM_OK; i++)
        st = m->vt->state_read(ss[i], ss[i]->backup, e);
    const size_t V = (size_t)m->dims.vocab;
    bool ran = false;
    for (size_t i = 0; i < n && st == LM_OK; i++) {
        if (!it[i].alone) continue;
        ran = true;
        st = run_alone(ss, i, tokens[i], &it[i], logits ? logits + i * V : NULL);
    }
    if (st == LM_OK) {
        ran = true;
        st = run_packed(ss, n, tokens, it, logits);
    }
    if (st != LM_OK && ran)
        for (size_t i = 0; i < n; i++) restore(ss[i], it[i].pos0);
    /* A hinted prompt that is complete: later prefills stand on their own. */
    for (size_t i = 0; i < n && st == LM_OK; i++)
        if (ss[i]->length_hint > 0 && ss[i]->pos >= ss[i]->length_hint) ss[i]->length_hint = 0;
    lmi_free(it);
    return st;
}

/* ---- decode with sampling ------------------------------------------------ */

static bool wants_row(const lm_session *s)
{
    return (s->sampler.flags & LM_SAMPLE_RETURN_LOGITS) != 0;
}

/* logits is needed, with n rows, when some session returns its row. */
static lm_status check_sample_logits(lm_session *const *ss, size_t n, const float *logits,
                                     size_t cap)
{
    size_t first = 0;
    while (first < n && !wants_row(ss[first])) first++;
    if (first == n) return LM_OK;
    lmi_err *e = &ss[0]->err;
    if (!logits)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "logits is NULL but sessions[%zu] returns its row "
                        "(LM_SAMPLE_RETURN_LOGITS)",
                        first);
    return check_rows(e, cap, n, ss[0]->model->dims.vocab);
}

/* Host rows for n sessions and the sampler's scratch in s's buffers
 * (grown, never shrunk: a generation loop allocates once). */
static lm_status sample_reserve(lm_session *s, size_t n)
{
    const size_t V = (size_t)s->model->dims.vocab;
    if (!s->sample_ids) s->sample_ids = lmi_alloc_raw(V, sizeof(int64_t));
    if (!s->sample_ids) return lmi_fail(&s->err, LM_ERR_NO_MEMORY, "no memory for the sampler");
    if (n <= s->sample_cap) return LM_OK;
    float *rows = n <= SIZE_MAX / V ? lmi_alloc_raw(n * V, sizeof(float)) : NULL;
    if (!rows)
        return lmi_fail(&s->err, LM_ERR_NO_MEMORY, "no memory for %zu rows of logits", n);
    lmi_free(s->sample_rows);
    s->sample_rows = rows;
    s->sample_cap = n;
    return LM_OK;
}

/* Samples row i for sessions[i]; a failure names the session. */
static lm_status sample_one(lm_session *const *ss, size_t i, const float *row, int32_t *out)
{
    lmi_err inner;
    lm_status st = lmi_sample_row(row, ss[0]->model->dims.vocab, &ss[i]->sampler,
                                  ss[i]->pos + 1, out, ss[0]->sample_ids, &inner);
    if (st != LM_OK) return lmi_fail(&ss[0]->err, st, "sessions[%zu]: %s", i, inner.msg);
    return LM_OK;
}

/* The host path: each state is copied to its session's backup first (a
 * non-finite logit shows only after the step has moved the state), the
 * step runs into sessions[0]'s rows, the rows are sampled here; on any
 * failure every state is put back. */
static lm_status host_sample(lm_session *const *ss, size_t n, const int32_t *tokens,
                             int32_t *next, float *logits, bool hooked)
{
    lm_session *s0 = ss[0];
    const lm_model *m = s0->model;
    const size_t V = (size_t)m->dims.vocab;
    lm_status st = sample_reserve(s0, n);
    for (size_t i = 0; i < n && st == LM_OK; i++)
        st = m->vt->state_read(ss[i], ss[i]->backup, &s0->err);
    if (st != LM_OK) return st;
    st = step_batch(ss, n, tokens, s0->sample_rows, hooked);
    for (size_t i = 0; i < n && st == LM_OK; i++)
        st = sample_one(ss, i, s0->sample_rows + i * V, &next[i]);
    if (st != LM_OK) {
        for (size_t i = 0; i < n; i++) restore(ss[i], ss[i]->pos);
        return st;
    }
    for (size_t i = 0; i < n; i++)
        if (wants_row(ss[i])) memcpy(logits + i * V, s0->sample_rows + i * V, V * sizeof(float));
    return LM_OK;
}

/* A backend that samples where its logits are gets the rows to return. */
static lm_status backend_sample(lm_session *const *ss, size_t n, const int32_t *tokens,
                                int32_t *next, float *logits)
{
    lmi_err *e = &ss[0]->err;
    uint8_t *want = lmi_alloc(n, 1);
    if (!want) return lmi_fail(e, LM_ERR_NO_MEMORY, "no memory for the batch");
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        want[i] = wants_row(ss[i]);
        any = any || want[i];
    }
    const lmi_backend_vt *vt = ss[0]->model->vt;
    lm_status st = vt->sample_batch(ss, n, tokens, next, any ? logits : NULL, want, e);
    lmi_free(want);
    return st;
}

lm_status lm_session_decode_sample(lm_session *const *ss, size_t n, const int32_t *tokens,
                                   int32_t *next, float *logits, size_t logits_cap)
{
    if (!ss) return LM_ERR_INVALID_ARGUMENT;
    if (n == 0) return LM_OK;
    lm_status st = check_batch(ss, n, tokens);
    if (st != LM_OK) return st;
    if (!next) return lmi_fail(&ss[0]->err, LM_ERR_INVALID_ARGUMENT, "next is NULL");
    st = check_sample_logits(ss, n, logits, logits_cap);
    bool hooked = false;
    if (st == LM_OK) st = decode_hooked(ss, n, &hooked);
    if (st != LM_OK) return st;
    if (ss[0]->model->vt->sample_batch && !hooked)
        st = backend_sample(ss, n, tokens, next, logits);
    else
        st = host_sample(ss, n, tokens, next, logits, hooked);
    if (st != LM_OK) return st;
    for (size_t i = 0; i < n; i++) ss[i]->pos++;
    return LM_OK;
}

/* ---- state blob ---------------------------------------------------------
 * Little-endian header of LMI_STATE_HEADER bytes, then the fp32 conv state
 * [n_layer][conv_dim][K-1] and the ssm state [n_layer][d_inner][N]:
 *   0 magic "LMST"   4 u32 version (1)   8 u64 fingerprint
 *  16 u32 arch       20 u32 reserved (0)
 *  24 i64 n_layer    32 i64 conv_dim     40 i64 d_conv
 *  48 i64 d_inner    56 i64 d_state      64 i64 position              */

#define LMI_STATE_MAGIC "LMST"
#define LMI_STATE_VERSION 1u
#define LMI_STATE_HEADER 72

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t state_bytes(const lm_model *m)
{
    return LMI_STATE_HEADER +
           (lmi_state_floats(m, LMI_STATE_CONV) + lmi_state_floats(m, LMI_STATE_SSM)) * sizeof(float);
}

lm_status lm_session_state_size(const lm_session *s, size_t *bytes)
{
    if (!s || !bytes) return LM_ERR_INVALID_ARGUMENT;
    *bytes = state_bytes(s->model);
    return LM_OK;
}

lm_status lm_session_state_save(lm_session *s, void *buf, size_t buf_bytes, size_t *written)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    const size_t need = state_bytes(m);
    if (written) *written = 0;
    if (buf_bytes < need || !buf) {
        if (written) *written = need;
        return lmi_fail(&s->err, LM_ERR_BUFFER_TOO_SMALL,
                        "state buffer holds %zu bytes, %zu needed", buf ? buf_bytes : 0, need);
    }
    lm_status st = m->vt->state_read(s, s->backup, &s->err);
    if (st != LM_OK) return st;
    unsigned char *p = buf;
    memcpy(p, LMI_STATE_MAGIC, 4);
    put_u32(p + 4, LMI_STATE_VERSION);
    put_u64(p + 8, m->fingerprint);
    put_u32(p + 16, (uint32_t)d->arch);
    put_u32(p + 20, 0);
    put_u64(p + 24, (uint64_t)d->n_layer);
    put_u64(p + 32, (uint64_t)d->conv_dim);
    put_u64(p + 40, (uint64_t)d->d_conv);
    put_u64(p + 48, (uint64_t)d->d_inner);
    put_u64(p + 56, (uint64_t)d->d_state);
    put_u64(p + 64, (uint64_t)s->pos);
    const size_t nc = lmi_state_floats(m, LMI_STATE_CONV) * sizeof(float);
    const size_t ns = lmi_state_floats(m, LMI_STATE_SSM) * sizeof(float);
    memcpy(p + LMI_STATE_HEADER, s->backup[LMI_STATE_CONV], nc);
    memcpy(p + LMI_STATE_HEADER + nc, s->backup[LMI_STATE_SSM], ns);
    if (written) *written = need;
    return LM_OK;
}

lm_status lm_session_state_load(lm_session *s, const void *buf, size_t buf_bytes)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    if (!buf) return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "state buffer is NULL");
    const unsigned char *p = buf;
    if (buf_bytes < LMI_STATE_HEADER || memcmp(p, LMI_STATE_MAGIC, 4) != 0)
        return lmi_fail(&s->err, LM_ERR_FORMAT, "not a session state blob (bad magic or size)");
    const uint32_t version = get_u32(p + 4);
    if (version != LMI_STATE_VERSION)
        return lmi_fail(&s->err, LM_ERR_FORMAT, "state blob version %u is not supported (want %u)",
                        (unsigned)version, (unsigned)LMI_STATE_VERSION);
    const uint64_t want[6] = {(uint64_t)d->arch,     (uint64_t)d->n_layer, (uint64_t)d->conv_dim,
                              (uint64_t)d->d_conv,   (uint64_t)d->d_inner, (uint64_t)d->d_state};
    const uint64_t got[6] = {get_u32(p + 16),  get_u64(p + 24), get_u64(p + 32),
                             get_u64(p + 40), get_u64(p + 48), get_u64(p + 56)};
    /* The blob must be consistent with its own header (else FORMAT) ... */
    const uint64_t lim = (uint64_t)1 << 40;
    for (int i = 1; i < 6; i++)
        if (got[i] >= lim)
            return lmi_fail(&s->err, LM_ERR_FORMAT, "state blob header has an invalid size");
    const uint64_t conv_f = got[3] > 1 ? got[1] * got[2] * (got[3] - 1) : 0;
    const uint64_t ssm_f = got[1] * got[4] * got[5];
    if (conv_f > lim || ssm_f > lim ||
        (uint64_t)buf_bytes != LMI_STATE_HEADER + (conv_f + ssm_f) * sizeof(float))
        return lmi_fail(&s->err, LM_ERR_FORMAT,
                        "state blob is %zu bytes, its header describes %llu", buf_bytes,
                        (unsigned long long)(LMI_STATE_HEADER + (conv_f + ssm_f) * sizeof(float)));
    const uint64_t pos = get_u64(p + 64);
    if (pos > (uint64_t)INT64_MAX)
        return lmi_fail(&s->err, LM_ERR_FORMAT, "state blob has an invalid position");
    /* ... and belong to this model (else MISMATCH). */
    static const char *const names[6] = {"arch", "n_layer", "conv_dim", "d_conv", "d_inner",
                                         "d_state"};
    for (int i = 0; i < 6; i++)
        if (got[i] != want[i])
            return lmi_fail(&s->err, LM_ERR_MISMATCH,
                            "state belongs to another model (%s %llu, this model has %llu)",
                            names[i], (unsigned long long)got[i], (unsigned long long)want[i]);
    if (get_u64(p + 8) != m->fingerprint)
        return lmi_fail(&s->err, LM_ERR_MISMATCH, "state belongs to another model "
                        "(fingerprint %016llx, this model %016llx)",
                        (unsigned long long)get_u64(p + 8), (unsigned long long)m->fingerprint);
    const size_t nc = lmi_state_floats(m, LMI_STATE_CONV) * sizeof(float);
    const size_t ns = lmi_state_floats(m, LMI_STATE_SSM) * sizeof(float);
    memcpy(s->backup[LMI_STATE_CONV], p + LMI_STATE_HEADER, nc);
    memcpy(s->backup[LMI_STATE_SSM], p + LMI_STATE_HEADER + nc, ns);
    lm_status st = m->vt->state_write(s, (const float *const *)s->backup, &s->err);
    if (st != LM_OK) return st;
    s->pos = (int64_t)pos;
    s->length_hint = 0;
    return LM_OK;
}
