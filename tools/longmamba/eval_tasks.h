/* eval_tasks.h - the synthetic tasks of `longmamba eval` (RULER-style) and
 * the pass key of `longmamba passkey`: prompts as token ids, scoring of a
 * generated answer, the Wilson interval.
 *
 * No model here.  A prompt depends only on the encoder, the filler text,
 * the task and its cell (seed, length, depth, trial), so every mode sees the
 * same prompts and a run can be repeated exactly. */
#ifndef LM_EVAL_TASKS_H
#define LM_EVAL_TASKS_H
#include <stddef.h>
#include <stdint.h>

#include "cli_util.h"

typedef enum et_shape {
    ET_NIAH,   /* needles "One of the special magic Xs for KEY is: VALUE." in the filler */
    ET_VT,     /* chains of "VAR A = VAR B." in the filler */
    ET_CWE,    /* a numbered list of words, no filler, no depth */
    ET_FWE,    /* a Zipf-distributed stream of words, no filler, no depth */
    ET_PASSKEY /* the pass key of `longmamba passkey` */
} et_shape;

typedef enum et_value { ET_NUMBER, ET_WORD, ET_UUID } et_value;

typedef struct et_task {
    const char *name;
    et_shape shape;
    et_value value; /* NIAH: what the needles hold */
    int keys;       /* NIAH: keys with needles, the asked ones first */
    int values;     /* NIAH: values of each asked key */
    int queries;    /* NIAH: keys asked */
    int chains;     /* VT: chains, the first asked */
    int hops;       /* VT: assignments after the first, per chain */
    int top;        /* CWE, FWE: words asked */
    const char *about;
} et_task;

/* The default filler: RULER's "noise" haystack, repeated. */
extern const char et_grass[];

extern const et_task et_tasks[];
extern const int et_n_tasks;
/* The task called name, or NULL. */
const et_task *et_find(const char *name);
/* 0 for the tasks without a needle (cwe, fwe): one cell per length. */
int et_has_depth(const et_task *t);
/* "first_word", "all" or "passkey": the scoring rule (et_score). */
const char *et_scoring(const et_task *t);

/* A growable sequence of token ids. */
typedef struct et_seq {
    int32_t *v;
    size_t n, cap;
} et_seq;

/* Distinct lowercase words and their ids as " word". */
typedef struct et_pool {
    char **w;
    et_seq *ids;
    size_t n, cap;
    uint32_t *slot; /* open addressing: index + 1, 0 empty */
    size_t n_slot;
    uint64_t synth; /* next synthetic word */
} et_pool;

/* What prompts are made of, for one model's encoder. */
typedef struct et_source {
    cli_encoder enc; /* a copy; the caller keeps the tokenizer alive */
    int32_t *filler;
    size_t n_filler;
    et_pool pool;
    et_seq *num; /* " i." for i = 1.. (cwe), made when first needed */
    size_t n_num;
} et_source;

/* Encodes the filler text text[0..len) and collects its words (3 to 12
 * ASCII letters, lowercased, first appearance first), then synthetic words
 * made of syllables until there are at least ET_POOL_MIN: 0, or 1 after a
 * message.  et_source_free is safe after a failure. */
#define ET_POOL_MIN 256
int et_source_init(et_source *s, const cli_encoder *enc, const char *text, size_t len);
/* The same from the file at path, or from et_grass when path is NULL. */
int et_source_load(et_source *s, const cli_encoder *enc, const char *path);
void et_source_free(et_source *s);

/* One prompt's place in the grid. */
typedef struct et_cell {
    uint64_t seed;
    size_t length;   /* tokens */
    double depth;    /* 0 = first filler token, 1 = just before the question */
    int depth_index; /* the pass key's offsets and keys use it */
    long long trial;
} et_cell;

#define ET_MAX_ITEMS 16 /* expected answer items */
#define ET_ITEM_CAP  40 /* bytes of one (a UUID is 36) */

typedef struct et_prompt {
    et_seq ids;
    char items[ET_MAX_ITEMS][ET_ITEM_CAP]; /* what the answer must hold */
    int n_items;
    size_t target_at[ET_MAX_ITEMS]; /* first id of each needle the answer needs */
    int n_targets;
    int n_gen; /* tokens to generate */
} et_prompt;

/* The prompt of task t in cell c: 0, or 1 after a message (a length too
 * short for the task's fixed text, out of memory).  p is reused between
 * calls; et_prompt_free releases it. */
int et_make(et_source *s, const et_task *t, const et_cell *c, et_prompt *p);
void et_prompt_free(et_prompt *p);

/* Scores a generated answer against p's items: returns 1 if correct; *hits
 * = items found.  Words are maximal runs of ASCII letters, digits and '-',
 * compared ignoring ASCII case.  "first_word": the answer's first word is
 * the item.  "all": every item is one of the answer's words (recall =
 * hits / items).  "passkey": after leading white space the answer begins
 * with the 5 digits. */
int et_score(const et_task *t, const et_prompt *p, const char *answer, int *hits);

/* 95% Wilson score interval of k successes in n trials ([0, 1] for n = 0). */
void et_wilson(long long k, long long n, double *lo, double *hi);
#endif
