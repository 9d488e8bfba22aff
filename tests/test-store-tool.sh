#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: cloop-store create / verify / sign / keygen / info from
# the publisher's side.  Every store is reassembled here by an
# independent decoder (Python stdlib + the zstd CLI) reading the index
# and the block files, and compared byte for byte with the source.
# The plugin's own reading of stores is tested elsewhere.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"
requires test -x "$MKCLOOP"
requires zstd --version
requires openssl version

CS=$CLOOP_STORE
cd "$tmpdir"

# extract INDEX OUT: rebuild the image from an index and its blocks/,
# checking every block file's length and SHA-256 and every decoded
# length, as docs/FORMAT.md says a reader must.
extract ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import hashlib, lzma, os, struct, subprocess, sys, zlib
path, out = sys.argv[1], sys.argv[2]
b = open(path, "rb").read()
assert b[:8] == b"CLSTORE\n", "magic"
ver, hlen, size, bs, codec, halg, flags, n = struct.unpack(">IIQIBBHQ", b[8:40])
assert (ver, hlen, halg, flags) == (1, 96, 1, 0), "header"
assert b[64:96] == bytes(32), "reserved"
assert n == (size + bs - 1) // bs, "block count"
L = struct.unpack(">H", b[96:98])[0]
name = b[98:98 + L].decode()
D = struct.unpack(">H", b[98 + L:100 + L])[0]
tab = 100 + L + D
assert len(b) == tab + 36 * n, "index length"
root = os.path.dirname(path) or "."
with open(out, "wb") as f:
    for i in range(n):
        h, ln = b[tab + 36 * i:tab + 36 * i + 32], struct.unpack(">I", b[tab + 36 * i + 32:tab + 36 * i + 36])[0]
        want = min(bs, size - i * bs)
        if h == bytes(32) and ln == 0:
            f.write(bytes(want)); continue
        hx = h.hex()
        data = open(os.path.join(root, "blocks", hx[:2], hx), "rb").read()
        assert len(data) == ln, "block %d length" % i
        assert hashlib.sha256(data).digest() == h, "block %d hash" % i
        if codec == 1:
            d = zlib.decompress(data)
        elif codec == 3:
            d = lzma.decompress(data, format=lzma.FORMAT_XZ)
        else:
            d = subprocess.run(["zstd", "-d", "-q", "-c"], input=data,
                               capture_output=True, check=True).stdout
        assert len(d) == want, "block %d decodes to %d, want %d" % (i, len(d), want)
        assert d != bytes(want), "block %d is all zero but stored" % i
        f.write(d)
print("%s: %s, %d blocks of %d, codec %d" % (path, name, n, bs, codec))
PY
}

# expect_fail CODE WHAT CMD...: CMD must exit with CODE and print an
# error on stderr.
expect_fail ()
{
    want=$1 what=$2
    shift 2
    rc=0
    "$@" > out.txt 2> err.txt || rc=$?
    [ "$rc" -eq "$want" ] ||
        fail "$what: exit $rc, expected $want: $(cat err.txt out.txt)"
    [ -s err.txt ] || [ -s out.txt ] || fail "$what: no message"
    echo "ok: $what -> $rc: $(head -1 err.txt)"
}

# no_temps DIR: no temporary files left anywhere under DIR.
no_temps ()
{
    left=$(find "$1" -name '.tmp-*' | head -3)
    [ -z "$left" ] || fail "temporary files left: $left"
}

# --- Raw image with zero regions ----------------------------------------
make_sample part 700001
{ head -c 300000 part; head -c 400000 /dev/zero; tail -c 400001 part; } \
    > raw.img
"$CS" create -B 64K -l 3 -n test-raw -d "a raw image" raw.img S > sum.txt ||
    fail "create from raw"
cat sum.txt
grep -q ' 0 present, [1-9][0-9]* zero' sum.txt || fail "no zero blocks counted"
[ -f S/index ] && [ ! -e S/index.sig ] || fail "layout"
extract S/index out.img
cmp raw.img out.img || fail "raw store differs from its source"
"$CS" verify S/index > v.txt || fail "verify of a good store: $(cat v.txt)"
grep -q '^result: ok' v.txt || fail "verify report"
"$CS" info S/index > info.txt
grep -q '^name: *test-raw$' info.txt || fail "info name"
grep -q '^description: *a raw image$' info.txt || fail "info description"
grep -q '^image size: *1100001 ' info.txt || fail "info size"
grep -q '^block size: *65536$' info.txt || fail "info block size"
grep -q '^codec: *zlib$' info.txt || fail "info codec"
grep -q '^expires: *never$' info.txt || fail "info expiry"
grep -q '^created: *20[0-9-]*T[0-9:]*Z$' info.txt || fail "info created"
no_temps S

# Incremental: the same source again writes nothing new, and gets a
# larger revision than the index it replaces.
rev1=$(sed -n 's/^revision: *//p' info.txt)
"$CS" create -B 64K -l 3 -n test-raw raw.img S > sum2.txt || fail "re-create"
grep -q 'blocks: 0 new, [1-9][0-9]* present' sum2.txt ||
    fail "incremental create wrote blocks: $(cat sum2.txt)"
rev2=$("$CS" info S/index | sed -n 's/^revision: *//p')
[ "$rev2" -gt "$rev1" ] || fail "revision did not increase ($rev1, $rev2)"
expect_fail 1 "explicit rollback refused" \
    "$CS" create -B 64K -l 3 -n test-raw -r 5 raw.img S
"$CS" info S/index | grep -q "^revision: *$rev2\$" ||
    fail "a refused create replaced the index"

# Default options (default codec, level and block size), and stdin.
"$CS" create -q -o default.idx raw.img S || fail "create with defaults"
extract S/default.idx out.img && cmp raw.img out.img ||
    fail "default store differs"
"$CS" info S/default.idx | grep -q '^name: *raw$' || fail "default name"
cat raw.img | "$CS" create -q -c zlib -n from-stdin -o stdin.idx - S ||
    fail "create from stdin"
extract S/stdin.idx out.img && cmp raw.img out.img || fail "stdin store"

# Every codec, odd sizes, several block sizes and thread counts.
for args in "-c zlib -B 512 -j 1" "-c zlib -l 9 -B 4K" "-c xz -B 16K -j 3" \
            "-c xz -l 0 -B 1M" "-c zstd -l 1 -B 8K -j 2"; do
    # shellcheck disable=SC2086
    "$CS" create -q $args -n codecs -o codecs.idx raw.img C ||
        fail "create $args"
    extract C/codecs.idx out.img && cmp raw.img out.img ||
        fail "store made with $args differs"
    "$CS" verify C/codecs.idx > /dev/null || fail "verify $args"
done

# --- cloop sources: re-blocked at another block size --------------------
make_sample cin 1000000
if [ -x /usr/bin/create_compressed_fs ]; then
    create_compressed_fs -q -B 65536 cin v2.cloop > /dev/null 2>&1 ||
        fail "create_compressed_fs"
    "$CS" create -q -B 16K -c zlib -n ccfs v2.cloop S2 || fail "create from V2"
    pad_to_block cin 65536 expected
    extract S2/index out.img && cmp expected out.img ||
        fail "store of a create_compressed_fs image differs"
    "$CS" create -B 128K -l 3 -n ccfs-big v2.cloop S3 | grep -q 'cloop V2' ||
        fail "V2 not detected"
    extract S3/index out.img && cmp expected out.img || fail "V2 at 128K"
else
    echo "create_compressed_fs not installed: skipping V2 from cloop-utils"
fi
"$MKCLOOP" -d v4 -B 4096 -c zlib,lz4,xz cin v4mixed.cloop ||
    fail "mkcloop v4 mixed"
pad_to_block cin 4096 expected
"$CS" create -q -B 64K -c xz -n v4mixed v4mixed.cloop S4 ||
    fail "create from v4 mixed"
extract S4/index out.img && cmp expected out.img || fail "v4 mixed store"
# Dialects detected from the tail only, and Plasa's exact size.
"$MKCLOOP" -d v4-footer -B 4096 -c lz4 cin footer.cloop
"$CS" create -q -B 8K -c zlib footer.cloop S4 || fail "create from footer"
extract S4/index out.img && cmp expected out.img || fail "v4-footer store"
# A last block its writer did not pad reads as zeroes after its data.
"$MKCLOOP" -d v4 -B 4096 -c lz4 --short-last cin short.cloop ||
    fail "mkcloop --short-last"
"$CS" create -q -B 8K -c zlib short.cloop S4 || fail "create from a short last block"
extract S4/index out.img && cmp expected out.img || fail "short last block store"
"$MKCLOOP" -d dplasa-v3 -B 4096 -c zlib cin plasa.cloop
"$CS" create -q -B 8K -c zlib plasa.cloop S4 || fail "create from dplasa"
extract S4/index out.img && cmp cin out.img || fail "dplasa store"
"$CS" create -q -t raw -B 8K -c zlib -n rawcloop plasa.cloop S4 ||
    fail "create -t raw"
extract S4/index out.img && cmp plasa.cloop out.img || fail "-t raw"
# A cloop file on a pipe is not published raw without a word: refused,
# naming the way out; -t raw publishes its bytes.  (Dialects whose only
# structure is at the end, such as plasa.cloop, cannot be recognised
# from a stream's head: see BUGS in cloop-store(1).)
"$MKCLOOP" -d v2 -B 4096 -c zlib cin pipe-v2.cloop || fail "mkcloop v2"
"$MKCLOOP" -d slitaz-v3 -B 4096 -c zlib cin pipe-slitaz.cloop ||
    fail "mkcloop slitaz-v3"
for f in v4mixed.cloop pipe-v2.cloop pipe-slitaz.cloop; do
    expect_fail 1 "cloop file $f on stdin" \
        sh -c "cat $f | '$CS' create -q -n piped -o piped.idx - S4"
    grep -q 'starts like a cloop file.*-t raw' err.txt ||
        fail "$f on stdin: refusal does not say what to do: $(cat err.txt)"
    [ ! -e S4/piped.idx ] || fail "$f on stdin: index written"
done
cat plasa.cloop | "$CS" create -q -t raw -B 8K -n piped -o piped.idx - S4 ||
    fail "cloop file on stdin with -t raw"
extract S4/piped.idx out.img && cmp plasa.cloop out.img ||
    fail "-t raw on stdin"

# --- Damage: corrupt and missing blocks --------------------------------
"$CS" create -q -B 64K -l 3 -n test-raw raw.img D || fail "create D"
blk1=$(find D/blocks -type f | sort | head -1)
blk2=$(find D/blocks -type f | sort | tail -1)
printf 'X' | dd of="$blk1" bs=1 seek=10 conv=notrunc status=none
rm "$blk2"
expect_fail 1 "verify with a corrupt and a missing block" "$CS" verify D/index
grep -q "corrupt.*$(basename "$blk1")" out.txt || fail "corrupt block not named"
grep -q "missing.*$(basename "$blk2")" out.txt || fail "missing block not named"
grep -q '^block [0-9]*: ' out.txt || fail "bad block index not named"
"$CS" verify --no-blocks D/index > /dev/null || fail "verify --no-blocks"
# The next create replaces the missing block, the corrupt one (same
# size: it is read back, not trusted) and a truncated one, naming the
# two it rewrites.
blk3=$(find D/blocks -type f | sort | sed -n 2p)
truncate -s 5 "$blk3"
"$CS" create -q -B 64K -l 3 -n test-raw raw.img D 2> repair.err ||
    fail "repairing create: $(cat repair.err)"
grep -q "warning: .*$(basename "$blk1").*rewriting" repair.err ||
    fail "the same-size corrupt block was not rewritten with a warning: $(cat repair.err)"
grep -q "$(basename "$blk3")" repair.err &&
    fail "a block of the wrong size needs no warning: $(cat repair.err)"
"$CS" verify D/index > /dev/null || fail "create did not repair D"

# --- Keys, signatures ---------------------------------------------------
"$CS" keygen k1.pem k1.pub > kg.txt || fail "keygen"
"$CS" keygen k2.pem k2.pub > /dev/null || fail "keygen 2"
[ "$(stat -c %a k1.pem)" = 600 ] || fail "private key mode"
id1=$(sed -n 's/^key id \([0-9a-f]*\):.*/\1/p' kg.txt)
expect_fail 1 "keygen refuses to overwrite" "$CS" keygen k1.pem new.pub
"$CS" create -q -B 64K -l 3 -n signed -k k1.pem raw.img K || fail "signed create"
head -1 K/index.sig | grep -qx 'nbdkit-cloop-signature 1' || fail "sig header"
"$CS" verify -p k1.pub K/index > v.txt || fail "verify with the right key"
grep -q "signature: good, key $id1" v.txt || fail "verify did not name the key"
expect_fail 2 "verify with the wrong key" "$CS" verify -p k2.pub K/index
expect_fail 2 "verify of an unsigned index with a key" \
    "$CS" verify -p k1.pub S/index
# OpenSSL alone agrees with the signature.
sig=$(awk '$1 == "ed25519" { print $3 }' K/index.sig)
echo "$sig" | base64 -d > sig.bin
openssl pkeyutl -verify -pubin -inkey k1.pub -rawin -in K/index \
    -sigfile sig.bin > /dev/null || fail "openssl disagrees with the signature"
"$CS" sign -k k2.pem K/index > /dev/null || fail "sign with a second key"
[ "$(grep -c '^ed25519 ' K/index.sig)" -eq 2 ] || fail "two signatures expected"
"$CS" verify -p k2.pub K/index > /dev/null || fail "verify with the second key"
"$CS" sign -k k2.pem K/index > /dev/null || fail "re-sign"
[ "$(grep -c '^ed25519 ' K/index.sig)" -eq 2 ] || fail "re-sign added a line"
"$CS" info K/index | grep -q "^signatures: .*$id1" || fail "info key ids"
# A new index replaces every old signature.
"$CS" create -q -B 64K -l 3 -n signed raw.img K || fail "unsigned re-create"
[ ! -e K/index.sig ] || fail "stale index.sig left beside a new index"
# Keys of the wrong type.
openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out rsa.pem \
    2> /dev/null
openssl pkey -in rsa.pem -pubout -out rsa.pub 2> /dev/null
expect_fail 1 "create with an RSA key" \
    "$CS" create -q -k rsa.pem -n x raw.img K2
[ ! -e K2/index ] || fail "an index was written despite a bad key"
expect_fail 2 "verify with an RSA public key" "$CS" verify -p rsa.pub K/index
expect_fail 1 "sign with a public key" "$CS" sign -k k1.pub K/index
expect_fail 1 "sign with a missing key" "$CS" sign -k nothere.pem K/index

# --- Expiry -------------------------------------------------------------
"$CS" create -q -B 64K -l 3 -n exp --expires 3600 -o exp.idx raw.img S ||
    fail "create --expires 3600"
"$CS" verify --no-blocks S/exp.idx | grep -q 'valid until' || fail "expiry"
"$CS" create -q -B 64K -l 3 -n expired --expires @1000 -o old.idx raw.img S \
    2> /dev/null || fail "create --expires @1000"
expect_fail 2 "verify of an expired index" "$CS" verify S/old.idx
grep -q EXPIRED out.txt || fail "expiry not reported"
"$CS" create -q -B 64K -l 3 -n soon --expires 1 -o soon.idx raw.img S
sleep 2
expect_fail 2 "verify after --expires 1" "$CS" verify --no-blocks S/soon.idx

# --- Bad input ------------------------------------------------------------
expect_fail 64 "no command" "$CS"
expect_fail 64 "unknown command" "$CS" frobnicate
expect_fail 64 "create without arguments" "$CS" create
expect_fail 64 "create with one argument" "$CS" create raw.img
expect_fail 64 "unknown option" "$CS" create --frob raw.img S
expect_fail 64 "bad block size" "$CS" create -B 1000 raw.img S
expect_fail 64 "block size too large" "$CS" create -B 128M raw.img S
expect_fail 64 "unknown codec" "$CS" create -c lzo raw.img S
expect_fail 64 "level out of range" "$CS" create -c zlib -l 12 raw.img S
expect_fail 64 "zero threads" "$CS" create -j 0 raw.img S
expect_fail 64 "bad --expires" "$CS" create --expires soon raw.img S
expect_fail 64 "bad revision" "$CS" create -r -1 raw.img S
expect_fail 64 "empty name" "$CS" create -n '' raw.img S
expect_fail 64 "control character in name" "$CS" create -n "$(printf 'a\tb')" raw.img S
expect_fail 64 "name too long" "$CS" create -n "$(printf '%0300d' 0)" raw.img S
expect_fail 64 "invalid UTF-8 description" \
    "$CS" create -d "$(printf '\xff\xfe')" raw.img S
expect_fail 64 "index name with a slash" "$CS" create -o ../x raw.img S
expect_fail 64 "stdin without a name" "$CS" create - S < raw.img
expect_fail 1 "missing source" "$CS" create nothere.img S
grep -q 'nothere.img' err.txt || fail "missing source not named"
expect_fail 1 "empty source" "$CS" create -n e /dev/null E
: > empty.img
expect_fail 1 "empty source file" "$CS" create empty.img E
[ ! -e E/index ] || fail "index written for an empty image"
head -c 3000 v2.cloop > trunc.cloop 2> /dev/null ||
    head -c 3000 v4mixed.cloop > trunc.cloop
expect_fail 1 "truncated cloop" "$CS" create trunc.cloop E
expect_fail 1 "-t cloop on a raw image" "$CS" create -t cloop raw.img E
echo file > notadir
expect_fail 1 "store below a file" "$CS" create raw.img notadir/S
expect_fail 1 "store is a file" "$CS" create raw.img notadir
expect_fail 64 "verify without index" "$CS" verify
expect_fail 2 "verify of a missing index" "$CS" verify nothere/index
head -c 200 S/index > bad.idx
expect_fail 2 "verify of a truncated index" "$CS" verify bad.idx
expect_fail 2 "verify of a non-index" "$CS" verify raw.img
expect_fail 2 "verify with a missing key file" "$CS" verify -p none.pub S/index
expect_fail 1 "info of a truncated index" "$CS" info bad.idx
expect_fail 1 "info of a missing index" "$CS" info nothere
expect_fail 64 "diff with one index" "$CS" diff S/index
expect_fail 1 "diff with a bad index" "$CS" diff S/index bad.idx
expect_fail 64 "sign without a key" "$CS" sign S/index
expect_fail 1 "sign a bad index" "$CS" sign -k k1.pem bad.idx
expect_fail 64 "keygen with one file" "$CS" keygen only.pem
for c in create keygen sign verify info diff warm cache; do
    "$CS" $c --help | grep -q "^Usage: cloop-store $c" || fail "$c --help"
done
"$CS" --help | grep -q '^Usage:' || fail "--help"
# Every default --help prints is the one the code uses: compare with
# what a create without -l/-B/-c writes, and the levels with the man page.
"$CS" create --help > help.txt
grep -q 'defaults: zlib 6, zstd 9,' help.txt &&
    grep -q '^ *xz 6)' help.txt || fail "create --help levels: $(grep -A1 level help.txt)"
grep -q 'default 256K' help.txt || fail "create --help block size"
grep -q 'default zlib' help.txt || fail "create --help codec"
"$CS" info S/default.idx > info.txt
grep -q '^block size: *262144$' info.txt && grep -q '^codec: *zlib$' info.txt ||
    fail "the defaults --help prints are not those create uses"
"$CS" create -q -c zstd -o zdef.idx raw.img S && "$CS" create -q -c zstd -l 9 -o z9.idx raw.img S ||
    fail "zstd create"
# raw.img is 5 blocks of 256K: the block tables are the last 5 * 36 bytes.
cmp <(tail -c 180 S/zdef.idx) <(tail -c 180 S/z9.idx) ||
    fail "zstd's default level is not the 9 that --help prints"
no_temps S

# --- Out of space: no index, no temporary files ---------------------------
mkdir small
if mount -t tmpfs -o size=256k tmpfs small 2> /dev/null; then
    cleanup_fn umount "$tmpdir/small"
    make_sample big 3000000
    expect_fail 1 "create on a full file system" \
        "$CS" create -q -B 64K -c zlib -l 1 big small/S
    grep -q 'No space left' err.txt || fail "ENOSPC not reported"
    [ ! -e small/S/index ] || fail "index written on a full file system"
    no_temps small
else
    echo "cannot mount a small tmpfs: skipping the ENOSPC case"
fi

echo "$0: all cases passed"
