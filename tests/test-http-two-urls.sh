#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the disk cache keys a remote cloop file's blocks by its
# URL's identity (URL, ETag, Last-Modified, size) and its header and
# index bytes, never by the header and index alone: those do not name
# the data.  Two files of random (incompressible) data of one size have
# the same V2.0 index; nginx serves X and the fault server Y under one
# path, both with one mtime.  After a whole read of X through a cache,
# a read of Y through the same cache is Y, byte-exact, with its blocks
# fetched from the second server; a read of X again asks nginx nothing.  A different file then put under the second URL reads as its
# own bytes.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

www=$tmpdir/www
mkdir -p "$www" "$tmpdir/www2"
for v in x:31 y:32; do
    /usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(int(sys.argv[1])).randbytes(3 << 20))' \
        "${v#*:}" > "$tmpdir/${v%:*}.in"
done
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/x.in" "$www/img" || fail "mkcloop X"
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/y.in" "$tmpdir/www2/img" || fail "mkcloop Y"
# The header and index of a V2.0 file: 136 + 8 (n + 1) bytes.
index_end=$(/usr/bin/python3 -c 'import struct, sys
n = struct.unpack(">I", open(sys.argv[1], "rb").read(136)[132:136])[0]
print(136 + 8 * (n + 1))' "$www/img")
cmp -s <(head -c "$index_end" "$www/img") \
       <(head -c "$index_end" "$tmpdir/www2/img") ||
    fail "setup: X and Y must have the same header and index"
touch -d '-2 hours' "$www/img" "$tmpdir/www2/img"
start_nginx "$www"
start_faultserver "$tmpdir/www2"
cache=$tmpdir/cache

# read_from NAME URL EXPECTED: whole export through the shared cache.
read_from ()
{
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$2" cache-dir="$cache" "${@:4}" \
        2> "$tmpdir/$1.err" || {
        cat "$tmpdir/$1.err"; fail "$1: nbdkit failed"; }
    cmp "$tmpdir/out" "$3" || fail "$1: wrong bytes"
}

# block_requests LOG-LINES: how many of them ask for bytes past the index.
block_requests ()
{
    /usr/bin/python3 -c 'import json, sys
end = int(sys.argv[1])
n = 0
for line in sys.stdin:
    r = json.loads(line)
    if r["path"] == "/img" and r.get("range") and \
       int(r["range"].split("=")[1].split("-")[0]) >= end:
        n += 1
print(n)' "$index_end"
}

read_from first "$NGINX_URL/img" "$tmpdir/x.in"
[ "$(nginx_request_count)" -gt 0 ] || fail "the first read made no request"
read_from second "$FAULT_URL/img" "$tmpdir/y.in"
n=$(block_requests < "$FAULT_LOG")
[ "$n" -gt 0 ] || fail "the second server was asked for no block"
echo "$0: ok: the second URL's file (same index) read as its own, $n block requests"

before=$(nginx_request_count)
read_from first-again "$NGINX_URL/img" "$tmpdir/x.in"
[ "$(nginx_request_count)" -eq "$before" ] ||
    fail "the first URL's warm start asked nginx again"
echo "$0: ok: the first URL's blocks were still cached (0 requests)"

# Another file under the second URL (other bytes, other index).
make_sample "$tmpdir/in2" 2900001
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/in2" "$tmpdir/www2/img" || fail "mkcloop"
pad_to_block "$tmpdir/in2" 65536 "$tmpdir/expected"
read_from changed "$FAULT_URL/img" "$tmpdir/expected" revalidate=0
echo "$0: ok: another file under the second URL reads its own bytes"
