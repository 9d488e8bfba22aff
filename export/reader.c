/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the read pipeline of one exported image (see reader.h). */
#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/evp.h>

#include "decode.h"
#include "pagemem.h"
#include "reader.h"
#include "store.h"

/* Requests up to this many blocks, read-ahead window included, keep
 * their bookkeeping on the stack (40 bytes a block): with 16, every
 * read of a remote image with 64 KiB blocks and the default 2 MiB
 * read-ahead (32 blocks) malloc'd its slots, cache hits included. */
#define STACK_BLOCKS 64

/* A stack of pointers: the pools of idle decoders and scratch buffers,
 * most recently returned on top (callers hold the reader's pool_lock). */
struct ptr_stack {
  void **items;
  size_t len, cap;
};

/* Push p; -1 if the stack cannot grow (p not pushed). */
static int
ptr_stack_push (struct ptr_stack *st, void *p)
{
  if (st->len == st->cap) {
    size_t cap = st->cap ? st->cap * 2 : 8;
    void **items = realloc (st->items, cap * sizeof *items);
    if (items == NULL)
      return -1;
    st->items = items;
    st->cap = cap;
  }
  st->items[st->len++] = p;
  return 0;
}

/* Pop the top, or NULL if empty. */
static void *
ptr_stack_pop (struct ptr_stack *st)
{
  return st->len > 0 ? st->items[--st->len] : NULL;
}

struct reader {
  struct source *src;
  struct block_map *map;
  struct block_cache_image *cache;   /* our image in cfg.memory_cache */
  struct reader_config cfg;

  /* Idle scratch buffers for compressed bytes, most recently used
   * last.  Reused from request to request (a fresh allocation
   * page-faults on every fill), and shared rather than per thread, so
   * that their number follows the reads in progress, not nbdkit's
   * thread count, and the one taken next is the one still in the CPU
   * cache.  Guarded by pool_lock. */
  struct ptr_stack spare;

  /* Read-ahead (cfg.readahead_blocks > 0): where a sequential reader
   * would read next, and the current window in blocks. */
  uint32_t ra_max;              /* cfg.readahead in blocks */

  /* Pool of idle decoders (decoders are not thread-safe, and creating
   * one per block would cost an allocation on the hot path). */
  pthread_mutex_t pool_lock;
  struct ptr_stack pool;
};

/* What one request knows about each block it touches. */
struct slot {
  uint64_t block;
  enum block_cache_status status;
  struct block_ref ref;
  bool pinned;
};

/* A scratch buffer's memory comes from page_alloc, not malloc: an
 * oversized one is freed after its request, and freeing a large
 * malloc'd chunk would move glibc's mmap threshold (see pagemem.h). */
struct scratch {
  unsigned char *buf;
  size_t cap;
};

static void
free_scratch (struct scratch *sc)
{
  if (sc) {
    page_free (sc->buf, sc->cap);
    free (sc);
  }
}

/* Scratch buffers grow to this; larger requests allocate for
 * themselves, so idle buffers never hold much. */
#define SCRATCH_MAX (1024 * 1024)

/* A scratch buffer of at least len bytes: the most recently returned
 * spare, grown if needed (its contents are not kept), or a new one.
 * NULL on ENOMEM.  Give it back with put_scratch. */
static struct scratch *
get_scratch (struct reader *r, size_t len)
{
  struct scratch *sc = NULL;

  if (len <= SCRATCH_MAX) {
    pthread_mutex_lock (&r->pool_lock);
    sc = ptr_stack_pop (&r->spare);
    pthread_mutex_unlock (&r->pool_lock);
  }
  if (sc == NULL && (sc = calloc (1, sizeof *sc)) == NULL)
    return NULL;
  if (sc->cap < len) {
    size_t cap = len < 256 * 1024 ? 256 * 1024 : len;
    page_free (sc->buf, sc->cap);
    sc->buf = page_alloc (cap);
    sc->cap = sc->buf ? cap : 0;
    if (sc->buf == NULL) {
      free_scratch (sc);
      return NULL;
    }
  }
  return sc;
}

/* Return a scratch buffer to the spares (freed if it is oversized or
 * the list cannot grow). */
static void
put_scratch (struct reader *r, struct scratch *sc)
{
  int kept = -1;

  if (sc->cap <= SCRATCH_MAX) {
    pthread_mutex_lock (&r->pool_lock);
    kept = ptr_stack_push (&r->spare, sc);
    pthread_mutex_unlock (&r->pool_lock);
  }
  if (kept == -1)
    free_scratch (sc);
}

struct reader *
reader_new (struct source *src, struct block_map *map,
            const struct reader_config *cfg, struct cloop_err *err)
{
  struct reader *r = calloc (1, sizeof *r);

  if (r == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  if (cfg->memory_cache == NULL) {
    free (r);
    cloop_err_set (err, EINVAL, "reader: no memory cache");
    return NULL;
  }
  r->cache = block_cache_register (cfg->memory_cache, map->block_size, err);
  if (r->cache == NULL) {
    free (r);
    return NULL;
  }
  pthread_mutex_init (&r->pool_lock, NULL);
  r->ra_max = cfg->readahead / map->block_size;
  if (r->ra_max > 1024)
    r->ra_max = 1024;
  r->src = src;
  r->map = map;
  r->cfg = *cfg;
  return r;
}

void
reader_free (struct reader *r)
{
  void *p;

  if (r == NULL)
    return;
  while ((p = ptr_stack_pop (&r->pool)) != NULL)
    decoder_free (p);
  free (r->pool.items);
  while ((p = ptr_stack_pop (&r->spare)) != NULL)
    free_scratch (p);
  free (r->spare.items);
  pthread_mutex_destroy (&r->pool_lock);
  block_cache_unregister (r->cache);
  source_close (r->src);
  block_map_free (r->map);
  free (r);
}

const struct block_map *
reader_map (const struct reader *r)
{
  return r->map;
}

struct source *
reader_source (const struct reader *r)
{
  return r->src;
}

struct disk_cache *
reader_disk_cache (const struct reader *r)
{
  return r->cfg.disk_cache;
}

void
reader_get_cache_stats (struct reader *r, struct block_cache_stats *st)
{
  block_cache_get_stats (r->cache, st);
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The deadline of a read starting now (0 = none). */
static uint64_t
read_deadline (const struct reader *r)
{
  return r->cfg.timeout ? now_ns () + (uint64_t) r->cfg.timeout * 1000000000
                        : 0;
}

static bool
past (uint64_t deadline)
{
  return deadline != 0 && now_ns () >= deadline;
}

/* Take a decoder from the pool, or make one.  NULL on ENOMEM. */
static struct decoder *
get_decoder (struct reader *r)
{
  struct decoder *dec;

  pthread_mutex_lock (&r->pool_lock);
  dec = ptr_stack_pop (&r->pool);
  pthread_mutex_unlock (&r->pool_lock);
  return dec ? dec : decoder_new (r->cfg.force_zlib);
}

/* Return a decoder to the pool (freed if the pool cannot grow). */
static void
put_decoder (struct reader *r, struct decoder *dec)
{
  int kept;

  pthread_mutex_lock (&r->pool_lock);
  kept = ptr_stack_push (&r->pool, dec);
  pthread_mutex_unlock (&r->pool_lock);
  if (kept == -1)
    decoder_free (dec);
}

/* Decode block b from in (its entry's length bytes) into out
 * (block_size bytes; a short last block is zero-padded beyond its
 * decoded length), by the map's rules (decoder_decode_block). */
static int
decode_block (struct reader *r, uint64_t b, const void *in,
              unsigned char *out, struct cloop_err *err)
{
  const struct block_entry *e = &r->map->entries[b];
  size_t got = 0;
  struct decoder *dec;
  int ret;

  dec = get_decoder (r);
  if (dec == NULL)
    return cloop_err_set (err, ENOMEM, "block %" PRIu64 ": out of memory", b);
  ret = decoder_decode_block (dec, r->map, b, in, out, &got, err);
  put_decoder (r, dec);
  if (ret == -1) {
    cloop_err_prefix (err, "block %" PRIu64 " (%s, %" PRIu32
                      " bytes at offset %" PRIu64 ")",
                      b, codec_name (e->codec), e->length, e->offset);
    err->errnum = EIO;
    return -1;
  }
  if (got < r->map->block_size)
    memset (out + got, 0, r->map->block_size - got);
  return 0;
}

/* The disk cache key of block b. */
static void
block_key (struct reader *r, uint64_t b, char key[DISK_CACHE_KEY_MAX])
{
  const struct block_entry *e = &r->map->entries[b];

  if (r->map->hashes)
    disk_cache_key_hash (key, DISK_CACHE_KEY_MAX,
                         r->map->hashes + b * r->map->hash_len);
  else
    disk_cache_key_range (key, DISK_CACHE_KEY_MAX, r->cfg.object_id,
                          e->offset, e->length);
}

/* For maps with block hashes (stores, cloop files with a block-hash
 * list): is cbuf the block's content? */
static int
check_hash (struct reader *r, uint64_t b, const unsigned char *cbuf,
            struct cloop_err *err)
{
  const unsigned char *want;
  unsigned char got[EVP_MAX_MD_SIZE];
  unsigned int n = 0;

  if (r->map->hashes == NULL)
    return 0;
  want = r->map->hashes + b * r->map->hash_len;
  EVP_Digest (cbuf, r->map->entries[b].length, got, &n, EVP_sha256 (), NULL);
  if (n == r->map->hash_len && memcmp (got, want, n) == 0)
    return 0;
  char hex[65];
  store_hex (hex, want);
  if (!r->map->objects_by_hash)   /* a cloop file: say where the bytes are */
    return cloop_err_set (err, EIO, "block %" PRIu64 " (%" PRIu32 " bytes at "
                          "offset %" PRIu64 "): content does not match its "
                          "SHA-256 %s", b, r->map->entries[b].length,
                          r->map->entries[b].offset, hex);
  return cloop_err_set (err, EIO, "block %" PRIu64 ": content does not match "
                        "its SHA-256 %s", b, hex);
}

/* Fetch the compressed bytes of the blocks in slots[which[0..n)] into
 * bufs[k]: byte ranges of the container, or for a store each block's
 * own file, finishing by deadline (0 = the source's own timeout).
 * Slots from n_required on are read-ahead (fetched at its priority).
 * refetch: faulty copies of these blocks seen so far (source.h).
 * status[k] gets 0 or an errno value, endpoint[k] (if endpoint is not
 * NULL) the source's endpoint that served it.  Returns 0, or -1 with
 * err set from the first failure. */
static int
fetch_blocks (struct reader *r, const struct slot *slots, const size_t *which,
              size_t n, size_t n_required, unsigned char **bufs, int *status,
              int *endpoint, uint64_t deadline, unsigned refetch,
              struct cloop_err *err)
{
  struct source_range *ranges = NULL;
  struct source_object *objs = NULL;
  char (*paths)[STORE_BLOCK_PATH_MAX] = NULL;
  int ret;

  if (r->map->objects_by_hash) {
    objs = calloc (n, sizeof *objs);
    paths = calloc (n, sizeof *paths);
  }
  else
    ranges = calloc (n, sizeof *ranges);
  if (r->map->objects_by_hash ? objs == NULL || paths == NULL
                              : ranges == NULL) {
    free (objs);
    free (paths);
    for (size_t k = 0; k < n; k++)
      status[k] = ENOMEM;
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  for (size_t k = 0; k < n; k++) {
    uint64_t b = slots[which[k]].block;
    const struct block_entry *e = &r->map->entries[b];
    enum fetch_priority prio = which[k] < n_required ? FETCH_DEMAND
                                                     : FETCH_READAHEAD;
    if (objs) {
      store_block_path (paths[k], r->map->hashes + b * r->map->hash_len);
      objs[k] = (struct source_object) {
        .path = paths[k], .length = e->length, .exact = true, .buf = bufs[k],
        .priority = prio, .deadline_ns = deadline, .refetch = refetch,
      };
    }
    else
      ranges[k] = (struct source_range) {
        .offset = e->offset, .length = e->length, .buf = bufs[k],
        .priority = prio, .deadline_ns = deadline, .refetch = refetch,
      };
  }
  if (objs)
    ret = source_get_objects (r->src, objs, n, err);
  else
    ret = source_pread_many (r->src, ranges, n, err);
  for (size_t k = 0; k < n; k++)
    status[k] = objs ? objs[k].status : ranges[k].status;
  if (endpoint)
    for (size_t k = 0; k < n; k++)
      endpoint[k] = objs ? objs[k].endpoint : ranges[k].endpoint;
  if (ret == -1) {
    size_t k = 0;
    while (k < n - 1 && status[k] == 0)
      k++;
    cloop_err_prefix (err, "block %" PRIu64, slots[which[k]].block);
    err->errnum = EIO;          /* e.g. ENOENT means nothing to a client */
  }
  free (objs);
  free (paths);
  free (ranges);
  return ret;
}

/* Try to fill slot s from the disk cache, using cbuf (the block's
 * compressed length) as scratch.  Returns true if the slot's data is
 * now valid.  A cached copy that fails to decode is left for the
 * refetch to overwrite. */
static bool
fill_from_disk (struct reader *r, struct slot *s, unsigned char *cbuf)
{
  const struct block_entry *e = &r->map->entries[s->block];
  char key[DISK_CACHE_KEY_MAX];
  struct cloop_err err;

  block_key (r, s->block, key);
  if (disk_cache_get (r->cfg.disk_cache, key, cbuf, e->length, &err) != 1)
    return false;
  if (decode_block (r, s->block, cbuf, s->ref.data, &err) == 0)
    return true;
  if (r->cfg.debug)
    r->cfg.debug ("%s (cached copy; fetching it again)", err.msg);
  return false;
}

/* Check (where the map has hashes) and decode a block just fetched into cbuf.  A
 * copy that fails (a fault in transit that the transport did not
 * catch: the server's fault) is fetched again, up to the source's
 * retries= budget, which its transfer faults share (source.h), and
 * then the read fails.  Each faulty copy is blamed on the endpoint
 * that served it (endpoint: the first copy's), which the source then
 * avoids while others can serve.  A block that decoded is written to
 * the disk cache.  Returns 0, or -1 with err set. */
static int
finish_fetched (struct reader *r, struct slot *slots, size_t i,
                unsigned char *cbuf, int endpoint, uint64_t deadline,
                struct cloop_err *err)
{
  struct slot *s = &slots[i];
  const struct block_entry *e = &r->map->entries[s->block];
  char key[DISK_CACHE_KEY_MAX];
  struct cloop_err ignored;
  unsigned faulty = 0;
  int status;

  while (check_hash (r, s->block, cbuf, err) == -1 ||
         decode_block (r, s->block, cbuf, s->ref.data, err) == -1) {
    source_report_faulty (r->src, endpoint);
    if (++faulty > source_retries (r->src) || past (deadline)) {
      size_t l = strlen (err->msg);
      if (faulty > 1)
        snprintf (err->msg + l, sizeof err->msg - l,
                  " (%u faulty copies fetched)", faulty);
      return -1;
    }
    if (r->cfg.debug)
      r->cfg.debug ("%s; fetching it again", err->msg);
    if (fetch_blocks (r, slots, &i, 1, SIZE_MAX, &cbuf, &status, &endpoint,
                      deadline, faulty, err) == -1)
      return -1;
  }
  if (r->cfg.disk_cache) {
    block_key (r, s->block, key);
    disk_cache_put (r->cfg.disk_cache, key, cbuf, e->length, &ignored);
  }
  return 0;
}

/* Publish slot s as filled (ok) or failed. */
static void
publish_slot (struct reader *r, struct slot *s, bool ok)
{
  if (r->cfg.debug && r->cfg.debug_blocks)
    r->cfg.debug ("block %" PRIu64 ": %s", s->block, ok ? "filled" : "failed");
  block_cache_publish (r->cache, &s->ref, ok);
  s->pinned = ok;
  s->status = ok ? BLOCK_HIT : BLOCK_FAILED;
}

/* Fill the claimed slots: first from the disk cache, then read all the
 * remaining compressed bytes in one batch, decode and publish each.
 * Every claimed slot is published (ok or failed) before returning.
 * Returns 0, or -1 with err set from the first failure. */
static int
fill_claimed (struct reader *r, struct slot *slots, size_t n,
              size_t n_required, uint64_t deadline, struct cloop_err *err)
{
  size_t *which = malloc (n * sizeof *which), nf = 0, total = 0;
  unsigned char **bufs = malloc (n * sizeof *bufs), *cbuf = NULL;
  int *status = malloc (n * sizeof *status);
  int *endpoint = malloc (n * sizeof *endpoint);
  struct scratch *sc;
  struct cloop_err fetch_err = { 0 };
  int ret = 0;

  for (size_t i = 0; i < n; i++)
    if (slots[i].status == BLOCK_CLAIMED)
      total += r->map->entries[slots[i].block].length;
  sc = get_scratch (r, total ? total : 1);
  if (sc)
    cbuf = sc->buf;
  if (which == NULL || bufs == NULL || status == NULL || endpoint == NULL ||
      cbuf == NULL) {
    ret = cloop_err_set (err, ENOMEM, "out of memory reading %zu blocks", n);
    for (size_t i = 0; i < n; i++)
      if (slots[i].status == BLOCK_CLAIMED)
        publish_slot (r, &slots[i], false);
    goto out;
  }

  /* Blocks not on disk are fetched together, in block order (a source
   * may merge contiguous ranges into one request).  Read-ahead is not
   * fetched while the source cannot reach its origin: it would only
   * fail, and the read would wait for it. */
  bool fetch_ahead = n > n_required && source_available (r->src);
  for (size_t i = 0, pos = 0; i < n; i++) {
    if (slots[i].status != BLOCK_CLAIMED)
      continue;
    if (r->cfg.disk_cache && fill_from_disk (r, &slots[i], cbuf + pos)) {
      publish_slot (r, &slots[i], true);
      continue;
    }
    if (i >= n_required && !fetch_ahead) {
      publish_slot (r, &slots[i], false);
      continue;
    }
    which[nf] = i;
    bufs[nf++] = cbuf + pos;
    pos += r->map->entries[slots[i].block].length;
  }
  if (nf > 0)
    fetch_blocks (r, slots, which, nf, n_required, bufs, status, endpoint,
                  deadline, 0, &fetch_err);

  /* Only the blocks the read asked for (not read-ahead) can fail it. */
  for (size_t k = 0; k < nf; k++) {
    struct slot *s = &slots[which[k]];
    bool required = which[k] < n_required;
    struct cloop_err e;
    bool ok = status[k] == 0;

    if (!ok)
      e = fetch_err;
    else if (finish_fetched (r, slots, which[k], bufs[k], endpoint[k],
                             deadline, &e) == -1)
      ok = false;
    if (!ok && required && ret == 0) {
      if (err)
        *err = e;
      ret = -1;
    }
    publish_slot (r, s, ok);
  }

 out:
  if (sc)
    put_scratch (r, sc);
  free (which);
  free (bufs);
  free (status);
  free (endpoint);
  return ret;
}

/* Wait, until deadline, for a slot another thread was filling.  If
 * that thread failed, so does this read: the fill already spent its
 * retries, and trying again would stretch this read past its deadline
 * while other readers wait behind it. */
static int
wait_busy (struct reader *r, struct slot *s, uint64_t deadline,
           struct cloop_err *err)
{
  if (block_cache_wait (r->cache, s->block, &s->ref, &s->status, deadline,
                        err) == -1)
    return -1;
  switch (s->status) {
  case BLOCK_HIT:
    s->pinned = true;
    return 0;
  case BLOCK_CLAIMED:           /* evicted meanwhile: fill it ourselves */
    s->pinned = true;
    return fill_claimed (r, s, 1, 1, deadline, err);
  case BLOCK_TIMEDOUT:
    return cloop_err_set (err, EIO, "block %" PRIu64 ": deadline of %u s "
                          "reached waiting for another request to fetch it",
                          s->block, r->cfg.timeout);
  default:
    return cloop_err_set (err, EIO, "block %" PRIu64 ": fetching or decoding "
                          "it failed in a concurrent request", s->block);
  }
}

/* Pin or claim blocks [first, first+n) into slots[0..n).  With
 * optional set, blocks other threads are filling are just skipped.
 * Returns the number claimed, or -1 with err set (ENOMEM). */
static ssize_t
acquire_range (struct reader *r, struct slot *slots, uint64_t first,
               size_t n, struct cloop_err *err)
{
  size_t nclaimed = 0;
  ssize_t ret = 0;

  for (size_t i = 0; i < n; i++) {
    struct slot *s = &slots[i];
    s->block = first + i;
    s->pinned = false;
    if (r->map->entries[s->block].codec == CODEC_ZERO) {
      s->status = BLOCK_FAILED;   /* never cached: served as zeroes */
      continue;
    }
    if (block_cache_acquire (r->cache, s->block, &s->ref, &s->status,
                             err) == -1) {
      s->status = BLOCK_FAILED;
      ret = -1;
      continue;
    }
    s->pinned = s->status != BLOCK_BUSY;
    nclaimed += s->status == BLOCK_CLAIMED;
  }
  return ret == -1 ? -1 : (ssize_t) nclaimed;
}

/* Read-ahead window for a read of blocks [first, last] that missed
 * (missed = some block had to be fetched), by the client whose detector
 * is st.  A read that starts where that client's previous one ended is
 * sequential: its misses fetch a window of
 * following blocks in the same batch, doubling from 4 blocks up to
 * cfg.readahead; any other read resets the window to nothing,
 * so random reads fetch only what they asked for. */
void
read_stream_init (struct read_stream *s)
{
  pthread_mutex_init (&s->lock, NULL);
  s->next = 0;
  s->window = 0;
}

void
read_stream_destroy (struct read_stream *s)
{
  pthread_mutex_destroy (&s->lock);
}

static size_t
readahead_window (struct reader *r, struct read_stream *st, uint64_t first,
                  uint64_t last, bool missed)
{
  size_t w = 0;

  if (r->ra_max == 0 || st == NULL)
    return 0;
  pthread_mutex_lock (&st->lock);
  if (first == st->next || first + 1 == st->next) {
    if (missed) {
      uint32_t grow = st->window ? st->window * 2 : 4;
      st->window = grow < r->ra_max ? grow : r->ra_max;
      w = st->window;
    }
  }
  else
    st->window = 0;
  st->next = last + 1;
  pthread_mutex_unlock (&st->lock);
  if (w > r->map->num_blocks - 1 - last)
    w = r->map->num_blocks - 1 - last;
  return w;
}

/* Bring blocks [first, first+n) into the cache, pinned in slots[0..n);
 * slots has room for n + ra_max.  wait_for_busy == false
 * skips blocks other threads are filling (for prefetch), and does no
 * read-ahead.  Returns 0, or -1 with err set; slots' pinned flags are
 * accurate in both cases.  *n_used is n plus the read-ahead slots. */
static int
acquire_blocks (struct reader *r, struct read_stream *st, struct slot *slots,
                uint64_t first, size_t n, bool wait_for_busy,
                uint64_t deadline, size_t *n_used, struct cloop_err *err)
{
  ssize_t nclaimed = acquire_range (r, slots, first, n, err);
  size_t extra = 0;
  bool any_claimed = false;
  int ret = nclaimed == -1 ? -1 : 0;

  if (wait_for_busy) {
    extra = readahead_window (r, st, first, first + n - 1, nclaimed != 0);
    /* A read-ahead slot that cannot be acquired (ENOMEM) is marked
     * failed and simply not fetched. */
    if (extra > 0)
      acquire_range (r, slots + n, first + n, extra, NULL);
  }
  *n_used = n + extra;
  for (size_t i = 0; i < n + extra; i++)
    any_claimed |= slots[i].status == BLOCK_CLAIMED;

  /* Publish our own claims before waiting for anyone else's. */
  if (any_claimed &&
      fill_claimed (r, slots, n + extra, n, deadline, err) == -1)
    ret = -1;

  if (wait_for_busy)
    for (size_t i = 0; i < n; i++)
      if (slots[i].status == BLOCK_BUSY &&
          wait_busy (r, &slots[i], deadline, ret == 0 ? err : NULL) == -1)
        ret = -1;
  return ret;
}

static void
release_blocks (struct reader *r, struct slot *slots, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (slots[i].pinned)
      block_cache_release (r->cache, &slots[i].ref);
}

/* Bring the blocks covering [offset, offset+count) into the cache and,
 * if buf is not NULL, copy that range of the decoded image into buf. */
static int
with_blocks (struct reader *r, struct read_stream *st, uint32_t count,
             uint64_t offset, bool wait_for_busy, unsigned char *buf,
             struct cloop_err *err)
{
  const uint32_t bs = r->map->block_size;
  struct slot stack_slots[STACK_BLOCKS], *slots = stack_slots;
  uint64_t first, last;
  size_t n, n_used;
  int ret;

  if (count == 0)
    return 0;
  if (offset > r->map->size || count > r->map->size - offset)
    return cloop_err_set (err, EIO, "read beyond the end of the image");
  first = offset / bs;
  last = (offset + count - 1) / bs;
  n = last - first + 1;
  if (n + r->ra_max > STACK_BLOCKS) {
    slots = malloc ((n + r->ra_max) * sizeof *slots);
    if (slots == NULL)
      return cloop_err_set (err, ENOMEM, "out of memory");
  }

  ret = acquire_blocks (r, st, slots, first, n, wait_for_busy,
                        read_deadline (r), &n_used, err);

  if (ret == 0 && buf) {
    uint64_t pos = offset;
    for (size_t i = 0; i < n; i++) {
      uint32_t in_block = pos % bs;
      uint32_t len = bs - in_block;
      if (len > offset + count - pos)
        len = offset + count - pos;
      if (slots[i].pinned)
        memcpy (buf, slots[i].ref.data + in_block, len);
      else        /* CODEC_ZERO */
        memset (buf, 0, len);
      buf += len;
      pos += len;
    }
  }

  release_blocks (r, slots, n_used);
  if (slots != stack_slots)
    free (slots);
  return ret;
}

int
reader_pread (struct reader *r, struct read_stream *stream, void *buf,
              uint32_t count, uint64_t offset, struct cloop_err *err)
{
  return with_blocks (r, stream, count, offset, true, buf, err);
}

int
reader_prefetch (struct reader *r, uint32_t count, uint64_t offset,
                 struct cloop_err *err)
{
  return with_blocks (r, NULL, count, offset, false, NULL, err);
}
