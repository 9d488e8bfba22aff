#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: malformed block-store indexes and signature files stop
# nbdkit at start-up with a message: exit status 1..127 (no signal),
# the --run command never runs, an error line, no sanitizer report.
# Index variants are validly signed (OpenSSL signs the exact bytes), so
# that the parser, not the signature check, has to catch them; they are
# also tried with insecure=true and over HTTP.  Signature-file variants
# sit beside a good index.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires nbdkit --version
requires openssl version
requires test -x "$CLOOP_STORE"
requires test -f "$PLUGIN"
CS=$CLOOP_STORE

cd "$tmpdir"
www=$tmpdir/www
mkdir -p "$www"
make_sample raw.img 300001
"$CS" keygen k.pem k.pub > /dev/null
"$CS" create -q -B 64K -c zlib -n good -d "a description" -k k.pem raw.img "$www" ||
    fail "create"
cp "$www/index" good.idx
cp "$www/index.sig" good.sig
keyid=$(awk '$1 == "ed25519" { print $2; exit }' good.sig)

# Index variants: NAME -> bytes, written by Python from the good index.
mkdir -p "$www/bad"
/usr/bin/python3 - good.idx "$www/bad" <<'PY'
import os, struct, sys
g = open(sys.argv[1], "rb").read()
out = sys.argv[2]
L = struct.unpack(">H", g[96:98])[0]
D = struct.unpack(">H", g[98 + L:100 + L])[0]
tab = 100 + L + D
n = struct.unpack(">Q", g[32:40])[0]
def put(name, b):
    open(os.path.join(out, name), "wb").write(bytes(b))
def hdr(off, fmt, val):
    b = bytearray(g)
    struct.pack_into(fmt, b, off, val)
    return b
def with_name(nm):
    return g[:96] + struct.pack(">H", len(nm)) + nm + g[98 + L:]
put("empty", b"")
put("truncated-header", g[:50])
put("truncated-95", g[:95])
put("truncated-name", g[:100])
put("truncated-table", g[:-1])
put("truncated-entry", g[:-20])
put("trailing-byte", g + b"\0")
put("trailing-entry", g + bytes(36))
put("bad-magic", b"CLSTORF\n" + g[8:])
put("version-2", hdr(8, ">I", 2))
put("header-len-97", hdr(12, ">I", 97))
put("header-len-0", hdr(12, ">I", 0))
put("size-0", hdr(16, ">Q", 0))
put("size-huge", hdr(16, ">Q", 2**63))
put("bs-0", hdr(24, ">I", 0))
put("bs-1000", hdr(24, ">I", 1000))
put("bs-128M", hdr(24, ">I", 128 << 20))
put("codec-0", hdr(28, ">B", 0))
put("codec-9", hdr(28, ">B", 9))
put("hash-2", hdr(29, ">B", 2))
put("flags-1", hdr(30, ">H", 1))
put("flags-8000", hdr(30, ">H", 0x8000))
put("count-plus-1", hdr(32, ">Q", n + 1))
put("count-0", hdr(32, ">Q", 0))
put("count-huge", hdr(32, ">Q", 2**40))
put("count-2^32+1", hdr(32, ">Q", 2**32 + 1))
# Consistent size and count, but far more blocks than the file holds.
b = hdr(16, ">Q", (2**32) * 512)
struct.pack_into(">I", b, 24, 512)
struct.pack_into(">Q", b, 32, 2**32)
put("huge-consistent", b)
b = hdr(16, ">Q", (2**32 + 1) * 512)
struct.pack_into(">I", b, 24, 512)
struct.pack_into(">Q", b, 32, 2**32 + 1)
put("huge-over-2^32", b)
put("reserved-set", hdr(80, ">B", 1))
put("name-empty", with_name(b""))
put("name-control", with_name(b"a\x01b"))
put("name-nul", with_name(b"a\x00b"))
put("name-del", with_name(b"a\x7fb"))
put("name-c1", with_name("a\u0085b".encode()))
put("name-bad-utf8", with_name(b"a\xffb"))
put("name-overlong-utf8", with_name(b"a\xc0\xafb"))
put("name-len-past-end", g[:96] + struct.pack(">H", 65535) + g[98:])
put("desc-len-past-end", g[:98 + L] + struct.pack(">H", 65535) + g[100 + L:])
put("desc-4097", g[:98 + L] + struct.pack(">H", 4097) + b"x" * 4097 + g[100 + L + D:])
put("desc-nul", g[:98 + L] + struct.pack(">H", 3) + b"a\0b" + g[100 + L + D:])
e0 = tab                             # first block's entry
b = bytearray(g); struct.pack_into(">I", b, e0 + 32, 0)
put("entry-len-0", b)                # hash set, length 0
b = bytearray(g); b[e0:e0 + 32] = bytes(32)
put("entry-zero-hash-len", b)        # zero hash, length set
bs = struct.unpack(">I", g[24:28])[0]
b = bytearray(g); struct.pack_into(">I", b, e0 + 32, bs + bs // 16 + 4097)
put("entry-len-too-big", b)
b = bytearray(g); struct.pack_into(">I", b, e0 + 32, 0xffffffff)
put("entry-len-max", b)
PY

# Sign every variant with the good key (OpenSSL, exact bytes).
for f in "$www"/bad/*; do
    sig=$(openssl pkeyutl -sign -rawin -inkey k.pem -in "$f" | base64 -w0) ||
        fail "openssl sign $f"
    printf 'nbdkit-cloop-signature 1\ned25519 %s %s\n' "$keyid" "$sig" > "$f.sig"
done

# refused LABEL ARGS...: nbdkit must not start.
refused ()
{
    _l=$1
    shift
    rm -f ran
    _rc=0
    nbdkit_cloop -U - --run 'touch ran' "$PLUGIN" "$@" > out.txt 2> err.txt || _rc=$?
    [ "$_rc" -ne 0 ] || fail "$_l: accepted"
    [ "$_rc" -lt 128 ] || fail "$_l: exit status $_rc: $(tail -5 err.txt)"
    [ ! -e ran ] || fail "$_l: served"
    grep -q 'error' err.txt || fail "$_l: no error message"
    ! grep -Eq 'AddressSanitizer|LeakSanitizer|runtime error|Segmentation|Aborted|core dumped' err.txt ||
        fail "$_l: $(cat err.txt)"
    [ "$(wc -c < err.txt)" -lt 4096 ] || fail "$_l: $(wc -c < err.txt) bytes of messages"
    echo "ok: $_l -> $_rc: $(grep error err.txt | tail -1 | cut -c1-150)"
}

# Sanity: the good index with the good signature works, and so does a
# re-signed copy of it (so the OpenSSL signing above is right).
cp good.idx "$www/bad-control"
openssl pkeyutl -sign -rawin -inkey k.pem -in good.idx | base64 -w0 > sig.b64
printf 'nbdkit-cloop-signature 1\ned25519 %s %s\n' "$keyid" "$(cat sig.b64)" > "$www/bad-control.sig"
# shellcheck disable=SC2016
nbdkit_cloop -U - --run 'nbdcopy "$uri" out.raw' "$PLUGIN" \
    file="$www/bad-control" pubkey=k.pub 2> err.txt || { cat err.txt; fail "control"; }
cmp out.raw raw.img || fail "control: wrong bytes"

count=0
for f in "$www"/bad/*; do
    case $f in *.sig) continue ;; esac
    b=$(basename "$f")
    refused "index $b (signed)" file="$f" pubkey=k.pub
    refused "index $b (insecure=true)" file="$f" insecure=true
    count=$((count + 1))
done

# --- Signature files beside the good index ------------------------------
mkdir -p "$www/sig"
/usr/bin/python3 - good.sig "$www/sig" <<'PY'
import os, sys
g = open(sys.argv[1], "rb").read()
lines = g.split(b"\n")
head, line = lines[0], lines[1]
kid, sig = line.split(b" ")[1], line.split(b" ")[2]
out = sys.argv[2]
def put(name, b):
    open(os.path.join(out, name), "wb").write(b)
put("empty", b"")
put("garbage", bytes(range(256)) * 4)
put("only-header", head + b"\n")
put("wrong-header", b"nbdkit-cloop-signature 2\n" + line + b"\n")
put("no-header", line + b"\n")
put("header-typo", b"nbdkit-cloop-signatures 1\n" + line + b"\n")
put("9KiB", head + b"\n" + b"# " + b"x" * 9216 + b"\n" + line + b"\n")
put("crlf", head + b"\r\n" + line + b"\r\n")
put("nul", head + b"\n" + line + b"\n\0")
put("sig-87", head + b"\ned25519 " + kid + b" " + sig[:-1] + b"\n")
put("sig-89", head + b"\ned25519 " + kid + b" " + sig + b"A\n")
put("sig-bad-b64", head + b"\ned25519 " + kid + b" " + b"!" * 88 + b"\n")
put("sig-noncanonical", head + b"\ned25519 " + kid + b" " + sig[:-3] + b"B==\n")
put("keyid-upper", head + b"\ned25519 " + kid.upper() + b" " + sig + b"\n")
put("keyid-short", head + b"\ned25519 " + kid[:15] + b" " + sig + b"\n")
put("double-space", head + b"\ned25519  " + kid + b" " + sig + b"\n")
put("other-alg", head + b"\nrsa " + kid + b" " + sig + b"\n")
put("17-lines", head + b"\n" + (line + b"\n") * 17)
put("junk-line", head + b"\n" + line + b"\nhello\n")
put("wrong-sig", head + b"\ned25519 " + kid + b" " + sig[:10] + (b"A" if sig[10:11] != b"A" else b"B") + sig[11:] + b"\n")
PY
for s in "$www"/sig/*; do
    b=$(basename "$s")
    cp good.idx "$www/sig/$b.idx"
    cp "$s" "$www/sig/$b.idx.sig"
    refused "signature file $b" file="$www/sig/$b.idx" pubkey=k.pub
done

# --- A few over HTTP ---------------------------------------------------
start_nginx "$www"
for b in truncated-table trailing-byte bad-magic count-huge huge-consistent name-control; do
    refused "url= index $b" url="$NGINX_URL/bad/$b" pubkey=k.pub cache-dir="$tmpdir/c"
done
for b in garbage 9KiB wrong-header crlf; do
    refused "url= signature file $b" url="$NGINX_URL/sig/$b.idx" pubkey=k.pub \
        cache-dir="$tmpdir/c"
done
echo "$0: $count index variants, all refused"
echo "$0: all cases passed"
