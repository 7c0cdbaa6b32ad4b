/*
 * json.h - a small, strict JSON reader (RFC 8259) producing a DOM.
 * Depth and size limited; strings are decoded to UTF-8 (surrogate pairs
 * joined; invalid escapes rejected).  Used for config.json, the
 * safetensors header, shard indexes and tokenizer.json.
 */
#ifndef LMI_JSON_H
#define LMI_JSON_H

#include "internal.h"

typedef enum lmi_json_type {
    LMI_JSON_NULL = 0,
    LMI_JSON_FALSE,
    LMI_JSON_TRUE,
    LMI_JSON_NUMBER,
    LMI_JSON_STRING,
    LMI_JSON_ARRAY,
    LMI_JSON_OBJECT
} lmi_json_type;

typedef struct lmi_json lmi_json;
struct lmi_json {
    lmi_json_type type;
    double num;      /* NUMBER */
    bool is_integer; /* NUMBER written without fraction/exponent whose
                        value fits int64_t (exact in `integer`) */
    int64_t integer; /* NUMBER when is_integer */
    char *str;       /* STRING (NUL terminated, may contain NUL: see len) */
    size_t len;      /* STRING bytes; ARRAY/OBJECT element count */
    lmi_json *items; /* ARRAY elements / OBJECT values */
    char **keys;     /* OBJECT keys */
    size_t *key_lens;
};

/* Parses text[0..size) (one value, surrounded only by whitespace; a
 * leading UTF-8 byte order mark is ignored).  At most 128 nested
 * containers.  Object keys may repeat (lmi_json_get returns the first).
 * On success *out is a tree freed by lmi_json_free; on failure *out is
 * NULL and e names the problem with its line and column. */
lm_status lmi_json_parse(const char *text, size_t size, lmi_json **out, lmi_err *e);
void lmi_json_free(lmi_json *j);
/* Member of an object by key (first match), or NULL. */
const lmi_json *lmi_json_get(const lmi_json *obj, const char *key);

#endif
