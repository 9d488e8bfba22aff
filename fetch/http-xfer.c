/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: one ranged GET — request options, reply checking and
 * the retry decision.  Nothing here knows about threads: http.c runs
 * a transfer either on an easy handle in the caller's thread or on the
 * worker's multi handle, and calls the same two functions.
 *
 * A reply's head is checked before its first body byte is stored, so a
 * 200, a wrong Content-Range or a changed ETag never reaches a caller's
 * buffer; body bytes beyond the requested length abort the transfer.
 */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http-internal.h"

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
http_debug (struct http_source *hs, const char *fmt, ...)
{
  char line[512];
  va_list ap;

  if (!hs->cfg.verbose || hs->cfg.debug == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  hs->cfg.debug ("http: %s", line);
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

/* ---- Reply headers ---------------------------------------------------- */

/* Parse a decimal uint64 at *p, advancing it.  -1 if none or overflow. */
static int
parse_u64 (const char **p, uint64_t *out)
{
  uint64_t v = 0;
  const char *s = *p;

  if (*s < '0' || *s > '9')
    return -1;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (UINT64_MAX - (*s - '0')) / 10)
      return -1;
    v = v * 10 + (*s - '0');
  }
  *p = s;
  *out = v;
  return 0;
}

/* Content-Range: "bytes FIRST-LAST/TOTAL"; TOTAL may be a star
 * (unknown), and FIRST-LAST may be a star in a 416 reply. */
static void
parse_content_range (struct http_xfer *x, const char *v)
{
  const char *p = v;

  x->have_range = true;
  x->range_bad = true;
  x->range_star_total = false;
  snprintf (x->range_raw, sizeof x->range_raw, "%s", v);
  if (strncasecmp (p, "bytes ", 6) != 0)
    return;
  p += 6;
  while (*p == ' ')
    p++;
  if (*p == '*') {
    p++;
    x->range_first = 1;         /* no range; first > last marks it */
    x->range_last = 0;
  }
  else {
    if (parse_u64 (&p, &x->range_first) == -1 || *p++ != '-' ||
        parse_u64 (&p, &x->range_last) == -1 ||
        x->range_first > x->range_last)
      return;
  }
  if (*p++ != '/')
    return;
  if (*p == '*') {
    x->range_star_total = true;
    p++;
  }
  else if (parse_u64 (&p, &x->range_total) == -1)
    return;
  if (*p != '\0')
    return;
  if (!x->range_star_total && x->range_first <= x->range_last &&
      x->range_last >= x->range_total)
    return;
  x->range_bad = false;
}

/* Forget everything about the reply (a new status line began). */
static void
reply_reset (struct http_xfer *x)
{
  x->status = 0;
  x->have_range = x->range_bad = x->range_star_total = false;
  x->range_raw[0] = '\0';
  x->content_length = -1;
  x->etag[0] = '\0';
  x->last_modified[0] = '\0';
}

static size_t
on_header (char *buf, size_t size, size_t nitems, void *opaque)
{
  struct http_xfer *x = opaque;
  size_t len = size * nitems, name_len;
  char line[512], *value, *end;

  if (len >= sizeof line)       /* a header we do not care about */
    return len;
  memcpy (line, buf, len);
  line[len] = '\0';
  end = line + len;
  while (end > line && (end[-1] == '\r' || end[-1] == '\n' ||
                        end[-1] == ' ' || end[-1] == '\t'))
    *--end = '\0';

  if (strncmp (line, "HTTP/", 5) == 0) {
    const char *sp = strchr (line, ' ');
    reply_reset (x);
    if (sp)
      x->status = strtol (sp + 1, NULL, 10);
    return len;
  }
  value = strchr (line, ':');
  if (value == NULL)
    return len;
  name_len = value - line;
  for (value++; *value == ' ' || *value == '\t'; value++)
    ;
  if (name_len == 13 && strncasecmp (line, "Content-Range", 13) == 0)
    parse_content_range (x, value);
  else if (name_len == 14 && strncasecmp (line, "Content-Length", 14) == 0) {
    const char *p = value;
    uint64_t n;

    if (parse_u64 (&p, &n) == 0 && *p == '\0' && n <= INT64_MAX)
      x->content_length = n;
  }
  else if (name_len == 4 && strncasecmp (line, "ETag", 4) == 0)
    snprintf (x->etag, sizeof x->etag, "%s", value);
  else if (name_len == 13 && strncasecmp (line, "Last-Modified", 13) == 0)
    snprintf (x->last_modified, sizeof x->last_modified, "%s", value);
  return len;
}

/* The probe learns the total; every later reply must match the pin. */
static int
check_range_probe (struct http_xfer *x)
{
  uint64_t want_last;

  if (x->range_star_total)
    return xfer_fault (x, HTTP_FAULT_NOT_PARTIAL,
                       "server does not honour Range requests "
                       "(Content-Range '%s' gives no total size)",
                       x->range_raw), -1;
  want_last = x->first + x->length - 1;
  if (want_last > x->range_total - 1)
    want_last = x->range_total - 1;
  if (x->range_first != x->first || x->range_last != want_last)
    return xfer_fault (x, HTTP_FAULT_RANGE,
                       "Content-Range '%s' does not match the request "
                       "bytes=%" PRIu64 "-%" PRIu64, x->range_raw,
                       x->first, x->first + x->length - 1), -1;
  x->length = want_last - x->first + 1;
  return 0;
}

static int
check_range (struct http_xfer *x)
{
  const struct http_identity *id = &x->hs->id;
  uint64_t last = x->first + x->length - 1;

  if (!x->have_range)
    return xfer_fault (x, HTTP_FAULT_RANGE, "206 reply without Content-Range"),
      -1;
  if (x->range_bad || x->range_first > x->range_last)
    return xfer_fault (x, HTTP_FAULT_RANGE,
                       "malformed Content-Range '%s'", x->range_raw), -1;
  if (x->probe)
    return check_range_probe (x);
  if (x->range_star_total)
    return xfer_fault (x, HTTP_FAULT_RANGE, "Content-Range '%s' hides the "
                       "total size", x->range_raw), -1;
  if (x->range_total != id->size)
    return xfer_fault (x, HTTP_FAULT_CHANGED,
                       "object changed on server (size %" PRIu64
                       ", pinned %" PRIu64 ")", x->range_total, id->size), -1;
  if (x->range_first != x->first || x->range_last != last)
    return xfer_fault (x, HTTP_FAULT_RANGE,
                       "Content-Range '%s' does not match the request "
                       "bytes=%" PRIu64 "-%" PRIu64,
                       x->range_raw, x->first, last), -1;
  return 0;
}

/* Check the status line and headers of the final reply.  0 if body
 * bytes may be stored, else -1 with the fault recorded. */
/* A whole immutable object (content-addressed, verified by the
 * caller): a plain 200 whose length is what was asked for. */
static int
check_head_whole (struct http_xfer *x)
{
  if (x->status != 200)
    return xfer_fault (x, HTTP_FAULT_STATUS, "HTTP status %ld", x->status),
      -1;
  if (x->content_length >= 0 &&
      (x->exact ? (uint64_t) x->content_length != x->length
                : (uint64_t) x->content_length > x->length))
    return xfer_fault (x, HTTP_FAULT_LENGTH, "Content-Length %" PRId64
                       ", expected %s%zu", x->content_length,
                       x->exact ? "" : "at most ", x->length), -1;
  return 0;
}

static int
check_head (struct http_xfer *x)
{
  const struct http_identity *id = &x->hs->id;

  if (x->whole)
    return check_head_whole (x);

  if (x->status == 200 && !x->probe && id->etag && x->etag[0] &&
      strcmp (x->etag, id->etag) != 0)
    return xfer_fault (x, HTTP_FAULT_CHANGED,
                       "object changed on server (200 with ETag %s, "
                       "pinned %s)", x->etag, id->etag), -1;
  if (x->probe && (x->status == 200 || x->status == 416))
    x->hard = true;             /* likely the server's nature: one retry */
  if (x->status == 200 && x->probe && x->content_length == 0)
    return xfer_fault (x, HTTP_FAULT_NOT_PARTIAL, "the object is empty"), -1;
  if (x->status == 200)
    return xfer_fault (x, HTTP_FAULT_NOT_PARTIAL, x->probe
                       ? "server does not honour Range requests (200, not 206)"
                       : "200 instead of 206: object changed on server "
                       "or Range ignored"), -1;
  if (x->status == 416 && x->probe)
    return xfer_fault (x, HTTP_FAULT_RANGE, "416 for bytes=0-%zu: the "
                       "object is empty or the server mishandles Range%s%s",
                       x->length - 1, x->range_raw[0] ? ", Content-Range " : "",
                       x->range_raw), -1;
  if (x->status == 416)
    return xfer_fault (x, HTTP_FAULT_RANGE,
                       "416 Range Not Satisfiable%s%s",
                       x->range_raw[0] ? ", Content-Range " : "",
                       x->range_raw), -1;
  if (x->status != 206)
    return xfer_fault (x, HTTP_FAULT_STATUS, "HTTP status %ld", x->status), -1;
  if (check_range (x) == -1)
    return -1;
  if (x->probe)
    return 0;
  if (id->etag && x->etag[0] && strcmp (x->etag, id->etag) != 0)
    return xfer_fault (x, HTTP_FAULT_CHANGED,
                       "object changed on server (ETag %s, pinned %s)",
                       x->etag, id->etag), -1;
  if (id->etag == NULL && id->last_modified && x->last_modified[0] &&
      strcmp (x->last_modified, id->last_modified) != 0)
    return xfer_fault (x, HTTP_FAULT_CHANGED,
                       "object changed on server (Last-Modified %s, "
                       "pinned %s)", x->last_modified, id->last_modified), -1;
  return 0;
}

/* ---- Reply body --------------------------------------------------------- */

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
  if (n > x->length - x->received) {
    xfer_fault (x, HTTP_FAULT_LENGTH,
                "server sent more than the %zu bytes asked for", x->length);
    return 0;
  }
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
  return n;
}

/* ---- Request set-up ----------------------------------------------------- */

static int
on_curl_debug (CURL *easy, curl_infotype type, char *data, size_t size,
               void *opaque)
{
  struct http_source *hs = opaque;
  const char *tag;

  switch (type) {
  case CURLINFO_TEXT: tag = "*"; break;
  case CURLINFO_HEADER_IN: tag = "<"; break;
  case CURLINFO_HEADER_OUT: tag = ">"; break;
  default: return 0;
  }
  while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
    size--;
  hs->cfg.debug ("http: curl %s %.*s", tag, (int) size, data);
  return 0;
}

/* Options that do not depend on the attempt. */
static CURLcode
setup_common (struct http_source *hs, CURL *easy)
{
  const struct http_config *c = &hs->cfg;
  CURLcode rc = CURLE_OK;

#define SET(opt, val) \
  do { if (rc == CURLE_OK) rc = curl_easy_setopt (easy, opt, val); } while (0)
  SET (CURLOPT_URL, c->url);
#if LIBCURL_VERSION_NUM >= 0x075500     /* 7.85.0 */
  SET (CURLOPT_PROTOCOLS_STR, HTTP_PROTOCOLS);
  SET (CURLOPT_REDIR_PROTOCOLS_STR, HTTP_PROTOCOLS);
#else
  SET (CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SET (CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
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
    SET (CURLOPT_DEBUGDATA, hs);
    SET (CURLOPT_VERBOSE, 1L);
  }
#undef SET
  return rc;
}

int
http_xfer_setup (struct http_xfer *x, CURL *easy)
{
  struct http_source *hs = x->hs;
  uint64_t now = http_now_ns (), left_ms;
  char range[64];
  CURLcode rc;

  curl_easy_reset (easy);
  reply_reset (x);
  x->checked = x->faulted = x->permanent = x->hard = false;
  x->received = x->cursor_part = x->cursor_off = 0;
  x->errbuf[0] = '\0';
  x->easy = easy;
  left_ms = x->deadline_ns > now ? (x->deadline_ns - now) / 1000000 : 0;
  if (left_ms == 0)
    left_ms = 1;
  snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64,
            x->first, x->first + x->length - 1);

  rc = setup_common (hs, easy);
#define SET(opt, val) \
  do { if (rc == CURLE_OK) rc = curl_easy_setopt (easy, opt, val); } while (0)
  if (x->url)
    SET (CURLOPT_URL, x->url);
  if (!x->whole)
    SET (CURLOPT_RANGE, range);
  SET (CURLOPT_TIMEOUT_MS, (long) left_ms);
  if (!x->probe && !x->whole && hs->headers)
    SET (CURLOPT_HTTPHEADER, hs->headers);
  SET (CURLOPT_HEADERDATA, x);
  SET (CURLOPT_WRITEDATA, x);
  SET (CURLOPT_PRIVATE, x);
  SET (CURLOPT_ERRORBUFFER, x->errbuf);
  SET (CURLOPT_FRESH_CONNECT, x->fresh ? 1L : 0L);
#undef SET
  if (rc != CURLE_OK) {
    snprintf (x->why, sizeof x->why, "cannot set up libcurl: %s",
              curl_easy_strerror (rc));
    return -1;
  }
  x->attempts++;
  pthread_mutex_lock (&hs->lock);
  hs->stats.requests++;
  if (x->attempts > 1)
    hs->stats.retries++;
  pthread_mutex_unlock (&hs->lock);
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
  if (x->whole && !x->exact ? x->received > x->length
                            : x->received != x->length)
    xfer_fault (x, HTTP_FAULT_LENGTH, "body of %zu bytes, %zu asked for",
                x->received, x->length);
}

/* Back-off before attempt number (attempts + 1): exponential from
 * base, capped, with "equal jitter" (half fixed, half random). */
static uint64_t
backoff_ns (struct http_xfer *x)
{
  struct http_source *hs = x->hs;
  uint64_t ms = hs->cfg.backoff_base_ms, r;
  unsigned i;

  for (i = 1; i < x->attempts && ms < hs->cfg.backoff_max_ms; i++)
    ms *= 2;
  if (ms > hs->cfg.backoff_max_ms)
    ms = hs->cfg.backoff_max_ms;
  pthread_mutex_lock (&hs->lock);
  hs->rng ^= hs->rng << 13;
  hs->rng ^= hs->rng >> 7;
  hs->rng ^= hs->rng << 17;
  r = hs->rng;
  pthread_mutex_unlock (&hs->lock);
  return (ms / 2 + (ms > 1 ? r % (ms - ms / 2 + 1) : 0)) * 1000000;
}

/* A 3xx (redirects off or exhausted) or a 4xx other than 408/429
 * (416 is a RANGE fault) will not heal by retrying soon. */
static bool
is_hard_status (const struct http_xfer *x)
{
  return x->fault == HTTP_FAULT_STATUS && x->status >= 300 &&
    x->status < 500 && x->status != 408 && x->status != 429;
}

enum http_next
http_xfer_finish (struct http_xfer *x, CURLcode rc)
{
  struct http_source *hs = x->hs;
  unsigned allowed = 1 + hs->cfg.retries;
  uint64_t now, wait;

  x->easy = NULL;
  judge_attempt (x, rc);
  pthread_mutex_lock (&hs->lock);
  if (x->faulted)
    hs->stats.faults[x->fault]++;
  else
    hs->stats.bytes_fetched += x->received;
  pthread_mutex_unlock (&hs->lock);
  if (!x->faulted) {
    x->result = 0;
    return HTTP_DONE;
  }
  http_debug (hs, "bytes=%" PRIu64 "-%" PRIu64 " attempt %u: %s: %s",
              x->first, x->first + x->length - 1, x->attempts,
              http_fault_name (x->fault), x->why);

  /* 404-like replies and a changed object get one retry (a mirror or
   * a load-balanced server may be mid-sync); a configuration error
   * (TLS trust, protocol) gets none. */
  if (((is_hard_status (x) || x->hard || x->fault == HTTP_FAULT_CHANGED) &&
       ++x->hard_faults >= 2) ||
      x->permanent)
    allowed = x->attempts;
  x->result = EIO;
  now = http_now_ns ();
  if (x->attempts >= allowed)
    return HTTP_FAILED;
  wait = backoff_ns (x);
  if (now + wait >= x->deadline_ns) {
    size_t l = strlen (x->why);
    snprintf (x->why + l, sizeof x->why - l, "; deadline of %u s reached",
              hs->cfg.timeout);
    return HTTP_FAILED;
  }
  x->not_before_ns = now + wait;
  /* A server that sent the wrong thing or broke the connection gets a
   * new connection; a clean error status can reuse it. */
  x->fresh = x->fault != HTTP_FAULT_STATUS;
  return HTTP_RETRY;
}
