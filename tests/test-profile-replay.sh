#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: recording a boot and replaying its profile, for a signed
# block store served by nginx behind a 100 ms delay proxy.
#   record: profile-record= writes, at disconnect, the blocks a scripted
#     client read, in the order it first read them (readahead=0).
#   replay: after `cloop-store profile add`, a fresh plugin whose client
#     reads nothing fetches exactly the profile's blocks, no others
#     (-D cloop.blocks=1 names every block filled; nginx logs every
#     block file GET).
#   order and overshoot: with memory-cache-size=2M the replay runs at
#     most 16 entries (half the memory cache) past the client: an idle
#     client gets exactly the first 16 entries; a read of entry 40's
#     block makes it jump there and run 16 past it.
#   no read-ahead beside it: a client reading blocks 0-7 in order while
#     the replay is at work makes nothing but those and profile blocks
#     filled.
#   demand first: a read of a block outside the profile, issued while
#     the replay of 192 blocks has them queued, is answered within a
#     generous 1.2 s (about 6 round trips; queued behind the replay it
#     would wait for most of its ~3 s).
#   a cloop file: `cloop-store profile build` and profile= with
#     profile-sha256= replay it too; a wrong pin and a URL without one
#     are refused, naming the key.
# (A tampered profile in a signed index is refused with the index:
# tests/test-store-profile.sh.)

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires_plugin_tools
requires nbdsh --version
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE
BS=65536
NB=256

cd "$tmpdir"
make_sample raw.img $((BS * NB))
"$CS" keygen k.pem k.pub > /dev/null || fail "keygen"
mkdir www
"$CS" create -q -B $BS -c zlib -n bootimg -k k.pem raw.img www/s ||
    fail "create"
"$MKCLOOP" -d v2 -B $BS raw.img www/img.cloop || fail "mkcloop"
start_nginx "$tmpdir/www"
start_delayproxy "$NGINX_PORT" 100
STORE_URL=$PROXY_URL/s/index

# The scripted "boot": 192 distinct blocks in a fixed shuffled order,
# one 4 KiB read in each.
/usr/bin/python3 -c '
import random
r = random.Random(11)
b = list(range(256))
r.shuffle(b)
print("\n".join(str(x) for x in b[:192]))' > boot.order
cat > boot.py <<PY
exp = open("$tmpdir/raw.img", "rb").read()
for line in open("$tmpdir/boot.order"):
    off = int(line) * $BS + 512
    assert h.pread(4096, off) == exp[off:off + 4096], off
PY

# blocks_filled ERRFILE: the blocks the plugin filled, in order.
blocks_filled ()
{
    sed -n 's/.*debug: block \([0-9]*\): filled$/\1/p' "$1"
}

# --- record ----------------------------------------------------------------
nbdkit_cloop -U - -v \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/boot.py').read())\"" \
    "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none readahead=0 \
    profile-record="$tmpdir/boot1.txt" 2> rec.err ||
    { grep -v debug: rec.err; fail "recording run failed"; }
[ -s boot1.txt ] || fail "profile-record= wrote nothing"
head -n 2 boot1.txt
[ "$(head -n 1 boot1.txt)" = "nbdkit-cloop-profile 1" ] || fail "bad magic line"
[ "$(sed -n 2p boot1.txt)" = "image $NB $BS bootimg" ] || fail "bad image line"
tail -n +3 boot1.txt | cut -d' ' -f1 > recorded.order
cmp recorded.order boot.order || fail "recorded order differs from the reads"
ls boot1.txt.* 2> /dev/null && fail "temporary file left beside the recording"
echo "ok: recorded $(wc -l < recorded.order) blocks in read order"

"$CS" profile add -k k.pem www/s boot1.txt > /dev/null || fail "profile add"

# --- replay, idle client --------------------------------------------------
cat > idle.py <<PY
import re, time
t0 = time.time()
while time.time() - t0 < 60:
    m = re.search(r"profile_fetched_blocks_total\{[^}]*\} (\S+)", open("$tmpdir/m.prom").read())
    if m and float(m.group(1)) >= 192:
        break
    time.sleep(0.2)
time.sleep(1)
PY
log_before=$(wc -l < "$NGINX_LOG")
nbdkit_cloop -U - -v -D cloop.blocks=1 -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/idle.py').read())\"" \
    "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none readahead=0 \
    metrics-file="$tmpdir/m.prom" metrics-interval=1 2> idle.err ||
    { grep -v debug: idle.err; fail "replay run failed"; }
grep 'boot profile:' idle.err | tail -n 1
blocks_filled idle.err | sort -n > idle.filled
sort -n boot.order > profile.sorted
cmp idle.filled profile.sorted ||
    fail "the replay filled other blocks than the profile's ($(wc -l < idle.filled) filled)"
tail -n +$((log_before + 1)) "$NGINX_LOG" > idle.log
gets=$(grep -c "\"GET /s/blocks/" idle.log)
[ "$gets" -eq 192 ] || fail "$gets block files fetched for a profile of 192"
echo "ok: replay fetched exactly the 192 profile blocks ($gets GETs)"

# --- order and overshoot ----------------------------------------------------
cat > jump.py <<PY
import re, time
def fetched():
    try:
        m = re.search(r"profile_fetched_blocks_total\{[^}]*\} (\S+)", open("$tmpdir/j.prom").read())
    except FileNotFoundError:
        return 0
    return float(m.group(1)) if m else 0
def settle(want):
    t0 = time.time()
    while time.time() - t0 < 60 and fetched() < want:
        time.sleep(0.2)
    time.sleep(1.5)             # nothing more may come
    return fetched()
print("idle:", settle(16))
order = [int(x) for x in open("$tmpdir/boot.order")]
exp = open("$tmpdir/raw.img", "rb").read()
off = order[40] * $BS
assert h.pread(4096, off) == exp[off:off + 4096]
print("after a read of entry 40:", settle(32))
PY
nbdkit_cloop -U - -v -D cloop.blocks=1 -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/jump.py').read())\"" \
    "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none readahead=0 \
    memory-cache-size=2M metrics-file="$tmpdir/j.prom" metrics-interval=1 \
    > jump.out 2> jump.err ||
    { grep -v debug: jump.err; cat jump.out; fail "overshoot run failed"; }
cat jump.out
grep 'boot profile:' jump.err | tail -n 1
blocks_filled jump.err | sort -n > jump.filled
{ sed -n 1,16p boot.order; sed -n 41,57p boot.order; } | sort -n > jump.want
cmp jump.filled jump.want ||
    fail "replay with a 2M cache filled $(tr '\n' ' ' < jump.filled), expected entries 0-15, 40 and 41-56"
echo "ok: replay ran 16 entries ahead of an idle client, then jumped to entry 40"

# --- demand first -----------------------------------------------------------
# Block 255 is not in the profile (the shuffle's last 64 are not).
out_block=$(/usr/bin/python3 -c '
import random
r = random.Random(11)
b = list(range(256))
r.shuffle(b)
print(b[200])')
cat > demand.py <<PY
import time
exp = open("$tmpdir/raw.img", "rb").read()
time.sleep(0.5)                 # the replay has queued its jobs
off = $out_block * $BS
t0 = time.monotonic()
assert h.pread(4096, off) == exp[off:off + 4096]
took = time.monotonic() - t0
print("demand read during the replay: %.3f s" % took)
assert took < 1.2, took
PY
nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/demand.py').read())\"" \
    "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none readahead=0 \
    connections=4 > demand.out 2> demand.err ||
    { grep -v debug: demand.err; cat demand.out; fail "demand read was delayed"; }
cat demand.out
grep 'boot profile:' demand.err | tail -n 1

# --- no read-ahead while the replay is at work -----------------------------
# A client reads blocks 0-7 in order (read-ahead would fetch 8-11 and
# on); with the replay at work (memory-cache-size=2M keeps it waiting
# 16 entries ahead of the client, rather than done within a second),
# only those and profile blocks are filled.
cat > seqread.py <<PY
import time
exp = open("$tmpdir/raw.img", "rb").read()
for b in range(8):
    off = b * $BS
    assert h.pread($BS, off) == exp[off:off + $BS]
time.sleep(2)
PY
nbdkit_cloop -U - -v -D cloop.blocks=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/seqread.py').read())\"" \
    "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none \
    memory-cache-size=2M 2> seq.err ||
    { grep -v debug: seq.err; fail "sequential read during the replay failed"; }
{ cat boot.order; seq 0 7; } | sort -u > allowed
blocks_filled seq.err | sort -u > seq.filled
extra=$(comm -23 seq.filled allowed | tr '\n' ' ')
[ -z "$extra" ] || fail "read-ahead ran beside the replay: filled $extra"
ahead=$(seq 8 11 | sort | comm -23 - allowed | wc -l)
echo "ok: no read-ahead beside the replay ($ahead of blocks 8-11 are outside the profile)"
[ "$ahead" -gt 0 ] || echo "(the check above proved little: 8-11 are all in the profile)"

# --- a cloop file -----------------------------------------------------------
sed "s/^image $NB $BS bootimg\$/image $NB $BS img.cloop/" boot1.txt > boot1c.txt
"$CS" profile build -o www/img.prof boot1c.txt > build.out ||
    fail "profile build"
cat build.out
sum=$(cut -d' ' -f1 build.out)
[ "$sum" = "$(sha256sum www/img.prof | cut -d' ' -f1)" ] ||
    fail "profile build printed another SHA-256 than the file's"
nbdkit_cloop -U - -v -D cloop.blocks=1 -D cloop.stats=1 \
    --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/idle.py').read().replace('m.prom', 'c.prom'))\"" \
    "$PLUGIN" url="$PROXY_URL/img.cloop" profile="$PROXY_URL/img.prof" \
    profile-sha256="$sum" cache-dir=none readahead=0 \
    metrics-file="$tmpdir/c.prom" metrics-interval=1 2> cloop.err ||
    { grep -v debug: cloop.err; fail "cloop file replay failed"; }
blocks_filled cloop.err | sort -n > cloop.filled
cmp cloop.filled profile.sorted || fail "cloop file: the replay filled other blocks"
echo "ok: a cloop file's pinned profile is replayed"

bad=0000000000000000000000000000000000000000000000000000000000000000
if nbdkit_cloop -U - --run true "$PLUGIN" url="$PROXY_URL/img.cloop" \
       profile="$PROXY_URL/img.prof" profile-sha256=$bad cache-dir=none \
       2> pin.err; then
    fail "a profile with the wrong pin was accepted"
fi
grep -q "profile=.*SHA-256 is $sum, not the profile-sha256= given" pin.err ||
    { cat pin.err; fail "wrong pin: unclear error"; }
if nbdkit_cloop -U - --run true "$PLUGIN" url="$PROXY_URL/img.cloop" \
       profile="$PROXY_URL/img.prof" cache-dir=none 2> nopin.err; then
    fail "a profile URL without profile-sha256= was accepted"
fi
grep -q "needs profile-sha256=" nopin.err || { cat nopin.err; fail "no pin: unclear error"; }
if nbdkit_cloop -U - --run true "$PLUGIN" url="$STORE_URL" pubkey=k.pub \
       profile=www/img.prof cache-dir=none 2> store.err; then
    fail "profile= on a block store was accepted"
fi
grep -q "profile= is for cloop files" store.err || { cat store.err; fail "store: unclear error"; }
echo ok
