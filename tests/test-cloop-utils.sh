#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: images made by the real create_compressed_fs (Debian
# cloop-utils) at several block sizes and levels read back as the
# zero-padded source, in whole and in unaligned pieces.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires nbdkit --version
requires nbdcopy --version
requires nbdinfo --version
requires nbdsh --version
requires test -x /usr/bin/create_compressed_fs
requires test -f "$PLUGIN"

# check BLOCKSIZE LEVEL INPUT-BYTES
check ()
{
    bs=$1 level=$2 bytes=$3
    make_sample "$tmpdir/in" "$bytes"
    create_compressed_fs -q -B "$bs" -L "$level" "$tmpdir/in" "$tmpdir/img" \
        > "$tmpdir/ccfs.log" 2>&1 || {
        cat "$tmpdir/ccfs.log"
        fail "create_compressed_fs -B $bs -L $level failed"
    }
    # The tool must have honoured -B (it clamps silently).
    hdr_bs=$(od -An -tx1 -j128 -N4 "$tmpdir/img" | tr -d ' \n')
    [ "$((16#$hdr_bs))" -eq "$bs" ] ||
        fail "create_compressed_fs wrote block size $((16#$hdr_bs)), not $bs"

    pad_to_block "$tmpdir/in" "$bs" "$tmpdir/expected"
    want=$(stat -c %s "$tmpdir/expected")
    size=$(nbdkit_cloop -U - --run 'nbdinfo --size "$uri"' \
                        "$PLUGIN" file="$tmpdir/img") ||
        fail "nbdinfo failed on -B $bs -L $level"
    [ "$size" -eq "$want" ] ||
        fail "-B $bs -L $level: export size $size, expected $want"
    export_equals "$tmpdir/img" "$tmpdir/expected"
    echo "ok: -B $bs -L $level, $bytes bytes ($((want / bs)) blocks)"
}

check 512 9 100000             # not a block multiple
check 4096 9 1048576           # exact multiple
check 4096 0 250000            # stored deflate blocks
check 65536 9 40000            # one block, partly padding (the tool
                               # refuses inputs of only a few KiB)
check 65536 9 65536            # one full block
check 65536 0 300001
check 65536 -1 307200          # 7-zip deflate (slow: small input)
check 1048576 9 2621440        # 2.5 blocks

# Unaligned reads spanning block boundaries, on a 4 KiB-block image.
bs=4096
make_sample "$tmpdir/in" 100000
create_compressed_fs -q -B $bs -L 9 "$tmpdir/in" "$tmpdir/img" \
    > "$tmpdir/ccfs.log" 2>&1 || fail "create_compressed_fs failed"
pad_to_block "$tmpdir/in" $bs "$tmpdir/expected"
cat > "$tmpdir/ranges.py" <<PY
want = open("$tmpdir/expected", "rb").read()
assert h.get_size() == len(want) == 102400
for offset, count in [(4000, 200),        # across 0|1
                      (4095, 2),          # one byte each side
                      (1, 4095),          # inside block 0, unaligned
                      (8191, 3 * 4096),   # across four blocks
                      (12289, 50000),     # many blocks
                      (99990, 20),        # data | padding in last block
                      (102399, 1),        # very last byte
                      (0, 102400)]:       # everything at once
    got = h.pread(count, offset)
    assert got == want[offset:offset + count], (offset, count)
PY
nbdkit_cloop -U - \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/ranges.py').read())\"" \
    "$PLUGIN" file="$tmpdir/img" ||
    fail "unaligned reads differ from the source"
echo "ok: unaligned ranges"
