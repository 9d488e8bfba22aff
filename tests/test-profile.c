/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/profile.c (boot profiles) and of
 * the profile section of block-store indexes (index/store.c).
 *
 * Recorded boots round-trip through the text format; malformed ones
 * are refused with EINVAL naming the file and line; three boots merge
 * in the documented order; the binary form round-trips and refuses
 * every malformation; an index with a profile is version 2, writes
 * back byte for byte, gives its map the profile, and refuses a damaged
 * or unknown section.
 * Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "byteorder.h"
#include "profile.h"
#include "store.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

/* Parse text as a recorded boot named "boot.txt". */
static struct profile_record *
parse (const char *text, struct cloop_err *err)
{
  return profile_record_parse (text, strlen (text), "boot.txt", err);
}

/* True if text is refused with EINVAL and a message containing want. */
static bool
refused (const char *text, const char *want)
{
  struct cloop_err err = { 0 };
  struct profile_record *rec = parse (text, &err);

  if (rec != NULL) {
    profile_record_free (rec);
    fprintf (stderr, "accepted: %s\n", text);
    return false;
  }
  if (err.errnum != EINVAL || strstr (err.msg, want) == NULL) {
    fprintf (stderr, "message '%s' lacks '%s'\n", err.msg, want);
    return false;
  }
  return true;
}

static void
test_record_roundtrip (void)
{
  static const char text[] =
    "nbdkit-cloop-profile 1\n"
    "image 100 65536 knoppix root\n"
    "7 0\n0 3\n99 4000000000\n8 12\n";
  struct cloop_err err = { 0 };
  struct profile_record *rec = parse (text, &err);
  char *out = NULL;
  size_t len = 0;

  CHECK (rec != NULL);
  if (rec == NULL)
    return;
  CHECK (strcmp (rec->identity, "knoppix root") == 0);
  CHECK (rec->num_blocks == 100 && rec->block_size == 65536);
  CHECK (rec->count == 4);
  CHECK (rec->touches[0].block == 7 && rec->touches[0].ms == 0);
  CHECK (rec->touches[2].block == 99 && rec->touches[2].ms == 4000000000u);
  CHECK (profile_record_format (rec, &out, &len, &err) == 0);
  CHECK (len == strlen (text) && memcmp (out, text, len) == 0);
  free (out);
  /* A missing final newline is accepted; an empty record is valid. */
  profile_record_free (rec);
  rec = parse ("nbdkit-cloop-profile 1\nimage 1 512 x\n0 5", &err);
  CHECK (rec != NULL && rec->count == 1 && rec->touches[0].ms == 5);
  profile_record_free (rec);
  rec = parse ("nbdkit-cloop-profile 1\nimage 1 512 x\n", &err);
  CHECK (rec != NULL && rec->count == 0);
  profile_record_free (rec);
}

static void
test_record_errors (void)
{
  const char *h = "nbdkit-cloop-profile 1\nimage 10 4096 img\n";
  char buf[256];

  CHECK (refused ("", "boot.txt:1: not a recorded boot"));
  CHECK (refused ("nbdkit-cloop-profile 2\n", "boot.txt:1: not a recorded"));
  CHECK (refused ("nbdkit-cloop-profile 1\n", "boot.txt:2: missing 'image'"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 10 4096\n",
                  "boot.txt:2: after the block size"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 10 1000 x\n",
                  "boot.txt:2:"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 0 4096 x\n", "boot.txt:2:"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 16777217 512 x\n",
                  "boot.txt:2: the block count is larger"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 10 4096 a\tb\n",
                  "boot.txt:2: the image name"));
  CHECK (refused ("nbdkit-cloop-profile 1\r\nimage 10 4096 x\n",
                  "boot.txt:1: carriage return"));
#define BAD(body, want) \
  (snprintf (buf, sizeof buf, "%s%s", h, body), refused (buf, want))
  CHECK (BAD ("10 0\n", "boot.txt:3: the block number is larger than 9"));
  CHECK (BAD ("1 0\n2 0\n1 5\n", "boot.txt:5: block 1 is listed twice"));
  CHECK (BAD ("1 4000000001\n", "boot.txt:3: the milliseconds is larger"));
  CHECK (BAD ("1 99999999999999999999999\n", "boot.txt:3:"));
  CHECK (BAD ("01 0\n", "boot.txt:3: the block number has a leading zero"));
  CHECK (BAD ("-1 0\n", "boot.txt:3: expected the block number"));
  CHECK (BAD ("1  0\n", "boot.txt:3: expected the milliseconds"));
  CHECK (BAD ("1 0 \n", "boot.txt:3: after the milliseconds"));
  CHECK (BAD ("1\n", "boot.txt:3: after the block number"));
  CHECK (BAD ("1 0\n\n2 0\n", "boot.txt:4: expected the block number"));
  CHECK (BAD ("# comment\n", "boot.txt:3:"));
  CHECK (refused ("nbdkit-cloop-profile 1\nimage 1 512 x\n5 0\n",
                  "boot.txt:3: the block number is larger than 0"));
#undef BAD
  {
    struct cloop_err err = { 0 };
    static const char nul[] = "nbdkit-cloop-profile 1\nimage 10 4096 x\n1\0 0\n";
    CHECK (profile_record_parse (nul, sizeof nul - 1, "n.txt", &err) == NULL);
    CHECK (strstr (err.msg, "n.txt:3: NUL byte") != NULL);
  }
}

/* Three boots of one image: the merge order is (boots desc, median
 * ms asc, block asc). */
static void
test_merge (void)
{
  static const char *boots[3] = {
    "nbdkit-cloop-profile 1\nimage 50 4096 img\n"
    "5 10\n6 20\n7 30\n40 5\n9 100\n",
    "nbdkit-cloop-profile 1\nimage 50 4096 img\n"
    "6 2\n5 40\n7 31\n30 1\n9 100\n",
    "nbdkit-cloop-profile 1\nimage 50 4096 img\n"
    "7 29\n5 20\n30 3\n8 0\n6 100\n",
  };
  /* 5: 3 boots, median 20; 6: 3, median 20; 7: 3, 30; 9: 2, (100+100)/2;
   * 30: 2, (1+3)/2 = 2; 40: 1, 5; 8: 1, 0.
   * -> 5 6 (tie on 20: block order), 7, then 30 (2), 9 (100), then
   * 8 (0), 40 (5). */
  static const uint32_t want[] = { 5, 6, 7, 30, 9, 8, 40 };
  struct profile_record *recs[3];
  struct cloop_err err = { 0 };
  uint32_t *blocks = NULL;
  size_t count = 0, i;

  for (i = 0; i < 3; i++) {
    recs[i] = parse (boots[i], &err);
    CHECK (recs[i] != NULL);
    if (recs[i] == NULL)
      return;
  }
  CHECK (profile_merge ((const struct profile_record *const *) recs, 3,
                        &blocks, &count, &err) == 0);
  CHECK (count == sizeof want / sizeof want[0]);
  for (i = 0; i < count && i < sizeof want / sizeof want[0]; i++)
    CHECK (blocks[i] == want[i]);
  free (blocks);
  /* An even count of boots: the mean of the middle two, rounded down. */
  CHECK (profile_merge ((const struct profile_record *const *) recs, 2,
                        &blocks, &count, &err) == 0);
  /* 5: (10+40)/2=25, 6: (20+2)/2=11, 7: 30, 9: 100, 40: 5, 30: 1. */
  CHECK (count == 6 && blocks[0] == 6 && blocks[1] == 5 && blocks[2] == 7 &&
         blocks[3] == 9 && blocks[4] == 30 && blocks[5] == 40);
  free (blocks);
  /* Another image is refused. */
  recs[2]->num_blocks = 51;
  CHECK (profile_merge ((const struct profile_record *const *) recs, 3,
                        &blocks, &count, &err) == -1);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "boot 3") != NULL);
  for (i = 0; i < 3; i++)
    profile_record_free (recs[i]);
}

/* Decode buf and expect EINVAL with want in the message. */
static bool
decode_refused (const unsigned char *buf, size_t len, const char *want)
{
  struct cloop_err err = { 0 };
  uint32_t *blocks = NULL;
  size_t count = 0;

  if (profile_decode (buf, len, 0, 0, &blocks, &count, NULL, NULL,
                      &err) == 0) {
    free (blocks);
    fprintf (stderr, "binary profile accepted (want '%s')\n", want);
    return false;
  }
  if (err.errnum != EINVAL || strstr (err.msg, want) == NULL) {
    fprintf (stderr, "message '%s' lacks '%s'\n", err.msg, want);
    return false;
  }
  return true;
}

static void
test_binary (void)
{
  static const uint32_t list[] = { 0, 1, 2, 3, 1000, 999, 7, 200000 };
  struct cloop_err err = { 0 };
  unsigned char *buf = NULL, bad[64];
  uint32_t *out = NULL, bs = 0;
  uint64_t nb = 0;
  size_t len = 0, count = 0;

  CHECK (profile_encode (list, 8, 200001, 4096, &buf, &len, &err) == 0);
  /* Sequential runs take one byte each. */
  CHECK (len == PROFILE_HEADER_LEN + 1 + 1 + 1 + 1 + 2 + 1 + 2 + 3);
  CHECK (profile_decode (buf, len, 200001, 4096, &out, &count, &nb, &bs,
                         &err) == 0);
  CHECK (count == 8 && memcmp (out, list, sizeof list) == 0);
  CHECK (nb == 200001 && bs == 4096);
  free (out);
  /* Another image. */
  CHECK (profile_decode (buf, len, 200002, 4096, &out, &count, NULL, NULL,
                         &err) == -1 && strstr (err.msg, "200001") != NULL);
  CHECK (profile_decode (buf, len, 0, 8192, &out, &count, NULL, NULL,
                         &err) == -1);
  CHECK (decode_refused (buf, len - 1, "truncated in entry 7"));
  CHECK (decode_refused (buf, 20, "truncated header"));
  memcpy (bad, buf, len);
  bad[len] = 0;
  CHECK (decode_refused (bad, len + 1, "1 trailing bytes"));
  memcpy (bad, buf, len); bad[0] = 'X';
  CHECK (decode_refused (bad, len, "bad magic"));
  memcpy (bad, buf, len); bad[11] = 2;
  CHECK (decode_refused (bad, len, "unsupported version 2"));
  memcpy (bad, buf, len); bad[15] = 33;
  CHECK (decode_refused (bad, len, "header length 33"));
  memcpy (bad, buf, len); store_be32 (bad + 28, 0);
  CHECK (decode_refused (bad, len, "0 blocks"));
  memcpy (bad, buf, len); store_be32 (bad + 28, 1u << 30);
  CHECK (decode_refused (bad, len, "blocks (1 to 200001"));
  memcpy (bad, buf, len); store_be64 (bad + 16, (UINT64_C (1) << 24) + 1);
  CHECK (decode_refused (bad, len, "image block count"));
  memcpy (bad, buf, len); store_be32 (bad + 24, 1000);
  CHECK (decode_refused (bad, len, "profile"));
  /* A repeated block: entry 1 delta -1 (zigzag 1) after block 0. */
  memcpy (bad, buf, len); bad[33] = 1;
  CHECK (decode_refused (bad, len, "block 0 is listed twice"));
  /* Below block 0: zigzag 1 as the first entry = block -1. */
  memcpy (bad, buf, len); bad[32] = 1;
  CHECK (decode_refused (bad, len, "block -1 is outside"));
  /* Non-canonical varint 0x80 0x00. */
  memcpy (bad, buf, 32); bad[28] = 0; bad[29] = 0; bad[30] = 0; bad[31] = 1;
  bad[32] = 0x80; bad[33] = 0x00;
  CHECK (decode_refused (bad, 34, "shortest form"));
  memset (bad + 32, 0xff, 6);
  CHECK (decode_refused (bad, 38, "longer than 5 bytes"));
  free (buf);
  /* The encoder refuses what the decoder would. */
  CHECK (profile_encode (list, 8, 1000, 4096, &buf, &len, &err) == -1);
  CHECK (profile_encode (list, 0, 1000, 4096, &buf, &len, &err) == -1);
}

/* A small valid index with n blocks (every one a zero block). */
static struct store_index *
small_index (uint64_t n)
{
  struct cloop_err err = { 0 };
  struct store_index *idx = store_index_new (n * 4096, 4096, CODEC_ZLIB, &err);

  if (idx != NULL)
    snprintf (idx->name, sizeof idx->name, "img");
  return idx;
}

static void
test_index_section (void)
{
  static const uint32_t prof[] = { 3, 4, 5, 0, 9 };
  struct cloop_err err = { 0 };
  struct store_index *idx = small_index (10), *back;
  struct block_map *map;
  unsigned char *buf = NULL, *plain = NULL, *bad;
  size_t len = 0, plain_len = 0;

  CHECK (idx != NULL);
  if (idx == NULL)
    return;
  CHECK (store_index_write (idx, &plain, &plain_len, &err) == 0);
  CHECK (load_be32 (plain + 8) == 1);       /* no profile: version 1 */
  idx->profile = malloc (sizeof prof);
  memcpy (idx->profile, prof, sizeof prof);
  idx->profile_len = 5;
  CHECK (store_index_write (idx, &buf, &len, &err) == 0);
  CHECK (load_be32 (buf + 8) == 2);
  CHECK (len > plain_len + STORE_SECTION_HEAD + PROFILE_HEADER_LEN);
  CHECK (memcmp (buf + plain_len, "PROF", 4) == 0);
  back = store_index_parse (buf, len, &err);
  CHECK (back != NULL && back->profile_len == 5 &&
         memcmp (back->profile, prof, sizeof prof) == 0);
  map = back ? store_index_to_map (back, &err) : NULL;
  CHECK (map != NULL && map->profile_len == 5 &&
         memcmp (map->profile, prof, sizeof prof) == 0);
  CHECK (map != NULL && strcmp (map->dialect, "block store v2") == 0);
  block_map_free (map);
  store_index_free (back);

  bad = malloc (len + 16);
  /* Version 2 with no section; version 1 with a section. */
  memcpy (bad, plain, plain_len); bad[11] = 2;
  CHECK (store_index_parse (bad, plain_len, &err) == NULL &&
         strstr (err.msg, "no section") != NULL);
  memcpy (bad, buf, len); bad[11] = 1;
  CHECK (store_index_parse (bad, len, &err) == NULL &&
         strstr (err.msg, "trailing bytes") != NULL);
  memcpy (bad, buf, len); bad[11] = 3;
  CHECK (store_index_parse (bad, len, &err) == NULL &&
         strstr (err.msg, "unsupported format version 3") != NULL);
  memcpy (bad, buf, len); bad[plain_len] = 'X';
  CHECK (store_index_parse (bad, len, &err) == NULL &&
         strstr (err.msg, "unknown section 58524f46") != NULL);
  memcpy (bad, buf, len); store_be32 (bad + plain_len + 4, (uint32_t) len);
  CHECK (store_index_parse (bad, len, &err) == NULL &&
         strstr (err.msg, "only") != NULL);
  memcpy (bad, buf, len);
  CHECK (store_index_parse (bad, len - 3, &err) == NULL);
  /* A profile for another image (block count in its own header). */
  memcpy (bad, buf, len); bad[plain_len + STORE_SECTION_HEAD + 23] = 11;
  CHECK (store_index_parse (bad, len, &err) == NULL &&
         strstr (err.msg, "store index: profile") != NULL);
  /* Two profile sections. */
  free (bad);
  bad = malloc (2 * len);
  memcpy (bad, buf, len);
  memcpy (bad + len, buf + plain_len, len - plain_len);
  CHECK (store_index_parse (bad, len + (len - plain_len), &err) == NULL &&
         strstr (err.msg, "second profile") != NULL);
  /* An empty section. */
  memcpy (bad, plain, plain_len); bad[11] = 2;
  memcpy (bad + plain_len, "PROF\0\0\0\0", 8);
  CHECK (store_index_parse (bad, plain_len + 8, &err) == NULL &&
         strstr (err.msg, "empty profile") != NULL);
  /* A profile block outside the image cannot be written. */
  free (bad);
  bad = NULL;
  idx->profile[0] = 10;
  CHECK (store_index_write (idx, &bad, &len, &err) == -1);
  CHECK (strstr (err.msg, "block 10) is out of range") != NULL);
  free (bad);
  free (buf);
  free (plain);
  store_index_free (idx);
}

int
main (void)
{
  test_record_roundtrip ();
  test_record_errors ();
  test_merge ();
  test_binary ();
  test_index_section ();
  if (check_failures) {
    fprintf (stderr, "%d check(s) failed\n", check_failures);
    return 1;
  }
  printf ("test-profile: ok\n");
  return 0;
}
