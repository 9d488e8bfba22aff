#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: cache-max-size bounds the disk cache even when the image
# is four times bigger: a whole read (twice) is byte-exact, and after
# each pass the files under cache-dir take no more disk space
# (st_blocks) than the limit plus one entry of slack.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

LIMIT=$((2 * 1024 * 1024))
BS=65536
www=$tmpdir/www
cache=$tmpdir/cache
mkdir -p "$www"
# Incompressible input: the image is about as big as the input.
/usr/bin/python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(5).randbytes(8 * 1024 * 1024 + 4321))' \
    > "$tmpdir/in"
"$MKCLOOP" -d v2 -B $BS "$tmpdir/in" "$www/img" || fail "mkcloop failed"
pad_to_block "$tmpdir/in" $BS "$tmpdir/expected"
img_size=$(stat -c %s "$www/img")
[ "$img_size" -gt $((3 * LIMIT)) ] || fail "image too small: $img_size"
start_nginx "$www"

# Slack: one entry (a block stored raw or nearly so, plus its header,
# rounded up to whole 4 KiB blocks of the file system).
slack=$(( (BS + 64 + 1024 + 4095) / 4096 * 4096 ))

for pass in 1 2; do
    rm -f "$tmpdir/out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$tmpdir/out\"" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$cache" \
        cache-max-size=$LIMIT 2> "$tmpdir/err.$pass" || {
        cat "$tmpdir/err.$pass"; fail "pass $pass: nbdkit failed"; }
    cmp "$tmpdir/out" "$tmpdir/expected" || fail "pass $pass: wrong bytes"
    used=$(find "$cache" -type f -printf '%b\n' | awk '{ s += $1 * 512 } END { print s + 0 }')
    apparent=$(find "$cache" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    files=$(find "$cache" -type f | wc -l)
    echo "$0: pass $pass: image $img_size bytes, cache $used bytes on disk" \
         "($apparent apparent) in $files files, limit $LIMIT (+$slack)"
    [ "$used" -le $((LIMIT + slack)) ] ||
        fail "pass $pass: cache uses $used bytes, limit $LIMIT + $slack"
    [ "$used" -gt $((LIMIT / 4)) ] ||
        fail "pass $pass: the cache holds almost nothing ($used bytes)"
    if grep -q 'warning' "$tmpdir/err.$pass"; then
        cat "$tmpdir/err.$pass"; fail "pass $pass: warnings"
    fi
done
n=$(nginx_request_count)
echo "$0: ok ($n requests in all)"
