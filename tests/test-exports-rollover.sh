#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: version rollover of a block store.  With revalidate=0
# every new connection looks for a newer signed index:
#  - a client connected to revision 1 keeps reading revision 1
#    byte-exact after revision 2 was published into the same folder;
#  - a new client gets revision 2 byte-exact;
#  - a tampered revision 3 is refused with a log line saying why, and
#    new clients still get revision 2.
# Served both from the folder (dir=) and over HTTP (exports= with a URL,
# nginx), where the old revision's blocks keep coming from the cache
# and the server.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"
export CLOOP_STORE

cd "$tmpdir"
mkdir -p d
make_sample rev1.raw 1500001
make_sample rev2.raw 1700003
"$CLOOP_STORE" keygen key.pem key.pub >/dev/null || fail "keygen failed"
start_nginx "$tmpdir/d"

cat > client.py <<'PY'
import nbd, os, subprocess, sys

sock, export = sys.argv[1], sys.argv[2]
cs = os.environ["CLOOP_STORE"]

def connect():
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(sock)
    return h

def read_all(h):
    size = h.get_size()
    return b"".join(h.pread(min(1 << 20, size - o), o)
                    for o in range(0, size, 1 << 20))

def publish(src, rev):
    subprocess.run([cs, "create", "-q", "-B", "65536", "-n", "demo",
                    "-r", str(rev), "-k", "key.pem", src, "d/store"],
                   check=True)

rev1 = open("rev1.raw", "rb").read()
rev2 = open("rev2.raw", "rb").read()

h1 = connect()
assert read_all(h1) == rev1, "first client: not revision 1"
publish("rev2.raw", 2)
h2 = connect()
assert read_all(h2) == rev2, "new client after republishing: not revision 2"
assert read_all(h1) == rev1, "first client changed revision while connected"
print("rollover ok")

# Revision 3, signed, then tampered with: one byte of its description.
publish("rev1.raw", 3)
idx = bytearray(open("d/store/index", "rb").read())
pos = idx.index(b"tamper-me")
idx[pos] ^= 0x20
open("d/store/index", "wb").write(idx)
h3 = connect()
assert read_all(h3) == rev2, "a tampered revision 3 was served"
assert read_all(h1) == rev1 and read_all(h2) == rev2
for h in (h1, h2, h3):
    h.shutdown()
print("tampered revision refused")
PY
# The description of every revision carries the word to tamper with.
sed -i 's|"-n", "demo",|"-n", "demo", "-d", "rev tamper-me",|' client.py

run ()
{
    mode=$1
    shift
    rm -rf d/store
    "$CLOOP_STORE" create -q -B 65536 -n demo -d "rev tamper-me" -r 1 \
        -k key.pem rev1.raw d/store || fail "cloop-store create failed"
    nbdkit_cloop -U - --run "/usr/bin/python3 client.py \$unixsocket store" \
        "$PLUGIN" "$@" pubkey=key.pub revalidate=0 state-dir="state-$mode" \
        2> "$mode.err" > "$mode.out" || {
        cat "$mode.out" "$mode.err"; fail "$mode: the clients failed"; }
    cat "$mode.out"
    grep -q "keeping revision 2" "$mode.err" ||
        { cat "$mode.err"; fail "$mode: no log line for the tampered index"; }
    echo "$0: ok: $mode"
}

run dir dir=d
printf 'store %s/store/index\n' "$NGINX_URL" > cat
run http exports=cat cache-dir="$tmpdir/cache"
