/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: small state that must survive (see statedir.h). */
#include <config.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "statedir.h"
#include "store.h"

struct state_dir {
  char *dir;
  int dirfd;
  int lockfd;                   /* DIR/.lock, or -1 */
  pthread_mutex_t lock;         /* threads first, then flock */
  unsigned seq;                 /* makes temporary names unique */
};

/* mkdir -p path, mode 0700.  0 or -1 (errno set). */
static int
make_dirs (const char *path)
{
  char buf[PATH_MAX];

  if (snprintf (buf, sizeof buf, "%s", path) >= (int) sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir (buf, 0700) == -1 && errno != EEXIST)
        return -1;
      *p = c;
      if (c == '\0')
        return 0;
    }
  }
}

struct state_dir *
state_dir_open (const char *dir, struct cloop_err *err)
{
  struct state_dir *sd = calloc (1, sizeof *sd);

  if (sd == NULL || (sd->dir = strdup (dir)) == NULL) {
    free (sd);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  if (make_dirs (dir) == -1 ||
      (sd->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
    cloop_err_set (err, errno, "state-dir %s: %m", dir);
    free (sd->dir);
    free (sd);
    return NULL;
  }
  sd->lockfd = openat (sd->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC,
                       0600);
  pthread_mutex_init (&sd->lock, NULL);
  return sd;
}

void
state_dir_lock (struct state_dir *sd)
{
  pthread_mutex_lock (&sd->lock);
  if (sd->lockfd >= 0)
    while (flock (sd->lockfd, LOCK_EX) == -1 && errno == EINTR)
      ;
}

void
state_dir_unlock (struct state_dir *sd)
{
  if (sd->lockfd >= 0)
    flock (sd->lockfd, LOCK_UN);
  pthread_mutex_unlock (&sd->lock);
}

void
state_dir_close (struct state_dir *sd)
{
  if (sd) {
    if (sd->lockfd >= 0)
      close (sd->lockfd);
    pthread_mutex_destroy (&sd->lock);
    close (sd->dirfd);
    free (sd->dir);
    free (sd);
  }
}

/* The file name of record name: its SHA-256 in hex. */
static void
record_file (const char *name, char out[65])
{
  unsigned char hash[32];
  unsigned int n = 32;

  EVP_Digest (name, strlen (name), hash, &n, EVP_sha256 (), NULL);
  store_hex (out, hash);
}

int
state_dir_get (struct state_dir *sd, const char *name, void *buf,
               size_t size, size_t *len, struct cloop_err *err)
{
  char file[65];
  ssize_t r;
  int fd;

  record_file (name, file);
  fd = openat (sd->dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd == -1) {
    if (errno == ENOENT)
      return 0;
    return cloop_err_set (err, errno, "state-dir %s: %s: %m", sd->dir, file);
  }
  do
    r = pread (fd, buf, size, 0);
  while (r == -1 && errno == EINTR);
  close (fd);
  if (r == -1)
    return cloop_err_set (err, errno, "state-dir %s: %s: %m", sd->dir, file);
  if ((size_t) r == size)
    return cloop_err_set (err, EINVAL, "state-dir %s: %s: record larger "
                          "than %zu bytes", sd->dir, file, size - 1);
  *len = r;
  return 1;
}

int
state_dir_put (struct state_dir *sd, const char *name, const void *buf,
               size_t len, struct cloop_err *err)
{
  char file[65], tmp[100];
  int fd, e = 0;

  if (len > STATE_RECORD_MAX)
    return cloop_err_set (err, EINVAL, "state record of %zu bytes", len);
  record_file (name, file);
  snprintf (tmp, sizeof tmp, ".tmp-%ld-%u-%s", (long) getpid (),
            __atomic_fetch_add (&sd->seq, 1, __ATOMIC_RELAXED), file);
  fd = openat (sd->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
               0600);
  if (fd == -1)
    return cloop_err_set (err, errno, "state-dir %s: %m", sd->dir);
  if (write (fd, buf, len) != (ssize_t) len || fsync (fd) == -1)
    e = errno ? errno : EIO;
  if (close (fd) == -1 && e == 0)
    e = errno;
  if (e == 0 && renameat (sd->dirfd, tmp, sd->dirfd, file) == -1)
    e = errno;
  if (e) {
    unlinkat (sd->dirfd, tmp, 0);
    errno = e;
    return cloop_err_set (err, e, "state-dir %s: writing %s: %m", sd->dir,
                          file);
  }
  fsync (sd->dirfd);
  return 0;
}
