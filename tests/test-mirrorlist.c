/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of fetch/mirrorlist.c (mirror lists).
 *
 * Parses a Metalink 4 document modelled on RFC 5854's examples and on
 * what MirrorBrain serves (several <url>s with priorities and
 * locations, <size>, md5 + sha-1 + sha-256 hashes, <pieces>, a
 * <signature>, a torrent <metaurl>, elements of another namespace, an
 * ftp:// mirror, a repeated URL, a second <file>), in UTF-8, with a
 * byte-order mark and in UTF-16; then plain lists (comments, blank
 * lines, CRLF, a BOM, ftp:// skipped, repeats).  Every refusal (too
 * large, too many URLs, a long URL, absurd sizes, bad hashes,
 * priorities and locations, XML that is not well-formed, a wrong root
 * or namespace, no <file>, no usable URL, a DOCTYPE) must be EINVAL
 * with a message naming the file and the fault (and the line), leave
 * the list empty, and print nothing on stderr.  Billion-laughs and
 * external-entity documents are refused without expanding anything or
 * touching the network (a listening socket on 127.0.0.1 they name is
 * never connected to) or the file system.  Exit status 0 = pass.
 */
#include <config.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mirrorlist.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

#define NAME "mirrors.meta4"

static const char sha256_hex[] =
  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/* Modelled on RFC 5854 section 1.1 and on download.opensuse.org's
 * MirrorBrain metalinks. */
static const char example[] =
  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
  "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\"\n"
  "          xmlns:mb=\"http://mirrorbrain.org/xml\">\n"
  "  <generator>MirrorBrain/2.19.0</generator>\n"
  "  <origin dynamic=\"true\">https://download.example.org/KNOPPIX.meta4"
  "</origin>\n"
  "  <published>2026-12-01T10:00:00Z</published>\n"
  "  <publisher><name>Example</name>"
  "<url>https://www.example.org</url></publisher>\n"
  "  <file name=\"KNOPPIX\">\n"
  "    <size>734003200</size>\n"
  "    <mb:note>ignored: another namespace</mb:note>\n"
  "    <hash type=\"md5\">0123456789abcdef0123456789abcdef</hash>\n"
  "    <hash type=\"sha-1\">a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
  "</hash>\n"
  "    <hash type=\"SHA-256\">\n      9F86D081884C7D659A2FEAA0C55AD015"
  "A3BF4F1B2B0B822CD15D6C15B0F00A08\n    </hash>\n"
  "    <pieces length=\"262144\" type=\"sha-256\">\n"
  "      <hash>0000000000000000000000000000000000000000000000000000000000"
  "000000</hash>\n"
  "    </pieces>\n"
  "    <signature mediatype=\"application/pgp-signature\">\n"
  "-----BEGIN PGP SIGNATURE-----\n"
  "iEYEABECAAYFAkxyz0123456789=\n"
  "-----END PGP SIGNATURE-----\n"
  "    </signature>\n"
  "    <description>A live system.</description>\n"
  "    <metaurl mediatype=\"torrent\" priority=\"1\">"
  "https://download.example.org/KNOPPIX.torrent</metaurl>\n"
  "    <url location=\"us\" priority=\"5\">http://mirror-a.example.edu/"
  "KNOPPIX</url>\n"
  "    <url location=\"us\" priority=\"5\">http://mirror-b.example.edu/"
  "KNOPPIX</url>\n"
  "    <url location=\"DE\" priority=\"1\">HTTP://ftp.example.de/pub/"
  "KNOPPIX</url>\n"
  "    <url location=\"jp\" priority=\"2\">ftp://ftp.example.jp/KNOPPIX"
  "</url>\n"                                           /* line 29 */
  "    <url priority=\"3\"><![CDATA[https://cdn.example.net/get?f=KNOPPIX"
  "&v=1]]></url>\n"
  "    <url>https://fallback.example.org/KNOPPIX?a=1&amp;b=2</url>\n"
  "    <url location=\"de\" priority=\"4\">http://ftp.example.de/pub/"
  "KNOPPIX</url>\n"
  "  </file>\n"
  "  <file name=\"KNOPPIX.md5\">\n"
  "    <url>http://other.example.org/KNOPPIX.md5</url>\n"
  "  </file>\n"
  "</metalink>\n";

/* fd 2 goes to a temporary file during a parse, so a test can check
 * that libxml2 printed nothing. */
static int
parse_quiet (const void *buf, size_t len, const char *name, const char *want,
             struct mirror_list *out, struct cloop_err *err)
{
  FILE *tmp = tmpfile ();
  int saved, r;
  struct stat st;

  fflush (stderr);
  saved = dup (2);
  CHECK (tmp != NULL && saved >= 0);
  dup2 (fileno (tmp), 2);
  r = mirrorlist_parse_file (buf, len, name, want, out, err);
  fflush (stderr);
  dup2 (saved, 2);
  close (saved);
  CHECK (fstat (fileno (tmp), &st) == 0);
  if (st.st_size != 0) {
    char text[512] = "";
    rewind (tmp);
    fread (text, 1, sizeof text - 1, tmp);
    fprintf (stderr, "FAIL: stderr written during a parse: %s\n", text);
  }
  CHECK (st.st_size == 0);
  fclose (tmp);
  return r;
}

/* buf must be refused with EINVAL, a message naming NAME, holding
 * fault, and (line > 0) "NAME:line:"; the list stays empty. */
static void
expect_fault_len (const char *what, const void *buf, size_t len,
                  const char *fault, int line)
{
  struct mirror_list l;
  struct cloop_err err = { 0 };
  char at[64];

  memset (&l, 0xa5, sizeof l);
  CHECK (parse_quiet (buf, len, NAME, NULL, &l, &err) == -1);
  CHECK (err.errnum == EINVAL);
  CHECK (strstr (err.msg, NAME) != NULL);
  if (strstr (err.msg, fault) == NULL)
    fprintf (stderr, "FAIL: %s: '%s' lacks '%s'\n", what, err.msg, fault);
  CHECK (strstr (err.msg, fault) != NULL);
  if (line > 0) {
    snprintf (at, sizeof at, NAME ":%d:", line);
    if (strstr (err.msg, at) == NULL)
      fprintf (stderr, "FAIL: %s: '%s' lacks '%s'\n", what, err.msg, at);
    CHECK (strstr (err.msg, at) != NULL);
  }
  CHECK (l.n == 0 && l.mirrors == NULL && l.n_notes == 0 &&
         l.file_name == NULL);
}

static void
expect_fault (const char *doc, const char *fault, int line)
{
  expect_fault_len (doc, doc, strlen (doc), fault, line);
}

/* A metalink of one <file> around body. */
static char *
metalink (const char *body)
{
  char *doc;

  if (asprintf (&doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n"
                "<file name=\"f\">\n%s</file>\n</metalink>\n", body) == -1)
    exit (1);
  return doc;
}

static void
expect_metalink_fault (const char *body, const char *fault, int line)
{
  char *doc = metalink (body);

  expect_fault (doc, fault, line);
  free (doc);
}

static void
test_example (void)
{
  struct mirror_list l;
  struct cloop_err err = { 0 };
  unsigned char want[32];

  for (int i = 0; i < 32; i++)
    sscanf (sha256_hex + 2 * i, "%2hhx", &want[i]);
  CHECK (parse_quiet (example, strlen (example), NAME, NULL, &l, &err) == 0);
  CHECK (l.is_metalink);
  CHECK (l.file_name && strcmp (l.file_name, "KNOPPIX") == 0);
  CHECK (l.have_size && l.size == 734003200);
  CHECK (l.have_sha256 && memcmp (l.sha256, want, 32) == 0);
  /* By priority, equal priorities in document order; the repeated
   * ftp.example.de (priority 4) is gone, its priority-1 entry stays. */
  CHECK (l.n == 5);
  if (l.n == 5) {
    CHECK (strcmp (l.mirrors[0].url, "http://ftp.example.de/pub/KNOPPIX")
           == 0);
    CHECK (l.mirrors[0].priority == 1);
    CHECK (strcmp (l.mirrors[0].location, "de") == 0);
    CHECK (strcmp (l.mirrors[1].url,
                   "https://cdn.example.net/get?f=KNOPPIX&v=1") == 0);
    CHECK (l.mirrors[1].priority == 3 && l.mirrors[1].location[0] == 0);
    CHECK (strcmp (l.mirrors[2].url, "http://mirror-a.example.edu/KNOPPIX")
           == 0);
    CHECK (strcmp (l.mirrors[3].url, "http://mirror-b.example.edu/KNOPPIX")
           == 0);
    CHECK (l.mirrors[2].priority == 5 && l.mirrors[3].priority == 5);
    CHECK (strcmp (l.mirrors[3].location, "us") == 0);
    CHECK (strcmp (l.mirrors[4].url,
                   "https://fallback.example.org/KNOPPIX?a=1&b=2") == 0);
    CHECK (l.mirrors[4].priority == 999999);
  }
  CHECK (l.n_skipped == 1 && l.n_notes == 1);
  CHECK (l.n_notes == 1 && strstr (l.notes[0], NAME ":29: skipped "
                                   "ftp://ftp.example.jp/KNOPPIX") != NULL);
  mirror_list_free (&l);
  CHECK (l.n == 0 && l.mirrors == NULL && l.n_notes == 0);
  mirror_list_free (&l);
  mirror_list_free (NULL);

  /* The second <file> by name; a name that is not there. */
  CHECK (parse_quiet (example, strlen (example), NAME, "KNOPPIX.md5", &l,
                      &err) == 0);
  CHECK (l.n == 1 && strcmp (l.mirrors[0].url,
                             "http://other.example.org/KNOPPIX.md5") == 0);
  CHECK (!l.have_size && !l.have_sha256);
  CHECK (strcmp (l.file_name, "KNOPPIX.md5") == 0);
  mirror_list_free (&l);
  CHECK (parse_quiet (example, strlen (example), NAME, "nope", &l,
                      &err) == -1);
  CHECK (err.errnum == EINVAL && strstr (err.msg, NAME ": no <file "
                                         "name=\"nope\">") != NULL);
}

/* The example with a UTF-8 byte-order mark, and in UTF-16LE. */
static void
test_encodings (void)
{
  size_t n = strlen (example);
  char *bom = malloc (n + 3), *u16 = malloc (2 * n + 2);
  const char *decl = "encoding=\"UTF-8\"";
  struct mirror_list l;
  struct cloop_err err = { 0 };
  size_t j = 2;

  memcpy (bom, "\xef\xbb\xbf", 3);
  memcpy (bom + 3, example, n);
  CHECK (parse_quiet (bom, n + 3, NAME, NULL, &l, &err) == 0);
  CHECK (l.n == 5 && l.have_sha256);
  mirror_list_free (&l);

  u16[0] = (char) 0xff, u16[1] = (char) 0xfe;
  for (size_t i = 0; i < n; i++) {
    if (strncmp (example + i, decl, strlen (decl)) == 0) {
      /* "UTF-8" -> "UTF16" (same length) */
      const char *r = "encoding=\"UTF16\"";
      for (size_t k = 0; k < strlen (r); k++)
        u16[j++] = r[k], u16[j++] = 0;
      i += strlen (decl) - 1;
      continue;
    }
    u16[j++] = example[i], u16[j++] = 0;
  }
  CHECK (parse_quiet (u16, j, NAME, NULL, &l, &err) == 0);
  CHECK (l.n == 5 && l.have_size && l.size == 734003200);
  mirror_list_free (&l);
  free (bom);
  free (u16);
}

static void
test_plain (void)
{
  static const char list[] =
    "\xef\xbb\xbf# mirrors of KNOPPIX\r\n"
    "\r\n"
    "  https://a.example.org/KNOPPIX  \r\n"
    "http://b.example.org/KNOPPIX\r\n"
    "   # an indented comment\r\n"
    "ftp://c.example.org/KNOPPIX\r\n"
    "\tHTTPS://a.example.org/KNOPPIX\r\n"       /* a repeat after case */
    "https://d.example.org/x#frag";             /* no final newline */
  struct mirror_list l;
  struct cloop_err err = { 0 };

  CHECK (parse_quiet (list, strlen (list), "list.txt", NULL, &l, &err) == 0);
  CHECK (!l.is_metalink && l.file_name == NULL && !l.have_size &&
         !l.have_sha256);
  CHECK (l.n == 3);
  if (l.n == 3) {
    CHECK (strcmp (l.mirrors[0].url, "https://a.example.org/KNOPPIX") == 0);
    CHECK (strcmp (l.mirrors[1].url, "http://b.example.org/KNOPPIX") == 0);
    CHECK (strcmp (l.mirrors[2].url, "https://d.example.org/x#frag") == 0);
    CHECK (l.mirrors[0].priority < l.mirrors[1].priority &&
           l.mirrors[1].priority < l.mirrors[2].priority);
  }
  CHECK (l.n_skipped == 1 && l.n_notes == 1 &&
         strstr (l.notes[0], "list.txt:6: skipped ftp://c.example.org/") !=
         NULL);
  mirror_list_free (&l);

  /* Exactly the limit is fine, in both formats. */
  char *big = NULL, *body = NULL;
  size_t blen = 0, bodylen = 0;
  FILE *fp = open_memstream (&big, &blen), *fb = open_memstream (&body,
                                                                 &bodylen);
  for (int i = 0; i < MIRRORLIST_MAX_MIRRORS; i++) {
    fprintf (fp, "http://m%d.example.org/f\n", i);
    fprintf (fb, "<url priority=\"%d\">http://m%d.example.org/f</url>\n",
             1000 - i, i);
  }
  fclose (fp);
  fclose (fb);
  CHECK (parse_quiet (big, blen, NAME, NULL, &l, &err) == 0);
  CHECK (l.n == MIRRORLIST_MAX_MIRRORS);
  mirror_list_free (&l);
  char *doc = metalink (body);
  CHECK (parse_quiet (doc, strlen (doc), NAME, NULL, &l, &err) == 0);
  CHECK (l.n == MIRRORLIST_MAX_MIRRORS &&
         strcmp (l.mirrors[0].url, "http://m255.example.org/f") == 0);
  mirror_list_free (&l);
  free (doc);

  /* One more is refused. */
  big = realloc (big, blen + 64);
  strcpy (big + blen, "https://one-too-many.example.org/f\n");
  expect_fault (big, "more than 256 mirrors", 257);
  body = realloc (body, bodylen + 64);
  strcpy (body + bodylen, "<url>https://one-too-many.example.org/f</url>\n");
  expect_metalink_fault (body, "more than 256 mirrors", 3 + 257);
  free (big);
  free (body);
}

static void
test_plain_faults (void)
{
  char *s;

  expect_fault ("http://a.example.org/\nmirror.example.org/x\n",
                "'mirror.example.org/x' is not a URL", 2);
  expect_fault ("http://a.example.org/ priority=1\n", "blank or control", 1);
  expect_fault ("http:///path\n", "has no host", 1);
  expect_fault ("https://\n", "has no host", 1);
  expect_fault ("# only a comment\n\n", "no mirror URL", 0);
  expect_fault ("ftp://a.example.org/x\nrsync://b.example.org/x\n",
                "no http:// or https:// URL (2 skipped; the first: "
                NAME ":1: skipped ftp://a.example.org/x", 0);
  expect_fault_len ("NUL", "http://a.example.org/\0x\n", 24, "a NUL byte", 0);
  expect_fault_len ("empty", "", 0, "an empty mirror list", 0);

  s = malloc (MIRRORLIST_MAX_URL + 64);
  strcpy (s, "# long\nhttp://a.example.org/");
  memset (s + strlen (s), 'x', MIRRORLIST_MAX_URL);
  strcat (s, "\n");
  expect_fault (s, "longer than the limit of 8192", 2);
  free (s);

  s = calloc (1, MIRRORLIST_MAX_BYTES + 1);
  memset (s, '#', MIRRORLIST_MAX_BYTES + 1);
  expect_fault_len ("huge", s, MIRRORLIST_MAX_BYTES + 1,
                    "larger than the limit of 16777216", 0);
  free (s);
}

static void
test_metalink_faults (void)
{
  char *s, *u;

  /* Lines: 1 <?xml, 2 <metalink, 3 <file, 4 the body's first line. */
  expect_metalink_fault ("<size>0</size><url>http://a/</url>\n",
                         "<size>0</size>: an empty file", 4);
  expect_metalink_fault ("<size>1125899906842625</size>\n",
                         "larger than 2^50 bytes", 4);
  expect_metalink_fault ("<url>http://a/</url>\n"
                         "<size>99999999999999999999999</size>\n",
                         "not a decimal number", 5);
  expect_metalink_fault ("<size>12ab</size>\n", "not a decimal number", 4);
  expect_metalink_fault ("<size>-1</size>\n", "not a decimal number", 4);
  expect_metalink_fault ("<size>1</size>\n<size>1</size>\n",
                         "a second <size>", 5);
  expect_metalink_fault ("<hash type=\"sha-256\">9f86d0</hash>\n",
                         "not 64 hexadecimal digits", 4);
  s = metalink ("<hash type=\"sha-256\">"
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f0"
                "0a0g</hash>\n");
  expect_fault (s, "not 64 hexadecimal digits", 4);
  free (s);
  expect_metalink_fault ("<url>http://a/</url>\n"
                         "<hash type=\"sha-256\">"
                         "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd1"
                         "5d6c15b0f00a08</hash>\n<hash type=\"sha-256\">"
                         "0f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd1"
                         "5d6c15b0f00a08</hash>\n",
                         "a second, different sha-256", 6);
  expect_metalink_fault ("<url priority=\"0\">http://a/</url>\n",
                         "priority=\"0\"", 4);
  expect_metalink_fault ("<url priority=\"1000000\">http://a/</url>\n",
                         "not a number from 1 to 999999", 4);
  expect_metalink_fault ("<url priority=\"high\">http://a/</url>\n",
                         "not a number from 1 to 999999", 4);
  expect_metalink_fault ("<url location=\"xyz\">http://a/</url>\n",
                         "location=\"xyz\"", 4);
  expect_metalink_fault ("<url>http://a/ b</url>\n", "blank or control", 4);
  expect_metalink_fault ("<url>ftp://a.example.org/f</url>\n"
                         "<url>magnet:?xt=urn:sha1:X</url>\n",
                         "no http:// or https:// URL (2 skipped", 0);
  expect_metalink_fault ("<size>10</size>\n", "no mirror URL", 0);

  u = malloc (MIRRORLIST_MAX_URL + 64);
  strcpy (u, "<url>https://a.example.org/");
  memset (u + strlen (u), 'y', MIRRORLIST_MAX_URL);
  strcat (u, "</url>\n");
  expect_metalink_fault (u, "longer than the limit of 8192", 4);
  free (u);

  /* Not well-formed: the line libxml2 gives. */
  expect_fault ("<?xml version=\"1.0\"?>\n"
                "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n"
                "<file name=\"f\">\n<url>http://a/\n</file>\n</metalink>\n",
                "not well-formed XML", 5);
  expect_fault ("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n"
                "<file name=\"f\"><url>http://a/</url></file>\n",
                "not well-formed XML", 0);
  expect_fault ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"
                "<file name=\"\xff\xfe\"/></metalink>\n",
                "not well-formed XML", 2);
  expect_fault ("<?xml version=\"1.0\" encoding=\"x-no-such-code\"?>\n"
                "<metalink/>\n", "not well-formed XML", 0);
  expect_fault ("<", "not well-formed XML", 0);

  /* Wrong root or namespace; no <file>. */
  expect_fault ("<?xml version=\"1.0\"?>\n<feed xmlns=\"urn:ietf:params:xml:"
                "ns:metalink\"/>\n", "the root element is <feed>", 2);
  expect_fault ("<metalink><file name=\"f\"><url>http://a/</url></file>"
                "</metalink>", "not in the namespace urn:ietf:params:xml:"
                "ns:metalink", 1);
  expect_fault ("<metalink xmlns=\"urn:example:other\"/>",
                "not in the namespace", 1);
  expect_fault ("<metalink version=\"3.0\" xmlns=\"http://www.metalinker.org/"
                "\"><files/></metalink>", "a Metalink 3 document", 1);
  expect_fault ("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n"
                "<generator>x</generator>\n</metalink>",
                "no <file> in the metalink", 0);
  expect_fault ("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n"
                "<x:file xmlns:x=\"urn:other\" name=\"f\"><url>http://a/"
                "</url></x:file>\n</metalink>",
                "no <file> in the metalink", 0);
}

/* A listening socket on 127.0.0.1; its port in *port. */
static int
listener (int *port)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  CHECK (fd >= 0);
  CHECK (bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0);
  CHECK (listen (fd, 8) == 0);
  CHECK (getsockname (fd, (struct sockaddr *) &sa, &len) == 0);
  *port = ntohs (sa.sin_port);
  return fd;
}

static void
test_entities (void)
{
  static const char laughs[] =
    "<?xml version=\"1.0\"?>\n"
    "<!DOCTYPE metalink [\n"
    " <!ENTITY lol \"lol\">\n"
    " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
    " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;"
    "&lol1;\">\n"
    " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"
    "&lol2;\">\n"
    " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;"
    "&lol3;\">\n"
    " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"
    "&lol4;\">\n"
    " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;"
    "&lol5;\">\n"
    " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"
    "&lol6;\">\n"
    " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;"
    "&lol7;\">\n"
    " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;"
    "&lol8;\">\n"
    "]>\n"
    "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\"><file name=\"f\">"
    "<description>&lol9;</description><url>http://a/</url></file>"
    "</metalink>\n";
  char secret[] = "/tmp/test-mirrorlist-secret.XXXXXX";
  char *doc;
  int fd, port, secret_fd;
  time_t t0 = time (NULL);

  expect_fault (laughs, "a DOCTYPE is not allowed", 2);
  /* Generous: an expanding parser would take minutes or run out of
   * memory; this one stops at the DOCTYPE. */
  CHECK (time (NULL) - t0 < 60);

  /* External entities and DTDs on a loopback port nobody may connect
   * to, and a local file whose contents must not show up. */
  fd = listener (&port);
  secret_fd = mkstemp (secret);
  CHECK (secret_fd >= 0);
  CHECK (write (secret_fd, "http://secret.example/", 22) == 22);
  close (secret_fd);
  if (asprintf (&doc, "<?xml version=\"1.0\"?>\n"
                "<!DOCTYPE metalink [\n"
                " <!ENTITY net SYSTEM \"http://127.0.0.1:%d/e.xml\">\n"
                " <!ENTITY file SYSTEM \"file://%s\">\n"
                " <!ENTITY %% pe SYSTEM \"http://127.0.0.1:%d/pe.dtd\">\n"
                " %%pe;\n"
                "]>\n"
                "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"
                "<file name=\"f\"><url>&file;</url><url>&net;</url></file>"
                "</metalink>\n", port, secret, port) == -1)
    exit (1);
  expect_fault (doc, "a DOCTYPE is not allowed", 2);
  free (doc);
  if (asprintf (&doc, "<?xml version=\"1.0\"?>\n"
                "<!DOCTYPE metalink SYSTEM \"http://127.0.0.1:%d/m.dtd\">\n"
                "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"
                "<file name=\"f\"><url>http://a/</url></file></metalink>\n",
                port) == -1)
    exit (1);
  expect_fault (doc, "a DOCTYPE is not allowed", 2);
  free (doc);
  /* A DOCTYPE with nothing in it is refused as well. */
  expect_fault ("<!DOCTYPE metalink><metalink xmlns=\"urn:ietf:params:xml:"
                "ns:metalink\"><file name=\"f\"><url>http://a/</url></file>"
                "</metalink>", "a DOCTYPE is not allowed", 1);
  CHECK (accept (fd, NULL, NULL) == -1 && errno == EAGAIN);
  close (fd);
  unlink (secret);
}

int
main (void)
{
  mirrorlist_global_init ();
  test_example ();
  test_encodings ();
  test_plain ();
  test_plain_faults ();
  test_metalink_faults ();
  test_entities ();
  if (check_failures) {
    fprintf (stderr, "test-mirrorlist: %d checks failed\n", check_failures);
    return 1;
  }
  printf ("test-mirrorlist: ok\n");
  return 0;
}
