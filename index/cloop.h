/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: cloop files of every dialect -> struct block_map.
 *
 * Dialects (research/formats.md section 1): V2.0; V4.0 header-first and
 * header-last with per-block zlib/none/xz/lz4/lzo1x; 0.68 (BE32
 * offsets); 1.0 (LE64 offsets); SliTaz/fusecloop "V3.0"; dplasa V3
 * (footer "\nCLOOP3\n"); FreeBSD #V2.0 / #L3.0 / #Z4.0 and their dedup
 * (lower-case) variants.
 */
#ifndef CLOOP_CLOOP_H
#define CLOOP_CLOOP_H

#include <stdbool.h>

#include "blockmap.h"

/* Detect the dialect of the container behind reader and build its
 * block map.  Reads the header, the tail and the index (at most a few
 * reads, so it is cheap over HTTP).  Every value read is checked:
 * block size 0, not a multiple of 512 or above BLOCK_SIZE_MAX; index
 * outside the file; offsets not monotonic (except FreeBSD dedup);
 * lengths out of bounds; size overflow; unknown codec.  Returns a map
 * the caller frees with block_map_free, or NULL with err set (EINVAL
 * for a malformed image, or the reader's error). */
struct block_map *cloop_open (const struct byte_reader *reader,
                              struct cloop_err *err);

/* True if the first bytes of a container look like any cloop dialect
 * that is detectable from the head alone (used for autodetection
 * against block-store indexes).  head_len may be short. */
bool cloop_probe_head (const void *head, size_t head_len);

#endif /* CLOOP_CLOOP_H */
