/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: bounded in-memory LRU cache of decoded blocks.
 *
 * Design:
 *
 * - Table: chained hash table of entries keyed by block number, with
 *   the chain link inside the entry (no separate node allocation).
 *   Fibonacci hashing spreads both sequential and sparse block numbers;
 *   the bucket array doubles when the load factor reaches 1.  If that
 *   allocation fails the table simply keeps its size (longer chains,
 *   still correct).
 *
 * - LRU: an intrusive doubly linked list holding exactly the entries
 *   that are valid and unpinned (refs == 0).  Pinning unlinks, the last
 *   unpin links at the most recently used end, and eviction takes from
 *   the least recently used end.  Pinned and in-flight entries are
 *   never on the list, so they can never be evicted or freed.
 *
 * - Memory: the first max_bytes / block_size entries live in one
 *   arena reserved at creation (virtual address space only: pages are
 *   touched as slots are first used) and advised to use transparent
 *   huge pages, so that filling a cold cache costs one page fault per
 *   2 MiB instead of one per 4 KiB (faults are the dearest part of a
 *   cold read on a virtual machine).  Entries beyond the arena, needed
 *   only while pins exceed max_bytes, are mapped one by one with their
 *   data (page_alloc, not malloc: see overflow_len); freed ones are
 *   kept for reuse up to min (max_bytes, SPARE_MAX_BYTES) and unmapped
 *   beyond that; once the pins are gone, an evicted overflow entry is
 *   freed in favour of a free arena slot.  Freed arena slots go on a
 *   free list.  When a claim arrives and the
 *   data held would exceed max_bytes once this block joins it, the
 *   least recently used entry is evicted right away and its slot is
 *   reused for the new block.  So the steady state (a full cache that
 *   keeps missing) allocates nothing, and memory never exceeds
 *   max_bytes (rounded up to a huge page) + (pinned entries beyond it)
 *   * block_size + min (max_bytes, SPARE_MAX_BYTES) of idle spares.
 *
 * - Locking: one mutex guards everything.  Waiters share a single
 *   condition variable and publish broadcasts on it.  Waiting only
 *   happens when two requests miss on the same block at once, and each
 *   wake-up is paid for by a whole block decode, so the occasional
 *   spurious wake-up of a waiter for some other block is cheap; a
 *   per-entry condvar would cost an init/destroy on every miss and
 *   48 bytes per cached block for a case that is rare.
 *
 * - Failure: publish (ok = 0) marks the entry FAILED and unlinks it
 *   from the table at once, so a later acquire claims a fresh entry.
 *   Waiters pin the entry while they sleep, so the FAILED entry stays
 *   alive until the last of them has seen it; the last unpin frees it.
 *
 * Counters: hits = requests served from an already valid entry without
 * sleeping; misses = claims (the caller fills); waits = block_cache_wait
 * calls that had to sleep for another thread's fill; evictions = valid
 * entries dropped to respect max_bytes; fill_failures = publish (ok=0).
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "blockcache.h"
#include "pagemem.h"

enum entry_state {
  ENTRY_FILLING,                /* claimed, filler holds a pin */
  ENTRY_VALID,                  /* data readable */
  ENTRY_FAILED,                 /* unlinked from table, waiters drain */
};

struct entry {
  uint64_t n;                   /* block number */
  struct entry *hash_next;      /* chain in the bucket */
  struct entry *lru_prev;       /* towards most recently used */
  struct entry *lru_next;       /* towards least recently used */
  unsigned refs;                /* pins: filler, readers, waiters */
  enum entry_state state;
  unsigned char *data;          /* block_size bytes */
};

/* Transparent huge page size the arena is aligned to. */
#define HUGE_PAGE (2 * 1024 * 1024)

/* Idle overflow entries kept for reuse: at most this many bytes, and
 * no more than max_bytes. */
#define SPARE_MAX_BYTES (16 * 1024 * 1024)

#define MIN_BUCKET_BITS 4
#define MAX_BUCKET_BITS 40

struct block_cache {
  pthread_mutex_t lock;
  pthread_cond_t filled;        /* broadcast on every publish */
  uint32_t block_size;
  uint64_t max_bytes;

  struct entry **buckets;       /* 1 << bucket_bits chains */
  unsigned bucket_bits;
  uint64_t nr_entries;          /* entries in the table (any state) */
  uint64_t nr_valid;            /* entries in the table and valid */

  struct entry *lru_head;       /* most recently used */
  struct entry *lru_tail;       /* least recently used */
  uint64_t lru_bytes;           /* block_size * entries on the list */

  /* Arena: entry headers hdrs[i] own data arena + i * block_size.
   * Slots [0, arena_used) have been handed out at least once; free
   * ones are chained through hash_next from free_slots. */
  unsigned char *arena;
  size_t arena_len;             /* bytes mapped, 0 = no arena */
  struct entry *hdrs;
  size_t arena_slots, arena_used;
  struct entry *free_slots;

  /* Idle overflow entries (beyond the arena), chained through
   * hash_next, kept for reuse up to spare_max: while reads keep more
   * pinned than max_bytes, blocks come and go at the rate of decoding,
   * and a fresh mapping for each would cost a page fault per 4 KiB. */
  struct entry *spare;
  size_t nr_spare, spare_max;

  uint64_t hits, misses, waits, evictions, fill_failures;
};

/* ---- entry memory -------------------------------------------------- */

/* Reserve the arena for max_bytes / block_size slots.  Without it
 * (mmap refused, or a cache too small for one block) every entry is
 * an overflow entry: slower to fill, same behaviour. */
static void
arena_init (struct block_cache *c)
{
  size_t slots = c->max_bytes / c->block_size, len;
  unsigned char *p;
  uintptr_t start, end;

  if (slots == 0 || slots > (SIZE_MAX - 2 * HUGE_PAGE) / c->block_size ||
      (c->hdrs = calloc (slots, sizeof *c->hdrs)) == NULL)
    return;
  /* Map one huge page more than needed, then trim to an aligned
   * range: huge pages only back aligned 2 MiB extents. */
  len = (slots * c->block_size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  p = mmap (NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    free (c->hdrs);
    c->hdrs = NULL;
    return;
  }
  start = ((uintptr_t) p + HUGE_PAGE - 1) & ~(uintptr_t) (HUGE_PAGE - 1);
  end = start + len;
  if (start > (uintptr_t) p)
    munmap (p, start - (uintptr_t) p);
  if ((uintptr_t) p + len + HUGE_PAGE > end)
    munmap ((void *) end, (uintptr_t) p + len + HUGE_PAGE - end);
#ifdef MADV_HUGEPAGE
  madvise ((void *) start, len, MADV_HUGEPAGE);  /* advice: may fail */
#endif
  c->arena = (unsigned char *) start;
  c->arena_len = len;
  c->arena_slots = slots;
}

/* Bytes of an entry beyond the arena: header and data in one mapping
 * of its own, returned to the system when the entry is freed.  Through
 * malloc, these would pile up in glibc's per-thread arenas, or (blocks
 * of 128 KiB and more) raise its mmap threshold when freed, moving
 * every smaller allocation of the process into those arenas (see
 * pagemem.h). */
static size_t
overflow_len (const struct block_cache *c)
{
  return sizeof (struct entry) + c->block_size;
}

/* A new entry with its data buffer, or NULL on ENOMEM. */
static struct entry *
entry_alloc (struct block_cache *c)
{
  struct entry *e = c->free_slots;

  if (e != NULL) {
    c->free_slots = e->hash_next;
    return e;
  }
  if (c->arena_used < c->arena_slots) {
    e = &c->hdrs[c->arena_used];
    e->data = c->arena + c->arena_used * c->block_size;
    c->arena_used++;
    return e;
  }
  if ((e = c->spare) != NULL) {
    c->spare = e->hash_next;
    c->nr_spare--;
    return e;
  }
  e = page_alloc (overflow_len (c));
  if (e != NULL)
    e->data = (unsigned char *) (e + 1);
  return e;
}

static bool
in_arena (const struct block_cache *c, const struct entry *e)
{
  return c->hdrs != NULL && e >= c->hdrs && e < c->hdrs + c->arena_slots;
}

/* An evicted entry to reuse for a new block: an overflow one is traded
 * for a free arena slot if there is one, so that memory returns to the
 * arena once a burst of pins is over. */
static struct entry *
entry_recycle (struct block_cache *c, struct entry *e)
{
  if (in_arena (c, e) || c->free_slots == NULL)
    return e;
  page_free (e, overflow_len (c));
  return entry_alloc (c);
}

static void
entry_free (struct block_cache *c, struct entry *e)
{
  if (in_arena (c, e)) {
    e->hash_next = c->free_slots;
    c->free_slots = e;
  }
  else if (c->nr_spare < c->spare_max) {
    e->hash_next = c->spare;
    c->spare = e;
    c->nr_spare++;
  }
  else
    page_free (e, overflow_len (c));
}

/* ---- hash table ---------------------------------------------------- */

static size_t
bucket_of (const struct block_cache *c, uint64_t n)
{
  return (size_t) ((n * UINT64_C (0x9E3779B97F4A7C15)) >>
                   (64 - c->bucket_bits));
}

static struct entry *
table_find (const struct block_cache *c, uint64_t n)
{
  struct entry *e;

  for (e = c->buckets[bucket_of (c, n)]; e != NULL; e = e->hash_next)
    if (e->n == n)
      return e;
  return NULL;
}

/* Double the bucket array; on allocation failure keep the old one. */
static void
table_grow (struct block_cache *c)
{
  size_t old_count = (size_t) 1 << c->bucket_bits, i;
  struct entry **old = c->buckets, **fresh;

  if (c->bucket_bits >= MAX_BUCKET_BITS ||
      (fresh = calloc (old_count * 2, sizeof *fresh)) == NULL)
    return;
  c->buckets = fresh;
  c->bucket_bits++;
  for (i = 0; i < old_count; i++) {
    struct entry *e = old[i], *next;

    for (; e != NULL; e = next) {
      size_t b = bucket_of (c, e->n);

      next = e->hash_next;
      e->hash_next = fresh[b];
      fresh[b] = e;
    }
  }
  free (old);
}

static void
table_insert (struct block_cache *c, struct entry *e)
{
  size_t b;

  if (c->nr_entries >= ((uint64_t) 1 << c->bucket_bits))
    table_grow (c);
  b = bucket_of (c, e->n);
  e->hash_next = c->buckets[b];
  c->buckets[b] = e;
  c->nr_entries++;
}

static void
table_remove (struct block_cache *c, struct entry *e)
{
  struct entry **p = &c->buckets[bucket_of (c, e->n)];

  while (*p != e) {
    assert (*p != NULL);
    p = &(*p)->hash_next;
  }
  *p = e->hash_next;
  e->hash_next = NULL;
  c->nr_entries--;
}

/* ---- LRU list ------------------------------------------------------ */

static void
lru_unlink (struct block_cache *c, struct entry *e)
{
  if (e->lru_prev) e->lru_prev->lru_next = e->lru_next;
  else c->lru_head = e->lru_next;
  if (e->lru_next) e->lru_next->lru_prev = e->lru_prev;
  else c->lru_tail = e->lru_prev;
  e->lru_prev = e->lru_next = NULL;
  c->lru_bytes -= c->block_size;
}

static void
lru_push_recent (struct block_cache *c, struct entry *e)
{
  e->lru_prev = NULL;
  e->lru_next = c->lru_head;
  if (c->lru_head) c->lru_head->lru_prev = e;
  else c->lru_tail = e;
  c->lru_head = e;
  c->lru_bytes += c->block_size;
}

/* Drop the least recently used entry from list and table, and hand
 * its allocation to the caller (to reuse or free).  List not empty. */
static struct entry *
evict_oldest (struct block_cache *c)
{
  struct entry *e = c->lru_tail;

  lru_unlink (c, e);
  table_remove (c, e);
  c->nr_valid--;
  c->evictions++;
  return e;
}

/* Bytes of every entry in the table: valid, pinned and in flight. */
static uint64_t
held_bytes (const struct block_cache *c)
{
  return c->nr_entries * c->block_size;
}

/* Evict unpinned entries, oldest first, while everything held exceeds
 * the bound: pinned and in-flight blocks count too, so that memory is
 * max_bytes in all unless the pins alone exceed it. */
static void
enforce_bound (struct block_cache *c)
{
  while (c->lru_tail != NULL && held_bytes (c) > c->max_bytes)
    entry_free (c, evict_oldest (c));
}

/* ---- pins and claims (all with the lock held) ---------------------- */

static void
fill_ref (struct block_ref *ref, struct entry *e)
{
  ref->entry = e;
  ref->data = e->data;
}

/* Pin a valid entry. */
static void
pin_valid (struct block_cache *c, struct entry *e)
{
  if (e->refs++ == 0)
    lru_unlink (c, e);
}

/* Drop one pin; the last pin of a valid entry makes it evictable, the
 * last pin of a failed one frees it. */
static void
unpin (struct block_cache *c, struct entry *e)
{
  assert (e->refs > 0);
  if (--e->refs > 0)
    return;
  if (e->state == ENTRY_VALID) {
    lru_push_recent (c, e);
    enforce_bound (c);
  }
  else {
    assert (e->state == ENTRY_FAILED);
    entry_free (c, e);
  }
}

/* Create an in-flight entry for block n, pinned by the caller.  Reuses
 * the oldest unpinned entry's allocation if adding this block would
 * push what is held over the bound anyway. */
static int
claim (struct block_cache *c, uint64_t n, struct block_ref *ref,
       struct cloop_err *err)
{
  struct entry *e;

  if (c->lru_tail != NULL && held_bytes (c) + c->block_size > c->max_bytes)
    e = entry_recycle (c, evict_oldest (c));
  else {
    e = entry_alloc (c);
    if (e == NULL)
      return cloop_err_set (err, ENOMEM,
                            "block cache: cannot allocate %" PRIu32
                            "-byte block %" PRIu64, c->block_size, n);
  }
  e->n = n;
  e->lru_prev = e->lru_next = NULL;
  e->refs = 1;
  e->state = ENTRY_FILLING;
  table_insert (c, e);
  c->misses++;
  fill_ref (ref, e);
  return 0;
}

/* ---- public API ---------------------------------------------------- */

struct block_cache *
block_cache_new (uint32_t block_size, uint64_t max_bytes,
                 struct cloop_err *err)
{
  struct block_cache *c;

  if (block_size == 0
#if SIZE_MAX <= UINT32_MAX
      || block_size > SIZE_MAX - sizeof (struct entry)
#endif
      ) {
    cloop_err_set (err, EINVAL, "block cache: bad block size %" PRIu32,
                   block_size);
    return NULL;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    cloop_err_set (err, ENOMEM, "block cache: out of memory");
    return NULL;
  }
  c->bucket_bits = MIN_BUCKET_BITS;
  c->buckets = calloc ((size_t) 1 << c->bucket_bits, sizeof *c->buckets);
  if (c->buckets == NULL) {
    free (c);
    cloop_err_set (err, ENOMEM, "block cache: out of memory");
    return NULL;
  }
  c->block_size = block_size;
  c->max_bytes = max_bytes;
  c->spare_max = (max_bytes < SPARE_MAX_BYTES ? max_bytes : SPARE_MAX_BYTES)
                 / block_size;
  arena_init (c);
  pthread_mutex_init (&c->lock, NULL);
  {
    /* Waits have deadlines on the monotonic clock. */
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&c->filled, &attr);
    pthread_condattr_destroy (&attr);
  }
  return c;
}

void
block_cache_free (struct block_cache *c)
{
  size_t i;

  if (c == NULL)
    return;
  for (i = 0; i < ((size_t) 1 << c->bucket_bits); i++) {
    struct entry *e = c->buckets[i], *next;

    for (; e != NULL; e = next) {
      next = e->hash_next;
      entry_free (c, e);
    }
  }
  while (c->spare != NULL) {
    struct entry *e = c->spare;
    c->spare = e->hash_next;
    page_free (e, overflow_len (c));
  }
  free (c->buckets);
  if (c->arena_len)
    munmap (c->arena, c->arena_len);
  free (c->hdrs);
  pthread_cond_destroy (&c->filled);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

/* With the lock held: claim block n if absent (CLAIMED; *r = -1 on
 * ENOMEM), pin it if valid (HIT), else BUSY.  Returns the entry found,
 * or NULL if none was. */
static struct entry *
lookup_locked (struct block_cache *c, uint64_t n, struct block_ref *ref,
               enum block_cache_status *status, int *r, struct cloop_err *err)
{
  struct entry *e = table_find (c, n);

  *r = 0;
  if (e == NULL) {
    *r = claim (c, n, ref, err);
    *status = BLOCK_CLAIMED;
  }
  else if (e->state == ENTRY_VALID) {
    pin_valid (c, e);
    c->hits++;
    fill_ref (ref, e);
    *status = BLOCK_HIT;
  }
  else
    *status = BLOCK_BUSY;
  return e;
}

int
block_cache_acquire (struct block_cache *c, uint64_t n,
                     struct block_ref *ref, enum block_cache_status *status,
                     struct cloop_err *err)
{
  int r;

  pthread_mutex_lock (&c->lock);
  lookup_locked (c, n, ref, status, &r, err);
  pthread_mutex_unlock (&c->lock);
  return r;
}

void
block_cache_publish (struct block_cache *c, struct block_ref *ref, int ok)
{
  struct entry *e = ref->entry;

  pthread_mutex_lock (&c->lock);
  assert (e->state == ENTRY_FILLING);
  if (ok) {
    e->state = ENTRY_VALID;
    c->nr_valid++;
  }
  else {
    e->state = ENTRY_FAILED;
    table_remove (c, e);
    c->fill_failures++;
    unpin (c, e);
  }
  pthread_cond_broadcast (&c->filled);
  pthread_mutex_unlock (&c->lock);
  if (!ok) {
    ref->entry = NULL;
    ref->data = NULL;
  }
}

int
block_cache_wait (struct block_cache *c, uint64_t n,
                  struct block_ref *ref, enum block_cache_status *status,
                  uint64_t deadline_ns, struct cloop_err *err)
{
  struct timespec until = {
    .tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000,
  };
  struct entry *e;
  int r = 0;

  pthread_mutex_lock (&c->lock);
  e = lookup_locked (c, n, ref, status, &r, err);
  if (*status == BLOCK_BUSY) {
    /* In flight: pin it so that it outlives a failure, then sleep. */
    c->waits++;
    e->refs++;
    bool timed_out = false;
    while (e->state == ENTRY_FILLING && !timed_out) {
      if (deadline_ns == 0)
        pthread_cond_wait (&c->filled, &c->lock);
      else
        timed_out = pthread_cond_timedwait (&c->filled, &c->lock,
                                            &until) == ETIMEDOUT;
    }
    if (e->state == ENTRY_VALID) {
      fill_ref (ref, e);
      *status = BLOCK_HIT;
    }
    else {
      /* Decide before unpinning: the last unpin of a failed entry
       * frees it. */
      *status = e->state == ENTRY_FILLING ? BLOCK_TIMEDOUT : BLOCK_FAILED;
      unpin (c, e);
    }
  }
  pthread_mutex_unlock (&c->lock);
  return r;
}

void
block_cache_release (struct block_cache *c, struct block_ref *ref)
{
  pthread_mutex_lock (&c->lock);
  unpin (c, ref->entry);
  pthread_mutex_unlock (&c->lock);
  ref->entry = NULL;
  ref->data = NULL;
}

void
block_cache_get_stats (struct block_cache *c, struct block_cache_stats *s)
{
  pthread_mutex_lock (&c->lock);
  s->hits = c->hits;
  s->misses = c->misses;
  s->waits = c->waits;
  s->evictions = c->evictions;
  s->fill_failures = c->fill_failures;
  s->bytes_cached = c->nr_valid * c->block_size;
  s->entries = c->nr_entries;
  pthread_mutex_unlock (&c->lock);
}
