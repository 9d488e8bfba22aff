#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: 50 kill -9s at random moments while three nbdkit
# processes fill one shared disk cache never leave a torn or wrong
# entry.  Three slots each run nbdkit (url= on the fault server, which
# dribbles every reply, so the fill is far from done when the kills
# land) with an nbdcopy of the whole export; 50 times a random slot's
# nbdkit is killed with SIGKILL after a random 0-0.4 s and restarted.
# Then: no process logged a disk-cache complaint (a torn entry would be
# found corrupt by the others); one complete run with the server clean
# gives the exact bytes without a complaint and leaves no temporary
# file; and, the server stopped, an offline run gives the exact bytes
# from the cache alone.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

KILLS=50 SLOTS=3
make_served_image v2 16000000
start_faultserver "$www"
set_fault '{"fault":"slow","rate":50000}'

# start_slot N: nbdkit + an nbdcopy of the whole export in slot N.
start_slot ()
{
    sock=$tmpdir/sock.$1 pidf=$tmpdir/pid.$1
    rm -f "$sock" "$pidf"
    nbdkit_cloop -f -U "$sock" -P "$pidf" "$PLUGIN" url="$FAULT_URL/img" \
        cache-dir="$cache" connections=2 timeout=60 \
        2>> "$tmpdir/slot.$1.err" &
    n=0
    while [ ! -S "$sock" ] || [ ! -s "$pidf" ]; do
        [ $n -lt 300 ] || { cat "$tmpdir/slot.$1.err"; fail "slot $1: nbdkit did not start"; }
        sleep 0.05
        n=$((n + 1))
    done
    eval "pid_$1=\$(cat \"\$pidf\")"
    nbdcopy "nbd+unix:///?socket=$sock" null: 2>/dev/null &
    eval "copy_$1=\$!"
}
stop_slots ()
{
    for s in $(seq 1 $SLOTS); do
        eval "p=\${pid_$s:-}"
        [ -z "$p" ] || kill -9 "$p" 2>/dev/null || true
    done
}
cleanup_fn stop_slots

for s in $(seq 1 $SLOTS); do start_slot "$s"; done
killed_mid=0
for i in $(seq 1 $KILLS); do
    read -r s delay <<EOF2
$(/usr/bin/python3 -c "import random; print(random.randint(1, $SLOTS), random.uniform(0, 0.4))")
EOF2
    sleep "$delay"
    eval "p=\$pid_$s c=\$copy_$s"
    if kill -0 "$c" 2>/dev/null; then killed_mid=$((killed_mid + 1)); fi
    kill -9 "$p"
    wait "$c" 2>/dev/null || true
    start_slot "$s"
done
stop_slots
wait 2>/dev/null || true
entries=$(find "$cache/obj" -type f ! -name '.tmp-*' | wc -l)
echo "$0: $KILLS kills ($killed_mid while nbdcopy was running), $entries" \
     "entries in the cache, $(fault_request_count) requests"
[ "$killed_mid" -ge $((KILLS / 2)) ] ||
    fail "only $killed_mid kills landed while copying"
if grep -h 'disk cache' "$tmpdir"/slot.*.err; then
    fail "a process complained about the disk cache during the kills"
fi

# A complete run with the server clean.
clear_faults
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$FAULT_URL/img" cache-dir="$cache" 2> "$tmpdir/full.err" || {
    cat "$tmpdir/full.err"; fail "the complete run failed"; }
cmp "$tmpdir/out" "$tmpdir/expected" || fail "complete run: wrong bytes"
if grep 'disk cache' "$tmpdir/full.err"; then
    fail "the disk cache complained after the kills"
fi
left=$(find "$cache" -name '.tmp-*')
[ -z "$left" ] || fail "temporary files survived: $left"

# Offline: the server stopped.
_ws_stop "$FAULT_PID"
port_closed "$FAULT_PORT" || fail "the server is still up"
rm -f "$tmpdir/out"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$FAULT_URL/img" cache-dir="$cache" revalidate=0 \
    timeout=10 2> "$tmpdir/offline.err" || {
    cat "$tmpdir/offline.err"; fail "the offline run failed"; }
cmp "$tmpdir/out" "$tmpdir/expected" || fail "offline run: wrong bytes"
echo "$0: ok"
