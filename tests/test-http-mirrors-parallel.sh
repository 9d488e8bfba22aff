#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: connections= holds for each mirror, not for the image
# as a whole.  With connections=1 and two mirrors, both slowed down by
# 3 s a reply, two client reads of distant blocks sent at once must run
# at the same time, one on each mirror: their replies end well under
# 3 s apart (one after the other, they would be 3 s or more apart).
# (Both are slowed from the start, so that they measure the same.)
# Both reads are byte-exact.
# And a client's read waits for a slot on a fast mirror rather than go
# to one far slower: with A fast and B slowed by 1 s a reply, the same
# two reads both go to A, one after the other (B serves nothing but its
# probe at open).
# But not when many reads queue for it: with A slowed by 400 ms a reply
# and B by 1000 ms, twelve reads of distant blocks sent at once (one
# connection each) would take 12 x 0.4 s on A alone; B takes some of
# them, and all are byte-exact.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

cd "$tmpdir"
mkdir -p www
make_sample in.raw 2000000
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw www/img || fail "mkcloop failed"

server ()
{
    _ws_spawn "$1.err" "$_ws_python" "$FAULTSERVER" --root "$tmpdir/www" \
        --port-file "$1.port" --faults "$1.faults" --log "$1.log"
    _ws_wait_file "$1.port" "$_ws_pid" ||
        { cat "$1.err"; fail "fault server $1 did not start"; }
}
server a
server b

# reads.py URI EXPECTED [N]: 4 KiB reads sent at once, checked: of
# two distant blocks, or of blocks 2, 4, ... 2N (none next to another:
# reads of neighbouring blocks queued at once would ride in one GET).
cat > reads.py <<'PY'
import nbd, sys, time
uri, exp_path = sys.argv[1], sys.argv[2]
exp = open(exp_path, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
if len(sys.argv) > 3:
    offs = [2 * i * 65536 for i in range(1, int(sys.argv[3]) + 1)]
else:
    offs = [65536, len(exp) - 2 * 65536]
bufs = [nbd.Buffer(4096) for _ in offs]
pending = set(h.aio_pread(b, o) for b, o in zip(bufs, offs))
deadline = time.monotonic() + 120
while pending:
    assert time.monotonic() < deadline, "the reads took over 120 s"
    h.poll(1000)
    pending = set(c for c in pending if not h.aio_command_completed(c))
for b, o in zip(bufs, offs):
    assert b.to_bytearray() == exp[o:o + 4096], "wrong bytes at %d" % o
print("%d reads: exact" % len(offs))
PY

# Both slow from the start (their probes too): the same speed measured.
for m in a b; do echo '{"fault":"delay","ms":3000}' > $m.faults; done
nbdkit_cloop -U - -v --run '/usr/bin/python3 reads.py "$uri" exp' "$PLUGIN" \
    url="http://127.0.0.1:$(cat a.port)/img" \
    mirror="http://127.0.0.1:$(cat b.port)/img" \
    connections=1 cache-dir=none timeout=60 > reads.out 2> nbdkit.err ||
    { cat reads.out; grep -a 'warning\|error' nbdkit.err | tail; 
      fail "the two reads failed"; }
cat reads.out

# The delayed replies to reads (not the probe), one per mirror.
/usr/bin/python3 - <<'PY' || fail "the two reads did not run at once"
import json
ts = []
for m in "ab":
    recs = [json.loads(l) for l in open(m + ".log")]
    late = [r["t"] for r in recs if r.get("fault") == "delay" and
            r.get("range") != "bytes=0-65535"]
    print("%s: %d delayed replies" % (m, len(late)))
    assert len(late) == 1, "%s: %d delayed replies, 1 expected" % (m, len(late))
    ts += late
gap = abs(ts[0] - ts[1])
print("the two replies ended %.2f s apart" % gap)
assert gap < 1.5, "one after the other: %.2f s apart" % gap
PY
echo "$0: ok: one read on each mirror at once"

rm -f a.faults
echo '{"fault":"delay","ms":1000}' > b.faults
b0=$(wc -l < b.log)
nbdkit_cloop -U - -v --run '/usr/bin/python3 reads.py "$uri" exp' "$PLUGIN" \
    url="http://127.0.0.1:$(cat a.port)/img" \
    mirror="http://127.0.0.1:$(cat b.port)/img" \
    connections=1 cache-dir=none timeout=60 > reads2.out 2> nbdkit2.err ||
    { cat reads2.out; grep -a 'warning\|error' nbdkit2.err | tail
      fail "the two reads with a slow mirror failed"; }
cat reads2.out
tail -n +$((b0 + 1)) b.log > b2.log
[ "$(wc -l < b2.log)" -eq 1 ] ||
    { cat b2.log; fail "a read went to the slow mirror B"; }
grep -q '"range":"bytes=0-65535"' b2.log || fail "B's request was no probe"
echo "$0: ok: both reads waited for the fast mirror"

echo '{"fault":"delay","ms":400}' > a.faults
echo '{"fault":"delay","ms":1000}' > b.faults
a0=$(wc -l < a.log) b0=$(wc -l < b.log)
nbdkit_cloop -U - -v --run '/usr/bin/python3 reads.py "$uri" exp 12' \
    "$PLUGIN" url="http://127.0.0.1:$(cat a.port)/img" \
    mirror="http://127.0.0.1:$(cat b.port)/img" \
    connections=1 cache-dir=none readahead=0 timeout=60 \
    > many.out 2> nbdkit3.err ||
    { cat many.out; grep -a 'warning\|error' nbdkit3.err | tail
      fail "twelve reads with a slower mirror failed"; }
cat many.out
na=$(tail -n +$((a0 + 1)) a.log | grep -vc '"range":"bytes=0-65535"')
nb=$(tail -n +$((b0 + 1)) b.log | grep -vc '"range":"bytes=0-65535"')
echo "$0: twelve reads: $na on A, $nb on B"
[ "$nb" -ge 1 ] || fail "the slower mirror B took none of twelve queued reads"
[ "$na" -ge "$nb" ] || fail "the faster mirror A took fewer reads than B"
echo "$0: ok: a queue of reads spread over both mirrors"
