#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: an image replaced within the second its validators name.
# nginx's ETag is the file's mtime (in seconds) and size, so two
# versions of one size written in one second look the same to any HTTP
# client.  RFC 9110 8.8.2.2: such validators are settled only once the
# reply's Date is a second or more past Last-Modified.  The files here
# are dated in the future, which makes every reply look like one sent in
# the second the file changed.
#  - Run 1 caches the first half of version A (validators not settled).
#  - B (same size, same mtime: the same ETag and Last-Modified) replaces
#    it.  Run 2, within revalidate=: the cached identity was not settled,
#    so the server is asked and the header and index are fetched again;
#    the whole export reads as B, never as A's index over B's bytes.
#  - cloop-store warm of it fails: the plugin would keep no block.
#  - The same for a signed block store: revision 2 (other data, an
#    index and signature of the same sizes and mtime) replaces revision
#    1; the next start serves revision 2, with its own signature.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires curl --version
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

BS=65536
www=$tmpdir/www
cache=$tmpdir/cache
mkdir -p "$www"
for v in a:21 b:22; do
    /usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(int(sys.argv[1])).randbytes(2 << 20))' \
        "${v#*:}" > "$tmpdir/${v%:*}.in"
    "$MKCLOOP" -d v2 -B $BS "$tmpdir/${v%:*}.in" "$tmpdir/${v%:*}.img" ||
        fail "mkcloop ${v%:*}"
done
[ "$(stat -c %s "$tmpdir/a.img")" = "$(stat -c %s "$tmpdir/b.img")" ] ||
    fail "setup: A and B must have one size"
cmp -s "$tmpdir/a.img" "$tmpdir/b.img" && fail "setup: A and B are the same"
future=$(( $(date +%s) + 3600 ))
cp "$tmpdir/a.img" "$www/img"
touch -d "@$future" "$www/img"
start_nginx "$www"
url=$NGINX_URL/img
etag_a=$(curl -sI "$url" | tr -d '\r' | grep -i '^etag:')

# Run 1: the first half of A.
A=$tmpdir/a.in nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
import os
a = open(os.environ[\"A\"], \"rb\").read()
assert h.pread(1 << 20, 0) == a[:1 << 20]
'" "$PLUGIN" url="$url" cache-dir="$cache" readahead=0 2> "$tmpdir/run1.err" || {
    cat "$tmpdir/run1.err"; fail "run 1 failed"; }
grep -q 'settled=0' "$cache"/url/* ||
    fail "run 1: the identity is not recorded as unsettled"
grep -q 'warning: .*not a second older.*not kept in the disk cache' \
    "$tmpdir/run1.err" || {
    cat "$tmpdir/run1.err"; fail "run 1: no warning that blocks are not kept"; }

# B in its place, with A's mtime: the same validators.
cp "$tmpdir/b.img" "$www/img.new"
touch -d "@$future" "$www/img.new"
mv -f "$www/img.new" "$www/img"
etag_b=$(curl -sI "$url" | tr -d '\r' | grep -i '^etag:')
[ -n "$etag_a" ] && [ "$etag_a" = "$etag_b" ] ||
    fail "setup: nginx must give B the ETag of A ($etag_a, $etag_b)"

# Run 2 (revalidate= at its default, 600 s): B, whole and exact.
before=$(nginx_request_count)
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" "$PLUGIN" \
    url="$url" cache-dir="$cache" 2> "$tmpdir/run2.err" || {
    cat "$tmpdir/run2.err"; fail "run 2 failed"; }
cmp "$tmpdir/out" "$tmpdir/b.in" ||
    fail "run 2 did not serve B (A's cached index or blocks were used)"
[ "$(nginx_request_count)" -gt "$before" ] ||
    fail "run 2 did not ask the server"
echo "$0: ok: B served after a change within one second"

# cloop-store warm keeps nothing either: it fails, saying so.
if "$CLOOP_STORE" warm -q "$url" "$tmpdir/wcache" 2> "$tmpdir/warm.err"; then
    fail "warm of a file with unsettled validators succeeded"
fi
grep -q 'nothing to warm' "$tmpdir/warm.err" ||
    { cat "$tmpdir/warm.err"; fail "warm did not say why it failed"; }
echo "$0: ok: warm refused: $(grep -m1 'nothing to warm' "$tmpdir/warm.err")"

# A store: revision 1 of A's data, then revision 2 of B's.
"$CLOOP_STORE" keygen "$tmpdir/k.pem" "$tmpdir/k.pub" > /dev/null ||
    fail "keygen"
publish ()
{
    rm -rf "$tmpdir/st"
    "$CLOOP_STORE" create -q -B 64K -n same -r "$1" -k "$tmpdir/k.pem" \
        "$tmpdir/$2.in" "$tmpdir/st" || fail "create revision $1"
    mkdir -p "$www/s/blocks"
    cp -r "$tmpdir/st/blocks/." "$www/s/blocks/"
    for f in index index.sig; do
        cp "$tmpdir/st/$f" "$www/s/$f.new"
        touch -d "@$future" "$www/s/$f.new"
        mv -f "$www/s/$f.new" "$www/s/$f"
    done
}
publish 1 a
size1=$(stat -c %s "$www/s/index"):$(stat -c %s "$www/s/index.sig")
A=$tmpdir/a.in nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
import os
a = open(os.environ[\"A\"], \"rb\").read()
assert h.pread(1 << 20, 0) == a[:1 << 20]
'" "$PLUGIN" url="$NGINX_URL/s/index" pubkey="$tmpdir/k.pub" \
    cache-dir="$cache" 2> "$tmpdir/store1.err" || {
    cat "$tmpdir/store1.err"; fail "store run 1 failed"; }
publish 2 b
[ "$(stat -c %s "$www/s/index"):$(stat -c %s "$www/s/index.sig")" = \
  "$size1" ] || fail "setup: revision 2's index and signature sizes differ"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" "$PLUGIN" \
    url="$NGINX_URL/s/index" pubkey="$tmpdir/k.pub" cache-dir="$cache" \
    2> "$tmpdir/store2.err" || {
    cat "$tmpdir/store2.err"; fail "store run 2 failed"; }
cmp "$tmpdir/out" "$tmpdir/b.in" ||
    fail "store run 2 did not serve revision 2"
echo "$0: ok: a store's revision 2 served after a change within one second"
