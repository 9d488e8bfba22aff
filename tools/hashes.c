/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store hashes: the block-hash list of a plain cloop file
 * (docs/FORMAT.md, "Block-hash lists"), optionally signed. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cloop.h"
#include "commands.h"
#include "hashlist.h"
#include "signature.h"
#include "source.h"
#include "store-dir.h"
#include "tool.h"

static void
hashes_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store hashes [-o LIST] [-k PRIVATE.pem ...] IMAGE\n"
"Write the block-hash list of a cloop file (any dialect): the SHA-256 of\n"
"every block's compressed bytes, and what identifies the file.  Give it\n"
"to the plugin as block-hashes=LIST, trusted by pubkey= (a signature\n"
"in LIST.sig) or by its SHA-256 (block-hashes-sha256=), which this\n"
"command prints.\n"
"\n"
"  -o, --output=LIST       write LIST (default: standard output)\n"
"  -k, --key=PRIVATE.pem   sign LIST into LIST.sig (repeatable; needs -o)\n"
"  -h, --help              this help\n");
}

struct hashes_args {
  const char *output;           /* NULL: stdout */
  const char **keys;
  size_t nkeys;
  const char *image;
};

static int
parse_hashes_args (int argc, char **argv, struct hashes_args *a)
{
  static const struct option longopts[] = {
    { "output", required_argument, NULL, 'o' },
    { "key", required_argument, NULL, 'k' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char **k;
  int c;

  while ((c = getopt_long (argc, argv, "+o:k:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': a->output = optarg; break;
    case 'k':
      k = realloc (a->keys, (a->nkeys + 1) * sizeof *k);
      if (k == NULL)
        return tool_usage_error ("hashes", "out of memory");
      a->keys = k;
      a->keys[a->nkeys++] = optarg;
      break;
    case 'h': hashes_usage (stdout); return -1;
    default: return tool_usage_error ("hashes", "bad option");
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("hashes", "expected one IMAGE");
  a->image = argv[optind];
  if (a->nkeys > 0 && a->output == NULL)
    return tool_usage_error ("hashes", "-k needs -o LIST (the signature "
                             "goes to LIST.sig)");
  if (a->output == NULL && isatty (STDOUT_FILENO))
    return tool_usage_error ("hashes", "the list is binary: redirect "
                             "standard output or use -o LIST");
  return 0;
}

static int
source_byte_pread (void *opaque, void *buf, size_t len, uint64_t offset,
                   struct cloop_err *err)
{
  return source_pread (opaque, buf, len, offset, err);
}

/* Open path as a cloop file and hash every stored block's compressed
 * bytes, exactly the ranges the plugin reads.  NULL with err set. */
static struct hash_list *
hash_image (const char *path, struct cloop_err *err)
{
  struct source *src = source_open_file (path, err);
  struct block_map *map = NULL;
  struct hash_list *list = NULL;
  unsigned char *buf = NULL;

  if (src == NULL)
    return NULL;
  struct byte_reader br = {
    .opaque = src, .size = source_size (src), .pread = source_byte_pread,
  };
  if ((map = cloop_open (&br, err)) == NULL ||
      (list = hash_list_new (map, source_size (src), err)) == NULL)
    goto out;
  buf = malloc (map->max_length ? map->max_length : 1);
  if (buf == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    goto fail;
  }
  for (uint64_t i = 0; i < map->num_blocks; i++) {
    const struct block_entry *e = &map->entries[i];
    if (e->codec == CODEC_ZERO)
      continue;                 /* not stored: its hash stays zero */
    if (source_pread (src, buf, e->length, e->offset, err) == -1)
      goto fail;
    if (EVP_Digest (buf, e->length, list->hashes + i * HASHLIST_HASH_LEN,
                    NULL, EVP_sha256 (), NULL) != 1) {
      cloop_err_set (err, EIO, "SHA-256 failed");
      goto fail;
    }
  }
  goto out;

 fail:
  hash_list_free (list);
  list = NULL;
 out:
  if (list == NULL)
    cloop_err_prefix (err, "%s", path);
  free (buf);
  block_map_free (map);
  source_close (src);
  return list;
}

/* Write all of buf to stdout.  0 or -1 with err set. */
static int
write_stdout (const unsigned char *buf, size_t len, struct cloop_err *err)
{
  if (fwrite (buf, 1, len, stdout) != len || fflush (stdout) != 0)
    return cloop_err_set (err, errno, "writing standard output: %s",
                          strerror (errno));
  return 0;
}

/* Sign the list bytes with every key into OUTPUT.sig.  0 or -1. */
static int
sign_list (const struct hashes_args *a, const unsigned char *buf, size_t len,
           struct cloop_err *err)
{
  char *text = NULL, *sig_path = signature_path (a->output), id[17];
  int r = -1;

  if (sig_path == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (size_t i = 0; i < a->nkeys; i++) {
    struct trust_key *key = trust_key_load_private (a->keys[i], err);
    char *out;
    if (key == NULL ||
        signature_sign (buf, len, key, text, text ? strlen (text) : 0, &out,
                        err) == -1) {
      trust_key_free (key);
      goto out;
    }
    trust_key_id (key, id);
    trust_key_free (key);
    printf ("signed %s with key %s (%s)\n", a->output, id, a->keys[i]);
    free (text);
    text = out;
  }
  r = write_file_atomic (sig_path, text, strlen (text), 0644, err);
 out:
  free (text);
  free (sig_path);
  return r;
}

int
cmd_hashes (int argc, char **argv)
{
  struct hashes_args a = { 0 };
  struct cloop_err err = { 0 };
  struct hash_list *list = NULL;
  unsigned char *buf = NULL, digest[HASHLIST_HASH_LEN];
  char hex[65];
  size_t len = 0;
  int r = parse_hashes_args (argc, argv, &a);

  if (r != 0) {
    free (a.keys);
    return r == -1 ? EXIT_OK : r;
  }
  r = EXIT_FAIL;
  if ((list = hash_image (a.image, &err)) == NULL ||
      hash_list_write (list, &buf, &len, &err) == -1)
    goto out;
  if (a.output == NULL ? write_stdout (buf, len, &err) == -1
      : write_file_atomic (a.output, buf, len, 0644, &err) == -1)
    goto out;
  if (a.nkeys > 0 && sign_list (&a, buf, len, &err) == -1)
    goto out;
  EVP_Digest (buf, len, digest, NULL, EVP_sha256 (), NULL);
  store_hex (hex, digest);
  fprintf (a.output ? stdout : stderr,
           "%s: %" PRIu64 " blocks of %" PRIu32 " bytes, sha256 %s\n",
           a.output ? a.output : "block-hash list", list->num_blocks,
           list->block_size, hex);
  r = EXIT_OK;

 out:
  if (r != EXIT_OK)
    tool_error ("hashes: %s", err.msg);
  hash_list_free (list);
  free (buf);
  free (a.keys);
  return r;
}
