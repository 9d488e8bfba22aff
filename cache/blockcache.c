/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: bounded in-memory LRU cache of decoded blocks, shared
 * by every image of the process.
 *
 * Design:
 *
 * - Images: each registered image has its own hash table (entries of
 *   that image only) and counters; the LRU list, the byte budget, the
 *   memory and the lock are the cache's.  A lookup is thus exactly the
 *   one of a cache per image (a key (image, block) is found in the
 *   image's table by block number), and unregistering an image walks
 *   only its own table.
 *
 * - Table: chained hash table of entries keyed by block number, with
 *   the chain link inside the entry (no separate node allocation).
 *   Fibonacci hashing spreads both sequential and sparse block numbers;
 *   the bucket array doubles when the load factor reaches 1.  If that
 *   allocation fails the table simply keeps its size (longer chains,
 *   still correct).
 *
 * - LRU: an intrusive doubly linked list, over all images, holding
 *   exactly the entries that are valid and unpinned (refs == 0).
 *   Pinning unlinks, the last unpin links at the most recently used
 *   end, and eviction takes from the least recently used end.  Pinned
 *   and in-flight entries are never on the list, so they can never be
 *   evicted or freed.  Except (use-once, as a kernel's page cache
 *   treats read-ahead): a prefetched block that a client has just read
 *   for the first time goes to the least recently used end, a second
 *   read makes it recent.  A sequential reader reads each block once,
 *   and its read-ahead, published and not yet read, was otherwise older
 *   than the blocks just read and evicted first: a parallel copy over
 *   three mirrors refetched 156 blocks of 8192 (280 with windows of
 *   32 MiB), and none with this.  unread_prefetch counts the bytes of
 *   the prefetched blocks no client has read yet.
 *
 * - Memory: each block size in use has a pool: max_bytes of address
 *   space reserved when its first image registers (the arena: pages
 *   are touched as slots are first used), advised to use transparent
 *   huge pages, so that filling a cold cache costs one page fault per
 *   2 MiB instead of one per 4 KiB (faults are the dearest part of a
 *   cold read on a virtual machine), and sliced into max_bytes / bs
 *   slots.  Freed slots go on the pool's free list.  Entries beyond a
 *   full arena (needed only while pins exceed max_bytes) are mapped
 *   one by one with their data (page_alloc, not malloc: see
 *   overflow_len); freed ones are kept for reuse by their image up to
 *   min (max_bytes, SPARE_MAX_BYTES) in all and unmapped beyond that;
 *   an evicted overflow entry is freed in favour of a free arena slot.
 *   When a claim arrives and the data held would exceed max_bytes once
 *   this block joins it, least recently used entries are evicted right
 *   away, and the first of them with the claimed block's size is
 *   reused for it.  So the steady state (a full cache that keeps
 *   missing) allocates nothing, whatever the mix of sizes.  A pool is
 *   unmapped when the last image of its size unregisters.
 *
 * - Resident memory: free slots stay touched (resident) for reuse.
 *   resident_bytes counts the touched slots of all pools plus the
 *   overflow mappings.  With one size it never exceeds max_bytes
 *   (beyond the pins); with several, the shares of the sizes shift
 *   and a size may touch fresh slots while others hold free ones.
 *   Once resident_bytes exceeds max_bytes + slack (min (max_bytes / 8,
 *   SLACK_MAX_BYTES)), free slots of every pool are given back
 *   (MADV_DONTNEED; sorted, adjacent slots in one call) until it is
 *   within max_bytes: a batch per slack bytes of shift, not a syscall
 *   per block.  The first give-back of a pool advises its whole arena
 *   MADV_NOHUGEPAGE (one call; the mapping stays one VMA): else
 *   khugepaged (max_ptes_none is 511 by default) collapses any 2 MiB
 *   extent still holding a used slot back into a huge page, making
 *   the given-back pages resident again behind the bound's back.
 *   Released slots refault when reused, and that is the dear part:
 *   releasing part of a huge page splits it, so a reused slot takes
 *   a fault per 4 KiB (with two exports of 64 KiB and
 *   256 KiB blocks read at once, the shares drift by tens of MiB and
 *   the refaults cost ~15 % of throughput; with no trim at all the
 *   throughput matches one cache per export, but the memory does not
 *   stay bounded).  Not done yet: allocating the lowest free slot so
 *   that free slots gather in whole huge pages, then releasing those.
 *
 * - Locking: one mutex guards everything.  Waiters sleep on one of
 *   FILL_QUEUES condition variables, chosen by the entry's address,
 *   and a publish broadcasts on that one only: a spurious wake-up of a
 *   waiter for another block is rare and cheap, while one condition
 *   variable for all woke every waiter on every publish (a futex storm
 *   with read-ahead and many client threads); a per-entry condvar would
 *   cost an init/destroy on every miss and 48 bytes per cached block.
 *
 * - Failure: publish (ok = 0) marks the entry FAILED and unlinks it
 *   from the table at once, so a later acquire claims a fresh entry.
 *   Waiters pin the entry while they sleep, so the FAILED entry stays
 *   alive until the last of them has seen it; the last unpin frees it.
 *
 * Counters (per image, and summed in the cache): hits = requests served
 * from an already valid entry without sleeping; misses = claims (the
 * caller fills); waits = block_cache_wait calls that had to sleep for
 * another thread's fill; evictions = valid entries dropped to respect
 * max_bytes (not those dropped by unregistering); fill_failures =
 * publish (ok=0).  Background fills (block_cache_acquire_prefetch)
 * count apart: prefetched = their claims published ok; prefetch_used =
 * those a demand lookup then found (a hit, or a wait on one still in
 * flight: prefetch_waits); prefetch_wasted = those dropped before any
 * demand lookup found them.
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
#include <unistd.h>

#include "blockcache.h"
#include "pagemem.h"

enum entry_state {
  ENTRY_FILLING,                /* claimed, filler holds a pin */
  ENTRY_VALID,                  /* data readable */
  ENTRY_FAILED,                 /* unlinked from table, waiters drain */
};

struct entry {
  uint64_t n;                   /* block number */
  struct block_cache_image *img; /* owner (its block_size is ours) */
  struct entry *hash_next;      /* chain in the bucket */
  struct entry *lru_prev;       /* towards most recently used */
  struct entry *lru_next;       /* towards least recently used */
  unsigned refs;                /* pins: filler, readers, waiters */
  enum entry_state state;
  bool background;              /* claimed by a background fill */
  bool prefetch;                /* ... and not yet used by a client */
  bool used_once;               /* a prefetched block, just used for the
                                   first time: evicted first once
                                   unpinned (see top) */
  unsigned char *data;          /* img->block_size bytes */
};

/* Transparent huge page size the arenas are aligned to. */
#define HUGE_PAGE (2 * 1024 * 1024)

/* Idle overflow entries kept for reuse: at most this many bytes, and
 * no more than max_bytes. */
#define SPARE_MAX_BYTES (16 * 1024 * 1024)

/* Resident slack: free arena slots stay resident until resident
 * memory exceeds max_bytes by min (max_bytes / 8, SLACK_MAX_BYTES). */
#define SLACK_MAX_BYTES (16 * 1024 * 1024)

#define MIN_BUCKET_BITS 4
#define MAX_BUCKET_BITS 40

struct counters {
  uint64_t hits, misses, waits, evictions, fill_failures;
  uint64_t prefetched, prefetch_used, prefetch_wasted, prefetch_waits;
};

/* Count one event in the image's counters and the cache's totals. */
#define COUNT(img, field) \
  do { (img)->count.field++; (img)->cache->count.field++; } while (0)

/* The memory of one block size: an arena of max_bytes of address space
 * where entry headers hdrs[i] own data arena + i * bs.  Slots [0, used)
 * have been handed out at least once; free ones are chained through
 * hash_next from free_slots (resident) or released_slots (given back
 * to the kernel).  resident counts the slots handed out and not
 * released. */
struct pool {
  struct pool *next;
  uint32_t bs;
  unsigned images;              /* registered images of this size */
  unsigned char *arena;
  size_t arena_len;             /* bytes mapped, 0 = no arena */
  struct entry *hdrs;
  size_t slots, used, busy, resident;
  struct entry *free_slots, *released_slots;
  bool small_pages;             /* arena advised MADV_NOHUGEPAGE */
};

struct block_cache_image {
  struct block_cache *cache;
  struct pool *pool;            /* of block_size */
  uint64_t id;
  uint32_t block_size;
  struct block_cache_image *prev, *next;  /* registered images */

  struct entry **buckets;       /* 1 << bucket_bits chains */
  unsigned bucket_bits;
  uint64_t nr_entries;          /* entries in the table (any state) */
  uint64_t nr_valid;            /* entries in the table and valid */

  /* Idle overflow entries of this size, chained through hash_next:
   * while reads keep more pinned than max_bytes, blocks come and go at
   * the rate of decoding, and a fresh mapping for each would cost a
   * page fault per 4 KiB. */
  struct entry *spare;

  struct counters count;
};

/* Readers waiting for an entry being filled sleep on one of these
 * condition variables, chosen by the entry's address (filled_cv): a
 * publish wakes the waiters of its queue only, not every waiting
 * reader (a parallel client keeps hundreds of reads waiting, and
 * waking them all on every block made the futex storm that one core
 * spent its time in). */
#define FILL_QUEUES 64

struct block_cache {
  pthread_mutex_t lock;
  pthread_cond_t filled[FILL_QUEUES]; /* broadcast on a publish */
  uint64_t max_bytes;

  struct block_cache_image *images;  /* registered, newest first */
  uint64_t last_id;
  uint64_t held_bytes;          /* bytes of entries in tables */
  uint64_t valid_bytes;         /* ... that are valid */
  uint64_t unread_prefetch;     /* bytes of entries with prefetch set */
  uint64_t nr_entries;          /* entries in tables */

  struct entry *lru_head;       /* most recently used */
  struct entry *lru_tail;       /* least recently used */

  struct pool *pools;           /* one per block size registered */
  uint64_t resident_bytes;      /* resident slots of all pools + mapped */
  uint64_t slack;               /* trim only beyond max_bytes + slack */

  uint64_t mapped_bytes;        /* data of overflow entries (spares too) */
  uint64_t spare_bytes, spare_max;

  struct counters count;
};

/* ---- the arenas ---------------------------------------------------- */

/* Reserve the arena of pool p (address space for max_bytes) and its
 * slot headers.  Without them (mmap refused, an empty budget, a block
 * larger than the budget) every entry of this size is an overflow
 * entry: slower to fill, same behaviour. */
static void
pool_map (struct block_cache *c, struct pool *p)
{
  size_t len, slots = c->max_bytes / p->bs;
  unsigned char *m;
  uintptr_t start, end;

  if (slots == 0 || c->max_bytes > SIZE_MAX / 2)
    return;
  /* Map one huge page more than needed, then trim to an aligned
   * range: huge pages only back aligned 2 MiB extents. */
  len = (c->max_bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
  m = mmap (NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    return;
  start = ((uintptr_t) m + HUGE_PAGE - 1) & ~(uintptr_t) (HUGE_PAGE - 1);
  end = start + len;
  if (start > (uintptr_t) m)
    munmap (m, start - (uintptr_t) m);
  if ((uintptr_t) m + len + HUGE_PAGE > end)
    munmap ((void *) end, (uintptr_t) m + len + HUGE_PAGE - end);
  /* Headers: calloc of a large array maps zero pages, touched only
   * as slots are used. */
  if ((p->hdrs = calloc (slots, sizeof *p->hdrs)) == NULL) {
    munmap ((void *) start, len);
    return;
  }
#ifdef MADV_HUGEPAGE
  madvise ((void *) start, len, MADV_HUGEPAGE);  /* advice: may fail */
#endif
  p->arena = (unsigned char *) start;
  p->arena_len = len;
  p->slots = slots;
}

/* The pool of block size bs, created if needed, with one more image
 * counted; NULL on ENOMEM. */
static struct pool *
pool_get (struct block_cache *c, uint32_t bs)
{
  struct pool *p;

  for (p = c->pools; p != NULL; p = p->next)
    if (p->bs == bs)
      break;
  if (p == NULL) {
    if ((p = calloc (1, sizeof *p)) == NULL)
      return NULL;
    p->bs = bs;
    pool_map (c, p);
    p->next = c->pools;
    c->pools = p;
  }
  p->images++;
  return p;
}

/* One image less of pool p; the last one unmaps it (it is empty then:
 * entries belong to images, and an image unregisters with none
 * pinned). */
static void
pool_put (struct block_cache *c, struct pool *p)
{
  struct pool **pp;

  if (--p->images > 0)
    return;
  assert (p->busy == 0);
  c->resident_bytes -= (uint64_t) p->resident * p->bs;
  for (pp = &c->pools; *pp != p; pp = &(*pp)->next)
    ;
  *pp = p->next;
  if (p->arena_len)
    munmap (p->arena, p->arena_len);
  free (p->hdrs);
  free (p);
}

static bool
in_arena (const struct pool *p, const struct entry *e)
{
  return p->hdrs != NULL && e >= p->hdrs && e < p->hdrs + p->slots;
}

/* Sort a list of slots (chained through hash_next) by address, so
 * that adjacent ones can be released in one call. */
static struct entry *
sort_slots (struct entry *list)
{
  struct entry *half[2] = { NULL, NULL }, *out = NULL, **tail = &out;

  if (list == NULL || list->hash_next == NULL)
    return list;
  for (int i = 0; list != NULL; i ^= 1) {
    struct entry *e = list;

    list = e->hash_next;
    e->hash_next = half[i];
    half[i] = e;
  }
  half[0] = sort_slots (half[0]);
  half[1] = sort_slots (half[1]);
  while (half[0] != NULL && half[1] != NULL) {
    int i = half[0]->data > half[1]->data;

    *tail = half[i];
    tail = &half[i]->hash_next;
    half[i] = half[i]->hash_next;
  }
  *tail = half[0] != NULL ? half[0] : half[1];
  return out;
}

/* Give free resident slots of pool p back to the kernel (their whole
 * pages), adjacent slots in one call, until resident memory is within
 * max_bytes or p has none left. */
static void
pool_release (struct block_cache *c, struct pool *p)
{
  uintptr_t page = (uintptr_t) sysconf (_SC_PAGESIZE);
  uintptr_t run_start = 0, run_end = 0;
  struct entry *batch = NULL, *e;

  while ((e = p->free_slots) != NULL && c->resident_bytes > c->max_bytes) {
    p->free_slots = e->hash_next;
    e->hash_next = batch;
    batch = e;
    p->resident--;
    c->resident_bytes -= p->bs;
  }
  for (batch = sort_slots (batch); (e = batch) != NULL; ) {
    uintptr_t start = ((uintptr_t) e->data + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t) e->data + p->bs) & ~(page - 1);

    batch = e->hash_next;
    e->hash_next = p->released_slots;
    p->released_slots = e;
    if (end <= start)
      continue;
#ifdef MADV_NOHUGEPAGE
    if (!p->small_pages) {
      /* Advice: if refused, huge pages may come back (see top). */
      madvise (p->arena, p->arena_len, MADV_NOHUGEPAGE);
      p->small_pages = true;
    }
#endif
    if (start > run_end + page - 1 || run_end == 0) {
      if (run_end > run_start)
        madvise ((void *) run_start, run_end - run_start, MADV_DONTNEED);
      run_start = start;
    }
    run_end = end;
  }
  if (run_end > run_start)
    madvise ((void *) run_start, run_end - run_start, MADV_DONTNEED);
}

/* Resident memory (touched arena slots of every size, overflow
 * mappings) has grown: once it exceeds max_bytes + slack, give free
 * slots back until it is within max_bytes again.  With one block size
 * there is nothing to give back (free slots exist only below the
 * bound); with several, this runs once per slack bytes of shift in the
 * sizes' shares, not once per block. */
static void
trim_resident (struct block_cache *c)
{
  if (c->resident_bytes <= c->max_bytes + c->slack)
    return;
  for (struct pool *p = c->pools; p != NULL; p = p->next)
    pool_release (c, p);
}

/* An arena slot of pool p, or NULL if none is free. */
static struct entry *
arena_alloc (struct block_cache *c, struct pool *p)
{
  struct entry *e;

  if ((e = p->free_slots) != NULL)
    p->free_slots = e->hash_next;
  else {
    if ((e = p->released_slots) != NULL)
      p->released_slots = e->hash_next;
    else if (p->used < p->slots) {
      e = &p->hdrs[p->used];
      e->data = p->arena + p->used * p->bs;
      p->used++;
    }
    else
      return NULL;
    p->resident++;
    c->resident_bytes += p->bs;
    p->busy++;
    trim_resident (c);
    return e;
  }
  p->busy++;
  return e;
}

/* ---- entry memory -------------------------------------------------- */

/* Bytes of an entry beyond the arena: header and data in one mapping
 * of its own, returned to the system when the entry is freed.  Through
 * malloc, these would pile up in glibc's per-thread arenas, or (blocks
 * of 128 KiB and more) raise its mmap threshold when freed, moving
 * every smaller allocation of the process into those arenas (see
 * pagemem.h). */
static size_t
overflow_len (uint32_t block_size)
{
  return sizeof (struct entry) + block_size;
}

/* A new entry with a data buffer of img's block size (e->img not set
 * yet), or NULL on ENOMEM. */
static struct entry *
entry_alloc (struct block_cache *c, struct block_cache_image *img)
{
  struct entry *e;

  if ((e = arena_alloc (c, img->pool)) != NULL)
    return e;
  if ((e = img->spare) != NULL) {
    img->spare = e->hash_next;
    c->spare_bytes -= img->block_size;
    return e;
  }
  e = page_alloc (overflow_len (img->block_size));
  if (e == NULL)
    return NULL;
  e->data = (unsigned char *) (e + 1);
  c->mapped_bytes += img->block_size;
  c->resident_bytes += img->block_size;
  trim_resident (c);
  return e;
}

/* Give back the memory of entry e (out of table and list), to its
 * arena, its image's spares, or the system. */
static void prefetch_done (struct block_cache *c, struct entry *e);

static void
entry_free (struct block_cache *c, struct entry *e)
{
  struct block_cache_image *img = e->img;
  struct pool *p = img->pool;

  prefetch_done (c, e);

  if (in_arena (p, e)) {
    e->hash_next = p->free_slots;
    p->free_slots = e;
    p->busy--;
  }
  else if (c->spare_bytes + img->block_size <= c->spare_max) {
    e->hash_next = img->spare;
    img->spare = e;
    c->spare_bytes += img->block_size;
  }
  else {
    c->mapped_bytes -= img->block_size;
    c->resident_bytes -= img->block_size;
    page_free (e, overflow_len (img->block_size));
  }
}

/* An evicted entry e, of img's block size, to reuse for a block of
 * img: an overflow one is traded for a free arena slot if there is
 * one, so that memory returns to the arena once a burst of pins is
 * over. */
static struct entry *
entry_recycle (struct block_cache *c, struct entry *e,
               struct block_cache_image *img)
{
  struct pool *p = img->pool;

  if (in_arena (p, e) ||
      (p->free_slots == NULL && p->released_slots == NULL &&
       p->used == p->slots))
    return e;
  entry_free (c, e);
  return entry_alloc (c, img);
}

static void
free_spares (struct block_cache *c, struct block_cache_image *img)
{
  while (img->spare != NULL) {
    struct entry *e = img->spare;

    img->spare = e->hash_next;
    c->spare_bytes -= img->block_size;
    c->mapped_bytes -= img->block_size;
    c->resident_bytes -= img->block_size;
    page_free (e, overflow_len (img->block_size));
  }
}

/* ---- hash table (one per image) ------------------------------------ */

static size_t
bucket_of (const struct block_cache_image *img, uint64_t n)
{
  return (size_t) ((n * UINT64_C (0x9E3779B97F4A7C15)) >>
                   (64 - img->bucket_bits));
}

static struct entry *
table_find (const struct block_cache_image *img, uint64_t n)
{
  struct entry *e;

  for (e = img->buckets[bucket_of (img, n)]; e != NULL; e = e->hash_next)
    if (e->n == n)
      return e;
  return NULL;
}

/* Double the bucket array; on allocation failure keep the old one. */
static void
table_grow (struct block_cache_image *img)
{
  size_t old_count = (size_t) 1 << img->bucket_bits, i;
  struct entry **old = img->buckets, **fresh;

  if (img->bucket_bits >= MAX_BUCKET_BITS ||
      (fresh = calloc (old_count * 2, sizeof *fresh)) == NULL)
    return;
  img->buckets = fresh;
  img->bucket_bits++;
  for (i = 0; i < old_count; i++) {
    struct entry *e = old[i], *next;

    for (; e != NULL; e = next) {
      size_t b = bucket_of (img, e->n);

      next = e->hash_next;
      e->hash_next = fresh[b];
      fresh[b] = e;
    }
  }
  free (old);
}

static void
table_insert (struct block_cache_image *img, struct entry *e)
{
  size_t b;

  if (img->nr_entries >= ((uint64_t) 1 << img->bucket_bits))
    table_grow (img);
  b = bucket_of (img, e->n);
  e->hash_next = img->buckets[b];
  img->buckets[b] = e;
  img->nr_entries++;
  img->cache->nr_entries++;
  img->cache->held_bytes += img->block_size;
}

static void
table_remove (struct block_cache_image *img, struct entry *e)
{
  struct entry **p = &img->buckets[bucket_of (img, e->n)];

  while (*p != e) {
    assert (*p != NULL);
    p = &(*p)->hash_next;
  }
  *p = e->hash_next;
  e->hash_next = NULL;
  img->nr_entries--;
  img->cache->nr_entries--;
  img->cache->held_bytes -= img->block_size;
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
}

static void
lru_push_recent (struct block_cache *c, struct entry *e)
{
  e->lru_prev = NULL;
  e->lru_next = c->lru_head;
  if (c->lru_head) c->lru_head->lru_prev = e;
  else c->lru_tail = e;
  c->lru_head = e;
}

static void
lru_push_oldest (struct block_cache *c, struct entry *e)
{
  e->lru_next = NULL;
  e->lru_prev = c->lru_tail;
  if (c->lru_tail) c->lru_tail->lru_next = e;
  else c->lru_head = e;
  c->lru_tail = e;
}

/* Take a valid entry out of its image's table (and of the counts of
 * valid data). */
static void
drop_valid (struct block_cache_image *img, struct entry *e)
{
  table_remove (img, e);
  img->nr_valid--;
  img->cache->valid_bytes -= img->block_size;
}

/* Entry e is no longer a prefetched block that no client has read
 * (read, dropped, or failed). */
static void
prefetch_done (struct block_cache *c, struct entry *e)
{
  if (e->prefetch) {
    e->prefetch = false;
    c->unread_prefetch -= e->img->block_size;
  }
}

/* A client reads e, a prefetched block, for the first time. */
static void
prefetch_used (struct block_cache *c, struct entry *e)
{
  prefetch_done (c, e);
  e->used_once = true;
}

/* Drop the least recently used entry from list and table, and hand
 * its allocation to the caller (to reuse or free).  List not empty. */
static struct entry *
evict_oldest (struct block_cache *c)
{
  struct entry *e = c->lru_tail;

  lru_unlink (c, e);
  drop_valid (e->img, e);
  COUNT (e->img, evictions);
  if (e->prefetch)
    COUNT (e->img, prefetch_wasted);
  prefetch_done (c, e);
  return e;
}

/* Evict unpinned entries, oldest first, while everything held exceeds
 * the bound: pinned and in-flight blocks count too, so that memory is
 * max_bytes in all unless the pins alone exceed it. */
static void
enforce_bound (struct block_cache *c)
{
  while (c->lru_tail != NULL && c->held_bytes > c->max_bytes)
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
    if (e->used_once)
      lru_push_oldest (c, e);
    else
      lru_push_recent (c, e);
    e->used_once = false;
    enforce_bound (c);
  }
  else {
    assert (e->state == ENTRY_FAILED);
    entry_free (c, e);
  }
}

/* Memory for a new block of img: evict the oldest unpinned entries
 * while adding this block would push what is held over the bound, and
 * reuse the first evicted one of the same size.  NULL on ENOMEM. */
static struct entry *
make_room (struct block_cache *c, struct block_cache_image *img)
{
  struct entry *reuse = NULL;

  while (c->lru_tail != NULL &&
         c->held_bytes + img->block_size > c->max_bytes) {
    struct entry *e = evict_oldest (c);

    if (reuse == NULL && e->img->block_size == img->block_size)
      reuse = e;
    else
      entry_free (c, e);
  }
  if (reuse != NULL)
    return entry_recycle (c, reuse, img);
  return entry_alloc (c, img);
}

/* Create an in-flight entry for block n of img, pinned by the
 * caller. */
static int
claim (struct block_cache_image *img, uint64_t n, bool prefetch,
       struct block_ref *ref, struct cloop_err *err)
{
  struct block_cache *c = img->cache;
  struct entry *e = make_room (c, img);

  if (e == NULL)
    return cloop_err_set (err, ENOMEM,
                          "block cache: cannot allocate %" PRIu32
                          "-byte block %" PRIu64, img->block_size, n);
  e->n = n;
  e->img = img;
  e->lru_prev = e->lru_next = NULL;
  e->refs = 1;
  e->state = ENTRY_FILLING;
  e->background = e->prefetch = prefetch;
  e->used_once = false;
  if (prefetch)
    c->unread_prefetch += img->block_size;
  table_insert (img, e);
  if (!prefetch)
    COUNT (img, misses);
  fill_ref (ref, e);
  return 0;
}

/* ---- public API ---------------------------------------------------- */

struct block_cache *
block_cache_new (uint64_t max_bytes, struct cloop_err *err)
{
  struct block_cache *c = calloc (1, sizeof *c);

  if (c == NULL) {
    cloop_err_set (err, ENOMEM, "block cache: out of memory");
    return NULL;
  }
  c->max_bytes = max_bytes;
  c->spare_max = max_bytes < SPARE_MAX_BYTES ? max_bytes : SPARE_MAX_BYTES;
  c->slack = max_bytes / 8 < SLACK_MAX_BYTES ? max_bytes / 8 : SLACK_MAX_BYTES;
  pthread_mutex_init (&c->lock, NULL);
  {
    /* Waits have deadlines on the monotonic clock. */
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    for (size_t i = 0; i < FILL_QUEUES; i++)
      pthread_cond_init (&c->filled[i], &attr);
    pthread_condattr_destroy (&attr);
  }
  return c;
}

void
block_cache_free (struct block_cache *c)
{
  if (c == NULL)
    return;
  while (c->images != NULL)
    block_cache_unregister (c->images);
  assert (c->pools == NULL);
  for (size_t i = 0; i < FILL_QUEUES; i++)
    pthread_cond_destroy (&c->filled[i]);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

struct block_cache_image *
block_cache_register (struct block_cache *c, uint32_t block_size,
                      struct cloop_err *err)
{
  struct block_cache_image *img;

  if (block_size == 0
#if SIZE_MAX <= UINT32_MAX
      || block_size > SIZE_MAX - sizeof (struct entry)
#endif
      ) {
    cloop_err_set (err, EINVAL, "block cache: bad block size %" PRIu32,
                   block_size);
    return NULL;
  }
  img = calloc (1, sizeof *img);
  if (img == NULL ||
      (img->buckets = calloc ((size_t) 1 << MIN_BUCKET_BITS,
                              sizeof *img->buckets)) == NULL) {
    free (img);
    cloop_err_set (err, ENOMEM, "block cache: out of memory");
    return NULL;
  }
  img->cache = c;
  img->block_size = block_size;
  img->bucket_bits = MIN_BUCKET_BITS;
  pthread_mutex_lock (&c->lock);
  if ((img->pool = pool_get (c, block_size)) == NULL) {
    pthread_mutex_unlock (&c->lock);
    free (img->buckets);
    free (img);
    cloop_err_set (err, ENOMEM, "block cache: out of memory");
    return NULL;
  }
  img->id = ++c->last_id;
  img->next = c->images;
  if (c->images)
    c->images->prev = img;
  c->images = img;
  pthread_mutex_unlock (&c->lock);
  return img;
}

void
block_cache_unregister (struct block_cache_image *img)
{
  struct block_cache *c;

  if (img == NULL)
    return;
  c = img->cache;
  pthread_mutex_lock (&c->lock);
  for (size_t i = 0; i < ((size_t) 1 << img->bucket_bits); i++) {
    struct entry *e;

    while ((e = img->buckets[i]) != NULL) {
      assert (e->refs == 0 && e->state == ENTRY_VALID);
      if (e->prefetch)
        COUNT (img, prefetch_wasted);
      prefetch_done (c, e);
      lru_unlink (c, e);
      drop_valid (img, e);
      entry_free (c, e);
    }
  }
  free_spares (c, img);
  pool_put (c, img->pool);
  if (img->prev) img->prev->next = img->next;
  else c->images = img->next;
  if (img->next) img->next->prev = img->prev;
  pthread_mutex_unlock (&c->lock);
  free (img->buckets);
  free (img);
}

uint64_t
block_cache_image_id (const struct block_cache_image *img)
{
  return img->id;
}

/* With the lock held: claim block n if absent (CLAIMED; *r = -1 on
 * ENOMEM), pin it if valid (HIT), else BUSY.  Returns the entry found,
 * or NULL if none was.  prefetch: a background lookup (not counted as
 * a hit or miss, and not a use of a prefetched entry). */
static struct entry *
lookup_locked (struct block_cache_image *img, uint64_t n, bool prefetch,
               struct block_ref *ref, enum block_cache_status *status,
               int *r, struct cloop_err *err)
{
  struct entry *e = table_find (img, n);

  *r = 0;
  if (e == NULL) {
    *r = claim (img, n, prefetch, ref, err);
    *status = BLOCK_CLAIMED;
  }
  else if (e->state == ENTRY_VALID) {
    pin_valid (img->cache, e);
    if (!prefetch) {
      COUNT (img, hits);
      if (e->prefetch) {
        prefetch_used (img->cache, e);
        COUNT (img, prefetch_used);
      }
    }
    fill_ref (ref, e);
    *status = BLOCK_HIT;
  }
  else
    *status = BLOCK_BUSY;
  return e;
}

int
block_cache_acquire (struct block_cache_image *img, uint64_t n,
                     struct block_ref *ref, enum block_cache_status *status,
                     struct cloop_err *err)
{
  struct block_cache *c = img->cache;
  int r;

  pthread_mutex_lock (&c->lock);
  lookup_locked (img, n, false, ref, status, &r, err);
  pthread_mutex_unlock (&c->lock);
  return r;
}

int
block_cache_acquire_prefetch (struct block_cache_image *img, uint64_t n,
                              struct block_ref *ref,
                              enum block_cache_status *status,
                              struct cloop_err *err)
{
  struct block_cache *c = img->cache;
  int r;

  pthread_mutex_lock (&c->lock);
  lookup_locked (img, n, true, ref, status, &r, err);
  pthread_mutex_unlock (&c->lock);
  return r;
}

bool
block_cache_contains (struct block_cache_image *img, uint64_t n)
{
  struct block_cache *c = img->cache;
  bool found;

  pthread_mutex_lock (&c->lock);
  found = table_find (img, n) != NULL;
  pthread_mutex_unlock (&c->lock);
  return found;
}

/* The condition variable the waiters for entry e sleep on. */
static pthread_cond_t *
filled_cv (struct block_cache *c, const struct entry *e)
{
  uint64_t h = (uint64_t) (uintptr_t) e * UINT64_C (0x9E3779B97F4A7C15);

  return &c->filled[h >> 58];   /* the top 6 bits: FILL_QUEUES = 64 */
}

void
block_cache_publish (struct block_cache_image *img, struct block_ref *ref,
                     int ok)
{
  struct block_cache *c = img->cache;
  struct entry *e = ref->entry;

  pthread_mutex_lock (&c->lock);
  assert (e->state == ENTRY_FILLING && e->img == img);
  if (ok) {
    e->state = ENTRY_VALID;
    img->nr_valid++;
    c->valid_bytes += img->block_size;
    if (e->background)
      COUNT (img, prefetched);
  }
  else {
    e->state = ENTRY_FAILED;
    table_remove (img, e);
    prefetch_done (c, e);
    COUNT (img, fill_failures);
    unpin (c, e);
  }
  pthread_cond_broadcast (filled_cv (c, e));
  pthread_mutex_unlock (&c->lock);
  if (!ok) {
    ref->entry = NULL;
    ref->data = NULL;
  }
}

int
block_cache_wait (struct block_cache_image *img, uint64_t n,
                  struct block_ref *ref, enum block_cache_status *status,
                  uint64_t deadline_ns, struct cloop_err *err)
{
  struct block_cache *c = img->cache;
  struct timespec until = {
    .tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000,
  };
  struct entry *e;
  int r = 0;
  bool again;

  pthread_mutex_lock (&c->lock);
  do {
    again = false;
    e = lookup_locked (img, n, false, ref, status, &r, err);
    if (*status != BLOCK_BUSY)
      break;
    /* In flight: pin it so that it outlives a failure, then sleep. */
    COUNT (img, waits);
    if (e->prefetch) {          /* a prefetch fills it: it is used now */
      prefetch_used (c, e);
      COUNT (img, prefetch_waits);
      COUNT (img, prefetch_used);
    }
    e->refs++;
    bool timed_out = false;
    while (e->state == ENTRY_FILLING && !timed_out) {
      if (deadline_ns == 0)
        pthread_cond_wait (filled_cv (c, e), &c->lock);
      else
        timed_out = pthread_cond_timedwait (filled_cv (c, e), &c->lock,
                                            &until) == ETIMEDOUT;
    }
    if (e->state == ENTRY_VALID) {
      fill_ref (ref, e);
      *status = BLOCK_HIT;
    }
    else {
      /* Decide before unpinning: the last unpin of a failed entry
       * frees it.  A failed background fill (fetched later, at a
       * lower priority, with its own deadline) says nothing about
       * this read: look again, to claim the block or wait for its
       * next filler. */
      *status = e->state == ENTRY_FILLING ? BLOCK_TIMEDOUT : BLOCK_FAILED;
      again = *status == BLOCK_FAILED && e->background;
      unpin (c, e);
    }
  } while (again);
  pthread_mutex_unlock (&c->lock);
  return r;
}

void
block_cache_release (struct block_cache_image *img, struct block_ref *ref)
{
  struct block_cache *c = img->cache;

  pthread_mutex_lock (&c->lock);
  unpin (c, ref->entry);
  pthread_mutex_unlock (&c->lock);
  ref->entry = NULL;
  ref->data = NULL;
}

static void
copy_counters (struct block_cache_stats *s, const struct counters *k)
{
  s->hits = k->hits;
  s->misses = k->misses;
  s->waits = k->waits;
  s->evictions = k->evictions;
  s->fill_failures = k->fill_failures;
  s->prefetched = k->prefetched;
  s->prefetch_used = k->prefetch_used;
  s->prefetch_wasted = k->prefetch_wasted;
  s->prefetch_waits = k->prefetch_waits;
}

void
block_cache_get_stats (struct block_cache_image *img,
                       struct block_cache_stats *s)
{
  struct block_cache *c = img->cache;

  pthread_mutex_lock (&c->lock);
  copy_counters (s, &img->count);
  s->bytes_cached = img->nr_valid * img->block_size;
  s->entries = img->nr_entries;
  pthread_mutex_unlock (&c->lock);
}

void
block_cache_get_totals (struct block_cache *c, struct block_cache_stats *s)
{
  pthread_mutex_lock (&c->lock);
  copy_counters (s, &c->count);
  s->bytes_cached = c->valid_bytes;
  s->entries = c->nr_entries;
  pthread_mutex_unlock (&c->lock);
}

uint64_t
block_cache_unread_prefetch (struct block_cache_image *img,
                             uint64_t *max_bytes)
{
  struct block_cache *c = img->cache;
  uint64_t n;

  pthread_mutex_lock (&c->lock);
  n = c->unread_prefetch;
  pthread_mutex_unlock (&c->lock);
  if (max_bytes)
    *max_bytes = c->max_bytes;
  return n;
}
