/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the HTTP engine — one curl multi handle for every HTTP
 * source of the process, with queues by priority.
 *
 * Submitters append transfers to the incoming list under e->lock and
 * wake the driver.  The driver (the worker thread once started; before
 * that, a caller of http_engine_run, under drive_lock) alone touches
 * the multi handle and the other lists: it moves incoming transfers to
 * the ready queue of their priority (or, for a refetch, to the waiting
 * list until its back-off ends), starts ready ones most urgent first
 * while their origin has a free slot and the engine is under its total,
 * runs libcurl, judges finished attempts (http-xfer.c), parks retries
 * in the waiting list, and calls each transfer's done callback when it
 * has finished for good.
 *
 * Slots.  An origin runs at most cfg.connections transfers at once;
 * background transfers leave one of them free (when there are two or
 * more), so a demand read queued behind them waits for no more than
 * its own transfer; read-ahead may take them all (a demand read then
 * waits for the first of them to end), as it is what a sequential
 * reader's throughput is made of.
 *
 * Trains.  When a transfer starts on an origin whose bandwidth-delay
 * product its bytes are too few to cover (a far mirror: one round trip
 * per GET leaves an HTTP/1.1 connection idle for most of its time), the
 * transfers queued for the bytes that follow it, then for those before
 * it, are taken into the same GET, up to TRAIN_RTTS round trips' worth
 * at that origin's measured rate.  Each of them (a car) completes as
 * soon as its own bytes have arrived, not when the whole GET ends (but
 * the last one, which completes when it does: the engine then holds
 * nothing of the cars' source once they all have completed); if
 * the GET fails, the cars not yet delivered go on in it (retried
 * elsewhere like any transfer) and fail with it.  So a mirror far away
 * takes a large share of a sequential window in few requests, and a
 * near one many small shares: the window is striped over the mirrors
 * by their measured speed.
 *
 * Deadlines.  A transfer's deadline is fixed by its submitter.  Each
 * attempt's CURLOPT_TIMEOUT_MS is the time left, no back-off is
 * scheduled past it, a queued transfer fails when it passes, and the
 * driver reaps any attempt libcurl still holds a second after it.
 *
 * Cancellation.  Every tick (every step while a caller drives the
 * engine itself, before the worker starts) the driver fails the
 * transfers whose source's cancelled callback says their submitter
 * has given up (http.h), wherever they are: a caller driving the
 * engine at start-up is not held for a deadline it no longer wants.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-engine.h"

/* Hedged reads: at most this share of demand attempts, and only on an
 * origin with this many attempt times measured. */
#define HEDGE_BUDGET_PERCENT 5
#define HEDGE_MIN_SAMPLES 20

/* Slack the driver gives libcurl past a deadline before reaping. */
#define REAP_GRACE_NS 1000000000ULL
/* Longest the driver sleeps without looking at its lists. */
#define TICK_MS 250

/* Which list of the engine holds a transfer (http_xfer.where). */
enum { XW_NONE, XW_READY, XW_ACTIVE, XW_WAITING, XW_PARKED, XW_CAR };

/* Trains: a GET carries TRAIN_RTTS round trips' worth of its origin's
 * measured rate (a connection is then busy TRAIN_RTTS / (TRAIN_RTTS +
 * 1) of its time), at most TRAIN_MAX_BYTES and TRAIN_MAX_CARS
 * transfers.  The bound is for a reader that reads in order: the last
 * bytes of a train arrive only after all the others, and when a far
 * mirror holds bytes a reader wants next, the near ones cannot help
 * (over three mirrors of 4 MiB/s a connection, a cap of 8 MiB made a
 * serial copy 10-20% slower than no trains; 2 MiB did not, and kept
 * the parallel copy's gain).  With read-ahead into the disk cache
 * (reader.h), a sequential reader's trains run further ahead of it:
 * 16 round trips up to 4 MiB made the parallel copy 3% faster than 8
 * up to 2 MiB (the far mirror's first byte then takes 20%, not 32%,
 * of its connections' time), and the serial copy no slower. */
#define TRAIN_RTTS 16
#define TRAIN_MAX_BYTES (4 * 1024 * 1024)
#define TRAIN_MAX_CARS 64

/* A train: one GET (x) carrying the ranges of cars[0..n_cars), which
 * follow each other; parts holds every car's parts in order, and
 * car_end[i] is the offset just past car i.  Cars before delivered
 * have completed. */
struct train {
  struct http_xfer x;           /* first: the carrier */
  struct http_xfer *cars[TRAIN_MAX_CARS];
  uint64_t car_end[TRAIN_MAX_CARS];
  size_t car_part[TRAIN_MAX_CARS]; /* index in parts of car i's first */
  size_t n_cars, delivered;
  struct source_range **parts;
  size_t n_parts;
};

/* A hedge: the copy of a slow demand transfer, with its own buffer. */
struct hedge {
  struct http_xfer x;
  struct source_range r;
  struct source_range *part;
};

/* A FIFO of transfers linked through prev/next. */
struct xfer_queue {
  struct http_xfer *head, *tail;
};

struct http_engine {
  unsigned max_total;           /* transfers in flight, all origins */

  pthread_mutex_t lock;
  struct http_xfer *incoming;   /* [lock] submitted, not yet taken */
  struct http_xfer **incoming_tail; /* [lock] */
  bool stopping;                /* [lock] http_engine_free was called */
  bool started;                 /* set once by http_engine_start */
  pthread_t worker;

  /* Held by whoever drives: the worker for each step, or a caller
   * before the engine has started.  Fields below are [drive]. */
  pthread_mutex_t drive_lock;
  CURLM *multi;
  struct xfer_queue ready[FETCH_PRIORITIES];
  struct http_xfer *active;     /* attempts in the multi handle */
  struct http_xfer *waiting;    /* backing off before an attempt */
  unsigned n_active;
  uint64_t demand_attempts;     /* demand attempts started (not hedges) */
  uint64_t demand_waits_ns[2];  /* when the last two clients' reads (not
                                   in_stream) had to wait for a slot,
                                   the older first */
  bool reserve;                 /* this pass keeps a slot for them */
  uint64_t hedges;              /* hedges started */
  uint64_t last_reap_ns;
  CURL **pool;                  /* idle easy handles */
  size_t pool_len, pool_cap;
};

/* ---- Lists -------------------------------------------------------------- */

static void
list_push (struct http_xfer **list, struct http_xfer *x, int where)
{
  x->where = where;
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
  x->where = XW_NONE;
}

static void
queue_append (struct xfer_queue *q, struct http_xfer *x)
{
  x->where = XW_READY;
  x->next = NULL;
  x->prev = q->tail;
  if (q->tail)
    q->tail->next = x;
  else
    q->head = x;
  q->tail = x;
}

static void
queue_prepend (struct xfer_queue *q, struct http_xfer *x)
{
  x->where = XW_READY;
  x->prev = NULL;
  x->next = q->head;
  if (q->head)
    q->head->prev = x;
  else
    q->tail = x;
  q->head = x;
}

static void
queue_remove (struct xfer_queue *q, struct http_xfer *x)
{
  if (x->prev)
    x->prev->next = x->next;
  else
    q->head = x->next;
  if (x->next)
    x->next->prev = x->prev;
  else
    q->tail = x->prev;
  x->prev = x->next = NULL;
  x->where = XW_NONE;
}

/* ---- Easy handle pool --------------------------------------------------- */

static CURL *
pool_get (struct http_engine *e)
{
  if (e->pool_len > 0)
    return e->pool[--e->pool_len];
  return curl_easy_init ();
}

static void
pool_put (struct http_engine *e, CURL *easy)
{
  if (e->pool_len == e->pool_cap) {
    size_t cap = e->pool_cap ? 2 * e->pool_cap : 16;
    CURL **p = realloc (e->pool, cap * sizeof *p);

    if (p == NULL) {
      curl_easy_cleanup (easy);
      return;
    }
    e->pool = p;
    e->pool_cap = cap;
  }
  e->pool[e->pool_len++] = easy;
}

/* ---- Transfers ---------------------------------------------------------- */

/* x has finished for good (x->result set): hand it back.  The driver
 * must not touch x afterwards. */
static void
complete (struct http_xfer *x)
{
  x->done (x);
}

static void
fail_with (struct http_xfer *x, int result, const char *why)
{
  snprintf (x->why, sizeof x->why, "%s", why);
  x->result = result;
  complete (x);
}

static void
fail_now (struct http_xfer *x, const char *why)
{
  fail_with (x, EIO, why);
}

/* Has the submitter of x given up on it (http_config.cancelled)? */
static bool
cancelled (const struct http_xfer *x)
{
  bool (*fn) (void) = x->origins[0]->cfg.cancelled;

  return fn != NULL && fn ();
}

/* Transfers origin o may run at once for a transfer of x's priority:
 * all its connections for a client's read or read-ahead, all but one
 * for background work, except the check of a mirror's copy (a probe):
 * the mirror serves nothing else until it has passed, and its parts
 * (the head, the index) then go out at once rather than one round trip
 * after the other.  (has_slot also keeps one of the engine's slots
 * free of all but client reads.) */
static unsigned
slot_limit (const struct http_xfer *x, const struct http_origin *o)
{
  unsigned c = o->cfg.connections;

  return x->priority != FETCH_BACKGROUND || x->probe || c < 2 ? c : c - 1;
}

/* The engine keeps one slot free of read-ahead and background work
 * when it has at least this many (with fewer, that slot would cost a
 * sequential reader too large a share of its throughput), while
 * clients' reads not in_stream (source.h) keep having to wait for a
 * slot: two of them in the last RESERVE_HOLD_NS.  Not merely while
 * such reads come, nor after one of them: the header and index read at
 * open, and the first read of each stream of a parallel copy (one when
 * it starts, one each time it moves on to another part of the image),
 * then kept a connection idle for a second each time. */
#define RESERVE_FROM 4
#define RESERVE_HOLD_NS 1000000000ULL

/* http_xfer_choose's question: may x start on o now?  Once clients'
 * reads have had to wait for a slot, read-ahead and background work do
 * not take the engine's last free slot (once it has RESERVE_FROM), so
 * that the next such read waits for no transfer at all, even when they
 * hang until their timeout; with one origin, that is its last
 * connection, and with mirrors read-ahead may use all of every mirror's
 * connections but one in all.  A client that reads only what the
 * read-ahead has fetched, or past it in the same stream (a sequential
 * copy), has every slot. */
static bool
has_slot (void *opaque, const struct http_xfer *x, struct http_origin *o)
{
  struct http_engine *e = opaque;
  unsigned total = x->priority != FETCH_DEMAND && e->reserve
                   ? e->max_total - 1 : e->max_total;

  return e->n_active < total && o->active < slot_limit (x, o);
}

static void
fail_deadline (struct http_xfer *x)
{
  char why[sizeof x->why];

  snprintf (why, sizeof why, "%s", x->why);
  snprintf (x->why, sizeof x->why, "deadline of %u s reached%s%.200s",
            x->origins[0]->cfg.timeout, x->attempts ? " after: " : "",
            x->attempts ? why : "");
  x->result = EIO;
  complete (x);
}

/* Start an attempt of x on x->origin, which has a slot and admitted it. */
static void
start_attempt (struct http_engine *e, struct http_xfer *x)
{
  CURL *easy;

  easy = pool_get (e);
  if (easy == NULL) {
    http_xfer_unadmit (x);
    fail_now (x, "curl_easy_init failed");
    return;
  }
  if (http_xfer_setup (x, easy) == -1) {
    http_xfer_unadmit (x);
    pool_put (e, easy);
    x->result = EIO;
    complete (x);
    return;
  }
  if (curl_multi_add_handle (e->multi, easy) != CURLM_OK) {
    http_xfer_unadmit (x);
    pool_put (e, easy);
    fail_now (x, "curl_multi_add_handle failed");
    return;
  }
  list_push (&e->active, x, XW_ACTIVE);
  x->origin->active++;
  e->n_active++;
  if (x->priority == FETCH_DEMAND && x->hedged == NULL)
    e->demand_attempts++;
}

/* ---- Trains ------------------------------------------------------------- */

static void train_done (struct http_xfer *x);

static bool
is_train (const struct http_xfer *x)
{
  return x->done == train_done;
}

/* May x ride in a train: as its first car (lead NULL), or behind lead?
 * A ranged GET of a source's own object that has not been tried yet (no
 * probe, hedge or refetch), of the same source as lead and kept from
 * the same origins (the tail of a cut train: take_tails), still queued
 * and no more urgent than lead (a client's read that chose to wait for
 * a faster origin is not taken to a slower one). */
static bool
can_ride (const struct http_xfer *x, const struct http_xfer *lead,
          uint64_t now)
{
  if (x->probe || x->whole || x->path || x->quick_connect || x->nocache ||
      x->attempts > 0 || x->hedge || x->hedged || is_train (x) ||
      now >= x->deadline_ns)
    return false;
  return lead == NULL ||
    (x->where == XW_READY && x->origins == lead->origins &&
     x->n_origins == lead->n_origins && x->priority >= lead->priority &&
     x->failed_origins == lead->failed_origins);
}

/* How many bytes a GET to o should carry: TRAIN_RTTS round trips at
 * its measured rate (first-byte latency and body rate, per transfer),
 * at most TRAIN_MAX_BYTES; 0 until both are measured or if o is down. */
static uint64_t
train_bytes (struct http_origin *o)
{
  double want;
  bool up;

  pthread_mutex_lock (&o->lock);
  up = endpoint_is_up (&o->health);
  want = TRAIN_RTTS * o->latency_s * o->rate_bps;
  pthread_mutex_unlock (&o->lock);
  if (!up)
    return 0;
  return want < TRAIN_MAX_BYTES ? (uint64_t) want : TRAIN_MAX_BYTES;
}

/* The queued transfer that may ride with lead and starts at offset at
 * (before: ends there), or NULL. */
static struct http_xfer *
find_car (struct http_engine *e, const struct http_xfer *lead, uint64_t at,
          bool before, uint64_t now)
{
  for (int p = lead->priority; p < FETCH_PRIORITIES; p++)
    for (struct http_xfer *y = e->ready[p].head; y; y = y->next)
      if ((before ? y->first + y->length : y->first) == at &&
          can_ride (y, lead, now))
        return y;
  return NULL;
}

/* x, queued and chosen for x->origin (which admitted it), is about to
 * start.  If its bytes are fewer than that origin's train_bytes, it
 * becomes a car of a train with the queued transfers for the bytes
 * that follow it, then for those before it (a client's concurrent
 * reads arrive in any order).  Every car, x included, is taken off its
 * queue (*next, the caller's next transfer in its pass over a queue,
 * moves past them).  Returns what to start: the train's carrier, or
 * x. */
static struct http_xfer *
form_train (struct http_engine *e, struct http_xfer *x,
            struct http_xfer **next, uint64_t now)
{
  struct http_xfer *cars[TRAIN_MAX_CARS];
  uint64_t want = 0, len = x->length, deadline = x->deadline_ns;
  size_t n = 1, n_parts = x->n_parts;
  struct source_range **parts = NULL;
  struct train *tr = NULL;

  cars[0] = x;
  x->where = XW_CAR;            /* still linked; find_car skips cars */
  if (can_ride (x, NULL, now))
    want = train_bytes (x->origin);
  for (int before = 0; before < 2; before++)
    while (len < want && n < TRAIN_MAX_CARS) {
      struct http_xfer *y = before
        ? find_car (e, x, cars[0]->first, true, now)
        : find_car (e, x, cars[n - 1]->first + cars[n - 1]->length, false,
                    now);

      if (y == NULL || len + y->length > TRAIN_MAX_BYTES)
        break;
      y->where = XW_CAR;
      if (before) {             /* cars stay in offset order */
        memmove (&cars[1], &cars[0], n * sizeof cars[0]);
        cars[0] = y;
        n++;
      }
      else
        cars[n++] = y;
      len += y->length;
      n_parts += y->n_parts;
      if (y->deadline_ns < deadline)
        deadline = y->deadline_ns;
    }
  if (n > 1) {
    tr = calloc (1, sizeof *tr);
    parts = tr ? malloc (n_parts * sizeof *parts) : NULL;
    if (parts == NULL) {        /* x alone */
      free (tr);
      tr = NULL;
      for (size_t i = 0; i < n; i++)
        if (cars[i] != x)
          cars[i]->where = XW_READY;
      cars[0] = x;
      n = 1;
    }
  }
  while (*next && (*next)->where == XW_CAR)
    *next = (*next)->next;
  for (size_t i = 0; i < n; i++)
    queue_remove (&e->ready[cars[i]->priority], cars[i]);
  if (tr == NULL)
    return x;
  tr->x = (struct http_xfer) {
    .origins = x->origins, .n_origins = x->n_origins, .origin = x->origin,
    .priority = x->priority, .done = train_done, .opaque = tr,
    .parts = parts, .n_parts = n_parts, .first = cars[0]->first,
    .length = len, .deadline_ns = deadline,
  };
  tr->parts = parts;
  tr->n_parts = n_parts;
  tr->n_cars = n;
  http_debug (x->origin, "bytes=%" PRIu64 "-%" PRIu64 ": %zu reads in one "
              "GET (%" PRIu64 " bytes wanted)", tr->x.first,
              tr->x.first + len - 1, n, want);
  for (size_t i = 0, at = 0; i < n; i++) {
    struct http_xfer *c = cars[i];

    c->where = XW_CAR;
    tr->cars[i] = c;
    tr->car_part[i] = at;
    tr->car_end[i] = c->first + c->length;
    for (size_t k = 0; k < c->n_parts; k++)
      parts[at++] = c->parts[k];
  }
  pthread_mutex_lock (&x->origins[0]->lock);    /* the source's counters */
  x->origins[0]->stats.coalesced += n_parts - x->n_parts;
  pthread_mutex_unlock (&x->origins[0]->lock);
  return &tr->x;
}

/* Complete the cars of train tr whose bytes have all arrived: its
 * carrier's first received bytes (validated as they came: the reply's
 * head was checked, and nothing is stored past what was asked). */
static void
train_deliver (struct train *tr, size_t received)
{
  uint64_t upto = tr->x.first + received;

  while (tr->delivered < tr->n_cars &&
         tr->car_end[tr->delivered] <= upto) {
    struct http_xfer *c = tr->cars[tr->delivered++];

    c->origin = tr->x.origin;
    c->attempts = tr->x.attempts;
    c->received = c->length;
    c->result = 0;
    c->where = XW_NONE;
    complete (c);
  }
}

/* Before the carrier of tr is tried again: it asks only for the cars
 * not delivered yet.  False if there are none (it is done). */
static bool
train_trim (struct train *tr)
{
  size_t k = tr->delivered;

  if (k == tr->n_cars)
    return false;
  tr->x.first = tr->cars[k]->first;
  tr->x.length = tr->car_end[tr->n_cars - 1] - tr->x.first;
  tr->x.parts = tr->parts + tr->car_part[k];
  tr->x.n_parts = tr->n_parts - tr->car_part[k];
  return true;
}

/* The carrier has finished for good: its cars not delivered yet end
 * as it did. */
static void
train_done (struct http_xfer *x)
{
  struct train *tr = x->opaque;

  if (x->result == 0)
    train_deliver (tr, x->length);
  while (tr->delivered < tr->n_cars) {
    struct http_xfer *c = tr->cars[tr->delivered++];

    c->origin = x->origin;
    c->attempts = x->attempts;
    c->fault = x->fault;
    c->result = x->result ? x->result : EIO;
    memcpy (c->why, x->why, sizeof c->why);
    c->where = XW_NONE;
    complete (c);
  }
  free (tr->parts);
  free (tr);
}

/* Deliver the cars of trains in flight whose bytes have arrived, but
 * not the last one: it completes only when the carrier's attempt has
 * ended (end_attempt), because once every car has completed, the
 * callers may close their source and free the origins the carrier
 * still points to. */
static void
deliver_trains (struct http_engine *e)
{
  for (struct http_xfer *x = e->active; x; x = x->next) {
    size_t end = x->cut_at ? x->cut_at : x->length;

    if (is_train (x) && x->checked && end > 0)
      train_deliver (x->opaque, x->received < end ? x->received : end - 1);
  }
}

/* The rate at which attempt x brings its bytes: its origin's measured
 * rate, or less if this attempt has been slower so far (a server that
 * dribbles; judged after its first TAIL_JUDGE_NS); 0 if unknown. */
#define TAIL_JUDGE_NS (200 * UINT64_C (1000000))
static double
attempt_rate (const struct http_xfer *x, uint64_t now)
{
  double rate, seen;

  pthread_mutex_lock (&x->origin->lock);
  rate = x->origin->rate_bps;
  pthread_mutex_unlock (&x->origin->lock);
  if (now > x->started_ns + TAIL_JUDGE_NS) {
    seen = x->received / ((now - x->started_ns) / 1e9);
    if (rate <= 0 || seen < rate)
      rate = seen;
  }
  return rate;
}

/* The endgame of a burst: an origin has a free slot that nothing
 * queued has taken (start_ready has just run: nothing is queued, or a
 * client's read waits for a busier origin it expects to be quicker),
 * while a train on another origin still has bytes to bring that the
 * idle one would bring sooner (a far mirror's last GET, which a reader
 * in order would wait for while the near ones sit idle: "racing the
 * slowest segment").  Cut the train whose rest takes longest at
 * attempt_rate: its cars from the first one past the middle of what it
 * has yet to bring are taken off it and queued again at the head, for
 * any origin but the one they leave (as a hedge is), and its GET ends,
 * as a success, once the bytes of its remaining cars have arrived
 * (http_xfer.cut_at).  Only if some other origin that may serve them
 * has a slot for them and would bring them (first byte, then body at
 * its measured rate) in under three quarters of the time the train
 * would, and not while a slot is kept for clients' reads (reserve).
 * One cut per call; each train is cut at most once. */
static void
take_tails (struct http_engine *e, uint64_t now)
{
  struct http_xfer *best = NULL;
  double best_left = 0;
  size_t k;
  struct train *tr;

  if (e->n_active >= e->max_total || e->reserve)
    return;
  for (struct http_xfer *x = e->active; x; x = x->next) {
    double rate, left;

    if (!is_train (x) || !x->checked || x->cut_at || x->n_origins < 2)
      continue;
    tr = x->opaque;
    if (tr->n_cars - tr->delivered < 2)
      continue;
    rate = attempt_rate (x, now);
    if (rate <= 0)
      continue;
    left = (tr->car_end[tr->n_cars - 1] - x->first - x->received) / rate;
    if (left > best_left) {
      best = x;
      best_left = left;
    }
  }
  if (best == NULL)
    return;
  tr = best->opaque;
  {
    uint64_t at = best->first + best->received;
    uint64_t mid = at + (tr->car_end[tr->n_cars - 1] - at) / 2;
    uint64_t end = tr->car_end[tr->n_cars - 1];
    double rate_here, sooner = 0;

    for (k = tr->delivered + 1; k < tr->n_cars && tr->car_end[k - 1] < mid;
         k++)
      ;
    if (k >= tr->n_cars || tr->car_end[k - 1] <= at)
      return;
    rate_here = attempt_rate (best, now);
    for (size_t i = 0; i < best->n_origins; i++) {
      struct http_origin *o = best->origins[i];
      double t;
      bool up;

      if (o == best->origin || !has_slot (e, tr->cars[k], o))
        continue;
      pthread_mutex_lock (&o->lock);
      up = endpoint_is_up (&o->health) && http_origin_serves (o, best) &&
        o->rate_bps > 0;
      t = up ? o->latency_s + (end - tr->car_end[k - 1]) / o->rate_bps : 0;
      pthread_mutex_unlock (&o->lock);
      if (up && t < 0.75 * (end - at) / rate_here)
        sooner = t;
    }
    if (sooner == 0)
      return;
  }
  best->cut_at = tr->car_end[k - 1] - best->first;
  pthread_mutex_lock (&best->origin->lock);
  best->origin->stats.tails_taken++;
  pthread_mutex_unlock (&best->origin->lock);
  http_debug (best->origin, "bytes=%" PRIu64 "-%" PRIu64 ": %zu reads "
              "given to an idle mirror, the GET ends at %" PRIu64,
              tr->car_end[k - 1], tr->car_end[tr->n_cars - 1] - 1,
              tr->n_cars - k, tr->car_end[k - 1] - 1);
  /* Back to the head of their queues, in offset order. */
  for (size_t i = tr->n_cars; i-- > k; ) {
    struct http_xfer *c = tr->cars[i];

    for (size_t j = 0; j < c->n_origins; j++)
      if (c->origins[j] == best->origin)
        c->failed_origins |= UINT64_C (1) << j;
    c->where = XW_NONE;
    queue_prepend (&e->ready[c->priority], c);
  }
  tr->n_cars = k;
  tr->n_parts = tr->car_part[k];
}

/* Transfer x cannot start now: if it is a client's read not in_stream,
 * count it once among those that had to wait (see RESERVE_FROM). */
static void
demand_waits (struct http_engine *e, struct http_xfer *x, uint64_t now)
{
  if (x->priority != FETCH_DEMAND || x->in_stream || x->waited)
    return;
  x->waited = true;
  e->demand_waits_ns[0] = e->demand_waits_ns[1];
  e->demand_waits_ns[1] = now;
}

/* Start ready transfers, most urgent first, while slots are free; fail
 * those whose deadline passed in the queue. */
static void
start_ready (struct http_engine *e, uint64_t now)
{
  e->reserve = e->max_total >= RESERVE_FROM &&
    now - e->demand_waits_ns[0] < RESERVE_HOLD_NS;
  /* Count afresh, in this pass, the client reads that wait for each
   * busy origin (http_xfer_choose weighs them). */
  for (int p = 0; p < FETCH_PRIORITIES; p++)
    for (struct http_xfer *x = e->ready[p].head; x; x = x->next)
      for (size_t i = 0; i < x->n_origins; i++)
        x->origins[i]->waiters = 0;
  for (int p = 0; p < FETCH_PRIORITIES; p++) {
    struct http_xfer *x, *next;

    for (x = e->ready[p].head; x; x = next) {
      next = x->next;
      if (now >= x->deadline_ns) {
        queue_remove (&e->ready[p], x);
        fail_deadline (x);
        continue;
      }
      if (e->n_active >= e->max_total) {
        demand_waits (e, x, now);
        return;
      }
      switch (http_xfer_choose (x, has_slot, e)) {
      case HTTP_CHOSEN:
        start_attempt (e, form_train (e, x, &next, now));
        break;
      case HTTP_NONE:
        queue_remove (&e->ready[p], x);
        complete (x);
        break;
      case HTTP_WAIT:
        if (x->wait_for)
          x->wait_for->waiters++;
        demand_waits (e, x, now);
        break;
      }
    }
  }
}

/* Take x out of whichever list holds it; an attempt in flight is
 * abandoned (no verdict: it was overtaken). */
static void
detach (struct http_engine *e, struct http_xfer *x)
{
  switch (x->where) {
  case XW_ACTIVE:
    curl_multi_remove_handle (e->multi, x->easy);
    list_remove (&e->active, x);
    x->origin->active--;
    e->n_active--;
    http_xfer_unadmit (x);
    pool_put (e, x->easy);
    x->easy = NULL;
    break;
  case XW_WAITING:
    list_remove (&e->waiting, x);
    break;
  case XW_READY:
    queue_remove (&e->ready[x->priority], x);
    break;
  default:
    x->where = XW_NONE;
  }
}

/* Drop hedge h of a transfer that finished first (or failed for good
 * elsewhere): no callback, h is freed. */
static void
cancel_hedge (struct http_engine *e, struct http_xfer *h)
{
  struct hedge *hg = (struct hedge *) h;

  detach (e, h);
  h->hedged->hedge = NULL;
  free (hg->r.buf);
  free (hg);
}

/* An attempt on easy ended with rc (or was reaped: rc = timeout). */
static void
end_attempt (struct http_engine *e, CURL *easy, CURLcode rc, bool reaped)
{
  struct http_xfer *x = NULL;
  enum http_next next;

  curl_easy_getinfo (easy, CURLINFO_PRIVATE, (char **) &x);
  curl_multi_remove_handle (e->multi, easy);
  list_remove (&e->active, x);
  x->origin->active--;
  e->n_active--;
  next = http_xfer_finish (x, easy, rc, reaped);
  pool_put (e, easy);
  if (is_train (x)) {
    /* Cars whose bytes came before a failure are delivered; a retry
     * asks for the others only. */
    if (x->checked)
      train_deliver (x->opaque, x->received);
    if (next == HTTP_RETRY && !train_trim (x->opaque)) {
      x->result = 0;
      next = HTTP_DONE;
    }
  }
  if (x->hedged && next == HTTP_RETRY) {        /* a hedge has one go */
    x->result = EIO;
    next = HTTP_FAILED;
  }
  if (next == HTTP_RETRY) {
    list_push (&e->waiting, x, XW_WAITING);
    return;
  }
  if (x->hedge) {
    if (next == HTTP_DONE)
      cancel_hedge (e, x->hedge);
    else {                      /* its hedge may still answer */
      x->where = XW_PARKED;
      return;
    }
  }
  complete (x);
}

/* The hedge h has finished (its done callback).  If it got the bytes
 * first, the transfer it hedges is abandoned wherever it is and gets
 * them; else that transfer goes on alone (or, parked after failing,
 * fails now). */
static void
hedge_done (struct http_xfer *h)
{
  struct http_engine *e = h->opaque;
  struct hedge *hg = (struct hedge *) h;
  struct http_xfer *x = h->hedged;

  x->hedge = NULL;
  if (h->result == 0) {
    size_t off = 0;

    detach (e, x);
    for (size_t i = 0; i < x->n_parts && off < h->received; i++) {
      size_t k = x->parts[i]->length;
      if (k > h->received - off)
        k = h->received - off;
      memcpy (x->parts[i]->buf, (unsigned char *) hg->r.buf + off, k);
      off += k;
    }
    x->received = h->received;
    x->origin = h->origin;
    x->result = 0;
    pthread_mutex_lock (&h->origin->lock);
    h->origin->stats.hedges_won++;
    pthread_mutex_unlock (&h->origin->lock);
    complete (x);
  }
  else if (x->where == XW_PARKED) {
    x->where = XW_NONE;
    complete (x);
  }
  free (hg->r.buf);
  free (hg);
}

/* How long a demand transfer on o may run before it is hedged: its
 * 95th percentile attempt time, never below twice the median (both as
 * histogram bucket bounds) nor 10 ms; 0 (never) with too few samples
 * to tell. */
static uint64_t
hedge_after_ns (struct http_origin *o)
{
  double p50, p95;
  uint64_t n;

  pthread_mutex_lock (&o->lock);
  n = o->stats.latency.count;
  p50 = histogram_quantile (&o->stats.latency, 0.5);
  p95 = histogram_quantile (&o->stats.latency, 0.95);
  pthread_mutex_unlock (&o->lock);
  if (n < HEDGE_MIN_SAMPLES)
    return 0;
  if (p95 < 2 * p50)
    p95 = 2 * p50;
  if (p95 < 0.01)
    p95 = 0.01;
  return p95 * 1e9;
}

/* Send a copy of x to another origin (x is overdue there). */
static void
start_hedge (struct http_engine *e, struct http_xfer *x)
{
  struct hedge *hg = calloc (1, sizeof *hg);
  struct http_xfer *h;
  void *buf = malloc (x->length);

  if (hg == NULL || buf == NULL) {
    free (hg);
    free (buf);
    return;
  }
  h = &hg->x;
  hg->r = (struct source_range) { .offset = x->first, .length = x->length,
                                  .buf = buf };
  hg->part = &hg->r;
  *h = (struct http_xfer) {
    .origins = x->origins, .n_origins = x->n_origins,
    .priority = FETCH_DEMAND, .done = hedge_done, .opaque = e,
    .parts = &hg->part, .n_parts = 1, .first = x->first, .length = x->length,
    .deadline_ns = x->deadline_ns, .path = x->path, .whole = x->whole,
    .exact = x->exact, .nocache = x->nocache, .hedged = x,
  };
  /* Anywhere but where x is waiting. */
  for (size_t i = 0; i < x->n_origins; i++)
    if (x->origins[i] == x->origin)
      h->failed_origins = UINT64_C (1) << i;
  if (http_xfer_choose (h, has_slot, e) != HTTP_CHOSEN) {
    free (buf);
    free (hg);
    return;
  }
  x->hedge = h;
  e->hedges++;
  pthread_mutex_lock (&h->origin->lock);
  h->origin->stats.hedges++;
  pthread_mutex_unlock (&h->origin->lock);
  http_debug (h->origin, "bytes=%" PRIu64 "-%" PRIu64 ": slow on %s, "
              "hedged here", x->first, x->first + x->length - 1,
              x->origin->id.url);
  start_attempt (e, h);
}

/* Hedge demand transfers running past their origin's usual time, as
 * long as hedges stay within HEDGE_BUDGET_PERCENT of demand attempts.
 * Returns the ms until the next one could be due (at most wait_ms). */
static long
hedge_slow (struct http_engine *e, uint64_t now, long wait_ms)
{
  for (struct http_xfer *x = e->active; x; x = x->next) {
    uint64_t after, ran = now - x->started_ns;

    if (x->priority != FETCH_DEMAND || x->n_origins < 2 || x->probe ||
        x->hedge || x->hedged || is_train (x))
      continue;
    if ((e->hedges + 1) * 100 >
        (e->demand_attempts + 100 / HEDGE_BUDGET_PERCENT) *
        HEDGE_BUDGET_PERCENT)
      break;
    after = hedge_after_ns (x->origin);
    if (after == 0)
      continue;
    if (ran > after)
      start_hedge (e, x);       /* pushes h at the head: x->next holds */
    else if ((long) ((after - ran) / 1000000) + 1 < wait_ms)
      wait_ms = (after - ran) / 1000000 + 1;
  }
  return wait_ms;
}

/* Reap attempts libcurl holds well past their deadline. */
static void
reap_overdue (struct http_engine *e, uint64_t now)
{
  struct http_xfer *x, *next;

  for (x = e->active; x; x = next) {
    next = x->next;
    if (now > x->deadline_ns + REAP_GRACE_NS)
      end_attempt (e, x->easy, CURLE_OPERATION_TIMEDOUT, true);
  }
}

/* Move retries whose back-off is over to the front of their queue;
 * return ms until the next one is due (at most TICK_MS). */
static long
wake_due_retries (struct http_engine *e, uint64_t now)
{
  struct http_xfer *x, *next;
  long wait_ms = TICK_MS;

  for (x = e->waiting; x; x = next) {
    next = x->next;
    if (x->not_before_ns <= now) {
      list_remove (&e->waiting, x);
      queue_prepend (&e->ready[x->priority], x);
    }
    else if ((long) ((x->not_before_ns - now) / 1000000) < wait_ms)
      wait_ms = (x->not_before_ns - now) / 1000000 + 1;
  }
  return wait_ms;
}

/* Take what was submitted.  Returns true if the engine is stopping. */
static bool
take_incoming (struct http_engine *e)
{
  struct http_xfer *want, *x;
  bool stopping;

  pthread_mutex_lock (&e->lock);
  want = e->incoming;
  e->incoming = NULL;
  e->incoming_tail = &e->incoming;
  stopping = e->stopping;
  pthread_mutex_unlock (&e->lock);
  while ((x = want) != NULL) {
    uint64_t not_before;

    want = x->next;
    if (stopping)
      fail_now (x, "the HTTP engine is stopping");
    else if (cancelled (x))
      fail_with (x, ECANCELED, "interrupted");
    else if (!http_xfer_refetch_allowed (x, &not_before))
      complete (x);
    else if (not_before) {
      x->not_before_ns = not_before;
      list_push (&e->waiting, x, XW_WAITING);
    }
    else
      queue_append (&e->ready[x->priority], x);
  }
  return stopping;
}

/* The first transfer in the engine's lists that pick selects (all if
 * pick is NULL), or NULL. */
static struct http_xfer *
first_held (struct http_engine *e, bool (*pick) (const struct http_xfer *))
{
  struct http_xfer *lists[2] = { e->active, e->waiting };

  for (int l = 0; l < 2; l++)
    for (struct http_xfer *x = lists[l]; x; x = x->next)
      if (pick == NULL || pick (x))
        return x;
  for (int p = 0; p < FETCH_PRIORITIES; p++)
    for (struct http_xfer *x = e->ready[p].head; x; x = x->next)
      if (pick == NULL || pick (x))
        return x;
  return NULL;
}

/* Fail every transfer the driver holds that pick selects (all if pick
 * is NULL) with result and why; attempts in flight are abandoned.  A
 * transfer's hedge goes with it; a failed hedge leaves its transfer
 * alone.  The lists are searched again after each one, as completing
 * a transfer may end others (its batch, its parked partner). */
static void
fail_held (struct http_engine *e, bool (*pick) (const struct http_xfer *),
           int result, const char *why)
{
  struct http_xfer *x;

  while ((x = first_held (e, pick)) != NULL) {
    detach (e, x);
    if (x->hedge)
      cancel_hedge (e, x->hedge);
    fail_with (x, result, why);
  }
}

/* Fail everything the driver holds (the engine is stopping). */
static void
abort_all (struct http_engine *e)
{
  fail_held (e, NULL, EIO, "the HTTP engine is stopping");
}

struct batch;
static size_t batch_pending (struct batch *b);

/* One round of the driver (drive_lock held).  A caller that drives
 * (before the worker starts) passes its batch: the round ends without
 * waiting once that batch is done.  Returns false once the engine is
 * stopping (everything it held has failed). */
static bool
drive_step (struct http_engine *e, struct batch *mine)
{
  struct CURLMsg *msg;
  uint64_t now;
  long wait_ms;
  int running, left;

  if (take_incoming (e)) {
    abort_all (e);
    return false;
  }
  now = http_now_ns ();
  wait_ms = wake_due_retries (e, now);
  start_ready (e, now);
  curl_multi_perform (e->multi, &running);
  deliver_trains (e);
  while ((msg = curl_multi_info_read (e->multi, &left)) != NULL)
    if (msg->msg == CURLMSG_DONE)
      end_attempt (e, msg->easy_handle, msg->data.result, false);
  wait_ms = hedge_slow (e, http_now_ns (), wait_ms);
  if (now - e->last_reap_ns >= (uint64_t) TICK_MS * 1000000) {
    reap_overdue (e, now);
    fail_held (e, cancelled, ECANCELED, "interrupted");
    e->last_reap_ns = now;
  }
  else if (!__atomic_load_n (&e->started, __ATOMIC_ACQUIRE))
    /* A caller drives (start-up): ask at every step, as a signal cuts
     * the poll short. */
    fail_held (e, cancelled, ECANCELED, "interrupted");
  start_ready (e, http_now_ns ());     /* slots that just came free */
  take_tails (e, http_now_ns ());
  start_ready (e, http_now_ns ());     /* what it took, if anything */
  if (mine && batch_pending (mine) == 0)
    return true;
  curl_multi_poll (e->multi, NULL, 0, wait_ms, NULL);
  return true;
}

static void *
worker_main (void *opaque)
{
  struct http_engine *e = opaque;
  bool more = true;

  while (more) {
    pthread_mutex_lock (&e->drive_lock);
    more = drive_step (e, NULL);
    pthread_mutex_unlock (&e->drive_lock);
  }
  return NULL;
}

/* ---- Submitting --------------------------------------------------------- */

/* Hand xs[0..n) to the driver; once the engine is stopping (nothing
 * would take them), fail them here. */
static void
submit (struct http_engine *e, struct http_xfer *xs, size_t n)
{
  bool stopping;

  pthread_mutex_lock (&e->lock);
  stopping = e->stopping;
  for (size_t i = 0; i < n && !stopping; i++) {
    xs[i].next = xs[i].prev = NULL;
    *e->incoming_tail = &xs[i];
    e->incoming_tail = &xs[i].next;
  }
  pthread_mutex_unlock (&e->lock);
  if (stopping)
    for (size_t i = 0; i < n; i++)
      fail_now (&xs[i], "the HTTP engine is stopping");
  else
    curl_multi_wakeup (e->multi);
}

void
http_engine_submit (struct http_engine *e, struct http_xfer *x)
{
  submit (e, x, 1);
}

bool
http_engine_started (struct http_engine *e)
{
  return __atomic_load_n (&e->started, __ATOMIC_ACQUIRE);
}

/* The transfers of one http_engine_run and the caller waiting. */
struct batch {
  pthread_mutex_t lock;
  pthread_cond_t done;
  size_t pending;
};

static void
batch_done (struct http_xfer *x)
{
  struct batch *b = x->opaque;

  pthread_mutex_lock (&b->lock);
  if (--b->pending == 0)
    pthread_cond_broadcast (&b->done);
  pthread_mutex_unlock (&b->lock);
}

static size_t
batch_pending (struct batch *b)
{
  size_t n;

  pthread_mutex_lock (&b->lock);
  n = b->pending;
  pthread_mutex_unlock (&b->lock);
  return n;
}

void
http_engine_run (struct http_engine *e, struct http_xfer *xs, size_t n)
{
  struct batch b = { .pending = n };
  bool driven = false;

  if (n == 0)
    return;
  pthread_mutex_init (&b.lock, NULL);
  pthread_cond_init (&b.done, NULL);
  for (size_t i = 0; i < n; i++) {
    xs[i].done = batch_done;
    xs[i].opaque = &b;
  }
  /* Before the worker exists, drive the engine here. */
  if (!__atomic_load_n (&e->started, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock (&e->drive_lock);
    if (!__atomic_load_n (&e->started, __ATOMIC_ACQUIRE)) {
      driven = true;
      submit (e, xs, n);
      while (batch_pending (&b) > 0 && drive_step (e, &b))
        ;
    }
    pthread_mutex_unlock (&e->drive_lock);
  }
  if (!driven) {
    submit (e, xs, n);
    pthread_mutex_lock (&b.lock);
    while (b.pending > 0)
      pthread_cond_wait (&b.done, &b.lock);
    pthread_mutex_unlock (&b.lock);
  }
  pthread_cond_destroy (&b.done);
  pthread_mutex_destroy (&b.lock);
}

/* ---- Life cycle --------------------------------------------------------- */

struct http_engine *
http_engine_new (unsigned max_connections, struct cloop_err *err)
{
  struct http_engine *e = calloc (1, sizeof *e);

  if (e == NULL) {
    cloop_err_set (err, ENOMEM, "http: calloc: %m");
    return NULL;
  }
  e->max_total = max_connections ? max_connections : 1;
  pthread_mutex_init (&e->lock, NULL);
  pthread_mutex_init (&e->drive_lock, NULL);
  e->incoming_tail = &e->incoming;
  e->multi = curl_multi_init ();
  if (e->multi == NULL) {
    http_engine_free (e);
    cloop_err_set (err, ENOMEM, "http: curl_multi_init failed");
    return NULL;
  }
  /* The engine keeps to max_total itself (libcurl would queue beyond
   * it, out of our order); the connection cache holds that many. */
  curl_multi_setopt (e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                     (long) e->max_total);
  curl_multi_setopt (e->multi, CURLMOPT_MAXCONNECTS, (long) e->max_total);
  curl_multi_setopt (e->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
  return e;
}

int
http_engine_start (struct http_engine *e, struct cloop_err *err)
{
  int r;

  if (e->started)
    return 0;
  r = pthread_create (&e->worker, NULL, worker_main, e);
  if (r != 0) {
    errno = r;
    return cloop_err_set (err, r, "http: pthread_create: %m");
  }
  __atomic_store_n (&e->started, true, __ATOMIC_RELEASE);
  return 0;
}

void
http_engine_stop (struct http_engine *e)
{
  bool was;

  pthread_mutex_lock (&e->lock);
  was = e->stopping;
  e->stopping = true;
  pthread_mutex_unlock (&e->lock);
  if (was)
    return;
  if (e->started) {
    curl_multi_wakeup (e->multi);
    pthread_join (e->worker, NULL);
  }
  else if (e->multi) {
    take_incoming (e);
    abort_all (e);
  }
}

void
http_engine_free (struct http_engine *e)
{
  if (e == NULL)
    return;
  http_engine_stop (e);
  for (size_t i = 0; i < e->pool_len; i++)
    curl_easy_cleanup (e->pool[i]);
  free (e->pool);
  if (e->multi)
    curl_multi_cleanup (e->multi);
  pthread_mutex_destroy (&e->lock);
  pthread_mutex_destroy (&e->drive_lock);
  free (e);
}
