/* session.c - OWNER: CPU/session helper. Placeholder until it lands. */
#include "internal.h"
size_t lmi_conv_state_floats(const lmi_dims *d) { (void)d; return 0; }
size_t lmi_ssm_state_floats(const lmi_dims *d) { (void)d; return 0; }
void lm_session_params_init(lm_session_params *p) { (void)p; }
lm_status lm_session_create(const lm_model *m, const lm_session_params *p, lm_session **out, char *err, size_t cap)
{ (void)m; (void)p; (void)out; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
void lm_session_free(lm_session *s) { (void)s; }
const char *lm_session_last_error(const lm_session *s) { (void)s; return ""; }
lm_status lm_session_set_length_hint(lm_session *s, int64_t n) { (void)s; (void)n; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_prefill(lm_session *s, const int32_t *t, size_t n, size_t nl, float *l, size_t lc)
{ (void)s; (void)t; (void)n; (void)nl; (void)l; (void)lc; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_decode(lm_session *s, int32_t t, float *l, size_t lc) { (void)s; (void)t; (void)l; (void)lc; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_reset(lm_session *s) { (void)s; return LM_ERR_UNSUPPORTED; }
int64_t lm_session_position(const lm_session *s) { (void)s; return -1; }
lm_status lm_session_state_size(const lm_session *s, size_t *b) { (void)s; (void)b; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_state_save(lm_session *s, void *b, size_t n, size_t *w) { (void)s; (void)b; (void)n; (void)w; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_state_load(lm_session *s, const void *b, size_t n) { (void)s; (void)b; (void)n; return LM_ERR_UNSUPPORTED; }
