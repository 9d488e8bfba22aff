#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a cached header or index of a remote image that passes
# its entry's SHA-256 but does not parse (what a corrupted reply cached
# before it was parsed leaves behind) is dropped, warned about once,
# and fetched again: the start succeeds and reads the exact bytes, and
# the next start reads them with no warning.  Made by flipping a bit
# and then rewriting the entry's SHA-256: in the "V2.0" signature of
# the cached head, and in the top byte of the first index offset.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdinfo --version

make_served_image v2 3000000
start_nginx "$www"
warm=$tmpdir/warm
nbdkit_cloop -U - --run 'nbdinfo --size "$uri" > /dev/null' \
    "$PLUGIN" url="$NGINX_URL/img" cache-dir="$warm" 2> "$tmpdir/open.err" || {
    cat "$tmpdir/open.err"; fail "open failed"; }
# The head is the longest metadata entry starting with the cloop
# preamble; the index (8 bytes a block) is the one that does not.
head_e=$(meta_entries "$warm" head)
index_e=$(meta_entries "$warm" index)
[ -n "$head_e" ] && [ -n "$index_e" ] ||
    fail "head or index entry not found: $(cat "$tmpdir/meta.list")"
echo "head entry $head_e, index entry $index_e"

# flip_rehash FILE WHAT: flip a bit (in "V2.0" if WHAT=sig, else the
# first payload byte) and rewrite the SHA-256 in the entry header.
flip_rehash ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import hashlib, sys
path, what = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
payload = b[64:]
pos = payload.find(b"V2.0") if what == "sig" else 0
assert pos >= 0, "no V2.0 in the head entry"
payload[pos] ^= 0x01
b[64:] = payload
b[24:56] = hashlib.sha256(bytes(payload)).digest()
open(path, "wb").write(bytes(b))
PY
}

run ()
{
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$tmpdir/c" \
        2> "$tmpdir/$1.err" || {
        cat "$tmpdir/$1.err"; fail "$1: the start failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$1: wrong bytes"
}

for what in head index; do
    rm -rf "$tmpdir/c"; cp -a "$warm" "$tmpdir/c"
    if [ $what = head ]; then
        flip_rehash "$tmpdir/c/$head_e" sig
    else
        flip_rehash "$tmpdir/c/$index_e" first
    fi
    run "$what"
    nwarn=$(grep -c 'warning' "$tmpdir/$what.err" || true)
    [ "$nwarn" -eq 1 ] || {
        cat "$tmpdir/$what.err"; fail "$what: $nwarn warnings, expected 1"; }
    grep warning "$tmpdir/$what.err"
    run "$what-next"
    if grep 'warning\|error' "$tmpdir/$what-next.err"; then
        fail "$what: the next start warned"
    fi
    echo "$what: exact, one warning; next start exact, no warning"
done
echo "$0: ok"
