/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: one HTTP transfer and its origin.  The HTTP fetcher is
 * three files that depend on each other in one direction only:
 *
 *   http.c         the source: open-time probe, pinned identity,
 *                  splitting reads into transfers, waiting for them
 *        |
 *   http-engine.c  the process's one engine: a curl multi handle, the
 *                  queues by priority, connection slots, back-off,
 *                  deadlines; calls each transfer's done callback
 *        |
 *   http-xfer.c    one transfer's attempts on one origin: admission
 *                  by the origin's health, request options, reply
 *                  checking (http-reply.h), the retry decision
 *
 * This header is the bottom one's: the origin (a URL with its pinned
 * identity, health and counters) and the transfer.  Not for use
 * outside fetch/http*.c.
 */
#ifndef CLOOP_HTTP_XFER_H
#define CLOOP_HTTP_XFER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "endpoint.h"
#include "error.h"
#include "http-config.h"
#include "http-reply.h"
#include "source.h"

/* Bytes fetched by the probe at open and kept for the first reads. */
#define HTTP_HEAD_BYTES 65536

/* A probe of an unreachable mirror, and every mirror's probe at open,
 * give up connecting after this. */
#define HTTP_PROBE_CONNECT_MS 3000

/* A source can fetch from this many origins (its URL and mirrors). */
#define HTTP_ORIGINS_MAX 64

/* One origin: a URL with its configuration, the object identity pinned
 * there, its health, its measured speed and its counters.  A source has
 * one per URL (url= and each mirror).  Fields marked [lock] are
 * protected by lock, [drive] belong to whoever drives the engine; the
 * rest are fixed once the identity is pinned. */
struct http_origin {
  struct http_config cfg;       /* string fields point at owned copies */
  struct http_identity id;
  char *base_url;               /* URL up to its last '/', for objects */
  unsigned index;               /* in its source's list (0 = url=) */
  struct curl_slist *headers;   /* If-Range for every ranged GET */
  struct curl_slist *range_nocache_headers; /* the same + no-cache */
  struct curl_slist *nocache_headers; /* no-cache: whole-object refetches */

  pthread_mutex_t lock;
  struct http_stats stats;      /* [lock] */
  struct endpoint_health health;/* [lock] */
  char down_why[160];           /* [lock] what marked it down */
  uint64_t rng;                 /* [lock] jitter state */
  double latency_s;             /* [lock] moving average: first byte */
  double rate_bps;              /* [lock] moving average: body rate */
  bool dropped;                 /* [lock] serves another object: never
                                   used again */
  bool unverified;              /* [lock] did not answer at open: used
                                   for nothing but the probe that checks
                                   its copy, once it answers */
  bool other_copy;              /* [lock] its copy of the object differs
                                   (e.g. another revision of a store's
                                   index): it serves only objects the
                                   caller verifies (http_xfer.verified) */
  const char *other_why;        /* [lock] how it differs (static) */
  uint64_t verify_after_ns;     /* [lock] (unverified) next check no
                                   earlier than this */
  unsigned verify_failures;     /* [lock] (unverified) checks failed */
  /* Redirectors: where the URL, and the folder of objects beside it,
   * were last seen to redirect to (the final URL of a good reply), or
   * NULL to ask the URL itself. */
  char *resolved_url;           /* [drive] */
  char *resolved_base;          /* [drive] */
  uint64_t benched_until_ns;    /* [lock] avoided until then: it served
                                   a faulty copy */
  uint64_t last_fault_ns;       /* [lock] its last faulty copy */
  unsigned faults_in_row;       /* [lock] faulty copies a minute apart
                                   or less */

  unsigned active;              /* [drive] transfers holding a slot */
  unsigned waiters;             /* [drive] client reads ahead in the
                                   engine's current pass over its queue
                                   that chose to wait for a slot here */
};

struct http_xfer;

/* Called once when a transfer has finished for good (x->result set),
 * by the thread driving the engine.  The engine never touches x again;
 * the callback may free it. */
typedef void (*http_done_fn) (struct http_xfer *x);

/* One GET: a range covering one or more contiguous caller ranges, or a
 * whole object.  Set by the submitter: everything above "attempts".
 * Each attempt goes to one of the candidate origins (origin), chosen
 * when it starts: the fastest one measured that has a free slot and has
 * not failed this transfer yet. */
struct http_xfer {
  struct http_origin *const *origins; /* candidates (1 .. HTTP_ORIGINS_MAX) */
  size_t n_origins;
  struct http_origin *origin;   /* of the current or last attempt */
  enum fetch_priority priority;
  http_done_fn done;
  void *opaque;                 /* the submitter's (its batch) */
  struct source_range **parts;  /* caller ranges in offset order */
  size_t n_parts;
  uint64_t first;               /* first byte asked for */
  size_t length;                /* bytes asked for (> 0) */
  uint64_t deadline_ns;         /* CLOCK_MONOTONIC */
  bool in_stream;               /* every part is a client's read in a
                                   sequential stream (source.h) */
  bool probe;                   /* the open-time probe: total unknown */
  bool quick_connect;           /* give up connecting after
                                   HTTP_PROBE_CONNECT_MS (a probe of a
                                   source with mirrors: one that does not
                                   answer is asked again later) */
  const char *path;             /* an object beside the origin's URL
                                   (relative), or NULL for the URL */
  bool whole;                   /* a whole immutable object: plain GET */
  bool exact;                   /* (whole) must be exactly length bytes */
  bool verified;                /* (whole) the caller checks the object
                                   against a hash it trusts: an origin
                                   with another copy of the URL's object
                                   (other_copy) may serve it */
  unsigned attempts;            /* attempts started (or faulty copies
                                   the caller already found) */
  bool waited;                  /* counted by the engine as a client's
                                   read that had to wait for a slot */

  /* State of the current attempt. */
  uint64_t failed_origins;      /* bit i: origins[i] failed this transfer */
  bool nocache;                 /* ask caches in between for a fresh copy */
  long connect_ms;              /* the time the attempt had to connect */
  unsigned hard_faults;         /* 4xx replies seen (retried once) */
  bool fresh;                   /* next attempt on a new connection */
  bool via_resolved;            /* the attempt went to a resolved URL */
  bool re_resolved;             /* ... which failed: asked the URL again */
  uint64_t not_before_ns;       /* back-off: start no earlier */
  uint64_t started_ns;          /* when the attempt started */
  CURL *easy;                   /* during an attempt */

  /* Reply of the current attempt (reset at each status line) and,
   * once its head is checked, the verdict on it (http-reply.h). */
  struct http_reply reply;
  struct http_verdict verdict;
  bool checked;                 /* head validated; body may be stored */
  size_t received;              /* body bytes stored */
  size_t cut_at;                /* if not 0: the attempt ends, and has
                                   succeeded, once this many are stored
                                   (its tail was given to another
                                   origin) */
  size_t cursor_part, cursor_off; /* where the next body byte goes */
  char errbuf[CURL_ERROR_SIZE];

  /* What the probe pins, from its accepted reply. */
  uint64_t range_total;
  char etag[sizeof ((struct http_reply *) 0)->etag];
  char last_modified[sizeof ((struct http_reply *) 0)->last_modified];
  char date[sizeof ((struct http_reply *) 0)->date];

  /* Outcome. */
  enum http_fault fault;        /* of the last failed attempt */
  bool faulted;                 /* the current attempt has failed */
  bool permanent;               /* ... in a way retrying cannot heal */
  bool hard;                    /* ... in a way one retry may heal */
  char why[256];                /* what went wrong, one phrase */
  int result;                   /* 0 or an errno value when finished */

  /* Hedging (http-engine.c): a demand transfer still running past its
   * origin's usual time gets a copy sent to another origin; the first
   * good answer wins, the other is cancelled. */
  struct http_xfer *hedge;      /* [drive] its copy in flight, or NULL */
  struct http_xfer *hedged;     /* [drive] (a copy) the transfer it hedges */
  struct http_origin *wait_for; /* [drive] after HTTP_WAIT: the busy
                                   origin it waits for, or NULL */
  int where;                    /* [drive] which engine list holds it */

  struct http_xfer *prev, *next; /* engine list links */
};

/* What to do after an attempt. */
enum http_next { HTTP_DONE, HTTP_RETRY, HTTP_FAILED };

/* Monotonic clock in nanoseconds. */
uint64_t http_now_ns (void);

/* A warning about origin o (it went down, came back, was dropped): to
 * cfg.warn, else as a debug line. */
void http_origin_warn (const struct http_origin *o, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Debug line about origin o (only with cfg.verbose and cfg.debug set). */
void http_debug (const struct http_origin *o, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Set up o (lock, health, rng) for cfg, copying cfg's strings.  0, or
 * -1 with err set (EINVAL for a bad URL or limits, ENOMEM).  o must be
 * zeroed; http_origin_destroy undoes it, also after a failure. */
int http_origin_init (struct http_origin *o, const struct http_config *cfg,
                      struct cloop_err *err);
void http_origin_destroy (struct http_origin *o);

/* Whether a reply's validators name one version of the object: its
 * Last-Modified is at least a second before its Date (RFC 9110
 * 8.8.2.2: an object changed twice within one second keeps its
 * Last-Modified, and servers such as nginx derive the ETag from it and
 * the size), or it has a strong ETag and no Last-Modified.  Any
 * argument may be NULL or empty (absent). */
bool http_validators_settled (const char *date, const char *last_modified,
                              const char *etag);

/* Pin the object's identity on o and build the If-Range header (a
 * strong ETag, else Last-Modified).  etag/last_modified may be NULL or
 * empty.  0, or -1 with err set (ENOMEM). */
int http_origin_pin (struct http_origin *o, uint64_t size, const char *etag,
                     const char *last_modified, struct cloop_err *err);

/* Before a transfer enters the engine: a refetch after a content fault
 * (x->attempts > 0) fails at once (x->result = EIO) if that spent the
 * retry budget, else is set to go on a fresh connection, past caching
 * proxies (no-cache), after a back-off (*not_before, else 0).  Returns
 * false if x failed. */
bool http_xfer_refetch_allowed (struct http_xfer *x, uint64_t *not_before);

/* May o serve x at all (not dropped, checked, and holding the same
 * copy unless x is verified by its caller)?  o->lock held. */
bool http_origin_serves (const struct http_origin *o,
                         const struct http_xfer *x);

/* Where x's next attempt goes.  The engine passes each origin's free
 * slots through has_slot (called with the drive lock held). */
enum http_choice {
  HTTP_CHOSEN,                  /* x->origin set and admitted: start it */
  HTTP_WAIT,                    /* every usable origin is busy, or (a
                                   client's read) a busy one, with the
                                   reads already waiting for it, is
                                   expected to finish it sooner than a
                                   free one (x->wait_for): later */
  HTTP_NONE,                    /* none is usable (down, dropped, all
                                   failed and out of retries): x failed
                                   (x->result = EIO, x->why set) */
};
enum http_choice http_xfer_choose (struct http_xfer *x,
                                   bool (*has_slot) (void *opaque,
                                                     const struct http_xfer *x,
                                                     struct http_origin *o),
                                   void *opaque);

/* x was admitted by http_xfer_choose but its attempt never started:
 * let another probe go if it was one. */
void http_xfer_unadmit (struct http_xfer *x);

/* Prepare easy (reset, then every option) for x's next attempt and
 * reset x's reply state.  0, or -1 with x->why set. */
int http_xfer_setup (struct http_xfer *x, CURL *easy);

/* Judge the attempt on easy that just ended with rc (reaped: the
 * engine gave up on it at its deadline): count it, tell the origin's
 * health what it learnt, and decide whether x is done, failed for good
 * (x->result, x->why set) or must be retried at x->not_before_ns. */
enum http_next http_xfer_finish (struct http_xfer *x, CURL *easy,
                                 CURLcode rc, bool reaped);

#endif /* CLOOP_HTTP_XFER_H */
