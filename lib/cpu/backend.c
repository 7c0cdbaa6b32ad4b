/* cpu/backend.c - OWNER: CPU/session helper. Placeholder until it lands. */
#include "internal.h"
const lmi_backend_vt lmi_cpu_backend = {.name = "cpu"};
