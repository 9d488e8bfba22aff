# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: reading a whole export and comparing it with the
# expected image, for the tests' python clients (import with
# PYTHONPATH=$srcdir).
import sys

import nbd


def connect(uri, exp_path):
    """A connected handle and the expected bytes, whose size the
    export must have."""
    exp = open(exp_path, "rb").read()
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    assert size == len(exp), (size, len(exp))
    return h, exp


def one_pass(h, exp, label, chunk=256 * 1024):
    """Read the whole export in order, chunk bytes at a time; exit
    naming label and the offset at the first wrong byte."""
    for off in range(0, len(exp), chunk):
        n = min(chunk, len(exp) - off)
        if h.pread(n, off) != exp[off:off + n]:
            sys.exit("%s: wrong bytes at %d" % (label, off))
