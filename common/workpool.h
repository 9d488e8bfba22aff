/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a pool of background threads running queued jobs.
 *
 * A job is a small value (a function, the owner it works for and two
 * numbers), queued by priority (0 first, FIFO within one) and run by
 * one of the pool's worker threads.  All work given to a pool is
 * optional (read-ahead, prefetch), so the queue is bounded and a job
 * that does not fit is refused rather than waited for: no caller ever
 * blocks on the pool.  The number of workers bounds the work in
 * progress (and so the bytes in flight of jobs that fetch).
 *
 * Jobs may be queued before workpool_start (nothing runs until then:
 * no thread exists before nbdkit forks).  workpool_cancel takes an
 * owner's queued jobs away and waits for its running ones, so the
 * owner may then be freed.  Thread-safe.  Knows nothing of nbdkit.
 */
#ifndef CLOOP_WORKPOOL_H
#define CLOOP_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct workpool;

#define WORKPOOL_PRIORITIES 2

struct workpool_job {
  /* Called from a worker thread; must not call workpool_cancel or
   * workpool_free (it may submit further jobs). */
  void (*run) (void *owner, uint64_t a, uint64_t b);
  void *owner;
  uint64_t a, b;
  unsigned priority;            /* < WORKPOOL_PRIORITIES; 0 runs first */
};

/* A pool of threads workers (1..256) queueing at most max_queued jobs
 * (>= 1).  No thread yet.  NULL with err set (EINVAL, ENOMEM). */
struct workpool *workpool_new (unsigned threads, size_t max_queued,
                               struct cloop_err *err);

/* Start the worker threads.  0, or -1 with err set (the threads that
 * did start keep running; workpool_free stops them). */
int workpool_start (struct workpool *p, struct cloop_err *err);

/* Drop every queued job, wait for the running ones, stop the workers
 * and free the pool (NULL allowed). */
void workpool_free (struct workpool *p);

/* Queue a copy of job.  0, or -1 if the queue is full or the pool is
 * shutting down (the job is not run). */
int workpool_submit (struct workpool *p, const struct workpool_job *job);

/* Remove owner's queued jobs and wait until none of its jobs runs.
 * Jobs submitted for owner meanwhile (by its running jobs) are removed
 * too.  Not from a job of the pool. */
void workpool_cancel (struct workpool *p, void *owner);

/* Jobs queued now (all owners), and jobs submitted that were refused
 * since the pool was made. */
size_t workpool_queued (struct workpool *p);
uint64_t workpool_refused (struct workpool *p);

#endif /* CLOOP_WORKPOOL_H */
