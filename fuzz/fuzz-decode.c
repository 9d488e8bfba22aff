/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the block decoders (index/decode.c).
 *
 * Input: one byte selecting the codec (modulo CODEC_COUNT), one flags
 * byte (bit 0: allow a short block, as for a last block a writer did
 * not pad), a BE24 decoded length (at most DECODED_MAX), then the
 * compressed bytes.  Decoders live across inputs, as in the plugin's
 * pool, so state left behind by one block meets the next.
 * Properties: a success decodes to a length in [min_len, out_len];
 * CODEC_ZERO gives zeroes; a failure is EIO or ENOTSUP with a message;
 * for zlib, libdeflate and zlib (decoder_new (true)) agree: both
 * succeed with identical output and length, or both fail; decoding
 * the same block twice with one decoder gives the same result; asked
 * where its stream ends (used), a decoder accepts the same blocks plus
 * ones with bytes after the stream, and reports used = the input for
 * the former.
 *
 * One exception, found by this harness: libdeflate deliberately
 * accepts a few malformed Huffman headers that zlib rejects (e.g. a
 * length symbol 286/287; libdeflate issue #288, "more accepting than
 * zlib in a safe way").  So libdeflate may succeed where zlib fails
 * with "invalid stream", but only with output whose Adler-32 the
 * stream carries (checked here again), never the other way round.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "blockmap.h"
#include "decode.h"
#include "fuzz.h"

#define HEADER_LEN  5
#define DECODED_MAX (256 * 1024)

static struct decoder *fast, *zlib_only;
static unsigned char *out1, *out2;

/* Decode with dec into out; check the generic properties.  Returns the
 * decoder's result; *got is the decoded length on success, *err the
 * fault on failure. */
static int
decode (struct decoder *dec, enum block_codec codec, const uint8_t *in,
        size_t in_len, unsigned char *out, size_t out_len, size_t min_len,
        size_t *got, struct cloop_err *err)
{
  int r;

  *got = 0;
  memset (err, 0, sizeof *err);
  r = decoder_decode_upto (dec, codec, in, in_len, out, out_len, min_len,
                           got, NULL, err);
  if (r == 0) {
    FUZZ_ASSERT (*got >= min_len && *got <= out_len);
    if (codec == CODEC_ZERO)
      for (size_t i = 0; i < *got; i++)
        FUZZ_ASSERT (out[i] == 0);
  }
  else {
    FUZZ_ASSERT (r == -1);
    FUZZ_ASSERT (err->errnum == EIO || err->errnum == ENOTSUP ||
                 err->errnum == ENOMEM);
    FUZZ_ASSERT (err->msg[0] != '\0');
    FUZZ_ASSERT (codec_supported (codec) || err->errnum == ENOTSUP);
  }
  return r;
}

/* libdeflate accepted a zlib stream that zlib rejected: allowed only
 * for a malformed stream structure (not a length or truncation
 * disagreement), and only if the stream carries the Adler-32 of
 * libdeflate's output (big-endian, after the 2-byte header). */
static void
check_lenient (const uint8_t *in, size_t in_len, const unsigned char *out,
               size_t got, const struct cloop_err *zlib_err)
{
  uint32_t a = adler32 (adler32 (0, NULL, 0), out, got);
  bool found = false;

  FUZZ_ASSERT (strcmp (decoder_zlib_impl (fast), "libdeflate") == 0);
  FUZZ_ASSERT (strstr (zlib_err->msg, "invalid stream") != NULL);
  for (size_t i = 2; i + 4 <= in_len && !found; i++)
    found = in[i] == (uint8_t) (a >> 24) && in[i + 1] == (uint8_t) (a >> 16) &&
            in[i + 2] == (uint8_t) (a >> 8) && in[i + 3] == (uint8_t) a;
  FUZZ_ASSERT (found);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  enum block_codec codec;
  size_t out_len, min_len, in_len, got1, got2;
  const uint8_t *in;
  struct cloop_err err1, err2;
  int r1, r2;

  if (fast == NULL) {
    fast = decoder_new (false);
    zlib_only = decoder_new (true);
    out1 = malloc (DECODED_MAX);
    out2 = malloc (DECODED_MAX);
    if (!fast || !zlib_only || !out1 || !out2)
      abort ();
  }
  if (size < HEADER_LEN)
    return 0;
  codec = data[0] % CODEC_COUNT;
  out_len = (size_t) data[2] << 16 | (size_t) data[3] << 8 | data[4];
  if (out_len == 0 || out_len > DECODED_MAX)
    return 0;
  min_len = data[1] & 1 ? 1 : out_len;
  in = data + HEADER_LEN;
  in_len = size - HEADER_LEN;

  r1 = decode (fast, codec, in, in_len, out1, out_len, min_len, &got1, &err1);
  r2 = decode (codec == CODEC_ZLIB ? zlib_only : fast, codec, in, in_len,
               out2, out_len, min_len, &got2, &err2);
  if (codec == CODEC_ZLIB && r1 == 0 && r2 == -1) {
    check_lenient (in, in_len, out1, got1, &err2);
    return 0;
  }
  FUZZ_ASSERT (r1 == r2);
  if (r1 == 0) {
    FUZZ_ASSERT (got1 == got2);
    FUZZ_ASSERT (memcmp (out1, out2, got1) == 0);
  }

  /* Asked where the stream ends, a decoder allows bytes after it; a
   * stream that fills the input is accepted either way, alike. */
  size_t used = SIZE_MAX;
  r2 = decoder_decode_upto (fast, codec, in, in_len, out2, out_len, min_len,
                            &got2, &used, &err2);
  if (r1 == 0) {
    FUZZ_ASSERT (r2 == 0 && got2 == got1 && memcmp (out1, out2, got1) == 0);
    FUZZ_ASSERT (codec == CODEC_ZERO || used == in_len);
  }
  else if (r2 == 0)
    FUZZ_ASSERT (used < in_len);
  return 0;
}
