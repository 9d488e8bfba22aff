#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: mirrors that do not answer at start are kept aside, not
# dropped.  A serves the image; nothing listens yet on B's and D's
# ports.  After a first pass over the image, B comes up with the same
# image and D with another object of the same size.  B's copy is
# checked (size and first 64 KiB) and B then serves reads (its counters
# in the -D cloop.stats=1 snapshot); D's copy is checked, found to
# differ, and D is dropped with one warning naming it: it never serves
# a read (its only request is that check).  E never answers at all
# (a listening socket whose queue is full: connecting times out): the
# start does not wait for it beyond a connect timeout of 3 s (the
# warning says so), and it is kept aside too.  Every pass is
# byte-exact.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
export PYTHONPATH="$srcdir"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

cd "$tmpdir"
make_mirror_images

start_named_faultserver a "$tmpdir/www"
b_port=$(_ws_free_port)
d_port=$(_ws_free_port)
port_closed "$b_port" && port_closed "$d_port" ||
    fail "the ports for B and D are taken"
# E: connections to it time out (SYNs dropped: its accept queue is
# full and nothing accepts).
cat > blackhole.py <<'PY'
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(3):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    fill.append(c)
time.sleep(0.2)
open(sys.argv[1] + ".tmp", "w").write(str(port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
PY
_ws_spawn e.err "$_ws_python" blackhole.py e.port
_ws_wait_file e.port "$_ws_pid" || { cat e.err; fail "E did not start"; }
url_e="http://127.0.0.1:$(cat e.port)/img"
url_a="http://127.0.0.1:$(cat a.port)/img"
url_b="http://127.0.0.1:$b_port/img"
url_d="http://127.0.0.1:$d_port/img"

cat > reads.py <<'PY'
import os, sys, time
import exactpass
h, exp = exactpass.connect(sys.argv[1], sys.argv[2])
size = len(exp)

def one_pass(label):
    exactpass.one_pass(h, exp, label)

one_pass("pass 1, B and D down")
print("pass 1 (B and D down): exact", flush=True)
open("start-bd", "w").close()        # the shell starts B and D now
deadline = time.monotonic() + 120
i = 2
while not os.path.exists("bd-done"):
    if time.monotonic() > deadline:
        sys.exit("B never served a read, or D was never checked")
    one_pass("pass %d" % i)
    i += 1
one_pass("last pass")
print("passes 2-%d (B and D up): exact" % i, flush=True)
PY

# The conductor: starts B and D when told (and slows A down by 100 ms
# a reply, so that B, once checked, is the faster mirror), then waits
# until B has served a request other than its check (bytes=0-65535)
# and D has been asked for its check.
(
    while [ ! -e start-bd ]; do sleep 0.1; done
    start_named_faultserver b "$tmpdir/www" "$b_port"
    start_named_faultserver d "$tmpdir/wwwd" "$d_port"
    echo '{"fault":"delay","ms":100}' > a.faults
    while ! grep -q '"range":"bytes=[1-9]' b.log ||
          [ "$(wc -l < d.log)" -lt 1 ]; do
        sleep 0.2
    done
    touch bd-done
) > conductor.out 2>&1 &
conductor=$!

nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run '/usr/bin/python3 reads.py "$uri" exp' \
    "$PLUGIN" url="$url_a" mirror="$url_b" mirror="$url_d" mirror="$url_e" \
    connections=2 memory-cache-size=1M cache-dir=none \
    > reads.out 2> nbdkit.err ||
    { cat reads.out conductor.out; grep -a 'mirror\|warning' nbdkit.err |
      tail -20; fail "reading through the mirrors failed"; }
wait "$conductor" || true
for m in b d; do cleanup_fn "_ws_stop $(cat $m.pid)"; done
cat reads.out

for u in "$url_b" "$url_d" "$url_e"; do
    grep -aq "warning: mirror $u did not answer" nbdkit.err ||
        fail "$u was not said to be down at start"
done
grep -a "warning: mirror $url_e did not answer" nbdkit.err |
    grep -aq "[Cc]onnect.* after 3[0-9][0-9][0-9] m" ||
    { grep -a "$url_e" nbdkit.err | head -3
      fail "E's probe at start did not give up connecting after 3 s"; }
grep -aq "warning: mirror $url_e answers" nbdkit.err &&
    fail "E, which never answered, was taken into use"
grep -aq "warning: mirror $url_b answers with the same object: in use" \
    nbdkit.err || fail "B was not taken into use"

# The counters at exit: B fetched more than its 64 KiB check.
stat_of () # URL FIELD-REGEX: the number before it in the last line
{
    grep -a "debug: export .*: http: .*($1)" nbdkit.err | tail -n1 |
        sed -n "s/.* \([0-9][0-9]*\) $2.*/\1/p"
}
b_req=$(stat_of "$url_b" 'requests')
b_bytes=$(stat_of "$url_b" 'bytes fetched')
echo "$0: B: $b_req requests, $b_bytes bytes fetched"
[ "${b_bytes:-0}" -gt 65536 ] || fail "B served no read after its check"
[ "${b_req:-0}" -ge 2 ] || fail "B got no request after its check"

# D: one warning naming it, one request (its check), never a read.
n=$(grep -ac "warning: mirror $url_d not used: its copy has other bytes" \
    nbdkit.err)
[ "$n" -eq 1 ] || fail "D dropped with $n warnings, 1 expected"
[ "$(wc -l < d.log)" -eq 1 ] ||
    { cat d.log; fail "D got $(wc -l < d.log) requests, 1 expected"; }
grep -q '"range":"bytes=0-65535"' d.log || fail "D's request was no check"
grep -aq ": error:" nbdkit.err &&
    { grep -a ": error:" nbdkit.err | head; fail "an error was logged"; }
echo "$0: ok"
