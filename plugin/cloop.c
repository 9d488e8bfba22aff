/* nbdkit-cloop: nbdkit glue.
 *
 * Parses configuration, opens the image once in .get_ready (so that a
 * bad image stops nbdkit with a clear error before it serves anything)
 * and translates NBD callbacks into calls on the reader (reader.h).
 * Everything else lives in the layers below: index/ (formats and
 * decoders), cache/ (memory cache), fetch/ (sources).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "decode.h"
#include "http.h"
#include "image.h"
#include "reader.h"
#include "signature.h"
#include "store.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#define DEFAULT_MEMORY_CACHE_SIZE (128 * 1024 * 1024)
#define DEFAULT_CACHE_MAX_SIZE (INT64_C (4) * 1024 * 1024 * 1024)
#define DEFAULT_REVALIDATE 600
#define DEFAULT_READAHEAD (2 * 1024 * 1024)   /* remote images only */

/* Debug flags: -D cloop.map=1 prints the block map at start-up,
 * -D cloop.blocks=1 every block fill, -D cloop.stats=1 cache and HTTP
 * counters when a connection closes, -D cloop.http=1 every HTTP
 * request. */
NBDKIT_DLL_PUBLIC int cloop_debug_map = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_blocks = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_stats = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_http = 0;

/* The plugin's whole state. */
static struct {
  char *file;                   /* file= (absolute path) */
  struct http_config http;      /* url= and the HTTP keys */
  char *cache_dir;              /* cache-dir= (NULL: none) */
  bool cache_dir_set;
  int64_t cache_max_size;       /* cache-max-size= */
  unsigned revalidate;          /* revalidate= (seconds) */
  int64_t readahead;            /* readahead= (-1: default) */
  int64_t memory_cache_size;    /* memory-cache-size= */
  bool force_zlib;              /* zlib-decoder=zlib */
  struct trust_key **keys;      /* pubkey= (repeatable) */
  size_t nkeys;
  bool have_pinned;             /* index-sha256= or url=...#sha256= */
  unsigned char pinned[32];
  bool insecure;                /* insecure=true */
  char *url;                    /* url= without its #sha256= fragment */
  struct reader *reader;        /* opened in get_ready */
} state = {
  .memory_cache_size = DEFAULT_MEMORY_CACHE_SIZE,
  .cache_max_size = DEFAULT_CACHE_MAX_SIZE,
  .revalidate = DEFAULT_REVALIDATE,
  .readahead = -1,
};

static void
debug_printf (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  nbdkit_vdebug (fmt, ap);
  va_end (ap);
}

/* Report a lower layer's error to nbdkit and return -1. */
static int
report (const struct cloop_err *err)
{
  nbdkit_error ("%s", err->msg);
  nbdkit_set_error (err->errnum ? err->errnum : EIO);
  return -1;
}

static void
warn_printf (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  nbdkit_error ("warning: %s", buf);
}

/* Pin glibc's mmap threshold at its default, 128 KiB, unless the user
 * chose one (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES).  Left dynamic,
 * glibc raises it to the size of every mmap'd chunk freed; nbdkit frees
 * its per-thread request buffers (as large as the largest request,
 * e.g. 2 MiB) when a connection ends, and from then on the buffers of
 * every other thread grow inside glibc's per-thread arenas among our
 * small per-request allocations, where the holes are never returned:
 * with 16 connections coming and going, 30-80 MiB more than with the
 * threshold pinned.  The plugin's own large transient buffers bypass
 * malloc (common/pagemem.h); nbdkit's are reused, so pinning costs no
 * extra mapping per request. */
static void
pin_mmap_threshold (void)
{
  const char *t = getenv ("GLIBC_TUNABLES");

  if (getenv ("MALLOC_MMAP_THRESHOLD_") == NULL &&
      (t == NULL || strstr (t, "mmap_threshold") == NULL))
    mallopt (M_MMAP_THRESHOLD, 128 * 1024);
}

static void
cloop_load (void)
{
  pin_mmap_threshold ();
  http_config_defaults (&state.http);
}

static void log_stats (void);

static void
cloop_unload (void)
{
  log_stats ();
  reader_free (state.reader);
  http_global_cleanup ();
  for (size_t i = 0; i < state.nkeys; i++)
    trust_key_free (state.keys[i]);
  free (state.keys);
  free (state.url);
  free (state.file);
  free (state.cache_dir);
}

/* Parse an unsigned key with a range; -1 after an error naming it. */
static int
parse_unsigned (const char *key, const char *value, unsigned lo, unsigned hi,
                unsigned *out)
{
  if (nbdkit_parse_unsigned (key, value, out) == -1)
    return -1;
  if (*out < lo || *out > hi) {
    nbdkit_error ("%s must be between %u and %u", key, lo, hi);
    return -1;
  }
  return 0;
}

/* Pin the SHA-256 of a store index from 64 hex digits. */
static int
set_pinned (const char *what, const char *hex)
{
  if (store_unhex (state.pinned, hex) == -1) {
    nbdkit_error ("%s must be 64 hexadecimal digits: %s", what, hex);
    return -1;
  }
  state.have_pinned = true;
  return 0;
}

/* The keys of block-store trust.  1 if key was one, 0 if not, -1 on
 * error. */
static int
config_trust (const char *key, const char *value)
{
  struct cloop_err err = { 0 };
  int r;

  if (strcmp (key, "pubkey") == 0) {
    struct trust_key **keys, *k;
    char *path = nbdkit_absolute_path (value);
    if (path == NULL)
      return -1;
    k = trust_key_load_public (path, &err);
    free (path);
    if (k == NULL)
      return report (&err);
    keys = realloc (state.keys, (state.nkeys + 1) * sizeof *keys);
    if (keys == NULL) {
      trust_key_free (k);
      nbdkit_error ("realloc: %m");
      return -1;
    }
    state.keys = keys;
    state.keys[state.nkeys++] = k;
  }
  else if (strcmp (key, "index-sha256") == 0)
    return set_pinned (key, value) ?: 1;
  else if (strcmp (key, "insecure") == 0) {
    if ((r = nbdkit_parse_bool (value)) == -1)
      return -1;
    state.insecure = r;
  }
  else
    return 0;
  return 1;
}

/* The keys of remote images.  1 if key was one, 0 if not, -1 on error.
 * String values stay valid: nbdkit keeps argv alive. */
static int
config_http (const char *key, const char *value)
{
  struct http_config *h = &state.http;
  int r;

  if (strcmp (key, "url") == 0) {
    /* A "#sha256=HEX" fragment pins the index (self-certifying URL);
     * it is never sent to the server. */
    const char *frag = strstr (value, "#sha256=");
    free (state.url);
    state.url = strndup (value, frag ? (size_t) (frag - value)
                                     : strlen (value));
    if (state.url == NULL) {
      nbdkit_error ("strndup: %m");
      return -1;
    }
    if (frag && set_pinned ("url fragment #sha256", frag + 8) == -1)
      return -1;
    h->url = state.url;
  }
  else if (strcmp (key, "connections") == 0)
    return parse_unsigned (key, value, 1, 256, &h->connections) ?: 1;
  else if (strcmp (key, "timeout") == 0)
    return parse_unsigned (key, value, 1, 3600, &h->timeout) ?: 1;
  else if (strcmp (key, "retries") == 0)
    return parse_unsigned (key, value, 0, 100, &h->retries) ?: 1;
  else if (strcmp (key, "cainfo") == 0)
    h->cainfo = value;
  else if (strcmp (key, "capath") == 0)
    h->capath = value;
  else if (strcmp (key, "sslverify") == 0) {
    if ((r = nbdkit_parse_bool (value)) == -1)
      return -1;
    h->sslverify = r;
  }
  else if (strcmp (key, "proxy") == 0)
    h->proxy = value;
  else if (strcmp (key, "user-agent") == 0)
    h->user_agent = value;
  else if (strcmp (key, "unix-socket-path") == 0)
    h->unix_socket_path = value;
  else
    return 0;
  return 1;
}

static int
cloop_config (const char *key, const char *value)
{
  int r;

  if ((r = config_http (key, value)) != 0 ||
      (r = config_trust (key, value)) != 0)
    return r == -1 ? -1 : 0;
  if (strcmp (key, "file") == 0) {
    free (state.file);
    state.file = nbdkit_absolute_path (value);
    if (state.file == NULL)
      return -1;
  }
  else if (strcmp (key, "cache-dir") == 0) {
    free (state.cache_dir);
    state.cache_dir = NULL;
    state.cache_dir_set = true;
    if (strcmp (value, "none") != 0 &&
        (state.cache_dir = nbdkit_absolute_path (value)) == NULL)
      return -1;
  }
  else if (strcmp (key, "revalidate") == 0) {
    if (parse_unsigned (key, value, 0, 10 * 365 * 86400,
                        &state.revalidate) == -1)
      return -1;
  }
  else if (strcmp (key, "readahead") == 0) {
    state.readahead = nbdkit_parse_size (value);
    if (state.readahead == -1)
      return -1;
    if (state.readahead > 64 * 1024 * 1024) {
      nbdkit_error ("readahead must be at most 64M");
      return -1;
    }
  }
  else if (strcmp (key, "cache-max-size") == 0) {
    state.cache_max_size = nbdkit_parse_size (value);
    if (state.cache_max_size == -1)
      return -1;
  }
  else if (strcmp (key, "memory-cache-size") == 0) {
    state.memory_cache_size = nbdkit_parse_size (value);
    if (state.memory_cache_size == -1)
      return -1;
  }
  else if (strcmp (key, "zlib-decoder") == 0) {
    if (strcmp (value, "zlib") == 0)
      state.force_zlib = true;
    else if (strcmp (value, "auto") == 0)
      state.force_zlib = false;
    else {
      nbdkit_error ("zlib-decoder must be 'auto' or 'zlib', not '%s'", value);
      return -1;
    }
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* The default disk cache: $XDG_CACHE_HOME/nbdkit-cloop, else
 * $HOME/.cache/nbdkit-cloop; NULL (no cache) if neither is set. */
static char *
default_cache_dir (void)
{
  const char *xdg = getenv ("XDG_CACHE_HOME");
  const char *home = getenv ("HOME");
  char *dir = NULL;

  if (xdg && xdg[0] == '/') {
    if (asprintf (&dir, "%s/nbdkit-cloop", xdg) == -1)
      dir = NULL;
  }
  else if (home && home[0] == '/') {
    if (asprintf (&dir, "%s/.cache/nbdkit-cloop", home) == -1)
      dir = NULL;
  }
  return dir;
}

static int
cloop_config_complete (void)
{
  if (state.insecure)
    nbdkit_debug ("insecure=true: block-store indexes are not verified");
  if ((state.file == NULL) == (state.http.url == NULL)) {
    nbdkit_error ("give exactly one of file=<IMAGE> and url=<URL> "
                  "after the plugin name on the command line");
    return -1;
  }
  if (state.http.url &&
      strncmp (state.http.url, "http://", 7) != 0 &&
      strncmp (state.http.url, "https://", 8) != 0) {
    nbdkit_error ("url must start with http:// or https://: %s",
                  state.http.url);
    return -1;
  }
  if (state.http.url && !state.cache_dir_set)
    state.cache_dir = default_cache_dir ();
  return 0;
}

#define cloop_config_help \
  "[file=]<IMAGE>            cloop image of any dialect (or url=).\n" \
  "url=<URL>                 cloop image at an http:// or https:// URL.\n" \
  "memory-cache-size=<SIZE>  Decoded blocks kept in memory (default 128M).\n" \
  "readahead=<SIZE>          Sequential read-ahead (default 2M remote, 0 local).\n" \
  "zlib-decoder=auto|zlib    Use libdeflate where built (auto) or zlib.\n" \
  "cache-dir=<DIR>|none      Disk cache of remote blocks\n" \
  "                          (default $XDG_CACHE_HOME/nbdkit-cloop).\n" \
  "cache-max-size=<SIZE>     Bound of the disk cache (default 4G).\n" \
  "revalidate=<SECS>         Trust a cached image identity this long\n" \
  "                          without asking the server (default 600).\n" \
  "connections=<N>           Parallel HTTP connections (default 8).\n" \
  "timeout=<SECS>            Deadline of one read (default 30).\n" \
  "retries=<N>               Retries of a failed HTTP request (default 4).\n" \
  "cainfo=<FILE>, capath=<DIR>  CA certificates for https.\n" \
  "sslverify=false           Do not verify the server's certificate.\n" \
  "proxy=<URL>               HTTP proxy (default: $http_proxy etc.).\n" \
  "user-agent=<STRING>       User-Agent header.\n" \
  "unix-socket-path=<PATH>   Connect to the web server over a Unix socket.\n" \
  "pubkey=<FILE>             Trusted Ed25519 key of block stores (repeatable).\n" \
  "index-sha256=<HEX>        Trust the store index with this SHA-256.\n" \
  "insecure=true             Serve a store index without checking trust."

static void
dump_map (const struct block_map *map)
{
  nbdkit_debug ("%s: %s, %" PRIu64 " blocks of %" PRIu32 " bytes, "
                "size %" PRIu64 ", largest block %" PRIu32 " bytes",
                state.file, map->dialect, map->num_blocks, map->block_size,
                map->size, map->max_length);
  for (uint64_t i = 0; i < map->num_blocks; i++)
    nbdkit_debug ("block %" PRIu64 ": %s %" PRIu32 " bytes at %" PRIu64,
                  i, codec_name (map->entries[i].codec),
                  map->entries[i].length, map->entries[i].offset);
}

/* Open the image (probing the server for a URL) before nbdkit forks,
 * so that every error reaches the user. */
static int
cloop_get_ready (void)
{
  struct cloop_err err = { 0 };
  const struct block_map *map;
  struct image_config cfg = {
    .file = state.file,
    .http = state.http.url ? &state.http : NULL,
    .cache_dir = state.cache_dir,
    .cache_max_size = state.cache_max_size,
    .revalidate = state.revalidate,
    .warn = warn_printf,
    .keys = state.keys,
    .nkeys = state.nkeys,
    .have_pinned = state.have_pinned,
    .insecure = state.insecure,
    .reader = {
      .memory_cache_size = state.memory_cache_size,
      .force_zlib = state.force_zlib,
      .timeout = state.http.url ? state.http.timeout : 0,
      .readahead = state.readahead >= 0 ? (uint64_t) state.readahead
                   : state.http.url ? DEFAULT_READAHEAD : 0,
      .debug = debug_printf,
      .debug_blocks = cloop_debug_blocks,
    },
  };

  memcpy (cfg.pinned, state.pinned, sizeof cfg.pinned);
  if (state.http.url) {
    if (http_global_init () == -1) {
      nbdkit_error ("libcurl could not be initialised");
      return -1;
    }
    state.http.verbose = cloop_debug_http;
    state.http.debug = debug_printf;
  }
  state.reader = image_open (&cfg, &err);
  if (state.reader == NULL)
    return report (&err);
  map = reader_map (state.reader);
  if (cloop_debug_map)
    dump_map (map);
  nbdkit_debug ("%s: %s, %" PRIu64 " blocks of %" PRIu32 " bytes%s%s",
                state.file ? state.file : state.http.url, map->dialect,
                map->num_blocks, map->block_size,
                state.cache_dir ? ", disk cache " : "",
                state.cache_dir ? state.cache_dir : "");
  return 0;
}

/* Threads may only start after nbdkit has forked. */
static int
cloop_after_fork (void)
{
  struct cloop_err err = { 0 };

  if (image_start (state.reader, &err) == -1)
    return report (&err);
  return 0;
}

static void
cloop_dump_plugin (void)
{
  struct decoder *dec = decoder_new (false);
  const char *sep = "";

  printf ("cloop_version=%s\n", PACKAGE_VERSION);
  printf ("cloop_codecs=");
  for (int c = 0; c < CODEC_COUNT; c++)
    if (codec_supported (c)) {
      printf ("%s%s", sep, codec_name (c));
      sep = ",";
    }
  printf ("\n");
  if (dec) {
    printf ("cloop_zlib_decoder=%s\n", decoder_zlib_impl (dec));
    decoder_free (dec);
  }
}

/* No per-connection state: every connection reads the one image. */
static void *
cloop_open_connection (int readonly)
{
  return &state;
}

/* Log the cache and HTTP counters (-D cloop.stats=1). */
static void
log_stats (void)
{
  struct block_cache_stats st;

  if (!cloop_debug_stats || state.reader == NULL)
    return;
  reader_get_cache_stats (state.reader, &st);
  nbdkit_debug ("memory cache: %" PRIu64 " hits, %" PRIu64 " misses, %"
                PRIu64 " waits, %" PRIu64 " evictions, %" PRIu64
                " failed fills, %" PRIu64 " bytes in %" PRIu64 " blocks",
                st.hits, st.misses, st.waits, st.evictions, st.fill_failures,
                st.bytes_cached, st.entries);
  if (strcmp (reader_source (state.reader)->ops->name, "http") == 0) {
    struct http_stats hs;
    source_http_get_stats (reader_source (state.reader), &hs);
    nbdkit_debug ("http: %" PRIu64 " requests, %" PRIu64 " bytes fetched, %"
                  PRIu64 " retries, %" PRIu64 " failed ranges",
                  hs.requests, hs.bytes_fetched, hs.retries, hs.failures);
  }
}

/* Counters at every disconnection, and at unload (nbdkit may exit
 * before a last connection's close runs). */
static void
cloop_close_connection (void *handle)
{
  log_stats ();
}

static int64_t
cloop_get_size (void *handle)
{
  return reader_map (state.reader)->size;
}

static int
cloop_can_multi_conn (void *handle)
{
  return 1;   /* read-only: every connection sees the same bytes */
}

static int
cloop_can_cache (void *handle)
{
  return NBDKIT_CACHE_NATIVE;
}

static int
cloop_block_size (void *handle,
                  uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  uint32_t bs = reader_map (state.reader)->block_size;

  *minimum = 1;
  /* The preferred size must be a power of two between 512 and 32M. */
  *preferred = 4096;
  if ((bs & (bs - 1)) == 0 && bs <= 32 * 1024 * 1024)
    *preferred = bs;
  *maximum = 0xffffffff;
  return 0;
}

static int
cloop_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct cloop_err err = { 0 };

  if (reader_pread (state.reader, buf, count, offset, &err) == -1) {
    image_read_failed (state.reader);
    return report (&err);
  }
  return 0;
}

static int
cloop_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct cloop_err err = { 0 };

  if (reader_prefetch (state.reader, count, offset, &err) == -1)
    return report (&err);
  return 0;
}

/* Blocks a format marks as all zeroes (FreeBSD zero-length blocks) are
 * holes; everything else is data. */
static int
cloop_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
               struct nbdkit_extents *extents)
{
  const struct block_map *map = reader_map (state.reader);
  uint64_t end = offset + count;
  uint64_t b = offset / map->block_size;

  while (offset < end && b < map->num_blocks) {
    uint64_t block_end = (b + 1) * map->block_size;
    uint32_t type = 0;

    if (block_end > map->size)
      block_end = map->size;
    if (map->entries[b].codec == CODEC_ZERO)
      type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    if (nbdkit_add_extent (extents, offset, block_end - offset, type) == -1)
      return -1;
    offset = block_end;
    b++;
    if ((flags & NBDKIT_FLAG_REQ_ONE) != 0)
      break;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name              = "cloop",
  .version           = PACKAGE_VERSION,
  .longname          = "nbdkit cloop plugin",
  .description       = "Serve the decoded contents of cloop images",
  .load              = cloop_load,
  .unload            = cloop_unload,
  .config            = cloop_config,
  .config_complete   = cloop_config_complete,
  .config_help       = cloop_config_help,
  .magic_config_key  = "file",
  .get_ready         = cloop_get_ready,
  .after_fork        = cloop_after_fork,
  .dump_plugin       = cloop_dump_plugin,
  .open              = cloop_open_connection,
  .close             = cloop_close_connection,
  .get_size          = cloop_get_size,
  .can_multi_conn    = cloop_can_multi_conn,
  .can_cache         = cloop_can_cache,
  .block_size        = cloop_block_size,
  .pread             = cloop_pread,
  .cache             = cloop_cache,
  .extents           = cloop_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
