/* safetensors.c - OWNER: loader helper. Placeholder until it lands. */
#include "format/safetensors.h"
