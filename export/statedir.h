/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: small state that must survive, kept apart from caches.
 *
 * A state directory holds a few small records (the highest revision
 * of each block store accepted, for rollback protection) that no
 * eviction, size bound or full-disk handling ever removes: unlike the
 * disk cache, emptying it weakens security.  Each record is one file,
 * DIR/<SHA-256 of its name>, written to a temporary file, fsync'd and
 * renamed into place (and the directory fsync'd), so a crash leaves
 * the old record or the new one.  Records are at most STATE_RECORD_MAX
 * bytes.  Thread-safe.  Knows nothing of nbdkit.
 */
#ifndef CLOOP_STATEDIR_H
#define CLOOP_STATEDIR_H

#include <stddef.h>

#include "error.h"

#define STATE_RECORD_MAX 4096

struct state_dir;

/* Open (creating it and its parents, mode 0700) the state directory
 * dir.  NULL with err set, naming dir. */
struct state_dir *state_dir_open (const char *dir, struct cloop_err *err);

void state_dir_close (struct state_dir *sd);   /* NULL allowed */

/* Read record name into buf (size bytes; the record must fit).
 * Returns 1 and sets *len, 0 if there is no such record, or -1 with
 * err set. */
int state_dir_get (struct state_dir *sd, const char *name, void *buf,
                   size_t size, size_t *len, struct cloop_err *err);

/* Replace record name with buf[0..len), durably.  0, or -1 with err
 * set (the old record, if any, is kept). */
int state_dir_put (struct state_dir *sd, const char *name, const void *buf,
                   size_t len, struct cloop_err *err);

/* Serialise a read-compare-write of records between the threads of
 * this process and other processes using the same directory (flock on
 * DIR/.lock).  A lock that cannot be taken is not an error: the
 * caller proceeds, unserialised. */
void state_dir_lock (struct state_dir *sd);
void state_dir_unlock (struct state_dir *sd);

#endif /* CLOOP_STATEDIR_H */
