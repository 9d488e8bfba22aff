/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unit test of cache/diskcache.c.
 *
 * Checks the contract of diskcache.h: round trip, misses, verification
 * on every read with self-heal (flipped byte, truncation, a blk/ entry
 * that does not hash to its name), key validation, metadata blobs, the
 * size bound with LRU order, two handles on one directory (as two
 * processes would share it), stale temporary files, refusing foreign
 * directories, write failures (an injected ENOSPC always, and a real
 * full tmpfs when running as root where mount(2) is allowed), and both
 * write paths, O_TMPFILE + linkat and the temporary file + rename
 * fallback: an existing entry kept (EEXIST), a damaged one replaced,
 * directories recreated, a writer killed mid-write.
 * Exit status 0 on success, 1 on failure.
 */
#include <config.h>

#define _XOPEN_SOURCE_EXTENDED 1
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "diskcache.h"

#include "check.h"

#define HDR DISK_CACHE_HEADER_SIZE

static char base[64];
static unsigned warnings;
static int inject_errno;
static bool verbose;

static void
say (const char *what)
{
  printf ("test-diskcache: %s\n", what);
  fflush (stdout);
}

static void
on_warn (void *opaque, const char *fmt, ...)
{
  va_list ap;

  __atomic_add_fetch (&warnings, 1, __ATOMIC_RELAXED);
  if (verbose) {
    va_start (ap, fmt);
    fprintf (stderr, "  warn: ");
    vfprintf (stderr, fmt, ap);
    fprintf (stderr, "\n");
    va_end (ap);
  }
}

static void
on_debug (void *opaque, const char *fmt, ...)
{
  va_list ap;

  if (verbose) {
    va_start (ap, fmt);
    fprintf (stderr, "  debug: ");
    vfprintf (stderr, fmt, ap);
    fprintf (stderr, "\n");
    va_end (ap);
  }
}

static void count_tmp_in (const char *dir);

/* What the write hook does besides injecting inject_errno: count the
 * temporary files in probe_dir (0 on the O_TMPFILE path, 1 on the
 * rename path), or die there like a writer killed mid-write. */
static const char *probe_dir;
static unsigned probed_tmp_files;
static bool die_in_write;

static int
inject (void *opaque)
{
  if (probe_dir)
    count_tmp_in (probe_dir);
  if (die_in_write)
    raise (SIGKILL);
  return inject_errno;
}

static const struct disk_cache_hooks hooks = {
  .warn = on_warn, .debug = on_debug, .inject_write_error = inject,
};

/* The same, forced onto the temporary file + rename path, as without
 * O_TMPFILE or /proc. */
static const struct disk_cache_hooks hooks_rename = {
  .warn = on_warn, .debug = on_debug, .inject_write_error = inject,
  .no_tmpfile = 1,
};

static struct disk_cache *
open_cache (const char *dir, uint64_t max_bytes)
{
  struct cloop_err err;
  struct disk_cache *dc = disk_cache_open (dir, max_bytes, &hooks, &err);

  if (dc == NULL) {
    fprintf (stderr, "test-diskcache: FAIL: open %s: %s\n", dir, err.msg);
    exit (1);
  }
  return dc;
}

static void
fill (unsigned char *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char) (seed * 131 + i * 7 + (i >> 8));
}

static bool
exists (const char *dir, const char *key)
{
  char path[512];
  struct stat st;

  snprintf (path, sizeof path, "%s/%s", dir, key);
  return stat (path, &st) == 0;
}

static void set_age (const char *dir, const char *key, time_t seconds_ago);

/* Make every url/ entry seconds_ago old. */
static void
age_meta (const char *dir, time_t seconds_ago)
{
  char path[256], key[300];
  DIR *d;
  struct dirent *e;

  snprintf (path, sizeof path, "%s/url", dir);
  d = opendir (path);
  CHECK (d != NULL);
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] != '.') {
      snprintf (key, sizeof key, "url/%s", e->d_name);
      set_age (dir, key, seconds_ago);
    }
  closedir (d);
}

static void
set_age (const char *dir, const char *key, time_t seconds_ago)
{
  char path[512];
  struct timespec t[2] = { { .tv_sec = time (NULL) - seconds_ago },
                           { .tv_sec = time (NULL) - seconds_ago } };

  snprintf (path, sizeof path, "%s/%s", dir, key);
  CHECK (utimensat (AT_FDCWD, path, t, 0) == 0);
}

/* du-like: bytes of regular files on disk; and temporary files left. */
static uint64_t du_bytes;
static unsigned tmp_files;

static int
du_visit (const char *path, const struct stat *st, int type, struct FTW *f)
{
  if (type == FTW_F && S_ISREG (st->st_mode)) {
    if (strncmp (path + f->base, ".tmp-", 5) == 0)
      tmp_files++;
    else if (strcmp (path + f->base, "VERSION") != 0 &&
             strcmp (path + f->base, ".lock") != 0)
      du_bytes += (uint64_t) st->st_blocks * 512;
  }
  return 0;
}

static uint64_t
du (const char *dir)
{
  du_bytes = 0;
  tmp_files = 0;
  CHECK (nftw (dir, du_visit, 16, FTW_PHYS) == 0);
  return du_bytes;
}

static void
count_tmp_in (const char *dir)
{
  uint64_t saved = du_bytes;

  du (dir);
  probed_tmp_files = tmp_files;
  du_bytes = saved;
}

static void
key_for (char *key, size_t n, unsigned i)
{
  CHECK (disk_cache_key_range (key, n, "testobj", (uint64_t) i * 65536,
                               4000) == 0);
}

/* ------------------------------------------------------------------ */

static void
test_round_trip_and_verify (void)
{
  char dir[128], key[DISK_CACHE_KEY_MAX], path[512], id[65], id2[65];
  unsigned char data[5000], out[5000];
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc;
  struct stat sb;
  int fd;

  say ("open creates DIR (mode 0700) and VERSION");
  snprintf (dir, sizeof dir, "%s/a/b/cache", base);
  dc = open_cache (dir, 0);
  CHECK (stat (dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
  CHECK (exists (dir, "VERSION"));

  say ("object ids: 64 hex, stable, change with the ETag");
  CHECK (disk_cache_object_id (id, "http://h/x.cloop", "\"e1\"", NULL, 10) == 0);
  CHECK (strlen (id) == 64 && strspn (id, "0123456789abcdef") == 64);
  CHECK (disk_cache_object_id (id2, "http://h/x.cloop", "\"e1\"", "", 10) == 0);
  CHECK (strcmp (id, id2) == 0);
  CHECK (disk_cache_object_id (id2, "http://h/x.cloop", "\"e2\"", NULL, 10) == 0);
  CHECK (strcmp (id, id2) != 0);
  CHECK (disk_cache_object_id (id2, "http://h/x.cloop", "\"e1\"", NULL, 11) == 0);
  CHECK (strcmp (id, id2) != 0);

  say ("put/get round trip");
  CHECK (disk_cache_key_range (key, sizeof key, id, 4096, sizeof data) == 0);
  CHECK (strncmp (key, "obj/", 4) == 0 && strstr (key, "/4096-5000"));
  fill (data, sizeof data, 1);
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
  CHECK (memcmp (data, out, sizeof data) == 0);
  snprintf (path, sizeof path, "%s/%s", dir, key);
  CHECK (stat (path, &sb) == 0 && sb.st_size == HDR + (off_t) sizeof data);
  CHECK (disk_cache_has (dc, key, sizeof data));
  CHECK (!disk_cache_has (dc, key, sizeof data - 1));
  CHECK (!disk_cache_has (dc, "obj/none/0-1", 1));
  CHECK (!disk_cache_has (dc, "../etc/passwd", 1));

  say ("a miss; a wrong length is a miss and leaves the entry alone");
  CHECK (disk_cache_get (dc, "obj/none/0-1", out, 1, &err) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out - 1, &err) == 0);
  CHECK (exists (dir, key));
  disk_cache_get_stats (dc, &st);
  CHECK (st.hits == 1 && st.misses == 2 && st.corrupt == 0 && st.puts == 1);

  say ("a flipped payload byte: miss, deleted, counted, warned; re-put works");
  fd = open (path, O_RDWR);
  CHECK (fd >= 0);
  CHECK (pread (fd, out, 1, HDR + 100) == 1);
  out[0] ^= 0x10;
  CHECK (pwrite (fd, out, 1, HDR + 100) == 1);
  close (fd);
  warnings = 0;
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 0);
  CHECK (!exists (dir, key));
  disk_cache_get_stats (dc, &st);
  CHECK (st.corrupt == 1 && warnings == 1);
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
  CHECK (memcmp (data, out, sizeof data) == 0);

  say ("truncated payload and truncated header: miss and deleted");
  CHECK (truncate (path, HDR + 10) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 0);
  CHECK (!exists (dir, key));
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (truncate (path, 10) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 0);
  CHECK (!exists (dir, key));
  disk_cache_get_stats (dc, &st);
  CHECK (st.corrupt == 3);

  say ("an unchanged immutable entry is not rewritten");
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  disk_cache_get_stats (dc, &st);
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  {
    struct disk_cache_stats st2;
    disk_cache_get_stats (dc, &st2);
    CHECK (st2.puts == st.puts);
  }
  disk_cache_close (dc);

  say ("entries survive close and reopen");
  dc = open_cache (dir, 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
  CHECK (memcmp (data, out, sizeof data) == 0);
  disk_cache_close (dc);
}

static void
test_blk_and_keys (void)
{
  char dir[128], key[DISK_CACHE_KEY_MAX], key2[DISK_CACHE_KEY_MAX];
  char from[512], to[512];
  unsigned char data[3000], other[3000], out[3000], hash[32], hash2[32];
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc;
  unsigned int n;
  static const char *const bad_keys[] = {
    "", "obj", "obj/", "/obj/x", "obj/../x", "obj/a..b", "obj//x",
    "obj/x/", "foo/x", "obj/.tmp-1-2-3", "obj/a b", "obj/a\\b",
    "obj/a/b/c/d", "blk/00/zz", "blk/ab/abcd", "VERSION",
  };

  snprintf (dir, sizeof dir, "%s/blk", base);
  dc = open_cache (dir, 0);

  say ("blk/ keys: fan-out name, content must hash to the name");
  fill (data, sizeof data, 2);
  fill (other, sizeof other, 3);
  CHECK (EVP_Digest (data, sizeof data, hash, &n, EVP_sha256 (), NULL) == 1);
  CHECK (EVP_Digest (other, sizeof other, hash2, &n, EVP_sha256 (), NULL) == 1);
  CHECK (disk_cache_key_hash (key, sizeof key, hash) == 0);
  CHECK (strlen (key) == 71 && key[4] == key[7] && key[5] == key[8]);
  CHECK (disk_cache_key_hash (key, 10, hash) == -1);
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
  CHECK (memcmp (out, data, sizeof data) == 0);
  CHECK (disk_cache_key_hash (key2, sizeof key2, hash2) == 0);
  CHECK (disk_cache_put (dc, key2, data, sizeof data, &err) == -1);
  CHECK (err.errnum == EINVAL);
  CHECK (!exists (dir, key2));

  say ("a blk/ file whose (self-consistent) payload has another hash: "
       "rejected and deleted");
  snprintf (from, sizeof from, "%s/%s", dir, key);
  snprintf (to, sizeof to, "%s/%.6s", dir, key2);
  mkdir (to, 0700);
  snprintf (to, sizeof to, "%s/%s", dir, key2);
  CHECK (rename (from, to) == 0);
  CHECK (disk_cache_get (dc, key2, out, sizeof out, &err) == 0);
  CHECK (!exists (dir, key2));
  disk_cache_get_stats (dc, &st);
  CHECK (st.corrupt == 1);

  say ("invalid keys are refused by get and put");
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    if (disk_cache_put (dc, bad_keys[i], data, 10, &err) != -1 ||
        disk_cache_get (dc, bad_keys[i], out, 10, &err) != -1) {
      fprintf (stderr, "test-diskcache: FAIL: key \"%s\" accepted\n",
               bad_keys[i]);
      exit (1);
    }
  }
  CHECK (disk_cache_key_range (key, sizeof key, "../x", 0, 1) == -1);
  CHECK (disk_cache_key_range (key, 11, "abc", 0, 1) == -1);

  say ("metadata blobs: variable length, replaced in place");
  {
    const char *m1 = "url=http://h/x\netag=\"1\"\n";
    const char *m2 = "url=http://h/x\netag=\"2\"\n";
    char mb[256];
    size_t len = 0;

    CHECK (disk_cache_get_meta (dc, "http://h/x", mb, sizeof mb, &len,
                                &err) == 0);
    CHECK (disk_cache_put_meta (dc, "http://h/x", m1, strlen (m1), &err) == 0);
    CHECK (disk_cache_get_meta (dc, "http://h/x", mb, sizeof mb, &len,
                                &err) == 1);
    CHECK (len == strlen (m1) && memcmp (mb, m1, len) == 0);
    CHECK (disk_cache_put_meta (dc, "http://h/x", m2, strlen (m2), &err) == 0);
    CHECK (disk_cache_get_meta (dc, "http://h/x", mb, sizeof mb, &len,
                                &err) == 1);
    CHECK (len == strlen (m2) && memcmp (mb, m2, len) == 0);
    CHECK (disk_cache_get_meta (dc, "http://h/x", mb, 5, &len, &err) == 0);
  }
  disk_cache_close (dc);
}

static void
test_lru_bound (void)
{
  char dir[128], key[DISK_CACHE_KEY_MAX];
  unsigned char data[4000], out[4000];
  const uint64_t max = 10 * 4096;      /* high 38912, low 32768 */
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc;

  say ("LRU: a get refreshes an old entry; eviction takes the oldest");
  snprintf (dir, sizeof dir, "%s/lru", base);
  dc = open_cache (dir, max);
  CHECK (disk_cache_put_meta (dc, "image", "identity", 8, &err) == 0);
  for (unsigned i = 0; i < 8; i++) {
    key_for (key, sizeof key, i);
    fill (data, sizeof data, i);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    set_age (dir, key, 1000 - i);       /* 0 oldest */
  }
  age_meta (dir, 5000);                 /* older than every block */
  key_for (key, sizeof key, 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);  /* touch */
  for (unsigned i = 8; i < 10; i++) {
    key_for (key, sizeof key, i);
    fill (data, sizeof data, i);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  }
  /* Put 8 made 10 files of 4096 > 38912: evicted to <= 32768, oldest
   * block first (0 was refreshed, the url/ blob goes last): 1, 2.  Put 9
   * made 9 files = 36864, under the high watermark. */
  key_for (key, sizeof key, 0);
  CHECK (exists (dir, key));
  for (unsigned i = 1; i <= 2; i++) {
    key_for (key, sizeof key, i);
    CHECK (!exists (dir, key));
  }
  for (unsigned i = 3; i < 10; i++) {
    key_for (key, sizeof key, i);
    CHECK (exists (dir, key));
  }
  CHECK (du (dir) <= max);
  CHECK (tmp_files == 0);

  say ("bound: the directory stays under max_bytes (+1 entry) while "
       "putting 10x max_bytes; newest survive; metadata evicted last");
  for (unsigned i = 10; i < 110; i++) {
    key_for (key, sizeof key, i);
    fill (data, sizeof data, i);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    CHECK (du (dir) <= max + 4096);
  }
  for (unsigned i = 105; i < 110; i++) {
    key_for (key, sizeof key, i);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
    fill (data, sizeof data, i);
    CHECK (memcmp (out, data, sizeof data) == 0);
  }
  {
    size_t len;
    CHECK (disk_cache_get_meta (dc, "image", out, sizeof out, &len, &err) == 1);
  }
  disk_cache_get_stats (dc, &st);
  CHECK (st.evictions >= 90);
  CHECK (st.bytes <= max);

  say ("an entry bigger than 80 % of max_bytes is not cached");
  {
    static unsigned char big[36000];
    CHECK (disk_cache_put (dc, "obj/big/0-36000", big, sizeof big, &err) == 0);
    CHECK (!exists (dir, "obj/big/0-36000"));
    disk_cache_get_stats (dc, &st);
    CHECK (st.puts_skipped == 1);
  }
  disk_cache_close (dc);

  say ("reopen with a smaller limit evicts at open");
  dc = open_cache (dir, 4 * 4096);
  CHECK (du (dir) <= 4 * 4096);
  disk_cache_close (dc);
}

/* Two handles on one directory, used by two threads each. */
struct worker {
  struct disk_cache *dc;
  unsigned seed;
  unsigned hits;
};

static void *
worker_run (void *arg)
{
  struct worker *w = arg;
  unsigned char data[4000], out[4000];
  char key[DISK_CACHE_KEY_MAX];
  struct cloop_err err;

  for (unsigned n = 0; n < 400; n++) {
    unsigned i = rand_r (&w->seed) % 40;
    int r;

    key_for (key, sizeof key, i);
    r = disk_cache_get (w->dc, key, out, sizeof out, &err);
    CHECK (r == 0 || r == 1);
    fill (data, sizeof data, i);
    if (r == 1) {
      CHECK (memcmp (out, data, sizeof data) == 0);
      w->hits++;
    }
    else
      CHECK (disk_cache_put (w->dc, key, data, sizeof data, &err) == 0);
  }
  return NULL;
}

static void
test_shared_dir (void)
{
  char dir[128], key[DISK_CACHE_KEY_MAX];
  unsigned char data[4000], out[4000];
  const uint64_t max = 20 * 4096;
  struct disk_cache_stats s1, s2;
  struct disk_cache *a, *b;
  struct cloop_err err;
  struct worker w[4];
  pthread_t t[4];

  say ("two handles on one directory: each sees the other's entries");
  snprintf (dir, sizeof dir, "%s/shared", base);
  a = open_cache (dir, max);
  b = open_cache (dir, max);
  for (unsigned i = 0; i < 60; i++) {
    struct disk_cache *writer = i % 2 ? a : b, *reader = i % 2 ? b : a;
    key_for (key, sizeof key, i);
    fill (data, sizeof data, i);
    CHECK (disk_cache_put (writer, key, data, sizeof data, &err) == 0);
    CHECK (disk_cache_get (reader, key, out, sizeof out, &err) == 1);
    CHECK (memcmp (out, data, sizeof data) == 0);
    CHECK (du (dir) <= max + 2 * 4096);
  }

  say ("two handles x two threads, random gets and puts: never wrong "
       "data, bound kept");
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker) { .dc = i % 2 ? a : b, .seed = 17 + i };
    CHECK (pthread_create (&t[i], NULL, worker_run, &w[i]) == 0);
  }
  for (int i = 0; i < 4; i++)
    CHECK (pthread_join (t[i], NULL) == 0);
  CHECK (du (dir) <= max + 4 * 4096);
  CHECK (tmp_files == 0);
  CHECK (disk_cache_trim (a, &err) == 0);
  CHECK (du (dir) <= max);
  disk_cache_get_stats (a, &s1);
  disk_cache_get_stats (b, &s2);
  CHECK (s1.corrupt == 0 && s2.corrupt == 0);
  CHECK (w[0].hits + w[1].hits + w[2].hits + w[3].hits > 0);
  disk_cache_close (a);
  disk_cache_close (b);
}

static void
make_file (const char *path, time_t age)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  struct timespec t[2] = { { .tv_sec = time (NULL) - age },
                           { .tv_sec = time (NULL) - age } };

  CHECK (fd >= 0);
  CHECK (write (fd, "partial", 7) == 7);
  close (fd);
  CHECK (utimensat (AT_FDCWD, path, t, 0) == 0);
}

static void
test_stale_tmp_and_foreign_dirs (void)
{
  char dir[128], p1[256], p2[256], p3[256], p4[256];
  struct disk_cache *dc;
  struct cloop_err err;
  pid_t dead;
  int fd;

  say ("open removes temp files of dead writers and old ones, keeps "
       "live fresh ones");
  snprintf (dir, sizeof dir, "%s/stale", base);
  dc = open_cache (dir, 0);
  disk_cache_close (dc);
  dead = fork ();
  CHECK (dead >= 0);
  if (dead == 0)
    _exit (0);
  CHECK (waitpid (dead, NULL, 0) == dead);
  snprintf (p1, sizeof p1, "%s/obj", dir);
  mkdir (p1, 0700);
  snprintf (p1, sizeof p1, "%s/obj/x", dir);
  mkdir (p1, 0700);
  snprintf (p1, sizeof p1, "%s/obj/x/.tmp-%d-1-1", dir, (int) dead);
  snprintf (p2, sizeof p2, "%s/obj/x/.tmp-%d-1-2", dir, (int) getpid ());
  snprintf (p3, sizeof p3, "%s/obj/x/.tmp-%d-1-3", dir, (int) getpid ());
  snprintf (p4, sizeof p4, "%s/.tmp-%d-1-4", dir, (int) dead);
  make_file (p1, 0);
  make_file (p2, 2 * 3600);
  make_file (p3, 0);
  make_file (p4, 0);
  /* On the rename path, the only one that names temporary files (the
   * pid-reuse case below needs it). */
  dc = disk_cache_open (dir, 0, &hooks_rename, &err);
  CHECK (dc != NULL);
  CHECK (access (p1, F_OK) == -1 && access (p2, F_OK) == -1);
  CHECK (access (p3, F_OK) == 0);
  CHECK (access (p4, F_OK) == -1);

  say ("a leftover temp file with our own pid/tid/counter (pid reuse) "
       "does not block a put");
  snprintf (p1, sizeof p1, "%s/obj/x/.tmp-%d-%d-1", dir, (int) getpid (),
            (int) gettid ());
  snprintf (p2, sizeof p2, "%s/obj/x/.tmp-%d-%d-2", dir, (int) getpid (),
            (int) gettid ());
  make_file (p1, 0);
  make_file (p2, 0);
  CHECK (disk_cache_put (dc, "obj/x/0-7", "payload", 7, &err) == 0);
  CHECK (exists (dir, "obj/x/0-7"));

  say ("a scan removes an empty directory untouched for a minute, not "
       "one just emptied (puts may be going on in it)");
  snprintf (p1, sizeof p1, "%s/obj/fresh", dir);
  snprintf (p2, sizeof p2, "%s/obj/old", dir);
  CHECK (mkdir (p1, 0700) == 0 && mkdir (p2, 0700) == 0);
  set_age (dir, "obj/old", 120);
  CHECK (disk_cache_trim (dc, &err) == 0);
  CHECK (access (p1, F_OK) == 0);
  CHECK (access (p2, F_OK) == -1);
  disk_cache_close (dc);

  say ("a non-empty directory without VERSION, or another layout, is "
       "refused");
  snprintf (dir, sizeof dir, "%s/foreign", base);
  CHECK (mkdir (dir, 0755) == 0);
  snprintf (p1, sizeof p1, "%s/precious", dir);
  make_file (p1, 0);
  CHECK (disk_cache_open (dir, 0, &hooks, &err) == NULL);
  CHECK (err.errnum == ENOTEMPTY);
  CHECK (access (p1, F_OK) == 0);
  snprintf (p1, sizeof p1, "%s/VERSION", dir);
  fd = open (p1, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0 && write (fd, "something else 7\n", 17) == 17);
  close (fd);
  CHECK (disk_cache_open (dir, 0, &hooks, &err) == NULL);
  CHECK (err.errnum == EINVAL);
}

static void
test_write_failures (void)
{
  char dir[128], key[DISK_CACHE_KEY_MAX];
  unsigned char data[4000], out[4000];
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc;

  say ("injected ENOSPC: put returns 0, warns, leaves no temp file; "
       "repeated failures pause writing");
  snprintf (dir, sizeof dir, "%s/nospace", base);
  dc = open_cache (dir, 0);
  key_for (key, sizeof key, 1);
  fill (data, sizeof data, 1);
  warnings = 0;
  inject_errno = ENOSPC;
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (warnings == 1);
  CHECK (!exists (dir, key));
  du (dir);
  CHECK (tmp_files == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 0);
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  disk_cache_get_stats (dc, &st);
  CHECK (st.put_failures == 2);
  inject_errno = 0;
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (!exists (dir, key));           /* paused */
  disk_cache_get_stats (dc, &st);
  CHECK (st.puts_skipped == 1 && st.puts == 0);
  disk_cache_close (dc);

  say ("injected EIO: put returns 0, next put succeeds");
  dc = open_cache (dir, 0);
  inject_errno = EIO;
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  inject_errno = 0;
  CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
  CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
  disk_cache_close (dc);
}

static ino_t
inode_of (const char *dir, const char *key)
{
  char path[512];
  struct stat st;

  snprintf (path, sizeof path, "%s/%s", dir, key);
  CHECK (stat (path, &st) == 0);
  return st.st_ino;
}

/* Fork a writer that dies (SIGKILL) in the middle of writing key. */
static void
put_and_die (const char *dir, const struct disk_cache_hooks *h,
             const char *key, const unsigned char *data, size_t len)
{
  int status;
  pid_t pid = fork ();

  CHECK (pid != -1);
  if (pid == 0) {
    struct cloop_err err;
    struct disk_cache *dc = disk_cache_open (dir, 0, h, &err);

    if (dc == NULL)
      _exit (2);
    die_in_write = true;
    disk_cache_put (dc, key, data, len, &err);
    _exit (3);                  /* not reached */
  }
  CHECK (waitpid (pid, &status, 0) == pid);
  CHECK (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
}

/* Both write paths: O_TMPFILE + linkat (default) and temporary file +
 * rename (no_tmpfile, as without O_TMPFILE or /proc). */
static void
test_write_paths (void)
{
  static const struct {
    const char *name;
    const struct disk_cache_hooks *hooks;
    unsigned tmp_while_writing;
  } paths[] = {
    { "O_TMPFILE + linkat", &hooks, 0 },
    { "temporary file + rename (fallback)", &hooks_rename, 1 },
  };
  char dir[128], key[DISK_CACHE_KEY_MAX], keydir[512], path[512];
  char msg[200], *slash;
  unsigned char data[4000], other[4000], out[4000];
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc, *dc2;
  uint64_t one = 4096;          /* 64 + 4000 bytes, in 4 KiB blocks */
  ino_t ino;
  int fd;

  for (unsigned p = 0; p < 2; p++) {
    snprintf (msg, sizeof msg, "%s: writes, creates directories lazily, "
              "keeps an entry already there (EEXIST), replaces a damaged "
              "one and url/ entries", paths[p].name);
    say (msg);
    snprintf (dir, sizeof dir, "%s/paths%u", base, p);
    dc = disk_cache_open (dir, 0, paths[p].hooks, &err);
    CHECK (dc != NULL);
    key_for (key, sizeof key, 7);
    snprintf (keydir, sizeof keydir, "%s/%s", dir, key);
    slash = strrchr (keydir, '/');
    *slash = '\0';
    CHECK (!exists (dir, "obj"));       /* nothing made before a put */
    fill (data, sizeof data, 7);

    /* The first put creates obj/<id>/<ff>; is a named temporary file
     * visible while it writes? */
    probe_dir = keydir;
    probed_tmp_files = 99;
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    probe_dir = NULL;
    CHECK (probed_tmp_files == paths[p].tmp_while_writing);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
    CHECK (memcmp (out, data, sizeof data) == 0);
    disk_cache_get_stats (dc, &st);
    CHECK (st.puts == 1 && st.put_failures == 0 && st.bytes == one);
    ino = inode_of (dir, key);

    /* Put again, from this handle and from a second one (another
     * process): the entry is kept, not rewritten, not a failure, not
     * counted twice. */
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    dc2 = disk_cache_open (dir, 0, paths[p].hooks, &err);
    CHECK (dc2 != NULL);
    CHECK (disk_cache_put (dc2, key, data, sizeof data, &err) == 0);
    CHECK (inode_of (dir, key) == ino);
    disk_cache_get_stats (dc, &st);
    CHECK (st.puts == 1 && st.put_failures == 0 && st.bytes == one);
    disk_cache_get_stats (dc2, &st);
    CHECK (st.puts == 0 && st.put_failures == 0 && st.bytes == one);
    disk_cache_close (dc2);

    /* A damaged entry of another length under the name (a power loss
     * before its blocks reached the disk) is replaced by a put. */
    snprintf (path, sizeof path, "%s/%s", dir, key);
    fd = open (path, O_WRONLY | O_TRUNC);
    CHECK (fd >= 0 && write (fd, "junk", 4) == 4 && close (fd) == 0);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    CHECK (inode_of (dir, key) != ino);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
    CHECK (memcmp (out, data, sizeof data) == 0);
    disk_cache_get_stats (dc, &st);
    CHECK (st.puts == 2 && st.corrupt == 0);

    /* The directory went away (a scan removes empty ones): recreated. */
    CHECK (unlink (path) == 0 && rmdir (keydir) == 0);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);

    /* url/ entries are replaced, and accounted once. */
    fill (other, sizeof other, 8);
    CHECK (disk_cache_put_meta (dc, "u", data, sizeof data, &err) == 0);
    disk_cache_get_stats (dc, &st);
    uint64_t before = st.bytes;
    CHECK (disk_cache_put_meta (dc, "u", other, sizeof other, &err) == 0);
    size_t got = 0;
    CHECK (disk_cache_get_meta (dc, "u", out, sizeof out, &got, &err) == 1);
    CHECK (got == sizeof other && memcmp (out, other, sizeof other) == 0);
    disk_cache_get_stats (dc, &st);
    CHECK (st.bytes == before);
    du (dir);
    CHECK (tmp_files == 0);
    disk_cache_close (dc);

    /* A writer killed mid-write: no entry, and on the O_TMPFILE path
     * no temporary file either (the rename path leaves one for the
     * next scan, which the stale-tmp test covers). */
    snprintf (msg, sizeof msg, "%s: a writer killed mid-write leaves no "
              "entry%s", paths[p].name,
              paths[p].tmp_while_writing ? "" : " and no file at all");
    say (msg);
    key_for (key, sizeof key, 9);
    fill (data, sizeof data, 9);
    put_and_die (dir, paths[p].hooks, key, data, sizeof data);
    CHECK (!exists (dir, key));
    du (dir);
    CHECK (tmp_files == paths[p].tmp_while_writing);
    dc = disk_cache_open (dir, 0, paths[p].hooks, &err);
    CHECK (dc != NULL);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 0);
    CHECK (disk_cache_put (dc, key, data, sizeof data, &err) == 0);
    CHECK (disk_cache_get (dc, key, out, sizeof out, &err) == 1);
    du (dir);
    CHECK (tmp_files == 0);     /* the dead writer's one is gone too */
    disk_cache_close (dc);
  }
}

/* Root only, where mount(2) is allowed: a real full filesystem. */
static void
test_real_enospc (void)
{
  char mnt[128], key[DISK_CACHE_KEY_MAX];
  static unsigned char data[16000], out[16000];
  struct disk_cache_stats st;
  struct cloop_err err;
  struct disk_cache *dc;
  unsigned hits = 0, wrong = 0;

  /* Every CHECK between mount and umount2 would leave the mount behind:
   * collect results first, check after unmounting. */
  snprintf (mnt, sizeof mnt, "%s/tmpfs", base);
  CHECK (mkdir (mnt, 0700) == 0);
  if (geteuid () != 0) {
    /* Without root no tmpfs can be mounted; the injected ENOSPC above
     * covers the same code.  CI runs as root, where this must work. */
    say ("not run: real ENOSPC on a 256 KiB tmpfs (needs root)");
    return;
  }
  if (mount ("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k") == -1) {
    fprintf (stderr, "FAIL: mount tmpfs on %s as root: %m\n", mnt);
    exit (1);
  }
  say ("real ENOSPC on a 256 KiB tmpfs, unlimited cache: puts return 0, "
       "warn, no temp files, what is cached verifies");
  dc = disk_cache_open (mnt, 0, &hooks, &err);
  if (dc == NULL) {
    umount2 (mnt, MNT_DETACH);
    CHECK (!"open on tmpfs");
  }
  warnings = 0;
  for (unsigned i = 0; i < 40; i++) {
    disk_cache_key_range (key, sizeof key, "big", i * 65536ULL, sizeof data);
    fill (data, sizeof data, i);
    if (disk_cache_put (dc, key, data, sizeof data, &err) != 0) {
      umount2 (mnt, MNT_DETACH);
      CHECK (!"put failed");
    }
  }
  for (unsigned i = 0; i < 40; i++) {
    int r;
    disk_cache_key_range (key, sizeof key, "big", i * 65536ULL, sizeof data);
    r = disk_cache_get (dc, key, out, sizeof out, &err);
    fill (data, sizeof data, i);
    if (r == 1 && memcmp (out, data, sizeof data) == 0)
      hits++;
    else if (r != 0)
      wrong++;
  }
  disk_cache_get_stats (dc, &st);
  du (mnt);
  disk_cache_close (dc);
  umount2 (mnt, MNT_DETACH);
  CHECK (st.put_failures >= 1 && warnings >= 1);
  CHECK (st.corrupt == 0 && wrong == 0 && hits > 0);
  CHECK (tmp_files == 0);
}

static int
rm_visit (const char *path, const struct stat *st, int type, struct FTW *f)
{
  remove (path);
  return 0;
}

int
main (void)
{
  verbose = getenv ("TEST_DISKCACHE_VERBOSE") != NULL;
  strcpy (base, "/tmp/test-diskcache.XXXXXX");
  CHECK (mkdtemp (base) != NULL);

  test_round_trip_and_verify ();
  test_blk_and_keys ();
  test_lru_bound ();
  test_shared_dir ();
  test_stale_tmp_and_foreign_dirs ();
  test_write_failures ();
  test_write_paths ();
  test_real_enospc ();

  nftw (base, rm_visit, 16, FTW_DEPTH | FTW_PHYS);
  say ("PASS");
  return 0;
}
