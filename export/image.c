/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: open an exported image from its configuration
 * (see image.h). */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "cloop.h"
#include "diskcache.h"
#include "hashlist.h"
#include "image.h"
#include "iso9660.h"
#include "profile.h"
#include "store.h"
#include "trust.h"
#include "wholefile.h"

/* The identity of a remote object as kept in the disk cache (a meta
 * blob named by the URL), so that the image can be served with the
 * server down. */
struct identity {
  uint64_t size;
  char etag[256];
  char last_modified[128];
  int64_t checked;              /* when the server last confirmed it */
  bool settled;                 /* its validators named one version then
                                 * (http_validators_settled) */
};

#define IDENTITY_MAGIC "nbdkit-cloop identity 1\n"

static void
identity_format (const struct identity *id, char *buf, size_t len)
{
  snprintf (buf, len, IDENTITY_MAGIC "size=%" PRIu64 "\nchecked=%" PRId64
            "\netag=%s\nlast-modified=%s\nsettled=%d\n",
            id->size, id->checked, id->etag, id->last_modified,
            id->settled ? 1 : 0);
}

/* Parse what identity_format wrote.  0, or -1 if it is not one. */
static int
identity_parse (const char *text, struct identity *id)
{
  const char *p;

  memset (id, 0, sizeof *id);
  if (strncmp (text, IDENTITY_MAGIC, strlen (IDENTITY_MAGIC)) != 0 ||
      sscanf (text + strlen (IDENTITY_MAGIC), "size=%" SCNu64, &id->size) != 1)
    return -1;
  if ((p = strstr (text, "\nchecked=")) != NULL)
    sscanf (p + 9, "%" SCNd64, &id->checked);
  if ((p = strstr (text, "\netag=")) != NULL)
    sscanf (p + 6, "%255[^\n]", id->etag);
  if ((p = strstr (text, "\nlast-modified=")) != NULL)
    sscanf (p + 15, "%127[^\n]", id->last_modified);
  id->settled = strstr (text, "\nsettled=1\n") != NULL;
  return 0;
}

/* Reads the image's header and index (everything the format parser
 * reads at open) through the disk cache, so that they too are there
 * for an offline start.  They are cached as metadata entries, which
 * eviction removes only after every block (so an image whose blocks
 * are cached can still start offline), and only once the whole map
 * has parsed (and, for a store, been trusted): a corrupt reply is
 * never cached.  A cached copy that does not parse is dropped and
 * fetched again (image_open). */
struct meta_piece {
  uint64_t base;                /* of the window read (0: the object) */
  uint64_t offset;              /* in the window */
  size_t len;
  bool from_cache;              /* else fetched: commit it on success */
  bool outer;                   /* read of an ISO image around a file */
  struct meta_piece *next;
  unsigned char data[];         /* len bytes */
};

struct meta_reader {
  struct source *src;
  struct disk_cache *dc;        /* may be NULL */
  const char *object_id;
  bool bypass;                  /* read from the source only */
  bool remember;                /* without dc: keep the pieces too (a
                                   remote source checks its mirrors
                                   against them) */
  struct meta_piece *pieces;    /* what this open read, newest first */
  uint64_t base;                /* src is a window at base (ISO file) */
  bool outer;                   /* reading the ISO image around it */
};

/* Tell the source what the image was parsed from (every piece, read
 * from it or from the cache): a source with mirrors checks each one's
 * copy of it.  0, or -1 with err set. */
static int
meta_tell_source (struct meta_reader *m, struct source *src,
                  struct cloop_err *err)
{
  struct source_range *r;
  size_t n = 0;
  int ret;

  for (struct meta_piece *p = m->pieces; p; p = p->next)
    n++;
  r = calloc (n ? n : 1, sizeof *r);
  if (r == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  n = 0;
  for (struct meta_piece *p = m->pieces; p; p = p->next)
    r[n++] = (struct source_range) {
      .offset = p->base + p->offset, .length = p->len, .buf = p->data,
    };
  ret = source_metadata (src, r, n, err);
  free (r);
  return ret;
}

/* The metadata name of bytes [offset, offset+len) of the object. */
static void
meta_name (char *name, size_t n, const char *object_id, uint64_t offset,
           size_t len)
{
  snprintf (name, n, "image-bytes:%s:%" PRIu64 "-%zu", object_id, offset,
            len);
}

/* Remember a piece read (from the cache, or fetched: then its bytes). */
static int
meta_remember (struct meta_reader *m, const void *buf, size_t len,
               uint64_t offset, bool from_cache, struct cloop_err *err)
{
  struct meta_piece *p = malloc (sizeof *p + len);

  if (p == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  p->base = m->base;
  p->offset = offset;
  p->len = len;
  p->from_cache = from_cache;
  p->outer = m->outer;
  memcpy (p->data, buf, len);
  p->next = m->pieces;
  m->pieces = p;
  return 0;
}

static int
meta_pread (void *opaque, void *buf, size_t len, uint64_t offset,
            struct cloop_err *err)
{
  struct meta_reader *m = opaque;
  char name[160];
  size_t got;
  struct cloop_err ignored;

  if (m->dc == NULL) {
    if (source_pread (m->src, buf, len, offset, err) == -1)
      return -1;
    return m->remember ? meta_remember (m, buf, len, offset, false, err) : 0;
  }
  /* Bytes read twice in one open (ISO probing, then the format) are
   * fetched once. */
  for (struct meta_piece *p = m->pieces; p; p = p->next)
    if (p->base + p->offset == m->base + offset && p->len == len) {
      memcpy (buf, p->data, len);
      return 0;
    }
  meta_name (name, sizeof name, m->object_id, m->base + offset, len);
  if (!m->bypass &&
      disk_cache_get_meta (m->dc, name, buf, len, &got, &ignored) == 1 &&
      got == len)
    return meta_remember (m, buf, len, offset, true, err);
  if (source_pread (m->src, buf, len, offset, err) == -1)
    return -1;
  return meta_remember (m, buf, len, offset, false, err);
}

/* After a successful open: cache what was fetched. */
static void
meta_commit (struct meta_reader *m)
{
  char name[160];
  struct cloop_err ignored;

  for (struct meta_piece *p = m->pieces; p; p = p->next)
    if (!p->from_cache) {
      meta_name (name, sizeof name, m->object_id, p->base + p->offset,
                 p->len);
      disk_cache_put_meta (m->dc, name, p->data, p->len, &ignored);
    }
}

/* After a failed open: drop the cached pieces it read; true if there
 * were any (then the open is worth trying again from the source). */
static bool
meta_drop_cached (struct meta_reader *m)
{
  char name[160];
  struct cloop_err ignored;
  bool any = false;

  for (struct meta_piece *p = m->pieces; p; p = p->next)
    if (p->from_cache) {
      meta_name (name, sizeof name, m->object_id, p->base + p->offset,
                 p->len);
      disk_cache_drop_meta (m->dc, name, &ignored);
      any = true;
    }
  return any;
}

static int
compare_pieces (const void *a, const void *b)
{
  const struct meta_piece *x = *(struct meta_piece *const *) a;
  const struct meta_piece *y = *(struct meta_piece *const *) b;

  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* The cache namespace of a remote cloop file's blocks: the hex SHA-256
 * of its object identity (URL and settled validators: object_id) and of
 * every header and index byte its parser read (offset, length and bytes
 * of each read, in offset order), so that a server that changed the
 * file without changing its validators cannot get its blocks mixed with
 * the old ones.  The header and index alone do not name the data (every
 * file of one size stored uncompressed, or of incompressible data, has
 * the same index), nor does a date (reproducible builds share one): a
 * file is not shared across URLs.  Reads of an ISO image around the
 * file do not count (its blocks are keyed by their offsets in the
 * file).  Replaces out (object_id); 0, or -1 (ENOMEM: out unchanged). */
static int
meta_content_id (struct meta_reader *m, uint64_t size, char out[65])
{
  struct meta_piece **v;
  size_t n = 0, k = 0;
  unsigned char hash[32];
  unsigned int hlen = 32;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();

  for (struct meta_piece *p = m->pieces; p; p = p->next)
    n += !p->outer && p->base == m->base;
  v = malloc ((n ? n : 1) * sizeof *v);
  if (v == NULL || ctx == NULL) {
    free (v);
    EVP_MD_CTX_free (ctx);
    return -1;
  }
  for (struct meta_piece *p = m->pieces; p; p = p->next)
    if (!p->outer && p->base == m->base)
      v[k++] = p;
  qsort (v, n, sizeof *v, compare_pieces);
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  EVP_DigestUpdate (ctx, "nbdkit-cloop content 2", 22);
  EVP_DigestUpdate (ctx, &size, sizeof size);
  EVP_DigestUpdate (ctx, out, strlen (out) + 1);
  for (k = 0; k < n; k++) {
    uint64_t hdr[2] = { v[k]->offset, v[k]->len };
    EVP_DigestUpdate (ctx, hdr, sizeof hdr);
    EVP_DigestUpdate (ctx, v[k]->data, v[k]->len);
  }
  EVP_DigestFinal_ex (ctx, hash, &hlen);
  EVP_MD_CTX_free (ctx);
  free (v);
  store_hex (out, hash);
  return 0;
}

static void
meta_forget (struct meta_reader *m)
{
  while (m->pieces) {
    struct meta_piece *next = m->pieces->next;
    free (m->pieces);
    m->pieces = next;
  }
}

/* The identity cached for url, if any.  0 or -1. */
static int
cached_identity (struct disk_cache *dc, const char *url, struct identity *id)
{
  char text[512];
  size_t len;
  struct cloop_err ignored;

  if (dc == NULL ||
      disk_cache_get_meta (dc, url, text, sizeof text - 1, &len,
                           &ignored) != 1)
    return -1;
  text[len] = '\0';
  return identity_parse (text, id);
}

/* *hc = http with the image's HTTP engine; returns hc. */
static const struct http_config *
on_engine (const struct image_config *cfg, const struct http_config *http,
           struct http_config *hc)
{
  *hc = *http;
  hc->engine = cfg->http_engine;
  return hc;
}

/* Open the remote source:
 * - pinned to the cached identity without asking the server, if the
 *   server confirmed it less than cfg->revalidate seconds ago and its
 *   validators were settled then;
 * - else by probing the server, recording what it says;
 * - else, if the server cannot be reached, an offline source that
 *   serves only what the cache holds (not if the probe was cancelled:
 *   ECANCELED, http.h).
 * Sets object_id (the cache namespace of this version of the object),
 * and *fresh when what is cached under it may be of another version
 * (the validators, now or when it was cached, were not settled: the
 * object may have changed within the second they name), so that the
 * header and index are fetched again; and *used to the identity in
 * force (cached or as the server gave it). */
static struct source *
open_remote (const struct image_config *cfg, struct disk_cache *dc,
             char object_id[65], bool *fresh, struct identity *used,
             struct cloop_err *err)
{
  const char *url = cfg->http->url;
  struct http_config hc;
  struct identity id;
  bool have_cached = cached_identity (dc, url, &id) == 0;
  int64_t now = time (NULL);
  struct source *src;
  char text[512];
  struct cloop_err ignored;

  /* With mirrors, every start asks them all: each must be seen to serve
   * the same object before any of its bytes is used. */
  *fresh = false;
  if (have_cached && id.settled && now >= id.checked &&
      now - id.checked < cfg->revalidate && cfg->http->n_mirrors == 0) {
    struct http_identity hid = {
      .url = url, .size = id.size, .etag = id.etag,
      .last_modified = id.last_modified, .settled = true,
    };
    src = source_open_http_pinned (on_engine (cfg, cfg->http, &hc), &hid,
                                   err);
  }
  else if ((src = source_open_http (on_engine (cfg, cfg->http, &hc),
                                    err)) != NULL) {
    const struct http_identity *hid = source_http_identity (src);
    *fresh = !(have_cached && id.settled && hid->settled &&
               id.size == hid->size &&
               strcmp (id.etag, hid->etag ? hid->etag : "") == 0 &&
               strcmp (id.last_modified,
                       hid->last_modified ? hid->last_modified : "") == 0);
    memset (&id, 0, sizeof id);
    id.size = hid->size;
    id.checked = now;
    id.settled = hid->settled;
    snprintf (id.etag, sizeof id.etag, "%s", hid->etag ? hid->etag : "");
    snprintf (id.last_modified, sizeof id.last_modified, "%s",
              hid->last_modified ? hid->last_modified : "");
    if (dc) {
      identity_format (&id, text, sizeof text);
      disk_cache_put_meta (dc, url, text, strlen (text), &ignored);
    }
  }
  else if (have_cached && err->errnum != ECANCELED) {
    if (cfg->warn)
      cfg->warn ("%s; serving the cached copy of %s (%" PRIu64
                 " bytes, ETag %s) without the server",
                 err->msg, url, id.size, id.etag[0] ? id.etag : "none");
    src = source_open_offline (url, id.size, err);
  }
  if (src == NULL)
    return NULL;
  disk_cache_object_id (object_id, url, id.etag, id.last_modified, id.size);
  *used = id;
  return src;
}

/* The last path component of a file name or URL (before ? or #). */
static void
base_name (const char *name, char *out, size_t n)
{
  size_t end = strcspn (name, "?#"), start = end;

  while (start > 0 && name[start - 1] != '/')
    start--;
  snprintf (out, n, "%.*s", (int) (end - start), name + start);
}

/* The signature file beside the index, as malloc'd NUL-terminated
 * text (*len bytes), or NULL with why set.  For a remote index (mdc
 * not NULL) the copy cached for this version of the index (object_id)
 * is used unless fresh is set, so a warm start asks the server nothing;
 * a fetched copy is cached. */
static char *
read_signature (struct source *src, struct disk_cache *mdc,
                const char *name, const char *object_id, bool fresh,
                size_t *len, bool *from_cache, struct cloop_err *why)
{
  char path[300], meta[100];
  struct source_object o = { .path = path, .length = SIGNATURE_FILE_MAX };
  struct cloop_err ignored;
  char *text = malloc (SIGNATURE_FILE_MAX + 1);

  *from_cache = false;
  if (text == NULL) {
    cloop_err_set (why, ENOMEM, "out of memory");
    return NULL;
  }
  base_name (name, path, sizeof path - 4);
  strcat (path, ".sig");
  snprintf (meta, sizeof meta, "signature:%s", object_id);
  if (mdc && !fresh &&
      disk_cache_get_meta (mdc, meta, text, SIGNATURE_FILE_MAX, len,
                           &ignored) == 1)
    *from_cache = true;
  else {
    o.buf = text;
    if (source_get_objects (src, &o, 1, why) == -1) {
      free (text);
      return NULL;
    }
    *len = o.received;
    if (mdc)
      disk_cache_put_meta (mdc, meta, text, *len, &ignored);
  }
  text[*len] = '\0';
  return text;
}

/* Rule 2-4 of the trust rules (trust.c) with the signature file
 * beside the index.  A cached signature that does not verify the index
 * is fetched afresh once (the publisher may have re-signed). */
static int
check_store_trust (const struct image_config *cfg, struct source *src,
                   struct disk_cache *dc, struct disk_cache *mdc,
                   const char *name, const char *object_id, bool fresh,
                   const struct store_index *idx,
                   const unsigned char *buf, size_t size,
                   struct cloop_err *err)
{
  struct trust_config tc = {
    .keys = cfg->keys, .nkeys = cfg->nkeys,
    .pinned = cfg->have_pinned ? cfg->pinned : NULL,
    .insecure = cfg->insecure, .state = cfg->state_dir, .legacy = dc,
    .warn = cfg->warn,
  };
  bool need_sig = !cfg->insecure && !cfg->have_pinned && cfg->nkeys > 0;
  bool from_cache = false;
  size_t sig_len = 0;
  char *sig = NULL;
  int r;

  for (int attempt = 0; attempt < 2; attempt++) {
    if (need_sig) {
      struct cloop_err why = { 0 };
      sig = read_signature (src, mdc, name, object_id, fresh || attempt > 0,
                            &sig_len, &from_cache, &why);
      if (sig == NULL)
        return cloop_err_set (err, EACCES, "index is not signed: cannot "
                              "read its signature file: %s", why.msg);
    }
    r = trust_check_index (&tc, idx, buf, size, sig, sig_len, time (NULL),
                           err);
    free (sig);
    sig = NULL;
    if (r == 0 || !from_cache)
      break;
  }
  return r;
}

/* A block store: read the whole index, decide whether to trust it,
 * and turn it into a block map.  mdc is the disk cache of a remote
 * index (NULL for a local one).  NULL with err set. */
static struct block_map *
open_store (const struct image_config *cfg, struct source *src,
            struct disk_cache *dc, struct disk_cache *mdc,
            const struct byte_reader *br, const char *name,
            const char *object_id, bool fresh, struct cloop_err *err)
{
  uint64_t size = source_size (src);
  unsigned char *buf = NULL;
  struct store_index *idx = NULL;
  struct block_map *map = NULL;

  if (size > STORE_INDEX_MAX) {
    cloop_err_set (err, EINVAL, "store index of %" PRIu64 " bytes is "
                   "larger than the limit of %u", size, STORE_INDEX_MAX);
    return NULL;
  }
  buf = malloc (size ? size : 1);
  if (buf == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory reading the store index");
    return NULL;
  }
  if (br->pread (br->opaque, buf, size, 0, err) == 0 &&
      (idx = store_index_parse (buf, size, err)) != NULL &&
      check_store_trust (cfg, src, dc, mdc, name, object_id, fresh, idx, buf,
                         size, err) == 0)
    map = store_index_to_map (idx, err);
  store_index_free (idx);
  free (buf);
  return map;
}

/* A block-hash list's bytes and its signature file's text, as fetched
 * or as kept in the disk cache. */
struct list_copy {
  unsigned char *buf;
  size_t len;
  char *sig;                    /* NULL if not needed or not readable */
  size_t sig_len;
  struct cloop_err sig_why;     /* why sig is NULL */
};

static void
list_copy_clear (struct list_copy *c)
{
  free (c->buf);
  free (c->sig);
  memset (c, 0, sizeof *c);
}

/* A list is checked by its signature if keys are given and no pin. */
static bool
list_needs_signature (const struct image_config *cfg)
{
  return !cfg->have_hashes_pinned && cfg->nkeys > 0;
}

/* Read the list (at most HASHLIST_MAX bytes) and, if it needs one, its
 * signature file beside it (LIST.sig) from the list's file or URL.
 * 0, or -1 with err set (c may hold a part to clear). */
static int
fetch_hash_list (const struct image_config *cfg, struct list_copy *c,
                 struct cloop_err *err)
{
  struct http_config hc;
  struct source *src = cfg->block_hashes_http
    ? source_open_http (on_engine (cfg, cfg->block_hashes_http, &hc), err)
    : source_open_file (cfg->block_hashes, err);
  uint64_t size;
  bool from_cache;
  int r = -1;

  if (src == NULL)
    return -1;
  size = source_size (src);
  if (size > HASHLIST_MAX)
    cloop_err_set (err, EINVAL, "list of %" PRIu64 " bytes is larger than "
                   "the limit of %u", size, HASHLIST_MAX);
  else if ((c->buf = malloc (size ? size : 1)) == NULL)
    cloop_err_set (err, ENOMEM, "out of memory");
  else if (source_pread (src, c->buf, size, 0, err) == 0) {
    c->len = size;
    if (list_needs_signature (cfg))
      c->sig = read_signature (src, NULL, cfg->block_hashes, "", true,
                               &c->sig_len, &from_cache, &c->sig_why);
    r = 0;
  }
  source_close (src);
  return r;
}

#define LIST_META_MAGIC "nbdkit-cloop block-hashes 1\n"

/* Disk-cache metadata name of a list URL's copy (what = "block-hashes"
 * or "block-hashes-sig"); NULL on ENOMEM.  Caller frees. */
static char *
list_meta_name (const char *what, const char *url)
{
  char *name;

  return asprintf (&name, "%s:%s", what, url) == -1 ? NULL : name;
}

/* Keep a list fetched from url (and its signature) in the disk cache,
 * for a start without the server: the bytes as a block named by their
 * SHA-256, their size and hash as metadata under the URL.  Best
 * effort. */
static void
cache_hash_list (struct disk_cache *dc, const char *url,
                 const struct list_copy *c)
{
  char *name = list_meta_name ("block-hashes", url);
  char *sig_name = list_meta_name ("block-hashes-sig", url);
  char key[DISK_CACHE_KEY_MAX], hex[65], text[160];
  unsigned char h[32];
  struct cloop_err ignored;

  trust_sha256 (c->buf, c->len, h);
  store_hex (hex, h);
  snprintf (text, sizeof text, LIST_META_MAGIC "size=%zu\nsha256=%s\n",
            c->len, hex);
  if (name && sig_name && disk_cache_key_hash (key, sizeof key, h) == 0 &&
      disk_cache_put (dc, key, c->buf, c->len, &ignored) == 0) {
    disk_cache_put_meta (dc, name, text, strlen (text), &ignored);
    if (c->sig)
      disk_cache_put_meta (dc, sig_name, c->sig, c->sig_len, &ignored);
  }
  free (name);
  free (sig_name);
}

/* The copy of url's list that cache_hash_list kept, and its signature
 * if one was kept.  0, or -1 if there is none. */
static int
cached_hash_list (struct disk_cache *dc, const char *url,
                  struct list_copy *c)
{
  char *name = list_meta_name ("block-hashes", url);
  char *sig_name = list_meta_name ("block-hashes-sig", url);
  char key[DISK_CACHE_KEY_MAX], hex[65], text[160];
  unsigned char h[32];
  struct cloop_err ignored;
  size_t tlen, size;
  int r = -1;

  if (name == NULL || sig_name == NULL ||
      disk_cache_get_meta (dc, name, text, sizeof text - 1, &tlen,
                           &ignored) != 1)
    goto out;
  text[tlen] = '\0';
  if (strncmp (text, LIST_META_MAGIC, strlen (LIST_META_MAGIC)) != 0 ||
      sscanf (text + strlen (LIST_META_MAGIC), "size=%zu\nsha256=%64s",
              &size, hex) != 2 ||
      size > HASHLIST_MAX || store_unhex (h, hex) == -1 ||
      disk_cache_key_hash (key, sizeof key, h) == -1 ||
      (c->buf = malloc (size ? size : 1)) == NULL ||
      disk_cache_get (dc, key, c->buf, size, &ignored) != 1)
    goto out;
  c->len = size;
  r = 0;
  if ((c->sig = malloc (SIGNATURE_FILE_MAX + 1)) != NULL &&
      disk_cache_get_meta (dc, sig_name, c->sig, SIGNATURE_FILE_MAX,
                           &c->sig_len, &ignored) == 1)
    c->sig[c->sig_len] = '\0';
  else {
    free (c->sig);
    c->sig = NULL;
    cloop_err_set (&c->sig_why, ENOENT, "no signature file in the disk "
                   "cache");
  }
 out:
  free (name);
  free (sig_name);
  return r;
}

/* Whether a block-hash list may be used: its SHA-256 equals the pin;
 * else, with pubkey=, its signature file verifies; else it is used
 * unverified (it still catches corruption).  0, or -1 with err set
 * (EACCES, EINVAL for a malformed .sig). */
static int
check_hash_list_trust (const struct image_config *cfg,
                       const struct list_copy *c, struct cloop_err *err)
{
  unsigned char digest[32];
  char got[65], want[65], keyid[17];

  if (cfg->have_hashes_pinned) {
    trust_sha256 (c->buf, c->len, digest);
    if (memcmp (digest, cfg->hashes_pinned, sizeof digest) == 0)
      return 0;
    store_hex (got, digest);
    store_hex (want, cfg->hashes_pinned);
    return cloop_err_set (err, EACCES, "its SHA-256 %s is not the pinned "
                          "%s", got, want);
  }
  if (!list_needs_signature (cfg)) {
    if (cfg->reader.debug)
      cfg->reader.debug ("block-hashes %s: used without a signature or pin "
                         "(no pubkey= or block-hashes-sha256=)",
                         cfg->block_hashes);
    return 0;
  }
  if (c->sig == NULL)
    return cloop_err_set (err, EACCES, "list is not signed: cannot read its "
                          "signature file: %s", c->sig_why.msg);
  if (signature_verify (c->buf, c->len, c->sig, c->sig_len, cfg->keys,
                        cfg->nkeys, keyid, err) == -1)
    return -1;
  if (cfg->reader.debug)
    cfg->reader.debug ("block-hashes %s: signed by key %s",
                       cfg->block_hashes, keyid);
  return 0;
}

/* Attach cfg->block_hashes (a local file or URL) to the block map of a
 * cloop file of file_size bytes, after checking that it is trusted and
 * made for this image.  A list URL that cannot be read is taken from
 * the disk cache dc (may be NULL), if a copy is there, with a warning.
 * 0, or -1 with err set naming the list. */
static int
attach_block_hashes (const struct image_config *cfg, struct disk_cache *dc,
                     struct block_map *map, uint64_t file_size,
                     struct cloop_err *err)
{
  bool cacheable = dc != NULL && cfg->block_hashes_http != NULL;
  struct list_copy c = { 0 };
  struct hash_list *list = NULL;
  bool have = false, fetched = false;
  int r = -1;

  if (map->objects_by_hash)
    cloop_err_set (err, EINVAL, "only plain cloop files take a block-hash "
                   "list (a block store's index has its own hashes)");
  else if (fetch_hash_list (cfg, &c, err) == 0)
    have = fetched = true;
  else if (cacheable) {
    list_copy_clear (&c);
    if (cached_hash_list (dc, cfg->block_hashes, &c) == 0) {
      have = true;
      if (cfg->warn)
        cfg->warn ("block-hashes %s: %s; using the copy in the disk cache",
                   cfg->block_hashes, err->msg);
    }
  }
  if (have &&
      (list = hash_list_parse (c.buf, c.len, err)) != NULL &&
      check_hash_list_trust (cfg, &c, err) == 0 &&
      hash_list_attach (list, map, file_size, err) == 0) {
    r = 0;
    if (fetched && cacheable)
      cache_hash_list (dc, cfg->block_hashes, &c);
  }
  if (r == -1)
    cloop_err_prefix (err, "block-hashes %s", cfg->block_hashes);
  hash_list_free (list);
  list_copy_clear (&c);
  return r;
}

/* Attach cfg->profile (a standalone boot profile, index/profile.h) to
 * the block map of a cloop file, after checking its pin.  A profile
 * that cannot be fetched (EIO: its server is down) is only warned
 * about: it is an optimisation, and the image is served without it.
 * 0, or -1 with err set naming the profile. */
static int
attach_profile (const struct image_config *cfg, struct block_map *map,
                struct cloop_err *err)
{
  char *buf = NULL;
  size_t len = 0;
  unsigned char got[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int r = -1;

  if (map->objects_by_hash)
    return cloop_err_set (err, EINVAL, "profile=%s: a block store's boot "
                          "profile is in its signed index (cloop-store "
                          "profile add); profile= is for cloop files "
                          "(profile=none turns the replay off)",
                          cfg->profile);
  if (whole_file_load (cfg->profile, cfg->profile_http, PROFILE_FILE_MAX,
                       "profile", &buf, &len, err) == -1) {
    if (err->errnum != EIO || cfg->warn == NULL)
      return -1;
    cfg->warn ("%s; serving the image without its boot profile", err->msg);
    *err = (struct cloop_err) { 0 };
    return 0;
  }
  EVP_Digest (buf, len, got, &n, EVP_sha256 (), NULL);
  if (cfg->have_profile_pinned &&
      (n != 32 || memcmp (got, cfg->profile_pinned, 32) != 0)) {
    char hex[65];
    store_hex (hex, got);
    cloop_err_set (err, EACCES, "profile=%s: its SHA-256 is %s, not the "
                   "profile-sha256= given", cfg->profile, hex);
  }
  else if (profile_decode (buf, len, map->num_blocks, map->block_size,
                           &map->profile, &map->profile_len, NULL, NULL,
                           err) == 0)
    r = 0;
  else
    cloop_err_prefix (err, "profile=%s", cfg->profile);
  free (buf);
  return r;
}

/* The cloop file served from an ISO9660 image without iso-file=. */
#define ISO_DEFAULT_FILE "/KNOPPIX/KNOPPIX"

/* Whether the image behind br is an ISO9660 image: not if it starts
 * like a cloop shell header (so a bare cloop file costs no extra
 * read), else by "CD001" at 32769.  *outer is set after reading the
 * head (which the format parser reads too).  0 with *is_iso set, or
 * -1. */
static int
probe_iso (const struct byte_reader *br, bool *outer, bool *is_iso,
           struct cloop_err *err)
{
  unsigned char head[STORE_MAGIC_LEN];

  *is_iso = false;
  if (br->size >= sizeof head &&
      br->pread (br->opaque, head, sizeof head, 0, err) == -1)
    return -1;
  if (br->size >= sizeof head && memcmp (head, "#!/bin/s", 8) == 0)
    return 0;
  *outer = true;
  return iso9660_probe (br, is_iso, err);
}

/* If the image behind *srcp is an ISO9660 image, replace *srcp (and m
 * and br, which read it) with a window on the file iso_path inside it
 * (cfg->iso_file, default /KNOPPIX/KNOPPIX; set to "" if the image is
 * not an ISO).  The reads of the ISO are outer pieces of m.  0, or -1
 * with err set naming the path and the image (*srcp may then be NULL:
 * it was closed). */
static int
open_iso_file (const struct image_config *cfg, struct source **srcp,
               struct meta_reader *m, struct byte_reader *br,
               const char *name, char *iso_path, size_t iso_path_len,
               struct cloop_err *err)
{
  const char *path = cfg->iso_file ? cfg->iso_file : ISO_DEFAULT_FILE;
  struct iso9660_file f;
  struct source *win;
  char *wname;
  bool is_iso;
  int r;

  if (source_base (*srcp) != *srcp) /* already opened (a retry) */
    return 0;
  iso_path[0] = '\0';
  r = probe_iso (br, &m->outer, &is_iso, err);
  /* Offline, a probe that is not in the cache was never made: the
   * image was served as a bare file by a version without ISO support. */
  if (r == -1 && source_is_offline (*srcp)) {
    *err = (struct cloop_err) { 0 };
    r = 0;
  }
  if (r == 0 && is_iso)
    r = iso9660_find (br, path, &f, err);
  m->outer = false;
  if (r == -1) {
    if (is_iso)
      cloop_err_prefix (err, "%s in %s", path, name);
    else
      cloop_err_prefix (err, "%s", name);
    return -1;
  }
  if (!is_iso)
    return cfg->iso_file == NULL ? 0
      : cloop_err_set (err, EINVAL, "iso-file=%s: %s is not an ISO9660 "
                       "image", cfg->iso_file, name);
  snprintf (iso_path, iso_path_len, "%s", path);
  if (asprintf (&wname, "%s in %s", path, name) == -1)
    return cloop_err_set (err, ENOMEM, "out of memory");
  win = source_open_window (*srcp, f.offset, f.length, wname, err);
  free (wname);
  *srcp = win;
  if (win == NULL)
    return -1;
  m->src = win;
  m->base = f.offset;
  br->size = f.length;
  return 0;
}

/* Parse the image's format through br: a block store (signed index)
 * or a cloop file of any dialect.  NULL with err set. */
static struct block_map *
read_map (const struct image_config *cfg, struct source *src,
          struct disk_cache *dc, struct meta_reader *m,
          const struct byte_reader *br, const char *name,
          const char *object_id, struct cloop_err *err)
{
  unsigned char head[STORE_MAGIC_LEN];

  if (source_size (src) >= STORE_MAGIC_LEN &&
      br->pread (br->opaque, head, sizeof head, 0, err) == -1)
    return NULL;
  if (source_size (src) >= STORE_MAGIC_LEN &&
      store_probe_head (head, sizeof head))
    return open_store (cfg, src, dc, m->dc, br, name, object_id, m->bypass,
                       err);
  return cloop_open (br, err);
}

/* Find the file inside an ISO image (once: not again on a retry),
 * then parse the format through br.  NULL with err set; then
 * *iso_failed says whether finding the file failed (err names the
 * path and the image). */
static struct block_map *
open_map (const struct image_config *cfg, struct source **srcp,
          struct disk_cache *dc, struct meta_reader *m,
          struct byte_reader *br, const char *name, char *iso_path,
          size_t iso_path_len, bool *iso_failed, struct cloop_err *err)
{
  *iso_failed = false;
  if (*srcp == NULL ||
      open_iso_file (cfg, srcp, m, br, name, iso_path, iso_path_len,
                     err) == -1) {
    *iso_failed = true;
    return NULL;
  }
  return read_map (cfg, *srcp, dc, m, br, name, m->object_id, err);
}

struct reader *
image_open (const struct image_config *cfg, struct cloop_err *err)
{
  struct reader_config rcfg = cfg->reader;
  struct disk_cache *dc = cfg->disk_cache;
  struct source *src;
  struct block_map *map;
  struct reader *r;
  const char *name = cfg->file ? cfg->file : cfg->http->url;
  bool fresh = false, keep_blocks = !cfg->file;
  struct identity used = { .settled = true };

  if (cfg->file)
    src = source_open_file (cfg->file, err);
  else
    src = open_remote (cfg, dc, rcfg.object_id, &fresh, &used, err);
  if (src == NULL)
    return NULL;

  /* Header and index reads of a remote image go through the disk
   * cache (object_id namespace), so they are there for offline starts. */
  struct meta_reader m = {
    .src = src, .dc = cfg->file ? NULL : dc, .object_id = rcfg.object_id,
    .bypass = fresh, .remember = !cfg->file,
  };
  struct byte_reader br = {
    .opaque = &m, .size = source_size (src), .pread = meta_pread,
  };
  char iso_path[256] = "";
  bool iso_failed;
  map = open_map (cfg, &src, dc, &m, &br, name, iso_path, sizeof iso_path,
                  &iso_failed, err);
  /* Only a cached copy that does not parse (EINVAL) is suspect; an
   * index that parsed but is not trusted (EACCES: expired, rolled
   * back) or a failed fetch (EIO) says nothing against the cache. */
  if (map == NULL && m.dc && err->errnum == EINVAL && meta_drop_cached (&m)) {
    if (cfg->warn)
      cfg->warn ("%s: the cached header and index do not parse (%s); "
                 "dropped them, fetching them again", name, err->msg);
    meta_forget (&m);
    m.bypass = true;
    *err = (struct cloop_err) { 0 };
    map = open_map (cfg, &src, dc, &m, &br, name, iso_path, sizeof iso_path,
                    &iso_failed, err);
  }
  if (map && m.dc)
    meta_commit (&m);
  /* Blocks of a remote cloop file are cached under its identity and
   * index (a store's are named by their hashes anyway), and only if
   * its validators tell its versions apart. */
  if (map && m.dc && !map->objects_by_hash && !used.settled) {
    keep_blocks = false;
    if (cfg->warn && !used.last_modified[0] &&
        (!used.etag[0] || strncmp (used.etag, "W/", 2) == 0))
      cfg->warn ("%s: the server gives no Last-Modified or strong ETag, so "
                 "nothing tells a new version of it from this one: its "
                 "blocks are not kept in the disk cache", name);
    else if (cfg->warn)
      cfg->warn ("%s: its Last-Modified (%s) is not a second older than the "
                 "server's reply, so it may be changing within that second: "
                 "its blocks are not kept in the disk cache this time", name,
                 used.last_modified);
  }
  else if (map && m.dc && !map->objects_by_hash)
    meta_content_id (&m, source_size (src), rcfg.object_id);
  if (map && meta_tell_source (&m, src, err) == -1) {
    block_map_free (map);
    meta_forget (&m);
    goto fail;
  }
  meta_forget (&m);
  if (map == NULL && iso_failed)
    goto fail;
  if (map == NULL && iso_path[0]) {
    cloop_err_prefix (err, "%s in %s is not a cloop image", iso_path, name);
    goto fail;
  }
  if (map == NULL)
    goto fail_prefix;
  if (cfg->block_hashes &&
      attach_block_hashes (cfg, dc, map, source_size (src), err) == -1) {
    block_map_free (map);
    goto fail;
  }
  if (!map->objects_by_hash)
    base_name (iso_path[0] ? iso_path : name, map->name, sizeof map->name);
  if (cfg->profile && attach_profile (cfg, map, err) == -1) {
    block_map_free (map);
    goto fail;
  }
  /* A pin of a store index on a cloop file would check nothing: say so
   * rather than let the user believe the file is verified. */
  if (cfg->have_pinned && !map->objects_by_hash) {
    cloop_err_set (err, EINVAL, "index-sha256= (or #sha256= on url=) pins "
                   "a block store's index, and this is a cloop file (%s): "
                   "to verify its blocks, give block-hashes= with "
                   "block-hashes-sha256= or pubkey=", map->dialect);
    block_map_free (map);
    goto fail_prefix;
  }

  /* Blocks of local images are not copied into the disk cache. */
  rcfg.disk_cache = keep_blocks ? dc : NULL;
  /* A store's blocks are checked against the trusted index's hashes:
   * mirrors with another revision of the index may serve them. */
  if (map->objects_by_hash)
    source_objects_verified (src);
  source_opened (src);
  r = reader_new (src, map, &rcfg, err);
  if (r == NULL) {
    block_map_free (map);
    goto fail;
  }
  return r;

 fail_prefix:
  cloop_err_prefix (err, "%s", name);
 fail:
  source_close (src);
  return NULL;
}

void
image_read_failed (struct reader *r)
{
  struct source *src = source_base (reader_source (r));
  struct disk_cache *dc = reader_disk_cache (r);
  struct cloop_err ignored;
  static const char invalid[] = "changed on the server\n";

  if (dc != NULL && source_changed (src))
    disk_cache_put_meta (dc, src->name, invalid, strlen (invalid), &ignored);
}

/* byte_reader over a source. */
static int
source_byte_pread (void *opaque, void *buf, size_t len, uint64_t offset,
                   struct cloop_err *err)
{
  return source_pread (opaque, buf, len, offset, err);
}

/* byte_reader over a window of another byte_reader. */
struct window_reader {
  const struct byte_reader *br;
  uint64_t offset;
};

static int
window_byte_pread (void *opaque, void *buf, size_t len, uint64_t offset,
                   struct cloop_err *err)
{
  struct window_reader *w = opaque;

  return w->br->pread (w->br->opaque, buf, len, w->offset + offset, err);
}

enum image_kind
image_probe_file (const char *path, struct cloop_err *why)
{
  struct source *src = source_open_file (path, why);
  unsigned char head[STORE_MAGIC_LEN];
  enum image_kind kind = IMAGE_NONE;
  struct block_map *map;
  bool is_iso = false;

  if (src == NULL)
    return IMAGE_NONE;
  struct byte_reader br = {
    .opaque = src, .size = source_size (src), .pread = source_byte_pread,
  };
  if (source_size (src) >= STORE_MAGIC_LEN &&
      source_pread (src, head, sizeof head, 0, why) == 0 &&
      store_probe_head (head, sizeof head))
    kind = IMAGE_STORE;
  else if (probe_iso (&br, &(bool) { false }, &is_iso, why) == 0 && is_iso)
    kind = IMAGE_ISO;
  else if ((map = cloop_open (&br, why)) != NULL) {
    block_map_free (map);
    kind = IMAGE_CLOOP;
  }
  source_close (src);
  return kind;
}

/* What image_list_iso collects. */
struct iso_listing {
  const struct byte_reader *br;
  int (*fn) (void *opaque, const char *iso_path, struct cloop_err *err);
  void *opaque;
  const char *path;             /* of the ISO, for messages */
  void (*skipped) (const char *path, const char *why);
};

/* KNOPPIX followed by nothing or digits. */
static bool
is_knoppix_name (const char *name)
{
  if (strncmp (name, "KNOPPIX", 7) != 0)
    return false;
  return name[7 + strspn (name + 7, "0123456789")] == '\0';
}

static int
iso_list_one (void *opaque, const char *name, struct cloop_err *err)
{
  struct iso_listing *l = opaque;
  char iso_path[300];
  struct iso9660_file f;
  struct block_map *map;
  struct cloop_err why = { 0 };

  if (!is_knoppix_name (name))
    return 0;
  snprintf (iso_path, sizeof iso_path, "/KNOPPIX/%s", name);
  if (iso9660_find (l->br, iso_path, &f, &why) == 0) {
    struct window_reader w = { .br = l->br, .offset = f.offset };
    struct byte_reader wbr = {
      .opaque = &w, .size = f.length, .pread = window_byte_pread,
    };
    if ((map = cloop_open (&wbr, &why)) != NULL) {
      block_map_free (map);
      return l->fn (l->opaque, iso_path, err);
    }
  }
  if (l->skipped) {
    char what[600];
    snprintf (what, sizeof what, "%s:%s", l->path, iso_path);
    l->skipped (what, why.msg);
  }
  return 0;
}

int
image_list_iso (const char *path,
                int (*fn) (void *opaque, const char *iso_path,
                           struct cloop_err *err),
                void *opaque,
                void (*skipped) (const char *path, const char *why),
                struct cloop_err *err)
{
  struct source *src = source_open_file (path, err);
  int r;

  if (src == NULL)
    return -1;
  struct byte_reader br = {
    .opaque = src, .size = source_size (src), .pread = source_byte_pread,
  };
  struct iso_listing l = {
    .br = &br, .fn = fn, .opaque = opaque, .path = path, .skipped = skipped,
  };
  r = iso9660_list (&br, "/KNOPPIX", iso_list_one, &l, err);
  source_close (src);
  return r;
}
