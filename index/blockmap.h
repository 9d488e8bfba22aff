/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the one in-memory block map every image format becomes.
 *
 * An exported image is num_blocks blocks of block_size decoded bytes
 * (the last one possibly shorter when the format records the true
 * image size).  Block i is stored as entries[i].length compressed bytes
 * at entries[i].offset of its container (a cloop file, or for a block
 * store the block's own file), encoded with entries[i].codec.
 *
 * index/ knows nothing of HTTP, caches or nbdkit: formats read their
 * container through struct byte_reader and report faults through
 * struct cloop_err.
 */
#ifndef CLOOP_BLOCKMAP_H
#define CLOOP_BLOCKMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Hard limits on values read from untrusted input. */
#define BLOCK_SIZE_MAX       (64u * 1024 * 1024)  /* as qemu */
#define BLOCK_SIZE_ALIGN     512u
/* 2^24 blocks: 1 TiB at 64 KiB blocks, a 128 MiB index, a 256 MiB map;
 * a hostile server cannot make an open allocate much more. */
#define NUM_BLOCKS_MAX       (UINT64_C (1) << 24)

/* Block codecs.  Values are ours, not any format's on-disk codes. */
enum block_codec {
  CODEC_ZERO = 0,      /* not stored: decodes to block_size zero bytes */
  CODEC_NONE,          /* stored raw */
  CODEC_ZLIB,          /* RFC 1950 zlib stream */
  CODEC_XZ,            /* complete .xz stream */
  CODEC_LZ4,           /* raw LZ4 block (no frame) */
  CODEC_LZO,           /* raw LZO1X */
  CODEC_ZSTD,          /* zstd frame */
  CODEC_COUNT
};

/* Human name of a codec ("zlib", "none", ...); never NULL. */
const char *codec_name (enum block_codec codec);

struct block_entry {
  uint64_t offset;     /* byte offset of the compressed bytes */
  /* Compressed length.  0 for CODEC_ZERO; 0 with another codec is an
   * index fault in a dialect without zero blocks: the map keeps it and
   * reading the block fails. */
  uint32_t length;
  uint8_t codec;       /* enum block_codec */
};

struct block_map {
  char dialect[32];        /* e.g. "cloop V2.0", "cloop V4.0 (footer)" */
  /* The image's name, for boot profiles (profile.h): a block store's
   * name, else what its opener sets (the cloop file's name); "" if
   * none. */
  char name[256];
  uint32_t block_size;     /* decoded bytes per block, multiple of 512 */
  uint64_t num_blocks;
  uint64_t size;           /* exported size, <= num_blocks * block_size */
  uint32_t max_length;     /* largest entries[i].length */
  /* True when the last block is stored as a full block_size block even
   * though size ends inside it (dplasa V3 writes it so): its stream
   * decodes to block_size bytes, of which only the first
   * block_map_decoded_length are exported. */
  bool padded_last;
  /* True when the last block's stream may decode to fewer bytes than
   * block_map_stream_length (a Knopper or FreeBSD writer that did not
   * pad it): the rest of the block reads as zeroes.  Every other block
   * must decode to exactly its length. */
  bool short_last;
  /* What may follow the end of a block's stream inside its
   * entries[i].length bytes.  0: nothing (every writer but mkuzip).
   * N (FreeBSD mkuzip images: 512): zero bytes, up to the first
   * multiple of N of the container offset after the stream's end. */
  uint32_t pad_align;
  struct block_entry *entries;   /* num_blocks entries */
  /* Optional per-block SHA-256 of the compressed bytes (block stores,
   * or a cloop file with a block-hash list, hashlist.h); else NULL.
   * hash_len bytes per block, block i at hashes + i * hash_len. */
  unsigned char *hashes;
  uint32_t hash_len;
  /* What the format says of the image (block stores: their signed
   * description and revision); NULL and 0 when it says nothing.
   * description is malloc'd and freed by block_map_free. */
  char *description;
  uint64_t revision;
  /* True for block stores: each block is its own object, named by its
   * hash (store_block_path), not a byte range of one container. */
  bool objects_by_hash;
  /* Optional boot profile (block stores: the signed index's profile
   * section, index/profile.h): profile_len distinct block numbers <
   * num_blocks, in the order to prefetch them; NULL and 0 if none.
   * malloc'd and freed by block_map_free. */
  uint32_t *profile;
  size_t profile_len;
};

/* Allocate a map for num_blocks blocks with zeroed entries.
 * Returns NULL with err set (ENOMEM, or EINVAL for too many blocks). */
struct block_map *block_map_new (uint64_t num_blocks, uint32_t block_size,
                                 struct cloop_err *err);

/* Free a map (NULL is allowed). */
void block_map_free (struct block_map *map);

/* Decoded length of block i: block_size, except the last block when
 * size is not a multiple of block_size.  i must be < num_blocks. */
uint32_t block_map_decoded_length (const struct block_map *map, uint64_t i);

/* Number of bytes block i's stream decodes to: what decoder_decode
 * must be asked for.  Equal to block_map_decoded_length, except
 * block_size for the last block of a padded_last map. */
uint32_t block_map_stream_length (const struct block_map *map, uint64_t i);

/* Fewest bytes block i's stream may decode to: block_map_stream_length,
 * or 1 for the last block of a short_last map. */
uint32_t block_map_min_stream_length (const struct block_map *map,
                                      uint64_t i);

/* Check what follows block i's stream: in holds the block's
 * entries[i].length bytes, the stream took the first used of them.
 * The rest must obey map->pad_align.  0, or -1 with err set (EIO). */
int block_map_check_padding (const struct block_map *map, uint64_t i,
                             const void *in, size_t used,
                             struct cloop_err *err);

/* Validate a finished map against the container size: every stored
 * block lies inside [0, container_size), lengths within the codec's
 * worst-case bound, size consistent.  Returns 0, or -1 with err set
 * (EINVAL) naming the first faulty block. */
int block_map_validate (struct block_map *map, uint64_t container_size,
                        struct cloop_err *err);

/* Check a block size and block count read from an image before
 * anything is allocated for them: size not 0, a multiple of 512, at
 * most BLOCK_SIZE_MAX; count at most NUM_BLOCKS_MAX; count * size
 * fits in an int64.  0, or -1 with err set (EINVAL). */
int block_map_check_geometry (uint32_t block_size, uint64_t num_blocks,
                              struct cloop_err *err);

/* Worst-case compressed length of one block of block_size bytes for
 * any codec we support (bounds what a format may claim). */
uint64_t block_map_length_bound (uint32_t block_size);

/* Reads bytes of a container.  index/ calls it; fetch/ implements it.
 * pread must fill exactly len bytes or return -1 with err set. */
struct byte_reader {
  void *opaque;
  uint64_t size;                 /* container size in bytes */
  int (*pread) (void *opaque, void *buf, size_t len, uint64_t offset,
                struct cloop_err *err);
};

#endif /* CLOOP_BLOCKMAP_H */
