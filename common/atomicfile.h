/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: replacing a file atomically.
 *
 * The bytes go to a temporary file beside the target (same directory,
 * so the rename cannot cross file systems), which is then renamed over
 * it: a reader sees the old file or the new one, never a part.
 */
#ifndef CLOOP_ATOMICFILE_H
#define CLOOP_ATOMICFILE_H

#include <stddef.h>

#include "error.h"

/* Replace path with len bytes of buf (mode 0644).  what names the file
 * in errors (e.g. "metrics-file"): "WHAT PATH: ...".  0, or -1 with
 * err set; on failure the old file, if any, is left as it was and no
 * temporary file remains. */
int atomic_file_write (const char *path, const void *buf, size_t len,
                       const char *what, struct cloop_err *err);

#endif /* CLOOP_ATOMICFILE_H */
