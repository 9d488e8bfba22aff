/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store warm: fill an nbdkit-cloop disk cache with every block
 * of a remote image ahead of time.
 *
 * The image is opened exactly as the plugin opens it (export/: a
 * registry owning the disk cache, image_open's identity pinning, trust
 * and index caching), and read through the plugin's read pipeline
 * (reader_prefetch in large batches, so the HTTP source keeps many
 * transfers in flight).  Nothing here fetches or names a cache entry:
 * the keys are the plugin's by construction.
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockmap.h"
#include "commands.h"
#include "diskcache.h"
#include "http.h"
#include "image.h"
#include "progress.h"
#include "reader.h"
#include "registry.h"
#include "signature.h"
#include "store.h"
#include "tool.h"

/* As the plugin's cache-max-size= default. */
#define DEFAULT_CACHE_MAX_SIZE (UINT64_C (4) * 1024 * 1024 * 1024)
/* Decoded bytes asked for per reader_prefetch (at least one block). */
#define BATCH_BYTES (UINT64_C (32) * 1024 * 1024)

struct warm_opts {
  const char *url, *cache_dir;
  char *url_buf;                /* url without its #sha256= fragment */
  struct http_config http;
  uint64_t cache_max_size;
  struct trust_key **keys;
  size_t nkeys;
  bool have_pinned, insecure, have_hashes_pinned;
  unsigned char pinned[32], hashes_pinned[32];
  const char *block_hashes;
  char *block_hashes_buf;
  int progress;                 /* -1 auto, 0 quiet, 1 forced */
};

static void
warm_usage (FILE *f)
{
  struct http_config defaults;

  http_config_defaults (&defaults);
  fprintf (f,
"Usage: cloop-store warm [OPTIONS] URL CACHE-DIR\n"
"Fetch every block of the image at URL (a cloop file or a block-store\n"
"index) into CACHE-DIR, the cache-dir= of nbdkit-cloop, so that\n"
"'nbdkit cloop url=URL cache-dir=CACHE-DIR' then serves it without the\n"
"server.\n"
"\n"
"  -j, --jobs=N            parallel HTTP connections (default %u)\n"
"  -k, --pubkey=FILE       trusted Ed25519 key of block stores (repeatable)\n"
"      --index-sha256=HEX  trust the store index with this SHA-256\n"
"      --insecure          accept an unsigned, unpinned store index\n"
"      --block-hashes=FILE|URL\n"
"                          check every block of a cloop file against this\n"
"      --block-hashes-sha256=HEX\n"
"                          trust the block-hash list with this SHA-256\n"
"      --cache-max-size=SIZE  the cache's bound (default %" PRIu64 "G, as\n"
"                          the plugin)\n"
"      --progress          show progress even if stderr is not a terminal\n"
"  -q, --quiet             no progress and no summary\n"
"  -h, --help              this help\n"
"URL may end in #sha256=HEX (a pin of the store index), as url= does.\n",
           defaults.connections, DEFAULT_CACHE_MAX_SIZE >> 30);
}

enum { OPT_INDEX_SHA256 = 256, OPT_INSECURE, OPT_BLOCK_HASHES,
       OPT_BLOCK_HASHES_SHA256, OPT_CACHE_MAX_SIZE, OPT_PROGRESS };

static int
parse_pin (const char *opt, const char *hex, unsigned char out[32], bool *set)
{
  if (strlen (hex) != 64 || store_unhex (out, hex) == -1)
    return tool_usage_error ("warm", "%s %s: expected 64 hexadecimal digits",
                             opt, hex);
  *set = true;
  return 0;
}

static int
add_pubkey (struct warm_opts *o, const char *path)
{
  struct cloop_err err = { 0 };
  struct trust_key **k = realloc (o->keys, (o->nkeys + 1) * sizeof *k);

  if (k == NULL) {
    tool_error ("out of memory");
    return EXIT_FAIL;
  }
  o->keys = k;
  if ((k[o->nkeys] = trust_key_load_public (path, &err)) == NULL) {
    tool_error ("warm: %s", err.msg);
    return EXIT_FAIL;
  }
  o->nkeys++;
  return 0;
}

/* One option.  0, or an exit code after a message. */
static int
parse_warm_opt (struct warm_opts *o, int c, const char *arg)
{
  uint64_t v;

  switch (c) {
  case 'j':
    if (parse_u64 (arg, 1, 256, &v) == -1)
      return tool_usage_error ("warm", "-j %s: jobs must be 1 to 256", arg);
    o->http.connections = v;
    return 0;
  case 'k': return add_pubkey (o, arg);
  case OPT_INDEX_SHA256:
    return parse_pin ("--index-sha256", arg, o->pinned, &o->have_pinned);
  case OPT_BLOCK_HASHES_SHA256:
    return parse_pin ("--block-hashes-sha256", arg, o->hashes_pinned,
                      &o->have_hashes_pinned);
  case OPT_INSECURE: o->insecure = true; return 0;
  case OPT_BLOCK_HASHES:
    free (o->block_hashes_buf);
    /* A path is made absolute, as the plugin does with block-hashes=. */
    if (strncmp (arg, "http://", 7) == 0 || strncmp (arg, "https://", 8) == 0)
      o->block_hashes_buf = strdup (arg);
    else
      o->block_hashes_buf = realpath (arg, NULL);
    if (o->block_hashes_buf == NULL) {
      tool_error ("warm: --block-hashes %s: %s", arg, strerror (errno));
      return EXIT_FAIL;
    }
    o->block_hashes = o->block_hashes_buf;
    return 0;
  case OPT_CACHE_MAX_SIZE:
    if (parse_size (arg, &o->cache_max_size) == -1)
      return tool_usage_error ("warm", "--cache-max-size %s: not a size", arg);
    return 0;
  case OPT_PROGRESS: o->progress = 1; return 0;
  case 'q': o->progress = 0; return 0;
  }
  return tool_usage_error ("warm", "bad option");
}

/* Parse argv into o.  0 to go on, -1 after --help, else an exit code. */
static int
parse_warm_args (int argc, char **argv, struct warm_opts *o)
{
  static const struct option longopts[] = {
    { "jobs", required_argument, NULL, 'j' },
    { "pubkey", required_argument, NULL, 'k' },
    { "index-sha256", required_argument, NULL, OPT_INDEX_SHA256 },
    { "insecure", no_argument, NULL, OPT_INSECURE },
    { "block-hashes", required_argument, NULL, OPT_BLOCK_HASHES },
    { "block-hashes-sha256", required_argument, NULL,
      OPT_BLOCK_HASHES_SHA256 },
    { "cache-max-size", required_argument, NULL, OPT_CACHE_MAX_SIZE },
    { "progress", no_argument, NULL, OPT_PROGRESS },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *frag;
  int c, r = 0;

  while (r == 0 &&
         (c = getopt_long (argc, argv, "+j:k:qh", longopts, NULL)) != -1) {
    if (c == 'h') {
      warm_usage (stdout);
      return -1;
    }
    r = c == '?' ? tool_usage_error ("warm", "bad option")
                 : parse_warm_opt (o, c, optarg);
  }
  if (r != 0)
    return r;
  if (argc - optind != 2)
    return tool_usage_error ("warm", "expected URL and CACHE-DIR");
  o->cache_dir = argv[optind + 1];
  if (strncmp (argv[optind], "http://", 7) != 0 &&
      strncmp (argv[optind], "https://", 8) != 0)
    return tool_usage_error ("warm", "%s: not an http:// or https:// URL",
                             argv[optind]);
  frag = strstr (argv[optind], "#sha256=");
  o->url_buf = strndup (argv[optind], frag ? (size_t) (frag - argv[optind])
                                           : strlen (argv[optind]));
  if (o->url_buf == NULL) {
    tool_error ("out of memory");
    return EXIT_FAIL;
  }
  o->url = o->http.url = o->url_buf;
  if (frag && parse_pin ("URL fragment #sha256", frag + 8, o->pinned,
                         &o->have_pinned) != 0)
    return EXIT_USAGE;
  return 0;
}

static void
warn_printf (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "cloop-store: warning: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

/* Prefetch the whole image in batches.  0, or -1 with err set. */
static int
warm_all (struct reader *r, bool show, struct cloop_err *err)
{
  const struct block_map *map = reader_map (r);
  uint64_t batch = BATCH_BYTES / map->block_size * map->block_size;
  uint64_t off;
  struct progress prog;

  if (batch == 0)
    batch = map->block_size;
  progress_start (&prog, show, map->size);
  for (off = 0; off < map->size; off += batch) {
    uint64_t n = map->size - off < batch ? map->size - off : batch;
    if (reader_prefetch (r, n, off, err) == -1) {
      progress_finish (&prog);
      return -1;
    }
    progress_update_bytes (&prog, off + n, off + n == map->size);
  }
  progress_finish (&prog);
  return 0;
}

/* Open the image through a registry, as the plugin does, and warm it.
 * 0, or -1 with err set. */
static int
run_warm (struct warm_opts *o, struct cloop_err *err)
{
  struct registry_config rc = {
    .memory_cache_size = 2 * BATCH_BYTES,
    .cache_dir = o->cache_dir, .cache_max_size = o->cache_max_size,
    .http_max_connections = 2 * o->http.connections, .warn = warn_printf,
  };
  struct http_config bh;
  bool bh_url = o->block_hashes &&
    (strncmp (o->block_hashes, "http://", 7) == 0 ||
     strncmp (o->block_hashes, "https://", 8) == 0);
  struct image_config cfg = {
    .http = &o->http, .revalidate = 0, .warn = warn_printf,
    .keys = o->keys, .nkeys = o->nkeys, .have_pinned = o->have_pinned,
    .insecure = o->insecure, .block_hashes = o->block_hashes,
    .block_hashes_http = bh_url ? &bh : NULL,
    .have_hashes_pinned = o->have_hashes_pinned,
    .reader = { .timeout = o->http.timeout },
  };
  struct registry *reg = NULL;
  struct revision *rev = NULL;
  struct disk_cache_stats st;
  double t0 = progress_now ();
  bool show = o->progress == 1 || (o->progress == -1 && isatty (2));
  int ret = -1;

  bh = o->http;
  bh.url = o->block_hashes;
  memcpy (cfg.pinned, o->pinned, 32);
  memcpy (cfg.hashes_pinned, o->hashes_pinned, 32);
  if (http_global_init () == -1)
    return cloop_err_set (err, EIO, "libcurl could not be initialised");
  reg = registry_new (&rc, err);
  if (reg == NULL || registry_add (reg, "warm", &cfg, err) == -1 ||
      export_open (registry_find (reg, ""), err) == -1 ||
      registry_start (reg, err) == -1 ||
      (rev = export_acquire (registry_find (reg, ""), err)) == NULL)
    goto out;
  /* The plugin keeps no block of a cloop file whose validators do not
   * tell its versions apart (image_open warned why): nothing to warm. */
  if (reader_disk_cache (revision_reader (rev)) == NULL) {
    cloop_err_set (err, EAGAIN, "%s: the plugin would not keep its blocks "
                   "in the disk cache (see the warning above), so there is "
                   "nothing to warm", o->url);
    goto out;
  }
  if (warm_all (revision_reader (rev), show, err) == -1)
    goto out;
  disk_cache_get_stats (registry_disk_cache (reg), &st);
  if (st.evictions > 0 || st.puts_skipped > 0 || st.put_failures > 0) {
    cloop_err_set (err, ENOSPC, "%s: the image does not fit: %" PRIu64
                   " entries evicted, %" PRIu64 " not written (raise "
                   "--cache-max-size, and the plugin's cache-max-size=)",
                   o->cache_dir, st.evictions,
                   st.puts_skipped + st.put_failures);
    goto out;
  }
  if (o->progress != 0) {
    const struct block_map *map = reader_map (revision_reader (rev));
    char size[32];
    double secs = progress_now () - t0;
    format_bytes (size, map->size);
    /* Entries count blocks and the image's metadata (identity, index). */
    printf ("%s: %s (%s), %" PRIu64 " blocks; cache entries: %" PRIu64
            " written, %" PRIu64 " already there; %.2f s\n", o->url, size,
            map->dialect, map->num_blocks, st.puts, st.hits, secs);
  }
  ret = 0;
 out:
  if (rev)
    revision_release (rev);
  registry_free (reg);
  return ret;
}

int
cmd_warm (int argc, char **argv)
{
  struct warm_opts o = { .cache_max_size = DEFAULT_CACHE_MAX_SIZE,
                         .progress = -1 };
  struct cloop_err err = { 0 };
  int r;

  http_config_defaults (&o.http);
  r = parse_warm_args (argc, argv, &o);
  if (r == 0 && run_warm (&o, &err) == -1) {
    tool_error ("warm: %s", err.msg);
    r = EXIT_FAIL;
  }
  for (size_t i = 0; i < o.nkeys; i++)
    trust_key_free (o.keys[i]);
  free (o.keys);
  free (o.url_buf);
  free (o.block_hashes_buf);
  return r == -1 ? EXIT_OK : r;
}
