#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: concurrent random-read load for an NBD export, checking
# every byte against a reference file (run with Debian's /usr/bin/python3,
# which has python3-libnbd's "nbd" module).
#
# Usage: randread.py URI REFERENCE [options]
#   --connections N  NBD connections, one thread each (16)
#   --reads N        reads per connection (200)
#   --min BYTES      smallest read (512)
#   --max BYTES      largest read (2 MiB)
#   --align BYTES    offsets and sizes are multiples of this (512)
#   --seed N         base seed; connection i uses seed + i (1)
#   --reconnect N    each connection closes and reopens after every N
#                    reads (0: never), so that the server's threads
#                    for it come and go
#
# Each connection does its reads one after another: size uniform in
# [min, max], offset uniform over the export, both multiples of align.
# Every read is compared with the same range of REFERENCE (the raw
# image).  Prints one line "reads R bytes B mismatches M errors E
# seconds S" and exits 0 only if every read succeeded and matched.

import argparse
import os
import random
import sys
import threading
import time

import nbd


def worker(uri, ref_fd, size, args, i, result):
    rng = random.Random(args.seed + i)
    h = nbd.NBD()
    reads = nbytes = bad = errors = 0
    first_error = None
    try:
        h.connect_uri(uri)
        for k in range(args.reads):
            if args.reconnect and k and k % args.reconnect == 0:
                h.shutdown()
                h = nbd.NBD()
                h.connect_uri(uri)
            n = rng.randrange(args.min // args.align,
                              args.max // args.align + 1) * args.align
            n = min(n, size)
            off = rng.randrange(0, (size - n) // args.align + 1) * args.align
            try:
                got = h.pread(n, off)
            except nbd.Error as e:
                errors += 1
                first_error = first_error or "pread %d@%d: %s" % (n, off, e)
                continue
            reads += 1
            nbytes += n
            if got != os.pread(ref_fd, n, off):
                bad += 1
                first_error = first_error or "mismatch in %d@%d" % (n, off)
        h.shutdown()
    except nbd.Error as e:
        errors += 1
        first_error = first_error or "connection %d: %s" % (i, e)
    result[i] = (reads, nbytes, bad, errors, first_error)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("reference")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--min", type=int, default=512)
    p.add_argument("--max", type=int, default=2 * 1024 * 1024)
    p.add_argument("--align", type=int, default=512)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reconnect", type=int, default=0)
    args = p.parse_args()
    if (args.connections < 1 or args.reads < 1 or args.align < 1 or
            args.reconnect < 0 or
            args.min < args.align or args.max < args.min or
            args.min % args.align or args.max % args.align):
        p.error("need connections, reads >= 1 and align <= min <= max, "
                "min and max multiples of align")

    h = nbd.NBD()
    h.connect_uri(args.uri)
    size = h.get_size()
    h.shutdown()
    ref_fd = os.open(args.reference, os.O_RDONLY)
    if os.fstat(ref_fd).st_size < size:
        sys.exit("randread: %s is shorter than the export (%d bytes)"
                 % (args.reference, size))
    size -= size % args.align

    result = [None] * args.connections
    threads = [threading.Thread(target=worker,
                                args=(args.uri, ref_fd, size, args, i, result))
               for i in range(args.connections)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0

    reads = sum(r[0] for r in result)
    nbytes = sum(r[1] for r in result)
    bad = sum(r[2] for r in result)
    errors = sum(r[3] for r in result)
    print("reads %d bytes %d mismatches %d errors %d seconds %.2f"
          % (reads, nbytes, bad, errors, secs))
    for r in result:
        if r[4]:
            print("randread: first problem: %s" % r[4], file=sys.stderr)
            break
    sys.exit(0 if bad == 0 and errors == 0 else 1)


if __name__ == "__main__":
    main()
