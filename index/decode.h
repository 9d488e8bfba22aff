/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: block decoders (zlib via libdeflate or zlib, xz, lz4,
 * lzo1x, zstd, raw).
 *
 * A struct decoder holds per-thread codec state (decompressor objects
 * are reused between blocks); it is not thread-safe, so use one per
 * thread at a time (the plugin keeps a pool).
 */
#ifndef CLOOP_DECODE_H
#define CLOOP_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockmap.h"

struct decoder;

/* Create a decoder.  If force_zlib is true, zlib-format blocks use
 * zlib's inflate even when libdeflate is available (tests use this to
 * check both paths).  The two agree on every stream (same output, or
 * both fail), except that libdeflate deliberately accepts a few
 * malformed Huffman headers zlib rejects (libdeflate issue #288); its
 * output is then still Adler-32-checked and of exactly the asked
 * length.  Returns NULL on ENOMEM. */
struct decoder *decoder_new (bool force_zlib);
void decoder_free (struct decoder *dec);

/* True if this build can decode codec. */
bool codec_supported (enum block_codec codec);

/* Name of the zlib-format implementation in use: "libdeflate" or
 * "zlib". */
const char *decoder_zlib_impl (const struct decoder *dec);

/* Decode one block: in[0..in_len) with codec into out, which must
 * decode to exactly out_len bytes (the block's decoded length).  The
 * input must be exactly one stream: bytes after its end are an error.
 * CODEC_ZERO ignores in and zero-fills out; for any other codec an
 * empty input is an error.  Any other outcome (corrupt stream, bytes
 * after the stream, fewer or more than out_len bytes, unsupported
 * codec) returns -1 with err set (EIO, or ENOTSUP for a codec this
 * build lacks) and a message naming the codec and the fault.  out may
 * be partly written on failure. */
int decoder_decode (struct decoder *dec, enum block_codec codec,
                    const void *in, size_t in_len,
                    void *out, size_t out_len, struct cloop_err *err);

/* As decoder_decode, but the block may decode to anything from min_len
 * to out_len bytes (min_len <= out_len); *got (if not NULL) receives
 * the length (for a last block that a writer did not pad).  If used is
 * not NULL, bytes after the end of the stream are left to the caller:
 * *used receives the stream's length (in_len for lz4 and none, which
 * have no end of their own; lzo1x still fails on them). */
int decoder_decode_upto (struct decoder *dec, enum block_codec codec,
                         const void *in, size_t in_len,
                         void *out, size_t out_len, size_t min_len,
                         size_t *got, size_t *used, struct cloop_err *err);

/* Decode block i of map from in (its entries[i].length compressed
 * bytes) into out (block_map_stream_length bytes), by the map's rules:
 * the decoded length (block_map_min_stream_length up to
 * block_map_stream_length; *got receives it) and what may follow the
 * stream (map->pad_align).  0, or -1 with err set as decoder_decode. */
int decoder_decode_block (struct decoder *dec, const struct block_map *map,
                          uint64_t i, const void *in, void *out, size_t *got,
                          struct cloop_err *err);

#endif /* CLOOP_DECODE_H */
