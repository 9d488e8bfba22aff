#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: read-ahead past the window into the disk cache only
# (readahead-disk=).  A serial sequential reader with a window of 4
# blocks (readahead=256K, so the window is full at once) and 1 MiB of
# memory cache reads a 16 MiB image back byte-exact:
#  - with readahead-disk=2M, most blocks are read ahead to disk, and no
#    byte of the image is fetched twice (the window's fills wait for a
#    block being read ahead to disk instead of fetching it again);
#  - with readahead-disk=0, nothing is;
#  - when replies are corrupted (a byte flipped in the middle of the
#    body; zlib's Adler-32 catches it), the faulty copies are dropped
#    and counted, and every read still returns the right bytes.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version
requires test -f "$FAULTSERVER"

BS=65536
NBLOCKS=256
make_served_image v2 $((NBLOCKS * BS))
start_faultserver "$www"
size=$(stat -c %s "$www/img")

cat > "$tmpdir/serial.py" <<PY
exp = open("$tmpdir/expected", "rb").read()
for off in range(0, len(exp), $BS):
    assert h.pread($BS, off) == exp[off:off + $BS], "WRONG BYTES at %d" % off
PY

# run NAME [ARGS]: the serial reader against a fresh cache; prints
# "STAGED FAULTY FETCHED-BYTES FAULTY-COPIES".
run ()
{
    name=$1; shift
    rm -rf "$tmpdir/cache"
    : > "$FAULT_LOG"
    nbdkit_cloop -U - -v -D cloop.stats=1 \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/serial.py').read())\"" \
        "$PLUGIN" url="$FAULT_URL/img" cache-dir="$tmpdir/cache" \
        readahead=256K memory-cache-size=1M "$@" \
        > "$tmpdir/$name.out" 2> "$tmpdir/$name.err" ||
        { tail -n 30 "$tmpdir/$name.err"; cat "$tmpdir/$name.out"; fail "$name: the reads failed"; }
    staged=$(sed -n 's/.*prefetch: .*; \([0-9]*\) read ahead to disk (\([0-9]*\) faulty).*/\1 \2/p' \
        "$tmpdir/$name.err" | tail -n 1)
    [ -n "$staged" ] || fail "$name: no prefetch statistics"
    http=$(sed -n 's/.*http: [0-9]* requests, \([0-9]*\) bytes fetched.*, \([0-9]*\) faulty copies,.*/\1 \2/p' \
        "$tmpdir/$name.err" | tail -n 1)
    [ -n "$http" ] || fail "$name: no http statistics"
    echo "$staged $http"
}

# The start-up's first GET (64 KiB: the header, the index and the first
# blocks with them) is the only range fetched twice.
once=$((size + 65536))
set -- $(run on readahead-disk=2M)
echo "readahead-disk=2M: $1 of $NBLOCKS blocks read ahead to disk ($2 faulty); $3 bytes fetched of a $size-byte image"
[ "$1" -ge $((NBLOCKS / 4)) ] ||
    fail "only $1 blocks were read ahead to disk"
[ "$2" -eq 0 ] || fail "$2 faulty copies with no fault injected"
[ "$3" -le "$once" ] ||
    fail "$3 bytes fetched for a $size-byte image: a block was fetched twice"

set -- $(run off readahead-disk=0)
echo "readahead-disk=0: $1 blocks read ahead to disk; $3 bytes fetched"
[ "$1" -eq 0 ] || fail "readahead-disk=0 read $1 blocks ahead to disk"
[ "$3" -le "$once" ] || fail "$3 bytes fetched for a $size-byte image"

# Corrupt three replies of a merged range (a fill of several blocks:
# read-ahead to disk or the window's), after the start-up's requests.
printf '%s\n' '{"fault": "corrupt", "ranged": true, "min_range": 131072, "after": 4, "count": 3}' \
    > "$FAULT_FAULTS"
set -- $(run corrupt readahead-disk=2M)
rm -f "$FAULT_FAULTS"
echo "corrupted replies: $1 blocks read ahead to disk, $2 faulty copies dropped there, $4 faulty copies in all"
n=$(grep -c '"fault":"corrupt"' "$FAULT_LOG" || :)
[ "$n" -eq 3 ] || fail "the server corrupted $n replies, not 3"
[ "$4" -eq 3 ] || fail "$4 faulty copies counted for 3 corrupted replies"
[ "$1" -gt 0 ] || fail "nothing was read ahead to disk"
grep -a "read-ahead to disk: " "$tmpdir/corrupt.err" | sed 's/.*debug: //'
grep -aq "read-ahead to disk: block [0-9]* .*: faulty copy dropped" \
    "$tmpdir/corrupt.err" || fail "no log line names the faulty copy dropped"
exit 0
