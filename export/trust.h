/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: whether a block-store index may be served
 * (docs/FORMAT.md, "Trust rules").
 *
 * An index is accepted if it is signed by a trusted key or matches a
 * pinned hash, has not expired, and is not older than (nor, at the same
 * revision, different from) the newest index of the same name this
 * cache has accepted.  Knows nothing of nbdkit.
 */
#ifndef CLOOP_TRUST_H
#define CLOOP_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diskcache.h"
#include "error.h"
#include "signature.h"
#include "statedir.h"
#include "store.h"

struct trust_config {
  struct trust_key *const *keys;  /* trusted public keys */
  size_t nkeys;
  const unsigned char *pinned;    /* SHA-256 the index must have, or NULL */
  bool insecure;                  /* skip every check (warned about) */
  /* Where the highest accepted revision per store name is kept (may be
   * NULL: then there is no rollback protection across runs). */
  struct state_dir *state;
  /* Where earlier versions kept it (read only, may be NULL): the disk
   * cache, whose eviction could lose it. */
  struct disk_cache *legacy;
  void (*warn) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
};

/* Decide whether idx, parsed from the exact bytes index[0..len), may
 * be served.  sig_text is the signature file's content (NULL if there
 * is none).  now is the current time in seconds.  Returns 0 (and, with
 * a state cache, records the revision), or -1 with err set (EACCES)
 * saying which rule failed. */
int trust_check_index (const struct trust_config *cfg,
                       const struct store_index *idx,
                       const void *index, size_t len,
                       const char *sig_text, size_t sig_len,
                       int64_t now, struct cloop_err *err);

/* SHA-256 of buf (out: 32 bytes). */
void trust_sha256 (const void *buf, size_t len, unsigned char out[32]);

#endif /* CLOOP_TRUST_H */
