#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: metrics-file= writes the statistics snapshot in the
# Prometheus text format, every metrics-interval= seconds and at exit.
# Two exports (a local cloop file and a remote one from nginx) get a
# known workload; the file passes `promtool check metrics` and its
# counters match the workload: 10 reads of 4 KiB on one export (with
# readahead=0, so that each read misses), the
# whole image on the other, and as many HTTP requests as nginx logged.
# A metrics-file= that cannot be written stops nbdkit with an error
# naming it; metrics-interval= alone is refused.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires promtool --version
requires nbdsh --version

cd "$tmpdir"
mkdir -p www cat
make_sample in.raw 1500000
pad_to_block in.raw 65536 exp
"$MKCLOOP" -d v2 -B 65536 in.raw cat/local.cloop || fail "mkcloop failed"
"$MKCLOOP" -d v4 -c zlib -B 65536 in.raw www/remote.cloop ||
    fail "mkcloop failed"
start_nginx "$tmpdir/www"
cat > cat/exports <<CAT
local   local.cloop                readahead=0
remote  $NGINX_URL/remote.cloop
CAT

# value METRIC{LABELS}: its value in m.prom (empty if absent).
value ()
{
    awk -v k="$1" '$1 == k { print $2 }' m.prom
}

cat > work.sh <<'SH'
set -e
u () { echo "nbd+unix:///$1?socket=$unixsocket"; }
[ -s m.prom ] || { echo "no metrics file at start" >&2; exit 1; }
nbdsh -u "$(u local)" -c '
for i in range(10):
    h.pread(4096, i * 100000)
'
nbdcopy "$(u remote)" out.remote
# The next rewrite (every second) shows the workload.
for i in $(seq 60); do
    grep -q '^nbdkit_cloop_nbd_reads_total{export="local"} 10$' m.prom &&
        grep -q '^nbdkit_cloop_export_open{export="remote"} 1$' m.prom && exit 0
    sleep 0.5
done
echo "the metrics file was not rewritten with the workload" >&2
exit 1
SH

nbdkit_cloop -U - --run 'unixsocket=$unixsocket sh work.sh; cp m.prom during.prom' \
    "$PLUGIN" exports=cat/exports cache-dir="$tmpdir/cache" \
    metrics-file=m.prom metrics-interval=1 2> run.err ||
    { cat run.err; fail "the workload failed"; }
cmp out.remote exp || fail "remote: wrong bytes"

for f in during.prom m.prom; do
    promtool check metrics < "$f" > check.out 2>&1 ||
        { cat check.out; fail "promtool check metrics: $f"; }
done
echo "$0: promtool check metrics: ok (during the run and at exit)"

size=$(stat -c %s exp)
requests=$(nginx_request_count)
check ()
{
    local got
    got=$(value "$1")
    [ "$got" = "$2" ] || fail "$1 is '$got', expected $2"
    echo "$0: $1 = $got"
}
check 'nbdkit_cloop_nbd_reads_total{export="local"}' 10
check 'nbdkit_cloop_nbd_read_bytes_total{export="local"}' 40960
check 'nbdkit_cloop_nbd_read_errors_total{export="local"}' 0
check 'nbdkit_cloop_nbd_read_duration_seconds_count{export="local"}' 10
check 'nbdkit_cloop_nbd_read_duration_seconds_bucket{export="local",le="+Inf"}' 10
check 'nbdkit_cloop_memory_cache_misses_total{export="local"}' 10
check 'nbdkit_cloop_nbd_read_bytes_total{export="remote"}' "$size"
url="$NGINX_URL/remote.cloop"
check "nbdkit_cloop_http_requests_total{export=\"remote\",endpoint=\"$url\"}" \
    "$requests"
check "nbdkit_cloop_http_request_duration_seconds_count{export=\"remote\",endpoint=\"$url\"}" \
    "$requests"
check "nbdkit_cloop_http_failures_total{export=\"remote\",endpoint=\"$url\"}" 0
check "nbdkit_cloop_http_errors_total{export=\"remote\",endpoint=\"$url\",kind=\"status\"}" 0
[ "$(value 'nbdkit_cloop_disk_cache_writes_total')" -gt 0 ] ||
    fail "no disk cache writes counted"
[ "$(value 'nbdkit_cloop_memory_cache_bytes{export="remote"}')" -gt 0 ] ||
    fail "the remote export holds nothing in the memory cache"

# A file that cannot be written, and an interval without a file.
if nbdkit_cloop -U - --run true "$PLUGIN" exports=cat/exports \
       metrics-file="$tmpdir/no/such/dir/m.prom" 2> bad.err; then
    fail "an unwritable metrics-file= was accepted"
fi
grep -q "metrics-file $tmpdir/no/such/dir/m.prom" bad.err ||
    { cat bad.err; fail "the error does not name the metrics file"; }
if nbdkit_cloop -U - --run true "$PLUGIN" exports=cat/exports \
       metrics-interval=5 2> bad.err; then
    fail "metrics-interval= without metrics-file= was accepted"
fi
grep -q "metrics-interval= needs metrics-file=" bad.err ||
    { cat bad.err; fail "metrics-interval= alone: no clear error"; }
echo "$0: ok"
