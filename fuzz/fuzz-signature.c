/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz signature files (index/signature.c): parsing and
 * verifying, and signing on top of an existing file.
 *
 * Input: a BE16 length L, then L bytes of signature file text, then
 * the index bytes (the rest).  A key pair made at start-up is the one
 * trusted key.  Properties: verification fails with EINVAL (malformed)
 * or EACCES (no valid signature by the trusted key) and never succeeds
 * for text the harness did not sign; when the text parses, signing
 * the index on top of it succeeds (or hits the documented size
 * limits), and the result verifies with the trusted key and parses,
 * but does not verify, with another key.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "signature.h"

static struct trust_key *signer, *trusted, *other;
static char signer_id[17];

/* Make a key pair in a temporary directory and load it; the other key
 * is only ever public. */
static void
make_keys (void)
{
  char dir[] = "/tmp/fuzz-signature-XXXXXX", priv[64], pub[64];
  struct cloop_err err;

  if (mkdtemp (dir) == NULL)
    abort ();
  snprintf (priv, sizeof priv, "%s/key", dir);
  snprintf (pub, sizeof pub, "%s/key.pub", dir);
  if (trust_key_generate (priv, pub, &err) == -1 ||
      (signer = trust_key_load_private (priv, &err)) == NULL ||
      (trusted = trust_key_load_public (pub, &err)) == NULL)
    goto fail;
  unlink (priv);
  unlink (pub);
  if (trust_key_generate (priv, pub, &err) == -1 ||
      (other = trust_key_load_public (pub, &err)) == NULL)
    goto fail;
  unlink (priv);
  unlink (pub);
  rmdir (dir);
  trust_key_id (signer, signer_id);
  return;
 fail:
  fprintf (stderr, "fuzz-signature: %s\n", err.msg);
  abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  make_keys ();
  return 0;
}

/* Sign index on top of text, which parsed, and check the result. */
static void
check_resign (const uint8_t *index, size_t index_len,
              const char *text, size_t text_len)
{
  struct cloop_err err = { 0 };
  char *out = NULL, keyid[17] = "";
  struct trust_key *only_other[1] = { other };

  if (signature_sign (index, index_len, signer, text, text_len, &out,
                      &err) == -1) {
    FUZZ_ASSERT (err.errnum == EINVAL && strstr (err.msg, "limit"));
    return;
  }
  FUZZ_ASSERT (signature_verify (index, index_len, out, strlen (out),
                                 &trusted, 1, keyid, &err) == 0);
  FUZZ_ASSERT (strcmp (keyid, signer_id) == 0);
  FUZZ_ASSERT (signature_verify (index, index_len, out, strlen (out),
                                 only_other, 1, NULL, &err) == -1);
  FUZZ_ASSERT (err.errnum == EACCES);
  free (out);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct cloop_err err = { 0 };
  size_t text_len;
  const char *text;
  const uint8_t *index;
  size_t index_len;

  if (signer == NULL)
    make_keys ();
  if (size < 2)
    return 0;
  text_len = (size_t) data[0] << 8 | data[1];
  if (text_len > size - 2)
    text_len = size - 2;
  text = (const char *) data + 2;
  index = data + 2 + text_len;
  index_len = size - 2 - text_len;

  if (signature_verify (index, index_len, text, text_len, &trusted, 1,
                        NULL, &err) == 0)
    FUZZ_ASSERT (!"a signature verified that the harness did not make");
  FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == EACCES);
  if (err.errnum == EACCES)
    check_resign (index, index_len, text, text_len);
  return 0;
}
