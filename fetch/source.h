/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: where compressed bytes come from.
 *
 * A source is a read-only byte container (a local file now; an HTTP(S)
 * URL later) with one small interface.  Reads are thread-safe.  A
 * source may service source_pread_many's ranges concurrently (HTTP
 * keeps many transfers in flight), so callers hand it every range a
 * request needs at once instead of reading one range at a time.
 * fetch/ knows nothing of image formats.
 */
#ifndef CLOOP_SOURCE_H
#define CLOOP_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"
#include "error.h"

struct source;

/* How urgent a fetch is.  A source that queues its transfers (HTTP)
 * starts more urgent ones first and, while clients' reads keep finding
 * its connections taken, keeps one free of the less urgent, so that a
 * client's read waits behind read-ahead or background work for no more
 * than one transfer.  Reads marked in_stream do not ask for that: they
 * belong to a sequential stream whose read-ahead is what they would
 * wait for anyway, and a connection kept idle for them would only slow
 * that stream down. */
enum fetch_priority {
  FETCH_DEMAND = 0,             /* a client waits for these bytes */
  FETCH_READAHEAD,              /* a client will probably want them soon */
  FETCH_BACKGROUND,             /* nobody waits (warming, prefetch) */
  FETCH_PRIORITIES
};

/* One range of a batched read. */
struct source_range {
  uint64_t offset;
  size_t length;
  void *buf;                    /* length bytes, filled on success */
  enum fetch_priority priority; /* FETCH_DEMAND unless set */
  uint64_t deadline_ns;         /* CLOCK_MONOTONIC; 0 = source's timeout */
  unsigned refetch;             /* earlier copies the caller found faulty */
  bool in_stream;               /* a client's read in a sequential stream
                                   (see fetch_priority) */
  int status;                   /* out: 0 or an errno value */
  int endpoint;                 /* out: which endpoint served it (-1: none) */
};

/* One whole object of a batched object fetch (block stores): a file
 * named relative to the source's location (the directory of a local
 * file, or the URL up to its last '/'). */
struct source_object {
  const char *path;             /* relative, e.g. "blocks/ab/ab12..." */
  size_t length;                /* exact size, or the maximum if !exact */
  bool exact;                   /* the object must be exactly length */
  void *buf;                    /* length bytes */
  enum fetch_priority priority; /* FETCH_DEMAND unless set */
  uint64_t deadline_ns;         /* CLOCK_MONOTONIC; 0 = source's timeout */
  unsigned refetch;             /* earlier copies the caller found faulty */
  bool in_stream;               /* as in struct source_range */
  size_t received;              /* out: bytes stored in buf */
  int status;                   /* out: 0 or an errno value */
  int endpoint;                 /* out: which endpoint served it (-1: none) */
};

/* Operations a source implements (see the functions below). */
struct source_ops {
  const char *name;             /* "file", "http" */
  int (*pread) (struct source *src, void *buf, size_t len, uint64_t offset,
                struct cloop_err *err);
  int (*pread_many) (struct source *src, struct source_range *ranges,
                     size_t n, struct cloop_err *err);
  int (*get_objects) (struct source *src, struct source_object *objs,
                      size_t n, struct cloop_err *err);   /* or NULL */
  bool (*available) (struct source *src);       /* or NULL: always */
  /* Counters of endpoint i, or -1 (NULL: the source has none). */
  int (*endpoint_stats) (struct source *src, size_t i, const char **name,
                         struct http_stats *stats);
  bool (*changed) (struct source *src);         /* or NULL: never */
  void (*opened) (struct source *src);          /* or NULL */
  void (*objects_verified) (struct source *src); /* or NULL */
  int (*metadata) (struct source *src, const struct source_range *ranges,
                   size_t n, struct cloop_err *err);     /* or NULL */
  void (*report_faulty) (struct source *src, int endpoint);  /* or NULL */
  /* The source this one reads from (a window's parent), or NULL. */
  struct source *(*parent) (struct source *src);
  bool offline;                 /* serves nothing but what caches hold */
  void (*close) (struct source *src);
};

struct source {
  const struct source_ops *ops;
  uint64_t size;                /* container size, fixed at open */
  char *name;                   /* path or URL, for messages */
  unsigned retries;             /* extra attempts a faulty range gets */
};

/* Open a local file read-only (O_CLOEXEC).  Returns NULL with err set. */
struct source *source_open_file (const char *path, struct cloop_err *err);

/* A source with no bytes behind it, for serving an image entirely from
 * a cache when its server cannot be reached: every read fails with EIO
 * ("NAME is offline").  Returns NULL with err set (ENOMEM). */
struct source *source_open_offline (const char *name, uint64_t size,
                                    struct cloop_err *err);

/* A window: bytes [offset, offset+length) of parent, seen as a
 * container of length bytes starting at 0 (a file inside an ISO
 * image).  Reads are passed to parent shifted, a batch as one batch.
 * Takes parent: it is closed with the window (and on failure).  name
 * is for messages.  NULL with err set (EINVAL if the window does not
 * fit in parent, ENOMEM). */
struct source *source_open_window (struct source *parent, uint64_t offset,
                                   uint64_t length, const char *name,
                                   struct cloop_err *err);

/* The source that src reads from in the end: the innermost parent of
 * a window, or src itself. */
struct source *source_base (struct source *src);

/* Read exactly len bytes at offset.  A read past the end of the source
 * is an error (EIO), never a short read.  0 or -1 with err set. */
int source_pread (struct source *src, void *buf, size_t len, uint64_t offset,
                  struct cloop_err *err);

/* Read n ranges, concurrently where the source can.  A range with a
 * deadline fails (EIO) rather than finish after it.  Each range's
 * status is set (a range past the end gets EIO; the others are still
 * read).  Returns 0 if all succeeded, else -1 with err set
 * from the first failure (other ranges may still have succeeded). */
int source_pread_many (struct source *src, struct source_range *ranges,
                       size_t n, struct cloop_err *err);

/* Fetch n whole objects beside the source, concurrently where the
 * source can.  An object of another size than asked (or, if !exact,
 * larger than length) is an error (EIO), as is a missing one (ENOENT
 * for a local file, EIO after retries for HTTP).  Each object's status
 * and received are set.  0 if all succeeded, else -1 with err set from
 * the first failure.  ENOTSUP if the source has no such notion. */
int source_get_objects (struct source *src, struct source_object *objs,
                        size_t n, struct cloop_err *err);

/* Is a fetch worth trying now?  False while the source knows its
 * origin cannot be reached (an offline source always; an HTTP source
 * while its server is marked down, even when a probe is due: probes
 * are left to reads that need the bytes).  Optional work such as
 * read-ahead of uncached blocks asks this first; a read that needs
 * the bytes just reads (and fails at once with EIO if the source is
 * down).  Cheap and thread-safe. */
bool source_available (struct source *src);

/* The counters of the i-th endpoint (0, 1, ...) src fetches from, and
 * its name (a URL, valid until source_close): 0, or -1 when there is
 * no endpoint i (a local file has none).  Thread-safe. */
int source_endpoint_stats (struct source *src, size_t i, const char **name,
                           struct http_stats *stats);

/* Has the object behind src been seen to change since its identity
 * was pinned (a validator no longer matched)?  A cache that remembers
 * the identity should then forget it. */
bool source_changed (struct source *src);

/* The image on src has been opened (its header and index are read):
 * the source drops what it kept to serve those reads (an HTTP source's
 * probe bytes), so that from now on every read is a real fetch. */
void source_opened (struct source *src);

/* Every object fetched from now on (source_get_objects) is checked
 * by the caller against a hash it already trusts (a block store's
 * blocks): a mirror whose copy of the source's own object differs
 * (another revision of a store's index) may serve them instead of
 * being dropped at source_opened.  Call before source_opened. */
void source_objects_verified (struct source *src);

/* The image on src was parsed from these bytes of the object (offsets
 * in source_base's terms; ranges[i].buf holds them): its header and
 * index, read from src or from a cache.  A source with several copies
 * of the object (mirrors) checks every other copy of them before it
 * reads from it, and does not use one that differs.  Call before
 * source_opened.  0, or -1 with err set (ENOMEM). */
int source_metadata (struct source *src, const struct source_range *ranges,
                     size_t n, struct cloop_err *err);

/* A copy that endpoint (a range's or object's endpoint field) served
 * did not decode or did not match its hash.  The source counts it
 * against that endpoint and, while others can serve, avoids it for a
 * back-off that grows with each fault in a row.  -1: nothing to do. */
void source_report_faulty (struct source *src, int endpoint);

/* Is src an offline stand-in (source_open_offline), with nothing
 * behind it but what caches hold? */
bool source_is_offline (struct source *src);

/* Content faults.  A caller that finds a fetched range or object
 * faulty (it does not decode, or fails its hash) may fetch it again
 * with refetch = the number of faulty copies so far (1, 2, ...), at
 * most source_retries times: the source backs off as before a retry
 * and counts those copies against the same budget as its own transfer
 * faults (retries= extra attempts in all), so a range that keeps
 * coming back faulty costs no more than one that keeps failing in
 * transit. */
static inline unsigned
source_retries (const struct source *src)
{
  return src->retries;
}

/* Close and free (NULL allowed). */
void source_close (struct source *src);

/* Size in bytes. */
static inline uint64_t
source_size (const struct source *src)
{
  return src->size;
}

#endif /* CLOOP_SOURCE_H */
