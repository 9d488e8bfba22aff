#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: a small threaded HTTP/1.1 file server with strict
# single-range semantics and injectable faults, for the tests.
#
#   faultserver.py --root DIR --port-file FILE [--port N]
#                  [--faults FILE] [--log FILE] [--seed N]
#
# Binds 127.0.0.1 only.  The chosen port is written to --port-file
# (atomically) once the socket is listening.  SIGTERM/SIGINT exit 0.
#
# Ranges: one "bytes=" range per request (a-b, a-, -n).  206 with
# "Content-Range: bytes a-b/total"; 416 with "Content-Range: bytes
# */total" when unsatisfiable; syntactically invalid or multi-range
# headers are ignored (200, whole file), as RFC 9110 allows.  Range is
# only honoured for GET.  If-Range (strong ETag or exact Last-Modified
# date) that does not match gives 200 with the whole file.  If-Match
# that does not match gives 412.
#
# Faults: JSON objects, one per line, in --faults FILE, re-read on every
# request (a missing file means no faults; blank lines and lines
# starting with '#' are skipped; a malformed line is reported on stderr
# and skipped).  See FAULT_HELP below for the exact specification.
#
# Log: one JSON object per line per request in --log FILE, written when
# the response has been sent (or has failed):
#   {"t": UNIX_TIME, "method": "GET", "path": RAW_TARGET,
#    "range": RANGE_HEADER_OR_null, "status": CODE_OR_null,
#    "bytes": BODY_BYTES_SENT, "fault": KIND_OR_null, "conn": CONN_SEQ
#    [, "error": "client-gone"]}

import argparse
import email.utils
import errno
import json
import os
import posixpath
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_HELP = """\
Fault line fields (all but "fault" optional):
  path    exact request path to match (query string removed, percent-
          decoded; the raw request target also matches); omitted = any
  prefix  the request path must start with this (e.g. "/store/blocks/")
  method  "GET" or "HEAD" etc.; omitted = any
  ranged  true: only requests with a Range header; false: only requests
          without one (whole-file GETs, e.g. block-store block files);
          omitted = both
  min_range  N: only requests for a range "bytes=A-B" of N bytes or more
          (a client's merged reads, not a single one)
  probability  P in [0, 1]: an eligible request is faulted with
          probability P (pseudo-random, --seed); omitted = 1.  A request
          not faulted this way does not count towards "count" and may
          be faulted by a later line
  after   N: the first N requests matching path/method are not faulted
  count   N: fault at most N requests, then the line is consumed
  fault   one of:
    status               {"status": 500} (any 4xx/5xx; default 500)
                         short text body; 416 carries Content-Range
                         bytes */TOTAL; optional "retry_after": SECONDS
    reset                {"bytes": N} (default 0): full headers, then N
                         body bytes, then RST (SO_LINGER 0 + close)
    truncate             headers with the complete Content-Length, then
                         only the first half (len//2) of the body, then
                         a normal close (FIN)
    slow                 {"rate": BYTES_PER_S} (default 65536): the body
                         is dribbled in 50 ms slices
    delay                {"ms": N} (default 1000): sleep before replying
    ignore_range         200 + the whole file, no Accept-Ranges header
    wrong_content_range  {"shift": N} (default 512): 206 whose
                         Content-Range is the requested range moved by
                         +N (or -N if +N would pass the end), with the
                         body of that moved range
    change_etag          serve as if the file had been replaced: ETag
                         {"etag": "\\"...\\""} (default: real ETag with
                         "-changed" inside the quotes), Last-Modified one
                         hour later; If-Range/If-Match are evaluated
                         against the new validators; {"content": "zero"}
                         also sends zeros instead of the file data
    corrupt              {"flips": N} (default 1): XOR 0xFF into N body
                         bytes spread evenly (N=1: the middle byte);
                         headers unchanged
    long_body            {"extra": N} (default 512), {"mode": M}:
                         mode "length" (default): Content-Length =
                         range length + N (Content-Range stays correct)
                         and N extra 0xAA bytes really follow the body;
                         mode "trailing": correct headers, then N extra
                         0xAA bytes after the body on the kept-alive
                         connection; {"delay_ms": D} (default 0): the
                         extra bytes come D ms after the body
    redirect             {"to": "http://127.0.0.1:PORT"} (required),
                         {"status": N} (default 302): a redirect whose
                         Location is "to" followed by the request
                         target (path and query)
HEAD requests get the headers a GET would get (Range is ignored for
HEAD, as RFC 9110 says); of the body faults, reset sends RST after the
headers, truncate closes after them, long_body sends its extra bytes
after them, and slow, corrupt and wrong_content_range do nothing.
Whole-file GETs (no Range header, 200) get every fault too: status,
reset, truncate, slow, delay, corrupt, long_body and change_etag act on
the whole file's body; ignore_range changes nothing; wrong_content_range
turns the reply into a 206 of a moved range of the file's length.
Only the first eligible line fires on a request (one fault at most).
Counters ("after", "count") are kept per line text and per faults file
inode: every matching request advances the "after" counter of every
matching line; the first eligible line fires.  Rewriting the file by
rename (set_fault) gives a new inode and so resets all counters.
"""

CHUNK = 256 * 1024


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def parse_range(value, size):
    """Return None (ignore the header), "unsat", or (first, last)."""
    value = value.strip()
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None             # multiple ranges: not supported, ignore
    first, sep, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not sep:
        return None
    if first == "":
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            return "unsat"
        return (max(0, size - n), size - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    a = int(first)
    b = int(last) if last else None
    if b is not None and b < a:
        return None             # invalid range-spec: ignore
    if a >= size:
        return "unsat"
    if b is None or b >= size:
        b = size - 1
    return (a, b)


def etag_list(value):
    """Split an If-Match style list into entity-tags (keeps quotes/W/)."""
    tags = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        if value.startswith("W/", i):
            i += 2
        if i < n and value[i] == '"':
            j = value.find('"', i + 1)
            if j < 0:
                j = n - 1
            i = j + 1
        else:
            while i < n and value[i] != ",":
                i += 1
        tags.append(value[start:i].strip())
    return tags


class FaultState:
    """Fault file reader and per-line counters."""

    def __init__(self, path, seed=None):
        self.path = path
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.key_ino = None
        self.seen = {}          # line text -> matching requests so far
        self.fired = {}         # line text -> times fired
        self.warned = set()

    def select(self, method, path, raw_target, ranged, range_len=None):
        if not self.path:
            return None
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            sys.stderr.write("faultserver: %s: %s\n" % (self.path, e))
            return None
        ino = (st.st_dev, st.st_ino)
        chosen = None
        with self.lock:
            if ino != self.key_ino:
                self.key_ino = ino
                self.seen.clear()
                self.fired.clear()
            for raw in data.decode("utf-8", "replace").splitlines():
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    spec = json.loads(line)
                    if not isinstance(spec, dict) or "fault" not in spec:
                        raise ValueError("not an object with \"fault\"")
                except ValueError as e:
                    if line not in self.warned:
                        self.warned.add(line)
                        sys.stderr.write("faultserver: bad fault line %r: %s\n"
                                         % (line, e))
                    continue
                p = spec.get("path")
                if p is not None and p != path and p != raw_target:
                    continue
                pre = spec.get("prefix")
                if pre is not None and not path.startswith(pre):
                    continue
                m = spec.get("method")
                if m is not None and m.upper() != method:
                    continue
                r = spec.get("ranged")
                if r is not None and bool(r) != ranged:
                    continue
                mr = spec.get("min_range")
                if mr is not None and (range_len is None or
                                       range_len < int(mr)):
                    continue
                seen = self.seen.get(line, 0) + 1
                self.seen[line] = seen
                if chosen is not None:
                    continue
                if seen <= int(spec.get("after", 0)):
                    continue
                count = spec.get("count")
                fired = self.fired.get(line, 0)
                if count is not None and fired >= int(count):
                    continue
                prob = float(spec.get("probability", 1))
                if prob < 1 and self.rng.random() >= prob:
                    continue
                self.fired[line] = fired + 1
                chosen = spec
        return chosen


class Logger:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None

    def log(self, rec):
        if self.f is None:
            return
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self.lock:
            self.f.write(line)
            self.f.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, root, faults, logger):
        self.root = os.path.realpath(root)
        self.faults = faults
        self.logger = logger
        self.conn_lock = threading.Lock()
        self.conn_seq = 0
        super().__init__(addr, Handler)

    def next_conn(self):
        with self.conn_lock:
            self.conn_seq += 1
            return self.conn_seq

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, TimeoutError)):
            return
        if isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.ECONNRESET,
                                                  errno.EBADF, errno.ENOTCONN):
            return
        sys.stderr.write("faultserver: error from %s: %r\n"
                         % (client_address, e))


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultserver/1"
    timeout = 300

    def version_string(self):
        return self.server_version

    # ------------------------------------------------------------------
    def setup(self):
        super().setup()
        self.conn_id = self.server.next_conn()
        self.rst_done = False

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass
        except OSError as e:
            if not self.rst_done:
                raise

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.serve(head=False)

    def do_HEAD(self):
        self.serve(head=True)

    # ------------------------------------------------------------------
    def write(self, data):
        try:
            self.wfile.write(data)
        except (ConnectionError, TimeoutError) as e:
            raise ClientGone() from e
        self.sent += len(data)

    def finish_headers(self):
        try:
            self.end_headers()
        except (ConnectionError, TimeoutError) as e:
            raise ClientGone() from e

    def rst(self):
        """Abort the connection with a TCP RST."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rst_done = True
        self.close_connection = True
        # The socket is really closed only when its makefile() readers
        # are closed too.
        try:
            self.rfile.close()
        except OSError:
            pass
        self.connection.close()

    def simple(self, status, text, extra=()):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.finish_headers()
        self.status = status
        if not self.head:
            self.write(body)

    def resolve(self, path):
        rel = posixpath.normpath("/" + path).lstrip("/")
        full = os.path.realpath(os.path.join(self.server.root, rel))
        if full != self.server.root and \
           not full.startswith(self.server.root + os.sep):
            return None
        return full

    # ------------------------------------------------------------------
    def serve(self, head):
        self.head = head
        self.sent = 0
        self.status = None
        method = self.command
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        rng_hdr = self.headers.get("Range")
        fault = None
        kind = None
        err = None
        try:
            rm = re.fullmatch(r"\s*bytes=(\d+)-(\d+)\s*", rng_hdr or "")
            fault = self.server.faults.select(
                method, path, self.path, rng_hdr is not None,
                int(rm.group(2)) - int(rm.group(1)) + 1 if rm else None)
            kind = fault["fault"] if fault else None
            self.respond(path, rng_hdr, fault, kind)
        except ClientGone:
            err = "client-gone"
            self.close_connection = True
        finally:
            rec = {"t": round(time.time(), 6), "method": method,
                   "path": self.path, "range": rng_hdr,
                   "status": self.status, "bytes": self.sent,
                   "fault": kind, "conn": self.conn_id}
            if err:
                rec["error"] = err
            self.server.logger.log(rec)

    def respond(self, path, rng_hdr, fault, kind):
        p = fault or {}
        if kind == "delay":
            time.sleep(float(p.get("ms", 1000)) / 1000.0)

        full = self.resolve(path)
        f = None
        st = None
        if full is not None and os.path.isfile(full):
            try:
                f = open(full, "rb")
                st = os.fstat(f.fileno())
            except OSError:
                f = None
        try:
            self.respond_file(f, st, rng_hdr, p, kind)
        finally:
            if f is not None:
                f.close()

    def respond_file(self, f, st, rng_hdr, p, kind):
        size = st.st_size if st is not None else 0

        if kind == "status":
            status = int(p.get("status", 500))
            extra = []
            if status == 416:
                extra.append(("Content-Range", "bytes */%d" % size))
            if "retry_after" in p:
                extra.append(("Retry-After", str(p["retry_after"])))
            self.simple(status, "injected fault: status %d" % status, extra)
            return

        if kind == "redirect":
            self.simple(int(p.get("status", 302)), "redirected",
                        [("Location", p["to"] + self.path)])
            return

        if f is None:
            self.simple(404, "not found")
            return

        etag = '"%x-%x-%x"' % (st.st_ino, st.st_mtime_ns, st.st_size)
        mtime = st.st_mtime
        zero = False
        if kind == "change_etag":
            etag = p.get("etag") or etag[:-1] + '-changed"'
            mtime += 3600
            zero = p.get("content") == "zero"
        last_mod = http_date(mtime)

        # If-Match (strong comparison).
        im = self.headers.get("If-Match")
        if im is not None:
            tags = etag_list(im)
            if "*" not in tags and etag not in tags:
                self.simple(412, "precondition failed")
                return

        rng = None
        if rng_hdr is not None and self.command == "GET" and \
           kind != "ignore_range":
            rng = parse_range(rng_hdr, size)
            ir = self.headers.get("If-Range")
            if rng is not None and ir is not None:
                ir = ir.strip()
                if ir.startswith('"') or ir.startswith("W/"):
                    matches = (ir == etag)       # strong: W/ never matches
                else:
                    matches = (ir == last_mod)
                if not matches:
                    rng = None

        if rng == "unsat":
            self.simple(416, "range not satisfiable",
                        [("Content-Range", "bytes */%d" % size)])
            return

        if rng is None:
            status, first, length = 200, 0, size
        else:
            status, first, length = 206, rng[0], rng[1] - rng[0] + 1

        if kind == "wrong_content_range" and not self.head:
            shift = int(p.get("shift", 512))
            a, b = first, first + length - 1
            if b + shift < size:
                first = a + shift
            elif a - shift >= 0:
                first = a - shift
            else:
                first = a + shift       # past the end: padded with zeros
            status = 206

        # Decide the body bytes to send and the advertised length.
        body_len = length
        clen = length
        extra_after = b""
        if kind == "long_body":
            n = int(p.get("extra", 512))
            if p.get("mode", "length") == "trailing":
                extra_after = b"\xaa" * n
            else:
                clen = length + n
                extra_after = b"\xaa" * n
        elif kind == "truncate":
            body_len = length // 2

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(clen))
        if kind != "ignore_range":
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_mod)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d"
                             % (first, first + length - 1, size))
        self.status = status

        if kind == "reset":
            self.finish_headers()
            n = int(p.get("bytes", 0))
            if not self.head and n > 0:
                self.send_body(f, first, min(n, length), size, zero, None)
            self.rst()
            return

        self.finish_headers()
        if self.head:
            if kind == "truncate":
                self.close_connection = True
            elif kind == "long_body" and extra_after:
                self.write(extra_after)
            return

        flips = None
        if kind == "corrupt" and length > 0:
            n = max(1, int(p.get("flips", 1)))
            flips = sorted(set(i * length // n + length // (2 * n)
                               for i in range(n)))
        rate = float(p.get("rate", 65536)) if kind == "slow" else None
        self.send_body(f, first, body_len, size, zero, flips, rate)
        if extra_after:
            if kind == "long_body" and p.get("delay_ms"):
                try:
                    self.wfile.flush()
                except (ConnectionError, TimeoutError) as e:
                    raise ClientGone() from e
                time.sleep(float(p["delay_ms"]) / 1000)
            self.write(extra_after)
        if kind == "truncate":
            self.close_connection = True

    def send_body(self, f, first, length, size, zero, flips, rate=None):
        """Send LENGTH bytes starting at file offset FIRST (zeros past the
        end of the file), XORing the body-relative offsets in FLIPS."""
        pos = 0
        slice_ = CHUNK
        t0 = time.monotonic()
        if rate:
            slice_ = max(1, int(rate / 20))
        while pos < length:
            n = min(slice_, length - pos)
            off = first + pos
            if zero:
                data = bytes(n)
            else:
                data = os.pread(f.fileno(), n, off) if off < size else b""
                if len(data) < n:
                    data += bytes(n - len(data))
            if flips:
                buf = None
                for fl in flips:
                    if pos <= fl < pos + n:
                        if buf is None:
                            buf = bytearray(data)
                        buf[fl - pos] ^= 0xFF
                if buf is not None:
                    data = bytes(buf)
            if rate:
                due = t0 + pos / rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
            self.write(data)
            pos += n


def main():
    ap = argparse.ArgumentParser(
        description="HTTP/1.1 range file server with fault injection",
        epilog=FAULT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--faults")
    ap.add_argument("--log")
    ap.add_argument("--seed", type=int,
                    help="seed of the \"probability\" draws (default: random)")
    args = ap.parse_args()

    def on_signal(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    srv = Server(("127.0.0.1", args.port), args.root,
                 FaultState(args.faults, args.seed), Logger(args.log))
    port = srv.server_address[1]
    tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
    with open(tmp, "w") as pf:
        pf.write("%d\n" % port)
    os.rename(tmp, args.port_file)
    try:
        srv.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
