/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a local file as a source. */
#include <config.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source.h"

struct file_source {
  struct source src;            /* must be first */
  int fd;
  int dirfd;                    /* the file's directory, for objects */
};

static int
file_pread (struct source *src, void *buf, size_t len, uint64_t offset,
            struct cloop_err *err)
{
  struct file_source *fs = (struct file_source *) src;
  unsigned char *p = buf;

  while (len > 0) {
    ssize_t r = pread (fs->fd, p, len, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return cloop_err_set (err, errno, "%s: read at %" PRIu64 ": %s",
                            src->name, offset, strerror (errno));
    }
    if (r == 0)
      return cloop_err_set (err, EIO,
                            "%s: unexpected end of file at %" PRIu64
                            " (file shrank?)", src->name, offset);
    p += r;
    len -= r;
    offset += r;
  }
  return 0;
}

/* Local reads are cheap and the caller's thread is one of many nbdkit
 * worker threads, so ranges are read in order; contiguous ranges could
 * be merged but the page cache makes that pointless. */
static int
file_pread_many (struct source *src, struct source_range *ranges, size_t n,
                 struct cloop_err *err)
{
  int ret = 0;

  for (size_t i = 0; i < n; i++) {
    struct cloop_err e;
    if (file_pread (src, ranges[i].buf, ranges[i].length, ranges[i].offset,
                    &e) == -1) {
      ranges[i].status = e.errnum;
      if (ret == 0 && err)
        *err = e;
      ret = -1;
    }
  }
  return ret;
}

/* Read one object beside the file.  0, or -1 with err set. */
static int
get_object (struct file_source *fs, struct source_object *o,
            struct cloop_err *err)
{
  struct stat st;
  ssize_t r;
  int fd;

  if (o->path[0] == '/' || strstr (o->path, "..") != NULL)
    return cloop_err_set (err, EINVAL, "%s: bad object path %s",
                          fs->src.name, o->path);
  fd = openat (fs->dirfd, o->path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return cloop_err_set (err, errno, "%s: %s", o->path, strerror (errno));
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode) ||
      (o->exact ? (uint64_t) st.st_size != o->length
                : (uint64_t) st.st_size > o->length)) {
    close (fd);
    return cloop_err_set (err, EIO, "%s: size %jd, expected %s%zu",
                          o->path, (intmax_t) st.st_size,
                          o->exact ? "" : "at most ", o->length);
  }
  while (o->received < (size_t) st.st_size) {
    r = pread (fd, (char *) o->buf + o->received, st.st_size - o->received,
               o->received);
    if (r <= 0) {
      if (r == -1 && errno == EINTR)
        continue;
      cloop_err_set (err, r == 0 ? EIO : errno, "%s: read: %s", o->path,
                     r == 0 ? "file shrank" : strerror (errno));
      close (fd);
      return -1;
    }
    o->received += r;
  }
  close (fd);
  return 0;
}

static int
file_get_objects (struct source *src, struct source_object *objs, size_t n,
                  struct cloop_err *err)
{
  struct file_source *fs = (struct file_source *) src;
  int ret = 0;

  for (size_t i = 0; i < n; i++) {
    struct cloop_err e;
    if (get_object (fs, &objs[i], &e) == -1) {
      objs[i].status = e.errnum;
      if (ret == 0 && err)
        *err = e;
      ret = -1;
    }
  }
  return ret;
}

static void
file_close (struct source *src)
{
  struct file_source *fs = (struct file_source *) src;

  if (fs->dirfd >= 0)
    close (fs->dirfd);
  close (fs->fd);
  free (src->name);
  free (fs);
}

static const struct source_ops file_ops = {
  .name = "file",
  .pread = file_pread,
  .pread_many = file_pread_many,
  .get_objects = file_get_objects,
  .close = file_close,
};

struct source *
source_open_file (const char *path, struct cloop_err *err)
{
  struct file_source *fs;
  struct stat st;
  int fd;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    cloop_err_set (err, errno, "%s: %s", path, strerror (errno));
    return NULL;
  }
  if (fstat (fd, &st) == -1) {
    cloop_err_set (err, errno, "%s: fstat: %s", path, strerror (errno));
    close (fd);
    return NULL;
  }
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode)) {
    cloop_err_set (err, EINVAL, "%s: not a regular file or block device",
                   path);
    close (fd);
    return NULL;
  }
  fs = calloc (1, sizeof *fs);
  if (fs == NULL || (fs->src.name = strdup (path)) == NULL) {
    cloop_err_set (err, ENOMEM, "%s: out of memory", path);
    free (fs);
    close (fd);
    return NULL;
  }
  fs->fd = fd;
  fs->src.ops = &file_ops;
  {
    /* The directory holding the file, for objects beside it. */
    const char *slash = strrchr (path, '/');
    char *dir = slash ? strndup (path, slash - path + 1) : strdup (".");
    fs->dirfd = dir ? open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    free (dir);
  }
  if (S_ISBLK (st.st_mode)) {
    off_t end = lseek (fd, 0, SEEK_END);
    fs->src.size = end == -1 ? 0 : (uint64_t) end;
  }
  else
    fs->src.size = st.st_size;
  return &fs->src;
}
