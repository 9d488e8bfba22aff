/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a latency histogram with fixed bucket bounds. */
#include <config.h>

#include "histogram.h"

/* 1 ms to 30 s: a cached block takes microseconds (first bucket), one
 * round trip to a mirror 1-300 ms, a retried transfer seconds. */
const double histogram_bounds_s[HISTOGRAM_BOUNDS] = {
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

void
histogram_add (struct histogram *h, uint64_t ns)
{
  unsigned i = 0;

  while (i < HISTOGRAM_BOUNDS && ns > histogram_bounds_s[i] * 1e9)
    i++;
  h->bucket[i]++;
  h->count++;
  h->sum_ns += ns;
}

void
histogram_merge (struct histogram *dst, const struct histogram *src)
{
  dst->count += src->count;
  dst->sum_ns += src->sum_ns;
  for (unsigned i = 0; i <= HISTOGRAM_BOUNDS; i++)
    dst->bucket[i] += src->bucket[i];
}

double
histogram_quantile (const struct histogram *h, double q)
{
  uint64_t seen = 0;

  if (h->count == 0)
    return 0;
  for (unsigned i = 0; i < HISTOGRAM_BOUNDS; i++) {
    seen += h->bucket[i];
    if (seen >= q * h->count)
      return histogram_bounds_s[i];
  }
  return histogram_bounds_s[HISTOGRAM_BOUNDS - 1];
}
