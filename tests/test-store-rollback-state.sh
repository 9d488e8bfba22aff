#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: rollback protection survives the cache.  The highest
# revision of a store accepted lives in the state directory, which
# eviction, cache-max-size and cache-dir=none never touch:
#  - revision 20 is served over HTTP through a cache-max-size far below
#    the store, reading it all (every block, and any metadata, evicted
#    over and over); then revision 10 of the same store is refused;
#  - the same with cache-dir=none;
#  - the cache directory removed altogether: still refused.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

cd "$tmpdir"
mkdir www
/usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(3).randbytes(6 * 1024 * 1024))' > in.raw
"$CLOOP_STORE" keygen k.pem k.pub >/dev/null || fail "keygen failed"
start_nginx "$tmpdir/www"
state=$tmpdir/state

publish ()
{
    "$CLOOP_STORE" create -q -B 65536 -n rb -r "$1" -d "revision $1" \
        -k k.pem in.raw www/s || fail "cloop-store create -r $1 failed"
}

# read_store NAME ARGS...: whole export, compared.
read_store ()
{
    name=$1
    shift
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' "$PLUGIN" \
        url="$NGINX_URL/s/index" pubkey=k.pub state-dir="$state" \
        revalidate=0 "$@" 2> "$name.err" || {
        cat "$name.err"; fail "$name: nbdkit failed"; }
    cmp out.raw in.raw || fail "$name: wrong bytes"
}

# refused NAME ARGS...: nbdkit must refuse the index as a rollback.
refused ()
{
    name=$1
    shift
    if nbdkit_cloop -U - --run true "$PLUGIN" url="$NGINX_URL/s/index" \
        pubkey=k.pub state-dir="$state" revalidate=0 "$@" 2> "$name.err"
    then cat "$name.err"; fail "$name: nbdkit started, not refusing revision 10 after 20"; fi
    grep -q "rollback refused" "$name.err" ||
        { cat "$name.err"; fail "$name: not refused as a rollback"; }
    echo "$0: ok: $name"
}

publish 20
read_store small-cache cache-dir=cache cache-max-size=1M
read_store small-cache-again cache-dir=cache cache-max-size=1M
evicted=$(find cache -type f | wc -l)
echo "$0: $evicted files left in a 1M cache of a 6M store"
[ "$(du -sk cache | cut -f1)" -le 2048 ] || fail "the cache exceeds its bound"

rm -rf www/s
publish 10
refused "after eviction" cache-dir=cache cache-max-size=1M
refused "cache-dir=none" cache-dir=none
rm -rf cache
refused "cache removed" cache-dir=cache
