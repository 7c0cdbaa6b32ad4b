/*
 * tok.h - the byte-level BPE tokenizer's parts (lib/tokenizer/).
 *
 * The pipeline reproduces Hugging Face `tokenizers` (TokenizerImpl::encode
 * with a BPE model, ByteLevel pre-tokenizer and decoder):
 *
 *   invalid UTF-8 -> U+FFFD (maximal subparts)
 *   split on added tokens with normalized=false (leftmost-longest)
 *   each remaining piece: NFC, then split on added tokens with normalized=true
 *   each remaining piece: optional prefix space, GPT-2 regex split
 *   each pre-token: bytes -> byte-level symbols -> BPE merges by rank
 *
 * Everything in struct lm_tokenizer is immutable after loading; encode and
 * decode keep their scratch per call, so one tokenizer serves any number of
 * threads.
 */
#ifndef LMI_TOK_H
#define LMI_TOK_H

#include "internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Ids are limited so that a hostile file cannot make the id tables huge. */
#define LMI_TOK_MAX_IDS (1 << 24)

/* Pair (left id, right id) -> (rank, merged id); open addressing. */
typedef struct lmi_tok_merge {
    uint64_t key;       /* left << 32 | right; LMI_TOK_EMPTY when free */
    uint32_t rank;
    int32_t id;
} lmi_tok_merge;
#define LMI_TOK_EMPTY UINT64_MAX

/* Byte trie of added-token contents: node 0 is the root. */
typedef struct lmi_tok_trie_node {
    int32_t child;      /* first child or -1 */
    int32_t sibling;    /* next sibling or -1 */
    int32_t token;      /* id of the added token ending here, or -1 */
    uint8_t byte;
} lmi_tok_trie_node;

typedef struct lmi_tok_trie {
    lmi_tok_trie_node *nodes;
    size_t n, cap;
    int32_t root[256];  /* child of the root for each first byte, or -1 */
} lmi_tok_trie;

struct lm_tokenizer {
    int64_t n_ids;              /* max id + 1 */

    /* Model vocabulary: token string of each id (byte-level alphabet) and
     * the string -> id table.  str_off[id] == str_off[id+1] for unused ids. */
    char *str_blob;
    size_t *str_off;            /* [n_ids + 1] */
    int32_t *vocab_slots;       /* string hash table of model ids, -1 free */
    size_t vocab_mask;

    /* What each id decodes to (ByteLevel decoder) and whether it exists. */
    uint8_t *dec_blob;
    size_t *dec_off;            /* [n_ids + 1] */
    uint8_t *defined;           /* [n_ids] */

    lmi_tok_merge *merges;
    size_t merge_mask;
    int32_t byte_id[256];       /* id of each byte's symbol, -1 when absent */
    uint32_t byte_char[256];    /* lmi_tok_byte_char of each byte */
    int32_t unk_id;             /* -1: unknown symbols are dropped */
    bool fuse_unk;
    bool ignore_merges;

    lmi_tok_trie added_raw;     /* added tokens matched before normalizing */
    lmi_tok_trie added_norm;    /* ... and after */
    size_t n_added;

    bool nfc;
    bool add_prefix_space;
    bool use_regex;
    pcre2_general_context *re_gctx;
    pcre2_code *re;
};

/* ---- lib/tokenizer/load.c ---------------------------------------------- */

/* Builds a tokenizer from tokenizer.json text. */
lm_status lmi_tok_from_json(const char *json, size_t size, lm_tokenizer **out, lmi_err *e);
void lmi_tok_destroy(lm_tokenizer *t);

/* The steps a builder from another source (lib/tokenizer/gguf.c) shares
 * with the tokenizer.json one: */
/* An empty tokenizer (unk_id -1) with its regex allocator; NULL (e says
 * why) on failure.  Free with lmi_tok_destroy. */
lm_tokenizer *lmi_tok_new(lmi_err *e);
/* The string -> id table over the ids with defined[id] == 1, their
 * strings in str_blob / str_off already; n_strings of them.  A repeated
 * string is LM_ERR_FORMAT ("<what> "x" repeats"). */
lm_status lmi_tok_vocab_index(lm_tokenizer *t, size_t n_strings, const char *what, lmi_err *e);
/* The merge table for n merges, then merge r: (a, b) -> the id of a + b;
 * a, b and a + b must be in the vocab (messages start with what). */
lm_status lmi_tok_merges_alloc(lm_tokenizer *t, size_t n, lmi_err *e);
lm_status lmi_tok_merge_add(lm_tokenizer *t, size_t r, const char *a, size_t la, const char *b,
                            size_t lb, const char *what, lmi_err *e);
/* Adds an added token's content to a trie. */
lm_status lmi_tok_trie_add(lmi_tok_trie *tr, const uint8_t *s, size_t n, int32_t token, lmi_err *e);
/* Byte tables, the decode table and the split regex, once the vocab,
 * merges and added tokens are in. */
lm_status lmi_tok_finish(lm_tokenizer *t, lmi_err *e);

/* ---- lib/tokenizer/gguf.c ------------------------------------------------ */

struct lmi_gguf_file;
/* Builds a tokenizer from a GGUF file's tokenizer.ggml.* metadata
 * (llama.cpp's "gpt2" byte-level BPE).  No tokenizer.ggml.model:
 * LM_ERR_MISSING; another model or pre-tokenizer: LM_ERR_UNSUPPORTED. */
lm_status lmi_tok_from_gguf(const struct lmi_gguf_file *g, lm_tokenizer **out, lmi_err *e);
/* Model id of a byte-level token string, or -1. */
int32_t lmi_tok_vocab_find(const lm_tokenizer *t, const char *s, size_t len);
/* Hash table probe for a merge of (left, right), or NULL. */
static inline const lmi_tok_merge *lmi_tok_merge_find(const lm_tokenizer *t, int32_t left,
                                                      int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & t->merge_mask;
    for (;;) {
        const lmi_tok_merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == LMI_TOK_EMPTY) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* The GPT-2 byte -> code point table (bytes_to_unicode). */
uint32_t lmi_tok_byte_char(uint8_t b);
/* Inverse: byte of a byte-level code point, or -1. */
int lmi_tok_char_byte(uint32_t cp);

/* ---- lib/tokenizer/encode.c -------------------------------------------- */

/* Encodes text (any bytes: invalid UTF-8 is repaired first) with the
 * public size protocol. */
lm_status lmi_tok_encode(const lm_tokenizer *t, const uint8_t *text, size_t n, int32_t *ids,
                         size_t cap, size_t *n_ids, lmi_err *e);
/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t lmi_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Copies s with every maximal invalid subpart replaced by U+FFFD (the rule
 * of Python's "replace" handler and Rust's from_utf8_lossy).  out must
 * hold 3 * n bytes; returns the length written. */
size_t lmi_utf8_sanitize(const uint8_t *s, size_t n, uint8_t *out);
/* Decodes one code point of valid UTF-8 at s; *len receives its size. */
uint32_t lmi_utf8_next(const uint8_t *s, size_t *len);
/* Encodes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t lmi_utf8_put(uint32_t cp, uint8_t *out);

/* Unicode NFC of valid UTF-8 s[0..n) into a buffer allocated with
 * lmi_alloc_raw (*out, *out_len); used at load time for added tokens. */
lm_status lmi_tok_nfc_alloc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len,
                            lmi_err *e);

#endif
