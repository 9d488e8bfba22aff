/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the exports one process serves, by name.
 *
 * A registry holds named exports, each an image configuration
 * (image.h).  An export is opened on first use (or at once with
 * export_open, for a single image that must fail nbdkit's start), and
 * one that cannot open fails only the callers that ask for it.  An open
 * export is a revision: one opened version of the image (a reader).
 * Callers hold a reference to the revision they read, so an export can
 * move on to a newer revision (a store republished with a higher
 * revision, found when the export is revalidated) while connections
 * that started on the old one keep reading it until they release it.
 *
 * The registry owns the process's one memory cache (one budget of
 * decoded blocks, shared by every export and revision: each open
 * revision registers its image in it and leaves when freed), its one
 * disk cache and its state directory (statedir.h).  All functions are thread-safe except registry_free.  Knows
 * nothing of nbdkit.
 */
#ifndef CLOOP_REGISTRY_H
#define CLOOP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diskcache.h"
#include "error.h"
#include "image.h"
#include "reader.h"
#include "stats.h"

struct registry;
struct export;
struct revision;

struct registry_config {
  uint64_t memory_cache_size;   /* bytes of decoded blocks, all exports */
  const char *cache_dir;        /* the disk cache, or NULL for none */
  uint64_t cache_max_size;      /* its bound (0 = none) */
  const char *state_dir;        /* the state directory, or NULL */
  /* Transfers in flight over every remote export (the HTTP engine's
   * bound), or 0 when no export is remote: no engine is made. */
  unsigned http_max_connections;
  /* Threads filling blocks in the background (read-ahead, NBD_CMD_CACHE,
   * profiles), or 0 for none: then no read-ahead, and a cache request
   * is served in the client's thread. */
  unsigned background_threads;
  /* Where warnings and debug lines go (either may be NULL). */
  void (*warn) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
  void (*debug) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
};

/* A new, empty registry; creates the memory cache, opens the disk
 * cache and the state directory of cfg (either may be NULL) and makes
 * the process's HTTP engine (not started: no thread yet).  NULL with
 * err set (the
 * message names the directory). */
struct registry *registry_new (const struct registry_config *cfg,
                               struct cloop_err *err);

/* Close every revision (none may still be held), the HTTP engine,
 * the memory cache and
 * the disk cache. */
void registry_free (struct registry *reg);

/* The process's memory cache (for its totals: block_cache_get_totals). */
struct block_cache *registry_memory_cache (const struct registry *reg);

/* The process's disk cache, or NULL. */
struct disk_cache *registry_disk_cache (const struct registry *reg);

/* Add an export.  name is copied; cfg is not: it must stay valid until
 * registry_free.  cfg->disk_cache, cfg->state_dir, cfg->http_engine
 * and cfg->reader.memory_cache are ignored (the registry's are used).
 * -1 with err set if the name is empty, too long or taken. */
int registry_add (struct registry *reg, const char *name,
                  const struct image_config *cfg, struct cloop_err *err);

/* Number of exports, and the i-th one's name (in the order added). */
size_t registry_count (const struct registry *reg);
const char *registry_name (const struct registry *reg, size_t i);

/* Make name the export that the empty name means (default: the first
 * added).  -1 with err set if there is no such export. */
int registry_set_default (struct registry *reg, const char *name,
                          struct cloop_err *err);

/* The export called name ("" = the default), or NULL. */
struct export *registry_find (struct registry *reg, const char *name);

/* Open the export now if it is not open (before nbdkit forks: no
 * thread is started).  0, or -1 with err set. */
int export_open (struct export *e, struct cloop_err *err);

/* Start the background work that may not run before nbdkit forks (the
 * HTTP engine's worker thread, the background fill threads); until
 * then, reads run in the caller's thread and background fills wait.
 * Call after nbdkit forked.  0, or -1 with err set. */
int registry_start (struct registry *reg, struct cloop_err *err);

/* A reference to the export's current revision, opening the export if
 * needed.  If the revision was last checked more than the image's
 * revalidate= seconds ago and its image can change (a block store),
 * it is checked first: a newer trusted revision becomes current (for
 * this and later callers; holders of the old one keep it); one that
 * fails to open or verify is warned about and the current one kept.
 * NULL with err set if the export cannot be opened. */
struct revision *export_acquire (struct export *e, struct cloop_err *err);

/* A reference to the export's current revision if it is open, else
 * NULL (never opens it, never checks for a newer revision). */
struct revision *export_acquire_if_open (struct export *e);

/* Drop a reference from export_acquire.  The last one frees a revision
 * that is no longer current. */
void revision_release (struct revision *rev);

/* The revision's reader (valid while the reference is held). */
struct reader *revision_reader (const struct revision *rev);

/* The name of the revision's export (valid until registry_free). */
const char *revision_export_name (const struct revision *rev);

/* A client's read (reader_pread on the revision's reader), counted in
 * its export's statistics; after a failure, image_read_failed.  0, or
 * -1 with err set. */
int revision_pread (struct revision *rev, struct read_stream *stream,
                    void *buf, uint32_t count, uint64_t offset,
                    struct cloop_err *err);

/* Write the boot recorded so far by the revision's export, if it
 * records one (profile-record=), atomically; a failure is warned
 * about.  (It is also written when the revision is freed.) */
void revision_write_recording (struct revision *rev);

/* Every counter of the process now (stats.h).  0, or -1 with err set
 * (ENOMEM); free with stats_snapshot_free. */
int registry_snapshot (struct registry *reg, struct stats_snapshot *snap,
                       struct cloop_err *err);

/* A one-line description of the export's current revision: the store's
 * signed description, else its dialect, size and block size.  Opens
 * the export if needed; if it cannot open, says so.  Returns a
 * malloc'd string (NULL only on ENOMEM). */
char *export_describe (struct export *e);

#endif /* CLOOP_REGISTRY_H */
