#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: file= accepts an ISO9660 image (a KNOPPIX DVD) and
# serves the cloop file inside it, byte-exact against the same file
# served bare: /KNOPPIX/KNOPPIX by default (create_compressed_fs), or
# iso-file=PATH (mkcloop).  ISOs made by genisoimage with Rock Ridge
# and Joliet, Joliet only (a long lower-case name only Joliet keeps),
# Rock Ridge only (likewise), and neither (ISO level-1 "KNOPPIX.;1",
# found case-insensitively).  Refused with an error naming the path
# and the ISO: no /KNOPPIX/KNOPPIX, a KNOPPIX that is not a cloop
# file, a corrupted volume descriptor, iso-file= on a bare cloop
# file.  dir= serves every KNOPPIX* of an ISO as ISONAME/KNOPPIXn.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires_plugin_tools
requires test -x /usr/bin/create_compressed_fs
requires genisoimage -version
requires nbdinfo --version

cd "$tmpdir"
make_sample in0 3000001
make_sample in1 1700003
create_compressed_fs -q -B 65536 -L 9 in0 knoppix0 2>/dev/null ||
    fail "create_compressed_fs failed"
"$MKCLOOP" -d v4 -B 131072 in1 knoppix1 || fail "mkcloop failed"
pad_to_block in0 65536 exp0
pad_to_block in1 131072 exp1

# read_ok WHAT EXPECTED ARGS...: the export reads as EXPECTED.
read_ok ()
{
    what=$1 exp=$2
    shift 2
    rm -f out
    nbdkit_cloop -U - --run 'nbdcopy "$uri" out' "$PLUGIN" "$@" 2> err ||
        { cat err; fail "$what: nbdkit failed"; }
    cmp out "$exp" || fail "$what: wrong bytes"
    echo "ok: $what"
}

# refused WHAT REGEX ARGS...: nbdkit does not start, and says REGEX.
refused ()
{
    what=$1 re=$2
    shift 2
    if nbdkit_cloop -U - --run true "$PLUGIN" "$@" 2> err; then
        fail "$what: accepted"
    fi
    grep -Eq -- "$re" err || { cat err; fail "$what: the error does not say /$re/"; }
    echo "ok: $what refused: $(grep error: err | head -1)"
}

mkdir -p tree/KNOPPIX tree/knoppix-extra
cp knoppix0 tree/KNOPPIX/KNOPPIX
cp knoppix1 tree/KNOPPIX/KNOPPIX1
cp knoppix1 tree/knoppix-extra/Long-Mixed-Case-Name.cloop
echo "not an image" > tree/KNOPPIX/README

genisoimage -quiet -R -J -o rrj.iso tree || fail "genisoimage -R -J"
genisoimage -quiet -J -o joliet.iso tree || fail "genisoimage -J"
genisoimage -quiet -R -o rr.iso tree || fail "genisoimage -R"
genisoimage -quiet -o plain.iso tree || fail "genisoimage"

read_ok "bare cloop file" exp0 file=knoppix0
for iso in rrj joliet rr plain; do
    read_ok "$iso.iso /KNOPPIX/KNOPPIX" exp0 file=$iso.iso
    read_ok "$iso.iso iso-file=/KNOPPIX/KNOPPIX1" exp1 \
        file=$iso.iso iso-file=/KNOPPIX/KNOPPIX1
done
read_ok "plain.iso, an ISO name found case-insensitively" exp1 \
    file=plain.iso iso-file=/knoppix/knoppix1
for iso in rrj joliet rr; do
    read_ok "$iso.iso, a long mixed-case name" exp1 file=$iso.iso \
        iso-file=/knoppix-extra/Long-Mixed-Case-Name.cloop
done
# Without Rock Ridge or Joliet the long name is not kept.
refused "plain.iso, a long name" \
    '/knoppix-extra/Long-Mixed-Case-Name.cloop in [^ ]*plain.iso: not found' \
    file=plain.iso iso-file=/knoppix-extra/Long-Mixed-Case-Name.cloop

# Faults.
mkdir -p none/KNOPPIX
echo x > none/KNOPPIX/other
genisoimage -quiet -R -J -o none.iso none || fail "genisoimage none"
refused "no /KNOPPIX/KNOPPIX" '/KNOPPIX/KNOPPIX in [^ ]*none.iso: not found \(no KNOPPIX\)' \
    file=none.iso
refused "iso-file= naming a directory" '/KNOPPIX in [^ ]*rrj.iso: .*directory' \
    file=rrj.iso iso-file=/KNOPPIX
refused "a KNOPPIX that is not a cloop file" \
    '/KNOPPIX/README in [^ ]*rrj.iso is not a cloop image: ' \
    file=rrj.iso iso-file=/KNOPPIX/README
cp rrj.iso corrupt.iso
printf '\377' | dd of=corrupt.iso bs=1 seek=$((32768 + 84)) conv=notrunc 2>/dev/null
refused "a corrupted volume descriptor" \
    '/KNOPPIX/KNOPPIX in [^ ]*corrupt.iso: volume descriptor 0 is corrupt' \
    file=corrupt.iso
refused "iso-file= on a bare cloop file" \
    'iso-file=/KNOPPIX/KNOPPIX1: [^ ]*knoppix0 is not an ISO9660 image' \
    file=knoppix0 iso-file=/KNOPPIX/KNOPPIX1
refused "iso-file= not absolute" 'iso-file=KNOPPIX: must be an absolute path' \
    file=rrj.iso iso-file=KNOPPIX

# dir=: the ISO's KNOPPIX and KNOPPIX1 are exports of their own (README
# is skipped), beside a bare cloop file.
mkdir -p served
cp rrj.iso served/knoppix.iso
cp knoppix0 served/bare
cp none.iso served/none.iso
nbdkit_cloop -U - --run 'nbdinfo --list --json "$uri"' "$PLUGIN" \
    dir=served > list.json 2> err || { cat err; fail "dir=: nbdinfo --list"; }
names=$(/usr/bin/python3 -c 'import json, sys
print(" ".join(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"]))' list.json)
[ "$names" = "bare knoppix.iso/KNOPPIX knoppix.iso/KNOPPIX1" ] ||
    fail "dir=: exports are '$names'"
echo "ok: dir= exports: $names"
for e in KNOPPIX:exp0 KNOPPIX1:exp1; do
    rm -f out
    nbdkit_cloop -U - -e "knoppix.iso/${e%%:*}" \
        --run 'nbdcopy "$uri" out' "$PLUGIN" dir=served 2> err ||
        { cat err; fail "dir=: nbdkit failed"; }
    cmp out "${e#*:}" || fail "dir=: knoppix.iso/${e%%:*}: wrong bytes"
    echo "ok: dir= export knoppix.iso/${e%%:*}"
done
refused "iso-file= with dir=" 'iso-file= belongs to one image' \
    dir=served iso-file=/KNOPPIX/KNOPPIX
