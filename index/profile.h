/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: boot profiles (docs/FORMAT.md, "Boot profiles").
 *
 * A recorded boot is a text file: the order in which one client first
 * touched the blocks of one image, with the milliseconds since open of
 * each first touch.  Several recorded boots merge into a profile: an
 * ordered list of distinct block numbers, which is embedded in a block
 * store's index (covered by its signature) or kept as a standalone
 * profile file, both in one binary form.
 *
 * Pure functions over buffers: no I/O.
 */
#ifndef CLOOP_PROFILE_H
#define CLOOP_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Recorded boots (text). */
#define PROFILE_RECORD_MAGIC    "nbdkit-cloop-profile 1"
#define PROFILE_ENTRIES_MAX     (UINT32_C (1) << 24)
#define PROFILE_MS_MAX          UINT32_C (4000000000)  /* ~46 days */
#define PROFILE_IDENTITY_MAX    255
#define PROFILE_RECORD_MAX      (512u * 1024 * 1024)   /* file size */
#define PROFILE_RECORDS_MAX     1024                   /* per merge */

/* Binary profile (standalone file, or an index's "PROF" section). */
#define PROFILE_MAGIC           "CLPROFL\n"
#define PROFILE_MAGIC_LEN       8
#define PROFILE_VERSION         1
#define PROFILE_HEADER_LEN      32
/* The largest binary profile: the header and 2^24 entries of at most
 * 5 bytes. */
#define PROFILE_FILE_MAX        (PROFILE_HEADER_LEN + 5 * PROFILE_ENTRIES_MAX)

struct profile_touch {
  uint32_t block;               /* < the image's block count */
  uint32_t ms;                  /* first touch, ms since open */
};

struct profile_record {
  /* The image: a store's name, or what the recorder chose for a cloop
   * file; 1..255 bytes, no control characters, NUL-terminated. */
  char identity[PROFILE_IDENTITY_MAX + 1];
  uint64_t num_blocks;          /* the image's block count */
  uint32_t block_size;
  struct profile_touch *touches;  /* in recorded order; blocks distinct */
  size_t count;
};

/* Serialize rec as a recorded-boot text file (*text malloc'd, *len
 * bytes, NUL-terminated).  Validates as profile_record_parse would.
 * 0, or -1 with err set (EINVAL, ENOMEM). */
int profile_record_format (const struct profile_record *rec, char **text,
                           size_t *len, struct cloop_err *err);

/* Parse a recorded-boot file's exact bytes; file names it in errors
 * ("FILE:LINE: ...").  A new record (free with profile_record_free),
 * or NULL with err set (EINVAL, ENOMEM). */
struct profile_record *profile_record_parse (const void *buf, size_t len,
                                             const char *file,
                                             struct cloop_err *err);

void profile_record_free (struct profile_record *rec);

/* Merge n >= 1 recorded boots of one image (same identity, block count
 * and block size) into a profile: every block touched in any boot,
 * once, sorted by (boots that touched it, descending; median first
 * touch ms over those boots, ascending; block number, ascending).  The
 * median of an even number of times is the mean of the middle two,
 * rounded down.  *blocks malloc'd (*count >= 1 entries).  0, or -1
 * with err set (EINVAL for a mismatch or no blocks at all, ENOMEM). */
int profile_merge (const struct profile_record *const *recs, size_t n,
                   uint32_t **blocks, size_t *count, struct cloop_err *err);

/* Encode a profile (count >= 1 distinct blocks < num_blocks) in the
 * binary form for an image of num_blocks blocks of block_size.  *buf
 * malloc'd.  0, or -1 with err set (EINVAL, ENOMEM). */
int profile_encode (const uint32_t *blocks, size_t count, uint64_t num_blocks,
                    uint32_t block_size, unsigned char **buf, size_t *len,
                    struct cloop_err *err);

/* Decode the binary form, checking every rule (magic, version, header,
 * count, canonical varints, blocks in range and distinct, no trailing
 * bytes).  num_blocks and block_size, if not 0, must equal the
 * profile's (the image it is used with); *image_blocks and
 * *image_block_size (either may be NULL) receive the profile's.
 * *blocks malloc'd.  0, or -1 with err set (EINVAL, ENOMEM). */
int profile_decode (const void *buf, size_t len, uint64_t num_blocks,
                    uint32_t block_size, uint32_t **blocks, size_t *count,
                    uint64_t *image_blocks, uint32_t *image_block_size,
                    struct cloop_err *err);

/* True if head (possibly short) starts with the binary profile magic. */
bool profile_probe_head (const void *head, size_t len);

#endif /* CLOOP_PROFILE_H */
