/*
 * fuzz.h - shared by the libFuzzer targets in fuzz/.  Each target defines
 * LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize); built with
 * clang -fsanitize=fuzzer by fuzz/run.sh, or with replay.c's main() by
 * Meson to replay the committed corpus and regressions as a test.
 *
 * FUZZ_CHECK is the targets' own invariant check: a violation traps, which
 * libFuzzer (and the replay test) report as a crash.
 */
#ifndef LM_FUZZ_H
#define LM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA (test/data) must be defined"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* A per-process scratch directory (created on first use, removed at exit
 * with the files written into it). */
static char fz_dir[256];
static char fz_files[8][320];
static int fz_n_files;

static void fz_cleanup(void)
{
    for (int i = 0; i < fz_n_files; i++) unlink(fz_files[i]);
    if (fz_dir[0]) rmdir(fz_dir);
}

static inline const char *fz_scratch_dir(void)
{
    if (!fz_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz_dir, sizeof fz_dir, "%s/lmfuzz.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup);
    }
    return fz_dir;
}

/* Writes data to dir/name (replacing it); returns 0 on success. */
static inline int fz_write(const char *name, const uint8_t *data, size_t size, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", fz_scratch_dir(), name);
    int known = 0;
    for (int i = 0; i < fz_n_files; i++) known |= strcmp(fz_files[i], path) == 0;
    if (!known && fz_n_files < 8) snprintf(fz_files[fz_n_files++], sizeof fz_files[0], "%s", path);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    int bad = fclose(f) != 0 || w != size;
    return bad ? -1 : 0;
}

/* Links dir/name to target (absolute path); returns 0 on success. */
static inline int fz_symlink(const char *target, const char *name)
{
    char path[320];
    snprintf(path, sizeof path, "%s/%s", fz_scratch_dir(), name);
    unlink(path);
    if (symlink(target, path) != 0) return -1;
    if (fz_n_files < 8) snprintf(fz_files[fz_n_files++], sizeof fz_files[0], "%s", path);
    return 0;
}

#endif
