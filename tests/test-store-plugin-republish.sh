#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a store republished (new revision, new signature) while
# clients hold a warm cache.  A warm start inside revalidate= serves the
# cached version consistently, asking the server nothing (the cached
# index is checked against the signature cached with it, not against
# the server's new one); revalidate=0 fetches the new index and serves
# the new revision; a warm start after that serves the new one too.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE

cd "$tmpdir"
mkdir -p www/r
make_sample v1.img $((2 * 1024 * 1024))
make_sample v2.img $((2 * 1024 * 1024 + 4096))
"$CS" keygen k.pem k.pub > /dev/null
"$CS" create -q -B 64K -n rep -r 200 -k k.pem v1.img www/r || fail "create v1"
start_nginx "$tmpdir/www"
url=$NGINX_URL/r/index

# read_all EXPECTED [ARGS]: the whole export must equal EXPECTED.
read_all ()
{
    exp=$1; shift
    rm -f out.raw
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' \
        "$PLUGIN" url="$url" pubkey=k.pub cache-dir="$tmpdir/cache" "$@" ||
        fail "nbdkit failed ($*)"
    cmp out.raw "$exp" || fail "wrong bytes ($*), expected $exp"
}

read_all v1.img                         # cold: fills the cache
sleep 1.1                               # another mtime: another ETag
rm -f www/r/index www/r/index.sig
"$CS" create -q -B 64K -n rep -r 201 -d "version two" -k k.pem v2.img www/r ||
    fail "create v2"

before=$(nginx_request_count)
read_all v1.img                         # warm: the cached version
sleep 0.3
after=$(nginx_request_count)
[ "$after" -eq "$before" ] ||
    fail "warm start asked the server $((after - before)) time(s)"

read_all v2.img revalidate=0            # revalidated: the new version
read_all v2.img                         # and warm from then on
echo "$0: warm start served the cached revision with 0 requests;" \
     "revalidation switched to the new one"
