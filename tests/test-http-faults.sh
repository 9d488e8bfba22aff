#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: every fault the project's fault server can inject, both
# transient (count=1..2: absorbed by retries) and permanent, while
# serving and at start-up, against a zlib V2 image and a zlib V4
# footer image (zlib's Adler-32 makes corrupted blocks detectable).
#
# nbdkit runs with cache-dir=none, timeout=$TIMEOUT and retries=3; an
# nbdsh script reads many ranges (sequential and concurrent) and
# compares them with the ground truth.  Every read must return exactly
# the right bytes or fail with EIO, within timeout + slack; a single
# wrong byte fails the test.  Transient faults: every read succeeds
# (kinds that hold a request past the read's deadline, delay and slow,
# may fail the reads they hit, by design: the deadline includes the
# retries), and all reads succeed once the fault is gone.  Permanent
# faults at start-up may stop nbdkit, with a message and a non-zero
# exit, never by serving wrong data.
#
# Cases run on $WORKERS fault servers in parallel.
#
# Three concurrent reads of one block under a long delay must each
# answer within their own deadline too (they share one fetch).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires nbdkit --version
requires nbdsh --version
requires test -x "$MKCLOOP"
requires test -f "$PLUGIN"
requires test -f "$FAULTSERVER"

TIMEOUT=4
SLACK=3
WORKERS=4
BS=16384

www=$tmpdir/www
mkdir -p "$www"
make_sample "$tmpdir/in" 1000000
"$MKCLOOP" -d v2 -B $BS "$tmpdir/in" "$www/v2.img" ||
    fail "mkcloop v2 failed"
"$MKCLOOP" -d v4-footer -B $BS -c zlib "$tmpdir/in" "$www/v4f.img" ||
    fail "mkcloop v4-footer failed"
pad_to_block "$tmpdir/in" $BS "$tmpdir/expected"

# One fault server per worker (start_faultserver keeps its files in
# $tmpdir, so give each its own).
main_tmpdir=$tmpdir
for w in $(seq 0 $((WORKERS - 1))); do
    tmpdir=$main_tmpdir/fs$w
    mkdir -p "$tmpdir"
    start_faultserver "$www"
    eval "fs_url_$w=\$FAULT_URL fs_ctl_$w=\$FAULT_FAULTS fs_log_$w=\$FAULT_LOG"
done
tmpdir=$main_tmpdir

# The nbdsh script.  Environment:
#   EXPECTED   ground truth        CTL     the server's faults file
#   FAULT      fault line to install once connected ("" = none)
#   EXPECT1    during the fault: "exact" (every read right) or "either"
#   EXPECT2    after clearing it: "exact" or "either"
#   TIMEOUT, SLACK, BS, SEED, MARK (touched once connected)
cat > "$tmpdir/reads.py" <<'PY'
import errno, json, os, random, time

want = open(os.environ["EXPECTED"], "rb").read()
ctl = os.environ["CTL"]
timeout = float(os.environ["TIMEOUT"])
limit = timeout + float(os.environ["SLACK"])
bs = int(os.environ["BS"])
rng = random.Random(int(os.environ["SEED"]))
open(os.environ["MARK"], "w").close()
assert h.get_size() == len(want), "size %d != %d" % (h.get_size(), len(want))

def set_faults(text):
    tmp = ctl + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, ctl)

class Tally:
    def __init__(self, name):
        self.name, self.right, self.eio, self.worst = name, 0, 0, 0.0
        self.late = []
    def done(self, off, n, data, err, secs):
        self.worst = max(self.worst, secs)
        if secs > limit:
            self.late.append("read %d@%d answered after %.2f s (limit %.1f)"
                             % (n, off, secs, limit))
        if err is not None:
            if err.errnum != errno.EIO:
                raise AssertionError("%s: read %d@%d: errno %r, not EIO: %s"
                                     % (self.name, n, off, err.errno,
                                        err.string))
            self.eio += 1
            return
        if data != want[off:off + n]:
            bad = next(i for i in range(n) if data[i] != want[off + i])
            raise AssertionError("%s: WRONG BYTES: read %d@%d differs at "
                                 "offset %d" % (self.name, n, off, off + bad))
        self.right += 1
    def __str__(self):
        return "%s %d right, %d EIO, slowest %.2f s" % (
            self.name, self.right, self.eio, self.worst)

def sequential(t, ranges):
    for off, n in ranges:
        t0 = time.monotonic()
        try:
            data, err = h.pread(n, off), None
        except nbd.Error as e:
            data, err = None, e
        t.done(off, n, data, err, time.monotonic() - t0)

def concurrent(t, ranges):
    pending = {}
    t0 = time.monotonic()
    for off, n in ranges:
        buf = nbd.Buffer(n)
        pending[h.aio_pread(buf, off)] = (off, n, buf)
    while pending:
        h.poll(1000)
        for c in list(pending):
            off, n, buf = pending[c]
            try:
                if not h.aio_command_completed(c):
                    continue
                data, err = buf.to_bytearray(), None
            except nbd.Error as e:
                data, err = None, e
            del pending[c]
            t.done(off, n, bytes(data) if data is not None else None, err,
                   time.monotonic() - t0)

def some_ranges(k):
    out = []
    for _ in range(k):
        n = rng.choice([1, 512, bs, 2 * bs + 77, 3 * bs, 40000])
        off = rng.randrange(0, len(want) - n)
        out.append((off, n))
    return out

def disjoint_ranges(k):
    # One read inside each of k regions, touching only blocks wholly
    # inside its region: no two concurrent reads share a block.
    out = []
    region = len(want) // k
    for i in range(k):
        lo = -(-(i * region) // bs) * bs
        hi = ((i + 1) * region) // bs * bs
        n = min(rng.choice([1, 512, bs, bs + 77, 2 * bs]), hi - lo)
        off = rng.randrange(lo, hi - n + 1)
        out.append((off, n))
    return out

fault = os.environ["FAULT"]
if fault:
    set_faults(fault + "\n")
seq, conc = some_ranges(2), disjoint_ranges(8)
t1 = Tally("faulted")
sequential(t1, seq[:1])
concurrent(t1, conc)
sequential(t1, seq[1:])
overlap = ""
if os.environ.get("OVERLAP"):
    # Three concurrent reads of one block under the same fault.  Each
    # must still answer within its own deadline.
    t3 = Tally("overlap")
    used = set()
    for off, n in seq + conc:
        used.update(range(off // bs, (off + n - 1) // bs + 1))
    free = [k for k in range(8, len(want) // bs) if k not in used]
    b = rng.choice(free) * bs
    concurrent(t3, [(b, 512), (b + 1000, 512), (b + 2000, 512)])
    overlap = "; %s" % t3
    if t3.late:
        raise AssertionError("overlap: " + "; ".join(t3.late))
set_faults("")
# After the fault: the same ranges again, then the whole image.
t2 = Tally("after")
sequential(t2, seq + conc)
whole = [(o, min(256 * 1024, len(want) - o))
         for o in range(0, len(want), 256 * 1024)]
sequential(t2, whole)
print("%s; %s%s" % (t1, t2, overlap))
if t1.late or t2.late:
    raise AssertionError("; ".join(t1.late + t2.late))
if os.environ["EXPECT1"] == "exact" and t1.eio:
    raise AssertionError("%d reads failed, expected all right" % t1.eio)
if os.environ["EXPECT2"] == "exact" and t2.eio:
    raise AssertionError("%d reads failed after the fault was cleared"
                         % t2.eio)
PY

# Cases: NAME|FAULT JSON|COUNT for the transient runs.
cat > "$tmpdir/cases" <<'EOF'
status500|{"fault":"status","status":500}|2
status503|{"fault":"status","status":503,"retry_after":1}|1
status404|{"fault":"status","status":404}|1
status403|{"fault":"status","status":403}|1
status416|{"fault":"status","status":416}|1
reset|{"fault":"reset","bytes":1000}|2
reset0|{"fault":"reset","bytes":0}|2
truncate|{"fault":"truncate"}|2
slow|{"fault":"slow","rate":500}|1
delay-long|{"fault":"delay","ms":9000}|1
delay-short|{"fault":"delay","ms":300}|2
ignore_range|{"fault":"ignore_range"}|1
wrong_content_range|{"fault":"wrong_content_range"}|2
change_etag|{"fault":"change_etag"}|1
change_etag-zero|{"fault":"change_etag","content":"zero"}|1
corrupt|{"fault":"corrupt","flips":1}|1
long_body|{"fault":"long_body","extra":512}|2
long_body-trailing|{"fault":"long_body","mode":"trailing"}|1
EOF

# expectations NAME MODE WHEN: set E1 (reads under the fault: exact |
# either), E2 (reads after it is cleared) and REFUSE (nbdkit may refuse
# to start: no | yes).
expectations ()
{
    E1=exact E2=exact REFUSE=no
    case $2 in permanent) E1=either ;; esac
    case $1 in
        delay-short) E1=exact ;;
        # A request held past the read's deadline fails that read: the
        # deadline covers the retries, by design.
        slow|delay-long) E1=either ;;
    esac
    if [ "$3" = startup ]; then
        [ "$2" = permanent ] && REFUSE=yes
        case $1 in
            slow|delay-long) REFUSE=yes ;;
            # A fault in the probe's validators pins the identity it
            # saw; the real one later is a change: EIO, never mixing.
            change_etag*) REFUSE=yes E1=either E2=either ;;
        esac
    fi
    return 0
}

# run_case WORKER IMAGE NAME MODE WHEN FAULT: one nbdkit run.
# MODE: transient|permanent; WHEN: serving (fault set once nbdsh is
# connected) | startup (set before nbdkit starts).  Appends an "ok" or
# "FAIL" line to $tmpdir/results.WORKER.
run_case ()
{
    w=$1 img=$2 name=$3 mode=$4 when=$5 fault=$6
    eval "url=\$fs_url_$w ctl=\$fs_ctl_$w"
    id="$img $name $mode $when"
    res=$tmpdir/results.$w
    expectations "$name" "$mode" "$when"
    overlap=
    [ "$name/$mode/$when/$img" = delay-long/permanent/serving/v2.img ] &&
        overlap=1
    d=$tmpdir/case.$w
    rm -rf "$d"; mkdir -p "$d"
    rm -f "$ctl"
    script_fault=$fault
    if [ "$when" = startup ]; then
        printf '%s\n' "$fault" > "$ctl.tmp" && mv -f "$ctl.tmp" "$ctl"
        script_fault=
    fi
    start=$(date +%s.%N)
    rc=0
    EXPECTED=$tmpdir/expected CTL=$ctl FAULT=$script_fault \
    EXPECT1=$E1 EXPECT2=$E2 TIMEOUT=$TIMEOUT SLACK=$SLACK BS=$BS \
    SEED=$(( $(printf '%s' "$id" | cksum | cut -d' ' -f1) % 100000 )) \
    MARK=$d/connected OVERLAP=$overlap \
    timeout -k 10 120 nbdkit -U - --run \
        "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/reads.py').read())\"" \
        "$PLUGIN" url="$url/$img" cache-dir=none timeout=$TIMEOUT retries=3 \
        > "$d/out" 2> "$d/err" || rc=$?
    secs=$(printf '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)")
    rm -f "$ctl"
    if grep -Eq 'Sanitizer|runtime error' "$d/err"; then
        { echo "FAIL $id: sanitizer report"; cat "$d/err"; } >> "$res"
        return 0
    fi
    if [ ! -e "$d/connected" ]; then
        # nbdkit did not serve: allowed only for some start-up faults,
        # with a message and a non-zero exit, within the deadlines of the
        # probe and of the index read.
        msg=$(grep -m1 -E 'error' "$d/err" || true)
        if [ "$REFUSE" = yes ] && [ "$rc" -ne 0 ] && [ -n "$msg" ] &&
           [ "$(echo "$secs < 2 * $TIMEOUT + $SLACK" | bc)" -eq 1 ]; then
            echo "ok $id: refused to start (rc $rc, $secs s): $msg" >> "$res"
        else
            { echo "FAIL $id: did not serve (rc $rc, $secs s)"
              cat "$d/err" "$d/out"; } >> "$res"
        fi
        return 0
    fi
    if [ "$rc" -ne 0 ]; then
        { echo "FAIL $id: rc $rc"; cat "$d/out" "$d/err"; } >> "$res"
        return 0
    fi
    summary=$(tail -n1 "$d/out")
    case $summary in
        *" 0 EIO"*" 0 EIO"*) ;;
        *)  # Every failed read was logged.
            grep -q 'error' "$d/err" || {
                echo "FAIL $id: reads failed but nbdkit logged no error" >> "$res"
                return 0; } ;;
    esac
    echo "ok $id ($secs s): $summary" >> "$res"
    # One log line per run, for the record.
    grep -m1 -E 'error' "$d/err" | sed "s|^|    log: |" >> "$res" || true
}

# All runs in one list, slow kinds first; each worker claims the next
# unclaimed one (mkdir is atomic).
{ grep -E '^(slow|delay-long)\|' "$tmpdir/cases"
  grep -vE '^(slow|delay-long)\|' "$tmpdir/cases"; } > "$tmpdir/cases.sorted"
: > "$tmpdir/jobs"
while IFS='|' read -r name fault count; do
    transient=${fault%\}},\"count\":$count}
    for img in v2.img v4f.img; do
        for when in serving startup; do
            echo "$img|$name|permanent|$when|$fault" >> "$tmpdir/jobs"
            echo "$img|$name|transient|$when|$transient" >> "$tmpdir/jobs"
        done
    done
done < "$tmpdir/cases.sorted"
i=$(wc -l < "$tmpdir/jobs")
echo "$0: $i runs on $WORKERS fault servers (timeout=$TIMEOUT, slack $SLACK s)"
mkdir "$tmpdir/claims"

pids=""
for w in $(seq 0 $((WORKERS - 1))); do
    (
        trap - EXIT INT TERM
        : > "$tmpdir/results.$w"
        j=0
        while IFS='|' read -r img name mode when fault; do
            j=$((j + 1))
            mkdir "$tmpdir/claims/$j" 2>/dev/null || continue
            run_case $w "$img" "$name" "$mode" "$when" "$fault"
        done < "$tmpdir/jobs"
    ) &
    pids="$pids $!"
done
for p in $pids; do wait $p || fail "worker $p failed"; done

cat "$tmpdir"/results.*
n_ok=$(cat "$tmpdir"/results.* | grep -c '^ok ' || true)
n_fail=$(cat "$tmpdir"/results.* | grep -c '^FAIL ' || true)
n_wrong=$(cat "$tmpdir"/results.* | grep -c 'WRONG BYTES' || true)
echo "$0: $n_ok runs passed, $n_fail failed ($n_wrong with wrong bytes)"
[ "$n_wrong" -eq 0 ] || fail "WRONG BYTES served"
[ "$n_fail" -eq 0 ] || fail "$n_fail fault runs failed"
[ "$n_ok" -eq "$i" ] || fail "$n_ok of $i runs reported"
