/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: persistent, bounded, verified disk cache of compressed
 * blocks, shareable by several processes.
 *
 * ON-DISK LAYOUT (layout version 1)
 *
 *   DIR/VERSION                   "nbdkit-cloop disk cache 1\n"; a
 *                                 directory holding another version is
 *                                 refused (open fails with EINVAL)
 *   DIR/.lock                     empty; flock()ed by whoever evicts
 *   DIR/obj/<object id>/<ff>/<off>-<len>  a byte range of a remote
 *                                 object (ff: two hex digits hashed
 *                                 from off, a 256-way fan-out)
 *   DIR/blk/<hh>/<64 hex>         a content-addressed block, named by
 *                                 the SHA-256 of its payload (hh = the
 *                                 first two hex digits: 256-way fan-out)
 *   DIR/url/<64 hex>              metadata blob, named by the SHA-256
 *                                 of a caller-chosen name (an image's
 *                                 identity, header and index bytes)
 *   <any dir>/.tmp-<pid>-<tid>-<n>  a url/ write in progress, or any
 *                                 where O_TMPFILE is unusable (or left
 *                                 by a crashed writer)
 *
 * Only the namespaces obj/, blk/ and url/ are ever scanned, evicted or
 * written, so pointing DIR at the wrong place cannot delete foreign
 * files; and a directory that is neither empty nor has a VERSION file
 * is refused (ENOTEMPTY).  Directories are created with mode 0700,
 * files 0600.
 *
 * Every entry file is a 64-byte header followed by the payload:
 *
 *   0  8  magic "CLDCACHE"
 *   8  4  format version, big endian (1)
 *  12  4  header length, big endian (64)
 *  16  8  payload length, big endian
 *  24 32  SHA-256 of the payload
 *  56  8  zero
 *
 * CRASH SAFETY
 *
 * An obj/ or blk/ entry is written to an unnamed O_TMPFILE file in its
 * final directory, with one writev, and then linkat()ed (through
 * /proc/self/fd/N, which needs no privilege) to its final name.  The
 * link appears complete or not at all, and a writer killed before it
 * leaves nothing behind.  linkat never replaces: if the name exists
 * (another process cached the same block) and the file has the right
 * length, it is kept, like ours verified on every read; a file of
 * another length is replaced as below.  These namespaces are
 * immutable (the name fixes the content), so no put ever needs to
 * replace a good entry.
 *
 * url/ entries (which change), and every entry where O_TMPFILE is not
 * supported (old kernel, some filesystems) or /proc is not mounted,
 * are written to a unique temporary file in the final directory and
 * then rename()d over the final name.  Either way a process killed at
 * any instant leaves no entry, the complete old one or the complete
 * new one (plus, on the rename path only, perhaps a temporary file,
 * removed by the next scan, at open or later, once its writer pid is
 * dead or it is an hour old; a recycled pid only delays that).  There
 * is no fsync: after a power loss a linked or renamed file may be
 * empty or hold stale blocks, but every read checks the length and the
 * SHA-256 in the header, so such an entry is deleted and refetched
 * like any corrupt one.  Durability is not needed, only integrity;
 * fsync per block would cost milliseconds on every miss.
 *
 * SIZE BOUND
 *
 * Sizes are accounted as header + payload rounded up to 4 KiB (the
 * space a file takes on common filesystems); directories are not
 * counted (blk/ fan-out: at most 256 of them).  When the accounted size
 * passes 95 % of max_bytes the putting thread scans the tree and
 * unlinks least recently used entries (by mtime; reads refresh it at
 * most once a minute) down to 80 %.  url/ entries go last, after every
 * obj/ and blk/ entry.  Entries bigger than 80 % of max_bytes are not
 * cached.
 *
 * One process: after any put returns, the directory holds at most
 * max_bytes plus one entry per put still in flight.  Several processes
 * sharing DIR: each also re-scans after writing 2.5 % of max_bytes (so
 * it sees the others' writes) and scans are serialised by a flock on
 * DIR/.lock, so they converge; between scans each process is blind to
 * the others' writes, so with P processes the excess is bounded by
 * about (P - 2) x 2.5 % of max_bytes plus one entry per writer.
 * Unlinking a file another process is reading is harmless.  A scan
 * holds no lock that gets take: gets never wait for it.  It does hold
 * the whole file list in memory (about 100 bytes per entry) and delays
 * the put that triggered it by one directory walk.
 *
 * WRITE FAILURES
 *
 * A failed write never fails the caller: the unnamed or temporary file
 * is dropped and the put returns 0 as if it had been cached.  It is warned about
 * at most once a minute.  ENOSPC/EDQUOT also triggers an eviction down
 * to 80 % of max_bytes or of the current size, whichever is lower; a
 * second one in a row (or a third failure in a row of any other kind)
 * pauses all writes for 60 s.  Gets keep working meanwhile.
 *
 * All functions are thread-safe except disk_cache_close.  cache/ knows
 * nothing of nbdkit or HTTP: messages go to the hooks.
 */
#ifndef CLOOP_DISKCACHE_H
#define CLOOP_DISKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct disk_cache;

/* Keys are relative names of 2 to 4 '/'-separated components, each
 * non-empty, made of [A-Za-z0-9_.-] and not starting with '.' (so no
 * "..", no temporary-file names); the first is obj, blk or url.  Build
 * them with the helpers below.  Longest key, including the NUL: */
#define DISK_CACHE_KEY_MAX 256

/* Size in bytes of the header in front of every payload. */
#define DISK_CACHE_HEADER_SIZE 64

/* How the cache reports what it does.  Any member may be NULL. */
struct disk_cache_hooks {
  /* A problem worth an operator's attention (corrupt entry, disk full).
   * Never fatal: the cache carries on. */
  void (*warn) (void *opaque, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
  /* Routine events (evictions, scans). */
  void (*debug) (void *opaque, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
  void *opaque;
  /* Testing only: called just before an entry is written; a non-zero
   * return is taken as the errno of a failed write (e.g. ENOSPC) after
   * the header alone, leaving a partial (unnamed or temporary) file to
   * clean up. */
  int (*inject_write_error) (void *opaque);
  /* Testing only: non-zero = never use O_TMPFILE + linkat, always a
   * named temporary file + rename (as without O_TMPFILE or /proc). */
  int no_tmpfile;
};

struct disk_cache_stats {
  uint64_t hits;          /* gets that returned a verified entry */
  uint64_t misses;        /* gets that returned 0 or -1 */
  uint64_t corrupt;       /* entries found bad on read and deleted */
  uint64_t puts;          /* entries written */
  uint64_t put_failures;  /* writes that failed (ENOSPC, EIO, ...) */
  uint64_t puts_skipped;  /* puts not attempted: writes paused, too big */
  uint64_t evictions;     /* entries unlinked to respect max_bytes */
  uint64_t scans;         /* directory scans (open, re-scan, evict) */
  uint64_t bytes;         /* accounted size of the cache now */
};

/* Open (creating as needed, like mkdir -p, mode 0700) the cache in
 * DIR, bounded to max_bytes (0 = unlimited).  Removes stale temporary
 * files, measures the current size and evicts if it is over.  hooks
 * is copied and may be NULL.  Returns NULL with err set on failure. */
struct disk_cache *disk_cache_open (const char *dir, uint64_t max_bytes,
                                    const struct disk_cache_hooks *hooks,
                                    struct cloop_err *err);

/* Free the handle.  No other call on it may be running. */
void disk_cache_close (struct disk_cache *dc);

/* Fill out[65] with the hex SHA-256 of url, etag, last_modified (NULL
 * counts as "") and size, NUL-separated: a namespace that changes when
 * the object on the server changes.  Returns 0, or -1 if url is NULL. */
int disk_cache_object_id (char out[65], const char *url, const char *etag,
                          const char *last_modified, uint64_t size);

/* Build "obj/<object_id>/<ff>/<offset>-<length>" in out[n].  Returns 0, or
 * -1 if object_id is not a plain name or out is too small. */
int disk_cache_key_range (char out[], size_t n, const char *object_id,
                          uint64_t offset, uint64_t length);

/* Build "blk/<hh>/<64 hex>" from a 32-byte SHA-256 in out[n].  Returns
 * 0, or -1 if out is too small. */
int disk_cache_key_hash (char out[], size_t n, const unsigned char *sha256);

/* Look up key and, if a verified entry of exactly len payload bytes
 * exists, copy it to buf and return 1.  Returns 0 on a miss: absent,
 * of another length (left alone), or bad (deleted, counted, warned
 * about: the caller refetches and puts again).  Returns -1 with err set
 * for a bad key or an unexpected I/O error, which the caller should log
 * and otherwise treat as a miss.  buf is undefined unless 1 is
 * returned. */
int disk_cache_get (struct disk_cache *dc, const char *key,
                    void *buf, size_t len, struct cloop_err *err);

/* Does an entry of exactly len payload bytes seem to be under key?
 * Only its size is looked at (no read, no verification, not counted as
 * a hit or miss): a get may still miss.  For work that would only put
 * the entry again (staging read-ahead).  False for a bad key. */
bool disk_cache_has (struct disk_cache *dc, const char *key, size_t len);

/* Store len bytes under key, atomically replacing any old entry (an
 * obj/ or blk/ entry already there with this length is kept: those
 * namespaces are immutable).  Entries over 80 % of max_bytes and puts
 * while writes are paused are skipped.  Write failures (disk full, quota, I/O error) are never the caller's
 * problem: they are warned about, may trigger eviction or pause writes
 * for a minute, and return 0 like a success.  Returns -1 with err set
 * (EINVAL) only for a bad key, or a blk/ key that is not the SHA-256 of
 * buf. */
int disk_cache_put (struct disk_cache *dc, const char *key,
                    const void *buf, size_t len, struct cloop_err *err);

/* Metadata blobs (the identity of an image: URL, ETag, Last-Modified,
 * size; its header and index bytes), stored as "url/<SHA-256 of
 * name>" and evicted only after all blocks, so that an image whose
 * blocks are cached can still be opened without its server.  They
 * count towards max_bytes like blocks.  put_meta behaves like disk_cache_put.
 * get_meta returns 1 and sets *len_out if a verified blob of at most
 * bufsize bytes exists, else 0 (or -1) like disk_cache_get. */
int disk_cache_put_meta (struct disk_cache *dc, const char *name,
                         const void *buf, size_t len, struct cloop_err *err);
int disk_cache_get_meta (struct disk_cache *dc, const char *name,
                         void *buf, size_t bufsize, size_t *len_out,
                         struct cloop_err *err);

/* Remove the metadata blob name (e.g. one that turned out not to
 * parse).  0 (also if there was none), or -1 with err set on an
 * unexpected I/O error. */
int disk_cache_drop_meta (struct disk_cache *dc, const char *name,
                          struct cloop_err *err);

/* Re-scan the directory now and evict down to 80 % if over 95 % of
 * max_bytes (for a background thread or an admin command).  Returns 0
 * (also when another scan is already running), -1 with err set if the
 * directory cannot be read. */
int disk_cache_trim (struct disk_cache *dc, struct cloop_err *err);

/* Called by disk_cache_check_all for every bad entry: key relative to
 * DIR, what is wrong with it, and whether it was deleted. */
typedef void disk_cache_bad_fn (void *opaque, const char *key,
                                const char *why, bool deleted);

/* Check every entry of the cache (obj/, blk/, url/; stale temporary
 * files are removed as by a scan): a regular file, its header, its
 * length, the SHA-256 of its payload and, for blk/, that the payload
 * hashes to its name.  Calls bad for each bad entry, after deleting it
 * if repair.  Reads every entry whole (one at a time, never more than
 * max_entry payload bytes in memory: a bigger entry is bad).  Counts
 * in *checked and *bad.  Returns 0, or -1 with err set if the tree
 * could not be read or an entry could not be (the count stops there).
 * Safe while other processes use the cache: an entry replaced while it
 * is checked is not deleted. */
int disk_cache_check_all (struct disk_cache *dc, bool repair,
                          uint64_t max_entry, disk_cache_bad_fn *bad,
                          void *opaque, uint64_t *checked, uint64_t *nbad,
                          struct cloop_err *err);

/* Copy the current counters. */
void disk_cache_get_stats (struct disk_cache *dc,
                           struct disk_cache_stats *stats);

#endif /* CLOOP_DISKCACHE_H */
