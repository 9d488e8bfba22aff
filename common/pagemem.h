/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: large transient buffers straight from the kernel.
 *
 * page_alloc maps an anonymous region of its own and page_free unmaps
 * it, so the memory goes back to the system at once.  Use it for large
 * buffers that come and go while many threads run (oversized scratch
 * space, decoded blocks beyond the memory cache's arena).  Through
 * malloc they would be mmap'd too, but glibc raises its dynamic mmap
 * threshold to the size of every mmap'd chunk freed, after which all
 * allocations below that size (nbdkit's per-thread request buffers
 * included) come from its per-thread arenas, which keep their peak
 * for good: with 16 connections of 16 threads each, hundreds of MiB.
 */
#ifndef CLOOP_PAGEMEM_H
#define CLOOP_PAGEMEM_H

#include <stddef.h>

/* len bytes (> 0) of zeroed, page-aligned memory, or NULL with errno
 * set (ENOMEM). */
void *page_alloc (size_t len);

/* Give back memory from page_alloc; len must be the length it was
 * allocated with.  p may be NULL. */
void page_free (void *p, size_t len);

#endif /* CLOOP_PAGEMEM_H */
