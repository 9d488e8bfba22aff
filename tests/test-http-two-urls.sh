#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the disk cache knows a remote cloop file by its content
# (the SHA-256 of its size and header and index bytes), not by its URL.
# The same file served by two servers (nginx, and the fault server
# with no faults): after a whole read from the first, a start on the
# second fetches its header and index (the URL's identity is its own)
# but no block: every request to the second server lies within the
# header and index, and the export is byte-exact.  A different file
# with the same name on the second server is not served from the
# first's blocks.

. "${srcdir:-$(dirname "$0")}/functions.sh"
. "$srcdir/web-servers.sh"

requires_plugin_tools

make_served_image v2 3000001
mkdir -p "$tmpdir/www2"
cp "$www/img" "$tmpdir/www2/img"
start_nginx "$www"
start_faultserver "$tmpdir/www2"
cache=$tmpdir/cache

# read_from NAME URL: whole export through the shared cache, compared.
read_from ()
{
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$2" cache-dir="$cache" "${@:3}" \
        2> "$tmpdir/$1.err" || {
        cat "$tmpdir/$1.err"; fail "$1: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$1: wrong bytes"
}

read_from first "$NGINX_URL/img"
[ "$(nginx_request_count)" -gt 0 ] || fail "the first read made no request"
read_from second "$FAULT_URL/img"

# The header and index of a V2.0 file: 136 + 8 (n + 1) bytes.
index_end=$(/usr/bin/python3 -c 'import struct, sys
n = struct.unpack(">I", open(sys.argv[1], "rb").read(136)[132:136])[0]
print(136 + 8 * (n + 1))' "$www/img")
/usr/bin/python3 - "$FAULT_LOG" "$index_end" <<'PY' || fail "the second server was asked for blocks"
import json, sys
end = int(sys.argv[2])
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["path"] != "/img":
        continue
    n += 1
    first = int(r["range"].split("=")[1].split("-")[0])
    print("second server:", r["range"])
    # The probe asks for the first 64 KiB, whatever the index size.
    assert first < end, "a block was fetched: %s" % r["range"]
assert n >= 1, "the second server was never asked"
PY
echo "$0: ok: the second URL read the first URL's cached blocks"

# Another file under the second URL (other bytes, other index).
make_sample "$tmpdir/in2" 2900001
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/in2" "$tmpdir/www2/img" || fail "mkcloop"
pad_to_block "$tmpdir/in2" 65536 "$tmpdir/expected"
read_from changed "$FAULT_URL/img" revalidate=0
echo "$0: ok: another file under the second URL reads its own bytes"
