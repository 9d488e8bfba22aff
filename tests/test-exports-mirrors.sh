#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: mirror= and mirrors= on exports= catalogue lines.  Three
# exports of two images: "plain" from server P alone; "mirrored" from
# A with mirror=B on its line; "listed" from a mirrors= list (A, then
# B).  A is slowed down by 50 ms a reply, so B is the faster mirror.
# Each export reads byte-exact; the counters of -D cloop.stats=1 show B
# serving the two mirrored exports, and "plain" with its one server.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools

cd "$tmpdir"
mkdir -p wp wab cat
make_sample in1.raw 1500000
pad_to_block in1.raw 65536 exp1
make_sample in2.raw 2500000
pad_to_block in2.raw 65536 exp2
"$MKCLOOP" -d v2 -B 65536 in1.raw wp/one || fail "mkcloop failed"
"$MKCLOOP" -d v4 -c zlib -B 65536 in2.raw wab/two || fail "mkcloop failed"

server ()
{
    _ws_spawn "$1.err" "$_ws_python" "$FAULTSERVER" --root "$2" \
        --port-file "$1.port" --faults "$1.faults" --log "$1.log"
    _ws_wait_file "$1.port" "$_ws_pid" ||
        { cat "$1.err"; fail "fault server $1 did not start"; }
}
server p "$tmpdir/wp"
server a "$tmpdir/wab"
server b "$tmpdir/wab"
echo '{"fault":"delay","ms":50}' > a.faults
url_p="http://127.0.0.1:$(cat p.port)/one"
url_a="http://127.0.0.1:$(cat a.port)/two"
url_b="http://127.0.0.1:$(cat b.port)/two"
printf '%s\n%s\n' "$url_a" "$url_b" > cat/two.mirrors

cat > cat/exports <<CAT
# name     location   keys
plain      $url_p     timeout=20
mirrored   $url_a     mirror=$url_b connections=2
listed     $url_a     mirrors=$tmpdir/cat/two.mirrors connections=2
CAT

cat > readall.sh <<'SH'
set -e
u () { echo "nbd+unix:///$1?socket=$unixsocket"; }
nbdcopy "$(u plain)" out.plain
nbdcopy "$(u mirrored)" out.mirrored
nbdcopy "$(u listed)" out.listed
SH
nbdkit_cloop -U - -v -D cloop.stats=1 \
    --run 'unixsocket=$unixsocket sh readall.sh' \
    "$PLUGIN" exports=cat/exports cache-dir=none 2> read.err ||
    { grep -a 'warning\|error' read.err | tail -20
      fail "reading the exports failed"; }
cmp out.plain exp1 || fail "plain: wrong bytes"
cmp out.mirrored exp2 || fail "mirrored: wrong bytes"
cmp out.listed exp2 || fail "listed: wrong bytes"

# stat_of EXPORT URL FIELD-REGEX: the number before it in the last line.
stat_of ()
{
    grep -a "debug: export $1: http: .*($2)" read.err | tail -n1 |
        sed -n "s/.* \([0-9][0-9]*\) $3.*/\1/p"
}
for e in mirrored listed; do
    a=$(stat_of $e "$url_a" 'bytes fetched')
    b=$(stat_of $e "$url_b" 'bytes fetched')
    echo "$0: $e: A fetched ${a:-?} bytes, B ${b:-?}"
    [ -n "$a" ] || fail "$e: no counters for A"
    # More than its 64 KiB probe: B served reads.
    [ "${b:-0}" -gt 65536 ] || fail "$e: the mirror B served no read"
done
p=$(stat_of plain "$url_p" 'bytes fetched')
echo "$0: plain: P fetched ${p:-?} bytes"
[ "${p:-0}" -gt 65536 ] || fail "plain: P served no read"
n=$(grep -a "debug: export plain: http: " read.err | sed 's/.*(\(.*\))$/\1/' |
    sort -u | wc -l)
[ "$n" -eq 1 ] || fail "plain has $n endpoints, 1 expected"
grep -a "debug: export plain: http: " read.err | grep -aq "$url_b" &&
    fail "plain has B among its endpoints"
grep -aq ": error:" read.err &&
    { grep -a ": error:" read.err | head; fail "an error was logged"; }
echo "$0: ok"
