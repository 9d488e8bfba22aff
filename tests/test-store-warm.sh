#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: cloop-store warm fills a disk cache ahead of time.
# A cloop file and a signed block store are served by nginx on
# 127.0.0.1 and warmed into one cache directory (a second warm fetches
# nothing); nginx is then stopped (its port checked closed) and the
# plugin, with the same url= and cache-dir=, must read both images
# whole and byte-exact: with the server gone, every byte came from what
# warm cached, under the keys the plugin uses.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires_plugin_tools
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE

make_served_image v4-footer 3000001
cd "$tmpdir"
"$CS" keygen k.pem k.pub > /dev/null || fail "keygen"
make_sample raw.img 2000001
"$CS" create -q -B 64K -k k.pem -n warm-store raw.img "$www/store" ||
    fail "create store"
start_nginx "$www"
img_url=$NGINX_URL/img
store_url=$NGINX_URL/store/index

"$CS" warm -j 4 --progress "$img_url" "$cache" > warm1.txt 2> warm1.err ||
    fail "warm cloop file: $(cat warm1.err)"
cat warm1.txt
grep -q '100.0% .*MiB/s' warm1.err || fail "no progress: $(cat warm1.err)"
grep -Eq 'entries: [1-9][0-9]* written, 0 already there' warm1.txt ||
    fail "warm of a cloop file fetched nothing: $(cat warm1.txt)"
"$CS" warm -k k.pub "$store_url" "$cache" > warm2.txt || fail "warm store"
cat warm2.txt
grep -Eq 'entries: [1-9][0-9]* written' warm2.txt ||
    fail "warm of a store fetched nothing: $(cat warm2.txt)"
# A second warm reads every block from the cache: it only asks the
# server whether the image changed (its identity, rewritten).
before=$(nginx_request_count)
"$CS" warm "$img_url" "$cache" > warm3.txt || fail "second warm"
cat warm3.txt
asked=$(( $(nginx_request_count) - before ))
echo "second warm: $asked requests"
[ "$asked" -le 2 ] || fail "a second warm made $asked requests"
grep -Eq 'entries: [01] written, [1-9][0-9]* already there' warm3.txt ||
    fail "a second warm fetched again: $(cat warm3.txt)"

# Trust is the plugin's: a store without a key or pin is refused.
rc=0
"$CS" warm "$store_url" "$tmpdir/untrusted" > out.txt 2> err.txt || rc=$?
[ "$rc" -eq 1 ] && grep -q "$store_url" err.txt ||
    fail "warm of an untrusted store: exit $rc: $(cat err.txt)"
rc=0
"$CS" warm "$NGINX_URL/nothere" "$tmpdir/missing" > out.txt 2> err.txt ||
    rc=$?
[ "$rc" -eq 1 ] && grep -q "nothere" err.txt ||
    fail "warm of a missing URL: exit $rc: $(cat err.txt)"

_ws_stop "$NGINX_PID"
port_closed "$NGINX_PORT" || fail "nginx is still up"

# read URL EXPECTED NAME [ARGS]: the whole export, server gone.
read_offline ()
{
    rm -f out
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out' \
        "$PLUGIN" url="$1" cache-dir="$cache" timeout=5 "${@:4}" \
        2> "$3.err" || { cat "$3.err"; fail "$3: nbdkit failed"; }
    cmp out "$2" || fail "$3: wrong bytes"
    echo "ok: $3: read whole and exact without the server"
}
read_offline "$img_url" expected cloop-file
read_offline "$store_url" raw.img store pubkey=k.pub

# --- cloop-store cache verify / gc on the warmed cache ------------------
"$CS" cache verify "$cache" > v1.txt || fail "verify of a good cache: $(cat v1.txt)"
cat v1.txt
grep -Eq ': [1-9][0-9]* entries checked, 0 bad$' v1.txt || fail "verify: $(cat v1.txt)"

# One payload byte flipped: found, named, exit 1; --repair deletes it.
victim=$(cd "$cache" && find obj -type f ! -name '.*' | sort | head -1)
[ -n "$victim" ] || fail "no obj/ entry in the cache"
/usr/bin/python3 - "$cache/$victim" <<'PY'
import sys
f = open(sys.argv[1], "r+b"); f.seek(-1, 2); b = f.read(1)
f.seek(-1, 2); f.write(bytes([b[0] ^ 1])); f.close()
PY
rc=0; "$CS" cache verify "$cache" > v2.txt || rc=$?
cat v2.txt
[ "$rc" -eq 1 ] || fail "verify of a flipped byte: exit $rc"
grep -Eq ' 1 bad$' v2.txt && grep -q "^bad: $cache/$victim: checksum mismatch" v2.txt ||
    fail "verify did not name the bad entry: $(cat v2.txt)"
[ -f "$cache/$victim" ] || fail "verify without --repair deleted the entry"
rc=0; "$CS" cache verify --repair "$cache" > v3.txt || rc=$?
[ "$rc" -eq 1 ] && [ ! -e "$cache/$victim" ] ||
    fail "verify --repair: exit $rc, entry still there: $(cat v3.txt)"
"$CS" cache verify "$cache" > v4.txt || fail "verify after --repair: $(cat v4.txt)"
rc=0; "$CS" cache verify "$tmpdir/nocache" > out.txt 2> err.txt || rc=$?
[ "$rc" -eq 1 ] && [ ! -e "$tmpdir/nocache" ] && grep -q 'not a disk cache' err.txt ||
    fail "verify of a missing directory: exit $rc: $(cat err.txt)"

# gc: a temporary file left by a killed writer goes; --max-size evicts
# down to at most that (accounted as the cache does: 4 KiB units).
accounted ()
{
    /usr/bin/python3 - "$1" <<'PY'
import os, sys
t = 0
for ns in ("obj", "blk", "url"):
    for d, _, fs in os.walk(os.path.join(sys.argv[1], ns)):
        for f in fs:
            t += (os.path.getsize(os.path.join(d, f)) + 4095) // 4096 * 4096
print(t)
PY
}
leftover=$cache/url/.tmp-999999-1-1
echo partial > "$leftover"
touch -d '2 hours ago' "$leftover"
"$CS" cache gc "$cache" > g1.txt || fail "gc: $(cat g1.txt)"
cat g1.txt
[ ! -e "$leftover" ] || fail "gc left a stale temporary file"
size=$(accounted "$cache")
half=$((size / 2))
"$CS" cache gc --max-size "$half" "$cache" > g2.txt || fail "gc --max-size"
cat g2.txt
grep -Eq '[1-9][0-9]* entries evicted' g2.txt || fail "gc evicted nothing"
after=$(accounted "$cache")
echo "gc: $size -> $after bytes (bound $half)"
[ "$after" -le "$half" ] || fail "gc left $after bytes, above $half"
"$CS" cache verify "$cache" > v5.txt || fail "verify after gc: $(cat v5.txt)"

echo "$0: all cases passed"
