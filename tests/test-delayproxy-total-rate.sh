#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: tests/delayproxy.py --total-rate, the bandwidth cap
# shared by all connections (scripts/bench-boot's link).  Through nginx
# on 127.0.0.1 behind the proxy (--delay-ms 10 --total-rate R):
#   - two downloads of S bytes at once, each on its own connection, get
#     exactly the file's bytes and together take at least 2 S / R (the
#     cap holds for the sum, not per connection; a lower bound only,
#     which a busy machine cannot break);
#   - a small request on a third connection, sent while a long download
#     fills the link, is answered long before that download ends
#     (within half of its time; the shared buffer holds only --queue-ms
#     of data, so a newcomer waits behind that much, not behind the
#     whole backlog of another connection);
#   - a negative --total-rate or a --queue-ms of 0 is refused.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

rate=1000000                    # bytes/s
size=1000000
mkdir -p "$tmpdir/www"
head -c "$size" /dev/urandom > "$tmpdir/www/a"
head -c $((4 * size)) /dev/urandom > "$tmpdir/www/big"
echo small > "$tmpdir/www/small"
start_nginx "$tmpdir/www"
start_delayproxy "$NGINX_PORT" 10 --total-rate "$rate"

cat > "$tmpdir/get.py" <<'PY'
import hashlib, sys, threading, time, urllib.request
base, mode = sys.argv[1], sys.argv[2]
res = {}
def get(key, path, delay=0.0):
    time.sleep(delay)
    t0 = time.monotonic()
    data = urllib.request.urlopen(base + path, timeout=120).read()
    res[key] = (time.monotonic() - t0, time.monotonic(),
                hashlib.sha256(data).hexdigest())
if mode == "two":
    jobs = [("a1", "/a", 0.0), ("a2", "/a", 0.0)]
else:
    jobs = [("big", "/big", 0.0), ("small", "/small", 1.0)]
t0 = time.monotonic()
ts = [threading.Thread(target=get, args=j) for j in jobs]
for t in ts:
    t.start()
for t in ts:
    t.join()
for k, (secs, end, digest) in sorted(res.items()):
    print(k, "%.3f" % secs, "%.3f" % (end - t0), digest)
PY

/usr/bin/python3 "$tmpdir/get.py" "$PROXY_URL" two > "$tmpdir/two" ||
    fail "downloads through the proxy failed"
cat "$tmpdir/two"
want=$(sha256sum < "$tmpdir/www/a" | cut -d' ' -f1)
[ "$(awk -v w="$want" '$4 == w' "$tmpdir/two" | wc -l)" = 2 ] ||
    fail "a download through the proxy got the wrong bytes"
last=$(awk '{ print $3 }' "$tmpdir/two" | sort -g | tail -n 1)
awk -v t="$last" -v s="$size" -v r="$rate" 'BEGIN { exit !(t >= 0.95 * 2 * s / r) }' ||
    fail "two downloads of $size B finished in $last s: more than $rate B/s in total"

/usr/bin/python3 "$tmpdir/get.py" "$PROXY_URL" newcomer > "$tmpdir/newcomer" ||
    fail "downloads through the proxy failed"
cat "$tmpdir/newcomer"
read -r _ big_s _ big_digest < <(grep '^big ' "$tmpdir/newcomer")
read -r _ small_s _ _ < <(grep '^small ' "$tmpdir/newcomer")
[ "$big_digest" = "$(sha256sum < "$tmpdir/www/big" | cut -d' ' -f1)" ] ||
    fail "the long download got the wrong bytes"
awk -v b="$big_s" -v s="$size" -v r="$rate" 'BEGIN { exit !(b >= 0.95 * 4 * s / r) }' ||
    fail "the long download ($((4 * size)) B) took $big_s s: faster than the cap"
awk -v b="$big_s" -v s="$small_s" 'BEGIN { exit !(s < b / 2) }' ||
    fail "a request sent during a long download took $small_s s (the download $big_s s)"

for bad in "--total-rate -5" "--total-rate 1000 --queue-ms 0"; do
    # shellcheck disable=SC2086  # two words each
    if /usr/bin/python3 "$DELAYPROXY" --listen-port-file "$tmpdir/p" \
        --target "127.0.0.1:$NGINX_PORT" --delay-ms 1 $bad 2> "$tmpdir/bad.err"; then
        fail "delayproxy accepted $bad"
    fi
    grep -q 'must be positive' "$tmpdir/bad.err" ||
        { cat "$tmpdir/bad.err"; fail "delayproxy $bad: no clear error"; }
done
echo "$0: ok"
