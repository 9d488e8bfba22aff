/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: loading a mirror list (see mirrors.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "mirrors.h"
#include "source.h"

/* *buf = the whole of src (at most MIRRORLIST_MAX_BYTES), *len. */
static int
read_all (struct source *src, const char *location, char **buf, size_t *len,
          struct cloop_err *err)
{
  uint64_t size = source_size (src);

  if (size > MIRRORLIST_MAX_BYTES)
    return cloop_err_set (err, EINVAL, "mirrors=%s: %llu bytes, more than "
                          "a mirror list may have (%u)", location,
                          (unsigned long long) size, MIRRORLIST_MAX_BYTES);
  *len = size;
  *buf = malloc (size ? size : 1);
  if (*buf == NULL)
    return cloop_err_set (err, ENOMEM, "mirrors=%s: out of memory", location);
  if (size > 0 && source_pread (src, *buf, size, 0, err) == -1) {
    free (*buf);
    *buf = NULL;
    cloop_err_prefix (err, "mirrors=%s", location);
    return -1;
  }
  return 0;
}

int
mirrors_load (const char *location, const struct http_config *http,
              const char *file_name, struct mirror_list *out,
              struct cloop_err *err)
{
  struct source *src;
  char *buf = NULL;
  size_t len = 0;
  int r;

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
    cloop_err_prefix (err, "mirrors=");
    return -1;
  }
  r = read_all (src, location, &buf, &len, err);
  source_close (src);
  if (r == -1)
    return -1;
  r = mirrorlist_parse_file (buf, len, location, file_name, out, err);
  free (buf);
  return r;
}
