/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the health and the counters of one origin endpoint (a
 * server a source fetches from), kept in one place so that a source
 * with several mirrors can keep one per mirror.
 *
 * An endpoint is up until a transfer to it fails in a way that says
 * nobody is there (connection refused, name not resolved, connect
 * timeout: endpoint_report_down).  While it is down, transfers fail at
 * once instead of knocking again, except that once the back-off has
 * passed, one transfer is let through as a probe (endpoint_admit).
 * The back-off doubles after each failed probe, from base_ms up to
 * max_ms.  Any transfer that reaches the server marks it up again
 * (endpoint_report_up).
 *
 * Not thread-safe: the owner serialises calls (the HTTP source holds
 * its lock).  Times are CLOCK_MONOTONIC nanoseconds passed in by the
 * caller, so the state machine can be tested without sleeping.
 */
#ifndef CLOOP_ENDPOINT_H
#define CLOOP_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "histogram.h"

/* Why an attempt failed.  Counted per kind in struct http_stats. */
enum http_fault {
  HTTP_FAULT_TRANSPORT,         /* connect, reset, TLS, partial body */
  HTTP_FAULT_TIMEOUT,           /* deadline or low-speed limit */
  HTTP_FAULT_STATUS,            /* 4xx/5xx (416 counts as RANGE) */
  HTTP_FAULT_NOT_PARTIAL,       /* 200: Range ignored or If-Range failed */
  HTTP_FAULT_RANGE,             /* 416, missing or wrong Content-Range */
  HTTP_FAULT_LENGTH,            /* body shorter or longer than asked */
  HTTP_FAULT_CHANGED,           /* ETag, Last-Modified or size changed */
  HTTP_FAULT_KINDS
};

/* The counters of one endpoint (all transfers to one origin URL). */
struct http_stats {
  uint64_t requests;            /* GETs sent, retries and probe included */
  uint64_t checks;              /* ... that checked its copy of the object
                                   (the probe at start, a mirror's check
                                   of the header and index) */
  uint64_t ranges;              /* caller ranges asked for */
  uint64_t head_hits;           /* ranges served (wholly or in part) from the probed head */
  uint64_t coalesced;           /* ranges that rode in another's GET */
  uint64_t bytes_fetched;       /* body bytes of replies that validated */
  uint64_t retries;             /* attempts after the first */
  uint64_t failures;            /* ranges that ended in EIO */
  uint64_t origin_down_events;  /* times the server was marked down */
  uint64_t probes;              /* requests let through to a down server */
  uint64_t fast_failures;       /* transfers failed at once: server down */
  uint64_t refetches;           /* ranges fetched again after a content fault */
  uint64_t content_faults;      /* copies it served that the caller found
                                   faulty (no decode, wrong hash) */
  uint64_t benched;             /* times it was avoided for that */
  uint64_t hedges;              /* copies of slow transfers sent to it */
  uint64_t hedges_won;          /* ... that answered first */
  uint64_t tails_taken;         /* GETs of it cut short, their last
                                   bytes asked of another (idle) one */
  uint64_t faults[HTTP_FAULT_KINDS];
  struct histogram latency;     /* of attempts, start to end */
};

/* Short lower-case name of a fault kind, e.g. "not-partial". */
const char *http_fault_name (enum http_fault kind);


/* Health. */
struct endpoint_health {
  unsigned base_ms, max_ms;     /* probe back-off schedule */
  bool down;                    /* marked down, not yet seen back */
  unsigned failed_probes;       /* probes failed since it went down */
  uint64_t down_since_ns;       /* when it was marked down */
  uint64_t next_probe_ns;       /* no probe before this */
  const void *probe;            /* the transfer probing now, or NULL */
  uint64_t down_events;         /* times it went from up to down */
};

/* What a transfer about to start may do. */
enum endpoint_admission {
  ENDPOINT_GO,                  /* up: go ahead */
  ENDPOINT_PROBE,               /* down, back-off over: go, as the probe */
  ENDPOINT_FAIL_FAST,           /* down: fail now without trying */
};

/* An endpoint that is up, with this probe back-off schedule. */
void endpoint_init (struct endpoint_health *h, unsigned base_ms,
                    unsigned max_ms);

/* May transfer 'who' start now?  ENDPOINT_PROBE makes who the probe:
 * its outcome must be reported (endpoint_report_*) or, if it never
 * ran, endpoint_cancel'd, else no other probe is let through. */
enum endpoint_admission endpoint_admit (struct endpoint_health *h,
                                        const void *who, uint64_t now_ns);

/* Would endpoint_admit let a transfer go now (up, or a probe due)?
 * No side effect. */
bool endpoint_would_admit (const struct endpoint_health *h, uint64_t now_ns);

/* Would a transfer go out now without being a probe?  (Up.)  Callers
 * use it to decide whether optional work such as read-ahead is worth
 * a transfer. */
bool endpoint_is_up (const struct endpoint_health *h);

/* A transfer by who found nobody at the endpoint.  Returns true if
 * this marked it down (it was up: log it once).  A failed probe
 * doubles the back-off before the next one. */
bool endpoint_report_down (struct endpoint_health *h, const void *who,
                           uint64_t now_ns);

/* A transfer by who reached the server (whatever it answered).
 * Returns true if this marked a down endpoint up (log it once). */
bool endpoint_report_up (struct endpoint_health *h, const void *who);

/* who was admitted as the probe but never started: let another go. */
void endpoint_cancel (struct endpoint_health *h, const void *who);

/* Milliseconds until the next probe may go (0 if up or due). */
uint64_t endpoint_ms_to_probe (const struct endpoint_health *h,
                               uint64_t now_ns);

#endif /* CLOOP_ENDPOINT_H */
