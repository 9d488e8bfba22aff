#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Boot path 2: nbd-client inside the miniroot.  nbdkit listens on
# 127.0.0.1:PORT only; the guest, on qemu user networking, reaches it as
# 10.0.2.2:PORT (kernel argument nbdroot=10.0.2.2:PORT), attaches
# /dev/nbd0 and boots from it.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
. "$srcdir/../scripts/boot/common.sh"
boot_test_begin

port=$(_ws_free_port)
boot_nbdkit_start "$tmpdir/nbdkit.log" -p "$port" -i 127.0.0.1 \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache"

"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console.log" --net \
    --append "nbdroot=10.0.2.2:$port" ||
    fail "path 2 (nbd-client in the miniroot) did not boot"
boot_assert_console "$tmpdir/console.log"
grep -q 'Connected /dev/nbd0' "$tmpdir/console.clean" ||
    fail "nbd-client did not report the connection"
grep -q '^BOOT-ROOT overlay ' "$tmpdir/console.clean" ||
    fail "root is not the tmpfs overlay"

boot_wait_stats "$tmpdir/nbdkit.log" 1
set -- $(boot_http_stats "$tmpdir/nbdkit.log")
echo "cold boot over HTTP: $1 requests, $2 bytes fetched"
[ "$1" -gt 0 ] || fail "nbdkit made no HTTP request"
