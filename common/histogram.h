/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a latency histogram with fixed bucket bounds (those of
 * a Prometheus histogram: cumulative "le" buckets are derived when
 * printing).  Plain data: the owner serialises updates (or copies it
 * under its own lock for a snapshot).
 */
#ifndef CLOOP_HISTOGRAM_H
#define CLOOP_HISTOGRAM_H

#include <stdint.h>

/* Upper bounds of the buckets in seconds, ascending; the last bucket
 * (index HISTOGRAM_BOUNDS) counts everything above the last bound. */
#define HISTOGRAM_BOUNDS 14
extern const double histogram_bounds_s[HISTOGRAM_BOUNDS];

struct histogram {
  uint64_t count;                       /* observations */
  uint64_t sum_ns;                      /* their sum */
  uint64_t bucket[HISTOGRAM_BOUNDS + 1];/* per bucket, not cumulative */
};

/* Count one observation of ns nanoseconds. */
void histogram_add (struct histogram *h, uint64_t ns);

/* Add every count of src to dst (for totals over several owners). */
void histogram_merge (struct histogram *dst, const struct histogram *src);

/* The smallest bucket bound (seconds) at or below which at least
 * fraction q (0 < q <= 1) of the observations fall; the last bound if
 * more lie above it, 0 if there are none.  Coarse, for log lines. */
double histogram_quantile (const struct histogram *h, double q);

#endif /* CLOOP_HISTOGRAM_H */
