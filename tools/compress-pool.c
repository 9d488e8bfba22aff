/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: the compression worker pool (see compress-pool.h). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "compress-pool.h"
#include "encode.h"

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE };

struct slot {
  enum slot_state state;
  unsigned char *in;            /* block_size bytes */
  unsigned char *out;           /* out_cap bytes */
  bool failed;
  struct cloop_err err;
  struct compressed_block result;
};

struct worker {
  struct compress_pool *pool;
  struct block_encoder *enc;
  pthread_t thread;
  bool started;
};

struct compress_pool {
  pthread_mutex_t lock;
  pthread_cond_t work_cv;       /* a slot was queued, or stop */
  pthread_cond_t done_cv;       /* a slot became DONE */
  struct slot *slots;
  size_t nslots;
  size_t head;                  /* oldest unreleased slot */
  size_t tail;                  /* next slot to submit */
  size_t next_job;              /* next queued slot a worker takes */
  size_t pending, queued;
  uint64_t next_seq;
  bool stop;
  uint32_t block_size;
  size_t out_cap;
  struct worker *workers;
  unsigned nworkers;
};

static bool
all_zero (const unsigned char *p, size_t len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* Compress and hash one slot (outside the lock). */
static void
process_slot (struct worker *w, struct slot *s)
{
  struct compressed_block *b = &s->result;
  size_t n;

  b->zero = all_zero (s->in, b->in_len);
  b->data = NULL;
  b->len = 0;
  memset (b->hash, 0, sizeof b->hash);
  if (b->zero)
    return;
  n = encoder_compress (w->enc, s->in, b->in_len, s->out, w->pool->out_cap,
                        &s->err);
  if (n == 0) {
    s->failed = true;
    return;
  }
  if (EVP_Digest (s->out, n, b->hash, NULL, EVP_sha256 (), NULL) != 1) {
    cloop_err_set (&s->err, EIO, "SHA-256 failed");
    s->failed = true;
    return;
  }
  b->data = s->out;
  b->len = n;
}

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  struct compress_pool *pool = w->pool;

  pthread_mutex_lock (&pool->lock);
  for (;;) {
    struct slot *s;

    while (!pool->stop && pool->queued == 0)
      pthread_cond_wait (&pool->work_cv, &pool->lock);
    if (pool->stop)
      break;
    s = &pool->slots[pool->next_job];
    pool->next_job = (pool->next_job + 1) % pool->nslots;
    pool->queued--;
    s->state = SLOT_BUSY;
    pthread_mutex_unlock (&pool->lock);

    process_slot (w, s);

    pthread_mutex_lock (&pool->lock);
    s->state = SLOT_DONE;
    pthread_cond_broadcast (&pool->done_cv);
  }
  pthread_mutex_unlock (&pool->lock);
  return NULL;
}

/* Allocate the slot buffers. */
static int
alloc_slots (struct compress_pool *pool, struct cloop_err *err)
{
  size_t i;

  pool->slots = calloc (pool->nslots, sizeof *pool->slots);
  if (pool->slots == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (i = 0; i < pool->nslots; i++) {
    pool->slots[i].in = malloc (pool->block_size);
    pool->slots[i].out = malloc (pool->out_cap);
    if (pool->slots[i].in == NULL || pool->slots[i].out == NULL)
      return cloop_err_set (err, ENOMEM, "out of memory for %zu buffers "
                            "of %u bytes", pool->nslots, pool->block_size);
  }
  return 0;
}

/* Create the encoders and start the threads. */
static int
start_workers (struct compress_pool *pool, enum block_codec codec, int level,
               struct cloop_err *err)
{
  unsigned i;
  int r;

  pool->workers = calloc (pool->nworkers, sizeof *pool->workers);
  if (pool->workers == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (i = 0; i < pool->nworkers; i++) {
    struct worker *w = &pool->workers[i];

    w->pool = pool;
    w->enc = encoder_new (codec, level, err);
    if (w->enc == NULL)
      return -1;
    r = pthread_create (&w->thread, NULL, worker_main, w);
    if (r != 0)
      return cloop_err_set (err, r, "pthread_create: %s", strerror (r));
    w->started = true;
  }
  return 0;
}

struct compress_pool *
compress_pool_new (enum block_codec codec, int level, unsigned threads,
                   uint32_t block_size, struct cloop_err *err)
{
  struct compress_pool *pool = calloc (1, sizeof *pool);

  if (pool == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&pool->lock, NULL);
  pthread_cond_init (&pool->work_cv, NULL);
  pthread_cond_init (&pool->done_cv, NULL);
  pool->nworkers = threads < 1 ? 1 : threads;
  pool->nslots = 2 * (size_t) pool->nworkers + 2;
  pool->block_size = block_size;
  pool->out_cap = encoder_bound (codec, block_size);
  if (alloc_slots (pool, err) == -1 ||
      start_workers (pool, codec, level, err) == -1) {
    compress_pool_free (pool);
    return NULL;
  }
  return pool;
}

bool
compress_pool_full (const struct compress_pool *pool)
{
  return pool->pending == pool->nslots;
}

size_t
compress_pool_pending (const struct compress_pool *pool)
{
  return pool->pending;
}

unsigned char *
compress_pool_input (struct compress_pool *pool)
{
  return pool->slots[pool->tail].in;
}

void
compress_pool_submit (struct compress_pool *pool, size_t len)
{
  struct slot *s = &pool->slots[pool->tail];

  pthread_mutex_lock (&pool->lock);
  s->result.seq = pool->next_seq++;
  s->result.in_len = len;
  s->failed = false;
  s->state = SLOT_QUEUED;
  pool->tail = (pool->tail + 1) % pool->nslots;
  pool->pending++;
  pool->queued++;
  pthread_cond_signal (&pool->work_cv);
  pthread_mutex_unlock (&pool->lock);
}

const struct compressed_block *
compress_pool_collect (struct compress_pool *pool, struct cloop_err *err)
{
  struct slot *s = &pool->slots[pool->head];

  pthread_mutex_lock (&pool->lock);
  while (s->state != SLOT_DONE)
    pthread_cond_wait (&pool->done_cv, &pool->lock);
  pthread_mutex_unlock (&pool->lock);
  if (s->failed) {
    *err = s->err;
    return NULL;
  }
  return &s->result;
}

void
compress_pool_release (struct compress_pool *pool)
{
  pthread_mutex_lock (&pool->lock);
  pool->slots[pool->head].state = SLOT_FREE;
  pool->head = (pool->head + 1) % pool->nslots;
  pool->pending--;
  pthread_mutex_unlock (&pool->lock);
}

void
compress_pool_free (struct compress_pool *pool)
{
  size_t i;

  if (pool == NULL)
    return;
  pthread_mutex_lock (&pool->lock);
  pool->stop = true;
  pthread_cond_broadcast (&pool->work_cv);
  pthread_mutex_unlock (&pool->lock);
  for (i = 0; pool->workers && i < pool->nworkers; i++) {
    if (pool->workers[i].started)
      pthread_join (pool->workers[i].thread, NULL);
    encoder_free (pool->workers[i].enc);
  }
  for (i = 0; pool->slots && i < pool->nslots; i++) {
    free (pool->slots[i].in);
    free (pool->slots[i].out);
  }
  free (pool->workers);
  free (pool->slots);
  pthread_cond_destroy (&pool->work_cv);
  pthread_cond_destroy (&pool->done_cv);
  pthread_mutex_destroy (&pool->lock);
  free (pool);
}
