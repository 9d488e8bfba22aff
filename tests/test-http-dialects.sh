#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: every cloop dialect (mkcloop's, and one image written by
# the real create_compressed_fs) served by nginx AND by lighttpd on
# 127.0.0.1 reads back through url= byte for byte as the zero-padded
# input (dplasa V3: exactly the input), half of the runs without a disk
# cache (cache-dir=none) and half with a fresh one.  A second run
# against each warm cache must read back the same bytes.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires nbdinfo --version
requires /usr/sbin/nginx -v
requires /usr/sbin/lighttpd -v

www=$tmpdir/www
mkdir -p "$www" "$tmpdir/exp"

make_sample "$tmpdir/odd" 300001
make_sample "$tmpdir/even" 262144

# Build the images: NAME DIALECT BS INPUT [mkcloop args].
images=""
skipped=0
build ()
{
    name=$1 dialect=$2 bs=$3 input=$4
    shift 4
    rc=0
    "$MKCLOOP" -d "$dialect" -B "$bs" "$@" "$input" "$www/$name" || rc=$?
    if [ "$rc" -eq 2 ]; then
        echo "$0: codec not built, skipping: $name"
        skipped=$((skipped + 1))
        rm -f "$www/$name"
        return 0
    fi
    [ "$rc" -eq 0 ] || fail "mkcloop -d $dialect $* failed ($rc)"
    if [ "$dialect" = dplasa-v3 ]; then
        cp "$input" "$tmpdir/exp/$name"
    else
        pad_to_block "$input" "$bs" "$tmpdir/exp/$name"
    fi
    images="$images $name"
}

for d in v2 v4 v4-footer 0.68 1.0 slitaz-v3 dplasa-v3 \
         fbsd-v2 fbsd-l3 fbsd-z4 fbsd-dedup; do
    build "$d-odd" "$d" 4096 "$tmpdir/odd"
    build "$d-even" "$d" 65536 "$tmpdir/even"
done
build v4-mixed v4 4096 "$tmpdir/odd" -c zlib,none,xz,lz4,lzo
build v4-footer-mixed v4-footer 4096 "$tmpdir/odd" -c lzo,lz4,xz,none,zlib \
      --data-offset 4096
build dplasa-mixed dplasa-v3 4096 "$tmpdir/odd" -c zlib,none,xz,lz4,lzo
build v2-512 v2 512 "$tmpdir/odd"

if [ -x /usr/bin/create_compressed_fs ]; then
    create_compressed_fs -q -B 65536 -L 9 "$tmpdir/odd" "$www/ccfs" \
        > "$tmpdir/ccfs.log" 2>&1 || {
        cat "$tmpdir/ccfs.log"
        fail "create_compressed_fs failed"
    }
    pad_to_block "$tmpdir/odd" 65536 "$tmpdir/exp/ccfs"
    images="$images ccfs"
else
    echo "$0: create_compressed_fs not installed: no real-tool image"
fi

start_nginx "$www"
start_lighttpd "$www"

runs=0
# read_back SERVER URL NAME CACHE: nbdcopy the whole export, compare.
read_back ()
{
    server=$1 url=$2 name=$3 cache=$4
    out=$tmpdir/out.raw
    rm -f "$out"
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" \"$out\"" \
        "$PLUGIN" url="$url/$name" cache-dir="$cache" timeout=20 \
        2> "$tmpdir/err" || {
        cat "$tmpdir/err"
        fail "$server $name (cache-dir=$cache): nbdkit/nbdcopy failed"
    }
    cmp "$out" "$tmpdir/exp/$name" || {
        cat "$tmpdir/err"
        fail "$server $name (cache-dir=$cache): export differs from input"
    }
    if grep -Eq 'Sanitizer|runtime error' "$tmpdir/err"; then
        cat "$tmpdir/err"
        fail "$server $name: sanitizer report"
    fi
    runs=$((runs + 1))
}

i=0
for name in $images; do
    for server in nginx lighttpd; do
        if [ $server = nginx ]; then url=$NGINX_URL; else url=$LIGHTTPD_URL; fi
        # Alternate: one server of each image without a cache, the
        # other with a fresh cache (read twice: cold, then warm).
        if [ $(( (i + 1) % 2 )) -eq 0 ]; then
            read_back $server "$url" "$name" none
            mode=none
        else
            cache=$tmpdir/cache-$server-$name
            read_back $server "$url" "$name" "$cache"
            [ -d "$cache/obj" ] || fail "$server $name: nothing cached"
            read_back $server "$url" "$name" "$cache"
            mode="fresh cache, then warm"
        fi
        echo "ok: $server $name ($(stat -c %s "$www/$name") bytes," \
             "export $(stat -c %s "$tmpdir/exp/$name"), $mode)"
        i=$((i + 1))
    done
    i=$((i + 1))
done

n_nginx=$(nginx_request_count)
n_lighttpd=$(lighttpd_request_count)
echo "$0: $runs reads passed ($skipped images skipped); requests:" \
     "nginx $n_nginx, lighttpd $n_lighttpd"
[ "$runs" -gt 20 ] || fail "too few cases ran"
[ "$n_nginx" -gt 0 ] && [ "$n_lighttpd" -gt 0 ] ||
    fail "a server received no request"
# Nothing in the logs but successful range requests.
if grep -v -e '/.web-servers-ready-probe' "$NGINX_LOG" | grep -qv '^206 '; then
    grep -v '^206 ' "$NGINX_LOG"
    fail "nginx saw a request that was not answered 206"
fi
