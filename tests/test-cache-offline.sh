#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a fully warm cache serves the image with the server
# gone.  After one complete read, nginx is stopped (its port checked
# closed), then the whole image must read back byte-exact:
#  - with revalidate= at its default (the cached identity is trusted:
#    nbdkit starts without asking the server at all);
#  - with revalidate=0 (it asks, cannot reach the server, and falls
#    back to the cached copy with a "without the server" warning).
# A cold cache with the server stopped must stop nbdkit with an error
# naming the URL, quickly, and serve nothing.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

make_served_image v4-footer 3000001
start_nginx "$www"
url=$NGINX_URL/img

# read_all NAME [ARGS]: whole export through cache-dir, compared.
read_all ()
{
    name=$1
    shift
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$url" cache-dir="$cache" timeout=10 "$@" \
        2> "$tmpdir/$name.err" || {
        cat "$tmpdir/$name.err"; fail "$name: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$name: wrong bytes"
}

read_all warm
[ "$(nginx_request_count)" -gt 0 ] || fail "the warm-up made no request"

_ws_stop "$NGINX_PID"
port_closed "$NGINX_PORT" || fail "nginx is still up"

read_all offline-trusted
if grep -q 'warning' "$tmpdir/offline-trusted.err"; then
    cat "$tmpdir/offline-trusted.err"
    fail "offline-trusted: a warning, though the identity is trusted"
fi
echo "$0: ok: offline, identity trusted (revalidate default): exact"

start=$(date +%s)
read_all offline-revalidate revalidate=0
grep 'without the server' "$tmpdir/offline-revalidate.err" || {
    cat "$tmpdir/offline-revalidate.err"
    fail "revalidate=0 offline: no 'without the server' warning"; }
echo "$0: ok: offline, revalidate=0: exact, in $(( $(date +%s) - start )) s"

# Cold cache, server down: refused, with the URL in the message.
start=$(date +%s)
rc=0
nbdkit_cloop -U - --run 'nbdcopy "$uri" /dev/null' \
    "$PLUGIN" url="$url" cache-dir="$tmpdir/cold" timeout=10 \
    > "$tmpdir/cold.out" 2> "$tmpdir/cold.err" || rc=$?
secs=$(( $(date +%s) - start ))
cat "$tmpdir/cold.err"
[ "$rc" -ne 0 ] || fail "cold cache, server down: nbdkit served"
grep -q "error.*$url" "$tmpdir/cold.err" ||
    fail "cold cache, server down: the error does not name the URL"
grep -Eqi 'connect|refused' "$tmpdir/cold.err" ||
    fail "cold cache, server down: the error does not say why"
[ "$secs" -le 12 ] || fail "cold cache, server down: took $secs s"
echo "$0: ok: cold cache, server down: refused in $secs s"
