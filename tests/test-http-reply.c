/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of HTTP reply checking (fetch/http-reply.c):
 * which replies are accepted, and for the others the fault kind and
 * who is to blame; and when a reply's validators are settled
 * (fetch/http-xfer.c).  Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "http-reply.h"
#include "http-xfer.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

/* Feed head (lines separated by '\n') into a fresh reply. */
static void
feed (struct http_reply *r, const char *head)
{
  http_reply_reset (r);
  while (*head) {
    const char *nl = strchr (head, '\n');
    size_t len = nl ? (size_t) (nl - head) + 1 : strlen (head);

    http_reply_header (r, head, len);
    head += len;
  }
}

/* Judge head against req: accepted (ok) or the expected kind and
 * culprit. */
static void
expect (int line, const struct http_request *req, const char *head,
        bool ok, enum http_fault kind, enum http_blame blame)
{
  struct http_reply r;
  struct http_verdict v;
  int rc;

  feed (&r, head);
  rc = http_reply_check (req, &r, &v);
  if (ok ? rc == 0 && v.ok
         : rc == -1 && !v.ok && v.fault == kind && v.blame == blame &&
           v.why[0])
    return;
  fprintf (stderr, "FAIL: line %d: rc %d, fault %s, blame %s: %s\n", line,
           rc, http_fault_name (v.fault), http_blame_name (v.blame), v.why);
  check_failures++;
}

#define OK(req, head) expect (__LINE__, req, head, true, 0, 0)
#define BAD(req, head, kind, blame) \
  expect (__LINE__, req, head, false, HTTP_FAULT_##kind, HTTP_BLAME_##blame)

static void
test_content_range (void)
{
  struct http_content_range cr;
  int64_t n;

  CHECK (http_parse_content_range ("bytes 0-9/10", &cr) == 0 &&
         cr.first == 0 && cr.last == 9 && cr.total == 10);
  CHECK (http_parse_content_range ("BYTES  5-5/*", &cr) == 0 &&
         cr.total_unknown && cr.first == 5);
  CHECK (http_parse_content_range ("bytes */100", &cr) == 0 &&
         cr.unsatisfied && cr.total == 100);
  CHECK (http_parse_content_range ("bytes 0-10/10", &cr) == -1);
  CHECK (http_parse_content_range ("bytes 9-0/10", &cr) == -1);
  CHECK (http_parse_content_range ("bytes -1-9/10", &cr) == -1);
  CHECK (http_parse_content_range ("bytes 0-9/10 ", &cr) == -1);
  CHECK (http_parse_content_range ("bytes 0-18446744073709551616/*",
                                   &cr) == -1);
  CHECK (http_parse_content_range ("items 0-9/10", &cr) == -1);
  CHECK (http_parse_content_length ("123", &n) == 0 && n == 123);
  CHECK (http_parse_content_length ("9223372036854775808", &n) == -1);
  CHECK (http_parse_content_length ("+1", &n) == -1);
}

static void
test_ranged (void)
{
  struct http_request req = {
    .first = 100, .length = 50, .pinned_size = 1000,
    .pinned_etag = "\"e1\"",
  };

  OK (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-149/1000\r\n"
      "ETag: \"e1\"\r\n\r\n");
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-150/1000\r\n",
       RANGE, SERVER);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 99-148/1000\r\n",
       RANGE, SERVER);
  BAD (&req, "HTTP/1.1 206 Partial\r\n", RANGE, SERVER);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-149/*\r\n",
       RANGE, SERVER);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-149/2000\r\n",
       CHANGED, CONTENT);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-149/1000\r\n"
       "ETag: \"e2\"\r\n", CHANGED, CONTENT);
  /* The last status line counts: a redirect's headers are forgotten. */
  BAD (&req, "HTTP/1.1 302 Found\r\nContent-Range: bytes 100-149/1000\r\n"
       "\r\nHTTP/1.1 206 Partial\r\n", RANGE, SERVER);
  BAD (&req, "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\n", NOT_PARTIAL, SERVER);
  BAD (&req, "HTTP/1.1 200 OK\r\n", NOT_PARTIAL, CONTENT);
  BAD (&req, "HTTP/1.1 200 OK\r\nETag: \"e2\"\r\n", CHANGED, CONTENT);
  BAD (&req, "HTTP/1.1 404 Not Found\r\n", STATUS, US);
  BAD (&req, "HTTP/1.1 302 Found\r\n", STATUS, US);
  BAD (&req, "HTTP/1.1 503 Busy\r\n", STATUS, SERVER);
  BAD (&req, "HTTP/1.1 429 Slow down\r\n", STATUS, SERVER);
  BAD (&req, "HTTP/1.1 416 No\r\nContent-Range: bytes */500\r\n",
       RANGE, CONTENT);
  BAD (&req, "HTTP/1.1 416 No\r\nContent-Range: bytes */1000\r\n",
       RANGE, SERVER);

  req.pinned_etag = NULL;
  req.pinned_last_modified = "Sun, 06 Dec 2026 02:00:00 GMT";
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 100-149/1000\r\n"
       "Last-Modified: Sun, 06 Dec 2026 03:00:00 GMT\r\n", CHANGED, CONTENT);

  req.length = 0;
  BAD (&req, "HTTP/1.1 206 Partial\r\n", RANGE, US);
}

static void
test_probe (void)
{
  struct http_request req = { .first = 0, .length = 65536, .probe = true };
  struct http_reply r;
  struct http_verdict v;

  feed (&r, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-999/1000\r\n");
  CHECK (http_reply_check (&req, &r, &v) == 0 && v.length == 1000);
  CHECK (http_reply_check_body (&req, &v, 1000, true) == 0);
  CHECK (http_reply_check_body (&req, &v, 1001, false) == -1 &&
         v.fault == HTTP_FAULT_LENGTH);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-998/1000\r\n",
       RANGE, SERVER);
  BAD (&req, "HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-999/*\r\n",
       NOT_PARTIAL, SERVER);
  BAD (&req, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n",
       NOT_PARTIAL, SERVER);
  BAD (&req, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
       NOT_PARTIAL, CONTENT);
  BAD (&req, "HTTP/1.1 416 No\r\nContent-Range: bytes */0\r\n",
       RANGE, CONTENT);
  feed (&r, "HTTP/1.1 200 OK\r\n");
  CHECK (http_reply_check (&req, &r, &v) == -1 && v.hard);
}

static void
test_whole (void)
{
  struct http_request req = { .length = 4096, .whole = true, .exact = true };
  struct http_reply r;
  struct http_verdict v;

  OK (&req, "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n");
  OK (&req, "HTTP/2 200\r\n");
  BAD (&req, "HTTP/1.1 200 OK\r\nContent-Length: 4095\r\n", LENGTH, CONTENT);
  BAD (&req, "HTTP/1.1 206 Partial\r\n", STATUS, SERVER);
  BAD (&req, "HTTP/1.1 404 Not Found\r\n", STATUS, US);
  feed (&r, "HTTP/2 200\r\n");
  CHECK (http_reply_check (&req, &r, &v) == 0);
  CHECK (http_reply_check_body (&req, &v, 4095, true) == -1);
  req.exact = false;
  OK (&req, "HTTP/1.1 200 OK\r\nContent-Length: 4095\r\n");
  feed (&r, "HTTP/2 200\r\n");
  CHECK (http_reply_check (&req, &r, &v) == 0);
  CHECK (http_reply_check_body (&req, &v, 4095, true) == 0);
}

/* A header line too long to be one we read is ignored. */
static void
test_long_line (void)
{
  struct http_request req = { .first = 0, .length = 10, .pinned_size = 10 };
  char head[2 * HTTP_REPLY_LINE_MAX];

  snprintf (head, sizeof head, "HTTP/1.1 206 Partial\r\n"
            "Content-Range: bytes 0-9/10%*s\r\n", HTTP_REPLY_LINE_MAX, "");
  BAD (&req, head, RANGE, SERVER);
}

/* The Date and Last-Modified headers are recorded; validators are
 * settled a second after Last-Modified (RFC 9110 8.8.2.2). */
static void
test_settled (void)
{
  struct http_reply r;
  const char *lm = "Sun, 06 Dec 2026 02:00:00 GMT";

  feed (&r, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 02:00:01 GMT\r\n"
        "Last-Modified: Sun, 06 Dec 2026 02:00:00 GMT\r\n");
  CHECK (strcmp (r.date, "Sun, 06 Dec 2026 02:00:01 GMT") == 0);
  CHECK (http_validators_settled (r.date, r.last_modified, NULL));
  CHECK (!http_validators_settled (lm, lm, "\"6b1-20\""));
  CHECK (!http_validators_settled ("Sun, 06 Dec 2026 01:59:00 GMT", lm,
                                   NULL));
  CHECK (!http_validators_settled (NULL, lm, "\"strong\""));
  CHECK (!http_validators_settled ("garbage", lm, NULL));
  CHECK (!http_validators_settled ("Sun, 06 Dec 2026 02:00:05 GMT",
                                   "garbage", NULL));
  /* No Last-Modified: a strong ETag alone names the version. */
  CHECK (http_validators_settled (lm, NULL, "\"abc\""));
  CHECK (http_validators_settled (NULL, "", "\"abc\""));
  CHECK (!http_validators_settled (lm, NULL, "W/\"abc\""));
  CHECK (!http_validators_settled (lm, NULL, NULL));
  /* The obsolete date forms every recipient must accept. */
  CHECK (http_validators_settled ("Sunday, 06-Dec-26 02:00:01 GMT", lm,
                                  NULL));
  CHECK (http_validators_settled ("Sun Dec  6 02:00:01 2026", lm, NULL));
}

int
main (void)
{
  test_content_range ();
  test_ranged ();
  test_probe ();
  test_whole ();
  test_long_line ();
  test_settled ();
  if (check_failures) {
    fprintf (stderr, "%d checks failed\n", check_failures);
    return 1;
  }
  printf ("test-http-reply: ok\n");
  return 0;
}
