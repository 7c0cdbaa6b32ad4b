/*
 * st_read.h - a small, defensive safetensors reader for the command-line
 * tool.  The tool links only the public library, so it carries its own
 * reader for reference files (input_ids, logits_f64, ...).
 *
 * The whole file is read into memory; every offset, shape and size in the
 * header is checked against the file before anything is handed out, so a
 * truncated or hostile file gives an error message, never a crash.
 */
#ifndef LM_ST_READ_H
#define LM_ST_READ_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;       /* owned by the st_file */
    char dtype[8];    /* "F64", "F32", "I32", ... as in the header */
    size_t elem_size; /* bytes per element */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t n_elems;
    uint64_t begin, end; /* byte range inside the data section */
} st_tensor;

typedef struct st_file {
    unsigned char *buf; /* whole file */
    size_t size;
    size_t data_off; /* 8 + header length */
    st_tensor *tensors;
    int n_tensors;
} st_file;

/* Reads and validates path.  Returns 0 on success; on failure returns -1,
 * leaves *f empty (safe to st_close) and writes a message to err. */
int st_open(const char *path, st_file *f, char *err, size_t err_cap);
void st_close(st_file *f);

/* Tensor named name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* Copies the tensor's bytes to a new malloc'd (suitably aligned) buffer;
 * NULL if out of memory.  Data is little-endian as stored. */
void *st_copy_data(const st_file *f, const st_tensor *t);

#endif
