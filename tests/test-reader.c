/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of the read pipeline (plugin/reader.c) outside
 * nbdkit, so that the sanitizer build runs it under AddressSanitizer.
 *
 * Writes a cloop V2.0 image of pseudo-random, compressible data with
 * zlib, opens it through the file source and the cloop parser, and:
 *   - reads it whole, byte-exact;
 *   - reads random unaligned ranges from 8 threads at once through a
 *     cache of 3 blocks (eviction, single-flight, waits), byte-exact;
 *   - with one block corrupted, reads of that block fail with EIO and
 *     its neighbours still read exactly, twice (nothing bad cached).
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "byteorder.h"
#include "cloop.h"
#include "reader.h"
#include "source.h"

#define BS       4096u
#define NBLOCKS  64u
#define SIZE     (BS * NBLOCKS)

#include "check.h"

static unsigned char expected[SIZE];

/* Text-like, compressible, different in every block. */
static void
make_data (void)
{
  unsigned x = 12345;

  for (size_t i = 0; i < SIZE; i++) {
    x = x * 1103515245 + 12345;
    expected[i] = "cloop block zlib knoppix\n"[(x >> 16) % 25];
  }
}

/* Write a V2.0 image to path; if corrupt_block is below NBLOCKS, flip
 * a byte in the middle of that block's zlib stream. */
static void
write_image (const char *path, unsigned corrupt_block)
{
  unsigned char head[136] = "#!/bin/sh\n#V2.0 Format\n";
  uint64_t offsets[NBLOCKS + 1];
  unsigned char *blocks[NBLOCKS];
  uLongf lens[NBLOCKS];
  uint64_t pos = 136 + 8 * (NBLOCKS + 1);
  FILE *fp = fopen (path, "wb");

  CHECK (fp != NULL);
  for (unsigned i = 0; i < NBLOCKS; i++) {
    lens[i] = compressBound (BS);
    blocks[i] = malloc (lens[i]);
    CHECK (blocks[i] != NULL);
    CHECK (compress2 (blocks[i], &lens[i], expected + i * BS, BS, 9) == Z_OK);
    if (i == corrupt_block)
      blocks[i][lens[i] / 2] ^= 0xff;
    offsets[i] = pos;
    pos += lens[i];
  }
  offsets[NBLOCKS] = pos;
  store_be32 (head + 128, BS);
  store_be32 (head + 132, NBLOCKS);
  CHECK (fwrite (head, 136, 1, fp) == 1);
  for (unsigned i = 0; i <= NBLOCKS; i++) {
    unsigned char be[8];
    store_be64 (be, offsets[i]);
    CHECK (fwrite (be, 8, 1, fp) == 1);
  }
  for (unsigned i = 0; i < NBLOCKS; i++) {
    CHECK (fwrite (blocks[i], lens[i], 1, fp) == 1);
    free (blocks[i]);
  }
  CHECK (fclose (fp) == 0);
}

static int
read_source (void *opaque, void *buf, size_t len, uint64_t offset,
             struct cloop_err *err)
{
  return source_pread (opaque, buf, len, offset, err);
}

/* Open path as a reader with a cache of cache_blocks blocks of its
 * own (*mc: free it after the reader). */
static struct reader *
open_reader (const char *path, unsigned cache_blocks, struct block_cache **mc)
{
  struct cloop_err err = { 0 };
  struct source *src = source_open_file (path, &err);
  struct byte_reader br;
  struct block_map *map;
  struct reader_config cfg = { 0 };
  struct reader *r;

  *mc = block_cache_new (cache_blocks * BS, &err);
  CHECK (*mc != NULL);
  cfg.memory_cache = *mc;
  CHECK (src != NULL);
  br = (struct byte_reader) {
    .opaque = src, .size = source_size (src), .pread = read_source,
  };
  map = cloop_open (&br, &err);
  CHECK (map != NULL);
  r = reader_new (src, map, &cfg, &err);
  CHECK (r != NULL);
  return r;
}

struct worker {
  struct reader *r;
  unsigned seed;
  int wrong;
};

static void *
random_reads (void *opaque)
{
  struct worker *w = opaque;
  unsigned char buf[3 * BS];

  for (int k = 0; k < 2000; k++) {
    uint32_t len = 1 + rand_r (&w->seed) % sizeof buf;
    uint64_t off = rand_r (&w->seed) % (SIZE - len + 1);
    struct cloop_err err = { 0 };

    if (reader_pread (w->r, NULL, buf, len, off, &err) == -1 ||
        memcmp (buf, expected + off, len) != 0)
      w->wrong++;
  }
  return NULL;
}

static void
test_exact (const char *path)
{
  struct reader *r;
  struct block_cache *mc;
  static unsigned char whole[SIZE];
  struct cloop_err err = { 0 };
  pthread_t t[8];
  struct worker w[8];

  printf ("test-reader: whole image, then 8 threads x 2000 random reads "
          "through a 3-block cache\n");
  write_image (path, NBLOCKS);
  r = open_reader (path, 3, &mc);
  CHECK (reader_pread (r, NULL, whole, SIZE, 0, &err) == 0);
  CHECK (memcmp (whole, expected, SIZE) == 0);
  for (int i = 0; i < 8; i++) {
    w[i] = (struct worker) { .r = r, .seed = 100 + i };
    CHECK (pthread_create (&t[i], NULL, random_reads, &w[i]) == 0);
  }
  for (int i = 0; i < 8; i++) {
    CHECK (pthread_join (t[i], NULL) == 0);
    CHECK (w[i].wrong == 0);
  }
  reader_free (r);
  block_cache_free (mc);
}

static void
test_corrupt (const char *path)
{
  const unsigned bad = 17;
  unsigned char buf[BS];
  struct reader *r;
  struct block_cache *mc;

  printf ("test-reader: a corrupt block fails with EIO, its neighbours "
          "read exactly\n");
  write_image (path, bad);
  r = open_reader (path, 8, &mc);
  for (int pass = 0; pass < 2; pass++) {
    struct cloop_err err = { 0 };
    CHECK (reader_pread (r, NULL, buf, BS, (uint64_t) bad * BS, &err) == -1);
    CHECK (err.errnum == EIO);
    CHECK (strstr (err.msg, "block 17") != NULL);
    CHECK (reader_pread (r, NULL, buf, BS, (uint64_t) (bad - 1) * BS, &err) == 0);
    CHECK (memcmp (buf, expected + (bad - 1) * BS, BS) == 0);
    CHECK (reader_pread (r, NULL, buf, BS, (uint64_t) (bad + 1) * BS, &err) == 0);
    CHECK (memcmp (buf, expected + (bad + 1) * BS, BS) == 0);
  }
  reader_free (r);
  block_cache_free (mc);
}

int
main (void)
{
  char path[] = "/tmp/test-reader.XXXXXX";
  int fd = mkstemp (path);

  CHECK (fd != -1);
  close (fd);
  make_data ();
  test_exact (path);
  test_corrupt (path);
  unlink (path);
  printf ("test-reader: PASS\n");
  return 0;
}
