#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: mirror= — one image from four fault servers at once.
# A is honest; B corrupts its first three replies; C is killed in the
# middle of the reads (A and B then refuse one request each, which fails
# over to C and find it gone) and started again on its port; D serves another
# object under the same name (one byte of its index differs).  Every
# pass over the image reads byte-exact with no failed read; D is
# dropped at open with a warning naming it; B's faulty copies are
# blamed on B (counted and benched); C is marked down, then reachable
# again and serving (fail-back).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"
export PYTHONPATH="$srcdir"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'

cd "$tmpdir"
# wwwd/img: another object with the same size.
make_mirror_images

for m in a b c; do start_named_faultserver "$m" "$tmpdir/www"; done
start_named_faultserver d "$tmpdir/wwwd"
url () { echo "http://127.0.0.1:$(cat "$1.port")/img"; }
# B corrupts its first three replies after its probe, then is honest.
# A and C refuse their first request after the probe, so that the first
# transfer ends on B whichever mirror it starts on, and then hold their
# next 30 replies 300 ms, so that B, faster, takes the transfers that
# start meanwhile (with read-ahead running beside the reads, which
# mirror a transfer starts on is otherwise a matter of timing).
echo '{"fault":"corrupt","after":1,"count":3}' > b.faults
for m in a c; do
    printf '%s\n' '{"fault":"status","status":503,"after":1,"count":1}' \
        '{"fault":"delay","ms":300,"after":1,"count":30}' > $m.faults
done

cat > reads.py <<'PY'
import os, subprocess, sys, time
import exactpass
h, exp = exactpass.connect(sys.argv[1], sys.argv[2])
size = len(exp)

def one_pass(label):
    exactpass.one_pass(h, exp, label)
    print("%s: %d bytes exact" % (label, size), flush=True)

one_pass("pass 1, all mirrors")
open("kill-c", "w").close()          # the shell kills C now
while not os.path.exists("c-dead"):
    time.sleep(0.1)
one_pass("pass 2, C dead")
open("restart-c", "w").close()       # the shell starts C again
while not os.path.exists("c-back"):
    time.sleep(0.1)
for i in range(3, 40):
    one_pass("pass %d, C back" % i)
    if os.path.exists("c-served"):
        break
else:
    sys.exit("C was never used again after it came back")
PY

# The conductor: kills C and starts it again on its port when told,
# and says when C has served a request after coming back.
c_port=$(cat c.port)
(
    while [ ! -e kill-c ]; do sleep 0.1; done
    kill -KILL "$(cat c.pid)"
    while ! port_closed "$c_port"; do sleep 0.1; done
    # A and B each refuse one request, so that a transfer fails over
    # to C and finds it gone.
    for m in a b; do
        echo '{"fault":"status","status":503,"count":1}' > $m.faults.tmp
        mv $m.faults.tmp $m.faults
    done
    touch c-dead
    while [ ! -e restart-c ]; do sleep 0.1; done
    n0=$(wc -l < c.log)
    start_named_faultserver c "$tmpdir/www" "$c_port"
    touch c-back
    while [ "$(wc -l < c.log)" -le "$n0" ]; do sleep 0.2; done
    touch c-served
) > conductor.out 2>&1 &
conductor=$!

nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run '/usr/bin/python3 reads.py "$uri" exp' \
    "$PLUGIN" url="$(url a)" mirror="$(url b)" mirror="$(url c)" \
    mirror="$(url d)" connections=2 memory-cache-size=1M cache-dir=none \
    timeout=20 > reads.out 2> nbdkit.err ||
    { cat reads.out; grep -a -v 'debug: \(pread\|cache\|extents\)' \
      nbdkit.err | tail -40; fail "reading through the mirrors failed"; }
wait "$conductor" || true
# The restarted C was started by the conductor's subshell: stop it too.
cleanup_fn "_ws_stop $(cat c.pid)"
cat reads.out

# D: dropped at open, never read from after its probe.
grep -aq "mirror $(url d) not used: its copy has other bytes" nbdkit.err ||
    { grep -a mirror nbdkit.err; fail "D was not dropped"; }
[ "$(wc -l < d.log)" -eq 1 ] || fail "D got $(wc -l < d.log) requests, 1 expected"

# The counters at exit, per mirror.
stat_of () # MIRROR FIELD-REGEX: the number before it in the last line
{
    grep -a "debug: export .*: http: .*($(url "$1"))" nbdkit.err | tail -n1 |
        sed -n "s/.* \([0-9][0-9]*\) $2.*/\1/p"
}
fired=$(grep -c '"fault": *"corrupt"' b.log || true)
echo "$0: B corrupted $fired replies"
[ "$fired" -gt 0 ] || fail "B never corrupted a reply"
bf=$(stat_of b 'faulty copies')
echo "$0: B: $bf faulty copies counted"
[ "${bf:-0}" -gt 0 ] || fail "no faulty copy was blamed on B"
grep -aq "benched [1-9][0-9]* times.*($(url b))" nbdkit.err ||
    fail "B was never benched"
grep -aq "$(url c): server unreachable" nbdkit.err ||
    fail "C was not marked down"
grep -aq "$(url c): server reachable again" nbdkit.err ||
    fail "C did not come back"
grep -aq ": error:" nbdkit.err &&
    { grep -a ": error:" nbdkit.err | head; fail "an error was logged"; }
echo "$0: ok: mirror="

# mirrors=: a Metalink 4 file (priorities, size) and a plain list served
# over HTTP, without url=: the list's first URL is the image's.
size=$(stat -c %s www/img)
cat > img.meta4 <<XML
<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <published>2026-12-06T00:00:00Z</published>
  <file name="img">
    <size>$size</size>
    <hash type="sha-256">$(sha256sum www/img | cut -d' ' -f1)</hash>
    <url location="jp" priority="2">$(url a)</url>
    <url location="de" priority="1">$(url c)</url>
    <url priority="3">ftp://127.0.0.1/img</url>
  </file>
</metalink>
XML
for m in a b c; do rm -f $m.faults; done
nbdkit_cloop -U - -v --run 'nbdcopy "$uri" out.meta4' "$PLUGIN" \
    mirrors=img.meta4 cache-dir=none 2> meta4.err ||
    { tail -20 meta4.err; fail "mirrors=img.meta4 failed"; }
cmp out.meta4 exp || fail "mirrors=img.meta4: wrong bytes"
printf '# mirrors\n%s\n%s\n' "$(url b)" "$(url a)" > www/img.mirrors
nbdkit_cloop -U - --run 'nbdcopy "$uri" out.list' "$PLUGIN" \
    mirrors="$(url a).mirrors" cache-dir=none 2> list.err ||
    { cat list.err; fail "mirrors=URL failed"; }
cmp out.list exp || fail "mirrors=URL: wrong bytes"
sed "s|<size>$size</size>|<size>$((size + 1))</size>|" img.meta4 > bad.meta4
if nbdkit_cloop -U - --run true "$PLUGIN" mirrors=bad.meta4 \
       cache-dir=none 2> bad.err; then
    fail "a metalink with the wrong size was accepted"
fi
grep -q "$size bytes, but the mirror list says $((size + 1))" bad.err ||
    { cat bad.err; fail "the wrong size is not named"; }
echo "$0: ok: mirrors= (metalink file, list at a URL, wrong size refused)"
