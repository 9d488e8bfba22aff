/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the block-hash list parser (index/hashlist.c).
 *
 * The input is the bytes of a list.  Properties: a list that parses is
 * one the writer accepts and writes back byte for byte (the format has
 * one encoding; signatures are over exact bytes), with geometry in
 * limits; a failure is EINVAL or ENOMEM with a message.
 */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "fuzz.h"
#include "hashlist.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct cloop_err err = { 0 };
  struct hash_list *list;
  unsigned char *out = NULL;
  size_t out_len = 0;

  hash_list_probe_head (data, size);
  list = hash_list_parse (data, size, &err);
  if (list == NULL) {
    FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == ENOMEM);
    FUZZ_ASSERT (err.msg[0] != '\0');
    return 0;
  }
  FUZZ_ASSERT (list->block_size > 0 && list->block_size <= BLOCK_SIZE_MAX);
  FUZZ_ASSERT (list->num_blocks <= NUM_BLOCKS_MAX);
  FUZZ_ASSERT (size == HASHLIST_HEADER_LEN +
               list->num_blocks * HASHLIST_HASH_LEN);
  FUZZ_ASSERT (hash_list_write (list, &out, &out_len, &err) == 0);
  FUZZ_ASSERT (out_len == size && memcmp (out, data, size) == 0);
  free (out);
  hash_list_free (list);
  return 0;
}
