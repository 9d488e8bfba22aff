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

#include <openssl/evp.h>

#include "http.h"

static const struct source_ops http_ops;

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

/* The source: its URL and its mirrors, one origin each.  Every
 * transfer may go to any origin not dropped (http_xfer_choose). */
struct http_source {
  struct source src;            /* must be first */
  struct http_origin *origins[HTTP_ORIGINS_MAX]; /* [0]: url= */
  size_t n_origins;
  struct http_origin *ref;      /* whose probe pinned the object */
  struct http_engine *engine;   /* borrowed, or own_engine */
  struct http_engine *own_engine;
  unsigned char *head;          /* first head_len bytes of the object, */
  size_t head_len;              /* until source_opened */
  /* The same bytes, kept while a mirror that did not answer at open
   * has yet to be checked against them (NULL: none). */
  unsigned char *check_head;
  size_t check_len;
  /* The other ranges the image was parsed from (source_metadata: its
   * index, a trailer...; fetched before source_opened from the
   * reference origin only, or read from a cache): with the head, they
   * are what the image is.  Every other origin's copy of them is
   * checked against their hashes before it serves anything.
   * [probe_lock] */
  struct meta_range *meta;
  size_t n_meta;

  /* Fail-back probes in flight (one per origin at most). */
  pthread_mutex_t probe_lock;
  pthread_cond_t probes_done;
  bool probing[HTTP_ORIGINS_MAX]; /* [probe_lock] */
  unsigned probes;              /* [probe_lock] in flight */
  bool opened;                  /* [probe_lock] source_opened was called
                                   (set atomically: is_opened reads it
                                   without the lock) */
  bool objects_verified;        /* [probe_lock] source_objects_verified */
};

/* A range of the object's metadata, by its hash. */
struct meta_range {
  uint64_t offset;
  size_t length;
  unsigned char sha256[32];
};

/* A fail-back probe: one byte from an origin marked down, or a check of
 * an origin's copy: the head of the object (check_len bytes, into buf)
 * and, once the image was opened, its metadata ranges (n_meta more
 * transfers, into mbuf). */
struct failback {
  struct http_xfer x;
  struct source_range r;
  struct source_range *part;
  unsigned char byte;
  unsigned char *buf;           /* a check's, or NULL */
  struct http_source *hs;
  size_t n_meta;                /* a check's metadata ranges */
  struct http_xfer *mx;
  struct source_range *mr;
  struct source_range **mp;
  unsigned char *mbuf;
  size_t pending;               /* [hs->probe_lock] transfers not done */
};

/* Source-wide counters (ranges asked for, failures...) are kept on the
 * first origin's. */
#define COUNTERS(hs) ((hs)->origins[0])

/* Has source_opened been called?  Read on every pread_many, so without
 * the lock (what it publishes, hs->meta, is written before it). */
static bool
is_opened (struct http_source *hs)
{
  return __atomic_load_n (&hs->opened, __ATOMIC_ACQUIRE);
}

/* ---- Fail-back --------------------------------------------------------- */

static void drop_origin (struct http_origin *o, const char *why);

/* Origin o's copy differs from the pinned one (why): for a source whose
 * objects are verified by their caller (a block store), o serves those;
 * else it is dropped, with one warning naming it.  Before
 * source_opened, the verdict waits there.  Called with probe_lock
 * held. */
static void
set_other_copy (struct http_source *hs, struct http_origin *o,
                const char *why)
{
  pthread_mutex_lock (&o->lock);
  o->other_copy = true;
  o->other_why = why;
  o->unverified = false;
  pthread_mutex_unlock (&o->lock);
  if (!hs->opened)
    http_debug (o, "mirror %s: %s", o->id.url, why);
  else if (hs->objects_verified)
    http_debug (o, "mirror %s: %s: it serves only objects verified by "
                "their hash", o->id.url, why);
  else
    drop_origin (o, why);
}

/* Does the copy of the metadata fetched by check f match?  Returns
 * NULL, or how it differs (static); *failed: some range was not
 * fetched (no answer), *why its reason. */
static const char *
meta_differs (struct http_source *hs, struct failback *f, bool *failed,
              const char **why)
{
  for (size_t k = 0; k < f->n_meta; k++) {
    struct http_xfer *x = &f->mx[k];
    const struct meta_range *m = &hs->meta[k];
    unsigned char md[32];
    unsigned int md_len = 0;

    if (x->result != 0) {
      *failed = true;
      *why = x->why;
      return NULL;
    }
    if (x->range_total != hs->src.size)
      return "its copy has another size";
    if (x->length != m->length ||
        EVP_Digest (f->mr[k].buf, m->length, md, &md_len, EVP_sha256 (),
                    NULL) != 1 || md_len != sizeof md ||
        memcmp (md, m->sha256, sizeof md) != 0)
      return "its copy has another header or index";
  }
  return NULL;
}

/* The check f of origin o (unverified) ended: f->x's result, and the
 * object's first bytes in f->buf, then its metadata (meta_differs).
 * The same size and bytes as the pinned object: o is pinned to it (if
 * it was not yet) and comes into use.  Others: set_other_copy.  No
 * answer: checked again after a back-off (that of its health, if it is
 * down; else doubling like it). */
static void
check_done (struct http_source *hs, struct http_origin *o,
            struct failback *f)
{
  struct http_xfer *x = &f->x;
  struct cloop_err err = { 0 };
  const char *other = NULL, *why = x->why;
  bool failed = x->result != 0;

  if (!failed) {
    if (x->range_total != hs->src.size)
      other = "its copy has another size";
    else if (x->length != hs->check_len ||
             memcmp (f->buf, hs->check_head, hs->check_len) != 0)
      other = "its copy has other bytes";
    else
      other = meta_differs (hs, f, &failed, &why);
  }
  if (failed && other == NULL) {
    uint64_t ms = o->cfg.down_backoff_ms;

    pthread_mutex_lock (&o->lock);
    for (unsigned k = 0; k < o->verify_failures &&
           ms < o->cfg.down_backoff_max_ms; k++)
      ms *= 2;
    if (ms > o->cfg.down_backoff_max_ms)
      ms = o->cfg.down_backoff_max_ms;
    o->verify_failures++;
    o->verify_after_ns = http_now_ns () + ms * 1000000;
    pthread_mutex_unlock (&o->lock);
    http_debug (o, "mirror %s: still no answer (%s): asked again in %"
                PRIu64 " ms", o->id.url, why, ms);
    return;
  }
  pthread_mutex_lock (&hs->probe_lock);
  if (other)
    set_other_copy (hs, o, other);
  else if (o->id.size != 0) {  /* pinned at open: its metadata matches */
    pthread_mutex_lock (&o->lock);
    o->unverified = false;
    pthread_mutex_unlock (&o->lock);
    http_debug (o, "mirror %s: same header and index: in use", o->id.url);
  }
  else if (http_origin_pin (o, x->range_total, x->etag, x->last_modified,
                            &err) == -1)
    drop_origin (o, err.msg);
  else {
    pthread_mutex_lock (&o->lock);
    o->unverified = false;
    pthread_mutex_unlock (&o->lock);
    http_origin_warn (o, "mirror %s answers with the same object: in use",
                      o->id.url);
  }
  pthread_mutex_unlock (&hs->probe_lock);
}

static void
free_failback (struct failback *f)
{
  free (f->buf);
  free (f->mx);
  free (f->mr);
  free (f->mp);
  free (f->mbuf);
  free (f);
}

/* One transfer of a probe or check ended; the last one judges it. */
static void
failback_done (struct http_xfer *x)
{
  struct failback *f = x->opaque;
  struct http_source *hs = f->hs;
  struct http_origin *o = f->x.origins[0];

  pthread_mutex_lock (&hs->probe_lock);
  if (--f->pending > 0) {
    pthread_mutex_unlock (&hs->probe_lock);
    return;
  }
  pthread_mutex_unlock (&hs->probe_lock);
  if (f->buf)
    check_done (hs, o, f);
  pthread_mutex_lock (&hs->probe_lock);
  hs->probing[o->index] = false;
  if (--hs->probes == 0)
    pthread_cond_broadcast (&hs->probes_done);
  pthread_mutex_unlock (&hs->probe_lock);
  free_failback (f);
}

/* Is a fail-back probe of o due now?  *check: it is the check of a
 * copy never seen (the object's head), not a one-byte probe. */
static bool
failback_due (struct http_origin *o, uint64_t now, bool *check)
{
  bool due;

  pthread_mutex_lock (&o->lock);
  *check = o->unverified;
  /* (One with another copy serves only objects: those probe it.) */
  due = !o->dropped && !o->other_copy &&
    endpoint_would_admit (&o->health, now) &&
    (o->unverified ? now >= o->verify_after_ns
                   : !endpoint_is_up (&o->health));
  pthread_mutex_unlock (&o->lock);
  return due;
}

/* A fail-back probe of origin i, or NULL (ENOMEM).  A check also
 * fetches the metadata ranges (all of them once the image is open;
 * probe_lock held by the caller). */
static struct failback *
new_failback (struct http_source *hs, size_t i, bool check, uint64_t now)
{
  struct http_origin *o = hs->origins[i];
  struct failback *f = calloc (1, sizeof *f);
  size_t len = check ? hs->check_len : 1, total = 0;
  uint64_t deadline = now + (uint64_t) o->cfg.timeout * 1000000000;

  if (f == NULL)
    return NULL;
  if (check && (f->buf = malloc (len)) == NULL) {
    free (f);
    return NULL;
  }
  f->hs = hs;
  f->r = (struct source_range) { .offset = 0, .length = len,
                                 .buf = check ? f->buf : &f->byte };
  f->part = &f->r;
  f->x = (struct http_xfer) {
    .origins = &hs->origins[i], .n_origins = 1,
    .priority = FETCH_BACKGROUND, .done = failback_done, .opaque = f,
    .parts = &f->part, .n_parts = 1, .first = 0, .length = len,
    .probe = check, .quick_connect = true, .deadline_ns = deadline,
  };
  f->pending = 1;
  if (!check || hs->n_meta == 0)
    return f;
  f->n_meta = hs->n_meta;
  for (size_t k = 0; k < f->n_meta; k++)
    total += hs->meta[k].length;
  f->mx = calloc (f->n_meta, sizeof *f->mx);
  f->mr = calloc (f->n_meta, sizeof *f->mr);
  f->mp = calloc (f->n_meta, sizeof *f->mp);
  f->mbuf = malloc (total);
  if (f->mx == NULL || f->mr == NULL || f->mp == NULL || f->mbuf == NULL) {
    free_failback (f);
    return NULL;
  }
  for (size_t k = 0, at = 0; k < f->n_meta; k++) {
    const struct meta_range *m = &hs->meta[k];

    f->mr[k] = (struct source_range) { .offset = m->offset,
                                       .length = m->length,
                                       .buf = f->mbuf + at };
    f->mp[k] = &f->mr[k];
    f->mx[k] = f->x;
    f->mx[k].parts = &f->mp[k];
    f->mx[k].first = m->offset;
    f->mx[k].length = m->length;
    at += m->length;
  }
  f->pending += f->n_meta;
  return f;
}

/* With mirrors, an origin marked down whose back-off is over is probed
 * in the background (one byte, checked against its pinned identity),
 * so that it comes back into use as soon as it answers, without a
 * client's read waiting on it.  One that did not answer at open is
 * checked the same way, with the object's first bytes (check_done). */
static void
start_failback_probes (struct http_source *hs)
{
  uint64_t now;
  bool opened;

  if (hs->n_origins < 2 || !http_engine_started (hs->engine))
    return;
  /* A copy is checked once the image is open, against all of its
   * metadata (see http_opened). */
  opened = is_opened (hs);
  now = http_now_ns ();
  for (size_t i = 0; i < hs->n_origins; i++) {
    struct http_origin *o = hs->origins[i];
    struct failback *f;
    bool due, check;

    if (!failback_due (o, now, &check) || (check && !opened))
      continue;
    pthread_mutex_lock (&hs->probe_lock);
    due = !hs->probing[i];
    f = due ? new_failback (hs, i, check, now) : NULL;
    if (f) {
      hs->probing[i] = true;
      hs->probes++;
    }
    pthread_mutex_unlock (&hs->probe_lock);
    if (f == NULL)
      continue;
    http_debug (o, "%s: %s in the background", o->id.url,
                check ? "checking its copy" : "probing it");
    http_engine_submit (hs->engine, &f->x);
    for (size_t k = 0; k < f->n_meta; k++)
      http_engine_submit (hs->engine, &f->mx[k]);
  }
}

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
  struct http_origin *o = COUNTERS (hs);

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
                       hs->src.name, r->length, r->offset, hs->src.size);
      ret = -1;
    }
    else if (r->offset + r->length <= hs->head_len && r->refetch == 0) {
      memcpy (r->buf, hs->head + r->offset, r->length);
      r->endpoint = hs->ref->index;
      hits++;
    }
    else if (r->offset < hs->head_len && r->refetch == 0) {
      size_t in_head = hs->head_len - r->offset;

      memcpy (r->buf, hs->head + r->offset, in_head);
      tails[i] = (struct source_range) {
        .offset = hs->head_len, .length = r->length - in_head,
        .buf = (unsigned char *) r->buf + in_head,
        .priority = r->priority, .deadline_ns = r->deadline_ns,
        .in_stream = r->in_stream,
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

/* Merge sorted ranges into transfers; xs has room for n (ref_only:
 * from the reference origin alone).  Returns the number of
 * transfers. */
static size_t
plan_transfers (struct http_source *hs, struct source_range **want, size_t n,
                struct http_xfer *xs, uint64_t deadline_ns, bool ref_only)
{
  size_t i = 0, n_xs = 0, refetches = 0;

  while (i < n) {
    struct http_xfer *x = &xs[n_xs++];
    size_t j = i + 1, total = want[i]->length;

    while (j < n && want[j - 1]->offset + want[j - 1]->length ==
           want[j]->offset &&
           total + want[j]->length <= hs->ref->cfg.max_coalesce) {
      total += want[j]->length;
      j++;
    }
    x->origins = ref_only ? &hs->origins[hs->ref->index] : hs->origins;
    x->n_origins = ref_only ? 1 : hs->n_origins;
    x->priority = FETCH_PRIORITIES - 1;
    x->in_stream = true;
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
      x->in_stream &= want[k]->in_stream;
    }
    refetches += x->attempts > 0;
    i = j;
  }
  pthread_mutex_lock (&COUNTERS (hs)->lock);
  COUNTERS (hs)->stats.coalesced += n - n_xs;
  COUNTERS (hs)->stats.refetches += refetches;
  pthread_mutex_unlock (&COUNTERS (hs)->lock);
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

    if (x->result == 0) {
      for (j = 0; j < x->n_parts; j++)
        x->parts[j]->endpoint = x->origin->index;
      continue;
    }
    for (j = 0; j < x->n_parts; j++)
      x->parts[j]->status = x->result;
    failed += x->n_parts;
    if (ret == 0 && x->attempts == 0)   /* failed at once: server down */
      cloop_err_set (err, x->result, "http: %s: bytes %" PRIu64 "-%" PRIu64
                     ": %s", x->origin ? x->origin->id.url : hs->src.name,
                     x->first,
                     x->first + x->length - 1,
                     x->why);
    else if (ret == 0)
      cloop_err_set (err, x->result, "http: %s: bytes %" PRIu64 "-%" PRIu64
                     ": %s (%u attempt%s)",
                     x->origin ? x->origin->id.url : hs->src.name, x->first,
                     x->first + x->length - 1, x->why, x->attempts,
                     x->attempts == 1 ? "" : "s");
    ret = -1;
  }
  pthread_mutex_lock (&COUNTERS (hs)->lock);
  COUNTERS (hs)->stats.failures += failed;
  pthread_mutex_unlock (&COUNTERS (hs)->lock);
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
  bool opened;
  int ret;

  want = malloc ((n ? n : 1) * sizeof *want);
  tails = calloc (n ? n : 1, sizeof *tails);
  if (want == NULL || tails == NULL) {
    free (want);
    free (tails);
    return cloop_err_set (err, ENOMEM, "http: malloc: %m");
  }
  start_failback_probes (hs);
  ret = triage_ranges (hs, ranges, n, want, &n_todo, tails, err);
  if (n_todo > 0) {
    xs = calloc (n_todo, sizeof *xs);
    if (xs == NULL) {
      free (want);
      free (tails);
      return cloop_err_set (err, ENOMEM, "http: calloc: %m");
    }
    /* Until the image is open, its metadata is read from the origin
     * that pinned it (the mirrors are checked against it then). */
    opened = is_opened (hs);
    qsort (want, n_todo, sizeof *want, compare_offsets);
    n_xs = plan_transfers (hs, want, n_todo, xs,
                           http_now_ns () +
                           (uint64_t) hs->ref->cfg.timeout * 1000000000,
                           !opened && hs->n_origins > 1);
    http_engine_run (hs->engine, xs, n_xs);
    ret = report (hs, xs, n_xs, err, ret);
    /* A range whose rest was fetched fails with its rest. */
    for (size_t i = 0; i < n; i++)
      if (tails[i].length > 0) {
        ranges[i].status = tails[i].status;
        ranges[i].endpoint = tails[i].endpoint;
      }
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
  uint64_t deadline =
    http_now_ns () + (uint64_t) hs->ref->cfg.timeout * 1000000000;
  int ret = 0;
  bool verified;

  pthread_mutex_lock (&hs->probe_lock);
  verified = hs->objects_verified;
  pthread_mutex_unlock (&hs->probe_lock);
  if (xs == NULL || rs == NULL || parts == NULL) {
    ret = cloop_err_set (err, ENOMEM, "http: calloc: %m");
    goto out;
  }
  start_failback_probes (hs);
  for (size_t i = 0; i < n; i++) {
    if (objs[i].path[0] == '/' || strstr (objs[i].path, "..")) {
      ret = cloop_err_set (err, EINVAL, "http: bad object path %s",
                           objs[i].path);
      goto out;
    }
    rs[i] = (struct source_range) { .length = objs[i].length,
                                    .buf = objs[i].buf };
    parts[i] = &rs[i];
    xs[i] = (struct http_xfer) {
      .origins = hs->origins, .n_origins = hs->n_origins,
      .priority = objs[i].priority, .in_stream = objs[i].in_stream,
      .parts = &parts[i], .n_parts = 1, .first = 0,
      .length = objs[i].length,
      .deadline_ns = objs[i].deadline_ns && objs[i].deadline_ns < deadline
                     ? objs[i].deadline_ns : deadline,
      .path = objs[i].path, .whole = true, .exact = objs[i].exact,
      .verified = verified, .attempts = objs[i].refetch,
    };
  }
  http_engine_run (hs->engine, xs, n);
  size_t failed = 0;
  for (size_t i = 0; i < n; i++) {
    objs[i].status = xs[i].result;
    objs[i].received = xs[i].received;
    objs[i].endpoint = xs[i].result == 0 ? (int) xs[i].origin->index : -1;
    failed += xs[i].result != 0;
    if (xs[i].result != 0 && ret == 0)
      ret = cloop_err_set (err, xs[i].result, "http: %s%s: %s (%u attempt%s)",
                           xs[i].origin ? xs[i].origin->base_url
                                        : hs->ref->base_url,
                           objs[i].path, xs[i].why, xs[i].attempts,
                           xs[i].attempts == 1 ? "" : "s");
  }
  pthread_mutex_lock (&COUNTERS (hs)->lock);
  COUNTERS (hs)->stats.ranges += n;
  COUNTERS (hs)->stats.failures += failed;
  for (size_t i = 0; i < n; i++)
    COUNTERS (hs)->stats.refetches += objs[i].refetch > 0;
  pthread_mutex_unlock (&COUNTERS (hs)->lock);

 out:
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
  pthread_mutex_lock (&hs->probe_lock);
  while (hs->probes > 0)
    pthread_cond_wait (&hs->probes_done, &hs->probe_lock);
  pthread_mutex_unlock (&hs->probe_lock);
  pthread_cond_destroy (&hs->probes_done);
  pthread_mutex_destroy (&hs->probe_lock);
  http_engine_free (hs->own_engine);
  for (size_t i = 0; i < hs->n_origins; i++) {
    http_origin_destroy (hs->origins[i]);
    free (hs->origins[i]);
  }
  free (hs->head);
  free (hs->check_head);
  free (hs->meta);
  free (hs->src.name);
  free (hs);
}

/* Drop origin o for good: it cannot serve this object. */
static void
drop_origin (struct http_origin *o, const char *why)
{
  pthread_mutex_lock (&o->lock);
  o->dropped = true;
  pthread_mutex_unlock (&o->lock);
  http_origin_warn (o, "mirror %s not used: %s", o->id.url, why);
}

/* Origin o did not answer the probe (why): it serves nothing until a
 * later check of its copy (check_done) finds the pinned object. */
static void
set_unverified (struct http_origin *o, const char *why)
{
  pthread_mutex_lock (&o->lock);
  o->unverified = true;
  o->verify_after_ns = http_now_ns () +
    (uint64_t) o->cfg.down_backoff_ms * 1000000;
  pthread_mutex_unlock (&o->lock);
  http_origin_warn (o, "mirror %s did not answer (%s): not used until it "
                    "answers with the same object", o->id.url, why);
}

/* The open-time probe's replies xs (bodies in r) from the n origins,
 * ref's pinning the object: pin each other origin that has the same
 * copy; one with another copy, or no answer, is set aside (*check:
 * some did not answer).  0, or -1 with err set (ENOMEM). */
static int
judge_probes (struct http_source *hs, struct http_xfer *xs,
              const struct source_range *r, size_t n, size_t ref,
              bool *check, struct cloop_err *err)
{
  for (size_t i = 0; i < n; i++) {
    struct http_xfer *x = &xs[i];
    struct http_xfer *rx = &xs[ref];
    const char *other = NULL;

    if (i == ref)
      continue;
    if (x->result != 0) {
      set_unverified (hs->origins[i], x->why);
      *check = true;
      continue;
    }
    if (x->range_total != rx->range_total)
      other = "its copy has another size";
    else if (x->length != rx->length ||
             memcmp (r[i].buf, r[ref].buf, x->length) != 0)
      other = "its copy has other bytes";
    else if (http_origin_pin (hs->origins[i], x->range_total, x->etag,
                              x->last_modified, err) == -1)
      return -1;
    if (other) {
      pthread_mutex_lock (&hs->probe_lock);
      set_other_copy (hs, hs->origins[i], other);
      pthread_mutex_unlock (&hs->probe_lock);
    }
  }
  return 0;
}

/* The open-time probe: bytes=0-65535 from every origin at once.  The
 * first origin in order that answers pins the object (its size, its
 * first bytes); another that answers with another size or other bytes
 * has another copy (set_other_copy: dropped, unless a store's); one
 * that does not answer is kept aside until it does and its copy is
 * checked (set_unverified).  Fails only if none answers. */
static int
probe (struct http_source *hs, struct cloop_err *err)
{
  size_t n = hs->n_origins;
  struct source_range r[HTTP_ORIGINS_MAX];
  struct source_range *parts[HTTP_ORIGINS_MAX];
  struct http_xfer *xs = calloc (n, sizeof *xs);
  unsigned char *bufs = malloc (n * HTTP_HEAD_BYTES);
  size_t ref = n;
  bool check = false;
  int ret = -1;

  if (xs == NULL || bufs == NULL) {
    cloop_err_set (err, ENOMEM, "http: malloc: %m");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    struct http_origin *o = hs->origins[i];
    r[i] = (struct source_range) {
      .offset = 0, .length = HTTP_HEAD_BYTES,
      .buf = bufs + i * HTTP_HEAD_BYTES,
    };
    parts[i] = &r[i];
    xs[i] = (struct http_xfer) {
      .origins = &hs->origins[i], .n_origins = 1,
      .priority = FETCH_DEMAND, .parts = &parts[i], .n_parts = 1,
      .first = 0, .length = HTTP_HEAD_BYTES, .probe = true,
      .quick_connect = n > 1,
      .deadline_ns = http_now_ns () + (uint64_t) o->cfg.timeout * 1000000000,
    };
  }
  http_engine_run (hs->engine, xs, n);
  for (size_t i = 0; i < n && ref == n; i++)
    if (xs[i].result == 0 && (hs->ref->cfg.expect_size == 0 ||
                              xs[i].range_total == hs->ref->cfg.expect_size))
      ref = i;
  if (ref == n && hs->ref->cfg.expect_size) {
    for (size_t i = 0; i < n; i++)
      if (xs[i].result == 0) {
        cloop_err_set (err, EIO, "http: %s: %" PRIu64 " bytes, but the "
                       "mirror list says %" PRIu64, hs->origins[i]->cfg.url,
                       xs[i].range_total, hs->ref->cfg.expect_size);
        goto out;
      }
  }
  if (ref == n) {
    struct http_xfer *x = &xs[0];
    cloop_err_set (err, x->result, "http: %s: %s (%u attempt%s)%s",
                   hs->origins[0]->cfg.url, x->why, x->attempts,
                   x->attempts == 1 ? "" : "s",
                   n > 1 ? "; no mirror answered either" : "");
    goto out;
  }
  if (judge_probes (hs, xs, r, n, ref, &check, err) == -1)
    goto out;
  hs->ref = hs->origins[ref];
  hs->head = malloc (xs[ref].length);
  /* Kept with mirrors: every check of a mirror's copy compares it. */
  check = n > 1;
  if (check)
    hs->check_head = malloc (xs[ref].length);
  if (hs->head == NULL || (check && hs->check_head == NULL)) {
    cloop_err_set (err, ENOMEM, "http: malloc: %m");
    goto out;
  }
  memcpy (hs->head, r[ref].buf, xs[ref].length);
  hs->head_len = xs[ref].length;
  if (check) {
    memcpy (hs->check_head, r[ref].buf, xs[ref].length);
    hs->check_len = xs[ref].length;
  }
  hs->src.size = xs[ref].range_total;
  http_debug (hs->ref, "%s: %zu head bytes kept", hs->ref->cfg.url,
              hs->head_len);
  ret = http_origin_pin (hs->ref, xs[ref].range_total, xs[ref].etag,
                         xs[ref].last_modified, err);
  hs->ref->id.settled = http_validators_settled (xs[ref].date,
                                                 xs[ref].last_modified,
                                                 xs[ref].etag);
 out:
  free (bufs);
  free (xs);
  return ret;
}

/* Allocate a source for cfg (its url and mirrors), not yet pinned to
 * any object. */
static struct http_source *
new_source (const struct http_config *cfg, struct cloop_err *err)
{
  struct http_source *hs = calloc (1, sizeof *hs);

  if (hs == NULL) {
    cloop_err_set (err, ENOMEM, "http: calloc: %m");
    return NULL;
  }
  hs->src.ops = &http_ops;
  pthread_mutex_init (&hs->probe_lock, NULL);
  pthread_cond_init (&hs->probes_done, NULL);
  if (cfg->n_mirrors >= HTTP_ORIGINS_MAX) {
    cloop_err_set (err, EINVAL, "http: %s: %zu mirrors, at most %d",
                   cfg->url ? cfg->url : "(none)", cfg->n_mirrors,
                   HTTP_ORIGINS_MAX - 1);
    goto fail;
  }
  for (size_t i = 0; i <= cfg->n_mirrors; i++) {
    struct http_config c = *cfg;
    struct http_origin *o = calloc (1, sizeof *o);

    if (o == NULL) {
      cloop_err_set (err, ENOMEM, "http: calloc: %m");
      goto fail;
    }
    hs->origins[hs->n_origins++] = o;
    if (i > 0)
      c.url = cfg->mirrors[i - 1];
    o->index = i;
    if (http_origin_init (o, &c, err) == -1)
      goto fail;
  }
  hs->ref = hs->origins[0];
  hs->src.retries = hs->ref->cfg.retries;
  hs->engine = cfg->engine;
  if (hs->engine == NULL) {
    hs->own_engine = http_engine_new (cfg->connections * hs->n_origins, err);
    if (hs->own_engine == NULL)
      goto fail;
    hs->engine = hs->own_engine;
  }
  hs->src.name = strdup (hs->ref->cfg.url);
  if (hs->src.name == NULL) {
    cloop_err_set (err, ENOMEM, "http: out of memory opening %s",
                   hs->ref->cfg.url);
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
  struct http_source *hs;

  if (cfg->n_mirrors > 0)
    return cloop_err_set (err, EINVAL, "http: %s: a pinned identity "
                          "cannot be checked on mirrors", cfg->url), NULL;
  hs = new_source (cfg, err);
  if (hs == NULL)
    return NULL;
  hs->src.size = id->size;
  if (http_origin_pin (hs->ref, id->size, id->etag, id->last_modified,
                       err) == -1) {
    http_close (&hs->src);
    return NULL;
  }
  hs->ref->id.settled = id->settled;
  return &hs->src;
}

const struct http_identity *
source_http_identity (struct source *src)
{
  return &((struct http_source *) src)->ref->id;
}

void
source_http_get_stats (struct source *src, struct http_stats *stats)
{
  struct http_origin *o = ((struct http_source *) src)->origins[0];

  pthread_mutex_lock (&o->lock);
  *stats = o->stats;
  pthread_mutex_unlock (&o->lock);
}

static int
http_endpoint_stats (struct source *src, size_t i, const char **name,
                     struct http_stats *stats)
{
  struct http_source *hs = (struct http_source *) src;
  struct http_origin *o;

  if (i >= hs->n_origins)
    return -1;
  o = hs->origins[i];
  *name = o->id.url;
  pthread_mutex_lock (&o->lock);
  *stats = o->stats;
  pthread_mutex_unlock (&o->lock);
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
  /* The verdict on mirrors with another copy, kept until now. */
  pthread_mutex_lock (&hs->probe_lock);
  __atomic_store_n (&hs->opened, true, __ATOMIC_RELEASE);
  for (size_t i = 0; i < hs->n_origins; i++) {
    struct http_origin *o = hs->origins[i];
    bool other;

    pthread_mutex_lock (&o->lock);
    other = o->other_copy && !o->dropped;
    pthread_mutex_unlock (&o->lock);
    if (other && hs->objects_verified)
      http_debug (o, "mirror %s: its copy differs: it serves only objects "
                  "verified by their hash", o->id.url);
    else if (other)
      drop_origin (o, o->other_why);
    else if (o != hs->ref && hs->n_meta > 0 && !hs->objects_verified) {
      /* Its first bytes matched; the rest of the metadata (an index
       * at the end, say) is checked before it serves anything. */
      pthread_mutex_lock (&o->lock);
      if (!o->dropped && !o->unverified) {
        o->unverified = true;
        o->verify_after_ns = 0;
      }
      pthread_mutex_unlock (&o->lock);
      http_debug (o, "mirror %s: its copy of the header and index is "
                  "checked before it is used", o->id.url);
    }
  }
  pthread_mutex_unlock (&hs->probe_lock);
}

/* The image's metadata, by their hashes, for the checks of mirrors
 * (ranges inside the head are compared with it anyway). */
static int
http_metadata (struct source *src, const struct source_range *ranges,
               size_t n, struct cloop_err *err)
{
  struct http_source *hs = (struct http_source *) src;
  struct meta_range *meta;
  size_t k = 0;

  if (hs->n_origins < 2)
    return 0;
  meta = calloc (n ? n : 1, sizeof *meta);
  if (meta == NULL)
    return cloop_err_set (err, ENOMEM, "http: calloc: %m");
  for (size_t i = 0; i < n; i++) {
    unsigned int md_len = 0;

    if (ranges[i].length == 0 ||
        ranges[i].offset + ranges[i].length <= hs->check_len)
      continue;
    meta[k].offset = ranges[i].offset;
    meta[k].length = ranges[i].length;
    if (EVP_Digest (ranges[i].buf, ranges[i].length, meta[k].sha256,
                    &md_len, EVP_sha256 (), NULL) != 1 ||
        md_len != sizeof meta[k].sha256) {
      free (meta);
      return cloop_err_set (err, EIO, "http: SHA-256 failed");
    }
    k++;
  }
  pthread_mutex_lock (&hs->probe_lock);
  free (hs->meta);
  hs->meta = meta;
  hs->n_meta = k;
  pthread_mutex_unlock (&hs->probe_lock);
  return 0;
}

/* Every object fetched from now on is verified by its caller: mirrors
 * with another copy of the URL's object may serve them. */
static void
http_objects_verified (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;

  pthread_mutex_lock (&hs->probe_lock);
  hs->objects_verified = true;
  pthread_mutex_unlock (&hs->probe_lock);
}

/* A validator no longer matched on the URL whose identity was pinned
 * (a reply said "changed"). */
static bool
http_changed (struct source *src)
{
  struct http_origin *o = ((struct http_source *) src)->ref;
  bool changed;

  pthread_mutex_lock (&o->lock);
  changed = o->stats.faults[HTTP_FAULT_CHANGED] > 0;
  pthread_mutex_unlock (&o->lock);
  return changed;
}

/* A copy from origin i was faulty: count it there and, if there are
 * other origins, bench it for a back-off of down_backoff_ms doubling
 * with each fault in a row (a fault a minute after the last starts
 * again), up to down_backoff_max_ms. */
static void
http_report_faulty (struct source *src, int i)
{
  struct http_source *hs = (struct http_source *) src;
  struct http_origin *o;
  uint64_t now = http_now_ns (), ms;
  bool benched = false;

  if (i < 0 || (size_t) i >= hs->n_origins)
    return;
  o = hs->origins[i];
  pthread_mutex_lock (&o->lock);
  o->stats.content_faults++;
  if (now > o->last_fault_ns + UINT64_C (60000000000))
    o->faults_in_row = 0;
  o->last_fault_ns = now;
  ms = o->cfg.down_backoff_ms;
  for (unsigned k = 0; k < o->faults_in_row && ms < o->cfg.down_backoff_max_ms;
       k++)
    ms *= 2;
  if (ms > o->cfg.down_backoff_max_ms)
    ms = o->cfg.down_backoff_max_ms;
  o->faults_in_row++;
  if (hs->n_origins > 1) {
    benched = now >= o->benched_until_ns;
    o->benched_until_ns = now + ms * 1000000;
    if (benched)
      o->stats.benched++;
  }
  pthread_mutex_unlock (&o->lock);
  if (benched)
    http_debug (o, "%s: served a faulty copy: avoided for %" PRIu64 " ms",
                o->id.url, ms);
}

/* Worth a fetch unless every origin in use is marked down (a probe,
 * when due, is left to a read that needs the bytes). */
static bool
http_available (struct source *src)
{
  struct http_source *hs = (struct http_source *) src;
  bool up = false;

  for (size_t i = 0; i < hs->n_origins && !up; i++) {
    struct http_origin *o = hs->origins[i];
    pthread_mutex_lock (&o->lock);
    up = !o->dropped && !o->unverified && !o->other_copy &&
      endpoint_is_up (&o->health);
    pthread_mutex_unlock (&o->lock);
  }
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
  .objects_verified = http_objects_verified,
  .metadata = http_metadata,
  .report_faulty = http_report_faulty,
  .close = http_close,
};
