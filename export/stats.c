/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: printing the statistics snapshot (see stats.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "atomicfile.h"
#include "stats.h"

void
stats_snapshot_free (struct stats_snapshot *snap)
{
  for (size_t i = 0; snap->exports && i < snap->n_exports; i++) {
    struct export_snapshot *x = &snap->exports[i];
    for (size_t j = 0; x->endpoints && j < x->n_endpoints; j++)
      free (x->endpoints[j].url);
    free (x->endpoints);
    free (x->name);
  }
  free (snap->exports);
  snap->exports = NULL;
  snap->n_exports = 0;
}

/* ---- Debug lines -------------------------------------------------------- */

static void __attribute__ ((format (printf, 3, 4)))
emit (void (*line) (void *, const char *), void *opaque, const char *fmt, ...)
{
  char buf[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  line (opaque, buf);
}

static void
format_export (const struct export_snapshot *x,
               void (*line) (void *, const char *), void *opaque)
{
  const struct read_stats *r = &x->reads;
  const struct block_cache_stats *m = &x->memory;

  if (!x->open && r->reads == 0) {
    emit (line, opaque, "export %s: not open", x->name);
    return;
  }
  emit (line, opaque, "export %s: nbd: %" PRIu64 " reads, %" PRIu64
        " bytes, %" PRIu64 " failed, latency p50 <= %g s, p99 <= %g s",
        x->name, r->reads, r->bytes, r->errors,
        histogram_quantile (&r->latency, 0.5),
        histogram_quantile (&r->latency, 0.99));
  emit (line, opaque, "export %s: memory cache: %" PRIu64 " hits, %" PRIu64
        " misses, %" PRIu64 " waits, %" PRIu64 " evictions, %" PRIu64
        " failed fills, %" PRIu64 " bytes in %" PRIu64 " blocks", x->name,
        m->hits, m->misses, m->waits, m->evictions, m->fill_failures,
        m->bytes_cached, m->entries);
  emit (line, opaque, "export %s: prefetch: %" PRIu64 " blocks filled, %"
        PRIu64 " used, %" PRIu64 " wasted, %" PRIu64 " reads waited on one; %"
        PRIu64 " read ahead to disk (%" PRIu64 " faulty)",
        x->name, m->prefetched, m->prefetch_used, m->prefetch_wasted,
        m->prefetch_waits, x->disk_readahead, x->disk_readahead_faulty);
  if (x->have_replay)
    emit (line, opaque, "export %s: boot profile: %" PRIu64 " blocks, %"
          PRIu64 " queued, %" PRIu64 " fetched, %" PRIu64 " skipped "
          "(cached), %" PRIu64 " jumps, clients at entry %" PRIu64
          " (%" PRIu64 " entries read, the furthest %" PRIu64 ")", x->name,
          x->replay.profile_blocks, x->replay.queued, x->replay.fetched,
          x->replay.skipped, x->replay.jumps, x->replay.client_position,
          x->replay.client_read, x->replay.client_furthest);
  if (x->recording)
    emit (line, opaque, "export %s: recording: %" PRIu64 " blocks touched",
          x->name, x->recorded);
  for (size_t j = 0; j < x->n_endpoints; j++) {
    const struct http_stats *h = &x->endpoints[j].http;
    emit (line, opaque, "export %s: http: %" PRIu64 " requests, %" PRIu64
          " bytes fetched, %" PRIu64 " retries, %" PRIu64 " failed ranges, %"
          PRIu64 " refetches, %" PRIu64 " faulty copies, benched %" PRIu64
          " times, %" PRIu64 " hedges (%" PRIu64 " won), %" PRIu64
          " tails taken, server down %"
          PRIu64 " times, %" PRIu64
          " probes, %" PRIu64 " fast failures, %" PRIu64 " copy checks, "
          "latency p50 <= %g s, "
          "p99 <= %g s (%s)", x->name, h->requests, h->bytes_fetched,
          h->retries, h->failures, h->refetches, h->content_faults,
          h->benched, h->hedges, h->hedges_won, h->tails_taken,
          h->origin_down_events,
          h->probes, h->fast_failures, h->checks,
          histogram_quantile (&h->latency, 0.5),
          histogram_quantile (&h->latency, 0.99), x->endpoints[j].url);
  }
}

void
stats_format (const struct stats_snapshot *snap, const char *only,
              void (*line) (void *opaque, const char *text), void *opaque)
{
  const struct block_cache_stats *m = &snap->memory;

  for (size_t i = 0; i < snap->n_exports; i++)
    if (only == NULL || strcmp (only, snap->exports[i].name) == 0)
      format_export (&snap->exports[i], line, opaque);
  emit (line, opaque, "memory cache, all exports: %" PRIu64 " of %" PRIu64
        " bytes in %" PRIu64 " blocks, %" PRIu64 " evictions",
        m->bytes_cached, snap->memory_budget, m->entries, m->evictions);
  if (snap->have_disk) {
    const struct disk_cache_stats *d = &snap->disk;
    emit (line, opaque, "disk cache: %" PRIu64 " hits, %" PRIu64 " misses, %"
          PRIu64 " corrupt, %" PRIu64 " written, %" PRIu64 " failed writes, %"
          PRIu64 " skipped writes, %" PRIu64 " evictions, %" PRIu64 " bytes",
          d->hits, d->misses, d->corrupt, d->puts, d->put_failures,
          d->puts_skipped, d->evictions, d->bytes);
  }
}

/* ---- Prometheus --------------------------------------------------------- */

/* A label value with \, " and newline escaped. */
static void
put_label (FILE *f, const char *s)
{
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      fputc ('\\', f), fputc (*s, f);
    else if (*s == '\n')
      fputs ("\\n", f);
    else
      fputc (*s, f);
  }
}

static void
family (FILE *f, const char *name, const char *type, const char *help)
{
  fprintf (f, "# HELP nbdkit_cloop_%s %s\n# TYPE nbdkit_cloop_%s %s\n",
           name, help, name, type);
}

/* The labels of an export, or of one of its endpoints (url != NULL),
 * with extra ("kind=\"x\"" etc.) appended if not NULL. */
static void
labels (FILE *f, const char *export, const char *url, const char *extra)
{
  fputs ("{export=\"", f);
  put_label (f, export);
  if (url) {
    fputs ("\",endpoint=\"", f);
    put_label (f, url);
  }
  fputc ('"', f);
  if (extra)
    fprintf (f, ",%s", extra);
  fputc ('}', f);
}

static void
histogram (FILE *f, const char *name, const char *export, const char *url,
           const struct histogram *h)
{
  uint64_t cum = 0;
  char le[48];

  for (unsigned i = 0; i <= HISTOGRAM_BOUNDS; i++) {
    cum += h->bucket[i];
    if (i < HISTOGRAM_BOUNDS)
      snprintf (le, sizeof le, "le=\"%g\"", histogram_bounds_s[i]);
    else
      snprintf (le, sizeof le, "le=\"+Inf\"");
    fprintf (f, "nbdkit_cloop_%s_bucket", name);
    labels (f, export, url, le);
    fprintf (f, " %" PRIu64 "\n", cum);
  }
  fprintf (f, "nbdkit_cloop_%s_sum", name);
  labels (f, export, url, NULL);
  fprintf (f, " %.9f\n", h->sum_ns / 1e9);
  fprintf (f, "nbdkit_cloop_%s_count", name);
  labels (f, export, url, NULL);
  fprintf (f, " %" PRIu64 "\n", h->count);
}

/* A per-export value: name, type, help, and where it lives. */
struct export_metric {
  const char *name, *type, *help;
  size_t offset;                /* of a uint64_t in export_snapshot */
};

#define XM(n, t, h, field) { n, t, h, offsetof (struct export_snapshot, field) }
static const struct export_metric export_metrics[] = {
  XM ("nbd_reads_total", "counter", "Client read requests.", reads.reads),
  XM ("nbd_read_bytes_total", "counter", "Bytes client reads asked for.",
      reads.bytes),
  XM ("nbd_read_errors_total", "counter", "Client reads that failed.",
      reads.errors),
  XM ("memory_cache_hits_total", "counter",
      "Block lookups served by the memory cache.", memory.hits),
  XM ("memory_cache_misses_total", "counter",
      "Block lookups the memory cache could not serve.", memory.misses),
  XM ("memory_cache_waits_total", "counter",
      "Block lookups that waited for another reader's fill.", memory.waits),
  XM ("memory_cache_evictions_total", "counter",
      "Blocks evicted from the memory cache.", memory.evictions),
  XM ("memory_cache_fill_failures_total", "counter",
      "Block fills that failed (fetch, hash or decode).",
      memory.fill_failures),
  XM ("memory_cache_bytes", "gauge",
      "Decoded bytes held in the memory cache.", memory.bytes_cached),
  XM ("memory_cache_blocks", "gauge",
      "Blocks held in the memory cache.", memory.entries),
  XM ("prefetch_blocks_total", "counter",
      "Blocks filled in the background (read-ahead, NBD_CMD_CACHE, boot "
      "profiles).", memory.prefetched),
  XM ("prefetch_used_blocks_total", "counter",
      "Background-filled blocks a client read before they were evicted.",
      memory.prefetch_used),
  XM ("prefetch_wasted_blocks_total", "counter",
      "Background-filled blocks evicted before any client read them.",
      memory.prefetch_wasted),
  XM ("profile_blocks", "gauge",
      "Entries of the boot profile being replayed (0: none).",
      replay.profile_blocks),
  XM ("profile_queued_blocks_total", "counter",
      "Boot profile entries the replay has reached (queued or jumped "
      "over).", replay.queued),
  XM ("profile_fetched_blocks_total", "counter",
      "Blocks the boot profile's replay filled (or tried to).",
      replay.fetched),
  XM ("profile_skipped_blocks_total", "counter",
      "Boot profile blocks the replay found cached or in flight.",
      replay.skipped),
  XM ("profile_jumps_total", "counter",
      "Times the clients ran ahead of the boot profile's replay.",
      replay.jumps),
  XM ("profile_recorded_blocks", "gauge",
      "Blocks recorded so far by profile-record=.", recorded),
  XM ("prefetch_waits_total", "counter",
      "Client block lookups that waited for a background fill in flight.",
      memory.prefetch_waits),
  XM ("readahead_disk_blocks_total", "counter",
      "Blocks read ahead into the disk cache only (readahead-disk=).",
      disk_readahead),
  XM ("readahead_disk_faulty_total", "counter",
      "Faulty copies read ahead into the disk cache (dropped).",
      disk_readahead_faulty),
};
#undef XM

/* A per-endpoint counter. */
struct endpoint_metric {
  const char *name, *help;
  size_t offset;                /* of a uint64_t in struct http_stats */
};

#define EM(n, h, field) { n, h, offsetof (struct http_stats, field) }
static const struct endpoint_metric endpoint_metrics[] = {
  EM ("http_requests_total", "HTTP requests sent (retries and probes "
      "included).", requests),
  EM ("http_ranges_total", "Byte ranges and objects asked for.", ranges),
  EM ("http_coalesced_total", "Ranges that rode in another's request.",
      coalesced),
  EM ("http_received_bytes_total", "Body bytes of replies that validated.",
      bytes_fetched),
  EM ("http_retries_total", "Attempts after the first.", retries),
  EM ("http_failures_total", "Ranges that failed after every attempt.",
      failures),
  EM ("http_refetches_total", "Ranges fetched again after a content fault.",
      refetches),
  EM ("http_content_faults_total", "Copies it served that did not decode "
      "or match their hash.", content_faults),
  EM ("http_benched_total", "Times it was avoided for serving a faulty "
      "copy.", benched),
  EM ("http_hedges_total", "Copies of slow transfers elsewhere sent to "
      "it.", hedges),
  EM ("http_hedges_won_total", "Copies sent to it that answered first.",
      hedges_won),
  EM ("http_tails_taken_total", "Its GETs cut short, their last bytes "
      "asked of an idle mirror.", tails_taken),
  EM ("http_server_down_total", "Times the server was marked unreachable.",
      origin_down_events),
  EM ("http_probes_total", "Requests let through to an unreachable server.",
      probes),
  EM ("http_copy_checks_total", "Requests that checked the server's copy "
      "of the object (the probe at start, a mirror's header and index).",
      checks),
  EM ("http_fast_failures_total", "Transfers failed at once: server "
      "unreachable.", fast_failures),
};
#undef EM

static uint64_t
field_of (const void *base, size_t offset)
{
  uint64_t v;

  memcpy (&v, (const char *) base + offset, sizeof v);
  return v;
}

static void
write_exports (const struct stats_snapshot *snap, FILE *f)
{
  family (f, "export_open", "gauge", "1 if the export's image is open.");
  for (size_t i = 0; i < snap->n_exports; i++) {
    fputs ("nbdkit_cloop_export_open", f);
    labels (f, snap->exports[i].name, NULL, NULL);
    fprintf (f, " %d\n", snap->exports[i].open);
  }
  for (size_t k = 0; k < sizeof export_metrics / sizeof *export_metrics;
       k++) {
    const struct export_metric *m = &export_metrics[k];
    family (f, m->name, m->type, m->help);
    for (size_t i = 0; i < snap->n_exports; i++) {
      fprintf (f, "nbdkit_cloop_%s", m->name);
      labels (f, snap->exports[i].name, NULL, NULL);
      fprintf (f, " %" PRIu64 "\n", field_of (&snap->exports[i], m->offset));
    }
  }
  family (f, "nbd_read_duration_seconds", "histogram",
          "Time to answer a client read.");
  for (size_t i = 0; i < snap->n_exports; i++)
    histogram (f, "nbd_read_duration_seconds", snap->exports[i].name, NULL,
               &snap->exports[i].reads.latency);
}

static void
write_endpoints (const struct stats_snapshot *snap, FILE *f)
{
  for (size_t k = 0; k < sizeof endpoint_metrics / sizeof *endpoint_metrics;
       k++) {
    const struct endpoint_metric *m = &endpoint_metrics[k];
    family (f, m->name, "counter", m->help);
    for (size_t i = 0; i < snap->n_exports; i++) {
      const struct export_snapshot *x = &snap->exports[i];
      for (size_t j = 0; j < x->n_endpoints; j++) {
        fprintf (f, "nbdkit_cloop_%s", m->name);
        labels (f, x->name, x->endpoints[j].url, NULL);
        fprintf (f, " %" PRIu64 "\n",
                 field_of (&x->endpoints[j].http, m->offset));
      }
    }
  }
  family (f, "http_errors_total", "counter",
          "Failed attempts, by kind of fault.");
  for (size_t i = 0; i < snap->n_exports; i++) {
    const struct export_snapshot *x = &snap->exports[i];
    for (size_t j = 0; j < x->n_endpoints; j++)
      for (int kind = 0; kind < HTTP_FAULT_KINDS; kind++) {
        char extra[64];
        snprintf (extra, sizeof extra, "kind=\"%s\"", http_fault_name (kind));
        fputs ("nbdkit_cloop_http_errors_total", f);
        labels (f, x->name, x->endpoints[j].url, extra);
        fprintf (f, " %" PRIu64 "\n", x->endpoints[j].http.faults[kind]);
      }
  }
  family (f, "http_request_duration_seconds", "histogram",
          "Time of one HTTP attempt, start to end.");
  for (size_t i = 0; i < snap->n_exports; i++) {
    const struct export_snapshot *x = &snap->exports[i];
    for (size_t j = 0; j < x->n_endpoints; j++)
      histogram (f, "http_request_duration_seconds", x->name,
                 x->endpoints[j].url, &x->endpoints[j].http.latency);
  }
}

/* A process-wide value. */
static void
process_metric (FILE *f, const char *name, const char *type,
                const char *help, uint64_t value)
{
  family (f, name, type, help);
  fprintf (f, "nbdkit_cloop_%s %" PRIu64 "\n", name, value);
}

static void
write_process (const struct stats_snapshot *snap, FILE *f)
{
  const struct disk_cache_stats *d = &snap->disk;

  process_metric (f, "memory_cache_budget_bytes", "gauge",
                  "The memory cache's bound (memory-cache-size=).",
                  snap->memory_budget);
  if (!snap->have_disk)
    return;
  process_metric (f, "disk_cache_hits_total", "counter",
                  "Disk cache reads that returned a verified entry.", d->hits);
  process_metric (f, "disk_cache_misses_total", "counter",
                  "Disk cache reads that found nothing usable.", d->misses);
  process_metric (f, "disk_cache_corrupt_total", "counter",
                  "Disk cache entries found bad and deleted.", d->corrupt);
  process_metric (f, "disk_cache_writes_total", "counter",
                  "Disk cache entries written.", d->puts);
  process_metric (f, "disk_cache_write_failures_total", "counter",
                  "Disk cache writes that failed.", d->put_failures);
  process_metric (f, "disk_cache_writes_skipped_total", "counter",
                  "Disk cache writes not attempted (paused, too big).",
                  d->puts_skipped);
  process_metric (f, "disk_cache_evictions_total", "counter",
                  "Disk cache entries evicted (cache-max-size=).",
                  d->evictions);
  process_metric (f, "disk_cache_bytes", "gauge",
                  "Bytes the disk cache holds.", d->bytes);
}

int
stats_write_prometheus (const struct stats_snapshot *snap, FILE *f)
{
  write_exports (snap, f);
  write_endpoints (snap, f);
  write_process (snap, f);
  if (fflush (f) == EOF || ferror (f)) {
    if (errno == 0)
      errno = EIO;
    return -1;
  }
  return 0;
}

int
stats_write_file (const struct stats_snapshot *snap, const char *path,
                  struct cloop_err *err)
{
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&text, &len);
  int r;

  if (f == NULL)
    return cloop_err_set (err, errno, "metrics-file %s: %m", path);
  r = stats_write_prometheus (snap, f);
  if (fclose (f) == EOF || r == -1) {
    free (text);
    return cloop_err_set (err, errno ? errno : ENOMEM,
                          "metrics-file %s: out of memory", path);
  }
  r = atomic_file_write (path, text, len, "metrics-file", err);
  free (text);
  return r;
}
