#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: write a set of malformed cloop images into a directory.
#
#   malformed.py DIR
#
# Each file is one fault a reader must reject at open time (the qemu
# iotest 075 cases plus truncations, garbage and bad V4/dplasa
# footers).  Prints the names of the files written, one a line.
# Standard library only; deterministic.

import os
import random
import struct
import sys
import zlib

HEADROOM = 128
PREAMBLE_V2 = (b"#!/bin/sh\n#V2.0 Format\n"
               b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
               b"exit $?\n")


def preamble(sig=b"V2.0"):
    text = PREAMBLE_V2.replace(b"V2.0", sig)
    return text.ljust(HEADROOM, b"\0")


def header(block_size, num_blocks, sig=b"V2.0"):
    return preamble(sig) + struct.pack(">II", block_size, num_blocks)


def good_blocks(block_size, n):
    """n zlib blocks of block_size bytes each, deterministic content."""
    rng = random.Random(block_size * 1000 + n)
    out = []
    for i in range(n):
        raw = bytes([65 + i % 26]) * (block_size // 2) + \
            rng.randbytes(block_size - block_size // 2)
        out.append(zlib.compress(raw, 9))
    return out


def v2_image(block_size, blocks, sig=b"V2.0", words=None):
    """A header-first image; words (if given) overrides the index."""
    n = len(blocks)
    pos = HEADROOM + 8 + 8 * (n + 1)
    offsets = []
    for b in blocks:
        offsets.append(pos)
        pos += len(b)
    offsets.append(pos)
    if words is None:
        words = offsets
    index = b"".join(struct.pack(">Q", w) for w in words)
    return header(block_size, n, sig) + index + b"".join(blocks)


def v4_footer_image(block_size, blocks, num_blocks=None):
    n = len(blocks)
    offsets, pos = [], 0
    for b in blocks:
        offsets.append(pos)
        pos += len(b)
    offsets.append(pos)
    index = b"".join(struct.pack(">Q", o) for o in offsets)
    if num_blocks is None:
        num_blocks = n
    return (b"".join(blocks) + index +
            header(block_size, num_blocks, b"V4.0"))


def dplasa_image(block_size, blocks, index_pos=None):
    n = len(blocks)
    data = b"".join(blocks)
    offsets, pos = [], 0
    for b in blocks:
        offsets.append(pos)
        pos += len(b)
    offsets.append(pos)
    data += b"\0" * (-len(data) % 4096)
    x = len(data)
    if index_pos is None:
        index_pos = x
    footer = struct.pack(">IIQ", n, block_size, n * block_size)
    footer += b"".join(struct.pack(">Q", o) for o in offsets)
    footer += b"".join(struct.pack(">I", 1 << 1) for _ in blocks)
    footer += struct.pack(">QI", index_pos, 3) + b"\nCLOOP3\n"
    return data + footer


def cases():
    bs = 4096
    blocks = good_blocks(bs, 3)
    first = HEADROOM + 8 + 8 * 4          # offset of block 0 in v2_image

    # qemu iotest 075: block sizes.
    yield "bs-0x80000000", v2_image(0x80000000, blocks)
    yield "bs-128M", v2_image(128 * 1024 * 1024, blocks)
    yield "bs-zero", v2_image(0, blocks)
    yield "bs-not-512", v2_image(1000, blocks)

    # qemu iotest 075: num_blocks overflow (index cannot fit).
    img = v2_image(bs, blocks)
    yield "n-0xffffffff", img[:HEADROOM + 4] + struct.pack(">I", 0xffffffff) \
        + img[HEADROOM + 8:]
    yield "n-0x7fffffff", img[:HEADROOM + 4] + struct.pack(">I", 0x7fffffff) \
        + img[HEADROOM + 8:]

    # qemu iotest 075: offsets not monotonic.
    l0, l1, l2 = (len(b) for b in blocks)
    yield "offsets-not-monotonic", v2_image(
        bs, blocks, words=[first, first + l0 + l1, first + l0,
                           first + l0 + l1 + l2])

    # qemu iotest 075: compressed block far larger than any codec could
    # produce from one block.  The file is really that long, so only the
    # length is wrong, not the bounds.
    big = 1024 * 1024
    start = HEADROOM + 8 + 16
    img = v2_image(512, [b"x"], words=[start, start + big])
    yield "length-too-large", img + b"\0" * (big - 1)

    # Truncated index: header promises 100 blocks, file ends inside
    # the index.
    yield "truncated-index", header(bs, 100) + struct.pack(">Q", 1000) * 10

    # Truncated data: last offset past end of file.
    img = v2_image(bs, blocks)
    yield "truncated-data", img[:-len(blocks[-1]) // 2]

    yield "empty", b""
    rng = random.Random(75)
    yield "random-136", rng.randbytes(136)
    yield "random-1M", rng.randbytes(1024 * 1024)

    # V4 header first with an invalid compressor nibble on block 1.
    img = v2_image(bs, blocks, sig=b"V4.0")
    for nibble in (5, 9, 15):
        words = list(struct.unpack(">4Q", img[HEADROOM + 8:HEADROOM + 40]))
        words[1] |= nibble << 60
        yield "v4-codec-%d" % nibble, v2_image(bs, blocks, sig=b"V4.0",
                                               words=words)

    # V4 header last whose index would start before the file does.
    yield "v4-footer-index-outside", v4_footer_image(bs, blocks,
                                                      num_blocks=100000)

    # dplasa V3 whose footer points at an index far past the end.
    yield "dplasa-wild-index", dplasa_image(bs, blocks,
                                            index_pos=0x7fffffffffff0000)
    # ... and one whose index offset points at the compressed data.
    yield "dplasa-index-at-0", dplasa_image(bs, blocks, index_pos=0)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: malformed.py DIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, data in cases():
        with open(os.path.join(outdir, name + ".cloop"), "wb") as f:
            f.write(data)
        print(name + ".cloop")


if __name__ == "__main__":
    main()
