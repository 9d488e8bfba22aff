/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: whether a block-store index may be served (trust.h). */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "trust.h"

void
trust_sha256 (const void *buf, size_t len, unsigned char out[32])
{
  unsigned int n = 32;

  EVP_Digest (buf, len, out, &n, EVP_sha256 (), NULL);
}

/* Rule 2: a valid signature by a trusted key, or the pinned hash. */
static int
check_authentic (const struct trust_config *cfg, const void *index,
                 size_t len, const char *sig_text, size_t sig_len,
                 struct cloop_err *err)
{
  unsigned char hash[32];
  char hex[65], want[65], keyid[17];

  if (cfg->pinned) {
    trust_sha256 (index, len, hash);
    if (memcmp (hash, cfg->pinned, 32) == 0)
      return 0;
    store_hex (hex, hash);
    store_hex (want, cfg->pinned);
    return cloop_err_set (err, EACCES, "index has SHA-256 %s, but %s is "
                          "pinned", hex, want);
  }
  if (cfg->nkeys == 0)
    return cloop_err_set (err, EACCES, "no trusted key (pubkey=) and no "
                          "pinned hash (index-sha256=): refusing an "
                          "unverified index (insecure=true to override)");
  if (sig_text == NULL)
    return cloop_err_set (err, EACCES, "index is not signed (no .sig file)");
  if (signature_verify (index, len, sig_text, sig_len, cfg->keys, cfg->nkeys,
                        keyid, err) == -1) {
    err->errnum = EACCES;
    return -1;
  }
  return 0;
}

/* Rule 4: anti-rollback, against what this cache accepted before. */
static int
check_revision_locked (const struct trust_config *cfg,
                       const struct store_index *idx,
                       const void *index, size_t len, struct cloop_err *err)
{
  char meta_name[STORE_NAME_MAX + 16], text[160], hex[65], seen_hex[65];
  unsigned char hash[32];
  uint64_t seen_rev;
  size_t tlen;
  struct cloop_err ignored;

  if (cfg->state == NULL)
    return 0;
  snprintf (meta_name, sizeof meta_name, "revision:%s", idx->name);
  trust_sha256 (index, len, hash);
  store_hex (hex, hash);
  int found = state_dir_get (cfg->state, meta_name, text, sizeof text,
                             &tlen, &ignored);
  if (found == -1 && cfg->warn)
    cfg->warn ("%s", ignored.msg);
  if (found != 1 && cfg->legacy)
    found = disk_cache_get_meta (cfg->legacy, meta_name, text,
                                 sizeof text - 1, &tlen, &ignored);
  if (found == 1) {
    text[tlen] = '\0';
    if (sscanf (text, "revision=%" SCNu64 " sha256=%64s", &seen_rev,
                seen_hex) == 2) {
      if (idx->revision < seen_rev)
        return cloop_err_set (err, EACCES, "index of '%s' has revision %"
                              PRIu64 ", older than revision %" PRIu64
                              " accepted before (rollback refused)",
                              idx->name, idx->revision, seen_rev);
      if (idx->revision == seen_rev && strcmp (hex, seen_hex) != 0)
        return cloop_err_set (err, EACCES, "index of '%s' revision %" PRIu64
                              " differs from the one accepted before",
                              idx->name, idx->revision);
      if (idx->revision == seen_rev)
        return 0;
    }
  }
  snprintf (text, sizeof text, "revision=%" PRIu64 " sha256=%s\n",
            idx->revision, hex);
  if (state_dir_put (cfg->state, meta_name, text, strlen (text),
                     &ignored) == -1 && cfg->warn)
    cfg->warn ("cannot record revision %" PRIu64 " of '%s', so a later "
               "start cannot refuse older ones: %s", idx->revision,
               idx->name, ignored.msg);
  return 0;
}

/* check_revision_locked with the state directory locked, so that two
 * processes accepting revisions of one store cannot leave the lower
 * one recorded. */
static int
check_revision (const struct trust_config *cfg, const struct store_index *idx,
                const void *index, size_t len, struct cloop_err *err)
{
  int r;

  if (cfg->state == NULL)
    return 0;
  state_dir_lock (cfg->state);
  r = check_revision_locked (cfg, idx, index, len, err);
  state_dir_unlock (cfg->state);
  return r;
}

int
trust_check_index (const struct trust_config *cfg,
                   const struct store_index *idx,
                   const void *index, size_t len,
                   const char *sig_text, size_t sig_len,
                   int64_t now, struct cloop_err *err)
{
  if (cfg->insecure) {
    if (cfg->warn)
      cfg->warn ("insecure=true: serving index '%s' revision %" PRIu64
                 " without checking its signature, expiry or revision",
                 idx->name, idx->revision);
    return 0;
  }
  if (check_authentic (cfg, index, len, sig_text, sig_len, err) == -1)
    return -1;
  if (idx->expires != 0 && (uint64_t) now >= idx->expires)
    return cloop_err_set (err, EACCES, "index of '%s' expired %" PRIu64
                          " seconds ago", idx->name,
                          (uint64_t) now - idx->expires);
  return check_revision (cfg, idx, index, len, err);
}
