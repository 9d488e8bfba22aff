#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a client whose cache is warm from one version of an
# image downloads only the blocks that changed in the next.
# OLD: a 16 MiB image cut into 1024 blocks of 16 KiB; NEW: OLD with 11
# scattered blocks changed (~1 %), one of them made all-zero and one
# made equal to another block of OLD (so it must not be fetched).
# Both are published signed into one store directory (old.idx, new.idx;
# one blocks/ tree).  Asserted:
#   - cloop-store diff reports the changed positions and new blocks;
#   - a cold read of OLD over HTTP fetches each of OLD's distinct
#     non-zero blocks once;
#   - then, with the same cache-dir, a whole read of NEW (another index
#     URL) is byte-exact and nginx logs only: new.idx, new.idx.sig, and
#     one GET per distinct block hash of NEW that OLD lacks - exactly
#     those files (and the plugin's http counter agrees).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires test -x "$CLOOP_STORE"
requires test -f "$PLUGIN"
CS=$CLOOP_STORE
BS=16384
NBLK=1024

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www/store"
make_sample old.img $((BS * NBLK))

# NEW: 9 blocks get a few random bytes at a random place, one becomes
# all zero, one becomes a copy of another block of OLD.
/usr/bin/python3 - old.img new.img $BS > changed.txt <<'PY'
import random, sys
bs = int(sys.argv[3])
b = bytearray(open(sys.argv[1], "rb").read())
n = len(b) // bs
rng = random.Random(4242)
def nonzero(i):
    return b[i * bs:(i + 1) * bs].count(0) != bs
cands = [i for i in range(n) if nonzero(i)]
picks = sorted(rng.sample(cands, 11))
for k, i in enumerate(picks):
    off = i * bs
    if k == 3:
        b[off:off + bs] = bytes(bs)                  # becomes zero
    elif k == 7:
        src = next(j for j in cands if j not in picks and j > 2)
        b[off:off + bs] = b[src * bs:(src + 1) * bs]  # copy of OLD's block
    else:
        p = off + rng.randrange(bs - 16)
        b[p:p + 16] = rng.randbytes(16)
open(sys.argv[2], "wb").write(bytes(b))
print(" ".join(map(str, picks)))
PY
echo "changed blocks: $(cat changed.txt)"

"$CS" keygen k.pem k.pub > /dev/null
"$CS" create -q -B $BS -c zlib -n dedup -r 1 -o old.idx -k k.pem old.img "$www/store" ||
    fail "create old"
"$CS" create -B $BS -c zlib -n dedup -r 2 -o new.idx -k k.pem new.img "$www/store" \
    > create-new.txt || fail "create new"
cat create-new.txt

# Expected from the two indexes: NEW's distinct non-zero hashes that OLD
# lacks; changed positions.
/usr/bin/python3 - "$www/store/old.idx" "$www/store/new.idx" > expect.txt <<'PY'
import struct, sys
def table(p):
    b = open(p, "rb").read()
    L = struct.unpack(">H", b[96:98])[0]
    D = struct.unpack(">H", b[98 + L:100 + L])[0]
    t = 100 + L + D
    return [b[t + 36 * i:t + 36 * i + 36] for i in range((len(b) - t) // 36)]
old, new = table(sys.argv[1]), table(sys.argv[2])
z = bytes(36)
oldh = {e[:32].hex() for e in old if e != z}
newh = {e[:32].hex() for e in new if e != z}
fresh = sorted(newh - oldh)
changed = sum(1 for a, c in zip(old, new) if a != c)
print("old_distinct", len(oldh))
print("changed", changed)
print("fresh", len(fresh))
for h in fresh:
    print("hash", h)
PY
old_distinct=$(awk '$1 == "old_distinct" { print $2 }' expect.txt)
changed=$(awk '$1 == "changed" { print $2 }' expect.txt)
fresh=$(awk '$1 == "fresh" { print $2 }' expect.txt)
awk '$1 == "hash" { print $2 }' expect.txt > fresh.txt
echo "old: $old_distinct distinct blocks; changed positions $changed; new block files $fresh"
[ "$changed" -eq 11 ] || fail "expected 11 changed positions, the indexes differ in $changed"
# 9 modified blocks are new files; the zeroed and the copied one are not.
[ "$fresh" -eq 9 ] || fail "expected 9 new block files, found $fresh"
grep -q "blocks: $fresh new, " create-new.txt ||
    fail "cloop-store create did not write exactly $fresh new blocks"

"$CS" diff "$www/store/old.idx" "$www/store/new.idx" > diff.txt || fail "cloop-store diff"
cat diff.txt
grep -q "^changed positions: $changed of $NBLK\$" diff.txt || fail "diff: changed positions"
grep -Eq "^new: +$fresh blocks, " diff.txt || fail "diff: new blocks"
fresh_bytes=$(while read -r h; do stat -c %s "$www/store/blocks/${h:0:2}/$h"; done < fresh.txt |
    awk '{ s += $1 } END { print s + 0 }')
grep -q "download needed to move from OLD to NEW: $fresh_bytes bytes ($fresh blocks)" diff.txt ||
    fail "diff: download needed (expected $fresh_bytes bytes)"

start_nginx "$www"
# log_lines: lines in nginx's access log (the readiness probe included,
# so that the numbers are line numbers for tail -n +N).
log_lines () { wc -l < "$NGINX_LOG"; }
C=$tmpdir/cache

# read NAME INDEX EXPECTED: whole export over HTTP through cache C.
read_all ()
{
    rm -f out.raw
    # shellcheck disable=SC2016
    nbdkit_cloop -U - -v -D cloop.stats=1 --run 'nbdcopy "$uri" out.raw' \
        "$PLUGIN" url="$NGINX_URL/store/$2" pubkey=k.pub cache-dir="$C" \
        2> "$1.err" || { tail -20 "$1.err"; fail "$1: nbdkit failed"; }
    cmp out.raw "$3" || fail "$1: wrong bytes"
}

# plugin_requests ERRFILE: the plugin's own HTTP request count (the
# counters are per process; every connection prints them at close).
plugin_requests ()
{
    sed -n 's/.*http: \([0-9]*\) requests.*/\1/p' "$1" | sort -n | tail -n 1
}

# settle N: wait (<= 5 s) until nginx has logged at least N requests;
# nginx writes a line when a request is finalized, possibly after the
# client has moved on, so a line of one run could otherwise land in the
# next run's part of the log.
settle ()
{
    for _ in $(seq 50); do
        [ "$(log_lines)" -lt "$1" ] || return 0
        sleep 0.1
    done
    fail "nginx logged $(log_lines) requests, expected $1"
}

n0=$(log_lines)
read_all old old.idx old.img
settle $((n0 + $(plugin_requests old.err)))
n1=$(log_lines)
old_gets=$(tail -n +$((n0 + 1)) "$NGINX_LOG" | grep -c 'GET /store/blocks/' || true)
echo "cold read of OLD: $((n1 - n0)) requests, $old_gets block files"
[ "$old_gets" -eq "$old_distinct" ] ||
    fail "cold OLD fetched $old_gets block files, it has $old_distinct distinct"

read_all new new.idx new.img
settle $((n1 + $(plugin_requests new.err)))
sleep 0.3
n2=$(log_lines)
tail -n +$((n1 + 1)) "$NGINX_LOG" > new.log
echo "read of NEW with the warm cache: $((n2 - n1)) requests:"
cat new.log
/usr/bin/python3 - new.log fresh.txt <<'PY' || fail "NEW fetched more (or other) than its new blocks"
import re, sys
want = set(open(sys.argv[2]).read().split())
blocks, other = [], []
for line in open(sys.argv[1]):
    m = re.match(r'(\d+) "GET (\S+) HTTP', line)
    assert m, "odd line: " + line
    p = m.group(2)
    if p.startswith("/store/blocks/"):
        blocks.append(p.rsplit("/", 1)[1])
    else:
        other.append(p)
assert sorted(set(other)) == ["/store/new.idx", "/store/new.idx.sig"], "other requests: %r" % other
assert len(other) <= 3, "index fetched %d times" % len(other)
assert len(blocks) == len(set(blocks)), "a block fetched twice"
assert set(blocks) == want, "fetched %d blocks, want %d; extra %r, missing %r" % (
    len(blocks), len(want), sorted(set(blocks) - want)[:3], sorted(want - set(blocks))[:3])
print("ok: only the %d new block files were fetched" % len(blocks))
PY
reqs=$(plugin_requests new.err)
[ "$reqs" -eq $((n2 - n1)) ] ||
    fail "plugin counted $reqs HTTP requests, nginx logged $((n2 - n1))"

echo "$0: all cases passed"
