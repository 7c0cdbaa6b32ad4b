/*
 * json.c - strict RFC 8259 JSON reader producing a DOM.
 *
 * Recursive descent with a depth limit.  Children of open containers are
 * collected on one shared stack (grown by doubling) and copied into an
 * exactly sized array when the container closes, so parsing is linear in
 * the input however many elements a container holds.  Every byte of input
 * is bounds checked: the parser is a fuzz target.
 */
#define _GNU_SOURCE
#include "format/json.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LMI_JSON_MAX_DEPTH 128

typedef struct jkey {
    char *s;
    size_t len;
} jkey;

typedef struct jparser {
    const unsigned char *p; /* text */
    size_t n;               /* text size */
    size_t i;               /* cursor */
    lmi_json *vals;         /* pending children of open containers */
    size_t nvals, capvals;
    jkey *keys; /* pending keys of open objects */
    size_t nkeys, capkeys;
    locale_t c_locale; /* "C" numeric locale for strtod_l, made on first use */
    lmi_err *e;
} jparser;

/* Reports an error at byte offset `at` as line:column (1-based). */
static lm_status jfail(jparser *ps, size_t at, lm_status st, const char *what)
{
    size_t line = 1, col = 1;
    for (size_t k = 0; k < at && k < ps->n; k++) {
        if (ps->p[k] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return lmi_fail(ps->e, st, "JSON: %s at line %zu column %zu", what, line, col);
}

static void json_free_node(lmi_json *j)
{
    switch (j->type) {
    case LMI_JSON_STRING: lmi_free(j->str); break;
    case LMI_JSON_ARRAY:
        for (size_t k = 0; k < j->len; k++)
            json_free_node(&j->items[k]);
        lmi_free(j->items);
        break;
    case LMI_JSON_OBJECT:
        for (size_t k = 0; k < j->len; k++) {
            json_free_node(&j->items[k]);
            if (j->keys)
                lmi_free(j->keys[k]);
        }
        lmi_free(j->items);
        lmi_free(j->keys);
        lmi_free(j->key_lens);
        break;
    default: break;
    }
    memset(j, 0, sizeof *j);
}

void lmi_json_free(lmi_json *j)
{
    if (!j)
        return;
    json_free_node(j);
    lmi_free(j);
}

/* Grows a stack to hold one more element (doubling: amortised O(1)). */
static bool grow(void **arr, size_t *cap, size_t count, size_t elem)
{
    if (count < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 64;
    if (ncap < *cap)
        return false;
    void *na = lmi_alloc_raw(ncap, elem);
    if (!na)
        return false;
    if (*arr && count)
        memcpy(na, *arr, count * elem);
    lmi_free(*arr);
    *arr = na;
    *cap = ncap;
    return true;
}

static void skip_ws(jparser *ps)
{
    while (ps->i < ps->n) {
        unsigned char c = ps->p[ps->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            ps->i++;
        else
            break;
    }
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads 4 hex digits at ps->i; -1 if malformed. */
static long read_hex4(jparser *ps)
{
    if (ps->n - ps->i < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(ps->p[ps->i + (size_t)k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    ps->i += 4;
    return v;
}

/* Length of a well-formed UTF-8 sequence starting at s (at most avail
 * bytes), or 0 if the bytes are not valid UTF-8 (overlong forms,
 * surrogates, code points past U+10FFFF and stray continuations rejected). */
static size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* > U+10FFFF */
    } else {
        return 0;
    }
    if (avail < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    return len;
}

static size_t put_utf8(char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string whose opening quote is at ps->i.  The decoded text is
 * never longer than the raw text (an escape of 6 or 12 bytes yields at
 * most 3 or 4), so one allocation of the raw length suffices. */
static lm_status parse_string(jparser *ps, char **out, size_t *out_len)
{
    size_t start = ps->i;
    ps->i++; /* opening quote */
    /* First pass: find the closing quote. */
    size_t j = ps->i;
    while (j < ps->n && ps->p[j] != '"') {
        if (ps->p[j] == '\\')
            j++;
        j++;
    }
    if (j >= ps->n)
        return jfail(ps, start, LM_ERR_FORMAT, "unterminated string");
    size_t raw = j - ps->i;
    char *buf = lmi_alloc_raw(raw + 1, 1);
    if (!buf)
        return lmi_fail(ps->e, LM_ERR_NO_MEMORY, "JSON: out of memory");
    size_t o = 0;
    while (ps->i < j) {
        unsigned char c = ps->p[ps->i];
        if (c < 0x20) {
            lmi_free(buf);
            return jfail(ps, ps->i, LM_ERR_FORMAT, "control character in string");
        }
        if (c == '\\') {
            size_t esc_at = ps->i;
            ps->i++;
            unsigned char x = ps->p[ps->i++]; /* in bounds: j > esc_at + 1 */
            switch (x) {
            case '"': buf[o++] = '"'; break;
            case '\\': buf[o++] = '\\'; break;
            case '/': buf[o++] = '/'; break;
            case 'b': buf[o++] = '\b'; break;
            case 'f': buf[o++] = '\f'; break;
            case 'n': buf[o++] = '\n'; break;
            case 'r': buf[o++] = '\r'; break;
            case 't': buf[o++] = '\t'; break;
            case 'u': {
                long u = read_hex4(ps);
                if (u < 0) {
                    lmi_free(buf);
                    return jfail(ps, esc_at, LM_ERR_FORMAT, "bad \\u escape");
                }
                unsigned long cp = (unsigned long)u;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    lmi_free(buf);
                    return jfail(ps, esc_at, LM_ERR_FORMAT, "lone low surrogate");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo = -1;
                    if (j - ps->i >= 6 && ps->p[ps->i] == '\\' && ps->p[ps->i + 1] == 'u') {
                        ps->i += 2;
                        lo = read_hex4(ps);
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        lmi_free(buf);
                        return jfail(ps, esc_at, LM_ERR_FORMAT, "lone high surrogate");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                }
                o += put_utf8(buf + o, cp);
                break;
            }
            default: lmi_free(buf); return jfail(ps, esc_at, LM_ERR_FORMAT, "invalid escape");
            }
            continue;
        }
        if (c < 0x80) {
            buf[o++] = (char)c;
            ps->i++;
            continue;
        }
        size_t sl = utf8_seq_len(ps->p + ps->i, j - ps->i);
        if (sl == 0) {
            lmi_free(buf);
            return jfail(ps, ps->i, LM_ERR_FORMAT, "invalid UTF-8 in string");
        }
        memcpy(buf + o, ps->p + ps->i, sl);
        o += sl;
        ps->i += sl;
    }
    ps->i = j + 1; /* closing quote */
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return LM_OK;
}

static lm_status parse_number(jparser *ps, lmi_json *v)
{
    size_t s = ps->i, k = ps->i;
    const unsigned char *p = ps->p;
    bool neg = false, integral = true;
    if (k < ps->n && p[k] == '-') {
        neg = true;
        k++;
    }
    if (k >= ps->n)
        return jfail(ps, s, LM_ERR_FORMAT, "truncated number");
    if (p[k] == '0') {
        k++;
        if (k < ps->n && p[k] >= '0' && p[k] <= '9')
            return jfail(ps, s, LM_ERR_FORMAT, "leading zero in number");
    } else if (p[k] >= '1' && p[k] <= '9') {
        while (k < ps->n && p[k] >= '0' && p[k] <= '9')
            k++;
    } else {
        return jfail(ps, s, LM_ERR_FORMAT, "invalid number");
    }
    size_t int_end = k;
    if (k < ps->n && p[k] == '.') {
        integral = false;
        k++;
        if (k >= ps->n || p[k] < '0' || p[k] > '9')
            return jfail(ps, s, LM_ERR_FORMAT, "digit expected after decimal point");
        while (k < ps->n && p[k] >= '0' && p[k] <= '9')
            k++;
    }
    if (k < ps->n && (p[k] == 'e' || p[k] == 'E')) {
        integral = false;
        k++;
        if (k < ps->n && (p[k] == '+' || p[k] == '-'))
            k++;
        if (k >= ps->n || p[k] < '0' || p[k] > '9')
            return jfail(ps, s, LM_ERR_FORMAT, "digit expected in exponent");
        while (k < ps->n && p[k] >= '0' && p[k] <= '9')
            k++;
    }
    size_t len = k - s;

    /* strtod needs a NUL-terminated copy; the "C" locale keeps '.' the
     * decimal point whatever the host program's locale is. */
    char small[64];
    char *copy = small;
    if (len >= sizeof small) {
        copy = lmi_alloc_raw(len + 1, 1);
        if (!copy)
            return lmi_fail(ps->e, LM_ERR_NO_MEMORY, "JSON: out of memory");
    }
    memcpy(copy, p + s, len);
    copy[len] = '\0';
    if (!ps->c_locale)
        ps->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    v->num = ps->c_locale ? strtod_l(copy, NULL, ps->c_locale) : strtod(copy, NULL);
    if (copy != small)
        lmi_free(copy);

    v->type = LMI_JSON_NUMBER;
    v->is_integer = false;
    v->integer = 0;
    if (integral) {
        /* Exact int64 value when it fits; otherwise only the double. */
        size_t d = neg ? s + 1 : s;
        uint64_t mag = 0;
        bool fits = true;
        for (; d < int_end; d++) {
            unsigned dig = (unsigned)(p[d] - '0');
            if (mag > (UINT64_MAX - dig) / 10) {
                fits = false;
                break;
            }
            mag = mag * 10 + dig;
        }
        if (fits && !neg && mag > (uint64_t)INT64_MAX)
            fits = false;
        if (fits && neg && mag > (uint64_t)INT64_MAX + 1)
            fits = false;
        if (fits) {
            v->is_integer = true;
            v->integer =
                neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
        }
    }
    ps->i = k;
    return LM_OK;
}

static bool match_lit(jparser *ps, const char *lit)
{
    size_t l = strlen(lit);
    if (ps->n - ps->i < l || memcmp(ps->p + ps->i, lit, l) != 0)
        return false;
    ps->i += l;
    return true;
}

/* Fills *v.  On failure *v owns nothing (pending children stay on the
 * parser stacks and are freed by the caller of the top-level parse). */
static lm_status parse_value(jparser *ps, lmi_json *v, int depth)
{
    memset(v, 0, sizeof *v);
    skip_ws(ps);
    if (ps->i >= ps->n)
        return jfail(ps, ps->i, LM_ERR_FORMAT, "unexpected end of input");
    unsigned char c = ps->p[ps->i];
    lm_status st;
    switch (c) {
    case 'n':
        if (!match_lit(ps, "null"))
            break;
        v->type = LMI_JSON_NULL;
        return LM_OK;
    case 't':
        if (!match_lit(ps, "true"))
            break;
        v->type = LMI_JSON_TRUE;
        return LM_OK;
    case 'f':
        if (!match_lit(ps, "false"))
            break;
        v->type = LMI_JSON_FALSE;
        return LM_OK;
    case '"': {
        char *s = NULL;
        size_t len = 0;
        st = parse_string(ps, &s, &len);
        if (st != LM_OK)
            return st;
        v->type = LMI_JSON_STRING;
        v->str = s;
        v->len = len;
        return LM_OK;
    }
    case '[':
    case '{': {
        bool obj = c == '{';
        if (depth >= LMI_JSON_MAX_DEPTH)
            return jfail(ps, ps->i, LM_ERR_FORMAT, "nesting deeper than 128 levels");
        size_t open_at = ps->i;
        ps->i++;
        size_t base = ps->nvals, kbase = ps->nkeys;
        skip_ws(ps);
        if (ps->i < ps->n && ps->p[ps->i] == (obj ? '}' : ']')) {
            ps->i++;
        } else {
            for (;;) {
                if (obj) {
                    skip_ws(ps);
                    if (ps->i >= ps->n || ps->p[ps->i] != '"')
                        return jfail(ps, ps->i, LM_ERR_FORMAT, "object key expected");
                    jkey k = {0};
                    st = parse_string(ps, &k.s, &k.len);
                    if (st != LM_OK)
                        return st;
                    if (!grow((void **)&ps->keys, &ps->capkeys, ps->nkeys, sizeof(jkey))) {
                        lmi_free(k.s);
                        return lmi_fail(ps->e, LM_ERR_NO_MEMORY, "JSON: out of memory");
                    }
                    ps->keys[ps->nkeys++] = k;
                    skip_ws(ps);
                    if (ps->i >= ps->n || ps->p[ps->i] != ':')
                        return jfail(ps, ps->i, LM_ERR_FORMAT, "':' expected after object key");
                    ps->i++;
                }
                lmi_json child;
                st = parse_value(ps, &child, depth + 1);
                if (st != LM_OK)
                    return st;
                if (!grow((void **)&ps->vals, &ps->capvals, ps->nvals, sizeof(lmi_json))) {
                    json_free_node(&child);
                    return lmi_fail(ps->e, LM_ERR_NO_MEMORY, "JSON: out of memory");
                }
                ps->vals[ps->nvals++] = child;
                skip_ws(ps);
                if (ps->i >= ps->n)
                    return jfail(ps, open_at, LM_ERR_FORMAT,
                                 obj ? "unterminated object" : "unterminated array");
                unsigned char d = ps->p[ps->i];
                if (d == ',') {
                    ps->i++;
                    continue;
                }
                if (d == (obj ? '}' : ']')) {
                    ps->i++;
                    break;
                }
                return jfail(ps, ps->i, LM_ERR_FORMAT,
                             obj ? "',' or '}' expected" : "',' or ']' expected");
            }
        }
        size_t cnt = ps->nvals - base;
        v->type = obj ? LMI_JSON_OBJECT : LMI_JSON_ARRAY;
        if (cnt) {
            lmi_json *items = lmi_alloc(cnt, sizeof *items);
            char **keys = obj ? lmi_alloc(cnt, sizeof *keys) : NULL;
            size_t *klens = obj ? lmi_alloc(cnt, sizeof *klens) : NULL;
            if (!items || (obj && (!keys || !klens))) {
                lmi_free(items);
                lmi_free(keys);
                lmi_free(klens);
                memset(v, 0, sizeof *v);
                return lmi_fail(ps->e, LM_ERR_NO_MEMORY, "JSON: out of memory");
            }
            memcpy(items, ps->vals + base, cnt * sizeof *items);
            for (size_t k = 0; obj && k < cnt; k++) {
                keys[k] = ps->keys[kbase + k].s;
                klens[k] = ps->keys[kbase + k].len;
            }
            v->items = items;
            v->keys = keys;
            v->key_lens = klens;
            v->len = cnt;
            ps->nvals = base;
            ps->nkeys = kbase;
        }
        return LM_OK;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(ps, v);
        break;
    }
    return jfail(ps, ps->i, LM_ERR_FORMAT, "unexpected character");
}

lm_status lmi_json_parse(const char *text, size_t size, lmi_json **out, lmi_err *e)
{
    if (out)
        *out = NULL;
    if (!text || !out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "JSON: NULL argument");
    jparser ps = {.p = (const unsigned char *)text, .n = size, .e = e};
    /* RFC 8259 §8.1: a parser may ignore a leading byte order mark. */
    if (size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        ps.i = 3;
    lmi_json *root = lmi_alloc(1, sizeof *root);
    if (!root)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "JSON: out of memory");
    lm_status st = parse_value(&ps, root, 0);
    if (st == LM_OK) {
        skip_ws(&ps);
        if (ps.i != ps.n) {
            json_free_node(root);
            st = jfail(&ps, ps.i, LM_ERR_FORMAT, "trailing characters after the document");
        }
    }
    /* On failure the stacks hold the finished children of every container
     * that was still open. */
    for (size_t k = 0; k < ps.nvals; k++)
        json_free_node(&ps.vals[k]);
    for (size_t k = 0; k < ps.nkeys; k++)
        lmi_free(ps.keys[k].s);
    lmi_free(ps.vals);
    lmi_free(ps.keys);
    if (ps.c_locale)
        freelocale(ps.c_locale);
    if (st != LM_OK) {
        lmi_free(root);
        return st;
    }
    *out = root;
    return LM_OK;
}

const lmi_json *lmi_json_get(const lmi_json *obj, const char *key)
{
    if (!obj || !key || obj->type != LMI_JSON_OBJECT)
        return NULL;
    size_t kl = strlen(key);
    for (size_t k = 0; k < obj->len; k++)
        if (obj->key_lens[k] == kl && memcmp(obj->keys[k], key, kl) == 0)
            return &obj->items[k];
    return NULL;
}
