"""How much memory an untrusted IR file may make a reader spend, checked before decoding it.

A decoder turns each msgpack token into a Python object, and a token can be one byte (an empty
map becomes a struct or a dict of 64+ bytes; a two-letter string an object of 51): a payload of
repeated tiny tokens costs up to ~100 times its size, and zstd compresses such a payload 30,000
to 1. So three limits hold before any object is made:

* the decompressed payload is at most ``MAX_PAYLOAD`` bytes and at most ``MAX_RATIO`` times the
  size of the compressed frame (checked on the frame's declared size, before decompressing);
* the objects decoding will make are bounded from above by a *byte-class estimate*: every token
  starts with its type byte, so counting the payload's bytes by the class of token they would
  start (containers, strings, integers that are not cached, everything else) gives at least as
  many of each as there are tokens, and each class has a weight at least the memory its token
  costs in the strict reference path (raw map and typed document alive at once).  Counting is
  ``bytes.translate`` and ``bytes.count`` in C, in chunks: ~5 ms per MiB;
* the estimate may be at most ``budget(len(file))``: ``MIN_BUDGET``, or ``BUDGET_PER_BYTE``
  times the file's size for larger files (a legitimate 100,000-op graph needs ~30 times its
  compressed size), so a file under 1 MiB never makes ``irctl validate`` exceed 256 MiB.

The estimate over-counts (a byte inside a string counts as a token head): real graphs come out at
about 2.5 times their true cost, far under the budget.  ``spec/ir.md`` § 2 states these numbers.
"""

from __future__ import annotations

import os
import stat

from ir.errors import DecodeError

MAX_PAYLOAD = 1 << 30  # absolute: a decompressed document larger than 1 GiB is refused
MAX_RATIO = 32  # decompressed size ≤ 32 × the compressed frame (real graphs: 3–8)
MIN_PAYLOAD_ALLOWANCE = 1 << 20  # …but a payload of 1 MiB is always allowed, whatever the ratio
MIN_BUDGET = 160 << 20  # estimated decoding memory always allowed
BUDGET_PER_BYTE = 128  # …and for larger files, this many bytes per byte of the file

# Weight of one byte of each class, in bytes of memory: every byte costs BASE (the payload, its
# re-encoding and the slot of an object in its container); a byte that could start a token of a
# class costs that class's weight on top.
BASE = 8
_CONTAINER, _STRING, _NUMBER = 1, 2, 3
WEIGHTS = {_CONTAINER: 248, _STRING: 120, _NUMBER: 56}


def _classes() -> bytes:
    table = bytearray(256)
    for b in range(0x80, 0xA0):  # fixmap, fixarray
        table[b] = _CONTAINER
    for b in (0xDC, 0xDD, 0xDE, 0xDF, 0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):  # map/array 16/32, ext
        table[b] = _CONTAINER
    for b in list(range(0xA0, 0xC0)) + [0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB]:  # fixstr, bin, str
        table[b] = _STRING
    for b in list(range(0xCA, 0xD4)) + list(range(0xE0, 0x100)):  # floats, wide and negative ints
        table[b] = _NUMBER
    return bytes(table)


_TABLE = _classes()
_CHUNK = 1 << 20


MAX_FILE = MAX_PAYLOAD + 64  # an IR file (header and payload) larger than this cannot be valid


def read_file(stream) -> bytes:
    """Read an IR file from a binary stream, at most ``MAX_FILE`` bytes: a huge (or sparse, or
    endless) file is refused before it fills memory."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > MAX_FILE:
        raise DecodeError(f"file of {st.st_size} bytes, larger than {MAX_FILE}: not an IR file this reader accepts")
    data = stream.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise DecodeError(f"file larger than {MAX_FILE} bytes: not an IR file this reader accepts")
    return data


def allowed_payload(frame_size: int) -> int:
    """The largest decompressed payload allowed for a compressed frame of ``frame_size`` bytes."""
    return min(MAX_PAYLOAD, max(MIN_PAYLOAD_ALLOWANCE, MAX_RATIO * frame_size))


def budget(file_size: int) -> int:
    """Estimated decoding memory allowed for a file of ``file_size`` bytes."""
    return max(MIN_BUDGET, BUDGET_PER_BYTE * file_size)


def estimate(payload: bytes | memoryview) -> int:
    """An upper bound, in bytes, of the memory that decoding ``payload`` can take."""
    total = BASE * len(payload)
    view = memoryview(payload)
    for start in range(0, len(view), _CHUNK):
        classes = view[start:start + _CHUNK].tobytes().translate(_TABLE)
        for cls, weight in WEIGHTS.items():
            total += weight * classes.count(cls)
    return total
