#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a redirector (url= answering 302) is asked once and its
# final URL reused.  R redirects to T1; T1, T2 and T3 serve the same
# file (hard links: the same ETag).  A pass over the image asks R only
# for the probe.  Then T1's file is removed (404) while R now points
# to T2: the next pass goes back to R once and goes on at T2.  Then T2
# is killed (refused) while R points to T3: once more.  Every pass is
# byte-exact, R serves 3 requests in all, and T2 and T3 serve reads.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
export PYTHONPATH="$srcdir"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

cd "$tmpdir"
mkdir -p r t1 t2 t3
make_sample in.raw 2000000
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw t1/img || fail "mkcloop failed"
ln t1/img t2/img
ln t1/img t3/img

for s in r t1 t2 t3; do start_named_faultserver $s "$tmpdir/$s"; done
to () { echo "{\"fault\":\"redirect\",\"to\":\"http://127.0.0.1:$(cat "$1.port")\"}"; }
to t1 > r.faults
to t2 > r-t2.faults
to t3 > r-t3.faults

cat > reads.py <<'PY'
import os, signal, sys
import exactpass
h, exp = exactpass.connect(sys.argv[1], sys.argv[2])
size = len(exp)

def one_pass(label):
    exactpass.one_pass(h, exp, label, chunk=128 * 1024)
    print("%s: exact" % label, flush=True)

def requests(name):
    return sum(1 for _ in open(name + ".log"))

one_pass("pass 1, via T1")
r1 = requests("r")
os.rename("r-t2.faults", "r.faults")
os.unlink("t1/img")                  # T1 now answers 404
one_pass("pass 2, T1 gone: via T2")
r2 = requests("r")
os.rename("r-t3.faults", "r.faults")
os.kill(int(open("t2.pid").read()), signal.SIGKILL)   # T2 refuses
one_pass("pass 3, T2 dead: via T3")
r3 = requests("r")
print("requests to R after each pass: %d %d %d" % (r1, r2, r3), flush=True)
PY

nbdkit_cloop -U - -v --run '/usr/bin/python3 reads.py "$uri" exp' \
    "$PLUGIN" url="http://127.0.0.1:$(cat r.port)/img" \
    connections=1 readahead=0 memory-cache-size=256K cache-dir=none \
    > reads.out 2> nbdkit.err ||
    { cat reads.out; grep -a 'http:\|warning\|error' nbdkit.err | tail -30
      fail "reading through the redirector failed"; }
cat reads.out
grep -q "requests to R after each pass: 1 2 3$" reads.out ||
    { cat r.log; fail "R was not asked once per resolution"; }
# R only ever redirected; the reads were served by the targets.
grep -v '"status":302' r.log && fail "R served something but redirects"
for t in t1 t2 t3; do
    n=$(grep -c '"status":206' $t.log || true)
    echo "$0: $t served $n ranges"
    [ "$n" -gt 1 ] || fail "$t served no read"
done
grep -q '"status":404' t1.log || fail "T1 never answered 404"
grep -aq ": error:" nbdkit.err &&
    { grep -a ": error:" nbdkit.err | head; fail "an error was logged"; }
echo "$0: ok"
