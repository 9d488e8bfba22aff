/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: progress display (see progress.h). */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "progress.h"

#define REDRAW_INTERVAL 0.25    /* seconds */
#define MIB (1024.0 * 1024.0)

double
progress_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
progress_start (struct progress *p, bool enabled, uint64_t total)
{
  p->enabled = enabled;
  p->total = total;
  p->start = p->last_draw = progress_now ();
  p->drawn = false;
}

/* "ETA m:ss" or "ETA h:mm:ss" into out. */
static void
format_eta (char *out, size_t len, double secs)
{
  unsigned long s = secs < 0 ? 0 : (unsigned long) (secs + 0.5);

  if (s >= 3600)
    snprintf (out, len, "ETA %lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf (out, len, "ETA %lu:%02lu", s / 60, s % 60);
}

/* Draw "PCT MiB MiB/s ETA" followed by tail, if due (or if force). */
static void
draw (struct progress *p, uint64_t done, const char *tail, bool force)
{
  double now = progress_now (), elapsed, rate;
  char pct[16] = "", eta[32] = "";

  if (!p->enabled || (!force && now - p->last_draw < REDRAW_INTERVAL))
    return;
  p->last_draw = now;
  elapsed = now - p->start;
  rate = elapsed > 0 ? done / elapsed : 0;
  if (p->total != UINT64_MAX && p->total > 0) {
    snprintf (pct, sizeof pct, "%5.1f%% ", 100.0 * done / p->total);
    if (rate > 0)
      format_eta (eta, sizeof eta, (p->total - done) / rate);
  }
  fprintf (stderr, "\r%s%8.1f MiB %7.1f MiB/s %-12s %s\033[K",
           pct, done / MIB, rate / MIB, eta, tail);
  fflush (stderr);
  p->drawn = true;
}

void
progress_update (struct progress *p, uint64_t done, uint64_t blocks_new,
                 uint64_t blocks_present, uint64_t blocks_zero, bool force)
{
  char tail[128];

  if (!p->enabled)
    return;
  snprintf (tail, sizeof tail, "blocks: %" PRIu64 " new, %" PRIu64
            " present, %" PRIu64 " zero ", blocks_new, blocks_present,
            blocks_zero);
  draw (p, done, tail, force);
}

void
progress_update_bytes (struct progress *p, uint64_t done, bool force)
{
  draw (p, done, "", force);
}

void
progress_finish (struct progress *p)
{
  if (p->drawn)
    fputc ('\n', stderr);
  p->drawn = false;
}
