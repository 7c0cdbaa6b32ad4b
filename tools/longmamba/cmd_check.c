/*
 * cmd_check.c - `longmamba check`: the logits of a model against a
 * reference file (input_ids int32/int64 [B,L], logits_f64 float64 [B,L,V])
 * read with the library's safetensors reader (lm_tensor_file_*).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opt.h"
#include "cli_util.h"
#include "longmamba.h"

static const cli_cmd check_cmd = {
    "check",
    "check MODEL_DIR REFERENCE.safetensors [--tol X] [--backend B] [--threads N]\n"
    "           [--weights W] [--chunk N]",
    "Runs each row of input_ids (int32 [B,L]) as one prefill and compares the\n"
    "all-position logits with logits_f64 (float64 [B,L,V]); prints the relative\n"
    "error ||out-ref||/||ref|| of each row and, last, max_rel_err=...; exit 0 iff\n"
    "every row <= tol.\n",
    NULL, 0};

/* The reference: B rows of L ids and their [L][V] float64 logits. */
typedef struct reference {
    int64_t B, L, V;
    int32_t *ids;
    double *want;
} reference;

/* Dtype and shape of name, which must have ndim dims: 0, or 1 after a message. */
static int ref_tensor(lm_tensor_file *f, const char *name, int ndim, lm_tensor_info *ti)
{
    char err[512] = "";
    ti->struct_size = sizeof *ti;
    lm_status st = lm_tensor_file_get_info(f, name, ti, err, sizeof err);
    if (st != LM_OK)
        return cli_fail("reference: needs tensors input_ids and logits_f64 (%s)", err);
    if (ti->ndim != ndim)
        return cli_fail("reference: %s must have %d dims, found %s with %d dims", name, ndim,
                        lm_dtype_name(ti->dtype), (int)ti->ndim);
    return 0;
}

/* Reads and checks path into r: 0, or 1 after a message. */
static int load_reference(const char *path, reference *r)
{
    char err[512] = "";
    lm_tensor_file *f = NULL;
    lm_status st = lm_tensor_file_open(path, &f, err, sizeof err);
    if (st != LM_OK)
        return cli_fail("reference: %s", err);
    lm_tensor_info ti, tl;
    int rc = 1;
    if (ref_tensor(f, "input_ids", 2, &ti) || ref_tensor(f, "logits_f64", 3, &tl))
        goto out;
    if (ti.dtype != LM_DTYPE_I32 && ti.dtype != LM_DTYPE_I64) {
        cli_fail("reference: input_ids must be int32 [B,L], found %s", lm_dtype_name(ti.dtype));
        goto out;
    }
    if (tl.dtype != LM_DTYPE_F64) {
        cli_fail("reference: logits_f64 must be float64 [B,L,V], found %s",
                 lm_dtype_name(tl.dtype));
        goto out;
    }
    r->B = ti.shape[0], r->L = ti.shape[1], r->V = tl.shape[2];
    if (tl.shape[0] != r->B || tl.shape[1] != r->L) {
        cli_fail("reference: logits_f64 is [%lld,%lld,%lld] but input_ids is [%lld,%lld]",
                 (long long)tl.shape[0], (long long)tl.shape[1], (long long)r->V, (long long)r->B,
                 (long long)r->L);
        goto out;
    }
    if (r->B < 1 || r->L < 1 || r->V < 1) {
        cli_fail("reference: empty tensors ([%lld,%lld,%lld])", (long long)r->B, (long long)r->L,
                 (long long)r->V);
        goto out;
    }
    r->ids = malloc((size_t)ti.n_elements * sizeof *r->ids);
    r->want = malloc((size_t)tl.n_elements * sizeof *r->want);
    if (!r->ids || !r->want) {
        cli_fail("out of memory");
        goto out;
    }
    if ((st = lm_tensor_file_read_i32(f, "input_ids", r->ids, (size_t)ti.n_elements, err,
                                      sizeof err)) != LM_OK ||
        (st = lm_tensor_file_read_f64(f, "logits_f64", r->want, (size_t)tl.n_elements, err,
                                      sizeof err)) != LM_OK) {
        cli_fail_status("reference", st, err);
        goto out;
    }
    for (int64_t i = 0; i < r->B * r->L; i++)
        if (r->ids[i] < 0) {
            cli_fail("reference: input_ids[%lld][%lld] = %d is not a token id",
                     (long long)(i / r->L), (long long)(i % r->L), (int)r->ids[i]);
            goto out;
        }
    rc = 0;
out:
    lm_tensor_file_free(f);
    return rc;
}

/* ||got - want|| / ||want|| (or ||got - want|| when want is 0) and the
 * largest absolute difference (NaN when one is NaN). */
static double rel_error(const float *got, const double *want, size_t n, double *max_abs)
{
    double num = 0.0, den = 0.0;
    *max_abs = 0.0;
    for (size_t k = 0; k < n; k++) {
        double d = (double)got[k] - want[k];
        num += d * d;
        den += want[k] * want[k];
        double a = fabs(d);
        if (!(a <= *max_abs)) /* also catches NaN */
            *max_abs = a;
    }
    return den > 0.0 ? sqrt(num) / sqrt(den) : sqrt(num);
}

/* Every row as one prefill: 0 all within tol, 1 otherwise or on error. */
static int compare_rows(lm_session *s, const reference *r, double tol, float *got)
{
    const size_t n_out = (size_t)(r->L * r->V);
    double worst = 0.0;
    int all_ok = 1;
    for (int64_t b = 0; b < r->B; b++) {
        lm_status st = lm_session_reset(s);
        double t0 = cli_seconds();
        if (st == LM_OK)
            st = lm_session_prefill(s, r->ids + b * r->L, (size_t)r->L, (size_t)r->L, got, n_out);
        double dt = cli_seconds() - t0;
        if (st != LM_OK) {
            char what[64];
            snprintf(what, sizeof what, "row %lld prefill", (long long)b);
            return cli_fail_status(what, st, lm_session_last_error(s));
        }
        double max_abs;
        double rel = rel_error(got, r->want + b * r->L * r->V, n_out, &max_abs);
        int ok = rel <= tol; /* NaN compares false: fails */
        if (!ok)
            all_ok = 0;
        if (isnan(rel) || rel > worst)
            worst = isnan(worst) ? worst : rel;
        printf("row %lld: tokens=%lld rel_err=%.3e max_abs_err=%.3e %.1f tok/s %s\n", (long long)b,
               (long long)r->L, rel, max_abs, dt > 0 ? (double)r->L / dt : 0.0, ok ? "ok" : "FAIL");
        fflush(stdout);
    }
    printf("max_rel_err=%.3e\n", worst);
    return all_ok ? 0 : 1;
}

int cmd_check(int argc, char **argv)
{
    model_opts mo = {LM_BACKEND_AUTO, 0, 0, LM_WEIGHTS_AS_STORED};
    double tol = 1e-4;
    const cli_opt opts[] = {{"--tol", NULL, OPT_NUM, &tol, "a positive number", .lo = 0.0,
                             .hi = INFINITY, .lo_open = 1, .arg = "X",
                             .help = "tolerance on the relative error (default 1e-4)"},
                            CLI_OPT_BACKEND(&mo.backend),
                            CLI_OPT_THREADS(&mo.threads),
                            CLI_OPT_WEIGHTS(&mo.weights),
                            CLI_OPT_CHUNK(&mo.chunk)};
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    int rc = cli_opt_parse1(&check_cmd, opts, CLI_N(opts), argc, argv, pos, 2, &n_pos);
    if (rc)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (n_pos != 2)
        return cli_opt_usage(&check_cmd, "MODEL_DIR and REFERENCE.safetensors are required");

    /* The reference first: a bad file should not cost a model load. */
    reference r = {0, 0, 0, NULL, NULL};
    lm_model *model = NULL;
    lm_session *s = NULL;
    float *got = NULL;
    lm_model_info info;
    rc = 1;
    if (load_reference(pos[1], &r) || cli_load_model(pos[0], mo.backend, mo.threads, mo.weights, &model, &info))
        goto out;
    if (info.vocab_size != r.V) {
        cli_fail("reference has vocabulary %lld but the model has %lld rows", (long long)r.V,
                 (long long)info.vocab_size);
        goto out;
    }
    if (cli_create_session(model, mo.chunk, NULL, NULL, &s))
        goto out;
    got = malloc((size_t)(r.L * r.V) * sizeof *got);
    if (!got) {
        cli_fail("out of memory for %lld x %lld logits", (long long)r.L, (long long)r.V);
        goto out;
    }
    printf("model %s: %s, %lld layers, vocab %lld, backend %s\n", pos[0], cli_arch_name(info.arch),
           (long long)info.n_layer, (long long)info.vocab_size, lm_backend_name(info.backend));
    printf("reference %s: %lld rows x %lld tokens, tol %.3e\n", pos[1], (long long)r.B,
           (long long)r.L, tol);
    fflush(stdout);
    rc = compare_rows(s, &r, tol, got);
out:
    lm_session_free(s);
    lm_model_free(model);
    free(got);
    free(r.want);
    free(r.ids);
    return rc;
}
