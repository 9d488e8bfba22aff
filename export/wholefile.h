/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: reading a small file whole, from a path or a URL
 * (mirror lists, boot profiles), before nbdkit forks: an HTTP fetch is
 * driven in the caller's thread.
 */
#ifndef CLOOP_WHOLEFILE_H
#define CLOOP_WHOLEFILE_H

#include <stddef.h>

#include "error.h"
#include "http.h"

/* *buf (malloc'd, *len bytes, plus a NUL not counted) = the whole file
 * at location: a path, or an http:// or https:// URL fetched with
 * http's settings (its own url, mirrors and engine ignored).  A file
 * larger than max bytes is refused.  what names the key in errors
 * ("WHAT=LOCATION: ...").  0, or -1 with err set. */
int whole_file_load (const char *location, const struct http_config *http,
                     size_t max, const char *what, char **buf, size_t *len,
                     struct cloop_err *err);

#endif /* CLOOP_WHOLEFILE_H */
