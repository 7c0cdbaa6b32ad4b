/*
 * format/mapfile.c - a whole regular file mapped read-only, for the
 * checkpoint readers (safetensors.c, gguf.c), or read into memory, for
 * config.json, shard indexes and tokenizer.json: one place for the open /
 * stat / map steps and their messages.
 */
#define _GNU_SOURCE
#include "format/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

lm_status lmi_map_file(const char *path, lmi_mapping *out, lmi_err *e)
{
    memset(out, 0, sizeof *out);
    char eb[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return lmi_fail(e, err == ENOENT ? LM_ERR_MISSING : LM_ERR_IO, "%s: cannot open: %s", path,
                        strerror_r(err, eb, sizeof eb));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return lmi_fail(e, LM_ERR_IO, "%s: cannot stat: %s", path, strerror_r(err, eb, sizeof eb));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lmi_fail(e, LM_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return lmi_fail(e, LM_ERR_IO, "%s: file too large to map", path);
    }
    const size_t size = (size_t)sb.st_size;
    if (size == 0) { /* nothing to map: the caller reports it as too short */
        close(fd);
        return LM_OK;
    }
    void *addr = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_err = errno;
    close(fd);
    if (addr == MAP_FAILED)
        return lmi_fail(e, LM_ERR_IO, "%s: cannot map: %s", path, strerror_r(map_err, eb, sizeof eb));
    out->addr = addr;
    out->size = size;
    return LM_OK;
}

void lmi_unmap_file(lmi_mapping *m)
{
    if (m->addr) munmap(m->addr, m->size);
    memset(m, 0, sizeof *m);
}

lm_status lmi_read_file(const char *path, size_t max, const char *what, char **out, size_t *len,
                        lmi_err *e)
{
    *out = NULL;
    *len = 0;
    lmi_mapping m;
    lm_status st = lmi_map_file(path, &m, e);
    if (st != LM_OK)
        return st;
    if (m.size > max) {
        lmi_unmap_file(&m);
        return lmi_fail(e, LM_ERR_FORMAT, "%s: %lld bytes is too large for %s", path,
                        (long long)m.size, what);
    }
    char *buf = lmi_alloc_raw(m.size + 1, 1);
    if (!buf) {
        lmi_unmap_file(&m);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory reading %s", path);
    }
    if (m.size)
        memcpy(buf, m.addr, m.size);
    buf[m.size] = '\0';
    *out = buf;
    *len = m.size;
    lmi_unmap_file(&m);
    return LM_OK;
}
