/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: helpers shared by every subcommand. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

void
tool_error (const char *fmt, ...)
{
  va_list ap;

  fputs ("cloop-store: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

int
tool_usage_error (const char *cmd, const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "cloop-store %s: ", cmd);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nTry 'cloop-store %s --help'.\n", cmd);
  return EXIT_USAGE;
}

int
parse_u64 (const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (s[0] < '0' || s[0] > '9')
    return -1;                  /* no sign, no spaces */
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int
parse_size (const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;
  uint64_t mult = 1;

  if (s[0] < '0' || s[0] > '9')
    return -1;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno != 0 || end == s)
    return -1;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': mult = UINT64_C (1) << 10; end++; break;
  case 'm': case 'M': mult = UINT64_C (1) << 20; end++; break;
  case 'g': case 'G': mult = UINT64_C (1) << 30; end++; break;
  default: return -1;
  }
  if (mult > 1 && (strcmp (end, "iB") == 0 || strcmp (end, "B") == 0))
    end += strlen (end);
  if (*end != '\0' || v > UINT64_MAX / mult)
    return -1;
  *out = v * mult;
  return 0;
}

/* Read exactly up to max+1 bytes of fd into buf; returns bytes read or
 * -1 (errno set). */
static ssize_t
read_fully (int fd, unsigned char *buf, size_t cap)
{
  size_t got = 0;

  while (got < cap) {
    ssize_t r = read (fd, buf + got, cap - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    got += r;
  }
  return got;
}

int
read_whole_file (const char *path, size_t max, unsigned char **buf,
                 size_t *len, struct cloop_err *err)
{
  struct stat st;
  unsigned char *b;
  ssize_t r;
  int fd;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return cloop_err_set (err, errno, "%s: %s", path, strerror (errno));
  if (fstat (fd, &st) == 0 && S_ISDIR (st.st_mode)) {
    close (fd);
    return cloop_err_set (err, EISDIR, "%s: is a directory", path);
  }
  b = malloc (max + 1);
  if (b == NULL) {
    close (fd);
    return cloop_err_set (err, ENOMEM, "%s: out of memory", path);
  }
  r = read_fully (fd, b, max + 1);
  if (r < 0) {
    cloop_err_set (err, errno, "%s: read: %s", path, strerror (errno));
    goto fail;
  }
  if ((size_t) r > max) {
    cloop_err_set (err, EFBIG, "%s: larger than %zu bytes", path, max);
    goto fail;
  }
  close (fd);
  b[r] = '\0';
  *buf = b;
  *len = r;
  return 0;

 fail:
  free (b);
  close (fd);
  return -1;
}

int
loaded_index_open (const char *path, struct loaded_index *li,
                   struct cloop_err *err)
{
  memset (li, 0, sizeof *li);
  if (read_whole_file (path, STORE_INDEX_MAX, &li->bytes, &li->len,
                       err) == -1)
    return -1;
  li->idx = store_index_parse (li->bytes, li->len, err);
  if (li->idx == NULL) {
    cloop_err_prefix (err, "%s: not a valid store index", path);
    free (li->bytes);
    li->bytes = NULL;
    return -1;
  }
  li->path = strdup (path);
  if (li->path == NULL) {
    loaded_index_close (li);
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  return 0;
}

void
loaded_index_close (struct loaded_index *li)
{
  store_index_free (li->idx);
  free (li->bytes);
  free (li->path);
  memset (li, 0, sizeof *li);
}

char *
signature_path (const char *index_path)
{
  char *p;

  if (asprintf (&p, "%s.sig", index_path) == -1)
    return NULL;
  return p;
}

void
format_utc (char out[32], uint64_t t)
{
  time_t tt = (time_t) t;
  struct tm tm;

  if (t > (uint64_t) INT64_MAX || gmtime_r (&tt, &tm) == NULL ||
      strftime (out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf (out, 32, "@%" PRIu64, t);
}

void
format_bytes (char out[32], uint64_t n)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
  double v = n;
  int u = -1;

  while (v >= 1024 && u < 3) {
    v /= 1024;
    u++;
  }
  if (u < 0)
    snprintf (out, 32, "%" PRIu64 " B", n);
  else
    snprintf (out, 32, "%.1f %s", v, units[u]);
}

unsigned
online_cpus (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : n > 256 ? 256 : (unsigned) n;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid
 * (overlong forms, surrogates and values above U+10FFFF included). */
static size_t
utf8_seq_len (const unsigned char *p, size_t avail)
{
  uint32_t cp;
  size_t n, i;

  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) { n = 2; cp = p[0] & 0x1f; }
  else if (p[0] >= 0xe0 && p[0] <= 0xef) { n = 3; cp = p[0] & 0x0f; }
  else if (p[0] >= 0xf0 && p[0] <= 0xf4) { n = 4; cp = p[0] & 0x07; }
  else
    return 0;
  if (avail < n)
    return 0;
  for (i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
    return 0;
  return n;
}

/* Check UTF-8 validity (and control characters if no_controls). */
static const char *
text_problem (const char *s, bool no_controls)
{
  const unsigned char *p = (const unsigned char *) s;
  size_t len = strlen (s), i = 0;

  while (i < len) {
    size_t n = utf8_seq_len (p + i, len - i);
    if (n == 0)
      return "is not valid UTF-8";
    if (no_controls && n == 1 && (p[i] < 0x20 || p[i] == 0x7f))
      return "contains a control character";
    i += n;
  }
  return NULL;
}

const char *
store_name_problem (const char *name)
{
  size_t len = strlen (name);

  if (len == 0)
    return "is empty";
  if (len > STORE_NAME_MAX)
    return "is longer than 255 bytes";
  return text_problem (name, true);
}

const char *
store_description_problem (const char *desc)
{
  if (strlen (desc) > STORE_DESC_MAX)
    return "is longer than 4096 bytes";
  return text_problem (desc, false);
}

int
tool_parse_no_options (const char *cmd, int argc, char **argv,
                       void (*usage) (FILE *))
{
  static const struct option longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  int c;

  while ((c = getopt_long (argc, argv, "+h", longopts, NULL)) != -1) {
    if (c == 'h') {
      usage (stdout);
      return -1;
    }
    return tool_usage_error (cmd, "bad option");
  }
  return 0;
}
