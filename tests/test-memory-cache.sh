#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The memory cache: a second read of the image in the same process is
# served from memory (no new misses), and a cache smaller than the
# image stays within its bound while reads stay exact.  (readahead=0:
# every block is filled by the read that needs it, so counts are exact.)
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
requires command -v create_compressed_fs
requires nbdsh --version

make_sample "$tmpdir/in" $((4 * 1024 * 1024))
create_compressed_fs -q -B 65536 "$tmpdir/in" "$tmpdir/img" 2>/dev/null
blocks=$(( 4 * 1024 * 1024 / 65536 ))

# Two full passes over one connection; stats are logged at close.
nbdkit_cloop -f -v -D cloop.stats=1 -U - \
    --run "nbdsh -u \"\$uri\" -c '
exp = open(\"$tmpdir/in\", \"rb\").read()
for _ in range(2):
    for off in range(0, len(exp), 65536):
        assert h.pread(65536, off) == exp[off:off+65536]
'" "$PLUGIN" "$tmpdir/img" readahead=0 2> "$tmpdir/log" || { cat "$tmpdir/log"; fail "read failed"; }
stats=$(grep 'memory cache:' "$tmpdir/log" | tail -n 1)
echo "$stats"
misses=$(echo "$stats" | sed -n 's/.* \([0-9]*\) misses.*/\1/p')
hits=$(echo "$stats" | sed -n 's/.*cache: \([0-9]*\) hits.*/\1/p')
[ "$misses" = "$blocks" ] || fail "expected $blocks misses, got '$misses'"
[ "$hits" = "$blocks" ] || fail "expected $blocks hits, got '$hits'"

# A 256 KiB cache (4 blocks): two passes miss every time, and the cache
# never holds more than 4 blocks once the readers let go.
nbdkit_cloop -f -v -D cloop.stats=1 -U - \
    --run "nbdsh -u \"\$uri\" -c '
exp = open(\"$tmpdir/in\", \"rb\").read()
for _ in range(2):
    for off in range(0, len(exp), 65536):
        assert h.pread(65536, off) == exp[off:off+65536]
'" "$PLUGIN" "$tmpdir/img" readahead=0 memory-cache-size=256K 2> "$tmpdir/log" ||
    { cat "$tmpdir/log"; fail "read failed"; }
stats=$(grep 'memory cache:' "$tmpdir/log" | tail -n 1)
echo "$stats"
misses=$(echo "$stats" | sed -n 's/.* \([0-9]*\) misses.*/\1/p')
bytes=$(echo "$stats" | sed -n 's/.* \([0-9]*\) bytes in.*/\1/p')
[ "$misses" = $((2 * blocks)) ] || fail "expected $((2 * blocks)) misses, got '$misses'"
[ "$bytes" -le $((256 * 1024)) ] || fail "cache holds $bytes bytes > 256K"
