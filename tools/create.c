/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store create: publish an image into a block store.
 *
 * Pipeline: the main thread reads the source (raw, or a cloop file
 * decoded block by block) in store-sized blocks and submits them to a
 * compress_pool, whose workers detect zero blocks, compress and hash;
 * the main thread collects the results in image order and writes each
 * new block file (temporary file + rename), skipping files already
 * present.  When every block is written the file system is synced, the
 * index is staged as a temporary file, the signature file (if any key
 * was given) is renamed into place, and only then the index: a client
 * that sees the new index always finds its signature.
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "compress-pool.h"
#include "encode.h"
#include "image-source.h"
#include "journal.h"
#include "progress.h"
#include "signature.h"
#include "store-dir.h"
#include "tool.h"

#define DEFAULT_BLOCK_SIZE (256u * 1024)
#define DEFAULT_CODEC      CODEC_ZLIB
#define DEFAULT_INDEX_NAME "index"

struct create_opts {
  uint32_t block_size;
  enum block_codec codec;
  int level;                    /* -1 = codec default */
  unsigned threads;
  const char *name, *description;
  bool revision_set;
  uint64_t revision;
  const char *expires;          /* NULL = never */
  const char **keys;
  size_t nkeys;
  const char *index_name;
  int progress;                 /* -1 auto, 0 quiet, 1 forced */
  enum source_kind kind;
  const char *source, *store;
  char name_buf[STORE_NAME_MAX + 1];
};

struct create_stats {
  uint64_t blocks, new_blocks, present, zero;
  uint64_t compressed;          /* blocks that went through the pool */
  uint64_t resumed;             /* blocks taken from the journal */
  uint64_t new_bytes;           /* compressed bytes written */
  uint64_t image_bytes;
};

/* The growing block table (hash + length per block). */
struct block_table {
  unsigned char *hashes;
  uint32_t *lengths;
  uint64_t n, cap;
};

struct create_ctx {
  struct create_opts *o;
  struct image_source *src;
  struct compress_pool *pool;
  struct store_dir *sd;
  struct create_journal *journal;  /* NULL for a pipe */
  struct trust_key **keys;
  struct block_table table;
  struct create_stats st;
  struct progress prog;
  uint64_t created, expires, revision;
  struct cloop_err err;
};

/* For the signal handler only: the store being written. */
static struct store_dir *volatile signal_store;

static void
create_usage (FILE *f)
{
  int min, max, zlib_def, zstd_def, xz_def;

  encoder_levels (CODEC_ZLIB, &min, &max, &zlib_def);
  encoder_levels (CODEC_ZSTD, &min, &max, &zstd_def);
  encoder_levels (CODEC_XZ, &min, &max, &xz_def);
  fprintf (f,
"Usage: cloop-store create [OPTIONS] SOURCE STOREDIR\n"
"Publish SOURCE (a raw image, a block device, '-' for stdin, or a cloop\n"
"file of any dialect) into the block store STOREDIR.\n"
"\n"
"  -B, --block-size=SIZE   block size (multiple of 512; default %uK)\n"
"  -c, --codec=CODEC       zlib, zstd or xz (default %s)\n"
"  -l, --level=N           compression level (defaults: zlib %d, zstd %d,\n"
"                          xz %d)\n"
"  -j, --threads=N         compression threads (default: %u, the CPUs)\n"
"  -n, --name=NAME         store name (default: SOURCE's base name\n"
"                          without extension)\n"
"  -d, --description=TEXT  description (default: empty)\n"
"  -r, --revision=N        revision (default: creation time, or one more\n"
"                          than the index being replaced)\n"
"      --expires=SECS|@TIME|never\n"
"                          expire SECS after creation, at TIME (seconds\n"
"                          since the epoch), or never (default)\n"
"  -k, --key=PRIVATE.pem   sign the index (repeatable)\n"
"  -o, --index=NAME        index file name in STOREDIR (default: index)\n"
"  -t, --source-type=auto|raw|cloop\n"
"                          how to read SOURCE (default: auto)\n"
"      --progress          show progress even if stderr is not a terminal\n"
"  -q, --quiet             no progress and no summary\n"
"  -h, --help              this help\n",
           DEFAULT_BLOCK_SIZE / 1024, codec_name (DEFAULT_CODEC), zlib_def,
           zstd_def, xz_def, online_cpus ());
}

/* Option parsing of the value-less/simple options; returns 0, or
 * EXIT_USAGE after a message. */
static int
parse_numeric_opt (struct create_opts *o, int c, const char *arg)
{
  uint64_t v;

  switch (c) {
  case 'B':
    if (parse_size (arg, &v) == -1 || v < 512 || v > BLOCK_SIZE_MAX ||
        v % 512 != 0)
      return tool_usage_error ("create", "-B %s: block size must be a "
                               "multiple of 512 from 512 to 64M", arg);
    o->block_size = v;
    return 0;
  case 'l':
    if (parse_u64 (arg, 0, 22, &v) == -1)
      return tool_usage_error ("create", "-l %s: not a level", arg);
    o->level = v;
    return 0;
  case 'j':
    if (parse_u64 (arg, 1, 256, &v) == -1)
      return tool_usage_error ("create", "-j %s: threads must be 1 to 256",
                               arg);
    o->threads = v;
    return 0;
  case 'r':
    if (parse_u64 (arg, 0, UINT64_MAX, &v) == -1)
      return tool_usage_error ("create", "-r %s: not a revision number", arg);
    o->revision = v;
    o->revision_set = true;
    return 0;
  }
  return tool_usage_error ("create", "internal error: option %c", c);
}

/* Append a key path. */
static int
add_key (struct create_opts *o, const char *path)
{
  const char **k = realloc (o->keys, (o->nkeys + 1) * sizeof *k);

  if (k == NULL) {
    tool_error ("out of memory");
    return EXIT_FAIL;
  }
  o->keys = k;
  o->keys[o->nkeys++] = path;
  return 0;
}

static int
parse_source_type (struct create_opts *o, const char *arg)
{
  if (strcmp (arg, "auto") == 0)
    o->kind = SOURCE_AUTO;
  else if (strcmp (arg, "raw") == 0)
    o->kind = SOURCE_RAW;
  else if (strcmp (arg, "cloop") == 0)
    o->kind = SOURCE_CLOOP;
  else
    return tool_usage_error ("create", "-t %s: expected auto, raw or cloop",
                             arg);
  return 0;
}

enum { OPT_EXPIRES = 256, OPT_PROGRESS };

/* Parse argv into o.  0 to go on, -1 after --help, else an exit code. */
static int
parse_create_args (int argc, char **argv, struct create_opts *o)
{
  static const struct option longopts[] = {
    { "block-size", required_argument, NULL, 'B' },
    { "codec", required_argument, NULL, 'c' },
    { "level", required_argument, NULL, 'l' },
    { "threads", required_argument, NULL, 'j' },
    { "name", required_argument, NULL, 'n' },
    { "description", required_argument, NULL, 'd' },
    { "revision", required_argument, NULL, 'r' },
    { "expires", required_argument, NULL, OPT_EXPIRES },
    { "key", required_argument, NULL, 'k' },
    { "index", required_argument, NULL, 'o' },
    { "source-type", required_argument, NULL, 't' },
    { "progress", no_argument, NULL, OPT_PROGRESS },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  int c, r = 0;

  while (r == 0 &&
         (c = getopt_long (argc, argv, "+B:c:l:j:n:d:r:k:o:t:qh", longopts,
                           NULL)) != -1) {
    switch (c) {
    case 'B': case 'l': case 'j': case 'r':
      r = parse_numeric_opt (o, c, optarg);
      break;
    case 'c':
      if (encoder_codec_parse (optarg, &o->codec) == -1)
        r = tool_usage_error ("create", "-c %s: codec must be zlib, zstd "
                              "or xz", optarg);
      break;
    case 'n': o->name = optarg; break;
    case 'd': o->description = optarg; break;
    case OPT_EXPIRES: o->expires = optarg; break;
    case 'k': r = add_key (o, optarg); break;
    case 'o': o->index_name = optarg; break;
    case 't': r = parse_source_type (o, optarg); break;
    case OPT_PROGRESS: o->progress = 1; break;
    case 'q': o->progress = 0; break;
    case 'h': create_usage (stdout); return -1;
    default: return tool_usage_error ("create", "bad option");
    }
  }
  if (r != 0)
    return r;
  if (argc - optind != 2)
    return tool_usage_error ("create", "expected SOURCE and STOREDIR");
  o->source = argv[optind];
  o->store = argv[optind + 1];
  return 0;
}

/* Default name: SOURCE's base name without its extension. */
static int
default_name (struct create_opts *o)
{
  const char *base = strrchr (o->source, '/');
  char *dot;

  if (strcmp (o->source, "-") == 0) {
    tool_error ("create: -n NAME is required when reading stdin");
    return EXIT_USAGE;
  }
  base = base ? base + 1 : o->source;
  snprintf (o->name_buf, sizeof o->name_buf, "%s", base);
  dot = strrchr (o->name_buf, '.');
  if (dot != NULL && dot != o->name_buf)
    *dot = '\0';
  o->name = o->name_buf;
  return 0;
}

/* Check option combinations and values that need the whole command
 * line (codec support, level range, names).  0 or an exit code. */
static int
check_create_opts (struct create_opts *o)
{
  int lmin, lmax, ldef;
  const char *why;

  if (!encoder_codec_supported (o->codec))
    return tool_usage_error ("create", "codec %s is not built into this "
                             "cloop-store", codec_name (o->codec));
  encoder_levels (o->codec, &lmin, &lmax, &ldef);
  if (o->level == -1)
    o->level = ldef;
  else if (o->level < lmin || o->level > lmax)
    return tool_usage_error ("create", "-l %d: %s levels are %d to %d",
                             o->level, codec_name (o->codec), lmin, lmax);
  if (o->name == NULL && default_name (o) != 0)
    return EXIT_USAGE;
  if ((why = store_name_problem (o->name)) != NULL)
    return tool_usage_error ("create", "name '%s' %s (use -n NAME)",
                             o->name, why);
  if ((why = store_description_problem (o->description)) != NULL)
    return tool_usage_error ("create", "description %s", why);
  if (strchr (o->index_name, '/') || o->index_name[0] == '.' ||
      o->index_name[0] == '\0' || strcmp (o->index_name, "blocks") == 0 ||
      strlen (o->index_name) > 200)
    return tool_usage_error ("create", "-o %s: index name must be a plain "
                             "file name, not starting with '.', not "
                             "'blocks'", o->index_name);
  return 0;
}

/* Resolve --expires against the creation time.  0 or EXIT_USAGE. */
static int
resolve_expiry (struct create_ctx *c)
{
  const char *e = c->o->expires;
  uint64_t v;

  c->expires = 0;
  if (e == NULL || strcmp (e, "never") == 0)
    return 0;
  if (e[0] == '@') {
    if (parse_u64 (e + 1, 1, INT64_MAX, &v) == -1)
      return tool_usage_error ("create", "--expires %s: bad time", e);
    c->expires = v;
    if (v <= c->created)
      tool_error ("warning: --expires %s is in the past: the index is "
                  "expired already", e);
    return 0;
  }
  if (parse_u64 (e, 1, INT64_MAX - c->created, &v) == -1)
    return tool_usage_error ("create", "--expires %s: expected seconds, "
                             "@TIME or never", e);
  c->expires = c->created + v;
  return 0;
}

/* Load every -k key (before any work, to fail early). */
static int
load_keys (struct create_ctx *c)
{
  size_t i;

  c->keys = calloc (c->o->nkeys + 1, sizeof *c->keys);
  if (c->keys == NULL)
    return cloop_err_set (&c->err, ENOMEM, "out of memory");
  for (i = 0; i < c->o->nkeys; i++) {
    c->keys[i] = trust_key_load_private (c->o->keys[i], &c->err);
    if (c->keys[i] == NULL)
      return -1;
  }
  return 0;
}

/* Pick the revision: -r, else the creation time, but above the
 * revision of an index of the same name being replaced.  0 or -1. */
static int
choose_revision (struct create_ctx *c)
{
  struct loaded_index old;
  struct cloop_err lerr;
  char *path;
  int r = 0;

  c->revision = c->o->revision_set ? c->o->revision : c->created;
  if (asprintf (&path, "%s/%s", c->o->store, c->o->index_name) == -1)
    return cloop_err_set (&c->err, ENOMEM, "out of memory");
  if (loaded_index_open (path, &old, &lerr) == -1) {
    if (lerr.errnum != ENOENT)
      tool_error ("warning: replacing an unreadable index: %s", lerr.msg);
    free (path);
    return 0;
  }
  if (strcmp (old.idx->name, c->o->name) == 0 &&
      c->revision <= old.idx->revision) {
    if (c->o->revision_set)
      r = cloop_err_set (&c->err, EINVAL, "%s has revision %" PRIu64
                         " of '%s': -r %" PRIu64 " must be larger (clients "
                         "refuse a rollback)", path, old.idx->revision,
                         old.idx->name, c->revision);
    else
      c->revision = old.idx->revision + 1;
  }
  loaded_index_close (&old);
  free (path);
  return r;
}

/* Append one entry to the block table. */
static int
table_add (struct block_table *t, const unsigned char *hash, uint32_t len,
           struct cloop_err *err)
{
  if (t->n == t->cap) {
    uint64_t cap = t->cap ? t->cap * 2 : 1024;
    unsigned char *h = realloc (t->hashes, cap * STORE_HASH_LEN);
    uint32_t *l;

    if (h == NULL)
      return cloop_err_set (err, ENOMEM, "out of memory");
    t->hashes = h;
    l = realloc (t->lengths, cap * sizeof *l);
    if (l == NULL)
      return cloop_err_set (err, ENOMEM, "out of memory");
    t->lengths = l;
    t->cap = cap;
  }
  if (hash)
    memcpy (t->hashes + t->n * STORE_HASH_LEN, hash, STORE_HASH_LEN);
  else
    memset (t->hashes + t->n * STORE_HASH_LEN, 0, STORE_HASH_LEN);
  t->lengths[t->n++] = len;
  return 0;
}

/* Collect the oldest compressed block and store it.  0 or -1. */
static int
store_one (struct create_ctx *c)
{
  const struct compressed_block *b = compress_pool_collect (c->pool, &c->err);
  uint64_t bound = c->o->block_size + c->o->block_size / 16 + 4096;
  bool stored_new;

  if (b == NULL) {
    cloop_err_prefix (&c->err, "block %" PRIu64, c->table.n);
    return -1;
  }
  if (b->zero) {
    c->st.zero++;
    if (table_add (&c->table, NULL, 0, &c->err) == -1 ||
        (c->journal && journal_record (c->journal, c->table.n - 1, NULL, 0,
                                       &c->err) == -1))
      return -1;
  }
  else {
    if (b->len > bound)
      return cloop_err_set (&c->err, EIO, "block %" PRIu64 ": compressed to "
                            "%zu bytes, above the format's bound", c->table.n,
                            b->len);
    if (store_dir_put_block (c->sd, b->hash, b->data, b->len, &stored_new,
                             &c->err) == -1 ||
        table_add (&c->table, b->hash, b->len, &c->err) == -1 ||
        (c->journal && journal_record (c->journal, c->table.n - 1, b->hash,
                                       b->len, &c->err) == -1))
      return -1;
    if (stored_new) {
      c->st.new_blocks++;
      c->st.new_bytes += b->len;
    }
    else
      c->st.present++;
  }
  c->st.blocks++;
  compress_pool_release (c->pool);
  progress_update (&c->prog, c->st.image_bytes, c->st.new_blocks,
                   c->st.present, c->st.zero, false);
  return 0;
}

/* If an interrupted run journaled block seq and its block file is
 * still intact, take it without compressing: 1.  0 to compress it, -1
 * on error.  Blocks before it are stored first, to keep image order. */
static int
take_journaled (struct create_ctx *c, uint64_t seq)
{
  unsigned char hash[STORE_HASH_LEN];
  uint32_t len;

  if (c->journal == NULL || !journal_lookup (c->journal, seq, hash, &len))
    return 0;
  while (compress_pool_pending (c->pool) > 0)
    if (store_one (c) == -1)
      return -1;
  if (len > 0 && !store_dir_has_block (c->sd, hash, len))
    return 0;                   /* gone or damaged: compress it again */
  if (table_add (&c->table, len ? hash : NULL, len, &c->err) == -1)
    return -1;
  if (len)
    c->st.present++;
  else
    c->st.zero++;
  c->st.resumed++;
  c->st.blocks++;
  progress_update (&c->prog, c->st.image_bytes, c->st.new_blocks,
                   c->st.present, c->st.zero, false);
  return 1;
}

/* Read the whole source through the pool into the store.  0 or -1. */
static int
publish_blocks (struct create_ctx *c)
{
  uint64_t expected = image_source_size (c->src);

  for (;;) {
    ssize_t n;

    if (compress_pool_full (c->pool) && store_one (c) == -1)
      return -1;
    n = image_source_read (c->src, compress_pool_input (c->pool),
                           c->o->block_size, &c->err);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    if (c->st.blocks + compress_pool_pending (c->pool) >= NUM_BLOCKS_MAX)
      return cloop_err_set (&c->err, EFBIG, "image has more than 2^32 "
                            "blocks: use a larger -B");
    c->st.image_bytes += n;
    switch (take_journaled (c, c->st.blocks + compress_pool_pending (c->pool))) {
    case -1: return -1;
    case 1: continue;
    }
    compress_pool_submit (c->pool, n);
    c->st.compressed++;
  }
  while (compress_pool_pending (c->pool) > 0)
    if (store_one (c) == -1)
      return -1;
  progress_update (&c->prog, c->st.image_bytes, c->st.new_blocks,
                   c->st.present, c->st.zero, true);
  progress_finish (&c->prog);
  if (c->st.image_bytes == 0)
    return cloop_err_set (&c->err, EINVAL, "%s: the image is empty",
                          c->o->source);
  if (expected != UINT64_MAX && c->st.image_bytes != expected)
    return cloop_err_set (&c->err, EIO, "%s: read %" PRIu64 " bytes, "
                          "expected %" PRIu64 " (did it change?)",
                          c->o->source, c->st.image_bytes, expected);
  return 0;
}

/* Build and serialize the index.  0 or -1. */
static int
build_index (struct create_ctx *c, unsigned char **buf, size_t *len)
{
  struct store_index *idx;
  char *desc;
  int r;

  idx = store_index_new (c->st.image_bytes, c->o->block_size, c->o->codec,
                         &c->err);
  if (idx == NULL)
    return -1;
  if (idx->num_blocks != c->table.n) {
    store_index_free (idx);
    return cloop_err_set (&c->err, EIO, "internal error: %" PRIu64
                          " blocks written, index wants %" PRIu64,
                          c->table.n, idx->num_blocks);
  }
  desc = strdup (c->o->description);
  if (desc == NULL) {
    store_index_free (idx);
    return cloop_err_set (&c->err, ENOMEM, "out of memory");
  }
  free (idx->description);
  idx->description = desc;
  snprintf (idx->name, sizeof idx->name, "%s", c->o->name);
  idx->revision = c->revision;
  idx->created = c->created;
  idx->expires = c->expires;
  memcpy (idx->hashes, c->table.hashes, c->table.n * STORE_HASH_LEN);
  memcpy (idx->lengths, c->table.lengths, c->table.n * sizeof (uint32_t));
  r = store_index_write (idx, buf, len, &c->err);
  store_index_free (idx);
  return r;
}

/* Signature file text for index bytes, signed by every key. */
static int
sign_all (struct create_ctx *c, const unsigned char *index, size_t len,
          char **text)
{
  char *acc = NULL, *next;
  size_t i;

  for (i = 0; i < c->o->nkeys; i++) {
    if (signature_sign (index, len, c->keys[i], acc, acc ? strlen (acc) : 0,
                        &next, &c->err) == -1) {
      free (acc);
      cloop_err_prefix (&c->err, "signing with %s", c->o->keys[i]);
      return -1;
    }
    free (acc);
    acc = next;
  }
  *text = acc;
  return 0;
}

/* Write index (and signature) in the safe order; see the file comment.
 * 0 or -1. */
static int
write_index (struct create_ctx *c)
{
  unsigned char *buf = NULL;
  size_t len;
  char *sig = NULL, *sig_name = NULL;
  int r = -1;

  if (store_dir_sync (c->sd, &c->err) == -1 ||
      build_index (c, &buf, &len) == -1)
    goto out;
  if ((sig_name = signature_path (c->o->index_name)) == NULL) {
    cloop_err_set (&c->err, ENOMEM, "out of memory");
    goto out;
  }
  if (store_dir_stage (c->sd, TEMP_INDEX, c->o->index_name, buf, len,
                       &c->err) == -1)
    goto out;
  if (c->o->nkeys > 0) {
    if (sign_all (c, buf, len, &sig) == -1 ||
        store_dir_stage (c->sd, TEMP_SIGNATURE, sig_name, sig, strlen (sig),
                         &c->err) == -1 ||
        store_dir_commit (c->sd, TEMP_SIGNATURE, sig_name, &c->err) == -1)
      goto out;
  }
  else if (store_dir_unlink (c->sd, sig_name, &c->err) == -1)
    goto out;                   /* a stale signature must not remain */
  r = store_dir_commit (c->sd, TEMP_INDEX, c->o->index_name, &c->err);

 out:
  store_dir_remove_temps (c->sd);
  free (buf);
  free (sig);
  free (sig_name);
  return r;
}

static void
on_signal (int sig)
{
  if (signal_store != NULL)
    store_dir_remove_temps (signal_store);
  signal (sig, SIG_DFL);
  raise (sig);
}

static void
print_summary (struct create_ctx *c, double seconds)
{
  char img[32];

  format_bytes (img, c->st.image_bytes);
  printf ("%s/%s: %s '%s' revision %" PRIu64 ", %s (%s), %" PRIu64
          " blocks of %u (%s)\n", c->o->store, c->o->index_name,
          c->o->nkeys ? "signed" : "unsigned", c->o->name, c->revision, img,
          image_source_kind (c->src), c->st.blocks, c->o->block_size,
          codec_name (c->o->codec));
  printf ("blocks: %" PRIu64 " new, %" PRIu64 " present, %" PRIu64
          " zero; %" PRIu64 " bytes written; %.2f s, %.1f MiB/s\n",
          c->st.new_blocks, c->st.present, c->st.zero, c->st.new_bytes,
          seconds, seconds > 0 ? c->st.image_bytes / seconds / 1048576 : 0);
  printf ("compressed: %" PRIu64 " blocks; %" PRIu64 " taken from the journal "
          "of an interrupted run\n", c->st.compressed, c->st.resumed);
}

/* Open the journal of a seekable source (see journal.h): its identity
 * and every option that decides the blocks' bytes.  0 or -1. */
static int
open_journal (struct create_ctx *c)
{
  char id[256], line[512];

  if (image_source_identity (c->src, id, sizeof id) == -1)
    return 0;                   /* a pipe: nothing to resume from */
  snprintf (line, sizeof line, "%s kind=%s B=%" PRIu32 " codec=%s level=%d",
            id, image_source_kind (c->src), c->o->block_size,
            codec_name (c->o->codec), c->o->level);
  c->journal = journal_open (c->o->store, c->o->index_name, line, &c->err);
  if (c->journal == NULL)
    return -1;
  if (journal_loaded (c->journal) > 0 && c->o->progress != 0)
    fprintf (stderr, "cloop-store: resuming an interrupted create: %" PRIu64
             " blocks journaled\n", journal_loaded (c->journal));
  return 0;
}

/* Everything after option parsing.  0 or -1 (c->err set). */
static int
run_create (struct create_ctx *c)
{
  bool show;

  if (load_keys (c) == -1)
    return -1;
  c->src = image_source_open (c->o->source, c->o->kind, &c->err);
  if (c->src == NULL)
    return -1;
  c->sd = store_dir_open (c->o->store, &c->err);
  if (c->sd == NULL || choose_revision (c) == -1)
    return -1;
  signal_store = c->sd;
  signal (SIGINT, on_signal);
  signal (SIGTERM, on_signal);
  signal (SIGHUP, on_signal);
  c->pool = compress_pool_new (c->o->codec, c->o->level, c->o->threads,
                               c->o->block_size, &c->err);
  if (c->pool == NULL)
    return -1;
  if (open_journal (c) == -1)
    return -1;
  show = c->o->progress == 1 || (c->o->progress == -1 && isatty (2));
  progress_start (&c->prog, show, image_source_size (c->src));
  if (publish_blocks (c) == -1 || write_index (c) == -1)
    return -1;
  if (c->journal)
    journal_remove (c->journal);
  return 0;
}

static void
free_ctx (struct create_ctx *c)
{
  size_t i;

  progress_finish (&c->prog);
  compress_pool_free (c->pool);
  signal_store = NULL;
  journal_close (c->journal);
  store_dir_close (c->sd);
  image_source_close (c->src);
  for (i = 0; c->keys && i < c->o->nkeys; i++)
    trust_key_free (c->keys[i]);
  free (c->keys);
  free (c->table.hashes);
  free (c->table.lengths);
}

int
cmd_create (int argc, char **argv)
{
  struct create_opts o = {
    .block_size = DEFAULT_BLOCK_SIZE, .codec = DEFAULT_CODEC, .level = -1,
    .threads = online_cpus (), .description = "",
    .index_name = DEFAULT_INDEX_NAME, .progress = -1, .kind = SOURCE_AUTO,
  };
  struct create_ctx c = { .o = &o };
  double t0 = progress_now ();
  int r = parse_create_args (argc, argv, &o);

  if (r == 0)
    r = check_create_opts (&o);
  if (r != 0) {
    free (o.keys);
    return r == -1 ? EXIT_OK : r;
  }
  c.created = time (NULL);
  r = resolve_expiry (&c);
  if (r == 0 && run_create (&c) == -1) {
    tool_error ("create: %s", c.err.msg);
    r = EXIT_FAIL;
  }
  else if (r == 0 && o.progress != 0)
    print_summary (&c, progress_now () - t0);
  free_ctx (&c);
  free (o.keys);
  return r;
}
