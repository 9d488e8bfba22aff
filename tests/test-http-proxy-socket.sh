#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: url= reached through unix-socket-path= and through an
# HTTP proxy (proxy=), against nginx.  nginx serves the image on a Unix
# socket, and a second nginx server on 127.0.0.1 forwards every request
# it gets to that socket (a proxy for exactly one origin).
#   - unix-socket-path=: byte-exact, and every request arrived on the
#     socket (none on the TCP server);
#   - proxy=: the URL names a port nobody listens on, so only a request
#     sent to the proxy can succeed: byte-exact, and the proxy logged
#     the requests, with the absolute URL curl sends to a proxy.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

# Only the proxy this test names.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

make_served_image v4 700000
sock=$tmpdir/web.sock
unix_log=$tmpdir/unix-access.log
proxy_log=$tmpdir/proxy-access.log
proxy_port=$(_ws_free_port)
dead_port=$(_ws_free_port)
while [ "$dead_port" = "$proxy_port" ]; do
    dead_port=$(_ws_free_port)
done
NGINX_EXTRA_CONF="
    server {
        listen unix:$sock;
        access_log $unix_log cloop;
        root \"$www\";
        location / { }
    }
    server {
        listen 127.0.0.1:$proxy_port;
        access_log $proxy_log cloop;
        location / {
            proxy_pass http://unix:$sock:;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
start_nginx "$www"
requests_in () { grep -c '^206 ' "$1" || true; }

# 1. unix-socket-path=: the host in the URL is only the Host header.
tcp_before=$(nginx_request_count)
rm -f "$tmpdir/out.raw"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out.raw\"" \
    "$PLUGIN" url="http://localhost/img" unix-socket-path="$sock" \
    2> "$tmpdir/unix.err" || { cat "$tmpdir/unix.err"; fail "read over the Unix socket failed"; }
cmp "$tmpdir/out.raw" "$tmpdir/expected" || fail "export over the Unix socket differs"
n_unix=$(requests_in "$unix_log")
[ "$n_unix" -ge 1 ] || fail "no range request reached the Unix socket"
[ "$(nginx_request_count)" = "$tcp_before" ] ||
    fail "requests reached the TCP server despite unix-socket-path="
echo "unix-socket-path: byte-exact, $n_unix range requests on the socket"

# 2. proxy=: the origin port is closed; only the proxy can answer.
: > "$unix_log"
rm -f "$tmpdir/out.raw"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out.raw\"" \
    "$PLUGIN" url="http://127.0.0.1:$dead_port/img" \
    proxy="http://127.0.0.1:$proxy_port" \
    2> "$tmpdir/proxy.err" || { cat "$tmpdir/proxy.err"; fail "read through the proxy failed"; }
cmp "$tmpdir/out.raw" "$tmpdir/expected" || fail "export through the proxy differs"
n_proxy=$(requests_in "$proxy_log")
[ "$n_proxy" -ge 1 ] || fail "the proxy logged no range request"
grep -q "\"GET http://127.0.0.1:$dead_port/img HTTP/1.1\"" "$proxy_log" ||
    { cat "$proxy_log"; fail "the proxy did not see the absolute URL of the image"; }
[ "$(requests_in "$unix_log")" = "$n_proxy" ] ||
    fail "the proxy forwarded $(requests_in "$unix_log") of $n_proxy range requests"
echo "proxy: byte-exact, $n_proxy range requests through the proxy"

# 3. Without the proxy the same URL fails cleanly (the port is closed).
# No disk cache: run 2 cached this URL's identity, which would let it
# start offline.
if nbdkit_cloop -U - --run true "$PLUGIN" url="http://127.0.0.1:$dead_port/img" \
        cache-dir=none retries=0 timeout=5 2> "$tmpdir/direct.err"; then
    fail "the closed origin port answered: the proxy check proves nothing"
fi
echo "direct: refused as expected: $(head -n1 "$tmpdir/direct.err")"
