/* test_tokenizer.c - the byte-level BPE tokenizer against Hugging Face
 * `tokenizers` reference ids (test/data/tokenizer/, written by
 * scripts/make_tokenizer_refs.py), the size protocol, long inputs, and
 * every rejection class of tokenizer.json. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "internal.h"
#include "tokenizer/tok.h"
#include "suite.h"

#define TOKDIR LM_TEST_DATA "/tokenizer"
#define WORKDIR LM_TEST_BUILD_DIR "/tokenizer-work"
#define NEOX_JSON WORKDIR "/gpt-neox-20b.json"
/* Whole books whose ids the references hold (a copy of the project's shared
 * data, so that a fresh clone runs every record). */
#define BOOKS_DIR TOKDIR "/books"

/* ---- helpers ------------------------------------------------------------ */

/* Output of a shell command (xz -dc ...) in a malloc'd buffer. */
static unsigned char *run_read(const char *cmd, size_t *n)
{
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "popen %s", cmd);
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        size_t got = fread(buf + len, 1, cap - len, p);
        if (got == 0) break;
        len += got;
    }
    int rc = pclose(p);
    ck_assert_msg(rc == 0, "%s failed (%d)", cmd, rc);
    *n = len;
    return buf;
}

static unsigned char *xz_read(const char *path, size_t *n)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "xz -dc '%s'", path);
    return run_read(cmd, n);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static void ensure_workdir(void)
{
    mkdir(LM_TEST_BUILD_DIR, 0777);
    mkdir(WORKDIR, 0777);
}

/* tokenizer.json of GPT-NeoX-20B, decompressed into the build dir once. */
static const char *neox_path(void)
{
    struct stat sb;
    if (stat(NEOX_JSON, &sb) != 0) {
        ensure_workdir();
        size_t n;
        unsigned char *j = xz_read(TOKDIR "/gpt-neox-20b.json.xz", &n);
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s.%ld", NEOX_JSON, (long)getpid());
        write_file(tmp, j, n);
        ck_assert_int_eq(rename(tmp, NEOX_JSON), 0);
        free(j);
    }
    return NEOX_JSON;
}

static lm_tokenizer *load_ok(const char *path)
{
    lm_tokenizer *t = NULL;
    char err[512] = "";
    lm_status st = lm_tokenizer_load(path, &t, err, sizeof err);
    ck_assert_msg(st == LM_OK, "load %s: %s (%s)", path, lm_status_str(st), err);
    ck_assert_ptr_nonnull(t);
    return t;
}

static int32_t *encode_all(const lm_tokenizer *t, const void *text, size_t n, size_t *n_ids)
{
    size_t need = 0;
    char err[256] = "";
    lm_status st = lm_tokenizer_encode(t, text, n, NULL, 0, &need, err, sizeof err);
    ck_assert_msg(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL, "size query: %s", err);
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    size_t got = 0;
    st = lm_tokenizer_encode(t, text, n, ids, need, &got, err, sizeof err);
    ck_assert_msg(st == LM_OK, "encode: %s", err);
    ck_assert_uint_eq(got, need);
    *n_ids = got;
    return ids;
}

static char *decode_all(const lm_tokenizer *t, const int32_t *ids, size_t n, size_t *n_bytes)
{
    size_t need = 0;
    char err[256] = "";
    lm_status st = lm_tokenizer_decode(t, ids, n, NULL, 0, &need, err, sizeof err);
    ck_assert_msg(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL, "size query: %s", err);
    char *text = malloc(need + 1);
    ck_assert_ptr_nonnull(text);
    size_t got = 0;
    st = lm_tokenizer_decode(t, ids, n, text, need, &got, err, sizeof err);
    ck_assert_msg(st == LM_OK, "decode: %s", err);
    ck_assert_uint_eq(got, need);
    *n_bytes = got;
    return text;
}

/* ---- reference records ---------------------------------------------------- */

typedef struct ref {
    char name[256];
    uint32_t flags;             /* 1 invalid UTF-8, 2 external text, 4 decode == text */
    const unsigned char *text;
    uint64_t text_len;
    const uint32_t *ids;        /* unaligned view: read with memcpy */
    uint64_t n_ids;
    const unsigned char *dec;
    uint64_t dec_len;
} ref;

typedef struct refs {
    unsigned char *blob;
    ref *r;
    size_t n;
} refs;

static uint64_t rd(const unsigned char *b, size_t len, size_t *at, size_t bytes)
{
    ck_assert_msg(*at + bytes <= len, "refs truncated at %zu", *at);
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; k++) v |= (uint64_t)b[*at + k] << (8 * k);
    *at += bytes;
    return v;
}

static refs refs_load(const char *path)
{
    refs R = {0};
    size_t len, at = 8;
    R.blob = xz_read(path, &len);
    ck_assert_msg(len >= 16 && memcmp(R.blob, "LMTOKREF", 8) == 0, "%s: bad magic", path);
    ck_assert_uint_eq(rd(R.blob, len, &at, 4), 1);
    R.n = rd(R.blob, len, &at, 4);
    R.r = calloc(R.n, sizeof *R.r);
    ck_assert_ptr_nonnull(R.r);
    for (size_t i = 0; i < R.n; i++) {
        ref *r = &R.r[i];
        size_t nl = rd(R.blob, len, &at, 4);
        ck_assert(nl < sizeof r->name && at + nl <= len);
        memcpy(r->name, R.blob + at, nl);
        at += nl;
        r->flags = (uint32_t)rd(R.blob, len, &at, 4);
        r->text_len = rd(R.blob, len, &at, 8);
        if (!(r->flags & 2)) {
            ck_assert(at + r->text_len <= len);
            r->text = R.blob + at;
            at += r->text_len;
        }
        r->n_ids = rd(R.blob, len, &at, 8);
        ck_assert(at + r->n_ids * 4 <= len);
        r->ids = (const uint32_t *)(R.blob + at);
        at += r->n_ids * 4;
        r->dec_len = rd(R.blob, len, &at, 8);
        if (!(r->flags & 4)) {
            ck_assert(at + r->dec_len <= len);
            r->dec = R.blob + at;
            at += r->dec_len;
        }
    }
    ck_assert_uint_eq(at, len);
    return R;
}

static void refs_free(refs *R)
{
    free(R->blob);
    free(R->r);
}

/* Encodes and decodes every record; returns how many were checked. */
static size_t check_refs(const lm_tokenizer *t, refs *R, size_t *n_tokens)
{
    size_t checked = 0;
    *n_tokens = 0;
    for (size_t i = 0; i < R->n; i++) {
        ref *r = &R->r[i];
        unsigned char *ext = NULL;
        const unsigned char *text = r->text;
        if (r->flags & 2) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s.xz", BOOKS_DIR, r->name);
            ck_assert_msg(access(path, R_OK) == 0, "%s (the text of record %s) is missing", path,
                          r->name);
            size_t n;
            ext = xz_read(path, &n);
            ck_assert_msg(n == r->text_len, "%s: %zu bytes, reference made from %llu", r->name, n,
                          (unsigned long long)r->text_len);
            text = ext;
        }
        size_t n_ids;
        int32_t *ids = encode_all(t, text, r->text_len, &n_ids);
        size_t k = 0;
        while (k < n_ids && k < r->n_ids) {
            uint32_t want;
            memcpy(&want, r->ids + k, 4);
            if ((uint32_t)ids[k] != want) break;
            k++;
        }
        if (k != n_ids || k != r->n_ids) {
            uint32_t want = 0;
            if (k < r->n_ids) memcpy(&want, r->ids + k, 4);
            ck_abort_msg("%s: ids differ at %zu of %zu (reference %llu): got %d, want %u", r->name, k,
                         n_ids, (unsigned long long)r->n_ids, k < n_ids ? ids[k] : -1, want);
        }
        size_t nb;
        char *dec = decode_all(t, ids, n_ids, &nb);
        const unsigned char *want_dec = (r->flags & 4) ? text : r->dec;
        /* tokenizers returns from_utf8_lossy of the bytes; the library the
         * bytes themselves. */
        unsigned char *lossy = malloc(3 * nb + 1);
        ck_assert_ptr_nonnull(lossy);
        size_t nl = lmi_utf8_sanitize((const uint8_t *)dec, nb, lossy);
        ck_assert_msg(nl == r->dec_len && memcmp(lossy, want_dec, nl) == 0,
                      "%s: decode differs (%zu bytes, want %llu)", r->name, nl,
                      (unsigned long long)r->dec_len);
        /* Round trip: valid NFC text comes back byte for byte. */
        if (r->flags & 4) ck_assert(nb == r->text_len && memcmp(dec, text, nb) == 0);
        free(lossy);
        *n_tokens += n_ids;
        free(dec);
        free(ids);
        free(ext);
        checked++;
    }
    return checked;
}

START_TEST(neox_matches_reference)
{
    lm_tokenizer *t = load_ok(neox_path());
    ck_assert_int_eq(lm_tokenizer_vocab_size(t), 50277);
    refs R = refs_load(TOKDIR "/refs.bin.xz");
    ck_assert_uint_gt(R.n, 600);
    size_t n_tok;
    size_t checked = check_refs(t, &R, &n_tok);
    ck_assert_uint_ge(checked, R.n - 1);  /* the external book may be absent */
    fprintf(stderr, "neox: %zu reference texts, %zu tokens equal\n", checked, n_tok);
    refs_free(&R);
    lm_tokenizer_free(t);
}
END_TEST

/* ---- size protocol, edge inputs ----------------------------------------------- */

START_TEST(size_protocol)
{
    lm_tokenizer *t = load_ok(neox_path());
    const char *text = "Hello, world! It's 2024 and   spaces<|endoftext|> follow.";
    size_t n = strlen(text), need = 0, got = 0;
    char err[256];
    ck_assert_int_eq(lm_tokenizer_encode(t, text, n, NULL, 0, &need, err, sizeof err),
                     LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_ptr_nonnull(strstr(err, "do not fit"));
    ck_assert_uint_gt(need, 5);
    int32_t *full = malloc(need * sizeof *full);
    ck_assert_int_eq(lm_tokenizer_encode(t, text, n, full, need, &got, err, sizeof err), LM_OK);
    ck_assert_uint_eq(got, need);
    /* Every smaller cap: BUFFER_TOO_SMALL, the size, the prefix, nothing past cap. */
    int32_t *buf = malloc((need + 4) * sizeof *buf);
    for (size_t cap = 1; cap < need; cap++) {
        for (size_t k = 0; k < need + 4; k++) buf[k] = -7;
        got = 0;
        ck_assert_int_eq(lm_tokenizer_encode(t, text, n, buf, cap, &got, NULL, 0), LM_ERR_BUFFER_TOO_SMALL);
        ck_assert_uint_eq(got, need);
        ck_assert_mem_eq(buf, full, cap * sizeof *buf);
        for (size_t k = cap; k < need + 4; k++) ck_assert_int_eq(buf[k], -7);
    }
    /* A larger cap is fine. */
    ck_assert_int_eq(lm_tokenizer_encode(t, text, n, buf, need + 4, &got, NULL, 0), LM_OK);
    ck_assert_uint_eq(got, need);

    /* Decode: the same protocol over bytes. */
    size_t nb = 0;
    ck_assert_int_eq(lm_tokenizer_decode(t, full, need, NULL, 0, &nb, err, sizeof err),
                     LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(nb, n);
    char *out = malloc(n + 8);
    for (size_t cap = 0; cap < n; cap++) {
        memset(out, 'Z', n + 8);
        size_t w = 0;
        ck_assert_int_eq(lm_tokenizer_decode(t, full, need, cap ? out : NULL, cap, &w, NULL, 0),
                         LM_ERR_BUFFER_TOO_SMALL);
        ck_assert_uint_eq(w, n);
        for (size_t k = cap; k < n + 8; k++) ck_assert_int_eq(out[k], 'Z');
    }
    ck_assert_int_eq(lm_tokenizer_decode(t, full, need, out, n, &nb, NULL, 0), LM_OK);
    ck_assert_uint_eq(nb, n);
    ck_assert_mem_eq(out, text, n);
    free(out);
    free(buf);
    free(full);
    lm_tokenizer_free(t);
}
END_TEST

START_TEST(empty_and_bad_arguments)
{
    lm_tokenizer *t = load_ok(neox_path());
    size_t n = 99;
    int32_t id = -5;
    char err[256];
    ck_assert_int_eq(lm_tokenizer_encode(t, "", 0, NULL, 0, &n, NULL, 0), LM_OK);
    ck_assert_uint_eq(n, 0);
    n = 99;
    ck_assert_int_eq(lm_tokenizer_encode(t, NULL, 0, &id, 1, &n, NULL, 0), LM_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(id, -5);
    n = 99;
    ck_assert_int_eq(lm_tokenizer_decode(t, NULL, 0, NULL, 0, &n, NULL, 0), LM_OK);
    ck_assert_uint_eq(n, 0);

    ck_assert_int_eq(lm_tokenizer_encode(NULL, "a", 1, &id, 1, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "tokenizer is NULL"));
    ck_assert_int_eq(lm_tokenizer_encode(t, NULL, 1, &id, 1, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "text is NULL"));
    ck_assert_int_eq(lm_tokenizer_encode(t, "a", 1, NULL, 1, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_encode(t, "a", 1, &id, 1, NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "n_ids is NULL"));
    ck_assert_int_eq(lm_tokenizer_decode(NULL, &id, 1, NULL, 0, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_decode(t, NULL, 1, NULL, 0, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_decode(t, &id, 1, NULL, 3, &n, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_decode(t, &id, 1, err, 3, NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_vocab_size(NULL), -1);
    lm_tokenizer_free(NULL);
    lm_tokenizer_free(t);
}
END_TEST

START_TEST(decode_out_of_range)
{
    lm_tokenizer *t = load_ok(neox_path());
    int64_t V = lm_tokenizer_vocab_size(t);
    int32_t bad[][3] = {{1, -1, 2}, {1, (int32_t)V, 2}, {1, INT32_MAX, 2}, {1, INT32_MIN, 2}};
    char err[256], out[64];
    for (size_t i = 0; i < 4; i++) {
        size_t n = 777;
        ck_assert_int_eq(lm_tokenizer_decode(t, bad[i], 3, out, sizeof out, &n, err, sizeof err),
                         LM_ERR_OUT_OF_RANGE);
        ck_assert_msg(strstr(err, "ids[1]") && strstr(err, "outside the vocabulary"), "%s", err);
        ck_assert_uint_eq(n, 777);   /* untouched on error */
    }
    int32_t last = (int32_t)V - 1;
    size_t n;
    ck_assert_int_eq(lm_tokenizer_decode(t, &last, 1, out, sizeof out, &n, err, sizeof err), LM_OK);
    lm_tokenizer_free(t);

    /* tiny-c leaves ids unassigned (id % 97 == 50). */
    t = load_ok(TOKDIR "/tiny-c.json");
    int32_t gap = 50;
    ck_assert_int_eq(lm_tokenizer_decode(t, &gap, 1, out, sizeof out, &n, err, sizeof err), LM_ERR_OUT_OF_RANGE);
    ck_assert_msg(strstr(err, "unassigned"), "%s", err);
    lm_tokenizer_free(t);
}
END_TEST

/* Each byte's own symbol decodes to that byte: the byte alphabet both ways,
 * including halves of characters (decode returns raw bytes). */
START_TEST(byte_symbols_round_trip)
{
    lm_tokenizer *t = load_ok(neox_path());
    for (int b = 0; b < 256; b++) {
        int32_t id = t->byte_id[b];
        /* GPT-NeoX has no symbol for the bytes valid UTF-8 never holds. */
        if (b == 0xC0 || b == 0xC1 || b >= 0xF5) {
            ck_assert_int_eq(id, -1);
            continue;
        }
        ck_assert_int_ge(id, 0);
        char out[8];
        size_t n;
        ck_assert_int_eq(lm_tokenizer_decode(t, &id, 1, out, sizeof out, &n, NULL, 0), LM_OK);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq((unsigned char)out[0], b);
        ck_assert_int_eq(lmi_tok_char_byte(lmi_tok_byte_char((uint8_t)b)), b);
    }
    lm_tokenizer_free(t);
}
END_TEST

/* Added tokens split the text before anything else: ids of a text with
 * them are the ids of the pieces around them. */
START_TEST(added_tokens_split_first)
{
    lm_tokenizer *t = load_ok(neox_path());
    size_t ne, na, nb, nab;
    int32_t *eot = encode_all(t, "<|endoftext|>", 13, &ne);
    ck_assert_uint_eq(ne, 1);
    const char *a = "  first part'", *b = "s second\u0301 part  ";
    int32_t *ia = encode_all(t, a, strlen(a), &na);
    int32_t *ib = encode_all(t, b, strlen(b), &nb);
    char joined[128];
    snprintf(joined, sizeof joined, "%s<|endoftext|>%s", a, b);
    int32_t *iab = encode_all(t, joined, strlen(joined), &nab);
    ck_assert_uint_eq(nab, na + 1 + nb);
    ck_assert_mem_eq(iab, ia, na * sizeof *ia);
    ck_assert_int_eq(iab[na], eot[0]);
    ck_assert_mem_eq(iab + na + 1, ib, nb * sizeof *ib);
    /* Without the split, "'" + "s" would have been the contraction. */
    snprintf(joined, sizeof joined, "%s%s", a, b);
    free(iab);
    iab = encode_all(t, joined, strlen(joined), &nab);
    ck_assert_uint_ne(nab, na + nb);
    free(eot);
    free(ia);
    free(ib);
    free(iab);
    lm_tokenizer_free(t);
}
END_TEST

/* CPU time of this thread: other load on the machine does not count. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One character repeated: a 10 MB word for BPE (a), one NFC segment (é),
 * the added space tokens ( ), one regex match of digits.  Time grows as
 * n log n at worst (the merge queue of one 10 MB word; caches make the
 * 10x input cost up to ~25x on one word): a quadratic step would cost 100x.
 * The text comes back. */
START_TEST(long_inputs_are_linear)
{
    lm_tokenizer *t = load_ok(neox_path());
    /* ..., and alternating marks of classes 230 and 220: one run for
     * NFC's canonical ordering (a bubble sort would be quadratic). */
    static const char *const unit[] = {"a", " ", "\xc3\xa9", "7", "ab ", "e\xcc\x81", "\xcc\x81\xcc\xa3"};
    const size_t big = 10u << 20;
    char *text = malloc(big);
    for (size_t u = 0; u < sizeof unit / sizeof *unit; u++) {
        size_t ul = strlen(unit[u]);
        double dt[2];
        size_t sizes[2] = {big / 10 / ul * ul, big / ul * ul};
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < sizes[k]; i += ul) memcpy(text + i, unit[u], ul);
            double t0 = now_s();
            size_t n;
            int32_t *ids = encode_all(t, text, sizes[k], &n);
            dt[k] = now_s() - t0;
            ck_assert_uint_gt(n, 0);
            size_t nb;
            char *back = decode_all(t, ids, n, &nb);
            if (u == 5) {
                /* NFC: e + U+0301 comes back composed. */
                ck_assert_uint_eq(nb, sizes[k] / 3 * 2);
                ck_assert_mem_eq(back, "\xc3\xa9\xc3\xa9", 4);
            } else if (u == 6) {
                /* NFC: all U+0323 (class 220) before all U+0301 (230). */
                ck_assert_uint_eq(nb, sizes[k]);
                ck_assert_mem_eq(back, "\xcc\xa3\xcc\xa3", 4);
                ck_assert_mem_eq(back + nb - 4, "\xcc\x81\xcc\x81", 4);
            } else {
                ck_assert_uint_eq(nb, sizes[k]);
                ck_assert(memcmp(back, text, nb) == 0);
            }
            free(back);
            free(ids);
        }
        fprintf(stderr, "long '%s': %zu bytes %.3f s, %zu bytes %.3f s\n", unit[u], sizes[0], dt[0],
                sizes[1], dt[1]);
        ck_assert_msg(dt[1] < 50 * dt[0] + 0.2, "'%s': 10x the input took %.1fx the time", unit[u],
                      dt[1] / dt[0]);
    }
    free(text);
    lm_tokenizer_free(t);
}
END_TEST

typedef struct thr_arg {
    const lm_tokenizer *t;
    const char *text;
    size_t n;
    const int32_t *want;
    size_t n_want;
    int ok;
} thr_arg;

static void *thr_encode(void *p)
{
    thr_arg *a = p;
    a->ok = 1;
    for (int rep = 0; rep < 20; rep++) {
        size_t n = 0;
        int32_t *ids = malloc(a->n_want * sizeof *ids);
        if (lm_tokenizer_encode(a->t, a->text, a->n, ids, a->n_want, &n, NULL, 0) != LM_OK ||
            n != a->n_want || memcmp(ids, a->want, n * sizeof *ids) != 0)
            a->ok = 0;
        free(ids);
    }
    return NULL;
}

START_TEST(shared_across_threads)
{
    lm_tokenizer *t = load_ok(neox_path());
    refs R = refs_load(TOKDIR "/refs-tiny-a.bin.xz");
    /* Concatenate a few reference texts into one mixed input. */
    size_t n = 0;
    char *text = malloc(1 << 20);
    for (size_t i = 0; i < R.n && n < 400000; i++) {
        if (R.r[i].flags & 2) continue;
        memcpy(text + n, R.r[i].text, R.r[i].text_len);
        n += R.r[i].text_len;
    }
    size_t nw;
    int32_t *want = encode_all(t, text, n, &nw);
    pthread_t th[6];
    thr_arg args[6];
    for (int k = 0; k < 6; k++) {
        args[k] = (thr_arg){t, text, n, want, nw, 0};
        ck_assert_int_eq(pthread_create(&th[k], NULL, thr_encode, &args[k]), 0);
    }
    for (int k = 0; k < 6; k++) {
        pthread_join(th[k], NULL);
        ck_assert_int_eq(args[k].ok, 1);
    }
    free(want);
    free(text);
    refs_free(&R);
    lm_tokenizer_free(t);
}
END_TEST

/* ---- UTF-8 repair and the NFC shortcut ------------------------------------------- */

START_TEST(utf8_repair)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"abc", "abc"},
        {"\x80", "\xef\xbf\xbd"},
        {"a\xc3", "a\xef\xbf\xbd"},
        {"\xe2\x82", "\xef\xbf\xbd"},                          /* truncated: one U+FFFD */
        {"\xe2\x82x", "\xef\xbf\xbdx"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate: three */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},               /* overlong */
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
        {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = strlen(cases[i].in);
        uint8_t out[64];
        size_t w = lmi_utf8_sanitize((const uint8_t *)cases[i].in, n, out);
        ck_assert_uint_eq(w, strlen(cases[i].out));
        ck_assert_mem_eq(out, cases[i].out, w);
        ck_assert_uint_eq(lmi_utf8_valid_prefix((const uint8_t *)cases[i].in, n) == n,
                          strcmp(cases[i].in, cases[i].out) == 0);
    }
}
END_TEST

/* encode.c skips NFC for text without a byte >= 0xCC (all code points below
 * U+0300): every such code point, alone and in every pair, is NFC. */
START_TEST(nfc_shortcut_is_sound)
{
    for (uint32_t a = 0; a < 0x300; a++) {
        for (uint32_t b = 0; b < 0x300; b++) {
            uint8_t s[8];
            size_t n = lmi_utf8_put(a, s);
            n += lmi_utf8_put(b, s + n);
            int32_t buf[8];
            utf8proc_ssize_t k = utf8proc_decompose(s, (utf8proc_ssize_t)n, buf, 8,
                                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            ck_assert_int_ge(k, 1);
            k = utf8proc_normalize_utf32(buf, k, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            ck_assert_msg(k == 2 && buf[0] == (int32_t)a && buf[1] == (int32_t)b, "U+%04X U+%04X", a, b);
        }
    }
}
END_TEST

/* encode.c normalizes only the non-ASCII runs (with the character before
 * each): sound because no canonical decomposition of any code point holds
 * an ASCII character after its first, so no ASCII character is the second
 * half of a composition, and ASCII is NFC-inert (class 0, no mapping). */
START_TEST(nfc_cut_before_ascii_is_sound)
{
    for (int32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        int32_t d[32];
        int bound = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(cp, d, 32, UTF8PROC_DECOMPOSE, &bound);
        ck_assert_int_ge(k, 1);
        if (cp < 0x80) {
            ck_assert_int_eq(k, 1);
            ck_assert_int_eq(d[0], cp);
            ck_assert_int_eq(utf8proc_get_property(cp)->combining_class, 0);
        }
        for (utf8proc_ssize_t i = 1; i < k; i++) ck_assert_msg(d[i] >= 0x80, "U+%04X", (unsigned)cp);
    }
}
END_TEST

/* ---- rejected tokenizer.json -------------------------------------------------------- */

/* A hand-written tokenizer: merge "b c" is listed twice; the later rank
 * wins (tokenizers collects merges into a map), so "abc" -> ab + c. */
static const char tiny_json[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
    "\"added_tokens\":[{\"id\":6,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":true}],"
    "\"normalizer\":{\"type\":\"NFC\"},"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
    "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,"
    "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5},"
    "\"merges\":[\"b c\",\"a b\",\"b c\"]}}";

/* tiny_json with the first `from` replaced by `to`, loaded from a file. */
static lm_status load_variant(const char *from, const char *to, lm_tokenizer **t, char *err, size_t cap)
{
    const char *at = strstr(tiny_json, from);
    ck_assert_msg(at != NULL, "%s not in tiny_json", from);
    char text[4096];
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - tiny_json), tiny_json, to, at + strlen(from));
    ensure_workdir();
    char path[512];
    snprintf(path, sizeof path, WORKDIR "/variant-%ld.json", (long)getpid());
    write_file(path, text, strlen(text));
    lm_status st = lm_tokenizer_load(path, t, err, cap);
    unlink(path);
    return st;
}

START_TEST(tiny_semantics)
{
    lm_tokenizer *t = NULL;
    char err[512];
    ck_assert_int_eq(load_variant("", "", &t, err, sizeof err), LM_OK);
    ck_assert_int_eq(lm_tokenizer_vocab_size(t), 7);
    size_t n;
    int32_t *ids = encode_all(t, "abc<s>bc", 8, &n);
    int32_t want[] = {3, 2, 6, 4};   /* later rank of "b c": a+b first */
    ck_assert_uint_eq(n, 4);
    ck_assert_mem_eq(ids, want, sizeof want);
    free(ids);
    lm_tokenizer_free(t);
    /* Pair form, without the repeat: b+c first. */
    ck_assert_int_eq(load_variant("[\"b c\",\"a b\",\"b c\"]", "[[\"b\",\"c\"],[\"a\",\"b\"]]", &t, err,
                                  sizeof err), LM_OK);
    ids = encode_all(t, "abc", 3, &n);
    int32_t want2[] = {0, 4};
    ck_assert_uint_eq(n, 2);
    ck_assert_mem_eq(ids, want2, sizeof want2);
    free(ids);
    /* Bytes without a symbol (no unk_token) vanish, as in tokenizers. */
    ids = encode_all(t, "xaby", 4, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 3);
    free(ids);
    lm_tokenizer_free(t);
}
END_TEST

START_TEST(rejected_files)
{
    static const struct {
        const char *from, *to;
        lm_status st;
        const char *msg;
    } cases[] = {
        {",\"merges\":[\"b c\",\"a b\",\"b c\"]", "", LM_ERR_MISSING, "merges is missing"},
        {"\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5},", "", LM_ERR_MISSING, "vocab is missing"},
        {"\"model\":{", "\"modelx\":{", LM_ERR_MISSING, "no model"},
        {"\"b c\",\"a b\"", "\"b x\",\"a b\"", LM_ERR_FORMAT, "\"x\", not in vocab"},
        {"\"b c\",\"a b\"", "\"bc\",\"a b\"", LM_ERR_FORMAT, "is not \"a b\""},
        {"\"b c\",\"a b\"", "1,\"a b\"", LM_ERR_FORMAT, "merge 0 is neither"},
        {"\"b c\",\"a b\"", "[\"b\"],\"a b\"", LM_ERR_FORMAT, "merge 0 is neither"},
        {"\"bc\":4,", "\"bx\":4,", LM_ERR_FORMAT, "result \"bc\" is not in vocab"},
        {"\"c\":2", "\"c\":1", LM_ERR_FORMAT, "duplicate id 1"},
        {"\"c\":2", "\"c\":2,\"a\":7", LM_ERR_FORMAT, "\"a\" repeats"},
        {"\"c\":2", "\"c\":-1", LM_ERR_FORMAT, "id -1 outside"},
        {"\"c\":2", "\"c\":16777216", LM_ERR_FORMAT, "outside [0, 16777216)"},
        {"\"c\":2", "\"c\":2.5", LM_ERR_FORMAT, "\"c\" has no integer id"},
        {"\"c\":2", "\"c\":\"2\"", LM_ERR_FORMAT, "\"c\" has no integer id"},
        {"\"vocab\":{", "\"vocab\":[{", LM_ERR_FORMAT, "JSON"},
        {"\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5}", "\"vocab\":[]", LM_ERR_FORMAT,
         "vocab is not an object"},
        {"\"type\":\"BPE\"", "\"type\":\"WordPiece\"", LM_ERR_UNSUPPORTED, "model WordPiece"},
        {"{\"type\":\"NFC\"}", "{\"type\":\"NFKC\"}", LM_ERR_UNSUPPORTED, "normalizer NFKC"},
        {"{\"type\":\"NFC\"}", "{}", LM_ERR_FORMAT, "normalizer has no type"},
        {"\"pre_tokenizer\":{\"type\":\"ByteLevel\"", "\"pre_tokenizer\":{\"type\":\"Metaspace\"",
         LM_ERR_UNSUPPORTED, "pre_tokenizer Metaspace"},
        {"\"pre_tokenizer\":{", "\"pre_tokenizer\":null,\"x\":{", LM_ERR_UNSUPPORTED, "ByteLevel pre_tokenizer is required"},
        {"\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"WordPiece\"", LM_ERR_UNSUPPORTED,
         "decoder WordPiece"},
        {"\"decoder\":{", "\"decoder\":null,\"x\":{", LM_ERR_UNSUPPORTED, "ByteLevel decoder is required"},
        {"\"post_processor\":{\"type\":\"ByteLevel\"", "\"post_processor\":{\"type\":\"TemplateProcessing\"",
         LM_ERR_UNSUPPORTED, "post_processor TemplateProcessing"},
        {"\"truncation\":null", "\"truncation\":{\"max_length\":5}", LM_ERR_UNSUPPORTED, "truncation"},
        {"\"padding\":null", "\"padding\":{}", LM_ERR_UNSUPPORTED, "padding"},
        {"\"dropout\":null", "\"dropout\":0.1", LM_ERR_UNSUPPORTED, "dropout 0.1"},
        {"\"byte_fallback\":false", "\"byte_fallback\":true", LM_ERR_UNSUPPORTED, "byte_fallback"},
        {"\"byte_fallback\":false", "\"byte_fallback\":1", LM_ERR_FORMAT, "byte_fallback is not a boolean"},
        {"\"continuing_subword_prefix\":null", "\"continuing_subword_prefix\":\"##\"", LM_ERR_UNSUPPORTED,
         "continuing_subword_prefix \"##\""},
        {"\"end_of_word_suffix\":null", "\"end_of_word_suffix\":\"</w>\"", LM_ERR_UNSUPPORTED, "end_of_word_suffix"},
        {"\"lstrip\":false", "\"lstrip\":true", LM_ERR_UNSUPPORTED, "\"<s>\" sets lstrip"},
        {"\"single_word\":false", "\"single_word\":true", LM_ERR_UNSUPPORTED, "sets single_word"},
        {"\"id\":6,", "\"id\":0,", LM_ERR_FORMAT, "\"<s>\" reuses id 0"},
        {"\"content\":\"<s>\"", "\"content\":\"ab\"", LM_ERR_FORMAT, "has id 6 but the vocab gives 3"},
        {"\"content\":\"<s>\"", "\"content\":\"\"", LM_ERR_FORMAT, "added_tokens[0] is empty"},
        {"\"id\":6,", "", LM_ERR_FORMAT, "added token \"<s>\" has no integer id"},
        {"\"added_tokens\":[", "\"added_tokens\":[7,", LM_ERR_FORMAT, "added_tokens[0] is not an object"},
        {"\"unk_token\":null", "\"unk_token\":\"<unk>\"", LM_ERR_FORMAT, "unk_token \"<unk>\" is not in vocab"},
        {"{\"version\"", "[{\"version\"", LM_ERR_FORMAT, "JSON"},
        {"\"abc\":5}", "\"abc\":5", LM_ERR_FORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lm_tokenizer *t = (lm_tokenizer *)&cases;   /* must be reset to NULL */
        char err[512] = "";
        lm_status st = load_variant(cases[i].from, cases[i].to, &t, err, sizeof err);
        ck_assert_msg(st == cases[i].st, "case %zu (%s): %s, want %s: %s", i, cases[i].to,
                      lm_status_str(st), lm_status_str(cases[i].st), err);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(err, cases[i].msg) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err,
                      cases[i].msg);
        ck_assert_msg(strstr(err, "variant-") != NULL, "case %zu: message \"%s\" lacks the file", i, err);
    }
}
END_TEST

START_TEST(rejected_paths)
{
    lm_tokenizer *t = NULL;
    char err[512];
    ensure_workdir();
    ck_assert_int_eq(lm_tokenizer_load(WORKDIR "/no-such-file.json", &t, err, sizeof err), LM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
    ck_assert_int_eq(lm_tokenizer_load(NULL, &t, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tokenizer_load(neox_path(), NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);

    /* A directory: its tokenizer.json, or MISSING. */
    char dir[512], file[600];
    snprintf(dir, sizeof dir, WORKDIR "/model-%ld", (long)getpid());
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    unlink(file);
    ck_assert_int_eq(lm_tokenizer_load(dir, &t, err, sizeof err), LM_ERR_MISSING);
    ck_assert_ptr_nonnull(strstr(err, "no tokenizer.json"));
    write_file(file, tiny_json, strlen(tiny_json));
    t = load_ok(dir);
    ck_assert_int_eq(lm_tokenizer_vocab_size(t), 7);
    lm_tokenizer_free(t);

    /* Empty, truncated and binary files. */
    write_file(file, "", 0);
    ck_assert_int_eq(lm_tokenizer_load(file, &t, err, sizeof err), LM_ERR_FORMAT);
    size_t n;
    unsigned char *j = xz_read(TOKDIR "/gpt-neox-20b.json.xz", &n);
    size_t cuts[] = {1, 100, n / 3, n / 2, n - 2};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        write_file(file, j, cuts[k]);
        ck_assert_int_eq(lm_tokenizer_load(file, &t, err, sizeof err), LM_ERR_FORMAT);
        ck_assert_ptr_null(t);
        ck_assert_ptr_nonnull(strstr(err, "JSON"));
    }
    for (size_t k = 0; k < 4096; k++) j[k] = (unsigned char)(k * 131 + 7);
    write_file(file, j, 4096);
    ck_assert_int_eq(lm_tokenizer_load(file, &t, err, sizeof err), LM_ERR_FORMAT);
    free(j);
    unlink(file);
    rmdir(dir);
}
END_TEST

/* Small trained tokenizers edited to reach the options GPT-NeoX leaves at
 * one value (see make_tokenizer_refs.py). */
START_TEST(tiny_variants_match_reference)
{
    static const char *const v[] = {"a", "b", "c", "d"};
    char path[512];
    snprintf(path, sizeof path, TOKDIR "/tiny-%s.json", v[_i]);
    lm_tokenizer *t = load_ok(path);
    snprintf(path, sizeof path, TOKDIR "/refs-tiny-%s.bin.xz", v[_i]);
    refs R = refs_load(path);
    size_t n_tok;
    ck_assert_uint_eq(check_refs(t, &R, &n_tok), R.n);
    ck_assert_uint_gt(n_tok, 1000);
    refs_free(&R);
    lm_tokenizer_free(t);
}
END_TEST

/* Optional: LM_TOK_SWEEP_ALL=FILE from make_tokenizer_refs.py --sweep-all
 * (every Unicode scalar value; too large to commit). */
START_TEST(neox_sweep_all_optional)
{
    const char *path = getenv("LM_TOK_SWEEP_ALL");
    if (!path || !*path) return;
    lm_tokenizer *t = load_ok(neox_path());
    refs R = refs_load(path);
    size_t n_tok;
    ck_assert_uint_eq(check_refs(t, &R, &n_tok), R.n);
    fprintf(stderr, "sweep: %zu planes, %zu tokens equal\n", R.n, n_tok);
    refs_free(&R);
    lm_tokenizer_free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = add_tcase(s, "reference", 600,
                          (const TTest *[]){neox_matches_reference, neox_sweep_all_optional, NULL});
    tcase_add_loop_test(tc, tiny_variants_match_reference, 0, 4);
    add_tcase(s, "edges", 600,
              (const TTest *[]){size_protocol, empty_and_bad_arguments, decode_out_of_range,
                                byte_symbols_round_trip, added_tokens_split_first,
                                long_inputs_are_linear, shared_across_threads, utf8_repair,
                                nfc_shortcut_is_sound, nfc_cut_before_ascii_is_sound, NULL});
    add_tcase(s, "files", 0,
              (const TTest *[]){tiny_semantics, rejected_files, rejected_paths, NULL});
    return run_suite(s);
}
