#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: background fills, through a 200 ms delay proxy.
#
# 1. A strictly serial sequential reader (one 64 KiB read at a time)
#    gets read-ahead: after reading 1 MiB and pausing, the plugin has
#    fetched at least 8 blocks past what was read (the window ran ahead
#    in the background); over the whole image most blocks were filled in the
#    background and then used, and few reads had to fetch for
#    themselves.
# 2. NBD_CMD_CACHE returns before its data could have arrived (through
#    a second proxy, one round trip takes 2 s: it must not wait for
#    it), and the data is then fetched: once that proxy is gone, the
#    range is still served.
# Counters come from metrics-file= (written every second).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version

BS=65536
SIZE=$((8 * 1024 * 1024))
make_served_image v2 $SIZE
start_nginx "$www"
start_delayproxy "$NGINX_PORT" 200

# Compressed length of each block, from the V2.0 index.
/usr/bin/python3 - "$www/img" > "$tmpdir/lengths" <<'PY'
import struct, sys
img = open(sys.argv[1], "rb").read()
n = struct.unpack(">I", img[132:136])[0]
offs = [struct.unpack(">Q", img[136 + 8 * i:144 + 8 * i])[0] for i in range(n + 1)]
print(" ".join(str(offs[i + 1] - offs[i]) for i in range(n)))
PY

cat > "$tmpdir/metrics.py" <<'PY'
import re, time
def metric(path, name):
    """Sum of nbdkit_cloop_NAME over its series, or 0."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return 0
    total = 0
    for m in re.finditer(r"^nbdkit_cloop_%s(\{[^}]*\})? (\S+)$" % name, text, re.M):
        total += float(m.group(2))
    return total
def wait_metric(path, name, pred, what, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit:
        v = metric(path, name)
        if pred(v):
            return v
        time.sleep(0.2)
    raise AssertionError("%s: %s stayed %s" % (what, name, metric(path, name)))
PY

# --- 1. a serial sequential reader ---------------------------------------
cat > "$tmpdir/serial.py" <<PY
import time
exec(open("$tmpdir/metrics.py").read())
m = "$tmpdir/serial.prom"
exp = open("$tmpdir/expected", "rb").read()
lengths = [int(x) for x in open("$tmpdir/lengths").read().split()]
first_mib = sum(lengths[:16])
for off in range(0, 1 << 20, 65536):
    assert h.pread(65536, off) == exp[off:off + 65536], off
# The window (1 MiB at first) runs on without the client: wait until
# the plugin has received at least the blocks read and the next 8.
want = sum(lengths[:24])
got = wait_metric(m, "http_received_bytes_total", lambda v: v >= want,
                  "read-ahead after 1 MiB")
print("after 1 MiB read (%d compressed): %d bytes received" % (first_mib, got))
for off in range(1 << 20, len(exp), 65536):
    assert h.pread(65536, off) == exp[off:off + 65536], off
PY
nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/serial.py').read())\"" \
    "$PLUGIN" url="$PROXY_URL/img" cache-dir=none \
    metrics-file="$tmpdir/serial.prom" metrics-interval=1 \
    > "$tmpdir/serial.out" 2> "$tmpdir/serial.err" ||
    { grep -v 'debug:' "$tmpdir/serial.err"; cat "$tmpdir/serial.out"; fail "serial reader failed"; }
cat "$tmpdir/serial.out"
grep 'prefetch:' "$tmpdir/serial.err" | tail -n 1
set -- $(sed -n 's/.*prefetch: \([0-9]*\) blocks filled, \([0-9]*\) used, \([0-9]*\) wasted.*/\1 \2 \3/p' \
    "$tmpdir/serial.err" | tail -n 1)
filled=$1 used=$2
misses=$(sed -n 's/.*memory cache: [0-9]* hits, \([0-9]*\) misses.*/\1/p' "$tmpdir/serial.err" | tail -n 1)
blocks=$((SIZE / BS))
echo "serial reader: $blocks blocks, $filled filled in the background, $used used, $misses fetched by reads"
[ "$used" -ge $((blocks * 3 / 4)) ] ||
    fail "fewer than 3/4 of the blocks came from read-ahead ($used of $blocks)"
[ "$misses" -le $((blocks / 4)) ] ||
    fail "reads fetched $misses of $blocks blocks themselves"

# --- 2. NBD_CMD_CACHE -------------------------------------------------------
cat > "$tmpdir/cache.py" <<PY
import os, signal, time
exec(open("$tmpdir/metrics.py").read())
m = "$tmpdir/cache.prom"
exp = open("$tmpdir/expected", "rb").read()
assert h.can_cache()
t0 = time.monotonic()
h.cache(4 << 20, 0)
took = time.monotonic() - t0
print("cache of 4 MiB returned after %.3f s" % took)
# One round trip through the proxy takes 2 s: an answer that waited
# for the data would take at least that.
assert took < 1.5, took
wait_metric(m, "prefetch_blocks_total", lambda v: v >= 64, "after cache")
# The server goes away: the range is still served, from memory.
os.kill(int(open("$tmpdir/proxy.pid").read()), signal.SIGKILL)
time.sleep(0.5)
assert h.pread(4 << 20, 0) == exp[:4 << 20]
PY
start_delayproxy "$NGINX_PORT" 2000
echo "$PROXY_PID" > "$tmpdir/proxy.pid"
nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/cache.py').read())\"" \
    "$PLUGIN" url="$PROXY_URL/img" cache-dir=none \
    metrics-file="$tmpdir/cache.prom" metrics-interval=1 \
    > "$tmpdir/cache.out" 2> "$tmpdir/cache.err" ||
    { grep -v 'debug:' "$tmpdir/cache.err"; cat "$tmpdir/cache.out"; fail "cache test failed"; }
cat "$tmpdir/cache.out"
grep 'prefetch:\|memory cache:' "$tmpdir/cache.err" | tail -n 2
used=$(sed -n 's/.*prefetch: [0-9]* blocks filled, \([0-9]*\) used.*/\1/p' "$tmpdir/cache.err" | tail -n 1)
[ "$used" -ge 64 ] || fail "the cached range was not served from the background fills ($used used)"
echo ok
