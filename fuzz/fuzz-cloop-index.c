/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the cloop dialects' header, tail and index parser
 * (index/cloop.c) through its byte_reader interface.
 *
 * The input is a whole container.  Properties: cloop_open never reads
 * outside the container; a map it returns is consistent (geometry in
 * limits, every stored block inside the container and within the
 * codec bound); the first blocks of such a map decode (or fail
 * cleanly) with the sizes the map gives; and a reader fault at the
 * last read of a successful open fails the open cleanly (no leak).
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "cloop.h"
#include "decode.h"
#include "fuzz.h"

#define DECODE_BLOCKS    2              /* decode this many blocks ... */
#define DECODE_SIZE_MAX  (256 * 1024)   /* ... if no larger than this */

struct mem_reader {
  const uint8_t *data;
  size_t len;
  unsigned calls;               /* preads so far */
  unsigned fail_at;             /* fail this call (1-based), 0 = never */
};

static int
mem_pread (void *opaque, void *buf, size_t len, uint64_t offset,
           struct cloop_err *err)
{
  struct mem_reader *m = opaque;

  FUZZ_ASSERT (offset <= m->len && len <= m->len - offset);
  if (++m->calls == m->fail_at)
    return cloop_err_set (err, EIO, "injected read fault");
  memcpy (buf, m->data + offset, len);
  return 0;
}

static struct decoder *dec;

/* Check what a successful open promises. */
static void
check_map (const struct block_map *map, const uint8_t *data, size_t size)
{
  uint64_t i, bound = block_map_length_bound (map->block_size);
  static unsigned char *out;
  struct cloop_err err;

  FUZZ_ASSERT (map->block_size > 0 && map->block_size <= BLOCK_SIZE_MAX);
  FUZZ_ASSERT (map->block_size % BLOCK_SIZE_ALIGN == 0);
  FUZZ_ASSERT (map->num_blocks <= NUM_BLOCKS_MAX);
  FUZZ_ASSERT (map->size <= map->num_blocks * map->block_size);
  FUZZ_ASSERT (map->dialect[0] != '\0' && !map->objects_by_hash);
  FUZZ_ASSERT (memchr (map->dialect, '\0', sizeof map->dialect));
  for (i = 0; i < map->num_blocks; i++) {
    const struct block_entry *e = &map->entries[i];

    FUZZ_ASSERT (e->codec < CODEC_COUNT);
    FUZZ_ASSERT (e->length <= map->max_length);
    FUZZ_ASSERT (block_map_min_stream_length (map, i) <=
                 block_map_stream_length (map, i));
    FUZZ_ASSERT (block_map_stream_length (map, i) <= map->block_size);
    FUZZ_ASSERT (block_map_decoded_length (map, i) <=
                 block_map_stream_length (map, i));
    if (e->codec == CODEC_ZERO)
      continue;
    /* (Length 0 with a codec is kept, and fails when read.) */
    FUZZ_ASSERT (e->length <= bound);
    FUZZ_ASSERT (e->offset <= size && e->length <= size - e->offset);
  }

  if (map->block_size > DECODE_SIZE_MAX)
    return;
  if (out == NULL && (out = malloc (DECODE_SIZE_MAX)) == NULL)
    abort ();
  if (dec == NULL && (dec = decoder_new (false)) == NULL)
    abort ();
  for (i = 0; i < map->num_blocks && i < DECODE_BLOCKS; i++) {
    const struct block_entry *e = &map->entries[i];
    size_t want = block_map_stream_length (map, i), got = 0;
    /* A zero block's offset means nothing (it may lie anywhere). */
    const uint8_t *in = e->codec == CODEC_ZERO ? data : data + e->offset;

    if (decoder_decode_block (dec, map, i, in, out, &got, &err) == 0)
      FUZZ_ASSERT (got >= block_map_min_stream_length (map, i) &&
                   got <= want);
    else
      FUZZ_ASSERT (err.errnum == EIO || err.errnum == ENOTSUP ||
                 err.errnum == ENOMEM);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct mem_reader m = { .data = data, .len = size };
  struct byte_reader r = { .opaque = &m, .size = size, .pread = mem_pread };
  struct cloop_err err = { 0 };
  struct block_map *map;
  unsigned calls;

  cloop_probe_head (data, size);
  map = cloop_open (&r, &err);
  if (map == NULL) {
    FUZZ_ASSERT (err.errnum != 0 && err.msg[0] != '\0');
    return 0;
  }
  check_map (map, data, size);
  block_map_free (map);

  /* The same open with its last read failing must fail cleanly. */
  calls = m.calls;
  if (calls > 0) {
    m.calls = 0;
    m.fail_at = calls;
    map = cloop_open (&r, &err);
    FUZZ_ASSERT (map == NULL && err.errnum == EIO);
  }
  return 0;
}
