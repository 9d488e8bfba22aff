/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: Ed25519 signatures of store indexes (see signature.h
 * and docs/FORMAT.md, "The signature file").
 *
 * The signature file is parsed completely and strictly before any
 * signature is checked: a file with one malformed line is refused even
 * if another line would verify.  Lines end in '\n'; the last line may
 * lack it.  A '\r' or NUL anywhere is an error (no CRLF files).
 */
#include <config.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "signature.h"

#define ED25519_SIG_LEN   64
#define ED25519_KEY_LEN   32
#define KEYID_LEN         16
#define SIG_B64_LEN       88          /* 4 * ceil (64 / 3) */
#define SIG_PREFIX        "ed25519 "
#define SIG_PREFIX_LEN    8
/* "ed25519 " KEYID " " BASE64 */
#define SIG_LINE_LEN      (SIG_PREFIX_LEN + KEYID_LEN + 1 + SIG_B64_LEN)

struct trust_key {
  EVP_PKEY *pkey;
  bool has_private;
  char id[KEYID_LEN + 1];
};

/* One parsed signature line. */
struct sig_line {
  char keyid[KEYID_LEN + 1];
  unsigned char sig[ED25519_SIG_LEN];
};

/* The signature lines of a file. */
struct sig_list {
  struct sig_line lines[SIGNATURE_LINES_MAX];
  size_t n;
};

enum line_kind { LINE_BLANK, LINE_COMMENT, LINE_SIGNATURE };

/* ------------------------------------------------------------------ */
/* OpenSSL helpers. */

/* Set err to "prefix: <first OpenSSL error>" (or just prefix if the
 * queue is empty) and clear the queue.  Returns -1. */
static int
err_openssl (struct cloop_err *err, int errnum, const char *prefix)
{
  unsigned long e = ERR_get_error ();
  char buf[256];

  ERR_clear_error ();
  if (e == 0)
    return cloop_err_set (err, errnum, "%s", prefix);
  ERR_error_string_n (e, buf, sizeof buf);
  return cloop_err_set (err, errnum, "%s: %s", prefix, buf);
}

/* Compute the key id of pkey (an Ed25519 key) into out.  0, or -1. */
static int
compute_key_id (EVP_PKEY *pkey, char out[KEYID_LEN + 1],
                struct cloop_err *err)
{
  static const char digits[] = "0123456789abcdef";
  unsigned char raw[ED25519_KEY_LEN], md[EVP_MAX_MD_SIZE];
  size_t raw_len = sizeof raw;
  unsigned md_len;

  if (EVP_PKEY_get_raw_public_key (pkey, raw, &raw_len) != 1 ||
      raw_len != ED25519_KEY_LEN)
    return err_openssl (err, EINVAL, "cannot get the raw public key");
  if (EVP_Digest (raw, raw_len, md, &md_len, EVP_sha256 (), NULL) != 1)
    return err_openssl (err, EIO, "SHA-256");
  for (size_t i = 0; i < KEYID_LEN / 2; i++) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 0xf];
  }
  out[KEYID_LEN] = '\0';
  return 0;
}

/* Wrap a freshly read pkey in a trust_key after checking it is
 * Ed25519.  Takes ownership of pkey (frees it on error).  NULL with
 * err set naming path. */
static struct trust_key *
wrap_key (EVP_PKEY *pkey, bool has_private, const char *path,
          struct cloop_err *err)
{
  struct trust_key *key;

  if (EVP_PKEY_id (pkey) != EVP_PKEY_ED25519) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    const char *type = EVP_PKEY_get0_type_name (pkey);
#else
    const char *type = OBJ_nid2sn (EVP_PKEY_id (pkey));
#endif
    cloop_err_set (err, EINVAL, "%s: not an Ed25519 key (%s, %d bits); "
                   "only Ed25519 keys are supported", path,
                   type ? type : "unknown type", EVP_PKEY_bits (pkey));
    EVP_PKEY_free (pkey);
    return NULL;
  }
  key = calloc (1, sizeof *key);
  if (key == NULL) {
    cloop_err_set (err, ENOMEM, "calloc: %m");
    EVP_PKEY_free (pkey);
    return NULL;
  }
  key->pkey = pkey;
  key->has_private = has_private;
  if (compute_key_id (pkey, key->id, err) == -1) {
    cloop_err_prefix (err, "%s", path);
    trust_key_free (key);
    return NULL;
  }
  return key;
}

/* Passphrase callback that refuses: encrypted keys are not supported,
 * and OpenSSL must never prompt on a terminal from inside nbdkit. */
static int
no_passphrase (char *buf, int size, int rwflag, void *u)
{
  return -1;
}

/* Read a PEM key from path; private selects PrivateKey or PUBKEY.
 * NULL with err set. */
static struct trust_key *
load_key (const char *path, bool private, struct cloop_err *err)
{
  EVP_PKEY *pkey;
  BIO *bio;

  ERR_clear_error ();
  errno = 0;
  bio = BIO_new_file (path, "r");
  if (bio == NULL) {
    int e = errno ? errno : ENOENT;
    ERR_clear_error ();
    cloop_err_set (err, e, "%s: %s", path, strerror (e));
    return NULL;
  }
  if (private)
    pkey = PEM_read_bio_PrivateKey (bio, NULL, no_passphrase, NULL);
  else
    pkey = PEM_read_bio_PUBKEY (bio, NULL, no_passphrase, NULL);
  BIO_free (bio);
  if (pkey == NULL) {
    char what[CLOOP_ERR_LEN];
    snprintf (what, sizeof what, "%s: cannot read a PEM %s key "
              "(unencrypted %s expected)", path,
              private ? "private" : "public",
              private ? "PKCS#8" : "SubjectPublicKeyInfo");
    err_openssl (err, EINVAL, what);
    return NULL;
  }
  return wrap_key (pkey, private, path, err);
}

struct trust_key *
trust_key_load_public (const char *path, struct cloop_err *err)
{
  return load_key (path, false, err);
}

struct trust_key *
trust_key_load_private (const char *path, struct cloop_err *err)
{
  return load_key (path, true, err);
}

void
trust_key_free (struct trust_key *key)
{
  if (key == NULL)
    return;
  EVP_PKEY_free (key->pkey);
  free (key);
}

void
trust_key_id (const struct trust_key *key, char out[17])
{
  memcpy (out, key->id, KEYID_LEN + 1);
}

/* ------------------------------------------------------------------ */
/* Key generation. */

/* Write len bytes to fd.  0, or -1 with errno set. */
static int
write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= (size_t) r;
  }
  return 0;
}

/* Create path (refusing an existing file) with exactly the given mode
 * and write the PEM form of pkey (private or public part).  0, or -1
 * with err set; on error no file is left behind. */
static int
write_pem_file (const char *path, mode_t mode, EVP_PKEY *pkey,
                bool private, struct cloop_err *err)
{
  BIO *mem = BIO_new (BIO_s_mem ());
  char *data;
  long len;
  int fd, ok;

  if (mem == NULL)
    return err_openssl (err, ENOMEM, "BIO_new");
  ok = private
    ? PEM_write_bio_PrivateKey (mem, pkey, NULL, NULL, 0, NULL, NULL)
    : PEM_write_bio_PUBKEY (mem, pkey);
  len = BIO_get_mem_data (mem, &data);
  if (ok != 1 || len <= 0) {
    BIO_free (mem);
    return err_openssl (err, EIO, "cannot encode the key as PEM");
  }
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd == -1) {
    int e = errno;
    BIO_free (mem);
    return cloop_err_set (err, e, "%s: %s", path, strerror (e));
  }
  /* The mode is part of the contract, whatever the umask. */
  if (fchmod (fd, mode) == -1 || write_all (fd, data, (size_t) len) == -1 ||
      fsync (fd) == -1) {
    int e = errno;
    close (fd);
    unlink (path);
    BIO_free (mem);
    return cloop_err_set (err, e, "%s: %s", path, strerror (e));
  }
  BIO_free (mem);
  if (close (fd) == -1) {
    int e = errno;
    unlink (path);
    return cloop_err_set (err, e, "%s: close: %s", path, strerror (e));
  }
  return 0;
}

/* Generate an Ed25519 key.  NULL with err set. */
static EVP_PKEY *
generate_ed25519 (struct cloop_err *err)
{
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id (EVP_PKEY_ED25519, NULL);
  EVP_PKEY *pkey = NULL;

  if (ctx == NULL || EVP_PKEY_keygen_init (ctx) != 1 ||
      EVP_PKEY_keygen (ctx, &pkey) != 1) {
    err_openssl (err, EIO, "cannot generate an Ed25519 key");
    pkey = NULL;
  }
  EVP_PKEY_CTX_free (ctx);
  return pkey;
}

/* Both files are created exclusively (an existing public key file is
 * refused too, so that a failed run never leaves a private key whose
 * public half is some other key's). */
int
trust_key_generate (const char *private_path, const char *public_path,
                    struct cloop_err *err)
{
  EVP_PKEY *pkey = generate_ed25519 (err);

  if (pkey == NULL)
    return -1;
  if (write_pem_file (private_path, 0600, pkey, true, err) == -1) {
    EVP_PKEY_free (pkey);
    return -1;
  }
  if (write_pem_file (public_path, 0644, pkey, false, err) == -1) {
    unlink (private_path);
    EVP_PKEY_free (pkey);
    return -1;
  }
  EVP_PKEY_free (pkey);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Parsing the signature file. */

/* Find the next line of text[0..len) starting at *pos: sets *line and
 * *line_len (without the '\n') and advances *pos.  False at the end. */
static bool
next_line (const char *text, size_t len, size_t *pos,
           const char **line, size_t *line_len)
{
  const char *nl;

  if (*pos >= len)
    return false;
  *line = text + *pos;
  nl = memchr (*line, '\n', len - *pos);
  *line_len = nl ? (size_t) (nl - *line) : len - *pos;
  *pos += *line_len + (nl != NULL);
  return true;
}

/* True if s[0..n) is all lower-case hex digits. */
static bool
is_lower_hex (const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

/* Decode the canonical standard Base64 of exactly 64 bytes (88
 * characters, "==" padding, unused bits zero).  0, or -1. */
static int
decode_sig_b64 (const char *b64, unsigned char sig[ED25519_SIG_LEN])
{
  unsigned char raw[SIG_B64_LEN], again[SIG_B64_LEN + 1];
  int n;

  if (b64[SIG_B64_LEN - 2] != '=' || b64[SIG_B64_LEN - 1] != '=')
    return -1;
  /* EVP_DecodeBlock counts the padding as zero bytes: 66 = 64 + 2. */
  n = EVP_DecodeBlock (raw, (const unsigned char *) b64, SIG_B64_LEN);
  if (n != ED25519_SIG_LEN + 2)
    return -1;
  /* Canonical: re-encoding gives back exactly the same characters
   * (rejects whitespace, non-zero unused bits and stray padding). */
  if (EVP_EncodeBlock (again, raw, ED25519_SIG_LEN) != SIG_B64_LEN ||
      memcmp (again, b64, SIG_B64_LEN) != 0)
    return -1;
  memcpy (sig, raw, ED25519_SIG_LEN);
  return 0;
}

/* Classify one line (not the header) and, for a signature line, parse
 * it into *out.  lineno is for messages.  The kind, or -1 with err. */
static int
parse_line (const char *line, size_t len, size_t lineno,
            struct sig_line *out, struct cloop_err *err)
{
  if (len == 0)
    return LINE_BLANK;
  if (line[0] == '#')
    return LINE_COMMENT;
  if (len < SIG_PREFIX_LEN || memcmp (line, SIG_PREFIX, SIG_PREFIX_LEN) != 0)
    return cloop_err_set (err, EINVAL, "signature file line %zu: expected "
                          "\"ed25519 KEYID SIGNATURE\", a comment or an "
                          "empty line", lineno);
  if (len != SIG_LINE_LEN || line[SIG_PREFIX_LEN + KEYID_LEN] != ' ' ||
      !is_lower_hex (line + SIG_PREFIX_LEN, KEYID_LEN))
    return cloop_err_set (err, EINVAL, "signature file line %zu: expected "
                          "\"ed25519\", a key id of %d lower-case hex "
                          "digits and an %d-character Base64 signature, "
                          "separated by single spaces", lineno, KEYID_LEN,
                          SIG_B64_LEN);
  if (decode_sig_b64 (line + SIG_PREFIX_LEN + KEYID_LEN + 1, out->sig) == -1)
    return cloop_err_set (err, EINVAL, "signature file line %zu: the "
                          "signature is not the canonical Base64 of %d "
                          "bytes", lineno, ED25519_SIG_LEN);
  memcpy (out->keyid, line + SIG_PREFIX_LEN, KEYID_LEN);
  out->keyid[KEYID_LEN] = '\0';
  return LINE_SIGNATURE;
}

/* Check the file-wide rules: size, no NUL or CR, the header line.
 * Sets *pos after the header.  0, or -1 with err set. */
static int
check_file (const char *text, size_t len, size_t *pos,
            struct cloop_err *err)
{
  const char *line;
  size_t line_len;

  if (text == NULL || len == 0)
    return cloop_err_set (err, EINVAL, "signature file is empty");
  if (len > SIGNATURE_FILE_MAX)
    return cloop_err_set (err, EINVAL, "signature file is %zu bytes, "
                          "larger than the limit of %d", len,
                          SIGNATURE_FILE_MAX);
  if (memchr (text, '\0', len) != NULL)
    return cloop_err_set (err, EINVAL, "signature file contains a NUL byte");
  if (memchr (text, '\r', len) != NULL)
    return cloop_err_set (err, EINVAL, "signature file contains a carriage "
                          "return (CRLF line ends are not accepted)");
  *pos = 0;
  if (!next_line (text, len, pos, &line, &line_len) ||
      line_len != strlen (SIGNATURE_HEADER) ||
      memcmp (line, SIGNATURE_HEADER, line_len) != 0)
    return cloop_err_set (err, EINVAL, "signature file does not start with "
                          "the line \"%s\"", SIGNATURE_HEADER);
  return 0;
}

/* Parse a whole signature file strictly into *list.  0, or -1 with
 * err set (EINVAL). */
static int
parse_sig_file (const char *text, size_t len, struct sig_list *list,
                struct cloop_err *err)
{
  const char *line;
  size_t pos = 0, line_len, lineno = 1;
  struct sig_line sl;
  int kind;

  list->n = 0;
  if (check_file (text, len, &pos, err) == -1)
    return -1;
  while (next_line (text, len, &pos, &line, &line_len)) {
    lineno++;
    kind = parse_line (line, line_len, lineno, &sl, err);
    if (kind == -1)
      return -1;
    if (kind != LINE_SIGNATURE)
      continue;
    if (list->n == SIGNATURE_LINES_MAX)
      return cloop_err_set (err, EINVAL, "signature file has more than %d "
                            "signature lines", SIGNATURE_LINES_MAX);
    list->lines[list->n++] = sl;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Verifying and signing. */

/* True if sig is a valid Ed25519 signature of msg by key. */
static bool
verify_one (const struct trust_key *key, const unsigned char *sig,
            const void *msg, size_t msg_len)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  bool ok;

  ok = ctx != NULL &&
       EVP_DigestVerifyInit (ctx, NULL, NULL, NULL, key->pkey) == 1 &&
       EVP_DigestVerify (ctx, sig, ED25519_SIG_LEN, msg, msg_len) == 1;
  EVP_MD_CTX_free (ctx);
  ERR_clear_error ();
  return ok;
}

int
signature_verify (const void *index, size_t index_len,
                  const char *sig_text, size_t sig_len,
                  struct trust_key *const *keys, size_t nkeys,
                  char keyid_out[17], struct cloop_err *err)
{
  struct sig_list list;
  size_t i, k, tried = 0;

  if (parse_sig_file (sig_text, sig_len, &list, err) == -1)
    return -1;
  for (i = 0; i < list.n; i++)
    for (k = 0; k < nkeys; k++) {
      if (strcmp (keys[k]->id, list.lines[i].keyid) != 0)
        continue;
      tried++;
      if (verify_one (keys[k], list.lines[i].sig, index, index_len)) {
        if (keyid_out)
          memcpy (keyid_out, keys[k]->id, KEYID_LEN + 1);
        return 0;
      }
    }
  if (tried > 0)
    return cloop_err_set (err, EACCES, "signature does not verify "
                          "(%zu signature(s) by trusted keys checked, none "
                          "matches the signed file)", tried);
  return cloop_err_set (err, EACCES, "not signed by a trusted key "
                        "(%zu signature line(s), %zu trusted key(s), no "
                        "key id in common)", list.n, nkeys);
}

/* Sign msg with key into sig.  0, or -1 with err set. */
static int
sign_one (const struct trust_key *key, const void *msg, size_t msg_len,
          unsigned char sig[ED25519_SIG_LEN], struct cloop_err *err)
{
  EVP_MD_CTX *ctx;
  size_t sig_len = ED25519_SIG_LEN;
  int r = 0;

  if (!key->has_private)
    return cloop_err_set (err, EINVAL, "signing needs a private key; key %s "
                          "is public only", key->id);
  ctx = EVP_MD_CTX_new ();
  if (ctx == NULL ||
      EVP_DigestSignInit (ctx, NULL, NULL, NULL, key->pkey) != 1 ||
      EVP_DigestSign (ctx, sig, &sig_len, msg, msg_len) != 1 ||
      sig_len != ED25519_SIG_LEN)
    r = err_openssl (err, EIO, "Ed25519 signing failed");
  EVP_MD_CTX_free (ctx);
  return r;
}

/* Append s[0..n) and a '\n' to out (which has room). */
static void
append_line (char *out, size_t *pos, const char *s, size_t n)
{
  memcpy (out + *pos, s, n);
  out[*pos + n] = '\n';
  *pos += n + 1;
}

/* Build the new file: header, old_text's comment and signature lines
 * except those of key_id, then new_line.  *out is malloc'd and
 * NUL-terminated.  old_text must already have parsed.  0, or -1. */
static int
build_sig_file (const char *old_text, size_t old_len, const char *key_id,
                const char *new_line, char **out, struct cloop_err *err)
{
  size_t cap = strlen (SIGNATURE_HEADER) + old_len + SIG_LINE_LEN + 3;
  size_t pos = 0, opos = 0, line_len, nsig = 1;
  const char *line;
  char *buf = malloc (cap);

  if (buf == NULL)
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  append_line (buf, &pos, SIGNATURE_HEADER, strlen (SIGNATURE_HEADER));
  if (old_len > 0)
    next_line (old_text, old_len, &opos, &line, &line_len); /* header */
  while (next_line (old_text, old_len, &opos, &line, &line_len)) {
    bool is_sig = line_len > 0 && line[0] != '#';
    if (line_len == 0 ||
        (is_sig && memcmp (line + SIG_PREFIX_LEN, key_id, KEYID_LEN) == 0))
      continue;
    nsig += is_sig;
    append_line (buf, &pos, line, line_len);
  }
  append_line (buf, &pos, new_line, SIG_LINE_LEN);
  buf[pos] = '\0';
  if (nsig > SIGNATURE_LINES_MAX || pos > SIGNATURE_FILE_MAX) {
    free (buf);
    return cloop_err_set (err, EINVAL, "signature file would exceed the "
                          "limit of %d signature lines or %d bytes",
                          SIGNATURE_LINES_MAX, SIGNATURE_FILE_MAX);
  }
  *out = buf;
  return 0;
}

/* The old file must itself be valid, so that a corrupted file is
 * noticed rather than silently rewritten; its blank lines are dropped,
 * its comments and other signature lines kept in order. */
int
signature_sign (const void *index, size_t index_len,
                const struct trust_key *key,
                const char *old_text, size_t old_len,
                char **out, struct cloop_err *err)
{
  unsigned char sig[ED25519_SIG_LEN];
  char line[SIG_LINE_LEN + 1];
  struct sig_list list;

  if (old_text == NULL)
    old_len = 0;
  if (old_len > 0 && parse_sig_file (old_text, old_len, &list, err) == -1) {
    cloop_err_prefix (err, "existing signature file");
    return -1;
  }
  if (sign_one (key, index, index_len, sig, err) == -1)
    return -1;
  memcpy (line, SIG_PREFIX, SIG_PREFIX_LEN);
  memcpy (line + SIG_PREFIX_LEN, key->id, KEYID_LEN);
  line[SIG_PREFIX_LEN + KEYID_LEN] = ' ';
  EVP_EncodeBlock ((unsigned char *) line + SIG_PREFIX_LEN + KEYID_LEN + 1,
                   sig, ED25519_SIG_LEN);
  return build_sig_file (old_text, old_len, key->id, line, out, err);
}
