/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: recording a boot (see recorder.h).
 *
 * A bitmap says which blocks were touched; the touches, in order, go
 * to an array that grows.  recorder_touch takes the lock only when
 * some block of the read was not touched before (an atomic look at
 * the bitmap first), so that a recording costs a booted client's
 * steady reads nothing.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atomicfile.h"
#include "profile.h"
#include "recorder.h"

struct recorder {
  char *path;
  struct profile_record rec;    /* touches grow; count under lock */
  size_t cap;
  uint64_t t0_ns;
  pthread_mutex_t lock;
  _Atomic unsigned char *seen;  /* a bit per block */
};

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct recorder *
recorder_new (const char *path, const char *identity, uint64_t num_blocks,
              uint32_t block_size, struct cloop_err *err)
{
  struct recorder *r;
  size_t idlen = strlen (identity);

  if (num_blocks < 1 || num_blocks > PROFILE_ENTRIES_MAX) {
    cloop_err_set (err, EINVAL, "profile-record %s: the image has %llu "
                   "blocks; a recorded boot has 1 to %u", path,
                   (unsigned long long) num_blocks,
                   (unsigned) PROFILE_ENTRIES_MAX);
    return NULL;
  }
  if (idlen < 1 || idlen > PROFILE_IDENTITY_MAX) {
    cloop_err_set (err, EINVAL, "profile-record %s: image name of %zu "
                   "bytes (1 to %d)", path, idlen, PROFILE_IDENTITY_MAX);
    return NULL;
  }
  for (size_t i = 0; i < idlen; i++)
    if ((unsigned char) identity[i] < 0x20 || identity[i] == 0x7f) {
      cloop_err_set (err, EINVAL, "profile-record %s: the image name has a "
                     "control character", path);
      return NULL;
    }
  r = calloc (1, sizeof *r);
  if (r == NULL || (r->path = strdup (path)) == NULL ||
      (r->seen = calloc ((num_blocks + 7) / 8, 1)) == NULL) {
    if (r)
      free (r->path);
    free (r);
    cloop_err_set (err, ENOMEM, "profile-record %s: out of memory", path);
    return NULL;
  }
  memcpy (r->rec.identity, identity, idlen + 1);
  r->rec.num_blocks = num_blocks;
  r->rec.block_size = block_size;
  r->t0_ns = now_ns ();
  pthread_mutex_init (&r->lock, NULL);
  return r;
}

void
recorder_free (struct recorder *r)
{
  if (r == NULL)
    return;
  pthread_mutex_destroy (&r->lock);
  free ((void *) r->seen);
  free (r->rec.touches);
  free (r->path);
  free (r);
}

static bool
was_seen (struct recorder *r, uint64_t b)
{
  return atomic_load_explicit (&r->seen[b / 8], memory_order_relaxed) &
         (1u << (b % 8));
}

void
recorder_touch (struct recorder *r, uint64_t first, uint64_t last)
{
  uint64_t b;
  uint32_t ms;

  if (last >= r->rec.num_blocks)
    last = r->rec.num_blocks - 1;
  for (b = first; b <= last && was_seen (r, b); b++)
    ;
  if (b > last)
    return;
  ms = (now_ns () - r->t0_ns) / 1000000;
  if (ms > PROFILE_MS_MAX)
    ms = PROFILE_MS_MAX;
  pthread_mutex_lock (&r->lock);
  for (; b <= last; b++) {
    if (was_seen (r, b))
      continue;
    if (r->rec.count == r->cap) {
      size_t cap = r->cap ? r->cap * 2 : 1024;
      struct profile_touch *t = realloc (r->rec.touches, cap * sizeof *t);
      if (t == NULL)
        break;                  /* recorded what fits */
      r->rec.touches = t;
      r->cap = cap;
    }
    r->rec.touches[r->rec.count++] = (struct profile_touch) {
      .block = b, .ms = ms,
    };
    atomic_fetch_or (&r->seen[b / 8], 1u << (b % 8));
  }
  pthread_mutex_unlock (&r->lock);
}

int
recorder_write (struct recorder *r, struct cloop_err *err)
{
  char *text = NULL;
  size_t len = 0;
  int ret;

  pthread_mutex_lock (&r->lock);
  ret = profile_record_format (&r->rec, &text, &len, err);
  pthread_mutex_unlock (&r->lock);
  if (ret == -1) {
    cloop_err_prefix (err, "profile-record %s", r->path);
    return -1;
  }
  ret = atomic_file_write (r->path, text, len, "profile-record", err);
  free (text);
  return ret;
}

uint64_t
recorder_count (struct recorder *r)
{
  uint64_t n;

  pthread_mutex_lock (&r->lock);
  n = r->rec.count;
  pthread_mutex_unlock (&r->lock);
  return n;
}
