/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the HTTP(S) source — open-time probe, pinned identity,
 * and reads split into transfers that run on the engine
 * (http-engine.c).  A reader's ranges are sorted, contiguous ones
 * merged up to max_coalesce, and the transfers handed to the engine
 * together; the reader waits for all of them.  The engine writes into
 * the reader's buffers only until it hands each transfer back, so a
 * reader that returns can never be written to later.
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

/* The source: one origin today (mirrors will make it a list). */
struct http_source {
  struct source src;            /* must be first */
  struct http_origin origin;
  struct http_engine *engine;   /* borrowed, or own_engine */
  struct http_engine *own_engine;
  char *base_url;               /* URL up to its last '/', for objects */
  unsigned char *head;          /* first head_len bytes of the object, */
  size_t head_len;              /* until source_opened */
};

/* ---- Reads -------------------------------------------------------------- */

static int
compare_offsets (const void *a, const void *b)
{
  const struct source_range *ra = *(struct source_range *const *) a;
  const struct source_range *rb = *(struct source_range *const *) b;

  return ra->offset < rb->offset ? -1 : ra->offset > rb->offset;
}

/* Ranges that need no GET: empty, out of bounds, or in the head (the
 * bytes the probe fetched, kept for the format parser until
 * source_opened; a range fetched again after a content fault never
 * comes from there).  Moves the others into want; returns -1 (err set)
 * if any is bad.  A range that begins in the head gets the head's part
 * copied and only its rest, tails[i], is wanted (the format parser's
 * index read usually starts inside the probe). */
static int
triage_ranges (struct http_source *hs, struct source_range *ranges,
               size_t n, struct source_range **want, size_t *n_todo,
               struct source_range *tails, struct cloop_err *err)
{
  size_t i, hits = 0;
  int ret = 0;
  struct http_origin *o = &hs->origin;

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
                       o->id.url, r->length, r->offset, hs->src.size);
      ret = -1;
    }
    else if (r->offset + r->length <= hs->head_len && r->refetch == 0) {
      memcpy (r->buf, hs->head + r->offset, r->length);
      hits++;
    }
    else if (r->offset < hs->head_len && r->refetch == 0) {
      size_t in_head = hs->head_len - r->offset;

      memcpy (r->buf, hs->head + r->offset, in_head);
      tails[i] = (struct source_range) {
        .offset = hs->head_len, .length = r->length - in_head,
        .buf = (unsigned char *) r->buf + in_head,
        .priority = r->priority, .deadline_ns = r->deadline_ns,
      };
      want[(*n_todo)++] = &tails[i];
      hits++;
    }
    else
      want[(*n_todo)++] = r;
  }
  pthread_mutex_lock (&o->lock);
  o->stats.ranges += n;
  o->stats.head_hits += hits;
  pthread_mutex_unlock (&o->lock);
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
           want[j]->offset &&
           total + want[j]->length <= hs->origin.cfg.max_coalesce) {
      total += want[j]->length;
      j++;
    }
    x->origin = &hs->origin;
    x->priority = FETCH_PRIORITIES - 1;
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
      if (want[k]->priority < x->priority)       /* the most urgent */
        x->priority = want[k]->priority;
    }
    refetches += x->attempts > 0;
    i = j;
  }
  pthread_mutex_lock (&hs->origin.lock);
  hs->origin.stats.coalesced += n - n_xs;
  hs->origin.stats.refetches += refetches;
  pthread_mutex_unlock (&hs->origin.lock);
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
                     ": %s", hs->origin.id.url, x->first,
                     x->first + x->length - 1,
                     x->why);
    else if (ret == 0)
      cloop_err_set (err, x->result, "http: %s: bytes %" PRIu64 "-%" PRIu64
                     ": %s (%u attempt%s)", hs->origin.id.url, x->first,
                     x->first + x->length - 1, x->why, x->attempts,
                     x->attempts == 1 ? "" : "s");
    ret = -1;
  }
  pthread_mutex_lock (&hs->origin.lock);
  hs->origin.stats.failures += failed;
  pthread_mutex_unlock (&hs->origin.lock);
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
      free (tails);
      return cloop_err_set (err, ENOMEM, "http: calloc: %m");
    }
    qsort (want, n_todo, sizeof *want, compare_offsets);
    n_xs = plan_transfers (hs, want, n_todo, xs,
                           http_now_ns () +
                           (uint64_t) hs->origin.cfg.timeout * 1000000000);
    http_engine_run (hs->engine, xs, n_xs);
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
  uint64_t deadline =
    http_now_ns () + (uint64_t) hs->origin.cfg.timeout * 1000000000;
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
      .origin = &hs->origin, .priority = objs[i].priority,
      .parts = &parts[i], .n_parts = 1, .first = 0,
      .length = objs[i].length,
      .deadline_ns = objs[i].deadline_ns && objs[i].deadline_ns < deadline
                     ? objs[i].deadline_ns : deadline,
      .url = urls[i], .whole = true, .exact = objs[i].exact,
      .attempts = objs[i].refetch,
    };
  }
  http_engine_run (hs->engine, xs, n);
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
  pthread_mutex_lock (&hs->origin.lock);
  hs->origin.stats.ranges += n;
  hs->origin.stats.failures += failed;
  for (size_t i = 0; i < n; i++)
    hs->origin.stats.refetches += objs[i].refetch > 0;
  pthread_mutex_unlock (&hs->origin.lock);

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

/* ---- Open and close ---------------------------------------------------- */

static void
http_close (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;

  if (hs == NULL)
    return;
  http_engine_free (hs->own_engine);
  http_origin_destroy (&hs->origin);
  free (hs->head);
  free (hs->base_url);
  free (hs->src.name);
  free (hs);
}

/* The open-time probe: bytes=0-65535. */
static int
probe (struct http_source *hs, struct cloop_err *err)
{
  struct source_range r = { .offset = 0, .length = HTTP_HEAD_BYTES };
  struct source_range *parts[1] = { &r };
  struct http_origin *o = &hs->origin;
  struct http_xfer x = {
    .origin = o, .priority = FETCH_DEMAND,
    .parts = parts, .n_parts = 1, .first = 0,
    .length = HTTP_HEAD_BYTES, .probe = true,
    .deadline_ns = http_now_ns () + (uint64_t) o->cfg.timeout * 1000000000,
  };

  hs->head = malloc (HTTP_HEAD_BYTES);
  if (hs->head == NULL)
    return cloop_err_set (err, ENOMEM, "http: malloc: %m");
  r.buf = hs->head;
  http_engine_run (hs->engine, &x, 1);
  if (x.result != 0)
    return cloop_err_set (err, x.result, "http: %s: %s (%u attempt%s)",
                          o->cfg.url, x.why, x.attempts,
                          x.attempts == 1 ? "" : "s");
  hs->head_len = x.length;
  hs->src.size = x.range_total;
  http_debug (o, "%s: %zu head bytes kept", o->cfg.url, hs->head_len);
  return http_origin_pin (o, x.range_total, x.etag, x.last_modified, err);
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
  if (http_origin_init (&hs->origin, cfg, err) == -1)
    goto fail;
  hs->src.retries = hs->origin.cfg.retries;
  hs->engine = cfg->engine;
  if (hs->engine == NULL) {
    hs->own_engine = http_engine_new (cfg->connections, err);
    if (hs->own_engine == NULL)
      goto fail;
    hs->engine = hs->own_engine;
  }
  hs->src.name = strdup (hs->origin.cfg.url);
  hs->base_url = base_url (hs->origin.cfg.url);
  if (hs->src.name == NULL || hs->base_url == NULL) {
    cloop_err_set (err, ENOMEM, "http: out of memory opening %s",
                   hs->origin.cfg.url);
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
  hs->src.size = id->size;
  if (http_origin_pin (&hs->origin, id->size, id->etag, id->last_modified,
                       err) == -1) {
    http_close (&hs->src);
    return NULL;
  }
  return &hs->src;
}

const struct http_identity *
source_http_identity (struct source *src)
{
  return &((struct http_source *) src)->origin.id;
}

void
source_http_get_stats (struct source *src, struct http_stats *stats)
{
  struct http_origin *o = &((struct http_source *) src)->origin;

  pthread_mutex_lock (&o->lock);
  *stats = o->stats;
  pthread_mutex_unlock (&o->lock);
}

static int
http_endpoint_stats (struct source *src, size_t i, const char **name,
                     struct http_stats *stats)
{
  if (i > 0)
    return -1;
  *name = ((struct http_source *) src)->origin.id.url;
  source_http_get_stats (src, stats);
  return 0;
}

/* The format parser is done with the probe's bytes: block reads are
 * fetched for real (a block that fails to decode is refetched, and
 * the counters say what went over the wire).  Called before any
 * reader of the image exists. */
static void
http_opened (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;

  free (hs->head);
  hs->head = NULL;
  hs->head_len = 0;
}

/* A validator no longer matched: a reply said "changed". */
static bool
http_changed (struct source *src)
{
  struct http_origin *o = &((struct http_source *) src)->origin;
  bool changed;

  pthread_mutex_lock (&o->lock);
  changed = o->stats.faults[HTTP_FAULT_CHANGED] > 0;
  pthread_mutex_unlock (&o->lock);
  return changed;
}

/* Worth a fetch unless the server is marked down (a probe, when due,
 * is left to a read that needs the bytes). */
static bool
http_available (struct source *src)
{
  struct http_origin *o = &((struct http_source *) src)->origin;
  bool up;

  pthread_mutex_lock (&o->lock);
  up = endpoint_is_up (&o->health);
  pthread_mutex_unlock (&o->lock);
  return up;
}

static const struct source_ops http_ops = {
  .name = "http",
  .pread = http_pread,
  .pread_many = http_pread_many,
  .get_objects = http_get_objects,
  .available = http_available,
  .endpoint_stats = http_endpoint_stats,
  .changed = http_changed,
  .opened = http_opened,
  .close = http_close,
};
