/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: error reporting shared by every layer.
 *
 * Layers below plugin/ know nothing of nbdkit, so they report failures
 * by filling a struct cloop_err (a one-line message and an errno value)
 * and returning -1 or NULL.  The plugin turns that into nbdkit_error()
 * and nbdkit_set_error().
 */
#ifndef CLOOP_ERROR_H
#define CLOOP_ERROR_H

#include <errno.h>

#define CLOOP_ERR_LEN 512

struct cloop_err {
  int errnum;                   /* errno-style code, e.g. EIO, EINVAL */
  char msg[CLOOP_ERR_LEN];      /* one line, no trailing newline */
};

/* Fill err (if not NULL) with errnum and a printf-style message.
 * Always returns -1, so callers can write "return cloop_err_set (...)". */
int cloop_err_set (struct cloop_err *err, int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* Prefix an existing message: "prefix: old message".  Keeps errnum. */
void cloop_err_prefix (struct cloop_err *err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#endif /* CLOOP_ERROR_H */
