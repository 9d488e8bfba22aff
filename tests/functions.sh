# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: shared helpers for the shell tests.  Source it first:
#   . "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
# (a test that cannot load its helpers is a hard error, never a pass).
# The Makefile's TESTS_ENVIRONMENT sets PLUGIN (the built plugin .so),
# MKCLOOP (the test-vector writer), srcdir and builddir.

set -e
set -u

# Debian's python3 (nbdsh imports the nbd module from it); another
# python3 earlier on PATH (pyenv) would shadow it.
PATH=/usr/bin:/usr/sbin:$PATH
export PATH

: "${srcdir:=$(cd "$(dirname "$0")" && pwd)}"
: "${builddir:=$srcdir}"
: "${PLUGIN:=$builddir/../.libs/nbdkit-cloop-plugin.so}"
: "${MKCLOOP:=$builddir/mkcloop}"

# requires CMD [ARGS]: skip (exit 77) if a tool is genuinely missing.
requires ()
{
    if ! "$@" >/dev/null 2>&1; then
        echo "$0: SKIP: missing requirement: $*"
        exit 77
    fi
}

# Run nbdkit; name the plugin as "$PLUGIN" after nbdkit's own options:
#   nbdkit_cloop -U - --run 'nbdinfo "$uri"' "$PLUGIN" file=IMG
# (One place to change how every test starts nbdkit.)
nbdkit_cloop ()
{
    nbdkit "$@"
}

# requires_plugin_tools: what every test of the plugin needs: nbdkit,
# nbdcopy, the test-vector writer tests/mkcloop and the built plugin.
requires_plugin_tools ()
{
    requires nbdkit --version
    requires nbdcopy --version
    requires test -x "$MKCLOOP"
    requires test -f "$PLUGIN"
}

# Temporary directory removed at exit; cleanup functions run first.
tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/cloop-test.XXXXXX")
# The plugin's default disk cache lives under XDG_CACHE_HOME: keep
# tests that do not name a cache-dir= out of the user's home.
XDG_CACHE_HOME=$tmpdir/xdg-cache
export XDG_CACHE_HOME
# Likewise the default state directory (store revisions accepted).
XDG_STATE_HOME=$tmpdir/xdg-state
export XDG_STATE_HOME
_cleanup_fns=""
cleanup_fn ()
{
    _cleanup_fns="$_cleanup_fns $*;"
}
_run_cleanup ()
{
    status=$?
    set +e
    eval "$_cleanup_fns"
    rm -rf "$tmpdir"
    exit $status
}
trap _run_cleanup EXIT INT TERM

# fail MESSAGE: print and exit 1.
fail ()
{
    echo "$0: FAIL: $*" >&2
    exit 1
}

# pad_to_block FILE BLOCKSIZE OUT: OUT = FILE zero-padded to a multiple
# of BLOCKSIZE (what a cloop export of FILE must read back as).
pad_to_block ()
{
    cp "$1" "$3"
    size=$(stat -c %s "$1")
    rem=$((size % $2))
    if [ "$rem" -ne 0 ]; then
        truncate -s $((size + $2 - rem)) "$3"
    fi
}

# make_sample OUT BYTES: a deterministic, mixed-content test input
# (text, pseudo-random and zero regions) of exactly BYTES bytes.
make_sample ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
words = b"cloop knoppix block zlib nbdkit image offset index mirror ".split()
buf = bytearray()
i = 0
while len(buf) < n:
    kind = i % 3
    chunk = 1000 + rng.randrange(40000)
    if kind == 0:
        buf += b" ".join(rng.choice(words) for _ in range(chunk // 6))
    elif kind == 1:
        buf += rng.randbytes(chunk)
    else:
        buf += bytes(chunk)
    i += 1
open(out, "wb").write(bytes(buf[:n]))
PY
}

# export_equals IMAGE EXPECTED [nbdkit args...]: read the whole export
# of IMAGE through nbdkit + nbdcopy and compare with EXPECTED.
export_equals ()
{
    _img=$1 _exp=$2
    shift 2
    rm -f "$tmpdir/out.raw"
    nbdkit_cloop -U - \
        --run "nbdcopy \"\$uri\" \"$tmpdir/out.raw\"" \
        "$PLUGIN" file="$_img" "$@" ||
        fail "nbdcopy of $_img failed"
    cmp "$tmpdir/out.raw" "$_exp" || fail "export of $_img differs from $_exp"
}
