/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of index/iso9660.c on synthetic images.
 *
 * Builds ISO9660 images in memory (sparse: sectors past the metadata
 * read as zeros, so an image can be 9 GiB): a file of three extents
 * (> 4 GiB, the multi-extent flag on all but the last) is found as one
 * window when contiguous and refused when not, or when its last extent
 * is missing; Joliet (UCS-2) and Rock Ridge (SUSP NM) names are found,
 * ISO names case-insensitively without ";1"; listing a directory; then
 * the limits: truncated and short records, a name longer than its
 * record, an absurd directory size, an extent past the end, no
 * descriptor terminator, disagreeing both-endian fields, a directory
 * that contains itself (a loop, bounded by the depth limit), a missing
 * file (ENOENT), a non-ISO; finally random mutations of the metadata
 * sectors, each found or refused cleanly.  And the window source
 * (fetch/window.c) over a local file: reads and a batch shifted, a
 * range past the window's end failed alone, a window past the file
 * refused.  Exit 0 = pass, 1 = fail.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iso9660.h"
#include "source.h"

#define CHECK_COUNT_FAILURES
#include "check.h"

#define SEC ISO9660_SECTOR
#define META 64                         /* sectors held in memory */
#define ROOT 20
#define KDIR 21
#define JROOT 22
#define JKDIR 23
#define DATA 100                        /* first data sector */
#define PIECE 0xFFFFF800u               /* 4 GiB - 2048 */

static unsigned char img[META * SEC];
static uint64_t img_size;

static int
img_pread (void *opaque, void *buf, size_t len, uint64_t offset,
           struct cloop_err *err)
{
  (void) opaque;
  if (offset > img_size || len > img_size - offset)
    return cloop_err_set (err, EIO, "read past the end");
  for (size_t i = 0; i < len; i++)
    ((unsigned char *) buf)[i] =
      offset + i < sizeof img ? img[offset + i] : 0;
  return 0;
}

static const struct byte_reader br = { .size = 0, .pread = img_pread };

static void
both32 (unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++) {
    p[i] = v >> (8 * i);
    p[7 - i] = v >> (8 * i);
  }
}

/* Write a directory record at p; returns its length.  su: system use
 * bytes (sulen). */
static size_t
record (unsigned char *p, uint32_t lba, uint32_t size, unsigned flags,
        const void *id, size_t idlen, const void *su, size_t sulen)
{
  size_t len = 33 + idlen + (idlen % 2 == 0) + sulen;

  len += len & 1;
  memset (p, 0, len);
  p[0] = len;
  both32 (p + 2, lba);
  both32 (p + 10, size);
  p[25] = flags;
  p[28] = 1; p[31] = 1;         /* volume sequence number */
  p[32] = idlen;
  memcpy (p + 33, id, idlen);
  if (sulen)
    memcpy (p + 33 + idlen + (idlen % 2 == 0), su, sulen);
  return len;
}

static void
descriptor (unsigned sector, unsigned type, unsigned root_lba)
{
  unsigned char *d = img + sector * SEC;

  memset (d, 0, SEC);
  d[0] = type;
  memcpy (d + 1, "CD001", 5);
  d[6] = 1;
  if (type == 255)
    return;
  both32 (d + 80, img_size / SEC);
  d[128] = SEC & 0xff; d[129] = SEC >> 8;
  d[130] = SEC >> 8; d[131] = SEC & 0xff;
  if (type == 2)
    memcpy (d + 88, "%/E", 3);
  record (d + 156, root_lba, SEC, 0x02, "\0", 1, NULL, 0);
}

/* Joliet name from ASCII. */
static size_t
ucs2 (unsigned char *out, const char *s)
{
  size_t n = 0;

  for (; *s; s++) {
    out[n++] = 0;
    out[n++] = *s;
  }
  return n;
}

/* The standard image: /KNOPPIX/KNOPPIX.;1 in three contiguous extents
 * (the middle one at lba2; the last one left out unless last), a Joliet tree with /KNOPPIX/knoppix-long,
 * Rock Ridge NM "RockName" on /KNOPPIX/ROCKNAME.;1 if rr. */
static void
build (uint32_t lba2, bool last, bool rr)
{
  unsigned char *p;
  unsigned char j[64];
  static const unsigned char sp[] = { 'S', 'P', 7, 1, 0xbe, 0xef, 0 };
  unsigned char nm[5 + 8] = { 'N', 'M', 13, 1, 0 };

  memcpy (nm + 5, "RockName", 8);
  memset (img, 0, sizeof img);
  img_size = (uint64_t) (DATA + 2 * (PIECE / SEC) + 1) * SEC;
  descriptor (16, 1, ROOT);
  descriptor (17, 2, JROOT);
  descriptor (18, 255, 0);
  p = img + ROOT * SEC;
  p += record (p, ROOT, SEC, 2, "\0", 1, rr ? sp : NULL, rr ? sizeof sp : 0);
  p += record (p, ROOT, SEC, 2, "\1", 1, NULL, 0);
  p += record (p, KDIR, SEC, 2, "KNOPPIX", 7, NULL, 0);
  p = img + KDIR * SEC;
  p += record (p, KDIR, SEC, 2, "\0", 1, NULL, 0);
  p += record (p, ROOT, SEC, 2, "\1", 1, NULL, 0);
  p += record (p, DATA, PIECE, 0x80, "KNOPPIX.;1", 10, NULL, 0);
  p += record (p, lba2, PIECE, 0x80, "KNOPPIX.;1", 10, NULL, 0);
  if (last)
    p += record (p, DATA + 2 * (PIECE / SEC), 1000, 0, "KNOPPIX.;1", 10,
                 NULL, 0);
  p += record (p, DATA, 5, 0, "ROCKNAME.;1", 11, rr ? nm : NULL,
               rr ? sizeof nm : 0);
  p = img + JROOT * SEC;
  p += record (p, JROOT, SEC, 2, "\0", 1, NULL, 0);
  p += record (p, JROOT, SEC, 2, "\1", 1, NULL, 0);
  p += record (p, JKDIR, SEC, 2, j, ucs2 (j, "KNOPPIX"), NULL, 0);
  p = img + JKDIR * SEC;
  p += record (p, JKDIR, SEC, 2, "\0", 1, NULL, 0);
  p += record (p, JROOT, SEC, 2, "\1", 1, NULL, 0);
  p += record (p, DATA + 7, 77, 0, j, ucs2 (j, "knoppix-long;1"), NULL, 0);
}

static struct byte_reader
reader (void)
{
  struct byte_reader r = br;

  r.size = img_size;
  return r;
}

/* find path: expect errnum (0 = found) and, if found, the window. */
static void
expect (const char *path, int errnum, uint64_t offset, uint64_t length,
        const char *msg_part)
{
  struct byte_reader r = reader ();
  struct iso9660_file f = { 0, 0 };
  struct cloop_err err = { 0 };
  int ret = iso9660_find (&r, path, &f, &err);

  if (errnum == 0) {
    CHECK (ret == 0);
    CHECK (f.offset == offset);
    CHECK (f.length == length);
    if (ret != 0)
      fprintf (stderr, "%s: %s\n", path, err.msg);
  }
  else {
    CHECK (ret == -1);
    CHECK (err.errnum == errnum);
    CHECK (msg_part == NULL || strstr (err.msg, msg_part) != NULL);
    if (ret != -1 || err.errnum != errnum ||
        (msg_part && strstr (err.msg, msg_part) == NULL))
      fprintf (stderr, "%s: got %d '%s', want %d '%s'\n", path, err.errnum,
               err.msg, errnum, msg_part ? msg_part : "");
  }
}

static int
count_name (void *opaque, const char *name, struct cloop_err *err)
{
  (void) err;
  (void) name;
  (*(int *) opaque)++;
  return 0;
}

static void
test_good (void)
{
  uint64_t total = 2 * (uint64_t) PIECE + 1000;
  struct byte_reader r;
  bool is_iso;
  struct cloop_err err;
  int n = 0;

  build (DATA + PIECE / SEC, true, false);
  r = reader ();
  CHECK (iso9660_probe (&r, &is_iso, &err) == 0 && is_iso);
  expect ("/KNOPPIX/KNOPPIX", 0, (uint64_t) DATA * SEC, total, NULL);
  expect ("/knoppix/knoppix", 0, (uint64_t) DATA * SEC, total, NULL);
  expect ("//KNOPPIX///KNOPPIX", 0, (uint64_t) DATA * SEC, total, NULL);
  /* No Rock Ridge: Joliet names first. */
  expect ("/KNOPPIX/knoppix-long", 0, (uint64_t) (DATA + 7) * SEC, 77, NULL);
  /* ISO names are found case-insensitively. */
  expect ("/KNOPPIX/RockName", 0, (uint64_t) DATA * SEC, 5, NULL);
  expect ("/KNOPPIX/ROCKNAME", 0, (uint64_t) DATA * SEC, 5, NULL);
  expect ("/KNOPPIX/KNOPPIX2", ENOENT, 0, 0, "no KNOPPIX2");
  expect ("/NOPE/KNOPPIX", ENOENT, 0, 0, "no NOPE");
  expect ("/KNOPPIX", EISDIR, 0, 0, NULL);
  expect ("/KNOPPIX/ROCKNAME/x", ENOTDIR, 0, 0, NULL);
  /* Listing the Joliet tree (it is looked at first). */
  CHECK (iso9660_list (&r, "/KNOPPIX", count_name, &n, &err) == 0);
  CHECK (n == 1);

  build (DATA + PIECE / SEC, true, true);
  expect ("/KNOPPIX/RockName", 0, (uint64_t) DATA * SEC, 5, NULL);
  expect ("/KNOPPIX/rockname", 0, (uint64_t) DATA * SEC, 5, NULL);
  expect ("/KNOPPIX/KNOPPIX", 0, (uint64_t) DATA * SEC, total, NULL);
  n = 0;
  r = reader ();
  CHECK (iso9660_list (&r, "/KNOPPIX", count_name, &n, &err) == 0);
  CHECK (n == 2);               /* KNOPPIX once, RockName */
}

static void
test_multi_extent_faults (void)
{
  build (DATA + PIECE / SEC + 1, true, false);
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "not contiguous");
  build (DATA + PIECE / SEC, false, false);
  /* The next record (ROCKNAME) is not the missing extent. */
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "missing");
  /* The last record of the directory says more follow. */
  build (DATA + PIECE / SEC, true, false);
  memset (img + KDIR * SEC + 34 + 34 + 44 * 3, 0, 46);
  img[KDIR * SEC + 34 + 34 + 44 * 2 + 25] = 0x80;
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "ends inside");
}

static void
test_limits (void)
{
  unsigned char *k = img + KDIR * SEC + 68;     /* first KNOPPIX record */

  build (DATA + PIECE / SEC, true, false);
  img[ROOT * SEC + 68] = 200;   /* record longer than the sector holds? */
  memset (img + ROOT * SEC + 68 + 40, 0, SEC - 68 - 40);
  img[ROOT * SEC + SEC - 100] = 0;
  expect ("/KNOPPIX/KNOPPIX", 0, (uint64_t) DATA * SEC,
          2 * (uint64_t) PIECE + 1000, NULL); /* Joliet tree still */
  build (DATA + PIECE / SEC, true, false);
  k[0] = 10;                    /* shorter than any record */
  img[17 * SEC] = 0;            /* no Joliet */
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "directory record of 10");
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  k[32] = 200;                  /* name longer than its record */
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "with a name of 200");
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  /* A directory of 230 bytes: its last record (44 bytes at 200) would
   * cross its end. */
  both32 (img + ROOT * SEC + 68 + 10, 230);
  expect ("/KNOPPIX/nothere", EINVAL, 0, 0, "44 bytes (30 left in its sector)");
  /* An absurd directory size. */
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  both32 (img + ROOT * SEC + 68 + 10, 0x7ffff000);
  img_size = (uint64_t) 1 << 40;
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "directory of 2147479552 bytes");
  /* An extent past the end of the image. */
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  img_size = (uint64_t) 200 * SEC;
  both32 (img + 16 * SEC + 80, 200);
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "past the end of the image");
  /* Both-endian halves that disagree. */
  build (DATA + PIECE / SEC, true, false);
  img[16 * SEC + 84] ^= 1;
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "descriptor 0 is corrupt");
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  img[KDIR * SEC + 68 + 2] ^= 1;
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "disagree");
  /* No terminator: only boot records. */
  build (DATA + PIECE / SEC, true, false);
  for (unsigned s = 17; s < META; s++)
    descriptor (s, 0, 0);
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "terminator");
  /* No CD001 on a descriptor; no primary descriptor. */
  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC + 1] = 'X';
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "volume descriptor 1 has no");
  build (DATA + PIECE / SEC, true, false);
  img[16 * SEC] = 0;
  img[17 * SEC] = 0;
  expect ("/KNOPPIX/KNOPPIX", EINVAL, 0, 0, "no primary");
}

/* A directory containing itself: a path through it ends at the depth
 * limit, never loops. */
static void
test_loop (void)
{
  char path[200] = "";

  build (DATA + PIECE / SEC, true, false);
  img[17 * SEC] = 0;
  both32 (img + ROOT * SEC + 68 + 2, ROOT);     /* /KNOPPIX is / */
  for (int i = 0; i < 20; i++)
    strcat (path, "/KNOPPIX");
  expect (path, EINVAL, 0, 0, "too deep");
  expect ("/KNOPPIX/KNOPPIX/KNOPPIX", EISDIR, 0, 0, NULL);
}

static void
test_not_iso (void)
{
  struct byte_reader r;
  bool is_iso = true;
  struct cloop_err err;

  memset (img, 0, sizeof img);
  img_size = sizeof img;
  r = reader ();
  CHECK (iso9660_probe (&r, &is_iso, &err) == 0 && !is_iso);
  img_size = 1000;
  r = reader ();
  CHECK (iso9660_probe (&r, &is_iso, &err) == 0 && !is_iso);
}

/* Random bytes changed in the metadata: found or refused, no crash. */
static void
test_mutations (void)
{
  unsigned seed = 1;
  unsigned found = 0, refused = 0;

  for (int round = 0; round < 3000; round++) {
    struct byte_reader r;
    struct iso9660_file f;
    struct cloop_err err = { 0 };
    int n = 0;

    build (DATA + PIECE / SEC, true, round % 2);
    for (int k = 0; k < 1 + round % 5; k++) {
      seed = seed * 1103515245 + 12345;
      unsigned sector = 16 + (seed >> 8) % 8;
      seed = seed * 1103515245 + 12345;
      img[sector * SEC + (seed >> 8) % 256] = seed >> 24;
    }
    r = reader ();
    if (iso9660_find (&r, "/KNOPPIX/KNOPPIX", &f, &err) == 0) {
      CHECK (f.offset <= img_size && f.length <= img_size - f.offset);
      found++;
    }
    else {
      CHECK (err.errnum != 0 && err.msg[0] != '\0');
      if (err.errnum == 0)
        fprintf (stderr, "round %d: no error set\n", round);
      refused++;
    }
    iso9660_list (&r, "/KNOPPIX", count_name, &n, &err);
    CHECK (n <= ISO9660_LIST_MAX);
  }
  printf ("mutations: %u found, %u refused\n", found, refused);
  CHECK (found > 0 && refused > 0);
}

static void
test_window (void)
{
  char path[] = "/tmp/test-iso9660.XXXXXX";
  int fd = mkstemp (path);
  unsigned char data[8192], a[100], b[300], c[10];
  struct cloop_err err = { 0 };
  struct source *src, *win;

  CHECK (fd >= 0);
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = i * 7 + (i >> 8);
  CHECK (write (fd, data, sizeof data) == (ssize_t) sizeof data);
  close (fd);
  src = source_open_file (path, &err);
  CHECK (src != NULL);
  win = source_open_window (src, 1000, 5000, "win", &err);
  CHECK (win != NULL && source_size (win) == 5000);
  CHECK (source_base (win) == src);
  CHECK (source_pread (win, a, sizeof a, 0, &err) == 0);
  CHECK (memcmp (a, data + 1000, sizeof a) == 0);
  CHECK (source_pread (win, c, 10, 4991, &err) == -1 && err.errnum == EIO);
  struct source_range r[3] = {
    { .offset = 4900, .length = sizeof a, .buf = a },
    { .offset = 4995, .length = sizeof c, .buf = c },   /* past the end */
    { .offset = 10, .length = sizeof b, .buf = b },
  };
  memset (a, 0, sizeof a);
  CHECK (source_pread_many (win, r, 3, &err) == -1);
  CHECK (r[0].status == 0 && r[1].status == EIO && r[2].status == 0);
  CHECK (memcmp (a, data + 5900, sizeof a) == 0);
  CHECK (memcmp (b, data + 1010, sizeof b) == 0);
  source_close (win);           /* closes src too */
  src = source_open_file (path, &err);
  CHECK (src != NULL);
  CHECK (source_open_window (src, 8000, 193, "win", &err) == NULL &&
         err.errnum == EINVAL);        /* and src was closed */
  unlink (path);
}

int
main (void)
{
  test_window ();
  test_good ();
  test_multi_extent_faults ();
  test_limits ();
  test_loop ();
  test_not_iso ();
  test_mutations ();
  if (check_failures)
    return 1;
  printf ("test-iso9660: ok\n");
  return 0;
}
