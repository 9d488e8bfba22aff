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
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cloop.h"
#include "decode.h"
#include "reader.h"
#include "source.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#define DEFAULT_MEMORY_CACHE_SIZE (128 * 1024 * 1024)

/* Debug flags: -D cloop.map=1 prints the block map at start-up,
 * -D cloop.blocks=1 every block fill, -D cloop.stats=1 cache counters
 * when a connection closes. */
NBDKIT_DLL_PUBLIC int cloop_debug_map = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_blocks = 0;
NBDKIT_DLL_PUBLIC int cloop_debug_stats = 0;

/* The plugin's whole state. */
static struct {
  char *file;                   /* file= (absolute path) */
  int64_t memory_cache_size;    /* memory-cache-size= */
  bool force_zlib;              /* zlib-decoder=zlib */
  struct reader *reader;        /* opened in get_ready */
} state = {
  .memory_cache_size = DEFAULT_MEMORY_CACHE_SIZE,
};

static void
debug_printf (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  nbdkit_debug ("%s", buf);
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
cloop_unload (void)
{
  reader_free (state.reader);
  free (state.file);
}

static int
cloop_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    free (state.file);
    state.file = nbdkit_absolute_path (value);
    if (state.file == NULL)
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

static int
cloop_config_complete (void)
{
  if (state.file == NULL) {
    nbdkit_error ("you must supply the file=<IMAGE> parameter "
                  "after the plugin name on the command line");
    return -1;
  }
  return 0;
}

#define cloop_config_help \
  "[file=]<IMAGE>            (required) cloop image of any dialect.\n" \
  "memory-cache-size=<SIZE>  Decoded blocks kept in memory (default 128M).\n" \
  "zlib-decoder=auto|zlib    Use libdeflate where built (auto) or zlib."

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

static int
source_reader_pread (void *opaque, void *buf, size_t len, uint64_t offset,
                     struct cloop_err *err)
{
  return source_pread (opaque, buf, len, offset, err);
}

/* Open the image: source, block map, reader. */
static int
cloop_get_ready (void)
{
  struct cloop_err err = { 0 };
  struct source *src;
  struct block_map *map;
  struct byte_reader br;
  struct reader_config cfg = {
    .memory_cache_size = state.memory_cache_size,
    .force_zlib = state.force_zlib,
    .debug = debug_printf,
    .debug_blocks = cloop_debug_blocks,
  };

  src = source_open_file (state.file, &err);
  if (src == NULL)
    return report (&err);
  br = (struct byte_reader) {
    .opaque = src, .size = source_size (src), .pread = source_reader_pread,
  };
  map = cloop_open (&br, &err);
  if (map == NULL) {
    cloop_err_prefix (&err, "%s", state.file);
    source_close (src);
    return report (&err);
  }
  if (cloop_debug_map)
    dump_map (map);
  state.reader = reader_new (src, map, &cfg, &err);
  if (state.reader == NULL) {
    block_map_free (map);
    source_close (src);
    return report (&err);
  }
  nbdkit_debug ("%s: %s, %" PRIu64 " blocks of %" PRIu32 " bytes",
                state.file, map->dialect, map->num_blocks, map->block_size);
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

static void
cloop_close_connection (void *handle)
{
  struct block_cache_stats st;

  if (!cloop_debug_stats)
    return;
  reader_get_cache_stats (state.reader, &st);
  nbdkit_debug ("memory cache: %" PRIu64 " hits, %" PRIu64 " misses, %"
                PRIu64 " waits, %" PRIu64 " evictions, %" PRIu64
                " failed fills, %" PRIu64 " bytes in %" PRIu64 " blocks",
                st.hits, st.misses, st.waits, st.evictions, st.fill_failures,
                st.bytes_cached, st.entries);
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

  if (reader_pread (state.reader, buf, count, offset, &err) == -1)
    return report (&err);
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
  .unload            = cloop_unload,
  .config            = cloop_config,
  .config_complete   = cloop_config_complete,
  .config_help       = cloop_config_help,
  .magic_config_key  = "file",
  .get_ready         = cloop_get_ready,
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
