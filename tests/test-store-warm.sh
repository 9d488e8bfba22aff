#!/usr/bin/env bash
# nbdkit-cloop: cloop-store warm fills a disk cache ahead of time.
# A cloop file and a signed block store are served by nginx on
# 127.0.0.1 and warmed into one cache directory (a second warm fetches
# nothing); nginx is then stopped (its port checked closed) and the
# plugin, with the same url= and cache-dir=, must read both images
# whole and byte-exact: with the server gone, every byte came from what
# warm cached, under the keys the plugin uses.

. "${srcdir:-$(dirname "$0")}/functions.sh"
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

echo "$0: all cases passed"
