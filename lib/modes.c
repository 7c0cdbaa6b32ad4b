/* modes.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include "internal.h"
void lm_longmamba_params_init(lm_longmamba_params *p) { (void)p; }
void lm_decimamba_params_init(lm_decimamba_params *p) { (void)p; }
lm_status lm_session_set_vanilla(lm_session *s) { (void)s; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_set_longmamba(lm_session *s, const lm_calibration *c, const lm_longmamba_params *p) { (void)s; (void)c; (void)p; return LM_ERR_UNSUPPORTED; }
lm_status lm_session_set_decimamba(lm_session *s, const lm_decimamba_params *p) { (void)s; (void)p; return LM_ERR_UNSUPPORTED; }
lm_status lmi_modes_prepare(lm_session *s, int64_t prompt_len, lmi_forward *f) { (void)s; (void)prompt_len; (void)f; return LM_OK; }
bool lmi_modes_single_chunk(const lm_session *s) { (void)s; return false; }
void lmi_modes_free(lm_session *s) { (void)s; }
