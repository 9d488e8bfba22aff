/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block-hash lists (see hashlist.h and docs/FORMAT.md).
 *
 * As for store indexes, every rule is checked on the untrusted bytes
 * before anything is allocated, and the writer runs the parser's
 * checks on its own output.
 */
#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "byteorder.h"
#include "hashlist.h"

/* Offsets of the header (FORMAT.md, "Block-hash lists"). */
#define OFF_VERSION     8
#define OFF_HEADER_LEN  12
#define OFF_FILE_SIZE   16
#define OFF_BLOCK_SIZE  24
#define OFF_HASH_ALG    28
#define OFF_RESERVED1   29      /* 3 bytes */
#define OFF_NUM_BLOCKS  32
#define OFF_SIZE        40
#define OFF_MAP_DIGEST  48
#define OFF_RESERVED2   80      /* 16 bytes */
#define HASH_ALG_SHA256 1

#define MAP_DIGEST_TAG  "nbdkit-cloop block map 1\n"
#define MAP_ENTRY_LEN   13      /* BE64 offset, BE32 length, codec */

bool
hash_list_probe_head (const void *head, size_t len)
{
  return len >= HASHLIST_MAGIC_LEN &&
         memcmp (head, HASHLIST_MAGIC, HASHLIST_MAGIC_LEN) == 0;
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

/* Block size, count and exported size agree: the count is exactly
 * what the size needs. */
static int
check_geometry (uint32_t bs, uint64_t n, uint64_t size, struct cloop_err *err)
{
  if (block_map_check_geometry (bs, n, err) == -1)
    return -1;
  if (n == 0 || size > n * bs || size <= (n - 1) * bs)
    return cloop_err_set (err, EINVAL, "size %" PRIu64 " does not match %"
                          PRIu64 " blocks of %" PRIu32 " bytes", size, n, bs);
  return 0;
}

/* Every rule of the format on buf[0..len), without allocating. */
static int
check_list_bytes (const unsigned char *b, size_t len, struct cloop_err *err)
{
  uint64_t n;

  if (len > HASHLIST_MAX)
    return cloop_err_set (err, EINVAL, "block-hash list of %zu bytes is "
                          "larger than the limit of %u", len, HASHLIST_MAX);
  if (len < HASHLIST_HEADER_LEN ||
      !hash_list_probe_head (b, len))
    return cloop_err_set (err, EINVAL, "not a block-hash list (%s)",
                          len < HASHLIST_HEADER_LEN ? "too short"
                          : "bad magic");
  if (load_be32 (b + OFF_VERSION) != HASHLIST_VERSION)
    return cloop_err_set (err, EINVAL, "block-hash list version %" PRIu32
                          " is not supported (only %d)",
                          load_be32 (b + OFF_VERSION), HASHLIST_VERSION);
  if (load_be32 (b + OFF_HEADER_LEN) != HASHLIST_HEADER_LEN)
    return cloop_err_set (err, EINVAL, "block-hash list header length %"
                          PRIu32 ", expected %d",
                          load_be32 (b + OFF_HEADER_LEN), HASHLIST_HEADER_LEN);
  if (b[OFF_HASH_ALG] != HASH_ALG_SHA256)
    return cloop_err_set (err, EINVAL, "block-hash list: unknown hash "
                          "algorithm %u", b[OFF_HASH_ALG]);
  if (!all_zero (b + OFF_RESERVED1, 3) || !all_zero (b + OFF_RESERVED2, 16))
    return cloop_err_set (err, EINVAL, "block-hash list: reserved bytes "
                          "are not zero");
  n = load_be64 (b + OFF_NUM_BLOCKS);
  if (check_geometry (load_be32 (b + OFF_BLOCK_SIZE), n,
                      load_be64 (b + OFF_SIZE), err) == -1) {
    cloop_err_prefix (err, "block-hash list");
    return -1;
  }
  /* n <= NUM_BLOCKS_MAX, so this cannot overflow. */
  if ((uint64_t) len - HASHLIST_HEADER_LEN != n * HASHLIST_HASH_LEN)
    return cloop_err_set (err, EINVAL, "block-hash list of %zu bytes cannot "
                          "hold %" PRIu64 " hashes (needs %" PRIu64 ")",
                          len, n, HASHLIST_HEADER_LEN + n * HASHLIST_HASH_LEN);
  return 0;
}

struct hash_list *
hash_list_parse (const void *buf, size_t len, struct cloop_err *err)
{
  const unsigned char *b = buf;
  struct hash_list *list;

  if (check_list_bytes (b, len, err) == -1)
    return NULL;
  list = calloc (1, sizeof *list);
  if (list == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  list->file_size = load_be64 (b + OFF_FILE_SIZE);
  list->block_size = load_be32 (b + OFF_BLOCK_SIZE);
  list->num_blocks = load_be64 (b + OFF_NUM_BLOCKS);
  list->size = load_be64 (b + OFF_SIZE);
  memcpy (list->map_digest, b + OFF_MAP_DIGEST, HASHLIST_HASH_LEN);
  list->hashes = malloc (len - HASHLIST_HEADER_LEN);
  if (list->hashes == NULL) {
    free (list);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  memcpy (list->hashes, b + HASHLIST_HEADER_LEN, len - HASHLIST_HEADER_LEN);
  return list;
}

struct hash_list *
hash_list_new (const struct block_map *map, uint64_t file_size,
               struct cloop_err *err)
{
  struct hash_list *list;

  if (check_geometry (map->block_size, map->num_blocks, map->size, err) == -1)
    return NULL;
  list = calloc (1, sizeof *list);
  if (list == NULL ||
      (list->hashes = calloc (map->num_blocks, HASHLIST_HASH_LEN)) == NULL) {
    free (list);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  list->file_size = file_size;
  list->block_size = map->block_size;
  list->num_blocks = map->num_blocks;
  list->size = map->size;
  hash_list_map_digest (map, list->map_digest);
  return list;
}

void
hash_list_free (struct hash_list *list)
{
  if (list == NULL)
    return;
  free (list->hashes);
  free (list);
}

int
hash_list_write (const struct hash_list *list, unsigned char **buf,
                 size_t *len, struct cloop_err *err)
{
  uint64_t total;
  unsigned char *b;

  if (check_geometry (list->block_size, list->num_blocks, list->size,
                      err) == -1)
    return -1;
  total = HASHLIST_HEADER_LEN + list->num_blocks * HASHLIST_HASH_LEN;
  if (total > HASHLIST_MAX)
    return cloop_err_set (err, EINVAL, "%" PRIu64 " blocks need a list of %"
                          PRIu64 " bytes, more than readers accept (%u)",
                          list->num_blocks, total, HASHLIST_MAX);
  b = calloc (1, total);
  if (b == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  memcpy (b, HASHLIST_MAGIC, HASHLIST_MAGIC_LEN);
  store_be32 (b + OFF_VERSION, HASHLIST_VERSION);
  store_be32 (b + OFF_HEADER_LEN, HASHLIST_HEADER_LEN);
  store_be64 (b + OFF_FILE_SIZE, list->file_size);
  store_be32 (b + OFF_BLOCK_SIZE, list->block_size);
  b[OFF_HASH_ALG] = HASH_ALG_SHA256;
  store_be64 (b + OFF_NUM_BLOCKS, list->num_blocks);
  store_be64 (b + OFF_SIZE, list->size);
  memcpy (b + OFF_MAP_DIGEST, list->map_digest, HASHLIST_HASH_LEN);
  memcpy (b + HASHLIST_HEADER_LEN, list->hashes,
          list->num_blocks * HASHLIST_HASH_LEN);
  if (check_list_bytes (b, total, err) == -1) {
    free (b);
    return -1;
  }
  *buf = b;
  *len = total;
  return 0;
}

void
hash_list_map_digest (const struct block_map *map,
                      unsigned char out[HASHLIST_HASH_LEN])
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  unsigned char head[sizeof MAP_DIGEST_TAG - 1 + 21];
  unsigned char chunk[256 * MAP_ENTRY_LEN];
  size_t used = 0;
  unsigned int n = 0;

  /* Without a context (out of memory) the digest is all 0xff, which
   * matches no list a writer made. */
  memset (out, 0xff, HASHLIST_HASH_LEN);
  if (ctx == NULL || EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL) != 1) {
    EVP_MD_CTX_free (ctx);
    return;
  }
  memcpy (head, MAP_DIGEST_TAG, sizeof MAP_DIGEST_TAG - 1);
  store_be32 (head + sizeof MAP_DIGEST_TAG - 1, map->block_size);
  store_be64 (head + sizeof MAP_DIGEST_TAG + 3, map->num_blocks);
  store_be64 (head + sizeof MAP_DIGEST_TAG + 11, map->size);
  head[sizeof head - 1] = (map->padded_last ? 1 : 0) |
                          (map->short_last ? 2 : 0);
  EVP_DigestUpdate (ctx, head, sizeof head);
  for (uint64_t i = 0; i < map->num_blocks; i++) {
    const struct block_entry *e = &map->entries[i];
    store_be64 (chunk + used, e->offset);
    store_be32 (chunk + used + 8, e->length);
    chunk[used + 12] = e->codec;
    used += MAP_ENTRY_LEN;
    if (used == sizeof chunk || i + 1 == map->num_blocks) {
      EVP_DigestUpdate (ctx, chunk, used);
      used = 0;
    }
  }
  if (EVP_DigestFinal_ex (ctx, out, &n) != 1 || n != HASHLIST_HASH_LEN)
    memset (out, 0xff, HASHLIST_HASH_LEN);
  EVP_MD_CTX_free (ctx);
}

/* 0 if list was made for map, else -1 with err saying the first
 * difference. */
static int
check_match (const struct hash_list *list, const struct block_map *map,
             uint64_t file_size, struct cloop_err *err)
{
  unsigned char digest[HASHLIST_HASH_LEN];

  if (list->block_size != map->block_size ||
      list->num_blocks != map->num_blocks || list->size != map->size)
    return cloop_err_set (err, EINVAL, "list is for %" PRIu64 " blocks of %"
                          PRIu32 " bytes (size %" PRIu64 "), the image has %"
                          PRIu64 " blocks of %" PRIu32 " bytes (size %"
                          PRIu64 ")", list->num_blocks, list->block_size,
                          list->size, map->num_blocks, map->block_size,
                          map->size);
  hash_list_map_digest (map, digest);
  if (memcmp (digest, list->map_digest, HASHLIST_HASH_LEN) != 0)
    return cloop_err_set (err, EINVAL, "list is for another image: its "
                          "block map digest differs from the image's");
  if (list->file_size != file_size)
    return cloop_err_set (err, EINVAL, "list is for a file of %" PRIu64
                          " bytes, the image has %" PRIu64,
                          list->file_size, file_size);
  for (uint64_t i = 0; i < map->num_blocks; i++) {
    bool zero = all_zero (list->hashes + i * HASHLIST_HASH_LEN,
                          HASHLIST_HASH_LEN);
    if (zero != (map->entries[i].codec == CODEC_ZERO))
      return cloop_err_set (err, EINVAL, "block %" PRIu64 " is %s in the "
                            "image but its hash in the list is %s", i,
                            zero ? "stored" : "not stored",
                            zero ? "zero" : "not zero");
  }
  return 0;
}

int
hash_list_attach (const struct hash_list *list, struct block_map *map,
                  uint64_t file_size, struct cloop_err *err)
{
  unsigned char *copy;

  if (check_match (list, map, file_size, err) == -1)
    return -1;
  copy = malloc (map->num_blocks * HASHLIST_HASH_LEN);
  if (copy == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  memcpy (copy, list->hashes, map->num_blocks * HASHLIST_HASH_LEN);
  free (map->hashes);
  map->hashes = copy;
  map->hash_len = HASHLIST_HASH_LEN;
  map->objects_by_hash = false;
  return 0;
}
