/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: load an image's mirror list (mirrors=) from a local
 * file or an http(s) URL, and parse it (fetch/mirrorlist.h).
 */
#ifndef CLOOP_MIRRORS_H
#define CLOOP_MIRRORS_H

#include "error.h"
#include "http.h"
#include "mirrorlist.h"

/* Read the mirror list at location (a path, or an http:// or https://
 * URL fetched with http's settings, its own url and mirrors ignored)
 * and parse it into *out.  From a metalink with several files, the one
 * named file_name is taken (NULL: the first).  0, or -1 with err set
 * (the message names location). */
int mirrors_load (const char *location, const struct http_config *http,
                  const char *file_name, struct mirror_list *out,
                  struct cloop_err *err);

#endif /* CLOOP_MIRRORS_H */
