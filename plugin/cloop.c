/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: nbdkit glue.
 *
 * Parses configuration into the exports to serve (export/registry.h):
 * one image (file= or url=), opened in .get_ready so that a bad image
 * stops nbdkit with a clear error before it serves anything; or many
 * (dir= or an exports= catalogue), opened on first use.  Each
 * connection holds the revision of its export that it started on, and
 * NBD callbacks become calls on that revision's reader (reader.h).
 * Everything else lives in the layers below: export/ (what is served),
 * index/ (formats and decoders), cache/, fetch/.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "catalogue.h"
#include "decode.h"
#include "http.h"
#include "image.h"
#include "metrics.h"
#include "mirrors.h"
#include "reader.h"
#include "registry.h"
#include "signature.h"
#include "store.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#define DEFAULT_MEMORY_CACHE_SIZE (128 * 1024 * 1024)
#define DEFAULT_CACHE_MAX_SIZE (INT64_C (4) * 1024 * 1024 * 1024)
#define DEFAULT_REVALIDATE 600
#define DEFAULT_READAHEAD (32 * 1024 * 1024)  /* remote; see readahead */
#define DISK_READAHEAD_FACTOR 3 /* readahead-disk= by default, windows */
#define BACKGROUND_THREADS 16
#define DEFAULT_METRICS_INTERVAL 10      /* seconds */
#define MIRRORS_MAX 63                    /* mirror= per export */

/* Debug flags: -D cloop.map=1 prints the block map at start-up,
 * -D cloop.blocks=1 every block fill, -D cloop.stats=1 cache and HTTP
 * counters when a connection closes, -D cloop.http=1 every HTTP
 * request. */
NBDKIT_DLL_PUBLIC int cloop_debug_map = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_blocks = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_stats = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_http = 0;

/* The keys that may differ per export.  The command line gives every
 * export's defaults; a line of an exports= catalogue overrides them. */
struct export_settings {
  char *file;                   /* file= (absolute path), or NULL */
  char *url;                    /* url= without its #sha256= fragment */
  struct http_config http;      /* url= and the HTTP keys */
  unsigned revalidate;          /* revalidate= (seconds) */
  int64_t readahead;            /* readahead= (-1: default) */
  int64_t readahead_disk;       /* readahead-disk= (-1: default) */
  bool force_zlib;              /* zlib-decoder=zlib */
  struct trust_key **keys;      /* pubkey= (repeatable); the keys */
  size_t nkeys;                 /* themselves are in state.all_keys */
  bool have_pinned;             /* index-sha256= or url=...#sha256= */
  unsigned char pinned[32];
  bool insecure;                /* insecure=true */
  char *block_hashes;           /* block-hashes= (absolute path or URL,
                                   without its #sha256= fragment) */
  bool block_hashes_is_url;
  struct http_config block_hashes_http; /* the HTTP keys, url = list's */
  const char **mirrors;         /* mirror= (malloc'd array) */
  size_t n_mirrors;
  char *mirrors_location;       /* mirrors= (absolute path, or URL) */
  struct mirror_list mirror_list; /* loaded from it (owns its URLs) */
  bool have_hashes_pinned;      /* block-hashes-sha256= or #sha256= */
  unsigned char hashes_pinned[32];
  const char *iso_file;         /* iso-file= (a path inside an ISO) */
  char *profile;                /* profile= (absolute path or URL) */
  bool profile_none;            /* profile=none */
  struct http_config profile_http; /* the HTTP keys, url = profile's */
  bool have_profile_pinned;     /* profile-sha256= */
  unsigned char profile_pinned[32];
  char *profile_record;         /* profile-record= (absolute path) */
  struct image_config image;    /* built from the above in get_ready */
};

/* The plugin's whole state. */
static struct {
  struct export_settings defaults;  /* the command line */
  char *dir;                    /* dir= (absolute path) */
  char *exports_file;           /* exports= (absolute path) */
  const char *default_export;   /* default-export= */
  char *cache_dir;              /* cache-dir= (NULL: none) */
  bool cache_dir_set;
  char *state_dir;              /* state-dir= (NULL: none) */
  bool state_dir_set;
  int64_t cache_max_size;       /* cache-max-size= */
  int64_t memory_cache_size;    /* memory-cache-size= */
  struct trust_key **all_keys;  /* every key loaded, freed at unload */
  size_t n_all_keys;
  /* One export (file=, url=) or the catalogue's (dir=, exports=). */
  bool single;
  struct catalogue *catalogue;
  struct export_settings *exports;
  size_t nexports;
  struct registry *registry;    /* made in get_ready */
  char *metrics_file;           /* metrics-file= (absolute path) */
  unsigned metrics_interval;    /* metrics-interval= (0: not given) */
  struct metrics_writer *metrics;
  int interrupted;              /* atomic: the signal that stopped the
                                   opening in get_ready, or 0 */
} state = {
  .memory_cache_size = DEFAULT_MEMORY_CACHE_SIZE,
  .cache_max_size = DEFAULT_CACHE_MAX_SIZE,
  .defaults = { .revalidate = DEFAULT_REVALIDATE, .readahead = -1,
                .readahead_disk = -1 },
};

/* One connection: the revision of its export that it reads. */
struct handle {
  struct revision *rev;
  struct reader *reader;        /* revision_reader (rev) */
  struct read_stream stream;    /* this client's sequential reads */
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

/* True if fd 2 is /dev/null, as nbdkit leaves it once it has forked
 * into the background (its own messages then go to syslog). */
static bool
stderr_is_devnull (void)
{
  struct stat err, null;

  return fstat (2, &err) == 0 && stat ("/dev/null", &null) == 0 &&
    S_ISCHR (err.st_mode) && err.st_rdev == null.st_rdev;
}

/* A warning is not an error: nbdkit 1.32 has no call for one, so it is
 * written like nbdkit's own messages, "nbdkit: cloop: warning: ...", to
 * stderr, or to syslog at LOG_WARNING where nbdkit's messages go there. */
static void
warn_printf (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  if (stderr_is_devnull ())
    syslog (LOG_WARNING, "cloop: warning: %s", buf);
  else
    fprintf (stderr, "nbdkit: cloop: warning: %s\n", buf);
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
  http_config_defaults (&state.defaults.http);
}

static void log_stats (const char *only);

static void
free_settings (struct export_settings *s)
{
  free (s->mirrors);
  free (s->mirrors_location);
  mirror_list_free (&s->mirror_list);
  free (s->block_hashes);
  free (s->profile);
  free (s->profile_record);
  free (s->keys);
  free (s->url);
  free (s->file);
}

static void
cloop_unload (void)
{
  /* Counters again at exit: nbdkit may exit before a last
   * connection's close runs. */
  metrics_writer_free (state.metrics);
  log_stats (NULL);
  registry_free (state.registry);
  http_global_cleanup ();
  if (!state.single) {
    for (size_t i = 0; i < state.nexports; i++)
      free_settings (&state.exports[i]);
    free (state.exports);
  }
  catalogue_free (state.catalogue);
  free_settings (&state.defaults);
  for (size_t i = 0; i < state.n_all_keys; i++)
    trust_key_free (state.all_keys[i]);
  free (state.all_keys);
  free (state.dir);
  free (state.exports_file);
  free (state.cache_dir);
  free (state.state_dir);
  free (state.metrics_file);
}

/* Parse an unsigned key with a range; -1 after one error naming the
 * key, its value and what it should be. */
static int
parse_unsigned (const char *key, const char *value, unsigned lo, unsigned hi,
                unsigned *out)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (value, &end, 10);
  if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 ||
      v < lo || v > hi) {
    nbdkit_error ("%s=%s: not a whole number between %u and %u", key, value,
                  lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

/* nbdkit_parse_size, with an error naming the key.  -1 on error. */
static int64_t
parse_size (const char *key, const char *value)
{
  int64_t r = nbdkit_parse_size (value);

  if (r == -1)
    nbdkit_error ("%s=%s: not a size (a number of bytes, with an optional "
                  "suffix such as K, M, G)", key, value);
  return r;
}

/* nbdkit_parse_bool, with an error naming the key.  -1 on error. */
static int
parse_bool (const char *key, const char *value)
{
  int r = nbdkit_parse_bool (value);

  if (r == -1)
    nbdkit_error ("%s=%s: not a boolean (true or false)", key, value);
  return r;
}

/* A SHA-256 pin from 64 hex digits. */
static int
parse_pin (const char *what, const char *hex, unsigned char out[32],
           bool *have)
{
  if (store_unhex (out, hex) == -1) {
    nbdkit_error ("%s must be 64 hexadecimal digits: %s", what, hex);
    return -1;
  }
  *have = true;
  return 0;
}

/* Pin the SHA-256 of a store index. */
static int
set_pinned (struct export_settings *s, const char *what, const char *hex)
{
  return parse_pin (what, hex, s->pinned, &s->have_pinned);
}

/* The block-hash list of a plain cloop file (docs/FORMAT.md).  1 if
 * key was one, 0 if not, -1 on error. */
static int
config_block_hashes (struct export_settings *s, const char *key,
                     const char *value)
{
  if (strcmp (key, "block-hashes-sha256") == 0)
    return parse_pin (key, value, s->hashes_pinned,
                      &s->have_hashes_pinned) ?: 1;
  if (strcmp (key, "block-hashes") != 0)
    return 0;
  free (s->block_hashes);
  s->block_hashes_is_url = strncmp (value, "http://", 7) == 0 ||
                           strncmp (value, "https://", 8) == 0;
  if (s->block_hashes_is_url) {
    /* As for url=, a "#sha256=HEX" fragment pins the list. */
    const char *frag = strstr (value, "#sha256=");
    s->block_hashes = strndup (value, frag ? (size_t) (frag - value)
                                           : strlen (value));
    if (s->block_hashes == NULL) {
      nbdkit_error ("strndup: %m");
      return -1;
    }
    if (frag && parse_pin ("block-hashes fragment #sha256", frag + 8,
                           s->hashes_pinned, &s->have_hashes_pinned) == -1)
      return -1;
  }
  else if ((s->block_hashes = nbdkit_absolute_path (value)) == NULL)
    return -1;
  return 1;
}

static bool
is_url (const char *value)
{
  return strncmp (value, "http://", 7) == 0 ||
         strncmp (value, "https://", 8) == 0;
}

/* Boot profiles: profile=, profile-sha256=, profile-record=.  1 if key
 * was one, 0 if not, -1 on error. */
static int
config_profile (struct export_settings *s, const char *key,
                const char *value)
{
  if (strcmp (key, "profile-sha256") == 0)
    return parse_pin (key, value, s->profile_pinned,
                      &s->have_profile_pinned) ?: 1;
  if (strcmp (key, "profile-record") == 0) {
    free (s->profile_record);
    s->profile_record = nbdkit_absolute_path (value);
    return s->profile_record ? 1 : -1;
  }
  if (strcmp (key, "profile") != 0)
    return 0;
  free (s->profile);
  s->profile = NULL;
  s->profile_none = strcmp (value, "none") == 0;
  if (s->profile_none)
    return 1;
  s->profile = is_url (value) ? strdup (value) : nbdkit_absolute_path (value);
  if (s->profile == NULL) {
    nbdkit_error ("profile=%s: %m", value);
    return -1;
  }
  return 1;
}

/* Append p to a growing pointer array.  -1 after an error. */
static int
append_ptr (void ***v, size_t *n, void *p)
{
  void **nv = realloc (*v, (*n + 1) * sizeof *nv);

  if (nv == NULL) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  nv[(*n)++] = p;
  *v = nv;
  return 0;
}

/* The keys of block-store trust.  1 if key was one, 0 if not, -1 on
 * error. */
static int
config_trust (struct export_settings *s, const char *key, const char *value)
{
  struct cloop_err err = { 0 };
  int r;

  if (strcmp (key, "pubkey") == 0) {
    struct trust_key *k;
    char *path = nbdkit_absolute_path (value);
    if (path == NULL)
      return -1;
    k = trust_key_load_public (path, &err);
    free (path);
    if (k == NULL)
      return report (&err);
    if (append_ptr ((void ***) &state.all_keys, &state.n_all_keys, k) == -1) {
      trust_key_free (k);
      return -1;
    }
    if (append_ptr ((void ***) &s->keys, &s->nkeys, k) == -1)
      return -1;
  }
  else if (strcmp (key, "index-sha256") == 0)
    return set_pinned (s, key, value) ?: 1;
  else if (strcmp (key, "insecure") == 0) {
    if ((r = parse_bool (key, value)) == -1)
      return -1;
    s->insecure = r;
  }
  else
    return 0;
  return 1;
}

/* Set the URL of s ("#sha256=HEX" fragment: a pin of the store index,
 * never sent to the server).  -1 after an error. */
static int
set_url (struct export_settings *s, const char *value)
{
  const char *frag = strstr (value, "#sha256=");

  free (s->url);
  s->url = strndup (value, frag ? (size_t) (frag - value) : strlen (value));
  if (s->url == NULL) {
    nbdkit_error ("strndup: %m");
    return -1;
  }
  if (frag && set_pinned (s, "url fragment #sha256", frag + 8) == -1)
    return -1;
  s->http.url = s->url;
  return 0;
}

/* The HTTP keys of remote images.  1 if key was one, 0 if not, -1 on
 * error.  String values stay valid: nbdkit keeps argv alive, and the
 * catalogue lives until unload. */
static int
config_http (struct export_settings *s, const char *key, const char *value)
{
  struct http_config *h = &s->http;
  int r;

  if (strcmp (key, "connections") == 0)
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
    if ((r = parse_bool (key, value)) == -1)
      return -1;
    h->sslverify = r;
  }
  else if (strcmp (key, "proxy") == 0)
    h->proxy = value;
  else if (strcmp (key, "user-agent") == 0)
    h->user_agent = value;
  else if (strcmp (key, "unix-socket-path") == 0)
    h->unix_socket_path = value;
  else if (strcmp (key, "mirrors") == 0) {
    if (s->mirrors_location) {
      nbdkit_error ("mirrors=%s: mirrors= was already given", value);
      return -1;
    }
    if (strncmp (value, "http://", 7) == 0 ||
        strncmp (value, "https://", 8) == 0)
      s->mirrors_location = strdup (value);
    else
      s->mirrors_location = nbdkit_absolute_path (value);
    if (s->mirrors_location == NULL)
      return -1;
  }
  else if (strcmp (key, "mirror") == 0) {
    const char **v;
    if (strncmp (value, "http://", 7) != 0 &&
        strncmp (value, "https://", 8) != 0) {
      nbdkit_error ("mirror=%s: must start with http:// or https://", value);
      return -1;
    }
    if (s->n_mirrors >= MIRRORS_MAX) {
      nbdkit_error ("mirror=%s: at most %d mirrors", value, MIRRORS_MAX);
      return -1;
    }
    v = realloc (s->mirrors, (s->n_mirrors + 1) * sizeof *v);
    if (v == NULL) {
      nbdkit_error ("realloc: %m");
      return -1;
    }
    s->mirrors = v;
    s->mirrors[s->n_mirrors++] = value;
  }
  else
    return 0;
  return 1;
}

/* Every key that may differ per export.  1 if key was one, 0 if not,
 * -1 on error. */
static int
config_export_key (struct export_settings *s, const char *key,
                   const char *value)
{
  int r;

  if ((r = config_http (s, key, value)) != 0 ||
      (r = config_trust (s, key, value)) != 0 ||
      (r = config_block_hashes (s, key, value)) != 0 ||
      (r = config_profile (s, key, value)) != 0)
    return r;
  if (strcmp (key, "iso-file") == 0) {
    if (value[0] != '/' || strlen (value) > 250) {
      nbdkit_error ("iso-file=%s: must be an absolute path inside the ISO "
                    "image (e.g. /KNOPPIX/KNOPPIX1), at most 250 bytes",
                    value);
      return -1;
    }
    s->iso_file = value;
    return 1;
  }
  if (strcmp (key, "revalidate") == 0)
    return parse_unsigned (key, value, 0, 10 * 365 * 86400,
                           &s->revalidate) ?: 1;
  else if (strcmp (key, "readahead") == 0) {
    s->readahead = parse_size (key, value);
    if (s->readahead == -1)
      return -1;
    if (s->readahead > 64 * 1024 * 1024) {
      nbdkit_error ("readahead must be at most 64M");
      return -1;
    }
  }
  else if (strcmp (key, "readahead-disk") == 0) {
    s->readahead_disk = parse_size (key, value);
    if (s->readahead_disk == -1)
      return -1;
    if (s->readahead_disk > 1024 * 1024 * 1024) {
      nbdkit_error ("readahead-disk must be at most 1G");
      return -1;
    }
  }
  else if (strcmp (key, "zlib-decoder") == 0) {
    if (strcmp (value, "zlib") == 0)
      s->force_zlib = true;
    else if (strcmp (value, "auto") == 0)
      s->force_zlib = false;
    else {
      nbdkit_error ("zlib-decoder must be 'auto' or 'zlib', not '%s'", value);
      return -1;
    }
  }
  else
    return 0;
  return 1;
}

/* Set an absolute path key once; -1 after an error. */
static int
set_path_once (char **field, const char *key, const char *value)
{
  if (*field != NULL) {
    nbdkit_error ("%s= was given twice", key);
    return -1;
  }
  *field = nbdkit_absolute_path (value);
  return *field ? 0 : -1;
}

/* Where the image is: a path, or an http(s):// URL (also accepted as
 * the bare first parameter).  -1 after an error. */
static int
config_location (struct export_settings *s, const char *key,
                 const char *value)
{
  if (s->file || s->url) {
    nbdkit_error ("%s=: the image was already given (file= or url=, once)",
                  key);
    return -1;
  }
  if (strcmp (key, "url") == 0 || strncmp (value, "http://", 7) == 0 ||
      strncmp (value, "https://", 8) == 0)
    return set_url (s, value);
  return set_path_once (&s->file, key, value);
}

static int
cloop_config (const char *key, const char *value)
{
  int r;

  if ((r = config_export_key (&state.defaults, key, value)) != 0)
    return r == -1 ? -1 : 0;
  if (strcmp (key, "file") == 0 || strcmp (key, "url") == 0)
    return config_location (&state.defaults, key, value);
  else if (strcmp (key, "dir") == 0)
    return set_path_once (&state.dir, key, value);
  else if (strcmp (key, "exports") == 0)
    return set_path_once (&state.exports_file, key, value);
  else if (strcmp (key, "default-export") == 0)
    state.default_export = value;
  else if (strcmp (key, "cache-dir") == 0) {
    free (state.cache_dir);
    state.cache_dir = NULL;
    state.cache_dir_set = true;
    if (strcmp (value, "none") != 0 &&
        (state.cache_dir = nbdkit_absolute_path (value)) == NULL)
      return -1;
  }
  else if (strcmp (key, "state-dir") == 0) {
    free (state.state_dir);
    state.state_dir = NULL;
    state.state_dir_set = true;
    if (strcmp (value, "none") != 0 &&
        (state.state_dir = nbdkit_absolute_path (value)) == NULL)
      return -1;
  }
  else if (strcmp (key, "cache-max-size") == 0) {
    state.cache_max_size = parse_size (key, value);
    if (state.cache_max_size == -1)
      return -1;
  }
  else if (strcmp (key, "memory-cache-size") == 0) {
    state.memory_cache_size = parse_size (key, value);
    if (state.memory_cache_size == -1)
      return -1;
  }
  else if (strcmp (key, "metrics-file") == 0)
    return set_path_once (&state.metrics_file, key, value);
  else if (strcmp (key, "metrics-interval") == 0)
    return parse_unsigned (key, value, 1, 86400, &state.metrics_interval);
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* A default directory: $XDG_var/nbdkit-cloop, else
 * $HOME/home_rel/nbdkit-cloop; NULL if neither variable is set. */
static char *
default_dir (const char *xdg_var, const char *home_rel)
{
  const char *xdg = getenv (xdg_var);
  const char *home = getenv ("HOME");
  char *dir = NULL;

  if (xdg && xdg[0] == '/') {
    if (asprintf (&dir, "%s/nbdkit-cloop", xdg) == -1)
      dir = NULL;
  }
  else if (home && home[0] == '/') {
    if (asprintf (&dir, "%s/%s/nbdkit-cloop", home, home_rel) == -1)
      dir = NULL;
  }
  return dir;
}

/* A copy of the defaults that owns its own strings and key list. */
static int
copy_settings (struct export_settings *dst, const struct export_settings *src)
{
  *dst = *src;
  dst->file = NULL;
  dst->url = NULL;
  dst->keys = NULL;
  dst->block_hashes = NULL;     /* one image's: refused as a default */
  dst->have_hashes_pinned = false;
  dst->profile = NULL;          /* likewise */
  dst->have_profile_pinned = false;
  dst->profile_record = NULL;
  dst->mirrors = NULL;          /* likewise */
  dst->n_mirrors = 0;
  dst->mirrors_location = NULL;
  memset (&dst->mirror_list, 0, sizeof dst->mirror_list);
  if (src->nkeys) {
    dst->keys = malloc (src->nkeys * sizeof *dst->keys);
    if (dst->keys == NULL) {
      nbdkit_error ("malloc: %m");
      return -1;
    }
    memcpy (dst->keys, src->keys, src->nkeys * sizeof *dst->keys);
  }
  return 0;
}

/* The settings of catalogue entry ce: the defaults, its location, its
 * keys.  -1 after an error naming the line. */
static int
entry_settings (struct export_settings *s, const struct catalogue_entry *ce)
{
  static const char *const process_keys[] = {
    "cache-dir", "cache-max-size", "memory-cache-size", "state-dir",
    "dir", "exports", "metrics-file", "metrics-interval",
    "default-export", "file", "url", NULL
  };

  if (copy_settings (s, &state.defaults) == -1)
    return -1;
  if (config_location (s, "location", ce->location) == -1)
    goto bad;
  for (size_t k = 0; k < ce->nkeys; k++) {
    for (const char *const *p = process_keys; *p; p++)
      if (strcmp (ce->keys[k], *p) == 0) {
        nbdkit_error ("%s=: not a key of one export (give it on the "
                      "command line, or the location as the second word)",
                      ce->keys[k]);
        goto bad;
      }
    int r = config_export_key (s, ce->keys[k], ce->values[k]);
    if (r == 0)
      nbdkit_error ("unknown parameter '%s'", ce->keys[k]);
    if (r != 1)
      goto bad;
  }
  return 0;
 bad:
  if (ce->line)
    nbdkit_error ("exports %s line %u (export %s): bad setting above",
                  state.exports_file, ce->line, ce->name);
  else
    nbdkit_error ("dir %s: export %s: bad setting above", state.dir,
                  ce->name);
  return -1;
}

static void
skipped_debug (const char *path, const char *why)
{
  nbdkit_debug ("dir: skipping %s: %s", path, why);
}

/* Read the catalogue of dir= or exports= into state.exports. */
static int
load_catalogue (void)
{
  struct cloop_err err = { 0 };
  size_t n;

  if (state.dir)
    state.catalogue = catalogue_scan_dir (state.dir, skipped_debug, &err);
  else
    state.catalogue = catalogue_read (state.exports_file, &err);
  if (state.catalogue == NULL)
    return report (&err);
  n = catalogue_count (state.catalogue);
  if (n == 0) {
    nbdkit_error ("dir %s: no cloop image or block store in it", state.dir);
    return -1;
  }
  state.exports = calloc (n, sizeof *state.exports);
  if (state.exports == NULL) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (entry_settings (&state.exports[i],
                        catalogue_entry (state.catalogue, i)) == -1)
      return -1;
    state.nexports = i + 1;
  }
  return 0;
}

static int
check_settings (const struct export_settings *s)
{
  if (s->url && strncmp (s->url, "http://", 7) != 0 &&
      strncmp (s->url, "https://", 8) != 0) {
    nbdkit_error ("url must start with http:// or https://: %s", s->url);
    return -1;
  }
  if (s->have_hashes_pinned && s->block_hashes == NULL) {
    nbdkit_error ("block-hashes-sha256 needs block-hashes=<FILE|URL>");
    return -1;
  }
  if (s->have_profile_pinned && s->profile == NULL) {
    nbdkit_error ("profile-sha256 needs profile=<FILE|URL>");
    return -1;
  }
  if (s->profile && is_url (s->profile) && !s->have_profile_pinned) {
    nbdkit_error ("profile=%s: a profile fetched over HTTP needs "
                  "profile-sha256= (a cloop file has no signature to "
                  "cover it)", s->profile);
    return -1;
  }
  if (s->n_mirrors > 0 && s->url == NULL) {
    nbdkit_error ("mirror=%s: mirrors are other URLs of a remote image "
                  "(url=), and this image is a local file", s->mirrors[0]);
    return -1;
  }
  return 0;
}

/* Add one URL of s's mirror list: the image's url= if it has none,
 * else a mirror (unless it is url= again).  -1 after an error. */
static int
add_listed_mirror (struct export_settings *s, const char *url)
{
  const char **v;

  if (s->url == NULL)
    return set_url (s, url);
  if (strcmp (url, s->url) == 0)
    return 0;
  for (size_t i = 0; i < s->n_mirrors; i++)
    if (strcmp (url, s->mirrors[i]) == 0)
      return 0;
  if (s->n_mirrors >= MIRRORS_MAX) {
    nbdkit_debug ("mirrors=%s: %s not used: at most %d mirrors",
                  s->mirrors_location, url, MIRRORS_MAX);
    return 0;
  }
  v = realloc (s->mirrors, (s->n_mirrors + 1) * sizeof *v);
  if (v == NULL) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  s->mirrors = v;
  s->mirrors[s->n_mirrors++] = url;
  return 0;
}

/* Load s's mirrors= list: its URLs, by priority, become url= (if not
 * given) and mirrors; a metalink's <size> pins the object's size.  For
 * a metalink describing several files, the one named like url= is
 * used.  -1 after an error naming the list. */
static int
load_mirrors (struct export_settings *s)
{
  struct cloop_err err = { 0 };
  const char *name = NULL;

  if (s->file) {
    nbdkit_error ("mirrors=%s: mirrors are other URLs of a remote image "
                  "(url=), and this image is a local file",
                  s->mirrors_location);
    return -1;
  }
  if (s->url) {
    size_t end = strcspn (s->url, "?#");
    name = s->url + end;
    while (name > s->url && name[-1] != '/')
      name--;
  }
  if (mirrors_load (s->mirrors_location, &s->http, NULL, &s->mirror_list,
                    &err) == -1)
    return report (&err);
  for (size_t i = 0; i < s->mirror_list.n_notes; i++)
    nbdkit_debug ("%s", s->mirror_list.notes[i]);
  if (name && s->mirror_list.is_metalink && s->mirror_list.file_name &&
      strncmp (s->mirror_list.file_name, name, strcspn (name, "?#")) != 0)
    nbdkit_debug ("mirrors=%s: describes %s, served as %s",
                  s->mirrors_location, s->mirror_list.file_name, s->url);
  for (size_t i = 0; i < s->mirror_list.n; i++)
    if (add_listed_mirror (s, s->mirror_list.mirrors[i].url) == -1)
      return -1;
  if (s->mirror_list.have_size)
    s->http.expect_size = s->mirror_list.size;
  return 0;
}

static int
cloop_config_complete (void)
{
  bool any_remote = false;
  int given = (state.defaults.file || state.defaults.url ||
               state.defaults.mirrors_location) +
    (state.dir != NULL) + (state.exports_file != NULL);

  if (given != 1) {
    nbdkit_error ("give exactly one of file=<IMAGE>, url=<URL> (or "
                  "mirrors=<LIST>), dir=<DIR> and exports=<FILE> after the "
                  "plugin name on the command line");
    return -1;
  }
  state.single = state.dir == NULL && state.exports_file == NULL;
  if (state.defaults.insecure)
    nbdkit_debug ("insecure=true: block-store indexes are not verified");
  if (state.single) {
    state.exports = &state.defaults;
    state.nexports = 1;
  }
  if (state.dir && state.defaults.iso_file) {
    nbdkit_error ("iso-file= belongs to one image: with dir=, every "
                  "KNOPPIX* file of an ISO is an export of its own");
    return -1;
  }
  if (!state.single && (state.defaults.n_mirrors > 0 ||
                        state.defaults.mirrors_location)) {
    nbdkit_error ("mirror= and mirrors= belong to one image: with dir= or "
                  "exports=, give them on that export's catalogue line");
    return -1;
  }
  if (!state.single && (state.defaults.block_hashes ||
                        state.defaults.have_hashes_pinned)) {
    nbdkit_error ("block-hashes= belongs to one image: with dir= or "
                  "exports=, give it on that export's catalogue line");
    return -1;
  }
  if (!state.single && (state.defaults.profile ||
                        state.defaults.have_profile_pinned ||
                        state.defaults.profile_record)) {
    nbdkit_error ("%s belongs to one image: with dir= or exports=, give it "
                  "on that export's catalogue line",
                  state.defaults.profile_record ? "profile-record="
                                                : "profile=");
    return -1;
  }
  if (!state.single && load_catalogue () == -1)
    return -1;
  for (size_t i = 0; i < state.nexports; i++) {
    if (state.exports[i].mirrors_location &&
        load_mirrors (&state.exports[i]) == -1)
      return -1;
    if (check_settings (&state.exports[i]) == -1)
      return -1;
    any_remote |= state.exports[i].url != NULL;
  }
  if (state.default_export && state.single) {
    nbdkit_error ("default-export= needs dir= or exports=");
    return -1;
  }
  if (state.metrics_interval && state.metrics_file == NULL) {
    nbdkit_error ("metrics-interval= needs metrics-file=");
    return -1;
  }
  if (any_remote && !state.cache_dir_set)
    state.cache_dir = default_dir ("XDG_CACHE_HOME", ".cache");
  if (!state.state_dir_set)
    state.state_dir = default_dir ("XDG_STATE_HOME", ".local/state");
  return 0;
}

#define cloop_config_help \
  "[file=]<IMAGE>            cloop image of any dialect, or an ISO9660\n" \
  "                          image holding one (or url=).\n" \
  "url=<URL>                 Such an image at an http:// or https:// URL.\n" \
  "dir=<DIR>                 Serve every image and store in DIR by name.\n" \
  "exports=<FILE>            Serve the exports listed in FILE\n" \
  "                          (NAME LOCATION [KEY=VALUE...] per line).\n" \
  "default-export=<NAME>     The export of the empty name (default: first).\n" \
  "memory-cache-size=<SIZE>  Decoded blocks kept in memory (default 128M).\n" \
  "readahead=<SIZE>          Largest read-ahead window (default 32M remote,\n" \
  "                          0 local).\n" \
  "readahead-disk=<SIZE>     Read-ahead past it into the disk cache\n" \
  "                          (default 3 x readahead, <= cache-max-size/8).\n" \
  "zlib-decoder=auto|zlib    Use libdeflate where built (auto) or zlib.\n" \
  "cache-dir=<DIR>|none      Disk cache of remote blocks\n" \
  "                          (default $XDG_CACHE_HOME/nbdkit-cloop).\n" \
  "cache-max-size=<SIZE>     Bound of the disk cache (default 4G).\n" \
  "state-dir=<DIR>|none      Store revisions accepted, never evicted\n" \
  "                          (default $XDG_STATE_HOME/nbdkit-cloop).\n" \
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
  "mirror=<URL>              Another URL of the same image (repeatable).\n" \
  "mirrors=<FILE|URL>        Mirrors from a Metalink 4 file or a URL list.\n" \
  "pubkey=<FILE>             Trusted Ed25519 key of block stores (repeatable).\n" \
  "index-sha256=<HEX>        Trust the store index with this SHA-256.\n" \
  "insecure=true             Serve a store index without checking trust.\n" \
  "block-hashes=<FILE|URL>   Check every block of a cloop file against this\n" \
  "                          list of SHA-256 (cloop-store hashes).\n" \
  "block-hashes-sha256=<HEX> Trust the block-hash list with this SHA-256.\n" \
  "profile=<FILE|URL>|none   Boot profile of a cloop file to replay (none:\n" \
  "                          do not replay a store's signed profile).\n" \
  "profile-sha256=<HEX>      Trust the profile with this SHA-256.\n" \
  "profile-record=<FILE>     Record the blocks clients touch, as a boot.\n" \
  "iso-file=<PATH>           The cloop file served from an ISO9660 image\n" \
  "                          (default /KNOPPIX/KNOPPIX).\n" \
  "metrics-file=<FILE>       Write the statistics there (Prometheus text).\n" \
  "metrics-interval=<SECS>   ... every SECS seconds (default 10)."

static void
dump_map (const char *name, const struct block_map *map)
{
  nbdkit_debug ("%s: %s, %" PRIu64 " blocks of %" PRIu32 " bytes, "
                "size %" PRIu64 ", largest block %" PRIu32 " bytes",
                name, map->dialect, map->num_blocks, map->block_size,
                map->size, map->max_length);
  for (uint64_t i = 0; i < map->num_blocks; i++)
    nbdkit_debug ("block %" PRIu64 ": %s %" PRIu32 " bytes at %" PRIu64,
                  i, codec_name (map->entries[i].codec),
                  map->entries[i].length, map->entries[i].offset);
}

/* The signals nbdkit quits on.  nbdkit 1.32 catches them only after
 * .get_ready, and the single export is opened there: against a server
 * that never answers, that takes up to timeout= seconds, during which
 * SIGINT kills nbdkit without a word, or is ignored altogether where a
 * shell started it in the background.  So get_ready catches them
 * itself while it opens, and gives up at once (as nbdkit would, it
 * catches SIGINT even where it was ignored).  nbdkit_shutdown cannot
 * be used before nbdkit serves: its quit pipe does not exist yet. */
static const struct {
  int sig;
  const char *name;
} quit_signals[] = {
  { SIGINT, "SIGINT" }, { SIGQUIT, "SIGQUIT" },
  { SIGTERM, "SIGTERM" }, { SIGHUP, "SIGHUP" },
};
#define N_QUIT_SIGNALS (sizeof quit_signals / sizeof quit_signals[0])

static void
on_quit_signal (int sig)
{
  __atomic_store_n (&state.interrupted, sig, __ATOMIC_RELAXED);
}

/* http_config.cancelled: has a quit signal stopped the opening? */
static bool
startup_interrupted (void)
{
  return __atomic_load_n (&state.interrupted, __ATOMIC_RELAXED) != 0;
}

/* Catch the quit signals, saving the actions they had in old. */
static void
catch_quit_signals (struct sigaction old[N_QUIT_SIGNALS])
{
  struct sigaction sa = { .sa_handler = on_quit_signal,
                          .sa_flags = SA_RESTART };

  sigemptyset (&sa.sa_mask);
  for (size_t i = 0; i < N_QUIT_SIGNALS; i++)
    sigaction (quit_signals[i].sig, &sa, &old[i]);
}

static void
restore_quit_signals (const struct sigaction old[N_QUIT_SIGNALS])
{
  for (size_t i = 0; i < N_QUIT_SIGNALS; i++)
    sigaction (quit_signals[i].sig, &old[i], NULL);
}

static const char *
quit_signal_name (int sig)
{
  for (size_t i = 0; i < N_QUIT_SIGNALS; i++)
    if (quit_signals[i].sig == sig)
      return quit_signals[i].name;
  return "a signal";
}

/* The image configuration of s.  (Its memory cache is the registry's:
 * memory-cache-size is one budget for all exports.) */
/* readahead= by default: for a remote image DEFAULT_READAHEAD, but at
 * most a quarter of the memory cache, so that a window's blocks stay
 * cached until the client reads them; for a local file none (a read
 * costs no round trip, and measured with parallel clients, reading
 * ahead only moved decoding between threads and evicted blocks). */
static uint64_t
default_readahead (bool remote)
{
  uint64_t quarter = state.memory_cache_size / 4;

  if (!remote)
    return 0;
  return quarter < DEFAULT_READAHEAD ? quarter : DEFAULT_READAHEAD;
}

/* readahead-disk= by default: DISK_READAHEAD_FACTOR windows of
 * readahead (so a window that has grown to its bound is backed by as
 * much again, several times, waiting compressed on disk: enough for
 * three mirrors' bandwidth-delay product, which decoded blocks in a
 * default memory cache could not hold), at most an eighth of the disk
 * cache so that it never evicts what it has just read ahead. */
static uint64_t
default_readahead_disk (uint64_t readahead)
{
  uint64_t d = readahead * DISK_READAHEAD_FACTOR;

  if (state.cache_max_size > 0 && d > (uint64_t) state.cache_max_size / 8)
    d = state.cache_max_size / 8;
  return d;
}

static void
build_image_config (struct export_settings *s)
{
  bool remote = s->url != NULL;
  uint64_t readahead = s->readahead >= 0 ? (uint64_t) s->readahead
                                         : default_readahead (remote);

  s->http.verbose = cloop_debug_http;
  s->http.debug = debug_printf;
  s->http.warn = warn_printf;
  s->http.cancelled = startup_interrupted;
  /* The list is fetched with the image's HTTP settings. */
  s->http.mirrors = s->mirrors;
  s->http.n_mirrors = s->n_mirrors;
  s->block_hashes_http = s->http;
  s->block_hashes_http.url = s->block_hashes;
  s->block_hashes_http.mirrors = NULL;
  s->block_hashes_http.n_mirrors = 0;
  s->profile_http = s->http;
  s->profile_http.url = s->profile;
  s->profile_http.mirrors = NULL;
  s->profile_http.n_mirrors = 0;
  s->image = (struct image_config) {
    .file = s->file,
    .http = remote ? &s->http : NULL,
    .revalidate = s->revalidate,
    .warn = warn_printf,
    .keys = s->keys,
    .nkeys = s->nkeys,
    .have_pinned = s->have_pinned,
    .insecure = s->insecure,
    .block_hashes = s->block_hashes,
    .block_hashes_http = s->block_hashes_is_url ? &s->block_hashes_http
                                                : NULL,
    .have_hashes_pinned = s->have_hashes_pinned,
    .iso_file = s->iso_file,
    .profile = s->profile,
    .profile_http = &s->profile_http,
    .have_profile_pinned = s->have_profile_pinned,
    .profile_record = s->profile_record,
    .profile_replay = !s->profile_none,
    .reader = {
      .force_zlib = s->force_zlib,
      .timeout = remote ? s->http.timeout : 0,
      .readahead = readahead,
      .readahead_disk = s->readahead_disk >= 0
                        ? (uint64_t) s->readahead_disk
                        : default_readahead_disk (readahead),
      .debug = debug_printf,
      .debug_blocks = cloop_debug_blocks,
    },
  };
  memcpy (s->image.pinned, s->pinned, sizeof s->image.pinned);
  memcpy (s->image.hashes_pinned, s->hashes_pinned,
          sizeof s->image.hashes_pinned);
  memcpy (s->image.profile_pinned, s->profile_pinned,
          sizeof s->image.profile_pinned);
}

/* The name of the single export: the last component of its path. */
static void
single_name (const struct export_settings *s, char *out, size_t n)
{
  const char *loc = s->file ? s->file : s->url;
  size_t end = strcspn (loc, "?#"), start = end;

  while (start > 0 && loc[start - 1] != '/')
    start--;
  snprintf (out, n, "%.*s", (int) (end - start), loc + start);
  if (out[0] == '\0')
    snprintf (out, n, "default");
}

/* Open the single export, with the quit signals caught: one of them
 * stops the opening within a tick of the HTTP engine and fails it with
 * one message.  Then check what it is. */
static int
open_single (void)
{
  struct cloop_err err = { 0 };
  struct export *e = registry_find (state.registry, "");
  struct revision *rev = NULL;
  const struct block_map *map;
  struct sigaction old[N_QUIT_SIGNALS];
  int sig;

  catch_quit_signals (old);
  if (export_open (e, &err) == 0)
    rev = export_acquire (e, &err);
  restore_quit_signals (old);
  sig = __atomic_load_n (&state.interrupted, __ATOMIC_RELAXED);
  if (sig != 0) {
    if (rev)
      revision_release (rev);
    nbdkit_error ("interrupted by %s while opening %s", quit_signal_name (sig),
                  state.defaults.file ? state.defaults.file
                  : state.defaults.url);
    return -1;
  }
  if (rev == NULL)
    return report (&err);
  map = reader_map (revision_reader (rev));
  if (state.defaults.nkeys > 0 && !map->objects_by_hash &&
      state.defaults.block_hashes == NULL) {
    revision_release (rev);
    nbdkit_error ("pubkey= checks block-store indexes and block-hash "
                  "lists, and %s is a cloop file (%s) given without "
                  "block-hashes=: the key would verify nothing",
                  registry_name (state.registry, 0), map->dialect);
    return -1;
  }
  if (cloop_debug_map)
    dump_map (registry_name (state.registry, 0), map);
  nbdkit_debug ("%s: %s, %" PRIu64 " blocks of %" PRIu32 " bytes%s%s%s",
                state.defaults.file ? state.defaults.file
                : state.defaults.url, map->dialect,
                map->num_blocks, map->block_size,
                state.defaults.block_hashes
                ? ", every block checked against block-hashes" : "",
                state.cache_dir ? ", disk cache " : "",
                state.cache_dir ? state.cache_dir : "");
  revision_release (rev);
  return 0;
}

/* Register the exports; open the single one now, before nbdkit forks,
 * so that every error reaches the user. */
static int
cloop_get_ready (void)
{
  struct cloop_err err = { 0 };
  struct registry_config rc = {
    .memory_cache_size = state.memory_cache_size,
    .cache_dir = state.cache_dir, .cache_max_size = state.cache_max_size,
    .state_dir = state.state_dir,
    .background_threads = BACKGROUND_THREADS,
    .warn = warn_printf, .debug = debug_printf,
  };
  bool any_remote = false;

  /* The HTTP engine's bound: connections= of every origin (the URL and
   * each mirror) of every remote export. */
  for (size_t i = 0; i < state.nexports; i++) {
    const struct export_settings *x = &state.exports[i];
    if (x->url || x->block_hashes_is_url) {
      any_remote = true;
      rc.http_max_connections += x->http.connections * (1 + x->n_mirrors);
    }
  }
  if (any_remote && http_global_init () == -1) {
    nbdkit_error ("libcurl could not be initialised");
    return -1;
  }
  state.registry = registry_new (&rc, &err);
  if (state.registry == NULL)
    return report (&err);
  for (size_t i = 0; i < state.nexports; i++) {
    char name[256];
    build_image_config (&state.exports[i]);
    if (state.single)
      single_name (&state.exports[i], name, sizeof name);
    if (registry_add (state.registry, state.single ? name
                      : catalogue_entry (state.catalogue, i)->name,
                      &state.exports[i].image, &err) == -1)
      return report (&err);
  }
  if (state.default_export &&
      registry_set_default (state.registry, state.default_export, &err) == -1)
    return report (&err);
  if (state.single && open_single () == -1)
    return -1;
  if (state.metrics_file &&
      (state.metrics = metrics_writer_new (state.registry, state.metrics_file,
                                           state.metrics_interval
                                           ? state.metrics_interval
                                           : DEFAULT_METRICS_INTERVAL,
                                           warn_printf, &err)) == NULL)
    return report (&err);
  return 0;
}

/* Threads may only start after nbdkit has forked. */
static int
cloop_after_fork (void)
{
  struct cloop_err err = { 0 };

  if (registry_start (state.registry, &err) == -1 ||
      (state.metrics && metrics_writer_run (state.metrics, &err) == -1))
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

static int
cloop_list_exports (int readonly, int is_tls, struct nbdkit_exports *exports)
{
  for (size_t i = 0; i < registry_count (state.registry); i++) {
    const char *name = registry_name (state.registry, i);
    char *desc = export_describe (registry_find (state.registry, name));
    int r = nbdkit_add_export (exports, name, desc);
    free (desc);
    if (r == -1)
      return -1;
  }
  return 0;
}

static const char *
cloop_default_export (int readonly, int is_tls)
{
  struct export *e = registry_find (state.registry, "");

  for (size_t i = 0; i < registry_count (state.registry); i++)
    if (registry_find (state.registry, registry_name (state.registry, i)) == e)
      return registry_name (state.registry, i);
  return "";
}

/* A connection reads the revision of its export that is current now
 * (opening the export on first use).  With one image (file=, url=)
 * every export name means it, as before exports existed. */
static void *
cloop_open_connection (int readonly)
{
  struct cloop_err err = { 0 };
  const char *name = state.single ? "" : nbdkit_export_name ();
  struct export *e = registry_find (state.registry, name ? name : "");
  struct handle *h;

  if (e == NULL) {
    nbdkit_error ("there is no export called '%s'", name);
    nbdkit_set_error (ENOENT);
    return NULL;
  }
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->rev = export_acquire (e, &err);
  if (h->rev == NULL) {
    free (h);
    report (&err);
    return NULL;
  }
  h->reader = revision_reader (h->rev);
  read_stream_init (&h->stream);
  return h;
}

static void
debug_line (void *opaque, const char *text)
{
  nbdkit_debug ("%s", text);
}

/* Print the statistics snapshot (-D cloop.stats=1): of export only, or
 * of every export (NULL), then the process-wide lines. */
static void
log_stats (const char *only)
{
  struct stats_snapshot snap;
  struct cloop_err err = { 0 };

  if (!cloop_debug_stats || state.registry == NULL)
    return;
  if (registry_snapshot (state.registry, &snap, &err) == -1) {
    nbdkit_debug ("statistics: %s", err.msg);
    return;
  }
  stats_format (&snap, only, debug_line, NULL);
  stats_snapshot_free (&snap);
}

/* Counters, and the boot recorded so far, at every disconnection. */
static void
cloop_close_connection (void *handle)
{
  struct handle *h = handle;

  log_stats (revision_export_name (h->rev));
  revision_write_recording (h->rev);
  revision_release (h->rev);
  read_stream_destroy (&h->stream);
  free (h);
}

static const char *
cloop_export_description (void *handle)
{
  struct handle *h = handle;
  const struct block_map *map = reader_map (h->reader);

  if (map->description && map->description[0])
    return map->description;
  return map->dialect;
}

static int64_t
cloop_get_size (void *handle)
{
  struct handle *h = handle;

  return reader_map (h->reader)->size;
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
  struct handle *h = handle;
  uint32_t bs = reader_map (h->reader)->block_size;

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
  struct handle *h = handle;
  struct cloop_err err = { 0 };

  if (revision_pread (h->rev, &h->stream, buf, count, offset, &err) == -1)
    return report (&err);
  return 0;
}

static int
cloop_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  struct cloop_err err = { 0 };

  if (reader_prefetch (h->reader, count, offset, &err) == -1)
    return report (&err);
  return 0;
}

/* Blocks a format marks as all zeroes (FreeBSD zero-length blocks) are
 * holes; everything else is data. */
static int
cloop_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
               struct nbdkit_extents *extents)
{
  struct handle *h = handle;
  const struct block_map *map = reader_map (h->reader);
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
  .list_exports      = cloop_list_exports,
  .default_export    = cloop_default_export,
  .open              = cloop_open_connection,
  .close             = cloop_close_connection,
  .export_description = cloop_export_description,
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
