#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: each client has its own sequential-read detector.  Two
# clients read one remote export sequentially, one 64 KiB block at a
# time, in turns (A, B, A, B, ...), from two regions of the image.  With
# one detector for the whole export every read would look random to it
# and fetch only its own block (about one request per read); with one
# per client both get read-ahead, so the whole exercise takes far fewer
# requests than reads.  Every byte is compared.  The server is behind a
# 20 ms delay proxy: on bare loopback a window of 4 blocks already
# arrives before the client asks, so it would not grow (read-ahead runs
# in the background), and its many small top-ups would blur the count.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

make_served_image v2 $((8 * 1024 * 1024))
start_nginx "$www"
start_delayproxy "$NGINX_PORT" 20

cat > "$tmpdir/clients.py" <<'PY'
import nbd, sys
sock, expected = sys.argv[1], open(sys.argv[2], "rb").read()
BS, READS = 65536, 40
a, b = nbd.NBD(), nbd.NBD()
a.connect_unix(sock)
b.connect_unix(sock)
for i in range(READS):
    for h, base in ((a, 0), (b, 64)):
        off = (base + i) * BS
        assert h.pread(BS, off) == expected[off:off + BS], (base, i)
a.shutdown()
b.shutdown()
print("reads:", 2 * READS)
PY

n0=$(nginx_request_count)
nbdkit_cloop -U - --run "/usr/bin/python3 $tmpdir/clients.py \$unixsocket $tmpdir/expected" \
    "$PLUGIN" url="$PROXY_URL/img" cache-dir=none 2> "$tmpdir/err" || {
    cat "$tmpdir/err"; fail "the clients failed"; }
requests=$(( $(nginx_request_count) - n0 ))
echo "$0: 80 interleaved sequential reads by two clients took $requests requests"
# Per client: a window of 4 blocks that doubles while reads wait covers
# its 40 reads in about 5 to 10 requests; the probe and the index add
# two or three.
[ "$requests" -le 30 ] ||
    fail "$requests requests for 80 reads: the clients reset each other's read-ahead"
