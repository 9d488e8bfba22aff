#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: dir= serves every image and store in a folder, by name.
# Three exports (a cloop V2.0 from create_compressed_fs, a V4.0 lz4
# footer image from mkcloop, a signed block store) and two files that
# are neither: nbdinfo --list shows exactly the three with their
# descriptions; each reads byte-exact through nbdcopy, all three at
# once; an unknown name is refused while the others keep serving;
# default-export= picks the export of the empty name.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires_plugin_tools
requires nbdinfo --version
requires test -x /usr/bin/create_compressed_fs
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

cd "$tmpdir"
mkdir d
make_sample in.raw 3000001
pad_to_block in.raw 65536 exp.64k
pad_to_block in.raw 131072 exp.128k
create_compressed_fs -q -B 65536 in.raw d/knoppix-a >/dev/null 2>&1 ||
    fail "create_compressed_fs failed"
"$MKCLOOP" -d v4-footer -c lz4 -B 131072 in.raw d/knoppix-b ||
    fail "mkcloop failed"
"$CLOOP_STORE" keygen key.pem key.pub >/dev/null || fail "keygen failed"
"$CLOOP_STORE" create -q -B 65536 -n demo -d "Demo store, revision one" \
    -k key.pem in.raw d/store || fail "cloop-store create failed"
echo "not an image" > d/README.txt
mkdir d/empty-folder

nbdkit_cloop -U - --run 'nbdinfo --list --json "$uri"' \
    "$PLUGIN" dir=d pubkey=key.pub > list.json 2> list.err || {
    cat list.err; fail "nbdinfo --list failed"; }
/usr/bin/python3 - list.json <<'PY' || fail "wrong export list"
import json, sys
exports = {e["export-name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
print(sorted(exports))
assert sorted(exports) == ["knoppix-a", "knoppix-b", "store"], exports
assert exports["store"]["description"] == "Demo store, revision one"
assert exports["knoppix-a"]["description"].startswith("cloop V2.0"), exports
assert "64 KiB" in exports["knoppix-a"]["description"]
assert "128 KiB" in exports["knoppix-b"]["description"]
assert exports["store"]["export-size"] == 3000001
PY

# All three read at once, each compared; then an unknown name.
cat > readall.sh <<'SH'
set -e
u () { echo "nbd+unix:///$1?socket=$unixsocket"; }
nbdcopy "$(u knoppix-a)" out.a & a=$!
nbdcopy "$(u knoppix-b)" out.b & b=$!
nbdcopy "$(u store)" out.s & s=$!
wait $a; wait $b; wait $s
if nbdinfo "$(u no-such-image)" > unknown.out 2>&1; then
    echo "an unknown export name was served" >&2; exit 1
fi
nbdcopy "$(u knoppix-a)" out.a2
nbdcopy "$uri" out.default
SH
nbdkit_cloop -U - --run 'uri="$uri" unixsocket="$unixsocket" sh readall.sh' \
    "$PLUGIN" dir=d pubkey=key.pub default-export=knoppix-b \
    2> read.err || { cat read.err; fail "reading the exports failed"; }
cmp out.a exp.64k || fail "knoppix-a: wrong bytes"
cmp out.b exp.128k || fail "knoppix-b: wrong bytes"
cmp out.s in.raw || fail "store: wrong bytes"
cmp out.a2 exp.64k || fail "knoppix-a after the unknown name: wrong bytes"
cmp out.default exp.128k || fail "the default export is not knoppix-b"
grep -q "no export called 'no-such-image'" read.err ||
    { cat read.err; fail "the refusal does not name the export"; }

# A default-export that does not exist stops nbdkit with a clear error.
if nbdkit_cloop -U - --run true "$PLUGIN" dir=d default-export=nope \
    2> bad.err; then fail "default-export=nope was accepted"; fi
grep -q "no export called 'nope'" bad.err || { cat bad.err; fail "bad message"; }
echo "$0: ok"
