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

/* A client starts reading sequentially when a read starts where its
 * previous one ended.  Once a window runs, a read that starts up to
 * this many blocks (or the window, if larger) before where the
 * furthest one ended, or up to this many past the window, continues
 * the stream: a client's concurrent requests reach us out of order
 * (nbdcopy keeps 64 in flight on a connection, served by several
 * threads). */
#define SEQ_SLACK 64

/* Background jobs fill this many bytes of decoded blocks each (at
 * least one block): one batch of fetches, then decoding, on one of the
 * pool's workers; the workers' number bounds what is in flight. */
#define JOB_BYTES (1024 * 1024)
#define JOB_BYTES_MAX (4 * 1024 * 1024)

/* The first read-ahead window: this many bytes, and at least 4 blocks
 * (a client that reads block 0 and stops, as a probe does, costs
 * little more). */
#define WINDOW_MIN_BYTES (256 * 1024)

/* The window of a client with several reads in progress grows to this,
 * and beyond it (up to readahead=) only while the blocks read ahead
 * that no client has read yet, over the whole memory cache, stay under
 * half of it: each of such a client's connections has a window
 * (nbdcopy: 4, each with 16 MiB of its own requests in flight), which
 * would otherwise fill the memory cache with blocks evicted before they
 * are read; but when one of them is left (the end of a copy), or one
 * client reads alone, its window may take that room.  Over three
 * mirrors, a fixed cap of 32 MiB made a parallel copy 3 % faster than
 * 16 MiB, and wasted 288 blocks fetched instead of 156. */
#define WINDOW_PARALLEL_BYTES (16 * 1024 * 1024)

/* Read-ahead into the disk cache (reader_config.readahead_disk) goes
 * at most this many blocks past the memory window. */
#define STAGE_BLOCKS_MAX 65536

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

  uint32_t ra_max;              /* cfg.readahead in blocks */
  uint32_t ra_min;              /* the first window, in blocks */
  uint32_t ra_job;              /* blocks a read may fetch ahead itself */
  uint32_t ra_max_parallel;     /* window of a client with reads in
                                   parallel, in blocks, beyond which
                                   it needs room (prefetch_room) */
  atomic_bool ra_off;           /* no read-ahead for now */

  /* Read-ahead into the disk cache only (cfg.readahead_disk). */
  uint32_t stage_max;           /* in blocks; 0 = none */
  /* Per block: a staging job is fetching it (read without the lock;
   * set and cleared under stage_lock, clearing broadcast on
   * stage_cond), so that a fill of the block waits for its copy on
   * disk instead of fetching it a second time. */
  _Atomic unsigned char *staging;
  pthread_mutex_t stage_lock;
  pthread_cond_t stage_cond;    /* on CLOCK_MONOTONIC */
  atomic_uint_fast64_t staged, stage_faulty;

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
  if (r->ra_max > 4096)
    r->ra_max = 4096;
  r->ra_min = WINDOW_MIN_BYTES / map->block_size;
  if (r->ra_min < 4)
    r->ra_min = 4;
  if (r->ra_min > r->ra_max)
    r->ra_min = r->ra_max;
  r->ra_max_parallel = WINDOW_PARALLEL_BYTES / map->block_size;
  if (r->ra_max_parallel < r->ra_min)
    r->ra_max_parallel = r->ra_min;
  if (r->ra_max_parallel > r->ra_max)
    r->ra_max_parallel = r->ra_max;
  r->ra_job = JOB_BYTES_MAX / map->block_size;
  if (r->ra_job > r->ra_max)
    r->ra_job = r->ra_max;
  if (cfg->disk_cache && cfg->workpool && r->ra_max > 0 &&
      cfg->readahead_disk >= map->block_size) {
    uint64_t m = cfg->readahead_disk / map->block_size;

    r->stage_max = m > STAGE_BLOCKS_MAX ? STAGE_BLOCKS_MAX : m;
    r->staging = calloc (map->num_blocks ? map->num_blocks : 1, 1);
    if (r->staging == NULL)
      r->stage_max = 0;         /* only an optimisation */
  }
  {
    pthread_condattr_t ca;

    pthread_condattr_init (&ca);
    pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
    pthread_cond_init (&r->stage_cond, &ca);
    pthread_condattr_destroy (&ca);
  }
  pthread_mutex_init (&r->stage_lock, NULL);
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
  if (r->cfg.workpool)
    workpool_cancel (r->cfg.workpool, r);
  while ((p = ptr_stack_pop (&r->pool)) != NULL)
    decoder_free (p);
  free (r->pool.items);
  while ((p = ptr_stack_pop (&r->spare)) != NULL)
    free_scratch (p);
  free (r->spare.items);
  pthread_mutex_destroy (&r->pool_lock);
  free ((void *) r->staging);
  pthread_cond_destroy (&r->stage_cond);
  pthread_mutex_destroy (&r->stage_lock);
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
reader_pause_readahead (struct reader *r, bool pause)
{
  if (atomic_load_explicit (&r->ra_off, memory_order_relaxed) != pause)
    atomic_store (&r->ra_off, pause);
}

void
reader_get_cache_stats (struct reader *r, struct block_cache_stats *st)
{
  block_cache_get_stats (r->cache, st);
}

void
reader_get_disk_readahead (struct reader *r, uint64_t *staged,
                           uint64_t *faulty)
{
  *staged = atomic_load (&r->staged);
  *faulty = atomic_load (&r->stage_faulty);
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
 * Slots from n_required on are optional (fetched at priority ahead);
 * in_stream marks the required ones (source.h).  refetch: faulty
 * copies of these blocks seen so far (source.h).
 * status[k] gets 0 or an errno value, endpoint[k] (if endpoint is not
 * NULL) the source's endpoint that served it.  Returns 0, or -1 with
 * err set from the first failure. */
static int
fetch_blocks (struct reader *r, const struct slot *slots, const size_t *which,
              size_t n, size_t n_required, enum fetch_priority ahead,
              bool in_stream, unsigned char **bufs, int *status,
              int *endpoint,
              uint64_t deadline, unsigned refetch, struct cloop_err *err)
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
    enum fetch_priority prio = which[k] < n_required ? FETCH_DEMAND : ahead;
    if (objs) {
      store_block_path (paths[k], r->map->hashes + b * r->map->hash_len);
      objs[k] = (struct source_object) {
        .path = paths[k], .length = e->length, .exact = true, .buf = bufs[k],
        .priority = prio, .deadline_ns = deadline, .refetch = refetch,
        .in_stream = in_stream,
      };
    }
    else
      ranges[k] = (struct source_range) {
        .offset = e->offset, .length = e->length, .buf = bufs[k],
        .priority = prio, .deadline_ns = deadline, .refetch = refetch,
        .in_stream = in_stream,
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
                enum fetch_priority prio, unsigned char *cbuf, int endpoint,
                uint64_t deadline, struct cloop_err *err)
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
    size_t required = prio == FETCH_DEMAND ? SIZE_MAX : 0;
    if (fetch_blocks (r, slots, &i, 1, required, prio, false, &cbuf, &status,
                      &endpoint, deadline, faulty, err) == -1)
      return -1;
  }
  if (r->cfg.disk_cache) {
    block_key (r, s->block, key);
    disk_cache_put (r->cfg.disk_cache, key, cbuf, e->length, &ignored);
  }
  return 0;
}

/* Mark block b as being staged to the disk cache by the caller; false
 * if another staging job has it. */
static bool
stage_begin (struct reader *r, uint64_t b)
{
  bool mine;

  pthread_mutex_lock (&r->stage_lock);
  mine = r->staging[b] == 0;
  if (mine)
    r->staging[b] = 1;
  pthread_mutex_unlock (&r->stage_lock);
  return mine;
}

/* The caller's staging of block b is over (stored or not). */
static void
stage_end (struct reader *r, uint64_t b)
{
  pthread_mutex_lock (&r->stage_lock);
  r->staging[b] = 0;
  pthread_cond_broadcast (&r->stage_cond);
  pthread_mutex_unlock (&r->stage_lock);
}

/* If a staging job is fetching block b, wait (until deadline, 0 =
 * the job's own end) for it to be over, so that the caller finds the
 * block on disk rather than fetch it again. */
static void
wait_staged (struct reader *r, uint64_t b, uint64_t deadline)
{
  if (r->staging == NULL || r->staging[b] == 0)
    return;
  pthread_mutex_lock (&r->stage_lock);
  while (r->staging[b] != 0 && !past (deadline)) {
    uint64_t until = now_ns () + UINT64_C (1000000000);
    struct timespec ts;

    if (deadline != 0 && deadline < until)
      until = deadline;
    ts.tv_sec = until / 1000000000;
    ts.tv_nsec = until % 1000000000;
    pthread_cond_timedwait (&r->stage_cond, &r->stage_lock, &ts);
  }
  pthread_mutex_unlock (&r->stage_lock);
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
 * Slots from n_required on are optional: fetched at priority ahead,
 * only while the source is available, and their failure does not fail
 * the call; in_stream: the required ones are a client's read in a
 * sequential stream (source.h).  Every claimed slot is published (ok
 * or failed) before returning.  Returns 0, or -1 with err set from the first failure. */
static int
fill_claimed (struct reader *r, struct slot *slots, size_t n,
              size_t n_required, enum fetch_priority ahead, bool in_stream,
              uint64_t deadline, struct cloop_err *err)
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
    wait_staged (r, slots[i].block, deadline);
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
    fetch_blocks (r, slots, which, nf, n_required, ahead, in_stream, bufs,
                  status, endpoint, deadline, 0, &fetch_err);

  /* Only the blocks the read asked for (not read-ahead) can fail it. */
  for (size_t k = 0; k < nf; k++) {
    struct slot *s = &slots[which[k]];
    bool required = which[k] < n_required;
    struct cloop_err e;
    bool ok = status[k] == 0;

    if (!ok)
      e = fetch_err;
    else if (finish_fetched (r, slots, which[k],
                             required ? FETCH_DEMAND : ahead, bufs[k],
                             endpoint[k], deadline, &e) == -1)
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
    return fill_claimed (r, s, 1, 1, FETCH_DEMAND, false, deadline, err);
  case BLOCK_TIMEDOUT:
    return cloop_err_set (err, EIO, "block %" PRIu64 ": deadline of %u s "
                          "reached waiting for another request to fetch it",
                          s->block, r->cfg.timeout);
  default:
    return cloop_err_set (err, EIO, "block %" PRIu64 ": fetching or decoding "
                          "it failed in a concurrent request", s->block);
  }
}

/* Pin or claim blocks [first, first+n) into slots[0..n) (as a
 * background fill if background: block_cache_acquire_prefetch).
 * Returns the number claimed, or -1 with err set (ENOMEM: those slots
 * are marked failed).  *hits gets the number already valid. */
static ssize_t
acquire_range (struct reader *r, struct slot *slots, uint64_t first,
               size_t n, bool background, size_t *hits,
               struct cloop_err *err)
{
  size_t nclaimed = 0, nhit = 0;
  ssize_t ret = 0;

  for (size_t i = 0; i < n; i++) {
    struct slot *s = &slots[i];
    int a;

    s->block = first + i;
    s->pinned = false;
    if (r->map->entries[s->block].codec == CODEC_ZERO) {
      s->status = BLOCK_FAILED;   /* never cached: served as zeroes */
      nhit++;
      continue;
    }
    a = background
      ? block_cache_acquire_prefetch (r->cache, s->block, &s->ref, &s->status,
                                      err)
      : block_cache_acquire (r->cache, s->block, &s->ref, &s->status, err);
    if (a == -1) {
      s->status = BLOCK_FAILED;
      ret = -1;
      continue;
    }
    s->pinned = s->status != BLOCK_BUSY;
    nclaimed += s->status == BLOCK_CLAIMED;
    nhit += s->status == BLOCK_HIT;
  }
  if (hits)
    *hits = nhit;
  return ret == -1 ? -1 : (ssize_t) nclaimed;
}

static void
release_blocks (struct reader *r, struct slot *slots, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (slots[i].pinned)
      block_cache_release (r->cache, &slots[i].ref);
}

/* ---- background fills (read-ahead, NBD_CMD_CACHE, profiles) -------- */


/* A job's b: the block count, and the fetch priority above it. */
#define JOB_COUNT_BITS 32

/* Fill blocks with n slots, claimed by background acquires: fetch at
 * priority prio.  Blocks other threads fill, or already valid, are
 * left alone.  Failures are only counted (cache fill failures). */
static void
fill_background (struct reader *r, struct slot *slots, size_t n,
                 enum fetch_priority prio)
{
  bool any = false;
  struct cloop_err err;

  for (size_t i = 0; i < n; i++)
    any |= slots[i].status == BLOCK_CLAIMED;
  if (any &&
      fill_claimed (r, slots, n, 0, prio, false, read_deadline (r),
                    &err) == -1 &&
      r->cfg.debug)
    r->cfg.debug ("background fill: %s", err.msg);
  release_blocks (r, slots, n);
}

/* The workpool job: fill blocks [first, first+count). */
static void
fill_job (void *owner, uint64_t first, uint64_t b)
{
  struct reader *r = owner;
  size_t count = b & ((UINT64_C (1) << JOB_COUNT_BITS) - 1);
  enum fetch_priority prio = b >> JOB_COUNT_BITS;
  struct slot stack_slots[STACK_BLOCKS], *slots = stack_slots;

  if (count > STACK_BLOCKS &&
      (slots = malloc (count * sizeof *slots)) == NULL)
    return;
  acquire_range (r, slots, first, count, true, NULL, NULL);
  fill_background (r, slots, count, prio);
  if (slots != stack_slots)
    free (slots);
}

/* Queue jobs run(r, a, b) over blocks [first, first+count): one per
 * job_bytes of decoded blocks (at least one block, at most
 * STACK_BLOCKS), a = its first block, b = its block count | b_high, at
 * pool priority.  Returns the number of blocks queued (from first on:
 * the queue may fill up). */
static uint64_t
queue_jobs (struct reader *r, void (*run) (void *, uint64_t, uint64_t),
            uint64_t first, uint64_t count, uint64_t job_bytes,
            uint64_t b_high, unsigned priority)
{
  uint64_t per_job = job_bytes / r->map->block_size, done = 0;

  if (r->cfg.workpool == NULL)
    return 0;
  if (per_job == 0)
    per_job = 1;
  if (per_job > STACK_BLOCKS)
    per_job = STACK_BLOCKS;
  while (done < count) {
    uint64_t n = count - done < per_job ? count - done : per_job;
    struct workpool_job job = {
      .run = run, .owner = r, .a = first + done, .b = n | b_high,
      .priority = priority,
    };
    if (workpool_submit (r->cfg.workpool, &job) == -1)
      break;
    done += n;
  }
  return done;
}

/* Queue background fills of blocks [first, first+count), a job per
 * job_bytes (from JOB_BYTES to JOB_BYTES_MAX: larger jobs make larger
 * transfers), fetched at prio.  Returns the number of blocks queued
 * (from first on: the queue may fill up). */
static uint64_t
queue_fills (struct reader *r, uint64_t first, uint64_t count,
             uint64_t job_bytes, enum fetch_priority prio)
{
  if (job_bytes < JOB_BYTES)
    job_bytes = JOB_BYTES;
  if (job_bytes > JOB_BYTES_MAX)
    job_bytes = JOB_BYTES_MAX;
  return queue_jobs (r, fill_job, first, count, job_bytes,
                     (uint64_t) prio << JOB_COUNT_BITS,
                     prio == FETCH_READAHEAD ? 0 : 1);
}

/* The workpool job of read-ahead into the disk cache: fetch the blocks
 * of [first, first+count) (count <= STACK_BLOCKS) that are neither on
 * disk nor being staged, in one batch at FETCH_READAHEAD; check and
 * decode each (into scratch: only to know it is right) and store the
 * good ones on disk.  A faulty copy is blamed on its endpoint and
 * dropped: a client that reads the block fetches it again, with the
 * retries a read has. */
static void
stage_job (void *owner, uint64_t first, uint64_t count)
{
  struct reader *r = owner;
  struct slot slots[STACK_BLOCKS];
  size_t which[STACK_BLOCKS], n = 0, total = 0;
  unsigned char *bufs[STACK_BLOCKS];
  int status[STACK_BLOCKS], endpoint[STACK_BLOCKS];
  struct scratch *in = NULL, *out = NULL;
  char key[DISK_CACHE_KEY_MAX];
  struct cloop_err err;

  if (!source_available (r->src))
    return;
  for (uint64_t b = first; b < first + count && b < r->map->num_blocks;
       b++) {
    const struct block_entry *e = &r->map->entries[b];

    if (e->codec == CODEC_ZERO)
      continue;
    block_key (r, b, key);
    if (disk_cache_has (r->cfg.disk_cache, key, e->length) ||
        block_cache_contains (r->cache, b) || !stage_begin (r, b))
      continue;
    slots[n].block = b;
    which[n] = n;
    total += e->length;
    n++;
  }
  if (n == 0)
    return;
  in = get_scratch (r, total);
  out = get_scratch (r, r->map->block_size);
  if (in && out) {
    for (size_t k = 0, pos = 0; k < n; k++) {
      bufs[k] = in->buf + pos;
      pos += r->map->entries[slots[k].block].length;
    }
    fetch_blocks (r, slots, which, n, 0, FETCH_READAHEAD, false, bufs,
                  status, endpoint, read_deadline (r), 0, &err);
    for (size_t k = 0; k < n; k++) {
      uint64_t b = slots[k].block;
      const struct block_entry *e = &r->map->entries[b];

      if (status[k] != 0)
        continue;
      if (check_hash (r, b, bufs[k], &err) == -1 ||
          decode_block (r, b, bufs[k], out->buf, &err) == -1) {
        source_report_faulty (r->src, endpoint[k]);
        atomic_fetch_add (&r->stage_faulty, 1);
        if (r->cfg.debug)
          r->cfg.debug ("read-ahead to disk: %s: faulty copy dropped",
                        err.msg);
        continue;
      }
      block_key (r, b, key);
      disk_cache_put (r->cfg.disk_cache, key, bufs[k], e->length, &err);
      atomic_fetch_add (&r->staged, 1);
    }
  }
  if (in)
    put_scratch (r, in);
  if (out)
    put_scratch (r, out);
  for (size_t k = 0; k < n; k++)
    stage_end (r, slots[k].block);
}

/* Queue read-ahead into the disk cache of blocks [first, first+count),
 * a job per JOB_BYTES_MAX.  They queue with the memory cache's
 * read-ahead (FIFO): a stream's staging job of a block starts before
 * its read-ahead of the block, which then waits for it (wait_staged)
 * and finds the block on disk. */
static void
queue_stage (struct reader *r, uint64_t first, uint64_t count)
{
  queue_jobs (r, stage_job, first, count, JOB_BYTES_MAX, 0, 0);
}

int
reader_fill_blocks (struct reader *r, const uint32_t *blocks, size_t n,
                    enum fetch_priority prio, size_t *claimed)
{
  struct slot stack_slots[STACK_BLOCKS], *slots = stack_slots;
  size_t k = 0;

  if (n > STACK_BLOCKS && (slots = malloc (n * sizeof *slots)) == NULL)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (blocks[i] >= r->map->num_blocks)
      continue;
    if (acquire_range (r, &slots[k], blocks[i], 1, true, NULL, NULL) == -1)
      continue;
    if (slots[k].status == BLOCK_CLAIMED)
      k++;
    else if (slots[k].pinned)
      block_cache_release (r->cache, &slots[k].ref);
  }
  if (claimed)
    *claimed = k;
  fill_background (r, slots, k, prio);
  if (slots != stack_slots)
    free (slots);
  return 0;
}

/* ---- read-ahead ------------------------------------------------------ */

void
read_stream_init (struct read_stream *s)
{
  pthread_mutex_init (&s->lock, NULL);
  s->next = 0;
  s->run_start = 0;
  s->ahead = 0;
  s->staged = 0;
  s->window = 0;
  atomic_init (&s->reading, 0);
}

void
read_stream_destroy (struct read_stream *s)
{
  pthread_mutex_destroy (&s->lock);
}

uint64_t
reader_unread_prefetch (struct reader *r, uint64_t *max_bytes)
{
  return block_cache_unread_prefetch (r->cache, max_bytes);
}

/* Blocks that read-ahead may still claim beyond a parallel client's
 * WINDOW_PARALLEL_BYTES: what keeps the blocks read ahead and not yet
 * read, over the whole memory cache, within half of it. */
static uint64_t
prefetch_room (struct reader *r)
{
  uint64_t max, unread = reader_unread_prefetch (r, &max);

  return max / 2 > unread ? (max / 2 - unread) / r->map->block_size : 0;
}

/* After a client's read of blocks [first, last] (late: some block was
 * not yet valid, so the client waited), decide what to read ahead:
 * *count blocks from *from.  A read that starts near where the
 * client's previous ones ended is sequential: the window is kept
 * filled up to window blocks past it, starting at WINDOW_MIN and
 * doubling (up to cfg.readahead) whenever a sequential read was late,
 * i.e. while the window is smaller than what the link delivers in a
 * round trip.  Any other read resets it, so random reads fetch only
 * what they ask for.  A client with reads in parallel uses a window
 * beyond WINDOW_PARALLEL_BYTES only as far as prefetch_room allows.
 * The window is topped up once half of it has been consumed, so jobs
 * stay large. */
static void
plan_readahead (struct reader *r, struct read_stream *st, uint64_t first,
                uint64_t last, bool late, uint64_t *from, uint64_t *count,
                uint64_t *stage_from, uint64_t *stage_count)
{
  uint64_t end, back, win;
  bool parallel = atomic_load (&st->reading) > 1;

  *count = 0;
  *stage_count = 0;
  pthread_mutex_lock (&st->lock);
  back = st->window > SEQ_SLACK ? st->window : SEQ_SLACK;
  if (st->window == 0 ? first == st->next || first + 1 == st->next
                      : first + back >= st->next &&
                        first <= st->next + st->window + SEQ_SLACK) {
    uint32_t max = r->ra_max;

    if (st->window == 0)
      st->window = r->ra_min;
    else if (late && st->window < max)
      st->window = st->window * 2;
    if (st->window > max)
      st->window = max;
    if (last + 1 > st->next)
      st->next = last + 1;
  }
  else {
    st->window = 0;
    st->ahead = 0;
    st->staged = 0;
    st->next = last + 1;
    st->run_start = first;
  }
  if (st->ahead < st->next)
    st->ahead = st->next;
  win = st->window;
  /* The room is asked for (the cache's lock) only when the window
   * would be topped up: a smaller window never tops up more often. */
  if (parallel && win > r->ra_max_parallel &&
      ((st->next + win - st->ahead) * 2 >= win ||
       st->next + win >= r->map->num_blocks)) {
    uint64_t most = r->ra_max_parallel + prefetch_room (r);

    if (win > most)
      win = most;
  }
  end = st->next + win;
  if (end > r->map->num_blocks)
    end = r->map->num_blocks;
  if (win > 0 && end > st->ahead &&
      ((end - st->ahead) * 2 >= win || end == r->map->num_blocks)) {
    *from = st->ahead;
    *count = end - st->ahead;
    st->ahead = end;
  }
  /* Past the window, into the disk cache only: once the window is as
   * large as it may grow and the stream has read two full windows in
   * a row (a copy, or a guest reading a large file; not a boot's short
   * bursts, where what is read ahead that far is mostly wasted), topped
   * up when half of it was consumed. */
  if (r->stage_max > 0 && st->window >= r->ra_max &&
      st->next - st->run_start >= 2 * (uint64_t) r->ra_max) {
    uint64_t s_from = st->staged > st->ahead ? st->staged : st->ahead;
    uint64_t s_end = st->ahead + r->stage_max;

    if (s_end > r->map->num_blocks)
      s_end = r->map->num_blocks;
    if (s_end > s_from &&
        ((s_end - s_from) * 2 >= r->stage_max ||
         s_end == r->map->num_blocks)) {
      *stage_from = s_from;
      *stage_count = s_end - s_from;
      st->staged = s_end;
    }
  }
  pthread_mutex_unlock (&st->lock);
}

/* Start the read-ahead that a read of blocks [first, last] calls for
 * (plan_readahead), unless the source cannot be reached now.  Returns
 * the number of blocks after last that the client's read-ahead has
 * queued (0 if it is not reading sequentially); *in_stream: the read
 * is part of a sequential stream with a read-ahead window. */
static uint64_t
read_ahead (struct reader *r, struct read_stream *st, uint64_t first,
            uint64_t last, bool late, bool *in_stream)
{
  uint64_t from, count, ahead, s_from, s_count;

  *in_stream = false;
  if (r->ra_max == 0 || st == NULL || r->cfg.workpool == NULL ||
      atomic_load_explicit (&r->ra_off, memory_order_relaxed))
    return 0;
  plan_readahead (r, st, first, last, late, &from, &count, &s_from,
                  &s_count);
  if (count > 0 && source_available (r->src))
    queue_fills (r, from, count, count * r->map->block_size / 4,
                 FETCH_READAHEAD);
  if (s_count > 0 && source_available (r->src))
    queue_stage (r, s_from, s_count);
  pthread_mutex_lock (&st->lock);
  ahead = st->window > 0 && st->ahead > last + 1 ? st->ahead - last - 1 : 0;
  *in_stream = st->window > 0;
  pthread_mutex_unlock (&st->lock);
  return ahead;
}

/* ---- client reads ---------------------------------------------------- */

/* Complete blocks acquired in slots[0..n) (nclaimed of them claimed,
 * -1 if acquiring failed, with err set) and the optional ones in
 * slots[n..n+extra): fill the claimed ones, then wait for those of
 * [0, n) other threads are filling.  in_stream: as fill_claimed's.
 * Returns 0, or -1 with err set; slots' pinned flags are accurate in
 * both cases. */
static int
complete_blocks (struct reader *r, struct slot *slots, size_t n,
                 size_t extra, ssize_t nclaimed, bool in_stream,
                 uint64_t deadline, struct cloop_err *err)
{
  int ret = nclaimed == -1 ? -1 : 0;

  /* Publish our own claims before waiting for anyone else's. */
  if (nclaimed != 0 &&
      fill_claimed (r, slots, n + extra, n, FETCH_READAHEAD, in_stream,
                    deadline, err) == -1)
    ret = -1;
  for (size_t i = 0; i < n; i++)
    if (slots[i].status == BLOCK_BUSY &&
        wait_busy (r, &slots[i], deadline, ret == 0 ? err : NULL) == -1)
      ret = -1;
  return ret;
}

int
reader_pread (struct reader *r, struct read_stream *st, void *buf,
              uint32_t count, uint64_t offset, struct cloop_err *err)
{
  const uint32_t bs = r->map->block_size;
  struct slot stack_slots[STACK_BLOCKS], *slots = stack_slots;
  unsigned char *out = buf;
  uint64_t first, last, ahead;
  size_t n, hits = 0, extra = 0;
  ssize_t nclaimed;
  bool in_stream;
  int ret;

  if (count == 0)
    return 0;
  if (offset > r->map->size || count > r->map->size - offset)
    return cloop_err_set (err, EIO, "read beyond the end of the image");
  first = offset / bs;
  last = (offset + count - 1) / bs;
  n = last - first + 1;
  if (n + r->ra_job > STACK_BLOCKS &&
      (slots = malloc ((n + r->ra_job) * sizeof *slots)) == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");

  /* The read-ahead is queued before this read's own fetch, so that it
   * is in flight while this read waits.  When the client has other
   * reads in progress (so its requests, not the read-ahead, keep the
   * link busy), a read that must fetch a block the read-ahead has
   * queued but not started fetches the blocks after it (up to a job's
   * worth) in the same batch, rather than make one small transfer now
   * and another when the job runs.  A serial client's read does not:
   * it would wait for them, and decode them in its own thread. */
  if (st)
    atomic_fetch_add (&st->reading, 1);
  nclaimed = acquire_range (r, slots, first, n, false, &hits, err);
  ahead = read_ahead (r, st, first, last, hits < n, &in_stream);
  if (nclaimed > 0 && ahead > 0 && atomic_load (&st->reading) > 1) {
    extra = ahead < r->ra_job ? ahead : r->ra_job;
    acquire_range (r, slots + n, last + 1, extra, true, NULL, NULL);
  }
  ret = complete_blocks (r, slots, n, extra, nclaimed, in_stream,
                         read_deadline (r), err);

  if (ret == 0) {
    uint64_t pos = offset;
    for (size_t i = 0; i < n; i++) {
      uint32_t in_block = pos % bs;
      uint32_t len = bs - in_block;
      if (len > offset + count - pos)
        len = offset + count - pos;
      if (slots[i].pinned)
        memcpy (out, slots[i].ref.data + in_block, len);
      else        /* CODEC_ZERO */
        memset (out, 0, len);
      out += len;
      pos += len;
    }
  }

  if (st)
    atomic_fetch_sub (&st->reading, 1);
  release_blocks (r, slots, n + extra);
  if (slots != stack_slots)
    free (slots);
  return ret;
}

int
reader_prefetch (struct reader *r, uint32_t count, uint64_t offset,
                 struct cloop_err *err)
{
  uint64_t first, last;

  if (count == 0)
    return 0;
  if (offset > r->map->size || count > r->map->size - offset)
    return cloop_err_set (err, EIO, "cache request beyond the end of the "
                          "image");
  first = offset / r->map->block_size;
  last = (offset + count - 1) / r->map->block_size;
  /* With a pool, the fills are queued (what does not fit in its queue
   * is dropped: the request is advisory); without, done now. */
  if (r->cfg.workpool) {
    queue_fills (r, first, last - first + 1, JOB_BYTES, FETCH_BACKGROUND);
    return 0;
  }
  while (first <= last) {
    uint64_t n = last - first + 1 < STACK_BLOCKS ? last - first + 1
                                                 : STACK_BLOCKS;
    fill_job (r, first, n | ((uint64_t) FETCH_BACKGROUND << JOB_COUNT_BITS));
    first += n;
  }
  return 0;
}
