/* cmd_longmamba.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include <stdio.h>
#include "cli.h"
int cmd_calibrate(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not built yet\n"); return 2; }
int cmd_channels(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not built yet\n"); return 2; }
