#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the soak (scripts/soak) for 60 seconds (SOAK_SECONDS) on a 16 MB
# image: 16 connections of random reads over 3 nbdkit processes sharing
# one cache-dir (memory and disk caches smaller than the image) behind
# a fault server that faults a few percent of the requests.  It asserts
# that no byte read differs from the image, that every nbdkit is still
# alive at the end with no sanitizer report, and that a fresh nbdkit on
# the same cache-dir then reads the whole image exactly.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

SOAK_IMAGE_MB=16 "$srcdir/../scripts/soak" --seconds "${SOAK_SECONDS:-60}" ||
    fail "soak failed"
echo "$0: ok"
