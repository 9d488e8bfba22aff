/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of the origin health state machine
 * (fetch/endpoint.c), on a simulated clock: a down endpoint fails
 * transfers at once, lets exactly one probe through per back-off
 * period, doubles the back-off after each failed probe up to its cap,
 * and is up again after any transfer that reached the server. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include "endpoint.h"

#define PROG "test-endpoint"

#include "check.h"

#define MS 1000000ULL

int
main (void)
{
  struct endpoint_health h;
  int a, b, c;                  /* three transfers */
  uint64_t t = 1000 * MS;

  endpoint_init (&h, 1000, 4000);
  CHECK (endpoint_is_up (&h));
  CHECK (endpoint_admit (&h, &a, t) == ENDPOINT_GO);
  CHECK (endpoint_admit (&h, &b, t) == ENDPOINT_GO);

  /* Both find nobody: marked down once, one event. */
  CHECK (endpoint_report_down (&h, &a, t));
  CHECK (!endpoint_report_down (&h, &b, t));
  CHECK (!endpoint_is_up (&h));
  CHECK (h.down_events == 1);

  /* Inside the back-off everything fails at once. */
  CHECK (endpoint_admit (&h, &c, t + 999 * MS) == ENDPOINT_FAIL_FAST);
  CHECK (endpoint_ms_to_probe (&h, t + 999 * MS) == 1);

  /* After it, one probe; others still fail while it runs. */
  t += 1000 * MS;
  CHECK (endpoint_admit (&h, &a, t) == ENDPOINT_PROBE);
  CHECK (endpoint_admit (&h, &b, t) == ENDPOINT_FAIL_FAST);
  CHECK (!endpoint_is_up (&h));

  /* The probe fails: next one after 2 s, then 4 s, then capped at 4. */
  CHECK (!endpoint_report_down (&h, &a, t));
  CHECK (endpoint_admit (&h, &a, t + 1999 * MS) == ENDPOINT_FAIL_FAST);
  t += 2000 * MS;
  CHECK (endpoint_admit (&h, &a, t) == ENDPOINT_PROBE);
  CHECK (!endpoint_report_down (&h, &a, t));
  CHECK (endpoint_ms_to_probe (&h, t) == 4000);
  t += 4000 * MS;
  CHECK (endpoint_admit (&h, &a, t) == ENDPOINT_PROBE);
  CHECK (!endpoint_report_down (&h, &a, t));
  CHECK (endpoint_ms_to_probe (&h, t) == 4000);

  /* A late failure of a transfer that is not the probe changes
   * nothing (it started before the server went down). */
  CHECK (!endpoint_report_down (&h, &c, t + 1 * MS));
  CHECK (endpoint_ms_to_probe (&h, t) == 4000);

  /* A probe that never ran lets the next transfer probe. */
  t += 4000 * MS;
  CHECK (endpoint_admit (&h, &a, t) == ENDPOINT_PROBE);
  endpoint_cancel (&h, &a);
  CHECK (endpoint_admit (&h, &b, t) == ENDPOINT_PROBE);

  /* It succeeds: up, once; the schedule starts over. */
  CHECK (endpoint_report_up (&h, &b));
  CHECK (!endpoint_report_up (&h, &c));
  CHECK (endpoint_is_up (&h));
  CHECK (endpoint_admit (&h, &c, t) == ENDPOINT_GO);
  CHECK (endpoint_report_down (&h, &c, t));
  CHECK (h.down_events == 2);
  CHECK (endpoint_ms_to_probe (&h, t) == 1000);

  printf (PROG ": PASS\n");
  return 0;
}
