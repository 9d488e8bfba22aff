#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: memory-cache-size= is one budget for the whole process,
# shared by every export.  dir= with two images of different block
# sizes (64 KiB and 128 KiB), each decoding to more than the 4 MiB
# budget: read one alone, then the other alone, then both at once, all
# byte-exact.  The -D cloop.stats=1 counters at every disconnection and
# at exit show that what all exports hold together never exceeds the
# budget, and that an export read while the other is idle holds more
# than half of it (an even split would cap it at half).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires_plugin_tools

cd "$tmpdir"
mkdir d
budget=$((4 * 1024 * 1024))
make_sample in.raw 9000001
pad_to_block in.raw 65536 exp.a
pad_to_block in.raw 131072 exp.b
"$MKCLOOP" -d v2 -B 65536 in.raw d/image-a || fail "mkcloop failed"
"$MKCLOOP" -d v4 -c zlib -B 131072 in.raw d/image-b || fail "mkcloop failed"

# One connection per nbdcopy, so that each disconnection's counters
# belong to the export just read.
cat > readall.sh <<'SH'
set -e
u () { echo "nbd+unix:///$1?socket=$unixsocket"; }
nbdcopy --connections=1 "$(u image-a)" out.a1
nbdcopy --connections=1 "$(u image-b)" out.b1
nbdcopy --connections=1 "$(u image-a)" out.a2 & a=$!
nbdcopy --connections=1 "$(u image-b)" out.b2 & b=$!
wait $a; wait $b
SH
nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run 'unixsocket="$unixsocket" sh readall.sh' \
    "$PLUGIN" dir=d memory-cache-size=4M 2> run.err ||
    { tail -40 run.err; fail "reading the exports failed"; }
cmp out.a1 exp.a || fail "image-a: wrong bytes"
cmp out.b1 exp.b || fail "image-b: wrong bytes"
cmp out.a2 exp.a || fail "image-a, read with image-b: wrong bytes"
cmp out.b2 exp.b || fail "image-b, read with image-a: wrong bytes"

grep -E "memory cache(, all exports)?: " run.err > stats.txt || true
/usr/bin/python3 - stats.txt "$budget" <<'PY' || { cat stats.txt; fail "budget not respected"; }
import re, sys
budget = int(sys.argv[2])
# Connection N's lines say "cloop[N]"; those printed at exit say none.
per, total = {}, []
for line in open(sys.argv[1]):
    conn = re.search(r"cloop\[(\d+)\]", line)
    who = int(conn.group(1)) if conn else "exit"
    m = re.search(r"memory cache, all exports: (\d+) of (\d+) bytes", line)
    if m:
        assert int(m.group(2)) == budget, line
        total.append(int(m.group(1)))
        continue
    m = re.search(r"memory cache: .* (\d+) bytes in (\d+) blocks", line)
    if m:
        per.setdefault(who, []).append(int(m.group(1)))
print("held by the connection's export, by connection:", per)
print("held by all exports:", total)
assert len(total) >= 4, total
assert all(t <= budget for t in total), total
# Connection 1 read image-a alone, then 2 image-b alone: each export
# held more than half the budget, all of it in fact here.
assert per[1][0] > budget // 2, per
assert per[2][0] > budget // 2, per
# At exit (when nbdkit got that far), the two exports' shares are
# within the budget together.
if len(per.get("exit", [])) == 2:
    assert sum(per["exit"]) <= budget, per
PY
echo "$0: ok"
