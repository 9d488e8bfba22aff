/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: files inside an ISO9660 image (a CD/DVD image such as
 * KNOPPIX_V9.1DVD.iso), so that the cloop file inside it can be served
 * as a window of the image.
 *
 * Reads the volume descriptors (primary, Joliet supplementary) and the
 * directory records on the path asked for, through struct byte_reader
 * (a few reads of whole directories; nothing else).  Names are Rock
 * Ridge NM names (SUSP, in the record itself; continuation areas are
 * not followed), else Joliet UCS-2 names, else ISO names without their
 * ";1" version and trailing '.', compared exactly first and then
 * case-insensitively.  A file in several extents (> 4 GiB) is one file
 * only if its extents are contiguous.  Knows nothing of fetching.
 */
#ifndef CLOOP_ISO9660_H
#define CLOOP_ISO9660_H

#include <stdbool.h>
#include <stdint.h>

#include "blockmap.h"

#define ISO9660_SECTOR 2048
#define ISO9660_MAGIC_OFFSET 32769      /* "CD001" of the first descriptor */
#define ISO9660_DESCRIPTORS_MAX 32      /* volume descriptors read */
#define ISO9660_DIR_MAX (4 * 1024 * 1024) /* bytes of one directory */
#define ISO9660_DEPTH_MAX 16            /* components of a path */
#define ISO9660_EXTENTS_MAX 64          /* records of a multi-extent file */
#define ISO9660_NAME_MAX 255            /* bytes of a name (UTF-8) */
#define ISO9660_LIST_MAX 1000           /* names iso9660_list reports */

/* Where a file's bytes are in the image. */
struct iso9660_file {
  uint64_t offset;
  uint64_t length;
};

/* Whether the image behind br has "CD001" at ISO9660_MAGIC_OFFSET (a
 * short image is not one): 0 with *is_iso set, or -1 with err set (the
 * reader's error). */
int iso9660_probe (const struct byte_reader *br, bool *is_iso,
                   struct cloop_err *err);

/* Find the regular file path (absolute, '/'-separated, e.g.
 * "/KNOPPIX/KNOPPIX").  0 with *out set, or -1 with err set: ENOENT if
 * there is no such file (the message names the missing component),
 * EINVAL for a malformed image or a file whose extents are not
 * contiguous, or the reader's error. */
int iso9660_find (const struct byte_reader *br, const char *path,
                  struct iso9660_file *out, struct cloop_err *err);

/* Call fn for each regular file directly in directory dir (at most
 * ISO9660_LIST_MAX), with its name as iso9660_find matches it, in the
 * directory's order.  fn returns 0 to go on, -1 to stop with err set.
 * 0, or -1 with err set (as iso9660_find, for dir). */
int iso9660_list (const struct byte_reader *br, const char *dir,
                  int (*fn) (void *opaque, const char *name,
                             struct cloop_err *err),
                  void *opaque, struct cloop_err *err);

#endif /* CLOOP_ISO9660_H */
