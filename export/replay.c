/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: replaying a boot profile ahead of the clients (see
 * replay.h).
 *
 * pos[b] is 1 + the profile position of block b (0: not in the
 * profile), so following a client costs a lookup per block read.  The
 * cursor is the next profile entry to queue; `client` the furthest
 * position a client has read, + 1.  pump() queues jobs while fewer
 * than DEPTH run and the cursor is less than `ahead` entries past the
 * clients; each job, when done, pumps again.  A job is a run of at
 * most JOB_BLOCKS entries (contiguous in the profile, any blocks).
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

/* A replay that queued, finished or followed nothing for this long is
 * idle (the clients left the profile). */
#define IDLE_NS (5 * UINT64_C (1000000000))

struct replay {
  struct reader *reader;
  struct workpool *pool;
  const uint32_t *profile;
  size_t n, ahead, job_blocks;
  uint32_t *pos;                /* num_blocks entries */
  uint64_t num_blocks;
  pthread_mutex_t lock;
  size_t cursor;                /* [lock] */
  size_t client;                /* [lock] */
  unsigned in_flight;           /* [lock] jobs queued or running */
  atomic_bool finished;         /* the cursor reached the end */
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
  atomic_store (&rp->last_ns, now_ns ());
  pump (rp);
  pthread_mutex_unlock (&rp->lock);
}

/* With the lock held: queue jobs while there is room. */
static void
pump (struct replay *rp)
{
  while (rp->in_flight < DEPTH && rp->cursor < rp->n &&
         rp->cursor < rp->client + rp->ahead) {
    size_t k = rp->n - rp->cursor;
    size_t room = rp->client + rp->ahead - rp->cursor;

    if (k > rp->job_blocks)
      k = rp->job_blocks;
    if (k > room)
      k = room;
    struct workpool_job job = {
      .run = replay_job, .owner = rp, .a = rp->cursor, .b = k,
      .priority = 1,
    };
    if (workpool_submit (rp->pool, &job) == -1)
      break;                    /* queue full: the next follow retries */
    rp->cursor += k;
    rp->in_flight++;
    atomic_store (&rp->last_ns, now_ns ());
  }
  if (rp->cursor >= rp->n && rp->in_flight == 0)
    atomic_store (&rp->finished, true);
}

struct replay *
replay_start (struct reader *r, struct workpool *pool,
              const uint32_t *profile, size_t n, size_t ahead,
              struct cloop_err *err)
{
  const struct block_map *map = reader_map (r);
  struct replay *rp = calloc (1, sizeof *rp);

  if (rp == NULL ||
      (rp->pos = calloc (map->num_blocks, sizeof *rp->pos)) == NULL) {
    free (rp);
    cloop_err_set (err, ENOMEM, "boot profile: out of memory");
    return NULL;
  }
  rp->reader = r;
  rp->pool = pool;
  rp->profile = profile;
  rp->n = n;
  rp->ahead = ahead ? ahead : 1;
  rp->num_blocks = map->num_blocks;
  rp->job_blocks = JOB_BYTES / map->block_size;
  if (rp->job_blocks == 0)
    rp->job_blocks = 1;
  for (size_t i = 0; i < n; i++)
    if (profile[i] < map->num_blocks)
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
  free (rp->pos);
  free (rp);
}

void
replay_follow (struct replay *rp, uint64_t first, uint64_t last)
{
  size_t furthest = 0;

  if (atomic_load (&rp->finished))
    return;
  for (uint64_t b = first; b <= last && b < rp->num_blocks; b++)
    if (rp->pos[b] > furthest)
      furthest = rp->pos[b];
  if (furthest == 0)
    return;
  pthread_mutex_lock (&rp->lock);
  if (furthest > rp->client) {
    rp->client = furthest;
    atomic_store (&rp->last_ns, now_ns ());
    if (rp->cursor < rp->client) {      /* the clients ran ahead */
      rp->cursor = rp->client;
      rp->jumps++;
    }
    pump (rp);
  }
  pthread_mutex_unlock (&rp->lock);
}

bool
replay_busy (struct replay *rp)
{
  return !atomic_load (&rp->finished) &&
         now_ns () - atomic_load (&rp->last_ns) < IDLE_NS;
}

void
replay_get_stats (struct replay *rp, struct replay_stats *st)
{
  pthread_mutex_lock (&rp->lock);
  *st = (struct replay_stats) {
    .profile_blocks = rp->n, .queued = rp->cursor, .fetched = rp->fetched,
    .skipped = rp->skipped, .jumps = rp->jumps,
    .client_position = rp->client,
  };
  pthread_mutex_unlock (&rp->lock);
}
