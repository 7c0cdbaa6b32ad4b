/* scan.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include "internal.h"
void lm_scan_args_init(lm_scan_args *a) { (void)a; }
lm_status lm_scan_filtered(const lm_scan_args *a, char *err, size_t cap) { (void)a; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
