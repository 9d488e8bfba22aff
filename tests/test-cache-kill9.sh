#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: kill -9 of nbdkit while it fills a shared disk cache
# never leaves a torn or wrong entry.  25 times: start nbdkit on the
# fault server (a small delay on every request, so that the kill lands
# mid-fill), copy the whole export with nbdcopy, and kill -9 nbdkit at a
# random moment.  Then one complete run with the server up must give
# the exact bytes and leave no temporary file (stale ones of dead pids
# are removed when the cache is opened); then, with the server stopped,
# an offline run (revalidate=0: the probe fails, the cached identity is
# used, with a warning) must give the exact bytes from the cache alone.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires test -f "$FAULTSERVER"

ITER=25
www=$tmpdir/www
cache=$tmpdir/cache
mkdir -p "$www"
# About 9 MB compressed; at 1 MB/s through one connection the kills
# all land before the cache is complete.
make_sample "$tmpdir/in" 24000000
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/in" "$www/img" || fail "mkcloop failed"
pad_to_block "$tmpdir/in" 65536 "$tmpdir/expected"

start_faultserver "$www"
set_fault '{"fault":"slow","rate":1000000}'

killed_mid=0
for i in $(seq 1 $ITER); do
    sock=$tmpdir/sock.$i pidf=$tmpdir/pid.$i
    nbdkit_cloop -f -U "$sock" -P "$pidf" "$PLUGIN" url="$FAULT_URL/img" \
        cache-dir="$cache" connections=1 timeout=20 \
        2>> "$tmpdir/kill.err" &
    bgpid=$!
    n=0
    while [ ! -S "$sock" ] || [ ! -s "$pidf" ]; do
        kill -0 $bgpid 2>/dev/null || {
            cat "$tmpdir/kill.err"; fail "iteration $i: nbdkit did not start"; }
        [ $n -lt 200 ] || fail "iteration $i: no socket after 10 s"
        sleep 0.05
        n=$((n + 1))
    done
    pid=$(cat "$pidf")
    nbdcopy "nbd+unix:///?socket=$sock" "$tmpdir/out.$i" 2>/dev/null &
    copypid=$!
    sleep "$(/usr/bin/python3 -c 'import random; print(random.uniform(0, 0.5))')"
    if kill -0 $copypid 2>/dev/null; then
        killed_mid=$((killed_mid + 1))
    fi
    kill -9 "$pid"
    wait $bgpid 2>/dev/null || true
    wait $copypid 2>/dev/null || true
    rm -f "$tmpdir/out.$i"
done
entries=$(find "$cache/obj" -type f ! -name '.tmp-*' | wc -l)
tmps=$(find "$cache" -name '.tmp-*' | wc -l)
echo "$0: $ITER kills ($killed_mid while nbdcopy was running);" \
     "$entries entries and $tmps temporary files in the cache"
[ "$killed_mid" -ge $((ITER / 2)) ] ||
    fail "only $killed_mid kills landed while copying"

# Also plant what a writer killed between create and rename leaves: a
# temporary file named after a pid that is now dead (the last nbdkit).
objdir=$(find "$cache/obj" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -n "$objdir" ] || fail "no obj/ directory in the cache"
dead=$pid
kill -0 "$dead" 2>/dev/null && fail "pid $dead is still alive"
head -c 5000 /dev/urandom > "$objdir/.tmp-$dead-$dead-7"
head -c 100 /dev/urandom > "$cache/.tmp-$dead-$dead-8"

# A complete run with the server up.
clear_faults
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$FAULT_URL/img" cache-dir="$cache" 2> "$tmpdir/full.err" || {
    cat "$tmpdir/full.err"; fail "the complete run failed"; }
cmp "$tmpdir/out" "$tmpdir/expected" || fail "complete run: wrong bytes"
if grep -q 'disk cache' "$tmpdir/full.err"; then
    # A torn entry would show as a corrupt one; there must be none.
    cat "$tmpdir/full.err"
    fail "the disk cache complained after the kills"
fi
left=$(find "$cache" -name '.tmp-*')
[ -z "$left" ] || fail "temporary files survived: $left"

# Offline: the server stopped, its port closed.
_ws_stop "$FAULT_PID"
port_closed "$FAULT_PORT" || fail "the server is still up"
rm -f "$tmpdir/out"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$FAULT_URL/img" cache-dir="$cache" revalidate=0 \
    timeout=10 2> "$tmpdir/offline.err" || {
    cat "$tmpdir/offline.err"; fail "the offline run failed"; }
cmp "$tmpdir/out" "$tmpdir/expected" || fail "offline run: wrong bytes"
grep -q 'without the server' "$tmpdir/offline.err" || {
    cat "$tmpdir/offline.err"; fail "no offline warning"; }
grep 'without the server' "$tmpdir/offline.err"
echo "$0: ok"
