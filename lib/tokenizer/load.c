/*
 * load.c - tokenizer.json (Hugging Face `tokenizers` serialization) to an
 * immutable lm_tokenizer.
 *
 * Accepted: model BPE (merges as "a b" strings or ["a", "b"] pairs) with
 * dropout null/0, continuing_subword_prefix and end_of_word_suffix
 * null/"", byte_fallback false, unk_token/fuse_unk/ignore_merges as
 * tokenizers applies them; normalizer null or NFC; pre_tokenizer ByteLevel;
 * post_processor null or ByteLevel (neither changes ids); decoder
 * ByteLevel; truncation and padding null; added tokens with single_word,
 * lstrip and rstrip false.  Anything else that would change the ids is
 * LM_ERR_UNSUPPORTED rather than silently different output.
 */
#include "tokenizer/tok.h"

#include "format/json.h"

#include <string.h>

/* ---- the GPT-2 byte alphabet ----------------------------------------------
 * bytes_to_unicode(): printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF)
 * stand for themselves, the other 68 map to U+0100 + k in byte order. */
static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t lmi_tok_byte_char(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    uint32_t k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!byte_is_printable(x)) k++;
    return 0x100 + k;
}

int lmi_tok_char_byte(uint32_t cp)
{
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (unsigned x = 0; x < 256; x++) {
        if (byte_is_printable(x)) continue;
        if (k == 0) return (int)x;
        k--;
    }
    return -1;
}

/* ---- string hash ---------------------------------------------------------- */

static uint64_t str_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static const char *tok_str(const lm_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->str_off[id + 1] - t->str_off[id];
    return t->str_blob + t->str_off[id];
}

int32_t lmi_tok_vocab_find(const lm_tokenizer *t, const char *s, size_t len)
{
    size_t i = (size_t)str_hash(s, len) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        size_t n;
        const char *x = tok_str(t, id, &n);
        if (n == len && memcmp(x, s, len) == 0) return id;
        i = (i + 1) & t->vocab_mask;
    }
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

/* ---- added-token trie ----------------------------------------------------- */

lm_status lmi_tok_trie_add(lmi_tok_trie *tr, const uint8_t *s, size_t n, int32_t token, lmi_err *e)
{
    if (!tr->nodes) {
        tr->cap = 64;
        tr->nodes = lmi_alloc(tr->cap, sizeof *tr->nodes);
        if (!tr->nodes) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (trie)");
        tr->nodes[0] = (lmi_tok_trie_node){-1, -1, -1, 0};
        tr->n = 1;
        for (int b = 0; b < 256; b++) tr->root[b] = -1;
    }
    int32_t cur = 0;
    for (size_t k = 0; k < n; k++) {
        int32_t child = k == 0 ? tr->root[s[0]] : tr->nodes[cur].child;
        while (child >= 0 && tr->nodes[child].byte != s[k]) child = tr->nodes[child].sibling;
        if (child < 0) {
            if (tr->n == tr->cap) {
                lmi_tok_trie_node *nn = lmi_alloc(tr->cap * 2, sizeof *nn);
                if (!nn) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (trie)");
                memcpy(nn, tr->nodes, tr->n * sizeof *nn);
                lmi_free(tr->nodes);
                tr->nodes = nn;
                tr->cap *= 2;
            }
            child = (int32_t)tr->n++;
            tr->nodes[child].byte = s[k];
            tr->nodes[child].child = -1;
            tr->nodes[child].token = -1;
            if (k == 0) {
                tr->nodes[child].sibling = -1;
                tr->root[s[0]] = child;
            } else {
                tr->nodes[child].sibling = tr->nodes[cur].child;
                tr->nodes[cur].child = child;
            }
        }
        cur = child;
    }
    if (tr->nodes[cur].token >= 0 && tr->nodes[cur].token != token)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer: added tokens %d and %d have the same content",
                        tr->nodes[cur].token, token);
    tr->nodes[cur].token = token;
    return LM_OK;
}

/* ---- JSON helpers --------------------------------------------------------- */

static bool j_is_null(const lmi_json *j) { return !j || j->type == LMI_JSON_NULL; }

/* Optional boolean member: absent or null gives def. */
static lm_status j_bool(const lmi_json *obj, const char *key, bool def, bool *out,
                        const char *where, lmi_err *e)
{
    const lmi_json *j = lmi_json_get(obj, key);
    if (j_is_null(j)) {
        *out = def;
        return LM_OK;
    }
    if (j->type != LMI_JSON_TRUE && j->type != LMI_JSON_FALSE)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: %s.%s is not a boolean", where, key);
    *out = j->type == LMI_JSON_TRUE;
    return LM_OK;
}

/* The "type" string of a component object, or NULL when it has none. */
static const char *j_type(const lmi_json *obj)
{
    const lmi_json *ty = lmi_json_get(obj, "type");
    if (!ty || ty->type != LMI_JSON_STRING) return NULL;
    return ty->str;
}

/* ---- loading --------------------------------------------------------------- */

typedef struct loader {
    lm_tokenizer *t;
    lmi_err *e;
    const lmi_json *vocab;
    const lmi_json *added;      /* array or NULL */
} loader;

static lm_status check_components(const lmi_json *root, lm_tokenizer *t, lmi_err *e)
{
    const char *ty;
    const lmi_json *trunc = lmi_json_get(root, "truncation");
    if (!j_is_null(trunc))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: truncation is not supported");
    const lmi_json *pad = lmi_json_get(root, "padding");
    if (!j_is_null(pad))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: padding is not supported");

    const lmi_json *norm = lmi_json_get(root, "normalizer");
    if (j_is_null(norm)) {
        t->nfc = false;
    } else {
        ty = norm->type == LMI_JSON_OBJECT ? j_type(norm) : NULL;
        if (!ty) return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: normalizer has no type");
        if (strcmp(ty, "NFC") != 0)
            return lmi_fail(e, LM_ERR_UNSUPPORTED,
                            "tokenizer.json: normalizer %s is not supported (only NFC)", ty);
        t->nfc = true;
    }

    const lmi_json *pre = lmi_json_get(root, "pre_tokenizer");
    if (j_is_null(pre))
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tokenizer.json: a ByteLevel pre_tokenizer is required");
    ty = pre->type == LMI_JSON_OBJECT ? j_type(pre) : NULL;
    if (!ty) return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: pre_tokenizer has no type");
    if (strcmp(ty, "ByteLevel") != 0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tokenizer.json: pre_tokenizer %s is not supported (only ByteLevel)", ty);
    lm_status st = j_bool(pre, "add_prefix_space", true, &t->add_prefix_space, "pre_tokenizer", e);
    if (st) return st;
    if ((st = j_bool(pre, "use_regex", true, &t->use_regex, "pre_tokenizer", e))) return st;
    bool trim = true;  /* only moves offsets, which this API does not return */
    if ((st = j_bool(pre, "trim_offsets", true, &trim, "pre_tokenizer", e))) return st;

    const lmi_json *post = lmi_json_get(root, "post_processor");
    if (!j_is_null(post)) {
        ty = post->type == LMI_JSON_OBJECT ? j_type(post) : NULL;
        if (!ty) return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: post_processor has no type");
        if (strcmp(ty, "ByteLevel") != 0)
            return lmi_fail(e, LM_ERR_UNSUPPORTED,
                            "tokenizer.json: post_processor %s is not supported (only ByteLevel)",
                            ty);
    }

    const lmi_json *dec = lmi_json_get(root, "decoder");
    if (j_is_null(dec))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: a ByteLevel decoder is required");
    ty = dec->type == LMI_JSON_OBJECT ? j_type(dec) : NULL;
    if (!ty) return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: decoder has no type");
    if (strcmp(ty, "ByteLevel") != 0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tokenizer.json: decoder %s is not supported (only ByteLevel)", ty);
    return LM_OK;
}

static lm_status check_model_options(const lmi_json *model, lm_tokenizer *t, lmi_err *e)
{
    const char *ty = j_type(model);
    if (lmi_json_get(model, "type") && !ty)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model.type is not a string");
    if (ty && strcmp(ty, "BPE") != 0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: model %s is not supported (only BPE)",
                        ty);
    const lmi_json *drop = lmi_json_get(model, "dropout");
    if (!j_is_null(drop)) {
        if (drop->type != LMI_JSON_NUMBER)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model.dropout is not a number");
        if (drop->num != 0.0)
            return lmi_fail(e, LM_ERR_UNSUPPORTED,
                            "tokenizer.json: BPE dropout %g is not supported", drop->num);
    }
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t k = 0; k < 2; k++) {
        const lmi_json *a = lmi_json_get(model, affixes[k]);
        if (j_is_null(a)) continue;
        if (a->type != LMI_JSON_STRING)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model.%s is not a string", affixes[k]);
        if (a->len != 0)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: model.%s \"%s\" is not supported",
                            affixes[k], a->str);
    }
    bool bf = false;
    lm_status st = j_bool(model, "byte_fallback", false, &bf, "model", e);
    if (st) return st;
    if (bf) return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.json: model.byte_fallback is not supported");
    if ((st = j_bool(model, "fuse_unk", false, &t->fuse_unk, "model", e))) return st;
    if ((st = j_bool(model, "ignore_merges", false, &t->ignore_merges, "model", e))) return st;
    return LM_OK;
}

static lm_status check_id(const lmi_json *j, const char *what, const char *name, int64_t *id,
                          lmi_err *e)
{
    if (!j || j->type != LMI_JSON_NUMBER || !j->is_integer)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: %s \"%.64s\" has no integer id", what,
                        name);
    if (j->integer < 0 || j->integer >= LMI_TOK_MAX_IDS)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: %s \"%.64s\" has id %lld outside [0, %d)",
                        what, name, (long long)j->integer, LMI_TOK_MAX_IDS);
    *id = j->integer;
    return LM_OK;
}

/* First pass over vocab and added tokens: n_ids and the string blob size. */
static lm_status size_tables(loader *L, size_t *blob)
{
    int64_t max_id = -1;
    size_t bytes = 0;
    const lmi_json *v = L->vocab;
    for (size_t k = 0; k < v->len; k++) {
        int64_t id = 0;
        lm_status st = check_id(&v->items[k], "vocab token", v->keys[k], &id, L->e);
        if (st) return st;
        if (id > max_id) max_id = id;
        bytes += v->key_lens[k];
    }
    if (L->added) {
        for (size_t k = 0; k < L->added->len; k++) {
            const lmi_json *a = &L->added->items[k];
            if (a->type != LMI_JSON_OBJECT)
                return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] is not an object",
                                k);
            const lmi_json *c = lmi_json_get(a, "content");
            if (!c || c->type != LMI_JSON_STRING)
                return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] has no content",
                                k);
            if (c->len == 0)
                return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] is empty", k);
            int64_t id = 0;
            lm_status st = check_id(lmi_json_get(a, "id"), "added token", c->str, &id, L->e);
            if (st) return st;
            if (id > max_id) max_id = id;
            bytes += c->len;
        }
    }
    if (max_id < 0) return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: the vocabulary is empty");
    L->t->n_ids = max_id + 1;
    *blob = bytes;
    return LM_OK;
}

static lm_status load_vocab(loader *L)
{
    lm_tokenizer *t = L->t;
    const lmi_json *v = L->vocab;
    size_t n_ids = (size_t)t->n_ids;
    /* Strings are placed in id order so that str_off is monotonic. */
    size_t *len = lmi_alloc(n_ids, sizeof *len);
    int32_t *src = lmi_alloc(n_ids, sizeof *src);   /* vocab index + 1 of each id */
    if (!len || !src) {
        lmi_free(len);
        lmi_free(src);
        return lmi_fail(L->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (vocab)");
    }
    lm_status st = LM_OK;
    for (size_t k = 0; k < v->len; k++) {
        size_t id = (size_t)v->items[k].integer;
        if (src[id]) {
            st = lmi_fail(L->e, LM_ERR_FORMAT,
                          "tokenizer.json: duplicate id %zu in vocab (\"%.64s\" and \"%.64s\")", id,
                          v->keys[src[id] - 1], v->keys[k]);
            goto out;
        }
        src[id] = (int32_t)k + 1;
        len[id] = v->key_lens[k];
    }
    t->str_off[0] = 0;
    for (size_t id = 0; id < n_ids; id++) {
        if (src[id]) memcpy(t->str_blob + t->str_off[id], v->keys[src[id] - 1], len[id]);
        t->str_off[id + 1] = t->str_off[id] + (src[id] ? len[id] : 0);
    }
    for (size_t id = 0; id < n_ids; id++)
        if (src[id]) t->defined[id] = 1;
    st = lmi_tok_vocab_index(t, v->len, "tokenizer.json: vocab token", L->e);
out:
    lmi_free(len);
    lmi_free(src);
    return st;
}

/* Hashes every model id (defined == 1) into t->vocab_slots by its string;
 * a string seen twice is an error named by `what`. */
static lm_status vocab_fill(lm_tokenizer *t, const char *what, lmi_err *e)
{
    memset(t->vocab_slots, 0xff, (t->vocab_mask + 1) * sizeof *t->vocab_slots);
    for (size_t id = 0; id < (size_t)t->n_ids; id++) {
        if (t->defined[id] != 1) continue;
        size_t n;
        const char *s = tok_str(t, (int32_t)id, &n);
        size_t i = (size_t)str_hash(s, n) & t->vocab_mask;
        while (t->vocab_slots[i] >= 0) {
            size_t m;
            const char *x = tok_str(t, t->vocab_slots[i], &m);
            if (m == n && memcmp(x, s, n) == 0)
                return lmi_fail(e, LM_ERR_FORMAT, "%s \"%.*s\" repeats", what,
                                (int)(n > 64 ? 64 : n), s);
            i = (i + 1) & t->vocab_mask;
        }
        t->vocab_slots[i] = (int32_t)id;
    }
    return LM_OK;
}

lm_status lmi_tok_vocab_index(lm_tokenizer *t, size_t n_strings, const char *what, lmi_err *e)
{
    t->vocab_mask = pow2_at_least(n_strings * 2) - 1;
    t->vocab_slots = lmi_alloc(t->vocab_mask + 1, sizeof *t->vocab_slots);
    if (!t->vocab_slots) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (vocab)");
    return vocab_fill(t, what, e);
}

lm_status lmi_tok_merges_alloc(lm_tokenizer *t, size_t n, lmi_err *e)
{
    if (n >= UINT32_MAX / 2)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer: too many merges (%zu)", n);
    t->merge_mask = pow2_at_least(n * 2 + 2) - 1;
    t->merges = lmi_alloc_raw(t->merge_mask + 1, sizeof *t->merges);
    if (!t->merges) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (merges)");
    for (size_t i = 0; i <= t->merge_mask; i++) t->merges[i].key = LMI_TOK_EMPTY;
    return LM_OK;
}

lm_status lmi_tok_merge_add(lm_tokenizer *t, size_t r, const char *a, size_t la, const char *b,
                            size_t lb, const char *what, lmi_err *e)
{
    int32_t ia = lmi_tok_vocab_find(t, a, la), ib = lmi_tok_vocab_find(t, b, lb);
    if (ia < 0 || ib < 0)
        return lmi_fail(e, LM_ERR_FORMAT, "%s %zu uses \"%.*s\", not in vocab", what, r,
                        (int)(ia < 0 ? (la > 64 ? 64 : la) : (lb > 64 ? 64 : lb)), ia < 0 ? a : b);
    /* The merged string, on the stack when short (it almost always is). */
    char small[256];
    char *joined = la + lb <= sizeof small ? small : lmi_alloc_raw(la + lb, 1);
    if (!joined) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (merges)");
    memcpy(joined, a, la);
    memcpy(joined + la, b, lb);
    int32_t id = lmi_tok_vocab_find(t, joined, la + lb);
    lm_status st = LM_OK;
    if (id < 0)
        st = lmi_fail(e, LM_ERR_FORMAT, "%s %zu result \"%.*s\" is not in vocab", what, r,
                      (int)(la + lb > 64 ? 64 : la + lb), joined);
    if (joined != small) lmi_free(joined);
    if (st != LM_OK) return st;
    /* A repeated pair takes the later rank (tokenizers collects the
     * merges into a map). */
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & t->merge_mask;
    while (t->merges[i].key != LMI_TOK_EMPTY && t->merges[i].key != key)
        i = (i + 1) & t->merge_mask;
    t->merges[i].key = key;
    t->merges[i].rank = (uint32_t)r;
    t->merges[i].id = id;
    return LM_OK;
}

static lm_status load_merges(loader *L, const lmi_json *merges)
{
    lm_tokenizer *t = L->t;
    if (merges->type != LMI_JSON_ARRAY)
        return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: model.merges is not an array");
    lm_status st = lmi_tok_merges_alloc(t, merges->len, L->e);
    if (st) return st;
    for (size_t r = 0; r < merges->len; r++) {
        const lmi_json *m = &merges->items[r];
        const char *a, *b;
        size_t la, lb;
        if (m->type == LMI_JSON_STRING) {
            /* "a b": split at the first space, as tokenizers does. */
            const char *sp = memchr(m->str, ' ', m->len);
            if (!sp)
                return lmi_fail(L->e, LM_ERR_FORMAT,
                                "tokenizer.json: merge %zu \"%.64s\" is not \"a b\"", r, m->str);
            a = m->str;
            la = (size_t)(sp - m->str);
            b = sp + 1;
            lb = m->len - la - 1;
        } else if (m->type == LMI_JSON_ARRAY && m->len == 2 &&
                   m->items[0].type == LMI_JSON_STRING && m->items[1].type == LMI_JSON_STRING) {
            a = m->items[0].str;
            la = m->items[0].len;
            b = m->items[1].str;
            lb = m->items[1].len;
        } else {
            return lmi_fail(L->e, LM_ERR_FORMAT,
                            "tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", r);
        }
        if ((st = lmi_tok_merge_add(t, r, a, la, b, lb, "tokenizer.json: merge", L->e))) return st;
    }
    return LM_OK;
}

static lm_status load_added(loader *L)
{
    lm_tokenizer *t = L->t;
    if (!L->added) return LM_OK;
    size_t n_vocab_bytes = t->str_off[t->n_ids];
    /* Added-token contents go after the vocab strings; str_off is rebuilt
     * for ids the vocab did not define. */
    for (size_t k = 0; k < L->added->len; k++) {
        const lmi_json *a = &L->added->items[k];
        const lmi_json *c = lmi_json_get(a, "content");
        int32_t id = (int32_t)lmi_json_get(a, "id")->integer;
        static const char *const flags[] = {"single_word", "lstrip", "rstrip"};
        for (size_t f = 0; f < 3; f++) {
            bool v = false;
            lm_status st = j_bool(a, flags[f], false, &v, "added_tokens[]", L->e);
            if (st) return st;
            if (v)
                return lmi_fail(L->e, LM_ERR_UNSUPPORTED,
                                "tokenizer.json: added token \"%.64s\" sets %s (not supported)",
                                c->str, flags[f]);
        }
        bool special = false, normalized = false;
        lm_status st = j_bool(a, "special", false, &special, "added_tokens[]", L->e);
        if (st) return st;
        if ((st = j_bool(a, "normalized", !special, &normalized, "added_tokens[]", L->e))) return st;

        int32_t in_vocab = lmi_tok_vocab_find(t, c->str, c->len);
        if (in_vocab >= 0 && in_vocab != id)
            return lmi_fail(L->e, LM_ERR_FORMAT,
                            "tokenizer.json: added token \"%.64s\" has id %d but the vocab gives %d",
                            c->str, id, in_vocab);
        if (in_vocab < 0) {
            if (t->defined[id])
                return lmi_fail(L->e, LM_ERR_FORMAT,
                                "tokenizer.json: added token \"%.64s\" reuses id %d", c->str, id);
            /* Not in the model: record its string (ids are placed in blob
             * order below). */
            t->defined[id] = 2;
        }

        lmi_tok_trie *tr = normalized ? &t->added_norm : &t->added_raw;
        if (normalized && t->nfc) {
            uint8_t *nf;
            size_t nfl;
            if (lmi_utf8_valid_prefix((const uint8_t *)c->str, c->len) != c->len)
                return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: added token %d is not UTF-8", id);
            if ((st = lmi_tok_nfc_alloc((const uint8_t *)c->str, c->len, &nf, &nfl, L->e))) return st;
            st = lmi_tok_trie_add(tr, nf, nfl, id, L->e);
            lmi_free(nf);
        } else {
            st = lmi_tok_trie_add(tr, (const uint8_t *)c->str, c->len, id, L->e);
        }
        if (st) return st;
        t->n_added++;
    }
    /* Strings of added-only ids: rebuild the offsets in id order. */
    size_t *len = lmi_alloc((size_t)t->n_ids, sizeof *len);
    const char **src = lmi_alloc((size_t)t->n_ids, sizeof *src);
    if (!len || !src) {
        lmi_free(len);
        lmi_free(src);
        return lmi_fail(L->e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (added tokens)");
    }
    for (size_t k = 0; k < L->added->len; k++) {
        const lmi_json *a = &L->added->items[k];
        const lmi_json *c = lmi_json_get(a, "content");
        int32_t id = (int32_t)lmi_json_get(a, "id")->integer;
        if (t->defined[id] != 2) continue;
        if (src[id]) {
            lmi_free(len);
            lmi_free(src);
            return lmi_fail(L->e, LM_ERR_FORMAT, "tokenizer.json: added tokens share id %d", id);
        }
        src[id] = c->str;
        len[id] = c->len;
    }
    /* Move strings: new offsets grow by the added lengths before each id;
     * walk backwards so that nothing is overwritten before it is moved. */
    size_t extra = 0;
    for (size_t id = 0; id < (size_t)t->n_ids; id++)
        if (src[id]) extra += len[id];
    size_t end = n_vocab_bytes + extra;
    for (size_t id = (size_t)t->n_ids; id-- > 0;) {
        size_t n = src[id] ? len[id] : t->str_off[id + 1] - t->str_off[id];
        size_t old = t->str_off[id];
        t->str_off[id + 1] = end;
        end -= n;
        if (src[id]) memcpy(t->str_blob + end, src[id], n);
        else memmove(t->str_blob + end, t->str_blob + old, n);
    }
    t->str_off[0] = 0;
    lmi_free(len);
    lmi_free(src);
    /* The string table hashes model ids by their offsets: rebuild it (the
     * same strings, found distinct when it was built). */
    return vocab_fill(t, "tokenizer.json: vocab token", L->e);
}

/* ByteLevel decoder: a token whose every character is in the byte
 * alphabet decodes to those bytes, any other token to its own UTF-8. */
static lm_status build_decode(lm_tokenizer *t, lmi_err *e)
{
    size_t n_ids = (size_t)t->n_ids;
    size_t total = t->str_off[n_ids];   /* decoded never longer than the string */
    t->dec_blob = lmi_alloc_raw(total ? total : 1, 1);
    if (!t->dec_blob) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (decode table)");
    size_t w = 0;
    t->dec_off[0] = 0;
    for (size_t id = 0; id < n_ids; id++) {
        size_t n;
        const uint8_t *s = (const uint8_t *)tok_str(t, (int32_t)id, &n);
        size_t start = w;
        bool all = lmi_utf8_valid_prefix(s, n) == n;
        for (size_t i = 0; all && i < n;) {
            size_t l;
            int b = lmi_tok_char_byte(lmi_utf8_next(s + i, &l));
            if (b < 0) {
                all = false;
                break;
            }
            t->dec_blob[w++] = (uint8_t)b;
            i += l;
        }
        if (!all) {
            w = start;
            memcpy(t->dec_blob + w, s, n);
            w += n;
        }
        t->dec_off[id + 1] = w;
    }
    return LM_OK;
}

static lm_status build(loader *L, const lmi_json *root)
{
    lm_tokenizer *t = L->t;
    lmi_err *e = L->e;
    if (root->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: the top level is not an object");
    lm_status st = check_components(root, t, e);
    if (st) return st;
    const lmi_json *model = lmi_json_get(root, "model");
    if (j_is_null(model)) return lmi_fail(e, LM_ERR_MISSING, "tokenizer.json: no model");
    if (model->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model is not an object");
    if ((st = check_model_options(model, t, e))) return st;
    L->vocab = lmi_json_get(model, "vocab");
    if (j_is_null(L->vocab)) return lmi_fail(e, LM_ERR_MISSING, "tokenizer.json: model.vocab is missing");
    if (L->vocab->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
    const lmi_json *merges = lmi_json_get(model, "merges");
    if (j_is_null(merges))
        return lmi_fail(e, LM_ERR_MISSING, "tokenizer.json: model.merges is missing");
    const lmi_json *added = lmi_json_get(root, "added_tokens");
    if (!j_is_null(added)) {
        if (added->type != LMI_JSON_ARRAY)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: added_tokens is not an array");
        L->added = added;
    }

    size_t blob = 0;
    if ((st = size_tables(L, &blob))) return st;
    size_t n_ids = (size_t)t->n_ids;
    t->str_blob = lmi_alloc_raw(blob ? blob : 1, 1);
    t->str_off = lmi_alloc(n_ids + 1, sizeof *t->str_off);
    t->dec_off = lmi_alloc(n_ids + 1, sizeof *t->dec_off);
    t->defined = lmi_alloc(n_ids, 1);
    if (!t->str_blob || !t->str_off || !t->dec_off || !t->defined)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (%zu ids)", n_ids);
    if ((st = load_vocab(L))) return st;
    if ((st = load_merges(L, merges))) return st;

    t->unk_id = -1;
    const lmi_json *unk = lmi_json_get(model, "unk_token");
    if (!j_is_null(unk)) {
        if (unk->type != LMI_JSON_STRING)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: model.unk_token is not a string");
        t->unk_id = lmi_tok_vocab_find(t, unk->str, unk->len);
        if (t->unk_id < 0)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.json: unk_token \"%.64s\" is not in vocab",
                            unk->str);
    }
    if ((st = load_added(L))) return st;
    return lmi_tok_finish(t, e);
}

lm_status lmi_tok_finish(lm_tokenizer *t, lmi_err *e)
{
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        t->byte_char[b] = lmi_tok_byte_char((uint8_t)b);
        size_t n = lmi_utf8_put(t->byte_char[b], u);
        t->byte_id[b] = lmi_tok_vocab_find(t, (const char *)u, n);
    }
    lm_status st = build_decode(t, e);
    if (st) return st;

    if (t->use_regex) {
        /* GPT-2's split pattern; PCRE2 with UTF and Unicode properties
         * matches it like the Oniguruma build tokenizers uses. */
        static const char pattern[] =
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
        int code;
        PCRE2_SIZE off;
        pcre2_compile_context *cc = pcre2_compile_context_create(t->re_gctx);
        if (!cc) return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (regex)");
        t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                              &code, &off, cc);
        pcre2_compile_context_free(cc);
        if (!t->re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof msg);
            return lmi_fail(e, code == PCRE2_ERROR_HEAP_FAILED ? LM_ERR_NO_MEMORY : LM_ERR_UNSUPPORTED,
                            "tokenizer: PCRE2 cannot compile the split pattern: %s", (char *)msg);
        }
        /* JIT is only a speed-up: the interpreter gives the same matches. */
        (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    }
    return LM_OK;
}

static void *gctx_alloc(size_t n, void *user)
{
    (void)user;
    return lmi_alloc_raw(n, 1);
}

static void gctx_free(void *p, void *user)
{
    (void)user;
    lmi_free(p);
}

lm_tokenizer *lmi_tok_new(lmi_err *e)
{
    lm_tokenizer *t = lmi_alloc(1, sizeof *t);
    if (!t) {
        lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory");
        return NULL;
    }
    t->unk_id = -1;
    t->re_gctx = pcre2_general_context_create(gctx_alloc, gctx_free, NULL);
    if (!t->re_gctx) {
        lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (regex)");
        lmi_free(t);
        return NULL;
    }
    return t;
}

lm_status lmi_tok_from_json(const char *json, size_t size, lm_tokenizer **out, lmi_err *e)
{
    *out = NULL;
    lmi_json *root = NULL;
    lm_status st = lmi_json_parse(json, size, &root, e);
    if (st) return st;
    lm_tokenizer *t = lmi_tok_new(e);
    if (!t) {
        lmi_json_free(root);
        return LM_ERR_NO_MEMORY;
    }
    loader L = {.t = t, .e = e};
    st = build(&L, root);
    lmi_json_free(root);
    if (st) {
        lmi_tok_destroy(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

void lmi_tok_destroy(lm_tokenizer *t)
{
    if (!t) return;
    if (t->re) pcre2_code_free(t->re);
    if (t->re_gctx) pcre2_general_context_free(t->re_gctx);
    lmi_free(t->str_blob);
    lmi_free(t->str_off);
    lmi_free(t->vocab_slots);
    lmi_free(t->dec_blob);
    lmi_free(t->dec_off);
    lmi_free(t->defined);
    lmi_free(t->merges);
    lmi_free(t->added_raw.nodes);
    lmi_free(t->added_norm.nodes);
    lmi_free(t);
}
