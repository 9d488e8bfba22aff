/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: the journal of a create in progress, so that a rerun
 * after an interruption need not compress again what was stored.
 *
 * STOREDIR/.create-journal-INDEX holds a line naming the source's
 * identity and the options that decide a block's bytes (device, inode,
 * size and modification time of the source file; block size, codec,
 * level), then one line per block stored, in image order: its number
 * and its block file's SHA-256 and length (or "zero").  Lines are
 * appended as blocks are stored; a torn last line (a crash) is ignored.
 * A journal of another identity is started afresh.  The journal only
 * saves work: a rerun still checks every journaled block file (length
 * and SHA-256) before trusting it, and compresses the block if that
 * fails.
 */
#ifndef CLOOP_STORE_JOURNAL_H
#define CLOOP_STORE_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

struct create_journal;

/* Open (loading a journal of the same identity, else starting a new
 * one) STOREDIR/.create-journal-INDEX.  identity is one line of text
 * without a newline.  NULL with err set (naming the file). */
struct create_journal *journal_open (const char *store,
                                     const char *index_name,
                                     const char *identity,
                                     struct cloop_err *err);

/* Number of blocks loaded from an earlier run's journal. */
uint64_t journal_loaded (const struct create_journal *j);

/* Block seq as an earlier run recorded it: true with hash and len (len
 * 0: a zero block, hash unset), or false if it is not journaled. */
bool journal_lookup (const struct create_journal *j, uint64_t seq,
                     unsigned char hash[STORE_HASH_LEN], uint32_t *len);

/* Append block seq (hash NULL and len 0 for a zero block) and flush it
 * to the file.  0, or -1 with err set. */
int journal_record (struct create_journal *j, uint64_t seq,
                    const unsigned char *hash, uint32_t len,
                    struct cloop_err *err);

/* Delete the journal file (after the index is in place). */
void journal_remove (struct create_journal *j);

/* Close the journal, keeping its file (NULL allowed). */
void journal_close (struct create_journal *j);

#endif /* CLOOP_STORE_JOURNAL_H */
