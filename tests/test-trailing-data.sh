#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a block's compressed bytes must be its stream and
# nothing else.  Through the real plugin:
#  - a Knopper V2.0 index whose entry 3 repeats entry 2 (block 2 gets
#    zero length, block 3 spans both streams): blocks 2 and 3 fail with
#    EIO, each logged by number; neither reads as zeroes nor as the
#    other's data, and nbdcopy of the whole image fails.  In a FreeBSD image the same index means what
#    geom_uzip reads: block 2 all zeroes, block 3 still an error;
#  - bytes after a block's stream fail that block, for every codec and
#    dialect (zero bytes too, except in FreeBSD images);
#  - FreeBSD (mkuzip) images: zero padding up to the next 512-byte
#    boundary after a stream reads byte-exact; non-zero padding, or
#    zero padding past that boundary, fails the block.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires_plugin_tools
requires nbdsh --version

bs=4096
nblocks=8
# Every block different, compressible and non-zero (a zero block would
# be stored with length 0 in FreeBSD images).
/usr/bin/python3 - "$tmpdir/in" $bs $nblocks <<'PY'
import random, sys
out, bs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
buf = bytearray()
for k in range(n):
    blk = bytearray(b"block %d of the trailing-data test " % k) * (bs // 32)
    blk[:512] = rng.randbytes(512)
    buf += blk[:bs]
open(out, "wb").write(bytes(buf))
PY

cat > "$tmpdir/check.py" <<'PY'
import errno, os
bs = int(os.environ["BS"])
bad = [int(b) for b in os.environ["BAD"].split()]
zero = [int(b) for b in os.environ.get("ZERO", "").split()]
want = open(os.environ["EXPECTED"], "rb").read()
n = len(want) // bs
assert h.get_size() == len(want)

def must_fail(count, offset):
    try:
        got = h.pread(count, offset)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "errno %r, expected EIO" % e.errno
    else:
        blk = [want[k * bs:(k + 1) * bs] for k in range(n)]
        what = ["block %d's data" % k for k in range(n)
                if got[:bs] == blk[k]]
        if got == bytes(count):
            what.append("zeroes")
        raise AssertionError("read %d@%d succeeded (%s)" %
                             (count, offset, ", ".join(what) or "?"))

for k in range(n):
    if k in bad:
        must_fail(bs, k * bs)
        must_fail(100, k * bs + 1000)
    elif k in zero:
        assert h.pread(bs, k * bs) == bytes(bs), "block %d not zeroes" % k
    else:
        assert h.pread(bs, k * bs) == want[k * bs:(k + 1) * bs], \
            "block %d differs" % k
for k in bad:                   # again: nothing wrong was cached
    must_fail(bs, k * bs)
    if k > 0:
        must_fail(2 * bs, (k - 1) * bs)
PY

# check NAME "BAD" "ZERO" MKCLOOP-ARGS...: build an image, then read
# every block through nbdkit: blocks in BAD must fail with EIO (and be
# named in the log), blocks in ZERO must read as zeroes, the others as
# the input.
check ()
{
    name=$1 bad=$2 zero=$3
    shift 3
    rc=0
    "$MKCLOOP" -B $bs "$@" "$tmpdir/in" "$tmpdir/img" || rc=$?
    if [ "$rc" -eq 2 ]; then
        # Every codec library is a build dependency (scripts/bootstrap).
        fail "$name: mkcloop lacks a codec: $*"
    fi
    [ "$rc" -eq 0 ] || fail "$name: mkcloop $* failed"
    BS=$bs BAD=$bad ZERO=$zero EXPECTED="$tmpdir/in" \
      nbdkit_cloop -U - \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/check.py').read())\"" \
        "$PLUGIN" file="$tmpdir/img" 2> "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$name: checks failed"
    }
    for b in $bad; do
        if ! grep -Eq "block $b([^0-9]|\$)" "$tmpdir/err"; then
            cat "$tmpdir/err"
            fail "$name: nbdkit did not log the number of block $b"
        fi
    done
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$name: sanitizer report"
    fi
    if [ -n "$bad" ]; then
        b=${bad%% *}
        echo "ok: $name: $(grep -E "block $b([^0-9]|\$)" "$tmpdir/err" |
                           head -n1)"
    else
        echo "ok: $name: reads byte-exact"
    fi
}

# check_refused NAME MKCLOOP-ARGS...: an image nbdkit must refuse to
# open, naming block 3 (a stored raw block cannot have anything after
# it: its length must be the block size).
check_refused ()
{
    name=$1
    shift
    "$MKCLOOP" -B $bs "$@" "$tmpdir/in" "$tmpdir/img" ||
        fail "$name: mkcloop $* failed"
    rc=0
    nbdkit_cloop -U - --run true "$PLUGIN" file="$tmpdir/img" \
                 2> "$tmpdir/err" || rc=$?
    if [ "$rc" -eq 0 ] || ! grep -Eq "block 3([^0-9]|\$)" "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$name: not refused with a message naming block 3"
    fi
    echo "ok: $name: refused: $(grep -E "block 3([^0-9]|\$)" "$tmpdir/err" |
                                head -n1)"
}

junk="--append 3:7:165"         # 7 bytes of 0xA5 after block 3's stream

# The index fault of issue 10: entry 3 repeats entry 2.
check "v2 dup entry" "2 3" "" -d v2 --dup-entry 2
# A whole-image copy (which skips what the plugin reports as holes)
# fails too, rather than writing zeroes and block 2 as block 3.
rc=0
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/copy\"" \
             "$PLUGIN" file="$tmpdir/img" 2> "$tmpdir/err" || rc=$?
if [ "$rc" -eq 0 ] || ! grep -Eq "block 2([^0-9]|\$)" "$tmpdir/err"; then
    cat "$tmpdir/err"
    fail "v2 dup entry: nbdcopy did not fail naming block 2"
fi
echo "ok: v2 dup entry: nbdcopy fails (exit $rc)"
check "0.68 dup entry" "2 3" "" -d 0.68 --dup-entry 2
check "1.0 dup entry" "2 3" "" -d 1.0 --dup-entry 2
check "v4 dup entry" "2 3" "" -d v4 -c lz4 --dup-entry 2
check "v4-footer dup entry" "2 3" "" -d v4-footer -c xz --dup-entry 2
check "fbsd-v2 dup entry" "3" "2" -d fbsd-v2 --dup-entry 2
check "fbsd-z4 dup entry" "3" "2" -d fbsd-z4 --dup-entry 2

# Junk after a stream, every dialect and codec.
check "v2 junk" "3" "" -d v2 $junk
for c in zlib xz lz4 lzo; do
    check "v4 $c junk" "3" "" -d v4 -c $c $junk
    check "dplasa-v3 $c junk" "3" "" -d dplasa-v3 -c $c $junk
done
check "v4-footer junk" "3" "" -d v4-footer -c zlib,xz $junk
check "0.68 junk" "3" "" -d 0.68 $junk
check "1.0 junk" "3" "" -d 1.0 $junk
check "slitaz-v3 junk" "3" "" -d slitaz-v3 $junk
check "fbsd-v2 junk" "3" "" -d fbsd-v2 $junk
check "fbsd-l3 junk" "3" "" -d fbsd-l3 $junk
check "fbsd-z4 junk" "3" "" -d fbsd-z4 $junk
check "fbsd-dedup junk" "3" "" -d fbsd-dedup -c zstd $junk
check_refused "v4 none junk" -d v4 -c none $junk

# Zero bytes are not padding where writers do not pad.
check "v2 zero bytes" "3" "" -d v2 --append 3:sector
check "v4 xz zero bytes" "3" "" -d v4 -c xz --append 3:sector
check "slitaz-v3 zero bytes" "3" "" -d slitaz-v3 --append 3:sector
check "dplasa-v3 zero bytes" "3" "" -d dplasa-v3 --append 3:sector

# FreeBSD: zero padding to the next sector boundary reads byte-exact
# (after a middle block and after the last one) ...
for d in fbsd-v2 fbsd-l3 fbsd-z4; do
    check "$d zero padding" "" "" -d $d --append 3:sector
    check "$d zero padding, last block" "" "" -d $d --append 7:sector
done
check "fbsd-dedup xz zero padding" "" "" -d fbsd-dedup -c xz \
      --append 3:sector
# ... but not non-zero padding, nor zeroes past that boundary.
for d in fbsd-v2 fbsd-l3 fbsd-z4; do
    check "$d non-zero padding" "3" "" -d $d --append 3:sector:1
    check "$d zeroes past the sector" "3" "" -d $d --append 3:513
done
