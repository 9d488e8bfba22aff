/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/signature.c (Ed25519 signature
 * files of store indexes).
 *
 * Generates keys in a temporary directory, signs and verifies, checks
 * that every kind of tampering is refused (EACCES) and every malformed
 * signature file too (EINVAL), and checks interoperability with the
 * openssl command line in both directions, as FORMAT.md promises.
 * Exit status 0 = pass, 1 = fail.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "signature.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

static char dir[] = "/tmp/test-signature-XXXXXX";

/* dir/name in a static buffer (one of four, round robin). */
static const char *
in_dir (const char *name)
{
  static char bufs[4][256];
  static int next;
  char *b = bufs[next++ % 4];

  snprintf (b, sizeof bufs[0], "%s/%s", dir, name);
  return b;
}

/* Run a shell command made with printf; its exit status (or -1). */
static int run (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
static int
run (const char *fmt, ...)
{
  char cmd[2048];
  va_list ap;
  int r;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  r = system (cmd);
  return r == -1 || !WIFEXITED (r) ? -1 : WEXITSTATUS (r);
}

static void
write_file (const char *path, const void *data, size_t len)
{
  FILE *fp = fopen (path, "w");
  if (fp == NULL || fwrite (data, 1, len, fp) != len || fclose (fp) != 0) {
    perror (path);
    exit (1);
  }
}

/* Read a whole (small) file into a malloc'd NUL-terminated buffer. */
static char *
read_file (const char *path)
{
  FILE *fp = fopen (path, "r");
  char *buf = calloc (1, 65536);
  size_t n;

  if (fp == NULL || buf == NULL) {
    perror (path);
    exit (1);
  }
  n = fread (buf, 1, 65535, fp);
  buf[n] = '\0';
  fclose (fp);
  return buf;
}

static mode_t
file_mode (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? st.st_mode & 07777 : (mode_t) -1;
}

/* The index under test: arbitrary bytes (signatures do not parse it). */
static unsigned char index_bytes[1000];

/* signature_verify on a NUL-terminated text; returns the errnum (0 on
 * success) and the key id in keyid. */
static int
verify (const char *text, struct trust_key *const *keys, size_t nkeys,
        char keyid[17])
{
  struct cloop_err err = { 0, "" };

  if (signature_verify (index_bytes, sizeof index_bytes, text, strlen (text),
                        keys, nkeys, keyid, &err) == 0)
    return 0;
  CHECK (err.msg[0] != '\0');
  return err.errnum;
}

/* Expect text to be refused as malformed (EINVAL). */
static void
expect_malformed_at (const char *text, size_t len, struct trust_key *key,
                     const char *want, int line)
{
  struct cloop_err err = { 0, "" };
  int r = signature_verify (index_bytes, sizeof index_bytes, text, len,
                            &key, 1, NULL, &err);

  if (r != -1 || err.errnum != EINVAL || strstr (err.msg, want) == NULL) {
    fprintf (stderr, "  FAIL %s:%d: r=%d errnum=%d \"%s\", expected EINVAL "
             "\"%s\"\n", __FILE__, line, r, err.errnum, err.msg, want);
    check_failures++;
  }
}
#define expect_malformed(text, key, want) \
  expect_malformed_at ((text), strlen (text), (key), (want), __LINE__)

/* ------------------------------------------------------------------ */

struct keys {
  struct trust_key *priv1, *pub1, *priv2, *pub2, *pub3;
  char id1[17], id2[17];
};

static void
test_keygen (struct keys *k)
{
  struct cloop_err err = { 0, "" };
  char id[17];

  CHECK (trust_key_generate (in_dir ("k1.pem"), in_dir ("k1.pub"),
                             &err) == 0);
  CHECK (file_mode (in_dir ("k1.pem")) == 0600);
  CHECK (file_mode (in_dir ("k1.pub")) == 0644);
  CHECK (trust_key_generate (in_dir ("k2.pem"), in_dir ("k2.pub"),
                             &err) == 0);
  CHECK (trust_key_generate (in_dir ("k3.pem"), in_dir ("k3.pub"),
                             &err) == 0);
  /* Never overwrite. */
  CHECK (trust_key_generate (in_dir ("k1.pem"), in_dir ("new.pub"),
                             &err) == -1 && err.errnum == EEXIST);
  CHECK (access (in_dir ("new.pub"), F_OK) == -1);
  CHECK (trust_key_generate (in_dir ("new.pem"), in_dir ("k1.pub"),
                             &err) == -1 && err.errnum == EEXIST);
  CHECK (access (in_dir ("new.pem"), F_OK) == -1);  /* cleaned up */

  k->priv1 = trust_key_load_private (in_dir ("k1.pem"), &err);
  k->pub1 = trust_key_load_public (in_dir ("k1.pub"), &err);
  k->priv2 = trust_key_load_private (in_dir ("k2.pem"), &err);
  k->pub2 = trust_key_load_public (in_dir ("k2.pub"), &err);
  k->pub3 = trust_key_load_public (in_dir ("k3.pub"), &err);
  if (!k->priv1 || !k->pub1 || !k->priv2 || !k->pub2 || !k->pub3) {
    fprintf (stderr, "  FAIL loading keys: %s\n", err.msg);
    exit (1);
  }
  trust_key_id (k->pub1, k->id1);
  trust_key_id (k->priv1, id);
  CHECK (strlen (k->id1) == 16 && strcmp (id, k->id1) == 0);
  trust_key_id (k->pub2, k->id2);
  CHECK (strcmp (k->id1, k->id2) != 0);

  /* Wrong kinds of files. */
  CHECK (trust_key_load_public (in_dir ("k1.pem"), &err) == NULL &&
         err.errnum == EINVAL && strstr (err.msg, "k1.pem") != NULL);
  CHECK (trust_key_load_private (in_dir ("k1.pub"), &err) == NULL &&
         err.errnum == EINVAL);
  CHECK (trust_key_load_public (in_dir ("absent.pub"), &err) == NULL &&
         err.errnum == ENOENT && strstr (err.msg, "absent.pub") != NULL);
  write_file (in_dir ("junk.pub"), "hello\n", 6);
  CHECK (trust_key_load_public (in_dir ("junk.pub"), &err) == NULL &&
         err.errnum == EINVAL);
  trust_key_free (NULL);
}

static void
test_sign_verify (struct keys *k)
{
  struct cloop_err err = { 0, "" };
  char *one = NULL, *two = NULL, *again = NULL, keyid[17] = "";
  struct trust_key *both[2] = { k->pub3, k->pub2 };

  for (size_t i = 0; i < sizeof index_bytes; i++)
    index_bytes[i] = (unsigned char) (i * 31 + 7);

  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv1,
                         NULL, 0, &one, &err) == 0);
  CHECK (one != NULL && strncmp (one, SIGNATURE_HEADER "\ned25519 ",
                                 strlen (SIGNATURE_HEADER) + 9) == 0);
  CHECK (strlen (one) == strlen (SIGNATURE_HEADER) + 1 + 113 + 1);
  CHECK (verify (one, &k->pub1, 1, keyid) == 0);
  CHECK (strcmp (keyid, k->id1) == 0);
  CHECK (verify (one, &k->priv1, 1, NULL) == 0);   /* private keys verify */
  CHECK (verify (one, &k->pub2, 1, NULL) == EACCES);

  /* A second signer: two lines, each key alone verifies. */
  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv2,
                         one, strlen (one), &two, &err) == 0);
  CHECK (verify (two, &k->pub1, 1, keyid) == 0 &&
         strcmp (keyid, k->id1) == 0);
  CHECK (verify (two, &k->pub2, 1, keyid) == 0 &&
         strcmp (keyid, k->id2) == 0);
  CHECK (verify (two, both, 2, keyid) == 0 && strcmp (keyid, k->id2) == 0);
  CHECK (verify (two, &k->pub3, 1, NULL) == EACCES);

  /* Re-signing with key 1 replaces its line: still two lines. */
  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv1,
                         two, strlen (two), &again, &err) == 0);
  CHECK (again && strlen (again) == strlen (two));
  CHECK (verify (again, &k->pub1, 1, NULL) == 0);
  CHECK (verify (again, &k->pub2, 1, NULL) == 0);

  /* A public key cannot sign; a malformed old file is refused. */
  char *bad = NULL;
  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->pub1,
                         NULL, 0, &bad, &err) == -1 && err.errnum == EINVAL);
  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv1,
                         "garbage\n", 8, &bad, &err) == -1 &&
         err.errnum == EINVAL && strstr (err.msg, "existing") != NULL);
  CHECK (bad == NULL);

  /* No trusted keys at all, and no signature lines at all. */
  CHECK (verify (one, NULL, 0, NULL) == EACCES);
  CHECK (verify (SIGNATURE_HEADER "\n", &k->pub1, 1, NULL) == EACCES);
  CHECK (verify (SIGNATURE_HEADER, &k->pub1, 1, NULL) == EACCES);

  /* Comments and blank lines, no final newline. */
  char text[1024];
  snprintf (text, sizeof text, "%s\n# release key\n\n%.*s",
            SIGNATURE_HEADER, 113, one + strlen (SIGNATURE_HEADER) + 1);
  CHECK (verify (text, &k->pub1, 1, NULL) == 0);

  /* Tampering. */
  index_bytes[500] ^= 1;
  CHECK (verify (one, &k->pub1, 1, NULL) == EACCES);
  CHECK (verify (two, both, 2, NULL) == EACCES);
  index_bytes[500] ^= 1;
  CHECK (verify (one, &k->pub1, 1, NULL) == 0);
  struct cloop_err e2 = { 0, "" };
  CHECK (signature_verify (index_bytes, sizeof index_bytes - 1, one,
                           strlen (one), &k->pub1, 1, NULL, &e2) == -1 &&
         e2.errnum == EACCES);
  for (size_t pos = strlen (SIGNATURE_HEADER) + 26;
       pos < strlen (SIGNATURE_HEADER) + 1 + 113; pos += 7) {
    char *t = strdup (one);
    t[pos] = t[pos] == 'A' ? 'B' : 'A';
    int r = verify (t, &k->pub1, 1, NULL);
    CHECK (r == EACCES || r == EINVAL);
    free (t);
  }
  /* Key id of key 1 but key 2's signature: EACCES. */
  char *swapped = strdup (two);
  char *l2 = strstr (swapped, k->id2);
  CHECK (l2 != NULL);
  if (l2) {
    memcpy (l2, k->id1, 16);
    snprintf (text, sizeof text, "%s\n%.113s\n", SIGNATURE_HEADER, l2 - 8);
    CHECK (verify (text, &k->pub1, 1, NULL) == EACCES);
  }
  free (swapped);

  free (one);
  free (two);
  free (again);
}

/* ------------------------------------------------------------------ */

static void
test_malformed (struct keys *k)
{
  struct cloop_err err = { 0, "" };
  char *good = NULL, text[16384], *p;
  const char *line;

  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv1,
                         NULL, 0, &good, &err) == 0);
  if (good == NULL)
    return;
  line = good + strlen (SIGNATURE_HEADER) + 1;   /* "ed25519 ..." + \n */

  expect_malformed (line, k->pub1, "does not start");
  expect_malformed ("", k->pub1, "empty");
  snprintf (text, sizeof text, "nbdkit-cloop-signature 2\n%s", line);
  expect_malformed (text, k->pub1, "does not start");
  snprintf (text, sizeof text, "%s \n%s", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "does not start");
  snprintf (text, sizeof text, "# comment\n%s\n%s", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "does not start");

  /* Key id: too short, too long, upper case. */
  snprintf (text, sizeof text, "%s\ned25519 %.15s %s", SIGNATURE_HEADER,
            k->id1, line + 25);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\ned25519 %s0 %s", SIGNATURE_HEADER,
            k->id1, line + 25);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\n%s", SIGNATURE_HEADER, line);
  for (p = text + strlen (SIGNATURE_HEADER) + 9; p < text +
       strlen (SIGNATURE_HEADER) + 25; p++)
    if (*p >= 'a' && *p <= 'f') {
      *p = (char) (*p - 'a' + 'A');
      break;
    }
  if (p < text + strlen (SIGNATURE_HEADER) + 25)
    expect_malformed (text, k->pub1, "lower-case hex");

  /* Base64 of 63 bytes (84 characters, no padding) and of 65 bytes. */
  snprintf (text, sizeof text, "%s\ned25519 %s %.84s\n", SIGNATURE_HEADER,
            k->id1, line + 25);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\ned25519 %s %.84sAAA=\n",
            SIGNATURE_HEADER, k->id1, line + 25);
  expect_malformed (text, k->pub1, "canonical Base64");
  /* Non-canonical: unused bits set in the last character. */
  snprintf (text, sizeof text, "%s\n%s", SIGNATURE_HEADER, line);
  p = strstr (text, "==");
  if (p) {
    /* The last character holds 2 bits: one of A, Q, g, w. */
    p[-1] = p[-1] == 'A' ? 'B' : p[-1] == 'Q' ? 'R' : p[-1] == 'g' ? 'h' : 'x';
    expect_malformed (text, k->pub1, "canonical Base64");
  }
  /* Characters outside the alphabet, url-safe alphabet. */
  snprintf (text, sizeof text, "%s\n%s", SIGNATURE_HEADER, line);
  text[strlen (SIGNATURE_HEADER) + 1 + 30] = '-';
  expect_malformed (text, k->pub1, "canonical Base64");

  /* Extra spaces, tabs, trailing space, other algorithm, garbage. */
  snprintf (text, sizeof text, "%s\ned25519  %s", SIGNATURE_HEADER, line + 8);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\ned25519\t%s", SIGNATURE_HEADER, line + 8);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\n%.113s \n", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\nrsa %s", SIGNATURE_HEADER, line + 8);
  expect_malformed (text, k->pub1, "line 2");
  snprintf (text, sizeof text, "%s\n%shello world\n", SIGNATURE_HEADER,
            line);
  expect_malformed (text, k->pub1, "line 3");
  snprintf (text, sizeof text, "%s\n %s", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "line 2");

  /* CRLF line ends; a NUL byte. */
  snprintf (text, sizeof text, "%s\r\n%s", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "carriage return");
  snprintf (text, sizeof text, "%s\n%.113s\r\n", SIGNATURE_HEADER, line);
  expect_malformed (text, k->pub1, "carriage return");
  snprintf (text, sizeof text, "%s\n%s", SIGNATURE_HEADER, line);
  text[strlen (SIGNATURE_HEADER)] = '\0';
  expect_malformed_at (text, strlen (SIGNATURE_HEADER) + 1 + strlen (line),
                       k->pub1, "NUL", __LINE__);

  /* 16 signature lines are fine, 17 are not (even if one verifies). */
  size_t off = (size_t) snprintf (text, sizeof text, "%s\n",
                                  SIGNATURE_HEADER);
  for (int i = 0; i < 16; i++)
    off += (size_t) snprintf (text + off, sizeof text - off, "%s", line);
  CHECK (verify (text, &k->pub1, 1, NULL) == 0);
  snprintf (text + off, sizeof text - off, "%s", line);
  expect_malformed (text, k->pub1, "more than 16");

  /* 8 KiB is the limit, comments included. */
  off = (size_t) snprintf (text, sizeof text, "%s\n%s#", SIGNATURE_HEADER,
                           line);
  memset (text + off, 'c', SIGNATURE_FILE_MAX - off - 1);
  text[SIGNATURE_FILE_MAX - 1] = '\n';
  text[SIGNATURE_FILE_MAX] = '\0';
  CHECK (verify (text, &k->pub1, 1, NULL) == 0);
  memset (text + SIGNATURE_FILE_MAX - 1, 'c', 9 * 1024 - SIGNATURE_FILE_MAX);
  text[9 * 1024] = '\0';
  expect_malformed (text, k->pub1, "larger than the limit");

  free (good);
}

/* ------------------------------------------------------------------ */

/* Random mutations of a valid two-line file: each is accepted,
 * refused as malformed or refused as untrusted, never anything else
 * (run under ASan to catch reads past the text). */
static void
test_mutations (struct keys *k)
{
  struct cloop_err err = { 0, "" };
  struct trust_key *both[2] = { k->pub1, k->pub2 };
  char *one = NULL, *two = NULL;
  uint64_t rng = 0x2545f4914f6cdd1du;

  if (signature_sign (index_bytes, sizeof index_bytes, k->priv1, NULL, 0,
                      &one, &err) == -1 ||
      signature_sign (index_bytes, sizeof index_bytes, k->priv2, one,
                      strlen (one), &two, &err) == -1) {
    CHECK (!"signing");
    return;
  }
  size_t len = strlen (two);
  for (int round = 0; round < 1000; round++) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    size_t new_len = round % 4 == 3 ? rng % len : len;
    char *t = malloc (new_len ? new_len : 1);   /* exact size, no NUL */
    memcpy (t, two, new_len);
    if (round % 4 != 3)
      t[(rng >> 16) % len] = (char) (rng >> 40);
    struct cloop_err e = { 0, "" };
    int r = signature_verify (index_bytes, sizeof index_bytes, t, new_len,
                              both, 2, NULL, &e);
    CHECK (r == 0 || (r == -1 && (e.errnum == EINVAL || e.errnum == EACCES)));
    free (t);
  }
  free (one);
  free (two);
}

/* Keys of other types are refused with a clear message. */
static void
test_other_key_types (void)
{
  struct cloop_err err = { 0, "" };

  if (run ("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
           "-out %s 2>/dev/null && openssl pkey -in %s -pubout -out %s",
           in_dir ("rsa.pem"), in_dir ("rsa.pem"), in_dir ("rsa.pub")) != 0 ||
      run ("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           "-out %s && openssl pkey -in %s -pubout -out %s",
           in_dir ("ec.pem"), in_dir ("ec.pem"), in_dir ("ec.pub")) != 0) {
    fprintf (stderr, "  FAIL: cannot make RSA/EC keys with openssl\n");
    check_failures++;
    return;
  }
  CHECK (trust_key_load_public (in_dir ("rsa.pub"), &err) == NULL);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "not an Ed25519 key") &&
         strstr (err.msg, "rsa.pub"));
  printf ("  %s\n", err.msg);
  CHECK (trust_key_load_private (in_dir ("rsa.pem"), &err) == NULL);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "not an Ed25519 key"));
  CHECK (trust_key_load_public (in_dir ("ec.pub"), &err) == NULL);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "not an Ed25519 key"));
  printf ("  %s\n", err.msg);
  CHECK (trust_key_load_private (in_dir ("ec.pem"), &err) == NULL);
  CHECK (err.errnum == EINVAL && strstr (err.msg, "not an Ed25519 key"));
}

/* Signatures made by openssl verify here, ours verify with openssl,
 * and key ids agree with an independent computation. */
static void
test_openssl_interop (struct keys *k)
{
  struct cloop_err err = { 0, "" };
  char *ours = NULL, *b64, *id, text[1024], keyid[17];
  struct trust_key *os_pub;

  write_file (in_dir ("index"), index_bytes, sizeof index_bytes);

  /* openssl -> us, with our key and with a key openssl made. */
  CHECK (run ("openssl pkeyutl -sign -rawin -inkey %s -in %s | base64 -w0 "
              "> %s", in_dir ("k1.pem"), in_dir ("index"),
              in_dir ("os.b64")) == 0);
  b64 = read_file (in_dir ("os.b64"));
  snprintf (text, sizeof text, "%s\ned25519 %s %s\n", SIGNATURE_HEADER,
            k->id1, b64);
  CHECK (verify (text, &k->pub1, 1, keyid) == 0 &&
         strcmp (keyid, k->id1) == 0);
  free (b64);

  CHECK (run ("openssl genpkey -algorithm ed25519 -out %s && "
              "openssl pkey -in %s -pubout -out %s",
              in_dir ("os.pem"), in_dir ("os.pem"), in_dir ("os.pub")) == 0);
  os_pub = trust_key_load_public (in_dir ("os.pub"), &err);
  CHECK (os_pub != NULL);
  if (os_pub == NULL)
    return;
  /* Key id: SHA-256 of the last 32 bytes of the DER SubjectPublicKeyInfo. */
  CHECK (run ("openssl pkey -pubin -in %s -outform DER | tail -c 32 | "
              "sha256sum | cut -c1-16 | tr -d '\\n' > %s",
              in_dir ("os.pub"), in_dir ("os.id")) == 0);
  id = read_file (in_dir ("os.id"));
  trust_key_id (os_pub, keyid);
  CHECK (strcmp (id, keyid) == 0);
  CHECK (run ("openssl pkeyutl -sign -rawin -inkey %s -in %s | base64 -w0 "
              "> %s", in_dir ("os.pem"), in_dir ("index"),
              in_dir ("os2.b64")) == 0);
  b64 = read_file (in_dir ("os2.b64"));
  snprintf (text, sizeof text, "%s\ned25519 %s %s\n", SIGNATURE_HEADER,
            id, b64);
  CHECK (verify (text, &os_pub, 1, NULL) == 0);
  free (b64);
  free (id);
  trust_key_free (os_pub);

  /* us -> openssl. */
  CHECK (signature_sign (index_bytes, sizeof index_bytes, k->priv2,
                         NULL, 0, &ours, &err) == 0);
  if (ours == NULL)
    return;
  snprintf (text, sizeof text, "%.88s\n",
            ours + strlen (SIGNATURE_HEADER) + 1 + 25);
  write_file (in_dir ("ours.b64"), text, strlen (text));
  CHECK (run ("base64 -d < %s > %s", in_dir ("ours.b64"),
              in_dir ("ours.bin")) == 0);
  CHECK (run ("openssl pkeyutl -verify -rawin -pubin -inkey %s -sigfile %s "
              "-in %s >/dev/null", in_dir ("k2.pub"), in_dir ("ours.bin"),
              in_dir ("index")) == 0);
  /* And openssl does notice a wrong index (the check means something). */
  write_file (in_dir ("index.bad"), "x", 1);
  CHECK (run ("openssl pkeyutl -verify -rawin -pubin -inkey %s -sigfile %s "
              "-in %s >/dev/null 2>&1", in_dir ("k2.pub"), in_dir ("ours.bin"),
              in_dir ("index.bad")) != 0);
  free (ours);
}

int
main (void)
{
  struct keys k;
  bool have_openssl = access ("/usr/bin/openssl", X_OK) == 0;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    return 1;
  }
  test_keygen (&k);
  test_sign_verify (&k);
  test_malformed (&k);
  test_mutations (&k);
  if (have_openssl) {
    test_other_key_types ();
    test_openssl_interop (&k);
  }
  else
    printf ("  openssl not found: interop tests skipped\n");
  trust_key_free (k.priv1);
  trust_key_free (k.pub1);
  trust_key_free (k.priv2);
  trust_key_free (k.pub2);
  trust_key_free (k.pub3);
  run ("rm -rf %s", dir);
  if (check_failures) {
    fprintf (stderr, "test-signature: %d failure(s)\n", check_failures);
    return 1;
  }
  printf ("test-signature: ok\n");
  return 0;
}
