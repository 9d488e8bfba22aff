/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: files inside an ISO9660 image (see iso9660.h). */
#include <config.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iso9660.h"

#define DESC_START 16           /* first volume descriptor (sector) */
#define DESC_BATCH 8            /* descriptors read at once */
#define RECORD_MIN 34           /* a directory record with a 1-byte name */

/* One directory tree: the primary one (ISO or Rock Ridge names) or
 * the Joliet one. */
struct tree {
  uint64_t root_offset;
  uint32_t root_size;
  bool joliet;
  bool rock_ridge;
  unsigned susp_skip;           /* SP's skip length */
};

struct volume {
  const struct byte_reader *br;
  struct tree trees[2];         /* in the order names are looked up */
  unsigned ntrees;
};

/* One directory record, decoded. */
struct record {
  uint64_t offset;              /* of its data in the image */
  uint32_t size;
  bool dir, more;               /* more: multi-extent, not the last */
  char name[ISO9660_NAME_MAX + 1];
};

static uint32_t
le32 (const unsigned char *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24;
}

static uint32_t
be32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

/* A both-endian 32-bit field (LE then BE); -1 if the halves differ. */
static int
both32 (const unsigned char *p, uint32_t *v)
{
  *v = le32 (p);
  return *v == be32 (p + 4) ? 0 : -1;
}

int
iso9660_probe (const struct byte_reader *br, bool *is_iso,
               struct cloop_err *err)
{
  unsigned char m[5];

  *is_iso = false;
  if (br->size < (DESC_START + 1) * ISO9660_SECTOR)
    return 0;
  if (br->pread (br->opaque, m, 5, ISO9660_MAGIC_OFFSET, err) == -1)
    return -1;
  *is_iso = memcmp (m, "CD001", 5) == 0;
  return 0;
}

/* Append a UTF-8 encoding of code point c to out (n bytes used of
 * ISO9660_NAME_MAX).  -1 if it does not fit. */
static int
put_utf8 (char *out, size_t *n, unsigned c)
{
  unsigned char u[3];
  size_t k;

  if (c < 0x80)
    u[0] = c, k = 1;
  else if (c < 0x800)
    u[0] = 0xc0 | c >> 6, u[1] = 0x80 | (c & 0x3f), k = 2;
  else
    u[0] = 0xe0 | c >> 12, u[1] = 0x80 | (c >> 6 & 0x3f),
      u[2] = 0x80 | (c & 0x3f), k = 3;
  if (*n + k > ISO9660_NAME_MAX)
    return -1;
  memcpy (out + *n, u, k);
  *n += k;
  return 0;
}

/* A file identifier without its ";version" and a trailing '.'. */
static void
strip_version (char *name)
{
  char *semi = strchr (name, ';');
  size_t n;

  if (semi)
    *semi = '\0';
  n = strlen (name);
  if (n > 1 && name[n - 1] == '.')
    name[n - 1] = '\0';
}

/* The Rock Ridge NM name in a record's system use area, if any.
 * Entries are bounded by the area; a malformed entry ends the scan. */
static bool
rock_ridge_name (const unsigned char *su, size_t len, char *out)
{
  size_t i = 0, n = 0;
  bool found = false;

  while (i + 4 <= len) {
    unsigned elen = su[i + 2];
    if (elen < 4 || elen > len - i)
      break;
    if (memcmp (su + i, "NM", 2) == 0 && elen >= 5 &&
        (su[i + 4] & 0x06) == 0) {
      size_t piece = elen - 5;
      if (n + piece > ISO9660_NAME_MAX)
        return false;
      memcpy (out + n, su + i + 5, piece);
      n += piece;
      found = true;
      if ((su[i + 4] & 0x01) == 0)
        break;
    }
    if (memcmp (su + i, "ST", 2) == 0)
      break;
    i += elen;
  }
  out[n] = '\0';
  return found && n > 0 && memchr (out, '\0', n) == NULL &&
    memchr (out, '/', n) == NULL;
}

/* The name of a record (id: its file identifier, idlen bytes; su: its
 * system use area). */
static void
record_name (const struct tree *t, const unsigned char *id, size_t idlen,
             const unsigned char *su, size_t sulen, char *out)
{
  size_t n = 0;

  if (t->rock_ridge && sulen > t->susp_skip &&
      rock_ridge_name (su + t->susp_skip, sulen - t->susp_skip, out))
    return;
  if (t->joliet) {
    for (size_t i = 0; i + 1 < idlen; i += 2) {
      unsigned c = id[i] << 8 | id[i + 1];
      if (c == 0 || c == '/' || (c >= 0xd800 && c < 0xe000))
        c = '_';
      if (put_utf8 (out, &n, c) == -1)
        break;
    }
    out[n] = '\0';
  }
  else {
    for (size_t i = 0; i < idlen; i++)
      out[n++] = id[i] == 0 || id[i] == '/' ? '_' : id[i];
    out[n] = '\0';
  }
  strip_version (out);
}

/* Decode the record at d[0..avail) of tree t.  Returns its length, 0
 * for the padding at the end of a sector, or -1 with err set. */
static int
parse_record (const struct volume *v, const struct tree *t,
              const unsigned char *d, size_t avail, struct record *r,
              struct cloop_err *err)
{
  unsigned len = d[0], idlen, sustart;
  uint32_t lba, size;

  if (len == 0)
    return 0;
  if (len < RECORD_MIN || len > avail)
    return cloop_err_set (err, EINVAL, "directory record of %u bytes "
                          "(%zu left in its sector)", len, avail);
  idlen = d[32];
  if (idlen == 0 || 33 + idlen > len)
    return cloop_err_set (err, EINVAL, "directory record of %u bytes with "
                          "a name of %u", len, idlen);
  if (both32 (d + 2, &lba) == -1 || both32 (d + 10, &size) == -1)
    return cloop_err_set (err, EINVAL, "directory record whose both-endian "
                          "fields disagree");
  r->offset = ((uint64_t) lba + d[1]) * ISO9660_SECTOR;
  r->size = size;
  if (r->offset > v->br->size || size > v->br->size - r->offset)
    return cloop_err_set (err, EINVAL, "directory record of %" PRIu32
                          " bytes at %" PRIu64 ", past the end of the image",
                          size, r->offset);
  r->dir = d[25] & 0x02;
  r->more = d[25] & 0x80;
  sustart = 33 + idlen + (idlen % 2 == 0);
  if (idlen == 1 && d[33] <= 1)
    strcpy (r->name, d[33] ? ".." : ".");
  else
    record_name (t, d + 33, idlen, d + sustart,
                 sustart < len ? len - sustart : 0, r->name);
  return len;
}

/* Read a whole directory.  Caller frees.  NULL with err set. */
static unsigned char *
read_dir (const struct volume *v, uint64_t offset, uint32_t size,
          struct cloop_err *err)
{
  unsigned char *buf;

  if (size == 0 || size > ISO9660_DIR_MAX) {
    cloop_err_set (err, EINVAL, "directory of %" PRIu32 " bytes (limit %d)",
                   size, ISO9660_DIR_MAX);
    return NULL;
  }
  if ((buf = malloc (size)) == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  if (v->br->pread (v->br->opaque, buf, size, offset, err) == -1) {
    free (buf);
    return NULL;
  }
  return buf;
}

/* Call fn on each record of the directory d (size bytes), in order;
 * fn returns 1 to stop, 0 to go on, -1 on error.  Records never cross
 * a sector.  Returns fn's 1, 0 at the end, or -1 with err set. */
static int
walk_dir (const struct volume *v, const struct tree *t,
          const unsigned char *d, uint32_t size,
          int (*fn) (void *opaque, const struct record *r,
                     struct cloop_err *err),
          void *opaque, struct cloop_err *err)
{
  uint32_t pos = 0;
  struct record r;

  while (pos < size) {
    uint32_t sector_end = (pos / ISO9660_SECTOR + 1) * ISO9660_SECTOR;
    int len, k;

    if (sector_end > size)
      sector_end = size;
    len = parse_record (v, t, d + pos, sector_end - pos, &r, err);
    if (len == -1)
      return -1;
    if (len == 0) {
      pos = sector_end;
      continue;
    }
    pos += len;
    if ((k = fn (opaque, &r, err)) != 0)
      return k;
  }
  return 0;
}

/* State of a search for one name in a directory. */
struct search {
  const char *name;
  bool nocase;
  bool found, done;
  struct record first;
  uint64_t end;                 /* of the extents so far */
  uint64_t length;
  unsigned extents;
};

static int
search_record (void *opaque, const struct record *r, struct cloop_err *err)
{
  struct search *s = opaque;

  if (s->found) {               /* the next extent of a multi-extent file */
    if (strcmp (r->name, s->first.name) != 0 || r->dir)
      return cloop_err_set (err, EINVAL, "%s: an extent of a multi-extent "
                            "file is missing", s->first.name);
    if (++s->extents > ISO9660_EXTENTS_MAX)
      return cloop_err_set (err, EINVAL, "%s: more than %d extents",
                            r->name, ISO9660_EXTENTS_MAX);
    if (r->offset != s->end)
      return cloop_err_set (err, EINVAL, "%s: its extents are not contiguous "
                            "(one at %" PRIu64 ", the next at %" PRIu64
                            "), so it cannot be served as one file",
                            r->name, s->end, r->offset);
    s->end += r->size;
    s->length += r->size;
    s->done = !r->more;
    return s->done;
  }
  if (strcmp (r->name, ".") == 0 || strcmp (r->name, "..") == 0 ||
      (s->nocase ? strcasecmp (r->name, s->name) : strcmp (r->name, s->name)))
    return 0;
  s->found = true;
  s->first = *r;
  s->end = r->offset + r->size;
  s->length = r->size;
  s->extents = 1;
  s->done = !r->more;
  if (r->more && r->dir)
    return cloop_err_set (err, EINVAL, "%s: a directory in several extents",
                          r->name);
  return s->done;
}

/* Find name in directory d of tree t: exactly, else case-insensitively.
 * 1 with *out set, 0 if absent, -1 with err set. */
static int
find_in_dir (const struct volume *v, const struct tree *t,
             const unsigned char *d, uint32_t size, const char *name,
             struct record *out, uint64_t *length, struct cloop_err *err)
{
  for (int nocase = 0; nocase < 2; nocase++) {
    struct search s = { .name = name, .nocase = nocase };
    if (walk_dir (v, t, d, size, search_record, &s, err) == -1)
      return -1;
    if (s.found && !s.done)
      return cloop_err_set (err, EINVAL, "%s: the directory ends inside "
                            "its extents", name);
    if (s.found) {
      *out = s.first;
      *length = s.length;
      return 1;
    }
  }
  return 0;
}

/* The root directory record of a volume descriptor d, into t. */
static int
parse_root (const struct volume *v, const unsigned char *d, struct tree *t,
            struct cloop_err *err)
{
  struct record r;
  struct tree plain = { 0 };
  int len = parse_record (v, &plain, d + 156, 34, &r, err);

  if (len == -1)
    return -1;
  if (len == 0 || !r.dir)
    return cloop_err_set (err, EINVAL, "its root is not a directory");
  t->root_offset = r.offset;
  t->root_size = r.size;
  return 0;
}

/* Check and use one volume descriptor (number i).  1 at the
 * terminator, 0 to go on, -1 with err set. */
static int
parse_descriptor (struct volume *v, const unsigned char *d, unsigned i,
                  bool *have_primary, struct tree *joliet,
                  struct cloop_err *err)
{
  uint32_t blocks;

  if (memcmp (d + 1, "CD001", 5) != 0 || d[6] != 1)
    return cloop_err_set (err, EINVAL, "volume descriptor %u has no CD001 "
                          "version 1 signature", i);
  if (d[0] == 255)
    return 1;
  if (d[0] != 1 && d[0] != 2)
    return 0;                   /* boot record, partition */
  if (d[0] == 2 && (d[88] != '%' || d[89] != '/' ||
                    (d[90] != '@' && d[90] != 'C' && d[90] != 'E')))
    return 0;                   /* a supplementary descriptor not Joliet */
  if (both32 (d + 80, &blocks) == -1 ||
      (d[128] | d[129] << 8) != ISO9660_SECTOR ||
      (d[131] | d[130] << 8) != ISO9660_SECTOR)
    return cloop_err_set (err, EINVAL, "volume descriptor %u is corrupt "
                          "(its both-endian sizes disagree, or its block "
                          "size is not %d)", i, ISO9660_SECTOR);
  if (d[0] == 1) {
    if (*have_primary)
      return 0;
    *have_primary = true;
    return parse_root (v, d, &v->trees[0], err);
  }
  joliet->joliet = true;
  return parse_root (v, d, joliet, err);
}

/* Whether the root directory's "." record starts with a SUSP "SP"
 * entry (Rock Ridge); sets its skip length. */
static void
detect_rock_ridge (const unsigned char *root, uint32_t size, struct tree *t)
{
  unsigned len = root[0];

  if (size >= RECORD_MIN && len >= 34 + 7 && len <= size && root[32] == 1 &&
      memcmp (root + 34, "SP", 2) == 0 && root[36] == 7 &&
      root[38] == 0xbe && root[39] == 0xef) {
    t->rock_ridge = true;
    t->susp_skip = root[40];
  }
}

/* Read the volume descriptors (in batches) and the primary root
 * directory (kept in *root).  0, or -1 with err set. */
static int
read_volume (struct volume *v, unsigned char **root, struct cloop_err *err)
{
  unsigned char buf[DESC_BATCH * ISO9660_SECTOR];
  bool have_primary = false, end = false;
  struct tree joliet = { 0 };
  unsigned i = 0;

  while (!end) {
    uint64_t at = (uint64_t) (DESC_START + i) * ISO9660_SECTOR;
    uint64_t n = DESC_BATCH;
    if (i >= ISO9660_DESCRIPTORS_MAX)
      return cloop_err_set (err, EINVAL, "no volume descriptor set "
                            "terminator in %d descriptors",
                            ISO9660_DESCRIPTORS_MAX);
    if (at >= v->br->size || v->br->size - at < ISO9660_SECTOR)
      return cloop_err_set (err, EINVAL, "the volume descriptors run past "
                            "the end of the image");
    if ((v->br->size - at) / ISO9660_SECTOR < n)
      n = (v->br->size - at) / ISO9660_SECTOR;
    if (v->br->pread (v->br->opaque, buf, n * ISO9660_SECTOR, at, err) == -1)
      return -1;
    for (unsigned k = 0; k < n && !end; k++, i++) {
      int r = parse_descriptor (v, buf + k * ISO9660_SECTOR, i, &have_primary,
                                &joliet, err);
      if (r == -1)
        return -1;
      end = r == 1;
    }
  }
  if (!have_primary)
    return cloop_err_set (err, EINVAL, "no primary volume descriptor");
  if ((*root = read_dir (v, v->trees[0].root_offset, v->trees[0].root_size,
                         err)) == NULL)
    return -1;
  detect_rock_ridge (*root, v->trees[0].root_size, &v->trees[0]);
  v->ntrees = 1;
  /* Joliet names before ISO names, but after Rock Ridge ones. */
  if (joliet.joliet) {
    v->trees[1] = joliet;
    if (!v->trees[0].rock_ridge) {
      v->trees[1] = v->trees[0];
      v->trees[0] = joliet;
    }
    v->ntrees = 2;
  }
  return 0;
}

/* Walk path in tree t down to its last component (a file, or a
 * directory if want_dir).  1 with *out and *length set, 0 if absent
 * (err set: ENOENT naming the component), -1 with err set.  root is
 * the primary root directory already read. */
static int
resolve (const struct volume *v, const struct tree *t,
         const unsigned char *root, const char *path, bool want_dir,
         struct record *out, uint64_t *length, struct cloop_err *err)
{
  char comp[ISO9660_NAME_MAX + 1];
  const unsigned char *dir = root;
  unsigned char *owned = NULL;
  uint32_t size = t->root_size;
  unsigned depth = 0;
  int r = 1;

  if (root == NULL && (dir = owned = read_dir (v, t->root_offset, size,
                                               err)) == NULL)
    return -1;
  out->dir = true;
  *length = size;
  while (r == 1) {
    size_t n;
    path += strspn (path, "/");
    if (*path == '\0')
      break;
    n = strcspn (path, "/");
    if (n > ISO9660_NAME_MAX || ++depth > ISO9660_DEPTH_MAX) {
      r = cloop_err_set (err, EINVAL, "path too long or too deep");
      break;
    }
    memcpy (comp, path, n);
    comp[n] = '\0';
    path += n;
    r = find_in_dir (v, t, dir, size, comp, out, length, err);
    if (r == 0)
      cloop_err_set (err, ENOENT, "not found (no %s)", comp);
    else if (r == 1 && path[strspn (path, "/")] != '\0') {
      if (!out->dir) {
        r = cloop_err_set (err, ENOTDIR, "%s is not a directory", comp);
        break;
      }
      free (owned);
      size = out->size;
      if ((dir = owned = read_dir (v, out->offset, size, err)) == NULL)
        r = -1;
    }
  }
  free (owned);
  if (r == 1 && out->dir != want_dir)
    r = cloop_err_set (err, want_dir ? ENOTDIR : EISDIR, "%s",
                       want_dir ? "not a directory" : "a directory");
  return r;
}

/* Look path up in each tree in turn.  As resolve, but 0 is -1 with
 * err set (ENOENT). */
static int
lookup (const char *path, bool want_dir, const struct byte_reader *br,
        struct volume *v, struct record *out, uint64_t *length,
        const struct tree **tree, struct cloop_err *err)
{
  unsigned char *root = NULL;
  int r = -1;

  memset (v, 0, sizeof *v);
  v->br = br;
  if (read_volume (v, &root, err) == -1) {
    free (root);
    return -1;
  }
  for (unsigned i = 0; i < v->ntrees && r != 1; i++) {
    struct cloop_err why = { 0 };
    bool primary = !v->trees[i].joliet;
    r = resolve (v, &v->trees[i], primary ? root : NULL, path, want_dir,
                 out, length, &why);
    if (r == -1 && why.errnum != ENOENT) {
      *err = why;
      break;
    }
    if (r != 1)
      *err = why;
    *tree = &v->trees[i];
  }
  free (root);
  return r == 1 ? 0 : -1;
}

int
iso9660_find (const struct byte_reader *br, const char *path,
              struct iso9660_file *out, struct cloop_err *err)
{
  struct volume v;
  struct record r;
  const struct tree *t;
  uint64_t length;

  if (lookup (path, false, br, &v, &r, &length, &t, err) == -1)
    return -1;
  out->offset = r.offset;
  out->length = length;
  return 0;
}

struct listing {
  int (*fn) (void *opaque, const char *name, struct cloop_err *err);
  void *opaque;
  unsigned n;
  bool skip_rest;               /* the rest of a multi-extent file */
};

static int
list_record (void *opaque, const struct record *r, struct cloop_err *err)
{
  struct listing *l = opaque;
  bool continuation = l->skip_rest;

  l->skip_rest = r->more;
  if (continuation || r->dir)
    return 0;
  if (++l->n > ISO9660_LIST_MAX)
    return 1;
  return l->fn (l->opaque, r->name, err) == -1 ? -1 : 0;
}

int
iso9660_list (const struct byte_reader *br, const char *dir,
              int (*fn) (void *opaque, const char *name,
                         struct cloop_err *err),
              void *opaque, struct cloop_err *err)
{
  struct volume v;
  struct record r;
  const struct tree *t;
  uint64_t length;
  unsigned char *d;
  struct listing l = { .fn = fn, .opaque = opaque };
  int ret;

  if (lookup (dir, true, br, &v, &r, &length, &t, err) == -1)
    return -1;
  if ((d = read_dir (&v, r.offset, r.size, err)) == NULL)
    return -1;
  ret = walk_dir (&v, t, d, r.size, list_record, &l, err);
  free (d);
  return ret == -1 ? -1 : 0;
}
