#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Boot path 1: qemu attaches the export as a read-only virtio disk over
# NBD (Unix socket); nbdkit reads the cloop image from nginx into an
# empty persistent cache.  The miniroot mounts /dev/vda read-only under
# a tmpfs overlay; the guest's init prints the marker and the checksums
# of files inside the image, which must match the host's.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
. "$srcdir/../scripts/boot/common.sh"
boot_test_begin

sock=$tmpdir/nbd.sock
boot_nbdkit_start "$tmpdir/nbdkit.log" -U "$sock" \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache"

"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console.log" \
    --drive "file=nbd+unix:///?socket=$sock,format=raw,if=virtio,readonly=on" \
    --append "root=/dev/vda" || fail "path 1 (qemu -drive nbd) did not boot"
boot_assert_console "$tmpdir/console.log"
grep -q '^BOOT-ROOT overlay ' "$tmpdir/console.clean" ||
    fail "root is not the tmpfs overlay"
grep -q '^BOOT-WRITE-OK' "$tmpdir/console.clean" ||
    fail "the overlay root was not writable"

boot_wait_stats "$tmpdir/nbdkit.log" 1
set -- $(boot_http_stats "$tmpdir/nbdkit.log")
echo "cold boot over HTTP: $1 requests, $2 bytes fetched" \
    "(image $(stat -c %s "$BOOT_IMAGE") bytes)"
[ "$1" -gt 0 ] || fail "nbdkit made no HTTP request"
[ "$2" -lt "$(stat -c %s "$BOOT_IMAGE")" ] ||
    echo "note: the boot fetched the whole image"
