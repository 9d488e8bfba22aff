/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the generic part of a source (see source.h). */
#include <config.h>

#include <inttypes.h>
#include <stdlib.h>

#include "source.h"

int
source_pread (struct source *src, void *buf, size_t len, uint64_t offset,
              struct cloop_err *err)
{
  if (offset > src->size || len > src->size - offset)
    return cloop_err_set (err, EIO,
                          "%s: read of %zu bytes at %" PRIu64
                          " is past the end (%" PRIu64 " bytes)",
                          src->name, len, offset, src->size);
  return src->ops->pread (src, buf, len, offset, err);
}

int
source_pread_many (struct source *src, struct source_range *ranges, size_t n,
                   struct cloop_err *err)
{
  /* Bounds are each source's business here: a range past the end
   * fails with EIO on its own while the others are still served. */
  for (size_t i = 0; i < n; i++) {
    ranges[i].status = 0;
    ranges[i].endpoint = -1;
  }
  if (n == 0)
    return 0;
  return src->ops->pread_many (src, ranges, n, err);
}

int
source_get_objects (struct source *src, struct source_object *objs,
                    size_t n, struct cloop_err *err)
{
  for (size_t i = 0; i < n; i++) {
    objs[i].status = 0;
    objs[i].received = 0;
    objs[i].endpoint = -1;
  }
  if (n == 0)
    return 0;
  if (src->ops->get_objects == NULL) {
    for (size_t i = 0; i < n; i++)
      objs[i].status = ENOTSUP;
    return cloop_err_set (err, ENOTSUP, "%s: a %s source cannot fetch "
                          "objects", src->name, src->ops->name);
  }
  return src->ops->get_objects (src, objs, n, err);
}

struct source *
source_base (struct source *src)
{
  while (src->ops->parent && src->ops->parent (src))
    src = src->ops->parent (src);
  return src;
}

/* The questions below are about where the bytes come from in the end:
 * a window (a file inside an ISO image) answers for its parent. */

bool
source_available (struct source *src)
{
  src = source_base (src);
  return src->ops->available == NULL || src->ops->available (src);
}

int
source_endpoint_stats (struct source *src, size_t i, const char **name,
                       struct http_stats *stats)
{
  src = source_base (src);
  if (src->ops->endpoint_stats == NULL)
    return -1;
  return src->ops->endpoint_stats (src, i, name, stats);
}

bool
source_changed (struct source *src)
{
  src = source_base (src);
  return src->ops->changed != NULL && src->ops->changed (src);
}

void
source_opened (struct source *src)
{
  src = source_base (src);
  if (src->ops->opened)
    src->ops->opened (src);
}

void
source_objects_verified (struct source *src)
{
  src = source_base (src);
  if (src->ops->objects_verified)
    src->ops->objects_verified (src);
}

int
source_metadata (struct source *src, const struct source_range *ranges,
                 size_t n, struct cloop_err *err)
{
  src = source_base (src);
  return src->ops->metadata ? src->ops->metadata (src, ranges, n, err) : 0;
}

void
source_report_faulty (struct source *src, int endpoint)
{
  src = source_base (src);
  if (endpoint >= 0 && src->ops->report_faulty)
    src->ops->report_faulty (src, endpoint);
}

bool
source_is_offline (struct source *src)
{
  return source_base (src)->ops->offline;
}

void
source_close (struct source *src)
{
  if (src)
    src->ops->close (src);
}
