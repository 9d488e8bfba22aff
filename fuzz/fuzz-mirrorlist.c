/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: fuzz the mirror-list parser (fetch/mirrorlist.c):
 * Metalink 4 documents through libxml2, and plain URL lists.
 *
 * The input is the bytes of a list, parsed twice: for the first
 * <file>, and for the <file name="KNOPPIX">.  Properties: a list that
 * parses has 1 to 256 mirrors, each an http:// or https:// URL of at
 * most 8 KiB with no blank or control byte and a host, a priority from
 * 1 to 999999 and an empty or two-letter lower-case location, sorted
 * by priority, no URL twice; a size, if any, from 1 to 2^50; at most
 * MIRRORLIST_MAX_NOTES notes, each naming the input.  A failure is
 * EINVAL (or ENOMEM) with a message naming the input, and an empty
 * list.  (That libxml2 prints nothing is checked by
 * tests/test-mirrorlist; here a stray message would fill the log.)
 */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mirrorlist.h"

#define NAME "fuzz.meta4"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mirrorlist_global_init ();
  return 0;
}

static void
check_mirror (const struct mirror *m)
{
  size_t len = strlen (m->url), skip;

  FUZZ_ASSERT (strncmp (m->url, "http://", 7) == 0 ||
               strncmp (m->url, "https://", 8) == 0);
  skip = m->url[4] == 's' ? 8 : 7;
  FUZZ_ASSERT (len > skip && len <= MIRRORLIST_MAX_URL);
  FUZZ_ASSERT (m->url[skip] != '/' && m->url[skip] != '?' &&
               m->url[skip] != '#');
  for (size_t i = 0; i < len; i++)
    FUZZ_ASSERT ((unsigned char) m->url[i] > ' ' && m->url[i] != 0x7f);
  FUZZ_ASSERT (m->priority >= 1 && m->priority <= MIRRORLIST_PRIORITY_MAX);
  FUZZ_ASSERT (m->location[0] == '\0' ||
               (m->location[0] >= 'a' && m->location[0] <= 'z' &&
                m->location[1] >= 'a' && m->location[1] <= 'z' &&
                m->location[2] == '\0'));
}

static void
check (const uint8_t *data, size_t size, const char *file_name)
{
  struct mirror_list l;
  struct cloop_err err = { 0 };

  if (mirrorlist_parse_file (data, size, NAME, file_name, &l, &err) == -1) {
    FUZZ_ASSERT (err.errnum == EINVAL || err.errnum == ENOMEM);
    FUZZ_ASSERT (err.errnum == ENOMEM || strstr (err.msg, NAME) != NULL);
    FUZZ_ASSERT (l.n == 0 && l.mirrors == NULL && l.n_notes == 0 &&
                 l.file_name == NULL);
    return;
  }
  FUZZ_ASSERT (l.n >= 1 && l.n <= MIRRORLIST_MAX_MIRRORS);
  for (size_t i = 0; i < l.n; i++) {
    check_mirror (&l.mirrors[i]);
    if (i > 0)
      FUZZ_ASSERT (l.mirrors[i - 1].priority <= l.mirrors[i].priority);
    for (size_t j = 0; j < i; j++)
      FUZZ_ASSERT (strcmp (l.mirrors[j].url, l.mirrors[i].url) != 0);
  }
  FUZZ_ASSERT (!l.have_size ||
               (l.size >= 1 && l.size <= MIRRORLIST_MAX_SIZE));
  FUZZ_ASSERT (l.is_metalink || (!l.have_size && !l.have_sha256 &&
                                 l.file_name == NULL));
  FUZZ_ASSERT (file_name == NULL || !l.is_metalink ||
               strcmp (l.file_name, file_name) == 0);
  FUZZ_ASSERT (l.n_notes <= MIRRORLIST_MAX_NOTES &&
               l.n_notes <= l.n_skipped);
  for (size_t i = 0; i < l.n_notes; i++)
    FUZZ_ASSERT (strncmp (l.notes[i], NAME ":", strlen (NAME) + 1) == 0);
  mirror_list_free (&l);
  FUZZ_ASSERT (l.n == 0 && l.mirrors == NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  check (data, size, NULL);
  check (data, size, "KNOPPIX");
  return 0;
}
