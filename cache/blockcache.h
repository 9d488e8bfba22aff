/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: bounded in-memory LRU cache of decoded blocks, with
 * single-flight filling.
 *
 * Entries are keyed by a 64-bit block number.  A reader acquires a
 * block and gets either a pinned, valid entry (HIT), the duty to fill
 * it (CLAIMED: no other thread will fill it meanwhile), or BUSY (another
 * thread is filling it; call block_cache_wait later, after publishing
 * your own claims, so that two readers of overlapping ranges can never
 * deadlock).  Pinned entries are never evicted or modified, so callers
 * copy out of them without holding any lock.
 *
 * The cache holds at most max_bytes of decoded data in all, pinned and
 * in-flight entries included: unpinned entries are evicted to make
 * room for them.  Only when pinned entries alone exceed max_bytes
 * does it hold more (bounded by the requests in flight): such entries
 * are mapped for themselves and unmapped when evicted, except for up
 * to min (max_bytes, 16 MiB) kept idle for reuse.  Memory for
 * max_bytes is reserved at creation (address space only) and backed by
 * transparent huge pages where the kernel allows.  All functions are thread-safe.  cache/ knows
 * nothing of nbdkit.
 */
#ifndef CLOOP_BLOCKCACHE_H
#define CLOOP_BLOCKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct block_cache;

/* A pinned reference to one entry. */
struct block_ref {
  void *entry;          /* opaque */
  unsigned char *data;  /* block_size bytes; read-only unless CLAIMED */
};

enum block_cache_status {
  BLOCK_HIT,            /* ref pinned, data valid */
  BLOCK_CLAIMED,        /* ref pinned, caller must fill data then publish */
  BLOCK_BUSY,           /* someone else is filling: block_cache_wait */
  BLOCK_FAILED,         /* (wait only) the filler failed; ref not set */
  BLOCK_TIMEDOUT,       /* (wait only) deadline passed first; ref not set */
};

struct block_cache_stats {
  uint64_t hits, misses, waits, evictions, fill_failures;
  uint64_t bytes_cached;        /* decoded bytes held now */
  uint64_t entries;
};

/* Create a cache of blocks of block_size bytes holding at most
 * max_bytes of unpinned data (0 = keep nothing once unpinned).
 * Returns NULL with err set (ENOMEM). */
struct block_cache *block_cache_new (uint32_t block_size, uint64_t max_bytes,
                                     struct cloop_err *err);

/* Free the cache.  No references may be held. */
void block_cache_free (struct block_cache *cache);

/* Look up block n.  HIT or CLAIMED fill *ref (pinned); BUSY leaves
 * *ref untouched.  Returns -1 with err set only on ENOMEM. */
int block_cache_acquire (struct block_cache *cache, uint64_t n,
                         struct block_ref *ref,
                         enum block_cache_status *status,
                         struct cloop_err *err);

/* Finish a claim: ok != 0 makes the data visible to everyone (and wakes
 * waiters); ok == 0 discards the entry (waiters get BLOCK_FAILED).  In
 * both cases the caller's pin is released when ok == 0; when ok != 0
 * the caller keeps its pin and must block_cache_release it. */
void block_cache_publish (struct block_cache *cache, struct block_ref *ref,
                          int ok);

/* Wait for block n, which was BUSY, until deadline_ns on the
 * CLOCK_MONOTONIC clock (0 = no deadline).  Returns BLOCK_HIT with *ref
 * pinned, BLOCK_CLAIMED if the entry vanished meanwhile (the caller now
 * fills it), BLOCK_FAILED if its filler failed, or BLOCK_TIMEDOUT.  -1
 * on ENOMEM. */
int block_cache_wait (struct block_cache *cache, uint64_t n,
                      struct block_ref *ref, enum block_cache_status *status,
                      uint64_t deadline_ns, struct cloop_err *err);

/* Drop a pin obtained from HIT, CLAIMED+publish(ok) or wait. */
void block_cache_release (struct block_cache *cache, struct block_ref *ref);

/* Copy current counters. */
void block_cache_get_stats (struct block_cache *cache,
                            struct block_cache_stats *stats);

#endif /* CLOOP_BLOCKCACHE_H */
