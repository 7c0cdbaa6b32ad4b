/* longmamba.c - OWNER: CLI helper. Placeholder until it lands. */
#include <stdio.h>
#include "longmamba.h"
int main(void) { printf("longmamba %s\n", lm_version_string()); return 0; }
