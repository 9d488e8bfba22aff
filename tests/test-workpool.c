/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: tests of the background work pool (common/workpool.h):
 * jobs queued before the start run after it, priority 0 before 1, a
 * full queue refuses, cancel drops queued jobs and waits for running
 * ones, and a cancelled owner's running job cannot queue more. */
#include <config.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "workpool.h"

struct owner {
  pthread_mutex_t lock;
  uint64_t order[64];           /* a of each job, in the order run */
  size_t n;
  atomic_int running, ran;
  atomic_int hold;              /* jobs sleep while set */
  struct workpool *pool;        /* for resubmitting */
};

static void
record (void *opaque, uint64_t a, uint64_t b)
{
  struct owner *o = opaque;

  atomic_fetch_add (&o->running, 1);
  while (atomic_load (&o->hold))
    usleep (1000);
  if (b == 1)                   /* resubmit itself */
    workpool_submit (o->pool, &(struct workpool_job) {
        .run = record, .owner = o, .a = a + 1, .b = 1 });
  pthread_mutex_lock (&o->lock);
  if (o->n < 64)
    o->order[o->n++] = a;
  pthread_mutex_unlock (&o->lock);
  atomic_fetch_sub (&o->running, 1);
  atomic_fetch_add (&o->ran, 1);
}

static void
owner_init (struct owner *o, struct workpool *p)
{
  memset (o, 0, sizeof *o);
  pthread_mutex_init (&o->lock, NULL);
  o->pool = p;
}

static void
wait_ran (struct owner *o, int n)
{
  for (int i = 0; i < 20000 && atomic_load (&o->ran) < n; i++)
    usleep (1000);
  CHECK (atomic_load (&o->ran) == n);
}

int
main (void)
{
  struct cloop_err err;
  struct workpool *p;
  struct owner o, o2;

  CHECK (workpool_new (0, 4, &err) == NULL);
  CHECK (workpool_new (1, 0, &err) == NULL);

  /* One worker: queued before start, run in priority then FIFO order;
   * the fifth job finds the queue full. */
  p = workpool_new (1, 4, &err);
  CHECK (p != NULL);
  owner_init (&o, p);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 10, .priority = 1 }) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 11, .priority = 1 }) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 1, .priority = 0 }) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 2, .priority = 0 }) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 3, .priority = 0 }) == -1);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 3, .priority = 2 }) == -1);
  CHECK (workpool_refused (p) == 2);
  CHECK (workpool_queued (p) == 4);
  usleep (20000);
  CHECK (atomic_load (&o.ran) == 0);   /* nothing runs before the start */
  CHECK (workpool_start (p, &err) == 0);
  wait_ran (&o, 4);
  CHECK (o.order[0] == 1 && o.order[1] == 2 && o.order[2] == 10 &&
         o.order[3] == 11);
  CHECK (workpool_queued (p) == 0);
  workpool_free (p);

  /* Two workers: cancel drops one owner's queued jobs, waits for its
   * running one, and leaves the other owner's alone. */
  p = workpool_new (2, 16, &err);
  CHECK (p != NULL);
  owner_init (&o, p);
  owner_init (&o2, p);
  atomic_store (&o.hold, 1);
  CHECK (workpool_start (p, &err) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 1 }) == 0);
  for (int i = 0; i < 20000 && atomic_load (&o.running) == 0; i++)
    usleep (1000);
  CHECK (atomic_load (&o.running) == 1);
  /* The second worker is free: block it on o too, then queue more. */
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 2 }) == 0);
  for (int i = 0; i < 20000 && atomic_load (&o.running) < 2; i++)
    usleep (1000);
  for (int k = 0; k < 5; k++)
    CHECK (workpool_submit (p, &(struct workpool_job) {
        .run = record, .owner = &o, .a = 100 + k }) == 0);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o2, .a = 7 }) == 0);
  CHECK (workpool_queued (p) == 6);
  /* Release the held jobs shortly after cancel starts waiting. */
  struct timespec ts = { 0, 50 * 1000 * 1000 };
  nanosleep (&ts, NULL);
  atomic_store (&o.hold, 0);
  workpool_cancel (p, &o);
  CHECK (atomic_load (&o.running) == 0);
  CHECK (atomic_load (&o.ran) == 2);   /* the queued five never ran */
  wait_ran (&o2, 1);

  /* A job that resubmits itself: cancel ends the chain. */
  owner_init (&o, p);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 0, .b = 1 }) == 0);
  for (int i = 0; i < 20000 && atomic_load (&o.ran) < 5; i++)
    usleep (1000);
  workpool_cancel (p, &o);
  int ran = atomic_load (&o.ran);
  usleep (50000);
  CHECK (atomic_load (&o.ran) == ran);
  CHECK (workpool_queued (p) == 0);
  workpool_free (p);

  /* Freed with jobs still queued and never started. */
  p = workpool_new (2, 4, &err);
  owner_init (&o, p);
  CHECK (workpool_submit (p, &(struct workpool_job) {
      .run = record, .owner = &o, .a = 1 }) == 0);
  workpool_free (p);
  CHECK (atomic_load (&o.ran) == 0);

  printf ("workpool: all checks passed\n");
  return 0;
}
