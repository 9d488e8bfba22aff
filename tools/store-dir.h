/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: writing into a store directory (docs/FORMAT.md,
 * "Layout"): block files under blocks/HH/, and files replaced
 * atomically (index, index.sig).
 *
 * Every file is written as a temporary ".tmp-*" file in its final
 * directory and renamed into place, so a reader never sees a partial
 * file.  The paths of the temporary files being written are kept so
 * that store_dir_remove_temps can delete them from a signal handler.
 */
#ifndef CLOOP_STORE_STORE_DIR_H
#define CLOOP_STORE_STORE_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"
#include "store.h"

struct store_dir;

/* Open (creating it and its blocks/ directory if missing) the store
 * directory path and check that it is writable.  NULL with err set. */
struct store_dir *store_dir_open (const char *path, struct cloop_err *err);

/* Path of the directory (as given). */
const char *store_dir_path (const struct store_dir *sd);

/* Store one block file named by hash unless a file of that name
 * already holds exactly data[0..len) (*stored_new = false; it is read
 * and compared).  A file of other content, including one of the same
 * size, is replaced, with a warning on stderr.  0, or -1 with err set
 * (the temporary file is removed). */
int store_dir_put_block (struct store_dir *sd,
                         const unsigned char hash[STORE_HASH_LEN],
                         const void *data, size_t len, bool *stored_new,
                         struct cloop_err *err);

/* True if the block file named by hash is a regular file of exactly
 * len bytes whose SHA-256 is hash (read whole; errors count as no). */
bool store_dir_has_block (struct store_dir *sd,
                          const unsigned char hash[STORE_HASH_LEN],
                          size_t len);

/* Flush every file written so far to stable storage (syncfs), so that
 * an index written afterwards never refers to blocks lost in a crash.
 * 0, or -1 with err set. */
int store_dir_sync (struct store_dir *sd, struct cloop_err *err);

/* A file being replaced atomically. */
enum store_temp { TEMP_INDEX, TEMP_SIGNATURE, TEMP_COUNT };

/* Write data to a new temporary file beside name (a file name in the
 * store directory), fsync it, and remember it as slot.  0, or -1 with
 * err set (nothing left behind). */
int store_dir_stage (struct store_dir *sd, enum store_temp slot,
                     const char *name, const void *data, size_t len,
                     struct cloop_err *err);

/* Rename the staged file of slot onto name; then fsync the directory.
 * 0, or -1 with err set. */
int store_dir_commit (struct store_dir *sd, enum store_temp slot,
                      const char *name, struct cloop_err *err);

/* Remove name from the store directory if it exists.  0, or -1. */
int store_dir_unlink (struct store_dir *sd, const char *name,
                      struct cloop_err *err);

/* Delete every temporary file still being written or staged.
 * Async-signal-safe. */
void store_dir_remove_temps (struct store_dir *sd);

void store_dir_close (struct store_dir *sd);

/* Write data atomically to path (temporary file in the same directory,
 * fsync, rename), for files outside a store_dir (index.sig written by
 * "sign").  0, or -1 with err set. */
int write_file_atomic (const char *path, const void *data, size_t len,
                       mode_t mode, struct cloop_err *err);

#endif /* CLOOP_STORE_STORE_DIR_H */
