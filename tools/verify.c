/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store verify: is an index trustworthy, and is every block it
 * lists present, of the right length, with the right SHA-256, and
 * decodable to its size?
 *
 * Exit status: 0 all well; 1 blocks missing or corrupt; 2 the index
 * cannot be trusted (unreadable, malformed, signature file missing or
 * malformed, no signature by a -p key, a -p key unusable, or expired).
 * Each distinct block file is checked once, by a pool of threads.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "commands.h"
#include "decode.h"
#include "signature.h"
#include "tool.h"

#define REPORT_MAX 200          /* bad blocks listed individually */

enum block_status { BLK_OK, BLK_MISSING, BLK_SIZE, BLK_HASH, BLK_DECODE,
                    BLK_UNREADABLE };

struct verify_opts {
  const char **pubkeys;
  size_t npubkeys;
  bool no_blocks;
  unsigned threads;
  const char *index;
};

/* Shared state of the block check. */
struct block_check {
  const struct store_index *idx;
  char *dir;                    /* directory holding the index */
  uint64_t *order;              /* non-zero blocks sorted by hash */
  uint64_t norder;
  uint64_t *groups;             /* start positions (in order) of distinct */
  uint64_t ngroups;
  uint64_t next;                /* next group to check (atomic) */
  uint8_t *status;              /* per group */
  char **detail;                /* per group, or NULL */
};

static void
verify_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store verify [-p PUBLIC.pem ...] [--no-blocks] STOREDIR/INDEX\n"
"Check an index: its signature (with -p: at least one signature by one\n"
"of these keys), its expiry, and every block file (present, right size,\n"
"right SHA-256, decodes to the block's size).\n"
"\n"
"  -p, --public-key=FILE   trusted public key (repeatable)\n"
"      --no-blocks         check only the index and its signature\n"
"  -j, --threads=N         hashing threads (default: the CPUs)\n"
"  -h, --help              this help\n"
"\n"
"Exit status: 0 all well; 1 blocks missing or corrupt; 2 index\n"
"unreadable, malformed, untrusted or expired; 64 usage error.\n");
}

static int
parse_verify_args (int argc, char **argv, struct verify_opts *o)
{
  static const struct option longopts[] = {
    { "public-key", required_argument, NULL, 'p' },
    { "no-blocks", no_argument, NULL, 'N' },
    { "threads", required_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  uint64_t v;
  const char **k;
  int c;

  while ((c = getopt_long (argc, argv, "+p:j:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'p':
      k = realloc (o->pubkeys, (o->npubkeys + 1) * sizeof *k);
      if (k == NULL)
        return tool_usage_error ("verify", "out of memory");
      o->pubkeys = k;
      o->pubkeys[o->npubkeys++] = optarg;
      break;
    case 'N': o->no_blocks = true; break;
    case 'j':
      if (parse_u64 (optarg, 1, 256, &v) == -1)
        return tool_usage_error ("verify", "-j %s: threads must be 1 to 256",
                                 optarg);
      o->threads = v;
      break;
    case 'h': verify_usage (stdout); return -1;
    default: return tool_usage_error ("verify", "bad option");
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("verify", "expected one INDEX");
  o->index = argv[optind];
  return 0;
}

/* Check the signature file with the -p keys.  true if trusted. */
static bool
check_signature (const struct loaded_index *li, const struct verify_opts *o)
{
  struct trust_key **keys = calloc (o->npubkeys, sizeof *keys);
  char *sig_path = signature_path (li->path), keyid[17], kid[17];
  unsigned char *sig = NULL;
  size_t sig_len, i;
  struct cloop_err err;
  bool ok = false;

  if (keys == NULL || sig_path == NULL) {
    tool_error ("out of memory");
    goto out;
  }
  for (i = 0; i < o->npubkeys; i++)
    if ((keys[i] = trust_key_load_public (o->pubkeys[i], &err)) == NULL) {
      tool_error ("verify: %s", err.msg);
      goto out;
    }
  if (read_whole_file (sig_path, SIGNATURE_FILE_MAX, &sig, &sig_len,
                       &err) == -1) {
    printf ("signature: BAD: %s\n", err.msg);
    goto out;
  }
  if (signature_verify (li->bytes, li->len, (char *) sig, sig_len,
                        keys, o->npubkeys, keyid, &err) == -1) {
    printf ("signature: BAD: %s: %s\n", sig_path, err.msg);
    goto out;
  }
  for (i = 0; i < o->npubkeys; i++) {
    trust_key_id (keys[i], kid);
    if (strcmp (kid, keyid) == 0)
      break;
  }
  printf ("signature: good, key %s (%s)\n", keyid,
          i < o->npubkeys ? o->pubkeys[i] : "?");
  ok = true;

 out:
  for (i = 0; keys && i < o->npubkeys; i++)
    trust_key_free (keys[i]);
  free (keys);
  free (sig_path);
  free (sig);
  return ok;
}

/* Check expiry.  true if not expired. */
static bool
check_expiry (const struct store_index *idx)
{
  char when[32];
  uint64_t now = time (NULL);

  if (idx->expires == 0) {
    printf ("expiry: never\n");
    return true;
  }
  format_utc (when, idx->expires);
  if (idx->expires <= now) {
    printf ("expiry: EXPIRED at %s\n", when);
    return false;
  }
  printf ("expiry: valid until %s\n", when);
  return true;
}

static int
compare_by_hash (const void *a, const void *b, void *arg)
{
  const struct store_index *idx = arg;
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  int c = memcmp (idx->hashes + x * STORE_HASH_LEN,
                  idx->hashes + y * STORE_HASH_LEN, STORE_HASH_LEN);

  if (c == 0)
    c = x < y ? -1 : x > y;
  return c;
}

/* Sort the non-zero blocks by hash and find the distinct files. */
static int
plan_check (struct block_check *bc)
{
  const struct store_index *idx = bc->idx;
  uint64_t i;

  bc->order = malloc ((idx->num_blocks + 1) * sizeof *bc->order);
  bc->groups = malloc ((idx->num_blocks + 1) * sizeof *bc->groups);
  if (bc->order == NULL || bc->groups == NULL)
    return -1;
  for (i = 0; i < idx->num_blocks; i++)
    if (!store_index_is_zero (idx, i))
      bc->order[bc->norder++] = i;
  qsort_r (bc->order, bc->norder, sizeof *bc->order, compare_by_hash,
           (void *) idx);
  for (i = 0; i < bc->norder; i++)
    if (i == 0 || memcmp (idx->hashes + bc->order[i] * STORE_HASH_LEN,
                          idx->hashes + bc->order[i - 1] * STORE_HASH_LEN,
                          STORE_HASH_LEN) != 0)
      bc->groups[bc->ngroups++] = i;
  bc->status = calloc (bc->ngroups + 1, 1);
  bc->detail = calloc (bc->ngroups + 1, sizeof *bc->detail);
  return bc->status && bc->detail ? 0 : -1;
}

/* Read a block file of exactly want bytes into buf (want + 1 bytes).
 * Returns a status. */
static enum block_status
read_block_file (const char *path, unsigned char *buf, uint32_t want,
                 uint64_t *actual)
{
  struct stat st;
  size_t got = 0;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return errno == ENOENT ? BLK_MISSING : BLK_UNREADABLE;
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode)) {
    close (fd);
    return BLK_UNREADABLE;
  }
  *actual = st.st_size;
  if ((uint64_t) st.st_size != want) {
    close (fd);
    return BLK_SIZE;
  }
  while (got < want) {
    ssize_t r = read (fd, buf + got, want - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += r;
  }
  close (fd);
  return got == want ? BLK_OK : BLK_UNREADABLE;
}

/* Check one distinct block file (group g). */
static void
check_group (struct block_check *bc, struct decoder *dec, unsigned char *in,
             unsigned char *out, uint64_t g)
{
  const struct store_index *idx = bc->idx;
  uint64_t blk = bc->order[bc->groups[g]], actual = 0;
  const unsigned char *hash = idx->hashes + blk * STORE_HASH_LEN;
  uint32_t len = idx->lengths[blk];
  uint32_t out_len = blk == idx->num_blocks - 1 &&
    idx->size % idx->block_size ? idx->size % idx->block_size
                                : idx->block_size;
  char rel[STORE_BLOCK_PATH_MAX], path[PATH_MAX];
  unsigned char md[STORE_HASH_LEN];
  struct cloop_err err;
  enum block_status s;

  store_block_path (rel, hash);
  snprintf (path, sizeof path, "%s/%s", bc->dir, rel);
  s = read_block_file (path, in, len, &actual);
  if (s == BLK_SIZE &&
      asprintf (&bc->detail[g], "%" PRIu64 " bytes, expected %" PRIu32,
                actual, len) == -1)
    bc->detail[g] = NULL;
  if (s == BLK_OK &&
      (EVP_Digest (in, len, md, NULL, EVP_sha256 (), NULL) != 1 ||
       memcmp (md, hash, STORE_HASH_LEN) != 0))
    s = BLK_HASH;
  if (s == BLK_OK &&
      decoder_decode (dec, idx->codec, in, len, out, out_len, &err) == -1) {
    s = BLK_DECODE;
    bc->detail[g] = strdup (err.msg);
  }
  bc->status[g] = s;
}

static void *
check_worker (void *arg)
{
  struct block_check *bc = arg;
  struct decoder *dec = decoder_new (false);
  unsigned char *in = malloc (block_map_length_bound (bc->idx->block_size) + 1);
  unsigned char *out = malloc (bc->idx->block_size);
  uint64_t g;

  while ((g = __atomic_fetch_add (&bc->next, 1, __ATOMIC_RELAXED))
         < bc->ngroups) {
    if (dec == NULL || in == NULL || out == NULL)
      bc->status[g] = BLK_UNREADABLE;
    else
      check_group (bc, dec, in, out, g);
  }
  decoder_free (dec);
  free (in);
  free (out);
  return NULL;
}

static const char *
status_text (enum block_status s)
{
  switch (s) {
  case BLK_MISSING: return "missing";
  case BLK_SIZE: return "wrong size";
  case BLK_HASH: return "corrupt (SHA-256 mismatch)";
  case BLK_DECODE: return "corrupt (does not decode)";
  case BLK_UNREADABLE: return "unreadable";
  default: return "ok";
  }
}

/* Print the bad blocks in image order; returns how many blocks are bad
 * and counts missing ones in *missing. */
static uint64_t
report_blocks (const struct block_check *bc, uint64_t *missing)
{
  const struct store_index *idx = bc->idx;
  uint8_t *per_block = calloc (idx->num_blocks, 1);
  uint32_t *group_of = calloc (idx->num_blocks, sizeof *group_of);
  uint64_t g, i, bad = 0;
  char hex[65];

  *missing = 0;
  if (per_block == NULL || group_of == NULL) {
    free (per_block);
    free (group_of);
    return bc->norder;          /* cannot tell: assume the worst */
  }
  for (g = 0; g < bc->ngroups; g++) {
    uint64_t end = g + 1 < bc->ngroups ? bc->groups[g + 1] : bc->norder;
    for (i = bc->groups[g]; i < end; i++) {
      per_block[bc->order[i]] = bc->status[g];
      group_of[bc->order[i]] = g;
    }
  }
  for (i = 0; i < idx->num_blocks; i++) {
    const char *d;
    if (per_block[i] == BLK_OK)
      continue;
    bad++;
    *missing += per_block[i] == BLK_MISSING;
    if (bad > REPORT_MAX)
      continue;
    store_hex (hex, idx->hashes + i * STORE_HASH_LEN);
    d = bc->detail[group_of[i]];
    printf ("block %" PRIu64 ": %s: blocks/%.2s/%s%s%s\n", i,
            status_text (per_block[i]), hex, hex, d ? ": " : "", d ? d : "");
  }
  if (bad > REPORT_MAX)
    printf ("... and %" PRIu64 " more bad blocks\n", bad - REPORT_MAX);
  free (per_block);
  free (group_of);
  return bad;
}

/* Directory part of path ("." if none); caller frees. */
static char *
dir_of (const char *path)
{
  const char *slash = strrchr (path, '/');

  if (slash == NULL)
    return strdup (".");
  if (slash == path)
    return strdup ("/");
  return strndup (path, slash - path);
}

static void
free_check (struct block_check *bc)
{
  uint64_t g;

  for (g = 0; bc->detail && g < bc->ngroups; g++)
    free (bc->detail[g]);
  free (bc->detail);
  free (bc->status);
  free (bc->order);
  free (bc->groups);
  free (bc->dir);
}

/* Check every block.  true if all are good. */
static bool
check_blocks (const struct loaded_index *li, unsigned threads)
{
  struct block_check bc = { .idx = li->idx };
  pthread_t tids[256];
  unsigned i, started = 0;
  uint64_t bad, missing;

  bc.dir = dir_of (li->path);
  if (bc.dir == NULL || plan_check (&bc) == -1) {
    tool_error ("verify: out of memory");
    free_check (&bc);
    return false;
  }
  for (i = 0; i < threads; i++)
    if (pthread_create (&tids[started], NULL, check_worker, &bc) == 0)
      started++;
  if (started == 0)
    check_worker (&bc);
  for (i = 0; i < started; i++)
    pthread_join (tids[i], NULL);
  bad = report_blocks (&bc, &missing);
  printf ("blocks: %" PRIu64 " checked (%" PRIu64 " distinct files, %"
          PRIu64 " zero), %" PRIu64 " bad (%" PRIu64 " missing, %" PRIu64
          " corrupt)\n", li->idx->num_blocks, bc.ngroups,
          li->idx->num_blocks - bc.norder, bad, missing, bad - missing);
  free_check (&bc);
  return bad == 0;
}

int
cmd_verify (int argc, char **argv)
{
  struct verify_opts o = { .threads = online_cpus () };
  struct loaded_index li;
  struct cloop_err err;
  bool trusted = true, blocks_ok = true;
  int r = parse_verify_args (argc, argv, &o);

  if (r != 0) {
    free (o.pubkeys);
    return r == -1 ? EXIT_OK : r;
  }
  if (loaded_index_open (o.index, &li, &err) == -1) {
    tool_error ("verify: %s", err.msg);
    free (o.pubkeys);
    return EXIT_UNTRUSTED;
  }
  printf ("index: %s: '%s' revision %" PRIu64 ", %" PRIu64 " blocks\n",
          o.index, li.idx->name, li.idx->revision, li.idx->num_blocks);
  if (o.npubkeys > 0)
    trusted = check_signature (&li, &o);
  else
    printf ("signature: not checked (no -p key given)\n");
  trusted = check_expiry (li.idx) && trusted;
  if (!o.no_blocks)
    blocks_ok = check_blocks (&li, o.threads);
  printf ("result: %s\n", !trusted ? "FAILED (index not trusted)"
          : !blocks_ok ? "FAILED (bad blocks)" : "ok");
  loaded_index_close (&li);
  free (o.pubkeys);
  return !trusted ? EXIT_UNTRUSTED : !blocks_ok ? EXIT_FAIL : EXIT_OK;
}
