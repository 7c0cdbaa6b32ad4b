/* calibration.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include "internal.h"
void lm_calib_params_init(lm_calib_params *p) { (void)p; }
lm_status lm_calibrate(const lm_model *m, const int32_t *const *w, const size_t *l, size_t n, const lm_calib_params *p, lm_calibration **out, char *err, size_t cap)
{ (void)m; (void)w; (void)l; (void)n; (void)p; (void)out; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
lm_status lm_calibration_save(const lm_calibration *c, const char *path, char *err, size_t cap) { (void)c; (void)path; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
lm_status lm_calibration_load(const char *path, const lm_model *m, lm_calibration **out, char *err, size_t cap) { (void)path; (void)m; (void)out; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
void lm_calibration_free(lm_calibration *c) { (void)c; }
lm_status lm_calibration_get_info(const lm_calibration *c, lm_calibration_info *i) { (void)c; (void)i; return LM_ERR_UNSUPPORTED; }
lm_status lm_calibration_get_buckets(const lm_calibration *c, int64_t *o, size_t cap) { (void)c; (void)o; (void)cap; return LM_ERR_UNSUPPORTED; }
lm_status lm_calibration_get_log_decay(const lm_calibration *c, int64_t l, double *o, size_t cap) { (void)c; (void)l; (void)o; (void)cap; return LM_ERR_UNSUPPORTED; }
lm_status lm_calibration_get_thresholds(const lm_calibration *c, int64_t l, int64_t b, float *o, size_t cap) { (void)c; (void)l; (void)b; (void)o; (void)cap; return LM_ERR_UNSUPPORTED; }
lm_status lm_classify_channels(const lm_calibration *c, double t, uint8_t *m, size_t mc, int64_t *cn, size_t cc, char *err, size_t cap)
{ (void)c; (void)t; (void)m; (void)mc; (void)cn; (void)cc; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
