/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block-store indexes (docs/FORMAT.md) -> struct block_map.
 *
 * A store index lists the blocks of an image, each a file named by the
 * SHA-256 of its compressed bytes.  This module parses, validates and
 * writes the index bytes; trust (signatures, pinned hashes, expiry,
 * rollback) is decided by the caller with index/signature.h.
 */
#ifndef CLOOP_STORE_H
#define CLOOP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockmap.h"

#define STORE_MAGIC        "CLSTORE\n"
#define STORE_MAGIC_LEN    8
#define STORE_VERSION      1           /* an index without sections */
#define STORE_VERSION_SECTIONS 2       /* sections follow the block table */
#define STORE_SECTION_HEAD 8           /* tag (4) + BE32 length */
#define STORE_SECTION_PROFILE "PROF"   /* a boot profile (profile.h) */
#define STORE_HEADER_LEN   96
#define STORE_HASH_LEN     32          /* SHA-256 */
#define STORE_ENTRY_LEN    36          /* hash + BE32 length */
#define STORE_NAME_MAX     255
#define STORE_DESC_MAX     4096
#define STORE_INDEX_MAX    (256u * 1024 * 1024)  /* refuse larger indexes */

struct store_index {
  uint64_t size;                 /* image size in bytes */
  uint32_t block_size;
  enum block_codec codec;        /* CODEC_ZLIB, CODEC_ZSTD or CODEC_XZ */
  uint64_t num_blocks;
  uint64_t revision;
  uint64_t created;              /* seconds since the epoch */
  uint64_t expires;              /* 0 = never */
  char name[STORE_NAME_MAX + 1];
  char *description;             /* never NULL ("" if empty); malloc'd,
                                    freed by store_index_free */
  /* num_blocks entries; an all-zero hash with length 0 = zero block. */
  unsigned char *hashes;         /* num_blocks * STORE_HASH_LEN */
  uint32_t *lengths;
  /* The boot profile (version 2 "PROF" section): profile_len distinct
   * block numbers in replay order; NULL and 0 if there is none.  The
   * writer writes version 2 exactly when profile_len > 0.  Freed by
   * store_index_free. */
  uint32_t *profile;
  size_t profile_len;
};

/* True if head (possibly short) starts with the store magic. */
bool store_probe_head (const void *head, size_t len);

/* Parse and validate the exact bytes of an index (every rule of
 * FORMAT.md: magic, version 1 or 2, header length, sizes, counts, name
 * and description, entry lengths, in version 2 the sections and the
 * profile, no trailing bytes).  Returns a new index
 * or NULL with err set (EINVAL, naming the fault). */
struct store_index *store_index_parse (const void *buf, size_t len,
                                       struct cloop_err *err);

/* Allocate an index for num_blocks blocks with zeroed entries and an
 * empty description (for writers).  NULL with err set. */
struct store_index *store_index_new (uint64_t size, uint32_t block_size,
                                     enum block_codec codec,
                                     struct cloop_err *err);

void store_index_free (struct store_index *idx);

/* Serialize idx into a new buffer (*buf, *len; caller frees *buf).
 * Validates as store_index_parse would.  0, or -1 with err set. */
int store_index_write (const struct store_index *idx,
                       unsigned char **buf, size_t *len,
                       struct cloop_err *err);

/* True if entry i is a zero block. */
bool store_index_is_zero (const struct store_index *idx, uint64_t i);

/* Build the block map a reader serves: zero blocks CODEC_ZERO, others
 * idx->codec with length = compressed length and offset 0; size =
 * image size; hashes and profile copied (hash_len 32).  NULL with err
 * set. */
struct block_map *store_index_to_map (const struct store_index *idx,
                                      struct cloop_err *err);

/* Path of a block file relative to the index's directory:
 * "blocks/HH/<64 hex>".  out must hold STORE_BLOCK_PATH_MAX bytes. */
#define STORE_BLOCK_PATH_MAX 76
void store_block_path (char out[STORE_BLOCK_PATH_MAX],
                       const unsigned char hash[STORE_HASH_LEN]);

/* Lower-case hex of a SHA-256 (out: 65 bytes). */
void store_hex (char out[65], const unsigned char hash[STORE_HASH_LEN]);

/* Parse 64 hex digits into a hash.  0, or -1 if not exactly that. */
int store_unhex (unsigned char hash[STORE_HASH_LEN], const char *hex);

#endif /* CLOOP_STORE_H */
