/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: replaying a boot profile ahead of the clients.
 *
 * A replay fetches the blocks of an image's boot profile (index/
 * profile.h) in the profile's order, in the background: jobs of up to
 * 1 MiB of blocks on a work pool, a few at a time (bounding the bytes
 * in flight), fetched at the lowest priority (FETCH_BACKGROUND), so a
 * client's read never waits behind it.  Blocks already cached are
 * skipped.  It runs ahead of the clients only as far as the memory
 * cache holds: while the blocks fetched ahead (by it and read-ahead)
 * that no client has read yet stay under half of the cache, so an
 * idle client gets that much and no more.  It follows the clients
 * (replay_follow): when they are well past its cursor, it jumps
 * forward to them; one read of a block recorded much later does not
 * move it.
 * Thread-safe.  Knows nothing of nbdkit.
 */
#ifndef CLOOP_REPLAY_H
#define CLOOP_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "reader.h"
#include "workpool.h"

struct replay;

struct replay_stats {
  uint64_t profile_blocks;      /* entries in the profile */
  uint64_t queued;              /* entries handed to jobs (or skipped by
                                   a jump) so far: the replay's cursor */
  uint64_t fetched;             /* blocks its jobs filled or tried to */
  uint64_t skipped;             /* blocks its jobs found cached or in
                                   flight */
  uint64_t jumps;               /* times clients ran ahead of it */
  uint64_t client_position;     /* where the clients are, + 1: the
                                   furthest read entry that most of
                                   the entries just before it were */
  uint64_t client_furthest;     /* furthest entry a client read, + 1 */
  uint64_t client_read;         /* entries clients have read */
};

/* Start replaying profile[0..n) (block numbers of r's image; borrowed:
 * they must outlive the replay) on pool.  Jobs start when the pool
 * does.  NULL with err set (ENOMEM). */
struct replay *replay_start (struct reader *r, struct workpool *pool,
                             const uint32_t *profile, size_t n,
                             struct cloop_err *err);

/* Stop: drop the queued jobs, wait for the running ones, and free
 * (NULL allowed).  Before the reader is freed. */
void replay_free (struct replay *rp);

/* A client has read blocks [first, last] (call it after the read, so
 * that the blocks count as read): move the clients' position and let
 * the replay run on (or jump) accordingly.  Cheap for blocks read
 * before or outside the profile. */
void replay_follow (struct replay *rp, uint64_t first, uint64_t last);

/* Is the profile still at work: entries the clients have not read
 * yet, and within the last 5 s a job queued or finished, or a client
 * reading an entry for the first time (else the clients left the
 * profile)?  Read-ahead waits while it is.  Cheap (no lock). */
bool replay_busy (struct replay *rp);

void replay_get_stats (struct replay *rp, struct replay_stats *st);

#endif /* CLOOP_REPLAY_H */
