#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a cloop-store create killed midway (SIGKILL, as a crash)
# resumes from its journal: the rerun compresses fewer blocks than the
# image has (counted by the "compressed:" summary line, not timed),
# takes at least the journaled ones without compressing them, removes
# the journal, and writes the same block table as one uninterrupted
# run.  A journaled block file that was damaged meanwhile is compressed
# and written again, not trusted.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99

: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"
CS=$CLOOP_STORE
cd "$tmpdir"

args="-q -j 1 -c zlib -l 9 -B 16K -n resume"
# Random data (slow to compress) with a zero stretch.
mb=32
for try in 1 2 3; do
    rm -rf S a.img
    head -c $((mb * 1048576)) /dev/urandom > a.img
    head -c 1048576 /dev/zero >> a.img
    total=$(( ($(stat -c %s a.img) + 16383) / 16384 ))
    # shellcheck disable=SC2086
    "$CS" create $args a.img S & pid=$!
    # Kill it once 100 blocks are journaled.
    while kill -0 $pid 2> /dev/null &&
          [ "$(wc -l < S/.create-journal-index 2> /dev/null || echo 0)" -lt 101 ]; do
        sleep 0.02
    done
    kill -9 $pid 2> /dev/null && { wait $pid || :; break; }
    wait $pid || :
    echo "create finished before it could be killed: again, larger"
    mb=$((mb * 4))
done
[ -f S/.create-journal-index ] || fail "no journal left by a killed create"
[ ! -e S/index ] || fail "a killed create wrote an index"
journaled=$(( $(wc -l < S/.create-journal-index) - 1 ))
echo "killed after $journaled of $total blocks were journaled"

# shellcheck disable=SC2086
"$CS" create ${args/-q/} a.img S > sum.txt 2> err.txt ||
    fail "rerun: $(cat err.txt)"
cat err.txt sum.txt
grep -q 'resuming an interrupted create' err.txt || fail "rerun did not resume"
compressed=$(sed -n 's/^compressed: \([0-9]*\) blocks; \([0-9]*\) taken.*/\1/p' sum.txt)
resumed=$(sed -n 's/^compressed: \([0-9]*\) blocks; \([0-9]*\) taken.*/\2/p' sum.txt)
[ -n "$compressed" ] && [ -n "$resumed" ] || fail "no compressed: line"
[ "$resumed" -ge "$journaled" ] && [ $((compressed + resumed)) -eq "$total" ] ||
    fail "rerun: $compressed compressed + $resumed resumed, $total blocks, $journaled journaled"
[ "$compressed" -lt "$total" ] || fail "the rerun compressed every block"
[ ! -e S/.create-journal-index ] || fail "journal left after success"

# The same table as an uninterrupted run (tables end the index).
# shellcheck disable=SC2086
"$CS" create $args a.img F || fail "full run"
cmp <(tail -c $((total * 36)) S/index) <(tail -c $((total * 36)) F/index) ||
    fail "the resumed store differs from a full run's"

# A journaled block damaged since: compressed again, store still exact.
rm -rf S
# shellcheck disable=SC2086
"$CS" create $args a.img S & pid=$!
while kill -0 $pid 2> /dev/null &&
      [ "$(wc -l < S/.create-journal-index 2> /dev/null || echo 0)" -lt 21 ]; do
    sleep 0.02
done
kill -9 $pid 2> /dev/null || :
wait $pid || :
[ -f S/.create-journal-index ] || fail "second kill: no journal"
{
    h=$(sed -n '2s/^0 \([0-9a-f]*\) .*/\1/p' S/.create-journal-index)
    [ -n "$h" ] || fail "block 0 not journaled with a hash"
    f=S/blocks/${h:0:2}/$h
    printf 'X' | dd of="$f" bs=1 seek=10 conv=notrunc 2> /dev/null
    # shellcheck disable=SC2086
    "$CS" create ${args/-q/} a.img S > sum2.txt 2> err2.txt ||
        fail "rerun over a damaged block: $(cat err2.txt)"
    cat err2.txt sum2.txt
    cmp <(tail -c $((total * 36)) S/index) <(tail -c $((total * 36)) F/index) ||
        fail "resumed over a damaged block: differs from a full run"
    [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$h" ] ||
        fail "the damaged block file was not rewritten"
    echo "ok: a damaged journaled block was compressed again"
}

echo "$0: all cases passed"
