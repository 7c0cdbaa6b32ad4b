/*
 * eval_tasks.c - prompts and scoring of the `longmamba eval` tasks and of
 * the pass key (eval_tasks.h).  The templates follow RULER (Hsieh et al.,
 * 2024) with plain-text questions ending in an answer prefix, since the
 * models here are base models.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eval_tasks.h"

/* RULER's task defaults where they apply (vt: 1 chain, 4 hops; cwe: 10 words,
 * 30 and 3 copies; fwe: alpha 2). */
#define CWE_FREQ_MAX 30 /* copies of each common word, at most */
#define CWE_FREQ_MIN 5  /* at least: two more than an uncommon word has */
#define CWE_UNCOMMON 3  /* copies of each other word */
#define FWE_ALPHA    2.0
#define FWE_VOCAB    100 /* words the stream draws from */
#define FWE_TRIES    64  /* streams drawn until the top words are strict */
#define MAX_PIECES   32  /* needles of one prompt */

const char et_grass[] = "The grass is green. The sky is blue. The sun is yellow. Here we go. "
                        "There and back again. ";

const et_task et_tasks[] = {
    {"niah_number", ET_NIAH, ET_NUMBER, .keys = 1, .values = 1, .queries = 1,
     .about = "one needle; its value is a 7-digit number"},
    {"niah_word", ET_NIAH, ET_WORD, .keys = 1, .values = 1, .queries = 1,
     .about = "one needle; its value is a word"},
    {"niah_uuid", ET_NIAH, ET_UUID, .keys = 1, .values = 1, .queries = 1,
     .about = "one needle; its value is a UUID"},
    {"niah_multikey", ET_NIAH, ET_NUMBER, .keys = 4, .values = 1, .queries = 1,
     .about = "4 needles with different keys; one key asked"},
    {"niah_multivalue", ET_NIAH, ET_NUMBER, .keys = 1, .values = 4, .queries = 1,
     .about = "4 needles with one key; all 4 values asked"},
    {"niah_multiquery", ET_NIAH, ET_NUMBER, .keys = 4, .values = 1, .queries = 4,
     .about = "4 needles with different keys; all 4 asked"},
    {"vt", ET_VT, ET_NUMBER, .chains = 1, .hops = 4,
     .about = "VAR A = 12345, then 4 hops VAR B = VAR A ...; name all 5"},
    {"cwe", ET_CWE, ET_WORD, .top = 10,
     .about = "the 10 most common words of a numbered list (no depth)"},
    {"fwe", ET_FWE, ET_WORD, .top = 3,
     .about = "the 3 most frequent words of a Zipf(2) stream (no depth)"},
    {"passkey", ET_PASSKEY, ET_NUMBER, .about = "the 5-digit pass key of `longmamba passkey`"},
};
const int et_n_tasks = (int)(sizeof et_tasks / sizeof et_tasks[0]);

const et_task *et_find(const char *name)
{
    for (int k = 0; k < et_n_tasks; k++)
        if (strcmp(et_tasks[k].name, name) == 0)
            return &et_tasks[k];
    return NULL;
}

int et_has_depth(const et_task *t)
{
    return t->shape != ET_CWE && t->shape != ET_FWE;
}

const char *et_scoring(const et_task *t)
{
    if (t->shape == ET_PASSKEY)
        return "passkey";
    if (t->shape == ET_NIAH && t->values * t->queries == 1)
        return "first_word";
    return "all";
}

/* ---- sequences, random numbers ------------------------------------------------ */

static int seq_push(et_seq *q, const int32_t *v, size_t n)
{
    if (n == 0) /* v may be NULL then (an empty head) */
        return 0;
    if (q->n + n > q->cap) {
        size_t cap = q->cap ? q->cap : 64;
        while (cap < q->n + n)
            cap *= 2;
        int32_t *nv = realloc(q->v, cap * sizeof *nv);
        if (!nv)
            return cli_fail("out of memory");
        q->v = nv;
        q->cap = cap;
    }
    memcpy(q->v + q->n, v, n * sizeof *v);
    q->n += n;
    return 0;
}

/* Appends the encoding of printf(fmt, ...) to q: 0, or 1 after a message. */
static int seq_text(const et_source *s, et_seq *q, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int seq_text(const et_source *s, et_seq *q, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return cli_fail("internal: a template of %d bytes", n);
    size_t n_ids = 0;
    int32_t *ids = cli_encode_text(&s->enc, buf, (size_t)n, &n_ids);
    int rc = !ids || seq_push(q, ids, n_ids);
    free(ids);
    return rc;
}

/* Tokens of printf(fmt, ...) alone, or 0 after a message. */
static size_t text_tokens(const et_source *s, const char *fmt, const char *arg)
{
    et_seq q = {0};
    size_t n = seq_text(s, &q, fmt, arg) ? 0 : q.n;
    free(q.v);
    return n;
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t v = cli_mix64(r->s);
    r->s += UINT64_C(0x9E3779B97F4A7C15);
    return v;
}

static size_t rng_below(rng *r, size_t n)
{
    return (size_t)(rng_next(r) % n);
}

static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* The cell's generator: seed, task, length, depth (its value, so that a
 * cell does not change with the rest of --depths) and trial. */
static rng cell_rng(const et_task *t, const et_cell *c)
{
    uint64_t name = UINT64_C(1469598103934665603); /* FNV-1a */
    for (const char *p = t->name; *p; p++)
        name = (name ^ (unsigned char)*p) * UINT64_C(1099511628211);
    uint64_t depth = et_has_depth(t) ? (uint64_t)llround(c->depth * 1e6) : 0;
    uint64_t h = cli_mix64(depth * 1000003u + (uint64_t)c->trial);
    h = cli_mix64((uint64_t)c->length ^ h);
    return (rng){cli_mix64(c->seed ^ cli_mix64(name ^ h))};
}

/* ---- the word pool ---------------------------------------------------------------- */

static size_t word_hash(const char *w)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *w; w++)
        h = (h ^ (unsigned char)*w) * UINT64_C(1099511628211);
    return (size_t)cli_mix64(h);
}

static int pool_has(const et_pool *p, const char *w)
{
    if (!p->n_slot)
        return 0;
    for (size_t i = word_hash(w) & (p->n_slot - 1); p->slot[i]; i = (i + 1) & (p->n_slot - 1))
        if (strcmp(p->w[p->slot[i] - 1], w) == 0)
            return 1;
    return 0;
}

/* Rebuilds the hash slots at twice the size: 0, or 1 after a message. */
static int pool_rehash(et_pool *p)
{
    size_t n_slot = p->n_slot ? p->n_slot * 2 : 1024;
    uint32_t *slot = calloc(n_slot, sizeof *slot);
    if (!slot)
        return cli_fail("out of memory");
    for (size_t k = 0; k < p->n; k++) {
        size_t i = word_hash(p->w[k]) & (n_slot - 1);
        while (slot[i])
            i = (i + 1) & (n_slot - 1);
        slot[i] = (uint32_t)(k + 1);
    }
    free(p->slot);
    p->slot = slot;
    p->n_slot = n_slot;
    return 0;
}

/* Adds w (not yet in the pool) and its " w" ids: 0, or 1 after a message. */
static int pool_add(et_source *s, const char *w)
{
    et_pool *p = &s->pool;
    if ((p->n + 1) * 2 > p->n_slot && pool_rehash(p))
        return 1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        char **nw = realloc(p->w, cap * sizeof *nw);
        if (nw)
            p->w = nw;
        et_seq *ni = nw ? realloc(p->ids, cap * sizeof *ni) : NULL;
        if (!ni)
            return cli_fail("out of memory");
        p->ids = ni;
        p->cap = cap;
    }
    et_seq ids = {0};
    char *copy = strdup(w);
    if (!copy || seq_text(s, &ids, " %s", w)) {
        free(copy);
        free(ids.v);
        return copy ? 1 : cli_fail("out of memory");
    }
    p->w[p->n] = copy;
    p->ids[p->n] = ids;
    size_t i = word_hash(w) & (p->n_slot - 1);
    while (p->slot[i])
        i = (i + 1) & (p->n_slot - 1);
    p->slot[i] = (uint32_t)(++p->n);
    return 0;
}

/* Grows the pool to n words with synthetic ones ("kovira": consonant-vowel
 * syllables picked by a hash of a counter, so that neighbours differ),
 * skipping any the pool already has. */
static int pool_ensure(et_source *s, size_t n)
{
    static const char cons[] = "bdfgklmnprstvz", vow[] = "aeiou";
    const uint64_t n_v = sizeof vow - 1, n_syl = (sizeof cons - 1) * n_v;
    while (s->pool.n < n) {
        char w[16];
        uint64_t x = cli_mix64(s->pool.synth++);
        int len = 3 + (int)(s->pool.synth / 100000); /* 3 syllables make 343,000 words */
        if (len > 7)
            return cli_fail("internal: more synthetic words than the pool can name");
        for (int k = 0; k < len; k++, x /= n_syl) {
            w[2 * k] = cons[(x % n_syl) / n_v];
            w[2 * k + 1] = vow[(x % n_syl) % n_v];
        }
        w[2 * len] = '\0';
        if (!pool_has(&s->pool, w) && pool_add(s, w))
            return 1;
    }
    return 0;
}

/* The filler's words: runs of 3 to 12 ASCII letters, lowercased. */
static int pool_from_text(et_source *s, const char *text, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && isalpha((unsigned char)text[j]))
            j++;
        if (j - i >= 3 && j - i <= 12) {
            char w[16];
            for (size_t k = i; k < j; k++)
                w[k - i] = (char)tolower((unsigned char)text[k]);
            w[j - i] = '\0';
            if (!pool_has(&s->pool, w) && pool_add(s, w))
                return 1;
        }
        i = j < len ? j + 1 : j;
    }
    return 0;
}

int et_source_init(et_source *s, const cli_encoder *enc, const char *text, size_t len)
{
    memset(s, 0, sizeof *s);
    s->enc = *enc;
    if (len == 0)
        return cli_fail("the filler text is empty");
    s->filler = cli_encode_text(enc, text, len, &s->n_filler);
    if (!s->filler)
        return 1;
    if (s->n_filler == 0)
        return cli_fail("the filler text encodes to no tokens");
    return pool_from_text(s, text, len) || pool_ensure(s, ET_POOL_MIN);
}

int et_source_load(et_source *s, const cli_encoder *enc, const char *path)
{
    if (!path)
        return et_source_init(s, enc, et_grass, strlen(et_grass));
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (!text) {
        memset(s, 0, sizeof *s);
        return cli_fail("cannot read %s: %s", path, strerror(errno));
    }
    int rc = et_source_init(s, enc, text, len);
    free(text);
    return rc;
}

void et_source_free(et_source *s)
{
    for (size_t k = 0; k < s->pool.n; k++) {
        free(s->pool.w[k]);
        free(s->pool.ids[k].v);
    }
    for (size_t k = 0; k < s->n_num; k++)
        free(s->num[k].v);
    free(s->pool.w);
    free(s->pool.ids);
    free(s->pool.slot);
    free(s->num);
    free(s->filler);
    memset(s, 0, sizeof *s);
}

void et_prompt_free(et_prompt *p)
{
    free(p->ids.v);
    memset(p, 0, sizeof *p);
}

/* ---- haystack layout ------------------------------------------------------------ */

/* Fixed text and needles of a haystack prompt.  Target i of n (the needles
 * the answer needs, in order) starts at depth d + (1 - d) * i / n of the
 * filler, so the first sits exactly at d; the others at random depths. */
typedef struct layout {
    et_seq head, question;
    et_seq piece[MAX_PIECES];
    int target[MAX_PIECES];
    size_t at[MAX_PIECES];
    int n;
} layout;

static void layout_free(layout *y)
{
    free(y->head.v);
    free(y->question.v);
    for (int k = 0; k < y->n; k++)
        free(y->piece[k].v);
}

/* A needle of this text, appended: 0, or 1 after a message. */
static int add_piece(const et_source *s, layout *y, int target, const char *text)
{
    if (y->n == MAX_PIECES)
        return cli_fail("internal: more than %d needles", MAX_PIECES);
    int k = y->n++;
    y->piece[k] = (et_seq){0};
    y->target[k] = target;
    return seq_text(s, &y->piece[k], "%s", text);
}

/* Places the needles and writes head, filler from a random offset with the
 * needles, question: exactly L ids.  0, or 1 after a message. */
static int place(const et_source *s, const et_task *t, layout *y, rng *r, const et_cell *c,
                 size_t off, et_prompt *p)
{
    size_t fixed = y->head.n + y->question.n, n_targets = 0;
    for (int k = 0; k < y->n; k++) {
        fixed += y->piece[k].n;
        n_targets += (size_t)y->target[k];
    }
    if (fixed > c->length)
        return cli_fail("%s: length %zu is shorter than the %s (%zu tokens)", t->name, c->length,
                        y->head.n ? "instructions, the needles and the question"
                                  : "needle and the question",
                        fixed);
    size_t room = c->length - fixed, i = 0;
    int order[MAX_PIECES];
    for (int k = 0; k < y->n; k++) {
        double d = y->target[k] ? c->depth + (1.0 - c->depth) * (double)i++ / (double)n_targets
                                : (double)rng_below(r, room + 1) / (double)(room ? room : 1);
        y->at[k] = (size_t)llround(d * (double)room);
        order[k] = k;
    }
    for (int a = 1; a < y->n; a++) /* by position, then as added */
        for (int b = a; b > 0 && y->at[order[b]] < y->at[order[b - 1]]; b--) {
            int tmp = order[b];
            order[b] = order[b - 1];
            order[b - 1] = tmp;
        }
    int rc = seq_push(&p->ids, y->head.v, y->head.n);
    for (size_t pos = 0, k = 0; !rc && pos <= room; pos++) {
        for (; !rc && k < (size_t)y->n && y->at[order[k]] == pos; k++) {
            if (y->target[order[k]] && p->n_targets < ET_MAX_ITEMS)
                p->target_at[p->n_targets++] = p->ids.n;
            rc = seq_push(&p->ids, y->piece[order[k]].v, y->piece[order[k]].n);
        }
        if (!rc && pos < room)
            rc = seq_push(&p->ids, &s->filler[(off + pos) % s->n_filler], 1);
    }
    return rc || seq_push(&p->ids, y->question.v, y->question.n);
}

/* ---- values and names ------------------------------------------------------------- */

/* v is none of list[0..n) */
static int distinct(char (*list)[ET_ITEM_CAP], int n, const char *v)
{
    for (int k = 0; k < n; k++)
        if (strcmp(list[k], v) == 0)
            return 0;
    return 1;
}

static void make_value(et_source *s, et_value kind, rng *r, char out[ET_ITEM_CAP])
{
    if (kind == ET_NUMBER) {
        snprintf(out, ET_ITEM_CAP, "%d", 1000000 + (int)rng_below(r, 9000000));
    } else if (kind == ET_WORD) {
        snprintf(out, ET_ITEM_CAP, "%s", s->pool.w[rng_below(r, s->pool.n)]);
    } else { /* a version-4 UUID */
        static const char hex[] = "0123456789abcdef";
        uint64_t a = rng_next(r), b = rng_next(r);
        char x[32];
        for (int k = 0; k < 16; k++) {
            x[k] = hex[(a >> (4 * k)) & 15];
            x[16 + k] = hex[(b >> (4 * k)) & 15];
        }
        x[12] = '4';
        x[16] = "89ab"[b & 3];
        snprintf(out, ET_ITEM_CAP, "%.8s-%.4s-%.4s-%.4s-%.12s", x, x + 8, x + 12, x + 16, x + 20);
    }
}

/* Answer budget: each item as " ITEM," plus 2 tokens of slack. */
static int set_budget(const et_source *s, et_prompt *p)
{
    int n = 2;
    for (int k = 0; k < p->n_items; k++) {
        size_t m = text_tokens(s, " %s,", p->items[k]);
        if (!m)
            return 1;
        n += (int)m;
    }
    p->n_gen = n;
    return 0;
}

/* "a", "a and b", "a, b and c" */
static void join_and(char *out, size_t cap, char (*v)[ET_ITEM_CAP], int n)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%.39s",
                              i == 0       ? ""
                              : i + 1 == n ? " and "
                                           : ", ",
                              v[i]);
}

/* ---- needle in a haystack ------------------------------------------------------------ */

static int make_niah(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    static const char *const kinds[] = {"number", "word", "uuid"};
    const char *kind = kinds[t->value];
    rng r = cell_rng(t, c);
    char keys[MAX_PIECES][ET_ITEM_CAP], vals[MAX_PIECES][ET_ITEM_CAP];
    int n_vals = 0;
    for (int k = 0; k < t->keys; k++)
        do
            snprintf(keys[k], ET_ITEM_CAP, "%s-%s", s->pool.w[rng_below(&r, s->pool.n)],
                     s->pool.w[rng_below(&r, s->pool.n)]);
        while (!distinct(keys, k, keys[k]));
    layout y = {0};
    int rc = 0;
    for (int k = 0; k < t->keys && !rc; k++)
        for (int v = 0; v < (k < t->queries ? t->values : 1) && !rc; v++) {
            do
                make_value(s, t->value, &r, vals[n_vals]);
            while (!distinct(vals, n_vals, vals[n_vals]));
            if (k < t->queries)
                memcpy(p->items[p->n_items++], vals[n_vals], ET_ITEM_CAP);
            char nd[256];
            snprintf(nd, sizeof nd, " One of the special magic %ss for %s is: %s. ", kind, keys[k],
                     vals[n_vals++]);
            rc = add_piece(s, &y, k < t->queries, nd);
        }
    char asked[512];
    join_and(asked, sizeof asked, keys, t->queries);
    rc = rc || seq_text(s, &y.head,
                        "Some special magic %ss are hidden within the following text. Make "
                        "sure to memorize it. I will quiz you about the %ss afterwards.\n",
                        kind, kind);
    if (!rc && p->n_items == 1)
        rc = seq_text(s, &y.question,
                      "\nWhat is the special magic %s for %s mentioned in the provided text? "
                      "The special magic %s for %s mentioned in the provided text is",
                      kind, asked, kind, asked);
    else if (!rc)
        rc = seq_text(s, &y.question,
                      "\nWhat are all the special magic %ss for %s mentioned in the provided "
                      "text? The special magic %ss for %s mentioned in the provided text are",
                      kind, asked, kind, asked);
    rc = rc || place(s, t, &y, &r, c, rng_below(&r, s->n_filler), p) || set_budget(s, p);
    layout_free(&y);
    return rc;
}

/* ---- variable tracking ------------------------------------------------------------------ */

static void make_name(rng *r, char out[ET_ITEM_CAP])
{
    for (int k = 0; k < 5; k++)
        out[k] = (char)('A' + rng_below(r, 26));
    out[5] = '\0';
}

static int make_vt(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    rng r = cell_rng(t, c);
    const int per = t->hops + 1;
    char names[MAX_PIECES][ET_ITEM_CAP], vals[MAX_PIECES][ET_ITEM_CAP];
    if (t->chains * per > MAX_PIECES || per > ET_MAX_ITEMS)
        return cli_fail("internal: %s has too many assignments", t->name);
    for (int k = 0; k < t->chains * per; k++)
        do
            make_name(&r, names[k]);
        while (!distinct(names, k, names[k]));
    for (int ch = 0; ch < t->chains; ch++)
        do
            snprintf(vals[ch], ET_ITEM_CAP, "%d", 10000 + (int)rng_below(&r, 90000));
        while (!distinct(vals, ch, vals[ch]));
    layout y = {0};
    int rc = 0;
    for (int ch = 0; ch < t->chains && !rc; ch++)
        for (int h = 0; h < per && !rc; h++) {
            const char *name = names[ch * per + h];
            char nd[128];
            if (h == 0)
                snprintf(nd, sizeof nd, " VAR %.39s = %.39s. ", name, vals[ch]);
            else
                snprintf(nd, sizeof nd, " VAR %.39s = VAR %.39s. ", name, names[ch * per + h - 1]);
            if (ch == 0) /* the chain asked about */
                memcpy(p->items[p->n_items++], name, ET_ITEM_CAP);
            rc = add_piece(s, &y, ch == 0, nd);
        }
    rc = rc || seq_text(s, &y.head,
                        "Memorize and track the chain(s) of variable assignment "
                        "hidden in the following text.\n\n");
    rc = rc || seq_text(s, &y.question,
                        "\nQuestion: Find all variables that are assigned the value %s in the "
                        "text above. Answer: According to the chain(s) of variable assignment "
                        "in the text above, %d variables are assigned the value %s, they are:",
                        vals[0], per, vals[0]);
    rc = rc || place(s, t, &y, &r, c, rng_below(&r, s->n_filler), p) || set_budget(s, p);
    layout_free(&y);
    return rc;
}

/* ---- word lists -------------------------------------------------------------------------- */

/* " i." of the list's numbering (i >= 1), made once: NULL after a message. */
static const et_seq *num_ids(et_source *s, size_t i)
{
    if (i > s->n_num) {
        size_t n = i < 1024 ? 1024 : i * 2;
        et_seq *nv = realloc(s->num, n * sizeof *nv);
        if (!nv) {
            cli_fail("out of memory");
            return NULL;
        }
        s->num = nv;
        for (; s->n_num < n; s->n_num++) {
            s->num[s->n_num] = (et_seq){0};
            if (seq_text(s, &s->num[s->n_num], " %zu.", s->n_num + 1))
                return NULL;
        }
    }
    return &s->num[i - 1];
}

/* Ids of the numbers a + 1 .. b: the total, or SIZE_MAX after a message. */
static size_t num_cost(et_source *s, size_t a, size_t b)
{
    size_t n = 0;
    for (size_t i = a + 1; i <= b; i++) {
        const et_seq *q = num_ids(s, i);
        if (!q)
            return SIZE_MAX;
        n += q->n;
    }
    return n;
}

/* Draws distinct pool words: the j-th draw of a partial Fisher-Yates. */
static size_t draw_word(rng *r, size_t *perm, size_t n_pool, size_t j)
{
    size_t k = j + rng_below(r, n_pool - j), w = perm[k];
    perm[k] = perm[j];
    perm[j] = w;
    return w;
}

/* Room for the list between head and question: 0, or 1 after a message. */
static int list_room(const et_task *t, const layout *y, const et_cell *c, size_t *room)
{
    size_t fixed = y->head.n + y->question.n;
    if (fixed >= c->length)
        return cli_fail("%s: length %zu is shorter than the task's fixed text (%zu tokens)",
                        t->name, c->length, fixed);
    *room = c->length - fixed;
    return 0;
}

/* Copies per common word: the most (<= 30) whose entries fill at most half
 * the room, so that uncommon words fill the rest; 0 if even 5 do not fit. */
static int cwe_freq(et_source *s, const et_task *t, size_t words_cost, size_t room, size_t *cost)
{
    for (int f = CWE_FREQ_MAX; f >= CWE_FREQ_MIN; f--) {
        size_t nc = num_cost(s, 0, (size_t)(t->top * f));
        if (nc == SIZE_MAX)
            return -1;
        *cost = nc + (size_t)f * words_cost;
        if (*cost * 2 <= room)
            return f;
    }
    return 0;
}

/* Entries (pool indices) of the list, unshuffled: common words first. */
static int cwe_entries(et_source *s, const et_task *t, rng *r, size_t room, size_t *perm,
                       size_t *ent, size_t *n_ent, et_prompt *p)
{
    size_t words_cost = 0, used = 0, j = 0;
    for (; j < (size_t)t->top; j++) {
        size_t w = draw_word(r, perm, s->pool.n, j);
        words_cost += s->pool.ids[w].n;
        snprintf(p->items[p->n_items++], ET_ITEM_CAP, "%s", s->pool.w[w]);
    }
    int f = cwe_freq(s, t, words_cost, room, &used);
    if (f < 0)
        return 1;
    if (f == 0)
        return cli_fail("cwe: a longer length is needed: %d words %d times each need more "
                        "than half of the %zu tokens left for the list",
                        t->top, CWE_FREQ_MIN, room);
    *n_ent = 0;
    for (int k = 0; k < t->top; k++)
        for (int c = 0; c < f; c++)
            ent[(*n_ent)++] = perm[k];
    while (j < s->pool.n) { /* uncommon words, 3 copies each, while they fit */
        size_t w = draw_word(r, perm, s->pool.n, j++);
        size_t nc = num_cost(s, *n_ent, *n_ent + CWE_UNCOMMON);
        if (nc == SIZE_MAX)
            return 1;
        size_t add = nc + CWE_UNCOMMON * s->pool.ids[w].n;
        if (used + add > room)
            break;
        for (int c = 0; c < CWE_UNCOMMON; c++)
            ent[(*n_ent)++] = w;
        used += add;
    }
    return 0;
}

static int make_cwe(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    rng r = cell_rng(t, c);
    layout y = {0};
    size_t room = 0, n_ent = 0, *perm = NULL, *ent = NULL;
    int rc = seq_text(s, &y.head,
                      "Below is a numbered list of words. In these words, some "
                      "appear more often than others. Memorize the ones that appear "
                      "most often.\n");
    rc = rc || seq_text(s, &y.question,
                        "\nQuestion: What are the %d most common words in the above list? "
                        "Answer: The top %d words that appear most often in the list are:",
                        t->top, t->top);
    /* every entry costs 2 ids or more: enough words for any list */
    rc = rc || list_room(t, &y, c, &room) ||
         pool_ensure(s, (size_t)t->top + room / (2 * CWE_UNCOMMON) + 1);
    if (!rc && (!(perm = malloc(s->pool.n * sizeof *perm)) ||
                !(ent = malloc((room / 2 + 1) * sizeof *ent))))
        rc = cli_fail("out of memory");
    for (size_t k = 0; !rc && k < s->pool.n; k++)
        perm[k] = k;
    rc = rc || cwe_entries(s, t, &r, room, perm, ent, &n_ent, p);
    for (size_t k = n_ent; !rc && k > 1; k--) { /* shuffle */
        size_t m = rng_below(&r, k), tmp = ent[k - 1];
        ent[k - 1] = ent[m];
        ent[m] = tmp;
    }
    rc = rc || seq_push(&p->ids, y.head.v, y.head.n);
    for (size_t k = 0; !rc && k < n_ent; k++) {
        const et_seq *num = num_ids(s, k + 1);
        rc = !num || seq_push(&p->ids, num->v, num->n) ||
             seq_push(&p->ids, s->pool.ids[ent[k]].v, s->pool.ids[ent[k]].n);
    }
    rc = rc || seq_push(&p->ids, y.question.v, y.question.n) || set_budget(s, p);
    free(perm);
    free(ent);
    layout_free(&y);
    return rc;
}

/* A stream of pool words vocab[rank], ranks ~ Zipf(FWE_ALPHA), filling the
 * room: its length; counts[rank] = occurrences. */
static size_t fwe_stream(const et_source *s, rng *r, const size_t *vocab, const double *cdf,
                         size_t room, size_t *stream, size_t *counts)
{
    size_t n = 0, used = 0;
    memset(counts, 0, FWE_VOCAB * sizeof *counts);
    for (;;) {
        double u = rng_unit(r);
        size_t k = 0;
        while (k + 1 < FWE_VOCAB && cdf[k] <= u)
            k++;
        size_t cost = s->pool.ids[vocab[k]].n;
        if (used + cost > room)
            return n;
        stream[n++] = k;
        counts[k]++;
        used += cost;
    }
}

/* The top ranks by count (top + 1 of them, ties to the lower rank); 1 if
 * the top ones are strictly ahead of the next. */
static int fwe_top(const size_t *counts, int top, size_t *best)
{
    for (int i = 0; i <= top; i++) {
        size_t b = SIZE_MAX;
        for (size_t k = 0; k < FWE_VOCAB; k++) {
            int taken = 0;
            for (int j = 0; j < i; j++)
                taken |= best[j] == k;
            if (!taken && (b == SIZE_MAX || counts[k] > counts[b]))
                b = k;
        }
        best[i] = b;
    }
    return counts[best[top - 1]] > counts[best[top]];
}

static int make_fwe(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    rng r = cell_rng(t, c);
    layout y = {0};
    size_t room = 0, vocab[FWE_VOCAB], counts[FWE_VOCAB], best[ET_MAX_ITEMS + 1], *perm = NULL,
           *stream = NULL, n = 0;
    double cdf[FWE_VOCAB], z = 0.0;
    int rc = seq_text(s, &y.head,
                      "Read the following coded text and track the frequency of "
                      "each coded word. Find the three most frequently appeared "
                      "coded words.\n");
    rc = rc || seq_text(s, &y.question,
                        "\nQuestion: What are the three most frequently appeared words in the "
                        "above coded text? Answer: According to the coded text above, the three "
                        "most frequently appeared words are:");
    rc = rc || list_room(t, &y, c, &room) || pool_ensure(s, FWE_VOCAB);
    if (!rc &&
        (!(perm = malloc(s->pool.n * sizeof *perm)) || !(stream = malloc(room * sizeof *stream))))
        rc = cli_fail("out of memory");
    for (size_t k = 0; !rc && k < s->pool.n; k++)
        perm[k] = k;
    for (size_t k = 0; !rc && k < FWE_VOCAB; k++) {
        vocab[k] = draw_word(&r, perm, s->pool.n, k);
        z += pow((double)(k + 1), -FWE_ALPHA);
        cdf[k] = z;
    }
    for (size_t k = 0; k < FWE_VOCAB; k++)
        cdf[k] /= z;
    int ok = 0;
    for (int tries = 0; !rc && !ok && tries < FWE_TRIES; tries++) {
        n = fwe_stream(s, &r, vocab, cdf, room, stream, counts);
        ok = fwe_top(counts, t->top, best);
    }
    if (!rc && !ok)
        rc = cli_fail("fwe: length %zu is too short for a clear top %d (%d streams tried)",
                      c->length, t->top, FWE_TRIES);
    for (int k = 0; !rc && k < t->top; k++)
        snprintf(p->items[p->n_items++], ET_ITEM_CAP, "%s", s->pool.w[vocab[best[k]]]);
    rc = rc || seq_push(&p->ids, y.head.v, y.head.n);
    for (size_t k = 0; !rc && k < n; k++)
        rc = seq_push(&p->ids, s->pool.ids[vocab[stream[k]]].v, s->pool.ids[vocab[stream[k]]].n);
    rc = rc || seq_push(&p->ids, y.question.v, y.question.n) || set_budget(s, p);
    free(perm);
    free(stream);
    layout_free(&y);
    return rc;
}

/* ---- the pass key ------------------------------------------------------------------------ */

static int make_passkey(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    /* `longmamba passkey`'s derivation since it was written (the recorded
     * experiment's prompts): the depth's index, not its value */
    uint64_t h = cli_mix64(
        c->seed ^ cli_mix64((uint64_t)c->length ^
                            cli_mix64((uint64_t)c->depth_index * 1000003u + (uint64_t)c->trial)));
    int key = 10000 + (int)(h % 90000u);
    char nd[128];
    snprintf(nd, sizeof nd, " The pass key is %d. Remember it. %d is the pass key. ", key, key);
    snprintf(p->items[p->n_items++], ET_ITEM_CAP, "%d", key);
    layout y = {0};
    rng none = {0}; /* no distractors to place */
    int rc = add_piece(s, &y, 1, nd) ||
             seq_text(s, &y.question, "\nWhat is the pass key? The pass key is") ||
             place(s, t, &y, &none, c, (size_t)(cli_mix64(h) % s->n_filler), p);
    p->n_gen = s->enc.kind == CLI_TEXT_BYTES ? 6 : 8; /* " 68413" is 6 bytes */
    layout_free(&y);
    return rc;
}

int et_make(et_source *s, const et_task *t, const et_cell *c, et_prompt *p)
{
    p->ids.n = 0;
    p->n_items = p->n_targets = p->n_gen = 0;
    switch (t->shape) {
    case ET_NIAH: return make_niah(s, t, c, p);
    case ET_VT: return make_vt(s, t, c, p);
    case ET_CWE: return make_cwe(s, t, c, p);
    case ET_FWE: return make_fwe(s, t, c, p);
    case ET_PASSKEY: return make_passkey(s, t, c, p);
    }
    return cli_fail("internal: task %s has no shape", t->name);
}

/* ---- scoring ------------------------------------------------------------------------------ */

static int word_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-';
}

/* The next word of *a into w (empty when longer than w holds): 1, or 0 at
 * the end. */
static int next_word(const char **a, char w[ET_ITEM_CAP])
{
    const char *p = *a;
    while (*p && !word_char(*p))
        p++;
    if (!*p)
        return 0;
    size_t n = 0;
    for (; word_char(*p); p++)
        if (n < ET_ITEM_CAP)
            w[n++] = *p;
    if (n == ET_ITEM_CAP)
        n = 0; /* too long to be any item */
    w[n] = '\0';
    *a = p;
    return 1;
}

int et_score(const et_task *t, const et_prompt *p, const char *answer, int *hits)
{
    const char *rule = et_scoring(t), *a = answer;
    char w[ET_ITEM_CAP + 1];
    *hits = 0;
    if (strcmp(rule, "passkey") == 0) {
        while (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r')
            a++;
        *hits = strncmp(a, p->items[0], 5) == 0;
    } else if (strcmp(rule, "first_word") == 0) {
        *hits = next_word(&a, w) && w[0] && strcasecmp(w, p->items[0]) == 0;
    } else {
        int found[ET_MAX_ITEMS] = {0};
        while (next_word(&a, w))
            for (int k = 0; k < p->n_items; k++)
                if (!found[k] && w[0] && strcasecmp(w, p->items[k]) == 0) {
                    found[k] = 1;
                    (*hits)++;
                }
    }
    return *hits == p->n_items;
}

void et_wilson(long long k, long long n, double *lo, double *hi)
{
    if (n <= 0) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    const double z = 1.959963984540054; /* the 97.5% normal quantile */
    double nn = (double)n, ph = (double)k / nn, z2 = z * z;
    double centre = (ph + z2 / (2.0 * nn)) / (1.0 + z2 / nn);
    double half = z * sqrt(ph * (1.0 - ph) / nn + z2 / (4.0 * nn * nn)) / (1.0 + z2 / nn);
    *lo = k <= 0 ? 0.0 : centre - half; /* exact ends; the formula rounds there */
    *hi = k >= n ? 1.0 : centre + half;
}
