#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a mirror of a cloop file is checked against the whole
# header and index, not only the first bytes the probe fetches.  Two
# builds of the same size whose first 64 KiB are the same (V4 with the
# index at the end; blocks 12 and 13 swapped between an all-zero block
# and a random one, past the file's first 64 KiB, so the data and the
# index differ but not the size): the index is read from the URL's server only, the other
# build's mirror is dropped at start with a warning naming it and
# serves no block, and the image reads byte-exact with no faulty copy.
# An honest mirror of the same build passes the check and serves.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
export PYTHONPATH="$srcdir"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

cd "$tmpdir"
mkdir -p www
/usr/bin/python3 - <<'PY'
import random
rng = random.Random(7)
bs = 65536
text = b"cloop knoppix block zlib nbdkit image offset index mirror\n"
blocks = [(text * (bs // len(text) + 1))[:bs] for _ in range(24)]
noise = bytes(rng.getrandbits(8) for _ in range(bs))
# Block 1 does not compress either: the swapped blocks start past the
# first 64 KiB of the file.
blocks[1] = bytes(rng.getrandbits(8) for _ in range(bs))
a = list(blocks); a[12] = bytes(bs); a[13] = noise
b = list(blocks); b[12] = noise; b[13] = bytes(bs)
open("a.raw", "wb").write(b"".join(a))
open("b.raw", "wb").write(b"".join(b))
PY
"$MKCLOOP" -d v4-footer -B 65536 a.raw www/a || fail "mkcloop failed"
"$MKCLOOP" -d v4-footer -B 65536 b.raw www/b || fail "mkcloop failed"
cp www/a www/a2
[ "$(stat -c %s www/a)" = "$(stat -c %s www/b)" ] ||
    fail "the two builds differ in size"
cmp -s -n 65536 www/a www/b || fail "the two builds differ in their first 64 KiB"
cmp -s www/a www/b && fail "the two builds are the same"
start_nginx "$tmpdir/www"

cat > reads.py <<'PY'
import sys, exactpass
h, exp = exactpass.connect(sys.argv[1], sys.argv[2])
for i in range(3):
    exactpass.one_pass(h, exp, "pass %d" % i)
print("3 passes exact")
PY
# Requests for a file in nginx's log so far.
count () { grep -c "\"GET /$1 " "$NGINX_LOG" || true; }

# run CACHE-DIR: three passes over the image through a, b and a2: exact,
# b dropped with a warning and asked only for its probe and check (its
# first bytes, then the index), a2 checked and in use, no faulty copy.
run ()
{
    local b0
    b0=$(count b)
    nbdkit_cloop -U - -v -D cloop.stats=1 -D cloop.http=1 \
        --run '/usr/bin/python3 reads.py "$uri" a.raw' \
        "$PLUGIN" url="$NGINX_URL/a" mirror="$NGINX_URL/b" \
        mirror="$NGINX_URL/a2" connections=2 memory-cache-size=256K \
        cache-dir="$1" > reads.out 2> nbdkit.err ||
        { cat reads.out; grep -a -v 'debug: \(pread\|cache\|extents\|http: curl\)' \
          nbdkit.err | tail -40; fail "cache-dir=$1: reading through the mirrors failed"; }
    cat reads.out
    grep -aq "mirror $NGINX_URL/b not used: its copy has another header or index" \
        nbdkit.err ||
        { grep -a "mirror" nbdkit.err | grep -v "http: curl"
          fail "cache-dir=$1: the other build's mirror was not dropped"; }
    grep -aq "mirror $NGINX_URL/a2: same header and index: in use" nbdkit.err ||
        { grep -a "mirror $NGINX_URL/a2" nbdkit.err
          fail "cache-dir=$1: the honest mirror a2 did not pass the check"; }
    checks=$(grep -a "debug: export .*: http: .*($NGINX_URL/a2)" nbdkit.err |
                 tail -n1 | sed -n 's/.* \([0-9][0-9]*\) copy checks.*/\1/p')
    [ "${checks:-0}" -ge 2 ] ||
        fail "cache-dir=$1: a2's copy checks: ${checks:-none reported}, 2 or more expected"
    echo "$0: cache-dir=$1: requests so far: a $(count a), b $(count b), a2 $(count a2) ($checks copy checks in this run)"
    [ $(($(count b) - b0)) -le 4 ] ||
        fail "cache-dir=$1: b served blocks: $(($(count b) - b0)) requests"
    faulty=$(grep -a "debug: export .*: http: .*($NGINX_URL/a)" nbdkit.err |
                 tail -n1 | sed -n 's/.* \([0-9][0-9]*\) faulty copies.*/\1/p')
    [ "${faulty:-x}" = 0 ] || fail "cache-dir=$1: faulty copies: ${faulty:-none reported}"
}

run none
# Twice with a disk cache: the second start parses the header and index
# from it (its blocks are dropped from it, so that they are fetched),
# and the mirrors are checked against those.
run "$tmpdir/cache"
[ -d "$tmpdir/cache/url" ] || fail "no metadata in the disk cache"
rm -rf "$tmpdir/cache/obj"
run "$tmpdir/cache"
echo "$0: ok"
