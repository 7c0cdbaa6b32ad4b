/* policy.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include "internal.h"
const int64_t lmi_default_buckets[] = {1000};
const size_t lmi_n_default_buckets = 1;
int64_t lmi_bucket_index(const int64_t *b, int64_t n, int64_t S) { (void)b; (void)n; (void)S; return 0; }
void lmi_channel_stats(const float *delta, int64_t L, int64_t stride, double sc, const float *A_row, int64_t N, double A_head,
                       const int64_t *buckets, int64_t n_buckets, double *scratch, double *log_decay, float *thr_out)
{ (void)delta; (void)L; (void)stride; (void)sc; (void)A_row; (void)N; (void)A_head; (void)buckets; (void)n_buckets; (void)scratch; (void)log_decay; (void)thr_out; }
int64_t lmi_deci_keep_count(int64_t L, int64_t R, double budget, int64_t min_len) { (void)budget; (void)min_len; return L - R; }
lm_status lmi_deci_select(const float *scores, int64_t L, int64_t R, int64_t K, int64_t *idx, int64_t *scratch, lmi_err *e)
{ (void)scores; (void)L; (void)R; (void)K; (void)idx; (void)scratch; (void)e; return LM_ERR_UNSUPPORTED; }
