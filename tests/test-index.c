/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/ (cloop dialects -> block maps).
 *
 * Builds small images of every dialect in memory, reads them through a
 * memory byte_reader and checks the resulting maps; then feeds hostile
 * headers and checks that each is refused with a message.  Block
 * payloads are filler bytes: only the index is under test here.
 * Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "byteorder.h"
#include "cloop.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

/* ------------------------------------------------------------------ */
/* An image under construction, and a reader over it. */

struct image {
  unsigned char *buf;
  size_t len;
  size_t cap;
};

struct mem_reader {
  const struct image *img;
  unsigned reads;          /* pread calls */
  size_t max_read;         /* largest single read */
};

static void
put (struct image *img, const void *data, size_t len)
{
  if (img->len + len > img->cap) {
    img->cap = (img->len + len) * 2;
    img->buf = realloc (img->buf, img->cap);
    if (img->buf == NULL) {
      perror ("realloc");
      exit (1);
    }
  }
  memcpy (img->buf + img->len, data, len);
  img->len += len;
}

static void
put_be32 (struct image *img, uint32_t v)
{
  unsigned char b[4];
  store_be32 (b, v);
  put (img, b, 4);
}

static void
put_be64 (struct image *img, uint64_t v)
{
  unsigned char b[8];
  store_be64 (b, v);
  put (img, b, 8);
}

static void
put_le64 (struct image *img, uint64_t v)
{
  unsigned char b[8];
  store_le64 (b, v);
  put (img, b, 8);
}

/* len filler bytes (what the payload is does not matter here). */
static void
put_fill (struct image *img, size_t len)
{
  for (size_t i = 0; i < len; i++) {
    unsigned char c = 0xA5 ^ (unsigned char) i;
    put (img, &c, 1);
  }
}

/* 136-byte cloop header with sig ("V2.0", ...) at 0x0B, or no
 * signature if sig is NULL (0.68). */
static void
put_header (struct image *img, const char *sig, uint32_t bs, uint32_t n)
{
  char pre[128];

  memset (pre, 0, sizeof pre);
  if (sig)
    snprintf (pre, sizeof pre, "#!/bin/sh\n#%s Format\nexit 0\n", sig);
  else
    snprintf (pre, sizeof pre, "#!/bin/sh\ninsmod cloop.o file=$0\n");
  put (img, pre, sizeof pre);
  put_be32 (img, bs);
  put_be32 (img, n);
}

static int
mem_pread (void *opaque, void *buf, size_t len, uint64_t offset,
           struct cloop_err *err)
{
  struct mem_reader *m = opaque;

  m->reads++;
  if (len > m->max_read)
    m->max_read = len;
  if (offset > m->img->len || len > m->img->len - offset)
    return cloop_err_set (err, EIO, "read beyond end (%zu at %" PRIu64 ")",
                          len, offset);
  memcpy (buf, m->img->buf + offset, len);
  return 0;
}

/* Open img; on failure print the message. */
static struct block_map *
open_image (const struct image *img, struct mem_reader *m,
            struct cloop_err *err)
{
  struct byte_reader r = { m, img->len, mem_pread };

  memset (m, 0, sizeof *m);
  m->img = img;
  memset (err, 0, sizeof *err);
  return cloop_open (&r, err);
}

/* Expect a map whose blocks have the given lengths (a zero length
 * expects CODEC_ZERO) and codecs, laid out from first_offset. */
static struct block_map *
expect_map (const char *what, const struct image *img, const char *dialect,
            uint32_t bs, uint64_t size, size_t n, const uint32_t *lengths,
            const uint8_t *codecs, uint64_t first_offset)
{
  struct mem_reader m;
  struct cloop_err err;
  struct block_map *map = open_image (img, &m, &err);
  uint64_t off = first_offset;

  printf ("%-34s ", what);
  if (map == NULL) {
    printf ("FAIL: %s\n", err.msg);
    check_failures++;
    return NULL;
  }
  printf ("ok: \"%s\", %" PRIu64 " blocks, %u reads\n",
          map->dialect, map->num_blocks, m.reads);
  CHECK (strcmp (map->dialect, dialect) == 0);
  CHECK (map->block_size == bs);
  CHECK (map->num_blocks == n);
  CHECK (map->size == size);
  CHECK (m.reads <= 3);
  for (size_t i = 0; i < n && i < map->num_blocks; i++) {
    const struct block_entry *e = &map->entries[i];
    if (lengths[i] == 0) {
      CHECK (e->codec == CODEC_ZERO);
      continue;
    }
    CHECK (e->offset == off);
    CHECK (e->length == lengths[i]);
    CHECK (e->codec == codecs[i]);
    if (e->offset != off || e->length != lengths[i] || e->codec != codecs[i])
      fprintf (stderr, "  block %zu: %" PRIu64 "+%" PRIu32 " %s\n", i,
               e->offset, e->length, codec_name (e->codec));
    off += lengths[i];
  }
  return map;
}

/* Expect cloop_open to refuse img with a message containing needle. */
static void
expect_error (const char *what, const struct image *img, const char *needle)
{
  struct mem_reader m;
  struct cloop_err err;
  struct block_map *map = open_image (img, &m, &err);

  printf ("%-34s ", what);
  if (map != NULL) {
    printf ("FAIL: accepted as \"%s\"\n", map->dialect);
    block_map_free (map);
    check_failures++;
    return;
  }
  printf ("refused: %s\n", err.msg);
  CHECK (err.errnum != 0);
  CHECK (strchr (err.msg, '\n') == NULL);
  if (strstr (err.msg, needle) == NULL) {
    fprintf (stderr, "  FAIL: message lacks \"%s\"\n", needle);
    check_failures++;
  }
  /* Never read more than the image: a hostile header must not make us
   * allocate beyond what the file holds. */
  CHECK (m.max_read <= img->len);
}

static void
image_free (struct image *img)
{
  free (img->buf);
  img->buf = NULL;
  img->len = img->cap = 0;
}

/* ------------------------------------------------------------------ */
/* Builders. */

#define BS 65536u

/* Header-first table image: header, (n+1) offsets, data. word 4/8, le. */
static struct image
make_table (const char *sig, uint32_t bs, size_t n, const uint32_t *lens,
            const uint8_t *nibbles, unsigned word, bool le)
{
  struct image img = { NULL, 0, 0 };
  uint64_t off = 136 + (uint64_t) word * (n + 1);

  put_header (&img, sig, bs, n);
  for (size_t i = 0; i <= n; i++) {
    uint64_t w = off | (nibbles && i < n ? (uint64_t) nibbles[i] << 60 : 0);
    if (word == 4)
      put_be32 (&img, off);
    else if (le)
      put_le64 (&img, w);
    else
      put_be64 (&img, w);
    if (i < n)
      off += lens[i];
  }
  for (size_t i = 0; i < n; i++)
    put_fill (&img, lens[i]);
  return img;
}

/* V4.0/V2.0 with the header last. */
static struct image
make_header_last (const char *sig, uint32_t bs, size_t n,
                  const uint32_t *lens, const uint8_t *nibbles)
{
  struct image img = { NULL, 0, 0 };
  uint64_t off = 0;

  for (size_t i = 0; i < n; i++)
    put_fill (&img, lens[i]);
  for (size_t i = 0; i <= n; i++) {
    put_be64 (&img, off | (nibbles && i < n ? (uint64_t) nibbles[i] << 60 : 0));
    if (i < n)
      off += lens[i];
  }
  put_header (&img, sig, bs, n);
  return img;
}

static struct image
make_slitaz (uint32_t bs, size_t n, const uint32_t *lens)
{
  struct image img = { NULL, 0, 0 };

  put_header (&img, "V3.0", bs, UINT32_MAX);
  for (size_t i = 0; i < n; i++)
    put_fill (&img, lens[i]);
  for (size_t i = 0; i < n; i++)
    put_be32 (&img, lens[i]);
  put_be32 (&img, 4);
  put_be32 (&img, n);
  return img;
}

static struct image
make_dplasa (uint32_t bs, uint64_t orig, size_t n, const uint32_t *lens,
             const uint32_t *flags)
{
  struct image img = { NULL, 0, 0 };
  uint64_t off = 0, x;

  for (size_t i = 0; i < n; i++)
    put_fill (&img, lens[i]);
  put_fill (&img, (4096 - img.len % 4096) % 4096);
  x = img.len;
  put_be32 (&img, n);
  put_be32 (&img, bs);
  put_be64 (&img, orig);
  for (size_t i = 0; i <= n; i++) {
    put_be64 (&img, off);
    if (i < n)
      off += lens[i];
  }
  for (size_t i = 0; i < n; i++)
    put_be32 (&img, flags[i]);
  put_be64 (&img, x);
  put_be32 (&img, 3);
  put (&img, "\nCLOOP3\n", 8);
  return img;
}

/* FreeBSD dedup: explicit offsets (n+1 of them), data of data_len. */
static struct image
make_offsets (const char *sig, uint32_t bs, size_t n, const uint64_t *offs,
              size_t data_len)
{
  struct image img = { NULL, 0, 0 };

  put_header (&img, sig, bs, n);
  for (size_t i = 0; i <= n; i++)
    put_be64 (&img, offs[i]);
  put_fill (&img, data_len);
  return img;
}

/* ------------------------------------------------------------------ */
/* Good images of every dialect. */

static const uint32_t lens5[5] = { 212, 61200, 9200, 84, 700 };
static const uint8_t zlib5[5] = {
  CODEC_ZLIB, CODEC_ZLIB, CODEC_ZLIB, CODEC_ZLIB, CODEC_ZLIB
};

static void
test_v2 (void)
{
  struct image img = make_table ("V2.0", BS, 5, lens5, NULL, 8, false);
  struct block_map *map = expect_map ("V2.0 header first", &img, "cloop V2.0",
                                      BS, 5 * BS, 5, lens5, zlib5, 136 + 48);
  struct mem_reader m;
  struct cloop_err err;

  if (map) {
    CHECK (map->max_length == 61200);
    CHECK (block_map_decoded_length (map, 4) == BS);
    /* Only the last block may decode short (an unpadded writer). */
    CHECK (map->short_last);
    CHECK (block_map_min_stream_length (map, 3) == BS);
    CHECK (block_map_min_stream_length (map, 4) == 1);
    CHECK (block_map_stream_length (map, 4) == BS);
  }
  block_map_free (map);
  image_free (&img);

  /* A zero-length block is FreeBSD's all-zero block only in an image
   * whose preamble says uzip (mkuzip's); in a Knopper V2.0 image it is
   * an index fault, kept in the map so that reading the block fails. */
  static const uint32_t zl[3] = { 100, 0, 50 };
  img = make_table ("V2.0", 4096, 3, zl, NULL, 8, false);
  map = open_image (&img, &m, &err);
  printf ("%-34s %s\n", "Knopper V2.0, zero-length block",
          map ? "opened" : err.msg);
  CHECK (map != NULL);
  if (map) {
    CHECK (strcmp (map->dialect, "cloop V2.0") == 0);
    CHECK (map->entries[1].codec == CODEC_ZLIB);
    CHECK (map->entries[1].length == 0);
    CHECK (map->entries[2].offset == 136 + 32 + 100 &&
           map->entries[2].length == 50);
    CHECK (map->pad_align == 0);        /* Knopper's tools do not pad */
  }
  block_map_free (map);
  /* The same bytes with mkuzip's preamble text. */
  memcpy (img.buf + 0x40, "geom_uzip", 9);
  map = expect_map ("FreeBSD V2.0 with zero-length block", &img,
                    "FreeBSD uzip #V2.0", 4096, 3 * 4096, 3, zl, zlib5,
                    136 + 32);
  CHECK (map == NULL || map->pad_align == 512);
  block_map_free (map);
  image_free (&img);

  img = make_header_last ("V2.0", BS, 5, lens5, NULL);
  map = expect_map ("V2.0 header last", &img, "cloop V2.0 (header last)",
                    BS, 5 * BS, 5, lens5, zlib5, 0);
  block_map_free (map);
  image_free (&img);

  /* No blocks at all is a valid, empty image. */
  img = make_table ("V2.0", BS, 0, NULL, NULL, 8, false);
  map = expect_map ("V2.0 with 0 blocks", &img, "cloop V2.0", BS, 0, 0,
                    NULL, NULL, 0);
  block_map_free (map);
  image_free (&img);
}

static void
test_v4 (void)
{
  static const uint8_t nib[5] = { 0, 1, 2, 3, 4 };
  static const uint8_t codecs[5] = {
    CODEC_ZLIB, CODEC_NONE, CODEC_XZ, CODEC_LZ4, CODEC_LZO
  };
  static const uint32_t lens[5] = { 300, 4096, 200, 100, 3000 };
  struct image img = make_table ("V4.0", 4096, 5, lens, nib, 8, false);
  struct block_map *map;

  map = expect_map ("V4.0 header first, 5 codecs", &img, "cloop V4.0",
                    4096, 5 * 4096, 5, lens, codecs, 136 + 48);
  block_map_free (map);
  image_free (&img);

  img = make_header_last ("V4.0", 4096, 5, lens, nib);
  map = expect_map ("V4.0 header last, 5 codecs", &img,
                    "cloop V4.0 (header last)", 4096, 5 * 4096, 5, lens,
                    codecs, 0);
  block_map_free (map);
  image_free (&img);
}

static void
test_old (void)
{
  struct image img = make_table (NULL, BS, 5, lens5, NULL, 4, false);
  struct block_map *map;

  map = expect_map ("0.68 (BE32 offsets)", &img, "cloop 0.68 (BE32 offsets)",
                    BS, 5 * BS, 5, lens5, zlib5, 136 + 24);
  block_map_free (map);
  image_free (&img);

  img = make_table ("V1.0", BS, 5, lens5, NULL, 8, true);
  map = expect_map ("1.0 (LE64 offsets)", &img, "cloop 1.0 (LE64 offsets)",
                    BS, 5 * BS, 5, lens5, zlib5, 136 + 48);
  block_map_free (map);
  image_free (&img);
}

static void
test_v3 (void)
{
  static const uint32_t lens[4] = { 1000, 4096, 10, 2000 };
  static const uint32_t flags[4] = { 1 << 1, 0, 1 << 3, 1 << 4 };
  static const uint8_t codecs[4] = {
    CODEC_ZLIB, CODEC_NONE, CODEC_XZ, CODEC_LZ4
  };
  struct image img = make_slitaz (BS, 5, lens5);
  struct block_map *map;

  map = expect_map ("SliTaz V3.0", &img, "SliTaz cloop V3.0", BS, 5 * BS, 5,
                    lens5, zlib5, 136);
  if (map)
    CHECK (map->short_last && block_map_min_stream_length (map, 4) == 1 &&
           block_map_min_stream_length (map, 0) == BS);
  block_map_free (map);
  image_free (&img);

  /* original size 3.5 blocks: the last block exports 2048 bytes, but
   * dplasa stores it as a full block (stored raw: 4096 bytes). */
  static const uint32_t lens_short[4] = { 1000, 4096, 10, 4096 };
  static const uint32_t flags_short[4] = { 1 << 1, 0, 1 << 3, 0 };
  static const uint8_t codecs_short[4] = {
    CODEC_ZLIB, CODEC_NONE, CODEC_XZ, CODEC_NONE
  };
  img = make_dplasa (4096, 3 * 4096 + 2048, 4, lens_short, flags_short);
  map = expect_map ("dplasa V3, short last block", &img,
                    "dplasa cloop V3 (footer)", 4096, 3 * 4096 + 2048, 4,
                    lens_short, codecs_short, 0);
  if (map) {
    CHECK (block_map_decoded_length (map, 2) == 4096);
    CHECK (block_map_decoded_length (map, 3) == 2048);
    CHECK (block_map_stream_length (map, 3) == 4096);
    CHECK (block_map_stream_length (map, 2) == 4096);
    CHECK (map->padded_last);
    /* dplasa records the length: its padded last block is exact. */
    CHECK (!map->short_last && block_map_min_stream_length (map, 3) == 4096);
  }
  block_map_free (map);
  image_free (&img);

  img = make_dplasa (4096, 4 * 4096, 4, lens, flags);
  map = expect_map ("dplasa V3, 4 codecs", &img, "dplasa cloop V3 (footer)",
                    4096, 4 * 4096, 4, lens, codecs, 0);
  block_map_free (map);
  image_free (&img);

  static const uint32_t lzo_len[1] = { 30 };      /* exports 100 bytes */
  static const uint32_t lzo_flag[1] = { 1 << 2 };
  static const uint8_t lzo_codec[1] = { CODEC_LZO };
  img = make_dplasa (512, 100, 1, lzo_len, lzo_flag);
  map = expect_map ("dplasa V3, lzo, 1 short block", &img,
                    "dplasa cloop V3 (footer)", 512, 100, 1, lzo_len,
                    lzo_codec, 0);
  block_map_free (map);
  image_free (&img);
}

static void
test_freebsd (void)
{
  static const uint32_t lens[3] = { 500, 0, 700 };
  static const uint8_t xz[3] = { CODEC_XZ, CODEC_XZ, CODEC_XZ };
  static const uint8_t zstd[3] = { CODEC_ZSTD, CODEC_ZSTD, CODEC_ZSTD };
  struct image img = make_table ("L3.0", 16384, 3, lens, NULL, 8, false);
  struct block_map *map;

  map = expect_map ("FreeBSD #L3.0 (xz)", &img, "FreeBSD uzip #L3.0", 16384,
                    3 * 16384, 3, lens, xz, 136 + 32);
  CHECK (map == NULL || map->pad_align == 512);   /* mkuzip pads */
  block_map_free (map);
  image_free (&img);

  img = make_table ("Z4.0", 16384, 3, lens, NULL, 8, false);
  map = expect_map ("FreeBSD #Z4.0 (zstd)", &img, "FreeBSD uzip #Z4.0",
                    16384, 3 * 16384, 3, lens, zstd, 136 + 32);
  CHECK (map == NULL || map->pad_align == 512);
  block_map_free (map);
  image_free (&img);

  /* Dedup: forward blocks A(100) B(200) zero C(50) zero D(30) with
   * back-references to B, A and C between them.  Data starts at D0.
   * (A back-reference to the newest forward block cannot be written:
   * geom_uzip reads an offset equal to it as "that block was empty".) */
  enum { D0 = 136 + 8 * 10 };
  static const uint64_t offs[10] = {
    D0, D0 + 100, D0 + 300, D0 + 300, D0 + 100, D0, D0 + 350, D0 + 350,
    D0 + 300, D0 + 380,
  };
  /* blocks:   0=A  1=B  2=zero 3=C  4->B 5->A 6=zero 7=D 8->C */
  static const uint64_t want_off[9] = {
    D0, D0 + 100, 0, D0 + 300, D0 + 100, D0, 0, D0 + 350, D0 + 300
  };
  static const uint32_t want_len[9] = { 100, 200, 0, 50, 200, 100, 0, 30, 50 };
  for (int variant = 0; variant < 3; variant++) {
    const char *sig = variant == 0 ? "v3.0" : variant == 1 ? "l3.0" : "z4.0";
    const uint8_t codec = variant == 0 ? CODEC_ZLIB :
                          variant == 1 ? CODEC_XZ : CODEC_ZSTD;
    char dialect[40], what[40];
    struct mem_reader m;
    struct cloop_err err;

    img = make_offsets (sig, 16384, 9, offs, 380);
    snprintf (dialect, sizeof dialect, "FreeBSD uzip #%s (dedup)", sig);
    snprintf (what, sizeof what, "FreeBSD #%s dedup", sig);
    map = open_image (&img, &m, &err);
    printf ("%-34s %s: %s\n", what, map ? "ok" : "FAIL",
            map ? map->dialect : err.msg);
    CHECK (map != NULL);
    if (map) {
      CHECK (strcmp (map->dialect, dialect) == 0);
      CHECK (map->pad_align == 512);
      CHECK (map->num_blocks == 9);
      for (int i = 0; i < 9; i++) {
        const struct block_entry *e = &map->entries[i];
        CHECK (e->length == want_len[i]);
        if (want_len[i] == 0)
          CHECK (e->codec == CODEC_ZERO);
        else {
          CHECK (e->offset == want_off[i]);
          CHECK (e->codec == codec);
        }
      }
    }
    block_map_free (map);
    image_free (&img);
  }

  /* A back-reference to an offset where no block starts. */
  static const uint64_t bad[4] = { D0, D0 + 100, D0 + 50, D0 + 200 };
  img = make_offsets ("v3.0", 16384, 3, bad, 200);
  expect_error ("FreeBSD dedup, dangling back-ref", &img, "back-reference");
  image_free (&img);

  /* Upper case V2.0 is not dedup: the same table is not monotonic. */
  img = make_offsets ("V2.0", 16384, 3, bad, 200);
  expect_error ("V2.0 backwards offset", &img, "not monotonic");
  image_free (&img);
}

/* ------------------------------------------------------------------ */
/* Hostile and broken images. */

static void
test_hostile_geometry (void)
{
  struct image img;
  static const uint32_t one[1] = { 100 };

  img = make_table ("V2.0", 0, 1, one, NULL, 8, false);
  expect_error ("block size 0", &img, "block size is 0");
  image_free (&img);

  img = make_table ("V2.0", 513, 1, one, NULL, 8, false);
  expect_error ("block size 513", &img, "multiple of 512");
  image_free (&img);

  img = make_table ("V4.0", 128u << 20, 1, one, NULL, 8, false);
  expect_error ("block size 128 MiB", &img, "exceeds the limit");
  image_free (&img);

  /* qemu iotest 075: a huge block count in a tiny file. */
  img = make_table ("V2.0", 512, 1, one, NULL, 8, false);
  store_be32 (img.buf + 0x84, 0xFFFFFFF0);
  expect_error ("num_blocks 0xFFFFFFF0", &img, "too many blocks");
  image_free (&img);

  img = make_header_last ("V4.0", 512, 1, one, NULL);
  store_be32 (img.buf + img.len - 4, 0xFFFFFFF0);
  expect_error ("V4 footer, num_blocks 0xFFFFFFF0", &img, "too many blocks");
  image_free (&img);

  img = make_slitaz (512, 1, one);
  store_be32 (img.buf + img.len - 4, 0xFFFFFFF0);
  expect_error ("SliTaz, num_blocks 0xFFFFFFF0", &img, "too many blocks");
  image_free (&img);

  /* The largest geometry a header can state (2^32-1 blocks of 64 MiB,
   * 2^58 bytes) fits in int64; it fails on the index, unallocated. */
  img = make_table ("V2.0", 64u << 20, 1, one, NULL, 8, false);
  store_be32 (img.buf + 0x84, 0xFFFFFFFF);
  expect_error ("2^32-1 blocks of 64 MiB", &img, "too many blocks");
  image_free (&img);
}

static void
test_hostile_index (void)
{
  static const uint32_t lens[3] = { 100, 200, 300 };
  static const uint8_t bad_nib[3] = { 0, 5, 0 };
  struct image img;
  struct block_map *map;
  struct mem_reader m;
  struct cloop_err err;

  img = make_table ("V2.0", 4096, 3, lens, NULL, 8, false);
  store_be64 (img.buf + 136 + 16, 136 + 32 + 50);   /* off[2] < off[1] */
  expect_error ("non-monotonic offsets", &img, "not monotonic");
  image_free (&img);

  static const uint32_t big[2] = { 100, 4096 + 256 + 4097 };
  img = make_table ("V2.0", 4096, 2, big, NULL, 8, false);
  expect_error ("block length > bound", &img, "exceeds the limit");
  image_free (&img);

  img = make_table ("V2.0", 4096, 3, lens, NULL, 8, false);
  store_be64 (img.buf + 136 + 24, img.len + 1000);   /* off[3] past EOF */
  expect_error ("offset past EOF", &img, "past the end");
  image_free (&img);

  img = make_table ("V2.0", 4096, 3, lens, NULL, 8, false);
  img.len = 136 + 20;                                 /* cut in the index */
  expect_error ("truncated index", &img, "outside the file");
  img.len = 100;
  expect_error ("truncated header", &img, "truncated");
  image_free (&img);

  img = make_table ("V2.0", 4096, 3, lens, NULL, 8, false);
  img.len -= 10;                                      /* cut in the data */
  expect_error ("truncated data", &img, "past the end");
  image_free (&img);

  img = make_table ("V4.0", 4096, 3, lens, bad_nib, 8, false);
  expect_error ("V4 codec 5", &img, "unknown codec 5 in block 1");
  image_free (&img);

  static const uint32_t stored[2] = { 4000, 100 };
  static const uint8_t nib_none[2] = { 1, 0 };
  img = make_table ("V4.0", 4096, 2, stored, nib_none, 8, false);
  expect_error ("V4 stored block of wrong size", &img, "stored raw");
  image_free (&img);

  /* A zero-length block outside FreeBSD images fails when it is read
   * (the reader's test), not the whole image. */
  static const uint32_t zl[2] = { 100, 0 };
  img = make_table ("V4.0", 4096, 2, zl, NULL, 8, false);
  map = open_image (&img, &m, &err);
  printf ("%-34s %s\n", "V4 zero-length block", map ? "opened" : err.msg);
  CHECK (map != NULL && map->entries[1].length == 0 &&
         map->entries[1].codec == CODEC_ZLIB);
  block_map_free (map);
  image_free (&img);
}

static void
test_hostile_other (void)
{
  static const uint32_t lens[2] = { 100, 200 };
  static const uint32_t flags[2] = { 1 << 1, 1 << 1 };
  static const uint32_t two[2] = { 1 << 1 | 1 << 4, 1 << 1 };
  struct image img = { NULL, 0, 0 };

  expect_error ("empty file", &img, "empty");

  srand (12345);
  for (int i = 0; i < 136; i++) {
    unsigned char c = rand ();
    put (&img, &c, 1);
  }
  expect_error ("136 random bytes", &img, "not a cloop image");
  img.len = 10;
  expect_error ("10 random bytes", &img, "not a cloop image");
  image_free (&img);

  img = make_table ("V2.0", 4096, 2, lens, NULL, 8, false);
  img.buf[0x0C] = '7';
  expect_error ("V7.0 signature", &img, "unsupported cloop version");
  image_free (&img);

  img = make_dplasa (4096, 3 * 4096, 2, lens, flags);
  expect_error ("dplasa, original size too big", &img, "original size");
  image_free (&img);

  img = make_dplasa (4096, 4096, 2, lens, flags);
  expect_error ("dplasa, original size too small", &img, "original size");
  image_free (&img);

  static const uint32_t short_stored[2] = { 100, 2000 };
  static const uint32_t zlib_none[2] = { 1 << 1, 0 };
  img = make_dplasa (4096, 6096, 2, short_stored, zlib_none);
  expect_error ("dplasa, short stored last block", &img, "stored raw");
  image_free (&img);

  img = make_dplasa (4096, 8000, 2, lens, two);
  expect_error ("dplasa, two codec flags", &img, "several codec flags");
  image_free (&img);

  img = make_dplasa (4096, 8000, 2, lens, flags);
  store_be64 (img.buf + img.len - 20, img.len);      /* X past EOF */
  expect_error ("dplasa, index offset past EOF", &img, "outside the file");
  image_free (&img);

  img = make_dplasa (4096, 8000, 2, lens, flags);
  store_be64 (img.buf + img.len - 20, 4096 + 4);     /* X misaligned */
  expect_error ("dplasa, index offset wrong", &img, "fits no block count");
  image_free (&img);

  img = make_slitaz (4096, 2, lens);
  store_be32 (img.buf + 0x80, 1u << 30);              /* huge size */
  expect_error ("SliTaz, block size huge", &img, "exceeds the limit");
  image_free (&img);
}

/* A reader failure is reported as such. */
static int
failing_pread (void *opaque, void *buf, size_t len, uint64_t offset,
               struct cloop_err *err)
{
  return cloop_err_set (err, EIO, "simulated read error");
}

static void
test_reader_error (void)
{
  struct byte_reader r = { NULL, 4096, failing_pread };
  struct cloop_err err = { 0 };
  struct block_map *map = cloop_open (&r, &err);

  printf ("%-34s %s\n", "reader error", map ? "FAIL" : err.msg);
  CHECK (map == NULL);
  CHECK (err.errnum == EIO && strcmp (err.msg, "simulated read error") == 0);
  block_map_free (map);
}

static void
test_probe_and_blockmap (void)
{
  struct image img = make_table ("V2.0", BS, 5, lens5, NULL, 8, false);
  struct image old = make_table (NULL, BS, 5, lens5, NULL, 4, false);
  struct image last = make_header_last ("V4.0", BS, 5, lens5, NULL);
  unsigned char text[200];
  struct cloop_err err;
  struct block_map *map;

  printf ("%-34s\n", "cloop_probe_head / block_map");
  memset (text, 'x', sizeof text);
  CHECK (cloop_probe_head (img.buf, img.len));
  CHECK (cloop_probe_head (img.buf, 136));
  CHECK (cloop_probe_head (old.buf, old.len));
  CHECK (!cloop_probe_head (last.buf, 144));
  CHECK (!cloop_probe_head (text, sizeof text));
  CHECK (!cloop_probe_head (img.buf, 10));
  image_free (&img);
  image_free (&old);
  image_free (&last);

  CHECK (block_map_length_bound (65536) >= 65536 + 65536 / 255 + 16);
  CHECK (block_map_length_bound (512) >= 512 + 512 / 16 + 67);
  CHECK (block_map_length_bound (BLOCK_SIZE_MAX) < UINT32_MAX);
  CHECK (strcmp (codec_name (CODEC_ZSTD), "zstd") == 0);
  CHECK (strcmp (codec_name ((enum block_codec) 99), "unknown") == 0);

  map = block_map_new (NUM_BLOCKS_MAX + 1, 512, &err);
  CHECK (map == NULL && err.errnum == EINVAL);
  printf ("  block_map_new over the limit: %s\n", err.msg);
  map = block_map_new (3, 4096, &err);
  CHECK (map != NULL);
  if (map) {
    map->size = 2 * 4096 + 1000;
    CHECK (block_map_decoded_length (map, 0) == 4096);
    CHECK (block_map_decoded_length (map, 2) == 1000);
    map->entries[0].codec = CODEC_ZERO;
    map->entries[1] = (struct block_entry) { 0, 10, CODEC_ZLIB };
    map->entries[2] = (struct block_entry) { 10, 20, CODEC_LZ4 };
    CHECK (block_map_validate (map, 30, &err) == 0);
    CHECK (map->max_length == 20);
    CHECK (block_map_validate (map, 29, &err) == -1);
    map->size = 2 * 4096;             /* last block would be empty */
    CHECK (block_map_validate (map, 30, &err) == -1);
  }
  block_map_free (map);
  block_map_free (NULL);
}

int
main (void)
{
  test_v2 ();
  test_v4 ();
  test_old ();
  test_v3 ();
  test_freebsd ();
  test_hostile_geometry ();
  test_hostile_index ();
  test_hostile_other ();
  test_reader_error ();
  test_probe_and_blockmap ();

  if (check_failures) {
    printf ("test-index: %d check(s) FAILED\n", check_failures);
    return 1;
  }
  printf ("test-index: all checks passed\n");
  return 0;
}
