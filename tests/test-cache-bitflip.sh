#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: one flipped bit in a cached block is caught by the
# entry's SHA-256: the read still returns the exact bytes, a disk-cache
# corruption warning is logged, and that one block is fetched again
# (one range request, nothing else: the identity is trusted for
# revalidate=600 s, so no probe either).  A third run then makes no
# request at all.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

make_served_image v2 3000000
start_nginx "$www"

# run NAME: read the whole export through the cache, compare.
run ()
{
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - -v -D cloop.stats=1 \
        --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$cache" \
        2> "$tmpdir/$1.err" || {
        cat "$tmpdir/$1.err"; fail "$1: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$1: wrong bytes"
}

run warm
n0=$(nginx_request_count)
[ "$n0" -gt 0 ] || fail "the warm-up made no request"

# The largest entry is a block of random data; flip one bit in its
# payload (after the 64-byte entry header).
victim=$(find "$cache"/obj/*/ -type f ! -name '.tmp-*' -printf '%s %p\n' |
         sort -n | tail -n1 | cut -d' ' -f2-)
size=$(stat -c %s "$victim")
[ "$size" -gt 1000 ] || fail "no sizeable block in the cache"
pos=$(( 64 + (size - 64) / 2 ))
/usr/bin/python3 - "$victim" "$pos" <<'PY'
import sys
path, pos = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0x10]))
PY
echo "$0: flipped a bit at byte $pos of $victim ($size bytes)"

run flipped
n1=$(nginx_request_count)
grep -E 'disk cache.*(hash|SHA|corrupt|mismatch|bad)|deleted, will be fetched again' \
    "$tmpdir/flipped.err" || {
    cat "$tmpdir/flipped.err"; fail "no disk-cache corruption warning"; }
# The plugin's own counters agree (-D cloop.stats=1).
grep -E 'http: [0-9]+ requests' "$tmpdir/flipped.err" | tail -n1
grep -Eq 'http: 1 requests' "$tmpdir/flipped.err" ||
    fail "cloop.stats does not show 1 HTTP request"
fetched=$((n1 - n0))
echo "$0: requests after the flip: $fetched"
tail -n "$fetched" "$NGINX_LOG"
[ "$fetched" -eq 1 ] || fail "expected 1 request (the bad block), got $fetched"
# That request asked for exactly the bad entry's range, which is its
# name: <offset>-<length>.
name=$(basename "$victim")
off=${name%-*} len=${name#*-}
tail -n1 "$NGINX_LOG" | grep -q "bytes=$off-$((off + len - 1))\"" ||
    fail "the refetch was not the range of the bad entry ($name)"
[ -f "$victim" ] || fail "the bad entry was not written again"

run third
n2=$(nginx_request_count)
[ "$n2" -eq "$n1" ] || fail "third run made $((n2 - n1)) requests, expected 0"
if grep -q 'warning' "$tmpdir/third.err"; then
    grep 'warning' "$tmpdir/third.err"; fail "third run: a warning"
fi
grep -Eq 'http: 0 requests' "$tmpdir/third.err" ||
    fail "cloop.stats of the third run does not show 0 HTTP requests"
echo "$0: ok"
