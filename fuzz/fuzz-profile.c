/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the boot-profile parsers (index/profile.c).
 *
 * The first byte of the input picks the parser, the rest is its input:
 * even: the binary form; odd: a recorded boot (text).  Properties: a
 * binary profile that decodes encodes back byte for byte (one
 * encoding); a recorded boot that parses formats back to its input
 * (plus the final newline if it had none), parses again to the same
 * record, and merges with itself into its blocks ordered by (first
 * touch ms, block); a merged profile encodes and decodes to itself.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "profile.h"

static void
fuzz_binary (const uint8_t *data, size_t size)
{
  struct cloop_err err = { 0 };
  uint32_t *blocks = NULL, bs = 0;
  uint64_t nb = 0;
  size_t count = 0, len = 0;
  unsigned char *out = NULL;

  profile_probe_head (data, size);
  if (profile_decode (data, size, 0, 0, &blocks, &count, &nb, &bs,
                      &err) == -1) {
    FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == ENOMEM);
    return;
  }
  FUZZ_ASSERT (count >= 1 && count <= nb);
  FUZZ_ASSERT (profile_encode (blocks, count, nb, bs, &out, &len, &err) == 0);
  FUZZ_ASSERT (len == size && memcmp (out, data, size) == 0);
  free (out);
  free (blocks);
}

/* Merge rec with itself: same blocks, ordered by (ms, block); then the
 * binary round trip. */
static void
check_merge (const struct profile_record *rec)
{
  const struct profile_record *two[2] = { rec, rec };
  struct cloop_err err = { 0 };
  uint32_t *blocks = NULL, *back = NULL;
  unsigned char *bin = NULL;
  size_t count = 0, n2 = 0, len = 0, i, j;

  if (rec->count == 0) {
    FUZZ_ASSERT (profile_merge (two, 2, &blocks, &count, &err) == -1);
    return;
  }
  FUZZ_ASSERT (profile_merge (two, 2, &blocks, &count, &err) == 0);
  FUZZ_ASSERT (count == rec->count);
  for (i = 1; i < count; i++) {
    uint32_t ms_prev = 0, ms = 0;
    for (j = 0; j < rec->count; j++) {
      if (rec->touches[j].block == blocks[i - 1]) ms_prev = rec->touches[j].ms;
      if (rec->touches[j].block == blocks[i]) ms = rec->touches[j].ms;
    }
    FUZZ_ASSERT (ms_prev < ms || (ms_prev == ms && blocks[i - 1] < blocks[i]));
    if (i > 256)
      break;                    /* quadratic; keep executions fast */
  }
  FUZZ_ASSERT (profile_encode (blocks, count, rec->num_blocks,
                               rec->block_size, &bin, &len, &err) == 0);
  FUZZ_ASSERT (profile_decode (bin, len, rec->num_blocks, rec->block_size,
                               &back, &n2, NULL, NULL, &err) == 0);
  FUZZ_ASSERT (n2 == count && memcmp (back, blocks, count * 4) == 0);
  free (back);
  free (bin);
  free (blocks);
}

static void
fuzz_text (const uint8_t *data, size_t size)
{
  struct cloop_err err = { 0 };
  struct profile_record *rec, *again;
  char *text = NULL;
  size_t len = 0;

  rec = profile_record_parse (data, size, "fuzz", &err);
  if (rec == NULL) {
    FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == ENOMEM);
    FUZZ_ASSERT (err.errnum != EINVAL || strncmp (err.msg, "fuzz:", 5) == 0);
    return;
  }
  FUZZ_ASSERT (profile_record_format (rec, &text, &len, &err) == 0);
  FUZZ_ASSERT (len == size || (len == size + 1 && text[size] == '\n'));
  FUZZ_ASSERT (memcmp (text, data, size) == 0);
  again = profile_record_parse (text, len, "again", &err);
  FUZZ_ASSERT (again != NULL && again->count == rec->count &&
               strcmp (again->identity, rec->identity) == 0 &&
               memcmp (again->touches, rec->touches,
                       rec->count * sizeof *rec->touches) == 0);
  profile_record_free (again);
  free (text);
  check_merge (rec);
  profile_record_free (rec);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  if (data[0] % 2 == 0)
    fuzz_binary (data + 1, size - 1);
  else
    fuzz_text (data + 1, size - 1);
  return 0;
}
