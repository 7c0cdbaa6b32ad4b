/* model_load.c - OWNER: loader helper. Placeholder until it lands. */
#include "internal.h"
void lm_model_params_init(lm_model_params *p) { (void)p; }
lm_status lm_model_load(const char *dir, const lm_model_params *params, lm_model **out, char *err, size_t err_cap)
{ (void)dir; (void)params; (void)out; (void)err; (void)err_cap; return LM_ERR_UNSUPPORTED; }
void lm_model_free(lm_model *m) { (void)m; }
lm_status lm_model_get_info(const lm_model *m, lm_model_info *info) { (void)m; (void)info; return LM_ERR_UNSUPPORTED; }
