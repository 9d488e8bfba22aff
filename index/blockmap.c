/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the shared block map (see blockmap.h). */
#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include "blockmap.h"

const char *
codec_name (enum block_codec codec)
{
  static const char *const names[CODEC_COUNT] = {
    [CODEC_ZERO] = "zero", [CODEC_NONE] = "none", [CODEC_ZLIB] = "zlib",
    [CODEC_XZ] = "xz", [CODEC_LZ4] = "lz4", [CODEC_LZO] = "lzo1x",
    [CODEC_ZSTD] = "zstd",
  };

  if ((unsigned) codec < CODEC_COUNT)
    return names[codec];
  return "unknown";
}

/* The map starts with size = num_blocks * block_size; formats that
 * record the true image size (dplasa V3) lower it afterwards.  The
 * entries array is num_blocks * 16 bytes, so callers must have checked
 * that the on-disk index is really that large before calling this. */
struct block_map *
block_map_new (uint64_t num_blocks, uint32_t block_size,
               struct cloop_err *err)
{
  struct block_map *map;

  if (num_blocks > NUM_BLOCKS_MAX ||
      num_blocks > SIZE_MAX / sizeof (struct block_entry)) {
    cloop_err_set (err, EINVAL, "too many blocks (%" PRIu64 ", limit %"
                   PRIu64 ")", num_blocks, (uint64_t) NUM_BLOCKS_MAX);
    return NULL;
  }
  if (block_size != 0 && num_blocks > (uint64_t) INT64_MAX / block_size) {
    cloop_err_set (err, EINVAL, "image size overflows (%" PRIu64
                   " blocks of %" PRIu32 " bytes)", num_blocks, block_size);
    return NULL;
  }

  map = calloc (1, sizeof *map);
  if (map == NULL) {
    cloop_err_set (err, ENOMEM, "calloc: %m");
    return NULL;
  }
  /* calloc (0, ...) may return NULL; always allocate at least one. */
  map->entries = calloc (num_blocks ? num_blocks : 1,
                         sizeof (struct block_entry));
  if (map->entries == NULL) {
    cloop_err_set (err, ENOMEM, "cannot allocate index of %" PRIu64
                   " blocks: %m", num_blocks);
    free (map);
    return NULL;
  }
  map->num_blocks = num_blocks;
  map->block_size = block_size;
  map->size = num_blocks * block_size;
  return map;
}

void
block_map_free (struct block_map *map)
{
  if (map == NULL)
    return;
  free (map->entries);
  free (map->hashes);
  free (map->description);
  free (map->profile);
  free (map);
}

uint32_t
block_map_decoded_length (const struct block_map *map, uint64_t i)
{
  uint64_t start = i * map->block_size;
  uint64_t rest = map->size > start ? map->size - start : 0;

  return rest < map->block_size ? (uint32_t) rest : map->block_size;
}

uint32_t
block_map_stream_length (const struct block_map *map, uint64_t i)
{
  if (map->padded_last && i + 1 == map->num_blocks)
    return map->block_size;
  return block_map_decoded_length (map, i);
}

uint32_t
block_map_min_stream_length (const struct block_map *map, uint64_t i)
{
  if (map->short_last && i + 1 == map->num_blocks)
    return 1;
  return block_map_stream_length (map, i);
}

int
block_map_check_padding (const struct block_map *map, uint64_t i,
                         const void *in, size_t used, struct cloop_err *err)
{
  const struct block_entry *e = &map->entries[i];
  const unsigned char *p = in;
  uint64_t end = e->offset + used, limit;

  if (used >= e->length)
    return 0;
  if (map->pad_align == 0)
    return cloop_err_set (err, EIO, "%s: %" PRIu32 " bytes after the end "
                          "of the stream (at %zu of %" PRIu32 ")",
                          codec_name (e->codec), e->length - (uint32_t) used,
                          used, e->length);
  limit = (end / map->pad_align + 1) * map->pad_align;
  if (e->offset + e->length > limit)
    return cloop_err_set (err, EIO, "%s: %" PRIu32 " bytes after the end "
                          "of the stream (at %zu of %" PRIu32 "), more than "
                          "padding to a %" PRIu32 "-byte boundary",
                          codec_name (e->codec), e->length - (uint32_t) used,
                          used, e->length, map->pad_align);
  for (size_t k = used; k < e->length; k++)
    if (p[k] != 0)
      return cloop_err_set (err, EIO, "%s: %" PRIu32 " bytes after the end "
                            "of the stream (at %zu of %" PRIu32 ") are not "
                            "zero padding", codec_name (e->codec),
                            e->length - (uint32_t) used, used, e->length);
  return 0;
}

/* One bound for every codec, so that a format cannot make us allocate
 * more than about 1/16 over the block size per compressed buffer:
 *   zlib stored blocks  bs + 5 per 64 KiB + 6 (2 header, 4 Adler-32)
 *   lz4                 bs + bs/255 + 16
 *   lzo1x               bs + bs/16 + 64 + 3
 *   xz (LZMA2, CRC32)   bs + 3 per 64 KiB chunk + ~70 bytes of headers
 *   zstd                bs + bs/256 + a few hundred bytes
 * bs + bs/16 + 4096 covers all of them, including the small block
 * sizes where the constant terms dominate. */
uint64_t
block_map_length_bound (uint32_t block_size)
{
  return (uint64_t) block_size + block_size / 16 + 4096;
}

int
block_map_check_geometry (uint32_t bs, uint64_t n, struct cloop_err *err)
{
  if (bs == 0)
    return cloop_err_set (err, EINVAL, "block size is 0");
  if (bs % BLOCK_SIZE_ALIGN != 0)
    return cloop_err_set (err, EINVAL,
                          "block size %" PRIu32 " is not a multiple of %u",
                          bs, BLOCK_SIZE_ALIGN);
  if (bs > BLOCK_SIZE_MAX)
    return cloop_err_set (err, EINVAL,
                          "block size %" PRIu32 " exceeds the limit of %u",
                          bs, BLOCK_SIZE_MAX);
  if (n > NUM_BLOCKS_MAX)
    return cloop_err_set (err, EINVAL, "too many blocks (%" PRIu64 ")", n);
  if (n > (uint64_t) INT64_MAX / bs)
    return cloop_err_set (err, EINVAL, "image size overflows (%" PRIu64
                          " blocks of %" PRIu32 " bytes)", n, bs);
  return 0;
}

static int
validate_geometry (const struct block_map *map, struct cloop_err *err)
{
  uint32_t bs = map->block_size;

  if (block_map_check_geometry (bs, map->num_blocks, err) == -1)
    return -1;
  if (map->size > map->num_blocks * bs ||
      (map->num_blocks > 0 && map->size <= (map->num_blocks - 1) * bs))
    return cloop_err_set (err, EINVAL, "image size %" PRIu64
                          " does not match %" PRIu64 " blocks of %" PRIu32
                          " bytes", map->size, map->num_blocks, bs);
  return 0;
}

static int
validate_entry (const struct block_map *map, uint64_t i,
                uint64_t container_size, uint64_t bound,
                struct cloop_err *err)
{
  const struct block_entry *e = &map->entries[i];

  if (e->codec >= CODEC_COUNT)
    return cloop_err_set (err, EINVAL, "unknown codec %u in block %" PRIu64,
                          e->codec, i);
  if (e->codec == CODEC_ZERO)
    return 0;
  if (e->length > bound)
    return cloop_err_set (err, EINVAL, "block %" PRIu64 ": compressed length %"
                          PRIu32 " exceeds the limit of %" PRIu64,
                          i, e->length, bound);
  if (e->offset > container_size || e->length > container_size - e->offset)
    return cloop_err_set (err, EINVAL, "block %" PRIu64 " (offset %" PRIu64
                          ", length %" PRIu32 ") extends past the end of "
                          "the file (%" PRIu64 " bytes)",
                          i, e->offset, e->length, container_size);
  if (e->length == 0)           /* an index fault: fails when read */
    return 0;
  if (e->codec == CODEC_NONE &&
      (e->length > block_map_stream_length (map, i) ||
       e->length < block_map_min_stream_length (map, i)))
    return cloop_err_set (err, EINVAL, "block %" PRIu64 " is stored raw "
                          "with length %" PRIu32 ", expected %" PRIu32,
                          i, e->length, block_map_stream_length (map, i));
  return 0;
}

/* Also computes map->max_length. */
int
block_map_validate (struct block_map *map, uint64_t container_size,
                    struct cloop_err *err)
{
  uint64_t bound, i;
  uint32_t max_length = 0;

  if (validate_geometry (map, err) == -1)
    return -1;
  bound = block_map_length_bound (map->block_size);
  for (i = 0; i < map->num_blocks; i++) {
    if (validate_entry (map, i, container_size, bound, err) == -1)
      return -1;
    if (map->entries[i].codec != CODEC_ZERO &&
        map->entries[i].length > max_length)
      max_length = map->entries[i].length;
  }
  map->max_length = max_length;
  return 0;
}
