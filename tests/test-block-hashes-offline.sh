#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a block-hash list given by URL is kept in the disk cache
# with its signature, so that a warm start with the server gone still
# checks every block: after one read through nginx (signed list, then
# pinned list), nginx is stopped and the image must read back
# byte-exact with a warning naming the list and "disk cache"; the
# cached list is still held to the key (another key is refused) and to
# the pin (another pin is refused).  A list URL that was never fetched
# stops nbdkit with an error naming it.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"

requires_plugin_tools
requires test -x "$CLOOP_STORE"
requires /usr/sbin/nginx -v

make_served_image v4 1000001
"$CLOOP_STORE" keygen "$tmpdir/k1.pem" "$tmpdir/k1.pub" >/dev/null
"$CLOOP_STORE" keygen "$tmpdir/k2.pem" "$tmpdir/k2.pub" >/dev/null
"$CLOOP_STORE" hashes -k "$tmpdir/k1.pem" -o "$www/img.hashes" "$www/img" \
    > "$tmpdir/hashes.out" || fail "cloop-store hashes failed"
sha=$(sed -n 's/.*, sha256 \([0-9a-f]\{64\}\)$/\1/p' "$tmpdir/hashes.out")
[ ${#sha} -eq 64 ] || fail "no SHA-256 printed"
start_nginx "$www"
url=$NGINX_URL/img

# read_all NAME [ARGS]: whole export through cache-dir, compared.
read_all ()
{
    name=$1
    shift
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - -v --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$url" cache-dir="$cache" timeout=10 "$@" \
        2> "$tmpdir/$name.err" || {
        tail -n 20 "$tmpdir/$name.err"; fail "$name: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$name: wrong bytes"
    grep -q "every block checked against block-hashes" "$tmpdir/$name.err" ||
        fail "$name: the list was not attached"
}

# refused NAME REGEX [ARGS]: nbdkit must not start; error matches.
refused ()
{
    name=$1 re=$2
    shift 2
    if nbdkit_cloop -U - --run true "$PLUGIN" url="$url" \
           cache-dir="$cache" timeout=10 "$@" 2> "$tmpdir/$name.err"; then
        fail "$name: nbdkit started"
    fi
    grep -Eq "$re" "$tmpdir/$name.err" || {
        cat "$tmpdir/$name.err"; fail "$name: error does not match /$re/"; }
    echo "$0: ok: $name refused: $(grep -m1 'error: block' "$tmpdir/$name.err" | sed 's/.*error: //')"
}

signed="block-hashes=$NGINX_URL/img.hashes pubkey=$tmpdir/k1.pub"
# shellcheck disable=SC2086
read_all online-signed $signed
read_all online-pinned block-hashes="$NGINX_URL/img.hashes#sha256=$sha"

_ws_stop "$NGINX_PID"
port_closed "$NGINX_PORT" || fail "nginx is still up"

for name in offline-signed offline-pinned; do
    if [ $name = offline-signed ]; then
        # shellcheck disable=SC2086
        read_all $name $signed
    else
        read_all $name block-hashes="$NGINX_URL/img.hashes#sha256=$sha"
    fi
    grep -q "warning: block-hashes $NGINX_URL/img.hashes: .*; using the copy in the disk cache" \
        "$tmpdir/$name.err" || {
        cat "$tmpdir/$name.err"; fail "$name: no warning naming the list"; }
    echo "$0: ok: $name: exact, from the cached list"
done

refused offline-other-key "block-hashes $NGINX_URL/img.hashes: not signed by a trusted key" \
    block-hashes="$NGINX_URL/img.hashes" pubkey="$tmpdir/k2.pub"
refused offline-other-pin "block-hashes $NGINX_URL/img.hashes: its SHA-256 $sha is not the pinned" \
    block-hashes="$NGINX_URL/img.hashes" \
    block-hashes-sha256="$(printf '%064d' 1)"
# A list URL never fetched: the warm image alone does not start.
refused offline-uncached-list \
    "error: block-hashes $NGINX_URL/other.hashes: .*([Cc]onnect|refused)" \
    block-hashes="$NGINX_URL/other.hashes"
