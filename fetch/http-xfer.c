/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: one transfer on its origin — the origin's set-up and
 * pinned identity, admission by its health, request options, reply
 * checking and the retry decision.  Nothing here knows about threads
 * or queues: http-engine.c runs each attempt and calls these.
 *
 * A reply's head is checked (by http-reply.c) before its first body
 * byte is stored, so a 200, a wrong Content-Range or a changed ETag
 * never reaches a caller's buffer; body bytes beyond the requested
 * length abort the transfer.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http-xfer.h"

/* The protocols we speak and follow redirects to. */
#define HTTP_PROTOCOLS "http,https"

uint64_t
http_now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
http_debug (const struct http_origin *o, const char *fmt, ...)
{
  char line[512];
  va_list ap;

  if (!o->cfg.verbose || o->cfg.debug == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  o->cfg.debug ("http: %s", line);
}

/* Is o up (its lock not held)? */
static bool
endpoint_is_up_locked (struct http_origin *o)
{
  bool up;

  pthread_mutex_lock (&o->lock);
  up = endpoint_is_up (&o->health);
  pthread_mutex_unlock (&o->lock);
  return up;
}

/* Record why the current attempt failed (the first reason wins). */
static void __attribute__ ((format (printf, 3, 4)))
xfer_fault (struct http_xfer *x, enum http_fault kind, const char *fmt, ...)
{
  va_list ap;

  if (x->faulted)
    return;
  x->faulted = true;
  x->fault = kind;
  va_start (ap, fmt);
  vsnprintf (x->why, sizeof x->why, fmt, ap);
  va_end (ap);
}

/* ---- Reply head and body ----------------------------------------------- */

static size_t
on_header (char *buf, size_t size, size_t nitems, void *opaque)
{
  struct http_xfer *x = opaque;

  http_reply_header (&x->reply, buf, size * nitems);
  return size * nitems;
}

/* What x asks for, in http-reply.h's terms. */
static void
xfer_request (const struct http_xfer *x, struct http_request *req)
{
  const struct http_identity *id = &x->origin->id;

  *req = (struct http_request) {
    .first = x->first, .length = x->length,
    .probe = x->probe, .whole = x->whole, .exact = x->exact,
    .pinned_size = id->size, .pinned_etag = id->etag,
    .pinned_last_modified = id->last_modified,
  };
}

/* Check the status line and headers of the final reply.  0 if body
 * bytes may be stored (the probe's length and pins are then updated),
 * else -1 with the fault recorded. */
static int
check_head (struct http_xfer *x)
{
  struct http_request req;
  struct http_verdict *v = &x->verdict;

  xfer_request (x, &req);
  if (http_reply_check (&req, &x->reply, v) == -1) {
    x->hard = v->hard;
    return xfer_fault (x, v->fault, "%s", v->why), -1;
  }
  if (x->probe) {
    x->length = v->length;
    x->range_total = x->reply.range.total;
    memcpy (x->etag, x->reply.etag, sizeof x->etag);
    memcpy (x->last_modified, x->reply.last_modified,
            sizeof x->last_modified);
    memcpy (x->date, x->reply.date, sizeof x->date);
  }
  return 0;
}

/* Check the body length so far (or, ended, in all). 0 or -1. */
static int
check_body (struct http_xfer *x, size_t received, bool ended)
{
  struct http_request req;

  xfer_request (x, &req);
  if (http_reply_check_body (&req, &x->verdict, received, ended) == -1)
    return xfer_fault (x, x->verdict.fault, "%s", x->verdict.why), -1;
  return 0;
}

static size_t
on_body (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct http_xfer *x = opaque;
  size_t n = size * nmemb, done = 0;

  if (!x->checked) {
    if (check_head (x) == -1)
      return 0;                 /* aborts with CURLE_WRITE_ERROR */
    x->checked = true;
  }
  if (check_body (x, (uint64_t) x->received + n, false) == -1)
    return 0;
  if (x->cut_at && x->received + n > x->cut_at)
    n = x->cut_at - x->received;        /* see judge_attempt */
  while (done < n) {
    struct source_range *r = x->parts[x->cursor_part];
    size_t room = r->length - x->cursor_off;
    size_t k = n - done < room ? n - done : room;

    memcpy ((char *) r->buf + x->cursor_off, ptr + done, k);
    done += k;
    x->cursor_off += k;
    if (x->cursor_off == r->length) {
      x->cursor_part++;
      x->cursor_off = 0;
    }
  }
  x->received += n;
  return n;                     /* short at the cut: aborts the attempt */
}

/* ---- Request set-up ----------------------------------------------------- */

static int
on_curl_debug (CURL *easy, curl_infotype type, char *data, size_t size,
               void *opaque)
{
  struct http_origin *o = opaque;
  const char *tag;

  switch (type) {
  case CURLINFO_TEXT: tag = "*"; break;
  case CURLINFO_HEADER_IN: tag = "<"; break;
  case CURLINFO_HEADER_OUT: tag = ">"; break;
  default: return 0;
  }
  while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
    size--;
  o->cfg.debug ("http: curl %s %.*s", tag, (int) size, data);
  return 0;
}

/* Options that do not depend on the attempt. */
static CURLcode
setup_common (struct http_origin *o, CURL *easy)
{
  const struct http_config *c = &o->cfg;
  CURLcode rc = CURLE_OK;

#define SET(opt, val) \
  do { if (rc == CURLE_OK) rc = curl_easy_setopt (easy, opt, val); } while (0)
  SET (CURLOPT_URL, c->url);
  /* An https:// URL is never followed to plain http://: a redirector
   * must not downgrade what the user asked to be protected by TLS. */
  bool tls_only = strncasecmp (c->url, "https://", 8) == 0;
#if LIBCURL_VERSION_NUM >= 0x075500     /* 7.85.0 */
  SET (CURLOPT_PROTOCOLS_STR, HTTP_PROTOCOLS);
  SET (CURLOPT_REDIR_PROTOCOLS_STR, tls_only ? "https" : HTTP_PROTOCOLS);
#else
  SET (CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SET (CURLOPT_REDIR_PROTOCOLS, tls_only ? (long) CURLPROTO_HTTPS
       : (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SET (CURLOPT_NOSIGNAL, 1L);
  SET (CURLOPT_FOLLOWLOCATION, c->max_redirects > 0 ? 1L : 0L);
  SET (CURLOPT_MAXREDIRS, c->max_redirects);
  SET (CURLOPT_USERAGENT, c->user_agent);
  SET (CURLOPT_SSL_VERIFYPEER, c->sslverify ? 1L : 0L);
  SET (CURLOPT_SSL_VERIFYHOST, c->sslverify ? 2L : 0L);
  if (c->cainfo)
    SET (CURLOPT_CAINFO, c->cainfo);
  if (c->capath)
    SET (CURLOPT_CAPATH, c->capath);
  if (c->proxy)
    SET (CURLOPT_PROXY, c->proxy);
  if (c->unix_socket_path)
    SET (CURLOPT_UNIX_SOCKET_PATH, c->unix_socket_path);
  SET (CURLOPT_LOW_SPEED_LIMIT, c->low_speed_limit);
  SET (CURLOPT_LOW_SPEED_TIME, c->low_speed_time);
  SET (CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
  /* Over https, wait for a connection that may multiplex (HTTP/2 via
   * ALPN) rather than open a new one; plain http is HTTP/1.1 here. */
  SET (CURLOPT_PIPEWAIT, strncasecmp (c->url, "https:", 6) == 0 ? 1L : 0L);
  SET (CURLOPT_TCP_KEEPALIVE, 1L);
  SET (CURLOPT_HTTP_CONTENT_DECODING, 0L);
  SET (CURLOPT_HEADERFUNCTION, on_header);
  SET (CURLOPT_WRITEFUNCTION, on_body);
  if (c->verbose && c->debug) {
    SET (CURLOPT_DEBUGFUNCTION, on_curl_debug);
    SET (CURLOPT_DEBUGDATA, o);
    SET (CURLOPT_VERBOSE, 1L);
  }
#undef SET
  return rc;
}

int
http_xfer_setup (struct http_xfer *x, CURL *easy)
{
  struct http_origin *o = x->origin;
  uint64_t now = http_now_ns (), left_ms;
  char range[64];
  CURLcode rc;

  curl_easy_reset (easy);
  http_reply_reset (&x->reply);
  memset (&x->verdict, 0, sizeof x->verdict);
  x->checked = x->faulted = x->permanent = x->hard = false;
  x->received = x->cursor_part = x->cursor_off = x->cut_at = 0;
  x->errbuf[0] = '\0';
  x->easy = easy;
  left_ms = x->deadline_ns > now ? (x->deadline_ns - now) / 1000000 : 0;
  if (left_ms == 0)
    left_ms = 1;
  snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64,
            x->first, x->first + x->length - 1);

  rc = setup_common (o, easy);
#define SET(opt, val) \
  do { if (rc == CURLE_OK) rc = curl_easy_setopt (easy, opt, val); } while (0)
  /* A redirector is asked once; its final URL is reused (x->probe: a
   * check of the URL itself). */
  x->via_resolved = false;
  if (x->path) {                /* libcurl copies the string */
    char *url;
    x->via_resolved = o->resolved_base != NULL;
    if (asprintf (&url, "%s%s", x->via_resolved ? o->resolved_base
                  : o->base_url, x->path) == -1) {
      snprintf (x->why, sizeof x->why, "out of memory");
      return -1;
    }
    SET (CURLOPT_URL, url);
    free (url);
  }
  else if (o->resolved_url && !x->probe) {
    x->via_resolved = true;
    SET (CURLOPT_URL, o->resolved_url);
  }
  if (!x->whole)
    SET (CURLOPT_RANGE, range);
  SET (CURLOPT_TIMEOUT_MS, (long) left_ms);
  x->connect_ms = (long) left_ms;
  /* If-Range pins the object on ranged GETs; a refetch after a content
   * fault asks caching proxies for a fresh copy, so a poisoned cache
   * cannot hand back the same bad bytes. */
  if (!x->probe && !x->whole)
    SET (CURLOPT_HTTPHEADER, x->nocache ? o->range_nocache_headers
                                        : o->headers);
  else if (x->nocache)
    SET (CURLOPT_HTTPHEADER, o->nocache_headers);
  SET (CURLOPT_HEADERDATA, x);
  SET (CURLOPT_WRITEDATA, x);
  SET (CURLOPT_PRIVATE, x);
  SET (CURLOPT_ERRORBUFFER, x->errbuf);
  SET (CURLOPT_FRESH_CONNECT, x->fresh ? 1L : 0L);
  /* A probe of a server that was unreachable gives up connecting soon:
   * with mirrors, the transfer goes on elsewhere. */
  if (x->quick_connect || (x->n_origins > 1 && !endpoint_is_up_locked (o))) {
    SET (CURLOPT_CONNECTTIMEOUT_MS, (long) HTTP_PROBE_CONNECT_MS);
    if (x->connect_ms > HTTP_PROBE_CONNECT_MS)
      x->connect_ms = HTTP_PROBE_CONNECT_MS;
  }
#undef SET
  if (rc != CURLE_OK) {
    snprintf (x->why, sizeof x->why, "cannot set up libcurl: %s",
              curl_easy_strerror (rc));
    return -1;
  }
  x->attempts++;
  x->started_ns = now;
  pthread_mutex_lock (&o->lock);
  o->stats.requests++;
  if (x->probe)
    o->stats.checks++;
  if (x->attempts > 1)
    o->stats.retries++;
  pthread_mutex_unlock (&o->lock);
  return 0;
}

/* ---- After an attempt --------------------------------------------------- */

/* libcurl errors that mean "configured wrongly", not "try again". */
static bool
is_permanent_curl_error (CURLcode rc)
{
  switch (rc) {
  case CURLE_URL_MALFORMAT:
  case CURLE_NOT_BUILT_IN:
  case CURLE_TOO_MANY_REDIRECTS:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_UNKNOWN_OPTION:
    return true;
  default:
    return false;
  }
}

/* Classify a finished attempt; sets x->faulted unless it succeeded. */
static void
judge_attempt (struct http_xfer *x, CURLcode rc)
{
  if (x->faulted)               /* refused by a callback */
    return;
  if (x->cut_at && x->received == x->cut_at)    /* stopped there: done */
    return;
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    xfer_fault (x, HTTP_FAULT_TIMEOUT, "%s",
                x->errbuf[0] ? x->errbuf : curl_easy_strerror (rc));
    return;
  }
  if (rc != CURLE_OK) {
    xfer_fault (x, HTTP_FAULT_TRANSPORT, "%s",
                x->errbuf[0] ? x->errbuf : curl_easy_strerror (rc));
    x->permanent = is_permanent_curl_error (rc);
    /* A redirect to another protocol, or garbage where a status line
     * should be (e.g. left on a reused connection): one fresh try. */
    x->hard = rc == CURLE_UNSUPPORTED_PROTOCOL;
    return;
  }
  if (!x->checked && check_head (x) == -1)      /* reply without a body */
    return;
  check_body (x, x->received, true);
}

/* Back-off before attempt number (attempts + 1): exponential from
 * base, capped, with "equal jitter" (half fixed, half random). */
static uint64_t
backoff_ns (struct http_xfer *x)
{
  struct http_origin *o = x->origin ? x->origin : x->origins[0];
  uint64_t ms = o->cfg.backoff_base_ms, r;
  unsigned i;

  for (i = 1; i < x->attempts && ms < o->cfg.backoff_max_ms; i++)
    ms *= 2;
  if (ms > o->cfg.backoff_max_ms)
    ms = o->cfg.backoff_max_ms;
  pthread_mutex_lock (&o->lock);
  o->rng ^= o->rng << 13;
  o->rng ^= o->rng >> 7;
  o->rng ^= o->rng << 17;
  r = o->rng;
  pthread_mutex_unlock (&o->lock);
  return (ms / 2 + (ms > 1 ? r % (ms - ms / 2 + 1) : 0)) * 1000000;
}

/* A 3xx (redirects off or exhausted) or a 4xx other than 408/429
 * (416 is a RANGE fault) will not heal by retrying soon. */
static bool
is_hard_status (const struct http_xfer *x)
{
  long status = x->reply.status;

  return x->fault == HTTP_FAULT_STATUS && status >= 300 &&
    status < 500 && status != 408 && status != 429;
}

/* Bit of the candidate x->origin in x->origins. */
static uint64_t
origin_bit (const struct http_xfer *x)
{
  for (size_t i = 0; i < x->n_origins; i++)
    if (x->origins[i] == x->origin)
      return UINT64_C (1) << i;
  return 0;
}

bool
http_origin_serves (const struct http_origin *o, const struct http_xfer *x)
{
  if (o->dropped)
    return false;
  if (o->unverified)
    return x->probe;
  return !o->other_copy || (x->whole && x->verified);
}

/* May o serve x (its lock not held)? */
static bool
serves_locked (struct http_origin *o, const struct http_xfer *x)
{
  bool serves;

  pthread_mutex_lock (&o->lock);
  serves = http_origin_serves (o, x);
  pthread_mutex_unlock (&o->lock);
  return serves;
}

/* Has every candidate that may serve x failed it? */
static bool
all_failed (const struct http_xfer *x)
{
  for (size_t i = 0; i < x->n_origins; i++)
    if (!(x->failed_origins & UINT64_C (1) << i) &&
        serves_locked (x->origins[i], x))
      return false;
  return true;
}

/* Is every candidate that may serve x marked unreachable? */
static bool
all_down (const struct http_xfer *x)
{
  for (size_t i = 0; i < x->n_origins; i++) {
    struct http_origin *o = x->origins[i];
    bool up;

    pthread_mutex_lock (&o->lock);
    up = http_origin_serves (o, x) && endpoint_is_up (&o->health);
    pthread_mutex_unlock (&o->lock);
    if (up)
      return false;
  }
  return true;
}

/* The last path component of url (before any query or fragment). */
static const char *
last_component (const char *url, size_t *len)
{
  size_t end = strcspn (url, "?#"), start = end;

  while (start > 0 && url[start - 1] != '/')
    start--;
  *len = end - start;
  return url + start;
}

/* *slot = s (owned), freeing what it held. */
static void
replace_string (char **slot, char *s)
{
  free (*slot);
  *slot = s;
}

/* A good reply to a request of the URL itself (not of a resolved one)
 * came after redirects: reuse its final URL from now on, and, if it
 * names a file of the same name, its folder for the objects beside
 * (a request of an object, its folder only). */
static void
learn_redirect (struct http_origin *o, const struct http_xfer *x, CURL *easy)
{
  long redirects = 0;
  char *eff = NULL;
  size_t la, lb, le, lp;
  const char *a, *b;

  if (curl_easy_getinfo (easy, CURLINFO_REDIRECT_COUNT, &redirects) !=
      CURLE_OK || redirects == 0 ||
      curl_easy_getinfo (easy, CURLINFO_EFFECTIVE_URL, &eff) != CURLE_OK ||
      eff == NULL)
    return;
  if (x->path == NULL) {
    replace_string (&o->resolved_url, strdup (eff));
    a = last_component (eff, &la);
    b = last_component (o->cfg.url, &lb);
    if (la == lb && memcmp (a, b, la) == 0 && a[la] == '\0')
      replace_string (&o->resolved_base, strndup (eff, a - eff));
  }
  else {
    le = strlen (eff);
    lp = strlen (x->path);
    if (le > lp && strcmp (eff + le - lp, x->path) == 0 &&
        eff[le - lp - 1] == '/')
      replace_string (&o->resolved_base, strndup (eff, le - lp));
  }
  http_debug (o, "%s%s redirects to %s: asked there from now on",
              x->path ? o->base_url : o->cfg.url, x->path ? x->path : "",
              eff);
}

/* An attempt on a resolved URL failed: forget the resolution, so that
 * the next attempt asks the URL itself again (and learns anew). */
static void
forget_redirect (struct http_origin *o, const struct http_xfer *x)
{
  http_debug (o, "%s: its redirect target failed (%s): asking it again",
              o->cfg.url, x->why);
  replace_string (&o->resolved_url, NULL);
  replace_string (&o->resolved_base, NULL);
}

/* Fold a good attempt into o's moving averages (1/4 weight): time to
 * the first byte, and body rate after it (long enough bodies only). */
static void
measure (struct http_origin *o, CURL *easy, size_t received)
{
  curl_off_t start = 0, total = 0;

  if (curl_easy_getinfo (easy, CURLINFO_STARTTRANSFER_TIME_T,
                         &start) != CURLE_OK ||
      curl_easy_getinfo (easy, CURLINFO_TOTAL_TIME_T, &total) != CURLE_OK)
    return;
  double lat = start / 1e6, body = (total - start) / 1e6;
  o->latency_s = o->latency_s == 0 ? lat : 0.75 * o->latency_s + 0.25 * lat;
  if (received >= 16384 && body > 0.0005) {
    double rate = received / body;
    o->rate_bps = o->rate_bps == 0 ? rate : 0.75 * o->rate_bps + 0.25 * rate;
  }
}

static enum http_next
decide (struct http_xfer *x, CURL *easy, CURLcode rc)
{
  struct http_origin *o = x->origin;
  unsigned allowed = 1 + o->cfg.retries;
  uint64_t now, wait;

  x->easy = NULL;
  judge_attempt (x, rc);
  now = http_now_ns ();
  pthread_mutex_lock (&o->lock);
  if (x->faulted)
    o->stats.faults[x->fault]++;
  else {
    o->stats.bytes_fetched += x->received;
    measure (o, easy, x->received);
  }
  histogram_add (&o->stats.latency, now - x->started_ns);
  pthread_mutex_unlock (&o->lock);
  if (!x->faulted) {
    if (!x->via_resolved)
      learn_redirect (o, x, easy);
    x->result = 0;
    return HTTP_DONE;
  }
  x->result = EIO;
  /* The target a redirector sent us to failed: go back to the
   * redirector at once, once, on this same origin. */
  if (x->via_resolved && !x->re_resolved) {
    x->re_resolved = true;
    forget_redirect (o, x);
    if (now < x->deadline_ns) {
      x->not_before_ns = now;
      x->fresh = true;
      return HTTP_RETRY;
    }
  }
  x->failed_origins |= origin_bit (x);
  /* Every mirror gets its chance before a read fails. */
  if (allowed < x->n_origins)
    allowed = x->n_origins;
  http_debug (o, "bytes=%" PRIu64 "-%" PRIu64 " attempt %u: %s: %s",
              x->first, x->first + x->length - 1, x->attempts,
              http_fault_name (x->fault), x->why);

  /* 404-like replies and a changed object get one retry (a mirror or
   * a load-balanced server may be mid-sync); a configuration error
   * (TLS trust, protocol) gets none: once every mirror has failed. */
  if ((((is_hard_status (x) || x->hard || x->fault == HTTP_FAULT_CHANGED) &&
        ++x->hard_faults >= 2) || x->permanent) && all_failed (x))
    allowed = x->attempts;
  x->result = EIO;
  if (x->attempts >= allowed)
    return HTTP_FAILED;
  /* Another mirror that has not failed it is tried at once. */
  wait = all_failed (x) ? backoff_ns (x) : 0;
  if (now + wait >= x->deadline_ns) {
    size_t l = strlen (x->why);
    snprintf (x->why + l, sizeof x->why - l, "; deadline of %u s reached",
              o->cfg.timeout);
    return HTTP_FAILED;
  }
  x->not_before_ns = now + wait;
  /* A server that sent the wrong thing or broke the connection gets a
   * new connection; a clean error status can reuse it. */
  x->fresh = x->fault != HTTP_FAULT_STATUS;
  return HTTP_RETRY;
}

/* ---- The origin --------------------------------------------------------- */

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

int
http_origin_init (struct http_origin *o, const struct http_config *src,
                  struct cloop_err *err)
{
  struct http_config *dst = &o->cfg;

  pthread_mutex_init (&o->lock, NULL);
  o->rng = (http_now_ns () ^ (uintptr_t) o) | 1;
  *dst = *src;
  dst->url = dst->cainfo = dst->capath = dst->proxy = NULL;
  dst->user_agent = dst->unix_socket_path = NULL;
  endpoint_init (&o->health, src->down_backoff_ms, src->down_backoff_max_ms);
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
  o->id.url = dst->url;
  o->base_url = base_url (dst->url);
  if (o->base_url == NULL)
    return cloop_err_set (err, ENOMEM, "http: out of memory");
  return 0;
}

void
http_origin_destroy (struct http_origin *o)
{
  curl_slist_free_all (o->headers);
  curl_slist_free_all (o->range_nocache_headers);
  curl_slist_free_all (o->nocache_headers);
  free (o->base_url);
  free (o->resolved_url);
  free (o->resolved_base);
  pthread_mutex_destroy (&o->lock);
  free ((char *) o->id.etag);
  free ((char *) o->id.last_modified);
  free ((char *) o->cfg.url);
  free ((char *) o->cfg.cainfo);
  free ((char *) o->cfg.capath);
  free ((char *) o->cfg.proxy);
  free ((char *) o->cfg.user_agent);
  free ((char *) o->cfg.unix_socket_path);
}

bool
http_validators_settled (const char *date, const char *last_modified,
                         const char *etag)
{
  bool have_lm = last_modified && last_modified[0];

  if (have_lm && date && date[0]) {
    time_t d = curl_getdate (date, NULL), lm = curl_getdate (last_modified,
                                                             NULL);
    return d != -1 && lm != -1 && d >= lm + 1;
  }
  return !have_lm && etag && etag[0] && strncmp (etag, "W/", 2) != 0;
}

int
http_origin_pin (struct http_origin *o, uint64_t size, const char *etag,
                 const char *last_modified, struct cloop_err *err)
{
  const char *validator = NULL;
  char line[320];

  o->id.size = size;
  if (etag && etag[0] && (o->id.etag = strdup (etag)) == NULL)
    return cloop_err_set (err, ENOMEM, "http: strdup: %m");
  o->id.etag_weak = o->id.etag && strncmp (o->id.etag, "W/", 2) == 0;
  if (last_modified && last_modified[0] &&
      (o->id.last_modified = strdup (last_modified)) == NULL)
    return cloop_err_set (err, ENOMEM, "http: strdup: %m");
  if (o->id.etag && !o->id.etag_weak)
    validator = o->id.etag;
  else if (o->id.last_modified)
    validator = o->id.last_modified;
  if (validator) {
    snprintf (line, sizeof line, "If-Range: %s", validator);
    o->headers = curl_slist_append (NULL, line);
    o->range_nocache_headers = curl_slist_append (NULL, line);
    if (o->headers == NULL || o->range_nocache_headers == NULL)
      return cloop_err_set (err, ENOMEM, "http: curl_slist_append failed");
  }
  for (int i = 0; i < 2; i++) {
    static const char *const nocache[] = {
      "Cache-Control: no-cache", "Pragma: no-cache",
    };
    struct curl_slist *a = curl_slist_append (o->range_nocache_headers,
                                              nocache[i]);
    struct curl_slist *b = curl_slist_append (o->nocache_headers, nocache[i]);
    if (a == NULL || b == NULL) {
      o->range_nocache_headers = a ? a : o->range_nocache_headers;
      o->nocache_headers = b ? b : o->nocache_headers;
      return cloop_err_set (err, ENOMEM, "http: curl_slist_append failed");
    }
    o->range_nocache_headers = a;
    o->nocache_headers = b;
  }
  http_debug (o, "%s: %" PRIu64 " bytes, ETag %s, Last-Modified %s, "
              "If-Range %s", o->id.url, o->id.size,
              o->id.etag ? o->id.etag : "(none)",
              o->id.last_modified ? o->id.last_modified : "(none)",
              validator ? validator : "(none)");
  return 0;
}

/* ---- Origin health ------------------------------------------------------ */

void
http_origin_warn (const struct http_origin *o, const char *fmt, ...)
{
  char line[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  if (o->cfg.warn)
    o->cfg.warn ("%s", line);
  else
    http_debug (o, "%s", line);
}

/* May x make an attempt on x->origin now?  If it is marked down and no
 * probe is due, x fails (x->result = EIO, x->why set) and false is
 * returned. */
static bool
admit (struct http_xfer *x)
{
  struct http_origin *o = x->origin;
  enum endpoint_admission a;
  uint64_t now = http_now_ns (), next_ms = 0, down_s = 0;
  char why[sizeof o->down_why];

  pthread_mutex_lock (&o->lock);
  a = endpoint_admit (&o->health, x, now);
  if (a == ENDPOINT_PROBE)
    o->stats.probes++;
  else if (a == ENDPOINT_FAIL_FAST) {
    o->stats.fast_failures++;
    next_ms = endpoint_ms_to_probe (&o->health, now);
    down_s = (now - o->health.down_since_ns) / 1000000000;
    snprintf (why, sizeof why, "%s", o->down_why);
  }
  pthread_mutex_unlock (&o->lock);
  if (a == ENDPOINT_PROBE)
    http_debug (o, "bytes=%" PRIu64 "-%" PRIu64 ": probing the server",
                x->first, x->first + x->length - 1);
  if (a != ENDPOINT_FAIL_FAST)
    return true;
  snprintf (x->why, sizeof x->why, "server unreachable for %" PRIu64
            " s (%.160s), not tried again for %" PRIu64 " ms",
            down_s, why, next_ms);
  x->result = EIO;
  return false;
}

/* Can o take an attempt now (up, or down with a probe due)?  Its
 * expected time for x's bytes, from the moving averages, is *cost. */
static bool
usable (const struct http_xfer *x, struct http_origin *o, uint64_t now,
        double *cost)
{
  bool ok, down, benched;
  double lat, rate;

  pthread_mutex_lock (&o->lock);
  ok = http_origin_serves (o, x) && endpoint_would_admit (&o->health, now);
  down = !endpoint_is_up (&o->health);
  benched = now < o->benched_until_ns;
  lat = o->latency_s ? o->latency_s : 0.05;
  rate = o->rate_bps ? o->rate_bps : 10e6;
  pthread_mutex_unlock (&o->lock);
  /* Busy origins answer later: each transfer in flight there counts. */
  *cost = (lat + x->length / rate) * (1 + o->active);
  /* A server that was unreachable is probed, once its back-off is
   * over, by the first read-ahead or background transfer (so that it
   * comes back into use), and by a client's read only when nothing
   * else can take it: a probe may wait for its connect timeout. */
  if (down)
    *cost = x->priority == FETCH_DEMAND ? *cost + 3600 : 0;
  /* One that served faulty copies lately only if nothing else can. */
  if (benched)
    *cost += 7200;
  return ok;
}

enum http_choice
http_xfer_choose (struct http_xfer *x,
                  bool (*has_slot) (void *opaque, const struct http_xfer *x,
                                    struct http_origin *o),
                  void *opaque)
{
  uint64_t now = http_now_ns ();
  bool retry_any = all_failed (x), busy = false;
  struct http_origin *best = NULL, *down = NULL, *busy_best = NULL;
  double best_cost = 0, busy_cost = 0;

  x->wait_for = NULL;

  for (size_t i = 0; i < x->n_origins; i++) {
    struct http_origin *o = x->origins[i];
    double cost;

    if (!retry_any && (x->failed_origins & UINT64_C (1) << i))
      continue;
    if (!serves_locked (o, x))          /* not even as a probe */
      continue;
    if (!usable (x, o, now, &cost)) {
      if (down == NULL)
        down = o;
      continue;
    }
    if (!has_slot (opaque, x, o)) {
      /* Done there, at worst, after one of its transfers and then
       * this one; and after the client reads queued ahead of it for
       * that origin, which its connections take in turn.  (Without
       * them, a deep queue of reads would all wait for the fastest
       * mirror and leave the others idle.) */
      cost = 2 * cost / (1 + o->active) *
             (1 + (double) o->waiters / (o->cfg.connections
                                         ? o->cfg.connections : 1));
      if (!busy || cost < busy_cost) {
        busy_cost = cost;
        busy_best = o;
      }
      busy = true;
      continue;
    }
    if (best == NULL || cost < best_cost) {
      best = o;
      best_cost = cost;
    }
  }
  /* A client's read waits for a slot on a busy origin expected to
   * finish it sooner, the wait counted, rather than start at once on a
   * much slower one (a hedge never waits; mirrors of about the same
   * speed share reads). */
  if (best && busy && busy_cost < best_cost &&
      x->priority == FETCH_DEMAND && x->hedged == NULL) {
    x->wait_for = busy_best;
    return HTTP_WAIT;
  }
  if (best) {
    x->origin = best;
    return admit (x) ? HTTP_CHOSEN : HTTP_NONE;
  }
  if (busy)
    return HTTP_WAIT;
  if (down) {                   /* says why, counts a fast failure */
    x->origin = down;
    if (admit (x)) {            /* its probe just came due */
      http_xfer_unadmit (x);
      return HTTP_WAIT;
    }
    return HTTP_NONE;
  }
  snprintf (x->why, sizeof x->why, "no mirror serves this object");
  x->result = EIO;
  return HTTP_NONE;
}

void
http_xfer_unadmit (struct http_xfer *x)
{
  struct http_origin *o = x->origin;

  pthread_mutex_lock (&o->lock);
  endpoint_cancel (&o->health, x);
  pthread_mutex_unlock (&o->lock);
}

/* Did the attempt of x on easy that ended with rc find nobody there?
 * Refused, unresolved, or timed out while still connecting: libcurl
 * had resolved the name, but made no connection and sent no request
 * (a reused connection also has no connect time, but sends one).  A
 * reaped attempt may have been waiting for a connection of libcurl's
 * own, and one whose transfer's deadline left it too little time to
 * connect (less than HTTP_PROBE_CONNECT_MS, or half the origin's
 * timeout) was cut short by that: neither is the server's fault.  Any
 * other fault (a status, a reset, a wrong reply) means it was
 * reached. */
static bool
origin_unreachable (const struct http_xfer *x, CURL *easy, CURLcode rc,
                    bool reaped)
{
  long fair_ms = (long) x->origin->cfg.timeout * 500;
  curl_off_t resolved = 0, connected = 0;
  long sent = 0, heard = 0;

  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
    return true;
  case CURLE_OPERATION_TIMEDOUT:
    if (fair_ms > HTTP_PROBE_CONNECT_MS)
      fair_ms = HTTP_PROBE_CONNECT_MS;
    if (reaped || x->connect_ms < fair_ms ||
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

/* An unreachable server fails x at once: retrying it is the probe's
 * job, after the back-off. */
enum http_next
http_xfer_finish (struct http_xfer *x, CURL *easy, CURLcode rc, bool reaped)
{
  struct http_origin *o = x->origin;
  bool down = origin_unreachable (x, easy, rc, reaped);
  bool via_resolved = x->via_resolved && !x->re_resolved;
  enum http_next next = decide (x, easy, rc);
  uint64_t now = http_now_ns ();
  bool changed;

  /* A redirect target that failed says nothing of the origin's own
   * server: the origin is asked again (decide). */
  if (via_resolved && x->re_resolved)
    return next;
  pthread_mutex_lock (&o->lock);
  if (down) {
    changed = endpoint_report_down (&o->health, x, now);
    if (changed) {
      o->stats.origin_down_events++;
      snprintf (o->down_why, sizeof o->down_why, "%.159s", x->why);
    }
  }
  else
    changed = endpoint_report_up (&o->health, x);
  pthread_mutex_unlock (&o->lock);

  if (down && changed)
    http_origin_warn (o, "%s: server unreachable (%s): reads of blocks "
                      "that are not cached fail at once, and it is tried "
                      "again after a back-off of %u ms up to %u ms",
                      o->id.url, x->why, o->cfg.down_backoff_ms,
                      o->cfg.down_backoff_max_ms);
  else if (changed)
    http_origin_warn (o, "%s: server reachable again", o->id.url);
  /* An unreachable server is retried by the probe, after its back-off;
   * the transfer goes on to mirrors that have not failed it, or that
   * failed it only in a way worth retrying (they are still up): it
   * fails at once when every mirror is unreachable. */
  if (down && next == HTTP_RETRY && all_failed (x) && all_down (x)) {
    x->result = EIO;
    next = HTTP_FAILED;
  }
  return next;
}

bool
http_xfer_refetch_allowed (struct http_xfer *x, uint64_t *not_before)
{
  struct http_origin *o = x->origins[0];       /* they share cfg */

  *not_before = 0;
  if (x->attempts == 0)
    return true;
  if (x->attempts > o->cfg.retries) {
    snprintf (x->why, sizeof x->why, "every copy was faulty (%u fetched; "
              "retries=%u)", x->attempts, o->cfg.retries);
    x->result = EIO;
    return false;
  }
  x->fresh = true;
  x->nocache = true;
  *not_before = http_now_ns () + backoff_ns (x);
  return true;
}
