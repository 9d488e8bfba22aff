#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: every cloop dialect written by mkcloop reads back, byte
# for byte, as the zero-padded input (dplasa V3 records the original
# size, so its export is exactly the input, unpadded), and the export
# has the right size.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires_plugin_tools
requires nbdinfo --version

cases=0
skipped=0

# check DIALECT BLOCKSIZE INPUT [mkcloop args...]: build the image,
# read it all back and check its size.
check ()
{
    dialect=$1 bs=$2 input=$3
    shift 3
    img="$tmpdir/img"
    rc=0
    "$MKCLOOP" -d "$dialect" -B "$bs" "$@" "$input" "$img" || rc=$?
    if [ "$rc" -eq 2 ]; then
        echo "$0: codec not built, skipping: $dialect $*"
        skipped=$((skipped + 1))
        return 0
    fi
    [ "$rc" -eq 0 ] || fail "mkcloop -d $dialect -B $bs $* failed ($rc)"

    if [ "$dialect" = dplasa-v3 ]; then
        expected=$input
    else
        expected="$tmpdir/expected"
        pad_to_block "$input" "$bs" "$expected"
    fi
    want=$(stat -c %s "$expected")

    size=$(nbdkit_cloop -U - --run 'nbdinfo --size "$uri"' \
                        "$PLUGIN" file="$img") ||
        fail "nbdinfo on $dialect -B $bs $* failed"
    [ "$size" -eq "$want" ] ||
        fail "$dialect -B $bs $*: export size $size, expected $want"

    export_equals "$img" "$expected" ||
        fail "$dialect -B $bs $*: content differs"
    echo "ok: $dialect -B $bs $* ($(stat -c %s "$input") bytes," \
         "export $size)"
    cases=$((cases + 1))
}

# Inputs: not a block multiple for any block size used below; an exact
# multiple of 64 KiB (and so of every smaller size); one short block.
make_sample "$tmpdir/odd" 300001
make_sample "$tmpdir/even" 262144
make_sample "$tmpdir/tiny" 3000

# Every dialect, odd and even lengths.
for d in v2 v4 v4-footer 0.68 1.0 slitaz-v3 dplasa-v3 \
         fbsd-v2 fbsd-l3 fbsd-z4 fbsd-dedup; do
    check "$d" 4096 "$tmpdir/odd"
    check "$d" 65536 "$tmpdir/even"
done

# Block sizes: 512 and 64 KiB with inputs that are not multiples, and
# 1 MiB (a single, mostly padding block).
check v2 512 "$tmpdir/odd"
check v2 65536 "$tmpdir/odd"
check v4 512 "$tmpdir/odd" -c lz4
check v2 1048576 "$tmpdir/odd"

# One-block images.
check v2 4096 "$tmpdir/tiny"
check v4-footer 4096 "$tmpdir/tiny" -c xz
check dplasa-v3 4096 "$tmpdir/tiny"
check slitaz-v3 65536 "$tmpdir/tiny"
check 0.68 512 "$tmpdir/tiny"

# Every V4 codec alone, and mixed per block in both layouts.
for c in zlib none xz lz4 lzo; do
    check v4 4096 "$tmpdir/odd" -c "$c"
    check v4-footer 4096 "$tmpdir/odd" -c "$c"
done
check v4 4096 "$tmpdir/odd" -c zlib,none,xz,lz4,lzo
check v4-footer 4096 "$tmpdir/odd" -c lzo,lz4,xz,none,zlib
check v4 65536 "$tmpdir/odd" -c xz,lz4
# Data not starting at offset 0 in the footer layouts.
check v4-footer 4096 "$tmpdir/odd" -c zlib,lz4 --data-offset 4096
check dplasa-v3 4096 "$tmpdir/odd" -c zlib --data-offset 136

# dplasa with mixed codecs; -c none and random data (compression does
# not shrink it) give raw blocks (flags 0).  Like dplasa's own writer,
# mkcloop zero-pads the last block to the full block size before
# compressing or storing it; the export is then cut to original_size.
check dplasa-v3 4096 "$tmpdir/odd" -c zlib,none,xz,lz4,lzo
check dplasa-v3 4096 "$tmpdir/odd" -c none
check dplasa-v3 65536 "$tmpdir/even" -c lz4,xz
/usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(7).randbytes(50000))' > "$tmpdir/random"
check dplasa-v3 4096 "$tmpdir/random" -c zlib,lzo

# A last block the writer did not pad (it decodes to only the input's
# last 1025 bytes): read back zero-filled, in every dialect that can
# hold one and through every V4 codec (the 5.3 driver takes such a block
# as it comes; formats.md 1.4).  Only the last block may be short: the
# others must decode to the block size (test-decode, test-index).
for d in v2 0.68 1.0 slitaz-v3 fbsd-v2 fbsd-l3 fbsd-z4; do
    check "$d" 4096 "$tmpdir/odd" --short-last
done
for c in zlib none xz lz4 lzo; do
    check v4 4096 "$tmpdir/odd" -c "$c" --short-last
done
check v4-footer 4096 "$tmpdir/odd" -c lzo,lz4,xz,none,zlib --short-last
check v2 4096 "$tmpdir/tiny" --short-last
# The option does what it says: stored raw, the short image is smaller
# by exactly the padding the other one carries.
"$MKCLOOP" -d v4 -B 4096 -c none "$tmpdir/odd" "$tmpdir/padded.img"
"$MKCLOOP" -d v4 -B 4096 -c none --short-last "$tmpdir/odd" "$tmpdir/short.img"
[ $(( $(stat -c %s "$tmpdir/padded.img") - $(stat -c %s "$tmpdir/short.img") )) \
    -eq $(( 4096 - 300001 % 4096 )) ] || fail "mkcloop --short-last did not shorten the last block"

# FreeBSD dedup: an input whose blocks repeat must give a smaller
# image than the same input without dedup, and still read back.
cat "$tmpdir/even" "$tmpdir/even" > "$tmpdir/twice"
"$MKCLOOP" -d fbsd-v2 -B 4096 "$tmpdir/twice" "$tmpdir/plain.img"
"$MKCLOOP" -d fbsd-dedup -B 4096 "$tmpdir/twice" "$tmpdir/dedup.img"
[ "$(stat -c %s "$tmpdir/dedup.img")" -lt \
  $(( $(stat -c %s "$tmpdir/plain.img") * 3 / 4 )) ] ||
    fail "mkcloop fbsd-dedup did not deduplicate"
check fbsd-dedup 4096 "$tmpdir/twice"
check fbsd-dedup 4096 "$tmpdir/twice" -c xz
check fbsd-dedup 4096 "$tmpdir/twice" -c zstd

echo "$0: $cases cases passed, $skipped skipped (codec not built)"
[ "$cases" -gt 0 ] || fail "no case ran"
