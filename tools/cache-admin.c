/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store cache: look after an nbdkit-cloop disk cache directory
 * (cache/diskcache.h) without the plugin: verify every entry, or
 * evict down to a size and remove temporary leftovers.
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "diskcache.h"
#include "tool.h"

/* No entry the plugin writes is near this (a block is at most 64M). */
#define MAX_ENTRY (UINT64_C (1) << 30)

static void
cache_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store cache verify [--repair] CACHE-DIR\n"
"       cloop-store cache gc [--max-size=SIZE] CACHE-DIR\n"
"Look after the disk cache of nbdkit-cloop (its cache-dir=).\n"
"\n"
"verify: check every entry's header, length and SHA-256; list the bad\n"
"  ones; exit 1 if there were any.\n"
"      --repair            delete the bad entries (they are fetched again)\n"
"gc: remove temporary files left by killed writers, and with --max-size\n"
"  evict least recently used entries (the plugin's own eviction).\n"
"      --max-size=SIZE     bring the cache to at most SIZE (K, M, G)\n"
"  -h, --help              this help\n");
}

static void
cache_warn (void *opaque, const char *fmt, ...)
{
  va_list ap;

  (void) opaque;
  fprintf (stderr, "cloop-store: warning: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

/* Open an existing cache (never create one: a typo must not make a
 * new empty cache that then "verifies").  NULL after a message. */
static struct disk_cache *
open_existing (const char *dir, uint64_t max_bytes)
{
  struct disk_cache_hooks hooks = { .warn = cache_warn };
  struct cloop_err err = { 0 };
  struct disk_cache *dc;
  struct stat st;
  char *version;

  if (asprintf (&version, "%s/VERSION", dir) == -1) {
    tool_error ("out of memory");
    return NULL;
  }
  if (stat (version, &st) == -1) {
    tool_error ("cache: %s: not a disk cache (%s: %s)", dir, version,
                strerror (errno));
    free (version);
    return NULL;
  }
  free (version);
  dc = disk_cache_open (dir, max_bytes, &hooks, &err);
  if (dc == NULL)
    tool_error ("cache: %s", err.msg);
  return dc;
}

static void
report_bad (void *opaque, const char *key, const char *why, bool deleted)
{
  const char *dir = opaque;

  printf ("bad: %s/%s: %s%s\n", dir, key, why, deleted ? " (deleted)" : "");
}

static int
cache_verify (const char *dir, bool repair)
{
  struct disk_cache *dc = open_existing (dir, 0);
  struct cloop_err err = { 0 };
  uint64_t checked, bad;
  int r;

  if (dc == NULL)
    return EXIT_FAIL;
  r = disk_cache_check_all (dc, repair, MAX_ENTRY, report_bad, (void *) dir,
                            &checked, &bad, &err);
  disk_cache_close (dc);
  if (r == -1) {
    tool_error ("cache verify: %s", err.msg);
    return EXIT_FAIL;
  }
  printf ("%s: %" PRIu64 " entries checked, %" PRIu64 " bad%s\n", dir,
          checked, bad, bad && repair ? " (deleted)" : "");
  return bad ? EXIT_FAIL : EXIT_OK;
}

static int
cache_gc (const char *dir, uint64_t max_size)
{
  struct disk_cache *dc = open_existing (dir, 0);
  struct disk_cache_stats before, after;
  struct cloop_err err = { 0 };
  char b[32], a[32];

  /* Opening removes stale temporary files and measures the size. */
  if (dc == NULL)
    return EXIT_FAIL;
  disk_cache_get_stats (dc, &before);
  disk_cache_close (dc);
  after = before;
  if (max_size > 0) {
    /* The plugin's eviction, with max_size as the bound; trim brings
     * it well under (to 80 % of max_size) if it is over 95 %. */
    if ((dc = open_existing (dir, max_size)) == NULL)
      return EXIT_FAIL;
    if (disk_cache_trim (dc, &err) == -1) {
      disk_cache_close (dc);
      tool_error ("cache gc: %s", err.msg);
      return EXIT_FAIL;
    }
    disk_cache_get_stats (dc, &after);
    disk_cache_close (dc);
  }
  format_bytes (b, before.bytes);
  format_bytes (a, after.bytes);
  printf ("%s: %s before, %s after; %" PRIu64 " entries evicted\n", dir, b,
          a, after.evictions);
  return EXIT_OK;
}

enum { OPT_REPAIR = 256, OPT_MAX_SIZE };

int
cmd_cache (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "repair", no_argument, NULL, OPT_REPAIR },
    { "max-size", required_argument, NULL, OPT_MAX_SIZE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *action;
  bool repair = false, max_set = false;
  uint64_t max_size = 0;
  int c;

  if (argc >= 2 && (strcmp (argv[1], "--help") == 0 ||
                    strcmp (argv[1], "-h") == 0)) {
    cache_usage (stdout);
    return EXIT_OK;
  }
  if (argc < 2 || (strcmp (argv[1], "verify") != 0 &&
                   strcmp (argv[1], "gc") != 0))
    return tool_usage_error ("cache", "expected verify or gc");
  action = argv[1];
  argc--, argv++;
  while ((c = getopt_long (argc, argv, "+h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_REPAIR: repair = true; break;
    case OPT_MAX_SIZE:
      if (parse_size (optarg, &max_size) == -1 || max_size == 0)
        return tool_usage_error ("cache", "--max-size %s: not a size",
                                 optarg);
      max_set = true;
      break;
    case 'h': cache_usage (stdout); return EXIT_OK;
    default: return tool_usage_error ("cache", "bad option");
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("cache", "expected CACHE-DIR");
  if (strcmp (action, "verify") == 0) {
    if (max_set)
      return tool_usage_error ("cache", "--max-size is for gc");
    return cache_verify (argv[optind], repair);
  }
  if (repair)
    return tool_usage_error ("cache", "--repair is for verify");
  return cache_gc (argv[optind], max_size);
}
