/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/decode.c.
 *
 * For every codec this build supports: compress a mixed block (text,
 * random bytes, zeros) with the real library, decode it with both
 * decoders (libdeflate and forced zlib for the zlib format), compare;
 * then check that broken input fails with -1 and a message and never
 * crashes: truncated streams, flipped bytes, streams decoding to fewer
 * or more bytes than expected, garbage, empty input, a stored block of
 * the wrong length, bytes after the end of the stream (junk, zeroes, a
 * second stream); and the padding rule of FreeBSD maps (zero bytes up
 * to a 512-byte boundary, nothing else).  Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#ifdef HAVE_LIBLZMA
#include <lzma.h>
#endif
#ifdef HAVE_LIBLZ4
#include <lz4.h>
#endif
#ifdef HAVE_LIBLZO2
#include <lzo/lzo1x.h>
#endif
#ifdef HAVE_LIBZSTD
#include <zstd.h>
#endif

#include "decode.h"

#define BLOCK 65536u

#define CHECK_COUNT_FAILURES
#include "check.h"

struct buffer {
  unsigned char *data;
  size_t len;
};

static void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);
  if (p == NULL) {
    perror ("malloc");
    exit (1);
  }
  return p;
}

/* Deterministic pseudo-random bytes. */
static uint32_t
next_random (uint32_t *state)
{
  *state ^= *state << 13;
  *state ^= *state >> 17;
  *state ^= *state << 5;
  return *state;
}

/* A third text, a third random, a third zeros. */
static void
make_block (unsigned char *b, size_t len, uint32_t seed)
{
  static const char text[] =
    "cloop: compressed loopback block device; each block is compressed "
    "on its own so that any block can be read without the others.\n";
  size_t third = len / 3, i;

  for (i = 0; i < third; i++)
    b[i] = text[i % (sizeof text - 1)];
  for (; i < 2 * third; i++)
    b[i] = next_random (&seed);
  memset (b + i, 0, len - i);
}

/* ------------------------------------------------------------------ */
/* Real encoders. */

static struct buffer
encode_zlib (const unsigned char *in, size_t len)
{
  uLongf out_len = compressBound (len);
  struct buffer out = { xmalloc (out_len), 0 };

  if (compress2 (out.data, &out_len, in, len, 9) != Z_OK) {
    fprintf (stderr, "compress2 failed\n");
    exit (1);
  }
  out.len = out_len;
  return out;
}

#ifdef HAVE_LIBLZMA
static struct buffer
encode_xz (const unsigned char *in, size_t len)
{
  size_t cap = lzma_stream_buffer_bound (len);
  struct buffer out = { xmalloc (cap), 0 };

  if (lzma_easy_buffer_encode (1, LZMA_CHECK_CRC32, NULL, in, len,
                               out.data, &out.len, cap) != LZMA_OK) {
    fprintf (stderr, "lzma_easy_buffer_encode failed\n");
    exit (1);
  }
  return out;
}
#endif

#ifdef HAVE_LIBLZ4
static struct buffer
encode_lz4 (const unsigned char *in, size_t len)
{
  int cap = LZ4_compressBound (len);
  struct buffer out = { xmalloc (cap), 0 };
  int r = LZ4_compress_default ((const char *) in, (char *) out.data,
                                len, cap);

  if (r <= 0) {
    fprintf (stderr, "LZ4_compress_default failed\n");
    exit (1);
  }
  out.len = r;
  return out;
}
#endif

#ifdef HAVE_LIBLZO2
static struct buffer
encode_lzo (const unsigned char *in, size_t len)
{
  struct buffer out = { xmalloc (len + len / 16 + 64 + 3), 0 };
  void *wrkmem = xmalloc (LZO1X_1_MEM_COMPRESS);
  lzo_uint out_len;

  if (lzo_init () != LZO_E_OK ||
      lzo1x_1_compress (in, len, out.data, &out_len, wrkmem) != LZO_E_OK) {
    fprintf (stderr, "lzo1x_1_compress failed\n");
    exit (1);
  }
  free (wrkmem);
  out.len = out_len;
  return out;
}
#endif

#ifdef HAVE_LIBZSTD
static struct buffer
encode_zstd (const unsigned char *in, size_t len)
{
  size_t cap = ZSTD_compressBound (len);
  struct buffer out = { xmalloc (cap), 0 };
  size_t r = ZSTD_compress (out.data, cap, in, len, 3);

  if (ZSTD_isError (r)) {
    fprintf (stderr, "ZSTD_compress: %s\n", ZSTD_getErrorName (r));
    exit (1);
  }
  out.len = r;
  return out;
}

/* With the content checksum, so that corruption is always detected. */
static struct buffer
encode_zstd_checked (const unsigned char *in, size_t len)
{
  size_t cap = ZSTD_compressBound (len);
  struct buffer out = { xmalloc (cap), 0 };
  ZSTD_CCtx *cctx = ZSTD_createCCtx ();
  size_t r;

  ZSTD_CCtx_setParameter (cctx, ZSTD_c_checksumFlag, 1);
  r = ZSTD_compress2 (cctx, out.data, cap, in, len);
  ZSTD_freeCCtx (cctx);
  if (ZSTD_isError (r)) {
    fprintf (stderr, "ZSTD_compress2: %s\n", ZSTD_getErrorName (r));
    exit (1);
  }
  out.len = r;
  return out;
}
#endif

/* ------------------------------------------------------------------ */

struct codec_case {
  const char *name;
  enum block_codec codec;
  struct buffer (*encode) (const unsigned char *, size_t);
  bool detects_corruption;      /* carries a checksum */
};

static const struct codec_case cases[] = {
  { "zlib", CODEC_ZLIB, encode_zlib, true },
#ifdef HAVE_LIBLZMA
  { "xz (CRC32)", CODEC_XZ, encode_xz, true },
#endif
#ifdef HAVE_LIBLZ4
  { "lz4", CODEC_LZ4, encode_lz4, false },
#endif
#ifdef HAVE_LIBLZO2
  { "lzo1x", CODEC_LZO, encode_lzo, false },
#endif
#ifdef HAVE_LIBZSTD
  { "zstd", CODEC_ZSTD, encode_zstd, false },
  { "zstd (checksum)", CODEC_ZSTD, encode_zstd_checked, true },
#endif
};

/* Decode and expect failure; print the message. */
static void
expect_fail (struct decoder *dec, const char *what, enum block_codec codec,
             const void *in, size_t in_len, size_t out_len)
{
  unsigned char *out = xmalloc (out_len);
  struct cloop_err err = { 0 };
  int r = decoder_decode (dec, codec, in, in_len, out, out_len, &err);

  printf ("    %-26s %s\n", what, r == -1 ? err.msg : "FAIL: accepted");
  CHECK (r == -1);
  CHECK (r == 0 || (err.errnum != 0 && err.msg[0] != '\0'));
  free (out);
}

/* Flip bytes at many positions; count how many decodes fail.  Codecs
 * with a checksum must fail every time; others must just not crash. */
static void
flip_bytes (struct decoder *dec, const struct codec_case *c,
            const struct buffer *enc, const unsigned char *orig)
{
  unsigned char *copy = xmalloc (enc->len), *out = xmalloc (BLOCK);
  struct cloop_err err;
  unsigned tries = 0, failed = 0, wrong = 0;
  size_t step = enc->len / 97 + 1;

  for (size_t pos = 0; pos < enc->len; pos += step, tries++) {
    memcpy (copy, enc->data, enc->len);
    copy[pos] ^= 0x55;
    if (decoder_decode (dec, c->codec, copy, enc->len, out, BLOCK,
                        &err) == -1)
      failed++;
    else if (memcmp (out, orig, BLOCK) != 0)
      wrong++;
  }
  printf ("    %-26s %u of %u failed, %u decoded wrongly without error\n",
          "flipped bytes", failed, tries, wrong);
  if (c->detects_corruption)
    CHECK (wrong == 0);
  free (copy);
  free (out);
}

/* in[0..len) followed by extra bytes: count of them, each fill (or, if
 * src is not NULL, a copy of src). */
static struct buffer
append (const struct buffer *in, size_t count, int fill,
        const unsigned char *src)
{
  struct buffer r = { xmalloc (in->len + count), in->len + count };

  memcpy (r.data, in->data, in->len);
  if (src)
    memcpy (r.data + in->len, src, count);
  else
    memset (r.data + in->len, fill, count);
  return r;
}

/* Bytes after the end of a block's stream are an error: junk, zero
 * bytes, a second stream (the index fault of issue 10: one block's
 * range spanning two streams), for zstd a skippable frame; and for a
 * short last block too. */
static void
test_trailing (struct decoder *dec, const struct codec_case *c,
               const struct buffer *enc, const struct buffer *half)
{
  struct buffer b;

  b = append (enc, 7, 0xA5, NULL);
  expect_fail (dec, "junk after the stream", c->codec, b.data, b.len, BLOCK);
  free (b.data);
  b = append (enc, 16, 0, NULL);
  expect_fail (dec, "zeroes after the stream", c->codec, b.data, b.len,
               BLOCK);
  free (b.data);
  b = append (half, half->len, 0, half->data);
  expect_fail (dec, "two streams", c->codec, b.data, b.len, BLOCK);
  free (b.data);
  if (c->codec == CODEC_ZSTD) {
    static const unsigned char skippable[12] = {
      0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'j', 'u', 'n', 'k',
    };
    b = append (enc, sizeof skippable, 0, skippable);
    expect_fail (dec, "skippable frame after it", c->codec, b.data, b.len,
                 BLOCK);
    free (b.data);
  }
  /* A short last block: LZ4 has no end marker, so what follows a short
   * block's last literals may parse as more sequences; 7 bytes cannot
   * (a sequence needs its 5 last literals after it). */
  b = append (half, 7, 0xA5, NULL);
  {
    unsigned char *out = xmalloc (BLOCK);
    struct cloop_err err = { 0 };
    size_t got = 0;
    int r = decoder_decode_upto (dec, c->codec, b.data, b.len, out, BLOCK, 1,
                                 &got, NULL, &err);
    printf ("    %-26s %s\n", "short block, junk after",
            r == -1 ? err.msg : "FAIL: accepted");
    CHECK (r == -1 && err.errnum == EIO);
    free (out);
  }
  free (b.data);
}

/* Decode enc followed by pad bytes as block 0 of a one-block map whose
 * block starts at file offset offset, with the map's pad_align. */
static int
decode_padded (struct decoder *dec, const struct codec_case *c,
               const struct buffer *enc, const unsigned char *orig,
               uint64_t offset, size_t pad, int fill, uint32_t pad_align,
               const char *what)
{
  struct cloop_err err = { 0 };
  struct block_map *map = block_map_new (1, BLOCK, &err);
  struct buffer in = append (enc, pad, fill, NULL);
  unsigned char *out = xmalloc (BLOCK);
  size_t got = 0;
  int r;

  CHECK (map != NULL);
  map->pad_align = pad_align;
  map->entries[0] = (struct block_entry) {
    .offset = offset, .length = in.len, .codec = c->codec,
  };
  r = decoder_decode_block (dec, map, 0, in.data, out, &got, &err);
  printf ("    %-26s %s\n", what, r == 0 ? "ok" : err.msg);
  if (r == 0)
    CHECK (got == BLOCK && memcmp (out, orig, BLOCK) == 0);
  else
    CHECK (err.errnum == EIO && strchr (err.msg, '\n') == NULL);
  block_map_free (map);
  free (in.data);
  free (out);
  return r;
}

/* FreeBSD (mkuzip) maps, pad_align 512: zero bytes after the stream up
 * to the next 512-byte boundary of the file offset are padding; more,
 * or anything non-zero, fails the block.  Maps without padding (every
 * other dialect) refuse even zero bytes. */
static void
test_padding (struct decoder *dec, const struct codec_case *c,
              const struct buffer *enc, const unsigned char *orig)
{
  const uint64_t at = 1000;                     /* block's file offset */
  const uint64_t end = at + enc->len;
  const size_t to_boundary = 512 - end % 512;   /* 1..512 */
  struct cloop_err err = { 0 };
  unsigned char *out = xmalloc (BLOCK);
  struct buffer b = append (enc, 16, 0, NULL);
  size_t used = 0, got = 0;

  /* With used, the decoder reports where the stream ended. */
  CHECK (decoder_decode_upto (dec, c->codec, b.data, b.len, out, BLOCK,
                              BLOCK, &got, &used, &err) == 0);
  CHECK (used == enc->len && got == BLOCK);
  free (b.data);
  free (out);

  CHECK (decode_padded (dec, c, enc, orig, at, 0, 0, 512,
                        "unpadded, pad_align 512") == 0);
  CHECK (decode_padded (dec, c, enc, orig, at, to_boundary, 0, 512,
                        "zeroes to the boundary") == 0);
  CHECK (decode_padded (dec, c, enc, orig, at, to_boundary / 2, 0, 512,
                        "zeroes short of it") == 0);
  CHECK (decode_padded (dec, c, enc, orig, at + 512 - end % 512, 512, 0, 512,
                        "512 zeroes from a boundary") == 0);
  CHECK (decode_padded (dec, c, enc, orig, at, to_boundary + 1, 0, 512,
                        "zeroes past the boundary") == -1);
  CHECK (decode_padded (dec, c, enc, orig, at, to_boundary, 1, 512,
                        "non-zero padding") == -1);
  CHECK (decode_padded (dec, c, enc, orig, at, to_boundary, 0, 0,
                        "zeroes, pad_align 0") == -1);
  CHECK (decode_padded (dec, c, enc, orig, at, 0, 0, 0,
                        "unpadded, pad_align 0") == 0);
}

static void
test_codec (struct decoder *dec, const struct codec_case *c)
{
  unsigned char *orig = xmalloc (BLOCK), *out = xmalloc (BLOCK);
  struct buffer enc, half;
  struct cloop_err err = { 0 };
  int r;

  make_block (orig, BLOCK, 42);
  enc = c->encode (orig, BLOCK);
  CHECK (codec_supported (c->codec));
  memset (out, 0xEE, BLOCK);
  r = decoder_decode (dec, c->codec, enc.data, enc.len, out, BLOCK, &err);
  printf ("  %s (%s): %u -> %zu bytes, round trip %s\n", c->name,
          decoder_zlib_impl (dec), BLOCK, enc.len,
          r == 0 && memcmp (out, orig, BLOCK) == 0 ? "ok" : "FAIL");
  if (r == -1)
    printf ("    error: %s\n", err.msg);
  CHECK (r == 0 && memcmp (out, orig, BLOCK) == 0);

  /* Decoding twice with the same decoder reuses its state. */
  r = decoder_decode (dec, c->codec, enc.data, enc.len, out, BLOCK, &err);
  CHECK (r == 0 && memcmp (out, orig, BLOCK) == 0);

  expect_fail (dec, "truncated to half", c->codec, enc.data, enc.len / 2,
               BLOCK);
  expect_fail (dec, "last byte missing", c->codec, enc.data, enc.len - 1,
               BLOCK);
  expect_fail (dec, "empty input", c->codec, enc.data, 0, BLOCK);
  expect_fail (dec, "more bytes than expected", c->codec, enc.data, enc.len,
               BLOCK / 2);
  half = c->encode (orig, BLOCK / 2);
  expect_fail (dec, "fewer bytes than expected", c->codec, half.data,
               half.len, BLOCK);
  expect_fail (dec, "random garbage", c->codec, orig + BLOCK / 3, 4096,
               BLOCK);
  flip_bytes (dec, c, &enc, orig);
  test_trailing (dec, c, &enc, &half);
  /* The codecs of FreeBSD images, whose writer pads. */
  if (c->codec == CODEC_ZLIB || c->codec == CODEC_XZ ||
      c->codec == CODEC_ZSTD)
    test_padding (dec, c, &enc, orig);

  /* A short last block: accepted within [min_len, out_len], with the
   * length reported; refused below min_len. */
  {
    size_t got = 0;

    memset (out, 0xEE, BLOCK);
    r = decoder_decode_upto (dec, c->codec, half.data, half.len, out, BLOCK,
                             1, &got, NULL, &err);
    CHECK (r == 0 && got == BLOCK / 2 && memcmp (out, orig, BLOCK / 2) == 0);
    r = decoder_decode_upto (dec, c->codec, half.data, half.len, out, BLOCK,
                             BLOCK / 2 + 1, &got, NULL, &err);
    printf ("    %-26s %s\n", "short, below the minimum",
            r == -1 ? err.msg : "FAIL: accepted");
    CHECK (r == -1 && err.errnum == EIO);
    r = decoder_decode_upto (dec, c->codec, enc.data, enc.len, out, BLOCK / 2,
                             1, &got, NULL, &err);
    CHECK (r == -1);            /* still no more than out_len */
  }

  free (half.data);
  free (enc.data);
  free (orig);
  free (out);
}

static void
test_raw (struct decoder *dec)
{
  unsigned char in[4096], out[4096];
  struct cloop_err err = { 0 };

  printf ("  none / zero\n");
  make_block (in, sizeof in, 7);
  CHECK (decoder_decode (dec, CODEC_NONE, in, sizeof in, out, sizeof out,
                         &err) == 0);
  CHECK (memcmp (in, out, sizeof in) == 0);
  expect_fail (dec, "none, wrong length", CODEC_NONE, in, 4000, sizeof out);
  {
    size_t got = 0;

    CHECK (decoder_decode_upto (dec, CODEC_NONE, in, 4000, out, sizeof out,
                                1, &got, NULL, &err) == 0 && got == 4000);
    CHECK (memcmp (in, out, 4000) == 0);
    CHECK (decoder_decode_upto (dec, CODEC_NONE, in, 4000, out, sizeof out,
                                4001, &got, NULL, &err) == -1);
    CHECK (decoder_decode_upto (dec, CODEC_NONE, in, sizeof in, out, 100,
                                1, &got, NULL, &err) == -1);
    CHECK (decoder_decode_upto (dec, CODEC_ZLIB, in, 10, out, 100, 101,
                                &got, NULL, &err) == -1 && err.errnum == EINVAL);
  }
  /* A zero-length entry that is not CODEC_ZERO (an index fault outside
   * FreeBSD images) fails, even where padding is allowed. */
  {
    struct block_map *map = block_map_new (1, sizeof out, &err);
    size_t got = 0;

    CHECK (map != NULL);
    map->pad_align = 512;
    map->entries[0] = (struct block_entry) {
      .offset = 136, .length = 0, .codec = CODEC_ZLIB,
    };
    CHECK (decoder_decode_block (dec, map, 0, in, out, &got, &err) == -1);
    printf ("    %-26s %s\n", "zero-length zlib block", err.msg);
    CHECK (err.errnum == EIO && strstr (err.msg, "zero length") != NULL);
    map->entries[0].codec = CODEC_ZERO;
    memset (out, 0xEE, sizeof out);
    CHECK (decoder_decode_block (dec, map, 0, in, out, &got, &err) == 0);
    CHECK (got == sizeof out && out[0] == 0 && out[sizeof out - 1] == 0);
    block_map_free (map);
  }
  memset (out, 0xEE, sizeof out);
  CHECK (decoder_decode (dec, CODEC_ZERO, NULL, 0, out, sizeof out,
                         &err) == 0);
  CHECK (out[0] == 0 && out[sizeof out - 1] == 0);
  expect_fail (dec, "unknown codec", CODEC_COUNT, in, sizeof in, sizeof out);
  for (int c = CODEC_ZERO; c < CODEC_COUNT; c++) {
    if (codec_supported (c))
      continue;
    CHECK (decoder_decode (dec, c, in, sizeof in, out, sizeof out,
                           &err) == -1 && err.errnum == ENOTSUP);
    printf ("    %-26s %s\n", "not in this build", err.msg);
  }
}

/* A zlib stream found by fuzz/fuzz-decode.c: a length code zlib calls
 * invalid ("invalid literal/length code"), but libdeflate, which is
 * deliberately more accepting in such cases (libdeflate issue #288),
 * decodes it to 512 bytes that match the stream's Adler-32.  The
 * contract (decode.h): zlib rejects it with EIO; libdeflate either
 * rejects it too or gives exactly 512 bytes with the stream's
 * Adler-32, and never a length other than asked for. */
static void
test_lenient_zlib (struct decoder *dec)
{
  static const unsigned char stream[] =
    "\x78\xda\x63\x60\x18\x07\xf4\x00\xc9\x39\xf9\xf9\x05\x0a\x49"
    "\x39\xf9\xc9\xd9\x0a\x55\x39\x99\x49\x0a\x99\x79\x29\xa9\x15"
    "\x0a\x64\x0b\x53\xcb\x5d\x00\x05\x87\x1d\x9c";
  const size_t len = sizeof stream - 1;
  unsigned char out[512];
  struct cloop_err err = { 0 };
  int r = decoder_decode (dec, CODEC_ZLIB, stream, len, out, sizeof out,
                          &err);

  if (strcmp (decoder_zlib_impl (dec), "zlib") == 0) {
    CHECK (r == -1 && err.errnum == EIO &&
           strstr (err.msg, "invalid stream") != NULL);
    printf ("    %-26s %s\n", "malformed length code", err.msg);
  }
  else if (r == 0) {
    uLong a = adler32 (adler32 (0, NULL, 0), out, sizeof out);
    CHECK (a == ((uLong) stream[len - 4] << 24 | stream[len - 3] << 16 |
                 stream[len - 2] << 8 | stream[len - 1]));
    printf ("    %-26s accepted, Adler-32 matches\n",
            "malformed length code");
  }
  else
    CHECK (r == -1 && err.errnum == EIO);
  r = decoder_decode (dec, CODEC_ZLIB, stream, len, out, sizeof out - 1,
                      &err);
  CHECK (r == -1 && err.errnum == EIO);
}

int
main (void)
{
  struct decoder *decs[2] = { decoder_new (false), decoder_new (true) };

  CHECK (decs[0] != NULL && decs[1] != NULL);
  if (decs[0] == NULL || decs[1] == NULL)
    return 1;
#ifdef HAVE_LIBDEFLATE
  CHECK (strcmp (decoder_zlib_impl (decs[0]), "libdeflate") == 0);
#else
  CHECK (strcmp (decoder_zlib_impl (decs[0]), "zlib") == 0);
#endif
  CHECK (strcmp (decoder_zlib_impl (decs[1]), "zlib") == 0);
  CHECK (codec_supported (CODEC_ZERO) && codec_supported (CODEC_NONE));
  CHECK (!codec_supported (CODEC_COUNT));
  printf ("zlib implementations: %s, forced %s\n",
          decoder_zlib_impl (decs[0]), decoder_zlib_impl (decs[1]));

  for (int d = 0; d < 2; d++) {
    printf ("decoder_new (%s):\n", d ? "true" : "false");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
      test_codec (decs[d], &cases[i]);
    test_raw (decs[d]);
    test_lenient_zlib (decs[d]);
  }
  decoder_free (decs[0]);
  decoder_free (decs[1]);
  decoder_free (NULL);

  if (check_failures) {
    printf ("test-decode: %d check(s) FAILED\n", check_failures);
    return 1;
  }
  printf ("test-decode: all checks passed\n");
  return 0;
}
