/* json.c - OWNER: loader helper. Placeholder until it lands. */
#include "format/json.h"
