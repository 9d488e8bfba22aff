#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: read NBD exports and compare every byte read with the
# expected image, for the soak and fault tests.
#
#   nbdverify.py --expected FILE --uri URI [--uri URI ...]
#                [--connections N] [--seconds S] [--max-read BYTES]
#                [--seed N] [--pass] [--reads N] [--allow-eio]
#
# --seconds S (random mode): N threads (one NBD connection each, spread
#   round-robin over the URIs) read random ranges of 1..BYTES bytes at
#   random offsets until S seconds have passed.
# --pass: one sequential pass over the whole export in reads of BYTES
#   bytes, the export split between the N connections (only the first
#   N reads of it with --reads N).
# A read that fails (NBD error, e.g. EIO) is counted, not fatal; a
# connection that drops is counted and re-made.  Every successful read
# is compared with FILE at the same offset.
#
# Prints one line: reads=R eio=E wrong_bytes=W wrong_reads=X bytes=B
# disconnects=D seconds=T.  Exit status 1 if any byte was wrong, or a
# connection could not be (re)made, or (without --allow-eio) any read
# failed; else 0.

import argparse
import mmap
import random
import sys
import threading
import time

import nbd


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reads = self.eio = self.wrong_bytes = self.wrong_reads = 0
        self.bytes = self.disconnects = 0
        self.fatal = []
        self.first_wrong = None
        self.errors = {}

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def count_wrong(got, want):
    if got == want:
        return 0
    return sum(1 for a, b in zip(got, want) if a != b) + \
        abs(len(got) - len(want))


class Worker(threading.Thread):
    def __init__(self, uri, exp, stats, seed, args, ranges=None):
        super().__init__(daemon=True)
        self.uri, self.exp, self.stats = uri, exp, stats
        self.rng = random.Random(seed)
        self.args = args
        self.ranges = ranges
        self.h = None

    def connect(self):
        for attempt in range(50):
            try:
                h = nbd.NBD()
                h.connect_uri(self.uri)
                size = h.get_size()
                if size != len(self.exp):
                    self.stats.fatal.append("%s: export size %d, expected %d"
                                            % (self.uri, size, len(self.exp)))
                    return False
                self.h = h
                return True
            except nbd.Error as e:
                err = e
                time.sleep(0.1)
        self.stats.fatal.append("%s: cannot connect: %s" % (self.uri, err))
        return False

    def read_one(self, off, n):
        try:
            got = self.h.pread(n, off)
        except nbd.Error as e:
            connected = False
            try:
                connected = self.h.aio_is_ready() or \
                    self.h.aio_is_processing()
            except nbd.Error:
                pass
            key = "%s" % (e.string,)
            with self.stats.lock:
                self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
            if not connected:
                self.stats.add(disconnects=1)
                self.h = None
                return self.connect()
            self.stats.add(reads=1, eio=1)
            return True
        want = self.exp[off:off + n]
        w = count_wrong(got, want)
        self.stats.add(reads=1, bytes=n, wrong_bytes=w,
                       wrong_reads=1 if w else 0)
        if w and self.stats.first_wrong is None:
            self.stats.first_wrong = "%s: %d wrong bytes in [%d, %d)" % \
                (self.uri, w, off, off + n)
        return True

    def run(self):
        if not self.connect():
            return
        size = len(self.exp)
        if self.ranges is not None:
            for off, n in self.ranges:
                if not self.read_one(off, n):
                    return
        else:
            end = time.monotonic() + self.args.seconds
            while time.monotonic() < end:
                n = self.rng.randint(1, min(self.args.max_read, size))
                off = self.rng.randrange(0, size - n + 1)
                if not self.read_one(off, n):
                    return
        try:
            self.h.shutdown()
        except nbd.Error:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expected", required=True)
    ap.add_argument("--uri", action="append", required=True)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--max-read", type=int, default=262144)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--pass", dest="one_pass", action="store_true")
    ap.add_argument("--reads", type=int, default=None)
    ap.add_argument("--allow-eio", action="store_true")
    args = ap.parse_args()

    with open(args.expected, "rb") as f:
        exp = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    stats = Stats()
    n = max(1, args.connections)
    ranges = [None] * n
    if args.one_pass:
        ranges = [[] for _ in range(n)]
        for i, off in enumerate(range(0, len(exp), args.max_read)):
            if args.reads is not None and i >= args.reads:
                break
            ranges[i % n].append((off, min(args.max_read, len(exp) - off)))
    workers = [Worker(args.uri[i % len(args.uri)], exp, stats,
                      rng.randrange(1 << 30), args, ranges[i])
               for i in range(n)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("reads=%d eio=%d wrong_bytes=%d wrong_reads=%d bytes=%d "
          "disconnects=%d seconds=%.1f seed=%d"
          % (stats.reads, stats.eio, stats.wrong_bytes, stats.wrong_reads,
             stats.bytes, stats.disconnects, time.monotonic() - t0, seed))
    for k, v in sorted(stats.errors.items()):
        print("  error %dx: %s" % (v, k))
    if stats.first_wrong:
        print("WRONG BYTES: first: %s" % stats.first_wrong, file=sys.stderr)
    for msg in stats.fatal:
        print("FATAL: %s" % msg, file=sys.stderr)
    if stats.wrong_bytes or stats.fatal:
        return 1
    if stats.eio and not args.allow_eio:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
