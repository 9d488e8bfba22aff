#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: clock jumps (faketime) against the two time-dependent
# behaviours, the trusted identity of a remote image (revalidate=) and
# the expiry of a block-store index.
#
# revalidate=600, image on nginx, one cache-dir:
#   - now: a warm start asks nothing (0 requests);
#   - clock +2 h: past revalidate, one probe, no block refetched, exact;
#   - clock -1 day (before the identity was checked): not trusted, one
#     probe, exact;
#   - the image replaced on the server, clock now: the identity is
#     still trusted, and the old image is served wholly from the cache
#     (exact old bytes, 0 requests); clock +2 h: probed, the new image
#     is served exactly;
# a store index that expires in an hour:
#   - now: exact; clock +2 h: refused with an "expired" error online,
#     and refused with the server stopped (cached index); clock back to
#     now after that, server stopped: exact from the cache (the refusal
#     did not spoil the cache).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires_plugin_tools
requires faketime -f +0 true
requires test -x "$CLOOP_STORE"

make_served_image v2 2000000
cp "$tmpdir/expected" "$tmpdir/expected.old"
start_nginx "$www"
# faketime fakes CLOCK_REALTIME (time(), file times); monotonic clocks
# (timeouts) stay real.  libfaketime 0.9.10's "monotonic fix" would
# then shift the deadlines of pthread_cond_timedwait on CLOCK_MONOTONIC
# by the fake offset (a wait of 1 s returns at once at +2 h): off.
export FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_FORCE_MONOTONIC_FIX=0

# run LABEL EXPECTED FAKE [ARGS]: read the whole export at clock offset
# FAKE ("+0", "+2h", "-1d") and compare; sets req (requests it made).
run ()
{
    label=$1 exp=$2 fake=$3
    shift 3
    n0=$(nginx_request_count)
    rm -f "$tmpdir/out"
    faketime -f "$fake" nbdkit -U - \
        --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$cache" revalidate=600 \
        "$@" 2> "$tmpdir/$label.err" || {
        cat "$tmpdir/$label.err"; fail "$label: nbdkit failed"; }
    cmp "$tmpdir/out" "$exp" || fail "$label: wrong bytes"
    req=$(( $(nginx_request_count) - n0 ))
    echo "$label (clock $fake): exact, $req requests"
}

run cold "$tmpdir/expected" +0
[ "$req" -gt 1 ] || fail "cold: only $req requests"
run warm "$tmpdir/expected" +0
[ "$req" -eq 0 ] || fail "warm: $req requests, expected 0"
run later "$tmpdir/expected" +2h
[ "$req" -eq 1 ] || fail "+2 h: $req requests, expected 1 (the probe)"
run earlier "$tmpdir/expected" -1d
[ "$req" -eq 1 ] || fail "-1 day: $req requests, expected 1 (the probe)"
# The probe at -1 day recorded that time, a day before now: probed again.
run now "$tmpdir/expected" +0
[ "$req" -eq 1 ] || fail "now: $req requests, expected 1 (the probe)"

# Replace the image on the server.
make_sample "$tmpdir/in2" 1990000
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/in2" "$www/img.new" || fail "mkcloop"
pad_to_block "$tmpdir/in2" 65536 "$tmpdir/expected.new"
touch -d '1 minute' "$www/img.new"
mv "$www/img.new" "$www/img"
cmp -s "$tmpdir/expected.old" "$tmpdir/expected.new" && fail "same image"
run trusted "$tmpdir/expected.old" +0
[ "$req" -eq 0 ] || fail "trusted old identity: $req requests, expected 0"
run replaced "$tmpdir/expected.new" +2h
[ "$req" -gt 1 ] || fail "+2 h after the replacement: $req requests"

# A store index that expires in an hour.
make_sample "$tmpdir/raw" 700000
"$CLOOP_STORE" keygen "$tmpdir/key.pem" "$tmpdir/key.pub" > /dev/null
"$CLOOP_STORE" create -q -B 65536 -n clock -k "$tmpdir/key.pem" \
    --expires 3600 "$tmpdir/raw" "$www/store" || fail "cloop-store create"
scache=$tmpdir/scache
store_run ()
{
    label=$1 fake=$2
    rm -f "$tmpdir/out"
    faketime -f "$fake" nbdkit -U - \
        --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/store/index" pubkey="$tmpdir/key.pub" \
        cache-dir="$scache" revalidate=0 timeout=10 \
        2> "$tmpdir/$label.err"
}
store_run store-now +0 || { cat "$tmpdir/store-now.err"; fail "store now"; }
cmp "$tmpdir/out" "$tmpdir/raw" || fail "store now: wrong bytes"
store_run store-later +2h &&
    fail "store +2 h: an expired index was served"
grep -q 'expired' "$tmpdir/store-later.err" || {
    cat "$tmpdir/store-later.err"; fail "store +2 h: no 'expired' error"; }
grep 'expired' "$tmpdir/store-later.err"
_ws_stop "$NGINX_PID"
port_closed "$NGINX_PORT" || fail "nginx is still up"
store_run store-later-offline +2h &&
    fail "store +2 h offline: an expired cached index was served"
# (The message is not "expired" today: the expired index is retried
# with a fresh signature file, which an offline source cannot fetch, so
# it says "index is not signed: cannot read its signature file".)
grep -E 'expired|not signed' "$tmpdir/store-later-offline.err" || {
    cat "$tmpdir/store-later-offline.err"; fail "offline +2 h: no refusal message"; }
store_run store-offline +0 || {
    cat "$tmpdir/store-offline.err"; fail "store offline now: failed"; }
cmp "$tmpdir/out" "$tmpdir/raw" || fail "store offline now: wrong bytes"
echo "$0: ok"
