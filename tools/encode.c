/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: block encoders (see encode.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#ifdef HAVE_LIBZSTD
#include <zstd.h>
#endif
#ifdef HAVE_LIBLZMA
#include <lzma.h>
#endif

#include "encode.h"

/* Default levels, chosen by measurement (cloop-store.pod, "BLOCK SIZE
 * AND LEVELS"). */
#define ZLIB_DEFAULT_LEVEL 6
#define ZSTD_DEFAULT_LEVEL 9
#define XZ_DEFAULT_LEVEL   6

struct block_encoder {
  enum block_codec codec;
  int level;
#ifdef HAVE_LIBZSTD
  ZSTD_CCtx *zstd;
#endif
};

int
encoder_codec_parse (const char *name, enum block_codec *codec)
{
  if (strcmp (name, "zlib") == 0)
    *codec = CODEC_ZLIB;
  else if (strcmp (name, "zstd") == 0)
    *codec = CODEC_ZSTD;
  else if (strcmp (name, "xz") == 0)
    *codec = CODEC_XZ;
  else
    return -1;
  return 0;
}

bool
encoder_codec_supported (enum block_codec codec)
{
  switch (codec) {
  case CODEC_ZLIB: return true;
#ifdef HAVE_LIBZSTD
  case CODEC_ZSTD: return true;
#endif
#ifdef HAVE_LIBLZMA
  case CODEC_XZ: return true;
#endif
  default: return false;
  }
}

void
encoder_levels (enum block_codec codec, int *min, int *max, int *def)
{
  switch (codec) {
  case CODEC_ZSTD:
    *min = 1; *max = 22; *def = ZSTD_DEFAULT_LEVEL;
    break;
  case CODEC_XZ:
    *min = 0; *max = 9; *def = XZ_DEFAULT_LEVEL;
    break;
  default:
    *min = 1; *max = 9; *def = ZLIB_DEFAULT_LEVEL;
    break;
  }
}

size_t
encoder_bound (enum block_codec codec, size_t len)
{
  switch (codec) {
#ifdef HAVE_LIBZSTD
  case CODEC_ZSTD: return ZSTD_compressBound (len);
#endif
#ifdef HAVE_LIBLZMA
  case CODEC_XZ: return lzma_stream_buffer_bound (len);
#endif
  default: return compressBound (len);
  }
}

struct block_encoder *
encoder_new (enum block_codec codec, int level, struct cloop_err *err)
{
  struct block_encoder *enc;

  if (!encoder_codec_supported (codec)) {
    cloop_err_set (err, ENOTSUP, "codec %s is not built in",
                   codec_name (codec));
    return NULL;
  }
  enc = calloc (1, sizeof *enc);
  if (enc == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  enc->codec = codec;
  enc->level = level;
#ifdef HAVE_LIBZSTD
  if (codec == CODEC_ZSTD && (enc->zstd = ZSTD_createCCtx ()) == NULL) {
    free (enc);
    cloop_err_set (err, ENOMEM, "zstd: cannot create a context");
    return NULL;
  }
#endif
  return enc;
}

void
encoder_free (struct block_encoder *enc)
{
  if (enc == NULL)
    return;
#ifdef HAVE_LIBZSTD
  ZSTD_freeCCtx (enc->zstd);
#endif
  free (enc);
}

static size_t
compress_zlib (struct block_encoder *enc, const void *in, size_t in_len,
               void *out, size_t out_cap, struct cloop_err *err)
{
  uLongf out_len = out_cap;
  int r = compress2 (out, &out_len, in, in_len, enc->level);

  if (r != Z_OK) {
    cloop_err_set (err, EIO, "zlib: compress2 failed (%d)", r);
    return 0;
  }
  return out_len;
}

#ifdef HAVE_LIBZSTD
static size_t
compress_zstd (struct block_encoder *enc, const void *in, size_t in_len,
               void *out, size_t out_cap, struct cloop_err *err)
{
  size_t r = ZSTD_compressCCtx (enc->zstd, out, out_cap, in, in_len,
                                enc->level);

  if (ZSTD_isError (r)) {
    cloop_err_set (err, EIO, "zstd: %s", ZSTD_getErrorName (r));
    return 0;
  }
  return r;
}
#endif

#ifdef HAVE_LIBLZMA
static size_t
compress_xz (struct block_encoder *enc, const void *in, size_t in_len,
             void *out, size_t out_cap, struct cloop_err *err)
{
  size_t out_pos = 0;
  lzma_ret r = lzma_easy_buffer_encode (enc->level, LZMA_CHECK_CRC32, NULL,
                                        in, in_len, out, &out_pos, out_cap);

  if (r != LZMA_OK) {
    cloop_err_set (err, EIO, "xz: lzma_easy_buffer_encode failed (%d)",
                   (int) r);
    return 0;
  }
  return out_pos;
}
#endif

size_t
encoder_compress (struct block_encoder *enc, const void *in, size_t in_len,
                  void *out, size_t out_cap, struct cloop_err *err)
{
  switch (enc->codec) {
#ifdef HAVE_LIBZSTD
  case CODEC_ZSTD:
    return compress_zstd (enc, in, in_len, out, out_cap, err);
#endif
#ifdef HAVE_LIBLZMA
  case CODEC_XZ:
    return compress_xz (enc, in, in_len, out, out_cap, err);
#endif
  default:
    return compress_zlib (enc, in, in_len, out, out_cap, err);
  }
}
