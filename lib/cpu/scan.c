/* cpu/scan.c - OWNER: CPU/session helper. Placeholder until it lands. */
#include "internal.h"
void lmi_cpu_scan_m1(const lmi_scan_m1 *a, int n_threads) { (void)a; (void)n_threads; }
