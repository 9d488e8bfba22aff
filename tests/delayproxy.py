#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: userspace TCP proxy emulating a WAN link (latency and
# optional bandwidth), for tests and benchmarks on loopback.
#
#   delayproxy.py --listen-port-file FILE --target HOST:PORT
#                 --delay-ms D [--rate BYTES_PER_S] [--handshake]
#                 [--total-rate BYTES_PER_S [--queue-ms Q]]
#                 [--listen-port N]
#
# Listens on 127.0.0.1 (port N, default 0 = any) and writes the port to
# FILE (atomically) once listening.  Each accepted connection gets its
# own connection to the target; both directions are forwarded with
# every chunk delivered at arrival + D/2 ms, so one request/response
# round trip costs D ms extra.  Order is preserved per direction and
# connections are independent of each other.
#
# --rate limits each direction of each connection to BYTES_PER_S
# (serialisation at that rate, then the D/2 propagation delay).
# --total-rate limits each direction of ALL connections together to
# BYTES_PER_S: one shared link per direction (a bottleneck such as an
# access line), on which the connections' data is serialised in the
# order it arrives.  Its buffer holds at most Q ms of data (default:
# D, at least 5 ms; a buffer of one bandwidth-delay product): while it
# is full the proxy reads no more from any connection in that
# direction, so the senders' TCP flow control slows them down and a
# newly arriving request waits behind at most Q ms of other traffic,
# not behind everything another connection has sent.  With --rate as
# well, each connection is also held to its own rate.
# --handshake also holds back the first client->server bytes by one
# extra D, as the TCP handshake over a real WAN link would.
#
# EOF is forwarded as a half-close (shutdown SHUT_WR) after the data
# before it; a connection reset on one side is forwarded as a reset
# (SO_LINGER 0 + close) on the other, again after the data before it.
# SIGTERM/SIGINT exit 0.

import argparse
import asyncio
import os
import resource
import signal
import socket
import struct
import sys

READ_SIZE = 64 * 1024
QUEUE_CHUNKS = 512          # per direction: bounds buffered data

EOF = object()
RESET = object()


def abort_with_rst(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class SharedLink:
    """One direction of the link all connections share (--total-rate):
    a FIFO serialiser at RATE bytes/s with a buffer of QUEUE seconds."""

    def __init__(self, loop, rate, queue):
        self.loop = loop
        self.rate = rate
        self.queue = queue
        self.link_free = 0.0

    async def book(self, nbytes, not_before):
        """Waits until the buffer has room, then books NBYTES arriving
        at NOT_BEFORE; returns when their last byte leaves the link."""
        while True:
            backlog = self.link_free - self.loop.time()
            if backlog <= self.queue:
                break
            await asyncio.sleep(backlog - self.queue)
        start = max(not_before, self.loop.time(), self.link_free)
        self.link_free = start + nbytes / self.rate
        return self.link_free


class Link:
    """One direction of one connection."""

    def __init__(self, loop, delay, rate, extra_first=0.0, shared=None):
        self.loop = loop
        self.delay = delay
        self.rate = rate
        self.shared = shared
        self.link_free = 0.0
        self.extra_first = extra_first
        self.q = asyncio.Queue(QUEUE_CHUNKS)

    async def due(self, nbytes):
        now = self.loop.time()
        if self.extra_first:
            now += self.extra_first
            self.extra_first = 0.0
        if self.rate:
            start = max(now, self.link_free)
            self.link_free = start + nbytes / self.rate
            now = self.link_free
        if self.shared is not None and nbytes:
            now = await self.shared.book(nbytes, now)
        return now + self.delay

    async def pump_in(self, reader):
        slice_ = READ_SIZE
        if self.rate:
            slice_ = max(1024, min(READ_SIZE, int(self.rate / 50)))
        if self.shared is not None:
            # Finer slices: connections interleave on the shared link.
            slice_ = max(1024, min(slice_, int(self.shared.rate / 200)))
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    await self.q.put((await self.due(0), EOF))
                    return
                for i in range(0, len(data), slice_):
                    piece = data[i:i + slice_]
                    await self.q.put((await self.due(len(piece)), piece))
        except (ConnectionError, OSError):
            await self.q.put((await self.due(0), RESET))

    async def pump_out(self, writer):
        """Returns "eof" or "reset"."""
        while True:
            due, item = await self.q.get()
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if item is EOF:
                try:
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                except (ConnectionError, OSError):
                    return "reset"
                return "eof"
            if item is RESET:
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass
                abort_with_rst(writer)
                return "reset"
            try:
                writer.write(item)
                await writer.drain()
            except (ConnectionError, OSError):
                return "reset"


class Proxy:
    def __init__(self, host, port, delay_ms, rate, handshake,
                 total_rate=0, queue_ms=None):
        self.host = host
        self.port = port
        self.delay = delay_ms / 2000.0
        self.rate = rate
        self.handshake = handshake
        self.total_rate = total_rate
        if queue_ms is None:
            queue_ms = max(5.0, delay_ms)
        self.queue = queue_ms / 1000.0
        self.shared = None      # (up, down), made in the event loop
        self.active = 0

    def shared_links(self, loop):
        if self.total_rate and self.shared is None:
            self.shared = (SharedLink(loop, self.total_rate, self.queue),
                           SharedLink(loop, self.total_rate, self.queue))
        return self.shared or (None, None)

    async def handle(self, creader, cwriter):
        loop = asyncio.get_running_loop()
        self.active += 1
        try:
            try:
                sreader, swriter = await asyncio.open_connection(
                    self.host, self.port)
            except OSError as e:
                sys.stderr.write("delayproxy: connect %s:%d: %s\n"
                                 % (self.host, self.port, e))
                abort_with_rst(cwriter)
                return
            sup, sdown = self.shared_links(loop)
            up = Link(loop, self.delay, self.rate,
                      2 * self.delay if self.handshake else 0.0, sup)
            down = Link(loop, self.delay, self.rate, shared=sdown)
            tasks = [asyncio.ensure_future(up.pump_in(creader)),
                     asyncio.ensure_future(down.pump_in(sreader))]
            outs = {asyncio.ensure_future(up.pump_out(swriter)): cwriter,
                    asyncio.ensure_future(down.pump_out(cwriter)): swriter}
            pending = set(outs)
            while pending:
                done, pending = await asyncio.wait(
                    pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None or t.result() == "reset":
                        # Tear the whole connection down.
                        for p in pending:
                            p.cancel()
                        pending = set()
                        for w in (cwriter, swriter):
                            if not w.is_closing():
                                abort_with_rst(w)
                        break
            for t in tasks:
                t.cancel()
            for w in (cwriter, swriter):
                if not w.is_closing():
                    w.close()
        finally:
            self.active -= 1


def main():
    ap = argparse.ArgumentParser(description="TCP proxy adding latency")
    ap.add_argument("--listen-port-file", required=True)
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--rate", type=float, default=0,
                    help="bytes/s per direction per connection (0 = no limit)")
    ap.add_argument("--total-rate", type=float, default=0,
                    help="bytes/s per direction shared by all connections "
                    "(0 = no limit)")
    ap.add_argument("--queue-ms", type=float, default=None,
                    help="buffer of the shared link in ms (default: the "
                    "delay, at least 5)")
    ap.add_argument("--handshake", action="store_true",
                    help="add one extra round trip before the first request")
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    if args.total_rate < 0 or args.rate < 0 or (
            args.queue_ms is not None and args.queue_ms <= 0):
        ap.error("--rate, --total-rate and --queue-ms must be positive")
    proxy = Proxy(host, int(port), args.delay_ms, args.rate, args.handshake,
                  args.total_rate, args.queue_ms)

    async def run():
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or
                                    stop.set_result(None))
        server = await asyncio.start_server(
            proxy.handle, "127.0.0.1", args.listen_port, backlog=1024,
            reuse_address=True)
        lport = server.sockets[0].getsockname()[1]
        tmp = "%s.tmp.%d" % (args.listen_port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % lport)
        os.rename(tmp, args.listen_port_file)
        await stop
        server.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
