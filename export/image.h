/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: open an exported image from its configuration.
 *
 * Chooses the source (local file, or HTTP(S) URL), attaches the
 * persistent disk cache to remote images, pins the remote object's
 * identity in that cache, falls back to serving from the cache alone
 * when the server cannot be reached, parses the image's format and
 * returns a ready reader.  Knows nothing of nbdkit.
 */
#ifndef CLOOP_IMAGE_H
#define CLOOP_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "http.h"
#include "reader.h"
#include "signature.h"
#include "statedir.h"

struct image_config {
  const char *file;             /* local image, or NULL */
  const struct http_config *http; /* remote image (http->url), or NULL */
  struct disk_cache *disk_cache; /* remote blocks and identity, or
                                   NULL.  Borrowed: it must outlive
                                   the reader */
  struct state_dir *state_dir;  /* store revisions accepted (rollback
                                   protection), or NULL.  Borrowed */
  struct http_engine *http_engine; /* runs remote transfers (http.h), or
                                   NULL: each source makes its own.
                                   Borrowed */
  int64_t revalidate;           /* trust a cached identity this long (s) */
  struct reader_config reader;  /* disk_cache and object_id are set here */
  /* Trust in block-store indexes (trust.h). */
  struct trust_key *const *keys;
  size_t nkeys;
  bool have_pinned;
  unsigned char pinned[32];     /* SHA-256 the index must have */
  bool insecure;
  /* A block-hash list of a cloop file (hashlist.h), or NULL: a local
   * path, or a URL fetched with block_hashes_http (url = the list's
   * URL; NULL for a path).  Trusted by hashes_pinned if set, else by a
   * signature with one of keys if there are any. */
  const char *block_hashes;
  const struct http_config *block_hashes_http;
  bool have_hashes_pinned;
  unsigned char hashes_pinned[32];  /* SHA-256 the list must have */
  /* The file served from an ISO9660 image (iso-file=), or NULL for
   * /KNOPPIX/KNOPPIX.  Given for an image that is not an ISO, an
   * error. */
  const char *iso_file;
  /* A boot profile for a cloop file (profile=: a path, or a URL
   * fetched with profile_http), pinned by profile_pinned if
   * have_profile_pinned; NULL for none.  A block store's profile is
   * in its signed index, and giving one here for a store is an
   * error. */
  const char *profile;
  const struct http_config *profile_http;
  bool have_profile_pinned;
  unsigned char profile_pinned[32];
  /* Used by the registry (registry.h), not by image_open: record the
   * clients' first touches of blocks to this file (profile-record=),
   * or NULL; replay the image's boot profile (false: profile=none). */
  const char *profile_record;
  bool profile_replay;
  /* Where warnings go (offline mode, cache faults); may be NULL. */
  void (*warn) (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
};

/* Open the image described by cfg (exactly one of file and http): a
 * cloop file of any dialect or a block-store index (autodetected), or
 * an ISO9660 image (autodetected) with a cloop file inside it
 * (cfg->iso_file), served as a window of the image,
 * with cfg->block_hashes and cfg->profile attached to a cloop file's
 * block map (whose name is then the file's name).
 * Returns a reader, or NULL with err set: the message names the image
 * (or the block-hash list) and the fault. */
struct reader *image_open (const struct image_config *cfg,
                           struct cloop_err *err);

/* Call after a read failed: if the remote object was found changed on
 * the server, forget its cached identity, so that the next start asks
 * the server again instead of trusting the cache. */
void image_read_failed (struct reader *r);

/* What a local file holds, judged by its content. */
enum image_kind {
  IMAGE_NONE,                   /* neither (or unreadable) */
  IMAGE_CLOOP,                  /* a cloop file of a dialect we read */
  IMAGE_STORE,                  /* a block-store index */
  IMAGE_ISO,                    /* an ISO9660 image (image_list_iso) */
};

/* Look at the local file path.  On IMAGE_NONE, why says why (for a
 * debug line). */
enum image_kind image_probe_file (const char *path, struct cloop_err *why);

/* The cloop files /KNOPPIX/KNOPPIX, /KNOPPIX/KNOPPIX1, ... in the ISO
 * image at path: fn is called with each one's path inside the image,
 * in directory order; a KNOPPIX* file that is not a cloop file is
 * reported through skipped (may be NULL) as "PATH:/KNOPPIX/NAME" with
 * why.  fn returns 0, or -1 with err set to stop.  0, or -1 with err
 * set (the image cannot be read, or has no /KNOPPIX). */
int image_list_iso (const char *path,
                    int (*fn) (void *opaque, const char *iso_path,
                               struct cloop_err *err),
                    void *opaque,
                    void (*skipped) (const char *path, const char *why),
                    struct cloop_err *err);

#endif /* CLOOP_IMAGE_H */
