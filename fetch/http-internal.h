/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: internals shared by fetch/http.c (the source, its
 * worker thread) and fetch/http-xfer.c (one ranged GET: request set-up,
 * reply checking through http-reply.h, retry decisions).  Not for use
 * outside fetch/http*.c.
 */
#ifndef CLOOP_HTTP_INTERNAL_H
#define CLOOP_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "endpoint.h"
#include "error.h"
#include "http.h"
#include "http-reply.h"
#include "source.h"

/* Bytes fetched by the probe at open and kept for the first reads. */
#define HTTP_HEAD_BYTES 65536

struct http_xfer;

/* The source.  Fields marked [lock] are protected by lock; [sync] by
 * sync_lock; [worker] are touched only by the worker thread (or by
 * start/close when no worker runs); the rest are fixed after open. */
struct http_source {
  struct source src;            /* must be first */
  struct http_config cfg;       /* string fields point at owned copies */
  struct http_identity id;
  char *base_url;               /* URL up to its last '/', for objects */
  struct curl_slist *headers;   /* If-Range for every ranged GET */
  unsigned char *head;          /* first head_len bytes of the object */
  size_t head_len;

  pthread_mutex_t lock;
  struct http_stats stats;      /* [lock] */
  struct endpoint_health health;/* [lock] the one origin (cfg.url) */
  char down_why[160];           /* [lock] what marked it down */
  uint64_t rng;                 /* [lock] jitter state */

  pthread_mutex_t sync_lock;
  CURL *sync_easy;              /* [sync] reads before the worker starts */

  bool started;                 /* set once by source_http_start */
  bool stopping;                /* [lock] close asked the worker to end */
  struct http_xfer *queue;      /* [lock] submitted, not yet taken */
  struct http_xfer **queue_tail;/* [lock] */
  pthread_t worker;
  CURLM *multi;                 /* [worker] */
  struct http_xfer *active;     /* [worker] in the multi handle */
  struct http_xfer *waiting;    /* [worker] backing off before a retry */
  CURL **pool;                  /* [worker] idle easy handles */
  size_t pool_len, pool_cap;    /* [worker] */
};

/* A batch: the transfers of one pread_many, one waiting caller. */
struct http_batch {
  pthread_cond_t done;          /* signalled when pending reaches 0 */
  size_t pending;               /* [lock] transfers not finished */
};

/* One ranged GET covering one or more contiguous caller ranges. */
struct http_xfer {
  struct http_source *hs;
  struct http_batch *batch;     /* NULL when run synchronously */
  struct source_range **parts;  /* caller ranges in offset order */
  size_t n_parts;
  uint64_t first;               /* first byte asked for */
  size_t length;                /* bytes asked for (> 0) */
  uint64_t deadline_ns;         /* CLOCK_MONOTONIC */
  bool probe;                   /* the open-time probe: total unknown */
  const char *url;              /* another URL than the source's, or NULL */
  bool whole;                   /* a whole immutable object: plain GET */
  bool exact;                   /* (whole) must be exactly length bytes */

  unsigned attempts;            /* attempts started */
  unsigned hard_faults;         /* 4xx replies seen (retried once) */
  bool fresh;                   /* next attempt on a new connection */
  uint64_t not_before_ns;       /* back-off: start no earlier */
  CURL *easy;                   /* during an attempt */

  /* Reply of the current attempt (reset at each status line) and,
   * once its head is checked, the verdict on it (http-reply.h). */
  struct http_reply reply;
  struct http_verdict verdict;
  bool checked;                 /* head validated; body may be stored */
  size_t received;              /* body bytes stored */
  size_t cursor_part, cursor_off; /* where the next body byte goes */
  char errbuf[CURL_ERROR_SIZE];

  /* What the probe pins, from its accepted reply. */
  uint64_t range_total;
  char etag[sizeof ((struct http_reply *) 0)->etag];
  char last_modified[sizeof ((struct http_reply *) 0)->last_modified];

  /* Outcome. */
  enum http_fault fault;        /* of the last failed attempt */
  bool faulted;                 /* the current attempt has failed */
  bool permanent;               /* ... in a way retrying cannot heal */
  bool hard;                    /* ... in a way one retry may heal */
  char why[256];                /* what went wrong, one phrase */
  int result;                   /* 0 or an errno value when finished */

  struct http_xfer *prev, *next; /* list links (queue/active/waiting) */
};

/* What to do after an attempt. */
enum http_next { HTTP_DONE, HTTP_RETRY, HTTP_FAILED };

/* Monotonic clock in nanoseconds. */
uint64_t http_now_ns (void);

/* Debug line (only with cfg.verbose and cfg.debug set). */
void http_debug (struct http_source *hs, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Prepare easy (reset, then every option) for x's next attempt and
 * reset x's reply state.  0, or -1 with x->why set. */
int http_xfer_setup (struct http_xfer *x, CURL *easy);

/* The back-off before x's next attempt (number x->attempts + 1):
 * exponential from cfg.backoff_base_ms, capped, with jitter. */
uint64_t http_xfer_backoff_ns (struct http_xfer *x);

/* Judge the attempt that just ended with rc: count it, and decide
 * whether x is done, failed for good (x->result, x->why set) or must
 * be retried at x->not_before_ns. */
enum http_next http_xfer_finish (struct http_xfer *x, CURLcode rc);

#endif /* CLOOP_HTTP_INTERNAL_H */
