/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: loading a mirror list (see mirrors.h). */
#include <config.h>

#include <stdlib.h>

#include "mirrors.h"
#include "wholefile.h"

int
mirrors_load (const char *location, const struct http_config *http,
              const char *file_name, struct mirror_list *out,
              struct cloop_err *err)
{
  char *buf = NULL;
  size_t len = 0;
  int r;

  if (whole_file_load (location, http, MIRRORLIST_MAX_BYTES, "mirrors", &buf,
                       &len, err) == -1)
    return -1;
  r = mirrorlist_parse_file (buf, len, location, file_name, out, err);
  free (buf);
  return r;
}
