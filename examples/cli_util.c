/* cli_util.c - helpers shared by the longmamba subcommands. */
#include "cli_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_parse_backend(const char *s, lm_backend *out)
{
    if (strcmp(s, "auto") == 0)
        *out = LM_BACKEND_AUTO;
    else if (strcmp(s, "cpu") == 0)
        *out = LM_BACKEND_CPU;
    else if (strcmp(s, "cuda") == 0)
        *out = LM_BACKEND_CUDA;
    else
        return 0;
    return 1;
}

/* Whole file, NUL-terminated; NULL with errno set on failure. */
char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap)
            break;
        char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            errno = ENOMEM;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return NULL;
    if (bad) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int cli_has_file(const char *dir, const char *name)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return 0;
    return access(path, R_OK) == 0;
}

/* config.json of dir contains "byte_level": true. */
int cli_byte_level_config(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return 0;
    size_t n = 0;
    char *txt = cli_read_file(path, &n);
    if (!txt)
        return 0;
    int yes = 0;
    const char *p = txt;
    while (!yes && (p = strstr(p, "\"byte_level\"")) != NULL) {
        p += 12;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')
            p++;
        yes = strncmp(p, "true", 4) == 0;
    }
    free(txt);
    return yes;
}
