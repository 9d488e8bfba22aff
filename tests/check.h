/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the assertion macro of the C unit tests.
 *
 * CHECK (expr): if expr is false, print "FAIL: file:line: expr" on
 * stderr, then exit (1) at once; or, in a test that defines
 * CHECK_COUNT_FAILURES before including this header, count it in
 * check_failures and go on (such a test fails at the end if any
 * check failed).
 */
#ifndef CLOOP_TESTS_CHECK_H
#define CLOOP_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#ifdef CHECK_COUNT_FAILURES
static int check_failures;
#define CHECK_FAILED() (check_failures++)
#else
#define CHECK_FAILED() exit (1)
#endif

#define CHECK(expr)                                                     \
  do {                                                                  \
    if (!(expr)) {                                                      \
      fprintf (stderr, "FAIL: %s:%d: %s\n", __FILE__, __LINE__, #expr); \
      CHECK_FAILED ();                                                  \
    }                                                                   \
  } while (0)

#endif /* CLOOP_TESTS_CHECK_H */
