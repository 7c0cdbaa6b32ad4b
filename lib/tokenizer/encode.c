/*
 * encode.c - text to ids: UTF-8 repair, added-token split, NFC (utf8proc),
 * the GPT-2 split regex (PCRE2) and BPE merges (a rank-ordered heap, as
 * tokenizers' Word::merge_all).  All scratch lives in a per-call context.
 */
#include "tokenizer/tok.h"

#include <string.h>
#include <utf8proc.h>

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Length of the well-formed sequence at s (Unicode Table 3-7), or 0 with
 * *bad the length of its maximal invalid subpart (at least 1). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad)
{
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;   /* range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t k = 1;
    for (; k < need; k++) {
        if (k >= n) break;
        uint8_t c = s[k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
    }
    if (k == need) return need;
    *bad = k;
    return 0;
}

size_t lmi_utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII eight bytes at a time: most text is. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        size_t bad, l = utf8_seq(s + i, n - i, &bad);
        if (!l) return i;
        i += l;
    }
    return n;
}

size_t lmi_utf8_sanitize(const uint8_t *s, size_t n, uint8_t *out)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t bad, l = utf8_seq(s + i, n - i, &bad);
        if (l) {
            memcpy(out + w, s + i, l);
            w += l;
            i += l;
        } else {
            out[w++] = 0xEF;
            out[w++] = 0xBF;
            out[w++] = 0xBD;
            i += bad;
        }
    }
    return w;
}

uint32_t lmi_utf8_next(const uint8_t *s, size_t *len)
{
    uint8_t b = s[0];
    if (b < 0x80) {
        *len = 1;
        return b;
    }
    if (b < 0xE0) {
        *len = 2;
        return (uint32_t)(b & 0x1F) << 6 | (s[1] & 0x3F);
    }
    if (b < 0xF0) {
        *len = 3;
        return (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    }
    *len = 4;
    return (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
           (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

size_t lmi_utf8_put(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- NFC ---------------------------------------------------------------------- */

#define NFC_OPTS ((utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE))

/* Every code point below U+0300 is NFC-stable and none composes with
 * another one below U+0300, so text without a byte >= 0xCC is already NFC
 * (test_tokenizer checks this against utf8proc). */
static bool maybe_not_nfc(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xCC) return true;
    return false;
}

static lm_status grow_i32(int32_t **buf, size_t *cap, size_t need, size_t keep, lmi_err *e)
{
    if (need <= *cap) return LM_OK;
    size_t want = need + need / 2 + 16;
    int32_t *nb = lmi_alloc_raw(want, sizeof *nb);
    if (!nb) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (NFC of %zu code points)", need);
    if (keep) memcpy(nb, *buf, keep * sizeof *nb);
    lmi_free(*buf);
    *buf = nb;
    *cap = want;
    return LM_OK;
}

static inline int ccc(int32_t cp) { return utf8proc_get_property(cp)->combining_class; }

/* Canonical ordering of a run of non-starters: a stable sort by combining
 * class.  (utf8proc_decompose does it with a bubble sort, quadratic in a
 * long run of alternating marks; hence the decomposition here.) */
static lm_status order_marks(int32_t *r, size_t k, int32_t **tmp, size_t *tmp_cap, lmi_err *e)
{
    if (k <= 16) {
        for (size_t i = 1; i < k; i++) {
            int32_t x = r[i];
            int cx = ccc(x);
            size_t j = i;
            for (; j > 0 && ccc(r[j - 1]) > cx; j--) r[j] = r[j - 1];
            r[j] = x;
        }
        return LM_OK;
    }
    lm_status st = grow_i32(tmp, tmp_cap, k, 0, e);
    if (st) return st;
    size_t pos[257] = {0};
    for (size_t i = 0; i < k; i++) pos[ccc(r[i]) + 1]++;
    for (int c = 0; c < 256; c++) pos[c + 1] += pos[c];
    for (size_t i = 0; i < k; i++) (*tmp)[pos[ccc(r[i])]++] = r[i];
    memcpy(r, *tmp, k * sizeof *r);
    return LM_OK;
}

/* NFC of valid UTF-8 s into *buf (int32 scratch of *cap entries, grown as
 * needed): canonical decomposition (utf8proc_decompose_char), ordering,
 * then utf8proc's composition and re-encoding in place; the result bytes
 * are at (uint8_t *)*buf. */
static lm_status nfc_into(const uint8_t *s, size_t n, int32_t **buf, size_t *cap, int32_t **tmp,
                          size_t *tmp_cap, size_t *out_len, lmi_err *e)
{
    if (n > (size_t)PTRDIFF_MAX / 16)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokenizer: text too long for NFC");
    lm_status st = grow_i32(buf, cap, n + 8, 0, e);
    if (st) return st;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        int32_t cp = (int32_t)lmi_utf8_next(s + i, &l);
        i += l;
        for (;;) {
            /* One entry stays free: utf8proc_reencode writes a NUL. */
            utf8proc_ssize_t room = (utf8proc_ssize_t)(*cap - 1 - w);
            int bound = 0;
            utf8proc_ssize_t k = utf8proc_decompose_char(cp, *buf + w, room, NFC_OPTS, &bound);
            if (k < 0)
                return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokenizer: NFC failed: %s",
                                utf8proc_errmsg(k));
            if (k <= room) {
                w += (size_t)k;
                break;
            }
            if ((st = grow_i32(buf, cap, w + (size_t)k + 1 + (n - i), w, e))) return st;
        }
    }
    for (size_t i = 0; i < w;) {
        if (ccc((*buf)[i]) == 0) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < w && ccc((*buf)[j]) != 0) j++;
        if (j - i > 1 && (st = order_marks(*buf + i, j - i, tmp, tmp_cap, e))) return st;
        i = j;
    }
    utf8proc_ssize_t bytes = utf8proc_reencode(*buf, (utf8proc_ssize_t)w, NFC_OPTS);
    if (bytes < 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokenizer: NFC failed: %s", utf8proc_errmsg(bytes));
    *out_len = (size_t)bytes;
    return LM_OK;
}

lm_status lmi_tok_nfc_alloc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len, lmi_err *e)
{
    int32_t *buf = NULL, *tmp = NULL;
    size_t cap = 0, tmp_cap = 0;
    lm_status st = nfc_into(s, n, &buf, &cap, &tmp, &tmp_cap, out_len, e);
    lmi_free(tmp);
    if (st) {
        lmi_free(buf);
        return st;
    }
    *out = (uint8_t *)buf;
    return LM_OK;
}

/* ---- per-call context --------------------------------------------------------- */

typedef struct enc {
    const lm_tokenizer *t;
    int32_t *out;
    size_t cap, n;
    lmi_err *e;
    pcre2_match_data *md;
    int32_t *nfc;              /* NFC scratch (int32, reused as bytes) */
    size_t nfc_cap;
    int32_t *nfc_tmp;          /* ordering scratch */
    size_t nfc_tmp_cap;
    uint8_t *pre;              /* piece with the prefix space */
    size_t pre_cap;
    int32_t *sym_id, *sym_prev, *sym_next;   /* BPE symbols */
    size_t sym_cap;
    uint64_t *heap;            /* rank << 32 | position, min-heap */
    size_t heap_cap;
    uint8_t *norm;             /* NFC of a raw segment */
    size_t norm_cap;
    /* Word cache of this call: pre-token bytes -> ids (BPE depends on the
     * bytes only).  Slots hold arena offset + 1; entries are
     * [u32 len][u32 n_ids][bytes, padded to 4][ids]. */
    uint32_t *wc_slot;
    uint8_t *wc_arena;
    size_t wc_used, wc_count;
    size_t wc_slots, wc_arena_cap;   /* sized to the text; reset when full */
} enc;

#define WC_MAX_SLOTS 16384           /* power of two; reset at half full */
#define WC_MAX_ARENA ((size_t)4 << 20)
#define WC_MAX_WORD 64

static inline void emit(enc *c, int32_t id)
{
    if (c->n < c->cap) c->out[c->n] = id;
    c->n++;
}

/* ---- BPE ------------------------------------------------------------------------ */

static lm_status bpe_reserve(enc *c, size_t n)
{
    if (n <= c->sym_cap) return LM_OK;
    size_t want = n < 64 ? 64 : n + n / 2;
    lmi_free(c->sym_id);
    lmi_free(c->sym_prev);
    lmi_free(c->sym_next);
    c->sym_id = lmi_alloc_raw(want, sizeof(int32_t));
    c->sym_prev = lmi_alloc_raw(want, sizeof(int32_t));
    c->sym_next = lmi_alloc_raw(want, sizeof(int32_t));
    if (!c->sym_id || !c->sym_prev || !c->sym_next) {
        c->sym_cap = 0;
        return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (word of %zu bytes)", n);
    }
    c->sym_cap = want;
    return LM_OK;
}

/* The merge queue is an 8-ary min-heap whose sibling groups each fill one
 * 64-byte line (element j lives at heap[j + 7], heap 64-byte aligned):
 * a word of millions of bytes costs a few cache misses per operation
 * rather than one per binary level. */
#define HEAP_D 8
#define HEAP_OFF (HEAP_D - 1)

static inline lm_status heap_push(enc *c, size_t *len, uint64_t v)
{
    if (*len + HEAP_OFF >= c->heap_cap) {
        size_t want = c->heap_cap < 64 ? 64 : c->heap_cap * 2;
        uint64_t *nh = lmi_alloc_raw(want, sizeof *nh);
        if (!nh) return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (merge queue)");
        if (*len) memcpy(nh + HEAP_OFF, c->heap + HEAP_OFF, *len * sizeof *nh);
        lmi_free(c->heap);
        c->heap = nh;
        c->heap_cap = want;
    }
    uint64_t *h = c->heap + HEAP_OFF;
    size_t i = (*len)++;
    while (i > 0) {
        size_t p = (i - 1) / HEAP_D;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
    return LM_OK;
}

static inline uint64_t heap_pop(uint64_t *heap, size_t *len)
{
    uint64_t *h = heap + HEAP_OFF;
    uint64_t top = h[0], v = h[--*len];
    size_t n = *len, i = 0;
    for (;;) {
        size_t first = HEAP_D * i + 1;
        if (first >= n) break;
        size_t last = first + HEAP_D < n ? first + HEAP_D : n, m = first;
        for (size_t k = first + 1; k < last; k++)
            if (h[k] < h[m]) m = k;
        if (h[m] >= v) break;
        h[i] = h[m];
        i = m;
    }
    if (n) h[i] = v;
    return top;
}

/* One pre-token (raw bytes) through the model: every byte becomes the
 * symbol of its byte-level character, then the lowest-ranked adjacent pair
 * is merged, leftmost first, until no pair has a merge. */
static lm_status bpe_merge(enc *c, const uint8_t *w, size_t n, int32_t *save, size_t *n_save)
{
    const lm_tokenizer *t = c->t;
    *n_save = 0;
    if (n == 0) return LM_OK;
    if (t->ignore_merges) {
        /* The whole word when the vocabulary has it. */
        uint8_t tmp[256];
        if (n <= sizeof tmp / 2) {
            size_t l = 0;
            for (size_t i = 0; i < n; i++) l += lmi_utf8_put(t->byte_char[w[i]], tmp + l);
            int32_t id = lmi_tok_vocab_find(t, (const char *)tmp, l);
            if (id >= 0) {
                emit(c, id);
                if (save) save[0] = id;
                *n_save = 1;
                return LM_OK;
            }
        } else {
            uint8_t *big = lmi_alloc_raw(n, 2);
            if (!big) return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory");
            size_t l = 0;
            for (size_t i = 0; i < n; i++) l += lmi_utf8_put(t->byte_char[w[i]], big + l);
            int32_t id = lmi_tok_vocab_find(t, (const char *)big, l);
            lmi_free(big);
            if (id >= 0) {
                emit(c, id);
                if (save) save[0] = id;
                *n_save = 1;
                return LM_OK;
            }
        }
    }
    if (n == 1 && t->byte_id[w[0]] >= 0) {
        emit(c, t->byte_id[w[0]]);
        if (save) save[0] = t->byte_id[w[0]];
        *n_save = 1;
        return LM_OK;
    }
    if (n > INT32_MAX) return lmi_fail(c->e, LM_ERR_INVALID_ARGUMENT, "tokenizer: word too long");
    lm_status st = bpe_reserve(c, n);
    if (st) return st;
    int32_t *id = c->sym_id, *prev = c->sym_prev, *next = c->sym_next;

    /* Symbols; bytes without a vocabulary entry become unk (fused when
     * fuse_unk) or vanish, as in tokenizers' merge_word. */
    int32_t m = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n; i++) {
        int32_t s = t->byte_id[w[i]];
        if (s < 0) {
            if (t->unk_id < 0) continue;
            if (last_unk && t->fuse_unk) continue;
            s = t->unk_id;
            last_unk = true;
        } else {
            last_unk = false;
        }
        id[m] = s;
        prev[m] = m - 1;
        next[m] = m + 1;
        m++;
    }
    if (m == 0) return LM_OK;
    next[m - 1] = -1;

    size_t hl = 0;
    for (int32_t i = 0; i + 1 < m; i++) {
        const lmi_tok_merge *mg = lmi_tok_merge_find(t, id[i], id[i + 1]);
        if (mg && (st = heap_push(c, &hl, (uint64_t)mg->rank << 32 | (uint32_t)i))) return st;
    }
    /* Dead symbols (merged into their left neighbour) get prev = -2. */
    while (hl) {
        uint64_t top = heap_pop(c->heap, &hl);
        int32_t p = (int32_t)(uint32_t)top;
        uint32_t rank = (uint32_t)(top >> 32);
        if (prev[p] == -2 || next[p] < 0) continue;
        int32_t q = next[p];
        const lmi_tok_merge *mg = lmi_tok_merge_find(t, id[p], id[q]);
        /* Stale entry: the pair at p changed since it was queued (a pair's
         * rank identifies it, ranks being unique). */
        if (!mg || mg->rank != rank) continue;
        id[p] = mg->id;
        next[p] = next[q];
        prev[q] = -2;
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            const lmi_tok_merge *a = lmi_tok_merge_find(t, id[prev[p]], id[p]);
            if (a && (st = heap_push(c, &hl, (uint64_t)a->rank << 32 | (uint32_t)prev[p]))) return st;
        }
        if (next[p] >= 0) {
            const lmi_tok_merge *b = lmi_tok_merge_find(t, id[p], id[next[p]]);
            if (b && (st = heap_push(c, &hl, (uint64_t)b->rank << 32 | (uint32_t)p))) return st;
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) {
        emit(c, id[i]);
        if (save) save[k] = id[i];
        k++;
    }
    *n_save = k;
    return LM_OK;
}

static uint32_t word_hash(const uint8_t *w, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, w + i, 8);
        h = (h ^ x) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    uint64_t x = 0;
    memcpy(&x, w + i, n - i);
    h = (h ^ x) * 0xC4CEB9FE1A85EC53ull;
    return (uint32_t)(h ^ (h >> 29));
}

/* BPE of one pre-token through the call's word cache. */
static lm_status bpe(enc *c, const uint8_t *w, size_t n)
{
    size_t got;
    if (n < 2 || n > WC_MAX_WORD) return bpe_merge(c, w, n, NULL, &got);
    if (!c->wc_slot) {
        c->wc_slot = lmi_alloc(c->wc_slots, sizeof *c->wc_slot);
        c->wc_arena = lmi_alloc_raw(c->wc_arena_cap, 1);
        if (!c->wc_slot || !c->wc_arena)
            return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (word cache)");
    }
    uint32_t h = word_hash(w, n);
    size_t mask = c->wc_slots - 1, i = h & mask;
    for (; c->wc_slot[i]; i = (i + 1) & mask) {
        const uint8_t *e = c->wc_arena + c->wc_slot[i] - 1;
        uint32_t len, cnt;
        memcpy(&len, e, 4);
        if (len != n || memcmp(e + 8, w, n) != 0) continue;
        memcpy(&cnt, e + 4, 4);
        const uint8_t *ids = e + 8 + ((n + 3) & ~(size_t)3);
        for (uint32_t k = 0; k < cnt; k++) {
            int32_t id;
            memcpy(&id, ids + 4 * k, 4);
            emit(c, id);
        }
        return LM_OK;
    }
    /* Miss: merge, then record (at most n ids). */
    size_t need = 8 + ((n + 3) & ~(size_t)3) + 4 * n;
    if (c->wc_used + need > c->wc_arena_cap || c->wc_count >= c->wc_slots / 2) {
        memset(c->wc_slot, 0, c->wc_slots * sizeof *c->wc_slot);
        c->wc_used = c->wc_count = 0;
        i = h & mask;
    }
    uint8_t *e = c->wc_arena + c->wc_used;
    int32_t *save = (int32_t *)(void *)(e + 8 + ((n + 3) & ~(size_t)3));
    lm_status st = bpe_merge(c, w, n, save, &got);
    if (st) return st;
    uint32_t len = (uint32_t)n, cnt = (uint32_t)got;
    memcpy(e, &len, 4);
    memcpy(e + 4, &cnt, 4);
    memcpy(e + 8, w, n);
    c->wc_slot[i] = (uint32_t)c->wc_used + 1;
    c->wc_used += 8 + ((n + 3) & ~(size_t)3) + 4 * got;
    c->wc_count++;
    return LM_OK;
}

/* ---- pre-tokenization -------------------------------------------------------------- */

static lm_status regex_split(enc *c, const uint8_t *s, size_t n)
{
    const lm_tokenizer *t = c->t;
    if (!t->use_regex) return bpe(c, s, n);
    size_t pos = 0;
    uint32_t opts = PCRE2_NO_UTF_CHECK;
    lm_status st;
    while (pos < n) {
        int rc = pcre2_match(t->re, s, n, pos, opts, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(opts & PCRE2_NO_JIT)) {
            opts |= PCRE2_NO_JIT;   /* the interpreter keeps its frames on the heap */
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lmi_fail(c->e, rc == PCRE2_ERROR_NOMEMORY ? LM_ERR_NO_MEMORY : LM_ERR_INVALID_ARGUMENT,
                            "tokenizer: regex split failed at byte %zu: %s", pos, (char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > pos && (st = bpe(c, s + pos, ms - pos))) return st;
        if (me == ms) {
            /* Cannot happen with the GPT-2 pattern; never loop on an
             * empty match. */
            size_t l;
            if (me >= n) break;
            lmi_utf8_next(s + me, &l);
            if ((st = bpe(c, s + me, l))) return st;
            pos = me + l;
            continue;
        }
        if ((st = bpe(c, s + ms, me - ms))) return st;
        pos = me;
    }
    if (pos < n) return bpe(c, s + pos, n - pos);
    return LM_OK;
}

/* A normalized piece that is not an added token. */
static lm_status piece(enc *c, const uint8_t *s, size_t n)
{
    if (c->t->add_prefix_space && s[0] != ' ') {
        if (c->pre_cap < n + 1) {
            lmi_free(c->pre);
            c->pre_cap = n + 1 + n / 2;
            c->pre = lmi_alloc_raw(c->pre_cap, 1);
            if (!c->pre) {
                c->pre_cap = 0;
                return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory");
            }
        }
        c->pre[0] = ' ';
        memcpy(c->pre + 1, s, n);
        return regex_split(c, c->pre, n + 1);
    }
    return regex_split(c, s, n);
}

typedef lm_status (*segment_fn)(enc *c, const uint8_t *s, size_t n);

/* Leftmost-longest matches of the trie's tokens become their ids; the
 * non-empty gaps go to fn. */
static lm_status split_added(enc *c, const lmi_tok_trie *tr, const uint8_t *s, size_t n,
                             segment_fn fn)
{
    if (!tr->nodes) return n ? fn(c, s, n) : LM_OK;
    size_t start = 0, i = 0;
    lm_status st;
    while (i < n) {
        int32_t node = tr->root[s[i]];
        int32_t best = -1;
        size_t best_end = 0, j = i;
        while (node >= 0) {
            j++;
            if (tr->nodes[node].token >= 0) {
                best = tr->nodes[node].token;
                best_end = j;
            }
            if (j >= n) break;
            int32_t ch = tr->nodes[node].child;
            while (ch >= 0 && tr->nodes[ch].byte != s[j]) ch = tr->nodes[ch].sibling;
            node = ch;
        }
        if (best < 0) {
            i++;
            continue;
        }
        if (i > start && (st = fn(c, s + start, i - start))) return st;
        emit(c, best);
        i = start = best_end;
    }
    if (start < n) return fn(c, s + start, n - start);
    return LM_OK;
}

/* A piece between raw added tokens: normalize, then split on the
 * normalized added tokens. */
static lm_status norm_append(enc *c, size_t *len, const uint8_t *s, size_t n)
{
    if (n == 0) return LM_OK;
    if (*len + n > c->norm_cap) {
        size_t want = (*len + n) * 2 + 64;
        uint8_t *nb = lmi_alloc_raw(want, 1);
        if (!nb) return lmi_fail(c->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (NFC)");
        if (*len) memcpy(nb, c->norm, *len);
        lmi_free(c->norm);
        c->norm = nb;
        c->norm_cap = want;
    }
    memcpy(c->norm + *len, s, n);
    *len += n;
    return LM_OK;
}

/* NFC of a segment, chunk by chunk: no ASCII character has a canonical
 * decomposition, a non-zero combining class or a place as the second
 * half of a composition, so cutting just before one changes nothing.
 * Only the non-ASCII runs (with the character before each, which may be
 * the first half of a composition) that hold a byte >= 0xCC go through
 * utf8proc. */
static lm_status nfc_segment(enc *c, const uint8_t *s, size_t n, size_t *out_len)
{
    size_t len = 0, i = 0;
    lm_status st;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] < 0x80) j++;
        if (j == n) {
            if ((st = norm_append(c, &len, s + i, n - i))) return st;
            break;
        }
        size_t j0 = j > i ? j - 1 : j, k = j;
        while (k < n && s[k] >= 0x80) k++;
        if ((st = norm_append(c, &len, s + i, j0 - i))) return st;
        if (maybe_not_nfc(s + j, k - j)) {
            size_t nn = 0;
            if ((st = nfc_into(s + j0, k - j0, &c->nfc, &c->nfc_cap, &c->nfc_tmp, &c->nfc_tmp_cap, &nn,
                               c->e))) return st;
            if ((st = norm_append(c, &len, (const uint8_t *)c->nfc, nn))) return st;
        } else if ((st = norm_append(c, &len, s + j0, k - j0))) {
            return st;
        }
        i = k;
    }
    *out_len = len;
    return LM_OK;
}

static lm_status raw_segment(enc *c, const uint8_t *s, size_t n)
{
    const lm_tokenizer *t = c->t;
    if (t->nfc && maybe_not_nfc(s, n)) {
        size_t nn = 0;
        lm_status st = nfc_segment(c, s, n, &nn);
        if (st) return st;
        return split_added(c, &t->added_norm, c->norm, nn, piece);
    }
    return split_added(c, &t->added_norm, s, n, piece);
}

lm_status lmi_tok_encode(const lm_tokenizer *t, const uint8_t *text, size_t n, int32_t *ids,
                         size_t cap, size_t *n_ids, lmi_err *e)
{
    enc c = {.t = t, .out = ids, .cap = cap, .e = e};
    /* The word cache grows with the text up to 16k words / 4 MB (an entry
     * takes at most 8 + 64 + 256 bytes). */
    c.wc_slots = 256;
    while (c.wc_slots < WC_MAX_SLOTS && c.wc_slots < n / 4) c.wc_slots *= 2;
    c.wc_arena_cap = c.wc_slots * 256 < WC_MAX_ARENA ? c.wc_slots * 256 : WC_MAX_ARENA;
    uint8_t *clean = NULL;
    lm_status st = LM_OK;
    if (lmi_utf8_valid_prefix(text, n) != n) {
        if (n > SIZE_MAX / 3)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "tokenizer: text too long");
        clean = lmi_alloc_raw(n, 3);
        if (!clean) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (%zu bytes)", n);
        n = lmi_utf8_sanitize(text, n, clean);
        text = clean;
    }
    if (t->re) {
        c.md = pcre2_match_data_create_from_pattern(t->re, t->re_gctx);
        if (!c.md) {
            st = lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (regex match data)");
            goto out;
        }
    }
    st = split_added(&c, &t->added_raw, text, n, raw_segment);
out:
    if (c.md) pcre2_match_data_free(c.md);
    lmi_free(c.nfc);
    lmi_free(c.nfc_tmp);
    lmi_free(c.pre);
    lmi_free(c.sym_id);
    lmi_free(c.sym_prev);
    lmi_free(c.sym_next);
    lmi_free(c.heap);
    lmi_free(c.norm);
    lmi_free(c.wc_slot);
    lmi_free(c.wc_arena);
    lmi_free(clean);
    if (st) return st;
    *n_ids = c.n;
    if (c.n > cap)
        return lmi_fail(e, LM_ERR_BUFFER_TOO_SMALL, "tokenizer: %zu ids do not fit in %zu", c.n, cap);
    return LM_OK;
}
