/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of the HTTP source (fetch/http*.c) against
 * real servers.  It starts nothing itself; the shell test around it
 * does, and passes:
 *
 *   HTTP_URL, HTTP_FILE     a range-capable server (nginx) and the
 *                           file on disk it serves at that URL
 *   FAULT_URL, FAULT_FILE   tests/faultserver.py and its file (FAULT_FILE
 *                           defaults to HTTP_FILE)
 *   FAULT_CONTROL           the faultserver's --faults file
 *   HTTP_CAINFO             CA bundle for an https HTTP_URL
 *   HTTP_REDIRECT_URL       (optional) redirects to the HTTP_URL object
 *   HTTP_BAD_REDIRECT_URL   (optional) redirects to a non-HTTP URL
 *   HTTP_DEBUG=1            print the source's debug lines
 *
 * With neither URL set it is a usage error (exit 2): the test is
 * tests/test-http-source.sh, which starts the servers.  Checks:
 * byte-exact reads
 * before and after the worker starts, from 16 threads at once;
 * coalescing (by counting requests); bounds; then, with FAULT_URL,
 * that every injected fault gives exact data or EIO within the
 * deadline, and never wrong bytes, and that a cancelled read (the
 * cancelled callback) fails with ECANCELED at once, caller-driven and
 * through the worker.  Exit 0 on success, 1 on failure,
 * 2 on a usage error.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "http-xfer.h"
#include "source.h"

#define PROG "test-http-source"

#include "check.h"

static void __attribute__ ((format (printf, 1, 2)))
say (const char *fmt, ...)
{
  va_list ap;

  printf (PROG ": ");
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  fflush (stdout);
}

static void __attribute__ ((format (printf, 1, 2)))
debug_to_stderr (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The file the server serves, read with pread to compare. */
struct reference {
  int fd;
  uint64_t size;
};

static struct reference
open_reference (const char *path)
{
  struct reference ref;
  struct stat st;

  ref.fd = open (path, O_RDONLY | O_CLOEXEC);
  if (ref.fd == -1 || fstat (ref.fd, &st) == -1) {
    fprintf (stderr, PROG ": FAIL: %s: %m\n", path);
    exit (1);
  }
  ref.size = st.st_size;
  return ref;
}

/* 1 if buf holds exactly the file's bytes at offset. */
static int
same_as_file (const struct reference *ref, const void *buf, size_t len,
              uint64_t offset)
{
  unsigned char *want = malloc (len ? len : 1);
  int same;

  CHECK (want != NULL);
  CHECK (pread (ref->fd, want, len, offset) == (ssize_t) len);
  same = memcmp (want, buf, len) == 0;
  free (want);
  return same;
}

/* xorshift64*, one state per thread. */
static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

/* A random range of 1 byte .. 256 KiB inside the object, sometimes
 * touching its end or start. */
static void
random_range (uint64_t *s, uint64_t size, uint64_t *off, size_t *len)
{
  uint64_t l = 1 + rnd (s) % (256 * 1024);

  if (l > size)
    l = size;
  switch (rnd (s) % 8) {
  case 0: *off = 0; break;
  case 1: *off = size - l; break;
  default: *off = rnd (s) % (size - l + 1);
  }
  *len = l;
}

/* Every test's source runs on an engine of its own, driven by the
 * test's thread until must_start; all are freed at the end. */
static struct http_engine *engines[64];
static size_t n_engines;

static struct http_config
base_config (const char *url)
{
  struct http_config cfg;
  struct cloop_err err = { 0 };

  http_config_defaults (&cfg);
  cfg.url = url;
  CHECK (n_engines < sizeof engines / sizeof engines[0]);
  cfg.engine = engines[n_engines++] = http_engine_new (64, &err);
  CHECK (cfg.engine != NULL);
  cfg.cainfo = getenv ("HTTP_CAINFO");
  if (getenv ("HTTP_DEBUG")) {
    cfg.verbose = true;
    cfg.debug = debug_to_stderr;
  }
  return cfg;
}

static struct source *
must_open (const struct http_config *cfg)
{
  struct cloop_err err = { 0 };
  struct source *src = source_open_http (cfg, &err);

  if (src == NULL) {
    fprintf (stderr, PROG ": FAIL: open %s: %s\n", cfg->url, err.msg);
    exit (1);
  }
  return src;
}

static void
must_start (const struct http_config *cfg)
{
  struct cloop_err err = { 0 };

  if (http_engine_start (cfg->engine, &err) == -1) {
    fprintf (stderr, PROG ": FAIL: start: %s\n", err.msg);
    exit (1);
  }
}

static struct http_stats
stats_of (struct source *src)
{
  struct http_stats st;

  source_http_get_stats (src, &st);
  return st;
}

/* n random single preads, each checked. */
static void
check_random_preads (struct source *src, const struct reference *ref,
                     unsigned n, uint64_t seed)
{
  unsigned char *buf = malloc (256 * 1024);
  unsigned i;

  CHECK (buf != NULL);
  for (i = 0; i < n; i++) {
    struct cloop_err err = { 0 };
    uint64_t off;
    size_t len;

    random_range (&seed, ref->size, &off, &len);
    if (source_pread (src, buf, len, off, &err) == -1) {
      fprintf (stderr, PROG ": FAIL: pread %zu at %" PRIu64 ": %s\n",
               len, off, err.msg);
      exit (1);
    }
    CHECK (same_as_file (ref, buf, len, off));
  }
  free (buf);
}

/* ---- Correctness against a good server --------------------------------- */

static void
test_identity (struct source *src, const struct reference *ref)
{
  const struct http_identity *id = source_http_identity (src);

  say ("identity: size %" PRIu64 ", ETag %s, Last-Modified %s",
       id->size, id->etag ? id->etag : "(none)",
       id->last_modified ? id->last_modified : "(none)");
  CHECK (id->size == ref->size);
  CHECK (source_size (src) == ref->size);
  CHECK (id->etag != NULL || id->last_modified != NULL);
}

static void
test_sync_reads (struct source *src, const struct reference *ref)
{
  struct http_stats before = stats_of (src), after;
  unsigned char small[512];
  struct cloop_err err = { 0 };

  say ("reads before the worker starts (synchronous), head served "
       "from memory");
  CHECK (source_pread (src, small, sizeof small, 0, &err) == 0);
  CHECK (same_as_file (ref, small, sizeof small, 0));
  after = stats_of (src);
  CHECK (after.requests == before.requests);    /* from the probed head */
  CHECK (after.head_hits == before.head_hits + 1);

  /* A read that begins in the head fetches only the rest. */
  {
    unsigned char straddle[3000];
    uint64_t at = HTTP_HEAD_BYTES - 1000;

    CHECK (ref->size >= at + sizeof straddle);
    before = stats_of (src);
    CHECK (source_pread (src, straddle, sizeof straddle, at, &err) == 0);
    CHECK (same_as_file (ref, straddle, sizeof straddle, at));
    after = stats_of (src);
    CHECK (after.requests == before.requests + 1);
    CHECK (after.bytes_fetched == before.bytes_fetched + sizeof straddle - 1000);
    CHECK (after.head_hits == before.head_hits + 1);
  }
  check_random_preads (src, ref, 50, 0x5eed1);
}

static void
test_bounds (struct source *src, const struct reference *ref)
{
  unsigned char buf[16];
  struct source_range r[3] = {
    { .offset = ref->size - 8, .length = 8, .buf = buf },
    { .offset = ref->size, .length = 0, .buf = buf + 8 },
    { .offset = ref->size - 4, .length = 8, .buf = buf + 8 },
  };
  struct cloop_err err = { 0 };

  say ("bounds: the last bytes read, a read past the end is EIO");
  CHECK (source_pread (src, buf, 8, ref->size - 8, &err) == 0);
  CHECK (same_as_file (ref, buf, 8, ref->size - 8));
  CHECK (source_pread (src, buf, 8, ref->size - 4, &err) == -1);
  CHECK (err.errnum == EIO);
  /* The http ops themselves, under the generic layer. */
  CHECK (src->ops->pread_many (src, r, 3, &err) == -1);
  CHECK (r[0].status == 0 && r[1].status == 0 && r[2].status == EIO);
  CHECK (same_as_file (ref, buf, 8, ref->size - 8));
}

struct thread_arg {
  struct source *src;
  const struct reference *ref;
  uint64_t seed;
  unsigned rounds, per_round;
  int failed;
};

/* pread_many of per_round random ranges, rounds times, all checked. */
static void *
reader_thread (void *opaque)
{
  struct thread_arg *a = opaque;
  struct source_range *r = calloc (a->per_round, sizeof *r);
  unsigned i, j;

  CHECK (r != NULL);
  for (j = 0; j < a->per_round; j++) {
    r[j].buf = malloc (256 * 1024);
    CHECK (r[j].buf != NULL);
  }
  for (i = 0; i < a->rounds; i++) {
    struct cloop_err err = { 0 };

    for (j = 0; j < a->per_round; j++) {
      random_range (&a->seed, a->ref->size, &r[j].offset, &r[j].length);
      /* Now and then make a neighbour contiguous, to coalesce. */
      if (j > 0 && rnd (&a->seed) % 4 == 0 &&
          r[j - 1].offset + r[j - 1].length + r[j].length <= a->ref->size)
        r[j].offset = r[j - 1].offset + r[j - 1].length;
    }
    if (source_pread_many (a->src, r, a->per_round, &err) == -1) {
      fprintf (stderr, PROG ": FAIL: pread_many: %s\n", err.msg);
      a->failed = 1;
      break;
    }
    for (j = 0; j < a->per_round; j++)
      if (r[j].status != 0 ||
          !same_as_file (a->ref, r[j].buf, r[j].length, r[j].offset)) {
        fprintf (stderr, PROG ": FAIL: wrong bytes at %" PRIu64 "+%zu\n",
                 r[j].offset, r[j].length);
        a->failed = 1;
      }
  }
  for (j = 0; j < a->per_round; j++)
    free (r[j].buf);
  free (r);
  return NULL;
}

/* Run n threads of reader_thread; returns the number that failed. */
static int
run_readers (struct source *src, const struct reference *ref, unsigned n,
             unsigned rounds, unsigned per_round, uint64_t seed)
{
  pthread_t tid[64];
  struct thread_arg args[64];
  unsigned i;
  int failed = 0;

  CHECK (n <= 64);
  for (i = 0; i < n; i++) {
    args[i] = (struct thread_arg) {
      .src = src, .ref = ref, .seed = seed + 7919 * (i + 1),
      .rounds = rounds, .per_round = per_round,
    };
    CHECK (pthread_create (&tid[i], NULL, reader_thread, &args[i]) == 0);
  }
  for (i = 0; i < n; i++) {
    pthread_join (tid[i], NULL);
    failed += args[i].failed;
  }
  return failed;
}

static void
test_threads (struct source *src, const struct reference *ref)
{
  struct http_stats st;
  double t = now_s ();

  say ("16 threads x 20 rounds x pread_many(16 random ranges), "
       "byte-exact");
  CHECK (run_readers (src, ref, 16, 20, 16, 0xc0ffee) == 0);
  st = stats_of (src);
  say ("  %.2f s; requests %" PRIu64 ", coalesced %" PRIu64 ", retries %"
       PRIu64 ", %.1f MiB fetched", now_s () - t, st.requests,
       st.coalesced, st.retries, st.bytes_fetched / 1048576.0);
  CHECK (st.failures == 0 && st.retries == 0);
}

/* 64 contiguous 64 KiB ranges, handed over shuffled: with a 1 MiB
 * max_coalesce they must cost exactly 4 GETs. */
static void
test_coalescing (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  struct source_range r[64] = { 0 };
  struct http_stats a, b;
  struct cloop_err err = { 0 };
  uint64_t base = 1024 * 1024, seed = 42;
  unsigned i;

  if (ref->size < base + 64 * 65536) {
    say ("coalescing needs an object of at least 5 MiB");
    CHECK (ref->size >= base + 64 * 65536);
    return;
  }
  say ("coalescing: 64 contiguous 64 KiB ranges (shuffled) -> 4 GETs of "
       "1 MiB");
  cfg.max_coalesce = 1024 * 1024;
  src = must_open (&cfg);
  must_start (&cfg);
  for (i = 0; i < 64; i++) {
    r[i].offset = base + (uint64_t) i * 65536;
    r[i].length = 65536;
    r[i].buf = malloc (65536);
    CHECK (r[i].buf != NULL);
  }
  for (i = 63; i > 0; i--) {
    unsigned j = rnd (&seed) % (i + 1);
    struct source_range tmp = r[i];
    r[i] = r[j];
    r[j] = tmp;
  }
  a = stats_of (src);
  CHECK (source_pread_many (src, r, 64, &err) == 0);
  b = stats_of (src);
  for (i = 0; i < 64; i++) {
    CHECK (r[i].status == 0);
    CHECK (same_as_file (ref, r[i].buf, 65536, r[i].offset));
    free (r[i].buf);
  }
  say ("  requests %" PRIu64 ", coalesced ranges %" PRIu64,
       b.requests - a.requests, b.coalesced - a.coalesced);
  CHECK (b.requests - a.requests == 4);
  CHECK (b.coalesced - a.coalesced == 60);
  source_close (src);
}

/* Throughput: 1000 scattered 64 KiB ranges in one pread_many (no
 * coalescing possible), then the same split over 16 threads. */
static void
test_throughput (const char *url, const struct reference *ref)
{
  const unsigned n = 1000;
  struct http_config cfg = base_config (url);
  struct source *src;
  struct source_range *r = calloc (n, sizeof *r);
  unsigned char *bufs;
  uint64_t stride = 128 * 1024;
  struct cloop_err err = { 0 };
  double t;
  unsigned i;

  if (ref->size < (uint64_t) n * stride / 4) {
    say ("the throughput check needs an object of at least 32 MiB");
    CHECK (ref->size >= (uint64_t) n * stride / 4);
    free (r);
    return;
  }
  bufs = malloc ((size_t) n * 65536);
  CHECK (r != NULL && bufs != NULL);
  src = must_open (&cfg);
  must_start (&cfg);
  for (i = 0; i < n; i++) {
    r[i].offset = ((uint64_t) i * stride) % (ref->size - 65536 - 65536)
      + 65536 + (i * stride / (ref->size - 65536) % 2) * 3;
    r[i].length = 65536;
    r[i].buf = bufs + (size_t) i * 65536;
  }
  /* Touch the buffers first: in a VM, first-touch page faults cost
   * more than the loopback transfers being measured. */
  memset (bufs, 0, (size_t) n * 65536);
  t = now_s ();
  CHECK (source_pread_many (src, r, n, &err) == 0);
  t = now_s () - t;
  for (i = 0; i < n; i++)
    CHECK (same_as_file (ref, r[i].buf, 65536, r[i].offset));
  say ("throughput: 1000 x 64 KiB in one pread_many, %u connections: "
       "%.3f s, %.0f MiB/s (requests %" PRIu64 ")", cfg.connections, t,
       n * 65536 / 1048576.0 / t, stats_of (src).requests);
  source_close (src);
  free (bufs);
  free (r);
}

/* ---- Opening -------------------------------------------------------- */

static void
test_open_errors (const char *url)
{
  struct http_config cfg = base_config (url);
  struct cloop_err err = { 0 };
  char missing[1024];
  double t;

  say ("open: a missing object fails quickly with a clear message");
  snprintf (missing, sizeof missing, "%s.does-not-exist", url);
  cfg.url = missing;
  t = now_s ();
  CHECK (source_open_http (&cfg, &err) == NULL);
  say ("  -> %s", err.msg);
  CHECK (err.errnum == EIO);
  CHECK (strstr (err.msg, "404") != NULL);
  CHECK (strstr (err.msg, "2 attempts") != NULL);       /* retried once */
  CHECK (now_s () - t < 2);

  if (strncmp (url, "https:", 6) == 0 && getenv ("HTTP_CAINFO")) {
    say ("open: TLS verification is on by default (no CA given: refused)");
    cfg = base_config (url);
    cfg.cainfo = NULL;
    cfg.capath = "/nonexistent";
    CHECK (source_open_http (&cfg, &err) == NULL);
    say ("  -> %s", err.msg);
    CHECK (err.errnum == EIO);
    CHECK (strstr (err.msg, "(1 attempt)") != NULL);  /* not retried */
    cfg = base_config (url);
  }

  say ("open: a non-HTTP URL is refused");
  cfg.url = "file:///etc/passwd";
  CHECK (source_open_http (&cfg, &err) == NULL);
  CHECK (err.errnum == EINVAL);
}

/* HTTP_REDIRECT_URL answers with a redirect to the object;
 * HTTP_BAD_REDIRECT_URL with a redirect to a non-HTTP URL. */
static void
test_redirects (const struct reference *ref)
{
  const char *good = getenv ("HTTP_REDIRECT_URL");
  const char *bad = getenv ("HTTP_BAD_REDIRECT_URL");
  struct cloop_err err = { 0 };

  if (good) {
    struct http_config cfg = base_config (good);
    struct source *src;

    say ("redirects: followed to http(s), max_redirects=0 refuses them");
    src = must_open (&cfg);
    must_start (&cfg);
    check_random_preads (src, ref, 20, 0x4ed1);
    source_close (src);
    cfg.max_redirects = 0;
    CHECK (source_open_http (&cfg, &err) == NULL);
    say ("  -> %s", err.msg);
    CHECK (strstr (err.msg, "(2 attempts)") != NULL);
  }
  if (bad) {
    struct http_config cfg = base_config (bad);

    say ("redirects: a redirect to another protocol is refused");
    CHECK (source_open_http (&cfg, &err) == NULL);
    say ("  -> %s", err.msg);
    CHECK (strstr (err.msg, "(2 attempts)") != NULL);
  }
}

/* ---- Faults ------------------------------------------------------------ */

static const char *fault_control;

/* Replace the fault server's faults file (rename: counters reset). */
static void
set_faults (const char *lines)
{
  char tmp[4096];
  FILE *f;

  snprintf (tmp, sizeof tmp, "%s.tmp", fault_control);
  f = fopen (tmp, "w");
  CHECK (f != NULL);
  fputs (lines, f);
  CHECK (fclose (f) == 0);
  CHECK (rename (tmp, fault_control) == 0);
}

enum expect { EXACT, FAIL, EITHER };

struct fault_case {
  const char *faults;           /* faults file contents */
  enum expect expect;
  bool counted;                 /* a fault must show in the stats */
  unsigned timeout;             /* deadline (s); 0 = the default 5 */
};

static const struct fault_case fault_cases[] = {
  { "{\"fault\":\"status\",\"status\":500,\"count\":2}", EXACT, true, 0 },
  { "{\"fault\":\"status\",\"status\":503}", FAIL, true, 0 },
  { "{\"fault\":\"status\",\"status\":404}", FAIL, true, 0 },
  { "{\"fault\":\"status\",\"status\":403}", FAIL, true, 0 },
  { "{\"fault\":\"status\",\"status\":416,\"count\":1}", EXACT, true, 0 },
  { "{\"fault\":\"status\",\"status\":416}", FAIL, true, 0 },
  { "{\"fault\":\"reset\",\"bytes\":1000,\"count\":2}", EXACT, true, 0 },
  { "{\"fault\":\"reset\",\"bytes\":0,\"count\":1}", EXACT, true, 0 },
  { "{\"fault\":\"reset\",\"bytes\":1000}", FAIL, true, 0 },
  { "{\"fault\":\"truncate\",\"count\":2}", EXACT, true, 0 },
  { "{\"fault\":\"truncate\"}", FAIL, true, 0 },
  { "{\"fault\":\"slow\",\"rate\":2000}", FAIL, true, 4 },
  { "{\"fault\":\"slow\",\"rate\":4000000}", EXACT, false, 0 },
  { "{\"fault\":\"delay\",\"ms\":300}", EXACT, false, 0 },
  { "{\"fault\":\"delay\",\"ms\":8000}", FAIL, true, 3 },
  { "{\"fault\":\"ignore_range\",\"count\":1}", EXACT, true, 0 },
  { "{\"fault\":\"ignore_range\"}", FAIL, true, 0 },
  { "{\"fault\":\"wrong_content_range\",\"count\":2}", EXACT, true, 0 },
  { "{\"fault\":\"wrong_content_range\"}", FAIL, true, 0 },
  { "{\"fault\":\"change_etag\"}", FAIL, true, 0 },
  { "{\"fault\":\"change_etag\",\"content\":\"zero\"}", FAIL, true, 0 },
  { "{\"fault\":\"long_body\",\"extra\":512}", FAIL, true, 0 },
  { "{\"fault\":\"long_body\",\"mode\":\"trailing\",\"count\":1}",
    EXACT, false, 0 },
  /* Flipped body bytes carry no HTTP-level sign; catching them is the
   * signed block hashes' job.  Here: the read must only not hang. */
  { "{\"fault\":\"corrupt\",\"flips\":3}", EITHER, false, 0 },
};

/* Read 4 scattered ranges and 1 single range under the current fault.
 * Returns a mask: 1 = some read succeeded, 2 = some read failed. */
static int
fault_reads (struct source *src, const struct reference *ref,
             const struct fault_case *fc, int *wrong)
{
  struct source_range r[4] = { 0 };
  struct cloop_err err = { 0 };
  unsigned char *single = malloc (100000);
  int mask = 0;
  unsigned i;

  CHECK (single != NULL);
  for (i = 0; i < 4; i++) {
    r[i].offset = 200000 + (uint64_t) i * 1000003 % (ref->size - 300000);
    r[i].length = 70000 + i * 1000;
    r[i].buf = malloc (r[i].length);
    CHECK (r[i].buf != NULL);
  }
  if (source_pread_many (src, r, 4, &err) == -1) {
    mask |= 2;
    say ("  pread_many -> EIO: %s", err.msg);
    CHECK (err.errnum == EIO);
  }
  for (i = 0; i < 4; i++) {
    if (r[i].status == 0) {
      mask |= 1;
      if (!same_as_file (ref, r[i].buf, r[i].length, r[i].offset))
        (*wrong)++;
    }
    else
      CHECK (r[i].status == EIO);
    free (r[i].buf);
  }
  if (source_pread (src, single, 100000, ref->size - 150000, &err) == 0) {
    mask |= 1;
    if (!same_as_file (ref, single, 100000, ref->size - 150000))
      (*wrong)++;
  }
  else {
    mask |= 2;
    CHECK (err.errnum == EIO);
  }
  free (single);
  return mask;
}

static void
run_fault_case (const char *url, const struct reference *ref,
                const struct fault_case *fc)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  struct http_stats a, b;
  unsigned timeout = fc->timeout ? fc->timeout : 5;
  unsigned k, faults = 0;
  int mask, wrong = 0;
  double t;

  cfg.timeout = timeout;
  cfg.backoff_base_ms = 20;
  cfg.backoff_max_ms = 200;
  cfg.low_speed_limit = 4096;
  cfg.low_speed_time = 1;
  set_faults ("");
  src = must_open (&cfg);
  must_start (&cfg);
  set_faults (fc->faults);
  a = stats_of (src);
  t = now_s ();
  mask = fault_reads (src, ref, fc, &wrong);
  t = now_s () - t;
  b = stats_of (src);
  set_faults ("");
  for (k = 0; k < HTTP_FAULT_KINDS; k++)
    faults += b.faults[k] - a.faults[k];
  say ("  %s: %s in %.2f s, %" PRIu64 " requests, %u faults%s", fc->faults,
       mask == 1 ? "exact data" : mask == 2 ? "EIO" : "mixed", t,
       b.requests - a.requests, faults,
       wrong ? " (WRONG BYTES)" : "");
  if (fc->expect == EITHER) {
    if (wrong)
      say ("  (expected: corruption inside a valid 206 is invisible at "
           "the HTTP layer)");
  }
  else
    CHECK (wrong == 0);
  if (fc->expect == EXACT)
    CHECK (mask == 1);
  if (fc->expect == FAIL)
    CHECK (mask == 2);
  if (fc->counted)
    CHECK (faults > 0);
  /* Two reads ran one after the other: each within its deadline. */
  CHECK (t < 2 * (timeout + 1.5));
  source_close (src);
}

static void
test_fault_open (const char *url)
{
  struct http_config cfg = base_config (url);
  struct cloop_err err = { 0 };
  struct source *src;

  cfg.backoff_base_ms = 20;
  say ("faults at open: ignore_range is refused, 2 x 500 is absorbed");
  set_faults ("{\"fault\":\"ignore_range\"}");
  CHECK (source_open_http (&cfg, &err) == NULL);
  say ("  -> %s", err.msg);
  CHECK (strstr (err.msg, "does not honour Range") != NULL);
  set_faults ("{\"fault\":\"status\",\"status\":500,\"count\":2}");
  src = must_open (&cfg);
  source_close (src);
  set_faults ("");
}

/* Retries also work before the worker starts (synchronous path). */
static void
test_fault_sync (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  int wrong = 0;
  const struct fault_case fc = { "", EXACT, true, 0 };

  say ("faults before the worker starts: reset + 500 absorbed");
  cfg.backoff_base_ms = 20;
  set_faults ("");
  src = must_open (&cfg);
  set_faults ("{\"fault\":\"reset\",\"bytes\":5000,\"count\":1}\n"
              "{\"fault\":\"status\",\"status\":500,\"count\":1}\n");
  CHECK (fault_reads (src, ref, &fc, &wrong) == 1);
  CHECK (wrong == 0);
  CHECK (stats_of (src).retries >= 2);
  set_faults ("");
  source_close (src);
}

/* 16 threads read while resets and 500s come and go. */
static void
test_fault_storm (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  struct http_stats st;

  say ("16 threads read through 10 resets, 10 x 500, 5 truncations");
  cfg.backoff_base_ms = 20;
  cfg.timeout = 20;
  set_faults ("");
  src = must_open (&cfg);
  must_start (&cfg);
  set_faults ("{\"fault\":\"reset\",\"bytes\":3000,\"count\":10}\n"
              "{\"fault\":\"status\",\"status\":500,\"count\":10}\n"
              "{\"fault\":\"truncate\",\"count\":5}\n");
  CHECK (run_readers (src, ref, 16, 4, 8, 0xfa17) == 0);
  st = stats_of (src);
  say ("  requests %" PRIu64 ", retries %" PRIu64 ", faults: transport %"
       PRIu64 " status %" PRIu64 " length %" PRIu64, st.requests, st.retries,
       st.faults[HTTP_FAULT_TRANSPORT], st.faults[HTTP_FAULT_STATUS],
       st.faults[HTTP_FAULT_LENGTH]);
  CHECK (st.retries >= 20);
  set_faults ("");
  source_close (src);
}

/* ---- Priorities ---------------------------------------------------- */

struct background {
  struct source *src;
  const char *path;             /* the image's name beside its URL */
  uint64_t size;                /* of each object */
  size_t n;
  bool done;                    /* [atomic] every object has arrived */
  int result;
};

/* n whole-object GETs of the image at background priority. */
static void *
background_thread (void *opaque)
{
  struct background *bg = opaque;
  struct source_object objs[8];
  unsigned char *bufs[8];
  struct cloop_err err = { 0 };

  CHECK (bg->n <= 8);
  for (size_t i = 0; i < bg->n; i++) {
    bufs[i] = malloc (bg->size);
    CHECK (bufs[i] != NULL);
    objs[i] = (struct source_object) {
      .path = bg->path, .length = bg->size, .exact = true, .buf = bufs[i],
      .priority = FETCH_BACKGROUND,
    };
  }
  bg->result = source_get_objects (bg->src, objs, bg->n, &err);
  if (bg->result != 0)
    say ("  background fetch: %s", err.msg);
  __atomic_store_n (&bg->done, true, __ATOMIC_RELEASE);
  for (size_t i = 0; i < bg->n; i++)
    free (bufs[i]);
  return NULL;
}

/* A demand read issued while background transfers to the same origin
 * are queued (each held 1 s by the server) must not wait behind them:
 * with connections=1 it waits for the one running, then goes first;
 * with 2, one connection is kept free of background work and it goes
 * at once.  Asserted by order, not time: the demand read returns while
 * the background batch (>= 5 s of server delay) is still running. */
static void
test_priorities (const char *url, const struct reference *ref)
{
  say ("priorities: a demand read overtakes queued background fetches");
  set_faults ("{\"fault\":\"delay\",\"ms\":1000,\"ranged\":false}\n");
  for (unsigned conns = 1; conns <= 2; conns++) {
    struct http_config cfg = base_config (url);
    struct background bg = {
      .path = strrchr (url, '/') + 1, .size = ref->size, .n = 5,
    };
    struct http_stats st;
    unsigned char buf[4096];
    pthread_t tid;
    double t0;

    cfg.connections = conns;
    cfg.timeout = 60;
    bg.src = must_open (&cfg);
    must_start (&cfg);
    CHECK (pthread_create (&tid, NULL, background_thread, &bg) == 0);
    do {                        /* the first background GET is out */
      usleep (10000);
      source_http_get_stats (bg.src, &st);
    } while (st.requests < 2);  /* the probe, then one GET */
    t0 = now_s ();
    {
      struct cloop_err err = { 0 };
      CHECK (source_pread (bg.src, buf, sizeof buf, ref->size / 2,
                           &err) == 0);
    }
    CHECK (same_as_file (ref, buf, sizeof buf, ref->size / 2));
    say ("  connections=%u: demand read in %.3f s, background %s", conns,
         now_s () - t0,
         __atomic_load_n (&bg.done, __ATOMIC_ACQUIRE) ? "done (WRONG)"
         : "still running");
    CHECK (!__atomic_load_n (&bg.done, __ATOMIC_ACQUIRE));
    pthread_join (tid, NULL);
    CHECK (bg.result == 0);
    source_close (bg.src);
  }
  set_faults ("");
}

/* Four read-ahead ranges far apart (one GET each), held 1 s each by
 * the server. */
struct readahead_batch {
  struct source *src;
  const struct reference *ref;
  int result;
};

static void *
readahead_thread (void *opaque)
{
  struct readahead_batch *rb = opaque;
  static unsigned char bufs[4][4096];
  struct source_range r[4];
  struct cloop_err err = { 0 };

  for (unsigned i = 0; i < 4; i++)
    r[i] = (struct source_range) {
      .offset = rb->ref->size / 8 * (i + 1), .length = sizeof bufs[i],
      .buf = bufs[i], .priority = FETCH_READAHEAD,
    };
  rb->result = source_pread_many (rb->src, r, 4, &err);
  for (unsigned i = 0; i < 4 && rb->result == 0; i++)
    if (!same_as_file (rb->ref, bufs[i], sizeof bufs[i], r[i].offset))
      rb->result = -1;
  return NULL;
}

/* A client's read of 4 KiB in the middle of the file. */
static void *
demand_thread (void *opaque)
{
  struct readahead_batch *rb = opaque;
  static unsigned char buf[4096];
  struct cloop_err err = { 0 };
  uint64_t off = rb->ref->size / 16 * 9;

  rb->result = source_pread (rb->src, buf, sizeof buf, off, &err);
  if (rb->result == 0 && !same_as_file (rb->ref, buf, sizeof buf, off))
    rb->result = -1;
  return NULL;
}

/* Wait until the GETs of src since a are all out (n of them) before any
 * reply has come, or a reply comes first.  Returns whether they were. */
static bool
all_out_at_once (struct source *src, const struct http_stats *a, unsigned n)
{
  struct http_stats st;

  do {
    usleep (10000);
    st = stats_of (src);
    if (st.requests - a->requests >= n && st.bytes_fetched == a->bytes_fetched)
      return true;
  } while (st.bytes_fetched == a->bytes_fetched);
  return false;
}

/* With connections=4 and no client read that had to wait lately,
 * read-ahead takes all four connections: four read-ahead GETs are out
 * at once, before any has ended (the engine used to keep one for
 * client reads at all times, so the fourth waited for the first).
 * Then a client's read that finds a connection free keeps none: it and
 * three read-ahead GETs are out at once (the engine used to keep one
 * for a second after any client's read, so the third waited).
 * Asserted by order: the fourth request starts while no reply has
 * come (each is held 1 s, then 0.6 s: less than the second the old
 * engine kept its connection). */
static void
test_reserve (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  struct readahead_batch rb = { .ref = ref }, db = { .ref = ref };
  struct http_stats a;
  pthread_t tid, dtid;
  bool four_at_once;

  say ("reserve: with no client read kept waiting lately, read-ahead "
       "takes all 4 connections");
  /* As the plugin sizes it: connections x origins in all. */
  {
    struct cloop_err err = { 0 };

    CHECK (n_engines < sizeof engines / sizeof engines[0]);
    cfg.engine = engines[n_engines++] = http_engine_new (4, &err);
    CHECK (cfg.engine != NULL);
  }
  cfg.connections = 4;
  cfg.timeout = 60;
  rb.src = must_open (&cfg);
  must_start (&cfg);
  set_faults ("{\"fault\":\"delay\",\"ms\":1000,\"ranged\":true}\n");
  usleep (1200000);             /* the probe at open was a client read */
  a = stats_of (rb.src);
  CHECK (pthread_create (&tid, NULL, readahead_thread, &rb) == 0);
  four_at_once = all_out_at_once (rb.src, &a, 4);
  pthread_join (tid, NULL);
  say ("  four GETs out before any reply: %s", four_at_once ? "yes" : "no");
  CHECK (rb.result == 0);
  CHECK (four_at_once);

  /* The client's read first, alone: it finds a connection at once. */
  set_faults ("{\"fault\":\"delay\",\"ms\":600,\"ranged\":true}\n");
  db.src = rb.src;
  a = stats_of (rb.src);
  CHECK (pthread_create (&dtid, NULL, demand_thread, &db) == 0);
  while (stats_of (rb.src).requests == a.requests)
    usleep (10000);
  CHECK (pthread_create (&tid, NULL, readahead_thread, &rb) == 0);
  four_at_once = all_out_at_once (rb.src, &a, 4);
  pthread_join (dtid, NULL);
  pthread_join (tid, NULL);
  set_faults ("");
  say ("  a client's read and three read-ahead GETs out before any reply: "
       "%s", four_at_once ? "yes" : "no");
  CHECK (db.result == 0 && rb.result == 0);
  CHECK (four_at_once);
  source_close (rb.src);
}

/* ---- Hedged reads -------------------------------------------------- */

struct hedge_reader {
  struct source *src;
  const struct reference *ref;
  uint64_t seed;
  unsigned reads, slow;         /* slow: reads over 1.2 s */
};

static void *
hedge_reader_thread (void *opaque)
{
  struct hedge_reader *hr = opaque;
  unsigned char buf[4096];

  for (unsigned i = 0; i < hr->reads; i++) {
    struct cloop_err err = { 0 };
    uint64_t off = rnd (&hr->seed) % (hr->ref->size - sizeof buf);
    double t0 = now_s ();

    CHECK (source_pread (hr->src, buf, sizeof buf, off, &err) == 0);
    CHECK (same_as_file (hr->ref, buf, sizeof buf, off));
    if (now_s () - t0 > 1.2)
      hr->slow++;
  }
  return NULL;
}

/* A source of url and its mirror (the same bytes as "mirror" beside it
 * on the same server), with connections to each, opened (as the
 * plugin does once it has parsed the image: until then every read goes
 * to the origin that pinned the object) and its engine started.
 * mirror holds the mirror's URL (it must outlive the source). */
static struct source *
open_mirrored (struct http_config *cfg, const char *url, char mirror[512],
               const char *mirrors[1], unsigned connections)
{
  struct source *src;

  snprintf (mirror, 512, "%.*smirror",
            (int) (strrchr (url, '/') + 1 - url), url);
  mirrors[0] = mirror;
  cfg->mirrors = mirrors;
  cfg->n_mirrors = 1;
  cfg->connections = connections;
  src = must_open (cfg);
  source_opened (src);
  must_start (cfg);
  return src;
}

/* Two origins (the file and a mirror of it, same server); 3 % of the
 * replies of each are held 2 s.  Both hold, not only the first: an
 * early hold makes the engine prefer the other origin for the rest of
 * the run, and if only the first one held, no read would be held
 * after that (once in about ten runs).  Eight readers at once.  Hedges
 * fire and win, and stay within the 5 % budget. */
static void
test_hedging (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  char mirror[512];
  const char *mirrors[1];
  struct hedge_reader hr[8];
  pthread_t tid[8];
  struct http_stats a, b;
  const char *name;
  unsigned slow = 0, reads = 0;
  struct source *src;

  say ("hedged reads: both origins hold 3%% of their replies 2 s");
  set_faults ("{\"fault\":\"delay\",\"ms\":2000,\"path\":\"/data\","
              "\"after\":1,\"probability\":0.03}\n"
              "{\"fault\":\"delay\",\"ms\":2000,\"path\":\"/mirror\","
              "\"after\":1,\"probability\":0.03}\n");
  src = open_mirrored (&cfg, url, mirror, mirrors, 4);
  for (int i = 0; i < 8; i++) {
    hr[i] = (struct hedge_reader) { .src = src, .ref = ref,
                                    .seed = 0x4ed9e + i, .reads = 60 };
    CHECK (pthread_create (&tid[i], NULL, hedge_reader_thread, &hr[i]) == 0);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join (tid[i], NULL);
    slow += hr[i].slow;
    reads += hr[i].reads;
  }
  CHECK (source_endpoint_stats (src, 0, &name, &a) == 0);
  CHECK (source_endpoint_stats (src, 1, &name, &b) == 0);
  say ("  %u reads, %u over 1.2 s; origin 1: %" PRIu64 " requests, %"
       PRIu64 " hedges (%" PRIu64 " won); mirror: %" PRIu64 " requests, %"
       PRIu64 " hedges (%" PRIu64 " won)", reads, slow, a.requests,
       a.hedges, a.hedges_won, b.requests, b.hedges, b.hedges_won);
  CHECK (a.hedges + b.hedges > 0);
  CHECK (a.hedges_won + b.hedges_won > 0);
  CHECK ((a.hedges + b.hedges) * 100 <= (a.requests + b.requests) * 5 + 100);
  source_close (src);
  set_faults ("");
}

static void
test_faults (const char *url, const struct reference *ref)
{
  size_t i;

  test_fault_open (url);
  test_fault_sync (url, ref);
  say ("each fault kind: exact data or EIO within the deadline, never "
       "wrong bytes");
  for (i = 0; i < sizeof fault_cases / sizeof fault_cases[0]; i++)
    run_fault_case (url, ref, &fault_cases[i]);
  test_fault_storm (url, ref);
  test_priorities (url, ref);
  test_reserve (url, ref);
  test_hedging (url, ref);
}

/* ---- Trains: queued transfers for contiguous bytes ride in one GET ----- */

struct train_arg {
  struct source *src;
  const struct reference *ref;
  pthread_barrier_t *go;
  uint64_t offset;
  int failed;
};

/* One 64 KiB read at a->offset, started with the other threads'. */
static void *
train_thread (void *opaque)
{
  struct train_arg *a = opaque;
  unsigned char *buf = malloc (65536);
  struct cloop_err err = { 0 };

  CHECK (buf != NULL);
  pthread_barrier_wait (a->go);
  if (source_pread (a->src, buf, 65536, a->offset, &err) == -1) {
    fprintf (stderr, PROG ": FAIL: pread at %" PRIu64 ": %s\n", a->offset,
             err.msg);
    a->failed = 1;
  }
  else if (!same_as_file (a->ref, buf, 65536, a->offset)) {
    fprintf (stderr, PROG ": FAIL: wrong bytes at %" PRIu64 "\n", a->offset);
    a->failed = 1;
  }
  free (buf);
  return NULL;
}

/* N_TRAIN reads of contiguous 64 KiB from base on, one thread each,
 * started at once; returns how many failed (wrong bytes included). */
enum { N_TRAIN = 24 };
static int
contiguous_reads (struct source *src, const struct reference *ref,
                  uint64_t base)
{
  struct train_arg args[N_TRAIN];
  pthread_t tid[N_TRAIN];
  pthread_barrier_t go;
  int failed = 0;

  CHECK (pthread_barrier_init (&go, NULL, N_TRAIN) == 0);
  for (unsigned i = 0; i < N_TRAIN; i++) {
    args[i] = (struct train_arg) {
      .src = src, .ref = ref, .go = &go, .offset = base + i * 65536,
    };
    CHECK (pthread_create (&tid[i], NULL, train_thread, &args[i]) == 0);
  }
  for (unsigned i = 0; i < N_TRAIN; i++) {
    pthread_join (tid[i], NULL);
    failed += args[i].failed;
  }
  pthread_barrier_destroy (&go);
  return failed;
}

/* A 64 KiB read at offset, started in a thread of its own, whose GET
 * has gone out (requests(src) has moved) when start_held_read
 * returns: with a delay fault set, it holds a connection meanwhile. */
struct held_read {
  struct train_arg arg;
  pthread_t tid;
  pthread_barrier_t go;
};

static void
start_held_read (struct held_read *h, struct source *src,
                 const struct reference *ref, uint64_t offset,
                 uint64_t (*requests) (struct source *))
{
  uint64_t before = requests (src), t0 = http_now_ns ();

  CHECK (pthread_barrier_init (&h->go, NULL, 1) == 0);
  h->arg = (struct train_arg) {
    .src = src, .ref = ref, .go = &h->go, .offset = offset,
  };
  CHECK (pthread_create (&h->tid, NULL, train_thread, &h->arg) == 0);
  while (requests (src) == before) {
    CHECK (http_now_ns () - t0 < 30 * UINT64_C (1000000000));
    usleep (10000);
  }
}

/* Wait for it; 1 if it failed (wrong bytes included). */
static int
end_held_read (struct held_read *h)
{
  pthread_join (h->tid, NULL);
  pthread_barrier_destroy (&h->go);
  return h->arg.failed;
}

/* GETs sent by src (to the origin that pinned its object). */
static uint64_t
requests_total (struct source *src)
{
  return stats_of (src).requests;
}

/* Through a link of 300 ms and 2 MB/s (its bandwidth-delay product
 * about 600 KB), with one connection: once the origin's speed is measured,
 * 24 reads of contiguous 64 KiB ranges from 24 threads at once go out
 * in a few GETs, each read is byte-exact.  With faults set (a reset
 * after 100000 bytes of each of the first two replies: the first is
 * one read alone, as the others have yet to queue, or already a
 * train; the second is a train), the cars delivered before it stay
 * delivered and the rest are fetched again. */
static void
test_trains (const char *url, const struct reference *ref,
             const char *faults)
{
  enum { N = N_TRAIN };
  struct http_config cfg = base_config (url);
  struct source *src;
  struct http_stats a, b;
  uint64_t base = 4 * 1024 * 1024;
  int failed = 0;

  CHECK (ref->size >= base + N * 65536);
  say ("trains: %d reads of contiguous 64 KiB from %d threads, one "
       "connection, 300 ms link%s", N, N,
       faults ? ", a train's reply reset midway" : "");
  cfg.connections = 1;
  src = must_open (&cfg);
  must_start (&cfg);
  check_random_preads (src, ref, 4, 0x7a1);    /* measure the link */
  if (faults)
    set_faults (faults);
  a = stats_of (src);
  failed = contiguous_reads (src, ref, base);
  b = stats_of (src);
  if (faults)
    set_faults ("");
  say ("  requests %" PRIu64 ", coalesced ranges %" PRIu64 ", retries %"
       PRIu64 ", failed ranges %" PRIu64, b.requests - a.requests,
       b.coalesced - a.coalesced, b.retries - a.retries,
       b.failures - a.failures);
  CHECK (failed == 0);
  CHECK (b.failures == a.failures);
  /* Alone, every read is a GET; in trains, at most half of them (the
   * reads queue in any order: a train takes those before its first car
   * too). */
  CHECK (b.requests - a.requests <= N / 2);
  CHECK (b.coalesced - a.coalesced >= N / 2);
  if (faults)
    CHECK (b.retries > a.retries);
  source_close (src);
}

/* A train's reads return only once its GET has ended, so that the
 * source may be closed at once.  Through the same link, one
 * connection: a read held 1 s by the server keeps the connection busy
 * while 24 contiguous 64 KiB reads queue; they then go out in one
 * train, whose reply brings every byte asked for and, a second later,
 * 512 more (a length fault).  By the time every read has returned, the
 * GET has ended: its fault is counted.  (The engine used to complete
 * the last car when its bytes came: the reads returned a second before
 * the GET ended, and a source closed then was freed under it, which
 * AddressSanitizer reports as a use after free.) */
static void
test_train_end (const char *url, const struct reference *ref)
{
  enum { N = N_TRAIN };
  struct http_config cfg = base_config (url);
  struct source *src;
  struct held_read blocker;
  struct http_stats a, b;
  uint64_t base = 8 * 1024 * 1024;
  int failed = 0, blocker_failed;

  CHECK (ref->size >= base + (N + 32) * 65536);
  say ("trains: a train's reply too long, its end a second late");
  cfg.connections = 1;
  src = must_open (&cfg);
  must_start (&cfg);
  check_random_preads (src, ref, 4, 0x7a2);    /* measure the link */
  set_faults ("{\"fault\":\"delay\",\"ms\":1000,\"count\":1}\n"
              "{\"fault\":\"long_body\",\"extra\":512,"
              "\"delay_ms\":1000,\"min_range\":131072,\"count\":1}\n");
  a = stats_of (src);
  /* The blocker's GET goes out first... */
  start_held_read (&blocker, src, ref, base + (N + 16) * 65536,
                   requests_total);
  /* ... and the 24 reads queue behind it. */
  failed = contiguous_reads (src, ref, base);
  b = stats_of (src);           /* at once: nothing may end later */
  blocker_failed = end_held_read (&blocker);
  set_faults ("");
  say ("  requests %" PRIu64 ", coalesced ranges %" PRIu64
       ", length faults %" PRIu64 " when the reads had returned",
       b.requests - a.requests, b.coalesced - a.coalesced,
       b.faults[HTTP_FAULT_LENGTH] - a.faults[HTTP_FAULT_LENGTH]);
  CHECK (failed == 0 && blocker_failed == 0);
  CHECK (b.coalesced - a.coalesced >= N / 2);
  CHECK (b.faults[HTTP_FAULT_LENGTH] > a.faults[HTTP_FAULT_LENGTH]);
  source_close (src);
}

/* GETs sent to the two origins of src. */
static uint64_t
requests_of_two (struct source *src)
{
  struct http_stats st;
  const char *name;
  uint64_t n = 0;

  for (size_t i = 0; i < 2; i++) {
    CHECK (source_endpoint_stats (src, i, &name, &st) == 0);
    n += st.requests;
  }
  return n;
}

/* Two reads at once of 256 KiB, at off and off + 1 MiB (with one
 * connection to each of two origins, one goes to each). */
static void
two_reads (struct source *src, const struct reference *ref, uint64_t off)
{
  unsigned char *a = malloc (262144), *b = malloc (262144);
  struct source_range r[2] = {
    { .offset = off, .length = 262144, .buf = a },
    { .offset = off + 1048576, .length = 262144, .buf = b },
  };
  struct cloop_err err = { 0 };

  CHECK (a != NULL && b != NULL);
  CHECK (source_pread_many (src, r, 2, &err) == 0);
  CHECK (same_as_file (ref, a, 262144, off));
  CHECK (same_as_file (ref, b, 262144, off + 1048576));
  free (a);
  free (b);
}

/* The end of a slow GET is given to an idle mirror.  Two origins (the
 * file and a mirror of it) through the 300 ms link, one connection to
 * each: a read held 2 s by the server keeps one of them busy while 24
 * contiguous 64 KiB reads queue; they go out in a train or two on the
 * other (the first reads may go before the others have queued), whose
 * replies the server dribbles at 256 KiB/s (6 s for 1.5 MiB).  When the held read ends, its origin is idle with nothing
 * queued: the train is cut (its origin counts a tail taken), its last
 * reads go to the idle origin, and its GET ends, a success, once the
 * reads it kept have arrived: its origin brings fewer bytes than the
 * train asked for.  Every read is byte-exact. */
static void
test_tails (const char *url, const struct reference *ref)
{
  enum { N = N_TRAIN };
  struct http_config cfg = base_config (url);
  char mirror[512];
  const char *mirrors[1];
  struct source *src;
  struct held_read blocker;
  struct http_stats a[2], b[2];
  const char *name;
  uint64_t base = 12 * 1024 * 1024;
  int failed = 0, cut = -1, blocker_failed;

  CHECK (ref->size >= base + (N + 32) * 65536);
  say ("tails: a slow train's last reads given to an idle mirror");
  src = open_mirrored (&cfg, url, mirror, mirrors, 1);
  for (int i = 0; i < 3; i++)           /* measure both origins */
    two_reads (src, ref, i * 2 * 1048576);
  set_faults ("{\"fault\":\"delay\",\"ms\":2000,\"count\":1}\n"
              "{\"fault\":\"slow\",\"rate\":262144,"
              "\"min_range\":131072,\"count\":2}\n");
  for (size_t i = 0; i < 2; i++)
    CHECK (source_endpoint_stats (src, i, &name, &a[i]) == 0);
  start_held_read (&blocker, src, ref, base + (N + 16) * 65536,
                   requests_of_two);
  failed = contiguous_reads (src, ref, base);
  blocker_failed = end_held_read (&blocker);
  set_faults ("");
  for (size_t i = 0; i < 2; i++) {
    CHECK (source_endpoint_stats (src, i, &name, &b[i]) == 0);
    say ("  origin %zu: %" PRIu64 " requests, %" PRIu64 " bytes, %" PRIu64
         " tails taken", i, b[i].requests - a[i].requests,
         b[i].bytes_fetched - a[i].bytes_fetched,
         b[i].tails_taken - a[i].tails_taken);
    if (b[i].tails_taken > a[i].tails_taken)
      cut = i;
  }
  CHECK (failed == 0 && blocker_failed == 0);
  CHECK (cut >= 0);
  CHECK (b[cut].bytes_fetched - a[cut].bytes_fetched < N * 65536);
  CHECK (b[1 - cut].bytes_fetched - a[1 - cut].bytes_fetched > 65536);
  source_close (src);
}

/* ---- A server that is gone; content-fault refetches ------------------- */

/* A TCP port on 127.0.0.1 that was free a moment ago (refuses). */
static unsigned
closed_port (void)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM, 0);

  CHECK (fd >= 0);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  CHECK (bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0);
  CHECK (getsockname (fd, (struct sockaddr *) &sa, &len) == 0);
  close (fd);
  return ntohs (sa.sin_port);
}

/* One read of 4 KiB at off: its status (0 or an errno value). */
static int
read_status (struct source *src, uint64_t off, unsigned refetch)
{
  static unsigned char buf[4096];
  struct source_range r = {
    .offset = off, .length = sizeof buf, .buf = buf, .refetch = refetch,
  };
  struct cloop_err err = { 0 };

  source_pread_many (src, &r, 1, &err);
  return r.status;
}

/* Pinned to a port that refuses: the first read finds it down, the
 * next fail at once without a request, one probe goes after the
 * back-off, and source_available says so all along. */
static void
test_refused_port (void)
{
  char url[64];
  struct http_config cfg;
  struct http_identity id = { .size = 1 << 20, .etag = "\"x\"" };
  struct cloop_err err = { 0 };
  struct source *src;
  struct http_stats st;
  double t0;

  snprintf (url, sizeof url, "http://127.0.0.1:%u/img", closed_port ());
  cfg = base_config (url);
  cfg.down_backoff_ms = cfg.down_backoff_max_ms = 400;
  say ("server gone: %s", url);
  src = source_open_http_pinned (&cfg, &id, &err);
  CHECK (src != NULL);
  CHECK (source_available (src));
  CHECK (read_status (src, 0, 0) == EIO);        /* synchronous path */
  st = stats_of (src);
  CHECK (st.requests == 1 && st.origin_down_events == 1);
  CHECK (!source_available (src));
  must_start (&cfg);
  t0 = now_s ();
  for (unsigned i = 1; i <= 40; i++)
    CHECK (read_status (src, i * 8192, 0) == EIO);
  st = stats_of (src);
  say ("  40 reads failed in %.3f s: %" PRIu64 " requests, %" PRIu64
       " fast failures, %" PRIu64 " probes", now_s () - t0, st.requests,
       st.fast_failures, st.probes);
  CHECK (now_s () - t0 < 5);
  CHECK (st.requests == 1 + st.probes && st.probes <= 2);
  CHECK (st.fast_failures >= 38);
  usleep (450000);
  CHECK (read_status (src, 0, 0) == EIO);        /* the probe */
  CHECK (read_status (src, 8192, 0) == EIO);     /* at once again */
  st = stats_of (src);
  CHECK (st.probes >= 1 && st.requests == 1 + st.probes);
  CHECK (st.origin_down_events == 1);
  CHECK (!source_available (src));
  source_close (src);
}

/* A range fetched again after a content fault counts against the
 * retry budget: refetch = retries still gets one attempt, one more is
 * refused without a request. */
static void
test_refetch_budget (const char *url)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  struct http_stats before, after;

  say ("content-fault refetches share the retry budget");
  cfg.retries = 2;
  cfg.backoff_base_ms = 10;
  src = must_open (&cfg);
  must_start (&cfg);
  before = stats_of (src);
  CHECK (read_status (src, 100000, 2) == 0);
  CHECK (read_status (src, 100000, 3) == EIO);
  after = stats_of (src);
  CHECK (after.requests - before.requests == 1);
  CHECK (after.refetches - before.refetches == 2);
  source_close (src);
}

/* ---- Cancellation (http_config.cancelled) ------------------------------ */

static int cancel_flag;         /* atomic: what test_cancelled says */

static bool
test_cancelled (void)
{
  return __atomic_load_n (&cancel_flag, __ATOMIC_RELAXED) != 0;
}

/* Raise cancel_flag after 300 ms. */
static void *
cancel_later (void *opaque)
{
  usleep (300000);
  __atomic_store_n (&cancel_flag, 1, __ATOMIC_RELAXED);
  return NULL;
}

/* A read that the server holds for 20 s (timeout 30 s) while the
 * flag is raised 300 ms in: ECANCELED well within 10 s.  started says
 * whether the worker drives the engine (else this thread does). */
static void
read_cancelled (struct source *src, bool started)
{
  pthread_t t;
  double t0 = now_s (), spent;
  int status;

  set_faults ("{\"fault\":\"delay\",\"ms\":20000,\"ranged\":true}");
  CHECK (pthread_create (&t, NULL, cancel_later, NULL) == 0);
  status = read_status (src, 200000, 0);
  CHECK (pthread_join (t, NULL) == 0);
  spent = now_s () - t0;
  say ("  %s: status %d after %.2f s", started ? "worker" : "caller drives",
       status, spent);
  CHECK (status == ECANCELED);
  CHECK (spent < 10);
  /* Still raised: a new read fails at once, without a request. */
  t0 = now_s ();
  CHECK (read_status (src, 300000, 0) == ECANCELED);
  CHECK (now_s () - t0 < 5);
  __atomic_store_n (&cancel_flag, 0, __ATOMIC_RELAXED);
  set_faults ("");
}

/* Cancelled transfers fail with ECANCELED before and after the worker
 * starts, and leave the origin healthy: the next read is exact. */
static void
test_cancel (const char *url, const struct reference *ref)
{
  struct http_config cfg = base_config (url);
  struct source *src;
  struct http_stats st;
  unsigned char buf[4096];
  struct cloop_err err = { 0 };

  say ("a cancelled read stops at once, with ECANCELED");
  cfg.cancelled = test_cancelled;
  src = must_open (&cfg);
  read_cancelled (src, false);
  must_start (&cfg);
  read_cancelled (src, true);
  CHECK (source_pread (src, buf, sizeof buf, 250000, &err) == 0);
  CHECK (same_as_file (ref, buf, sizeof buf, 250000));
  st = stats_of (src);
  CHECK (st.origin_down_events == 0);
  CHECK (source_available (src));
  source_close (src);
}

/* ---- Main ----------------------------------------------------------- */

int
main (int argc, char *argv[])
{
  const char *http_url = getenv ("HTTP_URL");
  const char *http_file = getenv ("HTTP_FILE");
  const char *fault_url = getenv ("FAULT_URL");
  const char *fault_file = getenv ("FAULT_FILE");

  if (argc > 1)
    http_url = argv[1];
  if (argc > 2)
    http_file = argv[2];
  if (http_url == NULL && fault_url == NULL) {
    say ("usage: set HTTP_URL (+HTTP_FILE) and/or FAULT_URL "
         "(+FAULT_FILE, FAULT_CONTROL); tests/test-http-source.sh does");
    return 2;
  }
  CHECK (http_global_init () == 0);

  if (http_url) {
    struct http_config cfg = base_config (http_url);
    struct reference ref;
    struct source *src;

    if (http_file == NULL) {
      fprintf (stderr, PROG ": FAIL: HTTP_URL needs HTTP_FILE\n");
      return 1;
    }
    ref = open_reference (http_file);
    CHECK (ref.size > 300000);
    say ("good server: %s (%" PRIu64 " bytes)", http_url, ref.size);
    src = must_open (&cfg);
    test_identity (src, &ref);
    test_sync_reads (src, &ref);
    must_start (&cfg);
    say ("single random reads through the worker");
    check_random_preads (src, &ref, 200, 0x5eed2);
    test_bounds (src, &ref);
    test_threads (src, &ref);
    source_close (src);
    test_coalescing (http_url, &ref);
    test_throughput (http_url, &ref);
    test_open_errors (http_url);
    test_redirects (&ref);
    test_refetch_budget (http_url);
    test_refused_port ();
  }

  if (fault_url) {
    struct reference ref;

    fault_control = getenv ("FAULT_CONTROL");
    if (fault_file == NULL)
      fault_file = http_file;
    if (fault_control == NULL || fault_file == NULL) {
      fprintf (stderr, PROG ": FAIL: FAULT_URL needs FAULT_CONTROL and "
               "FAULT_FILE (or HTTP_FILE)\n");
      return 1;
    }
    ref = open_reference (fault_file);
    CHECK (ref.size > 400000);
    say ("fault server: %s (%" PRIu64 " bytes)", fault_url, ref.size);
    test_faults (fault_url, &ref);
    test_cancel (fault_url, &ref);
  }

  /* The same servers behind tests/delayproxy.py. */
  if (getenv ("SLOW_HTTP_URL") && http_file) {
    struct reference ref = open_reference (http_file);

    test_trains (getenv ("SLOW_HTTP_URL"), &ref, NULL);
  }
  if (getenv ("SLOW_FAULT_URL") && fault_file && fault_control) {
    struct reference ref = open_reference (fault_file);

    test_trains (getenv ("SLOW_FAULT_URL"), &ref,
                 "{\"fault\":\"reset\",\"bytes\":100000,\"count\":2}\n");
    test_train_end (getenv ("SLOW_FAULT_URL"), &ref);
    test_tails (getenv ("SLOW_FAULT_URL"), &ref);
  }

  for (size_t i = 0; i < n_engines; i++)
    http_engine_free (engines[i]);
  http_global_cleanup ();
  say ("PASS");
  return 0;
}
