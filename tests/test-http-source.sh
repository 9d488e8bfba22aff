#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: run the C unit test of the HTTP source
# ($builddir/test-http-source) against real servers on 127.0.0.1: nginx
# (HTTP_URL/HTTP_FILE) and the fault server (FAULT_URL, FAULT_FILE,
# FAULT_CONTROL), which it needs to run at all.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

prog=$builddir/test-http-source
requires test -x "$prog"
requires test -f "$FAULTSERVER"

www=$tmpdir/www
mkdir -p "$www"
# Any bytes will do; the source reads them raw.  > 400000 bytes.
make_sample "$www/data" $((32 * 1024 * 1024))
# The same bytes under another name: a second origin (a mirror).
ln "$www/data" "$www/mirror"
start_nginx "$www"
start_faultserver "$www"
# Both behind a 300 ms, 2 MB/s link (the trains test: the reads queue
# while the first one goes out alone).
start_delayproxy "$NGINX_PORT" 300 --rate 2000000
slow_http=$PROXY_URL/data
start_delayproxy "$FAULT_PORT" 300 --rate 2000000
slow_fault=$PROXY_URL/data

rc=0
HTTP_URL=$NGINX_URL/data HTTP_FILE=$www/data \
FAULT_URL=$FAULT_URL/data FAULT_FILE=$www/data FAULT_CONTROL=$FAULT_FAULTS \
SLOW_HTTP_URL=$slow_http SLOW_FAULT_URL=$slow_fault \
    timeout 300 "$prog" > "$tmpdir/out" 2>&1 || rc=$?
cat "$tmpdir/out"
[ "$rc" -eq 0 ] || fail "test-http-source failed (exit $rc)"
grep -q 'fault server:' "$tmpdir/out" || fail "the fault tests did not run"
[ "$(grep -c '^.*trains: ' "$tmpdir/out")" -eq 3 ] ||
    fail "the trains tests did not run"
grep -q 'tails: ' "$tmpdir/out" || fail "the tails test did not run"
grep -q 'PASS' "$tmpdir/out" || fail "no PASS line"
echo "$0: ok (nginx $(nginx_request_count) requests," \
     "fault server $(fault_request_count) requests)"
