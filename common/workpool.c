/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a pool of background threads running queued jobs (see
 * workpool.h).
 *
 * The queue's nodes are allocated once (max_queued of them) and kept on
 * a free list, so submitting never allocates.  Each worker publishes
 * the owner of the job it runs, which is what workpool_cancel waits
 * on; owners being cancelled are listed (records on the cancelling
 * threads' stacks) so that their running jobs cannot queue more.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "workpool.h"

struct node {
  struct workpool_job job;
  struct node *next;
};

struct cancelling {
  void *owner;
  struct cancelling *next;
};

struct worker {
  struct workpool *pool;
  pthread_t thread;
  bool started;
  void *running;                /* owner of the job it runs, or NULL */
};

struct workpool {
  pthread_mutex_t lock;
  pthread_cond_t work;          /* a job was queued, or stop */
  pthread_cond_t idle;          /* a worker finished a job */
  struct node *head[WORKPOOL_PRIORITIES], *tail[WORKPOOL_PRIORITIES];
  struct node *free_nodes;
  struct node *nodes;           /* all of them, for free */
  size_t queued;
  uint64_t refused;
  struct cancelling *cancelling;
  bool stop;
  unsigned nworkers;
  struct worker *workers;
};

struct workpool *
workpool_new (unsigned threads, size_t max_queued, struct cloop_err *err)
{
  struct workpool *p;

  if (threads < 1 || threads > 256 || max_queued < 1 ||
      max_queued > 1024 * 1024) {
    cloop_err_set (err, EINVAL, "work pool: %u threads, %zu queued: out of "
                   "range", threads, max_queued);
    return NULL;
  }
  p = calloc (1, sizeof *p);
  if (p == NULL ||
      (p->nodes = calloc (max_queued, sizeof *p->nodes)) == NULL ||
      (p->workers = calloc (threads, sizeof *p->workers)) == NULL) {
    if (p)
      free (p->nodes);
    free (p);
    cloop_err_set (err, ENOMEM, "work pool: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < max_queued; i++) {
    p->nodes[i].next = p->free_nodes;
    p->free_nodes = &p->nodes[i];
  }
  p->nworkers = threads;
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->work, NULL);
  pthread_cond_init (&p->idle, NULL);
  return p;
}

/* With the lock held: the next job to run, taken off the queue, or
 * NULL. */
static struct node *
take_next (struct workpool *p)
{
  for (unsigned i = 0; i < WORKPOOL_PRIORITIES; i++) {
    struct node *n = p->head[i];
    if (n) {
      p->head[i] = n->next;
      if (p->head[i] == NULL)
        p->tail[i] = NULL;
      p->queued--;
      return n;
    }
  }
  return NULL;
}

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  struct workpool *p = w->pool;

  pthread_mutex_lock (&p->lock);
  for (;;) {
    struct node *n;

    while (!p->stop && (n = take_next (p)) == NULL)
      pthread_cond_wait (&p->work, &p->lock);
    if (p->stop)
      break;
    struct workpool_job job = n->job;
    n->next = p->free_nodes;
    p->free_nodes = n;
    w->running = job.owner;
    pthread_mutex_unlock (&p->lock);

    job.run (job.owner, job.a, job.b);

    pthread_mutex_lock (&p->lock);
    w->running = NULL;
    pthread_cond_broadcast (&p->idle);
  }
  pthread_mutex_unlock (&p->lock);
  return NULL;
}

int
workpool_start (struct workpool *p, struct cloop_err *err)
{
  for (unsigned i = 0; i < p->nworkers; i++) {
    struct worker *w = &p->workers[i];
    int r;

    if (w->started)
      continue;
    w->pool = p;
    r = pthread_create (&w->thread, NULL, worker_main, w);
    if (r != 0)
      return cloop_err_set (err, r, "work pool: cannot start thread %u: %s",
                            i, strerror (r));
    w->started = true;
  }
  return 0;
}

/* With the lock held: drop the queued jobs of owner (every owner if
 * owner is NULL). */
static void
drop_queued (struct workpool *p, void *owner)
{
  for (unsigned i = 0; i < WORKPOOL_PRIORITIES; i++) {
    struct node **link = &p->head[i], *last = NULL;

    while (*link) {
      struct node *n = *link;
      if (owner == NULL || n->job.owner == owner) {
        *link = n->next;
        n->next = p->free_nodes;
        p->free_nodes = n;
        p->queued--;
      }
      else {
        last = n;
        link = &n->next;
      }
    }
    p->tail[i] = last;
  }
}

/* With the lock held: is a job of owner (any owner if NULL) running? */
static bool
running (const struct workpool *p, void *owner)
{
  for (unsigned i = 0; i < p->nworkers; i++)
    if (p->workers[i].running &&
        (owner == NULL || p->workers[i].running == owner))
      return true;
  return false;
}

void
workpool_free (struct workpool *p)
{
  if (p == NULL)
    return;
  pthread_mutex_lock (&p->lock);
  p->stop = true;
  drop_queued (p, NULL);
  pthread_cond_broadcast (&p->work);
  pthread_mutex_unlock (&p->lock);
  for (unsigned i = 0; i < p->nworkers; i++)
    if (p->workers[i].started)
      pthread_join (p->workers[i].thread, NULL);
  pthread_cond_destroy (&p->idle);
  pthread_cond_destroy (&p->work);
  pthread_mutex_destroy (&p->lock);
  free (p->workers);
  free (p->nodes);
  free (p);
}

int
workpool_submit (struct workpool *p, const struct workpool_job *job)
{
  struct node *n = NULL;
  bool refuse;

  pthread_mutex_lock (&p->lock);
  refuse = p->stop || p->free_nodes == NULL ||
           job->priority >= WORKPOOL_PRIORITIES;
  for (struct cancelling *c = p->cancelling; c && !refuse; c = c->next)
    refuse = c->owner == job->owner;
  if (!refuse) {
    unsigned prio = job->priority;
    n = p->free_nodes;
    p->free_nodes = n->next;
    n->job = *job;
    n->next = NULL;
    if (p->tail[prio])
      p->tail[prio]->next = n;
    else
      p->head[prio] = n;
    p->tail[prio] = n;
    p->queued++;
    pthread_cond_signal (&p->work);
  }
  else
    p->refused++;
  pthread_mutex_unlock (&p->lock);
  return n ? 0 : -1;
}

void
workpool_cancel (struct workpool *p, void *owner)
{
  struct cancelling me = { .owner = owner };

  pthread_mutex_lock (&p->lock);
  me.next = p->cancelling;
  p->cancelling = &me;
  drop_queued (p, owner);
  while (running (p, owner))
    pthread_cond_wait (&p->idle, &p->lock);
  drop_queued (p, owner);
  for (struct cancelling **c = &p->cancelling; *c; c = &(*c)->next)
    if (*c == &me) {
      *c = me.next;
      break;
    }
  pthread_mutex_unlock (&p->lock);
}

size_t
workpool_queued (struct workpool *p)
{
  size_t n;

  pthread_mutex_lock (&p->lock);
  n = p->queued;
  pthread_mutex_unlock (&p->lock);
  return n;
}

uint64_t
workpool_refused (struct workpool *p)
{
  uint64_t n;

  pthread_mutex_lock (&p->lock);
  n = p->refused;
  pthread_mutex_unlock (&p->lock);
  return n;
}
