/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: a window of another source (see source.h). */
#include <config.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

struct window {
  struct source src;            /* first: a struct source * is a window * */
  struct source *parent;
  uint64_t offset;
};

static const struct source_ops window_ops;

static int
window_pread (struct source *src, void *buf, size_t len, uint64_t offset,
              struct cloop_err *err)
{
  struct window *w = (struct window *) src;

  /* source_pread checked the bounds against the window. */
  return source_pread (w->parent, buf, len, w->offset + offset, err);
}

/* The ranges go to the parent in one call, shifted, so that its
 * batching (merging, concurrency) sees them all at once. */
static int
window_pread_many (struct source *src, struct source_range *ranges,
                   size_t n, struct cloop_err *err)
{
  struct window *w = (struct window *) src;
  struct source_range stack[32], *shifted = stack;
  size_t *from = NULL, m = 0;
  int r = 0;

  if (n > 32 && (shifted = malloc (n * sizeof *shifted)) == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  if ((from = malloc (n * sizeof *from)) == NULL) {
    if (shifted != stack)
      free (shifted);
    return cloop_err_set (err, ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    if (ranges[i].offset > src->size ||
        ranges[i].length > src->size - ranges[i].offset) {
      ranges[i].status = EIO;
      if (r == 0)
        r = cloop_err_set (err, EIO, "%s: read of %zu bytes at %" PRIu64
                           " is past the end (%" PRIu64 " bytes)", src->name,
                           ranges[i].length, ranges[i].offset, src->size);
      continue;
    }
    shifted[m] = ranges[i];
    shifted[m].offset += w->offset;
    from[m++] = i;
  }
  if (m > 0) {
    struct cloop_err perr = { 0 };
    int pr = source_pread_many (w->parent, shifted, m, &perr);
    for (size_t k = 0; k < m; k++) {
      ranges[from[k]].status = shifted[k].status;
      ranges[from[k]].endpoint = shifted[k].endpoint;
    }
    if (pr == -1 && r == 0) {
      *err = perr;
      r = -1;
    }
  }
  free (from);
  if (shifted != stack)
    free (shifted);
  return r;
}

static void
window_close (struct source *src)
{
  struct window *w = (struct window *) src;

  source_close (w->parent);
  free (src->name);
  free (w);
}

static struct source *
window_parent (struct source *src)
{
  return ((struct window *) src)->parent;
}

static const struct source_ops window_ops = {
  .name = "window",
  .parent = window_parent,
  .pread = window_pread,
  .pread_many = window_pread_many,
  .close = window_close,
};

struct source *
source_open_window (struct source *parent, uint64_t offset, uint64_t length,
                    const char *name, struct cloop_err *err)
{
  struct window *w;

  if (offset > parent->size || length > parent->size - offset) {
    cloop_err_set (err, EINVAL, "%s: window of %" PRIu64 " bytes at %"
                   PRIu64 " is past the end (%" PRIu64 " bytes)",
                   parent->name, length, offset, parent->size);
    source_close (parent);
    return NULL;
  }
  if ((w = calloc (1, sizeof *w)) == NULL ||
      (w->src.name = strdup (name)) == NULL) {
    free (w);
    source_close (parent);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  w->src.ops = &window_ops;
  w->src.size = length;
  w->parent = parent;
  w->offset = offset;
  return &w->src;
}

