/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: cloop files of every dialect -> struct block_map.
 *
 * Detection follows research/formats.md section 1.9:
 *
 *  1. The signature at 0x0B of the first 136 bytes: "V2.0", "V4.0"
 *     (header first), "V1.0" (LE64 offsets), "V3.0" with num_blocks
 *     0xFFFFFFFF (SliTaz), or a FreeBSD letter (L, Z, or lower case
 *     v/l/z for dedup images).
 *  2. Otherwise the last 136 bytes: "V4.0"/"V2.0" at 0x0B means the
 *     header is last (the index sits right before it).
 *  3. Otherwise "\nCLOOP3\n" at EOF: dplasa's V3 footer.
 *  4. Otherwise 0.68 if the first BE32 offset is 4n + 0x8C.
 *
 * Knopper V2.0 and FreeBSD "#V2.0" are the same layout; only the
 * preamble text tells them apart (mkuzip's mounts a ".uzip" device).
 * Two rules follow from the writer (formats.md 1.3, 1.8):
 *
 *  - mkuzip writes an all-zero block as a zero-length one, so in
 *    FreeBSD images (#V2.0 whose preamble says uzip, #L3.0, #Z4.0 and
 *    the dedup variants) a zero-length block is CODEC_ZERO.  Knopper's
 *    tools never write one (an empty stream is not a valid block): in
 *    every other dialect it is an index fault (e.g. entry i+1 repeating
 *    entry i), kept in the map with its codec so that reading that
 *    block fails, not read as zeroes.
 *  - mkuzip pads its output with zero bytes after the last block's
 *    stream, to the next 512-byte boundary of the file offset: 1 to 512
 *    bytes up to FreeBSD 10 (always), 0 to 511 since.  Its off[n] is
 *    the start of that padding, but geom_uzip ends the last block at
 *    the media size, padding included.  So FreeBSD maps get pad_align
 *    512: zero bytes after any block's stream, up to the first 512-byte
 *    boundary after its end (at most 512), are accepted.  No other
 *    writer pads, so any byte after a stream is an error (pad_align 0).
 *
 * Every layout ends in the same place: a filled struct block_map checked
 * by block_map_validate.  Reads: the head (144 bytes), the tail when the
 * head is not conclusive, then the whole index in one read.  Nothing is
 * allocated in proportion to num_blocks before we know that the index
 * really is inside the file.
 */
#include <config.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byteorder.h"
#include "cloop.h"

#define HEAD_LEN     136u             /* preamble, block_size, num_blocks */
#define PROBE_LEN    (HEAD_LEN + 8)   /* plus the start of the index */
#define SIG_OFFSET   0x0B
#define SLITAZ_TAIL  8u               /* BE32 index_size, BE32 num_blocks */
#define DPLASA_TAIL  20u              /* BE64 index offset, BE32 version, magic */
#define DPLASA_MAGIC "\nCLOOP3\n"
#define V4_OFFSET_MASK UINT64_C (0x0FFFFFFFFFFFFFFF)

/* How to read an offset table: (n+1) offsets where block i is
 * [off[i], off[i+1]), the layout shared by 0.68, 1.0, V2.0, V4.0 and
 * the FreeBSD dialects. */
struct table_format {
  char dialect[32];
  unsigned word;            /* bytes per offset: 4 (0.68) or 8 */
  bool little_endian;       /* 1.0 */
  bool codec_nibble;        /* V4.0: top 4 bits of each word */
  bool zero_blocks;         /* zero-length block = CODEC_ZERO */
  bool dedup;               /* FreeBSD back-references allowed */
  uint32_t pad_align;       /* block_map.pad_align */
  enum block_codec codec;   /* codec when there is no nibble */
};

enum head_kind {
  HEAD_UNKNOWN,             /* look at the tail */
  HEAD_TABLE,               /* header first, offset table after it */
  HEAD_SLITAZ,              /* SliTaz V3.0, sizes at the end */
  HEAD_UNSUPPORTED,         /* cloop, but a version we cannot read */
};

/* ------------------------------------------------------------------ */
/* Small helpers. */

/* Read [offset, offset+len) into a new buffer after checking that the
 * range lies inside the container.  what names the range in messages. */
static unsigned char *
read_range (const struct byte_reader *r, uint64_t offset, uint64_t len,
            const char *what, struct cloop_err *err)
{
  unsigned char *buf;

  if (offset > r->size || len > r->size - offset) {
    cloop_err_set (err, EINVAL, "%s (%" PRIu64 " bytes at offset %" PRIu64
                   ") lies outside the file (%" PRIu64 " bytes)",
                   what, len, offset, r->size);
    return NULL;
  }
  if (len > SIZE_MAX) {
    cloop_err_set (err, ENOMEM, "%s is too large", what);
    return NULL;
  }
  buf = malloc (len ? len : 1);
  if (buf == NULL) {
    cloop_err_set (err, ENOMEM, "cannot allocate %" PRIu64 " bytes for %s",
                   len, what);
    return NULL;
  }
  if (len > 0 && r->pread (r->opaque, buf, len, offset, err) == -1) {
    free (buf);
    return NULL;
  }
  return buf;
}


/* Store block i, checking its length against the codec bound (the
 * entry's length field is only 32 bits wide).  A zero length is
 * CODEC_ZERO if zero_blocks, else kept as it is (reading it fails). */
static int
set_entry (struct block_map *map, uint64_t i, uint64_t offset,
           uint64_t length, enum block_codec codec, bool zero_blocks,
           struct cloop_err *err)
{
  uint64_t bound = block_map_length_bound (map->block_size);

  if (length == 0 && zero_blocks)
    codec = CODEC_ZERO;
  if (length > bound)
    return cloop_err_set (err, EINVAL, "block %" PRIu64 ": compressed length %"
                          PRIu64 " exceeds the limit of %" PRIu64,
                          i, length, bound);
  map->entries[i].offset = offset;
  map->entries[i].length = (uint32_t) length;
  map->entries[i].codec = codec;
  return 0;
}

/* Knopper V4.0 codec nibble -> our codec, or -1. */
static int
v4_codec (unsigned nibble)
{
  static const enum block_codec codecs[] = {
    CODEC_ZLIB, CODEC_NONE, CODEC_XZ, CODEC_LZ4, CODEC_LZO,
  };

  return nibble < sizeof codecs / sizeof codecs[0] ? (int) codecs[nibble] : -1;
}

/* ------------------------------------------------------------------ */
/* Offset tables (0.68, 1.0, V2.0, V4.0, FreeBSD). */

static uint64_t
table_word (const struct table_format *f, const unsigned char *idx,
            uint64_t i)
{
  const unsigned char *p = idx + i * f->word;

  if (f->word == 4)
    return load_be32 (p);
  return f->little_endian ? load_le64 (p) : load_be64 (p);
}

static uint64_t
table_offset (const struct table_format *f, const unsigned char *idx,
              uint64_t i)
{
  uint64_t w = table_word (f, idx, i);

  return f->codec_nibble ? w & V4_OFFSET_MASK : w;
}

/* Plain tables: offsets never decrease, block i ends where i+1 starts. */
static int
fill_linear (struct block_map *map, const struct table_format *f,
             const unsigned char *idx, struct cloop_err *err)
{
  uint64_t i, start, end;
  int codec;

  for (i = 0; i < map->num_blocks; i++) {
    start = table_offset (f, idx, i);
    end = table_offset (f, idx, i + 1);
    if (end < start)
      return cloop_err_set (err, EINVAL, "offsets not monotonic: block %"
                            PRIu64 " starts at %" PRIu64 " but block %"
                            PRIu64 " at %" PRIu64, i, start, i + 1, end);
    codec = f->codec;
    if (f->codec_nibble) {
      unsigned nibble = table_word (f, idx, i) >> 60;
      codec = v4_codec (nibble);
      if (codec == -1)
        return cloop_err_set (err, EINVAL, "unknown codec %u in block %"
                              PRIu64, nibble, i);
    }
    if (set_entry (map, i, start, end - start, codec, f->zero_blocks,
                   err) == -1)
      return -1;
  }
  return 0;
}

/* In fwd[0..nfwd), forward blocks in offset order, find the last one
 * starting at offset; returns its block number or -1. */
static int64_t
find_forward (const struct block_map *map, const uint32_t *fwd,
              uint64_t nfwd, uint64_t offset)
{
  uint64_t lo = 0, hi = nfwd;       /* first index with offset > target */

  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (map->entries[fwd[mid]].offset <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || map->entries[fwd[lo - 1]].offset != offset)
    return -1;
  return fwd[lo - 1];
}

/* FreeBSD dedup tables (as geom_uzip reads them): a "forward" block
 * starts at or after the start of the previous forward block and ends
 * where the next forward block (or off[n]) starts; an offset below the
 * start of the pending forward block is a back-reference to the
 * earlier, non-empty forward block at exactly that offset.  Forward
 * offsets never decrease, so a binary search over them finds the
 * target in O(log n). */
static int
fill_dedup (struct block_map *map, const struct table_format *f,
            const unsigned char *idx, struct cloop_err *err)
{
  uint64_t n = map->num_blocks, nfwd = 0, pending = 0, i;
  uint32_t *fwd;
  int r = -1;

  if (n == 0)
    return 0;
  fwd = malloc (n * sizeof *fwd);
  if (fwd == NULL)
    return cloop_err_set (err, ENOMEM, "cannot allocate dedup table: %m");
  map->entries[0].offset = table_offset (f, idx, 0);
  for (i = 1; i <= n; i++) {
    uint64_t off = table_offset (f, idx, i);
    uint64_t start = map->entries[pending].offset;
    int64_t target;

    if (off >= start) {             /* closes the pending forward block */
      if (set_entry (map, pending, start, off - start, f->codec, true,
                     err) == -1)
        goto out;
      fwd[nfwd++] = pending;
      if (i < n) {
        pending = i;
        map->entries[i].offset = off;
      }
      continue;
    }
    if (i == n) {
      cloop_err_set (err, EINVAL, "end of data %" PRIu64 " lies before block %"
                     PRIu64 " at %" PRIu64, off, pending, start);
      goto out;
    }
    target = find_forward (map, fwd, nfwd, off);
    if (target == -1 || map->entries[target].codec == CODEC_ZERO) {
      cloop_err_set (err, EINVAL, "block %" PRIu64 ": back-reference to "
                     "offset %" PRIu64 " matches no earlier block", i, off);
      goto out;
    }
    map->entries[i] = map->entries[target];
  }
  r = 0;
 out:
  free (fwd);
  return r;
}

/* Read the (n+1)-entry table at index_off and build the map. */
static struct block_map *
open_table (const struct byte_reader *r, uint32_t bs, uint64_t n,
            uint64_t index_off, const struct table_format *f,
            struct cloop_err *err)
{
  struct block_map *map;
  unsigned char *idx;
  int ret;

  if (block_map_check_geometry (bs, n, err) == -1)
    return NULL;
  /* read_range checks that the index is inside the file before any
   * allocation proportional to n. */
  idx = read_range (r, index_off, (n + 1) * f->word, "index", err);
  if (idx == NULL)
    return NULL;
  map = block_map_new (n, bs, err);
  if (map == NULL) {
    free (idx);
    return NULL;
  }
  /* No table dialect records the image's length, and the 5.3 driver
   * takes a short last block as it comes (formats.md 1.4): accept one,
   * zero-filled.  Must be set before validation (raw blocks). */
  map->short_last = true;
  map->pad_align = f->pad_align;
  ret = f->dedup ? fill_dedup (map, f, idx, err)
                 : fill_linear (map, f, idx, err);
  free (idx);
  if (ret == -1 || block_map_validate (map, r->size, err) == -1) {
    block_map_free (map);
    return NULL;
  }
  snprintf (map->dialect, sizeof map->dialect, "%s", f->dialect);
  return map;
}

/* ------------------------------------------------------------------ */
/* Header-first signatures. */

static void
table_format_init (struct table_format *f, const char *dialect,
                   enum block_codec codec)
{
  memset (f, 0, sizeof *f);
  snprintf (f->dialect, sizeof f->dialect, "%s", dialect);
  f->word = 8;
  f->codec = codec;
}

/* mkuzip's rules: zero-length blocks are zeroes, zero padding to a
 * 512-byte boundary may follow a stream. */
static void
set_freebsd_rules (struct table_format *f)
{
  f->zero_blocks = true;
  f->pad_align = 512;
}

/* Does a "#V..." preamble say uzip (FreeBSD's mkuzip wrote it)? */
static bool
says_uzip (const unsigned char *head, size_t head_len)
{
  return head_len >= 128 && memmem (head, 128, "uzip", 4) != NULL;
}

/* FreeBSD letters other than 'V': L/l (xz), Z/z (zstd), v (zlib),
 * followed by a version digit and '.'.  Lower case is dedup from
 * version 3 on (mkuzip -d writes "#v3.0", "#l3.0", "#z4.0"). */
static enum head_kind
classify_freebsd (const unsigned char *sig, struct table_format *f)
{
  char letter = sig[0], version = sig[1];
  char name[32];
  enum block_codec codec;
  char min_version;

  switch (letter) {
  case 'v':           codec = CODEC_ZLIB; min_version = '2'; break;
  case 'L': case 'l': codec = CODEC_XZ;   min_version = '3'; break;
  case 'Z': case 'z': codec = CODEC_ZSTD; min_version = '4'; break;
  default: return HEAD_UNKNOWN;
  }
  if (version < '0' || version > '9' || sig[2] != '.')
    return HEAD_UNKNOWN;
  if (version < min_version)
    return HEAD_UNSUPPORTED;
  snprintf (name, sizeof name, "FreeBSD uzip #%.4s%s", (const char *) sig,
            letter >= 'a' && version >= '3' ? " (dedup)" : "");
  table_format_init (f, name, codec);
  set_freebsd_rules (f);
  f->dedup = letter >= 'a' && version >= '3';
  return HEAD_TABLE;
}

/* Look at the signature of a header-first image.  head_len >= 0x0F. */
static enum head_kind
classify_head (const unsigned char *head, size_t head_len,
               struct table_format *f)
{
  const unsigned char *sig = head + SIG_OFFSET;
  bool uzip = says_uzip (head, head_len);

  if (sig[0] != 'V')
    return classify_freebsd (sig, f);
  if (sig[2] != '.' || sig[3] != '0')
    return HEAD_UNKNOWN;
  switch (sig[1]) {
  case '1':
    table_format_init (f, "cloop 1.0 (LE64 offsets)", CODEC_ZLIB);
    f->little_endian = true;
    return HEAD_TABLE;
  case '2':
    table_format_init (f, uzip ? "FreeBSD uzip #V2.0" : "cloop V2.0",
                       CODEC_ZLIB);
    if (uzip)
      set_freebsd_rules (f);
    return HEAD_TABLE;
  case '3':
    /* SliTaz marks its streaming layout with num_blocks = ~0; any other
     * "V3.0" is read as geom_uzip would, as a V2.0 layout. */
    if (head_len >= HEAD_LEN && load_be32 (head + 0x84) == UINT32_MAX)
      return HEAD_SLITAZ;
    table_format_init (f, "cloop V3.0 (V2.0 layout)", CODEC_ZLIB);
    if (uzip)
      set_freebsd_rules (f);
    return HEAD_TABLE;
  case '4':
    table_format_init (f, "cloop V4.0", CODEC_ZLIB);
    f->codec_nibble = true;
    return HEAD_TABLE;
  default:
    return sig[1] >= '0' && sig[1] <= '9' ? HEAD_UNSUPPORTED : HEAD_UNKNOWN;
  }
}

/* 0.68: no signature, BE32 offsets, the first of which is 4n + 0x8C. */
static bool
is_v068 (const unsigned char *head, size_t head_len)
{
  if (head_len < HEAD_LEN + 4 || head[SIG_OFFSET] == 'V')
    return false;
  return load_be32 (head + HEAD_LEN) ==
    (uint64_t) load_be32 (head + 0x84) * 4 + 0x8C;
}

bool
cloop_probe_head (const void *head, size_t head_len)
{
  struct table_format f;
  enum head_kind kind;

  if (head_len < SIG_OFFSET + 4)
    return false;
  kind = classify_head (head, head_len, &f);
  if (kind == HEAD_TABLE || kind == HEAD_SLITAZ)
    return true;
  return kind == HEAD_UNKNOWN && is_v068 (head, head_len);
}

/* ------------------------------------------------------------------ */
/* Layouts with the index at the end. */

/* SliTaz/fusecloop V3.0: blocks packed from 136, then n BE32 sizes,
 * then the 8-byte tail {BE32 entry size (4), BE32 n}. */
static struct block_map *
open_slitaz (const struct byte_reader *r, const unsigned char *head,
             struct cloop_err *err)
{
  unsigned char *tail, *idx;
  struct block_map *map = NULL;
  uint32_t bs = load_be32 (head + 0x80), entry_size;
  uint64_t n, i, offset = HEAD_LEN, index_off;

  if (r->size < HEAD_LEN + SLITAZ_TAIL)
    return cloop_err_set (err, EINVAL, "truncated file (%" PRIu64
                          " bytes)", r->size), NULL;
  tail = read_range (r, r->size - SLITAZ_TAIL, SLITAZ_TAIL, "tail", err);
  if (tail == NULL)
    return NULL;
  entry_size = load_be32 (tail);
  n = load_be32 (tail + 4);
  free (tail);
  if (entry_size != 4)
    return cloop_err_set (err, EINVAL, "SliTaz V3.0: unsupported index "
                          "entry size %" PRIu32, entry_size), NULL;
  if (block_map_check_geometry (bs, n, err) == -1)
    return NULL;
  if (4 * n > r->size - HEAD_LEN - SLITAZ_TAIL)
    return cloop_err_set (err, EINVAL, "index (%" PRIu64 " blocks) lies "
                          "outside the file (%" PRIu64 " bytes)",
                          n, r->size), NULL;
  index_off = r->size - SLITAZ_TAIL - 4 * n;
  idx = read_range (r, index_off, 4 * n, "index", err);
  if (idx == NULL || (map = block_map_new (n, bs, err)) == NULL)
    goto fail;
  map->short_last = true;       /* as for the table dialects */
  for (i = 0; i < n; i++) {
    uint32_t len = load_be32 (idx + 4 * i);
    if (set_entry (map, i, offset, len, CODEC_ZLIB, false, err) == -1)
      goto fail;
    offset += len;
  }
  if (offset > index_off) {
    cloop_err_set (err, EINVAL, "block data (ending at %" PRIu64 ") overlaps "
                   "the index at %" PRIu64, offset, index_off);
    goto fail;
  }
  if (block_map_validate (map, r->size, err) == -1)
    goto fail;
  free (idx);
  snprintf (map->dialect, sizeof map->dialect, "SliTaz cloop V3.0");
  return map;
 fail:
  free (idx);
  block_map_free (map);
  return NULL;
}

/* dplasa V3 per-block flags -> codec, or -1 if ambiguous. */
static int
dplasa_codec (uint32_t flags)
{
  static const struct { uint32_t bit; enum block_codec codec; } bits[] = {
    { 1u << 1, CODEC_ZLIB }, { 1u << 2, CODEC_LZO },
    { 1u << 3, CODEC_XZ },   { 1u << 4, CODEC_LZ4 },
  };
  int codec = CODEC_NONE;

  for (size_t k = 0; k < sizeof bits / sizeof bits[0]; k++) {
    if (flags & bits[k].bit) {
      if (codec != CODEC_NONE)
        return -1;
      codec = bits[k].codec;
    }
  }
  return codec;
}

/* Fill a dplasa map from its index: header at idx, (n+1) BE64 offsets,
 * n BE32 flags; set the exported size to the recorded original size. */
static int
fill_dplasa (struct block_map *map, const unsigned char *idx,
             struct cloop_err *err)
{
  uint64_t n = map->num_blocks, i, orig = load_be64 (idx + 8);
  const unsigned char *offs = idx + 16, *flags = offs + 8 * (n + 1);

  if (orig > n * map->block_size ||
      (n > 0 && orig <= (n - 1) * map->block_size) || (n == 0 && orig != 0))
    return cloop_err_set (err, EINVAL, "original size %" PRIu64 " does not "
                          "match %" PRIu64 " blocks of %" PRIu32 " bytes",
                          orig, n, map->block_size);
  /* dplasa's writer compresses (or stores) a full block even for the
   * last, short one. */
  map->size = orig;
  map->padded_last = true;
  for (i = 0; i < n; i++) {
    uint64_t start = load_be64 (offs + 8 * i), end = load_be64 (offs + 8 * i + 8);
    uint32_t fl = load_be32 (flags + 4 * i);
    int codec = dplasa_codec (fl);

    if (end < start)
      return cloop_err_set (err, EINVAL, "offsets not monotonic: block %"
                            PRIu64 " starts at %" PRIu64 " but block %"
                            PRIu64 " at %" PRIu64, i, start, i + 1, end);
    if (codec == -1)
      return cloop_err_set (err, EINVAL, "block %" PRIu64 " has several "
                            "codec flags (0x%" PRIx32 ")", i, fl);
    if (set_entry (map, i, start, end - start, codec, false, err) == -1)
      return -1;
  }
  return 0;
}

/* dplasa V3: the last 20 bytes give the index offset X; the index
 * {BE32 n, BE32 bs, BE64 original size, (n+1) BE64 offsets, n BE32
 * flags} runs from X to the footer, so its length gives n and the
 * whole index is one read. */
static struct block_map *
open_dplasa (const struct byte_reader *r, const unsigned char *footer,
             struct cloop_err *err)
{
  uint64_t x = load_be64 (footer), idx_len, n;
  uint32_t version = load_be32 (footer + 8), bs;
  unsigned char *idx;
  struct block_map *map;

  if (version != 3)
    return cloop_err_set (err, EINVAL, "dplasa V3: unsupported version %"
                          PRIu32, version), NULL;
  if (x > r->size - DPLASA_TAIL)
    return cloop_err_set (err, EINVAL, "index offset %" PRIu64 " lies "
                          "outside the file (%" PRIu64 " bytes)",
                          x, r->size), NULL;
  idx_len = r->size - DPLASA_TAIL - x;
  if (idx_len < 24 || (idx_len - 24) % 12 != 0)
    return cloop_err_set (err, EINVAL, "dplasa V3: index length %" PRIu64
                          " fits no block count", idx_len), NULL;
  n = (idx_len - 24) / 12;
  idx = read_range (r, x, idx_len, "index", err);
  if (idx == NULL)
    return NULL;
  bs = load_be32 (idx + 4);
  if (load_be32 (idx) != n) {
    cloop_err_set (err, EINVAL, "dplasa V3: index says %" PRIu32 " blocks, "
                   "its length implies %" PRIu64, load_be32 (idx), n);
    free (idx);
    return NULL;
  }
  map = block_map_check_geometry (bs, n, err) == -1
        ? NULL : block_map_new (n, bs, err);
  if (map != NULL && (fill_dplasa (map, idx, err) == -1 ||
                      block_map_validate (map, r->size, err) == -1)) {
    block_map_free (map);
    map = NULL;
  }
  free (idx);
  if (map != NULL)
    snprintf (map->dialect, sizeof map->dialect, "dplasa cloop V3 (footer)");
  return map;
}

/* Header-last V4.0/V2.0: the last 136 bytes are the header, the index
 * is right before it. */
static struct block_map *
open_header_last (const struct byte_reader *r, const unsigned char *hdr,
                  struct cloop_err *err)
{
  struct table_format f;
  uint32_t bs = load_be32 (hdr + 0x80);
  uint64_t n = load_be32 (hdr + 0x84);
  bool v4 = hdr[SIG_OFFSET + 1] == '4';

  table_format_init (&f, v4 ? "cloop V4.0 (header last)"
                            : "cloop V2.0 (header last)", CODEC_ZLIB);
  f.codec_nibble = v4;         /* mkuzip never puts the header last */
  if (block_map_check_geometry (bs, n, err) == -1)
    return NULL;
  if (8 * (n + 1) > r->size - HEAD_LEN)
    return cloop_err_set (err, EINVAL, "index (%" PRIu64 " blocks) lies "
                          "outside the file (%" PRIu64 " bytes)",
                          n, r->size), NULL;
  return open_table (r, bs, n, r->size - HEAD_LEN - 8 * (n + 1), &f, err);
}

/* ------------------------------------------------------------------ */

/* No header-first signature: try the tail (header last, dplasa), then
 * 0.68. */
static struct block_map *
open_by_tail (const struct byte_reader *r, const unsigned char *head,
              size_t head_len, struct cloop_err *err)
{
  size_t tail_len = r->size < HEAD_LEN ? r->size : HEAD_LEN;
  unsigned char tail[HEAD_LEN];
  struct table_format f;

  if (r->pread (r->opaque, tail, tail_len, r->size - tail_len, err) == -1)
    return NULL;
  if (tail_len == HEAD_LEN && (memcmp (tail + SIG_OFFSET, "V4.0", 4) == 0 ||
                               memcmp (tail + SIG_OFFSET, "V2.0", 4) == 0))
    return open_header_last (r, tail, err);
  if (tail_len >= DPLASA_TAIL &&
      memcmp (tail + tail_len - 8, DPLASA_MAGIC, 8) == 0)
    return open_dplasa (r, tail + tail_len - DPLASA_TAIL, err);
  if (is_v068 (head, head_len)) {
    table_format_init (&f, "cloop 0.68 (BE32 offsets)", CODEC_ZLIB);
    f.word = 4;
    return open_table (r, load_be32 (head + 0x80), load_be32 (head + 0x84),
                       HEAD_LEN, &f, err);
  }
  if (r->size < HEAD_LEN)
    cloop_err_set (err, EINVAL, "not a cloop image (file too short: %"
                   PRIu64 " bytes)", r->size);
  else
    cloop_err_set (err, EINVAL, "not a cloop image");
  return NULL;
}

struct block_map *
cloop_open (const struct byte_reader *r, struct cloop_err *err)
{
  unsigned char head[PROBE_LEN];
  size_t head_len = r->size < PROBE_LEN ? r->size : PROBE_LEN;
  struct table_format f;
  enum head_kind kind = HEAD_UNKNOWN;

  if (r->size == 0)
    return cloop_err_set (err, EINVAL, "empty file"), NULL;
  if (r->pread (r->opaque, head, head_len, 0, err) == -1)
    return NULL;
  if (head_len >= SIG_OFFSET + 4)
    kind = classify_head (head, head_len, &f);
  if (kind != HEAD_UNKNOWN && head_len < HEAD_LEN)
    return cloop_err_set (err, EINVAL, "truncated file (%" PRIu64 " bytes, "
                          "the header alone is %u)", r->size, HEAD_LEN), NULL;
  switch (kind) {
  case HEAD_TABLE:
    return open_table (r, load_be32 (head + 0x80), load_be32 (head + 0x84),
                       HEAD_LEN, &f, err);
  case HEAD_SLITAZ:
    return open_slitaz (r, head, err);
  case HEAD_UNSUPPORTED:
    return cloop_err_set (err, EINVAL, "unsupported cloop version \"%.4s\"",
                          (const char *) head + SIG_OFFSET), NULL;
  case HEAD_UNKNOWN:
    break;
  }
  return open_by_tail (r, head, head_len, err);
}
