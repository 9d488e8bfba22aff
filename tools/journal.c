/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: the journal of a create in progress (see journal.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockmap.h"
#include "journal.h"

#define JOURNAL_MAGIC "cloop-store create journal 1"
#define LINE_MAX_LEN 4096

struct create_journal {
  char *path;
  FILE *f;                      /* open for appending */
  /* Loaded records, indexed by block number. */
  unsigned char *hashes;
  uint32_t *lengths;
  bool *known;
  uint64_t n, cap, loaded;
};

static int
grow (struct create_journal *j, uint64_t seq)
{
  uint64_t cap = j->cap ? j->cap : 1024;
  unsigned char *h;
  uint32_t *l;
  bool *k;

  if (seq < j->cap)
    return 0;
  while (cap <= seq)
    cap *= 2;
  h = realloc (j->hashes, cap * STORE_HASH_LEN);
  if (h == NULL)
    return -1;
  j->hashes = h;
  l = realloc (j->lengths, cap * sizeof *l);
  if (l == NULL)
    return -1;
  j->lengths = l;
  k = realloc (j->known, cap * sizeof *k);
  if (k == NULL)
    return -1;
  memset (k + j->cap, 0, (cap - j->cap) * sizeof *k);
  j->known = k;
  j->cap = cap;
  return 0;
}

/* Parse one record line.  0, or -1 if it is malformed (torn). */
static int
parse_record (struct create_journal *j, const char *line)
{
  char hex[65];
  uint64_t seq;
  uint32_t len;
  unsigned char hash[STORE_HASH_LEN];

  if (sscanf (line, "%" SCNu64, &seq) != 1 || seq >= NUM_BLOCKS_MAX)
    return -1;
  if (sscanf (line, "%" SCNu64 " %64s %" SCNu32, &seq, hex, &len) == 3 &&
      strlen (hex) == 64 && store_unhex (hash, hex) == 0 && len > 0 &&
      line[strlen (line) - 1] == '\n') {
    if (grow (j, seq) == -1)
      return -1;
    memcpy (j->hashes + seq * STORE_HASH_LEN, hash, STORE_HASH_LEN);
  }
  else if (sscanf (line, "%" SCNu64 " zero", &seq) == 1 &&
           strstr (line, " zero\n") != NULL) {
    if (grow (j, seq) == -1)
      return -1;
    len = 0;
  }
  else
    return -1;
  j->lengths[seq] = len;
  if (!j->known[seq])
    j->loaded++;
  j->known[seq] = true;
  return 0;
}

/* Load an existing journal of this identity.  true if it was one. */
static bool
load (struct create_journal *j, const char *identity)
{
  FILE *f = fopen (j->path, "re");
  char *line;
  bool ours = false;

  if (f == NULL)
    return false;
  line = malloc (LINE_MAX_LEN);
  if (line != NULL && fgets (line, LINE_MAX_LEN, f) != NULL &&
      strncmp (line, JOURNAL_MAGIC " ", strlen (JOURNAL_MAGIC) + 1) == 0 &&
      strncmp (line + strlen (JOURNAL_MAGIC) + 1, identity,
               strlen (identity)) == 0 &&
      strcmp (line + strlen (JOURNAL_MAGIC) + 1 + strlen (identity), "\n")
      == 0) {
    ours = true;
    while (fgets (line, LINE_MAX_LEN, f) != NULL)
      if (parse_record (j, line) == -1)
        break;                  /* torn or foreign: the rest is ignored */
  }
  free (line);
  fclose (f);
  return ours;
}

struct create_journal *
journal_open (const char *store, const char *index_name,
              const char *identity, struct cloop_err *err)
{
  struct create_journal *j = calloc (1, sizeof *j);
  bool ours;

  if (j == NULL ||
      asprintf (&j->path, "%s/.create-journal-%s", store, index_name) == -1) {
    free (j);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  ours = load (j, identity);
  if (!ours) {
    free (j->known);
    j->known = NULL;
    j->cap = j->loaded = 0;
  }
  /* A torn last line would glue onto the next record: rewrite the
   * journal from what was loaded. */
  j->f = fopen (j->path, "we");
  if (j->f == NULL) {
    cloop_err_set (err, errno, "%s: %s", j->path, strerror (errno));
    journal_close (j);
    return NULL;
  }
  fprintf (j->f, "%s %s\n", JOURNAL_MAGIC, identity);
  for (uint64_t i = 0; i < j->cap; i++)
    if (j->known[i] && j->lengths[i] == 0)
      fprintf (j->f, "%" PRIu64 " zero\n", i);
    else if (j->known[i]) {
      char hex[65];
      store_hex (hex, j->hashes + i * STORE_HASH_LEN);
      fprintf (j->f, "%" PRIu64 " %s %" PRIu32 "\n", i, hex, j->lengths[i]);
    }
  if (fflush (j->f) != 0) {
    cloop_err_set (err, errno, "%s: %s", j->path, strerror (errno));
    journal_close (j);
    return NULL;
  }
  return j;
}

uint64_t
journal_loaded (const struct create_journal *j)
{
  return j->loaded;
}

bool
journal_lookup (const struct create_journal *j, uint64_t seq,
                unsigned char hash[STORE_HASH_LEN], uint32_t *len)
{
  if (seq >= j->cap || !j->known[seq])
    return false;
  *len = j->lengths[seq];
  if (*len)
    memcpy (hash, j->hashes + seq * STORE_HASH_LEN, STORE_HASH_LEN);
  return true;
}

int
journal_record (struct create_journal *j, uint64_t seq,
                const unsigned char *hash, uint32_t len,
                struct cloop_err *err)
{
  char hex[65];

  if (hash == NULL)
    fprintf (j->f, "%" PRIu64 " zero\n", seq);
  else {
    store_hex (hex, hash);
    fprintf (j->f, "%" PRIu64 " %s %" PRIu32 "\n", seq, hex, len);
  }
  if (fflush (j->f) != 0)
    return cloop_err_set (err, errno, "%s: %s", j->path, strerror (errno));
  return 0;
}

void
journal_remove (struct create_journal *j)
{
  unlink (j->path);
}

void
journal_close (struct create_journal *j)
{
  if (j == NULL)
    return;
  if (j->f)
    fclose (j->f);
  free (j->path);
  free (j->hashes);
  free (j->lengths);
  free (j->known);
  free (j);
}
