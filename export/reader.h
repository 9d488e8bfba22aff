/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the read pipeline of one exported image.
 *
 * A reader joins the layers below the plugin: a block map (index/), a
 * source of compressed bytes (fetch/), a memory cache of decoded blocks
 * (cache/) and a pool of decoders (index/decode.h).  A read that spans
 * several blocks claims every missing block first, fetches them all in
 * one batch (so an HTTP source keeps them in flight together), decodes
 * and publishes them, and only then waits for blocks other threads are
 * filling: single-flight without deadlock.  It knows nothing of nbdkit.
 */
#ifndef CLOOP_READER_H
#define CLOOP_READER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockcache.h"
#include "blockmap.h"
#include "diskcache.h"
#include "error.h"
#include "source.h"

struct reader;

struct reader_config {
  /* The memory cache of decoded blocks (borrowed: it must outlive the
   * reader, and may be shared by other readers: the process's one
   * budget).  The reader registers its image in it. */
  struct block_cache *memory_cache;
  bool force_zlib;              /* zlib inflate instead of libdeflate */
  unsigned timeout;             /* seconds a read may take (0 = none) */
  /* Sequential reads that miss also fetch up to this many bytes of
   * following blocks in the same batch (0 = no read-ahead). */
  uint64_t readahead;
  /* Optional persistent cache of compressed blocks (borrowed: it
   * must outlive the reader).  Blocks are keyed by object_id and their byte range, and are
   * written only after they decoded correctly. */
  struct disk_cache *disk_cache;
  char object_id[65];
  /* Optional debug output (may be NULL). */
  void (*debug) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
  bool debug_blocks;            /* log every block fill */
};

/* Create a reader, registering its image in cfg->memory_cache (which
 * must be set).  On success it owns src and map (reader_free frees
 * them); on failure (NULL, err set) the caller still owns them. */
struct reader *reader_new (struct source *src, struct block_map *map,
                           const struct reader_config *cfg,
                           struct cloop_err *err);

/* Free the reader, its source, map and decoders, and drop its blocks
 * from the memory cache (NULL allowed). */
void reader_free (struct reader *r);

/* The block map (read-only). */
const struct block_map *reader_map (const struct reader *r);

/* The source (for its name and statistics). */
struct source *reader_source (const struct reader *r);

/* The disk cache, or NULL. */
struct disk_cache *reader_disk_cache (const struct reader *r);

/* The sequential-read detector of one client (an NBD connection):
 * where it would read next and its read-ahead window.  Each client has
 * its own, so two clients reading sequentially do not reset each
 * other's read-ahead; one client's concurrent requests share it.
 * Initialise with read_stream_init, free with read_stream_destroy. */
struct read_stream {
  pthread_mutex_t lock;
  uint64_t next;                /* block a sequential read starts at */
  uint32_t window;              /* current read-ahead, in blocks */
};

void read_stream_init (struct read_stream *s);
void read_stream_destroy (struct read_stream *s);

/* Read count bytes at offset of the decoded image into buf.  The range
 * must lie inside the image.  stream is the client's sequential-read
 * detector (read-ahead follows it), or NULL for no read-ahead.
 * Returns 0, or -1 with err set (EIO, with
 * the block number and reason) if any block in the range could not be
 * fetched or decoded; blocks that did decode stay cached. */
int reader_pread (struct reader *r, struct read_stream *stream,
                  void *buf, uint32_t count,
                  uint64_t offset, struct cloop_err *err);

/* Fetch and decode the blocks of a range into the memory cache without
 * copying them out (NBD_CMD_CACHE).  Blocks other threads are already
 * filling are skipped.  0 or -1 with err set. */
int reader_prefetch (struct reader *r, uint32_t count, uint64_t offset,
                     struct cloop_err *err);

/* Memory cache counters of this reader's image. */
void reader_get_cache_stats (struct reader *r, struct block_cache_stats *st);

#endif /* CLOOP_READER_H */
