#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: url= accepts an ISO9660 image on a mirror (nginx on
# 127.0.0.1) and serves /KNOPPIX/KNOPPIX inside it lazily: a start
# fetches only a few small ranges (descriptors, two directories, the
# cloop header and index), never the whole ISO; a whole read is
# byte-exact, every request is a ranged 206, and the bytes fetched are
# about the cloop file's, not the ISO's (which holds a large other
# file); a warm start with the same disk cache asks the server
# nothing; the same cloop file served bare from another URL is cached
# on its own (blocks are keyed by the URL's identity and the index, as
# an index alone does not name the data); with the server stopped, the
# ISO is served from the disk cache alone.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires test -x /usr/bin/create_compressed_fs
requires genisoimage -version
requires nbdinfo --version

cd "$tmpdir"
make_sample in 3000001
create_compressed_fs -q -B 65536 -L 9 in knoppix 2>/dev/null ||
    fail "create_compressed_fs failed"
pad_to_block in 65536 expected
mkdir -p tree/KNOPPIX www
cp knoppix tree/KNOPPIX/KNOPPIX
# Other content of the DVD, which must not be fetched.
head -c 20000000 /dev/urandom > tree/KNOPPIX/KNOPPIX-other-data
genisoimage -quiet -R -J -o www/knoppix.iso tree || fail "genisoimage"
cp knoppix www/bare
start_nginx www
cache=$tmpdir/cache

# check_log FROM MAX_REQUESTS MAX_BYTES WHAT: nginx log lines after
# line FROM are all ranged 206 replies, at most MAX_REQUESTS of them,
# with at most MAX_BYTES of bodies in all.
check_log ()
{
    /usr/bin/python3 - "$NGINX_LOG" "$@" <<'PY' || fail "$4: see above"
import re, sys
log, start, max_n, max_bytes, what = sys.argv[1], int(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lines = [l for l in open(log).read().splitlines()
         if "web-servers-ready-probe" not in l][start:]
total = 0
for l in lines:
    m = re.match(r'(\d+) "([^"]*)" (\d+) "([^"]*)"', l)
    assert m, "bad log line %r" % l
    status, req, nbytes, rng = m.groups()
    assert status == "206" and rng.startswith("bytes="), \
        "%s: not a ranged 206: %s" % (what, l)
    total += int(nbytes)
    print("  %s %s" % (rng, nbytes))
print("%s: %d requests, %d bytes" % (what, len(lines), total))
assert len(lines) <= max_n, "%s: %d requests" % (what, len(lines))
assert total <= max_bytes, "%s: %d bytes fetched" % (what, total)
PY
}

iso_size=$(stat -c %s www/knoppix.iso)
cloop_size=$(stat -c %s knoppix)

# A start alone: a few small ranges.
n0=$(nginx_request_count)
nbdkit_cloop -U - --run 'nbdinfo "$uri" > info' "$PLUGIN" \
    url="$NGINX_URL/knoppix.iso" cache-dir="$cache" 2> err ||
    { cat err; fail "start: nbdkit failed"; }
grep -q "$(stat -c %s expected)" info || { cat info; fail "start: wrong size"; }
# (nbdinfo reads the first blocks too; the HTTP source probes the
# first 64 KiB, which hold the descriptors and directories.)
check_log "$n0" 12 400000 "start"
rm -rf "$cache"

# A whole read: byte-exact, only about the cloop file's bytes fetched.
n0=$(nginx_request_count)
nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" \
    url="$NGINX_URL/knoppix.iso" cache-dir="$cache" 2> err ||
    { cat err; fail "read: nbdkit failed"; }
cmp out expected || fail "read: wrong bytes"
check_log "$n0" 200 $((cloop_size + 300000)) "whole read"
[ "$cloop_size" -lt $((iso_size / 4)) ] || fail "the ISO is not much larger"

# Warm start and read: nothing asked of the server.
n0=$(nginx_request_count)
rm -f out
nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" \
    url="$NGINX_URL/knoppix.iso" cache-dir="$cache" 2> err ||
    { cat err; fail "warm: nbdkit failed"; }
cmp out expected || fail "warm: wrong bytes"
[ "$(nginx_request_count)" -eq "$n0" ] ||
    fail "warm: $(( $(nginx_request_count) - n0 )) requests"
echo "ok: warm start and read asked nothing"

# The same file bare: its own URL, so its own blocks, byte-exact.
n0=$(nginx_request_count)
rm -f out
nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" \
    url="$NGINX_URL/bare" cache-dir="$cache" 2> err ||
    { cat err; fail "bare: nbdkit failed"; }
cmp out expected || fail "bare: wrong bytes"
check_log "$n0" 200 $((cloop_size + 100000)) "bare file after the ISO"

# The server gone: the ISO's descriptors, directories, the cloop
# header and index and the blocks all come from the disk cache.
_ws_stop "$NGINX_PID"
rm -f out
nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" \
    url="$NGINX_URL/knoppix.iso" cache-dir="$cache" revalidate=0 2> err ||
    { cat err; fail "offline: nbdkit failed"; }
cmp out expected || fail "offline: wrong bytes"
grep -q "without the server" err || { cat err; fail "offline: no warning"; }
echo "ok: offline start and read from the disk cache"
