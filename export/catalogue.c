/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: where the list of exports comes from (see
 * catalogue.h). */
#include <config.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalogue.h"
#include "image.h"

struct catalogue {
  char *text;                   /* the file, tokens NUL-terminated */
  char **owned;                 /* strings made here (paths) */
  size_t nowned, owned_cap;
  struct catalogue_entry *v;
  size_t n, cap;
};

static struct catalogue_entry *
add_entry (struct catalogue *cat, struct cloop_err *err)
{
  if (cat->n == CATALOGUE_EXPORTS_MAX) {
    cloop_err_set (err, EINVAL, "more than %d exports",
                   CATALOGUE_EXPORTS_MAX);
    return NULL;
  }
  if (cat->n == cat->cap) {
    size_t cap = cat->cap ? cat->cap * 2 : 16;
    struct catalogue_entry *v = realloc (cat->v, cap * sizeof *v);
    if (v == NULL) {
      cloop_err_set (err, ENOMEM, "out of memory");
      return NULL;
    }
    cat->v = v;
    cat->cap = cap;
  }
  memset (&cat->v[cat->n], 0, sizeof cat->v[0]);
  return &cat->v[cat->n++];
}

/* Keep s (malloc'd) until catalogue_free; returns s, or NULL (and
 * frees s) on ENOMEM. */
static char *
own (struct catalogue *cat, char *s)
{
  if (s && cat->nowned == cat->owned_cap) {
    size_t cap = cat->owned_cap ? cat->owned_cap * 2 : 16;
    char **v = realloc (cat->owned, cap * sizeof *v);
    if (v == NULL) {
      free (s);
      return NULL;
    }
    cat->owned = v;
    cat->owned_cap = cap;
  }
  if (s)
    cat->owned[cat->nowned++] = s;
  return s;
}

/* base/rel, or rel itself if it is absolute or a URL. */
static const char *
resolve (struct catalogue *cat, const char *base, const char *rel)
{
  char *s;

  if (rel[0] == '/' || strncmp (rel, "http://", 7) == 0 ||
      strncmp (rel, "https://", 8) == 0)
    return rel;
  if (asprintf (&s, "%s/%s", base, rel) == -1)
    return NULL;
  return own (cat, s);
}

/* A folder given as a location is a block store: serve its index. */
static const char *
store_folder_index (struct catalogue *cat, const char *path)
{
  struct stat st;
  char *s;

  if (strncmp (path, "http", 4) == 0 || stat (path, &st) == -1 ||
      !S_ISDIR (st.st_mode))
    return path;
  if (asprintf (&s, "%s/index", path) == -1)
    return NULL;
  return own (cat, s);
}

/* Split line (modified in place) into the entry's tokens.  0, or -1
 * with err set. */
static int
parse_line (struct catalogue *cat, char *line, unsigned lineno,
            const char *base, struct cloop_err *err)
{
  char *tok[2 + CATALOGUE_KEYS_MAX], *save = NULL;
  size_t n = 0;
  struct catalogue_entry *e;

  for (char *t = strtok_r (line, " \t\r", &save); t;
       t = strtok_r (NULL, " \t\r", &save)) {
    if (n == 2 + CATALOGUE_KEYS_MAX)
      return cloop_err_set (err, EINVAL, "more than %d keys",
                            CATALOGUE_KEYS_MAX);
    tok[n++] = t;
  }
  if (n == 0)
    return 0;
  if (n < 2)
    return cloop_err_set (err, EINVAL, "'%s' has no location (expected "
                          "NAME LOCATION [KEY=VALUE ...])", tok[0]);
  if (strchr (tok[0], '=') || strchr (tok[1], '=') != NULL)
    return cloop_err_set (err, EINVAL, "expected NAME LOCATION before any "
                          "KEY=VALUE");
  for (size_t i = 0; i < cat->n; i++)
    if (strcmp (cat->v[i].name, tok[0]) == 0)
      return cloop_err_set (err, EINVAL, "export '%s' is already on line %u",
                            tok[0], cat->v[i].line);
  if ((e = add_entry (cat, err)) == NULL)
    return -1;
  e->line = lineno;
  e->name = tok[0];
  e->location = resolve (cat, base, tok[1]);
  if (e->location)
    e->location = store_folder_index (cat, e->location);
  if (e->location == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (size_t i = 2; i < n; i++) {
    char *eq = strchr (tok[i], '=');
    if (eq == NULL || eq == tok[i])
      return cloop_err_set (err, EINVAL, "'%s' is not KEY=VALUE", tok[i]);
    *eq = '\0';
    e->keys[e->nkeys] = tok[i];
    e->values[e->nkeys++] = eq + 1;
  }
  return 0;
}

/* Read the whole file (at most CATALOGUE_FILE_MAX bytes) into a
 * NUL-terminated malloc'd buffer. */
static char *
slurp (const char *path, struct cloop_err *err)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *buf = NULL;
  size_t got = 0;

  if (fd == -1 || fstat (fd, &st) == -1) {
    cloop_err_set (err, errno, "%s: %m", path);
    goto out;
  }
  if (!S_ISREG (st.st_mode) || st.st_size > CATALOGUE_FILE_MAX) {
    cloop_err_set (err, EINVAL, "%s: not a regular file of at most %d "
                   "bytes", path, CATALOGUE_FILE_MAX);
    goto out;
  }
  if ((buf = malloc (st.st_size + 1)) == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    goto out;
  }
  while (got < (size_t) st.st_size) {
    ssize_t r = read (fd, buf + got, st.st_size - got);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      cloop_err_set (err, r ? errno : EIO, "%s: read failed", path);
      free (buf);
      buf = NULL;
      goto out;
    }
    got += r;
  }
  buf[got] = '\0';
  if (memchr (buf, '\0', got) != NULL) {
    cloop_err_set (err, EINVAL, "%s: not a text file (it holds a NUL "
                   "byte)", path);
    free (buf);
    buf = NULL;
  }
 out:
  if (fd >= 0)
    close (fd);
  return buf;
}

struct catalogue *
catalogue_read (const char *path, struct cloop_err *err)
{
  struct catalogue *cat = calloc (1, sizeof *cat);
  char *base = NULL, *slash, *line, *next;
  unsigned lineno = 0;

  if (cat == NULL || (base = strdup (path)) == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    goto fail;
  }
  slash = strrchr (base, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy (base, ".");
  if ((cat->text = slurp (path, err)) == NULL)
    goto fail;
  for (line = cat->text; line; line = next) {
    next = strchr (line, '\n');
    if (next)
      *next++ = '\0';
    lineno++;
    line += strspn (line, " \t\r");
    if (*line == '#' || *line == '\0')
      continue;
    if (parse_line (cat, line, lineno, base, err) == -1) {
      cloop_err_prefix (err, "%s line %u", path, lineno);
      goto fail;
    }
  }
  if (cat->n == 0) {
    cloop_err_set (err, EINVAL, "%s: no exports", path);
    goto fail;
  }
  free (base);
  return cat;
 fail:
  free (base);
  catalogue_free (cat);
  return NULL;
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Adding the cloop files of one ISO image as exports. */
struct iso_scan {
  struct catalogue *cat;
  const char *name;             /* of the ISO in the folder */
  const char *path;             /* of the ISO */
  unsigned added;
};

/* Export NAME/KNOPPIXn: the ISO with iso-file=/KNOPPIX/KNOPPIXn. */
static int
add_iso_file (void *opaque, const char *iso_path, struct cloop_err *err)
{
  struct iso_scan *sc = opaque;
  struct catalogue_entry *e = add_entry (sc->cat, err);
  const char *file = strrchr (iso_path, '/') + 1;
  char *name;

  if (e == NULL)
    return -1;
  if (asprintf (&name, "%s/%s", sc->name, file) == -1)
    name = NULL;
  e->name = own (sc->cat, name);
  e->location = own (sc->cat, strdup (sc->path));
  e->nkeys = 1;
  e->keys[0] = "iso-file";
  e->values[0] = own (sc->cat, strdup (iso_path));
  if (e->name == NULL || e->location == NULL || e->values[0] == NULL) {
    sc->cat->n--;
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  sc->added++;
  return 0;
}

/* The cloop files in /KNOPPIX/ of the ISO image path, as exports; the
 * ISO is skipped (reported) if it holds none. */
static int
scan_iso (struct catalogue *cat, const char *path, const char *name,
          void (*skipped) (const char *, const char *),
          struct cloop_err *err)
{
  struct iso_scan sc = { .cat = cat, .name = name, .path = path };
  struct cloop_err why = { 0 };

  if (image_list_iso (path, add_iso_file, &sc, skipped, &why) == -1) {
    if (why.errnum == ENOMEM || cat->n == CATALOGUE_EXPORTS_MAX) {
      *err = why;
      return -1;
    }
  }
  else if (sc.added == 0)
    cloop_err_set (&why, ENOENT, "an ISO9660 image without a cloop file "
                   "KNOPPIX* in /KNOPPIX");
  if (sc.added == 0 && skipped)
    skipped (path, why.msg);
  return 0;
}

/* Add dir/name as an export if it is an image or a store, or each
 * cloop file in /KNOPPIX/ of an ISO image as NAME/KNOPPIX,
 * NAME/KNOPPIX1, ... */
static int
scan_one (struct catalogue *cat, const char *dir, const char *name,
          void (*skipped) (const char *, const char *),
          struct cloop_err *err)
{
  struct cloop_err why = { 0 };
  struct catalogue_entry *e;
  char *path, *index = NULL;
  struct stat st;
  enum image_kind kind = IMAGE_NONE;

  if (asprintf (&path, "%s/%s", dir, name) == -1)
    return cloop_err_set (err, ENOMEM, "out of memory");
  if (stat (path, &st) == -1)
    cloop_err_set (&why, errno, "%m");
  else if (S_ISDIR (st.st_mode)) {
    if (asprintf (&index, "%s/index", path) == -1)
      index = NULL;
    if (index && (kind = image_probe_file (index, &why)) != IMAGE_STORE) {
      kind = IMAGE_NONE;
      cloop_err_set (&why, EINVAL, "a folder without a block-store index");
    }
  }
  else if (S_ISREG (st.st_mode))
    kind = image_probe_file (path, &why);
  else
    cloop_err_set (&why, EINVAL, "not a file or folder");

  if (kind == IMAGE_ISO) {
    int r = scan_iso (cat, path, name, skipped, err);
    free (path);
    return r;
  }
  if (kind == IMAGE_NONE) {
    if (skipped)
      skipped (path, why.msg);
    free (path);
    free (index);
    return 0;
  }
  if ((e = add_entry (cat, err)) == NULL) {
    free (path);
    free (index);
    return -1;
  }
  e->name = own (cat, strdup (name));
  if (index) {
    free (path);
    path = index;
  }
  e->location = own (cat, path);     /* takes path */
  if (e->name == NULL || e->location == NULL) {
    cat->n--;
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  return 0;
}

struct catalogue *
catalogue_scan_dir (const char *dir,
                    void (*skipped) (const char *path, const char *why),
                    struct cloop_err *err)
{
  struct catalogue *cat = calloc (1, sizeof *cat);
  DIR *d = opendir (dir);
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  int r = 0;

  if (cat == NULL || d == NULL) {
    cloop_err_set (err, cat ? errno : ENOMEM, "dir %s: %m", dir);
    goto fail;
  }
  while ((de = readdir (d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    if (n == cap) {
      size_t c = cap ? cap * 2 : 64;
      char **v = realloc (names, c * sizeof *v);
      if (v == NULL)
        break;
      names = v;
      cap = c;
    }
    if ((names[n] = strdup (de->d_name)) == NULL)
      break;
    n++;
  }
  if (de != NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    goto fail;
  }
  if (n)
    qsort (names, n, sizeof *names, compare_names);
  for (size_t i = 0; i < n && r == 0; i++)
    r = scan_one (cat, dir, names[i], skipped, err);
  if (r == -1)
    goto fail;
  for (size_t i = 0; i < n; i++)
    free (names[i]);
  free (names);
  closedir (d);
  return cat;
 fail:
  for (size_t i = 0; i < n; i++)
    free (names[i]);
  free (names);
  if (d)
    closedir (d);
  catalogue_free (cat);
  return NULL;
}

size_t
catalogue_count (const struct catalogue *cat)
{
  return cat->n;
}

const struct catalogue_entry *
catalogue_entry (const struct catalogue *cat, size_t i)
{
  return &cat->v[i];
}

void
catalogue_free (struct catalogue *cat)
{
  if (cat == NULL)
    return;
  for (size_t i = 0; i < cat->nowned; i++)
    free (cat->owned[i]);
  free (cat->owned);
  free (cat->v);
  free (cat->text);
  free (cat);
}
