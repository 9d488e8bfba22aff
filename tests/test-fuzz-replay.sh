#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: every fuzz harness (fuzz/) keeps its properties on the
# seed corpus that scripts/fuzz-seeds makes with mkcloop and
# cloop-store, built here as plain programs (under ASan in the
# sanitizer build).  A violated property aborts the harness.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$MKCLOOP"
requires test -x "$CLOOP_STORE"
fuzzdir=$builddir/../fuzz

"$srcdir/../scripts/fuzz-seeds" "$tmpdir/seeds" "$MKCLOOP" "$CLOOP_STORE"

for t in cloop-index store-index signature decode http-reply hashlist \
         mirrorlist profile; do
    prog=$fuzzdir/fuzz-$t
    [ -x "$prog" ] || fail "$prog not built"
    n=$(find "$tmpdir/seeds/$t" -type f | wc -l)
    [ "$n" -ge 3 ] || fail "$t: only $n seeds"
    find "$tmpdir/seeds/$t" -type f -print0 | sort -z |
        xargs -0 "$prog" > "$tmpdir/out" 2>&1 ||
        { cat "$tmpdir/out"; fail "fuzz-$t failed on its seeds"; }
    grep -q "$n inputs replayed" "$tmpdir/out" ||
        { cat "$tmpdir/out"; fail "fuzz-$t did not replay all $n seeds"; }
    echo "ok: fuzz-$t: $n seeds"
done
