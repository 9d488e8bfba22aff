#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: the trust rules of docs/FORMAT.md ("Trust rules
# (client)") as the plugin applies them.  Each untrusted index must stop
# nbdkit at start-up (exit status 1..127) with an error naming the
# reason; each trusted one must serve the exact bytes.
#   refused: unsigned index with pubkey=; the wrong key; an index byte
#     changed after signing; expired (@1000, and --expires 2 once it has
#     passed); rollback to a lower revision once a state-dir accepted a
#     higher one (file= and url=); the same revision with other bytes;
#     a pinned hash that does not match (index-sha256= and #sha256=);
#     neither pubkey= nor a pin.
#   served: the right key among several; a signature by a second key;
#     insecure=true on an unsigned (and on an expired) index, with a
#     warning; a pinned correct hash (index-sha256= and #sha256=) on an
#     unsigned index; a higher revision after a lower one.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires nbdcopy --version
requires test -x "$CLOOP_STORE"
requires test -f "$PLUGIN"
CS=$CLOOP_STORE

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www"
make_sample raw.img 700001
"$CS" keygen k1.pem k1.pub > /dev/null || fail "keygen 1"
"$CS" keygen k2.pem k2.pub > /dev/null || fail "keygen 2"
"$CS" keygen k3.pem k3.pub > /dev/null || fail "keygen 3"

# publish DIR [create args...]: a fresh store (any old index removed,
# so that an explicit lower -r is allowed).
publish ()
{
    _d=$1
    shift
    rm -f "$_d"/index "$_d"/index.sig
    "$CS" create -q -B 64K -c zlib "$@" raw.img "$_d" 2> create.err ||
        fail "cloop-store create $*: $(cat create.err)"
}

# serves LABEL NBDKIT-PLUGIN-ARGS...: nbdkit starts and exports exactly
# raw.img.
serves ()
{
    _label=$1
    shift
    rm -f out.raw
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' "$PLUGIN" "$@" \
        2> err.txt || { cat err.txt; fail "$_label: refused"; }
    cmp out.raw raw.img || fail "$_label: wrong bytes"
    ! grep -Eq 'AddressSanitizer|runtime error' err.txt ||
        fail "$_label: sanitizer report: $(cat err.txt)"
    echo "ok: served: $_label"
}

# refuses LABEL REGEX NBDKIT-PLUGIN-ARGS...: nbdkit exits 1..127 before
# serving (the --run command never runs), with an error matching REGEX.
refuses ()
{
    _label=$1 _re=$2
    shift 2
    rm -f ran
    _rc=0
    nbdkit_cloop -U - --run 'touch ran' "$PLUGIN" "$@" 2> err.txt || _rc=$?
    [ "$_rc" -ne 0 ] || fail "$_label: accepted (exit 0)"
    [ "$_rc" -lt 128 ] || fail "$_label: exit status $_rc (a signal?): $(cat err.txt)"
    [ ! -e ran ] || fail "$_label: nbdkit served the export"
    grep -q 'error' err.txt || fail "$_label: no error message"
    grep -Eqi -- "$_re" err.txt ||
        fail "$_label: the message does not say /$_re/: $(cat err.txt)"
    ! grep -Eq 'AddressSanitizer|runtime error' err.txt ||
        fail "$_label: sanitizer report: $(cat err.txt)"
    echo "ok: refused: $_label: $(grep error err.txt | head -1)"
}

sha () { sha256sum "$1" | cut -c1-64; }

# --- Signatures (file=) ------------------------------------------------
S=$www/s
publish "$S" -n trust -k k1.pem
serves "right key" file="$S/index" pubkey=k1.pub
serves "right key among two" file="$S/index" pubkey=k2.pub pubkey=k1.pub
refuses "wrong key" 'not signed by a trusted key|does not verify' \
    file="$S/index" pubkey=k2.pub
"$CS" sign -k k2.pem "$S/index" > /dev/null || fail "sign with k2"
serves "second signature, second key" file="$S/index" pubkey=k2.pub

U=$www/u
publish "$U" -n unsigned
[ ! -e "$U/index.sig" ] || fail "unsigned store has a .sig"
refuses "unsigned index with pubkey=" 'not signed' \
    file="$U/index" pubkey=k1.pub
refuses "neither pubkey= nor a pin" 'no trusted key|no pinned|unverified' \
    file="$U/index"
refuses "neither pubkey= nor a pin (signed index)" \
    'no trusted key|no pinned|unverified' file="$S/index"

# A byte of the index changed after signing (the description, so that
# the index still parses): the signature must fail.  (A name of its own:
# a store named like $S, published in the same second, has the same
# revision with other bytes, which the state directory refuses.)
T=$www/t
publish "$T" -n tamper -d "description ABC" -k k1.pem
serves "before the change" file="$T/index" pubkey=k1.pub
/usr/bin/python3 - "$T/index" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.index(b"ABC")
b[i] = ord("X")
open(p, "wb").write(bytes(b))
PY
refuses "index changed after signing" 'does not verify|signature' \
    file="$T/index" pubkey=k1.pub
# ... and a changed block-table byte (the last entry's length).
publish "$T" -n tamper-table -k k1.pem
/usr/bin/python3 - "$T/index" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-1] ^= 1
open(p, "wb").write(bytes(b))
PY
refuses "block table changed after signing" 'does not verify|signature' \
    file="$T/index" pubkey=k1.pub

# --- Pins (file=) ------------------------------------------------------
serves "index-sha256= pins an unsigned index" \
    file="$U/index" index-sha256="$(sha "$U/index")"
serves "upper-case pin" \
    file="$U/index" index-sha256="$(sha "$U/index" | tr a-f A-F)"
refuses "index-sha256= mismatch" 'pinned' \
    file="$U/index" index-sha256="$(sha "$S/index")"
refuses "index-sha256= mismatch with a good signature" 'pinned' \
    file="$S/index" pubkey=k1.pub index-sha256="$(sha "$U/index")"

# --- insecure=true -----------------------------------------------------
serves "insecure=true, unsigned" file="$U/index" insecure=true
grep -qi 'warning.*insecure' err.txt || fail "insecure=true: no warning"

# --- Expiry ------------------------------------------------------------
E=$www/e
publish "$E" -n expired --expires @1000 -k k1.pem
refuses "expired (@1000)" 'expired' file="$E/index" pubkey=k1.pub
serves "insecure=true, expired" file="$E/index" insecure=true
grep -qi 'warning.*insecure' err.txt || fail "insecure=true: no warning"
# (20 s leaves a busy machine time to start nbdkit before the expiry.)
publish "$E" -n soon --expires 20 -k k1.pem
created=$(date +%s)
serves "not yet expired" file="$E/index" pubkey=k1.pub
wait_s=$(( created + 21 - $(date +%s) ))
[ "$wait_s" -le 0 ] || sleep "$wait_s"
refuses "expired (--expires 20, 21 s later)" 'expired' \
    file="$E/index" pubkey=k1.pub

# --- Rollback (file= with a cache-dir) ----------------------------------
R=$www/r
C=$tmpdir/cache-file
publish "$R" -n roll -r 100 -k k1.pem
serves "revision 100" file="$R/index" pubkey=k1.pub cache-dir="$C"
cp "$R/index" r100.idx
cp "$R/index.sig" r100.sig
publish "$R" -n roll -r 99 -k k1.pem
refuses "rollback to 99 after 100" 'rollback|older' \
    file="$R/index" pubkey=k1.pub cache-dir="$C"
publish "$R" -n roll -r 100 -d "same revision, other bytes" -k k1.pem
refuses "revision 100 with other bytes" 'differs' \
    file="$R/index" pubkey=k1.pub cache-dir="$C"
cp r100.idx "$R/index"
cp r100.sig "$R/index.sig"
serves "revision 100 again, identical" file="$R/index" pubkey=k1.pub cache-dir="$C"
publish "$R" -n roll -r 101 -k k1.pem
serves "revision 101" file="$R/index" pubkey=k1.pub cache-dir="$C"
cp r100.idx "$R/index"
cp r100.sig "$R/index.sig"
refuses "rollback to 100 after 101" 'rollback|older' \
    file="$R/index" pubkey=k1.pub cache-dir="$C"
# Another name is another store: its revisions are independent.
publish "$R" -n other-name -r 5 -k k1.pem
serves "another store name, low revision" file="$R/index" pubkey=k1.pub cache-dir="$C"

# --- Over HTTP -----------------------------------------------------------
# (A state directory of its own: the revisions accepted above are kept
# apart from the caches, in the default state directory.)
start_nginx "$www"
HC=$tmpdir/cache-http
XDG_STATE_HOME=$tmpdir/state-http
serves "url= signed" url="$NGINX_URL/s/index" pubkey=k1.pub cache-dir="$HC"
refuses "url= wrong key" 'not signed by a trusted key|does not verify' \
    url="$NGINX_URL/s/index" pubkey=k3.pub cache-dir="$HC"
refuses "url= unsigned with pubkey=" 'not signed|sig' \
    url="$NGINX_URL/u/index" pubkey=k1.pub cache-dir="$HC"
refuses "url= no pubkey, no pin" 'no trusted key|no pinned|unverified' \
    url="$NGINX_URL/u/index" cache-dir="$HC"
serves "url= #sha256= pins an unsigned index" \
    url="$NGINX_URL/u/index#sha256=$(sha "$U/index")" cache-dir="$HC"
refuses "url= #sha256= mismatch" 'pinned' \
    url="$NGINX_URL/u/index#sha256=$(sha "$S/index")" cache-dir="$HC"
serves "url= index-sha256= pin" \
    url="$NGINX_URL/u/index" index-sha256="$(sha "$U/index")" cache-dir="$HC"
refuses "url= index-sha256= mismatch" 'pinned' \
    url="$NGINX_URL/u/index" index-sha256="$(sha "$S/index")" cache-dir="$HC"
serves "url= insecure=true" url="$NGINX_URL/u/index" insecure=true cache-dir="$HC"
grep -qi 'warning.*insecure' err.txt || fail "url= insecure=true: no warning"
refuses "url= expired" 'expired' url="$NGINX_URL/e/index" pubkey=k1.pub \
    cache-dir="$HC"

# Rollback over HTTP: this cache accepted revision 200; the server is
# then republished at 199, and at 200 with other bytes.  revalidate=0
# so that the start asks the server (the default would trust the cached
# identity for 600 s and not even see the new index).  Each index gets
# a description of another length: nginx's ETag is mtime (seconds) and
# size, and two indexes of one size written in the same second would
# look unchanged to any HTTP client.
publish "$R" -n roll-http -r 200 -k k1.pem
serves "url= revision 200" url="$NGINX_URL/r/index" pubkey=k1.pub \
    cache-dir="$HC" revalidate=0
publish "$R" -n roll-http -r 199 -d a -k k1.pem
refuses "url= rollback to 199 after 200" 'rollback|older' \
    url="$NGINX_URL/r/index" pubkey=k1.pub cache-dir="$HC" revalidate=0
publish "$R" -n roll-http -r 200 -d bb -k k1.pem
refuses "url= revision 200 with other bytes" 'differs' \
    url="$NGINX_URL/r/index" pubkey=k1.pub cache-dir="$HC" revalidate=0
publish "$R" -n roll-http -r 201 -d ccc -k k1.pem
serves "url= revision 201" url="$NGINX_URL/r/index" pubkey=k1.pub \
    cache-dir="$HC" revalidate=0
# A fresh cache still refuses 199: the revisions accepted live in the
# state directory, not in the cache.
publish "$R" -n roll-http -r 199 -d dddd -k k1.pem
refuses "url= rollback to 199, fresh cache" 'rollback|older' \
    url="$NGINX_URL/r/index" pubkey=k1.pub cache-dir="$tmpdir/cache-fresh"
# A fresh state directory has no memory of 201: it accepts 199, which
# shows the refusals above came from the state directory.
serves "url= revision 199, fresh state-dir" url="$NGINX_URL/r/index" \
    pubkey=k1.pub cache-dir="$tmpdir/cache-fresh" \
    state-dir="$tmpdir/state-fresh"
echo "$0: all cases passed"
