/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: bounded in-memory LRU cache of decoded blocks, shared
 * by every image a process serves, with single-flight filling.
 *
 * One cache holds one memory budget (max_bytes of decoded data) for
 * the whole process.  Each image registers with its block size and
 * gets a handle (struct block_cache_image, with a 64-bit id unique in
 * the cache); entries are keyed by (image, block number).  The budget
 * and the LRU order are shared by all images: a busy image may use
 * the whole budget while idle ones hold nothing, and the least
 * recently used block of any image is the one evicted.
 *
 * A reader acquires a block and gets either a pinned, valid entry
 * (HIT), the duty to fill it (CLAIMED: no other thread will fill it
 * meanwhile), or BUSY (another thread is filling it; call
 * block_cache_wait later, after publishing your own claims, so that
 * two readers of overlapping ranges can never deadlock).  Pinned
 * entries are never evicted or modified, so callers copy out of them
 * without holding any lock.
 *
 * The cache holds at most max_bytes of decoded data in all images,
 * pinned and in-flight entries included: unpinned entries are evicted
 * to make room for them.  Only when pinned entries alone exceed
 * max_bytes does it hold more (bounded by the requests in flight):
 * such entries are mapped for themselves and unmapped when evicted,
 * except for up to min (max_bytes, 16 MiB) kept idle for reuse.
 *
 * Memory with mixed block sizes: each block size in use gets an arena
 * of its own when its first image registers: max_bytes of address
 * space reserved (MAP_NORESERVE, backed by transparent huge pages
 * where the kernel allows), sliced into slots of that size, its pages
 * touched only as slots are first used, and unmapped when the last
 * image of that size unregisters.  So no size is mapped block by
 * block in the steady state, and a block of any size reuses a free
 * slot of its own size.  Free slots stay resident for reuse; when the
 * sizes' shares of the budget shift, the resident memory of all
 * arenas (plus the mapped pinned-overflow entries) may exceed
 * max_bytes: once it does by the slack, min (max_bytes / 8, 16 MiB),
 * free slots of every size are given back to the kernel
 * (MADV_DONTNEED, adjacent slots in one call) until it is within
 * max_bytes again.  Memory used is thus at most max_bytes (rounded up
 * to a huge page per size) + the slack + the pinned overflow and its
 * idle spares, whatever the mix; with one block size the trim never
 * runs.  Slot headers cost 56 bytes per slot used (per size: up to
 * max_bytes / block size of them, zero pages until used).
 *
 * All functions are thread-safe.  cache/ knows nothing of nbdkit.
 */
#ifndef CLOOP_BLOCKCACHE_H
#define CLOOP_BLOCKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct block_cache;
struct block_cache_image;

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

/* Counters of one image, or of the whole cache (every image ever
 * registered; bytes_cached and entries: those held now). */
struct block_cache_stats {
  uint64_t hits, misses, waits, evictions, fill_failures;
  /* Background fills (block_cache_acquire_prefetch): blocks filled;
   * of those, found by a client's lookup (used), or dropped before
   * (wasted); and client waits on a block a background fill was
   * filling (counted in waits and used too). */
  uint64_t prefetched, prefetch_used, prefetch_wasted, prefetch_waits;
  uint64_t bytes_cached;        /* decoded bytes held now (valid) */
  uint64_t entries;             /* entries held now (any state) */
};

/* Create a cache holding at most max_bytes of unpinned data over all
 * images (0 = keep nothing once unpinned).  Returns NULL with err set
 * (ENOMEM). */
struct block_cache *block_cache_new (uint64_t max_bytes,
                                     struct cloop_err *err);

/* Free the cache and any image still registered.  No references may
 * be held. */
void block_cache_free (struct block_cache *cache);

/* Register an image of blocks of block_size bytes (> 0).  Returns its
 * handle, or NULL with err set (EINVAL: bad size; ENOMEM). */
struct block_cache_image *block_cache_register (struct block_cache *cache,
                                                uint32_t block_size,
                                                struct cloop_err *err);

/* Drop the image's entries and free its handle (NULL allowed).  None of
 * its entries may be pinned. */
void block_cache_unregister (struct block_cache_image *img);

/* The image's id: unique among the images ever registered in its cache
 * (never 0). */
uint64_t block_cache_image_id (const struct block_cache_image *img);

/* Look up block n of img.  HIT or CLAIMED fill *ref (pinned); BUSY
 * leaves *ref untouched.  Returns -1 with err set only on ENOMEM. */
int block_cache_acquire (struct block_cache_image *img, uint64_t n,
                         struct block_ref *ref,
                         enum block_cache_status *status,
                         struct cloop_err *err);

/* block_cache_acquire for a background fill (read-ahead, prefetch):
 * a claim marks the entry as prefetched (counted as prefetched once
 * published, then as used or wasted); a lookup is not counted as a
 * hit or miss and is not a use of a prefetched entry. */
int block_cache_acquire_prefetch (struct block_cache_image *img, uint64_t n,
                                  struct block_ref *ref,
                                  enum block_cache_status *status,
                                  struct cloop_err *err);

/* Is block n of img cached or being filled?  Counts nothing, pins
 * nothing: the answer may be stale at once.  For work that would only
 * fetch the block elsewhere (read-ahead into the disk cache). */
bool block_cache_contains (struct block_cache_image *img, uint64_t n);

/* Finish a claim: ok != 0 makes the data visible to everyone (and wakes
 * waiters); ok == 0 discards the entry (waiters get BLOCK_FAILED).  In
 * both cases the caller's pin is released when ok == 0; when ok != 0
 * the caller keeps its pin and must block_cache_release it. */
void block_cache_publish (struct block_cache_image *img,
                          struct block_ref *ref, int ok);

/* Wait for block n, which was BUSY, until deadline_ns on the
 * CLOCK_MONOTONIC clock (0 = no deadline).  Returns BLOCK_HIT with *ref
 * pinned, BLOCK_CLAIMED if the entry vanished meanwhile (the caller now
 * fills it), BLOCK_FAILED if its filler failed, or BLOCK_TIMEDOUT.  A
 * failed background fill (block_cache_acquire_prefetch) does not fail
 * its waiters: they look again (and get CLAIMED, or wait for the next
 * filler).  -1 on ENOMEM. */
int block_cache_wait (struct block_cache_image *img, uint64_t n,
                      struct block_ref *ref, enum block_cache_status *status,
                      uint64_t deadline_ns, struct cloop_err *err);

/* Drop a pin obtained from HIT, CLAIMED+publish(ok) or wait. */
void block_cache_release (struct block_cache_image *img,
                          struct block_ref *ref);

/* Copy the image's counters. */
void block_cache_get_stats (struct block_cache_image *img,
                            struct block_cache_stats *stats);

/* Copy the counters of the whole cache (the process's totals). */
void block_cache_get_totals (struct block_cache *cache,
                             struct block_cache_stats *stats);

/* Decoded bytes of the blocks that background fills have claimed
 * (being filled, or filled) and no client has read yet, over all the
 * images of img's cache; *max_bytes (if not NULL) gets the cache's
 * bound.  Read-ahead keeps the former within a share of the latter, so
 * that what it fetches is read before it is evicted. */
uint64_t block_cache_unread_prefetch (struct block_cache_image *img,
                                      uint64_t *max_bytes);

#endif /* CLOOP_BLOCKCACHE_H */
