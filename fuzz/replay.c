/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: main() for a fuzz harness built without libFuzzer: run
 * LLVMFuzzerTestOneInput once on each file named on the command line,
 * so that make check replays the seed corpus through the harness's
 * properties under the normal (or ASan) build.  Exit 0 if every input
 * ran (a violated property aborts), 1 if a file cannot be read.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* With libFuzzer, main() is libFuzzer's. */
#ifndef CLOOP_LIBFUZZER

int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));

/* Read a whole file into a new buffer.  NULL on error. */
static unsigned char *
slurp (const char *path, size_t *len)
{
  FILE *fp = fopen (path, "rb");
  unsigned char *buf = NULL, *p;
  size_t cap = 0, n = 0, r;

  if (fp == NULL)
    return NULL;
  do {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      if ((p = realloc (buf, cap)) == NULL) {
        free (buf);
        fclose (fp);
        return NULL;
      }
      buf = p;
    }
    r = fread (buf + n, 1, cap - n, fp);
    n += r;
  } while (r > 0);
  if (ferror (fp)) {
    free (buf);
    fclose (fp);
    return NULL;
  }
  fclose (fp);
  *len = n;
  return buf;
}

int
main (int argc, char *argv[])
{
  int i;

  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize (&argc, &argv);
  for (i = 1; i < argc; i++) {
    size_t len;
    unsigned char *buf = slurp (argv[i], &len);

    if (buf == NULL) {
      fprintf (stderr, "%s: %s: %s\n", argv[0], argv[i], strerror (errno));
      return 1;
    }
    LLVMFuzzerTestOneInput (buf, len);
    free (buf);
  }
  printf ("%s: %d inputs replayed\n", argv[0], argc - 1);
  return 0;
}

#endif /* !CLOOP_LIBFUZZER */
