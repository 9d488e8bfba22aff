/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a source with no bytes behind it (see source.h). */
#include <config.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

static int
offline_pread (struct source *src, void *buf, size_t len, uint64_t offset,
               struct cloop_err *err)
{
  return cloop_err_set (err, EIO, "%s is offline and the %zu bytes at %"
                        PRIu64 " are not cached", src->name, len, offset);
}

static int
offline_pread_many (struct source *src, struct source_range *ranges,
                    size_t n, struct cloop_err *err)
{
  for (size_t i = 0; i < n; i++)
    ranges[i].status = EIO;
  return offline_pread (src, NULL, ranges[0].length, ranges[0].offset, err);
}

/* Offline is never worth a fetch: it has no origin at all. */
static bool
offline_available (struct source *src)
{
  return false;
}

static void
offline_close (struct source *src)
{
  free (src->name);
  free (src);
}

static const struct source_ops offline_ops = {
  .name = "offline",
  .pread = offline_pread,
  .pread_many = offline_pread_many,
  .available = offline_available,
  .offline = true,
  .close = offline_close,
};

struct source *
source_open_offline (const char *name, uint64_t size, struct cloop_err *err)
{
  struct source *src = calloc (1, sizeof *src);

  if (src == NULL || (src->name = strdup (name)) == NULL) {
    free (src);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  src->ops = &offline_ops;
  src->size = size;
  return src;
}
