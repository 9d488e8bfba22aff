/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: checking an HTTP reply against what was asked for.
 *
 * Pure functions, no I/O and no libcurl: the head of a reply (status
 * line and the headers we care about) is collected line by line into a
 * struct http_reply, then http_reply_check decides whether its body
 * may be stored, and if not, which fault it is and who is to blame.
 * fetch/http-xfer.c calls these from its libcurl callbacks;
 * fuzz/fuzz-http-reply.c feeds them arbitrary bytes.
 */
#ifndef CLOOP_HTTP_REPLY_H
#define CLOOP_HTTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"

/* Header lines this long or longer (as received, CRLF included) are
 * ignored: none of the headers we read is legitimately that long. */
#define HTTP_REPLY_LINE_MAX 512

/* A parsed Content-Range value: "bytes FIRST-LAST/TOTAL", where TOTAL
 * may be a star (unknown) and, in a 416 reply, so may FIRST-LAST. */
struct http_content_range {
  bool unsatisfied;             /* FIRST-LAST is a star: no range */
  bool total_unknown;           /* TOTAL is a star */
  uint64_t first, last;         /* inclusive; 0 if unsatisfied */
  uint64_t total;               /* 0 if total_unknown */
};

/* Parse a Content-Range value (NUL-terminated, leading spaces already
 * skipped).  Strict: "bytes " (any case), decimal numbers without
 * signs or spaces, first <= last < total, nothing after.  0, or -1 if
 * malformed (*cr is then unspecified). */
int http_parse_content_range (const char *value,
                              struct http_content_range *cr);

/* Parse a Content-Length value: decimal digits only, at most
 * INT64_MAX.  0, or -1 if malformed. */
int http_parse_content_length (const char *value, int64_t *len);

/* The head of one reply.  Fields are empty/zero/-1 when absent. */
struct http_reply {
  long status;                  /* 0 until a status line is seen */
  bool have_range;              /* a Content-Range header was seen ... */
  bool range_bad;               /* ... and it did not parse */
  struct http_content_range range;
  char range_raw[96];           /* the header's value, for messages */
  int64_t content_length;       /* -1 if absent or malformed */
  char etag[256];               /* as sent, quotes included */
  char last_modified[64];
  char date[64];                /* when the server sent the reply */
};

/* Forget everything (a new status line begins a new reply). */
void http_reply_reset (struct http_reply *r);

/* Feed one header line of len bytes as received (trailing CR/LF and
 * blanks are stripped; need not be NUL-terminated).  A status line
 * ("HTTP/...") resets r first; Content-Range, Content-Length, ETag,
 * Last-Modified and Date are recorded (the last one of each wins); everything
 * else, and any line of HTTP_REPLY_LINE_MAX bytes or more, is ignored. */
void http_reply_header (struct http_reply *r, const char *line, size_t len);

/* What was asked for. */
struct http_request {
  uint64_t first;               /* first byte asked for */
  uint64_t length;              /* bytes asked for (> 0) */
  bool probe;                   /* open-time probe: no pinned identity */
  bool whole;                   /* a whole immutable object, plain GET */
  bool exact;                   /* (whole) exactly length bytes */
  uint64_t pinned_size;         /* not probe, not whole: the pinned ... */
  const char *pinned_etag;      /* ... identity; NULL when unknown */
  const char *pinned_last_modified;
};

/* Who is to blame for a fault. */
enum http_blame {
  HTTP_BLAME_NONE,              /* no fault */
  HTTP_BLAME_SERVER,            /* a server or proxy misbehaved */
  HTTP_BLAME_CONTENT,           /* the object is not (any more) the
                                   one we pinned or asked for */
  HTTP_BLAME_US,                /* our request or configuration (4xx,
                                   unfollowed redirect, bad request) */
};

/* Short lower-case name of a blame, e.g. "server"; never NULL. */
const char *http_blame_name (enum http_blame blame);

struct http_verdict {
  bool ok;                      /* the body may be stored */
  uint64_t length;              /* ok: bytes to expect (the probe's
                                   length is clipped to the total);
                                   whole && !exact: an upper bound */
  enum http_fault fault;        /* !ok: the kind */
  enum http_blame blame;        /* !ok: who */
  bool hard;                    /* !ok: likely the server's nature (a
                                   probe's 200 or 416): retry once only */
  char why[256];                /* !ok: one phrase */
};

/* Judge a reply's head against req.  Accepts only: for whole, a 200
 * whose Content-Length (if any) fits; otherwise a 206 whose
 * Content-Range is exactly bytes first..first+length-1 of the pinned
 * total (for the probe: starts at first, clipped to its total, which
 * must be known) with unchanged validators.  Fills *v; returns 0 if
 * ok, else -1. */
int http_reply_check (const struct http_request *req,
                      const struct http_reply *r, struct http_verdict *v);

/* Judge the body of a reply that http_reply_check accepted: received
 * bytes so far, and whether the transfer has ended.  While it runs,
 * received must not exceed v->length; at its end it must equal
 * v->length (for a whole object that need not be exact, not exceed
 * it).  On a fault, turns v into a LENGTH fault and returns -1; else
 * 0. */
int http_reply_check_body (const struct http_request *req,
                           struct http_verdict *v, uint64_t received,
                           bool ended);

#endif /* CLOOP_HTTP_REPLY_H */
