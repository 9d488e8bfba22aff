# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: web servers for the HTTP tests and benchmarks.
# Source it after functions.sh (POSIX sh; needs $tmpdir, cleanup_fn,
# requires and fail from there):
#   . "$srcdir/functions.sh"
#   . "$srcdir/web-servers.sh"
#
# Every server binds 127.0.0.1 on a free port, is waited for until it
# answers, and is stopped by the test's exit cleanup (pass or fail).
# The servers are not children of the test shell, so a bare `wait` for
# the test's own background jobs does not block on them.
#
#   start_nginx ROOT           NGINX_PORT NGINX_URL NGINX_PID NGINX_LOG
#                              NGINX_ERROR_LOG; NGINX_EXTRA_CONF, if set,
#                              is added inside the http block (more
#                              server blocks)
#   nginx_request_count        requests in NGINX_LOG so far
#   start_lighttpd ROOT        LIGHTTPD_PORT LIGHTTPD_URL LIGHTTPD_PID
#                              LIGHTTPD_LOG LIGHTTPD_ERROR_LOG
#   lighttpd_request_count     requests in LIGHTTPD_LOG so far
#   start_faultserver ROOT     FAULT_PORT FAULT_URL FAULT_PID
#                              FAULT_FAULTS FAULT_LOG FAULT_STDERR
#                              (on port FAULTSERVER_PORT if set)
#   start_named_faultserver NAME ROOT [PORT]
#                              another fault server, its files NAME.port,
#                              NAME.log, NAME.faults, NAME.pid, NAME.err
#                              in the current directory (one per mirror)
#   set_fault JSON...          replace the faults file (one line per arg)
#   add_fault JSON...          append lines to the faults file
#   clear_faults               remove the faults file (no faults)
#   fault_request_count [PATH] requests logged by the fault server
#   fault_fired_count [KIND]   of those, how many had a fault injected
#   port_closed PORT           true if nothing listens on 127.0.0.1:PORT
#   start_delayproxy TARGET_PORT DELAY_MS [--rate B/S] [--handshake]
#                    [--total-rate B/S [--queue-ms MS]]
#                              PROXY_PORT PROXY_URL PROXY_PID
#
# Access log line formats:
#   nginx:    STATUS "REQUEST" BODY_BYTES_SENT "RANGE" CONN CONN_REQS SECS
#   lighttpd: STATUS "REQUEST" BODY_BYTES_SENT "RANGE"
#   faultserver: JSON {"t","method","path","range","status","bytes",
#                "fault","conn"[,"error"]}

# (tmpdir comes from functions.sh; the *_URL/*_PORT variables are for
# the sourcing test.)
# shellcheck disable=SC2034,SC2154
_ws_python=/usr/bin/python3
: "${FAULTSERVER:=$srcdir/faultserver.py}"
: "${DELAYPROXY:=$srcdir/delayproxy.py}"
# Path used by the readiness probes; excluded from the request counts.
_ws_probe=/.web-servers-ready-probe

# _ws_free_port: print a TCP port on 127.0.0.1 that was free just now.
_ws_free_port ()
{
    "$_ws_python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# _ws_spawn OUTFILE CMD...: run CMD in the background with stdout and
# stderr appended to OUTFILE, detached from this shell's job list (its
# parent exits at once), so that a bare `wait` in a test does not wait
# for the servers.  Sets _ws_pid and registers its stop at exit.
_ws_spawn ()
{
    _ws_out=$1
    shift
    _ws_pid=$( ("$@" </dev/null >>"$_ws_out" 2>&1 & echo $!) )
    cleanup_fn "_ws_stop $_ws_pid $(_ws_starttime "$_ws_pid")"
}

# _ws_starttime PID: the process's start time (clock ticks since boot),
# which tells a recycled PID apart.
_ws_starttime ()
{
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# _ws_stop PID [STARTTIME]: TERM, wait up to 5 s, then KILL; nothing if
# PID has meanwhile been reused by another process.
_ws_stop ()
{
    if [ -n "${2:-}" ] && [ "$(_ws_starttime "$1")" != "$2" ]; then
        return 0
    fi
    kill -TERM "$1" 2>/dev/null || return 0
    _ws_i=0
    while [ "$_ws_i" -lt 50 ] && _ws_alive "$1"; do
        sleep 0.1
        _ws_i=$((_ws_i + 1))
    done
    if _ws_alive "$1"; then
        kill -KILL "$1" 2>/dev/null
    fi
    return 0
}

# _ws_alive PID: the process exists and is not a zombie.
_ws_alive ()
{
    kill -0 "$1" 2>/dev/null || return 1
    _ws_state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null)
    case $_ws_state in Z|X) return 1 ;; esac
    return 0
}

# _ws_wait_http URL PID: wait (<= 10 s) until URL gives any HTTP answer;
# fails early if PID dies.
_ws_wait_http ()
{
    "$_ws_python" - "$1" "$2" <<'PY'
import os, sys, time, urllib.request, urllib.error
url, pid = sys.argv[1], int(sys.argv[2])
def alive():
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if not alive():
        sys.exit(1)
    try:
        urllib.request.urlopen(url, timeout=2).read()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)             # any HTTP status: it is serving
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
}

# _ws_wait_file FILE PID: wait (<= 10 s) until FILE is non-empty.
_ws_wait_file ()
{
    _ws_i=0
    while [ ! -s "$1" ]; do
        _ws_alive "$2" || return 1
        [ "$_ws_i" -lt 200 ] || return 1
        sleep 0.05
        _ws_i=$((_ws_i + 1))
    done
    return 0
}

# _ws_count FILE: lines in FILE that are not readiness probes.
_ws_count ()
{
    if [ -f "$1" ]; then
        grep -vc -e "$_ws_probe" "$1" || true
    else
        echo 0
    fi
}

# port_closed PORT: true once nothing accepts connections on
# 127.0.0.1:PORT (a stopped server's port, for offline tests).
port_closed ()
{
    "$_ws_python" -c '
import socket, sys
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    sys.exit(0)
sys.exit("port still open")' "$1"
}

# _ws_settle ROOT: date the files under ROOT written in the last minute
# an hour back.  A published file is usually older than the second its
# server's reply names; one written in that very second has validators
# that are not settled (RFC 9110 8.8.2.2), and the plugin then asks the
# server at every start and fetches the header and index again, which a
# test counting requests would see.  Files dated on purpose (in the
# past or the future) are left as they are; tests/test-http-same-second.sh
# covers the unsettled case.
_ws_settle ()
{
    find "$1" -type f -newermt '-1 minute' ! -newermt 'now' \
        -exec touch -d '-1 hour' {} +
}

# ---------------------------------------------------------------------
# nginx

start_nginx ()
{
    requires /usr/sbin/nginx -v
    [ -d "$1" ] || fail "start_nginx: $1: not a directory"
    _ws_settle "$1"
    _ws_root=$(cd "$1" && pwd)
    _ws_d=$tmpdir/nginx
    mkdir -p "$_ws_d/logs" "$_ws_d/client_body" "$_ws_d/proxy" \
        "$_ws_d/fastcgi" "$_ws_d/uwsgi" "$_ws_d/scgi"
    NGINX_LOG=$tmpdir/nginx-access.log
    NGINX_ERROR_LOG=$tmpdir/nginx-error.log
    _ws_user=
    if [ "$(id -u)" -eq 0 ]; then
        # Workers would otherwise run as nobody, who cannot read the
        # 0700 $tmpdir.
        _ws_user="user root;"
    fi
    _ws_try=1
    while :; do
        NGINX_PORT=$(_ws_free_port)
        cat > "$_ws_d/nginx.conf" <<EOF
$_ws_user
daemon off;
worker_processes auto;
pid $_ws_d/nginx.pid;
error_log $NGINX_ERROR_LOG;
events { worker_connections 4096; }
http {
    log_format cloop '\$status "\$request" \$body_bytes_sent "\$http_range" \$connection \$connection_requests \$request_time';
    access_log $NGINX_LOG cloop;
    client_body_temp_path $_ws_d/client_body;
    proxy_temp_path $_ws_d/proxy;
    fastcgi_temp_path $_ws_d/fastcgi;
    uwsgi_temp_path $_ws_d/uwsgi;
    scgi_temp_path $_ws_d/scgi;
    types { }
    default_type application/octet-stream;
    sendfile on;
    # No tcp_nopush: with it (Debian's default nginx.conf has it), every
    # 206 reply on a keep-alive connection stalls ~40 ms on its last
    # segment (delayed ACK), which would measure nginx, not the client.
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name localhost;
        root "$_ws_root";
        log_not_found off;
        location / { }
    }
${NGINX_EXTRA_CONF:-}
}
EOF
        : > "$NGINX_LOG"
        _ws_spawn "$_ws_d/stderr" /usr/sbin/nginx -p "$_ws_d/" \
            -e "$NGINX_ERROR_LOG" -c "$_ws_d/nginx.conf"
        NGINX_PID=$_ws_pid
        if _ws_wait_http "http://127.0.0.1:$NGINX_PORT$_ws_probe" \
            "$NGINX_PID"; then
            break
        fi
        _ws_stop "$NGINX_PID"
        if [ "$_ws_try" -ge 3 ]; then
            cat "$_ws_d/stderr" "$NGINX_ERROR_LOG" >&2 2>/dev/null
            fail "start_nginx: nginx did not start"
        fi
        _ws_try=$((_ws_try + 1))
    done
    NGINX_URL=http://127.0.0.1:$NGINX_PORT
}

nginx_request_count ()
{
    _ws_count "$NGINX_LOG"
}

# ---------------------------------------------------------------------
# lighttpd

start_lighttpd ()
{
    requires /usr/sbin/lighttpd -v
    [ -d "$1" ] || fail "start_lighttpd: $1: not a directory"
    _ws_settle "$1"
    _ws_root=$(cd "$1" && pwd)
    _ws_d=$tmpdir/lighttpd
    mkdir -p "$_ws_d/upload"
    LIGHTTPD_LOG=$tmpdir/lighttpd-access.log
    LIGHTTPD_ERROR_LOG=$tmpdir/lighttpd-error.log
    _ws_try=1
    while :; do
        LIGHTTPD_PORT=$(_ws_free_port)
        cat > "$_ws_d/lighttpd.conf" <<EOF
server.modules = ( "mod_accesslog" )
server.document-root = "$_ws_root"
server.bind = "127.0.0.1"
server.port = $LIGHTTPD_PORT
server.pid-file = "$_ws_d/lighttpd.pid"
server.errorlog = "$LIGHTTPD_ERROR_LOG"
server.upload-dirs = ( "$_ws_d/upload" )
server.max-keep-alive-requests = 1000000
server.max-keep-alive-idle = 300
server.max-fds = 16384
server.max-connections = 4096
mimetype.assign = ( "" => "application/octet-stream" )
accesslog.filename = "|exec /bin/cat >> '$LIGHTTPD_LOG'"
accesslog.format = "%s \"%r\" %b \"%{Range}i\""
EOF
        : > "$LIGHTTPD_LOG"
        _ws_spawn "$_ws_d/stderr" /usr/sbin/lighttpd -D \
            -f "$_ws_d/lighttpd.conf"
        LIGHTTPD_PID=$_ws_pid
        if _ws_wait_http "http://127.0.0.1:$LIGHTTPD_PORT$_ws_probe" \
            "$LIGHTTPD_PID"; then
            break
        fi
        _ws_stop "$LIGHTTPD_PID"
        if [ "$_ws_try" -ge 3 ]; then
            cat "$_ws_d/stderr" "$LIGHTTPD_ERROR_LOG" >&2 2>/dev/null
            fail "start_lighttpd: lighttpd did not start"
        fi
        _ws_try=$((_ws_try + 1))
    done
    LIGHTTPD_URL=http://127.0.0.1:$LIGHTTPD_PORT
}

# lighttpd buffers a file access log for seconds, so the log goes
# through a pipe to cat (written at once); allow it a moment to land.
lighttpd_request_count ()
{
    sleep 0.1
    _ws_count "$LIGHTTPD_LOG"
}

# ---------------------------------------------------------------------
# The fault-injecting server (faultserver.py; its --help has the fault
# specification).

start_faultserver ()
{
    [ -d "$1" ] || fail "start_faultserver: $1: not a directory"
    _ws_settle "$1"
    [ -f "$FAULTSERVER" ] || fail "start_faultserver: $FAULTSERVER missing"
    FAULT_FAULTS=$tmpdir/faults.jsonl
    FAULT_LOG=$tmpdir/faultserver.log
    FAULT_STDERR=$tmpdir/faultserver.err
    _ws_pf=$tmpdir/faultserver.port
    rm -f "$_ws_pf" "$FAULT_FAULTS"
    : > "$FAULT_LOG"
    _ws_spawn "$FAULT_STDERR" "$_ws_python" "$FAULTSERVER" --root "$1" \
        --port-file "$_ws_pf" --faults "$FAULT_FAULTS" --log "$FAULT_LOG" \
        ${FAULTSERVER_PORT:+--port "$FAULTSERVER_PORT"}
    FAULT_PID=$_ws_pid
    if ! _ws_wait_file "$_ws_pf" "$FAULT_PID"; then
        cat "$FAULT_STDERR" >&2
        fail "start_faultserver: server did not start"
    fi
    FAULT_PORT=$(cat "$_ws_pf")
    FAULT_URL=http://127.0.0.1:$FAULT_PORT
}

# _ws_check_faults JSON...: each argument must be a fault line the
# server understands.
_ws_check_faults ()
{
    "$_ws_python" - "$@" <<'PY' || fail "set_fault: invalid fault line"
import json, sys
kinds = {"status", "reset", "truncate", "slow", "delay", "ignore_range",
         "wrong_content_range", "change_etag", "corrupt", "long_body"}
for a in sys.argv[1:]:
    try:
        o = json.loads(a)
    except ValueError as e:
        sys.exit("set_fault: %r: %s" % (a, e))
    if "\n" in a or not isinstance(o, dict) or o.get("fault") not in kinds:
        sys.exit("set_fault: %r: not a one-line object with a known "
                 "\"fault\"" % a)
PY
}

# set_fault JSON...: the faults file becomes exactly these lines
# (replaced atomically, which also resets the server's after/count
# counters).
start_named_faultserver ()
{
    rm -f "$1.port"
    : >> "$1.log"
    _ws_settle "$2"
    _ws_spawn "$1.err" "$_ws_python" "$FAULTSERVER" --root "$2" \
        --port-file "$1.port" --faults "$1.faults" --log "$1.log" \
        ${3:+--port "$3"}
    echo "$_ws_pid" > "$1.pid"
    _ws_wait_file "$1.port" "$_ws_pid" ||
        { cat "$1.err"; fail "fault server $1 did not start"; }
}

set_fault ()
{
    _ws_check_faults "$@"
    printf '%s\n' "$@" > "$FAULT_FAULTS.tmp"
    mv -f "$FAULT_FAULTS.tmp" "$FAULT_FAULTS"
}

# add_fault JSON...: append lines (counters of existing lines are kept).
add_fault ()
{
    _ws_check_faults "$@"
    printf '%s\n' "$@" >> "$FAULT_FAULTS"
}

clear_faults ()
{
    rm -f "$FAULT_FAULTS"
}

# fault_request_count [PATH]: requests logged so far (to PATH only, if
# given; PATH as sent, e.g. /img).
fault_request_count ()
{
    if [ $# -gt 0 ]; then
        grep -Fc "\"path\":\"$1\"," "$FAULT_LOG" || true
    else
        _ws_count "$FAULT_LOG"
    fi
}

# fault_fired_count [KIND]: requests that had a fault (of KIND) injected.
fault_fired_count ()
{
    if [ $# -gt 0 ]; then
        grep -Fc "\"fault\":\"$1\"" "$FAULT_LOG" || true
    else
        grep -c '"fault":"' "$FAULT_LOG" || true
    fi
}

# ---------------------------------------------------------------------
# WAN emulation: start_delayproxy TARGET_PORT DELAY_MS [delayproxy args]
# Each call starts another proxy (all are stopped at exit); PROXY_* name
# the latest.

start_delayproxy ()
{
    [ $# -ge 2 ] || fail "start_delayproxy: TARGET_PORT DELAY_MS needed"
    [ -f "$DELAYPROXY" ] || fail "start_delayproxy: $DELAYPROXY missing"
    _ws_pf=$(mktemp "$tmpdir/delayproxy.port.XXXXXX")
    rm -f "$_ws_pf"
    _ws_target=$1 _ws_delay=$2
    shift 2
    _ws_spawn "$tmpdir/delayproxy.err" "$_ws_python" "$DELAYPROXY" \
        --listen-port-file "$_ws_pf" --target "127.0.0.1:$_ws_target" \
        --delay-ms "$_ws_delay" "$@"
    PROXY_PID=$_ws_pid
    if ! _ws_wait_file "$_ws_pf" "$PROXY_PID"; then
        cat "$tmpdir/delayproxy.err" >&2
        fail "start_delayproxy: proxy did not start"
    fi
    PROXY_PORT=$(cat "$_ws_pf")
    PROXY_URL=http://127.0.0.1:$PROXY_PORT
}

# make_served_image DIALECT SIZE: a sample input of SIZE bytes made into
# a cloop image of DIALECT (mkcloop, 64 KiB blocks) at $www/img, with
# the expected export (zero-padded input) at $tmpdir/expected.  Sets
# www and cache (an empty path for cache-dir=).  Start the server
# yourself (start_nginx "$www").
make_served_image ()
{
    www=$tmpdir/www
    cache=$tmpdir/cache
    mkdir -p "$www"
    make_sample "$tmpdir/in" "$2"
    "$MKCLOOP" -d "$1" -B 65536 "$tmpdir/in" "$www/img" ||
        fail "mkcloop $1 failed"
    pad_to_block "$tmpdir/in" 65536 "$tmpdir/expected"
}

# make_mirror_images: in the current directory, a cloop file www/img of
# a 3 MB sample (exp: its export) and, in wwwd/img, another object of
# the same size: one byte of the first block's index entry differs.
make_mirror_images ()
{
    mkdir -p www wwwd
    make_sample in.raw 3000000
    pad_to_block in.raw 65536 exp
    "$MKCLOOP" -d v2 -B 65536 in.raw www/img || fail "mkcloop failed"
    cp www/img wwwd/img
    printf '\001' | dd of=wwwd/img bs=1 seek=140 conv=notrunc status=none
    if cmp -s www/img wwwd/img; then fail "wwwd/img did not change"; fi
}

# meta_entries CACHE-DIR KIND: the disk cache's metadata entries (url/,
# relative to CACHE-DIR) of one remote image opened once, by KIND:
# identity (the identity blob), meta (every header/index entry), head
# (the longest one starting with "#!/bin/sh"), index (the longest other).
meta_entries ()
{
    "$_ws_python" - "$1" "$2" <<'PY'
import os, sys
top, kind = sys.argv[1], sys.argv[2]
ident, meta = [], []
for name in sorted(os.listdir(os.path.join(top, "url"))):
    if name.startswith("."):
        continue
    rel = "url/" + name
    payload = open(os.path.join(top, rel), "rb").read()[64:]
    (ident if payload.startswith(b"nbdkit-cloop identity") else meta).append(
        (len(payload), payload.startswith(b"#!/bin/sh"), rel))
if kind == "identity":
    print("\n".join(r for _, _, r in ident))
elif kind == "meta":
    print("\n".join(r for _, _, r in meta))
else:
    pick = [m for m in meta if m[1] == (kind == "head")]
    print(max(pick)[2] if pick else "")
PY
}
