/*
 * lmref_driver - runs LongMamba/DeciMamba library functions on test cases
 * written by test/test_longmamba_ref.py and writes the results back, so the
 * Python test can compare them with test/reference/longmamba_ref.py.
 *
 *   lmref_driver MODE IN OUT        MODE: scan stats bucket deci classify
 *
 * Files are raw little-endian streams: IN is an int64 case count followed by
 * the cases; OUT receives each case's results in order.  Field order per
 * mode is documented at each run_* function and mirrored in the Python test.
 * A test program, so it may print and exit on malformed input.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *g_in, *g_out;

static void die(const char *what)
{
    fprintf(stderr, "lmref_driver: %s\n", what);
    exit(2);
}

static void rd(void *p, size_t size, size_t n)
{
    if (n && fread(p, size, n, g_in) != n)
        die("short read");
}

static int64_t rd_i64(void)
{
    int64_t v;
    rd(&v, sizeof v, 1);
    return v;
}

static double rd_f64(void)
{
    double v;
    rd(&v, sizeof v, 1);
    return v;
}

static void *xalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("out of memory");
    return p;
}

static float *rd_f32s(size_t n)
{
    float *p = xalloc(n, sizeof *p);
    rd(p, sizeof *p, n);
    return p;
}

static void wr(const void *p, size_t size, size_t n)
{
    if (n && fwrite(p, size, n, g_out) != n)
        die("short write");
}

static void wr_i64(int64_t v)
{
    wr(&v, sizeof v, 1);
}

static void wr_msg(const char *msg)
{
    size_t n = strlen(msg);
    wr_i64((int64_t)n);
    wr(msg, 1, n);
}

static void check_dim(int64_t v, int64_t max)
{
    if (v < 0 || v > max)
        die("dimension out of range");
}

enum {
    SCAN_Z = 1,
    SCAN_D = 2,
    SCAN_BIAS = 4,
    SCAN_MASK = 8,
    SCAN_STATE_IN = 16,
    SCAN_STATE_OUT = 32,
    SCAN_ALIAS = 64   /* state_in and state_out are the same buffer */
};

/* scan: i64 L E N delta_is_dt flags n_threads; f32 u[L*E] delta[L*E]
 * A[E*N] B[L*N] C[L*N] [D[E]] [z[L*E]] [bias[E]] [u8 mask[E], f32 thr[E]]
 * [state_in[E*N]].  Out: i64 status, msg, f32 y[L*E], f32 state[E*N]. */
static void run_scan(void)
{
    int64_t L = rd_i64(), E = rd_i64(), N = rd_i64();
    int64_t is_dt = rd_i64(), flags = rd_i64(), nt = rd_i64();
    check_dim(L, 1 << 24);
    check_dim(E, 1 << 16);
    check_dim(N, 1 << 10);
    size_t le = (size_t)(L * E), en = (size_t)(E * N), ln = (size_t)(L * N);
    float *u = rd_f32s(le), *delta = rd_f32s(le), *A = rd_f32s(en);
    float *B = rd_f32s(ln), *C = rd_f32s(ln);
    float *D = (flags & SCAN_D) ? rd_f32s((size_t)E) : NULL;
    float *z = (flags & SCAN_Z) ? rd_f32s(le) : NULL;
    float *bias = (flags & SCAN_BIAS) ? rd_f32s((size_t)E) : NULL;
    uint8_t *mask = NULL;
    float *thr = NULL;
    if (flags & SCAN_MASK) {
        mask = xalloc((size_t)E, 1);
        rd(mask, 1, (size_t)E);
        thr = rd_f32s((size_t)E);
    }
    float *s_in = (flags & SCAN_STATE_IN) ? rd_f32s(en) : NULL;
    float *sout = xalloc(en, sizeof(float));
    float *y = xalloc(le, sizeof(float));
    for (size_t i = 0; i < le; i++)
        y[i] = NAN;   /* unwritten outputs must show */
    for (size_t i = 0; i < en; i++)
        sout[i] = NAN;

    lm_scan_args a;
    lm_scan_args_init(&a);
    a.length = L;
    a.channels = E;
    a.state_size = N;
    a.u = u;
    a.delta = delta;
    a.delta_is_dt = (int32_t)is_dt;
    a.dt_bias = bias;
    a.A = A;
    a.B = B;
    a.C = C;
    a.D = D;
    a.z = z;
    a.thresholds = thr;
    a.global_mask = mask;
    a.y = y;
    a.n_threads = (int32_t)nt;
    if (flags & SCAN_ALIAS) {
        if (s_in)
            memcpy(sout, s_in, en * sizeof(float));
        else
            memset(sout, 0, en * sizeof(float));
        a.state_in = sout;
        a.state_out = sout;
    } else {
        a.state_in = s_in;
        a.state_out = (flags & SCAN_STATE_OUT) ? sout : NULL;
    }
    char err[512] = "";
    lm_status st = lm_scan_filtered(&a, err, sizeof err);
    wr_i64((int64_t)st);
    wr_msg(err);
    wr(y, sizeof(float), le);
    wr(sout, sizeof(float), en);
    free(u); free(delta); free(A); free(B); free(C); free(D); free(z); free(bias);
    free(mask); free(thr); free(s_in); free(sout); free(y);
}

/* stats: i64 L stride N n_buckets; f64 sc A_head; f32 delta[(L-1)*stride+1]
 * f32 A_row[N]; i64 buckets[n_buckets].  Out: f64 log_decay, f32 thr[nb]. */
static void run_stats(void)
{
    int64_t L = rd_i64(), stride = rd_i64(), N = rd_i64(), nb = rd_i64();
    double sc = rd_f64(), A_head = rd_f64();
    check_dim(L - 1, 1 << 24);
    check_dim(stride - 1, 1 << 16);
    check_dim(N, 1 << 10);
    check_dim(nb, 1 << 10);
    size_t nd = (size_t)((L - 1) * stride + 1);
    float *delta = rd_f32s(nd);
    float *A_row = N ? rd_f32s((size_t)N) : NULL;
    int64_t *buckets = xalloc((size_t)nb, sizeof *buckets);
    rd(buckets, sizeof *buckets, (size_t)nb);
    double *scratch = xalloc((size_t)(2 * L), sizeof *scratch);
    float *thr = xalloc((size_t)nb, sizeof *thr);
    for (int64_t j = 0; j < nb; j++)
        thr[j] = NAN;
    double log_decay = NAN;
    lmi_channel_stats(delta, L, stride, sc, A_row, N, A_head, buckets, nb, scratch,
                      &log_decay, thr);
    wr(&log_decay, sizeof log_decay, 1);
    wr(thr, sizeof *thr, (size_t)nb);
    free(delta); free(A_row); free(buckets); free(scratch); free(thr);
}

/* bucket: i64 n_buckets S buckets[n].  Out: i64 index. */
static void run_bucket(void)
{
    int64_t nb = rd_i64(), S = rd_i64();
    check_dim(nb, 1 << 16);
    int64_t *b = xalloc((size_t)nb, sizeof *b);
    rd(b, sizeof *b, (size_t)nb);
    wr_i64(lmi_bucket_index(b, nb, S));
    free(b);
}

/* deci: i64 L R min_len K_sel; f64 budget; f32 scores[L].
 * Out: i64 K (keep count), i64 status, msg, i64 idx[K_sel + R] (selection
 * run with K_sel, so selection is tested independently of the count). */
static void run_deci(void)
{
    int64_t L = rd_i64(), R = rd_i64(), min_len = rd_i64(), Ksel = rd_i64();
    double budget = rd_f64();
    check_dim(L, 1 << 24);
    check_dim(R, L);
    check_dim(Ksel, L - R);
    float *scores = rd_f32s((size_t)L);
    int64_t K = lmi_deci_keep_count(L, R, budget, min_len);
    size_t n_idx = (size_t)(Ksel + R);
    int64_t *idx = xalloc(n_idx, sizeof *idx);
    int64_t *scratch = xalloc((size_t)L, sizeof *scratch);
    for (size_t i = 0; i < n_idx; i++)
        idx[i] = -1;
    lmi_err e;
    e.msg[0] = '\0';
    lm_status st = lmi_deci_select(scores, L, R, Ksel, idx, scratch, &e);
    wr_i64(K);
    wr_i64((int64_t)st);
    wr_msg(e.msg);
    wr(idx, sizeof *idx, n_idx);
    free(scores); free(idx); free(scratch);
}

/* classify: i64 n_layer n_channels mask_cap counts_cap want_counts; f64 theta;
 * f64 log_decay[n_layer * n_channels].
 * Out: i64 status, msg, u8 mask[n_layer*n_channels], i64 counts[n_layer]. */
static void run_classify(void)
{
    int64_t nl = rd_i64(), nc = rd_i64(), mask_cap = rd_i64(), counts_cap = rd_i64();
    int64_t want_counts = rd_i64();
    double theta = rd_f64();
    check_dim(nl, 1 << 12);
    check_dim(nc, 1 << 20);
    size_t n = (size_t)(nl * nc);
    double *ld = xalloc(n, sizeof *ld);
    rd(ld, sizeof *ld, n);
    check_dim(mask_cap, (int64_t)n);
    check_dim(counts_cap, nl);

    int64_t bucket = 4096;
    float *thr = xalloc(n, sizeof *thr);
    struct lm_calibration cal;
    memset(&cal, 0, sizeof cal);
    cal.arch = LM_ARCH_MAMBA1;
    cal.n_layer = nl;
    cal.n_channels = nc;
    cal.calib_length = 2000;
    cal.n_windows = 1;
    cal.clamp = 0.0;
    cal.agg = LM_CALIB_AGG_MAX;
    cal.fingerprint = 0;
    cal.n_buckets = 1;
    cal.buckets = &bucket;
    cal.log_decay = ld;
    cal.thr = thr;

    uint8_t *mask = xalloc(n, 1);
    memset(mask, 0xAA, n);
    int64_t *counts = xalloc((size_t)nl, sizeof *counts);
    for (int64_t i = 0; i < nl; i++)
        counts[i] = -7;
    char err[512] = "";
    lm_status st = lm_classify_channels(&cal, theta, mask, (size_t)mask_cap,
                                        want_counts ? counts : NULL, (size_t)counts_cap,
                                        err, sizeof err);
    wr_i64((int64_t)st);
    wr_msg(err);
    wr(mask, 1, n);
    wr(counts, sizeof *counts, (size_t)nl);
    free(ld); free(thr); free(mask); free(counts);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: lmref_driver scan|stats|bucket|deci|classify IN OUT\n");
        return 2;
    }
    void (*run)(void) = NULL;
    if (!strcmp(argv[1], "scan"))
        run = run_scan;
    else if (!strcmp(argv[1], "stats"))
        run = run_stats;
    else if (!strcmp(argv[1], "bucket"))
        run = run_bucket;
    else if (!strcmp(argv[1], "deci"))
        run = run_deci;
    else if (!strcmp(argv[1], "classify"))
        run = run_classify;
    else
        die("unknown mode");
    g_in = fopen(argv[2], "rb");
    g_out = fopen(argv[3], "wb");
    if (!g_in || !g_out)
        die("cannot open files");
    int64_t n = rd_i64();
    for (int64_t i = 0; i < n; i++)
        run();
    if (fclose(g_out) != 0)
        die("close failed");
    fclose(g_in);
    return 0;
}
