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
#   order and overshoot: with memory-cache-size=2M the replay keeps at
#     most 16 blocks (half the memory cache) fetched ahead and unread:
#     an idle client gets exactly the first 16 entries; a single read
#     of entry 40's block moves nothing; reads of the 16 make room for
#     16 more.
#   jump: clients that read entries 100-191 while the replay waits at
#     entry 32 make it jump there; entries 32-99 are never fetched.
#   shuffled boot: a boot that reads entry 150 first, then the profile
#     in shuffled runs of 8, gets no fetched block evicted unread and
#     no block fetched twice (but entry 150's), and most blocks from
#     the replay.
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
# metrics.py: helpers of the nbdsh scripts below (PROM is the metrics
# file of the run).
cat > metrics.py <<PY
import re, time
exp = open("$tmpdir/raw.img", "rb").read()
order = [int(x) for x in open("$tmpdir/boot.order")]
def metric(name):
    try:
        m = re.search(name + r"\{[^}]*\} (\S+)", open(PROM).read())
    except FileNotFoundError:
        return 0
    return float(m.group(1)) if m else 0
def settle(want):
    t0 = time.time()
    while time.time() - t0 < 60 and metric("profile_fetched_blocks_total") < want:
        time.sleep(0.2)
    time.sleep(1.5)             # nothing more may come
    return metric("profile_fetched_blocks_total")
def read_block(b):
    off = b * $BS + 512
    assert h.pread(4096, off) == exp[off:off + 4096], b
def read_entry(i):
    read_block(order[i])
PY
# run_script NAME PROM ARGS...: nbdsh runs NAME.py (after metrics.py)
# against the plugin with ARGS, metrics to PROM, stdout to NAME.out,
# stderr (-D cloop.blocks=1) to NAME.err.
run_script ()
{
    _n=$1 _prom=$2
    shift 2
    # shellcheck disable=SC2016
    nbdkit_cloop -U - -v -D cloop.blocks=1 -D cloop.stats=1 \
        --run "nbdsh -u \"\$uri\" -c \"PROM='$_prom'\" -c \"exec(open('$tmpdir/metrics.py').read())\" -c \"exec(open('$tmpdir/$_n.py').read())\"" \
        "$PLUGIN" url="$STORE_URL" pubkey=k.pub cache-dir=none readahead=0 \
        metrics-file="$_prom" metrics-interval=1 "$@" > "$_n.out" 2> "$_n.err" ||
        { grep -v debug: "$_n.err"; cat "$_n.out"; fail "$_n: run failed"; }
    cat "$_n.out"
    grep 'boot profile:' "$_n.err" | tail -n 1
}
# entries FIRST LAST: the blocks of profile entries FIRST..LAST (0-based).
entries () { sed -n "$(($1 + 1)),$(($2 + 1))p" boot.order; }

# With memory-cache-size=2M the replay keeps at most 16 blocks (half
# the memory cache) fetched and not yet read: an idle client gets
# exactly the first 16 entries.  One read of entry 40's block, far
# ahead of the replay, moves nothing: no jump, no fetch.  Reads of the
# 16 entries fetched make room for 16 more.
cat > order.py <<PY
print("idle:", settle(16))
read_entry(40)
print("after a read of entry 40:", settle(16))
for i in range(16):
    read_entry(i)
print("after reads of entries 0-15:", settle(32))
PY
run_script order "$tmpdir/o.prom" memory-cache-size=2M
blocks_filled order.err | sort -n > order.filled
{ entries 0 31; entries 40 40; } | sort -n > order.want
cmp order.filled order.want ||
    fail "replay with a 2M cache filled $(tr '\n' ' ' < order.filled), expected entries 0-31 and 40"
grep -q 'boot profile: .* 0 jumps' order.err || fail "a single far read made the replay jump"
echo "ok: replay ran 16 entries ahead of an idle client, ignored a far read, and ran on as the client read"

# The clients move on past the replay: with memory-cache-size=4M it
# fetched entries 0-31 for an idle client; the client then reads
# entries 100-191.  Once 16 of them are read the replay jumps there:
# entries 32-99 are never fetched.
cat > jump.py <<PY
print("idle:", settle(32))
for i in range(100, 192):
    read_entry(i)
time.sleep(1.5)
PY
run_script jump "$tmpdir/j.prom" memory-cache-size=4M
blocks_filled jump.err | sort > jump.filled
entries 32 99 | sort > jump.skipped
both=$(comm -12 jump.filled jump.skipped | tr '\n' ' ')
[ -z "$both" ] || fail "the replay fetched blocks of entries 32-99 ($both) the clients had passed"
grep -q 'boot profile: .* [1-9][0-9]* jumps' jump.err ||
    fail "the replay did not jump to the clients"
echo "ok: the replay jumped to clients that ran ahead of it"

# A boot in another order than the recorded one: entry 150 first, then
# the profile in runs of 8 entries, each run shuffled.  The replay
# neither jumps to entry 150 nor runs ahead of it: with a 2M cache,
# nothing it fetches is evicted unread, and no block is fetched twice
# but entry 150's (read long before the replay reaches it).
cat > shuffled.py <<PY
import random
r = random.Random(5)
seq = [150]
for s in range(0, 192, 8):
    run = [i for i in range(s, s + 8) if i != 150]
    r.shuffle(run)
    seq += run
for i in seq:
    read_entry(i)
time.sleep(1.5)
print("wasted:", metric("prefetch_wasted_blocks_total"),
      "replay fetched:", metric("profile_fetched_blocks_total"))
PY
run_script shuffled "$tmpdir/s.prom" memory-cache-size=2M
blocks_filled shuffled.err | sort -n | uniq -d > shuffled.twice
entries 150 150 | cmp -s - shuffled.twice || [ ! -s shuffled.twice ] ||
    fail "blocks fetched twice: $(tr '\n' ' ' < shuffled.twice)"
grep -q '^wasted: 0.0 ' shuffled.out || fail "fetched ahead and evicted unread: $(cat shuffled.out)"
fetched=$(sed -n 's/.*replay fetched: \([0-9]*\).*/\1/p' shuffled.out)
[ "${fetched:-0}" -ge 96 ] ||
    fail "the replay fetched only $fetched of 192 profile blocks: it fell behind a shuffled boot"
echo "ok: a boot in a shuffled order is replayed without waste ($fetched blocks by the replay)"

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
