/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: large transient buffers straight from the kernel
 * (see pagemem.h). */
#include <config.h>

#include <errno.h>
#include <sys/mman.h>

#include "pagemem.h"

void *
page_alloc (size_t len)
{
  void *p;

  if (len == 0) {
    errno = EINVAL;
    return NULL;
  }
  p = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
            -1, 0);
  if (p == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  return p;
}

void
page_free (void *p, size_t len)
{
  if (p != NULL)
    munmap (p, len);
}
