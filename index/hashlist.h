/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block-hash lists of plain cloop files (docs/FORMAT.md,
 * "Block-hash lists") <-> struct hash_list.
 *
 * A list gives the SHA-256 of every block's compressed bytes of one
 * cloop file and identifies that file (its size, and a digest of the
 * block map cloop_open builds from it).  Attached to the file's block
 * map, it lets the reader check every block before decoding it, as it
 * does for block stores.  This module parses, writes and matches
 * lists; fetching them and deciding whether to trust them (signatures,
 * pinned hashes) is the caller's.
 */
#ifndef CLOOP_HASHLIST_H
#define CLOOP_HASHLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockmap.h"

#define HASHLIST_MAGIC       "CLBHASH\n"
#define HASHLIST_MAGIC_LEN   8
#define HASHLIST_VERSION     1
#define HASHLIST_HEADER_LEN  96
#define HASHLIST_HASH_LEN    32             /* SHA-256 */
#define HASHLIST_MAX         (256u * 1024 * 1024)  /* refuse larger lists */

struct hash_list {
  uint64_t file_size;           /* bytes of the cloop file */
  uint32_t block_size;
  uint64_t num_blocks;
  uint64_t size;                /* exported (decoded) size */
  unsigned char map_digest[HASHLIST_HASH_LEN]; /* hash_list_map_digest */
  /* num_blocks * HASHLIST_HASH_LEN bytes: SHA-256 of block i's
   * compressed bytes, all zero for a block that is not stored. */
  unsigned char *hashes;
};

/* True if head (possibly short) starts with the list's magic. */
bool hash_list_probe_head (const void *head, size_t len);

/* Parse and validate the exact bytes of a list (magic, version, header
 * length, algorithm, reserved bytes, geometry, length = header + 32 x
 * blocks, at most HASHLIST_MAX bytes).  Nothing is allocated before
 * the length is checked.  Returns a new list or NULL with err set
 * (EINVAL naming the fault, or ENOMEM). */
struct hash_list *hash_list_parse (const void *buf, size_t len,
                                   struct cloop_err *err);

/* A list for map (a cloop file of file_size bytes) with the header
 * filled in and every hash zero, for a writer to fill.  NULL with err
 * set. */
struct hash_list *hash_list_new (const struct block_map *map,
                                 uint64_t file_size, struct cloop_err *err);

/* Free a list (NULL is allowed). */
void hash_list_free (struct hash_list *list);

/* Serialize a list into a new buffer (*buf, *len; caller frees *buf).
 * 0, or -1 with err set (EINVAL if the list is not valid, ENOMEM). */
int hash_list_write (const struct hash_list *list, unsigned char **buf,
                     size_t *len, struct cloop_err *err);

/* The SHA-256 that identifies a block map: its geometry, flags and
 * every entry (offset, length, codec), serialized as FORMAT.md says. */
void hash_list_map_digest (const struct block_map *map,
                           unsigned char out[HASHLIST_HASH_LEN]);

/* Check that list was made for map (a cloop file of file_size bytes):
 * same file size, block size, block count, exported size and map
 * digest, and zero hashes exactly for blocks that are not stored.
 * Then copy the hashes into map (map->hashes, hash_len 32; blocks
 * stay byte ranges of the file).  0, or -1 with err set (EINVAL
 * saying what differs; ENOMEM) and map unchanged. */
int hash_list_attach (const struct hash_list *list, struct block_map *map,
                      uint64_t file_size, struct cloop_err *err);

#endif /* CLOOP_HASHLIST_H */
