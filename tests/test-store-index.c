/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/store.c (block-store indexes).
 *
 * Round-trips indexes through the writer and the parser, checks the
 * block maps they become, then feeds every kind of malformed index the
 * format forbids and checks each is refused with EINVAL and a message
 * naming the fault; finally mutates a valid index at random and checks
 * that each result either parses (and then writes back byte for byte)
 * or is refused cleanly.
 * Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "byteorder.h"
#include "store.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

/* Offsets in the header (FORMAT.md). */
#define O_VERSION 8
#define O_HLEN    12
#define O_SIZE    16
#define O_BS      24
#define O_CODEC   28
#define O_ALG     29
#define O_FLAGS   30
#define O_N       32
#define O_RESV    64
#define O_NAMELEN 96

/* ------------------------------------------------------------------ */
/* Building raw index bytes (bypassing the writer's checks). */

struct raw {
  unsigned char *buf;
  size_t len;
};

/* Fill a hash for block i with a recognizable non-zero pattern. */
static void
fake_hash (unsigned char hash[STORE_HASH_LEN], uint64_t i)
{
  for (size_t k = 0; k < STORE_HASH_LEN; k++)
    hash[k] = (unsigned char) (0x11 + i * 7 + k);
}

/* Raw bytes of an index with the given fields; entry i is a zero
 * block if i % 3 == 1, otherwise fake_hash (i) with length 100 + i. */
static struct raw
build_raw (uint64_t size, uint32_t bs, uint64_t n,
           const char *name, size_t name_len,
           const char *desc, size_t desc_len)
{
  struct raw r;
  size_t off;

  r.len = 100 + name_len + desc_len + STORE_ENTRY_LEN * n;
  r.buf = calloc (1, r.len);
  if (r.buf == NULL) {
    perror ("calloc");
    exit (1);
  }
  memcpy (r.buf, STORE_MAGIC, STORE_MAGIC_LEN);
  store_be32 (r.buf + O_VERSION, 1);
  store_be32 (r.buf + O_HLEN, 96);
  store_be64 (r.buf + O_SIZE, size);
  store_be32 (r.buf + O_BS, bs);
  r.buf[O_CODEC] = 2;
  r.buf[O_ALG] = 1;
  store_be64 (r.buf + O_N, n);
  store_be64 (r.buf + 40, 7);            /* revision */
  store_be64 (r.buf + 48, 1700000000);   /* created */
  off = O_NAMELEN;
  r.buf[off++] = name_len >> 8; r.buf[off++] = name_len & 0xff;
  memcpy (r.buf + off, name, name_len); off += name_len;
  r.buf[off++] = desc_len >> 8; r.buf[off++] = desc_len & 0xff;
  memcpy (r.buf + off, desc, desc_len); off += desc_len;
  for (uint64_t i = 0; i < n; i++, off += STORE_ENTRY_LEN)
    if (i % 3 != 1) {
      fake_hash (r.buf + off, i);
      store_be32 (r.buf + off + STORE_HASH_LEN, (uint32_t) (100 + i));
    }
  return r;
}

/* A small valid index: 4 blocks of 4096, the last one 100 bytes. */
static struct raw
build_valid (void)
{
  return build_raw (3 * 4096 + 100, 4096, 4, "knoppix-root", 12,
                    "test image", 10);
}

/* Offset of entry i in an index built with the given name/desc. */
static size_t
entry_off (size_t name_len, size_t desc_len, uint64_t i)
{
  return 100 + name_len + desc_len + i * STORE_ENTRY_LEN;
}

/* Expect buf[0..len) to be refused with EINVAL and a message that
 * contains want. */
static void
expect_reject_at (const void *buf, size_t len, const char *want,
                  const char *file, int line)
{
  struct cloop_err err = { 0, "" };
  struct store_index *idx = store_index_parse (buf, len, &err);

  if (idx != NULL) {
    fprintf (stderr, "  FAIL %s:%d: accepted, expected \"%s\"\n",
             file, line, want);
    check_failures++;
    store_index_free (idx);
    return;
  }
  if (err.errnum != EINVAL || strstr (err.msg, want) == NULL) {
    fprintf (stderr, "  FAIL %s:%d: error %d \"%s\", expected \"%s\"\n",
             file, line, err.errnum, err.msg, want);
    check_failures++;
  }
}
#define expect_reject(buf, len, want) \
  expect_reject_at ((buf), (len), (want), __FILE__, __LINE__)

/* ------------------------------------------------------------------ */
/* Round trips. */

/* Write idx, parse the bytes, compare, and write again: same bytes. */
static void
round_trip (const struct store_index *idx)
{
  struct cloop_err err = { 0, "" };
  unsigned char *buf = NULL, *buf2 = NULL;
  size_t len = 0, len2 = 0;
  struct store_index *back;

  if (store_index_write (idx, &buf, &len, &err) == -1) {
    fprintf (stderr, "  FAIL write: %s\n", err.msg);
    check_failures++;
    return;
  }
  CHECK (len == 100 + strlen (idx->name) + strlen (idx->description) +
         STORE_ENTRY_LEN * idx->num_blocks);
  CHECK (store_probe_head (buf, len));
  back = store_index_parse (buf, len, &err);
  CHECK (back != NULL);
  if (back == NULL) {
    fprintf (stderr, "  parse: %s\n", err.msg);
    free (buf);
    return;
  }
  CHECK (back->size == idx->size);
  CHECK (back->block_size == idx->block_size);
  CHECK (back->codec == idx->codec);
  CHECK (back->num_blocks == idx->num_blocks);
  CHECK (back->revision == idx->revision);
  CHECK (back->created == idx->created);
  CHECK (back->expires == idx->expires);
  CHECK (strcmp (back->name, idx->name) == 0);
  CHECK (strcmp (back->description, idx->description) == 0);
  CHECK (memcmp (back->hashes, idx->hashes,
                 idx->num_blocks * STORE_HASH_LEN) == 0);
  CHECK (memcmp (back->lengths, idx->lengths,
                 idx->num_blocks * sizeof (uint32_t)) == 0);
  CHECK (store_index_write (back, &buf2, &len2, &err) == 0);
  CHECK (len2 == len && memcmp (buf, buf2, len) == 0);
  store_index_free (back);
  free (buf);
  free (buf2);
}

/* Replace idx's description with a copy of s. */
static void
set_description (struct store_index *idx, const char *s)
{
  free (idx->description);
  idx->description = strdup (s);
  if (idx->description == NULL) {
    perror ("strdup");
    exit (1);
  }
}

static void
test_round_trips (void)
{
  struct cloop_err err = { 0, "" };
  struct store_index *idx;
  char *desc;

  /* Zero blocks and a short last block; zlib. */
  idx = store_index_new (5 * 65536 + 513, 65536, CODEC_ZLIB, &err);
  CHECK (idx != NULL);
  if (idx == NULL)
    return;
  CHECK (idx->num_blocks == 6);
  CHECK (idx->description != NULL && idx->description[0] == '\0');
  strcpy (idx->name, "knoppix-root");
  idx->revision = 42;
  idx->created = 1700000000;
  idx->expires = 1800000000;
  for (uint64_t i = 0; i < idx->num_blocks; i++)
    if (i != 1 && i != 4) {
      fake_hash (idx->hashes + i * STORE_HASH_LEN, i);
      idx->lengths[i] = (uint32_t) (1000 * (i + 1));
    }
  CHECK (store_index_is_zero (idx, 1));
  CHECK (!store_index_is_zero (idx, 0));
  round_trip (idx);

  /* Longest description, unicode name, xz; the largest entry length. */
  idx->codec = CODEC_XZ;
  strcpy (idx->name, "Knöppix — 根 🐧");
  desc = malloc (STORE_DESC_MAX + 1);
  memset (desc, 'd', STORE_DESC_MAX);
  memcpy (desc, "Zeile 1\nZeile 2 — ü\t", strlen ("Zeile 1\nZeile 2 — ü\t"));
  desc[STORE_DESC_MAX] = '\0';
  set_description (idx, desc);
  free (desc);
  idx->lengths[0] = (uint32_t) block_map_length_bound (65536);
  round_trip (idx);

  /* Longest name (255 bytes), zstd, all blocks zero. */
  idx->codec = CODEC_ZSTD;
  memset (idx->name, 'n', STORE_NAME_MAX);
  idx->name[STORE_NAME_MAX] = '\0';
  memset (idx->hashes, 0, idx->num_blocks * STORE_HASH_LEN);
  memset (idx->lengths, 0, idx->num_blocks * sizeof (uint32_t));
  round_trip (idx);
  store_index_free (idx);

  /* One block smaller than the block size; smallest block size. */
  idx = store_index_new (1, 512, CODEC_ZSTD, &err);
  CHECK (idx != NULL && idx->num_blocks == 1);
  if (idx) {
    strcpy (idx->name, "x");
    fake_hash (idx->hashes, 0);
    idx->lengths[0] = 9;
    round_trip (idx);
    store_index_free (idx);
  }

  /* Largest block size, exact multiple. */
  idx = store_index_new (2 * BLOCK_SIZE_MAX, BLOCK_SIZE_MAX, CODEC_ZLIB, &err);
  CHECK (idx != NULL && idx->num_blocks == 2);
  if (idx) {
    strcpy (idx->name, "big");
    round_trip (idx);
    store_index_free (idx);
  }

  /* Parsing a hand-built index gives what was built. */
  struct raw r = build_valid ();
  idx = store_index_parse (r.buf, r.len, &err);
  CHECK (idx != NULL);
  if (idx) {
    CHECK (idx->codec == CODEC_ZSTD && idx->revision == 7);
    CHECK (strcmp (idx->name, "knoppix-root") == 0);
    CHECK (strcmp (idx->description, "test image") == 0);
    CHECK (store_index_is_zero (idx, 1) && !store_index_is_zero (idx, 3));
    CHECK (idx->lengths[3] == 103);
    store_index_free (idx);
  }
  free (r.buf);
}

/* ------------------------------------------------------------------ */
/* Block maps, paths, hex. */

static void
test_to_map (void)
{
  struct cloop_err err = { 0, "" };
  struct raw r = build_valid ();
  struct store_index *idx = store_index_parse (r.buf, r.len, &err);
  struct block_map *map;

  free (r.buf);
  CHECK (idx != NULL);
  if (idx == NULL)
    return;
  map = store_index_to_map (idx, &err);
  CHECK (map != NULL);
  if (map == NULL) {
    fprintf (stderr, "  to_map: %s\n", err.msg);
    store_index_free (idx);
    return;
  }
  CHECK (strcmp (map->dialect, "block store v1") == 0);
  CHECK (map->block_size == 4096 && map->num_blocks == 4);
  CHECK (map->size == 3 * 4096 + 100);
  CHECK (!map->padded_last);
  CHECK (block_map_decoded_length (map, 0) == 4096);
  CHECK (block_map_decoded_length (map, 3) == 100);
  CHECK (block_map_stream_length (map, 3) == 100);
  CHECK (map->entries[1].codec == CODEC_ZERO && map->entries[1].length == 0);
  CHECK (map->entries[0].codec == CODEC_ZSTD &&
         map->entries[0].length == 100 && map->entries[0].offset == 0);
  CHECK (map->entries[3].codec == CODEC_ZSTD &&
         map->entries[3].length == 103);
  CHECK (map->max_length == 103);
  CHECK (map->hash_len == STORE_HASH_LEN && map->hashes != NULL);
  if (map->hashes)
    CHECK (memcmp (map->hashes, idx->hashes, 4 * STORE_HASH_LEN) == 0);
  block_map_free (map);
  store_index_free (idx);
}

static void
test_paths (void)
{
  unsigned char hash[STORE_HASH_LEN], back[STORE_HASH_LEN];
  char hex[65], path[STORE_BLOCK_PATH_MAX], bad[66];

  for (size_t k = 0; k < STORE_HASH_LEN; k++)
    hash[k] = (unsigned char) (0xab + k * 13);
  store_hex (hex, hash);
  CHECK (strlen (hex) == 64 && strncmp (hex, "abb8c5", 6) == 0);
  store_block_path (path, hash);
  CHECK (strncmp (path, "blocks/ab/abb8c5", 16) == 0);
  CHECK (strlen (path) == 74 && strcmp (path + 10, hex) == 0);
  CHECK (store_unhex (back, hex) == 0 && memcmp (back, hash, 32) == 0);
  /* Upper case is accepted (pinned hashes typed by people). */
  strcpy (bad, hex);
  bad[0] = 'A';
  CHECK (store_unhex (back, bad) == 0 && back[0] == 0xab);
  memset (back, 0x5a, sizeof back);
  strcpy (bad, hex);
  bad[63] = '\0';
  CHECK (store_unhex (back, bad) == -1);
  CHECK (back[0] == 0x5a);               /* untouched on error */
  strcpy (bad, hex);
  strcat (bad, "0");
  CHECK (store_unhex (back, bad) == -1);
  strcpy (bad, hex);
  bad[10] = 'g';
  CHECK (store_unhex (back, bad) == -1);
  CHECK (store_unhex (back, "") == -1);
  CHECK (!store_probe_head ("CLSTORE", 7));
  CHECK (!store_probe_head ("CLSTORE\r", 8));
  CHECK (store_probe_head ("CLSTORE\nxx", 10));
}

/* ------------------------------------------------------------------ */
/* Rejections. */

static void
test_header_rejects (void)
{
  struct raw r = build_valid ();
  unsigned char *b = malloc (r.len);
  size_t nl = 12, dl = 10;

#define FRESH() memcpy (b, r.buf, r.len)
  FRESH (); b[0] = 'X';                      expect_reject (b, r.len, "magic");
  FRESH (); store_be32 (b + O_VERSION, 3);   expect_reject (b, r.len, "version 3");
  FRESH (); store_be32 (b + O_VERSION, 2);   expect_reject (b, r.len, "no section");
  FRESH (); store_be32 (b + O_VERSION, 0);   expect_reject (b, r.len, "version 0");
  FRESH (); store_be32 (b + O_HLEN, 128);    expect_reject (b, r.len, "header length 128");
  FRESH (); store_be64 (b + O_SIZE, 0);      expect_reject (b, r.len, "image size is 0");
  FRESH (); store_be32 (b + O_BS, 0);        expect_reject (b, r.len, "block size 0");
  FRESH (); store_be32 (b + O_BS, 513);      expect_reject (b, r.len, "block size 513");
  FRESH (); store_be32 (b + O_BS, 256);      expect_reject (b, r.len, "block size 256");
  FRESH (); store_be32 (b + O_BS, 128u << 20);
  expect_reject (b, r.len, "block size 134217728");
  FRESH (); store_be64 (b + O_N, 5);         expect_reject (b, r.len, "5 blocks recorded");
  FRESH (); store_be64 (b + O_N, 3);         expect_reject (b, r.len, "3 blocks recorded");
  FRESH (); store_be64 (b + O_SIZE, 4 * 4096 + 1);
  expect_reject (b, r.len, "needs 5 blocks");
  FRESH (); b[O_CODEC] = 0;                  expect_reject (b, r.len, "unknown codec 0");
  FRESH (); b[O_CODEC] = 4;                  expect_reject (b, r.len, "unknown codec 4");
  FRESH (); b[O_ALG] = 2;                    expect_reject (b, r.len, "hash algorithm 2");
  FRESH (); b[O_ALG] = 0;                    expect_reject (b, r.len, "hash algorithm 0");
  FRESH (); b[O_FLAGS + 1] = 1;              expect_reject (b, r.len, "flags 0x0001");
  FRESH (); b[O_FLAGS] = 0x80;               expect_reject (b, r.len, "flags 0x8000");
  FRESH (); b[O_RESV + 31] = 1;              expect_reject (b, r.len, "reserved");
  FRESH (); b[O_RESV] = 0xff;                expect_reject (b, r.len, "reserved");

  /* Truncations at every interesting boundary, and a trailing byte. */
  FRESH ();
  expect_reject (b, 0, "truncated");
  expect_reject (b, 8, "truncated");
  expect_reject (b, 95, "truncated");
  expect_reject (b, 96, "truncated");
  expect_reject (b, 97, "truncated");
  expect_reject (b, 98 + nl, "truncated");
  expect_reject (b, 99 + nl, "truncated");
  expect_reject (b, 100 + nl + dl, "truncated");
  expect_reject (b, r.len - 1, "truncated");
  unsigned char *longer = calloc (1, r.len + 1);
  memcpy (longer, r.buf, r.len);
  expect_reject (longer, r.len + 1, "trailing bytes");
  free (longer);

  /* Entries. */
  size_t e0 = entry_off (nl, dl, 0), e1 = entry_off (nl, dl, 1);
  FRESH (); store_be32 (b + e0 + 32, (uint32_t) block_map_length_bound (4096) + 1);
  expect_reject (b, r.len, "exceeds the limit");
  FRESH (); store_be32 (b + e0 + 32, 0);     expect_reject (b, r.len, "has a hash but length 0");
  FRESH (); store_be32 (b + e1 + 32, 5);     expect_reject (b, r.len, "zero hash but length 5");
  FRESH (); b[e1 + 31] = 1;                  expect_reject (b, r.len, "has a hash but length 0");
  /* The bound itself is accepted. */
  FRESH (); store_be32 (b + e0 + 32, (uint32_t) block_map_length_bound (4096));
  struct cloop_err err = { 0, "" };
  struct store_index *idx = store_index_parse (b, r.len, &err);
  CHECK (idx != NULL);
  store_index_free (idx);
#undef FRESH
  free (b);
  free (r.buf);
}

/* Block counts too large to allocate must be refused from the header
 * alone, with a short buffer, as EINVAL (an attempted allocation of
 * terabytes would fail with ENOMEM or abort under ASan instead). */
static void
test_huge_counts (void)
{
  struct raw r = build_valid ();

  /* n = 2^40 with a consistent image size. */
  store_be32 (r.buf + O_BS, 512);
  store_be64 (r.buf + O_SIZE, (UINT64_C (1) << 40) * 512);
  store_be64 (r.buf + O_N, UINT64_C (1) << 40);
  expect_reject (r.buf, r.len, "too many blocks");
  /* n = NUM_BLOCKS_MAX is over the index size limit. */
  store_be64 (r.buf + O_SIZE, NUM_BLOCKS_MAX * 512);
  store_be64 (r.buf + O_N, NUM_BLOCKS_MAX);
  expect_reject (r.buf, r.len, "exceeds the limit");
  /* A count within the index limit but a buffer that is too short. */
  store_be64 (r.buf + O_SIZE, 1000000 * UINT64_C (512));
  store_be64 (r.buf + O_N, 1000000);
  expect_reject (r.buf, r.len, "truncated");
  /* The largest image size. */
  store_be32 (r.buf + O_BS, BLOCK_SIZE_MAX);
  store_be64 (r.buf + O_SIZE, UINT64_MAX);
  store_be64 (r.buf + O_N, UINT64_MAX / BLOCK_SIZE_MAX + 1);
  expect_reject (r.buf, r.len, "too many blocks");
  free (r.buf);

  struct cloop_err err = { 0, "" };
  CHECK (store_index_new (UINT64_MAX, 512, CODEC_ZSTD, &err) == NULL &&
         err.errnum == EINVAL);
  CHECK (store_index_new (UINT64_C (1) << 40, 512, CODEC_ZSTD, &err) == NULL
         && err.errnum == EINVAL);
}

/* An index like build_valid's but with the given name bytes. */
static void
reject_name (const char *name, size_t len, const char *want, int line)
{
  struct raw r = build_raw (3 * 4096 + 100, 4096, 4, name, len, "", 0);
  expect_reject_at (r.buf, r.len, want, __FILE__, line);
  free (r.buf);
}

static void
reject_desc (const char *desc, size_t len, const char *want, int line)
{
  struct raw r = build_raw (3 * 4096 + 100, 4096, 4, "n", 1, desc, len);
  expect_reject_at (r.buf, r.len, want, __FILE__, line);
  free (r.buf);
}

static void
test_string_rejects (void)
{
  char big[STORE_DESC_MAX + 2];

  reject_name ("", 0, "name length 0", __LINE__);
  memset (big, 'a', sizeof big);
  reject_name (big, 256, "name length 256", __LINE__);
  reject_name ("a\0b", 3, "NUL", __LINE__);
  reject_name ("a\nb", 3, "control character U+000A", __LINE__);
  reject_name ("a\tb", 3, "control character U+0009", __LINE__);
  reject_name ("a\x7f", 2, "control character U+007F", __LINE__);
  reject_name ("a\xc2\x85", 3, "control character U+0085", __LINE__);
  reject_name ("a\xff", 2, "not valid UTF-8", __LINE__);
  reject_name ("\x80", 1, "not valid UTF-8", __LINE__);
  reject_name ("a\xc3", 2, "not valid UTF-8", __LINE__);        /* cut */
  reject_name ("\xc0\xaf", 2, "not valid UTF-8", __LINE__);     /* overlong */
  reject_name ("\xe0\x80\xaf", 3, "not valid UTF-8", __LINE__); /* overlong */
  reject_name ("\xf0\x80\x80\xaf", 4, "not valid UTF-8", __LINE__);
  reject_name ("\xed\xa0\x80", 3, "not valid UTF-8", __LINE__); /* surrogate */
  reject_name ("\xf4\x90\x80\x80", 4, "not valid UTF-8", __LINE__); /* >10FFFF */
  reject_name ("\xf8\x88\x80\x80\x80", 5, "not valid UTF-8", __LINE__);
  reject_name ("\xe2\x82", 2, "not valid UTF-8", __LINE__);
  reject_name ("\xe2\x28\xa1", 3, "not valid UTF-8", __LINE__);

  reject_desc (big, STORE_DESC_MAX + 1, "description length 4097",
               __LINE__);
  reject_desc ("ab\0", 3, "description contains a NUL", __LINE__);
  reject_desc ("\xfe", 1, "description is not valid UTF-8", __LINE__);

  /* Edge cases that are valid: U+10FFFF, U+FFFD, newline in the
   * description, a 4096-byte description. */
  struct cloop_err err = { 0, "" };
  struct raw r = build_raw (4096, 4096, 1, "\xf4\x8f\xbf\xbf\xef\xbf\xbd", 7,
                            "line\nline\t", 10);
  struct store_index *idx = store_index_parse (r.buf, r.len, &err);
  CHECK (idx != NULL);
  store_index_free (idx);
  free (r.buf);
  memset (big, 'x', STORE_DESC_MAX);
  r = build_raw (4096, 4096, 1, "n", 1, big, STORE_DESC_MAX);
  idx = store_index_parse (r.buf, r.len, &err);
  CHECK (idx != NULL && strlen (idx->description) == STORE_DESC_MAX);
  store_index_free (idx);
  free (r.buf);
}

/* The writer refuses what the parser would. */
static void
test_write_rejects (void)
{
  struct cloop_err err = { 0, "" };
  struct store_index *idx = store_index_new (8192, 4096, CODEC_ZSTD, &err);
  unsigned char *buf = NULL;
  size_t len = 0;

  CHECK (idx != NULL);
  if (idx == NULL)
    return;
  /* Empty name. */
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "name length 0"));
  strcpy (idx->name, "a\nb");
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  CHECK (strstr (err.msg, "control character") != NULL);
  strcpy (idx->name, "ok");
  idx->lengths[0] = 3;                   /* zero hash with a length */
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  CHECK (strstr (err.msg, "zero hash but length 3") != NULL);
  idx->lengths[0] = 0;
  idx->codec = CODEC_LZ4;
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  CHECK (strstr (err.msg, "lz4") != NULL);
  idx->codec = CODEC_ZSTD;
  idx->num_blocks = 3;                   /* inconsistent with size */
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  idx->num_blocks = 2;
  char *d = malloc (STORE_DESC_MAX + 2);
  memset (d, 'd', STORE_DESC_MAX + 1);
  d[STORE_DESC_MAX + 1] = '\0';
  free (idx->description);
  idx->description = d;
  CHECK (store_index_write (idx, &buf, &len, &err) == -1);
  CHECK (strstr (err.msg, "description length 4097") != NULL);
  d[STORE_DESC_MAX] = '\0';
  CHECK (store_index_write (idx, &buf, &len, &err) == 0);
  free (buf);
  store_index_free (idx);

  CHECK (store_index_new (0, 4096, CODEC_ZSTD, &err) == NULL);
  CHECK (store_index_new (4096, 0, CODEC_ZSTD, &err) == NULL);
  CHECK (store_index_new (4096, 1000, CODEC_ZSTD, &err) == NULL);
  CHECK (store_index_new (4096, 4096, CODEC_ZERO, &err) == NULL);
  CHECK (store_index_new (4096, 4096, CODEC_NONE, &err) == NULL);
  store_index_free (NULL);
}

/* ------------------------------------------------------------------ */
/* Random mutations. */

static uint64_t
next_random (uint64_t *state)
{
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

/* Mutate a copy of r in one of several ways; *len receives the new
 * length.  The copy is malloc'd to its exact length (so ASan catches
 * any read past it). */
static unsigned char *
mutate (const struct raw *r, uint64_t *rng, size_t *len)
{
  uint64_t op = next_random (rng) % 5;
  size_t pos = next_random (rng) % r->len;
  size_t new_len = r->len;
  unsigned char *b;

  if (op == 3)
    new_len = next_random (rng) % r->len;       /* truncate */
  else if (op == 4)
    new_len = r->len + 1 + next_random (rng) % 4;  /* extend */
  b = malloc (new_len ? new_len : 1);
  memcpy (b, r->buf, new_len < r->len ? new_len : r->len);
  if (new_len > r->len)
    memset (b + r->len, (int) (next_random (rng) & 0xff), new_len - r->len);
  if (op == 0)
    b[pos] ^= (unsigned char) (1 + next_random (rng) % 255);
  else if (op == 1)
    b[pos] = (unsigned char) next_random (rng);
  else if (op == 2 && pos < 100 + 12 + 10)      /* header/strings */
    b[pos] ^= (unsigned char) (1u << (next_random (rng) % 8));
  *len = new_len;
  return b;
}

static void
test_fuzz (void)
{
  struct raw r = build_valid ();
  uint64_t rng = 0x9e3779b97f4a7c15u;
  unsigned accepted = 0, refused = 0;

  for (int round = 0; round < 2000; round++) {
    struct cloop_err err = { 0, "" };
    size_t len;
    unsigned char *b = mutate (&r, &rng, &len);
    struct store_index *idx = store_index_parse (b, len, &err);

    if (idx == NULL) {
      refused++;
      CHECK (err.errnum == EINVAL && err.msg[0] != '\0' &&
             strchr (err.msg, '\n') == NULL);
    }
    else {
      unsigned char *out = NULL;
      size_t out_len = 0;
      struct block_map *map;

      accepted++;
      CHECK (store_index_write (idx, &out, &out_len, &err) == 0);
      CHECK (out_len == len && memcmp (out, b, len) == 0);
      map = store_index_to_map (idx, &err);
      CHECK (map != NULL);
      block_map_free (map);
      free (out);
      store_index_free (idx);
    }
    free (b);
  }
  printf ("  fuzz: %u accepted, %u refused\n", accepted, refused);
  CHECK (accepted > 0 && refused > 0);
  free (r.buf);
}

int
main (void)
{
  test_round_trips ();
  test_to_map ();
  test_paths ();
  test_header_rejects ();
  test_huge_counts ();
  test_string_rejects ();
  test_write_rejects ();
  test_fuzz ();
  if (check_failures) {
    fprintf (stderr, "test-store-index: %d failure(s)\n", check_failures);
    return 1;
  }
  printf ("test-store-index: ok\n");
  return 0;
}
