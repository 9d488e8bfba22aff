/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: HTTP(S) sources with pinned object identity and strict
 * range semantics, and the engine that runs their transfers.
 *
 * One engine serves every HTTP source of a process (all exports, all
 * URLs): one curl multi handle, so connections are pooled and shared,
 * and one set of queues by priority (source.h: demand reads first,
 * then read-ahead, then background work).  Until http_engine_start,
 * a caller drives the engine in its own thread (no threads exist
 * before nbdkit forks); after it, a worker thread does, and callers
 * queue their transfers and sleep until every one is done or their
 * deadline passes.
 *
 * source_open_http probes the URL with one ranged GET and pins the
 * object's size, ETag and Last-Modified.
 *
 * Every reply is checked: 206, exact Content-Range, pinned total,
 * exact body length, unchanged ETag.  Anything else is a fault, never
 * data; faults are retried with back-off, then the range fails with
 * EIO.  A server that cannot be reached at all (refused, unresolved,
 * connect timeout) is marked down (fetch/endpoint.h): transfers then
 * fail at once, without retries, and a single probe is let through
 * after a capped exponential back-off; success marks it up.  fetch/
 * never calls nbdkit: debug output goes to cfg->debug.
 */
#ifndef CLOOP_HTTP_H
#define CLOOP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "source.h"

struct http_engine;

struct http_config {
  const char *url;              /* http:// or https:// (required) */
  /* Mirrors: more URLs of the same object (for a block store, of the
   * same store: objects are fetched beside each).  Every one is
   * probed at open; one that serves another size or other first bytes
   * than the first that answered, or does not answer, is dropped with
   * a warning.  Each transfer goes to the origin with the shortest
   * expected time (moving averages of latency and rate, times its
   * transfers in flight) that has not failed it; a read fails only
   * when every origin has.  At most 63; none for a pinned open. */
  const char *const *mirrors;
  size_t n_mirrors;
  /* The object's size if known beforehand (a metalink's <size>), else
   * 0: an origin serving another size is not used. */
  uint64_t expect_size;
  /* The engine to run on (borrowed; it must outlive the source), or
   * NULL: the source makes its own, never started (its callers drive
   * it: for tools and tests). */
  struct http_engine *engine;
  unsigned connections;         /* max transfers at once to url (8) */
  unsigned timeout;             /* per-read deadline, seconds (30) */
  unsigned retries;             /* extra attempts after a fault (4) */
  unsigned backoff_base_ms;     /* first back-off (100), doubling ... */
  unsigned backoff_max_ms;      /* ... up to this cap (2000) */
  /* While the server is down (connection refused, name not resolved,
   * connect timeout), reads fail at once; one probe goes after this
   * long (1000 ms), doubling after each failed probe ... */
  unsigned down_backoff_ms;
  unsigned down_backoff_max_ms; /* ... up to this cap (30000) */
  long low_speed_limit;         /* abort an attempt under this B/s ... */
  long low_speed_time;          /* ... for this many seconds (1024, 10) */
  const char *cainfo;           /* CA bundle file (NULL = libcurl's) */
  const char *capath;           /* CA directory (NULL = libcurl's) */
  bool sslverify;               /* verify peer and host name (true) */
  const char *proxy;            /* NULL = http_proxy/https_proxy/no_proxy */
  const char *user_agent;       /* NULL = "nbdkit-cloop/VERSION" */
  long max_redirects;           /* http/https redirects followed (5) */
  const char *unix_socket_path; /* connect here instead (tests), or NULL */
  size_t max_coalesce;          /* merge contiguous ranges up to (1 MiB) */
  bool verbose;                 /* debug lines per request and libcurl's */
  void (*debug) (const char *fmt, ...) /* where debug lines go, or NULL */
    __attribute__ ((format (printf, 1, 2)));
  /* One line when the server goes down and one when it is back, or
   * NULL (then they go to debug, if verbose). */
  void (*warn) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
  /* Whether the caller has given up (e.g. the user pressed Ctrl-C), or
   * NULL (never).  Whoever drives the engine asks at least every
   * 250 ms while a transfer of this source is queued, backing off or
   * in flight, and once it returns true every such transfer fails at
   * once with ECANCELED ("interrupted"), without a retry.  It is
   * called from the driving thread (the caller's before
   * http_engine_start, the worker's after it) with engine locks held:
   * it must be cheap and thread-safe and must not call into fetch/.
   * If it is set by a signal handler, read a lock-free atomic. */
  bool (*cancelled) (void);
};

/* What the source pinned at open; the disk cache keys on it.  Strings
 * are owned by the source; etag and last_modified may be NULL. */
struct http_identity {
  const char *url;
  uint64_t size;
  const char *etag;             /* as sent, quotes included */
  bool etag_weak;               /* W/"..." (not usable in If-Range) */
  const char *last_modified;
};

/* Fill cfg with the defaults shown above; url is set to NULL. */
void http_config_defaults (struct http_config *cfg);

/* Process-wide libcurl setup: call once from the plugin's .load,
 * before any thread exists.  0, or -1 if libcurl cannot start. */
int http_global_init (void);

/* Undo http_global_init (from .unload, after every source is closed). */
void http_global_cleanup (void);

/* A new engine that keeps at most max_connections transfers in
 * flight over all sources (each source also keeps to its own
 * connections=).  No thread yet.  NULL with err set (ENOMEM). */
struct http_engine *http_engine_new (unsigned max_connections,
                                     struct cloop_err *err);

/* Start the engine's worker thread (from the plugin's .after_fork).
 * 0, or -1 with err set. */
int http_engine_start (struct http_engine *e, struct cloop_err *err);

/* Stop the worker (transfers still queued fail with EIO) and free the
 * engine.  Every source using it must be closed first.  NULL allowed. */
void http_engine_free (struct http_engine *e);

/* Probe cfg->url and return a source whose size and identity are
 * pinned, or NULL with err set (EIO for network faults, EINVAL for
 * bad configuration).  cfg is copied. */
struct source *source_open_http (const struct http_config *cfg,
                                 struct cloop_err *err);

/* Like source_open_http, but pinned to an identity known from an
 * earlier run (id->url is ignored; cfg->url is used): no request is
 * made now.  Every later request still carries If-Range, so if the
 * object has changed since, reads fail with EIO (fault "changed")
 * rather than mix versions.  NULL with err set on ENOMEM/EINVAL. */
struct source *source_open_http_pinned (const struct http_config *cfg,
                                        const struct http_identity *id,
                                        struct cloop_err *err);

/* The pinned identity; valid until source_close. */
const struct http_identity *source_http_identity (struct source *src);

/* Copy the counters of src's one origin (thread-safe); the same as
 * source_endpoint_stats (src, 0, ...). */
void source_http_get_stats (struct source *src, struct http_stats *stats);

#endif /* CLOOP_HTTP_H */
