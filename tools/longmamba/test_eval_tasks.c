/*
 * test_eval_tasks.c - the prompts, the scoring and the Wilson interval of
 * `longmamba eval` (eval_tasks.c), without a model.
 *
 *   test_eval_tasks FILLER.txt [TOKENIZER.json]
 *
 * Prompts are checked with raw bytes and, when a tokenizer is given (the
 * GPT-NeoX one in CI), with its ids: the same for a seed, other for another
 * seed, L ids (cwe/fwe: at most L, less than one entry short), the needles
 * found in the decoded text at the requested depth, the word lists counted
 * to give exactly the expected most common words.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eval_tasks.h"

static int n_ok, n_bad;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_ok++;                                                                                \
        } else {                                                                                   \
            n_bad++;                                                                               \
            printf("FAIL: %s:%d: ", __FILE__, __LINE__);                                           \
            printf(__VA_ARGS__);                                                                   \
            putchar('\n');                                                                         \
        }                                                                                          \
    } while (0)

/* ---- Wilson interval -------------------------------------------------------------- */

static void test_wilson(void)
{
    const double z2 = 1.959963984540054 * 1.959963984540054;
    double lo, hi;
    /* closed forms of the interval at k = 0, n / 2 and n, and the printed
     * values of the usual tables (4 decimals) */
    et_wilson(0, 10, &lo, &hi);
    CHECK(lo == 0.0 && fabs(hi - z2 / (10 + z2)) < 1e-12 && fabs(hi - 0.2775) < 5e-5,
          "0/10: [%g, %g]", lo, hi);
    et_wilson(10, 10, &lo, &hi);
    CHECK(hi == 1.0 && fabs(lo - 10 / (10 + z2)) < 1e-12 && fabs(lo - 0.7225) < 5e-5,
          "10/10: [%g, %g]", lo, hi);
    et_wilson(5, 10, &lo, &hi);
    double half = sqrt(z2) / (2.0 * sqrt(10 + z2));
    CHECK(fabs(lo - (0.5 - half)) < 1e-12 && fabs(hi - (0.5 + half)) < 1e-12 &&
              fabs(lo - 0.2366) < 5e-5 && fabs(hi - 0.7634) < 5e-5,
          "5/10: [%g, %g]", lo, hi);
    et_wilson(1, 2, &lo, &hi);
    CHECK(fabs(lo - 0.0945) < 5e-5 && fabs(hi - 0.9055) < 5e-5, "1/2: [%g, %g]", lo, hi);
    et_wilson(0, 0, &lo, &hi);
    CHECK(lo == 0.0 && hi == 1.0, "0/0 is [0, 1]");
}

/* ---- scoring ----------------------------------------------------------------------- */

static et_prompt items(int n, const char *const *v)
{
    et_prompt p = {0};
    for (int k = 0; k < n; k++)
        snprintf(p.items[p.n_items++], ET_ITEM_CAP, "%s", v[k]);
    return p;
}

static void expect_score(const char *task, et_prompt *p, const char *answer, int correct, int hits)
{
    int h = -1;
    int c = et_score(et_find(task), p, answer, &h);
    CHECK(c == correct && h == hits, "%s: answer \"%s\": correct %d hits %d, want %d and %d", task,
          answer, c, h, correct, hits);
}

static void test_scoring(void)
{
    const char *num[] = {"1234567"};
    et_prompt p = items(1, num);
    expect_score("niah_number", &p, " 1234567.", 1, 1);
    expect_score("niah_number", &p, "1234567", 1, 1);
    expect_score("niah_number", &p, ": 1234567\nWhat", 1, 1);
    expect_score("niah_number", &p, " 12345678", 0, 0); /* near misses */
    expect_score("niah_number", &p, " 123456", 0, 0);
    expect_score("niah_number", &p, " 1234568.", 0, 0);
    expect_score("niah_number", &p, " 1 234567", 0, 0);
    expect_score("niah_number", &p, " the number is 1234567", 0, 0); /* not the first word */
    expect_score("niah_number", &p, "", 0, 0);
    expect_score("niah_multikey", &p, " 1234567, 7654321", 1, 1);
    const char *uuid[] = {"8c752d46-8061-4051-ae23-08efecf4b5e4"};
    p = items(1, uuid);
    expect_score("niah_uuid", &p, " 8c752d46-8061-4051-ae23-08efecf4b5e4.", 1, 1);
    expect_score("niah_uuid", &p, " 8C752D46-8061-4051-AE23-08EFECF4B5E4", 1, 1);
    expect_score("niah_uuid", &p, " 8c752d46-8061-4051-ae23-08efecf4b5e5", 0, 0);
    expect_score("niah_uuid", &p, " 8c752d46-8061-4051-ae23-08efecf4b5", 0, 0);
    expect_score("niah_uuid", &p, " 8c752d46 8061-4051-ae23-08efecf4b5e4", 0, 0);
    const char *word[] = {"kovira"};
    p = items(1, word);
    expect_score("niah_word", &p, " Kovira.", 1, 1);
    expect_score("niah_word", &p, " koviras", 0, 0);
    expect_score("niah_word", &p, " kovir a", 0, 0);

    const char *four[] = {"1111111", "2222222", "3333333", "4444444"};
    p = items(4, four);
    expect_score("niah_multivalue", &p, " 4444444, 2222222, 1111111 and 3333333.", 1, 4);
    expect_score("niah_multivalue", &p, " 1111111, 2222222, 3333333", 0, 3);
    expect_score("niah_multivalue", &p, " 1111111 1111111 1111111 1111111", 0, 1);
    expect_score("niah_multivalue", &p, " 1111111, 2222222, 3333333, 44444444", 0, 3);
    expect_score("niah_multiquery", &p, "x: 1111111; 2222222;3333333(4444444)", 1, 4);
    expect_score("niah_multiquery", &p, " 1111111y 2222222 3333333 4444444", 0, 3);
    const char *names[] = {"NPZVW", "UCOLG", "UIBYJ", "XZWSR", "ZDXVZ"};
    p = items(5, names);
    expect_score("vt", &p, " NPZVW, UCOLG, UIBYJ, XZWSR, ZDXVZ", 1, 5);
    expect_score("vt", &p, " npzvw ucolg uibyj xzwsr zdxvz", 1, 5);
    expect_score("vt", &p, " NPZVW, UCOLG, UIBYJ, XZWSR, ZDXV", 0, 4);
    const char *top[] = {"gefone", "kolope", "regami"};
    p = items(3, top);
    expect_score("fwe", &p, " regami, gefone, kolope", 1, 3);
    expect_score("fwe", &p, " regami-gefone kolope", 0, 1); /* '-' joins words */

    const char *key[] = {"22223"};
    p = items(1, key);
    expect_score("passkey", &p, " 22223", 1, 1);
    expect_score("passkey", &p, "\n 22223.", 1, 1);
    expect_score("passkey", &p, " 2222", 0, 0);
    expect_score("passkey", &p, " 22224", 0, 0);
    expect_score("passkey", &p, "x22223", 0, 0);
}

/* ---- prompts --------------------------------------------------------------------------- */

static char *decode(const et_source *s, const et_prompt *p)
{
    size_t cap = p->ids.n * 256 + 1, n = 0;
    char *text = malloc(cap), err[256];
    if (s->enc.kind == CLI_TEXT_BYTES) {
        for (; n < p->ids.n; n++)
            text[n] = (char)p->ids.v[n];
    } else if (lm_tokenizer_decode(s->enc.tok, p->ids.v, p->ids.n, text, cap - 1, &n, err,
                                   sizeof err) != LM_OK) {
        n = 0;
    }
    text[n] = '\0';
    return text;
}

static int same_prompt(const et_prompt *a, const et_prompt *b)
{
    if (a->ids.n != b->ids.n || a->n_items != b->n_items ||
        memcmp(a->ids.v, b->ids.v, a->ids.n * sizeof *a->ids.v))
        return 0;
    for (int k = 0; k < a->n_items; k++)
        if (strcmp(a->items[k], b->items[k]))
            return 0;
    return 1;
}

/* Where the first needle the answer needs starts in text, or NULL. */
static const char *first_target(const et_task *t, const et_prompt *p, const char *text)
{
    char pat[128];
    if (t->shape == ET_PASSKEY)
        snprintf(pat, sizeof pat, "The pass key is %s. Remember it.", p->items[0]);
    else if (t->shape == ET_VT)
        snprintf(pat, sizeof pat, "VAR %s = ", p->items[0]);
    else
        snprintf(pat, sizeof pat, "is: %s. ", p->items[0]);
    const char *at = strstr(text, pat);
    if (at && t->shape == ET_NIAH) /* back to the needle's start */
        for (const char *q = at; q > text; q--)
            if (strncmp(q, "One of the special magic", 24) == 0)
                return q;
    return at;
}

/* Nothing but needles (and the spaces around them) from q to end. */
static int only_needles(const char *q, const char *end)
{
    while (q && q < end) {
        if (*q == ' ') {
            q++;
            continue;
        }
        const char *from = strncmp(q, "One of the special magic", 24) == 0 ? strstr(q, "is: ")
                           : strncmp(q, "VAR ", 4) == 0                    ? q
                           : strncmp(q, "The pass key is", 15) == 0 ? strstr(q, "is the pass key")
                                                                    : NULL;
        const char *dot = from ? strstr(from, ". ") : NULL;
        if (!dot || dot >= end)
            return 0;
        q = dot + 2;
    }
    return q == end;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *q = hay; (q = strstr(q, needle)) != NULL; q++)
        n++;
    return n;
}

/* The words between the first '\n' and the last "\nQuestion:", counted; numbers
 * like "12." skipped.  Checks that the items are the strict top. */
static void check_list(const et_task *t, const et_prompt *p, const char *text, const char *what)
{
    const char *a = strchr(text, '\n'), *b = strstr(text, "\nQuestion:");
    static char words[8192][16];
    static int counts[8192];
    int n_words = 0, n_entries = 0;
    for (const char *q = a; q && q < b;) {
        while (q < b && (*q == ' ' || *q == '\n'))
            q++;
        size_t len = strcspn(q, " \n");
        if (q + len > b)
            len = (size_t)(b - q);
        if (len == 0 || len >= 16 || q[len - 1] == '.') { /* numbering */
            q += len ? len : 1;
            continue;
        }
        int k = 0;
        while (k < n_words && (strlen(words[k]) != len || strncmp(words[k], q, len)))
            k++;
        if (k == n_words && n_words < 8192) {
            snprintf(words[n_words], 16, "%.*s", (int)len, q);
            counts[n_words++] = 0;
        }
        counts[k]++;
        n_entries++;
        q += len;
    }
    int min_top = 1 << 30, max_rest = 0, found = 0;
    for (int k = 0; k < n_words; k++) {
        int is_item = 0;
        for (int i = 0; i < p->n_items; i++)
            is_item |= strcmp(words[k], p->items[i]) == 0;
        found += is_item;
        if (is_item && counts[k] < min_top)
            min_top = counts[k];
        if (!is_item && counts[k] > max_rest)
            max_rest = counts[k];
    }
    CHECK(found == t->top && p->n_items == t->top && min_top > max_rest && n_entries > 20,
          "%s: the %d items are the strict top of %d entries (found %d, %d vs %d)", what, t->top,
          n_entries, found, min_top, max_rest);
}

/* The layout of one prompt: length, needles, depth. */
static void check_prompt(const et_source *s, const et_task *t, const et_cell *c, const et_prompt *p,
                         const char *what)
{
    char *text = decode(s, p);
    size_t L = c->length, n = p->ids.n;
    if (et_has_depth(t)) {
        CHECK(n == L, "%s: %zu ids, want %zu", what, n, L);
    } else { /* one more entry did not fit: at most ~3 entries short */
        CHECK(n <= L && n + 64 > L, "%s: %zu ids for length %zu", what, n, L);
        check_list(t, p, text, what);
    }
    CHECK(p->n_items >= 1 && p->n_gen > 0, "%s: items and an answer budget", what);
    for (int k = 0; k < p->n_items; k++) /* every expected item is in the prompt */
        CHECK(strstr(text, p->items[k]) != NULL, "%s: item %s in the prompt", what, p->items[k]);
    if (t->shape == ET_NIAH) {
        CHECK(count_of(text, "One of the special magic") ==
                  t->keys - t->queries + t->queries * t->values,
              "%s: every needle once", what);
        CHECK(strstr(strrchr(text, '\n'), p->items[0]) == NULL, "%s: no value in the question",
              what);
    }
    if (et_has_depth(t)) {
        const char *at = first_target(t, p, text), *question = strrchr(text, '\n');
        const char *after_head = t->shape == ET_PASSKEY ? text : strchr(text, '\n');
        while (after_head && *after_head == '\n')
            after_head++;
        double frac = at ? (double)(at - text) / (double)strlen(text) : -1.0;
        if (c->depth == 0.0) /* the needle's leading space, then the needle */
            CHECK(at && at - after_head <= 1, "%s: depth 0 is right after the instructions (%d)",
                  what, at ? (int)(at - after_head) : -1);
        else if (c->depth == 1.0)
            CHECK(at && only_needles(at, question), "%s: depth 1: only needles after it", what);
        else /* the instructions, question and needles take less than a quarter */
            CHECK(at && fabs(frac - c->depth) <= 0.25, "%s: the first needle at %.3f, depth %.2f",
                  what, frac, c->depth);
    }
    free(text);
}

static void test_prompts(const cli_encoder *enc, const char *filler, size_t len, size_t L)
{
    et_source a, b;
    et_prompt p = {0}, q = {0};
    int ra = et_source_init(&a, enc, filler, len), rb = et_source_init(&b, enc, filler, len);
    CHECK(ra == 0 && rb == 0 && a.pool.n >= ET_POOL_MIN, "sources (%zu words)", a.pool.n);
    const double depths[] = {0.0, 0.5, 1.0};
    for (int k = 0; k < et_n_tasks; k++) {
        const et_task *t = &et_tasks[k];
        for (int di = 0; di < 3; di++)
            for (long long trial = 0; trial < 2; trial++) {
                et_cell c = {1234, L, depths[di], di, trial}, other = c;
                char what[96];
                snprintf(what, sizeof what, "%s %s L=%zu d=%.1f t=%lld",
                         enc->kind == CLI_TEXT_BYTES ? "bytes" : "bpe", t->name, L, c.depth, trial);
                int rc = et_make(&a, t, &c, &p);
                CHECK(rc == 0, "%s: made", what);
                if (rc)
                    continue;
                check_prompt(&a, t, &c, &p, what);
                CHECK(et_make(&b, t, &c, &q) == 0 && same_prompt(&p, &q),
                      "%s: the same from a second source", what);
                other.seed = 99;
                CHECK(et_make(&a, t, &other, &q) == 0 && !same_prompt(&p, &q) &&
                          strcmp(p.items[0], q.items[0]) != 0,
                      "%s: another seed, another prompt", what);
                other = c;
                other.trial += 1000;
                CHECK(et_make(&a, t, &other, &q) == 0 && !same_prompt(&p, &q),
                      "%s: another trial, another prompt", what);
            }
    }
    et_cell tiny = {1234, 40, 0.5, 0, 0};
    CHECK(et_make(&a, et_find("niah_number"), &tiny, &p) == 1, "40 ids are too few for a needle");
    CHECK(et_make(&a, et_find("cwe"), &tiny, &p) == 1, "and for a word list");
    et_prompt_free(&p);
    et_prompt_free(&q);
    et_source_free(&a);
    et_source_free(&b);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_eval_tasks FILLER.txt [TOKENIZER.json]\n");
        return 2;
    }
    test_wilson();
    test_scoring();
    size_t len = 0;
    char *filler = cli_read_file(argv[1], &len);
    CHECK(filler != NULL, "read %s", argv[1]);
    if (!filler)
        return 1;
    cli_encoder bytes;
    cli_encoder_bytes(&bytes, 256);
    test_prompts(&bytes, filler, len, 3000);
    test_prompts(&bytes, et_grass, strlen(et_grass), 1500); /* synthetic words */
    if (argc > 2) {
        cli_encoder bpe = {CLI_TEXT_TOKENIZER, NULL, 0};
        char err[512];
        lm_status st = lm_tokenizer_load(argv[2], &bpe.tok, err, sizeof err);
        CHECK(st == LM_OK, "load %s: %s", argv[2], err);
        if (st == LM_OK) {
            bpe.vocab = lm_tokenizer_vocab_size(bpe.tok);
            test_prompts(&bpe, filler, len, 2000);
            cli_encoder_close(&bpe);
        }
    }
    free(filler);
    printf("passed %d, failed %d\n", n_ok, n_bad);
    return n_bad != 0;
}
