#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Boot path 4: the user's changes kept in a qcow2 overlay whose backing
# file is the NBD export.  The miniroot mounts the disk read-write
# (kernel argument rootrw); the first boot writes a file, a second boot
# under a new nbdkit finds it; the cloop image and the export's bytes
# are unchanged.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
# The writable path needs the ext4 root (ISO9660 is read-only), whatever
# BOOT_ROOTFS_TYPE the other boot tests use.
BOOT_ROOTFS_TYPE=ext4
. "$srcdir/../scripts/boot/common.sh"
requires nbdcopy --version
boot_test_begin

image_sum=$(sha256sum < "$BOOT_IMAGE")
sock=$tmpdir/nbd.sock
overlay=$tmpdir/overlay.qcow2
token=kept-$$-$(date +%s)

boot_nbdkit_start "$tmpdir/nbdkit1.log" -U "$sock" \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache"
qemu-img create -q -f qcow2 -F raw -b "nbd+unix:///?socket=$sock" "$overlay"
"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console1.log" \
    --drive "file=$overlay,format=qcow2,if=virtio" \
    --append "root=/dev/vda rootrw persist_write=$token" ||
    fail "first boot on the overlay failed"
boot_assert_console "$tmpdir/console1.log"
grep -q '^BOOT-ROOT /dev/vda ext4 rw' "$tmpdir/console.clean" ||
    fail "root is not /dev/vda read-write"
grep -qx "BOOT-PERSIST-WROTE $token" "$tmpdir/console.clean" ||
    fail "the guest did not write its file"
boot_nbdkit_stop "$BOOT_NBDKIT_PID"

# Second boot, new nbdkit on the same socket path.
rm -f "$sock"
boot_nbdkit_start "$tmpdir/nbdkit2.log" -U "$sock" \
    "$PLUGIN" url="$BOOT_URL" cache-dir="$tmpdir/cache"
"$BOOT_SCRIPTS/run-boot" --log "$tmpdir/console2.log" \
    --drive "file=$overlay,format=qcow2,if=virtio" \
    --append "root=/dev/vda rootrw" || fail "second boot on the overlay failed"
boot_assert_console "$tmpdir/console2.log"
grep -qx "BOOT-PERSIST-FOUND $token" "$tmpdir/console.clean" ||
    fail "the file written in the first boot is gone"
boot_nbdkit_stop "$BOOT_NBDKIT_PID"
echo "overlay: $(qemu-img info "$overlay" | grep -E '^disk size')"

# The base is untouched: the cloop file and the bytes it exports.
[ "$(sha256sum < "$BOOT_IMAGE")" = "$image_sum" ] ||
    fail "the cloop image changed"
nbdkit_cloop -U - --run 'nbdcopy "$uri" -' "$PLUGIN" file="$BOOT_IMAGE" |
    sha256sum > "$tmpdir/export.sum"
[ "$(cut -d' ' -f1 "$tmpdir/export.sum")" = "$BOOT_RAW_SHA256" ] ||
    fail "the export's bytes changed"
echo "base image and export unchanged (sha256 $BOOT_RAW_SHA256)"
