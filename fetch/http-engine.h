/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the HTTP engine — one per process, shared by every HTTP
 * source (all exports, all URLs): one curl multi handle, so connections
 * are pooled and shared, and one set of queues by priority (source.h:
 * demand reads first, then read-ahead, then background work).  Until
 * http_engine_start, a caller drives the engine in its own thread (no
 * threads exist before nbdkit forks); after it, a worker thread does,
 * and callers queue their transfers and sleep until every one is done
 * or their deadline passes.  Slow demand transfers on a source with
 * mirrors are hedged (http-engine.c).
 */
#ifndef CLOOP_HTTP_ENGINE_H
#define CLOOP_HTTP_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "http-xfer.h"

struct http_engine;

/* A new engine that keeps at most max_connections transfers in
 * flight over all sources (each source also keeps to its own
 * connections=).  No thread yet.  NULL with err set (ENOMEM). */
struct http_engine *http_engine_new (unsigned max_connections,
                                     struct cloop_err *err);

/* Start the engine's worker thread (from the plugin's .after_fork).
 * 0, or -1 with err set. */
int http_engine_start (struct http_engine *e, struct cloop_err *err);

/* Stop the worker: every transfer queued or in flight fails with EIO
 * at once, and so does every transfer submitted later (so that threads
 * waiting on transfers return without waiting for their timeouts).
 * The engine stays valid until http_engine_free.  Idempotent. */
void http_engine_stop (struct http_engine *e);

/* http_engine_stop, then free the engine.  Every source using it must
 * be closed first.  NULL allowed. */
void http_engine_free (struct http_engine *e);

/* For fetch/http.c: */

/* Queue x (x->done and x->opaque set by the caller), without waiting:
 * done is called once it has finished, from the engine's worker.  Only
 * once the engine has started (http_engine_started). */
void http_engine_submit (struct http_engine *e, struct http_xfer *x);
bool http_engine_started (struct http_engine *e);

/* Run n transfers (xs[i].done and .opaque are set by this function)
 * and return when all have finished: queued to the worker if the
 * engine has started, else driven in this thread.  Each x->result is
 * set. */
void http_engine_run (struct http_engine *e, struct http_xfer *xs, size_t n);

#endif /* CLOOP_HTTP_ENGINE_H */
