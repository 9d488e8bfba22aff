/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: error reporting shared by every layer. */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int
cloop_err_set (struct cloop_err *err, int errnum, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL)
    return -1;
  err->errnum = errnum;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  return -1;
}

void
cloop_err_prefix (struct cloop_err *err, const char *fmt, ...)
{
  char prefix[CLOOP_ERR_LEN], old[CLOOP_ERR_LEN];
  va_list ap;

  if (err == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, err->msg, sizeof old);

  /* "prefix: old", truncated to fit (no snprintf: it warns about the
   * truncation we want). */
  size_t plen = strnlen (prefix, sizeof err->msg - 3);
  size_t olen = strnlen (old, sizeof err->msg - 3 - plen);
  memcpy (err->msg, prefix, plen);
  memcpy (err->msg + plen, ": ", 2);
  memcpy (err->msg + plen + 2, old, olen);
  err->msg[plen + 2 + olen] = '\0';
}
