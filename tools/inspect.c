/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store info and diff: describe an index, and compare two. */
#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "signature.h"
#include "tool.h"

/* The distinct non-zero block files of an index, sorted by hash. */
struct distinct {
  unsigned char *hashes;        /* n * STORE_HASH_LEN, sorted */
  uint32_t *lengths;
  uint64_t n;
  uint64_t bytes;               /* sum of lengths: stored bytes */
  uint64_t zero;                /* zero blocks (by position) */
};

static int
compare_hash_ptr (const void *a, const void *b)
{
  return memcmp (*(unsigned char *const *) a, *(unsigned char *const *) b,
                 STORE_HASH_LEN);
}

/* Build d from idx.  0, or -1 on ENOMEM. */
static int
distinct_build (const struct store_index *idx, struct distinct *d)
{
  unsigned char **p = malloc ((idx->num_blocks + 1) * sizeof *p);
  uint64_t i, m = 0;

  memset (d, 0, sizeof *d);
  d->hashes = malloc ((idx->num_blocks + 1) * STORE_HASH_LEN);
  d->lengths = malloc ((idx->num_blocks + 1) * sizeof *d->lengths);
  if (p == NULL || d->hashes == NULL || d->lengths == NULL) {
    free (p);
    return -1;
  }
  for (i = 0; i < idx->num_blocks; i++) {
    if (store_index_is_zero (idx, i))
      d->zero++;
    else
      p[m++] = idx->hashes + i * STORE_HASH_LEN;
  }
  qsort (p, m, sizeof *p, compare_hash_ptr);
  for (i = 0; i < m; i++) {
    uint64_t blk = (p[i] - idx->hashes) / STORE_HASH_LEN;
    if (d->n > 0 && memcmp (d->hashes + (d->n - 1) * STORE_HASH_LEN, p[i],
                            STORE_HASH_LEN) == 0)
      continue;
    memcpy (d->hashes + d->n * STORE_HASH_LEN, p[i], STORE_HASH_LEN);
    d->lengths[d->n] = idx->lengths[blk];
    d->bytes += idx->lengths[blk];
    d->n++;
  }
  free (p);
  return 0;
}

static void
distinct_free (struct distinct *d)
{
  free (d->hashes);
  free (d->lengths);
}

static int
compare_hash (const void *a, const void *b)
{
  return memcmp (a, b, STORE_HASH_LEN);
}

/* True if d holds hash. */
static bool
distinct_has (const struct distinct *d, const unsigned char *hash)
{
  return d->n > 0 &&
    bsearch (hash, d->hashes, d->n, STORE_HASH_LEN, compare_hash) != NULL;
}

/* "keyid, keyid" of the signature lines in INDEX.sig (unverified). */
static void
print_signature_ids (const char *index_path)
{
  char *sig_path = signature_path (index_path), *line, *save = NULL;
  unsigned char *text = NULL;
  struct cloop_err err;
  size_t len;
  int n = 0;

  printf ("signatures:        ");
  if (sig_path == NULL ||
      read_whole_file (sig_path, SIGNATURE_FILE_MAX, &text, &len, &err) == -1) {
    printf ("none (%s)\n", sig_path ? err.msg : "out of memory");
    free (sig_path);
    return;
  }
  for (line = strtok_r ((char *) text, "\n", &save); line != NULL;
       line = strtok_r (NULL, "\n", &save)) {
    char id[17];
    if (sscanf (line, "ed25519 %16[0-9a-f] ", id) == 1)
      printf ("%s%s", n++ ? ", " : "", id);
  }
  printf (n ? " (not verified; use verify -p)\n" : "none\n");
  free (text);
  free (sig_path);
}

static int
info_one (const char *path)
{
  struct loaded_index li;
  struct distinct d;
  struct cloop_err err;
  const struct store_index *idx;
  char created[32], expires[32], sz[32], st[32];

  if (loaded_index_open (path, &li, &err) == -1) {
    tool_error ("info: %s", err.msg);
    return EXIT_FAIL;
  }
  idx = li.idx;
  if (distinct_build (idx, &d) == -1) {
    tool_error ("info: out of memory");
    loaded_index_close (&li);
    return EXIT_FAIL;
  }
  format_utc (created, idx->created);
  format_utc (expires, idx->expires);
  format_bytes (sz, idx->size);
  format_bytes (st, d.bytes);
  printf ("index:             %s (%zu bytes)\n", path, li.len);
  printf ("name:              %s\n", idx->name);
  printf ("description:       %s\n", idx->description);
  printf ("revision:          %" PRIu64 "\n", idx->revision);
  printf ("created:           %s\n", created);
  printf ("expires:           %s%s\n", idx->expires ? expires : "never",
          idx->expires && idx->expires <= (uint64_t) time (NULL)
          ? " (EXPIRED)" : "");
  printf ("image size:        %" PRIu64 " (%s)\n", idx->size, sz);
  printf ("block size:        %" PRIu32 "\n", idx->block_size);
  printf ("codec:             %s\n", codec_name (idx->codec));
  printf ("blocks:            %" PRIu64 "\n", idx->num_blocks);
  printf ("zero blocks:       %" PRIu64 "\n", d.zero);
  printf ("distinct blocks:   %" PRIu64 "\n", d.n);
  printf ("stored bytes:      %" PRIu64 " (%s)\n", d.bytes, st);
  printf ("compression ratio: %.2f\n",
          d.bytes ? (double) idx->size / d.bytes : 0.0);
  if (idx->profile_len > 0)
    printf ("boot profile:      %zu blocks (cloop-store profile show)\n",
            idx->profile_len);
  print_signature_ids (path);
  distinct_free (&d);
  loaded_index_close (&li);
  return EXIT_OK;
}

static void
info_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store info STOREDIR/INDEX\n"
"Describe an index: name, description, revision, times, sizes, codec,\n"
"block counts, stored bytes, compression ratio and the key ids of its\n"
"signatures (not verified: use 'cloop-store verify -p').\n");
}

static void
diff_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store diff OLD_INDEX NEW_INDEX\n"
"Compare two indexes by block hash: distinct block files shared, new\n"
"(only in NEW) and removed (only in OLD), with their compressed bytes.\n"
"The download needed to move from OLD to NEW is the bytes of NEW's\n"
"distinct non-zero blocks that OLD does not have.\n");
}

/* --help and bad options for info and diff.  0 to go on, -1 after
 * --help, else an exit code. */
static int
parse_plain (const char *cmd, int argc, char **argv, void (*usage) (FILE *),
             int want_args)
{
  int r = tool_parse_no_options (cmd, argc, argv, usage);

  if (r != 0)
    return r;
  if (argc - optind != want_args)
    return tool_usage_error (cmd, want_args == 1 ? "expected one INDEX"
                             : "expected OLD_INDEX and NEW_INDEX");
  return 0;
}

int
cmd_info (int argc, char **argv)
{
  int r = parse_plain ("info", argc, argv, info_usage, 1);

  if (r != 0)
    return r == -1 ? EXIT_OK : r;
  return info_one (argv[optind]);
}

static void
print_side (const char *label, const struct loaded_index *li,
            const struct distinct *d)
{
  printf ("%s %s: '%s' revision %" PRIu64 ", %" PRIu64 " blocks of %" PRIu32
          " (%" PRIu64 " zero, %" PRIu64 " distinct), %" PRIu64
          " stored bytes\n", label, li->path, li->idx->name,
          li->idx->revision, li->idx->num_blocks, li->idx->block_size,
          d->zero, d->n, d->bytes);
}

/* Count the distinct blocks of a that b has (shared) or not. */
static void
count_against (const struct distinct *a, const struct distinct *b,
               uint64_t *in_b, uint64_t *in_b_bytes, uint64_t *not_in_b,
               uint64_t *not_in_b_bytes)
{
  uint64_t i;

  *in_b = *in_b_bytes = *not_in_b = *not_in_b_bytes = 0;
  for (i = 0; i < a->n; i++) {
    if (distinct_has (b, a->hashes + i * STORE_HASH_LEN)) {
      (*in_b)++;
      *in_b_bytes += a->lengths[i];
    }
    else {
      (*not_in_b)++;
      *not_in_b_bytes += a->lengths[i];
    }
  }
}

/* Positions of new whose block differs from old's at the same index. */
static uint64_t
changed_positions (const struct store_index *o, const struct store_index *n)
{
  uint64_t i, changed = 0;

  for (i = 0; i < n->num_blocks; i++)
    if (i >= o->num_blocks || o->lengths[i] != n->lengths[i] ||
        memcmp (o->hashes + i * STORE_HASH_LEN, n->hashes + i * STORE_HASH_LEN,
                STORE_HASH_LEN) != 0)
      changed++;
  return changed;
}

static void
print_diff (const struct loaded_index *lo, const struct loaded_index *ln,
            const struct distinct *dold, const struct distinct *dnew)
{
  uint64_t shared, shared_b, added, added_b, kept, kept_b, removed, removed_b;

  count_against (dnew, dold, &shared, &shared_b, &added, &added_b);
  count_against (dold, dnew, &kept, &kept_b, &removed, &removed_b);
  print_side ("old", lo, dold);
  print_side ("new", ln, dnew);
  if (lo->idx->block_size != ln->idx->block_size ||
      lo->idx->codec != ln->idx->codec)
    printf ("note: block size or codec differ: few blocks can be shared\n");
  printf ("shared:  %" PRIu64 " blocks, %" PRIu64 " bytes\n", shared,
          shared_b);
  printf ("new:     %" PRIu64 " blocks, %" PRIu64 " bytes\n", added, added_b);
  printf ("removed: %" PRIu64 " blocks, %" PRIu64 " bytes\n", removed,
          removed_b);
  printf ("changed positions: %" PRIu64 " of %" PRIu64 "\n",
          changed_positions (lo->idx, ln->idx), ln->idx->num_blocks);
  printf ("download needed to move from OLD to NEW: %" PRIu64 " bytes (%"
          PRIu64 " blocks)\n", added_b, added);
}

int
cmd_diff (int argc, char **argv)
{
  struct loaded_index lo = { 0 }, ln = { 0 };
  struct distinct dold = { 0 }, dnew = { 0 };
  struct cloop_err err;
  int r = parse_plain ("diff", argc, argv, diff_usage, 2);

  if (r != 0)
    return r == -1 ? EXIT_OK : r;
  r = EXIT_FAIL;
  if (loaded_index_open (argv[optind], &lo, &err) == -1 ||
      loaded_index_open (argv[optind + 1], &ln, &err) == -1) {
    tool_error ("diff: %s", err.msg);
    goto out;
  }
  if (distinct_build (lo.idx, &dold) == -1 ||
      distinct_build (ln.idx, &dnew) == -1) {
    tool_error ("diff: out of memory");
    goto out;
  }
  print_diff (&lo, &ln, &dold, &dnew);
  r = EXIT_OK;

 out:
  distinct_free (&dold);
  distinct_free (&dnew);
  loaded_index_close (&lo);
  loaded_index_close (&ln);
  return r;
}
