/*
 * consumer.c - an outside program built only from `pkg-config --cflags
 * --libs longmamba`: proves the installed header and library are usable
 * on their own.  With a model directory as argv[1] it loads it and prints
 * its info.
 */
#include <longmamba.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (lm_version() != LM_VERSION_NUMBER) {
        fprintf(stderr, "header %d but library %d\n", LM_VERSION_NUMBER, (int)lm_version());
        return 1;
    }
    printf("longmamba %s\n", lm_version_string());
    if (strcmp(lm_status_str(LM_OK), lm_status_str(LM_ERR_IO)) == 0) {
        fprintf(stderr, "status strings are not distinct\n");
        return 1;
    }
    printf("LM_ERR_FORMAT: %s\n", lm_status_str(LM_ERR_FORMAT));

    lm_model_params mp;
    lm_model_params_init(&mp);
    lm_session_params sp;
    lm_session_params_init(&sp);
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    if (mp.struct_size != sizeof mp || sp.struct_size != sizeof sp || cp.struct_size != sizeof cp) {
        fprintf(stderr, "params init did not set struct_size\n");
        return 1;
    }
    /* Every free accepts NULL. */
    lm_model_free(NULL);
    lm_session_free(NULL);
    lm_calibration_free(NULL);
    lm_tokenizer_free(NULL);

    /* A missing directory is an error with a message, not a crash. */
    char err[256] = "";
    lm_model *model = NULL;
    lm_status st = lm_model_load("/nonexistent/longmamba-model", &mp, &model, err, sizeof err);
    if (st == LM_OK || model != NULL || err[0] == '\0') {
        fprintf(stderr, "loading a missing directory: status %d, message '%s'\n", (int)st, err);
        return 1;
    }

    if (argc > 1) {
        mp.backend = LM_BACKEND_CPU;
        st = lm_model_load(argv[1], &mp, &model, err, sizeof err);
        if (st != LM_OK) {
            fprintf(stderr, "load %s: %s: %s\n", argv[1], lm_status_str(st), err);
            return 1;
        }
        lm_model_info info = {.struct_size = sizeof info};
        st = lm_model_get_info(model, &info);
        if (st != LM_OK) {
            fprintf(stderr, "info: %s\n", lm_status_str(st));
            lm_model_free(model);
            return 1;
        }
        printf("%s: %lld layers, d_model %lld, vocab %lld, %lld parameters, backend %s\n", argv[1],
               (long long)info.n_layer, (long long)info.d_model, (long long)info.vocab_size,
               (long long)info.n_params, lm_backend_name(info.backend));
        lm_model_free(model);
    }
    printf("consumer ok\n");
    return 0;
}
