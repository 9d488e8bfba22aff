/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: replacing a file atomically (see atomicfile.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"

int
atomic_file_write (const char *path, const void *buf, size_t len,
                   const char *what, struct cloop_err *err)
{
  const char *p = buf;
  char *tmp = NULL;
  int fd = -1;
  bool created = false;

  if (asprintf (&tmp, "%s.XXXXXX", path) == -1)
    return cloop_err_set (err, ENOMEM, "%s %s: out of memory", what, path);
  fd = mkostemp (tmp, O_CLOEXEC);
  created = fd >= 0;
  if (fd == -1 || fchmod (fd, 0644) == -1) {
    cloop_err_set (err, errno, "%s %s: %s: %m", what, path, tmp);
    goto fail;
  }
  while (len > 0) {
    ssize_t n = write (fd, p, len);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0) {
      cloop_err_set (err, n == -1 ? errno : EIO, "%s %s: write: %m", what,
                     path);
      goto fail;
    }
    p += n;
    len -= n;
  }
  if (close (fd) == -1) {
    fd = -1;
    cloop_err_set (err, errno, "%s %s: close: %m", what, path);
    goto fail;
  }
  fd = -1;
  if (rename (tmp, path) == -1) {
    cloop_err_set (err, errno, "%s %s: rename: %m", what, path);
    goto fail;
  }
  free (tmp);
  return 0;

 fail:
  if (fd >= 0)
    close (fd);
  if (created)
    unlink (tmp);
  free (tmp);
  return -1;
}
