#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a block that arrives intact as far as HTTP can tell but
# does not decode is the server's fault, and gets the same budget as a
# transfer fault: with retries=N it is fetched N+1 times in all, then
# the read fails with EIO (naming the copies); one corrupt reply
# followed by good ones reads back byte-exact.  The fault server flips
# a byte in the middle of every (or one) reply body once nbdkit has
# started; zlib's Adler-32 catches it.  Requests are counted in the
# server's log.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdsh --version
requires test -f "$FAULTSERVER"

BS=65536
make_served_image v4-footer $((16 * BS))
start_faultserver "$www"
export EXPECTED=$tmpdir/expected BS FAULT_FAULTS FAULT_LOG

cat > "$tmpdir/refetch.py" <<'PY'
import errno, os, time
bs = int(os.environ["BS"])
want = open(os.environ["EXPECTED"], "rb").read()
ctl, log = os.environ["FAULT_FAULTS"], os.environ["FAULT_LOG"]
fault, expect = os.environ["FAULT"], os.environ["EXPECT"]
fetches = int(os.environ["FETCHES"])

def set_faults(text):
    with open(ctl + ".tmp", "w") as f:
        f.write(text)
    os.rename(ctl + ".tmp", ctl)

def requests():
    return sum(1 for line in open(log) if "ready-probe" not in line)

set_faults(fault + "\n")
before = requests()
b = 5
try:
    data = h.pread(bs, b * bs)
except nbd.Error as e:
    assert expect == "eio", "read failed: %s" % e.string
    assert e.errnum == errno.EIO, "errno %r, not EIO" % e.errno
else:
    assert expect == "exact", "a corrupt block was served"
    assert data == want[b * bs:(b + 1) * bs], "WRONG BYTES"
# The server logs a request once its reply has gone out, which on a
# busy machine can be after nbdkit has read it, failed the read and
# answered: wait (up to 20 s) for the log to catch up, then a little
# longer for a fetch too many.
deadline = time.time() + 20
while requests() - before < fetches and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
got = requests() - before
set_faults("")
print("%s: %d fetches, read %s" % (fault, got, expect))
assert got == fetches, "%d fetches of the block, expected %d" % (got, fetches)
PY

# check RETRIES FAULT EXPECT FETCHES
check ()
{
    FAULT=$2 EXPECT=$3 FETCHES=$4 nbdkit_cloop -U - \
        --run "nbdsh -u \"\$uri\" -c \"exec(open('$tmpdir/refetch.py').read())\"" \
        "$PLUGIN" url="$FAULT_URL/img" cache-dir=none readahead=0 \
        retries="$1" timeout=20 2> "$tmpdir/err" ||
        { cat "$tmpdir/err"; fail "retries=$1 $2: expected $3, $4 fetches"; }
    if [ "$3" = eio ]; then
        grep -q "block 5" "$tmpdir/err" ||
            { cat "$tmpdir/err"; fail "retries=$1: the error names no block"; }
        [ "$4" -eq 1 ] || grep -q "($4 faulty copies" "$tmpdir/err" ||
            { cat "$tmpdir/err"; fail "retries=$1: copies not named"; }
    fi
}

check 3 '{"fault":"corrupt","path":"/img"}' eio 4
check 1 '{"fault":"corrupt","path":"/img"}' eio 2
check 0 '{"fault":"corrupt","path":"/img"}' eio 1
check 3 '{"fault":"corrupt","path":"/img","count":1}' exact 2
check 2 '{"fault":"corrupt","path":"/img","count":2}' exact 3
echo "$0: ok"
