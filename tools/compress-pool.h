/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: a pool of threads that compress blocks and hash the
 * compressed bytes, while the caller reads input and writes results in
 * order.
 *
 * The pool is a ring of slots.  The caller fills the next free slot's
 * input (compress_pool_input), submits it, and collects finished slots
 * strictly in submission order (compress_pool_collect), so block files
 * and the index are written in image order although workers finish in
 * any order.  One caller thread only.
 */
#ifndef CLOOP_STORE_COMPRESS_POOL_H
#define CLOOP_STORE_COMPRESS_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockmap.h"
#include "error.h"
#include "store.h"

/* A finished block, valid until compress_pool_release. */
struct compressed_block {
  uint64_t seq;                 /* submission number = block index */
  size_t in_len;                /* decoded bytes */
  bool zero;                    /* all zero bytes: not compressed */
  const unsigned char *data;    /* compressed bytes (NULL if zero) */
  size_t len;
  unsigned char hash[STORE_HASH_LEN];  /* SHA-256 of data */
};

struct compress_pool;

/* Start threads workers compressing with codec (CODEC_ZLIB, CODEC_ZSTD
 * or CODEC_XZ) at level, for inputs of at most block_size bytes.  NULL
 * with err set. */
struct compress_pool *compress_pool_new (enum block_codec codec, int level,
                                         unsigned threads,
                                         uint32_t block_size,
                                         struct cloop_err *err);

/* True if every slot is submitted and not yet released: collect
 * before asking for more input. */
bool compress_pool_full (const struct compress_pool *pool);

/* Number of submitted blocks not yet released. */
size_t compress_pool_pending (const struct compress_pool *pool);

/* The input buffer (block_size bytes) of the next free slot.  The pool
 * must not be full. */
unsigned char *compress_pool_input (struct compress_pool *pool);

/* Submit the next slot with len input bytes (1 <= len <= block_size). */
void compress_pool_submit (struct compress_pool *pool, size_t len);

/* Wait for the oldest submitted block and return it, or NULL with err
 * set if compressing it failed.  There must be a pending block. */
const struct compressed_block *compress_pool_collect (struct compress_pool *pool,
                                                      struct cloop_err *err);

/* Free the slot returned by the last compress_pool_collect. */
void compress_pool_release (struct compress_pool *pool);

/* Stop the workers and free everything (pending work is dropped). */
void compress_pool_free (struct compress_pool *pool);

#endif /* CLOOP_STORE_COMPRESS_POOL_H */
