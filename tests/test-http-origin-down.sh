#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a warm cache with the server gone is served at local
# speed, and the dead server is not knocked on for every block.
#
# A cache is warmed with blocks 0-39 of a 120-block image from the
# fault server; the server is stopped (its port refuses).  nbdkit then
# starts from the cached identity (revalidate= default: no request at
# start-up) with the default read-ahead and retries=4, and:
#  - the 40 cached blocks read back byte-exact, within 10 s in all;
#  - 50 uncached blocks read one by one each fail with EIO, all 50
#    within 10 s (they used to take ~1.5 s each: 5 connection attempts
#    with back-off), and the plugin's counters (-D cloop.stats=1) show
#    no more requests than the first wave (the attempts already out
#    when the first refusal came: at most connections=, 8, since
#    read-ahead may take them all) and at most 4 probes on the back-off
#    schedule, the server marked down once, and at least 40 reads
#    failed at once without a connection;
#    one "server unreachable" warning, not one per block;
#  - the server is started again on the same port: within 60 s a read
#    of an uncached block succeeds (after the back-off, a probe), all
#    50 then read back byte-exact, and "reachable again" is logged.
# Then, with revalidate=0 and a listener on the port that counts and
# closes connections, nbdkit falls back to the offline source: after
# start-up, reading cached blocks (exact) and uncached ones (EIO) makes
# no connection at all.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version
requires test -f "$FAULTSERVER"

BS=65536
make_served_image v4-footer $((120 * BS))
start_faultserver "$www"
port=$FAULT_PORT
url=$FAULT_URL/img
export EXPECTED=$tmpdir/expected BS

# Warm blocks 0-39 only (no read-ahead past them).
nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
want = open(\"$tmpdir/expected\", \"rb\").read()
assert h.pread(40 * $BS, 0) == want[:40 * $BS]
'" "$PLUGIN" url="$url" cache-dir="$cache" readahead=0 \
    2> "$tmpdir/warm.err" || { cat "$tmpdir/warm.err"; fail "warm-up failed"; }

_ws_stop "$FAULT_PID"
port_closed "$port" || fail "the fault server is still up"

# nbdkit in the background, so that the server can come back under it.
sock=$tmpdir/sock pidf=$tmpdir/pid log=$tmpdir/down.err
nbdkit_cloop -f -U "$sock" -P "$pidf" -v -D cloop.stats=1 "$PLUGIN" \
    url="$url" cache-dir="$cache" timeout=10 retries=4 2> "$log" &
bgpid=$!
cleanup_fn "kill $bgpid 2>/dev/null; wait $bgpid 2>/dev/null"
n=0
while [ ! -S "$sock" ] || [ ! -s "$pidf" ]; do
    kill -0 $bgpid 2>/dev/null || { cat "$log"; fail "nbdkit did not start"; }
    [ $n -lt 200 ] || fail "no socket after 10 s"
    sleep 0.05
    n=$((n + 1))
done
nbd_uri="nbd+unix:///?socket=$sock"

cat > "$tmpdir/down.py" <<'PY'
import errno, os, time
bs = int(os.environ["BS"])
want = open(os.environ["EXPECTED"], "rb").read()

t0 = time.monotonic()
for b in range(40):
    assert h.pread(bs, b * bs) == want[b * bs:(b + 1) * bs], "block %d" % b
cached = time.monotonic() - t0
print("40 cached blocks in %.2f s" % cached)
assert cached < 10, "cached blocks took %.1f s" % cached

t0 = time.monotonic()
for b in range(60, 110):
    try:
        h.pread(bs, b * bs)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "block %d: %r, not EIO" % (b, e.errno)
    else:
        raise AssertionError("uncached block %d read with the server down" % b)
    spent = time.monotonic() - t0
    assert spent < 10, "uncached reads: %.1f s by block %d" % (spent, b)
print("50 uncached blocks failed in %.2f s" % (time.monotonic() - t0))
PY
nbdsh -u "$nbd_uri" -c "exec(open('$tmpdir/down.py').read())" ||
    { cat "$log"; fail "reads with the server down"; }

# The counters, logged when the connection closed.
sleep 0.5
stats=$(grep 'http: [0-9]* requests' "$log" | tail -n1)
echo "$0: $stats"
requests=$(echo "$stats" | sed -n 's/.*http: \([0-9]*\) requests.*/\1/p')
downs=$(echo "$stats" | sed -n 's/.*server down \([0-9]*\) times.*/\1/p')
fast=$(echo "$stats" | sed -n 's/.* \([0-9]*\) fast failures.*/\1/p')
probes=$(echo "$stats" | sed -n 's/.* \([0-9]*\) probes.*/\1/p')
[ -n "$requests" ] && [ -n "$probes" ] ||
    { cat "$log"; fail "no http counters logged"; }
[ "$probes" -le 4 ] || fail "$probes probes of a dead server in 10 s"
[ "$((requests - probes))" -le 8 ] ||
    fail "$requests requests ($probes probes) to a dead server for 50 uncached blocks"
[ "${downs:-0}" -eq 1 ] || fail "server marked down ${downs:-?} times, not 1"
[ "${fast:-0}" -ge 40 ] || fail "only ${fast:-0} reads failed at once"
warnings=$(grep -c 'server unreachable (' "$log" || true)
[ "$warnings" -eq 1 ] || { cat "$log"; fail "$warnings 'unreachable' warnings"; }

# The server comes back on the same port.
FAULTSERVER_PORT=$port start_faultserver "$www"
[ "$FAULT_PORT" = "$port" ] || fail "the server came back on another port"
cat > "$tmpdir/up.py" <<'PY'
import os, time
bs = int(os.environ["BS"])
want = open(os.environ["EXPECTED"], "rb").read()
t0 = time.monotonic()
while True:
    try:
        data = h.pread(bs, 60 * bs)
        break
    except nbd.Error:
        assert time.monotonic() - t0 < 60, "server back, reads still fail"
        time.sleep(0.25)
print("reads succeed again after %.1f s" % (time.monotonic() - t0))
assert data == want[60 * bs:61 * bs]
assert h.pread(50 * bs, 60 * bs) == want[60 * bs:110 * bs]
PY
nbdsh -u "$nbd_uri" -c "exec(open('$tmpdir/up.py').read())" ||
    { cat "$log"; fail "reads after the server came back"; }
grep -q 'server reachable again' "$log" ||
    { cat "$log"; fail "no 'reachable again' line"; }
sleep 0.5
stats=$(grep 'http: [0-9]* requests' "$log" | tail -n1)
echo "$0: $stats"
probes=$(echo "$stats" | sed -n 's/.* \([0-9]*\) probes.*/\1/p')
[ "${probes:-0}" -ge 1 ] || fail "the server came back without a probe"
kill "$bgpid"
wait "$bgpid" 2>/dev/null || true

# Offline source: a listener that counts connections and closes them.
_ws_stop "$FAULT_PID"
port_closed "$port" || fail "the fault server is still up"
count=$tmpdir/connections
_ws_spawn "$tmpdir/counter.err" /usr/bin/python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
n = 0
open(sys.argv[2], "w").write("0\n")
while True:
    c, _ = s.accept()
    c.close()
    n += 1
    open(sys.argv[2], "w").write("%d\n" % n)' "$port" "$count"
n=0
while [ ! -s "$count" ]; do
    [ $n -lt 200 ] || fail "the counting listener did not start"
    sleep 0.05
    n=$((n + 1))
done
cat > "$tmpdir/offline.py" <<'PY'
import errno, os
bs = int(os.environ["BS"])
want = open(os.environ["EXPECTED"], "rb").read()
count = os.environ["COUNT"]
at_start = int(open(count).read())
assert h.pread(40 * bs, 0) == want[:40 * bs]
for b in range(41, 59, 3):         # never read while the server was up
    try:
        h.pread(bs, b * bs)
    except nbd.Error as e:
        assert e.errnum == errno.EIO
    else:
        raise AssertionError("offline: uncached block %d read" % b)
after = int(open(count).read())
print("offline: %d connections at start-up, %d while reading"
      % (at_start, after - at_start))
assert after == at_start, "the offline source connected %d times" % (
    after - at_start)
PY
# revalidate=0: the start-up probe fails (the listener answers
# nothing), so the cached identity is served by the offline source.
COUNT=$count nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/offline.py').read())\"" \
    "$PLUGIN" url="$url" cache-dir="$cache" revalidate=0 timeout=10 \
    2> "$tmpdir/offline.err" || { cat "$tmpdir/offline.err"; fail "offline run"; }
grep -q 'without the server' "$tmpdir/offline.err" ||
    { cat "$tmpdir/offline.err"; fail "offline: not the offline source"; }
echo "$0: ok"
