#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: publishing a new version of an image into the store of
# the old one writes only the changed blocks, and "cloop-store diff"
# reports the shared, new and removed blocks and the download needed.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

CS=$CLOOP_STORE
cd "$tmpdir"
bs=4096

# OLD: 3 MiB of mixed content (768 blocks); NEW: OLD with 8 scattered
# blocks (about 1 %) overwritten by fresh random data.
make_sample old.img 3145728
cp old.img new.img
/usr/bin/python3 - new.img $bs <<'PY'
import random, sys
path, bs = sys.argv[1], int(sys.argv[2])
rng = random.Random(99)
with open(path, "r+b") as f:
    for blk in (3, 97, 200, 333, 401, 555, 690, 767):
        f.seek(blk * bs)
        f.write(rng.randbytes(bs))
PY

# What diff must find, computed from the raw images: distinct non-zero
# blocks shared, only in NEW, only in OLD (equal content gives an
# equal block file, as compression is deterministic).
read -r want_shared want_new want_removed < <(/usr/bin/python3 - $bs <<'PY'
import sys
bs = int(sys.argv[1])
def blocks(p):
    d = open(p, "rb").read()
    return {d[i:i + bs] for i in range(0, len(d), bs)} - {bytes(bs)}
o, n = blocks("old.img"), blocks("new.img")
print(len(o & n), len(n - o), len(o - n))
PY
)
[ "$want_new" -eq 8 ] || fail "test setup: $want_new new blocks, expected 8"

"$CS" create -B $bs -c zlib -l 6 -n image -r 1 -o v1.idx old.img S > c1.txt ||
    fail "create OLD"
"$CS" create -B $bs -c zlib -l 6 -n image -r 2 -o v2.idx new.img S > c2.txt ||
    fail "create NEW"
cat c1.txt c2.txt
new_written=$(sed -n 's/^blocks: \([0-9]*\) new.*/\1/p' c2.txt)
bytes_written=$(sed -n 's/.*zero; \([0-9]*\) bytes written.*/\1/p' c2.txt)
[ "$new_written" -eq 8 ] ||
    fail "publishing NEW wrote $new_written blocks, expected 8"

"$CS" diff S/v1.idx S/v2.idx > diff.txt || fail "diff"
cat diff.txt
field () { sed -n "s/^$1: *\([0-9]*\) blocks, \([0-9]*\) bytes/\\$2/p" diff.txt; }
[ "$(field shared 1)" -eq "$want_shared" ] ||
    fail "shared: $(field shared 1), expected $want_shared"
[ "$(field new 1)" -eq "$want_new" ] || fail "new: $(field new 1)"
[ "$(field removed 1)" -eq "$want_removed" ] ||
    fail "removed: $(field removed 1), expected $want_removed"
[ "$(field new 2)" -eq "$bytes_written" ] ||
    fail "new bytes $(field new 2), but create wrote $bytes_written"
grep -q "^changed positions: 8 of 768$" diff.txt || fail "changed positions"
grep -q "^download needed to move from OLD to NEW: $bytes_written bytes (8 blocks)$" \
    diff.txt || fail "download needed"

# The new bytes are exactly the block files NEW added to the store.
/usr/bin/python3 - S/v2.idx S/v1.idx <<'PY' > added.txt
import struct, sys
def table(p):
    b = open(p, "rb").read()
    n = struct.unpack(">Q", b[32:40])[0]
    L = struct.unpack(">H", b[96:98])[0]
    D = struct.unpack(">H", b[98 + L:100 + L])[0]
    t = 100 + L + D
    return {b[t + 36 * i:t + 36 * i + 32]: struct.unpack(">I", b[t + 36 * i + 32:t + 36 * i + 36])[0]
            for i in range(n)}
new, old = table(sys.argv[1]), table(sys.argv[2])
added = {h: l for h, l in new.items() if h not in old and h != bytes(32)}
print(len(added), sum(added.values()))
PY
[ "$(cat added.txt)" = "8 $bytes_written" ] ||
    fail "index tables disagree with diff: $(cat added.txt)"

# Symmetry: from NEW back to OLD, the removed blocks are the download.
"$CS" diff S/v2.idx S/v1.idx > back.txt || fail "diff back"
grep -q "^new: *$want_removed blocks" back.txt || fail "reverse diff"
# An index against itself shares everything and needs nothing.
"$CS" diff S/v1.idx S/v1.idx | grep -q '^download needed .*: 0 bytes (0 blocks)$' ||
    fail "self diff"
# Both versions verify from the one store.
"$CS" verify S/v1.idx > /dev/null && "$CS" verify S/v2.idx > /dev/null ||
    fail "verify after publishing two versions"

echo "$0: all cases passed"
