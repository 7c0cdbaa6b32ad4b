/* cli_util.h - helpers shared by the longmamba subcommands.
 *
 * Conventions: functions that print do so on stderr, every line starting
 * with "longmamba: "; "int" results are 1 = success / 0 = failure for the
 * parsers (cli_parse_*; options go through cli_opt.h), and 0 = success / 1 = failure (already
 * reported) for the functions that print, so that a command can `return` them as its exit status.
 */
#ifndef LM_CLI_UTIL_H
#define LM_CLI_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "longmamba.h"

#define CLI_EXIT_USAGE 2

/* ---- parsing (no output) --------------------------------------------------- */

/* "auto" | "cpu" | "cuda" -> *out; 1 on success, 0 if the name is unknown. */
int cli_parse_backend(const char *s, lm_backend *out);
/* The whole of s is a decimal integer in [lo, hi] (leading white space and
 * a sign allowed, as strtoll): *out = it, 1.  Otherwise 0, *out untouched. */
int cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* The whole of s is a finite number (strtod syntax, no overflow): *out =
 * it, 1.  Otherwise 0 ("nan", "inf", "1e999", "", "1x"), *out untouched. */
int cli_parse_double(const char *s, double *out);

/* ---- messages (stderr) ------------------------------------------------------- */

/* "longmamba: " + printf(fmt, ...) + "\n" on stderr; returns 1. */
int cli_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* "longmamba: WHAT: STATUS: MSG" (": MSG" left out when msg is NULL or
 * empty) on stderr; returns 1. */
int cli_fail_status(const char *what, lm_status st, const char *msg);

/* --help line: the library's default theta of each architecture. */
void cli_theta_help(FILE *f);

/* ---- time, random numbers ---------------------------------------------------- */

/* Seconds on the monotonic clock (for durations only). */
double cli_seconds(void);
/* splitmix64 finaliser of x + 0x9E3779B97F4A7C15: a well-mixed 64-bit hash;
 * x, x + golden, x + 2 golden, ... is the splitmix64 sequence. */
uint64_t cli_mix64(uint64_t x);

/* ---- files ------------------------------------------------------------------- */

/* All of a stream, NUL-terminated (the NUL not counted in *len); NULL with
 * errno set (ENOMEM, EIO) on failure.  The stream is not closed. */
char *cli_read_stream(FILE *f, size_t *len);
/* All of a file, as cli_read_stream; NULL with errno set (from fopen too). */
char *cli_read_file(const char *path, size_t *len);
/* 1 if dir/name exists and is readable. */
int cli_has_file(const char *dir, const char *name);
/* 1 if dir/config.json says "byte_level": true. */
int cli_byte_level_config(const char *dir);
/* Token ids of a --tokens file: whitespace-separated decimal integers, each
 * in [0, vocab).  A malloc'd array (non-NULL even when empty) and *n_out;
 * NULL after a message naming the file and the bad token (1-based). */
int32_t *cli_read_token_file(const char *path, int64_t vocab, size_t *n_out);

/* ---- models -------------------------------------------------------------------- */

/* Loads dir with the backend, thread count (0 = library default) and
 * weight format, and fills *info.  0 on success; 1 after "cannot load
 * model: ..." (nothing to free). */
int cli_load_model(const char *dir, lm_backend backend, long long threads, lm_weight_format weights,
                   lm_model **model, lm_model_info *info);
/* One session with the chunk size (0 = default) and an optional prefill
 * progress callback.  0 on success; 1 after "cannot create a session: ...". */
int cli_create_session(lm_model *model, long long chunk, lm_progress_fn progress, void *user,
                       lm_session **s);
/* A calibration for model.  0 on success; 1 after "cannot load calibration:
 * ..." (which names the file and why, e.g. another model's calibration). */
int cli_load_calibration(const char *path, const lm_model *model, lm_calibration **cal);

/* ---- text to token ids ----------------------------------------------------------- */

/* How text becomes token ids for a model: its dir/tokenizer.json if there
 * is one (for a GGUF file: its tokenizer.ggml.* when present), else raw bytes for a byte-level model (vocabulary 256, or more
 * with "byte_level": true in config.json), else not at all. */
typedef enum cli_text_kind { CLI_TEXT_NONE, CLI_TEXT_BYTES, CLI_TEXT_TOKENIZER } cli_text_kind;
cli_text_kind cli_model_text_kind(const char *dir, int64_t vocab);

/* Encodes text[0..len) with tok into a malloc'd *ids (non-NULL on LM_OK,
 * even for no ids) of *n ids.  No output; on failure err holds the reason
 * (empty for LM_ERR_NO_MEMORY) and *ids is NULL. */
lm_status cli_tokenize(const lm_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                       size_t *n, char *err, size_t err_cap);

/* Text -> ids for one model: its text kind, its tokenizer when that kind
 * is CLI_TEXT_TOKENIZER, and the vocabulary every id must fall in. */
typedef struct cli_encoder {
    cli_text_kind kind;
    lm_tokenizer *tok;
    int64_t vocab;
} cli_encoder;

/* Sets up enc for the model at dir (vocabulary `vocab`).  0 on success;
 * 1 after a message: "DIR has no tokenizer.json and is not a byte-level
 * model (vocabulary V): NO_TEXT_HINT" when the model cannot read text, or
 * "cannot load tokenizer: ..." when its tokenizer.json is bad.  enc is
 * always safe to pass to cli_encoder_close. */
int cli_encoder_open(cli_encoder *enc, const char *dir, int64_t vocab, const char *no_text_hint);
/* An encoder of raw bytes (vocab must be >= 256). */
void cli_encoder_bytes(cli_encoder *enc, int64_t vocab);
void cli_encoder_close(cli_encoder *enc);
/* text[0..len) as token ids: a malloc'd array (non-NULL even when empty)
 * and *n_out; NULL after a message (tokenizer error, an id outside
 * [0, vocab), out of memory). */
int32_t *cli_encode_text(const cli_encoder *enc, const char *text, size_t len, size_t *n_out);
/* The whole file at path, encoded as cli_encode_text; NULL after a message
 * ("cannot read PATH: ..." included). */
int32_t *cli_encode_file(const cli_encoder *enc, const char *path, size_t *n_out);
#endif
