#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: read-ahead of remote images.  A strictly serial
# sequential reader (one 64 KiB read at a time, as a booting guest
# reads) makes many times fewer HTTP requests with the default
# read-ahead than with readahead=0, with the same bytes; random reads
# fetch exactly the compressed bytes of the blocks they touch, nothing
# ahead.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires nbdkit --version
requires nbdsh --version
requires test -x "$MKCLOOP"

BS=65536
make_sample "$tmpdir/in" $((8 * 1024 * 1024))
mkdir -p "$tmpdir/www"
"$MKCLOOP" -d v2 -B $BS "$tmpdir/in" "$tmpdir/www/img" || fail "mkcloop"
start_nginx "$tmpdir/www"

# run NAME SCRIPT [ARGS]: an nbdsh script against a fresh cache; prints
# the plugin's "requests bytes" counters.
run ()
{
    name=$1 script=$2; shift 2
    rm -rf "$tmpdir/cache"
    nbdkit_cloop -U - -v -D cloop.stats=1 \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$script').read())\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$tmpdir/cache" "$@" \
        > "$tmpdir/$name.out" 2> "$tmpdir/$name.err" ||
        { cat "$tmpdir/$name.err" "$tmpdir/$name.out"; fail "$name failed"; }
    sed -n 's/.*http: \([0-9]*\) requests, \([0-9]*\) bytes fetched.*/\1 \2/p' \
        "$tmpdir/$name.err" | sort -n | tail -n 1
}

cat > "$tmpdir/serial.py" <<PY
exp = open("$tmpdir/in", "rb").read()
for off in range(0, len(exp), 65536):
    assert h.pread(65536, off) == exp[off:off + 65536], off
PY
# Random 4 KiB reads, far apart (never sequential): also report the
# compressed bytes of the distinct blocks touched, from the V2.0 index.
cat > "$tmpdir/random.py" <<PY
import random, struct
exp = open("$tmpdir/in", "rb").read()
img = open("$tmpdir/www/img", "rb").read()
n = struct.unpack(">I", img[132:136])[0]
offs = [struct.unpack(">Q", img[136 + 8 * i:144 + 8 * i])[0] for i in range(n + 1)]
rng = random.Random(7)
blocks = rng.sample(range(0, n, 3), 30)
for b in blocks:
    off = b * 65536 + rng.randrange(0, 65536 - 4096)
    assert h.pread(4096, off) == exp[off:off + 4096], off
print("touched", sum(offs[b + 1] - offs[b] for b in blocks))
PY

set -- $(run serial-off "$tmpdir/serial.py" readahead=0); off_reqs=$1
set -- $(run serial-on "$tmpdir/serial.py"); on_reqs=$1
echo "serial sequential reads: $off_reqs requests without read-ahead, $on_reqs with"
[ "$on_reqs" -gt 0 ] && [ $((on_reqs * 4)) -le "$off_reqs" ] ||
    fail "read-ahead did not cut requests at least 4-fold ($off_reqs -> $on_reqs)"

set -- $(run random "$tmpdir/random.py"); rnd_bytes=$2
touched=$(sed -n 's/^touched //p' "$tmpdir/random.out")
# Start-up (probe + index) is part of the counter: subtract a cold
# start's traffic, measured with nbdinfo alone.
rm -rf "$tmpdir/cache"
nbdkit_cloop -U - -v -D cloop.stats=1 --run 'nbdsh -u "$uri" -c pass' \
    "$PLUGIN" url="$NGINX_URL/img" cache-dir="$tmpdir/cache" 2> "$tmpdir/open.err"
open_bytes=$(sed -n 's/.*http: [0-9]* requests, \([0-9]*\) bytes fetched.*/\1/p' \
    "$tmpdir/open.err" | sort -n | tail -n 1)
echo "random reads: fetched $((rnd_bytes - open_bytes)) bytes for $touched bytes of blocks touched"
[ $((rnd_bytes - open_bytes)) -le "$touched" ] ||
    fail "random reads fetched more than the blocks they touched"
