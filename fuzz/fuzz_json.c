/* fuzz_json.c - the strict JSON parser (lib/format/json.c). */
#include "fuzz.h"
#include "format/json.h"

/* Walks the tree checking the DOM's own invariants. */
static void walk(const lmi_json *j, int depth)
{
    FUZZ_CHECK(depth <= 129);
    switch (j->type) {
    case LMI_JSON_STRING:
        FUZZ_CHECK(j->str != NULL && j->str[j->len] == '\0');
        break;
    case LMI_JSON_NUMBER:
        /* The exact integer and the double agree wherever a double is exact. */
        if (j->is_integer && j->integer > -(INT64_C(1) << 53) && j->integer < (INT64_C(1) << 53))
            FUZZ_CHECK((double)j->integer == j->num);
        break;
    case LMI_JSON_ARRAY:
        for (size_t i = 0; i < j->len; i++) walk(&j->items[i], depth + 1);
        break;
    case LMI_JSON_OBJECT:
        for (size_t i = 0; i < j->len; i++) {
            FUZZ_CHECK(j->keys[i] != NULL && j->keys[i][j->key_lens[i]] == '\0');
            /* lmi_json_get finds a member with this key (the first one, which
             * may be an earlier duplicate) unless the key has a NUL in it. */
            if (strlen(j->keys[i]) == j->key_lens[i]) {
                const lmi_json *g = lmi_json_get(j, j->keys[i]);
                FUZZ_CHECK(g != NULL && g <= &j->items[i]);
            }
            walk(&j->items[i], depth + 1);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmi_json *j = NULL;
    lmi_err e = {{0}};
    lm_status st = lmi_json_parse((const char *)data, size, &j, &e);
    if (st == LM_OK) {
        FUZZ_CHECK(j != NULL);
        walk(j, 0);
    } else {
        FUZZ_CHECK(j == NULL);
        FUZZ_CHECK(e.msg[0] != '\0');
    }
    lmi_json_free(j);
    return 0;
}
