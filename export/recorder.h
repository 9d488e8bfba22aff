/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: recording a boot (profile-record=).
 *
 * A recorder notes the first time clients touched each block of one
 * image, with the milliseconds since the recorder was made (the image
 * was opened), and writes them as a recorded boot (index/profile.h,
 * docs/FORMAT.md "Boot profiles") to its file, atomically: a temporary
 * file beside it, renamed over it.  Thread-safe.  Knows nothing of
 * nbdkit.
 */
#ifndef CLOOP_RECORDER_H
#define CLOOP_RECORDER_H

#include <stdint.h>

#include "error.h"

struct recorder;

/* A recorder of an image of num_blocks (1..PROFILE_ENTRIES_MAX) blocks
 * of block_size bytes called identity (1..255 bytes, no control
 * characters: a store's name, or the cloop file's name), to be written
 * to path.  Nothing is written yet.  NULL with err set (EINVAL naming
 * what is wrong, ENOMEM). */
struct recorder *recorder_new (const char *path, const char *identity,
                               uint64_t num_blocks, uint32_t block_size,
                               struct cloop_err *err);

/* Free (NULL allowed); does not write. */
void recorder_free (struct recorder *rec);

/* Clients touched blocks [first, last] (last < num_blocks) now: note
 * those touched for the first time. */
void recorder_touch (struct recorder *rec, uint64_t first, uint64_t last);

/* Write what was recorded so far to the file.  0, or -1 with err set
 * naming the file (the old file, if any, is left as it was). */
int recorder_write (struct recorder *rec, struct cloop_err *err);

/* Blocks recorded so far. */
uint64_t recorder_count (struct recorder *rec);

#endif /* CLOOP_RECORDER_H */
