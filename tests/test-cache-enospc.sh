#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a disk cache on a filesystem that fills up (a 1 MiB
# tmpfs, far smaller than the image, cache-max-size left at its 4G
# default so only the filesystem says no).  Three nbdkit processes on
# that cache-dir read the whole export at once: every byte exact, and
# a warning that names the full disk.  Then a fresh start on the
# still-full cache-dir reads exactly again, and so does one on a tmpfs
# too small for even the image's identity and index (64 KiB).  Needs
# root (mount).

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires /usr/bin/python3 -c 'import nbd'
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: SKIP: mounting a tmpfs needs root"
    exit 77
fi
VERIFY=$srcdir/nbdverify.py

make_served_image v2 8000000
start_nginx "$www"
mnt=$tmpdir/small
mkdir -p "$mnt"
mount -t tmpfs -o size=1m,mode=0700 tmpfs "$mnt" || fail "mount tmpfs"
cleanup_fn "umount -l '$mnt'"

# read_all LOG CACHEDIR: a whole verified pass, 4 connections.
read_all ()
{
    # shellcheck disable=SC2016
    nbdkit_cloop -U - --run "/usr/bin/python3 $VERIFY --expected \
        $tmpdir/expected --uri \"\$uri\" --pass --connections 4" \
        "$PLUGIN" url="$NGINX_URL/img" cache-dir="$2" > "$1.out" 2> "$1.err"
}

pids=
for i in 1 2 3; do
    read_all "$tmpdir/full.$i" "$mnt/cache" &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p" || {
        cat "$tmpdir"/full.*.out "$tmpdir"/full.*.err
        fail "a reader on the full cache failed or read wrong bytes"; }
done
head -n1 "$tmpdir"/full.*.out
df -k "$mnt" | tail -n1
grep -h 'disk cache' "$tmpdir"/full.*.err | sort | uniq -c
grep -hqiE 'disk cache.*(space|ENOSPC|full)' "$tmpdir"/full.*.err ||
    fail "no warning about the full disk"
# (A warning is printed as one, never as an error.)
if grep -h 'error' "$tmpdir"/full.*.err; then
    fail "the full disk was reported as an error"
fi

read_all "$tmpdir/next" "$mnt/cache" || {
    cat "$tmpdir/next.out" "$tmpdir/next.err"; fail "next start on the full cache"; }
echo "next start: $(head -n1 "$tmpdir/next.out")"

umount -l "$mnt"
mount -t tmpfs -o size=64k,mode=0700 tmpfs "$mnt" || fail "mount tmpfs"
for run in tiny tiny-next; do
    read_all "$tmpdir/$run" "$mnt/cache" || {
        cat "$tmpdir/$run.out" "$tmpdir/$run.err"; fail "$run: failed"; }
    echo "$run: $(head -n1 "$tmpdir/$run.out")"
done
echo "$0: ok"
