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
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockcache.h"
#include "blockmap.h"
#include "diskcache.h"
#include "error.h"
#include "source.h"
#include "workpool.h"

struct reader;

struct reader_config {
  /* The memory cache of decoded blocks (borrowed: it must outlive the
   * reader, and may be shared by other readers: the process's one
   * budget).  The reader registers its image in it. */
  struct block_cache *memory_cache;
  bool force_zlib;              /* zlib inflate instead of libdeflate */
  unsigned timeout;             /* seconds a read may take (0 = none) */
  /* The most a client's sequential read-ahead window may grow to, in
   * bytes of decoded blocks (0 = no read-ahead). */
  uint64_t readahead;
  /* Bytes of decoded blocks that a client's read-ahead, once its
   * window has grown to readahead and its reads are still late, also
   * fetches beyond the window into the disk cache only (compressed,
   * checked and decoded once, then not kept in memory): what covers a
   * link whose bandwidth-delay product is more than the memory cache
   * can hold decoded (several mirrors; a slow far one).  0 = none;
   * needs disk_cache and workpool. */
  uint64_t readahead_disk;
  /* Background threads for read-ahead and NBD_CMD_CACHE (borrowed: it
   * must outlive the reader; NULL = no read-ahead, and
   * reader_prefetch fills in the caller's thread). */
  struct workpool *workpool;
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
 * Initialise with read_stream_init, free with read_stream_destroy.
 *
 * Read-ahead runs in the background (cfg.workpool): a sequential read
 * queues fills of the blocks after it, up to the window, and returns
 * as soon as its own blocks are there.  The window starts small and
 * doubles, up to cfg.readahead, whenever a sequential read still had
 * to wait: it grows until the blocks arrive before the client asks,
 * i.e. to the link's bandwidth-delay product as the client consumes
 * it, so a client with one request at a time is served like one with
 * many. */
struct read_stream {
  pthread_mutex_t lock;
  uint64_t next;                /* block a sequential read starts at */
  uint64_t ahead;               /* read-ahead queued up to this block */
  uint64_t staged;              /* and to the disk cache up to this one */
  uint64_t run_start;           /* where its sequential run began */
  uint32_t window;              /* current read-ahead, in blocks */
  atomic_uint reading;          /* the client's reads in progress */
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

/* Bring the blocks of a range into the caches without copying them
 * out (NBD_CMD_CACHE): queued as background fills (fetched at
 * FETCH_BACKGROUND) and returns at once; what the pool's queue cannot
 * take is dropped (the request is advisory).  Without a pool the
 * blocks are filled before it returns.  Blocks cached or being filled
 * are skipped.  0, or -1 with err set (a range outside the image). */
int reader_prefetch (struct reader *r, uint32_t count, uint64_t offset,
                     struct cloop_err *err);

/* Decoded bytes of the blocks that background fills (read-ahead, a
 * profile's replay) have claimed and no client has read yet, over the
 * whole memory cache; *max_bytes (may be NULL) gets the cache's bound.
 * Background work keeps the former within half of the latter. */
uint64_t reader_unread_prefetch (struct reader *r, uint64_t *max_bytes);

/* Fill the listed blocks (numbers past the image are ignored) into
 * the caches now, in this thread, as background fills fetched at
 * prio, for a caller that runs on a pool's worker (a profile's
 * replay).  Blocks cached or being filled are skipped; *claimed (may
 * be NULL) gets the number this call filled or tried to.  Failures
 * are counted, not returned.  0, or -1 on ENOMEM. */
int reader_fill_blocks (struct reader *r, const uint32_t *blocks, size_t n,
                        enum fetch_priority prio, size_t *claimed);

/* Pause read-ahead (pause) or let it run again: while a boot profile
 * is replayed, it, not read-ahead, says what to fetch.  Cheap;
 * thread-safe. */
void reader_pause_readahead (struct reader *r, bool pause);

/* Memory cache counters of this reader's image. */
void reader_get_cache_stats (struct reader *r, struct block_cache_stats *st);

/* Blocks read ahead into the disk cache only (cfg.readahead_disk), and
 * copies of such blocks that were faulty (not stored). */
void reader_get_disk_readahead (struct reader *r, uint64_t *staged,
                                uint64_t *faulty);

#endif /* CLOOP_READER_H */
