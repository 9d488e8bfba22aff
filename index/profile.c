/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: boot profiles (see profile.h and docs/FORMAT.md).
 *
 * Both forms have exactly one encoding: the text parser accepts only
 * what profile_record_format writes (strict decimal numbers, single
 * spaces), and the binary decoder only canonical varints, so a parsed
 * profile writes back byte for byte.
 */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"
#include "byteorder.h"
#include "profile.h"

/* ------------------------------------------------------------------ */
/* Shared checks. */

/* Check an image's geometry as a profile records it.  what names the
 * input for the message.  0, or -1 with err set. */
static int
check_image (uint64_t num_blocks, uint32_t block_size, const char *what,
             struct cloop_err *err)
{
  if (num_blocks == 0 || num_blocks > NUM_BLOCKS_MAX)
    return cloop_err_set (err, EINVAL, "%s: image block count %" PRIu64
                          " is not between 1 and %" PRIu64, what,
                          num_blocks, (uint64_t) NUM_BLOCKS_MAX);
  if (block_map_check_geometry (block_size, num_blocks, err) == -1) {
    cloop_err_prefix (err, "%s", what);
    return -1;
  }
  return 0;
}

/* A bitmap of num_blocks bits to find duplicates.  NULL with err. */
static unsigned char *
seen_new (uint64_t num_blocks, struct cloop_err *err)
{
  unsigned char *seen = calloc (num_blocks / 8 + 1, 1);

  if (seen == NULL)
    cloop_err_set (err, ENOMEM, "calloc: %m");
  return seen;
}

/* Mark block b in seen; false if it was already marked. */
static bool
seen_mark (unsigned char *seen, uint32_t b)
{
  unsigned char bit = (unsigned char) (1u << (b % 8));

  if (seen[b / 8] & bit)
    return false;
  seen[b / 8] |= bit;
  return true;
}

/* Check an identity: 1..255 bytes, none below 0x20 nor 0x7f. */
static bool
identity_ok (const char *s, size_t len)
{
  if (len < 1 || len > PROFILE_IDENTITY_MAX)
    return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char) s[i];
    if (c < 0x20 || c == 0x7f)
      return false;
  }
  return true;
}

/* ------------------------------------------------------------------ */
/* Recorded boots (text). */

/* One line being parsed. */
struct line {
  const char *p, *end;          /* unparsed rest of the line */
  const char *file;
  size_t number;                /* 1-based */
};

/* Set err to "FILE:LINE: message". */
static int __attribute__ ((format (printf, 3, 4)))
line_error (const struct line *l, struct cloop_err *err, const char *fmt, ...)
{
  char msg[CLOOP_ERR_LEN];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return cloop_err_set (err, EINVAL, "%s:%zu: %s", l->file, l->number, msg);
}

/* Parse a strict decimal number (no sign, no leading zero unless it is
 * "0") in [0, max] at l->p; then expect sep (' ', or '\0' for the end
 * of the line).  0, or -1 with err naming what. */
static int
line_number (struct line *l, uint64_t max, char sep, const char *what,
             uint64_t *out, struct cloop_err *err)
{
  const char *p = l->p;
  uint64_t v = 0;

  if (p == l->end || *p < '0' || *p > '9')
    return line_error (l, err, "expected %s (a decimal number)", what);
  if (*p == '0' && p + 1 < l->end && p[1] >= '0' && p[1] <= '9')
    return line_error (l, err, "%s has a leading zero", what);
  for (; p < l->end && *p >= '0' && *p <= '9'; p++) {
    uint64_t d = (uint64_t) (*p - '0');
    if (d > max || v > (max - d) / 10)
      return line_error (l, err, "%s is larger than %" PRIu64, what, max);
    v = v * 10 + d;
  }
  if (sep == '\0' ? p != l->end : (p == l->end || *p != sep))
    return line_error (l, err, "after %s: expected %s", what,
                       sep == '\0' ? "the end of the line" : "one space");
  l->p = sep == '\0' ? p : p + 1;
  *out = v;
  return 0;
}

/* Parse "image BLOCKS BLOCK_SIZE IDENTITY" into rec.  0 or -1. */
static int
parse_image_line (struct line *l, struct profile_record *rec,
                  struct cloop_err *err)
{
  uint64_t blocks, bs;

  if ((size_t) (l->end - l->p) < 6 || memcmp (l->p, "image ", 6) != 0)
    return line_error (l, err, "expected 'image BLOCKS BLOCK_SIZE NAME'");
  l->p += 6;
  if (line_number (l, NUM_BLOCKS_MAX, ' ', "the block count", &blocks,
                   err) == -1 ||
      line_number (l, BLOCK_SIZE_MAX, ' ', "the block size", &bs, err) == -1)
    return -1;
  if (!identity_ok (l->p, (size_t) (l->end - l->p)))
    return line_error (l, err, "the image name must be 1 to %d bytes "
                       "without control characters", PROFILE_IDENTITY_MAX);
  if (check_image (blocks, (uint32_t) bs, "image", err) == -1)
    return line_error (l, err, "%s", err->msg);
  memcpy (rec->identity, l->p, (size_t) (l->end - l->p));
  rec->identity[l->end - l->p] = '\0';
  rec->num_blocks = blocks;
  rec->block_size = (uint32_t) bs;
  return 0;
}

/* Parse "BLOCK MS" and append it to rec (capacity checked by the
 * caller).  0 or -1. */
static int
parse_touch_line (struct line *l, struct profile_record *rec,
                  unsigned char *seen, struct cloop_err *err)
{
  uint64_t block, ms;

  if (line_number (l, rec->num_blocks - 1, ' ', "the block number", &block,
                   err) == -1 ||
      line_number (l, PROFILE_MS_MAX, '\0', "the milliseconds", &ms,
                   err) == -1)
    return -1;
  if (!seen_mark (seen, (uint32_t) block))
    return line_error (l, err, "block %" PRIu64 " is listed twice (a "
                       "recorded boot lists first touches only)", block);
  rec->touches[rec->count].block = (uint32_t) block;
  rec->touches[rec->count].ms = (uint32_t) ms;
  rec->count++;
  return 0;
}

/* Find the next line at *pos of b[0..len): fills l (without the
 * newline) and advances *pos.  0, or -1 for a CR or NUL byte. */
static int
next_line (const char *b, size_t len, size_t *pos, struct line *l,
           struct cloop_err *err)
{
  const char *start = b + *pos, *nl = memchr (start, '\n', len - *pos);
  const char *end = nl ? nl : b + len;

  l->number++;
  l->p = start;
  l->end = end;
  if (memchr (start, '\r', (size_t) (end - start)) != NULL)
    return line_error (l, err, "carriage return (CRLF files are not "
                       "accepted)");
  if (memchr (start, '\0', (size_t) (end - start)) != NULL)
    return line_error (l, err, "NUL byte");
  *pos = nl ? (size_t) (nl - b) + 1 : len;
  return 0;
}

/* Parse the header lines into rec and allocate its touches.  0, -1. */
static int
parse_record_head (const char *b, size_t len, size_t *pos, struct line *l,
                   struct profile_record *rec, unsigned char **seen,
                   struct cloop_err *err)
{
  size_t cap;

  if (next_line (b, len, pos, l, err) == -1)
    return -1;
  if ((size_t) (l->end - l->p) != strlen (PROFILE_RECORD_MAGIC) ||
      memcmp (l->p, PROFILE_RECORD_MAGIC, (size_t) (l->end - l->p)) != 0)
    return line_error (l, err, "not a recorded boot: the first line must "
                       "be '%s'", PROFILE_RECORD_MAGIC);
  if (*pos >= len) {
    l->number++;
    return line_error (l, err, "missing 'image' line");
  }
  if (next_line (b, len, pos, l, err) == -1 ||
      parse_image_line (l, rec, err) == -1)
    return -1;
  cap = rec->num_blocks < PROFILE_ENTRIES_MAX ? rec->num_blocks
                                              : PROFILE_ENTRIES_MAX;
  /* A line is at least 4 bytes ("0 0\n" less the final newline). */
  if (cap > (len - *pos) / 3 + 1)
    cap = (len - *pos) / 3 + 1;
  rec->touches = malloc (cap * sizeof *rec->touches);
  *seen = seen_new (rec->num_blocks, err);
  if (rec->touches == NULL || *seen == NULL)
    return cloop_err_set (err, ENOMEM, "%s: out of memory", l->file);
  return 0;
}

struct profile_record *
profile_record_parse (const void *buf, size_t len, const char *file,
                      struct cloop_err *err)
{
  const char *b = buf;
  struct profile_record *rec;
  struct line l = { .file = file, .number = 0 };
  unsigned char *seen = NULL;
  size_t pos = 0;

  if (len > PROFILE_RECORD_MAX) {
    cloop_err_set (err, EINVAL, "%s: %zu bytes exceeds the limit of %u",
                   file, len, PROFILE_RECORD_MAX);
    return NULL;
  }
  rec = calloc (1, sizeof *rec);
  if (rec == NULL) {
    cloop_err_set (err, ENOMEM, "calloc: %m");
    return NULL;
  }
  if (parse_record_head (b, len, &pos, &l, rec, &seen, err) == -1)
    goto fail;
  while (pos < len) {
    if (next_line (b, len, &pos, &l, err) == -1)
      goto fail;
    if (rec->count >= PROFILE_ENTRIES_MAX) {
      line_error (&l, err, "more than %" PRIu32 " blocks",
                  PROFILE_ENTRIES_MAX);
      goto fail;
    }
    if (parse_touch_line (&l, rec, seen, err) == -1)
      goto fail;
  }
  free (seen);
  return rec;

 fail:
  free (seen);
  profile_record_free (rec);
  return NULL;
}

void
profile_record_free (struct profile_record *rec)
{
  if (rec == NULL)
    return;
  free (rec->touches);
  free (rec);
}

int
profile_record_format (const struct profile_record *rec, char **text,
                       size_t *len, struct cloop_err *err)
{
  size_t cap, off, i;
  unsigned char *seen;
  char *t;

  if (!identity_ok (rec->identity, strnlen (rec->identity,
                                            sizeof rec->identity)))
    return cloop_err_set (err, EINVAL, "recorded boot: bad image name");
  if (check_image (rec->num_blocks, rec->block_size, "recorded boot",
                   err) == -1)
    return -1;
  if (rec->count > PROFILE_ENTRIES_MAX || rec->count > rec->num_blocks)
    return cloop_err_set (err, EINVAL, "recorded boot: %zu blocks is too "
                          "many", rec->count);
  if ((seen = seen_new (rec->num_blocks, err)) == NULL)
    return -1;
  for (i = 0; i < rec->count; i++)
    if (rec->touches[i].block >= rec->num_blocks ||
        rec->touches[i].ms > PROFILE_MS_MAX ||
        !seen_mark (seen, rec->touches[i].block)) {
      free (seen);
      return cloop_err_set (err, EINVAL, "recorded boot: entry %zu "
                            "(block %" PRIu32 ") is out of range or "
                            "repeated", i, rec->touches[i].block);
    }
  free (seen);
  /* Header <= 64 + 255; a line <= 10 + 1 + 10 + 1. */
  cap = 400 + rec->count * 24;
  if ((t = malloc (cap)) == NULL)
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  off = (size_t) snprintf (t, cap, "%s\nimage %" PRIu64 " %" PRIu32 " %s\n",
                           PROFILE_RECORD_MAGIC, rec->num_blocks,
                           rec->block_size, rec->identity);
  for (i = 0; i < rec->count; i++)
    off += (size_t) snprintf (t + off, cap - off, "%" PRIu32 " %" PRIu32 "\n",
                              rec->touches[i].block, rec->touches[i].ms);
  *text = t;
  *len = off;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Merging. */

struct merge_key {
  uint32_t block;
  uint32_t ms;                  /* a touch, then the median */
  uint32_t boots;
};

static int
compare_touch (const void *a, const void *b)
{
  const struct merge_key *x = a, *y = b;

  if (x->block != y->block)
    return x->block < y->block ? -1 : 1;
  return x->ms < y->ms ? -1 : x->ms > y->ms;
}

static int
compare_rank (const void *a, const void *b)
{
  const struct merge_key *x = a, *y = b;

  if (x->boots != y->boots)
    return x->boots > y->boots ? -1 : 1;
  if (x->ms != y->ms)
    return x->ms < y->ms ? -1 : 1;
  return x->block < y->block ? -1 : x->block > y->block;
}

/* Check that every record is of one image; total touches in *total. */
static int
check_mergeable (const struct profile_record *const *recs, size_t n,
                 size_t *total, struct cloop_err *err)
{
  size_t i;

  if (n < 1 || n > PROFILE_RECORDS_MAX)
    return cloop_err_set (err, EINVAL, "profile merge: %zu recorded boots "
                          "(1 to %d allowed)", n, PROFILE_RECORDS_MAX);
  *total = 0;
  for (i = 0; i < n; i++) {
    if (strcmp (recs[i]->identity, recs[0]->identity) != 0 ||
        recs[i]->num_blocks != recs[0]->num_blocks ||
        recs[i]->block_size != recs[0]->block_size)
      return cloop_err_set (err, EINVAL, "profile merge: recorded boot %zu "
                            "is of image '%s' (%" PRIu64 " blocks of %"
                            PRIu32 "), boot 1 of '%s' (%" PRIu64 " of %"
                            PRIu32 ")", i + 1, recs[i]->identity,
                            recs[i]->num_blocks, recs[i]->block_size,
                            recs[0]->identity, recs[0]->num_blocks,
                            recs[0]->block_size);
    *total += recs[i]->count;
  }
  if (*total == 0)
    return cloop_err_set (err, EINVAL, "profile merge: the recorded boots "
                          "touch no blocks");
  return 0;
}

int
profile_merge (const struct profile_record *const *recs, size_t n,
               uint32_t **blocks, size_t *count, struct cloop_err *err)
{
  struct merge_key *all;
  size_t total = 0, i, j, k, out = 0;

  if (check_mergeable (recs, n, &total, err) == -1)
    return -1;
  if ((all = malloc (total * sizeof *all)) == NULL)
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  for (i = 0, k = 0; i < n; i++)
    for (j = 0; j < recs[i]->count; j++, k++)
      all[k] = (struct merge_key) { recs[i]->touches[j].block,
                                    recs[i]->touches[j].ms, 1 };
  qsort (all, total, sizeof *all, compare_touch);
  /* Collapse each run of one block to (block, median, boots). */
  for (i = 0; i < total; i = j) {
    uint64_t lo, hi;
    for (j = i; j < total && all[j].block == all[i].block; j++)
      ;
    lo = all[i + (j - i - 1) / 2].ms;
    hi = all[i + (j - i) / 2].ms;
    all[out++] = (struct merge_key) { all[i].block, (uint32_t) ((lo + hi) / 2),
                                      (uint32_t) (j - i) };
  }
  qsort (all, out, sizeof *all, compare_rank);
  if ((*blocks = malloc (out * sizeof **blocks)) == NULL) {
    free (all);
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  }
  for (i = 0; i < out; i++)
    (*blocks)[i] = all[i].block;
  *count = out;
  free (all);
  return 0;
}

/* ------------------------------------------------------------------ */
/* The binary form. */

#define OFF_VERSION     8
#define OFF_HEADER_LEN  12
#define OFF_NUM_BLOCKS  16
#define OFF_BLOCK_SIZE  24
#define OFF_COUNT       28
#define VARINT_MAX      5               /* bytes; values < 2^35 */

/* Zigzag of a signed delta, and back. */
static uint64_t zigzag (int64_t v) { return v < 0 ? ((uint64_t) -v) * 2 - 1
                                                   : (uint64_t) v * 2; }
static int64_t unzigzag (uint64_t u) { return u & 1 ? -(int64_t) ((u + 1) / 2)
                                                    : (int64_t) (u / 2); }

bool
profile_probe_head (const void *head, size_t len)
{
  return len >= PROFILE_MAGIC_LEN &&
         memcmp (head, PROFILE_MAGIC, PROFILE_MAGIC_LEN) == 0;
}

int
profile_encode (const uint32_t *blocks, size_t count, uint64_t num_blocks,
                uint32_t block_size, unsigned char **buf, size_t *len,
                struct cloop_err *err)
{
  unsigned char *b, *seen;
  int64_t prev = -1;
  size_t off = PROFILE_HEADER_LEN, i;

  if (check_image (num_blocks, block_size, "profile", err) == -1)
    return -1;
  if (count < 1 || count > PROFILE_ENTRIES_MAX || count > num_blocks)
    return cloop_err_set (err, EINVAL, "profile: %zu blocks (1 to %" PRIu64
                          " allowed)", count, num_blocks);
  if ((seen = seen_new (num_blocks, err)) == NULL)
    return -1;
  if ((b = malloc (PROFILE_HEADER_LEN + count * VARINT_MAX)) == NULL) {
    free (seen);
    return cloop_err_set (err, ENOMEM, "malloc: %m");
  }
  for (i = 0; i < count; i++) {
    uint64_t u;
    if (blocks[i] >= num_blocks || !seen_mark (seen, blocks[i])) {
      free (seen);
      free (b);
      return cloop_err_set (err, EINVAL, "profile: entry %zu (block %"
                            PRIu32 ") is out of range or repeated", i,
                            blocks[i]);
    }
    for (u = zigzag ((int64_t) blocks[i] - (prev + 1)); u >= 0x80; u >>= 7)
      b[off++] = (unsigned char) (u | 0x80);
    b[off++] = (unsigned char) u;
    prev = blocks[i];
  }
  free (seen);
  memset (b, 0, PROFILE_HEADER_LEN);
  memcpy (b, PROFILE_MAGIC, PROFILE_MAGIC_LEN);
  store_be32 (b + OFF_VERSION, PROFILE_VERSION);
  store_be32 (b + OFF_HEADER_LEN, PROFILE_HEADER_LEN);
  store_be64 (b + OFF_NUM_BLOCKS, num_blocks);
  store_be32 (b + OFF_BLOCK_SIZE, block_size);
  store_be32 (b + OFF_COUNT, (uint32_t) count);
  *buf = b;
  *len = off;
  return 0;
}

/* Check the header of a binary profile against the image (0 = any).
 * Fills *nb, *bs, *count.  0, or -1 with err set. */
static int
decode_header (const unsigned char *b, size_t len, uint64_t num_blocks,
               uint32_t block_size, uint64_t *nb, uint32_t *bs,
               size_t *count, struct cloop_err *err)
{
  if (len < PROFILE_HEADER_LEN || !profile_probe_head (b, len))
    return cloop_err_set (err, EINVAL, "profile: %s",
                          len < PROFILE_HEADER_LEN ? "truncated header"
                                                   : "bad magic");
  if (load_be32 (b + OFF_VERSION) != PROFILE_VERSION)
    return cloop_err_set (err, EINVAL, "profile: unsupported version %"
                          PRIu32 " (this reader knows %d)",
                          load_be32 (b + OFF_VERSION), PROFILE_VERSION);
  if (load_be32 (b + OFF_HEADER_LEN) != PROFILE_HEADER_LEN)
    return cloop_err_set (err, EINVAL, "profile: header length %" PRIu32
                          ", expected %d", load_be32 (b + OFF_HEADER_LEN),
                          PROFILE_HEADER_LEN);
  *nb = load_be64 (b + OFF_NUM_BLOCKS);
  *bs = load_be32 (b + OFF_BLOCK_SIZE);
  *count = load_be32 (b + OFF_COUNT);
  if (check_image (*nb, *bs, "profile", err) == -1)
    return -1;
  if ((num_blocks != 0 && *nb != num_blocks) ||
      (block_size != 0 && *bs != block_size))
    return cloop_err_set (err, EINVAL, "profile: it is for an image of %"
                          PRIu64 " blocks of %" PRIu32 " bytes, this image "
                          "has %" PRIu64 " of %" PRIu32, *nb, *bs,
                          num_blocks, block_size);
  if (*count < 1 || *count > PROFILE_ENTRIES_MAX || *count > *nb)
    return cloop_err_set (err, EINVAL, "profile: %zu blocks (1 to %" PRIu64
                          " allowed)", *count, *nb);
  /* Each entry takes at least one byte. */
  if (*count > len - PROFILE_HEADER_LEN)
    return cloop_err_set (err, EINVAL, "profile: truncated (%zu blocks in %zu "
                          "bytes)", *count, len - PROFILE_HEADER_LEN);
  return 0;
}

/* Read one canonical varint at b[*off..len).  0, or -1 with err. */
static int
read_varint (const unsigned char *b, size_t len, size_t *off, size_t entry,
             uint64_t *out, struct cloop_err *err)
{
  uint64_t v = 0;
  unsigned shift = 0;
  size_t start = *off;

  for (;;) {
    unsigned char c;
    if (*off >= len)
      return cloop_err_set (err, EINVAL, "profile: truncated in entry %zu",
                            entry);
    if (*off - start >= VARINT_MAX)
      return cloop_err_set (err, EINVAL, "profile: entry %zu: number longer "
                            "than %d bytes", entry, VARINT_MAX);
    c = b[(*off)++];
    v |= (uint64_t) (c & 0x7f) << shift;
    shift += 7;
    if (!(c & 0x80)) {
      if (c == 0 && *off - start > 1)
        return cloop_err_set (err, EINVAL, "profile: entry %zu: number not "
                              "in its shortest form", entry);
      *out = v;
      return 0;
    }
  }
}

int
profile_decode (const void *buf, size_t len, uint64_t num_blocks,
                uint32_t block_size, uint32_t **blocks, size_t *count,
                uint64_t *image_blocks, uint32_t *image_block_size,
                struct cloop_err *err)
{
  const unsigned char *b = buf;
  unsigned char *seen;
  uint32_t *out, bs = 0;
  uint64_t nb = 0, u = 0;
  int64_t prev = -1, v;
  size_t n = 0, i, off = PROFILE_HEADER_LEN;

  if (decode_header (b, len, num_blocks, block_size, &nb, &bs, &n, err) == -1)
    return -1;
  seen = seen_new (nb, err);
  out = malloc (n * sizeof *out);
  if (seen == NULL || out == NULL) {
    free (seen);
    free (out);
    return cloop_err_set (err, ENOMEM, "profile: out of memory");
  }
  for (i = 0; i < n; i++) {
    if (read_varint (b, len, &off, i, &u, err) == -1)
      goto fail;
    v = prev + 1 + unzigzag (u);
    if (v < 0 || (uint64_t) v >= nb) {
      cloop_err_set (err, EINVAL, "profile: entry %zu: block %" PRId64
                     " is outside the image (%" PRIu64 " blocks)", i, v, nb);
      goto fail;
    }
    if (!seen_mark (seen, (uint32_t) v)) {
      cloop_err_set (err, EINVAL, "profile: entry %zu: block %" PRId64
                     " is listed twice", i, v);
      goto fail;
    }
    out[i] = (uint32_t) v;
    prev = v;
  }
  if (off != len) {
    cloop_err_set (err, EINVAL, "profile: %zu trailing bytes", len - off);
    goto fail;
  }
  free (seen);
  *blocks = out;
  *count = n;
  if (image_blocks)
    *image_blocks = nb;
  if (image_block_size)
    *image_block_size = bs;
  return 0;

 fail:
  free (seen);
  free (out);
  return -1;
}
