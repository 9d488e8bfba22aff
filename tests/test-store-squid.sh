#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a block store through a shared caching proxy.  Debian's
# Squid, started here on 127.0.0.1 with its own configuration and cache
# directory, stands between two nbdkit processes (each with its own
# disk cache) and nginx.  Both read the whole store byte-exact with
# proxy=; the block files are immutable, requested as plain GETs, so
# nginx serves each of them once: the second process gets them from
# Squid.

. "${srcdir:-$(dirname "$0")}/functions.sh" || exit 99
. "$srcdir/web-servers.sh"

requires_plugin_tools
requires test -x /usr/sbin/squid
: "${CLOOP_STORE:=$builddir/../cloop-store}"
requires test -x "$CLOOP_STORE"

cd "$tmpdir"
mkdir -p www
make_sample in.raw 3000000
"$CLOOP_STORE" keygen key.pem key.pub >/dev/null || fail "keygen failed"
"$CLOOP_STORE" create -q -B 65536 -n st -k key.pem in.raw www/store ||
    fail "cloop-store create failed"
# A store is published before it is read; files modified in the same
# second as the reply's Date made Squid revalidate every block of the
# second process now and then (TCP_REFRESH_UNMODIFIED, about one run
# in three): date them an hour back, as a mirror's would be.
find www/store -type f -exec touch -d "-1 hour" {} +
start_nginx "$tmpdir/www"

squid_port=$(_ws_free_port)
mkdir -p squid
cat > squid.conf <<CONF
http_port 127.0.0.1:$squid_port
pid_filename $tmpdir/squid/squid.pid
cache_dir ufs $tmpdir/squid/cache 64 4 16
coredump_dir $tmpdir/squid
access_log $tmpdir/squid/access.log
cache_log $tmpdir/squid/cache.log
cache_store_log none
acl local src 127.0.0.1/32
http_access allow local
http_access deny all
maximum_object_size 8 MB
# Block files are immutable (named by their SHA-256): keep them a day
# whatever validators they carry, as a site would configure it.
refresh_pattern /blocks/ 1440 100% 10080
refresh_pattern . 0 20% 4320
shutdown_lifetime 0 seconds
CONF
# As root, Squid works as the user "proxy": let it into its folder.
if [ "$(id -u)" = 0 ]; then
    echo "cache_effective_user proxy" >> squid.conf
    chmod 711 "$tmpdir"
    chown proxy: squid
fi
/usr/sbin/squid -N -z -f "$tmpdir/squid.conf" > squid-z.out 2>&1 ||
    { cat squid-z.out squid/cache.log 2>/dev/null; fail "squid -z failed"; }
_ws_spawn "$tmpdir/squid.out" /usr/sbin/squid -N -f "$tmpdir/squid.conf"
squid_pid=$_ws_pid
for _ in $(seq 100); do
    ! port_closed "$squid_port" && break
    sleep 0.1
done
port_closed "$squid_port" &&
    { cat squid.out squid/cache.log 2>/dev/null; fail "squid did not start"; }

read_through_squid ()
{
    nbdkit_cloop -U - --run "nbdcopy \"\$uri\" out.$1" "$PLUGIN" \
        url="$NGINX_URL/store/index" pubkey=key.pub \
        proxy="http://127.0.0.1:$squid_port" cache-dir="$tmpdir/cache.$1" \
        2> "read.$1.err" ||
        { cat "read.$1.err"; fail "process $1: reading through squid failed"; }
    cmp "out.$1" in.raw || fail "process $1: wrong bytes"
}

read_through_squid 1
n1=$(grep -c '"GET /store/blocks/' "$NGINX_LOG" || true)
read_through_squid 2
n2=$(grep -c '"GET /store/blocks/' "$NGINX_LOG" || true)
distinct=$(grep -o '"GET /store/blocks/[^ ]*' "$NGINX_LOG" | sort -u | wc -l)
files=$(find www/store/blocks -type f | wc -l)
echo "$0: block files: $files; nginx served $n1 to the first process," \
     "$((n2 - n1)) more to the second ($distinct distinct)"
[ "$n1" -gt 0 ] || fail "the first process fetched no block through squid"
[ "$n1" -eq "$distinct" ] || fail "nginx served a block file twice to one process"
[ "$n2" -eq "$n1" ] ||
    fail "nginx served $((n2 - n1)) block files again: squid did not serve them"
hits=$(grep -c 'HIT/' squid/access.log || true)
echo "$0: squid logged $hits cache hits"
[ "$hits" -ge "$n1" ] || fail "squid logged $hits hits, expected >= $n1"
kill "$squid_pid" 2>/dev/null || true
echo "$0: ok"
