/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the metrics file writer (see metrics.h). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"

struct metrics_writer {
  struct registry *reg;
  char *path;
  unsigned interval_s;
  void (*warn) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
  bool failing;                 /* the last write failed (warned) */
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool stopping;                /* [lock] */
  bool running;                 /* the thread was started */
  pthread_t thread;
};

/* Snapshot and write once.  0, or -1 with err set. */
static int
write_once (struct metrics_writer *w, struct cloop_err *err)
{
  struct stats_snapshot snap;
  int r;

  if (registry_snapshot (w->reg, &snap, err) == -1)
    return -1;
  r = stats_write_file (&snap, w->path, err);
  stats_snapshot_free (&snap);
  return r;
}

/* Write, and say once when writing starts failing or works again. */
static void
write_and_tell (struct metrics_writer *w)
{
  struct cloop_err err = { 0 };

  if (write_once (w, &err) == -1) {
    if (!w->failing && w->warn)
      w->warn ("%s (tried again every %u s)", err.msg, w->interval_s);
    w->failing = true;
  }
  else {
    if (w->failing && w->warn)
      w->warn ("metrics-file %s: written again", w->path);
    w->failing = false;
  }
}

static void *
writer_main (void *opaque)
{
  struct metrics_writer *w = opaque;
  struct timespec when;

  clock_gettime (CLOCK_MONOTONIC, &when);
  pthread_mutex_lock (&w->lock);
  while (!w->stopping) {
    when.tv_sec += w->interval_s;
    while (!w->stopping &&
           pthread_cond_timedwait (&w->wake, &w->lock, &when) != ETIMEDOUT)
      ;
    if (w->stopping)
      break;
    pthread_mutex_unlock (&w->lock);
    write_and_tell (w);
    pthread_mutex_lock (&w->lock);
  }
  pthread_mutex_unlock (&w->lock);
  return NULL;
}

struct metrics_writer *
metrics_writer_new (struct registry *reg, const char *path,
                    unsigned interval_s, void (*warn) (const char *fmt, ...),
                    struct cloop_err *err)
{
  struct metrics_writer *w = calloc (1, sizeof *w);
  pthread_condattr_t ca;

  if (w == NULL || (w->path = strdup (path)) == NULL) {
    free (w);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  w->reg = reg;
  w->interval_s = interval_s ? interval_s : 1;
  w->warn = warn;
  pthread_mutex_init (&w->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&w->wake, &ca);
  pthread_condattr_destroy (&ca);
  if (write_once (w, err) == -1) {
    pthread_cond_destroy (&w->wake);
    pthread_mutex_destroy (&w->lock);
    free (w->path);
    free (w);
    return NULL;
  }
  return w;
}

int
metrics_writer_run (struct metrics_writer *w, struct cloop_err *err)
{
  int e = pthread_create (&w->thread, NULL, writer_main, w);

  if (e != 0) {
    errno = e;
    return cloop_err_set (err, e, "metrics-file %s: pthread_create: %m",
                          w->path);
  }
  w->running = true;
  return 0;
}

void
metrics_writer_free (struct metrics_writer *w)
{
  if (w == NULL)
    return;
  if (w->running) {
    pthread_mutex_lock (&w->lock);
    w->stopping = true;
    pthread_cond_signal (&w->wake);
    pthread_mutex_unlock (&w->lock);
    pthread_join (w->thread, NULL);
  }
  write_and_tell (w);
  pthread_cond_destroy (&w->wake);
  pthread_mutex_destroy (&w->lock);
  free (w->path);
  free (w);
}
