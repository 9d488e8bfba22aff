/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: an HTTP(S) source with pinned object identity and
 * strict range semantics.
 *
 * source_open_http probes the URL with one ranged GET on a plain easy
 * handle (no threads: nbdkit forks afterwards) and pins the object's
 * size, ETag and Last-Modified.  Until source_http_start, reads run
 * synchronously in the calling thread.  After it, a worker thread
 * drives a curl multi handle: callers queue their ranges and sleep
 * until every range is done or their deadline passes, so many reads
 * share a pool of connections (HTTP/2 multiplexed where offered).
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

struct http_config {
  const char *url;              /* http:// or https:// (required) */
  unsigned connections;         /* max parallel connections (8) */
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

/* Why an attempt failed.  Counted per kind in struct http_stats. */
enum http_fault {
  HTTP_FAULT_TRANSPORT,         /* connect, reset, TLS, partial body */
  HTTP_FAULT_TIMEOUT,           /* deadline or low-speed limit */
  HTTP_FAULT_STATUS,            /* 4xx/5xx (416 counts as RANGE) */
  HTTP_FAULT_NOT_PARTIAL,       /* 200: Range ignored or If-Range failed */
  HTTP_FAULT_RANGE,             /* 416, missing or wrong Content-Range */
  HTTP_FAULT_LENGTH,            /* body shorter or longer than asked */
  HTTP_FAULT_CHANGED,           /* ETag, Last-Modified or size changed */
  HTTP_FAULT_KINDS
};

struct http_stats {
  uint64_t requests;            /* GETs sent, retries and probe included */
  uint64_t ranges;              /* caller ranges asked for */
  uint64_t head_hits;           /* ranges served (wholly or in part) from the probed head */
  uint64_t coalesced;           /* ranges that rode in another's GET */
  uint64_t bytes_fetched;       /* body bytes of replies that validated */
  uint64_t retries;             /* attempts after the first */
  uint64_t failures;            /* ranges that ended in EIO */
  uint64_t origin_down_events;  /* times the server was marked down */
  uint64_t probes;              /* requests let through to a down server */
  uint64_t fast_failures;       /* transfers failed at once: server down */
  uint64_t refetches;           /* ranges fetched again after a content fault */
  uint64_t faults[HTTP_FAULT_KINDS];
};

/* Fill cfg with the defaults shown above; url is set to NULL. */
void http_config_defaults (struct http_config *cfg);

/* Short lower-case name of a fault kind, e.g. "not-partial". */
const char *http_fault_name (enum http_fault kind);

/* Process-wide libcurl setup: call once from the plugin's .load,
 * before any thread exists.  0, or -1 if libcurl cannot start. */
int http_global_init (void);

/* Undo http_global_init (from .unload, after every source is closed). */
void http_global_cleanup (void);

/* Probe cfg->url and return a source whose size and identity are
 * pinned, or NULL with err set (EIO for network faults, EINVAL for
 * bad configuration).  cfg is copied.  No thread is started. */
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

/* Start the worker thread (from the plugin's .after_fork).  From then
 * on reads are queued to it.  0, or -1 with err set. */
int source_http_start (struct source *src, struct cloop_err *err);

/* The pinned identity; valid until source_close. */
const struct http_identity *source_http_identity (struct source *src);

/* Copy the counters (thread-safe). */
void source_http_get_stats (struct source *src, struct http_stats *stats);

#endif /* CLOOP_HTTP_H */
