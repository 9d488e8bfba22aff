#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the header and index of a remote image in the disk
# cache.
#  1. A corrupt reply of the header/index is never cached: a start that
#     got one fails naming the URL, and the next start against the
#     healthy server (revalidate=0, same object) reads byte-exact.
#  2. A cached header/index that does not parse (written by a faulty
#     build, or corrupted with its entry checksum kept consistent) is
#     dropped with one warning and fetched again: byte-exact.
#  3. With cache-max-size far below the image, the header and index
#     outlive the evicted blocks: after a whole read, a start with the
#     server stopped still opens the image from the cache and serves
#     the cached blocks byte-exact.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

www=$tmpdir/www
cache=$tmpdir/cache
mkdir -p "$www"
# 8192 blocks of 512 bytes: the index (65544 bytes) fills the whole
# probed head, so a corrupted middle byte lands in the index.
make_sample "$tmpdir/in" $((4 * 1024 * 1024))
"$MKCLOOP" -d v2 -B 512 "$tmpdir/in" "$www/img" || fail "mkcloop failed"
cp "$tmpdir/in" "$tmpdir/expected"
start_faultserver "$www"
url=$FAULT_URL/img

# read_all NAME [ARGS]: whole export through cache-dir, compared.
read_all ()
{
    name=$1
    shift
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$url" cache-dir="$cache" timeout=20 "$@" \
        2> "$tmpdir/$name.err" || {
        cat "$tmpdir/$name.err"; fail "$name: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "$name: wrong bytes"
}

# 1. The probe (the first GET, which carries header and index) comes
# back with one byte flipped in the index.
set_fault '{"fault": "corrupt", "count": 1}'
rc=0
nbdkit_cloop -U - --run 'nbdcopy "$uri" null:' \
    "$PLUGIN" url="$url" cache-dir="$cache" timeout=20 \
    2> "$tmpdir/corrupt.err" || rc=$?
cat "$tmpdir/corrupt.err"
[ "$rc" -ne 0 ] || fail "a corrupt index was served"
grep -q "error.*$url" "$tmpdir/corrupt.err" ||
    fail "the error does not name the URL"
clear_faults
read_all healthy revalidate=0
echo "$0: ok: a corrupt index reply was not cached"

# 2. Corrupt the cached index itself, keeping the entry's own header
# (payload length, SHA-256) consistent, as a faulty writer would.
# The index is the largest metadata entry (cache/diskcache.h layout).
/usr/bin/python3 - "$cache" <<'PY'
import glob, hashlib, os, sys
files = glob.glob(os.path.join(sys.argv[1], "url", "*"))
path = max(files, key=os.path.getsize)
data = bytearray(open(path, "rb").read())
assert data[:8] == b"CLDCACHE", path
payload = data[64:]
assert len(payload) == 8193 * 8, len(payload)
payload[8 * 4000] ^= 0xFF        # top byte of entry 4000: absurd offset
data[24:56] = hashlib.sha256(payload).digest()
data[64:] = payload
open(path, "wb").write(data)
PY
read_all reparse
n=$(grep -c 'cached header and index do not parse' "$tmpdir/reparse.err" || true)
[ "$n" -eq 1 ] || { cat "$tmpdir/reparse.err"
    fail "expected one warning about the cached index, got $n"; }
grep -q 'error' "$tmpdir/reparse.err" && { cat "$tmpdir/reparse.err"
    fail "the warning is printed as an error"; }
grep -q '^nbdkit: cloop: warning: ' "$tmpdir/reparse.err" ||
    fail "the warning does not say warning"
read_all reparsed
grep -q 'do not parse' "$tmpdir/reparsed.err" &&
    fail "the index fetched again was not cached"
echo "$0: ok: a cached index that does not parse is dropped and refetched"

# 3. A bound far below the image: blocks are evicted, the header and
# index are not.  Incompressible input, 64 KiB blocks.
/usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(7).randbytes(8 * 1024 * 1024))' \
    > "$tmpdir/in2"
"$MKCLOOP" -d v2 -B 65536 "$tmpdir/in2" "$www/img2" || fail "mkcloop failed"
touch -d '-1 hour' "$www/img2"          # settled validators: blocks kept
url=$FAULT_URL/img2
cp "$tmpdir/in2" "$tmpdir/expected"
cache=$tmpdir/cache2
read_all small cache-max-size=2M
# Which blocks survived depends on the order nbdcopy's parallel reads
# took: find one in the cache (obj/ID/FF/OFFSET-LENGTH, OFFSET a
# compressed offset of the V2.0 index) rather than guess.
tail_off=$(/usr/bin/python3 - "$cache" "$www/img2" <<'PY'
import os, struct, sys
cache, img = sys.argv[1], sys.argv[2]
head = open(img, "rb").read(136)
n = struct.unpack(">I", head[132:136])[0]
with open(img, "rb") as f:
    f.seek(136)
    offs = struct.unpack(">%dQ" % (n + 1), f.read(8 * (n + 1)))
block_of = {offs[i]: i for i in range(n)}
cached = [block_of[int(name.split("-")[0])]
          for root, _, files in os.walk(os.path.join(cache, "obj"))
          for name in files if not name.startswith(".")
          and int(name.split("-")[0]) in block_of]
assert cached, "no block is cached"
print(max(cached) * 65536)
PY
) || fail "no cached block found"
[ "$(find "$cache/obj" -type f | wc -l)" -lt 120 ] ||
    fail "the blocks were not evicted: the bound did not bite"
_ws_stop "$FAULT_PID"
port_closed "$FAULT_PORT" || fail "the server is still up"
for mode in trusted revalidate; do
    args=
    [ $mode = revalidate ] && args=revalidate=0
    nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
import sys
want = open(\"$tmpdir/in2\", \"rb\").read()[$tail_off:$tail_off + 65536]
assert h.pread(len(want), $tail_off) == want
'" "$PLUGIN" url="$url" cache-dir="$cache" cache-max-size=2M timeout=10 \
        $args 2> "$tmpdir/offline-$mode.err" || {
        cat "$tmpdir/offline-$mode.err"
        fail "offline start after eviction ($mode) failed"; }
done
echo "$0: ok: offline start after eviction of blocks"
