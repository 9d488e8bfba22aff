/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a thread that writes the registry's statistics
 * snapshot to a file in the Prometheus text format (what
 * node_exporter's textfile collector reads) every interval, and once
 * more when it is stopped.  Writing never blocks a client's read: the
 * snapshot copies counters under their owners' short locks.
 */
#ifndef CLOOP_METRICS_H
#define CLOOP_METRICS_H

#include "error.h"
#include "registry.h"

struct metrics_writer;

/* Write the file once now (so that a bad path fails here, with err
 * naming it); no thread yet.  reg must outlive the writer.  warn (may
 * be NULL) gets one line when a later write fails and one when writing
 * works again.  NULL with err set. */
struct metrics_writer *metrics_writer_new (struct registry *reg,
                                           const char *path,
                                           unsigned interval_s,
                                           void (*warn) (const char *fmt, ...)
                                           __attribute__ ((format (printf,
                                                                   1, 2))),
                                           struct cloop_err *err);

/* Start rewriting the file every interval (after nbdkit forked).  0,
 * or -1 with err set. */
int metrics_writer_run (struct metrics_writer *w, struct cloop_err *err);

/* Stop the thread if it runs, write the file a last time and free the
 * writer (NULL allowed). */
void metrics_writer_free (struct metrics_writer *w);

#endif /* CLOOP_METRICS_H */
