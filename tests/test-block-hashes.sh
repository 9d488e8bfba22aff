#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: block-hash lists of plain cloop files (cloop-store
# hashes, block-hashes=).  For a V2.0 image from the real
# create_compressed_fs, mkcloop V4 images of every codec and a FreeBSD
# dedup image (zero blocks): the signed and the pinned list serve the
# image byte for byte through file= and through url= from nginx on
# 127.0.0.1 (with a disk cache, cold and warm).  A block whose
# compressed bytes are flipped in place fails its reads with EIO and a
# log line naming the block and its SHA-256, while every other block
# reads fine (for the raw codec the same flip is served silently
# without a list).  A list for another image, a tampered, truncated,
# unsigned or wrongly signed list, a wrong pin and a missing URL stop
# nbdkit at start-up with an error naming the list.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"

requires_plugin_tools
requires nbdsh --version
requires test -x "$CLOOP_STORE"
requires test -x /usr/bin/create_compressed_fs
requires /usr/sbin/nginx -v

CS=$CLOOP_STORE
bs=4096
www=$tmpdir/www
mkdir -p "$www" "$tmpdir/exp"
make_sample "$tmpdir/in" 300001
pad_to_block "$tmpdir/in" $bs "$tmpdir/expected"

"$CS" keygen "$tmpdir/k1.pem" "$tmpdir/k1.pub" >/dev/null
"$CS" keygen "$tmpdir/k2.pem" "$tmpdir/k2.pub" >/dev/null

# The images.
create_compressed_fs -q -B $bs -L 9 "$tmpdir/in" "$www/ccfs" \
    > "$tmpdir/ccfs.log" 2>&1 || {
    cat "$tmpdir/ccfs.log"
    fail "create_compressed_fs failed"
}
images=ccfs
for c in zlib none xz lz4 lzo; do
    "$MKCLOOP" -d v4 -B $bs -c $c "$tmpdir/in" "$www/v4-$c" ||
        fail "mkcloop -d v4 -c $c failed (every codec is built here)"
    images="$images v4-$c"
done
"$MKCLOOP" -d fbsd-dedup -B $bs "$tmpdir/in" "$www/fbsd-dedup" ||
    fail "mkcloop -d fbsd-dedup failed"
images="$images fbsd-dedup"

# make_list NAME: NAME.hashes + NAME.hashes.sig (key 1); sets sha to
# the SHA-256 the tool printed, and checks it is the file's.
make_list ()
{
    "$CS" hashes -k "$tmpdir/k1.pem" -o "$www/$1.hashes" "$www/$1" \
        > "$tmpdir/hashes.out" || fail "cloop-store hashes $1 failed"
    sha=$(sed -n 's/.*, sha256 \([0-9a-f]\{64\}\)$/\1/p' "$tmpdir/hashes.out")
    [ "$sha" = "$(sha256sum < "$www/$1.hashes" | cut -d' ' -f1)" ] ||
        fail "$1: printed SHA-256 '$sha' is not the list's"
    [ -s "$www/$1.hashes.sig" ] || fail "$1: no signature file"
}

# read_all WHAT EXPECTED PLUGIN-ARGS...: nbdcopy the export, compare.
read_all ()
{
    what=$1 exp=$2
    shift 2
    rm -f "$tmpdir/out.raw"
    nbdkit_cloop -U - -v --run "nbdcopy \"\$uri\" \"$tmpdir/out.raw\"" \
        "$PLUGIN" "$@" 2> "$tmpdir/err" || {
        tail -n 20 "$tmpdir/err"
        fail "$what: nbdkit/nbdcopy failed"
    }
    cmp "$tmpdir/out.raw" "$exp" || fail "$what: export differs"
    grep -q "every block checked against block-hashes" "$tmpdir/err" ||
        fail "$what: the list was not attached"
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$what: sanitizer report"
    fi
}

start_nginx "$www"
cases=0
for name in $images; do
    make_list "$name"
    list=$www/$name.hashes
    read_all "$name file= signed" "$tmpdir/expected" file="$www/$name" \
        block-hashes="$list" pubkey="$tmpdir/k1.pub"
    grep -q "block-hashes $list: signed by key" "$tmpdir/err" ||
        fail "$name: signature not reported as checked"
    read_all "$name file= pinned" "$tmpdir/expected" file="$www/$name" \
        block-hashes="$list" block-hashes-sha256="$sha" \
        pubkey="$tmpdir/k2.pub"
    cache=$tmpdir/cache-$name
    for run in cold warm; do
        read_all "$name url= signed ($run cache)" "$tmpdir/expected" \
            url="$NGINX_URL/$name" block-hashes="$NGINX_URL/$name.hashes" \
            pubkey="$tmpdir/k1.pub" cache-dir="$cache"
    done
    [ -d "$cache/blk" ] || fail "$name: blocks not cached by their hash"
    read_all "$name url= pinned by fragment" "$tmpdir/expected" \
        url="$NGINX_URL/$name" cache-dir=none \
        block-hashes="$NGINX_URL/$name.hashes#sha256=$sha"
    echo "ok: $name: signed and pinned, file= and url= (cold, warm)"
    cases=$((cases + 1))
done

# ---------------------------------------------------------------------
# A block flipped in place.
cat > "$tmpdir/check.py" <<'PY'
import errno, os
bs = int(os.environ["BS"])
bad = int(os.environ["BAD"])
want = open(os.environ["EXPECTED"], "rb").read()
assert h.get_size() == len(want)

def must_fail(count, offset):
    try:
        h.pread(count, offset)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "errno %r, expected EIO" % e.errno
    else:
        raise AssertionError("read %d@%d of a corrupt block succeeded"
                             % (count, offset))

must_fail(bs, bad * bs)
must_fail(100, bad * bs + 1000)
must_fail(2 * bs, (bad - 1) * bs)
must_fail(bs, bad * bs)            # again: nothing bad was cached
assert h.pread(bad * bs, 0) == want[:bad * bs]
assert h.pread(len(want) - (bad + 1) * bs, (bad + 1) * bs) == \
    want[(bad + 1) * bs:]
PY

# block_at IMAGE N: "BLOCK LENGTH OFFSET" of the first stored block >= N
# whose bytes no other block shares (FreeBSD dedup), from the map the
# plugin prints.
block_at ()
{
    nbdkit_cloop -U - -v -D cloop.map=1 --run true "$PLUGIN" file="$1" \
        2>&1 | sed -n 's/.*debug: block \([0-9]*\): \([a-z0-9]*\) \([0-9]*\) bytes at \([0-9]*\)$/\1 \2 \3 \4/p' |
        awk -v n="$2" '{ b[NR] = $1; c[NR] = $2; l[NR] = $3; o[NR] = $4;
                         uses[$4]++ }
                       END { for (i = 1; i <= NR; i++)
                               if (b[i] >= n && c[i] != "zero" &&
                                   uses[o[i]] == 1) {
                                 print b[i], l[i], o[i]; exit } }'
}

# flip SRC DST: DST = SRC with one byte in the middle of a block
# flipped; sets bad (the block's number).
flip ()
{
    read -r bad len off <<EOF
$(block_at "$1" 3)
EOF
    [ -n "$len" ] || fail "$1: no stored block found in the map"
    cp "$1" "$2"
    /usr/bin/python3 - "$2" $((off + len / 2)) <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1)
    f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0x20]))
PY
}

# corrupt_reads WHAT PLUGIN-ARGS...: the checks above, and the log
# names block $bad and the hash mismatch.
corrupt_reads ()
{
    what=$1
    shift
    BS=$bs BAD=$bad EXPECTED="$tmpdir/expected" \
      nbdkit_cloop -U - \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/check.py').read())\"" \
        "$PLUGIN" "$@" 2> "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$what: corrupt-block checks failed"
    }
    grep -Eq "block $bad \\([0-9]+ bytes at offset [0-9]+\\): content does not match its SHA-256 [0-9a-f]{64}" \
        "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$what: no log line naming block $bad and the hash mismatch"
    }
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$what: sanitizer report"
    fi
    echo "ok: $what: $(grep -m1 'does not match' "$tmpdir/err" | sed 's/.*error: //')"
}

for name in $images; do
    flip "$www/$name" "$www/$name-bad"
    corrupt_reads "$name flipped, file=" file="$www/$name-bad" \
        block-hashes="$www/$name.hashes" pubkey="$tmpdir/k1.pub"
    cases=$((cases + 1))
done
# Over HTTP too (the block is fetched twice, then EIO).
flip "$www/ccfs" "$www/ccfs-bad"
corrupt_reads "ccfs flipped, url=" url="$NGINX_URL/ccfs-bad" \
    cache-dir="$tmpdir/cache-bad" pubkey="$tmpdir/k1.pub" \
    block-hashes="$NGINX_URL/ccfs.hashes"

# Why: without a list, the raw codec serves the flipped block.
rm -f "$tmpdir/out.raw"
nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out.raw\"" \
    "$PLUGIN" file="$www/v4-none-bad" || fail "v4-none-bad without a list"
if cmp -s "$tmpdir/out.raw" "$tmpdir/expected"; then
    fail "the flipped raw block did not change the export"
fi
echo "ok: without block-hashes the flipped raw block is served as is"

# ---------------------------------------------------------------------
# Lists that must stop nbdkit at start-up.

# refuses WHAT REGEX PLUGIN-ARGS...: nbdkit must fail to start, its
# error must name the list (block-hashes ...) and match REGEX.
refuses ()
{
    what=$1 re=$2
    shift 2
    if nbdkit_cloop -U - --run true "$PLUGIN" "$@" 2> "$tmpdir/err"; then
        fail "$what: nbdkit started"
    fi
    grep -Eq "error: block-hashes [^ ]+: .*($re)" "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$what: error does not name the list or match /$re/"
    }
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$what: sanitizer report"
    fi
    echo "ok: refuses $what: $(grep -m1 'error: block-hashes' "$tmpdir/err" | sed 's/.*error: //')"
    cases=$((cases + 1))
}

img=$www/v4-zlib
list=$www/v4-zlib.hashes
make_sample "$tmpdir/other" 300011       # same block count, other bytes
"$MKCLOOP" -d v4 -B $bs "$tmpdir/other" "$www/other" || fail mkcloop
"$CS" hashes -o "$www/other.hashes" "$www/other" 2>/dev/null
make_sample "$tmpdir/short" 5000
"$MKCLOOP" -d v4 -B $bs "$tmpdir/short" "$www/short" || fail mkcloop
"$CS" hashes -o "$www/short.hashes" "$www/short" 2>/dev/null

refuses "a list of another image" 'another image' \
    file="$img" block-hashes="$www/other.hashes"
refuses "a list of another geometry" 'list is for 2 blocks' \
    file="$img" block-hashes="$www/short.hashes"
refuses "a list of another image (url=)" 'another image' \
    url="$NGINX_URL/v4-zlib" cache-dir=none \
    block-hashes="$NGINX_URL/other.hashes"

cp "$list" "$tmpdir/tampered.hashes"
cp "$list.sig" "$tmpdir/tampered.hashes.sig"
/usr/bin/python3 - "$tmpdir/tampered.hashes" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(96 + 32 * 5 + 7); b = f.read(1)
    f.seek(96 + 32 * 5 + 7); f.write(bytes([b[0] ^ 1]))
PY
refuses "a tampered signed list" 'signature does not verify' \
    file="$img" block-hashes="$tmpdir/tampered.hashes" \
    pubkey="$tmpdir/k1.pub"
refuses "a list signed by another key" 'not signed by a trusted key' \
    file="$img" block-hashes="$list" pubkey="$tmpdir/k2.pub"
# cloop-store sign adds a second key's line to the list's .sig.
"$CS" sign -k "$tmpdir/k2.pem" "$list" > /dev/null ||
    fail "cloop-store sign of a block-hash list failed"
[ "$(grep -c '^ed25519 ' "$list.sig")" -eq 2 ] ||
    fail "cloop-store sign did not add a line to $list.sig"
for k in k1 k2; do
    read_all "v4-zlib signed by $k (cloop-store sign)" "$tmpdir/expected" \
        file="$img" block-hashes="$list" pubkey="$tmpdir/$k.pub"
done
echo "ok: cloop-store sign: a list signed by two keys is accepted with either"
cases=$((cases + 1))
cp "$list" "$tmpdir/unsigned.hashes"
refuses "an unsigned list when a key is required" 'not signed' \
    file="$img" block-hashes="$tmpdir/unsigned.hashes" \
    pubkey="$tmpdir/k1.pub"
refuses "a wrong pin" 'is not the pinned' \
    file="$img" block-hashes="$list" block-hashes-sha256="$(printf '%064d' 0)"
refuses "a wrong pin (url fragment)" 'is not the pinned' \
    url="$NGINX_URL/v4-zlib" cache-dir=none \
    block-hashes="$NGINX_URL/v4-zlib.hashes#sha256=$(printf 'ab%062d' 0)"
head -c 200 "$list" > "$tmpdir/truncated.hashes"
refuses "a truncated list" 'cannot hold' \
    file="$img" block-hashes="$tmpdir/truncated.hashes"
refuses "an image given as its own list" 'not a block-hash list' \
    file="$img" block-hashes="$img"
refuses "a list URL that is not there" 'HTTP|404|status' \
    url="$NGINX_URL/v4-zlib" cache-dir=none \
    block-hashes="$NGINX_URL/absent.hashes"

# Configuration errors and a block store (its index has its own hashes).
# start_fails WHAT REGEX PLUGIN-ARGS...: nbdkit fails, stderr matches.
start_fails ()
{
    what=$1 re=$2
    shift 2
    if nbdkit_cloop -U - --run true "$PLUGIN" "$@" 2> "$tmpdir/err"; then
        fail "$what: nbdkit started"
    fi
    grep -Eq "$re" "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$what: error does not match /$re/"
    }
    echo "ok: refuses $what: $(grep -m1 'error:' "$tmpdir/err" | sed 's/.*error: //')"
    cases=$((cases + 1))
}
start_fails "a pin that is not hex" \
    'block-hashes-sha256 must be 64 hexadecimal digits: 12xyz' \
    file="$img" block-hashes="$list" block-hashes-sha256=12xyz
start_fails "a fragment pin that is not hex" \
    'block-hashes fragment #sha256 must be 64 hexadecimal digits' \
    file="$img" block-hashes="$NGINX_URL/v4-zlib.hashes#sha256=$(printf '%063d' 0)g"
start_fails "a pin without a list" \
    'block-hashes-sha256 needs block-hashes=' \
    file="$img" block-hashes-sha256="$sha"
"$CS" create -q -B $bs -n test-store -k "$tmpdir/k1.pem" "$tmpdir/in" \
    "$tmpdir/store" > /dev/null || fail "cloop-store create failed"
refuses "a list given for a block store" 'only plain cloop files' \
    file="$tmpdir/store/index" pubkey="$tmpdir/k1.pub" block-hashes="$list"

# A tampered list trusted by nothing (no key, no pin) still starts: it
# then fails the read of the block whose hash it changed, and only it.
bad=5
corrupt_reads "an unverified tampered list" file="$img" \
    block-hashes="$tmpdir/tampered.hashes"

echo "$0: $cases cases passed"
[ "$cases" -ge 30 ] || fail "too few cases ran"
