/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: compress one block with zlib, zstd or xz, the codecs a
 * block store may use (docs/FORMAT.md).  A struct block_encoder keeps
 * per-thread codec state; use one per thread.
 */
#ifndef CLOOP_STORE_ENCODE_H
#define CLOOP_STORE_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockmap.h"
#include "error.h"

struct block_encoder;

/* Parse a codec name ("zlib", "zstd", "xz").  0 with *codec set, or -1
 * if unknown. */
int encoder_codec_parse (const char *name, enum block_codec *codec);

/* True if this build can write codec. */
bool encoder_codec_supported (enum block_codec codec);

/* Valid level range and the default level of codec. */
void encoder_levels (enum block_codec codec, int *min, int *max, int *def);

/* Worst-case compressed size of len input bytes. */
size_t encoder_bound (enum block_codec codec, size_t len);

/* A new encoder for codec at level.  NULL with err set. */
struct block_encoder *encoder_new (enum block_codec codec, int level,
                                   struct cloop_err *err);
void encoder_free (struct block_encoder *enc);

/* Compress in[0..in_len) into out (out_cap >= encoder_bound bytes):
 * zlib = one RFC 1950 stream, zstd = one frame, xz = one .xz stream
 * with a CRC32 check.  Returns the compressed length, or 0 with err set
 * (EIO) on failure. */
size_t encoder_compress (struct block_encoder *enc, const void *in,
                         size_t in_len, void *out, size_t out_cap,
                         struct cloop_err *err);

#endif /* CLOOP_STORE_ENCODE_H */
