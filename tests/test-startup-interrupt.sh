#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: SIGINT or SIGTERM while nbdkit opens a url= image whose
# server never answers stops it at once with one clear message.
#
# A listener on 127.0.0.1 accepts connections, writes one line per
# connection to a file and never answers.  nbdkit is started in the
# background by this (non-interactive) shell, so it inherits SIGINT as
# ignored, as from any script: before the fix SIGINT was then ignored
# until timeout= (30 s) ran out, and SIGTERM killed nbdkit without a
# word.  Once the listener has accepted the start-up probe's connection:
#  - SIGINT (nbdkit -f -U SOCK): nbdkit exits within 10 s, with status
#    1 (not killed by the signal), printing
#    "interrupted by SIGINT while opening URL" once and no other error;
#  - SIGTERM (nbdkit -U SOCK, which would fork once serving): the same,
#    "interrupted by SIGTERM";
#  - neither leaves a temporary file in the disk cache or state
#    directory, nor the state directory's lock held.
# Then with a cached identity (warmed from a fault server that delays
# its replies by 1.5 s: a slow server still opens) and revalidate=0, a
# silent server on the same port and SIGINT: the same message, and no
# fall-back to serving the cache without the server.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version
requires flock --version
requires test -f "$FAULTSERVER"

state=$tmpdir/state
acc=$tmpdir/accepted

# start_silent PORT: a listener on 127.0.0.1:PORT (0: a free port) that
# never answers; sets SILENT_PORT and SILENT_PID.
start_silent ()
{
    rm -f "$acc" "$tmpdir/silent-port"
    _ws_spawn "$tmpdir/silent.err" /usr/bin/python3 -c '
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
port_file, acc = sys.argv[2], sys.argv[3]
open(port_file + ".tmp", "w").write("%d\n" % s.getsockname()[1])
os.rename(port_file + ".tmp", port_file)
held = []
while True:
    c, _ = s.accept()
    held.append(c)                  # kept open, never answered
    with open(acc, "a") as f:
        f.write("accepted\n")' "$1" "$tmpdir/silent-port" "$acc"
    SILENT_PID=$_ws_pid
    n=0
    while [ ! -s "$tmpdir/silent-port" ]; do
        [ $n -lt 200 ] || fail "the silent listener did not start"
        sleep 0.05
        n=$((n + 1))
    done
    SILENT_PORT=$(cat "$tmpdir/silent-port")
}

# interrupt SIGNAL LOG NBDKIT-ARGS...: start nbdkit in the background,
# wait until the listener has accepted its connection, send SIGNAL, and
# check that nbdkit exits within 10 s with status 1 and the message.
interrupt ()
{
    sig=$1 log=$2
    shift 2
    rm -f "$acc"
    # nbdkit itself, not nbdkit_cloop: a shell function in the
    # background is a subshell, and the signal must reach nbdkit.
    nbdkit "$@" 2> "$log" &
    pid=$!
    cleanup_fn "kill -KILL $pid 2>/dev/null"
    n=0
    until [ -s "$acc" ]; do
        kill -0 "$pid" 2>/dev/null ||
            { cat "$log"; fail "$sig: nbdkit exited before connecting"; }
        [ $n -lt 400 ] || { cat "$log"; fail "$sig: no connection in 20 s"; }
        sleep 0.05
        n=$((n + 1))
    done
    start=$(date +%s%N)
    kill "-$sig" "$pid"
    n=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $n -ge 100 ]; then
            kill -KILL "$pid"
            cat "$log"
            fail "$sig: nbdkit still running 10 s after the signal"
        fi
        sleep 0.1
        n=$((n + 1))
    done
    status=0
    wait "$pid" || status=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "$0: $sig: nbdkit exited with status $status after $ms ms"
    [ "$status" -eq 1 ] ||
        { cat "$log"; fail "$sig: exit status $status, not 1"; }
    grep -q "^nbdkit: error: interrupted by SIG$sig while opening $url\$" \
        "$log" || { cat "$log"; fail "$sig: no 'interrupted' message"; }
    errors=$(grep -c 'error' "$log" || true)
    [ "$errors" -eq 1 ] || { cat "$log"; fail "$sig: $errors error lines"; }
    if grep -q 'warning' "$log"; then
        cat "$log"
        fail "$sig: a warning"
    fi
}

# no_leftovers: no temporary files, and nobody holds the state lock.
no_leftovers ()
{
    left=$(find "$cache" "$state" -name '.tmp-*' 2>/dev/null)
    [ -z "$left" ] || fail "temporary files left behind: $left"
    if [ -e "$state/.lock" ]; then
        flock -n "$state/.lock" true || fail "the state directory is locked"
    fi
}

make_served_image v4-footer $((40 * 65536))

start_silent 0
url=http://127.0.0.1:$SILENT_PORT/img
interrupt INT "$tmpdir/int.err" -f -U "$tmpdir/sock" "$PLUGIN" url="$url" \
    cache-dir="$cache" state-dir="$state"
no_leftovers
interrupt TERM "$tmpdir/term.err" -U "$tmpdir/sock" -P "$tmpdir/pid" \
    "$PLUGIN" url="$url" cache-dir="$cache" state-dir="$state"
no_leftovers
[ ! -e "$tmpdir/pid" ] || fail "TERM: nbdkit wrote its pid file"
_ws_stop "$SILENT_PID"

# A cached identity, from a slow but working server.
start_faultserver "$www"
port=$FAULT_PORT
url=$FAULT_URL/img
set_fault '{"fault": "delay", "ms": 1500}'
nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
want = open(\"$tmpdir/expected\", \"rb\").read()
assert h.pread(65536, 0) == want[:65536]
'" "$PLUGIN" url="$url" cache-dir="$cache" state-dir="$state" readahead=0 \
    2> "$tmpdir/warm.err" || { cat "$tmpdir/warm.err"; fail "warm-up failed"; }
[ "$(fault_fired_count delay)" -ge 1 ] || fail "the server was not slow"
_ws_stop "$FAULT_PID"
port_closed "$port" || fail "the fault server is still up"

start_silent "$port"
interrupt INT "$tmpdir/cached.err" -f -U "$tmpdir/sock" "$PLUGIN" \
    url="$url" cache-dir="$cache" state-dir="$state" revalidate=0
no_leftovers
echo "$0: ok"
