/*
 * fuzz_config.c - config.json: lmi_config_parse on the input, and when it
 * parses into small dimensions, the whole loader (lmi_model_read) on the
 * input written as config.json next to the m1-tiny-f32 fixture's weights,
 * which checks every tensor's shape against the fuzzed configuration.
 */
#include "fuzz.h"
#include "model_load.h"

#include <limits.h>

static char weights[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!realpath(LM_TEST_DATA "/fixtures/m1-tiny-f32/model.safetensors", weights)) {
        perror("fuzz_config: fixture");
        abort();
    }
    if (fz_symlink(weights, "model.safetensors") != 0) {
        perror("fuzz_config: symlink");
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!weights[0]) LLVMFuzzerInitialize(NULL, NULL);
    lmi_dims d;
    memset(&d, 0, sizeof d);
    lmi_err e = {{0}};
    lm_status st = lmi_config_parse((const char *)data, size, &d, &e);
    if (st != LM_OK) {
        FUZZ_CHECK(e.msg[0] != '\0');
        return 0;
    }
    /* What the parser promises the rest of the library. */
    FUZZ_CHECK(d.arch == LM_ARCH_MAMBA1 || d.arch == LM_ARCH_MAMBA2);
    FUZZ_CHECK(d.d_model > 0 && d.d_inner > 0 && d.d_state > 0 && d.n_layer > 0);
    FUZZ_CHECK(d.d_conv > 0);
    FUZZ_CHECK(d.eps > 0 && d.eps < 1);
    FUZZ_CHECK(d.n_channels > 0 && d.conv_dim >= d.d_inner);
    if (d.arch == LM_ARCH_MAMBA2) FUZZ_CHECK(d.n_heads * d.head_dim == d.d_inner);

    /* The full loader against real weights (cheap: the file is mapped). */
    char path[320];
    if (fz_write("config.json", data, size, path, sizeof path) != 0) return 0;
    lm_model *m = NULL;
    st = lmi_model_read(fz_scratch_dir(), &m, &e);
    if (st == LM_OK) {
        FUZZ_CHECK(m != NULL);
        /* The fixture's shapes; a config may use fewer layers than stored
         * (the rest are ignored, as transformers does). */
        FUZZ_CHECK(m->dims.d_model == 32 && m->dims.n_layer >= 1 && m->dims.n_layer <= 2);
        lm_model_free(m);
    } else {
        FUZZ_CHECK(m == NULL && e.msg[0] != '\0');
    }
    return 0;
}
