/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block-store indexes (see store.h and docs/FORMAT.md).
 *
 * Parsing is two passes over the untrusted bytes: check_index_bytes
 * applies every rule of the format without allocating anything, and
 * only then store_index_parse allocates and copies.  The writer
 * serializes and runs the same checks on its own output, so the two
 * directions cannot disagree about what a valid index is.
 */
#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byteorder.h"
#include "profile.h"
#include "store.h"

/* Offsets of the fixed header (FORMAT.md, "The index"). */
#define OFF_VERSION     8
#define OFF_HEADER_LEN  12
#define OFF_SIZE        16
#define OFF_BLOCK_SIZE  24
#define OFF_CODEC       28
#define OFF_HASH_ALG    29
#define OFF_FLAGS       30
#define OFF_NUM_BLOCKS  32
#define OFF_REVISION    40
#define OFF_CREATED     48
#define OFF_EXPIRES     56
#define OFF_RESERVED    64
#define RESERVED_LEN    32
#define HASH_ALG_SHA256 1

/* The fixed part of an index, as read by check_index_bytes. */
struct index_layout {
  uint32_t version;
  uint64_t size;
  uint32_t block_size;
  enum block_codec codec;
  uint64_t num_blocks;
  size_t name_off, name_len;
  size_t desc_off, desc_len;
  size_t table_off;
  size_t profile_off, profile_len;   /* 0, 0 if no profile section */
};

/* ------------------------------------------------------------------ */
/* Small validators. */

/* On-disk codec byte -> enum block_codec; CODEC_COUNT if unknown. */
static enum block_codec
codec_from_disk (uint8_t code)
{
  switch (code) {
  case 1: return CODEC_ZLIB;
  case 2: return CODEC_ZSTD;
  case 3: return CODEC_XZ;
  default: return CODEC_COUNT;
  }
}

/* enum block_codec -> on-disk codec byte; 0 if the format has none. */
static uint8_t
codec_to_disk (enum block_codec codec)
{
  switch (codec) {
  case CODEC_ZLIB: return 1;
  case CODEC_ZSTD: return 2;
  case CODEC_XZ: return 3;
  default: return 0;
  }
}

/* Length in bytes of the UTF-8 sequence starting at s[0..len), or 0
 * if it is not a valid, shortest-form encoding of a scalar value
 * (rejects overlongs, surrogates and values above U+10FFFF).  The code
 * point is stored in *cp. */
static size_t
utf8_decode_one (const unsigned char *s, size_t len, uint32_t *cp)
{
  static const uint32_t min_for_len[5] = { 0, 0, 0x80, 0x800, 0x10000 };
  size_t n, i;
  uint32_t c = s[0];

  if (c < 0x80) { *cp = c; return 1; }
  else if (c >= 0xC2 && c <= 0xDF) { n = 2; c &= 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; c &= 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; c &= 0x07; }
  else return 0;                     /* continuation byte, C0, C1, F5+ */
  if (n > len)
    return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min_for_len[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
    return 0;
  *cp = c;
  return n;
}

/* True if c is a Unicode control character (general category Cc). */
static bool
is_control (uint32_t c)
{
  return c < 0x20 || (c >= 0x7F && c <= 0x9F);
}

/* Check that s[0..len) is strict UTF-8 with no NUL and, if
 * no_controls, no control characters.  0, or -1 with err naming what
 * (e.g. "name") and the byte offset. */
static int
check_text (const unsigned char *s, size_t len, bool no_controls,
            const char *what, struct cloop_err *err)
{
  size_t i = 0, n;
  uint32_t c;

  while (i < len) {
    n = utf8_decode_one (s + i, len - i, &c);
    if (n == 0)
      return cloop_err_set (err, EINVAL, "store index: %s is not valid "
                            "UTF-8 (at byte %zu)", what, i);
    if (c == 0)
      return cloop_err_set (err, EINVAL, "store index: %s contains a NUL "
                            "byte (at byte %zu)", what, i);
    if (no_controls && is_control (c))
      return cloop_err_set (err, EINVAL, "store index: %s contains control "
                            "character U+%04" PRIX32 " (at byte %zu)",
                            what, c, i);
    i += n;
  }
  return 0;
}

/* Check block size, image size and block count together.  0, or -1
 * with err set. */
static int
check_geometry (uint64_t size, uint32_t bs, uint64_t num_blocks,
                struct cloop_err *err)
{
  uint64_t expect;

  if (size == 0)
    return cloop_err_set (err, EINVAL, "store index: image size is 0");
  if (bs < BLOCK_SIZE_ALIGN || bs % BLOCK_SIZE_ALIGN != 0 ||
      bs > BLOCK_SIZE_MAX)
    return cloop_err_set (err, EINVAL, "store index: block size %" PRIu32
                          " is not a multiple of %u between %u and %u",
                          bs, BLOCK_SIZE_ALIGN, BLOCK_SIZE_ALIGN,
                          BLOCK_SIZE_MAX);
  expect = size / bs + (size % bs != 0);
  if (num_blocks != expect)
    return cloop_err_set (err, EINVAL, "store index: %" PRIu64 " blocks "
                          "recorded, but image size %" PRIu64 " needs %"
                          PRIu64 " blocks of %" PRIu32 " bytes",
                          num_blocks, size, expect, bs);
  if (num_blocks > NUM_BLOCKS_MAX)
    return cloop_err_set (err, EINVAL, "store index: too many blocks (%"
                          PRIu64 ", limit %" PRIu64 ")", num_blocks,
                          (uint64_t) NUM_BLOCKS_MAX);
  return 0;
}

/* True if all len bytes at p are zero. */
static bool
all_zero (const unsigned char *p, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (p[i] != 0)
      return false;
  return true;
}

/* Check one block table entry (36 bytes at e) of block i.  0, or -1
 * with err set. */
static int
check_entry (const unsigned char *e, uint64_t i, uint64_t bound,
             struct cloop_err *err)
{
  bool zero_hash = all_zero (e, STORE_HASH_LEN);
  uint32_t length = load_be32 (e + STORE_HASH_LEN);

  if (zero_hash && length != 0)
    return cloop_err_set (err, EINVAL, "store index: block %" PRIu64
                          " has a zero hash but length %" PRIu32,
                          i, length);
  if (!zero_hash && length == 0)
    return cloop_err_set (err, EINVAL, "store index: block %" PRIu64
                          " has a hash but length 0", i);
  if (length > bound)
    return cloop_err_set (err, EINVAL, "store index: block %" PRIu64
                          ": compressed length %" PRIu32 " exceeds the "
                          "limit of %" PRIu64, i, length, bound);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Checking the bytes of an index. */

/* Check the fixed 96-byte header (len >= STORE_HEADER_LEN) and fill
 * the geometry of *lay.  0, or -1 with err set. */
static int
check_header (const unsigned char *b, struct index_layout *lay,
              struct cloop_err *err)
{
  uint32_t version = load_be32 (b + OFF_VERSION);
  uint32_t header_len = load_be32 (b + OFF_HEADER_LEN);
  uint16_t flags;

  if (memcmp (b, STORE_MAGIC, STORE_MAGIC_LEN) != 0)
    return cloop_err_set (err, EINVAL, "store index: bad magic");
  if (version != STORE_VERSION && version != STORE_VERSION_SECTIONS)
    return cloop_err_set (err, EINVAL, "store index: unsupported format "
                          "version %" PRIu32 " (this reader knows %d and %d)",
                          version, STORE_VERSION, STORE_VERSION_SECTIONS);
  lay->version = version;
  if (header_len != STORE_HEADER_LEN)
    return cloop_err_set (err, EINVAL, "store index: header length %"
                          PRIu32 ", expected %d", header_len,
                          STORE_HEADER_LEN);
  lay->size = load_be64 (b + OFF_SIZE);
  lay->block_size = load_be32 (b + OFF_BLOCK_SIZE);
  lay->num_blocks = load_be64 (b + OFF_NUM_BLOCKS);
  if (check_geometry (lay->size, lay->block_size, lay->num_blocks, err) == -1)
    return -1;
  lay->codec = codec_from_disk (b[OFF_CODEC]);
  if (lay->codec == CODEC_COUNT)
    return cloop_err_set (err, EINVAL, "store index: unknown codec %u",
                          b[OFF_CODEC]);
  if (b[OFF_HASH_ALG] != HASH_ALG_SHA256)
    return cloop_err_set (err, EINVAL, "store index: unknown hash "
                          "algorithm %u", b[OFF_HASH_ALG]);
  flags = (uint16_t) ((b[OFF_FLAGS] << 8) | b[OFF_FLAGS + 1]);
  if (flags != 0)
    return cloop_err_set (err, EINVAL, "store index: unknown flags 0x%04x",
                          flags);
  if (!all_zero (b + OFF_RESERVED, RESERVED_LEN))
    return cloop_err_set (err, EINVAL, "store index: reserved header "
                          "bytes are not zero");
  return 0;
}

/* Locate the name, description and table; check the exact total
 * length.  Needs the geometry from check_header.  0, or -1. */
static int
check_lengths (const unsigned char *b, size_t len, struct index_layout *lay,
               struct cloop_err *err)
{
  uint64_t total;

  if (len < STORE_HEADER_LEN + 2)
    return cloop_err_set (err, EINVAL, "store index: truncated (%zu bytes)",
                          len);
  lay->name_off = STORE_HEADER_LEN + 2;
  lay->name_len = (size_t) b[STORE_HEADER_LEN] << 8 | b[STORE_HEADER_LEN + 1];
  if (lay->name_len < 1 || lay->name_len > STORE_NAME_MAX)
    return cloop_err_set (err, EINVAL, "store index: name length %zu is "
                          "not between 1 and %d", lay->name_len,
                          STORE_NAME_MAX);
  if (len < lay->name_off + lay->name_len + 2)
    return cloop_err_set (err, EINVAL, "store index: truncated (%zu bytes)",
                          len);
  lay->desc_off = lay->name_off + lay->name_len + 2;
  lay->desc_len = (size_t) b[lay->desc_off - 2] << 8 | b[lay->desc_off - 1];
  if (lay->desc_len > STORE_DESC_MAX)
    return cloop_err_set (err, EINVAL, "store index: description length "
                          "%zu exceeds %d", lay->desc_len, STORE_DESC_MAX);
  lay->table_off = lay->desc_off + lay->desc_len;
  /* num_blocks <= 2^32, so this cannot overflow 64 bits. */
  total = lay->table_off + (uint64_t) STORE_ENTRY_LEN * lay->num_blocks;
  if (total > STORE_INDEX_MAX)
    return cloop_err_set (err, EINVAL, "store index: %" PRIu64 " bytes "
                          "for %" PRIu64 " blocks exceeds the limit of %u",
                          total, lay->num_blocks, STORE_INDEX_MAX);
  if (lay->version == STORE_VERSION_SECTIONS && len > total)
    return 0;                   /* check_sections reads the rest */
  if (lay->version == STORE_VERSION_SECTIONS)
    return cloop_err_set (err, EINVAL, "store index: version %d but no "
                          "section after the block table (%zu bytes)",
                          STORE_VERSION_SECTIONS, len);
  if (len != total)
    return cloop_err_set (err, EINVAL, "store index: %s (%zu bytes, "
                          "expected %" PRIu64 ")",
                          len < total ? "truncated" : "trailing bytes",
                          len, total);
  return 0;
}

/* Walk the sections of a version 2 index, from the end of the block
 * table to exactly len: each a 4-byte tag and a BE32 length; the only
 * tag known is "PROF", at most once.  Fills lay->profile_*.  0 or -1. */
static int
check_sections (const unsigned char *b, size_t len, struct index_layout *lay,
                struct cloop_err *err)
{
  size_t off = lay->table_off + STORE_ENTRY_LEN * lay->num_blocks, slen;

  if (len > STORE_INDEX_MAX)
    return cloop_err_set (err, EINVAL, "store index: %zu bytes exceeds the "
                          "limit of %u", len, STORE_INDEX_MAX);
  while (off < len) {
    const unsigned char *tag = b + off;
    if (len - off < STORE_SECTION_HEAD)
      return cloop_err_set (err, EINVAL, "store index: truncated section "
                            "header at byte %zu", off);
    slen = load_be32 (b + off + 4);
    if (slen > len - off - STORE_SECTION_HEAD)
      return cloop_err_set (err, EINVAL, "store index: section at byte %zu "
                            "is %zu bytes, only %zu remain", off, slen,
                            len - off - STORE_SECTION_HEAD);
    if (memcmp (tag, STORE_SECTION_PROFILE, 4) != 0)
      return cloop_err_set (err, EINVAL, "store index: unknown section "
                            "%02x%02x%02x%02x at byte %zu", tag[0], tag[1],
                            tag[2], tag[3], off);
    if (lay->profile_len != 0)
      return cloop_err_set (err, EINVAL, "store index: a second profile "
                            "section at byte %zu", off);
    if (slen == 0)
      return cloop_err_set (err, EINVAL, "store index: empty profile "
                            "section at byte %zu", off);
    lay->profile_off = off + STORE_SECTION_HEAD;
    lay->profile_len = slen;
    off += STORE_SECTION_HEAD + slen;
  }
  return 0;
}

/* Apply every rule of FORMAT.md to buf[0..len) without allocating.
 * On success fills *lay; 0, or -1 with err set (EINVAL). */
static int
check_index_bytes (const unsigned char *b, size_t len,
                   struct index_layout *lay, struct cloop_err *err)
{
  uint64_t bound, i;

  if (len < STORE_HEADER_LEN)
    return cloop_err_set (err, EINVAL, "store index: truncated (%zu bytes)",
                          len);
  lay->profile_off = lay->profile_len = 0;
  if (check_header (b, lay, err) == -1 ||
      check_lengths (b, len, lay, err) == -1)
    return -1;
  if (lay->version == STORE_VERSION_SECTIONS &&
      check_sections (b, len, lay, err) == -1)
    return -1;
  if (check_text (b + lay->name_off, lay->name_len, true, "name",
                  err) == -1 ||
      check_text (b + lay->desc_off, lay->desc_len, false, "description",
                  err) == -1)
    return -1;
  bound = block_map_length_bound (lay->block_size);
  for (i = 0; i < lay->num_blocks; i++)
    if (check_entry (b + lay->table_off + i * STORE_ENTRY_LEN, i, bound,
                     err) == -1)
      return -1;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Public functions. */

bool
store_probe_head (const void *head, size_t len)
{
  return len >= STORE_MAGIC_LEN &&
         memcmp (head, STORE_MAGIC, STORE_MAGIC_LEN) == 0;
}

/* Allocate an index with geometry already checked: zeroed entries,
 * empty name, a zeroed description buffer of desc_len + 1 bytes.
 * NULL with err set (ENOMEM). */
static struct store_index *
index_alloc (uint64_t size, uint32_t bs, enum block_codec codec,
             uint64_t num_blocks, size_t desc_len, struct cloop_err *err)
{
  struct store_index *idx = calloc (1, sizeof *idx);

  if (idx == NULL) {
    cloop_err_set (err, ENOMEM, "calloc: %m");
    return NULL;
  }
  idx->size = size;
  idx->block_size = bs;
  idx->codec = codec;
  idx->num_blocks = num_blocks;
  idx->description = calloc (1, desc_len + 1);
  idx->hashes = calloc (num_blocks, STORE_HASH_LEN);
  idx->lengths = calloc (num_blocks, sizeof (uint32_t));
  if (idx->description == NULL || idx->hashes == NULL ||
      idx->lengths == NULL) {
    cloop_err_set (err, ENOMEM, "cannot allocate a store index of %" PRIu64
                   " blocks: %m", num_blocks);
    store_index_free (idx);
    return NULL;
  }
  return idx;
}

struct store_index *
store_index_parse (const void *buf, size_t len, struct cloop_err *err)
{
  const unsigned char *b = buf;
  struct index_layout lay;
  struct store_index *idx;
  uint64_t i;

  if (check_index_bytes (b, len, &lay, err) == -1)
    return NULL;
  idx = index_alloc (lay.size, lay.block_size, lay.codec, lay.num_blocks,
                     lay.desc_len, err);
  if (idx == NULL)
    return NULL;
  memcpy (idx->description, b + lay.desc_off, lay.desc_len);
  memcpy (idx->name, b + lay.name_off, lay.name_len);
  idx->name[lay.name_len] = '\0';
  idx->revision = load_be64 (b + OFF_REVISION);
  idx->created = load_be64 (b + OFF_CREATED);
  idx->expires = load_be64 (b + OFF_EXPIRES);
  for (i = 0; i < lay.num_blocks; i++) {
    const unsigned char *e = b + lay.table_off + i * STORE_ENTRY_LEN;
    memcpy (idx->hashes + i * STORE_HASH_LEN, e, STORE_HASH_LEN);
    idx->lengths[i] = load_be32 (e + STORE_HASH_LEN);
  }
  if (lay.profile_len != 0 &&
      profile_decode (b + lay.profile_off, lay.profile_len, lay.num_blocks,
                      lay.block_size, &idx->profile, &idx->profile_len,
                      NULL, NULL, err) == -1) {
    cloop_err_prefix (err, "store index");
    store_index_free (idx);
    return NULL;
  }
  return idx;
}

struct store_index *
store_index_new (uint64_t size, uint32_t block_size,
                 enum block_codec codec, struct cloop_err *err)
{
  uint64_t num_blocks;

  if (block_size == 0) {
    cloop_err_set (err, EINVAL, "store index: block size is 0");
    return NULL;
  }
  num_blocks = size / block_size + (size % block_size != 0);
  if (check_geometry (size, block_size, num_blocks, err) == -1)
    return NULL;
  if (codec_to_disk (codec) == 0) {
    cloop_err_set (err, EINVAL, "store index: codec %s is not allowed in "
                   "a block store", codec_name (codec));
    return NULL;
  }
  /* The smallest index of this many blocks (1-byte name, no
   * description) must fit the limit readers enforce. */
  if (STORE_HEADER_LEN + 5 + STORE_ENTRY_LEN * num_blocks > STORE_INDEX_MAX) {
    cloop_err_set (err, EINVAL, "store index: %" PRIu64 " blocks would "
                   "exceed the index limit of %u bytes", num_blocks,
                   STORE_INDEX_MAX);
    return NULL;
  }
  return index_alloc (size, block_size, codec, num_blocks, 0, err);
}

void
store_index_free (struct store_index *idx)
{
  if (idx == NULL)
    return;
  free (idx->description);
  free (idx->hashes);
  free (idx->lengths);
  free (idx->profile);
  free (idx);
}

/* Check what must hold before idx can be serialized at all (the rest
 * is checked on the bytes).  Sets *name_len, *desc_len, *total. */
static int
check_writable (const struct store_index *idx, size_t *name_len,
                size_t *desc_len, size_t extra, uint64_t *total,
                struct cloop_err *err)
{
  if (idx->description == NULL)
    return cloop_err_set (err, EINVAL, "store index: description is NULL");
  *name_len = strnlen (idx->name, sizeof idx->name);
  *desc_len = strlen (idx->description);
  if (*name_len < 1 || *name_len > STORE_NAME_MAX)
    return cloop_err_set (err, EINVAL, "store index: name length %zu is "
                          "not between 1 and %d", *name_len, STORE_NAME_MAX);
  if (*desc_len > STORE_DESC_MAX)
    return cloop_err_set (err, EINVAL, "store index: description length "
                          "%zu exceeds %d", *desc_len, STORE_DESC_MAX);
  if (codec_to_disk (idx->codec) == 0)
    return cloop_err_set (err, EINVAL, "store index: codec %s is not "
                          "allowed in a block store",
                          codec_name (idx->codec));
  if (check_geometry (idx->size, idx->block_size, idx->num_blocks,
                      err) == -1)
    return -1;
  *total = STORE_HEADER_LEN + 4 + *name_len + *desc_len +
           (uint64_t) STORE_ENTRY_LEN * idx->num_blocks + extra;
  if (*total > STORE_INDEX_MAX)
    return cloop_err_set (err, EINVAL, "store index: %" PRIu64 " bytes "
                          "exceeds the limit of %u", *total,
                          STORE_INDEX_MAX);
  return 0;
}

/* Serialize the header of idx into b (STORE_HEADER_LEN bytes). */
static void
put_header (unsigned char *b, const struct store_index *idx)
{
  memset (b, 0, STORE_HEADER_LEN);
  memcpy (b, STORE_MAGIC, STORE_MAGIC_LEN);
  store_be32 (b + OFF_VERSION, idx->profile_len > 0 ? STORE_VERSION_SECTIONS
                                                    : STORE_VERSION);
  store_be32 (b + OFF_HEADER_LEN, STORE_HEADER_LEN);
  store_be64 (b + OFF_SIZE, idx->size);
  store_be32 (b + OFF_BLOCK_SIZE, idx->block_size);
  b[OFF_CODEC] = codec_to_disk (idx->codec);
  b[OFF_HASH_ALG] = HASH_ALG_SHA256;
  store_be64 (b + OFF_NUM_BLOCKS, idx->num_blocks);
  store_be64 (b + OFF_REVISION, idx->revision);
  store_be64 (b + OFF_CREATED, idx->created);
  store_be64 (b + OFF_EXPIRES, idx->expires);
}

int
store_index_write (const struct store_index *idx,
                   unsigned char **buf, size_t *len,
                   struct cloop_err *err)
{
  struct index_layout lay;
  size_t name_len = 0, desc_len = 0, off, prof_len = 0;
  uint64_t total = 0, i;
  unsigned char *b, *prof = NULL;

  if (idx->profile_len > 0 &&
      profile_encode (idx->profile, idx->profile_len, idx->num_blocks,
                      idx->block_size, &prof, &prof_len, err) == -1) {
    cloop_err_prefix (err, "store index");
    return -1;
  }
  if (check_writable (idx, &name_len, &desc_len,
                      prof ? STORE_SECTION_HEAD + prof_len : 0, &total,
                      err) == -1) {
    free (prof);
    return -1;
  }
  if ((b = malloc (total)) == NULL) {
    free (prof);
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  }
  put_header (b, idx);
  off = STORE_HEADER_LEN;
  b[off++] = name_len >> 8; b[off++] = name_len & 0xff;
  memcpy (b + off, idx->name, name_len);
  off += name_len;
  b[off++] = desc_len >> 8; b[off++] = desc_len & 0xff;
  memcpy (b + off, idx->description, desc_len);
  off += desc_len;
  for (i = 0; i < idx->num_blocks; i++, off += STORE_ENTRY_LEN) {
    memcpy (b + off, idx->hashes + i * STORE_HASH_LEN, STORE_HASH_LEN);
    store_be32 (b + off + STORE_HASH_LEN, idx->lengths[i]);
  }
  if (prof != NULL) {
    memcpy (b + off, STORE_SECTION_PROFILE, 4);
    store_be32 (b + off + 4, (uint32_t) prof_len);
    memcpy (b + off + STORE_SECTION_HEAD, prof, prof_len);
    free (prof);
  }
  if (check_index_bytes (b, total, &lay, err) == -1) {
    cloop_err_prefix (err, "refusing to write");
    free (b);
    return -1;
  }
  *buf = b;
  *len = total;
  return 0;
}

bool
store_index_is_zero (const struct store_index *idx, uint64_t i)
{
  return idx->lengths[i] == 0 &&
         all_zero (idx->hashes + i * STORE_HASH_LEN, STORE_HASH_LEN);
}

/* The map's entries need no container offsets (each block is its own
 * file, read from offset 0), so it is validated against an unbounded
 * container: the offset check then always passes and the length,
 * codec and geometry checks still apply. */
struct block_map *
store_index_to_map (const struct store_index *idx, struct cloop_err *err)
{
  struct block_map *map;
  uint64_t i;

  map = block_map_new (idx->num_blocks, idx->block_size, err);
  if (map == NULL)
    return NULL;
  snprintf (map->dialect, sizeof map->dialect, "block store v%d",
            idx->profile_len > 0 ? STORE_VERSION_SECTIONS : STORE_VERSION);
  map->size = idx->size;
  snprintf (map->name, sizeof map->name, "%s", idx->name);
  map->hash_len = STORE_HASH_LEN;
  map->objects_by_hash = true;
  map->hashes = malloc (idx->num_blocks * STORE_HASH_LEN);
  if (map->hashes == NULL) {
    cloop_err_set (err, ENOMEM, "malloc: %m");
    block_map_free (map);
    return NULL;
  }
  memcpy (map->hashes, idx->hashes, idx->num_blocks * STORE_HASH_LEN);
  map->revision = idx->revision;
  if (idx->profile_len > 0) {
    map->profile = malloc (idx->profile_len * sizeof *map->profile);
    if (map->profile == NULL) {
      cloop_err_set (err, ENOMEM, "malloc: %m");
      block_map_free (map);
      return NULL;
    }
    memcpy (map->profile, idx->profile,
            idx->profile_len * sizeof *map->profile);
    map->profile_len = idx->profile_len;
  }
  if (idx->description[0] &&
      (map->description = strdup (idx->description)) == NULL) {
    cloop_err_set (err, ENOMEM, "strdup: %m");
    block_map_free (map);
    return NULL;
  }
  for (i = 0; i < idx->num_blocks; i++) {
    struct block_entry *e = &map->entries[i];
    bool zero = store_index_is_zero (idx, i);
    e->offset = 0;
    e->codec = zero ? CODEC_ZERO : idx->codec;
    e->length = zero ? 0 : idx->lengths[i];
  }
  if (block_map_validate (map, UINT64_MAX, err) == -1) {
    cloop_err_prefix (err, "store index");
    block_map_free (map);
    return NULL;
  }
  return map;
}

void
store_hex (char out[65], const unsigned char hash[STORE_HASH_LEN])
{
  static const char digits[] = "0123456789abcdef";

  for (size_t i = 0; i < STORE_HASH_LEN; i++) {
    out[2 * i] = digits[hash[i] >> 4];
    out[2 * i + 1] = digits[hash[i] & 0xf];
  }
  out[64] = '\0';
}

void
store_block_path (char out[STORE_BLOCK_PATH_MAX],
                  const unsigned char hash[STORE_HASH_LEN])
{
  char hex[65];

  store_hex (hex, hash);
  /* "blocks/" 7 + "HH/" 3 + 64 + NUL = 75 <= STORE_BLOCK_PATH_MAX. */
  memcpy (out, "blocks/", 7);
  out[7] = hex[0];
  out[8] = hex[1];
  out[9] = '/';
  memcpy (out + 10, hex, 65);
}

/* Value of one hex digit (either case), or -1. */
static int
hex_value (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int
store_unhex (unsigned char hash[STORE_HASH_LEN], const char *hex)
{
  unsigned char tmp[STORE_HASH_LEN];

  for (size_t i = 0; i < STORE_HASH_LEN; i++) {
    int hi = hex_value (hex[2 * i]);
    int lo = hi < 0 ? -1 : hex_value (hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    tmp[i] = (unsigned char) (hi << 4 | lo);
  }
  if (hex[2 * STORE_HASH_LEN] != '\0')
    return -1;
  memcpy (hash, tmp, STORE_HASH_LEN);
  return 0;
}
