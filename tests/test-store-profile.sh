#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a boot profile embedded in a signed store index
# (cloop-store profile, docs/FORMAT.md "Boot profiles").
#   refused by profile add: a signed index without -k (index unchanged);
#     a recorded boot of another image, naming the file; a malformed
#     recorded boot, naming file and line.
#   profile add -k: two hand-written recorded boots merge in the
#     documented order (profile show); the index becomes version 2, its
#     revision grows; cloop-store verify -p passes; the plugin serves the
#     exact bytes with pubkey=, and a state-dir that accepted the old
#     revision accepts the new one (and then refuses the old index).
#   tampered: one byte of the embedded profile changed so that the index
#     still parses (checked with profile show): cloop-store verify and
#     the plugin refuse it with a signature error; a byte that breaks
#     the profile: the plugin refuses it naming the profile.
#   old readers: a reader refuses an unknown version naming it (what a
#     version-1 reader says of a version-2 index); profile remove makes
#     the index version 1 again, still signed and served.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires test -x "$CLOOP_STORE"
requires test -f "$PLUGIN"
CS=$CLOOP_STORE
BS=65536
NB=24

cd "$tmpdir"
make_sample raw.img $((BS * (NB - 1) + 777))
"$CS" keygen k.pem k.pub > /dev/null || fail "keygen"
"$CS" create -q -B $BS -c zlib -n bootimg -k k.pem raw.img s ||
    fail "create"
state=$tmpdir/state

# serves LABEL ARGS...: the plugin exports exactly raw.img.
serves ()
{
    _label=$1
    shift
    rm -f out.raw
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' "$PLUGIN" "$@" \
        2> err.txt || { cat err.txt; fail "$_label: refused"; }
    cmp out.raw raw.img || fail "$_label: wrong bytes"
    echo "ok: served: $_label"
}

# refuses LABEL REGEX ARGS...: nbdkit exits 1..127 before serving, with
# an error matching REGEX.
refuses ()
{
    _label=$1 _re=$2
    shift 2
    rm -f ran
    _rc=0
    nbdkit_cloop -U - --run 'touch ran' "$PLUGIN" "$@" 2> err.txt || _rc=$?
    [ "$_rc" -ne 0 ] && [ "$_rc" -lt 128 ] ||
        fail "$_label: exit status $_rc: $(cat err.txt)"
    [ ! -e ran ] || fail "$_label: nbdkit served the export"
    grep -Eqi -- "$_re" err.txt ||
        fail "$_label: the message does not say /$_re/: $(cat err.txt)"
    echo "ok: refused: $_label: $(grep -i error err.txt | head -1)"
}

# version FILE: the index's format version.
version () { od -A n -t u1 -j 11 -N 1 "$1" | tr -d ' '; }
revision () { "$CS" info "$1" | sed -n 's/^revision: *//p'; }

serves "before the profile, recording the revision" \
    file=s/index pubkey=k.pub state-dir="$state"
[ "$(version s/index)" = 1 ] || fail "a new index is not version 1"
rev0=$(revision s/index)
cp s/index old.index
cp s/index.sig old.index.sig

cat > boot1 <<EOF
nbdkit-cloop-profile 1
image $NB $BS bootimg
3 0
4 15
20 40
5 90
EOF
cat > boot2 <<EOF
nbdkit-cloop-profile 1
image $NB $BS bootimg
4 5
3 20
21 30
5 70
EOF
sed 's/bootimg/otherimg/' boot1 > other
printf 'nbdkit-cloop-profile 1\nimage %s %s bootimg\n3 0\n3 1\n' \
    $NB $BS > twice

# --- refusals of profile add ---------------------------------------------
if "$CS" profile add s boot1 boot2 > out.txt 2> err.txt; then
    fail "profile add without -k on a signed index succeeded"
fi
grep -q "is signed" err.txt || fail "no -k: $(cat err.txt)"
cmp s/index old.index || fail "the refused add changed the index"
if "$CS" profile add -k k.pem s boot1 other > out.txt 2> err.txt; then
    fail "a recorded boot of another image was accepted"
fi
grep -q "other: recorded on image 'otherimg'" err.txt ||
    fail "other image: $(cat err.txt)"
if "$CS" profile add -k k.pem s twice > out.txt 2> err.txt; then
    fail "a malformed recorded boot was accepted"
fi
grep -q "twice:4: block 3 is listed twice" err.txt ||
    fail "malformed: $(cat err.txt)"
cmp s/index old.index || fail "a refused add changed the index"
echo "ok: profile add refusals"

# --- profile add ---------------------------------------------------------
"$CS" profile add -k k.pem s boot1 boot2 > out.txt || fail "profile add"
cat out.txt
[ "$(version s/index)" = 2 ] || fail "the index is not version 2"
rev1=$(revision s/index)
[ "$rev1" -gt "$rev0" ] || fail "revision $rev1 is not above $rev0"
"$CS" profile show --blocks s > show.txt || fail "profile show"
cat show.txt
# 3: median (0+20)/2 = 10, 4: 10, 5: 80 (two boots each); 20: 40 and
# 21: 30 (one boot each).
[ "$(sed -n '3,$p' show.txt | tr '\n' ' ')" = "3 4 5 21 20 " ] ||
    fail "profile order: $(cat show.txt)"
grep -q "profile of 5 blocks of $NB" show.txt || fail "show summary"
"$CS" verify -p k.pub s/index > verify.txt || fail "verify: $(cat verify.txt)"
serves "with the profile, after the older revision" \
    file=s/index pubkey=k.pub state-dir="$state"
cp s/index good.index
cp s/index.sig good.index.sig
cp old.index s/index
cp old.index.sig s/index.sig
refuses "the index before the profile, after the new revision" \
    'older than revision' file=s/index pubkey=k.pub state-dir="$state"
cp good.index s/index
cp good.index.sig s/index.sig

# --- tampering -----------------------------------------------------------
# Change the last byte (the last profile entry) to a value with which
# the index still parses but lists another block.
ok=""
for v in 2 4 6 8 10 12 14 16; do
    cp good.index s/index
    /usr/bin/python3 - s/index "$v" <<'PY'
import sys
p, v = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
b[-1] = v
open(p, "wb").write(bytes(b))
PY
    cmp -s s/index good.index && continue
    if "$CS" profile show --blocks s > t.txt 2> /dev/null &&
       ! cmp -s t.txt show.txt; then
        ok=$v
        break
    fi
done
[ -n "$ok" ] || fail "no parse-valid tampering of the profile found"
echo "tampered: last byte = $ok; profile now: $(sed -n '3,$p' t.txt | tr '\n' ' ')"
if "$CS" verify -p k.pub s/index > verify.txt 2>&1; then
    fail "verify accepted a tampered profile"
fi
grep -Eqi 'signature' verify.txt || fail "verify: $(cat verify.txt)"
refuses "tampered profile" 'does not verify|signature' \
    file=s/index pubkey=k.pub
# A byte that breaks the profile: a block beyond the image.
cp good.index s/index
/usr/bin/python3 - s/index <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-1] = 0x7e        # zigzag 126: the next block + 63, beyond 24 blocks
open(p, "wb").write(bytes(b))
PY
refuses "profile block beyond the image" 'profile.*outside the image' \
    file=s/index pubkey=k.pub

# --- what other readers see ----------------------------------------------
# A reader refuses a version it does not know, naming it: this is what
# a version-1 reader says of a version-2 index.
cp good.index s/index
printf '\003' | dd of=s/index bs=1 seek=11 conv=notrunc 2> /dev/null
refuses "unknown format version" 'unsupported format version 3' \
    file=s/index pubkey=k.pub
cp good.index s/index
"$CS" profile remove -k k.pem s > out.txt || fail "profile remove"
[ "$(version s/index)" = 1 ] || fail "no profile, but not version 1"
[ "$(revision s/index)" -gt "$rev1" ] || fail "remove: revision not raised"
if "$CS" profile show s > t.txt; then fail "show: a profile remains"; fi
grep -q "no profile" t.txt || fail "show: $(cat t.txt)"
serves "profile removed" file=s/index pubkey=k.pub state-dir="$state"
echo "PASS"
