/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the exports one process serves, by name (see
 * registry.h). */
#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recorder.h"
#include "registry.h"
#include "replay.h"

/* The longest export name NBD allows. */
#define EXPORT_NAME_MAX 4096

struct revision {
  struct export *export;
  struct reader *reader;
  struct recorder *recorder;    /* profile-record=, or NULL */
  struct replay *replay;        /* the boot profile's replay, or NULL */
  unsigned refs;                /* [export->lock] holders + 1 if current */
};

struct export {
  struct registry *reg;
  char *name;
  const struct image_config *cfg;
  pthread_mutex_t lock;
  struct revision *current;     /* [lock] NULL until opened */
  int64_t checked;              /* [lock] when current was last checked */
  pthread_mutex_t stats_lock;
  struct read_stats reads;      /* [stats_lock] over every revision */
};

/* Background fills queued at most (a job fills up to 1 MiB of blocks:
 * NBD_CMD_CACHE of up to 16 GiB at once). */
#define BACKGROUND_QUEUE_MAX 16384

struct registry {
  struct registry_config cfg;
  struct block_cache *mc;
  struct disk_cache *dc;
  struct state_dir *sd;
  struct http_engine *engine;   /* or NULL: no remote export */
  struct workpool *pool;        /* background fills, or NULL */
  struct export **exports;
  size_t n, cap;
  size_t default_export;
};

/* disk_cache hooks: forward to the registry's warn callback. */
static void
cache_hook (void *opaque, const char *fmt, ...)
{
  void (*print) (const char *fmt, ...) = opaque;
  char buf[1024];
  va_list ap;

  if (print == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  print ("disk cache: %s", buf);
}

struct registry *
registry_new (const struct registry_config *cfg, struct cloop_err *err)
{
  struct registry *reg = calloc (1, sizeof *reg);
  struct disk_cache_hooks hooks = {
    .warn = cache_hook, .opaque = (void *) cfg->warn,
  };

  if (reg == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  reg->cfg = *cfg;
  reg->mc = block_cache_new (cfg->memory_cache_size, err);
  if (reg->mc == NULL) {
    registry_free (reg);
    return NULL;
  }
  if (cfg->cache_dir) {
    reg->dc = disk_cache_open (cfg->cache_dir, cfg->cache_max_size, &hooks,
                               err);
    if (reg->dc == NULL) {
      cloop_err_prefix (err, "cache-dir %s", cfg->cache_dir);
      registry_free (reg);
      return NULL;
    }
  }
  if (cfg->state_dir &&
      (reg->sd = state_dir_open (cfg->state_dir, err)) == NULL) {
    registry_free (reg);
    return NULL;
  }
  if (cfg->http_max_connections &&
      (reg->engine = http_engine_new (cfg->http_max_connections,
                                      err)) == NULL) {
    registry_free (reg);
    return NULL;
  }
  if (cfg->background_threads &&
      (reg->pool = workpool_new (cfg->background_threads,
                                 BACKGROUND_QUEUE_MAX, err)) == NULL) {
    registry_free (reg);
    return NULL;
  }
  return reg;
}

/* Write the revision's recorded boot, if it records one (a failure is
 * a warning: the export is served all the same). */
static void
write_recording (struct revision *rev)
{
  struct cloop_err err;
  void (*warn) (const char *, ...) = rev->export->reg->cfg.warn;

  if (rev->recorder && recorder_write (rev->recorder, &err) == -1 && warn)
    warn ("%s", err.msg);
}

static void
revision_free (struct revision *rev)
{
  if (rev) {
    replay_free (rev->replay);
    write_recording (rev);
    recorder_free (rev->recorder);
    reader_free (rev->reader);
    free (rev);
  }
}

/* Start what runs beside rev's reader: the recorder of profile-record=
 * and the replay of the image's boot profile, which runs ahead of the
 * clients by up to half the memory cache.  0, or -1 with err set. */
static int
start_profiles (struct revision *rev, const struct image_config *cfg,
                struct cloop_err *err)
{
  struct registry *reg = rev->export->reg;
  const struct block_map *map = reader_map (rev->reader);

  if (cfg->profile_record &&
      (rev->recorder = recorder_new (cfg->profile_record,
                                     map->name[0] ? map->name
                                                  : rev->export->name,
                                     map->num_blocks, map->block_size,
                                     err)) == NULL)
    return -1;
  if (cfg->profile_replay && map->profile_len > 0 && reg->pool) {
    rev->replay = replay_start (rev->reader, reg->pool, map->profile,
                                map->profile_len, err);
    if (rev->replay == NULL)
      return -1;
    /* The profile says what the clients will read: no read-ahead
     * while the replay is at work (revision_pread). */
    reader_pause_readahead (rev->reader, true);
  }
  return 0;
}

void
registry_free (struct registry *reg)
{
  if (reg == NULL)
    return;
  /* Background jobs waiting on transfers return at once, not after
   * their timeouts: stop the engine, then the pool, then free. */
  if (reg->engine)
    http_engine_stop (reg->engine);
  if (reg->pool)
    workpool_stop (reg->pool);
  for (size_t i = 0; i < reg->n; i++) {
    struct export *e = reg->exports[i];
    revision_free (e->current);
    pthread_mutex_destroy (&e->lock);
    pthread_mutex_destroy (&e->stats_lock);
    free (e->name);
    free (e);
  }
  free (reg->exports);
  workpool_free (reg->pool);
  http_engine_free (reg->engine);
  block_cache_free (reg->mc);
  disk_cache_close (reg->dc);
  state_dir_close (reg->sd);
  free (reg);
}

struct block_cache *
registry_memory_cache (const struct registry *reg)
{
  return reg->mc;
}

struct disk_cache *
registry_disk_cache (const struct registry *reg)
{
  return reg->dc;
}

int
registry_add (struct registry *reg, const char *name,
              const struct image_config *cfg, struct cloop_err *err)
{
  struct export *e;

  if (name[0] == '\0' || strlen (name) > EXPORT_NAME_MAX)
    return cloop_err_set (err, EINVAL, "export name '%.64s' is empty or "
                          "longer than %d bytes", name, EXPORT_NAME_MAX);
  if (registry_find (reg, name) != NULL)
    return cloop_err_set (err, EINVAL, "export name '%s' is used twice",
                          name);
  if (reg->n == reg->cap) {
    size_t cap = reg->cap ? reg->cap * 2 : 8;
    struct export **v = realloc (reg->exports, cap * sizeof *v);
    if (v == NULL)
      return cloop_err_set (err, ENOMEM, "out of memory");
    reg->exports = v;
    reg->cap = cap;
  }
  e = calloc (1, sizeof *e);
  if (e == NULL || (e->name = strdup (name)) == NULL) {
    free (e);
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  e->reg = reg;
  e->cfg = cfg;
  pthread_mutex_init (&e->lock, NULL);
  pthread_mutex_init (&e->stats_lock, NULL);
  reg->exports[reg->n++] = e;
  return 0;
}

size_t
registry_count (const struct registry *reg)
{
  return reg->n;
}

const char *
registry_name (const struct registry *reg, size_t i)
{
  return reg->exports[i]->name;
}

int
registry_set_default (struct registry *reg, const char *name,
                      struct cloop_err *err)
{
  for (size_t i = 0; i < reg->n; i++)
    if (strcmp (reg->exports[i]->name, name) == 0) {
      reg->default_export = i;
      return 0;
    }
  return cloop_err_set (err, EINVAL, "default-export: there is no export "
                        "called '%s'", name);
}

struct export *
registry_find (struct registry *reg, const char *name)
{
  if (name[0] == '\0')
    return reg->n ? reg->exports[reg->default_export] : NULL;
  for (size_t i = 0; i < reg->n; i++)
    if (strcmp (reg->exports[i]->name, name) == 0)
      return reg->exports[i];
  return NULL;
}

/* Open a new revision of e (e->lock held).  fresh asks the server
 * again even inside revalidate=. */
static struct revision *
open_revision (struct export *e, bool fresh, struct cloop_err *err)
{
  struct image_config cfg = *e->cfg;
  struct revision *rev = calloc (1, sizeof *rev);

  if (rev == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  cfg.disk_cache = e->reg->dc;
  cfg.state_dir = e->reg->sd;
  cfg.http_engine = e->reg->engine;
  cfg.reader.memory_cache = e->reg->mc;
  cfg.reader.workpool = e->reg->pool;
  if (fresh)
    cfg.revalidate = 0;
  rev->export = e;
  rev->reader = image_open (&cfg, err);
  if (rev->reader == NULL) {
    free (rev);
    return NULL;
  }
  if (start_profiles (rev, &cfg, err) == -1) {
    cloop_err_prefix (err, "%s", e->name);
    recorder_free (rev->recorder);
    rev->recorder = NULL;
    revision_free (rev);
    return NULL;
  }
  return rev;
}

int
export_open (struct export *e, struct cloop_err *err)
{
  int r = 0;

  pthread_mutex_lock (&e->lock);
  if (e->current == NULL) {
    e->current = open_revision (e, false, err);
    if (e->current == NULL)
      r = -1;
    else {
      e->current->refs = 1;
      e->checked = time (NULL);
    }
  }
  pthread_mutex_unlock (&e->lock);
  return r;
}

int
registry_start (struct registry *reg, struct cloop_err *err)
{
  if (reg->engine && http_engine_start (reg->engine, err) == -1)
    return -1;
  if (reg->pool && workpool_start (reg->pool, err) == -1)
    return -1;
  return 0;
}

/* Is it time to look for a newer revision of e (e->lock held)?  Only
 * block stores have revisions. */
static bool
due_for_check (const struct export *e, int64_t now)
{
  const struct block_map *map = reader_map (e->current->reader);

  return map->objects_by_hash && map->revision > 0 &&
    (now < e->checked || now - e->checked >= e->cfg->revalidate);
}

/* Look for a newer revision of e (e->lock held): open the image again,
 * asking the server, and make it current if its revision is higher.
 * Failures are warned about; the current revision stays. */
static void
check_revision (struct export *e, int64_t now)
{
  struct cloop_err err = { 0 };
  struct revision *rev = open_revision (e, true, &err);
  uint64_t old_rev = reader_map (e->current->reader)->revision;

  e->checked = now;
  if (rev == NULL) {
    if (e->reg->cfg.warn)
      e->reg->cfg.warn ("export %s: keeping revision %" PRIu64 ": the "
                        "image could not be opened again: %s", e->name,
                        old_rev, err.msg);
    return;
  }
  if (reader_map (rev->reader)->revision <= old_rev) {
    revision_free (rev);
    return;
  }
  if (e->reg->cfg.debug)
    e->reg->cfg.debug ("export %s: revision %" PRIu64 " replaces %" PRIu64
                       " for new connections", e->name,
                       reader_map (rev->reader)->revision, old_rev);
  rev->refs = 1;
  if (--e->current->refs == 0)
    revision_free (e->current);
  e->current = rev;
}

struct revision *
export_acquire (struct export *e, struct cloop_err *err)
{
  struct revision *rev = NULL;
  int64_t now = time (NULL);

  pthread_mutex_lock (&e->lock);
  if (e->current == NULL) {
    e->current = open_revision (e, false, err);
    if (e->current) {
      e->current->refs = 1;
      e->checked = now;
    }
  }
  else if (due_for_check (e, now))
    check_revision (e, now);
  if (e->current) {
    rev = e->current;
    rev->refs++;
  }
  pthread_mutex_unlock (&e->lock);
  if (rev == NULL)
    cloop_err_prefix (err, "export %s", e->name);
  return rev;
}

struct revision *
export_acquire_if_open (struct export *e)
{
  struct revision *rev;

  pthread_mutex_lock (&e->lock);
  rev = e->current;
  if (rev)
    rev->refs++;
  pthread_mutex_unlock (&e->lock);
  return rev;
}

void
revision_release (struct revision *rev)
{
  struct export *e = rev->export;
  bool last;

  pthread_mutex_lock (&e->lock);
  last = --rev->refs == 0;
  pthread_mutex_unlock (&e->lock);
  if (last)
    revision_free (rev);
}

struct reader *
revision_reader (const struct revision *rev)
{
  return rev->reader;
}

const char *
revision_export_name (const struct revision *rev)
{
  return rev->export->name;
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
revision_pread (struct revision *rev, struct read_stream *stream, void *buf,
                uint32_t count, uint64_t offset, struct cloop_err *err)
{
  struct export *e = rev->export;
  uint32_t bs = reader_map (rev->reader)->block_size;
  uint64_t t0 = now_ns ();
  uint64_t first = offset / bs, last = (offset + count - (count > 0)) / bs;
  int r;

  if (rev->recorder && count > 0)
    recorder_touch (rev->recorder, first, last);
  if (rev->replay && count > 0)
    reader_pause_readahead (rev->reader, replay_busy (rev->replay));
  r = reader_pread (rev->reader, stream, buf, count, offset, err);
  /* After the read, so that the blocks fetched ahead that it read
   * count as read (they make room for the replay). */
  if (rev->replay && count > 0)
    replay_follow (rev->replay, first, last);
  uint64_t t = now_ns () - t0;

  if (r == -1)
    image_read_failed (rev->reader);
  pthread_mutex_lock (&e->stats_lock);
  e->reads.reads++;
  e->reads.bytes += count;
  e->reads.errors += r == -1;
  histogram_add (&e->reads.latency, t);
  pthread_mutex_unlock (&e->stats_lock);
  return r;
}

/* Fill x for export e (its current revision's counters, if open). */
static int
snapshot_export (struct export *e, struct export_snapshot *x,
                 struct cloop_err *err)
{
  struct revision *rev = export_acquire_if_open (e);

  if ((x->name = strdup (e->name)) == NULL)
    goto nomem;
  pthread_mutex_lock (&e->stats_lock);
  x->reads = e->reads;
  pthread_mutex_unlock (&e->stats_lock);
  if (rev == NULL)
    return 0;
  x->open = true;
  reader_get_cache_stats (rev->reader, &x->memory);
  reader_get_disk_readahead (rev->reader, &x->disk_readahead,
                             &x->disk_readahead_faulty);
  if (rev->replay) {
    x->have_replay = true;
    replay_get_stats (rev->replay, &x->replay);
  }
  if (rev->recorder) {
    x->recording = true;
    x->recorded = recorder_count (rev->recorder);
  }
  struct source *src = reader_source (rev->reader);
  struct http_stats hs;
  const char *url;
  size_t n = 0;
  while (source_endpoint_stats (src, n, &url, &hs) == 0)
    n++;
  if (n > 0 && (x->endpoints = calloc (n, sizeof *x->endpoints)) == NULL)
    goto nomem;
  for (size_t j = 0; j < n; j++) {
    if (source_endpoint_stats (src, j, &url, &x->endpoints[j].http) == -1)
      break;
    if ((x->endpoints[j].url = strdup (url)) == NULL)
      goto nomem;
    x->n_endpoints = j + 1;
  }
  revision_release (rev);
  return 0;

 nomem:
  if (rev)
    revision_release (rev);
  return cloop_err_set (err, ENOMEM, "out of memory");
}

void
revision_write_recording (struct revision *rev)
{
  write_recording (rev);
}

int
registry_snapshot (struct registry *reg, struct stats_snapshot *snap,
                   struct cloop_err *err)
{
  *snap = (struct stats_snapshot) {
    .memory_budget = reg->cfg.memory_cache_size,
  };
  block_cache_get_totals (reg->mc, &snap->memory);
  if (reg->dc) {
    snap->have_disk = true;
    disk_cache_get_stats (reg->dc, &snap->disk);
  }
  snap->exports = calloc (reg->n ? reg->n : 1, sizeof *snap->exports);
  if (snap->exports == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  snap->n_exports = reg->n;
  for (size_t i = 0; i < reg->n; i++)
    if (snapshot_export (reg->exports[i], &snap->exports[i], err) == -1) {
      stats_snapshot_free (snap);
      return -1;
    }
  return 0;
}

/* A size as "123 MiB" (or KiB, GiB, bytes). */
static void
human_size (char *buf, size_t n, uint64_t bytes)
{
  static const char *const unit[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
  int u = 0;

  while (bytes >= 10 * 1024 && bytes % 1024 == 0 && u < 4) {
    bytes /= 1024;
    u++;
  }
  if (u == 0 && bytes >= 10 * 1024 * 1024) {
    snprintf (buf, n, "%.1f MiB", bytes / 1048576.0);
    return;
  }
  snprintf (buf, n, "%" PRIu64 " %s", bytes, unit[u]);
}

char *
export_describe (struct export *e)
{
  struct cloop_err err = { 0 };
  struct revision *rev = export_acquire (e, &err);
  char *text = NULL, size[32], bs[32];

  if (rev == NULL) {
    if (asprintf (&text, "unavailable: %s", err.msg) == -1)
      text = NULL;
    return text;
  }
  const struct block_map *map = reader_map (rev->reader);
  human_size (size, sizeof size, map->size);
  human_size (bs, sizeof bs, map->block_size);
  if (map->description && map->description[0]) {
    if (asprintf (&text, "%s", map->description) == -1)
      text = NULL;
  }
  else if (asprintf (&text, "%s, %s in blocks of %s", map->dialect, size,
                     bs) == -1)
    text = NULL;
  revision_release (rev);
  return text;
}
