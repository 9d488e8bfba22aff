/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store profile: embed a boot profile in a store's index
 * (docs/FORMAT.md, "Boot profiles").
 *
 * "add" merges recorded boots (index/profile.h) into a profile, puts it
 * in the index's profile section with a larger revision, signs the new
 * bytes with every -k key and replaces the signature file and then the
 * index, each atomically (the order of create).  "remove" writes the
 * index back without a profile (version 1 again); "show" prints it.
 * "build" writes the merged profile as a standalone file, for a cloop
 * file (the plugin's profile= with profile-sha256=).
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "atomicfile.h"
#include "commands.h"
#include "profile.h"
#include "signature.h"
#include "store-dir.h"
#include "tool.h"

struct profile_opts {
  const char **keys;
  size_t nkeys;
  bool revision_set;
  uint64_t revision;
  bool list_blocks;             /* show --blocks */
  const char *output;           /* build -o */
};

static void
profile_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store profile add [-k PRIVATE.pem ...] [-r REVISION]\n"
"                               STORE BOOT...\n"
"       cloop-store profile remove [-k PRIVATE.pem ...] [-r REVISION] STORE\n"
"       cloop-store profile show [--blocks] STORE\n"
"       cloop-store profile build -o PROFILE BOOT...\n"
"Embed in STORE's index (STOREDIR, or STOREDIR/INDEX) the boot profile\n"
"merged from recorded boots (files written by the plugin's\n"
"profile-record=), remove it, or show it.  add and remove raise the\n"
"revision and re-sign the index with every -k key; a signed index needs\n"
"at least one -k.  build writes the merged profile of a cloop file's\n"
"boots to PROFILE (for the plugin's profile=) and prints its SHA-256.\n"
"\n"
"  -k, --key=PRIVATE.pem   sign the new index (repeatable)\n"
"  -r, --revision=N        revision (default: the time, or one more than\n"
"                          the index's if that is not smaller)\n"
"      --blocks            show: list every block of the profile\n"
"  -o, --output=PROFILE    build: the profile file to write\n"
"  -h, --help              this help\n");
}

/* Parse options; optind is left at the action.  0, -1 after --help,
 * or EXIT_USAGE. */
static int
parse_profile_args (int argc, char **argv, struct profile_opts *o)
{
  static const struct option longopts[] = {
    { "key", required_argument, NULL, 'k' },
    { "revision", required_argument, NULL, 'r' },
    { "blocks", no_argument, NULL, 'b' },
    { "output", required_argument, NULL, 'o' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char **k;
  int c;

  while ((c = getopt_long (argc, argv, "k:r:o:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'k':
      if ((k = realloc (o->keys, (o->nkeys + 1) * sizeof *k)) == NULL)
        return tool_usage_error ("profile", "out of memory");
      o->keys = k;
      o->keys[o->nkeys++] = optarg;
      break;
    case 'r':
      if (parse_u64 (optarg, 0, UINT64_MAX, &o->revision) == -1)
        return tool_usage_error ("profile", "-r %s: not a revision number",
                                 optarg);
      o->revision_set = true;
      break;
    case 'b': o->list_blocks = true; break;
    case 'o': o->output = optarg; break;
    case 'h': profile_usage (stdout); return -1;
    default: return tool_usage_error ("profile", "bad option");
    }
  }
  if (argc - optind < 2)
    return tool_usage_error ("profile", "expected add, remove or show, and "
                             "STORE");
  return 0;
}

/* The index path of STORE: STORE/index if STORE is a directory.
 * Caller frees; NULL on ENOMEM. */
static char *
index_path_of (const char *store)
{
  struct stat st;
  char *p;

  if (stat (store, &st) == 0 && S_ISDIR (st.st_mode)) {
    if (asprintf (&p, "%s/index", store) == -1)
      return NULL;
    return p;
  }
  return strdup (store);
}

/* Read, parse and check one recorded boot against the index (if idx
 * is not NULL).  Returns the record or NULL with err set (naming the
 * file). */
static struct profile_record *
load_record (const char *file, const struct store_index *idx,
             struct cloop_err *err)
{
  struct profile_record *rec;
  unsigned char *buf;
  size_t len;

  if (read_whole_file (file, PROFILE_RECORD_MAX, &buf, &len, err) == -1)
    return NULL;
  rec = profile_record_parse (buf, len, file, err);
  free (buf);
  if (rec == NULL || idx == NULL)
    return rec;
  if (strcmp (rec->identity, idx->name) != 0 ||
      rec->num_blocks != idx->num_blocks ||
      rec->block_size != idx->block_size) {
    cloop_err_set (err, EINVAL, "%s: recorded on image '%s' (%" PRIu64
                   " blocks of %" PRIu32 "), but the store is '%s' (%"
                   PRIu64 " blocks of %" PRIu32 ")", file, rec->identity,
                   rec->num_blocks, rec->block_size, idx->name,
                   idx->num_blocks, idx->block_size);
    profile_record_free (rec);
    return NULL;
  }
  return rec;
}

/* Merge the recorded boots files[0..n) into *blocks, *count (of an
 * image of *num_blocks blocks of *block_size, if not NULL). */
static int
merge_files (char **files, size_t n, const struct store_index *idx,
             uint32_t **blocks, size_t *count, uint64_t *num_blocks,
             uint32_t *block_size, struct cloop_err *err)
{
  struct profile_record **recs = calloc (n, sizeof *recs);
  size_t i;
  int r = -1;

  if (recs == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (i = 0; i < n; i++)
    if ((recs[i] = load_record (files[i], idx, err)) == NULL)
      goto out;
  r = profile_merge ((const struct profile_record *const *) recs, n, blocks,
                     count, err);
  if (r == 0 && num_blocks)
    *num_blocks = recs[0]->num_blocks;
  if (r == 0 && block_size)
    *block_size = recs[0]->block_size;
 out:
  for (i = 0; i < n; i++)
    profile_record_free (recs[i]);
  free (recs);
  return r;
}

/* Pick the new revision (as create does).  0, or -1 with err set. */
static int
next_revision (const struct profile_opts *o, const struct loaded_index *li,
               struct cloop_err *err)
{
  uint64_t now = (uint64_t) time (NULL), old = li->idx->revision;

  if (o->revision_set) {
    if (o->revision <= old)
      return cloop_err_set (err, EINVAL, "%s has revision %" PRIu64 ": -r %"
                            PRIu64 " must be larger (clients refuse a "
                            "rollback)", li->path, old, o->revision);
    li->idx->revision = o->revision;
  }
  else if (old == UINT64_MAX)
    return cloop_err_set (err, EINVAL, "%s: revision cannot grow", li->path);
  else
    li->idx->revision = now > old ? now : old + 1;
  return 0;
}

/* Signature text of bytes by every key (NULL if no key).  0 or -1. */
static int
sign_bytes (const struct profile_opts *o, const unsigned char *bytes,
            size_t len, char **text, struct cloop_err *err)
{
  char *acc = NULL, *next;
  size_t i;

  for (i = 0; i < o->nkeys; i++) {
    struct trust_key *key = trust_key_load_private (o->keys[i], err);
    int r;
    if (key == NULL) {
      free (acc);
      return -1;
    }
    r = signature_sign (bytes, len, key, acc, acc ? strlen (acc) : 0, &next,
                        err);
    trust_key_free (key);
    free (acc);
    if (r == -1) {
      cloop_err_prefix (err, "signing with %s", o->keys[i]);
      return -1;
    }
    acc = next;
  }
  *text = acc;
  return 0;
}

/* Serialize li->idx, sign it and replace the signature file, then the
 * index.  Refuses to leave a signed index unsigned.  0, or -1. */
static int
replace_index (const struct profile_opts *o, const struct loaded_index *li,
               struct cloop_err *err)
{
  unsigned char *bytes = NULL;
  char *sig = NULL, *sig_path = signature_path (li->path);
  size_t len;
  int r = -1;

  if (sig_path == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  if (o->nkeys == 0 && access (sig_path, F_OK) == 0) {
    cloop_err_set (err, EINVAL, "%s is signed (%s): give -k PRIVATE.pem to "
                   "sign the new index, whose old signatures would not "
                   "verify", li->path, sig_path);
    goto out;
  }
  if (store_index_write (li->idx, &bytes, &len, err) == -1 ||
      sign_bytes (o, bytes, len, &sig, err) == -1)
    goto out;
  if (sig != NULL &&
      write_file_atomic (sig_path, sig, strlen (sig), 0644, err) == -1)
    goto out;
  r = write_file_atomic (li->path, bytes, len, 0644, err);
 out:
  free (bytes);
  free (sig);
  free (sig_path);
  return r;
}

/* add (files != NULL) or remove (n == 0). */
static int
profile_change (const struct profile_opts *o, const char *store,
                char **files, size_t n)
{
  struct loaded_index li = { 0 };
  struct cloop_err err;
  char *path = index_path_of (store);
  uint32_t *blocks = NULL;
  size_t count = 0;
  int r = EXIT_FAIL;

  if (path == NULL) {
    tool_error ("profile: out of memory");
    return EXIT_FAIL;
  }
  if (loaded_index_open (path, &li, &err) == -1)
    goto out;
  if (n > 0 && merge_files (files, n, li.idx, &blocks, &count, NULL, NULL,
                            &err) == -1)
    goto out;
  if (n == 0 && li.idx->profile_len == 0) {
    cloop_err_set (&err, EINVAL, "%s has no profile", path);
    goto out;
  }
  free (li.idx->profile);
  li.idx->profile = blocks;
  li.idx->profile_len = count;
  blocks = NULL;
  if (next_revision (o, &li, &err) == -1 || replace_index (o, &li, &err) == -1)
    goto out;
  if (n > 0)
    printf ("%s: %s '%s' revision %" PRIu64 ", profile of %zu blocks from "
            "%zu recorded boot%s\n", path, o->nkeys ? "signed" : "unsigned",
            li.idx->name, li.idx->revision, count, n, n == 1 ? "" : "s");
  else
    printf ("%s: %s '%s' revision %" PRIu64 ", profile removed\n", path,
            o->nkeys ? "signed" : "unsigned", li.idx->name,
            li.idx->revision);
  r = EXIT_OK;
 out:
  if (r != EXIT_OK)
    tool_error ("profile: %s", err.msg);
  free (blocks);
  loaded_index_close (&li);
  free (path);
  return r;
}

/* Number of maximal runs of consecutive ascending blocks. */
static size_t
count_runs (const uint32_t *b, size_t n)
{
  size_t runs = n > 0, i;

  for (i = 1; i < n; i++)
    if (b[i] != b[i - 1] + 1)
      runs++;
  return runs;
}

static int
profile_show (const struct profile_opts *o, const char *store)
{
  struct loaded_index li;
  struct cloop_err err;
  char *path = index_path_of (store);
  const struct store_index *idx;
  uint64_t bytes = 0;
  char sz[32];
  size_t i;

  if (path == NULL || loaded_index_open (path, &li, &err) == -1) {
    tool_error ("profile: %s", path ? err.msg : "out of memory");
    free (path);
    return EXIT_FAIL;
  }
  idx = li.idx;
  if (idx->profile_len == 0) {
    printf ("%s: '%s' revision %" PRIu64 ": no profile\n", path, idx->name,
            idx->revision);
    loaded_index_close (&li);
    free (path);
    return EXIT_FAIL;
  }
  for (i = 0; i < idx->profile_len; i++)
    bytes += idx->lengths[idx->profile[i]];
  format_bytes (sz, bytes);
  printf ("%s: '%s' revision %" PRIu64 ": profile of %zu blocks of %"
          PRIu64 " (%.1f%%), %zu runs, %" PRIu64 " compressed bytes (%s)\n",
          path, idx->name, idx->revision, idx->profile_len, idx->num_blocks,
          100.0 * (double) idx->profile_len / (double) idx->num_blocks,
          count_runs (idx->profile, idx->profile_len), bytes, sz);
  printf ("first blocks:");
  for (i = 0; i < idx->profile_len && i < 16; i++)
    printf (" %" PRIu32, idx->profile[i]);
  printf ("%s\n", idx->profile_len > 16 ? " ..." : "");
  if (o->list_blocks)
    for (i = 0; i < idx->profile_len; i++)
      printf ("%" PRIu32 "\n", idx->profile[i]);
  loaded_index_close (&li);
  free (path);
  return EXIT_OK;
}

/* build: merge the boots into a standalone profile file. */
static int
profile_build (const struct profile_opts *o, char **files, size_t n)
{
  struct cloop_err err = { 0 };
  uint32_t *blocks = NULL;
  size_t count = 0, len = 0;
  uint64_t num_blocks = 0;
  uint32_t block_size = 0;
  unsigned char *buf = NULL, md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  int r = EXIT_FAIL;

  if (merge_files (files, n, NULL, &blocks, &count, &num_blocks, &block_size,
                   &err) == -1 ||
      profile_encode (blocks, count, num_blocks, block_size, &buf, &len,
                      &err) == -1 ||
      atomic_file_write (o->output, buf, len, "profile", &err) == -1)
    tool_error ("profile build: %s", err.msg);
  else {
    EVP_Digest (buf, len, md, &mdlen, EVP_sha256 (), NULL);
    for (unsigned int i = 0; i < mdlen; i++)
      printf ("%02x", md[i]);
    printf ("  %s\n", o->output);
    fprintf (stderr, "cloop-store profile build: %zu blocks of %" PRIu64
             " (%" PRIu32 "-byte blocks) from %zu boot%s\n", count,
             num_blocks, block_size, n, n == 1 ? "" : "s");
    r = EXIT_OK;
  }
  free (blocks);
  free (buf);
  return r;
}

int
cmd_profile (int argc, char **argv)
{
  struct profile_opts o = { 0 };
  const char *action;
  int r = parse_profile_args (argc, argv, &o);

  if (r != 0) {
    free (o.keys);
    return r == -1 ? EXIT_OK : r;
  }
  action = argv[optind];
  if (strcmp (action, "add") == 0 && argc - optind >= 3)
    r = profile_change (&o, argv[optind + 1], argv + optind + 2,
                        (size_t) (argc - optind - 2));
  else if (strcmp (action, "remove") == 0 && argc - optind == 2)
    r = profile_change (&o, argv[optind + 1], NULL, 0);
  else if (strcmp (action, "show") == 0 && argc - optind == 2)
    r = profile_show (&o, argv[optind + 1]);
  else if (strcmp (action, "build") == 0 && argc - optind >= 2 && o.output)
    r = profile_build (&o, argv + optind + 1, (size_t) (argc - optind - 1));
  else
    r = tool_usage_error ("profile", "expected 'add STORE BOOT...', "
                          "'remove STORE', 'show STORE' or "
                          "'build -o PROFILE BOOT...'");
  free (o.keys);
  return r;
}
