/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: a one-line progress display on stderr for create
 * and warm:
 * percent, MiB/s, ETA, and blocks new/present/zero.  Redrawn at most
 * a few times a second; silent when disabled.
 */
#ifndef CLOOP_STORE_PROGRESS_H
#define CLOOP_STORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
  bool enabled;
  uint64_t total;               /* bytes, UINT64_MAX if unknown */
  double start, last_draw;      /* monotonic seconds */
  bool drawn;
};

/* Monotonic time in seconds. */
double progress_now (void);

/* Start a display for total bytes (UINT64_MAX if unknown). */
void progress_start (struct progress *p, bool enabled, uint64_t total);

/* Redraw if due (or if force). */
void progress_update (struct progress *p, uint64_t done, uint64_t blocks_new,
                      uint64_t blocks_present, uint64_t blocks_zero,
                      bool force);

/* Redraw if due (or if force): percent, bytes, rate and ETA only. */
void progress_update_bytes (struct progress *p, uint64_t done, bool force);

/* Finish the line (newline) if anything was drawn. */
void progress_finish (struct progress *p);

#endif /* CLOOP_STORE_PROGRESS_H */
