#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: parameters that would do nothing, or contradict each
# other, stop nbdkit with an error saying so, instead of being ignored:
# pubkey= or index-sha256= on a plain cloop file (they verify stores and
# block-hash lists only); the image given twice; file= with dir=; bad
# values, whose error names the key and the value.  And a URL given as
# the bare first parameter is taken as url=.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

cd "$tmpdir"
make_sample in.raw 300001
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw img || fail "mkcloop failed"
"$CLOOP_STORE" keygen k.pem k.pub >/dev/null || fail "keygen failed"
pin=$(printf '0%.0s' $(seq 64))

# refused REGEX ARGS...: nbdkit must not start, and must say REGEX.
refused ()
{
    re=$1
    shift
    if nbdkit_cloop -U - --run true "$PLUGIN" "$@" 2> err; then
        fail "accepted: $*"
    fi
    grep -Eq -- "$re" err || { cat err; fail "$*: the error does not say /$re/"; }
    echo "ok: refused: $* ($(head -1 err))"
}

refused 'pubkey=.*cloop file.*block-hashes' img pubkey=k.pub
refused 'index-sha256=.*cloop file.*block-hashes' img index-sha256=$pin
refused 'given twice|already given' img file=img
refused 'exactly one of' img dir=.
refused 'mirror=http://m/img: mirrors are other URLs of a remote image' \
    img mirror=http://m/img
refused 'mirror=ftp://m/img: must start with http:// or https://' \
    url=http://127.0.0.1:1/img mirror=ftp://m/img
mkdir -p d && cp img d/
refused "mirror= and mirrors= belong to one image" dir=d mirror=http://m/img
refused "mirrors=.*local file" img mirrors=/dev/null

# Bad values: the error names the key and its value.
for kv in cache-max-size=banana memory-cache-size=1x readahead=banana \
          sslverify=banana insecure=maybe connections=banana \
          connections=0 timeout=99999 revalidate=-1 retries=x; do
    refused "^nbdkit: error: ${kv//[/\\[}: not a" img "$kv"
done

mkdir www
cp img www/img
start_nginx "$tmpdir/www"
nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" "$NGINX_URL/img" \
    cache-dir=none 2> url.err || { cat url.err; fail "a bare URL was not taken as url="; }
cmp out exp || fail "bare URL: wrong bytes"
refused '#sha256=.*cloop file' "$NGINX_URL/img#sha256=$pin" cache-dir=none
echo "$0: ok"
