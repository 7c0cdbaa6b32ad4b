/*
 * test_threads.c - what lm_model_params.n_threads bounds (README:
 * "Threads and ownership").
 *
 *   - The library's own threads: a call on a model loaded with n_threads 1
 *     starts no thread (prefill, decode, batched decode, calibration, the
 *     scan with n_threads 1); with n_threads 2 a prefill does (the control:
 *     the count is real).  Counted by interposing pthread_create, which the
 *     library, libgomp and OpenBLAS all reach through the executable.
 *   - BLAS: OpenBLAS's thread count is process-wide (its pool, sized by
 *     OPENBLAS_NUM_THREADS or openblas_set_num_threads), not a per-call
 *     setting.  With it set to 1, as the README says to do for a 1-thread
 *     process, no thread but the caller gets CPU time during a 1-thread
 *     model's prefill; with 2 (where the machine has 2 cores), OpenBLAS's
 *     worker does, although the model has n_threads 1: the limitation the
 *     header documents, measured.  Built with another CBLAS: no thread
 *     but the caller works (netlib's is single-threaded).
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "longmamba.h"
#include "suite.h"
#include "testutil.h"

/* ---- pthread_create, counted ------------------------------------------------ */

/* Threads started by anything but OpenBLAS (the library, libgomp for it),
 * and by OpenBLAS: its pool is started at load and again, lazily, in a
 * forked child (Check forks each test), so its count is not the library's. */
static atomic_int n_created, n_blas_created;

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    static create_fn real;
    if (!real) real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
    if (!real) return EAGAIN;
    Dl_info di;
    if (dladdr(__builtin_return_address(0), &di) && di.dli_fname && strstr(di.dli_fname, "openblas"))
        atomic_fetch_add(&n_blas_created, 1);
    else
        atomic_fetch_add(&n_created, 1);
    return real(t, a, fn, arg);
}

static lm_model *load(int n_threads)
{
    char dir[512], err[256];
    tu_fixture_dir(dir, sizeof dir, "m1-tiny-f32");
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = n_threads;
    lm_model *m = NULL;
    ck_assert_msg(lm_model_load(dir, &p, &m, err, sizeof err) == LM_OK, "%s", err);
    return m;
}

#define N_TOK 4096

/* Threads started by one prefill of N_TOK tokens in 512-token chunks. */
static int prefill_creates(lm_model *m, const int32_t *ids)
{
    lm_session *s = NULL;
    char err[256];
    ck_assert_int_eq(lm_session_create(m, NULL, &s, err, sizeof err), LM_OK);
    float logits[96];
    /* a warm-up call: pools that persist (libgomp's, when OpenBLAS runs
     * on OpenMP) are started by it, not counted */
    ck_assert_int_eq(lm_session_prefill(s, ids, 1024, 1, logits, 96), LM_OK);
    ck_assert_int_eq(lm_session_reset(s), LM_OK);
    const int before = atomic_load(&n_created);
    ck_assert_int_eq(lm_session_prefill(s, ids, N_TOK, 1, logits, 96), LM_OK);
    const int made = atomic_load(&n_created) - before;
    lm_session_free(s);
    return made;
}

START_TEST(one_thread_starts_no_thread)
{
    int32_t *ids = tu_tokens(3, N_TOK, 96);
    lm_model *m1 = load(1);
    ck_assert_int_eq(prefill_creates(m1, ids), 0);

    /* decode, batched decode, calibration */
    lm_session *a = NULL, *b = NULL;
    char err[256];
    ck_assert_int_eq(lm_session_create(m1, NULL, &a, err, sizeof err), LM_OK);
    ck_assert_int_eq(lm_session_create(m1, NULL, &b, err, sizeof err), LM_OK);
    float lg[2 * 96];
    int before = atomic_load(&n_created);
    for (int t = 0; t < 64; t++) ck_assert_int_eq(lm_session_decode(a, ids[t], lg, 96), LM_OK);
    lm_session *const both[2] = {a, b};
    for (int t = 0; t < 64; t++)
        ck_assert_int_eq(lm_session_decode_batch(both, 2, ids + 2 * t, lg, 2 * 96), LM_OK);
    const int32_t *wins[2] = {ids, ids + 1024};
    const size_t lens[2] = {1024, 1024};
    lm_calibration *cal = NULL;
    ck_assert_msg(lm_calibrate(m1, wins, lens, 2, NULL, &cal, err, sizeof err) == LM_OK, "%s", err);
    ck_assert_int_eq(atomic_load(&n_created) - before, 0);
    lm_calibration_free(cal);
    lm_session_free(a);
    lm_session_free(b);

    /* the scan on its own, n_threads 1 */
    enum { L = 2048, E = 64, N = 16 };
    float *buf = calloc((size_t)L * E * 4 + (size_t)L * N * 2 + (size_t)E * N, sizeof(float));
    lm_scan_args sa;
    lm_scan_args_init(&sa);
    sa.length = L;
    sa.channels = E;
    sa.state_size = N;
    sa.u = buf;
    sa.delta = buf + (size_t)L * E;
    sa.y = (float *)sa.delta + (size_t)L * E;
    sa.B = sa.y + (size_t)L * E;
    sa.C = sa.B + (size_t)L * N;
    sa.A = sa.C + (size_t)L * N;
    sa.n_threads = 1;
    before = atomic_load(&n_created);
    ck_assert_int_eq(lm_scan_filtered(&sa, err, sizeof err), LM_OK);
    ck_assert_int_eq(atomic_load(&n_created) - before, 0);
    free(buf);

    /* the control: 2 threads do start threads of the library's own
     * (short-lived ones, unless OpenBLAS runs on OpenMP: then one pool,
     * started once, and a second prefill starts none) */
    lm_model *m2 = load(2);
    const int made = prefill_creates(m2, ids);
#ifdef OPENBLAS_VERSION
    if (openblas_get_parallel() == 2)
        ck_assert_int_ge(made, 0);
    else
#endif
        ck_assert_int_gt(made, 0);
    lm_model_free(m2);
    lm_model_free(m1);
    free(ids);
}
END_TEST

/* ---- CPU time per thread ----------------------------------------------------- */

#define MAX_TASKS 512

typedef struct cpu_times {
    int n;
    long tid[MAX_TASKS];
    unsigned long long ticks[MAX_TASKS]; /* utime + stime */
} cpu_times;

static void read_times(cpu_times *c)
{
    c->n = 0;
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL && c->n < MAX_TASKS) {
        if (de->d_name[0] == '.') continue;
        char path[300], line[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* exited meanwhile */
        const size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = 0;
        const char *p = strrchr(line, ')');
        if (!p) continue;
        /* fields after the name: 3 state ... 14 utime 15 stime */
        unsigned long long ut = 0, st = 0;
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
            continue;
        c->tid[c->n] = atol(de->d_name);
        c->ticks[c->n++] = ut + st;
    }
    closedir(d);
}

/* CPU ticks gained between a and b by threads other than `self`. */
static unsigned long long others_gained(const cpu_times *a, const cpu_times *b, long self)
{
    unsigned long long sum = 0;
    for (int i = 0; i < b->n; i++) {
        if (b->tid[i] == self) continue;
        unsigned long long was = 0;
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i]) was = a->ticks[j];
        sum += b->ticks[i] > was ? b->ticks[i] - was : 0;
    }
    return sum;
}

/* Ticks other threads gain during prefills of a 1-thread model (about a
 * second of work on the caller). */
static unsigned long long blas_others(lm_model *m, const int32_t *ids, unsigned long long *own)
{
    const long self = (long)syscall(SYS_gettid);
    lm_session *s = NULL;
    char err[256];
    ck_assert_int_eq(lm_session_create(m, NULL, &s, err, sizeof err), LM_OK);
    float logits[96];
    cpu_times a, b;
    /* a warm-up call, then let OpenBLAS's workers (re)started by it or by
     * openblas_set_num_threads finish their idle spin (~0.1 s) */
    ck_assert_int_eq(lm_session_prefill(s, ids, 512, 1, logits, 96), LM_OK);
    usleep(400000);
    read_times(&a);
    for (int r = 0; r < 8; r++) {
        ck_assert_int_eq(lm_session_reset(s), LM_OK);
        ck_assert_int_eq(lm_session_prefill(s, ids, N_TOK, 1, logits, 96), LM_OK);
    }
    read_times(&b);
    lm_session_free(s);
    *own = 0;
    for (int i = 0; i < b.n; i++)
        if (b.tid[i] == self)
            for (int j = 0; j < a.n; j++)
                if (a.tid[j] == self) *own = b.ticks[i] - a.ticks[j];
    return others_gained(&a, &b, self);
}

static void keep_log(void *user, lm_log_level level, const char *msg)
{
    if (level == LM_LOG_INFO && strstr(msg, "OpenBLAS runs its GEMMs on"))
        snprintf((char *)user, 256, "%s", msg);
}

/* The log line a model with n_threads 1 writes at load ("" if none). */
static void load_log(char *seen)
{
    char dir[512], err[256];
    tu_fixture_dir(dir, sizeof dir, "m1-tiny-f32");
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    p.log_fn = keep_log;
    p.log_user = seen;
    p.log_level = LM_LOG_INFO;
    seen[0] = 0;
    lm_model *m = NULL;
    ck_assert_msg(lm_model_load(dir, &p, &m, err, sizeof err) == LM_OK, "%s", err);
    lm_model_free(m);
}

START_TEST(blas_threads_are_process_wide)
{
#ifndef OPENBLAS_VERSION
    /* another CBLAS (-Dblas=cblas; netlib's is single-threaded): no thread
     * but the caller works during a 1-thread model's prefill */
    int32_t *ids = tu_tokens(5, N_TOK, 96);
    lm_model *m = load(1);
    unsigned long long own = 0;
    const unsigned long long one = blas_others(m, ids, &own);
    ck_assert_msg(own >= 5, "the caller itself ran only %llu ticks", own);
    ck_assert_msg(one == 0, "n_threads 1: other threads ran %llu ticks", one);
    lm_model_free(m);
    free(ids);
#else
    int32_t *ids = tu_tokens(5, N_TOK, 96);
    lm_model *m = load(1);
    unsigned long long own = 0;
    /* the README's recipe for a 1-thread process */
    openblas_set_num_threads(1);
    const unsigned long long one = blas_others(m, ids, &own);
    char seen[256];
    load_log(seen);
    ck_assert_msg(seen[0] == 0, "OpenBLAS at 1 thread, yet: %s", seen);
    ck_assert_msg(own >= 5, "the caller itself ran only %llu ticks: too little work to measure", own);
    ck_assert_msg(one == 0, "OpenBLAS at 1 thread, n_threads 1: other threads ran %llu ticks", one);
    /* the control: OpenBLAS's pool at 2 threads works for a 1-thread model */
    if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
        openblas_set_num_threads(2);
        if (openblas_get_num_threads() >= 2) {
            const unsigned long long two = blas_others(m, ids, &own);
            ck_assert_msg(two > 0, "OpenBLAS at 2 threads: its worker ran no tick (caller %llu)",
                          own);
            load_log(seen);
            ck_assert_msg(strstr(seen, "n_threads 1 bounds the library's own threads; OpenBLAS "
                                       "runs its GEMMs on 2 threads"),
                          "no INFO line about OpenBLAS's threads: \"%s\"", seen);
        }
    }
    lm_model_free(m);
    free(ids);
#endif
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    add_tcase(s, "threads", 300,
              (const TTest *[]){one_thread_starts_no_thread, blas_threads_are_process_wide, NULL});
    return run_suite(s);
}
