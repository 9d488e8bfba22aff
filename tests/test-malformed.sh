#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: malformed images (qemu iotest 075 cases, truncations,
# garbage, bad V4/dplasa footers; see malformed.py) are refused when
# nbdkit starts, with an error naming the file, and never crash it.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

requires nbdkit --version
requires /usr/bin/python3 --version
requires test -f "$PLUGIN"

bad="$tmpdir/bad"
/usr/bin/python3 "$srcdir/malformed.py" "$bad" > "$tmpdir/list" ||
    fail "malformed.py failed"
[ -s "$tmpdir/list" ] || fail "malformed.py wrote no images"

count=0
while read -r name; do
    f="$bad/$name"
    [ -f "$f" ] || fail "malformed.py did not write $name"
    rc=0
    nbdkit_cloop -U - --run true "$PLUGIN" file="$f" \
                 > "$tmpdir/out" 2> "$tmpdir/err" || rc=$?
    if [ "$rc" -eq 0 ]; then
        cat "$tmpdir/err"
        fail "$name: nbdkit started on a malformed image"
    fi
    if [ "$rc" -ge 128 ] ||
       grep -Eq 'Sanitizer|Segmentation|Aborted|core dumped|runtime error' \
            "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$name: nbdkit crashed (exit status $rc)"
    fi
    if ! grep -Fq "$name" "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$name: error message does not name the file"
    fi
    echo "ok: $name (exit $rc): $(grep -F "$name" "$tmpdir/err" | head -n1)"
    count=$((count + 1))
done < "$tmpdir/list"

echo "$0: $count malformed images refused"
