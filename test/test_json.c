/* test_json.c - the strict JSON reader: valid documents, each rejection
 * class, limits, numbers and unicode escapes. */
#include <check.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/json.h"
#include "suite.h"

static lmi_json *parse_ok(const char *s)
{
    lmi_json *j = NULL;
    lmi_err e = {{0}};
    lm_status st = lmi_json_parse(s, strlen(s), &j, &e);
    ck_assert_msg(st == LM_OK, "rejected %s: %s", s, e.msg);
    ck_assert_ptr_nonnull(j);
    return j;
}

static lm_status parse_bad(const char *s, size_t n, lmi_err *e)
{
    lmi_json *j = (lmi_json *)1;
    lm_status st = lmi_json_parse(s, n, &j, e);
    ck_assert_ptr_null(j);
    return st;
}

START_TEST(scalars)
{
    lmi_json *j = parse_ok("null");
    ck_assert_int_eq(j->type, LMI_JSON_NULL);
    lmi_json_free(j);
    j = parse_ok(" true ");
    ck_assert_int_eq(j->type, LMI_JSON_TRUE);
    lmi_json_free(j);
    j = parse_ok("\r\n\tfalse\n");
    ck_assert_int_eq(j->type, LMI_JSON_FALSE);
    lmi_json_free(j);
    j = parse_ok("\"hi\"");
    ck_assert_int_eq(j->type, LMI_JSON_STRING);
    ck_assert_str_eq(j->str, "hi");
    ck_assert_uint_eq(j->len, 2);
    lmi_json_free(j);
}
END_TEST

START_TEST(objects_and_arrays)
{
    lmi_json *j = parse_ok("{\"a\": [1, 2.5, \"x\", {}, []], \"b\": {\"c\": null}, \"a\": 3}");
    ck_assert_int_eq(j->type, LMI_JSON_OBJECT);
    ck_assert_uint_eq(j->len, 3);
    const lmi_json *a = lmi_json_get(j, "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->type, LMI_JSON_ARRAY); /* first of the duplicates */
    ck_assert_uint_eq(a->len, 5);
    ck_assert(a->items[0].is_integer);
    ck_assert_int_eq(a->items[0].integer, 1);
    ck_assert(!a->items[1].is_integer);
    ck_assert_double_eq(a->items[1].num, 2.5);
    ck_assert_str_eq(a->items[2].str, "x");
    ck_assert_int_eq(a->items[3].type, LMI_JSON_OBJECT);
    ck_assert_uint_eq(a->items[3].len, 0);
    ck_assert_int_eq(a->items[4].type, LMI_JSON_ARRAY);
    ck_assert_uint_eq(a->items[4].len, 0);
    const lmi_json *b = lmi_json_get(j, "b");
    ck_assert_ptr_nonnull(lmi_json_get(b, "c"));
    ck_assert_ptr_null(lmi_json_get(b, "d"));
    ck_assert_ptr_null(lmi_json_get(a, "c")); /* not an object */
    ck_assert_ptr_null(lmi_json_get(NULL, "c"));
    lmi_json_free(j);
    lmi_json_free(NULL);
}
END_TEST

START_TEST(numbers)
{
    lmi_json *j = parse_ok("[0, -0, 12345678901234, -9223372036854775808, 9223372036854775807,"
                           " 9223372036854775808, 1e3, 1E-2, -0.5, 1.5e+2, 1e400,"
                           " 123456789012345678901234567890]");
    lmi_json *it = j->items;
    ck_assert(it[0].is_integer && it[0].integer == 0);
    ck_assert(it[1].is_integer && it[1].integer == 0);
    ck_assert(it[2].is_integer && it[2].integer == 12345678901234LL);
    ck_assert(it[3].is_integer && it[3].integer == INT64_MIN);
    ck_assert(it[4].is_integer && it[4].integer == INT64_MAX);
    ck_assert(!it[5].is_integer); /* does not fit int64 */
    ck_assert_double_eq(it[5].num, 9223372036854775808.0);
    ck_assert(!it[6].is_integer);
    ck_assert_double_eq(it[6].num, 1000.0);
    ck_assert_double_eq_tol(it[7].num, 0.01, 1e-18);
    ck_assert_double_eq(it[8].num, -0.5);
    ck_assert_double_eq(it[9].num, 150.0);
    ck_assert(isinf(it[10].num));
    ck_assert(!it[11].is_integer);
    ck_assert_double_eq_tol(it[11].num, 1.2345678901234568e29, 1e14);
    lmi_json_free(j);

    /* A number longer than the parser's on-stack copy. */
    char big[400];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[1] = '.';
    j = parse_ok(big);
    ck_assert_double_eq_tol(j->num, 1.1111111111111112, 1e-15);
    lmi_json_free(j);
}
END_TEST

START_TEST(numbers_ignore_locale)
{
    /* A host program's locale must not change how "0.5" reads. */
    const char *old = setlocale(LC_NUMERIC, NULL);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", old ? old : "C");
    if (!setlocale(LC_NUMERIC, "de_DE.UTF-8") && !setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        /* No comma-decimal locale installed: still check the plain path. */
    }
    lmi_json *j = parse_ok("0.5");
    ck_assert_double_eq(j->num, 0.5);
    lmi_json_free(j);
    setlocale(LC_NUMERIC, saved);
}
END_TEST

START_TEST(strings_and_escapes)
{
    lmi_json *j =
        parse_ok("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u0041\\u00e9\\u20ac\","
                 " \"\\ud83d\\ude00\", \"x\\u0000y\", \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                 " \"\\uD834\\uDD1E\"]");
    ck_assert_str_eq(j->items[0].str, "a\"b\\c/d\b\f\n\r\t");
    ck_assert_str_eq(j->items[1].str, "A\xc3\xa9\xe2\x82\xac");
    ck_assert_str_eq(j->items[2].str, "\xf0\x9f\x98\x80");
    ck_assert_uint_eq(j->items[3].len, 3);
    ck_assert_int_eq(memcmp(j->items[3].str, "x\0y", 3), 0);
    ck_assert_str_eq(j->items[4].str, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ck_assert_str_eq(j->items[5].str, "\xf0\x9d\x84\x9e");
    lmi_json_free(j);

    /* A key with an embedded NUL does not match its prefix. */
    j = parse_ok("{\"a\\u0000b\": 1}");
    ck_assert_ptr_null(lmi_json_get(j, "a"));
    lmi_json_free(j);
}
END_TEST

START_TEST(byte_order_mark)
{
    lmi_json *j = parse_ok("\xEF\xBB\xBF{\"k\": 1}");
    ck_assert_int_eq(lmi_json_get(j, "k")->integer, 1);
    lmi_json_free(j);
}
END_TEST

/* Each of these must be rejected with LM_ERR_FORMAT. */
static const char *const bad_docs[] = {
    "",                     /* empty */
    "   ",                  /* only whitespace */
    "nul",                  /* truncated literal */
    "True",                 /* wrong case */
    "{\"a\":1} x",          /* trailing garbage */
    "1 2",                  /* two values */
    "[1,]",                 /* trailing comma */
    "{\"a\":1,}",           /* trailing comma */
    "[1 2]",                /* missing comma */
    "{\"a\" 1}",            /* missing colon */
    "{a:1}",                /* unquoted key */
    "{1:1}",                /* non-string key */
    "['a']",                /* single quotes */
    "[",                    /* unterminated array */
    "{\"a\":",              /* unterminated object */
    "\"abc",                /* unterminated string */
    "\"a\\\"",              /* escaped quote then end */
    "\"\\x\"",              /* bad escape */
    "\"\\u12\"",            /* short \u */
    "\"\\u12g4\"",          /* non-hex \u */
    "\"\\ud800\"",          /* lone high surrogate */
    "\"\\ud800\\u0041\"",   /* high surrogate + non-low */
    "\"\\udc00\"",          /* lone low surrogate */
    "\"a\tb\"",             /* raw control character */
    "\"a\nb\"",             /* raw newline */
    "\"\xc3\"",             /* truncated UTF-8 */
    "\"\xc0\xaf\"",         /* overlong UTF-8 */
    "\"\xed\xa0\x80\"",     /* UTF-8 encoded surrogate */
    "\"\xf4\x90\x80\x80\"", /* past U+10FFFF */
    "\"\x80\"",             /* stray continuation byte */
    "\"\xff\"",             /* invalid byte */
    "01",                   /* leading zero */
    "-",                    /* bare minus */
    "+1",                   /* plus sign */
    ".5",                   /* no integer part */
    "1.",                   /* no fraction digits */
    "1e",                   /* no exponent digits */
    "1e+",                  /* no exponent digits */
    "0x10",                 /* hex */
    "NaN",                  /* not JSON */
    "Infinity",             /* not JSON */
    "-Infinity",            /* not JSON */
    "[1]]",                 /* extra close */
    "{\"a\":1}}",           /* extra close */
    "/* c */ 1",            /* comments */
    "\xEF\xBB",             /* partial BOM */
};

START_TEST(rejections)
{
    for (size_t k = 0; k < sizeof bad_docs / sizeof bad_docs[0]; k++) {
        lmi_err e = {{0}};
        lm_status st = parse_bad(bad_docs[k], strlen(bad_docs[k]), &e);
        ck_assert_msg(st == LM_ERR_FORMAT, "accepted or wrong status %d for case %zu: %s", st, k,
                      bad_docs[k]);
        ck_assert_msg(strstr(e.msg, "line") != NULL, "no position in message: %s", e.msg);
    }
}
END_TEST

START_TEST(embedded_nul_in_input)
{
    lmi_err e = {{0}};
    ck_assert_int_eq(parse_bad("[1]\0", 4, &e), LM_ERR_FORMAT);
    ck_assert_int_eq(parse_bad("\"a\0b\"", 5, &e), LM_ERR_FORMAT);
    ck_assert_int_eq(parse_bad("\0", 1, &e), LM_ERR_FORMAT);
    /* Size bounds the text: "[1]" followed by garbage beyond size is fine. */
    lmi_json *j = NULL;
    ck_assert_int_eq(lmi_json_parse("[1]garbage", 3, &j, &e), LM_OK);
    lmi_json_free(j);
}
END_TEST

START_TEST(error_position)
{
    lmi_err e = {{0}};
    const char *s = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    ck_assert_int_eq(parse_bad(s, strlen(s), &e), LM_ERR_FORMAT);
    ck_assert_msg(strstr(e.msg, "line 3 column 8") != NULL, "%s", e.msg);
}
END_TEST

static char *nested(int depth, char open, char close)
{
    char *s = malloc((size_t)depth * 2 + 1);
    for (int k = 0; k < depth; k++) {
        s[k] = open;
        s[depth * 2 - 1 - k] = close;
    }
    s[depth * 2] = '\0';
    return s;
}

START_TEST(depth_limit)
{
    char *ok = nested(128, '[', ']');
    lmi_json *j = parse_ok(ok);
    lmi_json_free(j);
    free(ok);

    char *deep = nested(129, '[', ']');
    lmi_err e = {{0}};
    ck_assert_int_eq(parse_bad(deep, strlen(deep), &e), LM_ERR_FORMAT);
    ck_assert_msg(strstr(e.msg, "deeper") != NULL, "%s", e.msg);
    free(deep);

    /* Far deeper than any stack could recurse: must fail, not crash. */
    char *huge = nested(1000000, '[', ']');
    ck_assert_int_eq(parse_bad(huge, strlen(huge), &e), LM_ERR_FORMAT);
    free(huge);

    /* Objects count towards the same limit. */
    size_t n = 200;
    char *objs = malloc(n * 6 + n + 2);
    size_t o = 0;
    for (size_t k = 0; k < n; k++)
        o += (size_t)sprintf(objs + o, "{\"a\":");
    objs[o++] = '1';
    for (size_t k = 0; k < n; k++)
        objs[o++] = '}';
    objs[o] = '\0';
    ck_assert_int_eq(parse_bad(objs, o, &e), LM_ERR_FORMAT);
    free(objs);
}
END_TEST

START_TEST(failure_mid_container_frees_children)
{
    /* Errors deep inside partially built containers: run under valgrind
     * this proves the pending children are released. */
    const char *docs[] = {
        "{\"a\": [\"x\", {\"b\": [1, 2, \"s\"], \"c\": \"t\"}, \"u\"], \"d\": [1, 2, }",
        "[{\"k\": \"v\"}, {\"k\": \"v\", \"k2\": ",
        "{\"a\": \"b\", \"c\": \"\\q\"}",
        "[\"a\", \"b\", \"c\"] trailing",
    };
    for (size_t k = 0; k < sizeof docs / sizeof docs[0]; k++) {
        lmi_err e = {{0}};
        ck_assert_int_eq(parse_bad(docs[k], strlen(docs[k]), &e), LM_ERR_FORMAT);
    }
}
END_TEST

START_TEST(null_arguments)
{
    lmi_json *j = NULL;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_json_parse(NULL, 3, &j, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_json_parse("1", 1, NULL, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_json_parse("x", 1, &j, NULL), LM_ERR_FORMAT); /* e may be NULL */
}
END_TEST

START_TEST(large_document_is_linear)
{
    /* A tokenizer.json-sized document: one object of 200k members and one
     * array of 200k two-element arrays (about 6 MB). */
    size_t n = 200000;
    size_t cap = n * 40 + 64;
    char *s = malloc(cap);
    size_t o = 0;
    o += (size_t)sprintf(s + o, "{\"vocab\":{");
    for (size_t k = 0; k < n; k++)
        o += (size_t)sprintf(s + o, "%s\"t%zu\\u00e9\":%zu", k ? "," : "", k, k);
    o += (size_t)sprintf(s + o, "},\"merges\":[");
    for (size_t k = 0; k < n; k++)
        o += (size_t)sprintf(s + o, "%s[\"a%zu\",\"b\"]", k ? "," : "", k);
    o += (size_t)sprintf(s + o, "]}");
    lmi_json *j = NULL;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_json_parse(s, o, &j, &e), LM_OK);
    const lmi_json *v = lmi_json_get(j, "vocab");
    ck_assert_uint_eq(v->len, n);
    ck_assert_str_eq(v->keys[12345], "t12345\xc3\xa9");
    ck_assert_int_eq(v->items[12345].integer, 12345);
    const lmi_json *m = lmi_json_get(j, "merges");
    ck_assert_uint_eq(m->len, n);
    ck_assert_str_eq(m->items[n - 1].items[0].str, "a199999");
    lmi_json_free(j);
    free(s);
}
END_TEST

START_TEST(random_mutations_never_crash)
{
    /* Cheap in-test fuzzing: flip, insert and truncate bytes of a valid
     * document; every result must be OK or a clean error. */
    const char *base = "{\"a\": [1, -2.5e3, \"x\\u00e9\\ud83d\\ude00\", true, null, {\"b\": []}],"
                       " \"c\": \"\xe2\x82\xac\"}";
    size_t bl = strlen(base);
    char buf[256];
    unsigned seed = 12345;
    const char alphabet[] = "{}[]\",:\\u0123456789.eE+-tfnul \x80\xc3\xed\xf4";
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, base, bl);
        size_t len = bl;
        int edits = 1 + (int)(rand_r(&seed) % 4);
        for (int k = 0; k < edits; k++) {
            size_t pos = (size_t)rand_r(&seed) % len;
            char c = alphabet[(size_t)rand_r(&seed) % (sizeof alphabet - 1)];
            switch (rand_r(&seed) % 3) {
            case 0: buf[pos] = c; break;
            case 1:
                if (len + 1 < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = c;
                    len++;
                }
                break;
            default: len = pos + 1; break;
            }
        }
        lmi_json *j = NULL;
        lmi_err e = {{0}};
        lm_status st = lmi_json_parse(buf, len, &j, &e);
        ck_assert(st == LM_OK || st == LM_ERR_FORMAT);
        ck_assert((st == LM_OK) == (j != NULL));
        lmi_json_free(j);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    add_tcase(s, "json", 120,
              (const TTest *[]){scalars, objects_and_arrays, numbers, numbers_ignore_locale,
                                strings_and_escapes, byte_order_mark, rejections,
                                embedded_nul_in_input, error_position, depth_limit,
                                failure_mid_container_frees_children, null_arguments,
                                large_document_is_linear, random_mutations_never_crash, NULL});
    return run_suite(s);
}
