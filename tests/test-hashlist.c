/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/hashlist.c (block-hash lists).
 *
 * Round-trips a list through the writer and the parser and attaches
 * it to the map it was made for; checks that the map digest covers
 * every field; then feeds malformed lists (truncated, trailing bytes,
 * bad magic, version, header length, algorithm, reserved bytes,
 * geometry, oversized block counts and lengths) and lists made for
 * another image, each refused with EINVAL and a message naming the
 * fault; finally mutates a valid list at random and checks that each
 * result either parses (and writes back byte for byte) or is refused
 * cleanly.  Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "byteorder.h"
#include "hashlist.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

#define BS 4096
#define N  10
#define FILE_SIZE 100000

/* A map of N blocks: block 4 not stored, the rest zlib at ascending
 * offsets. */
static struct block_map *
make_map (void)
{
  struct cloop_err err;
  struct block_map *map = block_map_new (N, BS, &err);

  CHECK (map != NULL);
  if (map == NULL)
    exit (1);
  map->size = (uint64_t) N * BS;
  map->short_last = true;
  for (uint64_t i = 0; i < N; i++) {
    map->entries[i].offset = 512 + i * 1000;
    map->entries[i].length = i == 4 ? 0 : 900 + i;
    map->entries[i].codec = i == 4 ? CODEC_ZERO : CODEC_ZLIB;
  }
  CHECK (block_map_validate (map, FILE_SIZE, &err) == 0);
  return map;
}

/* The bytes of a valid list for make_map (): hash i = i+1 repeated. */
static unsigned char *
make_list_bytes (const struct block_map *map, size_t *len)
{
  struct cloop_err err;
  struct hash_list *list = hash_list_new (map, FILE_SIZE, &err);
  unsigned char *buf = NULL;

  CHECK (list != NULL);
  if (list == NULL)
    exit (1);
  for (uint64_t i = 0; i < N; i++)
    if (map->entries[i].codec != CODEC_ZERO)
      memset (list->hashes + i * HASHLIST_HASH_LEN, (int) i + 1,
              HASHLIST_HASH_LEN);
  CHECK (hash_list_write (list, &buf, len, &err) == 0);
  CHECK (*len == HASHLIST_HEADER_LEN + N * HASHLIST_HASH_LEN);
  hash_list_free (list);
  return buf;
}

static void
test_round_trip (void)
{
  struct block_map *map = make_map ();
  struct cloop_err err;
  size_t len;
  unsigned char *buf = make_list_bytes (map, &len), *again = NULL;
  size_t again_len = 0;
  struct hash_list *list = hash_list_parse (buf, len, &err);

  CHECK (list != NULL);
  if (list == NULL)
    exit (1);
  CHECK (list->file_size == FILE_SIZE && list->block_size == BS &&
         list->num_blocks == N && list->size == (uint64_t) N * BS);
  CHECK (memcmp (buf, HASHLIST_MAGIC, HASHLIST_MAGIC_LEN) == 0);
  CHECK (hash_list_probe_head (buf, len));
  CHECK (!hash_list_probe_head (buf, 4));
  CHECK (hash_list_write (list, &again, &again_len, &err) == 0);
  CHECK (again_len == len && memcmp (again, buf, len) == 0);

  CHECK (hash_list_attach (list, map, FILE_SIZE, &err) == 0);
  CHECK (map->hashes != NULL && map->hash_len == 32 && !map->objects_by_hash);
  if (map->hashes)
    CHECK (memcmp (map->hashes, buf + HASHLIST_HEADER_LEN,
                   N * HASHLIST_HASH_LEN) == 0);
  hash_list_free (list);
  block_map_free (map);
  free (buf);
  free (again);
}

/* The digest changes with every field of the map. */
static void
test_map_digest (void)
{
  struct block_map *map = make_map ();
  unsigned char d0[32], d[32];

  hash_list_map_digest (map, d0);
  hash_list_map_digest (map, d);
  CHECK (memcmp (d0, d, 32) == 0);
#define CHANGES(field, value)                                   \
  do {                                                          \
    __typeof__ (field) saved = field;                           \
    field = value;                                              \
    hash_list_map_digest (map, d);                              \
    CHECK (memcmp (d0, d, 32) != 0);                            \
    field = saved;                                              \
  } while (0)
  CHANGES (map->entries[7].offset, 513 + 7 * 1000);
  CHANGES (map->entries[7].length, 901);
  CHANGES (map->entries[7].codec, CODEC_XZ);
  CHANGES (map->entries[0].offset, 511);
  CHANGES (map->entries[N - 1].length, 1);
  CHANGES (map->short_last, false);
  CHANGES (map->padded_last, true);
  CHANGES (map->size, map->size - 1);
  CHANGES (map->block_size, 8192);
  CHANGES (map->num_blocks, N - 1);
#undef CHANGES
  hash_list_map_digest (map, d);
  CHECK (memcmp (d0, d, 32) == 0);
  block_map_free (map);
}

/* buf[0..len) must be refused with EINVAL and a message containing
 * want. */
static void
refused_at (int line, const unsigned char *buf, size_t len, const char *want)
{
  struct cloop_err err = { 0 };
  struct hash_list *list = hash_list_parse (buf, len, &err);

  if (list != NULL || err.errnum != EINVAL || strstr (err.msg, want) == NULL) {
    fprintf (stderr, "FAIL: %s:%d: parse %s (errno %d, \"%s\"), expected "
             "EINVAL with \"%s\"\n", __FILE__, line,
             list ? "succeeded" : "failed", err.errnum, err.msg, want);
    check_failures++;
  }
  hash_list_free (list);
}
#define REFUSED(buf, len, want) refused_at (__LINE__, buf, len, want)

/* A copy of good with one change applied at offset off. */
static unsigned char *
variant (const unsigned char *good, size_t len)
{
  unsigned char *b = malloc (len + 64);

  if (b == NULL)
    exit (1);
  memcpy (b, good, len);
  memset (b + len, 0, 64);
  return b;
}

static void
test_malformed (void)
{
  struct block_map *map = make_map ();
  size_t len;
  unsigned char *good = make_list_bytes (map, &len), *b;

  /* Every truncation, down to nothing. */
  for (size_t l = 0; l < len; l++)
    REFUSED (good, l, l < HASHLIST_HEADER_LEN ? "too short" : "cannot hold");
  b = variant (good, len);
  REFUSED (b, len + 1, "cannot hold");          /* a trailing byte */
  REFUSED (b, len + 32, "cannot hold");         /* a hash too many */
  b[0] = 'X';
  REFUSED (b, len, "bad magic");
  free (b);

#define FIELD(setter, off, value, want)                 \
  do {                                                  \
    b = variant (good, len);                            \
    setter (b + (off), value);                          \
    REFUSED (b, len, want);                             \
    free (b);                                           \
  } while (0)
#define SET8(p, v) (*(p) = (v))
  FIELD (store_be32, 8, 2, "version 2");
  FIELD (store_be32, 12, 97, "header length 97");
  FIELD (SET8, 28, 2, "hash algorithm");
  FIELD (SET8, 29, 1, "reserved");
  FIELD (SET8, 31, 1, "reserved");
  FIELD (SET8, 80, 1, "reserved");
  FIELD (SET8, 95, 1, "reserved");
  FIELD (store_be32, 24, 0, "block size");
  FIELD (store_be32, 24, 1000, "block size");
  FIELD (store_be32, 24, 128u * 1024 * 1024, "block size");
  /* Counts: none, more than the size needs, too many for the length,
   * more than any reader accepts, overflowing. */
  FIELD (store_be64, 32, 0, "does not match");
  FIELD (store_be64, 32, N + 1, "does not match");
  FIELD (store_be64, 40, (uint64_t) N * BS + 1, "does not match");
  FIELD (store_be64, 40, (uint64_t) (N - 1) * BS, "does not match");
  b = variant (good, len);
  store_be32 (b + 24, 512);
  store_be64 (b + 32, NUM_BLOCKS_MAX);
  store_be64 (b + 40, NUM_BLOCKS_MAX * 512);
  REFUSED (b, len, "cannot hold");              /* huge n, short bytes */
  store_be64 (b + 32, NUM_BLOCKS_MAX + 1);
  store_be64 (b + 40, (NUM_BLOCKS_MAX + 1) * 512);
  REFUSED (b, len, "block");                    /* n over NUM_BLOCKS_MAX */
  store_be64 (b + 32, UINT64_MAX);
  store_be64 (b + 40, UINT64_MAX);
  REFUSED (b, len, "block");
  /* A length over the limit is refused before any byte is read. */
  REFUSED (b, (size_t) HASHLIST_MAX + 1, "larger than the limit");
  free (b);
#undef FIELD
#undef SET8
  block_map_free (map);
  free (good);
}

/* attach refuses a list made for another image and leaves the map
 * alone. */
static void
attach_refused_at (int line, const unsigned char *buf, size_t len,
                   struct block_map *map, uint64_t file_size,
                   const char *want)
{
  struct cloop_err err = { 0 };
  struct hash_list *list = hash_list_parse (buf, len, &err);

  CHECK (list != NULL);
  if (list == NULL)
    return;
  if (hash_list_attach (list, map, file_size, &err) != -1 ||
      err.errnum != EINVAL || strstr (err.msg, want) == NULL ||
      map->hashes != NULL) {
    fprintf (stderr, "FAIL: %s:%d: attach (errno %d, \"%s\"), expected "
             "EINVAL with \"%s\"\n", __FILE__, line, err.errnum, err.msg,
             want);
    check_failures++;
  }
  hash_list_free (list);
}
#define ATTACH_REFUSED(buf, len, map, fs, want) \
  attach_refused_at (__LINE__, buf, len, map, fs, want)

static void
test_other_image (void)
{
  struct block_map *map = make_map ();
  size_t len;
  unsigned char *good = make_list_bytes (map, &len), *b;

  ATTACH_REFUSED (good, len, map, FILE_SIZE + 1, "file of 100000 bytes");
  map->entries[6].length++;
  ATTACH_REFUSED (good, len, map, FILE_SIZE, "another image");
  map->entries[6].length--;
  map->padded_last = true;
  ATTACH_REFUSED (good, len, map, FILE_SIZE, "another image");
  map->padded_last = false;
  map->size -= 100;
  ATTACH_REFUSED (good, len, map, FILE_SIZE, "list is for 10 blocks");
  map->size += 100;

  /* A zero hash for a stored block, a hash for a block not stored. */
  b = variant (good, len);
  memset (b + HASHLIST_HEADER_LEN + 2 * HASHLIST_HASH_LEN, 0,
          HASHLIST_HASH_LEN);
  ATTACH_REFUSED (b, len, map, FILE_SIZE, "block 2 is stored");
  memcpy (b, good, len);
  b[HASHLIST_HEADER_LEN + 4 * HASHLIST_HASH_LEN + 31] = 1;
  ATTACH_REFUSED (b, len, map, FILE_SIZE, "block 4 is not stored");
  free (b);
  block_map_free (map);
  free (good);
}

/* Random mutations never crash: a list parses (and writes back as it
 * was) or is refused with EINVAL. */
static void
test_mutations (void)
{
  struct block_map *map = make_map ();
  size_t len;
  unsigned char *good = make_list_bytes (map, &len);
  unsigned char *b = malloc (len);
  unsigned seed = 12345;

  if (b == NULL)
    exit (1);
  for (int round = 0; round < 20000; round++) {
    struct cloop_err err = { 0 };
    struct hash_list *list;
    size_t l = len;
    memcpy (b, good, len);
    for (int k = 1 + rand_r (&seed) % 4; k > 0; k--)
      b[rand_r (&seed) % (round % 2 ? HASHLIST_HEADER_LEN : len)] ^=
        (unsigned char) (1 + rand_r (&seed) % 255);
    if (round % 7 == 0)
      l = rand_r (&seed) % (len + 1);
    list = hash_list_parse (b, l, &err);
    if (list) {
      unsigned char *out = NULL;
      size_t out_len = 0;
      CHECK (hash_list_write (list, &out, &out_len, &err) == 0);
      CHECK (out_len == l && memcmp (out, b, l) == 0);
      free (out);
    }
    else
      CHECK (err.errnum == EINVAL && err.msg[0] != '\0');
    hash_list_free (list);
  }
  free (b);
  free (good);
  block_map_free (map);
}

int
main (void)
{
  test_round_trip ();
  test_map_digest ();
  test_malformed ();
  test_other_image ();
  test_mutations ();
  if (check_failures) {
    fprintf (stderr, "%d check(s) failed\n", check_failures);
    return 1;
  }
  printf ("test-hashlist: all checks passed\n");
  return 0;
}
