/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: HTTP(S) sources with pinned object identity and strict
 * range semantics, and the engine that runs their transfers.
 *
 * One engine serves every HTTP source of a process (all exports, all
 * URLs): one curl multi handle, so connections are pooled and shared,
 * and one set of queues by priority (source.h: demand reads first,
 * then read-ahead, then background work).  Until http_engine_start,
 * a caller drives the engine in its own thread (no threads exist
 * before nbdkit forks); after it, a worker thread does, and callers
 * queue their transfers and sleep until every one is done or their
 * deadline passes.
 *
 * source_open_http probes the URL with one ranged GET and pins the
 * object's size, ETag and Last-Modified.
 *
 * Every reply is checked: 206, exact Content-Range, pinned total,
 * exact body length, unchanged ETag.  Anything else is a fault, never
 * data; faults are retried with back-off, then the range fails with
 * EIO.  A server that cannot be reached at all (refused, unresolved,
 * connect timeout) is marked down (fetch/endpoint.h): transfers then
 * fail at once, without retries, and a single probe is let through
 * after a capped exponential back-off; success marks it up.  fetch/
 * never calls nbdkit: debug output goes to cfg->debug.
 */
#ifndef CLOOP_HTTP_H
#define CLOOP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "http-config.h"
#include "http-engine.h"
#include "source.h"

/* Process-wide libcurl setup: call once from the plugin's .load,
 * before any thread exists.  0, or -1 if libcurl cannot start. */
int http_global_init (void);

/* Undo http_global_init (from .unload, after every source is closed). */
void http_global_cleanup (void);

/* Probe cfg->url and return a source whose size and identity are
 * pinned, or NULL with err set (EIO for network faults, EINVAL for
 * bad configuration).  cfg is copied. */
struct source *source_open_http (const struct http_config *cfg,
                                 struct cloop_err *err);

/* Like source_open_http, but pinned to an identity known from an
 * earlier run (id->url is ignored; cfg->url is used): no request is
 * made now.  Every later request still carries If-Range, so if the
 * object has changed since, reads fail with EIO (fault "changed")
 * rather than mix versions.  NULL with err set on ENOMEM/EINVAL. */
struct source *source_open_http_pinned (const struct http_config *cfg,
                                        const struct http_identity *id,
                                        struct cloop_err *err);

/* The pinned identity; valid until source_close. */
const struct http_identity *source_http_identity (struct source *src);

/* Copy the counters of src's one origin (thread-safe); the same as
 * source_endpoint_stats (src, 0, ...). */
void source_http_get_stats (struct source *src, struct http_stats *stats);

#endif /* CLOOP_HTTP_H */
