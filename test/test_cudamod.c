/*
 * test_cudamod.c - the CUDA backend as a module (lib/cuda_module.c), on a
 * machine with or without a GPU: the reasons lm_backend_status gives, AUTO
 * falling back to CPU, the LONGMAMBA_CUDA_MODULE override (missing, not a
 * shared object, not a module, wrong interface version), and CPU runs
 * (backend CPU; AUTO without a driver) that never map a CUDA library or
 * the module.
 *
 * Linked against libongmamba.so (public API only), as a program would be,
 * so that the library finds the module next to itself in build/lib.
 * Compile-time: LM_TEST_CUDA_MODULE (path of the built module, when CUDA
 * is enabled), LM_TEST_FAKE_MODULE (test/fake_cuda_module.c),
 * LM_TEST_LIBRARY (libongmamba.so: a shared object without the entry).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "longmamba.h"

#define ENV "LONGMAMBA_CUDA_MODULE"
#define FIXTURE LM_TEST_DATA "/fixtures/m1-tiny-f32"

/* No GPU here when the kernel exposes no NVIDIA device node. */
static int gpu_machine(void) { return access("/dev/nvidiactl", F_OK) == 0; }

static lm_status status_with(const char *env, lm_backend b, char *err, size_t cap)
{
    if (env)
        ck_assert_int_eq(setenv(ENV, env, 1), 0);
    else
        unsetenv(ENV);
    lm_status st = lm_backend_status(b, err, cap);
    unsetenv(ENV);
    return st;
}

START_TEST(status_arguments)
{
    char err[256];
    ck_assert_int_eq(lm_backend_status(LM_BACKEND_CPU, err, sizeof err), LM_OK);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(lm_backend_status((lm_backend)42, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "unknown backend 42"));
    ck_assert_int_eq(lm_backend_status((lm_backend)42, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_backend_available((lm_backend)42), 0);
    /* truncation keeps the NUL */
    char small[6];
    ck_assert_int_eq(lm_backend_status((lm_backend)-1, small, sizeof small), LM_ERR_INVALID_ARGUMENT);
    ck_assert_str_eq(small, "lm_ba");
}
END_TEST

/* The default search: the module next to libongmamba.so (CUDA build) or
 * none (CPU-only build). */
START_TEST(cuda_reason_here)
{
    char err[512];
    lm_status st = status_with(NULL, LM_BACKEND_CUDA, err, sizeof err);
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_CUDA), st == LM_OK);
    if (gpu_machine()) {
        printf("note: GPU machine: lm_backend_status(cuda) = %s: %s\n", lm_status_str(st), err);
        return;
    }
    ck_assert_int_eq(st, LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_CUDA), 0);
#ifdef LM_TEST_CUDA_MODULE
    /* the module loads; cudart finds no driver or no device */
    ck_assert_msg(strstr(err, "driver") || strstr(err, "device"), "reason: %s", err);
    ck_assert_ptr_null(strstr(err, "not found (tried"));
#else
    ck_assert_msg(strstr(err, "module not found") && strstr(err, "libongmamba-cuda.so"),
                  "reason: %s", err);
#endif
    /* AUTO is available and says why it picks the CPU */
    char aerr[512];
    ck_assert_int_eq(lm_backend_status(LM_BACKEND_AUTO, aerr, sizeof aerr), LM_OK);
    ck_assert_msg(strncmp(aerr, "auto: cpu (", 11) == 0 && strstr(aerr, err), "auto: %s", aerr);
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_AUTO), 1);
}
END_TEST

START_TEST(auto_falls_back_and_cuda_fails_cleanly)
{
    if (gpu_machine())
        return;
    lm_model_params mp;
    lm_model_params_init(&mp);
    lm_model *m = NULL;
    char err[512];
    ck_assert_int_eq(lm_model_load(FIXTURE, &mp, &m, err, sizeof err), LM_OK);
    lm_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
    ck_assert_int_eq(info.backend, LM_BACKEND_CPU);
    lm_model_free(m);

    mp.backend = LM_BACKEND_CUDA;
    ck_assert_int_eq(lm_model_load(FIXTURE, &mp, &m, err, sizeof err), LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_null(m);
    char why[512];
    status_with(NULL, LM_BACKEND_CUDA, why, sizeof why);
    ck_assert_str_eq(err, why);
}
END_TEST

START_TEST(override_missing)
{
    char err[512];
    ck_assert_int_eq(status_with("/nonexistent/libongmamba-cuda.so", LM_BACKEND_CUDA, err, sizeof err),
                     LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_msg(strstr(err, "module not found") && strstr(err, "/nonexistent/libongmamba-cuda.so"),
                  "reason: %s", err);
    /* also through lm_model_load */
    ck_assert_int_eq(setenv(ENV, "/nonexistent/libongmamba-cuda.so", 1), 0);
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CUDA;
    lm_model *m = NULL;
    ck_assert_int_eq(lm_model_load(FIXTURE, &mp, &m, err, sizeof err), LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(err, "module not found"));
    mp.backend = LM_BACKEND_AUTO;
    ck_assert_int_eq(lm_model_load(FIXTURE, &mp, &m, err, sizeof err), LM_OK);
    lm_model_free(m);
    unsetenv(ENV);
}
END_TEST

START_TEST(override_corrupt)
{
    char path[] = "/tmp/lm-cudamod-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char text[] = "this is not a shared object\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    char err[512];
    lm_status st = status_with(path, LM_BACKEND_CUDA, err, sizeof err);
    unlink(path);
    ck_assert_int_eq(st, LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_msg(strstr(err, "cannot be loaded") && strstr(err, path), "reason: %s", err);
}
END_TEST

START_TEST(override_not_a_module)
{
    char err[512];
    ck_assert_int_eq(status_with(LM_TEST_LIBRARY, LM_BACKEND_CUDA, err, sizeof err),
                     LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_msg(strstr(err, "not a libongmamba CUDA module") && strstr(err, "lmi_cuda_module_v1"),
                  "reason: %s", err);
}
END_TEST

START_TEST(override_wrong_version)
{
    char err[512];
    ck_assert_int_eq(status_with(LM_TEST_FAKE_MODULE, LM_BACKEND_CUDA, err, sizeof err),
                     LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_msg(strstr(err, "interface version 999") && strstr(err, "this library needs "), "reason: %s", err);
}
END_TEST

#ifdef LM_TEST_CUDA_MODULE
START_TEST(override_real_module)
{
    if (gpu_machine())
        return;
    char err[512];
    ck_assert_int_eq(status_with(LM_TEST_CUDA_MODULE, LM_BACKEND_CUDA, err, sizeof err),
                     LM_ERR_BACKEND_UNAVAILABLE);
    ck_assert_msg(strstr(err, "driver") || strstr(err, "device"), "reason: %s", err);
}
END_TEST
#endif

/* ---- a CPU run maps no CUDA library (in a fresh process) --------------- */

static const char *const cuda_names[] = {"libcudart", "libcublas", "libcuda.so", "ongmamba-cuda"};

/* Child: load with the backend named, prefill, decode, then scan
 * /proc/self/maps.  Exit 0 clean, 1 setup error, 2 found. */
static int maps_child(lm_backend backend)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = backend;
    mp.n_threads = 1;
    lm_model *m = NULL;
    lm_session *s = NULL;
    char err[512];
    if (lm_model_load(FIXTURE, &mp, &m, err, sizeof err) != LM_OK ||
        lm_session_create(m, NULL, &s, err, sizeof err) != LM_OK) {
        fprintf(stderr, "maps child: %s\n", err);
        return 1;
    }
    const int32_t prompt[3] = {1, 2, 3};
    if (lm_session_prefill(s, prompt, 3, 0, NULL, 0) != LM_OK || lm_session_decode(s, 4, NULL, 0) != LM_OK) {
        fprintf(stderr, "maps child: %s\n", lm_session_last_error(s));
        return 1;
    }
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return 1;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, f))
        for (size_t k = 0; k < sizeof cuda_names / sizeof cuda_names[0]; k++)
            if (strstr(line, cuda_names[k])) {
                fprintf(stderr, "maps child: mapped: %s", line);
                found = 1;
            }
    fclose(f);
    lm_session_free(s);
    lm_model_free(m);
    return found ? 2 : 0;
}

static void run_maps_child(const char *backend)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* exec: a fresh process, whatever earlier tests in this one loaded */
        unsetenv(ENV);
        execl("/proc/self/exe", "test_cudamod", "--maps-child", backend, (char *)NULL);
        _exit(1);
    }
    int ws = 0;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    ck_assert_msg(WIFEXITED(ws), "maps child (%s) crashed", backend);
    ck_assert_msg(WEXITSTATUS(ws) == 0, "maps child (%s): exit %d (2: a CUDA library was mapped)",
                  backend, WEXITSTATUS(ws));
}

START_TEST(cpu_run_maps_no_cuda)
{
    run_maps_child("cpu");
}
END_TEST

/* Without a driver (or without the module) AUTO maps nothing either: the
 * library checks for libcuda.so.1 before loading the module. */
START_TEST(auto_without_driver_maps_no_cuda)
{
    char err[512];
    lm_backend_status(LM_BACKEND_CUDA, err, sizeof err);
    if (gpu_machine() || !(strstr(err, "no CUDA driver (") || strstr(err, "module not found"))) {
        printf("note: auto maps check skipped: %s\n", err);
        return;
    }
    run_maps_child("auto");
}
END_TEST

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--maps-child") == 0)
        return maps_child(strcmp(argv[2], "auto") == 0 ? LM_BACKEND_AUTO : LM_BACKEND_CPU);
    Suite *s = suite_create("cudamod");
    TCase *tc = tcase_create("cudamod");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, status_arguments);
    tcase_add_test(tc, cuda_reason_here);
    tcase_add_test(tc, auto_falls_back_and_cuda_fails_cleanly);
    tcase_add_test(tc, override_missing);
    tcase_add_test(tc, override_corrupt);
    tcase_add_test(tc, override_not_a_module);
    tcase_add_test(tc, override_wrong_version);
#ifdef LM_TEST_CUDA_MODULE
    tcase_add_test(tc, override_real_module);
#endif
    tcase_add_test(tc, cpu_run_maps_no_cuda);
    tcase_add_test(tc, auto_without_driver_maps_no_cuda);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
