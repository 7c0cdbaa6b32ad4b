/*
 * suite.h - the few lines every Check suite's main() repeated: a test case
 * from a list of tests, and running the suite to an exit status.
 */
#ifndef LM_TEST_SUITE_H
#define LM_TEST_SUITE_H

#include <check.h>

/* Adds test case `name` holding `tests` (NULL-terminated) to s;
 * timeout_s 0 keeps Check's default.  Returns it for fixtures. */
TCase *add_tcase(Suite *s, const char *name, double timeout_s, const TTest *const *tests);

/* Runs s (Check decides fork mode: CK_FORK), frees it; EXIT_SUCCESS when
 * every test passed. */
int run_suite(Suite *s);

#endif
