#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: flipped bits in the cached metadata of a remote image:
# its header and index entries (metadata entries in url/, read at every
# start) and its identity blob (url/ too).  The entries the image's opening reads are
# found by opening it once on an empty cache (nbdinfo --size).  Then,
# each case on a fresh copy of a complete warm cache, with the server
# up (revalidate=0, so the identity is probed every time):
#   - a bit of the payload of each header/index entry, and of the
#     identity blob: caught by the entry's SHA-256; the run reads the
#     exact bytes, warns about the corrupt entry, and refetches only
#     metadata (no more requests than entries flipped, plus the probe);
#   - a bit in each field of an entry's 64-byte header (magic, version,
#     header length, payload length, SHA-256) of a header/index entry:
#     exact bytes;
#   - the identity blob with a bit flipped and its SHA-256 rewritten (so
#     it verifies but is wrong), in its magic line and in the first
#     digit of the size: exact bytes (it is probed and written again);
# and after each case the next start reads exactly with no warning.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdinfo --version

make_served_image v2 3000000
start_nginx "$www"
warm=$tmpdir/warm

# Which entries does opening the image read?
nbdkit_cloop -U - --run 'nbdinfo --size "$uri" > /dev/null' \
    "$PLUGIN" url="$NGINX_URL/img" cache-dir="$warm" 2> "$tmpdir/open.err" || {
    cat "$tmpdir/open.err"; fail "open failed"; }
# All metadata lives in url/ (cache/diskcache.h): the identity blob
# starts with its magic line; the rest are header and index bytes.
meta_entries "$warm" meta > "$tmpdir/meta.list"
meta_entries "$warm" identity > "$tmpdir/id.list"
nmeta=$(wc -l < "$tmpdir/meta.list")
[ "$nmeta" -ge 1 ] || fail "opening cached no header/index entry"
[ "$(wc -l < "$tmpdir/id.list")" -eq 1 ] || fail "no single identity blob"
echo "metadata entries: $(tr '\n' ' ' < "$tmpdir/meta.list") identity: $(cat "$tmpdir/id.list")"

# run LABEL CACHE: read everything, compare; req = requests made.
run ()
{
    n0=$(nginx_request_count)
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$2" revalidate=0 \
        2> "$tmpdir/$1.err" || {
        cat "$tmpdir/$1.err"; fail "$1: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$1: wrong bytes"
    req=$(( $(nginx_request_count) - n0 ))
}
run warm-up "$warm"

# flip FILE POS: XOR bit 4 of the byte at POS.
flip ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
path, pos = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0x10]))
PY
}

# case_run LABEL MAXREQ: run on the flipped copy, then a next start.
case_run ()
{
    run "$1" "$tmpdir/c"
    echo "$1: exact, $req requests"
    [ "$req" -le "$2" ] ||
        fail "$1: $req requests, expected at most $2 (metadata only)"
    run "$1-next" "$tmpdir/c"
    if grep 'warning\|error' "$tmpdir/$1-next.err"; then
        fail "$1: the next start warned"
    fi
}

# Payload bits: every header/index entry and the identity at once.
rm -rf "$tmpdir/c"; cp -a "$warm" "$tmpdir/c"
while read -r e; do
    size=$(stat -c %s "$tmpdir/c/$e")
    flip "$tmpdir/c/$e" $(( 64 + (size - 64) / 2 ))
done < "$tmpdir/meta.list"
id=$(cat "$tmpdir/id.list")
flip "$tmpdir/c/$id" $(( 64 + 3 ))
case_run payload $((nmeta + 1))
grep -q 'disk cache' "$tmpdir/payload.err" || {
    cat "$tmpdir/payload.err"; fail "payload: no corruption warning"; }

# Entry header fields of each header/index entry.
for pos in 0 11 15 23 24 55; do
    rm -rf "$tmpdir/c"; cp -a "$warm" "$tmpdir/c"
    while read -r e; do flip "$tmpdir/c/$e" $pos; done < "$tmpdir/meta.list"
    case_run "header-byte-$pos" $((nmeta + 1))
done
# The identity verifies but is wrong: flip, then rewrite the SHA-256.
for what in nbdkit-cloop size=; do
    rm -rf "$tmpdir/c"; cp -a "$warm" "$tmpdir/c"
    /usr/bin/python3 - "$tmpdir/c/$id" "$what" <<'PY'
import hashlib, sys
path, what = sys.argv[1], sys.argv[2].encode()
b = bytearray(open(path, "rb").read())
payload = b[64:]
pos = payload.find(what)
assert pos >= 0, "%r not in the identity" % what
if what == b"size=":
    pos += len(what)            # the size's first digit
payload[pos] ^= 0x01
b[64:] = payload
b[24:56] = hashlib.sha256(bytes(payload)).digest()
open(path, "wb").write(bytes(b))
PY
    case_run "identity-rehashed-$what" 1
done
echo "$0: ok"
