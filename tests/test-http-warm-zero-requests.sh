#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a warm start makes no HTTP request.  After one complete
# read through a fresh cache-dir, a second complete read (revalidate at
# its default, 600 s) is byte-exact and nginx logs 0 new requests (the
# plugin's own counter, -D cloop.stats=1, agrees); with revalidate=0
# exactly one (the start-up probe, a 206).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

make_served_image v2 5000000
start_nginx "$www"

run ()
{
    name=$1
    shift
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - -v -D cloop.stats=1 \
        --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$cache" "$@" \
        2> "$tmpdir/$name.err" || {
        cat "$tmpdir/$name.err"; fail "$name: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$name: wrong bytes"
}

run cold
n0=$(nginx_request_count)
[ "$n0" -gt 1 ] || fail "the cold run made $n0 requests"

run warm
n1=$(nginx_request_count)
echo "$0: cold run $n0 requests, warm run $((n1 - n0))"
[ "$n1" -eq "$n0" ] || {
    tail -n $((n1 - n0)) "$NGINX_LOG"
    fail "warm run made $((n1 - n0)) requests, expected 0"; }
grep -q 'http: 0 requests' "$tmpdir/warm.err" ||
    fail "warm run: cloop.stats does not show 0 requests"

run revalidate revalidate=0
n2=$(nginx_request_count)
echo "$0: revalidate=0 run: $((n2 - n1)) requests"
tail -n $((n2 - n1)) "$NGINX_LOG"
[ "$n2" -eq $((n1 + 1)) ] ||
    fail "revalidate=0 run made $((n2 - n1)) requests, expected 1"
tail -n1 "$NGINX_LOG" | grep -q '^206 ' || fail "the probe was not a 206"

# The revalidation refreshed the identity: trusted again, 0 requests.
run warm-again
n3=$(nginx_request_count)
[ "$n3" -eq "$n2" ] ||
    fail "run after revalidation made $((n3 - n2)) requests, expected 0"
echo "$0: ok"
