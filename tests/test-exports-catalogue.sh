#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: exports= serves the exports a catalogue file lists.
# A local image (relative path, with a per-export readahead= key), a
# remote image from nginx, a store by its folder, and a URL on a closed
# port: the good ones read byte-exact, concurrently; the dead one fails
# only its own client (the error names the export and the URL), and the
# others keep serving afterwards.  A bad line stops nbdkit with an error
# naming the file and the line number; so does a process-wide key on a
# line.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdinfo --version
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

cd "$tmpdir"
mkdir -p www cat
make_sample in.raw 2000003
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw cat/local.cloop || fail "mkcloop failed"
"$MKCLOOP" -d v4 -c zlib,lz4 -B 65536 in.raw www/remote.cloop ||
    fail "mkcloop failed"
"$CLOOP_STORE" keygen key.pem key.pub >/dev/null || fail "keygen failed"
"$CLOOP_STORE" create -q -B 65536 -n st -k key.pem in.raw cat/store ||
    fail "cloop-store create failed"
start_nginx "$tmpdir/www"
dead_port=$(_ws_free_port)
port_closed "$dead_port" || fail "port $dead_port is open"

cat > cat/exports <<CAT
# name      location                                   keys
local       local.cloop                                readahead=1M
remote      $NGINX_URL/remote.cloop                    timeout=20

store       store   pubkey=$tmpdir/key.pub
dead        http://127.0.0.1:$dead_port/gone.cloop     timeout=3 retries=0
CAT

cat > readall.sh <<'SH'
set -e
u () { echo "nbd+unix:///$1?socket=$unixsocket"; }
nbdcopy "$(u local)" out.local & a=$!
nbdcopy "$(u remote)" out.remote & b=$!
nbdcopy "$(u store)" out.store & c=$!
if nbdinfo "$(u dead)" > dead.out 2>&1; then
    echo "the dead export was served" >&2; exit 1
fi
wait $a; wait $b; wait $c
nbdcopy "$(u remote)" out.remote2
/usr/bin/python3 - "$uri" > list.out <<'PY'
import nbd, sys
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(sys.argv[1])
h.opt_list(lambda name, desc: print("%s: %s" % (name, desc)) or 0)
h.opt_abort()
PY
SH
nbdkit_cloop -U - --run 'unixsocket=$unixsocket uri=$uri sh readall.sh' \
    "$PLUGIN" exports=cat/exports cache-dir="$tmpdir/cache" \
    2> read.err || { cat read.err; fail "reading the exports failed"; }
cmp out.local exp || fail "local: wrong bytes"
cmp out.remote exp || fail "remote: wrong bytes"
cmp out.remote2 exp || fail "remote, second read: wrong bytes"
cmp out.store in.raw || fail "store: wrong bytes"
grep -q "export dead.*127.0.0.1:$dead_port" read.err ||
    { cat read.err; fail "the dead export's error names neither it nor its URL"; }
for e in local remote store; do
    grep -q "^$e: cloop V\|^$e: block store" list.out ||
        { cat list.out; fail "export $e is not listed with a description"; }
done
grep -q "^dead: unavailable: .*$dead_port" list.out ||
    { cat list.out; fail "the dead export's description does not say why"; }
echo "$0: ok: good exports served, the dead one failed alone"

# Bad catalogues: each stops nbdkit with the file and line.
bad ()
{
    printf '%s\n' "$@" > cat/bad
    if nbdkit_cloop -U - --run true "$PLUGIN" exports=cat/bad 2> bad.err; then
        fail "catalogue accepted: $*"
    fi
    cat bad.err
}
bad "# comment" "onlyname"
grep -q "bad line 2" bad.err || fail "no line number for a missing location"
bad "a local.cloop" "b local.cloop readahead=banana"
grep -q "line 2" bad.err || fail "no line number for a bad value"
bad "a local.cloop cache-dir=/tmp"
grep -q "cache-dir=: not a key of one export" bad.err ||
    fail "a process-wide key on a line was not refused"
bad "a local.cloop" "a local.cloop"
grep -q "line 2: export 'a' is already on line 1" bad.err || fail "a repeated name was not refused"
bad "a local.cloop nonsense"
grep -q "line 1.*not KEY=VALUE" bad.err || fail "a bare word was not refused"
echo "$0: ok: bad catalogues refused with their line"
