/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: checking an HTTP reply against what was asked for (see
 * http-reply.h).  Nothing here does I/O or knows libcurl.
 */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http-reply.h"

/* ---- Parsing ------------------------------------------------------------ */

/* Parse a decimal uint64 at *p, advancing it.  -1 if none or overflow. */
static int
parse_decimal (const char **p, uint64_t *out)
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

int
http_parse_content_range (const char *value, struct http_content_range *cr)
{
  const char *p = value;

  memset (cr, 0, sizeof *cr);
  if (strncasecmp (p, "bytes ", 6) != 0)
    return -1;
  p += 6;
  while (*p == ' ')
    p++;
  if (*p == '*') {
    p++;
    cr->unsatisfied = true;
  }
  else if (parse_decimal (&p, &cr->first) == -1 || *p++ != '-' ||
           parse_decimal (&p, &cr->last) == -1 || cr->first > cr->last)
    return -1;
  if (*p++ != '/')
    return -1;
  if (*p == '*') {
    cr->total_unknown = true;
    p++;
  }
  else if (parse_decimal (&p, &cr->total) == -1)
    return -1;
  if (*p != '\0')
    return -1;
  if (!cr->unsatisfied && !cr->total_unknown && cr->last >= cr->total)
    return -1;
  return 0;
}

int
http_parse_content_length (const char *value, int64_t *len)
{
  const char *p = value;
  uint64_t n;

  if (parse_decimal (&p, &n) == -1 || *p != '\0' || n > INT64_MAX)
    return -1;
  *len = (int64_t) n;
  return 0;
}

void
http_reply_reset (struct http_reply *r)
{
  memset (r, 0, sizeof *r);
  r->content_length = -1;
}

void
http_reply_header (struct http_reply *r, const char *buf, size_t len)
{
  char line[HTTP_REPLY_LINE_MAX], *value, *end;
  size_t name_len;
  int64_t n;

  if (len >= sizeof line)       /* a header we do not care about */
    return;
  memcpy (line, buf, len);
  line[len] = '\0';
  end = line + len;
  while (end > line && (end[-1] == '\r' || end[-1] == '\n' ||
                        end[-1] == ' ' || end[-1] == '\t'))
    *--end = '\0';

  if (strncmp (line, "HTTP/", 5) == 0) {
    const char *sp = strchr (line, ' ');
    http_reply_reset (r);
    if (sp)
      r->status = strtol (sp + 1, NULL, 10);
    return;
  }
  value = strchr (line, ':');
  if (value == NULL)
    return;
  name_len = value - line;
  for (value++; *value == ' ' || *value == '\t'; value++)
    ;
  if (name_len == 13 && strncasecmp (line, "Content-Range", 13) == 0) {
    r->have_range = true;
    r->range_bad = http_parse_content_range (value, &r->range) == -1;
    snprintf (r->range_raw, sizeof r->range_raw, "%s", value);
  }
  else if (name_len == 14 && strncasecmp (line, "Content-Length", 14) == 0) {
    if (http_parse_content_length (value, &n) == 0)
      r->content_length = n;
  }
  else if (name_len == 4 && strncasecmp (line, "ETag", 4) == 0)
    snprintf (r->etag, sizeof r->etag, "%s", value);
  else if (name_len == 13 && strncasecmp (line, "Last-Modified", 13) == 0)
    snprintf (r->last_modified, sizeof r->last_modified, "%s", value);
  else if (name_len == 4 && strncasecmp (line, "Date", 4) == 0)
    snprintf (r->date, sizeof r->date, "%s", value);
}

/* ---- Judging ------------------------------------------------------------ */

const char *
http_blame_name (enum http_blame blame)
{
  switch (blame) {
  case HTTP_BLAME_NONE: return "nobody";
  case HTTP_BLAME_SERVER: return "server";
  case HTTP_BLAME_CONTENT: return "content";
  case HTTP_BLAME_US: return "us";
  }
  return "?";
}

/* Record a fault in v.  Always returns -1. */
static int __attribute__ ((format (printf, 4, 5)))
fault (struct http_verdict *v, enum http_fault kind, enum http_blame blame,
       const char *fmt, ...)
{
  va_list ap;

  v->ok = false;
  v->fault = kind;
  v->blame = blame;
  va_start (ap, fmt);
  vsnprintf (v->why, sizeof v->why, fmt, ap);
  va_end (ap);
  return -1;
}

/* Who is to blame for an unexpected status: a 3xx we did not follow
 * or a 4xx refusal is about our request; the rest (5xx, 408, 429,
 * anything odd) is the server's. */
static enum http_blame
status_blame (long status)
{
  if (status == 408 || status == 429)
    return HTTP_BLAME_SERVER;
  if (status >= 300 && status < 500)
    return HTTP_BLAME_US;
  return HTTP_BLAME_SERVER;
}

/* True if the reply carries the pinned validator (ETag, or without
 * one Last-Modified): then a 200 means the server ignored Range, not
 * that If-Range found the object changed. */
static bool
same_validator (const struct http_request *req, const struct http_reply *r)
{
  if (req->pinned_etag)
    return r->etag[0] && strcmp (r->etag, req->pinned_etag) == 0;
  return req->pinned_last_modified && r->last_modified[0] &&
         strcmp (r->last_modified, req->pinned_last_modified) == 0;
}

/* A whole immutable object (content-addressed, verified by the
 * caller): a plain 200 whose length is what was asked for. */
static int
check_whole (const struct http_request *req, const struct http_reply *r,
             struct http_verdict *v)
{
  if (r->status != 200)
    return fault (v, HTTP_FAULT_STATUS, status_blame (r->status),
                  "HTTP status %ld", r->status);
  if (r->content_length >= 0 &&
      (req->exact ? (uint64_t) r->content_length != req->length
                  : (uint64_t) r->content_length > req->length))
    return fault (v, HTTP_FAULT_LENGTH, HTTP_BLAME_CONTENT,
                  "Content-Length %" PRId64 ", expected %s%" PRIu64,
                  r->content_length, req->exact ? "" : "at most ",
                  req->length);
  return 0;
}

/* Any status but 206 in reply to a ranged GET. */
static int
check_not_206 (const struct http_request *req, const struct http_reply *r,
               struct http_verdict *v)
{
  const char *sep = r->range_raw[0] ? ", Content-Range " : "";

  if (r->status == 200 && !req->probe && req->pinned_etag && r->etag[0] &&
      strcmp (r->etag, req->pinned_etag) != 0)
    return fault (v, HTTP_FAULT_CHANGED, HTTP_BLAME_CONTENT,
                  "object changed on server (200 with ETag %s, pinned %s)",
                  r->etag, req->pinned_etag);
  if (req->probe && (r->status == 200 || r->status == 416))
    v->hard = true;             /* likely the server's nature: one retry */
  if (r->status == 200 && req->probe && r->content_length == 0)
    return fault (v, HTTP_FAULT_NOT_PARTIAL, HTTP_BLAME_CONTENT,
                  "the object is empty");
  if (r->status == 200 && req->probe)
    return fault (v, HTTP_FAULT_NOT_PARTIAL, HTTP_BLAME_SERVER,
                  "server does not honour Range requests (200, not 206)");
  if (r->status == 200)
    return fault (v, HTTP_FAULT_NOT_PARTIAL,
                  same_validator (req, r) ? HTTP_BLAME_SERVER
                                          : HTTP_BLAME_CONTENT,
                  "200 instead of 206: object changed on server "
                  "or Range ignored");
  if (r->status == 416 && req->probe)
    return fault (v, HTTP_FAULT_RANGE,
                  r->have_range && !r->range_bad && !r->range.total_unknown &&
                  r->range.total == 0 ? HTTP_BLAME_CONTENT : HTTP_BLAME_SERVER,
                  "416 for bytes=%" PRIu64 "-%" PRIu64 ": the object is "
                  "empty or the server mishandles Range%s%s", req->first,
                  req->first + req->length - 1, sep, r->range_raw);
  if (r->status == 416)
    return fault (v, HTTP_FAULT_RANGE,
                  r->have_range && !r->range_bad && !r->range.total_unknown &&
                  r->range.total != req->pinned_size ? HTTP_BLAME_CONTENT
                                                     : HTTP_BLAME_SERVER,
                  "416 Range Not Satisfiable%s%s", sep, r->range_raw);
  return fault (v, HTTP_FAULT_STATUS, status_blame (r->status),
                "HTTP status %ld", r->status);
}

/* The probe learns the total; it must be known, and the range must
 * start where asked and end where asked or at the end of the object. */
static int
check_range_probe (const struct http_request *req,
                   const struct http_reply *r, struct http_verdict *v)
{
  uint64_t want_last = req->first + req->length - 1;

  if (r->range.total_unknown)
    return fault (v, HTTP_FAULT_NOT_PARTIAL, HTTP_BLAME_SERVER,
                  "server does not honour Range requests "
                  "(Content-Range '%s' gives no total size)", r->range_raw);
  if (want_last > r->range.total - 1)   /* total > last >= 0 */
    want_last = r->range.total - 1;
  if (r->range.first != req->first || r->range.last != want_last)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_SERVER,
                  "Content-Range '%s' does not match the request "
                  "bytes=%" PRIu64 "-%" PRIu64, r->range_raw,
                  req->first, req->first + req->length - 1);
  v->length = want_last - req->first + 1;
  return 0;
}

/* A 206: its Content-Range must be exactly the request's. */
static int
check_range (const struct http_request *req, const struct http_reply *r,
             struct http_verdict *v)
{
  uint64_t last = req->first + req->length - 1;

  if (!r->have_range)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_SERVER,
                  "206 reply without Content-Range");
  if (r->range_bad || r->range.unsatisfied)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_SERVER,
                  "malformed Content-Range '%s'", r->range_raw);
  if (req->probe)
    return check_range_probe (req, r, v);
  if (r->range.total_unknown)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_SERVER,
                  "Content-Range '%s' hides the total size", r->range_raw);
  if (r->range.total != req->pinned_size)
    return fault (v, HTTP_FAULT_CHANGED, HTTP_BLAME_CONTENT,
                  "object changed on server (size %" PRIu64
                  ", pinned %" PRIu64 ")", r->range.total, req->pinned_size);
  if (r->range.first != req->first || r->range.last != last)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_SERVER,
                  "Content-Range '%s' does not match the request "
                  "bytes=%" PRIu64 "-%" PRIu64,
                  r->range_raw, req->first, last);
  return 0;
}

/* After the range: the pinned validators. */
static int
check_validators (const struct http_request *req, const struct http_reply *r,
                  struct http_verdict *v)
{
  if (req->pinned_etag && r->etag[0] &&
      strcmp (r->etag, req->pinned_etag) != 0)
    return fault (v, HTTP_FAULT_CHANGED, HTTP_BLAME_CONTENT,
                  "object changed on server (ETag %s, pinned %s)",
                  r->etag, req->pinned_etag);
  if (req->pinned_etag == NULL && req->pinned_last_modified &&
      r->last_modified[0] &&
      strcmp (r->last_modified, req->pinned_last_modified) != 0)
    return fault (v, HTTP_FAULT_CHANGED, HTTP_BLAME_CONTENT,
                  "object changed on server (Last-Modified %s, pinned %s)",
                  r->last_modified, req->pinned_last_modified);
  return 0;
}

int
http_reply_check (const struct http_request *req,
                  const struct http_reply *r, struct http_verdict *v)
{
  memset (v, 0, sizeof *v);
  v->length = req->length;
  if (req->length == 0 || req->first + (req->length - 1) < req->first)
    return fault (v, HTTP_FAULT_RANGE, HTTP_BLAME_US,
                  "invalid request of %" PRIu64 " bytes at %" PRIu64,
                  req->length, req->first);
  if (req->whole) {
    if (check_whole (req, r, v) == -1)
      return -1;
  }
  else if (r->status != 206) {
    return check_not_206 (req, r, v);
  }
  else if (check_range (req, r, v) == -1 ||
           (!req->probe && check_validators (req, r, v) == -1))
    return -1;
  v->ok = true;
  v->blame = HTTP_BLAME_NONE;
  return 0;
}

int
http_reply_check_body (const struct http_request *req,
                       struct http_verdict *v, uint64_t received, bool ended)
{
  enum http_blame blame = req->whole ? HTTP_BLAME_CONTENT : HTTP_BLAME_SERVER;

  if (!ended || (req->whole && !req->exact)) {
    if (received > v->length)
      return fault (v, HTTP_FAULT_LENGTH, blame, "server sent more than "
                    "the %" PRIu64 " bytes asked for", v->length);
    return 0;
  }
  if (received != v->length)
    return fault (v, HTTP_FAULT_LENGTH, blame,
                  "body of %" PRIu64 " bytes, %" PRIu64 " asked for",
                  received, v->length);
  return 0;
}
