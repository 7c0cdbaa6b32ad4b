/* fuzz_safetensors.c - the safetensors header validator (lmi_st_parse) and
 * the tensor accessors a loader uses on what it accepts. */
#include "fuzz.h"
#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmi_st_file f;
    memset(&f, 0, sizeof f);
    lmi_err e = {{0}};
    lm_status st = lmi_st_parse(data, size, &f, &e);
    if (st != LM_OK) {
        FUZZ_CHECK(e.msg[0] != '\0');
        FUZZ_CHECK(f.n_tensors == 0 && f.tensors == NULL);
        lmi_st_close(&f);
        return 0;
    }
    for (size_t i = 0; i < f.n_tensors; i++) {
        const lmi_st_tensor *t = &f.tensors[i];
        /* Validation promises: the bytes lie inside the input and match
         * the shape and dtype. */
        uint64_t n = 1;
        for (int k = 0; k < t->ndim; k++) n *= (uint64_t)t->shape[k];
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= LMI_ST_MAX_DIMS);
        FUZZ_CHECK(n * lmi_st_dtype_size(t->dtype) == t->nbytes);
        if (t->nbytes) FUZZ_CHECK(t->data >= data && t->data + t->nbytes <= data + size);
        FUZZ_CHECK(lmi_st_find(&f, t->name) == t);
        FUZZ_CHECK(lmi_st_dtype_name(t->dtype) != NULL);
        if (t->dtype == LMI_ST_F32 || t->dtype == LMI_ST_F16 || t->dtype == LMI_ST_BF16 ||
            t->dtype == LMI_ST_F64) {
            float *out = malloc(n ? n * sizeof(float) : 1);
            if (out) {
                st = lmi_st_to_f32(t, out, &e);
                FUZZ_CHECK(st == LM_OK);
                free(out);
            }
        }
    }
    for (size_t i = 0; i < f.n_meta; i++) {
        const char *v = lmi_st_meta(&f, f.meta_keys[i]);
        FUZZ_CHECK(v != NULL);
    }
    FUZZ_CHECK(lmi_st_find(&f, "\x01 no such tensor") == NULL);
    lmi_st_close(&f);
    return 0;
}
