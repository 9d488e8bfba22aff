#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Several connections and many requests in flight (multi-conn) read a
# real create_compressed_fs image byte-exact, also with a memory cache
# so small that blocks are evicted and refilled while other requests
# want them.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
requires command -v create_compressed_fs
requires nbdcopy --version
requires nbdinfo --version

make_sample "$tmpdir/in" $((24 * 1024 * 1024 + 12345))
create_compressed_fs -q -B 65536 "$tmpdir/in" "$tmpdir/img" 2>/dev/null
pad_to_block "$tmpdir/in" 65536 "$tmpdir/expected"

# The server must advertise multi-conn, or nbdcopy uses one connection.
nbdkit_cloop -U - --run 'nbdinfo --can multi-conn "$uri"' \
    "$PLUGIN" "$tmpdir/img" || fail "multi-conn not advertised"

for cache in 128M 1M 0; do
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - \
        --run "nbdcopy --connections=4 --requests=64 --request-size=131072 \
               \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" "$tmpdir/img" memory-cache-size=$cache ||
        fail "nbdcopy with memory-cache-size=$cache failed"
    cmp "$tmpdir/out" "$tmpdir/expected" ||
        fail "parallel read with memory-cache-size=$cache differs"
done

# Many threads of one nbdsh client reading overlapping, unaligned
# ranges at once through one connection (single-flight on shared
# blocks).
nbdkit_cloop -U - --run "nbdsh -u \"\$uri\" -c '
import random, threading
expected = open(\"$tmpdir/expected\", \"rb\").read()
errors = []
def reader(seed):
    rng = random.Random(seed)
    for _ in range(200):
        off = rng.randrange(len(expected) - 300000)
        n = rng.randrange(1, 300000)
        if h.pread(n, off) != expected[off:off+n]:
            errors.append((off, n))
ts = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors[:5]
'" "$PLUGIN" "$tmpdir/img" memory-cache-size=2M ||
    fail "concurrent nbdsh readers saw wrong data"
