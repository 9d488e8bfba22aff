#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: mirrors of a block store with another revision of the
# index.  A serves the store at revision 200; B a copy re-published at
# revision 201 (its index differs, its blocks are the same files), with
# a third of its block files missing.  B is not dropped: its blocks are
# checked against the pinned index's hashes like every block, so it
# serves them, while the index (and its signature) come from A only.
# A block missing on B (404) goes to A, and is no faulty copy.  A is
# slowed down by 50 ms a reply, so that B is asked first.  The export
# reads byte-exact and both mirrors served blocks.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE

cd "$tmpdir"
mkdir -p wa wb
make_sample img $((3 * 1024 * 1024))
"$CS" keygen k.pem k.pub > /dev/null
"$CS" create -q -B 64K -n st -r 200 -k k.pem img wa/s || fail "create r200"
cp -a wa/s wb/s
"$CS" create -q -B 64K -n st -r 201 -k k.pem img wb/s ||
    fail "re-create r201"
cmp -s wa/s/index wb/s/index && fail "B's index did not change"
"$CS" info wb/s/index | grep -q "^revision: *201$" || fail "B's index is not revision 201"
# A third of B's blocks are missing.
find wb/s/blocks -type f | sort | awk 'NR % 3 == 0' | xargs rm -f
missing=$(find wa/s/blocks -type f | wc -l)
missing=$((missing - $(find wb/s/blocks -type f | wc -l)))
[ "$missing" -gt 0 ] || fail "no block was removed from B"

server ()
{
    _ws_spawn "$1.err" "$_ws_python" "$FAULTSERVER" --root "$2" \
        --port-file "$1.port" --faults "$1.faults" --log "$1.log"
    _ws_wait_file "$1.port" "$_ws_pid" ||
        { cat "$1.err"; fail "fault server $1 did not start"; }
}
server a "$tmpdir/wa"
server b "$tmpdir/wb"
echo '{"fault":"delay","ms":50}' > a.faults
url_a="http://127.0.0.1:$(cat a.port)/s/index"
url_b="http://127.0.0.1:$(cat b.port)/s/index"

nbdkit_cloop -U - -v -D cloop.stats=1 --run 'nbdcopy "$uri" out' \
    "$PLUGIN" url="$url_a" mirror="$url_b" pubkey=k.pub \
    cache-dir=none connections=4 > copy.out 2> nbdkit.err ||
    { grep -a 'http:\|warning\|error' nbdkit.err | tail -30
      fail "nbdcopy through the store mirrors failed"; }
cmp out img || fail "the export is not byte-exact"

grep -a "mirror $url_b" nbdkit.err | grep -aq "not used" &&
    fail "B was dropped"
blocks () { grep -c "\"path\":\"/s/blocks/[^\"]*\".*\"status\":$2" "$1.log" || true; }
a_blocks=$(blocks a 200)
b_blocks=$(blocks b 200)
b_404=$(blocks b 404)
echo "$0: blocks served: A $a_blocks, B $b_blocks; B answered 404 $b_404 times"
[ "$a_blocks" -gt 0 ] || fail "A served no block"
[ "$b_blocks" -gt 0 ] || fail "B served no block"
[ "$b_404" -gt 0 ] || fail "B was never asked for a block it lacks"
# The index: B answered only the probe; its signature came from A.
[ "$(grep -c '"path":"/s/index"' b.log)" -eq 1 ] ||
    fail "B served the index more than its probe"
grep -q '"path":"/s/index.sig"' b.log && fail "B served the signature"
grep -q '"path":"/s/index.sig"' a.log || fail "A did not serve the signature"

stat_of () # URL FIELD-REGEX: the number before it in the last line
{
    grep -a "debug: export .*: http: .*($1)" nbdkit.err | tail -n1 |
        sed -n "s/.* \([0-9][0-9]*\) $2.*/\1/p"
}
for u in "$url_a" "$url_b"; do
    f=$(stat_of "$u" 'faulty copies')
    r=$(stat_of "$u" 'failed ranges')
    echo "$0: $u: ${f:-?} faulty copies, ${r:-?} failed ranges"
    [ "${f:-1}" -eq 0 ] || fail "$u: a missing block counted as faulty"
    [ "${r:-1}" -eq 0 ] || fail "$u: a read failed"
done
grep -aq ": error:" nbdkit.err &&
    { grep -a ": error:" nbdkit.err | head; fail "an error was logged"; }
echo "$0: ok"
