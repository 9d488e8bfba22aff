/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: replaying a boot profile ahead of the clients (see
 * replay.h).
 *
 * pos[b] is 1 + the profile position of block b (0: not in the
 * profile), so following a client costs a lookup per block read;
 * seen[e] marks the entries clients have read.  The cursor is the next
 * profile entry to queue; `front` where the clients are (move_front).
 * pump() queues jobs while fewer than DEPTH run and room() allows;
 * each job, when done, pumps again, and so does each client's first
 * read of an entry (it may have read a block fetched ahead, which
 * makes room).  A job is a run of at most JOB_BLOCKS entries
 * (contiguous in the profile, any blocks).
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "replay.h"

/* Jobs running or queued at once, and bytes of blocks a job fills. */
#define DEPTH 4
#define JOB_BYTES (1024 * 1024)

/* Entries the replay may run ahead of the clients at least, whatever
 * the memory cache's size. */
#define MIN_AHEAD 16

/* The clients' position moves to a read entry when FRONT_READS of the
 * FRONT_WINDOW entries up to it were read (move_front). */
#define FRONT_WINDOW 32
#define FRONT_READS 16

/* A replay that queued or finished no job, and whose clients read no
 * entry for the first time, for this long is idle (the clients left
 * the profile). */
#define IDLE_NS (5 * UINT64_C (1000000000))

struct replay {
  struct reader *reader;
  struct workpool *pool;
  const uint32_t *profile;
  size_t n, job_blocks;
  uint32_t block_size;
  uint32_t *pos;                /* num_blocks entries */
  uint64_t num_blocks;
  pthread_mutex_t lock;
  size_t cursor;                /* [lock] */
  size_t client;                /* [lock] furthest entry read, + 1 */
  size_t front;                 /* [lock] the clients' position (see
                                   move_front), + 1 */
  size_t nread;                 /* [lock] entries clients have read */
  atomic_uchar *seen;           /* n entries: read by a client (set with
                                   the lock held) */
  unsigned in_flight;           /* [lock] jobs queued or running */
  size_t in_flight_blocks;      /* [lock] their entries */
  atomic_bool finished;         /* the cursor reached the end */
  atomic_bool all_read;         /* clients read every entry */
  atomic_uint_fast64_t last_ns; /* when a job was queued or ended, or a
                                   client moved in the profile */
  uint64_t fetched, skipped, jumps;     /* [lock] */
};

static void pump (struct replay *rp);

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
replay_job (void *owner, uint64_t a, uint64_t b)
{
  struct replay *rp = owner;
  size_t claimed = 0;

  reader_fill_blocks (rp->reader, rp->profile + a, b, FETCH_BACKGROUND,
                      &claimed);
  pthread_mutex_lock (&rp->lock);
  rp->fetched += claimed;
  rp->skipped += b - claimed;
  rp->in_flight--;
  rp->in_flight_blocks -= b;
  atomic_store (&rp->last_ns, now_ns ());
  pump (rp);
  pthread_mutex_unlock (&rp->lock);
}

/* Entries the replay may still queue: what keeps the blocks fetched
 * ahead and not yet read by a client (over the whole memory cache,
 * with read-ahead's), together with the entries of its jobs not yet
 * done, within half the memory cache, and at least MIN_AHEAD blocks.
 * With the lock held. */
static size_t
room (struct replay *rp)
{
  uint64_t max, unread = reader_unread_prefetch (rp->reader, &max);
  uint64_t limit = max / 2 / rp->block_size;
  uint64_t used = unread / rp->block_size + rp->in_flight_blocks;

  if (limit < MIN_AHEAD)
    limit = MIN_AHEAD;
  return used < limit ? limit - used : 0;
}

/* With the lock held: queue jobs while there is room. */
static void
pump (struct replay *rp)
{
  size_t free = 0;

  if (rp->cursor < rp->n && rp->in_flight < DEPTH)
    free = room (rp);
  while (rp->in_flight < DEPTH && rp->cursor < rp->n && free > 0) {
    size_t k = rp->n - rp->cursor;

    if (k > rp->job_blocks)
      k = rp->job_blocks;
    if (k > free) {
      /* Little room (the clients read one block at a time): wait for
       * a whole job's, unless nothing would wake the replay up. */
      if (rp->in_flight > 0)
        break;
      k = free;
    }
    struct workpool_job job = {
      .run = replay_job, .owner = rp, .a = rp->cursor, .b = k,
      .priority = 1,
    };
    if (workpool_submit (rp->pool, &job) == -1)
      break;                    /* queue full: the next follow retries */
    rp->cursor += k;
    rp->in_flight++;
    rp->in_flight_blocks += k;
    free -= k;
    atomic_store (&rp->last_ns, now_ns ());
  }
  if (rp->cursor >= rp->n && rp->in_flight == 0)
    atomic_store (&rp->finished, true);
}

struct replay *
replay_start (struct reader *r, struct workpool *pool,
              const uint32_t *profile, size_t n, struct cloop_err *err)
{
  const struct block_map *map = reader_map (r);
  struct replay *rp = calloc (1, sizeof *rp);

  if (rp == NULL ||
      (rp->pos = calloc (map->num_blocks, sizeof *rp->pos)) == NULL ||
      (rp->seen = calloc (n ? n : 1, sizeof *rp->seen)) == NULL) {
    if (rp)
      free (rp->pos);
    free (rp);
    cloop_err_set (err, ENOMEM, "boot profile: out of memory");
    return NULL;
  }
  rp->reader = r;
  rp->pool = pool;
  rp->profile = profile;
  rp->n = n;
  rp->num_blocks = map->num_blocks;
  rp->block_size = map->block_size;
  rp->job_blocks = JOB_BYTES / map->block_size;
  if (rp->job_blocks == 0)
    rp->job_blocks = 1;
  for (size_t i = 0; i < n; i++)
    if (profile[i] < map->num_blocks && rp->pos[profile[i]] == 0)
      rp->pos[profile[i]] = i + 1;
  pthread_mutex_init (&rp->lock, NULL);
  pthread_mutex_lock (&rp->lock);
  pump (rp);
  pthread_mutex_unlock (&rp->lock);
  return rp;
}

void
replay_free (struct replay *rp)
{
  if (rp == NULL)
    return;
  workpool_cancel (rp->pool, rp);
  pthread_mutex_destroy (&rp->lock);
  free (rp->seen);
  free (rp->pos);
  free (rp);
}

/* With the lock held, entry e (0-based) just read for the first time:
 * move the clients' position.  It moves to a read entry only when at
 * least FRONT_READS of the FRONT_WINDOW entries up to it were read, so
 * that a client reading a block recorded much later (a boot that runs
 * its services in another order than the recorded one) does not make
 * the replay skip the entries between. */
static void
move_front (struct replay *rp, size_t e)
{
  size_t top = e + FRONT_WINDOW;

  if (top > rp->n)
    top = rp->n;
  /* The window ending at q gained entry e for every q in
   * [e, e + FRONT_WINDOW): the furthest read q that now qualifies. */
  for (size_t q = top; q-- > e && q + 1 > rp->front;) {
    if (!rp->seen[q])
      continue;
    size_t lo = q + 1 >= FRONT_WINDOW ? q + 1 - FRONT_WINDOW : 0, count = 0;
    for (size_t i = lo; i <= q; i++)
      count += rp->seen[i];
    if (count >= FRONT_READS || count == q + 1) {
      rp->front = q + 1;
      return;
    }
  }
}

void
replay_follow (struct replay *rp, uint64_t first, uint64_t last)
{
  for (uint64_t b = first; b <= last && b < rp->num_blocks; b++) {
    size_t p = rp->pos[b];

    if (p == 0 ||
        atomic_load_explicit (&rp->seen[p - 1], memory_order_relaxed))
      continue;
    pthread_mutex_lock (&rp->lock);
    if (!rp->seen[p - 1]) {
      rp->seen[p - 1] = 1;
      if (++rp->nread == rp->n)
        atomic_store (&rp->all_read, true);
      if (p > rp->client)
        rp->client = p;
      atomic_store (&rp->last_ns, now_ns ());
      if (!atomic_load (&rp->finished)) {
        move_front (rp, p - 1);
        if (rp->cursor < rp->front) {   /* the clients ran ahead */
          rp->cursor = rp->front;
          rp->jumps++;
        }
        pump (rp);
      }
    }
    pthread_mutex_unlock (&rp->lock);
  }
}

bool
replay_busy (struct replay *rp)
{
  return !atomic_load (&rp->all_read) &&
         now_ns () - atomic_load (&rp->last_ns) < IDLE_NS;
}

void
replay_get_stats (struct replay *rp, struct replay_stats *st)
{
  pthread_mutex_lock (&rp->lock);
  *st = (struct replay_stats) {
    .profile_blocks = rp->n, .queued = rp->cursor, .fetched = rp->fetched,
    .skipped = rp->skipped, .jumps = rp->jumps,
    .client_position = rp->front, .client_furthest = rp->client,
    .client_read = rp->nread,
  };
  pthread_mutex_unlock (&rp->lock);
}
