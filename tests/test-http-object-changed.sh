#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the image is replaced on the server between two runs
# while the cached identity is still trusted (revalidate default).
# Run 1 caches the first half of version A.  Version B then replaces
# it (new content, new ETag).  Run 2: the cached half still reads as A
# (wholly cached, allowed), and every read of an uncached block fails
# with EIO, never returning B's bytes (nor anything but A's), and the
# log says the object changed.  Run 3 (next start) serves B byte-exact.
# Runs 1 and 2 turn read-ahead off, so that run 1 caches exactly the
# blocks it reads.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version

BS=65536
www=$tmpdir/www
cache=$tmpdir/cache
mkdir -p "$www"
make_sample "$tmpdir/a.in" 3000000
/usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(11).randbytes(3000000))' > "$tmpdir/b.in"
"$MKCLOOP" -d v2 -B $BS "$tmpdir/a.in" "$tmpdir/a.img" || fail "mkcloop A"
"$MKCLOOP" -d v2 -B $BS "$tmpdir/b.in" "$tmpdir/b.img" || fail "mkcloop B"
pad_to_block "$tmpdir/a.in" $BS "$tmpdir/a.exp"
pad_to_block "$tmpdir/b.in" $BS "$tmpdir/b.exp"
cp "$tmpdir/a.img" "$www/img"
start_nginx "$www"
url=$NGINX_URL/img
half=$(( $(stat -c %s "$tmpdir/a.exp") / 2 / BS * BS ))

# Run 1: the first half of A.
A=$tmpdir/a.exp HALF=$half \
nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
import os
a = open(os.environ[\"A\"], \"rb\").read()
half = int(os.environ[\"HALF\"])
assert h.pread(half, 0) == a[:half]
'" "$PLUGIN" url="$url" cache-dir="$cache" readahead=0 2> "$tmpdir/run1.err" || {
    cat "$tmpdir/run1.err"; fail "run 1 failed"; }

# Replace it (a new file: new inode, size and mtime, so a new ETag).
cp "$tmpdir/b.img" "$www/img.new"
touch -d "@$(( $(date +%s) + 100 ))" "$www/img.new"
mv -f "$www/img.new" "$www/img"

# Run 2: old identity trusted.
cat > "$tmpdir/run2.py" <<'PY'
import errno, os
a = open(os.environ["A"], "rb").read()
b = open(os.environ["B"], "rb").read()
half, bs = int(os.environ["HALF"]), int(os.environ["BS"])
assert h.get_size() == len(a)
# Cached: A's bytes.
assert h.pread(half, 0) == a[:half], "cached half is not A"
ok = eio = 0
for off in list(range(half, len(a), bs)) + [half + 100, len(a) - 700]:
    n = min(bs, len(a) - off)
    try:
        data = h.pread(n, off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "errno %r" % e.errno
        eio += 1
        continue
    assert data != b[off:off + n] or data == a[off:off + n], \
        "B's bytes served at %d under A's identity" % off
    assert data == a[off:off + n], "wrong bytes at %d" % off
    ok += 1
print("uncached reads: %d EIO, %d served (as A)" % (eio, ok))
assert eio > 0 and ok == 0, "uncached blocks of A were served"
# The cached half still reads as A after the failures.
assert h.pread(half, 0) == a[:half]
PY
A=$tmpdir/a.exp B=$tmpdir/b.exp HALF=$half BS=$BS \
nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/run2.py').read())\"" \
    "$PLUGIN" url="$url" cache-dir="$cache" readahead=0 timeout=10 \
    2> "$tmpdir/run2.err" || {
    cat "$tmpdir/run2.err"; fail "run 2 checks failed"; }
grep -m1 'changed' "$tmpdir/run2.err" || {
    cat "$tmpdir/run2.err"; fail "run 2: no log line says the object changed"; }

# Run 3: the next start fetches B.
rm -f "$tmpdir/out"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$url" cache-dir="$cache" 2> "$tmpdir/run3.err" || {
    cat "$tmpdir/run3.err"; fail "run 3 failed"; }
cmp "$tmpdir/out" "$tmpdir/b.exp" || fail "run 3 did not serve version B"
# And a fourth, warm: still B.
rm -f "$tmpdir/out"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
    "$PLUGIN" url="$url" cache-dir="$cache" 2> "$tmpdir/run4.err" || {
    cat "$tmpdir/run4.err"; fail "run 4 failed"; }
cmp "$tmpdir/out" "$tmpdir/b.exp" || fail "run 4 (warm) did not serve B"
echo "$0: ok"
