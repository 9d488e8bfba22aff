/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the HTTP(S) source — open-time probe, synchronous
 * reads before the worker starts, and the worker thread that drives a
 * curl multi handle for everyone afterwards.
 *
 * Threads.  Readers split their ranges into transfers (contiguous
 * ranges merged up to max_coalesce), append them to hs->queue under
 * hs->lock, wake the worker with curl_multi_wakeup and sleep on their
 * batch's condition variable.  The worker alone touches the multi
 * handle and the active/waiting lists: it adds queued transfers, runs
 * libcurl, judges finished attempts (http-xfer.c), parks retries in
 * the waiting list until their back-off ends, and counts each
 * transfer off its batch when it finishes for good.
 *
 * Deadlines.  A read's deadline is fixed when it starts (cfg.timeout
 * seconds).  Each attempt's CURLOPT_TIMEOUT_MS is the time left, no
 * back-off is scheduled past it, and the worker reaps any transfer
 * libcurl still holds a second after it, so a reader never waits much
 * longer than timeout.  The worker writes into readers' buffers only
 * until it counts their transfer off, so a reader that returns can
 * never be written to later.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http-internal.h"

/* Slack the worker gives libcurl past a deadline before reaping. */
#define REAP_GRACE_NS 1000000000ULL
/* Longest the worker sleeps without looking at its lists. */
#define WORKER_TICK_MS 250

static const struct source_ops http_ops;

void
http_config_defaults (struct http_config *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  /* 8 connections: enough requests in flight to cover a 20 ms RTT at
   * >= 30 MiB/s with 64 KiB blocks once coalescing merges neighbours,
   * the same number qemu's curl driver uses, and polite to a mirror. */
  cfg->connections = 8;
  cfg->timeout = 30;
  cfg->retries = 4;
  cfg->backoff_base_ms = 100;
  cfg->backoff_max_ms = 2000;
  /* A boot of 20-30 s from a warm cache with the server gone knocks
   * about five times (at 0, 1, 3, 7, 15 s), and notices a server that
   * came back within half a minute. */
  cfg->down_backoff_ms = 1000;
  cfg->down_backoff_max_ms = 30000;
  cfg->low_speed_limit = 1024;
  cfg->low_speed_time = 10;
  cfg->sslverify = true;
  cfg->max_redirects = 5;
  cfg->max_coalesce = 1024 * 1024;
}

const char *
http_fault_name (enum http_fault kind)
{
  static const char *const names[HTTP_FAULT_KINDS] = {
    [HTTP_FAULT_TRANSPORT] = "transport",
    [HTTP_FAULT_TIMEOUT] = "timeout",
    [HTTP_FAULT_STATUS] = "status",
    [HTTP_FAULT_NOT_PARTIAL] = "not-partial",
    [HTTP_FAULT_RANGE] = "range",
    [HTTP_FAULT_LENGTH] = "length",
    [HTTP_FAULT_CHANGED] = "changed",
  };

  return (unsigned) kind < HTTP_FAULT_KINDS ? names[kind] : "unknown";
}

int
http_global_init (void)
{
  return curl_global_init (CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void
http_global_cleanup (void)
{
  curl_global_cleanup ();
}

/* ---- Configuration ------------------------------------------------------ */

/* *dst = a copy of src (NULL stays NULL). */
static int
dup_string (const char **dst, const char *src, struct cloop_err *err)
{
  if (src == NULL)
    return 0;
  *dst = strdup (src);
  if (*dst == NULL)
    return cloop_err_set (err, ENOMEM, "http: strdup: %m");
  return 0;
}

/* Free the strings copy_config duplicated (unset ones are NULL). */
static void
free_config (struct http_config *c)
{
  free ((char *) c->url);
  free ((char *) c->cainfo);
  free ((char *) c->capath);
  free ((char *) c->proxy);
  free ((char *) c->user_agent);
  free ((char *) c->unix_socket_path);
}

static int
copy_config (struct http_config *dst, const struct http_config *src,
             struct cloop_err *err)
{
  *dst = *src;
  dst->url = dst->cainfo = dst->capath = dst->proxy = NULL;
  dst->user_agent = dst->unix_socket_path = NULL;
  if (src->url == NULL || (strncasecmp (src->url, "http://", 7) != 0 &&
                           strncasecmp (src->url, "https://", 8) != 0))
    return cloop_err_set (err, EINVAL, "http: url must start with http:// "
                          "or https://: %s", src->url ? src->url : "(none)");
  if (src->connections == 0 || src->timeout == 0)
    return cloop_err_set (err, EINVAL,
                          "http: connections and timeout must be > 0");
  if (dup_string (&dst->url, src->url, err) == -1 ||
      dup_string (&dst->cainfo, src->cainfo, err) == -1 ||
      dup_string (&dst->capath, src->capath, err) == -1 ||
      dup_string (&dst->proxy, src->proxy, err) == -1 ||
      dup_string (&dst->user_agent, src->user_agent ? src->user_agent
                  : "nbdkit-cloop/" PACKAGE_VERSION, err) == -1 ||
      dup_string (&dst->unix_socket_path, src->unix_socket_path, err) == -1)
    return -1;
  return 0;
}

/* ---- Origin health ------------------------------------------------------ */

/* One line when the server goes down or comes back. */
static void __attribute__ ((format (printf, 2, 3)))
http_warn (struct http_source *hs, const char *fmt, ...)
{
  char line[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  if (hs->cfg.warn)
    hs->cfg.warn ("%s", line);
  else
    http_debug (hs, "%s", line);
}

/* May x make an attempt now?  If the server is marked down and no
 * probe is due, x fails at once (x->result = EIO, x->why set) and
 * false is returned: no connection is tried. */
static bool
admit (struct http_source *hs, struct http_xfer *x)
{
  enum endpoint_admission a;
  uint64_t now = http_now_ns (), next_ms = 0, down_s = 0;
  char why[sizeof hs->down_why];

  pthread_mutex_lock (&hs->lock);
  a = endpoint_admit (&hs->health, x, now);
  if (a == ENDPOINT_PROBE)
    hs->stats.probes++;
  else if (a == ENDPOINT_FAIL_FAST) {
    hs->stats.fast_failures++;
    next_ms = endpoint_ms_to_probe (&hs->health, now);
    down_s = (now - hs->health.down_since_ns) / 1000000000;
    snprintf (why, sizeof why, "%s", hs->down_why);
  }
  pthread_mutex_unlock (&hs->lock);
  if (a == ENDPOINT_PROBE)
    http_debug (hs, "bytes=%" PRIu64 "-%" PRIu64 ": probing the server",
                x->first, x->first + x->length - 1);
  if (a != ENDPOINT_FAIL_FAST)
    return true;
  snprintf (x->why, sizeof x->why, "server unreachable for %" PRIu64
            " s (%.160s), not tried again for %" PRIu64 " ms",
            down_s, why, next_ms);
  x->result = EIO;
  return false;
}

/* x was admitted but made no attempt (set-up failed): if it was the
 * probe, let the next one go. */
static void
unadmit (struct http_source *hs, struct http_xfer *x)
{
  pthread_mutex_lock (&hs->lock);
  endpoint_cancel (&hs->health, x);
  pthread_mutex_unlock (&hs->lock);
}

/* Did the attempt on easy that ended with rc find nobody there?
 * Refused, unresolved, or timed out while still connecting: libcurl
 * had resolved the name, but made no connection and sent no request
 * (a reused connection also has no connect time, but sends one).  A
 * reaped attempt (reaped = true) may have been waiting for a free
 * connection of our own pool: not the server's fault.  Any other
 * fault (a status, a reset, a wrong reply) means it was reached. */
static bool
origin_unreachable (CURL *easy, CURLcode rc, bool reaped)
{
  curl_off_t resolved = 0, connected = 0;
  long sent = 0, heard = 0;

  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
    return true;
  case CURLE_OPERATION_TIMEDOUT:
    if (reaped ||
        curl_easy_getinfo (easy, CURLINFO_NAMELOOKUP_TIME_T,
                           &resolved) != CURLE_OK ||
        curl_easy_getinfo (easy, CURLINFO_CONNECT_TIME_T,
                           &connected) != CURLE_OK ||
        curl_easy_getinfo (easy, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK ||
        curl_easy_getinfo (easy, CURLINFO_HEADER_SIZE, &heard) != CURLE_OK)
      return false;
    return resolved > 0 && connected == 0 && sent == 0 && heard == 0;
  default:
    return false;
  }
}

/* Judge x's attempt on easy (http_xfer_finish) and tell the endpoint
 * what it learnt.  An unreachable server fails x at once: retrying it
 * is the probe's job, after the back-off. */
static enum http_next
finish_attempt (struct http_source *hs, struct http_xfer *x, CURL *easy,
                CURLcode rc, bool reaped)
{
  bool down = origin_unreachable (easy, rc, reaped);
  enum http_next next = http_xfer_finish (x, rc);
  uint64_t now = http_now_ns ();
  bool changed;

  pthread_mutex_lock (&hs->lock);
  if (down) {
    changed = endpoint_report_down (&hs->health, x, now);
    if (changed) {
      hs->stats.origin_down_events++;
      snprintf (hs->down_why, sizeof hs->down_why, "%.159s", x->why);
    }
  }
  else
    changed = endpoint_report_up (&hs->health, x);
  pthread_mutex_unlock (&hs->lock);

  if (down && changed)
    http_warn (hs, "%s: server unreachable (%s): reads of blocks that are "
               "not cached fail at once, and it is tried again after a "
               "back-off of %u ms up to %u ms", hs->id.url, x->why,
               hs->cfg.down_backoff_ms, hs->cfg.down_backoff_max_ms);
  else if (changed)
    http_warn (hs, "%s: server reachable again", hs->id.url);
  if (down && next == HTTP_RETRY) {
    x->result = EIO;
    next = HTTP_FAILED;
  }
  return next;
}

/* A refetch after a content fault (x->attempts already counts the
 * faulty copies): EIO at once if that spent the retry budget, else
 * wait out the back-off first (*not_before, 0 = none) on a fresh
 * connection.  Returns false if x failed. */
static bool
refetch_allowed (struct http_source *hs, struct http_xfer *x,
                 uint64_t *not_before)
{
  *not_before = 0;
  if (x->attempts == 0)
    return true;
  if (x->attempts > hs->cfg.retries) {
    snprintf (x->why, sizeof x->why, "every copy was faulty (%u fetched; "
              "retries=%u)", x->attempts, hs->cfg.retries);
    x->result = EIO;
    return false;
  }
  x->fresh = true;
  *not_before = http_now_ns () + http_xfer_backoff_ns (x);
  return true;
}

/* ---- Synchronous transfers (before the worker starts) ------------------ */

static void
sleep_until (uint64_t when_ns)
{
  struct timespec ts = {
    .tv_sec = when_ns / 1000000000, .tv_nsec = when_ns % 1000000000,
  };

  while (clock_nanosleep (CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

/* Run x to completion on easy, retrying in this thread. */
static void
run_sync_one (struct http_xfer *x, CURL *easy)
{
  struct http_source *hs = x->hs;
  uint64_t not_before;

  if (!refetch_allowed (hs, x, &not_before))
    return;
  if (not_before)
    sleep_until (not_before);
  for (;;) {
    CURLcode rc;

    if (!admit (hs, x))
      return;
    if (http_xfer_setup (x, easy) == -1) {
      unadmit (hs, x);
      x->result = EIO;
      return;
    }
    rc = curl_easy_perform (easy);
    if (finish_attempt (hs, x, easy, rc, false) != HTTP_RETRY)
      return;
    sleep_until (x->not_before_ns);
  }
}

static void
run_sync (struct http_source *hs, struct http_xfer *xs, size_t n)
{
  size_t i;

  pthread_mutex_lock (&hs->sync_lock);
  for (i = 0; i < n; i++)
    run_sync_one (&xs[i], hs->sync_easy);
  pthread_mutex_unlock (&hs->sync_lock);
}

/* ---- The worker --------------------------------------------------------- */

static void
list_push (struct http_xfer **list, struct http_xfer *x)
{
  x->prev = NULL;
  x->next = *list;
  if (*list)
    (*list)->prev = x;
  *list = x;
}

static void
list_remove (struct http_xfer **list, struct http_xfer *x)
{
  if (x->prev)
    x->prev->next = x->next;
  else
    *list = x->next;
  if (x->next)
    x->next->prev = x->prev;
  x->prev = x->next = NULL;
}

static CURL *
pool_get (struct http_source *hs)
{
  if (hs->pool_len > 0)
    return hs->pool[--hs->pool_len];
  return curl_easy_init ();
}

static void
pool_put (struct http_source *hs, CURL *easy)
{
  if (hs->pool_len == hs->pool_cap) {
    size_t cap = hs->pool_cap ? 2 * hs->pool_cap : 16;
    CURL **p = realloc (hs->pool, cap * sizeof *p);

    if (p == NULL) {
      curl_easy_cleanup (easy);
      return;
    }
    hs->pool = p;
    hs->pool_cap = cap;
  }
  hs->pool[hs->pool_len++] = easy;
}

/* x is finished (x->result set): count it off its batch.  The worker
 * must not touch x afterwards: its reader may free it at once. */
static void
complete (struct http_source *hs, struct http_xfer *x)
{
  struct http_batch *b = x->batch;

  pthread_mutex_lock (&hs->lock);
  if (--b->pending == 0)
    pthread_cond_broadcast (&b->done);
  pthread_mutex_unlock (&hs->lock);
}

static void
fail_now (struct http_source *hs, struct http_xfer *x, const char *why)
{
  snprintf (x->why, sizeof x->why, "%s", why);
  x->result = EIO;
  complete (hs, x);
}

static void
start_attempt (struct http_source *hs, struct http_xfer *x)
{
  CURL *easy;

  if (http_now_ns () >= x->deadline_ns) {
    char why[sizeof x->why];

    snprintf (why, sizeof why, "%s", x->why);
    snprintf (x->why, sizeof x->why, "deadline of %u s reached%s%.200s",
              hs->cfg.timeout, x->attempts ? " after: " : "",
              x->attempts ? why : "");
    x->result = EIO;
    complete (hs, x);
    return;
  }
  if (!admit (hs, x)) {
    complete (hs, x);
    return;
  }
  easy = pool_get (hs);
  if (easy == NULL) {
    unadmit (hs, x);
    fail_now (hs, x, "curl_easy_init failed");
    return;
  }
  if (http_xfer_setup (x, easy) == -1) {
    unadmit (hs, x);
    pool_put (hs, easy);
    x->result = EIO;
    complete (hs, x);
    return;
  }
  if (curl_multi_add_handle (hs->multi, easy) != CURLM_OK) {
    unadmit (hs, x);
    pool_put (hs, easy);
    fail_now (hs, x, "curl_multi_add_handle failed");
    return;
  }
  list_push (&hs->active, x);
}

/* An attempt on easy ended with rc (or was reaped: rc = timeout). */
static void
end_attempt (struct http_source *hs, CURL *easy, CURLcode rc, bool reaped)
{
  struct http_xfer *x = NULL;
  enum http_next next;

  curl_easy_getinfo (easy, CURLINFO_PRIVATE, (char **) &x);
  curl_multi_remove_handle (hs->multi, easy);
  list_remove (&hs->active, x);
  next = finish_attempt (hs, x, easy, rc, reaped);
  pool_put (hs, easy);
  if (next == HTTP_RETRY)
    list_push (&hs->waiting, x);
  else
    complete (hs, x);
}

/* Reap transfers libcurl holds well past their deadline (e.g. still
 * queued for a connection). */
static void
reap_overdue (struct http_source *hs, uint64_t now)
{
  struct http_xfer *x, *next;

  for (x = hs->active; x; x = next) {
    next = x->next;
    if (now > x->deadline_ns + REAP_GRACE_NS)
      end_attempt (hs, x->easy, CURLE_OPERATION_TIMEDOUT, true);
  }
}

/* Start retries whose back-off is over; return ms until the next one. */
static long
start_due_retries (struct http_source *hs, uint64_t now)
{
  struct http_xfer *x, *next;
  long wait_ms = WORKER_TICK_MS;

  for (x = hs->waiting; x; x = next) {
    next = x->next;
    if (x->not_before_ns <= now) {
      list_remove (&hs->waiting, x);
      start_attempt (hs, x);
    }
    else if ((long) ((x->not_before_ns - now) / 1000000) < wait_ms)
      wait_ms = (x->not_before_ns - now) / 1000000 + 1;
  }
  return wait_ms;
}

static void
abort_all (struct http_source *hs)
{
  struct http_xfer *x;

  while ((x = hs->active) != NULL) {
    CURL *easy = x->easy;

    curl_multi_remove_handle (hs->multi, easy);
    list_remove (&hs->active, x);
    pool_put (hs, easy);
    fail_now (hs, x, "source closed");
  }
  while ((x = hs->waiting) != NULL) {
    list_remove (&hs->waiting, x);
    fail_now (hs, x, "source closed");
  }
}

static void *
worker_main (void *opaque)
{
  struct http_source *hs = opaque;
  uint64_t last_reap = 0;

  for (;;) {
    struct http_xfer *want, *x;
    struct CURLMsg *msg;
    bool stopping;
    int running, left;
    uint64_t now;
    long wait_ms;

    pthread_mutex_lock (&hs->lock);
    want = hs->queue;
    hs->queue = NULL;
    hs->queue_tail = &hs->queue;
    stopping = hs->stopping;
    pthread_mutex_unlock (&hs->lock);
    while ((x = want) != NULL) {
      uint64_t not_before;

      want = x->next;
      if (stopping)
        fail_now (hs, x, "source closed");
      else if (!refetch_allowed (hs, x, &not_before))
        complete (hs, x);
      else if (not_before) {
        x->not_before_ns = not_before;
        list_push (&hs->waiting, x);
      }
      else
        start_attempt (hs, x);
    }
    if (stopping) {
      abort_all (hs);
      return NULL;
    }

    now = http_now_ns ();
    wait_ms = start_due_retries (hs, now);
    curl_multi_perform (hs->multi, &running);
    while ((msg = curl_multi_info_read (hs->multi, &left)) != NULL)
      if (msg->msg == CURLMSG_DONE)
        end_attempt (hs, msg->easy_handle, msg->data.result, false);
    if (now - last_reap >= (uint64_t) WORKER_TICK_MS * 1000000) {
      reap_overdue (hs, now);
      last_reap = now;
    }
    curl_multi_poll (hs->multi, NULL, 0, wait_ms, NULL);
  }
}

/* Hand xs to the worker and wait until every one has finished. */
static void
run_async (struct http_source *hs, struct http_xfer *xs, size_t n)
{
  struct http_batch batch = { .pending = n };
  size_t i;

  pthread_cond_init (&batch.done, NULL);
  pthread_mutex_lock (&hs->lock);
  for (i = 0; i < n; i++) {
    xs[i].batch = &batch;
    xs[i].next = NULL;
    *hs->queue_tail = &xs[i];
    hs->queue_tail = &xs[i].next;
  }
  pthread_mutex_unlock (&hs->lock);
  curl_multi_wakeup (hs->multi);

  pthread_mutex_lock (&hs->lock);
  while (batch.pending > 0)
    pthread_cond_wait (&batch.done, &hs->lock);
  pthread_mutex_unlock (&hs->lock);
  pthread_cond_destroy (&batch.done);
}

/* ---- Reads -------------------------------------------------------------- */

static int
compare_offsets (const void *a, const void *b)
{
  const struct source_range *ra = *(struct source_range *const *) a;
  const struct source_range *rb = *(struct source_range *const *) b;

  return ra->offset < rb->offset ? -1 : ra->offset > rb->offset;
}

/* Ranges that need no GET: empty, out of bounds, or in the head.
 * Moves the others into want; returns -1 (err set) if any is bad.
 * Before start, a range that begins in the head gets the head's part
 * copied and only its rest, tails[i], is wanted (the format parser's
 * index read usually starts inside the probe). */
static int
triage_ranges (struct http_source *hs, struct source_range *ranges,
               size_t n, struct source_range **want, size_t *n_todo,
               struct source_range *tails, struct cloop_err *err)
{
  size_t i, hits = 0;
  int ret = 0;
  bool started = __atomic_load_n (&hs->started, __ATOMIC_ACQUIRE);

  *n_todo = 0;
  for (i = 0; i < n; i++) {
    struct source_range *r = &ranges[i];

    r->status = 0;
    if (r->length == 0)
      continue;
    if (r->offset > hs->src.size || r->length > hs->src.size - r->offset) {
      r->status = EIO;
      if (ret == 0)
        cloop_err_set (err, EIO, "http: %s: read of %zu bytes at %" PRIu64
                       " is beyond the end (%" PRIu64 " bytes)",
                       hs->id.url, r->length, r->offset, hs->src.size);
      ret = -1;
    }
    else if (r->offset + r->length <= hs->head_len && !started) {
      /* The probe's bytes serve the format parser at start-up only:
       * a block that fails to decode later is refetched for real. */
      memcpy (r->buf, hs->head + r->offset, r->length);
      hits++;
    }
    else if (r->offset < hs->head_len && !started) {
      size_t in_head = hs->head_len - r->offset;

      memcpy (r->buf, hs->head + r->offset, in_head);
      tails[i] = (struct source_range) {
        .offset = hs->head_len, .length = r->length - in_head,
        .buf = (unsigned char *) r->buf + in_head,
        .deadline_ns = r->deadline_ns,
      };
      want[(*n_todo)++] = &tails[i];
      hits++;
    }
    else
      want[(*n_todo)++] = r;
  }
  pthread_mutex_lock (&hs->lock);
  hs->stats.ranges += n;
  hs->stats.head_hits += hits;
  pthread_mutex_unlock (&hs->lock);
  return ret;
}

/* Merge sorted ranges into transfers; xs has room for n.  Returns the
 * number of transfers. */
static size_t
plan_transfers (struct http_source *hs, struct source_range **want, size_t n,
                struct http_xfer *xs, uint64_t deadline_ns)
{
  size_t i = 0, n_xs = 0, refetches = 0;

  while (i < n) {
    struct http_xfer *x = &xs[n_xs++];
    size_t j = i + 1, total = want[i]->length;

    while (j < n && want[j - 1]->offset + want[j - 1]->length ==
           want[j]->offset && total + want[j]->length <= hs->cfg.max_coalesce) {
      total += want[j]->length;
      j++;
    }
    x->hs = hs;
    x->parts = &want[i];
    x->n_parts = j - i;
    x->first = want[i]->offset;
    x->length = total;
    x->deadline_ns = deadline_ns;
    for (size_t k = i; k < j; k++) {
      if (want[k]->deadline_ns && want[k]->deadline_ns < x->deadline_ns)
        x->deadline_ns = want[k]->deadline_ns;
      if (want[k]->refetch > x->attempts)
        x->attempts = want[k]->refetch;
    }
    refetches += x->attempts > 0;
    i = j;
  }
  pthread_mutex_lock (&hs->lock);
  hs->stats.coalesced += n - n_xs;
  hs->stats.refetches += refetches;
  pthread_mutex_unlock (&hs->lock);
  return n_xs;
}

/* Set the callers' statuses; err from the first failure. */
static int
report (struct http_source *hs, struct http_xfer *xs, size_t n,
        struct cloop_err *err, int ret)
{
  size_t i, j, failed = 0;

  for (i = 0; i < n; i++) {
    struct http_xfer *x = &xs[i];

    if (x->result == 0)
      continue;
    for (j = 0; j < x->n_parts; j++)
      x->parts[j]->status = x->result;
    failed += x->n_parts;
    if (ret == 0 && x->attempts == 0)   /* failed at once: server down */
      cloop_err_set (err, x->result, "http: %s: bytes %" PRIu64 "-%" PRIu64
                     ": %s", hs->id.url, x->first, x->first + x->length - 1,
                     x->why);
    else if (ret == 0)
      cloop_err_set (err, x->result, "http: %s: bytes %" PRIu64 "-%" PRIu64
                     ": %s (%u attempt%s)", hs->id.url, x->first,
                     x->first + x->length - 1, x->why, x->attempts,
                     x->attempts == 1 ? "" : "s");
    ret = -1;
  }
  pthread_mutex_lock (&hs->lock);
  hs->stats.failures += failed;
  pthread_mutex_unlock (&hs->lock);
  return ret;
}

static int
http_pread_many (struct source *src, struct source_range *ranges, size_t n,
                 struct cloop_err *err)
{
  struct http_source *hs = (struct http_source *) src;
  struct source_range **want, *tails;
  struct http_xfer *xs = NULL;
  size_t n_todo, n_xs;
  int ret;

  want = malloc ((n ? n : 1) * sizeof *want);
  tails = calloc (n ? n : 1, sizeof *tails);
  if (want == NULL || tails == NULL) {
    free (want);
    free (tails);
    return cloop_err_set (err, ENOMEM, "http: malloc: %m");
  }
  ret = triage_ranges (hs, ranges, n, want, &n_todo, tails, err);
  if (n_todo > 0) {
    xs = calloc (n_todo, sizeof *xs);
    if (xs == NULL) {
      free (want);
      return cloop_err_set (err, ENOMEM, "http: calloc: %m");
    }
    qsort (want, n_todo, sizeof *want, compare_offsets);
    n_xs = plan_transfers (hs, want, n_todo, xs,
                           http_now_ns () +
                           (uint64_t) hs->cfg.timeout * 1000000000);
    if (__atomic_load_n (&hs->started, __ATOMIC_ACQUIRE))
      run_async (hs, xs, n_xs);
    else
      run_sync (hs, xs, n_xs);
    ret = report (hs, xs, n_xs, err, ret);
    /* A range whose rest was fetched fails with its rest. */
    for (size_t i = 0; i < n; i++)
      if (tails[i].length > 0)
        ranges[i].status = tails[i].status;
  }
  free (xs);
  free (want);
  free (tails);
  return ret;
}

/* Fetch whole objects beside the URL (block files of a store): plain
 * GETs, no If-Range (they are immutable and verified by the caller). */
static int
http_get_objects (struct source *src, struct source_object *objs, size_t n,
                  struct cloop_err *err)
{
  struct http_source *hs = (struct http_source *) src;
  struct http_xfer *xs = calloc (n, sizeof *xs);
  struct source_range *rs = calloc (n, sizeof *rs);
  struct source_range **parts = calloc (n, sizeof *parts);
  char **urls = calloc (n, sizeof *urls);
  uint64_t deadline = http_now_ns () + (uint64_t) hs->cfg.timeout * 1000000000;
  int ret = 0;

  if (xs == NULL || rs == NULL || parts == NULL || urls == NULL) {
    ret = cloop_err_set (err, ENOMEM, "http: calloc: %m");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (objs[i].path[0] == '/' ||
        asprintf (&urls[i], "%s%s", hs->base_url, objs[i].path) == -1) {
      urls[i] = NULL;
      ret = cloop_err_set (err, EINVAL, "http: bad object path %s",
                           objs[i].path);
      goto out;
    }
    rs[i] = (struct source_range) { .length = objs[i].length,
                                    .buf = objs[i].buf };
    parts[i] = &rs[i];
    xs[i] = (struct http_xfer) {
      .hs = hs, .parts = &parts[i], .n_parts = 1, .first = 0,
      .length = objs[i].length,
      .deadline_ns = objs[i].deadline_ns && objs[i].deadline_ns < deadline
                     ? objs[i].deadline_ns : deadline,
      .url = urls[i], .whole = true, .exact = objs[i].exact,
      .attempts = objs[i].refetch,
    };
  }
  if (__atomic_load_n (&hs->started, __ATOMIC_ACQUIRE))
    run_async (hs, xs, n);
  else
    run_sync (hs, xs, n);
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    objs[i].status = xs[i].result;
    objs[i].received = xs[i].received;
    failed += xs[i].result != 0;
    if (xs[i].result != 0 && ret == 0)
      ret = cloop_err_set (err, xs[i].result, "http: %s: %s (%u attempt%s)",
                           urls[i], xs[i].why, xs[i].attempts,
                           xs[i].attempts == 1 ? "" : "s");
  }
  pthread_mutex_lock (&hs->lock);
  hs->stats.ranges += n;
  hs->stats.failures += failed;
  for (size_t i = 0; i < n; i++)
    hs->stats.refetches += objs[i].refetch > 0;
  pthread_mutex_unlock (&hs->lock);

 out:
  if (urls)
    for (size_t i = 0; i < n; i++)
      free (urls[i]);
  free (urls);
  free (parts);
  free (rs);
  free (xs);
  return ret;
}

static int
http_pread (struct source *src, void *buf, size_t len, uint64_t offset,
            struct cloop_err *err)
{
  struct source_range r = { .offset = offset, .length = len, .buf = buf };

  return http_pread_many (src, &r, 1, err);
}

/* ---- Open, start, close ------------------------------------------------- */

static void
http_close (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;
  size_t i;

  if (hs == NULL)
    return;
  if (hs->started) {
    pthread_mutex_lock (&hs->lock);
    hs->stopping = true;
    pthread_mutex_unlock (&hs->lock);
    curl_multi_wakeup (hs->multi);
    pthread_join (hs->worker, NULL);
  }
  for (i = 0; i < hs->pool_len; i++)
    curl_easy_cleanup (hs->pool[i]);
  free (hs->pool);
  if (hs->multi)
    curl_multi_cleanup (hs->multi);
  if (hs->sync_easy)
    curl_easy_cleanup (hs->sync_easy);
  curl_slist_free_all (hs->headers);
  pthread_mutex_destroy (&hs->lock);
  pthread_mutex_destroy (&hs->sync_lock);
  free ((char *) hs->id.etag);
  free ((char *) hs->id.last_modified);
  free (hs->head);
  free (hs->base_url);
  free (hs->src.name);
  free_config (&hs->cfg);
  free (hs);
}

/* Pin the object's identity and build the If-Range header: a strong
 * ETag, else Last-Modified (a weak ETag cannot be used).  etag and
 * last_modified may be NULL or empty. */
static int
pin_identity (struct http_source *hs, uint64_t size, const char *etag,
              const char *last_modified, struct cloop_err *err)
{
  const char *validator = NULL;
  char line[320];

  hs->src.size = size;
  hs->id.url = hs->cfg.url;
  hs->id.size = size;
  if (etag && etag[0] && (hs->id.etag = strdup (etag)) == NULL)
    return cloop_err_set (err, ENOMEM, "http: strdup: %m");
  hs->id.etag_weak = hs->id.etag && strncmp (hs->id.etag, "W/", 2) == 0;
  if (last_modified && last_modified[0] &&
      (hs->id.last_modified = strdup (last_modified)) == NULL)
    return cloop_err_set (err, ENOMEM, "http: strdup: %m");
  if (hs->id.etag && !hs->id.etag_weak)
    validator = hs->id.etag;
  else if (hs->id.last_modified)
    validator = hs->id.last_modified;
  if (validator) {
    snprintf (line, sizeof line, "If-Range: %s", validator);
    hs->headers = curl_slist_append (NULL, line);
    if (hs->headers == NULL)
      return cloop_err_set (err, ENOMEM, "http: curl_slist_append failed");
  }
  http_debug (hs, "%s: %" PRIu64 " bytes, ETag %s, Last-Modified %s, "
              "If-Range %s, %zu head bytes kept", hs->id.url, hs->id.size,
              hs->id.etag ? hs->id.etag : "(none)",
              hs->id.last_modified ? hs->id.last_modified : "(none)",
              validator ? validator : "(none)", hs->head_len);
  return 0;
}

/* The open-time probe: bytes=0-65535, synchronously. */
static int
probe (struct http_source *hs, struct cloop_err *err)
{
  struct source_range r = { .offset = 0, .length = HTTP_HEAD_BYTES };
  struct source_range *parts[1] = { &r };
  struct http_xfer x = {
    .hs = hs, .parts = parts, .n_parts = 1, .first = 0,
    .length = HTTP_HEAD_BYTES, .probe = true,
    .deadline_ns = http_now_ns () + (uint64_t) hs->cfg.timeout * 1000000000,
  };

  hs->head = malloc (HTTP_HEAD_BYTES);
  if (hs->head == NULL)
    return cloop_err_set (err, ENOMEM, "http: malloc: %m");
  r.buf = hs->head;
  run_sync_one (&x, hs->sync_easy);
  if (x.result != 0)
    return cloop_err_set (err, x.result, "http: %s: %s (%u attempt%s)",
                          hs->cfg.url, x.why, x.attempts,
                          x.attempts == 1 ? "" : "s");
  hs->head_len = x.length;
  return pin_identity (hs, x.range_total, x.etag, x.last_modified, err);
}

/* The URL up to and including its last '/' (before any query or
 * fragment): where objects named relative to it live.  NULL on ENOMEM. */
static char *
base_url (const char *url)
{
  size_t end = strcspn (url, "?#");
  const char *scheme_end = strstr (url, "://");
  size_t min = scheme_end ? (size_t) (scheme_end - url) + 3 : 0;

  while (end > min && url[end - 1] != '/')
    end--;
  if (end <= min) {             /* "http://host" with no path */
    char *s;
    return asprintf (&s, "%s/", url) == -1 ? NULL : s;
  }
  return strndup (url, end);
}

/* Allocate a source for cfg, not yet pinned to any object. */
static struct http_source *
new_source (const struct http_config *cfg, struct cloop_err *err)
{
  struct http_source *hs = calloc (1, sizeof *hs);

  if (hs == NULL) {
    cloop_err_set (err, ENOMEM, "http: calloc: %m");
    return NULL;
  }
  hs->src.ops = &http_ops;
  pthread_mutex_init (&hs->lock, NULL);
  pthread_mutex_init (&hs->sync_lock, NULL);
  hs->queue_tail = &hs->queue;
  hs->rng = (http_now_ns () ^ (uintptr_t) hs) | 1;
  if (copy_config (&hs->cfg, cfg, err) == -1)
    goto fail;
  hs->src.retries = hs->cfg.retries;
  endpoint_init (&hs->health, hs->cfg.down_backoff_ms,
                 hs->cfg.down_backoff_max_ms);
  hs->src.name = strdup (hs->cfg.url);
  hs->base_url = base_url (hs->cfg.url);
  hs->sync_easy = curl_easy_init ();
  if (hs->src.name == NULL || hs->base_url == NULL || hs->sync_easy == NULL) {
    cloop_err_set (err, ENOMEM, "http: out of memory opening %s",
                   hs->cfg.url);
    goto fail;
  }
  return hs;

 fail:
  http_close (&hs->src);
  return NULL;
}

struct source *
source_open_http (const struct http_config *cfg, struct cloop_err *err)
{
  struct http_source *hs = new_source (cfg, err);

  if (hs == NULL)
    return NULL;
  if (probe (hs, err) == -1) {
    http_close (&hs->src);
    return NULL;
  }
  return &hs->src;
}

struct source *
source_open_http_pinned (const struct http_config *cfg,
                         const struct http_identity *id,
                         struct cloop_err *err)
{
  struct http_source *hs = new_source (cfg, err);

  if (hs == NULL)
    return NULL;
  if (pin_identity (hs, id->size, id->etag, id->last_modified, err) == -1) {
    http_close (&hs->src);
    return NULL;
  }
  return &hs->src;
}

int
source_http_start (struct source *src, struct cloop_err *err)
{
  struct http_source *hs = (struct http_source *) src;
  long conns = hs->cfg.connections;
  int e;

  if (hs->started)
    return 0;
  hs->multi = curl_multi_init ();
  if (hs->multi == NULL)
    return cloop_err_set (err, ENOMEM, "http: curl_multi_init failed");
  curl_multi_setopt (hs->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
  curl_multi_setopt (hs->multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
  curl_multi_setopt (hs->multi, CURLMOPT_MAXCONNECTS, conns);
  curl_multi_setopt (hs->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
  e = pthread_create (&hs->worker, NULL, worker_main, hs);
  if (e != 0) {
    curl_multi_cleanup (hs->multi);
    hs->multi = NULL;
    errno = e;
    return cloop_err_set (err, e, "http: pthread_create: %m");
  }
  __atomic_store_n (&hs->started, true, __ATOMIC_RELEASE);
  return 0;
}

const struct http_identity *
source_http_identity (struct source *src)
{
  return &((struct http_source *) src)->id;
}

void
source_http_get_stats (struct source *src, struct http_stats *stats)
{
  struct http_source *hs = (struct http_source *) src;

  pthread_mutex_lock (&hs->lock);
  *stats = hs->stats;
  pthread_mutex_unlock (&hs->lock);
}

/* Worth a fetch unless the server is marked down (a probe, when due,
 * is left to a read that needs the bytes). */
static bool
http_available (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;
  bool up;

  pthread_mutex_lock (&hs->lock);
  up = endpoint_is_up (&hs->health);
  pthread_mutex_unlock (&hs->lock);
  return up;
}

static const struct source_ops http_ops = {
  .name = "http",
  .pread = http_pread,
  .pread_many = http_pread_many,
  .get_objects = http_get_objects,
  .available = http_available,
  .close = http_close,
};
