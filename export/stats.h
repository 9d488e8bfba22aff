/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: one snapshot of every counter of the process, and the
 * two ways it is printed.
 *
 * registry_snapshot (registry.h) fills a struct stats_snapshot: per
 * export its client reads, its share of the memory cache and each
 * endpoint it fetches from; for the process the memory cache's totals
 * and budget and the disk cache.  stats_format renders it as the
 * debug lines of -D cloop.stats=1; stats_write_prometheus as the
 * Prometheus text exposition format (metric names nbdkit_cloop_*,
 * listed in the plugin's man page); stats_write_file writes that to a
 * file atomically.  Pure formatting: no I/O but the last, no nbdkit.
 */
#ifndef CLOOP_STATS_H
#define CLOOP_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "blockcache.h"
#include "diskcache.h"
#include "endpoint.h"
#include "error.h"
#include "histogram.h"
#include "replay.h"

/* Client reads of one export (NBD_CMD_READ), over all its revisions. */
struct read_stats {
  uint64_t reads;               /* requests */
  uint64_t bytes;               /* bytes asked for by them */
  uint64_t errors;              /* requests that failed */
  struct histogram latency;     /* of every request, failed or not */
};

struct endpoint_snapshot {
  char *url;
  struct http_stats http;
};

struct export_snapshot {
  char *name;
  bool open;                    /* an image is open (else zeroes below) */
  struct read_stats reads;
  struct block_cache_stats memory;      /* its share of the cache */
  uint64_t disk_readahead;      /* blocks read ahead to disk only */
  uint64_t disk_readahead_faulty;       /* faulty copies of those */
  bool have_replay;             /* its boot profile is replayed */
  struct replay_stats replay;
  bool recording;               /* profile-record= */
  uint64_t recorded;            /* blocks recorded so far */
  size_t n_endpoints;
  struct endpoint_snapshot *endpoints;
};

struct stats_snapshot {
  uint64_t memory_budget;       /* memory-cache-size= */
  struct block_cache_stats memory;      /* the whole memory cache */
  bool have_disk;
  struct disk_cache_stats disk;
  size_t n_exports;
  struct export_snapshot *exports;
};

/* Free what a snapshot holds (not snap itself); NULL fields allowed. */
void stats_snapshot_free (struct stats_snapshot *snap);

/* Call line once per debug line of snap: for every export, or only the
 * one named only (NULL = all), then the process-wide lines. */
void stats_format (const struct stats_snapshot *snap, const char *only,
                   void (*line) (void *opaque, const char *text),
                   void *opaque);

/* Write snap to f in the Prometheus text exposition format (version
 * 0.0.4).  0, or -1 with errno set if writing failed. */
int stats_write_prometheus (const struct stats_snapshot *snap, FILE *f);

/* Replace the file path with snap in the Prometheus format, atomically
 * (a temporary file beside it, renamed over it).  0, or -1 with err
 * set naming the file. */
int stats_write_file (const struct stats_snapshot *snap, const char *path,
                      struct cloop_err *err);

#endif /* CLOOP_STATS_H */
