/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: reading a small file whole (see wholefile.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"
#include "wholefile.h"

int
whole_file_load (const char *location, const struct http_config *http,
                 size_t max, const char *what, char **buf, size_t *len,
                 struct cloop_err *err)
{
  struct source *src;
  uint64_t size;

  *buf = NULL;
  *len = 0;
  if (strncmp (location, "http://", 7) == 0 ||
      strncmp (location, "https://", 8) == 0) {
    struct http_config c = *http;
    c.url = location;
    c.mirrors = NULL;
    c.n_mirrors = 0;
    c.engine = NULL;            /* before nbdkit forks: driven here */
    src = source_open_http (&c, err);
  }
  else
    src = source_open_file (location, err);
  if (src == NULL) {
    cloop_err_prefix (err, "%s=", what);
    return -1;
  }
  size = source_size (src);
  if (size > max) {
    source_close (src);
    return cloop_err_set (err, EINVAL, "%s=%s: %llu bytes, more than the "
                          "%zu allowed", what, location,
                          (unsigned long long) size, max);
  }
  *buf = malloc (size + 1);
  if (*buf == NULL) {
    source_close (src);
    return cloop_err_set (err, ENOMEM, "%s=%s: out of memory", what,
                          location);
  }
  if (size > 0 && source_pread (src, *buf, size, 0, err) == -1) {
    source_close (src);
    free (*buf);
    *buf = NULL;
    cloop_err_prefix (err, "%s=%s", what, location);
    return -1;
  }
  source_close (src);
  (*buf)[size] = '\0';
  *len = size;
  return 0;
}
