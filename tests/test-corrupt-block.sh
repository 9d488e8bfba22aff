#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a corrupt block fails its read with EIO and is logged by
# number; the blocks around it still read correctly, and a second read
# of the corrupt block fails again (nothing stale or garbage cached).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires nbdkit --version
requires nbdsh --version
requires test -x "$MKCLOOP"
requires test -f "$PLUGIN"

bs=4096
bad=7                            # the corrupt block, in the middle
make_sample "$tmpdir/in" $((16 * bs))

cat > "$tmpdir/check.py" <<'PY'
import errno, os
bs = int(os.environ["BS"])
bad = int(os.environ["BAD"])
want = open(os.environ["EXPECTED"], "rb").read()
assert h.get_size() == len(want)

def must_fail(count, offset):
    try:
        h.pread(count, offset)
    except nbd.Error as e:
        # libnbd gives errno as a name ("EIO") and errnum as a number.
        assert e.errnum == errno.EIO, "errno %r, expected EIO" % e.errno
    else:
        raise AssertionError("read %d@%d of a corrupt block succeeded"
                             % (count, offset))

# Neighbours first, so any cache holds good data around the bad block.
assert h.pread(bs, (bad - 1) * bs) == want[(bad - 1) * bs:bad * bs]
must_fail(bs, bad * bs)
assert h.pread(bs, (bad + 1) * bs) == want[(bad + 1) * bs:(bad + 2) * bs]
# Partial and spanning reads that touch the bad block also fail.
must_fail(100, bad * bs + 1000)
must_fail(2 * bs, (bad - 1) * bs + 512)
# Again: the failure was not turned into cached bytes.
must_fail(bs, bad * bs)
# Everything else still reads back.
assert h.pread(bad * bs, 0) == want[:bad * bs]
assert h.pread(len(want) - (bad + 1) * bs, (bad + 1) * bs) == \
    want[(bad + 1) * bs:]
PY

# check_corrupt MKCLOOP-ARGS...: build an image with block $bad corrupt
# and run the checks against it.
check_corrupt ()
{
    rc=0
    "$MKCLOOP" "$@" -B $bs --corrupt-block $bad "$tmpdir/in" "$tmpdir/img" ||
        rc=$?
    if [ "$rc" -eq 2 ]; then
        echo "$0: codec not built, skipping: $*"
        return 0
    fi
    [ "$rc" -eq 0 ] || fail "mkcloop $* failed"
    BS=$bs BAD=$bad EXPECTED="$tmpdir/in" \
      nbdkit_cloop -U - \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/check.py').read())\"" \
        "$PLUGIN" file="$tmpdir/img" 2> "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$*: corrupt-block checks failed"
    }
    if ! grep -Eq "block $bad([^0-9]|\$)" "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$*: nbdkit did not log the number of the corrupt block"
    fi
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$*: sanitizer report"
    fi
    echo "ok: $*: $(grep -E "block $bad([^0-9]|\$)" "$tmpdir/err" | head -n1)"
}

# zlib (Adler-32) and xz (CRC32) detect any flipped byte; lz4 and lzo
# carry no checksum, so a flipped literal could decode silently.
check_corrupt -d v2
check_corrupt -d v4 -c xz
check_corrupt -d v4-footer -c zlib,xz
