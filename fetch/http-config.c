/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: the defaults of an HTTP source's settings (see
 * http-config.h). */
#include <config.h>

#include <string.h>

#include "http-config.h"

void
http_config_defaults (struct http_config *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  /* 8 connections: enough requests in flight to cover a 20 ms RTT at
   * >= 30 MiB/s with 64 KiB blocks once coalescing merges neighbours,
   * the same number qemu's curl driver uses, and polite to a mirror. */
  cfg->connections = 8;
  cfg->timeout = 30;
  cfg->retries = 4;
  cfg->backoff_base_ms = 100;
  cfg->backoff_max_ms = 2000;
  /* A boot of 20-30 s from a warm cache with the server gone knocks
   * about five times (at 0, 1, 3, 7, 15 s), and notices a server that
   * came back within half a minute. */
  cfg->down_backoff_ms = 1000;
  cfg->down_backoff_max_ms = 30000;
  cfg->low_speed_limit = 1024;
  cfg->low_speed_time = 10;
  cfg->sslverify = true;
  cfg->max_redirects = 5;
  cfg->max_coalesce = 1024 * 1024;
}
