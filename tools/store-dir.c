/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: writing a store directory (see store-dir.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "store-dir.h"

struct store_dir {
  char *path;
  int dirfd;
  mode_t file_mode;             /* 0644-ish: 0666 & ~umask */
  bool hh_made[256];            /* blocks/HH known to exist */
  char block_tmp[PATH_MAX];     /* temporary block file, "" if none */
  char temps[TEMP_COUNT][PATH_MAX];
};

/* Write all of data to fd.  0, or -1 with errno set. */
static int
write_all (int fd, const void *data, size_t len)
{
  const char *p = data;

  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    p += r;
    len -= r;
  }
  return 0;
}

/* mkdir that accepts an existing directory. */
static int
ensure_dir (const char *path, struct cloop_err *err)
{
  struct stat st;

  if (mkdir (path, 0777) == 0)
    return 0;
  if (errno == EEXIST && stat (path, &st) == 0 && S_ISDIR (st.st_mode))
    return 0;
  if (errno == EEXIST)
    errno = ENOTDIR;
  return cloop_err_set (err, errno, "%s: cannot create directory: %s", path,
                        strerror (errno));
}

struct store_dir *
store_dir_open (const char *path, struct cloop_err *err)
{
  struct store_dir *sd = calloc (1, sizeof *sd);
  char blocks[PATH_MAX];
  mode_t mask;

  if (sd == NULL || (sd->path = strdup (path)) == NULL) {
    free (sd);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  sd->dirfd = -1;
  mask = umask (0);
  umask (mask);
  sd->file_mode = 0666 & ~mask;
  if (snprintf (blocks, sizeof blocks, "%s/blocks", path) >= PATH_MAX) {
    cloop_err_set (err, ENAMETOOLONG, "%s: path too long", path);
    goto fail;
  }
  if (ensure_dir (path, err) == -1 || ensure_dir (blocks, err) == -1)
    goto fail;
  if (access (path, W_OK) == -1 || access (blocks, W_OK) == -1) {
    cloop_err_set (err, errno, "%s: store directory not writable: %s",
                   path, strerror (errno));
    goto fail;
  }
  sd->dirfd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sd->dirfd < 0) {
    cloop_err_set (err, errno, "%s: %s", path, strerror (errno));
    goto fail;
  }
  return sd;

 fail:
  store_dir_close (sd);
  return NULL;
}

const char *
store_dir_path (const struct store_dir *sd)
{
  return sd->path;
}

/* Create a temporary file from template (in place, "…XXXXXX"), write
 * data, optionally fsync, set the mode.  0, or -1 with err set and the
 * file removed. */
static int
write_temp (char *template, const void *data, size_t len, mode_t mode,
            bool sync, struct cloop_err *err)
{
  int fd = mkstemp (template);
  int saved;

  if (fd < 0) {
    saved = errno;
    cloop_err_set (err, saved, "%s: %s", template, strerror (saved));
    template[0] = '\0';
    return -1;
  }
  if (write_all (fd, data, len) == -1 || fchmod (fd, mode) == -1 ||
      (sync && fsync (fd) == -1))
    goto fail;
  if (close (fd) == -1) {
    fd = -1;
    goto fail;
  }
  return 0;

 fail:
  saved = errno;
  cloop_err_set (err, saved, "%s: write: %s", template, strerror (saved));
  if (fd >= 0)
    close (fd);
  unlink (template);
  template[0] = '\0';
  return -1;
}

/* Make sure blocks/HH exists. */
static int
ensure_hh (struct store_dir *sd, unsigned hh, const char *rel,
           struct cloop_err *err)
{
  char dir[PATH_MAX];

  if (sd->hh_made[hh])
    return 0;
  snprintf (dir, sizeof dir, "%s/%.9s", sd->path, rel);  /* blocks/HH */
  if (ensure_dir (dir, err) == -1)
    return -1;
  sd->hh_made[hh] = true;
  return 0;
}

/* Does the regular file rel (below dirfd) hold exactly data[0..len)?
 * Read errors count as "no". */
static bool
same_content (int dirfd, const char *rel, const void *data, size_t len)
{
  unsigned char buf[65536];
  const unsigned char *want = data;
  size_t done = 0;
  int fd = openat (dirfd, rel, O_RDONLY | O_CLOEXEC);
  bool same = fd >= 0;

  while (same && done < len) {
    size_t n = len - done < sizeof buf ? len - done : sizeof buf;
    ssize_t r = pread (fd, buf, n, done);
    if (r <= 0 || memcmp (buf, want + done, r) != 0)
      same = false;
    else
      done += r;
  }
  if (fd >= 0)
    close (fd);
  return same;
}

bool
store_dir_has_block (struct store_dir *sd,
                     const unsigned char hash[STORE_HASH_LEN], size_t len)
{
  char rel[STORE_BLOCK_PATH_MAX];
  unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  struct stat st;
  size_t done = 0;
  bool ok;
  int fd;

  store_block_path (rel, hash);
  fd = openat (sd->dirfd, rel, O_RDONLY | O_CLOEXEC);
  ok = ctx != NULL && fd >= 0 && fstat (fd, &st) == 0 &&
       S_ISREG (st.st_mode) && (uint64_t) st.st_size == len &&
       EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL) == 1;
  while (ok && done < len) {
    ssize_t r = pread (fd, buf, sizeof buf, done);
    if (r <= 0 || EVP_DigestUpdate (ctx, buf, r) != 1)
      ok = false;
    else
      done += r;
  }
  ok = ok && EVP_DigestFinal_ex (ctx, md, &mdlen) == 1 &&
       mdlen == STORE_HASH_LEN && memcmp (md, hash, STORE_HASH_LEN) == 0;
  if (fd >= 0)
    close (fd);
  EVP_MD_CTX_free (ctx);
  return ok;
}

int
store_dir_put_block (struct store_dir *sd,
                     const unsigned char hash[STORE_HASH_LEN],
                     const void *data, size_t len, bool *stored_new,
                     struct cloop_err *err)
{
  char rel[STORE_BLOCK_PATH_MAX], final[PATH_MAX];
  struct stat st;

  store_block_path (rel, hash);
  if (fstatat (sd->dirfd, rel, &st, 0) == 0 && S_ISREG (st.st_mode) &&
      (uint64_t) st.st_size == len) {
    if (same_content (sd->dirfd, rel, data, len)) {
      *stored_new = false;
      return 0;
    }
    fprintf (stderr, "cloop-store: warning: %s/%s: the existing file does "
             "not hold this block's content; rewriting it\n", sd->path, rel);
  }
  if (ensure_hh (sd, hash[0], rel, err) == -1)
    return -1;
  snprintf (final, sizeof final, "%s/%s", sd->path, rel);
  snprintf (sd->block_tmp, sizeof sd->block_tmp, "%s/%.9s/.tmp-XXXXXX",
            sd->path, rel);
  if (write_temp (sd->block_tmp, data, len, sd->file_mode, false, err) == -1)
    return -1;
  if (rename (sd->block_tmp, final) == -1) {
    cloop_err_set (err, errno, "%s: rename: %s", final, strerror (errno));
    unlink (sd->block_tmp);
    sd->block_tmp[0] = '\0';
    return -1;
  }
  sd->block_tmp[0] = '\0';
  *stored_new = true;
  return 0;
}

int
store_dir_sync (struct store_dir *sd, struct cloop_err *err)
{
  if (syncfs (sd->dirfd) == -1)
    return cloop_err_set (err, errno, "%s: syncfs: %s", sd->path,
                          strerror (errno));
  return 0;
}

int
store_dir_stage (struct store_dir *sd, enum store_temp slot,
                 const char *name, const void *data, size_t len,
                 struct cloop_err *err)
{
  char *t = sd->temps[slot];

  if (snprintf (t, PATH_MAX, "%s/.tmp-%s-XXXXXX", sd->path, name)
      >= PATH_MAX) {
    t[0] = '\0';
    return cloop_err_set (err, ENAMETOOLONG, "%s/%s: path too long",
                          sd->path, name);
  }
  return write_temp (t, data, len, sd->file_mode, true, err);
}

int
store_dir_commit (struct store_dir *sd, enum store_temp slot,
                  const char *name, struct cloop_err *err)
{
  char *t = sd->temps[slot];

  if (renameat (AT_FDCWD, t, sd->dirfd, name) == -1) {
    int saved = errno;
    unlink (t);
    t[0] = '\0';
    return cloop_err_set (err, saved, "%s/%s: rename: %s", sd->path, name,
                          strerror (saved));
  }
  t[0] = '\0';
  if (fsync (sd->dirfd) == -1)
    return cloop_err_set (err, errno, "%s: fsync: %s", sd->path,
                          strerror (errno));
  return 0;
}

int
store_dir_unlink (struct store_dir *sd, const char *name,
                  struct cloop_err *err)
{
  if (unlinkat (sd->dirfd, name, 0) == -1 && errno != ENOENT)
    return cloop_err_set (err, errno, "%s/%s: unlink: %s", sd->path, name,
                          strerror (errno));
  return 0;
}

void
store_dir_remove_temps (struct store_dir *sd)
{
  int i;

  if (sd->block_tmp[0])
    unlink (sd->block_tmp);
  for (i = 0; i < TEMP_COUNT; i++)
    if (sd->temps[i][0])
      unlink (sd->temps[i]);
}

void
store_dir_close (struct store_dir *sd)
{
  if (sd == NULL)
    return;
  store_dir_remove_temps (sd);
  if (sd->dirfd >= 0)
    close (sd->dirfd);
  free (sd->path);
  free (sd);
}

int
write_file_atomic (const char *path, const void *data, size_t len,
                   mode_t mode, struct cloop_err *err)
{
  char tmp[PATH_MAX];
  const char *slash = strrchr (path, '/');
  int dirlen = slash ? (int) (slash - path) : 1;
  const char *dir = slash ? path : ".";
  const char *base = slash ? slash + 1 : path;

  if (slash == path)
    dirlen = 0;                 /* "/name": directory "/" */
  if (snprintf (tmp, sizeof tmp, "%.*s/.tmp-%s-XXXXXX", dirlen, dir, base)
      >= (int) sizeof tmp)
    return cloop_err_set (err, ENAMETOOLONG, "%s: path too long", path);
  if (write_temp (tmp, data, len, mode, true, err) == -1)
    return -1;
  if (rename (tmp, path) == -1) {
    int saved = errno;
    unlink (tmp);
    return cloop_err_set (err, saved, "%s: rename: %s", path,
                          strerror (saved));
  }
  return 0;
}
