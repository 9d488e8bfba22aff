/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the health of one origin endpoint (see endpoint.h). */
#include <config.h>

#include <stddef.h>

#include "endpoint.h"

void
endpoint_init (struct endpoint_health *h, unsigned base_ms, unsigned max_ms)
{
  *h = (struct endpoint_health) {
    .base_ms = base_ms ? base_ms : 1,
    .max_ms = max_ms > base_ms ? max_ms : base_ms,
  };
}

/* The wait before the next probe: base, doubled per failed probe. */
static uint64_t
probe_backoff_ms (const struct endpoint_health *h)
{
  uint64_t ms = h->base_ms;

  for (unsigned i = 0; i < h->failed_probes && ms < h->max_ms; i++)
    ms *= 2;
  return ms < h->max_ms ? ms : h->max_ms;
}

enum endpoint_admission
endpoint_admit (struct endpoint_health *h, const void *who, uint64_t now_ns)
{
  if (!h->down)
    return ENDPOINT_GO;
  if (h->probe != NULL || now_ns < h->next_probe_ns)
    return ENDPOINT_FAIL_FAST;
  h->probe = who;
  return ENDPOINT_PROBE;
}

bool
endpoint_would_admit (const struct endpoint_health *h, uint64_t now_ns)
{
  return !h->down || (h->probe == NULL && now_ns >= h->next_probe_ns);
}

bool
endpoint_is_up (const struct endpoint_health *h)
{
  return !h->down;
}

bool
endpoint_report_down (struct endpoint_health *h, const void *who,
                      uint64_t now_ns)
{
  bool went_down = !h->down;

  if (went_down) {
    h->down = true;
    h->failed_probes = 0;
    h->down_since_ns = now_ns;
    h->down_events++;
  }
  else if (who == h->probe) {
    h->probe = NULL;
    h->failed_probes++;
  }
  else
    return false;     /* started before it went down: already counted */
  h->next_probe_ns = now_ns + probe_backoff_ms (h) * 1000000;
  return went_down;
}

bool
endpoint_report_up (struct endpoint_health *h, const void *who)
{
  bool was_down = h->down;

  (void) who;
  h->down = false;
  h->probe = NULL;
  h->failed_probes = 0;
  return was_down;
}

void
endpoint_cancel (struct endpoint_health *h, const void *who)
{
  if (h->probe == who)
    h->probe = NULL;
}

uint64_t
endpoint_ms_to_probe (const struct endpoint_health *h, uint64_t now_ns)
{
  if (!h->down || now_ns >= h->next_probe_ns)
    return 0;
  return (h->next_probe_ns - now_ns + 999999) / 1000000;
}

const char *
http_fault_name (enum http_fault kind)
{
  static const char *const names[HTTP_FAULT_KINDS] = {
    [HTTP_FAULT_TRANSPORT] = "transport",
    [HTTP_FAULT_TIMEOUT] = "timeout",
    [HTTP_FAULT_STATUS] = "status",
    [HTTP_FAULT_NOT_PARTIAL] = "not-partial",
    [HTTP_FAULT_RANGE] = "range",
    [HTTP_FAULT_LENGTH] = "length",
    [HTTP_FAULT_CHANGED] = "changed",
  };

  return (unsigned) kind < HTTP_FAULT_KINDS ? names[kind] : "unknown";
}
