/*
 * driver.c - allocation failure at every allocation site: for each
 * scenario, counts the allocation calls of one clean run, then for
 * N = 1, 2, 3, ... runs the scenario with the N-th allocation failing
 * (test/faultinject/shim.c, LD_PRELOAD) until a run sees no failure.
 *
 * Every run must:
 *   - not crash (the whole loop is one process: a crash ends the test);
 *   - either fail cleanly - the first failing call returns
 *     LM_ERR_NO_MEMORY, or LM_ERR_IO whose message says the memory ran
 *     out (libc's fopen failing inside the library) - or, where the failed
 *     allocation was optional (a fallback exists), produce exactly the
 *     clean run's results;
 *   - leak nothing: every block allocated during the run is freed once
 *     the scenario has released its handles (the shim tracks them);
 *   - leave handles usable: a failed prefill or decode leaves the session's
 *     state and position as they were (bitwise), and after any failed
 *     session call the session still works (checked with the shim paused).
 *
 * Usage: LD_PRELOAD=libfaultinject.so driver [SCENARIO...]
 * (under valgrind: --soname-synonyms=somalloc=nouserintercepts, so that
 * the shim's malloc is the one called; LMFI_STRIDE=k samples every k-th
 * allocation to keep such a run short)
 * Prints one line per scenario and a closing "N passed, N failed" line.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA must be defined"
#endif

static void (*fi_arm)(long);
static long (*fi_disarm)(long *, long *, long *);
static void (*fi_pause)(int);

/* ---- what a run observes ------------------------------------------------------ */

typedef struct outcome {
    lm_status st;         /* first non-OK status, or LM_OK */
    char where[64];       /* the call that returned it */
    char msg[512];
    /* results compared with the clean run when everything succeeded */
    double sum;           /* of logits and statistics, bitwise via memcmp */
    uint64_t hash;
} outcome;

static void fold(outcome *o, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) o->hash = (o->hash ^ b[i]) * 0x100000001b3ull;
}

/* Records the first failure; returns 1 if st is OK. */
static int ok(outcome *o, lm_status st, const char *where, const char *msg)
{
    if (st == LM_OK) return 1;
    if (o->st == LM_OK) {
        o->st = st;
        snprintf(o->where, sizeof o->where, "%s", where);
        snprintf(o->msg, sizeof o->msg, "%s", msg ? msg : "");
    }
    return 0;
}

static int32_t tokens[1200];

static void make_tokens(int64_t V)
{
    tu_rng r = {99};
    for (int i = 0; i < 1200; i++) tokens[i] = (int32_t)tu_rng_int(&r, 0, V - 1);
}

static lm_weight_format g_weights; /* of the model scenarios */

static lm_model *load(const char *fixture, outcome *o)
{
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/fixtures/%s", LM_TEST_DATA, fixture);
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    p.weights = g_weights;
    lm_model *m = NULL;
    if (!ok(o, lm_model_load(path, &p, &m, err, sizeof err), "lm_model_load", err)) return NULL;
    return m;
}

/* After a failed session call: with nothing armed the session still
 * works (the failure left it consistent). */
static int session_still_works(lm_session *s, const lm_model *m)
{
    fi_pause(1);
    float *lg = malloc(sizeof(float) * (size_t)m->dims.vocab);
    int good = lm_session_reset(s) == LM_OK &&
               lm_session_prefill(s, tokens, 40, 1, lg, (size_t)m->dims.vocab) == LM_OK &&
               lm_session_decode(s, tokens[0], lg, (size_t)m->dims.vocab) == LM_OK;
    for (int64_t v = 0; good && v < m->dims.vocab; v++) good = isfinite(lg[v]);
    free(lg);
    fi_pause(0);
    return good;
}

/* The session's state blob and position, taken with the shim paused. */
typedef struct snap {
    unsigned char *blob;
    size_t n;
    int64_t pos;
} snap;

static snap snapshot(lm_session *s)
{
    snap sn = {0};
    fi_pause(1);
    if (lm_session_state_size(s, &sn.n) == LM_OK && (sn.blob = malloc(sn.n)) != NULL) {
        size_t w = 0;
        if (lm_session_state_save(s, sn.blob, sn.n, &w) != LM_OK) sn.n = 0;
    }
    sn.pos = lm_session_position(s);
    fi_pause(0);
    return sn;
}

/* After a failed call: the session must hold the state it had before. */
static void check_unchanged(lm_session *s, snap *before, outcome *o, int *usable)
{
    snap now = snapshot(s);
    if (!before->blob || !now.blob || now.n != before->n || now.pos != before->pos ||
        memcmp(now.blob, before->blob, now.n) != 0) {
        snprintf(o->msg + strlen(o->msg), sizeof o->msg - strlen(o->msg),
                 " [the failed call changed the session state]");
        *usable = 0;
    }
    fi_pause(1);
    free(now.blob);
    fi_pause(0);
}

static void snap_free(snap *sn)
{
    fi_pause(1);
    free(sn->blob);
    sn->blob = NULL;
    fi_pause(0);
}

/* The session part shared by the scenarios: create, prefill over three
 * chunks with logits, decode, state save / load, reset, a batched step,
 * a sampled batched step. */
static void session_work(const lm_model *m, outcome *o, int *usable)
{
    const int64_t V = m->dims.vocab;
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = 512;
    lm_session *s = NULL;
    char err[512] = "";
    if (!ok(o, lm_session_create(m, &sp, &s, err, sizeof err), "lm_session_create", err)) return;
    float *lg = malloc(sizeof(float) * (size_t)(2 * V));
    size_t sn = 0;
    unsigned char *blob = NULL;
    if (!lg) {
        ok(o, LM_ERR_NO_MEMORY, "driver", "driver's own buffer");
        goto out;
    }
    /* Some history first, so that an unchanged state is not just zeros. */
    if (!ok(o, lm_session_prefill(s, tokens + 100, 20, 0, NULL, 0), "lm_session_prefill",
            lm_session_last_error(s)))
        goto out;
    snap before = snapshot(s);
    if (!ok(o, lm_session_prefill(s, tokens, 1200, 2, lg, (size_t)(2 * V)), "lm_session_prefill",
            lm_session_last_error(s))) {
        check_unchanged(s, &before, o, usable);
        snap_free(&before);
        goto out;
    }
    snap_free(&before);
    fold(o, lg, sizeof(float) * (size_t)(2 * V));
    for (int i = 0; i < 2; i++) {
        before = snapshot(s);
        if (!ok(o, lm_session_decode(s, tokens[i], lg, (size_t)V), "lm_session_decode",
                lm_session_last_error(s))) {
            check_unchanged(s, &before, o, usable);
            snap_free(&before);
            goto out;
        }
        snap_free(&before);
        fold(o, lg, sizeof(float) * (size_t)V);
    }
    lm_session_state_size(s, &sn);
    blob = malloc(sn);
    if (!blob) {
        ok(o, LM_ERR_NO_MEMORY, "driver", "driver's own buffer");
        goto out;
    }
    size_t w = 0;
    if (!ok(o, lm_session_state_save(s, blob, sn, &w), "lm_session_state_save",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_reset(s), "lm_session_reset", lm_session_last_error(s)) ||
        !ok(o, lm_session_state_load(s, blob, sn), "lm_session_state_load",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_decode(s, tokens[5], lg, (size_t)V), "lm_session_decode",
            lm_session_last_error(s)))
        goto out;
    fold(o, lg, sizeof(float) * (size_t)V);
    /* A batched step of this session and a fresh one: a failure changes
     * neither (the CPU backend allocates before it steps). */
    {
        lm_session *s2 = NULL;
        if (!ok(o, lm_session_create(m, &sp, &s2, err, sizeof err), "lm_session_create", err))
            goto out;
        lm_session *pair[2] = {s, s2};
        before = snapshot(s);
        if (ok(o, lm_session_decode_batch(pair, 2, tokens + 7, lg, (size_t)(2 * V)),
               "lm_session_decode_batch", lm_session_last_error(s)))
            fold(o, lg, sizeof(float) * (size_t)(2 * V));
        else
            check_unchanged(s, &before, o, usable);
        snap_free(&before);
        /* The same pair sampled (top_k, top_p, s's row returned): a
         * failure changes neither; the first call grows s's buffers. */
        lm_sampling_params smp;
        lm_sampling_params_init(&smp);
        smp.temperature = 0.8f;
        smp.top_k = 20;
        smp.top_p = 0.9f;
        smp.seed = 5;
        smp.flags = LM_SAMPLE_RETURN_LOGITS;
        int32_t next[2] = {0, 0};
        before = snapshot(s);
        if (ok(o, lm_session_set_sampling(s, &smp), "lm_session_set_sampling",
               lm_session_last_error(s)) &&
            ok(o, lm_session_decode_sample(pair, 2, tokens + 9, next, lg, (size_t)(2 * V)),
               "lm_session_decode_sample", lm_session_last_error(s))) {
            fold(o, next, sizeof next);
            fold(o, lg, sizeof(float) * (size_t)V);
        } else {
            check_unchanged(s, &before, o, usable);
        }
        snap_free(&before);
        /* Both prompts prefilled together: a failure changes neither. */
        if (o->st == LM_OK) {
            const int32_t *pt[2] = {tokens + 11, tokens + 400};
            const size_t pn[2] = {30, 5};
            before = snapshot(s);
            if (ok(o, lm_session_prefill_batch(pair, 2, pt, pn, lg, (size_t)(2 * V)),
                   "lm_session_prefill_batch", lm_session_last_error(s)))
                fold(o, lg, sizeof(float) * (size_t)(2 * V));
            else
                check_unchanged(s, &before, o, usable);
            snap_free(&before);
        }
        lm_session_free(s2);
    }
out:
    if (o->st != LM_OK && strncmp(o->where, "lm_session_", 11) == 0 &&
        strcmp(o->where, "lm_session_create") != 0 && *usable)
        *usable = session_still_works(s, m);
    free(blob);
    free(lg);
    lm_session_free(s);
}

/* ---- scenarios -------------------------------------------------------------------- */

typedef void (*scenario_fn)(outcome *o, int *usable);

static const char *g_fixture;

/* Load a model, then the session work. */
static void sc_model(outcome *o, int *usable)
{
    lm_model *m = load(g_fixture, o);
    if (!m) return;
    session_work(m, o, usable);
    lm_model_free(m);
}

/* The same with the linear layers quantised to Q8_0 at load. */
static void sc_model_q8(outcome *o, int *usable)
{
    g_weights = LM_WEIGHTS_Q8_0;
    sc_model(o, usable);
    g_weights = LM_WEIGHTS_AS_STORED;
}

static lm_model *g_model; /* loaded unarmed, for the scenarios below */

/* LongMamba and DeciMamba on a loaded model: calibrate, save, load,
 * classify, prefill in both modes; MambaExtend (with LongMamba) and
 * Modulation prefills; SPSA scales, saved and loaded. */
static void sc_modes(outcome *o, int *usable)
{
    const lm_model *m = g_model;
    const int64_t V = m->dims.vocab;
    char err[512] = "";
    char path[256];
    snprintf(path, sizeof path, "%s/lmfi-calib-%d.safetensors",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    const int32_t *wins[2] = {tokens, tokens + 300};
    const size_t lens[2] = {300, 200};
    const int64_t buckets[3] = {256, 1024, 4096};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = 3;
    lm_calibration *c = NULL, *c2 = NULL;
    lm_session *s = NULL;
    float *lg = malloc(sizeof(float) * (size_t)V);
    if (!lg) {
        ok(o, LM_ERR_NO_MEMORY, "driver", "driver's own buffer");
        return;
    }
    if (!ok(o, lm_calibrate(m, wins, lens, 2, &cp, &c, err, sizeof err), "lm_calibrate", err) ||
        !ok(o, lm_calibration_save(c, path, err, sizeof err), "lm_calibration_save", err) ||
        !ok(o, lm_calibration_load(path, m, &c2, err, sizeof err), "lm_calibration_load", err))
        goto out;
    uint8_t mask[4096];
    int64_t counts[64];
    if (!ok(o, lm_classify_channels(c2, 1e-3, mask, sizeof mask, counts, 64, err, sizeof err),
            "lm_classify_channels", err))
        goto out;
    fold(o, counts, sizeof(int64_t) * (size_t)m->dims.n_layer);
    if (!ok(o, lm_session_create(m, NULL, &s, err, sizeof err), "lm_session_create", err)) goto out;
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.trigger_length = 100;
    if (!ok(o, lm_session_set_longmamba(s, c2, &lp), "lm_session_set_longmamba",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_prefill(s, tokens, 1200, 1, lg, (size_t)V), "lm_session_prefill",
            lm_session_last_error(s)))
        goto out;
    fold(o, lg, sizeof(float) * (size_t)V);
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    dp.l_base = 100;
    if (!ok(o, lm_session_reset(s), "lm_session_reset", lm_session_last_error(s)) ||
        !ok(o, lm_session_set_decimamba(s, &dp), "lm_session_set_decimamba",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_prefill(s, tokens, 600, 1, lg, (size_t)V), "lm_session_prefill",
            lm_session_last_error(s)))
        goto out;
    fold(o, lg, sizeof(float) * (size_t)V);
    /* MambaExtend with LongMamba, Modulation, and their scales by SPSA */
    double sc[64];
    for (int64_t l = 0; l < m->dims.n_layer && l < 64; l++) sc[l] = 0.5 + 0.1 * (double)l;
    lm_mambaextend_params ep;
    lm_mambaextend_params_init(&ep);
    ep.scales = sc;
    ep.n_scales = (size_t)m->dims.n_layer;
    ep.longmamba = c2;
    ep.longmamba_params = &lp;
    lm_modulation_params mp;
    lm_modulation_params_init(&mp);
    mp.scales = sc;
    mp.n_scales = (size_t)m->dims.n_layer;
    if (!ok(o, lm_session_reset(s), "lm_session_reset", lm_session_last_error(s)) ||
        !ok(o, lm_session_set_mambaextend(s, &ep), "lm_session_set_mambaextend",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_prefill(s, tokens, 1200, 1, lg, (size_t)V), "lm_session_prefill",
            lm_session_last_error(s)))
        goto out;
    fold(o, lg, sizeof(float) * (size_t)V);
    if (!ok(o, lm_session_reset(s), "lm_session_reset", lm_session_last_error(s)) ||
        !ok(o, lm_session_set_modulation(s, &mp), "lm_session_set_modulation",
            lm_session_last_error(s)) ||
        !ok(o, lm_session_prefill(s, tokens, 600, 1, lg, (size_t)V), "lm_session_prefill",
            lm_session_last_error(s)))
        goto out;
    fold(o, lg, sizeof(float) * (size_t)V);
    {
        const size_t slens[2] = {40, 30};
        lm_spsa_params spp;
        lm_spsa_params_init(&spp);
        spp.iterations = 1;
        lm_scales *x = NULL, *y = NULL;
        double got[64];
        if (ok(o, lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, slens, 2, &spp, &x, err,
                                      sizeof err),
               "lm_scales_calibrate", err) &&
            ok(o, lm_scales_save(x, path, err, sizeof err), "lm_scales_save", err) &&
            ok(o, lm_scales_load(path, m, &y, err, sizeof err), "lm_scales_load", err) &&
            ok(o, lm_scales_get(y, got, NULL, 64), "lm_scales_get", "")) {
            fold(o, got, sizeof(double) * (size_t)m->dims.n_layer);
        }
        lm_scales_free(x);
        lm_scales_free(y);
    }
out:
    if (s && o->st != LM_OK && strncmp(o->where, "lm_session_", 11) == 0 &&
        strcmp(o->where, "lm_session_create") != 0)
        *usable = session_still_works(s, m);
    lm_session_free(s);
    lm_calibration_free(c);
    lm_calibration_free(c2);
    unlink(path);
    free(lg);
}

/* Tokenizer: load, encode, decode (g_fixture: a file under test/data, or
 * NULL for tiny-a.json). */
static void sc_tokenizer(outcome *o, int *usable)
{
    (void)usable;
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", LM_TEST_DATA, g_fixture ? g_fixture : "tokenizer/tiny-a.json");
    lm_tokenizer *t = NULL;
    if (!ok(o, lm_tokenizer_load(path, &t, err, sizeof err), "lm_tokenizer_load", err)) return;
    static const char text[] = "Hello <|sp|>x caf\xc3\xa9 na\xc3\xafve, e\xcc\x81 12345 \xff!";
    int32_t ids[256];
    size_t n = 0, nb = 0;
    char back[1024];
    if (ok(o, lm_tokenizer_encode(t, text, sizeof text - 1, ids, 256, &n, err, sizeof err),
           "lm_tokenizer_encode", err) &&
        ok(o, lm_tokenizer_decode(t, ids, n, back, sizeof back, &nb, err, sizeof err),
           "lm_tokenizer_decode", err)) {
        fold(o, ids, sizeof(int32_t) * n);
        fold(o, back, nb);
    }
    lm_tokenizer_free(t);
}

/* The public scan. */
static void sc_scan(outcome *o, int *usable)
{
    (void)usable;
    enum { L = 8, E = 4, N = 3 };
    float u[L * E], dl[L * E], A[E * N], B[L * N], C[L * N], y[L * E], h[E * N];
    for (int i = 0; i < L * E; i++) u[i] = 0.1f * (float)(i % 7) - 0.3f, dl[i] = 0.05f * (float)(1 + i % 5);
    for (int i = 0; i < E * N; i++) A[i] = -0.5f - 0.1f * (float)i;
    for (int i = 0; i < L * N; i++) B[i] = 0.2f * (float)(i % 3), C[i] = 0.3f - 0.1f * (float)(i % 4);
    lm_scan_args a;
    lm_scan_args_init(&a);
    a.length = L, a.channels = E, a.state_size = N;
    a.u = u, a.delta = dl, a.A = A, a.B = B, a.C = C, a.y = y, a.state_out = h;
    a.n_threads = 1;
    char err[512] = "";
    if (ok(o, lm_scan_filtered(&a, err, sizeof err), "lm_scan_filtered", err)) {
        fold(o, y, sizeof y);
        fold(o, h, sizeof h);
    }
}

/* ---- the loop ----------------------------------------------------------------------- */

static int clean_failure(const outcome *o)
{
    if (o->st == LM_ERR_NO_MEMORY) return 1;
    /* libc's own allocation failing under fopen() and the like. */
    if (o->st == LM_ERR_IO && strstr(o->msg, "memory")) return 1;
    return 0;
}

static int run_scenario(const char *name, scenario_fn fn)
{
    outcome ref;
    long calls = 0, live = 0, first = 0;
    int usable = 1;
    /* Warm-up (libc, OpenBLAS and the dynamic loader settle), then the
     * clean run that counts the allocations. */
    memset(&ref, 0, sizeof ref);
    fn(&ref, &usable);
    memset(&ref, 0, sizeof ref);
    fi_arm(0);
    fn(&ref, &usable);
    fi_disarm(&calls, &live, &first);
    if (ref.st != LM_OK) {
        printf("FAIL %s: the clean run failed in %s: %s (%s)\n", name, ref.where,
               lm_status_str(ref.st), ref.msg);
        return 0;
    }
    if (live != 0) {
        printf("FAIL %s: the clean run leaks %ld blocks (first from allocation #%ld)\n", name,
               live, first);
        return 0;
    }
    const long total = calls;
    if (total == 0) {
        printf("FAIL %s: no allocation was counted: the shim is not intercepting malloc "
               "(under valgrind add --soname-synonyms=somalloc=nouserintercepts)\n", name);
        return 0;
    }
    int bad = 0;
    long tolerated = 0, statuses[16] = {0};
    /* LMFI_STRIDE=k tests allocations 1, 1+k, 1+2k, ... and the run past
     * the last (for slow runs under valgrind); default every one. */
    const char *sv = getenv("LMFI_STRIDE");
    const long stride = sv && atol(sv) > 0 ? atol(sv) : 1;
    long tested = 0;
    for (long n = 1;; n = n + stride > total && n <= total ? total + 1 : n + stride) {
        outcome o;
        tested++;
        memset(&o, 0, sizeof o);
        usable = 1;
        fi_arm(n);
        fn(&o, &usable);
        long fired = fi_disarm(&calls, &live, &first);
        if (!fired) {
            /* Past the last allocation: the run must be the clean one. */
            if (n != total + 1 || o.st != LM_OK || o.hash != ref.hash) {
                printf("FAIL %s: run %ld without a failure differs from the clean run "
                       "(%ld allocations counted before)\n", name, n, total);
                bad++;
            }
            break;
        }
        if (live != 0) {
            printf("FAIL %s: allocation #%ld failing leaks %ld blocks (first from #%ld)%s\n", name,
                   n, live, first, live < 0 ? " (tracking overflow)" : "");
            bad++;
        }
        if (o.st == LM_OK) {
            if (o.hash != ref.hash) {
                printf("FAIL %s: allocation #%ld failed, every call returned OK, and the "
                       "results differ from the clean run\n", name, n);
                bad++;
            }
            tolerated++;
        } else if (!clean_failure(&o)) {
            printf("FAIL %s: allocation #%ld failing makes %s return %s: %s\n", name, n, o.where,
                   lm_status_str(o.st), o.msg);
            bad++;
        } else {
            statuses[o.st & 15]++;
        }
        if (!usable) {
            printf("FAIL %s: allocation #%ld failing in %s leaves the session changed or "
                   "unusable: %s\n", name, n, o.where, o.msg);
            bad++;
        }
        if (bad > 20) break;
    }
    printf("%s %s: %ld allocation calls, %ld runs with one failing: %ld no-memory, %ld i/o (ENOMEM), "
           "%ld tolerated with identical results; %s\n",
           bad ? "FAIL" : "ok  ", name, total, tested - 1, statuses[LM_ERR_NO_MEMORY], statuses[LM_ERR_IO],
           tolerated, bad ? "FAILED checks above" : "no leaks, sessions usable");
    fflush(stdout);
    return bad == 0;
}

int main(int argc, char **argv)
{
    fi_arm = (void (*)(long))dlsym(RTLD_DEFAULT, "lmfi_arm");
    fi_disarm = (long (*)(long *, long *, long *))dlsym(RTLD_DEFAULT, "lmfi_disarm");
    fi_pause = (void (*)(int))dlsym(RTLD_DEFAULT, "lmfi_pause");
    if (!fi_arm || !fi_disarm || !fi_pause) {
        fprintf(stderr, "faultinject driver: run with LD_PRELOAD=libfaultinject.so\n");
        return 2;
    }
    static const struct {
        const char *name, *fixture;
        scenario_fn fn;
    } all[] = {
        {"model-tiny", "m1-tiny-f32", sc_model},
        {"model-bf16", "m1-bf16", sc_model},
        {"model-sharded", "m1-sharded-f32", sc_model},
        {"model-m2", "m2-groups-f32", sc_model},
        {"model-q8", "m1-bf16", sc_model_q8},
        {"modes", NULL, sc_modes},
        {"tokenizer", NULL, sc_tokenizer},
        {"model-gguf", "gguf/m2-tiny-f32.gguf", sc_model}, /* vocab 96, as the token ids need */
        {"tokenizer-gguf", "fixtures/gguf/m1-tok.gguf", sc_tokenizer},
        {"scan", NULL, sc_scan},
    };
    const size_t n_all = sizeof all / sizeof all[0];
    int passed = 0, failed = 0;
    for (size_t k = 0; k < n_all; k++) {
        int chosen = argc < 2;
        for (int i = 1; i < argc; i++) chosen |= strcmp(argv[i], all[k].name) == 0;
        if (!chosen) continue;
        g_fixture = all[k].fixture;
        if (all[k].fn == sc_modes && !g_model) {
            outcome o = {0};
            g_fixture = "m1-tiny-f32";
            g_model = load(g_fixture, &o);
            if (!g_model) {
                printf("FAIL modes: cannot load the model: %s\n", o.msg);
                failed++;
                continue;
            }
        }
        if (g_model) make_tokens(g_model->dims.vocab);
        else make_tokens(64); /* below every fixture's vocabulary */
        if (run_scenario(all[k].name, all[k].fn))
            passed++;
        else
            failed++;
    }
    lm_model_free(g_model);
    printf("faultinject: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
