#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: block stores made by cloop-store, read back through the
# plugin.  For each store (raw image with zero regions and an odd size,
# published with the default codec, zstd and xz, and a store made from
# a cloop file), served with file=STORE/index pubkey= and over HTTP
# (nginx, url=.../index pubkey=, a fresh cache-dir):
#   - the export size is exactly the image size (not padded);
#   - the export is byte-exact;
#   - nbdinfo --map reports exactly the all-zero blocks (computed here
#     from the source, and cross-checked against the index) as
#     hole,zero and everything else as data;
#   - over HTTP the plugin fetches each distinct non-zero block file
#     once and never a zero block (nginx's access log), and the index
#     and its .sig;
#   - nbdcopy to a file leaves the zero blocks as holes in it.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires_plugin_tools
requires nbdinfo --version
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE
BS=65536

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www"

# The source: mixed content, a zero region spanning whole blocks (and
# partial ones at its edges), a zero block at the very start, and a
# size that is not a multiple of the block size (nor of 512).
make_sample part 900001
{
    head -c $BS /dev/zero
    head -c 300000 part
    head -c $((5 * BS + 1234)) /dev/zero
    tail -c 600001 part
    head -c $((2 * BS)) /dev/zero
    printf 'tail'
} > raw.img
size=$(stat -c %s raw.img)
echo "source: $size bytes"

"$CS" keygen key.pem key.pub > /dev/null || fail "keygen"

# expected_map IMAGE BS: the map as "OFFSET LENGTH zero|data" lines,
# adjacent runs of the same kind merged, from the image's blocks.
expected_map ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
bs = int(sys.argv[2])
runs = []
for off in range(0, len(data), bs):
    blk = data[off:off + bs]
    kind = "zero" if blk.count(0) == len(blk) else "data"
    if runs and runs[-1][2] == kind:
        runs[-1][1] += len(blk)
    else:
        runs.append([off, len(blk), kind])
for r in runs:
    print(r[0], r[1], r[2])
PY
}

# index_zero_blocks INDEX: the block numbers the index marks as zero,
# one per line; also checks the header's size and block size.
index_zero_blocks ()
{
    /usr/bin/python3 - "$1" "$size" "$BS" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"CLSTORE\n"
isize, bs = struct.unpack(">QI", b[16:28])
assert isize == int(sys.argv[2]), "index image size %d" % isize
assert bs == int(sys.argv[3]), "index block size %d" % bs
n = struct.unpack(">Q", b[32:40])[0]
L = struct.unpack(">H", b[96:98])[0]
D = struct.unpack(">H", b[98 + L:100 + L])[0]
t = 100 + L + D
for i in range(n):
    if b[t + 36 * i:t + 36 * i + 36] == bytes(36):
        print(i)
PY
}

expected_map raw.img $BS > expected.map
nzero=$(grep -c ' zero$' expected.map || true)
[ "$nzero" -ge 3 ] || fail "test source has too few zero runs: $(cat expected.map)"
/usr/bin/python3 - raw.img $BS > expected.zero <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
bs = int(sys.argv[2])
for i, off in enumerate(range(0, len(data), bs)):
    blk = data[off:off + bs]
    if blk.count(0) == len(blk):
        print(i)
PY

# check_export LABEL EXPECTED_FILE MAPFILE NBDKIT-PLUGIN-ARGS...: size,
# bytes and map of one export.
check_export ()
{
    label=$1 exp=$2 map=$3
    shift 3
    rm -f out.raw got.size got.map sparse.raw
    # shellcheck disable=SC2016
    nbdkit_cloop -U - \
        --run 'nbdinfo --size "$uri" > got.size &&
               nbdcopy "$uri" out.raw &&
               nbdcopy "$uri" sparse.raw --destination-is-zero' \
        "$PLUGIN" "$@" 2> nbdkit.err || {
        cat nbdkit.err; fail "$label: nbdkit or nbdcopy failed"; }
    [ "$(cat got.size)" -eq "$(stat -c %s "$exp")" ] ||
        fail "$label: export size $(cat got.size), expected $(stat -c %s "$exp")"
    cmp out.raw "$exp" || fail "$label: export differs from the source"
    cmp sparse.raw "$exp" || fail "$label: sparse copy differs"
    # The map needs its own connection (nbdinfo --map after the copy).
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run 'nbdinfo --map "$uri" > nbdinfo.map' \
        "$PLUGIN" "$@" 2>> nbdkit.err || fail "$label: nbdinfo --map failed"
    actual_map_from_file nbdinfo.map > got.map
    diff -u "$map" got.map || fail "$label: extents differ from the zero blocks"
    echo "ok: $label: $(cat got.size) bytes, exact, map matches ($(grep -c zero got.map) zero runs)"
}

# actual_map FILE: nbdinfo --map output as "OFFSET LENGTH zero|data"
# lines, merged the same way.  The plugin must call a zero block both a
# hole and zero (type 3) and anything else plain data (type 0).
actual_map_from_file ()
{
    awk '
        {
            off = $1; len = $2; t = $3
            if (t == 3) kind = "zero"
            else if (t == 0) kind = "data"
            else kind = "type" t
            if (n > 0 && k[n] == kind && o[n] + l[n] == off) { l[n] += len; next }
            n++; o[n] = off; l[n] = len; k[n] = kind
        }
        END { for (i = 1; i <= n; i++) print o[i], l[i], k[i] }' "$1"
}

# Sparse copy: the holes nbdcopy skipped are holes in the output file.
check_sparse ()
{
    alloc=$(( $(stat -c '%b * %B' sparse.raw) ))
    zero_bytes=$(awk '$3 == "zero" { s += $2 } END { print s + 0 }' "$1")
    [ "$alloc" -le $(( $(stat -c %s sparse.raw) - zero_bytes + 65536 )) ] ||
        fail "nbdcopy did not skip the holes: $alloc bytes allocated, $zero_bytes of zeros"
}

# --- Stores from the raw image ----------------------------------------
stores="default zstd xz"
for s in $stores; do
    case $s in
        default) args="" ;;
        *) args="-c $s" ;;
    esac
    # shellcheck disable=SC2086
    "$CS" create -q -B $BS $args -n "rt-$s" -k key.pem raw.img "$www/$s" ||
        fail "cloop-store create $s"
    index_zero_blocks "$www/$s/index" > got.zero || fail "$s: index check"
    cmp expected.zero got.zero ||
        fail "$s: the index's zero blocks differ from the source's"
    check_export "file= $s" raw.img expected.map \
        file="$www/$s/index" pubkey=key.pub
    check_sparse expected.map
done

# --- A store made from a cloop file: the cloop export (padded to its
# block size) is the image, re-cut at another block size.
"$MKCLOOP" -d v2 -B 16384 raw.img img.cloop || fail "mkcloop"
pad_to_block raw.img 16384 cloop-expected
"$CS" create -q -B $BS -c zlib -n rt-cloop -k key.pem img.cloop "$www/cloop" ||
    fail "cloop-store create from a cloop file"
expected_map cloop-expected $BS > cloop.map
check_export "file= cloop source" cloop-expected cloop.map \
    file="$www/cloop/index" pubkey=key.pub

# --- Over HTTP, fresh cache each --------------------------------------
start_nginx "$www"
# log_lines: lines in nginx's access log (the readiness probe included,
# so that the numbers are line numbers for tail -n +N).
log_lines () { wc -l < "$NGINX_LOG"; }
for s in $stores cloop; do
    exp=raw.img map=expected.map
    if [ $s = cloop ]; then exp=cloop-expected map=cloop.map; fi
    n0=$(log_lines)
    sleep 0.3
    [ "$(log_lines)" -eq "$n0" ] || fail "nginx log still growing"
    check_export "url= $s" "$exp" "$map" \
        url="$NGINX_URL/$s/index" pubkey=key.pub cache-dir="$tmpdir/cache-$s"
    # nginx logs a request when it is finalized, maybe a moment after
    # the client got it: wait until the log stops growing.
    prev=-1
    for _ in $(seq 50); do
        cur=$(log_lines)
        [ "$cur" -ne "$prev" ] || break
        prev=$cur
        sleep 0.2
    done
    tail -n +$((n0 + 1)) "$NGINX_LOG" > req.log
    # Each distinct non-zero block file was fetched exactly once (the
    # second and third nbdkit runs were warm), and nothing else but the
    # index and its signature.
    /usr/bin/python3 - "$www/$s/index" "/$s/" req.log <<'PY' ||
import re, struct, sys
b = open(sys.argv[1], "rb").read()
prefix = sys.argv[2]
L = struct.unpack(">H", b[96:98])[0]
D = struct.unpack(">H", b[98 + L:100 + L])[0]
t = 100 + L + D
n = (len(b) - t) // 36
want = set()
for i in range(n):
    e = b[t + 36 * i:t + 36 * i + 36]
    if e != bytes(36):
        want.add(e[:32].hex())
got = []
other = []
for line in open(sys.argv[3]):
    m = re.match(r'(\d+) "GET (\S+) HTTP', line)
    assert m, "odd log line: " + line
    path = m.group(2)
    if path.startswith(prefix + "blocks/"):
        assert m.group(1) == "200", "block fetch status: " + line
        got.append(path.rsplit("/", 1)[1])
    elif path in (prefix + "index", prefix + "index.sig"):
        assert m.group(1) in ("200", "206"), line
    else:
        other.append(path)
assert not other, "unexpected requests: %r" % other
assert len(got) == len(set(got)), "a block was fetched twice: %r" % got
assert set(got) == want, "fetched %d block files, the index has %d distinct non-zero ones" % (len(set(got)), len(want))
print("  %d distinct block files fetched once each" % len(got))
PY
        fail "url= $s: unexpected requests: $(cat req.log)"
done

echo "$0: all cases passed"
