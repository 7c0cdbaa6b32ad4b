/* policy.c - OWNER: LongMamba helper. Placeholder until it lands. */
#include "internal.h"
