/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: persistent, bounded, verified disk cache.
 *
 * The layout, the entry format and the crash-safety argument are in
 * diskcache.h.  Implementation notes:
 *
 * - Paths: the handle keeps DIR open and does every file operation
 *   with the *at() calls relative to it, so keys are plain relative
 *   names and nothing depends on the current directory.
 *
 * - Locking: one mutex guards the counters, the accounted size and the
 *   write-pause state.  No file I/O happens under it.  A scan (walk +
 *   eviction) runs in the thread that found it due, with the
 *   "scanning" flag set so that only one runs per handle; other puts
 *   carry on, and only a put that would leave the accounted size over
 *   max_bytes waits for the running scan (the hard bound).  Across
 *   processes a flock on DIR/.lock serialises scans: two overlapping
 *   evictions would evict twice as much, and a scan that starts after
 *   another process's eviction sees what it left, including entries
 *   written meanwhile.  Gets never take it.
 *
 * - Accounting: bytes = the last scan's total after eviction, plus
 *   what this handle wrote since.  Puts that finish during a scan are
 *   added on top of the scan result, so a file may be counted twice
 *   until the next scan: the estimate errs on the high side.
 *
 * - Verification: every get reads the whole entry into the caller's
 *   buffer, checks the header and the SHA-256 (and, for blk/, that the
 *   hash is the name), and only then returns 1.  A bad file is
 *   unlinked only if the name still refers to the inode we read, so a
 *   fresh entry renamed over it meanwhile survives.
 *
 * - Writes: obj/ and blk/ puts cost openat(O_TMPFILE) + writev +
 *   linkat + close, with no stat, no temporary name (so no getpid or
 *   gettid) and no rename (renames and name lookups of temporary files
 *   contend on the directory's inode lock).  An existing entry is
 *   found by linkat's EEXIST instead of a stat before writing: a put
 *   of a block already cached writes it for nothing, which is rare
 *   (callers get before they put) and cheaper than a stat on every
 *   put.  Directories are created only when an open or link fails
 *   with ENOENT.  url/ puts, and all puts once O_TMPFILE or /proc
 *   has been found unusable, take the temporary file + rename path.
 *
 * - Empty directories (obj/<id> of old objects, fan-out directories)
 *   are removed by the next scan; a put racing with that sees ENOENT
 *   on its open or link and recreates the directory.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "byteorder.h"
#include "diskcache.h"

#define LAYOUT_TEXT "nbdkit-cloop disk cache 1\n"
#define ENTRY_MAGIC "CLDCACHE"
#define ENTRY_VERSION 1
#define HDR DISK_CACHE_HEADER_SIZE
#define FS_BLOCK 4096               /* accounting granularity */
#define MAX_COMPONENTS 4            /* "ns/a/b/c" at most */
#define TOUCH_INTERVAL 60           /* s between mtime refreshes */
#define PAUSE_SECONDS 60            /* write pause when writes keep failing */
#define WARN_INTERVAL 60            /* s between put-failure warnings */
#define STALE_TMP_SECONDS 3600      /* temp files older than this are stale */
#define EMPTY_DIR_SECONDS 60        /* empty directories untouched this long
                                       are removed */
#define TMP_PREFIX ".tmp-"

/* The namespaces a key may start with; nothing else is touched. */
static const char *const namespaces[] = { "obj", "blk", "url" };
#define N_NAMESPACES (sizeof namespaces / sizeof namespaces[0])

enum scan_reason {
  SCAN_OPEN,            /* like PERIODIC, and also clean DIR/.tmp-* */
  SCAN_PERIODIC,        /* evict to low watermark if over high */
  SCAN_NOSPACE,         /* the disk is full: free 20 % at least; skipped
                         * if another process is evicting already */
};

struct disk_cache {
  int dirfd;                    /* DIR, open */
  int lockfd;                   /* DIR/.lock, for flock */
  char *dir;                    /* for messages */
  uint64_t max_bytes, high, low, rescan_bytes;
  struct disk_cache_hooks hooks;
  const EVP_MD *md;             /* SHA-256 */
  EVP_MD *md_fetched;           /* freed on close (OpenSSL 3) */
  unsigned tmp_counter;         /* atomic */
  bool no_tmpfile;              /* atomic: O_TMPFILE or /proc unusable */

  pthread_mutex_t lock;
  pthread_cond_t scan_done;
  /* Guarded by lock: */
  struct disk_cache_stats stats;        /* stats.bytes = accounted size */
  uint64_t since_scan;          /* bytes written since the last scan */
  uint64_t during_scan;         /* bytes written while scanning */
  bool scanning;
  unsigned consecutive_failures;
  time_t paused_until;          /* monotonic seconds */
  time_t next_put_warning;      /* monotonic seconds */
};

/* One file found by a scan. */
struct scan_entry {
  char *path;
  struct timespec mtime;
  uint64_t size;                /* accounted */
  int meta;                     /* url/: evicted last */
};

struct scan {
  struct scan_entry *v;
  size_t n, cap;
  uint64_t total;
  int errnum;                   /* first error reading the tree, or 0 */
  time_t now;                   /* wall clock, for temp file age */
};

/* ------------------------------------------------------------------ */
/* Small helpers. */

static void
report (struct disk_cache *dc, bool warn, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* Format here (so %m works whatever the hook does with it) and hand the
 * line to hooks->warn or hooks->debug.  errno is preserved. */
static void
report (struct disk_cache *dc, bool warn, const char *fmt, ...)
{
  void (*fn) (void *, const char *, ...) =
    warn ? dc->hooks.warn : dc->hooks.debug;
  char msg[CLOOP_ERR_LEN];
  int saved = errno;
  va_list ap;

  if (fn == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  fn (dc->hooks.opaque, "%s", msg);
  errno = saved;
}

static time_t
monotonic_seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

/* Space an entry file of file_size bytes is accounted for. */
static uint64_t
accounted (uint64_t file_size)
{
  return (file_size + FS_BLOCK - 1) / FS_BLOCK * FS_BLOCK;
}

static void
to_hex (const unsigned char *in, size_t n, char *out)
{
  static const char digits[] = "0123456789abcdef";

  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

static int
from_hex_digit (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int
sha256 (const EVP_MD *md, const void *buf, size_t len, unsigned char out[32])
{
  unsigned int n;

  return EVP_Digest (buf, len, out, &n, md, NULL) == 1 && n == 32 ? 0 : -1;
}

static bool
name_char_ok (char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* A path component: non-empty, [A-Za-z0-9_.-], not starting with '.'
 * (which rules out ".", ".." and our temporary files). */
static bool
component_ok (const char *s, size_t len)
{
  if (len == 0 || s[0] == '.')
    return false;
  for (size_t i = 0; i < len; i++)
    if (!name_char_ok (s[i]))
      return false;
  return true;
}

/* Keys: 2 to MAX_COMPONENTS valid components, the first a namespace. */
static bool
key_valid (const char *key)
{
  size_t len = strnlen (key, DISK_CACHE_KEY_MAX);
  const char *p = key;
  unsigned n = 0;

  if (len == 0 || len >= DISK_CACHE_KEY_MAX || strstr (key, "..") != NULL)
    return false;
  while (*p) {
    const char *slash = strchr (p, '/');
    size_t clen = slash ? (size_t) (slash - p) : strlen (p);

    if (!component_ok (p, clen) || ++n > MAX_COMPONENTS)
      return false;
    if (n == 1) {
      bool known = false;
      for (size_t i = 0; i < N_NAMESPACES; i++)
        if (strlen (namespaces[i]) == clen &&
            memcmp (namespaces[i], p, clen) == 0)
          known = true;
      if (!known)
        return false;
    }
    if (slash == NULL)
      break;
    p = slash + 1;
    if (*p == '\0')
      return false;             /* trailing '/' */
  }
  return n >= 2;
}

/* For "blk/hh/<64 hex>" return true and the hash named. */
static bool
blk_key_hash (const char *key, unsigned char hash[32])
{
  const char *h = key + 7;

  if (strlen (key) != 7 + 64 || key[6] != '/' ||
      key[4] != h[0] || key[5] != h[1])
    return false;
  for (int i = 0; i < 32; i++) {
    int hi = from_hex_digit (h[2 * i]), lo = from_hex_digit (h[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    hash[i] = hi << 4 | lo;
  }
  return true;
}

/* Validate key; for blk/ keys also fill want[] and set *is_blk. */
static int
check_key (const char *key, bool *is_blk, unsigned char want[32],
           struct cloop_err *err)
{
  if (key == NULL || !key_valid (key))
    return cloop_err_set (err, EINVAL, "disk cache: invalid key \"%s\"",
                          key ? key : "(null)");
  *is_blk = strncmp (key, "blk/", 4) == 0;
  if (*is_blk && !blk_key_hash (key, want))
    return cloop_err_set (err, EINVAL,
                          "disk cache: blk/ key is not blk/<hh>/<sha256>: "
                          "\"%s\"", key);
  return 0;
}

static ssize_t
pread_full (int fd, void *buf, size_t len, off_t off)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = pread (fd, (char *) buf + done, len - done, off + done);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    if (r == 0)
      break;
    done += r;
  }
  return done;
}

static int
write_full (int fd, const void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = write (fd, (const char *) buf + done, len - done);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    if (r == 0) {
      errno = ENOSPC;
      return -1;
    }
    done += r;
  }
  return 0;
}

/* mkdir -p relative to at (AT_FDCWD for an ordinary path), mode 0700
 * for what is created; the first len bytes of path are used.  Tries the
 * whole path first and walks up only on ENOENT, so the usual case (a
 * new fan-out directory under existing parents) is one mkdirat. */
static int
mkdirs_at (int at, const char *path, size_t len)
{
  char buf[4096];
  size_t i = len;

  if (len == 0 || len >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy (buf, path, len);
  buf[len] = '\0';
  /* Walk up until a mkdirat succeeds or finds the directory there. */
  for (;;) {
    if (mkdirat (at, buf, 0700) == 0 || errno == EEXIST)
      break;
    if (errno != ENOENT)
      return -1;
    while (i > 0 && buf[i - 1] != '/')
      i--;
    while (i > 0 && buf[i - 1] == '/')
      i--;
    if (i == 0) {
      errno = ENOENT;
      return -1;                /* relative path whose first part failed */
    }
    buf[i] = '\0';
  }
  /* Then back down, creating the rest. */
  memcpy (buf, path, len);
  while (i < len) {
    char c;

    while (i < len && buf[i] == '/')
      i++;
    while (i < len && buf[i] != '/')
      i++;
    c = buf[i];
    buf[i] = '\0';
    if (mkdirat (at, buf, 0700) == -1 && errno != EEXIST)
      return -1;
    buf[i] = c;
  }
  return 0;
}

/* "<dir of key>/.tmp-<pid>-<tid>-<n>" (dirlen may be 0: DIR itself). */
static void
tmp_name (struct disk_cache *dc, char *out, size_t n,
          const char *key, size_t dirlen)
{
  unsigned c = __atomic_add_fetch (&dc->tmp_counter, 1, __ATOMIC_RELAXED);

  snprintf (out, n, "%.*s%s" TMP_PREFIX "%ld-%ld-%u",
            (int) dirlen, key, dirlen ? "/" : "",
            (long) getpid (), (long) gettid (), c);
}

/* A temporary file is stale if it is old or its writer is dead. */
static bool
tmp_is_stale (const char *name, const struct stat *st, time_t now)
{
  long pid;

  if (now - st->st_mtime > STALE_TMP_SECONDS)
    return true;
  if (sscanf (name, TMP_PREFIX "%ld-", &pid) != 1 || pid <= 0)
    return false;
  if (pid == (long) getpid ())
    return false;
  return kill ((pid_t) pid, 0) == -1 && errno == ESRCH;
}

/* ------------------------------------------------------------------ */
/* Opening: directory, layout version. */

/* Without a VERSION file we only take over an empty directory (dot
 * files and lost+found aside). */
static int
dir_is_empty (int dirfd)
{
  int fd = openat (dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d;
  struct dirent *e;
  int empty = 1;

  if (fd == -1)
    return -1;
  d = fdopendir (fd);
  if (d == NULL) {
    close (fd);
    return -1;
  }
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] != '.' && strcmp (e->d_name, "lost+found") != 0)
      empty = 0;
  closedir (d);
  return empty;
}

static int
write_version (struct disk_cache *dc)
{
  char tmp[64];
  int fd, e = 0;

  tmp_name (dc, tmp, sizeof tmp, "", 0);
  fd = openat (dc->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd == -1)
    return -1;
  if (write_full (fd, LAYOUT_TEXT, strlen (LAYOUT_TEXT)) == -1)
    e = errno;
  if (close (fd) == -1 && e == 0)
    e = errno;
  /* link() rather than rename(): never replace a VERSION another
   * process has just written, and never expose a partial one. */
  if (e == 0 && linkat (dc->dirfd, tmp, dc->dirfd, "VERSION", 0) == -1)
    e = errno;
  unlinkat (dc->dirfd, tmp, 0);
  errno = e;
  return e == 0 || e == EEXIST ? 0 : -1;
}

static int
check_layout (struct disk_cache *dc, struct cloop_err *err)
{
  char buf[128];

  for (int attempt = 0; attempt < 2; attempt++) {
    int fd = openat (dc->dirfd, "VERSION", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t r;

    if (fd >= 0) {
      r = pread_full (fd, buf, sizeof buf - 1, 0);
      close (fd);
      if (r == -1)
        return cloop_err_set (err, errno, "%s/VERSION: read: %m", dc->dir);
      buf[r] = '\0';
      if (strcmp (buf, LAYOUT_TEXT) != 0)
        return cloop_err_set (err, EINVAL,
                              "%s: not a disk cache of this layout "
                              "(VERSION is not \"%.*s\")", dc->dir,
                              (int) strlen (LAYOUT_TEXT) - 1, LAYOUT_TEXT);
      return 0;
    }
    if (errno != ENOENT)
      return cloop_err_set (err, errno, "%s/VERSION: %m", dc->dir);
    switch (dir_is_empty (dc->dirfd)) {
    case -1:
      return cloop_err_set (err, errno, "%s: %m", dc->dir);
    case 0:
      return cloop_err_set (err, ENOTEMPTY,
                            "%s: refusing to use a non-empty directory "
                            "without a VERSION file as a disk cache",
                            dc->dir);
    }
    if (write_version (dc) == -1)
      return cloop_err_set (err, errno, "%s/VERSION: create: %m", dc->dir);
  }
  return cloop_err_set (err, EIO, "%s/VERSION: vanished", dc->dir);
}

/* ------------------------------------------------------------------ */
/* Scanning and eviction. */

static void
scan_add (struct scan *s, const char *path, const struct stat *st, int meta)
{
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 256;
    struct scan_entry *v = realloc (s->v, cap * sizeof *v);
    if (v == NULL) {
      s->errnum = ENOMEM;
      return;
    }
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n].path = strdup (path);
  if (s->v[s->n].path == NULL) {
    s->errnum = ENOMEM;
    return;
  }
  s->v[s->n].mtime = st->st_mtim;
  s->v[s->n].size = accounted (st->st_size);
  s->v[s->n].meta = meta;
  s->total += s->v[s->n].size;
  s->n++;
}

/* Walk path (depth components deep) collecting entries and removing
 * stale temporary files.  Returns the number of things left in it. */
static size_t
scan_dir (struct disk_cache *dc, struct scan *s, const char *path,
          unsigned depth, int meta)
{
  int fd = openat (dc->dirfd, path,
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  DIR *d;
  struct dirent *e;
  size_t left = 0;

  if (fd == -1) {
    if (errno != ENOENT && s->errnum == 0)
      s->errnum = errno;
    return 1;
  }
  d = fdopendir (fd);
  if (d == NULL) {
    close (fd);
    s->errnum = s->errnum ? s->errnum : errno;
    return 1;
  }
  while ((e = readdir (d)) != NULL) {
    char child[DISK_CACHE_KEY_MAX + 64];
    struct stat st;

    if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
      continue;
    left++;
    if (snprintf (child, sizeof child, "%s/%s", path, e->d_name)
        >= (int) sizeof child ||
        fstatat (dirfd (d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1)
      continue;
    if (strncmp (e->d_name, TMP_PREFIX, strlen (TMP_PREFIX)) == 0) {
      if (S_ISREG (st.st_mode) && tmp_is_stale (e->d_name, &st, s->now) &&
          unlinkat (dirfd (d), e->d_name, 0) == 0) {
        report (dc, false, "disk cache: removed stale %s", child);
        left--;
      }
    }
    else if (e->d_name[0] == '.')
      ;                                 /* not ours */
    else if (S_ISDIR (st.st_mode) && depth + 1 < MAX_COMPONENTS) {
      /* Remove directories found empty (obj/<id> of old objects), once
       * nothing has been added to or removed from them for a while: one
       * a scan has just emptied by evicting is where puts are going on,
       * and a put that finds its directory gone must make it again
       * (open_tmpfile, write_entry), which under constant eviction
       * (a small cache-max-size) could fail several times running. */
      if (scan_dir (dc, s, child, depth + 1, meta) == 0 &&
          st.st_mtime + EMPTY_DIR_SECONDS <= s->now &&
          unlinkat (dc->dirfd, child, AT_REMOVEDIR) == 0)
        left--;
    }
    else if (S_ISREG (st.st_mode))
      scan_add (s, child, &st, meta);
  }
  closedir (d);
  return left;
}

/* DIR/.tmp-* (from write_version). */
static void
scan_root_tmp (struct disk_cache *dc, struct scan *s)
{
  int fd = openat (dc->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir (fd) : NULL;
  struct dirent *e;
  struct stat st;

  if (d == NULL) {
    if (fd >= 0)
      close (fd);
    return;
  }
  while ((e = readdir (d)) != NULL)
    if (strncmp (e->d_name, TMP_PREFIX, strlen (TMP_PREFIX)) == 0 &&
        fstatat (dc->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG (st.st_mode) && tmp_is_stale (e->d_name, &st, s->now))
      unlinkat (dc->dirfd, e->d_name, 0);
  closedir (d);
}

/* Oldest first; url/ entries after all others. */
static int
compare_lru (const void *a, const void *b)
{
  const struct scan_entry *x = a, *y = b;

  if (x->meta != y->meta)
    return x->meta - y->meta;
  if (x->mtime.tv_sec != y->mtime.tv_sec)
    return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
  if (x->mtime.tv_nsec != y->mtime.tv_nsec)
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
  return strcmp (x->path, y->path);
}

/* Unlink least recently used entries until s->total <= target, never
 * the one named protect.  Returns the number unlinked. */
static uint64_t
evict (struct disk_cache *dc, struct scan *s, uint64_t target,
       const char *protect)
{
  uint64_t n = 0;

  if (s->n > 1)
    qsort (s->v, s->n, sizeof *s->v, compare_lru);
  for (size_t i = 0; i < s->n && s->total > target; i++) {
    if (protect && strcmp (s->v[i].path, protect) == 0)
      continue;
    if (unlinkat (dc->dirfd, s->v[i].path, 0) == 0)
      n++;
    else if (errno != ENOENT)
      continue;                 /* still there: still counted */
    s->total -= s->v[i].size;   /* gone, whoever removed it */
  }
  return n;
}

/* Walk the tree, evict if needed, and reset the accounting.  Returns
 * 0, or -1 with err set if the tree could not be read (the accounting
 * is updated from what was seen anyway). */
static int
scan_and_evict (struct disk_cache *dc, enum scan_reason why,
                const char *protect, struct cloop_err *err)
{
  struct scan s = { .now = time (NULL) };
  uint64_t target = UINT64_MAX, evicted = 0;

  pthread_mutex_lock (&dc->lock);
  if (dc->scanning) {
    pthread_mutex_unlock (&dc->lock);
    return 0;
  }
  dc->scanning = true;
  dc->during_scan = 0;
  pthread_mutex_unlock (&dc->lock);

  if (flock (dc->lockfd, LOCK_EX | (why == SCAN_NOSPACE ? LOCK_NB : 0))
      == -1) {
    /* Another process is evicting: let it.  (Or flock is unsupported:
     * then scan without it, which at worst evicts twice as much.) */
    if (errno == EWOULDBLOCK) {
      pthread_mutex_lock (&dc->lock);
      dc->scanning = false;
      pthread_cond_broadcast (&dc->scan_done);
      pthread_mutex_unlock (&dc->lock);
      return 0;
    }
  }
  if (why == SCAN_OPEN)
    scan_root_tmp (dc, &s);
  for (size_t i = 0; i < N_NAMESPACES; i++)
    scan_dir (dc, &s, namespaces[i], 1, strcmp (namespaces[i], "url") == 0);

  if (dc->max_bytes && s.total > dc->high)
    target = dc->low;
  if (why == SCAN_NOSPACE) {
    uint64_t fifth_off = s.total - s.total / 5;
    target = target < fifth_off ? target : fifth_off;
  }
  if (s.errnum == 0 && target != UINT64_MAX)
    evicted = evict (dc, &s, target, protect);
  flock (dc->lockfd, LOCK_UN);

  pthread_mutex_lock (&dc->lock);
  dc->stats.bytes = s.total + dc->during_scan;
  dc->stats.evictions += evicted;
  dc->stats.scans++;
  dc->since_scan = 0;
  dc->scanning = false;
  pthread_cond_broadcast (&dc->scan_done);
  pthread_mutex_unlock (&dc->lock);

  report (dc, false, "disk cache %s: scanned %zu entries, %" PRIu64
          " bytes, evicted %" PRIu64, dc->dir, s.n, s.total, evicted);
  for (size_t i = 0; i < s.n; i++)
    free (s.v[i].path);
  free (s.v);
  if (s.errnum) {
    errno = s.errnum;
    if (err == NULL)            /* from a put: nobody else will say it */
      report (dc, true, "disk cache %s: scan: %m; not evicting", dc->dir);
    return cloop_err_set (err, s.errnum, "%s: scan: %m", dc->dir);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Public API. */

struct disk_cache *
disk_cache_open (const char *dir, uint64_t max_bytes,
                 const struct disk_cache_hooks *hooks,
                 struct cloop_err *err)
{
  struct disk_cache *dc = calloc (1, sizeof *dc);

  if (dc == NULL || (dc->dir = strdup (dir)) == NULL) {
    cloop_err_set (err, ENOMEM, "disk cache: %m");
    free (dc);
    return NULL;
  }
  dc->dirfd = dc->lockfd = -1;
  pthread_mutex_init (&dc->lock, NULL);
  pthread_cond_init (&dc->scan_done, NULL);
  if (hooks)
    dc->hooks = *hooks;
  dc->max_bytes = max_bytes;
  dc->high = max_bytes - max_bytes / 20;
  dc->low = max_bytes - max_bytes / 5;
  dc->rescan_bytes = max_bytes / 40 ? max_bytes / 40 : 1;

  if (mkdirs_at (AT_FDCWD, dir, strlen (dir)) == -1) {
    cloop_err_set (err, errno, "%s: mkdir: %m", dir);
    goto fail;
  }
  dc->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dc->dirfd == -1) {
    cloop_err_set (err, errno, "%s: %m", dir);
    goto fail;
  }
  if (check_layout (dc, err) == -1)
    goto fail;
  dc->lockfd = openat (dc->dirfd, ".lock",
                       O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (dc->lockfd == -1) {
    cloop_err_set (err, errno, "%s/.lock: %m", dir);
    goto fail;
  }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  dc->md = dc->md_fetched = EVP_MD_fetch (NULL, "SHA256", NULL);
#else
  dc->md = EVP_sha256 ();
#endif
  if (dc->md == NULL) {
    cloop_err_set (err, ENOTSUP, "disk cache: SHA-256 is not available");
    goto fail;
  }
  if (scan_and_evict (dc, SCAN_OPEN, NULL, err) == -1)
    goto fail;
  report (dc, false, "disk cache %s: opened, %" PRIu64 " bytes in use, "
          "limit %" PRIu64, dir, dc->stats.bytes, max_bytes);
  return dc;

 fail:
  disk_cache_close (dc);
  return NULL;
}

void
disk_cache_close (struct disk_cache *dc)
{
  if (dc == NULL)
    return;
  if (dc->lockfd >= 0)
    close (dc->lockfd);
  if (dc->dirfd >= 0)
    close (dc->dirfd);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  EVP_MD_free (dc->md_fetched);
#endif
  pthread_cond_destroy (&dc->scan_done);
  pthread_mutex_destroy (&dc->lock);
  free (dc->dir);
  free (dc);
}

int
disk_cache_object_id (char out[65], const char *url, const char *etag,
                      const char *last_modified, uint64_t size)
{
  EVP_MD_CTX *ctx;
  unsigned char hash[32];
  char size_text[32];
  int ok;

  if (url == NULL)
    return -1;
  snprintf (size_text, sizeof size_text, "%" PRIu64, size);
  ctx = EVP_MD_CTX_new ();
  ok = ctx != NULL &&
    EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL) == 1 &&
    EVP_DigestUpdate (ctx, url, strlen (url) + 1) == 1 &&
    EVP_DigestUpdate (ctx, etag ? etag : "", strlen (etag ? etag : "") + 1)
      == 1 &&
    EVP_DigestUpdate (ctx, last_modified ? last_modified : "",
                      strlen (last_modified ? last_modified : "") + 1) == 1 &&
    EVP_DigestUpdate (ctx, size_text, strlen (size_text)) == 1 &&
    EVP_DigestFinal_ex (ctx, hash, NULL) == 1;
  EVP_MD_CTX_free (ctx);
  if (!ok)
    return -1;
  to_hex (hash, 32, out);
  return 0;
}

int
disk_cache_key_range (char out[], size_t n, const char *object_id,
                      uint64_t offset, uint64_t length)
{
  int r;

  if (object_id == NULL || !component_ok (object_id, strlen (object_id)))
    return -1;
  /* Spread an object's entries over 256 subdirectories, as blk/ is:
   * one directory of thousands of entries serialises every writer on
   * its inode lock (measured: 12 % of a cold read's time). */
  unsigned fan = (unsigned) ((offset * UINT64_C (0x9E3779B97F4A7C15)) >> 56);
  r = snprintf (out, n, "obj/%s/%02x/%" PRIu64 "-%" PRIu64,
                object_id, fan, offset, length);
  return r < 0 || (size_t) r >= n || r >= DISK_CACHE_KEY_MAX ? -1 : 0;
}

int
disk_cache_key_hash (char out[], size_t n, const unsigned char *sha256_in)
{
  char hex[65];

  if (n < 7 + 64 + 1)
    return -1;
  to_hex (sha256_in, 32, hex);
  snprintf (out, n, "blk/%.2s/%s", hex, hex);
  return 0;
}

/* Parse a header.  Returns NULL if good, else what is wrong. */
static const char *
parse_header (const unsigned char *h, uint64_t *plen, unsigned char hash[32])
{
  if (memcmp (h, ENTRY_MAGIC, 8) != 0)
    return "bad magic";
  if (load_be32 (h + 8) != ENTRY_VERSION || load_be32 (h + 12) != HDR)
    return "unknown entry version";
  *plen = load_be64 (h + 16);
  memcpy (hash, h + 24, 32);
  return NULL;
}

static void
build_header (unsigned char *h, uint64_t plen, const unsigned char hash[32])
{
  memset (h, 0, HDR);
  memcpy (h, ENTRY_MAGIC, 8);
  store_be32 (h + 8, ENTRY_VERSION);
  store_be32 (h + 12, HDR);
  store_be64 (h + 16, plen);
  memcpy (h + 24, hash, 32);
}

/* A bad entry: unlink it if the name still refers to the file we read,
 * count it and say so. */
static void
discard_bad (struct disk_cache *dc, const struct stat *st, const char *key,
             const char *why)
{
  struct stat now;
  bool removed = false;

  if (fstatat (dc->dirfd, key, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
      now.st_dev == st->st_dev && now.st_ino == st->st_ino)
    removed = unlinkat (dc->dirfd, key, 0) == 0;
  pthread_mutex_lock (&dc->lock);
  dc->stats.corrupt++;
  dc->stats.misses++;
  if (removed) {
    uint64_t size = accounted (st->st_size);
    dc->stats.bytes -= size < dc->stats.bytes ? size : dc->stats.bytes;
  }
  pthread_mutex_unlock (&dc->lock);
  report (dc, true, "disk cache %s: %s: %s; %s", dc->dir, key, why,
          removed ? "deleted, will be fetched again" : "ignored");
}

static int
count_miss (struct disk_cache *dc, int r)
{
  pthread_mutex_lock (&dc->lock);
  dc->stats.misses++;
  pthread_mutex_unlock (&dc->lock);
  return r;
}

/* Check an open entry against its header and hash.  Returns NULL if it
 * is good (payload in buf, length in *plen), "" if it is good but of
 * the wrong length, or what is wrong with it.  -1 in *ioerr for an
 * I/O error. */
static const char *
verify_entry (struct disk_cache *dc, int fd, const struct stat *st,
              const unsigned char *want, void *buf, size_t cap, bool exact,
              uint64_t *plen, int *ioerr)
{
  unsigned char h[HDR], stored[32], actual[32];
  const char *why;
  ssize_t r;

  if (!S_ISREG (st->st_mode))
    return "not a regular file";
  r = pread_full (fd, h, HDR, 0);
  if (r == -1)
    goto io;
  if (r < HDR)
    return "truncated header";
  if ((why = parse_header (h, plen, stored)) != NULL)
    return why;
  if ((uint64_t) st->st_size != HDR + *plen)
    return "file size does not match its header (truncated?)";
  if (exact ? *plen != cap : *plen > cap)
    return "";
  r = pread_full (fd, buf, *plen, HDR);
  if (r == -1)
    goto io;
  if ((uint64_t) r < *plen)
    return "truncated payload";
  if (sha256 (dc->md, buf, *plen, actual) == -1)
    goto io;
  if (memcmp (actual, stored, 32) != 0)
    return "checksum mismatch";
  if (want && memcmp (actual, want, 32) != 0)
    return "payload does not hash to its name";
  return NULL;
 io:
  *ioerr = errno ? errno : EIO;
  return "I/O error";
}

/* The common part of disk_cache_get and disk_cache_get_meta. */
static int
read_entry (struct disk_cache *dc, const char *key, const unsigned char *want,
            void *buf, size_t cap, bool exact, size_t *len_out,
            struct cloop_err *err)
{
  struct stat st;
  uint64_t plen = 0;
  int ioerr = 0;
  const char *why;
  int fd = openat (dc->dirfd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

  if (fd == -1) {
    if (errno == ENOENT || errno == ENOTDIR)
      return count_miss (dc, 0);
    cloop_err_set (err, errno, "%s/%s: open: %m", dc->dir, key);
    return count_miss (dc, -1);
  }
  if (fstat (fd, &st) == -1) {
    cloop_err_set (err, errno, "%s/%s: fstat: %m", dc->dir, key);
    close (fd);
    return count_miss (dc, -1);
  }
  why = verify_entry (dc, fd, &st, want, buf, cap, exact, &plen, &ioerr);
  if (why == NULL && st.st_mtime + TOUCH_INTERVAL <= time (NULL)) {
    const struct timespec times[2] = { { .tv_nsec = UTIME_OMIT },
                                       { .tv_nsec = UTIME_NOW } };
    futimens (fd, times);       /* LRU; failure (read-only) is harmless */
  }
  close (fd);
  if (ioerr) {
    errno = ioerr;
    cloop_err_set (err, ioerr, "%s/%s: read: %m", dc->dir, key);
    return count_miss (dc, -1);
  }
  if (why && why[0] == '\0') {
    report (dc, false, "disk cache: %s: length %" PRIu64 ", wanted %s%zu",
            key, plen, exact ? "" : "at most ", cap);
    return count_miss (dc, 0);
  }
  if (why) {
    discard_bad (dc, &st, key, why);
    return 0;
  }
  pthread_mutex_lock (&dc->lock);
  dc->stats.hits++;
  pthread_mutex_unlock (&dc->lock);
  if (len_out)
    *len_out = plen;
  return 1;
}

int
disk_cache_get (struct disk_cache *dc, const char *key,
                void *buf, size_t len, struct cloop_err *err)
{
  unsigned char want[32];
  bool is_blk;

  if (check_key (key, &is_blk, want, err) == -1)
    return count_miss (dc, -1);
  return read_entry (dc, key, is_blk ? want : NULL, buf, len, true, NULL, err);
}

bool
disk_cache_has (struct disk_cache *dc, const char *key, size_t len)
{
  unsigned char want[32];
  struct stat st;
  bool is_blk;

  if (check_key (key, &is_blk, want, NULL) == -1)
    return false;
  return fstatat (dc->dirfd, key, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
    S_ISREG (st.st_mode) && (uint64_t) st.st_size == HDR + (uint64_t) len;
}

/* Write header + payload to fd with one writev (looping only on a
 * short write).  The inject_write_error hook, if it fires, leaves the
 * header alone written, like a write that failed half way.  Returns 0
 * or an errno. */
static int
write_payload (struct disk_cache *dc, int fd, const unsigned char *hdr,
               const void *buf, size_t len)
{
  struct iovec iov[2] = {
    { .iov_base = (void *) hdr, .iov_len = HDR },
    { .iov_base = (void *) buf, .iov_len = len },
  };
  struct iovec *v = iov;
  int n = 2;

  if (dc->hooks.inject_write_error) {
    int e = dc->hooks.inject_write_error (dc->hooks.opaque);
    if (e) {
      if (write_full (fd, hdr, HDR) == -1)
        return errno;
      return e;
    }
  }
  while (n > 0) {
    ssize_t r = writev (fd, v, n);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return errno;
    if (r == 0)
      return ENOSPC;
    while (n > 0 && (size_t) r >= v->iov_len) {
      r -= v->iov_len;
      v++;
      n--;
    }
    if (n > 0) {
      v->iov_base = (char *) v->iov_base + r;
      v->iov_len -= r;
    }
  }
  return 0;
}

/* The temporary-file + rename way: write to a unique temporary file
 * beside key and rename it over key, replacing any old entry.  Used
 * for url/ (replaceable) and wherever O_TMPFILE or /proc is missing.
 * *replaced is the accounted size of the entry it replaces, if any.
 * Returns 1 (written), 0 (an immutable entry of this length is already
 * there: kept) or -1 with the errno in *errnum. */
static int
write_entry_rename (struct disk_cache *dc, const char *key, bool immutable,
                    const unsigned char *hdr, const void *buf, size_t len,
                    uint64_t *replaced, int *errnum)
{
  size_t dirlen = strrchr (key, '/') - key;
  char tmp[DISK_CACHE_KEY_MAX + 64];
  struct stat st;
  int fd, e;

  if (fstatat (dc->dirfd, key, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISREG (st.st_mode)) {
    if (immutable && (uint64_t) st.st_size == HDR + (uint64_t) len)
      return 0;                 /* already cached (by another process?) */
    *replaced = accounted (st.st_size);
  }
  tmp_name (dc, tmp, sizeof tmp, key, dirlen);
  for (int attempt = 0;; attempt++) {
    fd = openat (dc->dirfd, tmp,
                 O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0)
      break;
    if (attempt < 3 && errno == EEXIST) {
      /* Left by a crashed writer whose pid and tid we now have. */
      tmp_name (dc, tmp, sizeof tmp, key, dirlen);
      continue;
    }
    /* ENOENT: the directory is new, or a scan just removed it empty. */
    if (errno != ENOENT || attempt == 3 ||
        mkdirs_at (dc->dirfd, key, dirlen) == -1) {
      *errnum = errno;
      return -1;
    }
  }
  e = write_payload (dc, fd, hdr, buf, len);
  if (close (fd) == -1 && e == 0)
    e = errno;                  /* NFS reports ENOSPC/EDQUOT here */
  if (e == 0 && renameat (dc->dirfd, tmp, dc->dirfd, key) == -1)
    e = errno;
  if (e) {
    unlinkat (dc->dirfd, tmp, 0);
    *errnum = e;
    return -1;
  }
  return 1;
}

/* Open an unnamed file in the directory of key (creating it on
 * ENOENT).  Returns the fd, or -1 with errno set. */
static int
open_tmpfile (struct disk_cache *dc, const char *key, size_t dirlen)
{
  char dir[DISK_CACHE_KEY_MAX];
  int fd;

  memcpy (dir, key, dirlen);
  dir[dirlen] = '\0';
  for (int attempt = 0;; attempt++) {
    fd = openat (dc->dirfd, dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    /* ENOENT: the directory is new, or a scan just removed it empty. */
    if (fd >= 0 || errno != ENOENT || attempt == 3)
      return fd;
    if (mkdirs_at (dc->dirfd, key, dirlen) == -1)
      return -1;
  }
}

/* Store an obj/ or blk/ entry: write an unnamed O_TMPFILE file and
 * link it in under key, which fails (EEXIST) rather than replace an
 * entry already there.  4 system calls, no temporary name, nothing
 * left behind by a crash.  Falls back to write_entry_rename when
 * O_TMPFILE is not supported or /proc is not mounted (remembered in
 * dc->no_tmpfile), or when the entry present has another length.
 * Returns like write_entry_rename. */
static int
write_entry (struct disk_cache *dc, const char *key, bool immutable,
             const unsigned char *hdr, const void *buf, size_t len,
             uint64_t *replaced, int *errnum)
{
  size_t dirlen = strrchr (key, '/') - key;
  char proc[64];
  struct stat st;
  int fd, e, r = -1;

  if (!immutable || dc->hooks.no_tmpfile ||
      __atomic_load_n (&dc->no_tmpfile, __ATOMIC_RELAXED))
    goto fallback;

  fd = open_tmpfile (dc, key, dirlen);
  if (fd == -1) {
    e = errno;
    if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL) {
      /* Old kernel (EISDIR: O_TMPFILE read as O_DIRECTORY) or a
       * filesystem without it. */
      __atomic_store_n (&dc->no_tmpfile, true, __ATOMIC_RELAXED);
      errno = e;
      report (dc, false, "disk cache %s: O_TMPFILE: %m; "
              "using temporary files", dc->dir);
      goto fallback;
    }
    *errnum = e;
    return -1;
  }
  e = write_payload (dc, fd, hdr, buf, len);
  if (e) {
    close (fd);                 /* the unnamed file goes with it */
    *errnum = e;
    return -1;
  }
  snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
  for (int attempt = 0;; attempt++) {
    if (linkat (AT_FDCWD, proc, dc->dirfd, key, AT_SYMLINK_FOLLOW) == 0) {
      r = 1;
      break;
    }
    e = errno;
    if (e == EEXIST) {
      /* Immutable: an entry of this length (verified on every read)
       * is as good as ours.  Another length can only be damage: let
       * the rename path replace it. */
      if (fstatat (dc->dirfd, key, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISREG (st.st_mode) &&
          (uint64_t) st.st_size == HDR + (uint64_t) len)
        r = 0;
      else
        r = 2;
      break;
    }
    if ((e == ENOENT && attempt == 0 &&
         fstatat (AT_FDCWD, proc, &st, AT_SYMLINK_NOFOLLOW) == -1) ||
        e == EPERM || e == EACCES || e == EXDEV || e == ENOSYS ||
        e == EOPNOTSUPP) {
      /* No /proc (linkat cannot name the file without
       * CAP_DAC_READ_SEARCH), or linking it is refused (a security
       * policy): the rename path still works, or fails for a reason
       * that is then counted. */
      __atomic_store_n (&dc->no_tmpfile, true, __ATOMIC_RELAXED);
      errno = e;
      report (dc, false, "disk cache %s: linkat %s: %m; "
              "using temporary files", dc->dir, proc);
      r = 2;
      break;
    }
    /* ENOENT with /proc there: a scan removed the (empty) directory
     * since open_tmpfile; recreate it, twice at most. */
    if (e != ENOENT || attempt == 2)
      break;
    if (mkdirs_at (dc->dirfd, key, dirlen) == -1) {
      e = errno;
      break;
    }
  }
  /* Any ENOSPC/EDQUOT was reported by writev: O_TMPFILE is local
   * filesystems only, where close does not fail. */
  close (fd);
  if (r == -1) {
    *errnum = e;
    return -1;
  }
  if (r != 2)
    return r;
 fallback:
  return write_entry_rename (dc, key, immutable, hdr, buf, len,
                             replaced, errnum);
}

/* Is a put of dsize accounted bytes allowed now?  Counts it if not. */
static bool
put_allowed (struct disk_cache *dc, uint64_t dsize)
{
  bool ok;

  pthread_mutex_lock (&dc->lock);
  ok = !(dc->max_bytes && dsize > dc->low) &&
    monotonic_seconds () >= dc->paused_until;
  if (!ok)
    dc->stats.puts_skipped++;
  pthread_mutex_unlock (&dc->lock);
  return ok;
}

/* A write failed: count, warn (rate-limited), evict on a full disk,
 * pause writing when failures repeat. */
static void
put_failed (struct disk_cache *dc, const char *key, int e)
{
  bool nospace = e == ENOSPC || e == EDQUOT;
  time_t now = monotonic_seconds ();
  bool warn, pause;

  pthread_mutex_lock (&dc->lock);
  dc->stats.put_failures++;
  dc->consecutive_failures++;
  pause = dc->consecutive_failures >= (nospace ? 2 : 3);
  if (pause) {
    dc->paused_until = now + PAUSE_SECONDS;
    dc->consecutive_failures = 0;
  }
  warn = now >= dc->next_put_warning;
  if (warn)
    dc->next_put_warning = now + WARN_INTERVAL;
  pthread_mutex_unlock (&dc->lock);

  errno = e;
  if (warn)
    report (dc, true, "disk cache %s: cannot write %s: %m; not cached",
            dc->dir, key);
  if (pause)
    report (dc, true, "disk cache %s: writes keep failing (%m); "
            "not writing for %d s", dc->dir, PAUSE_SECONDS);
  else if (nospace)
    scan_and_evict (dc, SCAN_NOSPACE, NULL, NULL);
}

/* A write succeeded: account for it, and scan or evict if that is due.
 * Waits for a running scan only if the bound itself is exceeded. */
static void
put_done (struct disk_cache *dc, const char *key, uint64_t dsize,
          uint64_t replaced)
{
  pthread_mutex_lock (&dc->lock);
  dc->stats.puts++;
  dc->stats.bytes += dsize;
  dc->stats.bytes -= replaced < dc->stats.bytes ? replaced : dc->stats.bytes;
  dc->since_scan += dsize;
  if (dc->scanning)
    dc->during_scan += dsize;
  dc->consecutive_failures = 0;
  while (dc->max_bytes &&
         (dc->stats.bytes > dc->high || dc->since_scan >= dc->rescan_bytes)) {
    if (!dc->scanning) {
      pthread_mutex_unlock (&dc->lock);
      scan_and_evict (dc, SCAN_PERIODIC, key, NULL);
      return;
    }
    if (dc->stats.bytes <= dc->max_bytes)
      break;                    /* someone is scanning; we are in bounds */
    pthread_cond_wait (&dc->scan_done, &dc->lock);
  }
  pthread_mutex_unlock (&dc->lock);
}

/* The common part of disk_cache_put and disk_cache_put_meta.  want is
 * the hash a blk/ key names; immutable says an existing entry of the
 * same length is already right (obj/, blk/). */
static int
put_entry (struct disk_cache *dc, const char *key, const unsigned char *want,
           bool immutable, const void *buf, size_t len, struct cloop_err *err)
{
  unsigned char hash[32], hdr[HDR];
  uint64_t dsize = accounted ((uint64_t) len + HDR), replaced = 0;
  int e, r;

  if (sha256 (dc->md, buf, len, hash) == -1) {
    report (dc, true, "disk cache: SHA-256 failed; %s not cached", key);
    return 0;
  }
  if (want && memcmp (hash, want, 32) != 0)
    return cloop_err_set (err, EINVAL, "disk cache: put %s: the payload "
                          "does not hash to the key", key);
  if (!put_allowed (dc, dsize))
    return 0;
  build_header (hdr, len, hash);
  r = write_entry (dc, key, immutable, hdr, buf, len, &replaced, &e);
  if (r == -1) {
    put_failed (dc, key, e);
    return 0;
  }
  if (r == 0)
    return 0;                   /* already cached (by another process?) */
  put_done (dc, key, dsize, replaced);
  return 0;
}

int
disk_cache_put (struct disk_cache *dc, const char *key,
                const void *buf, size_t len, struct cloop_err *err)
{
  unsigned char want[32];
  bool is_blk;

  if (check_key (key, &is_blk, want, err) == -1)
    return -1;
  return put_entry (dc, key, is_blk ? want : NULL,
                    strncmp (key, "url/", 4) != 0, buf, len, err);
}

static int
meta_key (struct disk_cache *dc, const char *name, char key[4 + 65],
          struct cloop_err *err)
{
  unsigned char hash[32];

  if (name == NULL || sha256 (dc->md, name, strlen (name), hash) == -1)
    return cloop_err_set (err, EINVAL, "disk cache: bad metadata name");
  memcpy (key, "url/", 4);
  to_hex (hash, 32, key + 4);
  return 0;
}

int
disk_cache_put_meta (struct disk_cache *dc, const char *name,
                     const void *buf, size_t len, struct cloop_err *err)
{
  char key[4 + 65];

  if (meta_key (dc, name, key, err) == -1)
    return -1;
  return put_entry (dc, key, NULL, false, buf, len, err);
}

int
disk_cache_get_meta (struct disk_cache *dc, const char *name,
                     void *buf, size_t bufsize, size_t *len_out,
                     struct cloop_err *err)
{
  char key[4 + 65];

  if (meta_key (dc, name, key, err) == -1)
    return count_miss (dc, -1);
  return read_entry (dc, key, NULL, buf, bufsize, false, len_out, err);
}

int
disk_cache_drop_meta (struct disk_cache *dc, const char *name,
                      struct cloop_err *err)
{
  char key[4 + 65];
  struct stat st;

  if (meta_key (dc, name, key, err) == -1)
    return -1;
  if (fstatat (dc->dirfd, key, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
      unlinkat (dc->dirfd, key, 0) == -1) {
    if (errno == ENOENT || errno == ENOTDIR)
      return 0;
    return cloop_err_set (err, errno, "%s/%s: unlink: %m", dc->dir, key);
  }
  pthread_mutex_lock (&dc->lock);
  uint64_t size = accounted (st.st_size);
  dc->stats.bytes -= size < dc->stats.bytes ? size : dc->stats.bytes;
  pthread_mutex_unlock (&dc->lock);
  return 0;
}

int
disk_cache_trim (struct disk_cache *dc, struct cloop_err *err)
{
  return scan_and_evict (dc, SCAN_PERIODIC, NULL, err);
}

/* Check one scanned entry (see disk_cache_check_all).  NULL if good,
 * else what is wrong; -1 in *ioerr for an I/O error. */
static const char *
check_one (struct disk_cache *dc, const char *key, uint64_t max_entry,
           struct stat *st, int *ioerr)
{
  unsigned char want[32];
  bool is_blk = strncmp (key, "blk/", 4) == 0;
  int fd = openat (dc->dirfd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  uint64_t plen;
  const char *why;
  void *buf;

  if (fd == -1) {
    if (errno != ENOENT)        /* gone meanwhile (evicted): not bad */
      *ioerr = errno;
    return NULL;
  }
  if (fstat (fd, st) == -1) {
    *ioerr = errno;
    close (fd);
    return NULL;
  }
  if (is_blk && !blk_key_hash (key, want)) {
    close (fd);
    return "not a blk/<hh>/<sha256> name";
  }
  if (S_ISREG (st->st_mode) && (uint64_t) st->st_size > HDR + max_entry) {
    close (fd);
    return "larger than any entry may be";
  }
  plen = S_ISREG (st->st_mode) && st->st_size > HDR ? st->st_size - HDR : 0;
  buf = malloc (plen ? plen : 1);
  if (buf == NULL) {
    *ioerr = ENOMEM;
    close (fd);
    return NULL;
  }
  why = verify_entry (dc, fd, st, is_blk ? want : NULL, buf, plen, false,
                      &plen, ioerr);
  free (buf);
  close (fd);
  return why;
}

int
disk_cache_check_all (struct disk_cache *dc, bool repair,
                      uint64_t max_entry, disk_cache_bad_fn *bad,
                      void *opaque, uint64_t *checked, uint64_t *nbad,
                      struct cloop_err *err)
{
  struct scan s = { .now = time (NULL) };
  int ret = 0;

  *checked = *nbad = 0;
  for (size_t i = 0; i < N_NAMESPACES; i++)
    scan_dir (dc, &s, namespaces[i], 1, 0);
  if (s.errnum) {
    errno = s.errnum;
    ret = cloop_err_set (err, s.errnum, "%s: scan: %m", dc->dir);
  }
  for (size_t i = 0; ret == 0 && i < s.n; i++) {
    struct stat st, now;
    int ioerr = 0;
    const char *why = check_one (dc, s.v[i].path, max_entry, &st, &ioerr);
    bool deleted = false;

    if (ioerr) {
      errno = ioerr;
      ret = cloop_err_set (err, ioerr, "%s/%s: %m", dc->dir, s.v[i].path);
      break;
    }
    ++*checked;
    if (why == NULL || why[0] == '\0')
      continue;
    ++*nbad;
    if (repair &&
        fstatat (dc->dirfd, s.v[i].path, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        now.st_dev == st.st_dev && now.st_ino == st.st_ino)
      deleted = unlinkat (dc->dirfd, s.v[i].path, 0) == 0;
    if (bad)
      bad (opaque, s.v[i].path, why, deleted);
  }
  for (size_t i = 0; i < s.n; i++)
    free (s.v[i].path);
  free (s.v);
  return ret;
}

void
disk_cache_get_stats (struct disk_cache *dc, struct disk_cache_stats *stats)
{
  pthread_mutex_lock (&dc->lock);
  *stats = dc->stats;
  pthread_mutex_unlock (&dc->lock);
}
