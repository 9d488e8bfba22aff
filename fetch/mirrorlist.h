/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: mirror lists (docs/FORMAT.md, "Mirror lists") <->
 * struct mirror_list.
 *
 * A mirror list names the servers that serve one object.  Two formats,
 * told apart by content: a Metalink 4 document (RFC 5854, namespace
 * urn:ietf:params:xml:ns:metalink, read with libxml2 from memory, no
 * network, no DTD, no entities), or a plain list, one http:// or
 * https:// URL per line, '#' comment lines and blank lines.  Only
 * http:// and https:// URLs are kept; other schemes are skipped and
 * said why (struct mirror_list's notes).  This module only parses:
 * fetching the list and choosing between mirrors are the caller's.
 *
 * Threads: libxml2 must be initialised once before threads use it.
 * mirrorlist_parse does that itself under pthread_once, so it may be
 * called from any thread; mirrorlist_global_init lets a caller do it
 * at load time.  Parses on different threads share nothing.
 */
#ifndef CLOOP_MIRRORLIST_H
#define CLOOP_MIRRORLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define MIRRORLIST_MAX_BYTES    (16u * 1024 * 1024) /* refuse larger input */
#define MIRRORLIST_MAX_MIRRORS  256     /* http(s) URLs, repeats counted */
#define MIRRORLIST_MAX_URL      8192    /* bytes of one URL */
#define MIRRORLIST_MAX_SIZE     (UINT64_C (1) << 50) /* <size> limit */
#define MIRRORLIST_PRIORITY_MAX 999999  /* RFC 5854; also the default */
#define MIRRORLIST_MAX_NOTES    16      /* skip reasons kept */
#define MIRRORLIST_SHA256_LEN   32

struct mirror {
  char *url;                    /* http:// or https:// (scheme lower case) */
  unsigned priority;            /* 1 .. 999999, lower is preferred */
  char location[8];             /* ISO 3166-1 alpha-2, lower case, or "" */
};

struct mirror_list {
  size_t n;                     /* 1 .. MIRRORLIST_MAX_MIRRORS */
  struct mirror *mirrors;       /* by priority (stable), no repeated URL */
  bool is_metalink;
  char *file_name;              /* metalink <file name=>; NULL for a list */
  bool have_size;               /* metalink <size>: the file's size */
  uint64_t size;                /* 1 .. MIRRORLIST_MAX_SIZE */
  bool have_sha256;             /* metalink <hash type="sha-256">: */
  unsigned char sha256[MIRRORLIST_SHA256_LEN]; /* the whole file's */
  size_t n_skipped;             /* URLs skipped (not http or https) */
  size_t n_notes;               /* the first of them, "NAME:LINE: why" */
  char *notes[MIRRORLIST_MAX_NOTES];
};

/* Initialise libxml2 once (idempotent, thread-safe).  Optional. */
void mirrorlist_global_init (void);

/* Parse the mirror list buf[0..len) (at most MIRRORLIST_MAX_BYTES).
 * name (a path or URL) is only used in messages.  A metalink's first
 * <file> is used.  On success fills *out (caller frees it with
 * mirror_list_free) and returns 0; at least one mirror is kept.  On
 * failure returns -1 with err set (EINVAL with a message naming name,
 * the line where known, and the fault; ENOMEM) and *out empty. */
int mirrorlist_parse (const void *buf, size_t len, const char *name,
                      struct mirror_list *out, struct cloop_err *err);

/* The same, but from a metalink take the <file> whose name= attribute
 * is file_name (EINVAL if there is none).  file_name NULL = the first
 * <file>.  A plain list is not affected by file_name. */
int mirrorlist_parse_file (const void *buf, size_t len, const char *name,
                           const char *file_name, struct mirror_list *out,
                           struct cloop_err *err);

/* Free what a list holds and empty it (NULL is allowed). */
void mirror_list_free (struct mirror_list *list);

#endif /* CLOOP_MIRRORLIST_H */
