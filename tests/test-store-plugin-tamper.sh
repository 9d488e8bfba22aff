#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: damaged block files are never served.
#   file=: a block file with one byte flipped (same length), or one
#     byte longer: reads touching that block fail with EIO, every other
#     block reads exact, and the log names the block; after the file is
#     repaired a new nbdkit reads it exact.
#   url= with a cache-dir: the same damage on the server gives EIO (a
#     copy that fails its hash is the server's fault and is fetched
#     again up to retries=: with retries=2, three GETs of that file per
#     read that needs it, five such reads at most); after the file is fixed on the server the same
#     nbdkit process reads the block exact (it is fetched again, not
#     remembered as bad) and the whole export is exact; and a cached
#     blk/ entry damaged in cache-dir is detected, replaced by exactly
#     one new GET, and the export is exact.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires nbdsh --version
requires test -x "$CLOOP_STORE"
requires test -f "$PLUGIN"
CS=$CLOOP_STORE
BS=65536

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www"
make_sample raw.img $((BS * 24 + 777))
"$CS" keygen k.pem k.pub > /dev/null
"$CS" create -q -B $BS -c zlib -n tamper -k k.pem raw.img "$www/s" ||
    fail "create"

# block_file N: path (below the store) of block N's file; "" if zero.
block_file ()
{
    /usr/bin/python3 - "$www/s/index" "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
i = int(sys.argv[2])
L = struct.unpack(">H", b[96:98])[0]
D = struct.unpack(">H", b[98 + L:100 + L])[0]
e = b[100 + L + D + 36 * i:100 + L + D + 36 * i + 36]
h = e[:32].hex()
print("" if e == bytes(36) else "blocks/%s/%s" % (h[:2], h))
PY
}

# Victim: a data block in the middle whose file no other block shares.
victim=""
for i in 9 10 11 12 13 14 15; do
    f=$(block_file $i)
    [ -n "$f" ] || continue
    uses=0
    for j in $(seq 0 24); do
        [ "$(block_file "$j")" = "$f" ] && uses=$((uses + 1))
    done
    if [ "$uses" -eq 1 ]; then victim=$i vfile=$f; break; fi
done
[ -n "$victim" ] || fail "no unique data block found"
echo "victim: block $victim, $vfile"
cp "$www/s/$vfile" good.blk

# probe URI: read the victim block (must fail with EIO), its
# neighbours and a read spanning the victim (must fail), and every
# other block (exact).  Prints one line per outcome.
cat > probe.py <<'PY'
import os, sys
bs, victim, raw = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()
ok_errnos = os.environ.get("OK_ERRNOS", "EIO").split()
size = h.get_size()
assert size == len(raw), "size %d" % size
def expect_eio(off, n):
    try:
        h.pread(n, off)
    except nbd.Error as e:
        assert e.errno in ok_errnos, "errno %r" % e.errno
        return
    raise AssertionError("read %d+%d of the damaged block succeeded" % (off, n))
expect_eio(victim * bs, bs)
expect_eio(victim * bs + 100, 10)
expect_eio((victim - 1) * bs + 5, 2 * bs)   # spans into the victim
for i in range(0, (size + bs - 1) // bs):
    if i == victim:
        continue
    n = min(bs, size - i * bs)
    assert h.pread(n, i * bs) == raw[i * bs:i * bs + n], "block %d wrong" % i
expect_eio(victim * bs, 512)                # still failing, not cached
print("probe ok")
PY

# damaged LABEL NBDKIT-PLUGIN-ARGS...
damaged ()
{
    _l=$1
    shift
    export OK_ERRNOS=${OK_ERRNOS:-EIO}
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run 'nbdsh -u "$uri" -c "import sys; sys.argv = [\"p\", \"'$BS'\", \"'$victim'\", \"raw.img\"]" -c "exec(open(\"probe.py\").read())"' \
        "$PLUGIN" "$@" > probe.out 2> err.txt || {
        cat probe.out err.txt; fail "$_l: probe failed"; }
    grep -q 'probe ok' probe.out || fail "$_l: probe did not finish"
    grep -Eq "block $victim:" err.txt ||
        fail "$_l: the log does not name block $victim: $(cat err.txt)"
    ! grep -Eq 'AddressSanitizer|runtime error' err.txt || fail "$_l: sanitizer"
    echo "ok: $_l: reads of block $victim fail, the rest exact; log: $(grep "block $victim:" err.txt | head -1)"
}

exact ()
{
    _l=$1
    shift
    rm -f out.raw
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' "$PLUGIN" "$@" 2> err.txt ||
        { cat err.txt; fail "$_l: nbdcopy failed"; }
    cmp out.raw raw.img || fail "$_l: wrong bytes"
    echo "ok: $_l: exact"
}

# --- file= ----------------------------------------------------------------
/usr/bin/python3 - "$www/s/$vfile" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x40
open(p, "wb").write(bytes(b))
PY
cmp -s good.blk "$www/s/$vfile" && fail "flip did not change the file"
[ "$(stat -c %s good.blk)" -eq "$(stat -c %s "$www/s/$vfile")" ] || fail "flip changed the length"
damaged "file=, flipped byte" file="$www/s/index" pubkey=k.pub
grep -qi 'sha-256\|hash' err.txt || fail "flipped byte: reason not given"
{ cat good.blk; printf 'Z'; } > "$www/s/$vfile"
damaged "file=, one byte longer" file="$www/s/index" pubkey=k.pub
head -c -1 good.blk > "$www/s/$vfile"
damaged "file=, one byte shorter" file="$www/s/index" pubkey=k.pub
rm "$www/s/$vfile"
# A missing block file fails the read too.  (The plugin passes ENOENT
# up, which nbdkit sends as EINVAL rather than EIO; both are accepted
# here: what matters is that no bytes are served.)
OK_ERRNOS="EIO EINVAL" damaged "file=, missing" file="$www/s/index" pubkey=k.pub
cp good.blk "$www/s/$vfile"
exact "file=, repaired" file="$www/s/index" pubkey=k.pub

# --- url=: damage on the server, then repaired while nbdkit runs --------
start_nginx "$www"
# log_lines: lines in nginx's access log (the readiness probe included,
# so that the numbers are line numbers for tail -n +N).
log_lines () { wc -l < "$NGINX_LOG"; }
C=$tmpdir/cache
cp good.blk bad.blk
/usr/bin/python3 - bad.blk <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[7] ^= 0x01
open(p, "wb").write(bytes(b))
PY
cp bad.blk "$www/s/$vfile"
n0=$(log_lines)
damaged "url=, flipped byte on the server" \
    url="$NGINX_URL/s/index" pubkey=k.pub cache-dir="$C" retries=2
gets=$(tail -n +$((n0 + 1)) "$NGINX_LOG" | grep -c "GET /s/$vfile " || true)
echo "  GETs of the damaged file: $gets"
[ "$gets" -ge 3 ] || fail "the damaged block was not fetched 3 times ($gets GETs)"
[ "$gets" -le 15 ] || fail "the damaged block was fetched $gets times"
if find "$C" -path "*/blk/*" -type f -name "${vfile##*/}*" | grep -q .; then
    fail "the damaged block was cached"
fi

# In one nbdkit: fails, the file is fixed on the server, then reads exact.
cat > fixlater.py <<'PY'
import shutil, sys
bs, victim, raw, good, dest = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read(), sys.argv[4], sys.argv[5]
try:
    h.pread(bs, victim * bs)
    raise AssertionError("damaged block read")
except nbd.Error as e:
    assert e.errno == "EIO", e.errno
shutil.copyfile(good, dest)
assert h.pread(bs, victim * bs) == raw[victim * bs:(victim + 1) * bs], "after repair: wrong bytes"
size = h.get_size()
assert h.pread(size, 0) == raw, "whole export wrong after repair"
print("fix ok")
PY
cp bad.blk "$www/s/$vfile"
# shellcheck disable=SC2016
nbdkit_cloop -U - --run 'nbdsh -u "$uri" -c "import sys; sys.argv = [\"p\", \"'$BS'\", \"'$victim'\", \"raw.img\", \"good.blk\", \"'"$www/s/$vfile"'\"]" -c "exec(open(\"fixlater.py\").read())"' \
    "$PLUGIN" url="$NGINX_URL/s/index" pubkey=k.pub cache-dir="$C" \
    > fix.out 2> err.txt || { cat fix.out err.txt; fail "url=: repair while running"; }
grep -q 'fix ok' fix.out || fail "url=: repair while running: $(cat fix.out)"
echo "ok: url=: EIO, then the file is fixed on the server: exact in the same process"
cmp -s "$www/s/$vfile" good.blk || fail "server file not repaired"
exact "url=, new process" url="$NGINX_URL/s/index" pubkey=k.pub cache-dir="$C"

# --- url=: a damaged entry in the disk cache -------------------------------
# Everything is cached now (a warm run makes no block GET).
n1=$(log_lines)
exact "url=, warm" url="$NGINX_URL/s/index" pubkey=k.pub cache-dir="$C"
n2=$(log_lines)
[ "$(tail -n +$((n1 + 1)) "$NGINX_LOG" | grep -c 'GET /s/blocks/' || true)" -eq 0 ] ||
    fail "warm run fetched blocks"
centry=$(find "$C" -path "*/blk/*" -type f -name "${vfile##*/}*" | head -1)
[ -n "$centry" ] || fail "no cache entry for ${vfile##*/} under $C: $(find "$C" | head -20)"
cp "$centry" centry.orig
/usr/bin/python3 - "$centry" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x10
open(p, "wb").write(bytes(b))
PY
exact "url=, damaged cache entry" url="$NGINX_URL/s/index" pubkey=k.pub cache-dir="$C"
n3=$(log_lines)
tail -n +$((n2 + 1)) "$NGINX_LOG" | grep 'GET /s/blocks/' > refetch.log || true
[ "$(wc -l < refetch.log)" -eq 1 ] && grep -q "GET /s/$vfile " refetch.log ||
    fail "expected exactly one GET of $vfile, got: $(cat refetch.log)"
[ -f "$centry" ] && cmp -s "$centry" centry.orig ||
    fail "the cache entry was not rewritten with good content"
echo "ok: url=: damaged cache entry refetched once ($((n3 - n2)) requests) and rewritten"

echo "$0: all cases passed"
