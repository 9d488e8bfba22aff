/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the block-store index parser (index/store.c).
 *
 * The input is the bytes of an index.  Properties: an index that
 * parses is one the writer accepts and writes back byte for byte (the
 * format has one encoding, and signatures are over exact bytes); its
 * block map is consistent with it; and hashes and paths format.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "fuzz.h"
#include "store.h"

#define ENTRIES_CHECKED 4096    /* per input, to keep executions fast */

static void
check_map (const struct store_index *idx)
{
  struct cloop_err err = { 0 };
  struct block_map *map = store_index_to_map (idx, &err);
  uint64_t i;

  FUZZ_ASSERT (map != NULL);
  FUZZ_ASSERT (map->num_blocks == idx->num_blocks);
  FUZZ_ASSERT (map->block_size == idx->block_size);
  FUZZ_ASSERT (map->size == idx->size);
  FUZZ_ASSERT (map->hash_len == STORE_HASH_LEN);
  for (i = 0; i < idx->num_blocks && i < ENTRIES_CHECKED; i++) {
    const struct block_entry *e = &map->entries[i];
    char path[STORE_BLOCK_PATH_MAX], want[STORE_BLOCK_PATH_MAX + 16];
    char hex[65];
    unsigned char back[STORE_HASH_LEN];

    if (store_index_is_zero (idx, i)) {
      FUZZ_ASSERT (e->codec == CODEC_ZERO);
      continue;
    }
    FUZZ_ASSERT (e->codec == idx->codec && e->length == idx->lengths[i]);
    FUZZ_ASSERT (e->length > 0 && e->length <= map->max_length);
    FUZZ_ASSERT (memcmp (map->hashes + i * STORE_HASH_LEN,
                         idx->hashes + i * STORE_HASH_LEN,
                         STORE_HASH_LEN) == 0);
    store_hex (hex, idx->hashes + i * STORE_HASH_LEN);
    FUZZ_ASSERT (strlen (hex) == 64);
    store_block_path (path, idx->hashes + i * STORE_HASH_LEN);
    snprintf (want, sizeof want, "blocks/%.2s/%s", hex, hex);
    FUZZ_ASSERT (strcmp (path, want) == 0);
    FUZZ_ASSERT (store_unhex (back, hex) == 0);
    FUZZ_ASSERT (memcmp (back, idx->hashes + i * STORE_HASH_LEN,
                         STORE_HASH_LEN) == 0);
  }
  block_map_free (map);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct cloop_err err = { 0 };
  struct store_index *idx;
  unsigned char *out = NULL;
  size_t out_len = 0;
  char hex[65];
  unsigned char hash[STORE_HASH_LEN];

  store_probe_head (data, size);
  /* The hex parser, on the input's first 64 bytes as text. */
  if (size >= 64) {
    memcpy (hex, data, 64);
    hex[64] = '\0';
    store_unhex (hash, hex);
  }

  idx = store_index_parse (data, size, &err);
  if (idx == NULL) {
    FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == ENOMEM);
    return 0;
  }
  FUZZ_ASSERT (idx->description != NULL);
  FUZZ_ASSERT (strlen (idx->name) >= 1 && strlen (idx->name) <= STORE_NAME_MAX);
  FUZZ_ASSERT (store_index_write (idx, &out, &out_len, &err) == 0);
  FUZZ_ASSERT (out_len == size && memcmp (out, data, size) == 0);
  free (out);
  check_map (idx);
  store_index_free (idx);
  return 0;
}
