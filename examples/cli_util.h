/* cli_util.h - helpers shared by the longmamba subcommands. */
#ifndef LM_CLI_UTIL_H
#define LM_CLI_UTIL_H
#include <stddef.h>
#include "longmamba.h"
/* "auto" | "cpu" | "cuda" -> *out; 0 if the name is unknown. */
int cli_parse_backend(const char *s, lm_backend *out);
/* Whole file, NUL-terminated (the NUL not counted); NULL with errno set. */
char *cli_read_file(const char *path, size_t *len);
/* 1 if dir/name exists. */
int cli_has_file(const char *dir, const char *name);
/* 1 if dir/config.json says "byte_level": true. */
int cli_byte_level_config(const char *dir);
#endif
