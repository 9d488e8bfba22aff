#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the systemd units.  systemd-analyze verify loads both
# without a warning (an unknown or misspelt directive is one).  Then
# the service's ExecStart line, taken from the unit file (so the test
# cannot drift from it), runs under systemd-socket-activate, which
# passes it listening sockets on 127.0.0.1 and on a Unix socket the way
# the socket unit does; "cloop" becomes the built plugin's path and
# ${CONFIGURATION,CACHE,STATE}_DIRECTORY temporary folders.  A cloop
# file (by a relative path, as in /etc/nbdkit-cloop) and a signed store
# read back byte-exact over each socket, the store's accepted revision
# lands in STATE_DIRECTORY, and the example catalogue parses.
# Not exercised: the hardening directives (they need systemd as PID 1).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires systemd-socket-activate --version
requires systemd-analyze --version
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"
units=$srcdir/../systemd

# The units load, with no warning at all.
systemd-analyze verify --man=no "$units/nbdkit-cloop.socket" \
    "$units/nbdkit-cloop.service" > "$tmpdir/verify.out" 2>&1 ||
    { cat "$tmpdir/verify.out"; fail "systemd-analyze verify failed"; }
if [ -s "$tmpdir/verify.out" ]; then
    cat "$tmpdir/verify.out"; fail "systemd-analyze verify warned"
fi
grep -qx 'ListenStream=10809' "$units/nbdkit-cloop.socket" ||
    fail "the socket unit does not listen on the NBD port"

# The service's command line, exactly as the unit has it.
n=$(grep -c '^ExecStart=' "$units/nbdkit-cloop.service")
[ "$n" = 1 ] || fail "expected one ExecStart= line, found $n"
execstart=$(sed -n 's/^ExecStart=//p' "$units/nbdkit-cloop.service")
case $execstart in
    *\\) fail "ExecStart= continues on the next line: not supported here" ;;
esac

CONFIGURATION_DIRECTORY=$tmpdir/etc
CACHE_DIRECTORY=$tmpdir/cache
STATE_DIRECTORY=$tmpdir/state
export CONFIGURATION_DIRECTORY CACHE_DIRECTORY STATE_DIRECTORY
mkdir -p "$CONFIGURATION_DIRECTORY" "$CACHE_DIRECTORY" "$STATE_DIRECTORY"
# Word splitting and ${VAR} expansion as systemd does them (the line
# has no quotes, globs or specifiers: checked).
case $execstart in
    *[\'\"\*\?\[%\;\`]*|*'$('*) fail "ExecStart= has quoting or specifiers: $execstart" ;;
esac
eval "set -- $execstart"
test -x "$1" || fail "the unit's nbdkit $1 does not exist"
cmd=() replaced=0
for a in "$@"; do
    if [ "$a" = cloop ]; then cmd+=("$PLUGIN"); replaced=$((replaced+1))
    else cmd+=("$a"); fi
done
[ "$replaced" = 1 ] || fail "the plugin name cloop is not in: $execstart"
case " ${cmd[*]} " in
    *" exports=$CONFIGURATION_DIRECTORY/exports "*) ;;
    *) fail "ExecStart= does not serve \$CONFIGURATION_DIRECTORY/exports" ;;
esac
echo "running: ${cmd[*]}"

# The example catalogue parses (nbdkit reads it, and the public keys it
# names, at start-up; no client asks for an export, so no image is
# opened and nothing is fetched).  Its /etc/nbdkit-cloop is ours.
cd "$tmpdir"
"$CLOOP_STORE" keygen key.pem key.pub >/dev/null || fail "keygen failed"
cp key.pub "$CONFIGURATION_DIRECTORY/site.pub"
sed "s|/etc/nbdkit-cloop/|$CONFIGURATION_DIRECTORY/|g" \
    "$units/exports.example" > "$CONFIGURATION_DIRECTORY/exports"
"${cmd[@]:0:1}" -U - "${cmd[@]:1}" --run true ||
    fail "nbdkit refuses the example catalogue"

# A catalogue with a local cloop file and a signed store.
make_sample in.raw 1500000
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw "$CONFIGURATION_DIRECTORY/local.cloop" ||
    fail "mkcloop failed"
"$CLOOP_STORE" create -q -B 65536 -n st -k key.pem in.raw store ||
    fail "cloop-store create failed"
cat > "$CONFIGURATION_DIRECTORY/exports" <<CAT
local  local.cloop
store  $tmpdir/store  pubkey=$tmpdir/key.pub
CAT

port=$(_ws_free_port)
sock=$tmpdir/nbd.sock
systemd-socket-activate -l "127.0.0.1:$port" -l "$sock" \
    -E CONFIGURATION_DIRECTORY -E CACHE_DIRECTORY -E STATE_DIRECTORY \
    "${cmd[@]}" > nbdkit.log 2>&1 &
pid=$!
cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
for _ in $(seq 100); do
    [ -S "$sock" ] && break
    kill -0 "$pid" 2>/dev/null || { cat nbdkit.log; fail "it exited"; }
    sleep 0.1
done
[ -S "$sock" ] || fail "systemd-socket-activate did not listen on $sock"

nbdcopy "nbd://127.0.0.1:$port/local" out.tcp ||
    { cat nbdkit.log; fail "nbdcopy over TCP failed"; }
cmp out.tcp exp || fail "export local over TCP differs"
nbdcopy "nbd+unix:///store?socket=$sock" out.unix ||
    { cat nbdkit.log; fail "nbdcopy over the Unix socket failed"; }
cmp out.unix in.raw || fail "export store over the Unix socket differs"
[ -n "$(find "$STATE_DIRECTORY" -type f)" ] ||
    fail "no store revision recorded in STATE_DIRECTORY"

# One process served both sockets: the one systemd-socket-activate
# started (it execs nbdkit, so the pid is nbdkit's).
kill -0 "$pid" || fail "nbdkit exited"
grep -q "nbdkit" /proc/$pid/cmdline || fail "pid $pid is not nbdkit"
if grep -qi "error" nbdkit.log; then
    cat nbdkit.log; fail "nbdkit logged an error"
fi
echo "$0: OK"
