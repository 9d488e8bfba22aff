/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: Ed25519 signatures of store indexes (docs/FORMAT.md,
 * "The signature file"), through OpenSSL's EVP API.
 */
#ifndef CLOOP_SIGNATURE_H
#define CLOOP_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define SIGNATURE_FILE_MAX   8192
#define SIGNATURE_LINES_MAX  16
#define SIGNATURE_HEADER     "nbdkit-cloop-signature 1"

struct trust_key;               /* an Ed25519 public or private key */

/* Load a PEM public key (SubjectPublicKeyInfo) or, with
 * trust_key_load_private, a PEM private key (PKCS#8).  Anything but
 * Ed25519 is refused.  NULL with err set (naming path). */
struct trust_key *trust_key_load_public (const char *path,
                                         struct cloop_err *err);
struct trust_key *trust_key_load_private (const char *path,
                                          struct cloop_err *err);
void trust_key_free (struct trust_key *key);

/* Generate a key pair and write it as PEM files: the private key with
 * mode 0600 (refusing to overwrite an existing file), the public key
 * 0644.  0, or -1 with err set. */
int trust_key_generate (const char *private_path, const char *public_path,
                        struct cloop_err *err);

/* The key id: first 16 hex digits of SHA-256 of the raw 32-byte public
 * key (out: 17 bytes). */
void trust_key_id (const struct trust_key *key, char out[17]);

/* Check a signature file's text (len bytes, need not be NUL-terminated)
 * against the exact index bytes: parse every line strictly (header,
 * "ed25519 KEYID BASE64", comments, limits); succeed if at least one
 * line verifies with one of keys[0..nkeys).  On success returns 0 and
 * copies the verifying key's id to keyid_out (17 bytes, may be NULL).
 * A malformed file is EINVAL; no valid signature by a trusted key is
 * EACCES; the message says which. */
int signature_verify (const void *index, size_t index_len,
                      const char *sig_text, size_t sig_len,
                      struct trust_key *const *keys, size_t nkeys,
                      char keyid_out[17], struct cloop_err *err);

/* Sign index bytes with a private key and return a signature file's
 * text in *out (malloc'd, NUL-terminated): old_text's valid lines
 * (NULL or "" for none) plus one new line, replacing any line of the
 * same key id.  0, or -1 with err set. */
int signature_sign (const void *index, size_t index_len,
                    const struct trust_key *key,
                    const char *old_text, size_t old_len,
                    char **out, struct cloop_err *err);

#endif /* CLOOP_SIGNATURE_H */
