/*
 * gguf.c - the tokenizer of a GGUF file: llama.cpp's tokenizer.ggml.*
 * metadata for a "gpt2" (byte-level BPE) model, as convert_hf_to_gguf.py
 * writes it from a tokenizer.json (_set_vocab_gpt2):
 *
 *   tokenizer.ggml.tokens      every id's string (byte-level alphabet for
 *                              the model's tokens, the text of added ones);
 *                              ids missing from tokenizer.json are padding
 *                              "[PAD<id>]" of type UNUSED
 *   tokenizer.ggml.token_type  NORMAL, CONTROL (special added tokens),
 *                              USER_DEFINED (other added tokens), UNUSED
 *   tokenizer.ggml.merges      "a b" in rank order
 *   tokenizer.ggml.pre         the pre-tokenizer, named by the converter
 *
 * The result is the same lm_tokenizer tokenizer.json gives: NORMAL (and
 * BYTE / UNKNOWN) tokens are the BPE vocabulary, CONTROL tokens match the
 * raw text like special added tokens, USER_DEFINED tokens match after
 * normalization like other added tokens, UNUSED ids are unassigned (so
 * the vocabulary size ends at the last real token, as in tokenizer.json).
 */
#include "tokenizer/tok.h"
#include "format/gguf.h"

#include <string.h>

/* llama_token_type / gguf TokenType */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Pre-tokenizer names that llama.cpp splits with GPT-2's one regex, the
 * split this tokenizer implements, and whether the Hugging Face tokenizer
 * the converter recognised under that name normalizes with NFC (GGUF does
 * not record the normalizer; llama.cpp applies none, tokenizers does). */
static const struct {
    const char *name;
    bool nfc;
} pre_types[] = {
    {"gpt-2", false}, /* openai-community/gpt2: no normalizer */
    {"mpt", true},    /* mosaicml/mpt-7b: EleutherAI/gpt-neox-20b's tokenizer, Mamba's too */
};

static bool str_is(lmi_gguf_str s, const char *z)
{
    return s.len == strlen(z) && memcmp(s.p, z, s.len) == 0;
}

/* The special-token ids present must name a token. */
static lm_status check_special_ids(const lmi_gguf_file *g, uint64_t n_tokens, lmi_err *e)
{
    static const char *const keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.eot_token_id",
    };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        if (!lmi_gguf_find_kv(g, keys[k]))
            continue;
        uint64_t id = 0;
        lm_status st = lmi_gguf_get_uint(g, keys[k], &id, e);
        if (st != LM_OK)
            return st;
        if (id >= n_tokens)
            return lmi_fail(e, LM_ERR_FORMAT, "%s = %llu is outside the %llu tokens", keys[k],
                            (unsigned long long)id, (unsigned long long)n_tokens);
    }
    return LM_OK;
}

static lm_status build(lm_tokenizer *t, const lmi_gguf_file *g, lmi_err *e)
{
    lmi_gguf_str s;
    lm_status st;
    if (!lmi_gguf_find_kv(g, "tokenizer.ggml.model"))
        return lmi_fail(e, LM_ERR_MISSING, "no tokenizer in this GGUF file (no tokenizer.ggml.model)");
    if ((st = lmi_gguf_get_str(g, "tokenizer.ggml.model", &s, e)))
        return st;
    if (!str_is(s, "gpt2"))
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tokenizer model \"%.*s\" is not supported (only \"gpt2\", byte-level BPE)",
                        (int)(s.len > 64 ? 64 : s.len), s.p);
    if (!lmi_gguf_find_kv(g, "tokenizer.ggml.pre"))
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tokenizer.ggml.pre is missing: llama.cpp's \"default\" pre-tokenizer is not "
                        "supported (convert the model again)");
    if ((st = lmi_gguf_get_str(g, "tokenizer.ggml.pre", &s, e)))
        return st;
    size_t pre = 0;
    while (pre < sizeof pre_types / sizeof pre_types[0] && !str_is(s, pre_types[pre].name))
        pre++;
    if (pre == sizeof pre_types / sizeof pre_types[0])
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "pre-tokenizer \"%.*s\" (tokenizer.ggml.pre) is not supported (only GPT-2's "
                        "split: \"gpt-2\", \"mpt\")",
                        (int)(s.len > 64 ? 64 : s.len), s.p);
    t->nfc = pre_types[pre].nfc;
    t->use_regex = true;
    t->add_prefix_space = false; /* llama.cpp's default for BPE */
    if (lmi_gguf_find_kv(g, "tokenizer.ggml.add_space_prefix") &&
        (st = lmi_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_prefix_space, e)))
        return st;

    uint64_t n = 0, n_types = 0;
    const uint8_t *tokens = NULL, *types = NULL;
    if ((st = lmi_gguf_get_arr(g, "tokenizer.ggml.tokens", LMI_GGUF_STRING, &n, &tokens, e)))
        return st;
    if (n == 0 || n > LMI_TOK_MAX_IDS)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tokenizer.ggml.tokens lists %llu tokens (1 to %d)",
                        (unsigned long long)n, LMI_TOK_MAX_IDS);
    if (lmi_gguf_find_kv(g, "tokenizer.ggml.token_type")) {
        if ((st = lmi_gguf_get_arr(g, "tokenizer.ggml.token_type", LMI_GGUF_I32, &n_types, &types, e)))
            return st;
        if (n_types != n)
            return lmi_fail(e, LM_ERR_FORMAT,
                            "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                            (unsigned long long)n_types, (unsigned long long)n);
    }
    if ((st = check_special_ids(g, n, e)))
        return st;

    /* Types, the last assigned id and the string bytes. */
    int32_t *type = lmi_alloc((size_t)n, sizeof *type);
    if (!type)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (%llu tokens)",
                        (unsigned long long)n);
    size_t bytes = 0, n_vocab = 0;
    int64_t last = -1;
    const uint8_t *cur = tokens;
    for (size_t id = 0; id < (size_t)n; id++) {
        int32_t ty = TT_NORMAL;
        if (types)
            memcpy(&ty, types + 4 * id, 4);
        lmi_gguf_str tok = lmi_gguf_next_str(&cur);
        if (ty < TT_NORMAL || ty > TT_BYTE) {
            lmi_free(type);
            return lmi_fail(e, LM_ERR_FORMAT, "token %zu has unknown type %d", id, (int)ty);
        }
        type[id] = ty;
        if (ty == TT_UNUSED)
            continue;
        if ((ty == TT_CONTROL || ty == TT_USER_DEFINED) && tok.len == 0) {
            lmi_free(type);
            return lmi_fail(e, LM_ERR_FORMAT, "token %zu is an empty %s token", id,
                            ty == TT_CONTROL ? "control" : "user-defined");
        }
        bytes += tok.len;
        n_vocab++;
        last = (int64_t)id;
    }
    if (last < 0) {
        lmi_free(type);
        return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.ggml.tokens has no token in use");
    }
    const size_t n_ids = (size_t)last + 1;
    t->n_ids = (int64_t)n_ids;
    t->str_blob = lmi_alloc_raw(bytes ? bytes : 1, 1);
    t->str_off = lmi_alloc(n_ids + 1, sizeof *t->str_off);
    t->dec_off = lmi_alloc(n_ids + 1, sizeof *t->dec_off);
    t->defined = lmi_alloc(n_ids, 1);
    if (!t->str_blob || !t->str_off || !t->dec_off || !t->defined) {
        lmi_free(type);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "tokenizer: out of memory (%zu ids)", n_ids);
    }
    /* Every assigned token is in the string table, added ones too, as
     * llama.cpp has them (a merge can only name byte-level strings). */
    cur = tokens;
    for (size_t id = 0; id < n_ids; id++) {
        lmi_gguf_str tok = lmi_gguf_next_str(&cur);
        t->str_off[id + 1] = t->str_off[id];
        if (type[id] == TT_UNUSED)
            continue;
        memcpy(t->str_blob + t->str_off[id], tok.p, tok.len);
        t->str_off[id + 1] += tok.len;
        t->defined[id] = 1;
    }
    st = lmi_tok_vocab_index(t, n_vocab, "tokenizer.ggml.tokens: token", e);

    /* Added tokens: CONTROL ones match the raw text (special, not
     * normalized), USER_DEFINED ones the normalized text. */
    for (size_t id = 0; id < n_ids && st == LM_OK; id++) {
        if (type[id] != TT_CONTROL && type[id] != TT_USER_DEFINED)
            continue;
        const uint8_t *p = (const uint8_t *)t->str_blob + t->str_off[id];
        size_t len = t->str_off[id + 1] - t->str_off[id];
        if (type[id] == TT_USER_DEFINED && t->nfc) {
            uint8_t *nf;
            size_t nfl;
            if (lmi_utf8_valid_prefix(p, len) != len) {
                st = lmi_fail(e, LM_ERR_FORMAT, "user-defined token %zu is not UTF-8", id);
                break;
            }
            if ((st = lmi_tok_nfc_alloc(p, len, &nf, &nfl, e)))
                break;
            st = lmi_tok_trie_add(&t->added_norm, nf, nfl, (int32_t)id, e);
            lmi_free(nf);
        } else {
            st = lmi_tok_trie_add(type[id] == TT_CONTROL ? &t->added_raw : &t->added_norm, p, len,
                                  (int32_t)id, e);
        }
        t->n_added++;
    }
    lmi_free(type);
    if (st != LM_OK)
        return st;

    /* llama.cpp requires the merges of a BPE vocabulary. */
    uint64_t n_merges = 0;
    const uint8_t *merges = NULL;
    if (!lmi_gguf_find_kv(g, "tokenizer.ggml.merges"))
        return lmi_fail(e, LM_ERR_MISSING, "tokenizer.ggml.merges is missing");
    if ((st = lmi_gguf_get_arr(g, "tokenizer.ggml.merges", LMI_GGUF_STRING, &n_merges, &merges, e)))
        return st;
    if ((st = lmi_tok_merges_alloc(t, (size_t)n_merges, e)))
        return st;
    cur = merges;
    for (size_t r = 0; r < (size_t)n_merges; r++) {
        lmi_gguf_str m = lmi_gguf_next_str(&cur);
        /* "a b": split at the first space, as tokenizers does */
        const char *sp = m.len ? memchr(m.p, ' ', m.len) : NULL;
        if (!sp)
            return lmi_fail(e, LM_ERR_FORMAT, "tokenizer.ggml.merges[%zu] \"%.*s\" is not \"a b\"",
                            r, (int)(m.len > 64 ? 64 : m.len), m.p);
        size_t la = (size_t)(sp - m.p);
        if ((st = lmi_tok_merge_add(t, r, m.p, la, sp + 1, m.len - la - 1,
                                    "tokenizer.ggml.merges: merge", e)))
            return st;
    }
    /* unk_id stays -1: llama.cpp's BPE never emits the unknown token (it
     * falls back to byte tokens), nor does GPT-NeoX's tokenizer.json
     * (unk_token null), whatever tokenizer.ggml.unknown_token_id says. */
    return lmi_tok_finish(t, e);
}

lm_status lmi_tok_from_gguf(const struct lmi_gguf_file *g, lm_tokenizer **out, lmi_err *e)
{
    if (!out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lmi_tok_from_gguf: NULL argument");
    *out = NULL;
    if (!g)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lmi_tok_from_gguf: NULL argument");
    lm_tokenizer *t = lmi_tok_new(e);
    if (!t)
        return LM_ERR_NO_MEMORY;
    lm_status st = build(t, g, e);
    if (st != LM_OK) {
        lmi_tok_destroy(t);
        return st;
    }
    *out = t;
    return LM_OK;
}
