#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# --dump-plugin prints the version, the codecs of this build and the
# zlib-format decoder; the thread model is parallel.
. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
requires nbdkit --version

out=$tmpdir/dump
nbdkit_cloop --dump-plugin "$PLUGIN" > "$out"
cat "$out"

grep -q '^cloop_version=[0-9]' "$out" || fail "no cloop_version"
grep -q '^thread_model=parallel$' "$out" || fail "thread model is not parallel"
grep -q '^cloop_codecs=.*zlib' "$out" || fail "zlib missing from cloop_codecs"
for c in none xz lz4 lzo1x zstd; do
    grep -q "^cloop_codecs=.*\\b$c\\b" "$out" || fail "codec $c not built"
done
grep -Eq '^cloop_zlib_decoder=(libdeflate|zlib)$' "$out" ||
    fail "no cloop_zlib_decoder"
