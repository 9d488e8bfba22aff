/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the settings of an HTTP(S) source (one per export),
 * and the object identity it pins.  Plain data shared by every part of
 * the HTTP fetcher (http.h, http-engine.h, http-xfer.h).
 */
#ifndef CLOOP_HTTP_CONFIG_H
#define CLOOP_HTTP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_engine;

struct http_config {
  const char *url;              /* http:// or https:// (required) */
  /* Mirrors: more URLs of the same object (for a block store, of the
   * same store: objects are fetched beside each).  Every one is
   * probed at open; one that serves another size or other first bytes
   * than the first that answered is dropped with a warning (for a
   * store, source_objects_verified: it serves blocks only); one that
   * does not answer is checked the same way once it does, and serves
   * nothing before.  Each transfer goes to the origin with the shortest
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
  bool settled;                 /* the validators name one version
                                 * (http_validators_settled); if not, a
                                 * copy made under them may be of an
                                 * earlier version of the same second */
};

/* Fill cfg with the defaults shown above; url is set to NULL. */
void http_config_defaults (struct http_config *cfg);

#endif /* CLOOP_HTTP_CONFIG_H */
