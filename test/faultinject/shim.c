/*
 * shim.c - allocation fault injection, loaded with LD_PRELOAD (test only:
 * the library itself has no switch and no global state for this).
 *
 * Wraps malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign,
 * valloc and free (forwarding to glibc's __libc_* entry points, so it
 * needs no dlsym and works under valgrind, whose replacements of those
 * entry points stay in effect).  While armed it counts allocation calls
 * - from every caller: the library, libc on its behalf (fopen, newlocale),
 * PCRE2, utf8proc - fails exactly the N-th one (returns NULL / ENOMEM),
 * and remembers every block allocated while armed until it is freed, so a
 * driver can check for leaks after each run.
 *
 * Calls made by the OpenMP runtime (libgomp) are neither counted nor
 * tracked: libgomp ends the process when its allocation fails (by design,
 * outside the library's control), and it keeps its thread teams cached.
 *
 * Control, either
 *   - from a driver: lmfi_arm(n), lmfi_pause(1/0) and
 *     lmfi_disarm(&calls, &live, &first_leak), found with
 *     dlsym(RTLD_DEFAULT, ...), or
 *   - for any program: LMFI_FAIL_AT=N in the environment arms the shim at
 *     start-up (the N-th allocation of the process fails).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

/* Exported control interface. */
void lmfi_arm(long fail_at);
long lmfi_disarm(long *calls, long *live, long *first_leak);
void lmfi_pause(int paused);

static atomic_flag lock = ATOMIC_FLAG_INIT;
static int armed;
static int paused; /* armed, but neither counting nor failing for now */
static long fail_at; /* 0: count and track only */
static long calls;
static int fired;

/* Blocks allocated while armed: open addressing, TOMB marks a freed slot. */
#define SLOTS (1u << 18) /* a run makes at most a few thousand allocations */
#define TOMB ((void *)1)
typedef struct slot {
    void *p;
    long idx; /* which allocation call made it */
} slot;
static slot table[SLOTS];
static long used; /* slots holding a block or a tombstone */
static long live;
static int overflow;

/* Code ranges of libgomp's loaded segments (set by lmfi_arm). */
#define MAX_RANGES 8
static uintptr_t ex_lo[MAX_RANGES], ex_hi[MAX_RANGES];
static int n_ex;

static int find_exempt(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "libgomp")) return 0;
    for (int i = 0; i < info->dlpi_phnum && n_ex < MAX_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        ex_lo[n_ex] = info->dlpi_addr + ph->p_vaddr;
        ex_hi[n_ex] = ex_lo[n_ex] + ph->p_memsz;
        n_ex++;
    }
    return 0;
}

static int exempt(const void *caller)
{
    uintptr_t a = (uintptr_t)caller;
    for (int i = 0; i < n_ex; i++)
        if (a >= ex_lo[i] && a < ex_hi[i]) return 1;
    return 0;
}

static void lock_(void)
{
    while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) {
    }
}
static void unlock_(void) { atomic_flag_clear_explicit(&lock, memory_order_release); }

static size_t hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & (SLOTS - 1);
}

static void track(void *p, long idx)
{
    if (!p) return;
    if (used >= (long)(SLOTS / 4 * 3)) {
        overflow = 1;
        return;
    }
    size_t i = hash(p);
    while (table[i].p && table[i].p != TOMB) i = (i + 1) & (SLOTS - 1);
    table[i].p = p;
    table[i].idx = idx;
    used++;
    live++;
}

static void untrack(void *p)
{
    if (!p || used == 0) return;
    size_t i = hash(p);
    while (table[i].p) {
        if (table[i].p == p) {
            table[i].p = TOMB;
            live--;
            return;
        }
        i = (i + 1) & (SLOTS - 1);
    }
}

/* Counts one allocation call; returns its index (1-based) or -1 when it
 * must fail. */
static long count_call(const void *caller)
{
    if (!armed || paused || exempt(caller)) return 0;
    long idx = ++calls;
    if (fail_at > 0 && idx == fail_at) {
        fired = 1;
        return -1;
    }
    return idx;
}

void lmfi_arm(long n)
{
    n_ex = 0;
    dl_iterate_phdr(find_exempt, NULL);
    lock_();
    if (used) memset(table, 0, sizeof table);
    used = live = 0;
    overflow = 0;
    calls = 0;
    fired = 0;
    fail_at = n;
    paused = 0;
    armed = 1;
    unlock_();
}

long lmfi_disarm(long *calls_out, long *live_out, long *first_leak)
{
    lock_();
    armed = 0;
    if (calls_out) *calls_out = calls;
    if (live_out) *live_out = overflow ? -1 : live;
    if (first_leak) {
        long first = 0;
        for (size_t i = 0; i < SLOTS && live > 0; i++)
            if (table[i].p && table[i].p != TOMB && (first == 0 || table[i].idx < first))
                first = table[i].idx;
        *first_leak = first;
    }
    long f = fired;
    if (used) memset(table, 0, sizeof table);
    used = live = 0;
    unlock_();
    return f;
}

/* Blocks allocated while paused are not tracked; frees of tracked blocks
 * still are. */
void lmfi_pause(int p)
{
    lock_();
    paused = p;
    unlock_();
}

__attribute__((constructor)) static void from_env(void)
{
    const char *s = getenv("LMFI_FAIL_AT");
    if (s && *s) lmfi_arm(strtol(s, NULL, 10));
}

/* ---- the wrappers ------------------------------------------------------------ */

void *malloc(size_t n)
{
    lock_();
    long idx = count_call(__builtin_return_address(0));
    unlock_();
    if (idx < 0) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_malloc(n);
    if (idx > 0) {
        lock_();
        track(p, idx);
        unlock_();
    }
    return p;
}

void *calloc(size_t n, size_t size)
{
    lock_();
    long idx = count_call(__builtin_return_address(0));
    unlock_();
    if (idx < 0) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_calloc(n, size);
    if (idx > 0) {
        lock_();
        track(p, idx);
        unlock_();
    }
    return p;
}

void *realloc(void *old, size_t n)
{
    lock_();
    long idx = count_call(__builtin_return_address(0));
    unlock_();
    if (idx < 0) {
        errno = ENOMEM;
        return NULL; /* the old block stays valid, as with a real failure */
    }
    void *p = __libc_realloc(old, n);
    lock_();
    if (old && (p || n == 0)) untrack(old);
    if (idx > 0) track(p, idx);
    unlock_();
    return p;
}

static void *aligned(size_t align, size_t n, const void *caller)
{
    lock_();
    long idx = count_call(caller);
    unlock_();
    if (idx < 0) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_memalign(align, n);
    if (idx > 0) {
        lock_();
        track(p, idx);
        unlock_();
    }
    return p;
}

void *aligned_alloc(size_t align, size_t n)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n, __builtin_return_address(0));
}

void *memalign(size_t align, size_t n) { return aligned(align, n, __builtin_return_address(0)); }

void *valloc(size_t n) { return aligned(4096, n, __builtin_return_address(0)); }

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    void *p = aligned(align, n, __builtin_return_address(0));
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void free(void *p)
{
    if (!p) return;
    lock_();
    untrack(p);
    unlock_();
    __libc_free(p);
}
