/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block decoders (see decode.h).
 *
 * Every codec must produce between min_len and out_len bytes (exactly
 * out_len unless the caller allows a short block) from exactly one
 * stream that starts at the first input byte.  Where the stream ends:
 *   zlib  the Adler-32 after the final deflate block (libdeflate's
 *         actual_in_nbytes, zlib's avail_in at Z_STREAM_END)
 *   xz    the stream footer (liblzma's in_pos; no stream padding)
 *   zstd  the end of the first frame (ZSTD_findFrameCompressedSize;
 *         only that frame is decoded, so a second frame or a skippable
 *         frame is never read as part of the block)
 *   lzo1x the end-of-stream marker (liblzo2 reports bytes after it as
 *         LZO_E_INPUT_NOT_CONSUMED but not where it was: always an error)
 *   lz4, none  have no end of their own: the input is the block
 * Decompressor objects (libdeflate, z_stream, ZSTD_DCtx) are created on
 * first use and reused.  The only process-wide state is liblzo2's
 * one-time lzo_init(), run under pthread_once.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
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
#include <zstd_errors.h>
#endif

#include "decode.h"

#define XZ_MEMLIMIT (UINT64_C (256) * 1024 * 1024)

struct decoder {
  bool use_libdeflate;
#ifdef HAVE_LIBDEFLATE
  struct libdeflate_decompressor *deflate;
#endif
  z_stream zs;
  bool zs_ready;               /* inflateInit done */
#ifdef HAVE_LIBZSTD
  ZSTD_DCtx *zstd;
#endif
};

struct decoder *
decoder_new (bool force_zlib)
{
  struct decoder *dec = calloc (1, sizeof *dec);

  if (dec == NULL)
    return NULL;
#ifdef HAVE_LIBDEFLATE
  dec->use_libdeflate = !force_zlib;
#endif
  return dec;
}

void
decoder_free (struct decoder *dec)
{
  if (dec == NULL)
    return;
#ifdef HAVE_LIBDEFLATE
  if (dec->deflate)
    libdeflate_free_decompressor (dec->deflate);
#endif
  if (dec->zs_ready)
    inflateEnd (&dec->zs);
#ifdef HAVE_LIBZSTD
  ZSTD_freeDCtx (dec->zstd);
#endif
  free (dec);
}

bool
codec_supported (enum block_codec codec)
{
  switch (codec) {
  case CODEC_ZERO: case CODEC_NONE: case CODEC_ZLIB:
    return true;
#ifdef HAVE_LIBLZMA
  case CODEC_XZ: return true;
#endif
#ifdef HAVE_LIBLZ4
  case CODEC_LZ4: return true;
#endif
#ifdef HAVE_LIBLZO2
  case CODEC_LZO: return true;
#endif
#ifdef HAVE_LIBZSTD
  case CODEC_ZSTD: return true;
#endif
  default:
    return false;
  }
}

const char *
decoder_zlib_impl (const struct decoder *dec)
{
  return dec->use_libdeflate ? "libdeflate" : "zlib";
}

/* Check a decoded length against [min_len, out_len] (the codecs
 * themselves refuse more than out_len); 0 and *got set, or -1. */
static int
check_length (const char *codec, size_t got, size_t min_len, size_t out_len,
              size_t *got_ret, struct cloop_err *err)
{
  if (got < min_len || got > out_len) {
    if (min_len == out_len)
      return cloop_err_set (err, EIO, "%s: decoded %zu bytes, expected %zu",
                            codec, got, out_len);
    return cloop_err_set (err, EIO, "%s: decoded %zu bytes, expected %zu "
                          "to %zu", codec, got, min_len, out_len);
  }
  *got_ret = got;
  return 0;
}

/* The stream ended after used of in_len input bytes.  *used_ret NULL:
 * anything after it is an error.  0, or -1 with err set. */
static int
check_used (const char *codec, size_t used, size_t in_len, size_t *used_ret,
            struct cloop_err *err)
{
  if (used > in_len)            /* a decoder that read past the end */
    return cloop_err_set (err, EIO, "%s: truncated stream", codec);
  if (used_ret) {
    *used_ret = used;
    return 0;
  }
  if (used < in_len)
    return cloop_err_set (err, EIO, "%s: %zu bytes after the end of the "
                          "stream (at %zu of %zu)", codec, in_len - used,
                          used, in_len);
  return 0;
}

/* ------------------------------------------------------------------ */
/* zlib format: libdeflate (fast, one shot) or zlib's inflate. */

#ifdef HAVE_LIBDEFLATE
static int
decode_libdeflate (struct decoder *dec, const void *in, size_t in_len,
                   void *out, size_t out_len, size_t min_len, size_t *got,
                   size_t *used, struct cloop_err *err)
{
  size_t actual = 0, actual_in = 0;
  enum libdeflate_result r;

  if (dec->deflate == NULL) {
    dec->deflate = libdeflate_alloc_decompressor ();
    if (dec->deflate == NULL)
      return cloop_err_set (err, ENOMEM, "zlib: cannot allocate libdeflate "
                            "decompressor");
  }
  r = libdeflate_zlib_decompress_ex (dec->deflate, in, in_len, out, out_len,
                                     &actual_in, &actual);
  switch (r) {
  case LIBDEFLATE_SUCCESS:
    if (check_used ("zlib", actual_in, in_len, used, err) == -1)
      return -1;
    return check_length ("zlib", actual, min_len, out_len, got, err);
  case LIBDEFLATE_INSUFFICIENT_SPACE:
    /* Also what a truncated stream gives: libdeflate reads zeros past
     * the end of the input. */
    return cloop_err_set (err, EIO, "zlib: stream is truncated or decodes "
                          "to more than %zu bytes (libdeflate: insufficient "
                          "space)", out_len);
  case LIBDEFLATE_SHORT_OUTPUT:
    return cloop_err_set (err, EIO, "zlib: stream decodes to fewer than %zu "
                          "bytes", out_len);
  default:
    return cloop_err_set (err, EIO, "zlib: invalid stream (libdeflate: bad "
                          "data)");
  }
}
#endif

static int
decode_inflate (struct decoder *dec, const void *in, size_t in_len,
                void *out, size_t out_len, size_t min_len, size_t *got,
                size_t *used, struct cloop_err *err)
{
  z_stream *zs = &dec->zs;
  int r;

  if (!dec->zs_ready) {
    if (inflateInit (zs) != Z_OK)
      return cloop_err_set (err, ENOMEM, "zlib: inflateInit failed");
    dec->zs_ready = true;
  }
  else if (inflateReset (zs) != Z_OK)
    return cloop_err_set (err, EIO, "zlib: inflateReset failed");

  zs->next_in = (Bytef *) in;
  zs->avail_in = in_len;
  zs->next_out = out;
  zs->avail_out = out_len;
  r = inflate (zs, Z_FINISH);
  if (r == Z_STREAM_END) {
    if (check_used ("zlib", in_len - zs->avail_in, in_len, used, err) == -1)
      return -1;
    return check_length ("zlib", zs->total_out, min_len, out_len, got, err);
  }
  /* Z_BUF_ERROR: out of input (truncated) or of output (too long). */
  if (r == Z_BUF_ERROR && zs->avail_in == 0)
    return cloop_err_set (err, EIO, "zlib: truncated stream (decoded %lu of "
                          "%zu bytes)", zs->total_out, out_len);
  if (r == Z_BUF_ERROR)
    return cloop_err_set (err, EIO, "zlib: stream decodes to more than %zu "
                          "bytes", out_len);
  return cloop_err_set (err, EIO, "zlib: invalid stream (%s)",
                        zs->msg ? zs->msg : zError (r));
}

/* ------------------------------------------------------------------ */
/* Optional codecs. */

#ifdef HAVE_LIBLZMA
static const char *
lzma_message (lzma_ret r)
{
  switch (r) {
  case LZMA_MEM_ERROR:      return "out of memory";
  case LZMA_MEMLIMIT_ERROR: return "memory limit exceeded";
  case LZMA_FORMAT_ERROR:   return "not an xz stream";
  case LZMA_OPTIONS_ERROR:  return "unsupported options";
  case LZMA_DATA_ERROR:     return "corrupt data";
  case LZMA_BUF_ERROR:      return "truncated stream or output too small";
  default:                  return "internal error";
  }
}

/* One complete .xz stream per block (as the cloop driver's XZ_SINGLE).
 * lzma_stream_buffer_decode stops after the stream footer. */
static int
decode_xz (const void *in, size_t in_len, void *out, size_t out_len,
           size_t min_len, size_t *got, size_t *used, struct cloop_err *err)
{
  uint64_t memlimit = XZ_MEMLIMIT;
  size_t in_pos = 0, out_pos = 0;
  lzma_ret r;

  r = lzma_stream_buffer_decode (&memlimit, 0, NULL, in, &in_pos, in_len,
                                 out, &out_pos, out_len);
  if (r != LZMA_OK)
    return cloop_err_set (err, r == LZMA_MEM_ERROR ? ENOMEM : EIO,
                          "xz: invalid stream (%s)", lzma_message (r));
  if (check_used ("xz", in_pos, in_len, used, err) == -1)
    return -1;
  return check_length ("xz", out_pos, min_len, out_len, got, err);
}
#endif

#ifdef HAVE_LIBLZ4
/* A raw LZ4 block (no frame).  It has no end marker: its end is the
 * end of the input, and LZ4_decompress_safe requires the last sequence
 * (literals only) to end exactly there. */
static int
decode_lz4 (const void *in, size_t in_len, void *out, size_t out_len,
            size_t min_len, size_t *got, size_t *used, struct cloop_err *err)
{
  int r = LZ4_decompress_safe (in, out, in_len, out_len);

  if (r < 0)
    return cloop_err_set (err, EIO, "lz4: invalid or truncated block (or it "
                          "decodes to more than %zu bytes)", out_len);
  if (used)
    *used = in_len;
  return check_length ("lz4", r, min_len, out_len, got, err);
}
#endif

#ifdef HAVE_LIBLZO2
static pthread_once_t lzo_once = PTHREAD_ONCE_INIT;
static int lzo_init_result;          /* written once, under lzo_once */

static void
lzo_init_once (void)
{
  lzo_init_result = lzo_init ();
}

static const char *
lzo_message (int r)
{
  switch (r) {
  case LZO_E_INPUT_OVERRUN:      return "truncated block";
  case LZO_E_OUTPUT_OVERRUN:     return "output too small";
  case LZO_E_LOOKBEHIND_OVERRUN: return "corrupt back-reference";
  case LZO_E_EOF_NOT_FOUND:      return "no end-of-stream marker";
  case LZO_E_INPUT_NOT_CONSUMED: return "bytes after the end of the stream";
  default:                       return "corrupt data";
  }
}

/* Raw LZO1X (as lzo1x_1_compress and the cloop driver).  Bytes after
 * the end-of-stream marker are always an error (liblzo2 does not say
 * where the marker was). */
static int
decode_lzo (const void *in, size_t in_len, void *out, size_t out_len,
            size_t min_len, size_t *got, size_t *used, struct cloop_err *err)
{
  lzo_uint n = out_len;
  int r;

  pthread_once (&lzo_once, lzo_init_once);
  if (lzo_init_result != LZO_E_OK)
    return cloop_err_set (err, EIO, "lzo1x: lzo_init failed (%d)",
                          lzo_init_result);
  r = lzo1x_decompress_safe (in, in_len, out, &n, NULL);
  if (r == LZO_E_OUTPUT_OVERRUN)
    return cloop_err_set (err, EIO, "lzo1x: block decodes to more than %zu "
                          "bytes", out_len);
  if (r != LZO_E_OK)
    return cloop_err_set (err, EIO, "lzo1x: invalid block (%s)",
                          lzo_message (r));
  if (used)
    *used = in_len;
  return check_length ("lzo1x", n, min_len, out_len, got, err);
}
#endif

#ifdef HAVE_LIBZSTD
/* One zstd frame; the content checksum is checked when present. */
static int
decode_zstd (struct decoder *dec, const void *in, size_t in_len,
             void *out, size_t out_len, size_t min_len, size_t *got,
             size_t *used, struct cloop_err *err)
{
  size_t r, frame;

  if (dec->zstd == NULL) {
    dec->zstd = ZSTD_createDCtx ();
    if (dec->zstd == NULL)
      return cloop_err_set (err, ENOMEM, "zstd: cannot allocate context");
  }
  /* Walks the frame's block headers only, not its data. */
  frame = ZSTD_findFrameCompressedSize (in, in_len);
  if (ZSTD_isError (frame))
    return cloop_err_set (err, EIO, "zstd: invalid frame (%s)",
                          ZSTD_getErrorName (frame));
  if (check_used ("zstd", frame, in_len, used, err) == -1)
    return -1;
  r = ZSTD_decompressDCtx (dec->zstd, out, out_len, in, frame);
  if (ZSTD_isError (r)) {
    if (ZSTD_getErrorCode (r) == ZSTD_error_dstSize_tooSmall)
      return cloop_err_set (err, EIO, "zstd: frame decodes to more than %zu "
                            "bytes", out_len);
    return cloop_err_set (err, EIO, "zstd: invalid frame (%s)",
                          ZSTD_getErrorName (r));
  }
  return check_length ("zstd", r, min_len, out_len, got, err);
}
#endif

/* ------------------------------------------------------------------ */

int
decoder_decode_upto (struct decoder *dec, enum block_codec codec,
                     const void *in, size_t in_len,
                     void *out, size_t out_len, size_t min_len,
                     size_t *got, size_t *used, struct cloop_err *err)
{
  size_t ignored;

  if (got == NULL)
    got = &ignored;
  /* zlib's uInt, LZ4's int: blocks are bounded far below this. */
  if (in_len > INT_MAX || out_len > INT_MAX)
    return cloop_err_set (err, EINVAL, "%s: block too large",
                          codec_name (codec));
  if (min_len > out_len)
    return cloop_err_set (err, EINVAL, "%s: minimum length %zu is above "
                          "the buffer's %zu", codec_name (codec), min_len,
                          out_len);

  if (in_len == 0 && codec != CODEC_ZERO)
    return cloop_err_set (err, EIO, "%s: no compressed bytes (zero length "
                          "in the index)", codec_name (codec));

  switch (codec) {
  case CODEC_ZERO:
    memset (out, 0, out_len);
    *got = out_len;
    if (used)
      *used = 0;
    return 0;
  case CODEC_NONE:
    if (in_len < min_len || in_len > out_len)
      return cloop_err_set (err, EIO, "none: stored block is %zu bytes, "
                            "expected %zu%s", in_len, out_len,
                            min_len < out_len ? " or fewer" : "");
    memcpy (out, in, in_len);
    *got = in_len;
    if (used)
      *used = in_len;
    return 0;
  case CODEC_ZLIB:
#ifdef HAVE_LIBDEFLATE
    if (dec->use_libdeflate)
      return decode_libdeflate (dec, in, in_len, out, out_len, min_len, got,
                                used, err);
#endif
    return decode_inflate (dec, in, in_len, out, out_len, min_len, got, used,
                           err);
#ifdef HAVE_LIBLZMA
  case CODEC_XZ:
    return decode_xz (in, in_len, out, out_len, min_len, got, used, err);
#endif
#ifdef HAVE_LIBLZ4
  case CODEC_LZ4:
    return decode_lz4 (in, in_len, out, out_len, min_len, got, used, err);
#endif
#ifdef HAVE_LIBLZO2
  case CODEC_LZO:
    return decode_lzo (in, in_len, out, out_len, min_len, got, used, err);
#endif
#ifdef HAVE_LIBZSTD
  case CODEC_ZSTD:
    return decode_zstd (dec, in, in_len, out, out_len, min_len, got, used,
                        err);
#endif
  default:
    return cloop_err_set (err, ENOTSUP, "%s: codec not supported by this "
                          "build", codec_name (codec));
  }
}

int
decoder_decode (struct decoder *dec, enum block_codec codec,
                const void *in, size_t in_len,
                void *out, size_t out_len, struct cloop_err *err)
{
  return decoder_decode_upto (dec, codec, in, in_len, out, out_len, out_len,
                              NULL, NULL, err);
}

int
decoder_decode_block (struct decoder *dec, const struct block_map *map,
                      uint64_t i, const void *in, void *out, size_t *got,
                      struct cloop_err *err)
{
  const struct block_entry *e = &map->entries[i];
  size_t used;

  if (decoder_decode_upto (dec, e->codec, in, e->length, out,
                           block_map_stream_length (map, i),
                           block_map_min_stream_length (map, i), got,
                           map->pad_align ? &used : NULL, err) == -1)
    return -1;
  if (map->pad_align && e->codec != CODEC_ZERO)
    return block_map_check_padding (map, i, in, used, err);
  return 0;
}
