/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz HTTP reply checking (fetch/http-reply.c).
 *
 * Input (text): a request line "FLAGS FIRST LENGTH PINNED_SIZE", where
 * FLAGS is '-' or letters p (probe), w (whole object), x (exact); a
 * line with the pinned ETag and one with the pinned Last-Modified
 * (empty = none); then the reply's head lines, fed one by one as
 * libcurl would (newline included).
 * Properties: parsing and checking never crash; a fault has a kind, a
 * culprit and a reason; an accepted ranged reply is a 206 whose last
 * Content-Range header (parsed here independently) is exactly the
 * request, of the pinned total (the probe: from FIRST, clipped to a
 * known total); an accepted whole object is a 200 whose length fits;
 * the body check takes exactly the accepted length.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "http-reply.h"

#define INPUT_MAX 8192

/* Cut the next line (without its '\n') off *p.  False at the end. */
static bool
next_line (const char **p, const char *end, const char **line, size_t *len)
{
  const char *nl;

  if (*p >= end)
    return false;
  nl = memchr (*p, '\n', end - *p);
  *line = *p;
  *len = (nl ? nl : end) - *p;
  *p = nl ? nl + 1 : end;
  return true;
}

/* Parse the harness's request line.  False if it is not one. */
static bool
parse_request (const char *line, size_t len, struct http_request *req)
{
  char buf[128], flags[8];
  unsigned long long first, length, total;

  if (len >= sizeof buf)
    return false;
  memcpy (buf, line, len);
  buf[len] = '\0';
  if (sscanf (buf, "%7s %llu %llu %llu", flags, &first, &length,
              &total) != 4)
    return false;
  *req = (struct http_request) {
    .first = first, .length = length, .pinned_size = total,
    .probe = strchr (flags, 'p') != NULL,
    .whole = strchr (flags, 'w') != NULL,
    .exact = strchr (flags, 'x') != NULL,
  };
  return true;
}

/* An independent reading of a Content-Range value: "bytes A-B/C" with
 * plain decimals.  False if it is not exactly that. */
static bool
oracle_range (const char *v, uint64_t *a, uint64_t *b, uint64_t *c)
{
  uint64_t *out[3] = { a, b, c };
  const char seps[3] = { '-', '/', '\0' };
  char *end;

  if (strncasecmp (v, "bytes", 5) != 0 || v[5] != ' ')
    return false;
  for (v += 5; *v == ' '; v++)
    ;
  for (int i = 0; i < 3; i++) {
    if (!isdigit ((unsigned char) *v))
      return false;
    errno = 0;
    *out[i] = strtoull (v, &end, 10);
    if (errno || *end != seps[i])
      return false;
    v = end + 1;
  }
  return true;
}

/* The value of the last Content-Range header after the last status
 * line, as http_reply_header would see it, or false if none. */
static bool
oracle_last_range (const char *head, const char *end, char *value,
                   size_t value_size)
{
  const char *p = head, *line;
  size_t len;
  bool found = false;

  while (next_line (&p, end, &line, &len)) {
    char buf[HTTP_REPLY_LINE_MAX];
    char *e, *v;

    if (p - line >= HTTP_REPLY_LINE_MAX)  /* as fed: with its '\n' */
      continue;
    memcpy (buf, line, len);
    buf[len] = '\0';
    for (e = buf + strlen (buf); e > buf && strchr ("\r\n \t", e[-1]); )
      *--e = '\0';
    if (strncmp (buf, "HTTP/", 5) == 0)
      found = false;
    else if (strncasecmp (buf, "Content-Range:", 14) == 0) {
      for (v = buf + 14; *v == ' ' || *v == '\t'; v++)
        ;
      snprintf (value, value_size, "%s", v);
      found = true;
    }
  }
  return found;
}

static void
check_accepted (const struct http_request *req, const struct http_reply *r,
                struct http_verdict *v, const char *head, const char *end)
{
  char value[HTTP_REPLY_LINE_MAX];
  uint64_t a, b, c, want_last;

  FUZZ_ASSERT (v->blame == HTTP_BLAME_NONE);
  if (req->whole) {
    FUZZ_ASSERT (r->status == 200);
    FUZZ_ASSERT (r->content_length < 0 ||
                 (req->exact ? (uint64_t) r->content_length == req->length
                             : (uint64_t) r->content_length <= req->length));
    FUZZ_ASSERT (v->length == req->length);
  }
  else {
    FUZZ_ASSERT (r->status == 206);
    FUZZ_ASSERT (oracle_last_range (head, end, value, sizeof value));
    FUZZ_ASSERT (oracle_range (value, &a, &b, &c));
    want_last = req->first + req->length - 1;
    if (req->probe && want_last > c - 1)
      want_last = c - 1;
    FUZZ_ASSERT (a == req->first && b == want_last && b < c);
    FUZZ_ASSERT (req->probe || c == req->pinned_size);
    FUZZ_ASSERT (v->length == b - a + 1 && v->length <= req->length);
    if (!req->probe && req->pinned_etag && r->etag[0])
      FUZZ_ASSERT (strcmp (r->etag, req->pinned_etag) == 0);
  }

  /* The body: exactly v->length bytes (at most, whole and not exact). */
  struct http_verdict body = *v;
  FUZZ_ASSERT (http_reply_check_body (req, &body, v->length, true) == 0);
  FUZZ_ASSERT (http_reply_check_body (req, &body, v->length, false) == 0);
  if (v->length < UINT64_MAX) {
    FUZZ_ASSERT (http_reply_check_body (req, &body, v->length + 1,
                                        false) == -1);
    FUZZ_ASSERT (!body.ok && body.fault == HTTP_FAULT_LENGTH);
  }
  body = *v;
  if (v->length > 0 && !(req->whole && !req->exact))
    FUZZ_ASSERT (http_reply_check_body (req, &body, v->length - 1,
                                        true) == -1);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char text[INPUT_MAX + 1], etag[256], lm[256];
  const char *p = text, *end, *line, *head;
  size_t len;
  struct http_request req;
  struct http_reply r;
  struct http_verdict v;
  struct http_content_range cr;
  int64_t cl;

  if (size > INPUT_MAX)
    return 0;
  memcpy (text, data, size);
  text[size] = '\0';
  end = text + size;

  /* The parsers alone, on the whole input as one value. */
  http_parse_content_range (text, &cr);
  http_parse_content_length (text, &cl);

  if (!next_line (&p, end, &line, &len) || !parse_request (line, len, &req))
    return 0;
  if (!next_line (&p, end, &line, &len) || len >= sizeof etag)
    return 0;
  snprintf (etag, sizeof etag, "%.*s", (int) len, line);
  if (!next_line (&p, end, &line, &len) || len >= sizeof lm)
    return 0;
  snprintf (lm, sizeof lm, "%.*s", (int) len, line);
  req.pinned_etag = etag[0] ? etag : NULL;
  req.pinned_last_modified = lm[0] ? lm : NULL;

  head = p;
  http_reply_reset (&r);
  while (p < end) {             /* lines with their '\n', as from curl */
    const char *nl = memchr (p, '\n', end - p);
    const char *next = nl ? nl + 1 : end;

    http_reply_header (&r, p, next - p);
    p = next;
  }

  if (http_reply_check (&req, &r, &v) == 0) {
    FUZZ_ASSERT (v.ok);
    check_accepted (&req, &r, &v, head, end);
  }
  else {
    FUZZ_ASSERT (!v.ok && v.fault < HTTP_FAULT_KINDS);
    FUZZ_ASSERT (v.blame != HTTP_BLAME_NONE && v.why[0] != '\0');
    FUZZ_ASSERT (strcmp (http_blame_name (v.blame), "?") != 0);
  }
  return 0;
}
