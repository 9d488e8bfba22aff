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

#include "blockmap.h"

struct decoder;

/* Create a decoder.  If force_zlib is true, zlib-format blocks use
 * zlib's inflate even when libdeflate is available (tests use this to
 * check both paths).  Returns NULL on ENOMEM. */
struct decoder *decoder_new (bool force_zlib);
void decoder_free (struct decoder *dec);

/* True if this build can decode codec. */
bool codec_supported (enum block_codec codec);

/* Name of the zlib-format implementation in use: "libdeflate" or
 * "zlib". */
const char *decoder_zlib_impl (const struct decoder *dec);

/* Decode one block: in[0..in_len) with codec into out, which must
 * decode to exactly out_len bytes (the block's decoded length).
 * CODEC_ZERO ignores in and zero-fills out.  Any other outcome
 * (corrupt stream, trailing garbage the codec detects, fewer or more
 * than out_len bytes, unsupported codec) returns -1 with err set (EIO,
 * or ENOTSUP for a codec this build lacks) and a message naming the
 * codec and the fault.  out may be partly written on failure. */
int decoder_decode (struct decoder *dec, enum block_codec codec,
                    const void *in, size_t in_len,
                    void *out, size_t out_len, struct cloop_err *err);

/* As decoder_decode, but the block may decode to anything from min_len
 * to out_len bytes (min_len <= out_len); *got (if not NULL) receives
 * the length.  For a last block that a writer did not pad. */
int decoder_decode_upto (struct decoder *dec, enum block_codec codec,
                         const void *in, size_t in_len,
                         void *out, size_t out_len, size_t min_len,
                         size_t *got, struct cloop_err *err);

#endif /* CLOOP_DECODE_H */
