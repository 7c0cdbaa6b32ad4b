/*
 * cpu/backend.c - the CPU backend: the model loop over the layers' mixers
 * (cpu/mixer.h) for one chunk of one session (lmi_forward), or for the
 * packed sequences of many sessions (a batched prefill piece, or one
 * decode step: n sequences of one token), on host weights in their stored
 * type.
 *
 *   res = embed(tokens)
 *   per layer: hn = RMSNorm(res); res += mixer(hn)   (the mixer adds)
 *   logits = lm_head(RMSNorm(res[last n_out rows]))
 *
 * The residual stream is fp32 and token-major [T][d].  A mixer's token
 * hook may drop rows (the mixer gathers res with its own rows), so T can
 * shrink from one layer to the next.  Threads: mixers run their scans and
 * convs on model->n_threads threads (cpu/parallel.c) and GEMMs on the
 * BLAS library's own; decode steps keep our part on one thread.
 */
#include "internal.h"

#include <cblas.h>
#include <string.h>

#include "cpu/mixer.h"
#include "cpu/ops.h"

#define CPU_KINDS 3 /* mixer kinds are small integers: index by kind */

/* One row per mixer kind the CPU runs. */
static const lmi_cpu_mixer *cpu_mixer(lmi_mixer_kind kind)
{
    static const lmi_cpu_mixer *const table[] = {&lmi_cpu_mixer_mamba1, &lmi_cpu_mixer_mamba2};
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        if (table[k]->kind == kind) return table[k];
    return NULL;
}

typedef struct cpu_model {
    void **layer_data;   /* [n_layer] each mixer's per-layer data */
    bool has16;          /* some matrix is not F32 (16-bit, Q8_0): sessions need the tile scratch */
    bool uses[CPU_KINDS];
} cpu_model;

typedef struct cpu_session {
    float *part[LMI_STATE_PARTS]; /* the state: all layers' part p, layer after layer */
    int64_t cap;                  /* tokens res / hn hold */
    float *res;                   /* [cap][d] residual stream */
    float *hn;                    /* [cap][d] normalised */
    void *scratch[CPU_KINDS];     /* each mixer kind's scratch */
    float *tile;                  /* lmi_ops_tile_floats, or NULL when every matrix is F32 */
} cpu_session;

static int cpu_threads(const lm_model *m)
{
    return m->n_threads > 0 ? m->n_threads : 1;
}

/* ---- model ------------------------------------------------------------- */

static void cpu_model_free(lm_model *m)
{
    if (!m || !m->bk) return;
    cpu_model *cm = m->bk;
    for (int64_t l = 0; cm->layer_data && l < m->dims.n_layer; l++) lmi_free(cm->layer_data[l]);
    lmi_free(cm->layer_data);
    lmi_free(cm);
    m->bk = NULL;
}

static lm_status cpu_model_init(lm_model *m, lmi_err *e)
{
    if (!m) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: model is NULL");
    const lmi_dims *d = &m->dims;
    if (d->n_layer <= 0 || d->d_model <= 0 || d->vocab <= 0)
        return lmi_fail(e, LM_ERR_SHAPE, "cpu: invalid model dimensions");
    if (!m->embed.data || !m->norm_f.data || !m->lm_head.data || !m->layers)
        return lmi_fail(e, LM_ERR_MISSING, "cpu: model weights missing");
    cpu_model_free(m);
    cpu_model *cm = lmi_alloc(1, sizeof *cm);
    if (cm) cm->layer_data = lmi_alloc((size_t)d->n_layer, sizeof(void *));
    if (!cm || !cm->layer_data) {
        lmi_free(cm);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory");
    }
    m->bk = cm;
#ifdef OPENBLAS_VERSION
    /* Only queried: the pool size is process-wide (longmamba.h, n_threads). */
    const int blas_nt = openblas_get_num_threads();
    if (blas_nt > m->n_threads)
        lmi_log(m->log_fn, m->log_user, m->log_level, LM_LOG_INFO,
                "cpu: n_threads %d bounds the library's own threads; OpenBLAS runs its GEMMs on "
                "%d threads, a process-wide setting (OPENBLAS_NUM_THREADS or "
                "openblas_set_num_threads)",
                (int)m->n_threads, blas_nt);
#endif
    cm->has16 = m->embed.type != LMI_W_F32 || m->lm_head.type != LMI_W_F32;
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        const lmi_cpu_mixer *mx = cpu_mixer(L->kind);
        if (!mx) {
            cpu_model_free(m);
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: layer %lld has mixer kind %d",
                            (long long)l, (int)L->kind);
        }
        lm_status st = mx->init_layer(m, L, l, &cm->layer_data[l], &cm->has16, e);
        if (st != LM_OK) {
            cpu_model_free(m);
            return st;
        }
        cm->uses[L->kind] = true;
    }
    return LM_OK;
}

/* ---- session ------------------------------------------------------------ */

static void cpu_session_free(lm_session *s)
{
    if (!s || !s->bk) return;
    cpu_session *cs = s->bk;
    for (int k = 0; k < CPU_KINDS; k++)
        if (cs->scratch[k]) cpu_mixer((lmi_mixer_kind)k)->release(cs->scratch[k]);
    for (int p = 0; p < LMI_STATE_PARTS; p++) lmi_free(cs->part[p]);
    lmi_free(cs->res);
    lmi_free(cs->hn);
    lmi_free(cs->tile);
    lmi_free(cs);
    s->bk = NULL;
}

/* Makes every scratch hold T tokens (before any state changes). */
static lm_status reserve(cpu_session *cs, const lm_model *m, int64_t T, lmi_err *e)
{
    const cpu_model *cm = m->bk;
    if (T > cs->cap) {
        float *res = lmi_alloc_raw((size_t)T, (size_t)m->dims.d_model * sizeof(float));
        float *hn = lmi_alloc_raw((size_t)T, (size_t)m->dims.d_model * sizeof(float));
        if (!res || !hn) {
            lmi_free(res);
            lmi_free(hn);
            return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the scratch of %lld tokens",
                            (long long)T);
        }
        lmi_free(cs->res);
        lmi_free(cs->hn);
        cs->res = res;
        cs->hn = hn;
        cs->cap = T;
    }
    for (int k = 0; k < CPU_KINDS; k++) {
        if (!cm->uses[k]) continue;
        lm_status st = cpu_mixer((lmi_mixer_kind)k)->reserve(&cs->scratch[k], &m->dims, T, e);
        if (st != LM_OK) return st;
    }
    return LM_OK;
}

static lm_status cpu_session_init(lm_session *s, lmi_err *e)
{
    const lm_model *m = s->model;
    if (!m->bk) return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: model is not initialised");
    const cpu_model *cm = m->bk;
    cpu_session *cs = lmi_alloc(1, sizeof *cs);
    if (!cs) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the session");
    s->bk = cs;
    bool ok = true;
    for (int p = 0; p < LMI_STATE_PARTS; p++) {
        cs->part[p] = lmi_alloc(lmi_state_floats(m, (lmi_state_part)p) + 1, sizeof(float));
        ok = ok && cs->part[p];
    }
    if (cm->has16) {
        cs->tile = lmi_alloc_raw(lmi_ops_tile_floats(&m->dims), sizeof(float));
        ok = ok && cs->tile;
    }
    lm_status st = ok ? reserve(cs, m, s->chunk_size > 0 ? s->chunk_size : 1, e)
                      : lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the session state");
    if (st != LM_OK) cpu_session_free(s);
    return st;
}

static void cpu_session_reset(lm_session *s)
{
    if (!s || !s->bk) return;
    cpu_session *cs = s->bk;
    for (int p = 0; p < LMI_STATE_PARTS; p++)
        memset(cs->part[p], 0, lmi_state_floats(s->model, (lmi_state_part)p) * sizeof(float));
}

static lm_status cpu_state_read(lm_session *s, float *const out[LMI_STATE_PARTS], lmi_err *e)
{
    if (!s || !s->bk) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: no session state");
    cpu_session *cs = s->bk;
    for (int p = 0; p < LMI_STATE_PARTS; p++)
        if (out[p])
            memcpy(out[p], cs->part[p],
                   lmi_state_floats(s->model, (lmi_state_part)p) * sizeof(float));
    return LM_OK;
}

static lm_status cpu_state_write(lm_session *s, const float *const in[LMI_STATE_PARTS],
                                 lmi_err *e)
{
    if (!s || !s->bk) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: no session state");
    cpu_session *cs = s->bk;
    for (int p = 0; p < LMI_STATE_PARTS; p++)
        if (in[p])
            memcpy(cs->part[p], in[p],
                   lmi_state_floats(s->model, (lmi_state_part)p) * sizeof(float));
    return LM_OK;
}

/* ---- the model loop ------------------------------------------------------ */

/* logits = self.lm_head(self.norm_f(hidden_states[-rows:])) */
static void head(const lm_model *m, cpu_session *cs, int64_t T, int64_t rows, float *logits)
{
    const int64_t dm = m->dims.d_model;
    lmi_rmsnorm(cs->res + (T - rows) * dm, &m->norm_f, cs->hn, rows, dm, m->dims.eps);
    lmi_linear(cs->hn, dm, rows, &m->lm_head, NULL, logits, m->dims.vocab, 0.0f, cs->tile,
               cpu_threads(m));
}

static lm_status cpu_forward(lm_session *s, const lmi_forward *f, lmi_err *e)
{
    if (!s || !s->bk || !f || !f->tokens || f->n_tokens < 1 || f->n_out < 0 ||
        f->n_out > f->n_tokens || (f->n_out > 0 && !f->logits))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid forward arguments");
    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    if (f->filters)
        for (int64_t l = 0; l < d->n_layer; l++)
            if (f->filters[l].global && !f->filters[l].tau)
                return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                                "cpu: layer %lld has a global mask but no thresholds",
                                (long long)l);
    cpu_session *cs = s->bk;
    const cpu_model *cm = m->bk;
    /* Everything that can fail before the state changes. */
    lm_status st = reserve(cs, m, f->n_tokens, e);
    if (st != LM_OK) return st;

    int64_t T = f->n_tokens;
    /* hidden_states = self.embeddings(input_ids) */
    lmi_embed(&m->embed, f->tokens, T, cs->res);
    size_t off[LMI_STATE_PARTS] = {0};
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        const lmi_cpu_mixer *mx = cpu_mixer(L->kind);
        const lmi_cpu_layer c = {m, L, l, cm->layer_data[l], cs->hn, cs->res, cs->tile,
                                 cpu_threads(m)};
        float *const state[LMI_STATE_PARTS] = {cs->part[0] + off[0], cs->part[1] + off[1]};
        /* hidden_states = self.norm(hidden_states); += mixer */
        lmi_rmsnorm(cs->res, &L->norm_w, cs->hn, T, d->d_model, d->eps);
        st = mx->forward(&c, cs->scratch[L->kind], f, state, &T, e);
        if (st != LM_OK) return st;
        for (int p = 0; p < LMI_STATE_PARTS; p++)
            off[p] += lmi_mixer_find(L->kind)->state_floats(d, (lmi_state_part)p, s->pos);
    }
    if (f->n_out > 0) {
        if (f->n_out > T)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "cpu: %lld logits asked for but only %lld positions remain",
                            (long long)f->n_out, (long long)T);
        head(m, cs, T, f->n_out, f->logits);
    }
    return LM_OK;
}

/* n sequences packed back to back (off[i] their first rows, off[n] the
 * tokens in all) through the layers on sessions[i]'s states: each mixer
 * runs its projections as GEMMs over all rows (each weight read once for
 * the batch) and its conv/scan per sequence.  res/hn and the mixers'
 * scratch are c0's, reserved for off[n] rows, res holding the embeddings. */
static lm_status run_seqs(const lm_model *m, cpu_session *c0, lm_session *const *ss,
                          const int64_t *off, int64_t n, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const cpu_model *cm = m->bk;
    float *(*state)[LMI_STATE_PARTS] = lmi_alloc((size_t)n, sizeof *state);
    if (!state) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the batch");
    for (int64_t i = 0; i < n; i++)
        for (int p = 0; p < LMI_STATE_PARTS; p++) state[i][p] = ((cpu_session *)ss[i]->bk)->part[p];
    lm_status st = LM_OK;
    for (int64_t l = 0; l < d->n_layer && st == LM_OK; l++) {
        const lmi_layer *L = &m->layers[l];
        const lmi_cpu_mixer *mx = cpu_mixer(L->kind);
        const lmi_cpu_layer c = {m, L, l, cm->layer_data[l], c0->hn, c0->res, c0->tile,
                                 cpu_threads(m)};
        lmi_rmsnorm(c0->res, &L->norm_w, c0->hn, off[n], d->d_model, d->eps);
        st = mx->forward_seqs(&c, c0->scratch[L->kind], off, n,
                              (float *const(*)[LMI_STATE_PARTS])state, e);
        /* the next layer's state parts */
        for (int64_t i = 0; i < n; i++)
            for (int p = 0; p < LMI_STATE_PARTS; p++)
                state[i][p] += lmi_mixer_find(L->kind)->state_floats(d, (lmi_state_part)p,
                                                                      ss[i]->pos);
    }
    lmi_free(state);
    return st;
}

/* One decode step for n sessions: n sequences of one token.  Scratch is
 * sessions[0]'s. */
static lm_status cpu_forward_batch(lm_session *const *ss, size_t n_sessions,
                                   const int32_t *tokens, float *logits, bool allow_tf32,
                                   lmi_err *e)
{
    (void)allow_tf32;
    if (!ss || n_sessions == 0 || !tokens || !ss[0] || !ss[0]->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid batch arguments");
    const lm_model *m = ss[0]->model;
    const int64_t n = (int64_t)n_sessions;
    cpu_session *c0 = ss[0]->bk;
    lm_status st = reserve(c0, m, n, e);
    if (st != LM_OK) return st;
    int64_t *off = lmi_alloc((size_t)n + 1, sizeof *off);
    if (!off) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the batch");
    for (int64_t i = 0; i <= n; i++) off[i] = i;
    lmi_embed(&m->embed, tokens, n, c0->res);
    st = run_seqs(m, c0, ss, off, n, e);
    lmi_free(off);
    if (st == LM_OK && logits) head(m, c0, n, n, logits);
    return st;
}

/* A piece of a batched prefill: the sequences packed into one pass of
 * run_seqs; the logits rows asked for come from one head GEMM over their
 * last rows (gathered to the front of res). */
static lm_status cpu_prefill_batch(lm_session *owner, const lmi_seq *seq, size_t n_seq,
                                   bool allow_tf32, lmi_err *e)
{
    (void)allow_tf32;
    if (!owner || !owner->bk || !seq || n_seq == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid batch arguments");
    const lm_model *m = owner->model;
    const int64_t n = (int64_t)n_seq, dm = m->dims.d_model, V = m->dims.vocab;
    cpu_session *c0 = owner->bk;
    int64_t *off = lmi_alloc((size_t)n + 1, sizeof *off);
    lm_session **ss = lmi_alloc((size_t)n, sizeof *ss);
    lm_status st = off && ss ? LM_OK : lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the batch");
    int64_t rows = 0; /* logits rows asked for */
    for (int64_t i = 0; i < n && st == LM_OK; i++) {
        if (!seq[i].s || !seq[i].s->bk || seq[i].s->model != m || !seq[i].tokens ||
            seq[i].n_tokens < 1 || seq[i].n_tokens > INT64_MAX / 4 - off[i])
            st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid sequence %lld in the batch",
                          (long long)i);
        else
            off[i + 1] = off[i] + seq[i].n_tokens;
        ss[i] = seq[i].s;
        rows += seq[i].logits != NULL;
    }
    float *lg = NULL;
    if (st == LM_OK && rows > 0 && !(lg = lmi_alloc_raw((size_t)rows, (size_t)V * sizeof(float))))
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for %lld rows of logits", (long long)rows);
    if (st == LM_OK) st = reserve(c0, m, off[n], e);
    for (int64_t i = 0; i < n && st == LM_OK; i++)
        lmi_embed(&m->embed, seq[i].tokens, seq[i].n_tokens, c0->res + off[i] * dm);
    if (st == LM_OK) st = run_seqs(m, c0, ss, off, n, e);
    if (st == LM_OK && rows > 0) {
        int64_t r = 0;
        for (int64_t i = 0; i < n; i++)
            if (seq[i].logits) /* r <= i: rows move down, never over one still to read */
                memmove(c0->res + r++ * dm, c0->res + (off[i + 1] - 1) * dm, (size_t)dm * sizeof(float));
        head(m, c0, rows, rows, lg);
        r = 0;
        for (int64_t i = 0; i < n; i++)
            if (seq[i].logits) memcpy(seq[i].logits, lg + r++ * V, (size_t)V * sizeof(float));
    }
    lmi_free(lg);
    lmi_free(off);
    lmi_free(ss);
    return st;
}

const lmi_backend_vt lmi_cpu_backend = {
    .name = "cpu",
    .model_init = cpu_model_init,
    .model_free = cpu_model_free,
    .session_init = cpu_session_init,
    .session_free = cpu_session_free,
    .session_reset = cpu_session_reset,
    .forward = cpu_forward,
    .state_read = cpu_state_read,
    .state_write = cpu_state_write,
    .forward_batch = cpu_forward_batch,
    .sample_batch = NULL, /* the logits are on the host: session code samples them */
    .prefill_batch = cpu_prefill_batch,
};
