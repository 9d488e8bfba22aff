/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: what every fuzz harness in fuzz/ shares.
 *
 * Each fuzz/fuzz-*.c defines LLVMFuzzerTestOneInput (and optionally
 * LLVMFuzzerInitialize).  Built by scripts/fuzz with clang
 * -fsanitize=fuzzer,address,undefined, libFuzzer drives it; built by
 * make check, fuzz/replay.c's main() runs it once on each file named
 * on its command line (the seed corpus, see fuzz/README.md).
 */
#ifndef CLOOP_FUZZ_H
#define CLOOP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/* A property every input must keep; abort() so that libFuzzer (and
 * the replay program) report it as a crash and keep the input. */
#define FUZZ_ASSERT(cond)                                               \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "%s:%d: property violated: %s\n",                \
               __FILE__, __LINE__, #cond);                              \
      abort ();                                                         \
    }                                                                   \
  } while (0)

#endif /* CLOOP_FUZZ_H */
