/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: the image a store is made from, as a sequential stream
 * of decoded bytes: a raw image (regular file, block device, or a pipe
 * such as stdin) or a cloop file of any dialect, decoded block by block
 * so that it can be cut again at any block size.
 */
#ifndef CLOOP_STORE_IMAGE_SOURCE_H
#define CLOOP_STORE_IMAGE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum source_kind {
  SOURCE_AUTO,                  /* cloop if cloop_open accepts it */
  SOURCE_RAW,
  SOURCE_CLOOP,
};

struct image_source;

/* Open path ("-" = stdin).  With SOURCE_AUTO a seekable file is a
 * cloop file if cloop_open accepts it; a file whose head looks like
 * cloop but does not open is an error rather than silently published
 * raw; a pipe (stdin) is raw, unless its head looks like cloop: that
 * is an error telling to pass the path or -t raw (a pipe cannot be
 * decoded as cloop).  NULL with err set (naming path). */
struct image_source *image_source_open (const char *path,
                                        enum source_kind kind,
                                        struct cloop_err *err);

/* Decoded size in bytes, or UINT64_MAX if unknown until the end (a
 * pipe). */
uint64_t image_source_size (const struct image_source *src);

/* Description for messages: "raw image" or the cloop dialect. */
const char *image_source_kind (const struct image_source *src);

/* The identity of a seekable source, for a journal: its device,
 * inode, size and modification time, as text in out[n].  0, or -1 for
 * a pipe (no identity: a rerun cannot know it is the same stream). */
int image_source_identity (const struct image_source *src, char *out,
                           size_t n);

/* Block size of a cloop source, 0 for raw. */
uint32_t image_source_native_block_size (const struct image_source *src);

/* Read the next len bytes of the decoded image into buf.  Returns the
 * number of bytes read (less than len only at the end, 0 at the end),
 * or -1 with err set (I/O error, corrupt cloop block). */
ssize_t image_source_read (struct image_source *src, void *buf, size_t len,
                           struct cloop_err *err);

void image_source_close (struct image_source *src);

#endif /* CLOOP_STORE_IMAGE_SOURCE_H */
