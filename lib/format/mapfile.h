/*
 * format/mapfile.h - a whole regular file mapped read-only, or read into
 * memory (mapfile.c).
 */
#ifndef LMI_FORMAT_MAPFILE_H
#define LMI_FORMAT_MAPFILE_H

#include "internal.h"

/* Opens, checks (a regular file that fits in memory) and maps path;
 * an empty file gives LM_OK with out->addr NULL and size 0.  Messages
 * name path: cannot open (LM_ERR_MISSING when absent), not a regular
 * file, cannot map (LM_ERR_IO). */
lm_status lmi_map_file(const char *path, lmi_mapping *out, lmi_err *e);
void lmi_unmap_file(lmi_mapping *m);
/* A whole file of at most max bytes, in a NUL-terminated buffer (*out,
 * lmi_free; *len without the NUL).  Messages as lmi_map_file's, and
 * LM_ERR_FORMAT "PATH: N bytes is too large for WHAT". */
lm_status lmi_read_file(const char *path, size_t max, const char *what, char **out, size_t *len,
                        lmi_err *e);

#endif
