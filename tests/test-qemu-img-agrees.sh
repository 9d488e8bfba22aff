#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: qemu's own cloop driver (qemu-img convert -f cloop)
# and our export agree byte for byte on real create_compressed_fs
# images.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires nbdkit --version
requires nbdcopy --version
requires qemu-img --version
requires test -x /usr/bin/create_compressed_fs
requires test -f "$PLUGIN"

make_sample "$tmpdir/in" 700001

for bs in 65536 4096; do
    create_compressed_fs -q -B $bs -L 9 "$tmpdir/in" "$tmpdir/img" \
        > "$tmpdir/ccfs.log" 2>&1 || {
        cat "$tmpdir/ccfs.log"
        fail "create_compressed_fs -B $bs failed"
    }
    rm -f "$tmpdir/qemu.raw"
    qemu-img convert -f cloop -O raw "$tmpdir/img" "$tmpdir/qemu.raw" ||
        fail "qemu-img convert -B $bs image failed"
    # qemu's export is the padded source too (a check on the vector).
    pad_to_block "$tmpdir/in" $bs "$tmpdir/expected"
    cmp "$tmpdir/qemu.raw" "$tmpdir/expected" ||
        fail "qemu-img disagrees with the source"
    export_equals "$tmpdir/img" "$tmpdir/qemu.raw"
    echo "ok: -B $bs: qemu-img and nbdkit agree on $(stat -c %s "$tmpdir/qemu.raw") bytes"
done
