/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store keygen and sign: Ed25519 key pairs and signature files
 * (docs/FORMAT.md, "The signature file"). */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "hashlist.h"
#include "signature.h"
#include "store-dir.h"
#include "tool.h"

static void
keygen_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store keygen PRIVATE.pem PUBLIC.pem\n"
"Make an Ed25519 key pair: PRIVATE.pem (PKCS#8, mode 0600, never\n"
"overwritten) signs indexes; PUBLIC.pem is what clients trust.\n");
}

int
cmd_keygen (int argc, char **argv)
{
  struct trust_key *key;
  struct cloop_err err;
  char id[17];
  int r = tool_parse_no_options ("keygen", argc, argv, keygen_usage);

  if (r != 0)
    return r == -1 ? EXIT_OK : r;
  if (argc - optind != 2)
    return tool_usage_error ("keygen", "expected PRIVATE.pem and PUBLIC.pem");
  if (trust_key_generate (argv[optind], argv[optind + 1], &err) == -1) {
    tool_error ("keygen: %s", err.msg);
    return EXIT_FAIL;
  }
  key = trust_key_load_public (argv[optind + 1], &err);
  if (key == NULL) {
    tool_error ("keygen: %s", err.msg);
    return EXIT_FAIL;
  }
  trust_key_id (key, id);
  trust_key_free (key);
  printf ("key id %s: private key %s, public key %s\n", id, argv[optind],
          argv[optind + 1]);
  return EXIT_OK;
}

static void
sign_usage (FILE *f)
{
  fprintf (f,
"Usage: cloop-store sign -k PRIVATE.pem [-k ...] STOREDIR/INDEX|LIST\n"
"Add (or replace) each key's signature line in INDEX.sig (or, for a\n"
"block-hash list made by cloop-store hashes, LIST.sig).  Lines of\n"
"other keys are kept.\n"
"\n"
"  -k, --key=PRIVATE.pem   signing key (repeatable, at least one)\n"
"  -h, --help              this help\n");
}

/* Existing signature text (empty if there is none).  0 or -1. */
static int
read_old_signature (const char *sig_path, char **text, size_t *len,
                    struct cloop_err *err)
{
  unsigned char *buf;

  if (read_whole_file (sig_path, SIGNATURE_FILE_MAX, &buf, len, err) == -1) {
    if (err->errnum != ENOENT)
      return -1;
    *text = NULL;
    *len = 0;
    return 0;
  }
  *text = (char *) buf;
  return 0;
}

/* Sign li with key file path, updating *text.  0 or -1. */
static int
sign_with (const struct loaded_index *li, const char *path, char **text,
           size_t *len, struct cloop_err *err)
{
  struct trust_key *key = trust_key_load_private (path, err);
  char *out, id[17];

  if (key == NULL)
    return -1;
  if (signature_sign (li->bytes, li->len, key, *text, *len, &out, err) == -1) {
    trust_key_free (key);
    return -1;
  }
  trust_key_id (key, id);
  trust_key_free (key);
  printf ("signed %s with key %s (%s)\n", li->path, id, path);
  free (*text);
  *text = out;
  *len = strlen (out);
  return 0;
}

static int
parse_sign_args (int argc, char **argv, const char ***keys, size_t *nkeys)
{
  static const struct option longopts[] = {
    { "key", required_argument, NULL, 'k' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char **k;
  int c;

  while ((c = getopt_long (argc, argv, "+k:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'k':
      k = realloc (*keys, (*nkeys + 1) * sizeof *k);
      if (k == NULL)
        return tool_usage_error ("sign", "out of memory");
      *keys = k;
      (*keys)[(*nkeys)++] = optarg;
      break;
    case 'h': sign_usage (stdout); return -1;
    default: return tool_usage_error ("sign", "bad option");
    }
  }
  if (*nkeys == 0)
    return tool_usage_error ("sign", "at least one -k PRIVATE.pem is needed");
  if (argc - optind != 1)
    return tool_usage_error ("sign", "expected one INDEX");
  return 0;
}

/* Load what sign signs: a store index, or a block-hash list (then
 * li->idx is NULL).  0, or -1 with err set naming path. */
static int
load_signable (const char *path, struct loaded_index *li,
               struct cloop_err *err)
{
  struct hash_list *list;

  memset (li, 0, sizeof *li);
  if (read_whole_file (path, HASHLIST_MAX, &li->bytes, &li->len, err) == 0 &&
      hash_list_probe_head (li->bytes, li->len)) {
    if ((list = hash_list_parse (li->bytes, li->len, err)) == NULL) {
      cloop_err_prefix (err, "%s", path);
      loaded_index_close (li);
      return -1;
    }
    hash_list_free (list);
    if ((li->path = strdup (path)) == NULL) {
      loaded_index_close (li);
      return cloop_err_set (err, ENOMEM, "out of memory");
    }
    return 0;
  }
  loaded_index_close (li);
  return loaded_index_open (path, li, err);
}

int
cmd_sign (int argc, char **argv)
{
  const char **keys = NULL;
  size_t nkeys = 0, i, len = 0;
  struct loaded_index li = { 0 };
  struct cloop_err err;
  char *sig_path = NULL, *text = NULL;
  int r = parse_sign_args (argc, argv, &keys, &nkeys);

  if (r != 0) {
    free (keys);
    return r == -1 ? EXIT_OK : r;
  }
  r = EXIT_FAIL;
  if (load_signable (argv[optind], &li, &err) == -1)
    goto out;
  if ((sig_path = signature_path (li.path)) == NULL) {
    cloop_err_set (&err, ENOMEM, "out of memory");
    goto out;
  }
  if (read_old_signature (sig_path, &text, &len, &err) == -1)
    goto out;
  for (i = 0; i < nkeys; i++)
    if (sign_with (&li, keys[i], &text, &len, &err) == -1)
      goto out;
  if (write_file_atomic (sig_path, text, len, 0644, &err) == -1)
    goto out;
  r = EXIT_OK;

 out:
  if (r != EXIT_OK)
    tool_error ("sign: %s", err.msg);
  loaded_index_close (&li);
  free (sig_path);
  free (text);
  free (keys);
  return r;
}
