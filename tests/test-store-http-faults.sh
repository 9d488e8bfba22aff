#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a block store served by tests/faultserver.py with
# faults on its block files, which are fetched whole (GET without
# Range, 200).  First the fault server itself: a whole-file GET gets the
# fault, and "ranged": true spares it.  Then, for each fault kind, with
# a fresh cache-dir, every 64 KiB read of the export is compared with
# the image (tests/nbdverify.py): a few faults (count 3, fewer than
# retries=4 per block) must give every byte exactly; a fault on every
# block file must give EIO or the exact bytes, never a wrong byte (the
# first 3 reads only, to keep it short); and
# in both cases the fault must have fired.  Last, a mix of faults at
# random (probability) over two passes, then a clean pass on the same
# cache: exact.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires_plugin_tools
requires test -x "$CLOOP_STORE"
requires /usr/bin/python3 -c 'import nbd'
VERIFY=$srcdir/nbdverify.py

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www"
make_sample raw.img 1500000
"$CLOOP_STORE" keygen key.pem key.pub > /dev/null || fail "keygen"
"$CLOOP_STORE" create -q -B 65536 -n faults -k key.pem raw.img "$www/store" ||
    fail "cloop-store create"
nblocks=$(find "$www/store/blocks" -type f | wc -l)
[ "$nblocks" -ge 10 ] || fail "only $nblocks block files"
start_faultserver "$www"

# The fault server faults whole-file GETs, and "ranged" selects.
blk=$(find "$www/store/blocks" -type f | head -n1)
blkpath=${blk#"$www"}
get_differs ()
{
    /usr/bin/python3 - "$FAULT_URL$blkpath" "$blk" <<'PY'
import sys, urllib.request
r = urllib.request.urlopen(sys.argv[1])
body = r.read()
sys.exit(0 if r.status == 200 and body != open(sys.argv[2], "rb").read()
         else 1)
PY
}
set_fault '{"fault":"corrupt","ranged":false}'
get_differs || fail "a whole-file GET was not corrupted"
set_fault '{"fault":"corrupt","ranged":true}'
get_differs && fail "\"ranged\": true faulted a whole-file GET"
set_fault '{"fault":"corrupt","prefix":"/nothing/"}'
get_differs && fail "\"prefix\" did not restrict the fault"

# read_check LABEL MODE: one verified pass over a fresh cache; MODE
# "exact" (every read must succeed) or "eio-ok" (then only the first 3
# reads: each failing one costs its retries).
read_check ()
{
    label=$1 mode=$2
    rm -rf cache
    before=$(fault_fired_count)
    allow=
    case $mode in
        eio-ok) allow="--allow-eio --reads 3" ;;
        mixed) allow=--allow-eio ;;
    esac
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run "/usr/bin/python3 $VERIFY --expected raw.img \
        --uri \"\$uri\" --pass --max-read 65536 $allow > verify.out" \
        "$PLUGIN" url="$FAULT_URL/store/index" pubkey=key.pub \
        cache-dir="$tmpdir/cache" timeout=10 retries=4 2> nbdkit.err || {
        cat verify.out nbdkit.err; fail "$label: wrong bytes or failed reads"; }
    fired=$(( $(fault_fired_count) - before ))
    echo "$label: $(head -n1 verify.out), $fired faults fired"
    [ "$fired" -gt 0 ] || fail "$label: no fault fired"
}

B='"prefix":"/store/blocks/","ranged":false'
for f in '"fault":"corrupt"' '"fault":"corrupt","flips":50' \
         '"fault":"reset","bytes":100' '"fault":"truncate"' \
         '"fault":"status","status":500' '"fault":"status","status":404' \
         '"fault":"long_body"' '"fault":"long_body","mode":"trailing"' \
         '"fault":"wrong_content_range"' \
         '"fault":"change_etag","content":"zero"'; do
    set_fault "{$B,$f,\"count\":3}"
    read_check "3 x {$f}" exact
    set_fault "{$B,$f}"
    read_check "every block {$f}" eio-ok
done
set_fault "{$B,\"fault\":\"slow\",\"rate\":2000000}"
read_check "slow" exact

# A mix at random, then a clean pass on the same cache.
set_fault "{$B,\"fault\":\"corrupt\",\"probability\":0.1}" \
          "{$B,\"fault\":\"reset\",\"bytes\":10,\"probability\":0.1}" \
          "{$B,\"fault\":\"truncate\",\"probability\":0.1}" \
          "{$B,\"fault\":\"status\",\"status\":503,\"probability\":0.1}"
read_check "mixed" mixed
clear_faults
# shellcheck disable=SC2016
nbdkit_cloop -U - --run "/usr/bin/python3 $VERIFY --expected raw.img \
    --uri \"\$uri\" --pass --max-read 65536" \
    "$PLUGIN" url="$FAULT_URL/store/index" pubkey=key.pub \
    cache-dir="$tmpdir/cache" 2> nbdkit.err || {
    cat nbdkit.err; fail "clean pass after the faults: not exact"; }
echo "$0: ok"
