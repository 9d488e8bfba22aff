#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Boot path 3: a warm second boot with the web server stopped.  The
# first boot fills the persistent cache; the second nbdkit (revalidate=0,
# so it does try the server) cannot reach it, logs that it serves the
# cached copy, and the guest boots from the cache alone.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
. "$srcdir/../scripts/boot/common.sh"
boot_test_begin

sock=$tmpdir/nbd.sock
drive="file=nbd+unix:///?socket=$sock,format=raw,if=virtio,readonly=on"

# Cold boot: fills the cache.
boot_nbdkit_start "$tmpdir/nbdkit1.log" -U "$sock" \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache"
"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console1.log" --drive "$drive" \
    --append "root=/dev/vda" || fail "cold boot failed"
boot_assert_console "$tmpdir/console1.log"
boot_wait_stats "$tmpdir/nbdkit1.log" 1
boot_nbdkit_stop "$BOOT_NBDKIT_PID"
set -- $(boot_http_stats "$tmpdir/nbdkit1.log")
echo "cold boot: $1 requests, $2 bytes fetched"

# The server goes away.
_ws_stop "$NGINX_PID"
for _ in 1 2 3 4 5 6 7 8 9 10; do
    _ws_alive "$NGINX_PID" || break
    sleep 0.2
done
! _ws_alive "$NGINX_PID" || fail "nginx is still running"
rm -f "$sock"
boot_nbdkit_start "$tmpdir/nbdkit2.log" -U "$sock" \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache" revalidate=0
grep -q 'serving the cached copy' "$tmpdir/nbdkit2.log" || {
    cat "$tmpdir/nbdkit2.log" >&2
    fail "nbdkit did not log that it serves the cache without the server"
}
grep 'serving the cached copy' "$tmpdir/nbdkit2.log" | head -n 1

"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console2.log" --drive "$drive" \
    --append "root=/dev/vda" || {
    cat "$tmpdir/nbdkit2.log" >&2
    fail "offline warm boot failed"
}
boot_assert_console "$tmpdir/console2.log"
boot_wait_stats "$tmpdir/nbdkit2.log" 1
set -- $(boot_http_stats "$tmpdir/nbdkit2.log")
echo "offline boot: $1 requests, $2 bytes fetched"
[ "$2" -eq 0 ] || fail "the offline boot fetched $2 bytes"
