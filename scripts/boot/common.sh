# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop boot demo: shared helpers (POSIX sh, sourced).
#
#   . scripts/boot/common.sh
#   boot_prepare || exit 77     # kernel, rootfs + cloop image, miniroot
#
# Everything generated lives under $BOOT_DIR (default
# /var/tmp/nbdkit-cloop-boot) and is rebuilt when missing or when the
# script that makes it changed; never in the source tree.  The runtime
# helpers at the end (boot_nbdkit_*, boot_assert_console, ...) also need
# tests/functions.sh ($tmpdir, cleanup_fn, fail) sourced first.
#
# After boot_prepare:
#   BOOT_KVER          kernel version, e.g. 6.1.0-56-amd64
#   BOOT_VMLINUZ       the kernel
#   BOOT_MINIROOT      the initramfs (cpio.gz)
#   BOOT_WEBROOT       directory to serve over HTTP; it holds KNOPPIX/KNOPPIX
#   BOOT_IMAGE         that cloop file
#   BOOT_IMAGE_PATH    its URL path, /KNOPPIX/KNOPPIX
#   BOOT_RAW_SIZE      size of the decoded export in bytes
#   BOOT_RAW_SHA256    sha256 of the decoded export
#   BOOT_MANIFEST      "sha256  /path" lines of the files the guest checks

: "${BOOT_DIR:=/var/tmp/nbdkit-cloop-boot}"
: "${BOOT_ROOTFS_TYPE:=ext4}"
BOOT_MARKER=NBDKIT-CLOOP-BOOT-OK
BOOT_IMAGE_PATH=/KNOPPIX/KNOPPIX

# The directory of these scripts ($0 may be a test in tests/).
if [ -z "${BOOT_SCRIPTS:-}" ]; then
    if [ -n "${srcdir:-}" ] && [ -f "$srcdir/../scripts/boot/common.sh" ]; then
        BOOT_SCRIPTS=$(cd "$srcdir/../scripts/boot" && pwd)
    else
        BOOT_SCRIPTS=$(cd "$(dirname "$0")" && pwd)
    fi
fi

_boot_say ()
{
    echo "boot: $*" >&2
}

# boot_requires: exit 77 (skip) unless the host tools are there.
boot_requires ()
{
    for _b_tool in qemu-system-x86_64 qemu-img nbdkit busybox cpio gzip \
        create_compressed_fs mkfs.ext4 genisoimage dpkg-deb apt-get \
        apt-cache flock sha256sum; do
        if ! command -v "$_b_tool" >/dev/null 2>&1 &&
            ! [ -x "/usr/sbin/$_b_tool" ] && ! [ -x "/sbin/$_b_tool" ]; then
            echo "$0: SKIP: missing requirement: $_b_tool"
            exit 77
        fi
    done
    [ -x /usr/sbin/nbd-client ] ||
        { echo "$0: SKIP: missing requirement: /usr/sbin/nbd-client"; exit 77; }
    case $(busybox 2>&1 | head -n 1) in
        *BusyBox*) ;;
        *) echo "$0: SKIP: busybox is not busybox-static"; exit 77 ;;
    esac
}

# boot_newest_kernel: the newest linux-image-6.1.0-N-amd64 apt knows
# (version only, e.g. 6.1.0-56-amd64); empty if none.
boot_newest_kernel ()
{
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' \
        2>/dev/null | awk '{ print $1 }' | sed 's/^linux-image-//' |
        sort -V | tail -n 1
}

# boot_cached_kernel: the newest kernel already extracted in $BOOT_DIR.
boot_cached_kernel ()
{
    for _b_d in "$BOOT_DIR"/kernel-*/.complete; do
        [ -f "$_b_d" ] || continue
        _b_d=${_b_d%/.complete}
        echo "${_b_d##*/kernel-}"
    done | sort -V | tail -n 1
}

# _boot_fetch_kernel VER: download and extract linux-image-VER into
# $BOOT_DIR/kernel-VER (no installation: dpkg-deb -x), and index its
# modules.  Returns non-zero if the package cannot be downloaded.
_boot_fetch_kernel ()
{
    _b_kd=$BOOT_DIR/kernel-$1
    [ -f "$_b_kd/.complete" ] && return 0
    mkdir -p "$BOOT_DIR/dl"
    _b_deb=$(ls "$BOOT_DIR/dl/linux-image-$1"_*.deb 2>/dev/null | tail -n 1)
    if [ -z "$_b_deb" ]; then
        _boot_say "downloading linux-image-$1 (apt-get download)"
        (cd "$BOOT_DIR/dl" &&
            apt-get download -q -o APT::Sandbox::User=root \
                "linux-image-$1" >&2) || return 1
        _b_deb=$(ls "$BOOT_DIR/dl/linux-image-$1"_*.deb 2>/dev/null |
            tail -n 1)
        [ -n "$_b_deb" ] || return 1
    fi
    _boot_say "extracting $_b_deb"
    rm -rf "$_b_kd"
    mkdir -p "$_b_kd"
    dpkg-deb -x "$_b_deb" "$_b_kd" || return 1
    [ -f "$_b_kd/boot/vmlinuz-$1" ] || return 1
    touch "$_b_kd/.complete"
    rm -f "$_b_deb"
}

# _boot_stamp FILE...: a fingerprint of the files (rebuild trigger).
_boot_stamp ()
{
    cat "$@" | sha256sum | cut -d' ' -f1
}

# _boot_build: (under the lock) make whatever is missing or stale.
_boot_build ()
{
    mkdir -p "$BOOT_DIR"
    # Kernel: BOOT_KVER if given, else the newest in the archive; if
    # that cannot be downloaded, the newest one already extracted.
    _b_want=${BOOT_KVER:-}
    [ -n "$_b_want" ] || _b_want=$(boot_newest_kernel)
    if [ -z "$_b_want" ] || ! _boot_fetch_kernel "$_b_want"; then
        _b_have=$(boot_cached_kernel)
        if [ -z "${BOOT_KVER:-}" ] && [ -n "$_b_have" ]; then
            _boot_say "linux-image-${_b_want:-6.1.0-*-amd64} unavailable;" \
                "using cached $_b_have"
            _b_want=$_b_have
        else
            _boot_say "cannot obtain linux-image-${_b_want:-6.1.0-*-amd64}" \
                "(apt-get download failed and nothing cached in $BOOT_DIR)"
            return 77
        fi
    fi
    echo "$_b_want" > "$BOOT_DIR/kernel.version"

    # Root filesystem image, published as a cloop file.
    _b_rd=$BOOT_DIR/rootfs-$BOOT_ROOTFS_TYPE
    _b_st=$(_boot_stamp "$BOOT_SCRIPTS/make-rootfs" "$BOOT_SCRIPTS/init-rootfs")
    if [ "$(cat "$_b_rd/.stamp" 2>/dev/null)" != "$_b_st" ]; then
        _boot_say "building the $BOOT_ROOTFS_TYPE root filesystem and its cloop image"
        "$BOOT_SCRIPTS/make-rootfs" "$BOOT_ROOTFS_TYPE" "$_b_rd" || return 1
        echo "$_b_st" > "$_b_rd/.stamp"
    fi

    # Miniroot for this kernel.
    _b_mr=$BOOT_DIR/miniroot-$_b_want.cpio.gz
    _b_st=$(_boot_stamp "$BOOT_SCRIPTS/make-miniroot" \
        "$BOOT_SCRIPTS/init-miniroot" /usr/sbin/nbd-client "$(command -v busybox)")
    if [ ! -s "$_b_mr" ] || [ "$(cat "$_b_mr.stamp" 2>/dev/null)" != "$_b_st" ]; then
        _boot_say "building the miniroot for $_b_want"
        "$BOOT_SCRIPTS/make-miniroot" "$BOOT_DIR/kernel-$_b_want" "$_b_want" \
            "$_b_mr" || return 1
        echo "$_b_st" > "$_b_mr.stamp"
    fi
}

# boot_prepare: build what is missing (serialised between concurrent
# tests by a lock on $BOOT_DIR/.lock), then set the BOOT_* variables.
# Returns 77 when no kernel can be obtained, 1 when a build fails.
boot_prepare ()
{
    mkdir -p "$BOOT_DIR" || return 1
    _b_rc=0
    (
        flock 9 || exit 1
        _boot_build
    ) 9>"$BOOT_DIR/.lock" || _b_rc=$?
    [ "$_b_rc" -eq 0 ] || return "$_b_rc"
    BOOT_KVER=$(cat "$BOOT_DIR/kernel.version")
    BOOT_VMLINUZ=$BOOT_DIR/kernel-$BOOT_KVER/boot/vmlinuz-$BOOT_KVER
    BOOT_MINIROOT=$BOOT_DIR/miniroot-$BOOT_KVER.cpio.gz
    _b_rd=$BOOT_DIR/rootfs-$BOOT_ROOTFS_TYPE
    BOOT_WEBROOT=$_b_rd/web
    BOOT_IMAGE=$BOOT_WEBROOT$BOOT_IMAGE_PATH
    BOOT_RAW_SIZE=$(cat "$_b_rd/raw.size")
    BOOT_RAW_SHA256=$(cat "$_b_rd/raw.sha256")
    BOOT_MANIFEST=$_b_rd/manifest.sha256
    export BOOT_KVER BOOT_VMLINUZ BOOT_MINIROOT BOOT_DIR BOOT_ROOTFS_TYPE
}

# ---------------------------------------------------------------------
# Runtime helpers (need tests/functions.sh and tests/web-servers.sh).

# boot_test_begin: the common start of a boot test: skip without the
# tools, fail without a kernel, build what is missing, serve the image
# with nginx.  Sets BOOT_URL (and NGINX_* from start_nginx).
boot_test_begin ()
{
    boot_requires
    requires /usr/sbin/nginx -v
    _b_rc=0
    boot_prepare || _b_rc=$?
    # No kernel is not a missing tool: the package comes from the same
    # apt sources as everything scripts/bootstrap installs.
    [ "$_b_rc" -ne 77 ] ||
        fail "no Debian kernel package could be obtained (apt-get download" \
             "linux-image-*-amd64 failed and none is cached in $BOOT_DIR)"

    [ "$_b_rc" -eq 0 ] || fail "building the boot artefacts failed"
    start_nginx "$BOOT_WEBROOT"
    BOOT_URL=$NGINX_URL$BOOT_IMAGE_PATH
}

# boot_nbdkit_start LOG NBDKIT-ARGS...: start nbdkit in the background
# (foreground mode, verbose, plugin stats on) with the given listening
# options, plugin and parameters; wait until it serves.  Sets
# BOOT_NBDKIT_PID; stopped at exit.
boot_nbdkit_start ()
{
    _b_log=$1
    shift
    _b_pidf=$(mktemp "$tmpdir/nbdkit.pid.XXXXXX")
    rm -f "$_b_pidf"
    nbdkit_cloop -f -v -D cloop.stats=1 -P "$_b_pidf" "$@" 2>>"$_b_log" &
    BOOT_NBDKIT_PID=$!
    cleanup_fn "boot_nbdkit_stop $BOOT_NBDKIT_PID"
    _b_i=0
    while [ ! -s "$_b_pidf" ]; do
        if ! kill -0 "$BOOT_NBDKIT_PID" 2>/dev/null || [ "$_b_i" -ge 600 ]; then
            cat "$_b_log" >&2
            fail "nbdkit did not start"
        fi
        sleep 0.05
        _b_i=$((_b_i + 1))
    done
}

# boot_nbdkit_stop PID: stop that nbdkit and reap it.
boot_nbdkit_stop ()
{
    kill -TERM "$1" 2>/dev/null || return 0
    _b_i=0
    while kill -0 "$1" 2>/dev/null && [ "$_b_i" -lt 100 ]; do
        sleep 0.05
        _b_i=$((_b_i + 1))
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    return 0
}

# boot_http_stats LOG: "REQUESTS BYTES" of the last plugin http counter
# line in an nbdkit log (logged at each connection close), or "0 0".
boot_http_stats ()
{
    _b_l=$(grep 'http: [0-9]* requests, [0-9]* bytes fetched' "$1" | tail -n 1)
    if [ -z "$_b_l" ]; then
        echo "0 0"
    else
        echo "$_b_l" |
            sed 's/.*http: \([0-9]*\) requests, \([0-9]*\) bytes fetched.*/\1 \2/'
    fi
}

# boot_wait_stats LOG N: wait (<= 10 s) until LOG holds N http counter
# lines (the connection closed after the guest powered off).
boot_wait_stats ()
{
    _b_i=0
    while [ "$(grep -c 'http: [0-9]* requests' "$1")" -lt "$2" ] &&
        [ "$_b_i" -lt 200 ]; do
        sleep 0.05
        _b_i=$((_b_i + 1))
    done
}

# boot_nginx_bytes LOG FROM_LINE: "REQUESTS BODY_BYTES" in an nginx
# access log (web-servers.sh format) after line FROM_LINE, probes
# excluded.
boot_nginx_bytes ()
{
    tail -n +"$(($2 + 1))" "$1" | grep -v -e '/.web-servers-ready-probe' |
        awk -F'"' '{ split($3, f, " "); n++; b += f[1] }
                   END { printf "%d %d\n", n, b }'
}

# boot_assert_console LOG: the guest printed the marker, checked its
# files against the manifest baked into the image, and saw exactly the
# bytes the host put there; on failure the console log is printed.
boot_assert_console ()
{
    _b_clean=$tmpdir/console.clean
    tr -d '\r' < "$1" > "$_b_clean"
    _b_bad=
    grep -q "^$BOOT_MARKER" "$_b_clean" || _b_bad="no marker $BOOT_MARKER"
    [ -n "$_b_bad" ] || grep -q '^BOOT-FILES-OK' "$_b_clean" ||
        _b_bad="the guest's sha256sum -c of its files failed"
    if [ -z "$_b_bad" ]; then
        while read -r _b_sum _b_path; do
            grep -qxF "BOOT-FILE $_b_sum $_b_path" "$_b_clean" ||
                { _b_bad="guest did not see $_b_path with sha256 $_b_sum"; break; }
        done < "$BOOT_MANIFEST"
    fi
    if [ -n "$_b_bad" ]; then
        echo "===== guest console ($1) =====" >&2
        cat "$1" >&2
        echo "===== end of guest console =====" >&2
        fail "$_b_bad"
    fi
    grep '^BOOT-' "$_b_clean" | sed 's/^/  guest: /'
}
